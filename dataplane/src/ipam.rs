//! The node-local IPv4 address allocator over the pod CIDR (the daemon's IPAM).
//!
//! Owned by the control thread, like every other piece of daemon state: requests are
//! served one at a time, so two CNI ADDs racing each other can never be handed the
//! same address. Each allocation is keyed by the CNI attachment `(container_id,
//! ifname)`; allocating again for the same key returns the same address (a retried ADD
//! must not leak one), releasing is idempotent. The allocator never hands out the
//! network address, the broadcast address, or the host port's `.1`, honours a
//! requested address when it is free, and otherwise walks the range next-fit from the
//! last address it gave out, so a just-released address is not reused at once (a
//! stale peer's conntrack entry or ARP cache then cannot hit the next pod).
//!
//! Every change is persisted with [`crate::state::save_json`] before it is reported:
//! an address that a pod was told about survives a daemon restart, and a change whose
//! write failed is rolled back in memory and reported as an error.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Ipv4Cidr;
use crate::state::{load_json, save_json, StateError};

/// File name of the allocation table under the state dir.
pub const IPAM_FILE: &str = "ipam.json";

/// An attachment's address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub ip: Ipv4Addr,
    pub container_id: String,
    pub ifname: String,
}

/// What is persisted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Persisted {
    #[serde(default)]
    last: Option<Ipv4Addr>,
    #[serde(default)]
    allocations: Vec<Allocation>,
}

/// Allocation failures, each naming what was asked.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("pod CIDR {cidr} has no free address left ({used} in use)")]
    Exhausted { cidr: Ipv4Cidr, used: usize },
    #[error("requested ip {ip} is outside the pod CIDR {cidr} or reserved (network, broadcast, host port)")]
    NotAssignable { ip: Ipv4Addr, cidr: Ipv4Cidr },
    #[error("requested ip {ip} is already in use by {owner}")]
    InUse { ip: Ipv4Addr, owner: String },
    #[error("container {container_id} ifname {ifname} already holds {held}, not the requested {requested}")]
    KeyHoldsOther {
        container_id: String,
        ifname: String,
        held: Ipv4Addr,
        requested: Ipv4Addr,
    },
    #[error("container_id and ifname must not be empty")]
    EmptyKey,
    #[error("persist IP allocations: {0}")]
    Persist(#[from] StateError),
}

/// The allocator.
#[derive(Debug)]
pub struct Ipam {
    cidr: Ipv4Cidr,
    path: Option<PathBuf>,
    by_ip: BTreeMap<Ipv4Addr, Allocation>,
    last: Option<Ipv4Addr>,
}

impl Ipam {
    /// An empty allocator that persists nowhere (tests, dry runs).
    pub fn in_memory(cidr: Ipv4Cidr) -> Ipam {
        Ipam {
            cidr,
            path: None,
            by_ip: BTreeMap::new(),
            last: None,
        }
    }

    /// Loads `path` (missing file: empty). Allocations outside `cidr` (the node's
    /// CIDR changed) are dropped with a warning rather than handed out twice.
    pub fn load(cidr: Ipv4Cidr, path: &Path) -> Result<Ipam, IpamError> {
        let saved: Persisted = load_json(path)?.unwrap_or_default();
        let mut ipam = Ipam {
            cidr,
            path: Some(path.to_path_buf()),
            by_ip: BTreeMap::new(),
            last: saved.last.filter(|ip| cidr.contains(*ip)),
        };
        for a in saved.allocations {
            if !ipam.assignable(a.ip) {
                tracing::warn!(ip = %a.ip, container_id = %a.container_id, %cidr, "dropping persisted allocation outside the pod CIDR");
                continue;
            }
            ipam.by_ip.insert(a.ip, a);
        }
        Ok(ipam)
    }

    /// The pod CIDR.
    pub fn cidr(&self) -> Ipv4Cidr {
        self.cidr
    }

    /// Every allocation, by address.
    pub fn list(&self) -> Vec<Allocation> {
        self.by_ip.values().cloned().collect()
    }

    /// The address held by `(container_id, ifname)`.
    pub fn lookup(&self, container_id: &str, ifname: &str) -> Option<Ipv4Addr> {
        self.by_ip
            .values()
            .find(|a| a.container_id == container_id && a.ifname == ifname)
            .map(|a| a.ip)
    }

    /// The range of host addresses, network and broadcast excluded (for /31 and /32
    /// every address counts).
    fn range(&self) -> (u32, u32) {
        let net = u32::from(self.cidr.network());
        let size = 1u64 << (32 - u32::from(self.cidr.prefix.min(32)));
        let last = (u64::from(net) + size - 1) as u32;
        if size <= 2 {
            (net, last)
        } else {
            (net + 1, last - 1)
        }
    }

