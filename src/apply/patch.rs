//! Turns a `Plan` into request bodies, pure: the server-side-apply
//! configuration a policy owns on a Deployment, and the JSON patch that hands
//! released slots back.
//!
//! Claims go through server-side apply under a field manager of the policy's
//! own, so `managedFields` show who set each hook. Releases are a JSON patch
//! (an update, not an apply): restoring a replaced value through an update
//! moves ownership of the field back off the policy's manager, which an apply
//! that merely omits the field could not do without deleting it.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::api::types::WorkloadKind;
use crate::apply::ledger::{ledger_key, read_ledgers};
use crate::apply::plan::Plan;
use crate::apply::slot::Slot;
use crate::apply::wire::escape;
use crate::apply::workload::{ContainerShape, HOOKED_LABEL, HOOKED_VALUE, PodShape, Section};
use crate::hooks::hook::HookKind;

/// The workload a request body is for.
pub struct Target<'a> {
    pub kind: WorkloadKind,
    pub name: &'a str,
    pub namespace: &'a str,
}

/// The field manager of releases (JSON patches). Not a policy's own: the
/// fields a release restores must not stay owned by the policy.
pub const RESTORE_MANAGER: &str = "lifecycle-operator-restore";

/// The server-side-apply configuration for everything the policy claims on
/// the Deployment, ledger included. Applying it with the policy's field
/// manager also removes fields the manager owned before and no longer lists.
pub fn apply_body(target: &Target, pod_shape: &PodShape, plan: &Plan) -> Value {
    let ledger = plan.ledger.as_ref().expect("apply only with a ledger");
    let mut containers: BTreeMap<(&str, &str), serde_json::Map<String, Value>> = BTreeMap::new();
    let mut pod = serde_json::Map::new();
    for (slot, value) in &plan.claims {
        match slot {
            Slot::Hook { container, kind } => {
                let section = pod_shape
                    .find(container)
                    .map_or(Section::Containers, |(s, _, _)| s);
                containers
                    .entry((section.field(), container))
                    .or_default()
                    .insert(kind.field().to_string(), value.clone());
            }
            Slot::GracePeriod => {
                pod.insert("terminationGracePeriodSeconds".into(), value.clone());
            }
        }
    }
    for ((field, name), lifecycle) in containers {
        let list = pod.entry(field).or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = list {
            items.push(json!({"name": name, "lifecycle": lifecycle}));
        }
    }
    let mut template = json!({ "spec": pod });
    if plan.labels_pods() {
        template["metadata"] = json!({"labels": {HOOKED_LABEL: HOOKED_VALUE}});
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": target.kind.as_str(),
        "metadata": {
            "name": target.name,
            "namespace": target.namespace,
            "annotations": { ledger_key(&ledger.policy): serde_json::to_string(ledger).expect("ledger serializes") },
        },
        "spec": { "template": template },
    })
}

