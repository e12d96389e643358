//! Packet classifier over [`CompiledRule`]s: `build` once on the control thread,
//! `lookup` on the packet path (only on a connection-table miss), allocation-free, never
//! panics, cost logarithmic in the number of rules.
//!
//! **Algorithm: address intervals, then port ranges.** Every peer block of every rule,
//! and every `except` hole, is an interval of the address space (32-bit for IPv4,
//! 128-bit for IPv6). Their ends
//! split the space into disjoint elementary intervals inside which every address is
//! covered by exactly the same rules. For each elementary interval the build merges the
//! covering rules' ports into one *port set*: an "any protocol, any port" verdict (the
//! lowest rule with empty `ports`, if one covers the interval) and a sorted list of
//! disjoint `(protocol, lo..=hi) → lowest RuleRef` ranges (ranges of rules above the
//! "any" rule are dropped, they can never be the answer). A lookup is then a binary
//! search of the address in the interval starts and a binary search of `(protocol,
//! port)` in that interval's ranges: `O(log I + log P)` with `I` intervals and `P` ranges
//! in the set (twice at most, see the tiers), no matter how many rules there are, and no
//! allocation.
//!
//! Why this one: NetworkPolicy rules are a union of (address set × port set) boxes whose
//! answer is "the lowest rule that matches", which is exactly a 2-D stabbing query; a
//! one-dimensional decomposition on the address (the dimension with many distinct
//! values: pod /32s, CIDRs with holes) followed by a tiny search on ports (a handful of
//! ranges per interval in practice) is the simplest structure with a logarithmic bound
//! and compact arrays a worker can search from cache. Tuple-space search or tries would
//! win only with many more dimensions than two.
//!
//! **Two tiers.** A rule is in every port set of every interval its blocks cover, so a
//! few broad rules (`0.0.0.0/0 except 10.0.0.0/8`, "the cluster /8") would copy their
//! ranges into every set of the narrow rules below them. Rules with a peer of prefix
//! [`BROAD_PREFIX`] or shorter are therefore built into a second, separate structure and
//! a lookup takes the lower answer of the two (the second search is skipped when no rule
//! is broad). With 5 broad rules over 1,000 pod rules this stores 1,005 ranges instead
//! of 6,000 (unit test `broad_rules_are_not_copied_into_narrow_sets`).
//!
//! **Families.** `Classifier<A: IpKey = u32>`: one instance per address family
//! (`u32` IPv4, `u128` IPv6), the same code. The lookup arrays hold addresses of the
//! family (4-byte interval starts for IPv4, 16-byte for IPv6), so an IPv4 lookup
//! searches exactly the array it searched before the classifier was generic and costs
//! the same instructions: `valgrind --tool=callgrind` on `cargo bench -p bench --bench
//! policy -- --test 'classifier_lookup/rules/N$'` (one block of 4,096 lookups,
//! 2026-11-29) counts 627,221 / 760,399 / 1,428,554 instructions at 100 / 1,000 /
//! 10,000 rules (153 / 186 / 349 per lookup) before and after. The IPv6 instance on
//! the same 10,000 rules embedded in `fd00::/96` (`classifier_lookup_v6`): 1,314,761
//! (321 per lookup; no broad tier there). The build (control thread only) sweeps
//! 64-bit positions for IPv4 and 128-bit ones for IPv6; for IPv4 it costs ~5% more
//! instructions than the IPv4-only build did (`classifier_build/10000_rules`:
//! 272,781,982 → 286,809,452; two `compile/10000_rules` runs: 924,951,869 →
//! 976,093,912; same command and date). The broad tier starts at [`BROAD_PREFIX`] (IPv4) or
//! [`BROAD_PREFIX_V6`] (IPv6).
//!
//! **Sharing.** Neighbouring intervals with the same port set are merged, and identical
//! port sets are stored once: the sweep keys sets by the list of rules covering an
//! interval and by their merged content, so 10,000 /32 peers that all allow `TCP 80`
//! share one set.
//!
//! **Build cost and memory.** The sweep over the `E` interval ends sorts them
//! (`O(E log E)`); each *distinct* set of covering rules is merged once with a sorted
//! sweep over its port ranges (`O(R log R)` for `R` ranges). The worst case is many
//! broad, overlapping blocks with different rules, where distinct covering sets approach
//! the number of intervals and each has many rules (`O(I × rules)`); real policies
//! (disjoint pod /32s and CIDRs, a few broad rules) stay near `O(E log E)`. Memory: 8
//! bytes per IPv4 interval (start + set index; 20 for IPv6), 20 bytes per distinct port set and 16 bytes
//! per stored port range; see [`Classifier::stats`] and bench/benches/policy.rs for measured figures.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{CompiledRule, IpBlock, RuleRef};
use crate::packet::addr::{IpKey, L3};

/// Compiled allow rules of one endpoint in one direction, for one address family.
#[derive(Debug, Default)]
pub struct Classifier<A: IpKey = u32> {
    /// Rules whose peers are all narrower than the broad prefix.
    narrow: Tier<A>,
    /// Rules with a peer of the broad prefix or shorter.
    broad: Tier<A>,
    rules: usize,
}

