//! `cargo xtask setup`: idempotent; installs only what is missing, and is fast when nothing is.
//!
//! - nightly's `rust-src` (the eBPF crate is built with `-Z build-std=core`);
//! - bpf-linker 0.13, built against the nightly's own LLVM and rebuilt when a nightly update
//!   changes that LLVM (recorded in a stamp file next to the binary);
//! - the Debian packages the tests and benchmarks use, and a Docker engine (the container
//!   tests start a private `dockerd` of their own from it);
//! - a Python venv (`.venv`) with the real client SDKs the tests drive;
//! - the Node test clients' npm packages (`tests/clients/node`), pinned by their lock file.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::cmd;

/// Debian packages: ClickHouse (sink tests), nginx and wrk (proxy benchmark peers and load),
/// curl (a real h1/h2 client), iproute2, python3-venv for the SDK venv, and ZooKeeper
/// (coordination of the replicated ClickHouse cluster test); Vectorscan, which the agent links
/// statically (the trigger literals' one pass), and pkg-config, which finds it.
const APT_PACKAGES: &[&str] = &[
    "clickhouse-server",
    "clickhouse-client",
    "nginx",
    "wrk",
    "curl",
    "iproute2",
    "python3-venv",
    "ca-certificates",
    "zookeeper",
    "libvectorscan-dev",
    "pkg-config",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> Result<()> {
    nightly_rust_src()?;
    bpf_linker()?;
    cargo_fuzz()?;
    apt_packages()?;
    docker_engine_package()?;
    python_venv()?;
    node_clients()?;
    eprintln!("xtask: setup complete");
    Ok(())
}

fn nightly_rust_src() -> Result<()> {
    let installed = cmd::output("rustup", &["toolchain", "list"]).unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("nightly")) {
        cmd::run(
            "rustup",
            &["toolchain", "install", "nightly", "--profile", "minimal"],
        )?;
    }
    let components = cmd::output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .unwrap_or_default();
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        cmd::run(
            "rustup",
            &["component", "add", "rust-src", "--toolchain", "nightly"],
        )?;
    }
    Ok(())
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo"),
        PathBuf::from,
    )
}

/// The nightly's LLVM shared library (e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`).
fn nightly_llvm() -> Result<(PathBuf, String, u32)> {
    let sysroot = cmd::output("rustc", &["+nightly", "--print", "sysroot"])
        .context("the nightly toolchain has no sysroot")?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let name = fs::read_dir(&lib)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM in {}", lib.display()))?;
    let digits: String = name
        .trim_start_matches("libLLVM.so.")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let major = digits
        .parse()
        .with_context(|| format!("LLVM version of {name}"))?;
    Ok((lib, name, major))
}

fn bpf_linker() -> Result<()> {
    let (lib, llvm, major) = nightly_llvm()?;
    let stamp = cargo_home().join("bin/.bpf-linker-llvm");
    let current = fs::read_to_string(&stamp).unwrap_or_default();
    if current.trim() == llvm && cmd::succeeds("bpf-linker", &["--version"]) {
        return Ok(());
    }
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against {llvm} (about 2 minutes)");
    let prefix = cargo_home().join("llmtrace-llvm");
    fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(lib.join(&llvm), &link)?;
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--locked",
        "--force",
        "--no-default-features",
        "--features",
        &format!("llvm-{major}"),
    ])
    .env("LLVM_PREFIX", &prefix)
    .env(
        "RUSTFLAGS",
        format!("-C link-arg=-Wl,-rpath,{}", lib.display()),
    );
    cmd::status(&mut c)?;
    fs::write(&stamp, &llvm)?;
    Ok(())
}

/// cargo-fuzz, for the parser fuzz targets in agent/fuzz.
fn cargo_fuzz() -> Result<()> {
    if cmd::succeeds("cargo", &["fuzz", "--version"]) {
        return Ok(());
    }
    cmd::cargo(&["install", "cargo-fuzz", "--version", "0.13.2", "--locked"])
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            cmd::output("dpkg-query", &["-W", "-f=${Status}", p])
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !cmd::is_root() {
        bail!(
            "missing Debian packages {missing:?}: run `cargo xtask setup` as root (or apt-get install them)"
        );
    }
    let mut update = Command::new("apt-get");
    update
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive");
    cmd::status(&mut update)?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    cmd::status(&mut install)
}

