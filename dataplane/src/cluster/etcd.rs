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

// ---------------------------------------------------------------------------------------
// The thread.

struct Emitter {
    tx: crossbeam_channel::Sender<ClusterEvent>,
    waker: Option<Waker>,
}

impl Emitter {
    fn emit(&self, e: ClusterEvent) {
        // The receiver gone means the daemon is shutting down; nothing to tell.
        if self.tx.send(e).is_ok() {
            if let Some(w) = &self.waker {
                w();
            }
        }
    }

    fn refused(&self, e: RecordError) {
        tracing::warn!("{e}");
        self.emit(ClusterEvent::Refused(e));
    }
}

struct Ctx {
    config: EtcdConfig,
    keys: Keys,
    out: Emitter,
}

impl Ctx {
    fn timeout(&self) -> Duration {
        self.config.request_timeout()
    }
}

/// State shared by the loops of the thread (one thread, so a `RefCell`; never borrowed
/// across an `.await`).
#[derive(Default)]
struct Shared {
    desired_pods: BTreeMap<PodKey, PodRecord>,
    lease: Option<i64>,
}

async fn run(
    ctx: Ctx,
    local: Option<LocalNode>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut stop: watch::Receiver<Lifecycle>,
    registration: Arc<Registration>,
) {
    let shared = RefCell::new(Shared::default());
    let pods_changed = Notify::new();
    let how = {
        let loops = async {
            tokio::join!(
                watch_loop(&ctx),
                register_loop(&ctx, local.as_ref(), &shared, &pods_changed, &registration),
                request_loop(&ctx, &mut commands, &shared, &pods_changed),
            )
        };
        tokio::select! {
            how = stopped(&mut stop) => how,
            _ = loops => Lifecycle::Stop,
        }
    };
    let lease = shared.borrow().lease;
    if let (Lifecycle::Leave, Some(id)) = (how, lease) {
        let revoke = async {
            let mut c = connect(&ctx).await?;
            call("revoke lease", ctx.timeout(), c.lease_revoke(id)).await
        };
        if let Err(e) = revoke.await {
            tracing::warn!("leaving the cluster: {e} (the node expires with its lease)");
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<Lifecycle>) -> Lifecycle {
    loop {
        let now = *stop.borrow_and_update();
        if now != Lifecycle::Run {
            return now;
        }
        if stop.changed().await.is_err() {
            return Lifecycle::Stop;
        }
    }
}

/// One etcd call, bounded by `timeout`, its error naming `op`.
async fn call<T>(
    op: &str,
    timeout: Duration,
    f: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(EtcdError::Etcd {
            op: op.to_string(),
            source,
        }),
        Err(_) => Err(EtcdError::Timeout {
            op: op.to_string(),
            timeout,
        }),
    }
}

async fn connect(ctx: &Ctx) -> Result<Client, EtcdError> {
    let t = ctx.timeout();
    // HTTP/2 pings find a dead member (a watch on a silent connection would wait forever).
    // Never more often than etcd accepts: a client pinging faster than the server's
    // `--grpc-keepalive-min-time` (5 s by default) gets GOAWAY "too_many_pings" and
    // every stream on the connection breaks.
    let ping = (ctx.config.lease_ttl() / 3).clamp(PING_MIN, Duration::from_secs(10));
    let options = ConnectOptions::new()
        .with_connect_timeout(t)
        .with_keep_alive(ping, t)
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    call(
        "connect",
        t,
        Client::connect(ctx.config.endpoints.as_slice(), Some(options)),
    )
    .await
}

struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff { next: BACKOFF_MIN }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    /// The next wait: doubling up to the cap, with up to 25% jitter so that the nodes of
    /// a cluster do not reconnect in lockstep after an etcd restart.
    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.subsec_nanos())
            .unwrap_or(0);
        d + d.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }
}

// ---------------------------------------------------------------------------------------
// Watch.

/// What the watch loop remembers across connections.
struct WatchState {
    view: Option<ClusterView>,
    cluster_id: u64,
}

