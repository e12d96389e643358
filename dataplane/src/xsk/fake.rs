//! In-memory ports: the real [`Port`] ring code over rings and a UMEM that live in this
//! process, with a [`FakeKernel`] playing the kernel's side (consume fill, produce RX,
//! consume TX, produce completions) through the same ring protocol. Pipeline tests and
//! the forward-path benchmark run the worker's code unchanged on these.

use std::sync::Arc;

use super::port::{Port, PortConfig, PortError};
use super::ring::{OwnedRing, RingCons, RingProd, XdpDesc};
use super::umem::{FrameArea, HEADROOM};
use crate::counters::{PortCounters, PortId};

/// Where the kernel would put received data inside a fill frame (XDP headroom).
pub const RX_HEADROOM: u64 = HEADROOM as u64;

/// The four rings of a fake port.
#[derive(Debug)]
pub struct FakeRings {
    pub(crate) fill: OwnedRing<u64>,
    pub(crate) comp: OwnedRing<u64>,
    pub(crate) rx: OwnedRing<XdpDesc>,
    pub(crate) tx: OwnedRing<XdpDesc>,
}

/// The kernel's side of a fake port.
#[derive(Debug)]
pub struct FakeKernel {
    fill: RingCons<u64>,
    comp: RingProd<u64>,
    rx: RingProd<XdpDesc>,
    tx: RingCons<XdpDesc>,
    area: Arc<FrameArea>,
    _rings: Arc<FakeRings>,
    /// A TX chain being gathered by [`FakeKernel::drain_tx`] (allocated once).
    tx_chain: Vec<u8>,
}

/// Make a port over in-memory rings and the fake kernel that drives it.
pub fn fake_port(
    id: PortId,
    cfg: &PortConfig,
    counters: Arc<[PortCounters]>,
) -> Result<(Port, FakeKernel), PortError> {
    let rings = Arc::new(FakeRings {
        fill: OwnedRing::new(cfg.ring_size),
        comp: OwnedRing::new(cfg.ring_size),
        rx: OwnedRing::new(cfg.ring_size),
        tx: OwnedRing::new(cfg.ring_size),
    });
    let area = Arc::new(
        FrameArea::new(cfg.frames, cfg.frame_size).map_err(|source| PortError::Umem {
            ifname: "fake".into(),
            source,
        })?,
    );
    // SAFETY: the rings live as long as both ends (each holds the Arc); the kernel
    // side is the only consumer of fill/TX and producer of RX/completion.
    let (fill, comp, rx, tx) = unsafe {
        (
            RingCons::new(rings.fill.raw()),
            RingProd::new(rings.comp.raw()),
            RingProd::new(rings.rx.raw()),
            RingCons::new(rings.tx.raw()),
        )
    };
    let kernel = FakeKernel {
        fill,
        comp,
        rx,
        tx,
        area: Arc::clone(&area),
        _rings: Arc::clone(&rings),
        tx_chain: Vec::with_capacity(65536 + 14),
    };
    let port = Port::with_fake_rings(id, cfg, counters, rings, area)?;
    Ok((port, kernel))
}

impl FakeKernel {
    /// Deliver one frame to the port as the kernel would (copy into a fill frame, post
    /// an RX descriptor). Returns false if the fill ring was empty or the RX ring full
    /// (the kernel would count `rx_fill_ring_empty` / `rx_ring_full`).
    pub fn inject(&mut self, pkt: &[u8]) -> bool {
        self.inject_many(pkt, 1) == 1
    }

    /// Deliver `n` copies of `pkt`; returns how many made it.
    pub fn inject_many(&mut self, pkt: &[u8], n: usize) -> usize {
        let mut bases = [0u64; 64];
        let mut done = 0;
        while done < n {
            let want = (n - done).min(bases.len());
            let free = self.rx.free(want as u32) as usize;
            let got = self.fill.pop(&mut bases[..want.min(free)]);
            if got == 0 {
                break;
            }
            let mut descs = [XdpDesc::default(); 64];
            for i in 0..got {
                let addr = bases[i] + RX_HEADROOM;
                let (ptr, size, off) = self.area.region(addr);
                let len = pkt.len().min(size - off);
                // SAFETY: the frame came off the fill ring, so the "kernel" owns it
                // until it posts the RX descriptor below and nothing else writes or
                // reads it; [off, off+len) lies inside the frame's region.
                unsafe {
                    std::ptr::copy_nonoverlapping(pkt.as_ptr(), ptr.as_ptr().add(off), len);
                }
                descs[i] = XdpDesc {
                    addr,
                    len: len as u32,
                    options: 0,
                };
            }
            let pushed = self.rx.push(&descs[..got]);
            debug_assert_eq!(pushed, got, "checked free space above");
            done += got;
        }
        done
    }

