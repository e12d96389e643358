//! `xsknetd install-cni` / `uninstall-cni` / `run --install-cni` against temp
//! directories, as a DaemonSet would run them on a node: the plugin binary appears
//! complete and executable, the conflist appears only once the daemon says ready and is
//! never observed half-written, nothing temporary is left behind, uninstall removes
//! both (conflist first), a daemon that never turns ready makes install fail naming the
//! socket. The readiness side is a fake daemon (the real control server with a
//! `Handler` whose status flips to ready after ~1 s), so only the last test needs root.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use xsknet_dataplane::control::proto::{ControlError, ErrorKind, Handler, Request, Status};
use xsknet_dataplane::control::server::serve;

const CONFLIST: &str = "10-xsknet.conflist";

/// A daemon stand-in whose status says ready from `ready_at` on (never when `None`),
/// recording when it first said so.
struct FlipHandler {
    ready_at: Option<Instant>,
    first_ready: Arc<Mutex<Option<Instant>>>,
}

impl Handler for FlipHandler {
    fn handle(&mut self, request: Request) -> Result<Value, ControlError> {
        match request {
            Request::Status => {
                let now = Instant::now();
                let ready = self.ready_at.is_some_and(|t| now >= t);
                if ready {
                    self.first_ready.lock().unwrap().get_or_insert(now);
                }
                let s = Status {
                    version: "0.1.0-test".into(),
                    ready,
                    pod_cidr: "10.244.7.0/24".into(),
                    ..Default::default()
                };
                Ok(serde_json::to_value(s).unwrap())
            }
            _ => Err(ControlError::new(ErrorKind::InvalidRequest, "fake daemon")),
        }
    }
}

/// The fake daemon's serving thread, stopped and joined on drop.
struct FakeDaemon {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    first_ready: Arc<Mutex<Option<Instant>>>,
}

