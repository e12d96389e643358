//! The control socket's wire protocol: defined in the `xsknet-proto` crate
//! ([`xsknet_proto::wire`]), which the CNI plugin shares without linking the dataplane;
//! re-exported here so `crate::control::proto::…` paths hold.

pub use xsknet_proto::wire::*;
