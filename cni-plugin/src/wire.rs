//! Pod wiring through netlink and ioctl (never by running `ip` or `ethtool`): the veth
//! between the node namespace (where `xsknetd` and the plugin run) and the pod's
//! `CNI_NETNS`, its MAC, MTU, /32 address, the link-local gateway routes and the
//! offload settings the AF_XDP dataplane needs.
//!
//! The veth's host end gets a deterministic name derived from `(container id, ifname)`
//! ([`host_ifname`]), so DEL, CHECK and GC find it without any plugin-side state. The
//! peer is created directly inside the pod namespace under its final name, so it never
//! appears in the node namespace. Pod-side work runs on a dedicated OS thread that
//! entered the pod namespace (`sys::netns::run_in_netns_fd`); the plugin's own thread
//! never changes namespace. [`create_pod_link`] removes the veth again if any later
//! step fails, so a failed call leaves no link behind.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use xsknet_proto::{MacAddr, POD_GATEWAY};
use xsknet_sys::netlink::{Netlink, NetlinkError, RouteSpec};
use xsknet_sys::netns::{open_netns, run_in_netns_fd, NetnsError};

pub use xsknet_proto::wire::HOST_IFNAME_PREFIX;

/// Wiring failures.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("network namespace {path} does not exist (was the container removed?)")]
    NetnsGone { path: PathBuf },
    #[error("{0}")]
    Netns(#[from] NetnsError),
    #[error("{0}")]
    Netlink(#[from] NetlinkError),
    #[error("{what}: {source}")]
    Ethtool {
        what: String,
        source: xsknet_sys::ethtool::EthtoolError,
    },
    #[error("{0}")]
    Other(String),
}

// One definition, shared with the daemon (which finds these veths at recovery).
pub use xsknet_proto::wire::{fnv1a64, host_ifname};

/// What ADD wants wired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkPlan {
    pub host_ifname: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    pub netns: PathBuf,
    pub mac: Option<MacAddr>,
    /// The interface MTU (both veth ends).
    pub mtu: u32,
    /// With a local MTU (issue 11): `mtu` is it, and the routes differ per destination.
    pub local_routes: Option<LocalRoutes>,
    pub ip: Ipv4Addr,
    pub disable_ipv6: bool,
}

/// Per-destination MTUs for a pod whose interface has the node-local MTU: this node's
/// pod CIDR via the gateway at the interface MTU, the default route (other nodes,
/// Services, the world) capped at `default_mtu` (`RTAX_MTU`, so TCP's MSS follows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalRoutes {
    pub pod_cidr: (Ipv4Addr, u8),
    pub default_mtu: u32,
}

/// What ADD wired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodLink {
    pub host_mac: String,
    pub pod_mac: String,
}

/// The pod interface as CHECK sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    pub mac: String,
    pub mtu: u32,
    pub up: bool,
    pub addresses: Vec<(Ipv4Addr, u8)>,
    /// `(dst, prefix, gateway)` of main-table routes through the interface.
    pub routes: Vec<(Ipv4Addr, u8, Option<Ipv4Addr>)>,
}

fn open_pod_netns(path: &Path) -> Result<std::os::fd::OwnedFd, WireError> {
    open_netns(path).map_err(|e| match &e {
        NetnsError::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            WireError::NetnsGone {
                path: path.to_path_buf(),
            }
        }
        _ => WireError::Netns(e),
    })
}

/// The pod routes: the gateway as a link-scope host route, the default via it and,
/// with a local MTU, this node's pod CIDR via it at the interface MTU while the
/// default route keeps the smaller one.
pub fn pod_routes(oif: u32, local: Option<LocalRoutes>) -> Vec<RouteSpec> {
    let via_gw = |dst, prefix_len, mtu| RouteSpec {
        dst,
        prefix_len,
        gateway: Some(POD_GATEWAY),
        oif,
        onlink: true,
        src: None,
        scope_link: false,
        mtu,
    };
    let mut routes = vec![
        RouteSpec {
            dst: POD_GATEWAY,
            prefix_len: 32,
            gateway: None,
            oif,
            onlink: false,
            src: None,
            scope_link: true,
            mtu: None,
        },
        via_gw(Ipv4Addr::UNSPECIFIED, 0, local.map(|l| l.default_mtu)),
    ];
    if let Some(l) = local {
        routes.push(via_gw(l.pod_cidr.0, l.pod_cidr.1, None));
    }
    routes
}

