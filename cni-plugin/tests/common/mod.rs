//! Fixtures of the privileged CNI tests: a throwaway node namespace running a real
//! `xsknetd`, pod namespaces, and the real `xsknet` binary called over the CNI protocol
//! from inside the node namespace (`ip netns exec NODE xsknet`, so plugin and daemon
//! share it, as on a node). Everything is removed in `Drop`, also when a test panics;
//! names carry a per-test prefix; processes are killed by pid.

#![allow(dead_code, reason = "each test uses a different subset")]

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
pub use testkit::{prefix, privileged, sh, Netns, NodeDaemon};

fn sibling_binary(name: &str) -> PathBuf {
    testkit::workspace_bin(name, "XSKNETD_BIN")
}

/// What the CNI tests ask of a namespace beyond the shared fixture.
pub trait NetnsExt {
    /// The host veths the plugin created in it (`xsk` + 11 hex digits).
    fn pod_veths(&self) -> Vec<String>;
    /// `/run/netns/NAME` as the string CNI_NETNS carries.
    fn netns_path(&self) -> String;
}

impl NetnsExt for Netns {
    fn netns_path(&self) -> String {
        self.path().display().to_string()
    }

    fn pod_veths(&self) -> Vec<String> {
        self.links("xsk")
            .into_iter()
            .filter(|n| n.len() == 14 && n[3..].chars().all(|c| c.is_ascii_hexdigit()))
            .collect()
    }
}

/// The attachment-specific `CNI_*` variables of a call (empty: unset).
#[derive(Clone, Copy, Debug, Default)]
pub struct Att<'a> {
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub args: &'a str,
}

/// The node: a namespace with a running xsknetd (the shared [`NodeDaemon`] fixture)
/// and its own temp dir.
pub struct Node {
    pub ns: Netns,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state: PathBuf,
    daemon: NodeDaemon,
}

impl Node {
    pub fn start(tag: &str) -> Node {
        Node::start_with(tag, "")
    }

    /// [`start`](Self::start) with more `node.yaml` lines.
    pub fn start_with(tag: &str, extra_yaml: &str) -> Node {
        let ns = Netns::new(&format!("{tag}n"));
        let yaml = format!("podCidr: {}\n{extra_yaml}", testkit::POD_CIDR);
        let mut daemon = NodeDaemon::new(sibling_binary("xsknetd"), Some(&ns), tag, &yaml);
        daemon.spawn();
        Node {
            dir: daemon.dir.clone(),
            socket: daemon.socket.clone(),
            state: daemon.state.clone(),
            ns,
            daemon,
        }
    }

    /// (Re)start the daemon and wait until it is ready.
    pub fn spawn(&mut self) {
        self.daemon.spawn();
    }

    /// SIGTERM by pid, SIGKILL after 10 s.
    pub fn stop(&mut self) {
        self.daemon.stop();
    }

    pub fn log_text(&self) -> String {
        self.daemon.log_text()
    }

    /// One raw control request (`op` and fields), returning `result`.
    pub fn daemon(&self, req: Value) -> Result<Value, String> {
        let r: xsknet_proto::wire::Request =
            serde_json::from_value(req).map_err(|e| e.to_string())?;
        xsknet_proto::client::call(&self.socket, &r, Duration::from_secs(10))
            .map_err(|e| e.to_string())
    }

    pub fn endpoints(&self) -> Vec<Value> {
        let v = self
            .daemon(json!({"op": "endpoint_list"}))
            .expect("endpoint_list");
        v.as_array().cloned().unwrap_or_default()
    }

    pub fn allocations(&self) -> Vec<Value> {
        let v = self.daemon(json!({"op": "ipam_list"})).expect("ipam_list");
        v.as_array().cloned().unwrap_or_default()
    }

    /// The network config every test starts from.
    pub fn conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "xsknet-test",
            "type": "xsknet",
            "socket": self.socket.display().to_string(),
            "stateDir": self.state.display().to_string(),
        })
    }

    /// Runs `plugin` (path) in the node namespace; returns exit code and parsed stdout.
    pub fn exec_plugin(
        &self,
        plugin: &Path,
        command: &str,
        att: Att<'_>,
        conf: &Value,
    ) -> (i32, Value) {
        let Att {
            container_id,
            netns,
            ifname,
            args: cni_args,
        } = att;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns.name])
            .arg(plugin)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in [
            ("CNI_CONTAINERID", container_id),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", ifname),
            ("CNI_ARGS", cni_args),
        ] {
            if !v.is_empty() {
                cmd.env(k, v);
            }
        }
        let mut child = cmd.spawn().expect("spawn plugin");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&serde_json::to_vec(conf).unwrap())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!(
                    "{} {command}: stdout is not JSON ({e}): {text}\nstderr: {}",
                    plugin.display(),
                    String::from_utf8_lossy(&out.stderr)
                )
            })
        };
        (out.status.code().unwrap_or(-1), v)
    }

    /// The xsknet plugin.
    pub fn cni(&self, command: &str, pod: &Pod, conf: &Value) -> (i32, Value) {
        self.exec_plugin(
            &xsknet(),
            command,
            Att {
                container_id: &pod.container_id,
                netns: &pod.ns.netns_path(),
                ifname: "eth0",
                args: &pod.args,
            },
            conf,
        )
    }

    /// Nothing of any pod remains: no pod veth, no endpoint, no allocation.
    pub fn assert_empty(&self) {
        let veths = self.ns.pod_veths();
        assert!(veths.is_empty(), "veths left: {veths:?}");
        assert!(
            self.endpoints().is_empty(),
            "endpoints left: {:?}",
            self.endpoints()
        );
        assert!(
            self.allocations().is_empty(),
            "allocations left: {:?}",
            self.allocations()
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Before the namespace goes (fields drop in order, `ns` first).
        self.daemon.stop();
    }
}

pub fn xsknet() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xsknet"))
}

/// A pod sandbox: a netns and a container id.
pub struct Pod {
    pub ns: Netns,
    pub container_id: String,
    pub args: String,
}

impl Pod {
    pub fn new(tag: &str, name: &str) -> Pod {
        Pod {
            ns: Netns::new(&format!("{tag}{name}")),
            container_id: format!("{tag}-{name}-0123456789abcdef"),
            args: format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}"),
        }
    }
}

/// The pod address in an ADD result.
pub fn result_ip(v: &Value) -> Ipv4Addr {
    let a = v["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no ips in {v}"));
    a.split('/').next().unwrap().parse().unwrap()
}

/// TCP from pod `a` to a listener at `dst` in pod `b`; true when all bytes arrive intact.
pub fn tcp_ok(a: &Pod, b: &Pod, dst: Ipv4Addr, port: u16, bytes: usize) -> bool {
    use std::io::Read;
    let listener: TcpListener = b.ns.run(|| TcpListener::bind((dst, port)).expect("bind"));
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    });
    let data: Vec<u8> = (0..bytes).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut s: TcpStream = a.ns.run(|| {
        TcpStream::connect_timeout(&(dst, port).into(), Duration::from_secs(5)).expect("connect")
    });
    s.write_all(&data).expect("send");
    drop(s);
    server.join().unwrap() == data
}

/// Whether this kernel has multi-buffer AF_XDP (`XDP_USE_SG`, Linux 6.6): the daemon's
/// default node-local MTU (65535) needs it, an older kernel gets one frame's (3506).
pub fn kernel_has_xdp_sg() -> bool {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = r
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (it.next().flatten(), it.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (6, 6),
        _ => true,
    }
}
