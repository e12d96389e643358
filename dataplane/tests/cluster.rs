//! Privileged tests of xsknet as a cluster (issue 9, points 4, 6 and 8) on the testbed
//! of `testkit::testbed`: nodes are network namespaces whose `eth0` is a veth on an
//! underlay bridge, each runs the real `xsknetd`, pods are made by the real CNI plugin,
//! the datastore is none (static `overlay.peers`) or a real etcd of one or three
//! members. Every test removes what it made when it ends, also on failure (the
//! testbed's `Drop`).
//!
//! Static-mode tests run on any build with the overlay. The etcd-mode tests need the
//! daemon's etcd wiring (`nodeName`, `datastore`, `overlay.clusterCidr` claims,
//! `xsknetctl node list`, `policy apply` into etcd); they fail, not skip, without it.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use testkit::testbed::{tcp_transfer, udp_stream, Datastore, Options, Pod, PodCidrs, Testbed};
use testkit::{privileged, try_sh, wait_until};

const PING_DEADLINE: Duration = Duration::from_secs(20);

fn testbed(tag: &str, opts: Options) -> Option<Testbed> {
    if !privileged() {
        return None;
    }
    Testbed::new(tag, opts)
}

fn assert_ping(tb: &Testbed, from: &Pod, to: Ipv4Addr) {
    assert!(
        from.ping_until(to, PING_DEADLINE),
        "{} ({}) cannot ping {to}\n{}",
        from.name,
        from.ip,
        tb.logs()
    );
}

/// Every pod pings every other pod.
fn assert_mesh(tb: &Testbed, pods: &[Pod]) {
    for a in pods {
        for b in pods {
            if a.ip != b.ip {
                assert_ping(tb, a, b.ip);
            }
        }
    }
}

