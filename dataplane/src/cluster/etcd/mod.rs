//! The etcd v3 backend of the cluster view (`etcd-client`), on a thread of its own.
//!
//! [`EtcdCluster::start`] spawns one thread (`xsknet-etcd`) running a tokio
//! current-thread runtime; tokio never leaves it (the workers and the control thread
//! see a crossbeam channel of [`ClusterEvent`]s and a few blocking calls). On that thread
//! three loops run side by side, each reconnecting on its own with capped exponential
//! backoff, none of them ever giving up:
//!
//! * **watch**: lists the whole prefix in one range read (one consistent revision),
//!   emits a [`ClusterEvent::Snapshot`], then watches the prefix from the next revision
//!   and emits [`ClusterEvent::Changes`]. After a broken connection it resumes from the
//!   last revision it applied when the store still holds that history (same cluster id,
//!   revision not behind ours); if the history was compacted (`compact_revision` on the
//!   canceled watch) or the store is another one, it lists again and emits a new
//!   snapshot. Every record goes through [`records::decode`]; a refused one is logged
//!   with its key, emitted as [`ClusterEvent::Refused`] and left out of the view.
//! * **registration** (only with a [`LocalNode`]): claims the node's pod prefix, grants a
//!   lease of `leaseTtlSeconds`, puts the node record bound to it, puts the node's pods
//!   bound to it, and renews it every TTL/3. A lease that expired (etcd answers TTL 0,
//!   or no renewal was acknowledged for a whole TTL) starts a new registration; the pod
//!   prefix stays the same because ownership is not tied to the lease.
//! * **requests**: the blocking writes of namespaces and policies (`xsknetctl policy
//!   apply/delete` in datastore mode) and the desired set of this node's pods.
//!
//! Subnet ownership: `<prefix>subnets/<a.b.c.d-len>` holds the owner's node name and no
//! lease. A node first looks for a prefix it already owns (so it keeps its prefix across
//! daemon restarts and lease loss), else claims the configured one or the first free one
//! of the cluster CIDR with a transaction that succeeds only if the key was never created
//! (`create_revision == 0`): of two racing claimers exactly one wins, the other moves on.
//! A prefix is never released automatically (a node that is gone for good is removed by
//! an operator deleting its subnet key).
//!
//! This node's pods are desired state: [`EtcdCluster::set_pod`] and
//! [`EtcdCluster::remove_pod`] return at once, and the registration loop makes etcd
//! match (also after etcd restarts or loses the lease, when it re-puts them all and
//! deletes leftovers of an earlier run). They are bound to the node's lease, so the pods
//! of a node that died disappear with it.
//!
//! Layout: this file holds the API the daemon calls ([`EtcdCluster`]) and the types it
//! shares with the thread; `thread` the thread's context, start and backoff; the three
//! loops live in `watching`, `register` (with the subnet claim) and `requests`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio::sync::{mpsc, watch, Notify};
use xsknet_proto::MacAddr;

use super::config::{EtcdConfig, FieldError, OverlayConfig};
use super::records::{self, KeyKind, Keys, NodeRecord, PodRecord, Record, RecordError, RecordKey};
use super::{Change, ClusterEvent, ClusterView, PodKey};
use crate::config::Ipv4Cidr;
use crate::policy::k8s::{Namespace, NetworkPolicy};

mod register;
mod requests;
mod thread;
mod watching;

#[cfg(test)]
pub(crate) use register::claim_subnet;
use register::register_loop;
use requests::request_loop;
use thread::*;
use watching::watch_loop;

/// First and longest wait between reconnection attempts.
/// Above etcd's default `--grpc-keepalive-min-time` (5 s), with a margin.
const PING_MIN: Duration = Duration::from_secs(6);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Failures of the etcd client, each naming what was being done.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("invalid etcd configuration: {0}")]
    Config(#[from] FieldError),
    #[error("invalid local node: {0}")]
    LocalNode(String),
    #[error("start the etcd client: {0}")]
    Start(std::io::Error),
    #[error("etcd {op}: {source}")]
    Etcd {
        op: String,
        source: etcd_client::Error,
    },
    #[error("etcd {op}: no answer within {timeout:?}")]
    Timeout { op: String, timeout: Duration },
    #[error("pod prefix {cidr} is owned by node {owner:?}")]
    SubnetTaken { cidr: Ipv4Cidr, owner: String },
    #[error("pod prefix {cidr} overlaps {other}, owned by node {owner:?}")]
    SubnetOverlap {
        cidr: Ipv4Cidr,
        other: Ipv4Cidr,
        owner: String,
    },
    #[error("no free /{len} left in cluster CIDR {cluster}")]
    ClusterCidrExhausted { cluster: Ipv4Cidr, len: u8 },
    #[error("lease {id:x} of node {node} expired")]
    LeaseExpired { node: String, id: i64 },
    #[error("watch of {prefix}: {reason}")]
    WatchEnded { prefix: String, reason: String },
    #[error(
        "watch of {prefix} from revision {revision}: history compacted up to {compact_revision}"
    )]
    Compacted {
        prefix: String,
        revision: i64,
        compact_revision: i64,
    },
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("pod {namespace}/{name} runs on node {node:?}, not on this node {local:?}")]
    NotLocal {
        namespace: String,
        name: String,
        node: String,
        local: String,
    },
    #[error("no local node: this client only watches")]
    NoLocalNode,
    #[error("the etcd client thread has stopped")]
    Stopped,
}

