//! Route stage: where a checked IPv4 packet leaves this node.
//!
//! Asks [`Tables::route`] for the destination (a local pod's port by exact match,
//! another node's pod CIDR by longest prefix, else the node's own stack) and resolves
//! the answer to an egress port and its table entry, plus the tunnel for a remote node.
//! Every way of not having a usable route is `NoRoute`: no host port attached, a route
//! from the host port back into it (it would loop between the node's stack and the
//! dataplane until the TTL ran out), a FIB entry for a port no longer in the port table
//! (a snapshot built mid-removal), a remote node without a tunnel endpoint or without
//! an overlay, and traffic decapsulated from another node that would go back into the
//! tunnel (nodes do not transit for each other).
//!
//! Measured cost: part of the ~15 ns/pkt IPv4 forward (FIB hit, bench/RESULTS.md); a
//! local-pod hit is one hash probe, a remote pod one binary search per prefix length.

use crate::tables::{NodeId, Overlay, PortId, PortInfo, PortKind, Route, Tables, Vtep};

use super::{DropReason, PacketCtx};

/// The tunnel a remote destination is reached through.
#[derive(Clone, Copy, Debug)]
pub struct Tunnel<'t> {
    pub node: NodeId,
    pub vtep: &'t Vtep,
    pub overlay: &'t Overlay,
}

/// Where a packet goes: the egress port, its table entry, and for a remote destination
/// the tunnel (the egress port is then the uplink).
#[derive(Clone, Copy, Debug)]
pub struct Egress<'t> {
    pub port: PortId,
    pub out: &'t PortInfo,
    pub tunnel: Option<Tunnel<'t>>,
}

/// Route `dst` for a packet with context `ctx`.
#[inline]
pub fn route<'t>(tables: &'t Tables, ctx: &PacketCtx, dst: u32) -> Result<Egress<'t>, DropReason> {
    let (port, tunnel) = match tables.route(dst) {
        Route::Local(p) => (p, None),
        Route::Host => match tables.host_port {
            Some(h) if !(ctx.ingress_kind == PortKind::Host && h == ctx.ingress) => (h, None),
            _ => return Err(DropReason::NoRoute),
        },
        Route::Remote(node) => {
            if ctx.ingress_kind == PortKind::Uplink {
                return Err(DropReason::NoRoute);
            }
            let (Some(overlay), Some(vtep)) = (tables.overlay.as_ref(), tables.vtep(node)) else {
                return Err(DropReason::NoRoute);
            };
            let t = Tunnel {
                node,
                vtep,
                overlay,
            };
            (overlay.uplink, Some(t))
        }
    };
    // A local route into the host port that sent it loops just the same.
    if port == ctx.ingress && ctx.ingress_kind == PortKind::Host {
        return Err(DropReason::NoRoute);
    }
    let out = tables.port(port).ok_or(DropReason::NoRoute)?;
    Ok(Egress { port, out, tunnel })
}

/// The host port as an egress: where the policy stage steers the replies of flows
/// that entered through it. `None` when no host port is attached.
#[inline]
pub fn to_host(tables: &Tables) -> Option<Egress<'_>> {
    let port = tables.host_port?;
    let out = tables.port(port)?;
    Some(Egress {
        port,
        out,
        tunnel: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn ip(a: std::net::Ipv4Addr) -> u32 {
        u32::from(a)
    }

    #[test]
    fn local_host_and_remote_resolve_to_ports() {
        let t = tables();
        let from_a = PacketCtx {
            tail: 0,
            ingress_kind: PortKind::Pod,
            ..PacketCtx::new(0, 0, POD_A)
        };
        let e = route(&t, &from_a, ip(IP_B)).unwrap();
        assert_eq!((e.port, e.tunnel.is_none()), (POD_B, true));
        let e = route(&t, &from_a, ip(IP_OUTSIDE)).unwrap();
        assert_eq!((e.port, e.out.kind), (HOST, PortKind::Host));
        let e = route(&t, &from_a, ip(IP_REMOTE)).unwrap();
        assert_eq!(e.port, UPLINK);
        let tun = e.tunnel.unwrap();
        assert_eq!((tun.node, tun.vtep.vtep_mac), (NODE_B, VTEP_MAC_B));
    }

    #[test]
    fn every_unusable_route_is_no_route() {
        let t = tables();
        let pod = PacketCtx::new(0, 0, POD_A);
        let host = PacketCtx {
            tail: 0,
            ingress_kind: PortKind::Host,
            ..PacketCtx::new(0, 0, HOST)
        };
        let uplink = PacketCtx {
            tail: 0,
            ingress_kind: PortKind::Uplink,
            ..PacketCtx::new(0, 0, UPLINK)
        };
        let no_route = Err(DropReason::NoRoute);
        assert_eq!(route(&t, &host, ip(IP_OUTSIDE)).map(|e| e.port), no_route);
        assert_eq!(route(&t, &pod, ip(IP_GONE)).map(|e| e.port), no_route);
        assert_eq!(route(&t, &pod, ip(IP_NO_VTEP)).map(|e| e.port), no_route);
        assert_eq!(route(&t, &uplink, ip(IP_REMOTE)).map(|e| e.port), no_route);
        let mut bare = tables();
        bare.overlay = None;
        assert_eq!(route(&bare, &pod, ip(IP_REMOTE)).map(|e| e.port), no_route);
        bare.host_port = None;
        assert_eq!(route(&bare, &pod, ip(IP_OUTSIDE)).map(|e| e.port), no_route);
        // The host port still reaches pods, and decapsulated traffic the node's stack.
        assert_eq!(route(&t, &host, ip(IP_A)).map(|e| e.port), Ok(POD_A));
        assert_eq!(route(&t, &uplink, ip(IP_OUTSIDE)).map(|e| e.port), Ok(HOST));
    }
}
