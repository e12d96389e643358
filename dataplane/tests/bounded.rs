//! Privileged tests of the control plane's bounds (issue 12 point 3): idle and slow
//! clients cannot hold up CNI ADDs and are closed by the request deadline; a policy
//! document nested too deep is refused by the pre-scan while ADDs go on; an ADD whose
//! client went away before its answer leaves nothing allocated; CNI ADDs answer while
//! a large policy set compiles (by policy generations, not by a clock), and the pod
//! added meanwhile ends up with the right policy. Latencies are printed (run with
//! `--nocapture`), never asserted.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use xsknet_dataplane::control::proto::{
    CniAttachment, EndpointSpec, PolicyApplied, PolicyRequest, PolicyStatus, Request, Status,
};

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 0, last)
}

/// A CNI ADD as the plugin makes it: allocate the attachment's address, attach the
/// veth. Returns the time it took.
fn cni_add(d: &Daemon, pod: &Pod, container_id: &str) -> Duration {
    let t = Instant::now();
    let lease = d
        .call(&Request::IpamAllocate {
            container_id: container_id.into(),
            ifname: "eth0".into(),
            ip: Some(pod.ip),
        })
        .unwrap_or_else(|e| panic!("ipam_allocate: {e}\n{}", d.log_text()));
    assert_eq!(lease["ip"], pod.ip.to_string());
    d.call(&Request::EndpointAdd(spec(pod, container_id)))
        .unwrap_or_else(|e| panic!("endpoint_add: {e}\n{}", d.log_text()));
    t.elapsed()
}

fn spec(pod: &Pod, container_id: &str) -> EndpointSpec {
    EndpointSpec {
        ifname: pod.host_if.clone(),
        ip: pod.ip,
        mac: Some(pod.mac.clone()),
        namespace: None,
        name: None,
        labels: Default::default(),
        cni: Some(CniAttachment {
            container_id: container_id.into(),
            ifname: "eth0".into(),
            netns: None,
        }),
    }
}

/// Whether the daemon closed `s` (EOF or reset on read; nothing else is ever sent to
/// these clients, which never complete a request).
fn closed_by_peer(s: &mut UnixStream) -> bool {
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => panic!("a client that never completed a request got an answer"),
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// Keeps `n` clients connected to `socket`, each sending one byte of a request per
/// second if `slow`, nothing otherwise; a client the daemon closes is counted and
/// replaced. Returns the closures seen once `stop` is set.
fn churn(
    socket: PathBuf,
    n: usize,
    slow: bool,
    stop: Arc<AtomicBool>,
    connected: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let request = br#"{"v":1,"op":"status"}"#;
        let connect = |p: &Path| {
            let s = UnixStream::connect(p).expect("connect");
            s.set_nonblocking(true).unwrap();
            (s, 0usize)
        };
        let mut clients: Vec<(UnixStream, usize)> = (0..n).map(|_| connect(&socket)).collect();
        connected.fetch_add(n, Ordering::SeqCst);
        let mut closed = 0;
        let mut last_byte = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            let send = slow && last_byte.elapsed() >= Duration::from_secs(1);
            if send {
                last_byte = Instant::now();
            }
            for c in clients.iter_mut() {
                let mut gone = closed_by_peer(&mut c.0);
                if !gone && send {
                    // One byte a second: the request would take 21 s to arrive.
                    let byte = request[c.1 % request.len()];
                    match c.0.write(&[byte]) {
                        Ok(_) => c.1 += 1,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(_) => gone = true,
                    }
                }
                if gone {
                    closed += 1;
                    *c = connect(&socket);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        closed
    })
}

#[test]
fn idle_and_slow_clients_do_not_hold_up_cni_adds() {
    if !privileged() {
        return;
    }
    let p = prefix("bc");
    let node = Netns::new(&format!("{p}n"));
    let daemon = Daemon::start(&node, &p, "");
    const PODS: u8 = 10;
    let pods: Vec<Pod> = (0..PODS)
        .map(|i| Pod::new(&node, &format!("{p}p{i}"), &format!("{p}h{i}"), ip(20 + i)))
        .collect();
    let baseline: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            daemon.status().expect("status");
            t.elapsed()
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let connected = Arc::new(AtomicUsize::new(0));
    let idle = churn(
        daemon.socket.clone(),
        200,
        false,
        stop.clone(),
        connected.clone(),
    );
    let slow = churn(
        daemon.socket.clone(),
        200,
        true,
        stop.clone(),
        connected.clone(),
    );
    wait_until("400 clients connected", Duration::from_secs(20), || {
        connected.load(Ordering::SeqCst) == 400
    });

    // ADDs spread over more than one request deadline, so they also meet the daemon
    // closing and the churners reconnecting.
    let mut took = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        took.push(cni_add(&daemon, pod, &format!("{p}-c{i}")));
        std::thread::sleep(Duration::from_millis(400));
    }
    // Wait out more than one request deadline after the last ADD.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let idle_closed = idle.join().unwrap();
    let slow_closed = slow.join().unwrap();

    took.sort();
    eprintln!(
        "bounded: status alone {:?}; {} CNI ADDs (ipam_allocate + endpoint_add) with 200 idle + 200 slow clients: min {:?} median {:?} max {:?}; the daemon closed {idle_closed} idle and {slow_closed} slow clients",
        baseline.iter().max().unwrap(),
        took.len(),
        took[0],
        took[took.len() / 2],
        took[took.len() - 1]
    );
    // Functional: every ADD completed (cni_add panics otherwise) and forwards.
    let list = daemon.call(&Request::EndpointList).unwrap();
    assert_eq!(list.as_array().unwrap().len(), PODS as usize, "{list}");
    assert!(pods[0].ping(pods[1].ip, 1), "{}", daemon.log_text());
    // Every client of the first round (and of later rounds) was closed by the request
    // deadline; none got an answer (closed_by_peer panics on one).
    assert!(slow_closed >= 200, "only {slow_closed} slow clients closed");
    assert!(idle_closed >= 200, "only {idle_closed} idle clients closed");
    daemon.status().expect("daemon still serves");
}

