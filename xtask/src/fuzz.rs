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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    /// Name → versions of the packages a Cargo.lock pins.
    fn pinned(path: &str) -> BTreeMap<String, BTreeSet<String>> {
        let path = crate::root().join(path);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let lock: toml::Table = toml::from_str(&text).unwrap();
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for p in lock["package"].as_array().unwrap() {
            let name = p["name"].as_str().unwrap().to_owned();
            let version = p["version"].as_str().unwrap().to_owned();
            out.entry(name).or_default().insert(version);
        }
        out
    }

    /// The fuzz crate is its own workspace with its own lockfile. Were it left to resolve at
    /// build time, a clean clone would fuzz whatever versions the registry holds that day
    /// rather than the ones the agent ships and was tested with.
    #[test]
    fn the_fuzz_lockfile_pins_the_versions_the_workspace_ships() {
        let shipped = pinned("Cargo.lock");
        let fuzzed = pinned("agent/fuzz/Cargo.lock");
        let drift: Vec<String> = fuzzed
            .iter()
            .filter_map(|(name, versions)| {
                let ours = shipped.get(name)?;
                let extra: Vec<&String> = versions.difference(ours).collect();
                (!extra.is_empty()).then(|| format!("{name} {extra:?} (workspace: {ours:?})"))
            })
            .collect();
        assert!(
            drift.is_empty(),
            "agent/fuzz/Cargo.lock has drifted from Cargo.lock: {drift:?}; refresh it with \
             `cp Cargo.lock agent/fuzz/ && (cd agent/fuzz && cargo +nightly metadata --format-version 1 >/dev/null)`"
        );
    }
}
