//! The port registry: which AF_XDP sockets exist, which port slot each one has and on
//! which interfaces the XDP program is attached.
//!
//! Sockets are keyed by (ifindex, queue) — a pod's veth has one queue, the uplink will
//! have several — and each gets a [`PortId`] slot from a free list sized for
//! `workers × maxPortsPerWorker` (at most the XSKMAP's capacity). The XDP program is
//! attached to an interface when its first socket is registered and detached (its
//! bpf_link dropped) when the last one goes; a socket is registered in the maps before
//! the attach, and unregistered before the detach, so the program never redirects to a
//! slot without a socket. A slot is not free again when its socket is unregistered but
//! only when the caller [`release`](PortRegistry::release)s it, after the owning
//! worker has dropped the [`Port`]. The registry keeps no raw copy of a worker's fd: it
//! holds its own duplicate ([`OwnedFd`]) of each socket, for the kernel's ring
//! statistics, closed with the registry entry. The XDP side is a trait ([`Xdp`]) so
//! the bookkeeping is unit-tested without root.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use crate::control::proto::{ControlError, ErrorKind, XdpRingStats};
use crate::loader::{AttachMode, LoaderError, XdpAttachment, XdpLoader, MODE_ALL, MODE_VXLAN};
use crate::pipeline::PortCounters;
use crate::tables::{PortId, PortInfo, PortKind, WorkerId};
use crate::xsk::port::xdp_statistics;
use crate::xsk::{Port, PortError};

/// One receive queue of one interface: what an AF_XDP socket binds to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueKey {
    pub ifindex: u32,
    pub queue: u32,
}

impl QueueKey {
    /// Queue 0 of `ifindex` (a veth has just that one).
    pub fn first(ifindex: u32) -> Self {
        QueueKey { ifindex, queue: 0 }
    }
}

/// The XDP program as the registry uses it: attach per interface, (un)register sockets
/// (`mode`: the program's port mode, [`MODE_ALL`] or, for uplink queues, [`MODE_VXLAN`]).
pub trait Xdp {
    /// Keeps the program attached to one interface; dropping it detaches.
    type Link;
    fn attach(
        &self,
        ifname: &str,
        ifindex: u32,
        mode: AttachMode,
    ) -> Result<Self::Link, LoaderError>;
    fn register(
        &self,
        ifname: &str,
        key: QueueKey,
        slot: u32,
        fd: Option<RawFd>,
        mode: u32,
    ) -> Result<(), LoaderError>;
    fn unregister(&self, key: QueueKey, slot: u32);
}

impl Xdp for XdpLoader {
    type Link = XdpAttachment;

    fn attach(
        &self,
        ifname: &str,
        ifindex: u32,
        mode: AttachMode,
    ) -> Result<XdpAttachment, LoaderError> {
        XdpLoader::attach_mode(self, ifname, ifindex, mode)
    }

    fn register(
        &self,
        ifname: &str,
        key: QueueKey,
        slot: u32,
        fd: Option<RawFd>,
        mode: u32,
    ) -> Result<(), LoaderError> {
        // A socket without an fd (an in-memory port) cannot be in an XSKMAP: the
        // kernel refuses -1 and the error names the interface.
        XdpLoader::register(
            self,
            ifname,
            key.ifindex,
            key.queue,
            slot,
            fd.unwrap_or(-1),
            mode,
        )
    }

    fn unregister(&self, key: QueueKey, slot: u32) {
        XdpLoader::unregister(self, key.ifindex, key.queue, slot)
    }
}

