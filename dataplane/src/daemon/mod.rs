//! The node daemon: the control thread's state and what it does with it, as a folder
//! of modules, each with one concern and its own typed errors:
//!
//! - this module: [`Daemon`], its start (XDP program, workers, host port, re-attaching
//!   persisted endpoints, recovering what an unreadable state file lost, reclaiming
//!   unfinished ADDs, finishing DELs recorded while it was down, `policyDir`) and
//!   shutdown, and the order every mutation follows;
//! - [`ports`]: the port registry (slots, one AF_XDP socket per (interface, queue), the
//!   XDP program attached once per interface);
//! - [`workers`]: the worker threads as the control thread drives them;
//! - [`host`]: the host port's veth pair;
//! - [`endpoints`]: the live pod endpoints and the rules an add must pass;
//! - [`policy`]: the NetworkPolicy store, its compiled snapshot, the policy compiler
//!   thread and generations, and `policyDir`;
//! - [`tables`]: building the published tables;
//! - [`stats`]: the `stats` answer;
//! - `handler`: the control socket's [`Handler`](crate::control::proto::Handler).
//!
//! Every mutation follows the same order so a worker never sees a port it cannot use:
//! socket + XDP registration → hand the port to its worker → publish tables → wait
//! until every worker runs on them (then the dataplane forwards for the pod). Removal
//! runs the other way round: unregister → publish tables without the port → the worker
//! drops the socket → the slot is free. Policies compile on their own thread and never
//! hold up a request: a change is durable when answered and in force once its policy
//! generation is published ([`Daemon::request_policy_compile`],
//! `install_compiled_policy`); a pod attached meanwhile is held or open, never on a
//! stale policy ([`policy`]). Each module's error type
//! converts once into the control protocol's error kind and message.
//!
//! Durability (README "Durability"): a change is answered only once it is durable
//! (state files written with their last good copy, [`crate::state::save_json_kept`]);
//! when the write fails the change is undone in memory and in the dataplane and the
//! request fails with kind `unavailable` (CNI code 11); `status` reports persistence
//! health. At start, an unreadable `endpoints.json` is set aside and the endpoints are
//! recovered from its copy *and* from what the kernel still shows: every completed IPAM
//! allocation whose host veth (named from the attachment, `xsk…`) still exists is
//! re-attached with its peer's MAC (read over netlink) and the identity (namespace,
//! name, labels) the policy file remembered for its address. The daemon then reports
//! ready: existing pods keep their network. An unreadable `ipam.json` (and copy) is
//! rebuilt from the restored endpoints' CNI attachments; an unreadable `policy.json`
//! falls back to its copy, else to fail-closed ([`policy`]). Crash-safe ADD: an
//! allocation is journalled `pending` until its endpoint is durable; at start pending
//! allocations without a live endpoint are released and their half-made veths deleted
//! ([`Daemon::reclaim_unfinished_adds`]).

pub mod cluster;
pub mod endpoints;
mod handler;
pub mod host;
pub mod masq;
pub mod policy;
pub mod ports;
pub mod stats;
pub mod tables;
pub mod uplink;
pub mod workers;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::control::proto::{
    CniAttachment, ControlError, Endpoint, EndpointCheck, EndpointSpec, ErrorKind, IpamLease,
    PolicyApplied, Stats, Status, PENDING_DEL_DIR, POD_GATEWAY,
};
use crate::control::reach::{self, ProbePort};
use crate::ipam::{Ipam, IpamError, IpamOrigin, IPAM_FILE};
use crate::loader::{LoaderError, XdpLoader};
use crate::policy::k8s::PolicyError;
use crate::policy::store::PolicyStore;
use crate::state::{load_json_recovering, Health, Loaded, StateDir, StateError};
use crate::sys::netlink::{Netlink, NetlinkError};
use crate::tables::publish::Publisher;
use crate::tables::{PortId, PortInfo, PortKind, Tables};
use crate::worker::IdlePolicy;
use crate::xsk::{Port, PortConfig, PortError};

pub use endpoints::parse_mac;
pub use policy::POLICY_FILE;

use endpoints::{mac_to_string, EndpointError, Endpoints};
use host::HostPortError;
use policy::{PolicyRequestError, PolicyService};
use ports::{PortRegistry, PortsError, QueueKey};
use stats::PortRole;
use tables::TableInputs;
use workers::{WorkerError, Workers, READY_TIMEOUT};

/// How often the control thread looks for pending-DEL records (a DEL made while the
/// daemon was unreachable but still running, e.g. its socket wedged).
const PENDING_SCAN_INTERVAL: Duration = Duration::from_secs(5);

