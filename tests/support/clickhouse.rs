//! A private ClickHouse server for tests: temp data dir, free loopback ports,
//! killed on drop. Uses the Debian `clickhouse-server` binary (18.16 here).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const SERVER_BIN: &str = "/usr/sbin/clickhouse-server";
const CONFIG_DIR: &str = "/etc/clickhouse-server";
const START_TIMEOUT: Duration = Duration::from_mins(1);

/// A running (or deliberately stopped) ClickHouse server.
#[derive(Debug)]
pub struct ClickHouseServer {
    dir: tempfile::TempDir,
    /// HTTP port on 127.0.0.1.
    pub http_port: u16,
    /// HTTPS port on 127.0.0.1, when started with [`HttpsOptions`].
    pub https_port: Option<u16>,
    child: Option<Child>,
}

/// The server's HTTPS endpoint: its certificate, and optionally the CA its clients' certificates
/// must chain to (mutual TLS: a client without one is refused during the handshake).
#[derive(Debug, Clone)]
pub struct HttpsOptions {
    /// PEM chain the server presents (leaf first).
    pub chain_pem: PathBuf,
    /// PEM private key of the leaf.
    pub key_pem: PathBuf,
    /// PEM CA that client certificates must chain to; none asks for no client certificate.
    pub client_ca_pem: Option<PathBuf>,
}

/// A replica's place in a one-shard test cluster: every replica's native (TCP) port, this
/// one's index among them, and the ZooKeeper they coordinate through.
#[derive(Debug, Clone)]
pub struct Replica {
    /// Cluster name (`remote_servers`), as `[sink.clickhouse] cluster` names it.
    pub cluster: String,
    /// Native ports of every replica on 127.0.0.1, in order.
    pub tcp_ports: Vec<u16>,
    /// This replica's index in `tcp_ports`.
    pub index: usize,
    /// ZooKeeper client port on 127.0.0.1.
    pub zookeeper_port: u16,
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    crate::net::free_port("127.0.0.1")
}

impl ClickHouseServer {
    /// Starts a fresh server and waits until `/ping` answers.
    pub fn start() -> Self {
        Self::start_with(None, None, &|_| Vec::new())
    }

    /// Starts a fresh server with extra configuration files: `(path, text)` pairs, the path
    /// relative to its config directory (`users.d/…`, `config.d/…`), made from its native
    /// (TCP) port.
    pub fn start_with_files(files: &dyn Fn(u16) -> Vec<(String, String)>) -> Self {
        Self::start_with(None, None, files)
    }

    /// Starts a fresh server that also serves HTTPS (OpenSSL section of its config).
    pub fn start_https(tls: &HttpsOptions) -> Self {
        Self::start_with(Some(tls), None, &|_| Vec::new())
    }

    /// Starts one replica of a one-shard cluster (macros `{shard}` = `01`, `{replica}` =
    /// `r<index>`), replicating through ZooKeeper and the interserver port on 127.0.0.1.
    pub fn start_replica(replica: &Replica) -> Self {
        Self::start_with(None, Some(replica), &|_| Vec::new())
    }

    fn start_with(
        tls: Option<&HttpsOptions>,
        replica: Option<&Replica>,
        files: &dyn Fn(u16) -> Vec<(String, String)>,
    ) -> Self {
        assert!(
            Path::new(SERVER_BIN).exists(),
            "{SERVER_BIN} missing: apt-get install clickhouse-server"
        );
        let dir = tempfile::tempdir().unwrap();
        let http_port = free_port();
        let secure_port = tls.map(|_| free_port());
        let tcp_port = replica.map_or_else(free_port, |r| r.tcp_ports[r.index]);
        let mut config = rewrite_config(dir.path(), http_port, tcp_port, free_port());
        if let (Some(tls), Some(port)) = (tls, secure_port) {
            config = with_https(&config, port, tls);
        }
        if let Some(replica) = replica {
            config = with_cluster(&config, replica);
        }
        std::fs::write(dir.path().join("config.xml"), config).unwrap();
        for (path, text) in files(tcp_port) {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let mut server = Self {
            dir,
            http_port,
            https_port: secure_port,
            child: None,
        };
        server.spawn();
        server
    }

    /// Base URL for clients.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// HTTPS base URL (by address: the test certificates name 127.0.0.1).
    pub fn https_url(&self) -> String {
        format!(
            "https://127.0.0.1:{}",
            self.https_port.expect("started with start_https")
        )
    }

    /// The temp directory (config, data, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self) {
        if let Err(why) = self.try_spawn() {
            panic!("{why}");
        }
    }

