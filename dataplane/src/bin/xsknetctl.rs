//! `xsknetctl`: the operator CLI over xsknetd's control socket.
//!
//! Every command is one control call ([`xsknet_dataplane::control::client::call`]).
//! Plain output is a human table; `--json` prints the daemon's result as it came (one
//! line, for `jq`). Errors go to stderr; the exit code is 1 for a refused or failed
//! request and 2 when the daemon cannot be reached at all, so scripts can tell "down"
//! from "said no".
//!
//! `policy matrix` is the exception: it runs offline (no daemon, no root), compiling
//! the file's objects with the daemon's compiler and sending synthetic connections
//! through the workers' pipeline code ([`xsknet_dataplane::control::reach`]).

#![deny(unsafe_code)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use xsknet_dataplane::config::DEFAULT_SOCKET;
use xsknet_dataplane::control::client::{call, call_policy, ClientError};
use xsknet_dataplane::control::proto::{
    Endpoint, EndpointSpec, PolicyApplied, PolicyInfo, PolicyRequest, Request, Stats, Status,
};
use xsknet_dataplane::control::reach::{self, ProbePort, Trace};
use xsknet_dataplane::policy::k8s::{self, Protocol};
use xsknet_dataplane::policy::store::PolicyStore;
use xsknet_proto::wire::{DatastoreStatus, NodeList};

/// How long one call may take before xsknetctl gives up.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How often `--wait` looks at the daemon's policy generation in force.
const WAIT_POLL: Duration = Duration::from_millis(20);

/// How long a policy change waits to be in force (see [`WaitArg`]).
#[derive(Args, Debug, Clone, Copy)]
struct WaitArg {
    /// Seconds to wait until the change is in force (the daemon compiles policies on a
    /// thread of its own and answers once the change is durable); 0: do not wait.
    /// Past it, exit 1: the change is saved and takes effect when compiled.
    #[arg(long = "wait", default_value_t = 60.0, value_name = "SECONDS")]
    secs: f64,
}

#[derive(Parser, Debug)]
#[command(name = "xsknetctl", version, about = "Operate the xsknet node daemon")]
struct Cli {
    /// Control socket of xsknetd [default: $XSKNET_SOCKET, else /run/xsknet/xsknetd.sock]
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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
enum NodeCommand {
    /// Every node (pod CIDR, underlay address, VTEP), this one marked, and the
    /// datastore's state (static mode: this node and the static peers).
    List(JsonFlag),
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
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
struct ApplyArgs {
    /// A YAML file, or a directory of *.yaml/*.yml files (one all-or-nothing apply).
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    wait: WaitArg,
}

#[derive(Args, Debug)]
struct DeleteArgs {
    /// NAMESPACE/NAME of the NetworkPolicy.
    #[arg(value_parser = parse_ns_name)]
    target: (String, String),
    #[command(flatten)]
    wait: WaitArg,
}

#[derive(Args, Debug)]
struct MatrixArgs {
    /// A YAML file (or directory) of Pods (with status.podIP), Namespaces and
    /// NetworkPolicies.
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// Destination port: a number or a named container port of the destination.
    #[arg(long, default_value = "80")]
    port: String,
    /// TCP, UDP or SCTP.
    #[arg(long, default_value = "TCP", value_parser = parse_protocol)]
    protocol: Protocol,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum PodCommand {
    /// Set labels: `key=value` adds (changing a value needs --overwrite), `key-`
    /// removes.
    Label(LabelArgs),
}

#[derive(Args, Debug)]
struct LabelArgs {
    /// NAMESPACE/NAME of the pod.
    #[arg(value_parser = parse_ns_name)]
    target: (String, String),
    /// `key=value` or `key-`.
    #[arg(required = true)]
    labels: Vec<String>,
    /// Allow changing the value of an existing label.
    #[arg(long)]
    overwrite: bool,
    /// Replace every label with the given ones.
    #[arg(long)]
    replace: bool,
    #[command(flatten)]
    wait: WaitArg,
}

#[derive(Args, Debug)]
struct TraceArgs {
    /// NAMESPACE/POD the connection comes from.
    #[arg(long)]
    from: String,
    /// NAMESPACE/POD it goes to.
    #[arg(long)]
    to: String,
    /// Destination port: a number or a named container port of the destination.
    #[arg(long)]
    port: String,
    /// TCP, UDP or SCTP.
    #[arg(long, default_value = "TCP", value_parser = parse_protocol)]
    protocol: Protocol,
    #[arg(long)]
    json: bool,
}

fn parse_ns_name(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, n)) if !ns.is_empty() && !n.is_empty() && !n.contains('/') => {
            Ok((ns.to_string(), n.to_string()))
        }
        _ => Err(format!("expected NAMESPACE/NAME, got {s:?}")),
    }
}

