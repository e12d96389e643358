//! A port: one AF_XDP socket on one (interface, queue) with its own UMEM, or the same
//! rings in memory for tests and benches ([`super::fake`]).
//!
//! Frame accounting: every frame of the UMEM is, at any time, in exactly one place —
//! the port's free pool, the fill ring, the RX ring (kernel side), the worker's hands,
//! the TX ring, or the completion ring. RX frames go back to the pool once the worker
//! is done with them; TX frames come from the pool and return through the completion
//! ring. The pool is a `Vec` with capacity for every frame, so pushes never allocate.
//! A multi-buffer packet is several frames under one descriptor chain: the same rule
//! holds for each of its frames ([`super::chain`] has the RX/TX side of chains).
//! Counters of the port are bumped here (single writer: the owning worker).
//!
//! Frame access follows ownership: a frame the worker holds is writable only through
//! `&mut Port` ([`Port::chunk_mut`]), readable through `&Port` ([`Port::packet`]), so
//! no two slices of one frame can coexist with one of them mutable. The socket fd is
//! lent out as a [`BorrowedFd`] tied to the port's lifetime.

use std::ffi::CString;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;

use super::chain::{CHAIN_STORE, XDP_PKT_CONTD, XDP_USE_SG};
use super::ring::{RingCons, RingProd, RingRaw, XdpDesc};
use super::umem::{FrameArea, HEADROOM};
pub use crate::counters::PortId;
use crate::counters::{bump, DropReason, PortCounters, BURST};

/// Frames the kernel transmits per sendto() wakeup in copy mode (TX_BATCH_SIZE).
const KERNEL_TX_BUDGET: u32 = 32;

/// Descriptors staged for TX before a flush is forced.
const TX_STAGE: usize = BURST * 2;

/// Sizes of one port's UMEM and rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortConfig {
    pub frames: u32,
    pub frame_size: u32,
    pub ring_size: u32,
    /// Frames the kernel may transmit per TX wakeup in copy mode
    /// (`XDP_MAX_TX_SKB_BUDGET`, Linux 6.17+; its default is 32). 0 = leave it.
    pub tx_budget: u32,
    /// Bind with `XDP_USE_SG` (Linux 6.6+): packets larger than one frame arrive and
    /// leave as descriptor chains ([`super::chain`]). Off: the kernel drops them.
    pub multi_buffer: bool,
}

impl Default for PortConfig {
    /// 992 × 2 KiB frames + four 512-entry rings: ~2040 KiB per port as measured.
    fn default() -> Self {
        PortConfig {
            frames: 992,
            frame_size: 2048,
            ring_size: 512,
            tx_budget: 0,
            multi_buffer: false,
        }
    }
}

impl PortConfig {
    /// Memory a port holds: its UMEM (rings add ~ 4 × ring_size × 16 B).
    pub fn umem_bytes(&self) -> usize {
        self.frames as usize * self.frame_size as usize
    }
}

/// Failure to open a port.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("port config for {ifname}: {what}")]
    Config { ifname: String, what: &'static str },
    #[error("map UMEM for {ifname}: {source}")]
    Umem { ifname: String, source: io::Error },
    #[error("register UMEM for {ifname}: {source}")]
    UmemRegister { ifname: String, source: io::Error },
    #[error("create AF_XDP socket on {ifname} queue {queue}: {source}")]
    Socket {
        ifname: String,
        queue: u32,
        source: io::Error,
    },
}

/// The kernel objects behind a real port.
#[derive(Debug)]
struct RealXsk {
    xsk: NonNull<libxdp_sys::xsk_socket>,
    umem: NonNull<libxdp_sys::xsk_umem>,
    // libxdp keeps pointers to these and reads them again in xsk_socket__delete, so
    // they live in boxes that outlive the socket (dropped after Drop::drop runs).
    _fill: Box<libxdp_sys::xsk_ring_prod>,
    _comp: Box<libxdp_sys::xsk_ring_cons>,
    _rx: Box<libxdp_sys::xsk_ring_cons>,
    _tx: Box<libxdp_sys::xsk_ring_prod>,
    /// Owned by libxdp (closed by `xsk_socket__delete`), so kept raw and lent out only
    /// as a `BorrowedFd` bound to the port.
    fd: RawFd,
}

