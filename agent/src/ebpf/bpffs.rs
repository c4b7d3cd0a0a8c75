//! Making sure a BPF file system is mounted where programs are pinned.

use std::path::Path;

use nix::mount::{MsFlags, mount};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `path` is on a bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type().0 == BPF_FS_MAGIC)
}

/// Mounts bpffs at `path` unless one is already there.
pub fn ensure_mounted(path: &Path) -> std::io::Result<()> {
    if is_bpffs(path) {
        return Ok(());
    }
    std::fs::create_dir_all(path)?;
    mount(
        Some("bpf"),
        path,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| std::io::Error::other(format!("cannot mount bpffs at {}: {e}", path.display())))
}
