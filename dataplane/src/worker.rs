//! Workers: one thread per configured core, each owning a set of ports and running
//! rx burst → pipeline → TX staging → handoff drain → TX flush → completion reap →
//! fill refill, one burst to completion at a time.
//!
//! The pipeline gets each received frame's whole chunk and a [`PacketCtx`]; for every
//! transmitting verdict the worker sends the window `buf[ctx.start..][..ctx.len]`: in
//! place (a new descriptor into the same frame) when the egress is the ingress port,
//! else that window is copied into a frame of the egress port (same worker) or into
//! the owning worker's SPSC [`handoff`](crate::xsk::handoff) ring. Tables arrive through the lock-free
//! [`Subscriber`] between rounds; port additions and removals arrive on a command
//! channel between rounds. Nothing on the packet path locks, allocates, logs or makes
//! a syscall other than the TX kick that need_wakeup asks for.
//!
//! Each worker owns a connection table ([`Conntrack`]) that the policy stage consults:
//! it reads its clock once per round, sweeps a few buckets of the table per round,
//! and also tracks the flows other workers hand it, so replies arriving on its own
//! ports find them.
//!
//! After `busy_poll` of no work the worker sleeps in poll(2) on its sockets and its eventfd (adaptive, like
//! VPP's interrupt mode), so an idle node burns no CPU. The busy window follows the last
//! packet only: waking from a sleep to find nothing (the housekeeping timeout) goes back
//! to sleep at once, so the window's length costs CPU only after traffic.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::counters::{bump, DropReason, PortCounters, BURST};
use crate::pipeline::conntrack::{Conntrack, Millis, DEFAULT_CAPACITY};
use crate::pipeline::{self, encap, PacketCtx, Verdict};
use crate::tables::publish::Subscriber;
use crate::tables::{PortId, PortKind, WorkerId};
use crate::xsk::handoff::{HandoffRx, HandoffTx, SLOT_BYTES};
use crate::xsk::wake::{poll_readable, pollin, Waker};
use crate::xsk::{Port, XdpDesc};

/// `local` entry for a port this worker does not own.
const NOT_LOCAL: u16 = u16::MAX;

/// What the control thread asks of a worker (between rounds).
#[derive(Debug)]
pub enum WorkerCmd {
    /// Take ownership of a port.
    AddPort(Box<Port>),
    /// Drop a port (closing its socket) and acknowledge.
    RemovePort { id: PortId, done: Sender<()> },
    /// Leave the loop.
    Stop,
}

/// Loop counters of one worker, read by the control thread.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerCounters {
    pub handoff_out: AtomicU64,
    pub handoff_in: AtomicU64,
    pub sleeps: AtomicU64,
    pub generation: AtomicU64,
    pub ports: AtomicU64,
    /// Connection-table entries (live or not yet swept), inserts, early-drop
    /// evictions and refused inserts; stored once per round.
    pub ct_entries: AtomicU64,
    pub ct_inserts: AtomicU64,
    pub ct_evictions: AtomicU64,
    pub ct_full: AtomicU64,
    pub ct_capacity: AtomicU64,
}

/// The part of a worker other threads see.
#[derive(Debug)]
pub struct WorkerShared {
    pub id: WorkerId,
    pub core: usize,
    pub sleeping: AtomicBool,
    pub waker: Waker,
    pub counters: WorkerCounters,
}

impl WorkerShared {
    pub fn new(id: WorkerId, core: usize) -> std::io::Result<Self> {
        Ok(WorkerShared {
            id,
            core,
            sleeping: AtomicBool::new(false),
            waker: Waker::new()?,
            counters: WorkerCounters::default(),
        })
    }

    /// Wake the worker if it sleeps (a syscall only then).
    #[inline]
    pub fn wake_if_sleeping(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            self.waker.wake();
        }
    }
}

/// Idle behaviour.
#[derive(Clone, Copy, Debug)]
pub struct IdlePolicy {
    /// Keep polling rings this long after the last packet before sleeping.
    pub busy_poll: Duration,
    /// Longest single sleep (housekeeping cadence).
    pub poll_timeout_ms: i32,
}

impl Default for IdlePolicy {
    fn default() -> Self {
        IdlePolicy {
            busy_poll: Duration::from_micros(1000),
            poll_timeout_ms: 100,
        }
    }
}

