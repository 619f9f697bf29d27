//! Hooks from the first pod (issue 21): the operator's admission webhook
//! puts a policy's hooks into the write that creates or replaces a
//! workload, so it rolls out once, with them; when the webhook is down the
//! background path converges and the status counts the second rollout.
//!
//! The operator runs out of cluster (its own process, like
//! tests/restarts.rs: tests/run-cluster-tests.sh runs this file with no
//! other operator); the webhook configuration points at its local address,
//! and selects only this test's namespace.

mod common;

use std::time::Duration;

use common::operator::Operator;
use common::*;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const PORT: u16 = 18095;
const WEBHOOK_PORT: u16 = 18443;
/// The label that puts a namespace under this test's webhook configuration.
const SELECT: &str = "lifecycle-operator.io/webhook-test";

fn config_name(ns: &Ns) -> String {
    format!("lco-test-{}", ns.name)
}

/// This file's operator, serving the webhook on 127.0.0.1, its certificate
/// Secret in the test namespace.
async fn operator(ns_name: &str, config: &str) -> Operator {
    let addr = format!("127.0.0.1:{WEBHOOK_PORT}");
    Operator::start(
        PORT,
        "webhook-operator.log",
        &[
            "--webhook-addr",
            &addr,
            "--webhook-ip",
            "127.0.0.1",
            "--webhook-configuration",
            config,
            "--webhook-secret",
            "lco-test-webhook-tls",
            "--operator-namespace",
            ns_name,
        ],
    )
    .await
}

/// The webhook configuration as the chart writes it, but pointing at the
/// local operator and selecting only `ns` (the operator fills in caBundle).
async fn configure(ns: &Ns) -> Api<MutatingWebhookConfiguration> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(ns.client.clone());
    let c: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": config_name(ns), "labels": {"lifecycle-operator.io/test": "true"}},
        "webhooks": [{
            "name": "workloads.lifecycle-operator.io",
            "clientConfig": {"url": format!("https://127.0.0.1:{WEBHOOK_PORT}/mutate")},
            "rules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                       "resources": ["deployments", "statefulsets", "daemonsets"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {SELECT: ns.name}},
            "failurePolicy": "Ignore", "sideEffects": "None", "timeoutSeconds": 5,
            "reinvocationPolicy": "IfNeeded", "admissionReviewVersions": ["v1"],
        }],
    }))
    .unwrap();
    api.create(&PostParams::default(), &c).await.unwrap();
    api
}

async fn select(ns: &Ns) {
    Api::<Namespace>::all(ns.client.clone())
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {SELECT: ns.name}}})),
        )
        .await
        .unwrap();
}

/// The operator has put its CA into the configuration.
async fn ca_bundle_set(api: &Api<MutatingWebhookConfiguration>, name: &str) {
    eventually("caBundle in the webhook configuration", 60, || async {
        let c = api.get(name).await.map_err(|e| e.to_string())?;
        let set = c.webhooks.unwrap_or_default().iter().all(|w| {
            w.client_config
                .ca_bundle
                .as_ref()
                .is_some_and(|b| !b.0.is_empty())
        });
        if set {
            Ok(())
        } else {
            Err("no caBundle yet".to_string())
        }
    })
    .await;
}

fn manifest(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"pod": name}},
                 "template": {"metadata": {"labels": {"pod": name}},
                              "spec": {"terminationGracePeriodSeconds": 5, "containers": [{
                                  "name": "app", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                                  "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]}]}}},
    }))
    .unwrap()
}

fn pre_stop(d: &Deployment) -> Option<Value> {
    template(d)["containers"][0]["lifecycle"]
        .get("preStop")
        .cloned()
}

/// The whole pod template (labels included) as JSON.
fn whole_template(d: &Deployment) -> Value {
    serde_json::to_value(&d.spec.template).unwrap()
}

/// The ReplicaSets the Deployment `name` owns.
async fn replica_sets(ns: &Ns, name: &str) -> Vec<ReplicaSet> {
    let api: Api<ReplicaSet> = Api::namespaced(ns.client.clone(), &ns.name);
    api.list(&ListParams::default().labels(&format!("pod={name}")))
        .await
        .unwrap()
        .items
}

/// The policy's rollout is complete for its generation (the webhook's gate).
async fn rolled_out(ns: &Ns, name: &str) {
    wait_policy(ns, name, 60, |p| {
        p.status
            .as_ref()
            .and_then(|s| s.rollout.as_ref())
            .is_some_and(|r| r.phase.as_str() == "Complete")
    })
    .await;
}

