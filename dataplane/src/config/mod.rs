//! The node configuration, `node.yaml` (default `/etc/xsknet/node.yaml`).
//!
//! Every key is camelCase and every field has a default, so an empty file (or no file)
//! is a valid configuration; unknown keys are refused so a typo never silently falls
//! back to a default. Loading is two steps: decoding (type errors name the field path,
//! e.g. `umem.frameSize`, through `serde_path_to_error`) and [`Config::validate`]
//! (semantic checks, also naming the field). A `Config` that left [`Config::load`] or
//! [`Config::from_yaml_str`] is valid for this machine: the workers' cores are online
//! and the UMEM geometry is one AF_XDP accepts. See `config/node.yaml` for an annotated
//! example.
//!
//! Layout: this file holds the document (`Config` and its sections, defaults, errors);
//! `load` decoding and validation, `cidr` the IPv4 prefix type, `mtu` the local-MTU
//! limits of a frame size, `cpus` the online-CPU list.

use std::fmt;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Default control socket and state directory (shared with the CNI plugin).
pub use xsknet_proto::consts::{DEFAULT_SOCKET, DEFAULT_STATE_DIR};
/// Default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/xsknet/node.yaml";
/// Longest Linux interface name (IFNAMSIZ minus the NUL).
pub const MAX_IFNAME_LEN: usize = 15;
/// Longest path a Unix socket address can hold (`sun_path` minus the NUL).
pub const MAX_SOCKET_PATH_LEN: usize = 107;

/// A configuration that could not be read, decoded or validated.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// YAML syntax errors, or a type error at `field` (the serde message says what was
    /// expected and what was found).
    #[error("invalid config {file}: {}{message}", field_prefix(.field))]
    Decode {
        file: String,
        field: String,
        message: String,
    },
    /// A value of the right type that is not acceptable.
    #[error("invalid config {file}: {field}: {message} (got {value})")]
    Invalid {
        file: String,
        field: String,
        message: String,
        value: String,
    },
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() || field == "." {
        String::new()
    } else {
        format!("{field}: ")
    }
}

impl ConfigError {
    /// The field path the error is about (`umem.frameSize`), if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Decode { field, .. } | ConfigError::Invalid { field, .. } => {
                (!field.is_empty() && field != ".").then_some(field.as_str())
            }
        }
    }
}

mod cidr;
mod cpus;
mod load;
mod mtu;

pub use cidr::{CidrError, Ipv4Cidr};
use cpus::format_cpu_list;
pub use cpus::{online_cpus, parse_cpu_list};
pub use mtu::{default_local_mtu, kernel_has_xdp_sg, max_local_mtu, max_single_buffer_mtu};

/// The whole `node.yaml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// Control socket path.
    pub socket: PathBuf,
    /// Where endpoints and allocations survive restarts.
    pub state_dir: PathBuf,
    /// This node's pod prefix.
    pub pod_cidr: Ipv4Cidr,
    /// Dataplane workers, one per pinned core.
    pub workers: Vec<WorkerConfig>,
    pub umem: UmemConfig,
    /// The MTU of a pod's interface for traffic to pods of this node (issue 11): the
    /// CNI plugin gives the pod interface this MTU, routes this node's `podCidr` at
    /// it, and keeps the default route (other nodes, Services, the world) at the pod
    /// MTU. Fewer, larger packets through the copy-mode AF_XDP path (measured:
    /// bench/RESULTS.md "Node-local TCP"). Up to [`max_single_buffer_mtu`] a packet
    /// fits one UMEM frame; above it pods' sockets are bound for multi-buffer packets
    /// (`XDP_USE_SG`, Linux 6.6+), at most [`max_local_mtu`]. Unset =
    /// [`default_local_mtu`] (32768 with 4 KiB frames, chosen from bench/RESULTS.md
    /// "Node-local TCP"; a kernel without multi-buffer AF_XDP gets the single-buffer
    /// maximum instead, see [`Config::fit_kernel`]); 0 = off (the pod MTU everywhere).
    /// Read it through [`Config::local_mtu`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_mtu: Option<u32>,
    pub host_port: HostPortConfig,
    pub idle: IdleConfig,
    /// A `tracing` filter: a level (`info`) or directives (`info,xsknet_dataplane=debug`).
    pub log_level: String,
    /// A directory of Kubernetes YAML (NetworkPolicy, Namespace, Pod) applied at start
    /// and re-applied, all or nothing, whenever a file in it changes. None = no
    /// directory (policies come from `xsknetctl policy apply` only).
    pub policy_dir: Option<PathBuf>,
    // --- overlay (issue 9): the uplink and the VXLAN overlay -----------------------
    /// The uplink NIC (used only when `overlay` is set).
    pub uplink: UplinkConfig,
    /// The VXLAN overlay to other nodes; None = a single node, no uplink (as before).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlay: Option<crate::cluster::config::OverlayConfig>,
    /// This node's name in the cluster (a DNS subdomain); default: the host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The cluster datastore (etcd); None = static mode: one node, or static
    /// `overlay.peers`, exactly as without it. See [`Config::subnet_request`] for how
    /// the node's pod prefix is chosen with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datastore: Option<crate::cluster::config::DatastoreConfig>,
    /// Whether `podCidr` was written in the file (with a datastore, an explicit
    /// `podCidr` is this node's prefix; otherwise one is claimed). Not a key.
    #[serde(skip)]
    pub pod_cidr_explicit: bool,
    // --- end overlay -----------------------------------------------------------------

    // --- Services and pod egress (issue 8) ---------------------------------------
    /// The cluster's Service CIDR (kube-proxy's ClusterIPs). A pod's packet to it
    /// leaving through the host port has its egress policy decided on the DNATed
    /// packet that comes back (see `pipeline::policy`).
    pub service_cidr: Ipv4Cidr,
    /// The whole cluster's pod CIDR, excluded from the egress masquerade (pod → pod
    /// keeps its source on every node). None = this node's `podCidr` (static mode).
    pub cluster_cidr: Option<Ipv4Cidr>,
    pub masquerade: MasqueradeConfig,
    /// The Prometheus metrics endpoint (off unless `metrics.listen` is set).
    pub metrics: MetricsConfig,
}