    /// Whether `ip` may ever be handed out: inside the CIDR, not network/broadcast,
    /// not the host port's first address.
    pub fn assignable(&self, ip: Ipv4Addr) -> bool {
        let (lo, hi) = self.range();
        let v = u32::from(ip);
        let host_port = u32::from(self.cidr.network()).wrapping_add(1);
        self.cidr.contains(ip) && (lo..=hi).contains(&v) && v != host_port
    }

    /// Allocates for `(container_id, ifname)`: the address it already holds, else
    /// `requested` if free, else the next free one. `taken` reports addresses used
    /// outside the allocator (endpoints added by hand), which are skipped too.
    pub fn allocate(
        &mut self,
        container_id: &str,
        ifname: &str,
        requested: Option<Ipv4Addr>,
        taken: &dyn Fn(Ipv4Addr) -> bool,
    ) -> Result<Ipv4Addr, IpamError> {
        if container_id.is_empty() || ifname.is_empty() {
            return Err(IpamError::EmptyKey);
        }
        if let Some(held) = self.lookup(container_id, ifname) {
            return match requested {
                Some(r) if r != held => Err(IpamError::KeyHoldsOther {
                    container_id: container_id.to_string(),
                    ifname: ifname.to_string(),
                    held,
                    requested: r,
                }),
                _ => Ok(held),
            };
        }
        let ip = match requested {
            Some(ip) => {
                if !self.assignable(ip) {
                    return Err(IpamError::NotAssignable {
                        ip,
                        cidr: self.cidr,
                    });
                }
                if let Some(a) = self.by_ip.get(&ip) {
                    return Err(IpamError::InUse {
                        ip,
                        owner: format!("container {} ifname {}", a.container_id, a.ifname),
                    });
                }
                if taken(ip) {
                    return Err(IpamError::InUse {
                        ip,
                        owner: "an endpoint added without IPAM".to_string(),
                    });
                }
                ip
            }
            None => self.next_free(taken).ok_or(IpamError::Exhausted {
                cidr: self.cidr,
                used: self.by_ip.len(),
            })?,
        };
        let previous_last = self.last;
        self.by_ip.insert(
            ip,
            Allocation {
                ip,
                container_id: container_id.to_string(),
                ifname: ifname.to_string(),
            },
        );
        if requested.is_none() {
            self.last = Some(ip);
        }
        if let Err(e) = self.persist() {
            self.by_ip.remove(&ip);
            self.last = previous_last;
            return Err(e);
        }
        Ok(ip)
    }

    fn next_free(&self, taken: &dyn Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
        let (lo, hi) = self.range();
        let span = u64::from(hi - lo) + 1;
        let start = match self.last {
            Some(l) if (lo..=hi).contains(&u32::from(l)) => u64::from(u32::from(l) - lo) + 1,
            _ => 0,
        };
        (0..span)
            .map(|i| Ipv4Addr::from(lo + ((start + i) % span) as u32))
            .find(|ip| self.assignable(*ip) && !self.by_ip.contains_key(ip) && !taken(*ip))
    }

    /// Releases what `(container_id, ifname)` holds; `Ok(None)` when it held nothing.
    pub fn release(
        &mut self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<Ipv4Addr>, IpamError> {
        let Some(ip) = self.lookup(container_id, ifname) else {
            return Ok(None);
        };
        let Some(removed) = self.by_ip.remove(&ip) else {
            return Ok(None);
        };
        if let Err(e) = self.persist() {
            self.by_ip.insert(ip, removed);
            return Err(e);
        }
        Ok(Some(ip))
    }

    fn persist(&self) -> Result<(), IpamError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let p = Persisted {
            last: self.last,
            allocations: self.list(),
        };
        save_json(path, &p)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    fn none(_: Ipv4Addr) -> bool {
        false
    }

    #[test]
    fn skips_reserved_and_is_idempotent_per_key() {
        let mut ipam = Ipam::in_memory(cidr("10.244.0.0/24"));
        let a = ipam.allocate("c1", "eth0", None, &none).unwrap();
        assert_eq!(
            a,
            Ipv4Addr::new(10, 244, 0, 2),
            "skips .0 and the host port .1"
        );
        assert_eq!(ipam.allocate("c1", "eth0", None, &none).unwrap(), a);
        let b = ipam.allocate("c1", "net1", None, &none).unwrap();
        assert_ne!(a, b);
        assert_eq!(ipam.list().len(), 2);
    }

    #[test]
    fn never_hands_one_address_twice_and_exhausts() {
        let mut ipam = Ipam::in_memory(cidr("10.0.0.0/29")); // .2 .. .6 usable
        let mut got = Vec::new();
        for i in 0..5 {
            got.push(
                ipam.allocate(&format!("c{i}"), "eth0", None, &none)
                    .unwrap(),
            );
        }
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 5);
        assert!(!got.contains(&Ipv4Addr::new(10, 0, 0, 7)), "broadcast");
        let e = ipam.allocate("c9", "eth0", None, &none).unwrap_err();
        assert!(matches!(e, IpamError::Exhausted { .. }), "{e}");
        assert!(e.to_string().contains("10.0.0.0/29"), "{e}");
        // Released addresses are reused only after the rest of the range.
        assert_eq!(
            ipam.release("c0", "eth0").unwrap(),
            Some(Ipv4Addr::new(10, 0, 0, 2))
        );
        assert_eq!(ipam.release("c0", "eth0").unwrap(), None);
        assert_eq!(
            ipam.allocate("c9", "eth0", None, &none).unwrap(),
            Ipv4Addr::new(10, 0, 0, 2)
        );
    }

