//! API key fingerprints: a keyed hash (HMAC-SHA256 under a per-host secret) of the credential, so
//! traces can group by key without ever holding the key.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Hex characters kept from the MAC (64 bits: enough to tell keys apart, useless to recover one).
pub const FINGERPRINT_HEX_LEN: usize = 16;

/// Header names that carry credentials (never stored).
pub const CREDENTIAL_HEADERS: &[&str] =
    &["authorization", "x-api-key", "api-key", "x-goog-api-key"];

/// The per-host secret, keyed into HMAC-SHA256 once: every request of every app is
/// fingerprinted on its way to the provider, and keying the MAC costs as much as hashing a
/// short key.
#[derive(Clone)]
pub struct Fingerprinter(Hmac<Sha256>);

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keyed state is derived from the secret: never printed.
        f.write_str("Fingerprinter")
    }
}

impl Fingerprinter {
    /// Fingerprints under `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Self(Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length"))
    }

    /// Keyed fingerprint of one credential value.
    pub fn fingerprint(&self, value: &str) -> String {
        let mac = self.0.clone().chain_update(value.as_bytes()).finalize();
        lower_hex(&mac.into_bytes()[..FINGERPRINT_HEX_LEN / 2])
    }
}

/// `bytes` as lowercase hex, two digits a byte (as `hex::encode`, whose char by char
/// collection cost as much as one of the hash's blocks: this runs for every request).
fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xF)]));
    }
    out
}

/// Fingerprint of the credential in the headers or the `key=` query parameter, if any.
pub fn api_key_fingerprint<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    query: Option<&str>,
    keyed: &Fingerprinter,
) -> Option<String> {
    let from_headers = headers.into_iter().find_map(|(name, value)| {
        if !CREDENTIAL_HEADERS
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
        {
            return None;
        }
        let v = value.trim();
        let v = if name.eq_ignore_ascii_case("authorization") {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .unwrap_or(v)
                .trim()
        } else {
            v
        };
        (!v.is_empty()).then_some(v)
    });
    let key = match from_headers {
        Some(k) => k,
        None => query?
            .split('&')
            .find_map(|kv| kv.strip_prefix("key="))
            .filter(|k| !k.is_empty())?,
    };
    Some(keyed.fingerprint(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_hex_is_hex_encode() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(lower_hex(&all), hex::encode(&all));
        assert_eq!(lower_hex(&[]), "");
    }

    #[test]
    fn same_key_same_fingerprint_across_headers() {
        let s = &Fingerprinter::new(b"host-secret");
        let a = api_key_fingerprint([("Authorization", "Bearer sk-test-123")], None, s).unwrap();
        let b = api_key_fingerprint([("x-api-key", "sk-test-123")], None, s).unwrap();
        let c = api_key_fingerprint([], Some("alt=sse&key=sk-test-123"), s).unwrap();
        assert_eq!(a.len(), FINGERPRINT_HEX_LEN);
        assert!(a == b && b == c);
        assert!(!a.contains("sk-test"));
        assert_ne!(
            a,
            api_key_fingerprint([("api-key", "other")], None, s).unwrap()
        );
        assert_ne!(
            a,
            api_key_fingerprint(
                [("api-key", "sk-test-123")],
                None,
                &Fingerprinter::new(b"other-secret")
            )
            .unwrap()
        );
        assert_eq!(
            api_key_fingerprint([("content-type", "x")], Some("alt=sse"), s),
            None
        );
    }

    #[test]
    fn keyed_once_equals_the_mac_of_the_secret_and_names_match_in_any_case() {
        let secret = b"host-secret";
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(b"sk-test-123");
        let full = hex::encode(mac.finalize().into_bytes());
        let keyed = Fingerprinter::new(secret);
        assert_eq!(
            keyed.fingerprint("sk-test-123"),
            full[..FINGERPRINT_HEX_LEN]
        );
        for name in ["AUTHORIZATION", "Authorization", "X-Api-Key", "API-KEY"] {
            let value = if name.eq_ignore_ascii_case("authorization") {
                "Bearer sk-test-123"
            } else {
                "sk-test-123"
            };
            assert_eq!(
                api_key_fingerprint([(name, value)], None, &keyed).as_deref(),
                Some(&full[..FINGERPRINT_HEX_LEN]),
                "{name}"
            );
        }
    }
}
