//! podman 4.3 with its CNI backend driving the real `xsknet` plugin (../shared/RUNTIMES.md):
//! the end-to-end client a cluster operator would recognise. podman runs containers in
//! the root network namespace's world (their host veths live there), so `xsknetd` runs
//! in the root namespace too, with names and addresses of its own: a host port
//! `xpm<n>`/`xpm<n>d`, a pod CIDR `10.244.<n>.0/24`, a socket and state dir under a
//! private `$W` that also holds podman's containers.conf, storage, conflist directory
//! and CNI binary directory (built by `scripts/podman-setup.sh $W`).
//!
//! The network is what `xsknetd install-cni` writes (xsknet chained with portmap).
//! Checked like a user would: two containers ping each other and move a 5 MB TCP stream
//! (busybox nc, checksummed) through the dataplane, seen in the daemon's counters;
//! `podman stop`/`start` restores connectivity; a `-p` published port answers from the
//! node and its portmap rules go with the container; 100 `podman run -d` / `podman rm -f`
//! cycles leave no host veth, no address allocation, no endpoint and the daemon's fd
//! count at its baseline. A guard removes every container (by name), stops the daemon
//! (by pid), deletes its host port and `$W`, also when an assertion fails.
//!
//! Needs root and podman; without them the test says so and passes, unless
//! `XSKNET_REQUIRE_PRIVILEGED` is set (the README's test command): then podman is
//! installed by `scripts/podman-setup.sh`, and without root the test fails.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::NodeDaemon;
use xsknet_proto::client::call;
use xsknet_proto::wire::Request;

const IMAGE: &str = "localhost/busybox:local";
const NETWORK: &str = "xsknet";
const CYCLES: usize = 100;
const CALL: Duration = Duration::from_secs(5);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether this machine can run the test. Under the README's test command
/// (`XSKNET_REQUIRE_PRIVILEGED`) a missing podman is installed by
/// `scripts/podman-setup.sh` and anything else missing fails the test.
fn can_run() -> bool {
    let required = std::env::var_os("XSKNET_REQUIRE_PRIVILEGED").is_some();
    let root = xsknet_sys::process::is_root();
    let has_podman = || Command::new("podman").arg("--version").output().is_ok();
    if root && required && !has_podman() {
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/podman-setup.sh"))
            .output()
            .unwrap();
        assert!(out.status.success(), "podman-setup.sh: {}", show(&out));
    }
    let why = match (root, has_podman()) {
        (false, _) => "needs root",
        (true, false) => "needs podman (sudo bash scripts/podman-setup.sh)",
        (true, true) => return true,
    };
    assert!(!required, "podman end-to-end test {why}");
    eprintln!("SKIP: podman end-to-end test {why}");
    false
}

