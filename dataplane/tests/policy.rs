//! NetworkPolicy end to end: a real xsknetd (two workers) in a throwaway node
//! namespace, nine pods (namespaces x, y, z × pods a, b, c, labels `pod=a|b|c`)
//! created through the real `xsknet` CNI plugin (CNI ADD inside the node namespace,
//! fixed addresses through `CNI_ARGS IP=`, labels through `args.labels`; CNI DEL on
//! teardown), each serving TCP and UDP on 80 and 81.
//! For each policy set, real connections between all 81 ordered pairs are compared
//! with `xsknetctl policy matrix` on the same objects, and for several sets also with a
//! hand-written table (so the matrix itself is checked). Also: replies under
//! egress-deny, revocation of an established connection by a policy update and its
//! re-admission, SCTP with crafted frames and counters, node traffic always allowed,
//! hit counters, and invalid documents refused with object and field named while the
//! policies in force keep working (checked by traffic).
//!
//! Needs root; without it prints SKIP (fails with XSKNET_REQUIRE_PRIVILEGED).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const NAMES: [&str; 3] = ["a", "b", "c"];
/// How long a probe waits before calling a connection refused by policy.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

type Table = BTreeMap<(String, String), bool>;

/// A hand-written expectation: may `from` open a connection to `to`?
type Hand<'a> = Option<&'a dyn Fn(&str, &str) -> bool>;

struct World {
    t: String,
    node: Netns,
    daemon: Daemon,
    /// `ns/name` → pod, in (namespace, name) order.
    pods: Vec<(String, Pod)>,
    /// Current labels of every pod (what the matrix file says).
    labels: BTreeMap<String, BTreeMap<String, String>>,
    dir: PathBuf,
}

fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 0, 11 + i as u8)
}

/// The named container port `web`: 80 on pods `a`, 81 on `b` and `c` (one name, two
/// numbers), and `dns` = UDP 80 everywhere.
fn web_port(name: &str) -> u16 {
    if name == "a" {
        80
    } else {
        81
    }
}

impl Drop for World {
    /// CNI DEL of every pod (best effort) while the daemon still runs; the fields'
    /// own `Drop`s then remove the namespaces and the daemon.
    fn drop(&mut self) {
        for (_, pod) in &self.pods {
            self.daemon.cni_del(&self.node, pod);
        }
    }
}

impl World {
    fn new() -> World {
        let t = prefix("po");
        let node = Netns::new(&format!("{t}-node"));
        let daemon = Daemon::start(&node, &t, "workers:\n- core: 0\n- core: 1\n");
        let dir = daemon.dir.join("yaml");
        std::fs::create_dir_all(&dir).unwrap();
        let mut pods = Vec::new();
        let mut labels = BTreeMap::new();
        let mut i = 0;
        for ns in NAMESPACES {
            for name in NAMES {
                let pod = daemon.cni_pod(
                    &node,
                    &format!("{t}-{ns}{name}"),
                    ns,
                    name,
                    &[("pod", name)],
                    pod_ip(i),
                );
                serve(&pod, &[80, 81]);
                let key = format!("{ns}/{name}");
                labels.insert(
                    key.clone(),
                    BTreeMap::from([("pod".to_string(), name.to_string())]),
                );
                pods.push((key, pod));
                i += 1;
            }
        }
        let w = World {
            t,
            node,
            daemon,
            pods,
            labels,
            dir,
        };
        // Namespaces and the pods' container ports (named ports) go to the daemon too.
        let world = w.world_yaml();
        w.apply_ok(&world, "world");
        w
    }

    fn pod(&self, key: &str) -> &Pod {
        &self.pods.iter().find(|(k, _)| k == key).unwrap().1
    }

