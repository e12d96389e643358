//! The etcd backend against a real etcd (see [`testkit::etcd`]): registration and
//! keep-alive, lease expiry, subnet ownership (restarts, lease loss, racing claimers),
//! watch deltas, compaction and re-list, malformed records, etcd restarts. Each test runs
//! its own etcd, so compactions and restarts of one test never touch another.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};

use super::config::EtcdConfig;
use super::etcd::{claim_subnet, EtcdCluster, EtcdError, LocalNode, SubnetRequest};
use super::records::{Keys, NodeRecord, PodRecord, Record, RecordKey};
use super::{Change, ClusterEvent, ClusterView, PodKey};
use crate::config::Ipv4Cidr;
use crate::policy::k8s::{self, Object};
use testkit::etcd::{Etcd, Proxy};

const TTL: u32 = 2;

fn config(url: &str, prefix: &str) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![url.to_string()],
        prefix: prefix.to_string(),
        lease_ttl_seconds: TTL,
        request_timeout_seconds: 2,
    }
}

fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().unwrap()
}

fn cluster16() -> SubnetRequest {
    SubnetRequest::FromCluster {
        cluster: cidr("10.50.0.0/16"),
        len: 24,
    }
}

fn local(name: &str, last_octet: u8, subnet: SubnetRequest) -> LocalNode {
    LocalNode {
        name: name.to_string(),
        underlay_ip: Ipv4Addr::new(192, 168, 7, last_octet),
        vtep_mac: [0x02, 0, 0, 0, 0, last_octet].into(),
        vni: 1,
        vxlan_port: 8472,
        subnet,
    }
}

fn pod(node: &str, name: &str, ip: [u8; 4], labels: &[(&str, &str)]) -> PodRecord {
    PodRecord {
        namespace: "shop".into(),
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ip: ip.into(),
        node: node.into(),
        ports: vec![k8s::NamedPort {
            name: "http".into(),
            port: 8080,
            protocol: k8s::Protocol::Tcp,
        }],
    }
}

fn node_json(name: &str, cidr: &str) -> Vec<u8> {
    Record::Node(NodeRecord {
        name: name.into(),
        pod_cidr: cidr.parse().unwrap(),
        underlay_ip: Ipv4Addr::new(192, 168, 9, 1),
        vtep_mac: [2, 0, 0, 0, 9, 1].into(),
        vni: 1,
        vxlan_port: 8472,
    })
    .encode()
}

fn one_object(yaml: &str) -> Object {
    let mut o = k8s::parse_yaml(yaml, None).unwrap();
    assert_eq!(o.len(), 1);
    o.pop().unwrap()
}

/// A plain etcd client for the test's own reads and writes (malformed records,
/// compaction), on a runtime of its own.
struct Raw {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl Raw {
    fn new(url: &str) -> Raw {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(Client::connect([url], None)).unwrap();
        Raw { rt, client }
    }

    fn put(&mut self, key: &str, value: impl Into<Vec<u8>>) -> i64 {
        let r = self
            .rt
            .block_on(self.client.put(key, value.into(), None))
            .unwrap();
        r.header().unwrap().revision()
    }

    fn delete(&mut self, key: &str) {
        self.rt.block_on(self.client.delete(key, None)).unwrap();
    }

    /// (value, lease) of a key.
    fn get(&mut self, key: &str) -> Option<(Vec<u8>, i64)> {
        let r = self.rt.block_on(self.client.get(key, None)).unwrap();
        r.kvs().first().map(|kv| (kv.value().to_vec(), kv.lease()))
    }

    fn list(&mut self, prefix: &str) -> BTreeMap<String, Vec<u8>> {
        let r = self
            .rt
            .block_on(
                self.client
                    .get(prefix, Some(GetOptions::new().with_prefix())),
            )
            .unwrap();
        r.kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect()
    }

