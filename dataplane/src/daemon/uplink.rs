//! The uplink: the NIC VXLAN leaves and arrives on, as dataplane ports.
//!
//! With an `overlay` section in `node.yaml` the daemon, at start:
//!
//! 1. finds the uplink ([`discover`]): `uplink.interface`, or the interface of the main
//!    table's default route; its MAC, MTU, first IPv4 address (the underlay address)
//!    and RX queue count (ethtool channels, `/sys/class/net/IF/queues` as fallback);
//! 2. writes the XDP filter (underlay address, VXLAN port) and opens one AF_XDP socket
//!    per RX queue (queue q on worker q mod workers), registered in `MODE_VXLAN`: only
//!    VXLAN for this node reaches the dataplane, everything else the kernel, also while
//!    the daemon is down (its bpf_link goes with it);
//! 3. resolves each peer's underlay address to the MAC of its next hop ([`next_hop`]
//!    over the main routing table: the gateway of the longest matching route, or the
//!    address itself when it is on a connected subnet — on an L2 underlay such as veths
//!    on a bridge that is the peer's own uplink MAC), from the kernel's neighbour table
//!    over netlink. A missing entry is asked for by sending one empty UDP datagram to
//!    the peer's discard port (9), which makes the kernel ARP; the daemon looks again
//!    every [`RESOLVE_INTERVAL`] (and every [`RETRY_INTERVAL`] while some peer is
//!    unresolved) and republishes when a MAC changed.
//!
//! The overlay tables come from [`super::tables::overlay_tables`] with the peers as
//! node records (`overlay.peers` today, the datastore's view later). The first uplink
//! queue's socket transmits every encapsulated frame (workers hand theirs over).
//! Pod MTU = uplink MTU − 50, reported in `status.overlay.podMtu` for the CNI plugin.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use xsknet_proto::wire::OverlayStatus;
use xsknet_proto::MacAddr;

use crate::cluster::config::OverlayConfig;
use crate::cluster::NodeRecord;
use crate::config::{UplinkConfig, XdpMode};
use crate::loader::{AttachMode, LoaderError, UplinkCfg};
use crate::pipeline::encap::OVERHEAD;
use crate::sys::ethtool::{self, EthtoolError};
use crate::sys::netlink::{Netlink, NetlinkError, RouteInfo};
use crate::tables::{Overlay, PortId, PortInfo, PortKind, WorkerId};
use crate::xsk::{Port, PortConfig};

use super::ports::{PortsError, QueueKey};
use super::tables::{overlay_tables, OverlayTables};
use super::workers::WorkerError;
use super::Daemon;

/// How often peers' next-hop MACs are looked up again.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(10);
/// How often while some peer has no MAC yet.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// How long the start waits for the first resolution of every peer.
const START_RESOLVE_WAIT: Duration = Duration::from_secs(3);
/// Smallest uplink MTU: leaves the pods the IPv4 minimum of 576 after the overhead.
const MIN_UPLINK_MTU: u32 = 576 + 50;
/// What the pods' MTU loses to the tunnel (50): outer IPv4 + UDP + VXLAN + the inner
/// Ethernet header (the outer Ethernet header is not part of the uplink's MTU, the
/// inner one is part of the outer payload) — the same number as the encap overhead.
pub const MTU_OVERHEAD: u32 = OVERHEAD as u32;

/// The uplink could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("uplink: {what}: {source}")]
    Netlink {
        what: &'static str,
        source: NetlinkError,
    },
    #[error("uplink: no uplink.interface configured and the main table has no default route")]
    NoDefaultRoute,
    #[error("uplink: no interface {0}")]
    NoInterface(String),
    #[error("uplink: {0} has no IPv4 address (the underlay address VXLAN is sent from)")]
    NoAddress(String),
    #[error("uplink: {0} has no MAC address")]
    NoMac(String),
    #[error("uplink: {ifname} MTU {mtu} is below {MIN_UPLINK_MTU}")]
    Mtu { ifname: String, mtu: u32 },
    #[error("uplink: read the RX queues of {ifname}: {source}")]
    Queues {
        ifname: String,
        source: EthtoolError,
    },
    #[error("uplink: {0}")]
    Loader(#[from] LoaderError),
    #[error("uplink: {0}")]
    Ports(#[from] PortsError),
    #[error("uplink: {0}")]
    Worker(#[from] WorkerError),
}

/// The uplink as discovered, its sockets and what is known of the peers.
#[derive(Debug)]
pub struct Uplink {
    pub ifname: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub ip: Ipv4Addr,
    pub queues: u32,
    pub vtep_mac: [u8; 6],
    pub vni: u32,
    pub port: u16,
    /// One socket per RX queue, queue order.
    pub ports: Vec<PortId>,
    /// The other nodes (static peers today).
    pub peers: Vec<NodeRecord>,
    /// Underlay address → next-hop MAC, as last resolved.
    pub next_hops: BTreeMap<Ipv4Addr, [u8; 6]>,
    last_resolve: Option<Instant>,
}

/// Our VTEP MAC when none is configured: locally administered unicast `02:78:` + the
/// underlay address, so it is stable across restarts for as long as the address is.
pub fn derived_vtep_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x78, o[0], o[1], o[2], o[3]]
}

