//! The control socket end to end: the real `mio` server on a temp socket with a fake
//! `Handler`, driven by raw Unix-socket clients, by `control::client`, and by the real
//! `xsknetctl` binary. No privileges needed.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use xsknet_dataplane::control::client::{call, ClientError};
use xsknet_dataplane::control::proto::{
    ControlError, Endpoint, ErrorKind, Handler, PolicyApplied, PolicyRequest, PolicyStatus,
    PortStats, Request, Stats, Status, WorkerStats, MAX_REQUEST_BYTES,
};
use xsknet_dataplane::control::server::{
    bind, serve, serve_listener, ServeOptions, ServerError, TICK_INTERVAL,
};

const T: Duration = Duration::from_secs(5);

/// A daemon stand-in: an endpoint table in memory and canned counters.
struct Fake {
    endpoints: Vec<Endpoint>,
    ticks: Arc<AtomicUsize>,
    /// Once a policy was applied: `status` shows policy generations, the one in force
    /// advancing by one per `status` call (capped at 50).
    policy_in_force: Option<u64>,
}

fn status() -> Status {
    Status {
        version: "0.1.0-test".into(),
        ready: true,
        generation: 3,
        workers: 1,
        endpoints: 0,
        pod_cidr: "10.244.0.0/24".into(),
        local_mtu: None,
        host_port: Some("xsknet0".into()),
        host_ip: None,
        uptime_secs: 42,
        overlay: None,
        persistence: None,
        datastore: None,
        policy: None,
    }
}

fn stats() -> Stats {
    Stats {
        workers: vec![WorkerStats {
            worker: 0,
            core: 1,
            ports: 1,
            rx_packets: 100,
            tx_packets: 97,
            drops: [("no_route".to_string(), 3)].into(),
            ..Default::default()
        }],
        ports: vec![PortStats {
            port: 1,
            ifname: "xsk-a".into(),
            kind: "pod".into(),
            worker: 0,
            ip: Some("10.244.0.5".parse().unwrap()),
            rx_packets: 100,
            rx_bytes: 9800,
            tx_packets: 97,
            tx_bytes: 9506,
            drops: [("no_route".to_string(), 3)].into(),
            xdp: None,
        }],
        policy_hits: Default::default(),
    }
}

impl Handler for Fake {
    fn handle(&mut self, request: Request) -> Result<Value, ControlError> {
        match request {
            Request::Status => {
                let mut s = status();
                if let Some(g) = &mut self.policy_in_force {
                    *g = (*g + 1).min(50);
                    s.policy = Some(PolicyStatus {
                        requested: 100,
                        in_force: *g,
                        compiling: Some(100),
                        ..PolicyStatus::default()
                    });
                }
                Ok(to_json(&s))
            }
            Request::Stats => Ok(to_json(&stats())),
            Request::EndpointList => Ok(to_json(&self.endpoints)),
            Request::EndpointAdd(spec) => {
                if self
                    .endpoints
                    .iter()
                    .any(|e| e.ifname == spec.ifname || e.ip == spec.ip)
                {
                    return Err(ControlError::new(ErrorKind::Conflict, "endpoint exists"));
                }
                let ep = Endpoint {
                    ifname: spec.ifname,
                    ip: spec.ip,
                    mac: spec.mac.unwrap_or_else(|| "02:00:00:00:00:01".into()),
                    namespace: spec.namespace,
                    name: spec.name,
                    labels: spec.labels,
                    cni: spec.cni,
                    port: self.endpoints.len() as u16 + 1,
                    worker: 0,
                };
                self.endpoints.push(ep.clone());
                Ok(to_json(&ep))
            }
            Request::EndpointDel { ifname, ip } => {
                let pos = self
                    .endpoints
                    .iter()
                    .position(|e| Some(&e.ifname) == ifname.as_ref() || Some(e.ip) == ip)
                    .ok_or_else(|| ControlError::new(ErrorKind::NotFound, "no such endpoint"))?;
                Ok(to_json(&self.endpoints.remove(pos)))
            }
            other => Err(ControlError::new(
                ErrorKind::InvalidRequest,
                format!("the test handler does not serve {other:?}"),
            )),
        }
    }

    fn tick(&mut self) {
        self.ticks.fetch_add(1, Ordering::Relaxed);
    }

