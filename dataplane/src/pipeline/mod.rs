//! Pure packet-processing stages: parse → ARP answer | IPv4 checks → route → rewrite.
//!
//! Sans-I/O: a stage takes a frame's bytes, the ingress port and a table snapshot, and
//! returns a [`Verdict`]. It touches no socket, clock, allocator or logger, so the same
//! code runs in the workers, the unit tests, the fuzzers and the criterion benches.
//! Malformed input is a `Verdict::Drop(reason)`, never a panic or an `Err`; the worker
//! counts drops per ingress port in an array indexed by [`DropReason`].
//!
//! [`process`] is the whole per-frame pipeline: Ethernet dispatch, then the
//! [`arp`] stage (proxy ARP, answered in place) or the [`forward`] stage (IPv4 checks,
//! anti-spoofing, route, TTL, MAC rewrite, the gateway's ICMP answers). The worker runs
//! it over a burst of [`BURST`] frames and acts on each verdict.

pub mod arp;
pub mod forward;
#[cfg(test)]
mod testutil;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::packet::ethernet::{self, Frame};
use crate::tables::{PortId, Tables};

/// Packets taken from a ring in one go and processed to completion.
pub const BURST: usize = 64;

/// Why a packet was dropped. Closed set: each value indexes a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than the headers it claims (Ethernet, ARP or IPv4).
    Truncated = 0,
    /// Neither IPv4 nor ARP (IPv6, VLAN tags, LLDP, …).
    UnsupportedEthertype,
    /// ARP that is not Ethernet/IPv4, or not a request.
    ArpUnsupported,
    /// IPv4 version field is not 4.
    Ipv4BadVersion,
    /// IHL below 5 or beyond the frame.
    Ipv4BadHeaderLength,
    /// Total length below the header or beyond the frame.
    Ipv4BadTotalLength,
    /// IPv4 header checksum does not verify.
    Ipv4BadChecksum,
    /// TTL would reach zero.
    TtlExpired,
    /// A pod sent from an address that is not its own.
    SpoofedSource,
    /// No pod owns the destination and there is no host port.
    NoRoute,
    /// The frame arrived on a port the snapshot does not know (just removed/added).
    UnknownIngress,
    /// The egress port's TX ring had no room.
    TxRingFull,
    /// The ring to the worker owning the egress port was full.
    HandoffFull,
    /// No free frame was available (e.g. to build an ICMP error).
    NoFrame,
    /// Addressed to the link-local gateway but not something it answers: the gateway
    /// is the dataplane itself and answers only complete, unfragmented, checksum-valid
    /// ICMP echo requests with a plain 20-byte IPv4 header.
    GatewayUnsupported,
}

impl DropReason {
    /// Number of reasons (size of counter arrays).
    pub const COUNT: usize = 15;

    /// Every reason, in index order.
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Truncated,
        DropReason::UnsupportedEthertype,
        DropReason::ArpUnsupported,
        DropReason::Ipv4BadVersion,
        DropReason::Ipv4BadHeaderLength,
        DropReason::Ipv4BadTotalLength,
        DropReason::Ipv4BadChecksum,
        DropReason::TtlExpired,
        DropReason::SpoofedSource,
        DropReason::NoRoute,
        DropReason::UnknownIngress,
        DropReason::TxRingFull,
        DropReason::HandoffFull,
        DropReason::NoFrame,
        DropReason::GatewayUnsupported,
    ];

    /// Stable snake_case name used in stats output.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::UnsupportedEthertype => "unsupported_ethertype",
            DropReason::ArpUnsupported => "arp_unsupported",
            DropReason::Ipv4BadVersion => "ipv4_bad_version",
            DropReason::Ipv4BadHeaderLength => "ipv4_bad_header_length",
            DropReason::Ipv4BadTotalLength => "ipv4_bad_total_length",
            DropReason::Ipv4BadChecksum => "ipv4_bad_checksum",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::NoRoute => "no_route",
            DropReason::UnknownIngress => "unknown_ingress",
            DropReason::TxRingFull => "tx_ring_full",
            DropReason::HandoffFull => "handoff_full",
            DropReason::NoFrame => "no_frame",
            DropReason::GatewayUnsupported => "gateway_unsupported",
        }
    }
}

/// What the worker does with one frame after the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the (rewritten) frame, same length, on this port.
    Forward(PortId),
    /// Transmit the frame rewritten in place as a reply, `len` bytes long, back on the
    /// ingress port (ARP reply, ICMP error).
    Reply { len: u16 },
    /// Drop and count.
    Drop(DropReason),
}