/// The next hop the kernel would use for `dst` leaving by `ifindex`: the gateway of the
/// longest-prefix main-table unicast route through that interface that holds `dst`,
/// or `dst` itself (a connected subnet, or no route at all: assume on-link).
pub fn next_hop(routes: &[RouteInfo], ifindex: u32, dst: Ipv4Addr) -> Ipv4Addr {
    let d = u32::from(dst);
    routes
        .iter()
        .filter(|r| r.table == 254 && r.route_type == 1 && r.oif == Some(ifindex))
        .filter(|r| {
            let mask = match r.prefix_len {
                0 => 0,
                p => u32::MAX << (32 - u32::from(p.min(32))),
            };
            d & mask == u32::from(r.dst) & mask
        })
        .max_by_key(|r| r.prefix_len)
        .and_then(|r| r.gateway)
        .unwrap_or(dst)
}

/// Find the uplink interface and its properties (module doc, step 1).
pub fn discover(
    nl: &mut Netlink,
    cfg: &UplinkConfig,
    overlay: &OverlayConfig,
) -> Result<Uplink, UplinkError> {
    let nlerr = |what| move |source| UplinkError::Netlink { what, source };
    let link = match &cfg.interface {
        Some(name) => nl
            .link_by_name(name)
            .map_err(nlerr("look up uplink.interface"))?
            .ok_or_else(|| UplinkError::NoInterface(name.clone()))?,
        None => {
            let routes = nl.list_routes_v4().map_err(nlerr("list routes"))?;
            let oif = routes
                .iter()
                .filter(|r| r.table == 254 && r.prefix_len == 0 && r.route_type == 1)
                .find_map(|r| r.oif)
                .ok_or(UplinkError::NoDefaultRoute)?;
            nl.link_by_index(oif)
                .map_err(nlerr("look up the default route's interface"))?
                .ok_or_else(|| UplinkError::NoInterface(format!("#{oif}")))?
        }
    };
    let mac = link
        .mac
        .ok_or_else(|| UplinkError::NoMac(link.name.clone()))?;
    if link.mtu < MIN_UPLINK_MTU {
        return Err(UplinkError::Mtu {
            ifname: link.name.clone(),
            mtu: link.mtu,
        });
    }
    let ip = nl
        .list_addresses(link.index)
        .map_err(nlerr("list the uplink's addresses"))?
        .into_iter()
        .map(|(a, _)| a)
        .find(|a| !a.is_loopback() && !a.is_link_local())
        .ok_or_else(|| UplinkError::NoAddress(link.name.clone()))?;
    let queues = ethtool::rx_queues(&link.name).map_err(|source| UplinkError::Queues {
        ifname: link.name.clone(),
        source,
    })?;
    Ok(Uplink {
        ifname: link.name.clone(),
        ifindex: link.index,
        mac,
        mtu: link.mtu,
        ip,
        queues,
        vtep_mac: overlay
            .vtep_mac
            .map_or_else(|| derived_vtep_mac(ip), MacAddr::octets),
        vni: overlay.vni,
        port: overlay.port,
        ports: Vec::new(),
        peers: overlay.peer_records(),
        next_hops: BTreeMap::new(),
        last_resolve: None,
    })
}

impl Uplink {
    /// The pods' MTU: the uplink's minus the VXLAN overhead.
    pub fn pod_mtu(&self) -> u32 {
        self.mtu - MTU_OVERHEAD
    }

    /// This node's tunnel parameters (None before the first socket is open).
    pub fn overlay(&self) -> Option<Overlay> {
        Some(Overlay {
            uplink: *self.ports.first()?,
            local_ip: u32::from(self.ip),
            vtep_mac: self.vtep_mac,
            vni: self.vni,
            dst_port: self.port,
            inner_mtu: u16::try_from(self.pod_mtu()).unwrap_or(u16::MAX),
        })
    }

