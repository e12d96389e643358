//! Privileged tests of xsknetd with a datastore (issue 9, points 3–5 and 8): a real etcd
//! (Debian `etcd-server`) listening on an underlay bridge address in the test's own
//! namespace, nodes as network namespaces whose uplinks are veths on that bridge, the
//! real `xsknetd` per node with `datastore` and an `overlay` without peers, pods made
//! by the real CNI plugin. Every name carries the test's prefix; the bridge, the node
//! namespaces, etcd and the daemons are removed by guards, also on failure.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::bridge::Bridge;
use common::*;
use testkit::etcd::Etcd;
use xsknet_dataplane::cluster::records::{Keys, Record, RecordKey};
use xsknet_dataplane::cluster::NodeRecord;
use xsknet_proto::wire::NodeList;

const PREFIX: &str = "/xsknet/v1/";
const WAIT: Duration = Duration::from_secs(30);

/// `node.yaml` of a node with a datastore: no podCidr, no peers.
fn node_yaml(name: &str, etcd_url: &str) -> String {
    format!(
        "workers: [{{core: 0}}, {{core: 1}}]\nnodeName: {name}\n\
         datastore: {{type: etcd, endpoints: ['{etcd_url}'], leaseTtlSeconds: 4, requestTimeoutSeconds: 2}}\n\
         overlay: {{vni: 1, port: 8472, clusterCidr: 10.244.0.0/16, subnetLen: 24}}\n"
    )
}

fn status(d: &Daemon) -> serde_json::Value {
    d.status()
        .unwrap_or_else(|| panic!("no status\n{}", d.log_text()))
}

fn pod_cidr(d: &Daemon) -> String {
    status(d)["pod_cidr"].as_str().unwrap().to_string()
}

/// Address `.last` of a daemon's pod prefix.
fn pod_addr(d: &Daemon, last: u8) -> Ipv4Addr {
    let cidr = pod_cidr(d);
    let net: Ipv4Addr = cidr.split('/').next().unwrap().parse().unwrap();
    let o = net.octets();
    Ipv4Addr::new(o[0], o[1], o[2], last)
}

fn both_logs(a: &Daemon, b: &Daemon) -> String {
    format!("--- a\n{}\n--- b\n{}", a.log_text(), b.log_text())
}

fn node_list(d: &Daemon) -> NodeList {
    serde_json::from_str(&d.ctl_ok(&["node", "list", "--json"])).expect("node list json")
}

fn names(l: &NodeList) -> Vec<(String, bool, Option<bool>)> {
    l.nodes
        .iter()
        .map(|n| (n.name.clone(), n.local, n.alive))
        .collect()
}

fn wait_ping(from: &Pod, to: Ipv4Addr, logs: &dyn Fn() -> String) {
    let deadline = Instant::now() + WAIT;
    while !from.ping(to, 1) {
        assert!(
            Instant::now() < deadline,
            "{} cannot ping {to}\n{}",
            from.ip,
            logs()
        );
    }
}

/// A plain etcd client for the test's own writes (a malformed record, a node record).
struct Raw {
    rt: tokio::runtime::Runtime,
    client: etcd_client::Client,
}

impl Raw {
    fn new(url: &str) -> Raw {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt
            .block_on(etcd_client::Client::connect([url], None))
            .unwrap();
        Raw { rt, client }
    }

    fn put(&mut self, key: &str, value: impl Into<Vec<u8>>) {
        self.rt
            .block_on(self.client.put(key, value.into(), None))
            .unwrap();
    }
}