/// IPv4 peers this wide or wider put their rule in the broad tier.
pub const BROAD_PREFIX: u8 = 8;

/// IPv6 peers this wide or wider (a site's or cluster's prefix, `::/0`) put their rule
/// in the broad tier.
pub const BROAD_PREFIX_V6: u8 = 48;

/// One interval structure (see the module doc).
#[derive(Debug, Default)]
struct Tier<A> {
    /// Start address of each elementary interval, ascending; `bounds[0] == 0` unless
    /// empty. Interval `k` is `bounds[k] ..= bounds[k + 1] - 1`.
    bounds: Box<[A]>,
    /// Port set index of each interval.
    interval_set: Box<[u32]>,
    sets: Box<[PortSet]>,
    ranges: Box<[PortRange]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PortSet {
    /// Rule allowing every protocol and port (ICMP included) here, if any.
    any: Option<RuleRef>,
    /// `ranges[start..end]`, sorted by `(proto, lo)`, disjoint.
    start: u32,
    end: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PortRange {
    proto: u8,
    lo: u16,
    hi: u16,
    rule: RuleRef,
}

/// Size of a built classifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassifierStats {
    pub rules: usize,
    pub intervals: usize,
    pub port_sets: usize,
    pub port_ranges: usize,
    /// Heap bytes of the lookup arrays.
    pub bytes: usize,
}

impl<A: IpKey> Classifier<A> {
    /// Build from rules (control thread). Rules may overlap freely; malformed blocks
    /// (prefix above the family's width) match nothing.
    pub fn build(rules: &[CompiledRule<A>]) -> Self {
        let broad_prefix = if A::FAMILY == L3::Ipv4 {
            BROAD_PREFIX
        } else {
            BROAD_PREFIX_V6
        };
        let (broad, narrow): (Vec<&CompiledRule<A>>, Vec<&CompiledRule<A>>) = rules
            .iter()
            .partition(|r| r.peers.iter().any(|p| p.prefix <= broad_prefix));
        Classifier {
            narrow: Tier::build(narrow),
            broad: Tier::build(broad),
            rules: rules.len(),
        }
    }

    /// The first rule (lowest `RuleRef`) allowing a flow with this peer address (host
    /// order), protocol and destination port (0 for ICMP), if any.
    #[inline]
    pub fn lookup(&self, peer: A, proto: u8, port: u16) -> Option<RuleRef> {
        let narrow = self.narrow.lookup(peer, proto, port);
        if self.broad.bounds.is_empty() {
            return narrow;
        }
        min_ref(narrow, self.broad.lookup(peer, proto, port))
    }

    /// Number of rules compiled in.
    pub fn len(&self) -> usize {
        self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules == 0
    }

