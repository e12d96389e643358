//! This node's registration and the last view, kept in the state dir for a restart
//! while etcd is unreachable, and [`join`]: registering at start (module doc of
//! [`super`]).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use xsknet_proto::MacAddr;

use super::{Cluster, ClusterError};
use crate::cluster::config::DatastoreConfig;
use crate::cluster::etcd::{EtcdCluster, EtcdError, LocalNode, SubnetRequest};
use crate::cluster::records::Record;
use crate::cluster::{ClusterEvent, ClusterView, NodeRecord, PodRecord};
use crate::config::{Config, Ipv4Cidr};
use crate::daemon::uplink;
use crate::state::StateDir;
use crate::sys::netlink::Netlink;

/// This node's registration, kept for restarts with etcd unreachable.
pub const NODE_FILE: &str = "node.json";
/// The last view, kept for the same reason (the other nodes to route to and accept
/// VXLAN from, their pods as policy peers).
pub const VIEW_FILE: &str = "cluster-view.json";
/// With a saved prefix: how long the start waits for etcd before using it.
const SAVED_WAIT_EXTRA: Duration = Duration::from_secs(2);
/// Without one: how long the start waits for a registration before it fails.
const FIRST_REGISTER_WAIT: Duration = Duration::from_secs(60);

/// What `node.json` holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavedNode {
    name: String,
    pod_cidr: Ipv4Cidr,
    vtep_mac: MacAddr,
    underlay_ip: Ipv4Addr,
}

/// What `cluster-view.json` holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct SavedView {
    revision: i64,
    nodes: Vec<NodeRecord>,
    pods: Vec<PodRecord>,
    namespaces: Vec<crate::policy::k8s::Namespace>,
    policies: Vec<crate::policy::k8s::NetworkPolicy>,
}

impl SavedView {
    pub(super) fn of(v: &ClusterView) -> SavedView {
        SavedView {
            revision: v.revision,
            nodes: v.nodes.values().cloned().collect(),
            pods: v.pods.values().cloned().collect(),
            namespaces: v.namespaces.values().cloned().collect(),
            policies: v.policies.values().cloned().collect(),
        }
    }

    /// Back into a view; records that fail validation are left out (it is a file).
    pub(super) fn into_view(self) -> ClusterView {
        let mut v = ClusterView {
            revision: self.revision,
            ..ClusterView::default()
        };
        for n in self.nodes.into_iter().filter(|n| n.validate().is_ok()) {
            v.put(Record::Node(n));
        }
        for p in self.pods.into_iter().filter(|p| p.validate().is_ok()) {
            v.put(Record::Pod(p));
        }
        for n in self.namespaces {
            v.put(Record::Namespace(n));
        }
        for p in self.policies {
            v.put(Record::Policy(p));
        }
        v
    }
}

fn read_saved(path: &Path) -> Option<SavedNode> {
    read_json(path, "node registration")
}

pub(super) fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Option<T> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "saved {what} not read");
            return None;
        }
    };
    match serde_json::from_slice(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "saved {what} unreadable; ignored");
            None
        }
    }
}

pub(super) fn write_json(path: &Path, value: &impl Serialize, what: &str) {
    let r = serde_json::to_vec(value)
        .map_err(std::io::Error::other)
        .and_then(|b| xsknet_proto::fsutil::write_atomic(path, &b));
    if let Err(e) = r {
        tracing::error!(file = %path.display(), error = %e, "{what} not saved (a restart with etcd down starts without it)");
    }
}

pub(super) fn save(path: &Path, r: &NodeRecord) {
    let saved = SavedNode {
        name: r.name.clone(),
        pod_cidr: r.pod_cidr,
        vtep_mac: r.vtep_mac,
        underlay_ip: r.underlay_ip,
    };
    write_json(path, &saved, "node registration");
}

/// The saved registration to reuse: same node name, a prefix the request accepts.
fn usable_saved(saved: Option<SavedNode>, name: &str, request: SubnetRequest) -> Option<SavedNode> {
    let s = saved?;
    if s.name != name {
        tracing::warn!(saved = %s.name, node = name, "saved registration is another node's; ignored");
        return None;
    }
    if !request.accepts(s.pod_cidr) {
        tracing::warn!(saved = %s.pod_cidr, "saved pod prefix does not fit the configuration; ignored");
        return None;
    }
    Some(s)
}

