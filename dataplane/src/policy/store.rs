//! What is in force on the control thread: the NetworkPolicies, the Namespaces (their
//! labels), Pods described in YAML (for `policy matrix` and offline use) and the live
//! endpoints' identity (namespace, name, labels, IP, named ports) as the CNI plugin and
//! `xsknetctl pod label` report it.
//!
//! Invariants: every object in the store passed [`k8s`](super::k8s) validation; an apply
//! is all or nothing (every document is parsed and validated before the first one is
//! stored, so a refused apply changes nothing); every namespace's labels include
//! `kubernetes.io/metadata.name` = its name, whether or not a Namespace object was given.
//! The store is plain data with no clock or I/O beyond `apply_dir`; it serialises (serde)
//! as lists of Kubernetes-shaped objects, which is how the daemon persists it. Compiling
//! it into classifiers is [`compile`](super::compile)'s job.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::compile::PodView;
use super::k8s::{
    self, check_labels, Namespace, NetworkPolicy, Object, Pod, PolicyError, PolicyType, ValueError,
    NAMESPACE_NAME_LABEL,
};

type Key = (String, String);

/// Policies, namespaces, YAML pods and live endpoints. See the module doc.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoreRepr", into = "StoreRepr")]
pub struct PolicyStore {
    policies: BTreeMap<Key, NetworkPolicy>,
    namespaces: BTreeMap<String, Namespace>,
    pods: BTreeMap<Key, Pod>,
    endpoints: BTreeMap<Key, PodView>,
}

/// The persisted shape: lists, so keys never need a string encoding.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct StoreRepr {
    #[serde(default)]
    policies: Vec<NetworkPolicy>,
    #[serde(default)]
    namespaces: Vec<Namespace>,
    #[serde(default)]
    pods: Vec<Pod>,
    #[serde(default)]
    endpoints: Vec<PodView>,
}

impl From<StoreRepr> for PolicyStore {
    fn from(r: StoreRepr) -> Self {
        let mut s = PolicyStore::default();
        for p in r.policies {
            s.policies
                .insert(key(&p.metadata.namespace, &p.metadata.name), p);
        }
        for n in r.namespaces {
            s.namespaces.insert(n.metadata.name.clone(), n);
        }
        for p in r.pods {
            s.pods
                .insert(key(&p.metadata.namespace, &p.metadata.name), p);
        }
        for e in r.endpoints {
            s.endpoints.insert(key(&e.namespace, &e.name), e);
        }
        s
    }
}

impl From<PolicyStore> for StoreRepr {
    fn from(s: PolicyStore) -> Self {
        StoreRepr {
            policies: s.policies.into_values().collect(),
            namespaces: s.namespaces.into_values().collect(),
            pods: s.pods.into_values().collect(),
            endpoints: s.endpoints.into_values().collect(),
        }
    }
}

fn key(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

/// What an apply did, object by object (`NetworkPolicy x/deny-all`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplySummary {
    pub created: Vec<String>,
    pub configured: Vec<String>,
    pub unchanged: Vec<String>,
}

impl ApplySummary {
    /// Number of objects that changed.
    pub fn changed(&self) -> usize {
        self.created.len() + self.configured.len()
    }
}

/// One line of `policy list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySummary {
    pub namespace: String,
    pub name: String,
    /// Effective policyTypes (after inference).
    pub policy_types: Vec<PolicyType>,
    pub ingress_rules: usize,
    pub egress_rules: usize,
}