fn uplink_counter(tb: &Testbed, node: usize, field: &str) -> u64 {
    let out = tb.ctl_ok(node, &["stats", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("stats json");
    v["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter(|p| p["kind"] == "uplink")
        .map(|p| p[field].as_u64().unwrap_or(0))
        .sum()
}

/// Three nodes, a pod on each: a ping mesh, a few MiB of TCP across nodes in both
/// directions with checksums at both ends, and UDP counted at both sockets and on the
/// uplinks.
fn tcp_and_udp_across_nodes(datastore: Datastore) {
    let Some(mut tb) = testbed("cl", Options::new(3, datastore)) else {
        return;
    };
    let pods: Vec<Pod> = (0..3)
        .map(|i| tb.pod(i, "default", &format!("p{i}"), &[], None))
        .collect();
    assert_mesh(&tb, &pods);

    for (a, b, port, bytes) in [(0, 1, 5001, 6 << 20), (2, 0, 5002, 3 << 20)] {
        let t = tcp_transfer(&pods[a], &pods[b], port, bytes);
        assert!(
            t.intact() && t.sent == bytes,
            "TCP n{} → n{}: {t:?}\n{}",
            a + 1,
            b + 1,
            tb.logs()
        );
    }

    let tx0 = uplink_counter(&tb, 0, "tx_packets");
    let rx2 = uplink_counter(&tb, 2, "rx_packets");
    // Paced (one datagram every 300 µs), not a burst: UDP may drop a burst a CPU-starved
    // worker cannot drain (two testbeds share two cores in the test run); what is
    // counted here is the path, not the machine's headroom.
    let n = 3000;
    let (sent, got) = udp_stream(
        &pods[0],
        &pods[2],
        6001,
        n,
        64,
        Some(Duration::from_micros(300)),
    );
    assert_eq!(sent, n, "the sender's socket took every datagram");
    assert_eq!(got, sent, "UDP n1 → n3: {got} of {sent}\n{}", tb.logs());
    let tx = uplink_counter(&tb, 0, "tx_packets") - tx0;
    let rx = uplink_counter(&tb, 2, "rx_packets") - rx2;
    assert!(
        tx >= sent as u64 && rx >= got as u64,
        "uplink counters: n1 sent {tx}, n3 received {rx} for {sent} datagrams"
    );
}

#[test]
fn static_three_nodes_carry_tcp_byte_identical_and_udp_counted() {
    tcp_and_udp_across_nodes(Datastore::Static);
}

#[test]
fn etcd_three_nodes_carry_tcp_byte_identical_and_udp_counted() {
    tcp_and_udp_across_nodes(Datastore::Etcd { members: 1 });
}

/// The overlay facts a node reports: (pod prefix, VTEP MAC).
fn identity(tb: &Testbed, i: usize) -> (String, String) {
    let st = tb.nodes[i].daemon.status().expect("status");
    (
        tb.pod_cidr(i),
        st["overlay"]["vtep_mac"]
            .as_str()
            .unwrap_or_else(|| panic!("no overlay in status: {st}"))
            .to_string(),
    )
}

/// Restarting one node's daemon keeps its pod prefix and VTEP MAC, its pods keep their
/// addresses, and the other nodes' traffic to it resumes.
fn restart_keeps_identity(opts: Options) {
    let Some(mut tb) = testbed("cr", opts) else {
        return;
    };
    let a = tb.pod(0, "default", "a", &[], None);
    let b = tb.pod(1, "default", "b", &[], None);
    assert_ping(&tb, &a, b.ip);
    let before = identity(&tb, 1);
    assert_eq!(
        before.1, tb.nodes[1].vtep_mac,
        "derived from the underlay address"
    );

    assert!(tb.nodes[1].daemon.stop(), "clean stop:\n{}", tb.logs());
    tb.nodes[1].daemon.spawn();
    assert_eq!(
        identity(&tb, 1),
        before,
        "prefix and VTEP MAC after a restart"
    );
    assert_ping(&tb, &a, b.ip);
    assert_ping(&tb, &b, a.ip);
    let t = tcp_transfer(&a, &b, 5003, 1 << 20);
    assert!(
        t.intact(),
        "TCP to the restarted node: {t:?}\n{}",
        tb.logs()
    );

    // Killed hard, too: the prefix is owned, not leased.
    let pid = tb.nodes[1].daemon.pid().expect("running");
    let _ = try_sh(&["kill", "-KILL", &pid.to_string()]);
    wait_until("xsknetd gone", Duration::from_secs(5), || {
        tb.nodes[1].daemon.try_wait().is_some()
    });
    tb.nodes[1].daemon.terminate();
    tb.nodes[1].daemon.spawn();
    assert_eq!(
        identity(&tb, 1),
        before,
        "prefix and VTEP MAC after SIGKILL"
    );
    assert_ping(&tb, &a, b.ip);
}

#[test]
fn static_restarting_one_xsknetd_keeps_its_vtep_and_traffic_resumes() {
    restart_keeps_identity(Options::new(2, Datastore::Static));
}

#[test]
fn etcd_restarting_one_xsknetd_keeps_its_claimed_subnet_and_vtep_mac() {
    let mut o = Options::new(2, Datastore::Etcd { members: 1 });
    o.pod_cidrs = PodCidrs::Claimed;
    restart_keeps_identity(o);
}

// ---------------------------------------------------------------- policy across nodes

/// Serve TCP on `port` inside `pod` for the rest of the test process: each connection
/// gets one byte `k` (the listener's threads are detached; the socket goes with the
/// pod's namespace).
fn serve(pod: &Pod, port: u16) {
    use std::io::Write;
    let ip = pod.ip;
    let l: std::net::TcpListener =
        pod.run(|| std::net::TcpListener::bind((ip, port)).expect("bind in pod"));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.write_all(b"k");
        }
    });
}

/// A TCP connection from `from` to `to:port` that got the server's byte (SYN,
/// SYN-ACK and data both ways went through).
fn connects(from: &Pod, to: Ipv4Addr, port: u16) -> bool {
    use std::io::Read;
    let t = Duration::from_secs(2);
    from.run(|| {
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&(to, port).into(), t) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(t));
        let mut b = [0u8; 1];
        matches!(s.read(&mut b), Ok(1) if b[0] == b'k')
    })
}

type Table = std::collections::BTreeMap<(String, String), bool>;

fn key(p: &Pod) -> String {
    format!("{}/{}", p.namespace, p.name)
}

