//! What the xsknet daemon shares with its clients (the CNI plugin, `xsknetctl`, the
//! benches), in a crate that links neither libxdp nor libbpf: the control protocol
//! ([`wire`]) and its blocking [`client`], the one Ethernet address type
//! ([`MacAddr`]), the constants both sides must agree on ([`consts`]: the pod
//! gateway, IP protocol numbers, default paths) and the one atomic file write and
//! file lock ([`fsutil`]). No `unsafe` here.

#![forbid(unsafe_code)]

pub mod client;
pub mod consts;
pub mod fsutil;
pub mod mac;
pub mod wire;

pub use consts::*;
pub use mac::{MacAddr, MacParseError};
