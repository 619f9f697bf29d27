//! Every policy the engine acts with, read from the watch caches: a
//! namespace's own policies, and the cluster policies (as the engine sees
//! them, `ClusterLifecyclePolicy::view`) whose namespaceSelector takes it.
//! The observer and the reconciler ask the same questions of it, so both
//! see the same policies in a namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::Selector;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::cluster::{ClusterLifecyclePolicy, Override};
use crate::api::identity::PolicyId;
use crate::api::types::LifecyclePolicy;
use crate::apply::namespaces::{NamespaceScope, Selection, Verdict};
use crate::apply::precedence::Tier;

/// The caches of both kinds and of the namespaces' labels.
#[derive(Clone)]
pub struct Policies {
    pub namespaced: Store<LifecyclePolicy>,
    /// None where cluster policies are not served.
    pub cluster: Option<ClusterSide>,
}

#[derive(Clone)]
pub struct ClusterSide {
    pub policies: Store<ClusterLifecyclePolicy>,
    pub namespaces: Store<Namespace>,
    /// The operator's own namespace: protected.
    pub operator_namespace: String,
}

/// A policy that can act in the namespace, as the index is built from.
#[derive(Clone)]
pub struct Member {
    pub policy: Arc<LifecyclePolicy>,
    pub tier: Tier,
    /// It selects the namespace (always, for the namespace's own).
    pub here: bool,
}

impl Member {
    pub fn team(p: &Arc<LifecyclePolicy>) -> Self {
        Member {
            policy: p.clone(),
            tier: Tier::Team,
            here: true,
        }
    }
}

/// A namespace's policies: its own, and every cluster policy, with its tier
/// and whether it takes the namespace (one that does not may still hold
/// ledgers there, to hand back).
pub struct InNamespace {
    pub own: Vec<Arc<LifecyclePolicy>>,
    pub cluster: Vec<Member>,
}

impl InNamespace {
    /// The policies acting here: the namespace's own and the cluster ones taking it.
    pub fn acting(&self) -> impl Iterator<Item = &Arc<LifecyclePolicy>> {
        let cluster = self.cluster.iter().filter(|m| m.here).map(|m| &m.policy);
        self.own.iter().chain(cluster)
    }
}

impl Policies {
    /// Namespaced policies only (the operator without cluster policies).
    pub fn namespaced(store: Store<LifecyclePolicy>) -> Self {
        Policies {
            namespaced: store,
            cluster: None,
        }
    }

    /// Caches holding exactly these objects, as one list of each reads
    /// them (`kubectl lifecycle` has no watches; tests build them too).
    pub fn from_lists(
        namespaced: Vec<LifecyclePolicy>,
        cluster: Vec<ClusterLifecyclePolicy>,
        namespaces: Vec<Namespace>,
        operator_namespace: &str,
    ) -> Self {
        Policies {
            namespaced: cache(namespaced),
            cluster: Some(ClusterSide {
                policies: cache(cluster),
                namespaces: cache(namespaces),
                operator_namespace: operator_namespace.to_string(),
            }),
        }
    }

    /// The policies acting in namespace `ns`.
    pub fn in_namespace(&self, ns: &str) -> InNamespace {
        let own = self
            .namespaced
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
            .collect();
        let cluster = match &self.cluster {
            None => Vec::new(),
            Some(side) => {
                let labels = side.labels(ns);
                side.policies
                    .state()
                    .into_iter()
                    .map(|c| Member {
                        here: labels
                            .as_ref()
                            .is_some_and(|l| side.scope_verdict(&c, ns, l) == Verdict::Selected),
                        tier: tier(&c),
                        policy: Arc::new(c.view()),
                    })
                    .collect()
            }
        };
        InNamespace { own, cluster }
    }

    /// How many policies there are, of both kinds.
    pub fn count(&self) -> usize {
        let cluster = self
            .cluster
            .as_ref()
            .map_or(0, |s| s.policies.state().len());
        self.namespaced.state().len() + cluster
    }

    /// The namespace is in the namespaces' cache (where cluster policies are served).
    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|side| side.namespaces.get(&ObjectRef::new(ns)).is_some())
    }

    /// Waits until every cache has had its first list.
    pub async fn wait_ready(&self) {
        crate::runtime::ready::wait_ready(&self.namespaced).await;
        if let Some(side) = &self.cluster {
            crate::runtime::ready::wait_ready(&side.policies).await;
            crate::runtime::ready::wait_ready(&side.namespaces).await;
        }
    }

    /// How markers and the observer name every policy there is.
    pub fn references(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .namespaced
            .state()
            .iter()
            .map(|p| p.reference())
            .collect();
        if let Some(side) = &self.cluster {
            out.extend(side.policies.state().iter().map(|c| {
                let name = c.metadata.name.clone().unwrap_or_default();
                PolicyId::Cluster { name }.reference()
            }));
        }
        out
    }
}

impl ClusterSide {
    fn labels(&self, ns: &str) -> Option<BTreeMap<String, String>> {
        let n = self.namespaces.get(&ObjectRef::new(ns))?;
        Some(n.metadata.labels.clone().unwrap_or_default())
    }

