//! Interface offload settings through `SIOCETHTOOL`, and the one call the CNI plugin
//! makes on a pod's interface: [`prepare_pod_interface`].
//!
//! The ioctl resolves the interface name in the network namespace of the socket it is
//! issued on, and every call here opens its socket in the calling thread's namespace.
//! So to touch a pod's `eth0`, call these functions from inside the pod's namespace
//! (`sys::netns::run_in_netns`).
//!
//! Choice of interface: the feature-word commands (`ETHTOOL_GSSET_INFO` +
//! `ETHTOOL_GSTRINGS` for the kernel's feature names, `ETHTOOL_GFEATURES`,
//! `ETHTOOL_SFEATURES`), addressing features by the names `ethtool -k` prints. The
//! legacy per-switch commands (`ETHTOOL_STSO`, ...) were tried first and are not
//! enough: on Linux 6.18 `STSO` clears the kernel's `NETIF_F_ALL_TSO` mask, which does
//! not contain the newer `tx-tcp-accecn-segmentation`, so `ethtool -k` still reported
//! `tcp-segmentation-offload: on` afterwards. Matching names (as ethtool itself does)
//! also covers features future kernels add under the same naming scheme.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const IFNAMSIZ: usize = 16;
const ETH_GSTRING_LEN: usize = 32;
const ETH_SS_FEATURES: u32 = 4;

const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETHTOOL_SFEATURES: u32 = 0x3b;

/// Upper bound on the feature count, so a confused kernel answer cannot make us
/// allocate without limit (Linux has ~70 features).
const MAX_FEATURES: usize = 4096;

/// `struct ifreq` with the union used as `ifr_data`. The kernel copies
/// `sizeof(struct ifreq)` (40 bytes on 64-bit) from userspace, so the union is padded
/// to its full size (`struct ifmap` is the largest member).
#[repr(C)]
struct IfreqData {
    ifr_name: [u8; IFNAMSIZ],
    ifr_data: *mut libc::c_void,
    _union_pad: [u8; 24 - std::mem::size_of::<*mut libc::c_void>()],
}

/// One switch of `ethtool -k`'s top level, as xsknet groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// `tx-checksumming`: every `tx-checksum-*` feature.
    TxChecksum,
    /// `scatter-gather`: `tx-scatter-gather*`.
    ScatterGather,
    /// `tcp-segmentation-offload`: every `tx-tcp*-segmentation` feature.
    Tso,
    /// `generic-segmentation-offload`: `tx-generic-segmentation`.
    Gso,
    /// `generic-receive-offload`: `rx-gro`.
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

    /// Whether the kernel feature called `kernel_name` belongs to this switch (the
    /// same grouping ethtool uses for `-k`/`-K`).
    fn covers(self, kernel_name: &str) -> bool {
        match self {
            Feature::TxChecksum => kernel_name.starts_with("tx-checksum-"),
            Feature::ScatterGather => kernel_name.starts_with("tx-scatter-gather"),
            Feature::Tso => {
                kernel_name.starts_with("tx-tcp") && kernel_name.ends_with("segmentation")
            }
            Feature::Gso => kernel_name == "tx-generic-segmentation",
            Feature::Gro => kernel_name == "rx-gro",
        }
    }
}

const ALL_FEATURES: [Feature; 5] = [
    Feature::TxChecksum,
    Feature::ScatterGather,
    Feature::Tso,
    Feature::Gso,
    Feature::Gro,
];