    /// The overlay tables for the current peers and next hops.
    pub fn tables(&self, local_cidr: crate::config::Ipv4Cidr) -> Option<OverlayTables> {
        let local = self.overlay()?;
        Some(overlay_tables(local, local_cidr, &self.peers, |ip| {
            self.next_hops.get(&ip).copied()
        }))
    }

    fn unresolved(&self) -> bool {
        self.peers
            .iter()
            .any(|p| !self.next_hops.contains_key(&p.underlay_ip))
    }

    /// Whether a resolution is due now.
    pub fn resolve_due(&self) -> bool {
        let every = if self.unresolved() {
            RETRY_INTERVAL
        } else {
            RESOLVE_INTERVAL
        };
        self.last_resolve.is_none_or(|t| t.elapsed() >= every)
    }

    /// Look up every peer's next-hop MAC; probe those without one. Returns whether a
    /// MAC changed (the tables must be republished).
    pub fn resolve(&mut self, nl: &mut Netlink) -> Result<bool, NetlinkError> {
        self.last_resolve = Some(Instant::now());
        let routes = nl.list_routes_v4()?;
        let neigh: BTreeMap<Ipv4Addr, [u8; 6]> =
            nl.list_neighbours_v4(self.ifindex)?.into_iter().collect();
        let mut next = BTreeMap::new();
        for p in &self.peers {
            let hop = next_hop(&routes, self.ifindex, p.underlay_ip);
            match neigh.get(&hop) {
                Some(mac) => {
                    next.insert(p.underlay_ip, *mac);
                }
                None => probe(p.underlay_ip),
            }
        }
        let changed = next != self.next_hops;
        if changed {
            for (ip, mac) in &next {
                if self.next_hops.get(ip) != Some(mac) {
                    tracing::info!(underlay = %ip, next_hop_mac = %MacAddr(*mac), "overlay next hop resolved");
                }
            }
            self.next_hops = next;
        }
        Ok(changed)
    }

    /// The `status` view.
    pub fn status(&self) -> OverlayStatus {
        OverlayStatus {
            uplink: self.ifname.clone(),
            queues: self.ports.len() as u32,
            underlay_ip: Some(self.ip),
            vtep_mac: MacAddr(self.vtep_mac).to_string(),
            vni: self.vni,
            port: self.port,
            uplink_mtu: self.mtu,
            pod_mtu: self.pod_mtu(),
            nodes: self.peers.len(),
            nodes_resolved: self
                .peers
                .iter()
                .filter(|p| self.next_hops.contains_key(&p.underlay_ip))
                .count(),
        }
    }
}

/// Make the kernel resolve `ip`'s next hop: one empty datagram to its discard port.
/// Best effort; a failure only delays the resolution.
fn probe(ip: Ipv4Addr) {
    if let Ok(s) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) {
        let _ = s.send_to(&[], (ip, 9));
    }
}

