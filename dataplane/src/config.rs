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

/// An IPv4 prefix, written `10.244.0.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// Why a string is not an IPv4 prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("expected an IPv4 prefix like 10.244.0.0/24, got {0:?}")]
    MissingSlash(String),
    #[error("{0:?} is not an IPv4 address")]
    BadAddress(String),
    #[error("prefix length {0:?} is not a number in 0..=32")]
    BadPrefix(String),
}

impl Ipv4Cidr {
    /// A prefix; `prefix` must be at most 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, CidrError> {
        if prefix > 32 {
            return Err(CidrError::BadPrefix(prefix.to_string()));
        }
        Ok(Ipv4Cidr { addr, prefix })
    }

    /// The netmask as a host-order integer.
    pub fn mask(&self) -> u32 {
        match self.prefix {
            0 => 0,
            p => u32::MAX << (32 - u32::from(p.min(32))),
        }
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// True when `addr` has bits set below the prefix.
    pub fn has_host_bits(&self) -> bool {
        u32::from(self.addr) & !self.mask() != 0
    }

    /// True when the two prefixes share an address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        let mask = if self.prefix < other.prefix {
            self.mask()
        } else {
            other.mask()
        };
        u32::from(self.addr) & mask == u32::from(other.addr) & mask
    }

    /// True when `ip` lies inside the prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| CidrError::MissingSlash(s.to_string()))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| CidrError::BadAddress(addr.to_string()))?;
        // u8::from_str accepts a leading '+'; a prefix is digits only.
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CidrError::BadPrefix(prefix.to_string()));
        }
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| CidrError::BadPrefix(prefix.to_string()))?;
        Ipv4Cidr::new(addr, prefix)
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

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

/// The largest `localMtu` for a UMEM frame size: a multi-buffer packet is at most
/// [`MAX_CHAIN`](crate::xsk::MAX_CHAIN) buffers of a frame less its headroom (what the
/// kernel's copy-mode RX fills and TX takes), and IPv4 at most 65535 bytes: 32242 for
/// 2 KiB frames, 65535 for 4 KiB.
pub const fn max_local_mtu(frame_size: u32) -> u32 {
    let chain =
        crate::xsk::MAX_CHAIN as u32 * (frame_size - crate::xsk::umem::HEADROOM as u32) - 14;
    if chain < 65535 {
        chain
    } else {
        65535
    }
}

/// The default `localMtu` for a frame size: the multi-buffer limit (65535 with 4 KiB
/// frames, 32242 with 2 KiB). Measured on a quiet machine (bench/RESULTS.md "Node-local
/// TCP"): 65535 gave 8.2 Gbit/s between two pods against 6.0 at 32768 (four runs each).
pub const fn default_local_mtu(frame_size: u32) -> u32 {
    max_local_mtu(frame_size)
}

/// Whether a kernel release (`6.18.44-fc`, `6.1.0-28-amd64`) has multi-buffer AF_XDP
/// (`XDP_USE_SG`, Linux 6.6). Unparseable: assumed recent.
pub fn kernel_has_xdp_sg(release: &str) -> bool {
    let mut it = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (it.next().flatten(), it.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (6, 6),
        _ => true,
    }
}

/// The largest `localMtu` one UMEM frame holds: the IP packet plus its Ethernet
/// header must fit one frame behind [`HEADROOM`](crate::xsk::umem::HEADROOM), and a
/// veth with a single-buffer XDP program attached refuses a peer MTU above
/// one page − XDP headroom − `skb_shared_info` − Ethernet header (3506 on 4 KiB pages).
pub const fn max_single_buffer_mtu(frame_size: u32) -> u32 {
    const VETH_XDP_MAX: u32 = 4096 - 256 - 320 - 14;
    let frame = frame_size - crate::xsk::umem::HEADROOM as u32 - 14;
    if frame < VETH_XDP_MAX {
        frame
    } else {
        VETH_XDP_MAX
    }
}

/// The online CPUs, from `/sys/devices/system/cpu/online` (`0-3,6`); falls back to
/// `0..available_parallelism` where sysfs is not mounted.
pub fn online_cpus() -> Vec<usize> {
    fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(&s))
        .filter(|cpus| !cpus.is_empty())
        .unwrap_or_else(|| {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            (0..n).collect()
        })
}

/// Parses a kernel CPU list (`0-3,6,8-9`) into sorted CPU numbers.
pub fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi): (usize, usize) = (lo.parse().ok()?, hi.parse().ok()?);
                if hi < lo || hi - lo > 1 << 16 {
                    return None;
                }
                cpus.extend(lo..=hi);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// Formats CPU numbers back into the kernel's list form, for messages.
