//! The Kubernetes API backend (issue 10) against testkit's list/watch API server
//! (`testkit::kubeapi`: the real wire format, no kube-apiserver here): the real kube-rs
//! client lists and watches, converts objects into the cluster view's events, recovers
//! from a watch cut mid-stream and from 410 Gone with no stale state, writes this node's
//! annotation (and reports a 403 when RBAC forbids it), and reports an object it cannot
//! enforce without holding back the others. Unprivileged: loopback only.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use serde_json::json;
use testkit::kubeapi::{objects, Kind, KubeApi};
use xsknet_dataplane::cluster::config::KubeConfig;
use xsknet_dataplane::cluster::kube::convert::VTEP_ANNOTATION;
use xsknet_dataplane::cluster::kube::{KubeCluster, LocalVtep};
use xsknet_dataplane::cluster::records::{PodKey, RecordKey};
use xsknet_dataplane::cluster::{Change, ClusterEvent, ClusterView};
use xsknet_proto::MacAddr;

const WAIT: Duration = Duration::from_secs(30);

/// Follows the events as the daemon does; keeps all of them.
struct Follower {
    rx: Receiver<ClusterEvent>,
    view: ClusterView,
    seen: Vec<ClusterEvent>,
}

impl Follower {
    fn new(rx: Receiver<ClusterEvent>) -> Self {
        Follower {
            rx,
            view: ClusterView::default(),
            seen: Vec::new(),
        }
    }

    /// Apply events until `cond` holds on (view, events seen), or panic after WAIT.
    fn until(&mut self, what: &str, cond: impl Fn(&ClusterView, &[ClusterEvent]) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond(&self.view, &self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; events: {:#?}",
                self.seen
            );
            if let Ok(e) = self.rx.recv_timeout(left.min(Duration::from_millis(100))) {
                self.view.apply_event(&e);
                self.seen.push(e);
            }
        }
    }

    fn snapshots(&self) -> usize {
        self.seen
            .iter()
            .filter(|e| matches!(e, ClusterEvent::Snapshot(_)))
            .count()
    }
}

fn pod_key(node: &str, ns: &str, name: &str) -> PodKey {
    PodKey {
        node: node.into(),
        namespace: ns.into(),
        name: name.into(),
    }
}

fn annotated_node(name: &str, cidr: &str, ip: &str, last: u8) -> serde_json::Value {
    let mut n = objects::node(name, cidr, ip);
    n["metadata"]["annotations"] = json!({VTEP_ANNOTATION: json!({
        "vtepMac": format!("02:78:c0:a8:01:{last:02x}"), "underlayIp": ip, "vni": 1, "port": 8472
    }).to_string()});
    n
}

fn world(api: &KubeApi) {
    api.apply(annotated_node(
        "node-b",
        "10.244.1.0/24",
        "192.168.1.12",
        12,
    ));
    // Not joined yet (no annotation): not in the view.
    api.apply(objects::node("node-c", "10.244.2.0/24", "192.168.1.13"));
    api.apply(objects::namespace("shop", json!({"team": "a"})));
    api.apply(objects::pod(
        "shop",
        "web-1",
        "node-b",
        json!({"app": "web"}),
        Some("10.244.1.5"),
        &[("http", 8080)],
    ));
    // No IP yet: not in the view.
    api.apply(objects::pod(
        "shop",
        "web-2",
        "node-b",
        json!({"app": "web"}),
        None,
        &[],
    ));
    api.apply(objects::policy("shop", "web", json!({
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.2.12/24"}}], "ports": [{"port": "http"}]}]
    })));
}

fn start(
    api: &KubeApi,
    dir: &std::path::Path,
    local: Option<LocalVtep>,
) -> (KubeCluster, Follower) {
    let cfg = KubeConfig::new(Some(api.kubeconfig(dir)));
    let (c, rx) = KubeCluster::start(&cfg, local).expect("start the kube client");
    (c, Follower::new(rx))
}

