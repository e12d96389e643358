//! The daemon's side of the cluster datastore (`datastore:` in `node.yaml`; issue 9).
//! Absent = static mode: nothing here runs and the daemon is exactly what it was.
//!
//! * **Join** ([`join`], `saved.rs`, before anything that needs the pod prefix): find
//!   the uplink's underlay address, start [`EtcdCluster`] with this node (`nodeName`,
//!   underlay address, VTEP MAC, VNI, port, the subnet request of
//!   [`Config::subnet_request`](crate::config::Config::subnet_request)) and wait,
//!   bounded, for `Registered`: its pod prefix becomes `podCidr` for the rest of the
//!   daemon. The registered record is saved in `stateDir/node.json` and every changed
//!   view in `stateDir/cluster-view.json` (atomic writes); a restart while etcd is
//!   unreachable starts with the saved prefix and VTEP MAC (asking etcd for exactly
//!   that prefix once it is back) and the saved view (the other nodes to route to and
//!   accept VXLAN from, their pods as policy peers). With neither a registration nor a
//!   saved prefix the start fails with the last etcd error. Until a snapshot came (or
//!   a saved view was loaded) the view is not acted on: an empty view must not wipe
//!   the policies of `policy.json`.
//! * **Events** (`sync.rs`, on the control thread's tick, never
//!   on a worker): a [`ClusterView`] is kept as the event model says (snapshot
//!   replaces, changes apply in order, `Disconnected` keeps the last view so traffic
//!   keeps flowing). When the nodes change, the uplink's peers become the view's nodes
//!   minus this one and the tables are republished (the workers swap snapshots, no
//!   stall); nodes expire with their lease, so a dead node leaves the routes within its
//!   TTL. When pods, Namespaces or NetworkPolicies change, the other nodes' pods become
//!   policy peers, the view's Namespaces and NetworkPolicies replace the store's, and
//!   one recompile is requested (`Daemon::request_recompile`). A refused record is
//!   logged with its key and counted (`status.datastore.refused`).
//! * **Pods**: a successful ADD publishes the pod (namespace, name, labels, IP, named
//!   ports), a DEL withdraws it; both only queue (the etcd thread makes etcd match and
//!   republishes everything after a reconnect or a new lease), so ADD/DEL never wait
//!   for etcd.
//! * **Policy writes**: `policy apply`/`delete` write Namespaces and NetworkPolicies to
//!   etcd in one transaction and answer after etcd's acknowledgement and after the
//!   watch brought the write back into force here (bounded); with etcd unreachable
//!   they fail and nothing is written.

mod kube;
mod requests;
mod saved;
mod sync;

use std::path::PathBuf;
use std::time::Duration;

use xsknet_proto::wire::DatastoreStatus;

use crate::cluster::etcd::{EtcdCluster, EtcdError};
use crate::cluster::kube::{KubeCluster, KubeError};
use crate::cluster::records::{Record, RecordKey};
use crate::cluster::{Change, ClusterEvent, ClusterView, NodeRecord};
use crate::config::Ipv4Cidr;
use crate::policy::compile::PodView;

use super::uplink::UplinkError;

pub use saved::{join, NODE_FILE, VIEW_FILE};

/// Events applied per tick at most (the rest next tick: a tick stays short).
const MAX_EVENTS_PER_TICK: usize = 4096;

/// Joining the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("datastore: {0}")]
    Uplink(#[from] UplinkError),
    #[error("datastore: {0}")]
    Etcd(#[from] EtcdError),
    #[error("datastore: {0}")]
    Kube(#[from] KubeError),
    #[error(
        "datastore: node {node}: no Node in the Kubernetes API with this node's VTEP annotation \
         and an IPv4 spec.podCIDR within {waited:?} (annotation: {annotation}; last error: \
         {last_error})"
    )]
    NotRegistered {
        node: String,
        waited: Duration,
        annotation: String,
        last_error: String,
    },
    #[error(
        "datastore: podCidr {configured} in node.yaml differs from this Node's spec.podCIDR {api}"
    )]
    PodCidrMismatch { configured: Ipv4Cidr, api: Ipv4Cidr },
    #[error(
        "datastore: node {node} has no pod prefix: not registered in etcd within {waited:?} \
         (last error: {last_error}) and none saved in {file}"
    )]
    NoPrefix {
        node: String,
        waited: Duration,
        last_error: String,
        file: PathBuf,
    },
}

/// The client of the configured datastore.
pub(super) enum Backend {
    Etcd(EtcdCluster),
    /// The Kubernetes API; a CNI ADD waits up to `identity_wait` for its Pod object.
    Kube {
        handle: KubeCluster,
        identity_wait: Duration,
    },
}

impl Backend {
    fn kind(&self) -> &'static str {
        match self {
            Backend::Etcd(_) => "etcd",
            Backend::Kube { .. } => "kubernetes",
        }
    }
}