/// Join the cluster (module doc): with a datastore, registers this node and sets
/// `cfg.pod_cidr` to its prefix. `Ok(None)` in static mode.
pub fn join(
    cfg: &mut Config,
    state: &StateDir,
    nl: &mut Netlink,
) -> Result<Option<Cluster>, ClusterError> {
    if let (Some(DatastoreConfig::Kubernetes(k)), Some(_)) = (&cfg.datastore, &cfg.overlay) {
        let k = k.clone();
        return super::kube::join(cfg, &k, state, nl).map(Some);
    }
    let (Some(DatastoreConfig::Etcd(etcd)), Some(overlay), Some(request)) =
        (&cfg.datastore, &cfg.overlay, cfg.subnet_request())
    else {
        return Ok(None);
    };
    let name = cfg.node_name();
    let up = uplink::discover(nl, &cfg.uplink, overlay)?;
    let node_file = state.root.join(NODE_FILE);
    let saved = usable_saved(read_saved(&node_file), &name, request);
    let vtep_mac = match (overlay.vtep_mac, &saved) {
        (Some(m), _) => m,
        (None, Some(s)) => s.vtep_mac,
        (None, None) => MacAddr(uplink::derived_vtep_mac(up.ip)),
    };
    let local = LocalNode {
        name: name.clone(),
        underlay_ip: up.ip,
        vtep_mac,
        vni: overlay.vni,
        vxlan_port: overlay.port,
        // The prefix this node had: etcd still has it as ours (ownership outlives the
        // lease), and asking for exactly it keeps addresses of pods that still run.
        subnet: saved
            .as_ref()
            .map_or(request, |s| SubnetRequest::Fixed(s.pod_cidr)),
    };
    let (handle, events) = EtcdCluster::start(etcd, Some(local.clone()), None)?;
    let wait = if saved.is_some() {
        etcd.request_timeout() + SAVED_WAIT_EXTRA
    } else {
        FIRST_REGISTER_WAIT
    };
    tracing::info!(node = %name, endpoints = ?etcd.endpoints, underlay_ip = %up.ip, "joining the cluster");
    // Wait for the registration; keep the events (they are replayed by the first tick)
    // and the last error (for the message if it never comes).
    let deadline = Instant::now() + wait;
    let mut early = Vec::new();
    let mut last_error = String::from("none yet");
    let record = loop {
        if let Some(r) = handle.local_node() {
            break Some(r);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break None;
        }
        match events.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(e) => {
                if let ClusterEvent::Disconnected { error } = &e {
                    last_error.clone_from(error);
                }
                early.push(e);
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                return Err(EtcdError::Stopped.into())
            }
        }
    };
    let (record, registered) = match (record, saved) {
        (Some(r), _) => {
            save(&node_file, &r);
            tracing::info!(node = %r.name, pod_cidr = %r.pod_cidr, vtep_mac = %r.vtep_mac, "registered in the cluster");
            (r, true)
        }
        (None, Some(s)) => {
            tracing::warn!(node = %name, pod_cidr = %s.pod_cidr, last_error = %last_error,
                "etcd unreachable: starting with the saved pod prefix; registering when it is back");
            (
                NodeRecord {
                    name: name.clone(),
                    pod_cidr: s.pod_cidr,
                    underlay_ip: up.ip,
                    vtep_mac,
                    vni: overlay.vni,
                    vxlan_port: overlay.port,
                },
                false,
            )
        }
        (None, None) => {
            return Err(ClusterError::NoPrefix {
                node: name,
                waited: wait,
                last_error,
                file: node_file,
            })
        }
    };
    cfg.pod_cidr = record.pod_cidr;
    let view_file = state.root.join(VIEW_FILE);
    let saved_view = read_json::<SavedView>(&view_file, "cluster view").map(SavedView::into_view);
    let mut c = Cluster {
        handle: super::Backend::Etcd(handle),
        events,
        synced: saved_view.is_some(),
        view: saved_view.unwrap_or_default(),
        view_file,
        name,
        endpoints: etcd.endpoints.clone(),
        local: record,
        registered,
        connected: false,
        last_error: None,
        refused: 0,
        node_file,
        local_pods_seen: 0,
    };
    for e in early {
        c.note(&e);
        c.view.apply_event(&e);
    }
    Ok(Some(c))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_saved_registration_is_reused_only_for_this_node_and_a_fitting_prefix() {
        let s = SavedNode {
            name: "a".into(),
            pod_cidr: "10.244.3.0/24".parse().unwrap(),
            vtep_mac: MacAddr([2, 0x78, 1, 2, 3, 4]),
            underlay_ip: Ipv4Addr::new(192, 168, 9, 1),
        };
        let from_cluster = SubnetRequest::FromCluster {
            cluster: "10.244.0.0/16".parse().unwrap(),
            len: 24,
        };
        assert_eq!(
            usable_saved(Some(s.clone()), "a", from_cluster),
            Some(s.clone())
        );
        assert_eq!(usable_saved(Some(s.clone()), "b", from_cluster), None);
        let other_len = SubnetRequest::FromCluster {
            cluster: "10.244.0.0/16".parse().unwrap(),
            len: 25,
        };
        assert_eq!(usable_saved(Some(s.clone()), "a", other_len), None);
        let fixed = SubnetRequest::Fixed("10.244.4.0/24".parse().unwrap());
        assert_eq!(usable_saved(Some(s.clone()), "a", fixed), None);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(NODE_FILE);
        assert_eq!(read_saved(&path), None);
        save(&path, &node("a", "10.244.3.0/24", 1));
        let back = read_saved(&path).unwrap();
        assert_eq!(back.pod_cidr, s.pod_cidr);
        assert_eq!(back.vtep_mac, MacAddr([2, 0x78, 192, 168, 9, 1]));
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(read_saved(&path), None, "unreadable: ignored, not fatal");
    }
}