    fn compact_all(&mut self) -> i64 {
        let rev = self
            .rt
            .block_on(self.client.get("x", None))
            .unwrap()
            .header()
            .unwrap()
            .revision();
        self.rt.block_on(self.client.compact(rev, None)).unwrap();
        rev
    }
}

/// The consumer side, as the daemon's control thread would hold it.
struct Consumer {
    rx: crossbeam_channel::Receiver<ClusterEvent>,
    view: ClusterView,
    snapshots: usize,
    refused: Vec<String>,
    registered: Vec<NodeRecord>,
    disconnects: Vec<String>,
    /// Every node key ever deleted from the view.
    node_deletes: Vec<String>,
    changes: Vec<Change>,
}

impl Consumer {
    fn new(rx: crossbeam_channel::Receiver<ClusterEvent>) -> Self {
        Consumer {
            rx,
            view: ClusterView::default(),
            snapshots: 0,
            refused: Vec::new(),
            registered: Vec::new(),
            disconnects: Vec::new(),
            node_deletes: Vec::new(),
            changes: Vec::new(),
        }
    }

    fn take(&mut self, e: ClusterEvent) {
        self.view.apply_event(&e);
        match e {
            ClusterEvent::Snapshot(_) => self.snapshots += 1,
            ClusterEvent::Changes { changes, .. } => {
                for c in &changes {
                    if let Change::Delete(RecordKey::Node(n)) = c {
                        self.node_deletes.push(n.clone());
                    }
                }
                self.changes.extend(changes);
            }
            ClusterEvent::Refused(r) => {
                assert!(r.to_string().contains(&r.key), "{r}");
                self.refused.push(r.key);
            }
            ClusterEvent::Registered(n) => self.registered.push(n),
            ClusterEvent::Disconnected { error } => self.disconnects.push(error),
        }
    }

    /// Take events until `done` holds; panic after `timeout` naming `what`.
    fn wait(&mut self, what: &str, timeout: Duration, done: impl Fn(&Consumer) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| {
                    panic!(
                        "timed out waiting for {what}; view {:#?}, refused {:?}, disconnects {:?}",
                        self.view, self.refused, self.disconnects
                    )
                });
            if let Ok(e) = self.rx.recv_timeout(left) {
                self.take(e);
            }
        }
    }

    /// Take whatever arrives during `d`.
    fn drain_for(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Ok(e) = self.rx.recv_timeout(left) {
                self.take(e);
            }
        }
    }
}

fn start(cfg: &EtcdConfig, local: Option<LocalNode>) -> (EtcdCluster, Consumer) {
    let (c, rx) = EtcdCluster::start(cfg, local, None).unwrap();
    (c, Consumer::new(rx))
}

/// What a fresh list shows now (the reference a long-running view must equal).
fn fresh_view(cfg: &EtcdConfig) -> ClusterView {
    let (_c, mut w) = start(cfg, None);
    w.wait("a snapshot", Duration::from_secs(10), |w| w.snapshots > 0);
    w.view
}