    /// Namespace and Pod objects as they are now (labels, addresses, container ports).
    fn world_yaml(&self) -> String {
        let mut y = String::new();
        for ns in NAMESPACES {
            y.push_str(&format!(
                "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {{ns: {ns}}}\n"
            ));
        }
        for (key, pod) in &self.pods {
            let (ns, name) = key.split_once('/').unwrap();
            let labels: Vec<String> = self.labels[key]
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            y.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{{}}}\nspec:\n  containers:\n  - name: srv\n    ports:\n    - {{name: web, containerPort: {}}}\n    - {{name: dns, containerPort: 80, protocol: UDP}}\nstatus:\n  podIP: {}\n",
                labels.join(", "),
                web_port(name),
                pod.ip
            ));
        }
        y
    }

    fn write(&self, name: &str, yaml: &str) -> PathBuf {
        let p = self.dir.join(format!("{name}.yaml"));
        std::fs::write(&p, yaml).unwrap();
        p
    }

    fn apply_ok(&self, yaml: &str, name: &str) {
        let p = self.write(name, yaml);
        self.daemon
            .ctl_ok(&["policy", "apply", "-f", &path_str(&p)]);
    }

    fn policy_list(&self) -> Vec<Value> {
        let v: Value =
            serde_json::from_str(&self.daemon.ctl_ok(&["policy", "list", "--json"])).unwrap();
        v.as_array().unwrap().clone()
    }

    /// Delete every policy in force, then apply `yaml`.
    fn set_policies(&self, yaml: &str, name: &str) {
        for p in self.policy_list() {
            let target = format!(
                "{}/{}",
                p["namespace"].as_str().unwrap(),
                p["name"].as_str().unwrap()
            );
            self.daemon.ctl_ok(&["policy", "delete", &target]);
        }
        if !yaml.trim().is_empty() {
            self.apply_ok(yaml, name);
        }
    }

    /// `xsknetctl policy matrix` on the world plus `policies`.
    fn matrix(&self, policies: &str, port: &str, proto: &str) -> Table {
        let file = self.write("matrix", &format!("{}\n{policies}", self.world_yaml()));
        let out = try_sh(&[
            bin("xsknetctl").to_str().unwrap(),
            "policy",
            "matrix",
            "-f",
            &path_str(&file),
            "--port",
            port,
            "--protocol",
            proto,
            "--json",
        ]);
        assert!(
            out.status.success(),
            "policy matrix: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut t = Table::new();
        for (from, row) in v["allowed"].as_object().unwrap() {
            for (to, ok) in row.as_object().unwrap() {
                t.insert((from.clone(), to.clone()), ok.as_bool().unwrap());
            }
        }
        assert_eq!(t.len(), 81, "matrix covers every pair");
        t
    }

    /// Real connections between every ordered pair, in parallel.
    fn live(&self, port: u16, proto: &str) -> Table {
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .pods
                .iter()
                .flat_map(|(fk, from)| {
                    self.pods.iter().map(move |(tk, to)| {
                        let dst = to.ip;
                        let h = s.spawn(move || match proto {
                            "UDP" => udp_answers(from, dst, port, PROBE_TIMEOUT),
                            _ => tcp_connects(from, dst, port, PROBE_TIMEOUT),
                        });
                        ((fk.clone(), tk.clone()), h)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|(k, h)| (k, h.join().unwrap()))
                .collect()
        })
    }

    /// The live table for `port`/`proto` equals the matrix for `policies` (and `hand`,
    /// when given, equals both).
    fn check(&self, set: &str, policies: &str, port: u16, proto: &str, hand: Hand<'_>) {
        let want = self.matrix(policies, &port.to_string(), proto);
        if let Some(h) = hand {
            let hand_table: Table = want
                .keys()
                .map(|(f, t)| ((f.clone(), t.clone()), h(f, t)))
                .collect();
            assert_eq!(
                grid(&want),
                grid(&hand_table),
                "{set} {proto}/{port}: policy matrix (left) differs from the hand-written table (right)"
            );
        }
        let got = self.live(port, proto);
        assert_eq!(
            grid(&got),
            grid(&want),
            "{set} {proto}/{port}: live connections (left) differ from policy matrix (right)\n--- daemon log\n{}",
            self.daemon.log_text()
        );
        eprintln!("{set} {proto}/{port}: 81 pairs match\n{}", grid(&got));
    }

    fn port_counter(&self, key: &str, path: &[&str]) -> u64 {
        let mut v = self.daemon.port_stats(&self.pod(key).host_if);
        for p in path {
            v = v[*p].clone();
        }
        v.as_u64().unwrap_or(0)
    }
}

/// `.`/`X` grid, rows = from, columns = to, for readable assertion failures.
fn grid(t: &Table) -> String {
    let mut froms: Vec<&String> = t.keys().map(|(f, _)| f).collect();
    froms.dedup();
    let mut out = String::new();
    for f in &froms {
        out.push_str(&format!("{f:5}"));
        for ((ff, _), ok) in t.iter().filter(|((ff, _), _)| ff == *f) {
            let _ = ff;
            out.push_str(if *ok { " ." } else { " X" });
        }
        out.push('\n');
    }
    out
}

fn ns_of(k: &str) -> &str {
    k.split_once('/').unwrap().0
}

fn policy(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}\n"
    )
}

