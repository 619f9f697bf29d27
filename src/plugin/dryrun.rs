//! The operator's own engine run on what one list of each kind read, pure:
//! the policies acting in a namespace (`apply::policies`), their
//! neighbourhood, and what one policy's decision would carry out on one
//! workload object (`apply::decide`, `apply::preview`). `diff` and
//! `explain` show its results, so they say what the operator would do,
//! not a guess at it.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use kube::core::Selector;
use serde_json::Value;

use crate::admission::mutate::workload_of;
use crate::api::cluster::ClusterLifecyclePolicy;
use crate::api::types::{LifecyclePolicy, WorkloadKind};
use crate::apply::decide::{Decision, Intent, Scope, decide};
use crate::apply::ledger::Via;
use crate::apply::neighbours::{Neighbourhood, Neighbourhoods, Neighbours};
use crate::apply::policies::Policies;
use crate::apply::preview::carry_out;

/// Every policy there is, as read.
pub struct World {
    pub policies: Policies,
    neighbours: Neighbours,
}

impl World {
    pub fn new(
        namespaced: Vec<LifecyclePolicy>,
        cluster: Vec<ClusterLifecyclePolicy>,
        namespaces: Vec<Namespace>,
        operator_namespace: &str,
    ) -> Self {
        World {
            policies: Policies::from_lists(namespaced, cluster, namespaces, operator_namespace),
            neighbours: Neighbours::default(),
        }
    }

    pub fn neighbourhood(&self, ns: &str) -> Arc<Neighbourhood> {
        self.neighbours.of(&self.policies, ns)
    }

    /// The policies acting in `ns`, as the engine sees them.
    pub fn acting(&self, ns: &str) -> Vec<Arc<LifecyclePolicy>> {
        self.policies.in_namespace(ns).acting().cloned().collect()
    }
}

/// One policy's decision on one workload object, and the object after its
/// writes (None: it writes nothing now).
pub struct Previewed {
    pub decision: Decision,
    pub after: Option<Value>,
}

/// What `policy` (`active`: false to release everything it holds) would
/// do to `object` (of `kind`, in `ns`); None when it has nothing to decide
/// there (not selected, nothing held).
pub fn preview(
    policy: &LifecyclePolicy,
    active: bool,
    object: &Value,
    kind: WorkloadKind,
    ns: &str,
    neighbourhood: &Arc<Neighbourhood>,
    now: Timestamp,
) -> Option<Previewed> {
    let w = workload_of(object, kind, ns)?;
    // A selector that does not parse selects nothing (the status says so).
    let selector = Selector::try_from(LabelSelector::from(&policy.spec.selector)).ok()?;
    let neighbours = Neighbourhoods::One(neighbourhood.clone());
    let none = BTreeSet::new();
    let scope = Scope {
        policy,
        selector: &selector,
        active,
        neighbours: &neighbours,
        revert: &none,
        hold: None,
        now,
        via: Via::Background,
    };
    let decision = decide(&scope, vec![Arc::new(w)]).into_iter().next()?;
    let after = match &decision.intent {
        Intent::Write(write) => carry_out(object, write).filter(|a| a != object),
        _ => None,
    };
    Some(Previewed { decision, after })
}
