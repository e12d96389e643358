//! Assembling the cluster view from the four watchers (module doc of [`super`]): each
//! kind's list is buffered until complete, a snapshot once every kind has listed (and
//! after every re-list), changes in between; this node's Node and Pods are followed for
//! the annotation and the ADD's identity.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher;
use kube::Resource;

use super::convert::{self, VtepAnnotation, VTEP_ANNOTATION};
use super::{lock, LocalPod, LocalVtep, Shared};
use crate::cluster::records::{NodeRecord, Record, RecordError, RecordKind};
use crate::cluster::{Change, ClusterEvent, ClusterView};

/// Per kind: the objects in force (by `namespace/name`), the list being buffered.
#[derive(Default)]
pub(super) struct KindState {
    synced: bool,
    current: BTreeMap<String, Record>,
    buffer: Option<BTreeMap<String, Record>>,
}

/// The view being assembled from the four watchers (module doc).
pub(super) struct Assembler {
    pub(super) kinds: BTreeMap<RecordKind, KindState>,
    pub(super) revision: i64,
    pub(super) tx: crossbeam_channel::Sender<ClusterEvent>,
    pub(super) shared: Arc<Shared>,
    pub(super) local: Option<LocalVtep>,
    pub(super) registered: Option<NodeRecord>,
    /// This node's annotation must be (re)written.
    pub(super) patch_needed: bool,
}

fn kind_name(k: RecordKind) -> &'static str {
    match k {
        RecordKind::Node => "nodes",
        RecordKind::Pod => "pods",
        RecordKind::Namespace => "namespaces",
        RecordKind::Policy => "networkpolicies",
    }
}

/// The name refusals carry (as [`convert`] spells it).
fn refusal_key<K: Resource>(kind: RecordKind, o: &K) -> String {
    let m = o.meta();
    match (kind, m.namespace.as_deref()) {
        (RecordKind::Pod | RecordKind::Policy, ns) => format!(
            "kubernetes:{}/{}/{}",
            kind_name(kind),
            ns.unwrap_or("default"),
            m.name.as_deref().unwrap_or("")
        ),
        _ => format!(
            "kubernetes:{}/{}",
            kind_name(kind),
            m.name.as_deref().unwrap_or("")
        ),
    }
}

fn object_id<K: Resource>(o: &K) -> String {
    let m = o.meta();
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or("")
    )
}

impl Assembler {
    pub(super) fn synced(&self) -> bool {
        self.kinds.len() == 4 && self.kinds.values().all(|k| k.synced)
    }

    fn emit(&self, e: ClusterEvent) {
        let _ = self.tx.send(e);
    }

    fn view(&self) -> ClusterView {
        let mut v = ClusterView {
            revision: self.revision,
            ..ClusterView::default()
        };
        for k in self.kinds.values() {
            for r in k.current.values() {
                v.put(r.clone());
            }
        }
        v
    }

    /// One watcher event of `kind`; `convert` gives the object's record (or none).
    pub(super) fn event<K: Resource>(
        &mut self,
        kind: RecordKind,
        item: watcher::Result<watcher::Event<K>>,
        convert: impl Fn(&K) -> Result<Option<Record>, RecordError>,
    ) {
        let event = match item {
            Ok(e) => e,
            Err(e) => {
                let error = format!("{}: {e}", kind_name(kind));
                tracing::warn!(%error, "Kubernetes watch error (retrying with backoff; the last view stays in force)");
                lock(&self.shared.state).last_error = Some(error.clone());
                self.emit(ClusterEvent::Disconnected { error });
                return;
            }
        };
        let note_rv = |shared: &Shared, o: &K| {
            if let Some(rv) = o.meta().resource_version.clone() {
                lock(&shared.state)
                    .resource_versions
                    .insert(kind_name(kind).into(), rv);
            }
        };
        let mut refused = Vec::new();
        let shared = self.shared.clone();
        let mut converted = |o: &K| {
            let key = refusal_key(kind, o);
            match convert(o) {
                Ok(r) => {
                    lock(&shared.state).refused.remove(&key);
                    r
                }
                Err(e) => {
                    lock(&shared.state).refused.insert(key, e.reason.clone());
                    refused.push(e);
                    None
                }
            }
        };
        let mut changes = Vec::new();
        match event {
            watcher::Event::Init => {
                self.kinds.entry(kind).or_default().buffer = Some(BTreeMap::new());
                let prefix = format!("kubernetes:{}/", kind_name(kind));
                lock(&self.shared.state)
                    .refused
                    .retain(|k, _| !k.starts_with(&prefix));
            }
            watcher::Event::InitApply(o) => {
                note_rv(&self.shared, &o);
                if let Some(r) = converted(&o) {
                    let st = self.kinds.entry(kind).or_default();
                    st.buffer
                        .get_or_insert_with(BTreeMap::new)
                        .insert(object_id(&o), r);
                }
            }
            watcher::Event::InitDone => {
                let st = self.kinds.entry(kind).or_default();
                st.current = st.buffer.take().unwrap_or_default();
                st.synced = true;
                lock(&self.shared.state).last_error = None;
                if self.synced() {
                    self.revision += 1;
                    let mut s = lock(&self.shared.state);
                    s.synced = true;
                    s.lists += 1;
                    drop(s);
                    self.emit(ClusterEvent::Snapshot(self.view()));
                }
            }
            watcher::Event::Apply(o) => {
                note_rv(&self.shared, &o);
                let id = object_id(&o);
                let st = self.kinds.entry(kind).or_default();
                match converted(&o) {
                    Some(r) => {
                        if st.current.get(&id) != Some(&r) {
                            let key = r.key();
                            if let Some(old) = st.current.insert(id, r.clone()) {
                                if old.key() != key {
                                    changes.push(Change::Delete(old.key()));
                                }
                            }
                            changes.push(Change::Put(r));
                        }
                    }
                    None => {
                        if let Some(old) = st.current.remove(&id) {
                            changes.push(Change::Delete(old.key()));
                        }
                    }
                }
            }
            watcher::Event::Delete(o) => {
                note_rv(&self.shared, &o);
                lock(&self.shared.state)
                    .refused
                    .remove(&refusal_key(kind, &o));
                if let Some(old) = self
                    .kinds
                    .entry(kind)
                    .or_default()
                    .current
                    .remove(&object_id(&o))
                {
                    changes.push(Change::Delete(old.key()));
                }
            }
        }
        for e in refused {
            tracing::error!(object = %e.key, reason = %e.reason, "Kubernetes object not enforced (left out of the view; the others take effect)");
            self.emit(ClusterEvent::Refused(e));
        }
        if !changes.is_empty() && self.synced() {
            lock(&self.shared.state).last_error = None;
            self.revision += 1;
            self.emit(ClusterEvent::Changes {
                revision: self.revision,
                changes,
            });
        }
        if kind == RecordKind::Node {
            self.check_local();
        }
    }

