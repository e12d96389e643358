//! The node-local address allocator over the pod CIDR (the daemon's IPAM).
//!
//! Owned by the control thread, like every other piece of daemon state: requests are
//! served one at a time, so two CNI ADDs racing each other can never be handed the
//! same address. Each allocation is keyed by the CNI attachment `(container_id,
//! ifname)`; allocating again for the same key returns the same address (a retried ADD
//! must not leak one), releasing is idempotent. The allocator never hands out the
//! network address, the last address of the range (IPv4 broadcast), or the host port's
//! first address, honours a requested address when it is free, and otherwise walks
//! the range next-fit from the last address it gave out, so a just-released address is
//! not reused at once (a stale peer's conntrack entry or ARP cache then cannot hit the
//! next pod).
//!
//! Family-neutral: [`Ipam`] is generic over the address type of one family
//! ([`PodAddr`]: [`Ipv4Addr`], [`Ipv6Addr`]) with IPv4 as the default, one allocator per
//! family, like the tables (`packet::addr`). The range arithmetic runs on the address
//! as a `u128` of the family's width. The persisted file is the same for both families
//! and unchanged from the IPv4-only allocator: addresses are strings.
//!
//! Every change is persisted with [`crate::state::save_json_kept`] (the file and its
//! last good copy) before it is reported: an address that a pod was told about
//! survives a daemon restart, and a change whose write failed is rolled back in memory
//! and reported as an error. [`Ipam::load_recovering`] falls back to the copy when the
//! file is unreadable.
//!
//! Crash-safe ADD: a new allocation is written `pending` (the journal entry of an ADD
//! under way) and [`Ipam::confirm`]ed once the attachment's endpoint is durable. A
//! pending allocation found at start belongs to an ADD that never completed (the
//! daemon went away mid-ADD, the plugin answered "try again later"); the daemon
//! releases it unless its endpoint is there ([`Ipam::pending`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::Ipv4Cidr;
use crate::packet::addr::IpKey;
use crate::state::{load_json, load_json_recovering, save_json_kept, Health, Loaded, StateError};

/// File name of the allocation table under the state dir.
pub const IPAM_FILE: &str = "ipam.json";

/// A pod address of one family, as the allocator hands it out.
pub trait PodAddr:
    Copy + Ord + fmt::Debug + fmt::Display + Serialize + DeserializeOwned + Into<IpAddr> + 'static
{
    /// The family's table key (`u32` or `u128`); its width is the address width.
    type Key: IpKey;
    /// The address as an integer, in the low `Key::BITS` bits.
    fn to_bits(self) -> u128;
    /// The address of `bits` (bits above the family's width are ignored).
    fn from_bits(bits: u128) -> Self;
    /// Address width in bits (32 or 128).
    fn width() -> u32 {
        u32::from(<Self::Key as IpKey>::BITS)
    }
}

impl PodAddr for Ipv4Addr {
    type Key = u32;
    fn to_bits(self) -> u128 {
        u128::from(u32::from(self))
    }
    fn from_bits(bits: u128) -> Self {
        Ipv4Addr::from(bits as u32)
    }
}

impl PodAddr for Ipv6Addr {
    type Key = u128;
    fn to_bits(self) -> u128 {
        u128::from(self)
    }
    fn from_bits(bits: u128) -> Self {
        Ipv6Addr::from(bits)
    }
}

/// A prefix of one family: `addr/prefix`, host bits allowed in `addr` (ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr<A: PodAddr = Ipv4Addr> {
    pub addr: A,
    pub prefix: u8,
}

impl<A: PodAddr> Cidr<A> {
    /// The prefix length, capped at the family's width.
    fn len(&self) -> u32 {
        u32::from(self.prefix).min(A::width())
    }

    /// Mask of the host bits (the low `width - prefix` bits).
    fn host_mask(&self) -> u128 {
        let host_bits = A::width() - self.len();
        if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        }
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> A {
        A::from_bits(self.addr.to_bits() & !self.host_mask())
    }

