//! Forward stage: the IPv4 path, as a sequence of named stages.
//!
//! ```text
//! l3::check → gateway? l3::echo_reply → route::route → TTL? l3::time_exceeded
//!           → policy::admit → rewrite::rewrite → remote? encap::encap
//! ```
//!
//! Each stage has its own file and contract: [`l3`](super::l3) (header checks,
//! anti-spoofing, the gateway's ICMP), [`route`](super::route) (local | host | remote),
//! [`policy`](super::policy) (NetworkPolicy with the worker's connection table),
//! [`rewrite`](super::rewrite) (TTL, MACs) and [`encap`](super::encap) (VXLAN in the
//! headroom). Decapsulated frames from the uplink enter here too, after
//! [`decap`](super::decap). A local or host-bound frame keeps its length and position
//! (`Verdict::Forward`); a remote one grows by the outer headers (`Verdict::Encap`).
//!
//! The header checks themselves ([`l3::check`]) run in the caller, before this stage:
//! in [`process`](super::process) inlined into the worker's loop, so a malformed
//! packet is dropped without a call; after [`decap`](super::decap) on the inner frame.
//!
//! Invariants: never panics (every slice bound is derived from the checked header),
//! never allocates, and a transmitted frame always carries valid IPv4 header checksums.

use crate::packet::ethernet;
use crate::packet::ipv4::Packet as Ipv4Packet;
use crate::tables::{PortInfo, PortKind, Tables, GATEWAY_IP};

use super::conntrack::{Conntrack, Millis};
use super::{encap, l3, policy, rewrite, route, DropReason, PacketCtx, Verdict};

const ETH: usize = ethernet::HEADER_LEN;

/// Forward (or answer, or drop) the IPv4 packet `buf[ctx.start..][..ctx.len]` that
/// arrived on `ctx.ingress` (`port` is its table entry), whose header the caller has
/// just checked with [`l3::check`] on exactly that window ([`process`](super::process)
/// and [`decap`](super::decap) do; every slice bound below derives from that check).
/// `buf` is the frame's whole chunk, so replies may be longer than the request and
/// encap may write in front.
///
/// Order of decisions after the checks: the gateway's own traffic (echo reply or
/// `GatewayUnsupported`), [`route::route`] (`NoRoute`), TTL (a time-exceeded reply, or
/// `TtlExpired` when none may or can be sent, and always for decapsulated frames), the
/// policy stage (`PolicyDenied`, `ConntrackFull`; it may steer a reply of a flow that
/// came in through the host port back to the host port instead of the routed egress,
/// `NoRoute` when that port is gone), then the rewrite and, for another node, the
/// encap (`EncapNoRoom`).
///
/// `inline(always)`: inlined into [`process`](super::process), itself inlined into
/// the worker's loop, so a forwarded packet pays no call and no register saves of its
/// own; the uplink path (`decap_and_forward`, out of line) has its own copy. What is
/// rare stays out of line: the gateway's replies, `admit_slow`, encap (see
/// bench/RESULTS.md, "Issue 7").
///
/// Measured cost: ~15 ns/pkt at burst 64 (64-byte UDP, FIB hit, 1 or 100 pods; ~66
/// Mpps on one core), ~23 ns/pkt with 10,000 pods once the FIB and port table no longer
/// sit in L1/L2. See bench/RESULTS.md.
#[inline(always)]
pub(super) fn forward(
    buf: &mut [u8],
    ctx: &mut PacketCtx,
    port: &PortInfo,
    tables: &Tables,
    ct: &mut Conntrack,
    now: Millis,
) -> Verdict {
    let len = ctx.len;
    let Some(frame) = buf.get_mut(ctx.start..) else {
        return Verdict::Drop(DropReason::Truncated);
    };
    let Some(l3) = frame.get(ETH..len) else {
        return Verdict::Drop(DropReason::Truncated);
    };
    debug_assert!(
        if ctx.tail == 0 {
            l3::check(&frame[..len], port).is_ok()
        } else {
            l3::check_chain(&frame[..len], ctx.tail, port).is_ok()
        },
        "forward without l3::check"
    );
    let ip = Ipv4Packet::new_unchecked(l3);
    let dst = ip.dst_addr();
    if dst == u32::from(GATEWAY_IP) && port.kind == PortKind::Pod {
        return l3::echo_reply(frame, ctx, port);
    }
    let eg = match route::route(tables, ctx, dst) {
        Ok(eg) => eg,
        Err(r) => return Verdict::Drop(r),
    };
    if ip.ttl() <= 1 {
        if port.kind == PortKind::Uplink {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        return l3::time_exceeded(frame, ctx, port);
    }
    // Issue 9 hook (uplink helper): larger than the tunnel carries → ICMP frag-needed.
    if let Some(t) = eg.tunnel.filter(|t| encap::too_big(ip.total_len(), t)) {
        return encap::frag_needed(frame, ctx, port, &t);
    }
    let eg = match policy::admit(&ip, ctx.ingress, port, eg.port, eg.out, tables, ct, now) {
        Ok(policy::Steer::Routed) => eg,
        Ok(policy::Steer::Host) => match route::to_host(tables) {
            Some(h) => h,
            None => return Verdict::Drop(DropReason::NoRoute),
        },
        Err(r) => return Verdict::Drop(r),
    };

    rewrite::rewrite(&mut frame[..len], &eg);
    match eg.tunnel {
        None => Verdict::Forward(eg.port),
        // Not larger than the tunnel carries (checked above), yet more than one
        // buffer: the encap writes in front of the head alone.
        Some(_) if ctx.tail != 0 => Verdict::Drop(DropReason::ChainNotAllowed),
        Some(t) => match encap::encap(buf, ctx, eg.out, &t) {
            Ok(()) => Verdict::Encap(eg.port),
            Err(r) => Verdict::Drop(r),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use etherparse::{
        Icmpv4Type, InternetSlice, Ipv4HeaderSlice, NetSlice, SlicedPacket, TransportSlice,
    };

    use super::super::testutil::*;
    use super::super::{process, DropReason, PacketCtx, Verdict};
    use crate::tables::{Fib, PortId, Tables, GATEWAY_IP};

    fn run_with(frame: &[u8], ingress: PortId, t: &Tables) -> (Verdict, Vec<u8>) {
        run_frame(frame, ingress, t)
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
        assert_eq!(v, Verdict::Reply);
        assert_eq!(out.len(), len);
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
        let mut ctx = PacketCtx::new(0, f.len(), POD_A);
        assert_eq!(process(&mut f, &mut ctx, &tables(), &mut ct(), 1), expired);
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
        assert_eq!(v, Verdict::Reply);
        assert_eq!(out.len(), f.len());
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
        assert_eq!(v, Verdict::Reply);
        assert_eq!(out.len(), 42);
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