// SAFETY: the socket and UMEM handles are only used by the owning worker (and deleted
// by it on drop); libxdp has no thread affinity for them.
unsafe impl Send for RealXsk {}

impl Drop for RealXsk {
    fn drop(&mut self) {
        // SAFETY: both pointers came from successful libxdp create calls and are
        // deleted exactly once, socket first (it holds a UMEM reference).
        unsafe {
            libxdp_sys::xsk_socket__delete(self.xsk.as_ptr());
            libxdp_sys::xsk_umem__delete(self.umem.as_ptr());
        }
    }
}

#[derive(Debug)]
enum Backing {
    Real(RealXsk),
    Fake(
        #[allow(dead_code, reason = "keeps the in-memory rings alive")] Arc<super::fake::FakeRings>,
    ),
}

/// One port. Field order matters for drop: ring views, then the socket/UMEM
/// registration, then the mapping.
#[derive(Debug)]
pub struct Port {
    pub(super) id: PortId,
    fill: RingProd<u64>,
    comp: RingCons<u64>,
    pub(super) rx: RingCons<XdpDesc>,
    tx: RingProd<XdpDesc>,
    pub(super) pool: Vec<u64>,
    staged: [XdpDesc; TX_STAGE],
    staged_len: usize,
    staged_bytes: u64,
    /// A chain is among the staged descriptors (set by `make_room`, which every chain
    /// sender calls first): the flush then cuts at packet boundaries.
    staged_chain: bool,
    ring_size: u32,
    pub(super) counters: Arc<[PortCounters]>,
    /// Continuation buffers of the chains of the last RX burst ([`super::chain`]).
    pub(super) chain: [XdpDesc; CHAIN_STORE],
    pub(super) chain_used: usize,
    backing: Backing,
    pub(super) area: Arc<FrameArea>,
}

fn ring_raw_prod<T>(r: &libxdp_sys::xsk_ring_prod) -> Option<RingRaw<T>> {
    Some(RingRaw {
        producer: NonNull::new(r.producer.cast())?,
        consumer: NonNull::new(r.consumer.cast())?,
        flags: NonNull::new(r.flags.cast())?,
        ring: NonNull::new(r.ring.cast())?,
        size: r.size,
    })
}

fn ring_raw_cons<T>(r: &libxdp_sys::xsk_ring_cons) -> Option<RingRaw<T>> {
    Some(RingRaw {
        producer: NonNull::new(r.producer.cast())?,
        consumer: NonNull::new(r.consumer.cast())?,
        flags: NonNull::new(r.flags.cast())?,
        ring: NonNull::new(r.ring.cast())?,
        size: r.size,
    })
}

impl Port {
    fn validate(ifname: &str, cfg: &PortConfig) -> Result<(), PortError> {
        let bad = |what| {
            Err(PortError::Config {
                ifname: ifname.to_string(),
                what,
            })
        };
        if !cfg.ring_size.is_power_of_two() || cfg.ring_size < 64 {
            return bad("ring size must be a power of two ≥ 64");
        }
        if cfg.frames < cfg.ring_size * 2 - cfg.ring_size / 16 {
            return bad("frames must be at least twice the ring size (fill ring + TX)");
        }
        if !cfg.frame_size.is_power_of_two() || !(2048..=4096).contains(&cfg.frame_size) {
            return bad("frame size must be 2048 or 4096");
        }
        Ok(())
    }

