//! Builds the eBPF programs (nightly, BPF target, bpf-linker) and leaves the object in OUT_DIR,
//! where `src/ebpf/loader.rs` embeds it.
//!
//! The nested cargo runs quietly: its output goes to `OUT_DIR/ebpf-build.log` and is shown only
//! when the build fails (printing it as `cargo:warning` lines, as `aya-build` does, made every
//! build of the agent look like it had warnings). Every profile of the outer build (debug,
//! release, clippy) shares one eBPF target directory, `target/bpf`, so the programs are compiled
//! once, not once per profile.
//!
//! With `AYA_BUILD_SKIP=1` no object is built and an empty placeholder is written instead, so
//! pure-userspace work (unit tests of parsers, the sink…) compiles without the eBPF toolchain;
//! such a binary refuses to start interception with a message saying why.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// The eBPF crate's package and binary name.
const EBPF: &str = "llmtrace-ebpf";

fn main() -> Result<()> {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest
        .join("../agent-ebpf")
        .canonicalize()
        .context("agent-ebpf directory")?;
    // The ABI crate lives inside this directory, so this covers both crates.
    println!("cargo:rerun-if-changed={}", ebpf_dir.display());
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let object = out_dir.join(EBPF);
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        fs::write(&object, []).context("writing the placeholder eBPF object")?;
        return Ok(());
    }
    let target = match env::var("CARGO_CFG_TARGET_ENDIAN")?.as_str() {
        "big" => "bpfeb-unknown-none",
        _ => "bpfel-unknown-none",
    };
    // The programs read `pt_regs`-style layouts of the host architecture.
    let arch = env::var("CARGO_CFG_TARGET_ARCH")?;
    let target_dir = shared_target_dir(&out_dir);
    let log = out_dir.join("ebpf-build.log");
    build(&ebpf_dir, target, &arch, &target_dir, &log)?;
    let built = target_dir.join(target).join("release").join(EBPF);
    fs::copy(&built, &object)
        .with_context(|| format!("copying {} to {}", built.display(), object.display()))?;
    Ok(())
}

/// `target/bpf` of the outer build: OUT_DIR is `<target>/<profile>/build/<pkg>-<hash>/out`.
fn shared_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .nth(4)
        .map_or_else(|| out_dir.join("bpf"), |target| target.join("bpf"))
}

fn build(ebpf_dir: &Path, target: &str, arch: &str, target_dir: &Path, log: &Path) -> Result<()> {
    let log_file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let rustflags = [
        &format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2",
        "-Clink-arg=--btf",
    ]
    .join("\x1f");
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        "nightly",
        "cargo",
        "build",
        "--package",
        EBPF,
        "--bins",
    ])
    .args(["--release", "--target", target, "-Z", "build-std=core"])
    .arg("--target-dir")
    .arg(target_dir)
    .current_dir(ebpf_dir)
    .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
    // The outer build's compiler (or clippy's wrapper) must not leak into the nightly build.
    .env_remove("RUSTC")
    .env_remove("RUSTC_WORKSPACE_WRAPPER")
    .env_remove("RUSTC_WRAPPER")
    .stdin(Stdio::null())
    .stdout(log_file.try_clone()?)
    .stderr(log_file);
    let status = cmd
        .status()
        .context("running `rustup run nightly cargo build` for the eBPF programs (is rustup installed? `cargo xtask setup` installs the rest)")?;
    if !status.success() {
        let output = fs::read_to_string(log).unwrap_or_default();
        bail!(
            "building the eBPF programs failed ({status}); `cargo xtask setup` installs the nightly rust-src and bpf-linker they need. Output of the eBPF build:\n{output}"
        );
    }
    Ok(())
}
