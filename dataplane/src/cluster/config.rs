//! The `datastore` and `overlay` sections of `node.yaml`, as they will sit next to the
//! other sections of [`crate::config::Config`]:
//!
//! ```yaml
//! datastore:              # absent: static mode (one node, no datastore)
//!   type: etcd
//!   endpoints: [http://10.0.0.1:2379, http://10.0.0.2:2379]
//!   prefix: /xsknet/v1/
//!   leaseTtlSeconds: 10
//!   requestTimeoutSeconds: 5
//! overlay:
//!   vni: 1
//!   port: 8472            # Linux/flannel default; 4789 is IANA's
//!   clusterCidr: 10.244.0.0/16
//!   subnetLen: 24         # each node's share of clusterCidr
//!   podCidr: 10.244.7.0/24  # optional: this node's prefix, else one is claimed
//!   vtepMac: 02:78:0a:00:00:01   # optional: else derived from the underlay address
//!   peers:                # static mode: the other nodes (no datastore)
//!   - {name: node-b, podCidr: 10.244.8.0/24, underlayIp: 192.168.1.12, vtepMac: 02:78:c0:a8:01:0c}
//! ```
//!
//! Keys are camelCase, unknown keys are refused (a typo must not fall back to a default).
//! [`DatastoreConfig::validate`] and [`OverlayConfig::validate`] name the offending field
//! by its path under the section (`datastore.endpoints[1]`, `overlay.podCidr`), the way
//! `ConfigError::Invalid` reports the other sections.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use std::net::Ipv4Addr;

use xsknet_proto::MacAddr;

use super::records::{check_pod_cidr, NodeRecord, MAX_VNI};
use crate::config::Ipv4Cidr;

/// A value of the right type that is not acceptable, at `field`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message} (got {value})")]
pub struct FieldError {
    pub field: String,
    pub message: String,
    pub value: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>, value: impl ToString) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
        value: value.to_string(),
    }
}

/// `datastore`: where the cluster view lives: etcd v3, or the Kubernetes API
/// (`type: kubernetes`, issue 10).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum DatastoreConfig {
    Etcd(EtcdConfig),
    Kubernetes(KubeConfig),
}

impl DatastoreConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        match self {
            DatastoreConfig::Etcd(e) => e.validate(),
            DatastoreConfig::Kubernetes(k) => k.validate(),
        }
    }

    /// `etcd` or `kubernetes`: where labels and policies of this datastore come from.
    pub fn source(&self) -> &'static str {
        match self {
            DatastoreConfig::Etcd(_) => "etcd",
            DatastoreConfig::Kubernetes(_) => "kubernetes",
        }
    }
}

/// `datastore` with `type: kubernetes`:
///
/// ```yaml
/// datastore:
///   type: kubernetes
///   kubeconfig: /etc/xsknet/kubeconfig   # optional: else the in-cluster service account
///   requestTimeoutSeconds: 5
///   podIdentityWaitSeconds: 5            # ADD waits this long for the Pod object
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<std::path::PathBuf>,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u32,
    /// How long a CNI ADD waits for its Pod object to be seen in the watch before it
    /// fails (README "Kubernetes API", identity at pod start).
    #[serde(default = "default_identity_wait")]
    pub pod_identity_wait_seconds: u32,
}

fn default_identity_wait() -> u32 {
    5
}

