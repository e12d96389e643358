//! Multi-buffer packets (issue 11): a packet larger than one UMEM frame travels as a
//! chain of descriptors, every one but the last with [`XDP_PKT_CONTD`] in `options`
//! (the socket is bound with `XDP_USE_SG`; the kernel's af_xdp.rst, "Multi-Buffer
//! Support").
//!
//! Contract of a port's chains:
//! - RX: [`Port::rx_burst`] hands out one descriptor per packet. A chain's first buffer
//!   (the head, which holds every header the pipeline reads) comes out with
//!   [`XDP_PKT_CONTD`] set and the place of its other buffers encoded in the rest of
//!   `options`; those buffers stay in the port's chain store until the next
//!   `rx_burst` and are read with [`Port::chain`]. A chain of more than [`MAX_CHAIN`]
//!   buffers (`chain_too_long`), or whose end never came because the ring ran dry
//!   (`chain_truncated`; the kernel publishes a packet's descriptors together, so this
//!   is a broken producer), is dropped and counted, and every buffer of it goes back
//!   to the pool.
//! - TX: a chain is staged and pushed on the TX ring whole or not at all (the kernel
//!   builds one skb from it and would glue a partial chain to the next packet);
//!   [`Port::send_copy_segments`] packs any list of byte slices into as few frames of
//!   this port as hold them, at most [`MAX_CHAIN`] (the kernel's copy-mode TX takes
//!   `MAX_SKB_FRAGS` + 1 buffers per packet).
//! - Frame accounting stays exact: every buffer of a dropped or forwarded chain goes
//!   back to the pool (`recycle_packet`), no allocation anywhere.

use super::port::Port;
use super::ring::XdpDesc;
use super::umem::HEADROOM;
use crate::counters::{bump, DropReason, BURST};

/// `XDP_USE_SG` (uapi `if_xdp.h`, Linux 6.6+): the socket takes multi-buffer packets.
pub const XDP_USE_SG: u16 = 1 << 4;

/// `XDP_PKT_CONTD` in a descriptor's `options`: more buffers of this packet follow.
pub const XDP_PKT_CONTD: u32 = 1;

/// Most buffers in one packet: the kernel's copy-mode TX builds one skb of at most
/// `MAX_SKB_FRAGS` (17) fragments plus its linear part.
pub const MAX_CHAIN: usize = 18;

/// Continuation descriptors one burst can leave in the store: at most [`BURST`] popped
/// in the burst plus the rest of a chain that straddles its end.
pub(super) const CHAIN_STORE: usize = BURST + MAX_CHAIN;

/// Where a head's continuation buffers are in the chain store (bits 8..16: first
/// index; 16..24: count); bit 0 stays [`XDP_PKT_CONTD`].
#[inline]
fn encode(start: usize, count: usize) -> u32 {
    XDP_PKT_CONTD | (start as u32) << 8 | (count as u32) << 16
}

#[inline]
fn decode(options: u32) -> (usize, usize) {
    (
        ((options >> 8) & 0xff) as usize,
        ((options >> 16) & 0xff) as usize,
    )
}

/// Whether `d` (as [`Port::rx_burst`] hands it out, or as staged) starts a chain.
#[inline]
pub fn is_chain(d: &XdpDesc) -> bool {
    d.options & XDP_PKT_CONTD != 0
}

/// A chain being read off the RX ring.
struct Open {
    head: XdpDesc,
    start: usize,
    count: usize,
    bytes: u64,
    bad: Option<DropReason>,
}

impl Port {
    /// Take up to `out.len()` (at most [`BURST`]) received packets, one descriptor
    /// each (chains: see the module doc). Descriptors the kernel could not have
    /// produced (outside the UMEM) are dropped and counted, never handed out.
    #[inline]
    pub fn rx_burst(&mut self, out: &mut [XdpDesc]) -> usize {
        let cap = out.len().min(BURST);
        let n = self.rx.pop(&mut out[..cap]);
        self.chain_used = 0;
        let mut kept = 0;
        let mut bytes = 0u64;
        for i in 0..n {
            let d = out[i];
            if d.options & XDP_PKT_CONTD != 0 {
                return self.rx_chains(out, i, n, kept, bytes);
            }
            match self.area.room(d.addr) {
                Some(room) if d.len as usize <= room => {
                    bytes += d.len as u64;
                    out[kept] = XdpDesc { options: 0, ..d };
                    kept += 1;
                }
                _ => self.drop_rx_buffer(d.addr, DropReason::Truncated),
            }
        }
        self.count_rx(kept, bytes);
        kept
    }