    /// Sizes of the built structure (both tiers).
    pub fn stats(&self) -> ClassifierStats {
        let (n, b) = (self.narrow.stats(), self.broad.stats());
        ClassifierStats {
            rules: self.rules,
            intervals: n.intervals + b.intervals,
            port_sets: n.port_sets + b.port_sets,
            port_ranges: n.port_ranges + b.port_ranges,
            bytes: n.bytes + b.bytes,
        }
    }
}

#[inline]
fn min_ref(a: Option<RuleRef>, b: Option<RuleRef>) -> Option<RuleRef> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A position of the build's sweep over the address space: `u64` for IPv4 (room for
/// 2^32, the end of the space), `u128` for IPv6 (whose end, 2^128, is implicit).
/// Keeping IPv4 on 64-bit positions keeps its build's sort and hash work at the size
/// it had before the classifier was generic.
trait SweepPos: Copy + Ord + std::hash::Hash + std::fmt::Debug {
    const ZERO: Self;
    /// From a 128-bit position the caller knows fits.
    fn from_wide(x: u128) -> Self;
    fn to_wide(self) -> u128;
    /// `self + 1`, `None` past the type's range.
    fn succ(self) -> Option<Self>;
}

impl SweepPos for u64 {
    const ZERO: Self = 0;
    fn from_wide(x: u128) -> Self {
        x as u64
    }
    fn to_wide(self) -> u128 {
        u128::from(self)
    }
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl SweepPos for u128 {
    const ZERO: Self = 0;
    fn from_wide(x: u128) -> Self {
        x
    }
    fn to_wide(self) -> u128 {
        self
    }
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl<A: IpKey> Tier<A> {
    fn build(order: Vec<&CompiledRule<A>>) -> Self {
        if A::BITS <= 32 {
            Self::sweep::<u64>(order)
        } else {
            Self::sweep::<u128>(order)
        }
    }

    fn sweep<P: SweepPos>(mut order: Vec<&CompiledRule<A>>) -> Self {
        if order.is_empty() {
            return Tier::default(); // no bounds: lookups end at once
        }
        // Priority = position after a stable sort by origin: lower wins.
        order.sort_by_key(|r| r.origin);

        // Rules covering the same addresses form one group (selector peers repeat the
        // same pod list across many rules): the sweep then tracks groups, not rules.
        let mut group_of: FxMap<Vec<(P, P)>, u32> = FxMap::default();
        let mut group_rules: Vec<Vec<u32>> = Vec::new();
        for (prio, rule) in order.iter().enumerate() {
            let mut spans = Vec::new();
            for peer in &rule.peers {
                block_spans(peer, &mut spans);
            }
            normalise(&mut spans);
            if spans.is_empty() {
                continue;
            }
            let next = group_rules.len() as u32;
            let g = *group_of.entry(spans).or_insert(next);
            if g == next {
                group_rules.push(Vec::new());
            }
            if let Some(members) = group_rules.get_mut(g as usize) {
                members.push(prio as u32);
            }
        }

        // Interval ends as events: (position, group, +1 / -1); an inclusive span
        // `s..=l` starts at `s` and ends at `l + 1`. A span reaching the last IPv6
        // address never ends inside the space: it gets no end event.
        let mut events: Vec<(P, u32, i32)> = Vec::new();
        for (spans, &g) in &group_of {
            for &(s, l) in spans {
                events.push((s, g, 1));
                if let Some(end) = l.succ() {
                    events.push((end, g, -1));
                }
            }
        }
        let last_addr = P::from_wide(max_addr::<A>());
        drop(group_of);
        events.sort_unstable();

        let mut b = Builder::default();
        // Set 0 is the empty set (nothing allowed).
        b.intern_content(None, Vec::new());
        let mut bounds: Vec<A> = vec![A::ZERO];
        let mut interval_set: Vec<u32> = vec![0];
        let mut counts = vec![0u32; group_rules.len()];
        let mut active: BTreeSet<u32> = BTreeSet::new();
        let mut by_active: FxMap<Vec<u32>, u32> = FxMap::default();
        by_active.insert(Vec::new(), 0);
        let mut key: Vec<u32> = Vec::new();

        let mut i = 0;
        while i < events.len() {
            let pos = events[i].0;
            while i < events.len() && events[i].0 == pos {
                let (_, g, delta) = events[i];
                if let Some(c) = counts.get_mut(g as usize) {
                    if delta > 0 {
                        *c += 1;
                        if *c == 1 {
                            active.insert(g);
                        }
                    } else {
                        *c = c.saturating_sub(1);
                        if *c == 0 {
                            active.remove(&g);
                        }
                    }
                }
                i += 1;
            }
            if pos > last_addr {
                break; // the end of the IPv4 space
            }
            key.clear();
            key.extend(active.iter().copied());
            let set = match by_active.get(&key) {
                Some(&s) => s,
                None => {
                    let s = b.merge(&order, &group_rules, &key);
                    by_active.insert(key.clone(), s);
                    s
                }
            };
            if pos == P::ZERO {
                // Events at 0 replace the initial empty interval.
                interval_set[0] = set;
            } else if interval_set.last() != Some(&set) {
                bounds.push(narrow::<A>(pos.to_wide()));
                interval_set.push(set);
            }
        }

        Tier {
            bounds: bounds.into_boxed_slice(),
            interval_set: interval_set.into_boxed_slice(),
            sets: b.sets.into_boxed_slice(),
            ranges: b.ranges.into_boxed_slice(),
        }
    }

    #[inline]
    fn lookup(&self, peer: A, proto: u8, port: u16) -> Option<RuleRef> {
        let k = self.bounds.partition_point(|&b| b <= peer).checked_sub(1)?;
        let set = self.sets.get(*self.interval_set.get(k)? as usize)?;
        let ranges = self.ranges.get(set.start as usize..set.end as usize)?;
        let i = ranges.partition_point(|r| (r.proto, r.hi) < (proto, port));
        let hit = ranges
            .get(i)
            .filter(|r| r.proto == proto && r.lo <= port)
            .map(|r| r.rule);
        min_ref(set.any, hit)
    }

    fn stats(&self) -> ClassifierStats {
        ClassifierStats {
            rules: 0,
            intervals: self.bounds.len(),
            port_sets: self.sets.len(),
            port_ranges: self.ranges.len(),
            bytes: std::mem::size_of_val(&*self.bounds)
                + self.interval_set.len() * 4
                + std::mem::size_of_val(&*self.sets)
                + std::mem::size_of_val(&*self.ranges),
        }
    }
}

/// An address as a 128-bit position (IPv4 addresses are below 2^32).
fn wide<A: IpKey>(a: A) -> u128 {
    match a.to_ip() {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

/// A 128-bit position (within the family's space) as an address of the family.
fn narrow<A: IpKey>(x: u128) -> A {
    let ip = if A::FAMILY == L3::Ipv4 {
        IpAddr::V4(Ipv4Addr::from(x as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(x))
    };
    A::from_ip(ip).unwrap_or(A::ZERO)
}

/// The family's last address as a 128-bit position.
fn max_addr<A: IpKey>() -> u128 {
    if A::BITS >= 128 {
        u128::MAX
    } else {
        (1u128 << A::BITS) - 1
    }
}

/// A block `net/prefix` minus its `except` blocks, as inclusive `(first, last)` spans.
fn block_spans<A: IpKey, P: SweepPos>(block: &IpBlock<A>, out: &mut Vec<(P, P)>) {
    let Some((start, last)) = span::<A, P>(block.net, block.prefix) else {
        return;
    };
    let mut holes: Vec<(P, P)> = block
        .except
        .iter()
        .filter_map(|&(n, p)| span::<A, P>(n, p))
        .map(|(s, l)| (s.max(start), l.min(last)))
        .filter(|(s, l)| s <= l)
        .collect();
    holes.sort_unstable();
    // The first address not yet emitted nor in a hole; `None` past the last address.
    let mut cur = Some(start);
    for (s, l) in holes {
        let Some(c) = cur else { break };
        if s > c {
            out.push((c, P::from_wide(s.to_wide() - 1)));
        }
        if l >= c {
            cur = l.succ();
        }
    }
    if let Some(c) = cur {
        if c <= last {
            out.push((c, last));
        }
    }
}

/// Sort spans and merge overlapping or touching ones: a canonical address set.
fn normalise<P: SweepPos>(spans: &mut Vec<(P, P)>) {
    spans.sort_unstable();
    let mut out: Vec<(P, P)> = Vec::with_capacity(spans.len());
    for &(s, l) in spans.iter() {
        match out.last_mut() {
            Some(prev) if prev.1.succ().is_none_or(|next| s <= next) => prev.1 = prev.1.max(l),
            _ => out.push((s, l)),
        }
    }
    *spans = out;
}

/// `net/prefix` as an inclusive span; `None` for a prefix longer than the family's.
fn span<A: IpKey, P: SweepPos>(net: A, prefix: u8) -> Option<(P, P)> {
    if prefix > A::BITS {
        return None;
    }
    let host_bits = u32::from(A::BITS - prefix);
    let host_mask = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let start = wide(net.masked(prefix));
    Some((P::from_wide(start), P::from_wide(start | host_mask)))
}

/// Build-time maps keyed by integer vectors: a multiply-rotate hash (FxHash's) is
/// several times cheaper than SipHash here, and the keys come from the operator's own
/// policies, not from the network.
type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64);
        self.write_u64((v >> 64) as u64);
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }

    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }

    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Default)]
struct Builder {
    sets: Vec<PortSet>,
    ranges: Vec<PortRange>,
    by_content: FxMap<(Option<RuleRef>, Vec<PortRange>), u32>,
}

impl Builder {
    /// Merge the rules of the `active` groups into a port set; returns its index,
    /// shared with an identical earlier set.
    fn merge<A: IpKey>(
        &mut self,
        order: &[&CompiledRule<A>],
        groups: &[Vec<u32>],
        active: &[u32],
    ) -> u32 {
        let mut prios: Vec<u32> = active
            .iter()
            .filter_map(|&g| groups.get(g as usize))
            .flatten()
            .copied()
            .collect();
        if active.len() > 1 {
            prios.sort_unstable();
        }
        let mut any = None;
        let mut raw: Vec<PortRange> = Vec::new();
        for prio in prios {
            let Some(rule) = order.get(prio as usize) else {
                continue;
            };
            if rule.ports.is_empty() {
                any = Some(rule.origin);
                break; // every later rule is lower priority than this one
            }
            for m in &rule.ports {
                if m.lo <= m.hi {
                    raw.push(PortRange {
                        proto: m.proto,
                        lo: m.lo,
                        hi: m.hi,
                        rule: rule.origin,
                    });
                }
            }
        }
        let ranges = disjoint(raw);
        self.intern_content(any, ranges)
    }