fn same_records(a: &ClusterView, b: &ClusterView) {
    assert_eq!(a.nodes, b.nodes);
    assert_eq!(a.pods, b.pods);
    assert_eq!(a.namespaces, b.namespaces);
    assert_eq!(a.policies, b.policies);
}

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn node_registers_and_keep_alive_holds_it_past_the_ttl() {
    let Some(etcd) = Etcd::start() else { return };
    let cfg = config(&etcd.url(), "/t1/");
    let (a, mut a_events) = start(&cfg, Some(local("node-a", 1, cluster16())));
    let record = a.wait_local_node(WAIT).expect("registered");
    assert_eq!(record.pod_cidr, cidr("10.50.0.0/24"));
    assert_eq!(record.underlay_ip, Ipv4Addr::new(192, 168, 7, 1));
    a_events.wait("own record in own view", WAIT, |c| {
        c.view.nodes.get("node-a") == Some(&record) && c.registered == [record.clone()]
    });

    let mut raw = Raw::new(&etcd.url());
    let (value, lease) = raw.get("/t1/nodes/node-a").expect("node key");
    assert_ne!(lease, 0, "the node record is bound to a lease");
    assert_eq!(value, Record::Node(record.clone()).encode());
    let (owner, subnet_lease) = raw.get("/t1/subnets/10.50.0.0-24").expect("subnet key");
    assert_eq!(owner, b"node-a");
    assert_eq!(
        subnet_lease, 0,
        "subnet ownership is not bound to the lease"
    );

    // Three TTLs later the node is still there, never deleted in between, on the same lease.
    let (_w, mut w) = start(&cfg, None);
    w.wait("node-a seen", WAIT, |w| w.view.nodes.contains_key("node-a"));
    w.drain_for(Duration::from_secs(u64::from(TTL) * 3));
    assert!(w.node_deletes.is_empty(), "{:?}", w.node_deletes);
    assert!(w.view.nodes.contains_key("node-a"));
    assert_eq!(raw.get("/t1/nodes/node-a").map(|v| v.1), Some(lease));
}

#[test]
fn a_node_gone_past_its_lease_leaves_the_view_within_the_ttl_and_keeps_its_subnet() {
    let Some(etcd) = Etcd::start() else { return };
    let cfg = config(&etcd.url(), "/t2/");
    let (_w, mut w) = start(&cfg, None);
    let (a, _a_events) = start(&cfg, Some(local("node-a", 1, cluster16())));
    let a_cidr = a.wait_local_node(WAIT).expect("registered").pod_cidr;
    w.wait("node-a seen", WAIT, |w| w.view.nodes.contains_key("node-a"));

    // The daemon dies (no revoke): its record must go with the lease, within the TTL
    // (plus etcd's expiry tick of 500 ms and the watch delivery).
    let died = Instant::now();
    drop(a);
    w.wait(
        "node-a expired",
        Duration::from_secs(u64::from(TTL) * 3),
        |w| !w.view.nodes.contains_key("node-a"),
    );
    let gone_after = died.elapsed();
    assert!(
        gone_after <= Duration::from_millis(u64::from(TTL) * 1000 + 1000),
        "node-a left the view {gone_after:?} after it died (TTL {TTL} s)"
    );

    // Another node arriving now must not get node-a's subnet: ownership outlives liveness.
    let (b, _b_events) = start(&cfg, Some(local("node-b", 2, cluster16())));
    let b_cidr = b.wait_local_node(WAIT).expect("b registered").pod_cidr;
    assert_ne!(b_cidr, a_cidr);

    // node-a comes back after its lease expired: same subnet.
    let (a, _a_events) = start(&cfg, Some(local("node-a", 1, cluster16())));
    assert_eq!(a.wait_local_node(WAIT).expect("a again").pod_cidr, a_cidr);
    w.wait("node-a back", WAIT, |w| {
        w.view.nodes.get("node-a").map(|n| n.pod_cidr) == Some(a_cidr)
    });
    same_records(&w.view, &fresh_view(&cfg));
}

