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
use std::sync::Arc;

use xsknet_dataplane::counters::{PolicyHits, PortCounters, BURST};
use xsknet_dataplane::packet::ethernet::{self, Frame};
use xsknet_dataplane::packet::ipv4::Packet as Ipv4Packet;
use xsknet_dataplane::pipeline::conntrack::DEFAULT_CAPACITY;
use xsknet_dataplane::pipeline::{process, Conntrack, PacketCtx, Verdict};
use xsknet_dataplane::policy::{
    Classifier, CompiledRule, IpBlock, PolicySnapshot, PortMatch, PortPolicy, RuleRef,
};
use xsknet_dataplane::tables::publish::Publisher;
use xsknet_dataplane::tables::{Fib, PortId, PortInfo, PortKind, Tables, GATEWAY_IP};
use xsknet_dataplane::worker::{IdlePolicy, Worker, WorkerShared};
use xsknet_dataplane::xsk::fake::{fake_port, FakeKernel};
use xsknet_dataplane::xsk::PortConfig;

// ---- pipeline (bench/benches/pipeline.rs) ----

const STRIDE: usize = 128;
const FRAME_LEN: usize = 64;
const HOST: PortId = 0;
const MAX_BURSTS: usize = 160;

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

    #[inline]
    fn process(&mut self, tables: &Tables, ct: &mut Conntrack) {
        for (i, chunk) in self.bytes.chunks_exact_mut(STRIDE).enumerate() {
            let mut ctx = PacketCtx::new(0, self.lens[i], self.ingress[i]);
            black_box(process(chunk, &mut ctx, tables, ct, 1));
        }
    }
}

#[inline(never)]
fn measured_pipeline(burst: &mut Burst, tables: &Tables, ct: &mut Conntrack) {
    burst.process(tables, ct)
}

fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0af4_0000 + i as u32 + 1)
}

fn pod_port(i: usize) -> PortId {
    i as PortId + 1
}

fn mac(id: PortId, side: u8) -> [u8; 6] {
    [0x02, side, 0, 0, (id >> 8) as u8, id as u8]
}

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

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
const MAC_HA: [u8; 6] = [0x02, 0, 0, 0, 1, 0xa];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];
const MAC_HB: [u8; 6] = [0x02, 0, 0, 0, 1, 0xb];

fn udp_frame(src: Ipv4Addr, dst: Ipv4Addr, frame_len: usize) -> Vec<u8> {
    let mut f = vec![0u8; frame_len];
    f[0..6].copy_from_slice(&MAC_HA);
    f[6..12].copy_from_slice(&MAC_A);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = (frame_len - 14) as u16;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&src.octets());
    f[30..34].copy_from_slice(&dst.octets());
    let mut s: u32 = 0;
    for c in f[14..34].chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    f[24..26].copy_from_slice(&(!(s as u16)).to_be_bytes());
    f[34..36].copy_from_slice(&1234u16.to_be_bytes());
    f[36..38].copy_from_slice(&5678u16.to_be_bytes());
    f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f
}

struct Rig {
    worker: Worker,
    ka: FakeKernel,
    kb: FakeKernel,
    _publisher: Publisher,
}

fn isolating_b() -> PolicySnapshot {
    let mut rules: Vec<CompiledRule> = (0..1000u32)
        .map(|i| CompiledRule {
            peers: vec![IpBlock {
                net: 0x0a00_0000 + (i << 8),
                prefix: 24,
                except: vec![],
            }],
            ports: vec![PortMatch {
                proto: 6,
                lo: 1000 + i as u16,
                hi: 1000 + i as u16,
            }],
            origin: RuleRef {
                policy: 0,
                rule: i as u16,
            },
        })
        .collect();
    rules.push(CompiledRule {
        peers: vec![IpBlock {
            net: u32::from(Ipv4Addr::new(10, 244, 0, 2)),
            prefix: 32,
            except: vec![],
        }],
        ports: vec![PortMatch {
            proto: 17,
            lo: 5678,
            hi: 5678,
        }],
        origin: RuleRef { policy: 1, rule: 0 },
    });
    let b = PortPolicy {
        ingress: Some(Classifier::build(&rules)),
        egress: None,
    };
    PolicySnapshot {
        ports: vec![None, Some(Arc::new(b)), None, None],
        policies: vec!["bench/others".into(), "bench/a-to-b".into()],
    }
}

fn rig_with(extra_pods: u32, policy: PolicySnapshot) -> Rig {
    let counters: Arc<[PortCounters]> = (0..4).map(|_| PortCounters::default()).collect();
    let cfg = PortConfig::default();
    let (pa, ka) = fake_port(0, &cfg, Arc::clone(&counters)).unwrap();
    let (pb, kb) = fake_port(1, &cfg, Arc::clone(&counters)).unwrap();
    let ip_a = Ipv4Addr::new(10, 244, 0, 2);
    let ip_b = Ipv4Addr::new(10, 244, 0, 3);
    let mut ports = vec![None; 4];
    ports[0] = Some(PortInfo {
        kind: PortKind::Pod,
        worker: 0,
        mac: MAC_HA,
        peer_mac: MAC_A,
        ip: ip_a,
    });
    ports[1] = Some(PortInfo {
        kind: PortKind::Pod,
        worker: 0,
        mac: MAC_HB,
        peer_mac: MAC_B,
        ip: ip_b,
    });
    let mut fib: Vec<(u32, u16)> = vec![(u32::from(ip_a), 0), (u32::from(ip_b), 1)];
    fib.extend((0..extra_pods).map(|i| (0x0a80_0000 + i, 2)));
    let tables = Tables {
        generation: 1,
        ports,
        fib: Fib::build(fib),
        host_port: None,
        policy_hits: Arc::from(vec![PolicyHits::new(policy.policies.len())]),
        policy: Arc::new(policy),
        ..Tables::default()
    };
    let mut publisher = Publisher::new(tables);
    let shared = Arc::new(WorkerShared::new(0, 0).unwrap());
    let (_cmd_tx, cmd_rx) = crossbeam_channel::bounded(1);
    let mut worker = Worker::new(
        Arc::clone(&shared),
        vec![shared],
        publisher.subscribe(),
        cmd_rx,
        vec![None],
        Vec::new(),
        counters,
        IdlePolicy::default(),
    );
    worker.add_port(pa);
    worker.add_port(pb);
    Rig {
        worker,
        ka,
        kb,
        _publisher: publisher,
    }
}

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