    fn intern_content(&mut self, any: Option<RuleRef>, ranges: Vec<PortRange>) -> u32 {
        let key = (any, ranges);
        if let Some(&s) = self.by_content.get(&key) {
            return s;
        }
        let start = self.ranges.len() as u32;
        self.ranges.extend_from_slice(&key.1);
        let set = PortSet {
            any,
            start,
            end: self.ranges.len() as u32,
        };
        let id = self.sets.len() as u32;
        self.sets.push(set);
        self.by_content.insert(key, id);
        id
    }
}

/// Overlapping `(proto, lo..=hi, rule)` ranges → sorted disjoint ranges, each port
/// mapped to the lowest rule covering it; touching ranges of the same rule coalesce.
fn disjoint(mut raw: Vec<PortRange>) -> Vec<PortRange> {
    raw.sort_unstable_by_key(|r| (r.proto, r.lo));
    let mut out: Vec<PortRange> = Vec::new();
    let mut idx = 0;
    while idx < raw.len() {
        let proto = raw[idx].proto;
        let group_end = idx + raw[idx..].iter().take_while(|r| r.proto == proto).count();
        let group = &raw[idx..group_end];
        // Sweep over ports 0..=65536 (u32): starts at lo, ends at hi + 1.
        let mut ends: Vec<(u32, usize)> = group
            .iter()
            .enumerate()
            .map(|(k, r)| (u32::from(r.hi) + 1, k))
            .collect();
        ends.sort_unstable();
        let mut heap: BinaryHeap<Reverse<(RuleRef, usize)>> = BinaryHeap::new();
        let mut closed = vec![false; group.len()];
        let (mut si, mut ei) = (0, 0);
        while si < group.len() || ei < ends.len() {
            let next_start = group.get(si).map(|r| u32::from(r.lo));
            let next_end = ends.get(ei).map(|e| e.0);
            let pos = match (next_start, next_end) {
                (Some(s), Some(e)) => s.min(e),
                (Some(s), None) => s,
                (None, Some(e)) => e,
                (None, None) => break,
            };
            while ei < ends.len() && ends[ei].0 == pos {
                closed[ends[ei].1] = true;
                ei += 1;
            }
            while si < group.len() && u32::from(group[si].lo) == pos {
                heap.push(Reverse((group[si].rule, si)));
                si += 1;
            }
            while heap.peek().is_some_and(|Reverse((_, k))| closed[*k]) {
                heap.pop();
            }
            let Some(&Reverse((rule, _))) = heap.peek() else {
                continue;
            };
            // This rule holds from `pos` up to the next event.
            let upto = match (
                group.get(si).map(|r| u32::from(r.lo)),
                ends.get(ei).map(|e| e.0),
            ) {
                (Some(s), Some(e)) => s.min(e),
                (Some(s), None) => s,
                (None, Some(e)) => e,
                (None, None) => 65536,
            };
            let (lo, hi) = (pos as u16, (upto - 1) as u16);
            match out.last_mut() {
                Some(last)
                    if last.proto == proto
                        && last.rule == rule
                        && u32::from(last.hi) + 1 == pos =>
                {
                    last.hi = hi
                }
                _ => out.push(PortRange {
                    proto,
                    lo,
                    hi,
                    rule,
                }),
            }
        }
        idx = group_end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{IpBlock, PortMatch, PROTO_ICMP, PROTO_SCTP, PROTO_TCP, PROTO_UDP};
    use super::*;

    fn rr(policy: u32, rule: u16) -> RuleRef {
        RuleRef { policy, rule }
    }

    fn block(s: &str) -> IpBlock {
        let (a, p) = s.split_once('/').unwrap();
        IpBlock {
            net: u32::from(a.parse::<std::net::Ipv4Addr>().unwrap()),
            prefix: p.parse().unwrap(),
            except: Vec::new(),
        }
    }

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
    }

    fn pm(proto: u8, lo: u16, hi: u16) -> PortMatch {
        PortMatch { proto, lo, hi }
    }

    /// The obvious evaluator the classifier must agree with.
    fn reference(rules: &[CompiledRule], peer: u32, proto: u8, port: u16) -> Option<RuleRef> {
        rules
            .iter()
            .filter(|r| {
                r.peers.iter().any(|b| {
                    let inside = |net: u32, prefix: u8| {
                        prefix <= 32
                            && (prefix == 0 || (peer ^ net) >> (32 - u32::from(prefix)) == 0)
                    };
                    inside(b.net, b.prefix) && !b.except.iter().any(|&(n, p)| inside(n, p))
                })
            })
            .filter(|r| {
                r.ports.is_empty()
                    || r.ports
                        .iter()
                        .any(|m| m.proto == proto && m.lo <= port && port <= m.hi)
            })
            .map(|r| r.origin)
            .min()
    }

    #[test]
    fn empty_and_default_match_nothing() {
        assert_eq!(Classifier::<u32>::default().lookup(1, PROTO_TCP, 80), None);
        let c = Classifier::<u32>::build(&[]);
        assert_eq!(c.lookup(0, PROTO_TCP, 80), None);
        assert_eq!(c.lookup(u32::MAX, PROTO_ICMP, 0), None);
        assert!(c.is_empty());
    }

    #[test]
    fn blocks_excepts_ports_and_priority() {
        let mut b = block("10.0.0.0/8");
        b.except = vec![
            (ip("10.1.0.0"), 16),
            (ip("10.1.2.0"), 24),
            (ip("10.200.0.0"), 16),
        ];
        let rules = vec![
            CompiledRule {
                peers: vec![b],
                ports: vec![pm(PROTO_TCP, 80, 80), pm(PROTO_UDP, 1000, 2000)],
                origin: rr(1, 0),
            },
            CompiledRule {
                peers: vec![block("10.1.2.3/32")],
                ports: vec![],
                origin: rr(2, 0),
            },
            CompiledRule {
                peers: vec![block("0.0.0.0/0")],
                ports: vec![pm(PROTO_TCP, 70, 90), pm(PROTO_SCTP, 0, 65535)],
                origin: rr(0, 3),
            },
        ];
        let c = Classifier::build(&rules);
        assert_eq!(c.len(), 3);
        assert_eq!(c.lookup(ip("10.0.0.1"), PROTO_TCP, 80), Some(rr(0, 3)));
        assert_eq!(c.lookup(ip("10.0.0.1"), PROTO_UDP, 1500), Some(rr(1, 0)));
        assert_eq!(c.lookup(ip("10.0.0.1"), PROTO_UDP, 999), None);
        assert_eq!(c.lookup(ip("10.1.0.1"), PROTO_UDP, 1500), None, "except");
        assert_eq!(c.lookup(ip("10.1.2.3"), PROTO_UDP, 5), Some(rr(2, 0)));
        assert_eq!(c.lookup(ip("10.1.2.3"), PROTO_ICMP, 0), Some(rr(2, 0)));
        assert_eq!(c.lookup(ip("10.1.2.3"), PROTO_TCP, 80), Some(rr(0, 3)));
        assert_eq!(c.lookup(ip("10.1.2.4"), PROTO_ICMP, 0), None);
        assert_eq!(c.lookup(ip("11.0.0.0"), PROTO_SCTP, 9), Some(rr(0, 3)));
        assert_eq!(
            c.lookup(ip("255.255.255.255"), PROTO_TCP, 90),
            Some(rr(0, 3))
        );
        assert_eq!(c.lookup(0, PROTO_TCP, 91), None);
        assert_eq!(c.lookup(ip("10.200.3.3"), PROTO_UDP, 1000), None);
    }

    #[test]
    fn shares_identical_port_sets() {
        let rules: Vec<CompiledRule> = (0..1000u32)
            .map(|k| CompiledRule {
                peers: vec![IpBlock {
                    net: 0x0a00_0000 + 2 * k,
                    prefix: 32,
                    except: vec![],
                }],
                ports: vec![pm(PROTO_TCP, 80, 80)],
                origin: rr(0, 0),
            })
            .collect();
        let s = Classifier::build(&rules).stats();
        assert_eq!(s.port_sets, 2, "{s:?}");
        assert_eq!(s.intervals, 2001, "{s:?}");
    }

    #[test]
    fn broad_rules_are_not_copied_into_narrow_sets() {
        let mut rules: Vec<CompiledRule> = (0..1000u32)
            .map(|k| CompiledRule {
                peers: vec![IpBlock {
                    net: 0x0a00_0000 + 2 * k,
                    prefix: 32,
                    except: vec![],
                }],
                ports: vec![pm(PROTO_TCP, 1000 + k as u16, 1000 + k as u16)],
                origin: rr(1, k as u16),
            })
            .collect();
        for k in 0..5u16 {
            rules.push(CompiledRule {
                peers: vec![block("10.0.0.0/8")],
                ports: vec![pm(PROTO_UDP, k, k)],
                origin: rr(0, k),
            });
        }
        let c = Classifier::build(&rules);
        assert_eq!(c.stats().port_ranges, 1005, "{:?}", c.stats());
        assert_eq!(c.lookup(0x0a00_0002, PROTO_TCP, 1001), Some(rr(1, 1)));
        assert_eq!(c.lookup(0x0a00_0002, PROTO_UDP, 3), Some(rr(0, 3)));
        assert_eq!(c.lookup(0x0a00_0003, PROTO_TCP, 1001), None);
        assert_eq!(c.lookup(0x0b00_0000, PROTO_UDP, 3), None);
    }

    #[test]
    fn disjoint_ranges_keep_the_lowest_rule() {
        let r = |lo, hi, p| PortRange {
            proto: PROTO_TCP,
            lo,
            hi,
            rule: rr(p, 0),
        };
        let out = disjoint(vec![
            r(10, 100, 2),
            r(50, 60, 1),
            r(0, 65535, 3),
            r(101, 200, 2),
        ]);
        assert_eq!(
            out,
            vec![
                r(0, 9, 3),
                r(10, 49, 2),
                r(50, 60, 1),
                r(61, 200, 2),
                r(201, 65535, 3)
            ]
        );
    }

    #[test]
    fn agrees_with_reference_on_random_rules() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        // A small universe so blocks overlap and nest.
        let base = [
            0u32,
            0x0a00_0000,
            0x0a01_0000,
            0x0a01_0200,
            0xc0a8_0000,
            0xffff_ff00,
        ];
        let protos = [PROTO_TCP, PROTO_UDP, PROTO_SCTP];
        let (mut hits, mut lookups) = (0usize, 0usize);
        for round in 0..40 {
            let n_rules = 1 + rnd(60) as usize;
            let mut rules = Vec::new();
            for _ in 0..n_rules {
                let mut peers = Vec::new();
                for _ in 0..1 + rnd(3) {
                    let prefix = [0u8, 8, 16, 23, 24, 30, 32][rnd(7) as usize];
                    let net = base[rnd(base.len() as u64) as usize].wrapping_add(rnd(512) as u32);
                    let mask = if prefix == 0 {
                        0
                    } else {
                        u32::MAX << (32 - prefix)
                    };
                    let mut except = Vec::new();
                    for _ in 0..rnd(3) {
                        let ep = (prefix + 1 + rnd(u64::from(32 - prefix.min(31))) as u8).min(32);
                        if ep > prefix {
                            let e = (net & mask) | (rnd(1 << 20) as u32 & !mask);
                            except.push((e & (u32::MAX << (32 - ep)), ep));
                        }
                    }
                    peers.push(IpBlock {
                        net: net & mask,
                        prefix,
                        except,
                    });
                }
                let mut ports = Vec::new();
                if rnd(5) != 0 {
                    for _ in 0..1 + rnd(3) {
                        let lo = rnd(100) as u16;
                        let hi = if rnd(2) == 0 { lo } else { lo + rnd(50) as u16 };
                        ports.push(pm(protos[rnd(3) as usize], lo, hi));
                    }
                    if rnd(10) == 0 {
                        ports.push(pm(protos[rnd(3) as usize], 0, 65535));
                    }
                }
                rules.push(CompiledRule {
                    peers,
                    ports,
                    origin: rr(rnd(8) as u32, rnd(4) as u16),
                });
            }
            let c = Classifier::build(&rules);
            for _ in 0..2000 {
                let peer = match rnd(3) {
                    0 => rnd(1 << 32) as u32,
                    _ => {
                        // Near a block edge: where bugs live.
                        let r = &rules[rnd(rules.len() as u64) as usize];
                        let b = &r.peers[rnd(r.peers.len() as u64) as usize];
                        let size = if b.prefix == 0 {
                            0
                        } else {
                            1u32 << (32 - b.prefix)
                        };
                        let edge = match rnd(4) {
                            0 => b.net,
                            1 => b.net.wrapping_add(size),
                            2 => b.net.wrapping_sub(1),
                            _ => b.except.first().map_or(b.net, |e| e.0),
                        };
                        edge.wrapping_add(rnd(3) as u32).wrapping_sub(1)
                    }
                };
                let proto = [PROTO_TCP, PROTO_UDP, PROTO_SCTP, PROTO_ICMP][rnd(4) as usize];
                let port = if proto == PROTO_ICMP {
                    0
                } else {
                    rnd(160) as u16
                };
                let want = reference(&rules, peer, proto, port);
                hits += usize::from(want.is_some());
                lookups += 1;
                assert_eq!(
                    c.lookup(peer, proto, port),
                    want,
                    "round {round} peer {peer:#x} proto {proto} port {port}"
                );
            }
        }
        // Both answers are well represented.
        assert!(
            hits > lookups / 5 && hits < lookups * 4 / 5,
            "{hits}/{lookups}"
        );
    }

