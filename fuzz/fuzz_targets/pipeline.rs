//! Fuzz `pipeline::process` with arbitrary frames.
//!
//! Input layout: byte 0 picks the ingress port (host, two pods, a removed port, an
//! unknown one), byte 1 adds spare capacity after the frame (room for replies to
//! grow, or none), byte 2 bit 0 makes `len` claim one byte more than the buffer; the
//! rest is the frame. Beyond "never panics", it checks the invariants the worker
//! relies on: a `Forward` names a known port and carries a valid IPv4 header checksum;
//! a `Reply` fits the buffer and, if IPv4, has valid IPv4 and ICMP checksums.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use xsknet_dataplane::packet::checksum;
use xsknet_dataplane::pipeline::{process, Verdict};
use xsknet_dataplane::tables::{Fib, PortId, PortInfo, PortKind, Tables};

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
        ],
        fib: Fib::build([(u32::from(a), 1), (u32::from(b), 2), (u32::from(gone), 3)]),
        host_port: Some(0),
    }
}

fuzz_target!(|data: &[u8]| {
    let [ingress, spare, flags, frame @ ..] = data else {
        return;
    };
    let tables = tables();
    let ingress = PortId::from(*ingress % 5);
    let mut buf = frame.to_vec();
    buf.resize(frame.len() + usize::from(*spare), 0);
    let len = frame.len() + usize::from(flags & 1) * (buf.len() + 1 - frame.len());
    match process(&mut buf, len, ingress, &tables) {
        Verdict::Forward(p) => {
            assert!(tables.port(p).is_some());
            let hl = usize::from(buf[14] & 0x0f) * 4;
            assert!(
                checksum::verifies(&buf[14..14 + hl]),
                "forwarded a bad IPv4 checksum"
            );
        }
        Verdict::Reply { len } => {
            let len = usize::from(len);
            assert!(len <= buf.len());
            // Replies built on IPv4 (echo reply, time exceeded) must verify end to end.
            if buf[12..14] == [0x08, 0x00] {
                let hl = usize::from(buf[14] & 0x0f) * 4;
                assert!(
                    checksum::verifies(&buf[14..14 + hl]),
                    "reply with a bad IPv4 checksum"
                );
                assert!(
                    checksum::verifies(&buf[14 + hl..len]),
                    "reply with a bad ICMP checksum"
                );
            }
        }
        Verdict::Drop(_) => {}
    }
});
