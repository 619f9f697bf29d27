//! Did the preStop drain? Real nginx pods behind a real Service: the
//! Kubernetes docs' hook quits at once and the policy says DrainSafe False,
//! naming the pod and what to sleep; a hook that sleeps first is True; pods
//! no Service selects are not counted (issue 22).

mod common;

use common::*;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use lifecycle_operator::api::types::LifecyclePolicy;
use serde_json::{Value, json};

const DOCS_HOOK: &str = "nginx -s quit; while killall -0 nginx; do sleep 1; done";
const SLEEP_FIRST: &str = "sleep 5; nginx -s quit; while killall -0 nginx; do sleep 1; done";

fn nginx() -> Value {
    json!({"containers": [{"name": "nginx", "image": "nginx", "imagePullPolicy": "IfNotPresent",
        "ports": [{"containerPort": 80}],
        "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 1}}]})
}

async fn service(ns: &Ns, name: &str) {
    let s: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"selector": {"pod": name}, "ports": [{"port": 80, "targetPort": 80}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), &s)
        .await
        .expect("create service");
}

/// Waits until the Deployment's pods carry the policy's preStop and are
/// ready, then deletes them (the ReplicaSet makes new ones); their names.
async fn replace_hooked_pods(ns: &Ns, name: &str, replicas: usize) -> Vec<String> {
    let names = eventually(&format!("{name}: hooked pods ready"), 180, || async {
        let ps = pods(ns, name).await;
        let ready = |p: &Pod| {
            p.metadata.deletion_timestamp.is_none()
                && p.spec.as_ref().unwrap().containers[0]
                    .lifecycle
                    .as_ref()
                    .is_some_and(|l| l.pre_stop.is_some())
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        let names: Vec<String> = ps
            .iter()
            .filter(|p| ready(p))
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        if names.len() == replicas && ps.len() == replicas {
            Ok(names)
        } else {
            Err(format!("{} of {} ready and hooked", names.len(), ps.len()))
        }
    })
    .await;
    // The endpoints follow readiness through the endpointslice controller.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let api: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    for n in &names {
        api.delete(n, &DeleteParams::default()).await.unwrap();
    }
    names
}

fn drain(p: &LifecyclePolicy) -> Option<&lifecycle_operator::api::types::DrainStatus> {
    p.status.as_ref()?.drain.as_ref()
}

async fn gone(ns: &Ns, names: &[String]) {
    let api: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    eventually("the deleted pods gone", 120, || async {
        let left: Vec<String> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .filter(|n| names.contains(n))
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(left.join(", "))
        }
    })
    .await;
}

#[tokio::test]
async fn the_docs_hook_quits_while_still_an_endpoint() {
    let ns = Ns::new("drain-docs").await;
    service(&ns, "web").await;
    ns.deployment("web", json!({"app": "web"}), 2, nginx())
        .await;
    ns.policy(
        "drain",
        json!({"selector": {"matchLabels": {"app": "web"}}, "containers": ["nginx"],
            "preStop": sh(DOCS_HOOK)}),
    )
    .await;
    let p = wait_policy(&ns, "drain", 60, |p| {
        condition(p, "DrainSafe").is_some_and(|c| c.status == "Unknown")
    })
    .await;
    assert_eq!(drain(&p).map(|d| d.observed), Some(0), "nothing timed yet");

    let deleted = replace_hooked_pods(&ns, "web", 2).await;
    let p = wait_policy(&ns, "drain", 120, |p| {
        drain(p).is_some_and(|d| d.observed >= 2)
    })
    .await;
    let d = drain(&p).unwrap();
    println!("docs hook: {}", serde_json::to_string(d).unwrap());
    assert_eq!((d.observed, d.safe, d.unsafe_), (2, 0, 2));
    let last = d.last_unsafe.as_ref().unwrap();
    assert!(deleted.contains(&last.pod), "{last:?} names a deleted pod");
    assert!(last.gap_seconds <= 0.0, "{last:?}: it quit at once");
    assert!(
        last.message.starts_with("endpoints were removed ")
            && last
                .message
                .contains(" after nginx began to quit: sleep at least "),
        "{last:?}"
    );
    let r = d.removal_seconds.as_ref().unwrap();
    assert!(r.p50 >= 0.0 && r.p50 <= r.p99, "{r:?}");
    let recommended = d.recommended_pre_stop_seconds.unwrap();
    assert!(
        recommended >= 1 && recommended as f64 >= r.p99 + 1.0,
        "{d:?}"
    );
    let c = condition(&p, "DrainSafe").unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "StoppedWhileServing")
    );
    assert!(
        c.message
            .starts_with("2 of 2 pods stopped while still an endpoint; latest: pod ")
            && c.message.contains(&last.pod),
        "{c:?}"
    );
    // Advisory: the policy itself is fine.
    assert_eq!(condition(&p, "Ready").unwrap().status, "True");
    // The status can be written from the drain index before the observer's
    // next flush records the removals in the histogram: wait for it.
    let url = std::env::var("LCO_METRICS_URL").unwrap();
    eventually("the removal histogram to count both pods", 30, || async {
        let metrics = http_get(&url).await;
        let timed: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("lifecycle_operator_drain_removal_seconds_count "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if timed >= 2.0 {
            Ok(())
        } else {
            Err(format!("removal histogram count {timed}"))
        }
    })
    .await;
    gone(&ns, &deleted).await;
    ns.delete().await;
}

#[tokio::test]
async fn sleeping_before_quitting_drains_and_pods_without_a_service_do_not_count() {
    let ns = Ns::new("drain-sleep").await;
    service(&ns, "web").await;
    ns.deployment("web", json!({"app": "web"}), 2, nginx())
        .await;
    ns.deployment("lonely", json!({"app": "web"}), 1, nginx())
        .await;
    ns.policy(
        "drain",
        json!({"selector": {"matchLabels": {"app": "web"}}, "containers": ["nginx"],
            "preStop": sh(SLEEP_FIRST), "drain": {"marginSeconds": 1}}),
    )
    .await;
    let mut deleted = replace_hooked_pods(&ns, "web", 2).await;
    deleted.extend(replace_hooked_pods(&ns, "lonely", 1).await);
    let p = wait_policy(&ns, "drain", 120, |p| {
        condition(p, "DrainSafe").is_some_and(|c| c.status != "Unknown")
            && drain(p).is_some_and(|d| d.observed >= 2)
    })
    .await;
    let d = drain(&p).unwrap();
    println!("sleep first: {}", serde_json::to_string(d).unwrap());
    assert_eq!(
        (d.safe, d.unsafe_, d.last_unsafe.as_ref()),
        (2, 0, None),
        "{d:?}"
    );
    let c = condition(&p, "DrainSafe").unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "Drained"),
        "{c:?}"
    );
    assert!(
        c.message
            .starts_with("2 pods left their endpoints before they were told to stop")
    );
    // The lonely pod's deletion is final too, and still nothing counts it.
    gone(&ns, &deleted).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let p = ns.policies().get("drain").await.unwrap();
    assert_eq!(
        drain(&p).unwrap().observed,
        2,
        "a pod no Service selects is not counted"
    );
    ns.delete().await;
}
