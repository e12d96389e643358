//! Kubernetes objects as operators write them: `networking.k8s.io/v1` NetworkPolicy and
//! `v1` Namespace and Pod, parsed from multi-document YAML and validated the way the API
//! server would, so a document accepted here has the meaning it has in a cluster.
//!
//! Parsing is two passes over the YAML stream: the first reads each document as a plain
//! value to find its `kind`, `apiVersion` and name (so every later error can name the
//! object), the second decodes it into the typed structs of [`objects`] through
//! `serde_path_to_error` (type errors name the field path and carry the YAML line). Leaf
//! values (CIDRs, ports, protocols, selector operators) check themselves while decoding;
//! cross-field rules (endPort against port, `except` inside `cidr`,
//! selector operator versus values, peer kinds, label syntax, names) run afterwards. Every
//! failure is a [`PolicyError`] naming the object and the field, e.g.
//! `NetworkPolicy x/deny-all: spec.ingress[0].ports[1].endPort: must be >= port (got 70 < 80)`.
//! Nothing here panics on any input (a unit test feeds it thousands of garbled streams).
//!
//! The typed structs serialise back to the same Kubernetes shape, which is how the store
//! persists them. Differences from the API server, on purpose: a CIDR with host bits set
//! (`10.0.0.5/24`) is refused rather than silently masked, and unknown fields inside
//! `spec` are refused (a typo there would change who may talk to whom); unknown fields
//! elsewhere (annotations, status, other container fields) are ignored.
//!
//! The module is split along those lines: [`error`] (what a refusal says), [`leaf`]
//! (protocols, ports, CIDRs: values that check themselves while decoding), [`names`]
//! (DNS names, label keys and values), [`selector`] (label selectors), [`objects`]
//! (the typed objects and their cross-field rules) and [`parse`] (the two passes over a
//! YAML stream). Everything is re-exported here, so `policy::k8s::X` names every item.

pub mod api;
pub mod error;
pub mod leaf;
pub mod names;
pub mod objects;
pub mod parse;
pub mod selector;

pub use error::{PolicyError, ValueError};
pub use leaf::{check_port_name, Cidr, PortRef, Protocol};
pub use names::{
    check_dns_label, check_dns_subdomain, check_label_key, check_label_value, check_labels,
};
pub use objects::{
    Container, ContainerPort, EgressRule, IngressRule, IpBlockSpec, NamedPort, Namespace,
    NetworkPolicy, NetworkPolicySpec, Object, ObjectMeta, Peer, Pod, PodSpec, PodStatus,
    PolicyPort, PolicyType,
};
pub use parse::{parse_dir, parse_file, parse_yaml};
pub use selector::{LabelSelector, LabelSelectorRequirement, SelectorOperator};

/// `apiVersion` of NetworkPolicy.
pub const NETWORKING_V1: &str = "networking.k8s.io/v1";
/// `apiVersion` of Namespace and Pod.
pub const CORE_V1: &str = "v1";
/// The label the API server puts on every namespace, value = the namespace's name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Namespace of a namespaced object whose `metadata.namespace` is absent.
pub const DEFAULT_NAMESPACE: &str = "default";
