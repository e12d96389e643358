//! Per-worker connection table: which flows the policy stage has already admitted, so
//! established traffic (and the replies of allowed connections) skip the classifiers.
//!
//! **Layout.** Bucketised open addressing: `capacity` entries (rounded up to a power of
//! two, at least one bucket) in buckets of [`WAYS`] slots: 32-byte slots and 256-byte
//! buckets for IPv4, 64-byte slots and 512-byte buckets for IPv6; a flow lives in one of the slots of its home bucket (hash of the normalised
//! key). Everything is allocated once in [`Conntrack::new`]; nothing on the packet path
//! allocates, locks or panics. A slot is free when `expires == 0`; an entry whose
//! `expires` is not after `now` is dead and is reused or cleared lazily (on lookup, on
//! insert, and by [`Conntrack::sweep`], which the worker calls once per round with a
//! small bucket budget).
//!
//! **Families.** The table is generic over the address key ([`IpKey`]): one
//! `Conntrack<u32>` (the default) per worker for IPv4 and, with IPv6, one
//! `Conntrack<u128>` beside it. Flows are parsed through the `packet` views
//! ([`crate::packet::tcp`], [`crate::packet::sctp`], [`crate::packet::icmp`] and the
//! port pair [`crate::packet::ports`]). The generic key keeps IPv4 at its 16-byte
//! normalised key (two `u32` addresses, ports and protocol) and hashes it exactly as
//! the IPv4-only table did, so IPv4 pays nothing for the generality. Measured with
//! `valgrind --tool=callgrind` on `cargo bench -p bench --bench forward -- --test
//! '64B_conntrack_hit_1024flows$'` (one 64-packet burst of hits over 1,024 flows,
//! instructions inside `Worker::poll_once`; 2026-11-29): 41,488 before and after the
//! change (648 per packet), the same count exactly.
//!
//! **Keys.** The 5-tuple is normalised so both directions of a flow land on the same
//! entry: the (address, port) pair that sorts first is side A. The entry remembers
//! which side initiated (sent the packet that created it), so a packet is either
//! "original" (initiator → responder) or "reply", and whether the flow entered through
//! the host port from a non-node source ([`Conntrack::mark_via_host`]: its replies go
//! back to the host port, see `pipeline::policy`). TCP, UDP and SCTP are keyed by
//! their ports (SCTP's verification tag is not used: a new association on the same
//! ports reuses the entry, as with Linux's default); ICMP echo, timestamp and
//! information messages by their identifier in both port fields; other protocols by
//! addresses alone.
//!
//! **Timeouts** (close to Linux conntrack's defaults, with kube-proxy's 24 h for
//! established TCP; milliseconds of the worker's coarse clock, read once per round):
//!
//! | state | timeout |
//! |---|---|
//! | TCP SYN seen from the initiator | 120 s |
//! | TCP SYN-ACK seen from the responder | 60 s |
//! | TCP established (also mid-stream pickup, like `nf_conntrack_tcp_loose`) | 24 h |
//! | TCP FIN from one side | 120 s |
//! | TCP FIN from both sides (time wait) | 120 s |
//! | TCP RST | 10 s |
//! | UDP, unreplied / replied | 30 s / 120 s |
//! | ICMP (echo and other queries) | 30 s |
//! | SCTP, unreplied / replied / after ABORT or SHUTDOWN COMPLETE | 30 s / 210 s / 10 s |
//! | other protocols, unreplied / replied | 60 s / 600 s |
//!
//! A TCP SYN (without ACK) that meets an entry in time-wait or closed is a new
//! connection: the caller removes the entry and treats the packet as a miss.
//!
//! **Policy epochs.** Each entry stores the table generation it was admitted (or last
//! re-checked) under. When the generation changes, the policy stage re-checks an
//! older entry against the new classifiers on its next packet, once per generation,
//! and removes it if the flow is no longer allowed.
//!
//! **Full buckets.** Insertion takes a free or dead slot of the home bucket; failing
//! that it evicts the live entry closest to expiry among those never replied to or
//! TCP connections already over (closed, time-wait) (the equivalent of Linux's early
//! drop: half-open, one-way and finished flows go first); if every slot holds a
//! replied flow the insert fails with [`Full`] and the policy stage drops
//! the packet (`DropReason::ConntrackFull`). Evictions and refusals are counted.
//!
//! In a packet's way this sits inside the policy stage (`pipeline::policy`), after the
//! route lookup. Its hit path is [`Conntrack::track`]: one bucket walk that also
//! applies the update for an entry admitted under the current generation (the packet of
//! an established flow), leaving every other case to the caller. Measured cost (`cargo bench -p bench --bench forward -- --warm-up-time
//! 1 --measurement-time 4`, 2 vCPU AMD EPYC VM shared with other builds, 2026-11-22,
//! load ~1.5): the whole fake-port forward path is ~55 ns/pkt (18.3 Mpps) on one hot
//! flow and ~61 ns/pkt (16.3 Mpps) over 1,024 flows, with or without a 1,001-rule
//! ingress policy on the destination, against ~33 ns/pkt with the policy stage
//! compiled out: the stage costs ~22-28 ns/pkt on a hit, most of it the bucket load
//! (`lookup`, 14-21% of cycles in `perf`). Prefetching a burst's buckets before
//! processing it is the obvious next step.

use std::hash::Hasher;

use crate::packet::addr::IpKey;
use crate::packet::ports::Ports;
use crate::packet::{icmp, ipv4, protocol, sctp, tcp};

/// TCP flag bits, as the [`tcp`] view defines them.
pub use crate::packet::tcp::flags as tcp_flags;

/// Slots per bucket.
pub const WAYS: usize = 8;

/// Entries of a worker's table unless configured otherwise (2 MiB per worker).
pub const DEFAULT_CAPACITY: usize = 65_536;

/// Buckets [`Conntrack::sweep`] visits per call (per worker round).
pub const SWEEP_BUCKETS: usize = 4;

/// Milliseconds of a monotonic clock; 0 is reserved ("free slot"), so clocks start at 1.
pub type Millis = u64;

const SEC: Millis = 1000;

