//! Packet classifier over [`CompiledRule`]s. Filled in by the policy work: the API
//! below is the contract (`build` once on the control thread, `lookup` on the packet
//! path, allocation-free, never panics, cost not linear in the number of rules).

use super::{CompiledRule, RuleRef};

/// Compiled allow rules of one endpoint in one direction.
#[derive(Debug, Default)]
pub struct Classifier {
    rules: Vec<CompiledRule>,
}

impl Classifier {
    /// Build from rules (control thread).
    pub fn build(rules: &[CompiledRule]) -> Classifier {
        Classifier {
            rules: rules.to_vec(),
        }
    }

    /// The first rule (lowest `RuleRef`) allowing a flow with this peer address (host
    /// order), protocol and destination port (0 for ICMP), if any.
    #[inline]
    pub fn lookup(&self, peer: u32, proto: u8, port: u16) -> Option<RuleRef> {
        let _ = (peer, proto, port, &self.rules);
        None
    }

    /// Number of rules compiled in.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}
