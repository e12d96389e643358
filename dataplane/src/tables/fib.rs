//! Exact-match forwarding table: a local pod's address (an IPv4 /32, or an IPv6 /128
//! with `Fib<u128>`) to the port that owns it.
//!
//! Generic over the address family's key ([`IpKey`]), one instance per family, so an
//! IPv4 table keeps 4-byte keys (see `packet::addr` for why not one 16-byte key).
//! Open addressing with linear probing over a power-of-two slot array, at most half
//! full, built once and never mutated (a new snapshot gets a new table). A lookup is a
//! multiply-shift hash plus, on average, about one probe: no allocation, no branch on
//! table size beyond the probe loop, bounded by the table length.

use super::PortId;
use crate::packet::addr::IpKey;

#[derive(Clone, Copy, Debug, Default)]
struct Slot<A> {
    /// Key + 1 would not fit all of the key type; instead the unspecified address
    /// (never a pod address) marks empty.
    key: A,
    port: PortId,
}

/// Immutable address → port map (also used for underlay address → node).
#[derive(Clone, Debug)]
pub struct Fib<A: IpKey = u32> {
    slots: Box<[Slot<A>]>,
    mask: usize,
    len: usize,
}

impl<A: IpKey> Default for Fib<A> {
    fn default() -> Self {
        Self::build(std::iter::empty())
    }
}

#[inline]
fn hash<A: IpKey>(key: A) -> usize {
    // Fibonacci hashing (`mix` multiplies by 2^64/φ): the high half spreads consecutive
    // pod addresses across the table.
    (key.mix() >> 32) as usize
}

impl<A: IpKey> Fib<A> {
    /// Build from (address as a host-order key, port) pairs. The unspecified address is
    /// ignored; a later duplicate address replaces an earlier one.
    pub fn build(entries: impl IntoIterator<Item = (A, PortId)>) -> Self {
        let entries: Vec<(A, PortId)> =
            entries.into_iter().filter(|(k, _)| *k != A::ZERO).collect();
        let cap = (entries.len() * 2).next_power_of_two().max(16);
        let mut slots = vec![Slot::default(); cap].into_boxed_slice();
        let mask = cap - 1;
        let mut len = 0;
        for (key, port) in entries {
            let mut i = hash(key) & mask;
            loop {
                let s = &mut slots[i];
                if s.key == A::ZERO {
                    *s = Slot { key, port };
                    len += 1;
                    break;
                }
                if s.key == key {
                    s.port = port;
                    break;
                }
                i = (i + 1) & mask;
            }
        }
        Fib { slots, mask, len }
    }

    /// The port owning `dst` (a host-order key), if any.
    #[inline]
    pub fn lookup(&self, dst: A) -> Option<PortId> {
        if dst == A::ZERO {
            return None;
        }
        let mut i = hash(dst) & self.mask;
        // The table is at most half full, so an empty slot always ends the probe.
        loop {
            let s = self.slots.get(i)?;
            if s.key == dst {
                return Some(s.port);
            }
            if s.key == A::ZERO {
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Number of addresses in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no address is in the table.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_entry_and_nothing_else() {
        let entries: Vec<(u32, PortId)> = (0..1000u32)
            .map(|i| (0x0af4_0000 + i + 1, i as PortId))
            .collect();
        let fib = Fib::build(entries.clone());
        assert_eq!(fib.len(), 1000);
        for (k, p) in entries {
            assert_eq!(fib.lookup(k), Some(p));
        }
        assert_eq!(fib.lookup(0x0af4_0000), None);
        assert_eq!(fib.lookup(0), None);
        assert_eq!(fib.lookup(0xffff_ffff), None);
    }

    #[test]
    fn empty_table_answers_none() {
        let fib: Fib = Fib::default();
        assert!(fib.is_empty());
        assert_eq!(fib.lookup(0x0a00_0001), None);
    }

    #[test]
    fn duplicate_replaces() {
        let fib = Fib::build([(5u32, 1), (5, 2)]);
        assert_eq!(fib.lookup(5), Some(2));
        assert_eq!(fib.len(), 1);
    }

    #[test]
    fn ipv6_keys_work_the_same_way() {
        let base = u128::from(std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0));
        let fib: Fib<u128> = Fib::build((1..=500u128).map(|i| (base + i, i as PortId)));
        assert_eq!(fib.len(), 500);
        for i in 1..=500u128 {
            assert_eq!(fib.lookup(base + i), Some(i as PortId));
        }
        assert_eq!(fib.lookup(base), None);
        assert_eq!(fib.lookup(0), None);
        assert_eq!(fib.lookup(base + 501), None);
    }
}
