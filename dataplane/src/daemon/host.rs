//! The host port: a veth pair whose node end (`xsknet0`) carries the first address of
//! the pod CIDR and the route to the whole CIDR, and whose other end (`xsknet0-dp`) is
//! attached to the dataplane. The node's stack reaches pods through it exactly as a pod
//! does through its `eth0`, and everything that is not a local pod leaves through it.
//!
//! [`create`] builds the link pair over netlink (replacing one a crashed instance left)
//! and turns on IPv4 forwarding for packets the node receives on `xsknet0` (pod
//! traffic the node routes: Services' DNAT, egress to the outside);
//! attaching the dataplane end is the daemon's ([`super::ports`]); [`remove`] deletes
//! the pair at shutdown.

use std::net::Ipv4Addr;

use crate::config::{HostPortConfig, Ipv4Cidr};
use crate::sys::ethtool::EthtoolError;
use crate::sys::netlink::{Netlink, NetlinkError, RouteSpec};
use crate::tables::{PortInfo, PortKind};

/// Creating the host port failed.
#[derive(Debug, thiserror::Error)]
pub enum HostPortError {
    #[error("host port {name}: {what}: {source}")]
    Netlink {
        name: String,
        what: &'static str,
        source: NetlinkError,
    },
    #[error("host port: {0} vanished right after it was created")]
    Vanished(String),
    #[error("host port: {0} has no MAC address")]
    NoMac(String),
    #[error("turn off transmit offloads of {ifname}: {source}")]
    Offloads {
        ifname: String,
        source: EthtoolError,
    },
}

/// The node's address on the host port: the first address of the pod CIDR.
pub fn host_ip(cidr: Ipv4Cidr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.addr).wrapping_add(1))
}

/// The created pair: what the daemon attaches.
#[derive(Debug, Clone)]
pub struct HostLink {
    /// The dataplane end (attached to the dataplane).
    pub dp_ifname: String,
    pub dp_ifindex: u32,
    /// What the packet path needs of it.
    pub info: PortInfo,
}

/// Create the veth pair, address and route it (see the module doc). With a node-local
/// MTU (`localMtu`, issue 11) both ends get it: the node reaches this node's pods at
/// the MTU they reach each other with (its route is the pod CIDR's), instead of pods'
/// larger datagrams to the node being dropped by a 1500-byte host veth.
pub fn create(
    nl: &mut Netlink,
    cfg: &HostPortConfig,
    pod_cidr: Ipv4Cidr,
    local_mtu: Option<u32>,
) -> Result<HostLink, HostPortError> {
    let name = cfg.name.as_str();
    let peer = cfg.peer_name.as_str();
    let netlink = |what: &'static str| {
        move |source| HostPortError::Netlink {
            name: name.to_string(),
            what,
            source,
        }
    };
    // A previous instance that crashed may have left it; it is ours to replace.
    let _ = nl.delete_link(name);
    nl.create_veth(name, peer, None)
        .map_err(netlink("create veth pair"))?;
    let node = nl
        .link_by_name(name)
        .map_err(netlink("look up link"))?
        .ok_or_else(|| HostPortError::Vanished(name.to_string()))?;
    let dp = nl
        .link_by_name(peer)
        .map_err(netlink("look up peer link"))?
        .ok_or_else(|| HostPortError::Vanished(peer.to_string()))?;
    // Noise reduction: IPv6 link-local chatter on the host port would only be counted
    // as unsupported_ethertype drops.
    let _ = crate::sys::write_sysctl(&format!("net/ipv6/conf/{name}/disable_ipv6"), "1");
    let _ = crate::sys::write_sysctl(&format!("net/ipv6/conf/{peer}/disable_ipv6"), "1");
    // The node routes what pods send it (a Service's DNAT back into the dataplane, pod
    // egress to the outside): IPv4 forwarding is decided by the receiving interface.
    let _ = crate::sys::write_sysctl(&format!("net/ipv4/conf/{name}/forwarding"), "1");
    // The node's stack transmits into the dataplane through `name` exactly like a pod
    // does through its eth0: without this, node → pod TCP (kubelet probes, portmap's
    // hostPort DNAT) leaves with partial checksums and the pod drops it.
    crate::sys::ethtool::prepare_pod_interface(name).map_err(|source| HostPortError::Offloads {
        ifname: name.to_string(),
        source,
    })?;
    if let Some(mtu) = local_mtu {
        nl.set_mtu(dp.index, mtu)
            .map_err(netlink("set peer MTU (localMtu)"))?;
        nl.set_mtu(node.index, mtu)
            .map_err(netlink("set MTU (localMtu)"))?;
    }
    nl.set_link_up(dp.index, true)
        .map_err(netlink("set peer up"))?;
    nl.set_link_up(node.index, true)
        .map_err(netlink("set up"))?;
    let ip = host_ip(pod_cidr);
    nl.add_address(node.index, ip, 32)
        .map_err(netlink("add address"))?;
    nl.add_route(&RouteSpec {
        dst: pod_cidr.addr,
        prefix_len: pod_cidr.prefix,
        gateway: None,
        oif: node.index,
        onlink: false,
        src: Some(ip),
        scope_link: true,
        mtu: None,
    })
    .map_err(netlink("add pod CIDR route"))?;
    let node_mac = node
        .mac
        .ok_or_else(|| HostPortError::NoMac(name.to_string()))?;
    let dp_mac = dp
        .mac
        .ok_or_else(|| HostPortError::NoMac(peer.to_string()))?;
    Ok(HostLink {
        dp_ifname: peer.to_string(),
        dp_ifindex: dp.index,
        // The node's own address: the policy stage exempts traffic from and to it.
        info: PortInfo {
            kind: PortKind::Host,
            worker: 0,
            mac: dp_mac,
            peer_mac: node_mac,
            ip,
        },
    })
}

/// Delete the pair (at shutdown).
pub fn remove(nl: &mut Netlink, cfg: &HostPortConfig) {
    let _ = nl.delete_link(&cfg.name);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ip_is_the_first_address_of_the_cidr() {
        let c: Ipv4Cidr = "10.244.3.0/24".parse().unwrap();
        assert_eq!(host_ip(c), Ipv4Addr::new(10, 244, 3, 1));
    }
}
