//! The agent image's root file system: the stripped release `llmtrace` binary, the few glibc
//! libraries it links (found with `ldd`, so exactly the ones it was linked and tested against
//! on this machine), the system CA bundle, and the directories the DaemonSet mounts over; packed
//! as a reproducible tarball for `docker import`.
//!
//! Self-contained (std and anyhow only) because it has two users: `cargo xtask image`, and the
//! container engine test in the test kit, which builds the image from the release binary the
//! suite already built instead of running cargo from inside a test.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// Where the system bundle is in the image (the path Debian and most TLS stacks look at).
const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

/// `docker import --change` instructions: the agent as entrypoint, `run` by default.
pub const IMPORT_CHANGES: &[&str] = &[
    r#"ENTRYPOINT ["/usr/bin/llmtrace"]"#,
    r#"CMD ["run"]"#,
    "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
    "ENV LLMTRACE_LOG=info",
];

/// Lays out the image's root file system for the agent binary `bin` in `rootfs` (emptied
/// first) and packs it into `tarball`.
pub fn build(bin: &Path, rootfs: &Path, tarball: &Path) -> Result<()> {
    if rootfs.exists() {
        fs::remove_dir_all(rootfs).with_context(|| rootfs.display().to_string())?;
    }
    fs::create_dir_all(rootfs)?;
    populate(rootfs, bin)?;
    pack(rootfs, tarball)
}

/// Runs a command; fails with its stderr if it fails.
fn run(c: &mut Command) -> Result<()> {
    let out = c.output().with_context(|| format!("cannot start {c:?}"))?;
    if !out.status.success() {
        bail!(
            "{c:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Lays out the root file system: the stripped binary, its libraries, the CA bundle and the
/// empty directories the agent and the DaemonSet's mounts expect.
fn populate(rootfs: &Path, bin: &Path) -> Result<()> {
    let dest = rootfs.join("usr/bin/llmtrace");
    fs::create_dir_all(dest.parent().context("bin dir")?)?;
    run(Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&dest)
        .arg(bin))?;
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
    run(&mut tar)
}

#[cfg(test)]
mod tests {
    use super::*;

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