#[test]
fn lists_watches_and_converts_objects_as_the_api_returns_them() {
    let api = KubeApi::start();
    world(&api);
    let dir = tempfile::tempdir().unwrap();
    let (c, mut f) = start(&api, dir.path(), None);
    f.until("the first snapshot", |_, e| {
        e.iter().any(|e| matches!(e, ClusterEvent::Snapshot(_)))
    });
    let v = f.view.clone();
    assert_eq!(
        v.nodes.keys().collect::<Vec<_>>(),
        ["node-b"],
        "only annotated nodes"
    );
    let b = &v.nodes["node-b"];
    assert_eq!(b.pod_cidr.to_string(), "10.244.1.0/24");
    assert_eq!(b.vtep_mac, MacAddr([2, 0x78, 0xc0, 0xa8, 1, 12]));
    assert_eq!(
        v.pods.len(),
        1,
        "the pod without an address is not a peer yet"
    );
    let web = &v.pods[&pod_key("node-b", "shop", "web-1")];
    assert_eq!(
        web.labels,
        BTreeMap::from([("app".to_string(), "web".to_string())])
    );
    assert_eq!(web.ports[0].name, "http");
    assert_eq!(web.ports[0].port, 8080);
    assert_eq!(
        v.namespaces["shop"].metadata.labels["kubernetes.io/metadata.name"],
        "shop"
    );
    let p = &v.policies[&("shop".to_string(), "web".to_string())];
    let cidr = p.spec.ingress.as_ref().unwrap()[0].from.as_ref().unwrap()[0]
        .ip_block
        .as_ref()
        .unwrap()
        .cidr
        .to_string();
    assert_eq!(
        cidr, "10.244.2.0/24",
        "host bits: the API's meaning, its network"
    );
    let st = c.state();
    assert!(st.synced);
    assert_eq!(st.resource_versions.len(), 4, "{:?}", st.resource_versions);

    // The wire: a list, then a watch from its resourceVersion with bookmarks.
    let deadline = Instant::now() + WAIT;
    while !api
        .requests()
        .iter()
        .any(|r| r.starts_with("GET /api/v1/pods?") && r.contains("watch=true"))
    {
        assert!(
            Instant::now() < deadline,
            "no pod watch: {:?}",
            api.requests()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let reqs = api.requests();
    let w = reqs
        .iter()
        .find(|r| r.starts_with("GET /api/v1/pods?") && r.contains("watch=true"))
        .unwrap();
    assert!(
        w.contains("allowWatchBookmarks=true") && w.contains("resourceVersion="),
        "{w}"
    );

    // Changes after the snapshot: relabel, an address assigned, a delete.
    api.modify(Kind::Pod, "shop", "web-1", |p| {
        p["metadata"]["labels"] = json!({"app": "db"})
    });
    f.until("the relabel", |v, _| {
        v.pods
            .get(&pod_key("node-b", "shop", "web-1"))
            .is_some_and(|p| p.labels["app"] == "db")
    });
    api.modify(
        Kind::Pod,
        "shop",
        "web-2",
        |p| {
            p["status"] =
                json!({"phase": "Running", "podIP": "10.244.1.6", "podIPs": [{"ip": "10.244.1.6"}]})
        },
    );
    f.until("web-2 with its address", |v, _| {
        v.pods.contains_key(&pod_key("node-b", "shop", "web-2"))
    });
    api.delete(Kind::NetworkPolicy, "shop", "web");
    f.until("the policy deleted", |v, _| v.policies.is_empty());
    assert_eq!(f.snapshots(), 1, "no re-list without a reason");
    assert!(f
        .seen
        .iter()
        .any(|e| matches!(e, ClusterEvent::Changes { changes, .. }
        if changes.iter().any(|c| matches!(c, Change::Delete(RecordKey::Policy { .. }))))));
}

#[test]
fn a_watch_cut_mid_stream_resumes_and_410_gone_relists_with_no_stale_state() {
    let api = KubeApi::start();
    world(&api);
    let dir = tempfile::tempdir().unwrap();
    let (_c, mut f) = start(&api, dir.path(), None);
    f.until("the first snapshot", |_, e| {
        e.iter().any(|e| matches!(e, ClusterEvent::Snapshot(_)))
    });

    // Cut: the client watches again from its last resourceVersion; no re-list.
    let watches = |api: &KubeApi| {
        api.requests()
            .iter()
            .filter(|r| r.contains("watch=true"))
            .count()
    };
    let before = watches(&api);
    api.drop_watches();
    api.apply(objects::pod(
        "shop",
        "late",
        "node-b",
        json!({"app": "late"}),
        Some("10.244.1.9"),
        &[],
    ));
    f.until("the pod added across the cut", |v, _| {
        v.pods.contains_key(&pod_key("node-b", "shop", "late"))
    });
    assert!(watches(&api) > before, "watched again");
    assert_eq!(
        f.snapshots(),
        1,
        "a cut watch resumes from its resourceVersion"
    );
    let reqs = api.requests();
    let last_watch = reqs
        .iter()
        .rev()
        .find(|r| r.starts_with("GET /api/v1/pods?") && r.contains("watch=true"))
        .unwrap();
    assert!(
        !last_watch.contains("resourceVersion=0&") && last_watch.contains("resourceVersion="),
        "{last_watch}"
    );

    // 410: the deletion is compacted away before any watch saw it; only a re-list
    // can tell, and the new snapshot must not keep the deleted objects.
    api.pause_watches();
    api.delete(Kind::Pod, "shop", "late");
    api.delete(Kind::NetworkPolicy, "shop", "web");
    api.apply(objects::namespace("new", json!({})));
    api.expire();
    api.resume_watches();
    f.until("a re-list after 410", |_, e| {
        e.iter()
            .filter(|e| matches!(e, ClusterEvent::Snapshot(_)))
            .count()
            >= 2
    });
    f.until("the re-listed view", |v, _| {
        v.namespaces.contains_key("new")
            && v.policies.is_empty()
            && !v.pods.contains_key(&pod_key("node-b", "shop", "late"))
    });
    assert!(f.seen.iter().any(|e| matches!(e, ClusterEvent::Disconnected { error } if error.contains("410") || error.contains("too old"))),
        "the 410 is reported: {:#?}", f.seen);
    // Still watching after the re-list.
    api.apply(objects::pod(
        "shop",
        "after",
        "node-b",
        json!({}),
        Some("10.244.1.10"),
        &[],
    ));
    f.until("a change after the re-list", |v, _| {
        v.pods.contains_key(&pod_key("node-b", "shop", "after"))
    });
}

#[test]
fn this_nodes_annotation_is_written_and_a_403_is_reported() {
    let api = KubeApi::start();
    api.apply(objects::node("node-a", "10.244.0.0/24", "192.168.1.11"));
    api.forbid_node_patch(true);
    let dir = tempfile::tempdir().unwrap();
    let local = LocalVtep {
        name: "node-a".into(),
        underlay_ip: "192.168.1.11".parse().unwrap(),
        vtep_mac: MacAddr([2, 0x78, 0xc0, 0xa8, 1, 11]),
        vni: 1,
        port: 8472,
    };
    let (c, mut f) = start(&api, dir.path(), Some(local.clone()));
    let deadline = Instant::now() + WAIT;
    while !c.state().annotation.contains("403") {
        assert!(
            Instant::now() < deadline,
            "no 403 reported: {:?}",
            c.state()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = c.state();
    assert!(
        st.annotation.contains("patch") && st.annotation.contains("RBAC"),
        "{}",
        st.annotation
    );
    assert_eq!(
        c.local_node(),
        None,
        "not registered without the annotation"
    );

    api.forbid_node_patch(false);
    f.until("Registered", |_, e| {
        e.iter().any(|e| matches!(e, ClusterEvent::Registered(_)))
    });
    let r = c.local_node().expect("registered");
    assert_eq!(
        r.pod_cidr.to_string(),
        "10.244.0.0/24",
        "the prefix is spec.podCIDR"
    );
    assert_eq!(r.underlay_ip, local.underlay_ip);
    assert_eq!(c.state().annotation, "written");
    let node = api.get(Kind::Node, "", "node-a").unwrap();
    let text = node["metadata"]["annotations"][VTEP_ANNOTATION]
        .as_str()
        .unwrap();
    let a: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(
        a,
        json!({"vtepMac": "02:78:c0:a8:01:0b", "underlayIp": "192.168.1.11", "vni": 1, "port": 8472})
    );
    assert!(api
        .requests()
        .iter()
        .any(|r| r.starts_with("PATCH /api/v1/nodes/node-a")));

    // Someone overwrites it: it is written back.
    api.modify(Kind::Node, "", "node-a", |n| {
        n["metadata"]["annotations"][VTEP_ANNOTATION] = json!("{}")
    });
    let deadline = Instant::now() + WAIT;
    loop {
        let n = api.get(Kind::Node, "", "node-a").unwrap();
        if n["metadata"]["annotations"][VTEP_ANNOTATION].as_str() == Some(text) {
            break;
        }
        assert!(Instant::now() < deadline, "annotation not restored");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_object_that_cannot_be_enforced_is_reported_and_the_others_take_effect() {
    let api = KubeApi::start();
    world(&api);
    api.apply(objects::policy(
        "shop",
        "future",
        json!({"podSelector": {}, "newField": {"x": 1}}),
    ));
    api.apply(objects::pod(
        "shop",
        "bad",
        "node-b",
        json!({"-bad-": "x"}),
        Some("10.244.1.7"),
        &[],
    ));
    let dir = tempfile::tempdir().unwrap();
    let (c, mut f) = start(&api, dir.path(), None);
    f.until("the snapshot", |_, e| {
        e.iter().any(|e| matches!(e, ClusterEvent::Snapshot(_)))
    });
    f.until("both refusals", |_, e| {
        let r: Vec<_> = e
            .iter()
            .filter_map(|e| match e {
                ClusterEvent::Refused(r) => Some(r.key.clone()),
                _ => None,
            })
            .collect();
        r.iter()
            .any(|k| k == "kubernetes:networkpolicies/shop/future")
            && r.iter().any(|k| k == "kubernetes:pods/shop/bad")
    });
    assert!(
        f.view
            .policies
            .contains_key(&("shop".to_string(), "web".to_string())),
        "the other policy is in force"
    );
    assert!(!f
        .view
        .policies
        .contains_key(&("shop".to_string(), "future".to_string())));
    // Listed as not enforced (what `policy list` shows), with the reason.
    let refused = c.state().refused;
    assert!(
        refused
            .get("kubernetes:networkpolicies/shop/future")
            .is_some_and(|r| r.contains("newField")),
        "{refused:?}"
    );
    // Fixed in the API: it takes effect.
    api.apply(objects::policy(
        "shop",
        "future",
        json!({"podSelector": {}}),
    ));
    f.until("the fixed policy", |v, _| {
        v.policies
            .contains_key(&("shop".to_string(), "future".to_string()))
    });
    assert!(!c
        .state()
        .refused
        .contains_key("kubernetes:networkpolicies/shop/future"));
}

// ---------------------------------------------------------------------------------------
// Privileged: two real xsknetd nodes with `datastore: {type: kubernetes}` against the
// test API server on an underlay bridge, pods made by the real CNI plugin with no
// labels in the call.

mod common;

use common::bridge::Bridge;
use common::*;
use std::net::Ipv4Addr;

/// `xsknetctl policy matrix` (offline) on the API's objects of this test: the pods with
/// the labels the API gave them, web's named port, and the policy as applied; what it
/// says about each pod → web on 8080.
fn matrix_to_web(d: &Daemon, pods: &[(&str, &Pod)]) -> BTreeMap<String, bool> {
    let labels = |n: &str| match n {
        "web" => "{app: web}",
        "client" => "{role: client}",
        _ => "{role: other}",
    };
    let mut world = String::from(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: default}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {role: client}}}]\n    ports: [{port: http}]\n",
    );
    for (n, p) in pods {
        world += &format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {n}, namespace: default, labels: {}}}\nspec: {{containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}]}}]}}\nstatus: {{podIP: {}}}\n",
            labels(n),
            p.ip
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("world.yaml");
    std::fs::write(&f, world).unwrap();
    let out = d.ctl_ok(&[
        "policy",
        "matrix",
        "-f",
        f.to_str().unwrap(),
        "--port",
        "8080",
        "--json",
    ]);
    let m: serde_json::Value = serde_json::from_str(&out).expect("matrix json");
    pods.iter()
        .filter(|(n, _)| *n != "web")
        .map(|(n, _)| {
            let ok = m["allowed"][format!("default/{n}")]["default/web"]
                .as_bool()
                .unwrap_or_else(|| panic!("matrix has {n} → web: {m}"));
            (n.to_string(), ok)
        })
        .collect()
}

