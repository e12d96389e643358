//! Building the [`Tables`] the daemon publishes, in one place: the port table from the
//! registered sockets, the FIB from the live endpoints, the host port, the compiled
//! policy with its hit counters, and the overlay (other nodes' pod CIDRs, their tunnel
//! endpoints, this node's tunnel parameters). Pure functions of their inputs (no I/O,
//! no clock), so the daemon's every publish and the unit tests build tables the same
//! way.
//!
//! [`overlay_tables`] is the one place node records become routes: the static peer
//! list of `node.yaml` goes through it today, the datastore's view of the cluster
//! (`cluster::ClusterView::nodes`) will go through it unchanged.

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::cluster::NodeRecord;
use crate::pipeline::policy::PolicyHits;
use crate::policy::PolicySnapshot;
use crate::tables::{Fib, Lpm, NodeId, Overlay, PortId, PortInfo, Tables, Vtep};

/// The overlay part of a snapshot: other nodes' pod CIDRs → node, their tunnel
/// endpoints by [`NodeId`], underlay address → node, and this node's parameters.
#[derive(Clone, Debug, Default)]
pub struct OverlayTables {
    pub remote: Lpm<u32, NodeId>,
    pub nodes: Vec<Option<Vtep>>,
    pub node_by_underlay: Fib,
    pub overlay: Option<Overlay>,
    /// Records left out, with why (the caller logs them).
    pub skipped: Vec<(String, &'static str)>,
}

/// Turn node records into the overlay tables of this node (`local`). Records are taken
/// in name order; node ids are their positions. A record is left out (and listed in
/// `skipped`) when it is this node (same underlay address or an overlapping pod
/// CIDR), when its VNI or VXLAN port differ from ours (it would not understand us),
/// or when its underlay address or pod CIDR is already taken by an earlier record.
/// `next_hop` gives the outer destination MAC for a node's underlay address; a node
/// without one is routed (its CIDR is known, so its traffic is a counted `NoRoute`
/// rather than leaking to the host port) and accepted by decap, but has no tunnel
/// endpoint until the MAC is known.
pub fn overlay_tables(
    local: Overlay,
    local_cidr: crate::config::Ipv4Cidr,
    records: &[NodeRecord],
    next_hop: impl Fn(Ipv4Addr) -> Option<[u8; 6]>,
) -> OverlayTables {
    let mut sorted: Vec<&NodeRecord> = records.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = OverlayTables {
        overlay: Some(local),
        ..OverlayTables::default()
    };
    let mut taken: Vec<&NodeRecord> = Vec::new();
    let mut prefixes = Vec::new();
    let mut underlay = Vec::new();
    for r in sorted {
        let why = if u32::from(r.underlay_ip) == local.local_ip {
            Some("this node's underlay address")
        } else if r.pod_cidr.overlaps(&local_cidr) {
            Some("pod CIDR overlaps this node's")
        } else if r.vni != local.vni {
            Some("other VNI")
        } else if r.vxlan_port != local.dst_port {
            Some("other VXLAN port")
        } else if taken.iter().any(|t| t.underlay_ip == r.underlay_ip) {
            Some("underlay address of another node")
        } else if taken.iter().any(|t| t.pod_cidr.overlaps(&r.pod_cidr)) {
            Some("pod CIDR overlaps another node's")
        } else if out.nodes.len() > usize::from(NodeId::MAX) {
            Some("too many nodes")
        } else {
            None
        };
        if let Some(why) = why {
            out.skipped.push((r.name.clone(), why));
            continue;
        }
        let id = out.nodes.len() as NodeId;
        let ip = u32::from(r.underlay_ip);
        out.nodes.push(next_hop(r.underlay_ip).map(|mac| Vtep {
            underlay_ip: ip,
            next_hop_mac: mac,
            vtep_mac: r.vtep_mac.octets(),
        }));
        prefixes.push((u32::from(r.pod_cidr.network()), r.pod_cidr.prefix, id));
        underlay.push((ip, id));
        taken.push(r);
    }
    out.remote = Lpm::build(prefixes);
    out.node_by_underlay = Fib::build(underlay);
    out
}

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
    /// Other nodes and this node's tunnel ([`overlay_tables`]); None = no overlay.
    pub overlay: Option<&'a OverlayTables>,
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
    let o = inputs.overlay.cloned().unwrap_or_default();
    Tables {
        generation: 0,
        ports,
        fib,
        remote: o.remote,
        nodes: o.nodes,
        node_by_underlay: o.node_by_underlay,
        overlay: o.overlay,
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
            overlay: None,
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
            overlay: None,
        });
        assert_eq!(t.ports, vec![None]);
        assert_eq!(t.port_for(u32::from(Ipv4Addr::new(10, 0, 0, 9))), None);
    }

    fn record(name: &str, cidr: &str, ip: [u8; 4], mac: u8) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            pod_cidr: cidr.parse().unwrap(),
            underlay_ip: ip.into(),
            vtep_mac: xsknet_proto::MacAddr([2, 0x78, 0, 0, 0, mac]),
            vni: 1,
            vxlan_port: 8472,
        }
    }

    fn local() -> Overlay {
        Overlay {
            uplink: 3,
            local_ip: u32::from(Ipv4Addr::new(192, 168, 9, 1)),
            vtep_mac: [2, 0x78, 0, 0, 0, 1],
            vni: 1,
            dst_port: 8472,
            inner_mtu: 1450,
        }
    }

    #[test]
    fn node_records_become_remote_routes_and_tunnel_endpoints() {
        let mut other_vni = record("e", "10.244.6.0/24", [192, 168, 9, 6], 6);
        other_vni.vni = 2;
        let records = vec![
            record("c", "10.244.3.0/24", [192, 168, 9, 3], 3),
            record("b", "10.244.2.0/24", [192, 168, 9, 2], 2),
            record("self", "10.244.1.0/24", [192, 168, 9, 1], 1),
            record("d", "10.244.4.0/24", [192, 168, 9, 4], 4),
            record("dup", "10.244.3.128/25", [192, 168, 9, 5], 5),
            other_vni,
        ];
        let resolved =
            |ip: Ipv4Addr| (ip.octets()[3] != 4).then_some([2, 0x99, 0, 0, 0, ip.octets()[3]]);
        let o = overlay_tables(
            local(),
            "10.244.1.0/24".parse().unwrap(),
            &records,
            resolved,
        );
        let ip = |a: [u8; 4]| u32::from(Ipv4Addr::from(a));
        // Name order: b = 0, c = 1, d = 2.
        assert_eq!(o.remote.lookup(ip([10, 244, 2, 7])), Some(0));
        assert_eq!(o.remote.lookup(ip([10, 244, 3, 200])), Some(1));
        assert_eq!(o.remote.lookup(ip([10, 244, 4, 1])), Some(2));
        assert_eq!(o.remote.lookup(ip([10, 244, 1, 5])), None, "not ourselves");
        assert_eq!(o.remote.lookup(ip([10, 244, 6, 5])), None, "other VNI");
        assert_eq!(
            o.nodes[1],
            Some(Vtep {
                underlay_ip: ip([192, 168, 9, 3]),
                next_hop_mac: [2, 0x99, 0, 0, 0, 3],
                vtep_mac: [2, 0x78, 0, 0, 0, 3],
            })
        );
        assert_eq!(o.nodes[2], None, "d's next hop is not resolved yet");
        assert_eq!(o.node_by_underlay.lookup(ip([192, 168, 9, 4])), Some(2));
        assert_eq!(o.node_by_underlay.lookup(ip([192, 168, 9, 5])), None);
        let mut skipped: Vec<_> = o.skipped.iter().map(|(n, _)| n.as_str()).collect();
        skipped.sort_unstable();
        assert_eq!(skipped, ["dup", "e", "self"]);

        // Through `build`: remote pods go to the uplink.
        let snap = Arc::new(PolicySnapshot::default());
        let hits: Arc<[PolicyHits]> = Vec::new().into();
        let t = build(TableInputs {
            capacity: 4,
            ports: [(
                3,
                info(
                    crate::tables::PortKind::Uplink,
                    Ipv4Addr::new(192, 168, 9, 1),
                ),
            )],
            routes: std::iter::empty(),
            host_port: None,
            policy: &snap,
            policy_hits: &hits,
            overlay: Some(&o),
        });
        assert_eq!(t.route(ip([10, 244, 3, 9])), Route::Remote(1));
        assert_eq!(t.port_for(ip([10, 244, 3, 9])), Some(3));
        assert_eq!(t.overlay, Some(local()));
    }
}