/// How this node gets its pod prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubnetRequest {
    /// This one (`overlay.podCidr`); refused if another node owns it or an overlapping one.
    Fixed(Ipv4Cidr),
    /// A `/len` of `cluster`: the one this node owns already, else the first free one.
    FromCluster { cluster: Ipv4Cidr, len: u8 },
}

impl SubnetRequest {
    pub fn from_overlay(o: &OverlayConfig) -> Self {
        match o.pod_cidr {
            Some(c) => SubnetRequest::Fixed(c),
            None => SubnetRequest::FromCluster {
                cluster: o.cluster_cidr,
                len: o.subnet_len,
            },
        }
    }

    /// Whether an owned prefix satisfies the request (so it is reused).
    pub fn accepts(&self, cidr: Ipv4Cidr) -> bool {
        match *self {
            SubnetRequest::Fixed(c) => c == cidr,
            SubnetRequest::FromCluster { cluster, len } => {
                cidr.prefix == len && cluster.contains(cidr.addr)
            }
        }
    }
}

/// This node, as it registers itself. The pod prefix comes from [`SubnetRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalNode {
    pub name: String,
    pub underlay_ip: Ipv4Addr,
    pub vtep_mac: MacAddr,
    pub vni: u32,
    pub vxlan_port: u16,
    pub subnet: SubnetRequest,
}

impl LocalNode {
    fn record(&self, pod_cidr: Ipv4Cidr) -> NodeRecord {
        NodeRecord {
            name: self.name.clone(),
            pod_cidr,
            underlay_ip: self.underlay_ip,
            vtep_mac: self.vtep_mac,
            vni: self.vni,
            vxlan_port: self.vxlan_port,
        }
    }

    fn validate(&self) -> Result<(), EtcdError> {
        // The record with any valid prefix must be one every reader accepts.
        let probe = match self.subnet {
            SubnetRequest::Fixed(c) => c,
            SubnetRequest::FromCluster { cluster, len } => Ipv4Cidr {
                addr: cluster.network(),
                prefix: len,
            },
        };
        self.record(probe).validate().map_err(EtcdError::LocalNode)
    }
}

/// Called after every event is queued, e.g. to wake the control thread's `mio::Poll`.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    Run,
    /// Stop renewing; the node record expires with its lease (a daemon restart).
    Stop,
    /// Revoke the lease first: the node record and its pods go at once.
    Leave,
}

enum Command {
    SetPod(PodRecord),
    RemovePod(PodKey),
    Put {
        record: Record,
        reply: crossbeam_channel::Sender<Result<i64, EtcdError>>,
    },
    Delete {
        key: RecordKey,
        reply: crossbeam_channel::Sender<Result<bool, EtcdError>>,
    },
    /// Puts and deletes in one transaction: all of them or none.
    Batch {
        puts: Vec<Record>,
        deletes: Vec<RecordKey>,
        reply: crossbeam_channel::Sender<Result<i64, EtcdError>>,
    },
}

/// This node's record once registered, readable from other threads.
#[derive(Default)]
struct Registration {
    record: Mutex<Option<NodeRecord>>,
    changed: Condvar,
}

/// The handle the daemon holds. Dropping it stops the thread without revoking the lease
/// (a restarting daemon keeps its node alive for up to a TTL); [`leave`](Self::leave)
/// revokes it.
pub struct EtcdCluster {
    commands: mpsc::UnboundedSender<Command>,
    stop: watch::Sender<Lifecycle>,
    thread: Option<JoinHandle<Result<(), EtcdError>>>,
    local: Option<String>,
    keys: Keys,
    registration: Arc<Registration>,
    reply_timeout: Duration,
}