const DENY_IN_X: &str = "  podSelector: {}\n  policyTypes: [Ingress]";

#[test]
fn network_policy_81_pairs_match_the_matrix() {
    if !privileged() {
        return;
    }
    let started = Instant::now();
    let w = World::new();
    eprintln!("{}: world up in {:?}", w.t, started.elapsed());

    // 0. No policy: everything reaches everything.
    w.set_policies("", "none");
    w.check("no policy", "", 80, "TCP", Some(&|_, _| true));

    // 1. Default deny ingress in x (TCP and UDP); the node still reaches x's pods.
    let p1 = policy("x", "deny-in", DENY_IN_X);
    w.set_policies(&p1, "p1");
    let hand1 = |f: &str, t: &str| ns_of(t) != "x" || f == t;
    w.check("deny ingress x", &p1, 80, "TCP", Some(&hand1));
    w.check("deny ingress x", &p1, 81, "UDP", Some(&hand1));
    let ip_xa = w.pod("x/a").ip.to_string();
    assert!(
        w.node
            .exec(&["ping", "-c", "1", "-W", "2", "-q", &ip_xa])
            .status
            .success(),
        "the node reaches an isolated pod"
    );

    // 2. Default deny egress in y: y opens nothing, but replies of connections to y
    // flow (x → y works end to end).
    let p2 = policy(
        "y",
        "deny-out",
        "  podSelector: {}\n  policyTypes: [Egress]",
    );
    w.set_policies(&p2, "p2");
    let hand2 = |f: &str, t: &str| ns_of(f) != "y" || f == t;
    w.check("deny egress y", &p2, 80, "TCP", Some(&hand2));
    w.check("deny egress y", &p2, 80, "UDP", Some(&hand2));

    // 3. Namespace selector: x/a admits namespace y only.
    let p3 = policy(
        "x",
        "a-from-y",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}",
    );
    w.set_policies(&p3, "p3");
    let hand3 = |f: &str, t: &str| t != "x/a" || ns_of(f) == "y" || f == t;
    w.check("namespace selector", &p3, 80, "TCP", Some(&hand3));

    // 8 (first half). An established connection y/a → x/a, allowed by p3 …
    let ya = w.pod("y/a");
    let xa_ip = w.pod("x/a").ip;
    let mut conn: TcpStream = ya.ns.run(|| {
        TcpStream::connect_timeout(&(xa_ip, 81).into(), Duration::from_secs(2)).expect("connect")
    });
    conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut b = [0u8; 16];
    assert_eq!(conn.read(&mut b).unwrap(), 1);
    conn.write_all(b"one").unwrap();
    assert_eq!(conn.read(&mut b).unwrap(), 3, "echo before the update");

    // 4. Pod AND namespace selector in one peer: only y/b.
    let p4 = policy(
        "x",
        "a-from-yb",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n      podSelector: {matchLabels: {pod: b}}",
    );
    let hand4 = |f: &str, t: &str| t != "x/a" || f == "y/b" || f == t;
    // (Applied next to p3 for a moment: p3's connection keeps working — union.)
    w.apply_ok(&p4, "p4-added");
    conn.write_all(b"two").unwrap();
    assert_eq!(
        conn.read(&mut b).unwrap(),
        3,
        "union of policies keeps the flow"
    );

    // 8. Update from allow to deny: a-from-y loses its rules. The established
    // connection stops within a second; re-allowing lets its next packet through.
    let p8 = policy(
        "x",
        "a-from-y",
        "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress]\n  ingress: []",
    );
    w.set_policies(&p3, "p3-again");
    w.apply_ok(&p8, "p8");
    let t0 = Instant::now();
    conn.write_all(b"three").unwrap();
    assert!(
        conn.read(&mut b).is_err(),
        "revoked flow still answered after {:?}",
        t0.elapsed()
    );
    w.check(
        "update allow→deny",
        &p8,
        80,
        "TCP",
        Some(&|f: &str, t: &str| t != "x/a" || f == t),
    );
    w.apply_ok(&p3, "p3-restored");
    conn.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let n = conn
        .read(&mut b)
        .expect("retransmission admitted after re-allow");
    assert_eq!(&b[..n], b"three");
    drop(conn);

    w.set_policies(&p4, "p4");
    w.check("pod+namespace selector", &p4, 80, "TCP", Some(&hand4));

    // 9. Relabel: y/c becomes pod=b and is admitted by p4; then back.
    w.daemon
        .ctl_ok(&["pod", "label", "y/c", "pod=b", "--overwrite"]);
    let mut w = w;
    w.labels
        .insert("y/c".into(), BTreeMap::from([("pod".into(), "b".into())]));
    w.check(
        "relabel y/c pod=b",
        &p4,
        80,
        "TCP",
        Some(&|f: &str, t: &str| t != "x/a" || f == "y/b" || f == "y/c" || f == t),
    );
    w.daemon
        .ctl_ok(&["pod", "label", "y/c", "pod=c", "--overwrite"]);
    w.labels
        .insert("y/c".into(), BTreeMap::from([("pod".into(), "c".into())]));

    // 5. Named ports: x/b admits `web` (81 on x/b); z/a may send only to `web`, which
    // is 80 towards pods a and 81 towards pods b and c. (z/a's policy has no
    // policyTypes: inferred as Ingress + Egress, so z/a is also closed for ingress.)
    let p5 = format!(
        "{}{}",
        policy(
            "x",
            "b-web",
            "  podSelector: {matchLabels: {pod: b}}\n  ingress:\n  - ports: [{port: web}]"
        ),
        policy(
            "z",
            "a-to-web",
            "  podSelector: {matchLabels: {pod: a}}\n  egress:\n  - ports: [{port: web}]"
        )
    );
    w.set_policies(&p5, "p5");
    w.check(
        "named port",
        &p5,
        80,
        "TCP",
        Some(&|f: &str, t: &str| {
            f == t || (t != "x/b" && t != "z/a" && (f != "z/a" || t.ends_with("/a")))
        }),
    );
    w.check(
        "named port",
        &p5,
        81,
        "TCP",
        Some(&|f: &str, t: &str| f == t || (t != "z/a" && (f != "z/a" || !t.ends_with("/a")))),
    );

    // 6. endPort: z/c admits TCP 81-90 from everywhere.
    let p6 = policy(
        "z",
        "c-range",
        "  podSelector: {matchLabels: {pod: c}}\n  ingress:\n  - ports: [{protocol: TCP, port: 81, endPort: 90}]",
    );
    w.set_policies(&p6, "p6");
    w.check(
        "endPort",
        &p6,
        80,
        "TCP",
        Some(&|f, t| t != "z/c" || f == t),
    );
    w.check("endPort", &p6, 81, "TCP", Some(&|_, _| true));
    w.check(
        "endPort",
        &p6,
        81,
        "UDP",
        Some(&|f, t| t != "z/c" || f == t),
    );

    // 7. ipBlock with except: y/a admits the pod CIDR except x/b.
    let xb = w.pod("x/b").ip;
    let p7 = policy(
        "y",
        "a-cidr",
        &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from:\n    - ipBlock: {{cidr: 10.244.0.0/24, except: [{xb}/32]}}"),
    );
    w.set_policies(&p7, "p7");
    w.check(
        "ipBlock except",
        &p7,
        80,
        "TCP",
        Some(&|f, t| t != "y/a" || f != "x/b"),
    );

    // 10. Allow-all next to deny-all: everything allowed.
    let p10 = format!(
        "{}{}",
        policy("x", "deny-in", DENY_IN_X),
        policy("x", "allow-all", "  podSelector: {}\n  ingress:\n  - {}")
    );
    w.set_policies(&p10, "p10");
    w.check("allow-all", &p10, 80, "TCP", Some(&|_, _| true));

    // 11. Egress to a namespace on one port: z → x on TCP 80 only (and, policyTypes
    // being inferred, z closed for ingress).
    let p11 = policy(
        "z",
        "to-x-80",
        "  podSelector: {}\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {ns: x}}\n    ports: [{port: 80}]",
    );
    w.set_policies(&p11, "p11");
    w.check(
        "egress ns+port",
        &p11,
        80,
        "TCP",
        Some(&|f, t| f == t || (ns_of(t) != "z" && (ns_of(f) != "z" || ns_of(t) == "x"))),
    );
    w.check(
        "egress ns+port",
        &p11,
        81,
        "TCP",
        Some(&|f, t| f == t || (ns_of(t) != "z" && ns_of(f) != "z")),
    );

    // 12. Protocol: y/c admits UDP 80 only.
    let p12 = policy(
        "y",
        "c-udp",
        "  podSelector: {matchLabels: {pod: c}}\n  ingress:\n  - ports: [{protocol: UDP, port: 80}]",
    );
    w.set_policies(&p12, "p12");
    w.check(
        "UDP only",
        &p12,
        80,
        "TCP",
        Some(&|f, t| t != "y/c" || f == t),
    );
    w.check("UDP only", &p12, 80, "UDP", Some(&|_, _| true));

    // Hit counters: c-udp admitted flows.
    let hits: u64 = w
        .policy_list()
        .iter()
        .filter(|p| p["name"] == "c-udp")
        .map(|p| p["hits"].as_u64().unwrap())
        .sum();
    assert!(hits >= 8, "c-udp hits {hits}");

    // Invalid documents: refused with object and field named; nothing in force changes
    // (checked by traffic: p1 stays exactly in force).
    w.set_policies(&p1, "p1-again");
    for (bad, object, field) in [
        (
            policy(
                "y",
                "bad-cidr",
                "  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/33}",
            ),
            "NetworkPolicy y/bad-cidr",
            "spec.ingress[0].from[0].ipBlock.cidr",
        ),
        (
            policy(
                "y",
                "bad-endport",
                "  podSelector: {}\n  ingress:\n  - ports: [{port: 90, endPort: 80}]",
            ),
            "NetworkPolicy y/bad-endport",
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            policy(
                "y",
                "bad-name",
                "  podSelector: {}\n  ingress:\n  - ports: [{port: a-port-name-too-long}]",
            ),
            "NetworkPolicy y/bad-name",
            "spec.ingress[0].ports[0].port",
        ),
    ] {
        // A valid allow-all in the same file must not be applied either.
        let doc = format!(
            "{}{bad}",
            policy("x", "allow-all", "  podSelector: {}\n  ingress:\n  - {}")
        );
        let f = w.write("bad", &doc);
        let out = w.daemon.ctl(&["policy", "apply", "-f", &path_str(&f)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "refused: {err}");
        assert!(
            err.contains(object) && err.contains(field),
            "names {object} and {field}: {err}"
        );
    }
    let names: Vec<String> = w
        .policy_list()
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p["namespace"].as_str().unwrap(),
                p["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(names, ["x/deny-in"]);
    w.check("after refused applies", &p1, 80, "TCP", Some(&hand1));

    // Stats carry the reason per endpoint.
    assert!(w.port_counter("y/a", &["drops", "policy_denied"]) > 0);
    eprintln!("{}: done in {:?}", w.t, started.elapsed());
}

/// An Ethernet/IPv4/SCTP frame with one chunk of `chunk_type`, from `from`'s eth0 to
/// its host-side veth (`host_mac`).
fn sctp_frame(
    from: &Pod,
    host_mac: [u8; 6],
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    chunk_type: u8,
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&host_mac);
    f.extend_from_slice(&parse_mac(&from.mac));
    f.extend_from_slice(&[0x08, 0x00]);
    let sctp_len = 12 + 20;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + sctp_len) as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 132;
    ip[12..16].copy_from_slice(&from.ip.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let mut s: u32 = 0;
    for c in ip.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    ip[10..12].copy_from_slice(&(!(s as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // vtag, checksum (unchecked)
    let mut chunk = [0u8; 20];
    chunk[0] = chunk_type;
    chunk[2..4].copy_from_slice(&20u16.to_be_bytes());
    chunk[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    f.extend_from_slice(&chunk);
    f
}

fn parse_mac(s: &str) -> [u8; 6] {
    s.parse::<xsknet_proto::MacAddr>().unwrap().into()
}

fn host_mac(node: &Netns, ifname: &str) -> [u8; 6] {
    let out = sh(&["ip", "-n", &node.name, "-br", "link", "show", ifname]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    parse_mac(text.split_whitespace().nth(2).unwrap())
}

#[test]
fn sctp_counters_trace_restart_and_policy_dir() {
    if !privileged() {
        return;
    }
    let t = prefix("ps");
    let node = Netns::new(&format!("{t}-node"));
    let pdir = std::env::temp_dir().join(format!("xsknet-test-{t}-policies"));
    let _ = std::fs::remove_dir_all(&pdir);
    std::fs::create_dir_all(&pdir).unwrap();
    let mut daemon = Daemon::start(
        &node,
        &t,
        &format!(
            "workers:\n- core: 0\n- core: 1\npolicyDir: {}\n",
            pdir.display()
        ),
    );
    let mk = |i: usize, ns: &str, name: &str| {
        let p = Pod::new(
            &node,
            &format!("{t}-{ns}{name}"),
            &format!("{t}{ns}{name}"),
            pod_ip(i),
        );
        daemon.attach_as(&p, ns, name, &[("pod", name)]);
        p
    };
    let xa = mk(0, "x", "a");
    let yb = mk(1, "y", "b");
    let za = mk(2, "z", "a");
    let dir = daemon.dir.join("yaml");
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = format!(
        "{}{}{}",
        (["x", "y", "z"].iter())
            .map(|ns| format!("---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}}}}}\n"))
            .collect::<String>(),
        policy(
            "y",
            "b-sctp",
            "  podSelector: {matchLabels: {pod: b}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: x}}\n    ports: [{protocol: SCTP, port: 80}]"
        ),
        policy("y", "deny-out", "  podSelector: {}\n  policyTypes: [Egress]"),
    );
    let f = dir.join("sctp.yaml");
    std::fs::write(&f, yaml).unwrap();
    daemon.ctl_ok(&["policy", "apply", "-f", &path_str(&f)]);
    let stat = |p: &Pod, path: &[&str]| {
        let mut v = daemon.port_stats(&p.host_if);
        for k in path {
            v = v[*k].clone();
        }
        v.as_u64().unwrap_or(0)
    };
    let denied = |p: &Pod| stat(p, &["drops", "policy_denied"]);
    let tx = |p: &Pod| stat(p, &["tx_packets"]);
    let send = |p: &Pod, dst: &Pod, sport: u16, dport: u16, chunk: u8| {
        let mac = host_mac(&node, &p.host_if);
        inject_frames(
            &p.ns,
            "eth0",
            &[sctp_frame(p, mac, dst.ip, sport, dport, chunk)],
        );
    };
    const INIT: u8 = 1;
    const INIT_ACK: u8 = 2;

    // x/a → y/b:80 INIT is admitted and transmitted to y/b.
    let (tx_yb, den_xa) = (tx(&yb), denied(&xa));
    send(&xa, &yb, 5000, 80, INIT);
    wait_until("INIT forwarded to y/b", Duration::from_secs(3), || {
        tx(&yb) > tx_yb
    });
    assert_eq!(denied(&xa), den_xa);
    // Its INIT ACK comes back although y may not open anything (egress deny).
    let (tx_xa, den_yb) = (tx(&xa), denied(&yb));
    send(&yb, &xa, 80, 5000, INIT_ACK);
    wait_until("INIT ACK forwarded to x/a", Duration::from_secs(3), || {
        tx(&xa) > tx_xa
    });
    assert_eq!(denied(&yb), den_yb);
    // Port 81 is not allowed, nor is z, nor is y/b opening its own association.
    send(&xa, &yb, 5001, 81, INIT);
    wait_until("x/a → y/b:81 denied", Duration::from_secs(3), || {
        denied(&xa) > den_xa
    });
    let den_za = denied(&za);
    send(&za, &yb, 5002, 80, INIT);
    wait_until("z/a → y/b:80 denied", Duration::from_secs(3), || {
        denied(&za) > den_za
    });
    send(&yb, &xa, 6000, 80, INIT);
    wait_until("y/b → x/a INIT denied", Duration::from_secs(3), || {
        denied(&yb) > den_yb
    });
    // The admitting policy counted its hit.
    let list: Value = serde_json::from_str(&daemon.ctl_ok(&["policy", "list", "--json"])).unwrap();
    let hits = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "b-sctp")
        .map(|p| p["hits"].as_u64().unwrap())
        .unwrap();
    assert!(hits >= 1, "b-sctp hits {hits}");
    // Trace agrees and names the rule.
    let tr: Value = serde_json::from_str(&daemon.ctl_ok(&[
        "trace",
        "--from",
        "x/a",
        "--to",
        "y/b",
        "--port",
        "80",
        "--protocol",
        "SCTP",
        "--json",
    ]))
    .unwrap();
    assert_eq!(tr["verdict"], "allowed", "{tr}");
    assert_eq!(tr["ingress"]["policy"], "y/b-sctp");
    assert_eq!(tr["ingress"]["rule"], 0);
    let tr: Value = serde_json::from_str(&daemon.ctl_ok(&[
        "trace",
        "--from",
        "z/a",
        "--to",
        "y/b",
        "--port",
        "80",
        "--protocol",
        "SCTP",
        "--json",
    ]))
    .unwrap();
    assert_eq!(tr["verdict"], "denied", "{tr}");
    assert_eq!(tr["reason"], "policy_denied");

    // policyDir: a file appearing is applied within about a second, its removal
    // deletes what it brought; a broken file changes nothing.
    let names = |d: &Daemon| -> Vec<String> {
        let v: Value = serde_json::from_str(&d.ctl_ok(&["policy", "list", "--json"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p["namespace"].as_str().unwrap(),
                    p["name"].as_str().unwrap()
                )
            })
            .collect()
    };
    let dir_file = pdir.join("z.yaml");
    std::fs::write(
        &dir_file,
        policy(
            "z",
            "from-dir",
            "  podSelector: {}\n  policyTypes: [Ingress]",
        ),
    )
    .unwrap();
    wait_until("policyDir applied", Duration::from_secs(5), || {
        names(&daemon).contains(&"z/from-dir".to_string())
    });
    std::fs::write(
        pdir.join("broken.yaml"),
        "kind: NetworkPolicy\nmetadata: {name: [}\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(names(&daemon).contains(&"z/from-dir".to_string()));
    assert!(daemon.log_text().contains("policyDir change refused"));
    std::fs::remove_file(pdir.join("broken.yaml")).unwrap();
    std::fs::remove_file(&dir_file).unwrap();
    wait_until("policyDir removal applied", Duration::from_secs(5), || {
        !names(&daemon).contains(&"z/from-dir".to_string())
    });

    // A restarted daemon keeps the policies (state dir) and enforces them at once.
    let before = names(&daemon);
    assert!(daemon.stop(), "clean stop");
    daemon.spawn();
    assert_eq!(names(&daemon), before);
    let tr: Value = serde_json::from_str(&daemon.ctl_ok(&[
        "trace",
        "--from",
        "z/a",
        "--to",
        "y/b",
        "--port",
        "80",
        "--protocol",
        "SCTP",
        "--json",
    ]))
    .unwrap();
    assert_eq!(tr["verdict"], "denied", "{tr}");
    let _ = std::fs::remove_dir_all(&pdir);
}
