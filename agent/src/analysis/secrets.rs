//! Secret detectors: provider API keys, cloud keys, private keys, JWTs, passwords in connection
//! strings and assignments. Patterns are ordered most specific first.

use super::finding::{Severity, mask_secret};
use super::patterns::{Spec, TableDetector, Trigger, not_placeholder};
use super::triggers::Target;

/// What follows `BEGIN ` or `END ` on a private key's first or last line.
macro_rules! private_key_line_end {
    () => {
        "(?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----"
    };
}

/// A line break inside a key block: a newline, CRLF or JSON's escapes, with the blanks around
/// it.
macro_rules! line_break {
    () => {
        r"[ \t]*(?:\r?\n|\\[rn])[ \t]*"
    };
}

const fn spec(
    kind: &'static str,
    severity: Severity,
    confidence: f32,
    pattern: &'static str,
    trigger: Trigger,
) -> Spec {
    Spec {
        kind,
        severity,
        confidence,
        pattern,
        group: 0,
        validate: None,
        mask: mask_secret,
        trigger,
    }
}

/// Letters and digits both present: tells real tokens from hyphenated words (`sk-learn-…`).
fn mixed(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_digit()) && s.bytes().filter(u8::is_ascii_alphabetic).count() >= 8
}

fn password(s: &str) -> bool {
    not_placeholder(s)
}

pub(crate) const SPECS: &[Spec] = &[
    spec(
        "secret.private_key",
        Severity::Critical,
        0.99,
        // The whole block, not only its first line: the match is what masking replaces, and
        // the key is the base64 after the header. Never a search past the block (for an END
        // far away, or none): a text of many BEGIN lines stays linear to scan.
        concat!(
            "-----BEGIN ",
            private_key_line_end!(),
            "(?:",
            // One line of space-separated base64 ending with the END line (a key whose line
            // breaks became spaces).
            r"(?:[ \t]+[A-Za-z0-9+/=]+)+[ \t]+-----END ",
            private_key_line_end!(),
            "|",
            // Lines of `Name: value` headers (encrypted PEM, PGP) or base64, then the END line
            // when there is one.
            "(?:(?:",
            line_break!(),
            r")+(?:[A-Za-z-]+:[ \t][^\r\n\\]*|[A-Za-z0-9+/=]+))*(?:(?:",
            line_break!(),
            ")*-----END ",
            private_key_line_end!(),
            ")?)",
        ),
        Trigger::Prefix(&["-----BEGIN "]),
    ),
    spec(
        "secret.anthropic_key",
        Severity::Critical,
        0.99,
        r"\bsk-ant-(?:api|admin|oat)[0-9]{2}-[A-Za-z0-9_\-]{20,}",
        Trigger::Prefix(&["sk-ant-"]),
    ),
    Spec {
        validate: Some(mixed),
        ..spec(
            "secret.openai_key",
            Severity::Critical,
            0.9,
            r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{32,}",
            Trigger::Prefix(&["sk-"]),
        )
    },
    spec(
        "secret.aws_access_key",
        Severity::Critical,
        0.95,
        r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",
        Trigger::Prefix(&["AKIA", "ASIA", "ABIA", "ACCA"]),
    ),
    Spec {
        group: 1,
        ..spec(
            "secret.aws_secret_key",
            Severity::Critical,
            0.9,
            r#"(?i)aws_?secret_?(?:access_?)?key["']?\s*[:=]\s*["']?([A-Za-z0-9/+=]{40})\b"#,
            Trigger::Prefix(&["aws"]),
        )
    },
    spec(
        "secret.gcp_api_key",
        Severity::High,
        0.95,
        r"\bAIza[0-9A-Za-z_\-]{35}",
        Trigger::Prefix(&["AIza"]),
    ),
    Spec {
        group: 1,
        ..spec(
            "secret.azure_key",
            Severity::Critical,
            0.9,
            r"(?i)\b(?:AccountKey|SharedAccessKey)=([A-Za-z0-9+/=]{40,})",
            Trigger::Prefix(&["AccountKey=", "SharedAccessKey="]),
        )
    },
    spec(
        "secret.github_token",
        Severity::High,
        0.95,
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{60,})",
        Trigger::Prefix(&["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"]),
    ),
    spec(
        "secret.slack_token",
        Severity::High,
        0.9,
        r"\bxox[abposr]-[A-Za-z0-9\-]{10,}",
        Trigger::Prefix(&["xox"]),
    ),
    spec(
        "secret.stripe_key",
        Severity::Critical,
        0.95,
        r"\b[sr]k_live_[A-Za-z0-9]{20,}",
        Trigger::Prefix(&["sk_live_", "rk_live_"]),
    ),
    spec(
        "secret.provider_key",
        Severity::High,
        0.85,
        r"\b(?:gsk_[A-Za-z0-9]{40,}|xai-[A-Za-z0-9]{40,}|hf_[A-Za-z0-9]{30,}|ya29\.[A-Za-z0-9_\-]{20,}|pplx-[A-Za-z0-9]{40,}|fw_[A-Za-z0-9]{20,})",
        Trigger::Prefix(&["gsk_", "xai-", "hf_", "ya29.", "pplx-", "fw_"]),
    ),
    spec(
        "secret.jwt",
        Severity::High,
        0.9,
        r"\beyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}",
        Trigger::Prefix(&["eyJ"]),
    ),
    Spec {
        group: 1,
        validate: Some(password),
        ..spec(
            "secret.connection_password",
            Severity::High,
            0.9,
            r#"\b[a-zA-Z][a-zA-Z0-9+.\-]{1,20}://[^\s:/@"'\\]{1,64}:([^\s@/"'\\]{1,128})@[^\s/"'\\]"#,
            // Scheme: one letter and at most 20 more bytes before `://`.
            Trigger::Inner(&["://"], 21),
        )
    },
    Spec {
        group: 1,
        validate: Some(password),
        ..spec(
            "secret.password_assignment",
            Severity::Medium,
            0.6,
            r#"(?i)\b(?:password|passwd|pwd|client_secret|api[_\-]?key|access[_\-]?token|secret[_\-]?key)["']?\s*[:=]\s*["']?([^\s"',;\\]{6,128})"#,
            Trigger::Prefix(&[
                "password",
                "passwd",
                "pwd",
                "client_secret",
                "apikey",
                "api_key",
                "api-key",
                "accesstoken",
                "access_token",
                "access-token",
                "secretkey",
                "secret_key",
                "secret-key",
            ]),
        )
    },
];

