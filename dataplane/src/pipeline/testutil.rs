//! Test fixtures shared by the pipeline stages' unit tests (and the worker's): a small
//! port table with a host port, two pods, an uplink and one remote node, and frame
//! builders (etherparse builds the frames, so the expected bytes do not come from the
//! code under test).

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;

use crate::pipeline::{process, Conntrack, PacketCtx, Verdict};
use crate::tables::{Fib, Lpm, NodeId, Overlay, PortId, PortInfo, PortKind, Tables, Vtep};
use crate::xsk::HEADROOM;

/// UMEM frame size the tests copy frames into (the worker's default chunk size).
pub const FRAME_CAP: usize = 2048;

pub const HOST: PortId = 0;
pub const POD_A: PortId = 1;
pub const POD_B: PortId = 2;
/// A free slot in the port table that the FIB still points at (a stale snapshot).
pub const GONE: PortId = 3;
/// The uplink: VXLAN to and from [`NODE_B`].
pub const UPLINK: PortId = 4;
/// First port id the tables do not know.
pub const UNKNOWN: PortId = 5;

pub const IP_A: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 5);
pub const IP_B: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 6);
pub const IP_GONE: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 7);
pub const IP_OUTSIDE: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);

/// The other node: pod CIDR 10.244.1.0/24, underlay 192.168.0.2.
pub const NODE_B: NodeId = 0;
/// A pod on [`NODE_B`].
pub const IP_REMOTE: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 9);
/// In a remote CIDR of a node whose tunnel endpoint is unknown (node 1).
pub const IP_NO_VTEP: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 9);
pub const UNDERLAY_LOCAL: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
pub const UNDERLAY_B: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);
pub const NEXT_HOP_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 1];
pub const VTEP_MAC_LOCAL: [u8; 6] = [0x02, 0x77, 0, 0, 0, 1];
pub const VTEP_MAC_B: [u8; 6] = [0x02, 0x77, 0, 0, 0, 2];
pub const VNI: u32 = 1;
pub const VXLAN_PORT: u16 = 8472;
/// The tunnel's inner MTU (a 1500-byte uplink).
pub const INNER_MTU: u16 = 1450;

/// Dataplane-side MAC of port `id`.
pub fn mac(id: PortId) -> [u8; 6] {
    [0x02, 0xdd, 0, 0, 0, id as u8]
}

/// Far-side MAC (pod eth0 / xsknet0) of port `id`.
pub fn peer(id: PortId) -> [u8; 6] {
    [0x02, 0xee, 0, 0, 0, id as u8]
}

fn port(id: PortId, kind: PortKind, ip: Ipv4Addr) -> Option<PortInfo> {
    Some(PortInfo {
        kind,
        worker: 0,
        mac: mac(id),
        peer_mac: peer(id),
        ip,
    })
}

/// Host port 0, pods A (1) and B (2), slot 3 free but still in the FIB, the uplink
/// (4) with the overlay towards node B (10.244.1.0/24); 10.244.2.0/24 routes to a node
/// without a tunnel endpoint.
pub fn tables() -> Tables {
    Tables {
        generation: 1,
        ports: vec![
            port(HOST, PortKind::Host, Ipv4Addr::UNSPECIFIED),
            port(POD_A, PortKind::Pod, IP_A),
            port(POD_B, PortKind::Pod, IP_B),
            None,
            port(UPLINK, PortKind::Uplink, UNDERLAY_LOCAL),
        ],
        fib: Fib::build([
            (u32::from(IP_A), POD_A),
            (u32::from(IP_B), POD_B),
            (u32::from(IP_GONE), GONE),
        ]),
        remote: Lpm::build([
            (u32::from(Ipv4Addr::new(10, 244, 1, 0)), 24, NODE_B),
            (u32::from(Ipv4Addr::new(10, 244, 2, 0)), 24, 1),
        ]),
        nodes: vec![Some(Vtep {
            underlay_ip: u32::from(UNDERLAY_B),
            next_hop_mac: NEXT_HOP_MAC,
            vtep_mac: VTEP_MAC_B,
        })],
        node_by_underlay: Fib::build([(u32::from(UNDERLAY_B), NODE_B)]),
        overlay: Some(Overlay {
            uplink: UPLINK,
            local_ip: u32::from(UNDERLAY_LOCAL),
            vtep_mac: VTEP_MAC_LOCAL,
            vni: VNI,
            dst_port: VXLAN_PORT,
            inner_mtu: INNER_MTU,
        }),
        host_port: Some(HOST),
        ..Tables::default()
    }
}

