//! Encap stage: VXLAN (RFC 7348) outer headers written in front of a frame, in place.
//!
//! A frame routed to another node's pod leaves on the uplink as
//! `outer Ethernet | outer IPv4 | UDP | VXLAN | inner frame`. The inner frame has been
//! rewritten already (TTL, VTEP MACs, see [`rewrite`](super::rewrite)); this stage moves
//! `ctx.start` back by [`OVERHEAD`] (50 bytes) into the frame's headroom and writes:
//!
//! * outer Ethernet: to the underlay next hop's MAC, from the uplink's MAC, IPv4;
//! * outer IPv4: from our underlay address to the remote node's, TTL 64, DF set with
//!   identification 0 (an atomic datagram, RFC 6864), no options, checksum filled;
//! * UDP: source port a hash of the inner flow inside 32768–60999 (constant per flow,
//!   entropy for ECMP/RSS), destination the configured VXLAN port, a valid checksum
//!   (the Linux vxlan device accepts zero or valid; we always send valid);
//! * VXLAN: flags byte exactly `0x08`, every reserved bit zero, VNI in the top 24 bits
//!   of the second word (what the Linux vxlan device requires).
//!
//! No copy of the packet: only the 50 header bytes are written. A frame with less
//! headroom than that is dropped (`EncapNoRoom`); frames from the kernel and those the
//! dataplane builds have [`HEADROOM`](crate::xsk::HEADROOM) (256 bytes).
//!
//! Oversize packets: before the rewrite, [`frag_needed`] compares the inner IPv4 total
//! length with the tunnel's inner MTU (uplink MTU − 50, [`Overlay::inner_mtu`]). A
//! larger packet with DF set is rewritten in place into ICMP "fragmentation needed"
//! (type 3 code 4, next-hop MTU = the inner MTU) from the pod gateway back to the
//! sender, who lowers its path MTU; one without DF is a counted drop (`EncapTooBig`:
//! the dataplane does not fragment). Never a silent drop.
//!
//! Measured cost: not benchmarked yet; the UDP checksum sums the whole inner frame
//! (one pass over its bytes), the rest is a fixed 50-byte write; the MTU check is
//! one comparison.
//!
//! [`Overlay::inner_mtu`]: crate::tables::Overlay::inner_mtu

use crate::packet::checksum;
use crate::packet::ethernet::{self, Frame};
use crate::packet::icmp;
use crate::packet::ipv4::{self, Packet as Ipv4Packet};
use crate::tables::PortInfo;

use super::l3::IcmpError;
use super::route::Tunnel;
use super::{DropReason, PacketCtx, Verdict};

const ETH: usize = ethernet::HEADER_LEN;
/// Outer IPv4 header length (no options).
const IP: usize = ipv4::MIN_HEADER_LEN;
/// UDP header length.
pub const UDP_LEN: usize = 8;
/// VXLAN header length.
pub const VXLAN_LEN: usize = 8;
/// Bytes the outer headers add in front of the inner frame.
pub const OVERHEAD: usize = ETH + IP + UDP_LEN + VXLAN_LEN;

/// VXLAN flags byte: only the I (valid VNI) bit.
pub const VXLAN_FLAGS: u8 = 0x08;
/// TTL of the outer IPv4 header (Linux's default for tunnels).
pub const OUTER_TTL: u8 = 64;
/// "Don't fragment", no offset.
const DF: u16 = 0x4000;
/// Outer UDP source port range (Linux's default local port range, as its vxlan uses).
pub const SRC_PORT_MIN: u16 = 32768;
pub const SRC_PORT_MAX: u16 = 60999;

/// Offsets inside the UDP and VXLAN headers.
mod field {
    pub const UDP_SRC: usize = 0;
    pub const UDP_DST: usize = 2;
    pub const UDP_LEN: usize = 4;
    pub const UDP_CHECKSUM: usize = 6;
    pub const VXLAN_FLAGS: usize = 0;
    pub const VXLAN_VNI: usize = 4;
}

