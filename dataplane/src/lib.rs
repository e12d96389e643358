//! xsknet node dataplane.
//!
//! The layout follows a packet's way: [`packet`] knows bytes, [`pipeline`] knows
//! decisions, [`xsk`] knows rings, [`worker`] glues them; [`tables`] are the immutable
//! snapshots workers read; [`control`] is the socket API on the control thread;
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