    /// True when `ip` lies inside the prefix.
    pub fn contains(&self, ip: A) -> bool {
        ip.to_bits() & !self.host_mask() == self.network().to_bits()
    }

    /// First and last address of the prefix, as integers.
    fn bounds(&self) -> (u128, u128) {
        let net = self.network().to_bits();
        (net, net | self.host_mask())
    }
}

impl<A: PodAddr> fmt::Display for Cidr<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl From<Ipv4Cidr> for Cidr<Ipv4Addr> {
    fn from(c: Ipv4Cidr) -> Self {
        Cidr {
            addr: c.addr,
            prefix: c.prefix,
        }
    }
}

/// An attachment's address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "A: PodAddr")]
pub struct Allocation<A: PodAddr = Ipv4Addr> {
    pub ip: A,
    pub container_id: String,
    pub ifname: String,
    /// Allocated for an ADD that has not completed yet (absent in files of earlier
    /// releases: completed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

/// What is persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "A: PodAddr")]
struct Persisted<A: PodAddr> {
    #[serde(default)]
    last: Option<A>,
    #[serde(default)]
    allocations: Vec<Allocation<A>>,
}

impl<A: PodAddr> Default for Persisted<A> {
    fn default() -> Self {
        Persisted {
            last: None,
            allocations: Vec::new(),
        }
    }
}

/// Allocation failures, each naming what was asked.
#[derive(Debug, thiserror::Error)]
pub enum IpamError<A: PodAddr = Ipv4Addr> {
    #[error("pod CIDR {cidr} has no free address left ({used} in use)")]
    Exhausted { cidr: Cidr<A>, used: usize },
    #[error("requested ip {ip} is outside the pod CIDR {cidr} or reserved (network, broadcast, host port)")]
    NotAssignable { ip: A, cidr: Cidr<A> },
    #[error("requested ip {ip} is already in use by {owner}")]
    InUse { ip: A, owner: String },
    #[error("container {container_id} ifname {ifname} already holds {held}, not the requested {requested}")]
    KeyHoldsOther {
        container_id: String,
        ifname: String,
        held: A,
        requested: A,
    },
    #[error("container_id and ifname must not be empty")]
    EmptyKey,
    #[error("persist IP allocations: {0}")]
    Persist(#[from] StateError),
}

/// Where [`Ipam::load_recovering`] got the allocations from.
#[derive(Debug, PartialEq, Eq)]
pub enum IpamOrigin {
    /// The file (or nothing: a first start).
    Current,
    /// The last good copy; the unreadable file (if there was one) was set aside.
    FromCopy { set_aside: Option<PathBuf> },
    /// File and copy unreadable, set aside; the allocator starts empty (the daemon
    /// re-adopts the addresses of the endpoints it restores).
    Unreadable { set_aside: Vec<PathBuf> },
}

/// The allocator of one family (IPv4 unless named).
#[derive(Debug)]
pub struct Ipam<A: PodAddr = Ipv4Addr> {
    cidr: Cidr<A>,
    path: Option<PathBuf>,
    by_ip: BTreeMap<A, Allocation<A>>,
    last: Option<A>,
    health: Health,
}

impl<A: PodAddr> Ipam<A> {
    /// An empty allocator that persists nowhere (tests, dry runs).
    pub fn in_memory(cidr: impl Into<Cidr<A>>) -> Ipam<A> {
        Ipam {
            cidr: cidr.into(),
            path: None,
            by_ip: BTreeMap::new(),
            last: None,
            health: Health::default(),
        }
    }

    /// Report write outcomes into `health` (the daemon's).
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    /// Loads `path`, falling back to its last good copy, setting unreadable files aside
    /// ([`load_json_recovering`]); only an unreadable directory or a failed set-aside is
    /// an error.
    pub fn load_recovering(
        cidr: impl Into<Cidr<A>>,
        path: &Path,
    ) -> Result<(Ipam<A>, IpamOrigin), IpamError<A>> {
        let (saved, origin) = match load_json_recovering::<Persisted<A>>(path)? {
            Loaded::Missing => (Persisted::default(), IpamOrigin::Current),
            Loaded::Current(p) => (p, IpamOrigin::Current),
            Loaded::FromCopy { value, set_aside } => (value, IpamOrigin::FromCopy { set_aside }),
            Loaded::Unreadable { set_aside } => {
                (Persisted::default(), IpamOrigin::Unreadable { set_aside })
            }
        };
        Ok((Ipam::from_saved(cidr.into(), path, saved), origin))
    }

