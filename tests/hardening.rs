//! Nothing one policy does can crash the operator, lose a halt, clobber a
//! field or leave a hook behind (issue 18), on the real cluster: each recipe
//! of the issue as a user would try it. The operator's pid is the same
//! before and after, templates come back byte for byte, generations stop.

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{DeleteParams, Patch, PatchParams};
use lifecycle_operator::api::types::LifecyclePolicy;
use serde_json::{Value, json};

/// The operator process `tests/run-cluster-tests.sh` started.
fn operator_pid() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/it/operator.pid");
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e} (run through tests/run-cluster-tests.sh)"))
        .trim()
        .to_string()
}

fn assert_alive(pid: &str) {
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the operator (pid {pid}) died"
    );
    let log = concat!(env!("CARGO_MANIFEST_DIR"), "/target/it/operator.log");
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        !text.contains("panicked"),
        "the operator panicked (see {log})"
    );
}

fn sleeper() -> Value {
    json!({"containers": [{"name": "app", "image": "busybox", "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]}]})
}

fn halted(p: &LifecyclePolicy) -> Option<String> {
    condition(p, "RolloutHalted")
        .filter(|c| c.status == "True")
        .map(|c| c.message.clone())
}

fn workload_state(p: &LifecyclePolicy, name: &str) -> Option<(String, String)> {
    p.status
        .as_ref()?
        .workloads
        .iter()
        .find(|w| w.name == name)
        .map(|w| (w.state.to_string(), w.message.clone()))
}

async fn generation(ns: &Ns, name: &str) -> i64 {
    let d = ns.deployments().get(name).await.unwrap();
    d.metadata.generation.unwrap_or(0)
}

/// The parts of a Deployment a policy may change and must give back.
fn restorable(d: &Deployment) -> String {
    let mut ann = d.metadata.annotations.clone().unwrap_or_default();
    ann.remove("deployment.kubernetes.io/revision");
    serde_json::to_string(&json!([d.spec.template, ann])).unwrap()
}

/// A failing postStart whose script has a Chinese comment, in three
/// namespaces whose names shift every multi-byte character across the old
/// 1,000-byte cut: the operator survives and each halt is readable.
#[tokio::test]
async fn a_non_ascii_hook_failure_does_not_kill_the_operator() {
    let pid = operator_pid();
    let mut spaces = Vec::new();
    for pad in 0..3 {
        let ns = Ns::new(&format!("utf{}", "x".repeat(pad))).await;
        ns.deployment("web", json!({"app": "web"}), 1, sleeper())
            .await;
        let script = format!(
            "# 中文注释：启动后写入就绪文件，失败时退出{}\necho 启动失败 >&2; exit 3",
            "。".repeat(pad * 7)
        );
        ns.policy(
            "broken",
            json!({"selector": {"matchLabels": {"app": "web"}}, "postStart": sh(&script)}),
        )
        .await;
        spaces.push(ns);
    }
    for ns in &spaces {
        let p = wait_policy(ns, "broken", 180, |p| halted(p).is_some()).await;
        let msg = halted(&p).unwrap();
        assert!(msg.contains("exited with code 3"), "{msg}");
        assert!(msg.contains("中文注释"), "the policy's own script: {msg}");
        assert!(!msg.contains("__lco_rc"), "no marker wrapper: {msg}");
        assert!(msg.len() <= 2048, "{} bytes", msg.len());
    }
    assert_alive(&pid);
    assert_eq!(operator_pid(), pid);
    for ns in spaces {
        ns.delete().await;
    }
}

/// A failing postStart that prints 40 KiB: more than a condition takes. The
/// halt is recorded, the canary reverted once, and the rollout stops.
#[tokio::test]
async fn a_halt_too_big_for_a_condition_is_recorded_and_the_rollout_stops() {
    let pid = operator_pid();
    let ns = Ns::new("big").await;
    ns.deployment("web", json!({"app": "web"}), 1, sleeper())
        .await;
    ns.policy(
        "loud",
        json!({"selector": {"matchLabels": {"app": "web"}},
               "postStart": sh("head -c 40960 /dev/zero | tr '\\0' x; exit 1")}),
    )
    .await;
    let p = wait_policy(&ns, "loud", 180, |p| halted(p).is_some()).await;
    let msg = halted(&p).unwrap();
    assert!(msg.contains("exited with code 1"), "{msg}");
    let reverted = eventually("the canary reverted", 60, || async {
        let d = ns
            .deployments()
            .get("web")
            .await
            .map_err(|e| e.to_string())?;
        let t = template(&d);
        if t["containers"][0].get("lifecycle").is_none() {
            Ok(d.metadata.generation.unwrap_or(0))
        } else {
            Err(t.to_string())
        }
    })
    .await;
    // Patched once, reverted once: no storm of generations.
    assert!(reverted <= 4, "generation {reverted}");
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(generation(&ns, "web").await, reverted, "the halt stands");
    assert_alive(&pid);
    ns.delete().await;
}

/// Enforce, then DryRun, then delete: every hook comes back, and a
/// container's `lifecycle: {}` is `{}` again.
#[tokio::test]
async fn enforce_then_dry_run_then_delete_leaves_the_template_as_it_was() {
    let ns = Ns::new("dry").await;
    let pod = json!({"containers": [
        {"name": "app", "image": "busybox", "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]},
        {"name": "side", "image": "busybox", "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"], "lifecycle": {}},
    ]});
    let before = ns.deployment("web", json!({"app": "web"}), 0, pod).await;
    let before = restorable(&ns.deployments().get("web").await.unwrap_or(before));
    ns.policy(
        "p",
        json!({"selector": {"matchLabels": {"app": "web"}}, "preStop": {"sleep": {"seconds": 1}},
               "rollout": {"strategy": "Immediate"}}),
    )
    .await;
    wait_policy(&ns, "p", 60, |p| {
        workload_state(p, "web").is_some_and(|(s, _)| s == "Patched")
    })
    .await;
    let d = ns.deployments().get("web").await.unwrap();
    assert_eq!(
        template(&d)["containers"][1]["lifecycle"],
        json!({"preStop": {"sleep": {"seconds": 1}}})
    );
    ns.policies()
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"mode": "DryRun"}})),
        )
        .await
        .unwrap();
    wait_policy(&ns, "p", 60, |_| true).await;
    ns.policies()
        .delete("p", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the policy gone", 60, || async {
        match ns.policies().get_opt("p").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let after = restorable(&ns.deployments().get("web").await.unwrap());
    assert_eq!(after, before, "byte for byte");
    ns.delete().await;
}

