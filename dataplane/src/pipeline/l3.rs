//! L3 stage: IPv4 header checks, anti-spoofing, and the gateway's own ICMP (echo
//! replies, time exceeded).
//!
//! In a packet's way this is the first IPv4 stage ([`check`]: each failed check a
//! counted drop) and the TTL handling after the route is known: a packet whose TTL runs
//! out becomes an ICMP time exceeded to its sender ([`time_exceeded`]). The link-local
//! gateway (169.254.1.1) is the dataplane itself, not a host: it answers pods' pings
//! ([`echo_reply`]) and originates time exceeded, both as `Verdict::Reply` back on the
//! ingress port rewritten in place, and refuses everything else addressed to it
//! (`GatewayUnsupported`), so no packet to it ever reaches the node's stack.
//!
//! The answers work on `buf`, the chunk from the packet's start to the end of the frame
//! (`ctx.len` bytes of packet, the rest tail room), so a reply may be longer than the
//! request; they set `ctx.len` to the reply's length. Never panics, never allocates.
//!
//! Measured cost: the header check with its checksum is ~5.5 ns/pkt at burst 64 (the
//! `parse_only` bench); a bad-checksum drop through `process` ~8 ns/pkt. See
//! bench/RESULTS.md.

use std::net::Ipv4Addr;

use crate::packet::ethernet::{self, Frame};
use crate::packet::icmp::{self, Packet as IcmpPacket};
use crate::packet::ipv4::{self, Packet as Ipv4Packet};
use crate::packet::WireError;
use crate::tables::{PortInfo, PortKind, GATEWAY_IP};

use super::{DropReason, PacketCtx, Verdict};

const ETH: usize = ethernet::HEADER_LEN;

/// TTL of the packets the gateway originates (Linux's default).
pub const REPLY_TTL: u8 = 64;

/// ICMP errors are sent with precedence "internetwork control", as Linux does.
const TOS_INTERNETWORK_CONTROL: u8 = 0xc0;

/// How much of the offending datagram a time-exceeded message quotes beyond its IP
/// header (RFC 792: the header plus the first 64 bits of the data).
const QUOTE_DATA_LEN: usize = 8;

/// The drop reason of an IPv4 view's refusal.
pub fn wire_to_drop(e: WireError) -> DropReason {
    match e {
        WireError::Truncated => DropReason::Truncated,
        WireError::BadVersion => DropReason::Ipv4BadVersion,
        WireError::BadHeaderLength => DropReason::Ipv4BadHeaderLength,
        WireError::BadTotalLength => DropReason::Ipv4BadTotalLength,
    }
}

/// Check the IPv4 packet in `frame` (exactly the packet, Ethernet header included)
/// that arrived on `port`, and return its checked view.
///
/// Checks, in order, each a counted drop: header present (`Truncated`), version
/// (`Ipv4BadVersion`), IHL (`Ipv4BadHeaderLength`), total length with trailing padding
/// allowed (`Ipv4BadTotalLength`), header checksum (`Ipv4BadChecksum`), and for a pod
/// port the source address (`SpoofedSource`).
#[inline]
pub fn check<'a>(frame: &'a [u8], port: &PortInfo) -> Result<Ipv4Packet<&'a [u8]>, DropReason> {
    let l3 = frame.get(ETH..).ok_or(DropReason::Truncated)?;
    let ip = Ipv4Packet::new_checked(l3).map_err(wire_to_drop)?;
    if !ip.verify_checksum() {
        return Err(DropReason::Ipv4BadChecksum);
    }
    if port.kind == PortKind::Pod && ip.src_addr() != u32::from(port.ip) {
        return Err(DropReason::SpoofedSource);
    }
    Ok(ip)
}