impl Daemon {
    /// Set up the uplink and the overlay (module doc). Hooked into [`Daemon::start`]
    /// when `overlay` is configured; on error the caller shuts the daemon down.
    pub(super) fn start_uplink(&mut self) -> Result<(), UplinkError> {
        let Some(overlay) = self.cfg.overlay.clone() else {
            return Ok(());
        };
        let mut up = discover(&mut self.nl, &self.cfg.uplink, &overlay)?;
        if let Some(c) = &self.cluster {
            // Datastore mode: the registered VTEP MAC, the view's other nodes.
            up.vtep_mac = c.local.vtep_mac.octets();
            up.peers = c.peers();
        }
        self.ports.xdp().set_uplink(UplinkCfg {
            local_ip: up.ip,
            vxlan_port: up.port,
        })?;
        self.ports.set_uplink_mode(match self.cfg.uplink.xdp_mode {
            XdpMode::Native => AttachMode::Native,
            XdpMode::Skb => AttachMode::Skb,
        });
        let zero_copy = self.cfg.uplink.zero_copy;
        let workers = self.workers.len().max(1);
        for q in 0..up.queues {
            let info = PortInfo {
                kind: PortKind::Uplink,
                worker: (q as usize % workers) as WorkerId,
                mac: up.mac,
                peer_mac: [0; 6],
                ip: up.ip,
            };
            let key = QueueKey {
                ifindex: up.ifindex,
                queue: q,
            };
            // The tunnel carries at most the overlay MTU: no multi-buffer on the uplink.
            let cfg = &PortConfig {
                multi_buffer: false,
                ..self.port_cfg
            };
            let ifname = up.ifname.clone();
            let port = self.ports.open(&ifname, key, info, |id, counters| {
                Port::open_bound(id, &ifname, q, cfg, counters, zero_copy)
            })?;
            let id = port.id();
            if let Err(e) = self.workers.add_port(info.worker, port) {
                self.ports.close(id);
                self.ports.release(id);
                return Err(e.into());
            }
            up.ports.push(id);
        }
        // First resolution: wait a little for the peers' ARP answers.
        let deadline = Instant::now() + START_RESOLVE_WAIT;
        loop {
            if let Err(e) = up.resolve(&mut self.nl) {
                tracing::warn!(error = %e, "resolve overlay next hops");
            }
            if !up.unresolved() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::info!(
            uplink = %up.ifname,
            underlay_ip = %up.ip,
            queues = up.queues,
            vtep_mac = %MacAddr(up.vtep_mac),
            vni = up.vni,
            port = up.port,
            mtu = up.mtu,
            pod_mtu = up.pod_mtu(),
            peers = up.peers.len(),
            resolved = up.next_hops.len(),
            "uplink up"
        );
        self.uplink = Some(up);
        self.log_skipped_nodes();
        self.publish_and_wait()?;
        Ok(())
    }

    pub(super) fn log_skipped_nodes(&self) {
        let Some(up) = &self.uplink else { return };
        if let Some(t) = up.tables(self.cfg.pod_cidr) {
            for (name, why) in t.skipped {
                tracing::warn!(node = %name, reason = why, "node record not used");
            }
        }
    }

    /// Housekeeping: re-resolve next hops when due; republish when one changed.
    pub(super) fn uplink_housekeeping(&mut self) {
        let Some(up) = self.uplink.as_mut() else {
            return;
        };
        if !up.resolve_due() {
            return;
        }
        match up.resolve(&mut self.nl) {
            Ok(true) => {
                if let Err(e) = self.publish_and_wait() {
                    tracing::error!(error = %e, "publish overlay next hops");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "resolve overlay next hops"),
        }
    }

    /// The overlay part of the tables to publish.
    pub(super) fn overlay_tables(&self) -> Option<OverlayTables> {
        self.uplink.as_ref()?.tables(self.cfg.pod_cidr)
    }

    /// `status.overlay`.
    pub(super) fn overlay_status(&self) -> Option<OverlayStatus> {
        self.uplink.as_ref().map(Uplink::status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: [u8; 4], len: u8, gw: Option<[u8; 4]>, oif: u32) -> RouteInfo {
        RouteInfo {
            dst: dst.into(),
            prefix_len: len,
            gateway: gw.map(Into::into),
            oif: Some(oif),
            src: None,
            table: 254,
            scope: 0,
            protocol: 4,
            route_type: 1,
            onlink: false,
        }
    }

    #[test]
    fn next_hop_is_the_gateway_of_the_longest_match_or_the_address() {
        let routes = [
            route([0, 0, 0, 0], 0, Some([192, 168, 1, 254]), 2),
            route([192, 168, 1, 0], 24, None, 2),
            route([10, 9, 0, 0], 16, Some([192, 168, 1, 1]), 2),
            route([10, 9, 9, 0], 24, Some([172, 16, 0, 1]), 3),
        ];
        let hop = |d: [u8; 4]| next_hop(&routes, 2, d.into());
        assert_eq!(
            hop([192, 168, 1, 7]),
            Ipv4Addr::new(192, 168, 1, 7),
            "on-link"
        );
        assert_eq!(
            hop([10, 9, 9, 9]),
            Ipv4Addr::new(192, 168, 1, 1),
            "other oif ignored"
        );
        assert_eq!(
            hop([8, 8, 8, 8]),
            Ipv4Addr::new(192, 168, 1, 254),
            "default"
        );
        assert_eq!(
            next_hop(&[], 2, [1, 2, 3, 4].into()),
            Ipv4Addr::new(1, 2, 3, 4)
        );
    }

    #[test]
    fn derived_vtep_mac_is_unicast_local_and_follows_the_address() {
        let m = derived_vtep_mac(Ipv4Addr::new(192, 168, 7, 12));
        assert_eq!(m, [0x02, 0x78, 192, 168, 7, 12]);
        assert_eq!(m[0] & 1, 0, "unicast");
        assert_eq!(m[0] & 2, 2, "locally administered");
        assert_eq!(MTU_OVERHEAD, 50);
    }
}
