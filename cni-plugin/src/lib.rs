//! The xsknet CNI plugin as a library, so every verb is unit-testable with an injected
//! environment, stdin, stdout and [`platform::Platform`] (kernel, daemon and delegated
//! IPAM plugin behind one trait). The plugin stays thin: it wires the pod's veth, asks
//! `xsknetd` for an address (or delegates to an IPAM plugin) and registers the
//! endpoint; the daemon owns every piece of node state.
//!
//! Layout: [`skel`] dispatches a call; [`config`] parses the network configuration;
//! [`cmd`] holds one module per CNI verb; [`result`] and [`errors`] are the spec's
//! output types; [`ipam`] is the daemon IPAM client and IPAM-plugin delegation;
//! [`wire`] does the netlink work; [`platform`] joins them to the real system.

#![deny(unsafe_code)]

pub mod cmd;
pub mod config;
pub mod errors;
pub mod ipam;
pub mod platform;
pub mod result;
pub mod skel;
pub mod wire;