/// The busy window after the last packet: it starts at the first empty round after
/// work and is cleared only by work. A sleep does not clear it, so a wakeup that finds
/// nothing (the housekeeping timeout, a spurious wake) sleeps again at once instead of
/// opening a new window: the window follows traffic, never the timer, and an idle
/// worker does not spin.
#[derive(Debug, Default)]
struct IdleClock {
    since: Option<Instant>,
}

impl IdleClock {
    /// A round moved packets.
    #[inline]
    fn worked(&mut self) {
        self.since = None;
    }

    /// An empty round at `now`: true while inside the busy window (spin), false once
    /// it is over (sleep).
    fn spin(&mut self, now: Instant, busy_poll: Duration) -> bool {
        let since = *self.since.get_or_insert(now);
        now.duration_since(since) < busy_poll
    }
}

/// One worker's state. Built by the daemon (or a bench), then [`Worker::run`] on its
/// own thread, or driven round by round with [`Worker::poll_once`].
pub struct Worker {
    shared: Arc<WorkerShared>,
    peers: Vec<Arc<WorkerShared>>,
    ports: Vec<Port>,
    local: Vec<u16>,
    tables: Subscriber,
    cmds: Receiver<WorkerCmd>,
    handoff_tx: Vec<Option<HandoffTx>>,
    handoff_rx: Vec<HandoffRx>,
    pushed_to: Vec<bool>,
    counters: Arc<[PortCounters]>,
    idle: IdlePolicy,
    pollfds: Vec<libc::pollfd>,
    /// Per-round scratch, kept here so a round does not re-initialise 1.3 KiB.
    descs: [XdpDesc; BURST],
    verdicts: [Verdict; BURST],
    /// This worker's connection table (policy stage), allocated once.
    ct: Conntrack,
    /// Origin of the coarse clock handed to the pipeline (read once per round).
    clock: Instant,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.shared.id)
            .field("ports", &self.ports.len())
            .finish()
    }
}

/// The outcome of a push onto worker `w`'s handoff ring: counted out (and `w` to be
/// woken), or dropped on the ingress port — no route when `w` is this worker, else a
/// full ring.
#[inline(always)]
fn handed_off(
    sent: bool,
    w: WorkerId,
    me: WorkerId,
    shared: &WorkerShared,
    pushed_to: &mut [bool],
    c_in: &PortCounters,
) {
    if sent {
        bump(&shared.counters.handoff_out, 1);
        pushed_to[w as usize] = true;
    } else {
        c_in.count_drop(if w == me {
            DropReason::NoRoute
        } else {
            DropReason::HandoffFull
        });
    }
}

/// Two distinct elements of a slice, mutably.
#[inline]
fn pair_mut<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    debug_assert_ne!(a, b);
    if a < b {
        let (l, r) = v.split_at_mut(b);
        (&mut l[a], &mut r[0])
    } else {
        let (l, r) = v.split_at_mut(a);
        (&mut r[0], &mut l[b])
    }
}

/// Transmit a multi-buffer packet (issue 11) received on `ports[pi]` (`d`: its head
/// window, chain place in `options`) per its verdict: a reply is the head alone (the
/// rest goes back to the pool); back out of the same port, the chain in place; to
/// another port of this worker, copied into that port's frames. False for another
/// worker's port: the caller hands it off (it owns the handoff rings). Out of line:
/// the single-buffer path does not pay for it.
#[cold]
#[inline(never)]
fn send_chain(
    ports: &mut [Port],
    pi: usize,
    local: &[u16],
    verdict: Verdict,
    e: PortId,
    d: XdpDesc,
) -> bool {
    let ingress = ports[pi].id();
    if verdict == Verdict::Reply {
        let head = XdpDesc { options: 0, ..d };
        ports[pi].recycle_continuation(&d);
        ports[pi].stage_tx(head);
        return true;
    }
    if e == ingress {
        ports[pi].stage_rx_chain(d);
        return true;
    }
    let li = local.get(e as usize).copied().unwrap_or(NOT_LOCAL);
    if li == NOT_LOCAL {
        return false;
    }
    let (src, dst) = pair_mut(ports, pi, li as usize);
    let total = d.len as usize + src.chain_bytes(&d);
    let segs = std::iter::once(src.packet(&d)).chain(src.chain(&d).iter().map(|c| src.packet(c)));
    dst.send_copy_segments(total, segs);
    src.recycle_packet(&d);
    true
}

