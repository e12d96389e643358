//! The network configuration the runtime pipes to the plugin on stdin, and the
//! `CNI_*` environment.
//!
//! Parsed from an untyped JSON value field by field, so any input gives either a
//! [`NetConf`] or a [`CniError`] naming the field (code 6 for bytes that are not a JSON
//! object, 7 for a field with a wrong type or value, 1 for an unsupported
//! `cniVersion`), never a panic. Unknown fields are ignored, as the spec asks. The raw
//! bytes are kept: a delegated IPAM plugin gets exactly what the runtime sent.
//!
//! xsknet fields: `mtu` (default 1500), `socket` (the daemon's control socket, default
//! `/run/xsknet/xsknetd.sock`), `stateDir` (default `/var/lib/xsknet`), `disableIPv6`
//! (turn IPv6 off inside the pod; default false), `ipam` (absent: the daemon allocates;
//! `{"type": ...}`: delegate), `args.labels` / `args.cni.labels` (pod labels, a map
//! or a list of `{"key","value"}`), `runtimeConfig.mac` / `runtimeConfig.ips`.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde_json::{Map, Value};
use xsknet_proto::MacAddr;

use crate::errors::{code, CniError};

/// The CNI versions this plugin speaks.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];
/// Default daemon control socket and plugin/daemon state directory (the daemon's own
/// defaults, from `xsknet-proto`).
pub use xsknet_proto::consts::{DEFAULT_SOCKET, DEFAULT_STATE_DIR};
/// Default pod MTU.
pub const DEFAULT_MTU: u32 = 1500;

/// One `{containerID, ifname}` of `cni.dev/valid-attachments` (GC).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

/// The parsed network configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub plugin_type: String,
    pub mtu: u32,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub disable_ipv6: bool,
    /// The `type` of the IPAM plugin to delegate to, when configured.
    pub ipam_type: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `runtimeConfig.mac`.
    pub runtime_mac: Option<MacAddr>,
    /// `runtimeConfig.ips`, IPv4 only (other families are refused).
    pub runtime_ips: Vec<Ipv4Addr>,
    pub prev_result: Option<Value>,
    /// `cni.dev/valid-attachments` (GC).
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The bytes the runtime sent (for delegation).
    pub raw: Vec<u8>,
}

/// Parse `10.1.2.3` or `10.1.2.3/24` (the prefix is ignored: pods get a /32).
pub fn parse_ip(s: &str) -> Option<Ipv4Addr> {
    let addr = s.split('/').next().unwrap_or(s);
    addr.parse().ok()
}

fn bad(field: &str, why: impl std::fmt::Display) -> CniError {
    CniError::invalid_config(format!("invalid network config: {field}: {why}"))
}

fn opt_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, CniError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(bad(field, format!("expected a string, got {other}"))),
    }
}

/// Only the `cniVersion` (for error replies and VERSION), whatever else is wrong.
pub fn peek_version(stdin: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

/// Checks `v` against [`SUPPORTED_VERSIONS`].
pub fn check_version(v: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&v) {
        Ok(())
    } else {
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "incompatible CNI version {v:?}: xsknet supports {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ))
    }
}

fn labels_from(v: &Value, field: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut out = BTreeMap::new();
    match v {
        Value::Null => {}
        Value::Object(m) => {
            for (k, v) in m {
                let s = v
                    .as_str()
                    .ok_or_else(|| bad(&format!("{field}.{k}"), "label values are strings"))?;
                out.insert(k.clone(), s.to_string());
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let k = item.get("key").and_then(Value::as_str);
                let val = item.get("value").and_then(Value::as_str);
                match (k, val) {
                    (Some(k), Some(v)) => {
                        out.insert(k.to_string(), v.to_string());
                    }
                    _ => {
                        return Err(bad(
                            &format!("{field}[{i}]"),
                            "expected {\"key\": string, \"value\": string}",
                        ))
                    }
                }
            }
        }
        other => {
            return Err(bad(
                field,
                format!("expected a map or a list of key/value, got {other}"),
            ))
        }
    }
    Ok(out)
}

