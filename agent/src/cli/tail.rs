//! `llmtrace tail`: follow completed traces live from the running agent.

use std::{fmt::Write as _, io::Write as _};

use clap::Args;
use serde_json::Value;

use crate::admin::client;

/// Options of `llmtrace tail`.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// Print each trace as one JSON object per line (field names are the ClickHouse columns).
    #[arg(long)]
    pub json: bool,
    /// Stop after this many traces.
    #[arg(long, short = 'n')]
    pub count: Option<usize>,
}

/// Follows `/tail` on the admin socket `admin` until interrupted (or `--count` traces).
pub async fn run(args: &TailArgs, admin: &std::path::Path) -> anyhow::Result<()> {
    let mut seen = 0usize;
    let mut out = std::io::stdout().lock();
    client::stream_lines(admin, "/tail", |line| {
        let text = if args.json {
            line.to_owned()
        } else {
            serde_json::from_str::<Value>(line).map_or_else(|_| line.to_owned(), |v| render(&v))
        };
        // A closed stdout (e.g. `| head`) ends the tail.
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            return false;
        }
        if line.starts_with("{\"missed\"") {
            return true;
        }
        seen += 1;
        args.count.is_none_or(|n| seen < n)
    })
    .await?;
    Ok(())
}

/// One human-readable line per trace.
pub fn render(v: &Value) -> String {
    if let Some(n) = v.get("missed") {
        return format!("… {n} traces missed (the terminal was too slow)");
    }
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let n = |k: &str| v.get(k).and_then(Value::as_u64);
    let f = |k: &str| v.get(k).and_then(Value::as_f64);
    let mut line = format!(
        "{pid:>7} {comm:<15} {provider:<10} {method} {host}{path} {status}",
        pid = n("pid").unwrap_or(0),
        comm = s("comm"),
        provider = s("provider"),
        method = s("method"),
        host = if s("sni").is_empty() {
            s("dst_addr")
        } else {
            s("sni")
        },
        path = s("path"),
        status = n("status").map_or_else(|| "-".to_owned(), |c| c.to_string()),
    );
    let _ = write!(line, "{}", model(&s("model"), &s("response_model")));
    if let (Some(i), Some(o)) = (n("input_tokens"), n("output_tokens")) {
        let _ = write!(line, " tokens={i}/{o}");
    }
    if let Some(t) = f("ttft_ms") {
        let _ = write!(line, " ttft={t:.0}ms");
    }
    let _ = write!(line, " {:.0}ms", f("duration_ms").unwrap_or(0.0));
    if let Some(c) = f("cost_usd") {
        let _ = write!(line, " ${c:.6}");
    }
    let findings: Vec<String> = v
        .get("findings")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|f| {
                    format!(
                        "{}:{}",
                        f["kind"].as_str().unwrap_or("?"),
                        f["severity"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if !findings.is_empty() {
        let _ = write!(line, " findings=[{}]", findings.join(","));
    }
    if !s("action").is_empty() {
        let _ = write!(line, " action={}", s("action"));
    }
    if v.get("intercepted") == Some(&Value::Bool(false)) {
        let _ = write!(line, " (not intercepted: {})", s("not_intercepted_reason"));
    }
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        let _ = write!(line, " error={e}");
    }
    line
}

/// ` model=M`, with the model the provider says it served when that differs from the one
/// requested (a dated snapshot, an alias resolved, a router's choice): ` model=M served=S`.
fn model(requested: &str, served: &str) -> String {
    match (requested, served) {
        ("", "") => String::new(),
        ("", m) | (m, "") => format!(" model={m}"),
        (r, s) if r == s => format!(" model={r}"),
        (r, s) => format!(" model={r} served={s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_essentials() {
        let v = serde_json::json!({
            "pid": 42, "comm": "python3", "provider": "openai", "method": "POST",
            "sni": "api.openai.com", "path": "/v1/chat/completions", "status": 200,
            "model": "gpt-4o-mini", "response_model": "gpt-4o-mini-2024-07-18", "input_tokens": 12, "output_tokens": 5, "ttft_ms": 80.0,
            "duration_ms": 120.0, "cost_usd": 0.0001,
            "findings": [{"kind": "secret.aws_access_key", "severity": "critical"}],
            "action": "flag", "intercepted": true
        });
        let line = render(&v);
        for part in [
            "42",
            "python3",
            "api.openai.com/v1/chat/completions",
            "200",
            "model=gpt-4o-mini served=gpt-4o-mini-2024-07-18",
            "tokens=12/5",
            "secret.aws_access_key:critical",
            "action=flag",
        ] {
            assert!(line.contains(part), "{part} missing in {line}");
        }
    }

    #[test]
    fn the_served_model_only_when_it_differs() {
        assert_eq!(model("gpt-4o", "gpt-4o"), " model=gpt-4o");
        assert_eq!(model("", "gemini-2.0-flash"), " model=gemini-2.0-flash");
        assert_eq!(model("gpt4o-prod", ""), " model=gpt4o-prod");
        assert_eq!(model("", ""), "");
        assert_eq!(
            model("claude-3-5-haiku-latest", "claude-3-5-haiku-20241022"),
            " model=claude-3-5-haiku-latest served=claude-3-5-haiku-20241022"
        );
    }
}