    /// Open a real AF_XDP socket (copy mode, need_wakeup) on `ifname` queue `queue`.
    /// No XDP program is loaded here: the loader attaches ours and registers the fd.
    pub fn open(
        id: PortId,
        ifname: &str,
        queue: u32,
        cfg: &PortConfig,
        counters: Arc<[PortCounters]>,
    ) -> Result<Port, PortError> {
        Self::open_bound(id, ifname, queue, cfg, counters, false)
    }

    /// [`open`](Self::open), in zero-copy mode when `zero_copy` (the driver must
    /// support it for this queue, or the bind fails and says so).
    pub fn open_bound(
        id: PortId,
        ifname: &str,
        queue: u32,
        cfg: &PortConfig,
        counters: Arc<[PortCounters]>,
        zero_copy: bool,
    ) -> Result<Port, PortError> {
        let copy_flag = if zero_copy {
            libxdp_sys::XDP_ZEROCOPY
        } else {
            libxdp_sys::XDP_COPY
        };
        Self::validate(ifname, cfg)?;
        let name = CString::new(ifname).map_err(|_| PortError::Config {
            ifname: ifname.to_string(),
            what: "interface name contains NUL",
        })?;
        let area =
            FrameArea::new(cfg.frames, cfg.frame_size).map_err(|source| PortError::Umem {
                ifname: ifname.to_string(),
                source,
            })?;
        // SAFETY: plain C structs of integers and pointers; all-zero is their
        // documented "not yet created" state.
        let (mut fill, mut comp, mut rx, mut tx) = unsafe {
            (
                Box::new(std::mem::zeroed::<libxdp_sys::xsk_ring_prod>()),
                Box::new(std::mem::zeroed::<libxdp_sys::xsk_ring_cons>()),
                Box::new(std::mem::zeroed::<libxdp_sys::xsk_ring_cons>()),
                Box::new(std::mem::zeroed::<libxdp_sys::xsk_ring_prod>()),
            )
        };
        let ucfg = libxdp_sys::xsk_umem_config {
            fill_size: cfg.ring_size,
            comp_size: cfg.ring_size,
            frame_size: cfg.frame_size,
            frame_headroom: 0,
            flags: 0,
        };
        let mut umem: *mut libxdp_sys::xsk_umem = std::ptr::null_mut();
        // SAFETY: the area is a live mapping of area.len() bytes that outlives the UMEM
        // (field order in Port); fill/comp are boxed and outlive it too (RealXsk).
        let rc = unsafe {
            libxdp_sys::xsk_umem__create(
                &mut umem,
                area.as_ptr().cast(),
                area.len() as u64,
                &mut *fill,
                &mut *comp,
                &ucfg,
            )
        };
        let umem = match NonNull::new(umem) {
            Some(u) if rc == 0 => u,
            _ => {
                return Err(PortError::UmemRegister {
                    ifname: ifname.to_string(),
                    source: io::Error::from_raw_os_error(-rc.min(-1)),
                })
            }
        };
        let scfg = libxdp_sys::xsk_socket_config {
            rx_size: cfg.ring_size,
            tx_size: cfg.ring_size,
            __bindgen_anon_1: libxdp_sys::xsk_socket_config__bindgen_ty_1 {
                libxdp_flags: libxdp_sys::XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
            },
            xdp_flags: 0,
            bind_flags: (libxdp_sys::XDP_USE_NEED_WAKEUP | copy_flag) as u16
                | if cfg.multi_buffer { XDP_USE_SG } else { 0 },
        };
        let mut xsk: *mut libxdp_sys::xsk_socket = std::ptr::null_mut();
        // SAFETY: umem is live; rx/tx are boxed and outlive the socket.
        let rc = unsafe {
            libxdp_sys::xsk_socket__create(
                &mut xsk,
                name.as_ptr(),
                queue,
                umem.as_ptr(),
                &mut *rx,
                &mut *tx,
                &scfg,
            )
        };
        let Some(xsk) = NonNull::new(xsk).filter(|_| rc == 0) else {
            // SAFETY: created above, no socket uses it.
            unsafe { libxdp_sys::xsk_umem__delete(umem.as_ptr()) };
            return Err(PortError::Socket {
                ifname: ifname.to_string(),
                queue,
                source: io::Error::from_raw_os_error(-rc.min(-1)),
            });
        };
        // SAFETY: xsk is live.
        let fd = unsafe { libxdp_sys::xsk_socket__fd(xsk.as_ptr()) };
        if cfg.tx_budget > 0 {
            set_tx_budget(ifname, fd, cfg.tx_budget);
        }
        let rings = (
            ring_raw_prod(&fill),
            ring_raw_cons(&comp),
            ring_raw_cons(&rx),
            ring_raw_prod(&tx),
        );
        let backing = RealXsk {
            xsk,
            umem,
            _fill: fill,
            _comp: comp,
            _rx: rx,
            _tx: tx,
            fd,
        };
        let (Some(f), Some(c), Some(r), Some(t)) = rings else {
            drop(backing);
            return Err(PortError::Socket {
                ifname: ifname.to_string(),
                queue,
                source: io::Error::other("libxdp returned an unmapped ring"),
            });
        };
        // SAFETY: the rings are mapped until `backing` drops, which happens after the
        // ring views (field order); this port is their only user.
        let (fill, comp, rx, tx) = unsafe {
            (
                RingProd::new(f),
                RingCons::new(c),
                RingCons::new(r),
                RingProd::new(t),
            )
        };
        Ok(Self::assemble(
            id,
            fill,
            comp,
            rx,
            tx,
            cfg,
            counters,
            Backing::Real(backing),
            Arc::new(area),
        ))
    }

