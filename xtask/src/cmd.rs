//! Running commands loudly: every command is printed before it runs, and a failure names it.

use std::{
    ffi::OsStr,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// Runs `program args…` in the workspace root, inheriting stdio; fails if it fails.
pub fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<()> {
    let mut c = Command::new(program);
    c.args(args).current_dir(crate::root());
    status(&mut c)
}

/// Runs a prepared command; fails if it fails.
pub fn status(c: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", describe(c));
    let s = c
        .status()
        .with_context(|| format!("cannot start {}", describe(c)))?;
    if !s.success() {
        bail!("`{}` failed with {s}", describe(c));
    }
    Ok(())
}

/// `cargo args…` with the same cargo that runs xtask.
pub fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(args).current_dir(crate::root());
    status(&mut c)
}

/// `cargo args…` whose standard output is both shown and returned (stderr passes through).
pub fn cargo_tee(args: &[&str]) -> Result<String> {
    use std::io::{BufRead as _, BufReader};

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(args)
        .current_dir(crate::root())
        .stdout(Stdio::piped());
    eprintln!("xtask: $ {}", describe(&c));
    let mut child = c
        .spawn()
        .with_context(|| format!("cannot start {}", describe(&c)))?;
    let mut kept = String::new();
    let stdout = child.stdout.take().context("piped stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        kept.push_str(&line);
        kept.push('\n');
    }
    let s = child.wait()?;
    if !s.success() {
        bail!("`{}` failed with {s}", describe(&c));
    }
    Ok(kept)
}

/// The one release build of every workspace binary (the agent, the test kit's helpers) that
/// `run`, `test` and `bench` share, so none of them rebuilds what another just built.
pub fn build_release() -> Result<()> {
    cargo(&["build", "--release", "--workspace", "--bins"])
}

/// Where [`build_release`] leaves the binaries.
pub fn release_dir() -> std::path::PathBuf {
    crate::root().join("target/release")
}

/// Whether `program args…` succeeds, quietly.
pub fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Standard output of `program args…`, if it succeeds.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    output("id", &["-u"]).is_some_and(|s| s.trim() == "0")
}

/// Runs `bin args` as root (directly, or through sudo), in the foreground.
pub fn exec_as_root(bin: &Path, args: &[String]) -> Result<()> {
    let mut c = if is_root() {
        Command::new(bin)
    } else {
        eprintln!("xtask: the agent needs root (eBPF, cgroups, SO_MARK); using sudo");
        let mut c = Command::new("sudo");
        c.arg("-E").arg(bin);
        c
    };
    c.args(args);
    status(&mut c)
}

fn describe(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