impl FakeDaemon {
    fn start(socket: &Path, ready_after: Option<Duration>) -> FakeDaemon {
        let stop = Arc::new(AtomicBool::new(false));
        let first_ready = Arc::new(Mutex::new(None));
        let mut handler = FlipHandler {
            ready_at: ready_after.map(|d| Instant::now() + d),
            first_ready: first_ready.clone(),
        };
        let (path, flag) = (socket.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            serve(&path, &mut handler, &flag).expect("fake daemon serves");
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "fake daemon did not bind");
            std::thread::sleep(Duration::from_millis(5));
        }
        FakeDaemon {
            stop,
            thread: Some(thread),
            first_ready,
        }
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a watcher polling both directories saw.
#[derive(Default, Debug)]
struct Seen {
    /// Every file name ever listed in either directory.
    names: BTreeSet<String>,
    /// Reads of the conflist that did not parse, or of the binary that did not match.
    torn: Vec<String>,
    conflist_first_seen: Option<Instant>,
    binary_first_seen: Option<Instant>,
    conflist_reads: usize,
}

/// Polls `bin` and `conf` until `stop`: whenever the final names exist, their whole
/// content must be the final content.
fn watch(
    bin: PathBuf,
    conf: PathBuf,
    expected_binary: Arc<Vec<u8>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Seen> {
    std::thread::spawn(move || {
        let mut seen = Seen::default();
        while !stop.load(Ordering::Relaxed) {
            for dir in [&bin, &conf] {
                let Ok(entries) = fs::read_dir(dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    seen.names
                        .insert(e.file_name().to_string_lossy().into_owned());
                }
            }
            if let Ok(bytes) = fs::read(conf.join(CONFLIST)) {
                seen.conflist_first_seen.get_or_insert_with(Instant::now);
                seen.conflist_reads += 1;
                if serde_json::from_slice::<Value>(&bytes).is_err() {
                    seen.torn
                        .push(format!("conflist: {}", String::from_utf8_lossy(&bytes)));
                }
            }
            if let Ok(bytes) = fs::read(bin.join("xsknet")) {
                seen.binary_first_seen.get_or_insert_with(Instant::now);
                if bytes != *expected_binary {
                    seen.torn.push(format!(
                        "binary: {} of {} bytes",
                        bytes.len(),
                        expected_binary.len()
                    ));
                }
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        seen
    })
}

fn xsknetd() -> Command {
    Command::new(common::bin("xsknetd"))
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A node's worth of temp paths.
struct Node {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    state: PathBuf,
    bin: PathBuf,
    conf: PathBuf,
    plugin: PathBuf,
    plugin_bytes: Arc<Vec<u8>>,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        // 8 MiB of non-repeating bytes: copying takes long enough to be caught midway
        // if it were not atomic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let bytes: Vec<u8> = (0..8 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let plugin = p.join("build").join("xsknet");
        fs::create_dir_all(plugin.parent().unwrap()).unwrap();
        fs::write(&plugin, &bytes).unwrap();
        Node {
            socket: p.join("run").join("xsknetd.sock"),
            state: p.join("state"),
            bin: p.join("opt-cni-bin"),
            conf: p.join("etc-cni-net.d"),
            plugin,
            plugin_bytes: Arc::new(bytes),
            _dir: dir,
        }
    }

    fn cmd(&self, sub: &str) -> Command {
        let mut c = xsknetd();
        c.arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state)
            .arg(sub)
            .arg("--cni-bin-dir")
            .arg(&self.bin)
            .arg("--cni-conf-dir")
            .arg(&self.conf);
        c
    }

    fn install(&self, timeout_secs: &str) -> Command {
        let mut c = self.cmd("install-cni");
        c.arg("--plugin-binary")
            .arg(&self.plugin)
            .arg("--wait-ready-timeout")
            .arg(timeout_secs);
        c
    }

    fn expected_conflist(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "xsknet",
            "plugins": [
                {"type": "xsknet", "socket": self.socket, "stateDir": self.state, "mtu": 1500},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        })
    }

    fn assert_no_temp_files(&self) {
        for dir in [&self.bin, &self.conf] {
            let names: Vec<String> = fs::read_dir(dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            let expected = if dir == &self.bin { "xsknet" } else { CONFLIST };
            assert_eq!(names, [expected], "leftovers in {}", dir.display());
        }
    }
}

/// Kills the child by pid on drop (a failing assertion must not leave it running).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn install_writes_binary_first_and_conflist_only_when_ready() {
    let node = Node::new();
    let ready_after = Duration::from_millis(1000);
    let daemon = FakeDaemon::start(&node.socket, Some(ready_after));
    let started = Instant::now();

    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = watch(
        node.bin.clone(),
        node.conf.clone(),
        node.plugin_bytes.clone(),
        stop_watch.clone(),
    );
    let child = node
        .install("20")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);

    // Before the daemon is ready: the binary is there, complete and executable, and no
    // configuration tells the runtime to use it yet.
    let deadline = started + Duration::from_millis(600);
    let installed = node.bin.join("xsknet");
    while !installed.exists() {
        assert!(
            Instant::now() < deadline,
            "binary not installed within 600 ms"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        Instant::now() < started + ready_after,
        "machine too slow for this check"
    );
    assert_eq!(fs::read(&installed).unwrap(), *node.plugin_bytes);
    let mode = fs::metadata(&installed).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755, "plugin mode");
    assert!(
        !node.conf.join(CONFLIST).exists(),
        "conflist written before the daemon was ready"
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "install-cni did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        status.success(),
        "install-cni: {status}\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(CONFLIST), "{stdout}");

    // Let the watcher see the final state a while, then stop it.
    std::thread::sleep(Duration::from_millis(100));
    stop_watch.store(true, Ordering::SeqCst);
    let seen = watcher.join().unwrap();

    let first_ready = daemon
        .first_ready
        .lock()
        .unwrap()
        .expect("daemon said ready");
    let conflist_seen = seen.conflist_first_seen.expect("watcher saw the conflist");
    assert!(
        conflist_seen >= first_ready,
        "conflist seen {:?} before the daemon first said ready",
        first_ready - conflist_seen
    );
    assert!(
        seen.binary_first_seen.expect("watcher saw the binary") < first_ready,
        "binary should be installed before readiness"
    );
    assert!(
        seen.torn.is_empty(),
        "partial files observed: {:?}",
        seen.torn
    );
    assert!(seen.conflist_reads > 0);
    // Runtimes read `*.conflist`/`*.conf`/`*.json`: no temp name may ever match.
    for name in &seen.names {
        if name != CONFLIST {
            assert!(
                !(name.ends_with(".conflist")
                    || name.ends_with(".conf")
                    || name.ends_with(".json")),
                "a runtime could have read {name}"
            );
        }
    }
    node.assert_no_temp_files();

    let written: Value =
        serde_json::from_slice(&fs::read(node.conf.join(CONFLIST)).unwrap()).unwrap();
    assert_eq!(written, node.expected_conflist());
    let mode = fs::metadata(node.conf.join(CONFLIST))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644, "conflist mode");

    // Installing again is a no-op in effect (daemon is ready now).
    let again = node.install("5").output().unwrap();
    assert!(again.status.success(), "{}", text(&again));
    node.assert_no_temp_files();
    assert_eq!(fs::read(&installed).unwrap(), *node.plugin_bytes);

    // Uninstall removes both; twice is fine.
    let out = node.cmd("uninstall-cni").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let conf_line = said.find(CONFLIST).expect("mentions the conflist");
    let bin_line = said.find("xsknet\n").expect("mentions the binary");
    assert!(conf_line < bin_line, "conflist must go first: {said}");
    assert!(!node.conf.join(CONFLIST).exists());
    assert!(!installed.exists());
    let out = node.cmd("uninstall-cni").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("already absent"));
}