/// The web pod on n1 admits only app=good (ingress, at n1); the good pod on n2 may
/// only open connections to app=web and takes no new connection at all (egress and
/// ingress, at n2), so its connections to web work only because replies are allowed
/// statefully. `other` (n3) and `bad` (n2) are unrestricted.
const POLICIES: &str = "\
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-good, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: good}}}]
    ports: [{protocol: TCP, port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: good-only-to-web, namespace: default}
spec:
  podSelector: {matchLabels: {app: good}}
  policyTypes: [Ingress, Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{protocol: TCP, port: 80}]
";

/// The same intent with ipBlocks, for static mode (no datastore: a node knows only its
/// own pods' identities, so selectors cannot name pods on other nodes there).
const IP_POLICIES: &str = "\
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-good, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - from: [{ipBlock: {cidr: 10.244.2.10/32}}]
    ports: [{protocol: TCP, port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: good-only-to-web, namespace: default}
spec:
  podSelector: {matchLabels: {app: good}}
  policyTypes: [Ingress, Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.244.1.10/32}}]
    ports: [{protocol: TCP, port: 80}]
";

/// Four pods on three nodes (web n1, good and bad n2, other n3), `policies` applied
/// through `xsknetctl policy apply` on `apply_on` (one node with a datastore, every
/// node without), then real TCP connections between every ordered pair equal
/// `xsknetctl policy matrix` on the same objects (and the matrix says what the policies
/// are about).
fn policy_across_nodes(tb: &mut Testbed, policies: &str, apply_on: &[usize]) {
    let spec: [(usize, &str, Ipv4Addr); 4] = [
        (0, "web", Ipv4Addr::new(10, 244, 1, 10)),
        (1, "good", Ipv4Addr::new(10, 244, 2, 10)),
        (1, "bad", Ipv4Addr::new(10, 244, 2, 11)),
        (2, "other", Ipv4Addr::new(10, 244, 3, 10)),
    ];
    let pods: Vec<Pod> = spec
        .iter()
        .map(|&(i, app, ip)| tb.pod(i, "default", app, &[("app", app)], Some(ip)))
        .collect();
    for p in &pods {
        serve(p, 80);
    }
    assert_mesh(tb, &pods);
    let dir = tempfile::tempdir().expect("temp dir");
    let pol = dir.path().join("policies.yaml");
    std::fs::write(&pol, policies).expect("write policies");
    for &i in apply_on {
        tb.ctl_ok(i, &["policy", "apply", "-f", pol.to_str().expect("utf-8")]);
    }

    // The same objects offline: the pods as Pod YAML with their addresses and labels.
    let mut world = String::from(policies);
    for p in &pods {
        world += &format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: default, labels: {{app: {}}}}}\nspec: {{containers: [{{name: c}}]}}\nstatus: {{podIP: {}}}\n",
            p.name, p.name, p.ip
        );
    }
    let wf = dir.path().join("world.yaml");
    std::fs::write(&wf, &world).expect("write world");
    let out = try_sh(&[
        tb.xsknetctl().to_str().expect("utf-8"),
        "policy",
        "matrix",
        "-f",
        wf.to_str().expect("utf-8"),
        "--port",
        "80",
        "--protocol",
        "TCP",
        "--json",
    ]);
    assert!(out.status.success(), "policy matrix: {out:?}");
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).expect("matrix json");
    let mut want = Table::new();
    for (from, row) in m["allowed"].as_object().expect("allowed") {
        for (to, ok) in row.as_object().expect("row") {
            if from != to {
                want.insert((from.clone(), to.clone()), ok.as_bool().expect("bool"));
            }
        }
    }
    assert_eq!(want.len(), 12, "matrix covers every ordered pair: {m}");
    // The cases the policies are about, so the matrix itself is checked too.
    let w = |f: &str, t: &str| want[&(format!("default/{f}"), format!("default/{t}"))];
    assert!(
        w("good", "web"),
        "good → web (egress n2, ingress n1, replies stateful)"
    );
    assert!(!w("bad", "web"), "bad → web refused by ingress at n1");
    assert!(!w("good", "other"), "good → other refused by egress at n2");
    assert!(
        !w("web", "good") && !w("other", "good"),
        "nothing new into good"
    );
    assert!(
        w("web", "other") && w("other", "bad"),
        "unselected pods unaffected"
    );

    // Live: every ordered pair over real connections, polled until every node has the
    // policies (with a datastore they arrive through its watch).
    let live = || -> Table {
        let mut t = Table::new();
        for a in &pods {
            for b in &pods {
                if a.ip != b.ip {
                    t.insert((key(a), key(b)), connects(a, b.ip, 80));
                }
            }
        }
        t
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = live();
    while got != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        got = live();
    }
    assert_eq!(got, want, "live connections = policy matrix\n{}", tb.logs());
}

