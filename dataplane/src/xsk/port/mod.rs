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
//!
//! Layout: this file holds the port and its data path (RX, TX staging and flush,
//! completion, refill); `open` creates the kernel objects (or fake rings) and
//! assembles a port; `stats` reads the kernel's ring statistics.

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

mod open;
mod stats;

use open::RealXsk;
pub use stats::{xdp_statistics, RingStats};

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

impl Port {
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
