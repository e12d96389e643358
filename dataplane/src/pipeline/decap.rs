//! Decap stage: VXLAN from another node, stripped in place, then the forward stages.
//!
//! Runs for IPv4 frames arriving on an uplink port (the XDP program there hands
//! userspace only VXLAN addressed to this node; the stage checks it all again). The
//! outer headers are validated through the checked views of `packet/` — IPv4 (the
//! usual checks and drop reasons), unfragmented UDP to our underlay address and the
//! configured port with a length that fits, a zero or valid UDP checksum
//! (`DecapInvalid` otherwise), VXLAN flags exactly `0x08` with every reserved bit zero
//! (`DecapBadFlags`) and our VNI (`DecapWrongVni`) — and the sender must be a known
//! node whose pod CIDR (or underlay address) holds the inner source
//! (`DecapUnknownNode`). Then `ctx.start` moves forward past the outer headers and the
//! inner frame, which must be IPv4 (`DecapInvalid`), goes through
//! [`forward`](super::forward) like any other: a local pod or the node's stack may
//! receive it (`Verdict::Decap`), the tunnel may not (`NoRoute`: nodes do not
//! transit), nor may an expired TTL be answered through it (`TtlExpired`).
//!
//! Measured cost: not benchmarked yet (one pass over the frame for a non-zero UDP
//! checksum, plus the forward path).

use crate::packet::checksum;
use crate::packet::ethernet::{self, Frame};
use crate::packet::ipv4::{self, Packet as Ipv4Packet};
use crate::packet::udp::{self, Packet as UdpPacket};
use crate::packet::vxlan::{self, Packet as VxlanPacket};
use crate::packet::WireError;
use crate::tables::{NodeId, PortInfo, Route, Tables};

use super::conntrack::{Conntrack, Millis};
use super::l3::{self, wire_to_drop};
use super::{forward, DropReason, PacketCtx, Verdict};

const ETH: usize = ethernet::HEADER_LEN;

/// Validate and strip the VXLAN headers of `buf[ctx.start..][..ctx.len]`; on success the
/// packet window is the inner frame and the sending node is returned.
#[inline]
pub fn decap(buf: &[u8], ctx: &mut PacketCtx, tables: &Tables) -> Result<NodeId, DropReason> {
    let invalid = DropReason::DecapInvalid;
    let overlay = tables.overlay.as_ref().ok_or(invalid)?;
    let frame = buf
        .get(ctx.start..)
        .and_then(|b| b.get(..ctx.len))
        .ok_or(DropReason::Truncated)?;
    let ip = Ipv4Packet::new_checked(frame.get(ETH..).ok_or(DropReason::Truncated)?)
        .map_err(wire_to_drop)?;
    if !ip.verify_checksum() {
        return Err(DropReason::Ipv4BadChecksum);
    }
    if ip.protocol() != ipv4::protocol::UDP
        || !ip.is_unfragmented()
        || ip.dst_addr() != overlay.local_ip
    {
        return Err(invalid);
    }
    let src = ip.src_addr();
    let udp = UdpPacket::new_checked(ip.payload()).map_err(|_| invalid)?;
    let udp_len = udp.len();
    if udp.dst_port() != overlay.dst_port {
        return Err(invalid);
    }
    if udp.checksum() != 0 {
        let pseudo = u64::from(src >> 16)
            + u64::from(src & 0xffff)
            + u64::from(ip.dst_addr() >> 16)
            + u64::from(ip.dst_addr() & 0xffff)
            + u64::from(ipv4::protocol::UDP)
            + udp_len as u64;
        let covered = ip.payload().get(..udp_len).ok_or(invalid)?;
        if checksum::fold(pseudo + checksum::sum(covered)) != 0xffff {
            return Err(invalid);
        }
    }
    let vx = VxlanPacket::new_checked(udp.payload()).map_err(|e| match e {
        WireError::Truncated => invalid,
        _ => DropReason::DecapBadFlags,
    })?;
    if vx.vni() != overlay.vni & vxlan::VNI_MAX {
        return Err(DropReason::DecapWrongVni);
    }
    let inner = vx.payload();
    if inner.len() < ETH || Frame::new_unchecked(inner).ethertype() != ethernet::ethertype::IPV4 {
        return Err(invalid);
    }
    let node = tables
        .node_by_underlay
        .lookup(src)
        .ok_or(DropReason::DecapUnknownNode)?;
    // The inner source must be the sending node's: one of its pods or its own address.
    let inner_src = inner
        .get(ETH + 12..ETH + 16)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(DropReason::Truncated)?;
    let from_node = tables.route(inner_src) == Route::Remote(node)
        || tables
            .vtep(node)
            .is_some_and(|v| v.underlay_ip == inner_src);
    if !from_node {
        return Err(DropReason::DecapUnknownNode);
    }
    ctx.start += ETH + ip.header_len() + udp::HEADER_LEN + vxlan::HEADER_LEN;
    ctx.len = inner.len();
    Ok(node)
}

