//! Criterion benches of NetworkPolicy: classifier lookups and compilation.
//!
//! `classifier_lookup/10000_rules` builds one [`Classifier`] from 10,000 rules that mix
//! what real policies hold: pod /32s, CIDRs from /16 to /28 (a fifth with `except`
//! holes), single ports, port ranges (`endPort`) and protocol-only entries over TCP, UDP
//! and SCTP, pod rules with no ports, and a few broad rules with ports (`10.0.0.0/8`, over every
//! narrow rule, and `0.0.0.0/0 except 10.0.0.0/8`, over none). Each iteration looks up a block of `LOOKUPS` precomputed flows (half aimed
//! inside rule blocks and at their ports, half random), so criterion's "thrpt" is
//! lookups per second on one core. The same bench at 100 and 1,000 rules shows how the
//! cost grows (logarithmically). `classifier_lookup_v6/rules/10000` runs the same
//! rules and flows on a `Classifier<u128>`, every address embedded in `fd00::/96`
//! (prefix + 96): the IPv6 instance's cost for the same decisions (its broad tier stays
//! empty, the embedded blocks all being longer than /48).
//!
//! `compile/10000_rules` times [`compile`] of a store with 100 policies × 100 ingress
//! rules (ipBlocks with excepts, pod and namespace selectors, numeric, range and named
//! ports) over 300 pods in 3 namespaces, every pod a port of this dataplane: selector
//! resolution, named ports, classifier builds, the whole snapshot. The time per
//! iteration is the compile time. Pods of one `app` share their container ports, as
//! the pods of one Deployment do; `compile/10000_rules_ports_per_pod` varies the named
//! port independently of the app, so seven times fewer pods can share a classifier.
//!
//! Results, with command, machine and date: bench/RESULTS.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use xsknet_dataplane::policy::compile::{compile, PodView};
use xsknet_dataplane::policy::k8s::{NamedPort, Protocol};
use xsknet_dataplane::policy::store::PolicyStore;
use xsknet_dataplane::policy::{
    Classifier, CompiledRule, IpBlock, PortMatch, RuleRef, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
};
use xsknet_dataplane::tables::PortId;

/// Flows looked up per iteration.
const LOOKUPS: usize = 4096;

/// xorshift64: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn rules(n: usize, rng: &mut Rng) -> Vec<CompiledRule> {
    let protos = [PROTO_TCP, PROTO_TCP, PROTO_UDP, PROTO_SCTP];
    (0..n)
        .map(|k| {
            let broad = k % 2000 == 1999;
            let peers = if broad {
                // "The cluster /8" or "the internet": overlapping every narrow rule
                // or none of them.
                vec![if k % 4000 == 1999 {
                    IpBlock {
                        net: 0x0a00_0000,
                        prefix: 8,
                        except: Vec::new(),
                    }
                } else {
                    IpBlock {
                        net: 0,
                        prefix: 0,
                        except: vec![(0x0a00_0000, 8)],
                    }
                }]
            } else {
                (0..1 + rng.next(2))
                    .map(|_| {
                        let prefix = [32u8, 32, 32, 28, 24, 20, 16][rng.next(7) as usize];
                        let mask = u32::MAX << (32 - prefix);
                        let net = (0x0a00_0000 | rng.next(1 << 24) as u32) & mask;
                        let except = if prefix <= 24 && rng.next(5) == 0 {
                            vec![(net | (rng.next(1 << (32 - prefix)) as u32 & !0xff), 24)]
                        } else {
                            Vec::new()
                        };
                        IpBlock {
                            net,
                            prefix,
                            except,
                        }
                    })
                    .collect()
            };
            // Allow-all-ports rules name single pods, as `from: [podSelector]` rules
            // without ports do; CIDR and broad rules always name ports.
            let pod_only = peers.iter().all(|b| b.prefix == 32);
            let ports = if pod_only && !broad && rng.next(10) == 0 {
                Vec::new()
            } else {
                (0..1 + rng.next(3))
                    .map(|_| {
                        let proto = protos[rng.next(4) as usize];
                        match rng.next(5) {
                            0 => PortMatch {
                                proto,
                                lo: 0,
                                hi: u16::MAX,
                            },
                            1 | 2 => {
                                let lo = 1024 + rng.next(30000) as u16;
                                PortMatch {
                                    proto,
                                    lo,
                                    hi: lo + rng.next(1000) as u16,
                                }
                            }
                            _ => {
                                let p = 1 + rng.next(10000) as u16;
                                PortMatch {
                                    proto,
                                    lo: p,
                                    hi: p,
                                }
                            }
                        }
                    })
                    .collect()
            };
            CompiledRule {
                peers,
                ports,
                origin: RuleRef {
                    policy: (k / 100) as u32,
                    rule: (k % 100) as u16,
                },
            }
        })
        .collect()
}