/// `uplink`: the NIC VXLAN leaves and arrives on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct UplinkConfig {
    /// The interface; default: the one holding the default route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    pub xdp_mode: XdpMode,
    /// Bind the uplink's AF_XDP sockets in zero-copy mode (the driver must have it).
    pub zero_copy: bool,
}

/// How the XDP program is attached to the uplink.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// The driver's native XDP where it has one, generic otherwise.
    #[default]
    Native,
    /// Generic (skb) XDP.
    Skb,
}

/// Pod egress masquerade to the node's address (flannel's `ipMasq`), as an nf_tables
/// table the daemon writes over netlink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MasqueradeConfig {
    /// On by default. Off: the daemon removes its table at start.
    pub enabled: bool,
    /// Name of the nf_tables table (family `ip`) the daemon owns.
    pub table: String,
}

impl Default for MasqueradeConfig {
    fn default() -> Self {
        MasqueradeConfig {
            enabled: true,
            table: "xsknet".to_string(),
        }
    }
}

/// `metrics:` — the Prometheus text endpoint (`crate::metrics`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` to serve `GET /metrics` on, e.g. `127.0.0.1:9464`. None (the
    /// default) = no endpoint. Any address is served as given; anything but loopback
    /// exposes the counters (pod names and addresses among them) to the network.
    pub listen: Option<std::net::SocketAddr>,
}

impl Config {
    /// The node-local pod MTU in force: `localMtu`, or the largest one frame holds
    /// when unset; None when `localMtu: 0` turns it off.
    pub fn local_mtu(&self) -> Option<u32> {
        match self.local_mtu {
            None => Some(default_local_mtu(self.umem.frame_size)),
            Some(0) => None,
            Some(m) => Some(m),
        }
    }

    /// On a kernel without multi-buffer AF_XDP (`XDP_USE_SG`, before Linux 6.6; from
    /// `kernel_release`, e.g. `/proc/sys/kernel/osrelease`), an unset `localMtu`
    /// falls back to what one frame holds. Returns the fallback when it applied. An
    /// explicit `localMtu` above one frame is kept (the bind then fails and says so).
    pub fn fit_kernel(&mut self, kernel_release: &str) -> Option<u32> {
        if self.local_mtu.is_some() || !self.multi_buffer() || kernel_has_xdp_sg(kernel_release) {
            return None;
        }
        let m = max_single_buffer_mtu(self.umem.frame_size);
        self.local_mtu = Some(m);
        Some(m)
    }

    /// Whether pod and host ports must carry multi-buffer packets: a local MTU above
    /// what one frame holds.
    pub fn multi_buffer(&self) -> bool {
        self.local_mtu()
            .is_some_and(|m| m > max_single_buffer_mtu(self.umem.frame_size))
    }

    /// The prefix the masquerade excludes: `clusterCidr`, else (with a datastore)
    /// `overlay.clusterCidr`, else this node's `podCidr`.
    pub fn masquerade_exclude(&self) -> Ipv4Cidr {
        let overlay = self
            .datastore
            .as_ref()
            .and(self.overlay.as_ref())
            .map(|o| o.cluster_cidr);
        self.cluster_cidr.or(overlay).unwrap_or(self.pod_cidr)
    }