    /// Loads `path` (missing file: empty). Allocations outside `cidr` (the node's
    /// CIDR changed) are dropped with a warning rather than handed out twice.
    pub fn load(cidr: impl Into<Cidr<A>>, path: &Path) -> Result<Ipam<A>, IpamError<A>> {
        let saved: Persisted<A> = load_json(path)?.unwrap_or_default();
        Ok(Ipam::from_saved(cidr.into(), path, saved))
    }

    fn from_saved(cidr: Cidr<A>, path: &Path, saved: Persisted<A>) -> Ipam<A> {
        let mut ipam = Ipam {
            cidr,
            path: Some(path.to_path_buf()),
            by_ip: BTreeMap::new(),
            last: saved.last.filter(|ip| cidr.contains(*ip)),
            health: Health::default(),
        };
        for a in saved.allocations {
            if !ipam.assignable(a.ip) {
                tracing::warn!(ip = %a.ip, container_id = %a.container_id, %cidr, "dropping persisted allocation outside the pod CIDR");
                continue;
            }
            ipam.by_ip.insert(a.ip, a);
        }
        ipam
    }

    /// The pod CIDR.
    pub fn cidr(&self) -> Cidr<A> {
        self.cidr
    }

    /// Every allocation, by address.
    pub fn list(&self) -> Vec<Allocation<A>> {
        self.by_ip.values().cloned().collect()
    }

    /// The address held by `(container_id, ifname)`.
    pub fn lookup(&self, container_id: &str, ifname: &str) -> Option<A> {
        self.by_ip
            .values()
            .find(|a| a.container_id == container_id && a.ifname == ifname)
            .map(|a| a.ip)
    }

    /// The range of host addresses as integers, network and last address excluded
    /// (for prefixes of one or two addresses every address counts).
    fn range(&self) -> (u128, u128) {
        let (net, last) = self.cidr.bounds();
        if last - net < 2 {
            (net, last)
        } else {
            (net + 1, last - 1)
        }
    }

    /// Whether `ip` may ever be handed out: inside the CIDR, not the network or last
    /// address, not the host port's first address.
    pub fn assignable(&self, ip: A) -> bool {
        let (lo, hi) = self.range();
        let v = ip.to_bits();
        let host_port = self.cidr.network().to_bits().wrapping_add(1);
        self.cidr.contains(ip) && (lo..=hi).contains(&v) && v != host_port
    }

