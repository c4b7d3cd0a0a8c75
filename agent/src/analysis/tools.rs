//! Risky tool calls: shell, file and network tools, and dangerous arguments whatever the tool
//! name (destructive commands, credential paths, cloud metadata and exfiltration endpoints).

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};

use super::finding::{Finding, Location, Severity};

/// Argument patterns: (needle, kind, severity).
const RISKY_ARGS: &[(&str, &str, Severity)] = &[
    ("rm -rf", "tool.shell", Severity::Critical),
    ("rm -fr", "tool.shell", Severity::Critical),
    ("mkfs", "tool.shell", Severity::Critical),
    ("dd if=", "tool.shell", Severity::High),
    (":(){", "tool.shell", Severity::Critical),
    ("chmod 777", "tool.shell", Severity::High),
    ("chmod -r 777", "tool.shell", Severity::High),
    ("| sh", "tool.shell", Severity::High),
    ("| bash", "tool.shell", Severity::High),
    ("|sh", "tool.shell", Severity::High),
    ("|bash", "tool.shell", Severity::High),
    ("sudo ", "tool.shell", Severity::High),
    ("/bin/sh -i", "tool.shell", Severity::Critical),
    ("nc -e", "tool.shell", Severity::Critical),
    ("base64 -d |", "tool.shell", Severity::High),
    ("shutdown ", "tool.shell", Severity::High),
    ("/etc/shadow", "tool.file", Severity::Critical),
    ("/etc/passwd", "tool.file", Severity::High),
    (".ssh/", "tool.file", Severity::High),
    ("id_rsa", "tool.file", Severity::Critical),
    (".aws/credentials", "tool.file", Severity::Critical),
    (".kube/config", "tool.file", Severity::High),
    ("/proc/self/environ", "tool.file", Severity::High),
    (".env", "tool.file", Severity::Medium),
    ("169.254.169.254", "tool.network", Severity::Critical),
    (
        "metadata.google.internal",
        "tool.network",
        Severity::Critical,
    ),
    ("webhook.site", "tool.network", Severity::High),
    ("pastebin.com", "tool.network", Severity::High),
    ("ngrok", "tool.network", Severity::Medium),
];

/// Tool name fragments → kind of tool.
const SHELL_NAMES: &[&str] = &[
    "bash",
    "shell",
    "exec",
    "terminal",
    "command",
    "cmd",
    "powershell",
    "subprocess",
    "run_code",
    "computer",
];

/// Risky tool call detector.
#[derive(Debug)]
pub struct ToolDetector {
    ac: AhoCorasick,
}

impl Default for ToolDetector {
    fn default() -> Self {
        let ac = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            // A full DFA: a few dozen short phrases stay small, and scanning is fastest.
            .kind(Some(AhoCorasickKind::DFA))
            .build(RISKY_ARGS.iter().map(|r| r.0))
            .expect("built-in needles compile");
        Self { ac }
    }
}

impl ToolDetector {
    /// Appends findings for one tool call (`name`, JSON `arguments`).
    pub fn scan(&self, name: &str, arguments: &str, location: Location, out: &mut Vec<Finding>) {
        let lname = name.to_ascii_lowercase();
        let is_shell = SHELL_NAMES.iter().any(|s| lname.contains(s));
        let mut worst: Option<(usize, std::ops::Range<usize>)> = None;
        for m in self.ac.find_iter(arguments) {
            let i = m.pattern().as_usize();
            if worst
                .as_ref()
                .is_none_or(|(w, _)| RISKY_ARGS[i].2 > RISKY_ARGS[*w].2)
            {
                worst = Some((i, m.range()));
            }
        }
        if let Some((i, span)) = worst {
            let (needle, kind, severity) = RISKY_ARGS[i];
            out.push(Finding {
                kind,
                severity,
                confidence: if is_shell || kind != "tool.shell" {
                    0.9
                } else {
                    0.6
                },
                location,
                excerpt: format!("{}: {needle}", truncate(name, 48)),
                span,
                view: None,
            });
        } else if is_shell {
            out.push(Finding {
                kind: "tool.shell",
                severity: Severity::Medium,
                confidence: 0.5,
                location,
                excerpt: format!("{}: shell command", truncate(name, 48)),
                span: 0..0,
                view: None,
            });
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(name: &str, args: &str) -> Vec<(&'static str, Severity)> {
        let mut out = Vec::new();
        ToolDetector::default().scan(name, args, Location::ToolCall, &mut out);
        out.into_iter().map(|f| (f.kind, f.severity)).collect()
    }

    #[test]
    fn classifies() {
        assert_eq!(
            scan("bash", r#"{"command":"rm -rf / --no-preserve-root"}"#),
            vec![("tool.shell", Severity::Critical)]
        );
        assert_eq!(
            scan("run_shell", r#"{"cmd":"ls"}"#),
            vec![("tool.shell", Severity::Medium)]
        );
        assert_eq!(
            scan("read_file", r#"{"path":"/home/u/.aws/credentials"}"#),
            vec![("tool.file", Severity::Critical)]
        );
        assert_eq!(
            scan(
                "http_get",
                r#"{"url":"http://169.254.169.254/latest/meta-data"}"#
            ),
            vec![("tool.network", Severity::Critical)]
        );
    }

    #[test]
    fn benign_calls() {
        assert!(scan("get_weather", r#"{"city":"Paris"}"#).is_empty());
        assert!(scan("read_file", r#"{"path":"src/main.rs"}"#).is_empty());
    }
}
