//! `datastore: {type: kubernetes}` on the daemon's side (issue 10): joining (the pod
//! prefix is this Node's `spec.podCIDR`, the VTEP is written as its annotation), the
//! pod's identity at ADD, and relabeling of this node's pods from their Pod objects.
//!
//! **Identity at pod start** (issue 10, point 3). containerd's CNI ADD carries the
//! pod's namespace and name but no labels. kubelet creates the sandbox only for a Pod
//! object that exists and is bound to this node, so the object is in the API before
//! the ADD; the watch may lag it. The rule: an ADD with a namespace and name waits up to
//! `datastore.podIdentityWaitSeconds` (default 5 s) for that Pod, scheduled to this
//! node, in the watch ([`crate::cluster::kube::KubeCluster::local_pod`]); its labels
//! replace the call's, and the endpoint is attached with them. If the object does not
//! come in time, the ADD fails (kubelet retries the sandbox), so **no pod ever runs with
//! an unknown identity**: a denied connection is never let through because labels were
//! missing, and an allowed one is refused only while the sandbox is not up yet (at most
//! the wait plus kubelet's retry). The pod's named container ports follow on the next
//! control tick (a named-port rule towards it takes effect that tick).
//!
//! **Relabeling**: every tick the generation of this node's Pod objects is compared;
//! when it moved, each endpoint whose Pod's labels or named ports differ gets them (the
//! endpoints file and the policy store are written, one recompile is published).
//! `endpoint list` shows `labelsSource: kubernetes` for them.

use std::time::{Duration, Instant};

use xsknet_proto::MacAddr;

use super::saved::{read_json, SavedView};
use super::{Backend, Cluster, ClusterError, VIEW_FILE};
use crate::cluster::config::KubeConfig;
use crate::cluster::kube::{KubeCluster, LocalVtep};
use crate::config::Config;
use crate::control::proto::{ControlError, EndpointSpec, ErrorKind, PolicyInfo};
use crate::daemon::{uplink, Daemon};
use crate::policy::compile::PodView;
use crate::state::StateDir;
use crate::sys::netlink::Netlink;
use xsknet_proto::wire::EndpointEntry;

/// How long the start waits for this Node to carry our annotation and a podCIDR.
const REGISTER_WAIT: Duration = Duration::from_secs(60);

/// Join through the Kubernetes API (module doc).
pub(super) fn join(
    cfg: &mut Config,
    k: &KubeConfig,
    state: &StateDir,
    nl: &mut Netlink,
) -> Result<Cluster, ClusterError> {
    let Some(overlay) = cfg.overlay.clone() else {
        unreachable!("checked by the caller");
    };
    let name = cfg.node_name();
    let up = uplink::discover(nl, &cfg.uplink, &overlay)?;
    let vtep_mac = overlay
        .vtep_mac
        .unwrap_or(MacAddr(uplink::derived_vtep_mac(up.ip)));
    let local = LocalVtep {
        name: name.clone(),
        underlay_ip: up.ip,
        vtep_mac,
        vni: overlay.vni,
        port: overlay.port,
    };
    let (handle, events) = KubeCluster::start(k, Some(local))?;
    tracing::info!(node = %name, kubeconfig = ?k.kubeconfig, underlay_ip = %up.ip, "joining the cluster through the Kubernetes API");
    let deadline = Instant::now() + REGISTER_WAIT;
    let mut early = Vec::new();
    let record = loop {
        if let Some(r) = handle.local_node() {
            break r;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let w = handle.state();
            return Err(ClusterError::NotRegistered {
                node: name,
                waited: REGISTER_WAIT,
                annotation: w.annotation,
                last_error: w.last_error.unwrap_or_else(|| "none".into()),
            });
        }
        if let Ok(e) = events.recv_timeout(left.min(Duration::from_millis(100))) {
            early.push(e);
        }
    };
    if cfg.pod_cidr_explicit && cfg.pod_cidr != record.pod_cidr {
        return Err(ClusterError::PodCidrMismatch {
            configured: cfg.pod_cidr,
            api: record.pod_cidr,
        });
    }
    tracing::info!(node = %record.name, pod_cidr = %record.pod_cidr, vtep_mac = %record.vtep_mac, "registered through the Kubernetes API");
    cfg.pod_cidr = record.pod_cidr;
    let view_file = state.root.join(VIEW_FILE);
    let saved_view = read_json::<SavedView>(&view_file, "cluster view").map(SavedView::into_view);
    let mut c = Cluster {
        handle: Backend::Kube {
            handle,
            identity_wait: k.pod_identity_wait(),
        },
        events,
        synced: saved_view.is_some(),
        view: saved_view.unwrap_or_default(),
        view_file,
        name,
        endpoints: vec![k
            .kubeconfig
            .as_ref()
            .map_or("in-cluster".to_string(), |p| p.display().to_string())],
        local: record,
        registered: true,
        connected: false,
        last_error: None,
        refused: 0,
        node_file: state.root.join(super::NODE_FILE),
        local_pods_seen: u64::MAX,
    };
    for e in early {
        c.note(&e);
        c.view.apply_event(&e);
    }
    Ok(c)
}

