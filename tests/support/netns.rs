//! A network namespace per test (`ip netns`), deleted afterwards.

use std::{
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A named network namespace with its loopback up.
#[derive(Debug)]
pub struct TestNetns {
    /// Its name under /run/netns.
    pub name: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Default for TestNetns {
    /// Creates `llmt-<pid>-<n>`.
    fn default() -> Self {
        let name = format!(
            "llmt-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Self { name }
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

impl TestNetns {
    /// The namespace file under /run/netns.
    pub fn path(&self) -> std::path::PathBuf {
        std::path::Path::new("/run/netns").join(&self.name)
    }

    /// A TCP listener bound to `addr` inside this namespace (by a thread that joined it; the
    /// socket stays in the namespace whichever thread uses it later).
    pub fn bind_tcp(&self, addr: std::net::SocketAddr) -> std::net::TcpListener {
        let file = std::fs::File::open(self.path()).expect("open netns");
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            std::net::TcpListener::bind(addr).expect("bind inside the namespace")
        })
        .join()
        .expect("netns thread")
    }
}

static NEXT_LAB: AtomicUsize = AtomicUsize::new(0);

fn ip_in(ns: &str, args: &[&str]) {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    ip(&all);
}

/// Lets the host route between the test's veths, and only those: IPv4 forwarding per
/// interface, and IPv6 `force_forwarding` (per interface, Linux 6.17+), so the host-wide
/// `ip_forward` and `all.forwarding` stay as they were.
fn forward_on(iface: &str) {
    for path in [
        format!("/proc/sys/net/ipv4/conf/{iface}/forwarding"),
        format!("/proc/sys/net/ipv6/conf/{iface}/force_forwarding"),
    ] {
        std::fs::write(&path, "1").unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
}

/// Joins namespace `ns` to the host with a veth pair: `host_if` on the host, `eth0` inside,
/// with the given addresses (IPv6 without duplicate address detection, usable at once), and
/// forwarding on the host side.
fn link(ns: &str, host_if: &str, host_addrs: [&str; 2], inside_addrs: [&str; 2]) {
    ip(&[
        "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns,
    ]);
    ip(&["addr", "add", host_addrs[0], "dev", host_if]);
    ip(&["addr", "add", host_addrs[1], "dev", host_if, "nodad"]);
    ip(&["link", "set", host_if, "up"]);
    forward_on(host_if);
    ip_in(ns, &["addr", "add", inside_addrs[0], "dev", "eth0"]);
    ip_in(
        ns,
        &["addr", "add", inside_addrs[1], "dev", "eth0", "nodad"],
    );
    ip_in(ns, &["link", "set", "eth0", "up"]);
}

/// `iptables`/`ip6tables` rules letting the host forward to and from interfaces starting with
/// `prefix` (dockerd sets the FORWARD policy to DROP). Without them there is nothing to open;
/// true when every rule was added (so they are removed again).
fn forward_rules(action: &str, prefix: &str) -> bool {
    let wildcard = format!("{prefix}+");
    let mut all = true;
    for tool in ["iptables", "ip6tables"] {
        for dir in ["-i", "-o"] {
            let status = Command::new(tool)
                .args(["-w", action, "FORWARD", dir, &wildcard, "-j", "ACCEPT"])
                .stderr(std::process::Stdio::null())
                .status();
            all &= status.is_ok_and(|s| s.success());
        }
    }
    all
}

/// A small routed network made of test namespaces only, for pod tests:
///
/// - "the internet": a namespace holding the fake provider at `198.19.<L>.2` and
///   `2001:2:<L>:ffff::2`, joined to the host by a veth pair (`198.19.<L>.0/30`,
///   `2001:2:<L>:ffff::/64`);
/// - pods: namespaces joined to the host by veth pairs (`198.18.<L>.2k/31` for the first 128,
///   then `198.19.<L>.64/26` and `.128/25`, the pod on the odd address; `2001:2:<L>:<k>::/64`,
///   the pod on `::2`), each with routes to the internet's prefixes through the host and
///   nothing else;
/// - room for a container engine's bridge network: [`Lab::bridge`] (`198.19.<L>.16/28`).
///
/// IPv4 addresses come from the benchmarking block 198.18.0.0/15, IPv6 ones from its IPv6
/// counterpart 2001:2::/48. The host forwards between them with forwarding switched on for
/// these veths only (see `forward_on`), and the internet namespace routes the pods' prefixes
/// back. When iptables filters forwarding (dockerd sets the FORWARD policy to DROP), the lab
/// inserts ACCEPT rules for its own interfaces only and removes them when dropped. No route
/// anywhere points off the machine, and deleting the namespaces removes every veth and route
/// with them.
#[derive(Debug)]
pub struct Lab {
    /// The internet namespace.
    pub internet: TestNetns,
    /// The provider's address inside it.
    pub provider_ip: std::net::Ipv4Addr,
    /// The provider's IPv6 address inside it.
    pub provider_ip6: std::net::Ipv6Addr,
    block: u8,
    tag: String,
    next_pod: AtomicUsize,
    firewall_opened: bool,
    /// Holds the block against every other lab on the machine (last, so it is released
    /// after the namespaces' deletion was requested).
    _lease: std::fs::File,
}

/// One simulated pod's network namespace.
#[derive(Debug)]
pub struct PodNet {
    /// Its namespace (deleted on drop, taking its veth pair along).
    pub ns: TestNetns,
    /// Its address.
    pub ip: std::net::Ipv4Addr,
    /// Its IPv6 address.
    pub ip6: std::net::Ipv6Addr,
    /// The host's address on its veth pair (on-link for the pod).
    pub host_ip: std::net::Ipv4Addr,
    /// The host side of its veth pair. The kernel deletes it only when the namespace itself
    /// is destroyed, so its presence tells whether anything still holds the namespace.
    pub host_if: String,
}

impl Default for Lab {
    fn default() -> Self {
        let n = NEXT_LAB.fetch_add(1, Ordering::SeqCst);
        // Where to start looking: apart per process by pid, per test by counter.
        let (block, lease) = lease_block(std::process::id() as usize * 8 + n);
        let tag = format!("{:x}{n}", std::process::id() & 0xffff);
        let firewall_opened = forward_rules("-I", &format!("lt{tag}"));
        let internet = TestNetns::default();
        let host_if = format!("lt{tag}i");
        link(
            &internet.name,
            &host_if,
            [
                &format!("198.19.{block}.1/30"),
                &format!("2001:2:{block:x}:ffff::1/64"),
            ],
            [
                &format!("198.19.{block}.2/30"),
                &format!("2001:2:{block:x}:ffff::2/64"),
            ],
        );
        let ns = internet.name.as_str();
        ip_in(
            ns,
            &[
                "route",
                "add",
                &format!("198.18.{block}.0/24"),
                "via",
                &format!("198.19.{block}.1"),
            ],
        );
        // The rest of 198.19.<L>.0/24: pods beyond the 128th and the container bridge.
        ip_in(
            ns,
            &[
                "route",
                "add",
                &format!("198.19.{block}.0/24"),
                "via",
                &format!("198.19.{block}.1"),
            ],
        );
        ip_in(
            ns,
            &[
                "-6",
                "route",
                "add",
                &format!("2001:2:{block:x}::/48"),
                "via",
                &format!("2001:2:{block:x}:ffff::1"),
            ],
        );
        Self {
            provider_ip: std::net::Ipv4Addr::new(198, 19, block, 2),
            provider_ip6: format!("2001:2:{block:x}:ffff::2").parse().expect("ipv6"),
            internet,
            block,
            tag,
            next_pod: AtomicUsize::new(0),
            firewall_opened,
            _lease: lease,
        }
    }
}

/// The first block from `hint` on that no other lab on the machine holds and the host has
/// no route in, with the lock file that holds it. Test processes run one after another and
/// benchmarks beside them: a block derived from the pid alone could be another process's.
/// And a namespace is torn down asynchronously after its process exits, so its veth and
/// routes outlive it for a moment (10–30 ms measured here, idle): a new lab on that block
/// would have its traffic routed into the old namespace, where nothing listens.
fn lease_block(hint: usize) -> (u8, std::fs::File) {
    for i in 0..256 {
        let block = u8::try_from((hint + i) % 256).expect("u8");
        let path = std::env::temp_dir().join(format!("llmtrace-test-lab-{block}.lock"));
        let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
        else {
            continue;
        };
        if file.try_lock().is_ok() && !host_routes_into(block) {
            return (block, file);
        }
    }
    panic!("no free lab block: every 198.19.<L>.0/24 is held or routed on this host");
}

/// Whether any host route (local addresses included) lies in lab block `block`'s prefixes.
fn host_routes_into(block: u8) -> bool {
    let show = |family: &str| {
        Command::new("ip")
            .args([family, "route", "show", "table", "all"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .expect("run ip (iproute2)")
    };
    let v4 = show("-4");
    let v6 = show("-6");
    v4.contains(&format!("198.18.{block}."))
        || v4.contains(&format!("198.19.{block}."))
        || v6.contains(&format!("2001:2:{block:x}:"))
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.firewall_opened {
            forward_rules("-D", &format!("lt{}", self.tag));
        }
    }
}

impl Lab {
    /// Most pods a lab has room for.
    pub const MAX_PODS: usize = 224;

    /// A new pod namespace (at most [`Lab::MAX_PODS`] per lab).
    pub fn pod(&self) -> PodNet {
        let k = self.next_pod.fetch_add(1, Ordering::SeqCst);
        assert!(
            k < Self::MAX_PODS,
            "a lab has room for {} pods",
            Self::MAX_PODS
        );
        let k = u8::try_from(k).expect("u8");
        let ns = TestNetns::default();
        let host_if = format!("lt{}p{k}", self.tag);
        let b = self.block;
        // The host side of pod k's /31 and the pod's own address.
        let (host, pod) = if k < 128 {
            (
                std::net::Ipv4Addr::new(198, 18, b, 2 * k),
                std::net::Ipv4Addr::new(198, 18, b, 2 * k + 1),
            )
        } else {
            let j = 64 + 2 * (k - 128);
            (
                std::net::Ipv4Addr::new(198, 19, b, j),
                std::net::Ipv4Addr::new(198, 19, b, j + 1),
            )
        };
        link(
            &ns.name,
            &host_if,
            [&format!("{host}/31"), &format!("2001:2:{b:x}:{k:x}::1/64")],
            [&format!("{pod}/31"), &format!("2001:2:{b:x}:{k:x}::2/64")],
        );
        ip_in(
            &ns.name,
            &[
                "route",
                "add",
                &format!("198.19.{b}.0/30"),
                "via",
                &host.to_string(),
            ],
        );
        ip_in(
            &ns.name,
            &[
                "-6",
                "route",
                "add",
                &format!("2001:2:{b:x}:ffff::/64"),
                "via",
                &format!("2001:2:{b:x}:{k:x}::1"),
            ],
        );
        PodNet {
            ip: pod,
            host_ip: host,
            ip6: format!("2001:2:{b:x}:{k:x}::2").parse().expect("ipv6"),
            ns,
            host_if,
        }
    }
}

/// Room in a [`Lab`] for one container engine bridge network.
#[derive(Debug, Clone)]
pub struct Bridge {
    /// `198.19.<L>.16/28`.
    pub subnet: String,
    /// `198.19.<L>.17`, the bridge's own (host) address.
    pub gateway: std::net::Ipv4Addr,
    /// A bridge interface name the lab's firewall rules already cover.
    pub name: String,
    /// The prefix a container on the bridge needs a route to: the internet's link.
    pub internet: String,
}

impl Lab {
    /// Room for a container engine's bridge network, routed back from the internet.
    pub fn bridge(&self) -> Bridge {
        let b = self.block;
        Bridge {
            subnet: format!("198.19.{b}.16/28"),
            gateway: std::net::Ipv4Addr::new(198, 19, b, 17),
            name: format!("lt{}d", self.tag),
            internet: format!("198.19.{b}.0/30"),
        }
    }

    /// Lets the host route packets arriving on `iface` (a bridge the test created), as for
    /// the lab's own veths; the setting goes away with the interface.
    pub fn forward_from(&self, iface: &str) {
        forward_on(iface);
    }
}

/// A long-lived process inside a cgroup and a network namespace, like a pod's pause
/// container; killed when dropped.
#[derive(Debug)]
pub struct Pause {
    child: std::process::Child,
}

impl Pause {
    /// Starts `sleep` in `cgroup` (joined first) and then in namespace `ns`.
    pub fn start(cgroup: &crate::cgroup::TestCgroup, ns: &TestNetns) -> Self {
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec ip netns exec {} sleep 600",
                cgroup.path.display(),
                ns.name
            ))
            .spawn()
            .expect("spawn a pause process");
        Self { child }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Pause {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