impl NetConf {
    /// Parses the configuration from stdin. A conflist (with `plugins`) is accepted
    /// too: its first `"type": "xsknet"` entry is used, inheriting `name` and
    /// `cniVersion`, so an operator can pipe a whole conflist file by hand.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let value: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODE,
                format!("cannot decode the network configuration on stdin: {e}"),
            )
        })?;
        let Value::Object(mut obj) = value else {
            return Err(CniError::new(
                code::DECODE,
                "the network configuration on stdin must be a JSON object",
            ));
        };
        if let Some(Value::Array(plugins)) = obj.get("plugins") {
            let mine = plugins
                .iter()
                .find(|p| p.get("type").and_then(Value::as_str) == Some("xsknet"))
                .and_then(Value::as_object)
                .cloned()
                .ok_or_else(|| bad("plugins", "no plugin of type \"xsknet\" in the list"))?;
            let mut merged = mine;
            for k in ["name", "cniVersion"] {
                if let Some(v) = obj.get(k) {
                    merged.insert(k.to_string(), v.clone());
                }
            }
            obj = merged;
        }
        let cni_version = opt_str(&obj, "cniVersion")?
            .ok_or_else(|| bad("cniVersion", "missing"))?
            .to_string();
        check_version(&cni_version)?;
        let name = opt_str(&obj, "name")?.unwrap_or_default().to_string();
        let plugin_type = opt_str(&obj, "type")?.unwrap_or("xsknet").to_string();
        let mtu = match obj.get("mtu") {
            None | Some(Value::Null) => DEFAULT_MTU,
            Some(v) => match v.as_u64() {
                Some(m) if (68..=65535).contains(&m) => m as u32,
                _ => return Err(bad("mtu", format!("must be an integer 68-65535, got {v}"))),
            },
        };
        let socket = PathBuf::from(opt_str(&obj, "socket")?.unwrap_or(DEFAULT_SOCKET));
        let state_dir = PathBuf::from(opt_str(&obj, "stateDir")?.unwrap_or(DEFAULT_STATE_DIR));
        if socket.as_os_str().is_empty() || state_dir.as_os_str().is_empty() {
            return Err(bad("socket/stateDir", "must not be empty"));
        }
        let disable_ipv6 = match obj.get("disableIPv6") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(bad("disableIPv6", format!("expected a bool, got {other}"))),
        };
        let ipam_type = match obj.get("ipam") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) if m.is_empty() => None,
            Some(Value::Object(m)) => match m.get("type").and_then(Value::as_str) {
                Some(t) if is_plugin_name(t) => Some(t.to_string()),
                Some(t) => return Err(bad("ipam.type", format!("{t:?} is not a plugin name"))),
                None => {
                    return Err(bad(
                        "ipam.type",
                        "missing (omit `ipam` to let xsknetd allocate)",
                    ))
                }
            },
            Some(other) => return Err(bad("ipam", format!("expected an object, got {other}"))),
        };
        let mut labels = BTreeMap::new();
        if let Some(args) = obj.get("args") {
            if !args.is_object() && !args.is_null() {
                return Err(bad("args", "expected an object"));
            }
            if let Some(l) = args.get("labels") {
                labels.extend(labels_from(l, "args.labels")?);
            }
            if let Some(l) = args.get("cni").and_then(|c| c.get("labels")) {
                labels.extend(labels_from(l, "args.cni.labels")?);
            }
        }
        let mut runtime_mac = None;
        let mut runtime_ips = Vec::new();
        match obj.get("runtimeConfig") {
            None | Some(Value::Null) => {}
            Some(Value::Object(rc)) => {
                if let Some(m) = opt_str(rc, "mac")? {
                    runtime_mac =
                        Some(m.parse::<MacAddr>().map_err(|_| {
                            bad("runtimeConfig.mac", format!("{m:?} is not a MAC"))
                        })?);
                }
                match rc.get("ips") {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(ips)) => {
                        for ip in ips {
                            let s = ip.as_str().unwrap_or_default();
                            let parsed = parse_ip(s).ok_or_else(|| {
                                bad("runtimeConfig.ips", format!("{ip} is not an IPv4 address"))
                            })?;
                            runtime_ips.push(parsed);
                        }
                    }
                    Some(other) => {
                        return Err(bad(
                            "runtimeConfig.ips",
                            format!("expected a list, got {other}"),
                        ))
                    }
                }
            }
            Some(other) => {
                return Err(bad(
                    "runtimeConfig",
                    format!("expected an object, got {other}"),
                ))
            }
        }
        let prev_result = match obj.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(other) => {
                return Err(bad(
                    "prevResult",
                    format!("expected an object, got {other}"),
                ))
            }
        };
        let valid_attachments = match obj.get("cni.dev/valid-attachments") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, it) in items.iter().enumerate() {
                    let cid = it.get("containerID").and_then(Value::as_str);
                    let ifn = it.get("ifname").and_then(Value::as_str);
                    match (cid, ifn) {
                        (Some(c), Some(f)) => out.push(Attachment {
                            container_id: c.to_string(),
                            ifname: f.to_string(),
                        }),
                        _ => {
                            return Err(bad(
                                &format!("cni.dev/valid-attachments[{i}]"),
                                "expected {\"containerID\": string, \"ifname\": string}",
                            ))
                        }
                    }
                }
                Some(out)
            }
            Some(other) => {
                return Err(bad(
                    "cni.dev/valid-attachments",
                    format!("expected a list, got {other}"),
                ))
            }
        };
        Ok(NetConf {
            cni_version,
            name,
            plugin_type,
            mtu,
            socket,
            state_dir,
            disable_ipv6,
            ipam_type,
            labels,
            runtime_mac,
            runtime_ips,
            prev_result,
            valid_attachments,
            raw: stdin.to_vec(),
        })
    }
}

