//! The forward-path benches' setup, shared by `benches/forward.rs` (criterion) and
//! `examples/callgrind.rs` (exact instruction counts): a worker over two fake pod ports
//! A and B, optionally B isolated by 1,001 compiled rules.

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
use xsknet_dataplane::xsk::PortConfig;

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
pub const MAC_HA: [u8; 6] = [0x02, 0, 0, 0, 1, 0xa];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];
pub const MAC_HB: [u8; 6] = [0x02, 0, 0, 0, 1, 0xb];

pub fn udp_frame(src: Ipv4Addr, dst: Ipv4Addr, frame_len: usize) -> Vec<u8> {
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