    #[inline]
    fn count_rx(&self, packets: usize, bytes: u64) {
        let c = &self.counters[self.id as usize];
        bump(&c.rx_packets, packets as u64);
        bump(&c.rx_bytes, bytes);
    }

    /// A buffer that will not be handed out: back to the pool if it is ours (an
    /// address inside the UMEM), and counted.
    fn drop_rx_buffer(&mut self, addr: u64, why: DropReason) {
        if self.area.room(addr).is_some() {
            self.recycle(addr);
        }
        self.counters[self.id as usize].count_drop(why);
    }

    /// [`rx_burst`](Self::rx_burst) from `out[i]` on, once a chain has been seen.
    #[cold]
    fn rx_chains(
        &mut self,
        out: &mut [XdpDesc],
        from: usize,
        n: usize,
        mut kept: usize,
        mut bytes: u64,
    ) -> usize {
        let mut open: Option<Open> = None;
        let mut i = from;
        let mut one = [XdpDesc::default()];
        loop {
            let d = if i < n {
                i += 1;
                out[i - 1]
            } else if open.is_some() && self.rx.pop(&mut one) == 1 {
                // The rest of a chain that straddles the burst's end.
                one[0]
            } else {
                break;
            };
            let valid = matches!(self.area.room(d.addr), Some(room) if d.len as usize <= room);
            let more = d.options & XDP_PKT_CONTD != 0;
            let Some(o) = open.as_mut() else {
                if !more {
                    if valid {
                        bytes += d.len as u64;
                        out[kept] = XdpDesc { options: 0, ..d };
                        kept += 1;
                    } else {
                        self.drop_rx_buffer(d.addr, DropReason::Truncated);
                    }
                    continue;
                }
                open = Some(Open {
                    head: XdpDesc { options: 0, ..d },
                    start: self.chain_used,
                    count: 0,
                    bytes: d.len as u64,
                    bad: (!valid).then_some(DropReason::Truncated),
                });
                continue;
            };
            o.bytes += d.len as u64;
            if !valid {
                o.bad = o.bad.or(Some(DropReason::Truncated));
            }
            if o.count + 1 < MAX_CHAIN && o.start + o.count < CHAIN_STORE {
                self.chain[o.start + o.count] = XdpDesc { options: 0, ..d };
                o.count += 1;
            } else {
                // Too long: this buffer goes back now, the stored ones with the head.
                o.bad = Some(DropReason::ChainTooLong);
                if valid {
                    self.recycle(d.addr);
                }
            }
            if more {
                continue;
            }
            let o = open.take().expect("checked above");
            match o.bad {
                None => {
                    bytes += o.bytes;
                    out[kept] = XdpDesc {
                        options: encode(o.start, o.count),
                        ..o.head
                    };
                    self.chain_used = o.start + o.count;
                    kept += 1;
                }
                Some(why) => self.drop_open(&o, why),
            }
        }
        if let Some(o) = open {
            self.drop_open(&o, DropReason::ChainTruncated);
        }
        self.count_rx(kept, bytes);
        kept
    }

    /// Give back every buffer of a chain that will not be handed out, count it once.
    fn drop_open(&mut self, o: &Open, why: DropReason) {
        for k in o.start..o.start + o.count {
            let a = self.chain[k].addr;
            if self.area.room(a).is_some() {
                self.recycle(a);
            }
        }
        self.drop_rx_buffer(o.head.addr, why);
    }

    /// The continuation buffers of a head [`rx_burst`](Self::rx_burst) handed out in
    /// this burst (empty for a single-buffer packet).
    #[inline]
    pub fn chain(&self, head: &XdpDesc) -> &[XdpDesc] {
        if !is_chain(head) {
            return &[];
        }
        let (start, count) = decode(head.options);
        self.chain.get(start..start + count).unwrap_or_default()
    }