/// The secret detector.
pub fn detector() -> TableDetector {
    TableDetector::new(SPECS, Target::Secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Location;

    fn kinds(text: &str) -> Vec<&'static str> {
        let mut out = Vec::new();
        detector().scan(text, Location::Request, &mut out);
        out.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn detects_each_kind() {
        let cases = [
            ("my key is AKIAIOSFODNN7EXAMPLE ok", "secret.aws_access_key"),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "secret.aws_secret_key",
            ),
            (
                "sk-proj-abcdefghij1234567890ABCDEFGHIJklmnop",
                "secret.openai_key",
            ),
            (
                "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789",
                "secret.anthropic_key",
            ),
            (
                "AIzaSyA1234567890abcdefghijklmnopqrstuv",
                "secret.gcp_api_key",
            ),
            (
                "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH==",
                "secret.azure_key",
            ),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn",
                "secret.private_key",
            ),
            (
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                "secret.jwt",
            ),
            (
                "postgres://app:s3cr3tPa55@db.internal:5432/x",
                "secret.connection_password",
            ),
            (
                "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
                "secret.github_token",
            ),
            ("password = \"Tr0ub4dor&3\"", "secret.password_assignment"),
        ];
        for (text, kind) in cases {
            assert_eq!(kinds(text), vec![kind], "{text}");
        }
    }

    #[test]
    fn negatives() {
        for text in [
            "use sk-learn-classification-pipeline-for-everything",
            "AKIA is a prefix, AKIAshort",
            "postgres://user:${DB_PASSWORD}@db/x",
            "password: <your password>",
            "the quick brown fox",
            "-----BEGIN PUBLIC KEY-----",
        ] {
            assert!(kinds(text).is_empty(), "{text}: {:?}", kinds(text));
        }
    }

    #[test]
    fn excerpt_never_holds_the_secret() {
        let mut out = Vec::new();
        let text = "creds AKIAIOSFODNN7EXAMPLE and postgres://app:s3cr3tPa55@db/x";
        detector().scan(text, Location::Request, &mut out);
        assert_eq!(out.len(), 2);
        for f in &out {
            assert!(
                !f.excerpt.contains("AKIAIOSFODNN7EXAMPLE") && !f.excerpt.contains("s3cr3tPa55"),
                "{}",
                f.excerpt
            );
        }
        assert_eq!(out[0].excerpt, "AKIA****(20)");
        assert_eq!(&text[out[0].span.clone()], "AKIAIOSFODNN7EXAMPLE");
    }

    /// The span of the one private key finding in `text`.
    fn key_span(text: &str) -> &str {
        let mut out = Vec::new();
        detector().scan(text, Location::Request, &mut out);
        let keys: Vec<_> = out
            .iter()
            .filter(|f| f.kind == "secret.private_key")
            .collect();
        assert_eq!(keys.len(), 1, "{text:?}: {out:?}");
        &text[keys[0].span.clone()]
    }

    #[test]
    fn a_private_key_is_found_whole_so_masking_leaves_none_of_it() {
        let body = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n\
                    VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n\
                    LxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW/VDL5AaWTg0nLVkjRo==";
        let pem = format!("-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----");
        let encrypted = format!(
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
             DEK-Info: AES-128-CBC,3F17F5316E2BAC89\n\n{body}\n-----END RSA PRIVATE KEY-----"
        );
        let escaped = pem.replace('\n', "\\n");
        let crlf = pem.replace('\n', "\r\n");
        let one_line = pem.replace('\n', " ");
        for whole in [&pem, &encrypted, &escaped, &crlf, &one_line] {
            let text = format!("deploy with this key: {whole}\nThanks, and rotate it after.");
            assert_eq!(key_span(&text), whole.as_str());
            let masked = super::super::redact::mask_known_secrets(&text);
            assert!(
                !masked.contains("MIIEow")
                    && !masked.contains("VTLw7")
                    && !masked.contains("LxoS2"),
                "{masked}"
            );
            assert!(
                masked.ends_with("\nThanks, and rotate it after."),
                "{masked}"
            );
        }
        // Without its END line (a key cut short): its lines, up to the first line of prose
        // (whose first word is taken for base64: masked too, which is the safe side).
        let cut = format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\nThanks for the help");
        assert_eq!(
            key_span(&cut),
            format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\nThanks")
        );
    }

    #[test]
    fn many_begin_lines_without_an_end_are_each_a_short_match() {
        // Each search stops at the end of its block instead of looking for an END further on.
        let text = "-----BEGIN RSA PRIVATE KEY----- and some words\n".repeat(2000);
        let mut out = Vec::new();
        detector().scan(&text, Location::Request, &mut out);
        assert_eq!(out.len(), 2000);
        assert!(
            out.iter()
                .all(|f| text[f.span.clone()] == *"-----BEGIN RSA PRIVATE KEY-----")
        );
    }
}
