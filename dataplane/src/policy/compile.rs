//! From the store to a [`PolicySnapshot`]: selectors, namespaces, named ports and
//! policyTypes resolved into [`CompiledRule`]s per endpoint and direction, each set
//! built into a [`Classifier`]. Runs on the control thread after every change (policy,
//! namespace, label, endpoint); the result is published with the other tables.
//!
//! The upstream semantics, all of them here and nowhere else:
//! * a pod is isolated for ingress (egress) iff some policy of its namespace whose
//!   `podSelector` matches it (`{}` = every pod of the namespace) has Ingress (Egress) in
//!   its effective policyTypes ([`NetworkPolicy::affects`]: inferred when absent);
//!   a direction nobody isolates is `None` = allow all;
//! * what is allowed is the union of the rules of every selecting policy; inside a rule
//!   the peers are OR-ed and absent or empty `from`/`to` means every address, absent or
//!   empty `ports` means every protocol and port (ICMP included; a rule with ports never
//!   matches ICMP);
//! * inside one peer `podSelector` AND `namespaceSelector`; `podSelector` alone = pods of
//!   the policy's namespace, `namespaceSelector` alone = every pod of the matching
//!   namespaces; an empty selector matches all, an absent one is "not specified";
//!   namespaces are matched on their labels, which always carry
//!   `kubernetes.io/metadata.name`;
//! * an `ipBlock` is addresses minus `except`, pods' addresses included;
//! * a port is a number, a range (`endPort`) or a name resolved against the
//!   *destination* pod's container ports (name and protocol): for ingress the selected
//!   pod, for egress each peer pod — so one egress rule can allow port 8080 towards one
//!   pod and 9090 towards another; a named port towards an `ipBlock` peer resolves on
//!   the pods whose addresses the block covers (as a rule with no peers resolves it on
//!   every pod), and towards a non-pod address allows nothing; a rule whose ports
//!   all fail to resolve allows nothing (it never degrades to "all ports").
//!
//! A rule's peers and ports are resolved once per compile, not once per selected pod,
//! and pods whose selecting policies (and, for named ingress ports, container ports) are
//! the same share one [`PortPolicy`] (`Arc`), so a namespace-wide policy with thousands
//! of rules is built into one classifier, not one per pod.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::k8s::{
    LabelSelector, NamedPort, NetworkPolicy, Peer, PolicyPort, PolicyType, PortRef, Protocol,
};
use super::store::PolicyStore;
use super::{Classifier, CompiledRule, IpBlock, PolicySnapshot, PortMatch, PortPolicy, RuleRef};
use crate::tables::PortId;

/// A pod as the compiler sees it: identity, labels, address and named container ports.
/// Live endpoints and YAML pods both become this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub ip: Ipv4Addr,
    #[serde(default)]
    pub ports: Vec<NamedPort>,
}

impl PodView {
    /// The port number of a named container port for `protocol`, if the pod has one.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name == name && p.protocol == protocol)
            .map(|p| p.port)
    }
}

const ANY_ADDRESS: IpBlock = IpBlock {
    net: 0,
    prefix: 0,
    except: Vec::new(),
};

/// One rule of one policy, peers and ports resolved independently of the selected pod.
struct PreparedRule {
    /// `from`/`to` absent or empty.
    all_peers: bool,
    /// Every address the peers cover: ipBlocks, then the peer pods' /32s.
    peers: Vec<IpBlock>,
    /// Indices into the compile's pod list, sorted, unique.
    pod_peers: Vec<usize>,
    /// Pods whose address an `ipBlock` peer covers (sorted, unique): named ports of an
    /// egress rule resolve on them too (issue 10, point 5).
    block_pods: Vec<usize>,
    /// `ports` absent or empty.
    all_ports: bool,
    numeric: Vec<PortMatch>,
    named: Vec<(Protocol, String)>,
}

struct PreparedPolicy<'a> {
    policy: &'a NetworkPolicy,
    ingress: Vec<PreparedRule>,
    egress: Vec<PreparedRule>,
    ingress_named: bool,
}

