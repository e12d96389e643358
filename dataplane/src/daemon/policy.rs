//! The policy service: the [`PolicyStore`] (NetworkPolicies, Namespaces, YAML Pods and
//! the live endpoints' identities), its compiled [`PolicySnapshot`] with per-worker
//! hit counters, its persistence (`policy.json` in the state dir) and the `policyDir`
//! watch.
//!
//! Persistence (README "Durability"): every change is written with
//! [`crate::state::save_json_kept`] (`policy.json` and its last good copy
//! `policy.json.prev`) before it is put in force; when the write fails the change is
//! rolled back and refused ([`PolicyRequestError::Persist`], kind `unavailable`). At
//! start an unreadable `policy.json` is set aside and the copy is used. With the copy
//! unreadable too, policies must not disappear silently, so the service starts
//! *fail-closed*: every namespace with a pod on this node gets the default-deny
//! NetworkPolicy [`FAIL_CLOSED_POLICY`] (ingress and egress) as its pods attach, until
//! the operator re-applies the policies and deletes one of them (`xsknetctl policy
//! delete NS/xsknet-fail-closed`), which ends the mode. `status` lists those namespaces.
//!
//! A change is made on a copy of the store and committed only if it succeeds, so a
//! refused change leaves what is in force untouched; a committed change is persisted,
//! then the daemon asks for a compile ([`PolicyService::request_compile`]: the next
//! *policy generation*, `policy/generations.rs`), which runs on the compiler thread
//! ([`worker`]), never on the control thread. When a
//! result arrives ([`PolicyService::take_compiled`]) the daemon publishes it, waits
//! for every worker and folds the hit counters of the snapshot the workers left
//! ([`PolicyService::fold`]) into per-name totals; the generation is then *in force*.
//! A failed compile keeps what was in force and is reported in `status`.
//!
//! **A pod attached while its compile is pending never runs with a weaker policy than
//! the right one.** Until a generation that includes it is in force, its port's policy
//! is overridden in what the daemon publishes ([`PolicyService::snapshot`]): *held*
//! (isolated both ways: nothing in or out but its node's traffic) when some policy of
//! its namespace selects it, or when its address was a pod's in the snapshot in force
//! (other pods' rules may still name that address); *open* otherwise (no policy
//! selects it, so not isolated is exactly right, and no stale rule can name it). The
//! override also hides what a reused port slot's previous pod had. A pod removed is
//! out of the dataplane at once; other pods' rules naming its address go with the next
//! compile, and a pod given that address meanwhile is held. `policyDir` is re-read as one
//! all-or-nothing apply when the (file, mtime, length) signature of its YAML files
//! changes; NetworkPolicies that came from it and are gone from it are deleted
//! (`policy/dir.rs`). The
//! request-level rules that need no daemon state (merging pod labels, reading a trace
//! request's protocol and port) are functions here, unit-tested.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::control::proto::{ControlError, Endpoint, ErrorKind, PolicyInfo};
use crate::control::reach::ProbePort;
use crate::pipeline::policy::PolicyHits;
use crate::policy::compile::PodView;
use crate::policy::k8s::{PolicyError, Protocol, ValueError};
use crate::policy::store::PolicyStore;
use crate::policy::PolicySnapshot;
use crate::state::{load_json_recovering, Health, Loaded, StateError};
use crate::tables::PortId;

mod dir;
mod generations;
pub mod worker;

pub use dir::DirReload;
pub use generations::{applied, ChangeGeneration};

use dir::{dir_signature, DirSignature};
use generations::{CompileStats, Override};
use worker::PolicyCompiler;

/// The persisted policy store, in the state dir.
pub const POLICY_FILE: &str = "policy.json";

/// Name of the default-deny policy of fail-closed mode (see the module doc).
pub const FAIL_CLOSED_POLICY: &str = "xsknet-fail-closed";

/// How often the daemon looks at the `policyDir` files' mtimes.
pub const POLICY_DIR_POLL: Duration = Duration::from_secs(1);