async fn watch_loop(ctx: &Ctx) {
    let mut state = WatchState {
        view: None,
        cluster_id: 0,
    };
    let mut backoff = Backoff::new();
    loop {
        let Err(e) = watch_session(ctx, &mut state, &mut backoff).await;
        if let EtcdError::Compacted { .. } = e {
            // Not a failure of the connection: list again now.
            tracing::info!("{e}; listing again");
            state.view = None;
            continue;
        }
        tracing::warn!("{e}; retrying");
        ctx.out.emit(ClusterEvent::Disconnected {
            error: e.to_string(),
        });
        tokio::time::sleep(backoff.next()).await;
    }
}

async fn watch_session(
    ctx: &Ctx,
    state: &mut WatchState,
    backoff: &mut Backoff,
) -> Result<Infallible, EtcdError> {
    let t = ctx.timeout();
    let prefix = ctx.keys.prefix();
    let mut client = connect(ctx).await?;

    let resume = match &state.view {
        Some(view) => {
            let now = call("get", t, client.get(prefix, None)).await?;
            now.header().is_some_and(|h| {
                h.cluster_id() == state.cluster_id && h.revision() >= view.revision
            })
        }
        None => false,
    };
    if !resume {
        let all = call(
            &format!("list {prefix}"),
            t,
            client.get(prefix, Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let (cluster_id, revision) = all
            .header()
            .map(|h| (h.cluster_id(), h.revision()))
            .unwrap_or_default();
        let mut view = ClusterView {
            revision,
            ..ClusterView::default()
        };
        for kv in all.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            match records::decode(&ctx.keys, &key, kv.value()) {
                Ok(Some(r)) => {
                    view.put(r);
                }
                Ok(None) => {}
                Err(e) => ctx.out.refused(e),
            }
        }
        ctx.out.emit(ClusterEvent::Snapshot(view.clone()));
        state.view = Some(view);
        state.cluster_id = cluster_id;
    }
    let view = state.view.get_or_insert_with(ClusterView::default);
    let from = view.revision + 1;
    let options = WatchOptions::new().with_prefix().with_start_revision(from);
    let mut stream = call(
        &format!("watch {prefix}"),
        t,
        client.watch(prefix, Some(options)),
    )
    .await?;
    let ended = |reason: String| EtcdError::WatchEnded {
        prefix: prefix.to_string(),
        reason,
    };
    loop {
        let msg = stream
            .message()
            .await
            .map_err(|e| ended(e.to_string()))?
            .ok_or_else(|| ended("stream closed".into()))?;
        if msg.canceled() {
            if msg.compact_revision() > 0 {
                return Err(EtcdError::Compacted {
                    prefix: prefix.to_string(),
                    revision: from,
                    compact_revision: msg.compact_revision(),
                });
            }
            return Err(ended(format!("canceled: {}", msg.cancel_reason())));
        }
        if msg.created() {
            backoff.reset();
            // Resumed without a re-list: say the connection is back even when nothing
            // changed meanwhile (an empty delta), or the consumer would stay
            // "disconnected" until the next change.
            ctx.out.emit(ClusterEvent::Changes {
                revision: view.revision,
                changes: Vec::new(),
            });
        }
        let mut changes = Vec::new();
        for event in msg.events() {
            let Some(kv) = event.kv() else { continue };
            // The revision this view has applied: only events count (a response header
            // may be ahead of events still to come).
            view.revision = view.revision.max(kv.mod_revision());
            let key = String::from_utf8_lossy(kv.key());
            let put = match event.event_type() {
                EventType::Put => match records::decode(&ctx.keys, &key, kv.value()) {
                    Ok(Some(r)) => Some(r),
                    Ok(None) => continue,
                    Err(e) => {
                        ctx.out.refused(e);
                        None
                    }
                },
                EventType::Delete => None,
            };
            match put {
                Some(r) => {
                    if view.put(r.clone()) {
                        changes.push(Change::Put(r));
                    }
                }
                None => {
                    if let Ok(KeyKind::Record(k)) = ctx.keys.parse(&key) {
                        if view.delete(&k) {
                            changes.push(Change::Delete(k));
                        }
                    }
                }
            }
        }
        if !changes.is_empty() {
            ctx.out.emit(ClusterEvent::Changes {
                revision: view.revision,
                changes,
            });
        }
    }
}

// ---------------------------------------------------------------------------------------
// Registration.

async fn register_loop(
    ctx: &Ctx,
    local: Option<&LocalNode>,
    shared: &RefCell<Shared>,
    pods_changed: &Notify,
    registration: &Registration,
) {
    let Some(local) = local else {
        return;
    };
    let mut backoff = Backoff::new();
    loop {
        let Err(e) =
            register_session(ctx, local, shared, pods_changed, registration, &mut backoff).await;
        tracing::warn!("etcd registration of node {}: {e}; retrying", local.name);
        ctx.out.emit(ClusterEvent::Disconnected {
            error: format!("registration of node {}: {e}", local.name),
        });
        tokio::time::sleep(backoff.next()).await;
    }
}

async fn register_session(
    ctx: &Ctx,
    local: &LocalNode,
    shared: &RefCell<Shared>,
    pods_changed: &Notify,
    registration: &Registration,
    backoff: &mut Backoff,
) -> Result<Infallible, EtcdError> {
    let t = ctx.timeout();
    let ttl = ctx.config.lease_ttl();
    let mut client = connect(ctx).await?;
    let cidr = claim_subnet(&mut client, &ctx.keys, &local.name, local.subnet, t).await?;

    let lease = call(
        "grant lease",
        t,
        client.lease_grant(i64::from(ctx.config.lease_ttl_seconds), None),
    )
    .await?
    .id();
    let old = shared.borrow_mut().lease.replace(lease);
    let record = local.record(cidr);
    let node_key = ctx.keys.node(&local.name);
    call(
        &format!("put {node_key}"),
        t,
        client.put(
            node_key.as_str(),
            Record::Node(record.clone()).encode(),
            Some(PutOptions::new().with_lease(lease)),
        ),
    )
    .await?;
    let (mut keeper, mut renewals) =
        call("keep lease alive", t, client.lease_keep_alive(lease)).await?;
    let mut written = BTreeMap::new();
    sync_pods(ctx, &mut client, local, lease, shared, &mut written, true).await?;
    if let Some(old) = old.filter(|o| *o != lease) {
        // Nothing is bound to the old lease any more; revoking it only tidies up.
        let _ = call("revoke old lease", t, client.lease_revoke(old)).await;
    }
    if let Ok(mut g) = registration.record.lock() {
        *g = Some(record.clone());
        registration.changed.notify_all();
    }
    tracing::info!(
        "node {} registered: pod prefix {cidr}, lease {lease:x}",
        local.name
    );
    ctx.out.emit(ClusterEvent::Registered(record));
    backoff.reset();

    let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(300)));
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if renewed.elapsed() >= ttl {
                    return Err(EtcdError::LeaseExpired { node: local.name.clone(), id: lease });
                }
                call("renew lease", t, keeper.keep_alive()).await?;
            }
            answer = renewals.message() => match answer {
                Ok(Some(r)) if r.ttl() > 0 => renewed = Instant::now(),
                Ok(Some(_)) => {
                    return Err(EtcdError::LeaseExpired { node: local.name.clone(), id: lease })
                }
                Ok(None) => {
                    return Err(EtcdError::Etcd {
                        op: "keep lease alive".into(),
                        source: etcd_client::Error::LeaseKeepAliveError("stream closed".into()),
                    })
                }
                Err(source) => {
                    return Err(EtcdError::Etcd { op: "keep lease alive".into(), source })
                }
            },
            _ = pods_changed.notified() => {
                sync_pods(ctx, &mut client, local, lease, shared, &mut written, false).await?;
            }
        }
    }
}