impl Worker {
    /// `handoff_tx[w]` sends to worker `w` (None for self); `handoff_rx` are the rings
    /// other workers send to this one; `peers[w]` wakes worker `w`.
    #[allow(clippy::too_many_arguments, reason = "assembled once by the daemon")]
    pub fn new(
        shared: Arc<WorkerShared>,
        peers: Vec<Arc<WorkerShared>>,
        tables: Subscriber,
        cmds: Receiver<WorkerCmd>,
        handoff_tx: Vec<Option<HandoffTx>>,
        handoff_rx: Vec<HandoffRx>,
        counters: Arc<[PortCounters]>,
        idle: IdlePolicy,
    ) -> Self {
        let n = peers.len();
        let mut w = Worker {
            pushed_to: vec![false; n],
            local: vec![NOT_LOCAL; counters.len()],
            shared,
            peers,
            ports: Vec::new(),
            tables,
            cmds,
            handoff_tx,
            handoff_rx,
            counters,
            idle,
            pollfds: Vec::new(),
            descs: [XdpDesc::default(); BURST],
            verdicts: [Verdict::Drop(DropReason::Truncated); BURST],
            ct: Conntrack::new(DEFAULT_CAPACITY),
            clock: Instant::now(),
        };
        w.ct.worker = w.shared.id;
        w.shared
            .counters
            .ct_capacity
            .store(w.ct.capacity() as u64, Ordering::Relaxed);
        w.rebuild_pollfds();
        w
    }

    /// Replace the connection table with one of `capacity` entries (before `run`).
    pub fn with_conntrack_capacity(mut self, capacity: usize) -> Self {
        self.ct = Conntrack::new(capacity);
        self.ct.worker = self.shared.id;
        self.shared
            .counters
            .ct_capacity
            .store(self.ct.capacity() as u64, Ordering::Relaxed);
        self
    }

    /// The coarse clock of this round: milliseconds since the worker was built, from 1.
    #[inline]
    fn now(&self) -> Millis {
        self.clock.elapsed().as_millis() as Millis + 1
    }

    /// Add a port directly (benches, tests; the daemon uses [`WorkerCmd::AddPort`]).
    pub fn add_port(&mut self, port: Port) {
        let id = port.id() as usize;
        if id < self.local.len() {
            self.local[id] = self.ports.len() as u16;
            self.ports.push(port);
            self.shared
                .counters
                .ports
                .store(self.ports.len() as u64, Ordering::Relaxed);
            self.rebuild_pollfds();
        }
    }

    fn remove_port(&mut self, id: PortId) {
        let Some(&idx) = self.local.get(id as usize) else {
            return;
        };
        if idx == NOT_LOCAL {
            return;
        }
        let port = self.ports.swap_remove(idx as usize);
        self.local[id as usize] = NOT_LOCAL;
        if let Some(moved) = self.ports.get(idx as usize) {
            self.local[moved.id() as usize] = idx;
        }
        drop(port);
        self.shared
            .counters
            .ports
            .store(self.ports.len() as u64, Ordering::Relaxed);
        self.rebuild_pollfds();
    }

    fn rebuild_pollfds(&mut self) {
        self.pollfds.clear();
        self.pollfds.push(pollin(self.shared.waker.raw_fd()));
        for p in &self.ports {
            if let Some(fd) = p.fd() {
                self.pollfds
                    .push(pollin(std::os::fd::AsRawFd::as_raw_fd(&fd)));
            }
        }
    }