/// Errors of offload handling; each names what was done to which interface.
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
    /// An ioctl failed (`ENODEV`: no such interface in this netns).
    #[error("{op} of {ifname}: {source}")]
    Ioctl {
        /// What was being done (`read feature names`, `set features`, ...).
        op: &'static str,
        /// The interface.
        ifname: String,
        /// The ioctl failure.
        source: io::Error,
    },
    /// The kernel's answer did not make sense (size mismatch, too many features).
    #[error("{op} of {ifname}: unexpected kernel answer: {reason}")]
    BadReply {
        /// What was being done.
        op: &'static str,
        /// The interface.
        ifname: String,
        /// What was wrong.
        reason: String,
    },
    /// A feature could not be changed as requested: it is fixed by the driver, or the
    /// kernel dropped it because of a dependency.
    #[error("{op} on {ifname}: {features} could not be turned {}", if *.on { "on" } else { "off" })]
    NotApplied {
        /// What was being done.
        op: &'static str,
        /// The interface.
        ifname: String,
        /// The kernel feature names that kept the other state, comma separated.
        features: String,
        /// The requested state.
        on: bool,
    },
}

/// The five offload switches xsknet cares about, as `ethtool -k` reports them (a
/// switch is on when any kernel feature in its group is active).
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

/// One kernel feature bit as `ETHTOOL_GFEATURES` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureState {
    /// Kernel name, e.g. `tx-tcp-segmentation`.
    pub name: String,
    /// Userspace may change it (`hw_features`); otherwise `ethtool -k` says `[fixed]`.
    pub changeable: bool,
    /// Wanted by userspace (`wanted_features`).
    pub requested: bool,
    /// In effect now (`features`).
    pub active: bool,
}

/// An `AF_INET` datagram socket used only as an ioctl handle, plus the name.
struct Ethtool<'a> {
    fd: OwnedFd,
    ifname: &'a str,
    name: [u8; IFNAMSIZ],
}

