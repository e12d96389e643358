//! The records of the cluster view as they are stored in the datastore, their key layout,
//! and the validation every record read back goes through.
//!
//! Everything read from the datastore is untrusted: another node's daemon (of another
//! version, or broken), an operator with `etcdctl` or an attacker with write access
//! may have put anything under our prefix. [`decode`] is the only way from a raw
//! (key, value) pair to a [`Record`], and it checks, in this order: the key's shape
//! (`nodes/<name>`, `pods/<node>/<ns>/<name>`, …), the value's size
//! ([`max_value_len`]), that the value is JSON of the expected schema (unknown fields
//! refused; a type error names the field path), each field's range, and that the names
//! inside the record are the names in its key. Any failure is a [`RecordError`] that
//! names the key; nothing here panics on any input.
//!
//! Namespaces and NetworkPolicies are stored as the Kubernetes objects themselves, in the
//! JSON the API server would return, and are validated by the very parser that reads
//! policy YAML ([`crate::policy::k8s::parse_yaml`]; JSON is YAML), so a record accepted
//! here can be handed to [`crate::policy::store::PolicyStore::apply_objects`] as it is.
//! Pods are flat records (namespace, name, labels, IP, node, named ports) that convert to
//! the policy compiler's [`PodView`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use xsknet_proto::MacAddr;

use crate::config::Ipv4Cidr;
use crate::policy::compile::PodView;
use crate::policy::k8s::{self, NamedPort, Namespace, NetworkPolicy, Object};

/// Largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// Most named ports a pod record may carry.
pub const MAX_POD_PORTS: usize = 1024;

/// The longest value accepted for a record of `kind`. A node record is a few hundred
/// bytes; pods and namespaces carry labels (Kubernetes caps all labels of an object at
/// 256 KiB); a NetworkPolicy can be long, but etcd's own default request limit is
/// 1.5 MiB and a policy that size is a mistake, not a policy.
pub const fn max_value_len(kind: RecordKind) -> usize {
    match kind {
        RecordKind::Node => 4 * 1024,
        RecordKind::Pod | RecordKind::Namespace => 320 * 1024,
        RecordKind::Policy => 512 * 1024,
    }
}

/// The four kinds of record in the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    Node,
    Pod,
    Namespace,
    Policy,
}

/// A record read from the datastore was refused. `key` is the full datastore key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refused record {key}: {reason}")]
pub struct RecordError {
    pub key: String,
    pub reason: String,
}

fn refuse(key: &str, reason: impl Into<String>) -> RecordError {
    RecordError {
        key: key.to_string(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------
// Keys.

/// Where a pod lives in the view: its node, namespace and name (the same namespace/name
/// may briefly exist on two nodes while a pod is being rescheduled).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodKey {
    pub node: String,
    pub namespace: String,
    pub name: String,
}

/// The identity of a record, as its key spells it (the prefix left out).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RecordKey {
    Node(String),
    Pod(PodKey),
    Namespace(String),
    Policy { namespace: String, name: String },
}

impl RecordKey {
    pub fn kind(&self) -> RecordKind {
        match self {
            RecordKey::Node(_) => RecordKind::Node,
            RecordKey::Pod(_) => RecordKind::Pod,
            RecordKey::Namespace(_) => RecordKind::Namespace,
            RecordKey::Policy { .. } => RecordKind::Policy,
        }
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordKey::Node(n) => write!(f, "nodes/{n}"),
            RecordKey::Pod(p) => write!(f, "pods/{}/{}/{}", p.node, p.namespace, p.name),
            RecordKey::Namespace(n) => write!(f, "namespaces/{n}"),
            RecordKey::Policy { namespace, name } => write!(f, "policies/{namespace}/{name}"),
        }
    }
}

/// What a key under the prefix is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Record(RecordKey),
    /// `subnets/<a.b.c.d-len>`: subnet ownership, not part of the view.
    Subnet(Ipv4Cidr),
}

