//! Proof that lasts (issue "Proof that lasts"): hook counts survive operator
//! restarts (SIGKILL, SIGTERM) with no loss and no double count, the seed's
//! nginx stop hook reads as ran, and hooks report how long they took.
//!
//! Each test runs its own operator process, which it kills and restarts, so
//! tests/run-cluster-tests.sh runs this file alone, with no other operator.

mod common;

use std::time::Duration;

use common::operator::Operator;
use common::*;
use kube::api::{Api, DeleteParams, ListParams};
use lifecycle_operator::api::types::{HookReport, LifecyclePolicy};
use serde_json::json;

const PORT: u16 = 18090;

/// This file's operator (its port, its log), started afresh.
async fn operator() -> Operator {
    Operator::start(PORT, "restarts-operator.log", &[]).await
}

/// The operator's metrics text.
async fn metrics() -> String {
    http_get(&std::env::var("LCO_METRICS_URL").unwrap()).await
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A restarted operator has reconciled the policy at least once, and its
/// observer has had the time to list the pods and flush.
async fn caught_up() {
    eventually("a reconcile by the restarted operator", 60, || async {
        let n = metric(&metrics().await, "lifecycle_operator_reconciles_total");
        if n >= 1.0 {
            Ok(())
        } else {
            Err(format!("{n} reconciles"))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
}

/// `lifecycle_operator_hook_duration_seconds` sums and counts.
#[derive(Clone, Copy, Debug)]
struct Histogram {
    post_sum: f64,
    post_count: f64,
    pre_sum: f64,
    pre_count: f64,
}

impl Histogram {
    fn read(text: &str) -> Histogram {
        let m = |part: &str, hook: &str| {
            metric(
                text,
                &format!("lifecycle_operator_hook_duration_seconds_{part}{{hook=\"{hook}\"}}"),
            )
            .max(0.0)
        };
        Histogram {
            post_sum: m("sum", "postStart"),
            post_count: m("count", "postStart"),
            pre_sum: m("sum", "preStop"),
            pre_count: m("count", "preStop"),
        }
    }

    /// The histogram once `ok` holds (it is fed within a second).
    async fn after(base: &Histogram, ok: impl Fn(&Histogram) -> bool) -> Histogram {
        eventually("the hook duration histogram", 10, || async {
            let h = Histogram::read(&metrics().await);
            if ok(&h) {
                Ok(h)
            } else {
                Err(format!("{h:?}, before {base:?}"))
            }
        })
        .await
    }
}

fn hooks(p: &LifecyclePolicy) -> (HookReport, HookReport) {
    let s = p.status.as_ref().expect("status");
    (
        s.post_start.clone().expect("postStart report"),
        s.pre_stop.clone().expect("preStop report"),
    )
}

fn counts(p: &LifecyclePolicy) -> String {
    let (post, pre) = hooks(p);
    format!(
        "postStart {} (ran {}, failed {}), preStop {} (ran {}, failed {}, timedOut {}, evidence {:?})",
        post.summary,
        post.ran,
        post.failed,
        pre.summary,
        pre.ran,
        pre.failed,
        pre.timed_out,
        pre.evidence
    )
}

/// Deletes the policy while an operator runs (its finalizer), then the namespace.
async fn finish(ns: Ns, policy: &str) {
    let _ = ns.policies().delete(policy, &DeleteParams::default()).await;
    eventually("policy gone", 60, || async {
        match ns.policies().get_opt(policy).await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    ns.delete().await;
}

#[tokio::test]
async fn the_seeds_nginx_hooks_keep_their_counts_through_kill_and_sigterm() {
    let op = operator().await;
    let ns = Ns::new("durable").await;
    let nginx = json!({"containers": [{"name": "nginx", "image": "nginx", "imagePullPolicy": "IfNotPresent",
        "ports": [{"containerPort": 80}]}]});
    ns.deployment("frontend", json!({"app": "nginx"}), 2, nginx)
        .await;
    ns.policy(
        "nginx-graceful",
        json!({"selector": {"matchLabels": {"app": "nginx"}}, "containers": ["nginx"],
            "postStart": sh("echo Hello from the postStart handler > /usr/share/message"),
            "preStop": sh("nginx -s quit; while killall -0 nginx; do sleep 1; done")}),
    )
    .await;
    let p = wait_policy(&ns, "nginx-graceful", 180, |p| {
        p.status
            .as_ref()
            .and_then(|s| s.post_start.as_ref())
            .is_some_and(|r| r.ran >= 2)
    })
    .await;
    let rolled = counts(&p);
    println!("after the rollout: {rolled}");
    assert_eq!(hooks(&p).0.ran, 2, "{rolled}");
    assert_eq!(hooks(&p).0.evidence, "marker");

    let took = op.stop("-KILL").await;
    println!("SIGKILL: exited in {took:?}");
    let op = operator().await;
    caught_up().await;
    let p = ns.policies().get("nginx-graceful").await.unwrap();
    println!("after kill -9 and a restart: {}", counts(&p));
    assert_eq!(counts(&p), rolled, "no loss, no double count");

    // The seed's preStop: nginx quits, the kernel kills the hook's shell.
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(ns.client.clone(), &ns.name);
    let victim = pods
        .list(&ListParams::default().labels("pod=frontend"))
        .await
        .unwrap()
        .items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    pods.delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    let p = wait_policy(&ns, "nginx-graceful", 120, |p| {
        let (post, pre) = hooks(p);
        post.ran >= 3 && pre.summary != "0/0"
    })
    .await;
    println!("after deleting one pod: {}", counts(&p));
    let (post, pre) = hooks(&p);
    assert_eq!((post.ran, post.failed), (3, 0), "{post:?}");
    assert_eq!((pre.ran, pre.failed, pre.timed_out), (1, 0, 0), "{pre:?}");
    assert_eq!(pre.evidence, "containerExit", "{pre:?}");
    let why = pre.last_container_exit.clone().unwrap_or_default();
    assert!(why.contains("exited with code 0"), "{why}");
    let verified = condition(&p, "PreStopVerified").unwrap();
    assert_eq!(verified.status, "True", "{verified:?}");
    println!("PreStopVerified: {}", verified.message);

    let took = op.stop("-TERM").await;
    println!("SIGTERM: exited in {took:?}");
    let before = counts(&p);
    let op = operator().await;
    caught_up().await;
    let p = ns.policies().get("nginx-graceful").await.unwrap();
    println!("after a SIGTERM restart: {}", counts(&p));
    assert_eq!(counts(&p), before);

    finish(ns, "nginx-graceful").await;
    drop(op);
}

#[tokio::test]
async fn hooks_report_how_long_they_ran() {
    let op = operator().await;
    // Other namespaces may hold hooked pods: measure the histogram by deltas
    // from once the fresh operator has looked at them.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let base = Histogram::read(&metrics().await);
    let ns = Ns::new("durations").await;
    let sleeper = json!({"containers": [{"name": "app", "image": "busybox", "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]}]});
    ns.deployment("timed", json!({"app": "timed"}), 1, sleeper)
        .await;
    ns.policy(
        "timed",
        json!({"selector": {"matchLabels": {"app": "timed"}},
            "postStart": sh("sleep 1"), "preStop": sh("sleep 2")}),
    )
    .await;
    let p = wait_policy(&ns, "timed", 180, |p| {
        p.status
            .as_ref()
            .and_then(|s| s.post_start.as_ref())
            .is_some_and(|r| r.ran >= 1)
    })
    .await;
    let post = hooks(&p).0;
    println!(
        "postStart sleep 1: lastDurationSeconds {:?}",
        post.last_duration_seconds
    );
    let d = post.last_duration_seconds.expect("a postStart duration");
    assert!((0.5..=1.5).contains(&d), "{d}");
    // The histogram is fed on the observer's next flush (within a second).
    let after_post = Histogram::after(&base, |h| h.post_count > base.post_count).await;
    let (n, sum) = (
        after_post.post_count - base.post_count,
        after_post.post_sum - base.post_sum,
    );
    println!("histogram postStart: +{n} observations, +{sum:.3}s");
    assert_eq!(n, 1.0);
    assert!((0.5..=1.5).contains(&sum), "{sum}");

    ns.deployments()
        .patch(
            "timed",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    let p = wait_policy(&ns, "timed", 120, |p| hooks(p).1.ran >= 1).await;
    let pre = hooks(&p).1;
    println!(
        "preStop sleep 2: lastDurationSeconds {:?}",
        pre.last_duration_seconds
    );
    let d = pre.last_duration_seconds.expect("a preStop duration");
    assert!((1.5..=2.5).contains(&d), "{d}");
    assert_eq!(pre.max_duration_seconds, Some(d));
    let after_pre = Histogram::after(&base, |h| h.pre_count > base.pre_count).await;
    let (n, sum) = (
        after_pre.pre_count - base.pre_count,
        after_pre.pre_sum - base.pre_sum,
    );
    println!("histogram preStop: +{n} observations, +{sum:.3}s");
    assert_eq!(n, 1.0);
    assert!((1.5..=2.5).contains(&sum), "{sum}");

    finish(ns, "timed").await;
    drop(op);
}

/// Safe rollout (issue "Safe rollout"): an operator killed mid-wave
/// resumes where it was: every Deployment ends patched, none twice.
#[tokio::test]
async fn a_rollout_killed_mid_wave_resumes_without_patching_twice() {
    let op = operator().await;
    let ns = Ns::new("midwave").await;
    let names: Vec<String> = (1..=5).map(|i| format!("mid-{i}")).collect();
    let sleeper = json!({"containers": [{"name": "app", "image": "busybox", "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]}]});
    for n in &names {
        ns.deployment(n, json!({"app": "mid"}), 1, sleeper.clone())
            .await;
    }
    let generations = || async {
        let mut out = Vec::new();
        for n in &names {
            let d = ns.deployments().get(n).await.unwrap();
            let settled = d.status.as_ref().and_then(|s| s.observed_generation)
                == d.metadata.generation
                && d.status.as_ref().and_then(|s| s.available_replicas) == Some(1);
            out.push((d.metadata.generation.unwrap_or(0), settled));
        }
        out
    };
    let before = eventually("five settled", 120, || async {
        let g = generations().await;
        if g.iter().all(|(_, s)| *s) {
            Ok(g)
        } else {
            Err(format!("{g:?}"))
        }
    })
    .await;
    ns.policy(
        "waves",
        json!({"selector": {"matchLabels": {"app": "mid"}}, "rollout": {"waveSize": 1},
               "postStart": sh("sleep 1")}),
    )
    .await;
    let waves = |p: &LifecyclePolicy| {
        p.status
            .as_ref()
            .and_then(|s| s.rollout.as_ref())
            .map(|r| (r.waves, r.phase.to_string()))
            .unwrap_or_default()
    };
    let p = wait_policy(&ns, "waves", 120, |p| waves(p).0 >= 3).await;
    println!("killed at wave {:?}", waves(&p));
    let took = op.stop("-KILL").await;
    println!("SIGKILL: exited in {took:?}");
    let op = operator().await;
    let p = wait_policy(&ns, "waves", 180, |p| waves(p).1 == "Complete").await;
    println!(
        "after the restart: {:?}",
        p.status.as_ref().unwrap().rollout
    );
    let after = generations().await;
    for ((n, (b, _)), (a, _)) in names.iter().zip(&before).zip(&after) {
        assert_eq!(*a, b + 1, "{n}: patched exactly once");
    }
    let r = p.status.unwrap().rollout.unwrap();
    assert_eq!((r.rolled_out, r.pending), (5, 0));
    assert_eq!(r.waves, 5, "a canary and four waves of one");
    drop(op);
    ns.delete().await;
}
