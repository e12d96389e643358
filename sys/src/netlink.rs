//! Synchronous rtnetlink client: links, veth pairs, IPv4 addresses and routes.
//!
//! [`Netlink`] owns one `NETLINK_ROUTE` socket, bound to the network namespace of the
//! thread that created it (for a pod's namespace use [`Netlink::new_in_netns`], which
//! creates the socket on a helper thread inside that namespace; the socket keeps the
//! namespace for its whole life). Every request carries a fresh sequence number and
//! `NLM_F_ACK`; replies with another sequence number are stale and skipped, dumps are
//! read until `NLMSG_DONE` and retried when the kernel flags them inconsistent
//! (`NLM_F_DUMP_INTR`). `NLMSG_ERROR` becomes an [`io::Error`] with the kernel's errno
//! plus the extended-ack text when the kernel gives one, wrapped in a
//! [`NetlinkError`] that says what was being done to what.
//!
//! This is setup and control-path code (CNI ADD/DEL, daemon start); it never runs per
//! packet. It talks to the kernel only through netlink, never by running `ip`.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric,
    RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use xsknet_proto::MacAddr;

use super::netns::{run_in_netns, NetnsError};

/// Receive buffer size. The kernel sizes dump skbs from the reader's buffer but caps
/// them at 32 KiB, so 64 KiB always holds a whole datagram.
const RECV_BUF_LEN: usize = 64 * 1024;
/// How often a dump is retried when the kernel reports it was interrupted by a change.
const DUMP_RETRIES: usize = 5;
/// Longest interface name the kernel accepts (`IFNAMSIZ - 1`).
pub const MAX_IFNAME_LEN: usize = 15;

const NLMSG_HDR_LEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_DUMP_INTR: u16 = 0x10;
/// In an `NLMSG_ERROR`: the echoed request was cut to its header (`NETLINK_CAP_ACK`).
const NLM_F_CAPPED: u16 = 0x100;
/// In an `NLMSG_ERROR`: extended-ack TLVs follow the echoed request.
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Errors of the rtnetlink client.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// Creating, binding or configuring the netlink socket failed.
    #[error("open NETLINK_ROUTE socket: {source}")]
    Socket {
        /// The socket call failure.
        source: io::Error,
    },
    /// Creating the socket inside another network namespace failed.
    #[error("open NETLINK_ROUTE socket in netns {path}: {source}")]
    Netns {
        /// The namespace file.
        path: PathBuf,
        /// Why the namespace could not be entered.
        source: NetnsError,
    },
    /// The kernel (or the socket) refused a request.
    #[error("{op}: {source}{}", kernel_msg_suffix(.kernel_msg))]
    Request {
        /// What was being done to what, e.g. `create veth xs1 (peer eth0)`.
        op: String,
        /// The errno the kernel answered with.
        source: io::Error,
        /// The kernel's extended-ack message, when it gave one.
        kernel_msg: Option<String>,
    },
    /// A reply could not be decoded.
    #[error("{op}: cannot decode kernel reply: {reason}")]
    Decode {
        /// What was being done to what.
        op: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// The caller passed something the kernel cannot accept (checked before sending).
    #[error("{op}: invalid argument: {reason}")]
    InvalidArgument {
        /// What was being done to what.
        op: String,
        /// What is wrong with the argument.
        reason: String,
    },
    /// A link that the operation needs does not exist.
    #[error("{op}: no such link")]
    NoSuchLink {
        /// What was being done to what.
        op: String,
    },
    /// The link exists but is not of the kind the operation needs.
    #[error("{op}: {reason}")]
    WrongLink {
        /// What was being done to what.
        op: String,
        /// Why the link does not fit.
        reason: String,
    },
}

fn kernel_msg_suffix(msg: &Option<String>) -> String {
    match msg {
        Some(m) => format!(" (kernel: {m})"),
        None => String::new(),
    }
}

impl NetlinkError {
    /// The kernel errno behind this error, if it came from the kernel.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::Socket { source } | Self::Request { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A network interface as `RTM_GETLINK` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index in the namespace the link was read from.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address, if the link has a 6-byte one.
    pub mac: Option<[u8; 6]>,
    /// MTU in bytes.
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// `IFLA_LINK`: for a veth the peer's ifindex (in the peer's namespace), for a
    /// vlan/macvlan the lower device.
    pub peer_index: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the namespace id (as seen from this namespace) where
    /// `peer_index` lives, when that is not this namespace.
    pub link_netnsid: Option<i32>,
    /// `IFLA_INFO_KIND`: `"veth"`, `"vxlan"`, ...; `None` for physical devices.
    pub kind: Option<String>,
}

/// An IPv4 route to install (main table). Installed with replace semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination network (host bits must be zero).
    pub dst: Ipv4Addr,
    /// Destination prefix length, 0..=32 (0 is the default route).
    pub prefix_len: u8,
    /// Next hop, if any.
    pub gateway: Option<Ipv4Addr>,
    /// Output interface index.
    pub oif: u32,
    /// `onlink`: the gateway is reachable on `oif` even without a covering subnet
    /// (how a pod reaches its link-local 169.254.1.1 gateway).
    pub onlink: bool,
    /// Preferred source address.
    pub src: Option<Ipv4Addr>,
    /// `scope link` instead of `scope global` (directly connected destination).
    pub scope_link: bool,
    /// The route's path MTU (`RTAX_MTU`, `ip route ... mtu N`): caps packets and TCP's
    /// MSS to this destination below the interface MTU. None = the interface's MTU.
    pub mtu: Option<u32>,
}

