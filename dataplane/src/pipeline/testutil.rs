//! Test fixtures shared by the pipeline stages' unit tests: a small port table and
//! frame builders (etherparse builds the IPv4 frames, so the expected bytes do not
//! come from the code under test).

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;

use crate::pipeline::Conntrack;
use crate::tables::{Fib, PortId, PortInfo, PortKind, Tables};

/// UMEM frame size the tests copy frames into (the worker's default chunk size).
pub const FRAME_CAP: usize = 2048;

pub const HOST: PortId = 0;
pub const POD_A: PortId = 1;
pub const POD_B: PortId = 2;
/// A free slot in the port table that the FIB still points at (a stale snapshot).
pub const GONE: PortId = 3;

pub const IP_A: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 5);
pub const IP_B: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 6);
pub const IP_GONE: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 7);
pub const IP_OUTSIDE: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);

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

/// Host port 0, pods A (1) and B (2), slot 3 free but still in the FIB.
pub fn tables() -> Tables {
    Tables {
        generation: 1,
        ports: vec![
            port(HOST, PortKind::Host, Ipv4Addr::UNSPECIFIED),
            port(POD_A, PortKind::Pod, IP_A),
            port(POD_B, PortKind::Pod, IP_B),
            None,
        ],
        fib: Fib::build([
            (u32::from(IP_A), POD_A),
            (u32::from(IP_B), POD_B),
            (u32::from(IP_GONE), GONE),
        ]),
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

/// Copy `frame` into a fresh UMEM-sized buffer; returns (buffer, len).
pub fn umem(frame: &[u8]) -> (Vec<u8>, usize) {
    let mut buf = vec![0u8; FRAME_CAP];
    buf[..frame.len()].copy_from_slice(frame);
    (buf, frame.len())
}
