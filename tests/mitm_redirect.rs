//! curl over HTTP/1.1 and HTTP/2 through the real eBPF redirect and TLS interception gets the
//! same status and body as directly from the provider, and sees the llmtrace certificate only
//! for names configured for interception. A relayed connection to a name that looks like an LLM
//! API but is not configured is a shadow-AI finding on its trace row.

use std::process::Command;

use testkit::{
    agent::{Agent, AgentConfig},
    cgroup::{TestCgroup, command_in},
    fake_llm::FakeLlm,
};

const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}"#;

fn curl(
    cmd: &mut Command,
    version: &str,
    port: u16,
    cacert: &std::path::Path,
) -> (String, String, String) {
    curl_to("api.openai.com", cmd, version, port, cacert)
}

/// (status, body, issuer of the certificate curl saw).
fn curl_to(
    host: &str,

    cmd: &mut Command,
    version: &str,
    port: u16,
    cacert: &std::path::Path,
) -> (String, String, String) {
    let out = cmd
        .args([
            "-sS",
            version,
            "--max-time",
            "10",
            "-w",
            "\n%{http_code} %{http_version}",
            "-v",
        ])
        .args(["--resolve", &format!("{host}:{port}:127.0.0.2")])
        .arg("--cacert")
        .arg(cacert)
        .args([
            "-H",
            "content-type: application/json",
            "-H",
            "authorization: Bearer sk-test-0000",
        ])
        .args(["--data", BODY])
        .arg(format!("https://{host}:{port}/v1/chat/completions"))
        .output()
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "curl failed: {stderr}");
    let (body, status) = stdout.rsplit_once('\n').expect("status line");
    let issuer = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("*  issuer: "))
        .unwrap_or("")
        .to_owned();
    (status.to_owned(), body.to_owned(), issuer)
}

#[test]
fn curl_h1_and_h2_through_the_agent_match_direct() {
    testkit::require_root!();
    let cg = TestCgroup::new("curl");
    let fake = FakeLlm::start("127.0.0.2:0");
    let port = fake.addr.port();
    let agent = Agent::start(
        &cg,
        &AgentConfig {
            intercept: String::new(),
            rest: format!(
                "[[providers]]\nhost = \"api.openai.com\"\nport = {port}\naddresses = [\"127.0.0.2\"]\n\
                 [upstream]\nextra_root_certs = [\"{}\"]\n",
                fake.ca_pem_path.display()
            ),
        },
    );
    for version in ["--http1.1", "--http2"] {
        let direct = curl(&mut Command::new("curl"), version, port, &fake.ca_pem_path);
        let through = curl(
            &mut command_in(Some(&cg), "/usr/bin/curl"),
            version,
            port,
            &agent.ca_pem(),
        );
        assert_eq!(direct.0, through.0, "{version}: status and HTTP version");
        assert_eq!(direct.1, through.1, "{version}: body");
        assert!(
            direct.2.contains("fake provider"),
            "direct issuer: {}",
            direct.2
        );
        assert!(
            through.2.contains("llmtrace"),
            "intercepted issuer: {}",
            through.2
        );
    }
    // A name that is not configured for interception, at the same redirected address: relayed
    // untouched, so curl sees the provider's own certificate.
    let follow = agent.follow();
    let spliced = curl_to(
        "api.anthropic.com",
        &mut command_in(Some(&cg), "/usr/bin/curl"),
        "--http1.1",
        port,
        &fake.ca_pem_path,
    );
    assert!(
        spliced.2.contains("fake provider"),
        "spliced issuer: {}",
        spliced.2
    );
    // Its row: relayed for its name, which looks like an LLM API: shadow AI, seen via SNI.
    let relayed = (0..8)
        .map_while(|_| follow.next(std::time::Duration::from_secs(10)))
        .find(|t| t["intercepted"] == false)
        .expect("a trace row of the relayed connection");
    assert_eq!(relayed["sni"], "api.anthropic.com", "{relayed}");
    assert_eq!(
        relayed["not_intercepted_reason"], "not_intercepted_name",
        "{relayed}"
    );
    let finding = &relayed["findings"][0];
    assert_eq!(finding["kind"], "shadow_ai.llm_api", "{relayed}");
    assert_eq!(finding["location"], "connection", "{relayed}");
    assert!(
        finding["excerpt"]
            .as_str()
            .is_some_and(|e| e.starts_with("api.anthropic.com")),
        "{relayed}"
    );
    assert_eq!(
        agent.metric("llmtrace_control_shadow_ai_connections_total", ""),
        1
    );
    let received = fake.received();
    assert_eq!(received.len(), 5);
    // The provider receives the app's request body unchanged.
    assert!(received.iter().all(|r| r.body == BODY.as_bytes()));
}