/// An IPv4 route as the kernel reports it (any table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    /// Destination network.
    pub dst: Ipv4Addr,
    /// Destination prefix length.
    pub prefix_len: u8,
    /// Next hop.
    pub gateway: Option<Ipv4Addr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Preferred source address.
    pub src: Option<Ipv4Addr>,
    /// Routing table id (254 = main, 255 = local).
    pub table: u32,
    /// `RT_SCOPE_*` (0 universe, 253 link, 254 host).
    pub scope: u8,
    /// `RTPROT_*` (2 kernel, 3 boot, 4 static).
    pub protocol: u8,
    /// `RTN_*` (1 unicast, 2 local, 3 broadcast, ...).
    pub route_type: u8,
    /// `RTNH_F_ONLINK` is set.
    pub onlink: bool,
}

impl RouteInfo {
    /// Whether this is the route `spec` describes (destination, gateway, device).
    pub fn matches(&self, spec: &RouteSpec) -> bool {
        self.dst == spec.dst
            && self.prefix_len == spec.prefix_len
            && self.gateway == spec.gateway
            && self.oif == Some(spec.oif)
    }
}

/// A kernel refusal before it is given its `op` context.
enum Failure {
    Kernel {
        source: io::Error,
        kernel_msg: Option<String>,
    },
    Decode(String),
}

impl Failure {
    fn errno(&self) -> Option<i32> {
        match self {
            Failure::Kernel { source, .. } => source.raw_os_error(),
            Failure::Decode(_) => None,
        }
    }

    fn during(self, op: impl Into<String>) -> NetlinkError {
        match self {
            Failure::Kernel { source, kernel_msg } => NetlinkError::Request {
                op: op.into(),
                source,
                kernel_msg,
            },
            Failure::Decode(reason) => NetlinkError::Decode {
                op: op.into(),
                reason,
            },
        }
    }
}

impl From<io::Error> for Failure {
    fn from(source: io::Error) -> Self {
        Failure::Kernel {
            source,
            kernel_msg: None,
        }
    }
}

/// A synchronous rtnetlink client bound to one network namespace.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink")
            .field("fd", &self.socket.as_raw_fd())
            .field("seq", &self.seq)
            .finish()
    }
}

impl Netlink {
    /// Opens a rtnetlink socket in the calling thread's current network namespace.
    pub fn new() -> Result<Netlink, NetlinkError> {
        let socket = || -> io::Result<Socket> {
            let mut socket = Socket::new(NETLINK_ROUTE)?;
            socket.bind_auto()?;
            socket.connect(&SocketAddr::new(0, 0))?;
            // Errors echo only the request header, and carry the kernel's reason text.
            socket.set_cap_ack(true)?;
            socket.set_ext_ack(true)?;
            Ok(socket)
        };
        let socket = socket().map_err(|source| NetlinkError::Socket { source })?;
        Ok(Netlink {
            socket,
            seq: 0,
            buf: vec![0; RECV_BUF_LEN],
        })
    }

    /// Opens a rtnetlink socket inside the network namespace at `netns_path`, without
    /// moving the calling thread. The returned client manages that namespace.
    pub fn new_in_netns(netns_path: &Path) -> Result<Netlink, NetlinkError> {
        run_in_netns(netns_path, Netlink::new).map_err(|source| NetlinkError::Netns {
            path: netns_path.to_path_buf(),
            source,
        })?
    }

    // ---- links -------------------------------------------------------------------

