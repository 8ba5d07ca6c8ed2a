//! Label selector evaluation (metav1.LabelSelector semantics).
//!
//! The apiserver does not check a LabelSelector inside a custom resource, so
//! a policy can carry one that Kubernetes would refuse elsewhere. Compiling
//! it first turns that into a clear status message instead of a guess.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// One requirement on a node's labels.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A selector ready to match. All requirements must hold (AND).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// Why a selector cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// Unknown operator.
    #[error("spec.nodeSelector.matchExpressions[{index}]: unknown operator {operator:?}; use In, NotIn, Exists or DoesNotExist")]
    UnknownOperator {
        /// Position in matchExpressions.
        index: usize,
        /// The operator given.
        operator: String,
    },
    /// In/NotIn without values.
    #[error(
        "spec.nodeSelector.matchExpressions[{index}]: operator {operator} needs at least one value"
    )]
    MissingValues {
        /// Position in matchExpressions.
        index: usize,
        /// In or NotIn.
        operator: String,
    },
    /// Exists/DoesNotExist with values.
    #[error("spec.nodeSelector.matchExpressions[{index}]: operator {operator} takes no values; remove `values`")]
    UnexpectedValues {
        /// Position in matchExpressions.
        index: usize,
        /// Exists or DoesNotExist.
        operator: String,
    },
    /// Empty key.
    #[error("spec.nodeSelector: a label key is empty")]
    EmptyKey,
}

impl Selector {
    /// Compile a LabelSelector. An empty selector matches every node.
    pub fn compile(sel: &LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            if k.is_empty() {
                return Err(SelectorError::EmptyKey);
            }
            requirements.push(Requirement::Equals(k.clone(), v.clone()));
        }
        for (index, expr) in sel.match_expressions.iter().flatten().enumerate() {
            if expr.key.is_empty() {
                return Err(SelectorError::EmptyKey);
            }
            let values = expr.values.clone().unwrap_or_default();
            let key = expr.key.clone();
            let op = expr.operator.as_str();
            let req = match op {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(SelectorError::MissingValues {
                        index,
                        operator: op.to_string(),
                    })
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(SelectorError::UnexpectedValues {
                        index,
                        operator: op.to_string(),
                    })
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                _ => {
                    return Err(SelectorError::UnknownOperator {
                        index,
                        operator: op.to_string(),
                    })
                }
            };
            requirements.push(req);
        }
        Ok(Self { requirements })
    }

    /// True when the labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            // NotIn matches nodes without the label (Kubernetes semantics).
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: if values.is_empty() {
                None
            } else {
                Some(values.iter().map(|v| v.to_string()).collect())
            },
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = Selector::compile(&LabelSelector::default()).expect("compiles");
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn operators() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("role", "edge")])),
            match_expressions: Some(vec![
                expr("zone", "In", &["a", "b"]),
                expr("tier", "NotIn", &["db"]),
                expr("ready", "Exists", &[]),
                expr("drain", "DoesNotExist", &[]),
            ]),
        };
        let s = Selector::compile(&sel).expect("compiles");
        assert!(s.matches(&labels(&[("role", "edge"), ("zone", "a"), ("ready", "")])));
        assert!(!s.matches(&labels(&[("role", "edge"), ("zone", "c"), ("ready", "")])));
        assert!(!s.matches(&labels(&[("role", "core"), ("zone", "a"), ("ready", "")])));
        assert!(!s.matches(&labels(&[
            ("role", "edge"),
            ("zone", "a"),
            ("ready", ""),
            ("tier", "db")
        ])));
        assert!(s.matches(&labels(&[
            ("role", "edge"),
            ("zone", "b"),
            ("ready", ""),
            ("tier", "web")
        ])));
        assert!(!s.matches(&labels(&[("role", "edge"), ("zone", "a")])));
        assert!(!s.matches(&labels(&[
            ("role", "edge"),
            ("zone", "a"),
            ("ready", ""),
            ("drain", "1")
        ])));
    }

    #[test]
    fn bad_selectors_are_explained() {
        let bad = |e| LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![e]),
        };
        let err = Selector::compile(&bad(expr("k", "Equals", &["v"]))).unwrap_err();
        assert!(
            err.to_string().contains("unknown operator \"Equals\""),
            "{err}"
        );
        let err = Selector::compile(&bad(expr("k", "In", &[]))).unwrap_err();
        assert!(
            err.to_string().contains("needs at least one value"),
            "{err}"
        );
        let err = Selector::compile(&bad(expr("k", "Exists", &["v"]))).unwrap_err();
        assert!(err.to_string().contains("takes no values"), "{err}");
        let err = Selector::compile(&bad(expr("", "Exists", &[]))).unwrap_err();
        assert_eq!(err, SelectorError::EmptyKey);
    }
}
