//! Kubernetes objects as operators write them: `networking.k8s.io/v1` NetworkPolicy and
//! `v1` Namespace and Pod, parsed from multi-document YAML and validated the way the API
//! server would, so a document accepted here has the meaning it has in a cluster.
//!
//! Parsing is two passes over the YAML stream: the first reads each document as a plain
//! value to find its `kind`, `apiVersion` and name (so every later error can name the
//! object), the second decodes it into the typed structs below through
//! `serde_path_to_error` (type errors name the field path and carry the YAML line). Leaf
//! values (CIDRs, ports, protocols, selector operators) check themselves while decoding;
//! cross-field rules (endPort against port, `except` inside `cidr`,
//! selector operator versus values, peer kinds, label syntax, names) run afterwards. Every
//! failure is a [`PolicyError`] naming the object and the field, e.g.
//! `NetworkPolicy x/deny-all: spec.ingress[0].ports[1].endPort: must be >= port (got 70 < 80)`.
//! Nothing here panics on any input (a unit test feeds it thousands of garbled streams).
//!
//! The typed structs serialise back to the same Kubernetes shape, which is how the store
//! persists them. Differences from the API server, on purpose: a CIDR with host bits set
//! (`10.0.0.5/24`) is refused rather than silently masked, and unknown fields inside
//! `spec` are refused (a typo there would change who may talk to whom); unknown fields
//! elsewhere (annotations, status, other container fields) are ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// `apiVersion` of NetworkPolicy.
pub const NETWORKING_V1: &str = "networking.k8s.io/v1";
/// `apiVersion` of Namespace and Pod.
pub const CORE_V1: &str = "v1";
/// The label the API server puts on every namespace, value = the namespace's name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Namespace of a namespaced object whose `metadata.namespace` is absent.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A policy document or store operation that was refused. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The text is not YAML (or not the expected shape) at this document.
    #[error("{}document {doc}: invalid YAML: {message}", file_prefix(.file))]
    Yaml {
        file: Option<String>,
        /// 1-based index of the document in its stream.
        doc: usize,
        /// 1-based line, when the parser knows it.
        line: Option<usize>,
        message: String,
    },
    /// An object (`NetworkPolicy x/deny-all`, or `document 3` before its name is known)
    /// with an unacceptable value at `field` (`spec.ingress[0].ports[1].endPort`).
    #[error("{}{object}: {}{message}", file_prefix(.file), field_prefix(.field))]
    Invalid {
        file: Option<String>,
        object: String,
        field: String,
        message: String,
    },
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{object} not found")]
    NotFound { object: String },
}

fn file_prefix(file: &Option<String>) -> String {
    match file {
        Some(f) => format!("{f}: "),
        None => String::new(),
    }
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() || field == "." {
        String::new()
    } else {
        format!("{field}: ")
    }
}

impl PolicyError {
    /// The field path the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            PolicyError::Invalid { field, .. } if !field.is_empty() => Some(field),
            _ => None,
        }
    }

    fn with_file(mut self, name: &str) -> Self {
        match &mut self {
            PolicyError::Yaml { file, .. } | PolicyError::Invalid { file, .. } => {
                *file = Some(name.to_string())
            }
            PolicyError::Read { .. } | PolicyError::NotFound { .. } => {}
        }
        self
    }
}

fn invalid(object: &str, field: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        file: None,
        object: object.to_string(),
        field: field.into(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------------------
// Leaf types that validate themselves while decoding.

/// `protocol` of a NetworkPolicy port or container port. Absent means TCP.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Protocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => super::PROTO_TCP,
            Protocol::Udp => super::PROTO_UDP,
            Protocol::Sctp => super::PROTO_SCTP,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            other => Err(format!(
                "unsupported protocol {other:?} (expected TCP, UDP or SCTP)"
            )),
        }
    }
}

/// A NetworkPolicy `port`: a number or a named container port (IANA_SVC_NAME).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(s) => f.write_str(s),
        }
    }
}

impl Serialize for PortRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PortRef::Number(n) => s.serialize_u16(*n),
            PortRef::Name(n) => s.serialize_str(n),
        }
    }
}