#[test]
fn static_policy_with_ip_blocks_across_nodes_is_enforced_both_ways_and_equals_the_matrix() {
    let Some(mut tb) = testbed("cs", Options::new(3, Datastore::Static)) else {
        return;
    };
    policy_across_nodes(&mut tb, IP_POLICIES, &[0, 1, 2]);
}

#[test]
fn etcd_policy_on_one_node_about_pods_on_another_is_enforced_both_ways_and_equals_the_matrix() {
    let Some(mut tb) = testbed("cp", Options::new(3, Datastore::Etcd { members: 1 })) else {
        return;
    };
    // Applied on n3 only, which runs none of the pods it selects: etcd carries it.
    policy_across_nodes(&mut tb, POLICIES, &[2]);
}

// ---------------------------------------------------------------- faults

/// Node names in `node list` on node `i` (empty when the command fails).
fn listed(tb: &Testbed, i: usize) -> Vec<String> {
    tb.node_list(i).unwrap_or_default()
}

/// `status.datastore` of node `i` (Null when absent).
fn datastore(tb: &Testbed, i: usize) -> serde_json::Value {
    tb.nodes[i]
        .daemon
        .status()
        .map(|s| s["datastore"].clone())
        .unwrap_or_default()
}

fn all_names(tb: &Testbed) -> Vec<String> {
    let mut v: Vec<String> = tb.nodes.iter().map(|n| n.name.clone()).collect();
    v.sort();
    v
}

