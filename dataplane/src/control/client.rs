//! The blocking control client: defined in the `xsknet-proto` crate
//! ([`xsknet_proto::client`]), which the CNI plugin shares without linking the
//! dataplane; re-exported here so `crate::control::client::…` paths hold.

pub use xsknet_proto::client::*;
