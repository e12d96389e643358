//! Shared fixtures of the privileged integration tests: throwaway network namespaces,
//! pods wired like the CNI plugin wires them, and an `xsknetd` child process. Every
//! fixture removes what it created in `Drop`, also when a test panics; names carry a
//! per-test prefix so tests run side by side; processes are killed by pid.

#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod bridge;

use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

#[allow(unused_imports, reason = "each test binary uses a different subset")]
pub use testkit::{prefix, privileged, sh, try_sh, wait_until, Netns, NodeDaemon};

/// A pod: its own namespace with `eth0`, whose host end lives in the node namespace.
#[derive(Debug)]
pub struct Pod {
    pub ns: Netns,
    pub host_if: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    /// Set when the pod was created by the real CNI plugin (what DEL needs).
    pub cni: Option<CniAtt>,
}

/// The attachment-specific inputs of a CNI call, kept from ADD for DEL.
#[derive(Debug, Clone)]
pub struct CniAtt {
    pub container_id: String,
    pub args: String,
    pub conf: serde_json::Value,
}

impl Pod {
    /// Wire a pod as the CNI plugin does: veth, /32, link-local default route, and the
    /// offload settings of `prepare_pod_interface`.
    pub fn new(node: &Netns, name: &str, host_if: &str, ip: Ipv4Addr) -> Pod {
        let ns = Netns::new(name);
        sh(&[
            "ip", "-n", &node.name, "link", "add", host_if, "type", "veth", "peer", "name", "eth0",
            "netns", &ns.name,
        ]);
        let ipn = format!("{ip}/32");
        sh(&["ip", "-n", &ns.name, "addr", "add", &ipn, "dev", "eth0"]);
        sh(&["ip", "-n", &ns.name, "link", "set", "eth0", "up"]);
        sh(&[
            "ip",
            "-n",
            &ns.name,
            "route",
            "add",
            "169.254.1.1",
            "dev",
            "eth0",
            "scope",
            "link",
        ]);
        sh(&[
            "ip",
            "-n",
            &ns.name,
            "route",
            "add",
            "default",
            "via",
            "169.254.1.1",
            "dev",
            "eth0",
            "onlink",
        ]);
        let _ = ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns.run(|| xsknet_dataplane::sys::ethtool::prepare_pod_interface("eth0"))
            .expect("pod offloads");
        let out = sh(&["ip", "-n", &ns.name, "-br", "link", "show", "eth0"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mac = text
            .split_whitespace()
            .nth(2)
            .expect("mac in ip -br output")
            .to_string();
        Pod {
            ns,
            host_if: host_if.to_string(),
            ip,
            mac,
            cni: None,
        }
    }

    /// ping from this pod; true when every echo got a reply.
    pub fn ping(&self, dst: Ipv4Addr, count: u32) -> bool {
        let c = count.to_string();
        let d = dst.to_string();
        self.ns
            .exec(&["ping", "-c", &c, "-i", "0.2", "-W", "2", "-q", &d])
            .status
            .success()
    }
}

/// A daemon in the node namespace (the shared [`testkit::NodeDaemon`]: started until
/// ready, stopped by pid, its temp dir removed) with the xsknetctl helpers these tests
/// use. Derefs to the fixture for its paths, `spawn`, `stop` and the log.
pub struct Daemon(NodeDaemon);

impl std::ops::Deref for Daemon {
    type Target = NodeDaemon;
    fn deref(&self) -> &NodeDaemon {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut NodeDaemon {
        &mut self.0
    }
}

pub fn bin(name: &str) -> PathBuf {
    match name {
        "xsknetd" => PathBuf::from(env!("CARGO_BIN_EXE_xsknetd")),
        "xsknetctl" => PathBuf::from(env!("CARGO_BIN_EXE_xsknetctl")),
        other => panic!("unknown binary {other}"),
    }
}

impl Daemon {
    /// Write a config (pod CIDR [`testkit::POD_CIDR`] plus `extra_yaml`) into a fresh
    /// temp dir and start the daemon in `ns`.
    pub fn start(ns: &Netns, tag: &str, extra_yaml: &str) -> Daemon {
        let yaml = format!("podCidr: {}\n{extra_yaml}", testkit::POD_CIDR);
        let mut d = NodeDaemon::new(bin("xsknetd"), Some(ns), tag, &yaml);
        d.spawn();
        Daemon(d)
    }

    /// Start a daemon in `ns` with exactly `yaml` (after socket and state dir), e.g. a
    /// node of a multi-node test with its own pod CIDR and overlay.
    pub fn start_yaml(ns: &Netns, tag: &str, yaml: &str) -> Daemon {
        let mut d = NodeDaemon::new(bin("xsknetd"), Some(ns), tag, yaml);
        d.spawn();
        Daemon(d)
    }

    /// A daemon fixture made by the caller (e.g. with [`NodeDaemon::at`], its state
    /// somewhere special), started until ready.
    pub fn spawn_node(mut d: NodeDaemon) -> Daemon {
        d.spawn();
        Daemon(d)
    }

    /// Run xsknetctl against this daemon.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("xsknetctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run xsknetctl")
    }

    /// xsknetctl that must succeed; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "xsknetctl {args:?}: {}{}\n--- daemon log\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    pub fn attach(&self, pod: &Pod) {
        let ip = pod.ip.to_string();
        self.ctl_ok(&[
            "endpoint",
            "add",
            "--ifname",
            &pod.host_if,
            "--ip",
            &ip,
            "--mac",
            &pod.mac,
        ]);
    }

    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.ctl_ok(&["stats", "--json"])).expect("stats json")
    }

    /// Counters of the port whose ifname is `ifname`.
    pub fn port_stats(&self, ifname: &str) -> serde_json::Value {
        let s = self.stats();
        s["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["ifname"] == ifname)
            .cloned()
            .unwrap_or_else(|| panic!("no port {ifname} in stats: {s}"))
    }
}

