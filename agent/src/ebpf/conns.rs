//! Connection records written by the kernel hook, read by the agent on accept.

use std::{net::SocketAddr, sync::Mutex};

use aya::maps::{HashMap, MapData, MapError};
use llmtrace_common::{ClientKey, ConnRecord};
use tracing::debug;

use crate::transport::{
    OriginalDst, ProcessInfo, Redirect,
    orig_dst::{kernel_addr, socket_addr_from_kernel},
};

/// The two connection tables.
pub(super) struct ConnMaps {
    pub by_client: HashMap<MapData, ClientKey, ConnRecord>,
    pub by_cookie: HashMap<MapData, u64, ConnRecord>,
}

/// [`OriginalDst`] over the kernel's records.
pub struct KernelOriginalDst {
    maps: Mutex<ConnMaps>,
}

impl std::fmt::Debug for KernelOriginalDst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelOriginalDst").finish_non_exhaustive()
    }
}

impl KernelOriginalDst {
    pub(super) fn new(maps: ConnMaps) -> Self {
        Self {
            maps: Mutex::new(maps),
        }
    }

    /// Entries in the by-cookie table (connections the kernel tracks) and the by-client table
    /// (records not yet picked up). Walks the maps: for status and tests, not the data path.
    pub fn table_sizes(&self) -> (usize, usize) {
        let maps = self.maps.lock().expect("conn maps poisoned");
        (maps.by_cookie.keys().count(), maps.by_client.keys().count())
    }
}

impl OriginalDst for KernelOriginalDst {
    fn lookup(&self, netns_cookie: u64, peer: SocketAddr) -> Option<Redirect> {
        let key = ClientKey {
            netns_cookie,
            addr: kernel_addr(peer.ip()),
            port: peer.port(),
            reserved: 0,
            reserved2: 0,
        };
        let mut maps = self.maps.lock().expect("conn maps poisoned");
        let record = match maps.by_client.get(&key, 0) {
            Ok(r) => r,
            Err(MapError::KeyNotFound) => return None,
            Err(e) => {
                debug!(error = %e, "connection record lookup failed");
                return None;
            }
        };
        // The agent has what it needs; the by-cookie record stays for getpeername() until the
        // socket closes (sock_ops removes it then).
        let _ = maps.by_client.remove(&key);
        Some(redirect_from(&record))
    }
}

fn redirect_from(r: &ConnRecord) -> Redirect {
    let comm_len = r.comm.iter().position(|b| *b == 0).unwrap_or(r.comm.len());
    Redirect {
        orig_dst: socket_addr_from_kernel(r.orig_addr, r.orig_port),
        provider_index: r.provider_index,
        process: ProcessInfo {
            pid: r.tgid,
            tid: r.pid,
            uid: r.uid,
            gid: r.gid,
            comm: String::from_utf8_lossy(&r.comm[..comm_len]).into_owned(),
            cgroup_id: r.cgroup_id,
            netns_cookie: r.netns_cookie,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_redirects() {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        let r = ConnRecord {
            orig_addr: llmtrace_common::v4_mapped([127, 0, 0, 2]),
            orig_port: 443,
            family: llmtrace_common::AF_INET,
            pid: 11,
            tgid: 10,
            uid: 1000,
            gid: 1000,
            provider_index: 3,
            cgroup_id: 77,
            cookie: 5,
            netns_cookie: 6,
            connect_ns: 1,
            comm,
        };
        let d = redirect_from(&r);
        assert_eq!(d.orig_dst, "127.0.0.2:443".parse().unwrap());
        assert_eq!(d.process.pid, 10);
        assert_eq!(d.process.tid, 11);
        assert_eq!(d.process.comm, "curl");
        assert_eq!(d.provider_index, 3);
    }
}
