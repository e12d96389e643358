//! GC: release every attachment not in `cni.dev/valid-attachments`: its endpoint, its
//! veth and its address (daemon IPAM), then the IPAM plugin's GC when delegating
//! (skipped for plugins predating CNI 1.1). Runs under the exclusive plugin lock, so no
//! ADD is halfway through while it decides what is stale. Only endpoints the CNI plugin
//! created (they carry their attachment) are considered: endpoints an operator added by
//! hand with `xsknetctl` are not GC's to remove.

use std::collections::BTreeSet;

use xsknet_proto::wire::{Endpoint, IpamAllocation, Request};

use super::Call;
use crate::config::Attachment;
use crate::errors::{code, CniError};

pub fn run(c: &Call<'_>) -> Result<(), CniError> {
    let valid: BTreeSet<Attachment> = c
        .conf
        .valid_attachments
        .as_ref()
        .ok_or_else(|| CniError::invalid_config("GC needs cni.dev/valid-attachments"))?
        .iter()
        .cloned()
        .collect();
    let _lock = c.lock(true)?;
    let is_valid = |cid: &str, ifname: &str| {
        valid.contains(&Attachment {
            container_id: cid.to_string(),
            ifname: ifname.to_string(),
        })
    };
    let v = c.daemon(&Request::EndpointList, "list endpoints", code::DATAPLANE)?;
    let eps: Vec<Endpoint> = serde_json::from_value(v).map_err(|e| {
        CniError::new(
            code::DATAPLANE,
            format!("unexpected endpoint_list result: {e}"),
        )
    })?;
    let mut first_err: Option<CniError> = None;
    for ep in eps {
        let Some(att) = &ep.cni else { continue };
        if is_valid(&att.container_id, &att.ifname) {
            continue;
        }
        let del = Request::EndpointDel {
            ifname: Some(ep.ifname.clone()),
            ip: None,
        };
        if let Err(e) = c.daemon(
            &del,
            &format!("detach stale endpoint {}", ep.ifname),
            code::DATAPLANE,
        ) {
            first_err.get_or_insert(e);
        }
        if let Err(e) = c.platform.delete_host_link(&ep.ifname) {
            first_err.get_or_insert(super::wire_error(
                e,
                &format!("delete stale veth {}", ep.ifname),
            ));
        }
    }
    if c.conf.ipam_type.is_none() {
        let v = c.daemon(&Request::IpamList, "list address allocations", code::IPAM)?;
        let allocs: Vec<IpamAllocation> = serde_json::from_value(v)
            .map_err(|e| CniError::new(code::IPAM, format!("unexpected ipam_list result: {e}")))?;
        for a in allocs {
            if is_valid(&a.container_id, &a.ifname) {
                continue;
            }
            let rel = Request::IpamRelease {
                container_id: a.container_id.clone(),
                ifname: a.ifname.clone(),
            };
            if let Err(e) = c.daemon(&rel, &format!("release stale address {}", a.ip), code::IPAM) {
                first_err.get_or_insert(e);
            }
        }
    } else if let Some(plugin) = &c.conf.ipam_type {
        match crate::ipam::delegate(c, plugin, "GC") {
            Ok(_) => {}
            Err(e) if e.code == code::INCOMPATIBLE_VERSION || e.code == code::INVALID_ENV => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
