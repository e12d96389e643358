//! The Kubernetes API backend of the cluster view (`datastore: {type: kubernetes}`;
//! issue 10), with kube-rs, on a thread of its own (`xsknet-kube`, a current-thread
//! tokio runtime that never leaves it), following the event model of [`super`]
//! exactly as the etcd backend does, so the daemon consumes it unchanged.
//!
//! * **List + watch** of Nodes, Pods, Namespaces and NetworkPolicies, one
//!   [`kube::runtime::watcher`] each: list with resourceVersion, watch from it with
//!   bookmarks (`allowWatchBookmarks=true`), resume from the last resourceVersion after
//!   a dropped connection, re-list after `410 Gone` (an ERROR event with code 410 on the
//!   watch, or HTTP 410 on a list), capped exponential backoff on every error
//!   (kube-runtime's default: 800 ms doubling to 30 s, reset after 120 s of health).
//!   Each kind's list is buffered until it is complete; once all four kinds have
//!   listed, a [`ClusterEvent::Snapshot`] is emitted, and again after every re-list of
//!   any kind (so nothing from before a 410 survives it); in between, each watch event
//!   becomes one [`ClusterEvent::Changes`]. `revision` is a local sequence number (the
//!   API's resourceVersions are opaque and per kind; they are reported in [`WatchState`]).
//!   Any error is reported as [`ClusterEvent::Disconnected`] (the last view stays in
//!   force) and in [`WatchState::last_error`].
//! * **Conversion** ([`convert`]): Node → [`NodeRecord`] from `spec.podCIDR` and the
//!   [`convert::VTEP_ANNOTATION`] annotation (Nodes without them have not joined and are
//!   not in the view); Pod → [`super::PodRecord`] (labels, IPv4 podIP, nodeName, named
//!   container ports; pods without an address, on the host network or finished are
//!   not in the view); Namespace and NetworkPolicy → the policy parser with the API's
//!   meaning ([`crate::policy::k8s::api`]). An object that does not convert is
//!   [`ClusterEvent::Refused`] naming it (`kubernetes:networkpolicies/ns/name`), left
//!   out of the view, and keeps no other object from taking effect.
//! * **This node** (with a [`LocalVtep`]): its VTEP annotation is written on its own
//!   Node with a JSON merge patch at start, and again whenever the watched Node shows
//!   another value; a failure (a `403 Forbidden` when RBAC lacks `patch` on nodes) is
//!   logged as an error naming the cause, kept in [`WatchState::annotation`] and retried
//!   with backoff. Once the watched Node carries both our annotation and a
//!   `spec.podCIDR`, [`ClusterEvent::Registered`] is emitted with its record (the pod
//!   prefix is the controller manager's, never chosen here).

mod assemble;
pub mod convert;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_util::stream::{select_all, BoxStream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use xsknet_proto::MacAddr;

use super::config::KubeConfig;
use super::records::{NodeRecord, Record, RecordKind};
use super::ClusterEvent;
use assemble::Assembler;
use convert::{VtepAnnotation, VTEP_ANNOTATION};

/// Longest wait between two attempts to write the annotation.
const PATCH_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Failures to start the client.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("in-cluster configuration (service account): {0}")]
    InCluster(String),
    #[error("Kubernetes client: {0}")]
    Client(String),
    #[error("start the Kubernetes client thread: {0}")]
    Start(std::io::Error),
    #[error("the Kubernetes client thread stopped")]
    Stopped,
}

/// This node's VTEP, written as its Node's annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalVtep {
    pub name: String,
    pub underlay_ip: Ipv4Addr,
    pub vtep_mac: MacAddr,
    pub vni: u32,
    pub port: u16,
}

impl LocalVtep {
    fn annotation(&self) -> VtepAnnotation {
        VtepAnnotation {
            vtep_mac: self.vtep_mac,
            underlay_ip: self.underlay_ip,
            vni: self.vni,
            port: self.port,
        }
    }
}

