//! Immutable table snapshots the workers read on the packet path.
//!
//! The control thread owns the truth (endpoints, host port, other nodes) and compiles it
//! into a [`Tables`] value: a port table indexed by [`PortId`], an exact-match
//! forwarding table ([`Fib`]) from local pod /32 to the port that owns it, a
//! longest-prefix table ([`Lpm`]) from other nodes' pod CIDRs to their [`NodeId`], and
//! the overlay's tunnel endpoints (empty until the overlay fills them). A snapshot is never mutated after it is
//! built; a change builds a new one and publishes it through [`publish`] (RCU style:
//! workers pick it up between bursts, the old one is freed on the control thread once
//! every worker has handed it back). Lookups are allocation-free and cannot panic.
//!
//! In a packet's way this sits between parse and rewrite: the route stage asks
//! [`Tables::route`] where a destination lives (`Local` port, the `Host` port, or a
//! `Remote` node) and the port table what MACs to write. It depends on nothing of the
//! pipeline: the policy-hit rows it carries are [`counters`](crate::counters).

pub mod fib;
pub mod lpm;
pub mod publish;

pub use fib::Fib;
pub use lpm::Lpm;

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::counters::PolicyHits;
use crate::policy::PolicySnapshot;

pub use crate::counters::PortId;

/// Index of a worker thread.
pub type WorkerId = u16;

/// Index of another node in [`Tables::nodes`].
pub type NodeId = u16;

/// The link-local gateway every pod routes through (onlink default route); defined once,
/// in `xsknet_proto::consts`.
pub use xsknet_proto::consts::POD_GATEWAY as GATEWAY_IP;

/// What sits behind a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// A pod's host-side veth. Its pod owns exactly one IPv4 /32.
    Pod,
    /// The host port (`xsknet0-dp`): the node's own network stack.
    Host,
    /// A queue of the uplink NIC: VXLAN to and from other nodes only (the XDP program
    /// passes everything else to the node's stack).
    Uplink,
}

/// Where a destination lives, as [`Tables::route`] answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// A pod on this node, behind this port.
    Local(PortId),
    /// Not a pod here or on a known node: the node's own stack (the host port).
    Host,
    /// A pod of another node's CIDR: encapsulate towards that node.
    Remote(NodeId),
}

/// This node's side of the VXLAN overlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overlay {
    /// The uplink port encapsulated frames leave on.
    pub uplink: PortId,
    /// This node's underlay address (outer source, and the only outer destination
    /// decapsulated).
    pub local_ip: u32,
    /// Our VTEP MAC: the inner source MAC of frames we encapsulate.
    pub vtep_mac: [u8; 6],
    /// VXLAN network identifier (24 bits).
    pub vni: u32,
    /// Outer UDP destination port (8472 Linux/flannel, 4789 IANA).
    pub dst_port: u16,
    /// Largest inner IPv4 packet the tunnel carries: the uplink MTU − 50 (the pod MTU).
    pub inner_mtu: u16,
}

/// Another node's tunnel endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vtep {
    /// Its underlay address (outer destination).
    pub underlay_ip: u32,
    /// The underlay next hop's MAC for that address (outer destination MAC).
    pub next_hop_mac: [u8; 6],
    /// Its VTEP MAC: the inner destination MAC.
    pub vtep_mac: [u8; 6],
}

/// An IPv4 prefix as the packet path tests it (`addr & mask == net`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix4 {
    pub net: u32,
    pub mask: u32,
}

impl Prefix4 {
    /// `addr/len` with the host bits cleared; `None` for `len > 32`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Prefix4> {
        if len > 32 {
            return None;
        }
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        Some(Prefix4 {
            net: u32::from(addr) & mask,
            mask,
        })
    }

    #[inline]
    pub fn contains(&self, a: u32) -> bool {
        a & self.mask == self.net
    }
}

/// Everything the packet path needs to know about one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortInfo {
    pub kind: PortKind,
    /// The worker that owns this port's rings (and is the only one that may TX on it).
    pub worker: WorkerId,
    /// MAC of the dataplane side of the link (the host-side veth). Used as the source
    /// MAC of frames sent on this port and as the answer to ARP requests from it.
    pub mac: [u8; 6],
    /// MAC of the far side: the pod's `eth0`, or `xsknet0` for the host port. Used as
    /// the destination MAC of frames sent on this port.
    pub peer_mac: [u8; 6],
    /// The pod's address (`Pod` ports); the source address check uses it. For the host
    /// port (which may send from any address) the node's own address there: the policy
    /// stage exempts traffic from/to it (unspecified = everything behind it is the node).
    pub ip: Ipv4Addr,
}

