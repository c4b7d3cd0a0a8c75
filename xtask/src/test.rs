//! `cargo xtask test`: the whole suite, in the order that fails fastest.

use anyhow::{Result, bail};

use crate::cmd;

pub fn run() -> Result<()> {
    if !cmd::is_root() {
        bail!(
            "the suite loads eBPF programs and creates cgroups: run it as root (e.g. `sudo -E cargo xtask test`)"
        );
    }
    cmd::cargo(&["fmt", "--all", "--", "--check"])?;
    cmd::cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // Integration tests start the built binaries (llmtrace, llmtrace-probe): the same release
    // build `cargo xtask run` and `bench` use, found through LLMTRACE_BIN_DIR.
    cmd::build_release()?;
    let python = crate::root().join(".venv/bin/python");
    // Tests that drive the Python SDKs or chdb find the venv's interpreter here.
    let mut c =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(["test", "--workspace"])
        .current_dir(crate::root())
        .env("LLMTRACE_PYTHON", python)
        .env("LLMTRACE_BIN_DIR", cmd::release_dir());
    cmd::status(&mut c)?;
    // A short run of every parser fuzz target (longer runs: `cargo xtask fuzz`).
    crate::fuzz::run(5)?;
    eprintln!("xtask: all checks and tests passed");
    Ok(())
}