/// A JSON patch that restores every released slot to its original value (or
/// removes it), replaces whole the handlers of another type that a claim
/// takes over (`plan.replaces`), and drops the ledger annotation when the
/// policy keeps nothing. It touches only the slots it hands back: each
/// hook is its own field, tested against the value in the copy the plan was
/// made from, so a concurrent edit of the container's other hook, of
/// `stopSignal` or by another policy fails the patch (and a new plan)
/// instead of being overwritten. Each container edit is also guarded by a
/// `test` of the container's name, so a reordered template fails too.
/// Returns None when there is nothing to do.
pub fn release_patch(
    policy: &str,
    pod: &PodShape,
    annotations: Option<&BTreeMap<String, String>>,
    plan: &Plan,
) -> Option<Value> {
    let key = ledger_key(policy);
    let escaped = escape(&key);
    let stored = annotations.and_then(|a| a.get(&key));
    let kept_empty = read_ledgers(annotations)
        .remove(policy)
        .map(|l| l.empty_lifecycle)
        .unwrap_or_default();
    let mut ops: Vec<Value> = Vec::new();
    let mut by_container: BTreeMap<&str, Vec<(HookKind, Option<&Value>)>> = BTreeMap::new();
    for (slot, original) in &plan.releases {
        match slot {
            Slot::Hook { container, kind } => by_container
                .entry(container)
                .or_default()
                .push((*kind, original.as_ref())),
            Slot::GracePeriod => {
                let path = "/spec/template/spec/terminationGracePeriodSeconds";
                let Some(current) = pod.termination_grace_period_seconds else {
                    continue; // Gone already: nothing of ours to hand back.
                };
                ops.push(json!({"op": "test", "path": path, "value": current}));
                match original {
                    Some(v) => ops.push(json!({"op": "replace", "path": path, "value": v})),
                    None => ops.push(json!({"op": "remove", "path": path})),
                }
            }
        }
    }
    for (slot, replaced) in &plan.replaces {
        if let (Slot::Hook { container, kind }, Some(value)) = (slot, plan.claims.get(slot)) {
            let Some((section, index, _)) = pod.find(container) else {
                continue;
            };
            let base = format!("/spec/template/spec/{}/{index}", section.field());
            let path = format!("{base}/lifecycle/{}", kind.field());
            ops.push(json!({"op": "test", "path": format!("{base}/name"), "value": container}));
            ops.push(json!({"op": "test", "path": path, "value": replaced}));
            ops.push(json!({"op": "replace", "path": path, "value": value}));
        }
    }
    for (name, releases) in by_container {
        let Some((section, index, container)) = pod.find(name) else {
            continue; // The container is gone, and its hooks with it.
        };
        ops.extend(container_release(
            &format!("/spec/template/spec/{}/{index}", section.field()),
            container,
            &releases,
            kept_empty.contains(name),
        ));
    }
    if plan.label_removed {
        let path = format!("/spec/template/metadata/labels/{}", escape(HOOKED_LABEL));
        ops.push(json!({"op": "test", "path": path, "value": HOOKED_VALUE}));
        ops.push(json!({"op": "remove", "path": path}));
    }
    if plan.ledger.is_none() && stored.is_some() {
        ops.push(json!({"op": "remove", "path": format!("/metadata/annotations/{escaped}")}));
    }
    if ops.is_empty() {
        return None;
    }
    // Only against the ledger this plan was made from: a release computed
    // from a stale copy (another replica, another install) fails instead.
    if let Some(v) = stored {
        let path = format!("/metadata/annotations/{escaped}");
        ops.insert(0, json!({"op": "test", "path": path, "value": v}));
    }
    Some(Value::Array(ops))
}

/// The ops handing one container's hooks back, each field on its own. When
/// nothing is left in its `lifecycle`, the object goes too, unless it was
/// `{}` before the policy came (`kept_empty`): then `{}` stays.
fn container_release(
    base: &str,
    container: &ContainerShape,
    releases: &[(HookKind, Option<&Value>)],
    kept_empty: bool,
) -> Vec<Value> {
    let mut ops =
        vec![json!({"op": "test", "path": format!("{base}/name"), "value": container.name})];
    let mut left: BTreeMap<String, Value> = container
        .lifecycle
        .as_ref()
        .and_then(Value::as_object)
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let mut touched = false;
    for (kind, original) in releases {
        let path = format!("{base}/lifecycle/{}", kind.field());
        let Some(current) = left.get(kind.field()).cloned() else {
            continue; // Gone already: nothing of ours to hand back.
        };
        touched = true;
        ops.push(json!({"op": "test", "path": path, "value": current}));
        match original {
            Some(v) => {
                ops.push(json!({"op": "replace", "path": path, "value": v}));
                left.insert(kind.field().to_string(), (*v).clone());
            }
            None => {
                ops.push(json!({"op": "remove", "path": path}));
                left.remove(kind.field());
            }
        }
    }
    if !touched {
        return Vec::new();
    }
    if left.is_empty() && !kept_empty {
        let path = format!("{base}/lifecycle");
        // Empty now, unless someone added a field meanwhile: then the test fails.
        ops.push(json!({"op": "test", "path": path, "value": {}}));
        ops.push(json!({"op": "remove", "path": path}));
    }
    ops
}