/// Registering a socket failed; nothing of it stays registered or attached.
#[derive(Debug, thiserror::Error)]
pub enum PortsError {
    #[error("no free port slot for {ifname} (maxPortsPerWorker × workers reached)")]
    NoSlot { ifname: String },
    #[error("{ifname} queue {queue} already has a socket")]
    Duplicate { ifname: String, queue: u32 },
    #[error(transparent)]
    Open(#[from] PortError),
    #[error("duplicate the AF_XDP socket fd of {ifname}: {source}")]
    Dup { ifname: String, source: io::Error },
    #[error(transparent)]
    Xdp(#[from] LoaderError),
}

impl From<PortsError> for ControlError {
    fn from(e: PortsError) -> Self {
        let kind = match e {
            PortsError::NoSlot { .. } => ErrorKind::Capacity,
            PortsError::Duplicate { .. } => ErrorKind::Conflict,
            PortsError::Open(_) | PortsError::Dup { .. } | PortsError::Xdp(_) => ErrorKind::System,
        };
        ControlError::new(kind, e.to_string())
    }
}

/// One registered socket.
#[derive(Debug)]
pub struct Socket {
    pub id: PortId,
    pub ifname: String,
    pub key: QueueKey,
    pub info: PortInfo,
    /// The registry's own duplicate of the socket fd (real ports only).
    fd: Option<OwnedFd>,
}

impl Socket {
    /// The kernel's ring statistics of this socket, if it is a real one.
    pub fn xdp_stats(&self) -> Option<XdpRingStats> {
        let s = xdp_statistics(self.fd.as_ref()?.as_fd()).ok()?;
        Some(XdpRingStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }
}

/// An interface with the program attached and how many sockets it carries.
#[derive(Debug)]
struct Iface<L> {
    _link: L,
    sockets: usize,
}

/// Sockets, slots and attachments. See the module doc.
#[derive(Debug)]
pub struct PortRegistry<X: Xdp> {
    xdp: X,
    counters: Arc<[PortCounters]>,
    /// Free slots, lowest on top.
    free: Vec<PortId>,
    sockets: BTreeMap<PortId, Socket>,
    by_key: BTreeMap<QueueKey, PortId>,
    ifaces: BTreeMap<u32, Iface<X::Link>>,
    /// How the program is attached to uplink interfaces (`uplink.xdpMode`); pod and
    /// host veths always get the native mode.
    uplink_mode: AttachMode,
}

/// Our own duplicate of a port's socket fd, so nothing here outlives the worker's.
fn dup_socket_fd(port: &Port) -> io::Result<Option<OwnedFd>> {
    port.fd().map(|fd| fd.try_clone_to_owned()).transpose()
}

impl<X: Xdp> PortRegistry<X> {
    /// A registry with `capacity` slots (0..capacity) and their counters.
    pub fn new(xdp: X, capacity: usize) -> Self {
        let capacity = capacity.min(usize::from(PortId::MAX));
        PortRegistry {
            xdp,
            counters: (0..capacity).map(|_| PortCounters::default()).collect(),
            free: (0..capacity as PortId).rev().collect(),
            sockets: BTreeMap::new(),
            by_key: BTreeMap::new(),
            ifaces: BTreeMap::new(),
            uplink_mode: AttachMode::Native,
        }
    }

    /// How the program is attached to uplink interfaces from now on.
    pub fn set_uplink_mode(&mut self, mode: AttachMode) {
        self.uplink_mode = mode;
    }

    /// The XDP interface (to write the uplink filter).
    pub fn xdp(&self) -> &X {
        &self.xdp
    }

    /// Number of slots: the size of the port table and of the counters.
    pub fn capacity(&self) -> usize {
        self.counters.len()
    }

    /// Per-slot counters, shared with the ports and workers.
    pub fn counters(&self) -> &Arc<[PortCounters]> {
        &self.counters
    }

    /// Open a socket for `key` in a free slot with `open`, register it and attach the
    /// program to the interface if it is the first socket there. The caller hands the
    /// returned [`Port`] to worker `info.worker`, or [`close`](Self::close)s and
    /// [`release`](Self::release)s the slot if it cannot.
    pub fn open(
        &mut self,
        ifname: &str,
        key: QueueKey,
        info: PortInfo,
        open: impl FnOnce(PortId, Arc<[PortCounters]>) -> Result<Port, PortError>,
    ) -> Result<Port, PortsError> {
        if self.by_key.contains_key(&key) {
            return Err(PortsError::Duplicate {
                ifname: ifname.to_string(),
                queue: key.queue,
            });
        }
        let id = self.free.pop().ok_or_else(|| PortsError::NoSlot {
            ifname: ifname.to_string(),
        })?;
        match self.open_in(id, ifname, key, info, open) {
            Ok(port) => Ok(port),
            Err(e) => {
                self.free.push(id);
                Err(e)
            }
        }
    }

    fn open_in(
        &mut self,
        id: PortId,
        ifname: &str,
        key: QueueKey,
        info: PortInfo,
        open: impl FnOnce(PortId, Arc<[PortCounters]>) -> Result<Port, PortError>,
    ) -> Result<Port, PortsError> {
        self.counters[usize::from(id)].reset();
        let port = open(id, Arc::clone(&self.counters))?;
        let fd = dup_socket_fd(&port).map_err(|source| PortsError::Dup {
            ifname: ifname.to_string(),
            source,
        })?;
        let uplink = info.kind == PortKind::Uplink;
        let (mode, attach) = if uplink {
            (MODE_VXLAN, self.uplink_mode)
        } else {
            (MODE_ALL, AttachMode::Native)
        };
        self.xdp.register(
            ifname,
            key,
            u32::from(id),
            fd.as_ref().map(AsRawFd::as_raw_fd),
            mode,
        )?;
        if !self.ifaces.contains_key(&key.ifindex) {
            match self.xdp.attach(ifname, key.ifindex, attach) {
                Ok(link) => {
                    self.ifaces.insert(
                        key.ifindex,
                        Iface {
                            _link: link,
                            sockets: 0,
                        },
                    );
                }
                Err(e) => {
                    self.xdp.unregister(key, u32::from(id));
                    return Err(e.into());
                }
            }
        }
        if let Some(i) = self.ifaces.get_mut(&key.ifindex) {
            i.sockets += 1;
        }
        self.by_key.insert(key, id);
        self.sockets.insert(
            id,
            Socket {
                id,
                ifname: ifname.to_string(),
                key,
                info,
                fd,
            },
        );
        Ok(port)
    }

    /// Unregister a socket; detach the program from its interface if it was the last
    /// one there. The slot stays taken until [`release`](Self::release).
    pub fn close(&mut self, id: PortId) -> Option<Socket> {
        let s = self.sockets.remove(&id)?;
        self.by_key.remove(&s.key);
        self.xdp.unregister(s.key, u32::from(id));
        let last = self.ifaces.get_mut(&s.key.ifindex).is_some_and(|i| {
            i.sockets -= 1;
            i.sockets == 0
        });
        if last {
            self.ifaces.remove(&s.key.ifindex); // drops the link: detached
        }
        Some(s)
    }

    /// The slot of a closed socket is free again (its worker has dropped the port).
    pub fn release(&mut self, id: PortId) {
        if !self.sockets.contains_key(&id) && !self.free.contains(&id) {
            self.free.push(id);
        }
    }

    /// Close every socket (at shutdown); slots are not reused afterwards.
    pub fn close_all(&mut self) {
        let ids: Vec<PortId> = self.sockets.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
    }

    pub fn get(&self, id: PortId) -> Option<&Socket> {
        self.sockets.get(&id)
    }

    pub fn by_key(&self, key: QueueKey) -> Option<&Socket> {
        self.by_key.get(&key).and_then(|id| self.sockets.get(id))
    }

    /// Every registered socket, by slot.
    pub fn sockets(&self) -> impl Iterator<Item = &Socket> {
        self.sockets.values()
    }

    /// Whether the program is attached to `ifindex`.
    pub fn attached(&self, ifindex: u32) -> bool {
        self.ifaces.contains_key(&ifindex)
    }

    /// The worker with the fewest sockets among `workers` (lowest id on a tie).
    pub fn least_loaded(&self, workers: usize) -> WorkerId {
        let mut load = vec![0usize; workers];
        for s in self.sockets.values() {
            if let Some(l) = load.get_mut(usize::from(s.info.worker)) {
                *l += 1;
            }
        }
        load.iter()
            .enumerate()
            .min_by_key(|(_, l)| **l)
            .map_or(0, |(i, _)| i as WorkerId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::PortKind;
    use crate::xsk::fake::fake_port;
    use crate::xsk::PortConfig;
    use std::cell::{Cell, RefCell};
    use std::net::Ipv4Addr;
    use std::rc::Rc;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Ev {
        Attach(u32),
        Detach(u32),
        Register(QueueKey, u32),
        Unregister(QueueKey, u32),
    }

    #[derive(Debug, Default)]
    struct FakeXdp {
        log: Rc<RefCell<Vec<Ev>>>,
        fail_attach: Cell<bool>,
        fail_register: Cell<bool>,
        /// (register mode, attach mode) of every call, in order.
        modes: RefCell<Vec<(Option<u32>, Option<AttachMode>)>>,
    }

    #[derive(Debug)]
    struct FakeLink(u32, Rc<RefCell<Vec<Ev>>>);

    impl Drop for FakeLink {
        fn drop(&mut self) {
            self.1.borrow_mut().push(Ev::Detach(self.0));
        }
    }

    fn libbpf_err() -> libbpf_rs::Error {
        libbpf_rs::Error::from(io::Error::from_raw_os_error(libc::EPERM))
    }

    impl Xdp for FakeXdp {
        type Link = FakeLink;
        fn attach(
            &self,
            ifname: &str,
            ifindex: u32,
            mode: AttachMode,
        ) -> Result<FakeLink, LoaderError> {
            self.modes.borrow_mut().push((None, Some(mode)));
            if self.fail_attach.get() {
                return Err(LoaderError::Attach {
                    ifname: ifname.into(),
                    ifindex,
                    source: libbpf_err(),
                });
            }
            self.log.borrow_mut().push(Ev::Attach(ifindex));
            Ok(FakeLink(ifindex, Rc::clone(&self.log)))
        }
        fn register(
            &self,
            ifname: &str,
            key: QueueKey,
            slot: u32,
            _fd: Option<RawFd>,
            mode: u32,
        ) -> Result<(), LoaderError> {
            self.modes.borrow_mut().push((Some(mode), None));
            if self.fail_register.get() {
                return Err(LoaderError::Register {
                    ifname: ifname.into(),
                    slot,
                    source: libbpf_err(),
                });
            }
            self.log.borrow_mut().push(Ev::Register(key, slot));
            Ok(())
        }
        fn unregister(&self, key: QueueKey, slot: u32) {
            self.log.borrow_mut().push(Ev::Unregister(key, slot));
        }
    }

    fn info(worker: WorkerId) -> PortInfo {
        PortInfo {
            kind: PortKind::Pod,
            worker,
            mac: [2, 0, 0, 0, 0, 1],
            peer_mac: [2, 0, 0, 0, 0, 2],
            ip: Ipv4Addr::new(10, 0, 0, 2),
        }
    }

    fn cfg() -> PortConfig {
        PortConfig {
            frames: 128,
            frame_size: 2048,
            ring_size: 64,
            tx_budget: 0,
            multi_buffer: false,
        }
    }

    fn open(
        r: &mut PortRegistry<FakeXdp>,
        ifindex: u32,
        queue: u32,
        worker: WorkerId,
    ) -> Result<Port, PortsError> {
        r.open(
            "veth",
            QueueKey { ifindex, queue },
            info(worker),
            |id, c| fake_port(id, &cfg(), c).map(|(p, _)| p),
        )
    }

    fn events(r: &PortRegistry<FakeXdp>) -> Vec<Ev> {
        r.xdp.log.borrow_mut().drain(..).collect()
    }

    fn key(ifindex: u32, queue: u32) -> QueueKey {
        QueueKey { ifindex, queue }
    }

    #[test]
    fn attaches_once_per_interface_and_one_socket_per_queue() {
        let mut r = PortRegistry::new(FakeXdp::default(), 8);
        let p0 = open(&mut r, 7, 0, 0).unwrap();
        let p1 = open(&mut r, 7, 1, 0).unwrap();
        let p2 = open(&mut r, 7, 2, 1).unwrap();
        assert_eq!(
            (p0.id(), p1.id(), p2.id()),
            (0, 1, 2),
            "lowest free slots first"
        );
        assert_eq!(
            events(&r),
            vec![
                Ev::Register(key(7, 0), 0),
                Ev::Attach(7),
                Ev::Register(key(7, 1), 1),
                Ev::Register(key(7, 2), 2),
            ]
        );
        assert!(r.attached(7));
        assert_eq!(r.by_key(key(7, 2)).map(|s| s.id), Some(2));
        assert_eq!(r.sockets().count(), 3);
        // Same queue twice: refused, nothing registered, no slot used.
        assert!(matches!(
            open(&mut r, 7, 1, 0),
            Err(PortsError::Duplicate { queue: 1, .. })
        ));
        assert!(events(&r).is_empty());
        assert_eq!(open(&mut r, 9, 0, 0).unwrap().id(), 3);
    }

    #[test]
    fn detaches_when_the_last_socket_of_an_interface_goes() {
        let mut r = PortRegistry::new(FakeXdp::default(), 8);
        let a = open(&mut r, 7, 0, 0).unwrap().id();
        let b = open(&mut r, 7, 1, 0).unwrap().id();
        let c = open(&mut r, 8, 0, 0).unwrap().id();
        events(&r);
        assert_eq!(r.close(a).map(|s| s.key), Some(key(7, 0)));
        assert_eq!(events(&r), vec![Ev::Unregister(key(7, 0), a.into())]);
        assert!(r.attached(7), "queue 1 still has a socket");
        r.close(b);
        assert_eq!(
            events(&r),
            vec![Ev::Unregister(key(7, 1), b.into()), Ev::Detach(7)]
        );
        assert!(!r.attached(7));
        assert!(r.attached(8));
        assert!(r.close(b).is_none(), "closing twice is a no-op");
        assert!(events(&r).is_empty());
        r.close_all();
        assert_eq!(
            events(&r),
            vec![Ev::Unregister(key(8, 0), c.into()), Ev::Detach(8)]
        );
    }

    #[test]
    fn slots_are_reused_only_after_release() {
        let mut r = PortRegistry::new(FakeXdp::default(), 2);
        let a = open(&mut r, 1, 0, 0).unwrap().id();
        let b = open(&mut r, 2, 0, 0).unwrap().id();
        assert!(matches!(
            open(&mut r, 3, 0, 0),
            Err(PortsError::NoSlot { .. })
        ));
        r.close(a);
        assert!(
            matches!(open(&mut r, 3, 0, 0), Err(PortsError::NoSlot { .. })),
            "a closed slot is not free until its worker let go"
        );
        r.release(a);
        r.release(a);
        r.release(b); // still registered: ignored
        assert_eq!(open(&mut r, 3, 0, 0).unwrap().id(), a);
        assert!(matches!(
            open(&mut r, 4, 0, 0),
            Err(PortsError::NoSlot { .. })
        ));
    }

    #[test]
    fn failures_leave_nothing_registered_or_attached() {
        let mut r = PortRegistry::new(FakeXdp::default(), 4);
        r.xdp.fail_attach.set(true);
        assert!(matches!(open(&mut r, 5, 0, 0), Err(PortsError::Xdp(_))));
        assert_eq!(
            events(&r),
            vec![Ev::Register(key(5, 0), 0), Ev::Unregister(key(5, 0), 0)]
        );
        assert!(!r.attached(5));
        r.xdp.fail_attach.set(false);
        r.xdp.fail_register.set(true);
        assert!(matches!(open(&mut r, 5, 0, 0), Err(PortsError::Xdp(_))));
        assert!(events(&r).is_empty());
        r.xdp.fail_register.set(false);
        let e = r.open("veth", key(5, 0), info(0), |_, _| {
            Err(PortError::Umem {
                ifname: "veth".into(),
                source: io::Error::from_raw_os_error(libc::ENOMEM),
            })
        });
        assert!(matches!(e, Err(PortsError::Open(_))));
        assert_eq!(r.sockets().count(), 0);
        // Every failed attempt gave its slot back.
        assert_eq!(open(&mut r, 5, 0, 0).unwrap().id(), 0);
    }

    #[test]
    fn counters_reset_when_a_slot_is_reused() {
        let mut r = PortRegistry::new(FakeXdp::default(), 1);
        let id = open(&mut r, 1, 0, 0).unwrap().id();
        crate::pipeline::bump(&r.counters()[0].rx_packets, 5);
        r.close(id);
        r.release(id);
        open(&mut r, 2, 0, 0).unwrap();
        assert_eq!(
            r.counters()[0]
                .rx_packets
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }

    #[test]
    fn uplink_queues_register_in_vxlan_mode_with_the_uplink_attach_mode() {
        let mut r = PortRegistry::new(FakeXdp::default(), 8);
        r.set_uplink_mode(AttachMode::Skb);
        let mut up = info(0);
        up.kind = PortKind::Uplink;
        for q in 0..2 {
            r.open("eth0", key(3, q), up, |id, c| {
                fake_port(id, &cfg(), c).map(|(p, _)| p)
            })
            .unwrap();
        }
        open(&mut r, 9, 0, 0).unwrap();
        assert_eq!(
            *r.xdp.modes.borrow(),
            vec![
                (Some(MODE_VXLAN), None),
                (None, Some(AttachMode::Skb)),
                (Some(MODE_VXLAN), None),
                (Some(MODE_ALL), None),
                (None, Some(AttachMode::Native)),
            ],
            "pod veths keep the native mode and MODE_ALL"
        );
    }

    #[test]
    fn least_loaded_worker() {
        let mut r = PortRegistry::new(FakeXdp::default(), 8);
        assert_eq!(r.least_loaded(3), 0);
        open(&mut r, 1, 0, 0).unwrap();
        open(&mut r, 2, 0, 0).unwrap();
        open(&mut r, 3, 0, 2).unwrap();
        assert_eq!(r.least_loaded(3), 1);
        open(&mut r, 4, 0, 1).unwrap();
        assert_eq!(r.least_loaded(3), 1, "1 and 2 tie at one socket: lowest id");
        assert_eq!(r.least_loaded(0), 0);
    }

    #[test]
    fn errors_map_to_protocol_kinds() {
        let e: ControlError = PortsError::NoSlot { ifname: "x".into() }.into();
        assert_eq!(e.kind, ErrorKind::Capacity);
        assert!(e.message.contains("no free port slot for x"));
        let e: ControlError = PortsError::Duplicate {
            ifname: "x".into(),
            queue: 1,
        }
        .into();
        assert_eq!(e.kind, ErrorKind::Conflict);
    }
}
