//! Longest-prefix-match table: other nodes' pod CIDRs to the node that owns each.
//!
//! Built once per snapshot and never mutated. Entries are grouped by prefix length,
//! longest first; each group is a sorted array of masked prefixes. A lookup masks the
//! destination to each present length in turn and binary-searches that group, so it
//! costs O(L · log n) for L distinct prefix lengths (one or two in a cluster where
//! every node gets the same size of pod CIDR) and never allocates or panics.
//!
//! Generic over the address family's key ([`IpKey`]) like the exact-match
//! [`Fib`](super::Fib): one instance per family. In a packet's way this is the second
//! question of the route stage (`Tables::route`): not a local pod, so is it a pod on
//! another node?

use crate::packet::addr::IpKey;

/// One run of equal-length prefixes inside `entries`.
#[derive(Clone, Copy, Debug)]
struct Group {
    len: u8,
    start: usize,
    end: usize,
}

/// Immutable prefix → value map with longest-prefix lookup.
#[derive(Clone, Debug)]
pub struct Lpm<A: IpKey, V: Copy> {
    groups: Box<[Group]>,
    /// (masked prefix, value), ordered by (length descending, prefix ascending).
    entries: Box<[(A, V)]>,
}

impl<A: IpKey, V: Copy> Default for Lpm<A, V> {
    fn default() -> Self {
        Lpm {
            groups: Box::new([]),
            entries: Box::new([]),
        }
    }
}

impl<A: IpKey, V: Copy> Lpm<A, V> {
    /// Build from (prefix, length, value). Host bits of a prefix are ignored, lengths
    /// beyond the family's width are clamped to it, and a later duplicate of a
    /// (prefix, length) replaces an earlier one.
    pub fn build(entries: impl IntoIterator<Item = (A, u8, V)>) -> Self {
        let mut all: Vec<(u8, A, usize, V)> = entries
            .into_iter()
            .enumerate()
            .map(|(i, (a, len, v))| {
                let len = len.min(A::BITS);
                (len, a.masked(len), i, v)
            })
            .collect();
        // Longest first, then by prefix; among duplicates the latest (highest index) first
        // so dedup keeps it.
        all.sort_unstable_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)).then(y.2.cmp(&x.2)));
        all.dedup_by(|later, earlier| later.0 == earlier.0 && later.1 == earlier.1);
        let mut groups = Vec::new();
        let mut start = 0;
        for i in 1..=all.len() {
            if i == all.len() || all[i].0 != all[start].0 {
                groups.push(Group {
                    len: all[start].0,
                    start,
                    end: i,
                });
                start = i;
            }
        }
        Lpm {
            groups: groups.into_boxed_slice(),
            entries: all.into_iter().map(|(_, a, _, v)| (a, v)).collect(),
        }
    }

    /// The value of the longest prefix containing `dst`, if any.
    #[inline]
    pub fn lookup(&self, dst: A) -> Option<V> {
        for g in self.groups.iter() {
            let key = dst.masked(g.len);
            let run = self.entries.get(g.start..g.end)?;
            if let Ok(i) = run.binary_search_by(|e| e.0.cmp(&key)) {
                return run.get(i).map(|e| e.1);
            }
        }
        None
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no prefix.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> u32 {
        u32::from_be_bytes(a)
    }

    #[test]
    fn longest_prefix_wins_and_misses_are_none() {
        let t: Lpm<u32, u16> = Lpm::build([
            (v4([10, 244, 0, 0]), 16, 1),
            (v4([10, 244, 3, 0]), 24, 3),
            (v4([10, 244, 3, 128]), 25, 4),
            (v4([0, 0, 0, 0]), 0, 9),
        ]);
        assert_eq!(t.lookup(v4([10, 244, 1, 1])), Some(1));
        assert_eq!(t.lookup(v4([10, 244, 3, 1])), Some(3));
        assert_eq!(t.lookup(v4([10, 244, 3, 200])), Some(4));
        assert_eq!(t.lookup(v4([8, 8, 8, 8])), Some(9), "default route");
        let no_default: Lpm<u32, u16> = Lpm::build([(v4([10, 244, 3, 0]), 24, 3)]);
        assert_eq!(no_default.lookup(v4([10, 244, 4, 0])), None);
        assert_eq!(Lpm::<u32, u16>::default().lookup(1), None);
    }

    #[test]
    fn host_bits_are_ignored_and_later_duplicates_replace() {
        let t: Lpm<u32, u16> = Lpm::build([
            (v4([10, 244, 3, 77]), 24, 1),
            (v4([10, 244, 3, 0]), 24, 2),
            (v4([1, 2, 3, 4]), 40, 5),
        ]);
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup(v4([10, 244, 3, 9])), Some(2));
        assert_eq!(t.lookup(v4([1, 2, 3, 4])), Some(5), "/40 clamps to /32");
        assert_eq!(t.lookup(v4([1, 2, 3, 5])), None);
    }

    /// Against a linear reference over random prefixes of every length.
    #[test]
    fn agrees_with_a_linear_scan() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let prefixes: Vec<(u32, u8, u16)> = (0..300)
            .map(|i| {
                let len = (next() % 33) as u8;
                // Cluster addresses so prefixes nest and overlap.
                let a = 0x0a00_0000 | (next() as u32 & 0x00ff_ffff);
                (a, len, i)
            })
            .collect();
        let t = Lpm::build(prefixes.iter().copied());
        for _ in 0..20_000 {
            let dst = 0x0a00_0000 | (next() as u32 & 0x00ff_ffff);
            let want = prefixes
                .iter()
                .enumerate()
                .filter(|(_, (a, len, _))| dst.masked(*len) == a.masked(*len))
                .max_by_key(|(i, (_, len, _))| (*len, *i))
                .map(|(_, (_, _, v))| *v);
            assert_eq!(t.lookup(dst), want, "dst {dst:#x}");
        }
    }

    #[test]
    fn ipv6_prefixes() {
        let p = u128::from(std::net::Ipv6Addr::new(0xfd00, 0, 0, 7, 0, 0, 0, 0));
        let t: Lpm<u128, u16> = Lpm::build([(p, 64, 7), (p, 48, 1)]);
        assert_eq!(t.lookup(p + 5), Some(7));
        assert_eq!(t.lookup(p + (1u128 << 64)), Some(1));
        assert_eq!(t.lookup(1), None);
    }
}
