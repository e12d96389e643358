//! The daemon's side of the cluster datastore (`datastore:` in `node.yaml`; issue 9).
//! Absent = static mode: nothing here runs and the daemon is exactly what it was.
//!
//! * **Join** ([`join`], before anything that needs the pod prefix): find the uplink's
//!   underlay address, start [`EtcdCluster`] with this node (`nodeName`, underlay
//!   address, VTEP MAC, VNI, port, subnet request of [`Config::subnet_request`]) and
//!   wait, bounded, for `Registered`: its pod prefix becomes `podCidr` for the rest of
//!   the daemon. The registered record is saved in `stateDir/node.json` (atomic write);
//!   a restart while etcd is unreachable starts with the saved prefix and VTEP MAC
//!   (and asks etcd for exactly that prefix once it is back). With neither a
//!   registration nor a saved prefix the start fails with the last etcd error.
//! * **Events** ([`Daemon::cluster_housekeeping`], on the control thread's tick, never
//!   on a worker): a [`ClusterView`] is kept as the event model says (snapshot
//!   replaces, changes apply in order, `Disconnected` keeps the last view so traffic
//!   keeps flowing). When the nodes change, the uplink's peers become the view's nodes
//!   minus this one and the tables are republished (the workers swap snapshots, no
//!   stall); nodes expire with their lease, so a dead node leaves the routes within its
//!   TTL. When pods, Namespaces or NetworkPolicies change, the other nodes' pods become
//!   policy peers, the view's Namespaces and NetworkPolicies replace the store's, and
//!   one recompile is requested ([`Daemon::request_recompile`]). A refused record is
//!   logged with its key and counted (`status.datastore.refused`).
//! * **Pods**: a successful ADD publishes the pod (namespace, name, labels, IP, named
//!   ports), a DEL withdraws it; both only queue (the etcd thread makes etcd match and
//!   republishes everything after a reconnect or a new lease), so ADD/DEL never wait
//!   for etcd.
//! * **Policy writes**: `policy apply`/`delete` write Namespaces and NetworkPolicies to
//!   etcd in one transaction and answer after etcd's acknowledgement and after the
//!   watch brought the write back into force here (bounded); with etcd unreachable
//!   they fail and nothing is written.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use xsknet_proto::wire::{DatastoreStatus, NodeInfo, NodeList};
use xsknet_proto::MacAddr;

use crate::cluster::config::DatastoreConfig;
use crate::cluster::etcd::{EtcdCluster, EtcdError, LocalNode, SubnetRequest};
use crate::cluster::records::{Record, RecordKey};
use crate::cluster::{Change, ClusterEvent, ClusterView, NodeRecord, PodRecord};
use crate::config::{Config, Ipv4Cidr};
use crate::control::proto::{ControlError, Endpoint, ErrorKind, PolicyApplied};
use crate::policy::compile::PodView;
use crate::policy::k8s::{self, Object};
use crate::state::StateDir;
use crate::sys::netlink::Netlink;

use super::uplink::{self, UplinkError};
use super::Daemon;

/// This node's registration, kept for restarts with etcd unreachable.
pub const NODE_FILE: &str = "node.json";
/// The last view, kept for the same reason (the other nodes to route to and accept
/// VXLAN from, their pods as policy peers).
pub const VIEW_FILE: &str = "cluster-view.json";
/// With a saved prefix: how long the start waits for etcd before using it.
const SAVED_WAIT_EXTRA: Duration = Duration::from_secs(2);
/// Without one: how long the start waits for a registration before it fails.
const FIRST_REGISTER_WAIT: Duration = Duration::from_secs(60);
/// Events applied per tick at most (the rest next tick: a tick stays short).
const MAX_EVENTS_PER_TICK: usize = 4096;