#[test]
fn install_fails_naming_the_socket_when_never_ready() {
    let node = Node::new();
    let _daemon = FakeDaemon::start(&node.socket, None);
    let t = Instant::now();
    let out = node.install("1").output().unwrap();
    let took = t.elapsed();
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&node.socket.display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("ready=false"), "{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(!node.conf.join(CONFLIST).exists());
    assert!(!node.conf.exists() || fs::read_dir(&node.conf).unwrap().next().is_none());
}

#[test]
fn install_fails_naming_the_socket_when_no_daemon() {
    let node = Node::new();
    let out = node.install("0.5").output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&node.socket.display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("cannot reach xsknetd"), "{stderr}");
    assert!(!node.conf.join(CONFLIST).exists());
}

#[test]
fn install_refuses_a_missing_plugin_binary() {
    let node = Node::new();
    let _daemon = FakeDaemon::start(&node.socket, Some(Duration::ZERO));
    fs::remove_file(&node.plugin).unwrap();
    let out = node.install("5").output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&node.plugin.display().to_string()),
        "{stderr}"
    );
    assert!(!node.conf.join(CONFLIST).exists());
}

/// A runtime may be executing the plugin while a new version is installed (DaemonSet
/// upgrade on a busy node). Writing into the running file fails with ETXTBSY; the
/// rename puts a new inode in place and the running process keeps the old one.
#[test]
fn install_replaces_a_plugin_while_it_runs() {
    let node = Node::new();
    let _daemon = FakeDaemon::start(&node.socket, Some(Duration::ZERO));
    fs::copy("/bin/sleep", &node.plugin).unwrap();
    let out = node.install("5").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let running = Reaped(
        Command::new(node.bin.join("xsknet"))
            .arg("30")
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(100));
    // The premise: the running executable cannot be written in place.
    let in_place = fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{}/exe", running.0.id()));
    assert_eq!(
        in_place.err().and_then(|e| e.raw_os_error()),
        Some(libc::ETXTBSY)
    );
    let mut v2 = fs::read("/bin/sleep").unwrap();
    v2.extend_from_slice(b"\0xsknet-v2");
    fs::write(&node.plugin, &v2).unwrap();
    let out = node.install("5").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fs::read(node.bin.join("xsknet")).unwrap(), v2);
    node.assert_no_temp_files();
}

