//! The pipeline benches' setup, shared by `benches/pipeline.rs` (criterion) and
//! `examples/callgrind.rs` (exact instruction counts), so both measure the same frames
//! over the same tables: host port 0 and `n` pods on ports 1..=n, bursts of 64-byte UDP
//! frames at a 128-byte stride, ARP requests.

use std::hint::black_box;
use std::net::Ipv4Addr;

use xsknet_dataplane::packet::ethernet;
use xsknet_dataplane::packet::ipv4::Packet as Ipv4Packet;
use xsknet_dataplane::pipeline::{process, Conntrack, PacketCtx, BURST};
use xsknet_dataplane::tables::{Fib, PortId, PortInfo, PortKind, Tables};

/// Per-frame capacity in the burst buffer.
pub const STRIDE: usize = 128;
/// Length of the forwarded UDP frames (Ethernet header to end of payload, no FCS).
pub const FRAME_LEN: usize = 64;
pub const HOST: PortId = 0;
/// Bursts a forward bench cycles through (enough to cover 10,000 destinations).
pub const MAX_BURSTS: usize = 160;

/// A burst: frames at `i * STRIDE`, their lengths and ingress ports.
#[derive(Clone)]
pub struct Burst {
    pub bytes: Vec<u8>,
    pub lens: [usize; BURST],
    pub ingress: [PortId; BURST],
}

impl Default for Burst {
    fn default() -> Self {
        Self::new()
    }
}

impl Burst {
    pub fn new() -> Self {
        Burst {
            bytes: vec![0; BURST * STRIDE],
            lens: [0; BURST],
            ingress: [0; BURST],
        }
    }

    pub fn set(&mut self, i: usize, frame: &[u8], ingress: PortId) {
        self.bytes[i * STRIDE..i * STRIDE + frame.len()].copy_from_slice(frame);
        self.lens[i] = frame.len();
        self.ingress[i] = ingress;
    }

    /// Run the whole burst through `process`, the way a worker does (with its
    /// connection table and a clock that stands still).
    #[inline]
    pub fn process(&mut self, tables: &Tables, ct: &mut Conntrack) {
        for (i, chunk) in self.bytes.chunks_exact_mut(STRIDE).enumerate() {
            let mut ctx = PacketCtx::new(0, self.lens[i], self.ingress[i]);
            black_box(process(chunk, &mut ctx, tables, ct, 1));
        }
    }
}

pub fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0af4_0000 + i as u32 + 1) // 10.244.0.1, …
}

pub fn pod_port(i: usize) -> PortId {
    i as PortId + 1
}

pub fn mac(id: PortId, side: u8) -> [u8; 6] {
    [0x02, side, 0, 0, (id >> 8) as u8, id as u8]
}

/// Host port 0 and `n` pods on ports 1..=n.
pub fn tables(n: usize) -> Tables {
    let host = PortInfo {
        kind: PortKind::Host,
        worker: 0,
        mac: mac(HOST, 0xdd),
        peer_mac: mac(HOST, 0xee),
        ip: Ipv4Addr::UNSPECIFIED,
    };
    let mut ports = vec![Some(host)];
    ports.extend((0..n).map(|i| {
        let id = pod_port(i);
        Some(PortInfo {
            kind: PortKind::Pod,
            worker: 0,
            mac: mac(id, 0xdd),
            peer_mac: mac(id, 0xee),
            ip: pod_ip(i),
        })
    }));
    Tables {
        generation: 1,
        ports,
        fib: Fib::build((0..n).map(|i| (u32::from(pod_ip(i)), pod_port(i)))),
        host_port: Some(HOST),
        ..Tables::default()
    }
}

/// A 64-byte Ethernet/IPv4/UDP frame (22 payload bytes), valid checksums, TTL 64.
pub fn udp64(from: PortId, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; FRAME_LEN];
    f[..6].copy_from_slice(&mac(from, 0xdd));
    f[6..12].copy_from_slice(&mac(from, 0xee));
    f[12..14].copy_from_slice(&ethernet::ethertype::IPV4.to_be_bytes());
    let ip_len = (FRAME_LEN - 14) as u16;
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
    ip.set_version_and_header_len(20);
    ip.set_total_len(ip_len);
    ip.set_flags_and_offset(0x4000);
    ip.set_ttl(64);
    ip.set_protocol(17);
    ip.set_src_addr(src.into());
    ip.set_dst_addr(dst.into());
    ip.fill_checksum();
    f[34..36].copy_from_slice(&4000u16.to_be_bytes());
    f[36..38].copy_from_slice(&5000u16.to_be_bytes());
    f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f
}

pub fn arp_request(from: PortId, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac(from, 0xee));
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac(from, 0xee));
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa.octets());
    f
}

/// Bursts of pod-to-pod frames over `n` pods: frame k goes from pod k mod n to a pod
/// picked by a stride coprime with n, so the bursts together reach every pod.
pub fn forward_bursts(n: usize) -> Vec<Burst> {
    let bursts = n.div_ceil(BURST).clamp(1, MAX_BURSTS);
    (0..bursts)
        .map(|b| {
            let mut burst = Burst::new();
            for i in 0..BURST {
                let k = b * BURST + i;
                let (s, d) = (k % n, (k * 7919 + 1) % n);
                burst.set(i, &udp64(pod_port(s), pod_ip(s), pod_ip(d)), pod_port(s));
            }
            burst
        })
        .collect()
}
