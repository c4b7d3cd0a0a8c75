//! `llmtrace analyze [FILE|-]`: runs the detectors offline on plain text (the whole input is one
//! text) or on JSON lines with a `text` field (one result per line), printing one JSON line of
//! findings per input. `id` and `label` fields of a JSON line are copied to its result so
//! labelled corpora can be scored.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use serde_json::{Value, json};

use crate::analysis::{AnalysisConfig, Analyzer, Location};

/// Input format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// JSON lines if the first line is a JSON object with a `text` field, else plain text.
    Auto,
    /// The whole input is one text.
    Text,
    /// One JSON object with a `text` field per line.
    Jsonl,
}

/// Arguments of `llmtrace analyze`.
#[derive(Debug, Clone, clap::Args)]
pub struct AnalyzeArgs {
    /// Input file; `-` or absent reads standard input.
    pub input: Option<PathBuf>,
    /// Input format.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,
    /// Override the analysis limit (bytes per text).
    #[arg(long)]
    pub max_bytes: Option<usize>,
}

/// Runs the command on the configured input, printing to stdout.
pub fn run(args: &AnalyzeArgs, config: &AnalysisConfig) -> anyhow::Result<()> {
    let input: Box<dyn Read> = match args.input.as_deref() {
        None => Box::new(std::io::stdin()),
        Some(p) if p.as_os_str() == "-" => Box::new(std::io::stdin()),
        Some(p) => Box::new(
            std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
        ),
    };
    let stdout = std::io::stdout();
    run_on(args, config, BufReader::new(input), &mut stdout.lock())
}

/// Runs the command on any reader and writer.
pub fn run_on(
    args: &AnalyzeArgs,
    config: &AnalysisConfig,
    mut input: impl BufRead,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    // The configured detectors (canaries, evasion views), with the command's own byte bound.
    let mut bounded = config.clone();
    if let Some(max) = args.max_bytes {
        bounded.max_analysis_bytes = max;
    }
    let analyzer = Analyzer::from_config(&bounded);
    let mut first = String::new();
    input.read_line(&mut first).context("cannot read input")?;
    let jsonl = match args.format {
        Format::Jsonl => true,
        Format::Text => false,
        Format::Auto => serde_json::from_str::<Value>(first.trim())
            .is_ok_and(|v| v.get("text").is_some_and(Value::is_string)),
    };
    if !jsonl {
        let mut text = first;
        input
            .read_to_string(&mut text)
            .context("cannot read input")?;
        return emit(out, &analyzer, config, &text, json!({}));
    }
    let mut line_no = 0u64;
    for line in std::iter::once(Ok(first)).chain(input.lines()) {
        let line = line.context("cannot read input")?;
        line_no += 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(&line).with_context(|| format!("line {line_no}: not JSON"))?;
        let text = v
            .get("text")
            .and_then(Value::as_str)
            .with_context(|| format!("line {line_no}: no string field `text`"))?;
        let mut meta = json!({ "line": line_no });
        for k in ["id", "label"] {
            if let Some(x) = v.get(k) {
                meta[k] = x.clone();
            }
        }
        emit(out, &analyzer, config, text, meta)?;
    }
    Ok(())
}

fn emit(
    out: &mut impl Write,
    analyzer: &Analyzer,
    config: &AnalysisConfig,
    text: &str,
    mut meta: Value,
) -> anyhow::Result<()> {
    let scan = analyzer.scan_text(text, Location::Request);
    meta["action"] = json!(config.policy.decide(&scan.findings).as_str());
    meta["truncated"] = json!(scan.truncated);
    meta["findings"] = serde_json::to_value(&scan.findings)?;
    serde_json::to_writer(&mut *out, &meta)?;
    out.write_all(b"\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_str(input: &str, format: Format) -> Vec<Value> {
        let args = AnalyzeArgs {
            input: None,
            format,
            max_bytes: None,
        };
        let mut out = Vec::new();
        run_on(
            &args,
            &AnalysisConfig::default(),
            input.as_bytes(),
            &mut out,
        )
        .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(!s.contains("AKIAIOSFODNN7EXAMPLE"), "raw key printed: {s}");
        s.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn jsonl_one_result_per_line() {
        let input = "{\"id\":1,\"label\":\"secret\",\"text\":\"key AKIAIOSFODNN7EXAMPLE\"}\n\n{\"id\":2,\"text\":\"hello\"}\n";
        let r = run_str(input, Format::Auto);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0]["findings"][0]["kind"], "secret.aws_access_key");
        assert_eq!(r[0]["findings"][0]["excerpt"], "AKIA****(20)");
        assert_eq!(
            (r[0]["label"].as_str(), r[0]["action"].as_str()),
            (Some("secret"), Some("flag"))
        );
        assert_eq!(r[1]["findings"].as_array().unwrap().len(), 0);
        assert_eq!(r[1]["action"], "allow");
    }

    #[test]
    fn plain_text_is_one_input() {
        let r = run_str("first line\nsecond AKIAIOSFODNN7EXAMPLE\n", Format::Auto);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0]["findings"][0]["kind"], "secret.aws_access_key");
    }

    #[test]
    fn bad_jsonl_line_is_a_clear_error() {
        let args = AnalyzeArgs {
            input: None,
            format: Format::Jsonl,
            max_bytes: None,
        };
        let err = run_on(
            &args,
            &AnalysisConfig::default(),
            "{\"text\":\"a\"}\nnot json\n".as_bytes(),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("line 2"));
    }
}