/// The uplink's IPv4 path: [`decap`], then [`l3::check`] and the forward stages on the
/// inner frame; a transmitting `Forward` becomes `Decap`. Out of line: `process` is
/// inlined into the worker's loop and keeps only its pod/host path there.
#[inline(never)]
pub fn decap_and_forward(
    buf: &mut [u8],
    ctx: &mut PacketCtx,
    port: &PortInfo,
    tables: &Tables,
    ct: &mut Conntrack,
    now: Millis,
) -> Verdict {
    if let Err(r) = decap(buf, ctx, tables) {
        return Verdict::Drop(r);
    }
    let inner = buf
        .get(ctx.start..)
        .and_then(|b| b.get(..ctx.len))
        .ok_or(DropReason::Truncated)
        .and_then(|f| l3::check(f, port));
    if let Err(r) = inner {
        return Verdict::Drop(r);
    }
    match forward::forward(buf, ctx, port, tables, ct, now) {
        Verdict::Forward(p) => Verdict::Decap(p),
        // Anything else would go back into the tunnel unencapsulated.
        Verdict::Drop(r) => Verdict::Drop(r),
        _ => Verdict::Drop(DropReason::NoRoute),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{DropReason, Verdict};
    use crate::packet::checksum;

    fn run(f: &[u8]) -> (Verdict, Vec<u8>) {
        run_frame(f, UPLINK, &tables())
    }

    /// Outer UDP checksum zeroed (accepted), so tests may change covered bytes.
    fn no_csum(mut f: Vec<u8>) -> Vec<u8> {
        f[40..42].copy_from_slice(&[0, 0]);
        f
    }

    #[test]
    fn vxlan_from_a_known_node_is_delivered_to_the_local_pod() {
        let inner = inner_udp(IP_REMOTE, IP_A, 64, 20);
        let (v, w) = run(&vxlan_from_b(&inner));
        assert_eq!(v, Verdict::Decap(POD_A));
        assert_eq!(w.len(), inner.len(), "the window is the inner frame");
        assert_eq!(w[..6], peer(POD_A));
        assert_eq!(w[6..12], mac(POD_A));
        assert_eq!(w[22], 63);
        assert!(checksum::verifies(&w[14..34]));
        assert_eq!(w[34..], inner[34..], "payload untouched");
        // A zero outer checksum is accepted; traffic for the node goes to the host port.
        let to_node = inner_udp(IP_REMOTE, IP_OUTSIDE, 64, 4);
        assert_eq!(
            run(&no_csum(vxlan_from_b(&to_node))).0,
            Verdict::Decap(HOST)
        );
        // The remote node's own address may send too.
        let from_node = inner_udp(UNDERLAY_B, IP_B, 64, 4);
        assert_eq!(run(&vxlan_from_b(&from_node)).0, Verdict::Decap(POD_B));
    }

    #[test]
    fn malformed_vxlan_is_invalid() {
        let invalid = Verdict::Drop(DropReason::DecapInvalid);
        let good = no_csum(vxlan_from_b(&inner_udp(IP_REMOTE, IP_A, 64, 20)));
        let mutate = |at: usize, v: u8| {
            let mut f = good.clone();
            f[at] = v;
            run(&f).0
        };
        let flags = Verdict::Drop(DropReason::DecapBadFlags);
        assert_eq!(mutate(42, 0x0c), flags, "flags other than 0x08");
        assert_eq!(mutate(42, 0x00), flags, "I flag clear");
        assert_eq!(mutate(43, 1), flags, "reserved bits");
        assert_eq!(mutate(49, 1), flags, "reserved last byte");
        let vni = Verdict::Drop(DropReason::DecapWrongVni);
        assert_eq!(mutate(48, 2), vni, "other VNI");
        assert_eq!(mutate(46, 1), vni, "other VNI, high byte");
        assert_eq!(mutate(37, 0x13), invalid, "other UDP port");
        assert_eq!(mutate(63, 0x86), invalid, "inner not IPv4");
        let mut bad_sum = vxlan_from_b(&inner_udp(IP_REMOTE, IP_A, 64, 20));
        bad_sum[41] ^= 0x01;
        assert_eq!(run(&bad_sum).0, invalid, "wrong outer UDP checksum");
        let mut long = good.clone();
        long[38..40].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(run(&long).0, invalid, "UDP length past the packet");
        let mut to_other = good.clone();
        to_other[33] = 99; // outer destination 192.168.0.99
        fix_ipv4_checksum(&mut to_other);
        assert_eq!(run(&to_other).0, invalid, "not addressed to us");
        let mut t = tables();
        t.overlay = None;
        assert_eq!(run_frame(&good, UPLINK, &t).0, invalid, "no overlay");
        let mut bad_ip = good.clone();
        bad_ip[24] ^= 1;
        assert_eq!(run(&bad_ip).0, Verdict::Drop(DropReason::Ipv4BadChecksum));
    }

    #[test]
    fn only_known_nodes_and_their_own_sources_are_accepted() {
        let unknown = Verdict::Drop(DropReason::DecapUnknownNode);
        let mut stranger = no_csum(vxlan_from_b(&inner_udp(IP_REMOTE, IP_A, 64, 20)));
        stranger[29] = 77; // outer source 192.168.0.77
        fix_ipv4_checksum(&mut stranger);
        assert_eq!(run(&stranger).0, unknown);
        for src in [IP_OUTSIDE, IP_B, IP_NO_VTEP] {
            let f = vxlan_from_b(&inner_udp(src, IP_A, 64, 20));
            assert_eq!(run(&f).0, unknown, "inner source {src}");
        }
    }

    #[test]
    fn no_transit_and_no_icmp_back_into_the_tunnel() {
        let f = vxlan_from_b(&inner_udp(IP_REMOTE, IP_REMOTE, 64, 20));
        assert_eq!(run(&f).0, Verdict::Drop(DropReason::NoRoute));
        let f = vxlan_from_b(&inner_udp(IP_REMOTE, IP_A, 1, 20));
        assert_eq!(run(&f).0, Verdict::Drop(DropReason::TtlExpired));
    }
}
