//! A request's object in, the mutated object out; then the background path
//! decides on what the API server stored, as it would after admission.

use super::*;
use crate::admission::gate;
use crate::apply::decide::Decision;
use serde_json::json;

const NOW: i64 = 1_800_000_000;

fn policy(name: &str, created: i64, spec: Value) -> Arc<LifecyclePolicy> {
    let mut s =
        json!({"selector": {"matchLabels": {"app": "web"}}, "preStop": {"sleep": {"seconds": 1}}});
    json_patch::merge(&mut s, &spec);
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "lifecycle-operator.io/v1alpha1", "kind": "LifecyclePolicy",
            "metadata": {"name": name, "namespace": "ns", "generation": 1, "uid": format!("u-{name}"),
                         "creationTimestamp": Timestamp::from_second(created).unwrap().to_string()},
            "spec": s,
            "status": {"rollout": {"generation": 1, "phase": "Complete", "rolledOut": 0, "pending": 0}},
        }))
        .unwrap(),
    )
}

/// What `kubectl create` sends: no uid, no resourceVersion, no status.
fn created(lifecycle: Option<Value>) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "ns", "labels": {"app": "web"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]}}},
    });
    if let Some(l) = lifecycle {
        d["spec"]["template"]["spec"]["containers"][0]["lifecycle"] = l;
    }
    d
}

fn admissible(ps: &[&Arc<LifecyclePolicy>]) -> Vec<Admissible> {
    ps.iter()
        .map(|p| Admissible {
            policy: (*p).clone(),
            selector: gate::admits(p).unwrap(),
        })
        .collect()
}

fn admit(
    object: &Value,
    all: &[Arc<LifecyclePolicy>],
    inject: &[&Arc<LifecyclePolicy>],
) -> Option<Mutated> {
    let nb = Arc::new(Neighbourhood::new(all));
    mutate(
        object,
        WorkloadKind::Deployment,
        "ns",
        &nb,
        &admissible(inject),
        Timestamp::from_second(NOW).unwrap(),
    )
}

/// The stored object: what the request's manager (kubectl's) wrote is
/// owned by it, hooks included, as the API server records admission's
/// changes under the request's manager.
fn stored(object: &Value, containers: &[&str]) -> Value {
    let mut o = object.clone();
    let mut fields = serde_json::Map::new();
    for c in containers {
        fields.insert(
            format!("k:{{\"name\":\"{c}\"}}"),
            json!({".": {}, "f:name": {}, "f:lifecycle": {"f:preStop": {".": {}, "f:sleep": {"f:seconds": {}}}}}),
        );
    }
    o["metadata"]["uid"] = json!("d-web");
    o["metadata"]["resourceVersion"] = json!("7");
    o["metadata"]["generation"] = json!(1);
    o["metadata"]["managedFields"] = json!([{
        "manager": "kubectl-create", "operation": "Update", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": fields}}}},
    }]);
    o
}

/// The same after the policy's manager applied its body (the takeover).
fn taken_over(object: &Value, policy: &str) -> Value {
    let mut o = object.clone();
    let entry = json!({
        "manager": format!("lifecycle-operator/{policy}"), "operation": "Apply", "apiVersion": "apps/v1",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:annotations": {format!("f:lifecycle-operator.io/{policy}"): {}}},
                     "f:spec": {"f:template": {"f:metadata": {"f:labels": {"f:lifecycle-operator.io/hooked": {}}},
                         "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {
                         ".": {}, "f:name": {}, "f:lifecycle": {"f:preStop": {".": {}, "f:sleep": {"f:seconds": {}}}}}}}}}},
    });
    o["metadata"]["managedFields"]
        .as_array_mut()
        .unwrap()
        .push(entry);
    o
}