    /// Allocates for `(container_id, ifname)`: the address it already holds, else
    /// `requested` if free, else the next free one. `taken` reports addresses used
    /// outside the allocator (endpoints added by hand), which are skipped too.
    pub fn allocate(
        &mut self,
        container_id: &str,
        ifname: &str,
        requested: Option<A>,
        taken: &dyn Fn(A) -> bool,
    ) -> Result<A, IpamError<A>> {
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
                pending: true,
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

    /// The first free address after the cursor, wrapping around the range once.
    fn next_free(&self, taken: &dyn Fn(A) -> bool) -> Option<A> {
        let (lo, hi) = self.range();
        // Offsets from `lo`; `hi - lo` is the last one (no `+ 1`: an IPv6 /0 spans
        // every u128).
        let top = hi - lo;
        let start = match self.last.map(PodAddr::to_bits) {
            Some(l) if (lo..hi).contains(&l) => l - lo + 1,
            _ => 0,
        };
        (start..=top)
            .chain(0..start)
            .map(|off| A::from_bits(lo + off))
            .find(|ip| self.assignable(*ip) && !self.by_ip.contains_key(ip) && !taken(*ip))
    }

    /// The ADD of `(container_id, ifname)` completed: its allocation is no longer
    /// pending. `Ok(false)`: nothing pending to confirm. On a failed write the entry
    /// stays pending in memory too (a restart then keeps it only if its endpoint is
    /// there, which it is once the endpoint is durable).
    pub fn confirm(&mut self, container_id: &str, ifname: &str) -> Result<bool, IpamError<A>> {
        let Some(ip) = self.lookup(container_id, ifname) else {
            return Ok(false);
        };
        let Some(a) = self.by_ip.get_mut(&ip).filter(|a| a.pending) else {
            return Ok(false);
        };
        a.pending = false;
        if let Err(e) = self.persist() {
            if let Some(a) = self.by_ip.get_mut(&ip) {
                a.pending = true;
            }
            return Err(e);
        }
        Ok(true)
    }

    /// The allocations of ADDs that have not completed.
    pub fn pending(&self) -> Vec<Allocation<A>> {
        self.by_ip.values().filter(|a| a.pending).cloned().collect()
    }

    /// Takes over `ip` for `(container_id, ifname)` as a completed allocation (an
    /// endpoint restored at start whose allocation was lost with an unreadable file).
    /// `Ok(false)` when the address or the key is held already.
    pub fn adopt(&mut self, ip: A, container_id: &str, ifname: &str) -> Result<bool, IpamError<A>> {
        if !self.assignable(ip)
            || self.by_ip.contains_key(&ip)
            || self.lookup(container_id, ifname).is_some()
            || container_id.is_empty()
            || ifname.is_empty()
        {
            return Ok(false);
        }
        self.by_ip.insert(
            ip,
            Allocation {
                ip,
                container_id: container_id.to_string(),
                ifname: ifname.to_string(),
                pending: false,
            },
        );
        if let Err(e) = self.persist() {
            self.by_ip.remove(&ip);
            return Err(e);
        }
        Ok(true)
    }

    /// Releases what `(container_id, ifname)` holds; `Ok(None)` when it held nothing.
    pub fn release(&mut self, container_id: &str, ifname: &str) -> Result<Option<A>, IpamError<A>> {
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

    /// Write the allocations (file and copy), e.g. after a recovery at start.
    pub fn save(&self) -> Result<(), IpamError<A>> {
        self.persist()
    }

    fn persist(&self) -> Result<(), IpamError<A>> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let p = Persisted {
            last: self.last,
            allocations: self.list(),
        };
        self.health.record(save_json_kept(path, &p))?;
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
    fn new_allocations_are_pending_until_confirmed_and_survive_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IPAM_FILE);
        let c = cidr("10.244.0.0/24");
        let mut ipam = Ipam::load(c, &path).unwrap();
        let a = ipam.allocate("c1", "eth0", None, &none).unwrap();
        let b = ipam.allocate("c2", "eth0", None, &none).unwrap();
        assert!(ipam.confirm("c1", "eth0").unwrap());
        assert!(!ipam.confirm("c1", "eth0").unwrap(), "already confirmed");
        assert!(!ipam.confirm("c9", "eth0").unwrap(), "nothing held");
        // A restart (the daemon went away before c2's endpoint was durable).
        let (again, origin) = Ipam::<Ipv4Addr>::load_recovering(c, &path).unwrap();
        assert_eq!(origin, IpamOrigin::Current);
        let pending = again.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!((pending[0].ip, pending[0].container_id.as_str()), (b, "c2"));
        assert_eq!(again.lookup("c1", "eth0"), Some(a));
        // A file of an earlier release (no `pending`) loads as completed.
        std::fs::write(
            &path,
            br#"{"allocations":[{"ip":"10.244.0.9","container_id":"old","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert!(Ipam::<Ipv4Addr>::load(c, &path)
            .unwrap()
            .pending()
            .is_empty());
    }