/// Compile everything in `store` for `pods` (every pod that can be a peer: live
/// endpoints, or the YAML pods of a matrix). `port_of` says which pods are ports of
/// this dataplane; only those get a [`PortPolicy`]. Never fails: whatever is in the
/// store was validated on the way in.
pub fn compile(
    store: &PolicyStore,
    pods: &[PodView],
    port_of: impl Fn(&PodView) -> Option<PortId>,
) -> PolicySnapshot {
    let policies: Vec<&NetworkPolicy> = store.policies().collect();
    let names = policies
        .iter()
        .map(|p| format!("{}/{}", p.metadata.namespace, p.metadata.name))
        .collect();

    let mut ns_labels: HashMap<&str, BTreeMap<String, String>> = HashMap::new();
    for p in pods {
        ns_labels
            .entry(p.namespace.as_str())
            .or_insert_with(|| store.namespace_labels(&p.namespace));
    }
    let mut resolver = PeerResolver {
        pods,
        ns_labels: &ns_labels,
        selected: HashMap::new(),
    };

    let prepared: Vec<PreparedPolicy<'_>> = policies
        .iter()
        .map(|&p| {
            let ingress: Vec<PreparedRule> = p
                .ingress_rules()
                .iter()
                .map(|r| resolver.prepare(p, r.from.as_deref(), r.ports.as_deref()))
                .collect();
            let egress = p
                .egress_rules()
                .iter()
                .map(|r| resolver.prepare(p, r.to.as_deref(), r.ports.as_deref()))
                .collect();
            PreparedPolicy {
                policy: p,
                ingress_named: ingress.iter().any(|r| !r.named.is_empty()),
                ingress,
                egress,
            }
        })
        .collect();

    type Key = (Option<(Vec<u32>, Vec<NamedPort>)>, Option<Vec<u32>>);
    let mut cache: HashMap<Key, Arc<PortPolicy>> = HashMap::new();
    let mut ports: Vec<Option<Arc<PortPolicy>>> = Vec::new();

    for pod in pods {
        let Some(id) = port_of(pod) else { continue };
        let mut ingress_set = Vec::new();
        let mut egress_set = Vec::new();
        let mut named_matters = false;
        for (i, pp) in prepared.iter().enumerate() {
            let p = pp.policy;
            if p.metadata.namespace != pod.namespace || !p.spec.pod_selector.matches(&pod.labels) {
                continue;
            }
            if p.affects(PolicyType::Ingress) {
                ingress_set.push(i as u32);
                named_matters |= pp.ingress_named;
            }
            if p.affects(PolicyType::Egress) {
                egress_set.push(i as u32);
            }
        }
        if ingress_set.is_empty() && egress_set.is_empty() {
            continue;
        }
        let ingress_key = (!ingress_set.is_empty()).then(|| {
            let named = if named_matters {
                let mut n = pod.ports.clone();
                n.sort();
                n
            } else {
                Vec::new()
            };
            (ingress_set, named)
        });
        let egress_key = (!egress_set.is_empty()).then_some(egress_set);
        let key: Key = (ingress_key, egress_key);
        let policy = match cache.get(&key) {
            Some(p) => p.clone(),
            None => {
                let ingress = key
                    .0
                    .as_ref()
                    .map(|(set, _)| Classifier::build(&ingress_rules(&prepared, set, pod)));
                let egress = key
                    .1
                    .as_ref()
                    .map(|set| Classifier::build(&egress_rules(&prepared, set, pods)));
                let p = Arc::new(PortPolicy { ingress, egress });
                cache.insert(key, p.clone());
                p
            }
        };
        let slot = usize::from(id);
        if ports.len() <= slot {
            ports.resize(slot + 1, None);
        }
        ports[slot] = Some(policy);
    }

    PolicySnapshot {
        ports,
        policies: names,
    }
}

/// The rules allowing traffic *into* `pod` (the destination of every named port).
fn ingress_rules(prepared: &[PreparedPolicy<'_>], set: &[u32], pod: &PodView) -> Vec<CompiledRule> {
    let mut out = Vec::new();
    for &i in set {
        let Some(pp) = prepared.get(i as usize) else {
            continue;
        };
        for (j, r) in pp.ingress.iter().enumerate() {
            let origin = RuleRef {
                policy: i,
                rule: j as u16,
            };
            let ports = if r.all_ports {
                Vec::new()
            } else {
                let mut ports = r.numeric.clone();
                ports.extend(resolve_named(&r.named, pod));
                if ports.is_empty() {
                    continue; // nothing resolved: the rule allows nothing here
                }
                ports
            };
            let peers = r.peers.clone();
            if !peers.is_empty() {
                out.push(CompiledRule {
                    peers,
                    ports,
                    origin,
                });
            }
        }
    }
    out
}

/// The rules allowing traffic *out of* a pod; named ports resolve per destination pod.
fn egress_rules(
    prepared: &[PreparedPolicy<'_>],
    set: &[u32],
    pods: &[PodView],
) -> Vec<CompiledRule> {
    let mut out = Vec::new();
    for &i in set {
        let Some(pp) = prepared.get(i as usize) else {
            continue;
        };
        for (j, r) in pp.egress.iter().enumerate() {
            let origin = RuleRef {
                policy: i,
                rule: j as u16,
            };
            if r.all_ports || !r.numeric.is_empty() {
                let peers = r.peers.clone();
                if !peers.is_empty() {
                    out.push(CompiledRule {
                        peers,
                        ports: if r.all_ports {
                            Vec::new()
                        } else {
                            r.numeric.clone()
                        },
                        origin,
                    });
                }
            }
            if r.all_ports || r.named.is_empty() {
                continue;
            }
            // Group destination pods by what the names resolve to on each of them.
            let mut groups: BTreeMap<Vec<(u8, u16)>, Vec<u32>> = BTreeMap::new();
            let destinations: Box<dyn Iterator<Item = &PodView>> = if r.all_peers {
                Box::new(pods.iter())
            } else {
                let mut dest: Vec<usize> =
                    r.pod_peers.iter().chain(&r.block_pods).copied().collect();
                dest.sort_unstable();
                dest.dedup();
                Box::new(dest.into_iter().filter_map(|k| pods.get(k)))
            };
            for q in destinations {
                let mut resolved: Vec<(u8, u16)> = resolve_named(&r.named, q)
                    .map(|m| (m.proto, m.lo))
                    .collect();
                if resolved.is_empty() {
                    continue;
                }
                resolved.sort_unstable();
                resolved.dedup();
                groups.entry(resolved).or_default().push(u32::from(q.ip));
            }
            for (resolved, mut ips) in groups {
                ips.sort_unstable();
                ips.dedup();
                out.push(CompiledRule {
                    peers: ips.into_iter().map(host).collect(),
                    ports: resolved
                        .into_iter()
                        .map(|(proto, port)| PortMatch {
                            proto,
                            lo: port,
                            hi: port,
                        })
                        .collect(),
                    origin,
                });
            }
        }
    }
    out
}

fn resolve_named<'a>(
    named: &'a [(Protocol, String)],
    dest: &'a PodView,
) -> impl Iterator<Item = PortMatch> + 'a {
    named.iter().filter_map(move |(proto, name)| {
        dest.named_port(name, *proto).map(|port| PortMatch {
            proto: proto.number(),
            lo: port,
            hi: port,
        })
    })
}

