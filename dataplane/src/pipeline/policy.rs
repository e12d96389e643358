//! Policy stage: Kubernetes NetworkPolicy on every routed IPv4 packet, statefully.
//!
//! Runs inside the forward stage after the route lookup (so both ends are known) and
//! before the rewrite. The ends of a packet are its ingress and egress ports: a pod
//! port stands for that pod; behind the host port an address is the node itself when
//! it is one of the node's addresses (the host port's `PortInfo::ip` and the overlay's
//! underlay address; an unspecified host-port address means "every address behind it
//! that is not a local pod is the node"), a local pod when it is a local pod's address
//! (the node forwarded that pod's packet, after a Service's DNAT: the flow as the
//! backend sees it, subject to the client's egress and the backend's ingress policy),
//! and a remote address otherwise. Traffic to or from the node is always allowed and
//! not tracked (by address: a pod flow forwarded by the node does not inherit the
//! node's exemption); a pod's traffic to itself is always allowed, and tracked.
//! A pod's packet to the Service CIDR (`Tables::service_cidr`) has its egress decision
//! deferred to the DNATed packet that comes back ([`judge`]). Everything else goes
//! through the worker's [`Conntrack`]:
//!
//! * **hit** → allowed (this is how replies of allowed connections pass). An entry
//!   admitted under an older table generation is first re-checked, once per
//!   generation, in its initiator's direction against the new classifiers (a revoking
//!   policy change stops a flow at its next packet; one that allows it again lets the
//!   next packet through). A TCP/SCTP flow no longer allowed is kept as *revoked*
//!   and its packets dropped in both directions, so the peer's retransmissions cannot
//!   pass as a new flow the other way; other protocols' entries are removed and the
//!   packet judged as a miss. A TCP SYN (SCTP INIT) meeting a closed, time-wait or
//!   revoked entry starts over as a miss;
//! * **miss** → an ICMP error quoting a tracked flow passes (not tracked itself);
//!   otherwise the source pod's egress classifier (if the pod is isolated for
//!   egress) is asked about peer = destination address and the destination pod's
//!   ingress classifier (if isolated for ingress) about peer = source address, both
//!   with protocol and destination port (0 for ICMP and other protocols; non-initial
//!   fragments carry no ports and are checked as port 0). Both allow → an entry is
//!   inserted and the packet forwarded, the allowing policies' hit counters bumped;
//!   otherwise `Drop(PolicyDenied)` (or `ConntrackFull` when the table refuses).
//!
//! Every flow between non-node ends is tracked even when no policy selects either
//! pod, so a policy applied later can still let the replies of connections it allows
//! through, and revoke the ones it does not.
//!
//! **Replies go back the way the flow came.** A flow whose first packet entered from
//! the host port with a non-node source is marked "via host" in its entry; a packet of
//! the reply direction (or an ICMP error from the responder about the flow) is then
//! [`Steer::Host`]ed: sent to the host port instead of the routed egress, so the node
//! reverses its NAT (Services, NodePort, hostPort). Cost on the packet path: one flag
//! test on a conntrack hit (the entry is already loaded).
//!
//! A flow whose ends belong to two workers is tracked by both: the worker that admits
//! it, and the worker that receives it through the handoff ring ([`track_handoff`],
//! told the packet's real ingress port, so the "via host" mark travels too), so the
//! reply, which arrives on the other worker's port, finds its entry.
//!
//! Flows are read through the `packet` views (see [`Flow::parse`]); this stage is
//! the IPv4 one, over the `u32` instances of the connection table and the classifiers
//! (`Conntrack`, `Classifier`), which are generic over the address family so an IPv6
//! stage is another instance of the same code.
//!
//! Nothing here allocates, locks or panics. [`evaluate`] is also what `trace` and
//! `policy matrix` report rule names from; the verdicts they print come from running
//! synthetic frames through `pipeline::process` (see [`synthetic_frame`]).

use crate::packet::ethernet::{self, ethertype};
use crate::packet::ipv4::{self, Packet as Ipv4Packet};
use crate::packet::protocol::{
    ICMP as PROTO_ICMP, SCTP as PROTO_SCTP, TCP as PROTO_TCP, UDP as PROTO_UDP,
};
use crate::packet::{icmp, sctp, tcp, udp};
use crate::policy::{PolicySnapshot, RuleRef};
use crate::tables::{PortId, PortInfo, PortKind, Tables};

use super::bump;
use super::conntrack::{self, Conntrack, Flow, Hit, Millis, State, Tracked};
use super::DropReason;

/// A generation no entry is admitted under: forces a re-check on the next packet.
const UNCHECKED_EPOCH: u32 = u32::MAX;

/// The answer of one direction's classifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The pod is not isolated in this direction (or the end is not a pod).
    NotIsolated,
    /// Isolated, and this rule allows the flow.
    Allowed(RuleRef),
    /// Isolated, and no rule allows the flow.
    Denied,
}

impl Side {
    #[inline]
    pub fn allows(self) -> bool {
        !matches!(self, Side::Denied)
    }
}

/// What the classifiers say about a flow's first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The source pod's egress policy.
    pub egress: Side,
    /// The destination pod's ingress policy.
    pub ingress: Side,
}

impl Decision {
    #[inline]
    pub fn allowed(&self) -> bool {
        self.egress.allows() && self.ingress.allows()
    }
}

/// Per-worker hits per policy; lives in [`crate::counters`] so `tables` can carry the
/// rows without importing the pipeline.
pub use crate::counters::PolicyHits;

/// Ask the classifiers about `flow` from `src_pod` to `dst_pod` (`None` = not a pod).
#[inline]
pub fn evaluate(
    policy: &PolicySnapshot,
    src_pod: Option<PortId>,
    dst_pod: Option<PortId>,
    flow: &Flow,
) -> Decision {
    let port = flow.policy_port();
    let egress = match src_pod
        .and_then(|p| policy.port(p))
        .and_then(|p| p.egress.as_ref())
    {
        None => Side::NotIsolated,
        Some(c) => c
            .lookup(flow.dst, flow.proto, port)
            .map_or(Side::Denied, Side::Allowed),
    };
    let ingress = match dst_pod
        .and_then(|p| policy.port(p))
        .and_then(|p| p.ingress.as_ref())
    {
        None => Side::NotIsolated,
        Some(c) => c
            .lookup(flow.src, flow.proto, port)
            .map_or(Side::Denied, Side::Allowed),
    };
    Decision { egress, ingress }
}

