//! The CNI result an ADD prints, built once in a version-neutral form and encoded for
//! the configuration's `cniVersion`:
//!
//! * 0.4.0: every `ips[]` entry carries `"version": "4"`; interfaces without `mtu`.
//! * 1.0.0: no `version` in `ips[]`.
//! * 1.1.0: interfaces carry `mtu`, routes may carry `scope`.
//!
//! The reader ([`first_ipv4`], [`Parsed::from_value`]) accepts results of any of these
//! versions (a delegated IPAM plugin's answer, a `prevResult`), never panicking.

use std::net::Ipv4Addr;

use serde_json::{json, Map, Value};

/// An interface of the result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub mtu: u32,
    /// The netns path for the pod's interface, `None` for the host end.
    pub sandbox: Option<String>,
}

/// One address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

/// One route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gw: Option<Ipv4Addr>,
    /// `RT_SCOPE_*`; reported from 1.1.0 on.
    pub scope: Option<u8>,
}

/// A version-neutral ADD result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    /// `dns` passed through from a delegated IPAM plugin.
    pub dns: Option<Value>,
}

impl CniResult {
    /// Encodes for `version` (one of the supported ones; anything else gets 1.1.0's
    /// shape with that version string, which the caller has already refused).
    pub fn to_value(&self, version: &str) -> Value {
        let v04 = version == "0.4.0";
        let v11 = version == "1.1.0";
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut m = Map::new();
                m.insert("name".into(), json!(i.name));
                m.insert("mac".into(), json!(i.mac));
                if v11 {
                    m.insert("mtu".into(), json!(i.mtu));
                }
                if let Some(s) = &i.sandbox {
                    m.insert("sandbox".into(), json!(s));
                }
                Value::Object(m)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut m = Map::new();
                if v04 {
                    m.insert("version".into(), json!("4"));
                }
                m.insert(
                    "address".into(),
                    json!(format!("{}/{}", ip.address, ip.prefix)),
                );
                if let Some(g) = ip.gateway {
                    m.insert("gateway".into(), json!(g.to_string()));
                }
                if let Some(i) = ip.interface {
                    m.insert("interface".into(), json!(i));
                }
                Value::Object(m)
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut m = Map::new();
                m.insert("dst".into(), json!(format!("{}/{}", r.dst, r.prefix)));
                if let Some(g) = r.gw {
                    m.insert("gw".into(), json!(g.to_string()));
                }
                if let (true, Some(s)) = (v11, r.scope) {
                    m.insert("scope".into(), json!(s));
                }
                Value::Object(m)
            })
            .collect();
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version));
        out.insert("interfaces".into(), Value::Array(interfaces));
        out.insert("ips".into(), Value::Array(ips));
        out.insert("routes".into(), Value::Array(routes));
        out.insert("dns".into(), self.dns.clone().unwrap_or_else(|| json!({})));
        Value::Object(out)
    }
}

/// What CHECK and DEL need from a result of any version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// `(name, mac, sandbox)` per interface.
    pub interfaces: Vec<(String, Option<String>, Option<String>)>,
    /// `(address, prefix, interface index)`, IPv4 only.
    pub ips: Vec<(Ipv4Addr, u8, Option<usize>)>,
    /// `(dst, prefix, gw)`, IPv4 only.
    pub routes: Vec<(Ipv4Addr, u8, Option<Ipv4Addr>)>,
}

fn parse_cidr4(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, p) = s.split_once('/')?;
    let p: u8 = p.parse().ok()?;
    (p <= 32).then_some(())?;
    Some((a.parse().ok()?, p))
}