    /// The obvious evaluator for any family, on `IpKey::masked`.
    fn reference_any<A: IpKey>(
        rules: &[CompiledRule<A>],
        peer: A,
        proto: u8,
        port: u16,
    ) -> Option<RuleRef> {
        let inside = |net: A, prefix: u8| prefix <= A::BITS && peer.masked(prefix) == net;
        rules
            .iter()
            .filter(|r| {
                r.peers.iter().any(|b| {
                    inside(b.net, b.prefix) && !b.except.iter().any(|&(n, p)| inside(n, p))
                })
            })
            .filter(|r| {
                r.ports.is_empty()
                    || r.ports
                        .iter()
                        .any(|m| m.proto == proto && m.lo <= port && port <= m.hi)
            })
            .map(|r| r.origin)
            .min()
    }

    fn ip6(s: &str) -> u128 {
        u128::from(s.parse::<std::net::Ipv6Addr>().unwrap())
    }

    #[test]
    fn ipv6_blocks_excepts_and_the_ends_of_the_space() {
        let b = |net: &str, prefix: u8, except: Vec<(u128, u8)>| IpBlock {
            net: ip6(net),
            prefix,
            except,
        };
        let rules = vec![
            CompiledRule {
                peers: vec![b("fd00::", 8, vec![(ip6("fd00:10:244:1::"), 64)])],
                ports: vec![pm(PROTO_TCP, 80, 80)],
                origin: rr(1, 0),
            },
            CompiledRule {
                peers: vec![b("fd00:10:244:1::5", 128, vec![])],
                ports: vec![],
                origin: rr(2, 0),
            },
            CompiledRule {
                peers: vec![b("::", 0, vec![(ip6("fd00::"), 8)])],
                ports: vec![pm(PROTO_UDP, 53, 53)],
                origin: rr(0, 1),
            },
        ];
        let c = Classifier::build(&rules);
        assert_eq!(c.lookup(ip6("fd00::1"), PROTO_TCP, 80), Some(rr(1, 0)));
        assert_eq!(c.lookup(ip6("fd00:10:244:1::7"), PROTO_TCP, 80), None);
        assert_eq!(
            c.lookup(ip6("fd00:10:244:1::5"), PROTO_TCP, 80),
            Some(rr(2, 0))
        );
        assert_eq!(
            c.lookup(ip6("fd00:10:244:1::5"), PROTO_ICMP, 0),
            Some(rr(2, 0))
        );
        assert_eq!(c.lookup(ip6("fdff:ffff::"), PROTO_UDP, 53), None);
        assert_eq!(c.lookup(ip6("2001:db8::1"), PROTO_UDP, 53), Some(rr(0, 1)));
        assert_eq!(c.lookup(0, PROTO_UDP, 53), Some(rr(0, 1)));
        assert_eq!(c.lookup(u128::MAX, PROTO_UDP, 53), Some(rr(0, 1)));
        assert_eq!(c.lookup(u128::MAX, PROTO_TCP, 80), None);
        // A block ending at the last address, an except ending there too.
        let top = Classifier::build(&[CompiledRule {
            peers: vec![b("ff00::", 8, vec![(u128::MAX, 128)])],
            ports: vec![],
            origin: rr(0, 0),
        }]);
        assert_eq!(top.lookup(u128::MAX - 1, PROTO_TCP, 1), Some(rr(0, 0)));
        assert_eq!(top.lookup(u128::MAX, PROTO_TCP, 1), None);
        assert_eq!(top.lookup(ip6("feff::"), PROTO_TCP, 1), None);
        // Malformed prefixes match nothing.
        let bad = Classifier::build(&[CompiledRule {
            peers: vec![b("::", 129, vec![])],
            ports: vec![],
            origin: rr(0, 0),
        }]);
        assert_eq!(bad.lookup(0, PROTO_TCP, 1), None);
    }