    /// The link called `name`, or `None` if there is none.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<LinkInfo>, NetlinkError> {
        let op = || format!("get link {name}");
        check_ifname(name).map_err(|reason| NetlinkError::InvalidArgument { op: op(), reason })?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        self.get_link(msg).map_err(|f| f.during(op()))
    }

    /// The link with ifindex `index`, or `None` if there is none.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<LinkInfo>, NetlinkError> {
        self.link_by_index_at(index, None)
    }

    /// The link with ifindex `index` in the namespace that *this* namespace knows as
    /// `netnsid` (`IFLA_TARGET_NETNSID`), or in this namespace for `None`.
    pub fn link_by_index_at(
        &mut self,
        index: u32,
        netnsid: Option<i32>,
    ) -> Result<Option<LinkInfo>, NetlinkError> {
        // The kernel's ifindex is a positive C int: 0 means "look up by name" and larger
        // values are refused with EINVAL, so neither can name a link.
        if index == 0 || index > i32::MAX as u32 {
            return Ok(None);
        }
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if let Some(id) = netnsid {
            msg.attributes.push(LinkAttribute::IfNetnsId(id));
        }
        self.get_link(msg).map_err(|f| match netnsid {
            Some(id) => f.during(format!("get link #{index} in netnsid {id}")),
            None => f.during(format!("get link #{index}")),
        })
    }

    /// All links of this namespace.
    pub fn list_links(&mut self) -> Result<Vec<LinkInfo>, NetlinkError> {
        let replies = self
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .map_err(|f| f.during("list links"))?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_info_from_message(l)),
                _ => None,
            })
            .collect())
    }

    fn get_link(&mut self, msg: LinkMessage) -> Result<Option<LinkInfo>, Failure> {
        match self.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_info_from_message(l)),
                _ => None,
            })),
            Err(f) if f.errno() == Some(libc::ENODEV) => Ok(None),
            Err(f) => Err(f),
        }
    }

    /// Creates a veth pair `name` <-> `peer_name`. With `peer_netns`, the peer is
    /// created directly inside that namespace (`IFLA_NET_NS_FD` in the peer info), so
    /// it never appears in this one. Fails with `EEXIST` if either name is taken.
    pub fn create_veth(
        &mut self,
        name: &str,
        peer_name: &str,
        peer_netns: Option<BorrowedFd<'_>>,
    ) -> Result<(), NetlinkError> {
        let op = || format!("create veth {name} (peer {peer_name})");
        for n in [name, peer_name] {
            check_ifname(n).map_err(|reason| NetlinkError::InvalidArgument { op: op(), reason })?;
        }
        let msg = veth_create_message(name, peer_name, peer_netns.map(|fd| fd.as_raw_fd()));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
            .map_err(|f| f.during(op()))
    }

    /// Deletes link `name` (for a veth, both ends go). Returns `false` if it did not
    /// exist, which is not an error.
    pub fn delete_link(&mut self, name: &str) -> Result<bool, NetlinkError> {
        let op = || format!("delete link {name}");
        check_ifname(name).map_err(|reason| NetlinkError::InvalidArgument { op: op(), reason })?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.request(RouteNetlinkMessage::DelLink(msg), 0) {
            Ok(_) => Ok(true),
            Err(f) if f.errno() == Some(libc::ENODEV) => Ok(false),
            Err(f) => Err(f.during(op())),
        }
    }

    /// Sets the link administratively up or down.
    pub fn set_link_up(&mut self, index: u32, up: bool) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.change_mask = LinkFlags::Up;
        if up {
            msg.header.flags = LinkFlags::Up;
        }
        self.set_link(msg, || {
            format!("set link #{index} {}", if up { "up" } else { "down" })
        })
    }

    /// Sets the link's MTU.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.set_link(msg, || format!("set mtu {mtu} on link #{index}"))
    }

    /// Sets the link's MAC address.
    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.set_link(msg, || format!("set mac {} on link #{index}", MacAddr(mac)))
    }

    /// Moves the link into the namespace `netns`, renaming it to `new_name` on the way
    /// (the rename happens as part of the move, so the old name may already exist
    /// there). After this the link is no longer visible through this client.
    pub fn set_netns(
        &mut self,
        index: u32,
        netns: BorrowedFd<'_>,
        new_name: Option<&str>,
    ) -> Result<(), NetlinkError> {
        let op = || match new_name {
            Some(n) => format!(
                "move link #{index} to netns fd {} as {n}",
                netns.as_raw_fd()
            ),
            None => format!("move link #{index} to netns fd {}", netns.as_raw_fd()),
        };
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes
            .push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
        if let Some(n) = new_name {
            check_ifname(n).map_err(|reason| NetlinkError::InvalidArgument { op: op(), reason })?;
            msg.attributes.push(LinkAttribute::IfName(n.to_owned()));
        }
        self.set_link(msg, op)
    }

    fn set_link(
        &mut self,
        msg: LinkMessage,
        op: impl FnOnce() -> String,
    ) -> Result<(), NetlinkError> {
        if msg.header.index == 0 {
            return Err(NetlinkError::InvalidArgument {
                op: op(),
                reason: "ifindex 0".to_owned(),
            });
        }
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
            .map(drop)
            .map_err(|f| f.during(op()))
    }

    /// The MAC address of the other end of veth `host_ifname`, even when that end
    /// lives in another namespace: reads `IFLA_LINK` and `IFLA_LINK_NETNSID` of the
    /// host end, then asks for that ifindex with `IFLA_TARGET_NETNSID`.
    pub fn peer_mac(&mut self, host_ifname: &str) -> Result<[u8; 6], NetlinkError> {
        let op = || format!("read peer mac of {host_ifname}");
        let host = self
            .link_by_name(host_ifname)?
            .ok_or_else(|| NetlinkError::NoSuchLink { op: op() })?;
        if host.kind.as_deref() != Some("veth") {
            return Err(NetlinkError::WrongLink {
                op: op(),
                reason: format!(
                    "not a veth (kind {})",
                    host.kind.as_deref().unwrap_or("none")
                ),
            });
        }
        let peer_index = host.peer_index.ok_or_else(|| NetlinkError::WrongLink {
            op: op(),
            reason: "veth reports no peer (IFLA_LINK missing)".to_owned(),
        })?;
        let peer = self
            .link_by_index_at(peer_index, host.link_netnsid)?
            .ok_or_else(|| NetlinkError::NoSuchLink { op: op() })?;
        peer.mac.ok_or_else(|| NetlinkError::WrongLink {
            op: op(),
            reason: format!("peer {} has no 6-byte MAC", peer.name),
        })
    }

    // ---- addresses ---------------------------------------------------------------

    /// Adds `addr/prefix_len` to link `index`. Already present is fine.
    pub fn add_address(
        &mut self,
        index: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let op = || format!("add address {addr}/{prefix_len} to link #{index}");
        let msg = address_message(index, addr, prefix_len)
            .map_err(|reason| NetlinkError::InvalidArgument { op: op(), reason })?;
        match self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(_) => Ok(()),
            Err(f) if f.errno() == Some(libc::EEXIST) => Ok(()),
            Err(f) => Err(f.during(op())),
        }
    }

    /// Removes `addr/prefix_len` from link `index`. Returns `false` if it was not there.
    pub fn del_address(
        &mut self,
        index: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<bool, NetlinkError> {
        let op = || format!("delete address {addr}/{prefix_len} from link #{index}");
        let msg = address_message(index, addr, prefix_len)
            .map_err(|reason| NetlinkError::InvalidArgument { op: op(), reason })?;
        match self.request(RouteNetlinkMessage::DelAddress(msg), 0) {
            Ok(_) => Ok(true),
            Err(f) if f.errno() == Some(libc::EADDRNOTAVAIL) => Ok(false),
            Err(f) => Err(f.during(op())),
        }
    }

    /// The IPv4 addresses (with prefix length) on link `index`.
    pub fn list_addresses(&mut self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
        let mut req = AddressMessage::default();
        req.header.family = AddressFamily::Inet;
        let replies = self
            .dump(RouteNetlinkMessage::GetAddress(req))
            .map_err(|f| f.during(format!("list addresses of link #{index}")))?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    address_from_message(a)
                }
                _ => None,
            })
            .collect())
    }

    // ---- neighbours --------------------------------------------------------------

    /// The usable IPv4 neighbour entries of link `index` (ARP table): address and
    /// MAC of every entry that is reachable, stale, delayed, probing, permanent or
    /// noarp — the states in which the kernel itself would send to that MAC.
    pub fn list_neighbours_v4(
        &mut self,
        index: u32,
    ) -> Result<Vec<(Ipv4Addr, [u8; 6])>, NetlinkError> {
        let mut req = NeighbourMessage::default();
        req.header.family = AddressFamily::Inet;
        let replies = self
            .dump(RouteNetlinkMessage::GetNeighbour(req))
            .map_err(|f| f.during(format!("list neighbours of link #{index}")))?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == index => {
                    neighbour_from_message(n)
                }
                _ => None,
            })
            .collect())
    }

    // ---- routes ------------------------------------------------------------------

    /// Installs `spec` in the main table, replacing a route to the same destination.
    pub fn add_route(&mut self, spec: &RouteSpec) -> Result<(), NetlinkError> {
        let op = || format!("add route {}", describe_route(spec));
        let msg = route_message(spec, false)
            .map_err(|reason| NetlinkError::InvalidArgument { op: op(), reason })?;
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
        .map_err(|f| f.during(op()))
    }

    /// Removes the route `spec` from the main table. Returns `false` if there was no
    /// such route, which is not an error.
    pub fn del_route(&mut self, spec: &RouteSpec) -> Result<bool, NetlinkError> {
        let op = || format!("delete route {}", describe_route(spec));
        let msg = route_message(spec, true)
            .map_err(|reason| NetlinkError::InvalidArgument { op: op(), reason })?;
        match self.request(RouteNetlinkMessage::DelRoute(msg), 0) {
            Ok(_) => Ok(true),
            Err(f) if matches!(f.errno(), Some(libc::ESRCH) | Some(libc::ENOENT)) => Ok(false),
            Err(f) => Err(f.during(op())),
        }
    }

    /// All IPv4 routes of all tables.
    pub fn list_routes_v4(&mut self) -> Result<Vec<RouteInfo>, NetlinkError> {
        let mut req = RouteMessage::default();
        req.header.address_family = AddressFamily::Inet;
        let replies = self
            .dump(RouteNetlinkMessage::GetRoute(req))
            .map_err(|f| f.during("list IPv4 routes"))?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => route_info_from_message(r),
                _ => None,
            })
            .collect())
    }

    // ---- transport ---------------------------------------------------------------

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        if self.seq == 0 {
            self.seq = 1;
        }
        self.seq
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<u32, Failure> {
        let seq = self.next_seq();
        let bytes = serialize_request(msg, flags, seq);
        let sent = self.socket.send(&bytes, 0)?;
        if sent != bytes.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short netlink send").into());
        }
        Ok(seq)
    }

    /// Sends a non-dump request with `NLM_F_ACK` and collects replies until the ack.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, Failure> {
        let seq = self.send(msg, flags | NLM_F_ACK)?;
        self.collect(seq, false)
    }

    /// Sends a dump request and collects every part; retries an interrupted dump.
    fn dump(&mut self, msg: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>, Failure> {
        let mut attempt = 0;
        loop {
            let seq = self.send(msg.clone(), NLM_F_DUMP)?;
            match self.collect(seq, true) {
                Err(f) if f.errno() == Some(libc::EINTR) && attempt + 1 < DUMP_RETRIES => {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn collect(&mut self, seq: u32, dump: bool) -> Result<Vec<RouteNetlinkMessage>, Failure> {
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            let n = loop {
                match self.socket.recv(&mut &mut self.buf[..], libc::MSG_TRUNC) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            if n > self.buf.len() {
                return Err(Failure::Decode(format!(
                    "reply of {n} bytes exceeds the {} byte buffer",
                    self.buf.len()
                )));
            }
            for frame in Frames::new(&self.buf[..n]) {
                let frame = frame.map_err(Failure::Decode)?;
                if frame.seq != seq {
                    continue; // a stale reply to an earlier request
                }
                match frame.kind {
                    NLMSG_NOOP => {}
                    NLMSG_ERROR => {
                        let (code, kernel_msg) = parse_error(&frame).map_err(Failure::Decode)?;
                        return if code == 0 {
                            Ok(out)
                        } else {
                            Err(Failure::Kernel {
                                source: io::Error::from_raw_os_error(code.saturating_neg()),
                                kernel_msg,
                            })
                        };
                    }
                    NLMSG_DONE => {
                        let code = frame.payload_i32().unwrap_or(0);
                        if code < 0 {
                            return Err(io::Error::from_raw_os_error(code.saturating_neg()).into());
                        }
                        if interrupted {
                            return Err(io::Error::from_raw_os_error(libc::EINTR).into());
                        }
                        return Ok(out);
                    }
                    NLMSG_OVERRUN => {
                        return Err(Failure::Decode("netlink overrun".to_owned()));
                    }
                    _ => {
                        if frame.flags & NLM_F_DUMP_INTR != 0 {
                            interrupted = true;
                        }
                        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(frame.bytes) {
                            Ok(m) => {
                                if let NetlinkPayload::InnerMessage(inner) = m.payload {
                                    out.push(inner);
                                }
                            }
                            // One odd object (a link type this crate cannot parse)
                            // must not hide every other one from a listing.
                            Err(e) if dump => tracing::warn!(
                                msg_type = frame.kind,
                                "skipping undecodable rtnetlink message: {e}"
                            ),
                            Err(e) => return Err(Failure::Decode(e.to_string())),
                        }
                    }
                }
            }
        }
    }
}

// ---- framing ---------------------------------------------------------------------

/// One netlink message inside a received datagram.
struct Frame<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    /// The whole message, header included.
    bytes: &'a [u8],
}

impl Frame<'_> {
    fn payload_i32(&self) -> Option<i32> {
        let b = self.bytes.get(NLMSG_HDR_LEN..NLMSG_HDR_LEN + 4)?;
        Some(i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Splits a datagram into netlink messages, checking every length.
struct Frames<'a> {
    rest: &'a [u8],
}

impl<'a> Frames<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Frames { rest: buf }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some(hdr) = self.rest.get(..NLMSG_HDR_LEN) else {
            self.rest = &[];
            return Some(Err("truncated netlink header".to_owned()));
        };
        let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        if len < NLMSG_HDR_LEN || len > self.rest.len() {
            self.rest = &[];
            return Some(Err(format!("bad netlink message length {len}")));
        }
        let frame = Frame {
            kind: u16::from_ne_bytes([hdr[4], hdr[5]]),
            flags: u16::from_ne_bytes([hdr[6], hdr[7]]),
            seq: u32::from_ne_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]),
            bytes: &self.rest[..len],
        };
        let aligned = len.saturating_add(3) & !3;
        self.rest = self.rest.get(aligned..).unwrap_or(&[]);
        Some(Ok(frame))
    }
}

