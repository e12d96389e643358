//! Fuzz `pipeline::process` with arbitrary frames.
//!
//! Input layout: byte 0 picks the ingress port (host, two pods, a removed port, the
//! uplink, an unknown one), byte 1 adds spare capacity after the frame (room for
//! replies to grow, or none), byte 2 bit 0 makes `len` claim one byte more than the
//! buffer, bits 1–7 the headroom in front of the frame (×4 bytes: none, too little for
//! encap, or plenty); the rest is the frame. Beyond "never panics", it checks the
//! invariants the worker relies on: every transmitting verdict leaves its window
//! inside the buffer; `Forward`/`Decap` name a known port and carry a valid IPv4 header
//! checksum; `Encap` carries valid outer and inner IPv4 checksums; a `Reply`, if IPv4,
//! has valid IPv4 and ICMP checksums.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use xsknet_dataplane::packet::checksum;
use xsknet_dataplane::pipeline::{process, Conntrack, PacketCtx, Verdict};
use xsknet_dataplane::tables::{Fib, Lpm, Overlay, PortId, PortInfo, PortKind, Tables, Vtep};

fn port(id: PortId, kind: PortKind, ip: Ipv4Addr) -> Option<PortInfo> {
    Some(PortInfo {
        kind,
        worker: 0,
        mac: [0x02, 0xdd, 0, 0, 0, id as u8],
        peer_mac: [0x02, 0xee, 0, 0, 0, id as u8],
        ip,
    })
}

fn tables() -> Tables {
    let (a, b, gone) = (
        Ipv4Addr::new(10, 244, 0, 5),
        Ipv4Addr::new(10, 244, 0, 6),
        Ipv4Addr::new(10, 244, 0, 7),
    );
    Tables {
        generation: 1,
        ports: vec![
            port(0, PortKind::Host, Ipv4Addr::UNSPECIFIED),
            port(1, PortKind::Pod, a),
            port(2, PortKind::Pod, b),
            None,
            port(4, PortKind::Uplink, Ipv4Addr::new(192, 168, 0, 1)),
        ],
        fib: Fib::build([(u32::from(a), 1), (u32::from(b), 2), (u32::from(gone), 3)]),
        remote: Lpm::build([(u32::from(Ipv4Addr::new(10, 244, 1, 0)), 24, 0)]),
        nodes: vec![Some(Vtep {
            underlay_ip: u32::from(Ipv4Addr::new(192, 168, 0, 2)),
            next_hop_mac: [0x02, 0x99, 0, 0, 0, 1],
            vtep_mac: [0x02, 0x77, 0, 0, 0, 2],
        })],
        node_by_underlay: Fib::build([(u32::from(Ipv4Addr::new(192, 168, 0, 2)), 0)]),
        overlay: Some(Overlay {
            uplink: 4,
            local_ip: u32::from(Ipv4Addr::new(192, 168, 0, 1)),
            vtep_mac: [0x02, 0x77, 0, 0, 0, 1],
            vni: 1,
            dst_port: 8472,
            inner_mtu: 1450,
        }),
        host_port: Some(0),
        ..Tables::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let [ingress, spare, flags, frame @ ..] = data else {
        return;
    };
    let tables = tables();
    let ingress = PortId::from(*ingress % 6);
    let start = usize::from(flags >> 1) * 4;
    let mut buf = vec![0u8; start];
    buf.extend_from_slice(frame);
    buf.resize(start + frame.len() + usize::from(*spare), 0);
    let len = frame.len() + usize::from(flags & 1) * (buf.len() + 1 - start - frame.len());
    // A small table, so fuzzed flows also exercise early drop and refusals.
    let mut ct = Conntrack::new(16);
    let mut ctx = PacketCtx::new(start, len, ingress);
    let v = process(&mut buf, &mut ctx, &tables, &mut ct, 1);
    if let Verdict::Drop(_) = v {
        return;
    }
    let w = buf
        .get(ctx.start..)
        .and_then(|b| b.get(..ctx.len))
        .expect("transmitted window inside the buffer");
    let ipv4_ok = |at: usize| {
        let hl = usize::from(w[at] & 0x0f) * 4;
        checksum::verifies(&w[at..at + hl])
    };
    match v {
        Verdict::Forward(p) | Verdict::Decap(p) => {
            assert!(tables.port(p).is_some());
            assert!(ipv4_ok(14), "forwarded a bad IPv4 checksum");
        }
        Verdict::Encap(port) => {
            assert_eq!(port, 4);
            assert!(ipv4_ok(14), "outer IPv4 checksum");
            assert!(ipv4_ok(14 + 20 + 16 + 14), "inner IPv4 checksum");
        }
        Verdict::Reply => {
            // Replies built on IPv4 (echo reply, time exceeded) must verify end to end.
            if w[12..14] == [0x08, 0x00] {
                let hl = usize::from(w[14] & 0x0f) * 4;
                assert!(ipv4_ok(14), "reply with a bad IPv4 checksum");
                assert!(
                    checksum::verifies(&w[14 + hl..]),
                    "reply with a bad ICMP checksum"
                );
            }
        }
        Verdict::Drop(_) => {}
    }
});