/// [`check`] for the head buffer `frame` of a multi-buffer packet with `tail` more
/// bytes in further buffers: the header must lie in the head, and the IPv4 total
/// length must be exactly the chain's (a chain carries no Ethernet padding; a chain
/// whose length disagrees with its header is `Ipv4BadTotalLength`). The view returned
/// covers the head only: its `payload()` is the part in the head.
pub fn check_chain<'a>(
    frame: &'a [u8],
    tail: usize,
    port: &PortInfo,
) -> Result<Ipv4Packet<&'a [u8]>, DropReason> {
    let l3 = frame.get(ETH..).ok_or(DropReason::Truncated)?;
    if l3.len() < ipv4::MIN_HEADER_LEN {
        return Err(DropReason::Truncated);
    }
    let ip = Ipv4Packet::new_unchecked(l3);
    if ip.version() != 4 {
        return Err(DropReason::Ipv4BadVersion);
    }
    let hl = ip.header_len();
    if hl < ipv4::MIN_HEADER_LEN || hl > l3.len() {
        return Err(DropReason::Ipv4BadHeaderLength);
    }
    if ip.total_len() != l3.len() + tail {
        return Err(DropReason::Ipv4BadTotalLength);
    }
    if !ip.verify_checksum() {
        return Err(DropReason::Ipv4BadChecksum);
    }
    if port.kind == PortKind::Pod && ip.src_addr() != u32::from(port.ip) {
        return Err(DropReason::SpoofedSource);
    }
    Ok(ip)
}

/// Answer a pod's ping to the gateway in place: swap addresses (from the gateway, to
/// the pod), echo request → echo reply, back out of the ingress port.
///
/// Only a complete, unfragmented, checksum-valid ICMP echo request with a plain
/// 20-byte header is answered; echoing IP options (record route, source route) back
/// correctly is more than a ping to the gateway is worth. Everything else addressed to
/// the gateway is `GatewayUnsupported` (or `Truncated` for an ICMP header cut short).
pub fn echo_reply(buf: &mut [u8], ctx: &mut PacketCtx, port: &PortInfo) -> Verdict {
    let Some(frame) = buf.get_mut(..ctx.len) else {
        return Verdict::Drop(DropReason::Truncated);
    };
    let Ok(mut ip) = Ipv4Packet::new_checked(&mut frame[ETH..]) else {
        return Verdict::Drop(DropReason::Truncated); // checked by the caller already
    };
    if ip.header_len() != ipv4::MIN_HEADER_LEN
        || ip.protocol() != ipv4::protocol::ICMP
        || !ip.is_unfragmented()
    {
        return Verdict::Drop(DropReason::GatewayUnsupported);
    }
    let total = ip.total_len();
    let pod = ip.src_addr();
    {
        let Ok(mut msg) = IcmpPacket::new_checked(ip.payload_mut()) else {
            return Verdict::Drop(DropReason::Truncated);
        };
        if msg.msg_type() != icmp::msg_type::ECHO_REQUEST
            || msg.msg_code() != 0
            || !msg.verify_checksum()
        {
            return Verdict::Drop(DropReason::GatewayUnsupported);
        }
        msg.make_echo_reply();
    }
    ip.set_src_addr(u32::from(GATEWAY_IP));
    ip.set_dst_addr(pod);
    ip.set_ttl(REPLY_TTL);
    ip.fill_checksum();

    let mut eth = Frame::new_unchecked(frame);
    let requester = eth.src_addr();
    eth.set_dst_addr(requester);
    eth.set_src_addr(port.mac);
    // Trailing Ethernet padding is dropped; total <= len - ETH by the IPv4 check.
    ctx.len = ETH + total;
    Verdict::Reply
}

/// True for addresses an ICMP error must never be sent to or about (RFC 1812 §4.3.2.7):
/// unspecified, limited broadcast, multicast.
fn is_unicast(a: u32) -> bool {
    let a = Ipv4Addr::from(a);
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast())
}

/// The TTL of `buf[..ctx.len]` ran out: rewrite the frame into an ICMP time exceeded from
/// the gateway to the sender, quoting the offending IP header and its first 8 data
/// bytes, back out of the ingress port.
///
/// Drops with `TtlExpired` instead when no error may be sent (see [`icmp_error`]).
pub fn time_exceeded(buf: &mut [u8], ctx: &mut PacketCtx, port: &PortInfo) -> Verdict {
    icmp_error(
        buf,
        ctx,
        port,
        IcmpError {
            msg_type: icmp::msg_type::TIME_EXCEEDED,
            code: icmp::CODE_TTL_EXCEEDED_IN_TRANSIT,
            rest_of_header: [0; 4],
            only_with_df: false,
            otherwise: DropReason::TtlExpired,
        },
    )
}