fn flows(rules: &[CompiledRule], rng: &mut Rng) -> Vec<(u32, u8, u16)> {
    (0..LOOKUPS)
        .map(|i| {
            if i % 2 == 0 {
                let r = &rules[rng.next(rules.len() as u64) as usize];
                let b = &r.peers[0];
                let host_bits = if b.prefix == 0 {
                    u32::MAX
                } else {
                    !(u32::MAX << (32 - b.prefix))
                };
                let addr = b.net | (rng.next(1 << 32) as u32 & host_bits);
                match r.ports.first() {
                    Some(m) => (addr, m.proto, m.lo + (m.hi - m.lo) / 2),
                    None => (addr, PROTO_TCP, 80),
                }
            } else {
                let proto = [PROTO_TCP, PROTO_UDP, PROTO_SCTP][rng.next(3) as usize];
                (rng.next(1 << 32) as u32, proto, rng.next(65536) as u16)
            }
        })
        .collect()
}

fn bench_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("classifier_lookup");
    g.throughput(Throughput::Elements(LOOKUPS as u64));
    for n in [100usize, 1_000, 10_000] {
        let mut rng = Rng(0x5eed_0000 + n as u64);
        let rules = rules(n, &mut rng);
        let classifier = Classifier::build(&rules);
        let flows = flows(&rules, &mut rng);
        let hits = flows
            .iter()
            .filter(|&&(a, p, port)| classifier.lookup(a, p, port).is_some())
            .count();
        eprintln!(
            "classifier {n} rules: {:?}, {hits}/{LOOKUPS} flows allowed",
            classifier.stats()
        );
        g.bench_with_input(BenchmarkId::new("rules", n), &flows, |b, flows| {
            b.iter(|| {
                let mut allowed = 0u32;
                for &(addr, proto, port) in flows {
                    allowed += u32::from(classifier.lookup(black_box(addr), proto, port).is_some());
                }
                black_box(allowed)
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("classifier_lookup_v6");
    g.throughput(Throughput::Elements(LOOKUPS as u64));
    let mut rng = Rng(0x5eed_0000 + 10_000);
    let rules4 = rules(10_000, &mut rng);
    let flows4 = flows(&rules4, &mut rng);
    let rules6: Vec<CompiledRule<u128>> = rules4.iter().map(embed_rule).collect();
    let flows6: Vec<(u128, u8, u16)> = flows4
        .iter()
        .map(|&(a, p, port)| (embed(a), p, port))
        .collect();
    let classifier = Classifier::build(&rules6);
    eprintln!("classifier_v6 10000 rules: {:?}", classifier.stats());
    g.bench_with_input(BenchmarkId::new("rules", 10_000), &flows6, |b, flows| {
        b.iter(|| {
            let mut allowed = 0u32;
            for &(addr, proto, port) in flows {
                allowed += u32::from(classifier.lookup(black_box(addr), proto, port).is_some());
            }
            black_box(allowed)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("classifier_build");
    let mut rng = Rng(0x5eed_0000 + 10_000);
    let rules = rules(10_000, &mut rng);
    g.bench_function("10000_rules", |b| {
        b.iter(|| Classifier::build(black_box(&rules)))
    });
    g.finish();
}

/// An IPv4 address embedded in `fd00::/96`.
fn embed(a: u32) -> u128 {
    (0xfd00u128 << 112) | u128::from(a)
}

/// An IPv4 rule as the same rule over `fd00::/96`.
fn embed_rule(r: &CompiledRule) -> CompiledRule<u128> {
    CompiledRule {
        peers: r
            .peers
            .iter()
            .map(|b| IpBlock {
                net: embed(b.net),
                prefix: b.prefix + 96,
                except: b.except.iter().map(|&(n, p)| (embed(n), p + 96)).collect(),
            })
            .collect(),
        ports: r.ports.clone(),
        origin: r.origin,
    }
}

/// 3 namespaces × 100 pods, 100 policies × 100 ingress rules, as YAML.
fn compile_world(ports_per_app: bool) -> (PolicyStore, Vec<PodView>) {
    let mut rng = Rng(0xc0ffee);
    let mut pods = Vec::new();
    let mut yaml = String::new();
    let mut store = PolicyStore::new();
    for (i, ns) in ["x", "y", "z"].iter().enumerate() {
        let _ = write!(
            yaml,
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{team: t{i}}}}}\n"
        );
        for j in 0..100u32 {
            let mut labels = BTreeMap::new();
            labels.insert("app".to_string(), format!("app{}", j % 10));
            labels.insert(
                "tier".to_string(),
                ["web", "api", "db"][j as usize % 3].to_string(),
            );
            pods.push(PodView {
                namespace: ns.to_string(),
                name: format!("pod{j}"),
                labels,
                ip: Ipv4Addr::from(0x0af4_0000 + (i as u32) * 256 + j + 1),
                ports: vec![NamedPort {
                    name: "http".into(),
                    port: 8000 + if ports_per_app { j % 10 } else { j % 7 } as u16,
                    protocol: Protocol::Tcp,
                }],
            });
        }
    }
    for p in 0..100 {
        // Applied in streams of 25 policies: the 100 together exceed the policy YAML
        // size limit (MAX_YAML_BYTES, 1 MiB); the store ends up the same.
        if p % 25 == 0 {
            store
                .apply_yaml(&yaml)
                .expect("generated policies are valid");
            yaml.clear();
        }
        let ns = ["x", "y", "z"][p % 3];
        let _ = write!(
            yaml,
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{p}, namespace: {ns}}}\nspec:\n  podSelector: {{matchLabels: {{app: app{}}}}}\n  ingress:\n",
            p % 10
        );
        for _ in 0..100 {
            let peer = match rng.next(4) {
                0 => format!(
                    "podSelector: {{matchLabels: {{tier: {}}}}}",
                    ["web", "api", "db"][rng.next(3) as usize]
                ),
                1 => format!(
                    "namespaceSelector: {{matchLabels: {{team: t{}}}}}\n      podSelector: {{matchLabels: {{app: app{}}}}}",
                    rng.next(3),
                    rng.next(10)
                ),
                _ => {
                    let net = 0x0b00_0000 | (rng.next(1 << 16) as u32) << 8;
                    let a = Ipv4Addr::from(net);
                    let e = Ipv4Addr::from(net | 0x80);
                    format!("ipBlock: {{cidr: {a}/24, except: [{e}/25]}}")
                }
            };
            let port = match rng.next(3) {
                0 => format!("{{port: {}}}", 1 + rng.next(10000)),
                1 => {
                    let lo = 1024 + rng.next(30000);
                    format!(
                        "{{protocol: UDP, port: {lo}, endPort: {}}}",
                        lo + rng.next(100)
                    )
                }
                _ => "{port: http}".to_string(),
            };
            let _ = write!(yaml, "  - from:\n    - {peer}\n    ports: [{port}]\n");
        }
    }
    store
        .apply_yaml(&yaml)
        .expect("generated policies are valid");
    (store, pods)
}

fn bench_compile(c: &mut Criterion) {
    let mut g = c.benchmark_group("compile");
    g.sample_size(20);
    for (label, ports_per_app) in [("10000_rules", true), ("10000_rules_ports_per_pod", false)] {
        let (store, pods) = compile_world(ports_per_app);
        let rules: usize = store.list().iter().map(|p| p.ingress_rules).sum();
        let port_of = |p: &PodView| -> Option<PortId> {
            let ns = match p.namespace.as_str() {
                "x" => 0,
                "y" => 1,
                _ => 2,
            };
            let j: u16 = p.name.trim_start_matches("pod").parse().ok()?;
            Some(ns * 100 + j + 1)
        };
        let snap = compile(&store, &pods, port_of);
        let distinct: std::collections::BTreeSet<*const _> = snap
            .ports
            .iter()
            .flatten()
            .map(std::sync::Arc::as_ptr)
            .collect();
        eprintln!(
            "compile {label}: {rules} rules, {} pods, {} port policies ({} distinct)",
            pods.len(),
            snap.ports.iter().flatten().count(),
            distinct.len()
        );
        g.bench_function(label, |b| {
            b.iter(|| compile(black_box(&store), black_box(&pods), port_of))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_lookup, bench_compile);
criterion_main!(benches);