#[test]
fn deeply_nested_yaml_is_refused_fast_while_adds_work() {
    if !privileged() {
        return;
    }
    let p = prefix("bn");
    let node = Netns::new(&format!("{p}n"));
    let daemon = Daemon::start(&node, &p, "");
    let pods: Vec<Pod> = (0..2)
        .map(|i| Pod::new(&node, &format!("{p}p{i}"), &format!("{p}h{i}"), ip(30 + i)))
        .collect();
    let yaml = format!("a: {}", "[".repeat(97 * 1024));
    let socket = daemon.socket.clone();
    let hostile = std::thread::spawn(move || {
        let t = Instant::now();
        let r = xsknet_dataplane::control::client::call_policy(
            &socket,
            &PolicyRequest::PolicyApply { yaml, file: None },
            Duration::from_secs(60),
        );
        (r, t.elapsed())
    });
    let add = cni_add(&daemon, &pods[0], &format!("{p}-c0"));
    let (r, refused_in) = hostile.join().unwrap();
    let e = r.expect_err("a 97 KiB document of nested [ must be refused");
    let msg = e.to_string();
    assert!(msg.contains("MAX_YAML_DEPTH"), "{msg}");
    let add2 = cni_add(&daemon, &pods[1], &format!("{p}-c1"));
    eprintln!("bounded: 97 KiB nested YAML refused in {refused_in:?}; ADDs meanwhile {add:?}, after {add2:?}");
    assert!(pods[0].ping(pods[1].ip, 1), "{}", daemon.log_text());
    // Nothing of the refused document is in force.
    let policies = xsknet_dataplane::control::client::call_policy(
        &daemon.socket,
        &PolicyRequest::PolicyList,
        Duration::from_secs(10),
    )
    .expect("policy list");
    assert_eq!(policies, serde_json::json!([]));
}

/// Write `request` without its newline and close: the request is complete only at
/// the close, so its client is gone by the time the daemon answers.
fn send_and_leave(socket: &Path, request: &serde_json::Value) {
    let mut s = UnixStream::connect(socket).unwrap();
    s.write_all(request.to_string().as_bytes()).unwrap();
    drop(s);
}

fn allocated(d: &Daemon, container_id: &str) -> bool {
    let list = d.call(&Request::IpamList).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .any(|a| a["container_id"] == container_id)
}

