//! xsknet node dataplane.
//!
//! The layout follows a packet's way: [`packet`] knows bytes, [`pipeline`] knows
//! decisions, [`xsk`] knows rings, [`worker`] glues them; [`tables`] are the immutable
//! snapshots workers read; [`control`] is the socket API on the control thread;
//! [`loader`] attaches the XDP program; [`sys`] (the `xsknet-sys` crate, re-exported)
//! holds netlink/ioctl; [`state`] persists; [`install`] puts the CNI plugin and its
//! conflist on the node. The control protocol and client ([`control::proto`],
//! [`control::client`]) live in the `xsknet-proto` crate the CNI plugin shares.
//!
//! `unsafe` is denied here except in [`xsk`] (the rings and UMEM); the rest of the
//! kernel FFI is in `xsknet-sys`.

#![deny(unsafe_code)]

pub mod config;
pub mod control;
pub mod daemon;
pub mod install;
pub mod ipam;
pub mod loader;
pub mod packet;
pub mod pipeline;
pub mod policy;
pub mod state;
pub mod tables;
pub mod worker;
#[allow(unsafe_code)]
pub mod xsk;

pub use xsknet_sys as sys;
