//! Exact-match IPv4 /32 forwarding table.
//!
//! Open addressing with linear probing over a power-of-two slot array, at most half
//! full, built once and never mutated (a new snapshot gets a new table). A lookup is a
//! multiply-shift hash plus, on average, about one probe: no allocation, no branch on
//! table size beyond the probe loop, bounded by the table length.

use super::PortId;

const EMPTY: u32 = 0;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// Key + 1 would not fit all of u32; instead 0.0.0.0 (never a pod address) marks empty.
    key: u32,
    port: PortId,
}

/// Immutable /32 → port map.
#[derive(Clone, Debug)]
pub struct Fib {
    slots: Box<[Slot]>,
    mask: usize,
    len: usize,
}

impl Default for Fib {
    fn default() -> Self {
        Self::build(std::iter::empty())
    }
}

#[inline]
fn hash(key: u32) -> usize {
    // Fibonacci hashing: spreads consecutive pod addresses across the table.
    (key.wrapping_mul(0x9E37_79B9) >> 8) as usize
}

impl Fib {
    /// Build from (address as host-order u32, port) pairs. 0.0.0.0 is ignored; a later
    /// duplicate address replaces an earlier one.
    pub fn build(entries: impl IntoIterator<Item = (u32, PortId)>) -> Self {
        let entries: Vec<(u32, PortId)> =
            entries.into_iter().filter(|(k, _)| *k != EMPTY).collect();
        let cap = (entries.len() * 2).next_power_of_two().max(16);
        let mut slots = vec![Slot::default(); cap].into_boxed_slice();
        let mask = cap - 1;
        let mut len = 0;
        for (key, port) in entries {
            let mut i = hash(key) & mask;
            loop {
                let s = &mut slots[i];
                if s.key == EMPTY {
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

    /// The port owning `dst` (host-order IPv4), if any.
    #[inline]
    pub fn lookup(&self, dst: u32) -> Option<PortId> {
        if dst == EMPTY {
            return None;
        }
        let mut i = hash(dst) & self.mask;
        // The table is at most half full, so an empty slot always ends the probe.
        loop {
            let s = self.slots.get(i)?;
            if s.key == dst {
                return Some(s.port);
            }
            if s.key == EMPTY {
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
        let fib = Fib::default();
        assert!(fib.is_empty());
        assert_eq!(fib.lookup(0x0a00_0001), None);
    }

    #[test]
    fn duplicate_replaces() {
        let fib = Fib::build([(5, 1), (5, 2)]);
        assert_eq!(fib.lookup(5), Some(2));
        assert_eq!(fib.len(), 1);
    }
}