#[test]
fn subnet_survives_restart_and_leave_and_a_fixed_one_is_not_stolen() {
    let Some(etcd) = Etcd::start() else { return };
    let cfg = config(&etcd.url(), "/t3/");
    let (a, _e) = start(&cfg, Some(local("node-a", 1, cluster16())));
    let first = a.wait_local_node(WAIT).expect("registered").pod_cidr;
    // Restart within the TTL (the old lease still alive).
    drop(a);
    let (a, _e) = start(&cfg, Some(local("node-a", 1, cluster16())));
    assert_eq!(a.wait_local_node(WAIT).unwrap().pod_cidr, first);

    // A clean leave revokes the lease: the node leaves the view at once, the subnet stays.
    let (_w, mut w) = start(&cfg, None);
    w.wait("node-a seen", WAIT, |w| w.view.nodes.contains_key("node-a"));
    let left = Instant::now();
    a.leave().unwrap();
    w.wait("node-a left", WAIT, |w| {
        !w.view.nodes.contains_key("node-a")
    });
    assert!(left.elapsed() < Duration::from_secs(u64::from(TTL)));
    let mut raw = Raw::new(&etcd.url());
    assert_eq!(
        raw.get(&format!("/t3/subnets/{}-{}", first.addr, first.prefix))
            .map(|v| v.0),
        Some(b"node-a".to_vec())
    );

    // A node configured with node-a's subnet is refused and never registers.
    let (c, mut c_events) = start(&cfg, Some(local("node-c", 3, SubnetRequest::Fixed(first))));
    c_events.wait("a refusal", WAIT, |c| {
        c.disconnects
            .iter()
            .any(|e| e.contains(&format!("pod prefix {first} is owned by node \"node-a\"")))
    });
    assert_eq!(c.local_node(), None);
    // One overlapping it is refused too.
    let wider = Ipv4Cidr {
        addr: first.addr,
        prefix: 23,
    };
    let (_d, mut d_events) = start(&cfg, Some(local("node-d", 4, SubnetRequest::Fixed(wider))));
    d_events.wait("an overlap refusal", WAIT, |d| {
        d.disconnects.iter().any(|e| e.contains("overlaps"))
    });
    // A free fixed one is claimed as configured, and node-a gets its own back.
    let (e, _ee) = start(
        &cfg,
        Some(local(
            "node-e",
            5,
            SubnetRequest::Fixed(cidr("10.50.200.0/24")),
        )),
    );
    assert_eq!(
        e.wait_local_node(WAIT).unwrap().pod_cidr,
        cidr("10.50.200.0/24")
    );
    let (a, _e) = start(&cfg, Some(local("node-a", 1, cluster16())));
    assert_eq!(a.wait_local_node(WAIT).unwrap().pod_cidr, first);
}

#[test]
fn racing_claimers_never_share_a_subnet() {
    let Some(etcd) = Etcd::start() else { return };
    let keys = Keys::new("/t4/");
    // A /28 holds four /30s; eight nodes race for them.
    let request = SubnetRequest::FromCluster {
        cluster: cidr("10.60.0.0/28"),
        len: 30,
    };
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (url, keys, barrier) = (etcd.url(), keys.clone(), barrier.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let mut client = Client::connect([url], None).await.unwrap();
                    barrier.wait();
                    let name = format!("n{i}");
                    let r = claim_subnet(&mut client, &keys, &name, request, WAIT).await;
                    (name, r)
                })
            })
        })
        .collect();
    let mut won: BTreeMap<String, Ipv4Cidr> = BTreeMap::new();
    let mut exhausted = 0;
    for t in threads {
        match t.join().unwrap() {
            (name, Ok(c)) => {
                assert!(!won.values().any(|w| *w == c), "{c} given twice");
                won.insert(name, c);
            }
            (_, Err(EtcdError::ClusterCidrExhausted { .. })) => exhausted += 1,
            (name, Err(e)) => panic!("{name}: {e}"),
        }
    }
    assert_eq!(won.len(), 4);
    assert_eq!(exhausted, 4);
    let mut raw = Raw::new(&etcd.url());
    let stored: BTreeMap<String, String> = raw
        .list("/t4/subnets/")
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
        .collect();
    let expected: BTreeMap<String, String> = won
        .iter()
        .map(|(n, c)| (keys.subnet(*c), n.clone()))
        .collect();
    assert_eq!(stored, expected);
}