/// `ip` is inside `b` and in none of its `except`s.
fn block_covers(b: &IpBlock, ip: u32) -> bool {
    let inside = |net: u32, prefix: u8| {
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        };
        ip & mask == net & mask
    };
    inside(b.net, b.prefix) && !b.except.iter().any(|&(n, p)| inside(n, p))
}

fn host(ip: u32) -> IpBlock {
    IpBlock {
        net: ip,
        prefix: 32,
        except: Vec::new(),
    }
}

type SelectorKey<'a> = (
    &'a str,
    Option<&'a LabelSelector>,
    Option<&'a LabelSelector>,
);

struct PeerResolver<'a> {
    pods: &'a [PodView],
    ns_labels: &'a HashMap<&'a str, BTreeMap<String, String>>,
    /// Pods selected by (policy namespace, podSelector, namespaceSelector): thousands
    /// of rules repeat a handful of selectors.
    selected: HashMap<SelectorKey<'a>, Vec<usize>>,
}

impl<'a> PeerResolver<'a> {
    fn select(&mut self, key: SelectorKey<'a>) -> &[usize] {
        let (pods, ns_labels) = (self.pods, self.ns_labels);
        self.selected.entry(key).or_insert_with(|| {
            let (policy_ns, pod_selector, namespace_selector) = key;
            (0..pods.len())
                .filter(|&k| {
                    let pod = &pods[k];
                    let ns_ok = match namespace_selector {
                        None => pod.namespace == policy_ns,
                        Some(sel) => ns_labels
                            .get(pod.namespace.as_str())
                            .is_some_and(|l| sel.matches(l)),
                    };
                    ns_ok && pod_selector.is_none_or(|sel| sel.matches(&pod.labels))
                })
                .collect()
        })
    }

    fn prepare(
        &mut self,
        policy: &'a NetworkPolicy,
        peers: Option<&'a [Peer]>,
        ports: Option<&'a [PolicyPort]>,
    ) -> PreparedRule {
        let peers = peers.unwrap_or(&[]);
        let ports = ports.unwrap_or(&[]);
        let mut rule = PreparedRule {
            all_peers: peers.is_empty(),
            peers: Vec::new(),
            pod_peers: Vec::new(),
            block_pods: Vec::new(),
            all_ports: ports.is_empty(),
            numeric: Vec::new(),
            named: Vec::new(),
        };
        for peer in peers {
            if let Some(b) = &peer.ip_block {
                // IPv6 blocks are valid Kubernetes but cover no IPv4 address.
                if let Some((net, prefix)) = b.cidr.v4() {
                    let block = IpBlock {
                        net,
                        prefix,
                        except: b.except.iter().filter_map(|e| e.v4()).collect(),
                    };
                    if !rule.peers.contains(&block) {
                        rule.peers.push(block);
                    }
                }
                continue;
            }
            if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
                continue; // refused by validation; matches nothing if it ever got here
            }
            let key = (
                policy.metadata.namespace.as_str(),
                peer.pod_selector.as_ref(),
                peer.namespace_selector.as_ref(),
            );
            let selected = self.select(key);
            rule.pod_peers.extend_from_slice(selected);
        }
        rule.pod_peers.sort_unstable();
        rule.pod_peers.dedup();
        if !rule.peers.is_empty()
            && ports
                .iter()
                .any(|p| matches!(p.port, Some(PortRef::Name(_))))
        {
            rule.block_pods = (0..self.pods.len())
                .filter(|&k| {
                    let ip = u32::from(self.pods[k].ip);
                    rule.peers.iter().any(|b| block_covers(b, ip))
                })
                .collect();
        }
        if rule.all_peers {
            rule.peers = vec![ANY_ADDRESS];
        } else {
            let mut ips: Vec<u32> = rule
                .pod_peers
                .iter()
                .filter_map(|&k| self.pods.get(k))
                .map(|p| u32::from(p.ip))
                .collect();
            ips.sort_unstable();
            ips.dedup();
            rule.peers.extend(ips.into_iter().map(host));
        }
        for p in ports {
            let proto = p.protocol();
            match &p.port {
                None => rule.numeric.push(PortMatch {
                    proto: proto.number(),
                    lo: 0,
                    hi: u16::MAX,
                }),
                Some(PortRef::Number(n)) => {
                    let hi = p
                        .end_port
                        .and_then(|e| u16::try_from(e).ok())
                        .filter(|e| e >= n)
                        .unwrap_or(*n);
                    rule.numeric.push(PortMatch {
                        proto: proto.number(),
                        lo: *n,
                        hi,
                    });
                }
                Some(PortRef::Name(name)) => rule.named.push((proto, name.clone())),
            }
        }
        rule
    }
}