    /// `policy_apply` answers as the daemon does, durable and compiling: generation 100
    /// (never in force here) for YAML containing "never", else 3.
    fn handle_policy(&mut self, request: PolicyRequest) -> Result<Value, ControlError> {
        match request {
            PolicyRequest::PolicyApply { yaml, .. } => {
                self.policy_in_force.get_or_insert(0);
                Ok(to_json(&PolicyApplied {
                    created: vec!["NetworkPolicy x/p".into()],
                    generation: 9,
                    policy_generation: if yaml.contains("never") { 100 } else { 3 },
                    in_force: false,
                    ..PolicyApplied::default()
                }))
            }
            other => Err(ControlError::new(
                ErrorKind::InvalidRequest,
                format!("the test handler does not serve {other:?}"),
            )),
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("test values serialise")
}

struct TestServer {
    _dir: tempfile::TempDir,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    ticks: Arc<AtomicUsize>,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

impl TestServer {
    fn start() -> Self {
        Self::start_with(ServeOptions::default())
    }

    fn start_with(options: ServeOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // A parent that does not exist yet: bind must create it.
        let path = dir.path().join("run/xsknetd.sock");
        let listener = bind(&path).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let ticks = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (path, stop, ticks) = (path.clone(), stop.clone(), ticks.clone());
            std::thread::spawn(move || {
                let mut fake = Fake {
                    endpoints: Vec::new(),
                    ticks,
                    policy_in_force: None,
                };
                serve_listener(listener, &path, &mut fake, &stop, &options)
            })
        };
        TestServer {
            _dir: dir,
            path,
            stop,
            ticks,
            thread: Some(thread),
        }
    }

    fn shutdown(mut self) -> Result<(), ServerError> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends raw bytes, optionally half-closes, and reads the one-line answer.
fn raw(path: &Path, bytes: &[u8], half_close: bool) -> Value {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    // The server may answer and close before taking everything (oversized requests).
    let _ = s.write_all(bytes);
    if half_close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.contains(&b'\n') {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("read answer: {e} (got {:?})", String::from_utf8_lossy(&buf)),
        }
    }
    assert_eq!(
        buf.last(),
        Some(&b'\n'),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    serde_json::from_slice(&buf).unwrap()
}

fn error_kind(v: &Value) -> &str {
    assert_eq!(v["ok"], false, "{v}");
    v["error"]["kind"].as_str().unwrap()
}

#[test]
fn serves_valid_requests() {
    let srv = TestServer::start();
    let v = call(&srv.path, &Request::Status, T).unwrap();
    assert_eq!(serde_json::from_value::<Status>(v).unwrap(), status());

    let v = raw(&srv.path, b"{\"v\":1,\"op\":\"stats\"}\n", false);
    assert_eq!(v["ok"], true);
    assert_eq!(
        serde_json::from_value::<Stats>(v["result"].clone()).unwrap(),
        stats()
    );

    // End of request by half-close instead of newline.
    let v = raw(&srv.path, b"{\"v\":1,\"op\":\"endpoint_list\"}", true);
    assert_eq!(v, json!({"ok": true, "result": []}));

    let add = Request::EndpointAdd(
        serde_json::from_value(json!({
            "ifname": "xsk-a", "ip": "10.244.0.5", "labels": {"app": "web"}
        }))
        .unwrap(),
    );
    let ep: Endpoint = serde_json::from_value(call(&srv.path, &add, T).unwrap()).unwrap();
    assert_eq!(ep.labels["app"], "web");
    let e = call(&srv.path, &add, T).unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Conflict), "{e}");
    let list = call(&srv.path, &Request::EndpointList, T).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let del = Request::EndpointDel {
        ifname: None,
        ip: Some("10.244.0.5".parse().unwrap()),
    };
    call(&srv.path, &del, T).unwrap();
    let e = call(&srv.path, &del, T).unwrap_err();
    assert!(
        matches!(&e, ClientError::Daemon { kind: ErrorKind::NotFound, message } if message == "no such endpoint"),
        "{e}"
    );
    srv.shutdown().unwrap();
}

#[test]
fn malformed_requests_get_errors_and_the_server_keeps_serving() {
    let srv = TestServer::start();
    let cases: &[(&[u8], &str, &str)] = &[
        (b"{not json\n", "invalid_request", "key must be a string"),
        (b"[1,2]\n", "invalid_request", "JSON object"),
        (b"{\"op\":\"status\"}\n", "invalid_request", "`v`"),
        (
            b"{\"v\":1,\"op\":\"reboot\"}\n",
            "invalid_request",
            "reboot",
        ),
        (
            b"{\"v\":1,\"op\":\"endpoint_add\",\"ip\":\"10.0.0.1\"}\n",
            "invalid_request",
            "ifname",
        ),
        (
            b"{\"v\":1,\"op\":\"status\",\"extra\":1}\n",
            "invalid_request",
            "extra",
        ),
        (b"\xff\xfe\n", "invalid_request", ""),
        (b"\n", "invalid_request", ""),
    ];
    for (bytes, kind, needle) in cases {
        let v = raw(&srv.path, bytes, false);
        assert_eq!(
            error_kind(&v),
            *kind,
            "{:?} -> {v}",
            String::from_utf8_lossy(bytes)
        );
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(needle),
            "{:?} -> {msg}",
            String::from_utf8_lossy(bytes)
        );
        // ... and the next client is served normally.
        call(&srv.path, &Request::Status, T).unwrap();
    }
    srv.shutdown().unwrap();
}

