//! The forward-path benches' setup, shared by `benches/forward.rs` (criterion) and
//! `examples/callgrind.rs` (exact instruction counts): a worker over two fake pod ports
//! A and B, optionally B isolated by 1,001 compiled rules; and the scaling rigs
//! ([`scaling_rig`]): one or two workers, each a [`Lane`] with its own fake ports, the
//! pods' traffic either between pods of the same worker or across the handoff rings.

use std::net::Ipv4Addr;
use std::sync::Arc;

use xsknet_dataplane::counters::{PolicyHits, PortCounters};
use xsknet_dataplane::policy::{
    Classifier, CompiledRule, IpBlock, PolicySnapshot, PortMatch, PortPolicy, RuleRef,
};
use xsknet_dataplane::tables::publish::Publisher;
use xsknet_dataplane::tables::{Fib, PortInfo, PortKind, Tables};
use xsknet_dataplane::worker::{IdlePolicy, Worker, WorkerShared};
use xsknet_dataplane::xsk::fake::{fake_port, FakeKernel};
use xsknet_dataplane::xsk::handoff::{self, HandoffRx, HandoffTx};
use xsknet_dataplane::xsk::PortConfig;

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
pub const MAC_HA: [u8; 6] = [0x02, 0, 0, 0, 1, 0xa];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];
pub const MAC_HB: [u8; 6] = [0x02, 0, 0, 0, 1, 0xb];

pub fn udp_frame(src: Ipv4Addr, dst: Ipv4Addr, frame_len: usize) -> Vec<u8> {
    udp_frame_macs(MAC_HA, MAC_A, src, dst, frame_len)
}