fn parse_protocol(s: &str) -> Result<Protocol, xsknet_dataplane::policy::k8s::ValueError> {
    s.to_ascii_uppercase().parse()
}

#[derive(Args, Debug)]
struct TopArgs {
    /// Print one sample (rates over one interval) and exit.
    #[arg(long)]
    once: bool,
    /// Seconds between samples.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
}

#[derive(Args, Debug)]
struct JsonFlag {
    /// Print the daemon's JSON result instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum EndpointCommand {
    /// Attach a pod's host-side veth.
    Add(AddArgs),
    /// Detach a pod, by host ifname or by address.
    Del(DelArgs),
    /// List endpoints.
    List(JsonFlag),
}

#[derive(Args, Debug)]
struct AddArgs {
    /// Host-side veth name.
    #[arg(long)]
    ifname: String,
    /// The pod's IPv4 address.
    #[arg(long)]
    ip: Ipv4Addr,
    /// The pod interface's MAC (read from the veth peer when omitted).
    #[arg(long, value_parser = parse_mac)]
    mac: Option<String>,
    /// Pod namespace (with --name).
    #[arg(long, requires = "name")]
    namespace: Option<String>,
    /// Pod name (with --namespace).
    #[arg(long, requires = "namespace")]
    name: Option<String>,
    /// A pod label, `key=value`; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Print the daemon's JSON result.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false, id = "target")]
struct DelArgs {
    /// Host-side veth name.
    #[arg(long, group = "target")]
    ifname: Option<String>,
    /// The pod's IPv4 address.
    #[arg(long, group = "target")]
    ip: Option<Ipv4Addr>,
}

fn parse_mac(s: &str) -> Result<String, String> {
    s.parse::<xsknet_proto::MacAddr>()
        .map(|m| m.to_string())
        .map_err(|e| format!("expected a MAC like 02:42:ac:11:00:02: {e}"))
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

fn main() -> ExitCode {
    // Usage errors exit 1 like every other failure: 2 is reserved for "daemon down".
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    match run(&cli) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Our errors already carry their cause in the message; no chain needed.
            eprintln!("xsknetctl: {e}");
            let unreachable = e
                .downcast_ref::<ClientError>()
                .is_some_and(ClientError::is_unreachable);
            ExitCode::from(if unreachable { 2 } else { 1 })
        }
    }
}

