//! WebSocket (HTTP/1.1 Upgrade) through the proxy: the 101 is relayed and bytes flow both ways.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{NAME, World, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_proxy() {
    let w = World::start().await;
    let config = client::config(&w.llmtrace_ca_pem, &[b"http/1.1"]);
    let mut tls = client::connect(w.proxy_addr, NAME, config).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {NAME}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(
            tls.read(&mut b).await.unwrap(),
            1,
            "closed before the 101 ended"
        );
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(head.contains("upgrade: websocket"), "{head}");
    // A masked text frame "hello" (the fake provider echoes raw bytes).
    let frame = [
        0x81,
        0x85,
        1,
        2,
        3,
        4,
        b'h' ^ 1,
        b'e' ^ 2,
        b'l' ^ 3,
        b'l' ^ 4,
        b'o' ^ 1,
    ];
    for _ in 0..3 {
        tls.write_all(&frame).await.unwrap();
        let mut back = [0u8; 11];
        tls.read_exact(&mut back).await.unwrap();
        assert_eq!(back, frame);
    }
    drop(tls);
    w.wait_for_no_active_connections().await;
}
