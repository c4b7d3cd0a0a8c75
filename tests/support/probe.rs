//! Running `llmtrace-probe`, inside a test cgroup or not.

use std::process::Command;

use serde_json::Value;

use crate::cgroup::TestCgroup;

/// Where the probe runs and how.
#[derive(Debug, Default)]
pub struct Probe<'a> {
    /// Run inside this cgroup (else in the test's own cgroup, outside interception).
    pub cgroup: Option<&'a TestCgroup>,
    /// Run inside this network namespace (by `ip netns` name).
    pub netns: Option<&'a str>,
    /// Extra flags (`--count`, `--mark`, …).
    pub flags: Vec<String>,
}

impl Probe<'_> {
    /// Connects to `addr` and returns the probe's JSON report.
    pub fn run(&self, addr: &str) -> Value {
        let bin = crate::workspace_bin("llmtrace-probe");
        let mut cmd = match self.cgroup {
            // The shell joins the cgroup, then becomes the probe (through `ip netns exec`, which
            // remounts /sys, so the cgroup is joined before entering the namespace): the probe's
            // sockets are created inside the cgroup from its first instruction.
            Some(cg) => {
                let enter = self
                    .netns
                    .map(|ns| format!("ip netns exec {ns} "))
                    .unwrap_or_default();
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!(
                        "echo $$ > {}/cgroup.procs && exec {enter}\"$0\" \"$@\"",
                        cg.path.display()
                    ))
                    .arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg(addr).args(&self.flags);
        let out = cmd.output().expect("run llmtrace-probe");
        assert!(
            out.status.success(),
            "probe failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "probe printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

/// Probes `addr` once from inside `cgroup`.
pub fn probe_in(cgroup: &TestCgroup, addr: &str) -> Value {
    Probe {
        cgroup: Some(cgroup),
        ..Probe::default()
    }
    .run(addr)
}

/// Probes `addr` once from outside any test cgroup.
pub fn probe_outside(addr: &str) -> Value {
    Probe::default().run(addr)
}