/// The key layout under a configurable prefix (`/xsknet/v1/` by default; tests give
/// each test its own so they can share one etcd):
///
/// ```text
/// <prefix>nodes/<node>                 NodeRecord, bound to the node's lease
/// <prefix>subnets/<a.b.c.d-len>        owner node name, no lease (ownership ≠ liveness)
/// <prefix>pods/<node>/<ns>/<name>      PodRecord, bound to the node's lease
/// <prefix>namespaces/<name>            v1 Namespace (JSON)
/// <prefix>policies/<ns>/<name>         networking.k8s.io/v1 NetworkPolicy (JSON)
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// `prefix` must start and end with `/` (checked by the config).
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// The prefix every key starts with (the range the watcher lists and watches).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn record(&self, key: &RecordKey) -> String {
        format!("{}{key}", self.prefix)
    }

    pub fn node(&self, name: &str) -> String {
        self.record(&RecordKey::Node(name.to_string()))
    }

    pub fn subnets(&self) -> String {
        format!("{}subnets/", self.prefix)
    }

    pub fn subnet(&self, cidr: Ipv4Cidr) -> String {
        format!("{}subnets/{}-{}", self.prefix, cidr.addr, cidr.prefix)
    }

    /// The prefix of one node's pods.
    pub fn node_pods(&self, node: &str) -> String {
        format!("{}pods/{node}/", self.prefix)
    }

    /// Classify a full key. Keys outside the prefix, of unknown shape, or whose name
    /// segments are not valid Kubernetes names are refused.
    pub fn parse(&self, key: &str) -> Result<KeyKind, RecordError> {
        let rest = key
            .strip_prefix(self.prefix.as_str())
            .ok_or_else(|| refuse(key, format!("not under the prefix {:?}", self.prefix)))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let name = |field: &str, s: &str, check: fn(&str) -> Result<(), k8s::ValueError>| {
            check(s)
                .map(|()| s.to_string())
                .map_err(|m| refuse(key, format!("key segment {field} {s:?}: {m}")))
        };
        let record = match parts.as_slice() {
            ["nodes", n] => RecordKey::Node(name("<node>", n, k8s::check_dns_subdomain)?),
            ["pods", node, ns, n] => RecordKey::Pod(PodKey {
                node: name("<node>", node, k8s::check_dns_subdomain)?,
                namespace: name("<namespace>", ns, k8s::check_dns_label)?,
                name: name("<name>", n, k8s::check_dns_subdomain)?,
            }),
            ["namespaces", n] => RecordKey::Namespace(name("<name>", n, k8s::check_dns_label)?),
            ["policies", ns, n] => RecordKey::Policy {
                namespace: name("<namespace>", ns, k8s::check_dns_label)?,
                name: name("<name>", n, k8s::check_dns_subdomain)?,
            },
            ["subnets", s] => return parse_subnet(key, s).map(KeyKind::Subnet),
            _ => {
                return Err(refuse(
                    key,
                    "unknown key (expected nodes/<node>, subnets/<a.b.c.d-len>, \
                     pods/<node>/<ns>/<name>, namespaces/<name> or policies/<ns>/<name>)",
                ))
            }
        };
        Ok(KeyKind::Record(record))
    }
}

fn parse_subnet(key: &str, s: &str) -> Result<Ipv4Cidr, RecordError> {
    let bad = || refuse(key, format!("subnet key segment {s:?} is not a.b.c.d-len"));
    let (addr, len) = s.rsplit_once('-').ok_or_else(bad)?;
    let cidr: Ipv4Cidr = format!("{addr}/{len}").parse().map_err(|_| bad())?;
    if cidr.has_host_bits() {
        return Err(refuse(key, format!("subnet {cidr} has host bits set")));
    }
    Ok(cidr)
}

// ---------------------------------------------------------------------------------------
// Records.

/// One node of the overlay: where its pods are (`pod_cidr`) and how to reach them (VXLAN
/// to `underlay_ip`:`vxlan_port`, inner destination MAC `vtep_mac`, VNI `vni`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeRecord {
    pub name: String,
    pub pod_cidr: Ipv4Cidr,
    pub underlay_ip: Ipv4Addr,
    pub vtep_mac: MacAddr,
    pub vni: u32,
    pub vxlan_port: u16,
}

impl NodeRecord {
    /// Field ranges, independent of any key.
    pub fn validate(&self) -> Result<(), String> {
        k8s::check_dns_subdomain(&self.name).map_err(|m| format!("name: {m}"))?;
        check_pod_cidr(self.pod_cidr).map_err(|m| format!("podCidr: {m}"))?;
        let ip = self.underlay_ip;
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
            return Err(format!(
                "underlayIp: {ip} is not a unicast address another node can reach"
            ));
        }
        let mac = self.vtep_mac.octets();
        if mac == [0; 6] || mac[0] & 1 != 0 {
            return Err(format!(
                "vtepMac: {} is not a unicast MAC address",
                self.vtep_mac
            ));
        }
        if self.vni > MAX_VNI {
            return Err(format!("vni: {} is not in 0..={MAX_VNI}", self.vni));
        }
        if self.vxlan_port == 0 {
            return Err("vxlanPort: must not be 0".into());
        }
        Ok(())
    }
}

