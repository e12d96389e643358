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

pub use crate::consts::{PENDING_DEL_DIR, POD_GATEWAY};

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
    /// Result: the attached [`Endpoint`].
    EndpointAdd(EndpointSpec),
    /// Detach a pod, by host ifname or by address (one of them).
    /// Result: the removed [`Endpoint`].
    EndpointDel {
        #[serde(default)]
        ifname: Option<String>,
        #[serde(default)]
        ip: Option<Ipv4Addr>,
    },
    /// Every endpoint. Result: a JSON array of [`Endpoint`].
    EndpointList,
    /// Per-port and per-worker counters. Result: [`Stats`].
    Stats,
    /// Daemon readiness and summary. Result: [`Status`].
    Status,
    /// Whether the dataplane forwards for the endpoint on host interface `ifname`:
    /// attached, in the tables every worker runs on, its worker alive.
    /// Result: [`EndpointCheck`]; `not_found` when there is no such endpoint.
    EndpointCheck { ifname: String },
    /// Allocate the pod address of CNI attachment `(container_id, ifname)` from the
    /// node's pod CIDR; the same attachment asking again gets the same address.
    /// `ip` requests a specific address. Result: [`IpamLease`].
    IpamAllocate {
        container_id: String,
        ifname: String,
        #[serde(default)]
        ip: Option<Ipv4Addr>,
    },
    /// Release the attachment's address; releasing nothing is fine.
    /// Result: [`IpamReleased`].
    IpamRelease {
        container_id: String,
        ifname: String,
    },
    /// Every allocation. Result: a JSON array of [`IpamAllocation`].
    IpamList,
}

/// NetworkPolicy requests. Same envelope and framing as [`Request`] (`"v": 1`,
/// `"op"`); kept in their own enum so clients matching every [`Request`] variant (the
/// CNI plugin's fake daemon) are not affected. [`decode_any`] tells them apart by
/// `op`; a [`Handler`] serves them in [`Handler::handle_policy`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicyRequest {
    /// Apply Kubernetes YAML (NetworkPolicy, Namespace, Pod documents), all or
    /// nothing: on any error nothing in force changes and the message names the
    /// object and field. `file` names the source in errors. Result: [`PolicyApplied`].
    PolicyApply {
        yaml: String,
        #[serde(default)]
        file: Option<String>,
    },
    /// Delete a NetworkPolicy. Result: [`PolicyApplied`] (its `deleted`).
    PolicyDelete { namespace: String, name: String },
    /// Every NetworkPolicy in force with its hit count. Result: a JSON array of
    /// [`PolicyInfo`].
    PolicyList,
    /// Set a pod's labels (a live endpoint, else a pod given as YAML). Without
    /// `replace` the labels are merged into the current ones and changing a label's
    /// value needs `overwrite`; `remove` deletes keys. Result: the pod's labels.
    PodLabel {
        namespace: String,
        name: String,
        #[serde(default)]
        labels: BTreeMap<String, String>,
        #[serde(default)]
        remove: Vec<String>,
        #[serde(default)]
        replace: bool,
        #[serde(default)]
        overwrite: bool,
    },
    /// Run a synthetic connection `from` → `to` (`ns/pod` of live endpoints) through
    /// the live tables' classifiers and connection-table code. `port` is a number or
    /// a named port of the destination; `protocol` TCP (default), UDP or SCTP.
    /// Result: the daemon's `control::reach::Trace`.
    Trace {
        from: String,
        to: String,
        port: serde_json::Value,
        #[serde(default)]
        protocol: Option<String>,
    },
    /// The nodes of the cluster as this daemon sees them, and its datastore's state
    /// (static mode: this node and the static peers). Result: [`NodeList`].
    NodeList,
}

/// The `op` names of [`PolicyRequest`].
pub const POLICY_OPS: [&str; 6] = [
    "policy_apply",
    "policy_delete",
    "policy_list",
    "pod_label",
    "trace",
    "node_list",
];

/// The `node_list` result.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeList {
    /// None in static mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore: Option<DatastoreStatus>,
    /// By name; this node included.
    pub nodes: Vec<NodeInfo>,
}

