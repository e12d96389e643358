//! Reachability by synthetic packets: `policy matrix` (offline) and `trace` (live).
//!
//! Neither has an evaluator of its own. A question "can pod A open a connection to pod
//! B on port P?" is answered by building the connection's first packet (TCP SYN, UDP
//! datagram, SCTP INIT) as A's veth would deliver it, running it through
//! [`pipeline::process`] with real [`Tables`] and a real [`Conntrack`] — the code the
//! workers run — and, if it is forwarded to B's port, doing the same with B's reply
//! (SYN-ACK, datagram back, INIT ACK). The policy and rule names come from
//! [`policy::evaluate`](crate::pipeline::policy::evaluate), the function the stage
//! itself calls on a miss.
//!
//! For the offline matrix, [`fake_tables`] gives every pod of a file a pod port (port
//! 0 is the host port) and compiles the file's policies with the daemon's
//! [`compile`]. Control-side only: this allocates freely.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::pipeline::conntrack::{Conntrack, Flow};
use crate::pipeline::policy::{self, opening_details, Decision, Probe, Side};
use crate::pipeline::{self, DropReason, PacketCtx, Verdict};
use crate::policy::compile::{compile, PodView};
use crate::policy::k8s::Protocol;
use crate::policy::store::PolicyStore;
use crate::tables::{Fib, PortId, PortInfo, PortKind, Tables};
use crate::xsk::HEADROOM;

/// UMEM-sized scratch for one synthetic frame.
const FRAME_CAP: usize = 2048;

/// Source port of the synthetic connections.
pub const PROBE_SPORT: u16 = 40_000;

/// The port a probe asks about: a number, or a name resolved against the destination
/// pod's container ports (for the probe's protocol).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProbePort {
    Number(u16),
    Name(String),
}

impl ProbePort {
    /// Numbers as numbers, anything else as a name.
    pub fn parse(s: &str) -> ProbePort {
        match s.parse::<u16>() {
            Ok(n) => ProbePort::Number(n),
            Err(_) => ProbePort::Name(s.to_string()),
        }
    }

    /// The number towards `dst`, `None` when `dst` has no such named port.
    pub fn resolve(&self, dst: &PodView, proto: Protocol) -> Option<u16> {
        match self {
            ProbePort::Number(n) => Some(*n),
            ProbePort::Name(name) => dst.named_port(name, proto),
        }
    }
}

impl std::fmt::Display for ProbePort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbePort::Number(n) => write!(f, "{n}"),
            ProbePort::Name(s) => f.write_str(s),
        }
    }
}

/// What happened to a synthetic connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// Verdict of the first packet.
    pub first: Verdict,
    /// Verdict of the reply, if the first packet reached the destination.
    pub reply: Option<Verdict>,
    /// The classifiers' answer for the first packet.
    pub decision: Decision,
}

impl ProbeOutcome {
    /// First packet to `to_port` and reply back to `from_port`.
    pub fn connected(&self, from_port: PortId, to_port: PortId) -> bool {
        self.first == Verdict::Forward(to_port) && self.reply == Some(Verdict::Forward(from_port))
    }
}

fn run(tables: &Tables, ct: &mut Conntrack, ingress: PortId, p: &Probe) -> Verdict {
    let frame = policy::synthetic_frame(tables, ingress, p);
    let mut buf = vec![0u8; FRAME_CAP.max(HEADROOM + frame.len())];
    buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(&frame);
    let mut ctx = PacketCtx::new(HEADROOM, frame.len(), ingress);
    pipeline::process(&mut buf, &mut ctx, tables, ct, 1)
}