/// A pod prefix a node may own: network address only, /8 to /30 (the rule `podCidr` in
/// `node.yaml` follows).
pub fn check_pod_cidr(cidr: Ipv4Cidr) -> Result<(), String> {
    if !(8..=30).contains(&cidr.prefix) {
        return Err(format!("{cidr}: prefix length must be in 8..=30"));
    }
    if cidr.has_host_bits() {
        return Err(format!(
            "{cidr}: host bits set (the network is {}/{})",
            cidr.network(),
            cidr.prefix
        ));
    }
    Ok(())
}

/// A pod as the cluster sees it: identity and labels for selectors, the IP for peers,
/// the node it runs on, and its named ports for `port: <name>` rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodRecord {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub ip: Ipv4Addr,
    pub node: String,
    #[serde(default)]
    pub ports: Vec<NamedPort>,
}

impl PodRecord {
    pub fn key(&self) -> PodKey {
        PodKey {
            node: self.node.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// Field ranges, independent of any key.
    pub fn validate(&self) -> Result<(), String> {
        k8s::check_dns_label(&self.namespace).map_err(|m| format!("namespace: {m}"))?;
        k8s::check_dns_subdomain(&self.name).map_err(|m| format!("name: {m}"))?;
        k8s::check_dns_subdomain(&self.node).map_err(|m| format!("node: {m}"))?;
        k8s::check_labels(&self.labels).map_err(|m| format!("labels: {m}"))?;
        let ip = self.ip;
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            return Err(format!("ip: {ip} is not a unicast address"));
        }
        if self.ports.len() > MAX_POD_PORTS {
            return Err(format!(
                "ports: {} entries, at most {MAX_POD_PORTS}",
                self.ports.len()
            ));
        }
        let mut names = BTreeSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            k8s::check_port_name(&p.name).map_err(|m| format!("ports[{i}].name: {m}"))?;
            if p.port == 0 {
                return Err(format!("ports[{i}].port: must be in 1..=65535"));
            }
            if !names.insert((&p.name, p.protocol)) {
                return Err(format!(
                    "ports[{i}].name: duplicate port name {:?} for {}",
                    p.name, p.protocol
                ));
            }
        }
        Ok(())
    }

    /// The policy compiler's view of this pod.
    pub fn to_pod_view(&self) -> PodView {
        PodView {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            labels: self.labels.clone(),
            ip: self.ip,
            ports: self.ports.clone(),
        }
    }
}

/// A record of the view, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Node(NodeRecord),
    Pod(PodRecord),
    Namespace(Namespace),
    Policy(NetworkPolicy),
}

impl Record {
    /// The key this record is stored under.
    pub fn key(&self) -> RecordKey {
        match self {
            Record::Node(n) => RecordKey::Node(n.name.clone()),
            Record::Pod(p) => RecordKey::Pod(p.key()),
            Record::Namespace(n) => RecordKey::Namespace(n.metadata.name.clone()),
            Record::Policy(p) => RecordKey::Policy {
                namespace: p.metadata.namespace.clone(),
                name: p.metadata.name.clone(),
            },
        }
    }

    /// The stored form (JSON). Kubernetes objects serialise back to their API shape.
    pub fn encode(&self) -> Vec<u8> {
        let json = match self {
            Record::Node(n) => serde_json::to_vec(n),
            Record::Pod(p) => serde_json::to_vec(p),
            Record::Namespace(n) => serde_json::to_vec(n),
            Record::Policy(p) => serde_json::to_vec(p),
        };
        // Serialising these plain structs (string keys, no non-finite floats) cannot fail.
        json.unwrap_or_default()
    }

    /// Check a record before it is written, with the same rules a reader applies (a
    /// writer must never put what every reader would refuse).
    pub fn check_for_write(&self, keys: &Keys) -> Result<(), RecordError> {
        let key = keys.record(&self.key());
        let value = self.encode();
        match decode(keys, &key, &value)? {
            Some(r) if r == *self => Ok(()),
            Some(_) => Err(refuse(
                &key,
                "does not read back as written (fields that the reader normalises, e.g. a \
                 missing namespace or apiVersion)",
            )),
            None => Err(refuse(&key, "not a record key")),
        }
    }
}