/// Process one frame.
///
/// `buf` is the whole writable data area of the frame (its capacity); the packet is
/// `buf[..len]`. The frame may be rewritten in place. `ingress` is the port it came in
/// on. Never panics, whatever `buf` holds.
///
/// Order of decisions: `len > buf.len()` → `Truncated` (a descriptor claiming more
/// bytes than the frame holds is not clamped: the missing tail would otherwise be
/// forwarded as whatever the frame held before); under 14 bytes → `Truncated`; an
/// EtherType other than ARP or IPv4 → `UnsupportedEthertype`; an ingress port the
/// snapshot does not know → `UnknownIngress`; then the ARP or IPv4 stage.
///
/// Measured cost at burst 64: ~2.6 ns/pkt for an early drop (EtherType), ~8 ns/pkt for
/// an ARP reply, ~15 ns/pkt for an IPv4 forward (100-pod FIB), see bench/RESULTS.md.
#[inline]
pub fn process(buf: &mut [u8], len: usize, ingress: PortId, tables: &Tables) -> Verdict {
    let Some(frame) = buf.get(..len) else {
        return Verdict::Drop(DropReason::Truncated);
    };
    let Ok(eth) = Frame::new_checked(frame) else {
        return Verdict::Drop(DropReason::Truncated);
    };
    let ethertype = eth.ethertype();
    if ethertype != ethernet::ethertype::ARP && ethertype != ethernet::ethertype::IPV4 {
        return Verdict::Drop(DropReason::UnsupportedEthertype);
    }
    let Some(port) = tables.port(ingress) else {
        return Verdict::Drop(DropReason::UnknownIngress);
    };
    if ethertype == ethernet::ethertype::ARP {
        arp::answer(&mut buf[..len], port)
    } else {
        forward::forward(buf, len, ingress, port, tables)
    }
}

/// Single-writer counter helpers: a port's counters are written only by the worker that
/// owns the port, so a relaxed load + store (a plain `mov` on x86) is enough; readers
/// sum with relaxed loads and may see a value one burst old.
#[inline]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// Counters of one port, padded to its own cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct PortCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub drops: [AtomicU64; DropReason::COUNT],
}

impl PortCounters {
    /// Count one dropped packet.
    #[inline]
    pub fn count_drop(&self, r: DropReason) {
        bump(&self.drops[r as usize], 1);
    }

    /// Zero every counter (port slot being reused; called only while no worker owns it).
    pub fn reset(&self) {
        for c in [
            &self.rx_packets,
            &self.rx_bytes,
            &self.tx_packets,
            &self.tx_bytes,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        for d in &self.drops {
            d.store(0, Ordering::Relaxed);
        }
    }

    /// Sum of all drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(|d| d.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use crate::packet::checksum;
    use crate::tables::GATEWAY_IP;

    #[test]
    fn drop_reason_table_is_consistent() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }

    #[test]
    fn short_frames_and_overlong_len_are_truncated() {
        let t = tables();
        let f = udp(POD_A, IP_A, IP_B, 64, 18);
        for len in 0..14 {
            let (mut buf, _) = umem(&f);
            assert_eq!(
                process(&mut buf, len, POD_A, &t),
                Verdict::Drop(DropReason::Truncated)
            );
        }
        // len beyond the buffer is not clamped: the frame does not hold what it claims.
        let mut exact = f.clone();
        assert_eq!(
            process(&mut exact, f.len() + 1, POD_A, &t),
            Verdict::Drop(DropReason::Truncated)
        );
        assert_eq!(
            process(&mut [], usize::MAX, POD_A, &t),
            Verdict::Drop(DropReason::Truncated)
        );
    }

    #[test]
    fn other_ethertypes_are_unsupported() {
        let t = tables();
        for ty in [0x86dd_u16, 0x8100, 0x88cc, 0x0000, 0xffff] {
            let mut f = udp(POD_A, IP_A, IP_B, 64, 18);
            f[12..14].copy_from_slice(&ty.to_be_bytes());
            let (mut buf, len) = umem(&f);
            assert_eq!(
                process(&mut buf, len, POD_A, &t),
                Verdict::Drop(DropReason::UnsupportedEthertype)
            );
        }
    }

