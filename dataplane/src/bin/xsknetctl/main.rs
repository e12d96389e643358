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
mod cli;
mod format;

use cli::*;
use format::*;

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