    fn scope_verdict(
        &self,
        c: &ClusterLifecyclePolicy,
        ns: &str,
        labels: &BTreeMap<String, String>,
    ) -> Verdict {
        match selector(c) {
            None => Verdict::NotSelected,
            Some(selector) => self.scope(c, &selector).verdict(ns, labels),
        }
    }

    fn scope<'a>(
        &'a self,
        c: &'a ClusterLifecyclePolicy,
        selector: &'a Selector,
    ) -> NamespaceScope<'a> {
        NamespaceScope {
            selector,
            allowed: &c.spec.namespaces,
            operator_namespace: &self.operator_namespace,
        }
    }

    /// The namespaces a cluster policy acts in, and the protected ones it
    /// would have taken.
    pub fn namespaces_of(&self, c: &ClusterLifecyclePolicy) -> Selection {
        let Some(selector) = selector(c) else {
            return Selection::default();
        };
        let scope = self.scope(c, &selector);
        let all = self.namespaces.state();
        let empty = BTreeMap::new();
        scope.select(all.iter().map(|n| {
            (
                n.metadata.name.as_deref().unwrap_or_default(),
                n.metadata.labels.as_ref().unwrap_or(&empty),
            )
        }))
    }
}

/// A synced cache holding `objects`.
pub fn cache<K>(objects: impl IntoIterator<Item = K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    use kube::runtime::watcher::Event;
    let mut w = kube::runtime::reflector::store::Writer::default();
    w.apply_watcher_event(&Event::Init);
    for o in objects {
        w.apply_watcher_event(&Event::InitApply(o));
    }
    w.apply_watcher_event(&Event::InitDone);
    w.as_reader()
}

/// The namespaceSelector, parsed; one that does not parse selects nothing.
fn selector(c: &ClusterLifecyclePolicy) -> Option<Selector> {
    Selector::try_from(LabelSelector::from(&c.spec.namespace_selector)).ok()
}

fn tier(c: &ClusterLifecyclePolicy) -> Tier {
    match c.spec.override_ {
        Override::Forbid => Tier::Mandate,
        Override::Allow => Tier::Platform,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::fixtures::{cluster_policy, policies};
    use serde_json::json;

    fn here(p: &Policies, ns: &str) -> Vec<(String, bool)> {
        let n = p.in_namespace(ns);
        let mut out: Vec<(String, bool)> = n
            .cluster
            .iter()
            .map(|m| (m.policy.id().owner(), m.here))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_cluster_policy_acts_where_its_namespace_selector_and_the_protection_let_it() {
        let all = cluster_policy(
            "all",
            json!({"spec": {"namespaceSelector": {"matchLabels": null}}}),
        );
        let sys = cluster_policy(
            "sys",
            json!({"spec": {"namespaceSelector": {"matchLabels": null}, "namespaces": ["kube-system"], "override": "Forbid"}}),
        );
        let teams = cluster_policy("teams", json!({}));
        let p = policies(
            &[],
            &[all, sys, teams],
            &[
                ("team-a", json!({"team": "a"})),
                ("other", json!({})),
                ("kube-system", json!({})),
                ("lco-system", json!({"team": "a"})),
            ],
        );
        let yes = |n: &str| (n.to_string(), true);
        let no = |n: &str| (n.to_string(), false);
        assert_eq!(
            here(&p, "team-a"),
            [yes("cluster_all"), yes("cluster_sys"), yes("cluster_teams")]
        );
        assert_eq!(
            here(&p, "other"),
            [yes("cluster_all"), yes("cluster_sys"), no("cluster_teams")]
        );
        assert_eq!(
            here(&p, "kube-system"),
            [no("cluster_all"), yes("cluster_sys"), no("cluster_teams")]
        );
        // The operator's own namespace, whatever its labels.
        assert_eq!(
            here(&p, "lco-system"),
            [no("cluster_all"), no("cluster_sys"), no("cluster_teams")]
        );
        // A namespace the cache does not know yet: nobody acts there.
        assert_eq!(
            here(&p, "new"),
            [no("cluster_all"), no("cluster_sys"), no("cluster_teams")]
        );
        let n = p.in_namespace("kube-system");
        let acting: Vec<_> = n.cluster.iter().filter(|m| m.here).collect();
        assert_eq!(acting.len(), 1);
        assert_eq!(acting[0].tier, Tier::Mandate);
        assert_eq!(n.acting().count(), 1);
        assert!(p.references().contains("sys"));
        let side = p.cluster.as_ref().unwrap();
        let all = side
            .policies
            .state()
            .into_iter()
            .find(|c| c.metadata.name.as_deref() == Some("all"))
            .unwrap();
        let sel = side.namespaces_of(&all);
        assert_eq!(
            sel.selected,
            ["other".to_string(), "team-a".to_string()].into()
        );
        assert_eq!(
            sel.protected,
            ["kube-system".to_string(), "lco-system".to_string()].into()
        );
    }
}
