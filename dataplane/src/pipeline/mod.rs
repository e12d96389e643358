//! Pure packet-processing stages, one file each, in a packet's order:
//!
//! ```text
//! ethernet dispatch ─┬─ ARP ──────────── arp (proxy answer in place) ─────────── Reply
//!                    └─ IPv4 ─ [decap] ─ l3 (checks, anti-spoofing, gateway ICMP)
//!                              ─ route (local | host | remote) ─ l3 TTL / time exceeded
//!                              ─ policy (+ conntrack) ─ rewrite (TTL, MACs) ─ [encap]
//! ```
//!
//! Sans-I/O: a stage takes a frame, its [`PacketCtx`] and a table snapshot, and returns
//! a [`Verdict`]. It touches no socket, clock, allocator or logger, so the same code
//! runs in the workers, the unit tests, the fuzzers and the criterion benches.
//! Malformed input is a `Verdict::Drop(reason)`, never a panic or an `Err`; the worker
//! counts drops per ingress port in an array indexed by [`DropReason`] (which, with the
//! other counters, lives in [`crate::counters`] and is re-exported here).
//!
//! Frames and headroom: a stage sees the whole UMEM chunk; the packet is
//! `buf[ctx.start..][..ctx.len]`. The [`encap`] stage moves `start` back and writes the
//! outer headers in the headroom in front, in place; [`decap`] moves it forward. For
//! every transmitting verdict the worker sends exactly that window.
//!
//! [`process`] is the whole per-frame pipeline; [`forward`] sequences the IPv4 stages
//! ([`l3`], [`route`], [`policy`] with its per-worker [`conntrack`] table, [`rewrite`],
//! [`encap`]). The worker runs it over a burst of [`BURST`] frames and acts on each
//! verdict.

pub mod arp;
pub mod conntrack;
pub mod decap;
pub mod encap;
pub mod forward;
pub mod l3;
pub mod policy;
pub mod rewrite;
pub mod route;
#[cfg(test)]
pub(crate) mod testutil;

use crate::packet::addr::L3;
use crate::packet::ethernet::{self, Frame};
use crate::tables::{PortId, PortKind, Tables};

pub use crate::counters::{bump, DropReason, PolicyHits, PortCounters, BURST};
pub use conntrack::{Conntrack, Millis};

/// Where a frame's packet is inside its chunk, and what the stages learnt about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketCtx {
    /// Offset of the packet's first byte (its Ethernet header) in the chunk.
    pub start: usize,
    /// Packet length from `start` in this buffer.
    pub len: usize,
    /// Bytes of the packet in further buffers (a multi-buffer chain, issue 11; the
    /// head buffer holds every header a stage reads); 0 for a single buffer. Replies
    /// (`Verdict::Reply`) are built in the head alone and reset it to 0.
    pub tail: usize,
    /// Network-layer family, once the Ethernet stage has seen it.
    pub l3: L3,
    /// The port the frame came in on.
    pub ingress: PortId,
    /// What sits behind the ingress port (filled in from the snapshot by [`process`]).
    pub ingress_kind: PortKind,
}

impl PacketCtx {
    /// A frame received on `ingress` whose packet is `buf[start..][..len]`.
    #[inline]
    pub fn new(start: usize, len: usize, ingress: PortId) -> Self {
        PacketCtx {
            start,
            len,
            tail: 0,
            l3: L3::None,
            ingress,
            ingress_kind: PortKind::Pod,
        }
    }
}

/// What the worker does with one frame after the pipeline. Every transmitting verdict
/// sends `buf[ctx.start..][..ctx.len]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the (rewritten) frame on this port.
    Forward(PortId),
    /// Transmit on this port (the uplink) the frame with the outer headers for the
    /// remote node already written in front of it. Only the port: a verdict stays 4
    /// bytes, returned in one register (the node is in the outer destination address).
    Encap(PortId),
    /// Transmit on this port the inner frame of a decapsulated VXLAN packet.
    Decap(PortId),
    /// Transmit the frame rewritten in place as a reply (ARP reply, ICMP echo reply or
    /// error) back on the ingress port.
    Reply,
    /// Drop and count.
    Drop(DropReason),
}

impl Verdict {
    /// The port this verdict transmits on, given the ingress port (`None` = drop).
    #[inline]
    pub fn egress(self, ingress: PortId) -> Option<PortId> {
        match self {
            Verdict::Forward(p) | Verdict::Decap(p) | Verdict::Encap(p) => Some(p),
            Verdict::Reply => Some(ingress),
            Verdict::Drop(_) => None,
        }
    }
}