/// Whether `a`, seen behind port `p`, is the node itself: only behind the host port,
/// and only for the node's own addresses there (the host port's address and the
/// overlay's underlay address). An unspecified host-port address means "every
/// address behind it that is not a local pod is the node" (tables without a pod CIDR:
/// tests, `policy matrix`). A pod address forwarded by the node (a Service's DNAT) is
/// never the node: it does not inherit the node's exemption.
///
/// The port-kind test is always inlined (pod ports, most traffic, stop there); the
/// address tests behind the host port are left to the compiler.
#[inline(always)]
fn is_node(tables: &Tables, p: &PortInfo, a: u32) -> bool {
    p.kind == PortKind::Host && is_node_behind_host(tables, p, a)
}

/// [`is_node`] for `p`, the host port.
#[inline]
fn is_node_behind_host(tables: &Tables, p: &PortInfo, a: u32) -> bool {
    if p.ip.is_unspecified() {
        return tables.fib.lookup(a).is_none();
    }
    u32::from(p.ip) == a || tables.overlay.is_some_and(|o| o.local_ip == a)
}

/// The policed ends of a packet from `src` on `ingress` to `dst` on `egress`: `None`
/// when it is exempt (to or from the node's own addresses), else (source pod, destination pod), each `None` for an address that is not
/// a local pod. A source behind the host port that is a local pod's address is that
/// pod: the node forwarded its packet after a Service's DNAT, and its egress policy
/// applies to the flow as the backend sees it. A pod's flow to itself is policed ends
/// too (tracked, so the replies of a hairpin through a Service go back to the node),
/// and [`judge`] always allows it.
///
/// `inline(always)`: out of line it cost ~45 instructions per packet in [`admit`] for
/// ~10 of work (the `Option` of two `Option`s returned through memory).
#[inline(always)]
pub fn ends(
    tables: &Tables,
    ingress: PortId,
    in_port: &PortInfo,
    egress: PortId,
    out: &PortInfo,
    src: u32,
    dst: u32,
) -> Option<(Option<PortId>, Option<PortId>)> {
    if is_node(tables, in_port, src) || is_node(tables, out, dst) {
        return None;
    }
    let src_pod = match in_port.kind {
        PortKind::Pod => Some(ingress),
        PortKind::Host => tables.fib.lookup(src),
        PortKind::Uplink => None,
    };
    Some((src_pod, (out.kind == PortKind::Pod).then_some(egress)))
}

/// The decision for `flow` between the policed ends `src_pod` and `dst_pod` (as
/// [`ends`] gives them), with the two Service rules on top of [`evaluate`]:
///
/// * a pod reaching itself (through a Service, whose DNATed packet comes back from
///   the host port) is always allowed;
/// * a pod's packet to the Service CIDR (not a pod) has its egress decision deferred:
///   it is judged when the node's DNAT sends it back into the dataplane addressed to
///   the backend (source = the client pod), against both the client's egress and the
///   backend's ingress policy. Otherwise an egress default-deny would block every
///   Service, and an egress allow to B would not allow A → Service → B.
#[inline]
pub fn judge(
    tables: &Tables,
    src_pod: Option<PortId>,
    dst_pod: Option<PortId>,
    flow: &Flow,
) -> Decision {
    if src_pod.is_some() && src_pod == dst_pod {
        return Decision {
            egress: Side::NotIsolated,
            ingress: Side::NotIsolated,
        };
    }
    let deferred = dst_pod.is_none() && tables.service_cidr.is_some_and(|c| c.contains(flow.dst));
    let src_pod = if deferred { None } else { src_pod };
    evaluate(&tables.policy, src_pod, dst_pod, flow)
}

/// The decision for the first packet of `flow` from port `ingress` to port `egress`
/// ([`ends`] then [`judge`]; exempt flows are allowed by both sides). What `trace`
/// and `policy matrix` report.
#[inline]
pub fn decide(
    tables: &Tables,
    ingress: PortId,
    in_port: &PortInfo,
    egress: PortId,
    out: &PortInfo,
    flow: &Flow,
) -> Decision {
    match ends(tables, ingress, in_port, egress, out, flow.src, flow.dst) {
        Some((s, d)) => judge(tables, s, d, flow),
        None => Decision {
            egress: Side::NotIsolated,
            ingress: Side::NotIsolated,
        },
    }
}

/// Where the forward stage sends a packet the policy stage admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steer {
    /// Where the route lookup said.
    Routed,
    /// To the host port: a reply of a flow that entered through it (the node's NAT,
    /// typically a Service's DNAT, must see it to reverse the translation).
    Host,
}

#[inline]
fn count_hit(tables: &Tables, worker: u16, side: Side) {
    if let Side::Allowed(r) = side {
        if let Some(c) = tables
            .policy_hits
            .get(worker as usize)
            .and_then(|h| h.hits.get(r.policy as usize))
        {
            bump(c, 1);
        }
    }
}

/// The policy stage for a checked IPv4 packet `ip` routed from `ingress` to `egress`.
///
/// Split for the packet path: this part (the ends, the flow, the connection-table
/// walk that also refreshes an entry admitted under the current generation) is
/// inlined into the forward stage; everything else — a miss, a re-check after a
/// policy change, a revoked or reopened flow, ICMP errors — is [`admit_slow`], out of
/// line, so an established flow's packet pays neither its code nor a call with eight
/// arguments.
#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "a stage's inputs, all borrowed")]
pub fn admit(
    ip: &Ipv4Packet<&[u8]>,
    ingress: PortId,
    in_port: &PortInfo,
    egress: PortId,
    out: &PortInfo,
    tables: &Tables,
    ct: &mut Conntrack,
    now: Millis,
) -> Result<Steer, DropReason> {
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let Some((src_pod, dst_pod)) = ends(tables, ingress, in_port, egress, out, src, dst) else {
        return Ok(Steer::Routed);
    };
    let flow = Flow::parse(src, dst, ip.protocol(), payload(ip), ip.frag_offset() == 0);
    let epoch = tables.generation as u32;
    match ct.track(&flow, now, epoch) {
        // The common case, already updated: an established flow's packet.
        Tracked::Refreshed { original, via_host } => Ok(steer(via_host, original, in_port)),
        Tracked::Found(h) => admit_slow(
            ip,
            &flow,
            Some(h),
            (src_pod, dst_pod),
            in_port,
            tables,
            ct,
            now,
        ),
        Tracked::Miss => admit_slow(
            ip,
            &flow,
            None,
            (src_pod, dst_pod),
            in_port,
            tables,
            ct,
            now,
        ),
    }
}

