//! The typed objects: NetworkPolicy (with its policyTypes inference and cross-field
//! rules: endPort against port, peer kinds, `except` inside `cidr`), Namespace, Pod
//! (named container ports) and [`Object`], one of them. They serialise back to the
//! Kubernetes shape they were read from.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::error::{invalid, PolicyError};
use super::leaf::{check_port_name, nullable, port_number, Cidr, PortRef, Protocol};
use super::selector::LabelSelector;

/// The part of `metadata` xsknet reads; other keys (annotations, uid, …) are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    /// Empty for cluster-scoped objects; `default` for namespaced ones when absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
}

/// `networking.k8s.io/v1` NetworkPolicy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicy {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    /// Absent `spec` is the zero spec: selects every pod of the namespace, Ingress.
    #[serde(default)]
    pub spec: NetworkPolicySpec,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySpec {
    /// Absent is the empty selector (every pod in the namespace), as in the Go type.
    #[serde(default, deserialize_with = "nullable")]
    pub pod_selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<PolicyType>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<IngressRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<EgressRule>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressRule {
    /// Absent or empty: every source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<Peer>>,
    /// Absent or empty: every port and protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PolicyPort>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    /// Absent or empty: every destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<Peer>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PolicyPort>>,
}

/// One entry of `from`/`to`: pod and namespace selectors (AND-ed), or an ipBlock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Peer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlockSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpBlockSpec {
    pub cidr: Cidr,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub except: Vec<Cidr>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyPort {
    /// Absent: TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Absent: every port of the protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i64>,
}

impl PolicyPort {
    pub fn protocol(&self) -> Protocol {
        self.protocol.unwrap_or_default()
    }
}

impl NetworkPolicy {
    /// Effective policyTypes, defaulted as the API server does: when the list is absent
    /// or empty, Ingress always, and Egress iff `spec.egress` has at least one rule
    /// (`egress: []` does not make a policy an egress policy).
    pub fn affects(&self, t: PolicyType) -> bool {
        match &self.spec.policy_types {
            Some(types) if !types.is_empty() => types.contains(&t),
            _ => match t {
                PolicyType::Ingress => true,
                PolicyType::Egress => self.spec.egress.as_ref().is_some_and(|e| !e.is_empty()),
            },
        }
    }

    pub fn ingress_rules(&self) -> &[IngressRule] {
        self.spec.ingress.as_deref().unwrap_or(&[])
    }

    pub fn egress_rules(&self) -> &[EgressRule] {
        self.spec.egress.as_deref().unwrap_or(&[])
    }

    pub(super) fn validate(&self, object: &str) -> Result<(), PolicyError> {
        let spec = &self.spec;
        spec.pod_selector.validate(object, "spec.podSelector")?;
        if let Some(types) = &spec.policy_types {
            if types.len() > 2 {
                return Err(invalid(
                    object,
                    "spec.policyTypes",
                    "may not specify more than two policyTypes",
                ));
            }
        }
        for (i, r) in self.ingress_rules().iter().enumerate() {
            let at = format!("spec.ingress[{i}]");
            validate_ports(object, &at, r.ports.as_deref().unwrap_or(&[]))?;
            validate_peers(
                object,
                &format!("{at}.from"),
                r.from.as_deref().unwrap_or(&[]),
            )?;
        }
        for (i, r) in self.egress_rules().iter().enumerate() {
            let at = format!("spec.egress[{i}]");
            validate_ports(object, &at, r.ports.as_deref().unwrap_or(&[]))?;
            validate_peers(object, &format!("{at}.to"), r.to.as_deref().unwrap_or(&[]))?;
        }
        if self.ingress_rules().len() > usize::from(u16::MAX)
            || self.egress_rules().len() > usize::from(u16::MAX)
        {
            return Err(invalid(
                object,
                "spec",
                "more than 65535 rules in one direction",
            ));
        }
        Ok(())
    }
}

fn validate_ports(object: &str, at: &str, ports: &[PolicyPort]) -> Result<(), PolicyError> {
    for (j, p) in ports.iter().enumerate() {
        let Some(end) = p.end_port else { continue };
        let field = format!("{at}.ports[{j}].endPort");
        match &p.port {
            None => {
                return Err(invalid(object, field, "may not be specified without port"));
            }
            Some(PortRef::Name(n)) => {
                return Err(invalid(
                    object,
                    field,
                    format!("may not be specified when port is non-numeric (port {n:?})"),
                ));
            }
            Some(PortRef::Number(port)) => {
                port_number(end).map_err(|m| invalid(object, field.clone(), m))?;
                if end < i64::from(*port) {
                    return Err(invalid(
                        object,
                        field,
                        format!("must be >= port (got {end} < {port})"),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn validate_peers(object: &str, at: &str, peers: &[Peer]) -> Result<(), PolicyError> {
    for (j, p) in peers.iter().enumerate() {
        let at = format!("{at}[{j}]");
        let kinds = usize::from(p.pod_selector.is_some())
            + usize::from(p.namespace_selector.is_some())
            + usize::from(p.ip_block.is_some());
        if kinds == 0 {
            return Err(invalid(
                object,
                at,
                "must specify a peer (podSelector, namespaceSelector or ipBlock)",
            ));
        }
        if p.ip_block.is_some() && kinds > 1 {
            return Err(invalid(
                object,
                at,
                "may not specify both ipBlock and another peer",
            ));
        }
        if let Some(s) = &p.pod_selector {
            s.validate(object, &format!("{at}.podSelector"))?;
        }
        if let Some(s) = &p.namespace_selector {
            s.validate(object, &format!("{at}.namespaceSelector"))?;
        }
        if let Some(b) = &p.ip_block {
            for (k, e) in b.except.iter().enumerate() {
                if !b.cidr.strictly_contains(e) {
                    return Err(invalid(
                        object,
                        format!("{at}.ipBlock.except[{k}]"),
                        format!("must be a strict subset of cidr {} (got {e})", b.cidr),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `v1` Namespace: its labels feed namespaceSelectors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
}

/// `v1` Pod: labels, named container ports and the pod IP (for `policy matrix` and
/// clusters described offline).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PodStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, deserialize_with = "nullable")]
    pub containers: Vec<Container>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ports: Vec<ContainerPort>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub container_port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<Ipv4Addr>,
}

/// A container port with a name, as named-port resolution needs it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

impl Pod {
    pub fn ip(&self) -> Option<Ipv4Addr> {
        self.status.as_ref().and_then(|s| s.pod_ip)
    }

    /// The named container ports (unnamed ones cannot be referenced by a policy).
    pub fn named_ports(&self) -> Vec<NamedPort> {
        self.spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .filter_map(|p| {
                Some(NamedPort {
                    name: p.name.clone()?,
                    port: u16::try_from(p.container_port).ok()?,
                    protocol: p.protocol.unwrap_or_default(),
                })
            })
            .collect()
    }

    pub(super) fn validate(&self, object: &str) -> Result<(), PolicyError> {
        let mut names = BTreeSet::new();
        for (i, c) in self.spec.containers.iter().enumerate() {
            for (j, p) in c.ports.iter().enumerate() {
                let at = format!("spec.containers[{i}].ports[{j}]");
                port_number(p.container_port)
                    .map_err(|m| invalid(object, format!("{at}.containerPort"), m))?;
                if let Some(n) = &p.name {
                    check_port_name(n).map_err(|m| invalid(object, format!("{at}.name"), m))?;
                    if !names.insert(n.as_str()) {
                        return Err(invalid(
                            object,
                            format!("{at}.name"),
                            format!("duplicate port name {n:?} in the pod"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// One validated document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Object {
    NetworkPolicy(NetworkPolicy),
    Namespace(Namespace),
    Pod(Pod),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::NetworkPolicy(_) => "NetworkPolicy",
            Object::Namespace(_) => "Namespace",
            Object::Pod(_) => "Pod",
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::NetworkPolicy(p) => &p.metadata,
            Object::Namespace(n) => &n.metadata,
            Object::Pod(p) => &p.metadata,
        }
    }

    /// `NetworkPolicy x/deny-all`, `Namespace x`.
    pub fn describe(&self) -> String {
        describe(self.kind(), self.metadata())
    }
}

pub(super) fn describe(kind: &str, m: &ObjectMeta) -> String {
    if m.namespace.is_empty() {
        format!("{kind} {}", m.name)
    } else {
        format!("{kind} {}/{}", m.namespace, m.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::k8s::parse_yaml;

    fn one_policy(spec: &str) -> NetworkPolicy {
        let y = format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n  namespace: x\nspec:\n{spec}"
        );
        match parse_yaml(&y, None).unwrap().pop() {
            Some(Object::NetworkPolicy(p)) => p,
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn policy_types_inference() {
        assert!(one_policy("  podSelector: {}\n").affects(PolicyType::Ingress));
        assert!(!one_policy("  podSelector: {}\n").affects(PolicyType::Egress));
        let p = one_policy("  podSelector: {}\n  egress: [{}]\n");
        assert!(p.affects(PolicyType::Ingress) && p.affects(PolicyType::Egress));
        // `egress: []` is zero rules: the API server does not add Egress.
        assert!(!one_policy("  podSelector: {}\n  egress: []\n").affects(PolicyType::Egress));
        let p = one_policy("  podSelector: {}\n  policyTypes: [Egress]\n");
        assert!(!p.affects(PolicyType::Ingress) && p.affects(PolicyType::Egress));
        let p = one_policy("  podSelector: {}\n  policyTypes: []\n  egress: [{}]\n");
        assert!(p.affects(PolicyType::Ingress) && p.affects(PolicyType::Egress));
    }
}
