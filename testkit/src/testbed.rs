//! A multi-node testbed (issue 9): N xsknet nodes as network namespaces whose uplinks
//! (`eth0` inside each node) are veths on an underlay bridge in the test's own (root)
//! namespace, an xsknetd per node with a generated `node.yaml`, pods made through the
//! real `xsknet` CNI plugin, and the cluster's datastore: none (static `overlay.peers`)
//! or a real etcd of one or three members listening on the bridge's addresses.
//!
//! Addresses: the underlay is `10.K.0.0/24` with a K chosen per testbed (free in this
//! namespace's routing table); the bridge holds `.1` (and `.2`, `.3` for the etcd
//! members of a three-member cluster), node `i` (from 0) is `.(11 + i)`. Node `i`'s pod
//! prefix is `10.244.(i + 1).0/24` when configured; in etcd mode with
//! [`PodCidrs::Claimed`] the daemon claims one from `10.244.0.0/16`. Names (namespaces,
//! the bridge, its veth ends) all start with the testbed's prefix.
//!
//! Cleanup: [`Testbed`]'s `Drop` runs CNI DEL for every pod it made, stops every daemon
//! by pid, deletes every namespace (which takes the veths with it), the bridge, and the
//! etcd members (by their `Child`), also when the test panicked. Traffic goes only to
//! addresses inside the namespaces and on the bridge this testbed made.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::etcd::EtcdCluster;
use crate::{sh, try_sh, workspace_bin, Netns, NodeDaemon};
use xsknet_sys::netns::run_in_netns;

/// Where the nodes find each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datastore {
    /// No datastore: every node's `overlay.peers` lists the others (works without etcd).
    Static,
    /// etcd with this many members (1 or 3) on the bridge's addresses.
    Etcd { members: usize },
}

/// How nodes get their pod prefix in etcd mode (static mode always configures it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodCidrs {
    /// `podCidr` in every node.yaml: `10.244.(i + 1).0/24`.
    Configured,
    /// No `podCidr`: each daemon claims a prefix of `overlay.clusterCidr` in etcd.
    Claimed,
}

/// What to build.
#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: usize,
    pub datastore: Datastore,
    pub pod_cidrs: PodCidrs,
    /// VXLAN UDP port (8472: Linux/flannel default).
    pub port: u16,
    pub vni: u32,
    /// `datastore.leaseTtlSeconds` in etcd mode.
    pub lease_ttl_seconds: u32,
    /// Extra lines appended to every node.yaml.
    pub extra_yaml: String,
}

impl Options {
    pub fn new(nodes: usize, datastore: Datastore) -> Options {
        Options {
            nodes,
            datastore,
            pod_cidrs: PodCidrs::Configured,
            port: 8472,
            vni: 1,
            lease_ttl_seconds: 5,
            extra_yaml: String::new(),
        }
    }
}

/// One xsknet node: its namespace, its daemon, its addresses.
pub struct Node {
    /// `n1`, `n2`, … (`nodeName` in etcd mode; the peer name in static mode).
    pub name: String,
    /// Declared before `ns`: dropped (stopped) first.
    pub daemon: NodeDaemon,
    pub ns: Netns,
    pub underlay_ip: Ipv4Addr,
    /// The VTEP MAC the daemon derives from its underlay address (`02:78:` + address).
    pub vtep_mac: String,
    /// The configured pod prefix (None when claimed: ask [`Testbed::pod_cidr`]).
    pub pod_cidr: Option<String>,
}

/// A pod made by the CNI plugin on a node. Plain data: its namespace is owned by the
/// [`Testbed`] (removed on its drop).
#[derive(Clone, Debug)]
pub struct Pod {
    /// Index of its node in [`Testbed::nodes`].
    pub node: usize,
    pub netns: String,
    pub namespace: String,
    pub name: String,
    pub ip: Ipv4Addr,
    pub host_if: String,
    container_id: String,
    cni_args: String,
}

