//! Numbers and names the daemon, the CNI plugin and the tools agree on, defined once.
//!
//! The packet path matches on the same IP protocol numbers through its own views; the
//! values here are the ones the control side (NetworkPolicy, `trace`, stats) names.

use std::net::Ipv4Addr;

/// The gateway address every pod routes through (link-local; answered by the
/// dataplane, never configured on a host interface).
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of SCTP.
pub const PROTO_SCTP: u8 = 132;

/// Default path of the daemon's control socket.
pub const DEFAULT_SOCKET: &str = "/run/xsknet/xsknetd.sock";
/// Default state directory of the daemon (and of the CNI plugin's lock and records).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/xsknet";

/// Subdirectory of the state dir where the CNI plugin records DELs it could not finish
/// because the daemon was unreachable; the daemon completes and removes them at start.
pub const PENDING_DEL_DIR: &str = "pending-del";
