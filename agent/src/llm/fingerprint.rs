//! API key fingerprints: a keyed hash (HMAC-SHA256 under a per-host secret) of the credential, so
//! traces can group by key without ever holding the key.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Hex characters kept from the MAC (64 bits: enough to tell keys apart, useless to recover one).
pub const FINGERPRINT_HEX_LEN: usize = 16;

/// Header names that carry credentials (never stored).
pub const CREDENTIAL_HEADERS: &[&str] =
    &["authorization", "x-api-key", "api-key", "x-goog-api-key"];

/// Fingerprint of the credential in the headers or the `key=` query parameter, if any.
pub fn api_key_fingerprint<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    query: Option<&str>,
    secret: &[u8],
) -> Option<String> {
    let from_headers = headers.into_iter().find_map(|(name, value)| {
        let name = name.to_ascii_lowercase();
        if !CREDENTIAL_HEADERS.contains(&name.as_str()) {
            return None;
        }
        let v = value.trim();
        let v = if name == "authorization" {
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
    Some(fingerprint(key, secret))
}

/// Keyed fingerprint of one credential value.
pub fn fingerprint(value: &str, secret: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(value.as_bytes());
    let mut hex = hex::encode(mac.finalize().into_bytes());
    hex.truncate(FINGERPRINT_HEX_LEN);
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_fingerprint_across_headers() {
        let s = b"host-secret";
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
            api_key_fingerprint([("api-key", "sk-test-123")], None, b"other-secret").unwrap()
        );
        assert_eq!(
            api_key_fingerprint([("content-type", "x")], Some("alt=sse"), s),
            None
        );
    }
}
