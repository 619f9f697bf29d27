//! The policies that can act in one namespace (its own, and the cluster
//! policies that select it) as contention needs them, indexed once per
//! change of any of them instead of once per reconcile: rendered hooks,
//! parsed selectors, precedence ranks, and which of them select each
//! workload. Many policies in one namespace then cost O(policies) when one
//! of them changes and O(workloads) per reconcile, not O(policies ×
//! workloads) for every reconcile of every one of them.
//!
//! [`Neighbourhood`] is pure (policies in, answers out; its selection memo
//! is a cache of a pure function); [`Neighbours`] keeps one per namespace,
//! rebuilt when the namespace's policies' specs, identities or deletions
//! change (a status write changes none of them).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use crate::api::types::{LifecyclePolicy, LifecyclePolicySpec};
use crate::apply::ledger::ledger_key;
use crate::apply::plan::{self, Contender};
use crate::apply::policies::{Member, Policies};
use crate::apply::precedence::{self, Tier};
use crate::apply::workload::{PodShape, Workload};

/// What of a policy its neighbours depend on: a change to anything else
/// (its status) keeps the index.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Print {
    name: String,
    tier: Tier,
    here: bool,
    uid: Option<String>,
    generation: Option<i64>,
    deleting: bool,
}

impl Print {
    fn of(m: &Member) -> Self {
        let p = &m.policy;
        Print {
            name: p.id().owner(),
            tier: m.tier,
            here: m.here,
            uid: p.metadata.uid.clone(),
            generation: p.metadata.generation,
            deleting: p.metadata.deletion_timestamp.is_some(),
        }
    }
}

/// A policy of the namespace, rendered and parsed once.
pub struct Rival {
    pub policy: Arc<LifecyclePolicy>,
    pub tier: Tier,
    /// It acts in this namespace (a cluster policy may hold ledgers in one
    /// it selects no more: it is known, and competes for nothing).
    here: bool,
    pub spec: LifecyclePolicySpec,
    /// The name its ledgers carry (`PolicyId::owner`).
    owner: String,
    selector: Option<Selector>,
}

impl Rival {
    fn new(m: &Member) -> Self {
        let p = &m.policy;
        Rival {
            policy: p.clone(),
            tier: m.tier,
            here: m.here,
            spec: p.rendered(),
            owner: p.id().owner(),
            selector: Selector::try_from(LabelSelector::from(&p.spec.selector)).ok(),
        }
    }

    fn name(&self) -> &str {
        &self.owner
    }

    fn selects(&self, w: &Workload) -> bool {
        self.here
            && self
                .selector
                .as_ref()
                .is_some_and(|s| s.matches(w.labels()))
    }
}

/// Which rivals select one version (resourceVersion) of a workload.
struct Selection {
    version: String,
    rivals: Arc<[usize]>,
}

/// The policies that can act in one namespace (its own, and the cluster
/// policies that select it), ranked by precedence (see `apply::precedence`).
pub struct Neighbourhood {
    prints: Vec<Print>,
    rivals: Vec<Rival>,
    ranks: HashMap<String, usize>,
    /// By workload uid.
    selections: Mutex<HashMap<String, Selection>>,
}

impl Neighbourhood {
    /// `policies`: every policy of one namespace, in any order.
    pub fn new(policies: &[Arc<LifecyclePolicy>]) -> Self {
        Self::with_cluster(policies, &[])
    }