/// The IP payload of a checked packet in its buffer (for the head buffer of a
/// multi-buffer packet, the part in it: the L4 header), without a panicking index;
/// empty if the lengths do not hold.
#[inline(always)]
fn payload<'a>(ip: &Ipv4Packet<&'a [u8]>) -> &'a [u8] {
    let (hl, total) = (ip.header_len(), ip.total_len());
    let b = ip.clone().into_inner();
    b.get(hl..total.min(b.len())).unwrap_or_default()
}

/// Replies of a flow that came through the host port go back to it (never back into
/// the host port they came from).
#[inline(always)]
fn steer(via_host: bool, original: bool, in_port: &PortInfo) -> Steer {
    if via_host && !original && in_port.kind != PortKind::Host {
        Steer::Host
    } else {
        Steer::Routed
    }
}

/// [`admit`] for a packet whose flow has no entry, or one [`Conntrack::track`] left
/// alone (`found`: admitted under an older generation, revoked, or reopened by this
/// packet).
#[inline(never)]
#[allow(clippy::too_many_arguments, reason = "a stage's inputs, all borrowed")]
fn admit_slow(
    ip: &Ipv4Packet<&[u8]>,
    flow: &Flow,
    found: Option<Hit>,
    (src_pod, dst_pod): (Option<PortId>, Option<PortId>),
    in_port: &PortInfo,
    tables: &Tables,
    ct: &mut Conntrack,
    now: Millis,
) -> Result<Steer, DropReason> {
    let flow = *flow;
    let payload = ip.payload();
    let epoch = tables.generation as u32;
    if let Some(h) = found {
        if conntrack::reopens(&flow, h.state) {
            ct.remove(h.slot);
        } else {
            let allowed = if h.epoch == epoch {
                h.state != State::Revoked
            } else {
                let d = if h.original {
                    judge(tables, src_pod, dst_pod, &flow)
                } else {
                    judge(tables, dst_pod, src_pod, &flow.reversed())
                };
                d.allowed()
            };
            if allowed {
                if h.state == State::Revoked {
                    ct.readmit(h.slot, epoch, flow.proto);
                } else if h.epoch != epoch {
                    ct.set_epoch(h.slot, epoch);
                }
                ct.update(h.slot, &flow, h.original, now);
                return Ok(steer(h.via_host, h.original, in_port));
            }
            if conntrack::revocable_in_place(flow.proto) {
                // Keep refusing both directions: the peer's retransmissions must not
                // open a "new" flow in the other direction.
                if h.state == State::Revoked {
                    ct.update(h.slot, &flow, h.original, now);
                    ct.set_epoch(h.slot, epoch);
                } else {
                    ct.revoke(h.slot, epoch, now);
                }
                return Err(DropReason::PolicyDenied);
            }
            ct.remove(h.slot);
        }
    }
    let icmp_error = flow.proto == PROTO_ICMP && icmp::is_error(flow.detail);
    if icmp_error && ip.frag_offset() == 0 {
        if let Some(inner) = conntrack::icmp_error_inner(payload) {
            if let Some(h) = ct.lookup(&inner, now) {
                // An error about a flow that came through the host port, sent by its
                // responder (the quoted packet is the initiator's), goes back through
                // the host port too: the node un-NATs the quoted header.
                let about_reply_side = h.original;
                if h.via_host && about_reply_side && in_port.kind != PortKind::Host {
                    return Ok(Steer::Host);
                }
                return Ok(Steer::Routed);
            }
        }
    }
    let d = judge(tables, src_pod, dst_pod, &flow);
    if !d.allowed() {
        return Err(DropReason::PolicyDenied);
    }
    count_hit(tables, ct.worker, d.egress);
    count_hit(tables, ct.worker, d.ingress);
    if icmp_error {
        return Ok(Steer::Routed);
    }
    let slot = ct
        .insert(&flow, epoch, now)
        .map_err(|_| DropReason::ConntrackFull)?;
    if in_port.kind == PortKind::Host {
        // Not the node's address (exempt above): the node forwarded this packet.
        ct.mark_via_host(slot);
    }
    Ok(Steer::Routed)
}

/// Track a frame another worker admitted on its port `ingress` and handed to this
/// one for `egress`, so the replies that arrive on this worker's port find the flow
/// (and, for a flow that entered through the host port, go back through it). New
/// entries are marked unchecked: this worker re-checks them against its own tables on
/// their next packet. Frames that are not plain IPv4 are ignored; never panics.
#[inline]
pub fn track_handoff(
    frame: &[u8],
    ingress: PortId,
    egress: PortId,
    tables: &Tables,
    ct: &mut Conntrack,
    now: Millis,
) {
    let Ok(eth) = ethernet::Frame::new_checked(frame) else {
        return;
    };
    if eth.ethertype() != ethertype::IPV4 {
        return;
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return;
    };
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let (Some(out), Some(in_port)) = (tables.port(egress), tables.port(ingress)) else {
        return;
    };
    if ends(tables, ingress, in_port, egress, out, src, dst).is_none() {
        return;
    }
    let flow = Flow::parse(src, dst, ip.protocol(), ip.payload(), ip.frag_offset() == 0);
    if flow.proto == PROTO_ICMP && icmp::is_error(flow.detail) {
        return;
    }
    let slot = match ct.lookup(&flow, now) {
        Some(h) if !conntrack::reopens(&flow, h.state) => {
            ct.update(h.slot, &flow, h.original, now);
            // Only the packet that created the entry says how the flow came in.
            return;
        }
        Some(h) => {
            ct.remove(h.slot);
            ct.insert(&flow, UNCHECKED_EPOCH, now)
        }
        None => ct.insert(&flow, UNCHECKED_EPOCH, now),
    };
    if let (Ok(slot), PortKind::Host) = (slot, in_port.kind) {
        ct.mark_via_host(slot);
    }
}