/// One node of [`NodeList`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub pod_cidr: String,
    pub underlay_ip: Option<Ipv4Addr>,
    pub vtep_mac: String,
    pub vni: u32,
    pub port: u16,
    /// This daemon's own node.
    #[serde(rename = "self")]
    pub local: bool,
    /// Its record is alive in the datastore (kept by its lease); None in static mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alive: Option<bool>,
    /// Left out of the routes, and why (another VNI, an overlapping prefix, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unused: Option<String>,
}

/// The datastore as this daemon follows it (`status.datastore`, `node_list`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DatastoreStatus {
    /// `etcd` or `kubernetes`.
    #[serde(rename = "type")]
    pub kind: String,
    pub endpoints: Vec<String>,
    /// This node's name in the cluster.
    pub node_name: String,
    /// The watch is connected and its view current.
    pub connected: bool,
    /// This node's record is registered (its prefix claimed, its lease alive).
    pub registered: bool,
    /// The datastore revision of the view.
    pub revision: i64,
    /// The last connection or request error, if any since the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Records refused as malformed since start (each logged with its key).
    pub refused: u64,
    /// Nodes, pods, namespaces and policies in the view.
    pub nodes: usize,
    pub pods: usize,
    pub namespaces: usize,
    pub policies: usize,
    /// Kubernetes: every watched kind has listed (the view is complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced: Option<bool>,
    /// Kubernetes: the last resourceVersion seen per kind (`nodes`, `pods`, …).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub resource_versions: std::collections::BTreeMap<String, String>,
    /// Kubernetes: this node's VTEP annotation (`written`, `pending`, or the error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<String>,
}

/// The `policy_apply` / `policy_delete` result.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyApplied {
    /// Objects as `Kind ns/name`.
    #[serde(default)]
    pub created: Vec<String>,
    #[serde(default)]
    pub configured: Vec<String>,
    #[serde(default)]
    pub unchanged: Vec<String>,
    #[serde(default)]
    pub deleted: Vec<String>,
    /// Table generation every worker ran on when the answer was sent. The change
    /// itself is durable when answered and in force once the policy generation
    /// `policy_generation` is (`status.policy.in_force >= policy_generation`): the
    /// daemon compiles on a thread of its own so CNI requests never wait for it.
    pub generation: u64,
    /// The policy generation that carries this change (0 from daemons before it).
    #[serde(default)]
    pub policy_generation: u64,
    /// Whether it was already in force when answered (nothing changed, or compiled).
    #[serde(default)]
    pub in_force: bool,
}

/// One `policy_list` entry.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyInfo {
    pub namespace: String,
    pub name: String,
    /// Effective policyTypes (`Ingress`, `Egress`).
    pub policy_types: Vec<String>,
    pub ingress_rules: usize,
    pub egress_rules: usize,
    /// Local endpoints the policy selects.
    pub selected: usize,
    /// Flows its rules admitted (connection-table misses allowed by one of its rules),
    /// summed over workers since the daemon started.
    pub hits: u64,
    /// Where it came from: `kubernetes`, `etcd`, `policyDir` or `xsknetctl`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// Set when the object is not enforced because xsknet cannot enforce it, with the
    /// reason (the other policies are in force).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The CNI attachment an endpoint belongs to (set by the CNI plugin).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CniAttachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`: the interface name inside the pod.
    pub ifname: String,
    /// `CNI_NETNS`: the pod's network namespace path.
    #[serde(default)]
    pub netns: Option<String>,
}

/// The `endpoint_check` result.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointCheck {
    pub endpoint: Endpoint,
    /// Table generation every worker runs on (at least the one with the endpoint).
    pub generation: u64,
}

/// The `ipam_allocate` result.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpamLease {
    pub ip: Ipv4Addr,
    /// Always 32: pods get a host route, the gateway is link-local.
    pub prefix: u8,
    /// The link-local gateway pods route through.
    pub gateway: Ipv4Addr,
}

/// The `ipam_release` result.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpamReleased {
    /// The address released, `null` when the attachment held none.
    pub released: Option<Ipv4Addr>,
}

/// One `ipam_list` entry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpamAllocation {
    pub ip: Ipv4Addr,
    pub container_id: String,
    pub ifname: String,
}

/// Prefix of every host-side veth xsknet's CNI plugin creates.
pub const HOST_IFNAME_PREFIX: &str = "xsk";