fn format_cpu_list(cpus: &[usize]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

impl Config {
    /// Decodes and validates a YAML document; `file` only labels error messages.
    pub fn from_yaml_str(yaml: &str) -> Result<Config, ConfigError> {
        Self::from_yaml_str_named(yaml, "<string>")
    }

    /// Reads, decodes and validates `path`. A missing file is an error here: the
    /// daemon decides whether an absent default path means "all defaults".
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml_str_named(&text, &path.display().to_string())
    }

    fn from_yaml_str_named(yaml: &str, file: &str) -> Result<Config, ConfigError> {
        let config = if is_blank_yaml(yaml) {
            Config::default()
        } else {
            let de = serde_yaml_ng::Deserializer::from_str(yaml);
            // `Option` so that a document of just `~` / `null` also means "all defaults".
            let config: Option<Config> = serde_path_to_error::deserialize(de).map_err(|e| {
                let field = e.path().to_string();
                let message = e.into_inner().to_string();
                // serde_yaml_ng prefixes its own (shorter) path; keep ours only.
                let message = match message.split_once(": ") {
                    Some((prefix, rest)) if field.starts_with(prefix) => rest.to_string(),
                    _ => message,
                };
                ConfigError::Decode {
                    file: file.to_string(),
                    field,
                    message,
                }
            })?;
            let mut config = config.unwrap_or_default();
            config.pod_cidr_explicit = sets_pod_cidr(yaml);
            config
        };
        config.validate_named(file, &online_cpus())?;
        Ok(config)
    }

    /// Semantic checks against this machine's online CPUs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_named("<config>", &online_cpus())
    }

    /// Semantic checks; `online` is the set of CPUs workers may be pinned to.
    pub fn validate_with_cpus(&self, online: &[usize]) -> Result<(), ConfigError> {
        self.validate_named("<config>", online)
    }

    fn validate_named(&self, file: &str, online: &[usize]) -> Result<(), ConfigError> {
        let bad = |field: &str, message: &str, value: &dyn fmt::Display| ConfigError::Invalid {
            file: file.to_string(),
            field: field.to_string(),
            message: message.to_string(),
            value: value.to_string(),
        };

        check_path(&self.socket, "socket", &bad)?;
        if self.socket.as_os_str().len() > MAX_SOCKET_PATH_LEN {
            return Err(bad(
                "socket",
                &format!(
                    "a Unix socket path can be at most {MAX_SOCKET_PATH_LEN} bytes, this one is {}",
                    self.socket.as_os_str().len()
                ),
                &self.socket.display(),
            ));
        }
        check_path(&self.state_dir, "stateDir", &bad)?;

        let cidr = &self.pod_cidr;
        if !(8..=30).contains(&cidr.prefix) {
            return Err(bad("podCidr", "prefix length must be in 8..=30", cidr));
        }
        if cidr.has_host_bits() {
            return Err(bad(
                "podCidr",
                &format!(
                    "host bits are set; the network address is {}/{}",
                    cidr.network(),
                    cidr.prefix
                ),
                cidr,
            ));
        }

        for (field, c) in [
            ("serviceCidr", Some(&self.service_cidr)),
            ("clusterCidr", self.cluster_cidr.as_ref()),
        ] {
            let Some(c) = c else { continue };
            if !(1..=32).contains(&c.prefix) {
                return Err(bad(field, "prefix length must be in 1..=32", c));
            }
            if c.has_host_bits() {
                return Err(bad(field, "host bits are set", c));
            }
        }
        // With a datastore and no explicit podCidr the node's prefix is claimed at start.
        let pod_cidr_known = self.datastore.is_none() || self.pod_cidr_explicit;
        if let (Some(c), true) = (&self.cluster_cidr, pod_cidr_known) {
            if !c.contains(self.pod_cidr.addr) || c.prefix > self.pod_cidr.prefix {
                return Err(bad("clusterCidr", "must contain podCidr", c));
            }
        }
        let t = &self.masquerade.table;
        if t.is_empty()
            || t.len() > 64
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(bad(
                "masquerade.table",
                "1-64 characters of [A-Za-z0-9_-]",
                t,
            ));
        }

        if self.workers.is_empty() {
            return Err(bad("workers", "at least one worker is required", &"[]"));
        }
        for (i, w) in self.workers.iter().enumerate() {
            let field = format!("workers[{i}].core");
            if !online.contains(&w.core) {
                return Err(bad(
                    &field,
                    &format!("not an online CPU (online: {})", format_cpu_list(online)),
                    &w.core,
                ));
            }
            if let Some(j) = self.workers[..i].iter().position(|o| o.core == w.core) {
                return Err(bad(
                    &field,
                    &format!("core already used by workers[{j}]"),
                    &w.core,
                ));
            }
        }

        let u = &self.umem;
        if u.frame_size != 2048 && u.frame_size != 4096 {
            return Err(bad("umem.frameSize", "must be 2048 or 4096", &u.frame_size));
        }
        if !u.ring_size.is_power_of_two() || !(64..=16384).contains(&u.ring_size) {
            return Err(bad(
                "umem.ringSize",
                "must be a power of two in 64..=16384",
                &u.ring_size,
            ));
        }
        if u.frames_per_port < 128 {
            return Err(bad(
                "umem.framesPerPort",
                "must be at least 128",
                &u.frames_per_port,
            ));
        }
        if u.frames_per_port < 2 * u.ring_size - u.ring_size / 16 {
            return Err(bad(
                "umem.framesPerPort",
                &format!(
                    "must be at least about twice umem.ringSize ({}): a full fill ring plus frames for TX",
                    u.ring_size
                ),
                &u.frames_per_port,
            ));
        }
        if u.tx_budget != 0 && !(32..=u.ring_size).contains(&u.tx_budget) {
            return Err(bad(
                "umem.txBudget",
                &format!(
                    "must be 0 (kernel default) or in 32..={} (umem.ringSize)",
                    u.ring_size
                ),
                &u.tx_budget,
            ));
        }
        if let Some(m) = self.local_mtu.filter(|&m| m != 0) {
            let max = max_local_mtu(u.frame_size);
            if !(1280..=max).contains(&m) {
                return Err(bad(
                    "localMtu",
                    &format!(
                        "must be 0 (off) or in 1280..={max}: a packet must fit {} buffers \
                         of a {}-byte UMEM frame behind its headroom (65535 at most)",
                        crate::xsk::MAX_CHAIN,
                        u.frame_size
                    ),
                    &m,
                ));
            }
        }
        if !(1..=1024).contains(&u.max_ports_per_worker) {
            return Err(bad(
                "umem.maxPortsPerWorker",
                "must be in 1..=1024",
                &u.max_ports_per_worker,
            ));
        }

        let h = &self.host_port;
        check_ifname(&h.name, "hostPort.name", &bad)?;
        check_ifname(&h.peer_name, "hostPort.peerName", &bad)?;
        if h.name == h.peer_name {
            return Err(bad(
                "hostPort.peerName",
                "must differ from hostPort.name",
                &h.peer_name,
            ));
        }

        let idle = &self.idle;
        if idle.busy_poll_us > 1_000_000 {
            return Err(bad(
                "idle.busyPollUs",
                "must be at most 1000000 (one second)",
                &idle.busy_poll_us,
            ));
        }
        if !(1..=10_000).contains(&idle.poll_timeout_ms) {
            return Err(bad(
                "idle.pollTimeoutMs",
                "must be in 1..=10000",
                &idle.poll_timeout_ms,
            ));
        }

        check_log_level(&self.log_level).map_err(|m| bad("logLevel", &m, &self.log_level))?;
        self.validate_overlay(&bad)?;
        Ok(())
    }

    /// `uplink` and `overlay` (issue 9).
    fn validate_overlay(&self, bad: &BadFn<'_>) -> Result<(), ConfigError> {
        if let Some(ifname) = &self.uplink.interface {
            check_ifname(ifname, "uplink.interface", bad)?;
        }
        self.validate_datastore(bad)?;
        let Some(o) = &self.overlay else {
            return Ok(());
        };
        o.validate_static()
            .map_err(|e| bad(&e.field, &e.message, &e.value))?;
        let pod_cidr_known = self.datastore.is_none() || self.pod_cidr_explicit;
        if let (Some(p), true) = (o.pod_cidr, pod_cidr_known) {
            if p != self.pod_cidr {
                return Err(bad(
                    "overlay.podCidr",
                    &format!("must equal podCidr {} when both are set", self.pod_cidr),
                    &p,
                ));
            }
        }
        for (i, peer) in o.peers.iter().enumerate() {
            if peer.pod_cidr.overlaps(&self.pod_cidr) {
                return Err(bad(
                    &format!("overlay.peers[{i}].podCidr"),
                    &format!("overlaps this node's podCidr {}", self.pod_cidr),
                    &peer.pod_cidr,
                ));
            }
        }
        Ok(())
    }

    /// `nodeName` and `datastore`: with a datastore, `overlay` is required (`overlay: {}`
    /// takes the defaults), its `peers` must be empty (the nodes come from the
    /// datastore), an explicit `podCidr` must lie in `overlay.clusterCidr`, and
    /// `policyDir` is not used (policies live in the datastore).
    fn validate_datastore(&self, bad: &BadFn<'_>) -> Result<(), ConfigError> {
        let name = self.node_name();
        let name_field = if self.node_name.is_some() {
            "nodeName"
        } else {
            "nodeName (default: the host name)"
        };
        if self.node_name.is_some() || self.datastore.is_some() {
            crate::policy::k8s::check_dns_subdomain(&name).map_err(|m| {
                bad(
                    name_field,
                    &format!("must be a DNS subdomain (lower-case a-z, 0-9, '-', '.'): {m}"),
                    &format!("{name:?}"),
                )
            })?;
        }
        let Some(ds) = &self.datastore else {
            return Ok(());
        };
        ds.validate()
            .map_err(|e| bad(&e.field, &e.message, &e.value))?;
        let Some(o) = &self.overlay else {
            return Err(bad(
                "overlay",
                "required with a datastore (`overlay: {}` takes the defaults)",
                &"absent",
            ));
        };
        if !o.peers.is_empty() {
            return Err(bad(
                "overlay.peers",
                "must be empty with a datastore: the other nodes come from it",
                &format!("{} peers", o.peers.len()),
            ));
        }
        if self.pod_cidr_explicit && o.pod_cidr.is_none() {
            let c = o.cluster_cidr;
            if self.pod_cidr.prefix < c.prefix || !c.contains(self.pod_cidr.addr) {
                return Err(bad(
                    "podCidr",
                    &format!("must lie inside overlay.clusterCidr {c}"),
                    &self.pod_cidr,
                ));
            }
        }
        if let Some(d) = &self.policy_dir {
            return Err(bad(
                "policyDir",
                "not used with a datastore: policies live there (xsknetctl policy apply writes them)",
                &d.display(),
            ));
        }
        Ok(())
    }

    /// Frames one worker holds with every port slot in use: `framesPerPort × maxPortsPerWorker`.
    pub fn total_frames_per_worker(&self) -> u64 {
        u64::from(self.umem.frames_per_port) * u64::from(self.umem.max_ports_per_worker)
    }
}

