//! xsknet node dataplane.
//!
//! The layout follows a packet's way, and each layer depends only on those below it:
//! [`packet`] knows bytes (checked views); [`pipeline`] knows decisions (named stages
//! over a frame and its `PacketCtx`: l3, route, policy, rewrite, encap/decap, with
//! verdicts `Forward`/`Encap`/`Decap`/`Reply`/`Drop`); [`tables`] are the immutable
//! snapshots workers read (exact-match FIB, longest-prefix remote routes, tunnel
//! endpoints); [`xsk`] knows rings, UMEM frames with headroom and ports; [`worker`]
//! glues them; [`counters`] (port counters, drop reasons, policy hits, burst size) sit
//! at the bottom so that none of the others imports another to count.
//!
//! The control side sits above: [`control`] is the socket API on the control thread
//! (the protocol and client, [`control::proto`] and [`control::client`], live in the
//! `xsknet-proto` crate the CNI plugin shares); [`daemon`] is the node agent; [`policy`]
//! parses and compiles NetworkPolicy; [`ipam`] allocates pod addresses; [`loader`]
//! attaches the XDP program; [`sys`] (the `xsknet-sys` crate, re-exported) holds
//! netlink/ioctl/nf_tables; [`state`] persists (atomically, with a last good copy);
//! [`install`] puts the CNI plugin and its conflist on the node; [`metrics`] serves the
//! Prometheus text endpoint from a thread of its own; [`cluster`] is the cluster view's
//! records and the etcd store (not yet wired into the daemon).
//!
//! `unsafe` is denied here except in [`xsk`] (the rings and UMEM); the rest of the
//! kernel FFI is in `xsknet-sys`.

#![deny(unsafe_code)]

pub mod cluster;
pub mod config;
pub mod control;
pub mod counters;
pub mod daemon;
pub mod install;
pub mod ipam;
pub mod loader;
pub mod metrics;
pub mod packet;
pub mod pipeline;
pub mod policy;
pub mod state;
pub mod tables;
pub mod worker;
#[allow(unsafe_code)]
pub mod xsk;

pub use xsknet_sys as sys;
