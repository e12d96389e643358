//! Immutable table snapshots the workers read on the packet path.
//!
//! The control thread owns the truth (endpoints, host port) and compiles it into a
//! [`Tables`] value: a port table indexed by [`PortId`] and a forwarding table (FIB)
//! from pod IPv4 /32 to the port that owns it. A snapshot is never mutated after it is
//! built; a change builds a new one and publishes it through [`publish`] (RCU style:
//! workers pick it up between bursts, the old one is freed on the control thread once
//! every worker has handed it back). Lookups are allocation-free and cannot panic.
//!
//! In a packet's way this sits between parse and rewrite: `pipeline::forward` asks the
//! FIB where a destination lives and the port table what MACs to write.

pub mod fib;
pub mod publish;

pub use fib::Fib;

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::pipeline::policy::PolicyHits;
use crate::policy::PolicySnapshot;

/// Index of a port in the node-wide port table. Stable for the life of the port;
/// reused only after the port is removed and every worker has acknowledged it.
pub type PortId = u16;

/// Index of a worker thread.
pub type WorkerId = u16;

/// The link-local gateway every pod routes through (onlink default route).
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// What sits behind a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// A pod's host-side veth. Its pod owns exactly one IPv4 /32.
    Pod,
    /// The host port (`xsknet0-dp`): the node's own network stack.
    Host,
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
    /// Where everything that is not a local pod goes (the node's stack), if attached.
    pub host_port: Option<PortId>,
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

    /// Egress port for an IPv4 destination: a local pod's port, else the host port.
    #[inline]
    pub fn route(&self, dst: u32) -> Option<PortId> {
        match self.fib.lookup(dst) {
            Some(p) => Some(p),
            None => self.host_port,
        }
    }
}
