//! The mutation, pure: a workload as a request would write it, and the
//! policies the webhook may inject for, in; the workload as the background
//! path would leave it out. Each policy decides on it through the same
//! `apply::decide` as a reconcile (precedence, conflicts, the ledger and its
//! originals), and its writes are carried out on the object itself
//! (`apply::preview`). So the reconcile that follows finds the template as it
//! wants it and only takes the fields over (see `ledger::Via`).

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::core::Selector;
use serde_json::Value;

use crate::api::types::{LifecyclePolicy, WorkloadKind};
use crate::apply::decide::{Intent, Scope, decide};
use crate::apply::ledger::Via;
use crate::apply::neighbours::{Neighbourhood, Neighbourhoods};
use crate::apply::preview::carry_out;
use crate::apply::workload::{self, Workload};

/// A policy the webhook injects for (it passed `gate::admits`).
pub struct Admissible {
    pub policy: Arc<LifecyclePolicy>,
    pub selector: Selector,
}

/// The object as the background path would leave it, and the policies
/// (`LifecyclePolicy::reference`) that changed it.
#[derive(Debug, PartialEq)]
pub struct Mutated {
    pub object: Value,
    pub by: Vec<String>,
}

/// Carries out, on `object` (of `kind`, in `namespace`), what each policy
/// in turn would write; None when nothing changes.
pub fn mutate(
    object: &Value,
    kind: WorkloadKind,
    namespace: &str,
    neighbourhood: &Arc<Neighbourhood>,
    policies: &[Admissible],
    now: Timestamp,
) -> Option<Mutated> {
    let neighbours = Neighbourhoods::One(neighbourhood.clone());
    let none = BTreeSet::new();
    let mut current = object.clone();
    let mut by = Vec::new();
    for a in policies {
        let w = workload_of(&current, kind, namespace)?;
        let scope = Scope {
            policy: &a.policy,
            selector: &a.selector,
            active: true,
            neighbours: &neighbours,
            revert: &none,
            hold: None,
            now,
            via: Via::Admission,
        };
        for d in decide(&scope, vec![Arc::new(w)]) {
            let Intent::Write(write) = d.intent else {
                continue;
            };
            if let Some(next) = carry_out(&current, &write).filter(|n| *n != current) {
                current = next;
                by.push(a.policy.reference());
            }
        }
    }
    (current != *object).then_some(Mutated {
        object: current,
        by,
    })
}

/// The workload as planning reads it, from a request's object.
pub(crate) fn workload_of(object: &Value, kind: WorkloadKind, namespace: &str) -> Option<Workload> {
    let mut w: Workload = serde_json::from_value(object.clone()).ok()?;
    w.kind = kind;
    // A create may leave the namespace to the URL.
    w.metadata.namespace = Some(namespace.to_string());
    workload::trim(&mut w);
    Some(w)
}

#[cfg(test)]
mod tests;
