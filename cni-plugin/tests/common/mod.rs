//! Fixtures of the privileged CNI tests: a throwaway node namespace running a real
//! `xsknetd`, pod namespaces, and the real `xsknet` binary called over the CNI protocol
//! from inside the node namespace (`ip netns exec NODE xsknet`, so plugin and daemon
//! share it, as on a node). Everything is removed in `Drop`, also when a test panics;
//! names carry a per-test prefix; processes are killed by pid.

#![allow(dead_code, reason = "each test uses a different subset")]

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
pub use testkit::{prefix, privileged, sh, Netns};

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

/// The node: a namespace with a running xsknetd and its own temp dir.
pub struct Node {
    pub ns: Netns,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub fn start(tag: &str) -> Node {
        let ns = Netns::new(&format!("{tag}n"));
        let dir = std::env::temp_dir().join(format!("xsknet-cni-test-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("xsknetd.sock");
        let state = dir.join("state");
        let config = dir.join("node.yaml");
        std::fs::write(
            &config,
            format!(
                "socket: {}\nstateDir: {}\npodCidr: 10.244.0.0/24\n",
                socket.display(),
                state.display()
            ),
        )
        .unwrap();
        let mut n = Node {
            ns,
            log: dir.join("xsknetd.log"),
            dir,
            socket,
            state,
            config,
            child: None,
        };
        n.spawn();
        n
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns.name])
            .arg(sibling_binary("xsknetd"))
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn xsknetd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(v) = self.daemon(json!({"op": "status"})) {
                if v["ready"] == true {
                    return;
                }
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                panic!("xsknetd exited early ({st}): {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "xsknetd not ready: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM by pid, SIGKILL after 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill on a pid we spawned and have not reaped (ip netns exec execs).
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
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