#[test]
fn etcd_down_keeps_traffic_flowing_and_nodes_resync_when_it_returns() {
    let mut o = Options::new(3, Datastore::Etcd { members: 1 });
    o.lease_ttl_seconds = 4;
    let Some(mut tb) = testbed("cd", o) else {
        return;
    };
    let pods: Vec<Pod> = (0..3)
        .map(|i| {
            let name = format!("p{i}");
            tb.pod(i, "default", &name, &[("app", &name)], None)
        })
        .collect();
    assert_mesh(&tb, &pods);
    let names = all_names(&tb);
    for i in 0..3 {
        wait_until("every node listed", Duration::from_secs(20), || {
            listed(&tb, i) == names
        });
    }

    tb.etcd.as_mut().expect("etcd").kill_all();
    // Every daemon notices (its view is no longer current) and keeps serving.
    for i in 0..3 {
        wait_until("the outage noticed", Duration::from_secs(20), || {
            datastore(&tb, i)["connected"] == false
        });
    }
    // Past the lease TTL with the datastore gone: routes stay, traffic flows.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(8) {
        for (a, b) in [(0, 1), (1, 2), (2, 0)] {
            assert!(
                pods[a].ping(pods[b].ip, 1),
                "p{a} → p{b} with etcd down ({:?})\n{}",
                t0.elapsed(),
                tb.logs()
            );
        }
    }
    let t = tcp_transfer(&pods[0], &pods[2], 5004, 2 << 20);
    assert!(t.intact(), "TCP with etcd down: {t:?}");
    for i in 0..3 {
        assert!(
            tb.nodes[i]
                .daemon
                .status()
                .is_some_and(|s| s["ready"] == true),
            "n{} still serves while etcd is down\n{}",
            i + 1,
            tb.logs()
        );
        assert_eq!(
            listed(&tb, i),
            names,
            "n{}'s view kept while etcd is down",
            i + 1
        );
    }

    tb.etcd.as_mut().expect("etcd").start_all();
    // Resync: connected and registered again, with every node in the view.
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..3 {
        loop {
            let d = datastore(&tb, i);
            if d["connected"] == true && d["registered"] == true && listed(&tb, i) == names {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "n{} not resynced 30 s after etcd returned: {d}\n{}\n--- etcd\n{}",
                i + 1,
                tb.logs(),
                tb.etcd.as_ref().map(|e| e.log(0)).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // The watches resumed: a policy written through n1 now is enforced on n3.
    let dir = tempfile::tempdir().expect("temp dir");
    let f = dir.path().join("deny.yaml");
    std::fs::write(
        &f,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-p2, namespace: default}\nspec:\n  podSelector: {matchLabels: {app: p2}}\n  policyTypes: [Ingress]\n",
    )
    .expect("write");
    serve(&pods[2], 81);
    assert!(connects(&pods[0], pods[2].ip, 81), "before the policy");
    tb.ctl_ok(0, &["policy", "apply", "-f", f.to_str().expect("utf-8")]);
    wait_until(
        "n3 enforces a policy written after etcd returned",
        Duration::from_secs(30),
        || !connects(&pods[0], pods[2].ip, 81),
    );
    assert!(connects(&pods[0], pods[1].ip, 80) || pods[0].ping(pods[1].ip, 1));
}

#[test]
fn etcd_one_member_of_three_restarted_disturbs_nothing() {
    let Some(mut tb) = testbed("cm", Options::new(3, Datastore::Etcd { members: 3 })) else {
        return;
    };
    let pods: Vec<Pod> = (0..3)
        .map(|i| tb.pod(i, "default", &format!("p{i}"), &[], None))
        .collect();
    assert_mesh(&tb, &pods);
    let names = all_names(&tb);
    for i in 0..3 {
        wait_until("every node listed", Duration::from_secs(20), || {
            listed(&tb, i) == names
        });
    }
    for m in 0..3 {
        // A slow UDP stream through the tunnel (one datagram a millisecond, ~3 s) while
        // member m goes down and comes back: nothing lost, and the view never loses a
        // node.
        let (a, b) = (pods[m].clone(), pods[(m + 1) % 3].clone());
        let gap = Some(Duration::from_millis(1));
        let flow = std::thread::spawn(move || udp_stream(&a, &b, 6100 + m as u16, 3000, 64, gap));
        std::thread::sleep(Duration::from_millis(300));
        tb.etcd.as_mut().expect("etcd").restart_member(m);
        for i in 0..3 {
            assert_eq!(
                listed(&tb, i),
                names,
                "n{}'s view after member {m} restarted\n{}",
                i + 1,
                tb.logs()
            );
        }
        let (sent, got) = flow.join().expect("flow");
        assert_eq!(got, sent, "UDP while member {m} restarted\n{}", tb.logs());
    }
    assert_mesh(&tb, &pods);
    // A node started now still registers and is seen by the others.
    assert!(tb.nodes[2].daemon.stop());
    tb.nodes[2].daemon.spawn();
    for i in 0..3 {
        wait_until("the restarted node listed", Duration::from_secs(20), || {
            listed(&tb, i) == names
        });
    }
}

#[test]
fn etcd_a_node_killed_past_its_lease_leaves_the_others_view_within_the_ttl() {
    let mut o = Options::new(3, Datastore::Etcd { members: 1 });
    o.lease_ttl_seconds = 4;
    o.pod_cidrs = PodCidrs::Claimed;
    let ttl = Duration::from_secs(4);
    let Some(mut tb) = testbed("cl", o) else {
        return;
    };
    let names = all_names(&tb);
    for i in 0..3 {
        wait_until("every node listed", Duration::from_secs(20), || {
            listed(&tb, i) == names
        });
    }
    let before = identity(&tb, 2);
    let pid = tb.nodes[2].daemon.pid().expect("running");
    let _ = try_sh(&["kill", "-KILL", &pid.to_string()]);
    let killed = Instant::now();
    wait_until("n3 killed", Duration::from_secs(5), || {
        tb.nodes[2].daemon.try_wait().is_some()
    });
    tb.nodes[2].daemon.terminate();
    let rest: Vec<String> = names.iter().filter(|n| *n != "n3").cloned().collect();
    // The lease runs out at most one TTL after the last keep-alive; etcd checks expiry
    // about every 500 ms and the watch event then needs to reach the others: allow
    // the TTL plus 2 s before calling it late.
    let late = killed + ttl + Duration::from_secs(2);
    for i in 0..2 {
        let left = late.saturating_duration_since(Instant::now());
        wait_until("n3 gone from the view within the TTL", left, || {
            listed(&tb, i) == rest
        });
    }
    eprintln!(
        "n3 left the others' view {:?} after SIGKILL",
        killed.elapsed()
    );
    // Started again with its state: it comes back with the same prefix.
    tb.nodes[2].daemon.spawn();
    for i in 0..3 {
        wait_until("n3 back", Duration::from_secs(20), || {
            listed(&tb, i) == names
        });
    }
    assert_eq!(identity(&tb, 2), before);
}