    /// Apply pending commands and pick up a new table snapshot. False on Stop.
    fn housekeeping(&mut self) -> bool {
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                WorkerCmd::AddPort(p) => self.add_port(*p),
                WorkerCmd::RemovePort { id, done } => {
                    self.remove_port(id);
                    let _ = done.send(());
                }
                WorkerCmd::Stop => return false,
            }
        }
        if self.tables.refresh() {
            self.shared
                .counters
                .generation
                .store(self.tables.tables().generation, Ordering::Relaxed);
        }
        true
    }

    /// One round over every port and handoff ring. Returns packets received.
    #[inline]
    pub fn poll_once(&mut self) -> usize {
        let mut total = 0;
        let me = self.shared.id;
        let now = self.now();
        let Worker {
            ports,
            local,
            tables,
            counters,
            handoff_tx,
            handoff_rx,
            pushed_to,
            shared,
            descs,
            verdicts,
            ct,
            ..
        } = self;
        let tables = tables.tables();
        ct.sweep(now);

        for pi in 0..ports.len() {
            let ingress = ports[pi].id();
            ports[pi].reap();
            let n = ports[pi].rx_burst(descs);
            total += n;
            for i in 0..n {
                let d = descs[i];
                // A multi-buffer packet: the pipeline reads the head, knowing the rest.
                let tail = if d.options != 0 {
                    ports[pi].chain_bytes(&d)
                } else {
                    0
                };
                let (chunk, off) = ports[pi].chunk_mut(d.addr);
                let mut ctx = PacketCtx::new(off, d.len as usize, ingress);
                ctx.tail = tail;
                verdicts[i] = pipeline::process(chunk, &mut ctx, tables, ct, now);
                // The window to transmit, as a descriptor into the same frame (the
                // stages keep it inside the chunk); a dropped frame keeps its own.
                // `options` keeps the chain's place for the TX side.
                if !matches!(verdicts[i], Verdict::Drop(_)) {
                    descs[i] = XdpDesc {
                        addr: d.addr - off as u64 + ctx.start as u64,
                        len: ctx.len as u32,
                        options: d.options,
                    };
                }
            }
            let c_in = &counters[ingress as usize];
            for i in 0..n {
                let d = descs[i];
                let Some(e) = verdicts[i].egress(ingress) else {
                    if let Verdict::Drop(r) = verdicts[i] {
                        c_in.count_drop(r);
                    }
                    ports[pi].recycle_packet(&d);
                    continue;
                };
                if d.options != 0 {
                    if !send_chain(ports, pi, local, verdicts[i], e, d) {
                        let w = tables.port(e).map(|p| p.worker).unwrap_or(me);
                        let ok = match handoff_tx.get_mut(w as usize) {
                            Some(Some(tx)) => {
                                let src = &ports[pi];
                                let total = d.len as usize + src.chain_bytes(&d);
                                let segs = std::iter::once(src.packet(&d))
                                    .chain(src.chain(&d).iter().map(|c| src.packet(c)));
                                tx.push_segments(e, ingress, total, segs)
                            }
                            _ => false,
                        };
                        handed_off(ok, w, me, shared, pushed_to, c_in);
                        ports[pi].recycle_packet(&d);
                    }
                    continue;
                }
                match e {
                    e if e == ingress => ports[pi].stage_tx(d),
                    e => {
                        let li = local.get(e as usize).copied().unwrap_or(NOT_LOCAL);
                        if li != NOT_LOCAL {
                            let (src, dst) = pair_mut(ports, pi, li as usize);
                            dst.send_copy(src.packet(&d));
                        } else {
                            let w = tables.port(e).map(|p| p.worker).unwrap_or(me);
                            let sent = match handoff_tx.get_mut(w as usize) {
                                Some(Some(tx)) => {
                                    let pkt = ports[pi].packet(&d);
                                    if pkt.len() <= SLOT_BYTES {
                                        tx.push(e, ingress, pkt)
                                    } else {
                                        // A 4 KiB frame's packet: two slots.
                                        tx.push_segments(
                                            e,
                                            ingress,
                                            pkt.len(),
                                            std::iter::once(pkt),
                                        )
                                    }
                                }
                                _ => false,
                            };
                            handed_off(sent, w, me, shared, pushed_to, c_in);
                        }
                        ports[pi].recycle(d.addr);
                    }
                }
            }
        }

        for rx in handoff_rx.iter_mut() {
            let mut got = 0u64;
            total += rx.pop(|e, from, parts| {
                got += 1;
                let li = local.get(e as usize).copied().unwrap_or(NOT_LOCAL);
                if li != NOT_LOCAL {
                    let pkt = parts.first().copied().unwrap_or_default();
                    // Replies come back decapsulated on the uplink: track the inner flow.
                    let flow = match tables.port(e) {
                        Some(p) if p.kind == PortKind::Uplink => {
                            pkt.get(encap::OVERHEAD..).unwrap_or_default()
                        }
                        _ => pkt,
                    };
                    pipeline::policy::track_handoff(flow, from, e, tables, ct, now);
                    if parts.len() == 1 {
                        ports[li as usize].send_copy(pkt);
                    } else {
                        let total = parts.iter().map(|p| p.len()).sum();
                        ports[li as usize].send_copy_segments(total, parts.iter().copied());
                    }
                }
            });
            bump(&shared.counters.handoff_in, got);
        }
        let c = &shared.counters;
        c.ct_entries.store(ct.stats.entries, Ordering::Relaxed);
        c.ct_inserts.store(ct.stats.inserts, Ordering::Relaxed);
        c.ct_evictions.store(ct.stats.evictions, Ordering::Relaxed);
        c.ct_full.store(ct.stats.full, Ordering::Relaxed);

        for p in ports.iter_mut() {
            p.flush_tx();
            p.refill();
        }
        for (w, pushed) in pushed_to.iter_mut().enumerate() {
            if *pushed {
                *pushed = false;
                if let Some(peer) = self.peers.get(w) {
                    peer.wake_if_sleeping();
                }
            }
        }
        total
    }

    fn anything_pending(&self) -> bool {
        !self.cmds.is_empty() || self.handoff_rx.iter().any(|r| !r.is_empty())
    }

    /// Run until [`WorkerCmd::Stop`] (or the command channel closes). Pins the thread
    /// to the worker's core first.
    pub fn run(mut self) {
        let core = self.shared.core;
        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
            tracing::warn!(
                worker = self.shared.id,
                core,
                "could not pin worker to its core"
            );
        }
        tracing::info!(worker = self.shared.id, core, "worker running");
        let mut idle = IdleClock::default();
        loop {
            if !self.housekeeping() {
                break;
            }
            if self.poll_once() > 0 {
                idle.worked();
                continue;
            }
            if idle.spin(Instant::now(), self.idle.busy_poll) {
                std::hint::spin_loop();
                continue;
            }
            // Announce sleep, then re-check everything a waker could have published
            // before seeing the flag (no lost wakeups).
            self.shared.sleeping.store(true, Ordering::SeqCst);
            if !self.anything_pending() {
                bump(&self.shared.counters.sleeps, 1);
                if let Err(e) = poll_readable(&mut self.pollfds, self.idle.poll_timeout_ms) {
                    tracing::warn!(worker = self.shared.id, error = %e, "poll failed");
                }
                self.shared.waker.drain();
            }
            self.shared.sleeping.store(false, Ordering::SeqCst);
        }
        tracing::info!(
            worker = self.shared.id,
            ports = self.ports.len(),
            "worker stopped"
        );
    }
}