#[cfg(test)]
mod tests {
    use super::super::{PROTO_ICMP, PROTO_SCTP, PROTO_TCP, PROTO_UDP};
    use super::*;

    const NS: [&str; 3] = ["x", "y", "z"];
    const POD: [&str; 3] = ["a", "b", "c"];

    /// Namespaces x, y, z (label `ns`), pods a, b, c in each (label `pod`) at
    /// 10.0.<ns>.<pod+1>; a serves `http` on TCP 80, b `http` on TCP 81, c `dns` on
    /// UDP 53 and `http` on UDP 80.
    fn cluster() -> String {
        let mut y = String::new();
        for (i, ns) in NS.iter().enumerate() {
            y += &format!("---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}}}}}\n");
            for (j, pod) in POD.iter().enumerate() {
                let ports = match *pod {
                    "a" => "[{name: http, containerPort: 80}]",
                    "b" => "[{name: http, containerPort: 81}]",
                    _ => "[{name: dns, containerPort: 53, protocol: UDP}, {name: http, containerPort: 80, protocol: UDP}]",
                };
                y += &format!(
                    "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {ns}, labels: {{pod: {pod}}}}}\nspec: {{containers: [{{name: c, ports: {ports}}}]}}\nstatus: {{podIP: 10.0.{i}.{}}}\n",
                    j + 1
                );
            }
        }
        y
    }

    struct World {
        store: PolicyStore,
        pods: Vec<PodView>,
        snap: PolicySnapshot,
    }

    impl World {
        fn new(policies: &str) -> World {
            let mut store = PolicyStore::new();
            store.apply_yaml(&cluster()).unwrap();
            store.apply_yaml(policies).unwrap();
            let mut w = World {
                store,
                pods: Vec::new(),
                snap: PolicySnapshot::default(),
            };
            w.recompile();
            w
        }

        fn recompile(&mut self) {
            self.pods = self.store.pod_views();
            let ids: Vec<(String, String)> = self
                .pods
                .iter()
                .map(|p| (p.namespace.clone(), p.name.clone()))
                .collect();
            self.snap = compile(&self.store, &self.pods, |p| {
                ids.iter()
                    .position(|(n, m)| *n == p.namespace && *m == p.name)
                    .map(|k| k as PortId)
            });
        }

        fn id(&self, who: &str) -> (PortId, u32) {
            let (ns, name) = who.split_once('/').unwrap();
            let k = self
                .pods
                .iter()
                .position(|p| p.namespace == ns && p.name == name)
                .unwrap();
            (k as PortId, u32::from(self.pods[k].ip))
        }

        fn egress(&self, from: PortId, dst: u32, proto: u8, port: u16) -> bool {
            match self.snap.port(from).and_then(|p| p.egress.as_ref()) {
                None => true,
                Some(c) => c.lookup(dst, proto, port).is_some(),
            }
        }

        fn ingress(&self, to: PortId, src: u32, proto: u8, port: u16) -> bool {
            match self.snap.port(to).and_then(|p| p.ingress.as_ref()) {
                None => true,
                Some(c) => c.lookup(src, proto, port).is_some(),
            }
        }

        /// May `from` open a connection to `to` (both `ns/pod`)?
        fn can(&self, from: &str, to: &str, proto: u8, port: u16) -> bool {
            let (f, fip) = self.id(from);
            let (t, tip) = self.id(to);
            self.egress(f, tip, proto, port) && self.ingress(t, fip, proto, port)
        }

        fn tcp(&self, from: &str, to: &str, port: u16) -> bool {
            self.can(from, to, PROTO_TCP, port)
        }

