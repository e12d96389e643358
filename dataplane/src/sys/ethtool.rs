//! Interface offload settings through `SIOCETHTOOL`, and the one call the CNI plugin
//! makes on a pod's interface: [`prepare_pod_interface`].
//!
//! The ioctl resolves the interface name in the network namespace of the socket it is
//! issued on, and every call here opens its socket in the calling thread's namespace.
//! So to touch a pod's `eth0`, call these functions from inside the pod's namespace
//! (`sys::netns::run_in_netns`).
//!
//! Choice of interface: the legacy per-feature commands (`ETHTOOL_GTXCSUM` /
//! `ETHTOOL_STXCSUM`, `GSG`/`SSG`, `GTSO`/`STSO`, `GGSO`/`SGSO`, `GGRO`/`SGRO`). Each
//! maps in the kernel to a fixed feature mask (`STXCSUM` covers every checksum
//! feature, `STSO` every TSO flavour) and goes through the same `wanted_features` +
//! `netdev_update_features` path as `ETHTOOL_SFEATURES`, so the result is identical
//! for the five switches we need, without fetching and searching the feature-name
//! string set first. A set is only issued when the current value differs, because the
//! kernel answers `EOPNOTSUPP` for a feature the driver does not let change, even when
//! it already has the requested value.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const IFNAMSIZ: usize = 16;

const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_GSG: u32 = 0x18;
const ETHTOOL_SSG: u32 = 0x19;
const ETHTOOL_GTSO: u32 = 0x1e;
const ETHTOOL_STSO: u32 = 0x1f;
const ETHTOOL_GGSO: u32 = 0x23;
const ETHTOOL_SGSO: u32 = 0x24;
const ETHTOOL_GGRO: u32 = 0x2b;
const ETHTOOL_SGRO: u32 = 0x2c;

/// `struct ethtool_value` from `<linux/ethtool.h>`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with the union used as `ifr_data`. The kernel copies
/// `sizeof(struct ifreq)` (40 bytes on 64-bit) from userspace, so the union is padded
/// to its full size (`struct ifmap` is the largest member).
#[repr(C)]
struct IfreqData {
    ifr_name: [u8; IFNAMSIZ],
    ifr_data: *mut libc::c_void,
    _union_pad: [u8; 24 - std::mem::size_of::<*mut libc::c_void>()],
}

/// One legacy ethtool switch: its `ethtool -k` name and its get/set commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// `tx-checksumming` (all `NETIF_F_CSUM_MASK` bits).
    TxChecksum,
    /// `scatter-gather`.
    ScatterGather,
    /// `tcp-segmentation-offload` (all TSO flavours).
    Tso,
    /// `generic-segmentation-offload`.
    Gso,
    /// `generic-receive-offload`.
    Gro,
}

impl Feature {
    /// The name `ethtool -k` prints for this switch.
    pub fn name(self) -> &'static str {
        match self {
            Feature::TxChecksum => "tx-checksumming",
            Feature::ScatterGather => "scatter-gather",
            Feature::Tso => "tcp-segmentation-offload",
            Feature::Gso => "generic-segmentation-offload",
            Feature::Gro => "generic-receive-offload",
        }
    }

    fn get_cmd(self) -> u32 {
        match self {
            Feature::TxChecksum => ETHTOOL_GTXCSUM,
            Feature::ScatterGather => ETHTOOL_GSG,
            Feature::Tso => ETHTOOL_GTSO,
            Feature::Gso => ETHTOOL_GGSO,
            Feature::Gro => ETHTOOL_GGRO,
        }
    }

    fn set_cmd(self) -> u32 {
        match self {
            Feature::TxChecksum => ETHTOOL_STXCSUM,
            Feature::ScatterGather => ETHTOOL_SSG,
            Feature::Tso => ETHTOOL_STSO,
            Feature::Gso => ETHTOOL_SGSO,
            Feature::Gro => ETHTOOL_SGRO,
        }
    }
}

/// Errors of offload handling; each names the feature and interface involved.
#[derive(Debug, thiserror::Error)]
pub enum EthtoolError {
    /// The interface name cannot be passed to the kernel.
    #[error("ethtool on {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The ioctl socket could not be opened.
    #[error("open ethtool ioctl socket: {source}")]
    Socket {
        /// The `socket(2)` failure.
        source: io::Error,
    },
    /// Reading a feature failed (`ENODEV`: no such interface in this netns).
    #[error("read {} of {ifname}: {source}", .feature.name())]
    Get {
        /// The feature being read.
        feature: Feature,
        /// The interface.
        ifname: String,
        /// The ioctl failure.
        source: io::Error,
    },
    /// Changing a feature failed (`EOPNOTSUPP`: the driver keeps it fixed).
    #[error("turn {} {} on {ifname}: {source}", .feature.name(), if *.on { "on" } else { "off" })]
    Set {
        /// The feature being changed.
        feature: Feature,
        /// The requested state.
        on: bool,
        /// The interface.
        ifname: String,
        /// The ioctl failure.
        source: io::Error,
    },
    /// The kernel accepted the request but the feature is still on (a dependency or
    /// the driver forced it).
    #[error("prepare pod interface {ifname}: {features} still on after turning it off")]
    NotApplied {
        /// The interface.
        ifname: String,
        /// The features that stayed on, comma separated.
        features: String,
    },
}