fn rd_u32(buf: &[u8], off: usize) -> Option<u32> {
    let b = buf.get(off..off + 4)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn wr_u32(buf: &mut [u8], off: usize, v: u32) {
    if let Some(b) = buf.get_mut(off..off + 4) {
        b.copy_from_slice(&v.to_ne_bytes());
    }
}

impl<'a> Ethtool<'a> {
    fn open(ifname: &'a str) -> Result<Ethtool<'a>, EthtoolError> {
        let name = ifname_bytes(ifname)?;
        // SAFETY: plain socket(2) call with constant arguments; no pointers involved.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(EthtoolError::Socket {
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` was just returned by socket(2), is valid and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Ethtool { fd, ifname, name })
    }

    /// Issues SIOCETHTOOL with `buf` as the command structure (its first u32 is the
    /// command); the kernel reads and writes at most `buf.len()` bytes of it, because
    /// every structure used here carries its own element count that matches `buf`.
    fn ioctl(&self, op: &'static str, buf: &mut [u8]) -> Result<(), EthtoolError> {
        let mut req = IfreqData {
            ifr_name: self.name,
            ifr_data: buf.as_mut_ptr().cast(),
            _union_pad: [0; 24 - std::mem::size_of::<*mut libc::c_void>()],
        };
        // SAFETY: `req` is a fully initialised ifreq of at least the kernel's size with a
        // NUL-terminated name; `ifr_data` points at `buf`, which lives across the call
        // and is sized by the callers for the element counts written into it, so the
        // kernel's copy_to/from_user stays inside it.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
        if rc < 0 {
            return Err(EthtoolError::Ioctl {
                op,
                ifname: self.ifname.to_owned(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    fn bad(&self, op: &'static str, reason: String) -> EthtoolError {
        EthtoolError::BadReply {
            op,
            ifname: self.ifname.to_owned(),
            reason,
        }
    }

    /// The kernel's feature names, in bit order.
    fn feature_names(&self) -> Result<Vec<String>, EthtoolError> {
        const OP: &str = "count features";
        // struct ethtool_sset_info { u32 cmd; u32 reserved; u64 sset_mask; u32 data[1]; }
        let mut info = [0u8; 20];
        wr_u32(&mut info, 0, ETHTOOL_GSSET_INFO);
        info[8..16].copy_from_slice(&(1u64 << ETH_SS_FEATURES).to_ne_bytes());
        self.ioctl(OP, &mut info)?;
        let mask = u64::from_ne_bytes(info[8..16].try_into().unwrap_or([0; 8]));
        if mask & (1 << ETH_SS_FEATURES) == 0 {
            return Err(self.bad(OP, "no feature string set".to_owned()));
        }
        let count = rd_u32(&info, 16).unwrap_or(0) as usize;
        if count == 0 || count > MAX_FEATURES {
            return Err(self.bad(OP, format!("{count} features")));
        }

        const OP2: &str = "read feature names";
        // struct ethtool_gstrings { u32 cmd; u32 string_set; u32 len; u8 data[]; }
        let mut strings = vec![0u8; 12 + count * ETH_GSTRING_LEN];
        wr_u32(&mut strings, 0, ETHTOOL_GSTRINGS);
        wr_u32(&mut strings, 4, ETH_SS_FEATURES);
        wr_u32(&mut strings, 8, count as u32);
        self.ioctl(OP2, &mut strings)?;
        let got = rd_u32(&strings, 8).unwrap_or(0) as usize;
        if got != count {
            return Err(self.bad(OP2, format!("{got} names for {count} features")));
        }
        Ok(strings[12..]
            .chunks_exact(ETH_GSTRING_LEN)
            .map(|raw| {
                let raw = raw.split(|&b| b == 0).next().unwrap_or(&[]);
                String::from_utf8_lossy(raw).into_owned()
            })
            .collect())
    }

    fn features(&self) -> Result<Vec<FeatureState>, EthtoolError> {
        const OP: &str = "read features";
        let names = self.feature_names()?;
        let blocks = names.len().div_ceil(32);
        // struct ethtool_gfeatures { u32 cmd; u32 size; struct { u32 available,
        // requested, active, never_changed; } features[size]; }
        let mut buf = vec![0u8; 8 + blocks * 16];
        wr_u32(&mut buf, 0, ETHTOOL_GFEATURES);
        wr_u32(&mut buf, 4, blocks as u32);
        self.ioctl(OP, &mut buf)?;
        let bit = |field: usize, i: usize| {
            rd_u32(&buf, 8 + (i / 32) * 16 + field * 4).is_some_and(|w| w & (1 << (i % 32)) != 0)
        };
        Ok(names
            .into_iter()
            .enumerate()
            .map(|(i, name)| FeatureState {
                name,
                changeable: bit(0, i),
                requested: bit(1, i),
                active: bit(2, i),
            })
            .collect())
    }

    /// Requests every feature named in `changes` to the given state in one
    /// `ETHTOOL_SFEATURES`, then reads back and names those that did not follow.
    fn apply(
        &self,
        op: &'static str,
        current: &[FeatureState],
        changes: &[(usize, bool)],
    ) -> Result<Vec<FeatureState>, EthtoolError> {
        if changes.is_empty() {
            return Ok(current.to_vec());
        }
        let blocks = current.len().div_ceil(32);
        // struct ethtool_sfeatures { u32 cmd; u32 size; struct { u32 valid; u32
        // requested; } features[size]; }
        let mut buf = vec![0u8; 8 + blocks * 8];
        wr_u32(&mut buf, 0, ETHTOOL_SFEATURES);
        wr_u32(&mut buf, 4, blocks as u32);
        for &(i, on) in changes {
            let off = 8 + (i / 32) * 8;
            let mask = 1u32 << (i % 32);
            let valid = rd_u32(&buf, off).unwrap_or(0) | mask;
            wr_u32(&mut buf, off, valid);
            let req = rd_u32(&buf, off + 4).unwrap_or(0);
            wr_u32(&mut buf, off + 4, if on { req | mask } else { req & !mask });
        }
        // A positive return only says some request was not fully honoured; the
        // read-back below is the judge.
        self.ioctl(op, &mut buf)?;
        self.features()
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

fn summarize(features: &[FeatureState]) -> Offloads {
    let mut out = Offloads::default();
    for f in ALL_FEATURES {
        out.set(f, features.iter().any(|s| s.active && f.covers(&s.name)));
    }
    out
}

/// `ETHTOOL_GCHANNELS`.
const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// The number of receive queues of `ifname` an AF_XDP socket can bind to (in the
/// calling thread's netns): `rx + combined` channels as `ethtool -l` reports them, at
/// least 1. A driver without the channels call (`EOPNOTSUPP`) has the queues
/// `/sys/class/net/IF/queues/rx-*` lists, or 1.
pub fn rx_queues(ifname: &str) -> Result<u32, EthtoolError> {
    const OP: &str = "read channels";
    let e = Ethtool::open(ifname)?;
    // struct ethtool_channels: cmd, max_rx, max_tx, max_other, max_combined,
    // rx_count, tx_count, other_count, combined_count.
    let mut buf = [0u8; 36];
    wr_u32(&mut buf, 0, ETHTOOL_GCHANNELS);
    match e.ioctl(OP, &mut buf) {
        Ok(()) => {
            let rx = rd_u32(&buf, 20).unwrap_or(0);
            let combined = rd_u32(&buf, 32).unwrap_or(0);
            Ok(rx.saturating_add(combined).max(1))
        }
        Err(EthtoolError::Ioctl { source, .. })
            if source.raw_os_error() == Some(libc::EOPNOTSUPP) =>
        {
            let dir = format!("/sys/class/net/{ifname}/queues");
            let n = std::fs::read_dir(dir)
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                        .count()
                })
                .unwrap_or(0);
            Ok(u32::try_from(n).unwrap_or(u32::MAX).max(1))
        }
        Err(err) => Err(err),
    }
}

/// Every kernel feature of `ifname` (in the calling thread's netns) by name, like
/// `ethtool -k` with all sub-features.
pub fn list_features(ifname: &str) -> Result<Vec<FeatureState>, EthtoolError> {
    Ethtool::open(ifname)?.features()
}

/// Reads the five offload switches of `ifname` (in the calling thread's netns).
pub fn get_offloads(ifname: &str) -> Result<Offloads, EthtoolError> {
    Ok(summarize(&Ethtool::open(ifname)?.features()?))
}

/// Sets the five offload switches of `ifname` to `want` (in the calling thread's
/// netns): every changeable kernel feature of a switch's group is requested on or
/// off. Fails with [`EthtoolError::NotApplied`] when a switch then does not read back
/// as wanted (a fixed feature, or a dependency such as TSO needing checksumming).
pub fn set_offloads(ifname: &str, want: &Offloads) -> Result<(), EthtoolError> {
    const OP: &str = "set offloads";
    let eth = Ethtool::open(ifname)?;
    let current = eth.features()?;
    let mut changes = Vec::new();
    for (i, s) in current.iter().enumerate() {
        if let Some(f) = ALL_FEATURES.iter().find(|f| f.covers(&s.name)) {
            let on = want.get(*f);
            if s.changeable && (s.requested != on || s.active != on) {
                changes.push((i, on));
            }
        }
    }
    let after = eth.apply(OP, &current, &changes)?;
    let have = summarize(&after);
    for on in [true, false] {
        let wrong: Vec<&str> = ALL_FEATURES
            .into_iter()
            .filter(|f| want.get(*f) == on && have.get(*f) != on)
            .map(Feature::name)
            .collect();
        if !wrong.is_empty() {
            return Err(EthtoolError::NotApplied {
                op: OP,
                ifname: ifname.to_owned(),
                features: wrong.join(", "),
                on,
            });
        }
    }
    Ok(())
}

/// Whether `prepare_pod_interface` turns the kernel feature `name` off: every
/// transmit checksum, scatter-gather and segmentation offload (TCP, UDP, tunnels,
/// SCTP, fraglist), i.e. everything that lets a frame leave the pod incomplete or
/// larger than the MTU.
fn is_pod_tx_offload(name: &str) -> bool {
    name.starts_with("tx-checksum-")
        || name.starts_with("tx-scatter-gather")
        || (name.starts_with("tx-") && name.ends_with("segmentation"))
        || name == "tx-gso-list"
}

/// Makes a pod's interface hand the AF_XDP dataplane only complete frames: call it
/// from inside the pod's network namespace on the pod end of its veth (`eth0`).
///
/// Why: by default a veth advertises checksum offload, scatter-gather and TSO/GSO,
/// so the pod's stack never finishes its work: TCP and UDP packets leave with
/// `CHECKSUM_PARTIAL` (only the pseudo-header sum in the checksum field, the rest left
/// to "hardware") and TCP sends GSO super-frames of up to 64 KiB. Between two veths in
/// the kernel that is fine, because the skb carries the metadata that says "checksum
/// still to do" and "segment me". An XDP program on the host end and an AF_XDP socket
/// in copy mode see only the raw bytes, without that metadata: the dataplane would
/// forward frames with wrong TCP/UDP checksums (the receiver drops them) and frames
/// bigger than the MTU (which cannot be put on the wire or into a VXLAN tunnel), and
/// TCP between pods stalls.
///
/// What: turns off every changeable transmit checksum, scatter-gather and
/// segmentation offload of the interface (`tx-checksumming`, `scatter-gather`,
/// `tcp-segmentation-offload` including `tx-tcp-accecn-segmentation`,
/// `generic-segmentation-offload`, UDP/tunnel/SCTP segmentation). With checksum
/// offload off the kernel also masks every GSO feature per packet at transmit, so TCP
/// (which builds GSO packets internally whatever the device says) has them segmented
/// and fully checksummed in software before they reach the veth. Receive offload
/// (GRO) is left alone: it does not affect what the pod sends. Idempotent. Reads the
/// features back and fails with [`EthtoolError::NotApplied`] naming any checksum or
/// segmentation feature that is still active.
pub fn prepare_pod_interface(ifname: &str) -> Result<(), EthtoolError> {
    const OP: &str = "prepare pod interface";
    let eth = Ethtool::open(ifname)?;
    let current = eth.features()?;
    let changes: Vec<(usize, bool)> = current
        .iter()
        .enumerate()
        .filter(|(_, s)| s.changeable && is_pod_tx_offload(&s.name) && (s.requested || s.active))
        .map(|(i, _)| (i, false))
        .collect();
    let after = eth.apply(OP, &current, &changes)?;
    let still_on: Vec<&str> = after
        .iter()
        .filter(|s| s.active && is_pod_tx_offload(&s.name))
        .map(|s| s.name.as_str())
        .collect();
    if !still_on.is_empty() {
        return Err(EthtoolError::NotApplied {
            op: OP,
            ifname: ifname.to_owned(),
            features: still_on.join(", "),
            on: false,
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
    }

    #[test]
    fn feature_groups_match_ethtool_names() {
        assert!(Feature::Tso.covers("tx-tcp-segmentation"));
        assert!(Feature::Tso.covers("tx-tcp6-segmentation"));
        assert!(Feature::Tso.covers("tx-tcp-accecn-segmentation"));
        assert!(!Feature::Tso.covers("tx-udp-segmentation"));
        assert!(Feature::TxChecksum.covers("tx-checksum-ip-generic"));
        assert!(!Feature::TxChecksum.covers("rx-checksum"));
        assert!(Feature::Gso.covers("tx-generic-segmentation"));
        assert!(is_pod_tx_offload("tx-udp-segmentation"));
        assert!(is_pod_tx_offload("tx-gso-list"));
        assert!(!is_pod_tx_offload("rx-gro"));
        assert!(!is_pod_tx_offload("tx-vlan-hw-insert"));
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
        assert!(text.contains("count features"), "{text}");
        assert!(text.contains("xs-no-such-if"), "{text}");
    }

    #[test]
    fn loopback_offloads_are_readable() {
        // lo exists in every namespace and reports its feature names.
        let features = list_features("lo").expect("read lo features");
        assert!(features.iter().any(|f| f.name == "tx-generic-segmentation"));
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
