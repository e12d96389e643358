//! Leaf values that validate themselves while decoding: the `protocol` of a port, a
//! port given as number or IANA service name, an `ipBlock` CIDR. Each refuses a bad
//! value with a [`ValueError`] saying why; serde turns it into an error at the field.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::error::ValueError;

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
            Protocol::Tcp => crate::policy::PROTO_TCP,
            Protocol::Udp => crate::policy::PROTO_UDP,
            Protocol::Sctp => crate::policy::PROTO_SCTP,
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
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            other => Err(ValueError(format!(
                "unsupported protocol {other:?} (expected TCP, UDP or SCTP)"
            ))),
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

pub(super) fn port_number(v: i64) -> Result<u16, ValueError> {
    if (1..=65535).contains(&v) {
        Ok(v as u16)
    } else {
        Err(ValueError(format!(
            "must be between 1 and 65535, inclusive (got {v})"
        )))
    }
}

/// IANA_SVC_NAME (RFC 6335): at most 15 characters of lowercase letters, digits and
/// `-`, at least one letter, no `-` at either end and no `--`.
pub fn check_port_name(name: &str) -> Result<(), ValueError> {
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
        Some(p) => Err(ValueError(format!("invalid port name {name:?}: {p}"))),
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
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let bad = |why: &str| ValueError(format!("invalid CIDR {s:?}: {why}"));
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
pub(super) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
