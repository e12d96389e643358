//! Counters the packet path bumps and the control thread reads: per-port packet/byte
//! counts and drops indexed by a closed [`DropReason`] set, per-worker policy hits, and
//! the burst size every ring loop shares.
//!
//! This is the bottom of the layering: [`xsk`](crate::xsk) counts ring drops here,
//! [`pipeline`](crate::pipeline) names its verdicts' drop reasons here, and
//! [`tables`](crate::tables) carries the [`PolicyHits`] rows the policy stage bumps, so
//! none of them imports another to count. Every counter has a single writer (the worker
//! owning the port, or the worker owning the row): a relaxed load + store is enough, and
//! readers may see a value one burst old.

use std::sync::atomic::{AtomicU64, Ordering};

/// Index of a port in the node-wide port table, and of its [`PortCounters`]. Stable for
/// the life of the port; reused only after the port is removed and every worker has
/// acknowledged it.
pub type PortId = u16;

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
    /// NetworkPolicy: no rule of an isolating policy allows the flow (source pod's
    /// egress or destination pod's ingress), and it is not part of a tracked connection.
    PolicyDenied,
    /// Allowed, but the worker's connection table had no room for the new flow.
    ConntrackFull,
    /// Routed to another node, but the frame has too little headroom in front for the
    /// outer VXLAN headers.
    EncapNoRoom,
    /// Arrived on the uplink but is not well-formed VXLAN for this node (outer headers,
    /// UDP port, length or checksum, or an inner frame that is not IPv4).
    DecapInvalid,
    /// VXLAN from an underlay address that is not a known node, or whose inner source
    /// is not in that node's pod CIDR.
    DecapUnknownNode,
    /// VXLAN whose flags are not exactly `I` (0x08) or with a reserved bit set.
    DecapBadFlags,
    /// VXLAN for another VNI than ours.
    DecapWrongVni,
    /// Routed into the tunnel but larger than the tunnel carries (uplink MTU − 50) and
    /// may be fragmented (DF clear): the dataplane does not fragment. With DF set the
    /// sender gets ICMP "fragmentation needed" instead.
    EncapTooBig,
    /// A multi-buffer packet (issue 11) of more buffers than the kernel's copy-mode TX
    /// takes (`MAX_SKB_FRAGS` + 1 = 18), or larger once copied into the egress port's
    /// frames.
    ChainTooLong,
    /// A multi-buffer packet whose last buffer never came (the RX ring ran dry
    /// mid-chain).
    ChainTruncated,
    /// A multi-buffer packet routed where chains are not carried (into the VXLAN
    /// tunnel, which carries at most the overlay MTU anyway).
    ChainNotAllowed,
}

impl DropReason {
    /// Number of reasons (size of counter arrays).
    pub const COUNT: usize = 26;

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
        DropReason::PolicyDenied,
        DropReason::ConntrackFull,
        DropReason::EncapNoRoom,
        DropReason::DecapInvalid,
        DropReason::DecapUnknownNode,
        DropReason::DecapBadFlags,
        DropReason::DecapWrongVni,
        DropReason::EncapTooBig,
        DropReason::ChainTooLong,
        DropReason::ChainTruncated,
        DropReason::ChainNotAllowed,
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
            DropReason::PolicyDenied => "policy_denied",
            DropReason::ConntrackFull => "conntrack_full",
            DropReason::EncapNoRoom => "encap_no_room",
            DropReason::DecapInvalid => "decap_invalid",
            DropReason::DecapUnknownNode => "decap_unknown_node",
            DropReason::DecapBadFlags => "decap_bad_flags",
            DropReason::DecapWrongVni => "decap_wrong_vni",
            DropReason::EncapTooBig => "encap_too_big",
            DropReason::ChainTooLong => "chain_too_long",
            DropReason::ChainTruncated => "chain_truncated",
            DropReason::ChainNotAllowed => "chain_not_allowed",
        }
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

/// Per-worker hits per policy, indexed by `RuleRef::policy`; allocated by the control
/// thread when it publishes a snapshot, so the packet path only bumps.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct PolicyHits {
    pub hits: Box<[AtomicU64]>,
}

impl PolicyHits {
    /// Counters for `n` policies.
    pub fn new(n: usize) -> PolicyHits {
        PolicyHits {
            hits: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn counters_bump_reset_and_sum() {
        let c = PortCounters::default();
        c.count_drop(DropReason::NoRoute);
        c.count_drop(DropReason::NoRoute);
        c.count_drop(DropReason::Truncated);
        bump(&c.rx_packets, 3);
        assert_eq!(c.total_drops(), 3);
        assert_eq!(
            c.drops[DropReason::NoRoute as usize].load(Ordering::Relaxed),
            2
        );
        c.reset();
        assert_eq!(c.total_drops(), 0);
        assert_eq!(c.rx_packets.load(Ordering::Relaxed), 0);
        assert_eq!(PolicyHits::new(4).hits.len(), 4);
    }
}