    #[test]
    fn torn_file_recovers_from_its_copy_or_starts_empty_and_adopts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IPAM_FILE);
        let c = cidr("10.244.0.0/24");
        let mut ipam = Ipam::load(c, &path).unwrap();
        let a = ipam.allocate("c1", "eth0", None, &none).unwrap();
        std::fs::write(&path, b"{\"allocations\": [").unwrap();
        let (got, origin) = Ipam::<Ipv4Addr>::load_recovering(c, &path).unwrap();
        assert!(matches!(
            origin,
            IpamOrigin::FromCopy { set_aside: Some(_) }
        ));
        assert_eq!(got.lookup("c1", "eth0"), Some(a));
        std::fs::write(&path, b"x").unwrap();
        std::fs::write(crate::state::prev_path(&path), b"y").unwrap();
        let (mut empty, origin) = Ipam::<Ipv4Addr>::load_recovering(c, &path).unwrap();
        assert!(matches!(origin, IpamOrigin::Unreadable { ref set_aside } if set_aside.len() == 2));
        assert!(empty.list().is_empty());
        assert!(empty.adopt(a, "c1", "eth0").unwrap());
        assert!(!empty.adopt(a, "c2", "eth0").unwrap(), "address held");
        assert!(empty.pending().is_empty(), "adopted: completed");
        // The allocator never hands the adopted address out again.
        let next = empty.allocate("c3", "eth0", None, &none).unwrap();
        assert_ne!(next, a);
    }

