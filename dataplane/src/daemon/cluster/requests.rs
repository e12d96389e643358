//! Control requests served from the cluster view: `node list`, and `policy
//! apply`/`delete` written to etcd (module doc of [`super`]).

use std::time::{Duration, Instant};

use xsknet_proto::wire::{NodeInfo, NodeList};
use xsknet_proto::MacAddr;

use crate::cluster::records::{Record, RecordKey};
use crate::cluster::NodeRecord;
use crate::control::proto::{ControlError, ErrorKind, PolicyApplied};
use crate::daemon::{policy, Daemon};
use crate::policy::k8s::{self, Object};

impl Daemon {
    /// `node list`.
    pub(in crate::daemon) fn node_list(&self) -> NodeList {
        let skipped: Vec<(String, &'static str)> =
            self.overlay_tables().map(|t| t.skipped).unwrap_or_default();
        let info = |r: &NodeRecord, local: bool, alive: Option<bool>| NodeInfo {
            name: r.name.clone(),
            pod_cidr: r.pod_cidr.to_string(),
            underlay_ip: Some(r.underlay_ip),
            vtep_mac: r.vtep_mac.to_string(),
            vni: r.vni,
            port: r.vxlan_port,
            local,
            alive,
            unused: if local {
                None
            } else {
                skipped
                    .iter()
                    .find(|(n, _)| *n == r.name)
                    .map(|(_, why)| (*why).to_string())
            },
        };
        let mut nodes = Vec::new();
        match &self.cluster {
            Some(c) => {
                for r in c.view.nodes.values() {
                    nodes.push(info(r, r.name == c.name, Some(true)));
                }
                if !c.view.nodes.contains_key(&c.name) {
                    nodes.push(info(&c.local, true, Some(false)));
                }
            }
            None => {
                if let Some(up) = &self.uplink {
                    let me = NodeRecord {
                        name: self.cfg.node_name(),
                        pod_cidr: self.cfg.pod_cidr,
                        underlay_ip: up.ip,
                        vtep_mac: MacAddr(up.vtep_mac),
                        vni: up.vni,
                        vxlan_port: up.port,
                    };
                    nodes.push(info(&me, true, None));
                    for p in &up.peers {
                        nodes.push(info(p, false, None));
                    }
                }
            }
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        NodeList {
            datastore: self.datastore_status(),
            nodes,
        }
    }

    /// `policy apply` in datastore mode (None in static mode: the caller applies
    /// locally). Namespaces and NetworkPolicies go to etcd in one transaction; Pod
    /// documents are refused (pods come from the nodes that run them).
    pub(in crate::daemon) fn cluster_policy_apply(
        &mut self,
        yaml: &str,
        file: Option<&str>,
    ) -> Option<Result<PolicyApplied, ControlError>> {
        self.cluster.as_ref()?;
        Some(self.cluster_policy_apply_inner(yaml, file))
    }

    fn cluster_policy_apply_inner(
        &mut self,
        yaml: &str,
        file: Option<&str>,
    ) -> Result<PolicyApplied, ControlError> {
        let objects = k8s::parse_yaml(yaml, file).map_err(policy::PolicyRequestError::from)?;
        if let Some(p) = objects.iter().find(|o| matches!(o, Object::Pod(_))) {
            return Err(ControlError::new(
                ErrorKind::InvalidRequest,
                format!(
                    "{}: Pod documents are not written to the datastore (pods come from the nodes that run them); nothing written",
                    p.describe()
                ),
            ));
        }
        // The summary (and the all-or-nothing checks) as a local apply would give.
        let summary = self
            .policy
            .store()
            .clone()
            .apply_objects(objects.clone())
            .map_err(policy::PolicyRequestError::from)?;
        let puts: Vec<Record> = objects
            .into_iter()
            .filter_map(|o| match o {
                Object::Namespace(n) => Some(Record::Namespace(n)),
                Object::NetworkPolicy(p) => Some(Record::Policy(p)),
                Object::Pod(_) => None,
            })
            .collect();
        let rev = self.cluster_write(puts, Vec::new())?;
        // The watch brought the change back (cluster_write) and asked for its compile:
        // the newest policy generation carries it.
        let generation = self.change_generation(self.policy.requested());
        tracing::info!(created = ?summary.created, configured = ?summary.configured, revision = rev, policy_generation = generation.policy, "policy written to the datastore");
        Ok(policy::applied(summary, generation))
    }

    /// `policy delete` in datastore mode (None in static mode).
    pub(in crate::daemon) fn cluster_policy_delete(
        &mut self,
        namespace: &str,
        name: &str,
    ) -> Option<Result<PolicyApplied, ControlError>> {
        let c = self.cluster.as_ref()?;
        let key = (namespace.to_string(), name.to_string());
        if !c.view.policies.contains_key(&key) {
            return Some(Err(ControlError::new(
                ErrorKind::NotFound,
                format!("NetworkPolicy {namespace}/{name} not found in the datastore"),
            )));
        }
        let deleted = RecordKey::Policy {
            namespace: key.0,
            name: key.1,
        };
        Some(self.cluster_write(Vec::new(), vec![deleted]).map(|rev| {
            tracing::info!(policy = %format!("{namespace}/{name}"), revision = rev, "policy deleted from the datastore");
            let g = self.change_generation(self.policy.requested());
            PolicyApplied {
                deleted: vec![format!("NetworkPolicy {namespace}/{name}")],
                generation: g.tables,
                policy_generation: g.policy,
                in_force: g.in_force,
                ..PolicyApplied::default()
            }
        }))
    }

    /// One transaction; on success wait (bounded) until the watch brought it here.
    fn cluster_write(
        &mut self,
        puts: Vec<Record>,
        deletes: Vec<RecordKey>,
    ) -> Result<i64, ControlError> {
        let Some(c) = &self.cluster else {
            return Err(ControlError::new(ErrorKind::System, "no datastore"));
        };
        if !c.connected {
            return Err(ControlError::new(
                ErrorKind::Unavailable,
                format!(
                    "datastore unreachable ({}); nothing written",
                    c.last_error.as_deref().unwrap_or("not connected yet")
                ),
            ));
        }
        let super::Backend::Etcd(handle) = &c.handle else {
            return Err(ControlError::new(
                ErrorKind::InvalidRequest,
                "datastore type kubernetes: NetworkPolicies and Namespaces come from the Kubernetes API \
                 (kubectl apply/delete them); nothing written",
            ));
        };
        let rev = handle.write_batch(puts, deletes).map_err(|e| {
            ControlError::new(
                ErrorKind::Unavailable,
                format!("datastore write failed, nothing written: {e}"),
            )
        })?;
        let deadline = Instant::now() + Duration::from_secs(5);
        self.cluster_events(Some((rev, deadline)));
        Ok(rev)
    }
}