/// Decode and validate one (key, value) read from the datastore. `Ok(None)` for keys
/// that are not records of the view (subnet ownership).
pub fn decode(keys: &Keys, key: &str, value: &[u8]) -> Result<Option<Record>, RecordError> {
    let record_key = match keys.parse(key)? {
        KeyKind::Subnet(_) => return Ok(None),
        KeyKind::Record(k) => k,
    };
    let limit = max_value_len(record_key.kind());
    if value.len() > limit {
        return Err(refuse(
            key,
            format!("value of {} bytes, at most {limit}", value.len()),
        ));
    }
    let record = match &record_key {
        RecordKey::Node(_) => {
            let n: NodeRecord = from_json(key, value)?;
            n.validate().map_err(|m| refuse(key, m))?;
            Record::Node(n)
        }
        RecordKey::Pod(_) => {
            let p: PodRecord = from_json(key, value)?;
            p.validate().map_err(|m| refuse(key, m))?;
            Record::Pod(p)
        }
        RecordKey::Namespace(_) | RecordKey::Policy { .. } => decode_k8s(key, &record_key, value)?,
    };
    let inside = record.key();
    if inside != record_key {
        return Err(refuse(
            key,
            format!("the record names itself {inside}, its key says {record_key}"),
        ));
    }
    Ok(Some(record))
}

fn from_json<'a, T: Deserialize<'a>>(key: &str, value: &'a [u8]) -> Result<T, RecordError> {
    // serde would also read a struct from an array of its fields; the schema is an object.
    if value.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(refuse(key, "invalid JSON: expected an object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(value);
    let t = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." || path == "?" {
            refuse(key, format!("invalid JSON: {inner}"))
        } else {
            refuse(key, format!("{path}: {inner}"))
        }
    })?;
    Ok(t)
}