/// Open a synthetic connection from (`from_port`, `from_ip`) to (`to_port`, `to_ip`)
/// on `proto`/`dport` through `pipeline::process`, then send the reply.
#[allow(clippy::too_many_arguments, reason = "both ends, spelled out")]
pub fn probe(
    tables: &Tables,
    ct: &mut Conntrack,
    from_port: PortId,
    from_ip: Ipv4Addr,
    to_port: PortId,
    to_ip: Ipv4Addr,
    proto: u8,
    dport: u16,
) -> ProbeOutcome {
    let (open, answer) = opening_details(proto);
    let first = Probe {
        src: u32::from(from_ip),
        dst: u32::from(to_ip),
        proto,
        sport: PROBE_SPORT,
        dport,
        detail: open,
    };
    let flow = Flow::parse(
        first.src,
        first.dst,
        proto,
        &[
            (PROBE_SPORT >> 8) as u8,
            PROBE_SPORT as u8,
            (dport >> 8) as u8,
            dport as u8,
        ],
        true,
    );
    let decision = match (tables.port(from_port), tables.port(to_port)) {
        (Some(a), Some(b)) => policy::decide(tables, from_port, a, to_port, b, &flow),
        _ => Decision {
            egress: Side::Denied,
            ingress: Side::Denied,
        },
    };
    let v1 = run(tables, ct, from_port, &first);
    let reply = (v1 == Verdict::Forward(to_port)).then(|| {
        let back = Probe {
            src: first.dst,
            dst: first.src,
            sport: dport,
            dport: PROBE_SPORT,
            detail: answer,
            ..first
        };
        run(tables, ct, to_port, &back)
    });
    ProbeOutcome {
        first: v1,
        reply,
        decision,
    }
}

fn mac(id: PortId, side: u8) -> [u8; 6] {
    [0x02, side, 0, 0, (id >> 8) as u8, id as u8]
}

/// Tables with the host port at 0 and `pods[i]` at port `i + 1`, with the policies of
/// `store` compiled for them.
pub fn fake_tables(store: &PolicyStore, pods: &[PodView]) -> Tables {
    let mut ports = vec![Some(PortInfo {
        kind: PortKind::Host,
        worker: 0,
        mac: mac(0, 0xdd),
        peer_mac: mac(0, 0xee),
        ip: Ipv4Addr::UNSPECIFIED,
    })];
    let mut fib = Vec::new();
    for (i, p) in pods.iter().enumerate() {
        let id = (i + 1) as PortId;
        ports.push(Some(PortInfo {
            kind: PortKind::Pod,
            worker: 0,
            mac: mac(id, 0xdd),
            peer_mac: mac(id, 0xee),
            ip: p.ip,
        }));
        fib.push((u32::from(p.ip), id));
    }
    let snap = compile(store, pods, |v| {
        pods.iter()
            .position(|p| p.namespace == v.namespace && p.name == v.name)
            .map(|i| (i + 1) as PortId)
    });
    Tables {
        generation: 1,
        ports,
        fib: Fib::build(fib),
        host_port: Some(0),
        policy: std::sync::Arc::new(snap),
        ..Tables::default()
    }
}

/// `policy matrix --json` output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matrix {
    pub port: ProbePort,
    pub protocol: Protocol,
    /// `ns/name`, in (namespace, name) order.
    pub pods: Vec<String>,
    /// from → to → connection opened (first packet and reply forwarded).
    pub allowed: BTreeMap<String, BTreeMap<String, bool>>,
}

/// Which pod can open a connection to which, for the pods, namespaces and policies
/// in `store` (YAML pods with an address). A named port the destination does not
/// have is not reachable.
pub fn matrix(store: &PolicyStore, port: &ProbePort, proto: Protocol) -> Matrix {
    let pods = store.pod_views();
    let tables = fake_tables(store, &pods);
    let mut ct = Conntrack::new(4 * pods.len() * pods.len() + 64);
    let names: Vec<String> = pods
        .iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    let mut allowed = BTreeMap::new();
    for (i, from) in pods.iter().enumerate() {
        let mut row = BTreeMap::new();
        for (j, to) in pods.iter().enumerate() {
            let ok = match port.resolve(to, proto) {
                None => false,
                Some(dport) => {
                    let (a, b) = ((i + 1) as PortId, (j + 1) as PortId);
                    probe(
                        &tables,
                        &mut ct,
                        a,
                        from.ip,
                        b,
                        to.ip,
                        proto.number(),
                        dport,
                    )
                    .connected(a, b)
                }
            };
            row.insert(names[j].clone(), ok);
        }
        allowed.insert(names[i].clone(), row);
    }
    Matrix {
        port: port.clone(),
        protocol: proto,
        pods: names,
        allowed,
    }
}

