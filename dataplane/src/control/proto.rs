//! The control socket's wire protocol, version 1.
//!
//! One request per connection: the client writes one JSON object (optionally followed
//! by a newline) and half-closes or sends the newline; the daemon answers with one JSON
//! object and a newline, then closes. Every request carries `"v": 1` and an `"op"`.
//!
//! ```json
//! {"v":1,"op":"endpoint_add","ifname":"xsk1234","ip":"10.244.0.5","mac":"02:..","namespace":"x","name":"a","labels":{"pod":"a"}}
//! {"ok":true,"result":{...}}
//! {"ok":false,"error":{"kind":"invalid_request","message":"…"}}
//! ```

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Protocol version spoken by this build.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest request accepted, in bytes.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// A request with its version.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    pub v: u32,
    #[serde(flatten)]
    pub request: Request,
}

/// What a client can ask.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Attach a pod's host-side veth and forward for its address.
    EndpointAdd(EndpointSpec),
    /// Detach a pod, by host ifname or by address (one of them).
    EndpointDel {
        #[serde(default)]
        ifname: Option<String>,
        #[serde(default)]
        ip: Option<Ipv4Addr>,
    },
    /// Every endpoint.
    EndpointList,
    /// Per-port and per-worker counters.
    Stats,
    /// Daemon readiness and summary.
    Status,
}

/// A pod endpoint as a client describes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// Host-side veth name (in the daemon's network namespace).
    pub ifname: String,
    /// The pod's IPv4 address (a /32).
    pub ip: Ipv4Addr,
    /// The pod interface's MAC, `aa:bb:cc:dd:ee:ff`. When absent the daemon reads it
    /// from the veth peer over netlink.
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// An attached endpoint as the daemon stores and reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Port slot and worker (informational; reassigned on restart).
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub worker: u16,
}

/// Error kinds a response can carry.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request could not be parsed or is not valid.
    InvalidRequest,
    /// The protocol version is not spoken here.
    UnsupportedVersion,
    /// The thing named does not exist.
    NotFound,
    /// It already exists (another endpoint has that ifname or address).
    Conflict,
    /// The dataplane has no room (ports, frames).
    Capacity,
    /// The kernel refused (netlink, XDP attach, AF_XDP bind, …).
    System,
}

/// The error half of a response.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    pub message: String,
}

/// A response.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Response {
    pub fn ok(result: serde_json::Value) -> Self {
        Response { ok: true, result: Some(result), error: None }
    }

    pub fn err(kind: ErrorKind, message: impl Into<String>) -> Self {
        Response { ok: false, result: None, error: Some(ErrorBody { kind, message: message.into() }) }
    }
}

/// A typed control error, turned into a [`Response`] by the server.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ControlError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ControlError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ControlError { kind, message: message.into() }
    }
}

/// What the control server calls: implemented by the daemon.
pub trait Handler {
    /// Serve one decoded request.
    fn handle(&mut self, request: Request) -> Result<serde_json::Value, ControlError>;
    /// Called at least every 100 ms from the control thread (housekeeping).
    fn tick(&mut self) {}
}

/// Ring-level counters the kernel keeps for one AF_XDP socket (XDP_STATISTICS).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct XdpRingStats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// Counters of one port (`stats` result, `ports[]`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortStats {
    pub port: u16,
    pub ifname: String,
    /// "pod" or "host".
    pub kind: String,
    pub worker: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Drops by reason (snake_case names of `pipeline::DropReason`), zeros omitted.
    pub drops: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp: Option<XdpRingStats>,
}

/// Counters of one worker (`stats` result, `workers[]`): sums over its ports plus
/// the worker's own loop counters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerStats {
    pub worker: u16,
    pub core: usize,
    pub ports: usize,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub drops: BTreeMap<String, u64>,
    /// Packets handed to / taken from other workers.
    pub handoff_out: u64,
    pub handoff_in: u64,
    /// Times the worker fell back to sleeping in poll(2).
    pub sleeps: u64,
    /// Table generation the worker runs on.
    pub generation: u64,
}

/// The `stats` result.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    pub workers: Vec<WorkerStats>,
    pub ports: Vec<PortStats>,
}

/// The `status` result.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub version: String,
    pub ready: bool,
    pub generation: u64,
    pub workers: usize,
    pub endpoints: usize,
    pub pod_cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    pub uptime_secs: u64,
}
