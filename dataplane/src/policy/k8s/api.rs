//! Objects as the Kubernetes API server returns them (issue 10, point 5): the server has
//! already validated them, so xsknet enforces each one as the API defines it instead of
//! refusing what its own stricter file parser would refuse.
//!
//! * An `ipBlock` `cidr` or `except` with host bits set (`10.244.2.12/24`) means its
//!   network (`10.244.2.0/24`), and IPv4 octets with leading zeros (`010.001.2.0/24`,
//!   which the API server's legacy validation accepts) are read as decimal — the
//!   meaning Go's parser gave them when those objects were admitted.
//! * `metadata` is cut down to name, namespace and labels (uid, resourceVersion,
//!   managedFields, annotations are not policy input), `status` is dropped.
//! * Everything else goes through the very parser files and `xsknetctl policy apply`
//!   use ([`super::parse_yaml`]), so an object that xsknet still cannot enforce (an
//!   unknown field inside `spec` from a newer API version, a protocol it does not
//!   support) is refused with the object and field named; the caller reports it on that
//!   object and the others take effect.
//!
//! Files, etcd records and `policy apply` stay strict ([`super::leaf::Cidr`] refuses host
//! bits there: a typo in a file must not silently widen a rule).

use serde_json::Value;

use super::{parse_yaml, Object, PolicyError};

/// The API meaning of a CIDR string: leading-zero IPv4 octets as decimal, host bits
/// cleared. `None` when it is no CIDR at all (left for the parser to refuse by name).
pub fn normalize_cidr(s: &str) -> Option<String> {
    let (addr, prefix) = s.split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    if let Ok(v6) = addr.parse::<std::net::Ipv6Addr>() {
        if prefix > 128 {
            return None;
        }
        let bits = u128::from(v6);
        let mask = if prefix == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(prefix))
        };
        return Some(format!(
            "{}/{prefix}",
            std::net::Ipv6Addr::from(bits & mask)
        ));
    }
    let octets: Vec<&str> = addr.split('.').collect();
    if octets.len() != 4 || prefix > 32 {
        return None;
    }
    let mut v = 0u32;
    for o in octets {
        if o.is_empty() || o.len() > 3 || !o.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u32 = o.parse().ok()?;
        if n > 255 {
            return None;
        }
        v = (v << 8) | n;
    }
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    Some(format!("{}/{prefix}", std::net::Ipv4Addr::from(v & mask)))
}

/// Rewrite every `ipBlock` of `spec.ingress[].from[]` and `spec.egress[].to[]` to its
/// API meaning; returns the (path, from, to) of each value changed.
fn normalize_ip_blocks(spec: &mut Value) -> Vec<(String, String, String)> {
    let mut changed = Vec::new();
    for (dir, peers) in [("ingress", "from"), ("egress", "to")] {
        let Some(rules) = spec.get_mut(dir).and_then(Value::as_array_mut) else {
            continue;
        };
        for (i, rule) in rules.iter_mut().enumerate() {
            let Some(list) = rule.get_mut(peers).and_then(Value::as_array_mut) else {
                continue;
            };
            for (j, peer) in list.iter_mut().enumerate() {
                let Some(block) = peer.get_mut("ipBlock").and_then(Value::as_object_mut) else {
                    continue;
                };
                let at = format!("spec.{dir}[{i}].{peers}[{j}].ipBlock");
                if let Some(Value::String(c)) = block.get_mut("cidr") {
                    if let Some(n) = normalize_cidr(c).filter(|n| n != c) {
                        changed.push((format!("{at}.cidr"), c.clone(), n.clone()));
                        *c = n;
                    }
                }
                if let Some(Value::Array(except)) = block.get_mut("except") {
                    for (k, e) in except.iter_mut().enumerate() {
                        if let Value::String(c) = e {
                            if let Some(n) = normalize_cidr(c).filter(|n| n != c) {
                                changed.push((format!("{at}.except[{k}]"), c.clone(), n.clone()));
                                *c = n;
                            }
                        }
                    }
                }
            }
        }
    }
    changed
}

/// One Namespace or NetworkPolicy (or Pod) as the API returned it, in JSON, to the
/// typed object with the API's meaning (module doc). The normalisations made are
/// logged at debug level with the object named.
pub fn from_api_json(mut value: Value) -> Result<Object, PolicyError> {
    if let Some(obj) = value.as_object_mut() {
        obj.remove("status");
        if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
            meta.retain(|k, _| matches!(k.as_str(), "name" | "namespace" | "labels"));
        }
        if obj.get("kind").and_then(Value::as_str) == Some("NetworkPolicy") {
            if let Some(spec) = obj.get_mut("spec") {
                for (at, from, to) in normalize_ip_blocks(spec) {
                    tracing::debug!(field = %at, %from, %to, "ipBlock read with the API's meaning");
                }
            }
        }
    }
    let text = value.to_string();
    let mut objects = parse_yaml(&text, None)?;
    match (objects.pop(), objects.is_empty()) {
        (Some(o), true) => Ok(o),
        _ => Err(PolicyError::Invalid {
            file: None,
            object: "API object".into(),
            field: String::new(),
            message: "expected exactly one object".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::k8s::{Cidr, Object};

    #[test]
    fn cidrs_mean_their_network_and_leading_zeros_are_decimal() {
        for (input, want) in [
            ("10.244.2.12/24", "10.244.2.0/24"),
            ("010.001.2.0/24", "10.1.2.0/24"),
            ("192.168.1.1/32", "192.168.1.1/32"),
            ("10.0.0.1/0", "0.0.0.0/0"),
            ("2001:db8::1/64", "2001:db8::/64"),
        ] {
            assert_eq!(normalize_cidr(input).as_deref(), Some(want), "{input}");
        }
        for bad in [
            "10.0.0.0",
            "10.0.0.256/8",
            "10.0.0.0/33",
            "a.b.c.d/8",
            "1.2.3/8",
        ] {
            assert_eq!(normalize_cidr(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_api_policy_with_host_bits_is_enforced_as_its_network() {
        let json = serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "x", "uid": "u-1", "resourceVersion": "7",
                         "managedFields": [{"manager": "kubectl"}], "annotations": {"a": "b"}},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"ipBlock": {"cidr": "10.244.2.12/24",
                                                      "except": ["010.244.002.128/25"]}}]}]}
        });
        let Object::NetworkPolicy(p) = from_api_json(json).unwrap() else {
            panic!()
        };
        let b = p.spec.egress.as_ref().unwrap()[0].to.as_ref().unwrap()[0]
            .ip_block
            .clone()
            .unwrap();
        assert_eq!(b.cidr, "10.244.2.0/24".parse::<Cidr>().unwrap());
        assert_eq!(b.except, vec!["10.244.2.128/25".parse::<Cidr>().unwrap()]);
        // The strict file parser still refuses the same text.
        assert!(crate::policy::k8s::parse_yaml(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  egress:\n  - to: [{ipBlock: {cidr: 10.244.2.12/24}}]\n",
            None
        )
        .is_err());
    }

    #[test]
    fn an_unenforceable_object_is_refused_by_name() {
        let json = serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "future", "namespace": "x"},
            "spec": {"podSelector": {}, "newField": true}
        });
        let e = from_api_json(json).unwrap_err().to_string();
        assert!(e.contains("x/future") && e.contains("newField"), "{e}");
    }
}
