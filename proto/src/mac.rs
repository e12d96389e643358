//! [`MacAddr`]: the one Ethernet address type of the control side.
//!
//! Parsed from `aa:bb:cc:dd:ee:ff` (six pairs of hex digits, either case: the
//! protocol's `mac` fields, `xsknetctl --mac`) or `aa-bb-cc-dd-ee-ff` (which CNI
//! runtimes may pass as `MAC=` or `runtimeConfig.mac`), one separator throughout;
//! shown in lowercase colon form (what `ip link` prints and the protocol sends), and
//! serialised as that string. The packet path keeps plain `[u8; 6]`; `From`
//! converts both ways.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

/// A string that is not `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: want six hex pairs like 02:00:0a:f4:00:05")]
pub struct MacParseError(pub String);

impl MacAddr {
    /// The address bytes.
    pub const fn octets(self) -> [u8; 6] {
        self.0
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || MacParseError(s.to_string());
        let mut out = [0u8; 6];
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut parts = s.split(sep);
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            // from_str_radix alone would accept a sign ("+a").
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(b: [u8; 6]) -> Self {
        MacAddr(b)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(m: MacAddr) -> Self {
        m.0
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_either_case_and_shows_lowercase() {
        let m: MacAddr = "02:AB:cd:00:0f:FF".parse().unwrap();
        assert_eq!(m, MacAddr([0x02, 0xab, 0xcd, 0x00, 0x0f, 0xff]));
        assert_eq!(m.to_string(), "02:ab:cd:00:0f:ff");
        assert_eq!(m.to_string().parse::<MacAddr>().unwrap(), m);
        assert_eq!(<[u8; 6]>::from(m), m.octets());
        assert_eq!(MacAddr::from(m.octets()), m);
        assert_eq!("02-ab-CD-00-0f-ff".parse::<MacAddr>().unwrap(), m);
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "02:00:00:00:00:0",
            "02:00:00:00:00:000",
            "02-00-00:00:00-00",
            "02:00:00-00-00-00",
            "020000000000",
            "02:00:00:00:00:+a",
            "02:00:00:00:00:0g",
            "02:00:00:00:00:00:",
            " 02:00:00:00:00:00",
        ] {
            let e = bad.parse::<MacAddr>().unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn serde_is_the_string_form() {
        let m = MacAddr([2, 0, 0, 0, 0, 5]);
        let v = serde_json::to_value(m).unwrap();
        assert_eq!(v, serde_json::json!("02:00:00:00:00:05"));
        assert_eq!(serde_json::from_value::<MacAddr>(v).unwrap(), m);
        let e = serde_json::from_str::<MacAddr>("\"nope\"").unwrap_err();
        assert!(e.to_string().contains("invalid MAC address"), "{e}");
        assert!(serde_json::from_str::<MacAddr>("[2,0,0,0,0,5]").is_err());
    }
}