impl<'de> Deserialize<'de> for PortRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number (1-65535) or a port name")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRef, E> {
                port_number(v as i64)
                    .map(PortRef::Number)
                    .map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRef, E> {
                port_number(v).map(PortRef::Number).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRef, E> {
                check_port_name(v).map_err(E::custom)?;
                Ok(PortRef::Name(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

fn port_number(v: i64) -> Result<u16, String> {
    if (1..=65535).contains(&v) {
        Ok(v as u16)
    } else {
        Err(format!("must be between 1 and 65535, inclusive (got {v})"))
    }
}

/// IANA_SVC_NAME (RFC 6335): at most 15 characters of lowercase letters, digits and
/// `-`, at least one letter, no `-` at either end and no `--`.
pub fn check_port_name(name: &str) -> Result<(), String> {
    let problem = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > 15 {
        Some("must be no more than 15 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("must contain only lowercase letters, digits and '-'")
    } else if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        Some("must contain at least one letter")
    } else if name.starts_with('-') || name.ends_with('-') {
        Some("must not begin or end with '-'")
    } else if name.contains("--") {
        Some("must not contain consecutive '-'")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(format!("invalid port name {name:?}: {p}")),
    }
}

/// A CIDR as written in `ipBlock`. IPv6 blocks are valid Kubernetes and accepted; the
/// IPv4 dataplane never sees an address inside them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// `(network, prefix)` in host byte order, if IPv4.
    pub fn v4(&self) -> Option<(u32, u8)> {
        match self.addr {
            IpAddr::V4(a) => Some((u32::from(a), self.prefix)),
            IpAddr::V6(_) => None,
        }
    }

    fn bits(&self) -> (u128, u8) {
        // Both families in one 128-bit space: v4 as the low 32 bits with the prefix
        // counted from bit 96, so containment is the same computation.
        match self.addr {
            IpAddr::V4(a) => (u32::from(a) as u128, self.prefix + 96),
            IpAddr::V6(a) => (u128::from(a), self.prefix),
        }
    }

    /// True if `other` is a strict subset of `self` (same family, longer prefix).
    pub fn strictly_contains(&self, other: &Cidr) -> bool {
        if self.addr.is_ipv4() != other.addr.is_ipv4() {
            return false;
        }
        let (a, pa) = self.bits();
        let (b, pb) = other.bits();
        pb > pa && mask128(b, pa) == a
    }
}

fn mask128(v: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        v & (u128::MAX << (128 - u32::from(prefix)))
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid CIDR {s:?}: {why}");
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| bad("expected ADDRESS/PREFIX"))?;
        let addr: IpAddr = addr.parse().map_err(|_| bad("bad address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 3 {
            return Err(bad("bad prefix length"));
        }
        let prefix: u8 = prefix.parse().map_err(|_| bad("bad prefix length"))?;
        if prefix > max {
            return Err(bad(&format!("prefix length must be 0..={max}")));
        }
        let c = Cidr { addr, prefix };
        let (bits, p) = c.bits();
        if mask128(bits, p) != bits {
            let net = match addr {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(mask128(bits, p) as u32)),
                IpAddr::V6(_) => IpAddr::V6(mask128(bits, p).into()),
            };
            return Err(bad(&format!("host bits set (network is {net}/{prefix})")));
        }
        Ok(c)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// `null` reads as the default (empty list or map), as the API server treats it.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

// ---------------------------------------------------------------------------------------
// Label selectors.

/// `metav1.LabelSelector`. The empty selector matches everything; whether a selector
/// is *absent* is told by the `Option` around it in the peer or spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub match_labels: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// Upstream `labels.Selector` semantics: every matchLabels pair and every
    /// expression must hold; `NotIn` and `DoesNotExist` hold when the key is absent.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let value = labels.get(&e.key);
                match e.operator {
                    SelectorOperator::In => value.is_some_and(|v| e.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !e.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    fn validate(&self, object: &str, path: &str) -> Result<(), PolicyError> {
        for (k, v) in &self.match_labels {
            check_label_key(k).map_err(|m| invalid(object, format!("{path}.matchLabels"), m))?;
            check_label_value(v)
                .map_err(|m| invalid(object, format!("{path}.matchLabels.{k}"), m))?;
        }
        for (i, e) in self.match_expressions.iter().enumerate() {
            let at = format!("{path}.matchExpressions[{i}]");
            check_label_key(&e.key).map_err(|m| invalid(object, format!("{at}.key"), m))?;
            match e.operator {
                SelectorOperator::In | SelectorOperator::NotIn if e.values.is_empty() => {
                    return Err(invalid(
                        object,
                        format!("{at}.values"),
                        format!("must be specified when operator is {:?}", e.operator),
                    ));
                }
                SelectorOperator::Exists | SelectorOperator::DoesNotExist
                    if !e.values.is_empty() =>
                {
                    return Err(invalid(
                        object,
                        format!("{at}.values"),
                        format!("may not be specified when operator is {:?}", e.operator),
                    ));
                }
                _ => {}
            }
            for (j, v) in e.values.iter().enumerate() {
                check_label_value(v)
                    .map_err(|m| invalid(object, format!("{at}.values[{j}]"), m))?;
            }
        }
        Ok(())
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// The name part of a qualified name or a non-empty label value:
/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn check_qualified_part(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    if b.is_empty() {
        return Err("must not be empty");
    }
    if b.len() > 63 {
        return Err("must be no more than 63 characters");
    }
    if !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return Err("must begin and end with an alphanumeric character");
    }
    if !b
        .iter()
        .all(|&c| is_alnum(c) || c == b'-' || c == b'_' || c == b'.')
    {
        return Err("must consist of alphanumerics, '-', '_' or '.'");
    }
    Ok(())
}

/// RFC 1123 subdomain: lowercase alphanumeric labels with inner `-`, joined by `.`,
/// at most 253 characters.
pub fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 253 {
        return Err(format!("{s:?}: must be no more than 253 characters"));
    }
    for part in s.split('.') {
        check_dns_label_chars(part)
            .map_err(|m| format!("{s:?}: must be a lowercase RFC 1123 subdomain ({m})"))?;
    }
    Ok(())
}

/// RFC 1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn check_dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 63 {
        return Err(format!("{s:?}: must be no more than 63 characters"));
    }
    check_dns_label_chars(s).map_err(|m| format!("{s:?}: must be a lowercase RFC 1123 label ({m})"))
}

fn check_dns_label_chars(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    let ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() {
        return Err("empty part");
    }
    if !ok(b[0]) || !ok(b[b.len() - 1]) {
        return Err("must begin and end with a lowercase letter or digit");
    }
    if !b.iter().all(|&c| ok(c) || c == b'-') {
        return Err("only lowercase letters, digits and '-'");
    }
    Ok(())
}

/// A label key: `[prefix/]name`, prefix a DNS subdomain, name a qualified part.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        check_dns_subdomain(p).map_err(|m| format!("invalid label key {key:?}: prefix {m}"))?;
    }
    check_qualified_part(name).map_err(|m| format!("invalid label key {key:?}: name part {m}"))
}