    /// Deliver one packet as the kernel's copy-mode RX does on a socket bound with
    /// `XDP_USE_SG`: split over as many fill frames as it needs (each filled behind the
    /// XDP headroom), every descriptor but the last with `XDP_PKT_CONTD`; with
    /// `truncate`, only the first `truncate` of them are posted (a broken producer) and
    /// the rest go back to the fill ring. Returns the descriptors posted, 0 when the
    /// fill or RX ring had too little room.
    pub fn inject_chain(&mut self, pkt: &[u8], truncate: Option<usize>) -> usize {
        let room = self.area.frame_size() as usize - RX_HEADROOM as usize;
        let k = pkt.len().div_ceil(room).max(1);
        let mut bases = [0u64; 64];
        if k > bases.len() || (self.rx.free(k as u32) as usize) < k {
            return 0;
        }
        // The consumer reloads the producer index only once its cache is empty.
        let mut got = 0;
        while got < k {
            let n = self.fill.pop(&mut bases[got..k]);
            if n == 0 {
                break;
            }
            got += n;
        }
        if got < k {
            // Not enough fill frames: the kernel would count rx_fill_ring_empty. The
            // frames taken go back to the port through the completion ring.
            for b in &bases[..got] {
                let done = self.comp.push(&[*b]);
                debug_assert_eq!(done, 1);
            }
            return 0;
        }
        let post = truncate.unwrap_or(k).min(k);
        let mut descs = [XdpDesc::default(); 64];
        for (i, part) in pkt.chunks(room).enumerate().take(k) {
            let addr = bases[i] + RX_HEADROOM;
            let (ptr, _size, off) = self.area.region(addr);
            // SAFETY: the frame came off the fill ring, so the "kernel" owns it until
            // it posts the RX descriptor; [off, off + part.len()) is inside the frame.
            unsafe {
                std::ptr::copy_nonoverlapping(part.as_ptr(), ptr.as_ptr().add(off), part.len());
            }
            descs[i] = XdpDesc {
                addr,
                len: part.len() as u32,
                options: if i + 1 < k {
                    super::chain::XDP_PKT_CONTD
                } else {
                    0
                },
            };
        }
        let pushed = self.rx.push(&descs[..post]);
        debug_assert_eq!(pushed, post, "checked free space above");
        // What was not posted is handed back as completed TX would be: into the pool.
        for b in &bases[post..k] {
            let done = self.comp.push(&[*b]);
            debug_assert_eq!(done, 1);
        }
        post
    }

    /// Take every packet the port transmitted, calling `f` with its bytes (a chain's
    /// buffers concatenated), and complete every frame. Returns how many frames.
    pub fn drain_tx(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let mut descs = [XdpDesc::default(); 64];
        let mut total = 0;
        loop {
            let n = self.tx.pop(&mut descs);
            if n == 0 {
                return total;
            }
            let mut addrs = [0u64; 64];
            for i in 0..n {
                let (ptr, size, off) = self.area.region(descs[i].addr);
                // SAFETY: the frame is on the TX ring: the "kernel" owns it until it
                // posts the completion below, and the port does not touch it meanwhile;
                // the slice stays inside the frame's region.
                let fr = unsafe { std::slice::from_raw_parts(ptr.as_ptr().add(off), size - off) };
                let len = (descs[i].len as usize).min(fr.len());
                let more = descs[i].options & super::chain::XDP_PKT_CONTD != 0;
                if more || !self.tx_chain.is_empty() {
                    self.tx_chain.extend_from_slice(&fr[..len]);
                    if !more {
                        f(&self.tx_chain);
                        self.tx_chain.clear();
                    }
                } else {
                    f(&fr[..len]);
                }
                addrs[i] = descs[i].addr;
            }
            let done = self.comp.push(&addrs[..n]);
            debug_assert_eq!(done, n, "completion ring is as large as the TX ring");
            total += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::PortCounters;
    use std::sync::atomic::Ordering;

    fn counters() -> Arc<[PortCounters]> {
        (0..4).map(|_| PortCounters::default()).collect()
    }

    #[test]
    fn frames_go_round_without_loss() {
        let cfg = PortConfig {
            frames: 256,
            frame_size: 2048,
            ring_size: 64,
            tx_budget: 0,
            multi_buffer: false,
        };
        let c = counters();
        let (mut port, mut k) = fake_port(1, &cfg, Arc::clone(&c)).unwrap();
        let pkt = [0xabu8; 60];
        let mut descs = [XdpDesc::default(); 64];
        for _ in 0..1000 {
            assert_eq!(k.inject_many(&pkt, 40), 40);
            let n = port.rx_burst(&mut descs);
            assert_eq!(n, 40);
            for d in &descs[..n] {
                assert_eq!(port.packet(d), &pkt[..]);
                port.stage_tx(*d);
            }
            port.flush_tx();
            let mut seen = 0;
            assert_eq!(
                k.drain_tx(|b| {
                    assert_eq!(b, &pkt[..]);
                    seen += 1
                }),
                40
            );
            assert_eq!(seen, 40);
            port.reap();
            port.refill();
        }
        assert_eq!(c[1].rx_packets.load(Ordering::Relaxed), 40_000);
        assert_eq!(c[1].tx_packets.load(Ordering::Relaxed), 40_000);
        // Every frame is back in the pool or on the fill ring.
        assert_eq!(port.pool_len() + 64, 256);
    }

    #[test]
    fn tx_ring_full_is_a_counted_drop_and_frames_come_back() {
        let cfg = PortConfig {
            frames: 512,
            frame_size: 2048,
            ring_size: 64,
            tx_budget: 0,
            multi_buffer: false,
        };
        let c = counters();
        let (mut port, mut k) = fake_port(2, &cfg, Arc::clone(&c)).unwrap();
        for _ in 0..100 {
            assert!(port.send_copy(&[1u8; 64]));
        }
        port.flush_tx();
        assert_eq!(c[2].tx_packets.load(Ordering::Relaxed), 64);
        assert_eq!(
            c[2].drops[crate::counters::DropReason::TxRingFull as usize].load(Ordering::Relaxed),
            36
        );
        assert_eq!(k.drain_tx(|_| {}), 64);
        port.reap();
        port.refill();
        assert_eq!(port.pool_len() + 64, 512);
    }
}
