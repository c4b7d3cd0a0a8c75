use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, RootCertStore, pki_types::ServerName};

use super::*;

/// A real ClientHello as rustls sends it.
fn hello_bytes(name: &str, alpn: &[&[u8]]) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let mut conn = ClientConnection::new(Arc::new(config), server_name).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

/// Splits one handshake record into records of at most `size` fragment bytes each.
fn refragment(record: &[u8], size: usize) -> Vec<u8> {
    let body = &record[5..];
    let mut out = Vec::new();
    for chunk in body.chunks(size) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&u16::try_from(chunk.len()).unwrap().to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[test]
fn parses_sni_and_alpn_of_a_real_client_hello() {
    let bytes = hello_bytes("API.OpenAI.com", &[b"h2", b"http/1.1"]);
    let Sniff::Hello(info) = parse(&bytes) else {
        panic!("not parsed")
    };
    assert_eq!(info.sni.as_deref(), Some("api.openai.com"));
    assert_eq!(info.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
}

#[test]
fn every_strict_prefix_needs_more() {
    let bytes = hello_bytes("api.openai.com", &[b"h2"]);
    for n in 0..bytes.len() {
        assert_eq!(parse(&bytes[..n]), Sniff::NeedMore, "prefix {n}");
    }
}

#[test]
fn a_hello_split_over_many_records_parses() {
    let bytes = refragment(&hello_bytes("api.anthropic.com", &[]), 7);
    let Sniff::Hello(info) = parse(&bytes) else {
        panic!("not parsed")
    };
    assert_eq!(info.sni.as_deref(), Some("api.anthropic.com"));
    assert!(info.alpn.is_empty());
}

#[test]
fn an_ip_address_server_name_means_no_sni() {
    let Sniff::Hello(info) = parse(&hello_bytes("127.0.0.2", &[])) else {
        panic!("not parsed")
    };
    assert_eq!(info.sni, None);
}

#[test]
fn plaintext_http_is_not_tls() {
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\n"),
        Sniff::NotHello(NotHello::NotTls)
    );
    assert_eq!(parse(b"G"), Sniff::NotHello(NotHello::NotTls));
    assert_eq!(parse(&[22, 9]), Sniff::NotHello(NotHello::NotTls));
}

#[test]
fn a_non_hello_handshake_is_malformed() {
    let mut bytes = hello_bytes("api.openai.com", &[]);
    bytes[5] = 2; // ServerHello
    assert_eq!(parse(&bytes), Sniff::NotHello(NotHello::Malformed));
}

/// Mutates a real hello many times; the parser must never panic (a cheap stand-in for the
/// cargo-fuzz target, run on every `cargo test`).
#[test]
fn mutated_hellos_never_panic() {
    let base = hello_bytes("api.openai.com", &[b"h2", b"http/1.1"]);
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let mut bytes = base.clone();
        for _ in 0..=(next() % 4) {
            let i = (next() as usize) % bytes.len();
            bytes[i] = next() as u8;
        }
        let cut = (next() as usize) % (bytes.len() + 1);
        let _ = parse(&bytes[..cut]);
    }
}

#[tokio::test]
async fn reading_keeps_every_byte_and_stops_at_the_hello() {
    let hello = hello_bytes("api.openai.com", &[b"h2"]);
    let mut input = hello.clone();
    input.extend_from_slice(b"trailing");
    let mut reader = &input[..];
    let sniffed = read_client_hello(&mut reader, 65_536, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(sniffed.hello.is_ok());
    assert!(input.starts_with(&sniffed.buffered));
    assert!(sniffed.buffered.len() >= hello.len());
}

#[tokio::test]
async fn truncated_and_oversized_hellos_are_reported() {
    let hello = hello_bytes("api.openai.com", &[]);
    let mut reader = &hello[..hello.len() - 3];
    let sniffed = read_client_hello(&mut reader, 65_536, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(sniffed.hello, Err(NotHello::Truncated));
    assert_eq!(sniffed.buffered.len(), hello.len() - 3);

    let big = refragment(&hello, 1);
    let mut reader = &big[..];
    let sniffed = read_client_hello(&mut reader, 600, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(sniffed.hello, Err(NotHello::TooLarge));
}

#[tokio::test]
async fn a_silent_client_times_out() {
    let (mut client, _server) = tokio::io::duplex(64);
    let sniffed = read_client_hello(&mut client, 65_536, Duration::from_millis(20))
        .await
        .unwrap();
    assert_eq!(sniffed.hello, Err(NotHello::Timeout));
}