fn background(object: &Value, p: &Arc<LifecyclePolicy>, active: bool) -> Decision {
    let w = workload_of(object, WorkloadKind::Deployment, "ns").unwrap();
    let selector = gate::admits(p).unwrap();
    let mut ds = decide(
        &Scope {
            policy: p,
            selector: &selector,
            active,
            neighbours: &Neighbourhood::new(std::slice::from_ref(p)).into(),
            revert: &BTreeSet::new(),
            hold: None,
            now: Timestamp::from_second(NOW).unwrap(),
            via: Via::Background,
        },
        vec![Arc::new(w)],
    );
    assert_eq!(ds.len(), 1);
    ds.remove(0)
}

fn template(o: &Value) -> &Value {
    &o["spec"]["template"]
}

#[test]
fn a_new_workload_gets_the_hooks_the_label_and_the_ledger_in_its_first_write() {
    let p = policy("p", 1, json!({}));
    let object = created(None);
    let m = admit(&object, std::slice::from_ref(&p), &[&p]).expect("a mutation");
    assert_eq!(m.by, ["ns/p"]);
    let c = &m.object["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["lifecycle"],
        json!({"preStop": {"sleep": {"seconds": 1}}})
    );
    assert_eq!(
        c["ports"],
        json!([{"containerPort": 80}]),
        "the rest is kept"
    );
    assert_eq!(
        m.object["spec"]["template"]["metadata"]["labels"],
        json!({"app": "web", "lifecycle-operator.io/hooked": "true"})
    );
    let ledger = m.object["metadata"]["annotations"]["lifecycle-operator.io/p"]
        .as_str()
        .unwrap();
    let ledger: Value = serde_json::from_str(ledger).unwrap();
    assert_eq!(
        ledger,
        json!({"policy": "p", "owned": {"c/preStop": null}, "via": "Admission"})
    );
    // Only those three changed.
    let patch = json_patch::diff(&object, &m.object);
    let paths: Vec<String> = patch.0.iter().map(|op| op.path().to_string()).collect();
    assert_eq!(
        paths,
        [
            "/metadata/annotations",
            "/spec/template/metadata/labels/lifecycle-operator.io~1hooked",
            "/spec/template/spec/containers/0/lifecycle",
        ]
    );
}

/// The reconcile after admission changes no template: it takes the fields
/// over (one apply, no rollout), then has nothing left to do; deleting the
/// policy gives back the template exactly as the request wrote it.
#[test]
fn the_background_path_takes_over_without_a_rollout_and_restores_the_request() {
    let p = policy("p", 1, json!({}));
    let object = created(None);
    let m = admit(&object, std::slice::from_ref(&p), &[&p]).unwrap();
    let after_admission = stored(&m.object, &["c"]);

    let d = background(&after_admission, &p, true);
    assert_eq!(d.damage, None);
    let Intent::Write(w) = &d.intent else {
        panic!("a takeover write, got {:?}", d.intent)
    };
    assert!(!w.changes_template && !w.rolls && w.release.is_none());
    let applied = carry_out(&after_admission, w).unwrap();
    assert_eq!(template(&applied), template(&after_admission), "no rollout");

    let settled = taken_over(&applied, "p");
    let d = background(&settled, &p, true);
    assert!(matches!(d.intent, Intent::UpToDate), "{:?}", d.intent);
    assert_eq!(d.damage, None);

    // The policy deleted: the release restores the request's template.
    let d = background(&settled, &p, false);
    let Intent::Write(w) = &d.intent else {
        panic!("a release, got {:?}", d.intent)
    };
    let released = carry_out(&settled, w).unwrap();
    assert_eq!(template(&released), template(&object), "byte for byte");
    assert!(
        released["metadata"]["annotations"]
            .as_object()
            .is_none_or(|a| a.is_empty()),
        "{released}"
    );
}

#[test]
fn an_update_that_keeps_the_hooks_passes_unchanged() {
    let p = policy("p", 1, json!({}));
    let m = admit(&created(None), std::slice::from_ref(&p), &[&p]).unwrap();
    let again = stored(&m.object, &["c"]);
    assert_eq!(admit(&again, std::slice::from_ref(&p), &[&p]), None);
    let settled = taken_over(&again, "p");
    assert_eq!(admit(&settled, std::slice::from_ref(&p), &[&p]), None);
}