impl KubeConfig {
    pub fn new(kubeconfig: Option<std::path::PathBuf>) -> Self {
        KubeConfig {
            kubeconfig,
            request_timeout_seconds: default_request_timeout(),
            pod_identity_wait_seconds: default_identity_wait(),
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.request_timeout_seconds))
    }

    pub fn pod_identity_wait(&self) -> Duration {
        Duration::from_secs(u64::from(self.pod_identity_wait_seconds))
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(p) = &self.kubeconfig {
            if !p.is_absolute() {
                return Err(bad(
                    "datastore.kubeconfig",
                    "must be an absolute path",
                    p.display(),
                ));
            }
        }
        if !(1..=300).contains(&self.request_timeout_seconds) {
            return Err(bad(
                "datastore.requestTimeoutSeconds",
                "must be in 1..=300",
                self.request_timeout_seconds,
            ));
        }
        // The CNI plugin waits 15 s for the daemon's answer to an ADD.
        if !(1..=10).contains(&self.pod_identity_wait_seconds) {
            return Err(bad(
                "datastore.podIdentityWaitSeconds",
                "must be in 1..=10 (below the CNI plugin's 15 s wait for the daemon)",
                self.pod_identity_wait_seconds,
            ));
        }
        Ok(())
    }
}

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "/xsknet/v1/";

/// `datastore` with `type: etcd`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdConfig {
    /// Client URLs of the members, `http://host:port`.
    pub endpoints: Vec<String>,
    /// Every key of this cluster starts with it; starts and ends with `/`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Liveness: a node whose daemon stops renewing disappears from the others' view
    /// after this many seconds. Subnet ownership does not expire.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_seconds: u32,
    /// Bound on one request (get, put, transaction) before it counts as failed.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u32,
}

fn default_prefix() -> String {
    DEFAULT_PREFIX.to_string()
}
fn default_lease_ttl() -> u32 {
    10
}
fn default_request_timeout() -> u32 {
    5
}

impl EtcdConfig {
    /// A configuration with the defaults for everything but the endpoints.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            prefix: default_prefix(),
            lease_ttl_seconds: default_lease_ttl(),
            request_timeout_seconds: default_request_timeout(),
        }
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(u64::from(self.lease_ttl_seconds))
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.request_timeout_seconds))
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        if self.endpoints.is_empty() {
            return Err(bad(
                "datastore.endpoints",
                "at least one etcd client URL is required",
                "[]",
            ));
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            check_endpoint(e).map_err(|m| bad(format!("datastore.endpoints[{i}]"), m, e))?;
        }
        let p = &self.prefix;
        if !p.starts_with('/') || !p.ends_with('/') || p.len() < 2 {
            return Err(bad(
                "datastore.prefix",
                "must start and end with '/' (e.g. /xsknet/v1/)",
                p,
            ));
        }
        if p.contains("//") || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(
                "datastore.prefix",
                "must not contain empty segments, whitespace or control characters",
                p,
            ));
        }
        // etcd raises any TTL below its minimum (1.5 s with default timing) to it; more
        // than an hour would keep a dead node's routes for that long.
        if !(2..=3600).contains(&self.lease_ttl_seconds) {
            return Err(bad(
                "datastore.leaseTtlSeconds",
                "must be in 2..=3600",
                self.lease_ttl_seconds,
            ));
        }
        if !(1..=300).contains(&self.request_timeout_seconds) {
            return Err(bad(
                "datastore.requestTimeoutSeconds",
                "must be in 1..=300",
                self.request_timeout_seconds,
            ));
        }
        Ok(())
    }
}

/// `http://host:port` with nothing after the port. TLS is not built in yet.
fn check_endpoint(e: &str) -> Result<(), String> {
    let rest = match e.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => return Err("https endpoints are not supported yet".into()),
        _ => return Err("expected http://host:port".into()),
    };
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or("expected http://host:port (the port is required)")?;
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '@' | '?' | '#'))
    {
        return Err("expected http://host:port with a host name or address".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(format!("port {port:?} is not in 1..=65535")),
    }
}

