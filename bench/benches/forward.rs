//! The whole forward path on in-memory ports: the worker's real `poll_once` (RX ring →
//! pipeline → copy to the egress port's frame → TX ring → completion reap → fill
//! refill) over fake ports whose "kernel" side is driven by the bench. Only
//! `poll_once` is timed; the fake kernel's injection and draining are not.
//!
//! The scaling group (`forward_scaling`) runs one or two workers, each on its own
//! thread pinned to its own core, each with its own fake ports: "1_worker_local",
//! "2_workers_local" (each worker forwards between two pods of its own) and
//! "2_workers_cross" (pod A on worker 0 and pod B on worker 1 send to each other, so
//! every packet crosses a handoff ring). Every worker is offered the same 64 B frame,
//! one burst per round; an iteration is one round of every worker, and its time is the
//! slowest worker's time inside `poll_once` (rounds that found nothing to do, waiting
//! for the other worker, are not counted), so criterion's elements/s is the rig's
//! delivered pps with the workers running in parallel.
//!
//! `cargo bench -p bench --bench forward`
//! (scaling only: `cargo bench -p bench --bench forward -- forward_scaling`; then
//! `cargo run --release -p bench --bin charts -- --criterion target/criterion --out-csv bench/out`
//! writes `bench/out/scaling-criterion-<stamp>.csv`).

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
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

/// Delivered packets per worker's receiving port, published by each lane once per round
/// (the cross lanes pace themselves on their peer's count so no handoff ring overflows).
type Delivered = Arc<[AtomicU64]>;

/// Run `iters` rounds on one lane; returns the time spent in rounds that moved packets.
fn run_lane(
    lane: &mut Lane,
    me: usize,
    cross: bool,
    iters: u64,
    sent: &mut u64,
    delivered: &Delivered,
) -> Duration {
    let mut total = Duration::ZERO;
    let target = *sent + iters * BURST as u64;
    let peer = 1 - me.min(1);
    // Packets this lane sent that its peer has not drained yet; the handoff ring holds
    // SLOTS, so keep room for a whole burst.
    let window = (xsknet_dataplane::xsk::handoff::SLOTS - BURST) as u64;
    let mut idle_rounds = 0u64;
    loop {
        let mine = delivered[me].load(Ordering::Relaxed);
        let expect = if cross { target } else { *sent };
        if *sent == target && mine >= expect {
            return total;
        }
        if *sent < target && (!cross || *sent - delivered[peer].load(Ordering::Acquire) <= window) {
            let n = lane.kernels[lane.inject].inject_many(&lane.frame, BURST);
            assert_eq!(n, BURST, "fake kernel could not inject a full burst");
            *sent += BURST as u64;
        }
        let t = Instant::now();
        let moved = black_box(lane.worker.poll_once());
        let dt = t.elapsed();
        let got = lane.kernels[lane.drain].drain_tx(|_| {}) as u64;
        if moved > 0 {
            total += dt;
            idle_rounds = 0;
        } else {
            idle_rounds += 1;
            assert!(
                idle_rounds < 1 << 32,
                "lane {me}: no progress (a packet was lost)"
            );
            std::hint::spin_loop();
        }
        if got > 0 {
            delivered[me].fetch_add(got, Ordering::Release);
        }
        if !cross {
            assert_eq!(got, BURST as u64, "every packet forwarded");
        }
    }
}

/// The 1-minute load average now (the first field of /proc/loadavg).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Where criterion writes this run's results (its own rule: $CRITERION_HOME, else
/// $CARGO_TARGET_DIR/criterion, else the target dir this bench binary was built in).
fn criterion_dir() -> Option<std::path::PathBuf> {
    if let Some(h) = std::env::var_os("CRITERION_HOME") {
        return Some(h.into());
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(std::path::PathBuf::from(t).join("criterion"));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

fn bench_scaling(c: &mut Criterion) {
    let mut g = c.benchmark_group("forward_scaling");
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    for (name, workers, pairs) in [
        ("1_worker_local", 1usize, Pairs::Local),
        ("2_workers_local", 2, Pairs::Local),
        ("2_workers_cross", 2, Pairs::Cross),
    ] {
        g.throughput(Throughput::Elements((workers * BURST) as u64));
        let rig = scaling_rig(workers, pairs, 64);
        let delivered: Delivered = (0..workers).map(|_| AtomicU64::new(0)).collect();
        let start = Arc::new(Barrier::new(workers));
        let load_before = loadavg();
        let mut ran = false;
        std::thread::scope(|s| {
            let (done_tx, done_rx) = crossbeam_channel::unbounded::<Duration>();
            let mut jobs = Vec::new();
            for (me, mut lane) in rig.lanes.into_iter().enumerate() {
                let (job_tx, job_rx) = crossbeam_channel::bounded::<u64>(1);
                jobs.push(job_tx);
                let (done_tx, delivered, start) =
                    (done_tx.clone(), delivered.clone(), start.clone());
                let core = cores.get(me % cores.len().max(1)).copied();
                s.spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    let mut sent = 0u64;
                    while let Ok(iters) = job_rx.recv() {
                        start.wait();
                        let cross = pairs == Pairs::Cross;
                        let t = run_lane(&mut lane, me, cross, iters, &mut sent, &delivered);
                        if done_tx.send(t).is_err() {
                            break;
                        }
                    }
                });
            }
            g.bench_function(name, |b| {
                ran = true;
                b.iter_custom(|iters| {
                    for j in &jobs {
                        j.send(iters).expect("lane thread alive");
                    }
                    (0..workers)
                        .map(|_| done_rx.recv().expect("lane thread finished"))
                        .max()
                        .unwrap_or_default()
                })
            });
            drop(jobs);
        });
        drop(rig.publisher);
        // The load this case ran under, for the scaling CSV (`charts --criterion`).
        let load = format!("{load_before} -> {}", loadavg());
        if let Some(dir) = criterion_dir()
            .filter(|_| ran)
            .map(|d| d.join("forward_scaling").join(name))
        {
            if std::fs::create_dir_all(&dir).is_ok() {
                let _ = std::fs::write(dir.join("loadavg.txt"), &load);
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench_forward, bench_conntrack_hit, bench_scaling);
criterion_main!(benches);