/// What a synthetic packet carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub src: u32,
    pub dst: u32,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// TCP flags; SCTP chunk type; ICMP type (the identifier is `sport`).
    pub detail: u8,
}

/// A complete Ethernet/IPv4 frame for `p`, as `ingress`'s far side would send it
/// (valid IPv4 and ICMP checksums; TCP, UDP and SCTP checksums are not computed: no
/// stage reads them). Built through the `packet` views. Control-side helper for
/// `trace`, `policy matrix` and tests.
pub fn synthetic_frame(tables: &Tables, ingress: PortId, p: &Probe) -> Vec<u8> {
    /// UDP probes carry a few payload bytes, like a real datagram.
    const UDP_PAYLOAD: usize = 4;
    let (dst_mac, src_mac) = tables
        .port(ingress)
        .map(|i| (i.mac, i.peer_mac))
        .unwrap_or(([0; 6], [0; 6]));
    let l4_len = match p.proto {
        PROTO_TCP => tcp::MIN_HEADER_LEN,
        PROTO_UDP => udp::HEADER_LEN + UDP_PAYLOAD,
        PROTO_SCTP => sctp::MIN_LEN,
        PROTO_ICMP => icmp::HEADER_LEN,
        _ => 8,
    };
    let ip_len = ipv4::MIN_HEADER_LEN + l4_len;
    let mut f = vec![0u8; ethernet::HEADER_LEN + ip_len];
    let mut eth = ethernet::Frame::new_unchecked(&mut f[..]);
    eth.set_dst_addr(dst_mac);
    eth.set_src_addr(src_mac);
    eth.set_ethertype(ethertype::IPV4);
    let mut ip = ipv4::Packet::new_unchecked(eth.payload_mut());
    ip.set_version_and_header_len(ipv4::MIN_HEADER_LEN);
    ip.set_total_len(ip_len as u16);
    ip.set_flags_and_offset(0x4000); // DF
    ip.set_ttl(64);
    ip.set_protocol(p.proto);
    ip.set_src_addr(p.src);
    ip.set_dst_addr(p.dst);
    ip.fill_checksum();
    let l4 = ip.payload_mut();
    match p.proto {
        PROTO_TCP => {
            let mut t = tcp::Packet::new_unchecked(l4);
            t.set_src_port(p.sport);
            t.set_dst_port(p.dport);
            t.set_header_len(tcp::MIN_HEADER_LEN);
            t.set_flags(p.detail);
            t.set_window_len(64240);
        }
        PROTO_UDP => {
            let mut u = udp::Packet::new_unchecked(l4);
            u.set_src_port(p.sport);
            u.set_dst_port(p.dport);
            u.set_len(l4_len as u16);
        }
        PROTO_SCTP => {
            let mut s = sctp::Packet::new_unchecked(l4);
            s.set_src_port(p.sport);
            s.set_dst_port(p.dport);
            s.set_first_chunk_type(p.detail);
            s.set_first_chunk_len(sctp::CHUNK_HEADER_LEN as u16);
        }
        PROTO_ICMP => {
            let mut m = icmp::Packet::new_unchecked(l4);
            m.set_msg_type(p.detail);
            let [hi, lo] = p.sport.to_be_bytes();
            m.set_rest_of_header([hi, lo, 0, 1]);
            m.fill_checksum();
        }
        _ => {}
    }
    f
}

