//! The command line: clap definitions of every subcommand and their value parsers.

use super::*;

/// How long a policy change waits to be in force (see [`WaitArg`]).
#[derive(Args, Debug, Clone, Copy)]
pub(crate) struct WaitArg {
    /// Seconds to wait until the change is in force (the daemon compiles policies on a
    /// thread of its own and answers once the change is durable); 0: do not wait.
    /// Past it, exit 1: the change is saved and takes effect when compiled.
    #[arg(long = "wait", default_value_t = 60.0, value_name = "SECONDS")]
    pub(crate) secs: f64,
}

#[derive(Parser, Debug)]
#[command(name = "xsknetctl", version, about = "Operate the xsknet node daemon")]
pub(crate) struct Cli {
    /// Control socket of xsknetd [default: $XSKNET_SOCKET, else /run/xsknet/xsknetd.sock]
    #[arg(long, global = true)]
    pub(crate) socket: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Pod endpoints attached to the dataplane.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Per-worker and per-port counters.
    Stats(JsonFlag),
    /// Daemon readiness and summary.
    Status(JsonFlag),
    /// Live per-port and per-worker rates (packets, bytes, drops per second) from
    /// `stats`, refreshed every interval; for operators without Prometheus.
    Top(TopArgs),
    /// Kubernetes NetworkPolicy: apply, delete, list, and the offline matrix.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Pods' labels as NetworkPolicy selectors see them.
    #[command(subcommand)]
    Pod(PodCommand),
    /// Send a synthetic connection through the live dataplane's policy code and say
    /// which policy and rule allowed it, or that none did.
    Trace(TraceArgs),
    /// The cluster's nodes as this daemon sees them.
    #[command(subcommand)]
    Node(NodeCommand),
}

#[derive(Subcommand, Debug)]
pub(crate) enum NodeCommand {
    /// Every node (pod CIDR, underlay address, VTEP), this one marked, and the
    /// datastore's state (static mode: this node and the static peers).
    List(JsonFlag),
}

#[derive(Subcommand, Debug)]
pub(crate) enum PolicyCommand {
    /// Apply Kubernetes YAML (NetworkPolicy, Namespace, Pod): all or nothing.
    Apply(ApplyArgs),
    /// Delete a NetworkPolicy.
    Delete(DeleteArgs),
    /// NetworkPolicies in force, with their hit counts.
    List(JsonFlag),
    /// Offline: which pod of FILE can open a connection to which, on one port.
    Matrix(MatrixArgs),
}

#[derive(Args, Debug)]
pub(crate) struct ApplyArgs {
    /// A YAML file, or a directory of *.yaml/*.yml files (one all-or-nothing apply).
    #[arg(short = 'f', long = "filename")]
    pub(crate) file: PathBuf,
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) wait: WaitArg,
}

#[derive(Args, Debug)]
pub(crate) struct DeleteArgs {
    /// NAMESPACE/NAME of the NetworkPolicy.
    #[arg(value_parser = parse_ns_name)]
    pub(crate) target: (String, String),
    #[command(flatten)]
    pub(crate) wait: WaitArg,
}

#[derive(Args, Debug)]
pub(crate) struct MatrixArgs {
    /// A YAML file (or directory) of Pods (with status.podIP), Namespaces and
    /// NetworkPolicies.
    #[arg(short = 'f', long = "filename")]
    pub(crate) file: PathBuf,
    /// Destination port: a number or a named container port of the destination.
    #[arg(long, default_value = "80")]
    pub(crate) port: String,
    /// TCP, UDP or SCTP.
    #[arg(long, default_value = "TCP", value_parser = parse_protocol)]
    pub(crate) protocol: Protocol,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum PodCommand {
    /// Set labels: `key=value` adds (changing a value needs --overwrite), `key-`
    /// removes.
    Label(LabelArgs),
}

#[derive(Args, Debug)]
pub(crate) struct LabelArgs {
    /// NAMESPACE/NAME of the pod.
    #[arg(value_parser = parse_ns_name)]
    pub(crate) target: (String, String),
    /// `key=value` or `key-`.
    #[arg(required = true)]
    pub(crate) labels: Vec<String>,
    /// Allow changing the value of an existing label.
    #[arg(long)]
    pub(crate) overwrite: bool,
    /// Replace every label with the given ones.
    #[arg(long)]
    pub(crate) replace: bool,
    #[command(flatten)]
    pub(crate) wait: WaitArg,
}

#[derive(Args, Debug)]
pub(crate) struct TraceArgs {
    /// NAMESPACE/POD the connection comes from.
    #[arg(long)]
    pub(crate) from: String,
    /// NAMESPACE/POD it goes to.
    #[arg(long)]
    pub(crate) to: String,
    /// Destination port: a number or a named container port of the destination.
    #[arg(long)]
    pub(crate) port: String,
    /// TCP, UDP or SCTP.
    #[arg(long, default_value = "TCP", value_parser = parse_protocol)]
    pub(crate) protocol: Protocol,
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn parse_ns_name(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, n)) if !ns.is_empty() && !n.is_empty() && !n.contains('/') => {
            Ok((ns.to_string(), n.to_string()))
        }
        _ => Err(format!("expected NAMESPACE/NAME, got {s:?}")),
    }
}

pub(crate) fn parse_protocol(
    s: &str,
) -> Result<Protocol, xsknet_dataplane::policy::k8s::ValueError> {
    s.to_ascii_uppercase().parse()
}

#[derive(Args, Debug)]
pub(crate) struct TopArgs {
    /// Print one sample (rates over one interval) and exit.
    #[arg(long)]
    pub(crate) once: bool,
    /// Seconds between samples.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) interval: f64,
}

#[derive(Args, Debug)]
pub(crate) struct JsonFlag {
    /// Print the daemon's JSON result instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum EndpointCommand {
    /// Attach a pod's host-side veth.
    Add(AddArgs),
    /// Detach a pod, by host ifname or by address.
    Del(DelArgs),
    /// List endpoints.
    List(JsonFlag),
}

#[derive(Args, Debug)]
pub(crate) struct AddArgs {
    /// Host-side veth name.
    #[arg(long)]
    pub(crate) ifname: String,
    /// The pod's IPv4 address.
    #[arg(long)]
    pub(crate) ip: Ipv4Addr,
    /// The pod interface's MAC (read from the veth peer when omitted).
    #[arg(long, value_parser = parse_mac)]
    pub(crate) mac: Option<String>,
    /// Pod namespace (with --name).
    #[arg(long, requires = "name")]
    pub(crate) namespace: Option<String>,
    /// Pod name (with --namespace).
    #[arg(long, requires = "namespace")]
    pub(crate) name: Option<String>,
    /// A pod label, `key=value`; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    pub(crate) labels: Vec<(String, String)>,
    /// Print the daemon's JSON result.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false, id = "target")]
pub(crate) struct DelArgs {
    /// Host-side veth name.
    #[arg(long, group = "target")]
    pub(crate) ifname: Option<String>,
    /// The pod's IPv4 address.
    #[arg(long, group = "target")]
    pub(crate) ip: Option<Ipv4Addr>,
}

pub(crate) fn parse_mac(s: &str) -> Result<String, String> {
    s.parse::<xsknet_proto::MacAddr>()
        .map(|m| m.to_string())
        .map_err(|e| format!("expected a MAC like 02:42:ac:11:00:02: {e}"))
}

pub(crate) fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}
