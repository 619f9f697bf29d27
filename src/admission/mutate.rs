//! The mutation, pure: a workload as a request would write it, and the
//! policies the webhook may inject for, in; the workload as the background
//! path would leave it out. Each policy decides on it through the same
//! `apply::decide` as a reconcile (precedence, conflicts, the ledger and its
//! originals), and its writes are carried out on the object itself: the
//! release patch as it is, the server-side-apply body merged the way the API
//! server merges it. So the reconcile that follows finds the template as it
//! wants it and only takes the fields over (see `ledger::Via`).

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::core::Selector;
use serde_json::Value;

use crate::api::types::{LifecyclePolicy, WorkloadKind};
use crate::apply::decide::{Intent, Scope, Write, decide};
use crate::apply::ledger::Via;
use crate::apply::neighbours::{Neighbourhood, Neighbourhoods};
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

/// One policy's writes on the object: None when its release patch does not
/// apply (then the background path does it, as without a webhook).
fn carry_out(object: &Value, write: &Write) -> Option<Value> {
    let mut next = object.clone();
    if let Some(ops) = &write.release {
        let patch: json_patch::Patch = serde_json::from_value(ops.clone()).ok()?;
        json_patch::patch(&mut next, &patch).ok()?;
    }
    if let Some(body) = &write.apply {
        // The body's identity (name, kind) is the object's already; a create
        // with generateName has no name yet, so only these two are merged.
        if let Some(a) = body.pointer("/metadata/annotations") {
            merge(at(&mut next, &["metadata", "annotations"]), a, false);
        }
        if let Some(spec) = body.get("spec") {
            merge(at(&mut next, &["spec"]), spec, false);
        }
    }
    Some(next)
}

/// The value at `path`, made an empty object where missing.
fn at<'a>(mut v: &'a mut Value, path: &[&str]) -> &'a mut Value {
    for key in path {
        if !v.is_object() {
            *v = Value::Object(Default::default());
        }
        v = v
            .as_object_mut()
            .expect("made an object above")
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    v
}

/// `from` merged into `into` as server-side apply merges the bodies the
/// policies send: maps key by key, container lists by name, a hook handler
/// (a key of `lifecycle`) replaced whole, since the background path's
/// release patch removes a handler of another type before its apply
/// (`Plan::replaces`).
fn merge(into: &mut Value, from: &Value, handlers: bool) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(x) if !handlers => merge(x, v, k == "lifecycle"),
                    _ => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for item in b {
                let name = item.get("name");
                match a
                    .iter_mut()
                    .find(|x| name.is_some() && x.get("name") == name)
                {
                    Some(x) => merge(x, item, false),
                    None => a.push(item.clone()),
                }
            }
        }
        (into, from) => *into = from.clone(),
    }
}

#[cfg(test)]
mod tests;
