//! Setup shared by the criterion benches and the callgrind driver (`examples/`), so the
//! two measure the same frames, tables and workers; the `pktgen` generator's parts
//! ([`pktgen`], the only module allowed unsafe code: raw sockets); and the chart tool's
//! library ([`charts`], used by `bin/charts.rs`).

#![deny(unsafe_code)]

pub mod charts;
pub mod forward_rig;
pub mod pipeline_rig;
pub mod pktgen;