    /// The IPv6 instance against the naive evaluator: 80,000 lookups over random
    /// nested blocks with holes, half of them at block edges.
    #[test]
    fn ipv6_agrees_with_reference_on_random_rules() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let base = [
            0u128,
            ip6("fd00::"),
            ip6("fd00:10:244::"),
            ip6("fd00:10:244:1::"),
            ip6("2001:db8::"),
            ip6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00"),
        ];
        let prefixes = [0u8, 8, 32, 48, 56, 64, 96, 120, 127, 128];
        let protos = [PROTO_TCP, PROTO_UDP, PROTO_SCTP];
        let (mut hits, mut lookups) = (0usize, 0usize);
        for round in 0..40 {
            let mut rules: Vec<CompiledRule<u128>> = Vec::new();
            for _ in 0..1 + rnd(60) {
                let mut peers = Vec::new();
                for _ in 0..1 + rnd(3) {
                    let prefix = prefixes[rnd(prefixes.len() as u64) as usize];
                    let net = base[rnd(base.len() as u64) as usize]
                        .wrapping_add(u128::from(rnd(512)) << (rnd(4) * 32));
                    let mut except = Vec::new();
                    for _ in 0..rnd(3) {
                        let ep =
                            (prefix + 1 + rnd(u64::from(128 - prefix.min(127))) as u8).min(128);
                        if ep > prefix {
                            let host = u128::from(rnd(1 << 20)) << (rnd(4) * 32);
                            let e = net.masked(prefix) | (host & !u128::MAX.masked(prefix));
                            except.push((e.masked(ep), ep));
                        }
                    }
                    peers.push(IpBlock {
                        net: net.masked(prefix),
                        prefix,
                        except,
                    });
                }
                let mut ports = Vec::new();
                if rnd(5) != 0 {
                    for _ in 0..1 + rnd(3) {
                        let lo = rnd(100) as u16;
                        let hi = if rnd(2) == 0 { lo } else { lo + rnd(50) as u16 };
                        ports.push(pm(protos[rnd(3) as usize], lo, hi));
                    }
                }
                rules.push(CompiledRule {
                    peers,
                    ports,
                    origin: rr(rnd(8) as u32, rnd(4) as u16),
                });
            }
            let c = Classifier::build(&rules);
            for _ in 0..2000 {
                let peer = match rnd(3) {
                    0 => (0..4).fold(0u128, |a, _| (a << 32) | u128::from(rnd(1 << 32))),
                    _ => {
                        let r = &rules[rnd(rules.len() as u64) as usize];
                        let b = &r.peers[rnd(r.peers.len() as u64) as usize];
                        let size = if b.prefix == 0 {
                            0
                        } else {
                            1u128 << (128 - u32::from(b.prefix))
                        };
                        let edge = match rnd(4) {
                            0 => b.net,
                            1 => b.net.wrapping_add(size),
                            2 => b.net.wrapping_sub(1),
                            _ => b.except.first().map_or(b.net, |e| e.0),
                        };
                        edge.wrapping_add(u128::from(rnd(3))).wrapping_sub(1)
                    }
                };
                let proto = [PROTO_TCP, PROTO_UDP, PROTO_SCTP, PROTO_ICMP][rnd(4) as usize];
                let port = if proto == PROTO_ICMP {
                    0
                } else {
                    rnd(160) as u16
                };
                let want = reference_any(&rules, peer, proto, port);
                hits += usize::from(want.is_some());
                lookups += 1;
                assert_eq!(
                    c.lookup(peer, proto, port),
                    want,
                    "round {round} peer {peer:#x} proto {proto} port {port}"
                );
            }
        }
        assert_eq!(lookups, 80_000);
        assert!(
            hits > lookups / 5 && hits < lookups * 4 / 5,
            "{hits}/{lookups}"
        );
    }

    /// The generic reference agrees with the IPv4 one the 80,000-lookup test uses.
    #[test]
    fn generic_reference_matches_the_ipv4_reference() {
        let mut b = block("10.0.0.0/8");
        b.except = vec![(ip("10.1.0.0"), 16)];
        let rules = vec![CompiledRule {
            peers: vec![b, block("0.0.0.0/0")],
            ports: vec![pm(PROTO_TCP, 1, 9)],
            origin: rr(0, 0),
        }];
        for peer in [0, ip("10.1.0.1"), ip("10.2.0.0"), u32::MAX] {
            for port in [0, 5, 10] {
                assert_eq!(
                    reference_any(&rules, peer, PROTO_TCP, port),
                    reference(&rules, peer, PROTO_TCP, port)
                );
            }
        }
    }
}