/// A label value: empty, or a qualified part.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_qualified_part(value).map_err(|m| format!("invalid label value {value:?}: {m}"))
}

/// Check a whole label map (keys and values).
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in labels {
        check_label_key(k)?;
        check_label_value(v)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Objects.

/// The part of `metadata` xsknet reads; other keys (annotations, uid, …) are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    /// Empty for cluster-scoped objects; `default` for namespaced ones when absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
}

/// `networking.k8s.io/v1` NetworkPolicy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicy {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    /// Absent `spec` is the zero spec: selects every pod of the namespace, Ingress.
    #[serde(default)]
    pub spec: NetworkPolicySpec,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySpec {
    /// Absent is the empty selector (every pod in the namespace), as in the Go type.
    #[serde(default, deserialize_with = "nullable")]
    pub pod_selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<PolicyType>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<IngressRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<EgressRule>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressRule {
    /// Absent or empty: every source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<Peer>>,
    /// Absent or empty: every port and protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PolicyPort>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    /// Absent or empty: every destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<Peer>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PolicyPort>>,
}

/// One entry of `from`/`to`: pod and namespace selectors (AND-ed), or an ipBlock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Peer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlockSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpBlockSpec {
    pub cidr: Cidr,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub except: Vec<Cidr>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyPort {
    /// Absent: TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Absent: every port of the protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i64>,
}

impl PolicyPort {
    pub fn protocol(&self) -> Protocol {
        self.protocol.unwrap_or_default()
    }
}

impl NetworkPolicy {
    /// Effective policyTypes, defaulted as the API server does: when the list is absent
    /// or empty, Ingress always, and Egress iff `spec.egress` has at least one rule
    /// (`egress: []` does not make a policy an egress policy).
    pub fn affects(&self, t: PolicyType) -> bool {
        match &self.spec.policy_types {
            Some(types) if !types.is_empty() => types.contains(&t),
            _ => match t {
                PolicyType::Ingress => true,
                PolicyType::Egress => self.spec.egress.as_ref().is_some_and(|e| !e.is_empty()),
            },
        }
    }

    pub fn ingress_rules(&self) -> &[IngressRule] {
        self.spec.ingress.as_deref().unwrap_or(&[])
    }

    pub fn egress_rules(&self) -> &[EgressRule] {
        self.spec.egress.as_deref().unwrap_or(&[])
    }

    fn validate(&self, object: &str) -> Result<(), PolicyError> {
        let spec = &self.spec;
        spec.pod_selector.validate(object, "spec.podSelector")?;
        if let Some(types) = &spec.policy_types {
            if types.len() > 2 {
                return Err(invalid(
                    object,
                    "spec.policyTypes",
                    "may not specify more than two policyTypes",
                ));
            }
        }
        for (i, r) in self.ingress_rules().iter().enumerate() {
            let at = format!("spec.ingress[{i}]");
            validate_ports(object, &at, r.ports.as_deref().unwrap_or(&[]))?;
            validate_peers(
                object,
                &format!("{at}.from"),
                r.from.as_deref().unwrap_or(&[]),
            )?;
        }
        for (i, r) in self.egress_rules().iter().enumerate() {
            let at = format!("spec.egress[{i}]");
            validate_ports(object, &at, r.ports.as_deref().unwrap_or(&[]))?;
            validate_peers(object, &format!("{at}.to"), r.to.as_deref().unwrap_or(&[]))?;
        }
        if self.ingress_rules().len() > usize::from(u16::MAX)
            || self.egress_rules().len() > usize::from(u16::MAX)
        {
            return Err(invalid(
                object,
                "spec",
                "more than 65535 rules in one direction",
            ));
        }
        Ok(())
    }
}

fn validate_ports(object: &str, at: &str, ports: &[PolicyPort]) -> Result<(), PolicyError> {
    for (j, p) in ports.iter().enumerate() {
        let Some(end) = p.end_port else { continue };
        let field = format!("{at}.ports[{j}].endPort");
        match &p.port {
            None => {
                return Err(invalid(object, field, "may not be specified without port"));
            }
            Some(PortRef::Name(n)) => {
                return Err(invalid(
                    object,
                    field,
                    format!("may not be specified when port is non-numeric (port {n:?})"),
                ));
            }
            Some(PortRef::Number(port)) => {
                port_number(end).map_err(|m| invalid(object, field.clone(), m))?;
                if end < i64::from(*port) {
                    return Err(invalid(
                        object,
                        field,
                        format!("must be >= port (got {end} < {port})"),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn validate_peers(object: &str, at: &str, peers: &[Peer]) -> Result<(), PolicyError> {
    for (j, p) in peers.iter().enumerate() {
        let at = format!("{at}[{j}]");
        let kinds = usize::from(p.pod_selector.is_some())
            + usize::from(p.namespace_selector.is_some())
            + usize::from(p.ip_block.is_some());
        if kinds == 0 {
            return Err(invalid(
                object,
                at,
                "must specify a peer (podSelector, namespaceSelector or ipBlock)",
            ));
        }
        if p.ip_block.is_some() && kinds > 1 {
            return Err(invalid(
                object,
                at,
                "may not specify both ipBlock and another peer",
            ));
        }
        if let Some(s) = &p.pod_selector {
            s.validate(object, &format!("{at}.podSelector"))?;
        }
        if let Some(s) = &p.namespace_selector {
            s.validate(object, &format!("{at}.namespaceSelector"))?;
        }
        if let Some(b) = &p.ip_block {
            for (k, e) in b.except.iter().enumerate() {
                if !b.cidr.strictly_contains(e) {
                    return Err(invalid(
                        object,
                        format!("{at}.ipBlock.except[{k}]"),
                        format!("must be a strict subset of cidr {} (got {e})", b.cidr),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `v1` Namespace: its labels feed namespaceSelectors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
}

/// `v1` Pod: labels, named container ports and the pod IP (for `policy matrix` and
/// clusters described offline).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PodStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, deserialize_with = "nullable")]
    pub containers: Vec<Container>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ports: Vec<ContainerPort>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub container_port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<Ipv4Addr>,
}

/// A container port with a name, as named-port resolution needs it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

impl Pod {
    pub fn ip(&self) -> Option<Ipv4Addr> {
        self.status.as_ref().and_then(|s| s.pod_ip)
    }

    /// The named container ports (unnamed ones cannot be referenced by a policy).
    pub fn named_ports(&self) -> Vec<NamedPort> {
        self.spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .filter_map(|p| {
                Some(NamedPort {
                    name: p.name.clone()?,
                    port: u16::try_from(p.container_port).ok()?,
                    protocol: p.protocol.unwrap_or_default(),
                })
            })
            .collect()
    }

    fn validate(&self, object: &str) -> Result<(), PolicyError> {
        let mut names = BTreeSet::new();
        for (i, c) in self.spec.containers.iter().enumerate() {
            for (j, p) in c.ports.iter().enumerate() {
                let at = format!("spec.containers[{i}].ports[{j}]");
                port_number(p.container_port)
                    .map_err(|m| invalid(object, format!("{at}.containerPort"), m))?;
                if let Some(n) = &p.name {
                    check_port_name(n).map_err(|m| invalid(object, format!("{at}.name"), m))?;
                    if !names.insert(n.as_str()) {
                        return Err(invalid(
                            object,
                            format!("{at}.name"),
                            format!("duplicate port name {n:?} in the pod"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// One validated document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Object {
    NetworkPolicy(NetworkPolicy),
    Namespace(Namespace),
    Pod(Pod),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::NetworkPolicy(_) => "NetworkPolicy",
            Object::Namespace(_) => "Namespace",
            Object::Pod(_) => "Pod",
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::NetworkPolicy(p) => &p.metadata,
            Object::Namespace(n) => &n.metadata,
            Object::Pod(p) => &p.metadata,
        }
    }

    /// `NetworkPolicy x/deny-all`, `Namespace x`.
    pub fn describe(&self) -> String {
        describe(self.kind(), self.metadata())
    }
}

fn describe(kind: &str, m: &ObjectMeta) -> String {
    if m.namespace.is_empty() {
        format!("{kind} {}", m.name)
    } else {
        format!("{kind} {}/{}", m.namespace, m.name)
    }
}

// ---------------------------------------------------------------------------------------
// Parsing.

/// Parse and validate every document of a YAML stream. Empty documents are skipped.
/// `file` (if any) prefixes error messages.
pub fn parse_yaml(text: &str, file: Option<&str>) -> Result<Vec<Object>, PolicyError> {
    parse_yaml_inner(text).map_err(|e| match file {
        Some(f) => e.with_file(f),
        None => e,
    })
}

/// Parse every `*.yaml`/`*.yml` file of a directory (not recursive), in name order.
/// Fails on the first invalid file, naming it.
pub fn parse_dir(dir: &Path) -> Result<Vec<Object>, PolicyError> {
    let read_err = |source| PolicyError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        let is_yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml");
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let mut out = Vec::new();
    for path in files {
        out.extend(parse_file(&path)?);
    }
    Ok(out)
}

/// Parse one file.
pub fn parse_file(path: &Path) -> Result<Vec<Object>, PolicyError> {
    let text = fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_yaml(&text, Some(&path.display().to_string()))
}

struct Header {
    kind: String,
    meta: ObjectMeta,
    /// How errors name the object before/after its name is known.
    object: String,
}

fn yaml_error(doc: usize, e: serde_yaml_ng::Error) -> PolicyError {
    PolicyError::Yaml {
        file: None,
        doc,
        line: e.location().map(|l| l.line()),
        message: e.to_string(),
    }
}

fn parse_yaml_inner(text: &str) -> Result<Vec<Object>, PolicyError> {
    // Pass 1: generic values, for kind/apiVersion/name and syntax errors.
    let mut headers: Vec<Option<Header>> = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        let value = serde_yaml_ng::Value::deserialize(doc).map_err(|e| yaml_error(n, e))?;
        headers.push(header(n, &value)?);
    }
    // Pass 2: typed decoding of the same documents, with paths and lines.
    let mut out = Vec::new();
    for (doc, h) in serde_yaml_ng::Deserializer::from_str(text).zip(headers) {
        if let Some(h) = h {
            out.push(decode(doc, &h)?);
        }
    }
    Ok(out)
}

fn header(doc: usize, value: &serde_yaml_ng::Value) -> Result<Option<Header>, PolicyError> {
    use serde_yaml_ng::Value;
    let map = match value {
        Value::Null => return Ok(None),
        Value::Mapping(m) => m,
        _ => {
            return Err(invalid(
                &format!("document {doc}"),
                "",
                "expected a Kubernetes object (a mapping with apiVersion and kind)",
            ))
        }
    };
    let unnamed = format!("document {doc}");
    let get_str = |key: &str| -> Result<Option<String>, PolicyError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(&unnamed, key, "must be a string")),
        }
    };
    let kind = get_str("kind")?.ok_or_else(|| invalid(&unnamed, "kind", "required"))?;
    let api_version =
        get_str("apiVersion")?.ok_or_else(|| invalid(&unnamed, "apiVersion", "required"))?;
    let (expected_api, namespaced) = match kind.as_str() {
        "NetworkPolicy" => (NETWORKING_V1, true),
        "Namespace" => (CORE_V1, false),
        "Pod" => (CORE_V1, true),
        other => {
            return Err(invalid(
                &unnamed,
                "kind",
                format!("unknown kind {other:?} (expected NetworkPolicy, Namespace or Pod)"),
            ))
        }
    };
    let with_kind = format!("{kind} in document {doc}");
    if api_version != expected_api {
        return Err(invalid(
            &with_kind,
            "apiVersion",
            format!(
                "unsupported apiVersion {api_version:?} for {kind} (expected {expected_api:?})"
            ),
        ));
    }
    let meta_value = map.get("metadata").cloned().unwrap_or(Value::Null);
    let mut meta: ObjectMeta = if meta_value.is_null() {
        ObjectMeta::default()
    } else {
        serde_path_to_error::deserialize(meta_value).map_err(|e| {
            let field = format!("metadata.{}", e.path());
            invalid(&with_kind, field, strip_path(e.into_inner().to_string()))
        })?
    };
    if meta.name.is_empty() {
        return Err(invalid(&with_kind, "metadata.name", "required"));
    }
    if namespaced {
        if meta.namespace.is_empty() {
            meta.namespace = DEFAULT_NAMESPACE.to_string();
        }
    } else {
        // Cluster-scoped: a namespace written there means nothing.
        meta.namespace.clear();
    }
    let object = describe(&kind, &meta);
    let name_check = if kind == "Namespace" {
        check_dns_label(&meta.name)
    } else {
        check_dns_subdomain(&meta.name)
    };
    name_check.map_err(|m| invalid(&object, "metadata.name", m))?;
    if namespaced {
        check_dns_label(&meta.namespace).map_err(|m| invalid(&object, "metadata.namespace", m))?;
    }
    for (k, v) in &meta.labels {
        check_label_key(k).map_err(|m| invalid(&object, "metadata.labels", m))?;
        check_label_value(v).map_err(|m| invalid(&object, format!("metadata.labels.{k}"), m))?;
    }
    Ok(Some(Header { kind, meta, object }))
}

/// serde_yaml_ng prefixes some messages with its own (shorter) path; ours is better.
fn strip_path(message: String) -> String {
    match message.split_once(": ") {
        Some((prefix, rest))
            if !prefix.contains(' ') && (prefix.contains('.') || prefix.contains('[')) =>
        {
            rest.to_string()
        }
        _ => message,
    }
}

fn decode(doc: serde_yaml_ng::Deserializer<'_>, h: &Header) -> Result<Object, PolicyError> {
    fn typed<'de, T: Deserialize<'de>>(
        doc: serde_yaml_ng::Deserializer<'de>,
        object: &str,
    ) -> Result<T, PolicyError> {
        serde_path_to_error::deserialize(doc).map_err(|e| {
            let field = e.path().to_string();
            invalid(object, field, strip_path(e.into_inner().to_string()))
        })
    }
    let o = h.object.as_str();
    let object = match h.kind.as_str() {
        "NetworkPolicy" => {
            let mut p: NetworkPolicy = typed(doc, o)?;
            p.metadata = h.meta.clone();
            p.validate(o)?;
            Object::NetworkPolicy(p)
        }
        "Namespace" => {
            let mut n: Namespace = typed(doc, o)?;
            n.metadata = h.meta.clone();
            Object::Namespace(n)
        }
        _ => {
            let mut p: Pod = typed(doc, o)?;
            p.metadata = h.meta.clone();
            p.validate(o)?;
            Object::Pod(p)
        }
    };
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        match parse_yaml(yaml, None) {
            Ok(o) => panic!("accepted: {o:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn policy(spec: &str) -> String {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n  namespace: x\nspec:\n{spec}"
        )
    }

    fn one_policy(spec: &str) -> NetworkPolicy {
        match parse_yaml(&policy(spec), None).unwrap().pop() {
            Some(Object::NetworkPolicy(p)) => p,
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn parses_a_full_policy() {
        let p = one_policy(
            r#"
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {}
      namespaceSelector:
        matchExpressions:
        - {key: ns, operator: In, values: [y, z]}
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    ports:
    - {protocol: UDP, port: 80, endPort: 90}
    - port: http
  egress:
  - {}
"#,
        );
        assert_eq!(p.metadata.namespace, "x");
        let r = &p.ingress_rules()[0];
        let peers = r.from.as_ref().unwrap();
        assert_eq!(peers[0].pod_selector, Some(LabelSelector::default()));
        assert_eq!(peers[1].ip_block.as_ref().unwrap().except.len(), 1);
        let ports = r.ports.as_ref().unwrap();
        assert_eq!(ports[0].protocol(), Protocol::Udp);
        assert_eq!(ports[0].end_port, Some(90));
        assert_eq!(ports[1].port, Some(PortRef::Name("http".into())));
        assert_eq!(ports[1].protocol(), Protocol::Tcp);
        assert!(p.affects(PolicyType::Egress));
    }

    #[test]
    fn policy_types_inference() {
        assert!(one_policy("  podSelector: {}\n").affects(PolicyType::Ingress));
        assert!(!one_policy("  podSelector: {}\n").affects(PolicyType::Egress));
        let p = one_policy("  podSelector: {}\n  egress: [{}]\n");
        assert!(p.affects(PolicyType::Ingress) && p.affects(PolicyType::Egress));
        // `egress: []` is zero rules: the API server does not add Egress.
        assert!(!one_policy("  podSelector: {}\n  egress: []\n").affects(PolicyType::Egress));
        let p = one_policy("  podSelector: {}\n  policyTypes: [Egress]\n");
        assert!(!p.affects(PolicyType::Ingress) && p.affects(PolicyType::Egress));
        let p = one_policy("  podSelector: {}\n  policyTypes: []\n  egress: [{}]\n");
        assert!(p.affects(PolicyType::Ingress) && p.affects(PolicyType::Egress));
    }

    #[test]
    fn multi_document_and_defaults() {
        let y = "---\n# comment only\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  labels: {team: red}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {pod: a}}\nspec:\n  containers:\n  - name: c\n    ports:\n    - {name: http, containerPort: 80}\n    - {containerPort: 81, protocol: UDP}\nstatus: {podIP: 10.244.0.5}\n---\n";
        let o = parse_yaml(y, None).unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].describe(), "Namespace x");
        let Object::Pod(p) = &o[1] else { panic!() };
        assert_eq!(p.metadata.namespace, "default");
        assert_eq!(p.ip(), Some(Ipv4Addr::new(10, 244, 0, 5)));
        assert_eq!(
            p.named_ports(),
            vec![NamedPort {
                name: "http".into(),
                port: 80,
                protocol: Protocol::Tcp
            }]
        );
    }

    #[test]
    fn end_port_below_port_names_object_and_field() {
        let e = err(&policy(
            "  podSelector: {}\n  ingress:\n  - ports:\n    - port: 1\n    - {port: 80, endPort: 70}\n",
        ));
        assert_eq!(
            e,
            "NetworkPolicy x/p: spec.ingress[0].ports[1].endPort: must be >= port (got 70 < 80)"
        );
    }

    #[test]
    fn refusals() {
        let cases: &[(&str, &str)] = &[
            (
                "  ingress:\n  - ports: [{endPort: 80}]\n",
                "spec.ingress[0].ports[0].endPort: may not be specified without port",
            ),
            (
                "  ingress:\n  - ports: [{port: http, endPort: 80}]\n",
                "spec.ingress[0].ports[0].endPort: may not be specified when port is non-numeric",
            ),
            (
                "  ingress:\n  - ports: [{port: 80, endPort: 70000}]\n",
                "endPort: must be between 1 and 65535, inclusive (got 70000)",
            ),
            (
                "  ingress:\n  - ports: [{port: 0}]\n",
                "spec.ingress[0].ports[0].port: must be between 1 and 65535, inclusive (got 0)",
            ),
            (
                "  ingress:\n  - ports: [{port: 65536}]\n",
                "(got 65536)",
            ),
            (
                "  ingress:\n  - ports: [{port: -1}]\n",
                "(got -1)",
            ),
            (
                "  ingress:\n  - ports: [{port: averyveryverylongname}]\n",
                "spec.ingress[0].ports[0].port: invalid port name \"averyveryverylongname\": must be no more than 15 characters",
            ),
            ("  ingress:\n  - ports: [{port: Http}]\n", "lowercase"),
            ("  ingress:\n  - ports: [{port: \"80\"}]\n", "at least one letter"),
            ("  ingress:\n  - ports: [{port: -http}]\n", "begin or end"),
            ("  ingress:\n  - ports: [{port: h--p}]\n", "consecutive"),
            (
                "  ingress:\n  - ports: [{protocol: tcp, port: 80}]\n",
                "spec.ingress[0].ports[0].protocol: unknown variant `tcp`",
            ),
            ("  ingress:\n  - ports: [{protocol: ICMP}]\n", "unknown variant `ICMP`"),
            (
                "  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/33}}]\n",
                "spec.egress[0].to[0].ipBlock.cidr: invalid CIDR \"10.0.0.0/33\"",
            ),
            ("  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0}}]\n", "expected ADDRESS/PREFIX"),
            ("  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.300/8}}]\n", "bad address"),
            ("  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.5/24}}]\n", "host bits set (network is 10.0.0.0/24)"),
            (
                "  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]\n",
                "spec.egress[0].to[0].ipBlock.except[0]: must be a strict subset of cidr 10.0.0.0/8 (got 11.0.0.0/16)",
            ),
            ("  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}}]\n", "strict subset"),
            ("  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [\"::/64\"]}}]\n", "strict subset"),
            (
                "  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]\n",
                "spec.egress[0].to[0]: may not specify both ipBlock and another peer",
            ),
            ("  egress:\n  - to: [{}]\n", "spec.egress[0].to[0]: must specify a peer"),
            (
                "  podSelector:\n    matchExpressions: [{key: a, operator: In}]\n",
                "spec.podSelector.matchExpressions[0].values: must be specified when operator is In",
            ),
            (
                "  podSelector:\n    matchExpressions: [{key: a, operator: NotIn, values: []}]\n",
                "must be specified when operator is NotIn",
            ),
            (
                "  podSelector:\n    matchExpressions: [{key: a, operator: Exists, values: [x]}]\n",
                "may not be specified when operator is Exists",
            ),
            (
                "  podSelector:\n    matchExpressions: [{key: a, operator: Equals, values: [x]}]\n",
                "spec.podSelector.matchExpressions[0].operator: unknown variant `Equals`",
            ),
            (
                "  podSelector:\n    matchLabels: {\"bad key!\": x}\n",
                "spec.podSelector.matchLabels: invalid label key",
            ),
            (
                "  podSelector:\n    matchLabels: {app: \"-x\"}\n",
                "spec.podSelector.matchLabels.app: invalid label value",
            ),
            (
                "  ingress:\n  - from: [{namespaceSelector: {matchLabels: {\"Example.com/a\": x}}}]\n",
                "prefix",
            ),
            ("  podSelector: {}\n  policyTypes: [Ingress, Egress, Ingress]\n", "more than two"),
            ("  policyTypes: [Both]\n", "spec.policyTypes[0]: unknown variant `Both`"),
            ("  podselector: {}\n", "spec: unknown field `podselector`"),
            ("  ingress:\n  - from: [{podSelector: {matchLabel: {a: b}}}]\n", "unknown field `matchLabel`"),
        ];
        for (spec, want) in cases {
            let e = err(&policy(spec));
            assert!(e.starts_with("NetworkPolicy x/p: "), "{e}");
            assert!(e.contains(want), "spec {spec:?}\nwant {want:?}\ngot  {e}");
        }
    }

    #[test]
    fn document_level_refusals() {
        let e = err("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n");
        assert_eq!(
            e,
            "document 1: kind: unknown kind \"Service\" (expected NetworkPolicy, Namespace or Pod)"
        );
        let e = err(
            "apiVersion: networking.k8s.io/v1beta1\nkind: NetworkPolicy\nmetadata: {name: s}\n",
        );
        assert!(e.contains("apiVersion: unsupported apiVersion"), "{e}");
        let e = err("apiVersion: v1\nkind: Namespace\nmetadata: {}\n");
        assert_eq!(e, "Namespace in document 1: metadata.name: required");
        let e = err("kind: Namespace\nmetadata: {name: x}\n");
        assert_eq!(e, "document 1: apiVersion: required");
        let e = err("apiVersion: v1\nkind: Namespace\nmetadata: {name: Bad_Name}\n");
        assert!(e.starts_with("Namespace Bad_Name: metadata.name:"), "{e}");
        let e = err("- a\n- b\n");
        assert!(e.contains("expected a Kubernetes object"), "{e}");
        let e = err(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {pod: [a]}}\n",
        );
        assert!(
            e.starts_with("Pod in document 1: metadata.labels.pod: "),
            "{e}"
        );
        let e = err("apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec:\n  containers:\n  - ports: [{containerPort: 99999}]\n");
        assert_eq!(
            e,
            "Pod x/a: spec.containers[0].ports[0].containerPort: must be between 1 and 65535, inclusive (got 99999)"
        );
        let e = err("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers:\n  - ports: [{containerPort: 80, name: web}, {containerPort: 81, name: web}]\n");
        assert!(e.contains("duplicate port name"), "{e}");
        let e =
            err("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nstatus: {podIP: 10.0.0.300}\n");
        assert!(e.starts_with("Pod default/a: status.podIP: "), "{e}");
    }

    #[test]
    fn bad_yaml_has_a_line() {
        let y = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: [y\n";
        match parse_yaml(y, Some("ns.yaml")) {
            Err(PolicyError::Yaml {
                file,
                doc,
                line,
                message,
            }) => {
                assert_eq!(file.as_deref(), Some("ns.yaml"));
                assert_eq!(doc, 2);
                assert!(line.is_some_and(|l| l >= 7), "{line:?} {message}");
            }
            other => panic!("{other:?}"),
        }
        // A type error in the second pass carries its line too.
        let e = err(&policy("  ingress:\n  - ports: [{port: 80, endPort: x}]\n"));
        assert!(e.contains("line 8"), "{e}");
    }

    #[test]
    fn port_names() {
        for ok in ["http", "h2", "a-b-c", "123a", "abcdefghijklmno"] {
            assert!(check_port_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "HTTP",
            "12",
            "a_b",
            "-a",
            "a-",
            "a--b",
            "abcdefghijklmnop",
        ] {
            assert!(check_port_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selector_semantics() {
        let labels: BTreeMap<String, String> =
            [("pod".to_string(), "a".to_string())].into_iter().collect();
        let sel = |y: &str| -> LabelSelector { serde_yaml_ng::from_str(y).unwrap() };
        assert!(sel("{}").matches(&labels));
        assert!(sel("{}").matches(&BTreeMap::new()));
        assert!(sel("matchLabels: {pod: a}").matches(&labels));
        assert!(!sel("matchLabels: {pod: b}").matches(&labels));
        assert!(!sel("matchLabels: {pod: a, x: y}").matches(&labels));
        let e = |op: &str, vals: &str| {
            sel(&format!(
                "matchExpressions: [{{key: pod, operator: {op}, values: [{vals}]}}]"
            ))
        };
        assert!(e("In", "a, b").matches(&labels));
        assert!(!e("In", "b").matches(&labels));
        assert!(!e("In", "a").matches(&BTreeMap::new()));
        assert!(!e("NotIn", "a").matches(&labels));
        assert!(e("NotIn", "b").matches(&labels));
        assert!(
            e("NotIn", "a").matches(&BTreeMap::new()),
            "NotIn holds for absent keys"
        );
        assert!(sel("matchExpressions: [{key: pod, operator: Exists}]").matches(&labels));
        assert!(!sel("matchExpressions: [{key: pod, operator: DoesNotExist}]").matches(&labels));
        assert!(sel("matchExpressions: [{key: x, operator: DoesNotExist}]").matches(&labels));
    }

    #[test]
    fn never_panics_on_garbage() {
        let mut seed = 0x1234_5678_u64;
        let pieces = [
            "apiVersion: networking.k8s.io/v1\n",
            "kind: NetworkPolicy\n",
            "kind: Pod\n",
            "metadata: {name: a}\n",
            "spec:\n",
            "  ingress:\n",
            "  - from:\n",
            "    - ",
            "ipBlock: {cidr: 1.2.3.0/24}\n",
            "podSelector: {}\n",
            "ports: [{port: 80}]\n",
            "---\n",
            "[",
            "{",
            "\"",
            ": ",
            "- ",
            "\t",
            "null\n",
            "~",
            "&a ",
            "*a ",
            "!!str ",
            "endPort: 2\n",
            "    ",
            "\n",
        ];
        for _ in 0..3000 {
            let mut s = String::new();
            for _ in 0..12 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            let _ = parse_yaml(&s, None);
        }
    }

    #[test]
    fn round_trips_through_serde() {
        let y = policy("  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]\n    ports: [{port: web}, {port: 80, endPort: 81, protocol: SCTP}]\n");
        let o = parse_yaml(&y, None).unwrap();
        let Object::NetworkPolicy(p) = &o[0] else {
            panic!()
        };
        let json = serde_json::to_string(p).unwrap();
        let back: NetworkPolicy = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, p);
    }
}