/// A policy request that was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyRequestError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("Pod {namespace}/{name} not found (no live endpoint or YAML pod of that name)")]
    PodNotFound { namespace: String, name: String },
    #[error("Pod {namespace}/{name}: label {key} already has value {old:?}; pass overwrite to change it")]
    LabelConflict {
        namespace: String,
        name: String,
        key: String,
        old: String,
    },
    #[error("protocol: {0}")]
    Protocol(ValueError),
    #[error("port: expected 0-65535 or a port name")]
    Port,
    #[error("to {0}: pod has no identity")]
    NoIdentity(String),
    #[error("policy state not saved, change refused (nothing of it is in force): {0}")]
    Persist(StateError),
    #[error("to {to}: no container port named {port} for {protocol}")]
    NoNamedPort {
        to: String,
        port: String,
        protocol: Protocol,
    },
}

impl From<PolicyRequestError> for ControlError {
    fn from(e: PolicyRequestError) -> Self {
        use PolicyRequestError as E;
        let kind = match &e {
            E::Policy(PolicyError::NotFound { .. }) | E::PodNotFound { .. } => ErrorKind::NotFound,
            E::NoNamedPort { .. } => ErrorKind::NotFound,
            E::LabelConflict { .. } => ErrorKind::Conflict,
            E::Policy(_) | E::Protocol(_) | E::Port | E::NoIdentity(_) => ErrorKind::InvalidRequest,
            E::Persist(_) => ErrorKind::Unavailable,
        };
        ControlError::new(kind, e.to_string())
    }
}

impl From<PolicyError> for ControlError {
    fn from(e: PolicyError) -> Self {
        PolicyRequestError::Policy(e).into()
    }
}

/// The policy service could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("start the policy compiler thread: {0}")]
    Thread(std::io::Error),
}

/// A snapshot and its counters the workers are being moved off.
#[derive(Debug)]
#[must_use = "fold it once the workers run on the next tables"]
pub struct Retired {
    snap: Arc<PolicySnapshot>,
    hits: Arc<[PolicyHits]>,
}

/// The policy service. See the module doc.
#[derive(Debug)]
pub struct PolicyService {
    /// Shared with the compiler thread while it compiles it (copy on write).
    store: Arc<PolicyStore>,
    path: PathBuf,
    workers: usize,
    compiler: PolicyCompiler,
    /// The newest policy generation asked for, and the newest in force.
    requested: u64,
    in_force: u64,
    /// Ports attached after the snapshot in force was compiled: how they are published
    /// and the generation that includes them.
    overrides: BTreeMap<PortId, (Override, u64)>,
    /// Pod addresses the snapshot in force was compiled with.
    compiled_ips: BTreeSet<std::net::Ipv4Addr>,
    stats: CompileStats,
    /// The compiled snapshot in force, and what is published: it with the overrides.
    compiled: Arc<PolicySnapshot>,
    snap: Arc<PolicySnapshot>,
    hits: Arc<[PolicyHits]>,
    /// Hits of snapshots the workers have left, by policy name.
    folded: BTreeMap<String, u64>,
    dir: Option<PathBuf>,
    /// NetworkPolicies that came from `policyDir` (removed when their file is).
    dir_policies: BTreeSet<(String, String)>,
    dir_sig: Option<DirSignature>,
    last_dir_poll: Instant,
    health: Health,
    /// Fail-closed mode (see the module doc).
    fail_closed: bool,
    /// Loaded from the copy or started fail-closed: to write once the endpoints are
    /// back ([`save_recovered`](Self::save_recovered)).
    recovered: bool,
    /// Endpoint identities of the loaded store (the store drops them; start uses them
    /// to recover endpoints from what the kernel shows).
    saved_views: Vec<PodView>,
    /// Pods of other nodes (datastore mode): peers of the policies, never selected
    /// here (they have no port on this node).
    remote: Arc<Vec<PodView>>,
}

