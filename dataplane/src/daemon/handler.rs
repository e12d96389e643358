//! The control socket's [`Handler`] for the [`Daemon`]: decodes nothing (the server
//! did), dispatches each request to the daemon, encodes the answer as JSON. Errors
//! arrive here already typed by the module that refused the request and leave through
//! that module's one conversion into the protocol's error kind and message.

use serde::Serialize;

use crate::control::proto::{
    ControlError, Endpoint, ErrorKind, Handler, IpamAllocation, IpamReleased, PolicyApplied,
    PolicyRequest, Request,
};

use super::{policy, Daemon};

/// An answer that could not be encoded (never expected: every answer is plain data).
#[derive(Debug, thiserror::Error)]
#[error("encode result: {0}")]
pub struct EncodeError(#[from] serde_json::Error);

impl From<EncodeError> for ControlError {
    fn from(e: EncodeError) -> Self {
        ControlError::new(ErrorKind::System, e.to_string())
    }
}

fn to_json(v: impl Serialize) -> Result<serde_json::Value, ControlError> {
    serde_json::to_value(v).map_err(|e| EncodeError(e).into())
}

impl Handler for Daemon {
    fn handle(&mut self, request: Request) -> Result<serde_json::Value, ControlError> {
        match request {
            Request::EndpointAdd(spec) => {
                // Durable before it returns (or refused and undone).
                to_json(self.add_endpoint(spec)?)
            }
            Request::EndpointDel { ifname, ip } => to_json(self.del_endpoint(ifname, ip)?),
            Request::EndpointList => {
                let eps: Vec<&Endpoint> = self.endpoints.iter().collect();
                to_json(eps)
            }
            Request::Stats => to_json(self.stats()),
            Request::Status => to_json(self.status()),
            Request::EndpointCheck { ifname } => to_json(self.endpoint_check(&ifname)?),
            Request::IpamAllocate {
                container_id,
                ifname,
                ip,
            } => to_json(self.ipam_allocate(&container_id, &ifname, ip)?),
            Request::IpamRelease {
                container_id,
                ifname,
            } => {
                let released = self.ipam.release(&container_id, &ifname)?;
                if let Some(ip) = released {
                    tracing::info!(%ip, container_id, ifname, "address released");
                }
                to_json(IpamReleased { released })
            }
            Request::IpamList => {
                let list: Vec<IpamAllocation> = self
                    .ipam
                    .list()
                    .into_iter()
                    .map(|a| IpamAllocation {
                        ip: a.ip,
                        container_id: a.container_id,
                        ifname: a.ifname,
                    })
                    .collect();
                to_json(list)
            }
        }
    }

    fn handle_policy(&mut self, request: PolicyRequest) -> Result<serde_json::Value, ControlError> {
        match request {
            PolicyRequest::PolicyApply { yaml, file } => {
                let (summary, gen) = self.change_policy(|s| match &file {
                    Some(f) => s.apply_yaml_named(&yaml, f),
                    None => s.apply_yaml(&yaml),
                })?;
                let applied = policy::applied(summary, gen);
                tracing::info!(created = ?applied.created, configured = ?applied.configured, generation = gen, "policy applied");
                to_json(applied)
            }
            PolicyRequest::PolicyDelete { namespace, name } => {
                let (np, gen) = self.change_policy(|s| s.delete(&namespace, &name))?;
                self.policy.forget_dir_policy(&namespace, &name);
                tracing::info!(policy = %format!("{namespace}/{name}"), generation = gen, "policy deleted");
                to_json(PolicyApplied {
                    deleted: vec![format!(
                        "NetworkPolicy {}/{}",
                        np.metadata.namespace, np.metadata.name
                    )],
                    generation: gen,
                    ..PolicyApplied::default()
                })
            }
            PolicyRequest::PolicyList => to_json(self.policy.list()),
            PolicyRequest::PodLabel {
                namespace,
                name,
                labels,
                remove,
                replace,
                overwrite,
            } => to_json(self.pod_label(namespace, name, labels, remove, replace, overwrite)?),
            PolicyRequest::Trace {
                from,
                to,
                port,
                protocol,
            } => to_json(self.trace(&from, &to, port, protocol)?),
        }
    }

    fn tick(&mut self) {
        self.housekeeping();
    }
}