/// The first packet of a connection and the detail of its reply, per protocol:
/// TCP SYN / SYN-ACK, SCTP INIT / INIT ACK, ICMP echo request / reply, UDP plain.
pub fn opening_details(proto: u8) -> (u8, u8) {
    use conntrack::tcp_flags::{ACK, SYN};
    use sctp::chunk_type::{INIT, INIT_ACK};
    match proto {
        PROTO_TCP => (SYN, SYN | ACK),
        PROTO_SCTP => (INIT, INIT_ACK),
        PROTO_ICMP => (8, 0),
        _ => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::testutil::*;
    use super::super::{process, Verdict};
    use super::*;
    use crate::policy::{Classifier, CompiledRule, IpBlock, PortMatch, PortPolicy};
    use crate::tables::PortKind;

    const TCP: u8 = PROTO_TCP;

    fn rule(policy: u32, peer: (u32, u8), ports: &[PortMatch]) -> CompiledRule {
        CompiledRule {
            peers: vec![IpBlock {
                net: peer.0,
                prefix: peer.1,
                except: vec![],
            }],
            ports: ports.to_vec(),
            origin: RuleRef { policy, rule: 0 },
        }
    }

    fn tcp_port(p: u16) -> PortMatch {
        PortMatch {
            proto: TCP,
            lo: p,
            hi: p,
        }
    }

    /// Tables whose port `id` has the given policy, with hit counters for one worker.
    fn with_policy(mut t: Tables, pols: Vec<(PortId, PortPolicy)>, n_policies: usize) -> Tables {
        let mut snap = crate::policy::PolicySnapshot {
            ports: vec![None, None, None, None],
            policies: (0..n_policies).map(|i| format!("ns/p{i}")).collect(),
        };
        for (id, p) in pols {
            snap.ports[id as usize] = Some(Arc::new(p));
        }
        t.policy = Arc::new(snap);
        t.policy_hits = Arc::from(vec![PolicyHits::new(n_policies)]);
        t
    }

    fn probe(
        src: std::net::Ipv4Addr,
        dst: std::net::Ipv4Addr,
        proto: u8,
        sport: u16,
        dport: u16,
        detail: u8,
    ) -> Probe {
        Probe {
            src: u32::from(src),
            dst: u32::from(dst),
            proto,
            sport,
            dport,
            detail,
        }
    }

    fn send(t: &Tables, ct: &mut Conntrack, from: PortId, p: &Probe, now: Millis) -> Verdict {
        let f = synthetic_frame(t, from, p);
        let (mut buf, mut ctx) = umem(&f, from);
        process(&mut buf, &mut ctx, t, ct, now)
    }

    /// Deny-all ingress on pod B: A → B refused; with a rule for A on TCP 80 the SYN
    /// passes, the SYN-ACK rides on the entry, other ports stay closed.
    #[test]
    fn ingress_isolation_and_replies() {
        let deny = with_policy(
            tables(),
            vec![(
                POD_B,
                PortPolicy {
                    ingress: Some(Classifier::build(&[])),
                    egress: None,
                },
            )],
            1,
        );
        let mut ct = Conntrack::new(1024);
        let syn = probe(IP_A, IP_B, TCP, 40000, 80, 0x02);
        assert_eq!(
            send(&deny, &mut ct, POD_A, &syn, 1),
            Verdict::Drop(DropReason::PolicyDenied)
        );
        // B → A is not affected (A is not isolated, B's egress is not isolated).
        let back = probe(IP_B, IP_A, TCP, 40000, 80, 0x02);
        assert_eq!(
            send(&deny, &mut ct, POD_B, &back, 1),
            Verdict::Forward(POD_A)
        );
    }

    #[test]
    fn egress_deny_still_lets_replies_through() {
        // A may not open anything; B may open to A; A's replies flow.
        let t = with_policy(
            tables(),
            vec![(
                POD_A,
                PortPolicy {
                    ingress: None,
                    egress: Some(Classifier::build(&[])),
                },
            )],
            1,
        );
        let mut ct = Conntrack::new(1024);
        let open = probe(IP_A, IP_B, TCP, 1234, 80, 0x02);
        assert_eq!(
            send(&t, &mut ct, POD_A, &open, 1),
            Verdict::Drop(DropReason::PolicyDenied)
        );
        let syn = probe(IP_B, IP_A, TCP, 5555, 80, 0x02);
        assert_eq!(send(&t, &mut ct, POD_B, &syn, 1), Verdict::Forward(POD_A));
        let synack = probe(IP_A, IP_B, TCP, 80, 5555, 0x12);
        assert_eq!(
            send(&t, &mut ct, POD_A, &synack, 2),
            Verdict::Forward(POD_B)
        );
        // UDP reply and ICMP echo reply likewise.
        let q = probe(IP_B, IP_A, PROTO_UDP, 5353, 53, 0);
        assert_eq!(send(&t, &mut ct, POD_B, &q, 3), Verdict::Forward(POD_A));
        let r = probe(IP_A, IP_B, PROTO_UDP, 53, 5353, 0);
        assert_eq!(send(&t, &mut ct, POD_A, &r, 3), Verdict::Forward(POD_B));
        let ping = probe(IP_B, IP_A, PROTO_ICMP, 77, 77, 8);
        assert_eq!(send(&t, &mut ct, POD_B, &ping, 4), Verdict::Forward(POD_A));
        let pong = probe(IP_A, IP_B, PROTO_ICMP, 77, 77, 0);
        assert_eq!(send(&t, &mut ct, POD_A, &pong, 4), Verdict::Forward(POD_B));
        // A ping from A is a new flow: denied.
        let ping_a = probe(IP_A, IP_B, PROTO_ICMP, 78, 78, 8);
        assert_eq!(
            send(&t, &mut ct, POD_A, &ping_a, 4),
            Verdict::Drop(DropReason::PolicyDenied)
        );
    }

    #[test]
    fn node_and_hairpin_are_exempt_remote_is_policed() {
        let mut t = with_policy(
            tables(),
            vec![(
                POD_A,
                PortPolicy {
                    ingress: Some(Classifier::build(&[])),
                    egress: Some(Classifier::build(&[])),
                },
            )],
            1,
        );
        let node = std::net::Ipv4Addr::new(10, 244, 0, 1);
        if let Some(Some(h)) = t.ports.get_mut(HOST as usize) {
            assert_eq!(h.kind, PortKind::Host);
            h.ip = node;
        }
        let mut ct = Conntrack::new(1024);
        let from_node = probe(node, IP_A, TCP, 1, 80, 0x02);
        assert_eq!(
            send(&t, &mut ct, HOST, &from_node, 1),
            Verdict::Forward(POD_A)
        );
        let to_node = probe(IP_A, node, TCP, 1, 10250, 0x02);
        assert_eq!(
            send(&t, &mut ct, POD_A, &to_node, 1),
            Verdict::Forward(HOST)
        );
        let remote = probe(IP_OUTSIDE, IP_A, TCP, 1, 80, 0x02);
        assert_eq!(
            send(&t, &mut ct, HOST, &remote, 1),
            Verdict::Drop(DropReason::PolicyDenied)
        );
        let out = probe(IP_A, IP_OUTSIDE, TCP, 1, 80, 0x02);
        assert_eq!(
            send(&t, &mut ct, POD_A, &out, 1),
            Verdict::Drop(DropReason::PolicyDenied)
        );
        assert_eq!(ct.stats.entries, 0, "exempt traffic is not tracked");
    }

    #[test]
    fn hits_are_counted_per_policy_on_admission() {
        let b_ip = u32::from(IP_B);
        let a_ip = u32::from(IP_A);
        let t = with_policy(
            tables(),
            vec![
                (
                    POD_A,
                    PortPolicy {
                        ingress: None,
                        egress: Some(Classifier::build(&[rule(0, (b_ip, 32), &[tcp_port(80)])])),
                    },
                ),
                (
                    POD_B,
                    PortPolicy {
                        ingress: Some(Classifier::build(&[rule(1, (a_ip, 32), &[])])),
                        egress: None,
                    },
                ),
            ],
            2,
        );
        let d = evaluate(
            &t.policy,
            Some(POD_A),
            Some(POD_B),
            &Flow::parse(a_ip, b_ip, TCP, &[0, 1, 0, 80], true),
        );
        // The placeholder classifier of the contract answers None until the real one
        // lands; only assert counting when it allows.
        if d.allowed() {
            let mut ct = Conntrack::new(1024);
            let syn = probe(IP_A, IP_B, TCP, 40000, 80, 0x02);
            assert_eq!(send(&t, &mut ct, POD_A, &syn, 1), Verdict::Forward(POD_B));
            let h = &t.policy_hits[0].hits;
            assert_eq!(h[0].load(std::sync::atomic::Ordering::Relaxed), 1);
            assert_eq!(h[1].load(std::sync::atomic::Ordering::Relaxed), 1);
            let other = probe(IP_A, IP_B, TCP, 40001, 81, 0x02);
            assert_eq!(
                send(&t, &mut ct, POD_A, &other, 1),
                Verdict::Drop(DropReason::PolicyDenied)
            );
        }
    }

    #[test]
    fn a_revoking_generation_stops_a_tracked_flow_and_an_allowing_one_admits() {
        let open = tables();
        let mut ct = Conntrack::new(1024);
        let syn = probe(IP_A, IP_B, TCP, 40000, 80, 0x02);
        assert_eq!(
            send(&open, &mut ct, POD_A, &syn, 1),
            Verdict::Forward(POD_B)
        );
        let synack = probe(IP_B, IP_A, TCP, 80, 40000, 0x12);
        assert_eq!(
            send(&open, &mut ct, POD_B, &synack, 2),
            Verdict::Forward(POD_A)
        );
        // Generation 2 isolates B for ingress with no rules: the next packet of the
        // established flow, in either direction, is refused and the entry is gone.
        let mut deny = with_policy(
            tables(),
            vec![(
                POD_B,
                PortPolicy {
                    ingress: Some(Classifier::build(&[])),
                    egress: None,
                },
            )],
            1,
        );
        deny.generation = 2;
        let ack = probe(IP_B, IP_A, TCP, 80, 40000, 0x10);
        assert_eq!(
            send(&deny, &mut ct, POD_B, &ack, 3),
            Verdict::Drop(DropReason::PolicyDenied),
            "the peer's packets of a revoked flow do not pose as a new flow"
        );
        let data = probe(IP_A, IP_B, TCP, 40000, 80, 0x10);
        assert_eq!(
            send(&deny, &mut ct, POD_A, &data, 3),
            Verdict::Drop(DropReason::PolicyDenied)
        );
        // B may still open its own connection to A on the same ports (a SYN).
        let b_syn = probe(IP_B, IP_A, TCP, 80, 40000, 0x02);
        assert_eq!(
            send(&deny, &mut ct, POD_B, &b_syn, 3),
            Verdict::Forward(POD_A)
        );
        // … which then is B's connection: A's SYN-ACK is its reply.
        let a_synack = probe(IP_A, IP_B, TCP, 40000, 80, 0x12);
        assert_eq!(
            send(&deny, &mut ct, POD_A, &a_synack, 3),
            Verdict::Forward(POD_B)
        );
        // Back to A's flow: a UDP flow is forgotten, not kept revoked.
        let u = probe(IP_A, IP_B, PROTO_UDP, 7, 53, 0);
        ct.clear();
        assert_eq!(send(&open, &mut ct, POD_A, &u, 3), Verdict::Forward(POD_B));
        assert_eq!(
            send(&deny, &mut ct, POD_A, &u, 3),
            Verdict::Drop(DropReason::PolicyDenied)
        );
        assert_eq!(ct.stats.entries, 0);
        // A revoked TCP flow is allowed again by the next generation that allows it.
        ct.clear();
        assert_eq!(
            send(&open, &mut ct, POD_A, &syn, 4),
            Verdict::Forward(POD_B)
        );
        assert_eq!(
            send(&deny, &mut ct, POD_A, &data, 4),
            Verdict::Drop(DropReason::PolicyDenied)
        );
        // Generation 3 lifts it: the very next packet passes.
        let mut open3 = tables();
        open3.generation = 3;
        assert_eq!(
            send(&open3, &mut ct, POD_A, &data, 4),
            Verdict::Forward(POD_B)
        );
    }

    #[test]
    fn icmp_errors_of_tracked_flows_pass() {
        let t = with_policy(
            tables(),
            vec![(
                POD_A,
                PortPolicy {
                    ingress: Some(Classifier::build(&[])),
                    egress: None,
                },
            )],
            1,
        );
        let mut ct = Conntrack::new(1024);
        let q = probe(IP_A, IP_B, PROTO_UDP, 5000, 9, 0);
        assert_eq!(send(&t, &mut ct, POD_A, &q, 1), Verdict::Forward(POD_B));
        // B answers with port unreachable quoting the datagram.
        let quoted = synthetic_frame(&t, POD_A, &q);
        let mut err = probe(IP_B, IP_A, PROTO_ICMP, 0, 0, 3);
        err.detail = 3;
        let mut f = synthetic_frame(&t, POD_B, &err);
        f.truncate(14 + 20 + 8);
        f[35] = 3; // code: port unreachable
        f[38..42].copy_from_slice(&[0; 4]);
        f.extend_from_slice(&quoted[14..14 + 28]);
        let total = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        fix_ipv4_checksum(&mut f);
        let (mut buf, mut ctx) = umem(&f, POD_B);
        assert_eq!(
            process(&mut buf, &mut ctx, &t, &mut ct, 2),
            Verdict::Forward(POD_A)
        );
        // The same error about an unknown flow is refused (A is isolated for ingress).
        let mut ct2 = Conntrack::new(1024);
        let (mut buf, mut ctx) = umem(&f, POD_B);
        assert_eq!(
            process(&mut buf, &mut ctx, &t, &mut ct2, 2),
            Verdict::Drop(DropReason::PolicyDenied)
        );
    }

    #[test]
    fn handoff_tracking_lets_the_other_worker_pass_replies() {
        let t = with_policy(
            tables(),
            vec![(
                POD_B,
                PortPolicy {
                    ingress: None,
                    egress: Some(Classifier::build(&[])),
                },
            )],
            1,
        );
        // Worker 0 owns A and admits A → B; worker 1 owns B and sees the handed-off
        // frame, then B's reply.
        let mut w0 = Conntrack::new(1024);
        let mut w1 = Conntrack::new(1024);
        let syn = probe(IP_A, IP_B, TCP, 40000, 80, 0x02);
        let f = synthetic_frame(&t, POD_A, &syn);
        let (mut buf, mut ctx) = umem(&f, POD_A);
        assert_eq!(
            process(&mut buf, &mut ctx, &t, &mut w0, 1),
            Verdict::Forward(POD_B)
        );
        let synack = probe(IP_B, IP_A, TCP, 80, 40000, 0x12);
        assert_eq!(
            send(&t, &mut w1.clone_empty(), POD_B, &synack, 2),
            Verdict::Drop(DropReason::PolicyDenied)
        );
        track_handoff(window(&buf, &ctx), POD_A, POD_B, &t, &mut w1, 1);
        assert_eq!(
            send(&t, &mut w1, POD_B, &synack, 2),
            Verdict::Forward(POD_A)
        );
    }

    const NODE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 244, 0, 1);
    const SVC: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 96, 0, 10);

    /// `t` with the node's address on the host port and the default Service CIDR.
    fn as_node(mut t: Tables) -> Tables {
        if let Some(Some(h)) = t.ports.get_mut(HOST as usize) {
            h.ip = NODE;
        }
        t.service_cidr = crate::tables::Prefix4::new(std::net::Ipv4Addr::new(10, 96, 0, 0), 12);
        t
    }

    fn deny_all(ingress: bool, egress: bool) -> PortPolicy {
        PortPolicy {
            ingress: ingress.then(|| Classifier::build(&[])),
            egress: egress.then(|| Classifier::build(&[])),
        }
    }

    /// A → ClusterIP → B as kube-proxy does it, for every tracked protocol: A's packet
    /// to the Service leaves through the host port, the node's DNATed packet enters
    /// from it addressed to B, and B's replies go back to the host port (not straight
    /// to A, whose socket expects the Service address); the node's un-NATed reply
    /// reaches A. Later packets in both directions keep the same way.
    #[test]
    fn replies_of_flows_that_came_through_the_host_port_go_back_to_it() {
        let t = as_node(tables());
        for proto in [TCP, PROTO_UDP, PROTO_SCTP, PROTO_ICMP] {
            let mut ct = Conntrack::new(1024);
            let (open, answer) = opening_details(proto);
            // ICMP queries are keyed by their identifier on both sides.
            let bp = if proto == PROTO_ICMP { 40000 } else { 8080 };
            let to_svc = probe(IP_A, SVC, proto, 40000, 80, open);
            assert_eq!(send(&t, &mut ct, POD_A, &to_svc, 1), Verdict::Forward(HOST));
            let dnat = probe(IP_A, IP_B, proto, 40000, bp, open);
            assert_eq!(send(&t, &mut ct, HOST, &dnat, 1), Verdict::Forward(POD_B));
            let reply = probe(IP_B, IP_A, proto, bp, 40000, answer);
            assert_eq!(
                send(&t, &mut ct, POD_B, &reply, 2),
                Verdict::Forward(HOST),
                "proto {proto}: the reply goes back through the node's NAT"
            );
            let unnat = probe(SVC, IP_A, proto, 80, 40000, answer);
            assert_eq!(send(&t, &mut ct, HOST, &unnat, 2), Verdict::Forward(POD_A));
            let (more, more_reply) = match proto {
                TCP => (0x10, 0x10),
                _ => (open, answer),
            };
            let again = probe(IP_A, IP_B, proto, 40000, bp, more);
            assert_eq!(send(&t, &mut ct, HOST, &again, 3), Verdict::Forward(POD_B));
            let again_reply = probe(IP_B, IP_A, proto, bp, 40000, more_reply);
            assert_eq!(
                send(&t, &mut ct, POD_B, &again_reply, 3),
                Verdict::Forward(HOST)
            );
            // The same addresses without the node in between stay direct.
            let dp = if proto == PROTO_ICMP { 40001 } else { 8080 };
            let direct = probe(IP_A, IP_B, proto, 40001, dp, open);
            assert_eq!(
                send(&t, &mut ct, POD_A, &direct, 4),
                Verdict::Forward(POD_B)
            );
            let direct_reply = probe(IP_B, IP_A, proto, dp, 40001, answer);
            assert_eq!(
                send(&t, &mut ct, POD_B, &direct_reply, 4),
                Verdict::Forward(POD_A)
            );
        }
    }

    /// The rule holds across workers: the host port's worker admits the DNATed packet
    /// and hands it to B's worker, whose table learns that the flow came through the
    /// host port; B's reply on that worker goes to the host port.
    #[test]
    fn via_host_holds_across_workers() {
        let t = as_node(tables());
        for proto in [TCP, PROTO_UDP, PROTO_SCTP, PROTO_ICMP] {
            let (open, answer) = opening_details(proto);
            let mut w_host = Conntrack::new(1024);
            let mut w_b = Conntrack::new(1024);
            let bp = if proto == PROTO_ICMP { 40000 } else { 8080 };
            let dnat = probe(IP_A, IP_B, proto, 40000, bp, open);
            let f = synthetic_frame(&t, HOST, &dnat);
            let (mut buf, mut ctx) = umem(&f, HOST);
            assert_eq!(
                process(&mut buf, &mut ctx, &t, &mut w_host, 1),
                Verdict::Forward(POD_B)
            );
            track_handoff(window(&buf, &ctx), HOST, POD_B, &t, &mut w_b, 1);
            let reply = probe(IP_B, IP_A, proto, bp, 40000, answer);
            assert_eq!(
                send(&t, &mut w_b, POD_B, &reply, 2),
                Verdict::Forward(HOST),
                "proto {proto}"
            );
            // Handed off from a pod's port instead: a direct flow, replies routed.
            let mut w_b2 = Conntrack::new(1024);
            let f = synthetic_frame(&t, POD_A, &dnat);
            let (mut buf, mut ctx) = umem(&f, POD_A);
            assert_eq!(
                process(&mut buf, &mut ctx, &t, &mut Conntrack::new(64), 1),
                Verdict::Forward(POD_B)
            );
            track_handoff(window(&buf, &ctx), POD_A, POD_B, &t, &mut w_b2, 1);
            assert_eq!(
                send(&t, &mut w_b2, POD_B, &reply, 2),
                Verdict::Forward(POD_A)
            );
        }
    }

    /// An ICMP error the backend sends about a flow that came through the host port
    /// goes back through it as well (the node rewrites the quoted header).
    #[test]
    fn icmp_errors_about_via_host_flows_go_back_to_the_host_port() {
        let t = as_node(tables());
        let mut ct = Conntrack::new(1024);
        let q = probe(IP_A, IP_B, PROTO_UDP, 5000, 53, 0);
        assert_eq!(send(&t, &mut ct, HOST, &q, 1), Verdict::Forward(POD_B));
        let quoted = synthetic_frame(&t, HOST, &q);
        let mut f = synthetic_frame(&t, POD_B, &probe(IP_B, IP_A, PROTO_ICMP, 0, 0, 3));
        f.truncate(14 + 20 + 8);
        f[35] = 3;
        f[38..42].copy_from_slice(&[0; 4]);
        f.extend_from_slice(&quoted[14..14 + 28]);
        let total = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        fix_ipv4_checksum(&mut f);
        let (mut buf, mut ctx) = umem(&f, POD_B);
        assert_eq!(
            process(&mut buf, &mut ctx, &t, &mut ct, 2),
            Verdict::Forward(HOST)
        );
    }

    /// Policy through the NAT: the DNATed packet is judged as B sees it (source = A)
    /// against B's ingress and A's egress; A's packet to the Service CIDR defers its
    /// egress decision; the node's own address stays exempt, a pod address forwarded
    /// by the node does not.
    #[test]
    fn policy_holds_through_the_services_nat() {
        let syn_svc = probe(IP_A, SVC, TCP, 40000, 80, 0x02);
        let syn_dnat = probe(IP_A, IP_B, TCP, 40000, 8080, 0x02);
        let syn_direct = probe(IP_A, IP_B, TCP, 40001, 8080, 0x02);
        let denied = Verdict::Drop(DropReason::PolicyDenied);
        // B denies all ingress: direct and through the Service alike.
        let t = as_node(with_policy(
            tables(),
            vec![(POD_B, deny_all(true, false))],
            1,
        ));
        let mut ct = Conntrack::new(1024);
        assert_eq!(
            send(&t, &mut ct, POD_A, &syn_svc, 1),
            Verdict::Forward(HOST)
        );
        assert_eq!(send(&t, &mut ct, HOST, &syn_dnat, 1), denied);
        assert_eq!(send(&t, &mut ct, POD_A, &syn_direct, 1), denied);
        // … but the node itself still reaches B (by its address).
        let from_node = probe(NODE, IP_B, TCP, 1, 8080, 0x02);
        assert_eq!(
            send(&t, &mut ct, HOST, &from_node, 1),
            Verdict::Forward(POD_B)
        );
        // A denies all egress: the packet to the Service passes (deferred), the DNATed
        // one is A's flow to B and is refused; the outside stays refused.
        let t = as_node(with_policy(
            tables(),
            vec![(POD_A, deny_all(false, true))],
            1,
        ));
        let mut ct = Conntrack::new(1024);
        assert_eq!(
            send(&t, &mut ct, POD_A, &syn_svc, 1),
            Verdict::Forward(HOST)
        );
        assert_eq!(send(&t, &mut ct, HOST, &syn_dnat, 1), denied);
        assert_eq!(send(&t, &mut ct, POD_A, &syn_direct, 1), denied);
        let out = probe(IP_A, IP_OUTSIDE, TCP, 40002, 80, 0x02);
        assert_eq!(send(&t, &mut ct, POD_A, &out, 1), denied);
        // A may only reach B on 8080: direct and through the Service alike.
        let b = u32::from(IP_B);
        let allow_b = PortPolicy {
            ingress: None,
            egress: Some(Classifier::build(&[rule(0, (b, 32), &[tcp_port(8080)])])),
        };
        let t = as_node(with_policy(tables(), vec![(POD_A, allow_b)], 1));
        let mut ct = Conntrack::new(1024);
        assert_eq!(
            send(&t, &mut ct, POD_A, &syn_svc, 1),
            Verdict::Forward(HOST)
        );
        assert_eq!(
            send(&t, &mut ct, HOST, &syn_dnat, 1),
            Verdict::Forward(POD_B)
        );
        assert_eq!(
            send(&t, &mut ct, POD_A, &syn_direct, 1),
            Verdict::Forward(POD_B)
        );
        let other = probe(IP_A, IP_B, TCP, 40003, 9090, 0x02);
        assert_eq!(send(&t, &mut ct, HOST, &other, 1), denied);
        // Without a Service CIDR nothing is deferred.
        let mut t = as_node(with_policy(
            tables(),
            vec![(POD_A, deny_all(false, true))],
            1,
        ));
        t.service_cidr = None;
        assert_eq!(
            send(&t, &mut Conntrack::new(64), POD_A, &syn_svc, 1),
            denied
        );
        // A pod reaching itself through its Service (hairpin without masquerade).
        let t = as_node(with_policy(
            tables(),
            vec![(POD_A, deny_all(true, true))],
            1,
        ));
        let mut ct = Conntrack::new(1024);
        let self_dnat = probe(IP_A, IP_A, TCP, 40000, 8080, 0x02);
        assert_eq!(
            send(&t, &mut ct, HOST, &self_dnat, 1),
            Verdict::Forward(POD_A)
        );
        let self_reply = probe(IP_A, IP_A, TCP, 8080, 40000, 0x12);
        assert_eq!(
            send(&t, &mut ct, POD_A, &self_reply, 2),
            Verdict::Forward(HOST)
        );
    }

    /// Every synthetic frame passes the views `process` reads it with, and its flow
    /// parses back to the probe.
    #[test]
    fn synthetic_frames_parse_back_to_their_probe() {
        let t = tables();
        for (proto, detail) in [
            (TCP, 0x12),
            (PROTO_UDP, 0),
            (PROTO_SCTP, 6),
            (PROTO_ICMP, 8),
            (47, 0),
        ] {
            let p = probe(IP_A, IP_B, proto, 40000, 443, detail);
            let f = synthetic_frame(&t, POD_A, &p);
            let eth = ethernet::Frame::new_checked(&f[..]).unwrap();
            assert_eq!(eth.ethertype(), ethertype::IPV4);
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(ip.total_len(), f.len() - ethernet::HEADER_LEN);
            let flow = Flow::parse(ip.src_addr(), ip.dst_addr(), proto, ip.payload(), true);
            assert_eq!((flow.src, flow.dst, flow.proto), (p.src, p.dst, proto));
            match proto {
                PROTO_ICMP => {
                    assert_eq!((flow.sport, flow.detail), (40000, 8));
                    assert!(icmp::Packet::new_checked(ip.payload())
                        .unwrap()
                        .verify_checksum());
                }
                47 => assert_eq!((flow.sport, flow.dport), (0, 0)),
                _ => assert_eq!((flow.sport, flow.dport, flow.detail), (40000, 443, detail)),
            }
            if proto == PROTO_UDP {
                assert!(udp::Packet::new_checked(ip.payload()).is_ok());
            }
        }
    }

    impl Conntrack {
        fn clone_empty(&self) -> Conntrack {
            Conntrack::new(self.capacity())
        }
    }
}