async fn first_writes(ns: &Ns, policy: &str, admitted: i32, second: i32) {
    wait_policy(ns, policy, 90, |p| {
        p.status
            .as_ref()
            .and_then(|s| s.first_writes.as_ref())
            .is_some_and(|f| f.admitted == admitted && f.second_rollouts == second)
    })
    .await;
}

#[tokio::test]
async fn workloads_get_their_hooks_in_their_first_write_and_converge_without_the_webhook() {
    let client = client().await;
    // The namespace first (the operator keeps its Secret there).
    let probe_name = format!(
        "it-webhook-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let config = format!("lco-test-{probe_name}");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": probe_name,
                "labels": {"lifecycle-operator.io/test": "true", SELECT: probe_name}}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let op = operator(&probe_name, &config).await;
    let ns = Ns {
        name: probe_name.clone(),
        client: client.clone(),
    };
    select(&ns).await;
    let configs = configure(&ns).await;
    ca_bundle_set(&configs, &config).await;

    ns.policy(
        "drain",
        json!({"selector": {"matchLabels": {"app": "web"}}, "preStop": {"sleep": {"seconds": 1}}}),
    )
    .await;
    rolled_out(&ns, "drain").await;

    // Created after the policy: the write itself carries the hook.
    let created = ns
        .deployments()
        .create(&PostParams::default(), &manifest("first"))
        .await
        .unwrap();
    assert_eq!(
        pre_stop(&created),
        Some(json!({"sleep": {"seconds": 1}})),
        "the create's answer carries the hook"
    );
    eventually("one ReplicaSet, ready", 120, || async {
        let d = ns
            .deployments()
            .get("first")
            .await
            .map_err(|e| e.to_string())?;
        let ready = d.status.as_ref().and_then(|s| s.ready_replicas) == Some(1);
        if ready {
            Ok(())
        } else {
            Err("not ready".into())
        }
    })
    .await;
    first_writes(&ns, "drain", 1, 0).await;
    // The takeover by the policy's manager changed no template.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        replica_sets(&ns, "first").await.len(),
        1,
        "one rollout only"
    );
    let d = ns.deployments().get("first").await.unwrap();
    let managers: Vec<String> = d
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.iter().any(|m| m == "lifecycle-operator/drain"),
        "taken over: {managers:?}"
    );

    // A replace with a template lacking the hook: no rollout without it.
    let mut replaced = manifest("first");
    replaced.metadata.resource_version = d.metadata.resource_version.clone();
    let after = ns
        .deployments()
        .replace("first", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_eq!(pre_stop(&after), Some(json!({"sleep": {"seconds": 1}})));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        replica_sets(&ns, "first").await.len(),
        1,
        "replace: no rollout"
    );

    // The webhook down: the create succeeds at once, without the hook; the
    // background path adds it once the operator is back (a second rollout).
    op.stop("-TERM").await;
    let t0 = std::time::Instant::now();
    let bare = ns
        .deployments()
        .create(&PostParams::default(), &manifest("late"))
        .await
        .unwrap();
    assert_eq!(pre_stop(&bare), None);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "failurePolicy Ignore: no wait"
    );
    let op = operator(&probe_name, &config).await;
    eventually("the background path hooks the late one", 90, || async {
        let d = ns
            .deployments()
            .get("late")
            .await
            .map_err(|e| e.to_string())?;
        pre_stop(&d)
            .map(drop)
            .ok_or_else(|| "no hook yet".to_string())
    })
    .await;
    first_writes(&ns, "drain", 1, 1).await;

    // Deleting the policy restores both templates as first written
    // (compared with a third, never hooked: the API server's defaults).
    let control_ns = Ns::new("webhook-control").await;
    let control = control_ns
        .deployments()
        .create(&PostParams::default(), &manifest("first"))
        .await
        .unwrap();
    ns.policies()
        .delete("drain", &DeleteParams::default())
        .await
        .unwrap();
    for name in ["first", "late"] {
        eventually(&format!("{name} restored"), 90, || async {
            let d = ns
                .deployments()
                .get(name)
                .await
                .map_err(|e| e.to_string())?;
            let mut want = whole_template(&control);
            want["metadata"]["labels"]["pod"] = json!(name);
            if whole_template(&d) == want
                && d.annotations()
                    .keys()
                    .all(|k| !k.starts_with("lifecycle-operator.io/"))
            {
                Ok(())
            } else {
                Err(format!("{}", whole_template(&d)))
            }
        })
        .await;
    }
    configs
        .delete(&config, &DeleteParams::default())
        .await
        .unwrap();
    drop(op);
    control_ns.delete().await;
    ns.delete().await;
}