#[test]
fn wrong_version_is_refused_as_such() {
    let srv = TestServer::start();
    let v = raw(&srv.path, b"{\"v\":2,\"op\":\"status\"}\n", false);
    assert_eq!(error_kind(&v), "unsupported_version");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("version 2"),
        "{v}"
    );
    // Even with an op this version does not know.
    let v = raw(&srv.path, b"{\"v\":7,\"op\":\"teleport\"}\n", false);
    assert_eq!(error_kind(&v), "unsupported_version");
}

#[test]
fn oversized_request_is_refused() {
    let srv = TestServer::start();
    let mut big = vec![b' '; MAX_REQUEST_BYTES + 4096];
    big.push(b'\n');
    let v = raw(&srv.path, &big, false);
    assert_eq!(error_kind(&v), "invalid_request");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("exceeds"),
        "{v}"
    );
    // Exactly at the limit is still parsed (and here, valid).
    let req = b"{\"v\":1,\"op\":\"status\"}";
    let mut exact = req.to_vec();
    exact.resize(MAX_REQUEST_BYTES, b' ');
    exact.push(b'\n');
    assert_eq!(raw(&srv.path, &exact, false)["ok"], true);
    call(&srv.path, &Request::Status, T).unwrap();
}

#[test]
fn stalled_clients_do_not_block_others_and_are_dropped() {
    let srv = TestServer::start_with(ServeOptions {
        idle_timeout: Duration::from_millis(1500),
        ..ServeOptions::default()
    });
    let mut silent = UnixStream::connect(&srv.path).unwrap();
    let mut partial = UnixStream::connect(&srv.path).unwrap();
    partial.write_all(b"{\"v\":1,").unwrap();

    let started = Instant::now();
    for _ in 0..5 {
        call(&srv.path, &Request::Status, T).unwrap();
    }
    // Were they waited on, these calls would take the full idle timeout.
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );

    // The idle deadline closes both stalled connections without an answer.
    for s in [&mut silent, &mut partial] {
        s.set_read_timeout(Some(T)).unwrap();
        let mut buf = Vec::new();
        let t0 = Instant::now();
        assert_eq!(s.read_to_end(&mut buf).unwrap(), 0);
        assert!(t0.elapsed() < Duration::from_secs(4));
    }
    call(&srv.path, &Request::Status, T).unwrap();
}

#[test]
fn socket_is_private_and_removed_on_stop() {
    let srv = TestServer::start();
    let mode = std::fs::metadata(&srv.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let parent = std::fs::metadata(srv.path.parent().unwrap()).unwrap();
    assert_eq!(parent.permissions().mode() & 0o777, 0o755);
    // No temporary name left behind next to it.
    let names: Vec<_> = std::fs::read_dir(srv.path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("xsknetd.sock")]);

    let path = srv.path.clone();
    let t0 = Instant::now();
    srv.shutdown().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert!(!path.exists());
}

