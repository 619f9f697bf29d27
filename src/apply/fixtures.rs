//! Test fixtures shared by the pure pipeline's tests and the mock-API tier.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use serde_json::{Value, json};

use crate::api::cluster::ClusterLifecyclePolicy;
use crate::api::types::{LifecyclePolicy, WorkloadKind};
use crate::apply::policies::Policies;
use crate::apply::workload::{HOOKED_LABEL, HOOKED_VALUE, Workload};

/// A settled Deployment in "ns" labelled app=web; `carries`: with policy
/// "p"'s preStop, its ledger and the managedFields that say so.
pub fn deployment(name: &str, carries: bool) -> Workload {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("d-{name}"), "resourceVersion": "1",
                     "generation": 1, "labels": {"app": "web"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}},
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1},
    });
    if carries {
        d["metadata"]["annotations"] =
            json!({"lifecycle-operator.io/p": r#"{"policy":"p","owned":{"c/preStop":null}}"#});
        d["metadata"]["managedFields"] = json!([{
            "manager": "lifecycle-operator/p", "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:annotations": {"f:lifecycle-operator.io/p": {}}},
                         "f:spec": {"f:template": {"f:metadata": {"f:labels": {format!("f:{HOOKED_LABEL}"): {}}},
                             "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {
                             ".": {}, "f:name": {}, "f:lifecycle": {"f:preStop": {".": {}, "f:sleep": {"f:seconds": {}}}}}}}}}},
        }]);
        d["spec"]["template"]["spec"]["containers"][0]["lifecycle"] =
            json!({"preStop": {"sleep": {"seconds": 1}}});
        d["spec"]["template"]["metadata"] = json!({"labels": {HOOKED_LABEL: HOOKED_VALUE}});
    }
    let mut w: Workload = serde_json::from_value(d).unwrap();
    w.kind = WorkloadKind::Deployment;
    w
}

/// The same, shared as the caches hold it.
pub fn cached(name: &str, carries: bool) -> Arc<Workload> {
    Arc::new(deployment(name, carries))
}

/// A cluster policy taking namespaces labelled team=a and workloads
/// labelled app=web, a preStop sleep; `extra` merged into it.
pub fn cluster_policy(name: &str, extra: Value) -> ClusterLifecyclePolicy {
    let mut p = json!({
        "apiVersion": "lifecycle-operator.io/v1alpha1", "kind": "ClusterLifecyclePolicy",
        "metadata": {"name": name, "uid": format!("u-{name}"), "generation": 1,
                     "creationTimestamp": "2025-01-01T00:00:01Z"},
        "spec": {"namespaceSelector": {"matchLabels": {"team": "a"}},
                 "selector": {"matchLabels": {"app": "web"}}, "preStop": {"sleep": {"seconds": 1}}},
    });
    json_patch::merge(&mut p, &extra);
    serde_json::from_value(p).unwrap()
}

/// The caches of both kinds and of `namespaces` (name, labels); the
/// operator runs in lco-system.
pub fn policies(
    namespaced: &[Arc<LifecyclePolicy>],
    cluster: &[ClusterLifecyclePolicy],
    namespaces: &[(&str, Value)],
) -> Policies {
    let namespaces = namespaces.iter().map(|(name, labels)| {
        serde_json::from_value::<Namespace>(json!({"metadata": {"name": name, "labels": labels}}))
            .unwrap()
    });
    Policies::from_lists(
        namespaced.iter().map(|p| (**p).clone()).collect(),
        cluster.to_vec(),
        namespaces.collect(),
        "lco-system",
    )
}
