//! Setup shared by the criterion benches and the callgrind driver (`examples/`), so the
//! two measure the same frames, tables and workers; and the chart tool's library
//! ([`charts`], used by `bin/charts.rs`).

#![deny(unsafe_code)]

pub mod charts;
pub mod forward_rig;
pub mod pipeline_rig;
