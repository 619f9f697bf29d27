//! Properties of the write path, for generated pod templates and policies
//! (plain `cargo test`; `PROPTEST_CASES=N` for longer runs): the planner's
//! writes carried out on an in-memory workload the way the API server would
//! (server-side apply of the claims, JSON patch of the releases, managedFields
//! following), then checked:
//!
//! - apply, then release, gives the template back byte for byte;
//! - the writes touch nothing but the policy's slots, the hooked-pods label
//!   and the ledger annotation;
//! - two policies applied in either order converge to the same template.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use kube::core::Selector;
use lifecycle_operator::api::types::{LifecyclePolicy, WorkloadKind};
use lifecycle_operator::apply::decide::{self, Intent, Scope};
use lifecycle_operator::apply::ledger::{Via, field_manager, ledger_key, read_ledgers};
use lifecycle_operator::apply::neighbours::Neighbourhood;
use lifecycle_operator::apply::slot::Slot;
use lifecycle_operator::apply::workload::{self, Workload};
use proptest::prelude::*;
use serde_json::{Value, json};

const NAMES: [&str; 4] = ["app", "web", "envoy", "log"];

fn handler() -> impl Strategy<Value = Value> {
    prop_oneof![
        (1i64..5).prop_map(|s| json!({"sleep": {"seconds": s}})),
        "[a-z ;]{0,12}".prop_map(|s| json!({"exec": {"command": ["/bin/sh", "-c", s]}})),
        Just(json!({"exec": {"command": ["/bin/true"]}})),
        Just(json!({"httpGet": {"path": "/q", "port": 8080, "scheme": "HTTP"}})),
    ]
}

/// A container's own `lifecycle`: absent, `{}`, hooks, another field.
fn lifecycle() -> impl Strategy<Value = Option<Value>> {
    (
        0..4u8,
        proptest::option::of(handler()),
        proptest::option::of(handler()),
    )
        .prop_map(|(shape, post, pre)| match shape {
            0 => None,
            1 => Some(json!({})),
            2 => Some(json!({"stopSignal": "SIGQUIT"})),
            _ => {
                let mut l = serde_json::Map::new();
                if let Some(h) = post {
                    l.insert("postStart".into(), h);
                }
                if let Some(h) = pre {
                    l.insert("preStop".into(), h);
                }
                Some(Value::Object(l))
            }
        })
}

/// A Deployment with 1-3 containers and maybe a sidecar, as the API server returns it.
fn deployment() -> impl Strategy<Value = Value> {
    (
        proptest::sample::subsequence(NAMES.to_vec(), 1..=3),
        proptest::collection::vec(lifecycle(), 4),
        proptest::option::of(prop_oneof![Just(10i64), Just(30), Just(60), Just(300)]),
        any::<bool>(),
    )
        .prop_map(|(names, lifecycles, grace, sidecar)| {
            let container = |(i, name): (usize, &&str)| {
                let mut c = json!({"name": name, "image": "busybox", "args": ["sleep", "1"]});
                if let Some(l) = &lifecycles[i] {
                    c["lifecycle"] = l.clone();
                }
                c
            };
            let (sidecars, regular) = if sidecar && names.len() > 1 {
                names.split_at(1)
            } else {
                names.split_at(0)
            };
            let mut pod = json!({
                "containers": regular.iter().enumerate().map(container).collect::<Vec<_>>(),
                "dnsPolicy": "ClusterFirst",
            });
            if !sidecars.is_empty() {
                let mut s = container((3, &sidecars[0]));
                s["restartPolicy"] = json!("Always");
                pod["initContainers"] = json!([s]);
            }
            if let Some(g) = grace {
                pod["terminationGracePeriodSeconds"] = json!(g);
            }
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "d", "namespace": "ns", "resourceVersion": "1",
                             "labels": {"app": "web"}, "annotations": {"team": "a"}},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                         "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod}},
                "status": {"observedGeneration": 1},
            })
        })
}

fn policy_spec() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(handler()),
        proptest::option::of(handler()),
        proptest::option::of(prop_oneof![Just(20i64), Just(60)]),
        any::<bool>(),
        proptest::option::of(proptest::sample::subsequence(NAMES.to_vec(), 1..=2)),
    )
        .prop_filter("a hook", |(post, pre, ..)| post.is_some() || pre.is_some())
        .prop_map(|(post, pre, grace, override_, containers)| {
            let mut s = json!({
                "selector": {"matchLabels": {"app": "web"}},
                "onConflict": if override_ { "Override" } else { "Skip" },
                "rollout": {"strategy": "Immediate"},
            });
            if let Some(h) = post {
                s["postStart"] = h;
            }
            if let Some(h) = pre {
                s["preStop"] = h;
            }
            if let Some(g) = grace {
                s["terminationGracePeriodSeconds"] = json!(g);
            }
            if let Some(c) = containers {
                s["containers"] = json!(c);
            }
            s
        })
}