/// Decodes an `NLMSG_ERROR`: the (negative) errno or 0 for an ack, and the
/// extended-ack message if present.
fn parse_error(frame: &Frame<'_>) -> Result<(i32, Option<String>), String> {
    let code = frame
        .payload_i32()
        .ok_or_else(|| "truncated NLMSG_ERROR".to_owned())?;
    if frame.flags & NLM_F_ACK_TLVS == 0 {
        return Ok((code, None));
    }
    // After the errno comes the request's header, plus its payload unless capped.
    let orig_start = NLMSG_HDR_LEN + 4;
    let orig_len = if frame.flags & NLM_F_CAPPED != 0 {
        NLMSG_HDR_LEN
    } else {
        match frame.bytes.get(orig_start..orig_start + 4) {
            Some(b) => u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize,
            None => return Ok((code, None)),
        }
    };
    let mut tlvs = frame
        .bytes
        .get(orig_start.saturating_add(orig_len.saturating_add(3) & !3)..)
        .unwrap_or(&[]);
    let mut msg = None;
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            break;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &tlvs[4..len];
            let text = text.split(|&b| b == 0).next().unwrap_or(&[]);
            msg = Some(String::from_utf8_lossy(text).into_owned());
        }
        tlvs = tlvs.get((len + 3) & !3..).unwrap_or(&[]);
    }
    Ok((code, msg))
}