    /// The namespace's own policies and the cluster policies (as the engine
    /// sees them, `ClusterLifecyclePolicy::view`), each with its tier and
    /// whether it selects this namespace.
    pub fn with_cluster(policies: &[Arc<LifecyclePolicy>], cluster: &[Member]) -> Self {
        let mut all: Vec<Member> = policies.iter().map(Member::team).collect();
        all.extend(cluster.iter().cloned());
        all.sort_by_key(|m| {
            let created = m.policy.metadata.creation_timestamp.as_ref().map(|t| t.0);
            precedence::key(m.tier, created, &m.policy.id().owner())
        });
        let prints = prints(&all);
        let rivals: Vec<Rival> = all.iter().map(Rival::new).collect();
        let ranks = rivals
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name().to_string(), i))
            .collect();
        Neighbourhood {
            prints,
            rivals,
            ranks,
            selections: Mutex::default(),
        }
    }

    fn has_cluster(&self) -> bool {
        self.rivals.iter().any(|r| r.tier != Tier::Team)
    }

    /// The namespace still has this policy (being deleted or not).
    pub fn has(&self, name: &str) -> bool {
        self.ranks.contains_key(name)
    }

    /// The policy acts in this namespace: a cluster policy whose
    /// namespaceSelector takes it (a namespaced one always does).
    pub fn acts(&self, name: &str) -> bool {
        self.ranks.get(name).is_some_and(|&i| self.rivals[i].here)
    }

    /// Names of the policies being deleted.
    pub fn deleting(&self) -> BTreeSet<&str> {
        self.rivals
            .iter()
            .filter(|r| r.policy.metadata.deletion_timestamp.is_some())
            .map(Rival::name)
            .collect()
    }

    /// The rendered spec of a policy of the namespace.
    pub fn rendered(&self, name: &str) -> Option<&LifecyclePolicySpec> {
        self.ranks.get(name).map(|&i| &self.rivals[i].spec)
    }

    /// The policies competing for slots on this workload, oldest first.
    /// DryRun policies never block an enforcing one, but a DryRun policy
    /// (`me`) sees whom it would lose to; deleted ones compete no more.
    pub fn contenders(&self, me: &str, w: &Workload, pod: &PodShape) -> Vec<Contender<'_>> {
        self.selecting(w)
            .iter()
            .map(|&rank| (rank, &self.rivals[rank]))
            .filter(|(_, r)| r.policy.metadata.deletion_timestamp.is_none())
            .filter(|(_, r)| r.name() == me || plan::contends(r.policy.spec.mode))
            .map(|(rank, r)| Contender {
                name: r.name(),
                rank,
                wants: plan::wanted(&r.spec, pod),
            })
            .collect()
    }

    /// The policies a change to `w` can change the decision of: those whose
    /// kinds and selector take it, and those holding a ledger on it.
    pub fn concerned(&self, w: &Workload) -> Vec<&Arc<LifecyclePolicy>> {
        let selecting = self.selecting(w);
        self.rivals
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                (selecting.contains(i) && r.policy.spec.kinds.contains(&w.kind))
                    || w.metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key(&ledger_key(r.name())))
            })
            .map(|(_, r)| &r.policy)
            .collect()
    }

    /// Forgets the selections of workloads not in `keep` (gone ones), so
    /// the memo holds no more entries than the namespace has workloads.
    pub fn forget_except(&self, keep: &[Arc<Workload>]) {
        let mut memo = self.selections.lock().unwrap();
        if memo.len() > keep.len() {
            let kept: BTreeSet<&str> = keep
                .iter()
                .filter_map(|w| w.metadata.uid.as_deref())
                .collect();
            memo.retain(|uid, _| kept.contains(uid.as_str()));
        }
    }

    /// Ranks of the policies whose selector matches `w` (kinds aside),
    /// computed once per version (uid and resourceVersion) of the workload.
    fn selecting(&self, w: &Workload) -> Arc<[usize]> {
        let compute = || -> Arc<[usize]> {
            (0..self.rivals.len())
                .filter(|&i| self.rivals[i].selects(w))
                .collect()
        };
        // Any label change makes a new resourceVersion; without one (a copy
        // not from the API), nothing says the labels are the same.
        let (Some(uid), Some(version)) = (&w.metadata.uid, &w.metadata.resource_version) else {
            return compute();
        };
        let mut memo = self.selections.lock().unwrap();
        if let Some(s) = memo.get(uid.as_str()).filter(|s| s.version == *version) {
            return s.rivals.clone();
        }
        let rivals = compute();
        memo.insert(
            uid.clone(),
            Selection {
                version: version.clone(),
                rivals: rivals.clone(),
            },
        );
        rivals
    }
}

/// The neighbourhoods one policy decides in: its namespace's, or, for a
/// cluster policy, one per namespace it reaches.
pub enum Neighbourhoods {
    /// Every workload's, whatever its namespace: a namespaced policy's.
    One(Arc<Neighbourhood>),
    ByNamespace(BTreeMap<String, Arc<Neighbourhood>>),
}

impl From<Neighbourhood> for Neighbourhoods {
    fn from(n: Neighbourhood) -> Self {
        Neighbourhoods::One(Arc::new(n))
    }
}

impl Neighbourhoods {
    /// The neighbourhood of the workload's namespace (None: not gathered,
    /// so nothing is decided there).
    pub fn of(&self, w: &Workload) -> Option<&Neighbourhood> {
        match self {
            Neighbourhoods::One(n) => Some(n),
            Neighbourhoods::ByNamespace(m) => m.get(w.metadata.namespace.as_deref()?).map(|n| &**n),
        }
    }