impl PolicyService {
    /// Load the store persisted at `path`, or its last good copy; with both unreadable
    /// (set aside) start empty and fail-closed (see the module doc). Only an unreadable
    /// directory or a failed set-aside is an error. Identities of endpoints are dropped
    /// from the store (kept in [`saved_views`](Self::saved_views)): live endpoints are
    /// registered again as they attach.
    pub fn open(
        path: PathBuf,
        workers: usize,
        dir: Option<PathBuf>,
        health: Health,
    ) -> Result<PolicyService, OpenError> {
        let compiler = PolicyCompiler::spawn().map_err(OpenError::Thread)?;
        let mut fail_closed = false;
        let mut recovered = true;
        let mut store = match load_json_recovering::<PolicyStore>(&path)? {
            Loaded::Missing => {
                recovered = false;
                PolicyStore::new()
            }
            Loaded::Current(p) => {
                recovered = false;
                p
            }
            Loaded::FromCopy { value, set_aside } => {
                health.recovered(format!(
                    "{} unreadable{}; policies recovered from {}",
                    path.display(),
                    aside_text(set_aside.as_slice()),
                    crate::state::prev_path(&path).display()
                ));
                value
            }
            Loaded::Unreadable { set_aside } => {
                fail_closed = true;
                let msg = format!(
                    "{} and its copy unreadable{}; fail-closed: every namespace with pods here is default-deny ({FAIL_CLOSED_POLICY}) until the operator re-applies policies and deletes it",
                    path.display(),
                    aside_text(&set_aside)
                );
                tracing::error!("{msg}");
                health.recovered(msg);
                PolicyStore::new()
            }
        };
        let saved_views = store.endpoint_views();
        for v in &saved_views {
            store.remove_endpoint(&v.namespace, &v.name);
        }
        let dir_sig = dir.as_deref().and_then(dir_signature);
        Ok(PolicyService {
            store: Arc::new(store),
            path,
            workers,
            compiler,
            requested: 0,
            in_force: 0,
            overrides: BTreeMap::new(),
            compiled_ips: BTreeSet::new(),
            stats: CompileStats::default(),
            compiled: Arc::new(PolicySnapshot::default()),
            snap: Arc::new(PolicySnapshot::default()),
            hits: (0..workers).map(|_| PolicyHits::new(0)).collect(),
            folded: BTreeMap::new(),
            dir,
            dir_policies: BTreeSet::new(),
            dir_sig,
            last_dir_poll: Instant::now(),
            health,
            fail_closed,
            recovered,
            saved_views,
            remote: Arc::default(),
        })
    }

    /// Set the other nodes' pods (datastore mode); returns whether they changed (then
    /// the caller recompiles). A pod with the name of a local endpoint is left out:
    /// the local one is the truth here.
    pub fn set_remote_pods(&mut self, mut pods: Vec<PodView>) -> bool {
        pods.retain(|p| self.store.endpoint(&p.namespace, &p.name).is_none());
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        if pods == *self.remote {
            return false;
        }
        self.remote = Arc::new(pods);
        true
    }

    /// After a recovery at start, once the endpoints are re-attached: write the store
    /// (the recovered policies, or the fail-closed ones, with the live identities), so
    /// the file is whole again and a second restart finds the same state.
    pub fn save_recovered(&mut self) {
        if std::mem::take(&mut self.recovered) {
            if let Err(e) = self.persist() {
                tracing::error!(error = %e, "recovered policy state not saved");
            }
        }
    }

    /// Endpoint identities the loaded store held (see [`open`](Self::open)).
    pub fn saved_views(&self) -> &[PodView] {
        &self.saved_views
    }

    /// Namespaces whose fail-closed default-deny is in force.
    pub fn fail_closed_namespaces(&self) -> Vec<String> {
        self.store
            .policies()
            .filter(|p| p.metadata.name == FAIL_CLOSED_POLICY)
            .map(|p| p.metadata.namespace.clone())
            .collect()
    }

    pub fn store(&self) -> &PolicyStore {
        &self.store
    }

    /// What the next publish carries (the snapshot in force with the overrides of
    /// ports attached since), and its counters.
    pub fn snapshot(&self) -> &Arc<PolicySnapshot> {
        &self.snap
    }

    pub fn hits(&self) -> &Arc<[PolicyHits]> {
        &self.hits
    }

    /// The compiler's view of a live endpoint (one with a namespace and name). Named
    /// container ports come from a YAML Pod of the same name, if one was given.
    pub fn endpoint_view(&self, ep: &Endpoint) -> Option<PodView> {
        let (ns, name) = (ep.namespace.clone()?, ep.name.clone()?);
        let ports = self
            .store
            .pods()
            .find(|p| p.metadata.namespace == ns && p.metadata.name == name)
            .map(|p| p.named_ports())
            .unwrap_or_default();
        Some(PodView {
            namespace: ns,
            name,
            labels: ep.labels.clone(),
            ip: ep.ip,
            ports,
        })
    }