/// Joining the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("datastore: {0}")]
    Uplink(#[from] UplinkError),
    #[error("datastore: {0}")]
    Etcd(#[from] EtcdError),
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
struct SavedView {
    revision: i64,
    nodes: Vec<NodeRecord>,
    pods: Vec<PodRecord>,
    namespaces: Vec<crate::policy::k8s::Namespace>,
    policies: Vec<crate::policy::k8s::NetworkPolicy>,
}

impl SavedView {
    fn of(v: &ClusterView) -> SavedView {
        SavedView {
            revision: v.revision,
            nodes: v.nodes.values().cloned().collect(),
            pods: v.pods.values().cloned().collect(),
            namespaces: v.namespaces.values().cloned().collect(),
            policies: v.policies.values().cloned().collect(),
        }
    }

    /// Back into a view; records that fail validation are left out (it is a file).
    fn into_view(self) -> ClusterView {
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

/// The daemon's cluster state (datastore mode).
pub struct Cluster {
    handle: EtcdCluster,
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

fn read_saved(path: &Path) -> Option<SavedNode> {
    read_json(path, "node registration")
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Option<T> {
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

fn write_json(path: &Path, value: &impl Serialize, what: &str) {
    let r = serde_json::to_vec(value)
        .map_err(std::io::Error::other)
        .and_then(|b| xsknet_proto::fsutil::write_atomic(path, &b));
    if let Err(e) = r {
        tracing::error!(file = %path.display(), error = %e, "{what} not saved (a restart with etcd down starts without it)");
    }
}

fn save(path: &Path, r: &NodeRecord) {
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
        handle,
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
    };
    for e in early {
        c.note(&e);
        c.view.apply_event(&e);
    }
    Ok(Some(c))
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
                    save(&self.node_file, r);
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

    pub fn status(&self) -> DatastoreStatus {
        DatastoreStatus {
            kind: "etcd".into(),
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

impl Daemon {
    /// Apply the events waiting (module doc), then act on what they changed. With
    /// `until = Some((revision, deadline))`, also wait (bounded) until the view has
    /// reached `revision` (a write of this daemon's, to be in force when it answers).
    pub(super) fn cluster_events(&mut self, until: Option<(i64, Instant)>) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let mut touched = Touched::default();
        let mut n = 0;
        loop {
            let event = match until {
                Some((rev, deadline)) if c.view.revision < rev => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match c.events.recv_timeout(left) {
                        Ok(e) => e,
                        Err(_) => break,
                    }
                }
                _ if n >= MAX_EVENTS_PER_TICK => break,
                _ => match c.events.try_recv() {
                    Ok(e) => e,
                    Err(_) => break,
                },
            };
            n += 1;
            let t = Touched::of(&c.view, &event);
            touched.nodes |= t.nodes;
            touched.objects |= t.objects;
            c.note(&event);
            c.view.apply_event(&event);
        }
        if touched.nodes || touched.objects {
            write_json(&c.view_file, &SavedView::of(&c.view), "cluster view");
        }
        if touched.nodes {
            self.sync_peers();
        }
        if touched.objects {
            self.sync_policy_from_view();
        }
    }

    /// Housekeeping (every tick).
    pub(super) fn cluster_housekeeping(&mut self) {
        self.cluster_events(None);
    }

    /// The uplink's peers from the view; republish.
    fn sync_peers(&mut self) {
        let Some(c) = self.cluster.as_ref().filter(|c| c.synced) else {
            return;
        };
        let peers = c.peers();
        let Some(up) = self.uplink.as_mut() else {
            return;
        };
        if up.peers == peers {
            return;
        }
        tracing::info!(nodes = ?peers.iter().map(|p| (&p.name, p.pod_cidr.to_string())).collect::<Vec<_>>(), "cluster nodes changed");
        up.peers = peers;
        if let Err(e) = up.resolve(&mut self.nl) {
            tracing::warn!(error = %e, "resolve overlay next hops");
        }
        self.log_skipped_nodes();
        if let Err(e) = self.publish_and_wait() {
            tracing::error!(error = %e, "publish the overlay routes");
        }
    }

    /// The policy input from the view: other nodes' pods, Namespaces, NetworkPolicies.
    fn sync_policy_from_view(&mut self) {
        let Some(c) = self.cluster.as_ref().filter(|c| c.synced) else {
            return;
        };
        let remote = remote_pods(&c.view, &c.name, self.cfg.pod_cidr);
        let namespaces: Vec<_> = c.view.namespaces.values().cloned().collect();
        let policies: Vec<_> = c.view.policies.values().cloned().collect();
        let changed = match self.policy.apply(|s| {
            s.replace_cluster_objects(namespaces, policies);
            Ok(())
        }) {
            Ok(((), changed)) => changed,
            Err(e) => {
                tracing::error!(error = %e, "datastore policies not taken over");
                false
            }
        };
        let remote_changed = self.policy.set_remote_pods(remote);
        if changed || remote_changed {
            self.request_recompile();
        }
    }

    /// The one place a cluster change asks for the policy to be recompiled and
    /// published (so the compile can move to a thread of its own behind it).
    pub(super) fn request_recompile(&mut self) {
        if let Err(e) = self.recompile_and_publish() {
            tracing::error!(error = %e, "publish the recompiled policy");
        }
    }

    /// After a successful ADD: publish the pod (queued; never waits for etcd).
    pub(super) fn cluster_publish_pod(&self, ep: &Endpoint) {
        let Some(c) = &self.cluster else { return };
        let Some(view) = self.policy.endpoint_view(ep) else {
            return;
        };
        let pod = PodRecord {
            namespace: view.namespace,
            name: view.name,
            labels: view.labels,
            ip: ep.ip,
            node: c.name.clone(),
            ports: view.ports,
        };
        if let Err(e) = c.handle.set_pod(pod) {
            tracing::warn!(ifname = %ep.ifname, error = %e, "pod not published to the datastore");
        }
    }

    /// After a DEL: withdraw the pod (queued).
    pub(super) fn cluster_withdraw_pod(&self, ep: &Endpoint) {
        let (Some(c), Some(ns), Some(name)) = (&self.cluster, &ep.namespace, &ep.name) else {
            return;
        };
        if let Err(e) = c.handle.remove_pod(ns, name) {
            tracing::warn!(ifname = %ep.ifname, error = %e, "pod not withdrawn from the datastore");
        }
    }

    /// At start, once the endpoints are restored: publish every live one, and take
    /// over what the view already holds (events that arrived while joining).
    pub(super) fn cluster_start_sync(&mut self) {
        if self.cluster.is_none() {
            return;
        }
        for ep in self.endpoints.iter() {
            self.cluster_publish_pod(ep);
        }
        self.sync_peers();
        self.sync_policy_from_view();
    }

    /// `status.datastore`.
    pub(super) fn datastore_status(&self) -> Option<DatastoreStatus> {
        self.cluster.as_ref().map(Cluster::status)
    }

    /// The metrics' datastore health: None in static mode.
    pub(super) fn datastore_healthy(&self) -> Option<bool> {
        self.cluster.as_ref().map(Cluster::healthy)
    }

    /// `node list`.
    pub(super) fn node_list(&self) -> NodeList {
        let skipped: Vec<(String, &'static str)> =
            self.overlay_tables().map(|t| t.skipped).unwrap_or_default();
        let info = |r: &NodeRecord, local: bool, alive: Option<bool>| NodeInfo {
            name: r.name.clone(),
            pod_cidr: r.pod_cidr.to_string(),
            underlay_ip: Some(r.underlay_ip),
            vtep_mac: r.vtep_mac.to_string(),
            vni: r.vni,
            port: r.vxlan_port,
            local,
            alive,
            unused: if local {
                None
            } else {
                skipped
                    .iter()
                    .find(|(n, _)| *n == r.name)
                    .map(|(_, why)| (*why).to_string())
            },
        };
        let mut nodes = Vec::new();
        match &self.cluster {
            Some(c) => {
                for r in c.view.nodes.values() {
                    nodes.push(info(r, r.name == c.name, Some(true)));
                }
                if !c.view.nodes.contains_key(&c.name) {
                    nodes.push(info(&c.local, true, Some(false)));
                }
            }
            None => {
                if let Some(up) = &self.uplink {
                    let me = NodeRecord {
                        name: self.cfg.node_name(),
                        pod_cidr: self.cfg.pod_cidr,
                        underlay_ip: up.ip,
                        vtep_mac: MacAddr(up.vtep_mac),
                        vni: up.vni,
                        vxlan_port: up.port,
                    };
                    nodes.push(info(&me, true, None));
                    for p in &up.peers {
                        nodes.push(info(p, false, None));
                    }
                }
            }
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        NodeList {
            datastore: self.datastore_status(),
            nodes,
        }
    }

    /// `policy apply` in datastore mode (None in static mode: the caller applies
    /// locally). Namespaces and NetworkPolicies go to etcd in one transaction; Pod
    /// documents are refused (pods come from the nodes that run them).
    pub(super) fn cluster_policy_apply(
        &mut self,
        yaml: &str,
        file: Option<&str>,
    ) -> Option<Result<PolicyApplied, ControlError>> {
        self.cluster.as_ref()?;
        Some(self.cluster_policy_apply_inner(yaml, file))
    }

    fn cluster_policy_apply_inner(
        &mut self,
        yaml: &str,
        file: Option<&str>,
    ) -> Result<PolicyApplied, ControlError> {
        let objects =
            k8s::parse_yaml(yaml, file).map_err(super::policy::PolicyRequestError::from)?;
        if let Some(p) = objects.iter().find(|o| matches!(o, Object::Pod(_))) {
            return Err(ControlError::new(
                ErrorKind::InvalidRequest,
                format!(
                    "{}: Pod documents are not written to the datastore (pods come from the nodes that run them); nothing written",
                    p.describe()
                ),
            ));
        }
        // The summary (and the all-or-nothing checks) as a local apply would give.
        let summary = self
            .policy
            .store()
            .clone()
            .apply_objects(objects.clone())
            .map_err(super::policy::PolicyRequestError::from)?;
        let puts: Vec<Record> = objects
            .into_iter()
            .filter_map(|o| match o {
                Object::Namespace(n) => Some(Record::Namespace(n)),
                Object::NetworkPolicy(p) => Some(Record::Policy(p)),
                Object::Pod(_) => None,
            })
            .collect();
        let rev = self.cluster_write(puts, Vec::new())?;
        let generation = self.publisher.current().generation;
        tracing::info!(created = ?summary.created, configured = ?summary.configured, revision = rev, generation, "policy written to the datastore");
        Ok(super::policy::applied(summary, generation))
    }

    /// `policy delete` in datastore mode (None in static mode).
    pub(super) fn cluster_policy_delete(
        &mut self,
        namespace: &str,
        name: &str,
    ) -> Option<Result<PolicyApplied, ControlError>> {
        let c = self.cluster.as_ref()?;
        let key = (namespace.to_string(), name.to_string());
        if !c.view.policies.contains_key(&key) {
            return Some(Err(ControlError::new(
                ErrorKind::NotFound,
                format!("NetworkPolicy {namespace}/{name} not found in the datastore"),
            )));
        }
        let deleted = RecordKey::Policy {
            namespace: key.0,
            name: key.1,
        };
        Some(self.cluster_write(Vec::new(), vec![deleted]).map(|rev| {
            tracing::info!(policy = %format!("{namespace}/{name}"), revision = rev, "policy deleted from the datastore");
            PolicyApplied {
                deleted: vec![format!("NetworkPolicy {namespace}/{name}")],
                generation: self.publisher.current().generation,
                ..PolicyApplied::default()
            }
        }))
    }

    /// One transaction; on success wait (bounded) until the watch brought it here.
    fn cluster_write(
        &mut self,
        puts: Vec<Record>,
        deletes: Vec<RecordKey>,
    ) -> Result<i64, ControlError> {
        let Some(c) = &self.cluster else {
            return Err(ControlError::new(ErrorKind::System, "no datastore"));
        };
        if !c.connected {
            return Err(ControlError::new(
                ErrorKind::Unavailable,
                format!(
                    "datastore unreachable ({}); nothing written",
                    c.last_error.as_deref().unwrap_or("not connected yet")
                ),
            ));
        }
        let rev = c.handle.write_batch(puts, deletes).map_err(|e| {
            ControlError::new(
                ErrorKind::Unavailable,
                format!("datastore write failed, nothing written: {e}"),
            )
        })?;
        let deadline = Instant::now() + Duration::from_secs(5);
        self.cluster_events(Some((rev, deadline)));
        Ok(rev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

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
