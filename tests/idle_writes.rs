//! An unchanged world causes zero writes: 50 matched Deployments, a settled
//! policy, then a quiet minute measured through the operator's own count of
//! every non-GET request it sends. Runs alone (see tests/run-cluster-tests.sh)
//! so no other test's objects make the operator busy.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use serde_json::json;

#[tokio::test]
async fn fifty_matched_workloads_and_a_quiet_minute_cost_zero_writes() {
    let ns = Ns::new("idle").await;
    for i in 0..50 {
        ns.deployment(&format!("web-{i:02}"), json!({"app": "web"}), 0, json!({}))
            .await;
    }
    ns.policy("p", json!({"selector": {"matchLabels": {"app": "web"}}, "preStop": sh("sleep 1"), "postStart": sh("true")})).await;
    let p = wait_policy(&ns, "p", 120, |p| {
        p.status.as_ref().is_some_and(|s| s.patched_workloads == 50)
    })
    .await;
    assert_eq!(p.status.unwrap().matched_workloads, 50);
    // The suites before this one delete their namespaces as they end; the
    // operator's cleanup of their policies would write during the minute.
    let namespaces: Api<Namespace> = Api::all(ns.client.clone());
    eventually("the other test namespaces gone", 180, || async {
        let left: Vec<String> = namespaces
            .list(&ListParams::default().labels("lifecycle-operator.io/test=true"))
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .filter(|n| *n != ns.name)
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
    // Let the Deployment controller's status updates and the events settle.
    tokio::time::sleep(Duration::from_secs(10)).await;

    let before = operator_writes().await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = operator_writes().await;
    println!("operator write requests: {before} before, {after} after a quiet minute");
    assert_eq!(
        after - before,
        0.0,
        "the operator wrote during a quiet minute"
    );
    ns.delete().await;
}
