//! `cargo xtask fuzz`: every parser fuzz target in `agent/fuzz`, each for a bounded time.

use std::process::Command;

use anyhow::{Context as _, Result};

use crate::cmd;

/// Runs each target for `seconds`; a crash fails the run (and leaves its input in
/// `agent/fuzz/artifacts/<target>/` for a regression test).
pub fn run(seconds: u32) -> Result<()> {
    let dir = crate::root().join("agent/fuzz");
    let targets = std::fs::read_dir(dir.join("fuzz_targets"))
        .context("agent/fuzz/fuzz_targets")?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".rs").map(str::to_owned)
        });
    let mut targets: Vec<String> = targets.collect();
    targets.sort();
    for target in &targets {
        let mut c = Command::new("cargo");
        c.args([
            "+nightly",
            "fuzz",
            "run",
            target,
            "--",
            &format!("-max_total_time={seconds}"),
        ])
        .current_dir(&dir)
        // Fuzzing the parsers needs no eBPF object.
        .env("AYA_BUILD_SKIP", "1");
        cmd::status(&mut c)?;
    }
    eprintln!(
        "xtask: {} fuzz targets ran {seconds} s each without a crash",
        targets.len()
    );
    Ok(())
}