    /// The store as it would be with `ep`'s identity registered (`None`: it has no
    /// namespace and name, nothing to register). Invalid labels are refused here,
    /// before anything is attached.
    pub fn with_endpoint(&self, ep: &Endpoint) -> Result<Option<PolicyStore>, PolicyError> {
        let Some(view) = self.endpoint_view(ep) else {
            return Ok(None);
        };
        let namespace = view.namespace.clone();
        let mut next = (*self.store).clone();
        next.upsert_endpoint(view)?;
        if self.fail_closed && next.policy(&namespace, FAIL_CLOSED_POLICY).is_none() {
            // The namespace was validated with the identity just registered.
            next.apply_yaml(&fail_closed_yaml(&namespace))?;
            tracing::warn!(%namespace, policy = FAIL_CLOSED_POLICY, "fail-closed: namespace held default-deny");
        }
        Ok(Some(next))
    }

    /// Make `next` the store (not persisted, not compiled); returns the one it replaced.
    pub fn replace(&mut self, next: impl Into<Arc<PolicyStore>>) -> Arc<PolicyStore> {
        std::mem::replace(&mut self.store, next.into())
    }

    /// Forget a pod's identity; persisted if there was one (a failed write is only
    /// reported: identities are not read back at start, the endpoint is gone anyway).
    pub fn remove_endpoint(&mut self, namespace: &str, name: &str) {
        if self.store.endpoint(namespace, name).is_some() {
            Arc::make_mut(&mut self.store).remove_endpoint(namespace, name);
            let _ = self.persist();
        }
    }

    /// Write the store to its file and copy; a failure is recorded in the health.
    pub fn persist(&mut self) -> Result<(), StateError> {
        self.health
            .record(crate::state::save_json_kept(&self.path, &*self.store))
    }

    /// Apply `f` to a copy of the store; commit only if it succeeds and is durable (a
    /// failed write leaves the store as it was: [`PolicyRequestError::Persist`]).
    /// Returns `f`'s result and whether anything changed (then the caller recompiles
    /// and publishes). Deleting a fail-closed policy ends fail-closed mode.
    pub fn apply<T>(
        &mut self,
        f: impl FnOnce(&mut PolicyStore) -> Result<T, PolicyError>,
    ) -> Result<(T, bool), PolicyRequestError> {
        let mut next = (*self.store).clone();
        let out = f(&mut next)?;
        let changed = next != *self.store;
        if changed {
            let previous = std::mem::replace(&mut self.store, Arc::new(next));
            if let Err(e) = self.persist() {
                self.store = previous;
                return Err(PolicyRequestError::Persist(e));
            }
            if self.fail_closed
                && self.fail_closed_namespaces().len()
                    < previous
                        .policies()
                        .filter(|p| p.metadata.name == FAIL_CLOSED_POLICY)
                        .count()
            {
                self.fail_closed = false;
                tracing::info!("fail-closed mode ended by the operator");
            }
        }
        Ok((out, changed))
    }

    /// Add the counters of a snapshot no worker writes any more to the totals. (If a
    /// worker did not move on in time, a late increment into it is lost.)
    pub fn fold(&mut self, r: Retired) {
        for h in r.hits.iter() {
            for (i, c) in h.hits.iter().enumerate() {
                let v = c.load(Relaxed);
                if v > 0 {
                    if let Some(name) = r.snap.policies.get(i) {
                        *self.folded.entry(name.clone()).or_default() += v;
                    }
                }
            }
        }
    }

    /// Hits per policy name: folded totals plus the live counters (zeros left out).
    pub fn hit_totals(&self) -> BTreeMap<String, u64> {
        let mut out = self.folded.clone();
        for h in self.hits.iter() {
            for (i, c) in h.hits.iter().enumerate() {
                if let Some(name) = self.snap.policies.get(i) {
                    *out.entry(name.clone()).or_default() += c.load(Relaxed);
                }
            }
        }
        out.retain(|_, v| *v > 0);
        out
    }