impl PolicyStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parse, validate, then apply every document of `text` (create or replace), or
    /// nothing at all.
    pub fn apply_yaml(&mut self, text: &str) -> Result<ApplySummary, PolicyError> {
        self.apply_objects(k8s::parse_yaml(text, None)?)
    }

    /// [`apply_yaml`](Self::apply_yaml) with `file` naming the source in errors.
    pub fn apply_yaml_named(
        &mut self,
        text: &str,
        file: &str,
    ) -> Result<ApplySummary, PolicyError> {
        self.apply_objects(k8s::parse_yaml(text, Some(file))?)
    }

    /// Every `*.yaml`/`*.yml` file of `dir` as one all-or-nothing apply.
    pub fn apply_dir(&mut self, dir: &Path) -> Result<ApplySummary, PolicyError> {
        self.apply_objects(k8s::parse_dir(dir)?)
    }

    /// A file, or a directory of files, as one all-or-nothing apply
    /// (`policy apply -f FILE|DIR`).
    pub fn apply_path(&mut self, path: &Path) -> Result<ApplySummary, PolicyError> {
        let objects = if path.is_dir() {
            k8s::parse_dir(path)?
        } else {
            k8s::parse_file(path)?
        };
        self.apply_objects(objects)
    }

    /// Apply validated objects. The same object twice in one apply is refused (which
    /// one is meant?), before anything changes.
    pub fn apply_objects(&mut self, objects: Vec<Object>) -> Result<ApplySummary, PolicyError> {
        let mut seen = std::collections::BTreeSet::new();
        for o in &objects {
            let d = o.describe();
            if !seen.insert(d.clone()) {
                return Err(PolicyError::Invalid {
                    file: None,
                    object: d,
                    field: String::new(),
                    message: "given more than once in one apply".into(),
                });
            }
        }
        let mut summary = ApplySummary::default();
        for o in objects {
            let d = o.describe();
            let previous = match o {
                Object::NetworkPolicy(p) => {
                    let k = key(&p.metadata.namespace, &p.metadata.name);
                    self.policies.insert(k, p.clone()).map(|old| old == p)
                }
                Object::Namespace(n) => {
                    let k = n.metadata.name.clone();
                    self.namespaces.insert(k, n.clone()).map(|old| old == n)
                }
                Object::Pod(p) => {
                    let k = key(&p.metadata.namespace, &p.metadata.name);
                    self.pods.insert(k, p.clone()).map(|old| old == p)
                }
            };
            match previous {
                None => summary.created.push(d),
                Some(true) => summary.unchanged.push(d),
                Some(false) => summary.configured.push(d),
            }
        }
        Ok(summary)
    }

    /// Remove a NetworkPolicy.
    pub fn delete(&mut self, namespace: &str, name: &str) -> Result<NetworkPolicy, PolicyError> {
        self.policies
            .remove(&key(namespace, name))
            .ok_or_else(|| PolicyError::NotFound {
                object: format!("NetworkPolicy {namespace}/{name}"),
            })
    }

    /// Replace every Namespace and NetworkPolicy with these (the daemon in datastore
    /// mode: the datastore's view is their only source). Each was validated when it
    /// was read back from the datastore.
    pub fn replace_cluster_objects(
        &mut self,
        namespaces: impl IntoIterator<Item = Namespace>,
        policies: impl IntoIterator<Item = NetworkPolicy>,
    ) {
        self.namespaces = namespaces
            .into_iter()
            .map(|n| (n.metadata.name.clone(), n))
            .collect();
        self.policies = policies
            .into_iter()
            .map(|p| (key(&p.metadata.namespace, &p.metadata.name), p))
            .collect();
    }

    /// Remove every NetworkPolicy (the daemon's `policyDir` reload replaces the set).
    pub fn clear_policies(&mut self) {
        self.policies.clear();
    }

    /// Policies sorted by (namespace, name): the order of
    /// [`PolicySnapshot::policies`](super::PolicySnapshot::policies).
    pub fn policies(&self) -> impl Iterator<Item = &NetworkPolicy> {
        self.policies.values()
    }

    pub fn policy(&self, namespace: &str, name: &str) -> Option<&NetworkPolicy> {
        self.policies.get(&key(namespace, name))
    }

    pub fn list(&self) -> Vec<PolicySummary> {
        self.policies
            .values()
            .map(|p| PolicySummary {
                namespace: p.metadata.namespace.clone(),
                name: p.metadata.name.clone(),
                policy_types: [PolicyType::Ingress, PolicyType::Egress]
                    .into_iter()
                    .filter(|t| p.affects(*t))
                    .collect(),
                ingress_rules: p.ingress_rules().len(),
                egress_rules: p.egress_rules().len(),
            })
            .collect()
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.namespaces.values()
    }

    /// The labels namespaceSelectors see for `namespace`: its Namespace object's labels
    /// (if any) with `kubernetes.io/metadata.name` always set to its name, as the API
    /// server does.
    pub fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        let mut labels = self
            .namespaces
            .get(namespace)
            .map(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), namespace.to_string());
        labels
    }

    /// Pods given as YAML.
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.values()
    }

    /// YAML pods as compiler input, in (namespace, name) order. Pods without
    /// `status.podIP` are left out (they have no address to match or to reach); see
    /// [`pods_without_ip`](Self::pods_without_ip).
    pub fn pod_views(&self) -> Vec<PodView> {
        self.pods
            .values()
            .filter_map(|p| {
                Some(PodView {
                    namespace: p.metadata.namespace.clone(),
                    name: p.metadata.name.clone(),
                    labels: p.metadata.labels.clone(),
                    ip: p.ip()?,
                    ports: p.named_ports(),
                })
            })
            .collect()
    }

    /// `ns/name` of YAML pods without `status.podIP`.
    pub fn pods_without_ip(&self) -> Vec<String> {
        self.pods
            .values()
            .filter(|p| p.ip().is_none())
            .map(|p| format!("{}/{}", p.metadata.namespace, p.metadata.name))
            .collect()
    }

    /// Record (or replace) a live endpoint's identity. Labels are checked.
    pub fn upsert_endpoint(&mut self, view: PodView) -> Result<(), PolicyError> {
        check_pod_identity(&view.namespace, &view.name, &view.labels)?;
        self.endpoints
            .insert(key(&view.namespace, &view.name), view);
        Ok(())
    }

    pub fn remove_endpoint(&mut self, namespace: &str, name: &str) -> Option<PodView> {
        self.endpoints.remove(&key(namespace, name))
    }

    pub fn endpoint(&self, namespace: &str, name: &str) -> Option<&PodView> {
        self.endpoints.get(&key(namespace, name))
    }

    /// Live endpoints as compiler input, in (namespace, name) order.
    pub fn endpoint_views(&self) -> Vec<PodView> {
        self.endpoints.values().cloned().collect()
    }

    /// Replace the labels of a pod (`xsknetctl pod label`): the live endpoint if there
    /// is one, the YAML pod otherwise, both if both exist.
    pub fn set_pod_labels(
        &mut self,
        namespace: &str,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), PolicyError> {
        check_pod_identity(namespace, name, &labels)?;
        let k = key(namespace, name);
        let mut found = false;
        if let Some(e) = self.endpoints.get_mut(&k) {
            e.labels = labels.clone();
            found = true;
        }
        if let Some(p) = self.pods.get_mut(&k) {
            p.metadata.labels = labels;
            found = true;
        }
        if found {
            Ok(())
        } else {
            Err(PolicyError::NotFound {
                object: format!("Pod {namespace}/{name}"),
            })
        }
    }

    /// The address of a pod by name, live endpoint first (for `trace`).
    pub fn pod_ip(&self, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        let k = key(namespace, name);
        self.endpoints
            .get(&k)
            .map(|e| e.ip)
            .or_else(|| self.pods.get(&k).and_then(|p| p.ip()))
    }
}

