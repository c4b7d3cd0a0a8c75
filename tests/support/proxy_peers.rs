//! The proxy benchmark's cast: the fixed request and responses, an nginx upstream, nginx as a
//! TLS-terminating reverse proxy, mitmproxy in reverse mode, the bare hyper + rustls proxy
//! (`llmtrace-bare-proxy`), and a one-shot curl client. All listen on loopback (127.0.0.3
//! upstream, 127.0.0.4 nginx proxy, 127.0.0.5 mitmproxy, 127.0.0.6 bare proxy) on one port, so
//! every target is reached with the same URL and `Host`.

use std::{
    fmt::Write as _,
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::json;

use crate::{cgroup::TestCgroup, net::free_port, nginx::Nginx, pki::TestPki, wait_for};

const UPSTREAM_IP: &str = "127.0.0.3";
const NGINX_PROXY_IP: &str = "127.0.0.4";
const MITM_IP: &str = "127.0.0.5";
const BARE_IP: &str = "127.0.0.6";

/// A ~300-byte chat completion request.
pub fn request_body() -> String {
    json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a terse assistant for a load test."},
            {"role": "user", "content": "Summarise the benefits of connection reuse for TLS clients talking to an API in two sentences, please."}
        ],
        "temperature": 0.2,
        "max_tokens": 256,
        "user": "bench"
    })
    .to_string()
}

/// A chat completion request whose prompt is about 64 KB: a long conversation's context, as
/// agents send it (read in many TLS records; the request detectors and the learned model
/// read all of it).
pub fn long_request_body() -> String {
    json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a terse assistant for a load test."},
            {"role": "user", "content": filler(9_000)},
            {"role": "user", "content": "Summarise the text above in two sentences, please."}
        ],
        "max_tokens": 256,
        "user": "bench"
    })
    .to_string()
}

fn filler(words: usize) -> String {
    const W: [&str; 8] = [
        "connection",
        "reuse",
        "avoids",
        "handshakes",
        "and",
        "keeps",
        "latency",
        "low.",
    ];
    (0..words)
        .map(|i| W[i % W.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// The fixed ~4 KB `chat.completion` the upstream answers.
pub fn response_json() -> String {
    json!({
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion",
        "created": 1_764_201_600,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": filler(540), "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 41, "completion_tokens": 540, "total_tokens": 581},
        "system_fingerprint": "fp_bench"
    })
    .to_string()
}

/// A `chat.completion` of about 0.6 MB (one long message), for the time the last byte takes
/// (nginx caps one config token at 4 KB, which bounds how many pieces `return` can join).
pub fn response_big() -> String {
    json!({
        "id": "chatcmpl-bench1mb00000000000000000000",
        "object": "chat.completion",
        "created": 1_764_201_600,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": filler(80_000), "refusal": null},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 41, "completion_tokens": 80_000, "total_tokens": 80_041}
    })
    .to_string()
}

/// An SSE stream of 40 `chat.completion.chunk` events and `[DONE]` (served at once).
pub fn response_sse() -> String {
    let mut out = String::new();
    for i in 0..40 {
        let chunk = json!({
            "id": "chatcmpl-bench0000000000000000000000",
            "object": "chat.completion.chunk",
            "created": 1_764_201_600,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "delta": {"content": filler(3 + i % 3)}, "finish_reason": null}]
        });
        // Writing to a String cannot fail.
        let _ = write!(out, "data: {chunk}\n\n");
    }
    out.push_str("data: [DONE]\n\n");
    out
}

/// nginx directives answering 200 with `body`: nginx limits one config token to 4 KB, so the
/// body is set in pieces (`$<var>0`, `$<var>1`, …) and returned joined.
fn nginx_return(var: &str, body: &str) -> String {
    assert!(
        !body.contains(['\'', '$', '\\']),
        "body must not need nginx escaping"
    );
    let chars: Vec<char> = body.chars().collect();
    let mut out = String::new();
    let mut joined = String::new();
    for (i, piece) in chars.chunks(1500).enumerate() {
        let piece: String = piece.iter().collect();
        let _ = writeln!(out, "set ${var}{i} '{}';", piece.replace('\n', "\\n"));
        let _ = write!(joined, "${{{var}{i}}}");
    }
    let _ = writeln!(out, "return 200 \"{joined}\";");
    out
}

/// A port free on all the benchmark's addresses.
fn shared_port() -> u16 {
    (0..50)
        .map(|_| free_port(UPSTREAM_IP))
        .find(|p| {
            [NGINX_PROXY_IP, MITM_IP, BARE_IP]
                .iter()
                .all(|ip| TcpListener::bind((*ip, *p)).is_ok())
        })
        .expect("a port free on 127.0.0.3-6")
}

fn subdir(dir: &Path, name: &str) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

/// The fake provider: nginx with TLS (test CA; SAN api.openai.com and its IP).
#[derive(Debug)]
pub struct Upstream {
    /// The server.
    pub nginx: Nginx,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its CA and certificate.
    pub pki: TestPki,
}

impl Upstream {
    /// Starts it under `dir`.
    pub fn start(dir: &Path) -> Self {
        Self::start_at(dir, UPSTREAM_IP, shared_port())
    }