    /// A port over in-memory rings (see [`super::fake`]).
    pub(crate) fn with_fake_rings(
        id: PortId,
        cfg: &PortConfig,
        counters: Arc<[PortCounters]>,
        rings: Arc<super::fake::FakeRings>,
        area: Arc<FrameArea>,
    ) -> Result<Port, PortError> {
        Self::validate("fake", cfg)?;
        // SAFETY: `rings` is kept alive by the Backing for as long as the views; the
        // fake kernel holds the other ends.
        let (fill, comp, rx, tx) = unsafe {
            (
                RingProd::new(rings.fill.raw()),
                RingCons::new(rings.comp.raw()),
                RingCons::new(rings.rx.raw()),
                RingProd::new(rings.tx.raw()),
            )
        };
        Ok(Self::assemble(
            id,
            fill,
            comp,
            rx,
            tx,
            cfg,
            counters,
            Backing::Fake(rings),
            area,
        ))
    }

    #[allow(clippy::too_many_arguments, reason = "private constructor tail")]
    fn assemble(
        id: PortId,
        fill: RingProd<u64>,
        comp: RingCons<u64>,
        rx: RingCons<XdpDesc>,
        tx: RingProd<XdpDesc>,
        cfg: &PortConfig,
        counters: Arc<[PortCounters]>,
        backing: Backing,
        area: Arc<FrameArea>,
    ) -> Port {
        let mut pool = Vec::with_capacity(cfg.frames as usize);
        for i in (0..cfg.frames as u64).rev() {
            pool.push(i * cfg.frame_size as u64);
        }
        let mut port = Port {
            id,
            fill,
            comp,
            rx,
            tx,
            pool,
            staged: [XdpDesc::default(); TX_STAGE],
            staged_len: 0,
            staged_bytes: 0,
            staged_chain: false,
            ring_size: cfg.ring_size,
            counters,
            chain: [XdpDesc::default(); CHAIN_STORE],
            chain_used: 0,
            backing,
            area,
        };
        port.refill();
        port
    }

    pub fn id(&self) -> PortId {
        self.id
    }