fn check_pod_identity(
    namespace: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), PolicyError> {
    let object = format!("Pod {namespace}/{name}");
    let bad = |field: &str, message: ValueError| PolicyError::Invalid {
        file: None,
        object: object.clone(),
        field: field.to_string(),
        message: message.0,
    };
    k8s::check_dns_label(namespace).map_err(|m| bad("metadata.namespace", m))?;
    k8s::check_dns_subdomain(name).map_err(|m| bad("metadata.name", m))?;
    check_labels(labels).map_err(|m| bad("metadata.labels", m))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DENY: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec: {podSelector: {}}\n";

    #[test]
    fn apply_is_all_or_nothing() {
        let mut s = PolicyStore::new();
        let sum = s.apply_yaml(DENY).unwrap();
        assert_eq!(sum.created, vec!["NetworkPolicy x/deny"]);
        let before = s.clone();
        let bad = format!(
            "{DENY}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: other, namespace: x}}\nspec:\n  ingress:\n  - ports: [{{port: 99999}}]\n"
        );
        let e = s.apply_yaml(&bad).unwrap_err().to_string();
        assert!(
            e.starts_with("NetworkPolicy x/other: spec.ingress[0].ports[0].port"),
            "{e}"
        );
        assert_eq!(s, before);
        let sum = s.apply_yaml(DENY).unwrap();
        assert_eq!(sum.unchanged, vec!["NetworkPolicy x/deny"]);
        let sum = s
            .apply_yaml(&DENY.replace("{}}", "{matchLabels: {a: b}}}"))
            .unwrap();
        assert_eq!(sum.configured, vec!["NetworkPolicy x/deny"]);
        let e = s
            .apply_yaml(&format!("{DENY}---\n{DENY}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than once"), "{e}");
    }

    #[test]
    fn delete_list_and_labels() {
        let mut s = PolicyStore::new();
        s.apply_yaml(DENY).unwrap();
        let l = s.list();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].policy_types, vec![PolicyType::Ingress]);
        assert!(matches!(
            s.delete("x", "nope"),
            Err(PolicyError::NotFound { .. })
        ));
        s.delete("x", "deny").unwrap();
        assert!(s.list().is_empty());

        assert_eq!(
            s.namespace_labels("y")
                .get(NAMESPACE_NAME_LABEL)
                .map(String::as_str),
            Some("y")
        );
        s.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: y\n  labels: {team: a, kubernetes.io/metadata.name: spoofed}\n").unwrap();
        let l = s.namespace_labels("y");
        assert_eq!(l.get("team").map(String::as_str), Some("a"));
        assert_eq!(l.get(NAMESPACE_NAME_LABEL).map(String::as_str), Some("y"));

        assert!(s.set_pod_labels("x", "a", BTreeMap::new()).is_err());
        s.upsert_endpoint(PodView {
            namespace: "x".into(),
            name: "a".into(),
            labels: BTreeMap::new(),
            ip: Ipv4Addr::new(10, 244, 0, 2),
            ports: vec![],
        })
        .unwrap();
        let labels: BTreeMap<_, _> = [("pod".to_string(), "a".to_string())].into();
        s.set_pod_labels("x", "a", labels.clone()).unwrap();
        assert_eq!(s.endpoint("x", "a").unwrap().labels, labels);
        let bad: BTreeMap<_, _> = [("bad key".to_string(), "a".to_string())].into();
        assert!(s.set_pod_labels("x", "a", bad).is_err());
        assert_eq!(s.pod_ip("x", "a"), Some(Ipv4Addr::new(10, 244, 0, 2)));
    }

    #[test]
    fn serialises_and_loads_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), DENY).unwrap();
        std::fs::write(
            dir.path().join("b.yml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nstatus: {podIP: 10.0.0.1}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
        let mut s = PolicyStore::new();
        let sum = s.apply_dir(dir.path()).unwrap();
        assert_eq!(sum.created.len(), 2);
        assert_eq!(s.pod_views().len(), 1);
        let json = serde_json::to_string(&s).unwrap();
        let back: PolicyStore = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);

        std::fs::write(dir.path().join("c.yaml"), "kind: Service\napiVersion: v1\n").unwrap();
        let before = s.clone();
        let e = s.apply_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("c.yaml: document 1: kind: unknown kind"), "{e}");
        assert_eq!(s, before);
    }
}
