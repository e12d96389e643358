//! The control socket: a `mio` event loop on the control thread serving [`proto`]
//! requests to a [`proto::Handler`] (the daemon). Filled in by the control work.

pub mod proto;
pub mod server;
pub mod client;
