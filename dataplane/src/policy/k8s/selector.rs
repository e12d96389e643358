//! `metav1.LabelSelector`: matching a label set (matchLabels and matchExpressions, all
//! of which must hold) and the API server's checks of a selector's keys, operators and
//! values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::{invalid, PolicyError};
use super::leaf::nullable;
use super::names::{check_label_key, check_label_value};

/// `metav1.LabelSelector`. The empty selector matches everything; whether a selector
/// is *absent* is told by the `Option` around it in the peer or spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub match_labels: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// Upstream `labels.Selector` semantics: every matchLabels pair and every
    /// expression must hold; `NotIn` and `DoesNotExist` hold when the key is absent.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let value = labels.get(&e.key);
                match e.operator {
                    SelectorOperator::In => value.is_some_and(|v| e.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !e.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    pub(super) fn validate(&self, object: &str, path: &str) -> Result<(), PolicyError> {
        for (k, v) in &self.match_labels {
            check_label_key(k).map_err(|m| invalid(object, format!("{path}.matchLabels"), m))?;
            check_label_value(v)
                .map_err(|m| invalid(object, format!("{path}.matchLabels.{k}"), m))?;
        }
        for (i, e) in self.match_expressions.iter().enumerate() {
            let at = format!("{path}.matchExpressions[{i}]");
            check_label_key(&e.key).map_err(|m| invalid(object, format!("{at}.key"), m))?;
            match e.operator {
                SelectorOperator::In | SelectorOperator::NotIn if e.values.is_empty() => {
                    return Err(invalid(
                        object,
                        format!("{at}.values"),
                        format!("must be specified when operator is {:?}", e.operator),
                    ));
                }
                SelectorOperator::Exists | SelectorOperator::DoesNotExist
                    if !e.values.is_empty() =>
                {
                    return Err(invalid(
                        object,
                        format!("{at}.values"),
                        format!("may not be specified when operator is {:?}", e.operator),
                    ));
                }
                _ => {}
            }
            for (j, v) in e.values.iter().enumerate() {
                check_label_value(v)
                    .map_err(|m| invalid(object, format!("{at}.values[{j}]"), m))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_semantics() {
        let labels: BTreeMap<String, String> =
            [("pod".to_string(), "a".to_string())].into_iter().collect();
        let sel = |y: &str| -> LabelSelector { serde_yaml_ng::from_str(y).unwrap() };
        assert!(sel("{}").matches(&labels));
        assert!(sel("{}").matches(&BTreeMap::new()));
        assert!(sel("matchLabels: {pod: a}").matches(&labels));
        assert!(!sel("matchLabels: {pod: b}").matches(&labels));
        assert!(!sel("matchLabels: {pod: a, x: y}").matches(&labels));
        let e = |op: &str, vals: &str| {
            sel(&format!(
                "matchExpressions: [{{key: pod, operator: {op}, values: [{vals}]}}]"
            ))
        };
        assert!(e("In", "a, b").matches(&labels));
        assert!(!e("In", "b").matches(&labels));
        assert!(!e("In", "a").matches(&BTreeMap::new()));
        assert!(!e("NotIn", "a").matches(&labels));
        assert!(e("NotIn", "b").matches(&labels));
        assert!(
            e("NotIn", "a").matches(&BTreeMap::new()),
            "NotIn holds for absent keys"
        );
        assert!(sel("matchExpressions: [{key: pod, operator: Exists}]").matches(&labels));
        assert!(!sel("matchExpressions: [{key: pod, operator: DoesNotExist}]").matches(&labels));
        assert!(sel("matchExpressions: [{key: x, operator: DoesNotExist}]").matches(&labels));
    }
}