/// A UDP frame from the pod with `src_mac` to its host-side interface `dst_mac`.
pub fn udp_frame_macs(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    frame_len: usize,
) -> Vec<u8> {
    let mut f = vec![0u8; frame_len];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
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

pub struct Rig {
    pub worker: Worker,
    pub ka: FakeKernel,
    pub kb: FakeKernel,
    pub _publisher: Publisher,
}

/// A worker owning pod ports A (0) and B (1), plus `extra_pods` more FIB entries.
pub fn rig(extra_pods: u32) -> Rig {
    rig_with(extra_pods, PolicySnapshot::default())
}

/// B isolated for ingress: 1,000 rules for other /32s on other ports, and the one
/// that admits A on UDP 5678 (as compiled rules; the real classifier).
pub fn isolating_b() -> PolicySnapshot {
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

pub fn rig_with(extra_pods: u32, policy: PolicySnapshot) -> Rig {
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

/// How the scaling rig's pods talk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pairs {
    /// Each worker owns a sender pod and its receiver (no handoff).
    Local,
    /// Two workers, one pod each; each pod sends to the other's (every packet crosses
    /// a handoff ring). Needs exactly two workers.
    Cross,
}

/// One worker of a scaling rig and its fake kernels: frames are injected on
/// `kernels[inject]` and the worker's deliveries drained from `kernels[drain]`.
pub struct Lane {
    pub worker: Worker,
    pub kernels: Vec<FakeKernel>,
    pub inject: usize,
    pub drain: usize,
    /// The frame this lane's sender pod sends (same frame length for every lane).
    pub frame: Vec<u8>,
}

/// A scaling rig: its lanes (one per worker, each to run on its own thread) and the
/// table publisher they subscribe to (keep it alive while they run).
pub struct ScaleRig {
    pub lanes: Vec<Lane>,
    pub publisher: Publisher,
}

/// The pod with index `i`: its IP, its MAC and its host-side MAC.
fn pod(i: u8) -> (Ipv4Addr, [u8; 6], [u8; 6]) {
    (
        Ipv4Addr::new(10, 244, 0, 2 + i),
        [0x02, 0, 0, 0, 0, 0xa + i],
        [0x02, 0, 0, 0, 1, 0xa + i],
    )
}

/// `workers` workers (1 or 2 for `Local`, 2 for `Cross`) with `frame_len`-byte UDP
/// frames. Local: worker w owns pods 2w (sender) and 2w+1 (receiver). Cross: worker w
/// owns pod w and sends to pod 1-w.
pub fn scaling_rig(workers: usize, pairs: Pairs, frame_len: usize) -> ScaleRig {
    assert!(
        (1..=2).contains(&workers) && (pairs == Pairs::Local || workers == 2),
        "scaling rig: 1 or 2 workers, cross pairs need 2"
    );
    let pods = match pairs {
        Pairs::Local => 2 * workers,
        Pairs::Cross => 2,
    };
    let owner = |p: usize| match pairs {
        Pairs::Local => p / 2,
        Pairs::Cross => p,
    };
    let counters: Arc<[PortCounters]> = (0..pods).map(|_| PortCounters::default()).collect();
    let mut ports = vec![None; pods];
    let mut fib = Vec::new();
    for (p, slot) in ports.iter_mut().enumerate() {
        let (ip, mac, host_mac) = pod(p as u8);
        *slot = Some(PortInfo {
            kind: PortKind::Pod,
            worker: owner(p) as u16,
            mac: host_mac,
            peer_mac: mac,
            ip,
        });
        fib.push((u32::from(ip), p as u16));
    }
    let tables = Tables {
        generation: 1,
        ports,
        fib: Fib::build(fib),
        host_port: None,
        policy_hits: (0..workers).map(|_| PolicyHits::new(0)).collect(),
        policy: Arc::new(PolicySnapshot::default()),
        ..Tables::default()
    };
    let mut publisher = Publisher::new(tables);
    let shared: Vec<Arc<WorkerShared>> = (0..workers)
        .map(|w| Arc::new(WorkerShared::new(w as u16, w).unwrap()))
        .collect();
    // tx[from][to] sends from worker `from` to worker `to`; rx[to] are the rings into `to`.
    let mut tx: Vec<Vec<Option<HandoffTx>>> = (0..workers).map(|_| Vec::new()).collect();
    let mut rx: Vec<Vec<HandoffRx>> = (0..workers).map(|_| Vec::new()).collect();
    for (from, out) in tx.iter_mut().enumerate() {
        for (to, into) in rx.iter_mut().enumerate() {
            if from == to {
                out.push(None);
            } else {
                let (t, r) = handoff::channel();
                out.push(Some(t));
                into.push(r);
            }
        }
    }
    let cfg = PortConfig::default();
    let mut lanes = Vec::new();
    for (w, (tx, rx)) in tx.into_iter().zip(rx).enumerate() {
        let (_cmd_tx, cmd_rx) = crossbeam_channel::bounded(1);
        let mut worker = Worker::new(
            Arc::clone(&shared[w]),
            shared.clone(),
            publisher.subscribe(),
            cmd_rx,
            tx,
            rx,
            Arc::clone(&counters),
            IdlePolicy::default(),
        );
        let mut kernels = Vec::new();
        for p in (0..pods).filter(|&p| owner(p) == w) {
            let (port, kernel) = fake_port(p as u16, &cfg, Arc::clone(&counters)).unwrap();
            worker.add_port(port);
            kernels.push(kernel);
        }
        let (src, dst) = match pairs {
            Pairs::Local => (2 * w, 2 * w + 1),
            Pairs::Cross => (w, 1 - w),
        };
        let (src_ip, src_mac, src_host) = pod(src as u8);
        let (dst_ip, _, _) = pod(dst as u8);
        lanes.push(Lane {
            worker,
            kernels,
            inject: 0,
            drain: if pairs == Pairs::Local { 1 } else { 0 },
            frame: udp_frame_macs(src_host, src_mac, src_ip, dst_ip, frame_len),
        });
    }
    ScaleRig { lanes, publisher }
}
