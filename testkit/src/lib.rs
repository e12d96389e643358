//! Fixtures shared by the privileged integration tests of every crate: the root check,
//! per-test name prefixes, running inspection tools, throwaway network namespaces (an
//! RAII guard deletes them even when a test panics) and locating the workspace's
//! binaries. Crate-specific fixtures (daemons, pods, CNI calls) stay next to their
//! tests. Dev-only: no product crate depends on this. It links `xsknet-sys`, not the
//! dataplane, so the CNI plugin's tests do not pull libxdp/libbpf in either.

#![deny(unsafe_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

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
