//! What language runtimes need beyond the system trust store.

use std::fmt::Write;
use std::path::Path;

/// Instructions for runtimes that ignore (or only partly use) the system store. `bundle` is the
/// system bundle that includes the root after `install`; runtimes that replace their whole
/// store via an environment variable must point at it, not at the lone root, or every other
/// HTTPS site breaks for them.
pub fn runtime_hints(ca_pem: &Path, bundle: Option<&Path>) -> String {
    let ca = ca_pem.display();
    let mut out = String::from("Language runtimes that do not read the system trust store:\n");
    let _ = writeln!(
        out,
        "  Node.js (adds to its built-in roots):\n    export NODE_EXTRA_CA_CERTS={ca}"
    );
    match bundle {
        Some(bundle) => {
            let bundle = bundle.display();
            let _ = writeln!(
                out,
                "  Python requests / httpx / openai (certifi bundle):\n    export REQUESTS_CA_BUNDLE={bundle}\n    export SSL_CERT_FILE={bundle}"
            );
            let _ = writeln!(
                out,
                "  OpenSSL-based tools and Go (usually read the bundle already):\n    export SSL_CERT_FILE={bundle}"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  Python requests / httpx / openai: REQUESTS_CA_BUNDLE and SSL_CERT_FILE replace the whole store;\n    point them at a bundle containing {ca} plus the usual public roots"
            );
        }
    }
    let _ = writeln!(
        out,
        "  Java (per JDK, needs write access to its cacerts):\n    keytool -importcert -noprompt -cacerts -storepass changeit -alias llmtrace -file {ca}"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_every_runtime_and_the_right_files() {
        let text = runtime_hints(
            Path::new("/var/lib/llmtrace/ca/ca.pem"),
            Some(Path::new("/etc/ssl/certs/ca-certificates.crt")),
        );
        assert!(text.contains("NODE_EXTRA_CA_CERTS=/var/lib/llmtrace/ca/ca.pem"));
        assert!(text.contains("REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt"));
        assert!(text.contains("SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"));
        assert!(text.contains("keytool -importcert"));
        assert!(text.contains("-file /var/lib/llmtrace/ca/ca.pem"));
        let without = runtime_hints(Path::new("/x/ca.pem"), None);
        assert!(without.contains("REQUESTS_CA_BUNDLE"));
    }
}
