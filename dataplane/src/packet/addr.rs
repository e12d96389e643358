//! Address families as table keys.
//!
//! The forwarding table, the connection table, the policy classifier and IPAM are
//! generic over an [`IpKey`]: `u32` for IPv4 (host byte order) and `u128` for IPv6.
//! A node's snapshot holds one table per family behind the same interface, so IPv6 is
//! an addition (an instance of the same code with `u128`) rather than a rewrite, and
//! the IPv4 packet path keeps its 4-byte keys: a 16-byte family-neutral key would cost
//! every IPv4 lookup a wider hash and compare for nothing.

use std::fmt::Debug;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The layer-3 family of a frame, as the pipeline's context records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum L3 {
    /// Not (yet) known: ARP, or a frame not parsed past Ethernet.
    #[default]
    None,
    Ipv4,
    Ipv6,
}

/// An address of one family used as a table key: `u32` (IPv4) or `u128` (IPv6), in
/// host byte order so that numeric order is prefix order.
pub trait IpKey: Copy + Eq + Ord + Hash + Debug + Default + Send + Sync + 'static {
    /// Address width in bits (32 or 128): the longest prefix length.
    const BITS: u8;
    /// The family these keys belong to.
    const FAMILY: L3;
    /// The all-zero address (unspecified): never a pod's address.
    const ZERO: Self;
    /// A well-mixed 64-bit hash for open-addressing tables.
    fn mix(self) -> u64;
    /// The address with only the first `len` bits kept (`len` ≥ `BITS` keeps all).
    fn masked(self, len: u8) -> Self;
    /// As a standard-library address (control side, output).
    fn to_ip(self) -> IpAddr;
    /// From a standard-library address, if it is of this family.
    fn from_ip(ip: IpAddr) -> Option<Self>;
}

impl IpKey for u32 {
    const BITS: u8 = 32;
    const FAMILY: L3 = L3::Ipv4;
    const ZERO: Self = 0;
    #[inline]
    fn mix(self) -> u64 {
        // Fibonacci hashing: spreads consecutive pod addresses.
        u64::from(self).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    #[inline]
    fn masked(self, len: u8) -> Self {
        if len >= 32 {
            self
        } else if len == 0 {
            0
        } else {
            self & (u32::MAX << (32 - len))
        }
    }
    fn to_ip(self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(self))
    }
    fn from_ip(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V4(a) => Some(u32::from(a)),
            IpAddr::V6(_) => None,
        }
    }
}

impl IpKey for u128 {
    const BITS: u8 = 128;
    const FAMILY: L3 = L3::Ipv6;
    const ZERO: Self = 0;
    #[inline]
    fn mix(self) -> u64 {
        let folded = (self as u64) ^ ((self >> 64) as u64).rotate_left(29);
        folded.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    #[inline]
    fn masked(self, len: u8) -> Self {
        if len >= 128 {
            self
        } else if len == 0 {
            0
        } else {
            self & (u128::MAX << (128 - len))
        }
    }
    fn to_ip(self) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(self))
    }
    fn from_ip(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V6(a) => Some(u128::from(a)),
            IpAddr::V4(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_round_trips() {
        let a = u32::from(Ipv4Addr::new(10, 244, 3, 7));
        assert_eq!(a.masked(24), u32::from(Ipv4Addr::new(10, 244, 3, 0)));
        assert_eq!(a.masked(0), 0);
        assert_eq!(a.masked(32), a);
        assert_eq!(u32::from_ip(a.to_ip()), Some(a));
        let b: u128 = "fd00::1:2".parse::<Ipv6Addr>().unwrap().into();
        assert_eq!(b.masked(64), "fd00::".parse::<Ipv6Addr>().unwrap().into());
        assert_eq!(u128::from_ip(b.to_ip()), Some(b));
        assert_eq!(u32::from_ip(b.to_ip()), None);
    }
}