/// The loop ticks on its own, without requests, and sleeps between ticks. Waits on
/// the condition (a few ticks happened) with a generous deadline, so a slow or busy
/// machine delays the test instead of failing it; the no-spinning bound only ever
/// gets looser when the scheduler is late.
#[test]
fn ticks_without_requests_and_sleeps_between_ticks() {
    const WANT: usize = 3;
    let srv = TestServer::start();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(30);
    while srv.ticks.load(Ordering::Relaxed) < WANT {
        assert!(
            Instant::now() < deadline,
            "only {} ticks in 30 s",
            srv.ticks.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = t0.elapsed();
    let ticks = srv.ticks.load(Ordering::Relaxed) as u128;
    // A loop that spun instead of waiting for TICK_INTERVAL would tick thousands of
    // times; a sleeping one at most about once per interval.
    let bound = 2 * elapsed.as_millis() / TICK_INTERVAL.as_millis() + 2;
    assert!(
        ticks <= bound,
        "{ticks} ticks in {elapsed:?}: the loop does not sleep between ticks"
    );
}

#[test]
fn live_socket_is_not_stolen_but_stale_one_is_replaced() {
    let srv = TestServer::start();
    let e = bind(&srv.path).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("another xsknetd is serving {}", srv.path.display())
    );
    call(&srv.path, &Request::Status, T).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let _l = bind(&stale).unwrap();
    UnixStream::connect(&stale).unwrap();

    let file = dir.path().join("plain");
    std::fs::write(&file, "x").unwrap();
    let e = bind(&file).unwrap_err().to_string();
    assert!(e.contains("not a socket"), "{e}");
}

#[test]
fn serve_binds_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut fake = Fake {
                endpoints: Vec::new(),
                ticks: Arc::default(),
                policy_in_force: None,
            };
            serve(&path, &mut fake, &stop)
        })
    };
    let t0 = Instant::now();
    let v = loop {
        match call(&path, &Request::Status, T) {
            Ok(v) => break v,
            Err(e) if e.is_unreachable() && t0.elapsed() < T => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(v["ready"], true);
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap().unwrap();
    assert!(!path.exists());
}

fn xsknetctl(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xsknetctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("XSKNET_SOCKET")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn xsknetctl_policy_apply_waits_for_its_generation_and_bounds_the_wait() {
    let srv = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let soon = dir.path().join("soon.yaml");
    let never = dir.path().join("never.yaml");
    std::fs::write(&soon, "kind: Namespace # soon").unwrap();
    std::fs::write(&never, "kind: Namespace # never").unwrap();

    // Answered at generation 3 (compiling); in force after a few status polls.
    let (code, stdout, stderr) = xsknetctl(
        &srv.path,
        &["policy", "apply", "-f", &soon.display().to_string()],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("in force: policy generation 3"), "{stdout}");
    // --wait 0: answered as saved, not waited for.
    let (code, stdout, _) = xsknetctl(
        &srv.path,
        &[
            "policy",
            "apply",
            "-f",
            &never.display().to_string(),
            "--wait",
            "0",
        ],
    );
    assert_eq!(code, 0);
    assert!(
        stdout.contains("saved; in force once policy generation 100 is"),
        "{stdout}"
    );
    // Never in force: exit 1 after the bounded wait, saying where it stands.
    let (code, _, stderr) = xsknetctl(
        &srv.path,
        &[
            "policy",
            "apply",
            "-f",
            &never.display().to_string(),
            "--wait",
            "0.3",
        ],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("saved, but not in force after 0.3s: policy generation 100 asked")
            && stderr.contains("compiling 100"),
        "{stderr}"
    );
    let (code, stdout, _) = xsknetctl(&srv.path, &["status"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("(100 requested, compiling 100)"),
        "{stdout}"
    );
}

#[test]
fn xsknetctl_against_the_server() {
    let srv = TestServer::start();

    let (code, stdout, stderr) = xsknetctl(&srv.path, &["status", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let expected = serde_json::to_value(status()).unwrap();
    assert_eq!(stdout, format!("{expected}\n"));

    let (code, stdout, _) = xsknetctl(&srv.path, &["status"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("ready") && stdout.contains("10.244.0.0/24"),
        "{stdout}"
    );

    let (code, stdout, _) = xsknetctl(&srv.path, &["stats"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("xsk-a") && stdout.contains("no_route=3"),
        "{stdout}"
    );

    let (code, _, stderr) = xsknetctl(
        &srv.path,
        &[
            "endpoint",
            "add",
            "--ifname",
            "xsk-b",
            "--ip",
            "10.244.0.6",
            "--label",
            "app=db",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, _) = xsknetctl(&srv.path, &["endpoint", "list"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("xsk-b") && stdout.contains("app=db"),
        "{stdout}"
    );

    // The daemon says no: exit 1, its message on stderr, nothing on stdout.
    let (code, stdout, stderr) = xsknetctl(&srv.path, &["endpoint", "del", "--ifname", "nope"]);
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("not_found") && stderr.contains("no such endpoint"),
        "{stderr}"
    );

    // Usage errors are 1 too; 2 means the daemon is down.
    let (code, _, _) = xsknetctl(&srv.path, &["endpoint", "del"]);
    assert_eq!(code, 1);
    let gone = srv.path.with_file_name("absent.sock");
    let (code, _, stderr) = xsknetctl(&gone, &["status", "--json"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("cannot reach xsknetd at") && stderr.contains("is the daemon running?"),
        "{stderr}"
    );
}

#[test]
fn many_concurrent_clients_are_all_answered() {
    let srv = TestServer::start();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let path = srv.path.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    call(&path, &Request::Stats, T).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