impl Pod {
    /// `/run/netns/NAME`.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.netns))
    }

    /// Run `f` inside the pod's namespace (sockets it makes stay there).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        run_in_netns(&self.netns_path(), f).expect("enter pod netns")
    }

    /// `ip netns exec POD args…`
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        let mut v = vec!["ip", "netns", "exec", &self.netns];
        v.extend_from_slice(args);
        try_sh(&v)
    }

    /// ping from this pod; true when every echo got a reply.
    pub fn ping(&self, dst: Ipv4Addr, count: u32) -> bool {
        let (c, d) = (count.to_string(), dst.to_string());
        self.exec(&["ping", "-c", &c, "-i", "0.2", "-W", "2", "-q", &d])
            .status
            .success()
    }

    /// Poll with single pings until one answers; false after `timeout`.
    pub fn ping_until(&self, dst: Ipv4Addr, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.ping(dst, 1) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
        }
    }
}

/// FNV-1a 64 over `data`: the checksum both ends of a transfer compute.
pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A TCP transfer's two ends as each saw them.
#[derive(Debug, PartialEq, Eq)]
pub struct Transfer {
    pub sent: usize,
    pub sent_sum: u64,
    pub received: usize,
    pub received_sum: u64,
}

impl Transfer {
    /// Every byte arrived, in order, unchanged.
    pub fn intact(&self) -> bool {
        self.sent == self.received && self.sent_sum == self.received_sum
    }
}

/// Send `bytes` of a pseudo-random pattern over TCP from `a` to a listener in `b`
/// (port `port`); each side checksums what it sent or read.
pub fn tcp_transfer(a: &Pod, b: &Pod, port: u16, bytes: usize) -> Transfer {
    let bip = b.ip;
    let listener: TcpListener = b.run(|| TcpListener::bind((bip, port)).expect("bind in pod"));
    let server = std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return (0, checksum(&[]));
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let mut got = Vec::with_capacity(bytes);
        let _ = s.read_to_end(&mut got);
        (got.len(), checksum(&got))
    });
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ bytes as u64;
    let data: Vec<u8> = (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let sent = a.run(|| {
        let Ok(mut c) = TcpStream::connect_timeout(&(bip, port).into(), Duration::from_secs(5))
        else {
            // Unblock the listener so the server thread ends.
            let _ = TcpStream::connect_timeout(&(bip, port).into(), Duration::from_millis(1));
            return 0;
        };
        let _ = c.set_write_timeout(Some(Duration::from_secs(30)));
        match c.write_all(&data) {
            Ok(()) => data.len(),
            Err(_) => 0,
        }
    });
    let (received, received_sum) = server.join().expect("server thread");
    Transfer {
        sent,
        sent_sum: checksum(&data[..sent]),
        received,
        received_sum,
    }
}

/// UDP counted: `n` datagrams of `size` bytes from `a` to a socket in `b`, paced in
/// bursts of 32 with a short pause; returns (sent, received) as the two sockets
/// counted them (the receiver reads until 1 s passes without a datagram).
pub fn udp_count(a: &Pod, b: &Pod, port: u16, n: usize, size: usize) -> (usize, usize) {
    udp_stream(a, b, port, n, size, None)
}

