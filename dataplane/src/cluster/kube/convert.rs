//! Kubernetes API objects to records of the cluster view, and this project's Node
//! annotation (module doc of [`super`]). Pure functions: every input is untrusted (an
//! object anyone with write access to the API may have shaped), so each one either
//! converts, is not part of the view (`Ok(None)`: a Node that has not joined xsknet yet,
//! a Pod without an IPv4 address or on the host network), or is refused with the object
//! named (`Err`). Nothing here panics.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace as KNamespace, Node, Pod};
use kube::core::DynamicObject;
use serde::{Deserialize, Serialize};
use xsknet_proto::MacAddr;

use crate::cluster::records::{NodeRecord, PodKey, PodRecord, Record, RecordError, RecordKey};
use crate::config::Ipv4Cidr;
use crate::policy::k8s::{self, NamedPort, Object, Protocol};

/// The annotation each xsknetd writes on its own Node (flannel's model): its VTEP.
pub const VTEP_ANNOTATION: &str = "xsknet.io/vtep";
/// Longest annotation value read (the real one is under 100 bytes).
const MAX_ANNOTATION_LEN: usize = 1024;

/// The value of [`VTEP_ANNOTATION`], JSON:
/// `{"vtepMac":"02:78:c0:a8:01:0c","underlayIp":"192.168.1.12","vni":1,"port":8472}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VtepAnnotation {
    pub vtep_mac: MacAddr,
    pub underlay_ip: Ipv4Addr,
    pub vni: u32,
    pub port: u16,
}

impl VtepAnnotation {
    pub fn of(r: &NodeRecord) -> VtepAnnotation {
        VtepAnnotation {
            vtep_mac: r.vtep_mac,
            underlay_ip: r.underlay_ip,
            vni: r.vni,
            port: r.vxlan_port,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn refuse(key: String, reason: impl Into<String>) -> RecordError {
    RecordError {
        key,
        reason: reason.into(),
    }
}

/// The API path-like name used in refusals: `nodes/x`, `pods/ns/x`, ….
fn api_key(kind: &str, ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) => format!("kubernetes:{kind}/{ns}/{name}"),
        None => format!("kubernetes:{kind}/{name}"),
    }
}

/// The first IPv4 pod prefix of a Node (`spec.podCIDR`, then `spec.podCIDRs`).
fn node_pod_cidr(node: &Node) -> Option<Result<Ipv4Cidr, String>> {
    let spec = node.spec.as_ref()?;
    let candidates = spec
        .pod_cidr
        .iter()
        .chain(spec.pod_cidrs.iter().flatten())
        .filter(|c| !c.contains(':'));
    candidates
        .map(|c| {
            c.parse::<Ipv4Cidr>()
                .map_err(|e| format!("spec.podCIDR {c:?}: {e}"))
        })
        .next()
}

/// The Node has no IPv4 pod prefix (yet).
pub fn node_pod_cidr_missing(node: &Node) -> bool {
    !matches!(node_pod_cidr(node), Some(Ok(_)))
}

/// A Node's record: `None` while it has no IPv4 `spec.podCIDR` or no xsknet annotation
/// (not joined yet). The underlay address is the annotation's; the annotation's
/// absence of one is impossible (it is required), and `status.addresses` InternalIP is
/// only used by [`internal_ip`] for diagnostics.
pub fn node_record(node: &Node) -> Result<Option<NodeRecord>, RecordError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let key = api_key("nodes", None, &name);
    let Some(value) = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(VTEP_ANNOTATION))
    else {
        return Ok(None);
    };
    let pod_cidr = match node_pod_cidr(node) {
        None => return Ok(None),
        Some(Err(m)) => return Err(refuse(key, m)),
        Some(Ok(c)) => c,
    };
    if value.len() > MAX_ANNOTATION_LEN {
        return Err(refuse(
            key,
            format!(
                "annotation {VTEP_ANNOTATION}: {} bytes, at most {MAX_ANNOTATION_LEN}",
                value.len()
            ),
        ));
    }
    let a: VtepAnnotation = serde_json::from_str(value)
        .map_err(|e| refuse(key.clone(), format!("annotation {VTEP_ANNOTATION}: {e}")))?;
    let r = NodeRecord {
        name,
        pod_cidr,
        underlay_ip: a.underlay_ip,
        vtep_mac: a.vtep_mac,
        vni: a.vni,
        vxlan_port: a.port,
    };
    r.validate().map_err(|m| refuse(key, m))?;
    Ok(Some(r))
}

