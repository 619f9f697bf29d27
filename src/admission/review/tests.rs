//! AdmissionReviews as the API server sends them, answered from caches.

use super::*;
use crate::apply::fixtures;
use kube::core::admission::AdmissionReview;
use serde_json::{Value, json};

const COMPLETE: &str = "Complete";

fn team_policy(phase: &str) -> Arc<LifecyclePolicy> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "lifecycle-operator.io/v1alpha1", "kind": "LifecyclePolicy",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-p", "generation": 1,
                         "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "preStop": {"sleep": {"seconds": 1}}},
            "status": {"rollout": {"generation": 1, "phase": phase, "rolledOut": 0, "pending": 0}},
        }))
        .unwrap(),
    )
}

fn object() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "ns", "labels": {"app": "web"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
    })
}

fn request(
    kind: &str,
    operation: &str,
    sub_resource: Option<&str>,
) -> AdmissionRequest<DynamicObject> {
    let mut r = json!({
        "uid": "r-1",
        "kind": {"group": "apps", "version": "v1", "kind": kind},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "name": "web", "namespace": "ns", "operation": operation,
        "userInfo": {"username": "alice"}, "object": object(), "dryRun": false,
    });
    if let Some(s) = sub_resource {
        r["subResource"] = json!(s);
    }
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": r,
    }))
    .unwrap();
    review.try_into().unwrap()
}

fn answer(
    policies: &Policies,
    req: &AdmissionRequest<DynamicObject>,
) -> (AdmissionResponse, Outcome) {
    let neighbours = Neighbours::default();
    let caches = Caches {
        policies,
        neighbours: &neighbours,
    };
    review(&caches, req, Timestamp::from_second(1_800_000_000).unwrap())
}

/// The response's patch applied to the request's object.
fn patched(response: &AdmissionResponse) -> Value {
    let ops: json_patch::Patch =
        serde_json::from_slice(response.patch.as_ref().expect("a patch")).unwrap();
    let mut o = object();
    json_patch::patch(&mut o, &ops).unwrap();
    o
}

fn pre_stop(o: &Value) -> &Value {
    &o["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]
}

#[test]
fn a_create_gets_the_hooks_of_a_rolled_out_policy() {
    let policies = fixtures::policies(&[team_policy(COMPLETE)], &[], &[("ns", json!({}))]);
    let (response, outcome) = answer(&policies, &request("Deployment", "CREATE", None));
    assert!(response.allowed);
    assert_eq!(outcome, Outcome::Mutated(vec!["ns/p".into()]));
    assert_eq!(
        pre_stop(&patched(&response)),
        &json!({"sleep": {"seconds": 1}})
    );
}

#[test]
fn a_rollout_under_way_is_left_to_the_background_path() {
    for phase in ["Canary", "Waves", "Halted"] {
        let policies = fixtures::policies(&[team_policy(phase)], &[], &[("ns", json!({}))]);
        let (response, outcome) = answer(&policies, &request("Deployment", "CREATE", None));
        assert!(response.allowed && response.patch.is_none(), "{phase}");
        assert_eq!(outcome, Outcome::Unchanged, "{phase}");
    }
}

#[test]
fn other_requests_pass_untouched() {
    let policies = fixtures::policies(&[team_policy(COMPLETE)], &[], &[("ns", json!({}))]);
    for req in [
        request("Deployment", "DELETE", None),
        request("Deployment", "UPDATE", Some("scale")),
        request("ReplicaSet", "CREATE", None),
    ] {
        let (response, outcome) = answer(&policies, &req);
        assert!(response.allowed && response.patch.is_none());
        assert_eq!(outcome, Outcome::Ignored);
    }
}

#[test]
fn a_cluster_policy_injects_where_its_namespace_selector_takes_the_namespace() {
    let complete = json!({"status": {"rollout": {"generation": 1, "phase": COMPLETE, "rolledOut": 0, "pending": 0},
                                     "namespaces": {"matched": 1, "patched": 1}}});
    let clcp = fixtures::cluster_policy("drain", complete);
    let labelled = fixtures::policies(
        &[],
        std::slice::from_ref(&clcp),
        &[("ns", json!({"team": "a"}))],
    );
    let (response, outcome) = answer(&labelled, &request("Deployment", "CREATE", None));
    assert_eq!(outcome, Outcome::Mutated(vec!["drain".into()]));
    let o = patched(&response);
    assert_eq!(pre_stop(&o), &json!({"sleep": {"seconds": 1}}));
    assert!(
        o["metadata"]["annotations"]
            .get("lifecycle-operator.io/cluster_drain")
            .is_some()
    );
    // Not selected: nothing.
    let other = fixtures::policies(&[], &[clcp], &[("ns", json!({"team": "b"}))]);
    assert_eq!(
        answer(&other, &request("Deployment", "CREATE", None)).1,
        Outcome::Unchanged
    );
}