/// Make this node's pods in etcd the desired ones. `written` is what this session put;
/// `full` starts over from what etcd holds (a new lease: everything is put again).
async fn sync_pods(
    ctx: &Ctx,
    client: &mut Client,
    local: &LocalNode,
    lease: i64,
    shared: &RefCell<Shared>,
    written: &mut BTreeMap<String, Vec<u8>>,
    full: bool,
) -> Result<(), EtcdError> {
    let t = ctx.timeout();
    if full {
        written.clear();
        let ours = ctx.keys.node_pods(&local.name);
        let present = call(
            &format!("list {ours}"),
            t,
            client.get(
                ours.as_str(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            ),
        )
        .await?;
        for kv in present.kvs() {
            // An empty value never equals an encoded record: present, to be replaced.
            written.insert(String::from_utf8_lossy(kv.key()).into_owned(), Vec::new());
        }
    }
    let desired: BTreeMap<String, Vec<u8>> = shared
        .borrow()
        .desired_pods
        .values()
        .map(|p| {
            (
                ctx.keys.record(&RecordKey::Pod(p.key())),
                Record::Pod(p.clone()).encode(),
            )
        })
        .collect();
    let stale: Vec<String> = written
        .keys()
        .filter(|k| !desired.contains_key(*k))
        .cloned()
        .collect();
    for key in stale {
        call(
            &format!("delete {key}"),
            t,
            client.delete(key.as_str(), None),
        )
        .await?;
        written.remove(&key);
    }
    for (key, value) in desired {
        if written.get(&key) != Some(&value) {
            call(
                &format!("put {key}"),
                t,
                client.put(
                    key.as_str(),
                    value.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
            )
            .await?;
            written.insert(key, value);
        }
    }
    Ok(())
}

fn overlaps(a: Ipv4Cidr, b: Ipv4Cidr) -> bool {
    let p = a.prefix.min(b.prefix);
    let shorter = Ipv4Cidr {
        addr: a.addr,
        prefix: p,
    };
    shorter.contains(b.addr)
}

/// The pod prefix of node `name`: the one it owns already if it fits the request, else a
/// new one claimed with a create-only transaction. See the module doc.
pub(crate) async fn claim_subnet(
    client: &mut Client,
    keys: &Keys,
    name: &str,
    request: SubnetRequest,
    t: Duration,
) -> Result<Ipv4Cidr, EtcdError> {
    let prefix = keys.subnets();
    let all = call(
        &format!("list {prefix}"),
        t,
        client.get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
    )
    .await?;
    let mut taken: Vec<(Ipv4Cidr, String)> = Vec::new();
    for kv in all.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        let Ok(KeyKind::Subnet(cidr)) = keys.parse(&key) else {
            tracing::warn!("ignoring malformed subnet key {key}");
            continue;
        };
        let owner = String::from_utf8_lossy(kv.value()).into_owned();
        if owner == name && request.accepts(cidr) {
            return Ok(cidr);
        }
        taken.push((cidr, owner));
    }
    let candidates: Box<dyn Iterator<Item = Ipv4Cidr>> = match request {
        SubnetRequest::Fixed(c) => {
            if let Some((other, owner)) = taken.iter().find(|(o, _)| overlaps(*o, c)) {
                return Err(if *other == c {
                    EtcdError::SubnetTaken {
                        cidr: c,
                        owner: owner.clone(),
                    }
                } else {
                    EtcdError::SubnetOverlap {
                        cidr: c,
                        other: *other,
                        owner: owner.clone(),
                    }
                });
            }
            Box::new(std::iter::once(c))
        }
        SubnetRequest::FromCluster { cluster, len } => {
            let base = u32::from(cluster.network());
            let count = 1u64 << (len - cluster.prefix);
            let step = 1u64 << (32 - len);
            Box::new((0..count).filter_map(move |i| {
                let addr = u64::from(base) + i * step;
                Some(Ipv4Cidr {
                    addr: Ipv4Addr::from(u32::try_from(addr).ok()?),
                    prefix: len,
                })
            }))
        }
    };
    for cidr in candidates {
        if taken.iter().any(|(o, _)| overlaps(*o, cidr)) {
            continue;
        }
        let key = keys.subnet(cidr);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), name, None)])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let r = call(&format!("claim {key}"), t, client.txn(txn)).await?;
        if r.succeeded() {
            tracing::info!("node {name} claimed pod prefix {cidr}");
            return Ok(cidr);
        }
        // Someone was faster: who?
        let owner = r
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(g) => g
                    .kvs()
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                _ => None,
            })
            .unwrap_or_default();
        if owner == name {
            return Ok(cidr);
        }
        if let SubnetRequest::Fixed(c) = request {
            return Err(EtcdError::SubnetTaken { cidr: c, owner });
        }
        taken.push((cidr, owner));
    }
    match request {
        SubnetRequest::FromCluster { cluster, len } => {
            Err(EtcdError::ClusterCidrExhausted { cluster, len })
        }
        // The loop above returns for a fixed prefix.
        SubnetRequest::Fixed(cidr) => Err(EtcdError::SubnetTaken {
            cidr,
            owner: String::new(),
        }),
    }
}