fn kube_yaml(name: &str, kubeconfig: &std::path::Path) -> String {
    format!(
        "workers: [{{core: 0}}, {{core: 1}}]\nnodeName: {name}\n\
         datastore: {{type: kubernetes, kubeconfig: {}, podIdentityWaitSeconds: 2}}\n\
         overlay: {{vni: 1, port: 8472, clusterCidr: 10.244.0.0/16}}\n",
        kubeconfig.display()
    )
}

/// kubelet writes `status.podIP` after the ADD returned.
fn set_pod_ip(api: &KubeApi, ns: &str, name: &str, ip: Ipv4Addr) {
    api.modify(Kind::Pod, ns, name, |p| {
        p["status"] = json!({"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]})
    });
}

const CONNECT: Duration = Duration::from_millis(700);

/// Pods created through the CNI plugin with no labels get them from the API; label-based
/// NetworkPolicies applied, changed and deleted through the API take effect on real
/// TCP connections across two nodes; relabeling a pod changes what it may reach; each
/// node's annotation is written and read (the nodes route to each other through it);
/// an ADD whose Pod object is not in the API is refused after the bounded wait; a
/// watch cut mid-stream and a 410 Gone recover with no stale policy.
#[test]
fn kubernetes_api_drives_labels_policies_and_nodes() {
    if !testkit::privileged() {
        return;
    }
    let p = testkit::prefix("kb");
    let br = Bridge::new(&p, [192, 168, 96]);
    let api = KubeApi::start_on(br.ip(250));
    api.apply(objects::node(
        "node-a",
        "10.244.1.0/24",
        &br.ip(1).to_string(),
    ));
    api.apply(objects::node(
        "node-b",
        "10.244.2.0/24",
        &br.ip(2).to_string(),
    ));
    api.apply(objects::namespace("default", json!({})));
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    let na = br.node("a", 1);
    let nb = br.node("b", 2);
    let a = Daemon::start_yaml(&na, &format!("{p}a"), &kube_yaml("node-a", &kc));
    let b = Daemon::start_yaml(&nb, &format!("{p}b"), &kube_yaml("node-b", &kc));
    let logs = || format!("--- a\n{}\n--- b\n{}", a.log_text(), b.log_text());

    // The pod prefix is spec.podCIDR; each node wrote its annotation and reads the other's.
    let st = a.status().unwrap_or_else(|| panic!("{}", logs()));
    assert_eq!(st["pod_cidr"], "10.244.1.0/24", "{}", logs());
    let ann = api.get(Kind::Node, "", "node-b").unwrap()["metadata"]["annotations"]
        [VTEP_ANNOTATION]
        .clone();
    let ann: serde_json::Value =
        serde_json::from_str(ann.as_str().expect("annotation on node-b")).unwrap();
    assert_eq!(ann["underlayIp"], br.ip(2).to_string());
    wait_until("node-b in a's node list", WAIT, || {
        a.ctl_ok(&["node", "list"]).contains("node-b")
    });
    let ds = &a.status().unwrap()["datastore"];
    assert_eq!(ds["type"], "kubernetes", "{ds}");
    assert_eq!(ds["synced"], true, "{ds}");
    assert_eq!(ds["annotation"], "written", "{ds}");

    // An ADD whose Pod object does not exist is refused after the bounded wait.
    let ghost = Netns::new(&format!("{p}gh"));
    let att = CniAtt {
        container_id: format!("{p}gh-0123456789abcdef"),
        args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=ghost;IP=10.244.1.99".into(),
        conf: json!({"cniVersion": "1.0.0", "name": "xsknet", "type": "xsknet",
                     "socket": path_str(&a.socket), "stateDir": path_str(&a.dir.join("state"))}),
    };
    let t = Instant::now();
    let (rc, v, stderr) = a.cni(&na, "ADD", &ghost, &att);
    assert_ne!(rc, 0, "ADD without a Pod object: {v}");
    assert!(
        format!("{v}{stderr}").contains("not seen in the Kubernetes API"),
        "{v} {stderr}"
    );
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "waited the bounded time"
    );
    drop(ghost);

    // Pods: objects first (as the scheduler and kubelet do), then CNI ADD with no labels.
    api.apply(objects::pod(
        "default",
        "web",
        "node-b",
        json!({"app": "web"}),
        None,
        &[("http", 8080)],
    ));
    api.apply(objects::pod(
        "default",
        "client",
        "node-a",
        json!({"role": "client"}),
        None,
        &[],
    ));
    api.apply(objects::pod(
        "default",
        "other",
        "node-a",
        json!({"role": "other"}),
        None,
        &[],
    ));
    let web = b.cni_pod(
        &nb,
        &format!("{p}w"),
        "default",
        "web",
        &[],
        "10.244.2.10".parse().unwrap(),
    );
    let client = a.cni_pod(
        &na,
        &format!("{p}c"),
        "default",
        "client",
        &[],
        "10.244.1.10".parse().unwrap(),
    );
    let other = a.cni_pod(
        &na,
        &format!("{p}o"),
        "default",
        "other",
        &[],
        "10.244.1.11".parse().unwrap(),
    );
    for (n, pod) in [("web", &web), ("client", &client), ("other", &other)] {
        set_pod_ip(&api, "default", n, pod.ip);
    }
    serve(&web, &[8080]);
    let eps = b.ctl_ok(&["endpoint", "list"]);
    assert!(
        eps.contains("app=web") && eps.contains("kubernetes"),
        "{eps}"
    );
    let can = |from: &Pod| tcp_connects(from, web.ip, 8080, CONNECT);
    wait_until("client reaches web with no policy", WAIT, || can(&client));
    assert!(can(&other), "{}", logs());

    // Applied through the API: web accepts http only from role=client (a pod of node a:
    // its labels reach node b through the API too).
    let allow = |from_role: &str| {
        objects::policy(
            "default",
            "web",
            json!({
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": from_role}}}], "ports": [{"port": "http"}]}]
            }),
        )
    };
    api.apply(allow("client"));
    wait_until("other denied by the applied policy", WAIT, || !can(&other));
    assert!(can(&client), "client allowed\n{}", logs());
    // The same objects offline: `policy matrix` says the same about every pod → web
    // (the pods' labels as the API has them, none from the CNI call).
    let matrix = matrix_to_web(&a, &[("web", &web), ("client", &client), ("other", &other)]);
    for (name, pod) in [("client", &client), ("other", &other)] {
        assert_eq!(
            matrix[name],
            can(pod),
            "{name} → web:8080: live connection = policy matrix\n{}",
            logs()
        );
    }
    assert!(matrix["client"] && !matrix["other"], "{matrix:?}");
    let listed = b.ctl_ok(&["policy", "list"]);
    assert!(
        listed.contains("web") && listed.contains("kubernetes"),
        "{listed}"
    );

    // Changed through the API.
    api.apply(allow("other"));
    wait_until("the changed policy", WAIT, || !can(&client) && can(&other));

    // Relabeled in the API: client becomes role=other and may reach web.
    api.modify(Kind::Pod, "default", "client", |p| {
        p["metadata"]["labels"] = json!({"role": "other"})
    });
    wait_until("the relabeled pod allowed", WAIT, || can(&client));
    let eps = a.ctl_ok(&["endpoint", "list"]);
    assert!(eps.contains("role=other"), "{eps}");

    // Deleted through the API.
    api.modify(Kind::Pod, "default", "client", |p| {
        p["metadata"]["labels"] = json!({"role": "client"})
    });
    wait_until("relabeled back: denied", WAIT, || !can(&client));
    assert!(api.delete(Kind::NetworkPolicy, "default", "web"));
    wait_until("policy deleted: allowed", WAIT, || can(&client));

    // A watch cut mid-stream: a deny applied meanwhile still arrives.
    api.drop_watches();
    api.apply(objects::policy(
        "default",
        "deny",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}),
    ));
    wait_until("the deny after the cut", WAIT, || {
        !can(&client) && !can(&other)
    });

    // 410 Gone: the deny is deleted while the watches hold and the history is compacted
    // away; only the re-list can show it, and nothing of it may stay in force.
    api.pause_watches();
    assert!(api.delete(Kind::NetworkPolicy, "default", "deny"));
    api.expire();
    api.resume_watches();
    wait_until("no stale deny after the re-list", WAIT, || {
        can(&client) && can(&other)
    });
    let st = b.status().unwrap();
    assert!(
        st["datastore"]["resource_versions"]["networkpolicies"].is_string(),
        "{st}"
    );

    b.cni_del(&nb, &web);
    a.cni_del(&na, &client);
    a.cni_del(&na, &other);
}
