//! The namespaces the agent serves, by netns cookie: what the upstream socket factory asks
//! to open a provider connection from the app's own namespace.

use std::{
    collections::HashMap,
    fs::File,
    sync::{Arc, Mutex, OnceLock},
    time::Instant,
};

use tokio_util::sync::CancellationToken;

/// One namespace with an agent listener in it.
#[derive(Debug)]
pub struct Namespace {
    /// Its cookie (never reused while the kernel runs).
    pub cookie: u64,
    /// `(device, inode)` of its nsfs file, as `/proc/<pid>/ns/net` shows it.
    pub id: (u64, u64),
    /// Port of the `127.0.0.1` listener there.
    pub port4: u16,
    /// Port of the `::1` listener there (0: none).
    pub port6: u16,
    /// When it became ready.
    pub ready_at: Instant,
    /// The namespace, held open only while the agent serves it (released with the entry).
    pub(super) file: Arc<File>,
    /// Stops its accept loops.
    pub(super) cancel: CancellationToken,
}

/// Why no upstream socket can be opened for a connection.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("network namespace {0:#x} is no longer served (its processes are gone)")]
    Gone(u64),
}

/// Every served namespace, and the agent's own.
#[derive(Debug)]
pub struct Registry {
    own_cookie: u64,
    entries: Mutex<HashMap<u64, Arc<Namespace>>>,
}

static GLOBAL: OnceLock<Arc<Registry>> = OnceLock::new();

impl Registry {
    /// An empty registry for an agent living in namespace `own_cookie`.
    pub fn new(own_cookie: u64) -> Self {
        Self {
            own_cookie,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Makes `registry` the process-wide one (namespaces are process-wide state). The first
    /// call wins; later calls return false.
    pub fn install(registry: Arc<Self>) -> bool {
        GLOBAL.set(registry).is_ok()
    }

    /// The process-wide registry, once installed.
    pub fn global() -> Option<&'static Arc<Self>> {
        GLOBAL.get()
    }

    /// Cookie of the agent's own namespace.
    pub fn own_cookie(&self) -> u64 {
        self.own_cookie
    }

    /// The served namespace `cookie`.
    pub fn get(&self, cookie: u64) -> Option<Arc<Namespace>> {
        self.lock().get(&cookie).cloned()
    }

    /// The served namespace whose nsfs identity is `id`.
    pub fn by_id(&self, id: (u64, u64)) -> Option<Arc<Namespace>> {
        self.lock().values().find(|n| n.id == id).cloned()
    }

    /// Every served namespace.
    pub fn all(&self) -> Vec<Arc<Namespace>> {
        self.lock().values().cloned().collect()
    }

    /// Number of served namespaces.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no namespace is served.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub(super) fn insert(&self, ns: Arc<Namespace>) {
        self.lock().insert(ns.cookie, ns);
    }

    pub(super) fn remove(&self, cookie: u64) -> Option<Arc<Namespace>> {
        self.lock().remove(&cookie)
    }

    /// Where sockets for a connection from namespace `cookie` must be created: `None` for the
    /// agent's own namespace (and for 0, "unknown", used where no kernel record exists), else
    /// the namespace file to join. A namespace that is no longer served is an error: opening
    /// the connection from the agent's namespace instead would bypass that namespace's routes
    /// and firewall.
    pub fn socket_namespace(&self, cookie: u64) -> Result<Option<Arc<File>>, NamespaceError> {
        if cookie == 0 || cookie == self.own_cookie {
            return Ok(None);
        }
        self.get(cookie)
            .map(|n| Some(n.file.clone()))
            .ok_or(NamespaceError::Gone(cookie))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Namespace>>> {
        self.entries.lock().expect("namespace registry poisoned")
    }
}

/// [`Registry::socket_namespace`] on the process-wide registry; with none installed (tests
/// running the proxy in-process), everything is the agent's own namespace.
pub fn socket_namespace(cookie: u64) -> Result<Option<Arc<File>>, NamespaceError> {
    Registry::global().map_or(Ok(None), |r| r.socket_namespace(cookie))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cookie: u64) -> Arc<Namespace> {
        Arc::new(Namespace {
            cookie,
            id: (1, cookie),
            port4: 1000,
            port6: 0,
            ready_at: Instant::now(),
            file: Arc::new(File::open("/proc/self/ns/net").unwrap()),
            cancel: CancellationToken::new(),
        })
    }

    #[test]
    fn own_and_unknown_cookies_mean_here_and_released_ones_are_refused() {
        let r = Registry::new(7);
        assert!(r.socket_namespace(0).unwrap().is_none());
        assert!(r.socket_namespace(7).unwrap().is_none());
        assert!(matches!(
            r.socket_namespace(9),
            Err(NamespaceError::Gone(9))
        ));
        r.insert(entry(9));
        assert!(r.socket_namespace(9).unwrap().is_some());
        assert_eq!(r.by_id((1, 9)).unwrap().cookie, 9);
        assert!(r.remove(9).is_some());
        assert!(r.socket_namespace(9).is_err());
        assert!(r.is_empty());
    }
}
