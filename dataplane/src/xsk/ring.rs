//! AF_XDP ring transactions, the single place that touches shared ring memory.
//!
//! A ring is a power-of-two array plus a producer and a consumer index shared with the
//! other side (the kernel, or the fake kernel of [`super::fake`]). The producer writes
//! entries, then publishes the new producer index with `Release`; the consumer reads
//! the producer index with `Acquire`, reads entries, then publishes its consumer index
//! with `Release`, which the producer reads with `Acquire` before reusing slots. Both
//! sides cache the other's index and only reload it when the cache says the ring is
//! full/empty, so a burst costs one acquire load and one release store per side.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// An RX/TX ring entry; same layout as the kernel's `struct xdp_desc`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct XdpDesc {
    /// Offset of the packet's first byte in the UMEM.
    pub addr: u64,
    /// Packet length.
    pub len: u32,
    pub options: u32,
}

/// Raw pointers of one ring, as the kernel (or the fake) laid it out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RingRaw<T> {
    pub producer: NonNull<AtomicU32>,
    pub consumer: NonNull<AtomicU32>,
    pub flags: NonNull<AtomicU32>,
    pub ring: NonNull<T>,
    pub size: u32,
}

/// The producing side of a ring.
#[derive(Debug)]
pub struct RingProd<T> {
    raw: RingRaw<T>,
    mask: u32,
    cached_prod: u32,
    cached_cons: u32,
}

/// The consuming side of a ring.
#[derive(Debug)]
pub struct RingCons<T> {
    raw: RingRaw<T>,
    mask: u32,
    cached_prod: u32,
    cached_cons: u32,
}

// SAFETY: a ring end is used by exactly one thread at a time (the worker owning the
// port); moving it to that thread is fine. The shared indices are atomics.
unsafe impl<T: Send> Send for RingProd<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for RingCons<T> {}

const XDP_RING_NEED_WAKEUP: u32 = 1;

impl<T: Copy> RingProd<T> {
    /// # Safety
    /// `raw` must describe a live ring of `raw.size` (a power of two) entries that stays
    /// mapped for the life of this value, with this value its only producer.
    pub(crate) unsafe fn new(raw: RingRaw<T>) -> Self {
        // SAFETY: caller guarantees the indices are mapped.
        let (prod, cons) = unsafe {
            (
                raw.producer.as_ref().load(Ordering::Relaxed),
                raw.consumer.as_ref().load(Ordering::Acquire),
            )
        };
        RingProd {
            raw,
            mask: raw.size - 1,
            cached_prod: prod,
            cached_cons: cons.wrapping_add(raw.size),
        }
    }

    #[inline]
    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: mapped for our lifetime (constructor contract).
        unsafe { self.raw.consumer.as_ref() }
    }

    #[inline]
    fn producer(&self) -> &AtomicU32 {
        // SAFETY: mapped for our lifetime (constructor contract).
        unsafe { self.raw.producer.as_ref() }
    }

    /// Free slots, reloading the consumer index only if fewer than `want` are cached.
    #[inline]
    pub fn free(&mut self, want: u32) -> u32 {
        let free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free >= want {
            return free;
        }
        // Acquire: the consumer finished reading the slots it released.
        self.cached_cons = self
            .consumer()
            .load(Ordering::Acquire)
            .wrapping_add(self.raw.size);
        self.cached_cons.wrapping_sub(self.cached_prod)
    }

    /// Produce as many of `items` as fit; returns how many were produced.
    #[inline]
    pub fn push(&mut self, items: &[T]) -> usize {
        let n = (self.free(items.len() as u32) as usize).min(items.len());
        if n == 0 {
            return 0;
        }
        for (i, item) in items[..n].iter().enumerate() {
            let idx = (self.cached_prod.wrapping_add(i as u32) & self.mask) as usize;
            // SAFETY: idx <= mask < size, and the slot is ours: free() proved the
            // consumer has released it.
            unsafe { self.raw.ring.as_ptr().add(idx).write(*item) };
        }
        self.cached_prod = self.cached_prod.wrapping_add(n as u32);
        // Release: the entries above are visible before the new producer index.
        self.producer().store(self.cached_prod, Ordering::Release);
        n
    }

    /// Whether the other side asked to be woken (need_wakeup).
    #[inline]
    pub fn needs_wakeup(&self) -> bool {
        // SAFETY: mapped for our lifetime.
        unsafe { self.raw.flags.as_ref() }.load(Ordering::Relaxed) & XDP_RING_NEED_WAKEUP != 0
    }
}

