//! Running the real curl binary.

use std::{path::Path, process::Command};

/// What curl got.
#[derive(Debug, Clone)]
pub struct CurlOut {
    pub exit: i32,
    pub status: u16,
    pub http_version: String,
    /// Headers of the final response, lowercase names, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub stderr: String,
}

impl CurlOut {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Runs curl with `args` (plus output plumbing) on a blocking thread.
pub async fn curl(dir: &Path, args: Vec<String>) -> CurlOut {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || curl_blocking(&dir, &args))
        .await
        .unwrap()
}

fn curl_blocking(dir: &Path, args: &[String]) -> CurlOut {
    let id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let head_path = dir.join(format!("curl-{id}.head"));
    let body_path = dir.join(format!("curl-{id}.body"));
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-D"])
        .arg(&head_path)
        .arg("-o")
        .arg(&body_path)
        .args(["-w", "%{http_code} %{http_version}"])
        .args(args)
        .output()
        .expect("curl is installed");
    let written = String::from_utf8_lossy(&out.stdout).to_string();
    let mut parts = written.split_whitespace();
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let http_version = parts.next().unwrap_or("").to_owned();
    let head = std::fs::read_to_string(&head_path).unwrap_or_default();
    // Keep the last response's headers (after 100 Continue).
    let last = head
        .split("\r\n\r\n")
        .filter(|b| !b.trim().is_empty())
        .last()
        .unwrap_or("");
    let headers = last
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = std::fs::read(&body_path).unwrap_or_default();
    let _ = std::fs::remove_file(&head_path);
    let _ = std::fs::remove_file(&body_path);
    CurlOut {
        exit: out.status.code().unwrap_or(-1),
        status,
        http_version,
        headers,
        body,
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// Args to reach `url_path` on `name` through `resolve`, trusting `ca`.
pub fn args(
    version: &str,
    resolve: &str,
    ca: &Path,
    name: &str,
    port: u16,
    url_path: &str,
) -> Vec<String> {
    // The URL carries no port, as an app's would: the request's Host is then the bare name,
    // which the proxy checks against the TLS server name and the original destination's port.
    let (_, ip) = resolve.rsplit_once(':').expect("name:port:ip");
    vec![
        version.to_owned(),
        "--cacert".into(),
        ca.display().to_string(),
        "--connect-to".into(),
        format!("{name}:443:{ip}:{port}"),
        format!("https://{name}{url_path}"),
    ]
}
