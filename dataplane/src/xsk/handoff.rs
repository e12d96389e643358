//! Lock-free single-producer single-consumer ring carrying packets from one worker to
//! another (when the egress port belongs to a different worker).
//!
//! Each worker pair has its own ring, so there is exactly one producer and one
//! consumer. A slot holds a copy of the packet (ports do not share UMEMs, so the
//! receiving worker copies it once more into a frame of the egress port). Slots are
//! allocated once; push and pop never allocate. The producer publishes `tail` with
//! `Release` after writing a slot; the consumer reads `tail` with `Acquire`, reads the
//! slot, then publishes `head` with `Release` so the producer may reuse it.
//!
//! A packet larger than a slot (a frame of a 4 KiB UMEM, or a multi-buffer chain,
//! issue 11) takes consecutive slots, every one but the last marked `more`; they are
//! published together, so the consumer always sees whole packets.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use super::port::PortId;
use crate::counters::BURST;

/// Largest packet a slot carries (a frame's data area is at most this).
pub const SLOT_BYTES: usize = 2048;

/// Slots per ring.
pub const SLOTS: usize = 256;

/// Most slots one packet takes: a 65535-byte IPv4 packet with its Ethernet header.
pub const MAX_PIECES: usize = (65535 + 14usize).div_ceil(SLOT_BYTES);

struct Slot {
    egress: PortId,
    /// The port the packet entered the node on (the conntrack of the receiving worker
    /// needs to know whether the flow came through the host port).
    ingress: PortId,
    len: u16,
    /// The packet goes on in the next slot.
    more: bool,
    data: [u8; SLOT_BYTES],
}

struct Ring {
    head: CachePadded<AtomicUsize>,
    tail: CachePadded<AtomicUsize>,
    slots: Box<[UnsafeCell<Slot>]>,
}

// SAFETY: slot contents are only accessed by the producer before publishing `tail`
// and by the consumer after observing it (and symmetrically for `head`), so no slot
// is ever accessed from two threads at once.
unsafe impl Sync for Ring {}
// SAFETY: plain heap memory.
unsafe impl Send for Ring {}

/// Producer end.
pub struct HandoffTx {
    ring: Arc<Ring>,
    tail: usize,
    cached_head: usize,
}

/// Consumer end.
pub struct HandoffRx {
    ring: Arc<Ring>,
    head: usize,
    cached_tail: usize,
}

impl std::fmt::Debug for HandoffTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandoffTx")
            .field("tail", &self.tail)
            .finish()
    }
}

impl std::fmt::Debug for HandoffRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandoffRx")
            .field("head", &self.head)
            .finish()
    }
}

/// A new ring.
pub fn channel() -> (HandoffTx, HandoffRx) {
    let slots = (0..SLOTS)
        .map(|_| {
            UnsafeCell::new(Slot {
                egress: 0,
                ingress: 0,
                len: 0,
                more: false,
                data: [0; SLOT_BYTES],
            })
        })
        .collect();
    let ring = Arc::new(Ring {
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
        slots,
    });
    (
        HandoffTx {
            ring: Arc::clone(&ring),
            tail: 0,
            cached_head: 0,
        },
        HandoffRx {
            ring,
            head: 0,
            cached_tail: 0,
        },
    )
}

impl HandoffTx {
    /// Copy `pkt`, which entered on `ingress`, into the ring for `egress`. False when the ring is full (the caller
    /// counts `handoff_full`) or the packet is larger than a slot.
    #[inline]
    pub fn push(&mut self, egress: PortId, ingress: PortId, pkt: &[u8]) -> bool {
        if pkt.len() > SLOT_BYTES {
            return false;
        }
        if self.tail.wrapping_sub(self.cached_head) == SLOTS {
            // Acquire: the consumer is done reading the slots it released.
            self.cached_head = self.ring.head.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.cached_head) == SLOTS {
                return false;
            }
        }
        let cell = &self.ring.slots[self.tail % SLOTS];
        // SAFETY: the slot is between head and tail+SLOTS, so the consumer is not
        // reading it (see the module doc); we are the only producer.
        let slot = unsafe { &mut *cell.get() };
        slot.egress = egress;
        slot.ingress = ingress;
        slot.len = pkt.len() as u16;
        slot.more = false;
        slot.data[..pkt.len()].copy_from_slice(pkt);
        self.tail = self.tail.wrapping_add(1);
        // Release: the slot is written before the consumer can see the new tail.
        self.ring.tail.store(self.tail, Ordering::Release);
        true
    }

    /// Copy a packet of `total` bytes given as consecutive slices (a chain's buffers),
    /// which entered on `ingress`, into as many slots for `egress` as it needs, all
    /// published at once. False when the ring has too few free slots or the packet
    /// needs more than [`MAX_PIECES`].
    pub fn push_segments<'a>(
        &mut self,
        egress: PortId,
        ingress: PortId,
        total: usize,
        segments: impl Iterator<Item = &'a [u8]>,
    ) -> bool {
        let pieces = total.div_ceil(SLOT_BYTES).max(1);
        if pieces > MAX_PIECES {
            return false;
        }
        if SLOTS - self.tail.wrapping_sub(self.cached_head) < pieces {
            // Acquire: the consumer is done reading the slots it released.
            self.cached_head = self.ring.head.load(Ordering::Acquire);
            if SLOTS - self.tail.wrapping_sub(self.cached_head) < pieces {
                return false;
            }
        }
        let mut segments = segments;
        let mut seg: &[u8] = &[];
        let mut left = total;
        for p in 0..pieces {
            let cell = &self.ring.slots[self.tail.wrapping_add(p) % SLOTS];
            // SAFETY: the slot is between head and tail+SLOTS (checked above), so the
            // consumer is not reading it; we are the only producer.
            let slot = unsafe { &mut *cell.get() };
            let want = left.min(SLOT_BYTES);
            let used = super::gather(&mut slot.data[..want], &mut seg, &mut segments);
            left -= want;
            slot.egress = egress;
            slot.ingress = ingress;
            slot.len = used as u16;
            slot.more = p + 1 < pieces;
        }
        self.tail = self.tail.wrapping_add(pieces);
        // Release: the slots are written before the consumer can see the new tail.
        self.ring.tail.store(self.tail, Ordering::Release);
        true
    }
}