#[test]
fn add_whose_client_left_leaves_nothing_allocated() {
    if !privileged() {
        return;
    }
    let p = prefix("ba");
    let node = Netns::new(&format!("{p}n"));
    let daemon = Daemon::start(&node, &p, "");
    let pod = Pod::new(&node, &format!("{p}p0"), &format!("{p}h0"), ip(40));

    // ipam_allocate whose client left: the address is released again.
    let gone = format!("{p}-gone-ipam");
    send_and_leave(
        &daemon.socket,
        &serde_json::json!({"v": 1, "op": "ipam_allocate", "container_id": gone, "ifname": "eth0"}),
    );
    wait_until(
        "abandoned allocation undone",
        Duration::from_secs(10),
        || daemon.log_text().contains("address released"),
    );
    assert!(!allocated(&daemon, &gone), "{}", daemon.log_text());

    // endpoint_add whose client left (after a delivered ipam_allocate): the endpoint is
    // detached and the attachment's address released.
    let cid = format!("{p}-gone-add");
    daemon
        .call(&Request::IpamAllocate {
            container_id: cid.clone(),
            ifname: "eth0".into(),
            ip: Some(pod.ip),
        })
        .unwrap();
    assert!(allocated(&daemon, &cid));
    let mut req = serde_json::to_value(spec(&pod, &cid)).unwrap();
    req["v"] = 1.into();
    req["op"] = "endpoint_add".into();
    send_and_leave(&daemon.socket, &req);
    wait_until("abandoned ADD undone", Duration::from_secs(10), || {
        !allocated(&daemon, &cid)
    });
    let log = daemon.log_text();
    assert!(log.contains("endpoint removed"), "{log}");
    let eps = daemon.call(&Request::EndpointList).unwrap();
    assert_eq!(eps, serde_json::json!([]), "{log}");
    // The same ADD with a client that stays works (the slot and address were freed).
    cni_add(&daemon, &pod, &cid);
    assert!(allocated(&daemon, &cid));
}

/// The daemon's policy compilation state.
fn policy_status(d: &Daemon) -> PolicyStatus {
    let v = d.call(&Request::Status).expect("status");
    let s: Status = serde_json::from_value(v).expect("status decodes");
    s.policy.expect("a daemon with policy generations")
}