    #[test]
    fn failed_write_rolls_the_allocation_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone/ipam.json");
        let health = Health::default();
        let mut ipam = Ipam::from_saved(cidr("10.0.0.0/24").into(), &path, Persisted::default())
            .with_health(health.clone());
        let e = ipam.allocate("c1", "eth0", None, &none).unwrap_err();
        assert!(matches!(e, IpamError::Persist(_)), "{e}");
        assert!(ipam.list().is_empty());
        assert!(health.status(Vec::new()).failing);
    }

    #[test]
    fn tiny_cidrs_do_not_panic() {
        for c in ["10.0.0.0/32", "10.0.0.0/31", "10.0.0.0/30", "0.0.0.0/0"] {
            let mut ipam = Ipam::in_memory(cidr(c));
            let _ = ipam.allocate("a", "eth0", None, &none);
            let _ = ipam.allocate("b", "eth0", None, &none);
        }
    }

    /// The exact shape the IPv4-only allocator wrote (pretty JSON, addresses as
    /// strings): a node upgraded in place keeps every pod's address.
    #[test]
    fn loads_the_file_the_ipv4_only_allocator_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IPAM_FILE);
        let old = r#"{
  "last": "10.244.0.3",
  "allocations": [
    {
      "ip": "10.244.0.2",
      "container_id": "c1",
      "ifname": "eth0"
    },
    {
      "ip": "10.244.0.3",
      "container_id": "c2",
      "ifname": "net1"
    }
  ]
}
"#;
        std::fs::write(&path, old).unwrap();
        let mut ipam = Ipam::load(cidr("10.244.0.0/24"), &path).unwrap();
        assert_eq!(
            ipam.lookup("c1", "eth0"),
            Some(Ipv4Addr::new(10, 244, 0, 2))
        );
        assert_eq!(
            ipam.lookup("c2", "net1"),
            Some(Ipv4Addr::new(10, 244, 0, 3))
        );
        assert_eq!(
            ipam.allocate("c3", "eth0", None, &none).unwrap(),
            Ipv4Addr::new(10, 244, 0, 4),
            "the next-fit cursor was read too"
        );
        // And what it writes now is still that shape.
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["last"], "10.244.0.4");
        assert_eq!(v["allocations"][0]["ip"], "10.244.0.2");
        assert_eq!(v["allocations"].as_array().unwrap().len(), 3);
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn cidr6(s: &str) -> Cidr<Ipv6Addr> {
        let (a, p) = s.split_once('/').unwrap();
        Cidr {
            addr: v6(a),
            prefix: p.parse().unwrap(),
        }
    }

    #[test]
    fn ipv6_is_the_same_allocator() {
        let none6 = |_: Ipv6Addr| false;
        let mut ipam = Ipam::in_memory(cidr6("fd00:10:244::/120"));
        let a = ipam.allocate("c1", "eth0", None, &none6).unwrap();
        assert_eq!(
            a,
            v6("fd00:10:244::2"),
            "skips the network and host port ::1"
        );
        assert_eq!(ipam.allocate("c1", "eth0", None, &none6).unwrap(), a);
        let want = v6("fd00:10:244::50");
        assert_eq!(
            ipam.allocate("c2", "eth0", Some(want), &none6).unwrap(),
            want
        );
        for bad in [
            "fd00:10:244::",
            "fd00:10:244::1",
            "fd00:10:244::ff",
            "fd00:10:245::5",
        ] {
            let e = ipam
                .allocate("c9", "eth0", Some(v6(bad)), &none6)
                .unwrap_err();
            assert!(matches!(e, IpamError::NotAssignable { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("fd00:10:244::/120"), "{e}");
        }
        assert_eq!(ipam.release("c1", "eth0").unwrap(), Some(a));
        let b = ipam.allocate("c3", "eth0", None, &none6).unwrap();
        assert_eq!(
            b,
            v6("fd00:10:244::3"),
            "next-fit, not the one just released"
        );

        // Exhaustion: a /126 has one assignable address (::2).
        let mut tiny = Ipam::in_memory(cidr6("fd00::/126"));
        assert_eq!(
            tiny.allocate("a", "eth0", None, &none6).unwrap(),
            v6("fd00::2")
        );
        let e = tiny.allocate("b", "eth0", None, &none6).unwrap_err();
        assert!(matches!(e, IpamError::Exhausted { used: 1, .. }), "{e}");
    }

    #[test]
    fn ipv6_persists_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IPAM_FILE);
        let none6 = |_: Ipv6Addr| false;
        let c = cidr6("fd00:10:244::/64");
        let mut ipam = Ipam::load(c, &path).unwrap();
        let a = ipam.allocate("a", "eth0", None, &none6).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["allocations"][0]["ip"], "fd00:10:244::2");
        let again = Ipam::load(c, &path).unwrap();
        assert_eq!(again.lookup("a", "eth0"), Some(a));
        // An IPv4 allocator does not take IPv6 entries for its own (or panic).
        assert!(Ipam::<Ipv4Addr>::load(cidr("10.0.0.0/24"), &path).is_err());
    }

    #[test]
    fn ipv6_extreme_prefixes_do_not_panic() {
        let none6 = |_: Ipv6Addr| false;
        for c in ["::/0", "fd00::1/128", "fd00::/127", "fd00::/126"] {
            let mut ipam = Ipam::in_memory(cidr6(c));
            let _ = ipam.allocate("a", "eth0", None, &none6);
            let _ = ipam.allocate("b", "eth0", None, &none6);
            let _ = ipam.allocate("c", "eth0", Some(v6("fd00::1")), &none6);
        }
        let mut all = Ipam::in_memory(cidr6("::/0"));
        assert_eq!(all.allocate("a", "eth0", None, &none6).unwrap(), v6("::2"));
        let top = v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe");
        assert_eq!(all.allocate("b", "eth0", Some(top), &none6).unwrap(), top);
    }

    #[test]
    fn cidr_of_either_family() {
        let c: Cidr = cidr("10.244.0.7/24").into();
        assert_eq!(c.network(), Ipv4Addr::new(10, 244, 0, 0));
        assert!(c.contains(Ipv4Addr::new(10, 244, 0, 255)));
        assert!(!c.contains(Ipv4Addr::new(10, 244, 1, 0)));
        assert_eq!(c.to_string(), "10.244.0.7/24");
        let c6 = cidr6("fd00:10:244::7/120");
        assert_eq!(c6.network(), v6("fd00:10:244::"));
        assert!(c6.contains(v6("fd00:10:244::ff")));
        assert!(!c6.contains(v6("fd00:10:244::100")));
        assert!(cidr6("::/0").contains(v6("ffff::1")));
        assert_eq!(<Ipv4Addr as PodAddr>::width(), 32);
        assert_eq!(<Ipv6Addr as PodAddr>::width(), 128);
    }
}