/// Whether the document sets the top-level `podCidr` key (a valid document: it
/// decoded into a [`Config`] already).
fn sets_pod_cidr(yaml: &str) -> bool {
    serde_yaml_ng::from_str::<serde_yaml_ng::Value>(yaml)
        .ok()
        .and_then(|v| v.as_mapping().map(|m| m.contains_key("podCidr")))
        .unwrap_or(false)
}

/// Only whitespace, comments and document markers: serde_yaml_ng reports such input
/// as "EOF while parsing", but an empty node.yaml means "all defaults".
fn is_blank_yaml(yaml: &str) -> bool {
    yaml.lines().all(|line| {
        let t = line.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    })
}

type BadFn<'a> = dyn Fn(&str, &str, &dyn fmt::Display) -> ConfigError + 'a;

fn check_path(path: &Path, field: &str, bad: &BadFn<'_>) -> Result<(), ConfigError> {
    if !path.is_absolute() {
        return Err(bad(field, "must be an absolute path", &path.display()));
    }
    Ok(())
}

/// The kernel's `dev_valid_name` rules.
fn check_ifname(name: &str, field: &str, bad: &BadFn<'_>) -> Result<(), ConfigError> {
    let shown = format!("{name:?}");
    if name.is_empty() || name.len() > MAX_IFNAME_LEN {
        return Err(bad(
            field,
            &format!("an interface name is 1 to {MAX_IFNAME_LEN} bytes"),
            &shown,
        ));
    }
    if name == "." || name == ".." {
        return Err(bad(field, "not a valid interface name", &shown));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(bad(
            field,
            "an interface name cannot contain '/', ':' or whitespace",
            &shown,
        ));
    }
    Ok(())
}

