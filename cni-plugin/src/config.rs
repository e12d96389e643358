//! The network configuration the runtime pipes to the plugin on stdin, and the
//! `CNI_*` environment.
//!
//! Parsed from an untyped JSON value field by field, so any input gives either a
//! [`NetConf`] or a [`CniError`] naming the field, never a panic: code 6 for bytes that
//! are not a JSON object, 1 for an unsupported `cniVersion`, 7 for any other field that
//! is missing, of the wrong type or out of range (`network config: FIELD: why`). The
//! spec's own fields are checked as strictly as xsknet's: `cniVersion` required and
//! supported, `name` required and a valid network name
//! (`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`), `type` required and `"xsknet"`. Unknown fields
//! are ignored, as the spec asks. The raw bytes are kept: a delegated IPAM plugin gets
//! exactly what the runtime sent. The `CNI_*` environment is checked the same way with
//! code 4, `CNI_CONTAINERID` against the spec's syntax and [`MAX_CONTAINER_ID_LEN`].
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
/// The only `type` this plugin answers to.
pub const PLUGIN_TYPE: &str = "xsknet";
/// Longest `CNI_CONTAINERID` accepted, in bytes, by every verb. The spec sets no
/// limit; 256 is far above what runtimes use (64 hex digits) and every path honours
/// it: the ID travels in control requests (limit 1 MiB) and is stored inside files
/// (the daemon's IPAM state, the pending-DEL record), never as a file name (the
/// host veth and the pending-DEL record are named by hashes of it).
pub const MAX_CONTAINER_ID_LEN: usize = 256;

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
    /// Whether `mtu` was in the config; without it the pod gets the daemon's pod MTU
    /// (uplink MTU − 50 with an overlay) and `mtu` is only the fallback.
    pub mtu_configured: bool,
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
    CniError::invalid_config(format!("network config: {field}: {why}"))
}

/// `s` quoted for an error message, cut to 64 characters: the value came from the
/// runtime and may be of any length.
fn shown(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
        None => format!("{s:?}"),
    }
}

/// The spec's syntax of network names and container IDs: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn is_cni_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn opt_bool(obj: &Map<String, Value>, field: &str) -> Result<Option<bool>, CniError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(bad(field, format!("expected true or false, got {other}"))),
    }
}

/// An absolute path without NUL: relative paths would depend on the directory the
/// runtime happens to run the plugin in.
fn opt_path(obj: &Map<String, Value>, field: &str, default: &str) -> Result<PathBuf, CniError> {
    let s = opt_str(obj, field)?.unwrap_or(default);
    if !s.starts_with('/') {
        return Err(bad(field, format!("must be an absolute path, got {s:?}")));
    }
    if s.contains('\0') {
        return Err(bad(field, "must not contain NUL"));
    }
    Ok(PathBuf::from(s))
}