fn serialize_request(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
    packet.header.flags = NLM_F_REQUEST | flags;
    packet.header.sequence_number = seq;
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    bytes
}

// ---- message building and reading (pure, unit-tested) ----------------------------

/// Checks a name the way the kernel's `dev_valid_name` does, so a bad name is a
/// clear error instead of a truncated or rejected request.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty interface name".to_owned());
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(format!(
            "interface name {name:?} is longer than {MAX_IFNAME_LEN} bytes"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("interface name {name:?} is reserved"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return Err(format!(
            "interface name {name:?} contains '/', ':', NUL or whitespace"
        ));
    }
    Ok(())
}

fn veth_create_message(name: &str, peer_name: &str, peer_netns: Option<RawFd>) -> LinkMessage {
    let mut peer = LinkMessage::default();
    peer.attributes
        .push(LinkAttribute::IfName(peer_name.to_owned()));
    if let Some(fd) = peer_netns {
        peer.attributes.push(LinkAttribute::NetNsFd(fd));
    }
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        NlLinkInfo::Kind(InfoKind::Veth),
        NlLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    msg
}

fn link_info_from_message(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        peer_index: None,
        link_netnsid: None,
        kind: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => info.name.clone_from(n),
            LinkAttribute::Address(a) => info.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
            LinkAttribute::Mtu(m) => info.mtu = *m,
            LinkAttribute::Link(l) if *l != 0 => info.peer_index = Some(*l),
            LinkAttribute::LinkNetNsId(id) => info.link_netnsid = Some(*id),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let NlLinkInfo::Kind(k) = i {
                        info.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    info
}

fn address_message(index: u32, addr: Ipv4Addr, prefix_len: u8) -> Result<AddressMessage, String> {
    if prefix_len > 32 {
        return Err(format!("prefix length {prefix_len} > 32"));
    }
    if index == 0 {
        return Err("ifindex 0".to_owned());
    }
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix_len;
    msg.header.index = index;
    msg.header.scope = AddressScope::Universe;
    msg.attributes
        .push(AddressAttribute::Local(IpAddr::V4(addr)));
    msg.attributes
        .push(AddressAttribute::Address(IpAddr::V4(addr)));
    Ok(msg)
}

fn neighbour_from_message(msg: &NeighbourMessage) -> Option<(Ipv4Addr, [u8; 6])> {
    let usable = matches!(
        msg.header.state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    );
    if !usable {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(*a),
            NeighbourAttribute::LinkLocalAddress(b) => mac = <[u8; 6]>::try_from(&b[..]).ok(),
            _ => {}
        }
    }
    Some((ip?, mac?))
}

fn address_from_message(msg: &AddressMessage) -> Option<(Ipv4Addr, u8)> {
    if msg.header.family != AddressFamily::Inet {
        return None;
    }
    // For IPv4, IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer
    // on point-to-point links, so it is only the fallback.
    let mut local = None;
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(IpAddr::V4(a)) => local = Some(*a),
            AddressAttribute::Address(IpAddr::V4(a)) => address = Some(*a),
            _ => {}
        }
    }
    local.or(address).map(|a| (a, msg.header.prefix_len))
}