fn check_log_level(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    if filter.trim().is_empty() {
        return Err("must name a level (trace, debug, info, warn, error, off)".to_string());
    }
    for directive in filter.split(',').map(str::trim) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        // A bare target (`xsknet_dataplane`) is a valid directive: it enables trace.
        if directive.contains('=') && !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "unknown level {level:?} in directive {directive:?} (trace, debug, info, warn, error, off)"
            ));
        }
        if directive.is_empty() {
            return Err("empty directive".to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> ConfigError {
        Config::from_yaml_str(yaml).expect_err(yaml)
    }

    fn assert_names(yaml: &str, field: &str) {
        let e = err(yaml);
        assert_eq!(e.field(), Some(field), "{yaml} -> {e}");
        let msg = e.to_string();
        assert!(msg.starts_with("invalid config <string>: "), "{msg}");
        assert!(msg.contains(field), "{msg}");
    }

    #[test]
    fn empty_and_comment_only_files_are_defaults() {
        for yaml in ["", "\n", "# nothing\n", "---\n", "~\n", "{}\n"] {
            let c = Config::from_yaml_str(yaml).unwrap_or_else(|e| panic!("{yaml:?}: {e}"));
            assert_eq!(c, Config::default());
        }
    }

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.socket, PathBuf::from("/run/xsknet/xsknetd.sock"));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/xsknet"));
        assert_eq!(c.pod_cidr.to_string(), "10.244.0.0/24");
        assert_eq!(c.workers.len(), 1);
        assert_eq!(Some(&c.workers[0].core), online_cpus().last());
        assert_eq!(c.umem.frame_size, 4096);
        assert_eq!(c.umem.frames_per_port, 992);
        assert_eq!(c.umem.ring_size, 512);
        assert_eq!(c.local_mtu(), Some(65535));
        assert_eq!(c.umem.max_ports_per_worker, 64);
        assert!(c.host_port.enabled);
        assert_eq!(c.host_port.name, "xsknet0");
        assert_eq!(c.host_port.peer_name, "xsknet0-dp");
        assert_eq!(c.idle.busy_poll_us, 1000);
        assert_eq!(c.idle.poll_timeout_ms, 100);
        assert_eq!(c.log_level, "info");
        assert_eq!(c.total_frames_per_worker(), 992 * 64);
        c.validate().unwrap();
    }

    #[test]
    fn full_document_round_trips() {
        let yaml = "\
socket: /tmp/x/ctl.sock
stateDir: /tmp/x/state
podCidr: 10.1.2.0/23
workers:
  - core: 0
umem:
  frameSize: 4096
  framesPerPort: 2048
  ringSize: 1024
  maxPortsPerWorker: 8
hostPort:
  enabled: false
  name: hp0
  peerName: hp0-dp
idle:
  busyPollUs: 0
  pollTimeoutMs: 5
logLevel: debug,xsknet_dataplane=trace
";
        let c = Config::from_yaml_str(yaml).unwrap();
        assert_eq!(c.pod_cidr, "10.1.2.0/23".parse().unwrap());
        assert_eq!(c.umem.frame_size, 4096);
        assert!(!c.host_port.enabled);
        assert_eq!(c.total_frames_per_worker(), 16384);
        let again = serde_yaml_ng::to_string(&c).unwrap();
        assert_eq!(Config::from_yaml_str(&again).unwrap(), c);
    }

    #[test]
    fn local_mtu_single_buffer_default_and_multi_buffer_limit() {
        assert_eq!(
            (max_single_buffer_mtu(2048), max_single_buffer_mtu(4096)),
            (1778, 3506)
        );
        assert_eq!((max_local_mtu(2048), max_local_mtu(4096)), (32242, 65535));
        let v = Config::from_yaml_str;
        let c = v("localMtu: 3500\numem:\n  frameSize: 4096\n").unwrap();
        assert_eq!(c.local_mtu(), Some(3500));
        let two_k = "umem:\n  frameSize: 2048\n  framesPerPort: 992\n  ringSize: 512\n";
        assert_eq!(
            v(&format!("localMtu: 1778\n{two_k}")).unwrap().local_mtu(),
            Some(1778)
        );
        // Unset: the default (multi-buffer), or one frame on an older kernel; 0: off.
        assert_eq!(v("").unwrap().local_mtu(), Some(65535));
        assert_eq!(v(two_k).unwrap().local_mtu(), Some(32242));
        let mut old = v("").unwrap();
        assert_eq!(old.fit_kernel("6.1.0-28-amd64"), Some(3506));
        assert_eq!((old.local_mtu(), old.multi_buffer()), (Some(3506), false));
        let mut new = v("").unwrap();
        assert_eq!(new.fit_kernel("6.18.44-fc-v669"), None);
        assert_eq!(new.local_mtu(), Some(65535));
        let mut explicit = v("localMtu: 9000\n").unwrap();
        assert_eq!(explicit.fit_kernel("5.15.0"), None);
        assert!(kernel_has_xdp_sg("6.6.0") && kernel_has_xdp_sg("7.0") && kernel_has_xdp_sg("?"));
        assert!(!kernel_has_xdp_sg("6.5.13") && !kernel_has_xdp_sg("5.19.1-x"));
        assert_eq!(v("localMtu: 0\n").unwrap().local_mtu(), None);
        // Above one frame: multi-buffer, up to MAX_CHAIN buffers (or 65535).
        let c = v("localMtu: 9000\n").unwrap();
        assert_eq!((c.local_mtu(), c.multi_buffer()), (Some(9000), true));
        assert!(v("").unwrap().multi_buffer());
        assert!(!v("localMtu: 3506\n").unwrap().multi_buffer());
        assert!(v(&format!("localMtu: 3000\n{two_k}"))
            .unwrap()
            .multi_buffer());
        for (y, range) in [
            (format!("localMtu: 32243\n{two_k}"), "1280..=32242"),
            ("localMtu: 65536\n".into(), "1280..=65535"),
            ("localMtu: 1000\n".into(), "1280..=65535"),
        ] {
            let e = v(&y).unwrap_err().to_string();
            assert!(e.contains("localMtu") && e.contains(range), "{y}: {e}");
        }
    }

    #[test]
    fn partial_sections_keep_other_defaults() {
        let c = Config::from_yaml_str("umem:\n  ringSize: 128\n").unwrap();
        assert_eq!(c.umem.ring_size, 128);
        assert_eq!(c.umem.frame_size, 4096);
    }

    #[test]
    fn type_errors_name_the_field_path() {
        assert_names("umem:\n  frameSize: big\n", "umem.frameSize");
        assert_names(
            "idle:\n  pollTimeoutMs: -5000000000\n",
            "idle.pollTimeoutMs",
        );
        assert_names("workers:\n  - core: x\n", "workers[0].core");
        assert_names("podCidr: 10.0.0.0\n", "podCidr");
        assert_names("podCidr: 10.0.0.0/33\n", "podCidr");
        assert_names("hostPort:\n  enabled: maybe\n", "hostPort.enabled");
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let e = err("umem:\n  frameSze: 2048\n");
        let msg = e.to_string();
        assert!(msg.contains("umem"), "{msg}");
        assert!(msg.contains("frameSze"), "{msg}");
        let msg = err("sokcet: /x\n").to_string();
        assert!(msg.contains("sokcet"), "{msg}");
        let msg = err("workers:\n  - core: 0\n    cpu: 1\n").to_string();
        assert!(msg.contains("cpu"), "{msg}");
    }

    #[test]
    fn bad_yaml_is_an_error() {
        let msg = err("umem: [\n").to_string();
        assert!(msg.starts_with("invalid config <string>: "), "{msg}");
        let msg = err("- a\n- b\n").to_string();
        assert!(msg.contains("invalid type"), "{msg}");
    }

    #[test]
    fn every_validation_error_names_its_field() {
        let cases: &[(&str, &str)] = &[
            ("socket: relative.sock", "socket"),
            (&format!("socket: /{}", "s".repeat(120)), "socket"),
            ("stateDir: var/lib", "stateDir"),
            ("podCidr: 10.244.0.1/24", "podCidr"),
            ("podCidr: 10.0.0.0/7", "podCidr"),
            ("podCidr: 10.0.0.0/31", "podCidr"),
            ("workers: []", "workers"),
            ("workers: [{core: 100000}]", "workers[0].core"),
            ("workers: [{core: 0}, {core: 0}]", "workers[1].core"),
            ("umem: {frameSize: 3000}", "umem.frameSize"),
            ("umem: {ringSize: 500}", "umem.ringSize"),
            ("umem: {ringSize: 32}", "umem.ringSize"),
            (
                "umem: {ringSize: 32768, framesPerPort: 65536}",
                "umem.ringSize",
            ),
            (
                "umem: {framesPerPort: 64, ringSize: 64}",
                "umem.framesPerPort",
            ),
            (
                "umem: {framesPerPort: 256, ringSize: 512}",
                "umem.framesPerPort",
            ),
            ("umem: {maxPortsPerWorker: 0}", "umem.maxPortsPerWorker"),
            ("umem: {maxPortsPerWorker: 1025}", "umem.maxPortsPerWorker"),
            ("hostPort: {name: ''}", "hostPort.name"),
            ("hostPort: {name: abcdefghijklmnop}", "hostPort.name"),
            ("hostPort: {name: 'a/b'}", "hostPort.name"),
            ("hostPort: {name: 'a b'}", "hostPort.name"),
            ("hostPort: {peerName: '..'}", "hostPort.peerName"),
            ("hostPort: {peerName: xsknet0}", "hostPort.peerName"),
            ("idle: {busyPollUs: 1000001}", "idle.busyPollUs"),
            ("idle: {pollTimeoutMs: 0}", "idle.pollTimeoutMs"),
            ("idle: {pollTimeoutMs: 10001}", "idle.pollTimeoutMs"),
            ("logLevel: ''", "logLevel"),
            ("logLevel: 'info,foo=loud'", "logLevel"),
            ("uplink: {interface: 'a b'}", "uplink.interface"),
            ("overlay: {vni: 16777216}", "overlay.vni"),
            ("overlay: {port: 0}", "overlay.port"),
            (
                "podCidr: 10.244.1.0/24\noverlay: {podCidr: 10.244.2.0/24}",
                "overlay.podCidr",
            ),
            (
                "podCidr: 10.244.1.0/24\noverlay: {peers: [{name: b, podCidr: 10.244.1.0/25, underlayIp: 10.0.0.2, vtepMac: '02:00:00:00:00:02'}]}",
                "overlay.peers[0].podCidr",
            ),
            (
                "overlay: {peers: [{name: b, podCidr: 10.244.9.0/24, underlayIp: 0.0.0.0, vtepMac: '02:00:00:00:00:02'}]}",
                "overlay.peers[0].underlayIp",
            ),
        ];
        for (yaml, field) in cases {
            assert_names(yaml, field);
            let msg = err(yaml).to_string();
            assert!(msg.contains("(got "), "{msg}");
        }
    }

    #[test]
    fn overlay_and_uplink_sections() {
        let c = Config::from_yaml_str(
            "podCidr: 10.244.1.0/24\nuplink: {interface: eth1, xdpMode: skb, zeroCopy: true}\n\
             overlay:\n  vni: 4096\n  port: 4789\n  peers:\n  - {name: b, podCidr: 10.244.2.0/24, underlayIp: 10.0.0.2, vtepMac: '02:00:00:00:00:02'}\n",
        )
        .unwrap();
        assert_eq!(c.uplink.interface.as_deref(), Some("eth1"));
        assert_eq!(
            (c.uplink.xdp_mode, c.uplink.zero_copy),
            (XdpMode::Skb, true)
        );
        let o = c.overlay.as_ref().unwrap();
        let peers = o.peer_records();
        assert_eq!(peers.len(), 1);
        assert_eq!((peers[0].vni, peers[0].vxlan_port), (4096, 4789));
        // No overlay section: a single node, as before.
        let c = Config::from_yaml_str("podCidr: 10.244.1.0/24\n").unwrap();
        assert_eq!((c.overlay, c.uplink), (None, UplinkConfig::default()));
        assert!(Config::from_yaml_str("uplink: {xdpMode: driver}").is_err());
        assert!(Config::from_yaml_str("overlay: {peers: [{name: b}]}").is_err());
    }

    #[test]
    fn validation_message_format() {
        let msg = err("umem: {frameSize: 3000}").to_string();
        assert_eq!(
            msg,
            "invalid config <string>: umem.frameSize: must be 2048 or 4096 (got 3000)"
        );
    }

    #[test]
    fn metrics_endpoint_is_off_by_default_and_takes_an_address() {
        assert_eq!(Config::default().metrics.listen, None);
        let c = Config::from_yaml_str("metrics: {listen: \"127.0.0.1:9464\"}\n").unwrap();
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9464".parse().unwrap()));
        let e = Config::from_yaml_str("metrics: {listen: \"localhost\"}\n").unwrap_err();
        assert_eq!(e.field(), Some("metrics.listen"), "{e}");
        let e = Config::from_yaml_str("metrics: {port: 1}\n").unwrap_err();
        assert!(e.to_string().contains("port"), "{e}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.yaml");
        fs::write(&path, "umem: {frameSize: 1}\n").unwrap();
        let msg = Config::load(&path).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!(
                "invalid config {}: umem.frameSize",
                path.display()
            )),
            "{msg}"
        );
        let missing = dir.path().join("nope.yaml");
        let msg = Config::load(&missing).unwrap_err().to_string();
        assert!(msg.contains("nope.yaml"), "{msg}");
    }

    #[test]
    fn example_node_yaml_documents_the_defaults() {
        let example = include_str!("../../config/node.yaml");
        // The example writes podCidr out (which only matters with a datastore).
        let defaults = Config {
            pod_cidr_explicit: true,
            ..Config::default()
        };
        assert_eq!(Config::from_yaml_str(example).unwrap(), defaults);
        // Every field of the schema appears in the example (workers as a comment).
        for key in [
            "socket:",
            "stateDir:",
            "podCidr:",
            "workers:",
            "core:",
            "umem:",
            "frameSize:",
            "framesPerPort:",
            "ringSize:",
            "maxPortsPerWorker:",
            "hostPort:",
            "enabled:",
            "name:",
            "peerName:",
            "idle:",
            "busyPollUs:",
            "pollTimeoutMs:",
            "logLevel:",
        ] {
            assert!(example.contains(key), "config/node.yaml lacks {key}");
        }
    }

    #[test]
    fn cidr_parse_and_display() {
        let c: Ipv4Cidr = "10.244.0.0/24".parse().unwrap();
        assert_eq!(c.addr, Ipv4Addr::new(10, 244, 0, 0));
        assert_eq!(c.prefix, 24);
        assert_eq!(c.to_string(), "10.244.0.0/24");
        assert!(c.contains(Ipv4Addr::new(10, 244, 0, 200)));
        assert!(!c.contains(Ipv4Addr::new(10, 244, 1, 0)));
        let h: Ipv4Cidr = "10.244.0.9/24".parse().unwrap();
        assert!(h.has_host_bits());
        assert_eq!(h.network(), Ipv4Addr::new(10, 244, 0, 0));
        let z: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert_eq!(z.mask(), 0);
        for bad in [
            "10.0.0.0",
            "10.0.0/8",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "x/8",
        ] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"10.244.0.0/24\"");
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,6\n"), Some(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(format_cpu_list(&[0, 1, 2, 3, 6, 8, 9]), "0-3,6,8-9");
        let c = Config {
            workers: vec![WorkerConfig { core: 5 }],
            ..Config::default()
        };
        assert!(c.validate_with_cpus(&[4, 5]).is_ok());
        let msg = c.validate_with_cpus(&[0, 1]).unwrap_err().to_string();
        assert!(msg.contains("online: 0-1"), "{msg}");
    }

    const DS: &str = "datastore: {type: etcd, endpoints: ['http://10.0.0.1:2379']}\n";

    #[test]
    fn datastore_and_node_name() {
        use crate::cluster::config::DatastoreConfig;
        use crate::cluster::etcd::SubnetRequest;
        // Static mode: nothing changes, no subnet request.
        let c = Config::from_yaml_str("podCidr: 10.244.3.0/24").unwrap();
        assert!(c.pod_cidr_explicit && c.datastore.is_none());
        assert_eq!(c.subnet_request(), None);
        assert!(
            !Config::from_yaml_str("logLevel: info")
                .unwrap()
                .pod_cidr_explicit
        );

        // Datastore, no prefix anywhere: claimed from overlay.clusterCidr.
        let c = Config::from_yaml_str(&format!("nodeName: node-a\n{DS}overlay: {{}}\n")).unwrap();
        assert_eq!(c.node_name(), "node-a");
        let Some(DatastoreConfig::Etcd(e)) = &c.datastore else {
            panic!("datastore decoded")
        };
        assert_eq!(e.endpoints, ["http://10.0.0.1:2379"]);
        assert_eq!(e.prefix, "/xsknet/v1/");
        assert_eq!(
            c.subnet_request(),
            Some(SubnetRequest::FromCluster {
                cluster: "10.244.0.0/16".parse().unwrap(),
                len: 24
            })
        );
        assert_eq!(
            c.masquerade_exclude(),
            "10.244.0.0/16".parse().unwrap(),
            "the whole cluster stays unmasqueraded"
        );
        // The top-level podCidr when set; overlay.podCidr first.
        let c =
            Config::from_yaml_str(&format!("podCidr: 10.244.9.0/24\n{DS}overlay: {{}}\n")).unwrap();
        assert_eq!(
            c.subnet_request(),
            Some(SubnetRequest::Fixed("10.244.9.0/24".parse().unwrap()))
        );
        let c =
            Config::from_yaml_str(&format!("{DS}overlay: {{podCidr: 10.244.7.0/24}}\n")).unwrap();
        assert_eq!(
            c.subnet_request(),
            Some(SubnetRequest::Fixed("10.244.7.0/24".parse().unwrap()))
        );
        // The default name is the host's.
        assert_eq!(
            Config::default().node_name(),
            host_name().to_ascii_lowercase()
        );
    }

    #[test]
    fn datastore_errors_name_their_field() {
        for (yaml, field) in [
            (DS.to_string(), "overlay"),
            (
                format!("{DS}overlay: {{peers: [{{name: b, podCidr: 10.244.2.0/24, underlayIp: 10.0.0.2, vtepMac: '02:00:00:00:00:02'}}]}}\n"),
                "overlay.peers",
            ),
            (format!("podCidr: 10.9.0.0/24\n{DS}overlay: {{}}\n"), "podCidr"),
            (format!("nodeName: Node_A\n{DS}overlay: {{}}\n"), "nodeName"),
            ("nodeName: -x\n".to_string(), "nodeName"),
            (format!("policyDir: /etc/xsknet/policies\n{DS}overlay: {{}}\n"), "policyDir"),
            (
                "datastore: {type: etcd, endpoints: []}\noverlay: {}\n".to_string(),
                "datastore.endpoints",
            ),
            (
                "datastore: {type: etcd, endpoints: ['https://x:1']}\noverlay: {}\n".to_string(),
                "datastore.endpoints[0]",
            ),
            (
                "datastore: {type: etcd, endpoints: ['http://x:1'], leaseTtlSeconds: 1}\noverlay: {}\n"
                    .to_string(),
                "datastore.leaseTtlSeconds",
            ),
        ] {
            assert_names(&yaml, field);
        }
        // Unknown keys and types are refused at decode time.
        assert!(Config::from_yaml_str("datastore: {type: consul, endpoints: []}").is_err());
        assert!(Config::from_yaml_str(&format!("{DS}overlay: {{}}\nnodename: a\n")).is_err());
    }
}