/// Runs one command and returns what to print on stdout.
fn run(cli: &Cli) -> anyhow::Result<String> {
    if let Command::Policy(PolicyCommand::Matrix(m)) = &cli.command {
        return policy_matrix(m);
    }
    let socket = socket_path(cli.socket.clone(), std::env::var_os("XSKNET_SOCKET"));
    let rpc = |req: Request| call(&socket, &req, CALL_TIMEOUT);
    let prpc = |req: PolicyRequest| call_policy(&socket, &req, CALL_TIMEOUT);
    let json_line = |v: &Value| format!("{v}\n");
    Ok(match &cli.command {
        Command::Status(f) => {
            let v = rpc(Request::Status)?;
            if f.json {
                json_line(&v)
            } else {
                let status: Status = decode(v, "status")?;
                format_status(&status)
            }
        }
        Command::Top(t) => {
            if !(0.1..=3600.0).contains(&t.interval) {
                anyhow::bail!("--interval must be between 0.1 and 3600 seconds");
            }
            let interval = Duration::from_secs_f64(t.interval);
            let sample = || -> anyhow::Result<(Stats, std::time::Instant)> {
                let stats: Stats = decode(rpc(Request::Stats)?, "stats")?;
                Ok((stats, std::time::Instant::now()))
            };
            let mut prev = sample()?;
            loop {
                std::thread::sleep(interval);
                let cur = sample()?;
                let text = format_top(&prev.0, &cur.0, cur.1 - prev.1);
                if t.once {
                    break text;
                }
                // Clear the screen and redraw, like top(1).
                print!("\x1b[H\x1b[2J{text}");
                use std::io::Write as _;
                let _ = std::io::stdout().flush();
                prev = cur;
            }
        }
        Command::Stats(f) => {
            let v = rpc(Request::Stats)?;
            if f.json {
                json_line(&v)
            } else {
                let stats: Stats = decode(v, "stats")?;
                format_stats(&stats)
            }
        }
        Command::Endpoint(EndpointCommand::List(f)) => {
            let v = rpc(Request::EndpointList)?;
            if f.json {
                json_line(&v)
            } else {
                format_endpoints(&decode_endpoints(v)?)
            }
        }
        Command::Endpoint(EndpointCommand::Add(a)) => {
            let spec = EndpointSpec {
                ifname: a.ifname.clone(),
                ip: a.ip,
                mac: a.mac.clone(),
                namespace: a.namespace.clone(),
                name: a.name.clone(),
                labels: a.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
                cni: None,
            };
            let v = rpc(Request::EndpointAdd(spec))?;
            if a.json {
                json_line(&v)
            } else {
                match serde_json::from_value::<Endpoint>(v) {
                    Ok(ep) => format!(
                        "added {} {} mac {} (worker {}, port {})\n",
                        ep.ifname, ep.ip, ep.mac, ep.worker, ep.port
                    ),
                    Err(_) => format!("added {} {}\n", a.ifname, a.ip),
                }
            }
        }
        Command::Policy(PolicyCommand::Apply(a)) => {
            let docs = read_yaml_arg(&a.file)?;
            let mut applied = Vec::new();
            // A directory goes as one request, so it stays one all-or-nothing apply.
            let mut v = prpc(PolicyRequest::PolicyApply {
                yaml: docs,
                file: Some(a.file.display().to_string()),
            })?;
            let r: PolicyApplied = decode(v.clone(), "policy apply")?;
            let in_force = wait_in_force(&rpc, &r, a.wait)?;
            if a.json {
                v["in_force"] = Value::Bool(in_force);
                json_line(&v)
            } else {
                for (what, list) in [
                    ("created", &r.created),
                    ("configured", &r.configured),
                    ("unchanged", &r.unchanged),
                ] {
                    for o in list {
                        applied.push(format!("{o} {what}\n"));
                    }
                }
                applied.push(in_force_line(&r, in_force));
                applied.concat()
            }
        }
        Command::Policy(PolicyCommand::Delete(d)) => {
            let r: PolicyApplied = decode(
                prpc(PolicyRequest::PolicyDelete {
                    namespace: d.target.0.clone(),
                    name: d.target.1.clone(),
                })?,
                "policy delete",
            )?;
            let in_force = wait_in_force(&rpc, &r, d.wait)?;
            format!(
                "NetworkPolicy {}/{} deleted; {}",
                d.target.0,
                d.target.1,
                in_force_line(&r, in_force)
            )
        }
        Command::Policy(PolicyCommand::List(f)) => {
            let v = prpc(PolicyRequest::PolicyList)?;
            if f.json {
                json_line(&v)
            } else {
                let list: Vec<PolicyInfo> = decode(v, "policy list")?;
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|p| {
                        vec![
                            p.namespace.clone(),
                            p.name.clone(),
                            p.policy_types.join(","),
                            p.ingress_rules.to_string(),
                            p.egress_rules.to_string(),
                            p.selected.to_string(),
                            p.hits.to_string(),
                            if p.source.is_empty() {
                                "-".into()
                            } else {
                                p.source.clone()
                            },
                            p.error
                                .clone()
                                .map_or("-".into(), |e| format!("NOT ENFORCED: {e}")),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "NAMESPACE",
                        "NAME",
                        "TYPES",
                        "INGRESS",
                        "EGRESS",
                        "PODS",
                        "HITS",
                        "SOURCE",
                        "ERROR",
                    ],
                    &rows,
                )
            }
        }
        Command::Policy(PolicyCommand::Matrix(_)) => unreachable!("handled offline above"),
        Command::Pod(PodCommand::Label(l)) => {
            let mut labels = BTreeMap::new();
            let mut remove = Vec::new();
            for arg in &l.labels {
                if let Some(k) = arg.strip_suffix('-').filter(|_| !arg.contains('=')) {
                    remove.push(k.to_string());
                } else {
                    let (k, v) = parse_label(arg).map_err(anyhow::Error::msg)?;
                    labels.insert(k, v);
                }
            }
            let v = prpc(PolicyRequest::PodLabel {
                namespace: l.target.0.clone(),
                name: l.target.1.clone(),
                labels,
                remove,
                replace: l.replace,
                overwrite: l.overwrite,
            })?;
            let now: BTreeMap<String, String> = decode(v, "pod label")?;
            // The label change is in every policy generation asked for from now on.
            let status: Status = decode(rpc(Request::Status)?, "status")?;
            if let Some(p) = status.policy {
                let r = PolicyApplied {
                    policy_generation: p.requested,
                    in_force: p.in_force >= p.requested,
                    ..PolicyApplied::default()
                };
                wait_in_force(&rpc, &r, l.wait)?;
            }
            let shown: Vec<String> = now.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!(
                "{}/{} labeled: {}\n",
                l.target.0,
                l.target.1,
                shown.join(",")
            )
        }
        Command::Node(NodeCommand::List(f)) => {
            let v = prpc(PolicyRequest::NodeList)?;
            if f.json {
                json_line(&v)
            } else {
                let list: NodeList = decode(v, "node list")?;
                format_nodes(&list)
            }
        }
        Command::Trace(t) => {
            let port = match t.port.parse::<u16>() {
                Ok(n) => Value::from(n),
                Err(_) => Value::from(t.port.clone()),
            };
            let v = prpc(PolicyRequest::Trace {
                from: t.from.clone(),
                to: t.to.clone(),
                port,
                protocol: Some(t.protocol.to_string()),
            })?;
            if t.json {
                json_line(&v)
            } else {
                let tr: Trace = decode(v, "trace")?;
                format!("{}\n", tr.summary)
            }
        }
        Command::Endpoint(EndpointCommand::Del(d)) => {
            rpc(Request::EndpointDel {
                ifname: d.ifname.clone(),
                ip: d.ip,
            })?;
            match (&d.ifname, d.ip) {
                (Some(ifname), _) => format!("deleted endpoint {ifname}\n"),
                (None, Some(ip)) => format!("deleted endpoint {ip}\n"),
                (None, None) => "deleted\n".to_string(),
            }
        }
    })
}

