//! Pod addresses: from `xsknetd` (the default, no `ipam` section) or from a delegated
//! IPAM plugin (`"ipam": {"type": "host-local", ...}`), run per the CNI spec: found in
//! `CNI_PATH`, given the same environment (with `CNI_COMMAND` set to the verb) and the
//! very network configuration the runtime sent on stdin.
//!
//! Either way the pod gets a /32 and routes via the link-local gateway: only the first
//! IPv4 address of a delegated result is used, its gateway and routes are not (the
//! result's routes are xsknet's). A delegated plugin's error is passed on with its own
//! code and message, prefixed with the plugin's name.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde_json::Value;
use xsknet_proto::wire::{IpamLease, Request};

use crate::cmd::Call;
use crate::errors::{code, CniError};

/// What ADD got from IPAM.
#[derive(Clone, Debug, PartialEq)]
pub struct Allocated {
    pub ip: Ipv4Addr,
    /// `dns` of a delegated result, passed through.
    pub dns: Option<Value>,
}

/// Finds plugin `name` in `CNI_PATH`.
pub fn find_plugin(c: &Call<'_>, name: &str) -> Result<PathBuf, CniError> {
    c.env
        .path
        .iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                code::IPAM,
                format!(
                    "IPAM plugin {name:?} not found in CNI_PATH ({})",
                    c.env
                        .path
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                ),
            )
        })
}

/// Runs the delegated IPAM plugin for `command`; returns its parsed stdout (`None`
/// when it printed nothing, as DEL/CHECK/GC/STATUS do).
pub fn delegate(c: &Call<'_>, plugin: &str, command: &str) -> Result<Option<Value>, CniError> {
    let path = find_plugin(c, plugin)?;
    let mut env: Vec<(String, String)> = c
        .raw_env
        .iter()
        .filter(|(k, _)| k.as_str() != "CNI_COMMAND")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.push(("CNI_COMMAND".to_string(), command.to_string()));
    let out = c
        .platform
        .exec_plugin(&path, &env, &c.conf.raw)
        .map_err(|e| {
            CniError::new(
                code::IPAM,
                format!("run IPAM plugin {}: {e}", path.display()),
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.success {
        let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        let (code, msg, details) = match &parsed {
            Some(v) => (
                v.get("code")
                    .and_then(Value::as_u64)
                    .unwrap_or(code::IPAM as u64) as u32,
                v.get("msg")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                v.get("details")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ),
            None => (
                code::IPAM,
                format!(
                    "{} {}",
                    text.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                String::new(),
            ),
        };
        return Err(
            CniError::new(code, format!("IPAM plugin {plugin} {command}: {msg}"))
                .with_details(details),
        );
    }
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(&out.stdout).map(Some).map_err(|e| {
        CniError::new(
            code::DECODE,
            format!("IPAM plugin {plugin} {command}: cannot decode its result: {e}"),
        )
    })
}

/// Allocates the pod's address.
pub fn allocate(c: &Call<'_>, requested: Option<Ipv4Addr>) -> Result<Allocated, CniError> {
    match &c.conf.ipam_type {
        None => {
            let req = Request::IpamAllocate {
                container_id: c.env.container_id.clone(),
                ifname: c.env.ifname.clone(),
                ip: requested,
            };
            let v = c.daemon(&req, "allocate an address", code::IPAM)?;
            let lease: IpamLease = serde_json::from_value(v).map_err(|e| {
                CniError::new(code::IPAM, format!("unexpected ipam_allocate result: {e}"))
            })?;
            Ok(Allocated {
                ip: lease.ip,
                dns: None,
            })
        }
        Some(plugin) => {
            let result = delegate(c, plugin, "ADD")?.ok_or_else(|| {
                CniError::new(
                    code::IPAM,
                    format!("IPAM plugin {plugin} ADD printed no result"),
                )
            })?;
            let ip = crate::result::first_ipv4(&result);
            let Some(ip) = ip else {
                // Give the address back before failing.
                let _ = delegate(c, plugin, "DEL");
                return Err(CniError::new(
                    code::IPAM,
                    format!("IPAM plugin {plugin} returned no IPv4 address (xsknet is IPv4-only)"),
                ));
            };
            Ok(Allocated {
                ip,
                dns: result.get("dns").cloned(),
            })
        }
    }
}

/// Releases the pod's address (idempotent on both sides).
pub fn release(c: &Call<'_>) -> Result<(), CniError> {
    match &c.conf.ipam_type {
        None => {
            let req = Request::IpamRelease {
                container_id: c.env.container_id.clone(),
                ifname: c.env.ifname.clone(),
            };
            c.daemon(&req, "release the address", code::IPAM).map(drop)
        }
        Some(plugin) => delegate(c, plugin, "DEL").map(drop),
    }
}
