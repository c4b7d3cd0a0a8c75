//! `cargo xtask image`: the agent's container image, built from this repository alone.
//!
//! No base image is pulled (no registry is needed): the root file system holds the release
//! `llmtrace` binary (stripped), the few glibc libraries it links (found with `ldd`, so they
//! are exactly the ones the binary was linked and tested against on this machine), and the
//! system CA bundle for verifying providers. A glibc build rather than a static musl one: it
//! is the binary the test suite runs, it needs no extra toolchain, and glibc's resolver and
//! allocator are what the agent is measured with. The root file system is written as a
//! tarball (`target/image/llmtrace-rootfs.tar`) and, when a Docker engine is reachable,
//! imported as an image with the agent as its entrypoint.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::{cmd, rootfs};

/// The image reference used by the manifests (deploy/kubernetes/daemonset.yaml).
pub const DEFAULT_TAG: &str = "llmtrace:0.1.0";

/// Builds the release binary, the root file system and its tarball, and imports it as `tag`
/// into Docker when `load` is set and an engine answers.
pub fn run(tag: &str, load: bool) -> Result<()> {
    cmd::cargo(&[
        "build",
        "--release",
        "-p",
        "llmtrace-agent",
        "--bin",
        "llmtrace",
    ])?;
    let out = crate::root().join("target/image");
    let tarball = out.join("llmtrace-rootfs.tar");
    rootfs::build(
        &cmd::release_dir().join("llmtrace"),
        &out.join("rootfs"),
        &tarball,
    )?;
    let tarball_bytes = fs::metadata(&tarball)?.len();
    println!(
        "xtask: image root file system {} ({} MB)",
        tarball.display(),
        mb(tarball_bytes)
    );
    if load {
        if engine_reachable() {
            import(&tarball, tag)?;
            if let Some(bytes) = image_size(tag) {
                println!("xtask: image {tag} loaded into docker ({} MB)", mb(bytes));
            }
        } else {
            println!(
                "xtask: no Docker engine answers (`docker info` failed); load it later with \
                 `docker import` of {}",
                tarball.display()
            );
        }
    }
    Ok(())
}

/// `12.3` for 12_345_678 bytes (decimal megabytes, one decimal).
fn mb(bytes: u64) -> String {
    format!("{}.{}", bytes / 1_000_000, bytes % 1_000_000 / 100_000)
}

/// Whether a Docker daemon answers.
pub fn engine_reachable() -> bool {
    cmd::succeeds("docker", &["info"])
}

/// `docker import` with the agent as entrypoint.
fn import(tarball: &Path, tag: &str) -> Result<()> {
    let mut import = Command::new("docker");
    import.arg("import");
    for change in rootfs::IMPORT_CHANGES {
        import.args(["--change", change]);
    }
    import.arg(tarball).arg(tag);
    cmd::status(&mut import)
}

fn image_size(tag: &str) -> Option<u64> {
    cmd::output(
        "docker",
        &["image", "inspect", "--format", "{{.Size}}", tag],
    )?
    .trim()
    .parse()
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_in_decimal_megabytes() {
        assert_eq!(mb(12_345_678), "12.3");
        assert_eq!(mb(999_999), "0.9");
    }
}