/// The five offload switches xsknet cares about, as `ethtool -k` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offloads {
    /// `tx-checksumming`: the stack hands the driver packets with partial checksums.
    pub tx_checksum: bool,
    /// `scatter-gather`: non-linear skbs.
    pub scatter_gather: bool,
    /// `tcp-segmentation-offload`: TCP super-frames up to 64 KiB reach the driver.
    pub tso: bool,
    /// `generic-segmentation-offload`: segmentation deferred to just before the driver.
    pub gso: bool,
    /// `generic-receive-offload`: receive-side merging.
    pub gro: bool,
}

impl Offloads {
    fn get(&self, f: Feature) -> bool {
        match f {
            Feature::TxChecksum => self.tx_checksum,
            Feature::ScatterGather => self.scatter_gather,
            Feature::Tso => self.tso,
            Feature::Gso => self.gso,
            Feature::Gro => self.gro,
        }
    }

    fn set(&mut self, f: Feature, on: bool) {
        match f {
            Feature::TxChecksum => self.tx_checksum = on,
            Feature::ScatterGather => self.scatter_gather = on,
            Feature::Tso => self.tso = on,
            Feature::Gso => self.gso = on,
            Feature::Gro => self.gro = on,
        }
    }
}

/// Order matters only for enabling (TSO needs SG, SG needs checksumming); the kernel
/// recomputes the active set from the wanted set after every change, so the final
/// state is the same either way.
const ALL_FEATURES: [Feature; 5] = [
    Feature::TxChecksum,
    Feature::ScatterGather,
    Feature::Tso,
    Feature::Gso,
    Feature::Gro,
];

/// An `AF_INET` datagram socket used only as an ioctl handle.
struct IoctlSocket {
    fd: OwnedFd,
}