/// A manifest of another field manager, applied with server-side apply.
fn manifest(pre_stop: Value, grace: Option<i64>) -> Value {
    let mut pod = json!({"containers": [{"name": "app", "image": "busybox", "imagePullPolicy": "IfNotPresent",
        "command": ["sleep", "3600"], "lifecycle": {"preStop": pre_stop}}]});
    if let Some(g) = grace {
        pod["terminationGracePeriodSeconds"] = json!(g);
    }
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web", "labels": {"app": "web"}},
           "spec": {"replicas": 0, "selector": {"matchLabels": {"pod": "web"}},
                    "template": {"metadata": {"labels": {"pod": "web"}}, "spec": pod}}})
}

async fn apply_as(ns: &Ns, manager: &str, body: &Value) -> Deployment {
    ns.deployments()
        .patch(
            "web",
            &PatchParams::apply(manager).force(),
            &Patch::Apply(body),
        )
        .await
        .expect("the manifest applies")
}

/// onConflict: Override of an `exec` preStop another manager owns with a
/// `sleep` one: the handler is replaced whole (the API server never sees
/// two), and the release brings the `exec` back.
#[tokio::test]
async fn override_replaces_another_managers_handler_type() {
    let ns = Ns::new("override").await;
    let theirs = json!({"exec": {"command": ["/bin/sh", "-c", "sleep 2"]}});
    let before = restorable(&apply_as(&ns, "gitops-test", &manifest(theirs.clone(), None)).await);
    ns.policy(
        "p",
        json!({"selector": {"matchLabels": {"app": "web"}}, "preStop": {"sleep": {"seconds": 5}},
               "onConflict": "Override", "rollout": {"strategy": "Immediate"}}),
    )
    .await;
    let p = wait_policy(&ns, "p", 60, |p| {
        workload_state(p, "web").is_some_and(|(s, _)| s == "Patched" || s == "Error")
    })
    .await;
    assert_eq!(
        workload_state(&p, "web").unwrap().0,
        "Patched",
        "{:?}",
        p.status
    );
    let d = ns.deployments().get("web").await.unwrap();
    assert_eq!(
        template(&d)["containers"][0]["lifecycle"]["preStop"],
        json!({"sleep": {"seconds": 5}})
    );
    ns.policies()
        .delete("p", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the exec back", 60, || async {
        let d = ns
            .deployments()
            .get("web")
            .await
            .map_err(|e| e.to_string())?;
        let now = restorable(&d);
        if now == before { Ok(()) } else { Err(now) }
    })
    .await;
    ns.delete().await;
}

