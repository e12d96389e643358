//! AF_XDP ports: rings ([`ring`]), a port's UMEM ([`umem`]), the port itself with its
//! frame pool ([`port`]), multi-buffer packets as descriptor chains ([`chain`]), in-memory ports for tests and benches ([`fake`]), and the
//! lock-free single-producer single-consumer ring that hands packets between workers
//! ([`handoff`]), and XDP links with explicit attach flags ([`link`]). All unsafe code that touches shared ring memory lives here.
//!
//! Below the pipeline in the layering: this module imports only
//! [`counters`](crate::counters) (port ids, the ring drops it counts, the burst size),
//! never `pipeline/`, `tables/` or `control/`.

pub mod chain;
pub mod fake;
pub mod handoff;
pub mod link;
pub mod port;
pub mod ring;
pub mod umem;
pub mod wake;

pub use chain::{is_chain, MAX_CHAIN, XDP_PKT_CONTD};
pub use port::{Port, PortConfig, PortError, RingStats};
pub use ring::XdpDesc;
pub use umem::HEADROOM;
