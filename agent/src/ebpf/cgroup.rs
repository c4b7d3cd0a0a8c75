//! Finding the cgroup v2 hierarchy. It is mounted at `/sys/fs/cgroup` on most current systems
//! but elsewhere on hybrid ones (e.g. `/sys/fs/cgroup/unified`), so it is read from mountinfo.

use std::path::{Path, PathBuf};

/// Why no cgroup v2 hierarchy could be found.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read /proc/self/mountinfo: {0}")]
    Read(#[from] std::io::Error),
    #[error("no cgroup2 file system is mounted; mount one or set intercept.cgroup")]
    NotMounted,
    #[error("{0} is not a directory of a cgroup2 file system")]
    NotCgroup2(PathBuf),
}

/// The mount point of the cgroup2 hierarchy's root.
pub fn detect_root() -> Result<PathBuf, CgroupError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    cgroup2_mount(&text).ok_or(CgroupError::NotMounted)
}

/// Checks that `path` is a directory on a cgroup2 file system.
pub fn check(path: &Path) -> Result<(), CgroupError> {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    match nix::sys::statfs::statfs(path) {
        Ok(fs) if fs.filesystem_type().0 == CGROUP2_SUPER_MAGIC => Ok(()),
        _ => Err(CgroupError::NotCgroup2(path.to_path_buf())),
    }
}

/// The first cgroup2 mount whose root is the hierarchy's root, from mountinfo text.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        let mut fields = pre.split_whitespace();
        let root = fields.nth(3)?;
        let mount_point = fields.next()?;
        (fstype == "cgroup2" && root == "/").then(|| PathBuf::from(unescape(mount_point)))
    })
}

/// mountinfo escapes spaces and a few other bytes as `\ooo`.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let oct: String = chars.by_ref().take(3).collect();
            if let Ok(b) = u8::from_str_radix(&oct, 8) {
                out.push(char::from(b));
                continue;
            }
            out.push('\\');
            out.push_str(&oct);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_and_unified_layouts() {
        let hybrid = "25 22 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "30 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(cgroup2_mount("1 0 0:1 / / rw - ext4 /dev/vda rw\n"), None);
    }

    #[test]
    fn unescapes_spaces() {
        assert_eq!(unescape(r"/mnt/with\040space"), "/mnt/with space");
    }

    #[test]
    fn this_machine_has_a_cgroup2_root() {
        let root = detect_root().expect("cgroup2 mounted");
        check(&root).unwrap();
        assert!(check(Path::new("/proc")).is_err());
    }
}