/// How long start waits for the first compile before serving anyway (pods selected
/// by a policy stay held until it is in force).
const POLICY_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("open netlink: {0}")]
    Netlink(NetlinkError),
    #[error("load XDP program: {0}")]
    Loader(LoaderError),
    #[error("load IP allocations: {0}")]
    Ipam(IpamError),
    #[error("load the policy store: {0}")]
    Policy(policy::OpenError),
    #[error("start workers: {0}")]
    Workers(WorkerError),
    #[error("create host port: {0}")]
    HostPort(#[from] HostPortError),
    #[error("attach host port: {0}")]
    HostAttach(AttachError),
    #[error("publish host port: {0}")]
    HostPublish(WorkerError),
    #[error("start the overlay: {0}")]
    Uplink(#[from] uplink::UplinkError),
    #[error("pod egress masquerade (masquerade.enabled: false turns it off): {0}")]
    Masquerade(crate::sys::nft::NftError),
    #[error("join the cluster: {0}")]
    Cluster(#[from] cluster::ClusterError),
}

/// Attaching a port failed; nothing of it stays attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Ports(#[from] PortsError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
}

impl From<AttachError> for ControlError {
    fn from(e: AttachError) -> Self {
        match e {
            AttachError::Ports(e) => e.into(),
            AttachError::Worker(e) => e.into(),
        }
    }
}

impl From<IpamError> for ControlError {
    fn from(e: IpamError) -> Self {
        let kind = match &e {
            IpamError::Exhausted { .. } => ErrorKind::Capacity,
            IpamError::InUse { .. } | IpamError::KeyHoldsOther { .. } => ErrorKind::Conflict,
            IpamError::NotAssignable { .. } | IpamError::EmptyKey => ErrorKind::InvalidRequest,
            IpamError::Persist(_) => ErrorKind::Unavailable,
        };
        ControlError::new(kind, e.to_string())
    }
}

/// The daemon. See the module doc.
pub struct Daemon {
    cfg: Config,
    started: Instant,
    nl: Netlink,
    publisher: Publisher,
    workers: Workers,
    ports: PortRegistry<XdpLoader>,
    port_cfg: PortConfig,
    endpoints: Endpoints,
    /// The host port's slot, once attached, and the node's address on it.
    host: Option<PortId>,
    host_ip: Option<Ipv4Addr>,
    state: StateDir,
    /// Persistence health, shared with the IPAM and the policy service.
    health: Health,
    /// The IPAM file and its copy were unreadable at start.
    ipam_lost: bool,
    ipam: Ipam,
    last_pending_scan: Instant,
    policy: PolicyService,
    /// The uplink and the overlay, when configured (see [`uplink`]).
    uplink: Option<uplink::Uplink>,
    /// Where the metrics sample goes, if the endpoint is on (`handler.rs`).
    metrics: Option<handler::MetricsHook>,
    /// The cluster datastore and its view, when configured (see [`cluster`]).
    cluster: Option<cluster::Cluster>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("endpoints", &self.endpoints.len())
            .finish_non_exhaustive()
    }
}

/// The allocations, from `ipam.json` or its last good copy; with both unreadable (set
/// aside) an empty allocator, which start refills from the restored endpoints. Returns
/// whether they were lost.
fn load_ipam(cfg: &Config, state: &StateDir, health: &Health) -> Result<(Ipam, bool), DaemonError> {
    let path = state.root.join(IPAM_FILE);
    let (ipam, origin) = Ipam::load_recovering(cfg.pod_cidr, &path).map_err(DaemonError::Ipam)?;
    let origin_was_current = origin == IpamOrigin::Current;
    let lost = match origin {
        IpamOrigin::Current => false,
        IpamOrigin::FromCopy { set_aside } => {
            health.recovered(format!(
                "{} unreadable{}; allocations recovered from {}",
                path.display(),
                kept_as(set_aside.as_slice()),
                crate::state::prev_path(&path).display()
            ));
            false
        }
        IpamOrigin::Unreadable { set_aside } => {
            let msg = format!(
                "{} and its copy unreadable{}; allocations rebuilt from the restored endpoints",
                path.display(),
                kept_as(&set_aside)
            );
            tracing::error!("{msg}");
            health.recovered(msg);
            true
        }
    };
    let ipam = ipam.with_health(health.clone());
    if !origin_was_current {
        // The file is whole again (a failure is in the health; the copy still holds it).
        let _ = ipam.save();
    }
    Ok((ipam, lost))
}

/// ` (kept as A, B)` for the files set aside.
fn kept_as(set_aside: &[std::path::PathBuf]) -> String {
    if set_aside.is_empty() {
        return String::new();
    }
    let list: Vec<String> = set_aside.iter().map(|p| p.display().to_string()).collect();
    format!(" (kept as {})", list.join(", "))
}

/// What [`Daemon::attach_endpoint`] did.
enum Attached {
    /// The endpoint was live already (an idempotent re-add): nothing changed.
    Already,
    /// Newly attached and published; `previous`: the policy store before its identity
    /// was registered (to undo with).
    New {
        previous: Option<std::sync::Arc<PolicyStore>>,
    },
}

