//! `Ipv4Cidr`: an IPv4 prefix as node.yaml writes it (`10.244.0.0/24`).

use super::*;

/// An IPv4 prefix, written `10.244.0.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// Why a string is not an IPv4 prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("expected an IPv4 prefix like 10.244.0.0/24, got {0:?}")]
    MissingSlash(String),
    #[error("{0:?} is not an IPv4 address")]
    BadAddress(String),
    #[error("prefix length {0:?} is not a number in 0..=32")]
    BadPrefix(String),
}

impl Ipv4Cidr {
    /// A prefix; `prefix` must be at most 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, CidrError> {
        if prefix > 32 {
            return Err(CidrError::BadPrefix(prefix.to_string()));
        }
        Ok(Ipv4Cidr { addr, prefix })
    }

    /// The netmask as a host-order integer.
    pub fn mask(&self) -> u32 {
        match self.prefix {
            0 => 0,
            p => u32::MAX << (32 - u32::from(p.min(32))),
        }
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// True when `addr` has bits set below the prefix.
    pub fn has_host_bits(&self) -> bool {
        u32::from(self.addr) & !self.mask() != 0
    }

    /// True when the two prefixes share an address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        let mask = if self.prefix < other.prefix {
            self.mask()
        } else {
            other.mask()
        };
        u32::from(self.addr) & mask == u32::from(other.addr) & mask
    }

    /// True when `ip` lies inside the prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| CidrError::MissingSlash(s.to_string()))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| CidrError::BadAddress(addr.to_string()))?;
        // u8::from_str accepts a leading '+'; a prefix is digits only.
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CidrError::BadPrefix(prefix.to_string()));
        }
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| CidrError::BadPrefix(prefix.to_string()))?;
        Ipv4Cidr::new(addr, prefix)
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
