//! IPv4 forward stage: validate, police the source, route, rewrite, and the gateway's
//! own answers (echo reply, time exceeded).
//!
//! In a packet's way this is everything between "it is IPv4" and "put it on that TX
//! ring": header checks (each a counted drop), the anti-spoofing check for pod ports,
//! the FIB lookup (`Tables::route`: a local pod, else the host port), TTL handling and
//! the L2 rewrite. The forwarded frame is modified in place and keeps its length: TTL
//! minus one with an O(1) incremental checksum patch, destination MAC = the egress
//! port's peer, source MAC = the egress port's own.
//!
//! The link-local gateway (169.254.1.1) is the dataplane itself, not a host: it answers
//! pods' pings and originates ICMP time exceeded, both as `Verdict::Reply` back on the
//! ingress port, and refuses everything else addressed to it (`GatewayUnsupported`), so
//! no packet to it ever reaches the node's stack.
//!
//! Invariants: never panics (every slice bound is derived from a checked view), never
//! allocates, and a `Forward` frame always carries a valid IPv4 header checksum.

use std::net::Ipv4Addr;

use crate::packet::ethernet::{self, Frame};
use crate::packet::icmp::{self, Packet as IcmpPacket};
use crate::packet::ipv4::{self, Packet as Ipv4Packet};
use crate::packet::WireError;
use crate::tables::{PortId, PortInfo, PortKind, Tables, GATEWAY_IP};

use super::{DropReason, Verdict};

const ETH: usize = ethernet::HEADER_LEN;

/// TTL of the packets the gateway originates (Linux's default).
pub const REPLY_TTL: u8 = 64;

/// ICMP errors are sent with precedence "internetwork control", as Linux does.
const TOS_INTERNETWORK_CONTROL: u8 = 0xc0;

/// How much of the offending datagram a time-exceeded message quotes beyond its IP
/// header (RFC 792: the header plus the first 64 bits of the data).
const QUOTE_DATA_LEN: usize = 8;

fn wire_to_drop(e: WireError) -> DropReason {
    match e {
        WireError::Truncated => DropReason::Truncated,
        WireError::BadVersion => DropReason::Ipv4BadVersion,
        WireError::BadHeaderLength => DropReason::Ipv4BadHeaderLength,
        WireError::BadTotalLength => DropReason::Ipv4BadTotalLength,
    }
}

/// Forward (or answer, or drop) the IPv4 frame `buf[..len]` that arrived on `ingress`
/// (`port` is its table entry). `buf` is the frame's whole capacity, so replies may be
/// longer than the request; the caller guarantees `ETH <= len <= buf.len()`.
///
/// Checks, in order, each a counted drop: header present (`Truncated`), version
/// (`Ipv4BadVersion`), IHL (`Ipv4BadHeaderLength`), total length with trailing padding
/// allowed (`Ipv4BadTotalLength`), header checksum (`Ipv4BadChecksum`), source address
/// of a pod port (`SpoofedSource`), the gateway's own traffic (echo reply or
/// `GatewayUnsupported`), route (`NoRoute`, also for host-port traffic that would go
/// back to the host port), TTL (a time-exceeded reply, or `TtlExpired` when none may
/// or can be sent).
///
/// Measured cost: ~15 ns/pkt at burst 64 (64-byte UDP, FIB hit, 1 or 100 pods; ~66
/// Mpps on one core), ~23 ns/pkt with 10,000 pods once the FIB and port table no longer
/// sit in L1/L2; a bad-checksum drop ~8 ns/pkt. See bench/RESULTS.md.
#[inline]
pub fn forward(
    buf: &mut [u8],
    len: usize,
    ingress: PortId,
    port: &PortInfo,
    tables: &Tables,
) -> Verdict {
    let Some(l3) = buf.get(ETH..len) else {
        return Verdict::Drop(DropReason::Truncated);
    };
    let ip = match Ipv4Packet::new_checked(l3) {
        Ok(ip) => ip,
        Err(e) => return Verdict::Drop(wire_to_drop(e)),
    };
    if !ip.verify_checksum() {
        return Verdict::Drop(DropReason::Ipv4BadChecksum);
    }
    let src = ip.src_addr();
    let dst = ip.dst_addr();
    if port.kind == PortKind::Pod && src != u32::from(port.ip) {
        return Verdict::Drop(DropReason::SpoofedSource);
    }
    if dst == u32::from(GATEWAY_IP) && port.kind == PortKind::Pod {
        return echo_reply(buf, len, port);
    }
    let Some(egress) = tables.route(dst) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    // The host port's fallback route is the host port: sending it back would loop
    // between the node's stack and the dataplane until the TTL runs out.
    if port.kind == PortKind::Host && egress == ingress {
        return Verdict::Drop(DropReason::NoRoute);
    }
    // A FIB entry for a port that is no longer in the port table (a snapshot built
    // mid-removal) is as good as no route.
    let Some(out) = tables.port(egress) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    if ip.ttl() <= 1 {
        return time_exceeded(buf, len, port);
    }

    let (out_mac, out_peer) = (out.mac, out.peer_mac);
    let frame = &mut buf[..len];
    Ipv4Packet::new_unchecked(&mut frame[ETH..]).decrement_ttl();
    let mut eth = Frame::new_unchecked(frame);
    eth.set_dst_addr(out_peer);
    eth.set_src_addr(out_mac);
    Verdict::Forward(egress)
}

