//! One AdmissionReview in, its response out, from the operator's caches
//! only: no API call on the admission path, so every replica answers (not
//! only the leader) and a slow API server cannot slow a write down further.
//! Whatever cannot be read passes unchanged: the background path converges
//! as it does without a webhook.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use kube::core::GroupVersionKind;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};

use crate::admission::gate;
use crate::admission::mutate::{self, Admissible};
use crate::api::types::{LifecyclePolicy, WorkloadKind};
use crate::apply::neighbours::{Neighbourhood, Neighbours};
use crate::apply::policies::Policies;

/// What the webhook reads: the policy caches and the neighbourhoods index
/// the controllers share.
pub struct Caches<'a> {
    pub policies: &'a Policies,
    pub neighbours: &'a Neighbours,
}

/// What became of one request (for the metrics and the log).
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// The hooks went into the write, by these policies.
    Mutated(Vec<String>),
    /// Nothing to add: no policy selects it, or it has the hooks already.
    Unchanged,
    /// Not a create or update of a workload's main resource.
    Ignored,
}

/// The response to one request.
pub fn review(
    caches: &Caches,
    req: &AdmissionRequest<DynamicObject>,
    now: Timestamp,
) -> (AdmissionResponse, Outcome) {
    let response = AdmissionResponse::from(req);
    let (Some(kind), Some(object), Some(ns)) = (
        workload_kind(&req.kind),
        req.object.as_ref(),
        req.namespace.as_deref(),
    ) else {
        return (response, Outcome::Ignored);
    };
    if !matches!(req.operation, Operation::Create | Operation::Update)
        || req.sub_resource.as_deref().is_some_and(|s| !s.is_empty())
    {
        return (response, Outcome::Ignored);
    }
    let Ok(original) = serde_json::to_value(object) else {
        return (response, Outcome::Unchanged);
    };
    let nb = caches.neighbours.of(caches.policies, ns);
    let admissible = admissible(caches, &nb, &original, kind, ns);
    let Some(m) = mutate::mutate(&original, kind, ns, &nb, &admissible, now) else {
        return (response, Outcome::Unchanged);
    };
    match response
        .clone()
        .with_patch(json_patch::diff(&original, &m.object))
    {
        Ok(patched) => (patched, Outcome::Mutated(m.by)),
        Err(_) => (response, Outcome::Unchanged),
    }
}

/// The policies concerned with the workload (they select it or hold a
/// ledger on it), as the caches have them now, that may inject: in
/// precedence order.
fn admissible(
    caches: &Caches,
    nb: &Neighbourhood,
    object: &serde_json::Value,
    kind: WorkloadKind,
    ns: &str,
) -> Vec<Admissible> {
    let Some(w) = mutate::workload_of(object, kind, ns) else {
        return Vec::new();
    };
    // The index keeps a policy's spec; its status (the rollout) is read
    // fresh from the caches.
    let here = caches.policies.in_namespace(ns);
    let fresh: HashMap<String, &Arc<LifecyclePolicy>> = here
        .own
        .iter()
        .chain(here.cluster.iter().map(|m| &m.policy))
        .map(|p| (p.id().owner(), p))
        .collect();
    nb.concerned(&w)
        .into_iter()
        .filter_map(|p| {
            let p = *fresh.get(&p.id().owner())?;
            let selector = gate::admits(p).ok()?;
            Some(Admissible {
                policy: p.clone(),
                selector,
            })
        })
        .collect()
}

fn workload_kind(gvk: &GroupVersionKind) -> Option<WorkloadKind> {
    if gvk.group != "apps" {
        return None;
    }
    WorkloadKind::ALL
        .into_iter()
        .find(|k| k.as_str() == gvk.kind)
}

#[cfg(test)]
mod tests;
