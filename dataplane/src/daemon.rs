//! The node daemon's control-thread state: endpoints, port slots, the host port, the
//! XDP loader, the workers and the table publisher. It implements the control socket's
//! [`Handler`]; every mutation follows the same order so a worker never sees a port it
//! cannot use: socket + XDP registration → hand the port to its worker → publish tables
//! → wait until the worker runs on them (then the dataplane forwards for the pod).
//! Removal runs the other way round.
//!
//! NetworkPolicy: the daemon holds the [`PolicyStore`] (policies, namespaces, YAML
//! pods, the live endpoints' identities) and re-compiles it into a
//! [`PolicySnapshot`] on every change (policy apply/delete, endpoint add/del, pod
//! label, a `policyDir` file changing), publishing it with the other tables and
//! waiting until every worker runs on it, so a change is in force when the request
//! returns. The store persists atomically in the state dir (`policy.json`). Hit
//! counters are per worker and per policy, allocated with each compiled snapshot and
//! folded into per-name totals once the workers have moved on.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};

use crate::config::Config;
use crate::control::proto::{
    ConntrackStats, ControlError, Endpoint, EndpointCheck, EndpointSpec, ErrorKind, Handler,
    IpamAllocation, IpamLease, IpamReleased, PendingDel, PolicyApplied, PolicyInfo, PolicyRequest,
    PortStats, Request, Stats, Status, WorkerStats, PENDING_DEL_DIR, POD_GATEWAY,
};
use crate::control::reach::{self, ProbePort};
use crate::ipam::{Ipam, IpamError, IPAM_FILE};
use crate::loader::{XdpAttachment, XdpLoader};
use crate::pipeline::policy::PolicyHits;
use crate::pipeline::{DropReason, PortCounters};
use crate::policy::compile::{compile, PodView};
use crate::policy::k8s::{self, Object, PolicyError, Protocol};
use crate::policy::store::PolicyStore;
use crate::policy::PolicySnapshot;
use crate::state::StateDir;
use crate::sys::netlink::{Netlink, RouteSpec};
use crate::tables::publish::Publisher;
use crate::tables::{Fib, PortId, PortInfo, PortKind, Tables, WorkerId};
use crate::worker::{IdlePolicy, Worker, WorkerCmd, WorkerShared};
use crate::xsk::handoff;
use crate::xsk::port::xdp_statistics;
use crate::xsk::{Port, PortConfig};

/// How long an add waits for the owning worker to pick up the new tables.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The persisted policy store, in the state dir.
pub const POLICY_FILE: &str = "policy.json";

/// How often `tick` looks at the `policyDir` files' mtimes.
const POLICY_DIR_POLL: Duration = Duration::from_secs(1);

/// What `policyDir` looked like: (file, mtime, length) of every YAML file.
type DirSignature = Vec<(PathBuf, std::time::SystemTime, u64)>;

fn dir_signature(dir: &std::path::Path) -> Option<DirSignature> {
    let mut sig = Vec::new();
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let path = e.path();
        let yaml = path
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| x == "yaml" || x == "yml");
        if !yaml {
            continue;
        }
        if let Ok(m) = e.metadata() {
            sig.push((path, m.modified().ok()?, m.len()));
        }
    }
    sig.sort();
    Some(sig)
}

fn policy_err(e: PolicyError) -> ControlError {
    let kind = match e {
        PolicyError::NotFound { .. } => ErrorKind::NotFound,
        _ => ErrorKind::InvalidRequest,
    };
    ControlError::new(kind, e.to_string())
}

fn summary_to_applied(s: crate::policy::store::ApplySummary, generation: u64) -> PolicyApplied {
    PolicyApplied {
        created: s.created,
        configured: s.configured,
        unchanged: s.unchanged,
        deleted: Vec::new(),
        generation,
    }
}

/// A worker thread as the control thread holds it.
#[derive(Debug)]
struct WorkerHandle {
    shared: Arc<WorkerShared>,
    cmds: Sender<WorkerCmd>,
    join: Option<JoinHandle<()>>,
}

/// A port attached to the dataplane.
#[derive(Debug)]
struct Attached {
    id: PortId,
    ifname: String,
    ifindex: u32,
    /// A dup of the worker-owned socket fd, for ring statistics (None for fake ports).
    fd: Option<std::os::fd::OwnedFd>,
    info: PortInfo,
    _xdp: XdpAttachment,
}

/// Daemon errors at start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Setup(String),
}