#[test]
fn watch_delivers_adds_updates_and_deletes() {
    let Some(etcd) = Etcd::start() else { return };
    let cfg = config(&etcd.url(), "/t5/");
    let (_w, mut w) = start(&cfg, None);
    w.wait("the first snapshot", WAIT, |w| w.snapshots == 1);
    assert_eq!(w.view.nodes.len(), 0);
    let (a, _a_events) = start(&cfg, Some(local("node-a", 1, cluster16())));
    a.wait_local_node(WAIT).unwrap();

    let Object::Namespace(mut ns) =
        one_object("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: a}}\n")
    else {
        panic!()
    };
    let Object::NetworkPolicy(pol) = one_object(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: shop}\n\
         spec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - ports: [{port: http}]\n",
    ) else {
        panic!()
    };
    a.put_namespace(&ns).unwrap();
    a.put_policy(&pol).unwrap();
    let p1 = pod("node-a", "p1", [10, 50, 0, 2], &[("app", "web")]);
    let p2 = pod("node-a", "p2", [10, 50, 0, 3], &[("app", "db")]);
    a.set_pod(p1.clone()).unwrap();
    a.set_pod(p2.clone()).unwrap();
    w.wait("adds", WAIT, |w| {
        w.view.nodes.contains_key("node-a")
            && w.view.pods.len() == 2
            && w.view.namespaces.get("shop") == Some(&ns)
            && w.view.policies.get(&("shop".into(), "web".into())) == Some(&pol)
    });
    assert_eq!(w.snapshots, 1, "adds arrive as deltas");
    // The view feeds the policy store as it is.
    let mut store = crate::policy::store::PolicyStore::new();
    let mut objects: Vec<Object> = w
        .view
        .namespaces
        .values()
        .cloned()
        .map(Object::Namespace)
        .collect();
    objects.extend(w.view.policies.values().cloned().map(Object::NetworkPolicy));
    store.apply_objects(objects).unwrap();
    for p in w.view.pods.values() {
        store.upsert_endpoint(p.to_pod_view()).unwrap();
    }
    assert_eq!(store.namespace_labels("shop").get("team").unwrap(), "a");
    assert_eq!(
        store
            .endpoint("shop", "p1")
            .unwrap()
            .named_port("http", k8s::Protocol::Tcp),
        Some(8080)
    );

    // Updates.
    let p1b = pod(
        "node-a",
        "p1",
        [10, 50, 0, 2],
        &[("app", "web"), ("v", "2")],
    );
    a.set_pod(p1b.clone()).unwrap();
    ns.metadata.labels.insert("team".into(), "b".into());
    a.put_namespace(&ns).unwrap();
    let p1_key = PodKey {
        node: "node-a".into(),
        namespace: "shop".into(),
        name: "p1".into(),
    };
    w.wait("updates", WAIT, |w| {
        w.view.pods.get(&p1_key) == Some(&p1b) && w.view.namespaces.get("shop") == Some(&ns)
    });

    // Deletes.
    a.remove_pod("shop", "p2").unwrap();
    assert!(a.delete_policy("shop", "web").unwrap());
    assert!(!a.delete_policy("shop", "web").unwrap());
    assert!(a.delete_namespace("shop").unwrap());
    w.wait("deletes", WAIT, |w| {
        w.view.pods.len() == 1 && w.view.policies.is_empty() && w.view.namespaces.is_empty()
    });
    assert!(w.changes.contains(&Change::Delete(RecordKey::Pod(PodKey {
        node: "node-a".into(),
        namespace: "shop".into(),
        name: "p2".into(),
    }))));
    assert!(w.changes.contains(&Change::Delete(RecordKey::Policy {
        namespace: "shop".into(),
        name: "web".into()
    })));
    assert_eq!(w.snapshots, 1);
    same_records(&w.view, &fresh_view(&cfg));

    // A pod of another node, or an invalid one, is refused before it is written.
    assert!(matches!(
        a.set_pod(pod("node-b", "x", [10, 50, 1, 2], &[])),
        Err(EtcdError::NotLocal { .. })
    ));
    assert!(matches!(
        a.set_pod(pod("node-a", "Bad_Name", [10, 50, 0, 9], &[])),
        Err(EtcdError::Record(_))
    ));
}