    /// Forgets the selections of workloads gone from each namespace.
    pub fn forget_except(&self, keep: &[Arc<Workload>]) {
        match self {
            Neighbourhoods::One(n) => n.forget_except(keep),
            Neighbourhoods::ByNamespace(m) => {
                for (ns, n) in m {
                    let here: Vec<Arc<Workload>> = keep
                        .iter()
                        .filter(|w| w.metadata.namespace.as_deref() == Some(ns))
                        .cloned()
                        .collect();
                    n.forget_except(&here);
                }
            }
        }
    }
}

fn prints(members: &[Member]) -> Vec<Print> {
    let mut p: Vec<Print> = members.iter().map(Print::of).collect();
    p.sort_by(|a, b| a.name.cmp(&b.name));
    p
}

/// One [`Neighbourhood`] per namespace, rebuilt when its policies change.
#[derive(Default)]
pub struct Neighbours {
    by_namespace: Mutex<HashMap<String, Arc<Neighbourhood>>>,
    builds: AtomicU64,
}

impl Neighbours {
    /// The namespace's neighbourhood as the policy caches have it now.
    pub fn of(&self, policies: &Policies, namespace: &str) -> Arc<Neighbourhood> {
        let here = policies.in_namespace(namespace);
        let mut members: Vec<Member> = here.own.iter().map(Member::team).collect();
        members.extend(here.cluster.iter().cloned());
        let prints = prints(&members);
        if let Some(n) = self.by_namespace.lock().unwrap().get(namespace)
            && n.prints == prints
        {
            return n.clone();
        }
        // Built unlocked: other namespaces' reconciles need not wait for it.
        let built = Arc::new(Neighbourhood::with_cluster(&here.own, &here.cluster));
        self.builds.fetch_add(1, Ordering::Relaxed);
        // Namespaces with no policy left keep no index; with cluster
        // policies, every namespace asked about keeps one (at most one
        // each) while it exists.
        let all = policies.namespaced.state();
        let live: BTreeSet<&str> = all
            .iter()
            .filter_map(|p| p.metadata.namespace.as_deref())
            .collect();
        let mut map = self.by_namespace.lock().unwrap();
        map.retain(|ns, n| {
            live.contains(ns.as_str()) || (n.has_cluster() && policies.namespace_exists(ns))
        });
        if !prints.is_empty() {
            map.insert(namespace.to_string(), built.clone());
        }
        built
    }

    /// The neighbourhoods of every namespace the workloads are in.
    pub fn around(&self, policies: &Policies, workloads: &[Arc<Workload>]) -> Neighbourhoods {
        let namespaces: BTreeSet<&str> = workloads
            .iter()
            .filter_map(|w| w.metadata.namespace.as_deref())
            .collect();
        Neighbourhoods::ByNamespace(
            namespaces
                .into_iter()
                .map(|ns| (ns.to_string(), self.of(policies, ns)))
                .collect(),
        )
    }

    /// How many neighbourhoods were built (a test and bench figure).
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::WorkloadKind;
    use crate::apply::fixtures;
    use crate::apply::policies::cache;
    use serde_json::{Value, json};