impl Daemon {
    /// At ADD (module doc): with the Kubernetes datastore, the pod's labels from its
    /// Pod object, waiting (bounded) for it; other modes return `spec` unchanged.
    pub(in crate::daemon) fn cluster_identity(
        &mut self,
        mut spec: EndpointSpec,
    ) -> Result<EndpointSpec, ControlError> {
        let Some(c) = self.cluster.as_mut() else {
            return Ok(spec);
        };
        let Backend::Kube { identity_wait, .. } = &c.handle else {
            return Ok(spec);
        };
        let (Some(ns), Some(name)) = (spec.namespace.clone(), spec.name.clone()) else {
            return Ok(spec);
        };
        let deadline = Instant::now() + *identity_wait;
        loop {
            let Some(c) = self.cluster.as_mut() else {
                return Ok(spec);
            };
            let Backend::Kube {
                handle,
                identity_wait,
            } = &c.handle
            else {
                return Ok(spec);
            };
            if let Some(p) = handle.local_pod(&ns, &name) {
                if p.labels != spec.labels && !spec.labels.is_empty() {
                    tracing::info!(pod = %format!("{ns}/{name}"), "labels of the CNI call replaced by the Pod object's");
                }
                spec.labels = p.labels;
                // Ports follow on the next tick (module doc).
                c.local_pods_seen = u64::MAX;
                return Ok(spec);
            }
            if Instant::now() >= deadline {
                let w = handle.state();
                return Err(ControlError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "Pod {ns}/{name} scheduled to node {} not seen in the Kubernetes API within {identity_wait:?} \
                         (watch synced: {}, last error: {}); the ADD is refused so that no pod runs with an unknown \
                         identity (kubelet retries)",
                        c.name,
                        w.synced,
                        w.last_error.as_deref().unwrap_or("none")
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
            self.cluster_events(None);
        }
    }

    /// Every tick: this node's endpoints take the labels and named ports of their Pod
    /// objects when those changed (module doc).
    pub(in crate::daemon) fn cluster_sync_local_identities(&mut self) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let Backend::Kube { handle, .. } = &c.handle else {
            return;
        };
        let generation = handle.local_pods_generation();
        if generation == c.local_pods_seen {
            return;
        }
        c.local_pods_seen = generation;
        let mut updates = Vec::new();
        for ep in self.endpoints.iter() {
            let (Some(ns), Some(name)) = (&ep.namespace, &ep.name) else {
                continue;
            };
            let Some(p) = handle.local_pod(ns, name) else {
                continue;
            };
            let current_ports = self
                .policy
                .store()
                .endpoint(ns, name)
                .map(|v| v.ports.clone())
                .unwrap_or_default();
            if p.labels != ep.labels || p.ports != current_ports {
                updates.push((
                    ep.ifname.clone(),
                    PodView {
                        namespace: ns.clone(),
                        name: name.clone(),
                        labels: p.labels,
                        ip: ep.ip,
                        ports: p.ports,
                    },
                ));
            }
        }
        if updates.is_empty() {
            return;
        }
        for (ifname, view) in &updates {
            if let Some(ep) = self.endpoints.get_mut(ifname) {
                tracing::info!(pod = %format!("{}/{}", view.namespace, view.name), labels = ?view.labels, "pod identity from the Kubernetes API");
                ep.labels = view.labels.clone();
            }
        }
        let r = self.policy.apply(|s| {
            for (_, v) in updates {
                s.upsert_endpoint(v)?;
            }
            Ok(())
        });
        if let Err(e) = r {
            tracing::error!(error = %e, "pod identities from the Kubernetes API not taken over");
            return;
        }
        if let Err(e) = self.persist() {
            tracing::error!(error = %e, "endpoints file not written after a relabel");
        }
        self.request_recompile();
    }
}

impl Daemon {
    /// `endpoint list`: each endpoint with the source of its labels.
    pub(in crate::daemon) fn endpoint_entries(&self) -> Vec<EndpointEntry> {
        let kube = self.cluster.as_ref().and_then(|c| match &c.handle {
            Backend::Kube { handle, .. } => Some(handle),
            Backend::Etcd(_) => None,
        });
        self.endpoints
            .iter()
            .map(|e| {
                let from_api = match (kube, &e.namespace, &e.name) {
                    (Some(k), Some(ns), Some(n)) => {
                        k.local_pod(ns, n).is_some_and(|p| p.labels == e.labels)
                    }
                    _ => false,
                };
                EndpointEntry {
                    endpoint: e.clone(),
                    labels_source: if from_api { "kubernetes" } else { "local" }.into(),
                }
            })
            .collect()
    }

    /// `policy list`: each policy with its source; with the Kubernetes datastore also
    /// the NetworkPolicies that are not enforced, with the reason.
    pub(in crate::daemon) fn policy_list(&self) -> Vec<PolicyInfo> {
        let mut list = self.policy.list();
        for p in &mut list {
            p.source = match &self.cluster {
                Some(c) => c.source().into(),
                None if self.policy.is_dir_policy(&p.namespace, &p.name) => "policyDir".into(),
                None => "xsknetctl".into(),
            };
        }
        if let Some(Backend::Kube { handle, .. }) = self.cluster.as_ref().map(|c| &c.handle) {
            for (key, reason) in handle.state().refused {
                let Some(rest) = key.strip_prefix("kubernetes:networkpolicies/") else {
                    continue;
                };
                let (ns, name) = rest.split_once('/').unwrap_or(("", rest));
                list.push(PolicyInfo {
                    namespace: ns.into(),
                    name: name.into(),
                    source: "kubernetes".into(),
                    error: Some(reason),
                    ..PolicyInfo::default()
                });
            }
            list.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        }
        list
    }
}