/// 64-bit FNV-1a: tiny, stable across builds and platforms (names must not change when
/// the plugin is upgraded, or DEL would miss veths created by the old version).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The host-side veth name of the CNI attachment `(container_id, ifname)`: `xsk` + 11
/// hex digits of the hash of `container_id` NUL `ifname` (14 bytes). Shared by the
/// plugin (which creates it) and the daemon (which finds the veths of allocations when
/// it recovers from what the kernel shows).
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    let mut key = Vec::with_capacity(container_id.len() + ifname.len() + 1);
    key.extend_from_slice(container_id.as_bytes());
    key.push(0);
    key.extend_from_slice(ifname.as_bytes());
    let hex = format!("{:016x}", fnv1a64(&key));
    format!("{HOST_IFNAME_PREFIX}{}", &hex[..11])
}

/// One `<stateDir>/pending-del/*.json` record ([`PENDING_DEL_DIR`]): a DEL the CNI plugin
/// could not finish because the daemon was down. The record names the attachment in
/// full; its file name ([`PendingDel::file_name`]) is only a fixed-length key, so a
/// reader scans the directory for `*.json` and never derives a name from an ID.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingDel {
    pub container_id: String,
    /// The interface name inside the pod (`CNI_IFNAME`).
    pub ifname: String,
    /// The host-side veth the endpoint was attached on.
    pub host_ifname: String,
}

impl PendingDel {
    /// `del-` + 32 hex digits of the 128-bit FNV-1a hash of `container_id` NUL
    /// `ifname` + `.json` (41 bytes): the same attachment always maps to the same
    /// record, and a container ID of any length fits in a file name (`NAME_MAX` is 255;
    /// the `<container_id>-<ifname>.json` names of earlier releases were not, for IDs
    /// of 233 bytes and more). Records under those older names are still read: readers
    /// scan the directory.
    pub fn file_name(container_id: &str, ifname: &str) -> String {
        const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
        const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
        let mut h = OFFSET;
        let key = container_id.bytes().chain([0]).chain(ifname.bytes());
        for b in key {
            h ^= u128::from(b);
            h = h.wrapping_mul(PRIME);
        }
        format!("del-{h:032x}.json")
    }
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
    /// The CNI attachment, when the CNI plugin added the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniAttachment>,
}

/// One `endpoint list` entry: the endpoint and where its labels came from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointEntry {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// `kubernetes` (the Pod object's), or `local` (the CNI call's or `pod label`'s).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub labels_source: String,
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
    /// The CNI attachment, when the CNI plugin added the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniAttachment>,
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
    /// The change could not be made durable (the state directory cannot be written,
    /// e.g. the disk is full); nothing of it is in force. Retry once the state
    /// directory is writable again. (A client older than this kind reads it as a
    /// malformed response; it fails either way.)
    Unavailable,
}

impl ErrorKind {
    /// The wire name (`invalid_request`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::UnsupportedVersion => "unsupported_version",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Capacity => "capacity",
            ErrorKind::System => "system",
            ErrorKind::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
        Response {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    pub fn err(kind: ErrorKind, message: impl Into<String>) -> Self {
        Response {
            ok: false,
            result: None,
            error: Some(ErrorBody {
                kind,
                message: message.into(),
            }),
        }
    }
}

/// A typed control error, turned into a [`Response`] by the server.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ControlError {
    pub kind: ErrorKind,
    pub message: String,
}

impl From<ControlError> for Response {
    fn from(e: ControlError) -> Self {
        Response::err(e.kind, e.message)
    }
}

impl Envelope {
    /// `request` at this build's [`PROTOCOL_VERSION`].
    pub fn new(request: Request) -> Self {
        Envelope {
            v: PROTOCOL_VERSION,
            request,
        }
    }
}

impl ControlError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ControlError {
            kind,
            message: message.into(),
        }
    }
}