/// What the watch is doing, for `status.datastore`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchState {
    /// Every kind has listed at least once (the view is complete).
    pub synced: bool,
    /// The last resourceVersion seen per kind (`nodes`, `pods`, …).
    pub resource_versions: BTreeMap<String, String>,
    /// The last error of any watch, until the next successful event.
    pub last_error: Option<String>,
    /// The annotation on this node: `written`, `pending`, or the error.
    pub annotation: String,
    /// Snapshots emitted (1 + re-lists).
    pub lists: u64,
    /// Objects not in the view because they cannot be enforced, by
    /// `kubernetes:<kind>/<namespace>/<name>`, with the reason (until fixed or deleted).
    pub refused: BTreeMap<String, String>,
}

/// A pod scheduled to this node as its Pod object says, address or not (kubelet
/// writes `status.podIP` only after the CNI ADD returned, so the ADD needs the
/// identity of a Pod that is not in the view yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPod {
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<crate::policy::k8s::NamedPort>,
}

#[derive(Default)]
struct LocalPods {
    /// By (namespace, name).
    pods: BTreeMap<(String, String), LocalPod>,
    /// Bumped on every change.
    generation: u64,
}

struct Shared {
    state: Mutex<WatchState>,
    local: Mutex<Option<NodeRecord>>,
    local_pods: Mutex<LocalPods>,
}

/// The running client (module doc). Dropping it stops the thread.
pub struct KubeCluster {
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster").finish_non_exhaustive()
    }
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl KubeCluster {
    /// Load the configuration (kubeconfig, else the in-cluster service account), start
    /// the thread. Errors of the configuration come back here; errors of the API
    /// server come as events.
    pub fn start(
        cfg: &KubeConfig,
        local: Option<LocalVtep>,
    ) -> Result<(KubeCluster, crossbeam_channel::Receiver<ClusterEvent>), KubeError> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(WatchState {
                annotation: if local.is_some() { "pending" } else { "none" }.into(),
                ..WatchState::default()
            }),
            local: Mutex::new(None),
            local_pods: Mutex::new(LocalPods::default()),
        });
        let cfg = cfg.clone();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("xsknet-kube".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(KubeError::Start(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let client = match client(&cfg).await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    run(client, local, sh, tx, stop_rx).await;
                });
            })
            .map_err(KubeError::Start)?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok((
                KubeCluster {
                    shared,
                    stop: Some(stop_tx),
                    thread: Some(thread),
                },
                rx,
            )),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(KubeError::Stopped),
        }
    }

    /// This node's record once registered (annotation written and seen, podCIDR set).
    pub fn local_node(&self) -> Option<NodeRecord> {
        lock(&self.shared.local).clone()
    }

    pub fn state(&self) -> WatchState {
        lock(&self.shared.state).clone()
    }

    /// The identity of a pod scheduled to this node (module doc of [`LocalPod`]).
    pub fn local_pod(&self, namespace: &str, name: &str) -> Option<LocalPod> {
        lock(&self.shared.local_pods)
            .pods
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Changes whenever a pod of this node changed (its labels or ports).
    pub fn local_pods_generation(&self) -> u64 {
        lock(&self.shared.local_pods).generation
    }
}

async fn client(cfg: &KubeConfig) -> Result<Client, KubeError> {
    let mut config = match &cfg.kubeconfig {
        Some(path) => {
            let kc =
                kube::config::Kubeconfig::read_from(path).map_err(|e| KubeError::Kubeconfig {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| KubeError::Kubeconfig {
                    path: path.clone(),
                    message: e.to_string(),
                })?
        }
        None => kube::Config::incluster().map_err(|e| KubeError::InCluster(e.to_string()))?,
    };
    config.connect_timeout = Some(cfg.request_timeout());
    Client::try_from(config).map_err(|e| KubeError::Client(e.to_string()))
}

/// One watcher's item, tagged with its kind. Moved once per event, never stored, so
/// the size difference between the kinds costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum Item {
    Node(watcher::Result<watcher::Event<Node>>),
    Pod(watcher::Result<watcher::Event<Pod>>),
    Namespace(watcher::Result<watcher::Event<Namespace>>),
    /// Raw JSON (not k8s-openapi's struct, which would drop fields it does not know:
    /// a field xsknet cannot enforce must refuse the object, not vanish from it).
    Policy(watcher::Result<watcher::Event<DynamicObject>>),
}