/// A plugin `type` must be a bare file name (it is looked up in `CNI_PATH`).
pub fn is_plugin_name(t: &str) -> bool {
    !t.is_empty() && t != "." && t != ".." && !t.contains('/') && !t.contains('\0')
}

/// The `CNI_*` environment of one call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniEnv {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub path: Vec<PathBuf>,
    /// `CNI_ARGS` as key/value pairs.
    pub args: BTreeMap<String, String>,
}

impl CniEnv {
    /// Reads the variables `command` needs; missing or malformed ones are code 4.
    pub fn from_env(env: &HashMap<String, String>) -> Result<CniEnv, CniError> {
        let get = |k: &str| env.get(k).cloned().unwrap_or_default();
        let command = get("CNI_COMMAND");
        if command.is_empty() {
            return Err(CniError::invalid_env(
                "CNI_COMMAND is not set: xsknet is a CNI plugin, run by a container runtime",
            ));
        }
        let e = CniEnv {
            command: command.clone(),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            path: std::env::split_paths(&get("CNI_PATH"))
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
            args: parse_cni_args(&get("CNI_ARGS"))?,
        };
        let need: &[(&str, &str)] = match command.as_str() {
            "ADD" | "CHECK" => &[
                ("CNI_CONTAINERID", &e.container_id),
                ("CNI_NETNS", &e.netns),
                ("CNI_IFNAME", &e.ifname),
            ],
            "DEL" => &[
                ("CNI_CONTAINERID", &e.container_id),
                ("CNI_IFNAME", &e.ifname),
            ],
            _ => &[],
        };
        for (k, v) in need {
            if v.is_empty() {
                return Err(CniError::invalid_env(format!(
                    "{k} is required for {command} but is not set"
                )));
            }
        }
        if !e.ifname.is_empty() {
            xsknet_sys::netlink::check_ifname(&e.ifname)
                .map_err(|why| CniError::invalid_env(format!("CNI_IFNAME: {why}")))?;
        }
        if e.container_id.contains(['/', '\0']) || e.container_id.len() > 256 {
            return Err(CniError::invalid_env(
                "CNI_CONTAINERID must not contain '/' or NUL and be at most 256 bytes",
            ));
        }
        Ok(e)
    }

    /// `IP=` of `CNI_ARGS`, validated.
    pub fn requested_ip(&self) -> Result<Option<Ipv4Addr>, CniError> {
        match self.args.get("IP") {
            None => Ok(None),
            Some(s) => parse_ip(s).map(Some).ok_or_else(|| {
                CniError::invalid_env(format!("CNI_ARGS IP={s}: not an IPv4 address"))
            }),
        }
    }

    /// `MAC=` of `CNI_ARGS`, validated.
    pub fn requested_mac(&self) -> Result<Option<MacAddr>, CniError> {
        match self.args.get("MAC") {
            None => Ok(None),
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|_| CniError::invalid_env(format!("CNI_ARGS MAC={s}: not a MAC address"))),
        }
    }
}

