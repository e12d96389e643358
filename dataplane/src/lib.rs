//! xsknet node dataplane.
//!
//! The layout follows a packet's way, and each layer depends only on those below it:
//! [`packet`] knows bytes (checked views); [`pipeline`] knows decisions (named stages
//! over a frame and its `PacketCtx`: l3, route, policy, rewrite, encap/decap, with
//! verdicts `Forward`/`Encap`/`Decap`/`Reply`/`Drop`); [`tables`] are the immutable
//! snapshots workers read (exact-match FIB, longest-prefix remote routes, tunnel
//! endpoints); [`xsk`] knows rings, UMEM frames with headroom and ports; [`worker`]
//! glues them; [`counters`] (port counters, drop reasons, policy hits, burst size) sit
//! at the bottom so that none of the others imports another to count. [`control`] is
//! the socket API on the control thread;
//! [`loader`] attaches the XDP program; [`sys`] holds netlink/ioctl; [`state`] persists;
//! [`install`] puts the CNI plugin and its conflist on the node.

pub mod config;
pub mod control;
pub mod counters;
pub mod daemon;
pub mod install;
pub mod ipam;
pub mod loader;
pub mod packet;
pub mod pipeline;
pub mod policy;
pub mod state;
pub mod sys;
pub mod tables;
pub mod worker;
pub mod xsk;
