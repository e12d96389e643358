//! Lock-free single-producer single-consumer ring carrying packets from one worker to
//! another (when the egress port belongs to a different worker).
//!
//! Each worker pair has its own ring, so there is exactly one producer and one
//! consumer. A slot holds a copy of the packet (ports do not share UMEMs, so the
//! receiving worker copies it once more into a frame of the egress port). Slots are
//! allocated once; push and pop never allocate. The producer publishes `tail` with
//! `Release` after writing a slot; the consumer reads `tail` with `Acquire`, reads the
//! slot, then publishes `head` with `Release` so the producer may reuse it.

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

struct Slot {
    egress: PortId,
    /// The port the packet entered the node on (the conntrack of the receiving worker
    /// needs to know whether the flow came through the host port).
    ingress: PortId,
    len: u16,
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
        slot.data[..pkt.len()].copy_from_slice(pkt);
        self.tail = self.tail.wrapping_add(1);
        // Release: the slot is written before the consumer can see the new tail.
        self.ring.tail.store(self.tail, Ordering::Release);
        true
    }
}

impl HandoffRx {
    /// Hand up to [`BURST`] packets to `f(egress, ingress, bytes)`; returns how many.
    #[inline]
    pub fn pop(&mut self, mut f: impl FnMut(PortId, PortId, &[u8])) -> usize {
        if self.cached_tail == self.head {
            // Acquire: slots written before this tail are visible.
            self.cached_tail = self.ring.tail.load(Ordering::Acquire);
        }
        let n = self.cached_tail.wrapping_sub(self.head).min(BURST);
        for i in 0..n {
            let cell = &self.ring.slots[self.head.wrapping_add(i) % SLOTS];
            // SAFETY: the producer published this slot (tail above) and will not touch
            // it until we release it (head store below).
            let slot = unsafe { &*cell.get() };
            f(slot.egress, slot.ingress, &slot.data[..slot.len as usize]);
        }
        if n > 0 {
            self.head = self.head.wrapping_add(n);
            // Release: our reads of the slots happen before the producer reuses them.
            self.ring.head.store(self.head, Ordering::Release);
        }
        n
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
                let v = u32::from_le_bytes(d.try_into().unwrap());
                assert_eq!(v, expect);
                assert_eq!(e as u32, v % 7);
                expect += 1;
            });
        }
        producer.join().unwrap();
    }
}