impl Matrix {
    /// The grid: rows = from, columns = to, `.` allowed, `X` denied. Columns are
    /// numbered; a legend maps numbers to pods.
    pub fn grid(&self) -> String {
        use std::fmt::Write;
        let w = self.pods.iter().map(|p| p.len()).max().unwrap_or(0);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "port {} {}: rows = from, columns = to ('.' allowed, 'X' denied)",
            self.port, self.protocol
        );
        let _ = write!(out, "{:w$}", "");
        for p in &self.pods {
            let _ = write!(out, " {p}");
        }
        out.push('\n');
        for from in &self.pods {
            let _ = write!(out, "{from:w$}");
            for to in &self.pods {
                let ok = self
                    .allowed
                    .get(from)
                    .and_then(|r| r.get(to))
                    .copied()
                    .unwrap_or(false);
                let mark = if ok { "." } else { "X" };
                let _ = write!(out, " {mark:^width$}", width = to.len());
            }
            out.push('\n');
        }
        out
    }
}

/// One direction of a `trace` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceSide {
    /// The pod is isolated in this direction (some policy selects it for it).
    pub isolated: bool,
    /// `ns/name` of the policy whose rule allowed the flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Index of that rule in the policy's ingress or egress list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<u16>,
}

/// The `trace` result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    pub from: String,
    pub to: String,
    pub protocol: Protocol,
    pub port: u16,
    /// `allowed` or `denied`.
    pub verdict: String,
    /// Drop reason of the first packet (or the reply), when denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The source pod's egress policy.
    pub egress: TraceSide,
    /// The destination pod's ingress policy.
    pub ingress: TraceSide,
    /// Whether the reply of the connection came back through.
    pub reply_allowed: bool,
    /// Human-readable summary.
    pub summary: String,
}

fn side(tables: &Tables, s: Side) -> TraceSide {
    match s {
        Side::NotIsolated => TraceSide {
            isolated: false,
            policy: None,
            rule: None,
        },
        Side::Denied => TraceSide {
            isolated: true,
            policy: None,
            rule: None,
        },
        Side::Allowed(r) => TraceSide {
            isolated: true,
            policy: tables.policy.policies.get(r.policy as usize).cloned(),
            rule: Some(r.rule),
        },
    }
}

/// Trace a synthetic connection between two ports of `tables` (the live snapshot).
#[allow(clippy::too_many_arguments, reason = "both ends, spelled out")]
pub fn trace(
    tables: &Tables,
    from: (&str, PortId, Ipv4Addr),
    to: (&str, PortId, Ipv4Addr),
    proto: Protocol,
    port: u16,
) -> Trace {
    let mut ct = Conntrack::new(64);
    let o = probe(
        tables,
        &mut ct,
        from.1,
        from.2,
        to.1,
        to.2,
        proto.number(),
        port,
    );
    let ok = o.connected(from.1, to.1);
    let reason = match (o.first, o.reply) {
        (Verdict::Drop(r), _) | (_, Some(Verdict::Drop(r))) => Some(r.as_str().to_string()),
        _ if !ok => Some("not_forwarded".to_string()),
        _ => None,
    };
    let eg = side(tables, o.decision.egress);
    let ig = side(tables, o.decision.ingress);
    let say = |what: &str, s: &TraceSide| match (&s.policy, s.rule, s.isolated) {
        (Some(p), Some(r), _) => format!("{what} allowed by {p} rule {r}"),
        (_, _, true) => format!("{what}: no rule allows it"),
        _ => format!("{what}: not isolated"),
    };
    let summary = format!(
        "{} → {} {}/{}: {}; {}; {}",
        from.0,
        to.0,
        proto,
        port,
        if ok { "ALLOWED" } else { "DENIED" },
        say(&format!("egress of {}", from.0), &eg),
        say(&format!("ingress of {}", to.0), &ig),
    );
    Trace {
        from: from.0.to_string(),
        to: to.0.to_string(),
        protocol: proto,
        port,
        verdict: if ok { "allowed" } else { "denied" }.to_string(),
        reason,
        egress: eg,
        ingress: ig,
        reply_allowed: o.reply == Some(Verdict::Forward(from.1)),
        summary,
    }
}