    /// Starts the server and waits for `/ping`; the reason, with the log's tail, if it exits
    /// or stays silent instead.
    fn try_spawn(&mut self) -> Result<(), String> {
        let d = self.dir.path();
        let out = std::fs::File::create(d.join("stdout.txt")).unwrap();
        let child = Command::new(SERVER_BIN)
            .arg(format!("--config-file={}", d.join("config.xml").display()))
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!(
                    "clickhouse-server exited with {status}: {}",
                    self.log_tail()
                ));
            }
            if http(self.http_port, "GET /ping HTTP/1.0\r\n\r\n")
                .is_some_and(|r| r.ends_with(b"Ok.\n"))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("clickhouse-server not ready: {}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of the server's output and error log, without the numbered frames of
    /// its stack traces (they would push the error's own message out of the tail).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("log/clickhouse-server.err.log"))
            .unwrap_or_default();
        let out = std::fs::read_to_string(self.dir.path().join("stdout.txt")).unwrap_or_default();
        let frame = |line: &str| {
            let line = line.trim_start();
            let rest = line.trim_start_matches(|c: char| c.is_ascii_digit());
            rest.len() < line.len() && rest.starts_with(". ")
        };
        let tail = |s: &str| {
            s.lines()
                .rev()
                .filter(|line| !frame(line))
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        };
        format!("{}\n{}", tail(&out), tail(&log))
    }

    /// Process id of the running server.
    pub fn process_id(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.as_ref().expect("server running").id()).unwrap())
    }

    /// SIGKILLs the server and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(
                Pid::from_raw(i32::try_from(child.id()).unwrap()),
                Signal::SIGCONT,
            );
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and data, as an operator restarts a crashed
    /// replica. A SIGKILL can leave a replicated table's parts on disk out of step with
    /// ZooKeeper (a part written but never committed), and ClickHouse 18.16 then refuses the
    /// table ("doesn't look like the set of parts in ZooKeeper"): it exits, or starts without
    /// the table and says nothing. Its own remedy, `flags/force_restore_data`, detaches the
    /// parts ZooKeeper does not know and fetches the ones missing. Nothing acknowledged is lost
    /// by it (an acknowledged part is one ZooKeeper knows), so the tests' counts still catch
    /// any row an agent loses or doubles. The refusal is printed, never silent.
    pub fn restart(&mut self) {
        self.kill();
        let refused = if let Err(why) = self.try_spawn() {
            why
        } else {
            let missing = self.unattached_tables();
            if missing.is_empty() {
                return;
            }
            self.kill();
            format!("tables not attached: {missing:?}: {}", self.log_tail())
        };
        eprintln!("restarting with force_restore_data after: {refused}");
        let flags = self.dir.path().join("data/flags");
        std::fs::create_dir_all(&flags).unwrap();
        std::fs::write(flags.join("force_restore_data"), b"").unwrap();
        self.spawn();
        let missing = self.unattached_tables();
        assert!(
            missing.is_empty(),
            "tables not attached even with force_restore_data: {missing:?}: {}",
            self.log_tail()
        );
    }

    /// Tables the server has a metadata file for but did not attach (`database.table`).
    fn unattached_tables(&self) -> Vec<String> {
        let attached = self.query_text(
            "SELECT concat(database, '.', name) FROM system.tables WHERE database != 'system' FORMAT TSV",
        );
        let attached: Vec<&str> = attached.lines().collect();
        let mut missing = Vec::new();
        let metadata = self.dir.path().join("data/metadata");
        for db in std::fs::read_dir(&metadata)
            .unwrap()
            .map(|e| e.unwrap().path())
        {
            let db_name = db.file_name().unwrap().to_string_lossy().into_owned();
            if !db.is_dir() || db_name == "system" {
                continue;
            }
            for table in std::fs::read_dir(&db).unwrap().map(|e| e.unwrap().path()) {
                if table.extension().is_some_and(|e| e == "sql") {
                    let name =
                        format!("{db_name}.{}", table.file_stem().unwrap().to_string_lossy());
                    if !attached.contains(&name.as_str()) {
                        missing.push(name);
                    }
                }
            }
        }
        missing
    }

    /// Freezes the server (SIGSTOP): connections hang.
    pub fn freeze(&self) {
        kill(self.pid(), Signal::SIGSTOP).unwrap();
    }

    /// Thaws a frozen server (SIGCONT).
    pub fn thaw(&self) {
        kill(self.pid(), Signal::SIGCONT).unwrap();
    }

    /// Runs `sql` over HTTP and returns the body; panics on a server error.
    pub fn query(&self, sql: &str) -> Vec<u8> {
        let req = format!(
            "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{sql}",
            sql.len()
        );
        let resp = http(self.http_port, &req).unwrap_or_else(|| panic!("no answer to {sql}"));
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("HTTP response");
        let (head, body) = (&resp[..split], resp[split + 4..].to_vec());
        assert!(
            head.starts_with(b"HTTP/1.0 200") || head.starts_with(b"HTTP/1.1 200"),
            "query {sql} failed: {}",
            String::from_utf8_lossy(&body)
        );
        body
    }

    /// Runs `sql` and returns the body as trimmed text.
    pub fn query_text(&self, sql: &str) -> String {
        String::from_utf8(self.query(sql))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Runs a query returning one number.
    pub fn query_u64(&self, sql: &str) -> u64 {
        let text = self.query_text(sql);
        text.parse()
            .unwrap_or_else(|_| panic!("{sql} returned {text:?}"))
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP/1.0 exchange; `None` when the server does not answer.
fn http(port: u16, request: &str) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    Some(out)
}

/// Replaces the packaged `<openSSL>` section (which points at files that do not exist) with
/// the test's certificate, and opens `https_port` on loopback.
fn with_https(config: &str, port: u16, tls: &HttpsOptions) -> String {
    let start = config
        .find("<openSSL>")
        .expect("config.xml has an <openSSL> section");
    let end = config.find("</openSSL>").expect("</openSSL>") + "</openSSL>".len();
    let (mode, ca) = match &tls.client_ca_pem {
        Some(ca) => ("strict", format!("<caConfig>{}</caConfig>", ca.display())),
        None => ("none", String::new()),
    };
    let section = format!(
        "<https_port>{port}</https_port>
    <openSSL><server>
        <certificateFile>{}</certificateFile>
        <privateKeyFile>{}</privateKeyFile>
        {ca}
        <verificationMode>{mode}</verificationMode>
        <loadDefaultCAFile>false</loadDefaultCAFile>
        <cacheSessions>false</cacheSessions>
        <disableProtocols>sslv2,sslv3</disableProtocols>
        <preferServerCiphers>true</preferServerCiphers>
    </server></openSSL>",
        tls.chain_pem.display(),
        tls.key_pem.display(),
    );
    format!("{}{section}{}", &config[..start], &config[end..])
}

/// Replaces the packaged cluster, ZooKeeper and macro stubs with one shard of `replica`'s
/// cluster; replicas fetch parts from each other on 127.0.0.1.
fn with_cluster(config: &str, replica: &Replica) -> String {
    let start = config
        .find("<remote_servers incl=")
        .expect("config.xml has <remote_servers>");
    let end =
        config.find("</remote_servers>").expect("</remote_servers>") + "</remote_servers>".len();
    let replicas: Vec<String> = replica
        .tcp_ports
        .iter()
        .map(|p| format!("<replica><host>127.0.0.1</host><port>{p}</port></replica>"))
        .collect();
    let replicas = replicas.concat();
    let servers = format!(
        "<remote_servers><{c}><shard><internal_replication>true</internal_replication>{replicas}</shard></{c}></remote_servers>",
        c = replica.cluster
    );
    let config = format!("{}{servers}{}", &config[..start], &config[end..]);
    for stub in [
        "<zookeeper incl=\"zookeeper-servers\" optional=\"true\" />",
        "<macros incl=\"macros\" optional=\"true\" />",
    ] {
        assert!(config.contains(stub), "config.xml has no {stub}");
    }
    config
        .replace(
            "<zookeeper incl=\"zookeeper-servers\" optional=\"true\" />",
            &format!(
                "<zookeeper><node><host>127.0.0.1</host><port>{}</port></node>\
                 <session_timeout_ms>6000</session_timeout_ms></zookeeper>",
                replica.zookeeper_port
            ),
        )
        .replace(
            "<macros incl=\"macros\" optional=\"true\" />",
            &format!(
                "<macros><shard>01</shard><replica>r{}</replica></macros>\
                 <interserver_http_host>127.0.0.1</interserver_http_host>",
                replica.index
            ),
        )
}

/// Copies the system config and points every path and port at `dir`; returns config.xml.
fn rewrite_config(dir: &Path, http: u16, tcp: u16, interserver: u16) -> String {
    let d = dir.display();
    let config = std::fs::read_to_string(PathBuf::from(CONFIG_DIR).join("config.xml")).unwrap();
    let config = config
        .replace(
            "<path>/var/lib/clickhouse/</path>",
            &format!("<path>{d}/data/</path>"),
        )
        .replace("/var/lib/clickhouse/tmp/", &format!("{d}/tmp/"))
        .replace(
            "/var/lib/clickhouse/user_files/",
            &format!("{d}/user_files/"),
        )
        .replace(
            "/var/lib/clickhouse/format_schemas/",
            &format!("{d}/format_schemas/"),
        )
        .replace("/var/log/clickhouse-server/", &format!("{d}/log/"))
        .replace(
            "<http_port>8123</http_port>",
            &format!("<http_port>{http}</http_port>"),
        )
        .replace(
            "<tcp_port>9000</tcp_port>",
            &format!("<tcp_port>{tcp}</tcp_port>"),
        )
        .replace(
            "<interserver_http_port>9009</interserver_http_port>",
            &format!("<interserver_http_port>{interserver}</interserver_http_port>"),
        )
        // Loopback IPv4 only (network hygiene: nothing listens beyond 127.0.0.1).
        .replace("<listen_host>::1</listen_host>", "");
    for (what, port) in [
        ("http_port", http),
        ("tcp_port", tcp),
        ("interserver_http_port", interserver),
    ] {
        assert!(
            config.contains(&format!("<{what}>{port}</{what}>")),
            "config.xml has no {what} to rewrite"
        );
    }
    assert!(
        config.contains(&format!("<path>{d}/data/</path>")),
        "config.xml has no <path> to rewrite"
    );
    std::fs::copy(
        PathBuf::from(CONFIG_DIR).join("users.xml"),
        dir.join("users.xml"),
    )
    .unwrap();
    config
}
