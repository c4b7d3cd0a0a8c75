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
    // Integration tests start the built binaries (llmtrace, llmtrace-probe).
    cmd::cargo(&["build", "--workspace", "--bins"])?;
    let python = crate::root().join(".venv/bin/python");
    // Tests that drive the Python SDKs or chdb find the venv's interpreter here.
    let mut c =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(["test", "--workspace"])
        .current_dir(crate::root())
        .env("LLMTRACE_PYTHON", python);
    cmd::status(&mut c)?;
    eprintln!("xtask: all checks and tests passed");
    Ok(())
}