/// A fresh connection table for one test packet.
pub fn ct() -> Conntrack {
    Conntrack::new(1024)
}

/// Ethernet/IPv4/UDP frame with `payload_len` payload bytes, as sent by `from`'s peer.
pub fn udp(from: PortId, src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload_len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
    let b = PacketBuilder::ethernet2(peer(from), mac(from))
        .ipv4(src.octets(), dst.octets(), ttl)
        .udp(4000, 5000);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, &payload).unwrap();
    v
}

/// Ethernet/IPv4/ICMP echo request from `from`'s peer.
pub fn ping(from: PortId, src: Ipv4Addr, dst: Ipv4Addr, payload_len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7) as u8).collect();
    let b = PacketBuilder::ethernet2(peer(from), mac(from))
        .ipv4(src.octets(), dst.octets(), 64)
        .icmpv4_echo_request(0x4242, 7);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, &payload).unwrap();
    v
}

/// Broadcast ARP request from `from`'s peer: who has `tpa`, tell `spa`.
pub fn arp_request(from: PortId, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut v = Vec::with_capacity(42);
    v.extend_from_slice(&[0xff; 6]);
    v.extend_from_slice(&peer(from));
    v.extend_from_slice(&[0x08, 0x06]);
    v.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    v.extend_from_slice(&peer(from));
    v.extend_from_slice(&spa.octets());
    v.extend_from_slice(&[0; 6]);
    v.extend_from_slice(&tpa.octets());
    v
}

/// Recompute the IPv4 header checksum of an Ethernet frame after a test mutated it.
pub fn fix_ipv4_checksum(frame: &mut [u8]) {
    // Clamped so tests can also "fix" headers whose IHL they broke on purpose.
    let hl = (usize::from(frame[14] & 0x0f) * 4).clamp(20, frame.len() - 14);
    frame[24] = 0;
    frame[25] = 0;
    let c = crate::packet::checksum::checksum(&frame[14..14 + hl]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

/// Copy `frame` into a fresh UMEM-sized chunk at [`HEADROOM`], as received on
/// `ingress`; returns (chunk, context).
pub fn umem(frame: &[u8], ingress: PortId) -> (Vec<u8>, PacketCtx) {
    let mut buf = vec![0u8; FRAME_CAP];
    buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
    (buf, PacketCtx::new(HEADROOM, frame.len(), ingress))
}

/// Run `frame` through [`process`] as received on `ingress` with a fresh connection
/// table; returns the verdict and the packet window `buf[ctx.start..][..ctx.len]`
/// afterwards (what the worker transmits for a transmitting verdict).
pub fn run_frame(frame: &[u8], ingress: PortId, t: &Tables) -> (Verdict, Vec<u8>) {
    let (mut buf, mut ctx) = umem(frame, ingress);
    let v = process(&mut buf, &mut ctx, t, &mut ct(), 1);
    (v, window(&buf, &ctx).to_vec())
}

/// The packet window of `ctx` in `buf` (empty when it does not fit).
pub fn window<'a>(buf: &'a [u8], ctx: &PacketCtx) -> &'a [u8] {
    buf.get(ctx.start..)
        .and_then(|b| b.get(..ctx.len))
        .unwrap_or(&[])
}

/// A VXLAN frame from node B's underlay address to ours carrying `inner`, built with
/// etherparse (outer UDP checksum computed, as Linux sends it).
pub fn vxlan_from_b(inner: &[u8]) -> Vec<u8> {
    let mut payload = vec![0x08, 0, 0, 0];
    payload.extend_from_slice(&(VNI << 8).to_be_bytes());
    payload.extend_from_slice(inner);
    let b = PacketBuilder::ethernet2(NEXT_HOP_MAC, mac(UPLINK))
        .ipv4(UNDERLAY_B.octets(), UNDERLAY_LOCAL.octets(), 64)
        .udp(40000, VXLAN_PORT);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, &payload).unwrap();
    v
}

/// An Ethernet/IPv4/UDP frame as node B's VTEP sends it inside VXLAN.
pub fn inner_udp(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload_len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
    let b = PacketBuilder::ethernet2(VTEP_MAC_B, VTEP_MAC_LOCAL)
        .ipv4(src.octets(), dst.octets(), ttl)
        .udp(4000, 5000);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, &payload).unwrap();
    v
}