impl Parsed {
    /// Reads `interfaces`, `ips` and `routes`, skipping entries it cannot read (IPv6,
    /// malformed) rather than failing.
    pub fn from_value(v: &Value) -> Parsed {
        let arr = |k: &str| {
            v.get(k)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let s = |x: &Value, k: &str| x.get(k).and_then(Value::as_str).map(str::to_string);
        Parsed {
            interfaces: arr("interfaces")
                .iter()
                .map(|i| {
                    (
                        s(i, "name").unwrap_or_default(),
                        s(i, "mac"),
                        s(i, "sandbox"),
                    )
                })
                .collect(),
            ips: arr("ips")
                .iter()
                .filter_map(|ip| {
                    let (a, p) = parse_cidr4(ip.get("address")?.as_str()?)?;
                    let idx = ip
                        .get("interface")
                        .and_then(Value::as_u64)
                        .map(|i| i as usize);
                    Some((a, p, idx))
                })
                .collect(),
            routes: arr("routes")
                .iter()
                .filter_map(|r| {
                    let (d, p) = parse_cidr4(r.get("dst")?.as_str()?)?;
                    let gw = r
                        .get("gw")
                        .and_then(Value::as_str)
                        .and_then(|g| g.parse().ok());
                    Some((d, p, gw))
                })
                .collect(),
        }
    }
}

/// The first IPv4 address of a result (what a delegated IPAM plugin allocated).
pub fn first_ipv4(v: &Value) -> Option<Ipv4Addr> {
    Parsed::from_value(v).ips.first().map(|(a, _, _)| *a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "xsk0123456789a".into(),
                    mac: "02:00:00:00:00:01".into(),
                    mtu: 1500,
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:02".into(),
                    mtu: 1500,
                    sandbox: Some("/run/netns/p".into()),
                },
            ],
            ips: vec![IpConfig {
                address: Ipv4Addr::new(10, 244, 0, 5),
                prefix: 32,
                gateway: Some(Ipv4Addr::new(169, 254, 1, 1)),
                interface: Some(1),
            }],
            routes: vec![
                Route {
                    dst: Ipv4Addr::new(169, 254, 1, 1),
                    prefix: 32,
                    gw: None,
                    scope: Some(253),
                },
                Route {
                    dst: Ipv4Addr::UNSPECIFIED,
                    prefix: 0,
                    gw: Some(Ipv4Addr::new(169, 254, 1, 1)),
                    scope: None,
                },
            ],
            dns: None,
        }
    }

    #[test]
    fn encodes_per_version() {
        let r = sample();
        let v04 = r.to_value("0.4.0");
        assert_eq!(v04["cniVersion"], "0.4.0");
        assert_eq!(v04["ips"][0]["version"], "4");
        assert!(v04["interfaces"][1].get("mtu").is_none());
        let v10 = r.to_value("1.0.0");
        assert!(v10["ips"][0].get("version").is_none());
        assert!(v10["routes"][0].get("scope").is_none());
        let v11 = r.to_value("1.1.0");
        assert_eq!(v11["interfaces"][1]["mtu"], 1500);
        assert_eq!(v11["interfaces"][1]["sandbox"], "/run/netns/p");
        assert_eq!(v11["routes"][0]["scope"], 253);
        assert_eq!(v11["routes"][1]["gw"], "169.254.1.1");
        assert_eq!(v11["ips"][0]["address"], "10.244.0.5/32");
        assert_eq!(v11["ips"][0]["interface"], 1);
        assert_eq!(v11["dns"], json!({}));
    }

    #[test]
    fn reads_back_every_version() {
        for ver in ["0.4.0", "1.0.0", "1.1.0"] {
            let p = Parsed::from_value(&sample().to_value(ver));
            assert_eq!(p.ips, vec![(Ipv4Addr::new(10, 244, 0, 5), 32, Some(1))]);
            assert_eq!(p.interfaces[1].0, "eth0");
            assert_eq!(p.routes.len(), 2);
        }
        let host_local = json!({"cniVersion":"0.4.0","ips":[
            {"version":"6","address":"fd00::5/64"},
            {"version":"4","address":"10.1.0.7/24","gateway":"10.1.0.1"}]});
        assert_eq!(first_ipv4(&host_local), Some(Ipv4Addr::new(10, 1, 0, 7)));
        assert_eq!(first_ipv4(&json!("junk")), None);
        assert_eq!(first_ipv4(&json!({"ips":[{"address":"1.2.3.4/99"}]})), None);
    }
}