/// Send `bytes` of a deterministic pattern over TCP from pod `a` to a listener in pod
/// `b`; returns (sent, received, received content matches).
pub fn tcp_transfer(a: &Pod, b: &Pod, port: u16, bytes: usize) -> (usize, usize, bool) {
    use std::io::{Read, Write};
    let listener: TcpListener =
        b.ns.run(|| TcpListener::bind((b.ip, port)).expect("bind in pod b"));
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    });
    let dst = b.ip;
    let mut stream: TcpStream = a.ns.run(|| {
        TcpStream::connect_timeout(&(dst, port).into(), Duration::from_secs(5))
            .expect("connect from pod a")
    });
    let data: Vec<u8> = (0..bytes).map(|i| (i * 7 + i / 251) as u8).collect();
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(&data).expect("send");
    drop(stream);
    let got = server.join().unwrap();
    let same = got == data;
    (data.len(), got.len(), same)
}

/// Send `n` UDP datagrams from `a` to an echo socket in `b`; returns how many replies
/// came back byte-identical.
pub fn udp_echo(a: &Pod, b: &Pod, port: u16, n: usize) -> usize {
    let server: UdpSocket =
        b.ns.run(|| UdpSocket::bind((b.ip, port)).expect("udp bind b"));
    server
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut idle = 0;
        while idle < 10 {
            match server.recv_from(&mut buf) {
                Ok((len, from)) => {
                    idle = 0;
                    let _ = server.send_to(&buf[..len], from);
                }
                Err(_) => idle += 1,
            }
        }
    });
    let client: UdpSocket = a.ns.run(|| UdpSocket::bind((a.ip, 0)).expect("udp bind a"));
    client
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut ok = 0;
    let mut buf = [0u8; 2048];
    for i in 0..n {
        let msg: Vec<u8> = (0..(32 + i % 1000)).map(|j| (i + j) as u8).collect();
        client.send_to(&msg, (b.ip, port)).unwrap();
        if let Ok(len) = client.recv(&mut buf) {
            if buf[..len] == msg[..] {
                ok += 1;
            }
        }
    }
    echo.join().unwrap();
    ok
}

/// Send raw Ethernet frames out of `ifname` from inside `ns` (AF_PACKET).
pub fn inject_frames(ns: &Netns, ifname: &str, frames: &[Vec<u8>]) {
    let ifname = ifname.to_string();
    ns.run(move || {
        let idx = std::ffi::CString::new(ifname.clone()).unwrap();
        // SAFETY: plain syscalls on a socket we own, with correctly sized arguments.
        unsafe {
            let ifindex = libc::if_nametoindex(idx.as_ptr());
            assert!(ifindex > 0, "no {ifname}");
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0, "AF_PACKET socket");
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex as i32;
            sll.sll_halen = 6;
            for f in frames {
                let rc = libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert!(rc >= 0, "sendto: {}", std::io::Error::last_os_error());
            }
            libc::close(fd);
        }
    });
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

impl Daemon {
    /// Attach `pod` as `namespace/name` with labels (what the CNI plugin reports).
    pub fn attach_as(&self, pod: &Pod, namespace: &str, name: &str, labels: &[(&str, &str)]) {
        let ip = pod.ip.to_string();
        let mut args = vec![
            "endpoint".to_string(),
            "add".into(),
            "--ifname".into(),
            pod.host_if.clone(),
            "--ip".into(),
            ip,
            "--mac".into(),
            pod.mac.clone(),
            "--namespace".into(),
            namespace.into(),
            "--name".into(),
            name.into(),
        ];
        for (k, v) in labels {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ctl_ok(&refs);
    }
}

/// Serve TCP and UDP on each of `ports` inside `pod` until the process exits: a TCP
/// connection gets one byte `k` and then an echo of whatever it sends; a UDP datagram
/// is echoed. Sockets are created in the pod's namespace; the threads are detached.
pub fn serve(pod: &Pod, ports: &[u16]) {
    use std::io::{Read, Write};
    for &port in ports {
        let ip = pod.ip;
        let (tcp, udp): (TcpListener, UdpSocket) = pod.ns.run(|| {
            (
                TcpListener::bind((ip, port)).expect("tcp bind in pod"),
                UdpSocket::bind((ip, port)).expect("udp bind in pod"),
            )
        });
        std::thread::spawn(move || {
            for s in tcp.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    if s.write_all(b"k").is_err() {
                        return;
                    }
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        });
    }
}

/// A TCP connection from `from` to `dst:port` that got the server's first byte
/// within `timeout` (SYN, SYN-ACK and data both ways went through).
pub fn tcp_connects(from: &Pod, dst: Ipv4Addr, port: u16, timeout: Duration) -> bool {
    use std::io::Read;
    from.ns.run(|| {
        let Ok(mut s) = TcpStream::connect_timeout(&(dst, port).into(), timeout) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(timeout));
        let mut b = [0u8; 1];
        matches!(s.read(&mut b), Ok(1) if b[0] == b'k')
    })
}

