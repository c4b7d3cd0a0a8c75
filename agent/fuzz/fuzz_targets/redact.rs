//! Redaction keeps valid JSON valid.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use llmtrace_agent::analysis::{Action, Analyzer, PolicyConfig, redact_body};

static ANALYZER: LazyLock<Analyzer> = LazyLock::new(|| Analyzer::new(1 << 16));

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policy = PolicyConfig {
        default_action: Action::Redact,
        rules: Vec::new(),
    };
    let was_json = serde_json::from_str::<serde_json::Value>(text).is_ok();
    if let Some(r) = redact_body(text, &ANALYZER, &policy) {
        if was_json {
            serde_json::from_str::<serde_json::Value>(&r.body).expect("redacted JSON stays valid");
        }
    }
});
