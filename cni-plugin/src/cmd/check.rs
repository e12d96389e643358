//! CHECK: the attachment is still as ADD left it. The pod interface exists in the
//! netns, is up, carries the address of `prevResult` (a /32) and the MAC it reported,
//! has the gateway and default routes, and `xsknetd` forwards for it (endpoint
//! attached, same address, its worker on the current tables). A delegated IPAM plugin
//! is asked too. The first difference found is the error (code 101) and says exactly
//! what is wrong where; a vanished netns is code 3 (unknown container).

use std::net::Ipv4Addr;
use std::path::Path;

use xsknet_proto::client::ClientError;
use xsknet_proto::wire::{EndpointCheck, ErrorKind, Request, POD_GATEWAY};

use super::{wire_error, Call};
use crate::errors::{code, CniError};
use crate::result::Parsed;

fn failed(msg: String) -> CniError {
    CniError::new(code::CHECK_FAILED, msg)
}

pub fn run(c: &Call<'_>) -> Result<(), CniError> {
    let _lock = c.lock(false)?;
    let prev = c.conf.prev_result.as_ref().ok_or_else(|| {
        CniError::invalid_config("CHECK needs prevResult (the result ADD returned)")
    })?;
    let prev = Parsed::from_value(prev);
    let sandbox_idx = prev
        .interfaces
        .iter()
        .position(|(name, _, sandbox)| *name == c.env.ifname && sandbox.is_some());
    let expected_ip: Ipv4Addr = prev
        .ips
        .iter()
        .find(|(_, _, i)| sandbox_idx.is_none() || *i == sandbox_idx)
        .map(|(ip, _, _)| *ip)
        .ok_or_else(|| {
            CniError::invalid_config("CHECK: prevResult lists no IPv4 address for the pod")
        })?;
    let ifname = &c.env.ifname;
    let netns = &c.env.netns;
    let view = c
        .platform
        .inspect_pod(Path::new(netns), ifname)
        .map_err(|e| wire_error(e, "CHECK"))?
        .ok_or_else(|| failed(format!("interface {ifname} does not exist in {netns}")))?;
    if !view.up {
        return Err(failed(format!("interface {ifname} in {netns} is down")));
    }
    if !view.addresses.contains(&(expected_ip, 32)) {
        let have: Vec<String> = view
            .addresses
            .iter()
            .map(|(a, p)| format!("{a}/{p}"))
            .collect();
        return Err(failed(format!(
            "pod address {expected_ip}/32 is missing from {ifname} in {netns} (it has: [{}])",
            have.join(", ")
        )));
    }
    if let Some((_, Some(mac), _)) = sandbox_idx.and_then(|i| prev.interfaces.get(i)) {
        if !mac.eq_ignore_ascii_case(&view.mac) {
            return Err(failed(format!(
                "{ifname} in {netns} has MAC {} but ADD reported {mac}",
                view.mac
            )));
        }
    }
    let wanted = [
        (POD_GATEWAY, 32u8, None),
        (Ipv4Addr::UNSPECIFIED, 0u8, Some(POD_GATEWAY)),
    ];
    for (dst, prefix, gw) in wanted {
        if !view.routes.contains(&(dst, prefix, gw)) {
            let via = gw.map(|g| format!(" via {g}")).unwrap_or_default();
            return Err(failed(format!(
                "route {dst}/{prefix}{via} dev {ifname} is missing in {netns}"
            )));
        }
    }
    let host = c.host_ifname();
    let check = Request::EndpointCheck {
        ifname: host.clone(),
    };
    let v = match c
        .platform
        .daemon_call(&c.conf.socket, &check, super::DAEMON_TIMEOUT)
    {
        Ok(v) => v,
        Err(ClientError::Daemon {
            kind: ErrorKind::NotFound,
            message,
        }) => {
            return Err(failed(format!(
                "xsknetd does not forward for {host}: {message}"
            )))
        }
        Err(e) => return Err(c.daemon_error(&e, "check the endpoint", code::CHECK_FAILED)),
    };
    let ep: EndpointCheck = serde_json::from_value(v)
        .map_err(|e| failed(format!("unexpected endpoint_check result: {e}")))?;
    if ep.endpoint.ip != expected_ip {
        return Err(failed(format!(
            "xsknetd forwards {} to {host}, but the pod has {expected_ip}",
            ep.endpoint.ip
        )));
    }
    if let Some(plugin) = &c.conf.ipam_type {
        crate::ipam::delegate(c, plugin, "CHECK")?;
    }
    Ok(())
}
