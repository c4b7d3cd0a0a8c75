//! Doing something inside another network namespace.
//!
//! A socket belongs to the namespace of the thread that created it, for its whole life; only
//! creation needs to happen "inside". Each job runs on a short-lived thread of its own that
//! joins the namespace and exits afterwards, so no thread of the runtime ever changes namespace
//! and nothing has to be switched back.

use std::{fs::File, io, os::fd::AsFd, os::unix::net::UnixDatagram, sync::Arc};

use nix::sched::{CloneFlags, setns};

/// Runs `f` on a fresh thread that has joined the network namespace `ns` (an open
/// `/proc/<pid>/ns/net` or bind mount), and returns its result.
pub async fn run_in<T: Send + 'static>(
    ns: Arc<File>,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("llmtrace-netns".into())
        .spawn(move || {
            let result = setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)
                .and_then(|()| f());
            let _ = tx.send(result);
        })?;
    rx.await
        .map_err(|_| io::Error::other("the namespace thread ended without an answer"))?
}

/// The cookie of the calling thread's network namespace (what `bpf_get_netns_cookie` returns
/// for its sockets).
pub fn current_cookie() -> io::Result<u64> {
    // Any socket will do, and an unbound Unix one touches no port or address.
    let probe = UnixDatagram::unbound()?;
    llmtrace_common::netns_cookie(probe.as_fd())
}

/// `(device, inode)` of a namespace file: what tells namespaces apart in `/proc/*/ns/net`.
pub fn identity(ns: &File) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = ns.metadata()?;
    Ok((m.dev(), m.ino()))
}