/// Answer a pod's ping to the gateway in place: swap addresses (from the gateway, to
/// the pod), echo request → echo reply, back out of the ingress port.
///
/// Only a complete, unfragmented, checksum-valid ICMP echo request with a plain
/// 20-byte header is answered; echoing IP options (record route, source route) back
/// correctly is more than a ping to the gateway is worth. Everything else addressed to
/// the gateway is `GatewayUnsupported` (or `Truncated` for an ICMP header cut short).
fn echo_reply(buf: &mut [u8], len: usize, port: &PortInfo) -> Verdict {
    let Some(frame) = buf.get_mut(..len) else {
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
    Verdict::Reply {
        len: (ETH + total) as u16,
    }
}

/// True for addresses an ICMP error must never be sent to or about (RFC 1812 §4.3.2.7):
/// unspecified, limited broadcast, multicast.
fn is_unicast(a: u32) -> bool {
    let a = Ipv4Addr::from(a);
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast())
}

/// The TTL of `buf[..len]` ran out: rewrite the frame into an ICMP time exceeded from
/// the gateway to the sender, quoting the offending IP header and its first 8 data
/// bytes, back out of the ingress port.
///
/// Drops with `TtlExpired` instead when no error may be sent (the datagram is a
/// non-initial fragment, an ICMP error itself, or from/to a non-unicast address,
/// RFC 1122 §3.2.2 / RFC 1812 §4.3.2.7) or the frame's capacity cannot hold the reply.
fn time_exceeded(buf: &mut [u8], len: usize, port: &PortInfo) -> Verdict {
    let drop = Verdict::Drop(DropReason::TtlExpired);
    let Some(l3) = buf.get(ETH..len) else {
        return drop;
    };
    let Ok(ip) = Ipv4Packet::new_checked(l3) else {
        return drop;
    };
    if ip.frag_offset() != 0 || !is_unicast(ip.src_addr()) || !is_unicast(ip.dst_addr()) {
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
        msg.set_msg_type(icmp::msg_type::TIME_EXCEEDED);
        msg.set_msg_code(icmp::CODE_TTL_EXCEEDED_IN_TRANSIT);
        msg.set_rest_of_header([0; 4]);
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
    Verdict::Reply {
        len: new_len as u16,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use etherparse::{
        Icmpv4Type, InternetSlice, Ipv4HeaderSlice, NetSlice, SlicedPacket, TransportSlice,
    };

    use super::super::testutil::*;
    use super::super::{process, DropReason, Verdict};
    use crate::tables::{Fib, PortId, Tables, GATEWAY_IP};

    fn run_with(frame: &[u8], ingress: PortId, t: &Tables) -> (Verdict, Vec<u8>) {
        let (mut buf, len) = umem(frame);
        let v = process(&mut buf, len, ingress, t);
        (v, buf)
    }

    fn run(frame: &[u8], ingress: PortId) -> (Verdict, Vec<u8>) {
        run_with(frame, ingress, &tables())
    }

    fn drop(r: DropReason) -> Verdict {
        Verdict::Drop(r)
    }

    /// The IPv4 header of an Ethernet frame, checksum verified by etherparse.
    fn checked_ipv4(frame: &[u8]) -> Ipv4HeaderSlice<'_> {
        let h = Ipv4HeaderSlice::from_slice(&frame[14..]).unwrap();
        assert_eq!(
            h.header_checksum(),
            h.to_header().calc_header_checksum(),
            "bad IPv4 checksum"
        );
        h
    }

    #[test]
    fn pod_to_pod_decrements_ttl_and_rewrites_macs() {
        let f = udp(POD_A, IP_A, IP_B, 64, 18);
        let (v, out) = run(&f, POD_A);
        assert_eq!(v, Verdict::Forward(POD_B));
        assert_eq!(out[..6], peer(POD_B), "eth dst = egress peer");
        assert_eq!(out[6..12], mac(POD_B), "eth src = egress port");
        let h = checked_ipv4(&out);
        assert_eq!(h.ttl(), 63);
        // Nothing but MACs, TTL and checksum changed.
        let mut expect = f.clone();
        expect[..12].copy_from_slice(&out[..12]);
        expect[22] = 63;
        expect[24..26].copy_from_slice(&out[24..26]);
        assert_eq!(out[..f.len()], expect[..]);
    }

    #[test]
    fn ttl_decrement_verifies_for_many_headers() {
        // Vary ident and TTL so the checksum word walks through its corner cases.
        for ident in (0..=u16::MAX).step_by(97) {
            for ttl in [2u8, 3, 64, 128, 255] {
                let mut f = udp(POD_A, IP_A, IP_B, ttl, 4);
                f[18..20].copy_from_slice(&ident.to_be_bytes());
                fix_ipv4_checksum(&mut f);
                let (v, out) = run(&f, POD_A);
                assert_eq!(v, Verdict::Forward(POD_B));
                assert_eq!(checked_ipv4(&out).ttl(), ttl - 1);
            }
        }
    }

    #[test]
    fn pod_to_outside_goes_to_host_port_and_back() {
        let (v, out) = run(&udp(POD_A, IP_A, IP_OUTSIDE, 64, 18), POD_A);
        assert_eq!(v, Verdict::Forward(HOST));
        assert_eq!(out[..6], peer(HOST));
        assert_eq!(out[6..12], mac(HOST));
        checked_ipv4(&out);

        let (v, out) = run(&udp(HOST, IP_OUTSIDE, IP_B, 64, 18), HOST);
        assert_eq!(v, Verdict::Forward(POD_B));
        assert_eq!(out[..6], peer(POD_B));
        checked_ipv4(&out);
    }

    #[test]
    fn host_port_traffic_never_loops_back_to_the_host() {
        let node = Ipv4Addr::new(192, 168, 1, 10);
        assert_eq!(
            run(&udp(HOST, node, IP_OUTSIDE, 64, 18), HOST).0,
            drop(DropReason::NoRoute)
        );
        assert_eq!(
            run(&udp(HOST, node, GATEWAY_IP, 64, 18), HOST).0,
            drop(DropReason::NoRoute)
        );
        assert_eq!(
            run(&ping(HOST, node, GATEWAY_IP, 8), HOST).0,
            drop(DropReason::NoRoute)
        );
    }

    #[test]
    fn no_route_without_host_port_or_for_a_removed_port() {
        let mut t = tables();
        t.host_port = None;
        assert_eq!(
            run_with(&udp(POD_A, IP_A, IP_OUTSIDE, 64, 18), POD_A, &t).0,
            drop(DropReason::NoRoute)
        );
        assert_eq!(
            run(&udp(POD_A, IP_A, IP_GONE, 64, 18), POD_A).0,
            drop(DropReason::NoRoute)
        );
        let empty = Tables {
            ports: tables().ports,
            fib: Fib::default(),
            ..Tables::default()
        };
        assert_eq!(
            run_with(&udp(POD_A, IP_A, IP_B, 64, 18), POD_A, &empty).0,
            drop(DropReason::NoRoute)
        );
    }

    #[test]
    fn spoofed_source_is_dropped_on_pod_ports_only() {
        assert_eq!(
            run(&udp(POD_A, IP_B, IP_OUTSIDE, 64, 18), POD_A).0,
            drop(DropReason::SpoofedSource)
        );
        assert_eq!(
            run(&ping(POD_A, IP_B, GATEWAY_IP, 8), POD_A).0,
            drop(DropReason::SpoofedSource)
        );
        // The host port may send from any address.
        assert_eq!(
            run(&udp(HOST, IP_OUTSIDE, IP_A, 64, 18), HOST).0,
            Verdict::Forward(POD_A)
        );
    }

    #[test]
    fn each_ipv4_header_error() {
        let f = udp(POD_A, IP_A, IP_B, 64, 18);
        for len in 14..34 {
            assert_eq!(
                run(&f[..len], POD_A).0,
                drop(DropReason::Truncated),
                "len {len}"
            );
        }
        let mutate = |at: usize, v: u8| {
            let mut g = f.clone();
            g[at] = v;
            fix_ipv4_checksum(&mut g);
            run(&g, POD_A).0
        };
        assert_eq!(mutate(14, 0x65), drop(DropReason::Ipv4BadVersion));
        assert_eq!(mutate(14, 0x44), drop(DropReason::Ipv4BadHeaderLength));
        assert_eq!(
            mutate(14, 0x4f),
            drop(DropReason::Ipv4BadHeaderLength),
            "60-byte header in a 46-byte IPv4 packet"
        );
        assert_eq!(
            mutate(17, 19),
            drop(DropReason::Ipv4BadTotalLength),
            "total < header"
        );
        assert_eq!(
            mutate(17, 47),
            drop(DropReason::Ipv4BadTotalLength),
            "total past frame"
        );
        let mut g = f.clone();
        g[24] ^= 0x01;
        assert_eq!(run(&g, POD_A).0, drop(DropReason::Ipv4BadChecksum));
        // Ethernet padding after total length is allowed and kept.
        let mut padded = udp(POD_A, IP_A, IP_B, 64, 2);
        padded.resize(60, 0xaa);
        let (v, out) = run(&padded, POD_A);
        assert_eq!(v, Verdict::Forward(POD_B));
        assert_eq!(out[44..60], [0xaa; 16]);
    }

    fn assert_time_exceeded(f: &[u8], from: PortId, to: Ipv4Addr) {
        let (v, out) = run(f, from);
        let hl = usize::from(f[14] & 0x0f) * 4;
        let quote = hl + (f.len() - 14 - hl).min(8);
        let len = 14 + 20 + 8 + quote;
        assert_eq!(v, Verdict::Reply { len: len as u16 });
        let out = &out[..len];
        assert_eq!(out[..6], f[6..12], "back to the sender");
        assert_eq!(out[6..12], mac(from));
        let p = SlicedPacket::from_ethernet(out).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not IPv4")
        };
        let h = ip.header();
        assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
        assert_eq!((h.source_addr(), h.destination_addr()), (GATEWAY_IP, to));
        assert_eq!(h.ttl(), 64);
        let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
            panic!("not ICMP")
        };
        let want = etherparse::Icmpv4Header::with_checksum(icmp.icmp_type(), icmp.payload());
        assert_eq!(icmp.checksum(), want.checksum, "ICMP checksum");
        assert!(matches!(
            icmp.icmp_type(),
            Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit)
        ));
        assert_eq!(
            icmp.payload(),
            &f[14..14 + quote],
            "quotes header + 8 bytes"
        );
    }

    #[test]
    fn ttl_expiry_becomes_time_exceeded() {
        assert_time_exceeded(&udp(POD_A, IP_A, IP_B, 1, 18), POD_A, IP_A);
        assert_time_exceeded(&udp(POD_A, IP_A, IP_OUTSIDE, 0, 18), POD_A, IP_A);
        assert_time_exceeded(&udp(POD_A, IP_A, IP_B, 1, 3), POD_A, IP_A); // short payload
        assert_time_exceeded(&udp(HOST, IP_OUTSIDE, IP_B, 1, 100), HOST, IP_OUTSIDE);
        let mut echo = ping(POD_A, IP_A, IP_B, 32);
        echo[22] = 1;
        fix_ipv4_checksum(&mut echo);
        assert_time_exceeded(&echo, POD_A, IP_A);
    }

    #[test]
    fn ttl_expiry_drops_when_no_error_may_or_can_be_sent() {
        let expired = drop(DropReason::TtlExpired);
        // No room: the frame's capacity is exactly the packet.
        let mut f = udp(POD_A, IP_A, IP_B, 1, 0);
        let len = f.len();
        assert_eq!(process(&mut f, len, POD_A, &tables()), expired);
        // A non-initial fragment.
        let mut frag = udp(POD_A, IP_A, IP_B, 1, 18);
        frag[20] = 0x00;
        frag[21] = 0x10;
        fix_ipv4_checksum(&mut frag);
        assert_eq!(run(&frag, POD_A).0, expired);
        // An ICMP error about an ICMP error.
        let mut err = ping(POD_A, IP_A, IP_B, 32);
        err[22] = 1;
        err[34] = 11;
        fix_ipv4_checksum(&mut err);
        assert_eq!(run(&err, POD_A).0, expired);
        // From the host port to a multicast group.
        let mcast = udp(HOST, IP_OUTSIDE, Ipv4Addr::new(239, 1, 1, 1), 1, 8);
        let mut t = tables();
        t.fib = Fib::build([(u32::from(Ipv4Addr::new(239, 1, 1, 1)), POD_A)]);
        assert_eq!(run_with(&mcast, HOST, &t).0, expired);
    }

    #[test]
    fn ping_to_gateway_is_answered_in_place() {
        let f = ping(POD_A, IP_A, GATEWAY_IP, 56);
        let (v, out) = run(&f, POD_A);
        assert_eq!(
            v,
            Verdict::Reply {
                len: f.len() as u16
            }
        );
        let out = &out[..f.len()];
        assert_eq!(out[..6], peer(POD_A));
        assert_eq!(out[6..12], mac(POD_A));
        let p = SlicedPacket::from_ethernet(out).unwrap();
        let Some(InternetSlice::Ipv4(ip)) = &p.net else {
            panic!("not IPv4")
        };
        let h = ip.header();
        assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
        assert_eq!(
            (h.source_addr(), h.destination_addr(), h.ttl()),
            (GATEWAY_IP, IP_A, 64)
        );
        let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
            panic!("not ICMP")
        };
        let want = etherparse::Icmpv4Header::with_checksum(icmp.icmp_type(), icmp.payload());
        assert_eq!(icmp.checksum(), want.checksum, "ICMP checksum");
        match icmp.icmp_type() {
            Icmpv4Type::EchoReply(e) => assert_eq!((e.id, e.seq), (0x4242, 7)),
            other => panic!("{other:?}"),
        }
        assert_eq!(icmp.payload(), &f[42..], "echo data returned unchanged");
    }

    #[test]
    fn ping_with_id_and_seq_zero_and_no_data_gets_a_valid_reply() {
        let mut f = ping(POD_A, IP_A, GATEWAY_IP, 0);
        f[38..42].copy_from_slice(&[0; 4]); // id 0, seq 0
        f[36..38].copy_from_slice(&0xf7ffu16.to_be_bytes()); // checksum of 08 00 00…
        let (v, out) = run(&f, POD_A);
        assert_eq!(v, Verdict::Reply { len: 42 });
        assert_eq!(out[34..42], [0, 0, 0xff, 0xff, 0, 0, 0, 0]);
    }

    #[test]
    fn gateway_answers_nothing_but_valid_echo_requests() {
        let unsupported = drop(DropReason::GatewayUnsupported);
        assert_eq!(
            run(&udp(POD_A, IP_A, GATEWAY_IP, 64, 18), POD_A).0,
            unsupported
        );
        let f = ping(POD_A, IP_A, GATEWAY_IP, 16);
        let mut bad = f.clone();
        bad[40] ^= 0xff; // ICMP data, so only the ICMP checksum breaks
        assert_eq!(run(&bad, POD_A).0, unsupported);
        let mut frag = f.clone();
        frag[20] = 0x20; // more fragments
        fix_ipv4_checksum(&mut frag);
        assert_eq!(run(&frag, POD_A).0, unsupported);
        let mut reply = f.clone();
        reply[34] = 0; // an echo reply is not a request
        assert_eq!(run(&reply, POD_A).0, unsupported);
        // An ICMP header cut short by the IPv4 total length.
        let mut short = f[..14 + 20 + 4].to_vec();
        short[16..18].copy_from_slice(&24u16.to_be_bytes());
        fix_ipv4_checksum(&mut short);
        assert_eq!(run(&short, POD_A).0, drop(DropReason::Truncated));
    }
}