/// Process one frame.
///
/// `buf` is the frame's whole chunk (headroom, packet, tail room); the packet is
/// `buf[ctx.start..][..ctx.len]`. The frame may be rewritten in place, and `ctx.start`
/// / `ctx.len` moved, by the stages. `ct` is the calling worker's connection table and
/// `now` its coarse clock (read once per round): the policy stage uses both. Never
/// panics, whatever `buf` and `ctx` hold.
///
/// Order of decisions: a window past the buffer → `Truncated` (a descriptor claiming
/// more bytes than the frame holds is not clamped: the missing tail would otherwise be
/// forwarded as whatever the frame held before); under 14 bytes → `Truncated`; an
/// EtherType other than ARP or IPv4 → `UnsupportedEthertype`; an ingress port the
/// snapshot does not know → `UnknownIngress`; then the ARP stage (not on the uplink:
/// `ArpUnsupported`), or for IPv4 the decap stage (uplink only) and the forward stages.
///
/// Shape: this function is the cheap front (bounds, EtherType, ingress, ARP, the IPv4
/// header check) and is always inlined into the caller's loop, so early drops and ARP
/// replies pay no call; the pod/host IPv4 path ([`forward`]) is inlined behind it with
/// its rare branches out of line; the uplink's path ([`decap::decap_and_forward`]) is
/// out of line.
///
/// Measured cost at burst 64: ~2.6 ns/pkt for an early drop (EtherType), ~8 ns/pkt for
/// an ARP reply, ~15 ns/pkt for an IPv4 forward (100-pod FIB); exactly ~35, ~113 and
/// ~564 instructions per packet (callgrind). See bench/RESULTS.md, "Issue 7".
#[inline(always)]
pub fn process(
    buf: &mut [u8],
    ctx: &mut PacketCtx,
    tables: &Tables,
    ct: &mut Conntrack,
    now: Millis,
) -> Verdict {
    let Some(end) = ctx.start.checked_add(ctx.len) else {
        return Verdict::Drop(DropReason::Truncated);
    };
    let Some(frame) = buf.get(ctx.start..end) else {
        return Verdict::Drop(DropReason::Truncated);
    };
    let Ok(eth) = Frame::new_checked(frame) else {
        return Verdict::Drop(DropReason::Truncated);
    };
    let ethertype = eth.ethertype();
    if ethertype != ethernet::ethertype::ARP && ethertype != ethernet::ethertype::IPV4 {
        return Verdict::Drop(DropReason::UnsupportedEthertype);
    }
    let Some(port) = tables.port(ctx.ingress) else {
        return Verdict::Drop(DropReason::UnknownIngress);
    };
    ctx.ingress_kind = port.kind;
    if ethertype == ethernet::ethertype::ARP {
        if port.kind == PortKind::Uplink {
            return Verdict::Drop(DropReason::ArpUnsupported);
        }
        return arp::answer(&mut buf[ctx.start..end], ctx, port);
    }
    ctx.l3 = L3::Ipv4;
    if ctx.tail != 0 {
        if let Err(r) = chain_check(frame, ctx, port) {
            return Verdict::Drop(r);
        }
    } else {
        if port.kind == PortKind::Uplink {
            return decap::decap_and_forward(buf, ctx, port, tables, ct, now);
        }
        if let Err(r) = l3::check(frame, port) {
            return Verdict::Drop(r);
        }
    }
    forward::forward(buf, ctx, port, tables, ct, now)
}

