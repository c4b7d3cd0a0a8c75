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

fn sysctl_if(iface: &str, key: &str, value: &str) {
    let path = format!("/proc/sys/net/ipv4/conf/{iface}/{key}");
    std::fs::write(&path, value).unwrap_or_else(|e| panic!("writing {path}: {e}"));
}

/// A small routed network made of test namespaces only, for pod tests:
///
/// - "the internet": a namespace holding the fake provider at `198.19.<L>.2`, joined to the
///   host by a veth pair (`198.19.<L>.0/30`);
/// - pods: namespaces joined to the host by veth pairs (`198.18.<L>.2k/31`, the pod on the odd
///   address), each with a route to the internet's `/30` through the host and nothing else.
///
/// The host forwards between them with forwarding switched on for these veths only (the
/// host-wide `ip_forward` is left alone), and the internet namespace routes `198.18.<L>.0/24`
/// back. No route anywhere points off the machine, and deleting the namespaces removes every
/// veth and route with them.
#[derive(Debug)]
pub struct Lab {
    /// The internet namespace.
    pub internet: TestNetns,
    /// The provider's address inside it.
    pub provider_ip: std::net::Ipv4Addr,
    block: u8,
    tag: String,
    next_pod: AtomicUsize,
}

/// One simulated pod's network namespace.
#[derive(Debug)]
pub struct PodNet {
    /// Its namespace (deleted on drop, taking its veth pair along).
    pub ns: TestNetns,
    /// Its address.
    pub ip: std::net::Ipv4Addr,
    /// The host side of its veth pair. The kernel deletes it only when the namespace itself
    /// is destroyed, so its presence tells whether anything still holds the namespace.
    pub host_if: String,
}

impl Default for Lab {
    fn default() -> Self {
        let n = NEXT_LAB.fetch_add(1, Ordering::SeqCst);
        // A distinct /24 per lab: per process by pid, per test by counter.
        let block = u8::try_from((std::process::id() as usize * 8 + n) % 256).expect("u8");
        let tag = format!("{:x}{n}", std::process::id() & 0xffff);
        let internet = TestNetns::default();
        let host_if = format!("lt{tag}i");
        ip(&[
            "link",
            "add",
            &host_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &internet.name,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("198.19.{block}.1/30"),
            "dev",
            &host_if,
        ]);
        ip(&["link", "set", &host_if, "up"]);
        sysctl_if(&host_if, "forwarding", "1");
        ip_in(
            &internet.name,
            &[
                "addr",
                "add",
                &format!("198.19.{block}.2/30"),
                "dev",
                "eth0",
            ],
        );
        ip_in(&internet.name, &["link", "set", "eth0", "up"]);
        ip_in(
            &internet.name,
            &[
                "route",
                "add",
                &format!("198.18.{block}.0/24"),
                "via",
                &format!("198.19.{block}.1"),
            ],
        );
        Self {
            internet,
            provider_ip: std::net::Ipv4Addr::new(198, 19, block, 2),
            block,
            tag,
            next_pod: AtomicUsize::new(0),
        }
    }
}

impl Lab {
    /// A new pod namespace (at most 128 per lab).
    pub fn pod(&self) -> PodNet {
        let k = self.next_pod.fetch_add(1, Ordering::SeqCst);
        assert!(k < 128, "a lab has room for 128 pods");
        let k = u8::try_from(k).expect("u8");
        let ns = TestNetns::default();
        let host_if = format!("lt{}p{k}", self.tag);
        let b = self.block;
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("198.18.{b}.{}/31", 2 * k),
            "dev",
            &host_if,
        ]);
        ip(&["link", "set", &host_if, "up"]);
        sysctl_if(&host_if, "forwarding", "1");
        ip_in(
            &ns.name,
            &[
                "addr",
                "add",
                &format!("198.18.{b}.{}/31", 2 * k + 1),
                "dev",
                "eth0",
            ],
        );
        ip_in(&ns.name, &["link", "set", "eth0", "up"]);
        ip_in(
            &ns.name,
            &[
                "route",
                "add",
                &format!("198.19.{b}.0/30"),
                "via",
                &format!("198.18.{b}.{}", 2 * k),
            ],
        );
        PodNet {
            ns,
            ip: std::net::Ipv4Addr::new(198, 18, b, 2 * k + 1),
            host_if,
        }
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