        /// The 9×9 TCP grid as a string, rows = from, `.` allowed, `X` denied.
        fn grid(&self, port: u16) -> String {
            let all: Vec<String> = NS
                .iter()
                .flat_map(|n| POD.iter().map(move |p| format!("{n}/{p}")))
                .collect();
            let mut s = String::new();
            for f in &all {
                for t in &all {
                    s.push(if self.tcp(f, t, port) { '.' } else { 'X' });
                }
                s.push('\n');
            }
            s
        }
    }

    fn np(ns: &str, name: &str, spec: &str) -> String {
        format!("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}")
    }

    const EXTERNAL: u32 = 0xc0a8_0101; // 192.168.1.1

    #[test]
    fn no_policy_allows_everything() {
        let w = World::new("");
        assert!(w.snap.ports.iter().all(Option::is_none));
        assert!(w.grid(80).chars().all(|c| c != 'X'));
        assert!(w.snap.policies.is_empty());
    }

    #[test]
    fn default_deny_ingress() {
        let w = World::new(&np(
            "x",
            "deny",
            "  podSelector: {}\n  policyTypes: [Ingress]\n",
        ));
        assert_eq!(
            w.grid(80),
            "XXX......\nXXX......\nXXX......\nXXX......\nXXX......\nXXX......\nXXX......\nXXX......\nXXX......\n"
        );
        let (a, _) = w.id("x/a");
        assert!(!w.ingress(a, EXTERNAL, PROTO_ICMP, 0));
        assert!(
            w.snap.port(a).unwrap().egress.is_none(),
            "not isolated for egress"
        );
    }

    #[test]
    fn default_deny_egress_and_egress_only_policy() {
        let w = World::new(&np(
            "x",
            "deny",
            "  podSelector: {}\n  policyTypes: [Egress]\n",
        ));
        let (a, _) = w.id("x/a");
        assert!(
            w.snap.port(a).unwrap().ingress.is_none(),
            "egress-only policy"
        );
        assert!(!w.tcp("x/a", "y/a", 80));
        assert!(!w.tcp("x/a", "x/b", 80));
        assert!(w.tcp("y/a", "x/a", 80));
        assert!(!w.egress(a, EXTERNAL, PROTO_UDP, 53));
    }

    #[test]
    fn allow_all_unions_with_deny() {
        let w = World::new(&format!(
            "{}{}",
            np(
                "x",
                "deny",
                "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n"
            ),
            np(
                "x",
                "allow",
                "  podSelector: {}\n  ingress: [{}]\n  egress: [{}]\n"
            )
        ));
        assert!(w.grid(80).chars().all(|c| c != 'X'));
        let (a, _) = w.id("x/a");
        assert!(w.ingress(a, EXTERNAL, PROTO_ICMP, 0));
        assert!(w.egress(a, EXTERNAL, PROTO_SCTP, 9));
        // Lowest RuleRef wins: policies sorted by ns/name, "allow" < "deny".
        assert_eq!(w.snap.policies, vec!["x/allow", "x/deny"]);
        let c = w.snap.port(a).unwrap().ingress.as_ref().unwrap();
        assert_eq!(
            c.lookup(EXTERNAL, PROTO_TCP, 1),
            Some(RuleRef { policy: 0, rule: 0 })
        );
    }

    #[test]
    fn empty_pod_selector_peer_versus_absent_peers() {
        // `from: [{podSelector: {}}]`: every pod of the policy's namespace, nothing else.
        let w = World::new(&np(
            "x",
            "p",
            "  podSelector: {}\n  ingress:\n  - from: [{podSelector: {}}]\n",
        ));
        assert!(w.tcp("x/b", "x/a", 80));
        assert!(!w.tcp("y/b", "x/a", 80));
        let (a, _) = w.id("x/a");
        assert!(!w.ingress(a, EXTERNAL, PROTO_TCP, 80));
        // `from` absent: every source, pods of any namespace and outside addresses.
        let w = World::new(&np(
            "x",
            "p",
            "  podSelector: {}\n  ingress:\n  - ports: [{port: 80}]\n",
        ));
        assert!(w.tcp("y/b", "x/a", 80));
        assert!(w.ingress(a, EXTERNAL, PROTO_TCP, 80));
        assert!(!w.tcp("y/b", "x/a", 81));
        // `from: []` is the same as absent.
        let w = World::new(&np(
            "x",
            "p",
            "  podSelector: {}\n  ingress:\n  - from: []\n",
        ));
        assert!(w.ingress(a, EXTERNAL, PROTO_TCP, 80));
        // `ingress: []` / absent: no rule, deny all.
        let w = World::new(&np("x", "p", "  podSelector: {}\n  ingress: []\n"));
        assert!(!w.tcp("x/b", "x/a", 80));
        // Empty namespaceSelector: every pod of every namespace, but not outside.
        let w = World::new(&np(
            "x",
            "p",
            "  podSelector: {}\n  ingress:\n  - from: [{namespaceSelector: {}}]\n",
        ));
        assert!(w.tcp("z/c", "x/a", 80));
        assert!(!w.ingress(a, EXTERNAL, PROTO_TCP, 80));
    }

