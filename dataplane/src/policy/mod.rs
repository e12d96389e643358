//! Kubernetes NetworkPolicy: from YAML objects to per-port classifiers the workers run.
//!
//! The way through: [`k8s`] parses and validates `networking.k8s.io/v1` NetworkPolicy,
//! Namespace and Pod documents; [`store`] holds what is in force (all-or-nothing
//! applies) together with the live endpoints' namespace/name/labels; [`compile`] resolves
//! selectors, named ports and policyTypes into [`CompiledRule`]s per endpoint and
//! direction and builds a [`Classifier`] for each; the result is a [`PolicySnapshot`]
//! published with the other tables. The packet path asks a classifier only on a
//! connection-table miss (`pipeline::conntrack`).
//!
//! This file is the contract between the compiler side and the packet side: the types
//! below are used by both and change only by agreement.

pub mod classifier;
pub mod compile;
pub mod k8s;
pub mod store;

use std::sync::Arc;

pub use classifier::Classifier;

use crate::packet::addr::IpKey;
use crate::tables::PortId;

/// IP protocol numbers a rule can name (defined once, in `xsknet-proto`).
pub use xsknet_proto::consts::{PROTO_ICMP, PROTO_SCTP, PROTO_TCP, PROTO_UDP};

/// Which rule allowed a flow: index of the policy in [`PolicySnapshot::policies`] and
/// of the rule inside that policy's ingress or egress list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleRef {
    pub policy: u32,
    pub rule: u16,
}

/// An address block of a peer: `net/prefix` minus every `except` block, in one
/// address family (`u32`: IPv4, `u128`: IPv6). A pod peer is its /32 (/128); "any
/// address" is 0.0.0.0/0 (::/0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpBlock<A: IpKey = u32> {
    /// Network, host byte order, host bits zero.
    pub net: A,
    pub prefix: u8,
    pub except: Vec<(A, u8)>,
}

/// A port match: `proto` with destination port in `lo..=hi`. A protocol-only rule is
/// `lo = 0, hi = 65535`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMatch {
    pub proto: u8,
    pub lo: u16,
    pub hi: u16,
}

/// One allow rule after selector and named-port resolution, as the classifier sees it:
/// a flow matches when the peer address is in any of `peers` AND (its protocol and
/// destination port match any of `ports`, or `ports` is empty = every protocol and
/// port, ICMP included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledRule<A: IpKey = u32> {
    pub peers: Vec<IpBlock<A>>,
    pub ports: Vec<PortMatch>,
    pub origin: RuleRef,
}

/// The policy of one port (endpoint). `None` in a direction = not isolated there:
/// everything is allowed. `Some(c)` = isolated: allowed only if `c` matches.
#[derive(Debug, Default)]
pub struct PortPolicy {
    pub ingress: Option<Classifier>,
    pub egress: Option<Classifier>,
}

/// Everything the workers need for policy, published inside `tables::Tables`.
#[derive(Debug, Default)]
pub struct PolicySnapshot {
    /// Indexed by [`PortId`]; `None` = no policy selects the port (not isolated).
    pub ports: Vec<Option<Arc<PortPolicy>>>,
    /// `namespace/name` of each policy, indexed by [`RuleRef::policy`] (for counters,
    /// trace and logs).
    pub policies: Vec<String>,
}

impl PolicySnapshot {
    /// The policy of a port, if any selects it.
    #[inline]
    pub fn port(&self, id: PortId) -> Option<&PortPolicy> {
        self.ports.get(id as usize).and_then(|p| p.as_deref())
    }
}