/// Two nodes with a datastore and no static peers: each registers and claims its own
/// prefix, `node list` shows both, pods ping across; a policy applied on one node is
/// written to etcd and enforced on the other, with the other node's pods as selector
/// peers; a malformed record is refused with its key in the log and the daemons live;
/// a restarted daemon keeps its prefix and VTEP MAC and traffic to it resumes.
#[test]
fn nodes_register_share_pods_and_policies_and_keep_their_prefix() {
    if !testkit::privileged() || !testkit::etcd::etcd_available() {
        return;
    }
    let p = testkit::prefix("en");
    let br = Bridge::new(&p, [192, 168, 93]);
    let etcd = Etcd::start_on(br.ip(250)).expect("etcd");
    let url = etcd.url_on();
    let na = br.node("a", 1);
    let nb = br.node("b", 2);
    let a = Daemon::start_yaml(&na, &format!("{p}a"), &node_yaml("node-a", &url));
    let mut b = Daemon::start_yaml(&nb, &format!("{p}b"), &node_yaml("node-b", &url));
    let logs = || format!("--- a\n{}\n--- b\n{}", a.log_text(), b.log_text());

    // Distinct prefixes claimed from the cluster CIDR; both registered and connected.
    let (ca, cb) = (pod_cidr(&a), pod_cidr(&b));
    assert_ne!(ca, cb, "{}", logs());
    for c in [&ca, &cb] {
        assert!(c.starts_with("10.244.") && c.ends_with("/24"), "{c}");
    }
    wait_until("both nodes in a's view", WAIT, || {
        names(&node_list(&a))
            == [
                ("node-a".to_string(), true, Some(true)),
                ("node-b".to_string(), false, Some(true)),
            ]
    });
    let l = node_list(&b);
    let nb_row = l.nodes.iter().find(|n| n.local).unwrap();
    assert_eq!(
        (nb_row.name.as_str(), nb_row.pod_cidr.as_str()),
        ("node-b", cb.as_str())
    );
    assert_eq!(nb_row.underlay_ip, Some(br.ip(2)));
    assert_eq!(nb_row.vtep_mac, "02:78:c0:a8:5d:02");
    let ds = l.datastore.as_ref().expect("datastore state");
    assert!(ds.connected && ds.registered, "{ds:?}");
    let table = b.ctl_ok(&["node", "list"]);
    assert!(
        table.contains("* node-b") && table.contains("node-a") && table.contains("connected"),
        "{table}"
    );
    assert!(
        b.ctl_ok(&["status"]).contains("datastore"),
        "status shows it"
    );

    // Pods on both nodes ping each other with no static peer anywhere.
    let pa = a.cni_pod(
        &na,
        &format!("{p}pa"),
        "default",
        "pa",
        &[("app", "pa")],
        pod_addr(&a, 10),
    );
    let pb = b.cni_pod(
        &nb,
        &format!("{p}pb"),
        "default",
        "pb",
        &[("app", "pb")],
        pod_addr(&b, 10),
    );
    wait_ping(&pa, pb.ip, &logs);
    wait_ping(&pb, pa.ip, &logs);

    // Pods are published: each node's view holds the other's.
    wait_until("pods in the view", WAIT, || {
        status(&a)["datastore"]["pods"] == 2 && status(&b)["datastore"]["pods"] == 2
    });

    // A policy applied on node a goes to etcd and is enforced on node b: pb accepts
    // ingress only from app=pa — a pod of node a, known to b through the view.
    let dir = tempfile::tempdir().unwrap();
    let deny = dir.path().join("deny.yaml");
    std::fs::write(
        &deny,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: deny-pb, namespace: default}\n\
         spec: {podSelector: {matchLabels: {app: pb}}, policyTypes: [Ingress]}\n",
    )
    .unwrap();
    a.ctl_ok(&["policy", "apply", "-f", deny.to_str().unwrap()]);
    wait_until("b enforces the policy written on a", WAIT, || {
        !pa.ping(pb.ip, 1)
    });
    let allow = dir.path().join("allow.yaml");
    std::fs::write(
        &allow,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: allow-pa, namespace: default}\n\
         spec: {podSelector: {matchLabels: {app: pb}}, ingress: [{from: [{podSelector: {matchLabels: {app: pa}}}]}]}\n",
    )
    .unwrap();
    a.ctl_ok(&["policy", "apply", "-f", allow.to_str().unwrap()]);
    wait_ping(&pa, pb.ip, &logs);
    let listed = b.ctl_ok(&["policy", "list"]);
    assert!(
        listed.contains("deny-pb") && listed.contains("allow-pa"),
        "{listed}"
    );
    b.ctl_ok(&["policy", "delete", "default/deny-pb"]);
    b.ctl_ok(&["policy", "delete", "default/allow-pa"]);
    wait_until("policies gone on a", WAIT, || {
        !a.ctl_ok(&["policy", "list"]).contains("allow-pa")
    });
    // Pod documents are not written to the datastore; nothing of the apply is.
    let mixed = dir.path().join("mixed.yaml");
    std::fs::write(
        &mixed,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: extra}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: x, namespace: default}\n",
    )
    .unwrap();
    let out = a.ctl(&["policy", "apply", "-f", mixed.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Pod default/x"));
    assert_eq!(status(&a)["datastore"]["namespaces"], 0, "nothing written");

    // A malformed record: refused with its key in the log, counted; the daemons live.
    let mut raw = Raw::new(&etcd.url());
    raw.put(&format!("{PREFIX}nodes/broken"), "{\"name\":");
    wait_until("the refusal in a's log", WAIT, || {
        a.log_text().contains("/xsknet/v1/nodes/broken")
            && status(&a)["datastore"]["refused"].as_u64() >= Some(1)
    });
    assert_eq!(node_list(&a).nodes.len(), 2);
    wait_ping(&pa, pb.ip, &logs);

    // Restart b: same prefix and VTEP MAC (etcd keeps the claim), traffic resumes.
    let mac_b = status(&b)["overlay"]["vtep_mac"].clone();
    assert!(b.stop(), "clean stop\n{}", b.log_text());
    b.spawn();
    assert_eq!(pod_cidr(&b), cb, "{}", b.log_text());
    assert_eq!(status(&b)["overlay"]["vtep_mac"], mac_b);
    wait_ping(&pa, pb.ip, &|| {
        format!("--- a\n{}\n--- b\n{}", a.log_text(), b.log_text())
    });

    // A node that dies leaves the others' view and routes when its lease expires
    // (leaseTtlSeconds 4 here).
    b.cni_del(&nb, &pb);
    let pid = b.pid().unwrap().to_string();
    sh(&["kill", "-KILL", &pid]);
    wait_until("node-b gone from a's view", WAIT, || {
        let l = node_list(&a);
        l.nodes.len() == 1 && l.nodes[0].name == "node-a"
    });
    assert_eq!(status(&a)["overlay"]["nodes"], 0, "{}", a.log_text());
    assert!(!pa.ping(pb.ip, 1), "no route to a node that is gone");

    drop(raw);
    a.cni_del(&na, &pa);
}

/// etcd down: existing traffic keeps flowing, an ADD still succeeds, a daemon restarted
/// meanwhile starts with its saved prefix; etcd back: the nodes resync, the pod added
/// meanwhile and a node added meanwhile appear in the others' views.
#[test]
fn etcd_down_keeps_traffic_and_the_nodes_resync_when_it_returns() {
    if !testkit::privileged() || !testkit::etcd::etcd_available() {
        return;
    }
    let p = testkit::prefix("eo");
    let br = Bridge::new(&p, [192, 168, 94]);
    let mut etcd = Etcd::start_on(br.ip(250)).expect("etcd");
    let url = etcd.url_on();
    let na = br.node("a", 1);
    let nb = br.node("b", 2);
    let a = Daemon::start_yaml(&na, &format!("{p}a"), &node_yaml("node-a", &url));
    let mut b = Daemon::start_yaml(&nb, &format!("{p}b"), &node_yaml("node-b", &url));
    let pa = a.cni_pod(
        &na,
        &format!("{p}pa"),
        "default",
        "pa",
        &[],
        pod_addr(&a, 10),
    );
    let pb = b.cni_pod(
        &nb,
        &format!("{p}pb"),
        "default",
        "pb",
        &[],
        pod_addr(&b, 10),
    );
    wait_ping(&pa, pb.ip, &|| both_logs(&a, &b));
    let cb = pod_cidr(&b);

    etcd.kill();
    wait_until("a sees etcd gone", WAIT, || {
        status(&a)["datastore"]["connected"] == false
    });
    assert!(
        pa.ping(pb.ip, 3),
        "traffic with etcd down\n{}",
        both_logs(&a, &b)
    );
    // An ADD with etcd down succeeds (publishing is queued).
    let pa2 = a.cni_pod(
        &na,
        &format!("{p}pa2"),
        "default",
        "pa2",
        &[],
        pod_addr(&a, 11),
    );
    wait_ping(&pa2, pb.ip, &|| both_logs(&a, &b));
    // A daemon restarted with etcd down starts with its saved prefix.
    assert!(b.stop());
    b.spawn();
    assert_eq!(pod_cidr(&b), cb);
    assert!(
        b.log_text().contains("saved pod prefix"),
        "{}",
        b.log_text()
    );
    wait_ping(&pa, pb.ip, &|| both_logs(&a, &b));
    // Writes fail cleanly with etcd down: an error, a non-zero exit, nothing written.
    let dir = tempfile::tempdir().unwrap();
    let ns = dir.path().join("ns.yaml");
    std::fs::write(
        &ns,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: later}\n",
    )
    .unwrap();
    let out = a.ctl(&["policy", "apply", "-f", ns.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("nothing written"),
        "{err}"
    );

    etcd.restart();
    // A node added while the others were still disconnected.
    let mut raw = Raw::new(&etcd.url());
    let c = NodeRecord {
        name: "node-c".into(),
        pod_cidr: "10.244.200.0/24".parse().unwrap(),
        underlay_ip: br.ip(3),
        vtep_mac: xsknet_proto::MacAddr([2, 0x78, 192, 168, 94, 3]),
        vni: 1,
        vxlan_port: 8472,
    };
    let key = Keys::new(PREFIX).record(&RecordKey::Node("node-c".into()));
    raw.put(&key, Record::Node(c).encode());
    for d in [&a, &b] {
        wait_until("resync with node-c", WAIT, || {
            let l = node_list(d);
            l.datastore
                .as_ref()
                .is_some_and(|s| s.connected && s.registered)
                && l.nodes.iter().any(|n| n.name == "node-c")
                && l.nodes.iter().filter(|n| n.alive == Some(true)).count() == 3
        });
    }
    // The pod added while etcd was down reached b's view.
    wait_until("pa2 published", WAIT, || {
        status(&b)["datastore"]["pods"] == 3
    });
    wait_ping(&pb, pa2.ip, &|| both_logs(&a, &b));
    assert_eq!(
        status(&a)["datastore"]["namespaces"],
        0,
        "the refused write never landed"
    );

    drop(raw);
    a.cni_del(&na, &pa);
    a.cni_del(&na, &pa2);
    b.cni_del(&nb, &pb);
}
