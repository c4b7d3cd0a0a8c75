//! QUIC cannot be inspected: UDP to a provider destination is refused by the kernel hook
//! (clients fall back to TCP, which is redirected), other UDP is untouched.

use std::{
    net::UdpSocket,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use serde_json::Value;
use testkit::{
    agent::{Agent, AgentConfig},
    cgroup::TestCgroup,
    echo::EchoServer,
    probe::{Probe, probe_in},
};

/// A UDP echo server on loopback that counts the datagrams it got.
struct UdpEcho {
    port: u16,
    received: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl UdpEcho {
    fn start(addr: &str) -> Self {
        let socket = UdpSocket::bind(addr).expect("bind udp echo");
        assert!(socket.local_addr().unwrap().ip().is_loopback());
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let port = socket.local_addr().unwrap().port();
        let received = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::SeqCst) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    r.fetch_add(1, Ordering::SeqCst);
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        });
        Self {
            port,
            received,
            stop,
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn udp_in(cg: &TestCgroup, addr: &str, mode: &str) -> Value {
    Probe {
        cgroup: Some(cg),
        flags: vec![
            "--udp".into(),
            mode.into(),
            "--timeout-ms".into(),
            "1000".into(),
        ],
        ..Probe::default()
    }
    .run(addr)
}

fn assert_refused(out: &Value) {
    assert_eq!(out["ok"], false, "{out}");
    assert_eq!(out["errno"], EPERM, "expected EPERM: {out}");
}

const EPERM: i32 = 1;

#[test]
fn udp_to_a_provider_is_refused_other_udp_and_tcp_are_not() {
    testkit::require_root!();
    let cg = TestCgroup::new("quic");
    // The provider: TCP and UDP on the same loopback address and port, as a QUIC-capable
    // server has; a second UDP server on an address that is not a provider.
    let tcp = EchoServer::start("127.0.0.2:0");
    let port = tcp.addr.port();
    let provider_udp = UdpEcho::start(&format!("127.0.0.2:{port}"));
    let provider_udp6 = UdpEcho::start(&format!("[::1]:{port}"));
    let other_udp = UdpEcho::start(&format!("127.0.0.3:{port}"));
    let agent = Agent::start(
        &cg,
        &AgentConfig {
            intercept: String::new(),
            rest: format!(
                "[[providers]]\nhost = \"api.openai.com\"\nport = {port}\n\
                 addresses = [\"127.0.0.2\", \"::1\"]\n"
            ),
        },
    );

    let provider = format!("127.0.0.2:{port}");
    // Unconnected sends (sendmsg hook) and connected sockets (connect hook), both families,
    // v4-mapped included.
    assert_refused(&udp_in(&cg, &provider, "sendto"));
    assert_refused(&udp_in(&cg, &provider, "connect"));
    assert_refused(&udp_in(&cg, &format!("[::1]:{port}"), "sendto"));
    assert_refused(&udp_in(&cg, &format!("[::1]:{port}"), "connect"));
    assert_refused(&udp_in(
        &cg,
        &format!("[::ffff:127.0.0.2]:{port}"),
        "sendto",
    ));
    assert_eq!(provider_udp.received.load(Ordering::SeqCst), 0);
    assert_eq!(provider_udp6.received.load(Ordering::SeqCst), 0);
    assert_eq!(
        agent.metric("llmtrace_ebpf_events_total", "quic_refused"),
        5
    );

    // Another loopback address on the same port is not a provider: UDP works both ways.
    let other = format!("127.0.0.3:{}", other_udp.port);
    for mode in ["sendto", "connect"] {
        let out = udp_in(&cg, &other, mode);
        assert_eq!(out["ok"], true, "{out}");
        assert_eq!(out["answer"], "hello", "{out}");
    }
    assert_eq!(other_udp.received.load(Ordering::SeqCst), 2);

    // Outside the intercepted cgroup the provider's UDP is not touched.
    let outside = Probe {
        flags: vec!["--udp".into(), "sendto".into()],
        ..Probe::default()
    }
    .run(&provider);
    assert_eq!(outside["ok"], true, "{outside}");
    assert_eq!(provider_udp.received.load(Ordering::SeqCst), 1);

    // TCP to the provider is still redirected through the agent.
    let out = probe_in(&cg, &provider);
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["via_agent"], true, "{out}");
    assert_eq!(
        agent.metric("llmtrace_ebpf_events_total", "quic_refused"),
        5
    );
}