/// [`udp_count`] with one datagram every `gap` instead of bursts (a slow stream that
/// spans an event, e.g. a restart, and that a worker starved of CPU still keeps up with).
pub fn udp_stream(
    a: &Pod,
    b: &Pod,
    port: u16,
    n: usize,
    size: usize,
    gap: Option<Duration>,
) -> (usize, usize) {
    let bip = b.ip;
    let rx: UdpSocket = b.run(|| UdpSocket::bind((bip, port)).expect("udp bind in pod"));
    rx.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let counter = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut got = 0usize;
        // The first datagram may take a while (ARP, first pass through the tunnel).
        let deadline = Instant::now() + Duration::from_secs(10);
        while got == 0 && Instant::now() < deadline {
            if rx.recv(&mut buf).is_ok() {
                got += 1;
            }
        }
        while rx.recv(&mut buf).is_ok() {
            got += 1;
        }
        got
    });
    let aip = a.ip;
    let sent = a.run(|| {
        let s = UdpSocket::bind((aip, 0)).expect("udp bind");
        let msg = vec![0x5a; size];
        let mut sent = 0;
        for i in 0..n {
            if s.send_to(&msg, (bip, port)).is_ok() {
                sent += 1;
            }
            match gap {
                Some(g) => std::thread::sleep(g),
                None if i % 32 == 31 => std::thread::sleep(Duration::from_millis(2)),
                None => {}
            }
        }
        sent
    });
    (sent, counter.join().expect("counter thread"))
}

/// The multi-node testbed. See the module doc.
pub struct Testbed {
    pub prefix: String,
    /// The second octet of the underlay `10.K.0.0/24`.
    pub k: u8,
    pub bridge: String,
    pub opts: Options,
    pub etcd: Option<EtcdCluster>,
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pod_ns: Vec<Netns>,
    plugin: PathBuf,
    xsknetctl: PathBuf,
    bridge_made: bool,
}

/// The binaries a testbed runs, located like [`workspace_bin`] does (same profile as
/// the running test) unless `XSKNET_{XSKNETD,XSKNETCTL,PLUGIN}_BIN` say otherwise.
fn bins() -> (PathBuf, PathBuf, PathBuf) {
    (
        workspace_bin("xsknetd", "XSKNET_XSKNETD_BIN"),
        workspace_bin("xsknetctl", "XSKNET_XSKNETCTL_BIN"),
        workspace_bin("xsknet", "XSKNET_PLUGIN_BIN"),
    )
}

/// A second octet K for `10.K.0.0/24` that no route of this namespace uses.
fn pick_underlay() -> u8 {
    static N: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id() * 7 + N.fetch_add(1, Ordering::Relaxed) * 13;
    for j in 0..120u32 {
        let k = 100 + ((start + j) % 120) as u8;
        let out = try_sh(&[
            "ip",
            "-4",
            "route",
            "show",
            "to",
            "match",
            &format!("10.{k}.0.1"),
        ]);
        let used = String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| !l.starts_with("default"));
        if !used {
            return k;
        }
    }
    panic!("no free 10.K.0.0/24 for a testbed underlay");
}

