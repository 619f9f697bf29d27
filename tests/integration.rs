//! The operator process against the real cluster: what a user sees in the
//! API server after `kubectl apply` of policies and Deployments.

mod common;

use common::*;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use lifecycle_operator::hooks::hook::HookKind;
use serde_json::{Value, json};

fn hooks(d: &Deployment, container: &str) -> Value {
    let t = template(d);
    let c = t["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == container)
        .unwrap()
        .clone();
    c.get("lifecycle").cloned().unwrap_or(Value::Null)
}

/// The operator's annotations (the Deployment controller adds its own).
fn ledgers(d: &Deployment) -> Vec<(String, String)> {
    d.annotations()
        .iter()
        .filter(|(k, _)| k.starts_with("lifecycle-operator.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The operator never wrote to the Deployment. (Its resourceVersion moves
/// with the Deployment controller's status updates, so compare what we own.)
fn assert_untouched(before: &Deployment, after: &Deployment) {
    let name = after.metadata.name.as_deref().unwrap_or_default();
    assert_eq!(
        template(after),
        template(before),
        "{name}: template changed"
    );
    assert_eq!(
        after.metadata.generation, before.metadata.generation,
        "{name}: generation changed"
    );
    assert_eq!(
        ledgers(after),
        ledgers(before),
        "{name}: ledger annotations changed"
    );
    let managers: Vec<&str> = after
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.as_deref())
        .collect();
    assert!(
        !managers.iter().any(|m| m.starts_with("lifecycle-operator")),
        "{name}: managed by {managers:?}"
    );
}

async fn wait_deploy(
    ns: &Ns,
    name: &str,
    what: &str,
    ok: impl Fn(&Deployment) -> bool,
) -> Deployment {
    eventually(&format!("deployment {name}: {what}"), 60, || async {
        let d = ns
            .deployments()
            .get(name)
            .await
            .map_err(|e| e.to_string())?;
        if ok(&d) {
            Ok(d)
        } else {
            Err(template(&d).to_string())
        }
    })
    .await
}

#[tokio::test]
async fn policy_puts_hooks_on_matching_deployments_only_and_they_roll() {
    let ns = Ns::new("apply").await;
    let a = ns
        .deployment("web-a", json!({"app": "web"}), 1, json!({}))
        .await;
    ns.deployment("web-b", json!({"app": "web"}), 0, json!({}))
        .await;
    let other = ns
        .deployment("other", json!({"app": "other"}), 0, json!({}))
        .await;
    let policy = ns.policy(
        "graceful",
        json!({"selector": {"matchLabels": {"app": "web"}}, "preStop": sh("echo 'bye'; sleep 1"), "postStart": {"sleep": {"seconds": 1}}}),
    )
    .await;

    let p = wait_policy(&ns, "graceful", 60, |p| {
        condition(p, "Ready").is_some_and(|c| c.status == "True")
    })
    .await;
    let st = p.status.clone().unwrap();
    assert_eq!((st.matched_workloads, st.patched_workloads), (2, 2));
    assert_eq!(condition(&p, "Applied").unwrap().status, "True");
    assert_eq!(condition(&p, "Conflict").unwrap().status, "False");
    assert!(
        p.finalizers()
            .iter()
            .any(|f| f == "lifecycle-operator.io/cleanup")
    );

    let pre = rendered(&policy, HookKind::PreStop, sh("echo 'bye'; sleep 1"));
    assert_ne!(
        pre,
        sh("echo 'bye'; sleep 1"),
        "verification: Markers wraps shell scripts"
    );
    for name in ["web-a", "web-b"] {
        let d = ns.deployments().get(name).await.unwrap();
        assert_eq!(hooks(&d, "app")["preStop"], pre, "{name}");
        assert_eq!(
            hooks(&d, "app")["postStart"],
            json!({"sleep": {"seconds": 1}}),
            "{name}"
        );
        let managers: Vec<String> = d
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|m| m.manager.clone())
            .collect();
        assert!(
            managers.contains(&"lifecycle-operator/graceful".to_string()),
            "{managers:?}"
        );
    }
    // Not selected: untouched, not even an annotation.
    assert_untouched(&other, &ns.deployments().get("other").await.unwrap());

    // web-a rolled: a new ReplicaSet carries the hook and its pod runs.
    let rs_api: Api<ReplicaSet> = Api::namespaced(ns.client.clone(), &ns.name);
    eventually("web-a's new ReplicaSet to be available", 90, || async {
        let rss = rs_api
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let ok = rss.items.iter().any(|rs| {
            let t = serde_json::to_value(&rs.spec.template).unwrap();
            t["spec"]["containers"][0]["lifecycle"]["preStop"] == pre
                && rs
                    .status
                    .as_ref()
                    .and_then(|s| s.available_replicas)
                    .unwrap_or(0)
                    == 1
        });
        if ok {
            Ok(())
        } else {
            Err(format!("{} ReplicaSets", rss.items.len()))
        }
    })
    .await;
    assert!(
        ns.deployments()
            .get("web-a")
            .await
            .unwrap()
            .metadata
            .generation
            > a.metadata.generation
    );

    // DeploymentPatched events on the policy name every Deployment it
    // changed (several per event: one request per batch, not per Deployment).
    let events: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let evs = eventually("DeploymentPatched events", 30, || async {
        let list = events
            .list(&ListParams::default().fields("involvedObject.name=graceful"))
            .await
            .map_err(|e| e.to_string())?;
        let patched: Vec<String> = list
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("DeploymentPatched"))
            .filter_map(|e| e.message.clone())
            .collect();
        let names = |m: &String| {
            m.split_once("): ")
                .map(|(_, l)| l.to_string())
                .unwrap_or_default()
        };
        let listed: Vec<String> = patched.iter().map(names).collect();
        let has = |n: &str| listed.iter().any(|l| l.split(", ").any(|x| x == n));
        if has("web-a") && has("web-b") {
            Ok(patched)
        } else {
            Err(format!("{patched:?}"))
        }
    })
    .await;
    assert!(!evs.iter().any(|m| m.contains("other")));
    ns.delete().await;
}

#[tokio::test]
async fn a_deployment_that_stops_matching_gets_its_template_back() {
    let ns = Ns::new("unmatch").await;
    let before = ns
        .deployment("web", json!({"app": "web"}), 0, json!({}))
        .await;
    ns.policy("p", json!({"selector": {"matchLabels": {"app": "web"}}, "preStop": sh("sleep 2"), "terminationGracePeriodSeconds": 45, "verification": "Events"})).await;
    wait_deploy(&ns, "web", "hooks applied", |d| {
        hooks(d, "app")["preStop"] == sh("sleep 2")
    })
    .await;
    assert_eq!(
        template(&ns.deployments().get("web").await.unwrap())["terminationGracePeriodSeconds"],
        45
    );

    ns.deployments()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
        )
        .await
        .unwrap();
    let d = wait_deploy(&ns, "web", "hooks removed", |d| {
        template(d) == template(&before)
    })
    .await;
    assert_eq!(
        ledgers(&d),
        ledgers(&before),
        "the ledger annotation is gone"
    );
    wait_policy(&ns, "p", 30, |p| {
        p.status.as_ref().is_some_and(|s| s.matched_workloads == 0)
    })
    .await;
    ns.delete().await;
}