/// The YAML of a file, or of every *.yaml/*.yml file of a directory (in name order,
/// joined as one multi-document stream).
fn read_yaml_arg(path: &std::path::Path) -> anyhow::Result<String> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("read {}: {e}", p.display()))
    };
    if !path.is_dir() {
        return read(path);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| anyhow::anyhow!("read {}: {e}", path.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| x == "yaml" || x == "yml")
        })
        .collect();
    files.sort();
    let mut out = String::new();
    for f in files {
        out.push_str("---\n");
        out.push_str(&read(&f)?);
        out.push('\n');
    }
    Ok(out)
}

/// `policy matrix`: offline, through the same compile and pipeline code as the daemon.
fn policy_matrix(m: &MatrixArgs) -> anyhow::Result<String> {
    let objects = if m.file.is_dir() {
        k8s::parse_dir(&m.file)
    } else {
        k8s::parse_file(&m.file)
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut store = PolicyStore::new();
    store
        .apply_objects(objects)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let missing = store.pods_without_ip();
    if !missing.is_empty() {
        eprintln!(
            "xsknetctl: pods without status.podIP left out: {}",
            missing.join(", ")
        );
    }
    let matrix = reach::matrix(&store, &ProbePort::parse(&m.port), m.protocol);
    Ok(if m.json {
        format!("{}\n", serde_json::to_string(&matrix)?)
    } else {
        matrix.grid()
    })
}

/// `--socket`, else `$XSKNET_SOCKET` (when non-empty), else the default path.
fn socket_path(flag: Option<PathBuf>, env: Option<std::ffi::OsString>) -> PathBuf {
    flag.or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

fn decode<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> anyhow::Result<T> {
    serde_json::from_value(v)
        .map_err(|e| anyhow::anyhow!("unexpected {what} result from xsknetd: {e} (try --json)"))
}

/// The `endpoint_list` result is an array; an object with `endpoints` is accepted too.
fn decode_endpoints(v: Value) -> anyhow::Result<Vec<xsknet_proto::wire::EndpointEntry>> {
    let v = match v {
        Value::Object(mut m) if m.contains_key("endpoints") => {
            m.remove("endpoints").unwrap_or_default()
        }
        other => other,
    };
    decode(v, "endpoint list")
}

/// Left-aligned text table with two spaces between columns.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            s.push_str(cell);
            s.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

fn drops_cell(drops: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = drops
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| format!("{reason}={n}"))
        .collect();
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(",")
    }
}

