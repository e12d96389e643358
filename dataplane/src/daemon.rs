//! The node daemon's control-thread state: endpoints, port slots, the host port, the
//! XDP loader, the workers and the table publisher. It implements the control socket's
//! [`Handler`]; every mutation follows the same order so a worker never sees a port it
//! cannot use: socket + XDP registration → hand the port to its worker → publish tables
//! → wait until the worker runs on them (then the dataplane forwards for the pod).
//! Removal runs the other way round.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};

use crate::config::Config;
use crate::control::proto::{
    ControlError, Endpoint, EndpointCheck, EndpointSpec, ErrorKind, Handler, IpamAllocation,
    IpamLease, IpamReleased, PendingDel, PortStats, Request, Stats, Status, WorkerStats,
    PENDING_DEL_DIR, POD_GATEWAY,
};
use crate::ipam::{Ipam, IpamError, IPAM_FILE};
use crate::loader::{XdpAttachment, XdpLoader};
use crate::pipeline::{DropReason, PortCounters};
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
    fd: i32,
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
        let mut d = Daemon {
            ipam,
            last_pending_scan: Instant::now(),
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
        Ok(d)
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
        let info = PortInfo {
            kind: PortKind::Host,
            worker: 0,
            mac: dp_mac,
            peer_mac: node_mac,
            ip: Ipv4Addr::UNSPECIFIED,
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
            let fd = port.fd().unwrap_or(-1);
            self.loader
                .register(ifname, ifindex, 0, id as u32, fd)
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
        let att = self.attach_port(&spec.ifname, link.index, info)?;
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
        if let Err(e) = self.publish_and_wait() {
            if let Some((_, a)) = self.endpoints.remove(&ep.ifname) {
                self.detach_port(a);
            }
            return Err(e);
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
        self.detach_port(att);
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
            xdp: xdp_statistics(a.fd).ok(),
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
                }
            })
            .collect();
        Stats { workers, ports }
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

    fn tick(&mut self) {
        self.publisher.collect();
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
