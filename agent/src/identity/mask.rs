//! Command lines are stored in traces, and they often carry credentials
//! (`curl -H 'Authorization: Bearer …'`, `--api-key=…`, keys pasted as arguments): mask them
//! before they leave this module.

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex, PoisonError},
};

use regex::Regex;
use sha2::{Digest as _, Sha256};

use crate::analysis::{Analyzer, Location, mask_findings, redact::mask_known_secrets};

/// Values of credential-carrying options and headers, whatever their format.
static CREDENTIAL_ARGS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(authorization:\s*(?:bearer|basic|token)?\s*|bearer\s+|x-api-key:\s*|api-key:\s*|x-goog-api-key:\s*|(?:^|\s)(?:-u|--user)[=\s]+|--?[\w-]*(?:key|token|password|passwd|secret)[=\s]+|(?:api[-_]?key|token|password|passwd|secret)=)([^\s'\x22]+)",
    )
    .expect("credential pattern compiles")
});

/// Passwords in URLs (`scheme://user:password@host`).
static URL_USERINFO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(://[^/\s:@]+:)([^@\s/]+)(@)").expect("userinfo pattern compiles")
});

/// Compiles the masks (about 3 ms of regex building): done at startup, so that the first
/// connection of an app does not wait for it on its way to the provider.
pub fn compile() {
    LazyLock::force(&CREDENTIAL_ARGS);
    LazyLock::force(&URL_USERINFO);
    crate::analysis::redact::compile();
}

/// `cmdline` with every credential replaced by `[REDACTED]`.
pub fn mask_cmdline(cmdline: &str) -> String {
    let known = mask_known_secrets(cmdline);
    let args = CREDENTIAL_ARGS.replace_all(&known, "${1}[REDACTED]");
    URL_USERINFO
        .replace_all(&args, "${1}[REDACTED]${3}")
        .into_owned()
}

/// Masked command lines by the SHA-256 of the raw one: most connections come from processes
/// whose command line was seen before (the same app, restarted or forked), and masking is most
/// of what reading a process's identity costs (≈ 90 µs of regex and secret scans). Keyed by a
/// digest so the cache never holds a raw credential; bounded, emptied when full (a miss only
/// costs a fresh mask).
static MASKED: LazyLock<Mutex<HashMap<[u8; 32], String>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Entries of [`MASKED`] (each at most the 4 KiB command-line bound).
const MASKED_CAPACITY: usize = 256;

/// [`mask_cmdline`], answered from a cache of earlier results for the same command line.
pub fn mask_cmdline_cached(cmdline: &str) -> String {
    let key: [u8; 32] = Sha256::digest(cmdline.as_bytes()).into();
    let lock = || MASKED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(hit) = lock().get(&key) {
        return hit.clone();
    }
    // Masked outside the lock: a concurrent miss for the same line masks twice, harmlessly.
    let masked = mask_cmdline(cmdline);
    let mut cache = lock();
    if cache.len() >= MASKED_CAPACITY {
        cache.clear();
    }
    cache.insert(key, masked.clone());
    masked
}