    /// This node's name: `nodeName`, else the host name (lower-cased, as Kubernetes
    /// names nodes).
    pub fn node_name(&self) -> String {
        match &self.node_name {
            Some(n) => n.clone(),
            None => host_name().to_ascii_lowercase(),
        }
    }

    /// With a datastore, how this node gets its pod prefix — the first that applies:
    /// `overlay.podCidr`; the top-level `podCidr` when the file sets it; else a
    /// `/overlay.subnetLen` of `overlay.clusterCidr` claimed in the datastore (the one
    /// this node owns already, else the first free one). None in static mode.
    pub fn subnet_request(&self) -> Option<crate::cluster::etcd::SubnetRequest> {
        use crate::cluster::etcd::SubnetRequest;
        self.datastore.as_ref()?;
        let o = self.overlay.as_ref()?;
        Some(match (o.pod_cidr, self.pod_cidr_explicit) {
            (Some(c), _) => SubnetRequest::Fixed(c),
            (None, true) => SubnetRequest::Fixed(self.pod_cidr),
            (None, false) => SubnetRequest::FromCluster {
                cluster: o.cluster_cidr,
                len: o.subnet_len,
            },
        })
    }
}

/// The kernel's host name (`/proc/sys/kernel/hostname`), "localhost" if unreadable.
pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// One worker thread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerConfig {
    /// CPU the worker is pinned to.
    pub core: usize,
}

/// UMEM and ring geometry, per worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct UmemConfig {
    /// Bytes per frame: 2048 or 4096. 4096 by default: it carries the node-local
    /// jumbo MTU (`localMtu`) in one frame.
    pub frame_size: u32,
    /// Frames of each port's own UMEM (fill ring + RX + TX in flight). The default,
    /// 992 × 4 KiB plus four 512-entry rings: ~4 MiB per pod (bench/RESULTS.md "Node-local
    /// TCP": at 2 MiB a two-pod TCP stream at the local MTU loses hundreds of packets
    /// at the sender's RX ring per 5 s, at 4 MiB a handful).
    pub frames_per_port: u32,
    /// Entries in each of a port's four rings; a power of two.
    pub ring_size: u32,
    /// Ports one worker can own (port slots and counters are sized from it).
    pub max_ports_per_worker: u32,
    /// Frames the kernel transmits per TX wakeup (`XDP_MAX_TX_SKB_BUDGET`, Linux
    /// 6.17+; kernel default 32); 0 = the kernel's default. At most `ringSize`.
    pub tx_budget: u32,
}

impl Default for UmemConfig {
    fn default() -> Self {
        UmemConfig {
            frame_size: 4096,
            frames_per_port: 992,
            ring_size: 512,
            max_ports_per_worker: 64,
            tx_budget: 0,
        }
    }
}

/// The veth pair joining the node's own stack to the dataplane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HostPortConfig {
    pub enabled: bool,
    /// The kernel-side end; the node routes the pod CIDR through it.
    pub name: String,
    /// The dataplane-side end, where the AF_XDP socket sits.
    pub peer_name: String,
}

impl Default for HostPortConfig {
    fn default() -> Self {
        HostPortConfig {
            enabled: true,
            name: "xsknet0".to_string(),
            peer_name: "xsknet0-dp".to_string(),
        }
    }
}

/// When workers stop busy-polling and sleep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IdleConfig {
    /// Microseconds without traffic before a worker falls back to poll(2).
    pub busy_poll_us: u64,
    /// poll(2) timeout while sleeping, in milliseconds.
    pub poll_timeout_ms: i32,
}

impl Default for IdleConfig {
    fn default() -> Self {
        IdleConfig {
            busy_poll_us: 1000,
            poll_timeout_ms: 100,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let last_cpu = online_cpus().last().copied().unwrap_or(0);
        Config {
            socket: PathBuf::from(DEFAULT_SOCKET),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            pod_cidr: Ipv4Cidr {
                addr: Ipv4Addr::new(10, 244, 0, 0),
                prefix: 24,
            },
            workers: vec![WorkerConfig { core: last_cpu }],
            umem: UmemConfig::default(),
            local_mtu: None,
            host_port: HostPortConfig::default(),
            idle: IdleConfig::default(),
            log_level: "info".to_string(),
            policy_dir: None,
            uplink: UplinkConfig::default(),
            overlay: None,
            node_name: None,
            datastore: None,
            pod_cidr_explicit: false,
            service_cidr: Ipv4Cidr {
                addr: Ipv4Addr::new(10, 96, 0, 0),
                prefix: 12,
            },
            cluster_cidr: None,
            masquerade: MasqueradeConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests;