    /// The `policy list` answer.
    pub fn list(&self) -> Vec<PolicyInfo> {
        let hits = self.hit_totals();
        let views = self.store.endpoint_views();
        self.store
            .list()
            .into_iter()
            .map(|p| {
                let key = format!("{}/{}", p.namespace, p.name);
                let selected = self
                    .store
                    .policy(&p.namespace, &p.name)
                    .map(|np| {
                        views
                            .iter()
                            .filter(|v| {
                                v.namespace == np.metadata.namespace
                                    && np.spec.pod_selector.matches(&v.labels)
                            })
                            .count()
                    })
                    .unwrap_or(0);
                PolicyInfo {
                    hits: hits.get(&key).copied().unwrap_or(0),
                    policy_types: p.policy_types.iter().map(|t| format!("{t:?}")).collect(),
                    namespace: p.namespace,
                    name: p.name,
                    ingress_rules: p.ingress_rules,
                    egress_rules: p.egress_rules,
                    selected,
                    source: String::new(),
                    error: None,
                }
            })
            .collect()
    }

    /// Whether the policy came from `policyDir`.
    pub fn is_dir_policy(&self, namespace: &str, name: &str) -> bool {
        self.dir_policies
            .contains(&(namespace.to_string(), name.to_string()))
    }
}

fn aside_text(set_aside: &[PathBuf]) -> String {
    if set_aside.is_empty() {
        return String::new();
    }
    let list: Vec<String> = set_aside.iter().map(|p| p.display().to_string()).collect();
    format!(" (kept as {})", list.join(", "))
}

/// The fail-closed default-deny of `namespace`: every pod of it, no traffic in or out.
fn fail_closed_yaml(namespace: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {FAIL_CLOSED_POLICY}\n  namespace: {namespace}\nspec:\n  podSelector: {{}}\n  policyTypes: [Ingress, Egress]\n"
    )
}

/// `pod label`: the labels `current` becomes. Without `replace` or `overwrite`, a
/// label that exists with another value is a conflict; `remove` goes last.
pub fn merge_labels(
    (namespace, name): (&str, &str),
    current: &BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    remove: Vec<String>,
    replace: bool,
    overwrite: bool,
) -> Result<BTreeMap<String, String>, PolicyRequestError> {
    let mut next = if replace {
        BTreeMap::new()
    } else {
        current.clone()
    };
    for (k, v) in labels {
        if !replace && !overwrite {
            if let Some(old) = current.get(&k) {
                if *old != v {
                    return Err(PolicyRequestError::LabelConflict {
                        namespace: namespace.to_string(),
                        name: name.to_string(),
                        key: k,
                        old: old.clone(),
                    });
                }
            }
        }
        next.insert(k, v);
    }
    for k in remove {
        next.remove(&k);
    }
    Ok(next)
}