#[test]
fn chain_flag_shapes_the_conflist() {
    let node = Node::new();
    let _daemon = FakeDaemon::start(&node.socket, Some(Duration::ZERO));
    let out = node
        .install("5")
        .args(["--chain", "portmap,bandwidth", "--mtu", "1450"])
        .args(["--conflist-name", "05-xsk.conflist"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: Value =
        serde_json::from_slice(&fs::read(node.conf.join("05-xsk.conflist")).unwrap()).unwrap();
    let types: Vec<&str> = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["xsknet", "portmap", "bandwidth"]);
    assert_eq!(v["plugins"][0]["mtu"], 1450);
    let out = node
        .install("5")
        .args(["--chain", "none"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&fs::read(node.conf.join(CONFLIST)).unwrap()).unwrap();
    assert_eq!(v["plugins"].as_array().unwrap().len(), 1);
    let out = node
        .install("5")
        .args(["--chain", "nosuch"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch"));
}

#[test]
fn probe_exit_code_follows_readiness() {
    let node = Node::new();
    let probe = |node: &Node| {
        xsknetd()
            .arg("--socket")
            .arg(&node.socket)
            .arg("probe")
            .output()
            .unwrap()
    };
    let out = probe(&node);
    assert!(!out.status.success(), "no daemon: {}", text(&out));
    {
        let _d = FakeDaemon::start(&node.socket, None);
        let out = probe(&node);
        assert!(!out.status.success(), "not ready: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("not ready"));
    }
    let _d = FakeDaemon::start(&node.socket, Some(Duration::ZERO));
    let out = probe(&node);
    assert!(out.status.success(), "ready: {}", text(&out));
}

/// The DaemonSet mode with the real daemon: `run --install-cni` writes the conflist once
/// ready and removes both files on SIGTERM.
#[test]
fn run_install_cni_installs_when_ready_and_uninstalls_on_sigterm() {
    if !common::privileged() {
        return;
    }
    let node = Node::new();
    let ns = common::Netns::new(&common::prefix("inst"));
    let dir = node.socket.parent().unwrap().parent().unwrap();
    let mut daemon = common::NodeDaemon::at(
        common::bin("xsknetd"),
        Some(&ns),
        dir,
        node.socket.clone(),
        node.state.clone(),
        &format!("podCidr: {}\n", testkit::POD_CIDR),
    );
    let args: Vec<&std::ffi::OsStr> = vec![
        "run".as_ref(),
        "--install-cni".as_ref(),
        "--wait-ready-timeout".as_ref(),
        "20".as_ref(),
        "--cni-bin-dir".as_ref(),
        node.bin.as_os_str(),
        "--cni-conf-dir".as_ref(),
        node.conf.as_os_str(),
        "--plugin-binary".as_ref(),
        node.plugin.as_os_str(),
    ];
    daemon.launch(&args);
    let conflist = node.conf.join(CONFLIST);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !conflist.exists() {
        if let Some(st) = daemon.try_wait() {
            panic!("xsknetd exited ({st}): {}", daemon.log_text());
        }
        assert!(
            Instant::now() < deadline,
            "no conflist: {}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Ready by then, by the daemon's own account.
    let out = xsknetd()
        .arg("--socket")
        .arg(&node.socket)
        .arg("probe")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&fs::read(&conflist).unwrap()).unwrap();
    assert_eq!(v, node.expected_conflist());
    assert_eq!(
        fs::read(node.bin.join("xsknet")).unwrap(),
        *node.plugin_bytes
    );

    let st = daemon.terminate();
    let st = st.unwrap_or_else(|| panic!("no exit after SIGTERM: {}", daemon.log_text()));
    assert!(st.success(), "exit {st}: {}", daemon.log_text());
    assert!(!conflist.exists(), "conflist left after SIGTERM");
    assert!(
        !node.bin.join("xsknet").exists(),
        "binary left after SIGTERM"
    );
}

/// Every document of `config/kubernetes/xsknet.yaml` (empty ones skipped).
fn manifest_documents() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/kubernetes/xsknet.yaml"
    );
    let text = fs::read_to_string(path).unwrap();
    let mut docs = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(de)
            .unwrap_or_else(|e| panic!("{path}: document {}: {e}", docs.len()));
        if !v.is_null() {
            docs.push(v);
        }
    }
    docs
}

fn str_of<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("missing string {ptr} in {}", v["kind"]))
}

fn array_of<'a>(v: &'a Value, ptr: &str) -> &'a Vec<Value> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("missing list {ptr} in {}", v["kind"]))
}