/// Creates and configures the veth; on failure nothing is left behind.
pub fn create_pod_link(plan: &LinkPlan) -> Result<PodLink, WireError> {
    let ns = open_pod_netns(&plan.netns)?;
    let mut nl = Netlink::new()?;
    nl.create_veth(&plan.host_ifname, &plan.ifname, Some(ns.as_fd()))?;
    let done = (|| {
        let host = nl
            .link_by_name(&plan.host_ifname)?
            .ok_or_else(|| WireError::Other(format!("veth {} vanished", plan.host_ifname)))?;
        nl.set_mtu(host.index, plan.mtu)?;
        let pod_mac = run_in_netns_fd(ns.as_fd(), || configure_pod_side(plan))??;
        nl.set_link_up(host.index, true)?;
        let host_mac = host.mac.map(|m| MacAddr(m).to_string()).unwrap_or_default();
        Ok(PodLink { host_mac, pod_mac })
    })();
    if done.is_err() {
        let _ = nl.delete_link(&plan.host_ifname);
    }
    done
}

fn configure_pod_side(plan: &LinkPlan) -> Result<String, WireError> {
    let mut nl = Netlink::new()?;
    let link = nl.link_by_name(&plan.ifname)?.ok_or_else(|| {
        WireError::Other(format!(
            "{} did not appear in the pod namespace",
            plan.ifname
        ))
    })?;
    if let Some(mac) = plan.mac {
        nl.set_mac(link.index, mac.octets())?;
    }
    nl.set_mtu(link.index, plan.mtu)?;
    if plan.disable_ipv6 {
        let key = format!("net/ipv6/conf/{}/disable_ipv6", plan.ifname);
        xsknet_sys::write_sysctl(&key, "1")
            .map_err(|e| WireError::Other(format!("disable IPv6 in the pod: {e}")))?;
    }
    nl.set_link_up(link.index, true)?;
    nl.add_address(link.index, plan.ip, 32)?;
    for r in pod_routes(link.index, plan.local_routes) {
        nl.add_route(&r)?;
    }
    xsknet_sys::ethtool::prepare_pod_interface(&plan.ifname).map_err(|source| {
        WireError::Ethtool {
            what: format!("turn off transmit offloads of {} in the pod", plan.ifname),
            source,
        }
    })?;
    let link = nl
        .link_by_index(link.index)?
        .ok_or_else(|| WireError::Other(format!("{} vanished", plan.ifname)))?;
    Ok(link.mac.map(|m| MacAddr(m).to_string()).unwrap_or_default())
}

/// Deletes the host end (the pod end goes with it). `Ok(false)`: it was not there.
pub fn delete_host_link(host_ifname: &str) -> Result<bool, WireError> {
    Ok(Netlink::new()?.delete_link(host_ifname)?)
}

/// Whether the node namespace has a link `name`.
pub fn host_link_exists(name: &str) -> Result<bool, WireError> {
    Ok(Netlink::new()?.link_by_name(name)?.is_some())
}

/// Reads `ifname` inside `netns`; `Ok(None)` when the interface does not exist.
pub fn inspect_pod(netns: &Path, ifname: &str) -> Result<Option<PodView>, WireError> {
    let ns = open_pod_netns(netns)?;
    run_in_netns_fd(ns.as_fd(), || -> Result<Option<PodView>, WireError> {
        let mut nl = Netlink::new()?;
        let Some(link) = nl.link_by_name(ifname)? else {
            return Ok(None);
        };
        let addresses = nl.list_addresses(link.index)?;
        let routes = nl
            .list_routes_v4()?
            .into_iter()
            .filter(|r| r.table == 254 && r.oif == Some(link.index))
            .map(|r| (r.dst, r.prefix_len, r.gateway))
            .collect();
        Ok(Some(PodView {
            mac: link.mac.map(|m| MacAddr(m).to_string()).unwrap_or_default(),
            mtu: link.mtu,
            up: link.up,
            addresses,
            routes,
        }))
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_stable_short_and_distinct() {
        let a = host_ifname("abc", "eth0");
        assert_eq!(a, host_ifname("abc", "eth0"));
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("xsk"));
        assert!(xsknet_sys::netlink::check_ifname(&a).is_ok());
        assert_ne!(a, host_ifname("abc", "eth1"));
        assert_ne!(host_ifname("ab", "ceth0"), host_ifname("abc", "eth0"));
        // Pinned: a change here renames every host veth across an upgrade.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn missing_netns_is_recognised() {
        let e = inspect_pod(Path::new("/nonexistent/xsknet-ns"), "eth0").unwrap_err();
        assert!(matches!(e, WireError::NetnsGone { .. }), "{e}");
    }
}