/// A trace request's protocol (default TCP, any case) and port (number or name).
pub fn trace_args(
    protocol: Option<&str>,
    port: &serde_json::Value,
) -> Result<(Protocol, ProbePort), PolicyRequestError> {
    let proto: Protocol = protocol
        .unwrap_or("TCP")
        .to_ascii_uppercase()
        .parse()
        .map_err(PolicyRequestError::Protocol)?;
    let port = match port {
        serde_json::Value::Number(n) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .map(ProbePort::Number),
        serde_json::Value::String(s) => Some(ProbePort::parse(s)),
        _ => None,
    }
    .ok_or(PolicyRequestError::Port)?;
    Ok((proto, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::path::Path;

    const T: Duration = Duration::from_secs(10);

    pub(super) const DENY_ALL: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: ns}
spec: {podSelector: {}, policyTypes: [Ingress]}
";

    pub(super) fn service(dir: &Path, policy_dir: Option<PathBuf>) -> PolicyService {
        PolicyService::open(dir.join(POLICY_FILE), 2, policy_dir, Health::default()).unwrap()
    }

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub(super) fn endpoint(name: &str, ip: [u8; 4]) -> Endpoint {
        Endpoint {
            ifname: format!("veth-{name}"),
            ip: Ipv4Addr::from(ip),
            mac: String::new(),
            namespace: Some("ns".into()),
            name: Some(name.into()),
            labels: labels(&[("app", name)]),
            cni: None,
            port: 0,
            worker: 0,
        }
    }

    #[test]
    fn a_refused_change_leaves_the_store_as_it_was_and_a_good_one_persists() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = service(tmp.path(), None);
        let before = s.store().clone();
        assert!(s.apply(|st| st.apply_yaml("kind: Nonsense")).is_err());
        assert_eq!(*s.store(), before);
        assert!(!tmp.path().join(POLICY_FILE).exists());

        let (_, changed) = s.apply(|st| st.apply_yaml(DENY_ALL)).unwrap();
        assert!(changed);
        let (_, changed) = s.apply(|st| st.apply_yaml(DENY_ALL)).unwrap();
        assert!(!changed, "the same again changes nothing");
        // A restart finds it.
        let again = service(tmp.path(), None);
        assert_eq!(again.store().list().len(), 1);
        assert!(!again.health.status(Vec::new()).failing);
    }

    #[test]
    fn a_change_that_cannot_be_written_is_refused_and_not_in_force() {
        let tmp = tempfile::tempdir().unwrap();
        let health = Health::default();
        let path = tmp.path().join("gone").join(POLICY_FILE);
        let mut s = PolicyService::open(path, 1, None, health.clone()).unwrap();
        let e = s.apply(|st| st.apply_yaml(DENY_ALL)).unwrap_err();
        assert!(matches!(e, PolicyRequestError::Persist(_)), "{e}");
        assert_eq!(ControlError::from(e).kind, ErrorKind::Unavailable);
        assert!(s.store().list().is_empty(), "rolled back");
        assert!(health.status(Vec::new()).failing);
    }

    #[test]
    fn a_torn_store_recovers_from_its_copy_with_every_policy() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = service(tmp.path(), None);
        s.apply(|st| st.apply_yaml(DENY_ALL)).unwrap();
        std::fs::write(tmp.path().join(POLICY_FILE), b"{\"policies\": [").unwrap();
        let health = Health::default();
        let again =
            PolicyService::open(tmp.path().join(POLICY_FILE), 2, None, health.clone()).unwrap();
        assert_eq!(again.store().list().len(), 1, "the deny is still there");
        let st = health.status(again.fail_closed_namespaces());
        assert_eq!(st.recovered.len(), 1, "{st:?}");
        assert!(st.recovered[0].contains(".corrupt-"), "{st:?}");
        assert!(st.fail_closed_namespaces.is_empty());
    }

    #[test]
    fn with_both_copies_unreadable_attached_pods_are_held_default_deny() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(POLICY_FILE), b"{garbage").unwrap();
        std::fs::write(crate::state::prev_path(&tmp.path().join(POLICY_FILE)), b"[").unwrap();
        let mut s = service(tmp.path(), None);
        assert!(s.store().list().is_empty());
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names.iter().filter(|n| n.contains(".corrupt-")).count(),
            2,
            "{names:?}"
        );
        let next = s
            .with_endpoint(&endpoint("a", [10, 0, 0, 2]))
            .unwrap()
            .unwrap();
        s.replace(next);
        assert_eq!(s.fail_closed_namespaces(), vec!["ns".to_string()]);
        let retired = s
            .compile_now(&BTreeMap::from([(("ns".into(), "a".into()), 3)]), T)
            .unwrap();
        s.fold(retired);
        assert_eq!(
            s.snapshot().policies,
            vec![format!("ns/{FAIL_CLOSED_POLICY}")]
        );
        // The operator deletes it: the mode ends, later pods are not held.
        s.apply(|st| st.delete("ns", FAIL_CLOSED_POLICY)).unwrap();
        let mut b = endpoint("b", [10, 0, 0, 3]);
        b.namespace = Some("other".into());
        let next = s.with_endpoint(&b).unwrap().unwrap();
        s.replace(next);
        assert!(s.fail_closed_namespaces().is_empty());
    }

    #[test]
    fn identities_are_not_kept_in_the_store_but_remembered_for_recovery() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = service(tmp.path(), None);
        let next = s
            .with_endpoint(&endpoint("a", [10, 0, 0, 2]))
            .unwrap()
            .unwrap();
        s.replace(next);
        s.persist().unwrap();
        assert_eq!(s.store().endpoint_views().len(), 1);
        let restarted = service(tmp.path(), None);
        assert!(restarted.store().endpoint_views().is_empty());
        assert_eq!(restarted.saved_views().len(), 1);
        assert_eq!(restarted.saved_views()[0].ip, Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn with_endpoint_refuses_bad_labels_and_ignores_anonymous_endpoints() {
        let tmp = tempfile::tempdir().unwrap();
        let s = service(tmp.path(), None);
        let mut bad = endpoint("a", [10, 0, 0, 2]);
        bad.labels = labels(&[("-bad-", "x")]);
        assert!(s.with_endpoint(&bad).is_err());
        let mut anon = endpoint("a", [10, 0, 0, 2]);
        anon.name = None;
        assert!(s.with_endpoint(&anon).unwrap().is_none());
    }

    #[test]
    fn recompile_selects_ports_and_hits_are_folded_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = service(tmp.path(), None);
        s.apply(|st| st.apply_yaml(DENY_ALL)).unwrap();
        let next = s
            .with_endpoint(&endpoint("a", [10, 0, 0, 2]))
            .unwrap()
            .unwrap();
        s.replace(next);
        let ports = BTreeMap::from([(("ns".to_string(), "a".to_string()), 3)]);
        let retired = s.compile_now(&ports, T).unwrap();
        s.fold(retired);
        assert_eq!(s.snapshot().policies, vec!["ns/deny-all".to_string()]);
        assert!(s.snapshot().ports.get(3).is_some_and(Option::is_some));
        assert_eq!(s.hits().len(), 2, "one row per worker");
        assert!(s.hit_totals().is_empty());

        crate::pipeline::bump(&s.hits()[1].hits[0], 4);
        assert_eq!(s.hit_totals().get("ns/deny-all"), Some(&4));
        // Recompiling moves the live counters into the folded totals.
        let retired = s.compile_now(&ports, T).unwrap();
        assert_eq!(s.hit_totals().get("ns/deny-all"), None, "not folded yet");
        s.fold(retired);
        crate::pipeline::bump(&s.hits()[0].hits[0], 1);
        assert_eq!(s.hit_totals().get("ns/deny-all"), Some(&5));
        let list = s.list();
        assert_eq!((list[0].hits, list[0].selected), (5, 1));
    }

    #[test]
    fn label_merge_rules() {
        let cur = labels(&[("app", "web"), ("tier", "front")]);
        let pod = ("ns", "p");
        let add = merge_labels(pod, &cur, labels(&[("env", "prod")]), vec![], false, false);
        assert_eq!(add.unwrap().len(), 3);
        let same = merge_labels(pod, &cur, labels(&[("app", "web")]), vec![], false, false);
        assert_eq!(same.unwrap(), cur);
        let e =
            merge_labels(pod, &cur, labels(&[("app", "db")]), vec![], false, false).unwrap_err();
        assert_eq!(ControlError::from(e).kind, ErrorKind::Conflict);
        let over = merge_labels(pod, &cur, labels(&[("app", "db")]), vec![], false, true);
        assert_eq!(over.unwrap().get("app").map(String::as_str), Some("db"));
        let replaced = merge_labels(
            pod,
            &cur,
            labels(&[("app", "db")]),
            vec!["app".into()],
            true,
            false,
        );
        assert!(
            replaced.unwrap().is_empty(),
            "remove applies after the new labels"
        );
        let removed = merge_labels(
            pod,
            &cur,
            BTreeMap::new(),
            vec!["tier".into()],
            false,
            false,
        );
        assert_eq!(removed.unwrap(), labels(&[("app", "web")]));
    }

    #[test]
    fn trace_arguments() {
        let (p, port) = trace_args(None, &serde_json::json!(80)).unwrap();
        assert_eq!(p, Protocol::Tcp);
        assert!(matches!(port, ProbePort::Number(80)));
        let (p, port) = trace_args(Some("udp"), &serde_json::json!("dns")).unwrap();
        assert_eq!(p, Protocol::Udp);
        assert!(matches!(port, ProbePort::Name(_)));
        let e = |p: Option<&str>, v: serde_json::Value| {
            ControlError::from(trace_args(p, &v).unwrap_err())
        };
        assert_eq!(
            e(Some("icmp"), serde_json::json!(1)).kind,
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            e(None, serde_json::json!(70000)).kind,
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            e(None, serde_json::json!(null)).kind,
            ErrorKind::InvalidRequest
        );
    }

    #[test]
    fn not_found_policies_map_to_not_found() {
        let e: ControlError = PolicyError::NotFound {
            object: "NetworkPolicy a/b".into(),
        }
        .into();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(e.message, "NetworkPolicy a/b not found");
    }
}