/// `status.addresses` InternalIP (IPv4), if the Node has one.
pub fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

/// A Pod's record: `None` for a pod not (yet) running with an IPv4 address on a node,
/// on the host network, or finished (its address may be reused).
pub fn pod_record(pod: &Pod) -> Result<Option<PodRecord>, RecordError> {
    let m = &pod.metadata;
    let ns = m
        .namespace
        .clone()
        .unwrap_or_else(|| k8s::DEFAULT_NAMESPACE.into());
    let name = m.name.clone().unwrap_or_default();
    let key = api_key("pods", Some(&ns), &name);
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(None);
    };
    let Some(node) = spec.node_name.clone().filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if spec.host_network == Some(true) {
        return Ok(None);
    }
    let status = pod.status.as_ref();
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return Ok(None);
    }
    let ips = status.into_iter().flat_map(|s| {
        s.pod_ip
            .iter()
            .chain(s.pod_ips.iter().flatten().map(|p| &p.ip))
    });
    let Some(ip) = ips.filter_map(|s| s.parse::<Ipv4Addr>().ok()).next() else {
        return Ok(None);
    };
    let mut ports = Vec::new();
    for c in &spec.containers {
        for p in c.ports.iter().flatten() {
            let Some(pname) = p.name.clone() else {
                continue;
            };
            let protocol = match p.protocol.as_deref() {
                None => Protocol::Tcp,
                Some(s) => s
                    .parse()
                    .map_err(|e: k8s::ValueError| refuse(key.clone(), format!("ports: {e}")))?,
            };
            let port = u16::try_from(p.container_port).map_err(|_| {
                refuse(
                    key.clone(),
                    format!("containerPort {} out of range", p.container_port),
                )
            })?;
            ports.push(NamedPort {
                name: pname,
                port,
                protocol,
            });
        }
    }
    let r = PodRecord {
        namespace: ns,
        name,
        labels: m.labels.clone().unwrap_or_default(),
        ip,
        node,
        ports,
    };
    r.validate().map_err(|e| refuse(key, e))?;
    Ok(Some(r))
}

/// A Namespace's record (its labels; the API server always sets
/// `kubernetes.io/metadata.name`).
pub fn namespace_record(ns: &KNamespace) -> Result<Record, RecordError> {
    let name = ns.metadata.name.clone().unwrap_or_default();
    let key = api_key("namespaces", None, &name);
    let mut v = serde_json::to_value(ns).map_err(|e| refuse(key.clone(), e.to_string()))?;
    if let Some(o) = v.as_object_mut() {
        o.insert("apiVersion".into(), "v1".into());
        o.insert("kind".into(), "Namespace".into());
        o.remove("spec");
    }
    match k8s::api::from_api_json(v) {
        Ok(Object::Namespace(n)) => Ok(Record::Namespace(n)),
        Ok(o) => Err(refuse(
            key,
            format!("{} where a Namespace belongs", o.describe()),
        )),
        Err(e) => Err(refuse(key, e.to_string())),
    }
}

/// A NetworkPolicy's record (from its JSON as the API returned it, every field kept),
/// with the API's meaning ([`k8s::api`]).
pub fn policy_record(p: &DynamicObject) -> Result<Record, RecordError> {
    let ns = p.metadata.namespace.clone().unwrap_or_default();
    let name = p.metadata.name.clone().unwrap_or_default();
    let key = api_key("networkpolicies", Some(&ns), &name);
    let mut v = serde_json::to_value(p).map_err(|e| refuse(key.clone(), e.to_string()))?;
    if let Some(o) = v.as_object_mut() {
        o.insert("apiVersion".into(), k8s::NETWORKING_V1.into());
        o.insert("kind".into(), "NetworkPolicy".into());
    }
    match k8s::api::from_api_json(v) {
        Ok(Object::NetworkPolicy(n)) => Ok(Record::Policy(n)),
        Ok(o) => Err(refuse(
            key,
            format!("{} where a NetworkPolicy belongs", o.describe()),
        )),
        Err(e) => Err(refuse(key, e.to_string())),
    }
}

/// The view's key of an API object that is being deleted (or no longer converts).
pub fn pod_key(pod: &Pod) -> Option<RecordKey> {
    let node = pod.spec.as_ref()?.node_name.clone()?;
    Some(RecordKey::Pod(PodKey {
        node,
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| k8s::DEFAULT_NAMESPACE.into()),
        name: pod.metadata.name.clone()?,
    }))
}
