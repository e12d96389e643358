//! A deterministic driver for instruction counts: runs exactly `bursts` bursts of one
//! bench case through the same function the criterion bench times, so
//! `valgrind --tool=callgrind --toggle-collect='*measured_*'` counts the same
//! instructions on every run (criterion's iteration counts depend on the clock).
//!
//! ```text
//! cargo build --release -p bench --example callgrind
//! valgrind --tool=callgrind --toggle-collect='*measured_*' --callgrind-out-file=cg.out \
//!     target/release/examples/callgrind pipeline/forward_udp64/100 1000
//! ```
//!
//! Cases: the `forward_path_fake_port/*` and `pipeline/*` benches (bench/benches), same
//! setup, same frames. Ir / (bursts × 64) is instructions per packet.

use std::hint::black_box;
use std::net::Ipv4Addr;

use bench::forward_rig::*;
use bench::pipeline_rig::*;
use xsknet_dataplane::counters::BURST;
use xsknet_dataplane::packet::ethernet::{self, Frame};
use xsknet_dataplane::packet::ipv4::Packet as Ipv4Packet;
use xsknet_dataplane::pipeline::conntrack::DEFAULT_CAPACITY;
use xsknet_dataplane::pipeline::{process, Conntrack, PacketCtx, Verdict};
use xsknet_dataplane::policy::PolicySnapshot;
use xsknet_dataplane::tables::{Tables, GATEWAY_IP};
use xsknet_dataplane::worker::Worker;

// ---- pipeline (bench/benches/pipeline.rs) ----

#[inline(never)]
fn measured_pipeline(burst: &mut Burst, tables: &Tables, ct: &mut Conntrack) {
    burst.process(tables, ct)
}

fn assert_all(burst: &Burst, tables: &Tables, ct: &mut Conntrack, ok: impl Fn(Verdict) -> bool) {
    let mut b = burst.clone();
    for (i, chunk) in b.bytes.chunks_exact_mut(STRIDE).enumerate() {
        let mut ctx = PacketCtx::new(0, b.lens[i], b.ingress[i]);
        let v = process(chunk, &mut ctx, tables, ct, 1);
        assert!(ok(v), "frame {i} got {v:?}");
    }
}

/// Run `rounds` bursts of `bursts` (cycling), each on a fresh copy for the rewriting
/// cases, as the criterion bench does.
fn run_pipeline(bursts: &[Burst], t: &Tables, ct: &mut Conntrack, rounds: usize, copy: bool) {
    let mut work = bursts[0].clone();
    for r in 0..rounds {
        let b = &bursts[(r + 1) % bursts.len()];
        if copy || r == 0 {
            work.bytes.copy_from_slice(&b.bytes);
            work.lens = b.lens;
            work.ingress = b.ingress;
        }
        measured_pipeline(&mut work, t, ct);
    }
}

fn pipeline_case(case: &str, rounds: usize) {
    let mut ct = Conntrack::new(DEFAULT_CAPACITY);
    let t100 = tables(100);
    if case == "parse_only" {
        let parse = forward_bursts(100).swap_remove(0);
        for _ in 0..rounds {
            measured_parse(&parse);
        }
        return;
    }
    if case == "arp_reply" {
        let mut arp = Burst::new();
        for i in 0..BURST {
            let s = i % 100;
            arp.set(
                i,
                &arp_request(pod_port(s), pod_ip(s), GATEWAY_IP),
                pod_port(s),
            );
        }
        assert_all(&arp, &t100, &mut ct, |v| v == Verdict::Reply);
        return run_pipeline(&[arp], &t100, &mut ct, rounds, true);
    }
    if let Some(n) = case.strip_prefix("forward_udp64/") {
        let n: usize = n.parse().expect("pod count");
        let t = tables(n);
        let bursts = forward_bursts(n);
        for burst in &bursts {
            assert_all(
                burst,
                &t,
                &mut ct,
                |v| matches!(v, Verdict::Forward(p) if p != HOST),
            );
        }
        return run_pipeline(&bursts, &t, &mut ct, rounds, true);
    }
    let mut ipv6 = forward_bursts(100).swap_remove(0);
    let mut bad_csum = ipv6.clone();
    for i in 0..BURST {
        ipv6.bytes[i * STRIDE + 12..i * STRIDE + 14].copy_from_slice(&0x86ddu16.to_be_bytes());
        bad_csum.bytes[i * STRIDE + 24] ^= 0x5a;
    }
    let burst = match case {
        "drop/unsupported_ethertype" => ipv6,
        "drop/bad_checksum" => bad_csum,
        _ => panic!("unknown case pipeline/{case}"),
    };
    assert_all(&burst, &t100, &mut ct, |v| matches!(v, Verdict::Drop(_)));
    run_pipeline(&[burst], &t100, &mut ct, rounds, false)
}

#[inline(never)]
fn measured_parse(parse: &Burst) {
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
}

// ---- forward path (bench/benches/forward.rs) ----

#[inline(never)]
fn measured_poll(w: &mut Worker) -> usize {
    w.poll_once()
}

fn forward_case(case: &str, rounds: usize) {
    let plain = |extra, len| (rig_with(extra, PolicySnapshot::default()), len);
    let (mut r, frames): (Rig, Vec<Vec<u8>>) = match case {
        "64B_2pods" | "64B_10000pods" | "1514B_2pods" => {
            let (r, len) = match case {
                "64B_2pods" => plain(0, 64),
                "64B_10000pods" => plain(10_000, 64),
                _ => plain(0, 1514),
            };
            let f = udp_frame(
                Ipv4Addr::new(10, 244, 0, 2),
                Ipv4Addr::new(10, 244, 0, 3),
                len,
            );
            (r, vec![f])
        }
        "64B_conntrack_hit_1024flows" | "64B_conntrack_hit_1024flows_b_isolated" => {
            let policy = if case.ends_with("isolated") {
                isolating_b()
            } else {
                PolicySnapshot::default()
            };
            let flows = (0..1024u16)
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
            (rig_with(0, policy), flows)
        }
        _ => panic!("unknown case forward_path_fake_port/{case}"),
    };
    let mut next = 0usize;
    let mut round = |r: &mut Rig| {
        for _ in 0..BURST {
            assert!(r.ka.inject(&frames[next]));
            next = (next + 1) % frames.len();
        }
    };
    // Warm-up: every flow admitted (as the conntrack benches do before timing).
    for _ in 0..frames.len().div_ceil(BURST).max(1) {
        round(&mut r);
        r.worker.poll_once();
        assert_eq!(r.kb.drain_tx(|_| {}), BURST, "every packet forwarded");
    }
    for _ in 0..rounds {
        round(&mut r);
        black_box(measured_poll(&mut r.worker));
        assert_eq!(r.kb.drain_tx(|_| {}), BURST, "every packet forwarded");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(case), Some(rounds)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: callgrind <group/case> <bursts>");
        std::process::exit(2);
    };
    let rounds: usize = rounds.parse().expect("bursts: a number");
    if let Some(c) = case.strip_prefix("pipeline/") {
        pipeline_case(c, rounds);
    } else if let Some(c) = case.strip_prefix("forward_path_fake_port/") {
        forward_case(c, rounds);
    } else {
        panic!("unknown case {case}");
    }
}