fn policy(name: &str, created: i64, spec: &Value, deleting: bool) -> Arc<LifecyclePolicy> {
    let mut meta = json!({"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "generation": 1,
        "creationTimestamp": Timestamp::from_second(created).unwrap().to_string()});
    if deleting {
        meta["deletionTimestamp"] = json!(Timestamp::from_second(created + 1).unwrap().to_string());
    }
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "lifecycle-operator.io/v1alpha1", "kind": "LifecyclePolicy",
            "metadata": meta, "spec": spec,
        }))
        .unwrap(),
    )
}

/// The workload as the operator's cache holds it.
fn cached(w: &Value) -> Arc<Workload> {
    let mut slim: Workload = serde_json::from_value(w.clone()).unwrap();
    slim.kind = WorkloadKind::Deployment;
    workload::trim(&mut slim);
    Arc::new(slim)
}

/// One reconcile of `me` among `all`: its writes carried out on `w` as the
/// API server would. Returns whether it wrote.
fn reconcile(w: &mut Value, me: &Arc<LifecyclePolicy>, all: &[Arc<LifecyclePolicy>]) -> bool {
    let deleting = me.metadata.deletion_timestamp.is_some();
    let selector = if deleting {
        Selector::default()
    } else {
        Selector::try_from(LabelSelector::from(&me.spec.selector)).unwrap()
    };
    let decisions = decide::decide(
        &Scope {
            policy: me,
            selector: &selector,
            active: !deleting,
            neighbours: &Neighbourhood::new(all).into(),
            revert: &BTreeSet::new(),
            hold: None,
            now: Timestamp::from_second(1_800_000_000).unwrap(),
            via: Via::Background,
        },
        vec![cached(w)],
    );
    let mut wrote = false;
    for d in decisions {
        if let Intent::Write(write) = &d.intent {
            let name = me.metadata.name.clone().unwrap();
            if let Some(ops) = &write.release {
                let ops: json_patch::Patch = serde_json::from_value(ops.clone()).unwrap();
                json_patch::patch(w, &ops)
                    .unwrap_or_else(|e| panic!("release refused: {e}: {ops:?}"));
            }
            if let Some(body) = &write.apply {
                server_side_apply(w, body);
            }
            own(w, &name);
            wrote = true;
        }
    }
    wrote
}

/// Server-side apply of a policy's configuration: containers merge by name,
/// maps by key (what the operator's bodies use). Fields its manager owned
/// before and no longer lists are dropped: the bodies list every claim.
fn server_side_apply(w: &mut Value, body: &Value) {
    let annotations = w["metadata"]["annotations"].as_object_mut().unwrap();
    for (k, v) in body["metadata"]["annotations"].as_object().unwrap() {
        annotations.insert(k.clone(), v.clone());
    }
    let tpl = &body["spec"]["template"];
    if let Some(labels) = tpl["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            w["spec"]["template"]["metadata"]["labels"][k] = v.clone();
        }
    }
    let pod = &mut w["spec"]["template"]["spec"];
    if let Some(g) = tpl["spec"].get("terminationGracePeriodSeconds") {
        pod["terminationGracePeriodSeconds"] = g.clone();
    }
    for list in ["containers", "initContainers"] {
        for c in tpl["spec"][list].as_array().into_iter().flatten() {
            let target = pod[list]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .find(|t| t["name"] == c["name"])
                .expect("applied to an existing container");
            if target.get("lifecycle").is_none() {
                target["lifecycle"] = json!({});
            }
            for (k, v) in c["lifecycle"].as_object().unwrap() {
                // An apply merges into the handler; the planner must replace
                // another handler type first (or the API server rejects two).
                let merged = match (target["lifecycle"].get(k), v) {
                    (Some(Value::Object(old)), Value::Object(new)) => {
                        let mut m = old.clone();
                        m.extend(new.clone());
                        Value::Object(m)
                    }
                    _ => v.clone(),
                };
                let handlers = ["exec", "httpGet", "sleep", "tcpSocket"];
                let n = handlers
                    .iter()
                    .filter(|h| merged.get(**h).is_some())
                    .count();
                assert!(n <= 1, "two handlers after the apply: {merged}");
                target["lifecycle"][k] = merged;
            }
        }
    }
}