/// Whether a drop reason is the policy's doing (tests, trace consumers).
pub fn is_policy_drop(v: Verdict) -> bool {
    matches!(
        v,
        Verdict::Drop(DropReason::PolicyDenied) | Verdict::Drop(DropReason::ConntrackFull)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: y}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec: {containers: [{name: c, ports: [{name: web, containerPort: 8080}]}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
spec: {containers: [{name: c, ports: [{name: web, containerPort: 80}]}]}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: y, labels: {pod: a}}
status: {podIP: 10.0.0.3}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-x-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: a}}}]
    ports: [{port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: y-no-egress, namespace: y}
spec:
  podSelector: {}
  policyTypes: [Egress]
"#;

    fn store() -> PolicyStore {
        let mut s = PolicyStore::new();
        s.apply_yaml(FILE).unwrap();
        s
    }

    #[test]
    fn matrix_runs_connections_through_the_pipeline() {
        let m = matrix(&store(), &ProbePort::Number(80), Protocol::Tcp);
        assert_eq!(m.pods, ["x/a", "x/b", "y/a"]);
        let ok = |f: &str, t: &str| m.allowed[f][t];
        // x/b is isolated for ingress: only x/a on 80.
        assert!(ok("x/a", "x/b"));
        assert!(!ok("y/a", "x/b"));
        // y/a may not open anything, but may be reached (its replies flow).
        assert!(!ok("y/a", "x/a"));
        assert!(ok("x/a", "y/a"));
        // Every pod reaches itself (loopback never leaves the pod).
        for p in &m.pods {
            assert!(ok(p, p));
        }
        let grid = m.grid();
        assert!(grid.contains("x/a"), "{grid}");
        // Port 81 is not in x/b's rule.
        let m81 = matrix(&store(), &ProbePort::Number(81), Protocol::Tcp);
        assert!(!m81.allowed["x/a"]["x/b"]);
        // UDP is not in it either.
        let udp = matrix(&store(), &ProbePort::Number(80), Protocol::Udp);
        assert!(!udp.allowed["x/a"]["x/b"]);
        assert!(udp.allowed["x/a"]["y/a"]);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["port"], 80);
        assert_eq!(json["protocol"], "TCP");
        assert_eq!(json["allowed"]["x/a"]["x/b"], true);
    }

    #[test]
    fn named_port_resolves_per_destination() {
        let m = matrix(&store(), &ProbePort::Name("web".into()), Protocol::Tcp);
        // web is 80 on x/b (allowed by the rule) and absent on y/a.
        assert!(m.allowed["x/a"]["x/b"]);
        assert!(!m.allowed["x/a"]["y/a"]);
    }

    #[test]
    fn trace_names_the_rule() {
        let s = store();
        let pods = s.pod_views();
        let t = fake_tables(&s, &pods);
        let ip = |i: usize| pods[i].ip;
        let tr = trace(&t, ("x/a", 1, ip(0)), ("x/b", 2, ip(1)), Protocol::Tcp, 80);
        assert_eq!(tr.verdict, "allowed", "{tr:?}");
        assert_eq!(tr.ingress.policy.as_deref(), Some("x/b-from-x-a"));
        assert_eq!(tr.ingress.rule, Some(0));
        assert!(!tr.egress.isolated);
        let tr = trace(&t, ("y/a", 3, ip(2)), ("x/a", 1, ip(0)), Protocol::Tcp, 80);
        assert_eq!(tr.verdict, "denied");
        assert_eq!(tr.reason.as_deref(), Some("policy_denied"));
        assert!(tr.egress.isolated && tr.egress.policy.is_none());
    }
}