    #[test]
    fn unknown_ingress_is_dropped_before_any_stage() {
        let t = tables();
        for f in [
            udp(POD_A, IP_A, IP_B, 64, 18),
            arp_request(POD_A, IP_A, GATEWAY_IP),
        ] {
            for ingress in [GONE, 4, PortId::MAX] {
                let (mut buf, len) = umem(&f);
                assert_eq!(
                    process(&mut buf, len, ingress, &t),
                    Verdict::Drop(DropReason::UnknownIngress)
                );
            }
        }
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

    /// 200k random and mutated-valid frames of random lengths and capacities through
    /// `process`: it must never panic, a `Forward` must keep the length and carry a
    /// valid IPv4 checksum, and a `Reply` must fit the frame and (for IPv4) verify.
    #[test]
    fn random_and_mutated_frames_never_panic_and_forward_valid_headers() {
        let t = tables();
        let seeds = [
            udp(POD_A, IP_A, IP_B, 64, 18),
            udp(POD_A, IP_A, IP_OUTSIDE, 2, 100),
            udp(HOST, IP_OUTSIDE, IP_B, 1, 30),
            ping(POD_A, IP_A, GATEWAY_IP, 56),
            ping(POD_B, IP_B, IP_A, 8),
            arp_request(POD_A, IP_A, GATEWAY_IP),
            arp_request(HOST, IP_OUTSIDE, IP_B),
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut seen = [0usize; 3]; // forward, reply, drop
        let mut reasons = [0usize; DropReason::COUNT];
        for i in 0..200_000 {
            let cap = rng.below(FRAME_CAP + 1);
            let mut buf = vec![0u8; cap];
            let len;
            if i % 2 == 0 {
                // Random bytes, biased towards ARP/IPv4 so the stages get exercised.
                for b in buf.iter_mut() {
                    *b = rng.next() as u8;
                }
                if cap >= 15 {
                    let ty: u16 = [0x0800, 0x0806, rng.next() as u16][rng.below(3)];
                    buf[12..14].copy_from_slice(&ty.to_be_bytes());
                    buf[14] = [0x45, 0x46, 0x4f, buf[14]][rng.below(4)];
                }
                len = if rng.below(16) == 0 {
                    cap + rng.below(100)
                } else {
                    rng.below(cap + 1)
                };
            } else {
                let mut f = seeds[rng.below(seeds.len())].clone();
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
                let cap = cap.max(flen.saturating_sub(rng.below(2)));
                buf = vec![0u8; cap];
                let n = flen.min(cap);
                buf[..n].copy_from_slice(&f[..n]);
                len = flen;
            }
            let ingress = rng.below(5) as PortId;
            match process(&mut buf, len, ingress, &t) {
                Verdict::Forward(p) => {
                    seen[0] += 1;
                    assert!(t.port(p).is_some());
                    let hl = usize::from(buf[14] & 0x0f) * 4;
                    assert!(
                        checksum::verifies(&buf[14..14 + hl]),
                        "forwarded bad checksum, case {i}"
                    );
                    // etherparse as a second opinion, except when the reserved flag bit
                    // is set: its Ipv4Header has no field for that bit, so its recomputed
                    // checksum leaves it out.
                    let h = etherparse::Ipv4HeaderSlice::from_slice(&buf[14..len]).unwrap();
                    if buf[20] & 0x80 == 0 {
                        assert_eq!(
                            h.header_checksum(),
                            h.to_header().calc_header_checksum(),
                            "case {i}"
                        );
                    }
                }
                Verdict::Reply { len: rlen } => {
                    seen[1] += 1;
                    let rlen = usize::from(rlen);
                    assert!(rlen <= buf.len(), "reply longer than the frame, case {i}");
                    if buf[12..14] == [0x08, 0x00] {
                        let hl = usize::from(buf[14] & 0x0f) * 4;
                        assert!(
                            checksum::verifies(&buf[14..14 + hl]),
                            "reply bad checksum, case {i}"
                        );
                        assert!(
                            checksum::verifies(&buf[14 + hl..rlen]),
                            "reply bad ICMP checksum, case {i}"
                        );
                    }
                }
                Verdict::Drop(r) => {
                    seen[2] += 1;
                    reasons[r as usize] += 1;
                }
            }
        }
        // The generator must actually reach every verdict, or the test proves little.
        assert!(seen.iter().all(|&n| n > 1000), "verdict mix {seen:?}");
        for r in DropReason::ALL {
            // The worker's reasons (rings, frames) cannot come out of `process`.
            let workers = [
                DropReason::TxRingFull,
                DropReason::HandoffFull,
                DropReason::NoFrame,
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
