//! The usual end-to-end setup: a test cgroup, the fake provider on 127.0.0.2 (serving as
//! `api.openai.com` and `api.anthropic.com`), and an agent intercepting both for the cgroup,
//! plus the way the tests run a Python client inside that cgroup.

use std::{path::PathBuf, process::Command};

use serde_json::Value;

use crate::{
    agent::{Agent, AgentConfig},
    cgroup::{TestCgroup, command_in},
    fake_llm::{FakeLlm, Pacing},
};

/// The cgroup, the fake provider and the agent; dropped in that order, as the tests always
/// did.
#[derive(Debug)]
pub struct World {
    pub cg: TestCgroup,
    pub fake: FakeLlm,
    pub agent: Agent,
}

impl World {
    /// Starts the three with `extra` agent TOML appended to the provider entries.
    pub fn start(name: &str, extra: &str) -> Self {
        Self::start_paced(name, Pacing::default(), extra)
    }

    /// Like [`World::start`], with the fake provider pacing its streams with `pacing`.
    pub fn start_paced(name: &str, pacing: Pacing, extra: &str) -> Self {
        let cg = TestCgroup::new(name);
        let fake = FakeLlm::start_paced("127.0.0.2:0", pacing);
        let agent = Agent::start(
            &cg,
            &AgentConfig {
                intercept: String::new(),
                rest: format!("{}{extra}\n", providers(&fake)),
            },
        );
        Self { cg, fake, agent }
    }

    /// `tests/clients/<script>` run by the test venv's Python inside the cgroup, told the fake
    /// provider's address and port (`--address`, `--port`) and trusting only the agent's CA.
    pub fn python_client(&self, script: &str) -> Command {
        let mut c = command_in(Some(&self.cg), crate::python());
        c.arg(clients_dir().join(script))
            .args([
                "--address",
                "127.0.0.2",
                "--port",
                &self.fake.addr.port().to_string(),
            ])
            .env("SSL_CERT_FILE", self.agent.ca_pem());
        c
    }
}

/// Provider entries sending `api.openai.com` and `api.anthropic.com` to `fake`, whose CA the
/// agent trusts upstream.
pub fn providers(fake: &FakeLlm) -> String {
    format!(
        "[[providers]]\nhost = \"api.openai.com\"\nport = {port}\naddresses = [\"127.0.0.2\"]\n\
         [[providers]]\nhost = \"api.anthropic.com\"\nport = {port}\naddresses = [\"127.0.0.2\"]\n\
         [upstream]\nextra_root_certs = [\"{ca}\"]\n",
        port = fake.addr.port(),
        ca = fake.ca_pem_path.display(),
    )
}

/// `tests/clients`, where the client scripts live.
pub fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// Runs `c`, which must succeed, and parses the one JSON object it prints.
pub fn json_of(mut c: Command) -> Value {
    let out = c.output().expect("run the client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}