#[test]
fn compaction_while_disconnected_forces_a_relist_with_no_stale_state() {
    let Some(etcd) = Etcd::start() else { return };
    let proxy = Proxy::new(etcd.client_port());
    let direct = config(&etcd.url(), "/t6/");
    let via_proxy = config(&proxy.url(), "/t6/");
    let mut raw = Raw::new(&etcd.url());
    raw.put("/t6/nodes/n1", node_json("n1", "10.70.1.0/24"));
    raw.put("/t6/nodes/n2", node_json("n2", "10.70.2.0/24"));
    let (_w, mut w) = start(&via_proxy, None);
    w.wait("n1 and n2", WAIT, |w| w.view.nodes.len() == 2);

    // A short partition without compaction: the watch resumes from its revision and
    // the missed delete arrives as a delta, no re-list.
    proxy.cut();
    w.wait("a disconnect", WAIT, |w| !w.disconnects.is_empty());
    raw.delete("/t6/nodes/n2");
    proxy.restore();
    w.wait("n2 gone", WAIT, |w| !w.view.nodes.contains_key("n2"));
    assert_eq!(w.snapshots, 1, "resumed without a re-list");
    assert!(w
        .changes
        .contains(&Change::Delete(RecordKey::Node("n2".into()))));

    // Partition, changes, then compaction of the history the watcher would need.
    let before = w.disconnects.len();
    proxy.cut();
    w.wait("a second disconnect", WAIT, |w| {
        w.disconnects.len() > before
    });
    raw.delete("/t6/nodes/n1");
    raw.put("/t6/nodes/n3", node_json("n3", "10.70.3.0/24"));
    raw.put("/t6/nodes/n3", node_json("n3", "10.70.4.0/24"));
    raw.compact_all();
    proxy.restore();
    w.wait("a re-list", WAIT, |w| w.snapshots == 2);
    assert!(!w.view.nodes.contains_key("n1"), "stale n1 survived");
    assert_eq!(
        w.view.nodes.get("n3").map(|n| n.pod_cidr),
        Some(cidr("10.70.4.0/24"))
    );
    same_records(&w.view, &fresh_view(&direct));

    // And the new watch works.
    raw.put("/t6/nodes/n5", node_json("n5", "10.70.5.0/24"));
    w.wait("n5", WAIT, |w| w.view.nodes.contains_key("n5"));
}

