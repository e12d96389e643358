//! The whole forward path on in-memory ports: the worker's real `poll_once` (RX ring →
//! pipeline → copy to the egress port's frame → TX ring → completion reap → fill
//! refill) over fake ports whose "kernel" side is driven by the bench. Only
//! `poll_once` is timed; the fake kernel's injection and draining are not.
//!
//! `cargo bench -p bench --bench forward`

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bench::forward_rig::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use xsknet_dataplane::counters::BURST;
use xsknet_dataplane::policy::PolicySnapshot;

fn bench_forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("forward_path_fake_port");
    g.throughput(Throughput::Elements(BURST as u64));
    for (name, frame_len, extra) in [
        ("64B_2pods", 64usize, 0u32),
        ("64B_10000pods", 64, 10_000),
        ("1514B_2pods", 1514, 0),
    ] {
        let mut r = rig(extra);
        let frame = udp_frame(
            Ipv4Addr::new(10, 244, 0, 2),
            Ipv4Addr::new(10, 244, 0, 3),
            frame_len,
        );
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let n = r.ka.inject_many(&frame, BURST);
                    assert_eq!(n, BURST, "fake kernel could not inject a full burst");
                    let t = Instant::now();
                    black_box(r.worker.poll_once());
                    total += t.elapsed();
                    let sent = r.kb.drain_tx(|_| {});
                    assert_eq!(sent, BURST, "every packet forwarded");
                }
                total
            })
        });
    }
    g.finish();
}

/// The forward path when every packet is a connection-table hit across many flows:
/// 1,024 UDP flows A → B (source ports 1024..2048), 64 distinct flows per burst,
/// every flow admitted before timing starts. Pod-to-pod traffic is always tracked, so
/// the benches above are single-flow hits; these spread over the table, once with no
/// policy and once with B isolated for ingress by 1,001 rules (the classifier then
/// runs only for each flow's first packet, before timing).
fn bench_conntrack_hit(c: &mut Criterion) {
    let mut g = c.benchmark_group("forward_path_fake_port");
    g.throughput(Throughput::Elements(BURST as u64));
    for (name, policy) in [
        ("64B_conntrack_hit_1024flows", PolicySnapshot::default()),
        ("64B_conntrack_hit_1024flows_b_isolated", isolating_b()),
    ] {
        conntrack_hit(&mut g, name, rig_with(0, policy));
    }
    g.finish();
}

fn conntrack_hit(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut r: Rig,
) {
    let flows: Vec<Vec<u8>> = (0..1024u16)
        .map(|i| {
            let mut f = udp_frame(
                Ipv4Addr::new(10, 244, 0, 2),
                Ipv4Addr::new(10, 244, 0, 3),
                64,
            );
            f[34..36].copy_from_slice(&(1024 + i).to_be_bytes());
            f
        })
        .collect();
    let mut next = 0usize;
    let mut round = |r: &mut Rig| {
        for _ in 0..BURST {
            assert!(r.ka.inject(&flows[next]));
            next = (next + 1) % flows.len();
        }
    };
    for _ in 0..flows.len() / BURST {
        round(&mut r);
        r.worker.poll_once();
        assert_eq!(r.kb.drain_tx(|_| {}), BURST, "every packet forwarded");
    }
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round(&mut r);
                let t = Instant::now();
                black_box(r.worker.poll_once());
                total += t.elapsed();
                let sent = r.kb.drain_tx(|_| {});
                assert_eq!(sent, BURST, "every packet forwarded");
            }
            total
        })
    });
}

criterion_group!(benches, bench_forward, bench_conntrack_hit);
criterion_main!(benches);
