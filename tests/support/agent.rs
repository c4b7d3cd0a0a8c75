//! Running the real `llmtrace` binary against a test cgroup.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::fs::MetadataExt,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::Value;

use crate::{cgroup::TestCgroup, net::free_port, wait_for};

/// Settings of a test agent beyond the ones every test needs.
#[derive(Debug, Default)]
pub struct AgentConfig {
    /// Extra keys for the `[intercept]` table (TOML lines).
    pub intercept: String,
    /// Extra top-level TOML (e.g. `[[providers]]` tables, `[dns]`).
    pub rest: String,
}

/// A running agent process; killed (and its pins removed) when dropped.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    /// Admin endpoint.
    pub admin: SocketAddr,
    /// Port of the redirect listener.
    pub listen_port: u16,
    /// The config file it runs with.
    pub config_path: PathBuf,
    log_path: PathBuf,
    pin_dir: PathBuf,
    state_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts an agent intercepting `cgroup` and waits until it is ready.
    pub fn start(cgroup: &TestCgroup, cfg: &AgentConfig) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let listen_port = free_port("127.0.0.1");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
            .parse()
            .unwrap();
        let config_path = dir.path().join("config.toml");
        let text = format!(
            "state_dir = \"{state}\"\n\
             [intercept]\n\
             cgroup = \"{cg}\"\n\
             listen_port = {listen_port}\n\
             builtin_providers = false\n\
             {intercept}\n\
             [admin]\n\
             listen = \"{admin}\"\n\
             {rest}\n",
            state = dir.path().join("state").display(),
            cg = cgroup.path.display(),
            intercept = cfg.intercept,
            rest = cfg.rest,
        );
        std::fs::write(&config_path, text).expect("write config");
        let log_path = dir.path().join("agent.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(crate::workspace_bin("llmtrace"))
            .arg("--config")
            .arg(&config_path)
            .arg("run")
            .env("LLMTRACE_LOG", "info")
            // Tests read the text form, whatever the caller's environment says.
            .env("LLMTRACE_LOG_FORMAT", "text")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn llmtrace");
        let ino = std::fs::metadata(&cgroup.path).expect("cgroup").ino();
        let mut agent = Self {
            child: Some(child),
            admin,
            listen_port,
            config_path,
            log_path,
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/llmtrace/cg{ino}")),
            state_dir: dir.path().join("state"),
            _dir: dir,
        };
        agent.wait_ready();
        agent
    }

    fn wait_ready(&mut self) {
        let ready = wait_for(Duration::from_secs(20), || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("agent exited during startup ({status}):\n{}", self.log());
            }
            http_get(self.admin, "/readyz").filter(|(code, _)| *code == 200)
        });
        assert!(ready.is_some(), "agent not ready in time:\n{}", self.log());
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The `/status` report.
    pub fn status(&self) -> Value {
        let (code, body) =
            socket_get(&self.admin_socket(), "/status").expect("admin socket reachable");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("status JSON")
    }

    /// Sum of every sample of metric `name` whose label text contains `labels` (counters and
    /// gauges of the agent are integers).
    pub fn metric(&self, name: &str, labels: &str) -> u64 {
        let (_, body) = http_get(self.admin, "/metrics").expect("admin reachable");
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Sends `sig` to the agent.
    pub fn signal(&self, sig: Signal) {
        nix::sys::signal::kill(Pid::from_raw(self.pid().cast_signed()), sig).expect("signal agent");
    }

    /// SIGTERM and wait for exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait()
    }

    /// SIGKILL and wait for exit.
    pub fn kill(&mut self) -> ExitStatus {
        self.signal(Signal::SIGKILL);
        self.wait()
    }

    fn wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = wait_for(Duration::from_secs(15), || child.try_wait().ok().flatten());
        status.unwrap_or_else(|| {
            let _ = child.kill();
            panic!("agent did not exit in time:\n{}", self.log())
        })
    }

    /// Everything the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The agent's `state_dir` (its CA is `ca/ca.pem` below it).
    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }

    /// The owner-only admin socket serving `/status` and `/tail`.
    pub fn admin_socket(&self) -> PathBuf {
        self.state_dir.join("admin.sock")
    }

    /// The agent's root CA certificate (PEM), which clients must trust.
    pub fn ca_pem(&self) -> PathBuf {
        self.state_dir.join("ca/ca.pem")
    }

    /// Follows `/tail`: completed traces, as they happen, from now on.
    pub fn follow(&self) -> Follow {
        let mut s =
            std::os::unix::net::UnixStream::connect(self.admin_socket()).expect("admin socket");
        // HTTP/1.0: the body is the rest of the stream, one JSON object per line.
        write!(s, "GET /tail HTTP/1.0\r\nHost: llmtrace\r\n\r\n").expect("request");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            let mut lines = std::io::BufReader::new(s).lines();
            // Skip the response head.
            for line in lines.by_ref() {
                if line.map_or(true, |l| l.trim().is_empty()) {
                    break;
                }
            }
            for line in lines {
                let Ok(line) = line else { return };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        // The subscription exists once the head arrived; give the agent a moment to register it.
        std::thread::sleep(Duration::from_millis(100));
        Follow { rx }
    }

    /// Where a fail-closed agent pins its programs.
    pub fn pin_dir(&self) -> &std::path::Path {
        &self.pin_dir
    }
}

/// How much of the agent's log a failing test prints.
const LOG_TAIL: usize = 16 * 1024;

impl Drop for Agent {
    fn drop(&mut self) {
        // A failing test shows what the agent said: a flake that passes when run again can
        // only be diagnosed from the log of the run that failed.
        if std::thread::panicking() {
            let log = self.log();
            let tail = &log[log.floor_char_boundary(log.len().saturating_sub(LOG_TAIL))..];
            eprintln!("--- agent log (last {} bytes) ---\n{tail}", tail.len());
        }
        if let Some(mut child) = self.child.take() {
            let _ =
                nix::sys::signal::kill(Pid::from_raw(child.id().cast_signed()), Signal::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
        // A killed fail-closed agent leaves its programs pinned; unpinning detaches them.
        if let Ok(entries) = std::fs::read_dir(&self.pin_dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
            let _ = std::fs::remove_dir(&self.pin_dir);
        }
    }
}

/// Completed traces streamed from a running agent.
#[derive(Debug)]
pub struct Follow {
    rx: std::sync::mpsc::Receiver<Value>,
}

impl Follow {
    /// The next trace, or `None` after `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Value> {
        self.rx.recv_timeout(timeout).ok()
    }
}

/// A plain HTTP/1.0 GET over the admin socket; `None` when it is not reachable.
pub fn socket_get(socket: &std::path::Path, path: &str) -> Option<(u16, String)> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: llmtrace\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// A plain HTTP/1.0 GET; `None` when the endpoint is not reachable.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// Runs `llmtrace` with `args` and returns (exit status, stderr).
pub fn run_cli(args: &[&str]) -> (ExitStatus, String) {
    let out = Command::new(crate::workspace_bin("llmtrace"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run llmtrace");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