/// `kubectl replace` with a template lacking the hooks (and the ledger):
/// they come back in that same write.
#[test]
fn a_replace_without_the_hooks_gets_them_back_in_the_same_write() {
    let p = policy("p", 1, json!({}));
    let m = admit(&created(None), std::slice::from_ref(&p), &[&p]).unwrap();
    let settled = taken_over(&stored(&m.object, &["c"]), "p");
    let mut replaced = created(None);
    replaced["metadata"]["managedFields"] = settled["metadata"]["managedFields"].clone();
    let again = admit(&replaced, std::slice::from_ref(&p), &[&p]).expect("a mutation");
    assert_eq!(template(&again.object), template(&m.object));
}

/// A handler of another type is replaced whole, as the background path's
/// release-then-apply leaves it, never merged into a two-handler hook.
#[test]
fn another_handler_is_replaced_whole_under_override() {
    let p = policy("p", 1, json!({"onConflict": "Override"}));
    let object = created(Some(
        json!({"preStop": {"exec": {"command": ["sh", "-c", "true"]}}, "postStart": {"sleep": {"seconds": 2}}}),
    ));
    let m = admit(&object, std::slice::from_ref(&p), &[&p]).unwrap();
    assert_eq!(
        m.object["spec"]["template"]["spec"]["containers"][0]["lifecycle"],
        json!({"preStop": {"sleep": {"seconds": 1}}, "postStart": {"sleep": {"seconds": 2}}})
    );
    let ledger: Value = serde_json::from_str(
        m.object["metadata"]["annotations"]["lifecycle-operator.io/p"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        ledger["owned"]["c/preStop"],
        json!({"exec": {"command": ["sh", "-c", "true"]}}),
        "the original is recorded for the restore"
    );
}

/// Skip leaves a hook the request sets alone: nothing to inject.
#[test]
fn skip_leaves_the_requests_own_hook() {
    let p = policy("p", 1, json!({}));
    let object = created(Some(json!({"preStop": {"exec": {"command": ["true"]}}})));
    assert_eq!(admit(&object, std::slice::from_ref(&p), &[&p]), None);
}

/// Two policies on one slot: the older wins at admission as it would in
/// the background; the newer injects nothing.
#[test]
fn precedence_holds_at_admission() {
    let old = policy("old", 1, json!({}));
    let new = policy("new", 2, json!({"preStop": {"sleep": {"seconds": 9}}}));
    let all = [old.clone(), new.clone()];
    let m = admit(&created(None), &all, &[&old, &new]).unwrap();
    assert_eq!(m.by, ["ns/old"]);
    assert_eq!(
        m.object["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"],
        json!({"sleep": {"seconds": 1}})
    );
    let annotations = m.object["metadata"]["annotations"].as_object().unwrap();
    assert!(annotations.contains_key("lifecycle-operator.io/old"));
    assert!(!annotations.contains_key("lifecycle-operator.io/new"));
    // The newer one alone, the older being left to the background path
    // (say it rolls out): it still loses the slot to the older.
    assert_eq!(admit(&created(None), &all, &[&new]), None);
}

#[test]
fn a_policy_that_does_not_select_the_workload_changes_nothing() {
    let p = policy("p", 1, json!({"selector": {"matchLabels": {"app": "db"}}}));
    assert_eq!(admit(&created(None), std::slice::from_ref(&p), &[&p]), None);
}

/// Objects the webhook cannot read as a workload pass unchanged.
#[test]
fn an_unreadable_object_passes_unchanged() {
    let p = policy("p", 1, json!({}));
    for object in [
        json!("text"),
        json!({"spec": {"template": {"spec": {"containers": "x"}}}}),
    ] {
        assert_eq!(
            admit(&object, std::slice::from_ref(&p), &[&p]),
            None,
            "{object}"
        );
    }
}
