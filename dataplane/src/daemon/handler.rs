//! The control socket's [`Handler`] for the [`Daemon`]: decodes nothing (the server
//! did), dispatches each request to the daemon, encodes the answer as JSON. Errors
//! arrive here already typed by the module that refused the request and leave through
//! that module's one conversion into the protocol's error kind and message.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::control::proto::{
    ControlError, ErrorKind, Handler, IpamAllocation, IpamReleased, PolicyApplied, PolicyRequest,
    Request,
};

use super::{policy, Daemon};
use crate::metrics::{Exporter, Sample};

/// An answer that could not be encoded (never expected: every answer is plain data).
#[derive(Debug, thiserror::Error)]
#[error("encode result: {0}")]
pub struct EncodeError(#[from] serde_json::Error);

impl From<EncodeError> for ControlError {
    fn from(e: EncodeError) -> Self {
        ControlError::new(ErrorKind::System, e.to_string())
    }
}

/// How often the control thread publishes a metrics sample.
pub const METRICS_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// The daemon's side of the metrics endpoint: the exporter it publishes into.
#[derive(Debug)]
pub struct MetricsHook {
    exporter: Arc<Exporter>,
    last: Option<Instant>,
}

impl Daemon {
    /// Publish a metrics sample into `exporter` from now on (about once a second, from
    /// the control thread's tick).
    pub fn attach_metrics(&mut self, exporter: Arc<Exporter>) {
        self.metrics = Some(MetricsHook {
            exporter,
            last: None,
        });
        self.publish_metrics();
    }

    fn publish_metrics(&mut self) {
        let due = match &self.metrics {
            None => return,
            Some(h) => h
                .last
                .is_none_or(|t| t.elapsed() >= METRICS_SAMPLE_INTERVAL),
        };
        if !due {
            return;
        }
        let sample = Sample {
            stats: self.stats(),
            status: serde_json::to_value(self.status()).unwrap_or_default(),
            persist_errors: self.health.status(Vec::new()).errors,
            datastore: self.datastore_healthy(),
            taken: Instant::now(),
        };
        if let Some(h) = &mut self.metrics {
            h.exporter.publish(sample);
            h.last = Some(Instant::now());
        }
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
            Request::EndpointList => to_json(self.endpoint_entries()),
            Request::Stats => to_json(self.stats()),
            Request::Status => {
                // Clients waiting for a policy generation poll this.
                self.install_compiled_policy();
                to_json(self.status())
            }
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
        self.install_compiled_policy();
        match request {
            PolicyRequest::PolicyApply { yaml, file } => {
                if let Some(r) = self.cluster_policy_apply(&yaml, file.as_deref()) {
                    return to_json(r?);
                }
                let (summary, gen) = self.change_policy(|s| match &file {
                    Some(f) => s.apply_yaml_named(&yaml, f),
                    None => s.apply_yaml(&yaml),
                })?;
                let applied = policy::applied(summary, gen);
                tracing::info!(created = ?applied.created, configured = ?applied.configured, policy_generation = gen.policy, "policy applied (durable; compiling)");
                to_json(applied)
            }
            PolicyRequest::PolicyDelete { namespace, name } => {
                if let Some(r) = self.cluster_policy_delete(&namespace, &name) {
                    return to_json(r?);
                }
                let (np, gen) = self.change_policy(|s| s.delete(&namespace, &name))?;
                self.policy.forget_dir_policy(&namespace, &name);
                tracing::info!(policy = %format!("{namespace}/{name}"), policy_generation = gen.policy, "policy deleted (durable; compiling)");
                to_json(PolicyApplied {
                    deleted: vec![format!(
                        "NetworkPolicy {}/{}",
                        np.metadata.namespace, np.metadata.name
                    )],
                    generation: gen.tables,
                    policy_generation: gen.policy,
                    in_force: gen.in_force,
                    ..PolicyApplied::default()
                })
            }
            PolicyRequest::PolicyList => to_json(self.policy_list()),
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
            PolicyRequest::NodeList => to_json(self.node_list()),
        }
    }

    fn tick(&mut self) {
        self.housekeeping();
        self.publish_metrics();
    }

    /// The client of an ADD went away before its answer: the CNI runtime saw it fail
    /// and will not use what it created, so undo it — the endpoint this request
    /// attached (same host ifname and address), and the attachment's address unless a
    /// live endpoint forwards for it.
    fn abandoned(&mut self, request: &Request, result: &serde_json::Value) {
        let release = |d: &mut Daemon, container_id: &str, ifname: &str, ip: Ipv4Addr| {
            let held = d
                .ipam
                .list()
                .into_iter()
                .any(|a| a.container_id == container_id && a.ifname == ifname && a.ip == ip);
            if !held || d.endpoints.iter().any(|e| e.ip == ip) {
                return;
            }
            match d.ipam.release(container_id, ifname) {
                Ok(_) => {
                    tracing::warn!(%ip, container_id, ifname, "client gone before its answer: address released")
                }
                Err(e) => tracing::error!(error = %e, %ip, "undo abandoned ADD: release address"),
            }
        };
        match request {
            Request::EndpointAdd(spec) => {
                if self
                    .endpoints
                    .get(&spec.ifname)
                    .is_some_and(|e| e.ip == spec.ip)
                {
                    match self.del_endpoint(Some(spec.ifname.clone()), None) {
                        Ok(ep) => {
                            tracing::warn!(ifname = %ep.ifname, ip = %ep.ip, "client gone before its answer: endpoint removed")
                        }
                        Err(e) => {
                            tracing::error!(error = %e.message, "undo abandoned ADD: remove endpoint")
                        }
                    }
                }
                if let Some(cni) = &spec.cni {
                    release(self, &cni.container_id, &cni.ifname, spec.ip);
                }
            }
            Request::IpamAllocate {
                container_id,
                ifname,
                ..
            } => {
                let ip = result
                    .get("ip")
                    .and_then(|v| v.as_str())
                    .and_then(|s| s.parse::<Ipv4Addr>().ok());
                if let Some(ip) = ip {
                    release(self, container_id, ifname, ip);
                }
            }
            _ => {}
        }
    }
}