#[tokio::test]
async fn deleting_a_policy_restores_overridden_hooks_and_drops_the_finalizer() {
    let ns = Ns::new("delete").await;
    let own = sh("echo own hook");
    let pod = json!({"containers": [
        {"name": "app", "image": "busybox", "command": ["sleep", "3600"], "lifecycle": {"preStop": own}},
        {"name": "side", "image": "busybox", "command": ["sleep", "3600"]},
    ]});
    let before = ns.deployment("web", json!({"app": "web"}), 0, pod).await;
    let policy = ns.policy(
        "p",
        json!({"selector": {"matchLabels": {"app": "web"}}, "preStop": sh("policy hook"), "onConflict": "Override", "terminationGracePeriodSeconds": 90}),
    )
    .await;
    let ours = rendered(&policy, HookKind::PreStop, sh("policy hook"));
    wait_deploy(&ns, "web", "override applied", |d| {
        hooks(d, "app")["preStop"] == ours && hooks(d, "side")["preStop"] == ours
    })
    .await;

    ns.policies()
        .delete("p", &DeleteParams::default())
        .await
        .unwrap();
    eventually("policy gone", 60, || async {
        match ns.policies().get_opt("p").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let d = ns.deployments().get("web").await.unwrap();
    assert_eq!(
        template(&d),
        template(&before),
        "template restored byte for byte"
    );
    assert_eq!(ledgers(&d), ledgers(&before));
    ns.delete().await;
}

#[tokio::test]
async fn dry_run_reports_and_patches_nothing() {
    let ns = Ns::new("dryrun").await;
    let before = ns
        .deployment("web", json!({"app": "web"}), 0, json!({}))
        .await;
    ns.policy(
        "p",
        json!({"selector": {"matchLabels": {"app": "web"}}, "preStop": sh("x"), "mode": "DryRun"}),
    )
    .await;
    let p = wait_policy(&ns, "p", 60, |p| {
        condition(p, "Applied").is_some_and(|c| c.reason == "DryRun")
    })
    .await;
    let st = p.status.unwrap();
    assert_eq!(st.workloads[0].state, "WouldPatch");
    assert!(
        st.workloads[0].message.contains("app/preStop"),
        "{:?}",
        st.workloads[0]
    );
    assert_eq!(st.patched_workloads, 0);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let d = ns.deployments().get("web").await.unwrap();
    assert_untouched(&before, &d);
    ns.delete().await;
}

#[tokio::test]
async fn the_older_of_two_conflicting_policies_wins_and_the_other_reports_conflict() {
    let ns = Ns::new("conflict").await;
    ns.deployment("web", json!({"app": "web", "tier": "front"}), 0, json!({}))
        .await;
    ns.policy(
        "first",
        json!({"selector": {"matchLabels": {"app": "web"}}, "preStop": sh("first"), "verification": "Events"}),
    )
    .await;
    wait_deploy(&ns, "web", "first's hook", |d| {
        hooks(d, "app")["preStop"] == sh("first")
    })
    .await;
    // Creation timestamps have one-second resolution: make the order unambiguous.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    ns.policy("second", json!({"selector": {"matchLabels": {"tier": "front"}}, "preStop": sh("second"), "postStart": sh("second"), "verification": "Events"})).await;

    let p = wait_policy(&ns, "second", 60, |p| {
        condition(p, "Conflict").is_some_and(|c| c.status == "True")
    })
    .await;
    let msg = &condition(&p, "Conflict").unwrap().message;
    assert!(
        msg.contains("app/preStop") && msg.contains("first"),
        "{msg}"
    );
    assert_eq!(condition(&p, "Ready").unwrap().status, "False");
    // The loser still applies what nobody contests.
    let d = wait_deploy(&ns, "web", "second's postStart", |d| {
        hooks(d, "app")["postStart"] == sh("second")
    })
    .await;
    assert_eq!(hooks(&d, "app")["preStop"], sh("first"));
    let first = wait_policy(&ns, "first", 30, |p| {
        condition(p, "Ready").is_some_and(|c| c.status == "True")
    })
    .await;
    assert_eq!(condition(&first, "Conflict").unwrap().status, "False");

    // When the winner goes, the other takes the hook over.
    ns.policies()
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    wait_deploy(&ns, "web", "second's preStop", |d| {
        hooks(d, "app")["preStop"] == sh("second")
    })
    .await;
    wait_policy(&ns, "second", 60, |p| {
        condition(p, "Conflict").is_some_and(|c| c.status == "False")
    })
    .await;
    ns.delete().await;
}

#[tokio::test]
async fn an_existing_hook_is_kept_and_reported_under_skip() {
    let ns = Ns::new("skip").await;
    let own = sh("own");
    let pod = json!({"containers": [{"name": "app", "image": "busybox", "command": ["sleep", "1"], "lifecycle": {"preStop": own}}]});
    let before = ns.deployment("web", json!({"app": "web"}), 0, pod).await;
    ns.policy(
        "p",
        json!({"selector": {"matchLabels": {"app": "web"}}, "preStop": sh("policy")}),
    )
    .await;
    let p = wait_policy(&ns, "p", 60, |p| {
        condition(p, "Conflict").is_some_and(|c| c.status == "True")
    })
    .await;
    let st = p.status.clone().unwrap();
    assert_eq!(st.workloads[0].state, "Conflict");
    assert!(
        st.workloads[0]
            .message
            .contains("app/preStop: kept the container's own hook"),
        "{:?}",
        st.workloads
    );
    assert_untouched(&before, &ns.deployments().get("web").await.unwrap());
    ns.delete().await;
}

#[tokio::test]
async fn a_policy_never_touches_another_namespace() {
    let a = Ns::new("nsa").await;
    let b = Ns::new("nsb").await;
    a.deployment("web", json!({"app": "web"}), 0, json!({}))
        .await;
    let theirs = b
        .deployment("web", json!({"app": "web"}), 0, json!({}))
        .await;
    a.policy(
        "p",
        json!({"selector": {"matchLabels": {"app": "web"}}, "preStop": sh("x"), "verification": "Events"}),
    )
    .await;
    let p = wait_policy(&a, "p", 60, |p| {
        condition(p, "Ready").is_some_and(|c| c.status == "True")
    })
    .await;
    assert_eq!(p.status.unwrap().matched_workloads, 1);
    wait_deploy(&a, "web", "hook in A", |d| {
        hooks(d, "app")["preStop"] == sh("x")
    })
    .await;
    let d = b.deployments().get("web").await.unwrap();
    assert_untouched(&theirs, &d);
    a.delete().await;
    b.delete().await;
}

#[tokio::test]
async fn max_concurrent_rollouts_paces_the_rollouts() {
    let ns = Ns::new("pace").await;
    for i in 0..3 {
        ns.deployment(&format!("web-{i}"), json!({"app": "web"}), 1, json!({}))
            .await;
    }
    // Let the first rollouts finish so only the policy's rollouts count.
    for i in 0..3 {
        wait_deploy(&ns, &format!("web-{i}"), "available", |d| {
            d.status.as_ref().and_then(|s| s.available_replicas) == Some(1)
        })
        .await;
    }
    ns.policy("p", json!({"selector": {"matchLabels": {"app": "web"}}, "preStop": sh("x"), "maxConcurrentRollouts": 1})).await;
    let pending = wait_policy(&ns, "p", 30, |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.workloads.iter().any(|d| d.state == "Pending"))
    })
    .await;
    assert_eq!(condition(&pending, "Applied").unwrap().reason, "Pending");
    let done = wait_policy(&ns, "p", 120, |p| {
        condition(p, "Ready").is_some_and(|c| c.status == "True")
    })
    .await;
    assert_eq!(done.status.unwrap().patched_workloads, 3);
    ns.delete().await;
}