    /// The socket fd (real ports), for the XSKMAP, poll(2) and statistics. Whoever
    /// must keep it past the port's life (the daemon's stats) dups it
    /// (`try_clone_to_owned`).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.backing {
            // SAFETY: the fd stays open until RealXsk drops (xsk_socket__delete), which
            // cannot happen while `self` is borrowed.
            Backing::Real(r) => Some(unsafe { BorrowedFd::borrow_raw(r.fd) }),
            Backing::Fake(_) => None,
        }
    }

    #[inline]
    fn counters(&self) -> &PortCounters {
        // The registry has a slot for every PortId the daemon hands out.
        &self.counters[self.id as usize]
    }

    /// The whole chunk (frame) holding `addr`, writable, and the offset of `addr` in
    /// it: the pipeline gets the headroom in front of the packet as well as the tail.
    /// `addr` must be a frame the worker holds (from `rx_burst` or `alloc`); an address
    /// outside the UMEM yields an empty chunk.
    #[inline]
    pub fn chunk_mut(&mut self, addr: u64) -> (&mut [u8], usize) {
        let (ptr, len, off) = self.area.region(addr);
        // SAFETY: the region lies inside one frame of the mapping (FrameArea::region);
        // frames reach the worker only through rx_burst/alloc, which take them from
        // the kernel/pool, and `&mut self` makes this the only slice of the port's
        // frames alive.
        let chunk = unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), len) };
        (chunk, off)
    }

    /// The bytes `d` describes (clamped to its frame), of a frame the worker holds.
    #[inline]
    pub fn packet(&self, d: &XdpDesc) -> &[u8] {
        let (ptr, len, off) = self.area.region(d.addr);
        // SAFETY: as chunk_mut, read-only: the shared borrow of self keeps chunk_mut
        // (and so any mutable slice of the frame) away while this one lives.
        let chunk = unsafe { std::slice::from_raw_parts(ptr.as_ptr(), len) };
        let end = off.saturating_add(d.len as usize).min(len);
        chunk.get(off..end).unwrap_or(&[])
    }

    /// Give a frame the worker holds back to the pool.
    #[inline]
    pub fn recycle(&mut self, addr: u64) {
        let base = self.area.frame_of(addr);
        if self.pool.len() < self.pool.capacity() {
            self.pool.push(base);
        }
    }

    /// A free frame for TX, if any: the address of its data, [`HEADROOM`] into it.
    #[inline]
    pub fn alloc(&mut self) -> Option<u64> {
        self.pool.pop().map(|b| b + HEADROOM as u64)
    }

    /// Copy `pkt` into a fresh frame of this port and stage it for TX.
    /// Returns false (frame-less drop, counted) when no frame is free.
    #[inline]
    pub fn send_copy(&mut self, pkt: &[u8]) -> bool {
        let Some(addr) = self.alloc() else {
            self.counters().count_drop(DropReason::NoFrame);
            return false;
        };
        let (chunk, off) = self.chunk_mut(addr);
        let f = chunk.get_mut(off..).unwrap_or_default();
        let len = pkt.len().min(f.len());
        f[..len].copy_from_slice(&pkt[..len]);
        self.stage_tx(XdpDesc {
            addr,
            len: len as u32,
            options: 0,
        });
        true
    }

    /// Stage a frame the worker holds for TX on this port (flushed by `flush_tx`).
    #[inline]
    pub fn stage_tx(&mut self, d: XdpDesc) {
        if self.staged_len == TX_STAGE {
            self.flush_tx();
        }
        self.staged[self.staged_len] = d;
        self.staged_len += 1;
        self.staged_bytes += d.len as u64;
    }

    /// Make room for `k` more staged descriptors (one packet's chain), flushing
    /// first if they would not fit: a chain is never split between two flushes.
    #[inline]
    pub(super) fn make_room(&mut self, k: usize) {
        if self.staged_len + k > TX_STAGE {
            self.flush_tx();
        }
        self.staged_chain = true;
    }

    /// Put staged frames on the TX ring and kick the kernel if it asked. Packets that
    /// do not fit even after the kernel drained the ring are dropped (counted
    /// `tx_ring_full`, once per packet) and their frames go back to the pool. A chain
    /// goes on the ring whole or not at all.
    pub fn flush_tx(&mut self) {
        if self.staged_len == 0 {
            return;
        }
        if self.staged_chain {
            return self.flush_tx_chains();
        }
        let n = self.staged_len;
        let mut off = 0;
        // Copy-mode AF_XDP transmits from inside sendto(), at most 32 frames per call
        // (the kernel's TX budget), so a full ring is drained by kicking, then refilled.
        for _ in 0..3 {
            let pushed = self.tx.push(&self.staged[off..n]);
            off += pushed;
            if self.tx.needs_wakeup() {
                self.kick_tx(pushed as u32);
            }
            if off == n {
                break;
            }
        }
        let mut sent_bytes = self.staged_bytes;
        for i in off..n {
            let d = self.staged[i];
            sent_bytes -= d.len as u64;
            self.recycle(d.addr);
            self.counters().count_drop(DropReason::TxRingFull);
        }
        self.staged_len = 0;
        self.staged_bytes = 0;
        let c = self.counters();
        bump(&c.tx_packets, off as u64);
        bump(&c.tx_bytes, sent_bytes);
    }

    /// [`flush_tx`](Self::flush_tx) with chains staged: pushed whole or not at all,
    /// counted per packet.
    #[cold]
    fn flush_tx_chains(&mut self) {
        self.staged_chain = false;
        let n = self.staged_len;
        let mut off = 0;
        for _ in 0..3 {
            let mut want = n - off;
            let free = self.tx.free(want as u32) as usize;
            if free < want {
                // Cut after the last complete packet that fits.
                want = self.staged[off..off + free]
                    .iter()
                    .rposition(|d| d.options & XDP_PKT_CONTD == 0)
                    .map_or(0, |p| p + 1);
            }
            let pushed = self.tx.push(&self.staged[off..off + want]);
            off += pushed;
            if self.tx.needs_wakeup() {
                self.kick_tx(pushed as u32);
            }
            if off == n {
                break;
            }
        }
        let mut sent_bytes = self.staged_bytes;
        let mut sent = 0u64;
        for i in 0..n {
            let d = self.staged[i];
            let last = d.options & XDP_PKT_CONTD == 0;
            if i < off {
                sent += last as u64;
                continue;
            }
            sent_bytes -= d.len as u64;
            self.recycle(d.addr);
            if last {
                self.counters().count_drop(DropReason::TxRingFull);
            }
        }
        self.staged_len = 0;
        self.staged_bytes = 0;
        let c = self.counters();
        bump(&c.tx_packets, sent);
        bump(&c.tx_bytes, sent_bytes);
    }

    /// Ask the kernel to transmit what is on the TX ring: repeated while it answers
    /// EAGAIN (its 32-frame budget used up, more left), as many times as this flush
    /// needs plus one for backlog. Draining the whole ring instead keeps the worker in
    /// the kernel (which runs the receiving pod's stack inline) long enough for its RX
    /// rings to overflow under TCP bursts (measured: bench/RESULTS.md).
    fn kick_tx(&self, pushed: u32) {
        if let Backing::Real(r) = &self.backing {
            let max_kicks =
                (pushed.div_ceil(KERNEL_TX_BUDGET) + 1).min(self.ring_size / KERNEL_TX_BUDGET + 1);
            for _ in 0..max_kicks {
                // SAFETY: sendto with no buffer on our own socket fd is the documented
                // AF_XDP TX wakeup.
                let rc = unsafe {
                    libc::sendto(
                        r.fd,
                        std::ptr::null(),
                        0,
                        libc::MSG_DONTWAIT,
                        std::ptr::null(),
                        0,
                    )
                };
                if rc >= 0 {
                    break;
                }
                // EAGAIN: budget exhausted with frames left → go again. EBUSY/ENOBUFS/
                // ENETDOWN: the device cannot take more now → next round.
                if std::io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN) {
                    break;
                }
            }
        }
    }

    /// Move completed TX frames back to the pool. Returns how many.
    #[inline]
    pub fn reap(&mut self) -> usize {
        let mut total = 0;
        loop {
            // Completed addresses go straight into the pool's spare capacity: no
            // scratch array to initialise, no copy.
            let len = self.pool.len();
            let room = (self.pool.capacity() - len).min(BURST);
            if room == 0 {
                return total;
            }
            self.pool.resize(len + room, 0);
            let n = self.comp.pop(&mut self.pool[len..]);
            for a in &mut self.pool[len..len + n] {
                *a = self.area.frame_of(*a);
            }
            self.pool.truncate(len + n);
            total += n;
            if n < room {
                return total;
            }
        }
    }

    /// Top up the fill ring from the pool, keeping frames back for TX.
    #[inline]
    pub fn refill(&mut self) {
        let reserve = (self.pool.capacity() as u32).saturating_sub(self.ring_size) as usize / 2;
        let spare = self.pool.len().saturating_sub(reserve);
        if spare == 0 {
            return;
        }
        let want = spare.min(self.fill.free(spare as u32) as usize);
        if want == 0 {
            return;
        }
        let start = self.pool.len() - want;
        let pushed = self.fill.push(&self.pool[start..]);
        self.pool.truncate(self.pool.len() - pushed);
        if self.fill.needs_wakeup() {
            if let Backing::Real(r) = &self.backing {
                // SAFETY: recvfrom with no buffer is the AF_XDP RX/fill wakeup.
                unsafe {
                    libc::recvfrom(
                        r.fd,
                        std::ptr::null_mut(),
                        0,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    );
                }
            }
        }
    }

    /// Frames currently in the free pool (tests, stats).
    pub fn pool_len(&self) -> usize {
        self.pool.len()
    }
}