impl HandoffRx {
    /// Hand up to [`BURST`] packets to `f(egress, ingress, pieces)`: a packet is
    /// `pieces` concatenated (one slice unless it took several slots); returns how
    /// many packets.
    #[inline]
    pub fn pop(&mut self, mut f: impl FnMut(PortId, PortId, &[&[u8]])) -> usize {
        if self.cached_tail == self.head {
            // Acquire: slots written before this tail are visible.
            self.cached_tail = self.ring.tail.load(Ordering::Acquire);
        }
        let avail = self.cached_tail.wrapping_sub(self.head);
        if avail == 0 {
            return 0;
        }
        let mut parts: [&[u8]; MAX_PIECES] = [&[]; MAX_PIECES];
        let (mut used, mut packets, mut k) = (0, 0, 0);
        while used < avail && packets < BURST {
            let cell = &self.ring.slots[self.head.wrapping_add(used) % SLOTS];
            used += 1;
            // SAFETY: the producer published this slot (tail above) and will not touch
            // it until we release it (head store below).
            let slot = unsafe { &*cell.get() };
            parts[k] = &slot.data[..(slot.len as usize).min(SLOT_BYTES)];
            k += 1;
            // The producer writes at most MAX_PIECES slots per packet.
            if slot.more && k < MAX_PIECES && used < avail {
                continue;
            }
            f(slot.egress, slot.ingress, &parts[..k]);
            packets += 1;
            k = 0;
        }
        if used > 0 {
            self.head = self.head.wrapping_add(used);
            // Release: our reads of the slots happen before the producer reuses them.
            self.ring.head.store(self.head, Ordering::Release);
        }
        packets
    }

    /// Whether anything is waiting.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.ring.tail.load(Ordering::Acquire) == self.head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_thread_order_and_capacity() {
        let (mut tx, mut rx) = channel();
        for i in 0..SLOTS {
            assert!(tx.push(i as PortId, (i + 1) as PortId, &[i as u8; 10]));
        }
        assert!(!tx.push(0, 0, &[0; 10]), "full");
        let mut next = 0usize;
        while rx.pop(|e, from, d| {
            let d = d[0];
            assert_eq!(e as usize, next);
            assert_eq!(from as usize, next + 1);
            assert_eq!(d, &[next as u8; 10]);
            next += 1;
        }) > 0
        {}
        assert_eq!(next, SLOTS);
        assert!(rx.is_empty());
        assert!(!tx.push(0, 0, &[0; SLOT_BYTES + 1]));
    }

    #[test]
    fn a_packet_larger_than_a_slot_takes_several_and_comes_out_whole() {
        let (mut tx, mut rx) = channel();
        let big: Vec<u8> = (0..9014u32).map(|i| i as u8).collect();
        let (a, b) = big.split_at(3000);
        assert!(tx.push(1, 2, &[7; 10]));
        assert!(tx.push_segments(3, 4, big.len(), [a, b].into_iter()));
        assert!(tx.push_segments(5, 6, 100, [&big[..100]].into_iter()));
        let mut got = Vec::new();
        assert_eq!(
            rx.pop(|e, from, parts| got.push((e, from, parts.concat()))),
            3
        );
        assert_eq!(got[0], (1, 2, vec![7; 10]));
        assert_eq!(got[1], (3, 4, big.clone()));
        assert_eq!(got[2], (5, 6, big[..100].to_vec()));
        assert!(rx.is_empty());
        // Not enough free slots: refused whole, nothing published.
        for _ in 0..SLOTS - 2 {
            assert!(tx.push(0, 0, &[0; 10]));
        }
        assert!(!tx.push_segments(3, 4, big.len(), [&big[..]].into_iter()));
        let mut n = 0;
        while rx.pop(|_, _, p| {
            assert_eq!(p.len(), 1);
            n += 1;
        }) > 0
        {}
        assert_eq!(n, SLOTS - 2);
        assert!(!tx.push_segments(0, 0, 65536 + 14 + SLOT_BYTES, [&big[..]].into_iter()));
    }

    #[test]
    fn two_threads_deliver_everything_in_order() {
        let (mut tx, mut rx) = channel();
        const N: u32 = 200_000;
        let producer = std::thread::spawn(move || {
            let mut i = 0u32;
            while i < N {
                if tx.push((i % 7) as PortId, 0, &i.to_le_bytes()) {
                    i += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        let mut expect = 0u32;
        while expect < N {
            rx.pop(|e, _, d| {
                let v = u32::from_le_bytes(d[0].try_into().unwrap());
                assert_eq!(v, expect);
                assert_eq!(e as u32, v % 7);
                expect += 1;
            });
        }
        producer.join().unwrap();
    }
}