fn stream<K>(
    client: &Client,
    tag: fn(watcher::Result<watcher::Event<K>>) -> Item,
) -> BoxStream<'static, Item>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let api = Api::<K>::all(client.clone());
    watcher(api, watcher::Config::default())
        .default_backoff()
        .map(tag)
        .boxed()
}

/// Write this node's annotation (merge patch). Returns the error text on failure.
async fn patch_annotation(client: &Client, local: &LocalVtep) -> Result<(), String> {
    let api = Api::<Node>::all(client.clone());
    let body = serde_json::json!({
        "metadata": {"annotations": {VTEP_ANNOTATION: local.annotation().to_json()}}
    });
    match api
        .patch(&local.name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 403 => Err(format!(
            "403 Forbidden patching Node {}: the service account needs `patch` on nodes (RBAC, config/kubernetes/xsknet.yaml): {}",
            local.name, s.message
        )),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(format!(
            "Node {} not found (404): is nodeName the Kubernetes node name (NODE_NAME from the downward API)?",
            local.name
        )),
        Err(e) => Err(format!("patch Node {}: {e}", local.name)),
    }
}

async fn run(
    client: Client,
    local: Option<LocalVtep>,
    shared: Arc<Shared>,
    tx: crossbeam_channel::Sender<ClusterEvent>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut streams = select_all(vec![
        stream::<Node>(&client, Item::Node),
        stream::<Pod>(&client, Item::Pod),
        stream::<Namespace>(&client, Item::Namespace),
        {
            let ar = ApiResource::erase::<NetworkPolicy>(&());
            let api = Api::<DynamicObject>::all_with(client.clone(), &ar);
            watcher(api, watcher::Config::default())
                .default_backoff()
                .map(Item::Policy)
                .boxed()
        },
    ]);
    let mut a = Assembler {
        kinds: BTreeMap::new(),
        revision: 0,
        tx,
        shared,
        patch_needed: local.is_some(),
        local,
        registered: None,
    };
    let mut pods_seen = None;
    let mut patch_backoff = Duration::from_millis(500);
    let mut next_patch = tokio::time::Instant::now();
    loop {
        if a.patch_needed && tokio::time::Instant::now() >= next_patch {
            if let Some(local) = a.local.clone() {
                match patch_annotation(&client, &local).await {
                    Ok(()) => {
                        tracing::info!(node = %local.name, annotation = VTEP_ANNOTATION, "VTEP annotation written on this node's Node");
                        a.patch_needed = false;
                        patch_backoff = Duration::from_millis(500);
                        lock(&a.shared.state).annotation = "written".into();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, retry_in = ?patch_backoff, "VTEP annotation not written");
                        let mut s = lock(&a.shared.state);
                        s.annotation = e.clone();
                        s.last_error = Some(e);
                        drop(s);
                        next_patch = tokio::time::Instant::now() + patch_backoff;
                        patch_backoff = (patch_backoff * 2).min(PATCH_BACKOFF_MAX);
                    }
                }
            }
        }
        let wake = if a.patch_needed {
            next_patch.max(tokio::time::Instant::now() + Duration::from_millis(10))
        } else {
            tokio::time::Instant::now() + Duration::from_secs(3600)
        };
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep_until(wake) => {}
            item = streams.next() => {
                let Some(item) = item else { return };
                match item {
                    Item::Node(e) => {
                        if let Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) = &e {
                            a.local_node_object(n);
                        }
                        a.event(RecordKind::Node, e, |n| Ok(convert::node_record(n)?.map(Record::Node)));
                    }
                    Item::Pod(e) => {
                        a.local_pod_event(&e, &mut pods_seen);
                        a.event(RecordKind::Pod, e, |p| Ok(convert::pod_record(p)?.map(Record::Pod)));
                    }
                    Item::Namespace(e) => a.event(RecordKind::Namespace, e, |n| convert::namespace_record(n).map(Some)),
                    Item::Policy(e) => a.event(RecordKind::Policy, e, |p| convert::policy_record(p).map(Some)),
                }
            }
        }
    }
}