/// Namespaces and policies: JSON first (so only JSON is accepted, and nesting is bounded
/// by serde_json's recursion limit), then the policy parser on the compact re-encoding.
fn decode_k8s(key: &str, record_key: &RecordKey, value: &[u8]) -> Result<Record, RecordError> {
    let json: serde_json::Value =
        serde_json::from_slice(value).map_err(|e| refuse(key, format!("invalid JSON: {e}")))?;
    if !json.is_object() {
        return Err(refuse(key, "expected a Kubernetes object (a JSON object)"));
    }
    let text = json.to_string();
    let mut objects = k8s::parse_yaml(&text, None).map_err(|e| refuse(key, e.to_string()))?;
    let object = match (objects.pop(), objects.is_empty()) {
        (Some(o), true) => o,
        _ => return Err(refuse(key, "expected exactly one Kubernetes object")),
    };
    match (record_key, object) {
        (RecordKey::Namespace(_), Object::Namespace(n)) => Ok(Record::Namespace(n)),
        (RecordKey::Policy { .. }, Object::NetworkPolicy(p)) => Ok(Record::Policy(p)),
        (_, o) => Err(refuse(
            key,
            format!(
                "{} stored where a {:?} belongs",
                o.describe(),
                record_key.kind()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/t/";

    fn keys() -> Keys {
        Keys::new(P)
    }

    pub(crate) fn node(name: &str, cidr: &str) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            pod_cidr: cidr.parse().unwrap(),
            underlay_ip: Ipv4Addr::new(192, 168, 50, 2),
            vtep_mac: "02:00:00:00:00:01".parse().unwrap(),
            vni: 1,
            vxlan_port: 8472,
        }
    }

    fn err(key: &str, value: &[u8]) -> String {
        match decode(&keys(), key, value) {
            Ok(r) => panic!("accepted {key}: {r:?}"),
            Err(e) => {
                assert_eq!(e.key, key);
                let s = e.to_string();
                assert!(s.contains(key), "{s}");
                s
            }
        }
    }

    #[test]
    fn key_layout_round_trips() {
        let k = keys();
        let pod = RecordKey::Pod(PodKey {
            node: "n1".into(),
            namespace: "ns".into(),
            name: "p".into(),
        });
        assert_eq!(k.record(&pod), "/t/pods/n1/ns/p");
        assert_eq!(
            k.parse("/t/pods/n1/ns/p").unwrap(),
            KeyKind::Record(pod.clone())
        );
        let cidr: Ipv4Cidr = "10.244.3.0/24".parse().unwrap();
        assert_eq!(k.subnet(cidr), "/t/subnets/10.244.3.0-24");
        assert_eq!(
            k.parse("/t/subnets/10.244.3.0-24").unwrap(),
            KeyKind::Subnet(cidr)
        );
        for bad in [
            "/other/nodes/a",
            "/t/nodes/",
            "/t/nodes/A",
            "/t/nodes/a/b",
            "/t/pods/n1/ns",
            "/t/widgets/a",
            "/t/subnets/10.244.3.1-24",
            "/t/subnets/10.244.3.0/24",
            "/t/namespaces/a.b",
        ] {
            let e = k.parse(bad).unwrap_err();
            assert_eq!(e.key, bad);
        }
    }

    #[test]
    fn good_records_decode_and_encode_back() {
        let k = keys();
        let n = Record::Node(node("n1", "10.244.1.0/24"));
        n.check_for_write(&k).unwrap();
        assert_eq!(
            decode(&k, "/t/nodes/n1", &n.encode()).unwrap(),
            Some(n.clone())
        );
        let json = String::from_utf8(n.encode()).unwrap();
        assert!(
            json.contains(r#""vtepMac":"02:00:00:00:00:01""#) && json.contains("\"vxlanPort\""),
            "{json}"
        );
        let pod = br#"{"namespace":"ns","name":"p","labels":{"app":"web"},"ip":"10.244.1.5",
            "node":"n1","ports":[{"name":"http","port":80,"protocol":"TCP"}]}"#;
        let Some(Record::Pod(p)) = decode(&k, "/t/pods/n1/ns/p", pod).unwrap() else {
            panic!()
        };
        assert_eq!(
            p.to_pod_view().named_port("http", k8s::Protocol::Tcp),
            Some(80)
        );
        Record::Pod(p).check_for_write(&k).unwrap();

        let ns = br#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"ns","labels":{"team":"a"}}}"#;
        let Some(Record::Namespace(n)) = decode(&k, "/t/namespaces/ns", ns).unwrap() else {
            panic!()
        };
        assert_eq!(n.metadata.labels["team"], "a");
        let pol = br#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
            "metadata":{"name":"deny","namespace":"ns"},"spec":{"podSelector":{},
            "ingress":[{"ports":[{"port":"http"}]}]}}"#;
        let Some(Record::Policy(p)) = decode(&k, "/t/policies/ns/deny", pol).unwrap() else {
            panic!()
        };
        let mut store = crate::policy::store::PolicyStore::new();
        store
            .apply_objects(vec![Object::NetworkPolicy(p.clone())])
            .unwrap();
        assert_eq!(store.list().len(), 1);
        Record::Policy(p).check_for_write(&k).unwrap();
        // Subnet ownership is not a record.
        assert_eq!(decode(&k, "/t/subnets/10.244.1.0-24", b"n1").unwrap(), None);
    }

    #[test]
    fn malformed_records_are_refused_naming_key_and_field() {
        let good = String::from_utf8(Record::Node(node("n1", "10.244.1.0/24")).encode()).unwrap();
        let e = err("/t/nodes/n1", b"{not json");
        assert!(e.contains("invalid JSON"), "{e}");
        let e = err("/t/nodes/n1", good.replace("8472", "\"x\"").as_bytes());
        assert!(e.contains("vxlanPort"), "{e}");
        let e = err("/t/nodes/n1", good.replace("8472", "70000").as_bytes());
        assert!(e.contains("vxlanPort"), "{e}");
        let e = err(
            "/t/nodes/n1",
            good.replace("\"vni\":1", "\"vni\":16777216").as_bytes(),
        );
        assert!(e.contains("vni"), "{e}");
        let e = err(
            "/t/nodes/n1",
            good.replace("\"vni\":1", "\"vni\":1,\"extra\":2")
                .as_bytes(),
        );
        assert!(e.contains("extra"), "{e}");
        let e = err(
            "/t/nodes/n1",
            good.replace("10.244.1.0", "10.244.1.7").as_bytes(),
        );
        assert!(e.contains("podCidr") && e.contains("host bits"), "{e}");
        let e = err("/t/nodes/n1", good.replace("02:00", "01:00").as_bytes());
        assert!(e.contains("vtepMac"), "{e}");
        let e = err(
            "/t/nodes/n1",
            good.replace("192.168.50.2", "0.0.0.0").as_bytes(),
        );
        assert!(e.contains("underlayIp"), "{e}");
        let e = err("/t/nodes/n2", good.as_bytes());
        assert!(e.contains("its key says nodes/n2"), "{e}");
        let huge = format!("{good}{}", " ".repeat(5000));
        let e = err("/t/nodes/n1", huge.as_bytes());
        assert!(e.contains("at most 4096"), "{e}");
        let e = err("/t/nodes/n1", b"[1,2]");
        assert!(e.contains("invalid JSON"), "{e}");
        let deep = format!("{}{}", "[".repeat(3000), "]".repeat(3000));
        err("/t/nodes/n1", deep.as_bytes());
        err("/t/namespaces/a", deep.as_bytes());

        let pod = r#"{"namespace":"ns","name":"p","ip":"10.244.1.5","node":"n1","ports":[{"name":"http","port":80,"protocol":"TCP"},{"name":"http","port":81,"protocol":"TCP"}]}"#;
        let e = err("/t/pods/n1/ns/p", pod.as_bytes());
        assert!(e.contains("ports[1].name: duplicate"), "{e}");
        let e = err(
            "/t/pods/n1/ns/q",
            pod.replace(",{\"name\":\"http\",\"port\":81,\"protocol\":\"TCP\"}", "")
                .as_bytes(),
        );
        assert!(e.contains("its key says pods/n1/ns/q"), "{e}");
        let e = err(
            "/t/pods/n1/ns/p",
            pod.replace("\"ip\":\"10.244.1.5\"", "\"ip\":5").as_bytes(),
        );
        assert!(e.contains("ip"), "{e}");
        let e = err(
            "/t/pods/n1/ns/p",
            br#"{"namespace":"ns","name":"p","ip":"10.0.0.1","node":"n1","labels":{"bad key!":"v"}}"#,
        );
        assert!(e.contains("labels"), "{e}");

        let e = err(
            "/t/policies/ns/deny",
            br#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"deny","namespace":"ns"},"spec":{"ingress":[{"ports":[{"port":99999}]}]}}"#,
        );
        assert!(e.contains("spec.ingress[0].ports[0].port"), "{e}");
        let e = err(
            "/t/policies/other/deny",
            br#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"deny","namespace":"ns"}}"#,
        );
        assert!(e.contains("its key says policies/other/deny"), "{e}");
        let e = err(
            "/t/namespaces/ns",
            br#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"ns","namespace":"ns"}}"#,
        );
        assert!(e.contains("where a Namespace belongs"), "{e}");
        let e = err("/t/namespaces/ns", b"\"just a string\"");
        assert!(e.contains("Kubernetes object"), "{e}");
        let e = err("/t/namespaces/ns", b"apiVersion: v1\nkind: Namespace\n");
        assert!(e.contains("invalid JSON"), "{e}");
    }

    #[test]
    fn decode_never_panics_on_garbled_values() {
        let k = keys();
        let seeds = [
            Record::Node(node("n1", "10.244.1.0/24")).encode(),
            br#"{"namespace":"ns","name":"p","labels":{"a":"b"},"ip":"10.244.1.5","node":"n1","ports":[{"name":"h","port":80,"protocol":"UDP"}]}"#.to_vec(),
            br#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"p","namespace":"ns"},"spec":{"podSelector":{"matchExpressions":[{"key":"a","operator":"In","values":["b"]}]},"egress":[{"to":[{"ipBlock":{"cidr":"10.0.0.0/8","except":["10.1.0.0/16"]}}]}]}}"#.to_vec(),
        ];
        let keys_for = ["/t/nodes/n1", "/t/pods/n1/ns/p", "/t/policies/ns/p"];
        let mut x: u32 = 0x1234_5678;
        for (seed, key) in seeds.iter().zip(keys_for) {
            assert!(decode(&k, key, seed).unwrap().is_some());
            for _ in 0..2000 {
                let mut v = seed.clone();
                for _ in 0..(x % 4 + 1) {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    let i = x as usize % v.len();
                    match x % 3 {
                        0 => v[i] = (x >> 8) as u8,
                        1 => {
                            v.remove(i);
                        }
                        _ => v.truncate(i),
                    }
                    if v.is_empty() {
                        break;
                    }
                }
                if let Err(e) = decode(&k, key, &v) {
                    assert_eq!(e.key, key);
                }
            }
        }
    }
}