fn mac_to_string(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parse `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut n = 0;
    for part in s.split(':') {
        if n == 6 || part.len() != 2 {
            return None;
        }
        out[n] = u8::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 6).then_some(out)
}

fn err(kind: ErrorKind, msg: impl Into<String>) -> ControlError {
    ControlError::new(kind, msg)
}

/// The daemon.
pub struct Daemon {
    cfg: Config,
    started: Instant,
    nl: Netlink,
    loader: XdpLoader,
    publisher: Publisher,
    workers: Vec<WorkerHandle>,
    counters: Arc<[PortCounters]>,
    free_slots: Vec<PortId>,
    port_cfg: PortConfig,
    endpoints: BTreeMap<String, (Endpoint, Attached)>,
    host: Option<Attached>,
    host_ip: Option<Ipv4Addr>,
    state: StateDir,
    persist_errors: u64,
    ipam: Ipam,
    last_pending_scan: Instant,
    /// NetworkPolicy truth and its compiled form (see the module doc).
    policy: PolicyStore,
    policy_snap: Arc<PolicySnapshot>,
    policy_hits: Arc<[PolicyHits]>,
    /// Hits of snapshots the workers have left, by policy name.
    hits_folded: BTreeMap<String, u64>,
    /// NetworkPolicies that came from `policyDir` (removed when their file is).
    dir_policies: BTreeSet<(String, String)>,
    dir_sig: Option<DirSignature>,
    last_dir_poll: Instant,
}

/// How often the control thread looks for pending-DEL records (a DEL made while the
/// daemon was unreachable but still running, e.g. its socket wedged).
const PENDING_SCAN_INTERVAL: Duration = Duration::from_secs(5);

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("endpoints", &self.endpoints.len())
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Load the XDP program, start workers, create the host port, re-attach persisted
    /// endpoints.
    pub fn start(cfg: Config, state: StateDir) -> Result<Daemon, DaemonError> {
        let setup =
            |what: &str, e: &dyn std::fmt::Display| DaemonError::Setup(format!("{what}: {e}"));
        let nl = Netlink::new().map_err(|e| setup("open netlink", &e))?;
        let loader = XdpLoader::load().map_err(|e| setup("load XDP program", &e))?;
        let n_workers = cfg.workers.len();
        let max_ports = (cfg.umem.max_ports_per_worker as usize * n_workers)
            .min(crate::loader::MAX_PORTS as usize);
        let counters: Arc<[PortCounters]> =
            (0..max_ports).map(|_| PortCounters::default()).collect();
        let mut publisher = Publisher::new(Tables::default());
        let port_cfg = PortConfig {
            frames: cfg.umem.frames_per_port,
            frame_size: cfg.umem.frame_size,
            ring_size: cfg.umem.ring_size,
        };
        let idle = IdlePolicy {
            busy_poll: Duration::from_micros(cfg.idle.busy_poll_us),
            poll_timeout_ms: cfg.idle.poll_timeout_ms,
        };

        let shared: Vec<Arc<WorkerShared>> = cfg
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| WorkerShared::new(i as WorkerId, w.core).map(Arc::new))
            .collect::<Result<_, _>>()
            .map_err(|e| setup("create worker eventfd", &e))?;
        // Handoff mesh: tx[a][b] sends from a to b; rx[b] collects from every a.
        let mut txs: Vec<Vec<Option<handoff::HandoffTx>>> = Vec::with_capacity(n_workers);
        let mut rxs: Vec<Vec<handoff::HandoffRx>> = (0..n_workers).map(|_| Vec::new()).collect();
        for a in 0..n_workers {
            let row = rxs
                .iter_mut()
                .enumerate()
                .map(|(b, rx_of_b)| {
                    (a != b).then(|| {
                        let (tx, rx) = handoff::channel();
                        rx_of_b.push(rx);
                        tx
                    })
                })
                .collect();
            txs.push(row);
        }
        let mut workers = Vec::new();
        for (i, (tx, rx)) in txs.into_iter().zip(rxs).enumerate() {
            let (cmd_tx, cmd_rx) = bounded(1024);
            let w = Worker::new(
                Arc::clone(&shared[i]),
                shared.clone(),
                publisher.subscribe(),
                cmd_rx,
                tx,
                rx,
                Arc::clone(&counters),
                idle,
            );
            let join = std::thread::Builder::new()
                .name(format!("xsknet-w{i}"))
                .spawn(move || w.run())
                .map_err(|e| setup("spawn worker", &e))?;
            workers.push(WorkerHandle {
                shared: Arc::clone(&shared[i]),
                cmds: cmd_tx,
                join: Some(join),
            });
        }

        let ipam_path = state.root.join(IPAM_FILE);
        let ipam = match Ipam::load(cfg.pod_cidr, &ipam_path) {
            Ok(i) => i,
            Err(IpamError::Persist(crate::state::StateError::Corrupt { .. })) => {
                // Keep the evidence; starting empty may hand out a live pod's address
                // again, which the operator is told about loudly.
                let moved = crate::state::quarantine(&ipam_path)
                    .map_err(|e| setup("quarantine corrupt IP allocations", &e))?;
                tracing::error!(moved_to = %moved.display(), "corrupt IP allocation file moved aside; starting with no allocations");
                Ipam::in_memory(cfg.pod_cidr)
            }
            Err(e) => return Err(setup("load IP allocations", &e)),
        };
        let policy_path = state.root.join(POLICY_FILE);
        let mut policy = match crate::state::load_json::<PolicyStore>(&policy_path) {
            Ok(Some(p)) => p,
            Ok(None) => PolicyStore::new(),
            Err(e) => {
                let moved = crate::state::quarantine(&policy_path)
                    .map_err(|e| setup("quarantine unreadable policy store", &e))?;
                tracing::error!(error = %e, moved_to = %moved.display(), "unreadable policy store moved aside; starting without policies");
                PolicyStore::new()
            }
        };
        // Live endpoints are re-registered as they are restored.
        for v in policy.endpoint_views() {
            policy.remove_endpoint(&v.namespace, &v.name);
        }
        let n_workers_hits = n_workers;
        let mut d = Daemon {
            ipam,
            last_pending_scan: Instant::now(),
            policy,
            policy_snap: Arc::new(PolicySnapshot::default()),
            policy_hits: (0..n_workers_hits).map(|_| PolicyHits::new(0)).collect(),
            hits_folded: BTreeMap::new(),
            dir_policies: BTreeSet::new(),
            dir_sig: None,
            last_dir_poll: Instant::now(),
            free_slots: (0..max_ports as PortId).rev().collect(),
            cfg,
            started: Instant::now(),
            nl,
            loader,
            publisher,
            workers,
            counters,
            port_cfg,
            endpoints: BTreeMap::new(),
            host: None,
            host_ip: None,
            state,
            persist_errors: 0,
        };
        if d.cfg.host_port.enabled {
            if let Err(e) = d.create_host_port() {
                d.shutdown();
                return Err(DaemonError::Setup(format!("create host port: {e}")));
            }
        }
        d.restore();
        d.finish_pending_dels();
        if let Some(dir) = d.cfg.policy_dir.clone() {
            d.dir_sig = dir_signature(&dir);
            if let Err(e) = d.reload_policy_dir() {
                tracing::error!(dir = %dir.display(), error = %e, "policyDir not applied");
            }
        }
        if let Err(e) = d.recompile_and_publish() {
            tracing::error!(error = %e, "publish compiled policy");
        }
        Ok(d)
    }

    /// The compiler's view of the live endpoints (those with a namespace and name).
    /// Named container ports come from a YAML Pod of the same name, if one was given.
    fn endpoint_view(&self, ep: &Endpoint) -> Option<PodView> {
        let (ns, name) = (ep.namespace.clone()?, ep.name.clone()?);
        let ports = self
            .policy
            .pods()
            .find(|p| p.metadata.namespace == ns && p.metadata.name == name)
            .map(|p| p.named_ports())
            .unwrap_or_default();
        Some(PodView {
            namespace: ns,
            name,
            labels: ep.labels.clone(),
            ip: ep.ip,
            ports,
        })
    }

    /// Compile the store for the live endpoints into the snapshot the next publish
    /// carries (hit counters sized for it).
    fn recompile(&mut self) {
        let mut views = self.policy.endpoint_views();
        // Named ports of YAML pods may have changed since the endpoint was recorded.
        for v in &mut views {
            if let Some(p) = self
                .policy
                .pods()
                .find(|p| p.metadata.namespace == v.namespace && p.metadata.name == v.name)
            {
                v.ports = p.named_ports();
            }
        }
        let ports: BTreeMap<(String, String), PortId> = self
            .endpoints
            .values()
            .filter_map(|(e, a)| Some(((e.namespace.clone()?, e.name.clone()?), a.id)))
            .collect();
        let t = Instant::now();
        let snap = compile(&self.policy, &views, |v| {
            ports.get(&(v.namespace.clone(), v.name.clone())).copied()
        });
        tracing::debug!(
            policies = snap.policies.len(),
            elapsed_us = t.elapsed().as_micros() as u64,
            "policy compiled"
        );
        let n = snap.policies.len();
        self.policy_snap = Arc::new(snap);
        self.policy_hits = (0..self.workers.len())
            .map(|_| PolicyHits::new(n))
            .collect();
    }

    /// Fold the counters of a snapshot no worker writes any more into the totals.
    fn fold_hits(&mut self, snap: &PolicySnapshot, hits: &[PolicyHits]) {
        for h in hits {
            for (i, c) in h.hits.iter().enumerate() {
                let v = c.load(Relaxed);
                if v > 0 {
                    if let Some(name) = snap.policies.get(i) {
                        *self.hits_folded.entry(name.clone()).or_default() += v;
                    }
                }
            }
        }
    }

    /// Recompile, publish, wait for every worker, then fold the old hit counters.
    fn recompile_and_publish(&mut self) -> Result<u64, ControlError> {
        let old = (Arc::clone(&self.policy_snap), Arc::clone(&self.policy_hits));
        self.recompile();
        let r = self.publish_and_wait();
        if r.is_ok() {
            self.fold_hits(&old.0, &old.1);
        } else {
            // Some worker may still count into the old array; fold what is there now
            // and accept that a late increment is lost.
            self.fold_hits(&old.0, &old.1);
        }
        r.map(|_| self.publisher.current().generation)
    }

    /// Hits per policy name: folded totals plus the live counters.
    fn policy_hits(&self) -> BTreeMap<String, u64> {
        let mut out = self.hits_folded.clone();
        for h in self.policy_hits.iter() {
            for (i, c) in h.hits.iter().enumerate() {
                if let Some(name) = self.policy_snap.policies.get(i) {
                    *out.entry(name.clone()).or_default() += c.load(Relaxed);
                }
            }
        }
        out.retain(|_, v| *v > 0);
        out
    }

    fn persist_policy(&mut self) {
        let path = self.state.root.join(POLICY_FILE);
        if let Err(e) = crate::state::save_json(&path, &self.policy) {
            self.persist_errors += 1;
            tracing::error!(error = %e, "persist policy store");
        }
    }

    /// Apply a change to a copy of the store; commit, persist and publish only if it
    /// succeeds, so a refused change leaves everything in force as it was.
    fn change_policy<T>(
        &mut self,
        f: impl FnOnce(&mut PolicyStore) -> Result<T, PolicyError>,
    ) -> Result<(T, u64), ControlError> {
        let mut next = self.policy.clone();
        let out = f(&mut next).map_err(policy_err)?;
        let changed = next != self.policy;
        self.policy = next;
        if !changed {
            return Ok((out, self.publisher.current().generation));
        }
        self.persist_policy();
        let gen = self.recompile_and_publish()?;
        Ok((out, gen))
    }

    /// Re-apply `policyDir` as one all-or-nothing apply; NetworkPolicies that were in
    /// it before and are not any more are deleted.
    fn reload_policy_dir(&mut self) -> Result<PolicyApplied, ControlError> {
        let Some(dir) = self.cfg.policy_dir.clone() else {
            return Ok(PolicyApplied::default());
        };
        let objects = k8s::parse_dir(&dir).map_err(policy_err)?;
        let now: BTreeSet<(String, String)> = objects
            .iter()
            .filter_map(|o| match o {
                Object::NetworkPolicy(p) => {
                    Some((p.metadata.namespace.clone(), p.metadata.name.clone()))
                }
                _ => None,
            })
            .collect();
        let gone: Vec<(String, String)> = self.dir_policies.difference(&now).cloned().collect();
        let ((summary, deleted), gen) = self.change_policy(|s| {
            let mut deleted = Vec::new();
            for (ns, name) in &gone {
                if s.delete(ns, name).is_ok() {
                    deleted.push(format!("NetworkPolicy {ns}/{name}"));
                }
            }
            Ok((s.apply_objects(objects)?, deleted))
        })?;
        self.dir_policies = now;
        let mut applied = summary_to_applied(summary, gen);
        applied.deleted = deleted;
        tracing::info!(dir = %dir.display(), changed = applied.created.len() + applied.configured.len(), deleted = applied.deleted.len(), generation = gen, "policyDir applied");
        Ok(applied)
    }

    fn pod_label(
        &mut self,
        namespace: String,
        name: String,
        labels: BTreeMap<String, String>,
        remove: Vec<String>,
        replace: bool,
        overwrite: bool,
    ) -> Result<BTreeMap<String, String>, ControlError> {
        let live = self.endpoints.values().find(|(e, _)| {
            e.namespace.as_deref() == Some(&namespace) && e.name.as_deref() == Some(&name)
        });
        let current = match live {
            Some((e, _)) => e.labels.clone(),
            None => self
                .policy
                .pods()
                .find(|p| p.metadata.namespace == namespace && p.metadata.name == name)
                .map(|p| p.metadata.labels.clone())
                .ok_or_else(|| {
                    err(
                        ErrorKind::NotFound,
                        format!("Pod {namespace}/{name} not found (no live endpoint or YAML pod of that name)"),
                    )
                })?,
        };
        let mut next = if replace {
            BTreeMap::new()
        } else {
            current.clone()
        };
        for (k, v) in labels {
            if !replace && !overwrite {
                if let Some(old) = current.get(&k) {
                    if *old != v {
                        return Err(err(
                            ErrorKind::Conflict,
                            format!("Pod {namespace}/{name}: label {k} already has value {old:?}; pass overwrite to change it"),
                        ));
                    }
                }
            }
            next.insert(k, v);
        }
        for k in remove {
            next.remove(&k);
        }
        let ifname = live.map(|(e, _)| e.ifname.clone());
        let set = next.clone();
        self.change_policy(|s| s.set_pod_labels(&namespace, &name, set))?;
        if let Some(i) = ifname {
            if let Some((e, _)) = self.endpoints.get_mut(&i) {
                e.labels = next.clone();
            }
            self.persist();
        }
        tracing::info!(pod = %format!("{namespace}/{name}"), labels = ?next, "pod labels set");
        Ok(next)
    }

    fn find_pod(&self, what: &str, spec: &str) -> Result<(&Endpoint, PortId), ControlError> {
        let (ns, name) = spec.split_once('/').ok_or_else(|| {
            err(
                ErrorKind::InvalidRequest,
                format!("{what} {spec:?}: expected NAMESPACE/POD"),
            )
        })?;
        self.endpoints
            .values()
            .find(|(e, _)| e.namespace.as_deref() == Some(ns) && e.name.as_deref() == Some(name))
            .map(|(e, a)| (e, a.id))
            .ok_or_else(|| {
                err(
                    ErrorKind::NotFound,
                    format!("{what} {spec}: no endpoint of that pod on this node"),
                )
            })
    }

    fn trace(
        &self,
        from: &str,
        to: &str,
        port: serde_json::Value,
        protocol: Option<String>,
    ) -> Result<reach::Trace, ControlError> {
        let proto: Protocol = protocol
            .as_deref()
            .unwrap_or("TCP")
            .to_ascii_uppercase()
            .parse()
            .map_err(|e: String| err(ErrorKind::InvalidRequest, format!("protocol: {e}")))?;
        let port = match port {
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .map(ProbePort::Number),
            serde_json::Value::String(s) => Some(ProbePort::parse(&s)),
            _ => None,
        }
        .ok_or_else(|| {
            err(
                ErrorKind::InvalidRequest,
                "port: expected 0-65535 or a port name",
            )
        })?;
        let (src, src_port) = self.find_pod("from", from)?;
        let (dst, dst_port) = self.find_pod("to", to)?;
        let number = match &port {
            ProbePort::Number(n) => *n,
            ProbePort::Name(_) => {
                let view = self.endpoint_view(dst).ok_or_else(|| {
                    err(
                        ErrorKind::InvalidRequest,
                        format!("to {to}: pod has no identity"),
                    )
                })?;
                port.resolve(&view, proto).ok_or_else(|| {
                    err(
                        ErrorKind::NotFound,
                        format!("to {to}: no container port named {port} for {proto}"),
                    )
                })?
            }
        };
        let tables = Arc::clone(self.publisher.current());
        Ok(reach::trace(
            &tables,
            (from, src_port, src.ip),
            (to, dst_port, dst.ip),
            proto,
            number,
        ))
    }

    fn policy_list(&self) -> Vec<PolicyInfo> {
        let hits = self.policy_hits();
        let views = self.policy.endpoint_views();
        self.policy
            .list()
            .into_iter()
            .map(|p| {
                let key = format!("{}/{}", p.namespace, p.name);
                let selected = self
                    .policy
                    .policy(&p.namespace, &p.name)
                    .map(|np| {
                        views
                            .iter()
                            .filter(|v| {
                                v.namespace == np.metadata.namespace
                                    && np.spec.pod_selector.matches(&v.labels)
                            })
                            .count()
                    })
                    .unwrap_or(0);
                PolicyInfo {
                    hits: hits.get(&key).copied().unwrap_or(0),
                    policy_types: p.policy_types.iter().map(|t| format!("{t:?}")).collect(),
                    namespace: p.namespace,
                    name: p.name,
                    ingress_rules: p.ingress_rules,
                    egress_rules: p.egress_rules,
                    selected,
                }
            })
            .collect()
    }

    /// Completes the DELs the CNI plugin recorded while the daemon was unreachable (at
    /// start, then every [`PENDING_SCAN_INTERVAL`]): detach the endpoint (its veth is already gone), release the address, remove the
    /// record. A record that cannot be read is moved aside, never retried forever.
    fn finish_pending_dels(&mut self) {
        let dir = self.state.root.join(PENDING_DEL_DIR);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut done = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let rec: PendingDel = match crate::state::load_json(&path) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "unreadable pending DEL record");
                    let _ = crate::state::quarantine(&path);
                    continue;
                }
            };
            if self.endpoints.contains_key(&rec.host_ifname) {
                let _ = self.del_endpoint(Some(rec.host_ifname.clone()), None);
            }
            match self.ipam.release(&rec.container_id, &rec.ifname) {
                Ok(_) => {
                    let _ = std::fs::remove_file(&path);
                    done += 1;
                }
                Err(e) => {
                    tracing::error!(error = %e, container_id = %rec.container_id, "pending DEL: release address")
                }
            }
        }
        if done > 0 {
            tracing::info!(done, "finished DELs recorded while the daemon was down");
            self.persist();
        }
    }

    fn endpoint_check(&self, ifname: &str) -> Result<EndpointCheck, ControlError> {
        use std::sync::atomic::Ordering::Relaxed;
        let (ep, att) = self.endpoints.get(ifname).ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                format!("no endpoint on {ifname}: the dataplane does not forward for it"),
            )
        })?;
        let w = &self.workers[att.info.worker as usize];
        if w.join.as_ref().is_none_or(|j| j.is_finished()) {
            return Err(err(
                ErrorKind::System,
                format!("worker {} owning {ifname} has exited", w.shared.id),
            ));
        }
        let gen = self.publisher.current().generation;
        let running = w.shared.counters.generation.load(Relaxed);
        if running < gen {
            return Err(err(
                ErrorKind::System,
                format!(
                    "worker {} runs table generation {running}, not the current {gen}",
                    w.shared.id
                ),
            ));
        }
        Ok(EndpointCheck {
            endpoint: ep.clone(),
            generation: running,
        })
    }

    fn ipam_allocate(
        &mut self,
        container_id: &str,
        ifname: &str,
        ip: Option<Ipv4Addr>,
    ) -> Result<IpamLease, ControlError> {
        let used: Vec<Ipv4Addr> = self.endpoints.values().map(|(e, _)| e.ip).collect();
        let taken = |ip: Ipv4Addr| used.contains(&ip);
        let ip = self
            .ipam
            .allocate(container_id, ifname, ip, &taken)
            .map_err(|e| {
                let kind = match &e {
                    IpamError::Exhausted { .. } => ErrorKind::Capacity,
                    IpamError::InUse { .. } | IpamError::KeyHoldsOther { .. } => {
                        ErrorKind::Conflict
                    }
                    IpamError::NotAssignable { .. } | IpamError::EmptyKey => {
                        ErrorKind::InvalidRequest
                    }
                    IpamError::Persist(_) => ErrorKind::System,
                };
                err(kind, e.to_string())
            })?;
        tracing::info!(%ip, container_id, ifname, "address allocated");
        Ok(IpamLease {
            ip,
            prefix: 32,
            gateway: POD_GATEWAY,
        })
    }

    fn host_ip_of(&self) -> Ipv4Addr {
        let base = u32::from(self.cfg.pod_cidr.addr);
        Ipv4Addr::from(base + 1)
    }

    /// The host port: a veth pair whose node end carries the first address of the pod
    /// CIDR and the route to it; the other end is attached to the dataplane.
    fn create_host_port(&mut self) -> Result<(), String> {
        let name = self.cfg.host_port.name.clone();
        let peer = self.cfg.host_port.peer_name.clone();
        // A previous instance that crashed may have left it; it is ours to replace.
        let _ = self.nl.delete_link(&name);
        self.nl
            .create_veth(&name, &peer, None)
            .map_err(|e| e.to_string())?;
        let node = self
            .nl
            .link_by_name(&name)
            .map_err(|e| e.to_string())?
            .ok_or("host veth vanished")?;
        let dp = self
            .nl
            .link_by_name(&peer)
            .map_err(|e| e.to_string())?
            .ok_or("host veth peer vanished")?;
        // Noise reduction: IPv6 link-local chatter on the host port would only be
        // counted as unsupported_ethertype drops.
        let _ = crate::sys::write_sysctl(&format!("net/ipv6/conf/{name}/disable_ipv6"), "1");
        let _ = crate::sys::write_sysctl(&format!("net/ipv6/conf/{peer}/disable_ipv6"), "1");
        // The node's stack transmits into the dataplane through `name` exactly like a
        // pod does through its eth0: without this, node → pod TCP (kubelet probes,
        // portmap's hostPort DNAT) leaves with partial checksums and the pod drops it.
        crate::sys::ethtool::prepare_pod_interface(&name)
            .map_err(|e| format!("turn off transmit offloads of {name}: {e}"))?;
        self.nl
            .set_link_up(dp.index, true)
            .map_err(|e| e.to_string())?;
        self.nl
            .set_link_up(node.index, true)
            .map_err(|e| e.to_string())?;
        let host_ip = self.host_ip_of();
        self.nl
            .add_address(node.index, host_ip, 32)
            .map_err(|e| e.to_string())?;
        self.nl
            .add_route(&RouteSpec {
                dst: self.cfg.pod_cidr.addr,
                prefix_len: self.cfg.pod_cidr.prefix,
                gateway: None,
                oif: node.index,
                onlink: false,
                src: Some(host_ip),
                scope_link: true,
            })
            .map_err(|e| e.to_string())?;
        let node_mac = node.mac.ok_or("host veth has no MAC")?;
        let dp_mac = dp.mac.ok_or("host veth peer has no MAC")?;
        // The node's own address: the policy stage exempts traffic from and to it.
        let info = PortInfo {
            kind: PortKind::Host,
            worker: 0,
            mac: dp_mac,
            peer_mac: node_mac,
            ip: host_ip,
        };
        let att = self
            .attach_port(&peer, dp.index, info)
            .map_err(|e| e.message)?;
        self.host = Some(att);
        self.host_ip = Some(host_ip);
        self.publish_and_wait().map_err(|e| e.message)?;
        tracing::info!(host_port = %name, %host_ip, "host port up");
        Ok(())
    }

    fn least_loaded_worker(&self) -> WorkerId {
        let mut load = vec![0usize; self.workers.len()];
        for (_, a) in self.endpoints.values() {
            load[a.info.worker as usize] += 1;
        }
        if let Some(h) = &self.host {
            load[h.info.worker as usize] += 1;
        }
        load.iter()
            .enumerate()
            .min_by_key(|(_, l)| **l)
            .map(|(i, _)| i as WorkerId)
            .unwrap_or(0)
    }

    /// Socket, XDP registration and attachment; the port goes to its worker.
    fn attach_port(
        &mut self,
        ifname: &str,
        ifindex: u32,
        mut info: PortInfo,
    ) -> Result<Attached, ControlError> {
        let id = self.free_slots.pop().ok_or_else(|| {
            err(
                ErrorKind::Capacity,
                format!("no free port slot for {ifname} (maxPortsPerWorker × workers reached)"),
            )
        })?;
        if info.kind == PortKind::Pod {
            info.worker = self.least_loaded_worker();
        }
        self.counters[id as usize].reset();
        let result = (|| {
            let port = Port::open(id, ifname, 0, &self.port_cfg, Arc::clone(&self.counters))
                .map_err(|e| err(ErrorKind::System, e.to_string()))?;
            let fd = port
                .fd()
                .map(|f| f.try_clone_to_owned())
                .transpose()
                .map_err(|e| err(ErrorKind::System, format!("dup socket of {ifname}: {e}")))?;
            let raw = fd.as_ref().map_or(-1, std::os::fd::AsRawFd::as_raw_fd);
            self.loader
                .register(ifname, ifindex, 0, id as u32, raw)
                .map_err(|e| err(ErrorKind::System, e.to_string()))?;
            let xdp = match self.loader.attach(ifname, ifindex) {
                Ok(x) => x,
                Err(e) => {
                    self.loader.unregister(ifindex, 0, id as u32);
                    return Err(err(ErrorKind::System, e.to_string()));
                }
            };
            let w = &self.workers[info.worker as usize];
            if w.cmds.send(WorkerCmd::AddPort(Box::new(port))).is_err() {
                self.loader.unregister(ifindex, 0, id as u32);
                return Err(err(
                    ErrorKind::System,
                    format!("worker {} is gone", info.worker),
                ));
            }
            w.shared.waker.wake();
            Ok(Attached {
                id,
                ifname: ifname.to_string(),
                ifindex,
                fd,
                info,
                _xdp: xdp,
            })
        })();
        if result.is_err() {
            self.free_slots.push(id);
        }
        result
    }

    /// Undo attach_port: stop redirecting, detach, have the worker drop the socket.
    fn detach_port(&mut self, a: Attached) {
        self.loader.unregister(a.ifindex, 0, a.id as u32);
        let id = a.id;
        let worker = a.info.worker;
        drop(a); // closes the bpf_link: program detached from the interface
                 // Tables without the port must be live before the worker drops it, so no other
                 // worker hands it packets for a port that is going away.
        let _ = self.publish_and_wait();
        let (done_tx, done_rx) = bounded(1);
        let w = &self.workers[worker as usize];
        if w.cmds
            .send(WorkerCmd::RemovePort { id, done: done_tx })
            .is_ok()
        {
            w.shared.waker.wake();
            if done_rx.recv_timeout(READY_TIMEOUT).is_err() {
                tracing::error!(port = id, worker, "worker did not release the port in time");
                return; // the slot stays reserved rather than risk reuse
            }
        }
        self.free_slots.push(id);
    }

    fn build_tables(&self) -> Tables {
        let max = self.counters.len();
        let mut ports: Vec<Option<PortInfo>> = vec![None; max];
        let mut fib = Vec::with_capacity(self.endpoints.len());
        for (ep, a) in self.endpoints.values() {
            ports[a.id as usize] = Some(a.info);
            fib.push((u32::from(ep.ip), a.id));
        }
        let mut host_port = None;
        if let Some(h) = &self.host {
            ports[h.id as usize] = Some(h.info);
            host_port = Some(h.id);
        }
        Tables {
            generation: 0,
            ports,
            fib: Fib::build(fib),
            host_port,
            policy: Arc::clone(&self.policy_snap),
            policy_hits: Arc::clone(&self.policy_hits),
            ..Tables::default()
        }
    }

    /// Publish the current truth and wait until every worker runs on it.
    fn publish_and_wait(&mut self) -> Result<(), ControlError> {
        let t = self.build_tables();
        self.publisher.publish(t);
        let gen = self.publisher.current().generation;
        for w in &self.workers {
            w.shared.waker.wake();
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        for w in &self.workers {
            while w
                .shared
                .counters
                .generation
                .load(std::sync::atomic::Ordering::Relaxed)
                < gen
            {
                if Instant::now() > deadline {
                    return Err(err(
                        ErrorKind::System,
                        format!("worker {} did not pick up tables in time", w.shared.id),
                    ));
                }
                w.shared.waker.wake();
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        Ok(())
    }

    fn persist(&mut self) {
        let eps: Vec<Endpoint> = self.endpoints.values().map(|(e, _)| e.clone()).collect();
        if let Err(e) = crate::state::save_json(&self.state.endpoints_path(), &eps) {
            self.persist_errors += 1;
            tracing::error!(error = %e, "persist endpoints");
        }
    }

    /// Re-attach endpoints persisted by a previous run whose veths still exist.
    fn restore(&mut self) {
        let saved: Vec<Endpoint> = match crate::state::load_json(&self.state.endpoints_path()) {
            Ok(Some(v)) => v,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "cannot read persisted endpoints; starting empty");
                return;
            }
        };
        let mut restored = 0;
        for ep in saved {
            let spec = EndpointSpec {
                ifname: ep.ifname.clone(),
                ip: ep.ip,
                mac: Some(ep.mac.clone()),
                namespace: ep.namespace.clone(),
                name: ep.name.clone(),
                labels: ep.labels.clone(),
                cni: ep.cni.clone(),
            };
            match self.add_endpoint(spec) {
                Ok(_) => restored += 1,
                Err(e) => tracing::warn!(ifname = %ep.ifname, error = %e, "endpoint not restored"),
            }
        }
        tracing::info!(restored, "endpoints restored");
        self.persist();
    }

    fn add_endpoint(&mut self, spec: EndpointSpec) -> Result<Endpoint, ControlError> {
        if spec.ifname.is_empty() || spec.ifname.len() > 15 {
            return Err(err(
                ErrorKind::InvalidRequest,
                format!("ifname {:?}: must be 1-15 characters", spec.ifname),
            ));
        }
        if spec.ip.is_unspecified() || spec.ip.is_broadcast() || spec.ip.is_multicast() {
            return Err(err(
                ErrorKind::InvalidRequest,
                format!("ip {}: not a unicast address", spec.ip),
            ));
        }
        if Some(spec.ip) == self.host_ip {
            return Err(err(
                ErrorKind::Conflict,
                format!("ip {} is the node's host-port address", spec.ip),
            ));
        }
        if let Some((e, _)) = self.endpoints.get(&spec.ifname) {
            if e.ip == spec.ip {
                return Ok(e.clone()); // idempotent re-add
            }
            return Err(err(
                ErrorKind::Conflict,
                format!("{} is already attached with ip {}", spec.ifname, e.ip),
            ));
        }
        if let Some((e, _)) = self.endpoints.values().find(|(e, _)| e.ip == spec.ip) {
            return Err(err(
                ErrorKind::Conflict,
                format!("ip {} already belongs to {}", spec.ip, e.ifname),
            ));
        }
        let link = self
            .nl
            .link_by_name(&spec.ifname)
            .map_err(|e| err(ErrorKind::System, e.to_string()))?
            .ok_or_else(|| {
                err(
                    ErrorKind::NotFound,
                    format!(
                        "no interface {} in the daemon's network namespace",
                        spec.ifname
                    ),
                )
            })?;
        let peer_mac = match &spec.mac {
            Some(m) => parse_mac(m).ok_or_else(|| {
                err(
                    ErrorKind::InvalidRequest,
                    format!("mac {m:?}: expected aa:bb:cc:dd:ee:ff"),
                )
            })?,
            None => self.nl.peer_mac(&spec.ifname).map_err(|e| {
                err(
                    ErrorKind::InvalidRequest,
                    format!(
                        "no mac given and cannot read the peer MAC of {}: {e}",
                        spec.ifname
                    ),
                )
            })?,
        };
        let mac = link.mac.ok_or_else(|| {
            err(
                ErrorKind::InvalidRequest,
                format!("{} has no MAC address", spec.ifname),
            )
        })?;
        if !link.up {
            self.nl
                .set_link_up(link.index, true)
                .map_err(|e| err(ErrorKind::System, e.to_string()))?;
        }
        let _ =
            crate::sys::write_sysctl(&format!("net/ipv6/conf/{}/disable_ipv6", spec.ifname), "1");
        let info = PortInfo {
            kind: PortKind::Pod,
            worker: 0,
            mac,
            peer_mac,
            ip: spec.ip,
        };
        // The pod's identity goes into the policy store first: invalid labels refuse
        // the endpoint before anything is attached.
        let identity = match (&spec.namespace, &spec.name) {
            (Some(ns), Some(name)) => {
                let mut next = self.policy.clone();
                let probe = Endpoint {
                    ifname: spec.ifname.clone(),
                    ip: spec.ip,
                    mac: String::new(),
                    namespace: Some(ns.clone()),
                    name: Some(name.clone()),
                    labels: spec.labels.clone(),
                    cni: None,
                    port: 0,
                    worker: 0,
                };
                let view = self.endpoint_view(&probe).ok_or_else(|| {
                    err(ErrorKind::InvalidRequest, "endpoint identity incomplete")
                })?;
                next.upsert_endpoint(view)
                    .map_err(|e| err(ErrorKind::InvalidRequest, e.to_string()))?;
                Some(next)
            }
            _ => None,
        };
        let att = self.attach_port(&spec.ifname, link.index, info)?;
        let previous_policy = identity.map(|next| std::mem::replace(&mut self.policy, next));
        let ep = Endpoint {
            ifname: spec.ifname.clone(),
            ip: spec.ip,
            mac: mac_to_string(&peer_mac),
            namespace: spec.namespace,
            name: spec.name,
            labels: spec.labels,
            cni: spec.cni,
            port: att.id,
            worker: att.info.worker,
        };
        self.endpoints.insert(spec.ifname, (ep.clone(), att));
        if let Err(e) = self.recompile_and_publish() {
            if let Some(p) = previous_policy {
                self.policy = p;
                self.recompile();
            }
            if let Some((_, a)) = self.endpoints.remove(&ep.ifname) {
                self.detach_port(a);
            }
            return Err(e);
        }
        if previous_policy.is_some() {
            self.persist_policy();
        }
        tracing::info!(ifname = %ep.ifname, ip = %ep.ip, port = ep.port, worker = ep.worker, "endpoint attached");
        Ok(ep)
    }

    fn del_endpoint(
        &mut self,
        ifname: Option<String>,
        ip: Option<Ipv4Addr>,
    ) -> Result<Endpoint, ControlError> {
        let key = match (ifname, ip) {
            (Some(i), None) => i,
            (None, Some(ip)) => self
                .endpoints
                .values()
                .find(|(e, _)| e.ip == ip)
                .map(|(e, _)| e.ifname.clone())
                .ok_or_else(|| err(ErrorKind::NotFound, format!("no endpoint with ip {ip}")))?,
            _ => {
                return Err(err(
                    ErrorKind::InvalidRequest,
                    "give exactly one of ifname or ip",
                ))
            }
        };
        let (ep, att) = self
            .endpoints
            .remove(&key)
            .ok_or_else(|| err(ErrorKind::NotFound, format!("no endpoint on {key}")))?;
        if let (Some(ns), Some(name)) = (&ep.namespace, &ep.name) {
            if self.policy.remove_endpoint(ns, name).is_some() {
                self.persist_policy();
            }
        }
        // detach_port publishes: the recompiled policy goes out with the port removal.
        let old = (Arc::clone(&self.policy_snap), Arc::clone(&self.policy_hits));
        self.recompile();
        self.detach_port(att);
        self.fold_hits(&old.0, &old.1);
        self.persist();
        tracing::info!(ifname = %ep.ifname, ip = %ep.ip, "endpoint detached");
        Ok(ep)
    }

    fn port_stats(&self, a: &Attached, kind: &str, ip: Option<Ipv4Addr>) -> PortStats {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.counters[a.id as usize];
        let drops = DropReason::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), c.drops[*r as usize].load(Relaxed)))
            .filter(|(_, v)| *v > 0)
            .collect();
        PortStats {
            port: a.id,
            ifname: a.ifname.clone(),
            kind: kind.to_string(),
            worker: a.info.worker,
            ip,
            rx_packets: c.rx_packets.load(Relaxed),
            rx_bytes: c.rx_bytes.load(Relaxed),
            tx_packets: c.tx_packets.load(Relaxed),
            tx_bytes: c.tx_bytes.load(Relaxed),
            drops,
            xdp: a
                .fd
                .as_ref()
                .and_then(|f| xdp_statistics(std::os::fd::AsFd::as_fd(f)).ok())
                .map(ring_stats),
        }
    }

    /// Per-port and per-worker counters.
    pub fn stats(&self) -> Stats {
        use std::sync::atomic::Ordering::Relaxed;
        let mut ports: Vec<PortStats> = self
            .endpoints
            .values()
            .map(|(e, a)| self.port_stats(a, "pod", Some(e.ip)))
            .collect();
        if let Some(h) = &self.host {
            ports.push(self.port_stats(h, "host", self.host_ip));
        }
        ports.sort_by_key(|p| p.port);
        let workers = self
            .workers
            .iter()
            .map(|w| {
                let mine: Vec<&PortStats> =
                    ports.iter().filter(|p| p.worker == w.shared.id).collect();
                let mut drops: BTreeMap<String, u64> = BTreeMap::new();
                for p in &mine {
                    for (k, v) in &p.drops {
                        *drops.entry(k.clone()).or_default() += v;
                    }
                }
                WorkerStats {
                    worker: w.shared.id,
                    core: w.shared.core,
                    ports: mine.len(),
                    rx_packets: mine.iter().map(|p| p.rx_packets).sum(),
                    tx_packets: mine.iter().map(|p| p.tx_packets).sum(),
                    drops,
                    handoff_out: w.shared.counters.handoff_out.load(Relaxed),
                    handoff_in: w.shared.counters.handoff_in.load(Relaxed),
                    sleeps: w.shared.counters.sleeps.load(Relaxed),
                    generation: w.shared.counters.generation.load(Relaxed),
                    conntrack: ConntrackStats {
                        entries: w.shared.counters.ct_entries.load(Relaxed),
                        capacity: w.shared.counters.ct_capacity.load(Relaxed),
                        inserts: w.shared.counters.ct_inserts.load(Relaxed),
                        evictions: w.shared.counters.ct_evictions.load(Relaxed),
                        full: w.shared.counters.ct_full.load(Relaxed),
                    },
                }
            })
            .collect();
        Stats {
            workers,
            ports,
            policy_hits: self.policy_hits(),
        }
    }

    /// Readiness and summary.
    pub fn status(&self) -> Status {
        let alive = self
            .workers
            .iter()
            .all(|w| w.join.as_ref().is_some_and(|j| !j.is_finished()));
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            ready: alive && (self.host.is_some() || !self.cfg.host_port.enabled),
            generation: self.publisher.current().generation,
            workers: self.workers.len(),
            endpoints: self.endpoints.len(),
            pod_cidr: self.cfg.pod_cidr.to_string(),
            host_port: self.host.as_ref().map(|_| self.cfg.host_port.name.clone()),
            host_ip: self.host_ip,
            uptime_secs: self.started.elapsed().as_secs(),
        }
    }

    /// Detach everything, stop workers, remove the host port. Endpoints stay persisted
    /// so the next start re-attaches them.
    pub fn shutdown(&mut self) {
        let eps: Vec<String> = self.endpoints.keys().cloned().collect();
        for k in eps {
            if let Some((_, a)) = self.endpoints.remove(&k) {
                self.loader.unregister(a.ifindex, 0, a.id as u32);
                drop(a);
            }
        }
        if let Some(h) = self.host.take() {
            self.loader.unregister(h.ifindex, 0, h.id as u32);
            drop(h);
        }
        for w in &self.workers {
            let _ = w.cmds.send(WorkerCmd::Stop);
            w.shared.waker.wake();
        }
        for w in &mut self.workers {
            if let Some(j) = w.join.take() {
                let _ = j.join();
            }
        }
        if self.cfg.host_port.enabled {
            let _ = self.nl.delete_link(&self.cfg.host_port.name);
        }
        self.publisher.collect();
        tracing::info!("dataplane stopped");
    }
}

impl Handler for Daemon {
    fn handle(&mut self, request: Request) -> Result<serde_json::Value, ControlError> {
        let to_json = |v: Result<serde_json::Value, serde_json::Error>| {
            v.map_err(|e| err(ErrorKind::System, format!("encode result: {e}")))
        };
        match request {
            Request::EndpointAdd(spec) => {
                let ep = self.add_endpoint(spec)?;
                self.persist();
                to_json(serde_json::to_value(ep))
            }
            Request::EndpointDel { ifname, ip } => {
                to_json(serde_json::to_value(self.del_endpoint(ifname, ip)?))
            }
            Request::EndpointList => {
                let eps: Vec<&Endpoint> = self.endpoints.values().map(|(e, _)| e).collect();
                to_json(serde_json::to_value(eps))
            }
            Request::Stats => to_json(serde_json::to_value(self.stats())),
            Request::Status => to_json(serde_json::to_value(self.status())),
            Request::EndpointCheck { ifname } => {
                to_json(serde_json::to_value(self.endpoint_check(&ifname)?))
            }
            Request::IpamAllocate {
                container_id,
                ifname,
                ip,
            } => to_json(serde_json::to_value(self.ipam_allocate(
                &container_id,
                &ifname,
                ip,
            )?)),
            Request::IpamRelease {
                container_id,
                ifname,
            } => {
                let released = self
                    .ipam
                    .release(&container_id, &ifname)
                    .map_err(|e| err(ErrorKind::System, e.to_string()))?;
                if let Some(ip) = released {
                    tracing::info!(%ip, container_id, ifname, "address released");
                }
                to_json(serde_json::to_value(IpamReleased { released }))
            }
            Request::IpamList => {
                let list: Vec<IpamAllocation> = self
                    .ipam
                    .list()
                    .into_iter()
                    .map(|a| IpamAllocation {
                        ip: a.ip,
                        container_id: a.container_id,
                        ifname: a.ifname,
                    })
                    .collect();
                to_json(serde_json::to_value(list))
            }
        }
    }

    fn handle_policy(&mut self, request: PolicyRequest) -> Result<serde_json::Value, ControlError> {
        let to_json = |v: Result<serde_json::Value, serde_json::Error>| {
            v.map_err(|e| err(ErrorKind::System, format!("encode result: {e}")))
        };
        match request {
            PolicyRequest::PolicyApply { yaml, file } => {
                let (summary, gen) = self.change_policy(|s| match &file {
                    Some(f) => s.apply_yaml_named(&yaml, f),
                    None => s.apply_yaml(&yaml),
                })?;
                let applied = summary_to_applied(summary, gen);
                tracing::info!(created = ?applied.created, configured = ?applied.configured, generation = gen, "policy applied");
                to_json(serde_json::to_value(applied))
            }
            PolicyRequest::PolicyDelete { namespace, name } => {
                let (np, gen) = self.change_policy(|s| s.delete(&namespace, &name))?;
                self.dir_policies.remove(&(namespace.clone(), name.clone()));
                tracing::info!(policy = %format!("{namespace}/{name}"), generation = gen, "policy deleted");
                to_json(serde_json::to_value(PolicyApplied {
                    deleted: vec![format!(
                        "NetworkPolicy {}/{}",
                        np.metadata.namespace, np.metadata.name
                    )],
                    generation: gen,
                    ..PolicyApplied::default()
                }))
            }
            PolicyRequest::PolicyList => to_json(serde_json::to_value(self.policy_list())),
            PolicyRequest::PodLabel {
                namespace,
                name,
                labels,
                remove,
                replace,
                overwrite,
            } => {
                let l = self.pod_label(namespace, name, labels, remove, replace, overwrite)?;
                to_json(serde_json::to_value(l))
            }
            PolicyRequest::Trace {
                from,
                to,
                port,
                protocol,
            } => to_json(serde_json::to_value(
                self.trace(&from, &to, port, protocol)?,
            )),
        }
    }

    fn tick(&mut self) {
        self.publisher.collect();
        if let Some(dir) = self.cfg.policy_dir.clone() {
            if self.last_dir_poll.elapsed() >= POLICY_DIR_POLL {
                self.last_dir_poll = Instant::now();
                let sig = dir_signature(&dir);
                if sig != self.dir_sig {
                    self.dir_sig = sig;
                    if let Err(e) = self.reload_policy_dir() {
                        tracing::error!(dir = %dir.display(), error = %e, "policyDir change refused; policies in force unchanged");
                    }
                }
            }
        }
        if self.last_pending_scan.elapsed() >= PENDING_SCAN_INTERVAL {
            self.last_pending_scan = Instant::now();
            self.finish_pending_dels();
        }
        for w in &self.workers {
            if w.join.as_ref().is_some_and(|j| j.is_finished()) {
                tracing::error!(worker = w.shared.id, "worker thread has exited");
            }
        }
    }
}

/// The control protocol's copy of a socket's kernel ring statistics.
fn ring_stats(s: crate::xsk::RingStats) -> crate::control::proto::XdpRingStats {
    crate::control::proto::XdpRingStats {
        rx_dropped: s.rx_dropped,
        rx_invalid_descs: s.rx_invalid_descs,
        tx_invalid_descs: s.tx_invalid_descs,
        rx_ring_full: s.rx_ring_full,
        rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
        tx_ring_empty_descs: s.tx_ring_empty_descs,
    }
}