/// The outer UDP source port for the inner IPv4 frame `inner`: a hash of its addresses,
/// protocol and (unfragmented) first four L4 bytes, mapped into the source port range.
#[inline]
pub fn source_port(inner: &[u8]) -> u16 {
    let mut key = 0u64;
    if let Some(Ok(ip)) = inner.get(ETH..).map(Ipv4Packet::new_checked) {
        key = (u64::from(ip.src_addr()) << 32) | u64::from(ip.dst_addr());
        key ^= u64::from(ip.protocol()) << 8;
        if ip.frag_offset() == 0 {
            if let Some(p) = ip.payload().get(..4) {
                key = key.rotate_left(17) ^ u64::from(u32::from_be_bytes([p[0], p[1], p[2], p[3]]));
            }
        }
    }
    let h = (key ^ (key >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    let span = u64::from(SRC_PORT_MAX - SRC_PORT_MIN) + 1;
    SRC_PORT_MIN + (h % span) as u16
}

/// ICMP destination-unreachable code "fragmentation needed and DF set".
pub const CODE_FRAG_NEEDED: u8 = 4;
/// Whether an IPv4 packet of `ip_total_len` bytes is larger than `tunnel` carries.
#[inline]
pub fn too_big(ip_total_len: usize, tunnel: &Tunnel<'_>) -> bool {
    ip_total_len > usize::from(tunnel.overlay.inner_mtu)
}

/// For a checked IPv4 frame `buf[..ctx.len]` (`buf` from the packet's start to the
/// chunk's end) that is [`too_big`] for the tunnel, before the rewrite: with DF set,
/// the frame rewritten into ICMP "fragmentation needed" (next-hop MTU = the inner MTU)
/// from the gateway back out of the ingress port (`Reply`); without DF, or when no
/// ICMP error may be sent (a non-initial fragment, an ICMP error itself, a non-unicast
/// address), `Drop(EncapTooBig)`.
#[inline]
pub fn frag_needed(
    buf: &mut [u8],
    ctx: &mut PacketCtx,
    port: &PortInfo,
    tunnel: &Tunnel<'_>,
) -> Verdict {
    // RFC 1191: unused (16 bits), next-hop MTU (16 bits).
    let m = tunnel.overlay.inner_mtu.to_be_bytes();
    super::l3::icmp_error(
        buf,
        ctx,
        port,
        IcmpError {
            msg_type: icmp::msg_type::DEST_UNREACHABLE,
            code: CODE_FRAG_NEEDED,
            rest_of_header: [0, 0, m[0], m[1]],
            only_with_df: true,
            otherwise: DropReason::EncapTooBig,
        },
    )
}

/// Write the outer headers for `tunnel` in front of the packet `buf[ctx.start..][..ctx.len]`
/// (an inner frame already rewritten), leaving on the uplink whose entry is `uplink`.
/// On success the packet window covers the encapsulated frame.
#[inline]
pub fn encap(
    buf: &mut [u8],
    ctx: &mut PacketCtx,
    uplink: &PortInfo,
    tunnel: &Tunnel<'_>,
) -> Result<(), DropReason> {
    let Some(start) = ctx.start.checked_sub(OVERHEAD) else {
        return Err(DropReason::EncapNoRoom);
    };
    let len = ctx.len + OVERHEAD;
    let udp_len = UDP_LEN + VXLAN_LEN + ctx.len;
    let ip_len = IP + udp_len;
    let (Ok(udp_len16), Ok(ip_len16)) = (u16::try_from(udp_len), u16::try_from(ip_len)) else {
        return Err(DropReason::EncapNoRoom);
    };
    let Some(frame) = buf.get_mut(start..).and_then(|b| b.get_mut(..len)) else {
        return Err(DropReason::Truncated);
    };
    let (outer, inner) = frame.split_at_mut(OVERHEAD);
    let sport = source_port(inner);
    let (src, dst) = (tunnel.overlay.local_ip, tunnel.vtep.underlay_ip);

    {
        let mut eth = Frame::new_unchecked(&mut outer[..]);
        eth.set_dst_addr(tunnel.vtep.next_hop_mac);
        eth.set_src_addr(uplink.mac);
        eth.set_ethertype(ethernet::ethertype::IPV4);
    }
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut outer[ETH..ETH + IP]);
        ip.set_version_and_header_len(IP);
        ip.set_dscp_ecn(0);
        ip.set_total_len(ip_len16);
        ip.set_ident(0);
        ip.set_flags_and_offset(DF);
        ip.set_ttl(OUTER_TTL);
        ip.set_protocol(ipv4::protocol::UDP);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.fill_checksum();
    }
    let udp = &mut outer[ETH + IP..];
    udp[field::UDP_SRC..field::UDP_SRC + 2].copy_from_slice(&sport.to_be_bytes());
    udp[field::UDP_DST..field::UDP_DST + 2].copy_from_slice(&tunnel.overlay.dst_port.to_be_bytes());
    udp[field::UDP_LEN..field::UDP_LEN + 2].copy_from_slice(&udp_len16.to_be_bytes());
    udp[field::UDP_CHECKSUM..field::UDP_CHECKSUM + 2].copy_from_slice(&[0, 0]);
    let vx = &mut udp[UDP_LEN..];
    vx.fill(0);
    vx[field::VXLAN_FLAGS] = VXLAN_FLAGS;
    let vni = (tunnel.overlay.vni & 0x00ff_ffff) << 8;
    vx[field::VXLAN_VNI..field::VXLAN_VNI + 4].copy_from_slice(&vni.to_be_bytes());

    // Pseudo header (RFC 768) + UDP header + VXLAN + inner frame.
    let pseudo = u64::from(src >> 16)
        + u64::from(src & 0xffff)
        + u64::from(dst >> 16)
        + u64::from(dst & 0xffff)
        + u64::from(ipv4::protocol::UDP)
        + u64::from(udp_len16);
    let sum = pseudo + checksum::sum(udp) + checksum::sum(inner);
    let c = match !checksum::fold(sum) {
        0 => 0xffff, // zero means "no checksum" in UDP over IPv4
        c => c,
    };
    udp[field::UDP_CHECKSUM..field::UDP_CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());

    ctx.start = start;
    ctx.len = len;
    Ok(())
}