    #[test]
    fn next_fit_does_not_reuse_at_once() {
        let mut ipam = Ipam::in_memory(cidr("10.0.0.0/24"));
        let a = ipam.allocate("a", "eth0", None, &none).unwrap();
        ipam.release("a", "eth0").unwrap();
        let b = ipam.allocate("b", "eth0", None, &none).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn requested_ip_rules() {
        let mut ipam = Ipam::in_memory(cidr("10.244.0.0/24"));
        let want = Ipv4Addr::new(10, 244, 0, 50);
        assert_eq!(ipam.allocate("a", "eth0", Some(want), &none).unwrap(), want);
        let e = ipam.allocate("b", "eth0", Some(want), &none).unwrap_err();
        assert!(matches!(e, IpamError::InUse { .. }), "{e}");
        assert!(e.to_string().contains("container a"), "{e}");
        for bad in ["10.244.0.0", "10.244.0.1", "10.244.0.255", "10.245.0.5"] {
            let e = ipam
                .allocate("c", "eth0", Some(bad.parse().unwrap()), &none)
                .unwrap_err();
            assert!(matches!(e, IpamError::NotAssignable { .. }), "{bad}: {e}");
        }
        let e = ipam
            .allocate("a", "eth0", Some(Ipv4Addr::new(10, 244, 0, 51)), &none)
            .unwrap_err();
        assert!(matches!(e, IpamError::KeyHoldsOther { .. }), "{e}");
        let taken = |ip: Ipv4Addr| ip == Ipv4Addr::new(10, 244, 0, 60);
        let e = ipam
            .allocate("d", "eth0", Some(Ipv4Addr::new(10, 244, 0, 60)), &taken)
            .unwrap_err();
        assert!(matches!(e, IpamError::InUse { .. }), "{e}");
        assert!(matches!(
            ipam.allocate("", "eth0", None, &none),
            Err(IpamError::EmptyKey)
        ));
    }

    #[test]
    fn skips_addresses_taken_elsewhere() {
        let mut ipam = Ipam::in_memory(cidr("10.0.0.0/24"));
        let taken = |ip: Ipv4Addr| ip == Ipv4Addr::new(10, 0, 0, 2);
        assert_eq!(
            ipam.allocate("a", "eth0", None, &taken).unwrap(),
            Ipv4Addr::new(10, 0, 0, 3)
        );
    }

    #[test]
    fn persists_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IPAM_FILE);
        let c = cidr("10.244.0.0/24");
        let mut ipam = Ipam::load(c, &path).unwrap();
        let a = ipam.allocate("a", "eth0", None, &none).unwrap();
        let b = ipam.allocate("b", "eth0", None, &none).unwrap();
        ipam.release("a", "eth0").unwrap();
        let mut again = Ipam::load(c, &path).unwrap();
        assert_eq!(again.lookup("b", "eth0"), Some(b));
        assert_eq!(again.lookup("a", "eth0"), None);
        let next = again.allocate("c", "eth0", None, &none).unwrap();
        assert_ne!(next, a, "next-fit cursor survives the restart");
        assert_ne!(next, b);
        // A CIDR change drops what no longer fits instead of handing it out twice.
        let other = Ipam::load(cidr("10.99.0.0/24"), &path).unwrap();
        assert!(other.list().is_empty());
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IPAM_FILE);
        std::fs::write(&path, b"{not json").unwrap();
        let e = Ipam::load(cidr("10.0.0.0/24"), &path).unwrap_err();
        assert!(e.to_string().contains(IPAM_FILE), "{e}");
    }

    #[test]
    fn tiny_cidrs_do_not_panic() {
        for c in ["10.0.0.0/32", "10.0.0.0/31", "10.0.0.0/30", "0.0.0.0/0"] {
            let mut ipam = Ipam::in_memory(cidr(c));
            let _ = ipam.allocate("a", "eth0", None, &none);
            let _ = ipam.allocate("b", "eth0", None, &none);
        }
    }
}