/// The test venv (`.venv`) with the SDKs the end-to-end tests drive.
fn python_venv() -> Result<()> {
    venv(".venv", "tests/requirements.txt")
}

/// A venv at `dir` (relative to the workspace) holding `requirements`, with a stamp recording
/// where it was built and from which requirements, so an unchanged venv costs nothing. The path
/// is part of the stamp because pip writes it into every script's shebang: a venv copied or moved
/// from another checkout looks complete but its entry points (`mitmdump`) cannot start.
pub fn venv(dir: &str, requirements: &str) -> Result<()> {
    let root = crate::root();
    let venv = root.join(dir);
    let venv_arg = venv.to_str().context("venv path")?;
    let reqs_path = root.join(requirements);
    let reqs = fs::read_to_string(&reqs_path).with_context(|| requirements.to_owned())?;
    let stamp_path = venv.join(".llmtrace-requirements");
    let stamp = format!("# venv {venv_arg}\n{reqs}");
    let python = venv.join("bin/python");
    let built = fs::read_to_string(&stamp_path).ok();
    if python.exists() && built.as_deref() == Some(stamp.as_str()) {
        return Ok(());
    }
    let moved = built.is_some_and(|b| !b.starts_with(&format!("# venv {venv_arg}\n")));
    if !python.exists() || moved {
        // `--clear` rebuilds a moved venv in place, rewriting interpreter links and shebangs.
        cmd::run("python3", &["-m", "venv", "--clear", venv_arg])?;
    }
    let py = python.to_str().context("venv path")?;
    cmd::run(
        py,
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            reqs_path.to_str().context("path")?,
        ],
    )?;
    fs::write(&stamp_path, stamp)?;
    Ok(())
}

/// The Node test clients (`tests/clients/node`): `npm ci` from the committed lock file, with a
/// stamp recording which lock file the installed packages came from, so an unchanged install
/// costs nothing. Node.js and npm come from Debian when the machine has none.
fn node_clients() -> Result<()> {
    if !cmd::succeeds("npm", &["--version"]) {
        if !cmd::is_root() {
            bail!("Node.js and npm are missing: run `cargo xtask setup` as root");
        }
        let mut install = Command::new("apt-get");
        install
            .args(["install", "-y", "--no-install-recommends", "nodejs", "npm"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd::status(&mut install)?;
    }
    let dir = crate::root().join("tests/clients/node");
    let lock = fs::read_to_string(dir.join("package-lock.json"))
        .context("tests/clients/node/package-lock.json")?;
    let stamp = dir.join("node_modules/.llmtrace-lock");
    if fs::read_to_string(&stamp).is_ok_and(|s| s == lock) {
        return Ok(());
    }
    let mut ci = Command::new("npm");
    ci.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir);
    cmd::status(&mut ci)?;
    fs::write(&stamp, lock)?;
    Ok(())
}

/// Debian's `docker.io` when no `dockerd` is installed (an engine installed otherwise, e.g.
/// Docker's own `docker-ce`, is used as it is: the packages conflict). Only installed, never
/// started here: the container tests start a private daemon and stop it afterwards.
fn docker_engine_package() -> Result<()> {
    if cmd::succeeds("dockerd", &["--version"]) && cmd::succeeds("docker", &["--version"]) {
        return Ok(());
    }
    if !cmd::is_root() {
        bail!("Docker is missing: run `cargo xtask setup` as root (or apt-get install docker.io)");
    }
    let mut update = Command::new("apt-get");
    update
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive");
    cmd::status(&mut update)?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "--no-install-recommends", "docker.io"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    cmd::status(&mut install)
}

/// A Docker engine for `xtask image` (loading the image): installed when missing, and a
/// `dockerd` started in the background when none answers (machines without systemd).
pub fn container_engine() -> Result<()> {
    if cmd::succeeds("docker", &["info"]) {
        return Ok(());
    }
    if !cmd::is_root() {
        bail!("no Docker engine answers: run `cargo xtask image` as root to install and start one");
    }
    docker_engine_package()?;
    let log = fs::File::create("/var/log/llmtrace-dockerd.log")?;
    Command::new("dockerd")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting dockerd")?;
    for _ in 0..60 {
        if cmd::succeeds("docker", &["info"]) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    bail!("dockerd did not answer within 30 s; see /var/log/llmtrace-dockerd.log")
}