impl Daemon {
    /// Load the XDP program, start workers, create the host port, re-attach persisted
    /// endpoints, finish pending DELs, apply `policyDir`.
    pub fn start(mut cfg: Config, state: StateDir) -> Result<Daemon, DaemonError> {
        let mut nl = Netlink::new().map_err(DaemonError::Netlink)?;
        // With a datastore: register first, the pod prefix comes from it.
        let cluster = cluster::join(&mut cfg, &state, &mut nl)?;
        let loader = XdpLoader::load().map_err(DaemonError::Loader)?;
        let health = Health::default();
        let (ipam, ipam_lost) = load_ipam(&cfg, &state, &health)?;
        let policy = PolicyService::open(
            state.root.join(POLICY_FILE),
            cfg.workers.len(),
            cfg.policy_dir.clone(),
            health.clone(),
        )
        .map_err(DaemonError::Policy)?;
        let max_ports = (cfg.umem.max_ports_per_worker as usize * cfg.workers.len())
            .min(crate::loader::MAX_PORTS as usize);
        let ports = PortRegistry::new(loader, max_ports);
        let mut publisher = Publisher::new(Tables::default());
        let idle = IdlePolicy {
            busy_poll: Duration::from_micros(cfg.idle.busy_poll_us),
            poll_timeout_ms: cfg.idle.poll_timeout_ms,
        };
        let workers = Workers::spawn(&cfg.workers, &mut publisher, ports.counters(), idle)
            .map_err(DaemonError::Workers)?;
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        if let Some(m) = cfg.fit_kernel(&release) {
            tracing::warn!(
                kernel = release.trim(),
                local_mtu = m,
                "no multi-buffer AF_XDP before Linux 6.6: node-local MTU limited to one frame"
            );
        }
        let port_cfg = PortConfig {
            frames: cfg.umem.frames_per_port,
            frame_size: cfg.umem.frame_size,
            ring_size: cfg.umem.ring_size,
            tx_budget: cfg.umem.tx_budget,
            multi_buffer: cfg.multi_buffer(),
        };
        let mut d = Daemon {
            cfg,
            started: Instant::now(),
            nl,
            publisher,
            workers,
            ports,
            port_cfg,
            endpoints: Endpoints::default(),
            host: None,
            host_ip: None,
            state,
            health,
            ipam_lost,
            ipam,
            last_pending_scan: Instant::now(),
            policy,
            uplink: None,
            metrics: None,
            cluster,
        };
        if d.cfg.host_port.enabled {
            if let Err(e) = d.create_host_port() {
                d.shutdown();
                return Err(e);
            }
        }
        match masq::apply(&d.cfg) {
            Ok(applied) => tracing::info!(?applied, "pod egress masquerade"),
            Err(e) => {
                d.shutdown();
                return Err(DaemonError::Masquerade(e));
            }
        }
        if let Err(e) = d.start_uplink() {
            d.shutdown();
            return Err(e.into());
        }
        d.restore();
        d.cluster_start_sync();
        d.policy.save_recovered();
        d.reclaim_unfinished_adds();
        d.finish_pending_dels();
        if let Some(dir) = d.policy.dir().map(|p| p.to_path_buf()) {
            if let Err(e) = d.reload_policy_dir() {
                tracing::error!(dir = %dir.display(), error = %e, "policyDir not applied");
            }
        }
        // Nothing is served yet: the first policy in force is compiled before the
        // daemon answers, so restored pods do not wait for a tick.
        let ports = d.endpoints.pod_ports();
        match d.policy.compile_now(&ports, POLICY_START_TIMEOUT) {
            Some(retired) => {
                if let Err(e) = d.publish_and_wait() {
                    tracing::error!(error = %e, "publish compiled policy");
                }
                d.policy.fold(retired);
            }
            None => tracing::error!(
                timeout_s = POLICY_START_TIMEOUT.as_secs(),
                "policy not compiled at start; pods selected by a policy stay isolated until it is"
            ),
        }
        Ok(d)
    }

    /// Detach everything, stop workers, remove the host port. Endpoints stay persisted
    /// so the next start re-attaches them.
    pub fn shutdown(&mut self) {
        self.ports.close_all();
        self.workers.stop();
        if self.cfg.host_port.enabled {
            host::remove(&mut self.nl, &self.cfg.host_port);
        }
        self.publisher.collect();
        tracing::info!("dataplane stopped");
    }