/// One line: `etcd http://… (node a): connected, registered, revision 12, 3 nodes …`.
fn format_datastore(d: &DatastoreStatus) -> String {
    let mut s = format!(
        "{} {} (node {}): {}, {}, revision {}, {} nodes, {} pods, {} namespaces, {} policies",
        d.kind,
        d.endpoints.join(","),
        d.node_name,
        if d.connected {
            "connected"
        } else {
            "DISCONNECTED"
        },
        if d.registered {
            "registered"
        } else {
            "NOT registered"
        },
        d.revision,
        d.nodes,
        d.pods,
        d.namespaces,
        d.policies
    );
    if d.refused > 0 {
        s += &format!(", {} records refused", d.refused);
    }
    if let Some(synced) = d.synced {
        s += if synced {
            ", watch synced"
        } else {
            ", watch NOT synced"
        };
    }
    if !d.resource_versions.is_empty() {
        let rvs: Vec<String> = d
            .resource_versions
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        s += &format!(", resourceVersion {}", rvs.join(" "));
    }
    if let Some(a) = &d.annotation {
        s += &format!(", annotation {a}");
    }
    if let Some(e) = &d.last_error {
        s += &format!("; last error: {e}");
    }
    s
}

/// `node list` as a table, then the datastore line.
fn format_nodes(l: &NodeList) -> String {
    let mut out = format!(
        "{:<2}{:<20} {:<18} {:<15} {:<17} {:>8} {:>5}  {}\n",
        "", "NAME", "POD CIDR", "UNDERLAY", "VTEP MAC", "VNI", "PORT", "STATE"
    );
    for n in &l.nodes {
        let state = match (n.alive, &n.unused) {
            (_, Some(why)) => format!("unused: {why}"),
            (Some(true), None) => "alive".to_string(),
            (Some(false), None) => "not registered".to_string(),
            (None, None) => "static".to_string(),
        };
        out += &format!(
            "{:<2}{:<20} {:<18} {:<15} {:<17} {:>8} {:>5}  {}\n",
            if n.local { "*" } else { "" },
            n.name,
            n.pod_cidr,
            n.underlay_ip
                .map_or_else(|| "?".to_string(), |i| i.to_string()),
            n.vtep_mac,
            n.vni,
            n.port,
            state
        );
    }
    match &l.datastore {
        Some(d) => out += &format!("datastore: {}\n", format_datastore(d)),
        None => out += "datastore: none (static mode)\n",
    }
    out
}