/// One published, immutable view of the node's forwarding state.
#[derive(Clone, Debug, Default)]
pub struct Tables {
    /// Monotonic generation, for status output and tests.
    pub generation: u64,
    /// Port table, indexed by [`PortId`]; `None` for free slots.
    pub ports: Vec<Option<PortInfo>>,
    /// Pod /32 → owning port.
    pub fib: Fib,
    /// Other nodes' pod CIDRs → node (empty until the overlay fills it).
    pub remote: Lpm<u32, NodeId>,
    /// Tunnel endpoints of other nodes, indexed by [`NodeId`].
    pub nodes: Vec<Option<Vtep>>,
    /// Underlay address → node, for checking where VXLAN comes from.
    pub node_by_underlay: Fib,
    /// This node's overlay parameters; `None` = no overlay (remote routes drop).
    pub overlay: Option<Overlay>,
    /// Where everything that is not a local pod goes (the node's stack), if attached.
    pub host_port: Option<PortId>,
    /// The cluster's Service CIDR (kube-proxy's ClusterIPs): a pod's packet to it
    /// leaving through the host port has its egress decision deferred to the DNATed
    /// packet that comes back (see `pipeline::policy`). `None`: no deferral.
    pub service_cidr: Option<Prefix4>,
    /// Compiled NetworkPolicy classifiers per port (the policy stage reads them on a
    /// connection-table miss).
    pub policy: Arc<PolicySnapshot>,
    /// Hits per policy: one row per worker, each indexed by `RuleRef::policy` of
    /// `policy`; allocated with the snapshot so the packet path only bumps.
    pub policy_hits: Arc<[PolicyHits]>,
}

impl Tables {
    /// The port at `id`, if it exists.
    #[inline]
    pub fn port(&self, id: PortId) -> Option<&PortInfo> {
        self.ports.get(id as usize).and_then(Option::as_ref)
    }

    /// Where an IPv4 destination lives: a local pod's port (exact match), else another
    /// node whose pod CIDR holds it (longest prefix), else the node's own stack.
    #[inline]
    pub fn route(&self, dst: u32) -> Route {
        if let Some(p) = self.fib.lookup(dst) {
            return Route::Local(p);
        }
        match self.remote.lookup(dst) {
            Some(n) => Route::Remote(n),
            None => Route::Host,
        }
    }

    /// The port traffic for `addr` leaves this node by: the local pod's port, the
    /// uplink for another node's pod, or the host port (`None` when that port is not
    /// attached).
    #[inline]
    pub fn port_for(&self, addr: u32) -> Option<PortId> {
        match self.route(addr) {
            Route::Local(p) => Some(p),
            Route::Host => self.host_port,
            Route::Remote(_) => self.overlay.map(|o| o.uplink),
        }
    }

    /// The tunnel endpoint of `node`, if known.
    #[inline]
    pub fn vtep(&self, node: NodeId) -> Option<&Vtep> {
        self.nodes.get(node as usize).and_then(Option::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_prefers_local_then_remote_then_host() {
        let ip = |a: [u8; 4]| u32::from_be_bytes(a);
        let t = Tables {
            fib: Fib::build([(ip([10, 244, 1, 5]), 3)]),
            remote: Lpm::build([(ip([10, 244, 0, 0]), 16, 7), (ip([10, 244, 2, 0]), 24, 2)]),
            host_port: Some(0),
            overlay: Some(Overlay {
                uplink: 9,
                local_ip: ip([192, 168, 0, 1]),
                vtep_mac: [2; 6],
                vni: 1,
                dst_port: 8472,
                inner_mtu: 1450,
            }),
            ..Tables::default()
        };
        assert_eq!(t.route(ip([10, 244, 1, 5])), Route::Local(3));
        assert_eq!(t.route(ip([10, 244, 2, 5])), Route::Remote(2));
        assert_eq!(t.route(ip([10, 244, 1, 6])), Route::Remote(7));
        assert_eq!(t.route(ip([8, 8, 8, 8])), Route::Host);
        assert_eq!(t.port_for(ip([10, 244, 1, 5])), Some(3));
        assert_eq!(t.port_for(ip([10, 244, 2, 5])), Some(9));
        assert_eq!(t.port_for(ip([8, 8, 8, 8])), Some(0));
        let bare = Tables::default();
        assert_eq!(bare.route(ip([10, 244, 2, 5])), Route::Host);
        assert_eq!(bare.port_for(ip([10, 244, 2, 5])), None);
        assert_eq!(bare.vtep(0), None);
    }
}