#[cfg(test)]
mod tests {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    use super::super::testutil::*;
    use super::super::{process, DropReason, PacketCtx, Verdict};
    use crate::xsk::HEADROOM;

    #[test]
    fn remote_pod_gets_outer_headers_in_front_in_place() {
        let f = udp(POD_A, IP_A, IP_REMOTE, 64, 30);
        let (mut buf, mut ctx) = umem(&f, POD_A);
        let v = process(&mut buf, &mut ctx, &tables(), &mut ct(), 1);
        assert_eq!(v, Verdict::Encap(UPLINK));
        assert_eq!((ctx.start, ctx.len), (HEADROOM - 50, f.len() + 50));
        let w = window(&buf, &ctx);
        let p = SlicedPacket::from_ethernet(w).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = &p.link else {
            panic!("not Ethernet")
        };
        assert_eq!(
            (eth.destination(), eth.source()),
            (NEXT_HOP_MAC, mac(UPLINK))
        );
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not IPv4")
        };
        let h = ip.header();
        assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
        assert_eq!(
            (
                h.source_addr(),
                h.destination_addr(),
                h.ttl(),
                h.dont_fragment()
            ),
            (UNDERLAY_LOCAL, UNDERLAY_B, 64, true)
        );
        assert_eq!(usize::from(h.total_len()), f.len() + 36);
        let Some(TransportSlice::Udp(u)) = &p.transport else {
            panic!("not UDP")
        };
        assert_eq!(u.destination_port(), VXLAN_PORT);
        assert!((32768..=60999).contains(&u.source_port()));
        let want = u
            .to_header()
            .calc_checksum_ipv4(&h.to_header(), u.payload())
            .unwrap();
        assert_eq!(u.checksum(), want, "outer UDP checksum");
        // Flags exactly 0x08, reserved zero, VNI 1 in the top 24 bits.
        assert_eq!(u.payload()[..8], [0x08, 0, 0, 0, 0, 0, 1, 0]);
        let inner = &u.payload()[8..];
        assert_eq!(inner[..6], VTEP_MAC_B, "inner dst = remote VTEP");
        assert_eq!(inner[6..12], VTEP_MAC_LOCAL, "inner src = our VTEP");
        let mut expect = f.clone();
        expect[..12].copy_from_slice(&inner[..12]);
        expect[22] = 63;
        expect[24..26].copy_from_slice(&inner[24..26]);
        assert_eq!(
            inner,
            &expect[..],
            "inner frame: only MACs, TTL, checksum change"
        );
        // Nothing before the new start was touched.
        assert!(buf[..HEADROOM - 50].iter().all(|&b| b == 0));
    }

    #[test]
    fn source_port_is_stable_per_flow_and_spread_across_flows() {
        let sport = |f: &[u8]| {
            let (mut buf, mut ctx) = umem(f, POD_A);
            process(&mut buf, &mut ctx, &tables(), &mut ct(), 1);
            let w = window(&buf, &ctx);
            u16::from_be_bytes([w[34], w[35]])
        };
        let f = udp(POD_A, IP_A, IP_REMOTE, 64, 30);
        assert_eq!(sport(&f), sport(&f));
        let mut ports: Vec<u16> = (0..64u16)
            .map(|i| {
                let mut g = f.clone();
                g[34..36].copy_from_slice(&(1000 + i).to_be_bytes()); // inner UDP source
                sport(&g)
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        assert!(
            ports.len() > 32,
            "{} distinct ports of 64 flows",
            ports.len()
        );
    }

    #[test]
    fn too_little_headroom_is_a_counted_drop() {
        let f = udp(POD_A, IP_A, IP_REMOTE, 64, 30);
        for start in [0, 1, 49] {
            let mut buf = vec![0u8; start + f.len() + 64];
            buf[start..start + f.len()].copy_from_slice(&f);
            let mut ctx = PacketCtx::new(start, f.len(), POD_A);
            assert_eq!(
                process(&mut buf, &mut ctx, &tables(), &mut ct(), 1),
                Verdict::Drop(DropReason::EncapNoRoom),
                "start {start}"
            );
        }
        let mut buf = vec![0u8; 50 + f.len()];
        buf[50..].copy_from_slice(&f);
        let mut ctx = PacketCtx::new(50, f.len(), POD_A);
        assert!(matches!(
            process(&mut buf, &mut ctx, &tables(), &mut ct(), 1),
            Verdict::Encap(_)
        ));
        assert_eq!(ctx.start, 0);
    }

    /// A UDP frame from pod A to the remote pod with `ip_len` bytes of IPv4, DF as told.
    fn big(ip_len: usize, df: bool) -> Vec<u8> {
        let mut f = udp(POD_A, IP_A, IP_REMOTE, 64, ip_len - 28);
        f[20] = if df { 0x40 } else { 0 };
        fix_ipv4_checksum(&mut f);
        f
    }

    #[test]
    fn packets_larger_than_the_tunnel_get_frag_needed_or_a_counted_drop() {
        let mtu = usize::from(INNER_MTU);
        // Exactly the inner MTU fits, DF or not.
        for df in [true, false] {
            let (v, w) = run_frame(&big(mtu, df), POD_A, &tables());
            assert!(matches!(v, Verdict::Encap(_)), "{v:?}");
            assert_eq!(w.len(), 14 + mtu + 50);
        }
        // One byte more with DF: ICMP type 3 code 4 from the gateway, next-hop MTU.
        let f = big(mtu + 1, true);
        let (v, w) = run_frame(&f, POD_A, &tables());
        assert_eq!(v, Verdict::Reply);
        assert_eq!(w[..6], peer(POD_A), "back to the sender");
        assert_eq!(w[6..12], mac(POD_A));
        let p = SlicedPacket::from_ethernet(&w).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not IPv4")
        };
        let h = ip.header();
        assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
        assert_eq!(
            (h.source_addr(), h.destination_addr()),
            (crate::tables::GATEWAY_IP, IP_A)
        );
        let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
            panic!("not ICMP")
        };
        assert_eq!(
            icmp.icmp_type(),
            etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: INNER_MTU
                }
            )
        );
        assert!(crate::packet::checksum::verifies(&w[34..]));
        assert_eq!(&w[42..62], &f[14..34], "quotes the offending header");
        assert_eq!(&w[62..70], &f[34..42], "and 8 data bytes");
        // Without DF: not fragmented here, a counted drop.
        assert_eq!(
            run_frame(&big(mtu + 1, false), POD_A, &tables()).0,
            Verdict::Drop(DropReason::EncapTooBig)
        );
        // No error about an error, nor about a later fragment.
        let mut frag = big(mtu + 100, true);
        frag[21] = 0x10;
        fix_ipv4_checksum(&mut frag);
        assert_eq!(
            run_frame(&frag, POD_A, &tables()).0,
            Verdict::Drop(DropReason::EncapTooBig)
        );
        // Local traffic is not limited by the tunnel.
        let mut local = udp(POD_A, IP_A, IP_B, 64, mtu + 10);
        local[20] = 0x40;
        fix_ipv4_checksum(&mut local);
        assert_eq!(
            run_frame(&local, POD_A, &tables()).0,
            Verdict::Forward(POD_B)
        );
    }

    #[test]
    fn no_tunnel_endpoint_or_no_overlay_is_no_route() {
        let no_route = Verdict::Drop(DropReason::NoRoute);
        let f = udp(POD_A, IP_A, IP_NO_VTEP, 64, 30);
        assert_eq!(run_frame(&f, POD_A, &tables()).0, no_route);
        let mut t = tables();
        t.overlay = None;
        let f = udp(POD_A, IP_A, IP_REMOTE, 64, 30);
        assert_eq!(run_frame(&f, POD_A, &t).0, no_route);
    }
}