/// The daemon's cluster state (datastore mode).
pub struct Cluster {
    handle: Backend,
    events: crossbeam_channel::Receiver<ClusterEvent>,
    pub view: ClusterView,
    pub name: String,
    endpoints: Vec<String>,
    /// This node's record as in use (its prefix is `podCidr`).
    pub local: NodeRecord,
    registered: bool,
    connected: bool,
    last_error: Option<String>,
    refused: u64,
    node_file: PathBuf,
    view_file: PathBuf,
    /// The view holds something to act on: a snapshot came, or the saved view was
    /// loaded (an empty view before the first snapshot must not wipe policies).
    synced: bool,
    /// Kubernetes: the generation of this node's Pod objects last taken over.
    local_pods_seen: u64,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("local", &self.local)
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

/// What a batch of events changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    pub nodes: bool,
    /// Pods, Namespaces or NetworkPolicies.
    pub objects: bool,
}

impl Touched {
    fn record_kind(&mut self, node: bool) {
        if node {
            self.nodes = true;
        } else {
            self.objects = true;
        }
    }

    /// What `event` changes in `view` (before it is applied).
    pub fn of(view: &ClusterView, event: &ClusterEvent) -> Touched {
        let mut t = Touched::default();
        match event {
            ClusterEvent::Snapshot(v) => {
                t.nodes = v.nodes != view.nodes;
                t.objects = v.pods != view.pods
                    || v.namespaces != view.namespaces
                    || v.policies != view.policies;
            }
            ClusterEvent::Changes { changes, .. } => {
                for c in changes {
                    let node = matches!(
                        c,
                        Change::Put(Record::Node(_)) | Change::Delete(RecordKey::Node(_))
                    );
                    t.record_kind(node);
                }
            }
            _ => {}
        }
        t
    }
}

impl Cluster {
    /// Bookkeeping of one event (connection state, errors, refusals, registration).
    fn note(&mut self, e: &ClusterEvent) {
        match e {
            ClusterEvent::Snapshot(_) => {
                self.connected = true;
                self.synced = true;
                self.last_error = None;
            }
            ClusterEvent::Changes { .. } => {
                self.connected = true;
                self.last_error = None;
            }
            ClusterEvent::Refused(err) => {
                self.refused += 1;
                tracing::error!(key = %err.key, reason = %err.reason, "datastore record refused (left out of the view)");
            }
            ClusterEvent::Registered(r) => {
                self.registered = true;
                if r.pod_cidr != self.local.pod_cidr {
                    tracing::error!(registered = %r.pod_cidr, in_use = %self.local.pod_cidr,
                        "etcd registered another pod prefix than the one in use; restart the daemon to take it");
                } else {
                    if *r != self.local {
                        tracing::info!(record = ?r, "registered again with a changed record");
                    }
                    saved::save(&self.node_file, r);
                    self.local = r.clone();
                }
            }
            ClusterEvent::Disconnected { error } => {
                self.connected = false;
                self.last_error = Some(error.clone());
            }
        }
    }

    /// The other nodes, as the overlay's peers.
    pub fn peers(&self) -> Vec<NodeRecord> {
        peers_of(&self.view, &self.name)
    }

    /// `etcd` or `kubernetes`: the source of the view's labels and policies.
    pub fn source(&self) -> &'static str {
        self.handle.kind()
    }

    pub fn status(&self) -> DatastoreStatus {
        let watch = match &self.handle {
            Backend::Kube { handle, .. } => Some(handle.state()),
            Backend::Etcd(_) => None,
        };
        DatastoreStatus {
            kind: self.handle.kind().into(),
            synced: watch.as_ref().map(|w| w.synced),
            resource_versions: watch
                .as_ref()
                .map(|w| w.resource_versions.clone())
                .unwrap_or_default(),
            annotation: watch.as_ref().map(|w| w.annotation.clone()),
            endpoints: self.endpoints.clone(),
            node_name: self.name.clone(),
            connected: self.connected,
            registered: self.registered,
            revision: self.view.revision,
            last_error: self.last_error.clone(),
            refused: self.refused,
            nodes: self.view.nodes.len(),
            pods: self.view.pods.len(),
            namespaces: self.view.namespaces.len(),
            policies: self.view.policies.len(),
        }
    }

    pub fn healthy(&self) -> bool {
        self.connected && self.registered
    }
}

/// The view's nodes minus `local` (by name).
pub fn peers_of(view: &ClusterView, local: &str) -> Vec<NodeRecord> {
    view.nodes
        .values()
        .filter(|n| n.name != local)
        .cloned()
        .collect()
}

