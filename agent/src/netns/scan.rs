//! Which network namespaces the processes of the attached cgroup live in, read from `/proc`.

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::Path,
};

/// The cgroup path of `pid` as `/proc/<pid>/cgroup` shows it (the cgroup v2 `0::` line).
fn cgroup_of(proc_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(proc_dir.join("cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// True when cgroup `path` is `attached` or below it (paths relative to the cgroup2 root).
pub fn within(path: &str, attached: &str) -> bool {
    let attached = attached.trim_end_matches('/');
    attached.is_empty()
        || path == attached
        || path
            .strip_prefix(attached)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// What one walk of `/proc` found.
#[derive(Debug, Default)]
pub struct Found {
    /// Network namespaces (nsfs `(device, inode)`) with a process inside cgroup `attached`,
    /// with one of those processes: the ones to serve.
    pub attached: HashMap<(u64, u64), u32>,
    /// Network namespaces with any process at all: the ones still alive. (A namespace is
    /// released only when this no longer has it, so a process whose cgroup path cannot be
    /// read the same way from the agent's cgroup namespace does not make its namespace flap.)
    pub alive: HashSet<(u64, u64)>,
}

/// Walks `/proc`: the network namespaces with processes inside cgroup `attached` (relative to
/// the cgroup2 root, e.g. `/kubepods.slice`, or `/` for everything), and every live one.
/// Processes that exit during the walk are skipped.
pub fn namespaces(attached: &str) -> Found {
    let mut found = Found::default();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let Ok(m) = std::fs::metadata(path.join("ns/net")) else {
            continue;
        };
        let id = (m.dev(), m.ino());
        found.alive.insert(id);
        if cgroup_of(&path).is_some_and(|cg| within(&cg, attached)) {
            found.attached.entry(id).or_insert(pid);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_containment_is_by_path_component() {
        assert!(within("/kubepods.slice/pod1.slice", "/kubepods.slice"));
        assert!(within("/kubepods.slice", "/kubepods.slice/"));
        assert!(!within("/kubepods.slice2", "/kubepods.slice"));
        assert!(within("/anything", "/"));
        assert!(within("/anything", ""));
    }

    #[test]
    fn this_process_is_found_in_its_own_cgroup() {
        let mine = cgroup_of(Path::new("/proc/self")).expect("cgroup v2 line");
        let found = namespaces(&mine);
        let me = std::fs::metadata("/proc/self/ns/net").unwrap();
        let id = (me.dev(), me.ino());
        assert!(found.attached.contains_key(&id), "{found:?}");
        assert!(found.alive.contains(&id));
        // A cgroup nobody is in: nothing to serve, but namespaces are still alive.
        let none = namespaces("/llmtrace-no-such-cgroup");
        assert!(none.attached.is_empty());
        assert!(none.alive.contains(&id));
    }
}