/// `xsknetd` from the same target directory as this test (built by
/// `cargo build --release --bins`), or `$XSKNETD`.
fn xsknetd_bin() -> PathBuf {
    testkit::workspace_bin("xsknetd", "XSKNETD")
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

/// One test's world: `$W`, the daemon, and the containers it made.
struct World {
    w: PathBuf,
    socket: PathBuf,
    host_port: String,
    daemon: Option<NodeDaemon>,
    containers: BTreeSet<String>,
    tag: String,
    /// Picks this run's pod CIDR (10.244.n.0/24), host port name and published port.
    n: u32,
}

impl World {
    fn new() -> World {
        let n = std::process::id() % 200 + 20;
        let tag = format!("xpm{n}");
        let w = std::env::temp_dir().join(format!("xsknet-podman-{tag}"));
        let host_port = tag.clone();
        let _ = fs::remove_dir_all(&w);
        fs::create_dir_all(&w).unwrap();
        let mut world = World {
            socket: w.join("xsknetd.sock"),
            w,
            host_port,
            daemon: None,
            containers: BTreeSet::new(),
            tag,
            n,
        };
        world.setup(n);
        world
    }

    fn setup(&mut self, n: u32) {
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/podman-setup.sh"))
            .arg(&self.w)
            .output()
            .unwrap();
        assert!(out.status.success(), "podman-setup.sh: {}", show(&out));

        let mut daemon = NodeDaemon::at(
            xsknetd_bin(),
            None,
            &self.w,
            self.socket.clone(),
            self.w.join("state"),
            &format!(
                // In the root namespace: no masquerade table there (the test needs none and
                // must leave nothing behind), under a name no real node uses.
                "podCidr: 10.244.{n}.0/24\nhostPort:\n  name: {hp}\n  peerName: {hp}d\n\
                 masquerade:\n  enabled: false\n  table: {hp}\n",
                hp = self.host_port
            ),
        );
        daemon.launch(&["run".as_ref()]);
        let config = daemon.config.clone();
        let daemon = self.daemon.insert(daemon);
        daemon.wait_ready();
        // The network podman uses is the one `install-cni` writes for a node: the
        // plugin copied into the CNI binary directory and the default conflist,
        // xsknet chained with the reference portmap plugin.
        let out = Command::new(xsknetd_bin())
            .arg("--config")
            .arg(&config)
            .arg("install-cni")
            .arg("--cni-bin-dir")
            .arg(self.w.join("cni-bin"))
            .arg("--cni-conf-dir")
            .arg(self.w.join("net.d"))
            .arg("--plugin-binary")
            .arg(env!("CARGO_BIN_EXE_xsknet"))
            .args(["--wait-ready-timeout", "20"])
            .output()
            .unwrap();
        assert!(out.status.success(), "install-cni: {}", show(&out));
        let conflist: Value = serde_json::from_slice(
            &fs::read(self.w.join("net.d").join("10-xsknet.conflist")).unwrap(),
        )
        .unwrap();
        assert_eq!(conflist["name"], NETWORK);
        assert_eq!(conflist["plugins"][1]["type"], "portmap");
    }

    fn log(&self) -> String {
        self.daemon
            .as_ref()
            .map(NodeDaemon::log_text)
            .unwrap_or_default()
    }

    fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().and_then(NodeDaemon::pid).unwrap()
    }

    fn daemon_fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.daemon_pid()))
            .unwrap()
            .count()
    }

    /// The fd count once it holds still for 300 ms (a control connection being closed
    /// right after a call must not count).
    fn settled_fds(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = self.daemon_fds();
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.daemon_fds();
            if now == last || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    /// podman with this world's configuration, bounded by `timeout(1)`.
    fn podman(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .args(["-k", "5", "90", "podman"])
            .args(args)
            .env("CONTAINERS_CONF", self.w.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.w.join("storage.conf"))
            .output()
            .unwrap()
    }

    fn podman_ok(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}\n--- xsknetd log (tail)\n{}",
            show(&out),
            tail(&self.log(), 20)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `podman run -d` a sleeping busybox on the xsknet network; returns its id.
    fn run(&mut self, name: &str) -> String {
        self.containers.insert(name.to_string());
        self.podman_ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            NETWORK,
            IMAGE,
            "sleep",
            "600",
        ])
    }

    /// A container serving `reply` on port 8080, published on the node's `host_port`.
    fn run_published(&mut self, name: &str, host_port: u16, reply: &str) -> String {
        self.containers.insert(name.to_string());
        let publish = format!("{host_port}:8080");
        let script = format!("echo {reply} > /tmp/r; while true; do nc -l -p 8080 < /tmp/r; done");
        self.podman_ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            NETWORK,
            "-p",
            &publish,
            IMAGE,
            "sh",
            "-c",
            &script,
        ])
    }

    fn rm(&mut self, name: &str) {
        self.podman_ok(&["rm", "-f", "-t", "0", name]);
        self.containers.remove(name);
    }

    fn ip(&self, name: &str) -> String {
        let f = format!("{{{{.NetworkSettings.Networks.{NETWORK}.IPAddress}}}}");
        let ip = self.podman_ok(&["inspect", "-f", &f, name]);
        assert!(ip.starts_with("10.244."), "{name} has address {ip:?}");
        ip
    }

    fn exec(&self, name: &str, script: &str) -> Output {
        self.podman(&["exec", name, "sh", "-c", script])
    }

    fn ping(&self, from: &str, to_ip: &str) -> Output {
        self.exec(from, &format!("ping -c 3 -W 2 {to_ip}"))
    }

    /// Port counters by pod address.
    fn port_packets(&self, ip: &str) -> (u64, u64) {
        let stats = call(&self.socket, &Request::Stats, CALL).unwrap();
        let port = stats["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["ip"] == ip)
            .unwrap_or_else(|| panic!("no port for {ip} in {stats}"))
            .clone();
        (
            port["rx_packets"].as_u64().unwrap(),
            port["tx_packets"].as_u64().unwrap(),
        )
    }

    fn endpoints(&self) -> Vec<Value> {
        call(&self.socket, &Request::EndpointList, CALL)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn allocations(&self) -> Vec<Value> {
        call(&self.socket, &Request::IpamList, CALL)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// Streams `bytes` from `from` to `to` with busybox nc and compares checksums.
    fn tcp_stream(&self, from: &str, to: &str, to_ip: &str, port: u16, bytes: usize) {
        // The listener's stdin must stay open: busybox nc quits at stdin EOF.
        let out = self.podman(&[
            "exec",
            "-d",
            to,
            "sh",
            "-c",
            &format!("sleep 60 | nc -l -p {port} > /tmp/got{port}"),
        ]);
        assert!(out.status.success(), "listener: {}", show(&out));
        std::thread::sleep(Duration::from_millis(300));
        let sent = self.exec(
            from,
            &format!(
                "head -c {bytes} /dev/urandom > /tmp/data{port} && nc {to_ip} {port} < /tmp/data{port} && md5sum < /tmp/data{port}"
            ),
        );
        assert!(sent.status.success(), "nc client: {}", show(&sent));
        let want = String::from_utf8_lossy(&sent.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.exec(
                to,
                &format!("wc -c < /tmp/got{port}; md5sum < /tmp/got{port}"),
            );
            let text = String::from_utf8_lossy(&got.stdout).to_string();
            let mut words = text.split_whitespace();
            let size: usize = words.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            if size == bytes {
                assert_eq!(words.next(), Some(want.as_str()), "content differs");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "received {size} of {bytes} bytes: {}",
                tail(&self.log(), 10)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Connects to `ip:port` from the node's own stack and reads until EOF.
fn read_reply(ip: std::net::Ipv4Addr, port: u16) -> Option<String> {
    use std::io::Read;
    let mut s =
        std::net::TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    (!out.is_empty()).then_some(out)
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for World {
    fn drop(&mut self) {
        // Containers first, while the daemon can still finish their DELs.
        let names: Vec<String> = self.containers.iter().cloned().collect();
        if !names.is_empty() {
            let mut args = vec!["rm", "-f", "-t", "0"];
            args.extend(names.iter().map(String::as_str));
            let _ = self.podman(&args);
        }
        if let Some(mut daemon) = self.daemon.take() {
            daemon.stop();
        }
        // A daemon that had to be killed leaves its host port behind.
        if Path::new("/sys/class/net").join(&self.host_port).exists() {
            let _ = Command::new("ip")
                .args(["link", "del", &self.host_port])
                .output();
        }
        if std::env::var_os("XSKNET_KEEP_PODMAN_DIR").is_none() {
            let _ = fs::remove_dir_all(&self.w);
        }
        eprintln!("podman test {}: cleaned up", self.tag);
    }
}

#[test]
fn podman_containers_talk_through_xsknet_and_leave_nothing_behind() {
    if !can_run() {
        return;
    }
    let t0 = Instant::now();
    let mut world = World::new();
    let baseline_fds = world.settled_fds();
    eprintln!(
        "setup (podman-setup.sh + xsknetd ready): {:?}, daemon fds {baseline_fds}",
        t0.elapsed()
    );

    // Two containers ping each other and stream TCP through the dataplane.
    let t = Instant::now();
    let a = format!("{}-a", world.tag);
    let b = format!("{}-b", world.tag);
    let id_a = world.run(&a);
    let id_b = world.run(&b);
    let (ip_a, ip_b) = (world.ip(&a), world.ip(&b));
    assert_ne!(ip_a, ip_b);
    let ping = world.ping(&a, &ip_b);
    assert!(ping.status.success(), "a -> b: {}", show(&ping));
    let ping = world.ping(&b, &ip_a);
    assert!(ping.status.success(), "b -> a: {}", show(&ping));
    // The fd count sees pods (their AF_XDP sockets), so its return to baseline means
    // something.
    let with_pods = world.settled_fds();
    assert!(with_pods > baseline_fds, "fds with two pods: {with_pods}");
    let (a_rx0, _) = world.port_packets(&ip_a);
    let (_, b_tx0) = world.port_packets(&ip_b);
    const BYTES: usize = 5_000_000;
    world.tcp_stream(&a, &b, &ip_b, 5001, BYTES);
    let (a_rx1, _) = world.port_packets(&ip_a);
    let (_, b_tx1) = world.port_packets(&ip_b);
    // At most one MSS per packet (offloads off), the MSS below the default node-local
    // MTU (65535, multi-buffer): > BYTES / 65535 packets each way.
    let min_frames = (BYTES / 65535) as u64;
    assert!(
        a_rx1 - a_rx0 >= min_frames && b_tx1 - b_tx0 >= min_frames,
        "the stream did not cross the dataplane: pod a rx +{}, pod b tx +{}",
        a_rx1 - a_rx0,
        b_tx1 - b_tx0
    );
    eprintln!(
        "ping + 5 MB TCP: {:?} (pod a port rx +{} frames; daemon fds {with_pods} with 2 pods)",
        t.elapsed(),
        a_rx1 - a_rx0
    );

    // stop/start: DEL then a fresh ADD; connectivity comes back.
    let t = Instant::now();
    world.podman_ok(&["stop", "-t", "0", &b]);
    let after_stop: Vec<Value> = world.endpoints();
    assert!(
        !after_stop.iter().any(|e| e["ip"] == ip_b.as_str()),
        "endpoint of a stopped container remains: {after_stop:?}"
    );
    world.podman_ok(&["start", &b]);
    let ip_b2 = world.ip(&b);
    let ping = world.ping(&a, &ip_b2);
    assert!(
        ping.status.success(),
        "a -> b after restart: {}",
        show(&ping)
    );
    world.tcp_stream(&b, &a, &ip_a, 5002, 200_000);
    eprintln!("stop/start + ping + TCP: {:?}", t.elapsed());

    world.rm(&a);
    world.rm(&b);
    let mut ids = vec![id_a, id_b];

    // `-p`: podman passes the mapping to portmap, chained after xsknet; the node's own
    // stack reaches the container through the host port and the dataplane.
    let t = Instant::now();
    let web = format!("{}-web", world.tag);
    let host_port = 18000 + world.n as u16;
    let id_web = world.run_published(&web, host_port, "hello-from-xsknet");
    let node_ip: std::net::Ipv4Addr = format!("10.244.{}.1", world.n).parse().unwrap();
    let got = (0..50)
        .find_map(|_| {
            let reply = read_reply(node_ip, host_port);
            if reply.is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            reply
        })
        .unwrap_or_default();
    assert_eq!(
        got.trim(),
        "hello-from-xsknet",
        "published port {host_port}"
    );
    world.rm(&web);
    let nat = Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&nat.stdout).contains(&id_web),
        "portmap rules of a removed container remain"
    );
    ids.push(id_web);
    eprintln!("published port through portmap: {:?}", t.elapsed());

    // Create/remove cycles.
    let t = Instant::now();
    for i in 0..CYCLES {
        let name = format!("{}-c{i}", world.tag);
        ids.push(world.run(&name));
        world.rm(&name);
    }
    let cycles = t.elapsed();
    eprintln!(
        "{CYCLES} create/remove cycles: {cycles:?} ({:?} per cycle)",
        cycles / CYCLES as u32
    );

    // Nothing remains: endpoints, allocations, host veths, daemon fds.
    assert!(
        world.endpoints().is_empty(),
        "endpoints: {:?}",
        world.endpoints()
    );
    assert!(
        world.allocations().is_empty(),
        "allocations: {:?}",
        world.allocations()
    );
    let leaked: Vec<String> = ids
        .iter()
        .map(|id| xsknet_cni::wire::host_ifname(id, "eth0"))
        .filter(|name| Path::new("/sys/class/net").join(name).exists())
        .collect();
    assert!(leaked.is_empty(), "host veths left: {leaked:?}");
    let fds = world.settled_fds();
    assert_eq!(fds, baseline_fds, "daemon fds after {CYCLES} cycles");
    let pending = world.w.join("state").join("pending-del");
    let pending_n = fs::read_dir(&pending).map_or(0, |d| d.count());
    assert_eq!(pending_n, 0, "unfinished DELs in {}", pending.display());
    eprintln!("total: {:?}", t0.elapsed());
}
