//! Pure packet-processing stages: parse → ARP answer | IPv4 checks → route → rewrite.
//!
//! Sans-I/O: a stage takes a frame's bytes, the ingress port and a table snapshot, and
//! returns a [`Verdict`]. It touches no socket, clock, allocator or logger, so the same
//! code runs in the workers, the unit tests, the fuzzers and the criterion benches.
//! Malformed input is a `Verdict::Drop(reason)`, never a panic or an `Err`; the worker
//! counts drops per ingress port in an array indexed by [`DropReason`].

pub mod arp;
pub mod forward;

use std::sync::atomic::{AtomicU64, Ordering};

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
}

impl DropReason {
    /// Number of reasons (size of counter arrays).
    pub const COUNT: usize = 14;

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
#[inline]
pub fn process(buf: &mut [u8], len: usize, ingress: PortId, tables: &Tables) -> Verdict {
    let _ = (buf, len, ingress, tables);
    Verdict::Drop(DropReason::Truncated)
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
        for c in [&self.rx_packets, &self.rx_bytes, &self.tx_packets, &self.tx_bytes] {
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
