//! The live pod endpoints: which host-side veth carries which pod address, its port
//! slot and worker, its identity (namespace, name, labels) and CNI attachment.
//!
//! This module owns the rules an `endpoint add` must pass before anything is attached
//! ([`Endpoints::admit`]: a valid interface name, a unicast address that is neither the
//! host port's nor another endpoint's, an interface not attached with another address;
//! the same interface and address again is an idempotent re-add), the lookups the
//! requests need (by interface, by address, by `NAMESPACE/POD`), and the persisted form
//! (the endpoints file in the state dir, re-attached at start; pending-DEL records the
//! CNI plugin left while the daemon was unreachable). Attaching and detaching the
//! sockets is the daemon's ([`super::ports`]); this is plain data, unit-tested as such.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use xsknet_proto::MacAddr;

use crate::control::proto::{ControlError, Endpoint, EndpointSpec, ErrorKind, PendingDel};
use crate::policy::k8s::PolicyError;
use crate::sys::netlink::NetlinkError;
use crate::tables::{PortId, WorkerId};

/// An endpoint request that was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("ifname {0:?}: must be 1-15 characters")]
    BadIfname(String),
    #[error("ip {0}: not a unicast address")]
    NotUnicast(Ipv4Addr),
    #[error("ip {0} is the node's host-port address")]
    HostAddress(Ipv4Addr),
    #[error("{ifname} is already attached with ip {ip}")]
    IfnameTaken { ifname: String, ip: Ipv4Addr },
    #[error("ip {ip} already belongs to {ifname}")]
    IpTaken { ip: Ipv4Addr, ifname: String },
    #[error("no interface {0} in the daemon's network namespace")]
    NoInterface(String),
    #[error("mac {0:?}: expected aa:bb:cc:dd:ee:ff")]
    BadMac(String),
    #[error("no mac given and cannot read the peer MAC of {ifname}: {source}")]
    PeerMac {
        ifname: String,
        source: NetlinkError,
    },
    #[error("{0} has no MAC address")]
    NoMac(String),
    #[error("{0}")]
    Netlink(#[from] NetlinkError),
    #[error("endpoint identity incomplete")]
    IncompleteIdentity,
    #[error("{0}")]
    Identity(PolicyError),
    #[error("give exactly one of ifname or ip")]
    Selector,
    #[error("no endpoint with ip {0}")]
    NoIp(Ipv4Addr),
    #[error("no endpoint on {0}")]
    NoIfname(String),
    #[error("no endpoint on {0}: the dataplane does not forward for it")]
    NotForwarding(String),
    #[error("worker {worker} owning {ifname} has exited")]
    WorkerExited { worker: WorkerId, ifname: String },
    #[error("worker {worker} runs table generation {running}, not the current {current}")]
    Stale {
        worker: WorkerId,
        running: u64,
        current: u64,
    },
    #[error("{what} {spec:?}: expected NAMESPACE/POD")]
    BadPodRef { what: &'static str, spec: String },
    #[error("{what} {spec}: no endpoint of that pod on this node")]
    NoPod { what: &'static str, spec: String },
}

impl From<EndpointError> for ControlError {
    fn from(e: EndpointError) -> Self {
        use EndpointError as E;
        let kind = match &e {
            E::BadIfname(_)
            | E::NotUnicast(_)
            | E::BadMac(_)
            | E::PeerMac { .. }
            | E::NoMac(_)
            | E::IncompleteIdentity
            | E::Identity(_)
            | E::Selector
            | E::BadPodRef { .. } => ErrorKind::InvalidRequest,
            E::HostAddress(_) | E::IfnameTaken { .. } | E::IpTaken { .. } => ErrorKind::Conflict,
            E::NoInterface(_)
            | E::NoIp(_)
            | E::NoIfname(_)
            | E::NotForwarding(_)
            | E::NoPod { .. } => ErrorKind::NotFound,
            E::Netlink(_) | E::WorkerExited { .. } | E::Stale { .. } => ErrorKind::System,
        };
        ControlError::new(kind, e.to_string())
    }
}

/// Parse a MAC (`aa:bb:cc:dd:ee:ff`, either case; `-` separators too): the one MAC
/// type, [`MacAddr`], does the parsing.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    s.parse::<MacAddr>().ok().map(<[u8; 6]>::from)
}

/// `aa:bb:cc:dd:ee:ff`, as [`MacAddr`] prints it.
pub fn mac_to_string(m: &[u8; 6]) -> String {
    MacAddr(*m).to_string()
}

/// The live endpoints, by host-side interface name.
#[derive(Debug, Default)]
pub struct Endpoints {
    by_ifname: BTreeMap<String, Endpoint>,
}

impl Endpoints {
    /// Whether `spec` may be attached. `Ok(Some(e))`: it already is, as `e` (an
    /// idempotent re-add); `Ok(None)`: go ahead. `host_ip` is the host port's address.
    pub fn admit(
        &self,
        spec: &EndpointSpec,
        host_ip: Option<Ipv4Addr>,
    ) -> Result<Option<Endpoint>, EndpointError> {
        if spec.ifname.is_empty() || spec.ifname.len() > 15 {
            return Err(EndpointError::BadIfname(spec.ifname.clone()));
        }
        if spec.ip.is_unspecified() || spec.ip.is_broadcast() || spec.ip.is_multicast() {
            return Err(EndpointError::NotUnicast(spec.ip));
        }
        if Some(spec.ip) == host_ip {
            return Err(EndpointError::HostAddress(spec.ip));
        }
        if let Some(e) = self.by_ifname.get(&spec.ifname) {
            if e.ip == spec.ip {
                return Ok(Some(e.clone()));
            }
            return Err(EndpointError::IfnameTaken {
                ifname: spec.ifname.clone(),
                ip: e.ip,
            });
        }
        if let Some(e) = self.by_ip(spec.ip) {
            return Err(EndpointError::IpTaken {
                ip: spec.ip,
                ifname: e.ifname.clone(),
            });
        }
        Ok(None)
    }

    pub fn insert(&mut self, ep: Endpoint) {
        self.by_ifname.insert(ep.ifname.clone(), ep);
    }

    pub fn remove(&mut self, ifname: &str) -> Option<Endpoint> {
        self.by_ifname.remove(ifname)
    }

    pub fn get(&self, ifname: &str) -> Option<&Endpoint> {
        self.by_ifname.get(ifname)
    }

    pub fn get_mut(&mut self, ifname: &str) -> Option<&mut Endpoint> {
        self.by_ifname.get_mut(ifname)
    }

    pub fn by_ip(&self, ip: Ipv4Addr) -> Option<&Endpoint> {
        self.by_ifname.values().find(|e| e.ip == ip)
    }

    /// The endpoint of pod `namespace/name`, if it is live here.
    pub fn by_pod(&self, namespace: &str, name: &str) -> Option<&Endpoint> {
        self.by_ifname
            .values()
            .find(|e| e.namespace.as_deref() == Some(namespace) && e.name.as_deref() == Some(name))
    }

    /// The interface an `endpoint del` names: exactly one of `ifname` or `ip`.
    pub fn resolve_del(
        &self,
        ifname: Option<String>,
        ip: Option<Ipv4Addr>,
    ) -> Result<String, EndpointError> {
        match (ifname, ip) {
            (Some(i), None) => Ok(i),
            (None, Some(ip)) => self
                .by_ip(ip)
                .map(|e| e.ifname.clone())
                .ok_or(EndpointError::NoIp(ip)),
            _ => Err(EndpointError::Selector),
        }
    }

    /// The endpoint a `NAMESPACE/POD` argument (`what`: which one, for errors) names.
    pub fn find_pod(&self, what: &'static str, spec: &str) -> Result<&Endpoint, EndpointError> {
        let (ns, name) = spec
            .split_once('/')
            .ok_or_else(|| EndpointError::BadPodRef {
                what,
                spec: spec.to_string(),
            })?;
        self.by_pod(ns, name).ok_or_else(|| EndpointError::NoPod {
            what,
            spec: spec.to_string(),
        })
    }

    /// Port of every endpoint with an identity, by (namespace, name).
    pub fn pod_ports(&self) -> BTreeMap<(String, String), PortId> {
        self.by_ifname
            .values()
            .filter_map(|e| Some(((e.namespace.clone()?, e.name.clone()?), e.port)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.by_ifname.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ifname.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Endpoint> {
        self.by_ifname.values()
    }

    pub fn ifnames(&self) -> Vec<String> {
        self.by_ifname.keys().cloned().collect()
    }
}

/// The spec that re-attaches a persisted endpoint.
pub fn respec(ep: &Endpoint) -> EndpointSpec {
    EndpointSpec {
        ifname: ep.ifname.clone(),
        ip: ep.ip,
        mac: Some(ep.mac.clone()),
        namespace: ep.namespace.clone(),
        name: ep.name.clone(),
        labels: ep.labels.clone(),
        cni: ep.cni.clone(),
    }
}

/// The pending-DEL records in `dir` (`*.json`), in no particular order. A record that
/// cannot be read is moved aside (logged), never returned.
pub fn pending_dels(dir: &Path) -> Vec<(PathBuf, PendingDel)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        match crate::state::load_json::<PendingDel>(&path) {
            Ok(Some(r)) => out.push((path, r)),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "unreadable pending DEL record");
                let _ = crate::state::quarantine(&path);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ifname: &str, ip: [u8; 4]) -> EndpointSpec {
        EndpointSpec {
            ifname: ifname.into(),
            ip: ip.into(),
            mac: None,
            namespace: Some("ns".into()),
            name: Some(ifname.into()),
            labels: BTreeMap::new(),
            cni: None,
        }
    }

    fn ep(ifname: &str, ip: [u8; 4], port: PortId) -> Endpoint {
        let s = spec(ifname, ip);
        Endpoint {
            ifname: s.ifname,
            ip: s.ip,
            mac: "02:00:00:00:00:01".into(),
            namespace: s.namespace,
            name: s.name,
            labels: s.labels,
            cni: None,
            port,
            worker: 0,
        }
    }

    fn kind(e: EndpointError) -> ErrorKind {
        ControlError::from(e).kind
    }

    #[test]
    fn admit_checks_name_address_and_conflicts() {
        let mut eps = Endpoints::default();
        let host = Some(Ipv4Addr::new(10, 0, 0, 1));
        assert!(eps
            .admit(&spec("veth-a", [10, 0, 0, 2]), host)
            .unwrap()
            .is_none());
        eps.insert(ep("veth-a", [10, 0, 0, 2], 3));

        let refuse = |s: EndpointSpec| eps.admit(&s, host).unwrap_err();
        assert!(matches!(
            refuse(spec("", [10, 0, 0, 3])),
            EndpointError::BadIfname(_)
        ));
        assert!(matches!(
            refuse(spec("sixteen-chars-xx", [10, 0, 0, 3])),
            EndpointError::BadIfname(_)
        ));
        for ip in [[0, 0, 0, 0], [255, 255, 255, 255], [224, 0, 0, 1]] {
            assert_eq!(kind(refuse(spec("veth-b", ip))), ErrorKind::InvalidRequest);
        }
        assert!(matches!(
            refuse(spec("veth-b", [10, 0, 0, 1])),
            EndpointError::HostAddress(_)
        ));
        let e = refuse(spec("veth-a", [10, 0, 0, 9]));
        assert_eq!(e.to_string(), "veth-a is already attached with ip 10.0.0.2");
        assert_eq!(kind(e), ErrorKind::Conflict);
        let e = refuse(spec("veth-b", [10, 0, 0, 2]));
        assert_eq!(e.to_string(), "ip 10.0.0.2 already belongs to veth-a");
        // The same again: the live endpoint, nothing to do.
        let again = eps.admit(&spec("veth-a", [10, 0, 0, 2]), host).unwrap();
        assert_eq!(again.map(|e| e.port), Some(3));
    }

    #[test]
    fn lookups_by_interface_address_and_pod() {
        let mut eps = Endpoints::default();
        eps.insert(ep("veth-a", [10, 0, 0, 2], 3));
        eps.insert(ep("veth-b", [10, 0, 0, 3], 4));
        assert_eq!(eps.len(), 2);
        assert_eq!(
            eps.resolve_del(None, Some([10, 0, 0, 3].into())).unwrap(),
            "veth-b"
        );
        assert_eq!(eps.resolve_del(Some("x".into()), None).unwrap(), "x");
        assert_eq!(
            kind(
                eps.resolve_del(None, Some([10, 0, 0, 9].into()))
                    .unwrap_err()
            ),
            ErrorKind::NotFound
        );
        assert!(matches!(
            eps.resolve_del(Some("veth-a".into()), Some([10, 0, 0, 2].into())),
            Err(EndpointError::Selector)
        ));
        assert!(matches!(
            eps.resolve_del(None, None),
            Err(EndpointError::Selector)
        ));

        assert_eq!(eps.find_pod("from", "ns/veth-b").unwrap().port, 4);
        let e = eps.find_pod("from", "veth-b").unwrap_err();
        assert_eq!(e.to_string(), "from \"veth-b\": expected NAMESPACE/POD");
        assert_eq!(kind(e), ErrorKind::InvalidRequest);
        assert_eq!(
            kind(eps.find_pod("to", "other/veth-b").unwrap_err()),
            ErrorKind::NotFound
        );
        let ports = eps.pod_ports();
        assert_eq!(ports.get(&("ns".into(), "veth-a".into())), Some(&3));
        assert_eq!(eps.remove("veth-a").map(|e| e.port), Some(3));
        assert!(eps.get("veth-a").is_none());
    }

    #[test]
    fn mac_text_round_trips_and_rejects_garbage() {
        let m = parse_mac("02:ab:cd:ef:00:9f").unwrap();
        assert_eq!(m, [0x02, 0xab, 0xcd, 0xef, 0x00, 0x9f]);
        assert_eq!(mac_to_string(&m), "02:ab:cd:ef:00:9f");
        for bad in [
            "",
            "02:ab:cd:ef:00",
            "02:ab:cd:ef:00:9f:11",
            "2:ab:cd:ef:00:9f",
            "zz:ab:cd:ef:00:9f",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn pending_del_records_are_read_and_unreadable_ones_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let rec = PendingDel {
            container_id: "c1".into(),
            ifname: "eth0".into(),
            host_ifname: "veth-a".into(),
        };
        crate::state::save_json(&dir.path().join("c1.json"), &rec).unwrap();
        std::fs::write(dir.path().join("bad.json"), b"{not json").unwrap();
        std::fs::write(dir.path().join("other.txt"), b"ignored").unwrap();
        let got = pending_dels(dir.path());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.host_ifname, "veth-a");
        assert!(!dir.path().join("bad.json").exists(), "quarantined");
        assert!(pending_dels(&dir.path().join("missing")).is_empty());
    }
}
