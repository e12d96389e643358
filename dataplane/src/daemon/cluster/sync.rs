//! The view's events on the control thread, and what they change in the daemon:
//! the overlay's peers, the policy input, this node's pods in etcd (module doc of
//! [`super`]).

use std::time::Instant;

use xsknet_proto::wire::DatastoreStatus;

use super::saved::{write_json, SavedView};
use super::{remote_pods, Cluster, Touched, MAX_EVENTS_PER_TICK};
use crate::cluster::PodRecord;
use crate::control::proto::Endpoint;
use crate::daemon::Daemon;

impl Daemon {
    /// Apply the events waiting (module doc), then act on what they changed. With
    /// `until = Some((revision, deadline))`, also wait (bounded) until the view has
    /// reached `revision` (a write of this daemon's, to be in force when it answers).
    pub(in crate::daemon) fn cluster_events(&mut self, until: Option<(i64, Instant)>) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let mut touched = Touched::default();
        let mut n = 0;
        loop {
            let event = match until {
                Some((rev, deadline)) if c.view.revision < rev => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match c.events.recv_timeout(left) {
                        Ok(e) => e,
                        Err(_) => break,
                    }
                }
                _ if n >= MAX_EVENTS_PER_TICK => break,
                _ => match c.events.try_recv() {
                    Ok(e) => e,
                    Err(_) => break,
                },
            };
            n += 1;
            let t = Touched::of(&c.view, &event);
            touched.nodes |= t.nodes;
            touched.objects |= t.objects;
            c.note(&event);
            c.view.apply_event(&event);
        }
        if touched.nodes || touched.objects {
            write_json(&c.view_file, &SavedView::of(&c.view), "cluster view");
        }
        if touched.nodes {
            self.sync_peers();
        }
        if touched.objects {
            self.sync_policy_from_view();
        }
    }

    /// Housekeeping (every tick).
    pub(in crate::daemon) fn cluster_housekeeping(&mut self) {
        self.cluster_events(None);
        self.cluster_sync_local_identities();
    }

    /// The uplink's peers from the view; republish.
    fn sync_peers(&mut self) {
        let Some(c) = self.cluster.as_ref().filter(|c| c.synced) else {
            return;
        };
        let peers = c.peers();
        let Some(up) = self.uplink.as_mut() else {
            return;
        };
        if up.peers == peers {
            return;
        }
        tracing::info!(nodes = ?peers.iter().map(|p| (&p.name, p.pod_cidr.to_string())).collect::<Vec<_>>(), "cluster nodes changed");
        up.peers = peers;
        if let Err(e) = up.resolve(&mut self.nl) {
            tracing::warn!(error = %e, "resolve overlay next hops");
        }
        self.log_skipped_nodes();
        if let Err(e) = self.publish_and_wait() {
            tracing::error!(error = %e, "publish the overlay routes");
        }
    }

    /// The policy input from the view: other nodes' pods, Namespaces, NetworkPolicies.
    fn sync_policy_from_view(&mut self) {
        let Some(c) = self.cluster.as_ref().filter(|c| c.synced) else {
            return;
        };
        let remote = remote_pods(&c.view, &c.name, self.cfg.pod_cidr);
        let namespaces: Vec<_> = c.view.namespaces.values().cloned().collect();
        let policies: Vec<_> = c.view.policies.values().cloned().collect();
        let changed = match self.policy.apply(|s| {
            s.replace_cluster_objects(namespaces, policies);
            Ok(())
        }) {
            Ok(((), changed)) => changed,
            Err(e) => {
                tracing::error!(error = %e, "datastore policies not taken over");
                false
            }
        };
        let remote_changed = self.policy.set_remote_pods(remote);
        if changed || remote_changed {
            self.request_recompile();
        }
    }

    /// The one place a cluster change asks for the policy to be recompiled and
    /// published (so the compile can move to a thread of its own behind it).
    pub(in crate::daemon) fn request_recompile(&mut self) {
        self.request_policy_compile();
    }

    /// After a successful ADD: publish the pod (queued; never waits for etcd).
    pub(in crate::daemon) fn cluster_publish_pod(&self, ep: &Endpoint) {
        let Some(c) = &self.cluster else { return };
        let Some(view) = self.policy.endpoint_view(ep) else {
            return;
        };
        let pod = PodRecord {
            namespace: view.namespace,
            name: view.name,
            labels: view.labels,
            ip: ep.ip,
            node: c.name.clone(),
            ports: view.ports,
        };
        let super::Backend::Etcd(handle) = &c.handle else {
            return; // Kubernetes: the API server has the Pod; nothing to publish.
        };
        if let Err(e) = handle.set_pod(pod) {
            tracing::warn!(ifname = %ep.ifname, error = %e, "pod not published to the datastore");
        }
    }

    /// After a DEL: withdraw the pod (queued).
    pub(in crate::daemon) fn cluster_withdraw_pod(&self, ep: &Endpoint) {
        let (Some(c), Some(ns), Some(name)) = (&self.cluster, &ep.namespace, &ep.name) else {
            return;
        };
        let super::Backend::Etcd(handle) = &c.handle else {
            return;
        };
        if let Err(e) = handle.remove_pod(ns, name) {
            tracing::warn!(ifname = %ep.ifname, error = %e, "pod not withdrawn from the datastore");
        }
    }

    /// At start, once the endpoints are restored: publish every live one, and take
    /// over what the view already holds (events that arrived while joining).
    pub(in crate::daemon) fn cluster_start_sync(&mut self) {
        if self.cluster.is_none() {
            return;
        }
        for ep in self.endpoints.iter() {
            self.cluster_publish_pod(ep);
        }
        self.sync_peers();
        self.sync_policy_from_view();
    }

    /// `status.datastore`.
    pub(in crate::daemon) fn datastore_status(&self) -> Option<DatastoreStatus> {
        self.cluster.as_ref().map(Cluster::status)
    }

    /// The metrics' datastore health: None in static mode.
    pub(in crate::daemon) fn datastore_healthy(&self) -> Option<bool> {
        self.cluster.as_ref().map(Cluster::healthy)
    }
}
