//! Criterion benches of the pipeline stages, per burst of `BURST` frames.
//!
//! What they measure: the pure per-frame work of `pipeline::process` (and, for
//! `parse_only`, just the checked views) on frames already in memory, with no rings,
//! syscalls or copies: the ceiling a worker core can reach before any I/O. Every bench
//! processes one burst per iteration and reports `Throughput::Elements(BURST)`, so
//! criterion's "thrpt" is packets per second and time / 64 is ns per packet.
//!
//! Frames live in one flat buffer with a 128-byte stride (a compact stand-in for UMEM
//! chunks; 128 bytes leave room for a time-exceeded reply). Stages that rewrite frames
//! in place (forward, ARP) get a fresh copy of their burst for every iteration from
//! `iter_batched_ref`; the copy is setup, not measured. Batches are kept small so the
//! copies stay in L2, as a just-received burst would be. The forward benches rotate
//! through bursts whose destinations cover every pod, so a 10,000-pod FIB is really
//! probed across its whole slot array, not at 64 hot entries.
//!
//! Results, with command, machine and date: bench/RESULTS.md.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use xsknet_dataplane::packet::ethernet::{self, Frame};
use xsknet_dataplane::packet::ipv4::Packet as Ipv4Packet;
use xsknet_dataplane::pipeline::conntrack::DEFAULT_CAPACITY;
use xsknet_dataplane::pipeline::{process, Conntrack, PacketCtx, Verdict, BURST};
use xsknet_dataplane::tables::{Fib, PortId, PortInfo, PortKind, Tables, GATEWAY_IP};

/// Per-frame capacity in the burst buffer.
const STRIDE: usize = 128;
/// Length of the forwarded UDP frames (Ethernet header to end of payload, no FCS).
const FRAME_LEN: usize = 64;
const HOST: PortId = 0;
/// Bursts a forward bench cycles through (enough to cover 10,000 destinations).
const MAX_BURSTS: usize = 160;
/// Iterations per `iter_batched_ref` batch: 8 bursts × 8 KiB stay in L2.
const BATCH: BatchSize = BatchSize::NumIterations(8);

/// A burst: frames at `i * STRIDE`, their lengths and ingress ports.
#[derive(Clone)]
struct Burst {
    bytes: Vec<u8>,
    lens: [usize; BURST],
    ingress: [PortId; BURST],
}

impl Burst {
    fn new() -> Self {
        Burst {
            bytes: vec![0; BURST * STRIDE],
            lens: [0; BURST],
            ingress: [0; BURST],
        }
    }

    fn set(&mut self, i: usize, frame: &[u8], ingress: PortId) {
        self.bytes[i * STRIDE..i * STRIDE + frame.len()].copy_from_slice(frame);
        self.lens[i] = frame.len();
        self.ingress[i] = ingress;
    }

    /// Run the whole burst through `process`, the way a worker does (with its
    /// connection table and a clock that stands still).
    #[inline]
    fn process(&mut self, tables: &Tables, ct: &mut Conntrack) {
        for (i, chunk) in self.bytes.chunks_exact_mut(STRIDE).enumerate() {
            let mut ctx = PacketCtx::new(0, self.lens[i], self.ingress[i]);
            black_box(process(chunk, &mut ctx, tables, ct, 1));
        }
    }
}

fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0af4_0000 + i as u32 + 1) // 10.244.0.1, …
}

fn pod_port(i: usize) -> PortId {
    i as PortId + 1
}

fn mac(id: PortId, side: u8) -> [u8; 6] {
    [0x02, side, 0, 0, (id >> 8) as u8, id as u8]
}

/// Host port 0 and `n` pods on ports 1..=n.
fn tables(n: usize) -> Tables {
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
fn udp64(from: PortId, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
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

fn arp_request(from: PortId, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
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
fn forward_bursts(n: usize) -> Vec<Burst> {
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

fn assert_all(
    burst: &Burst,
    tables: &Tables,
    ct: &mut Conntrack,
    ok: impl Fn(Verdict) -> bool,
    what: &str,
) {
    let mut b = burst.clone();
    for (i, chunk) in b.bytes.chunks_exact_mut(STRIDE).enumerate() {
        let mut ctx = PacketCtx::new(0, b.lens[i], b.ingress[i]);
        let v = process(chunk, &mut ctx, tables, ct, 1);
        assert!(ok(v), "{what}: frame {i} got {v:?}");
    }
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BURST as u64));
    // One worker's connection table: pod-to-pod flows are tracked, so after the
    // assertion pass every forward below is a connection-table hit.
    let mut ct = Conntrack::new(DEFAULT_CAPACITY);

    // Parse only: the checked Ethernet + IPv4 views and the header checksum, nothing
    // decided or written. The floor under every IPv4 verdict.
    let t100 = tables(100);
    let parse = forward_bursts(100).swap_remove(0);
    g.bench_function("parse_only", |b| {
        b.iter(|| {
            for (i, chunk) in parse.bytes.chunks_exact(STRIDE).enumerate() {
                let Ok(eth) = Frame::new_checked(&chunk[..parse.lens[i]]) else {
                    continue;
                };
                if eth.ethertype() != ethernet::ethertype::IPV4 {
                    continue;
                }
                if let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) {
                    black_box((ip.verify_checksum(), ip.dst_addr(), ip.ttl()));
                }
            }
        })
    });

    // ARP: every pod asking for the gateway, answered in place.
    let mut arp = Burst::new();
    for i in 0..BURST {
        let s = i % 100;
        arp.set(
            i,
            &arp_request(pod_port(s), pod_ip(s), GATEWAY_IP),
            pod_port(s),
        );
    }
    assert_all(&arp, &t100, &mut ct, |v| v == Verdict::Reply, "arp");
    g.bench_function("arp_reply", |b| {
        b.iter_batched_ref(|| arp.clone(), |burst| burst.process(&t100, &mut ct), BATCH)
    });

    // IPv4 forward of 64-byte UDP frames, FIB hit, for 1, 100 and 10,000 pods.
    for n in [1usize, 100, 10_000] {
        let t = tables(n);
        let bursts = forward_bursts(n);
        for burst in &bursts {
            assert_all(
                burst,
                &t,
                &mut ct,
                |v| matches!(v, Verdict::Forward(p) if p != HOST),
                "forward",
            );
        }
        let mut next = 0;
        g.bench_with_input(BenchmarkId::new("forward_udp64", n), &n, |b, _| {
            b.iter_batched_ref(
                || {
                    next = (next + 1) % bursts.len();
                    bursts[next].clone()
                },
                |burst| burst.process(&t, &mut ct),
                BATCH,
            )
        });
    }

    // Drop paths: the earliest drop (not IPv4/ARP) and a late one (bad header checksum,
    // after the full parse). Drops leave the frame untouched, so no copy is needed.
    let mut ipv6 = forward_bursts(100).swap_remove(0);
    let mut bad_csum = ipv6.clone();
    for i in 0..BURST {
        ipv6.bytes[i * STRIDE + 12..i * STRIDE + 14].copy_from_slice(&0x86ddu16.to_be_bytes());
        bad_csum.bytes[i * STRIDE + 24] ^= 0x5a;
    }
    for (name, burst) in [
        ("unsupported_ethertype", &mut ipv6),
        ("bad_checksum", &mut bad_csum),
    ] {
        assert_all(
            burst,
            &t100,
            &mut ct,
            |v| matches!(v, Verdict::Drop(_)),
            name,
        );
        g.bench_function(BenchmarkId::new("drop", name), |b| {
            b.iter(|| burst.process(&t100, &mut ct))
        });
    }
    g.finish();
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