#[test]
fn kubernetes_manifest_is_complete_and_consistent() {
    let docs = manifest_documents();
    let kinds: Vec<&str> = docs.iter().map(|d| str_of(d, "/kind")).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet"
        ]
    );
    let by_kind = |k: &str| docs.iter().find(|d| d["kind"] == k).unwrap();
    for d in &docs {
        str_of(d, "/apiVersion");
        str_of(d, "/metadata/name");
        if !str_of(d, "/kind").starts_with("Cluster") {
            assert_eq!(
                str_of(d, "/metadata/namespace"),
                "kube-system",
                "{}",
                d["kind"]
            );
        }
    }

    // RBAC: read nodes, pods, namespaces, networkpolicies; bound to the DaemonSet's SA.
    let sa = str_of(by_kind("ServiceAccount"), "/metadata/name");
    let role = by_kind("ClusterRole");
    for resource in ["nodes", "pods", "namespaces", "networkpolicies"] {
        let rule = array_of(role, "/rules")
            .iter()
            .find(|r| {
                r["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x == resource)
            })
            .unwrap_or_else(|| panic!("no rule for {resource}"));
        for verb in ["get", "list", "watch"] {
            assert!(
                rule["verbs"].as_array().unwrap().iter().any(|v| v == verb),
                "{resource} {verb}"
            );
        }
    }
    // Each xsknetd writes its VTEP annotation on its own Node (merge patch).
    assert!(
        array_of(role, "/rules").iter().any(|r| {
            r["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == "nodes")
                && r["verbs"].as_array().unwrap().iter().any(|v| v == "patch")
        }),
        "patch of nodes"
    );
    let binding = by_kind("ClusterRoleBinding");
    assert_eq!(
        str_of(binding, "/roleRef/name"),
        str_of(role, "/metadata/name")
    );
    assert_eq!(str_of(binding, "/roleRef/kind"), "ClusterRole");
    assert_eq!(str_of(binding, "/subjects/0/name"), sa);
    assert_eq!(str_of(binding, "/subjects/0/namespace"), "kube-system");

    // ConfigMap: a valid node.yaml once the node's pod CIDR is appended, as the
    // render-config init container does; without one it has no podCidr of its own.
    let cm = by_kind("ConfigMap");
    let node_yaml = str_of(cm, "/data/node.yaml");
    assert!(!node_yaml.lines().any(|l| l.starts_with("podCidr:")));
    let rendered = format!("{node_yaml}podCidr: 10.244.3.0/24\nnodeName: worker-1\n");
    let cfg = xsknet_dataplane::config::Config::from_yaml_str(&rendered)
        .unwrap_or_else(|e| panic!("ConfigMap node.yaml: {e}"));
    // The cluster view from the API server, with the in-cluster service account.
    assert!(matches!(
        &cfg.datastore,
        Some(xsknet_dataplane::cluster::config::DatastoreConfig::Kubernetes(k)) if k.kubeconfig.is_none()
    ));
    assert_eq!(cfg.socket, PathBuf::from("/run/xsknet/xsknetd.sock"));
    assert_eq!(cfg.state_dir, PathBuf::from("/var/lib/xsknet"));
    // The metrics endpoint: the port node.yaml listens on is the container's and the
    // one the Prometheus annotations name.
    let metrics_port = cfg.metrics.listen.expect("metrics.listen set").port();
    let ds_pod = &docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap()["spec"]["template"];
    assert_eq!(
        ds_pod["metadata"]["annotations"]["prometheus.io/port"],
        metrics_port.to_string()
    );
    assert_eq!(
        ds_pod["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    let ports = &ds_pod["spec"]["containers"][0]["ports"];
    assert!(
        ports
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["containerPort"] == metrics_port)),
        "no containerPort {metrics_port}: {ports}"
    );

    // DaemonSet.
    let ds = by_kind("DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(k, v)| ds["spec"]["template"]["metadata"]["labels"][k.as_str()] != **v),
        None,
        "selector must match the template labels"
    );
    assert_eq!(pod["hostNetwork"], true);
    assert_ne!(pod["hostPID"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["serviceAccountName"], sa);
    let tolerated: Vec<&str> = array_of(pod, "/tolerations")
        .iter()
        .filter_map(|t| t["key"].as_str())
        .collect();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/network-unavailable",
        "node.cloudprovider.kubernetes.io/uninitialized",
        "node-role.kubernetes.io/control-plane",
    ] {
        assert!(tolerated.contains(&key), "no toleration for {key}");
    }

    let volumes = array_of(pod, "/volumes");
    let host_path = |path: &str| {
        volumes
            .iter()
            .find(|v| v["hostPath"]["path"] == path)
            .map(|v| v["name"].as_str().unwrap())
            .unwrap_or_else(|| panic!("no hostPath volume {path}"))
    };
    let containers = array_of(pod, "/containers");
    let main = &containers[0];
    let mount_of = |c: &Value, volume: &str| -> Value {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume)
            .cloned()
            .unwrap_or_else(|| panic!("{} does not mount {volume}", c["name"]))
    };
    for path in [
        "/opt/cni/bin",
        "/etc/cni/net.d",
        "/var/lib/xsknet",
        "/run/xsknet",
    ] {
        mount_of(main, host_path(path));
    }
    assert_eq!(
        mount_of(main, host_path("/sys/fs/bpf"))["mountPropagation"],
        "Bidirectional"
    );
    assert_eq!(
        mount_of(main, host_path("/run/netns"))["mountPropagation"],
        "HostToContainer"
    );
    // Bidirectional propagation is only allowed for privileged containers.
    assert_eq!(main["securityContext"]["privileged"], true);
    let caps = array_of(main, "/securityContext/capabilities/add");
    for cap in [
        "NET_ADMIN",
        "SYS_ADMIN",
        "BPF",
        "PERFMON",
        "IPC_LOCK",
        "SYS_RESOURCE",
    ] {
        assert!(caps.iter().any(|c| c == cap), "capability {cap}");
    }
    // The state and socket are mounted at the paths the conflist names.
    assert_eq!(
        mount_of(main, host_path("/var/lib/xsknet"))["mountPath"],
        "/var/lib/xsknet"
    );
    assert_eq!(
        mount_of(main, host_path("/run/xsknet"))["mountPath"],
        "/run/xsknet"
    );
    // Every mount of every container names a declared volume; the ConfigMap is used.
    let names: BTreeSet<&str> = volumes
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    let inits = array_of(pod, "/initContainers");
    for c in containers.iter().chain(inits) {
        for m in c["volumeMounts"].as_array().unwrap() {
            assert!(
                names.contains(m["name"].as_str().unwrap()),
                "{} mounts {}",
                c["name"],
                m["name"]
            );
        }
        assert!(c["image"].is_string(), "{} has no image", c["name"]);
    }
    assert!(volumes
        .iter()
        .any(|v| v["configMap"]["name"] == str_of(cm, "/metadata/name")));

    // The commands are ones this xsknetd accepts: cli flags are checked by running
    // them with --help appended (clap rejects an unknown flag before printing help).
    let command: Vec<&str> = array_of(main, "/command")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(&command[..3], ["xsknetd", "run", "--install-cni"]);
    let config_at = command
        .iter()
        .position(|a| *a == "--config")
        .expect("--config");
    assert_eq!(command[config_at + 1], "/etc/xsknet/node.yaml");
    let cni_bin = command[command.iter().position(|a| *a == "--cni-bin-dir").unwrap() + 1];
    assert_eq!(
        mount_of(main, host_path("/opt/cni/bin"))["mountPath"],
        cni_bin
    );
    let cni_conf = command[command.iter().position(|a| *a == "--cni-conf-dir").unwrap() + 1];
    assert_eq!(
        mount_of(main, host_path("/etc/cni/net.d"))["mountPath"],
        cni_conf
    );
    let readiness: Vec<&str> = array_of(main, "/readinessProbe/exec/command")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for argv in [&command, &readiness] {
        assert_eq!(argv[0], "xsknetd");
        let out = xsknetd().args(&argv[1..]).arg("--help").output().unwrap();
        assert!(out.status.success(), "{argv:?}: {}", text(&out));
    }
    assert!(readiness.contains(&"probe"), "{readiness:?}");
}

#[test]
fn example_conflist_is_what_install_writes_by_default() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/cni/10-xsknet.conflist"
    );
    let example: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    let opts = xsknet_dataplane::install::InstallOptions {
        cni_bin_dir: "/opt/cni/bin".into(),
        cni_conf_dir: "/etc/cni/net.d".into(),
        plugin_binary: "xsknet".into(),
        conflist_name: CONFLIST.into(),
        socket: xsknet_dataplane::config::DEFAULT_SOCKET.into(),
        state_dir: xsknet_dataplane::config::DEFAULT_STATE_DIR.into(),
        mtu: xsknet_dataplane::install::DEFAULT_MTU,
        chain: xsknet_dataplane::install::parse_chain(xsknet_dataplane::install::DEFAULT_CHAIN)
            .unwrap(),
        wait_ready_timeout: Duration::from_secs(1),
    };
    assert_eq!(example, opts.conflist());
}
