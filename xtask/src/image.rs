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
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::cmd;

/// The image reference used by the manifests (deploy/kubernetes/daemonset.yaml).
pub const DEFAULT_TAG: &str = "llmtrace:0.1.0";
/// Where the system bundle is in the image (the path Debian and most TLS stacks look at).
const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

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
    let rootfs = out.join("rootfs");
    if rootfs.exists() {
        fs::remove_dir_all(&rootfs).with_context(|| rootfs.display().to_string())?;
    }
    fs::create_dir_all(&rootfs)?;
    populate(&rootfs, &cmd::release_dir().join("llmtrace"))?;
    let tarball = out.join("llmtrace-rootfs.tar");
    pack(&rootfs, &tarball)?;
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

/// Lays out the root file system: the stripped binary, its libraries, the CA bundle and the
/// empty directories the agent and the DaemonSet's mounts expect.
fn populate(rootfs: &Path, bin: &Path) -> Result<()> {
    let dest = rootfs.join("usr/bin/llmtrace");
    fs::create_dir_all(dest.parent().context("bin dir")?)?;
    cmd::run(
        "strip",
        &[
            OsArg::from("--strip-debug"),
            OsArg::from("-o"),
            dest.as_os_str().into(),
            bin.as_os_str().into(),
        ],
    )?;
    for lib in shared_libraries(bin)? {
        copy_into(rootfs, &lib)?;
    }
    copy_into(rootfs, &Path::new("/").join(CA_BUNDLE))
        .context("the system CA bundle (Debian package ca-certificates)")?;
    for dir in [
        "etc/llmtrace",
        "etc/llmtrace-ca",
        "etc/llmtrace-clickhouse",
        "var/lib/llmtrace",
        "sys/fs/bpf",
        "host/sys/fs/cgroup",
        "proc",
        "dev",
    ] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    let tmp = rootfs.join("tmp");
    fs::create_dir_all(&tmp)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777))?;
    // Names for uid/gid 0 (logs and `ls` inside the image); nothing authenticates against it.
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/:/usr/bin/llmtrace\n",
    )?;
    fs::write(rootfs.join("etc/group"), "root:x:0:\n")?;
    Ok(())
}

type OsArg = std::ffi::OsString;

/// The shared libraries `bin` loads, with the dynamic loader, as absolute host paths.
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd")?;
    if !out.status.success() {
        bail!(
            "ldd {}: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let libs = parse_ldd(&text);
    if libs.is_empty() {
        bail!("ldd found no libraries for {}:\n{text}", bin.display());
    }
    Ok(libs)
}

/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` and `/lib64/ld-linux-x86-64.so.2 (0x…)`
/// give a path; the vDSO (no path) is provided by the kernel.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Copies the host file at absolute `path` to the same path under `rootfs`, following symlinks
/// (the loader name is usually a link) and keeping the mode.
fn copy_into(rootfs: &Path, path: &Path) -> Result<()> {
    let rel = path.strip_prefix("/").context("absolute path")?;
    let dest = rootfs.join(rel);
    fs::create_dir_all(dest.parent().context("parent")?)?;
    fs::copy(path, &dest).with_context(|| format!("copying {}", path.display()))?;
    Ok(())
}

/// A reproducible tarball of `rootfs`: numeric root ownership, fixed mtime, sorted names.
fn pack(rootfs: &Path, tarball: &Path) -> Result<()> {
    let mut tar = Command::new("tar");
    tar.args([
        "--create",
        "--sort=name",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "--mtime=@0",
        "--file",
    ])
    .arg(tarball)
    .arg("-C")
    .arg(rootfs)
    .arg(".");
    cmd::status(&mut tar)
}

/// Whether a Docker daemon answers.
pub fn engine_reachable() -> bool {
    cmd::succeeds("docker", &["info"])
}

/// `docker import` with the agent as entrypoint.
fn import(tarball: &Path, tag: &str) -> Result<()> {
    let mut import = Command::new("docker");
    import
        .arg("import")
        .args(["--change", r#"ENTRYPOINT ["/usr/bin/llmtrace"]"#])
        .args(["--change", r#"CMD ["run"]"#])
        .args([
            "--change",
            "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
        ])
        .args(["--change", "ENV LLMTRACE_LOG=info"])
        .arg(tarball)
        .arg(tag);
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

    #[test]
    fn ldd_output_gives_library_and_loader_paths_but_not_the_vdso() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f06)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f06)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f06)\n";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }
}
