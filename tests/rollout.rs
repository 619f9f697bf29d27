//! Safe rollout (issue "Safe rollout"): a broken hook never spreads. A
//! canary first, then waves; a hook failure halts and reverts.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{ListParams, Patch, PatchParams};
use lifecycle_operator::api::types::LifecyclePolicy;
use serde_json::{Value, json};

fn sleeper() -> Value {
    json!({"containers": [{"name": "app", "image": "busybox", "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]}]})
}

/// Five settled Deployments labelled app=`app`.
async fn five(ns: &Ns, app: &str) -> Vec<String> {
    let names: Vec<String> = (1..=5).map(|i| format!("{app}-{i}")).collect();
    for n in &names {
        ns.deployment(n, json!({"app": app}), 1, sleeper()).await;
    }
    eventually("five settled", 120, || async {
        let s = sample(ns, &names).await;
        if s.values().all(|d| !d.rolling) {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    names
}

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    generation: i64,
    hooked: bool,
    rolling: bool,
    template: Value,
}

fn seen(d: &Deployment) -> Seen {
    let st = d.status.clone().unwrap_or_default();
    let want = d.spec.replicas.unwrap_or(1);
    let updated = st.updated_replicas.unwrap_or(0);
    Seen {
        generation: d.metadata.generation.unwrap_or(0),
        hooked: d.spec.template.spec.as_ref().unwrap().containers[0]
            .lifecycle
            .is_some(),
        rolling: st.observed_generation < d.metadata.generation
            || updated < want
            || st.replicas.unwrap_or(0) > updated
            || st.available_replicas.unwrap_or(0) < updated,
        template: template(d),
    }
}

/// One LIST: a snapshot at one resourceVersion. (Reading the Deployments
/// one by one once saw a wave's last member still rolling and, a moment
/// later, the next wave already patched: three "rolling" at once.)
async fn sample(ns: &Ns, names: &[String]) -> BTreeMap<String, Seen> {
    let all = ns.deployments().list(&ListParams::default()).await.unwrap();
    let out: BTreeMap<String, Seen> = all
        .items
        .iter()
        .filter(|d| names.iter().any(|n| Some(n) == d.metadata.name.as_ref()))
        .map(|d| (d.metadata.name.clone().unwrap(), seen(d)))
        .collect();
    assert_eq!(out.len(), names.len(), "every Deployment listed: {out:?}");
    out
}

fn halted(p: &LifecyclePolicy) -> bool {
    condition(p, "RolloutHalted").is_some_and(|c| c.status == "True")
}

fn phase(p: &LifecyclePolicy) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .map(|r| r.phase.to_string())
        .unwrap_or_default()
}

/// Samples the Deployments every 200 ms until `done` holds for the policy;
/// returns every sample.
async fn watch_until(
    ns: &Ns,
    names: &[String],
    policy: &str,
    secs: u64,
    done: impl Fn(&LifecyclePolicy) -> bool,
) -> Vec<BTreeMap<String, Seen>> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut samples = Vec::new();
    loop {
        samples.push(sample(ns, names).await);
        let p = ns.policies().get(policy).await.unwrap();
        let current =
            p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation;
        if current && done(&p) {
            return samples;
        }
        assert!(
            Instant::now() < deadline,
            "timed out; status {:?}",
            p.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_broken_post_start_is_halted_on_the_canary_and_reverted_then_fixed() {
    let ns = Ns::new("canary").await;
    let names = five(&ns, "frontend").await;
    let before = sample(&ns, &names).await;
    ns.policy(
        "broken",
        json!({"selector": {"matchLabels": {"app": "frontend"}}, "postStart": sh("exit 1")}),
    )
    .await;
    let samples = watch_until(&ns, &names, "broken", 180, |p| {
        halted(p)
            && p.status
                .as_ref()
                .is_some_and(|s| s.workloads.iter().any(|w| w.state == "Reverted"))
    })
    .await;
    // Exactly one Deployment was ever patched.
    let touched: Vec<&String> = names
        .iter()
        .filter(|n| {
            samples
                .iter()
                .any(|s| s[*n].generation != before[*n].generation)
        })
        .collect();
    println!("touched: {touched:?} over {} samples", samples.len());
    assert_eq!(
        touched.len(),
        1,
        "exactly one Deployment patched: {touched:?}"
    );
    let canary = touched[0].clone();
    // Reverted byte for byte; the other four never changed.
    let d = eventually("the canary reverted", 60, || async {
        let now = sample(&ns, &names).await;
        if now[&canary].template == before[&canary].template {
            Ok(now)
        } else {
            Err(format!("{:?}", now[&canary].template))
        }
    })
    .await;
    for n in names.iter().filter(|n| **n != canary) {
        assert_eq!(d[n].generation, before[n].generation, "{n} never changed");
    }
    let p = ns.policies().get("broken").await.unwrap();
    let c = condition(&p, "RolloutHalted").unwrap();
    println!("RolloutHalted: {} {}", c.reason, c.message);
    assert_eq!(c.reason, "FailedPostStartHook");
    assert!(
        c.message.contains(&format!("Deployment/{canary}")),
        "{}",
        c.message
    );
    assert!(c.message.contains("container app"), "{}", c.message);
    let h = p
        .status
        .as_ref()
        .unwrap()
        .rollout
        .as_ref()
        .unwrap()
        .halted
        .clone()
        .unwrap();
    assert_eq!(h.reverted, [format!("Deployment/{canary}")]);
    assert_eq!(condition(&p, "Ready").unwrap().reason, "RolloutHalted");
    // Drift correction does not resume it: a reconcile later, still one.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let later = sample(&ns, &names).await;
    for n in names.iter().filter(|n| **n != canary) {
        assert_eq!(
            later[n].generation, before[n].generation,
            "{n} still untouched"
        );
    }

    // Fixed (a new generation): from the canary again, to the end.
    ns.policies()
        .patch(
            "broken",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"postStart": sh("echo fixed")}})),
        )
        .await
        .unwrap();
    let samples = watch_until(&ns, &names, "broken", 240, |p| phase(p) == "Complete").await;
    let hooked_counts: Vec<usize> = samples
        .iter()
        .map(|s| s.values().filter(|d| d.hooked).count())
        .collect();
    println!("hooked over time after the fix: {hooked_counts:?}");
    let first = hooked_counts.iter().find(|c| **c > 0).copied();
    assert_eq!(first, Some(1), "the canary goes first");
    let end = sample(&ns, &names).await;
    assert!(end.values().all(|d| d.hooked), "all five patched");
    assert!(!halted(&ns.policies().get("broken").await.unwrap()));
    ns.delete().await;
}

#[tokio::test]
async fn a_good_policy_goes_canary_then_waves_within_the_limit() {
    let ns = Ns::new("waves").await;
    let names = five(&ns, "shop").await;
    let before = sample(&ns, &names).await;
    ns.policy(
        "good",
        json!({"selector": {"matchLabels": {"app": "shop"}}, "maxConcurrentRollouts": 2,
               "postStart": sh("echo ok"), "preStop": {"sleep": {"seconds": 1}}}),
    )
    .await;
    let samples = watch_until(&ns, &names, "good", 240, |p| phase(p) == "Complete").await;
    let hooked: Vec<usize> = samples
        .iter()
        .map(|s| s.values().filter(|d| d.hooked).count())
        .collect();
    let rolling: Vec<usize> = samples
        .iter()
        .map(|s| s.values().filter(|d| d.rolling).count())
        .collect();
    println!("hooked over time: {hooked:?}");
    println!("rolling over time: {rolling:?}");
    assert_eq!(
        hooked.iter().find(|c| **c > 0).copied(),
        Some(1),
        "the canary goes first"
    );
    assert!(
        rolling.iter().all(|r| *r <= 2),
        "never more than maxConcurrentRollouts rolling: {rolling:?}"
    );
    let end = sample(&ns, &names).await;
    for n in &names {
        assert!(end[n].hooked, "{n} patched");
        assert_eq!(
            end[n].generation,
            before[n].generation + 1,
            "{n} patched exactly once"
        );
    }
    let p = ns.policies().get("good").await.unwrap();
    let r = p.status.unwrap().rollout.unwrap();
    println!("rollout: {r:?}");
    assert_eq!((r.rolled_out, r.pending), (5, 0));
    assert!(r.waves >= 3, "canary + waves of at most 2: {}", r.waves);
    assert!(r.waiting_on.is_empty(), "Complete waits on nothing: {r:?}");
    ns.delete().await;
}

/// A rollout Complete long ago is no wave in progress: a hooked workload
/// that rolls for a change of its own (here a restart) after the progress
/// deadline neither halts the policy nor loses its hooks. (Before, the
/// deadline ran from the last wave's start, and such a restart halted the
/// policy with ProgressDeadlineExceeded and reverted the workload.)
#[tokio::test]
async fn a_restart_after_the_deadline_of_a_complete_rollout_halts_nothing() {
    let ns = Ns::new("late").await;
    let names = five(&ns, "late").await;
    ns.policy(
        "late",
        json!({"selector": {"matchLabels": {"app": "late"}}, "postStart": sh("echo ok"),
               "rollout": {"progressDeadlineSeconds": 10}}),
    )
    .await;
    watch_until(&ns, &names, "late", 240, |p| phase(p) == "Complete").await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let restarted = json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-12-02T00:00:00Z"}}}}});
    ns.deployments()
        .patch(&names[0], &PatchParams::default(), &Patch::Merge(restarted))
        .await
        .unwrap();
    // Through the restart and a while after it, the policy never halts.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut settled_since: Option<Instant> = None;
    while settled_since.is_none_or(|t| t.elapsed() < Duration::from_secs(5)) {
        let p = ns.policies().get("late").await.unwrap();
        assert!(!halted(&p), "halted by a restart: {:?}", p.status);
        let rolling = sample(&ns, &names).await[&names[0]].rolling;
        settled_since = match (rolling, settled_since) {
            (true, _) => None,
            (false, None) => Some(Instant::now()),
            (false, t) => t,
        };
        assert!(Instant::now() < deadline, "the restart did not roll out");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let p = ns.policies().get("late").await.unwrap();
    assert!(!halted(&p), "not halted: {:?}", p.status);
    assert_eq!(phase(&p), "Complete");
    let end = sample(&ns, &names).await;
    assert!(end.values().all(|d| d.hooked), "every one keeps its hooks");
    ns.delete().await;
}