    /// Compare this node's Node with what we wrote; emit `Registered` on a new record.
    fn check_local(&mut self) {
        let Some(local) = &self.local else { return };
        let Some(st) = self.kinds.get(&RecordKind::Node) else {
            return;
        };
        let mine = st.current.get(&format!("/{}", local.name));
        match mine {
            Some(Record::Node(r)) if VtepAnnotation::of(r) != local.annotation() => {
                self.patch_needed = true;
            }
            Some(Record::Node(r)) if self.registered.as_ref() != Some(r) => {
                tracing::info!(node = %r.name, pod_cidr = %r.pod_cidr, "this node's Node carries its VTEP annotation");
                self.registered = Some(r.clone());
                *lock(&self.shared.local) = Some(r.clone());
                self.emit(ClusterEvent::Registered(r.clone()));
            }
            // Registered already; or not in the view: no podCIDR yet, or our annotation
            // is missing (rewritten, see `local_node_object`; a missing podCIDR is the
            // controller manager's).
            _ => {}
        }
    }

    /// Keep [`LocalPod`]s of this node (any address state) for the ADD's identity.
    pub(super) fn local_pod_event(
        &mut self,
        e: &watcher::Result<watcher::Event<Pod>>,
        seen: &mut Option<std::collections::BTreeSet<(String, String)>>,
    ) {
        let Some(local) = &self.local else { return };
        let mine = |p: &Pod| -> Option<((String, String), LocalPod)> {
            let spec = p.spec.as_ref()?;
            if spec.node_name.as_deref() != Some(local.name.as_str()) {
                return None;
            }
            let ns = p
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let name = p.metadata.name.clone()?;
            let labels = p.metadata.labels.clone().unwrap_or_default();
            crate::policy::k8s::check_labels(&labels).ok()?;
            let ports = spec
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .filter_map(|cp| {
                    Some(crate::policy::k8s::NamedPort {
                        name: cp.name.clone()?,
                        port: u16::try_from(cp.container_port).ok().filter(|p| *p != 0)?,
                        protocol: cp.protocol.as_deref().unwrap_or("TCP").parse().ok()?,
                    })
                })
                .collect();
            Some(((ns, name), LocalPod { labels, ports }))
        };
        let mut lp = lock(&self.shared.local_pods);
        let before = lp.pods.clone();
        match e {
            Ok(watcher::Event::Init) => *seen = Some(Default::default()),
            Ok(watcher::Event::InitApply(p) | watcher::Event::Apply(p)) => {
                if let Some((k, v)) = mine(p) {
                    if let Some(s) = seen.as_mut() {
                        s.insert(k.clone());
                    }
                    lp.pods.insert(k, v);
                }
            }
            Ok(watcher::Event::Delete(p)) => {
                let k = (
                    p.metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                    p.metadata.name.clone().unwrap_or_default(),
                );
                lp.pods.remove(&k);
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(s) = seen.take() {
                    lp.pods.retain(|k, _| s.contains(k));
                }
            }
            Err(_) => {}
        }
        if lp.pods != before {
            lp.generation += 1;
        }
    }

    /// The raw Node of this node changed: is our annotation still on it?
    pub(super) fn local_node_object(&mut self, node: &Node) {
        let Some(local) = &self.local else { return };
        if node.metadata.name.as_deref() != Some(local.name.as_str()) {
            return;
        }
        let want = local.annotation();
        let have = node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(VTEP_ANNOTATION))
            .and_then(|v| serde_json::from_str::<VtepAnnotation>(v).ok());
        if have.as_ref() != Some(&want) {
            self.patch_needed = true;
        }
        if convert::node_pod_cidr_missing(node) {
            tracing::warn!(node = %local.name, "this node's Node has no IPv4 spec.podCIDR yet (the controller manager allocates it; --allocate-node-cidrs)");
        }
    }
}