    #[test]
    fn and_versus_or_peers() {
        let and = np(
            "x",
            "p",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}\n      namespaceSelector: {matchLabels: {ns: y}}\n",
        );
        let w = World::new(&and);
        assert!(w.tcp("y/b", "x/a", 80));
        assert!(!w.tcp("x/b", "x/a", 80), "pod b but not in ns y");
        assert!(!w.tcp("y/c", "x/a", 80), "ns y but not pod b");
        assert!(w.tcp("y/c", "x/b", 80), "x/b is not selected");
        let or = np(
            "x",
            "p",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}\n    - namespaceSelector: {matchLabels: {ns: y}}\n",
        );
        let w = World::new(&or);
        assert!(w.tcp("y/b", "x/a", 80));
        assert!(w.tcp("x/b", "x/a", 80), "pod b of the policy's namespace");
        assert!(
            !w.tcp("z/b", "x/a", 80),
            "podSelector alone is the policy's namespace"
        );
        assert!(w.tcp("y/c", "x/a", 80));
        assert!(!w.tcp("x/c", "x/a", 80));
    }

    #[test]
    fn namespace_labels_and_expressions() {
        let w = World::new(&np(
            "x",
            "p",
            "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}\n      podSelector:\n        matchExpressions: [{key: pod, operator: NotIn, values: [a]}]\n",
        ));
        assert!(!w.tcp("z/a", "x/a", 80));
        assert!(w.tcp("z/b", "x/a", 80));
        assert!(!w.tcp("y/b", "x/a", 80));
        let w = World::new(&np(
            "x",
            "p",
            "  podSelector: {matchExpressions: [{key: pod, operator: In, values: [b, c]}]}\n  ingress:\n  - from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: Exists}]}}]\n",
        ));
        assert!(w.tcp("y/a", "x/b", 80));
        assert!(w.tcp("y/a", "x/a", 80), "x/a is not selected");
        let (b, _) = w.id("x/b");
        assert!(!w.ingress(b, EXTERNAL, PROTO_TCP, 80));
    }

    #[test]
    fn ip_block_with_except_matches_pod_addresses() {
        let w = World::new(&np(
            "x",
            "p",
            "  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24, 10.0.2.3/32]}}]\n",
        ));
        assert!(w.tcp("x/b", "x/a", 80));
        assert!(!w.tcp("y/b", "x/a", 80), "10.0.1.0/24 excepted");
        assert!(w.tcp("z/b", "x/a", 80));
        assert!(!w.tcp("z/c", "x/a", 80), "10.0.2.3 excepted");
        let (a, _) = w.id("x/a");
        assert!(w.ingress(a, 0x0a00_ff01, PROTO_UDP, 9));
        assert!(!w.ingress(a, 0x0a01_0001, PROTO_UDP, 9));
        // IPv6 blocks are valid and cover no IPv4 address.
        let w = World::new(&np(
            "x",
            "p",
            "  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: \"::/0\"}}]\n",
        ));
        assert!(!w.tcp("y/b", "x/a", 80));
    }

    #[test]
    fn ports_ranges_and_protocols() {
        let w = World::new(&np(
            "x",
            "p",
            "  podSelector: {}\n  ingress:\n  - ports: [{port: 80, endPort: 81}, {protocol: UDP, port: 53}, {protocol: SCTP}]\n",
        ));
        assert!(w.tcp("y/a", "x/a", 80));
        assert!(w.tcp("y/a", "x/a", 81));
        assert!(!w.tcp("y/a", "x/a", 82));
        assert!(!w.tcp("y/a", "x/a", 79));
        assert!(w.can("y/a", "x/a", PROTO_UDP, 53));
        assert!(!w.can("y/a", "x/a", PROTO_UDP, 80));
        assert!(!w.tcp("y/a", "x/a", 53));
        assert!(w.can("y/a", "x/a", PROTO_SCTP, 1));
        assert!(w.can("y/a", "x/a", PROTO_SCTP, 65535));
        assert!(
            !w.can("y/a", "x/a", PROTO_ICMP, 0),
            "a rule with ports never matches ICMP"
        );
    }

    #[test]
    fn named_ports_resolve_on_the_destination() {
        // Ingress: against the selected pod. x/a has http=80, x/b http=81, x/c http=UDP 80.
        let w = World::new(&np(
            "x",
            "p",
            "  podSelector: {}\n  ingress:\n  - ports: [{port: http}]\n",
        ));
        assert!(w.tcp("y/a", "x/a", 80));
        assert!(!w.tcp("y/a", "x/a", 81));
        assert!(w.tcp("y/a", "x/b", 81));
        assert!(!w.tcp("y/a", "x/b", 80));
        assert!(!w.tcp("y/a", "x/c", 80), "x/c's http is UDP");
        assert!(
            !w.can("y/a", "x/c", PROTO_UDP, 80),
            "the rule asked for TCP http"
        );
        // Pods with different named ports do not share a classifier, others do.
        let (a, _) = w.id("x/a");
        let (b, _) = w.id("x/b");
        assert!(!Arc::ptr_eq(
            w.snap.ports[a as usize].as_ref().unwrap(),
            w.snap.ports[b as usize].as_ref().unwrap()
        ));

        // Egress: against each peer pod, so one rule means 80 to y/a and 81 to y/b.
        let w = World::new(&np(
            "x",
            "p",
            "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{namespaceSelector: {matchLabels: {ns: y}}}, {ipBlock: {cidr: 192.168.0.0/16}}]\n    ports: [{port: http}, {protocol: UDP, port: dns}]\n",
        ));
        assert!(w.tcp("x/a", "y/a", 80));
        assert!(!w.tcp("x/a", "y/a", 81));
        assert!(w.tcp("x/a", "y/b", 81));
        assert!(!w.tcp("x/a", "y/b", 80));
        assert!(w.can("x/a", "y/c", PROTO_UDP, 53));
        assert!(!w.can("x/a", "y/a", PROTO_UDP, 53));
        assert!(!w.tcp("x/a", "z/a", 80));
        let (xa, _) = w.id("x/a");
        assert!(
            !w.egress(xa, EXTERNAL, PROTO_TCP, 80),
            "named port to an ipBlock: nothing"
        );
        let c = w.snap.port(xa).unwrap().egress.as_ref().unwrap();
        assert_eq!(
            c.lookup(0x0a00_0101, PROTO_TCP, 80),
            Some(RuleRef { policy: 0, rule: 0 })
        );

        // A named port towards an ipBlock resolves on the pods the block covers, minus
        // its excepts (issue 10, point 5); an outside address still gets nothing.
        let w = World::new(&np(
            "x",
            "p",
            "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.1.0/24]}}]\n    ports: [{port: http}]\n",
        ));
        assert!(w.tcp("x/a", "z/a", 80));
        assert!(w.tcp("x/a", "z/b", 81));
        assert!(!w.tcp("x/a", "z/b", 80));
        assert!(!w.tcp("x/a", "y/a", 80), "10.0.1.0/24 excepted");
        let (xa, _) = w.id("x/a");
        assert!(!w.egress(xa, EXTERNAL, PROTO_TCP, 80));

        // All destinations: names resolve on pods, outside addresses get numbers only.
        let w = World::new(&np(
            "x",
            "p",
            "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - ports: [{port: http}, {port: 443}]\n",
        ));
        assert!(w.tcp("x/a", "z/b", 81));
        assert!(!w.tcp("x/a", "z/b", 80));
        assert!(w.tcp("x/a", "z/b", 443));
        let (xa, _) = w.id("x/a");
        assert!(w.egress(xa, EXTERNAL, PROTO_TCP, 443));
        assert!(!w.egress(xa, EXTERNAL, PROTO_TCP, 80));

        // A rule whose only port resolves nowhere allows nothing (not "all ports").
        let w = World::new(&np(
            "x",
            "p",
            "  podSelector: {}\n  ingress:\n  - ports: [{port: nosuch}]\n",
        ));
        assert!(!w.tcp("y/a", "x/a", 80));
        assert!(!w.can("y/a", "x/a", PROTO_ICMP, 0));
    }

    #[test]
    fn policy_types_inference_and_explicit_types() {
        // No policyTypes + egress rules: both directions isolated.
        let w = World::new(&np("x", "p", "  podSelector: {matchLabels: {pod: a}}\n  egress:\n  - ports: [{port: 53, protocol: UDP}]\n"));
        assert!(
            !w.tcp("y/a", "x/a", 80),
            "ingress isolated with no ingress rule"
        );
        assert!(!w.tcp("x/a", "y/a", 80));
        assert!(w.can("x/a", "y/c", PROTO_UDP, 53));
        // policyTypes [Ingress] with egress rules: egress rules are ignored.
        let w = World::new(&np("x", "p", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress]\n  egress:\n  - ports: [{port: 53, protocol: UDP}]\n"));
        let (a, _) = w.id("x/a");
        assert!(w.snap.port(a).unwrap().egress.is_none());
        assert!(w.tcp("x/a", "y/a", 80));
        // `egress: []` without policyTypes: not an egress policy.
        let w = World::new(&np("x", "p", "  podSelector: {}\n  egress: []\n"));
        assert!(w.snap.port(a).unwrap().egress.is_none());
    }

    #[test]
    fn multiple_policies_select_one_pod() {
        let w = World::new(&format!(
            "{}{}{}",
            np("x", "b-from-y", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]\n    ports: [{port: 80}]\n"),
            np("x", "a-from-z", "  podSelector: {}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: z}}}]\n    ports: [{port: 81}]\n  - from: [{podSelector: {matchLabels: {pod: c}}}]\n"),
            np("y", "unrelated", "  podSelector: {}\n  ingress: [{}]\n"),
        ));
        assert!(w.tcp("y/a", "x/a", 80));
        assert!(!w.tcp("y/a", "x/a", 81));
        assert!(w.tcp("z/a", "x/a", 81));
        assert!(!w.tcp("z/a", "x/a", 80));
        assert!(w.tcp("x/c", "x/a", 9));
        assert!(!w.tcp("y/a", "x/b", 80), "x/b only selected by a-from-z");
        assert!(w.tcp("z/a", "x/b", 81));
        assert_eq!(
            w.snap.policies,
            vec!["x/a-from-z", "x/b-from-y", "y/unrelated"]
        );
        let (a, _) = w.id("x/a");
        let (_, xc) = w.id("x/c");
        let c = w.snap.port(a).unwrap().ingress.as_ref().unwrap();
        assert_eq!(
            c.lookup(xc, PROTO_TCP, 9),
            Some(RuleRef { policy: 0, rule: 1 })
        );
        let (_, ya) = w.id("y/a");
        assert_eq!(
            c.lookup(ya, PROTO_TCP, 80),
            Some(RuleRef { policy: 1, rule: 0 })
        );
        // Policies of another namespace never select: y/unrelated does not open x.
        assert!(!w.tcp("y/b", "x/c", 80));
    }

    #[test]
    fn relabel_and_unknown_ports() {
        let mut w = World::new(&np(
            "x",
            "p",
            "  podSelector: {matchLabels: {role: db}}\n  ingress: []\n",
        ));
        assert!(w.tcp("y/a", "x/a", 80));
        let labels: BTreeMap<String, String> = [("role".to_string(), "db".to_string())].into();
        w.store.set_pod_labels("x", "a", labels).unwrap();
        w.recompile();
        assert!(!w.tcp("y/a", "x/a", 80));
        assert!(w.tcp("y/a", "x/b", 80));
        // Pods the dataplane does not own are peers, never ports.
        let snap = compile(&w.store, &w.pods, |_| None);
        assert!(snap.ports.is_empty());
        assert_eq!(snap.policies.len(), 1);
    }

    /// The samples in config/policies parse and mean what their comments say.
    #[test]
    fn sample_policies() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/policies");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let mut s = PolicyStore::new();
            s.apply_path(&path).unwrap_or_else(|e| panic!("{e}"));
        }
        let world = |f: &str| {
            let mut store = PolicyStore::new();
            store.apply_yaml(&read("cluster.yaml")).unwrap();
            store.apply_yaml(&read(f)).unwrap();
            let pods = store.pod_views();
            let snap = compile(&store, &pods, |p| {
                pods.iter().position(|q| q == p).map(|k| k as PortId)
            });
            World { store, pods, snap }
        };
        let w = world("cluster.yaml");
        assert_eq!(w.pods.len(), 9);
        let w = world("default-deny-ingress.yaml");
        assert!(!w.tcp("y/a", "x/a", 80) && w.tcp("x/a", "y/a", 80));
        let w = world("default-deny-egress.yaml");
        assert!(w.tcp("y/a", "x/a", 80) && !w.tcp("x/a", "y/a", 80));
        let w = world("namespace-selector.yaml");
        assert!(w.tcp("y/c", "x/a", 80) && w.tcp("z/c", "x/a", 81) && !w.tcp("x/b", "x/a", 80));
        let w = world("pod-and-namespace-selector.yaml");
        assert!(w.tcp("y/b", "x/a", 80) && !w.tcp("y/a", "x/a", 80) && !w.tcp("x/b", "x/a", 80));
        let w = world("named-port.yaml");
        assert!(w.tcp("z/a", "x/b", 80) && !w.tcp("z/a", "x/b", 81));
        assert!(!w.can("z/a", "x/b", PROTO_UDP, 80));
        let w = world("endport-range.yaml");
        assert!(w.tcp("y/a", "x/c", 81) && w.can("y/a", "x/c", PROTO_UDP, 80));
        assert!(!w.tcp("y/a", "x/c", 82) && !w.tcp("y/a", "z/c", 80));
        let w = world("ipblock-except.yaml");
        assert!(w.tcp("x/b", "x/a", 80) && w.tcp("z/a", "x/a", 80));
        assert!(!w.tcp("y/a", "x/a", 80) && !w.tcp("y/c", "x/a", 80));
        let w = world("allow-all.yaml");
        assert!(w.grid(80).chars().all(|c| c != 'X'));
    }

    #[test]
    fn pods_with_the_same_selection_share_one_policy() {
        let w = World::new(&np(
            "x",
            "p",
            "  podSelector: {}\n  ingress:\n  - ports: [{port: 80}]\n",
        ));
        let (a, _) = w.id("x/a");
        let (b, _) = w.id("x/b");
        assert!(Arc::ptr_eq(
            w.snap.ports[a as usize].as_ref().unwrap(),
            w.snap.ports[b as usize].as_ref().unwrap()
        ));
    }
}