/// `overlay`: the VXLAN parameters every node of the cluster shares, and how this node
/// gets its pod prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OverlayConfig {
    pub vni: u32,
    /// UDP destination port of the tunnel.
    pub port: u16,
    /// The prefix every node's pod prefix is taken from.
    pub cluster_cidr: Ipv4Cidr,
    /// Prefix length of a claimed node prefix.
    pub subnet_len: u8,
    /// This node's prefix; when absent one of `clusterCidr` is claimed in the datastore
    /// (and kept across restarts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<Ipv4Cidr>,
    /// This node's VTEP MAC (inner source of what it encapsulates, inner destination
    /// of what others send it); default: `02:78:` + the underlay address, stable for as
    /// long as the address is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<MacAddr>,
    /// The other nodes, for a static cluster without a datastore; the daemon turns
    /// them into [`NodeRecord`]s (with this section's `vni` and `port`) exactly as it
    /// will turn the datastore's records.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerConfig>,
}

/// One statically configured other node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerConfig {
    pub name: String,
    pub pod_cidr: Ipv4Cidr,
    pub underlay_ip: Ipv4Addr,
    pub vtep_mac: MacAddr,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        OverlayConfig {
            vni: 1,
            port: 8472,
            cluster_cidr: Ipv4Cidr {
                addr: std::net::Ipv4Addr::new(10, 244, 0, 0),
                prefix: 16,
            },
            subnet_len: 24,
            pod_cidr: None,
            vtep_mac: None,
            peers: Vec::new(),
        }
    }
}

impl OverlayConfig {
    /// The static peers as node records with this section's VNI and port.
    pub fn peer_records(&self) -> Vec<NodeRecord> {
        self.peers
            .iter()
            .map(|p| NodeRecord {
                name: p.name.clone(),
                pod_cidr: p.pod_cidr,
                underlay_ip: p.underlay_ip,
                vtep_mac: p.vtep_mac,
                vni: self.vni,
                vxlan_port: self.port,
            })
            .collect()
    }

