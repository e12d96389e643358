//! Everything that talks to the kernel outside the AF_XDP rings: rtnetlink
//! ([`netlink`]), ethtool ioctls ([`ethtool`]), network namespaces ([`netns`]), sysctl
//! files ([`write_sysctl`]), nf_tables rule sets ([`nft`]: pod egress masquerade),
//! termination signals ([`signal`]) and processes
//! ([`process`]). A crate of its own so the CNI plugin reaches the kernel without
//! linking libxdp or libbpf; the dataplane re-exports it as `xsknet_dataplane::sys`.
//! Together with the dataplane's `xsk/`, this is the workspace's only room for
//! `unsafe` and FFI; every block says why it is sound. Every kernel object is reached
//! through netlink, an ioctl or `/proc/sys`, never by running `ip`/`ethtool`/`sysctl`.
//!
//! Kernel state is per network namespace and a namespace belongs to a thread, so each
//! call works on the namespace of the thread (or socket) it runs on; use
//! [`netns::run_in_netns`] to work inside a pod.

#![allow(unsafe_code)]

pub mod ethtool;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod process;
pub mod signal;

use std::io;
use std::path::{Component, Path, PathBuf};

/// Failure to read or write a sysctl.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// The key is not a plain relative path under `/proc/sys`.
    #[error("sysctl {key}: invalid key (want a relative path like net/ipv4/conf/eth0/proxy_arp)")]
    InvalidKey {
        /// The key given.
        key: String,
    },
    /// The write was refused (missing key, bad value, permissions).
    #[error("write {value:?} to sysctl {key}: {source}")]
    Write {
        /// The key written.
        key: String,
        /// The value written.
        value: String,
        /// The write failure.
        source: io::Error,
    },
    /// The read failed.
    #[error("read sysctl {key}: {source}")]
    Read {
        /// The key read.
        key: String,
        /// The read failure.
        source: io::Error,
    },
}

/// Resolves `key` (`net/ipv4/conf/eth0/forwarding`, relative to `/proc/sys`, slash
/// separated because interface names may contain dots) to its file, refusing
/// absolute paths and `..`.
fn sysctl_path(key: &str) -> Result<PathBuf, SysctlError> {
    let rel = Path::new(key);
    let plain = !key.is_empty()
        && !key.contains('\0')
        && rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain {
        return Err(SysctlError::InvalidKey {
            key: key.to_owned(),
        });
    }
    Ok(Path::new("/proc/sys").join(rel))
}

/// Writes `value` to the sysctl `key` (relative to `/proc/sys`, e.g.
/// `net/ipv4/conf/xsknet0/proxy_arp`). `net/` keys belong to the network namespace
/// of the calling thread, so inside `run_in_netns` this sets the pod's value.
pub fn write_sysctl(key: &str, value: &str) -> Result<(), SysctlError> {
    let path = sysctl_path(key)?;
    std::fs::write(&path, value.as_bytes()).map_err(|source| SysctlError::Write {
        key: key.to_owned(),
        value: value.to_owned(),
        source,
    })
}

/// Reads the sysctl `key` (relative to `/proc/sys`), trailing newline removed.
pub fn read_sysctl(key: &str) -> Result<String, SysctlError> {
    let path = sysctl_path(key)?;
    let text = std::fs::read_to_string(&path).map_err(|source| SysctlError::Read {
        key: key.to_owned(),
        source,
    })?;
    Ok(text.trim_end_matches('\n').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_keys_stay_under_proc_sys() {
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.100/forwarding").unwrap(),
            Path::new("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
        for bad in ["", "/etc/passwd", "net/../../etc/passwd", "./net", "a\0b"] {
            assert!(sysctl_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn read_existing_sysctl() {
        let v = read_sysctl("net/ipv4/ip_forward").expect("ip_forward readable");
        assert!(v == "0" || v == "1", "{v:?}");
    }

    #[test]
    fn missing_sysctl_names_key() {
        let err = write_sysctl("net/ipv4/conf/xs-none/forwarding", "1").unwrap_err();
        assert!(err.to_string().contains("net/ipv4/conf/xs-none/forwarding"));
    }
}