/// Wait (polling `status`) until the policy generation of `r` is in force, at most
/// `wait`. Returns whether it is; past the wait, an error saying the change is saved
/// and where compilation stands. A daemon without policy generations (older, which
/// answered once in force) counts as in force.
fn wait_in_force(
    rpc: &dyn Fn(Request) -> Result<Value, ClientError>,
    r: &PolicyApplied,
    wait: WaitArg,
) -> anyhow::Result<bool> {
    if r.in_force || r.policy_generation == 0 {
        return Ok(true);
    }
    if !(0.0..=86400.0).contains(&wait.secs) {
        anyhow::bail!("--wait must be between 0 and 86400 seconds");
    }
    if wait.secs == 0.0 {
        return Ok(false);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(wait.secs);
    loop {
        let status: Status = decode(rpc(Request::Status)?, "status")?;
        let Some(p) = status.policy else {
            return Ok(true);
        };
        if p.in_force >= r.policy_generation {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            let compiling = p
                .compiling
                .map(|g| format!(", compiling {g}"))
                .unwrap_or_default();
            let failed = p
                .last_compile_error
                .map(|e| format!("; last compile error: {e}"))
                .unwrap_or_default();
            anyhow::bail!(
                "saved, but not in force after {}s: policy generation {} asked, {} in force{compiling}{failed}; it takes effect when compiled (xsknetctl status)",
                wait.secs,
                r.policy_generation,
                p.in_force
            );
        }
        std::thread::sleep(WAIT_POLL);
    }
}

fn in_force_line(r: &PolicyApplied, in_force: bool) -> String {
    if r.policy_generation == 0 {
        format!("in force from table generation {}\n", r.generation)
    } else if in_force {
        format!("in force: policy generation {}\n", r.policy_generation)
    } else {
        format!(
            "saved; in force once policy generation {} is (xsknetctl status)\n",
            r.policy_generation
        )
    }
}

fn format_status(s: &Status) -> String {
    let mut out = String::new();
    let mut kv = |k: &str, v: String| out.push_str(&format!("{k:<12}{v}\n"));
    kv("version", s.version.clone());
    kv("ready", if s.ready { "yes" } else { "no" }.to_string());
    kv("uptime", format!("{}s", s.uptime_secs));
    kv("workers", s.workers.to_string());
    kv("endpoints", s.endpoints.to_string());
    kv("generation", s.generation.to_string());
    kv("pod cidr", s.pod_cidr.clone());
    let host = match (&s.host_port, s.host_ip) {
        (Some(p), Some(ip)) => format!("{p} ({ip})"),
        (Some(p), None) => p.clone(),
        (None, Some(ip)) => ip.to_string(),
        (None, None) => "disabled".to_string(),
    };
    kv("host port", host);
    if let Some(o) = &s.overlay {
        let ip = o
            .underlay_ip
            .map_or_else(|| "?".to_string(), |ip| ip.to_string());
        kv(
            "uplink",
            format!(
                "{} ({ip}), {} queue(s), MTU {}",
                o.uplink, o.queues, o.uplink_mtu
            ),
        );
        kv(
            "overlay",
            format!(
                "VNI {} port {}, VTEP {}, pod MTU {}",
                o.vni, o.port, o.vtep_mac, o.pod_mtu
            ),
        );
        kv(
            "nodes",
            format!("{} ({} resolved)", o.nodes, o.nodes_resolved),
        );
    }
    if let Some(d) = &s.datastore {
        kv("datastore", format_datastore(d));
    }
    if let Some(p) = &s.persistence {
        let state = match (p.failing, &p.last_error) {
            (true, Some(e)) => format!(
                "FAILING since {} (unix s), {} errors; last: {e}",
                p.failing_since_unix.unwrap_or(0),
                p.errors
            ),
            (false, Some(e)) => format!("ok ({} errors, last: {e})", p.errors),
            _ => "ok".to_string(),
        };
        kv("persistence", state);
        for r in &p.recovered {
            kv("recovered", r.clone());
        }
        if !p.fail_closed_namespaces.is_empty() {
            kv("fail-closed", p.fail_closed_namespaces.join(","));
        }
    }
    if let Some(p) = &s.policy {
        let compiling = p
            .compiling
            .map(|g| format!(", compiling {g}"))
            .unwrap_or_default();
        kv(
            "policy",
            format!(
                "generation {} in force ({} requested{compiling}), {} pod(s) held until compiled",
                p.in_force, p.requested, p.pending_endpoints
            ),
        );
        kv(
            "compiles",
            format!(
                "{} (last {} ms, max {} ms), {} coalesced, {} failed",
                p.compiles, p.last_compile_ms, p.max_compile_ms, p.coalesced, p.compile_errors
            ),
        );
        if let Some(e) = &p.last_compile_error {
            kv("compile err", e.clone());
        }
    }
    out
}

fn format_stats(s: &Stats) -> String {
    let workers: Vec<Vec<String>> = s
        .workers
        .iter()
        .map(|w| {
            vec![
                w.worker.to_string(),
                w.core.to_string(),
                w.ports.to_string(),
                w.rx_packets.to_string(),
                w.tx_packets.to_string(),
                w.handoff_out.to_string(),
                w.handoff_in.to_string(),
                w.sleeps.to_string(),
                w.generation.to_string(),
                drops_cell(&w.drops),
            ]
        })
        .collect();
    let ports: Vec<Vec<String>> = s
        .ports
        .iter()
        .map(|p| {
            vec![
                p.port.to_string(),
                p.ifname.clone(),
                p.kind.clone(),
                p.worker.to_string(),
                p.ip.map_or_else(|| "-".to_string(), |ip| ip.to_string()),
                p.rx_packets.to_string(),
                p.rx_bytes.to_string(),
                p.tx_packets.to_string(),
                p.tx_bytes.to_string(),
                drops_cell(&p.drops),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "WORKER",
            "CORE",
            "PORTS",
            "RX_PKTS",
            "TX_PKTS",
            "HANDOFF_OUT",
            "HANDOFF_IN",
            "SLEEPS",
            "GEN",
            "DROPS",
        ],
        &workers,
    );
    out.push('\n');
    out.push_str(&table(
        &[
            "PORT", "IFNAME", "KIND", "WORKER", "IP", "RX_PKTS", "RX_BYTES", "TX_PKTS", "TX_BYTES",
            "DROPS",
        ],
        &ports,
    ));
    out
}

/// Rates between two `stats` samples `dt` apart: per port (matched by slot and
/// ifname; a port new since `prev` counts from zero) and per worker.
fn format_top(prev: &Stats, cur: &Stats, dt: Duration) -> String {
    let secs = dt.as_secs_f64().max(1e-3);
    let rate = |now: u64, before: u64| format!("{:.0}", now.saturating_sub(before) as f64 / secs);
    let bits = |now: u64, before: u64| {
        let bps = now.saturating_sub(before) as f64 * 8.0 / secs;
        if bps >= 1e9 {
            format!("{:.2}G", bps / 1e9)
        } else if bps >= 1e6 {
            format!("{:.2}M", bps / 1e6)
        } else if bps >= 1e3 {
            format!("{:.1}k", bps / 1e3)
        } else {
            format!("{bps:.0}")
        }
    };
    let drop_sum = |d: &std::collections::BTreeMap<String, u64>| d.values().sum::<u64>();
    let drop_rates =
        |now: &std::collections::BTreeMap<String, u64>,
         before: Option<&std::collections::BTreeMap<String, u64>>| {
            let cells: Vec<String> = now
                .iter()
                .filter_map(|(reason, n)| {
                    let b = before.and_then(|b| b.get(reason)).copied().unwrap_or(0);
                    (*n > b).then(|| format!("{reason}={}", rate(*n, b)))
                })
                .collect();
            if cells.is_empty() {
                "-".to_string()
            } else {
                cells.join(",")
            }
        };
    let ports: Vec<Vec<String>> = cur
        .ports
        .iter()
        .map(|p| {
            let b = prev
                .ports
                .iter()
                .find(|q| q.port == p.port && q.ifname == p.ifname);
            let (rxp, rxb, txp, txb, drops) = b.map_or((0, 0, 0, 0, 0), |b| {
                (
                    b.rx_packets,
                    b.rx_bytes,
                    b.tx_packets,
                    b.tx_bytes,
                    drop_sum(&b.drops),
                )
            });
            vec![
                p.port.to_string(),
                p.ifname.clone(),
                p.kind.clone(),
                p.worker.to_string(),
                rate(p.rx_packets, rxp),
                bits(p.rx_bytes, rxb),
                rate(p.tx_packets, txp),
                bits(p.tx_bytes, txb),
                rate(drop_sum(&p.drops), drops),
                drop_rates(&p.drops, b.map(|b| &b.drops)),
            ]
        })
        .collect();
    let workers: Vec<Vec<String>> = cur
        .workers
        .iter()
        .map(|w| {
            let b = prev.workers.iter().find(|v| v.worker == w.worker);
            vec![
                w.worker.to_string(),
                w.core.to_string(),
                w.ports.to_string(),
                rate(w.rx_packets, b.map_or(0, |b| b.rx_packets)),
                rate(w.tx_packets, b.map_or(0, |b| b.tx_packets)),
                rate(drop_sum(&w.drops), b.map_or(0, |b| drop_sum(&b.drops))),
                format!("{}/{}", w.conntrack.entries, w.conntrack.capacity),
                rate(w.sleeps, b.map_or(0, |b| b.sleeps)),
            ]
        })
        .collect();
    let mut out = format!("xsknet top: rates over {secs:.1} s\n\n");
    out.push_str(&table(
        &[
            "WORKER",
            "CORE",
            "PORTS",
            "RX_PPS",
            "TX_PPS",
            "DROP_PPS",
            "CONNTRACK",
            "SLEEPS/S",
        ],
        &workers,
    ));
    out.push('\n');
    out.push_str(&table(
        &[
            "PORT", "IFNAME", "KIND", "WORKER", "RX_PPS", "RX_BPS", "TX_PPS", "TX_BPS", "DROP_PPS",
            "DROPS/S",
        ],
        &ports,
    ));
    out
}

fn format_endpoints(entries: &[xsknet_proto::wire::EndpointEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|entry| {
            let e = &entry.endpoint;
            let pod = match (&e.namespace, &e.name) {
                (Some(ns), Some(n)) => format!("{ns}/{n}"),
                (None, Some(n)) => n.clone(),
                _ => "-".to_string(),
            };
            let labels = if e.labels.is_empty() {
                "-".to_string()
            } else {
                e.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            vec![
                e.ifname.clone(),
                e.ip.to_string(),
                e.mac.clone(),
                pod,
                e.worker.to_string(),
                e.port.to_string(),
                labels,
                if entry.labels_source.is_empty() {
                    "-".to_string()
                } else {
                    entry.labels_source.clone()
                },
            ]
        })
        .collect();
    table(
        &[
            "IFNAME", "IP", "MAC", "POD", "WORKER", "PORT", "LABELS", "SOURCE",
        ],
        &rows,
    )
}

#[cfg(test)]
mod top_tests {
    use super::*;
    use xsknet_dataplane::control::proto::{PortStats, WorkerStats};

    #[test]
    fn top_shows_rates_between_samples() {
        let port = |rx: u64, drops: u64| PortStats {
            port: 3,
            ifname: "xskA".into(),
            kind: "pod".into(),
            rx_packets: rx,
            rx_bytes: rx * 100,
            drops: [("no_route".to_string(), drops)].into_iter().collect(),
            ..PortStats::default()
        };
        let stats = |rx, drops| Stats {
            ports: vec![port(rx, drops)],
            workers: vec![WorkerStats {
                rx_packets: rx,
                ..WorkerStats::default()
            }],
            ..Stats::default()
        };
        let text = format_top(&stats(100, 1), &stats(300, 5), Duration::from_secs(2));
        let row = text.lines().find(|l| l.contains("xskA")).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        // PORT IFNAME KIND WORKER RX_PPS RX_BPS TX_PPS TX_BPS DROP_PPS DROPS/S
        assert_eq!(cells[4], "100", "{text}");
        assert_eq!(cells[5], "80.0k", "{text}");
        assert_eq!(cells[8], "2", "{text}");
        assert_eq!(cells[9], "no_route=2", "{text}");
        // A port new since the last sample counts from zero; a counter going back
        // (port replaced) never shows a negative rate.
        let text = format_top(&Stats::default(), &stats(10, 0), Duration::from_secs(1));
        assert!(text
            .lines()
            .any(|l| l.contains("xskA") && l.split_whitespace().nth(4) == Some("10")));
        let text = format_top(&stats(50, 0), &stats(10, 0), Duration::from_secs(1));
        assert!(text
            .lines()
            .any(|l| l.contains("xskA") && l.split_whitespace().nth(4) == Some("0")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_endpoint_add() {
        let cli = Cli::try_parse_from([
            "xsknetctl",
            "--socket",
            "/tmp/s",
            "endpoint",
            "add",
            "--ifname",
            "xsk1",
            "--ip",
            "10.244.0.5",
            "--mac",
            "02:AA:00:00:00:01",
            "--namespace",
            "ns",
            "--name",
            "a",
            "--label",
            "app=web",
            "--label",
            "tier=",
        ])
        .unwrap();
        let Command::Endpoint(EndpointCommand::Add(a)) = cli.command else {
            panic!("not add");
        };
        assert_eq!(a.mac.as_deref(), Some("02:aa:00:00:00:01"));
        assert_eq!(
            a.labels,
            vec![("app".into(), "web".into()), ("tier".into(), "".into())]
        );
    }

    #[test]
    fn socket_precedence() {
        let flag = Some(PathBuf::from("/f"));
        let env = Some("/e".into());
        assert_eq!(socket_path(flag.clone(), env.clone()), PathBuf::from("/f"));
        assert_eq!(socket_path(None, env), PathBuf::from("/e"));
        assert_eq!(
            socket_path(None, Some("".into())),
            PathBuf::from(DEFAULT_SOCKET)
        );
        assert_eq!(socket_path(None, None), PathBuf::from(DEFAULT_SOCKET));
    }

    #[test]
    fn refuses_bad_arguments() {
        for args in [
            &["xsknetctl", "endpoint", "del"][..],
            &[
                "xsknetctl",
                "endpoint",
                "del",
                "--ifname",
                "a",
                "--ip",
                "10.0.0.1",
            ],
            &[
                "xsknetctl",
                "endpoint",
                "add",
                "--ifname",
                "a",
                "--ip",
                "10.0.0.300",
            ],
            &[
                "xsknetctl",
                "endpoint",
                "add",
                "--ifname",
                "a",
                "--ip",
                "10.0.0.1",
                "--mac",
                "zz",
            ],
            &[
                "xsknetctl",
                "endpoint",
                "add",
                "--ifname",
                "a",
                "--ip",
                "10.0.0.1",
                "--label",
                "x",
            ],
            &[
                "xsknetctl",
                "endpoint",
                "add",
                "--ifname",
                "a",
                "--ip",
                "10.0.0.1",
                "--name",
                "x",
            ],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn stats_table_shows_drops_by_reason() {
        let stats: Stats = serde_json::from_value(serde_json::json!({
            "workers": [{"worker": 0, "core": 1, "ports": 2, "rx_packets": 10, "tx_packets": 9,
                "drops": {"no_route": 1}, "handoff_out": 0, "handoff_in": 0, "sleeps": 3,
                "generation": 7}],
            "ports": [{"port": 1, "ifname": "xsk1", "kind": "pod", "worker": 0,
                "ip": "10.244.0.5", "rx_packets": 10, "rx_bytes": 1000, "tx_packets": 9,
                "tx_bytes": 900, "drops": {"no_route": 1, "ttl_expired": 0}}]
        }))
        .unwrap();
        let out = format_stats(&stats);
        assert!(out.contains("no_route=1"), "{out}");
        assert!(!out.contains("ttl_expired"), "{out}");
        assert!(out.lines().any(|l| l.starts_with("1     xsk1")), "{out}");
    }
}