impl IoctlSocket {
    fn open() -> Result<IoctlSocket, EthtoolError> {
        // SAFETY: plain socket(2) call with constant arguments; no pointers involved.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(EthtoolError::Socket {
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` was just returned by socket(2), is valid and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(IoctlSocket { fd })
    }

    /// Runs one `ethtool_value` command; returns the `data` the kernel wrote back.
    fn value_cmd(&self, ifname: &[u8; IFNAMSIZ], cmd: u32, data: u32) -> io::Result<u32> {
        let mut value = EthtoolValue { cmd, data };
        let mut req = IfreqData {
            ifr_name: *ifname,
            ifr_data: (&mut value as *mut EthtoolValue).cast(),
            _union_pad: [0; 24 - std::mem::size_of::<*mut libc::c_void>()],
        };
        // SAFETY: `req` is a fully initialised ifreq of at least the kernel's size, with
        // a NUL-terminated name and `ifr_data` pointing at `value`, a live
        // `struct ethtool_value` that outlives the call; SIOCETHTOOL reads/writes only
        // those two objects.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(value.data)
    }
}

fn ifname_bytes(ifname: &str) -> Result<[u8; IFNAMSIZ], EthtoolError> {
    let invalid = |reason| EthtoolError::InvalidName {
        name: ifname.to_owned(),
        reason,
    };
    if ifname.is_empty() {
        return Err(invalid("empty interface name"));
    }
    if ifname.len() >= IFNAMSIZ {
        return Err(invalid("interface name longer than 15 bytes"));
    }
    if ifname.as_bytes().contains(&0) {
        return Err(invalid("interface name contains NUL"));
    }
    let mut out = [0u8; IFNAMSIZ];
    out[..ifname.len()].copy_from_slice(ifname.as_bytes());
    Ok(out)
}

fn get_with(
    sock: &IoctlSocket,
    ifname: &str,
    name: &[u8; IFNAMSIZ],
) -> Result<Offloads, EthtoolError> {
    let mut out = Offloads::default();
    for f in ALL_FEATURES {
        let v = sock
            .value_cmd(name, f.get_cmd(), 0)
            .map_err(|source| EthtoolError::Get {
                feature: f,
                ifname: ifname.to_owned(),
                source,
            })?;
        out.set(f, v != 0);
    }
    Ok(out)
}

/// Reads the five offload switches of `ifname` (in the calling thread's netns).
pub fn get_offloads(ifname: &str) -> Result<Offloads, EthtoolError> {
    let name = ifname_bytes(ifname)?;
    let sock = IoctlSocket::open()?;
    get_with(&sock, ifname, &name)
}

/// Sets the five offload switches of `ifname` to `want` (in the calling thread's
/// netns), touching only those that differ. Note the kernel's dependencies: with
/// `tx_checksum` off, scatter-gather and TSO cannot be on either.
pub fn set_offloads(ifname: &str, want: &Offloads) -> Result<(), EthtoolError> {
    let name = ifname_bytes(ifname)?;
    let sock = IoctlSocket::open()?;
    let have = get_with(&sock, ifname, &name)?;
    set_with(&sock, ifname, &name, &have, want)
}

fn set_with(
    sock: &IoctlSocket,
    ifname: &str,
    name: &[u8; IFNAMSIZ],
    have: &Offloads,
    want: &Offloads,
) -> Result<(), EthtoolError> {
    for f in ALL_FEATURES {
        let on = want.get(f);
        if have.get(f) == on {
            continue;
        }
        sock.value_cmd(name, f.set_cmd(), u32::from(on))
            .map_err(|source| EthtoolError::Set {
                feature: f,
                on,
                ifname: ifname.to_owned(),
                source,
            })?;
    }
    Ok(())
}

/// Makes a pod's interface hand the AF_XDP dataplane only complete frames: call it
/// from inside the pod's network namespace on the pod end of its veth (`eth0`).
///
/// Why: by default a veth advertises checksum offload, scatter-gather and TSO/GSO,
/// so the pod's stack never finishes its work — TCP and UDP packets leave with
/// `CHECKSUM_PARTIAL` (only the pseudo-header sum in the checksum field, the rest left
/// to "hardware") and TCP sends GSO super-frames of up to 64 KiB. Between two veths in
/// the kernel that is fine, because the skb carries the metadata that says "checksum
/// still to do" and "segment me". An XDP program on the host end and an AF_XDP socket
/// in copy mode see only the raw bytes, without that metadata: the dataplane would
/// forward frames with wrong TCP/UDP checksums (the receiver drops them) and frames
/// bigger than the MTU (which cannot be put on the wire or into a VXLAN tunnel), and
/// TCP between pods stalls.
///
/// What: turns off `tx-checksumming`, `scatter-gather`,
/// `tcp-segmentation-offload` and `generic-segmentation-offload`. With checksum
/// offload off the kernel masks every GSO feature for each packet at transmit, so TCP
/// (which builds GSO packets internally whatever the device says) has them segmented
/// and fully checksummed in software before they reach the veth: every frame is
/// complete and at most MTU-sized. Receive offload (GRO) is left alone; it does not
/// affect what the pod sends. Reads the switches back and fails with
/// [`EthtoolError::NotApplied`] if any of them is still on.
pub fn prepare_pod_interface(ifname: &str) -> Result<(), EthtoolError> {
    let name = ifname_bytes(ifname)?;
    let sock = IoctlSocket::open()?;
    let have = get_with(&sock, ifname, &name)?;
    let want = Offloads {
        tx_checksum: false,
        scatter_gather: false,
        tso: false,
        gso: false,
        gro: have.gro,
    };
    set_with(&sock, ifname, &name, &have, &want)?;
    let now = get_with(&sock, ifname, &name)?;
    let still_on: Vec<&str> = [
        Feature::TxChecksum,
        Feature::ScatterGather,
        Feature::Tso,
        Feature::Gso,
    ]
    .into_iter()
    .filter(|f| now.get(*f))
    .map(Feature::name)
    .collect();
    if !still_on.is_empty() {
        return Err(EthtoolError::NotApplied {
            ifname: ifname.to_owned(),
            features: still_on.join(", "),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_is_at_least_kernel_size() {
        // struct ifreq is 40 bytes on LP64 and 32 on ILP32.
        assert!(std::mem::size_of::<IfreqData>() >= 16 + 16);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<IfreqData>(), 40);
        assert_eq!(std::mem::size_of::<EthtoolValue>(), 8);
    }

    #[test]
    fn bad_names_are_errors_not_panics() {
        assert!(matches!(
            get_offloads(""),
            Err(EthtoolError::InvalidName { .. })
        ));
        assert!(matches!(
            get_offloads("0123456789abcdef"),
            Err(EthtoolError::InvalidName { .. })
        ));
        assert!(matches!(
            prepare_pod_interface("a\0b"),
            Err(EthtoolError::InvalidName { .. })
        ));
    }

    #[test]
    fn missing_interface_names_feature_and_device() {
        let err = get_offloads("xs-no-such-if").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("tx-checksumming"), "{text}");
        assert!(text.contains("xs-no-such-if"), "{text}");
    }

    #[test]
    fn loopback_offloads_are_readable() {
        // lo exists in every namespace and supports the legacy get commands.
        get_offloads("lo").expect("read lo offloads");
    }

    #[test]
    fn offloads_get_set_roundtrip() {
        let mut o = Offloads::default();
        for f in ALL_FEATURES {
            o.set(f, true);
            assert!(o.get(f));
        }
        assert_eq!(
            o,
            Offloads {
                tx_checksum: true,
                scatter_gather: true,
                tso: true,
                gso: true,
                gro: true
            }
        );
    }
}
