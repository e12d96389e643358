//! Pod egress masquerade (flannel's `ipMasq`): the daemon's nf_tables table, written
//! over netlink through [`crate::sys::nft`] (never by running `nft`).
//!
//! Contract: with `masquerade.enabled` (the default) the daemon installs, at every
//! start, the table `masquerade.table` (family `ip`) that masquerades traffic from
//! the cluster CIDR to anywhere outside it (pod → pod, on any node, keeps its source;
//! multicast keeps its source), excluding `clusterCidr`, or in static mode this node's
//! `podCidr`. The install replaces the table atomically in one nf_tables batch, so a
//! restarted daemon never stacks rules and never leaves a gap.
//!
//! Lifetime (the flannel choice): the table outlives the daemon process. A clean
//! shutdown or a crash leaves it in place, so a daemon restart (upgrade, rolling
//! DaemonSet update) never interrupts pod egress; the next start replaces it. It is
//! removed when the operator turns masquerade off (the next start removes it) and by
//! `xsknetd uninstall-cni` (the node leaves the network).
//!
//! Control path only (start, uninstall); nothing here runs per packet.

use crate::config::Config;
use crate::sys::nft::{self, MasqSpec, NftError, Prefix};

/// What [`apply`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The table is installed, masquerading everything from `exclude` to outside it.
    Installed { table: String, exclude: String },
    /// Masquerade is off: the table is gone.
    Removed { table: String },
}

/// The nf_tables description of `cfg`'s masquerade.
pub fn spec(cfg: &Config) -> MasqSpec {
    let c = cfg.masquerade_exclude();
    MasqSpec {
        table: cfg.masquerade.table.clone(),
        // Validated config: the prefix is at most 32.
        cluster_cidr: Prefix::new(c.addr, c.prefix).unwrap_or(Prefix {
            addr: c.addr,
            len: 32,
        }),
    }
}

/// Install (enabled) or remove (disabled) the table, at daemon start.
pub fn apply(cfg: &Config) -> Result<Applied, NftError> {
    let table = cfg.masquerade.table.clone();
    if cfg.masquerade.enabled {
        nft::install_masquerade(&spec(cfg))?;
        Ok(Applied::Installed {
            table,
            exclude: cfg.masquerade_exclude().to_string(),
        })
    } else {
        nft::remove_table(&table)?;
        Ok(Applied::Removed { table })
    }
}

/// Remove the table whatever the switch says (`uninstall-cni`). Absent is fine.
pub fn remove(cfg: &Config) -> Result<(), NftError> {
    nft::remove_table(&cfg.masquerade.table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exclusion_is_the_cluster_cidr_else_the_node_pod_cidr() {
        let mut cfg = Config {
            pod_cidr: "10.244.3.0/24".parse().unwrap(),
            ..Config::default()
        };
        let s = spec(&cfg);
        assert_eq!(s.table, "xsknet");
        assert_eq!(
            (s.cluster_cidr.addr.to_string(), s.cluster_cidr.len),
            ("10.244.3.0".to_string(), 24)
        );
        cfg.cluster_cidr = Some("10.244.0.0/16".parse().unwrap());
        cfg.masquerade.table = "other".into();
        let s = spec(&cfg);
        assert_eq!(s.table, "other");
        assert_eq!(
            (s.cluster_cidr.addr.to_string(), s.cluster_cidr.len),
            ("10.244.0.0".to_string(), 16)
        );
    }
}
