//! Test fixtures shared by the pure pipeline's tests and the mock-API tier.

use std::sync::Arc;

use serde_json::json;

use crate::api::types::WorkloadKind;
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