impl<T: Copy> RingCons<T> {
    /// # Safety
    /// As [`RingProd::new`], with this value the ring's only consumer.
    pub(crate) unsafe fn new(raw: RingRaw<T>) -> Self {
        // SAFETY: caller guarantees the indices are mapped.
        let (prod, cons) = unsafe {
            (
                raw.producer.as_ref().load(Ordering::Acquire),
                raw.consumer.as_ref().load(Ordering::Relaxed),
            )
        };
        RingCons {
            raw,
            mask: raw.size - 1,
            cached_prod: prod,
            cached_cons: cons,
        }
    }

    /// Consume up to `out.len()` entries; returns how many.
    #[inline]
    pub fn pop(&mut self, out: &mut [T]) -> usize {
        let mut avail = self.cached_prod.wrapping_sub(self.cached_cons);
        if avail == 0 {
            // SAFETY: mapped for our lifetime.
            // Acquire: entries written before this producer index are visible.
            self.cached_prod = unsafe { self.raw.producer.as_ref() }.load(Ordering::Acquire);
            avail = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        let n = (avail as usize).min(out.len());
        if n == 0 {
            return 0;
        }
        for (i, slot) in out[..n].iter_mut().enumerate() {
            let idx = (self.cached_cons.wrapping_add(i as u32) & self.mask) as usize;
            // SAFETY: idx < size, and the producer published this entry (index above).
            *slot = unsafe { self.raw.ring.as_ptr().add(idx).read() };
        }
        self.cached_cons = self.cached_cons.wrapping_add(n as u32);
        // SAFETY: mapped for our lifetime.
        // Release: our reads of the entries happen before the producer may reuse them.
        unsafe { self.raw.consumer.as_ref() }.store(self.cached_cons, Ordering::Release);
        n
    }

    /// Whether the other side asked to be woken (need_wakeup).
    #[inline]
    pub fn needs_wakeup(&self) -> bool {
        // SAFETY: mapped for our lifetime.
        unsafe { self.raw.flags.as_ref() }.load(Ordering::Relaxed) & XDP_RING_NEED_WAKEUP != 0
    }
}

/// Ring memory owned by this process (fake ports and tests): indices and entries in
/// one heap allocation laid out like a kernel ring.
#[derive(Debug)]
pub(crate) struct OwnedRing<T> {
    producer: Box<AtomicU32>,
    consumer: Box<AtomicU32>,
    flags: Box<AtomicU32>,
    entries: Box<[std::cell::UnsafeCell<T>]>,
}

// SAFETY: the two sides of an owned ring only meet through the ring protocol: entries
// are written by the producer before a Release store of the producer index and read by
// the consumer after an Acquire load of it (and symmetrically for the consumer index).
unsafe impl<T: Send> Sync for OwnedRing<T> {}
// SAFETY: plain heap memory.
unsafe impl<T: Send> Send for OwnedRing<T> {}

impl<T: Copy + Default> OwnedRing<T> {
    pub fn new(size: u32) -> Self {
        assert!(size.is_power_of_two(), "ring size must be a power of two");
        OwnedRing {
            producer: Box::new(AtomicU32::new(0)),
            consumer: Box::new(AtomicU32::new(0)),
            flags: Box::new(AtomicU32::new(0)),
            entries: (0..size)
                .map(|_| std::cell::UnsafeCell::new(T::default()))
                .collect(),
        }
    }

    /// Raw view; valid while `self` lives (the boxes never move their contents).
    pub fn raw(&self) -> RingRaw<T> {
        RingRaw {
            producer: NonNull::from(&*self.producer),
            consumer: NonNull::from(&*self.consumer),
            flags: NonNull::from(&*self.flags),
            // UnsafeCell<T> is repr(transparent): writing through this pointer is allowed.
            ring: NonNull::new(self.entries.as_ptr() as *mut T)
                .expect("boxed slice pointer is non-null"),
            size: self.entries.len() as u32,
        }
    }

    #[cfg(test)]
    pub fn set_need_wakeup(&self, on: bool) {
        self.flags
            .store(if on { XDP_RING_NEED_WAKEUP } else { 0 }, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produce_consume_wraps_and_respects_capacity() {
        let mem = OwnedRing::<u64>::new(8);
        // SAFETY: `mem` outlives both ends, one producer and one consumer.
        let (mut p, mut c) = unsafe { (RingProd::new(mem.raw()), RingCons::new(mem.raw())) };
        let mut out = [0u64; 16];
        for round in 0..10u64 {
            let items: Vec<u64> = (0..12).map(|i| round * 100 + i).collect();
            assert_eq!(p.push(&items), 8, "only 8 fit");
            assert_eq!(p.push(&items), 0);
            assert_eq!(c.pop(&mut out[..5]), 5);
            assert_eq!(&out[..5], &items[..5]);
            assert_eq!(c.pop(&mut out), 3);
            assert_eq!(&out[..3], &items[5..8]);
            assert_eq!(c.pop(&mut out), 0);
        }
        mem.set_need_wakeup(true);
        assert!(p.needs_wakeup());
    }
}
