//! CPU time and memory of a process and its descendants, from `/proc` (benchmarks compare
//! proxies by CPU per request; machine-wide `/proc/stat` under-counts on shared VMs).

use std::time::Duration;

/// Kernel clock ticks per second (`getconf CLK_TCK`; 100 on Linux when it cannot be asked).
pub fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

/// The fields of `/proc/PID/stat` after the command name (field 3 onwards).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or parentheses.
    let (_, rest) = text.rsplit_once(") ")?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// `pid` and every live descendant of it.
pub fn tree(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|p| Some((p, stat_fields(p)?.get(1)?.parse().ok()?)))
                .collect()
        })
        .unwrap_or_default();
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out
}

/// User + system CPU time used so far by `pid` and its live descendants.
pub fn cpu_time(pid: u32) -> Duration {
    let ticks: u64 = tree(pid)
        .into_iter()
        .filter_map(|p| {
            let f = stat_fields(p)?;
            // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    let tck = clock_ticks();
    Duration::from_secs(ticks / tck)
        + Duration::from_secs(ticks % tck) / u32::try_from(tck).unwrap_or(100)
}

/// Time on a CPU so far of every thread of `pid` and its live descendants, in nanoseconds
/// (`/proc/PID/task/TID/schedstat`): precise where [`cpu_time`] counts 10 ms ticks, for
/// figures of a few hundred microseconds per request over few requests.
pub fn run_time(pid: u32) -> Duration {
    tree(pid)
        .into_iter()
        .filter_map(|p| std::fs::read_dir(format!("/proc/{p}/task")).ok())
        .flat_map(std::iter::Iterator::flatten)
        .filter_map(|task| schedstat(&task.path().join("schedstat")))
        .sum()
}

/// Time on a CPU so far of each thread of `pid` (not its descendants), by thread name
/// (`/proc/PID/task/TID/comm`, which the kernel cuts to 15 bytes), summed over threads of
/// the same name.
pub fn run_time_by_thread(pid: u32) -> Vec<(String, Duration)> {
    let mut by_name: Vec<(String, Duration)> = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter();
    for task in tasks.flatten().flatten() {
        let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else {
            continue;
        };
        let Some(t) = schedstat(&task.path().join("schedstat")) else {
            continue;
        };
        let name = name.trim_end().to_owned();
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, sum)) => *sum += t,
            None => by_name.push((name, t)),
        }
    }
    by_name
}

/// Time on a CPU so far of the calling thread (`CLOCK_THREAD_CPUTIME_ID`); `None` where the
/// kernel has no such clock. Not the thread's `schedstat`: the kernel adds the running slice
/// to that only at a tick or a switch, so a few milliseconds of work could read as none.
pub fn thread_run_time() -> Option<Duration> {
    use nix::time::{ClockId, clock_gettime};

    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    Some(Duration::new(
        u64::try_from(t.tv_sec()).ok()?,
        u32::try_from(t.tv_nsec()).ok()?,
    ))
}

/// The time on a CPU in a `schedstat` file (its first field, in ns).
fn schedstat(path: &std::path::Path) -> Option<Duration> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(Duration::from_nanos(
        text.split_whitespace().next()?.parse().ok()?,
    ))
}

/// Resident memory of `pid` and its live descendants, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    tree(pid)
        .into_iter()
        .filter_map(|p| {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_process_has_cpu_and_memory() {
        let me = std::process::id();
        // Spin until this thread itself has run 50 ms, by its own schedstat: wall time would
        // not do, as a thread waiting for a core (other tests, a shared VM) runs less.
        let own = || super::thread_run_time().expect("this kernel has schedstat");
        let spin = std::time::Instant::now();
        while own() < std::time::Duration::from_millis(50) {
            assert!(
                spin.elapsed() < std::time::Duration::from_secs(30),
                "never ran 50 ms"
            );
        }
        let ran = own();
        assert!(super::cpu_time(me) > std::time::Duration::ZERO);
        // The process's total, read later, holds at least this thread's.
        assert!(super::run_time(me) >= ran);
        assert!(super::rss_kib(me) > 0);
        assert_eq!(super::tree(me)[0], me);
    }

    #[test]
    fn threads_are_told_apart_by_name() {
        let (ran_tx, ran_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::Builder::new()
            .name("procstat-spin".into())
            .spawn(move || {
                let own = || super::thread_run_time().expect("this kernel has schedstat");
                while own() < std::time::Duration::from_millis(30) {}
                ran_tx.send(own()).unwrap();
                // Blocked here (switched out, so its schedstat is current) until read.
                let _ = done_rx.recv();
            })
            .unwrap();
        let ran = ran_rx.recv().unwrap();
        let threads = super::run_time_by_thread(std::process::id());
        done_tx.send(()).unwrap();
        worker.join().unwrap();
        let spin = threads.iter().find(|(n, _)| n == "procstat-spin");
        assert!(spin.is_some_and(|(_, t)| *t >= ran), "{threads:?}");
        // Each name once.
        let mut names: Vec<_> = threads.iter().map(|(n, _)| n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), threads.len());
    }
}