#[cfg(test)]
mod tests {
    //! Two workers over fake ports, driven round by round with `poll_once`: worker 0
    //! owns the host port and pod A, worker 1 pod B and the uplink.

    use std::sync::atomic::Ordering::Relaxed;

    use super::*;
    use crate::pipeline::policy::{synthetic_frame, Probe};
    use crate::pipeline::testutil::*;
    use crate::policy::{Classifier, PolicySnapshot, PortPolicy};
    use crate::tables::publish::Publisher;
    use crate::tables::Tables;
    use crate::xsk::fake::{fake_port, FakeKernel};
    use crate::xsk::handoff::channel;
    use crate::xsk::PortConfig;

    struct Rig {
        w: [Worker; 2],
        /// Fake kernels, indexed by port id (GONE has none).
        k: Vec<Option<FakeKernel>>,
        counters: Arc<[PortCounters]>,
        _publisher: Publisher,
    }

    fn two_worker_tables() -> Tables {
        let mut t = tables();
        for (id, w) in [(POD_B, 1), (UPLINK, 1)] {
            if let Some(p) = t.ports[id as usize].as_mut() {
                p.worker = w;
            }
        }
        t
    }

    fn rig(t: Tables) -> Rig {
        let counters: Arc<[PortCounters]> = (0..8).map(|_| PortCounters::default()).collect();
        let mut publisher = Publisher::new(t);
        let shared: Vec<Arc<WorkerShared>> = (0..2)
            .map(|i| Arc::new(WorkerShared::new(i, 0).unwrap()))
            .collect();
        let (tx01, rx01) = channel();
        let (tx10, rx10) = channel();
        let mut handoffs = [
            (vec![None, Some(tx01)], vec![rx10]),
            (vec![Some(tx10), None], vec![rx01]),
        ]
        .into_iter();
        let mut mk = |id: WorkerId| {
            let (tx, rx) = handoffs.next().unwrap();
            let (_cmd_tx, cmd_rx) = crossbeam_channel::bounded(1);
            Worker::new(
                Arc::clone(&shared[id as usize]),
                shared.clone(),
                publisher.subscribe(),
                cmd_rx,
                tx,
                rx,
                Arc::clone(&counters),
                IdlePolicy::default(),
            )
        };
        let mut w = [mk(0), mk(1)];
        let cfg = PortConfig {
            frames: 256,
            frame_size: 2048,
            ring_size: 64,
            tx_budget: 0,
            multi_buffer: false,
        };
        let mut k: Vec<Option<FakeKernel>> = (0..=UPLINK).map(|_| None).collect();
        for (id, owner) in [(HOST, 0), (POD_A, 0), (POD_B, 1), (UPLINK, 1)] {
            let (port, kernel) = fake_port(id, &cfg, Arc::clone(&counters)).unwrap();
            w[owner].add_port(port);
            k[id as usize] = Some(kernel);
        }
        Rig {
            w,
            k,
            counters,
            _publisher: publisher,
        }
    }

