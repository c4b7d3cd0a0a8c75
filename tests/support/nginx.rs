//! A private nginx instance (Debian's binary) for benchmarks: its own prefix directory and
//! config, one worker, no access log; stopped (master and workers) when dropped.

use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use nix::{sys::signal::Signal, unistd::Pid};

use crate::wait_for;

/// A running nginx.
#[derive(Debug)]
pub struct Nginx {
    child: Option<Child>,
    prefix: PathBuf,
}

impl Nginx {
    /// Starts nginx with `http_body` inside its `http {}` block, in prefix `dir`, and waits
    /// until `listen` accepts connections.
    pub fn start(dir: &Path, http_body: &str, listen: SocketAddr) -> Self {
        assert!(
            crate::net::is_test_address(listen.ip()),
            "benchmarks only use loopback or test namespaces' 198.18.0.0/15"
        );
        let d = dir.display();
        let conf = format!(
            "worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
             access_log off;\n\
             client_body_temp_path {d}/client_body;\n\
             client_body_buffer_size 128k;\n\
             proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n\
             keepalive_requests 1000000;\n\
             keepalive_timeout 120s;\n\
             {http_body}\n\
             }}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        // Errors before the config is read (a syntax error) go to stderr, not error.log.
        let stderr = std::fs::File::create(dir.join("stderr.log")).expect("nginx stderr file");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn nginx (apt-get install nginx, or `cargo xtask setup`)");
        let mut n = Self {
            child: Some(child),
            prefix: dir.to_owned(),
        };
        let up = wait_for(Duration::from_secs(10), || {
            if let Some(s) = n.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("nginx exited ({s}):\n{}", n.error_log());
            }
            TcpStream::connect_timeout(&listen, Duration::from_millis(200)).ok()
        });
        assert!(
            up.is_some(),
            "nginx not listening on {listen}:\n{}",
            n.error_log()
        );
        n
    }

    /// The master's pid (its workers are its children).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// What nginx logged at `warn` and above.
    pub fn error_log(&self) -> String {
        ["stderr.log", "error.log"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.prefix.join(f)).ok())
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Workers outlive a killed master: note them first, ask the master to stop them, and
        // kill whatever is left.
        let all = crate::procstat::tree(child.id());
        let _ = nix::sys::signal::kill(Pid::from_raw(child.id().cast_signed()), Signal::SIGTERM);
        let exited = wait_for(Duration::from_secs(3), || child.try_wait().ok().flatten());
        for pid in all {
            // Only what is still an nginx: a pid freed by a clean exit may have been reused.
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() != "nginx" {
                continue;
            }
            let _ = nix::sys::signal::kill(Pid::from_raw(pid.cast_signed()), Signal::SIGKILL);
        }
        if exited.is_none() {
            let _ = child.wait();
        }
    }
}
