//! A private ZooKeeper for tests (Debian's `zookeeper` package): standalone, a temp data dir,
//! a free port on 127.0.0.1, killed on drop. ClickHouse replication and distributed DDL
//! coordinate through it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const JAR: &str = "/usr/share/java/zookeeper.jar";
/// No logging backend: the server's own log would only fill the temp dir.
const SLF4J_NOP: &str = "/usr/share/java/slf4j-nop.jar";
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Sessions opened and closed before ClickHouse servers connect.
const WARM_SESSIONS: usize = 20;

/// A running standalone ZooKeeper.
#[derive(Debug)]
pub struct ZooKeeper {
    dir: tempfile::TempDir,
    /// Client port on 127.0.0.1.
    pub port: u16,
    child: Child,
}

impl ZooKeeper {
    /// Starts a fresh server and waits until it answers `ruok`.
    pub fn start() -> Self {
        assert!(
            Path::new(JAR).exists(),
            "{JAR} missing: apt-get install zookeeper (cargo xtask setup)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.path();
        std::fs::write(
            d.join("zoo.cfg"),
            format!(
                "tickTime=500\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
                 maxClientCnxns=0\nadmin.enableServer=false\n4lw.commands.whitelist=ruok\n",
                d.join("data").display()
            ),
        )
        .unwrap();
        let out = std::fs::File::create(d.join("stdout.txt")).unwrap();
        let child = Command::new("java")
            .args(["-Xmx256m", "-cp", &format!("{JAR}:{SLF4J_NOP}")])
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(d.join("zoo.cfg"))
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("run java (openjdk, a dependency of the zookeeper package)");
        let mut zk = Self { dir, port, child };
        zk.wait_ready();
        zk
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "zookeeper exited with {status}: {}",
                    std::fs::read_to_string(self.dir.path().join("stdout.txt")).unwrap_or_default()
                );
            }
            if self.ruok() && self.session() {
                // A fresh JVM serves its first sessions slowly, and ClickHouse 18.16 gives a
                // session one second to open (and crashes when its DDL worker's first one
                // fails): open a few here first.
                for _ in 0..WARM_SESSIONS {
                    assert!(self.session(), "zookeeper refused a session");
                }
                return;
            }
            assert!(Instant::now() < deadline, "zookeeper not ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Opens a client session (jute `ConnectRequest`) and closes it; true when ZooKeeper
    /// granted it.
    fn session(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut req = Vec::with_capacity(48);
        req.extend_from_slice(&44i32.to_be_bytes());
        req.extend_from_slice(&0i32.to_be_bytes()); // protocol version
        req.extend_from_slice(&0i64.to_be_bytes()); // last zxid seen
        req.extend_from_slice(&6_000i32.to_be_bytes()); // session timeout, ms
        req.extend_from_slice(&0i64.to_be_bytes()); // session id: a new one
        req.extend_from_slice(&16i32.to_be_bytes()); // password: 16 zero bytes
        req.extend_from_slice(&[0; 16]);
        let mut len = [0u8; 4];
        if s.write_all(&req).is_err() || s.read_exact(&mut len).is_err() {
            return false;
        }
        let mut resp = vec![0u8; usize::try_from(i32::from_be_bytes(len)).unwrap_or(0)];
        if resp.len() < 16 || s.read_exact(&mut resp).is_err() {
            return false;
        }
        let session_id = i64::from_be_bytes(resp[8..16].try_into().expect("8 bytes"));
        // closeSession: xid 1, op -11.
        let mut close = Vec::with_capacity(12);
        close.extend_from_slice(&8i32.to_be_bytes());
        close.extend_from_slice(&1i32.to_be_bytes());
        close.extend_from_slice(&(-11i32).to_be_bytes());
        let _ = s.write_all(&close);
        session_id != 0
    }

    fn ruok(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut answer = String::new();
        s.write_all(b"ruok").is_ok() && s.read_to_string(&mut answer).is_ok() && answer == "imok"
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