    /// [`validate`](Self::validate), plus the static peers: each a valid node record,
    /// names unique, pod prefixes disjoint, underlay addresses unique.
    pub fn validate_static(&self) -> Result<(), FieldError> {
        self.validate()?;
        if let Some(m) = self.vtep_mac {
            let o = m.octets();
            if o == [0; 6] || o[0] & 1 != 0 {
                return Err(bad("overlay.vtepMac", "must be a unicast MAC address", m));
            }
        }
        let records = self.peer_records();
        for (i, r) in records.iter().enumerate() {
            let field = |f: &str| format!("overlay.peers[{i}].{f}");
            r.validate().map_err(|m| {
                let (f, msg) = m.split_once(": ").unwrap_or(("", m.as_str()));
                bad(field(f), msg.to_string(), &r.name)
            })?;
            for (j, o) in records[..i].iter().enumerate() {
                if o.name == r.name {
                    return Err(bad(field("name"), format!("also peers[{j}]"), &r.name));
                }
                if o.pod_cidr.overlaps(&r.pod_cidr) {
                    return Err(bad(
                        field("podCidr"),
                        format!("overlaps peers[{j}] {}", o.pod_cidr),
                        r.pod_cidr,
                    ));
                }
                if o.underlay_ip == r.underlay_ip {
                    return Err(bad(
                        field("underlayIp"),
                        format!("also peers[{j}]"),
                        r.underlay_ip,
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        if self.vni > MAX_VNI {
            return Err(bad(
                "overlay.vni",
                format!("must be in 0..={MAX_VNI}"),
                self.vni,
            ));
        }
        if self.port == 0 {
            return Err(bad("overlay.port", "must be in 1..=65535", self.port));
        }
        let cluster = self.cluster_cidr;
        check_pod_cidr(cluster).map_err(|m| bad("overlay.clusterCidr", m, cluster))?;
        if !(cluster.prefix..=30).contains(&self.subnet_len) {
            return Err(bad(
                "overlay.subnetLen",
                format!(
                    "must be in {}..=30 (clusterCidr's length to /30)",
                    cluster.prefix
                ),
                self.subnet_len,
            ));
        }
        if let Some(pod) = self.pod_cidr {
            check_pod_cidr(pod).map_err(|m| bad("overlay.podCidr", m, pod))?;
            if pod.prefix < cluster.prefix || !cluster.contains(pod.addr) {
                return Err(bad(
                    "overlay.podCidr",
                    format!("must lie inside clusterCidr {cluster}"),
                    pod,
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Sections {
        datastore: Option<DatastoreConfig>,
        #[serde(default)]
        overlay: OverlayConfig,
    }

    fn parse(yaml: &str) -> Sections {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_and_full_sections() {
        let s = parse("{}");
        assert_eq!(s.datastore, None);
        assert_eq!(s.overlay, OverlayConfig::default());
        s.overlay.validate().unwrap();

        let s = parse(
            "datastore:\n  type: etcd\n  endpoints: [http://127.0.0.1:2379]\n  leaseTtlSeconds: 3\n\
             overlay:\n  vni: 4096\n  port: 4789\n  clusterCidr: 10.8.0.0/16\n  podCidr: 10.8.3.0/24\n",
        );
        let Some(DatastoreConfig::Etcd(e)) = &s.datastore else {
            panic!()
        };
        assert_eq!(e.prefix, DEFAULT_PREFIX);
        assert_eq!(e.lease_ttl(), Duration::from_secs(3));
        assert_eq!(e.request_timeout(), Duration::from_secs(5));
        s.datastore.as_ref().unwrap().validate().unwrap();
        assert_eq!(s.overlay.pod_cidr, Some("10.8.3.0/24".parse().unwrap()));
        assert_eq!(s.overlay.subnet_len, 24);
        s.overlay.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_kinds_are_refused() {
        for yaml in [
            "datastore: {type: etcd, endpoints: [http://a:1], leaseTTL: 3}",
            "datastore: {type: consul, endpoints: [http://a:1]}",
            "datastore: {endpoints: [http://a:1]}",
            "overlay: {vnid: 3}",
            "datastore: {type: kubernetes, kubeConfig: /a}",
        ] {
            assert!(
                serde_yaml_ng::from_str::<Sections>(yaml).is_err(),
                "accepted {yaml}"
            );
        }
    }

    #[test]
    fn kubernetes_section() {
        let s = parse("datastore: {type: kubernetes}");
        let Some(DatastoreConfig::Kubernetes(k)) = &s.datastore else {
            panic!()
        };
        assert_eq!(*k, KubeConfig::new(None));
        k.validate().unwrap();
        assert_eq!(s.datastore.as_ref().unwrap().source(), "kubernetes");
        let s = parse(
            "datastore: {type: kubernetes, kubeconfig: /etc/k.conf, podIdentityWaitSeconds: 2}",
        );
        let Some(DatastoreConfig::Kubernetes(k)) = &s.datastore else {
            panic!()
        };
        assert_eq!(k.pod_identity_wait(), Duration::from_secs(2));
        let mut rel = k.clone();
        rel.kubeconfig = Some("k.conf".into());
        assert_eq!(rel.validate().unwrap_err().field, "datastore.kubeconfig");
        let mut w = k.clone();
        w.pod_identity_wait_seconds = 0;
        assert_eq!(
            w.validate().unwrap_err().field,
            "datastore.podIdentityWaitSeconds"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let etcd = |f: &dyn Fn(&mut EtcdConfig)| {
            let mut e = EtcdConfig::new(vec!["http://127.0.0.1:2379".into()]);
            f(&mut e);
            e.validate().unwrap_err().field
        };
        assert_eq!(etcd(&|e| e.endpoints.clear()), "datastore.endpoints");
        assert_eq!(
            etcd(&|e| e.endpoints.push("127.0.0.1:2379".into())),
            "datastore.endpoints[1]"
        );
        for bad_ep in [
            "https://a:1",
            "http://a",
            "http://a:0",
            "http://a:99999",
            "http://:1",
        ] {
            assert_eq!(
                etcd(&|e| e.endpoints[0] = bad_ep.into()),
                "datastore.endpoints[0]",
                "{bad_ep}"
            );
        }
        for p in ["xsknet/", "/xsknet", "/", "/a//b/", "/a b/"] {
            assert_eq!(etcd(&|e| e.prefix = p.into()), "datastore.prefix", "{p}");
        }
        assert_eq!(
            etcd(&|e| e.lease_ttl_seconds = 1),
            "datastore.leaseTtlSeconds"
        );
        assert_eq!(
            etcd(&|e| e.request_timeout_seconds = 0),
            "datastore.requestTimeoutSeconds"
        );

        let overlay = |f: &dyn Fn(&mut OverlayConfig)| {
            let mut o = OverlayConfig::default();
            f(&mut o);
            o.validate().unwrap_err().to_string()
        };
        assert!(overlay(&|o| o.vni = 1 << 24).starts_with("overlay.vni:"));
        assert!(overlay(&|o| o.port = 0).starts_with("overlay.port:"));
        assert!(
            overlay(&|o| o.cluster_cidr = "10.244.0.1/16".parse().unwrap())
                .starts_with("overlay.clusterCidr:")
        );
        assert!(overlay(&|o| o.subnet_len = 8).starts_with("overlay.subnetLen:"));
        assert!(overlay(&|o| o.subnet_len = 31).starts_with("overlay.subnetLen:"));
        let peer = |n: &str, cidr: &str, ip: [u8; 4]| PeerConfig {
            name: n.into(),
            pod_cidr: cidr.parse().unwrap(),
            underlay_ip: ip.into(),
            vtep_mac: "02:00:00:00:00:01".parse().unwrap(),
        };
        let stat = |peers: Vec<PeerConfig>| {
            let o = OverlayConfig {
                peers,
                ..OverlayConfig::default()
            };
            o.validate_static().map_err(|e| e.to_string())
        };
        stat(vec![
            peer("a", "10.244.1.0/24", [192, 168, 0, 1]),
            peer("b", "10.244.2.0/24", [192, 168, 0, 2]),
        ])
        .unwrap();
        let e = stat(vec![
            peer("a", "10.244.1.0/24", [192, 168, 0, 1]),
            peer("a", "10.244.2.0/24", [192, 168, 0, 2]),
        ])
        .unwrap_err();
        assert!(e.starts_with("overlay.peers[1].name"), "{e}");
        let e = stat(vec![
            peer("a", "10.244.0.0/16", [192, 168, 0, 1]),
            peer("b", "10.244.2.0/24", [192, 168, 0, 2]),
        ])
        .unwrap_err();
        assert!(e.starts_with("overlay.peers[1].podCidr"), "{e}");
        let e = stat(vec![
            peer("a", "10.244.1.0/24", [192, 168, 0, 1]),
            peer("b", "10.244.2.0/24", [192, 168, 0, 1]),
        ])
        .unwrap_err();
        assert!(e.starts_with("overlay.peers[1].underlayIp"), "{e}");
        let e = stat(vec![peer("a", "10.244.1.0/24", [127, 0, 0, 1])]).unwrap_err();
        assert!(e.starts_with("overlay.peers[0].underlayIp"), "{e}");
        let e = stat(vec![peer("A_", "10.244.1.0/24", [10, 0, 0, 1])]).unwrap_err();
        assert!(e.starts_with("overlay.peers[0].name"), "{e}");
        let e = overlay(&|o| o.pod_cidr = Some("10.1.0.0/24".parse().unwrap()));
        assert!(
            e.starts_with("overlay.podCidr: must lie inside clusterCidr 10.244.0.0/16"),
            "{e}"
        );
        assert!(
            overlay(&|o| o.pod_cidr = Some("10.244.0.0/8".parse().unwrap()))
                .starts_with("overlay.podCidr:")
        );
    }
}