fn route_message(spec: &RouteSpec, for_delete: bool) -> Result<RouteMessage, String> {
    if spec.prefix_len > 32 {
        return Err(format!("prefix length {} > 32", spec.prefix_len));
    }
    if spec.oif == 0 {
        return Err("output ifindex 0".to_owned());
    }
    let mut msg = RouteMessage::default();
    let h = &mut msg.header;
    h.address_family = AddressFamily::Inet;
    h.destination_prefix_length = spec.prefix_len;
    h.table = RouteHeader::RT_TABLE_MAIN;
    if for_delete {
        // The kernel treats these as wildcards when deleting, so a route we installed
        // is found whatever scope/protocol the kernel settled on.
        h.protocol = RouteProtocol::Unspec;
        h.scope = RouteScope::NoWhere;
        h.kind = RouteType::Unspec;
    } else {
        h.protocol = RouteProtocol::Static;
        h.scope = if spec.scope_link {
            RouteScope::Link
        } else {
            RouteScope::Universe
        };
        h.kind = RouteType::Unicast;
    }
    if spec.onlink {
        h.flags |= RouteFlags::Onlink;
    }
    if spec.prefix_len > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(spec.dst)));
    }
    if let Some(gw) = spec.gateway {
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
    }
    if let Some(src) = spec.src {
        msg.attributes
            .push(RouteAttribute::PrefSource(RouteAddress::Inet(src)));
    }
    msg.attributes.push(RouteAttribute::Oif(spec.oif));
    if let (Some(mtu), false) = (spec.mtu, for_delete) {
        if !(68..=65535).contains(&mtu) {
            return Err(format!("route MTU {mtu} outside 68..=65535"));
        }
        msg.attributes
            .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
    }
    Ok(msg)
}

fn route_info_from_message(msg: &RouteMessage) -> Option<RouteInfo> {
    let h = &msg.header;
    if h.address_family != AddressFamily::Inet {
        return None;
    }
    let mut info = RouteInfo {
        dst: Ipv4Addr::UNSPECIFIED,
        prefix_len: h.destination_prefix_length,
        gateway: None,
        oif: None,
        src: None,
        table: u32::from(h.table),
        scope: u8::from(h.scope),
        protocol: u8::from(h.protocol),
        route_type: u8::from(h.kind),
        onlink: h.flags.contains(RouteFlags::Onlink),
    };
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => info.dst = *a,
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => info.gateway = Some(*a),
            RouteAttribute::PrefSource(RouteAddress::Inet(a)) => info.src = Some(*a),
            RouteAttribute::Oif(i) => info.oif = Some(*i),
            RouteAttribute::Table(t) => info.table = *t,
            _ => {}
        }
    }
    Some(info)
}