    /// Starts it under `dir`, listening on `ip:port`.
    pub fn start_at(dir: &Path, ip: &str, port: u16) -> Self {
        let dir = subdir(dir, &format!("upstream-{ip}"));
        let pki = TestPki::write(&dir, &["api.openai.com", ip]);
        let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        let http = format!(
            "server {{\n\
             listen {addr} ssl http2;\n\
             ssl_certificate {chain};\n\
             ssl_certificate_key {key};\n\
             location = /v1/chat/completions {{\n\
             if ($arg_stream) {{ rewrite ^ /sse last; }}\n\
             if ($arg_big) {{ rewrite ^ /big last; }}\n\
             default_type application/json;\n\
             {json}\
             }}\n\
             location = /sse {{\n\
             internal;\n\
             default_type text/event-stream;\n\
             {sse}\
             }}\n\
             location = /big {{\n\
             internal;\n\
             default_type application/json;\n\
             {big}\
             }}\n\
             }}",
            chain = pki.chain_pem.display(),
            key = pki.key_pem.display(),
            json = nginx_return("json", &response_json()),
            sse = nginx_return("sse", &response_sse()),
            big = nginx_return("big", &response_big()),
        );
        let nginx = Nginx::start(&dir, &http, addr);
        Self { nginx, addr, pki }
    }
}

/// nginx as a TLS-terminating reverse proxy to `up` (upstream keepalive, verified TLS with
/// SNI api.openai.com, session reuse), on 127.0.0.4 with a certificate from the upstream's CA.
pub fn nginx_proxy(dir: &Path, up: &Upstream) -> (Nginx, SocketAddr) {
    let dir = subdir(dir, "nginx-proxy");
    let addr: SocketAddr = format!("{NGINX_PROXY_IP}:{}", up.addr.port())
        .parse()
        .unwrap();
    let http = format!(
        "upstream provider {{ server {up_addr}; keepalive 128; keepalive_requests 1000000; }}\n\
         server {{\n\
         listen {addr} ssl;\n\
         ssl_certificate {chain};\n\
         ssl_certificate_key {key};\n\
         location / {{\n\
         proxy_pass https://provider;\n\
         proxy_http_version 1.1;\n\
         proxy_set_header Connection \"\";\n\
         proxy_set_header Host $http_host;\n\
         proxy_ssl_server_name on;\n\
         proxy_ssl_name api.openai.com;\n\
         proxy_ssl_verify on;\n\
         proxy_ssl_trusted_certificate {ca};\n\
         proxy_ssl_session_reuse on;\n\
         }}\n\
         }}",
        up_addr = up.addr,
        chain = up.pki.chain_pem.display(),
        key = up.pki.key_pem.display(),
        ca = up.pki.ca_pem.display(),
    );
    (Nginx::start(&dir, &http, addr), addr)
}

/// mitmdump in reverse mode to the upstream, verifying it against the upstream's CA.
#[derive(Debug)]
pub struct Mitmproxy {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    confdir: PathBuf,
}

