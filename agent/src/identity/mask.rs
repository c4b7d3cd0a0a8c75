//! Command lines are stored in traces, and they often carry credentials
//! (`curl -H 'Authorization: Bearer …'`, `--api-key=…`, keys pasted as arguments): mask them
//! before they leave this module.

use std::sync::LazyLock;

use regex::Regex;

use crate::analysis::redact::mask_known_secrets;

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

/// `cmdline` with every credential replaced by `[REDACTED]`.
pub fn mask_cmdline(cmdline: &str) -> String {
    let known = mask_known_secrets(cmdline);
    let args = CREDENTIAL_ARGS.replace_all(&known, "${1}[REDACTED]");
    URL_USERINFO
        .replace_all(&args, "${1}[REDACTED]${3}")
        .into_owned()
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
    fn ordinary_command_lines_are_kept() {
        let line = "/usr/bin/python3 -m myapp --port 8080 --verbose";
        assert_eq!(mask_cmdline(line), line);
    }
}
