//! Setup shared by the criterion benches and the callgrind driver (`examples/`), so the
//! two measure the same frames, tables and workers; and the `pktgen` generator's parts
//! ([`pktgen`], the only module allowed unsafe code: raw sockets).

#![deny(unsafe_code)]

pub mod forward_rig;
pub mod pipeline_rig;
pub mod pktgen;
