//! ARP stage: proxy ARP, answered in place.
//!
//! Pods are pure L3: each has a /32 and an on-link default route via the link-local
//! gateway, so every ARP request a pod sends (for the gateway, or for any address it
//! believes on-link) is answered with the MAC of the port it came in on (the host-side
//! veth); the host port is treated the same way. There is no broadcast domain and no
//! MAC learning, so the answer never depends on anything but the ingress port.
//!
//! The request frame is rewritten into the reply in its own UMEM frame and goes back
//! out of the ingress port (`Verdict::Reply`): no copy, no allocation. Gratuitous ARP
//! and duplicate-address probes (RFC 5227) are not answered: answering them would tell
//! the pod its own address is taken.
//!
//! Cost: see [`answer`].

use crate::packet::arp::{self, Packet as ArpPacket};
use crate::packet::ethernet::{self, Frame};
use crate::tables::PortInfo;

use super::{DropReason, PacketCtx, Verdict};

/// Length of the reply frame: Ethernet header + Ethernet/IPv4 ARP, with the request's
/// trailing padding dropped (the veth does not need it; a NIC pads on its own).
pub const REPLY_LEN: usize = ethernet::HEADER_LEN + arp::ETHERNET_IPV4_LEN;

/// Answer an ARP request in `frame` (exactly the received bytes, Ethernet header
/// included) on behalf of `port`, the ingress port; a reply sets `ctx.len` to
/// [`REPLY_LEN`] (the reply starts where the request did).
///
/// Drops: fewer bytes than the ARP packet needs → `Truncated`; not Ethernet/IPv4, not a
/// request, a gratuitous ARP (`tpa == spa`), a probe (`spa == 0.0.0.0`), or a request
/// for the port's own pod address → `ArpUnsupported`.
///
/// Measured cost: ~8 ns/pkt at burst 64 (whole `process` path, ~125 Mpps on one
/// core), see bench/RESULTS.md.
#[inline]
pub fn answer(frame: &mut [u8], ctx: &mut PacketCtx, port: &PortInfo) -> Verdict {
    let Some(payload) = frame.get_mut(ethernet::HEADER_LEN..) else {
        return Verdict::Drop(DropReason::Truncated);
    };
    // The ARP view's only error is a short buffer.
    let Ok(mut req) = ArpPacket::new_checked(payload) else {
        return Verdict::Drop(DropReason::Truncated);
    };
    if !req.is_ethernet_ipv4() || req.operation() != arp::OP_REQUEST {
        return Verdict::Drop(DropReason::ArpUnsupported);
    }
    let sha = req.sender_hardware_addr();
    let spa = req.sender_protocol_addr();
    let tpa = req.target_protocol_addr();
    // Gratuitous ARP announces spa; a probe (spa 0) asks whether tpa is free, and any
    // answer would say "taken"; a request for the pod's own address is its own
    // conflict check. None of these wants a proxy answer.
    if tpa == spa || spa == 0 || tpa == u32::from(port.ip) {
        return Verdict::Drop(DropReason::ArpUnsupported);
    }

    req.set_operation(arp::OP_REPLY);
    req.set_sender_hardware_addr(port.mac);
    req.set_sender_protocol_addr(tpa);
    req.set_target_hardware_addr(sha);
    req.set_target_protocol_addr(spa);

    let mut eth = Frame::new_unchecked(frame);
    eth.set_dst_addr(sha);
    eth.set_src_addr(port.mac);
    ctx.len = REPLY_LEN;
    Verdict::Reply
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::super::testutil::*;
    use super::super::{DropReason, Verdict};
    use crate::tables::GATEWAY_IP;

    /// The verdict and the transmitted window (the whole tail for a drop).
    fn run(frame: &[u8], ingress: u16) -> (Verdict, Vec<u8>) {
        run_frame(frame, ingress, &tables())
    }

    #[test]
    fn answers_gateway_request_with_exact_reply_bytes() {
        let (v, buf) = run(&arp_request(POD_A, IP_A, GATEWAY_IP), POD_A);
        assert_eq!(v, Verdict::Reply);
        assert_eq!(buf.len(), 42);
        #[rustfmt::skip]
        let want: [u8; 42] = [
            0x02, 0xee, 0, 0, 0, 1,   // eth dst: the requester (pod A's eth0)
            0x02, 0xdd, 0, 0, 0, 1,   // eth src: port A's MAC
            0x08, 0x06,               // ARP
            0, 1, 8, 0, 6, 4, 0, 2,   // Ethernet, IPv4, 6, 4, reply
            0x02, 0xdd, 0, 0, 0, 1,   // sha: port A's MAC
            169, 254, 1, 1,           // spa: the address asked for
            0x02, 0xee, 0, 0, 0, 1,   // tha: requester
            10, 244, 0, 5,            // tpa: requester
        ];
        assert_eq!(buf[..42], want);
    }

    #[test]
    fn answers_any_address_and_on_the_host_port() {
        let (v, buf) = run(&arp_request(POD_A, IP_A, IP_B), POD_A);
        assert_eq!(v, Verdict::Reply);
        assert_eq!(buf.len(), 42);
        assert_eq!(buf[22..28], mac(POD_A));
        assert_eq!(buf[28..32], IP_B.octets());

        let node = Ipv4Addr::new(192, 168, 1, 10);
        let (v, buf) = run(&arp_request(HOST, node, IP_A), HOST);
        assert_eq!(v, Verdict::Reply);
        assert_eq!(buf.len(), 42);
        assert_eq!(buf[..6], peer(HOST));
        assert_eq!(buf[6..12], mac(HOST));
        assert_eq!(buf[22..28], mac(HOST));
        assert_eq!(buf[28..32], IP_A.octets());
        assert_eq!(buf[38..42], node.octets());
    }

    #[test]
    fn padded_request_gets_unpadded_reply() {
        let mut f = arp_request(POD_A, IP_A, GATEWAY_IP);
        f.resize(60, 0);
        assert_eq!(run(&f, POD_A).0, Verdict::Reply);
        assert_eq!(run(&f, POD_A).1.len(), 42);
    }

    #[test]
    fn gratuitous_and_probes_are_not_answered() {
        let unsupported = Verdict::Drop(DropReason::ArpUnsupported);
        // Gratuitous ARP: announces its own address.
        assert_eq!(run(&arp_request(POD_A, IP_A, IP_A), POD_A).0, unsupported);
        // RFC 5227 probe for its own address, and for any other.
        assert_eq!(
            run(&arp_request(POD_A, Ipv4Addr::UNSPECIFIED, IP_A), POD_A).0,
            unsupported
        );
        assert_eq!(
            run(
                &arp_request(POD_A, Ipv4Addr::UNSPECIFIED, GATEWAY_IP),
                POD_A
            )
            .0,
            unsupported
        );
        // A request for the pod's own address from an odd sender address.
        assert_eq!(run(&arp_request(POD_A, IP_B, IP_A), POD_A).0, unsupported);
    }

    #[test]
    fn non_requests_and_foreign_kinds_are_unsupported() {
        let unsupported = Verdict::Drop(DropReason::ArpUnsupported);
        let base = arp_request(POD_A, IP_A, GATEWAY_IP);
        for (at, value) in [(21, 2u8), (15, 6), (16, 0x86), (18, 8), (19, 16)] {
            let mut f = base.clone();
            f[at] = value; // op reply, htype 6, ptype 0x86xx, hlen 8, plen 16
            if f[18] == 8 || f[19] == 16 {
                f.resize(80, 0); // room for the addresses the packet claims
            }
            assert_eq!(run(&f, POD_A).0, unsupported, "byte {at} = {value}");
        }
    }

    #[test]
    fn short_arp_is_truncated() {
        let f = arp_request(POD_A, IP_A, GATEWAY_IP);
        for len in 14..42 {
            assert_eq!(
                run(&f[..len], POD_A).0,
                Verdict::Drop(DropReason::Truncated),
                "len {len}"
            );
        }
    }
}