#[test]
fn malformed_records_are_refused_by_key_and_good_ones_still_arrive() {
    let Some(etcd) = Etcd::start() else { return };
    let cfg = config(&etcd.url(), "/t7/");
    let mut raw = Raw::new(&etcd.url());
    let good_pod =
        String::from_utf8(Record::Pod(pod("n1", "p1", [10, 80, 1, 2], &[("app", "web")])).encode())
            .unwrap();
    // Before the watcher starts (the list path) ...
    raw.put("/t7/nodes/n1", node_json("n1", "10.80.1.0/24"));
    raw.put("/t7/nodes/bad-json", "{\"name\":");
    raw.put(
        "/t7/pods/n1/shop/p1",
        good_pod.replace("8080", "\"eighty\""),
    );
    let (_w, mut w) = start(&cfg, None);
    w.wait("the snapshot", WAIT, |w| w.snapshots == 1);
    assert_eq!(w.view.nodes.keys().collect::<Vec<_>>(), ["n1"]);
    assert!(w.view.pods.is_empty());
    assert_eq!(w.refused, ["/t7/nodes/bad-json", "/t7/pods/n1/shop/p1"]);

    // ... and after (the watch path), interleaved with good records.
    let huge = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{{\"name\":\"big\",\"labels\":{{\"a\":\"b\"}}}},\"x\":\"{}\"}}",
        "y".repeat(400 * 1024)
    );
    let bad = [
        ("/t7/namespaces/big", huge),
        (
            "/t7/nodes/n9",
            String::from_utf8(node_json("n8", "10.80.8.0/24")).unwrap(),
        ),
        ("/t7/nodes/wrong-type", "{\"name\":7}".to_string()),
        ("/t7/unknown/thing", "{}".to_string()),
        (
            "/t7/policies/shop/p",
            "{\"apiVersion\":\"networking.k8s.io/v1\",\"kind\":\"NetworkPolicy\",\"metadata\":{\"name\":\"p\",\"namespace\":\"shop\"},\"spec\":{\"podSelector\":{},\"bogus\":1}}".to_string(),
        ),
    ];
    for (k, v) in &bad {
        raw.put(k, v.as_str());
    }
    raw.put("/t7/nodes/n2", node_json("n2", "10.80.2.0/24"));
    raw.put("/t7/pods/n1/shop/p1", good_pod.as_str());
    w.wait("n2 and p1", WAIT, |w| {
        w.view.nodes.contains_key("n2") && w.view.pods.len() == 1
    });
    w.wait("every refusal", WAIT, |w| w.refused.len() == 2 + bad.len());
    for (k, _) in &bad {
        assert!(
            w.refused.iter().any(|r| r == k),
            "{k} not refused: {:?}",
            w.refused
        );
    }
    assert_eq!(w.view.nodes.keys().collect::<Vec<_>>(), ["n1", "n2"]);
    assert!(w.view.namespaces.is_empty() && w.view.policies.is_empty());

    // A good record overwritten with garbage leaves the view (a re-list would not show
    // it either), and comes back when fixed.
    raw.put("/t7/nodes/n1", "null");
    w.wait("n1 refused and gone", WAIT, |w| {
        !w.view.nodes.contains_key("n1") && w.refused.len() == 3 + bad.len()
    });
    same_records(&w.view, &fresh_view(&cfg));
    raw.put("/t7/nodes/n1", node_json("n1", "10.80.1.0/24"));
    w.wait("n1 back", WAIT, |w| w.view.nodes.contains_key("n1"));
    assert!(w.disconnects.is_empty(), "{:?}", w.disconnects);
}

#[test]
fn etcd_restart_reconnects_resyncs_and_republishes() {
    let Some(mut etcd) = Etcd::start() else {
        return;
    };
    let cfg = config(&etcd.url(), "/t8/");
    let (a, mut a_events) = start(&cfg, Some(local("node-a", 1, cluster16())));
    let a_cidr = a.wait_local_node(WAIT).unwrap().pod_cidr;
    let p1 = pod("node-a", "p1", [10, 50, 0, 2], &[]);
    a.set_pod(p1.clone()).unwrap();
    a_events.wait("p1", WAIT, |c| c.view.pods.len() == 1);

    etcd.kill();
    a_events.wait("a disconnect", WAIT, |c| !c.disconnects.is_empty());
    // Changes while etcd is down are kept and published when it is back.
    a.remove_pod("shop", "p1").unwrap();
    let p2 = pod("node-a", "p2", [10, 50, 0, 3], &[("app", "x")]);
    a.set_pod(p2.clone()).unwrap();
    // The last view stays valid meanwhile.
    assert!(a_events.view.nodes.contains_key("node-a"));
    etcd.restart();

    let p2_key = p2.key();
    a_events.wait("resync after the restart", WAIT * 2, |c| {
        c.view.pods.keys().collect::<Vec<_>>() == [&p2_key]
            && c.registered.len() >= 2
            && c.view.nodes.get("node-a").map(|n| n.pod_cidr) == Some(a_cidr)
    });
    let mut raw = Raw::new(&etcd.url());
    raw.put("/t8/nodes/n7", node_json("n7", "10.90.7.0/24"));
    a_events.wait("a write after the restart", WAIT, |c| {
        c.view.nodes.contains_key("n7")
    });
    same_records(&a_events.view, &fresh_view(&cfg));
    // The pod is bound to the node's (new) lease.
    let (_, lease) = raw
        .get(&Keys::new("/t8/").record(&RecordKey::Pod(p2_key)))
        .unwrap();
    assert_ne!(lease, 0);
}
