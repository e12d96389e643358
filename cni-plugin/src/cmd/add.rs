//! ADD: address → veth → endpoint, then the result. Each step that succeeded is undone
//! in reverse order if a later one fails (endpoint, veth, address — a delegated IPAM
//! plugin gets its DEL), so a failed ADD leaves nothing behind. The result is printed
//! only after `xsknetd` answered `endpoint_add`, which it does once the owning worker
//! runs on tables containing the pod: when the runtime sees the result, the dataplane
//! forwards for the pod.

use std::path::PathBuf;

use serde_json::Value;
use xsknet_proto::wire::{CniAttachment, EndpointSpec, Request, POD_GATEWAY};

use super::{wire_error, Call};
use crate::errors::{code, CniError};
use crate::ipam;
use crate::result::{CniResult, Interface, IpConfig, Route};
use crate::wire::{LinkPlan, LocalRoutes};

pub fn run(c: &Call<'_>) -> Result<Value, CniError> {
    let _lock = c.lock(false)?;
    let host = c.host_ifname();
    let requested_ip = match c.env.requested_ip()? {
        Some(ip) => Some(ip),
        None => c.conf.runtime_ips.first().copied(),
    };
    let mac = match c.env.requested_mac()? {
        Some(m) => Some(m),
        None => c.conf.runtime_mac,
    };
    // A second ADD of a live attachment must fail without tearing the first one down.
    let exists = c
        .platform
        .host_link_exists(&host)
        .map_err(|e| wire_error(e, "look for an existing veth"))?;
    if exists {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!(
                "container {} interface {} is already attached (host veth {host} exists); DEL it first",
                c.env.container_id, c.env.ifname
            ),
        ));
    }

    let allocated = ipam::allocate(c, requested_ip)?;
    let release = || {
        if let Err(e) = ipam::release(c) {
            eprintln!("xsknet: rollback: {e}");
        }
    };
    let mtus = c.mtus();
    let mtu = mtus.local.map_or(mtus.pod, |l| l.0);
    let plan = LinkPlan {
        host_ifname: host.clone(),
        ifname: c.env.ifname.clone(),
        netns: PathBuf::from(&c.env.netns),
        mac,
        mtu,
        local_routes: mtus.local.map(|(_, dst, prefix)| LocalRoutes {
            pod_cidr: (dst, prefix),
            default_mtu: mtus.pod,
        }),
        ip: allocated.ip,
        disable_ipv6: c.conf.disable_ipv6,
    };
    let link = match c.platform.create_pod_link(&plan) {
        Ok(l) => l,
        Err(e) => {
            release();
            return Err(wire_error(
                e,
                &format!(
                    "wire {} in {} (host veth {host})",
                    c.env.ifname, c.env.netns
                ),
            ));
        }
    };
    let spec = EndpointSpec {
        ifname: host.clone(),
        ip: allocated.ip,
        mac: Some(link.pod_mac.clone()),
        namespace: c.arg("K8S_POD_NAMESPACE"),
        name: c.arg("K8S_POD_NAME"),
        labels: c.conf.labels.clone(),
        cni: Some(CniAttachment {
            container_id: c.env.container_id.clone(),
            ifname: c.env.ifname.clone(),
            netns: Some(c.env.netns.clone()),
        }),
    };
    if let Err(e) = c.daemon(
        &Request::EndpointAdd(spec),
        &format!("attach {host} ({}) to the dataplane", allocated.ip),
        code::DATAPLANE,
    ) {
        // The daemon may have attached before a timeout: detach before the veth goes.
        let _ = c.daemon(
            &Request::EndpointDel {
                ifname: Some(host.clone()),
                ip: None,
            },
            "roll back the endpoint",
            code::DATAPLANE,
        );
        let _ = c.platform.delete_host_link(&host);
        release();
        return Err(e);
    }

    let result = CniResult {
        interfaces: vec![
            Interface {
                name: host,
                mac: link.host_mac,
                mtu,
                sandbox: None,
            },
            Interface {
                name: c.env.ifname.clone(),
                mac: link.pod_mac,
                mtu,
                sandbox: Some(c.env.netns.clone()),
            },
        ],
        ips: vec![IpConfig {
            address: allocated.ip,
            prefix: 32,
            gateway: Some(POD_GATEWAY),
            interface: Some(1),
        }],
        routes: vec![
            Route {
                dst: POD_GATEWAY,
                prefix: 32,
                gw: None,
                scope: Some(253),
            },
            Route {
                dst: std::net::Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                gw: Some(POD_GATEWAY),
                scope: None,
            },
        ]
        .into_iter()
        .chain(mtus.local.map(|(_, dst, prefix)| Route {
            dst,
            prefix,
            gw: Some(POD_GATEWAY),
            scope: None,
        }))
        .collect(),
        dns: allocated.dns,
    };
    Ok(result.to_value(&c.conf.cni_version))
}