    impl Rig {
        fn inject(&mut self, port: PortId, f: &[u8]) {
            assert!(self.k[port as usize].as_mut().unwrap().inject(f));
        }

        /// Rounds of both workers until nothing moves.
        fn settle(&mut self) {
            for _ in 0..4 {
                self.w[0].poll_once();
                self.w[1].poll_once();
            }
        }

        fn sent(&mut self, port: PortId) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            self.k[port as usize]
                .as_mut()
                .unwrap()
                .drain_tx(|b| out.push(b.to_vec()));
            out
        }

        fn drops(&self, port: PortId, r: DropReason) -> u64 {
            self.counters[port as usize].drops[r as usize].load(Relaxed)
        }

        fn handoffs(&self, w: usize) -> (u64, u64) {
            let c = &self.w[w].shared.counters;
            (c.handoff_out.load(Relaxed), c.handoff_in.load(Relaxed))
        }
    }

    /// Injects `f` on `port` as a multi-buffer chain (2 KiB frames: 1792 bytes per
    /// buffer), optionally cut after `truncate` buffers; returns the buffers posted.
    fn inject_chain(r: &mut Rig, port: PortId, f: &[u8], truncate: Option<usize>) -> usize {
        r.k[port as usize]
            .as_mut()
            .unwrap()
            .inject_chain(f, truncate)
    }

    fn frames_sent(r: &mut Rig, port: PortId) -> (Vec<Vec<u8>>, usize) {
        let mut out = Vec::new();
        let n = r.k[port as usize]
            .as_mut()
            .unwrap()
            .drain_tx(|b| out.push(b.to_vec()));
        (out, n)
    }

    #[test]
    fn multi_buffer_chains_are_forwarded_whole_and_broken_ones_dropped() {
        let mut r = rig(two_worker_tables());
        // A 3-buffer chain, pod A to the outside (host port, same worker).
        let f = udp(POD_A, IP_A, IP_OUTSIDE, 64, 4000);
        assert_eq!(inject_chain(&mut r, POD_A, &f, None), 3);
        r.settle();
        let (out, frames) = frames_sent(&mut r, HOST);
        assert_eq!((out.len(), frames), (1, 3), "one packet in three frames");
        assert_eq!(out[0].len(), f.len());
        assert_eq!(out[0][..6], peer(HOST));
        assert_eq!(out[0][22], 63, "TTL decremented in the head");
        assert_eq!(out[0][34..], f[34..], "every byte of the chain");
        // Across workers (pod A on 0, pod B on 1): through the handoff, whole.
        let f = udp(POD_A, IP_A, IP_B, 64, 5000);
        assert_eq!(inject_chain(&mut r, POD_A, &f, None), 3);
        r.settle();
        let (out, frames) = frames_sent(&mut r, POD_B);
        assert_eq!((out.len(), frames), (1, 3));
        assert_eq!(out[0][34..], f[34..]);
        // Truncated (the ring ran dry mid-chain), too long (19 buffers), a length
        // that disagrees with the IP header: counted drops, nothing sent, and every
        // buffer goes back — 100 rounds of each would exhaust the 256 frames if not.
        let long = udp(POD_A, IP_A, IP_OUTSIDE, 64, 18 * 1792);
        let mut short = udp(POD_A, IP_A, IP_OUTSIDE, 64, 4000);
        short[16..18].copy_from_slice(&3000u16.to_be_bytes());
        fix_ipv4_checksum(&mut short);
        for _ in 0..100 {
            assert_eq!(inject_chain(&mut r, POD_A, &f, Some(2)), 2);
            r.settle();
            assert_eq!(inject_chain(&mut r, POD_A, &long, None), 19);
            r.settle();
            assert_eq!(inject_chain(&mut r, POD_A, &short, None), 3);
            r.settle();
        }
        assert_eq!(r.drops(POD_A, DropReason::ChainTruncated), 100);
        assert_eq!(r.drops(POD_A, DropReason::ChainTooLong), 100);
        assert_eq!(r.drops(POD_A, DropReason::Ipv4BadTotalLength), 100);
        assert!(frames_sent(&mut r, HOST).0.is_empty() && frames_sent(&mut r, POD_B).0.is_empty());
        let f = udp(POD_A, IP_A, IP_OUTSIDE, 64, 4000);
        assert_eq!(inject_chain(&mut r, POD_A, &f, None), 3);
        r.settle();
        assert_eq!(frames_sent(&mut r, HOST).0.len(), 1, "no frame was lost");
        // Towards the tunnel (larger than the overlay MTU, DF): frag-needed built in
        // the head alone, the rest of the chain recycled.
        let mut f = udp(POD_A, IP_A, IP_REMOTE, 64, 4000);
        f[20] |= 0x40;
        fix_ipv4_checksum(&mut f);
        assert_eq!(inject_chain(&mut r, POD_A, &f, None), 3);
        r.settle();
        let (out, frames) = frames_sent(&mut r, POD_A);
        assert_eq!((out.len(), frames), (1, 1));
        assert_eq!(
            (out[0][23], out[0][34], out[0][35]),
            (1, 3, 4),
            "ICMP frag needed"
        );
        assert!(frames_sent(&mut r, UPLINK).0.is_empty());
    }

    #[test]
    fn the_busy_window_follows_traffic_not_wakeups() {
        let busy = Duration::from_micros(200);
        let t0 = Instant::now();
        let at = |us: u64| t0 + Duration::from_micros(us);
        let mut c = IdleClock::default();
        // After traffic: spin for the window, then sleep.
        c.worked();
        assert!(c.spin(at(0), busy));
        assert!(c.spin(at(199), busy));
        assert!(!c.spin(at(200), busy));
        // Woken by the timeout 100 ms later with nothing to do: straight back to sleep.
        assert!(!c.spin(at(100_200), busy));
        assert!(!c.spin(at(200_200), busy));
        // A packet: a new window from the next empty round.
        c.worked();
        assert!(c.spin(at(200_300), busy));
        assert!(!c.spin(at(200_500), busy));
        // A zero window never spins.
        let mut z = IdleClock::default();
        assert!(!z.spin(at(0), Duration::ZERO));
    }

    #[test]
    fn forward_reply_and_handoff_between_workers() {
        let mut r = rig(two_worker_tables());
        // Same worker: pod A to the outside, through the host port.
        let f = udp(POD_A, IP_A, IP_OUTSIDE, 64, 30);
        r.inject(POD_A, &f);
        r.settle();
        let out = r.sent(HOST);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].len(), &out[0][..6]), (f.len(), &peer(HOST)[..]));
        assert_eq!(r.handoffs(0), (0, 0));
        // Reply: ARP answered back on the ingress port, in place.
        r.inject(POD_A, &arp_request(POD_A, IP_A, IP_B));
        r.settle();
        let out = r.sent(POD_A);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].len(), out[0][21]), (42, 2), "an ARP reply");
        // Across workers: pod A (worker 0) to pod B (worker 1).
        let f = udp(POD_A, IP_A, IP_B, 64, 30);
        r.inject(POD_A, &f);
        r.settle();
        let out = r.sent(POD_B);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0][..6], peer(POD_B));
        assert_eq!(out[0][22], 63);
        assert_eq!(out[0][34..], f[34..]);
        assert_eq!((r.handoffs(0).0, r.handoffs(1).1), (1, 1));
        assert!(r.sent(POD_A).is_empty() && r.sent(HOST).is_empty());
    }

    #[test]
    fn encap_and_decap_cross_workers_with_the_moved_window() {
        let mut r = rig(two_worker_tables());
        // Pod A (worker 0) to a pod on node B: encapsulated, handed to the uplink's worker.
        let f = udp(POD_A, IP_A, IP_REMOTE, 64, 30);
        r.inject(POD_A, &f);
        r.settle();
        let out = r.sent(UPLINK);
        assert_eq!(out.len(), 1);
        let o = &out[0];
        assert_eq!(o.len(), f.len() + 50, "outer headers in front");
        assert_eq!(o[..6], NEXT_HOP_MAC);
        assert_eq!(o[30..34], UNDERLAY_B.octets());
        assert_eq!(o[42..50], [0x08, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(o[50 + 34..], f[34..], "inner payload");
        // VXLAN from node B on the uplink (worker 1) to pod A (worker 0): decapsulated.
        let inner = inner_udp(IP_REMOTE, IP_A, 64, 20);
        r.inject(UPLINK, &vxlan_from_b(&inner));
        r.settle();
        let out = r.sent(POD_A);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), inner.len(), "only the inner frame");
        assert_eq!(out[0][..6], peer(POD_A));
        assert_eq!(out[0][34..], inner[34..]);
        // Pod B and the uplink share worker 1: decap to B goes out without a handoff.
        let before = r.handoffs(1).0;
        r.inject(UPLINK, &vxlan_from_b(&inner_udp(IP_REMOTE, IP_B, 64, 20)));
        r.settle();
        assert_eq!(r.sent(POD_B).len(), 1);
        assert_eq!(r.handoffs(1).0, before);
    }

    #[test]
    fn connection_tracking_follows_a_flow_across_workers() {
        // Pod A admits nothing new (isolated for ingress, no rule).
        let mut t = two_worker_tables();
        let mut ports: Vec<Option<Arc<PortPolicy>>> = vec![None; 5];
        ports[POD_A as usize] = Some(Arc::new(PortPolicy {
            ingress: Some(Classifier::build(&[])),
            egress: None,
        }));
        t.policy = Arc::new(PolicySnapshot {
            ports,
            policies: vec!["ns/deny-a".into()],
        });
        t.policy_hits = (0..2)
            .map(|_| crate::counters::PolicyHits::new(1))
            .collect();
        let probe = |src, dst, sport, dport| Probe {
            src: u32::from(src),
            dst: u32::from(dst),
            proto: 17,
            sport,
            dport,
            detail: 0,
        };
        let out = probe(IP_A, IP_B, 4000, 5000);
        let back = probe(IP_B, IP_A, 5000, 4000);
        let (a_to_b, b_to_a) = (
            synthetic_frame(&t, POD_A, &out),
            synthetic_frame(&t, POD_B, &back),
        );
        let mut r = rig(t);
        // Unsolicited, B's packet to A is refused on worker 1.
        r.inject(POD_B, &b_to_a);
        r.settle();
        assert!(r.sent(POD_A).is_empty());
        assert_eq!(r.drops(POD_B, DropReason::PolicyDenied), 1);
        // A opens the flow on worker 0; worker 1 tracks it as it takes the handoff...
        r.inject(POD_A, &a_to_b);
        r.settle();
        assert_eq!(r.sent(POD_B).len(), 1);
        assert_eq!(
            r.w[1].ct.stats.inserts, 1,
            "worker 1 tracked the handed-off flow"
        );
        // ...so B's reply, policed on worker 1, is a tracked connection and reaches A.
        r.inject(POD_B, &b_to_a);
        r.settle();
        assert_eq!(r.sent(POD_A).len(), 1);
        assert_eq!(
            r.drops(POD_B, DropReason::PolicyDenied),
            1,
            "no new refusal"
        );
    }
}
