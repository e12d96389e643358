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

use bench::pipeline_rig::*;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use xsknet_dataplane::packet::ethernet::{self, Frame};
use xsknet_dataplane::packet::ipv4::Packet as Ipv4Packet;
use xsknet_dataplane::pipeline::conntrack::DEFAULT_CAPACITY;
use xsknet_dataplane::pipeline::{process, Conntrack, PacketCtx, Verdict, BURST};
use xsknet_dataplane::tables::{Tables, GATEWAY_IP};

/// Iterations per `iter_batched_ref` batch: 8 bursts × 8 KiB stay in L2.
const BATCH: BatchSize = BatchSize::NumIterations(8);

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