/// Timeouts, in milliseconds (see the module table).
pub mod timeout {
    use super::{Millis, SEC};
    pub const TCP_SYN_SENT: Millis = 120 * SEC;
    pub const TCP_SYN_RECV: Millis = 60 * SEC;
    pub const TCP_ESTABLISHED: Millis = 24 * 3600 * SEC;
    pub const TCP_FIN_WAIT: Millis = 120 * SEC;
    pub const TCP_TIME_WAIT: Millis = 120 * SEC;
    pub const TCP_CLOSE: Millis = 10 * SEC;
    pub const UDP: Millis = 30 * SEC;
    pub const UDP_REPLIED: Millis = 120 * SEC;
    pub const ICMP: Millis = 30 * SEC;
    pub const SCTP: Millis = 30 * SEC;
    pub const SCTP_REPLIED: Millis = 210 * SEC;
    pub const SCTP_CLOSED: Millis = 10 * SEC;
    pub const OTHER: Millis = 60 * SEC;
    pub const OTHER_REPLIED: Millis = 600 * SEC;
    pub const REVOKED: Millis = 120 * SEC;
}

use protocol::{ICMP as PROTO_ICMP, SCTP as PROTO_SCTP, TCP as PROTO_TCP, UDP as PROTO_UDP};
// SCTP chunk types: INIT opens an association, ABORT and SHUTDOWN COMPLETE end one.
use sctp::chunk_type::{
    ABORT as SCTP_ABORT, INIT as SCTP_INIT, SHUTDOWN_COMPLETE as SCTP_SHUTDOWN_COMPLETE,
};

/// A packet's flow as the policy stage sees it, in packet direction, with addresses of
/// one family (`u32`: IPv4, `u128`: IPv6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow<A: IpKey = u32> {
    pub src: A,
    pub dst: A,
    /// Transport ports; the ICMP query identifier in both for ICMP queries.
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// TCP flags; for SCTP the first chunk's type; for ICMP the message type.
    pub detail: u8,
}

impl<A: IpKey> Flow<A> {
    /// The flow of an IP packet: `payload` is the IP payload, `first_fragment` false
    /// for non-initial fragments (no transport header: ports read as 0). Ports come
    /// from the [`Ports`] view, so a transport header its own view refuses (a UDP
    /// length or TCP data offset that does not fit) still names its flow; the detail
    /// (TCP flags, SCTP first chunk type) only from a header its view accepts, else 0.
    /// Headers too short for any view read as 0; never panics.
    #[inline(always)]
    pub fn parse(src: A, dst: A, proto: u8, payload: &[u8], first_fragment: bool) -> Self {
        let mut f = Flow {
            src,
            dst,
            sport: 0,
            dport: 0,
            proto,
            detail: 0,
        };
        if !first_fragment {
            return f;
        }
        match proto {
            PROTO_TCP | PROTO_UDP | PROTO_SCTP => {
                if let Ok(p) = Ports::new_checked(payload) {
                    f.sport = p.src_port();
                    f.dport = p.dst_port();
                }
                f.detail = match proto {
                    PROTO_TCP => tcp::Packet::new_checked(payload).map_or(0, |t| t.flags()),
                    PROTO_SCTP => {
                        sctp::Packet::new_checked(payload).map_or(0, |s| s.first_chunk_type())
                    }
                    _ => 0,
                };
            }
            PROTO_ICMP => {
                if let Ok(m) = icmp::Packet::new_checked(payload) {
                    f.detail = m.msg_type();
                    if is_icmp_query(f.detail) {
                        f.sport = m.echo_ident();
                        f.dport = f.sport;
                    }
                }
            }
            _ => {}
        }
        f
    }

    /// The destination port a classifier is asked about (0 for ICMP and others).
    #[inline]
    pub fn policy_port(&self) -> u16 {
        match self.proto {
            PROTO_TCP | PROTO_UDP | PROTO_SCTP => self.dport,
            _ => 0,
        }
    }

    /// The same flow seen from the other side (for re-checks of replies).
    #[inline]
    pub fn reversed(&self) -> Self {
        Flow {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            ..*self
        }
    }

    /// Normalised key and whether the packet's source is side A.
    #[inline]
    fn key(&self) -> (Key<A>, bool) {
        let src_first = (self.src, self.sport) <= (self.dst, self.dport);
        let (a, b, pa, pb) = if src_first {
            (self.src, self.dst, self.sport, self.dport)
        } else {
            (self.dst, self.src, self.dport, self.sport)
        };
        (
            Key {
                addrs: [a, b],
                rest: (u64::from(pa) << 48) | (u64::from(pb) << 32) | u64::from(self.proto),
            },
            src_first,
        )
    }
}

/// ICMP queries, whose identifier keys the flow: echo reply/request (0/8) and the
/// timestamp, information and address-mask requests and replies (13..=18).
#[inline]
fn is_icmp_query(ty: u8) -> bool {
    matches!(
        ty,
        icmp::msg_type::ECHO_REPLY | icmp::msg_type::ECHO_REQUEST | 13..=18
    )
}

/// The flow an ICMPv4 error quotes (RFC 792: the offending IP header + 8 bytes), in
/// the direction the quoted packet travelled. `icmp_msg` is the whole ICMP message.
#[inline]
pub fn icmp_error_inner(icmp_msg: &[u8]) -> Option<Flow<u32>> {
    let msg = icmp::Packet::new_checked(icmp_msg).ok()?;
    if !icmp::is_error(msg.msg_type()) {
        return None;
    }
    let ip = ipv4::Quoted::new_checked(msg.data()).ok()?;
    Some(Flow::parse(
        ip.src_addr(),
        ip.dst_addr(),
        ip.protocol(),
        ip.payload(),
        ip.frag_offset() == 0,
    ))
}

/// A normalised flow key: side A's and side B's address, then both ports and the
/// protocol packed in one word. 16 bytes for IPv4, 48 (with alignment) for IPv6.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Key<A> {
    addrs: [A; 2],
    rest: u64,
}