/// Makes a release patch fail (422) unless the workload is still at `version`.
pub fn guard_release(ops: &mut Value, version: &str) {
    if let Value::Array(ops) = ops {
        ops.insert(
            0,
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": version}),
        );
    }
}

/// The apply configuration with `version` as its precondition: the API
/// server answers 409 if the workload changed since.
pub fn at_version(body: &Value, version: &str) -> Value {
    let mut body = body.clone();
    body["metadata"]["resourceVersion"] = Value::from(version);
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_patch_guards_container_positions_and_cleans_up() {
        let pod: PodShape = serde_json::from_value(serde_json::json!({"containers": [
            {"name": "a", "image": "x"},
            {"name": "b", "image": "x", "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}},
        ]}))
        .unwrap();
        let plan = Plan {
            releases: BTreeMap::from([(Slot::hook("b", HookKind::PreStop), None)]),
            ..Default::default()
        };
        let ann = BTreeMap::from([(ledger_key("p/x"), "{}".to_string())]);
        let ops = release_patch("p/x", &pod, Some(&ann), &plan).unwrap();
        assert_eq!(
            ops,
            serde_json::json!([
                {"op": "test", "path": "/metadata/annotations/lifecycle-operator.io~1p~1x", "value": "{}"},
                {"op": "test", "path": "/spec/template/spec/containers/1/name", "value": "b"},
                {"op": "test", "path": "/spec/template/spec/containers/1/lifecycle/preStop", "value": {"sleep": {"seconds": 1}}},
                {"op": "remove", "path": "/spec/template/spec/containers/1/lifecycle/preStop"},
                {"op": "test", "path": "/spec/template/spec/containers/1/lifecycle", "value": {}},
                {"op": "remove", "path": "/spec/template/spec/containers/1/lifecycle"},
                {"op": "remove", "path": "/metadata/annotations/lifecycle-operator.io~1p~1x"},
            ])
        );
        assert!(release_patch("p", &pod, None, &Plan::default()).is_none());
    }

    #[test]
    fn a_release_touches_only_the_hook_it_hands_back() {
        let pod: PodShape = serde_json::from_value(serde_json::json!({"containers": [
            {"name": "c", "lifecycle": {"postStart": {"sleep": {"seconds": 2}}, "preStop": {"sleep": {"seconds": 1}}, "stopSignal": "SIGQUIT"}},
        ]}))
        .unwrap();
        let plan = Plan {
            releases: BTreeMap::from([(Slot::hook("c", HookKind::PreStop), None)]),
            ..Default::default()
        };
        let ops = release_patch("p", &pod, None, &plan).unwrap();
        let live = |post: Value, pre: Value| {
            serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "lifecycle":
                {"postStart": post, "preStop": pre, "stopSignal": "SIGQUIT"}}]}}}})
        };
        let patch: json_patch::Patch = serde_json::from_value(ops).unwrap();
        // Another writer changed the postStart meanwhile: kept as they set it.
        let mut doc = live(
            serde_json::json!({"sleep": {"seconds": 9}}),
            serde_json::json!({"sleep": {"seconds": 1}}),
        );
        json_patch::patch(&mut doc, &patch).unwrap();
        assert_eq!(
            doc["spec"]["template"]["spec"]["containers"][0]["lifecycle"],
            serde_json::json!({"postStart": {"sleep": {"seconds": 9}}, "stopSignal": "SIGQUIT"})
        );
        // ...or changed the preStop this release would remove: refused.
        let mut doc = live(
            serde_json::json!({"sleep": {"seconds": 2}}),
            serde_json::json!({"sleep": {"seconds": 7}}),
        );
        assert!(json_patch::patch(&mut doc, &patch).is_err());
    }
}