impl EtcdCluster {
    /// Validate, then start the client thread. Events arrive on the returned receiver
    /// (unbounded, so the etcd thread never blocks on a slow consumer and keep-alives
    /// are never late); `waker` is called after each one. Without `local` the client
    /// only watches (`xsknetctl node list`, tests).
    pub fn start(
        config: &EtcdConfig,
        local: Option<LocalNode>,
        waker: Option<Waker>,
    ) -> Result<(EtcdCluster, crossbeam_channel::Receiver<ClusterEvent>), EtcdError> {
        config.validate()?;
        if let Some(l) = &local {
            l.validate()?;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(EtcdError::Start)?;
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(Lifecycle::Run);
        let registration = Arc::new(Registration::default());
        let keys = Keys::new(&config.prefix);
        let ctx = Ctx {
            config: config.clone(),
            keys: keys.clone(),
            out: Emitter {
                tx: events_tx,
                waker,
            },
        };
        let reg = registration.clone();
        let local_name = local.as_ref().map(|l| l.name.clone());
        let thread = std::thread::Builder::new()
            .name("xsknet-etcd".into())
            .spawn(move || {
                runtime.block_on(run(ctx, local, commands_rx, stop_rx, reg));
                Ok(())
            })
            .map_err(EtcdError::Start)?;
        Ok((
            EtcdCluster {
                commands,
                stop,
                thread: Some(thread),
                local: local_name,
                keys,
                registration,
                // A write may need a connection and the write itself.
                reply_timeout: config.request_timeout() * 2 + Duration::from_secs(1),
            },
            events_rx,
        ))
    }

    /// This node's record, once registered.
    pub fn local_node(&self) -> Option<NodeRecord> {
        self.registration.record.lock().ok()?.clone()
    }

    /// Wait until this node is registered (its pod prefix claimed), at most `timeout`.
    pub fn wait_local_node(&self, timeout: Duration) -> Option<NodeRecord> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.registration.record.lock().ok()?;
        loop {
            if let Some(r) = guard.as_ref() {
                return Some(r.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            guard = self.registration.changed.wait_timeout(guard, left).ok()?.0;
        }
    }

    /// Publish (or update) one of this node's pods. Returns at once; the pod reaches
    /// etcd as soon as the node is registered, and again after any lease loss.
    pub fn set_pod(&self, pod: PodRecord) -> Result<(), EtcdError> {
        let local = self.local.as_deref().ok_or(EtcdError::NoLocalNode)?;
        if pod.node != local {
            return Err(EtcdError::NotLocal {
                namespace: pod.namespace,
                name: pod.name,
                node: pod.node,
                local: local.to_string(),
            });
        }
        Record::Pod(pod.clone()).check_for_write(&self.keys)?;
        self.send(Command::SetPod(pod))
    }

    /// Withdraw one of this node's pods. Returns at once.
    pub fn remove_pod(&self, namespace: &str, name: &str) -> Result<(), EtcdError> {
        let local = self.local.as_deref().ok_or(EtcdError::NoLocalNode)?;
        self.send(Command::RemovePod(PodKey {
            node: local.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }))
    }

    /// Create or replace a Namespace; blocks until etcd answered. Returns the revision.
    pub fn put_namespace(&self, namespace: &Namespace) -> Result<i64, EtcdError> {
        self.put(Record::Namespace(namespace.clone()))
    }

    /// Create or replace a NetworkPolicy; blocks until etcd answered.
    pub fn put_policy(&self, policy: &NetworkPolicy) -> Result<i64, EtcdError> {
        self.put(Record::Policy(policy.clone()))
    }

    /// Delete a Namespace record; `Ok(false)` if there was none.
    pub fn delete_namespace(&self, name: &str) -> Result<bool, EtcdError> {
        self.delete(RecordKey::Namespace(name.to_string()))
    }

    /// Delete a NetworkPolicy; `Ok(false)` if there was none.
    pub fn delete_policy(&self, namespace: &str, name: &str) -> Result<bool, EtcdError> {
        self.delete(RecordKey::Policy {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    /// Create or replace `puts` and delete `deletes` (Namespaces and NetworkPolicies)
    /// in one etcd transaction: all of them or none. Blocks until etcd answered;
    /// returns the revision of the write.
    pub fn write_batch(
        &self,
        puts: Vec<Record>,
        deletes: Vec<RecordKey>,
    ) -> Result<i64, EtcdError> {
        for r in &puts {
            r.check_for_write(&self.keys)?;
        }
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.send(Command::Batch {
            puts,
            deletes,
            reply,
        })?;
        self.wait(rx)
    }

    /// Revoke the lease (this node and its pods leave the view now; the pod prefix stays
    /// owned) and stop.
    pub fn leave(mut self) -> Result<(), EtcdError> {
        self.stop.send_replace(Lifecycle::Leave);
        self.join()
    }

    fn put(&self, record: Record) -> Result<i64, EtcdError> {
        record.check_for_write(&self.keys)?;
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.send(Command::Put { record, reply })?;
        self.wait(rx)
    }

    fn delete(&self, key: RecordKey) -> Result<bool, EtcdError> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.send(Command::Delete { key, reply })?;
        self.wait(rx)
    }

    fn send(&self, c: Command) -> Result<(), EtcdError> {
        self.commands.send(c).map_err(|_| EtcdError::Stopped)
    }

    fn wait<T>(
        &self,
        rx: crossbeam_channel::Receiver<Result<T, EtcdError>>,
    ) -> Result<T, EtcdError> {
        match rx.recv_timeout(self.reply_timeout) {
            Ok(r) => r,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(EtcdError::Timeout {
                op: "request".into(),
                timeout: self.reply_timeout,
            }),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(EtcdError::Stopped),
        }
    }

    fn join(&mut self) -> Result<(), EtcdError> {
        match self.thread.take().map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(EtcdError::Stopped),
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop.send_replace(Lifecycle::Stop);
            if let Err(e) = self.join() {
                tracing::warn!("etcd client thread: {e}");
            }
        }
    }
}