/// What the control server calls: implemented by the daemon.
pub trait Handler {
    /// Serve one decoded request.
    fn handle(&mut self, request: Request) -> Result<serde_json::Value, ControlError>;
    /// Serve one NetworkPolicy request; daemons without policy refuse them.
    fn handle_policy(&mut self, request: PolicyRequest) -> Result<serde_json::Value, ControlError> {
        let _ = request;
        Err(ControlError::new(
            ErrorKind::InvalidRequest,
            "this daemon does not serve policy requests",
        ))
    }
    /// Called at least every 100 ms from the control thread (housekeeping).
    fn tick(&mut self) {}
    /// The answer `result` to `request` could not be delivered: the client went away
    /// (or stalled past the write deadline). A handler undoes what the request left
    /// allocated (an ADD's address, endpoint); the default does nothing.
    fn abandoned(&mut self, request: &Request, result: &serde_json::Value) {
        let _ = (request, result);
    }
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
    /// Connection table: entries (live or not yet swept), inserts, early-drop
    /// evictions, refused inserts (full buckets).
    #[serde(default)]
    pub conntrack: ConntrackStats,
}

/// A worker's connection-table counters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConntrackStats {
    pub entries: u64,
    pub capacity: u64,
    pub inserts: u64,
    pub evictions: u64,
    pub full: u64,
}

/// The `stats` result.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    pub workers: Vec<WorkerStats>,
    pub ports: Vec<PortStats>,
    /// Flows admitted per policy (`ns/name`), summed over workers.
    #[serde(default)]
    pub policy_hits: BTreeMap<String, u64>,
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
    /// The MTU for traffic between pods of this node (`localMtu`), when configured:
    /// the CNI plugin gives pod interfaces this MTU and routes `pod_cidr` at it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    pub uptime_secs: u64,
    /// The VXLAN overlay, when one is configured (issue 9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlayStatus>,
    /// Health of the state directory (absent from daemons older than it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<PersistenceStatus>,
    /// The cluster datastore, when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore: Option<DatastoreStatus>,
    /// Policy compilation: generations requested and in force, durations (absent from
    /// daemons older than it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyStatus>,
}

/// Policy compilation in the `status` answer. Every change of the policy input (a
/// policy, namespace or label change, a pod added or removed) gets the next policy
/// generation; a thread compiles the newest input (a burst is compiled once) and the
/// control thread publishes the result to the workers.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyStatus {
    /// The newest policy generation asked for.
    pub requested: u64,
    /// The newest one published to every worker: every change up to it is in force.
    pub in_force: u64,
    /// The one being compiled now, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiling: Option<u64>,
    /// Pods attached since the policy in force was compiled that some policy selects
    /// (or whose address another pod had): held isolated, no traffic in or out but
    /// their node's, until a generation that includes them is in force.
    pub pending_endpoints: usize,
    /// Compiles finished, and requests folded into a newer one before they started.
    pub compiles: u64,
    pub coalesced: u64,
    /// Duration of the last compile and the longest since start, milliseconds.
    pub last_compile_ms: u64,
    pub max_compile_ms: u64,
    /// Compiles that failed (the policy in force stayed), and the last failure.
    pub compile_errors: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_compile_error: Option<String>,
}

/// This node's side of the overlay, in the `status` result.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OverlayStatus {
    /// The uplink interface and how many of its RX queues have a socket.
    pub uplink: String,
    pub queues: u32,
    /// This node's underlay address (outer source, the only outer destination taken).
    pub underlay_ip: Option<Ipv4Addr>,
    /// Our VTEP MAC (`aa:bb:cc:dd:ee:ff`).
    pub vtep_mac: String,
    pub vni: u32,
    pub port: u16,
    /// The uplink's MTU and the pods' (uplink − 50): what the CNI plugin gives a pod
    /// whose network config sets no `mtu`.
    pub uplink_mtu: u32,
    pub pod_mtu: u32,
    /// Known other nodes, and how many of them have a resolved next-hop MAC.
    pub nodes: usize,
    pub nodes_resolved: usize,
}

/// Persistence health in the `status` answer: write failures (the requests that met
/// them failed and were rolled back), and what was recovered at start.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PersistenceStatus {
    /// True while the last state write failed (cleared by the next one that succeeds).
    pub failing: bool,
    /// Failed state writes since start.
    pub errors: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the last error happened (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_unix: Option<u64>,
    /// Since when writes have been failing without a success in between (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since_unix: Option<u64>,
    /// What start had to recover from (unreadable files set aside, where the state came
    /// from instead), one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovered: Vec<String>,
    /// Namespaces held default-deny because the policy state was unreadable at start
    /// (until the operator deletes a `xsknet-fail-closed` policy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_closed_namespaces: Vec<String>,
}

