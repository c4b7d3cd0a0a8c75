//! The `wrk` load generator (Debian's binary): keep-alive POSTs over TLS, inside a test cgroup
//! or not, with the URL's host name sent as SNI and `Host` while connecting to a loopback
//! address of the caller's choice (a Lua `wrk.resolve` override: wrk has no `--resolve`).

use std::{net::SocketAddr, path::Path, process::Command, time::Duration};

use crate::cgroup::TestCgroup;

/// One load run.
#[derive(Debug)]
pub struct Wrk<'a> {
    /// Run inside this cgroup (so its connections are intercepted).
    pub cgroup: Option<&'a TestCgroup>,
    /// Where to connect.
    pub connect: SocketAddr,
    /// `https://NAME:PORT/path…`: NAME is sent as SNI and in `Host`.
    pub url: String,
    /// Request body (POSTed as JSON).
    pub body: &'a str,
    /// Open connections (one thread).
    pub connections: u32,
    /// Duration of the run.
    pub duration: Duration,
}

/// What wrk reported.
#[derive(Debug, Clone, Copy)]
pub struct WrkReport {
    /// Completed requests.
    pub requests: u64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency in ms.
    pub p50_ms: f64,
    /// 99th percentile latency in ms.
    pub p99_ms: f64,
    /// Non-2xx/3xx responses plus socket errors.
    pub errors: u64,
}

impl Wrk<'_> {
    /// Runs wrk with a script written to `dir`, and parses its report.
    pub fn run(&self, dir: &Path) -> WrkReport {
        self.run_in(dir, None)
    }

    /// [`Wrk::run`] inside network namespace `netns` (an `ip netns` name) when given.
    pub fn run_in(&self, dir: &Path, netns: Option<&str>) -> WrkReport {
        assert!(
            crate::net::is_test_address(self.connect.ip()),
            "benchmarks only use loopback or test namespaces' 198.18.0.0/15"
        );
        let script = dir.join(format!("post-{}.lua", self.connect.port()));
        std::fs::write(&script, self.script()).expect("write wrk script");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = crate::cgroup::command_in(self.cgroup, "ip");
                c.args(["netns", "exec", ns, "wrk"]);
                c
            }
            None => crate::cgroup::command_in(self.cgroup, "wrk"),
        };
        cmd.args(["-t1", "--latency", "--timeout", "5s"])
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{}s", self.duration.as_secs().max(1)))
            .arg("-s")
            .arg(&script)
            .arg(&self.url);
        let out = run(&mut cmd);
        parse(&out).unwrap_or_else(|| panic!("unexpected wrk output:\n{out}"))
    }

    fn script(&self) -> String {
        let body = self.body.replace('\\', "\\\\").replace('"', "\\\"");
        format!(
            "wrk.method = \"POST\"\n\
             wrk.body = \"{body}\"\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.headers[\"Authorization\"] = \"Bearer sk-bench-not-a-real-key\"\n\
             function wrk.resolve(host, service)\n\
             \x20 wrk.addrs = wrk.lookup(\"{ip}\", \"{port}\")\n\
             end\n",
            ip = self.connect.ip(),
            port = self.connect.port(),
        )
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wrk failed: {}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `142.00us`, `1.20ms`, `2.00s` → ms.
fn millis(s: &str) -> Option<f64> {
    let (num, factor) = if let Some(n) = s.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e3)
    } else {
        return None;
    };
    Some(num.parse::<f64>().ok()? * factor)
}

fn parse(out: &str) -> Option<WrkReport> {
    let field = |prefix: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::trim))
    };
    let requests = out
        .lines()
        .find(|l| l.contains(" requests in "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let non_2xx: u64 = field("Non-2xx or 3xx responses:").map_or(Some(0), |v| v.parse().ok())?;
    let socket: u64 = field("Socket errors:").map_or(0, |v| {
        v.split(',')
            .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    });
    Some(WrkReport {
        requests,
        rps: field("Requests/sec:")?.parse().ok()?,
        p50_ms: millis(field("50%")?)?,
        p99_ms: millis(field("99%")?)?,
        errors: non_2xx + socket,
    })
}

#[cfg(test)]
mod tests {
    const OUT: &str = "Running 5s test @ https://api.openai.com:1/v1/chat/completions
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   305.48us  824.92us   7.32ms   89.90%
    Req/Sec    37.15k    10.09k   50.51k    70.00%
  Latency Distribution
     50%  142.00us
     75%  200.00us
     90%  300.00us
     99%    2.10ms
  37000 requests in 1.01s, 5.68MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  36779.91
Transfer/sec:      5.65MB
";

    #[test]
    fn parses_a_report() {
        let r = super::parse(OUT).expect("parse");
        assert_eq!(r.requests, 37000);
        assert_eq!(r.errors, 6);
        assert!((r.rps - 36779.91).abs() < 1e-6);
        assert!((r.p50_ms - 0.142).abs() < 1e-9);
        assert!((r.p99_ms - 2.1).abs() < 1e-9);
    }
}