impl Testbed {
    /// Build the underlay, the datastore and the nodes, start every daemon and wait
    /// until each is ready. `tag` prefixes every name (see [`crate::prefix`]).
    /// Returns None when etcd mode was asked for and the etcd binary is missing.
    pub fn new(tag: &str, opts: Options) -> Option<Testbed> {
        assert!((1..=9).contains(&opts.nodes), "1..=9 nodes");
        let (xsknetd, xsknetctl, plugin) = bins();
        let prefix = crate::prefix(tag);
        let k = pick_underlay();
        let bridge = format!("{prefix}br");
        assert!(bridge.len() <= 15, "bridge name {bridge} too long");
        let mut tb = Testbed {
            prefix: prefix.clone(),
            k,
            bridge: bridge.clone(),
            opts: opts.clone(),
            etcd: None,
            nodes: Vec::new(),
            pods: Vec::new(),
            pod_ns: Vec::new(),
            plugin,
            xsknetctl,
            bridge_made: false,
        };
        let _ = try_sh(&["ip", "link", "del", &bridge]);
        sh(&["ip", "link", "add", &bridge, "type", "bridge"]);
        tb.bridge_made = true;
        sh(&["ip", "link", "set", &bridge, "up"]);
        // A wire carries complete checksums; a veth would hand the sender's partial
        // (offloaded) UDP checksum to the receiver's XDP program as it is.
        let _ = try_sh(&["ethtool", "-K", &bridge, "tx", "off"]);
        let members = match opts.datastore {
            Datastore::Static => 0,
            Datastore::Etcd { members } => members,
        };
        for m in 0..members.max(1) {
            let a = format!("{}/24", tb.bridge_ip(m));
            sh(&["ip", "addr", "add", &a, "dev", &bridge]);
        }
        if members > 0 {
            let addrs: Vec<Ipv4Addr> = (0..members).map(|m| tb.bridge_ip(m)).collect();
            tb.etcd = Some(EtcdCluster::start(&addrs)?);
        }
        for i in 0..opts.nodes {
            let node = tb.make_node(i, &xsknetd);
            tb.nodes.push(node);
        }
        for i in 0..opts.nodes {
            let yaml = tb.node_yaml(i);
            let n = &mut tb.nodes[i];
            std::fs::write(
                &n.daemon.config,
                format!(
                    "socket: {}\nstateDir: {}\n{yaml}",
                    n.daemon.socket.display(),
                    n.daemon.state.display()
                ),
            )
            .expect("write node.yaml");
        }
        // Start them all, then wait: daemons that claim prefixes come up together.
        for n in tb.nodes.iter_mut() {
            n.daemon.launch(&[]);
        }
        for n in tb.nodes.iter_mut() {
            n.daemon.wait_ready();
        }
        if tb.etcd.is_some() {
            // Ready is local; wait until every node's view has every node too.
            let names: Vec<String> = tb.nodes.iter().map(|n| n.name.clone()).collect();
            for i in 0..tb.nodes.len() {
                let deadline = Instant::now() + Duration::from_secs(30);
                while tb.node_list(i).as_ref() != Some(&names) {
                    assert!(
                        Instant::now() < deadline,
                        "n{} does not list every node: {:?}\n{}",
                        i + 1,
                        tb.node_list(i),
                        tb.logs()
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Some(tb)
    }

    /// The bridge's `m`-th address: `10.K.0.(1 + m)`.
    pub fn bridge_ip(&self, m: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.k, 0, 1 + m as u8)
    }

    /// Node `i`'s underlay address `10.K.0.(11 + i)`.
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.k, 0, 11 + i as u8)
    }

    /// Node `i`'s configured pod prefix.
    pub fn configured_pod_cidr(i: usize) -> String {
        format!("10.244.{}.0/24", i + 1)
    }

    fn make_node(&self, i: usize, xsknetd: &std::path::Path) -> Node {
        let name = format!("n{}", i + 1);
        let ns = Netns::new(&format!("{}{name}", self.prefix));
        let br_end = format!("{}{name}u", self.prefix);
        assert!(br_end.len() <= 15, "link name {br_end} too long");
        sh(&[
            "ip", "link", "add", &br_end, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        sh(&["ip", "link", "set", &br_end, "master", &self.bridge, "up"]);
        let ip = self.node_ip(i);
        let a = format!("{ip}/24");
        sh(&["ip", "-n", &ns.name, "addr", "add", &a, "dev", "eth0"]);
        sh(&["ip", "-n", &ns.name, "link", "set", "eth0", "up"]);
        let gw = self.bridge_ip(0).to_string();
        sh(&[
            "ip", "-n", &ns.name, "route", "add", "default", "via", &gw, "dev", "eth0",
        ]);
        let _ = ns.exec(&["ethtool", "-K", "eth0", "tx", "off"]);
        let o = ip.octets();
        let vtep_mac = format!("02:78:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]);
        let pod_cidr = match (self.opts.datastore, self.opts.pod_cidrs) {
            (Datastore::Etcd { .. }, PodCidrs::Claimed) => None,
            _ => Some(Self::configured_pod_cidr(i)),
        };
        let daemon = NodeDaemon::new(
            xsknetd.to_path_buf(),
            Some(&ns),
            &format!("{}{name}", self.prefix),
            "",
        );
        Node {
            name,
            daemon,
            ns,
            underlay_ip: ip,
            vtep_mac,
            pod_cidr,
        }
    }

    /// Node `i`'s `node.yaml` (after `socket` and `stateDir`).
    pub fn node_yaml(&self, i: usize) -> String {
        let o = &self.opts;
        let n = &self.nodes[i];
        let core = i % online_cpus();
        let mut y = String::new();
        if let Some(c) = &n.pod_cidr {
            y += &format!("podCidr: {c}\n");
        }
        y += &format!(
            "workers: [{{core: {core}}}]\nclusterCidr: 10.244.0.0/16\nuplink: {{interface: eth0}}\n"
        );
        y += &format!(
            "overlay:\n  vni: {}\n  port: {}\n  clusterCidr: 10.244.0.0/16\n  subnetLen: 24\n",
            o.vni, o.port
        );
        match (&self.etcd, o.datastore) {
            (Some(etcd), Datastore::Etcd { .. }) => {
                if let Some(c) = &n.pod_cidr {
                    y += &format!("  podCidr: {c}\n");
                }
                y = format!(
                    "nodeName: {}\ndatastore:\n  type: etcd\n  endpoints: [{}]\n  leaseTtlSeconds: {}\n{y}",
                    n.name,
                    etcd.endpoints().join(", "),
                    o.lease_ttl_seconds
                );
            }
            _ => {
                y += "  peers:\n";
                for (j, p) in self.nodes.iter().enumerate() {
                    if j != i {
                        y += &format!(
                            "  - {{name: {}, podCidr: {}, underlayIp: {}, vtepMac: \"{}\"}}\n",
                            p.name,
                            p.pod_cidr
                                .as_deref()
                                .expect("static mode configures podCidr"),
                            p.underlay_ip,
                            p.vtep_mac
                        );
                    }
                }
            }
        }
        y += &o.extra_yaml;
        y
    }

    /// Node `i`'s pod prefix as its daemon reports it (`status`), configured or claimed.
    pub fn pod_cidr(&self, i: usize) -> String {
        let st = self.nodes[i]
            .daemon
            .status()
            .expect("daemon answers status");
        st["pod_cidr"]
            .as_str()
            .or_else(|| st["podCidr"].as_str())
            .map(str::to_string)
            .or_else(|| self.nodes[i].pod_cidr.clone())
            .unwrap_or_else(|| panic!("no pod prefix in status: {st}"))
    }

    /// Create a pod on node `i` through the real CNI plugin (ADD with the kubelet's
    /// `K8S_POD_NAMESPACE`/`K8S_POD_NAME`, `args.labels`), at `ip` when given (`IP=`
    /// in CNI_ARGS) or wherever the node's IPAM puts it. Returns a copy of its handle;
    /// the testbed deletes it on drop.
    pub fn pod(
        &mut self,
        i: usize,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        ip: Option<Ipv4Addr>,
    ) -> Pod {
        let netns = format!("{}p{}", self.prefix, self.pods.len());
        let ns = Netns::new(&netns);
        let _ = ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        self.pod_ns.push(ns);
        let mut args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name}");
        if let Some(ip) = ip {
            args += &format!(";IP={ip}");
        }
        let mut pod = Pod {
            node: i,
            netns: netns.clone(),
            namespace: namespace.into(),
            name: name.into(),
            ip: Ipv4Addr::UNSPECIFIED,
            host_if: String::new(),
            container_id: format!("{netns}-0123456789abcdef"),
            cni_args: args,
        };
        let (rc, v, stderr) = self.cni(i, "ADD", &pod, labels);
        assert_eq!(
            rc,
            0,
            "CNI ADD {namespace}/{name} on node {i}: {v}\nstderr: {stderr}\n--- daemon log\n{}",
            self.nodes[i].daemon.log_text()
        );
        pod.ip = v["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no ips in ADD result {v}"));
        if let Some(want) = ip {
            assert_eq!(pod.ip, want, "CNI ADD honours IP=: {v}");
        }
        pod.host_if = v["interfaces"]
            .as_array()
            .and_then(|ifs| ifs.iter().find(|i| i.get("sandbox").is_none()))
            .and_then(|i| i["name"].as_str())
            .unwrap_or_default()
            .to_string();
        self.pods.push(pod.clone());
        pod
    }

    /// Run the plugin with `command` for `pod` inside node `i`'s namespace; returns the
    /// exit code, stdout JSON (Null when empty) and stderr.
    fn cni(
        &self,
        i: usize,
        command: &str,
        pod: &Pod,
        labels: &[(&str, &str)],
    ) -> (i32, serde_json::Value, String) {
        let d = &self.nodes[i].daemon;
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "xsknet",
            "type": "xsknet",
            "socket": d.socket.display().to_string(),
            "stateDir": d.state.display().to_string(),
            "args": {"labels": labels},
        });
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.nodes[i].ns.name])
            .arg(&self.plugin)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &pod.container_id)
            .env("CNI_NETNS", pod.netns_path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .env("CNI_ARGS", &pod.cni_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the xsknet CNI plugin");
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(&serde_json::to_vec(&conf).expect("json"));
        }
        let out = child.wait_with_output().expect("wait for the CNI plugin");
        let text = String::from_utf8_lossy(&out.stdout);
        let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        (
            out.status.code().unwrap_or(-1),
            v,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// `xsknetctl --socket NODE args…` against node `i`'s daemon.
    pub fn ctl(&self, i: usize, args: &[&str]) -> std::process::Output {
        Command::new(&self.xsknetctl)
            .arg("--socket")
            .arg(&self.nodes[i].daemon.socket)
            .args(args)
            .output()
            .expect("run xsknetctl")
    }

    /// [`ctl`](Self::ctl) that must succeed; returns stdout.
    pub fn ctl_ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.ctl(i, args);
        assert!(
            out.status.success(),
            "xsknetctl {args:?} on node {i}: {}{}\n--- daemon log\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.nodes[i].daemon.log_text()
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `xsknetctl node list --json` on node `i`: the names of the nodes it shows as
    /// live (rows with `"alive": false`, a record whose lease ran out, are left out), sorted;
    /// None when the command fails.
    pub fn node_list(&self, i: usize) -> Option<Vec<String>> {
        let out = self.ctl(i, &["node", "list", "--json"]);
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let rows = v.as_array().or_else(|| v["nodes"].as_array())?;
        let mut names: Vec<String> = rows
            .iter()
            .filter(|r| r["alive"] != false)
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect();
        names.sort();
        Some(names)
    }

    /// Every daemon's log, labelled (for assertion messages).
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            s += &format!("--- {} xsknetd\n{}\n", n.name, n.daemon.log_text());
        }
        s
    }

    /// Path of the xsknetctl binary the testbed uses.
    pub fn xsknetctl(&self) -> &std::path::Path {
        &self.xsknetctl
    }
}

fn online_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // CNI DEL first, while the daemons still run (best effort: a daemon the test
        // stopped leaves the plugin's own cleanup to the namespaces' removal).
        for pod in std::mem::take(&mut self.pods) {
            let running = self.nodes[pod.node].daemon.pid().is_some();
            if running {
                let (rc, v, stderr) = self.cni(pod.node, "DEL", &pod, &[]);
                if rc != 0 {
                    eprintln!("testbed: CNI DEL {}: {v} {stderr}", pod.container_id);
                }
            }
        }
        self.pod_ns.clear();
        // Stops every daemon by pid, removes its dir, deletes its namespace (and with
        // it the veth pair whose bridge end is in this namespace).
        self.nodes.clear();
        if self.bridge_made {
            let _ = try_sh(&["ip", "link", "del", &self.bridge]);
        }
        self.etcd = None;
    }
}