/// managedFields after a write: the policy's manager owns what its stored
/// ledger lists (the API server's record, absent any other writer).
fn own(w: &mut Value, policy: &str) {
    let ledgers = read_ledgers(
        serde_json::from_value(w["metadata"]["annotations"].clone())
            .ok()
            .as_ref(),
    );
    let manager = field_manager(policy);
    let mut entries: Vec<Value> = w["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["manager"] != manager.as_str())
        .collect();
    if let Some(l) = ledgers.get(policy) {
        let mut fields =
            json!({"f:metadata": {"f:annotations": {format!("f:{}", ledger_key(policy)): {}}}});
        for slot in l.owned.keys() {
            let pod = &mut fields["f:spec"]["f:template"]["f:spec"];
            match slot {
                Slot::GracePeriod => pod["f:terminationGracePeriodSeconds"] = json!({}),
                Slot::Hook { container, kind } => {
                    let key = format!("k:{}", json!({"name": container}));
                    pod["f:containers"][key]["f:lifecycle"][format!("f:{}", kind.field())] =
                        json!({});
                }
            }
        }
        entries.push(
            json!({"manager": manager, "operation": "Apply", "apiVersion": "apps/v1",
                            "fieldsType": "FieldsV1", "fieldsV1": fields}),
        );
    }
    w["metadata"]["managedFields"] = Value::Array(entries);
}

/// Reconciles until nothing is written (at most `rounds` rounds).
fn settle(
    w: &mut Value,
    order: &[&Arc<LifecyclePolicy>],
    all: &[Arc<LifecyclePolicy>],
    rounds: usize,
) {
    for _ in 0..rounds {
        let mut wrote = false;
        for p in order {
            wrote |= reconcile(w, p, all);
        }
        if !wrote {
            return;
        }
    }
    panic!("no convergence within {rounds} rounds: {w:#}");
}

/// The workload without what a policy may own: its slots, the label, its ledger.
fn outside_slots(w: &Value) -> Value {
    let mut w = w.clone();
    w["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    let ann = w["metadata"]["annotations"].as_object_mut().unwrap();
    ann.retain(|k, _| !k.starts_with("lifecycle-operator.io/"));
    let tpl = &mut w["spec"]["template"];
    tpl["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove(workload::HOOKED_LABEL);
    let pod = tpl["spec"].as_object_mut().unwrap();
    pod.remove("terminationGracePeriodSeconds");
    for list in ["containers", "initContainers"] {
        for c in pod
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let c = c.as_object_mut().unwrap();
            if let Some(l) = c.get_mut("lifecycle").and_then(Value::as_object_mut) {
                l.remove("postStart");
                l.remove("preStop");
                if l.is_empty() {
                    c.remove("lifecycle");
                }
            }
        }
    }
    w
}

fn template_and_annotations(w: &Value) -> String {
    serde_json::to_string(&json!([w["spec"], w["metadata"]["annotations"]])).unwrap()
}

proptest! {
    #[test]
    fn apply_then_release_restores_byte_for_byte(d in deployment(), spec in policy_spec()) {
        let p = policy("p", 100, &spec, false);
        let mut w = d.clone();
        settle(&mut w, &[&p], std::slice::from_ref(&p), 3);
        // Nothing outside the policy's slots, label and ledger changed.
        prop_assert_eq!(outside_slots(&w), outside_slots(&d));
        let gone = policy("p", 100, &spec, true);
        settle(&mut w, &[&gone], std::slice::from_ref(&gone), 3);
        prop_assert_eq!(template_and_annotations(&w), template_and_annotations(&d));
    }

    #[test]
    fn two_policies_converge_to_the_same_template_in_any_order(
        d in deployment(), a in policy_spec(), b in policy_spec(),
    ) {
        let (pa, pb) = (policy("a", 100, &a, false), policy("b", 200, &b, false));
        let all = [pa.clone(), pb.clone()];
        let (mut ab, mut ba) = (d.clone(), d.clone());
        settle(&mut ab, &[&pa, &pb], &all, 6);
        settle(&mut ba, &[&pb, &pa], &all, 6);
        prop_assert_eq!(&ab["spec"], &ba["spec"]);
        prop_assert_eq!(outside_slots(&ab), outside_slots(&d));
        // Both deleted, in either order: the template comes back.
        let gone = [policy("a", 100, &a, true), policy("b", 200, &b, true)];
        settle(&mut ab, &[&gone[0], &gone[1]], &gone, 6);
        settle(&mut ba, &[&gone[1], &gone[0]], &gone, 6);
        prop_assert_eq!(template_and_annotations(&ab), template_and_annotations(&d));
        prop_assert_eq!(template_and_annotations(&ba), template_and_annotations(&d));
    }

    #[test]
    fn text_helpers_keep_utf8_valid(s in "\\PC{0,60}", max in 0usize..80) {
        use lifecycle_operator::text;
        let cut = text::bounded(&s, max);
        prop_assert!(cut.len() <= max);
        prop_assert!(s.starts_with(text::prefix(&s, max)));
        let items: Vec<&str> = s.split(' ').collect();
        prop_assert!(text::list(&items, ", ", max).len() <= max);
    }
}
