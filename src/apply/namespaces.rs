//! Which namespaces a cluster policy acts in, pure: its namespaceSelector
//! over the namespaces' labels, but never a protected namespace (the control
//! plane's, the operator's own) unless the policy's allow list names it.
//! What the selector would have taken there is said, not done: a platform
//! team's `{}` must not reach into kube-system by accident.

use std::collections::{BTreeMap, BTreeSet};

use kube::core::{Selector, SelectorExt};

/// The control plane's namespaces: protected on every cluster.
pub const SYSTEM: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// What a cluster policy's namespace selection depends on.
pub struct NamespaceScope<'a> {
    pub selector: &'a Selector,
    /// Protected namespaces the policy may act in all the same (its
    /// `namespaces` allow list); the selector still has to take them.
    pub allowed: &'a BTreeSet<String>,
    /// Where the operator runs: protected too.
    pub operator_namespace: &'a str,
}

/// One namespace, as a cluster policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Selected,
    NotSelected,
    /// The selector takes it, but it is protected and not allowed.
    Protected,
}

impl NamespaceScope<'_> {
    pub fn verdict(&self, name: &str, labels: &BTreeMap<String, String>) -> Verdict {
        if !self.selector.matches(labels) {
            Verdict::NotSelected
        } else if self.protected(name) && !self.allowed.contains(name) {
            Verdict::Protected
        } else {
            Verdict::Selected
        }
    }

    fn protected(&self, name: &str) -> bool {
        SYSTEM.contains(&name) || name == self.operator_namespace
    }

    /// Every namespace the policy acts in, and the protected ones it would
    /// have taken (for its status).
    pub fn select<'n>(
        &self,
        namespaces: impl IntoIterator<Item = (&'n str, &'n BTreeMap<String, String>)>,
    ) -> Selection {
        let mut out = Selection::default();
        for (name, labels) in namespaces {
            match self.verdict(name, labels) {
                Verdict::Selected => out.selected.insert(name.to_string()),
                Verdict::Protected => out.protected.insert(name.to_string()),
                Verdict::NotSelected => false,
            };
        }
        out
    }
}

#[derive(Debug, Default, PartialEq)]
pub struct Selection {
    pub selected: BTreeSet<String>,
    /// Taken by the selector, left alone as protected.
    pub protected: BTreeSet<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use serde_json::json;

    fn selector(v: serde_json::Value) -> Selector {
        let s: LabelSelector = serde_json::from_value(v).unwrap();
        Selector::try_from(s).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_empty_selector_takes_every_namespace_but_the_protected_ones() {
        let all = selector(json!({}));
        let allowed = BTreeSet::new();
        let scope = NamespaceScope {
            selector: &all,
            allowed: &allowed,
            operator_namespace: "lco-system",
        };
        let none = labels(&[]);
        let names = [
            "team-a",
            "default",
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "lco-system",
        ];
        let got = scope.select(names.iter().map(|n| (*n, &none)));
        assert_eq!(
            got.selected,
            BTreeSet::from(["default".to_string(), "team-a".to_string()])
        );
        assert_eq!(got.protected.len(), 4);
    }

    #[test]
    fn the_allow_list_opens_a_protected_namespace_to_the_selector_only() {
        let web = selector(json!({"matchLabels": {"tier": "web"}}));
        let allowed = BTreeSet::from(["kube-system".to_string(), "lco-system".to_string()]);
        let scope = NamespaceScope {
            selector: &web,
            allowed: &allowed,
            operator_namespace: "lco-system",
        };
        let tier = labels(&[("tier", "web")]);
        let bare = labels(&[]);
        assert_eq!(scope.verdict("kube-system", &tier), Verdict::Selected);
        assert_eq!(scope.verdict("lco-system", &tier), Verdict::Selected);
        // Allowed, but the selector does not take it.
        assert_eq!(scope.verdict("kube-system", &bare), Verdict::NotSelected);
        assert_eq!(scope.verdict("kube-public", &tier), Verdict::Protected);
        assert_eq!(scope.verdict("team-a", &tier), Verdict::Selected);
        assert_eq!(scope.verdict("team-a", &bare), Verdict::NotSelected);
    }

    #[test]
    fn match_expressions_select_namespaces_as_they_select_workloads() {
        let teams = selector(json!({"matchExpressions": [
            {"key": "team", "operator": "Exists"},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
        ]}));
        let allowed = BTreeSet::new();
        let scope = NamespaceScope {
            selector: &teams,
            allowed: &allowed,
            operator_namespace: "lco-system",
        };
        let cases = [
            (labels(&[("team", "a")]), Verdict::Selected),
            (labels(&[("team", "a"), ("env", "prod")]), Verdict::Selected),
            (
                labels(&[("team", "a"), ("env", "dev")]),
                Verdict::NotSelected,
            ),
            (labels(&[("env", "prod")]), Verdict::NotSelected),
        ];
        for (l, want) in cases {
            assert_eq!(scope.verdict("ns", &l), want, "{l:?}");
        }
    }
}