    /// Readiness and summary.
    pub fn status(&self) -> Status {
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            ready: self.workers.all_running()
                && (self.host.is_some() || !self.cfg.host_port.enabled),
            generation: self.publisher.current().generation,
            workers: self.workers.len(),
            endpoints: self.endpoints.len(),
            pod_cidr: self.cfg.pod_cidr.to_string(),
            local_mtu: self.cfg.local_mtu(),
            host_port: self.host.map(|_| self.cfg.host_port.name.clone()),
            host_ip: self.host_ip,
            uptime_secs: self.started.elapsed().as_secs(),
            overlay: self.overlay_status(),
            persistence: Some(self.health.status(self.policy.fail_closed_namespaces())),
            datastore: self.datastore_status(),
            policy: Some(self.policy.compile_status()),
        }
    }

    /// Per-port and per-worker counters.
    pub fn stats(&self) -> Stats {
        let counters = self.ports.counters();
        let row = |id: PortId, role, ip| {
            let s = self.ports.get(id)?;
            let c = counters.get(usize::from(id))?;
            Some(stats::port_stats(s, c, role, ip))
        };
        let mut ports: Vec<_> = self
            .endpoints
            .iter()
            .filter_map(|e| row(e.port, PortRole::Pod, Some(e.ip)))
            .chain(self.host.and_then(|h| row(h, PortRole::Host, self.host_ip)))
            .chain(self.uplink.iter().flat_map(|u| {
                u.ports
                    .iter()
                    .filter_map(move |&p| row(p, PortRole::Uplink, Some(u.ip)))
            }))
            .collect();
        ports.sort_by_key(|p| p.port);
        let workers = self
            .workers
            .shared()
            .map(|w| stats::worker_stats(w, &ports))
            .collect();
        Stats {
            workers,
            ports,
            policy_hits: self.policy.hit_totals(),
        }
    }

    /// Housekeeping, every control-loop tick: free retired tables, follow
    /// `policyDir`, finish pending DELs, report exited workers.
    fn housekeeping(&mut self) {
        self.install_compiled_policy();
        self.publisher.collect();
        if self.policy.dir_changed() {
            if let Err(e) = self.reload_policy_dir() {
                let dir = self.policy.dir().map(|d| d.display().to_string());
                tracing::error!(dir = ?dir, error = %e, "policyDir change refused; policies in force unchanged");
            }
        }
        if self.last_pending_scan.elapsed() >= PENDING_SCAN_INTERVAL {
            self.last_pending_scan = Instant::now();
            self.finish_pending_dels();
        }
        for w in self.workers.exited() {
            tracing::error!(worker = w, "worker thread has exited");
        }
        self.uplink_housekeeping();
        self.cluster_housekeeping();
    }

    // --- ports ------------------------------------------------------------------

    /// The host port (see [`host`]), attached and published.
    fn create_host_port(&mut self) -> Result<(), DaemonError> {
        let link = host::create(
            &mut self.nl,
            &self.cfg.host_port,
            self.cfg.pod_cidr,
            self.cfg.local_mtu(),
        )?;
        let id = self
            .attach_port(&link.dp_ifname, link.dp_ifindex, link.info)
            .map_err(DaemonError::HostAttach)?;
        self.host = Some(id);
        self.host_ip = Some(link.info.ip);
        self.publish_and_wait().map_err(DaemonError::HostPublish)?;
        tracing::info!(host_port = %self.cfg.host_port.name, host_ip = %link.info.ip, "host port up");
        Ok(())
    }

    /// Socket, XDP registration and attachment; the port goes to its worker (a pod's:
    /// the least loaded one).
    fn attach_port(
        &mut self,
        ifname: &str,
        ifindex: u32,
        mut info: PortInfo,
    ) -> Result<PortId, AttachError> {
        if info.kind == PortKind::Pod {
            info.worker = self.ports.least_loaded(self.workers.len());
        }
        let key = QueueKey::first(ifindex);
        let cfg = &self.port_cfg;
        let port = self.ports.open(ifname, key, info, |id, counters| {
            open_socket(|| Port::open(id, ifname, key.queue, cfg, std::sync::Arc::clone(&counters)))
        })?;
        let id = port.id();
        if let Err(e) = self.workers.add_port(info.worker, port) {
            // The port went down with the refused command: nobody holds it.
            self.ports.close(id);
            self.ports.release(id);
            return Err(e.into());
        }
        Ok(id)
    }

    /// Undo attach_port: stop redirecting (detach if it was the interface's last
    /// socket), publish tables without the port, have the worker drop the socket.
    fn detach_port(&mut self, id: PortId) {
        let Some(socket) = self.ports.close(id) else {
            return;
        };
        // Tables without the port must be live before the worker drops it, so no other
        // worker hands it packets for a port that is going away.
        if let Err(e) = self.publish_and_wait() {
            tracing::error!(error = %e, "publish tables without port {id}");
        }
        match self.workers.remove_port(socket.info.worker, id) {
            Ok(()) | Err(WorkerError::Gone(_)) => self.ports.release(id),
            // The slot stays reserved rather than risk reuse.
            Err(e) => tracing::error!(error = %e, "port slot kept"),
        }
    }

    // --- tables -----------------------------------------------------------------

    fn build_tables(&self) -> Tables {
        let overlay = self.overlay_tables();
        let mut t = tables::build(TableInputs {
            capacity: self.ports.capacity(),
            ports: self.ports.sockets().map(|s| (s.id, s.info)),
            routes: self.endpoints.iter().map(|e| (e.ip, e.port)),
            host_port: self.host,
            policy: self.policy.snapshot(),
            policy_hits: self.policy.hits(),
            overlay: overlay.as_ref(),
        });
        let svc = self.cfg.service_cidr;
        t.service_cidr = crate::tables::Prefix4::new(svc.addr, svc.prefix);
        t
    }

    /// Publish the current truth and wait until every worker runs on it.
    fn publish_and_wait(&mut self) -> Result<(), WorkerError> {
        let t = self.build_tables();
        self.publisher.publish(t);
        let gen = self.publisher.current().generation;
        self.workers.wait_generation(gen, READY_TIMEOUT)
    }

    /// **The policy input changed** (a policy, namespace or label; a pod's identity
    /// added or removed; a pod attached or detached): ask the compiler thread for the
    /// next policy generation, without waiting for it. Returns that generation; it is
    /// published by [`install_compiled_policy`](Self::install_compiled_policy) when
    /// compiled. The one call for every source of policy input (requests, `policyDir`,
    /// the datastore).
    pub fn request_policy_compile(&mut self) -> u64 {
        let ports = self.endpoints.pod_ports();
        self.policy.request_compile(&ports)
    }

    /// If a compiled policy arrived: publish it, wait for every worker, then fold the
    /// counters of the snapshot they left (the control loop calls this every tick and
    /// before policy and status requests).
    fn install_compiled_policy(&mut self) {
        let Some(retired) = self.policy.take_compiled() else {
            return;
        };
        if let Err(e) = self.publish_and_wait() {
            tracing::error!(error = %e, generation = self.policy.in_force(), "publish compiled policy");
        }
        // On failure some worker may still count into the old array; what is there
        // now is folded and a late increment is lost.
        self.policy.fold(retired);
    }

    /// Where a policy change of generation `policy` stands now.
    fn change_generation(&self, policy: u64) -> policy::ChangeGeneration {
        policy::ChangeGeneration {
            tables: self.publisher.current().generation,
            policy,
            in_force: self.policy.in_force() >= policy,
        }
    }

    // --- endpoints --------------------------------------------------------------

    /// Write the endpoints (file and copy); a failure is recorded in the health and
    /// returned (the caller undoes its change or reports it).
    fn persist(&mut self) -> Result<(), StateError> {
        let eps: Vec<&Endpoint> = self.endpoints.iter().collect();
        let r = crate::state::save_json_kept(&self.state.endpoints_path(), &eps);
        self.health.record(r)
    }

    /// Re-attach the endpoints of the previous run whose veths still exist. With
    /// `endpoints.json` unreadable (set aside): its last good copy plus what the kernel
    /// shows ([`kernel_endpoints`](Self::kernel_endpoints)).
    fn restore(&mut self) {
        let path = self.state.endpoints_path();
        let (saved, from_kernel) = match load_json_recovering::<Vec<Endpoint>>(&path) {
            Ok(Loaded::Missing) => (Vec::new(), false),
            Ok(Loaded::Current(v)) => (v, false),
            Ok(Loaded::FromCopy { value, set_aside }) => {
                self.health.recovered(format!(
                    "{} unreadable{}; endpoints recovered from {} and the kernel's veths",
                    path.display(),
                    kept_as(set_aside.as_slice()),
                    crate::state::prev_path(&path).display()
                ));
                (value, true)
            }
            Ok(Loaded::Unreadable { set_aside }) => {
                let msg = format!(
                    "{} and its copy unreadable{}; endpoints recovered from the kernel's veths and the IP allocations",
                    path.display(),
                    kept_as(&set_aside)
                );
                tracing::error!("{msg}");
                self.health.recovered(msg);
                (Vec::new(), true)
            }
            Err(e) => {
                let msg = format!(
                    "{e}; endpoints recovered from the kernel's veths and the IP allocations"
                );
                tracing::error!("{msg}");
                self.health.recovered(msg);
                (Vec::new(), true)
            }
        };
        let mut specs: Vec<EndpointSpec> = saved.iter().map(endpoints::respec).collect();
        if from_kernel {
            let found = self.kernel_endpoints(&saved);
            tracing::info!(
                found = found.len(),
                "endpoints found from the kernel's veths"
            );
            specs.extend(found);
        }
        let mut restored = 0;
        for spec in specs {
            let ifname = spec.ifname.clone();
            match self.attach_endpoint(spec) {
                Ok(_) => restored += 1,
                Err(e) => tracing::warn!(%ifname, error = %e, "endpoint not restored"),
            }
        }
        tracing::info!(restored, "endpoints restored");
        if self.ipam_lost {
            self.adopt_endpoint_addresses();
        }
        if let Err(e) = self.persist() {
            tracing::error!(error = %e, "restored endpoints not saved");
        }
    }

    /// The endpoints the kernel still shows: every completed allocation whose host
    /// veth exists and which is not in `known`, with the identity the policy file
    /// remembered for its address (the peer MAC is read when it attaches).
    fn kernel_endpoints(&mut self, known: &[Endpoint]) -> Vec<EndpointSpec> {
        let mut out = Vec::new();
        for a in self.ipam.list() {
            if a.pending || known.iter().any(|e| e.ip == a.ip) {
                continue;
            }
            let host = xsknet_proto::wire::host_ifname(&a.container_id, &a.ifname);
            match self.nl.link_by_name(&host) {
                Ok(Some(_)) => {}
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(ifname = %host, error = %e, "look for a pod veth");
                    continue;
                }
            }
            let view = self.policy.saved_views().iter().find(|v| v.ip == a.ip);
            out.push(EndpointSpec {
                ifname: host,
                ip: a.ip,
                mac: None,
                namespace: view.map(|v| v.namespace.clone()),
                name: view.map(|v| v.name.clone()),
                labels: view.map(|v| v.labels.clone()).unwrap_or_default(),
                cni: Some(CniAttachment {
                    container_id: a.container_id,
                    ifname: a.ifname,
                    netns: None,
                }),
            });
        }
        out
    }

    /// The IPAM file was lost: take over the addresses of the restored endpoints that
    /// came from CNI, so they are never handed out twice.
    fn adopt_endpoint_addresses(&mut self) {
        let owned: Vec<(Ipv4Addr, String, String)> = self
            .endpoints
            .iter()
            .filter_map(|e| {
                let c = e.cni.as_ref()?;
                Some((e.ip, c.container_id.clone(), c.ifname.clone()))
            })
            .collect();
        for (ip, cid, ifname) in owned {
            if let Err(e) = self.ipam.adopt(ip, &cid, &ifname) {
                tracing::error!(%ip, container_id = %cid, error = %e, "re-adopt address");
            }
        }
    }

    /// Reclaims the allocations of ADDs that never completed (the daemon went away
    /// between the allocation and the durable endpoint; the plugin answered "try again
    /// later"): a pending allocation with a live endpoint is confirmed, one without is
    /// released and the half-made host veth of its attachment deleted.
    fn reclaim_unfinished_adds(&mut self) {
        for a in self.ipam.pending() {
            let live = self.endpoints.iter().any(|e| {
                e.ip == a.ip
                    && e.cni
                        .as_ref()
                        .is_none_or(|c| c.container_id == a.container_id && c.ifname == a.ifname)
            });
            if live {
                let _ = self.ipam.confirm(&a.container_id, &a.ifname);
                continue;
            }
            let host = xsknet_proto::wire::host_ifname(&a.container_id, &a.ifname);
            match self.nl.delete_link(&host) {
                Ok(true) => tracing::info!(ifname = %host, "deleted the veth of an unfinished ADD"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(ifname = %host, error = %e, "delete the veth of an unfinished ADD")
                }
            }
            match self.ipam.release(&a.container_id, &a.ifname) {
                Ok(_) => {
                    tracing::warn!(ip = %a.ip, container_id = %a.container_id, ifname = %a.ifname, "reclaimed the address of an ADD that never completed")
                }
                Err(e) => {
                    tracing::error!(ip = %a.ip, error = %e, "reclaim the address of an unfinished ADD")
                }
            }
        }
    }

    /// `endpoint add`: attach, then make it durable (the policy store with its
    /// identity, the endpoints file), then confirm its allocation. A failed write
    /// undoes the attach: nothing of it stays in force.
    fn add_endpoint(&mut self, spec: EndpointSpec) -> Result<Endpoint, ControlError> {
        let spec = self.cluster_identity(spec)?;
        let (ep, attached) = self.attach_endpoint(spec)?;
        if let Attached::New { previous } = attached {
            let identity = previous.is_some();
            let saved = if identity {
                self.policy.persist()
            } else {
                Ok(())
            }
            .and_then(|()| self.persist());
            if let Err(e) = saved {
                self.undo_attach(&ep, previous);
                if identity {
                    let _ = self.policy.persist();
                }
                return Err(ControlError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "endpoint {} ({}) not saved, attach undone: {e}",
                        ep.ifname, ep.ip
                    ),
                ));
            }
        }
        if let Some(c) = &ep.cni {
            // A failed write leaves it pending: at the next start the endpoint is there
            // (it is durable), so it is kept.
            let _ = self.ipam.confirm(&c.container_id, &c.ifname);
        }
        self.cluster_publish_pod(&ep);
        Ok(ep)
    }

    /// Undo a successful [`attach_endpoint`](Self::attach_endpoint): the endpoint goes,
    /// the policy store it replaced comes back, the tables are published without it.
    fn undo_attach(&mut self, ep: &Endpoint, previous: Option<std::sync::Arc<PolicyStore>>) {
        self.endpoints.remove(&ep.ifname);
        if let Some(p) = previous {
            self.policy.replace(p);
        }
        self.request_policy_compile();
        self.policy.detach_port(ep.port);
        self.detach_port(ep.port);
    }

    /// Attach and publish an endpoint, nothing written (start re-attaches this way).
    fn attach_endpoint(
        &mut self,
        spec: EndpointSpec,
    ) -> Result<(Endpoint, Attached), ControlError> {
        if let Some(e) = self.endpoints.admit(&spec, self.host_ip)? {
            return Ok((e, Attached::Already)); // idempotent re-add
        }
        let link = self
            .nl
            .link_by_name(&spec.ifname)
            .map_err(EndpointError::from)?
            .ok_or_else(|| EndpointError::NoInterface(spec.ifname.clone()))?;
        let peer_mac = match &spec.mac {
            Some(m) => parse_mac(m).ok_or_else(|| EndpointError::BadMac(m.clone()))?,
            None => self
                .nl
                .peer_mac(&spec.ifname)
                .map_err(|source| EndpointError::PeerMac {
                    ifname: spec.ifname.clone(),
                    source,
                })?,
        };
        let mac = link
            .mac
            .ok_or_else(|| EndpointError::NoMac(spec.ifname.clone()))?;
        if !link.up {
            self.nl
                .set_link_up(link.index, true)
                .map_err(EndpointError::from)?;
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
        let mut ep = Endpoint {
            ifname: spec.ifname,
            ip: spec.ip,
            mac: mac_to_string(&peer_mac),
            namespace: spec.namespace,
            name: spec.name,
            labels: spec.labels,
            cni: spec.cni,
            port: 0,
            worker: 0,
        };
        // The pod's identity goes into the policy store first: invalid labels refuse
        // the endpoint before anything is attached.
        let identity = self
            .policy
            .with_endpoint(&ep)
            .map_err(EndpointError::Identity)?;
        let id = self.attach_port(&ep.ifname, link.index, info)?;
        ep.port = id;
        ep.worker = self.ports.get(id).map_or(0, |s| s.info.worker);
        let previous = identity.map(|next| self.policy.replace(next));
        self.endpoints.insert(ep.clone());
        // The compile that includes the pod runs on the compiler thread; until it is in
        // force the pod is published held or open (see `policy`), never on a stale
        // policy.
        let generation = self.request_policy_compile();
        let held = self.policy.attach_port(id, &ep, generation);
        if let Err(e) = self.publish_and_wait() {
            self.undo_attach(&ep, previous);
            return Err(e.into());
        }
        tracing::info!(ifname = %ep.ifname, ip = %ep.ip, port = ep.port, worker = ep.worker, policy_generation = generation, held, "endpoint attached");
        Ok((ep, Attached::New { previous }))
    }

    fn del_endpoint(
        &mut self,
        ifname: Option<String>,
        ip: Option<Ipv4Addr>,
    ) -> Result<Endpoint, ControlError> {
        let key = self.endpoints.resolve_del(ifname, ip)?;
        let ep = self
            .endpoints
            .remove(&key)
            .ok_or(EndpointError::NoIfname(key))?;
        if let (Some(ns), Some(name)) = (&ep.namespace, &ep.name) {
            self.policy.remove_endpoint(ns, name);
        }
        // The port leaves the dataplane now (detach_port publishes); other pods' rules
        // naming its address go with the compile asked for here.
        self.request_policy_compile();
        self.policy.detach_port(ep.port);
        self.detach_port(ep.port);
        // Detached either way; a failed write is in the health. Should the daemon
        // restart before a later write succeeds, the endpoint comes back only if its
        // veth still exists.
        let _ = self.persist();
        self.cluster_withdraw_pod(&ep);
        tracing::info!(ifname = %ep.ifname, ip = %ep.ip, "endpoint detached");
        Ok(ep)
    }

    fn endpoint_check(&self, ifname: &str) -> Result<EndpointCheck, EndpointError> {
        let ep = self
            .endpoints
            .get(ifname)
            .ok_or_else(|| EndpointError::NotForwarding(ifname.to_string()))?;
        if !self.workers.running(ep.worker) {
            return Err(EndpointError::WorkerExited {
                worker: ep.worker,
                ifname: ifname.to_string(),
            });
        }
        let current = self.publisher.current().generation;
        let running = self.workers.generation(ep.worker).unwrap_or(0);
        if running < current {
            return Err(EndpointError::Stale {
                worker: ep.worker,
                running,
                current,
            });
        }
        Ok(EndpointCheck {
            endpoint: ep.clone(),
            generation: running,
        })
    }

    /// Completes the DELs the CNI plugin recorded while the daemon was unreachable (at
    /// start, then every [`PENDING_SCAN_INTERVAL`]): detach the endpoint (its veth is
    /// already gone), release the address, remove the record. A record that cannot be
    /// read is moved aside, never retried forever.
    fn finish_pending_dels(&mut self) {
        let mut done = 0;
        for (path, rec) in endpoints::pending_dels(&self.state.root.join(PENDING_DEL_DIR)) {
            if self.endpoints.get(&rec.host_ifname).is_some() {
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
            let _ = self.persist();
        }
    }

    // --- IPAM -------------------------------------------------------------------

    fn ipam_allocate(
        &mut self,
        container_id: &str,
        ifname: &str,
        ip: Option<Ipv4Addr>,
    ) -> Result<IpamLease, IpamError> {
        let used: Vec<Ipv4Addr> = self.endpoints.iter().map(|e| e.ip).collect();
        let taken = |ip: Ipv4Addr| used.contains(&ip);
        let ip = self.ipam.allocate(container_id, ifname, ip, &taken)?;
        tracing::info!(%ip, container_id, ifname, "address allocated");
        Ok(IpamLease {
            ip,
            prefix: 32,
            gateway: POD_GATEWAY,
        })
    }

    // --- policy -----------------------------------------------------------------

    /// Apply a change to a copy of the store; commit, persist and publish only if it
    /// succeeds, so a refused change leaves everything in force as it was.
    /// Answered once durable: the compile runs on the compiler thread and the
    /// returned generation says when the change is in force.
    fn change_policy<T>(
        &mut self,
        f: impl FnOnce(&mut PolicyStore) -> Result<T, PolicyError>,
    ) -> Result<(T, policy::ChangeGeneration), ControlError> {
        let (out, changed) = self.policy.apply(f)?;
        let g = if changed {
            self.request_policy_compile()
        } else {
            // Nothing new: in force with everything asked for so far.
            self.policy.requested()
        };
        Ok((out, self.change_generation(g)))
    }

    /// Re-apply `policyDir` as one all-or-nothing apply; NetworkPolicies that were in
    /// it before and are not any more are deleted.
    fn reload_policy_dir(&mut self) -> Result<PolicyApplied, ControlError> {
        let Some(reload) = self.policy.read_dir()? else {
            return Ok(PolicyApplied::default());
        };
        let (summary, deleted, changed) = self.policy.apply_dir(reload)?;
        let g = if changed {
            self.request_policy_compile()
        } else {
            self.policy.requested()
        };
        let mut applied = policy::applied(summary, self.change_generation(g));
        applied.deleted = deleted;
        tracing::info!(
            changed = applied.created.len() + applied.configured.len(),
            deleted = applied.deleted.len(),
            policy_generation = g,
            "policyDir applied"
        );
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
        let live = self
            .endpoints
            .by_pod(&namespace, &name)
            .map(|e| (e.ifname.clone(), e.labels.clone()));
        let current = match &live {
            Some((_, l)) => l.clone(),
            None => self
                .policy
                .store()
                .pods()
                .find(|p| p.metadata.namespace == namespace && p.metadata.name == name)
                .map(|p| p.metadata.labels.clone())
                .ok_or_else(|| PolicyRequestError::PodNotFound {
                    namespace: namespace.clone(),
                    name: name.clone(),
                })?,
        };
        let next = policy::merge_labels(
            (&namespace, &name),
            &current,
            labels,
            remove,
            replace,
            overwrite,
        )?;
        let set = next.clone();
        // The endpoint's labels are written first, so a refused write changes nothing;
        // a refused policy change puts them back.
        let set_endpoint_labels = |d: &mut Daemon, labels: &BTreeMap<String, String>| {
            if let Some((ifname, _)) = &live {
                if let Some(e) = d.endpoints.get_mut(ifname) {
                    e.labels = labels.clone();
                }
                return d.persist();
            }
            Ok(())
        };
        if let Err(e) = set_endpoint_labels(self, &next) {
            let _ = set_endpoint_labels(self, &current);
            return Err(ControlError::new(
                ErrorKind::Unavailable,
                format!("pod {namespace}/{name}: labels not saved, nothing changed: {e}"),
            ));
        }
        if let Err(e) = self.change_policy(|s| s.set_pod_labels(&namespace, &name, set)) {
            let _ = set_endpoint_labels(self, &current);
            return Err(e);
        }
        if let Some(ep) = self.endpoints.by_pod(&namespace, &name).cloned() {
            self.cluster_publish_pod(&ep);
        }
        tracing::info!(pod = %format!("{namespace}/{name}"), labels = ?next, "pod labels set");
        Ok(next)
    }

    fn trace(
        &self,
        from: &str,
        to: &str,
        port: serde_json::Value,
        protocol: Option<String>,
    ) -> Result<reach::Trace, ControlError> {
        let (proto, port) = policy::trace_args(protocol.as_deref(), &port)?;
        let src = self.endpoints.find_pod("from", from)?;
        let dst = self.endpoints.find_pod("to", to)?;
        let number = match &port {
            ProbePort::Number(n) => *n,
            ProbePort::Name(_) => {
                let view = self
                    .policy
                    .endpoint_view(dst)
                    .ok_or_else(|| PolicyRequestError::NoIdentity(to.to_string()))?;
                port.resolve(&view, proto)
                    .ok_or_else(|| PolicyRequestError::NoNamedPort {
                        to: to.to_string(),
                        port: port.to_string(),
                        protocol: proto,
                    })?
            }
        };
        let tables = std::sync::Arc::clone(self.publisher.current());
        Ok(reach::trace(
            &tables,
            (from, src.port, src.ip),
            (to, dst.port, dst.ip),
            proto,
            number,
        ))
    }
}

/// How long a bind that finds its queue busy is retried (see [`open_socket`]).
const SOCKET_BUSY_RETRY: Duration = Duration::from_millis(500);

/// Open an AF_XDP socket, retrying while the kernel answers `EBUSY`. Closing a socket
/// releases its buffer pool from deferred work (`xp_release_deferred`), so a socket on
/// the same queue opened right after a detach (a runtime retrying an ADD whose first
/// attempt was undone) can find the queue still taken for a moment. Bounded: after
/// [`SOCKET_BUSY_RETRY`] the error stands.
fn open_socket(mut open: impl FnMut() -> Result<Port, PortError>) -> Result<Port, PortError> {
    let deadline = Instant::now() + SOCKET_BUSY_RETRY;
    loop {
        match open() {
            Err(PortError::Socket { ref source, .. })
                if source.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            r => return r,
        }
    }
}
