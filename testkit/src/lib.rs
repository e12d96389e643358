//! Fixtures shared by the privileged integration tests of every crate: the root check,
//! per-test name prefixes, running inspection tools, throwaway network namespaces (an
//! RAII guard deletes them even when a test panics), locating the workspace's binaries
//! and a daemon in a node namespace ([`NodeDaemon`]: an `xsknetd` process, its config
//! and state, started until ready and stopped by pid). Crate-specific fixtures (pods,
//! CNI calls, xsknetctl helpers) stay next to their tests. Dev-only: no product crate
//! depends on this. It links `xsknet-sys` and `xsknet-proto`, not the dataplane, so the
//! CNI plugin's tests do not pull libxdp/libbpf in either.

#![deny(unsafe_code)]

pub mod etcd;
pub mod kubeapi;
pub mod testbed;

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use xsknet_proto::client::{call, ClientError};
use xsknet_proto::wire::Request;
use xsknet_sys::netns::run_in_netns;

/// Whether the privileged tier can run (root). When it cannot, the README's test
/// command (which sets XSKNET_REQUIRE_PRIVILEGED) fails instead of skipping.
pub fn privileged() -> bool {
    let root = xsknet_sys::process::is_root();
    if !root {
        if std::env::var_os("XSKNET_REQUIRE_PRIVILEGED").is_some() {
            panic!("privileged integration tests must run as root");
        }
        eprintln!("SKIP: privileged integration test needs root");
    }
    root
}

/// A short unique prefix for this test's names (netns, links ≤ 15 chars, container ids).
pub fn prefix(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{tag}{}{n}", std::process::id() % 10000)
}

/// Run a command and return its output whatever the status.
pub fn try_sh(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("run {args:?}: {e}"))
}

/// Run a command, panic with its output unless it succeeds.
pub fn sh(args: &[&str]) -> Output {
    let out = try_sh(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Poll `f` every 100 ms until it holds; panic naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A network namespace with `lo` up, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        let _ = try_sh(&["ip", "netns", "del", name]);
        sh(&["ip", "netns", "add", name]);
        sh(&["ip", "-n", name, "link", "set", "lo", "up"]);
        Netns {
            name: name.to_string(),
        }
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// `ip netns exec NAME args…`
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        try_sh(&v)
    }

    /// Run `f` inside the namespace (sockets it creates stay there).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        run_in_netns(&self.path(), f).expect("enter netns")
    }

    /// Names of links whose name starts with `prefix`.
    pub fn links(&self, prefix: &str) -> Vec<String> {
        let out = sh(&["ip", "-n", &self.name, "-o", "link", "show"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n.starts_with(prefix))
            .collect()
    }

    /// ping from inside the namespace; true when every echo got a reply.
    pub fn ping(&self, dst: Ipv4Addr, count: u32) -> bool {
        let c = count.to_string();
        let d = dst.to_string();
        self.exec(&["ping", "-c", &c, "-i", "0.2", "-W", "2", "-q", &d])
            .status
            .success()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = try_sh(&["ip", "netns", "del", &self.name]);
    }
}

/// A binary of the workspace: `$env_var` if set, else `name` in the target profile
/// directory the running test lives under (`target/<profile>/deps/..`), where
/// `cargo build --workspace --bins` (run by scripts/test.sh first) puts it.
pub fn workspace_bin(name: &str, env_var: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        assert!(p.exists(), "{env_var}={} does not exist", p.display());
        return p;
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not found: build it first (cargo build --workspace --bins, same profile) or set {env_var}",
        p.display()
    );
    p
}

/// The pod CIDR of the standard test node config.
pub const POD_CIDR: &str = "10.244.0.0/24";

/// A daemon in a node namespace: an `xsknetd` child process (inside `ip netns exec NS`,
/// or in the test's own namespace), its config, socket, state dir and log. `spawn`
/// starts it and waits until its control socket reports ready; it is stopped by pid
/// (SIGTERM, SIGKILL after 10 s) on `stop` and on drop, also when a test panics. A
/// daemon made with [`NodeDaemon::new`] owns its temp dir and removes it on drop.
#[derive(Debug)]
pub struct NodeDaemon {
    pub bin: PathBuf,
    /// The namespace it runs in (`None`: the test's own).
    pub ns: Option<String>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    owns_dir: bool,
}

impl NodeDaemon {
    /// A daemon in a fresh temp dir named after `tag`, configured with its socket and
    /// state dir there plus `yaml` (e.g. `podCidr: …`). Not started.
    pub fn new(bin: PathBuf, ns: Option<&Netns>, tag: &str, yaml: &str) -> NodeDaemon {
        let dir = std::env::temp_dir().join(format!("xsknet-test-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create daemon test dir");
        let (socket, state) = (dir.join("xsknetd.sock"), dir.join("state"));
        let mut d = NodeDaemon::at(bin, ns, &dir, socket, state, yaml);
        d.owns_dir = true;
        d
    }

    /// A daemon whose config, log, socket and state live where the caller says (the
    /// caller owns `dir`). Not started.
    pub fn at(
        bin: PathBuf,
        ns: Option<&Netns>,
        dir: &Path,
        socket: PathBuf,
        state: PathBuf,
        yaml: &str,
    ) -> NodeDaemon {
        let config = dir.join("node.yaml");
        let text = format!(
            "socket: {}\nstateDir: {}\n{yaml}",
            socket.display(),
            state.display()
        );
        std::fs::write(&config, text).expect("write daemon config");
        NodeDaemon {
            bin,
            ns: ns.map(|n| n.name.clone()),
            dir: dir.to_path_buf(),
            socket,
            state,
            config,
            log: dir.join("xsknetd.log"),
            child: None,
            owns_dir: false,
        }
    }

    /// Start the process: `xsknetd --config CONFIG args…`, stderr appended to the log.
    /// Does not wait for anything.
    pub fn launch(&mut self, args: &[&OsStr]) {
        assert!(self.child.is_none(), "xsknetd already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open daemon log");
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        let child = cmd
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn xsknetd");
        self.child = Some(child);
    }

    /// (Re)start the daemon with its config and state and wait until it is ready.
    pub fn spawn(&mut self) {
        self.launch(&[]);
        self.wait_ready();
    }

    /// Poll the control socket until `status` says ready; panic with the log if the
    /// process exits or 20 s pass.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.status().is_some_and(|v| v["ready"] == true) {
                return;
            }
            if let Some(st) = self.try_wait() {
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

    /// One control request, answered with its `result`.
    pub fn call(&self, request: &Request) -> Result<serde_json::Value, ClientError> {
        call(&self.socket, request, Duration::from_secs(10))
    }

    /// The `status` answer, if the daemon answers.
    pub fn status(&self) -> Option<serde_json::Value> {
        self.call(&Request::Status).ok()
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// The daemon's pid while it runs (`ip netns exec` execs it in place).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM by pid and wait; SIGKILL after 10 s. Returns the exit status of a
    /// clean exit (`None`: not running, or it had to be killed).
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // A child we spawned and have not reaped: its pid is still its own.
        let _ = xsknet_sys::process::terminate(child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop it (see [`terminate`](Self::terminate)); true if it was not running or
    /// exited 0.
    pub fn stop(&mut self) -> bool {
        if self.child.is_none() {
            return true;
        }
        self.terminate().is_some_and(|st| st.success())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeDaemon {
    fn drop(&mut self) {
        self.terminate();
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