/// The plugin configuration of this plugin in a conflist piped by hand: the single
/// entry of type `xsknet`, with the list's `name` and `cniVersion` (what a runtime
/// executing the list passes to each plugin). Every entry must be an object with a
/// `type`, so a typo elsewhere in the list is reported, not skipped.
fn conflist_entry(
    list: &Map<String, Value>,
    plugins: &Value,
) -> Result<Map<String, Value>, CniError> {
    let Value::Array(plugins) = plugins else {
        return Err(bad(
            "plugins",
            format!("expected a list of plugin configurations, got {plugins}"),
        ));
    };
    for field in ["disableCheck", "disableGC"] {
        opt_bool(list, field)?;
    }
    let mut mine: Option<(usize, &Map<String, Value>)> = None;
    let mut types = Vec::with_capacity(plugins.len());
    for (i, p) in plugins.iter().enumerate() {
        let Value::Object(p) = p else {
            return Err(bad(
                &format!("plugins[{i}]"),
                format!("expected an object, got {p}"),
            ));
        };
        let t = opt_str(p, "type")
            .map_err(|_| bad(&format!("plugins[{i}].type"), "expected a string"))?
            .ok_or_else(|| bad(&format!("plugins[{i}].type"), "required"))?;
        if !is_plugin_name(t) {
            return Err(bad(
                &format!("plugins[{i}].type"),
                format!("{t:?} is not a plugin name"),
            ));
        }
        if t == PLUGIN_TYPE {
            if let Some((first, _)) = mine {
                return Err(bad(
                    "plugins",
                    format!("entries {first} and {i} are both of type \"{PLUGIN_TYPE}\""),
                ));
            }
            mine = Some((i, p));
        }
        types.push(shown(t));
    }
    let Some((_, entry)) = mine else {
        return Err(bad(
            "plugins",
            format!(
                "no entry of type \"{PLUGIN_TYPE}\" (got [{}])",
                types.join(", ")
            ),
        ));
    };
    let mut merged = entry.clone();
    for k in ["name", "cniVersion"] {
        match list.get(k) {
            Some(v) => merged.insert(k.to_string(), v.clone()),
            None => merged.remove(k),
        };
    }
    Ok(merged)
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
                "network config: cniVersion: {v:?} is not supported (xsknet supports {})",
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
    /// too: its one `"type": "xsknet"` entry is used, inheriting `name` and
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
        if let Some(plugins) = obj.get("plugins") {
            obj = conflist_entry(&obj, plugins)?;
        }
        let cni_version = opt_str(&obj, "cniVersion")?
            .ok_or_else(|| bad("cniVersion", "required"))?
            .to_string();
        check_version(&cni_version)?;
        let name = opt_str(&obj, "name")?
            .ok_or_else(|| bad("name", "required"))?
            .to_string();
        if !is_cni_identifier(&name) {
            return Err(bad(
                "name",
                format!(
                    "{} is not a valid network name (letters, digits, '_', '.' and '-', \
                     starting with a letter or digit)",
                    shown(&name)
                ),
            ));
        }
        let plugin_type = opt_str(&obj, "type")?
            .ok_or_else(|| bad("type", "required"))?
            .to_string();
        if plugin_type != PLUGIN_TYPE {
            return Err(bad(
                "type",
                format!("must be \"{PLUGIN_TYPE}\" (got {})", shown(&plugin_type)),
            ));
        }
        let mtu_configured = !matches!(obj.get("mtu"), None | Some(Value::Null));
        let mtu = match obj.get("mtu") {
            None | Some(Value::Null) => DEFAULT_MTU,
            Some(v) => match v.as_u64() {
                Some(m) if (68..=65535).contains(&m) => m as u32,
                _ => return Err(bad("mtu", format!("must be an integer 68-65535, got {v}"))),
            },
        };
        let socket = opt_path(&obj, "socket", DEFAULT_SOCKET)?;
        let state_dir = opt_path(&obj, "stateDir", DEFAULT_STATE_DIR)?;
        let disable_ipv6 = opt_bool(&obj, "disableIPv6")?.unwrap_or(false);
        match obj.get("dns") {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(other) => return Err(bad("dns", format!("expected an object, got {other}"))),
        }
        let ipam_type = match obj.get("ipam") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) if m.is_empty() => None,
            Some(Value::Object(m)) => match m.get("type") {
                Some(Value::String(t)) if is_plugin_name(t) => Some(t.clone()),
                Some(Value::String(t)) => {
                    return Err(bad("ipam.type", format!("{t:?} is not a plugin name")))
                }
                Some(other) if !other.is_null() => {
                    return Err(bad("ipam.type", format!("expected a string, got {other}")))
                }
                _ => {
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
            match args.get("cni") {
                None | Some(Value::Null) => {}
                Some(Value::Object(cni)) => {
                    if let Some(l) = cni.get("labels") {
                        labels.extend(labels_from(l, "args.cni.labels")?);
                    }
                }
                Some(other) => {
                    return Err(bad("args.cni", format!("expected an object, got {other}")))
                }
            }
        }
        let mut runtime_mac = None;
        let mut runtime_ips = Vec::new();
        match obj.get("runtimeConfig") {
            None | Some(Value::Null) => {}
            Some(Value::Object(rc)) => {
                let mac = opt_str(rc, "mac")
                    .map_err(|_| bad("runtimeConfig.mac", "expected a string"))?;
                if let Some(m) = mac {
                    runtime_mac =
                        Some(m.parse::<MacAddr>().map_err(|_| {
                            bad("runtimeConfig.mac", format!("{m:?} is not a MAC"))
                        })?);
                }
                match rc.get("ips") {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(ips)) => {
                        for (i, ip) in ips.iter().enumerate() {
                            let parsed = ip.as_str().and_then(parse_ip).ok_or_else(|| {
                                bad(
                                    &format!("runtimeConfig.ips[{i}]"),
                                    format!("{ip} is not an IPv4 address"),
                                )
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
            mtu_configured,
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
        // Only the verbs that act on an attachment read these; the others ignore
        // them, as the spec says (libcni probes VERSION with `CNI_NETNS=dummy`).
        if !need.is_empty() {
            xsknet_sys::netlink::check_ifname(&e.ifname)
                .map_err(|why| CniError::invalid_env(format!("CNI_IFNAME: {why}")))?;
            check_container_id(&e.container_id)?;
            if !e.netns.is_empty() && !e.netns.starts_with('/') {
                return Err(CniError::invalid_env(format!(
                    "CNI_NETNS: must be an absolute path, got {}",
                    shown(&e.netns)
                )));
            }
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

/// `CNI_CONTAINERID` as the spec defines it (`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`), at most
/// [`MAX_CONTAINER_ID_LEN`] bytes (code 4).
pub fn check_container_id(id: &str) -> Result<(), CniError> {
    if id.len() > MAX_CONTAINER_ID_LEN {
        return Err(CniError::invalid_env(format!(
            "CNI_CONTAINERID: {} bytes, at most {MAX_CONTAINER_ID_LEN} are accepted",
            id.len()
        )));
    }
    if !is_cni_identifier(id) {
        return Err(CniError::invalid_env(format!(
            "CNI_CONTAINERID: {} is not a valid container ID (letters, digits, '_', '.' \
             and '-', starting with a letter or digit)",
            shown(id)
        )));
    }
    Ok(())
}

/// `K1=V1;K2=V2` → map. A pair without `=` or with an empty key is an error (code 4).
pub fn parse_cni_args(s: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut out = BTreeMap::new();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            _ => {
                return Err(CniError::invalid_env(format!(
                    "CNI_ARGS: {pair:?} is not KEY=VALUE"
                )))
            }
        }
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

    /// A valid config with `extra`'s fields set (`null` removes one).
    fn conf(extra: Value) -> Value {
        let mut c = json!({"cniVersion":"1.0.0","name":"n","type":"xsknet"});
        for (k, v) in extra.as_object().unwrap() {
            match v {
                Value::Null => {
                    c.as_object_mut().unwrap().remove(k);
                }
                v => c[k] = v.clone(),
            }
        }
        c
    }

    /// Parsing `v` fails with `code` and a message starting with `msg`.
    #[track_caller]
    fn fails(v: Value, code: u32, msg: &str) {
        let e = parse(v.clone()).unwrap_err();
        assert_eq!(e.code, code, "{v}: {e}");
        assert!(e.msg.starts_with(msg), "{v}: want {msg:?}, got {:?}", e.msg);
    }

    #[test]
    fn defaults() {
        let c = parse(conf(json!({}))).unwrap();
        assert_eq!(c.mtu, 1500);
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert!(!c.disable_ipv6);
        assert_eq!(c.ipam_type, None);
        assert!(c.labels.is_empty());
        assert_eq!((c.name.as_str(), c.plugin_type.as_str()), ("n", "xsknet"));
    }

    #[test]
    fn every_field() {
        let c = parse(json!({
            "cniVersion":"1.1.0","name":"n","type":"xsknet","mtu":1450,"socket":"/s",
            "stateDir":"/d","disableIPv6":true,"ipam":{"type":"host-local","subnet":"10.1.0.0/24"},
            "args":{"labels":{"app":"web"},"cni":{"labels":[{"key":"tier","value":"fe"}]}},
            "runtimeConfig":{"mac":"02:AA:bb:cc:dd:ee","ips":["10.1.0.9/24"]},
            "prevResult":{"cniVersion":"1.1.0"},"dns":{"nameservers":["10.0.0.10"]},
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
        let c = parse(
            json!({"cniVersion":"0.4.0","name":"net","disableCheck":false,"plugins":[
            {"type":"xsknet","mtu":1400},{"type":"portmap","capabilities":{"portMappings":true}}]}),
        )
        .unwrap();
        assert_eq!((c.name.as_str(), c.mtu), ("net", 1400));
        assert_eq!(c.cni_version, "0.4.0");
        // The list's name and version win over an entry's own.
        let c = parse(json!({"cniVersion":"1.0.0","name":"net","plugins":[
            {"type":"xsknet","name":"other","cniVersion":"0.4.0"}]}))
        .unwrap();
        assert_eq!((c.name.as_str(), c.cni_version.as_str()), ("net", "1.0.0"));
    }

    #[test]
    fn conflist_errors_name_the_entry() {
        let list = |plugins: Value| json!({"cniVersion":"1.0.0","name":"net","plugins":plugins});
        let cfg = code::INVALID_CONFIG;
        fails(
            list(json!([{"type":"bridge"},{"type":"portmap"}])),
            cfg,
            r#"network config: plugins: no entry of type "xsknet" (got ["bridge", "portmap"])"#,
        );
        fails(list(json!([])), cfg, "network config: plugins: no entry");
        fails(
            list(json!([{"type":"xsknet"},{"type":"xsknet"}])),
            cfg,
            r#"network config: plugins: entries 0 and 1 are both of type "xsknet""#,
        );
        fails(
            list(json!([{"type":"xsknet"},{}])),
            cfg,
            "network config: plugins[1].type: required",
        );
        fails(
            list(json!([{"type":"xsknet"},{"type":7}])),
            cfg,
            "network config: plugins[1].type: expected a string",
        );
        fails(
            list(json!([{"type":"xsknet"},{"type":"../bin/sh"}])),
            cfg,
            "network config: plugins[1].type: \"../bin/sh\" is not a plugin name",
        );
        fails(
            list(json!([{"type":"xsknet"}, 3])),
            cfg,
            "network config: plugins[1]: expected an object",
        );
        fails(
            list(json!(7)),
            cfg,
            "network config: plugins: expected a list",
        );
        fails(
            list(json!([{"type":"xsknet","mtu":1}])),
            cfg,
            "network config: mtu:",
        );
        let mut nameless = list(json!([{"type":"xsknet","name":"inner"}]));
        nameless.as_object_mut().unwrap().remove("name");
        fails(nameless, cfg, "network config: name: required");
        let mut l = list(json!([{"type":"xsknet"}]));
        l["disableGC"] = json!("no");
        fails(l, cfg, "network config: disableGC: expected true or false");
    }

    #[test]
    fn name_type_and_version_are_strict() {
        let cfg = code::INVALID_CONFIG;
        fails(
            conf(json!({"name":null})),
            cfg,
            "network config: name: required",
        );
        fails(
            conf(json!({"name":7})),
            cfg,
            "network config: name: expected a string",
        );
        for bad_name in [
            "", "-net", ".net", "_net", "my net", "net/1", "nét", "net\u{0}",
        ] {
            fails(
                conf(json!({ "name": bad_name })),
                cfg,
                &format!("network config: name: {bad_name:?} is not a valid network name"),
            );
        }
        let long = "n".repeat(1000);
        let e = parse(conf(json!({"name": format!("{long}!")}))).unwrap_err();
        assert!(e.msg.len() < 200, "a long name is cut in the message: {e}");
        for good in ["a", "0", "k8s-pod-network", "net_1.v2", &long] {
            assert_eq!(parse(conf(json!({ "name": good }))).unwrap().name, good);
        }
        fails(
            conf(json!({"type":null})),
            cfg,
            "network config: type: required",
        );
        fails(
            conf(json!({"type":"bridge"})),
            cfg,
            r#"network config: type: must be "xsknet" (got "bridge")"#,
        );
        fails(
            conf(json!({"type":"XSKNET"})),
            cfg,
            r#"network config: type: must be "xsknet" (got "XSKNET")"#,
        );
        fails(
            conf(json!({"type":1})),
            cfg,
            "network config: type: expected a string",
        );
        fails(
            conf(json!({"cniVersion":null})),
            cfg,
            "network config: cniVersion: required",
        );
        fails(
            conf(json!({"cniVersion":1})),
            cfg,
            "network config: cniVersion: expected a string",
        );
        for v in ["0.3.1", "", "2.0.0", "1.0"] {
            fails(
                conf(json!({ "cniVersion": v })),
                code::INCOMPATIBLE_VERSION,
                &format!(
                    "network config: cniVersion: {v:?} is not supported (xsknet supports 0.4.0, 1.0.0, 1.1.0)"
                ),
            );
        }
    }

    #[test]
    fn every_field_error_has_code_7_and_names_the_field() {
        assert_eq!(NetConf::parse(b"{").unwrap_err().code, code::DECODE);
        assert_eq!(NetConf::parse(b"[1]").unwrap_err().code, code::DECODE);
        assert_eq!(NetConf::parse(b"").unwrap_err().code, code::DECODE);
        for (extra, field) in [
            (json!({"mtu":"x"}), "mtu"),
            (json!({"mtu":10}), "mtu"),
            (json!({"mtu":65536}), "mtu"),
            (json!({"mtu":1500.5}), "mtu"),
            (json!({"ipam":{"type":"../x"}}), "ipam.type"),
            (json!({"ipam":{"subnet":"x"}}), "ipam.type"),
            (json!({"ipam":{"type":3}}), "ipam.type"),
            (json!({"ipam":3}), "ipam"),
            (json!({"args":[]}), "args"),
            (json!({"args":{"labels":{"a":1}}}), "args.labels.a"),
            (json!({"args":{"labels":7}}), "args.labels"),
            (json!({"args":{"labels":[{"key":"a"}]}}), "args.labels[0]"),
            (json!({"args":{"cni":5}}), "args.cni"),
            (json!({"args":{"cni":{"labels":[1]}}}), "args.cni.labels[0]"),
            (json!({"runtimeConfig":[]}), "runtimeConfig"),
            (json!({"runtimeConfig":{"mac":"zz"}}), "runtimeConfig.mac"),
            (json!({"runtimeConfig":{"mac":5}}), "runtimeConfig.mac"),
            (
                json!({"runtimeConfig":{"ips":"10.0.0.1"}}),
                "runtimeConfig.ips",
            ),
            (
                json!({"runtimeConfig":{"ips":["10.0.0.1", "x"]}}),
                "runtimeConfig.ips[1]",
            ),
            (json!({"runtimeConfig":{"ips":[1]}}), "runtimeConfig.ips[0]"),
            (json!({"prevResult":[]}), "prevResult"),
            (json!({"disableIPv6":"yes"}), "disableIPv6"),
            (json!({"dns":"8.8.8.8"}), "dns"),
            (
                json!({"cni.dev/valid-attachments":[{}]}),
                "cni.dev/valid-attachments[0]",
            ),
            (
                json!({"cni.dev/valid-attachments":{}}),
                "cni.dev/valid-attachments",
            ),
            (json!({"socket":""}), "socket"),
            (json!({"socket":"run/x.sock"}), "socket"),
            (json!({"socket":5}), "socket"),
            (json!({"stateDir":""}), "stateDir"),
            (json!({"stateDir":"var/lib/xsknet"}), "stateDir"),
            (json!({"stateDir":"/var/\u{0}lib"}), "stateDir"),
        ] {
            fails(
                conf(extra),
                code::INVALID_CONFIG,
                &format!("network config: {field}: "),
            );
        }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// `from_env` with a valid DEL environment changed by `pairs` fails with code 4 and
    /// a message starting with `msg`.
    #[track_caller]
    fn env_fails(command: &str, pairs: &[(&str, &str)], msg: &str) {
        let mut e = env(&[
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "c"),
            ("CNI_NETNS", "/run/netns/p"),
            ("CNI_IFNAME", "eth0"),
        ]);
        for (k, v) in pairs {
            if v.is_empty() {
                e.remove(*k);
            } else {
                e.insert(k.to_string(), v.to_string());
            }
        }
        let err = CniEnv::from_env(&e).unwrap_err();
        assert_eq!(err.code, code::INVALID_ENV, "{err}");
        assert!(err.msg.starts_with(msg), "want {msg:?}, got {:?}", err.msg);
    }

    #[test]
    fn env_requirements() {
        let e = CniEnv::from_env(&env(&[])).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.starts_with("CNI_COMMAND is not set"), "{e}");
        env_fails("ADD", &[("CNI_NETNS", "")], "CNI_NETNS is required for ADD");
        env_fails(
            "CHECK",
            &[("CNI_NETNS", "")],
            "CNI_NETNS is required for CHECK",
        );
        env_fails(
            "ADD",
            &[("CNI_IFNAME", "")],
            "CNI_IFNAME is required for ADD",
        );
        env_fails(
            "DEL",
            &[("CNI_CONTAINERID", "")],
            "CNI_CONTAINERID is required for DEL",
        );
        env_fails(
            "ADD",
            &[("CNI_NETNS", "run/netns/p")],
            "CNI_NETNS: must be an absolute path",
        );
        env_fails(
            "DEL",
            &[("CNI_IFNAME", "this-name-is-far-too-long")],
            "CNI_IFNAME: ",
        );
        env_fails("DEL", &[("CNI_ARGS", "K8S_POD_NAME")], "CNI_ARGS: ");
        env_fails("DEL", &[("CNI_ARGS", "A=1;=2")], "CNI_ARGS: \"=2\"");
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
        let mut bad = ok.clone();
        bad.args.insert("IP".into(), "nope".into());
        assert_eq!(bad.requested_ip().unwrap_err().code, code::INVALID_ENV);
        bad.args.insert("MAC".into(), "nope".into());
        assert_eq!(bad.requested_mac().unwrap_err().code, code::INVALID_ENV);
    }

    /// What libcni sends when it probes a plugin (podman does on every command): the
    /// attachment variables are ignored outside ADD, CHECK and DEL.
    #[test]
    fn verbs_without_attachment_ignore_its_variables() {
        for cmd in ["VERSION", "STATUS", "GC"] {
            let e = CniEnv::from_env(&env(&[
                ("CNI_COMMAND", cmd),
                ("CNI_CONTAINERID", "-bad/id"),
                ("CNI_NETNS", "dummy"),
                ("CNI_IFNAME", "dummy/with/slashes"),
                ("CNI_PATH", "dummy"),
            ]))
            .unwrap_or_else(|e| panic!("{cmd}: {e}"));
            assert_eq!(e.command, cmd);
        }
    }

    #[test]
    fn container_id_syntax_and_length() {
        for id in ["-c", ".c", "_c", "c/d", "c d", "c:d", "c\u{0}", "é"] {
            for cmd in ["ADD", "DEL", "CHECK"] {
                env_fails(cmd, &[("CNI_CONTAINERID", id)], "CNI_CONTAINERID: ");
            }
        }
        let max = "a".repeat(MAX_CONTAINER_ID_LEN);
        let over = "a".repeat(MAX_CONTAINER_ID_LEN + 1);
        for cmd in ["ADD", "DEL", "CHECK"] {
            env_fails(
                cmd,
                &[("CNI_CONTAINERID", &over)],
                "CNI_CONTAINERID: 257 bytes, at most 256 are accepted",
            );
            let e = CniEnv::from_env(&env(&[
                ("CNI_COMMAND", cmd),
                ("CNI_CONTAINERID", &max),
                ("CNI_NETNS", "/run/netns/p"),
                ("CNI_IFNAME", "eth0"),
            ]))
            .unwrap();
            assert_eq!(e.container_id, max);
        }
        for id in ["0", "abc-DEF_1.2", &"f".repeat(64)] {
            assert!(check_container_id(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn parser_never_panics_on_junk() {
        let samples: [&[u8]; 10] = [
            b"",
            b"null",
            b"\xff\xfe",
            br#"{"cniVersion":"1.0.0","plugins":7}"#,
            br#"{"cniVersion":"1.0.0","name":"n","type":"xsknet","args":[]}"#,
            br#"{"cniVersion":"1.0.0","name":"n","type":"xsknet","runtimeConfig":{"ips":[1,2]}}"#,
            br#"{"cniVersion":"1.0.0","name":"n","type":"xsknet","mtu":1e99}"#,
            br#"{"cniVersion":"1.0.0","name":"n","type":"xsknet","args":{"cni":{"labels":[1]}}}"#,
            br#"{"cniVersion":"1.0.0","name":"\u00e9\u00e9\u00e9","type":"xsknet"}"#,
            br#"{"plugins":[{"type":"xsknet"},null]}"#,
        ];
        for s in samples {
            let e = NetConf::parse(s).unwrap_err();
            assert!(
                [
                    code::DECODE,
                    code::INVALID_CONFIG,
                    code::INCOMPATIBLE_VERSION
                ]
                .contains(&e.code),
                "{e}"
            );
        }
    }
}
