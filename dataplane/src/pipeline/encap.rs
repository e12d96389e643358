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
//! dataplane builds have [`HEADROOM`](crate::xsk::HEADROOM) (256 bytes). Oversize
//! packets towards the tunnel (the ICMP "fragmentation needed" of DESIGN.md) are the
//! overlay issue's: the stage does not know the uplink MTU yet.
//!
//! Measured cost: not benchmarked yet; the UDP checksum sums the whole inner frame
//! (one pass over its bytes), the rest is a fixed 50-byte write.

use crate::packet::checksum;
use crate::packet::ethernet::{self, Frame};
use crate::packet::ipv4::{self, Packet as Ipv4Packet};
use crate::tables::PortInfo;

use super::route::Tunnel;
use super::{DropReason, PacketCtx};

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