/// `XDP_MAX_TX_SKB_BUDGET` (uapi `if_xdp.h`, Linux 6.17+).
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

/// Raise the copy-mode TX budget of a socket. A kernel without the option (or one that
/// refuses the value) keeps its default of 32; that is logged, not an error.
fn set_tx_budget(ifname: &str, fd: RawFd, budget: u32) {
    // SAFETY: setsockopt reads size_of::<u32>() bytes from `budget`.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            XDP_MAX_TX_SKB_BUDGET,
            (&budget as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::warn!(
            ifname,
            budget,
            error = %io::Error::last_os_error(),
            "XDP_MAX_TX_SKB_BUDGET not applied; the kernel's default TX budget stays"
        );
    }
}

/// Kernel ring statistics of an AF_XDP socket (`struct xdp_statistics`). The control
/// protocol has a same-shaped serde type; the daemon converts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingStats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// Kernel ring statistics of an AF_XDP socket fd (XDP_STATISTICS).
pub fn xdp_statistics(fd: BorrowedFd<'_>) -> io::Result<RingStats> {
    #[repr(C)]
    #[derive(Default)]
    struct Raw {
        rx_dropped: u64,
        rx_invalid_descs: u64,
        tx_invalid_descs: u64,
        rx_ring_full: u64,
        rx_fill_ring_empty_descs: u64,
        tx_ring_empty_descs: u64,
    }
    let mut raw = Raw::default();
    let mut len = std::mem::size_of::<Raw>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `raw`, which is that large.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SOL_XDP,
            libxdp_sys::XDP_STATISTICS as i32,
            (&mut raw as *mut Raw).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(RingStats {
        rx_dropped: raw.rx_dropped,
        rx_invalid_descs: raw.rx_invalid_descs,
        tx_invalid_descs: raw.tx_invalid_descs,
        rx_ring_full: raw.rx_ring_full,
        rx_fill_ring_empty_descs: raw.rx_fill_ring_empty_descs,
        tx_ring_empty_descs: raw.tx_ring_empty_descs,
    })
}