    fn policy(name: &str, created: i64, selector: Value, extra: Value) -> Arc<LifecyclePolicy> {
        let mut p = json!({
            "apiVersion": "lifecycle-operator.io/v1alpha1", "kind": "LifecyclePolicy",
            "metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}"), "generation": 1,
                         "creationTimestamp": format!("2025-01-01T00:00:{created:02}Z")},
            "spec": {"selector": {"matchLabels": selector}, "preStop": {"sleep": {"seconds": 1}}},
        });
        json_patch::merge(&mut p, &extra);
        Arc::new(serde_json::from_value(p).unwrap())
    }

    fn workload(name: &str, labels: Value, version: &str) -> Arc<Workload> {
        let mut w: Workload = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("w-{name}"),
                         "resourceVersion": version, "labels": labels},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}},
        }))
        .unwrap();
        w.kind = WorkloadKind::Deployment;
        Arc::new(w)
    }

    fn store(policies: &[Arc<LifecyclePolicy>]) -> Policies {
        Policies::namespaced(cache(policies.iter().map(|p| (**p).clone())))
    }

    /// A cluster policy as the engine sees it: no namespace.
    fn cluster(name: &str, created: i64) -> Arc<LifecyclePolicy> {
        let mut p = (*policy(name, created, json!({"app": "web"}), json!({}))).clone();
        p.metadata.namespace = None;
        Arc::new(p)
    }

    fn member(policy: Arc<LifecyclePolicy>, tier: Tier, here: bool) -> Member {
        Member { policy, tier, here }
    }

    fn names<'a>(c: &'a [Contender<'a>]) -> Vec<(&'a str, usize)> {
        c.iter().map(|c| (c.name, c.rank)).collect()
    }

    /// Namespaced policies, a cluster policy "c" taking namespaces labelled
    /// team=a, and the namespaces with their labels.
    fn with_cluster(policies: &[Arc<LifecyclePolicy>], namespaces: &[(&str, Value)]) -> Policies {
        fixtures::policies(
            policies,
            &[fixtures::cluster_policy("c", json!({}))],
            namespaces,
        )
    }

    #[test]
    fn a_team_policy_outranks_a_platform_one_and_a_mandate_outranks_both() {
        let team = policy("team", 30, json!({"app": "web"}), json!({}));
        let cluster = [
            member(cluster("old", 1), Tier::Platform, true),
            member(cluster("new", 50), Tier::Mandate, true),
            member(cluster("elsewhere", 0), Tier::Mandate, false),
        ];
        let n = Neighbourhood::with_cluster(&[team], &cluster);
        let w = workload("d", json!({"app": "web"}), "1");
        assert_eq!(
            names(&n.contenders("team", &w, w.pod())),
            [("cluster_new", 1), ("team", 2), ("cluster_old", 3)]
        );
        assert!(n.has("cluster_old") && !n.has("old"));
        // Known where it selects no more (its ledgers are not gone), but no contender.
        assert!(n.has("cluster_elsewhere"));
    }

    #[test]
    fn the_index_follows_the_cluster_policies_that_select_the_namespace() {
        let neighbours = Neighbours::default();
        let team = policy("team", 30, json!({"app": "web"}), json!({}));
        let labelled = with_cluster(std::slice::from_ref(&team), &[("ns", json!({"team": "a"}))]);
        let w = workload("d", json!({"app": "web"}), "1");
        let n = neighbours.of(&labelled, "ns");
        neighbours.of(&labelled, "ns");
        assert_eq!(neighbours.builds(), 1);
        // The platform policy yields to the team's.
        assert_eq!(
            names(&n.contenders("team", &w, w.pod())),
            [("team", 0), ("cluster_c", 1)]
        );
        // The namespace loses its label: the cluster policy is known there
        // still (it holds ledgers to hand back), but contends for nothing.
        let unlabelled = with_cluster(&[team], &[("ns", json!({}))]);
        let n = neighbours.of(&unlabelled, "ns");
        assert_eq!(neighbours.builds(), 2);
        assert!(n.has("cluster_c"));
        assert_eq!(names(&n.contenders("team", &w, w.pod())), [("team", 0)]);
        // Only a cluster policy in a namespace: its index is kept.
        let alone = with_cluster(&[], &[("other", json!({"team": "a"}))]);
        neighbours.of(&alone, "other");
        neighbours.of(&alone, "other");
        assert_eq!(neighbours.builds(), 3);
    }

    /// With cluster policies every namespace keeps an index, but only while
    /// it exists: the next index built forgets deleted namespaces.
    #[test]
    fn a_deleted_namespace_keeps_no_index() {
        let neighbours = Neighbours::default();
        let both = with_cluster(&[], &[("a", json!({"team": "a"})), ("b", json!({}))]);
        neighbours.of(&both, "a");
        neighbours.of(&both, "b");
        assert_eq!(neighbours.by_namespace.lock().unwrap().len(), 2);
        // "b" is deleted, "c" created: the next index built forgets "b".
        let later = with_cluster(&[], &[("a", json!({"team": "a"})), ("c", json!({}))]);
        neighbours.of(&later, "c");
        let mut kept: Vec<String> = neighbours
            .by_namespace
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        kept.sort();
        assert_eq!(kept, ["a", "c"]);
    }

    #[test]
    fn contenders_are_the_selecting_policies_oldest_first() {
        let ps = [
            policy("young", 30, json!({"app": "web"}), json!({})),
            policy("old", 10, json!({"app": "web"}), json!({})),
            policy("other", 20, json!({"app": "db"}), json!({})),
            policy(
                "dry",
                5,
                json!({"app": "web"}),
                json!({"spec": {"mode": "DryRun"}}),
            ),
            policy(
                "going",
                1,
                json!({"app": "web"}),
                json!({"metadata": {"deletionTimestamp": "2025-01-02T00:00:00Z"}}),
            ),
        ];
        let n = Neighbourhood::new(&ps);
        let w = workload("d", json!({"app": "web"}), "1");
        // Ranks are positions by precedence: going 0, dry 1, old 2, other 3, young 4.
        assert_eq!(
            names(&n.contenders("young", &w, w.pod())),
            [("old", 2), ("young", 4)]
        );
        assert_eq!(
            names(&n.contenders("dry", &w, w.pod())),
            [("dry", 1), ("old", 2), ("young", 4)]
        );
        assert_eq!(n.deleting(), BTreeSet::from(["going"]));
        assert!(n.has("going") && !n.has("nobody"));
    }

    #[test]
    fn a_selection_is_memoised_per_version_of_the_workload() {
        let n = Neighbourhood::new(&[policy("p", 1, json!({"app": "web"}), json!({}))]);
        let web = workload("d", json!({"app": "web"}), "1");
        assert_eq!(n.contenders("p", &web, web.pod()).len(), 1);
        // The same name, relabelled in a new version: selected no more.
        let db = workload("d", json!({"app": "db"}), "2");
        assert!(n.contenders("p", &db, db.pod()).is_empty());
        // The same version is answered from the memo (the API server never
        // relabels without a new version, so this copy shows the memo).
        let forged = workload("d", json!({"app": "web"}), "2");
        assert!(n.contenders("p", &forged, forged.pod()).is_empty());
        // A copy without a version is never taken from, nor put in, the memo.
        let mut loose = (*forged).clone();
        loose.metadata.resource_version = None;
        assert_eq!(n.contenders("p", &loose, loose.pod()).len(), 1);
        assert_eq!(n.selections.lock().unwrap().len(), 1);
        n.forget_except(&[]);
        assert!(n.selections.lock().unwrap().is_empty());
    }

    #[test]
    fn concerned_are_the_selecting_policies_of_its_kind_and_the_ledger_holders() {
        let ps = [
            policy("sel", 1, json!({"app": "web"}), json!({})),
            policy(
                "sts",
                2,
                json!({"app": "web"}),
                json!({"spec": {"kinds": ["StatefulSet"]}}),
            ),
            policy("held", 3, json!({"app": "db"}), json!({})),
            policy("none", 4, json!({"app": "db"}), json!({})),
        ];
        let n = Neighbourhood::new(&ps);
        let mut w = (*workload("d", json!({"app": "web"}), "1")).clone();
        w.metadata.annotations = Some([(ledger_key("held"), "{}".to_string())].into());
        let got: Vec<String> = n.concerned(&w).iter().map(|p| p.name_any()).collect();
        assert_eq!(got, ["sel", "held"]);
    }

    #[test]
    fn the_index_is_rebuilt_only_when_a_spec_identity_or_deletion_changes() {
        let neighbours = Neighbours::default();
        let p = policy("p", 1, json!({"app": "web"}), json!({}));
        let q = policy("q", 2, json!({"app": "web"}), json!({}));
        let first = neighbours.of(&store(&[p.clone(), q.clone()]), "ns");
        // Reconciles of either policy share it, and a status write keeps it.
        let status = policy(
            "p",
            1,
            json!({"app": "web"}),
            json!({"status": {"observedGeneration": 1}}),
        );
        let again = neighbours.of(&store(&[status, q.clone()]), "ns");
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(neighbours.builds(), 1);
        // A spec change (new generation), a deletion, a new policy: rebuilt.
        for changed in [
            vec![
                policy(
                    "p",
                    1,
                    json!({"app": "db"}),
                    json!({"metadata": {"generation": 2}}),
                ),
                q.clone(),
            ],
            vec![
                policy(
                    "p",
                    1,
                    json!({"app": "web"}),
                    json!({"metadata": {"deletionTimestamp": "2025-01-02T00:00:00Z"}}),
                ),
                q.clone(),
            ],
            vec![p.clone(), q.clone(), policy("r", 3, json!({}), json!({}))],
        ] {
            let before = neighbours.builds();
            let n = neighbours.of(&store(&changed), "ns");
            assert_eq!(neighbours.builds(), before + 1);
            assert_eq!(n.rivals.len(), changed.len());
        }
    }

    #[test]
    fn a_namespace_whose_policies_are_gone_keeps_no_index() {
        let neighbours = Neighbours::default();
        let mut other = (*policy("o", 1, json!({}), json!({}))).clone();
        other.metadata.namespace = Some("other".into());
        let other = Arc::new(other);
        let both = store(&[policy("p", 1, json!({}), json!({})), other.clone()]);
        neighbours.of(&both, "ns");
        neighbours.of(&both, "other");
        assert_eq!(neighbours.by_namespace.lock().unwrap().len(), 2);
        let empty = neighbours.of(&store(&[other]), "ns");
        assert!(empty.rivals.is_empty());
        let kept: Vec<String> = neighbours
            .by_namespace
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(kept, ["other"]);
    }
}