/// `K1=V1;K2=V2` → map. A pair without `=` is an error (code 4).
pub fn parse_cni_args(s: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut out = BTreeMap::new();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| CniError::invalid_env(format!("CNI_ARGS: {pair:?} is not KEY=VALUE")))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<NetConf, CniError> {
        NetConf::parse(&serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn defaults() {
        let c = parse(json!({"cniVersion":"1.0.0","name":"n","type":"xsknet"})).unwrap();
        assert_eq!(c.mtu, 1500);
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert!(!c.disable_ipv6);
        assert_eq!(c.ipam_type, None);
        assert!(c.labels.is_empty());
    }

    #[test]
    fn every_field() {
        let c = parse(json!({
            "cniVersion":"1.1.0","name":"n","type":"xsknet","mtu":1450,"socket":"/s",
            "stateDir":"/d","disableIPv6":true,"ipam":{"type":"host-local","subnet":"10.1.0.0/24"},
            "args":{"labels":{"app":"web"},"cni":{"labels":[{"key":"tier","value":"fe"}]}},
            "runtimeConfig":{"mac":"02:AA:bb:cc:dd:ee","ips":["10.1.0.9/24"]},
            "prevResult":{"cniVersion":"1.1.0"},
            "cni.dev/valid-attachments":[{"containerID":"c","ifname":"eth0"}],
            "someOtherField": 1
        }))
        .unwrap();
        assert_eq!(c.mtu, 1450);
        assert!(c.disable_ipv6);
        assert_eq!(c.ipam_type.as_deref(), Some("host-local"));
        assert_eq!(c.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(c.labels.get("tier").map(String::as_str), Some("fe"));
        assert_eq!(
            c.runtime_mac,
            Some(MacAddr([2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]))
        );
        assert_eq!(c.runtime_ips, vec![Ipv4Addr::new(10, 1, 0, 9)]);
        assert!(c.prev_result.is_some());
        assert_eq!(c.valid_attachments.unwrap().len(), 1);
    }

    #[test]
    fn conflist_is_accepted() {
        let c = parse(json!({"cniVersion":"0.4.0","name":"net","plugins":[
            {"type":"xsknet","mtu":1400},{"type":"portmap"}]}))
        .unwrap();
        assert_eq!((c.name.as_str(), c.mtu), ("net", 1400));
        assert_eq!(c.cni_version, "0.4.0");
    }

    #[test]
    fn errors_have_codes_and_fields() {
        let code_of = |v: Value| parse(v).unwrap_err();
        assert_eq!(NetConf::parse(b"{").unwrap_err().code, code::DECODE);
        assert_eq!(NetConf::parse(b"[1]").unwrap_err().code, code::DECODE);
        assert_eq!(NetConf::parse(b"").unwrap_err().code, code::DECODE);
        let e = code_of(json!({"name":"n"}));
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("cniVersion"), "{e}");
        let e = code_of(json!({"cniVersion":"0.3.1"}));
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        assert!(e.msg.contains("0.4.0, 1.0.0, 1.1.0"), "{e}");
        for (v, field) in [
            (json!({"cniVersion":"1.0.0","mtu":"x"}), "mtu"),
            (json!({"cniVersion":"1.0.0","mtu":10}), "mtu"),
            (
                json!({"cniVersion":"1.0.0","ipam":{"type":"../x"}}),
                "ipam.type",
            ),
            (
                json!({"cniVersion":"1.0.0","ipam":{"subnet":"x"}}),
                "ipam.type",
            ),
            (json!({"cniVersion":"1.0.0","ipam":3}), "ipam"),
            (
                json!({"cniVersion":"1.0.0","args":{"labels":{"a":1}}}),
                "args.labels.a",
            ),
            (
                json!({"cniVersion":"1.0.0","runtimeConfig":{"mac":"zz"}}),
                "runtimeConfig.mac",
            ),
            (
                json!({"cniVersion":"1.0.0","runtimeConfig":{"ips":["x"]}}),
                "runtimeConfig.ips",
            ),
            (json!({"cniVersion":"1.0.0","prevResult":[]}), "prevResult"),
            (
                json!({"cniVersion":"1.0.0","disableIPv6":"yes"}),
                "disableIPv6",
            ),
            (
                json!({"cniVersion":"1.0.0","cni.dev/valid-attachments":[{}]}),
                "valid-attachments",
            ),
            (json!({"cniVersion":"1.0.0","socket":""}), "socket"),
            (json!({"cniVersion":1}), "cniVersion"),
            (
                json!({"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}),
                "plugins",
            ),
        ] {
            let e = code_of(v);
            assert_eq!(e.code, code::INVALID_CONFIG, "{e}");
            assert!(e.msg.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn env_requirements() {
        let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let e = CniEnv::from_env(&env(&[])).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        let e = CniEnv::from_env(&env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c")]))
            .unwrap_err();
        assert!(e.msg.contains("CNI_NETNS"), "{e}");
        let ok = CniEnv::from_env(&env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/a:/b"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.0.0.5;MAC=02:00:00:00:00:01",
            ),
        ]))
        .unwrap();
        assert_eq!(ok.path.len(), 2);
        assert_eq!(ok.requested_ip().unwrap(), Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert!(ok.requested_mac().unwrap().is_some());
        let e = CniEnv::from_env(&env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "this-name-is-far-too-long"),
        ]))
        .unwrap_err();
        assert!(e.msg.contains("CNI_IFNAME"), "{e}");
        let e = parse_cni_args("K8S_POD_NAME").unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        let mut bad = ok.clone();
        bad.args.insert("IP".into(), "nope".into());
        assert_eq!(bad.requested_ip().unwrap_err().code, code::INVALID_ENV);
    }

    #[test]
    fn parser_never_panics_on_junk() {
        let samples: [&[u8]; 8] = [
            b"",
            b"null",
            b"\xff\xfe",
            br#"{"cniVersion":"1.0.0","plugins":7}"#,
            br#"{"cniVersion":"1.0.0","args":[]}"#,
            br#"{"cniVersion":"1.0.0","runtimeConfig":{"ips":[1,2]}}"#,
            br#"{"cniVersion":"1.0.0","mtu":1e99}"#,
            br#"{"cniVersion":"1.0.0","args":{"cni":{"labels":[1]}}}"#,
        ];
        for s in samples {
            let _ = NetConf::parse(s);
        }
    }
}