// ---------------------------------------------------------------------------------------
// Requests.

async fn request_loop(
    ctx: &Ctx,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    shared: &RefCell<Shared>,
    pods_changed: &Notify,
) {
    let mut client: Option<Client> = None;
    while let Some(command) = commands.recv().await {
        match command {
            Command::SetPod(p) => {
                shared.borrow_mut().desired_pods.insert(p.key(), p);
                pods_changed.notify_one();
            }
            Command::RemovePod(k) => {
                shared.borrow_mut().desired_pods.remove(&k);
                pods_changed.notify_one();
            }
            Command::Put { record, reply } => {
                let key = ctx.keys.record(&record.key());
                let r = async {
                    let c = ensure_client(ctx, &mut client).await?;
                    let put = call(
                        &format!("put {key}"),
                        ctx.timeout(),
                        c.put(key.as_str(), record.encode(), None),
                    )
                    .await?;
                    Ok(put.header().map(|h| h.revision()).unwrap_or_default())
                }
                .await;
                if r.is_err() {
                    client = None;
                }
                let _ = reply.send(r);
            }
            Command::Batch {
                puts,
                deletes,
                reply,
            } => {
                let ops: Vec<TxnOp> = puts
                    .iter()
                    .map(|r| TxnOp::put(ctx.keys.record(&r.key()).as_str(), r.encode(), None))
                    .chain(
                        deletes
                            .iter()
                            .map(|k| TxnOp::delete(ctx.keys.record(k).as_str(), None)),
                    )
                    .collect();
                let r = async {
                    let c = ensure_client(ctx, &mut client).await?;
                    let t = call(
                        &format!("write {} records", ops.len()),
                        ctx.timeout(),
                        c.txn(Txn::new().and_then(ops)),
                    )
                    .await?;
                    Ok(t.header().map(|h| h.revision()).unwrap_or_default())
                }
                .await;
                if r.is_err() {
                    client = None;
                }
                let _ = reply.send(r);
            }
            Command::Delete { key, reply } => {
                let key = ctx.keys.record(&key);
                let r = async {
                    let c = ensure_client(ctx, &mut client).await?;
                    let d = call(
                        &format!("delete {key}"),
                        ctx.timeout(),
                        c.delete(key.as_str(), None),
                    )
                    .await?;
                    Ok(d.deleted() > 0)
                }
                .await;
                if r.is_err() {
                    client = None;
                }
                let _ = reply.send(r);
            }
        }
    }
}

async fn ensure_client<'a>(
    ctx: &Ctx,
    client: &'a mut Option<Client>,
) -> Result<&'a mut Client, EtcdError> {
    if client.is_none() {
        *client = Some(connect(ctx).await?);
    }
    client.as_mut().ok_or(EtcdError::Stopped)
}