/// Decodes one request line (without its newline): the version is checked before the
/// operation, so a future client gets `unsupported_version` rather than a confusing
/// "unknown op". Never panics, whatever the bytes.
pub fn decode_request(line: &[u8]) -> Result<Request, ControlError> {
    let invalid = |m: String| ControlError::new(ErrorKind::InvalidRequest, m);
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| invalid(e.to_string()))?;
    let serde_json::Value::Object(mut obj) = value else {
        return Err(invalid("a request must be a JSON object".to_string()));
    };
    check_version(&mut obj)?;
    // Decoded without `Envelope`'s flatten, which lets unknown fields through.
    let first_field = obj.keys().find(|k| *k != "op").cloned();
    let request: Request = serde_json::from_value(serde_json::Value::Object(obj))
        .map_err(|e| invalid(e.to_string()))?;
    // serde ignores extra fields on the unit variants of an internally tagged enum.
    if let (
        Request::EndpointList | Request::Stats | Request::Status | Request::IpamList,
        Some(field),
    ) = (&request, first_field)
    {
        return Err(invalid(format!(
            "unknown field `{field}`: this op takes no fields"
        )));
    }
    Ok(request)
}

/// A decoded request of either family.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyRequest {
    Core(Request),
    Policy(PolicyRequest),
}

/// Decodes one request line of either family: a [`POLICY_OPS`] op becomes a
/// [`PolicyRequest`], anything else goes through [`decode_request`]. Never panics.
pub fn decode_any(line: &[u8]) -> Result<AnyRequest, ControlError> {
    let invalid = |m: String| ControlError::new(ErrorKind::InvalidRequest, m);
    let Ok(serde_json::Value::Object(mut obj)) = serde_json::from_slice(line) else {
        return decode_request(line).map(AnyRequest::Core);
    };
    let is_policy = obj
        .get("op")
        .and_then(|o| o.as_str())
        .is_some_and(|o| POLICY_OPS.contains(&o));
    if !is_policy {
        return decode_request(line).map(AnyRequest::Core);
    }
    check_version(&mut obj)?;
    let first_field = obj.keys().find(|k| *k != "op").cloned();
    let request: PolicyRequest = serde_json::from_value(serde_json::Value::Object(obj))
        .map_err(|e| invalid(e.to_string()))?;
    if let (PolicyRequest::PolicyList | PolicyRequest::NodeList, Some(field)) =
        (&request, first_field)
    {
        return Err(invalid(format!(
            "unknown field `{field}`: this op takes no fields"
        )));
    }
    Ok(AnyRequest::Policy(request))
}

/// Removes and checks `v`: the version is checked before the operation, so a future
/// client gets `unsupported_version` rather than a confusing "unknown op".
fn check_version(obj: &mut serde_json::Map<String, serde_json::Value>) -> Result<(), ControlError> {
    let invalid = |m: String| ControlError::new(ErrorKind::InvalidRequest, m);
    let v = obj
        .remove("v")
        .ok_or_else(|| invalid("missing field `v`".to_string()))?;
    match v.as_u64() {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err(ControlError::new(
                ErrorKind::UnsupportedVersion,
                format!(
                    "protocol version {v} is not supported; this xsknetd speaks {PROTOCOL_VERSION}"
                ),
            ))
        }
        None => {
            return Err(invalid(format!(
                "field `v` must be an unsigned integer, got {v}"
            )))
        }
    }
    Ok(())
}