/// What [`icmp_error`] sends, and the drop when it may not.
pub struct IcmpError {
    pub msg_type: u8,
    pub code: u8,
    /// The 4 bytes after type, code and checksum (e.g. RFC 1191's next-hop MTU).
    pub rest_of_header: [u8; 4],
    /// Only about a datagram with DF set (fragmentation needed); otherwise dropped.
    pub only_with_df: bool,
    pub otherwise: DropReason,
}

/// Rewrite the checked IPv4 frame `buf[..ctx.len]` (`buf` from the packet's start to the
/// chunk's end) into the ICMP error `e` from the gateway to its sender, quoting the
/// offending IP header and its first 8 data bytes, back out of the ingress port
/// (`Reply`).
///
/// `Drop(e.otherwise)` instead when no error may be sent (the datagram is a non-initial
/// fragment, an ICMP error itself, or from/to a non-unicast address, RFC 1122 §3.2.2 /
/// RFC 1812 §4.3.2.7; without DF when `e.only_with_df`) or the frame's capacity cannot
/// hold the reply.
pub fn icmp_error(buf: &mut [u8], ctx: &mut PacketCtx, port: &PortInfo, e: IcmpError) -> Verdict {
    let drop = Verdict::Drop(e.otherwise);
    let Some(l3) = buf.get(ETH..ctx.len) else {
        return drop;
    };
    // A chain's head was checked against the chain (check_chain); its view's payload
    // is the part in the head, which is all the quote needs.
    let ip = if ctx.tail == 0 {
        match Ipv4Packet::new_checked(l3) {
            Ok(ip) => ip,
            Err(_) => return drop,
        }
    } else {
        Ipv4Packet::new_unchecked(l3)
    };
    let df = l3[6] & 0x40 != 0;
    if (e.only_with_df && !df)
        || ip.frag_offset() != 0
        || !is_unicast(ip.src_addr())
        || !is_unicast(ip.dst_addr())
    {
        return drop;
    }
    if ip.protocol() == ipv4::protocol::ICMP {
        match ip.payload().first() {
            Some(&ty) if !icmp::is_error(ty) => {}
            _ => return drop,
        }
    }
    let sender = ip.src_addr();
    let quote_len = ip.header_len() + ip.payload().len().min(QUOTE_DATA_LEN);
    let icmp_len = icmp::HEADER_LEN + quote_len;
    let ip_len = ipv4::MIN_HEADER_LEN + icmp_len;
    let new_len = ETH + ip_len;
    if new_len > buf.len() {
        return drop;
    }
    let requester = Frame::new_unchecked(&buf[..]).src_addr();

    // Move the quote first: it overlaps the bytes the new headers are written over.
    let quote_at = ETH + ipv4::MIN_HEADER_LEN + icmp::HEADER_LEN;
    buf.copy_within(ETH..ETH + quote_len, quote_at);

    let frame = &mut buf[..new_len];
    {
        let mut msg = IcmpPacket::new_unchecked(&mut frame[ETH + ipv4::MIN_HEADER_LEN..]);
        msg.set_msg_type(e.msg_type);
        msg.set_msg_code(e.code);
        msg.set_rest_of_header(e.rest_of_header);
        msg.fill_checksum();
    }
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[ETH..]);
        ip.set_version_and_header_len(ipv4::MIN_HEADER_LEN);
        ip.set_dscp_ecn(TOS_INTERNETWORK_CONTROL);
        ip.set_total_len(ip_len as u16);
        ip.set_ident(0);
        ip.set_flags_and_offset(0);
        ip.set_ttl(REPLY_TTL);
        ip.set_protocol(ipv4::protocol::ICMP);
        ip.set_src_addr(u32::from(GATEWAY_IP));
        ip.set_dst_addr(sender);
        ip.fill_checksum();
    }
    let mut eth = Frame::new_unchecked(frame);
    eth.set_dst_addr(requester);
    eth.set_src_addr(port.mac);
    eth.set_ethertype(ethernet::ethertype::IPV4);
    ctx.len = new_len;
    ctx.tail = 0;
    Verdict::Reply
}