impl<A: IpKey> Key<A> {
    #[inline]
    fn hash(&self) -> u64 {
        let mut fold = Fold(0);
        self.addrs[0].hash(&mut fold);
        self.addrs[1].hash(&mut fold);
        // Two rounds of a multiply-xorshift mix: cheap, and the low bits (the bucket
        // index) depend on every input bit.
        let mut h = fold.0 ^ self.rest.rotate_left(29);
        h = (h ^ (h >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
        h = (h ^ (h >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
        h ^ (h >> 32)
    }
}

/// Folds the two addresses of a key into one word before [`Key::hash`] mixes it: for
/// IPv4 `a << 32 | b` exactly (both fit; the hash is the IPv4-only table's), for IPv6
/// each address's halves xor-folded. Driven through `Hash`, whose `u32` and `u128`
/// impls call `write_u32` and `write_u128`, so each family compiles to its own few
/// instructions.
struct Fold(u64);

impl Hasher for Fold {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.0 = (self.0 << 32) | u64::from(v);
    }

    #[inline]
    fn write_u128(&mut self, v: u128) {
        let x = (v as u64) ^ ((v >> 64) as u64).rotate_left(32);
        self.0 = self.0.rotate_left(21) ^ x;
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Connection state (TCP uses all; other protocols use `Open` and `Closed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// UDP, ICMP, SCTP, other: a flow (replied or not, see [`Entry`] flags).
    Open = 0,
    SynSent,
    SynRecv,
    Established,
    FinWait,
    TimeWait,
    Closed,
    /// TCP or SCTP flow a policy change no longer allows: its packets are dropped (in
    /// both directions, so the peer's retransmissions cannot pose as a new flow)
    /// until a later generation allows it again, a new SYN/INIT reuses the ports, or
    /// it has been quiet for [`timeout::REVOKED`].
    Revoked,
}

const F_INIT_IS_A: u8 = 0x01;
const F_REPLIED: u8 = 0x02;
const F_FIN_ORIG: u8 = 0x04;
const F_FIN_REPLY: u8 = 0x08;
/// The flow's first packet came from the host port with a non-node source (the node
/// forwarded it, typically after a Service's DNAT): replies go back through the host
/// port so the node can reverse its NAT.
const F_VIA_HOST: u8 = 0x10;

/// One slot (32 bytes for IPv4, 64 for IPv6).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct Entry<A> {
    key: Key<A>,
    /// 0 = free.
    expires: Millis,
    /// Low 32 bits of the table generation the flow was last admitted under.
    epoch: u32,
    state: u8,
    flags: u8,
    _pad: [u8; 2],
}

#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
struct Bucket<A> {
    slots: [Entry<A>; WAYS],
}

const _: () = assert!(std::mem::size_of::<Entry<u32>>() == 32);
const _: () = assert!(std::mem::size_of::<Bucket<u32>>() == 256);
const _: () = assert!(std::mem::size_of::<Entry<u128>>() == 64);

/// Where a flow's entry lives (valid until the next insert, remove or sweep).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(u32);

/// A hit: the entry, and whether the packet travels initiator → responder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub slot: Slot,
    pub original: bool,
    /// Generation the entry was admitted or last re-checked under (low 32 bits).
    pub epoch: u32,
    pub state: State,
    /// The flow entered through the host port (see [`Conntrack::mark_via_host`]).
    pub via_host: bool,
}

/// What [`Conntrack::track`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracked {
    /// No live entry.
    Miss,
    /// A live entry admitted under the current generation, not revoked, not reopened
    /// by this packet: already updated with it (state, timeout, replied).
    Refreshed { original: bool, via_host: bool },
    /// Any other live entry, untouched: the caller re-checks, revokes or reopens it.
    Found(Hit),
}

/// The home bucket was full of replied flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// Counters of one table (single writer: the owning worker).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtStats {
    /// Live-or-not-yet-cleared entries.
    pub entries: u64,
    pub inserts: u64,
    pub evictions: u64,
    pub full: u64,
    pub expired: u64,
}

/// A worker's connection table for one address family.
#[derive(Debug)]
pub struct Conntrack<A: IpKey = u32> {
    buckets: Box<[Bucket<A>]>,
    mask: usize,
    sweep_next: usize,
    pub stats: CtStats,
    /// The owning worker (its row of the per-policy hit counters).
    pub worker: u16,
}

impl<A: IpKey> Conntrack<A> {
    /// A table of at least `capacity` entries (rounded up to a power of two; at least
    /// one bucket). Allocates here, never afterwards.
    pub fn new(capacity: usize) -> Self {
        let buckets = capacity.div_ceil(WAYS).max(1).next_power_of_two();
        Conntrack {
            buckets: vec![Bucket::default(); buckets].into_boxed_slice(),
            mask: buckets - 1,
            sweep_next: 0,
            stats: CtStats::default(),
            worker: 0,
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.buckets.len() * WAYS
    }

    #[inline]
    fn entry(&self, s: Slot) -> Option<&Entry<A>> {
        let i = s.0 as usize;
        self.buckets.get(i / WAYS).map(|b| &b.slots[i % WAYS])
    }

    #[inline]
    fn entry_mut(&mut self, s: Slot) -> Option<&mut Entry<A>> {
        let i = s.0 as usize;
        self.buckets
            .get_mut(i / WAYS)
            .map(|b| &mut b.slots[i % WAYS])
    }

    /// The live entry of `flow` (its slot, and whether the packet travels initiator →
    /// responder); a dead one found on the way is cleared.
    #[inline(always)]
    fn find(&mut self, flow: &Flow<A>, now: Millis) -> Option<(Slot, &mut Entry<A>, bool)> {
        let (key, src_is_a) = flow.key();
        let b = (key.hash() as usize) & self.mask;
        let bucket = &mut self.buckets[b];
        for (w, e) in bucket.slots.iter_mut().enumerate() {
            if e.key == key && e.expires != 0 {
                if e.expires <= now {
                    e.expires = 0;
                    self.stats.entries = self.stats.entries.saturating_sub(1);
                    self.stats.expired += 1;
                    return None;
                }
                let original = src_is_a == (e.flags & F_INIT_IS_A != 0);
                return Some((Slot((b * WAYS + w) as u32), e, original));
            }
        }
        None
    }

    /// The live entry of `flow`, if any; a dead one found on the way is cleared.
    #[inline]
    pub fn lookup(&mut self, flow: &Flow<A>, now: Millis) -> Option<Hit> {
        let (slot, e, original) = self.find(flow, now)?;
        Some(hit(slot, e, original))
    }

    /// [`lookup`](Self::lookup), and for the common case, a live entry admitted under
    /// `epoch`, not revoked, that the packet does not [`reopens`], also the
    /// [`update`](Self::update) a packet allowed by it gets: one bucket walk and no
    /// re-indexing for what most packets of established flows need.
    #[inline(always)]
    pub fn track(&mut self, flow: &Flow<A>, now: Millis, epoch: u32) -> Tracked {
        let Some((slot, e, original)) = self.find(flow, now) else {
            return Tracked::Miss;
        };
        let state = state_from(e.state);
        if e.epoch == epoch && state != State::Revoked && !reopens(flow, state) {
            advance(e, flow, original, now);
            return Tracked::Refreshed {
                original,
                via_host: e.flags & F_VIA_HOST != 0,
            };
        }
        Tracked::Found(hit(slot, e, original))
    }

    /// Insert `flow` (its source is the initiator) admitted under `epoch`, with the
    /// state its first packet sets. Call only after a [`lookup`](Self::lookup) miss.
    #[inline]
    pub fn insert(&mut self, flow: &Flow<A>, epoch: u32, now: Millis) -> Result<Slot, Full> {
        let (key, src_is_a) = flow.key();
        let b = (key.hash() as usize) & self.mask;
        let bucket = &mut self.buckets[b];
        let mut pick = None;
        for (w, e) in bucket.slots.iter().enumerate() {
            if e.expires == 0 {
                self.stats.entries += 1;
                pick = Some(w);
                break;
            }
            if e.expires <= now {
                self.stats.expired += 1;
                pick = Some(w);
                break;
            }
        }
        if pick.is_none() {
            // Early drop: the unreplied (or TCP closed / time-wait: over) entry
            // closest to expiry. Short connections (a Service's clients: two entries
            // each) otherwise fill buckets with finished flows.
            pick = bucket
                .slots
                .iter()
                .enumerate()
                .filter(|(_, e)| e.flags & F_REPLIED == 0 || is_over(e))
                .min_by_key(|(_, e)| e.expires)
                .map(|(w, _)| w);
            if pick.is_some() {
                self.stats.evictions += 1;
            }
        }
        let Some(w) = pick else {
            self.stats.full += 1;
            return Err(Full);
        };
        let (state, expires) = first_state(flow);
        bucket.slots[w] = Entry {
            key,
            expires: now + expires,
            epoch,
            state: state as u8,
            flags: if src_is_a { F_INIT_IS_A } else { 0 },
            _pad: [0; 2],
        };
        self.stats.inserts += 1;
        Ok(Slot((b * WAYS + w) as u32))
    }

    /// Record that the flow's first packet entered from the host port with a non-node
    /// source: its replies must leave through the host port (the node's NAT reverses
    /// there), whatever the route lookup says. Kept until the entry is removed.
    #[inline]
    pub fn mark_via_host(&mut self, s: Slot) {
        if let Some(e) = self.entry_mut(s) {
            e.flags |= F_VIA_HOST;
        }
    }

    /// Record that the flow was re-checked (and still allowed) under `epoch`.
    #[inline]
    pub fn set_epoch(&mut self, s: Slot, epoch: u32) {
        if let Some(e) = self.entry_mut(s) {
            e.epoch = epoch;
        }
    }

    /// Mark a TCP/SCTP entry revoked under `epoch` (see [`State::Revoked`]).
    #[inline]
    pub fn revoke(&mut self, s: Slot, epoch: u32, now: Millis) {
        if let Some(e) = self.entry_mut(s) {
            e.state = State::Revoked as u8;
            e.epoch = epoch;
            e.expires = now + timeout::REVOKED;
        }
    }

    /// A revoked entry allowed again under `epoch`: back to established (TCP) or open.
    #[inline]
    pub fn readmit(&mut self, s: Slot, epoch: u32, proto: u8) {
        if let Some(e) = self.entry_mut(s) {
            e.state = if proto == PROTO_TCP {
                State::Established
            } else {
                State::Open
            } as u8;
            e.epoch = epoch;
        }
    }

    /// Remove an entry (revoked by a policy change, or superseded by a new connection).
    #[inline]
    pub fn remove(&mut self, s: Slot) {
        if let Some(e) = self.entry_mut(s) {
            if e.expires != 0 {
                e.expires = 0;
                self.stats.entries = self.stats.entries.saturating_sub(1);
            }
        }
    }

    /// Advance the state machine of a hit entry with a packet of `flow` travelling in
    /// direction `original`, and refresh its timeout.
    #[inline]
    pub fn update(&mut self, s: Slot, flow: &Flow<A>, original: bool, now: Millis) {
        if let Some(e) = self.entry_mut(s) {
            advance(e, flow, original, now);
        }
    }

    /// Clear dead entries in the next [`SWEEP_BUCKETS`] buckets (round robin). Returns
    /// how many were cleared.
    #[inline]
    pub fn sweep(&mut self, now: Millis) -> usize {
        let mut cleared = 0;
        for _ in 0..SWEEP_BUCKETS.min(self.buckets.len()) {
            let b = self.sweep_next;
            self.sweep_next = (b + 1) & self.mask;
            for e in self.buckets[b].slots.iter_mut() {
                if e.expires != 0 && e.expires <= now {
                    e.expires = 0;
                    cleared += 1;
                }
            }
        }
        self.stats.entries = self.stats.entries.saturating_sub(cleared as u64);
        self.stats.expired += cleared as u64;
        cleared
    }

    /// Remaining lifetime of a flow's entry (tests, trace).
    pub fn expires_in(&mut self, flow: &Flow<A>, now: Millis) -> Option<Millis> {
        let h = self.lookup(flow, now)?;
        self.entry(h.slot).map(|e| e.expires - now)
    }

    /// Remove every entry (tests, and a worker told to forget its flows).
    pub fn clear(&mut self) {
        for b in self.buckets.iter_mut() {
            *b = Bucket::default();
        }
        self.stats.entries = 0;
    }
}

/// [`Conntrack::update`] on the entry itself.
#[inline]
fn advance<A: IpKey>(e: &mut Entry<A>, flow: &Flow<A>, original: bool, now: Millis) {
    if !original {
        e.flags |= F_REPLIED;
    }
    let replied = e.flags & F_REPLIED != 0;
    let (state, t) = match flow.proto {
        PROTO_TCP => {
            let (s, t) = tcp_next(e, flow.detail, original);
            e.state = s as u8;
            if let Some(t) = t {
                e.expires = now + t;
            }
            return;
        }
        PROTO_UDP => (
            State::Open,
            if replied {
                timeout::UDP_REPLIED
            } else {
                timeout::UDP
            },
        ),
        PROTO_ICMP => (State::Open, timeout::ICMP),
        PROTO_SCTP if state_from(e.state) == State::Revoked => (State::Revoked, timeout::REVOKED),
        PROTO_SCTP => {
            if state_from(e.state) == State::Closed
                || flow.detail == SCTP_ABORT
                || flow.detail == SCTP_SHUTDOWN_COMPLETE
            {
                (State::Closed, timeout::SCTP_CLOSED)
            } else if replied {
                (State::Open, timeout::SCTP_REPLIED)
            } else {
                (State::Open, timeout::SCTP)
            }
        }
        _ => (
            State::Open,
            if replied {
                timeout::OTHER_REPLIED
            } else {
                timeout::OTHER
            },
        ),
    };
    e.state = state as u8;
    e.expires = now + t;
}

#[inline]
fn hit<A>(slot: Slot, e: &Entry<A>, original: bool) -> Hit {
    Hit {
        slot,
        original,
        epoch: e.epoch,
        state: state_from(e.state),
        via_host: e.flags & F_VIA_HOST != 0,
    }
}

#[inline]
fn state_from(v: u8) -> State {
    match v {
        1 => State::SynSent,
        2 => State::SynRecv,
        3 => State::Established,
        4 => State::FinWait,
        5 => State::TimeWait,
        6 => State::Closed,
        7 => State::Revoked,
        _ => State::Open,
    }
}

/// A TCP entry whose connection has ended (closed by RST or FIN both ways): evictable
/// like an unreplied one.
#[inline]
fn is_over<A>(e: &Entry<A>) -> bool {
    e.key.rest & 0xff == u64::from(PROTO_TCP)
        && matches!(state_from(e.state), State::Closed | State::TimeWait)
}

/// State and timeout set by a flow's first packet.
#[inline]
fn first_state<A: IpKey>(flow: &Flow<A>) -> (State, Millis) {
    use tcp_flags::*;
    match flow.proto {
        PROTO_TCP => {
            let f = flow.detail;
            if f & RST != 0 {
                (State::Closed, timeout::TCP_CLOSE)
            } else if f & SYN != 0 && f & ACK == 0 {
                (State::SynSent, timeout::TCP_SYN_SENT)
            } else {
                // Mid-stream pickup (e.g. after a daemon restart): the policy allowed
                // this direction, so the flow is taken as established.
                (State::Established, timeout::TCP_ESTABLISHED)
            }
        }
        PROTO_UDP => (State::Open, timeout::UDP),
        PROTO_ICMP => (State::Open, timeout::ICMP),
        PROTO_SCTP => {
            if flow.detail == SCTP_ABORT || flow.detail == SCTP_SHUTDOWN_COMPLETE {
                (State::Closed, timeout::SCTP_CLOSED)
            } else {
                (State::Open, timeout::SCTP)
            }
        }
        _ => (State::Open, timeout::OTHER),
    }
}

/// TCP transitions (a simplification of Linux's table: no window tracking). `None`
/// keeps the entry's deadline.
#[inline]
fn tcp_next<A>(e: &mut Entry<A>, f: u8, original: bool) -> (State, Option<Millis>) {
    use tcp_flags::*;
    let cur = state_from(e.state);
    if f & RST != 0 {
        return (State::Closed, Some(timeout::TCP_CLOSE));
    }
    if f & FIN != 0 {
        e.flags |= if original { F_FIN_ORIG } else { F_FIN_REPLY };
    }
    let both_fin = e.flags & (F_FIN_ORIG | F_FIN_REPLY) == F_FIN_ORIG | F_FIN_REPLY;
    let next = match cur {
        State::SynSent => {
            if !original && f & SYN != 0 && f & ACK != 0 {
                (State::SynRecv, timeout::TCP_SYN_RECV)
            } else {
                (State::SynSent, timeout::TCP_SYN_SENT)
            }
        }
        State::SynRecv => {
            if original && f & ACK != 0 && f & SYN == 0 {
                (State::Established, timeout::TCP_ESTABLISHED)
            } else {
                (State::SynRecv, timeout::TCP_SYN_RECV)
            }
        }
        State::Established | State::Open | State::FinWait => {
            if both_fin {
                (State::TimeWait, timeout::TCP_TIME_WAIT)
            } else if f & FIN != 0 || cur == State::FinWait {
                (State::FinWait, timeout::TCP_FIN_WAIT)
            } else {
                (State::Established, timeout::TCP_ESTABLISHED)
            }
        }
        // Stragglers of a closed connection do not extend it.
        State::TimeWait | State::Closed => return (cur, None),
        State::Revoked => return (cur, Some(timeout::REVOKED)),
    };
    (next.0, Some(next.1))
}

/// True when a packet opens a new connection on the same ports as an entry that is
/// over (TCP SYN without ACK on time-wait, closed or revoked; SCTP INIT on closed or
/// revoked): it must be judged as a new flow, not ride on the old entry.
#[inline]
pub fn reopens<A: IpKey>(flow: &Flow<A>, state: State) -> bool {
    match flow.proto {
        PROTO_TCP => {
            flow.detail & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
                && matches!(state, State::TimeWait | State::Closed | State::Revoked)
        }
        PROTO_SCTP => flow.detail == SCTP_INIT && matches!(state, State::Closed | State::Revoked),
        _ => false,
    }
}

/// True for protocols whose flows are revoked in place rather than forgotten (they
/// have an opening packet that tells a new connection from an old one's stragglers).
#[inline]
pub fn revocable_in_place(proto: u8) -> bool {
    proto == PROTO_TCP || proto == PROTO_SCTP
}

#[cfg(test)]
mod tests {
    use super::tcp_flags::*;
    use super::*;

    const A: u32 = 0x0af4_0005;
    const B: u32 = 0x0af4_0006;

    fn tcp(src: u32, dst: u32, sport: u16, dport: u16, flags: u8) -> Flow {
        Flow {
            src,
            dst,
            sport,
            dport,
            proto: PROTO_TCP,
            detail: flags,
        }
    }

    /// Look up, then insert or update, like the policy stage does for allowed packets.
    fn step<A: IpKey>(ct: &mut Conntrack<A>, f: &Flow<A>, now: Millis) -> Option<Hit> {
        match ct.lookup(f, now) {
            Some(h) => {
                ct.update(h.slot, f, h.original, now);
                Some(h)
            }
            None => {
                ct.insert(f, 1, now).unwrap();
                None
            }
        }
    }

    fn state<A: IpKey>(ct: &mut Conntrack<A>, f: &Flow<A>, now: Millis) -> State {
        ct.lookup(f, now).unwrap().state
    }

    /// `track` does exactly what `lookup` + `update` do for an entry admitted under the
    /// current generation, and leaves every other entry to the caller untouched.
    #[test]
    fn track_refreshes_current_entries_and_leaves_the_rest_alone() {
        let (mut ct, mut twin) = (Conntrack::new(64), Conntrack::new(64));
        let syn = tcp(A, B, 40000, 80, SYN);
        assert_eq!(ct.track(&syn, 1, 7), Tracked::Miss);
        ct.insert(&syn, 7, 1).unwrap();
        twin.insert(&syn, 7, 1).unwrap();
        // The reply, then the handshake's last ACK: refreshed like lookup + update.
        let packets = [
            (tcp(B, A, 80, 40000, SYN | ACK), false),
            (tcp(A, B, 40000, 80, ACK), true),
        ];
        for (i, (f, original)) in packets.iter().enumerate() {
            let now = 2 + i as Millis;
            assert_eq!(
                ct.track(f, now, 7),
                Tracked::Refreshed {
                    original: *original,
                    via_host: false
                }
            );
            let h = twin.lookup(f, now).unwrap();
            twin.update(h.slot, f, h.original, now);
            assert_eq!(ct.lookup(f, now), twin.lookup(f, now));
            assert_eq!(ct.expires_in(f, now), twin.expires_in(f, now));
        }
        assert_eq!(state(&mut ct, &syn, 4), State::Established);
        // Another generation: found, not updated.
        let before = ct.expires_in(&syn, 100);
        let h = ct.lookup(&syn, 100).unwrap();
        assert_eq!(ct.track(&syn, 100, 8), Tracked::Found(h));
        assert_eq!(ct.expires_in(&syn, 100), before);
        // Revoked: found, whatever the generation.
        ct.revoke(h.slot, 7, 100);
        let h = ct.lookup(&syn, 101).unwrap();
        assert_eq!(h.state, State::Revoked);
        assert_eq!(ct.track(&syn, 101, 7), Tracked::Found(h));
        // A SYN reopening a closed connection: found, for the caller to replace.
        let udp = |sport| Flow {
            proto: PROTO_UDP,
            ..tcp(A, B, sport, 53, 0)
        };
        let rst = tcp(A, B, 40001, 80, RST);
        ct.insert(&rst, 7, 200).unwrap();
        let h = ct.lookup(&rst, 201).unwrap();
        assert_eq!(h.state, State::Closed);
        assert_eq!(
            ct.track(&tcp(A, B, 40001, 80, SYN), 201, 7),
            Tracked::Found(h)
        );
        // The host-port mark is reported; an expired entry is a miss and is cleared.
        let slot = ct.insert(&udp(5353), 7, 300).unwrap();
        ct.mark_via_host(slot);
        assert_eq!(
            ct.track(&udp(5353).reversed(), 301, 7),
            Tracked::Refreshed {
                original: false,
                via_host: true
            }
        );
        let expired = ct.stats.expired;
        let later = 301 + timeout::UDP_REPLIED;
        assert_eq!(ct.track(&udp(5353), later, 7), Tracked::Miss);
        assert_eq!(ct.stats.expired, expired + 1);
    }

    #[test]
    fn both_directions_hit_one_entry_and_know_the_initiator() {
        let mut ct = Conntrack::new(64);
        let f = tcp(B, A, 40000, 80, SYN); // B > A: the initiator is side B
        assert!(step(&mut ct, &f, 1).is_none());
        let h = ct.lookup(&f.reversed(), 2).unwrap();
        assert!(!h.original);
        assert!(ct.lookup(&f, 2).unwrap().original);
        // A different source port is another flow.
        assert!(ct.lookup(&tcp(B, A, 40001, 80, SYN), 2).is_none());
        assert_eq!(ct.stats.entries, 1);
    }

    #[test]
    fn tcp_handshake_data_and_close() {
        let mut ct = Conntrack::new(64);
        let c = tcp(A, B, 40000, 80, SYN);
        step(&mut ct, &c, 1);
        assert_eq!(state(&mut ct, &c, 1), State::SynSent);
        assert_eq!(ct.expires_in(&c, 1), Some(timeout::TCP_SYN_SENT));
        step(&mut ct, &c.reversed().with(SYN | ACK), 2);
        assert_eq!(state(&mut ct, &c, 2), State::SynRecv);
        step(&mut ct, &c.with(ACK), 3);
        assert_eq!(state(&mut ct, &c, 3), State::Established);
        assert_eq!(ct.expires_in(&c, 3), Some(timeout::TCP_ESTABLISHED));
        step(&mut ct, &c.with(ACK | FIN), 4);
        assert_eq!(state(&mut ct, &c, 4), State::FinWait);
        step(&mut ct, &c.reversed().with(ACK), 5);
        assert_eq!(state(&mut ct, &c, 5), State::FinWait);
        step(&mut ct, &c.reversed().with(ACK | FIN), 6);
        assert_eq!(state(&mut ct, &c, 6), State::TimeWait);
        assert_eq!(ct.expires_in(&c, 6), Some(timeout::TCP_TIME_WAIT));
        // A new SYN on the same ports is a new connection.
        assert!(reopens(&c, State::TimeWait));
        assert!(!reopens(&c.with(ACK), State::TimeWait));
        assert!(!reopens(&c, State::Established));
        // Gone after the time-wait timeout.
        assert!(ct.lookup(&c, 6 + timeout::TCP_TIME_WAIT).is_none());
        assert_eq!(ct.stats.entries, 0);
    }

    #[test]
    fn tcp_rst_closes_quickly_and_midstream_pickup_is_established() {
        let mut ct = Conntrack::new(64);
        let c = tcp(A, B, 1, 2, ACK);
        step(&mut ct, &c, 1);
        assert_eq!(state(&mut ct, &c, 1), State::Established);
        step(&mut ct, &c.reversed().with(RST), 2);
        assert_eq!(state(&mut ct, &c, 2), State::Closed);
        assert!(ct.lookup(&c, 2 + timeout::TCP_CLOSE - 1).is_some());
        assert!(ct.lookup(&c, 2 + timeout::TCP_CLOSE).is_none());
    }

    #[test]
    fn unestablished_tcp_times_out_after_two_minutes() {
        let mut ct = Conntrack::new(64);
        let c = tcp(A, B, 1, 2, SYN);
        step(&mut ct, &c, 1);
        assert!(ct.lookup(&c, timeout::TCP_SYN_SENT).is_some());
        assert!(ct.lookup(&c, 1 + timeout::TCP_SYN_SENT).is_none());
    }

    #[test]
    fn udp_icmp_sctp_timeouts() {
        let mut ct = Conntrack::new(64);
        let u = Flow {
            proto: PROTO_UDP,
            ..tcp(A, B, 5000, 53, 0)
        };
        step(&mut ct, &u, 1);
        assert_eq!(ct.expires_in(&u, 1), Some(timeout::UDP));
        step(&mut ct, &u, 10);
        assert_eq!(ct.expires_in(&u, 10), Some(timeout::UDP));
        step(&mut ct, &u.reversed(), 20);
        assert_eq!(ct.expires_in(&u, 20), Some(timeout::UDP_REPLIED));
        step(&mut ct, &u, 30);
        assert_eq!(ct.expires_in(&u, 30), Some(timeout::UDP_REPLIED));

        // ICMP echo: request and reply share the identifier.
        let mut req = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
        let ping = Flow::parse(A, B, PROTO_ICMP, &req, true);
        assert_eq!(
            (ping.sport, ping.dport, ping.policy_port()),
            (0x1234, 0x1234, 0)
        );
        step(&mut ct, &ping, 1);
        req[0] = 0;
        let pong = Flow::parse(B, A, PROTO_ICMP, &req, true);
        let h = ct.lookup(&pong, 2).unwrap();
        assert!(!h.original);
        assert_eq!(ct.expires_in(&ping, 2), Some(timeout::ICMP - 1));
        assert!(ct.lookup(&pong, 1 + timeout::ICMP).is_none());

        let s = Flow {
            proto: PROTO_SCTP,
            detail: 1, // INIT
            ..tcp(A, B, 7000, 80, 0)
        };
        step(&mut ct, &s, 1);
        assert_eq!(ct.expires_in(&s, 1), Some(timeout::SCTP));
        step(&mut ct, &s.reversed().with(2), 2); // INIT ACK
        assert_eq!(ct.expires_in(&s, 2), Some(timeout::SCTP_REPLIED));
        step(&mut ct, &s.with(SCTP_ABORT), 3);
        assert_eq!(ct.expires_in(&s, 3), Some(timeout::SCTP_CLOSED));
        assert_eq!(ct.lookup(&s, 3).unwrap().state, State::Closed);
    }

    #[test]
    fn parse_reads_ports_and_survives_truncation() {
        let mut tcp_hdr = [0u8; 20];
        tcp_hdr[..4].copy_from_slice(&[0x9c, 0x40, 0x00, 0x50]);
        tcp_hdr[12] = 0x50;
        tcp_hdr[13] = SYN;
        let f = Flow::parse(A, B, PROTO_TCP, &tcp_hdr, true);
        assert_eq!((f.sport, f.dport, f.detail), (40000, 80, SYN));
        for n in 0..tcp_hdr.len() {
            // Shorter than the TCP header: the ports still name the flow (from 4
            // bytes on), the flags read as 0.
            let t = Flow::parse(A, B, PROTO_TCP, &tcp_hdr[..n], true);
            let want = if n >= 4 { (40000, 80) } else { (0, 0) };
            assert_eq!((t.sport, t.dport, t.detail), (want.0, want.1, 0), "{n}");
            let _ = Flow::parse(A, B, PROTO_SCTP, &tcp_hdr[..n], true);
            let _ = Flow::parse(A, B, PROTO_ICMP, &tcp_hdr[..n], true);
            let _ = icmp_error_inner(&tcp_hdr[..n]);
        }
        // A data offset below 5 words: a malformed header, flags not trusted.
        let mut bad = tcp_hdr;
        bad[12] = 0x40;
        let f = Flow::parse(A, B, PROTO_TCP, &bad, true);
        assert_eq!((f.sport, f.dport, f.detail), (40000, 80, 0));
        let frag = Flow::parse(A, B, PROTO_TCP, &tcp_hdr, false);
        assert_eq!((frag.sport, frag.dport), (0, 0));
        // SCTP: the first chunk's type, from a header whose chunk fits.
        let mut sctp_pkt = [0u8; 16];
        sctp_pkt[..4].copy_from_slice(&[0x1b, 0x58, 0x00, 0x50]);
        sctp_pkt[12] = SCTP_INIT;
        sctp_pkt[15] = 4;
        let f = Flow::parse(A, B, PROTO_SCTP, &sctp_pkt, true);
        assert_eq!((f.sport, f.dport, f.detail), (7000, 80, SCTP_INIT));
        sctp_pkt[15] = 3; // chunk length below its own header
        assert_eq!(Flow::parse(A, B, PROTO_SCTP, &sctp_pkt, true).detail, 0);
        // UDP: a length field that does not fit still names the flow.
        let udp = [0x13, 0xc4, 0x00, 0x35, 0xff, 0xff, 0, 0];
        let f = Flow::parse(A, B, PROTO_UDP, &udp, true);
        assert_eq!((f.sport, f.dport, f.policy_port()), (5060, 53, 53));
    }

    #[test]
    fn icmp_error_names_the_quoted_flow() {
        // Destination unreachable quoting A:40000 → B:80 UDP.
        let mut m = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[9] = PROTO_UDP;
        ip[12..16].copy_from_slice(&A.to_be_bytes());
        ip[16..20].copy_from_slice(&B.to_be_bytes());
        m.extend_from_slice(&ip);
        m.extend_from_slice(&[0x9c, 0x40, 0x00, 0x50, 0, 8, 0, 0]);
        let f = icmp_error_inner(&m).unwrap();
        assert_eq!(
            (f.src, f.dst, f.sport, f.dport, f.proto),
            (A, B, 40000, 80, PROTO_UDP)
        );
        m[0] = 8; // an echo request is not an error
        assert!(icmp_error_inner(&m).is_none());
    }

    #[test]
    fn full_bucket_evicts_unreplied_then_refuses() {
        // One bucket: every flow shares it.
        let mut ct = Conntrack::new(1);
        assert_eq!(ct.capacity(), WAYS);
        let flow = |i: u16| Flow {
            proto: PROTO_UDP,
            ..tcp(A, B, 1000 + i, 53, 0)
        };
        for i in 0..WAYS as u16 {
            ct.insert(&flow(i), 1, 1 + u64::from(i)).unwrap();
        }
        // Unreplied flows are evicted, oldest deadline first.
        ct.insert(&flow(100), 1, 20).unwrap();
        assert_eq!(ct.stats.evictions, 1);
        assert!(ct.lookup(&flow(0), 20).is_none());
        // Once every flow has been replied to, nothing is evicted.
        for i in (1..WAYS as u16).chain([100]) {
            let h = ct.lookup(&flow(i).reversed(), 21).unwrap();
            ct.update(h.slot, &flow(i).reversed(), h.original, 21);
        }
        assert_eq!(ct.insert(&flow(200), 1, 22), Err(Full));
        assert_eq!(ct.stats.full, 1);
        // Expired entries make room again.
        assert!(ct.insert(&flow(200), 1, 22 + timeout::UDP_REPLIED).is_ok());
    }

    #[test]
    fn finished_tcp_connections_are_evicted_like_unreplied_ones() {
        let mut ct = Conntrack::new(1);
        let syn = |i: u16| tcp(A, B, 1000 + i, 80, SYN);
        for i in 0..WAYS as u16 {
            ct.insert(&syn(i), 1, 1).unwrap();
            let h = ct.lookup(&syn(i).reversed(), 2).unwrap();
            ct.update(h.slot, &tcp(B, A, 80, 1000 + i, SYN | ACK), h.original, 2);
        }
        assert_eq!(
            ct.insert(&syn(100), 1, 3),
            Err(Full),
            "all replied and live"
        );
        // Connection 3 ends with a RST: its entry makes room.
        let h = ct.lookup(&syn(3), 4).unwrap();
        ct.update(h.slot, &tcp(A, B, 1003, 80, RST | ACK), h.original, 4);
        assert!(ct.insert(&syn(100), 1, 5).is_ok());
        assert!(ct.lookup(&syn(3), 5).is_none());
        assert_eq!(ct.stats.evictions, 1);
    }

    #[test]
    fn sweep_clears_dead_entries_within_a_round_budget() {
        let mut ct = Conntrack::new(WAYS * SWEEP_BUCKETS * 4);
        for i in 0..50u16 {
            let f = Flow {
                proto: PROTO_UDP,
                ..tcp(A, B, i, 53, 0)
            };
            ct.insert(&f, 1, 1).unwrap();
        }
        assert_eq!(ct.stats.entries, 50);
        let mut cleared = 0;
        for _ in 0..4 {
            cleared += ct.sweep(1 + timeout::UDP);
        }
        assert_eq!(cleared, 50);
        assert_eq!(ct.stats.entries, 0);
    }

    #[test]
    fn epoch_is_kept_per_entry() {
        let mut ct = Conntrack::new(64);
        let c = tcp(A, B, 1, 2, SYN);
        let s = ct.insert(&c, 7, 1).unwrap();
        assert_eq!(ct.lookup(&c, 1).unwrap().epoch, 7);
        ct.set_epoch(s, 8);
        assert_eq!(ct.lookup(&c.reversed(), 1).unwrap().epoch, 8);
        ct.remove(s);
        assert!(ct.lookup(&c, 1).is_none());
    }

    const A6: u128 = 0xfd00_0000_0000_0000_0000_0000_0a00_0005;
    const B6: u128 = 0xfd00_0000_0000_0000_0000_0000_0a00_0006;

    /// The IPv6 instance: same normalisation, state machine and timeouts, 64-byte
    /// slots; an address that differs only in its upper 64 bits is another flow.
    #[test]
    fn ipv6_flows_insert_lookup_and_reverse() {
        let mut ct: Conntrack<u128> = Conntrack::new(64);
        let c = Flow::parse(B6, A6, PROTO_TCP, &syn_segment(40000, 80), true);
        assert_eq!((c.sport, c.dport, c.detail), (40000, 80, SYN));
        assert!(step(&mut ct, &c, 1).is_none());
        assert_eq!(state(&mut ct, &c, 1), State::SynSent);
        let h = ct.lookup(&c.reversed(), 2).unwrap();
        assert!(!h.original, "the reply is not the initiator's direction");
        step(&mut ct, &c.reversed().with(SYN | ACK), 2);
        step(&mut ct, &c.with(ACK), 3);
        assert_eq!(state(&mut ct, &c, 3), State::Established);
        assert_eq!(ct.expires_in(&c, 3), Some(timeout::TCP_ESTABLISHED));
        // Same low 64 bits, other prefix: not this flow.
        let other = Flow {
            src: B6 ^ (1 << 100),
            ..c
        };
        assert!(ct.lookup(&other, 3).is_none());
        assert!(ct.lookup(&Flow { sport: 40001, ..c }, 3).is_none());
        assert_eq!(ct.stats.entries, 1);
        // A UDP flow and its reply.
        let u = Flow {
            proto: PROTO_UDP,
            ..c.with(0)
        };
        step(&mut ct, &u, 4);
        assert_eq!(ct.expires_in(&u, 4), Some(timeout::UDP));
        step(&mut ct, &u.reversed(), 5);
        assert_eq!(ct.expires_in(&u, 5), Some(timeout::UDP_REPLIED));
        assert!(ct.lookup(&u, 5 + timeout::UDP_REPLIED).is_none());
    }

    /// Many IPv6 flows (addresses differing in their upper or lower halves) spread
    /// over the buckets: at 1/8 load no bucket of 8 overflows (an even spread makes
    /// one overflow unlikely, about 1e-6 per bucket), and every flow is found again in
    /// both directions; the IPv4 table never sees them.
    #[test]
    fn ipv6_table_holds_many_flows() {
        let mut ct: Conntrack<u128> = Conntrack::new(16_384);
        let mut v4: Conntrack = Conntrack::new(64);
        let flow = |i: u32| Flow {
            src: A6 + (u128::from(i) << 64),
            dst: B6 + u128::from(i % 7),
            sport: 1024 + (i % 1000) as u16,
            dport: 443,
            proto: PROTO_TCP,
            detail: SYN,
        };
        for i in 0..2000 {
            ct.insert(&flow(i), 1, 1).unwrap();
        }
        assert_eq!(ct.stats.entries, 2000);
        assert_eq!(ct.stats.evictions, 0, "{:?}", ct.stats);
        for i in 0..2000 {
            assert!(ct.lookup(&flow(i), 2).unwrap().original);
            assert!(!ct.lookup(&flow(i).reversed(), 2).unwrap().original);
        }
        let f4 = tcp(A, B, 1024, 443, SYN);
        assert!(v4.lookup(&f4, 2).is_none());
    }

    /// The IPv4 key hashes exactly as the IPv4-only table's did (addresses packed as
    /// `a << 32 | b`), so its bucket spread is unchanged.
    #[test]
    fn ipv4_hash_is_the_packed_key_hash() {
        let k = tcp(A, B, 40000, 80, SYN).key().0;
        let packed = (u64::from(A) << 32) | u64::from(B);
        let mut h = packed ^ k.rest.rotate_left(29);
        h = (h ^ (h >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
        h = (h ^ (h >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
        assert_eq!(k.hash(), h ^ (h >> 32));
    }

    fn syn_segment(sport: u16, dport: u16) -> [u8; 20] {
        let mut b = [0u8; 20];
        let mut t = tcp::Packet::new_unchecked(&mut b[..]);
        t.set_src_port(sport);
        t.set_dst_port(dport);
        t.set_header_len(20);
        t.set_flags(SYN);
        b
    }

    impl<A: IpKey> Flow<A> {
        fn with(self, detail: u8) -> Self {
            Flow { detail, ..self }
        }
    }
}