/// Each bad input, and the words the API server must answer with.
#[tokio::test]
async fn invalid_policies_are_rejected_by_the_api_server_with_a_clear_message() {
    let ns = Ns::new("invalid").await;
    let gvk = GroupVersionKind::gvk("lifecycle-operator.io", "v1alpha1", "LifecyclePolicy");
    let api: Api<DynamicObject> = Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &ApiResource::from_gvk_with_plural(&gvk, "lifecyclepolicies"),
    );
    let sel = json!({"matchLabels": {"app": "web"}});
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "no selector",
            json!({"preStop": sh("x")}),
            "spec.selector: Required value",
        ),
        (
            "empty selector",
            json!({"selector": {}, "preStop": sh("x")}),
            "selector must not be empty",
        ),
        (
            "empty matchLabels",
            json!({"selector": {"matchLabels": {}}, "preStop": sh("x")}),
            "selector must not be empty",
        ),
        (
            "no hook",
            json!({"selector": sel}),
            "set at least one of postStart or preStop",
        ),
        (
            "a Job (preStop never runs when a container completes)",
            json!({"selector": sel, "kinds": ["Job"], "preStop": sh("x")}),
            "Unsupported value: \"Job\": supported values: \"Deployment\", \"StatefulSet\", \"DaemonSet\"",
        ),
        (
            "a kind twice",
            json!({"selector": sel, "kinds": ["DaemonSet", "DaemonSet"], "preStop": sh("x")}),
            "kinds must not repeat",
        ),
        (
            "no kind",
            json!({"selector": sel, "kinds": [], "preStop": sh("x")}),
            "spec.kinds: Invalid value",
        ),
        (
            "empty handler",
            json!({"selector": sel, "preStop": {}}),
            "exactly one of exec, httpGet or sleep",
        ),
        (
            "two handlers",
            json!({"selector": sel, "postStart": {"exec": {"command": ["x"]}, "sleep": {"seconds": 1}}}),
            "exactly one of exec, httpGet or sleep",
        ),
        (
            "tcpSocket",
            json!({"selector": sel, "preStop": {"tcpSocket": {"port": 80}}}),
            "exactly one of exec, httpGet or sleep",
        ),
        (
            "httpGet.host (the kubelet would call it from the node's network)",
            json!({"selector": sel, "preStop": {"httpGet": {"port": 80, "host": "169.254.169.254", "path": "/latest/meta-data/"}}}),
            "httpGet.host is not allowed: the kubelet sends a hook's request from the node's network",
        ),
        (
            "an empty httpGet.host",
            json!({"selector": sel, "postStart": {"httpGet": {"port": 80, "host": ""}}}),
            "httpGet.host is not allowed",
        ),
        (
            "empty command",
            json!({"selector": sel, "preStop": {"exec": {"command": []}}}),
            "spec.preStop.exec.command: Invalid value",
        ),
        (
            "blank executable",
            json!({"selector": sel, "preStop": {"exec": {"command": [""]}}}),
            "exec.command[0] (the executable) must not be empty",
        ),
        (
            // 0 is allowed (Kubernetes 1.34+; tests/hooks.rs), below it not.
            "sleep -1",
            json!({"selector": sel, "preStop": {"sleep": {"seconds": -1}}}),
            "spec.preStop.sleep.seconds: Invalid value: -1",
        ),
        (
            "sleep too long",
            json!({"selector": sel, "preStop": {"sleep": {"seconds": 7200}}}),
            "should be less than or equal to 3600",
        ),
        (
            "grace 0",
            json!({"selector": sel, "preStop": sh("x"), "terminationGracePeriodSeconds": 0}),
            "spec.terminationGracePeriodSeconds",
        ),
        (
            "bad onConflict",
            json!({"selector": sel, "preStop": sh("x"), "onConflict": "Merge"}),
            "supported values: \"Skip\", \"Override\"",
        ),
        (
            "bad mode",
            json!({"selector": sel, "preStop": sh("x"), "mode": "Audit"}),
            "supported values: \"Enforce\", \"DryRun\"",
        ),
        (
            "negative maxConcurrentRollouts",
            json!({"selector": sel, "preStop": sh("x"), "maxConcurrentRollouts": -1}),
            "spec.maxConcurrentRollouts",
        ),
        (
            "port out of range",
            json!({"selector": sel, "preStop": {"httpGet": {"port": 70000}}}),
            "httpGet.port must be 1-65535 or a port name",
        ),
        (
            "In without values",
            json!({"selector": {"matchExpressions": [{"key": "app", "operator": "In"}]}, "preStop": sh("x")}),
            "values must be non-empty for In and NotIn",
        ),
        (
            "Exists with values",
            json!({"selector": {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["a"]}]}, "preStop": sh("x")}),
            "empty for Exists and DoesNotExist",
        ),
        (
            "bad operator",
            json!({"selector": {"matchExpressions": [{"key": "app", "operator": "Like", "values": ["a"]}]}, "preStop": sh("x")}),
            "supported values: \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\"",
        ),
        (
            "empty container name",
            json!({"selector": sel, "containers": [""], "preStop": sh("x")}),
            "container names must be 1 to 63 characters",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (what, spec, expect)) in cases.iter().enumerate() {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "lifecycle-operator.io/v1alpha1", "kind": "LifecyclePolicy",
            "metadata": {"name": format!("bad-{i}")}, "spec": spec,
        }))
        .unwrap();
        match api.create(&Default::default(), &obj).await {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(kube::Error::Api(e)) if e.code == 422 && e.message.contains(expect) => {}
            Err(e) => failures.push(format!(
                "{what}: expected 422 containing {expect:?}, got {e}"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad inputs misjudged:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    ns.delete().await;
}
