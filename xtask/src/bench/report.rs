//! BENCHMARKS.md: the machine, the method and each benchmark's own tables, verbatim, from one
//! `cargo xtask bench all` run, so every figure in it comes from the same build and machine.

use std::fmt::Write as _;

use anyhow::Result;

use crate::cmd;

/// One benchmark's part of the report.
pub struct Section {
    pub name: &'static str,
    pub method: &'static str,
    /// What the benchmark printed on stdout, or why it failed.
    pub output: Result<String>,
}

pub fn render(sections: &[Section]) -> String {
    let mut s = String::new();
    s.push_str("# llmtrace benchmarks\n\n");
    s.push_str(
        "Written by `cargo xtask bench all` (do not edit by hand; re-run it). Every benchmark is \
         bounded in count and time and targets only loopback or network namespaces it creates \
         itself. Each table puts llmtrace beside its references in the same run: the direct \
         path, nginx and mitmproxy where they apply.\n\n",
    );
    s.push_str("## Machine\n\n");
    for (what, value) in machine() {
        let _ = writeln!(s, "- {what}: {value}");
    }
    // Shortened runs (fewer rows, shorter cells) say so, since their figures are noisier.
    let mut knobs: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("LLMTRACE_BENCH_"))
        .map(|(k, v)| format!("`{k}={v}`"))
        .collect();
    knobs.sort();
    if !knobs.is_empty() {
        let _ = writeln!(s, "- run with: {}", knobs.join(", "));
    }
    for sec in sections {
        let _ = write!(
            s,
            "\n## {}\n\n`cargo xtask bench {}`: {}\n\n",
            sec.name, sec.name, sec.method
        );
        match &sec.output {
            Ok(out) => {
                s.push_str("```text\n");
                s.push_str(out.trim_end());
                s.push_str("\n```\n");
            }
            Err(e) => {
                let _ = writeln!(s, "**Failed in this run:** {e:#}");
            }
        }
    }
    s
}

fn machine() -> Vec<(&'static str, String)> {
    let first = |o: Option<String>| {
        o.map_or_else(
            || "unknown".into(),
            |s| s.lines().next().unwrap_or("").trim().to_owned(),
        )
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(|| "unknown".into(), |v| v.trim().to_owned())
    };
    // The clock the kernel reports: hosts of the same model name differ, and every figure
    // here moves with it (compare runs on one host, not across hosts).
    let cpu = format!("{} at {} MHz", field("model name"), field("cpu MHz"));
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or_else(|| "unknown".into(), |kb| format!("{} MiB", kb / 1024));
    vec![
        ("date (UTC)", first(cmd::output("date", &["-u", "+%FT%TZ"]))),
        (
            "commit",
            first(cmd::output("git", &["rev-parse", "--short", "HEAD"])),
        ),
        ("kernel", first(cmd::output("uname", &["-r"]))),
        (
            "cpu",
            format!("{cpu}, {} cores online", first(cmd::output("nproc", &[]))),
        ),
        ("memory", mem),
        (
            "os",
            first(cmd::output(
                "sh",
                &["-c", ". /etc/os-release && echo \"$PRETTY_NAME\""],
            )),
        ),
        ("rustc", first(cmd::output("rustc", &["--version"]))),
        ("nginx", first(cmd::output("sh", &["-c", "nginx -v 2>&1"]))),
    ]
}
