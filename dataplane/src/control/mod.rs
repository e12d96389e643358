//! The control socket: a `mio` event loop on the control thread ([`server`]) serving
//! [`proto`] requests to a [`proto::Handler`] (the daemon), and the blocking [`client`]
//! that `xsknetctl` and the CNI plugin use. Nothing here runs on a worker.

pub mod client;
pub mod proto;
pub mod reach;
pub mod server;