/// `cmdline` (already through [`mask_cmdline`]) with what the configured analysis also finds
/// masked: canaries, and secrets in decoded views (base64, hex, URL-encoded, …), the same
/// detectors a request body goes through. Needs the configuration, so it runs where rows are
/// made; `None` when there is nothing to mask.
pub fn mask_cmdline_with(analyzer: &Analyzer, cmdline: &str) -> Option<String> {
    let mut found = Vec::new();
    analyzer.scan_maskable(cmdline, Location::Request, &mut found);
    found.retain(|f| matches!(f.category(), "secret" | "canary"));
    (!found.is_empty()).then(|| mask_findings(cmdline, &found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_command_lines_are_masked() {
        let cases = [
            (
                "curl -H 'Authorization: Bearer abc.def-123' https://api.openai.com",
                "abc.def-123",
            ),
            (
                "python app.py --api-key=sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD",
                "sk-proj-",
            ),
            ("tool --token s3cr3t-value run", "s3cr3t-value"),
            (
                "env OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwxyz0123456789abcdefgh x",
                "sk-abcdefghij",
            ),
            (
                "python client.py --prompt My key is AKIAIOSFODNN7EXAMPLE",
                "AKIAIOSFODNN7EXAMPLE",
            ),
            ("curl -H 'x-api-key: sk-ant-xyz' url", "sk-ant-xyz"),
            ("curl -u alice:hunter2 https://api.openai.com", "hunter2"),
            ("curl https://alice:hunter2@api.openai.com/v1", "hunter2"),
            ("psql postgres://u:hunter2@db/app", "hunter2"),
            ("agent --openai-key hunter2", "hunter2"),
        ];
        for (line, secret) in cases {
            let masked = mask_cmdline(line);
            assert!(!masked.contains(secret), "{secret} survived in {masked}");
            assert!(masked.contains("REDACTED"), "{masked}");
        }
    }

    #[test]
    fn cached_masks_equal_fresh_ones_and_stay_bounded() {
        let line = "curl -H 'Authorization: Bearer abc.def-123' https://api.openai.com";
        let first = mask_cmdline_cached(line);
        assert_eq!(first, mask_cmdline(line));
        assert_eq!(mask_cmdline_cached(line), first);
        // A different line never gets another line's answer.
        let other = "tool --token s3cr3t-value run";
        assert_eq!(mask_cmdline_cached(other), mask_cmdline(other));
        for i in 0..MASKED_CAPACITY * 2 {
            let line = format!("app --instance {i} --api-key=k{i}");
            assert_eq!(mask_cmdline_cached(&line), mask_cmdline(&line));
        }
        assert!(MASKED.lock().unwrap().len() <= MASKED_CAPACITY);
    }

    #[test]
    fn ordinary_command_lines_are_kept() {
        let line = "/usr/bin/python3 -m myapp --port 8080 --verbose";
        assert_eq!(mask_cmdline(line), line);
        let analyzer = Analyzer::new(1 << 16);
        assert_eq!(mask_cmdline_with(&analyzer, line), None);
        // PII is not a credential: the analysis reports it, the command line keeps it.
        let line = "mail --to alice@example.com";
        assert_eq!(mask_cmdline_with(&analyzer, line), None);
    }

    #[test]
    fn canaries_and_encoded_secrets_are_masked_with_the_configured_analysis() {
        let config: crate::analysis::AnalysisConfig =
            toml::from_str("[[canary]]\nname = \"sys-prompt\"\nvalue = \"zebra-7f3k-orchid\"")
                .unwrap();
        let analyzer = Analyzer::from_config(&config);
        // The plain mask knows neither the canary nor the base64 of an AWS key.
        let line = "python app.py --prompt repeat zebra-7f3k-orchid --creds QUtJQUlPU0ZPRE5ON0VYQU1QTEU ok";
        let plain = mask_cmdline(line);
        assert!(plain.contains("zebra-7f3k-orchid"));
        let masked = mask_cmdline_with(&analyzer, &plain).expect("something to mask");
        assert!(!masked.contains("zebra-7f3k-orchid"), "{masked}");
        assert!(!masked.contains("QUtJQUlPU0ZPRE5ON0VYQU1QTEU"), "{masked}");
        assert!(masked.contains("[REDACTED:canary.leak]"), "{masked}");
        assert!(
            masked.starts_with("python app.py --prompt repeat "),
            "{masked}"
        );
        assert!(masked.ends_with(" ok"), "{masked}");
        // An API key on the command line, also caught by the plain mask.
        let line = "python app.py --key sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD";
        let plain = mask_cmdline(line);
        assert!(!plain.contains("sk-proj-abcdef"), "{plain}");
        let key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD";
        let masked = mask_cmdline_with(&analyzer, &format!("python app.py {key}"))
            .expect("the key is found");
        assert!(!masked.contains(key), "{masked}");
    }
}