/// Encodes a response as one line, newline included.
pub fn encode_response(response: &Response) -> Vec<u8> {
    let mut out = serde_json::to_vec(response).unwrap_or_else(|e| {
        // A Value always serialises; keep the wire honest if that ever changes.
        let fallback = Response::err(ErrorKind::System, format!("encode response: {e}"));
        serde_json::to_vec(&fallback).unwrap_or_default()
    });
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> EndpointSpec {
        EndpointSpec {
            ifname: "xsk1234".into(),
            ip: Ipv4Addr::new(10, 244, 0, 5),
            mac: Some("02:00:00:00:00:05".into()),
            namespace: Some("default".into()),
            name: Some("a".into()),
            labels: [("app".to_string(), "web".to_string())].into(),
            cni: Some(CniAttachment {
                container_id: "c0ffee".into(),
                ifname: "eth0".into(),
                netns: Some("/run/netns/p".into()),
            }),
        }
    }

    #[test]
    fn requests_round_trip() {
        let requests = [
            Request::EndpointAdd(spec()),
            Request::EndpointDel {
                ifname: Some("xsk1".into()),
                ip: None,
            },
            Request::EndpointDel {
                ifname: None,
                ip: Some(Ipv4Addr::new(10, 244, 0, 9)),
            },
            Request::EndpointList,
            Request::Stats,
            Request::Status,
            Request::EndpointCheck {
                ifname: "xsk1".into(),
            },
            Request::IpamAllocate {
                container_id: "c".into(),
                ifname: "eth0".into(),
                ip: None,
            },
            Request::IpamAllocate {
                container_id: "c".into(),
                ifname: "eth0".into(),
                ip: Some(Ipv4Addr::new(10, 244, 0, 7)),
            },
            Request::IpamRelease {
                container_id: "c".into(),
                ifname: "eth0".into(),
            },
            Request::IpamList,
        ];
        for r in requests {
            let bytes = serde_json::to_vec(&Envelope::new(r.clone())).unwrap();
            assert_eq!(decode_request(&bytes).unwrap(), r);
        }
    }

    #[test]
    fn wire_shape_is_flat() {
        let v = serde_json::to_value(Envelope::new(Request::Status)).unwrap();
        assert_eq!(v, json!({"v": 1, "op": "status"}));
        let v = serde_json::to_value(Envelope::new(Request::EndpointAdd(spec()))).unwrap();
        assert_eq!(v["op"], "endpoint_add");
        assert_eq!(v["ip"], "10.244.0.5");
        assert_eq!(v["labels"]["app"], "web");
        let minimal = br#"{"v":1,"op":"endpoint_add","ifname":"x","ip":"10.0.0.1"}"#;
        match decode_request(minimal).unwrap() {
            Request::EndpointAdd(s) => {
                assert_eq!(s.mac, None);
                assert!(s.labels.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decode_errors() {
        let kind = |b: &[u8]| decode_request(b).unwrap_err().kind;
        assert_eq!(kind(b"{"), ErrorKind::InvalidRequest);
        assert_eq!(kind(b"[]"), ErrorKind::InvalidRequest);
        assert_eq!(kind(br#"{"op":"status"}"#), ErrorKind::InvalidRequest);
        assert_eq!(
            kind(br#"{"v":"1","op":"status"}"#),
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            kind(br#"{"v":2,"op":"status"}"#),
            ErrorKind::UnsupportedVersion
        );
        assert_eq!(
            kind(br#"{"v":2,"op":"warp"}"#),
            ErrorKind::UnsupportedVersion
        );
        let e = decode_request(br#"{"v":1,"op":"warp"}"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidRequest);
        assert!(e.message.contains("warp"), "{}", e.message);
        let e = decode_request(br#"{"v":1,"op":"endpoint_add","ip":"10.0.0.1"}"#).unwrap_err();
        assert!(e.message.contains("ifname"), "{}", e.message);
        let e = decode_request(br#"{"v":1,"op":"endpoint_add","ifname":"x","ip":"10.0.0.300"}"#)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidRequest);
        assert_eq!(kind(&[0xff, 0xfe, b'{']), ErrorKind::InvalidRequest);
        for extra in [
            &br#"{"v":1,"op":"status","x":1}"#[..],
            br#"{"v":1,"op":"endpoint_list","x":1}"#,
            br#"{"v":1,"op":"ipam_list","x":1}"#,
            br#"{"v":1,"op":"ipam_release","container_id":"c","ifname":"e","x":1}"#,
            br#"{"v":1,"op":"endpoint_del","ifname":"a","x":1}"#,
            br#"{"v":1,"op":"endpoint_add","ifname":"a","ip":"10.0.0.1","x":1}"#,
        ] {
            let e = decode_request(extra).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidRequest);
            assert!(e.message.contains("`x`"), "{}", e.message);
        }
    }

    #[test]
    fn responses_round_trip() {
        let ok = Response::ok(json!({"ready": true}));
        let line = encode_response(&ok);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(serde_json::from_slice::<Response>(&line).unwrap(), ok);
        let err: Response = ControlError::new(ErrorKind::NotFound, "no endpoint xsk9").into();
        let v: serde_json::Value = serde_json::from_slice(&encode_response(&err)).unwrap();
        assert_eq!(
            v,
            json!({"ok": false, "error": {"kind": "not_found", "message": "no endpoint xsk9"}})
        );
        assert_eq!(
            ErrorKind::UnsupportedVersion.to_string(),
            "unsupported_version"
        );
    }

    #[test]
    fn policy_ops_decode_into_their_own_family() {
        let d = |s: &str| decode_any(s.as_bytes());
        assert_eq!(
            d(r#"{"v":1,"op":"policy_delete","namespace":"x","name":"p"}"#).unwrap(),
            AnyRequest::Policy(PolicyRequest::PolicyDelete {
                namespace: "x".into(),
                name: "p".into()
            })
        );
        assert_eq!(
            d(r#"{"v":1,"op":"status"}"#).unwrap(),
            AnyRequest::Core(Request::Status)
        );
        let e = d(r#"{"v":2,"op":"policy_list"}"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnsupportedVersion);
        let e = d(r#"{"v":1,"op":"policy_list","x":1}"#).unwrap_err();
        assert!(e.message.contains("unknown field `x`"), "{}", e.message);
        let e = d(r#"{"v":1,"op":"policy_apply"}"#).unwrap_err();
        assert!(e.message.contains("yaml"), "{}", e.message);
        let e =
            d(r#"{"v":1,"op":"trace","from":"x/a","to":"y/b","port":80,"bogus":1}"#).unwrap_err();
        assert!(e.message.contains("bogus"), "{}", e.message);
        assert!(d("not json").is_err());
        // The client's encoding decodes back.
        let req = PolicyRequest::PodLabel {
            namespace: "x".into(),
            name: "a".into(),
            labels: [("pod".to_string(), "b".to_string())].into(),
            remove: vec![],
            replace: false,
            overwrite: true,
        };
        let mut v = serde_json::to_value(&req).unwrap();
        v["v"] = 1.into();
        assert_eq!(d(&v.to_string()).unwrap(), AnyRequest::Policy(req));
    }

    #[test]
    fn results_round_trip() {
        let stats = Stats {
            workers: vec![WorkerStats {
                worker: 0,
                core: 1,
                ports: 2,
                rx_packets: 10,
                drops: [("no_route".to_string(), 3)].into(),
                ..Default::default()
            }],
            ports: vec![PortStats {
                port: 1,
                ifname: "xsk1".into(),
                kind: "pod".into(),
                ip: Some(Ipv4Addr::new(10, 244, 0, 5)),
                xdp: Some(XdpRingStats::default()),
                ..Default::default()
            }],
            policy_hits: [("x/deny".to_string(), 4)].into(),
        };
        let v = serde_json::to_value(&stats).unwrap();
        assert_eq!(serde_json::from_value::<Stats>(v).unwrap(), stats);
        let status = Status {
            version: "0.1.0".into(),
            ready: true,
            pod_cidr: "10.244.0.0/24".into(),
            ..Default::default()
        };
        let v = serde_json::to_value(&status).unwrap();
        assert!(v.get("host_ip").is_none());
        assert_eq!(serde_json::from_value::<Status>(v).unwrap(), status);
    }

    #[test]
    fn pending_del_file_name_is_fixed_length_and_keyed_by_both_ids() {
        // Pinned: records written by one release must be found by the next.
        assert_eq!(
            PendingDel::file_name("p1", "eth0"),
            "del-238db929b74ff78df25e1a64588e0b1f.json"
        );
        let long = "c".repeat(256);
        let name = PendingDel::file_name(&long, "eth0");
        assert_eq!(name.len(), 41);
        assert_ne!(name, PendingDel::file_name(&long, "eth1"));
        // The separator keeps ("a", "bc") and ("ab", "c") apart.
        assert_ne!(
            PendingDel::file_name("a", "bc"),
            PendingDel::file_name("ab", "c")
        );
    }
}