/// A UDP datagram from `from` to `dst:port` whose echo came back (two tries, each
/// waiting `timeout / 2`).
pub fn udp_answers(from: &Pod, dst: Ipv4Addr, port: u16, timeout: Duration) -> bool {
    let src = from.ip;
    from.ns.run(|| {
        let s = UdpSocket::bind((src, 0)).expect("udp bind");
        let _ = s.set_read_timeout(Some(timeout / 2));
        let mut buf = [0u8; 64];
        for i in 0..2u8 {
            let msg = [b'p', i, port as u8];
            if s.send_to(&msg, (dst, port)).is_err() {
                continue;
            }
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                if buf[..n] == msg {
                    return true;
                }
            }
        }
        false
    })
}

/// The `xsknet` CNI plugin binary (`XSKNET_PLUGIN_BIN` overrides).
pub fn plugin_bin() -> PathBuf {
    testkit::workspace_bin("xsknet", "XSKNET_PLUGIN_BIN")
}

impl Daemon {
    /// Run the real `xsknet` plugin with `command` inside the node namespace `node`
    /// (where this daemon runs), config on stdin; returns exit code, stdout JSON (Null
    /// when empty) and stderr.
    pub fn cni(
        &self,
        node: &Netns,
        command: &str,
        pod_ns: &Netns,
        att: &CniAtt,
    ) -> (i32, serde_json::Value, String) {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &node.name])
            .arg(plugin_bin())
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &att.container_id)
            .env("CNI_NETNS", pod_ns.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .env("CNI_ARGS", &att.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn xsknet CNI plugin");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&serde_json::to_vec(&att.conf).unwrap())
            .unwrap();
        let out = child.wait_with_output().expect("wait for CNI plugin");
        let text = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let v = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!("xsknet {command}: stdout is not JSON ({e}): {text}\nstderr: {stderr}")
            })
        };
        (out.status.code().unwrap_or(-1), v, stderr)
    }

    /// A pod created as the kubelet creates one: its netns first (no interfaces), then
    /// CNI ADD of the real plugin with `K8S_POD_NAMESPACE`/`K8S_POD_NAME`, the fixed
    /// address `ip` (`CNI_ARGS IP=`) and `labels` (`args.labels` of the config).
    pub fn cni_pod(
        &self,
        node: &Netns,
        netns: &str,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        ip: Ipv4Addr,
    ) -> Pod {
        let ns = Netns::new(netns);
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let att = CniAtt {
            container_id: format!("{netns}-0123456789abcdef"),
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};IP={ip}"
            ),
            conf: serde_json::json!({
                "cniVersion": "1.0.0",
                "name": "xsknet",
                "type": "xsknet",
                "socket": path_str(&self.socket),
                "stateDir": path_str(&self.dir.join("state")),
                "args": {"labels": labels},
            }),
        };
        let (rc, v, stderr) = self.cni(node, "ADD", &ns, &att);
        assert_eq!(
            rc,
            0,
            "CNI ADD {namespace}/{name}: {v}\nstderr: {stderr}\n--- daemon log\n{}",
            self.log_text()
        );
        let got: Ipv4Addr = v["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no ips in ADD result {v}"));
        assert_eq!(got, ip, "CNI ADD {namespace}/{name} honours IP=: {v}");
        let ifs = v["interfaces"]
            .as_array()
            .expect("interfaces in ADD result");
        let host_if = ifs
            .iter()
            .find(|i| i.get("sandbox").is_none())
            .and_then(|i| i["name"].as_str())
            .unwrap_or_else(|| panic!("no host interface in ADD result {v}"))
            .to_string();
        let mac = ifs
            .iter()
            .find(|i| i["name"] == "eth0" && i.get("sandbox").is_some())
            .and_then(|i| i["mac"].as_str())
            .unwrap_or_else(|| panic!("no eth0 in ADD result {v}"))
            .to_string();
        Pod {
            ns,
            host_if,
            ip,
            mac,
            cni: Some(att),
        }
    }

    /// CNI DEL of a pod made by [`Daemon::cni_pod`], best effort (for `Drop`).
    pub fn cni_del(&self, node: &Netns, pod: &Pod) {
        if let Some(att) = &pod.cni {
            let (rc, v, stderr) = self.cni(node, "DEL", &pod.ns, att);
            if rc != 0 {
                eprintln!("CNI DEL {}: {v} {stderr}", att.container_id);
            }
        }
    }
}
