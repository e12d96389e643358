//! Building the [`Tables`] the daemon publishes, in one place: the port table from the
//! registered sockets, the FIB from the live endpoints, the host port and the compiled
//! policy with its hit counters. A pure function of its inputs (no I/O, no clock), so
//! the daemon's every publish and the unit tests build tables the same way.

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::pipeline::policy::PolicyHits;
use crate::policy::PolicySnapshot;
use crate::tables::{Fib, PortId, PortInfo, Tables};

/// Everything one publish carries.
#[derive(Debug)]
pub struct TableInputs<'a, P, R>
where
    P: IntoIterator<Item = (PortId, PortInfo)>,
    R: IntoIterator<Item = (Ipv4Addr, PortId)>,
{
    /// Size of the port table (the registry's slot count).
    pub capacity: usize,
    /// Every registered port and what the packet path needs to know of it.
    pub ports: P,
    /// Local pod address → its port.
    pub routes: R,
    /// The host port, if attached.
    pub host_port: Option<PortId>,
    pub policy: &'a Arc<PolicySnapshot>,
    pub policy_hits: &'a Arc<[PolicyHits]>,
}

/// The tables for `inputs` (generation 0: the publisher numbers them).
pub fn build<P, R>(inputs: TableInputs<'_, P, R>) -> Tables
where
    P: IntoIterator<Item = (PortId, PortInfo)>,
    R: IntoIterator<Item = (Ipv4Addr, PortId)>,
{
    let mut ports: Vec<Option<PortInfo>> = vec![None; inputs.capacity];
    for (id, info) in inputs.ports {
        if let Some(slot) = ports.get_mut(usize::from(id)) {
            *slot = Some(info);
        }
    }
    let fib = Fib::build(
        inputs
            .routes
            .into_iter()
            .map(|(ip, id)| (u32::from(ip), id)),
    );
    Tables {
        generation: 0,
        ports,
        fib,
        host_port: inputs.host_port,
        policy: Arc::clone(inputs.policy),
        policy_hits: Arc::clone(inputs.policy_hits),
        ..Tables::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::{PortKind, Route};

    fn info(kind: PortKind, ip: Ipv4Addr) -> PortInfo {
        PortInfo {
            kind,
            worker: 0,
            mac: [2, 0, 0, 0, 0, 1],
            peer_mac: [2, 0, 0, 0, 0, 2],
            ip,
        }
    }

    #[test]
    fn ports_routes_and_host_port() {
        let pod = Ipv4Addr::new(10, 0, 0, 5);
        let host = Ipv4Addr::new(10, 0, 0, 1);
        let snap = Arc::new(PolicySnapshot::default());
        let hits: Arc<[PolicyHits]> = vec![PolicyHits::new(0)].into();
        let t = build(TableInputs {
            capacity: 4,
            ports: [
                (2, info(PortKind::Pod, pod)),
                (0, info(PortKind::Host, host)),
            ],
            routes: [(pod, 2)],
            host_port: Some(0),
            policy: &snap,
            policy_hits: &hits,
        });
        assert_eq!(t.ports.len(), 4);
        assert_eq!(t.port(2).map(|p| p.ip), Some(pod));
        assert_eq!(t.port(1), None);
        assert_eq!(t.route(u32::from(pod)), Route::Local(2));
        assert_eq!(
            t.port_for(u32::from(Ipv4Addr::new(8, 8, 8, 8))),
            Some(0),
            "everything else goes to the host port"
        );
        assert!(Arc::ptr_eq(&t.policy, &snap));
        assert_eq!(t.policy_hits.len(), 1);
    }

    #[test]
    fn no_host_port_means_no_default_route_and_out_of_range_ids_are_ignored() {
        let snap = Arc::new(PolicySnapshot::default());
        let hits: Arc<[PolicyHits]> = Vec::new().into();
        let t = build(TableInputs {
            capacity: 1,
            ports: [(5, info(PortKind::Pod, Ipv4Addr::new(10, 0, 0, 9)))],
            routes: std::iter::empty(),
            host_port: None,
            policy: &snap,
            policy_hits: &hits,
        });
        assert_eq!(t.ports, vec![None]);
        assert_eq!(t.port_for(u32::from(Ipv4Addr::new(10, 0, 0, 9))), None);
    }
}