impl Mitmproxy {
    /// Starts `.venv/bench/bin/mitmdump`; `Err` says why it cannot run.
    pub fn start(dir: &Path, up: &Upstream) -> Result<Self, String> {
        let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bench/bin/mitmdump");
        if !bin.exists() {
            return Err(format!(
                "{} is missing (`cargo xtask bench proxy` installs tests/bench-requirements.txt)",
                bin.display()
            ));
        }
        let confdir = subdir(dir, "mitmproxy");
        let addr: SocketAddr = format!("{MITM_IP}:{}", up.addr.port()).parse().unwrap();
        let log = std::fs::File::create(confdir.join("mitmdump.log")).map_err(|e| e.to_string())?;
        let child = Command::new(&bin)
            .arg("--mode")
            .arg(format!("reverse:https://{}@{addr}", up.addr))
            .arg("--set")
            .arg(format!("confdir={}", confdir.display()))
            .arg("--set")
            .arg(format!(
                "ssl_verify_upstream_trusted_ca={}",
                up.pki.ca_pem.display()
            ))
            .args(["--set", "keep_host_header=true", "--set", "flow_detail=0"])
            .args(["--set", "termlog_verbosity=warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut m = Self {
            child,
            addr,
            confdir,
        };
        let up = wait_for(Duration::from_secs(30), || {
            if let Ok(Some(s)) = m.child.try_wait() {
                return Some(Err(format!("mitmdump exited ({s})")));
            }
            TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                .ok()
                .map(|_| Ok(()))
        });
        match up {
            Some(Ok(())) => Ok(m),
            Some(Err(e)) => Err(e),
            None => Err("mitmdump did not listen within 30 s".into()),
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The CA mitmproxy signs its leaf certificates with (created in its confdir).
    pub fn ca_pem(&self) -> PathBuf {
        self.confdir.join("mitmproxy-ca-cert.pem")
    }
}

impl Drop for Mitmproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `llmtrace-bare-proxy` in front of the upstream, with the upstream's own certificate (its
/// clients trust the upstream's CA) and verifying the upstream against that CA.
#[derive(Debug)]
pub struct BareProxy {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl BareProxy {
    /// Starts it; it has listened when this returns.
    pub fn start(dir: &Path, up: &Upstream) -> Self {
        let addr: SocketAddr = format!("{BARE_IP}:{}", up.addr.port()).parse().unwrap();
        let log = std::fs::File::create(subdir(dir, "bare-proxy").join("stderr.log"))
            .expect("bare proxy log");
        let child = Command::new(crate::workspace_bin("llmtrace-bare-proxy"))
            .arg(addr.to_string())
            .arg(up.addr.to_string())
            .arg("api.openai.com")
            .args([&up.pki.chain_pem, &up.pki.key_pem, &up.pki.ca_pem])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start llmtrace-bare-proxy");
        let mut p = Self { child, addr };
        let listening = wait_for(Duration::from_secs(10), || {
            assert!(
                p.child.try_wait().expect("bare proxy status").is_none(),
                "llmtrace-bare-proxy exited (see {}/bare-proxy/stderr.log)",
                dir.display()
            );
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        });
        assert!(
            listening.is_some(),
            "llmtrace-bare-proxy did not listen within 10 s"
        );
        p
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for BareProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Median of sequential single requests on new connections.
#[derive(Debug, Clone, Copy)]
pub struct OneShot {
    /// Median `time_total` of the successful ones.
    pub median_ms: f64,
    /// Requests that did not get a 200 with a body of the expected size.
    pub failures: usize,
}

/// Where the time of one request on a new connection went, as curl's `-w` timers see it, each
/// from the request's start.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    /// `time_connect`: TCP established.
    pub connect_ms: f64,
    /// `time_appconnect`: TLS handshake done.
    pub tls_ms: f64,
    /// `time_starttransfer`: first response byte.
    pub first_byte_ms: f64,
    /// `time_total`: last response byte.
    pub total_ms: f64,
}

/// Median time from sending a request to the last byte of its response, over `n` sequential
/// `curl --http1.1` POSTs of `body` to `url` on one kept-alive connection (the first, which
/// pays the handshakes, is left out); each must get 200 and `expect_bytes` of body.
pub fn last_byte(
    cgroup: Option<&TestCgroup>,
    connect: SocketAddr,
    url: &str,
    ca: &Path,
    body: &Path,
    expect_bytes: usize,
    n: usize,
) -> OneShot {
    let out = curl_post(cgroup, connect, ca, body)
        .args(["--max-time", "60"])
        .args(["-w", "%{http_code} %{size_download} %{time_total}\n"])
        .args((0..=n).flat_map(|_| ["-o", "/dev/null", url]))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut times: Vec<f64> = Vec::with_capacity(n);
    let mut failures = n;
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let ["200", size, t] = fields[..]
            && size.parse() == Ok(expect_bytes)
            && let Ok(t) = t.parse::<f64>()
        {
            times.push(t * 1e3);
            failures -= 1;
        }
    }
    OneShot {
        median_ms: crate::stats::median(times),
        failures,
    }
}

/// `curl --http1.1` from inside `cgroup` (when given), silent, sending `api.openai.com` to
/// `connect`, trusting only `ca`, POSTing the JSON file `body` with a bench API key; the caller
/// adds its timers, outputs and URLs.
fn curl_post(
    cgroup: Option<&TestCgroup>,
    connect: SocketAddr,
    ca: &Path,
    body: &Path,
) -> std::process::Command {
    let mut c = crate::cgroup::command_in(cgroup, "curl");
    c.args(["-s", "--http1.1", "--resolve"])
        .arg(format!(
            "api.openai.com:{}:{}",
            connect.port(),
            connect.ip()
        ))
        .arg("--cacert")
        .arg(ca)
        .args(["-H", "Content-Type: application/json"])
        .args(["-H", "Authorization: Bearer sk-bench-not-a-real-key"])
        .arg("--data-binary")
        .arg(format!("@{}", body.display()));
    c
}

/// One `curl --http1.1` POST of `body` to `url` on a new connection to `connect`, trusting only
/// `ca`, from inside `cgroup` when given: its timers when it got 200 and `expect_bytes` of body.
pub fn one_shot(
    cgroup: Option<&TestCgroup>,
    connect: SocketAddr,
    url: &str,
    ca: &Path,
    body: &Path,
    expect_bytes: usize,
) -> Option<Phases> {
    let out = curl_post(cgroup, connect, ca, body)
        .args(["-o", "/dev/null", "--max-time", "10"])
        .args([
            "-w",
            "%{http_code} %{size_download} %{time_connect} %{time_appconnect} \
             %{time_starttransfer} %{time_total}",
        ])
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let fields: Vec<&str> = text.split_whitespace().collect();
    let ["200", size, tcp, tls, first, total] = fields[..] else {
        return None;
    };
    let ms = |t: &str| t.parse::<f64>().ok().map(|t| t * 1e3);
    (size.parse() == Ok(expect_bytes)).then_some(())?;
    Some(Phases {
        connect_ms: ms(tcp)?,
        tls_ms: ms(tls)?,
        first_byte_ms: ms(first)?,
        total_ms: ms(total)?,
    })
}
