//! The cluster view: the other nodes (pod prefix, underlay address, VTEP), every pod
//! (identity, labels, IP, node, named ports), Namespaces and NetworkPolicies, shared
//! through a distributed datastore that is not ours (DESIGN.md, "Overlay and nodes").
//! This is control-side code: nothing here runs on a worker or touches a table; the
//! daemon turns the view into routes, tunnel endpoints and policy input.
//!
//! * [`records`]: the stored records, the key layout and the validation every record read
//!   back goes through (untrusted input: refused with the key named, never a panic).
//! * [`config`]: the `datastore` and `overlay` sections of `node.yaml`.
//! * [`etcd`]: the etcd v3 client on a thread of its own (tokio stays there): registers
//!   this node with a lease, claims its pod prefix (ownership separate from liveness),
//!   publishes its pods, and lists + watches the prefix.
//! * [`kube`]: the Kubernetes API (kube-rs) on a thread of its own: lists + watches
//!   Nodes, Pods, Namespaces and NetworkPolicies, writes this node's VTEP annotation.
//!
//! The event model, which every datastore backend follows: the consumer (the daemon's
//! control thread) receives [`ClusterEvent`]s in order. A [`ClusterEvent::Snapshot`] is
//! a complete, consistent view at one datastore revision and **replaces** whatever the
//! consumer had (it comes first, and again after every re-list: compaction, lost
//! history, a datastore that came back empty); [`ClusterEvent::Changes`] are deltas
//! after it, in revision order. Applying them with [`ClusterView::apply`] to the last
//! snapshot gives exactly the view a fresh list at that revision would give; so no state
//! from before a re-list survives it. A record whose current value is refused is absent
//! from the view (a re-list would not see it either), and its refusal is reported as
//! [`ClusterEvent::Refused`].

pub mod config;
pub mod etcd;
pub mod kube;
pub mod records;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use records::{NodeRecord, PodKey, PodRecord, Record, RecordError, RecordKey, RecordKind};

use crate::policy::k8s::{Namespace, NetworkPolicy};

/// Every valid record under the prefix at `revision`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// The datastore revision this view reflects (etcd's `header.revision`).
    pub revision: i64,
    pub nodes: BTreeMap<String, NodeRecord>,
    pub pods: BTreeMap<PodKey, PodRecord>,
    pub namespaces: BTreeMap<String, Namespace>,
    /// By (namespace, name).
    pub policies: BTreeMap<(String, String), NetworkPolicy>,
}

/// One delta of the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Created or replaced.
    Put(Record),
    /// Deleted, expired with its lease, or its new value was refused.
    Delete(RecordKey),
}

/// What the datastore client tells its consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    /// The complete view; replaces everything the consumer holds.
    Snapshot(ClusterView),
    /// Deltas after the last snapshot, in order; `revision` is the view's new revision.
    /// Empty when a watch resumed after a broken connection with nothing missed: the
    /// connection is back.
    Changes { revision: i64, changes: Vec<Change> },
    /// A record was refused (also logged). Its key is absent from the view.
    Refused(RecordError),
    /// This node is registered (or registered again after a lost lease) with this
    /// record: its pod prefix is claimed and its node key is alive.
    Registered(NodeRecord),
    /// The connection to the datastore broke; the client retries with backoff and resyncs
    /// (a `Snapshot` or `Changes` follows). The last view stays valid meanwhile: traffic
    /// keeps flowing on it.
    Disconnected { error: String },
}

impl ClusterView {
    /// Insert or replace; returns whether the view changed.
    pub fn put(&mut self, record: Record) -> bool {
        fn replace<K: Ord, V: PartialEq>(m: &mut BTreeMap<K, V>, k: K, v: V) -> bool {
            if m.get(&k) == Some(&v) {
                return false;
            }
            m.insert(k, v);
            true
        }
        match record {
            Record::Node(n) => replace(&mut self.nodes, n.name.clone(), n),
            Record::Pod(p) => replace(&mut self.pods, p.key(), p),
            Record::Namespace(n) => replace(&mut self.namespaces, n.metadata.name.clone(), n),
            Record::Policy(p) => replace(
                &mut self.policies,
                (p.metadata.namespace.clone(), p.metadata.name.clone()),
                p,
            ),
        }
    }

    /// Remove; returns whether the view changed.
    pub fn delete(&mut self, key: &RecordKey) -> bool {
        match key {
            RecordKey::Node(n) => self.nodes.remove(n).is_some(),
            RecordKey::Pod(p) => self.pods.remove(p).is_some(),
            RecordKey::Namespace(n) => self.namespaces.remove(n).is_some(),
            RecordKey::Policy { namespace, name } => self
                .policies
                .remove(&(namespace.clone(), name.clone()))
                .is_some(),
        }
    }

    pub fn apply(&mut self, change: &Change) -> bool {
        match change {
            Change::Put(r) => self.put(r.clone()),
            Change::Delete(k) => self.delete(k),
        }
    }

    /// Apply one event as a consumer does: a snapshot replaces, changes apply in order.
    /// Other events leave the view as it is.
    pub fn apply_event(&mut self, event: &ClusterEvent) {
        match event {
            ClusterEvent::Snapshot(v) => *self = v.clone(),
            ClusterEvent::Changes { revision, changes } => {
                for c in changes {
                    self.apply(c);
                }
                self.revision = *revision;
            }
            ClusterEvent::Refused(_)
            | ClusterEvent::Registered(_)
            | ClusterEvent::Disconnected { .. } => {}
        }
    }

    /// The node that owns `ip`'s pod prefix, if any.
    pub fn node_for(&self, ip: std::net::Ipv4Addr) -> Option<&NodeRecord> {
        self.nodes.values().find(|n| n.pod_cidr.contains(ip))
    }
}