/// A GitOps tool re-applying its manifest with force every 10 s for 90 s (as
/// Flux's kustomize-controller does): after a few takeovers the policy stops
/// re-claiming, and the workload is Contested, naming the manager.
#[tokio::test]
async fn a_gitops_tool_reapplying_with_force_ends_contested() {
    let pid = operator_pid();
    let ns = Ns::new("gitops").await;
    let body = manifest(json!({"sleep": {"seconds": 9}}), None);
    apply_as(&ns, "flux-test", &body).await;
    ns.policy(
        "p",
        json!({"selector": {"matchLabels": {"app": "web"}}, "preStop": {"sleep": {"seconds": 5}},
               "onConflict": "Override", "rollout": {"strategy": "Immediate"}}),
    )
    .await;
    wait_policy(&ns, "p", 60, |p| {
        workload_state(p, "web").is_some_and(|(s, _)| s == "Patched")
    })
    .await;
    let start = generation(&ns, "web").await;
    let began = Instant::now();
    let mut syncs = 0;
    while began.elapsed() < Duration::from_secs(90) {
        apply_as(&ns, "flux-test", &body).await;
        syncs += 1;
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let end = generation(&ns, "web").await;
    println!("{syncs} syncs: generation {start} -> {end}");
    assert!(end - start <= 8, "generation {start} -> {end} in 90 s");
    let p = wait_policy(&ns, "p", 30, |p| {
        workload_state(p, "web").is_some_and(|(s, _)| s == "Contested")
    })
    .await;
    let (_, msg) = workload_state(&p, "web").unwrap();
    assert!(msg.contains("flux-test"), "{msg}");
    assert!(msg.contains("onConflict: Skip"), "{msg}");
    let d = ns.deployments().get("web").await.unwrap();
    assert_eq!(
        template(&d)["containers"][0]["lifecycle"]["preStop"],
        json!({"sleep": {"seconds": 9}}),
        "the manifest's hook stays"
    );
    // Settled: another sync changes nothing.
    apply_as(&ns, "flux-test", &body).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(generation(&ns, "web").await, end);
    assert_alive(&pid);
    ns.delete().await;
}

/// A shell hook on an image without a shell: halted, reverted, and the
/// message says what to do in a few words.
#[tokio::test]
async fn a_shell_hook_on_an_image_without_a_shell_explains_itself() {
    let ns = Ns::new("noshell").await;
    ns.deployment(
        "web",
        json!({"app": "web"}),
        1,
        json!({"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10", "imagePullPolicy": "IfNotPresent"}]}),
    )
    .await;
    ns.policy(
        "p",
        json!({"selector": {"matchLabels": {"app": "web"}}, "postStart": sh("touch /tmp/ready")}),
    )
    .await;
    let p = wait_policy(&ns, "p", 180, |p| halted(p).is_some()).await;
    let msg = halted(&p).unwrap();
    assert!(msg.contains("this image has no shell"), "{msg}");
    assert!(msg.contains("sleep:"), "{msg}");
    assert!(!msg.contains("__lco_rc"), "{msg}");
    assert!(msg.len() < 600, "{} bytes: {msg}", msg.len());
    ns.delete().await;
}

/// onConflict: Skip never shortens a grace period: a 300 s workload keeps
/// it, a 30 s one is raised and gets its 30 s back on release.
#[tokio::test]
async fn skip_keeps_a_longer_grace_period_and_restores_a_raised_one() {
    let ns = Ns::new("grace").await;
    for (name, grace) in [("db", 300), ("web", 30)] {
        let mut pod = sleeper();
        pod["terminationGracePeriodSeconds"] = json!(grace);
        ns.deployment(name, json!({"app": "web"}), 0, pod).await;
    }
    let web_before = restorable(&ns.deployments().get("web").await.unwrap());
    ns.policy(
        "p",
        json!({"selector": {"matchLabels": {"app": "web"}}, "preStop": {"sleep": {"seconds": 1}},
               "terminationGracePeriodSeconds": 60, "rollout": {"strategy": "Immediate"}}),
    )
    .await;
    let p = wait_policy(&ns, "p", 60, |p| {
        ["db", "web"]
            .iter()
            .all(|n| workload_state(p, n).is_some_and(|(s, _)| s == "Patched"))
    })
    .await;
    let grace = |d: &Deployment| template(d)["terminationGracePeriodSeconds"].as_i64();
    assert_eq!(grace(&ns.deployments().get("db").await.unwrap()), Some(300));
    assert_eq!(grace(&ns.deployments().get("web").await.unwrap()), Some(60));
    let (_, db) = workload_state(&p, "db").unwrap();
    assert!(db.contains("kept the template's own 300s"), "{db}");
    let (_, web) = workload_state(&p, "web").unwrap();
    assert!(web.contains("raised from 30s to 60s"), "{web}");
    ns.policies()
        .delete("p", &DeleteParams::default())
        .await
        .unwrap();
    eventually("web restored", 60, || async {
        let now = restorable(
            &ns.deployments()
                .get("web")
                .await
                .map_err(|e| e.to_string())?,
        );
        if now == web_before { Ok(()) } else { Err(now) }
    })
    .await;
    ns.delete().await;
}