/// `groups` NetworkPolicies of namespace `big`, `first..first+groups`, each selecting
/// the `app: big` pods except those labelled `skip: <its number>`, with `rules`
/// ingress rules from overlapping blocks (/8 to /28) outside the pod CIDR on port
/// ranges: every pod of a different `skip` gets a classifier of its own, of
/// (groups − 1) × rules rules, which is what makes the compile long.
fn big_policies(first: usize, groups: usize, rules: usize) -> String {
    use std::fmt::Write as _;
    let mut y = String::new();
    for g in first..first + groups {
        let _ = write!(
            y,
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: big-{g}, namespace: big}}\nspec:\n  podSelector:\n    matchLabels: {{app: big}}\n    matchExpressions: [{{key: skip, operator: NotIn, values: [\"{g}\"]}}]\n  policyTypes: [Ingress]\n  ingress:\n"
        );
        for r in 0..rules {
            let h = ((g * rules + r) as u32).wrapping_mul(2_654_435_761);
            let prefix = [8u32, 12, 16, 20, 24, 28][r % 6];
            let net = (0x0b00_0000 | (h >> 8)) & (u32::MAX << (32 - prefix));
            let lo = 1 + (h % 60000);
            let _ = writeln!(
                y,
                "  - from: [{{ipBlock: {{cidr: {}/{prefix}}}}}]\n    ports: [{{protocol: TCP, port: {lo}, endPort: {}}}]",
                Ipv4Addr::from(net),
                lo + h % 97
            );
        }
    }
    y
}

fn apply(d: &Daemon, yaml: String) -> PolicyApplied {
    let v = xsknet_dataplane::control::client::call_policy(
        &d.socket,
        &PolicyRequest::PolicyApply { yaml, file: None },
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("policy apply: {e}\n{}", d.log_text()));
    serde_json::from_value(v).expect("PolicyApplied")
}

fn wait_in_force(d: &Daemon, generation: u64) {
    wait_until(
        &format!("policy generation {generation} in force"),
        Duration::from_secs(120),
        || policy_status(d).in_force >= generation,
    );
}

#[test]
fn cni_adds_do_not_wait_for_a_policy_compile() {
    if !privileged() {
        return;
    }
    let p = prefix("bp");
    let node = Netns::new(&format!("{p}n"));
    let daemon = Daemon::start(&node, &p, "");
    const GROUPS: usize = 8;
    const RULES: usize = 1500;
    // One pod per group (each its own classifier once the policies are in), a client
    // the pods admit on 8080 and a stranger they do not.
    let mut pods: Vec<Pod> = (0..GROUPS)
        .map(|g| {
            let skip = g.to_string();
            daemon.cni_pod(
                &node,
                &format!("{p}b{g}"),
                "big",
                &format!("b{g}"),
                &[("app", "big"), ("skip", &skip)],
                ip(50 + g as u8),
            )
        })
        .collect();
    let client = daemon.cni_pod(
        &node,
        &format!("{p}cl"),
        "big",
        "client",
        &[("role", "client")],
        ip(70),
    );
    let stranger = daemon.cni_pod(
        &node,
        &format!("{p}st"),
        "big",
        "stranger",
        &[("role", "stranger")],
        ip(71),
    );

    // Half the rules first (an apply is at most 1 MiB), in force before the rest.
    let first = apply(&daemon, big_policies(0, GROUPS / 2, RULES));
    wait_in_force(&daemon, first.policy_generation);
    let allow_client = "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-client, namespace: big}\nspec:\n  podSelector: {matchLabels: {app: big}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {role: client}}}]\n    ports: [{port: 8080}]\n";
    let applied = apply(
        &daemon,
        format!(
            "{}{allow_client}",
            big_policies(GROUPS / 2, GROUPS / 2, RULES)
        ),
    );
    let g = applied.policy_generation;
    assert!(g > first.policy_generation, "{applied:?}");
    // The apply answered once durable, before its compile finished.
    assert!(!applied.in_force, "{applied:?}");

    // A CNI ADD (the real plugin: ipam_allocate + veth + endpoint_add) while the
    // compile of `g` runs, then a look at the daemon's generations.
    let before = policy_status(&daemon);
    let t = Instant::now();
    let web = daemon.cni_pod(
        &node,
        &format!("{p}web"),
        "big",
        "web",
        &[("app", "big"), ("skip", "web")],
        ip(80),
    );
    let add_took = t.elapsed();
    let after = policy_status(&daemon);
    eprintln!(
        "bounded: CNI ADD took {add_took:?} while policy generation {g} compiled; before {before:?}; after {after:?}"
    );
    // The ADD answered before the compile in flight when it started had finished: it
    // did not wait for it. (Its own change is a later generation.)
    assert!(
        before.in_force < g,
        "compile of {g} finished before the ADD started: {before:?}"
    );
    assert!(
        after.in_force < g,
        "the ADD answered only after the compile of generation {g} finished: {after:?}\n{}",
        daemon.log_text()
    );
    assert!(
        after.requested > g,
        "the ADD asked for a generation of its own: {after:?}"
    );
    // Until a generation with it is in force, the new pod (selected by the policies)
    // is held isolated.
    assert!(after.pending_endpoints >= 1, "{after:?}");

    // Then the compile of everything, the new pod included, comes into force: the pod
    // has exactly its policy — the client gets in on 8080, the stranger does not.
    wait_in_force(&daemon, after.requested);
    let done = policy_status(&daemon);
    assert_eq!(done.pending_endpoints, 0, "{done:?}");
    assert_eq!(done.compile_errors, 0, "{done:?}");
    let log = daemon.log_text();
    let compiled: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("policy compiled"))
        .collect();
    eprintln!(
        "bounded: compiles {} (coalesced {}), last {} ms, max {} ms; daemon log:\n{}",
        done.compiles,
        done.coalesced,
        done.last_compile_ms,
        done.max_compile_ms,
        compiled.join("\n")
    );
    serve(&web, &[8080, 8081]);
    assert!(
        tcp_connects(&client, web.ip, 8080, Duration::from_secs(5)),
        "client -> web:8080 is allowed\n{}",
        daemon.log_text()
    );
    assert!(!tcp_connects(
        &stranger,
        web.ip,
        8080,
        Duration::from_secs(2)
    ));
    assert!(!tcp_connects(&client, web.ip, 8081, Duration::from_secs(2)));
    let list = xsknet_dataplane::control::client::call_policy(
        &daemon.socket,
        &PolicyRequest::PolicyList,
        Duration::from_secs(10),
    )
    .expect("policy list");
    let from_client = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "from-client")
        .cloned()
        .expect("from-client listed");
    assert_eq!(from_client["selected"], GROUPS + 1, "{from_client}");
    pods.push(web);
    for pod in pods.iter().chain([&client, &stranger]) {
        daemon.cni_del(&node, pod);
    }
}