/// Other nodes' pods as policy peers: not this node's, not inside this node's prefix.
pub fn remote_pods(view: &ClusterView, local: &str, local_cidr: Ipv4Cidr) -> Vec<PodView> {
    view.pods
        .values()
        .filter(|p| p.node != local && !local_cidr.contains(p.ip))
        .map(|p| PodView {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            labels: p.labels.clone(),
            ip: p.ip,
            ports: p.ports.clone(),
        })
        .collect()
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::PodRecord;
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;
    use xsknet_proto::MacAddr;

    fn node(name: &str, cidr: &str, last: u8) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            pod_cidr: cidr.parse().unwrap(),
            underlay_ip: Ipv4Addr::new(192, 168, 9, last),
            vtep_mac: MacAddr([2, 0x78, 192, 168, 9, last]),
            vni: 1,
            vxlan_port: 8472,
        }
    }

    fn pod(node: &str, name: &str, ip: [u8; 4]) -> PodRecord {
        PodRecord {
            namespace: "default".into(),
            name: name.into(),
            labels: BTreeMap::from([("app".to_string(), name.to_string())]),
            ip: ip.into(),
            node: node.into(),
            ports: Vec::new(),
        }
    }

    fn view() -> ClusterView {
        let mut v = ClusterView::default();
        for n in [
            node("a", "10.244.0.0/24", 1),
            node("b", "10.244.1.0/24", 2),
            node("c", "10.244.2.0/24", 3),
        ] {
            v.put(Record::Node(n));
        }
        v.put(Record::Pod(pod("a", "pa", [10, 244, 0, 5])));
        v.put(Record::Pod(pod("b", "pb", [10, 244, 1, 5])));
        // Claims to be another node's but sits in a's prefix: not a remote peer for a.
        v.put(Record::Pod(pod("c", "liar", [10, 244, 0, 9])));
        v
    }

    #[test]
    fn peers_are_the_other_nodes_and_feed_the_overlay_tables() {
        let v = view();
        let peers = peers_of(&v, "a");
        assert_eq!(
            peers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
        );
        let local = crate::tables::Overlay {
            uplink: 0,
            local_ip: u32::from(Ipv4Addr::new(192, 168, 9, 1)),
            vtep_mac: [2, 0x78, 192, 168, 9, 1],
            vni: 1,
            dst_port: 8472,
            inner_mtu: 1450,
        };
        let t = super::super::tables::overlay_tables(
            local,
            "10.244.0.0/24".parse().unwrap(),
            &peers,
            |_| Some([2, 0, 0, 0, 0, 1]),
        );
        let ip = |a: [u8; 4]| u32::from(Ipv4Addr::from(a));
        assert_eq!(t.remote.lookup(ip([10, 244, 1, 9])), Some(0));
        assert_eq!(t.remote.lookup(ip([10, 244, 2, 9])), Some(1));
        assert_eq!(t.remote.lookup(ip([10, 244, 0, 9])), None);
        assert!(t.skipped.is_empty());
        // A node that expired with its lease is gone from the next tables.
        let mut v2 = v.clone();
        v2.delete(&RecordKey::Node("c".into()));
        let t = super::super::tables::overlay_tables(
            local,
            "10.244.0.0/24".parse().unwrap(),
            &peers_of(&v2, "a"),
            |_| Some([2, 0, 0, 0, 0, 1]),
        );
        assert_eq!(t.remote.lookup(ip([10, 244, 2, 9])), None);
    }

    #[test]
    fn remote_pods_leave_out_this_nodes_and_those_inside_its_prefix() {
        let v = view();
        let r = remote_pods(&v, "a", "10.244.0.0/24".parse().unwrap());
        assert_eq!(
            r.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["pb"]
        );
        assert_eq!(r[0].labels["app"], "pb");
    }

    #[test]
    fn touched_tells_node_changes_from_object_changes() {
        let v = view();
        let e = ClusterEvent::Changes {
            revision: 9,
            changes: vec![Change::Delete(RecordKey::Node("c".into()))],
        };
        assert_eq!(
            Touched::of(&v, &e),
            Touched {
                nodes: true,
                objects: false
            }
        );
        let e = ClusterEvent::Changes {
            revision: 9,
            changes: vec![Change::Put(Record::Pod(pod("b", "pb2", [10, 244, 1, 6])))],
        };
        assert_eq!(
            Touched::of(&v, &e),
            Touched {
                nodes: false,
                objects: true
            }
        );
        // A snapshot equal to the view touches nothing; one without a node touches nodes.
        assert_eq!(
            Touched::of(&v, &ClusterEvent::Snapshot(v.clone())),
            Touched::default()
        );
        let mut fewer = v.clone();
        fewer.delete(&RecordKey::Node("b".into()));
        assert!(Touched::of(&v, &ClusterEvent::Snapshot(fewer)).nodes);
        assert_eq!(
            Touched::of(&v, &ClusterEvent::Disconnected { error: "x".into() }),
            Touched::default()
        );
    }
}