    /// Bytes of a packet after its head buffer (0 for a single buffer).
    #[inline]
    pub fn chain_bytes(&self, head: &XdpDesc) -> usize {
        self.chain(head).iter().map(|d| d.len as usize).sum()
    }

    /// Give every buffer of a received packet back to the pool (its head and, for a
    /// chain, the rest).
    #[inline]
    pub fn recycle_packet(&mut self, head: &XdpDesc) {
        self.recycle(head.addr);
        if head.options != 0 {
            self.recycle_continuation(head);
        }
    }

    /// Give the continuation buffers of a received packet back (its head is being
    /// sent alone: a reply built in it).
    #[inline]
    pub fn recycle_continuation(&mut self, head: &XdpDesc) {
        if is_chain(head) {
            let (start, count) = decode(head.options);
            for k in start..(start + count).min(CHAIN_STORE) {
                let a = self.chain[k].addr;
                self.recycle(a);
            }
        }
    }

    /// Stage a received chain for TX on this same port (a hairpin): `head` is the
    /// (possibly rewritten) head window, its continuation buffers follow unchanged.
    pub fn stage_rx_chain(&mut self, head: XdpDesc) {
        let (start, count) = decode(head.options);
        let count = count.min(CHAIN_STORE.saturating_sub(start));
        if count == 0 {
            return self.stage_tx(XdpDesc { options: 0, ..head });
        }
        self.make_room(count + 1);
        self.stage_tx(XdpDesc {
            options: XDP_PKT_CONTD,
            ..head
        });
        for k in start..start + count {
            let d = self.chain[k];
            let options = if k + 1 < start + count {
                XDP_PKT_CONTD
            } else {
                0
            };
            self.stage_tx(XdpDesc { options, ..d });
        }
    }

    /// Copy a packet given as consecutive byte slices into as few fresh frames of this
    /// port as hold it and stage them for TX as one packet (a chain when more than one
    /// frame). `total` is the sum of the slices' lengths. Returns false, counted,
    /// when it needs more than [`MAX_CHAIN`] frames (`chain_too_long`) or the pool has
    /// too few (`no_frame`).
    pub fn send_copy_segments<'a>(
        &mut self,
        total: usize,
        segments: impl Iterator<Item = &'a [u8]>,
    ) -> bool {
        let room = self.area.frame_size() as usize - HEADROOM;
        let frames = total.div_ceil(room).max(1);
        if frames > MAX_CHAIN {
            self.counters[self.id as usize].count_drop(DropReason::ChainTooLong);
            return false;
        }
        if self.pool.len() < frames {
            self.counters[self.id as usize].count_drop(DropReason::NoFrame);
            return false;
        }
        self.make_room(frames);
        let mut addrs = [0u64; MAX_CHAIN];
        for a in &mut addrs[..frames] {
            // Checked above: the pool holds at least `frames`.
            *a = self.alloc().unwrap_or_default();
        }
        let mut segments = segments;
        let mut seg: &[u8] = &[];
        let mut left = total;
        for (f, &addr) in addrs[..frames].iter().enumerate() {
            let want = left.min(room);
            let (chunk, off) = self.chunk_mut(addr);
            // `want` ≤ room, so the window is inside the chunk.
            let dst = chunk.get_mut(off..off + want).unwrap_or_default();
            let used = super::gather(dst, &mut seg, &mut segments);
            left -= want;
            let options = if f + 1 < frames { XDP_PKT_CONTD } else { 0 };
            self.stage_tx(XdpDesc {
                addr,
                len: used as u32,
                options,
            });
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_and_keep_the_kernel_bit() {
        for (s, c) in [(0, 1), (5, 17), (CHAIN_STORE - 1, MAX_CHAIN - 1)] {
            let o = encode(s, c);
            assert_eq!(o & XDP_PKT_CONTD, XDP_PKT_CONTD);
            assert_eq!(decode(o), (s, c));
        }
    }
}