/// The IPv4 checks of a multi-buffer packet's head (out of line: chains are rare
/// per packet and large): never from the uplink (it is bound without multi-buffer),
/// and [`l3::check_chain`].
#[cold]
#[inline(never)]
fn chain_check(
    frame: &[u8],
    ctx: &PacketCtx,
    port: &crate::tables::PortInfo,
) -> Result<(), DropReason> {
    if port.kind == PortKind::Uplink {
        return Err(DropReason::ChainNotAllowed);
    }
    l3::check_chain(frame, ctx.tail, port).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use crate::packet::checksum;
    use crate::tables::GATEWAY_IP;
    use crate::xsk::HEADROOM;

    fn run_ctx(buf: &mut [u8], ctx: &mut PacketCtx) -> Verdict {
        process(buf, ctx, &tables(), &mut ct(), 1)
    }

    #[test]
    fn short_frames_and_overlong_windows_are_truncated() {
        let f = udp(POD_A, IP_A, IP_B, 64, 18);
        for len in 0..14 {
            let (mut buf, mut ctx) = umem(&f, POD_A);
            ctx.len = len;
            assert_eq!(
                run_ctx(&mut buf, &mut ctx),
                Verdict::Drop(DropReason::Truncated)
            );
        }
        // A window beyond the buffer is not clamped: the frame does not hold what it claims.
        let (mut buf, mut ctx) = umem(&f, POD_A);
        ctx.len = FRAME_CAP - HEADROOM + 1;
        assert_eq!(
            run_ctx(&mut buf, &mut ctx),
            Verdict::Drop(DropReason::Truncated)
        );
        let mut exact = f.clone();
        let mut ctx = PacketCtx::new(0, f.len() + 1, POD_A);
        assert_eq!(
            run_ctx(&mut exact, &mut ctx),
            Verdict::Drop(DropReason::Truncated)
        );
        for (start, len) in [(0, usize::MAX), (usize::MAX, 1), (usize::MAX, usize::MAX)] {
            let mut ctx = PacketCtx::new(start, len, POD_A);
            assert_eq!(
                run_ctx(&mut [], &mut ctx),
                Verdict::Drop(DropReason::Truncated)
            );
        }
    }

    #[test]
    fn other_ethertypes_are_unsupported() {
        for ty in [0x86dd_u16, 0x8100, 0x88cc, 0x0000, 0xffff] {
            let mut f = udp(POD_A, IP_A, IP_B, 64, 18);
            f[12..14].copy_from_slice(&ty.to_be_bytes());
            assert_eq!(
                run_frame(&f, POD_A, &tables()).0,
                Verdict::Drop(DropReason::UnsupportedEthertype)
            );
        }
    }

    #[test]
    fn unknown_ingress_is_dropped_before_any_stage() {
        for f in [
            udp(POD_A, IP_A, IP_B, 64, 18),
            arp_request(POD_A, IP_A, GATEWAY_IP),
        ] {
            for ingress in [GONE, UNKNOWN, PortId::MAX] {
                assert_eq!(
                    run_frame(&f, ingress, &tables()).0,
                    Verdict::Drop(DropReason::UnknownIngress)
                );
            }
        }
    }

    #[test]
    fn the_context_learns_family_and_ingress_kind() {
        let (mut buf, mut ctx) = umem(&udp(HOST, IP_OUTSIDE, IP_A, 64, 8), HOST);
        assert_eq!(run_ctx(&mut buf, &mut ctx), Verdict::Forward(POD_A));
        assert_eq!((ctx.l3, ctx.ingress_kind), (L3::Ipv4, PortKind::Host));
        assert_eq!(ctx.start, HEADROOM, "a local forward stays in place");
        assert_eq!(Verdict::Reply.egress(7), Some(7));
        assert_eq!(Verdict::Encap(4).egress(7), Some(4));
        assert_eq!(Verdict::Decap(2).egress(7), Some(2));
        assert_eq!(Verdict::Drop(DropReason::NoRoute).egress(7), None);
    }

    #[test]
    fn arp_on_the_uplink_is_not_answered() {
        assert_eq!(
            run_frame(&arp_request(UPLINK, IP_REMOTE, IP_A), UPLINK, &tables()).0,
            Verdict::Drop(DropReason::ArpUnsupported)
        );
    }

    /// xorshift64: deterministic, seedable, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// The IPv4 header at `at` verifies (ours and etherparse's opinion; etherparse's
    /// header has no field for the reserved flag bit, so its recomputed checksum leaves
    /// that bit out and is only compared when it is clear).
    fn assert_ipv4_ok(w: &[u8], at: usize, what: &str) {
        let hl = usize::from(w[at] & 0x0f) * 4;
        assert!(
            checksum::verifies(&w[at..at + hl]),
            "{what}: bad IPv4 checksum"
        );
        let h = etherparse::Ipv4HeaderSlice::from_slice(&w[at..]).unwrap();
        if w[at + 6] & 0x80 == 0 {
            assert_eq!(
                h.header_checksum(),
                h.to_header().calc_header_checksum(),
                "{what}"
            );
        }
    }

    /// 200k random and mutated-valid frames of random lengths, capacities and headroom
    /// through `process`: it must never panic, and every verdict must leave a window
    /// that is valid for it: `Forward`/`Decap` an IPv4 frame with a valid checksum on a
    /// known port, `Encap` a complete VXLAN frame (outer IPv4 and UDP checksums, flags,
    /// VNI) around a valid inner one, `Reply` a frame inside the chunk that verifies.
    #[test]
    fn random_and_mutated_frames_never_panic_and_every_verdict_is_well_formed() {
        let t = tables();
        let zero_csum = |inner: Vec<u8>| {
            let mut v = vxlan_from_b(&inner);
            v[40..42].copy_from_slice(&[0, 0]);
            v
        };
        let seeds: Vec<(Vec<u8>, PortId)> = vec![
            (udp(POD_A, IP_A, IP_B, 64, 18), POD_A),
            (udp(POD_A, IP_A, IP_OUTSIDE, 2, 100), POD_A),
            (udp(HOST, IP_OUTSIDE, IP_B, 1, 30), HOST),
            (ping(POD_A, IP_A, GATEWAY_IP, 56), POD_A),
            (ping(POD_B, IP_B, IP_A, 8), POD_B),
            (arp_request(POD_A, IP_A, GATEWAY_IP), POD_A),
            (arp_request(HOST, IP_OUTSIDE, IP_B), HOST),
            (udp(POD_A, IP_A, IP_REMOTE, 64, 40), POD_A),
            (udp(HOST, IP_OUTSIDE, IP_REMOTE, 64, 10), HOST),
            (vxlan_from_b(&inner_udp(IP_REMOTE, IP_A, 64, 20)), UPLINK),
            (zero_csum(inner_udp(IP_REMOTE, IP_B, 64, 5)), UPLINK),
            (zero_csum(inner_udp(IP_OUTSIDE, IP_A, 64, 5)), UPLINK),
            // Larger than the tunnel: frag-needed (DF) or EncapTooBig.
            (udp(POD_A, IP_A, IP_REMOTE, 64, 1440), POD_A),
            (
                {
                    let mut f = udp(POD_A, IP_A, IP_REMOTE, 64, 1440);
                    f[20] ^= 0x40;
                    fix_ipv4_checksum(&mut f);
                    f
                },
                POD_A,
            ),
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // forward, encap, decap, reply, drop
        let mut seen = [0usize; 5];
        let mut reasons = [0usize; DropReason::COUNT];
        let mut table = ct();
        for i in 0..200_000 {
            let cap = rng.below(FRAME_CAP + 1);
            let mut buf = vec![0u8; cap];
            let start = match rng.below(8) {
                0 => rng.below(cap + 1),
                1 => rng.below(64).min(cap),
                _ => HEADROOM.min(cap),
            };
            let (len, ingress);
            // Sometimes the head of a multi-buffer chain with `tail` more bytes.
            let mut tail = 0;
            if i % 2 == 0 {
                // Random bytes, biased towards ARP/IPv4 so the stages get exercised.
                for b in buf.iter_mut() {
                    *b = rng.next() as u8;
                }
                if cap >= start + 15 {
                    let ty: u16 = [0x0800, 0x0806, rng.next() as u16][rng.below(3)];
                    buf[start + 12..start + 14].copy_from_slice(&ty.to_be_bytes());
                    buf[start + 14] = [0x45, 0x46, 0x4f, buf[start + 14]][rng.below(4)];
                }
                len = if rng.below(16) == 0 {
                    cap - start + rng.below(100)
                } else {
                    rng.below(cap - start + 1)
                };
                ingress = rng.below(6) as PortId;
            } else {
                let (seed, seed_ingress) = &seeds[rng.below(seeds.len())];
                let mut f = seed.clone();
                for _ in 0..=rng.below(4) {
                    let at = rng.below(f.len());
                    f[at] = rng.next() as u8;
                }
                if f[12..14] == [0x08, 0x00] && rng.below(2) == 0 && f.len() >= 34 {
                    fix_ipv4_checksum(&mut f);
                }
                let flen = match rng.below(4) {
                    0 => rng.below(f.len() + 1),
                    1 => f.len() + rng.below(64),
                    _ => f.len(),
                };
                f.resize(flen, 0);
                if rng.below(8) == 0 && flen >= 34 {
                    tail = 1 + rng.below(4000);
                    if rng.below(4) != 0 && f[12..14] == [0x08, 0x00] {
                        let total = (flen - 14 + tail) as u16;
                        f[16..18].copy_from_slice(&total.to_be_bytes());
                        fix_ipv4_checksum(&mut f);
                    }
                }
                let cap = cap.max((start + flen).saturating_sub(rng.below(2)));
                buf = vec![0u8; cap];
                let n = flen.min(cap - start);
                buf[start..start + n].copy_from_slice(&f[..n]);
                len = flen;
                ingress = if rng.below(4) == 0 {
                    rng.below(6) as PortId
                } else {
                    *seed_ingress
                };
            }
            let mut ctx = PacketCtx::new(start, len, ingress);
            ctx.tail = tail;
            let v = process(&mut buf, &mut ctx, &t, &mut table, 1 + i as u64);
            if tail != 0 {
                assert!(
                    !matches!(v, Verdict::Encap(_) | Verdict::Decap(_)),
                    "a chain never enters or leaves the tunnel, case {i}"
                );
            }
            let w = match v {
                Verdict::Drop(_) => &[][..],
                _ => buf
                    .get(ctx.start..)
                    .and_then(|b| b.get(..ctx.len))
                    .unwrap_or_else(|| panic!("window outside the chunk, case {i}")),
            };
            match v {
                Verdict::Forward(p) | Verdict::Decap(p) => {
                    seen[if matches!(v, Verdict::Forward(_)) {
                        0
                    } else {
                        2
                    }] += 1;
                    let kind = t.port(p).expect("known port").kind;
                    assert_ne!(kind, PortKind::Uplink, "case {i}");
                    if matches!(v, Verdict::Decap(_)) {
                        assert_eq!(ingress, UPLINK, "case {i}");
                        assert_eq!(ctx.start, start + 50, "case {i}");
                    } else {
                        assert_eq!((ctx.start, ctx.len), (start, len), "case {i}");
                    }
                    assert_eq!(w[12..14], [0x08, 0x00]);
                    if ctx.tail == 0 {
                        assert_ipv4_ok(w, 14, &format!("forward case {i}"));
                    } else {
                        // The head of a chain: the header is whole and consistent.
                        let hl = usize::from(w[14] & 0x0f) * 4;
                        assert!(checksum::verifies(&w[14..14 + hl]), "case {i}");
                        let total = usize::from(u16::from_be_bytes([w[16], w[17]]));
                        assert_eq!(total, ctx.len - 14 + ctx.tail, "case {i}");
                    }
                }
                Verdict::Encap(port) => {
                    seen[1] += 1;
                    assert_eq!(port, UPLINK, "case {i}");
                    assert_eq!((ctx.start, ctx.len), (start - 50, len + 50), "case {i}");
                    let p = etherparse::SlicedPacket::from_ethernet(w).unwrap();
                    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
                        panic!("not IPv4, case {i}")
                    };
                    assert_ipv4_ok(w, 14, &format!("outer, case {i}"));
                    assert_eq!(ip.header().destination_addr(), UNDERLAY_B, "case {i}");
                    let Some(etherparse::TransportSlice::Udp(u)) = &p.transport else {
                        panic!("not UDP, case {i}")
                    };
                    assert_eq!(u.destination_port(), VXLAN_PORT);
                    assert!((32768..=60999).contains(&u.source_port()));
                    let want = u
                        .to_header()
                        .calc_checksum_ipv4(&ip.header().to_header(), u.payload())
                        .unwrap();
                    assert_eq!(u.checksum(), want, "outer UDP checksum, case {i}");
                    assert_eq!(u.payload()[..8], [0x08, 0, 0, 0, 0, 0, 1, 0]);
                    assert_ipv4_ok(&u.payload()[8..], 14, &format!("inner, case {i}"));
                }
                Verdict::Reply => {
                    seen[3] += 1;
                    assert_eq!(ctx.start, start, "a reply starts where the request did");
                    if w[12..14] == [0x08, 0x00] {
                        assert_ipv4_ok(w, 14, &format!("reply case {i}"));
                        let hl = usize::from(w[14] & 0x0f) * 4;
                        assert!(
                            checksum::verifies(&w[14 + hl..]),
                            "reply bad ICMP checksum, case {i}"
                        );
                    }
                }
                Verdict::Drop(r) => {
                    seen[4] += 1;
                    reasons[r as usize] += 1;
                }
            }
        }
        // The generator must actually reach every verdict, or the test proves little.
        assert!(seen.iter().all(|&n| n > 500), "verdict mix {seen:?}");
        for r in DropReason::ALL {
            // The worker's reasons (rings, frames) cannot come out of `process`; these
            // tables carry no policy (the policy stage's own tests cover its reasons).
            let workers = [
                DropReason::ChainTooLong,
                DropReason::ChainTruncated,
                DropReason::TxRingFull,
                DropReason::HandoffFull,
                DropReason::NoFrame,
                DropReason::PolicyDenied,
                DropReason::ConntrackFull,
            ];
            if !workers.contains(&r) {
                assert!(
                    reasons[r as usize] > 0,
                    "{} never reached: {reasons:?}",
                    r.as_str()
                );
            }
        }
    }
}