fn describe_route(spec: &RouteSpec) -> String {
    let mut s = format!("{}/{}", spec.dst, spec.prefix_len);
    if let Some(gw) = spec.gateway {
        s.push_str(&format!(" via {gw}"));
    }
    s.push_str(&format!(" dev #{}", spec.oif));
    if spec.onlink {
        s.push_str(" onlink");
    }
    if let Some(src) = spec.src {
        s.push_str(&format!(" src {src}"));
    }
    if spec.scope_link {
        s.push_str(" scope link");
    }
    if let Some(mtu) = spec.mtu {
        s.push_str(&format!(" mtu {mtu}"));
    }
    s
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff` (the form `ip link` prints): [`MacAddr`]'s
/// `Display`, for callers holding raw bytes.
pub fn format_mac(mac: &[u8; 6]) -> String {
    MacAddr(*mac).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(msg: RouteNetlinkMessage, flags: u16) -> (Vec<u8>, RouteNetlinkMessage) {
        let bytes = serialize_request(msg, flags, 7);
        let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        assert_eq!(parsed.header.sequence_number, 7);
        assert_eq!(parsed.header.flags, NLM_F_REQUEST | flags);
        match parsed.payload {
            NetlinkPayload::InnerMessage(m) => (bytes, m),
            other => panic!("unexpected payload {other:?}"),
        }
    }

    /// Finds the first attribute of type `kind` in a run of netlink attributes.
    fn find_attr(mut attrs: &[u8], kind: u16) -> Option<&[u8]> {
        while attrs.len() >= 4 {
            let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
            let k = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
            if len < 4 || len > attrs.len() {
                return None;
            }
            if k == kind {
                return Some(&attrs[4..len]);
            }
            attrs = attrs.get((len + 3) & !3..).unwrap_or(&[]);
        }
        None
    }

    #[test]
    fn veth_message_nests_peer_with_netns_fd() {
        let msg = veth_create_message("xs1h", "eth0", Some(42));
        let (bytes, _) = roundtrip(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
        );
        // nlmsghdr(16) + ifinfomsg(16), then attributes.
        let attrs = &bytes[32..];
        assert_eq!(find_attr(attrs, 3), Some(&b"xs1h\0"[..])); // IFLA_IFNAME
        let linkinfo = find_attr(attrs, 18).expect("IFLA_LINKINFO"); // IFLA_LINKINFO
        assert_eq!(find_attr(linkinfo, 1), Some(&b"veth\0"[..])); // IFLA_INFO_KIND
        let data = find_attr(linkinfo, 2).expect("IFLA_INFO_DATA");
        let peer = find_attr(data, 1).expect("VETH_INFO_PEER");
        // The peer is a full ifinfomsg followed by its own attributes.
        let peer_attrs = &peer[16..];
        assert_eq!(find_attr(peer_attrs, 3), Some(&b"eth0\0"[..]));
        assert_eq!(
            find_attr(peer_attrs, 28), // IFLA_NET_NS_FD
            Some(&42i32.to_ne_bytes()[..])
        );
    }

    #[test]
    fn veth_message_without_netns_has_no_fd() {
        let msg = veth_create_message("a", "b", None);
        let (bytes, _) = roundtrip(RouteNetlinkMessage::NewLink(msg), 0);
        let linkinfo = find_attr(&bytes[32..], 18).unwrap();
        let peer = find_attr(find_attr(linkinfo, 2).unwrap(), 1).unwrap();
        assert_eq!(find_attr(&peer[16..], 28), None);
    }

    #[test]
    fn onlink_default_route_message() {
        let spec = RouteSpec {
            dst: Ipv4Addr::UNSPECIFIED,
            prefix_len: 0,
            gateway: Some(Ipv4Addr::new(169, 254, 1, 1)),
            oif: 5,
            onlink: true,
            src: None,
            scope_link: false,
            mtu: None,
        };
        let (bytes, parsed) = roundtrip(
            RouteNetlinkMessage::NewRoute(route_message(&spec, false).unwrap()),
            NLM_F_CREATE | NLM_F_REPLACE,
        );
        // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags(u32)
        let rtm = &bytes[16..28];
        assert_eq!(rtm[0], libc::AF_INET as u8);
        assert_eq!(rtm[1], 0);
        assert_eq!(rtm[4], 254); // main table
        assert_eq!(rtm[6], 0); // scope universe
        assert_eq!(rtm[7], 1); // RTN_UNICAST
        assert_eq!(u32::from_ne_bytes([rtm[8], rtm[9], rtm[10], rtm[11]]), 4); // RTNH_F_ONLINK
        let attrs = &bytes[28..];
        assert_eq!(
            find_attr(attrs, 1),
            None,
            "default route carries no RTA_DST"
        );
        assert_eq!(find_attr(attrs, 5), Some(&[169, 254, 1, 1][..])); // RTA_GATEWAY
        assert_eq!(find_attr(attrs, 4), Some(&5u32.to_ne_bytes()[..])); // RTA_OIF
        let RouteNetlinkMessage::NewRoute(r) = parsed else {
            panic!("not a route")
        };
        let info = route_info_from_message(&r).unwrap();
        assert!(info.matches(&spec));
        assert!(info.onlink);
    }

    #[test]
    fn scope_link_host_route_message() {
        let spec = RouteSpec {
            dst: Ipv4Addr::new(10, 1, 2, 3),
            prefix_len: 32,
            gateway: None,
            oif: 9,
            onlink: false,
            src: Some(Ipv4Addr::new(10, 1, 0, 1)),
            scope_link: true,
            mtu: None,
        };
        let (bytes, _) = roundtrip(
            RouteNetlinkMessage::NewRoute(route_message(&spec, false).unwrap()),
            0,
        );
        assert_eq!(bytes[16 + 1], 32);
        assert_eq!(bytes[16 + 6], 253); // RT_SCOPE_LINK
        let attrs = &bytes[28..];
        assert_eq!(find_attr(attrs, 1), Some(&[10, 1, 2, 3][..]));
        assert_eq!(find_attr(attrs, 7), Some(&[10, 1, 0, 1][..])); // RTA_PREFSRC
    }

    #[test]
    fn delete_route_uses_wildcards() {
        let spec = RouteSpec {
            dst: Ipv4Addr::new(10, 0, 0, 0),
            prefix_len: 8,
            gateway: None,
            oif: 3,
            onlink: false,
            src: None,
            scope_link: true,
            mtu: None,
        };
        let bytes = serialize_request(
            RouteNetlinkMessage::DelRoute(route_message(&spec, true).unwrap()),
            0,
            1,
        );
        let rtm = &bytes[16..28];
        assert_eq!(rtm[5], 0, "protocol unspec");
        assert_eq!(rtm[6], 255, "scope nowhere");
        assert_eq!(rtm[7], 0, "type unspec");
    }

    #[test]
    fn bad_route_and_address_arguments_are_rejected() {
        let mut spec = RouteSpec {
            dst: Ipv4Addr::UNSPECIFIED,
            prefix_len: 33,
            gateway: None,
            oif: 1,
            onlink: false,
            src: None,
            scope_link: false,
            mtu: None,
        };
        assert!(route_message(&spec, false).is_err());
        spec.prefix_len = 0;
        spec.oif = 0;
        assert!(route_message(&spec, false).is_err());
        assert!(address_message(1, Ipv4Addr::LOCALHOST, 40).is_err());
        assert!(address_message(0, Ipv4Addr::LOCALHOST, 8).is_err());
    }

    #[test]
    fn address_message_sets_local_and_address() {
        let msg = address_message(4, Ipv4Addr::new(10, 9, 8, 7), 32).unwrap();
        let (bytes, parsed) = roundtrip(RouteNetlinkMessage::NewAddress(msg), 0);
        // ifaddrmsg: family, prefixlen, flags, scope, index(u32)
        assert_eq!(bytes[16], libc::AF_INET as u8);
        assert_eq!(bytes[17], 32);
        assert_eq!(&bytes[20..24], &4u32.to_ne_bytes());
        let attrs = &bytes[24..];
        assert_eq!(find_attr(attrs, 2), Some(&[10, 9, 8, 7][..])); // IFA_LOCAL
        assert_eq!(find_attr(attrs, 1), Some(&[10, 9, 8, 7][..])); // IFA_ADDRESS
        let RouteNetlinkMessage::NewAddress(a) = parsed else {
            panic!("not an address")
        };
        assert_eq!(
            address_from_message(&a),
            Some((Ipv4Addr::new(10, 9, 8, 7), 32))
        );
    }

    #[test]
    fn link_info_reads_veth_fields() {
        let mut msg = LinkMessage::default();
        msg.header.index = 12;
        msg.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
        msg.attributes = vec![
            LinkAttribute::IfName("xs1h".into()),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
            LinkAttribute::Mtu(1450),
            LinkAttribute::Link(3),
            LinkAttribute::LinkNetNsId(0),
            LinkAttribute::LinkInfo(vec![NlLinkInfo::Kind(InfoKind::Veth)]),
        ];
        let info = link_info_from_message(&msg);
        assert_eq!(
            info,
            LinkInfo {
                index: 12,
                name: "xs1h".into(),
                mac: Some([2, 0, 0, 0, 0, 1]),
                mtu: 1450,
                up: true,
                peer_index: Some(3),
                link_netnsid: Some(0),
                kind: Some("veth".into()),
            }
        );
    }

    #[test]
    fn ifname_rules() {
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("a23456789012345").is_ok());
        assert!(check_ifname("a234567890123456").is_err());
        assert!(check_ifname("").is_err());
        assert!(check_ifname("..").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("a b").is_err());
        assert!(check_ifname("a\0b").is_err());
        assert!(check_ifname("eth0:1").is_err());
    }

    fn nlmsg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDR_LEN + payload.len();
        let mut v = Vec::new();
        v.extend_from_slice(&(len as u32).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn error_frame_with_extended_ack_message() {
        let mut payload = Vec::new();
        payload.extend_from_slice(&(-libc::EINVAL).to_ne_bytes());
        payload.extend_from_slice(&nlmsg(24, NLM_F_REQUEST, 3, &[])); // echoed header
        let text = b"Invalid prefix\0";
        payload.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend_from_slice(text);
        let bytes = nlmsg(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, 3, &payload);
        let frame = Frames::new(&bytes).next().unwrap().unwrap();
        assert_eq!(frame.kind, NLMSG_ERROR);
        assert_eq!(frame.seq, 3);
        let (code, msg) = parse_error(&frame).unwrap();
        assert_eq!(code, -libc::EINVAL);
        assert_eq!(msg.as_deref(), Some("Invalid prefix"));
    }

    #[test]
    fn frames_split_and_reject_garbage() {
        let mut two = nlmsg(NLMSG_NOOP, 0, 1, &[1, 2, 3]);
        two.extend(nlmsg(NLMSG_DONE, 0, 2, &0i32.to_ne_bytes()));
        let frames: Vec<_> = Frames::new(&two).collect::<Result<_, _>>().unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].kind, NLMSG_DONE);
        assert_eq!(frames[1].payload_i32(), Some(0));

        // Length field larger than the datagram, or smaller than a header.
        let mut bad = nlmsg(NLMSG_DONE, 0, 1, &[0; 4]);
        bad[0] = 200;
        assert!(Frames::new(&bad).next().unwrap().is_err());
        bad[0] = 3;
        assert!(Frames::new(&bad).next().unwrap().is_err());
        assert!(Frames::new(&[1, 2, 3]).next().unwrap().is_err());
    }

    #[test]
    fn error_display_names_operation_and_kernel_reason() {
        let err = Failure::Kernel {
            source: io::Error::from_raw_os_error(libc::EEXIST),
            kernel_msg: Some("boom".into()),
        }
        .during("create veth a (peer b)");
        let text = err.to_string();
        assert!(text.starts_with("create veth a (peer b): "), "{text}");
        assert!(text.ends_with("(kernel: boom)"), "{text}");
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
    }
}
