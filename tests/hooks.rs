//! Proof that hooks ran: real hooks in real containers, and what the
//! policy's status says about them (DESIGN §4).

mod common;

use std::time::{Duration, Instant};

use common::*;
use kube::api::{Patch, PatchParams};
use lifecycle_operator::api::types::{HookReport, LifecyclePolicy};
use serde_json::{Value, json};

/// A container that exits promptly on SIGTERM (a shell as PID 1 would not),
/// so pod deletions do not wait out the grace period.
fn sleeper() -> Value {
    json!({"containers": [{"name": "app", "image": "busybox", "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]}]})
}

fn report(p: &LifecyclePolicy, pre: bool) -> Option<&HookReport> {
    let s = p.status.as_ref()?;
    if pre {
        s.pre_stop.as_ref()
    } else {
        s.post_start.as_ref()
    }
}

#[tokio::test]
async fn both_hooks_succeed_through_a_rollout_with_marker_evidence() {
    let ns = Ns::new("hooks-ok").await;
    ns.deployment("web", json!({"app": "web"}), 2, sleeper())
        .await;
    ns.policy(
        "p",
        json!({"selector": {"matchLabels": {"app": "web"}},
        "postStart": sh("echo started > /tmp/started"), "preStop": sh("echo stopping; sleep 1")}),
    )
    .await;

    // Delay from each hook running (its container's startedAt: the kubelet
    // runs postStart right then) to the status counting it.
    let mut delays = Vec::new();
    let mut counted = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let p = loop {
        let p = ns.policies().get("p").await.unwrap();
        let ran = report(&p, false).map(|r| r.ran).unwrap_or(0);
        if ran > counted {
            let now = k8s_openapi::jiff::Timestamp::now();
            let mut starts: Vec<_> = pods(&ns, "web")
                .await
                .iter()
                .filter(|p| p.spec.as_ref().unwrap().containers[0].lifecycle.is_some())
                .filter_map(|p| {
                    p.status.as_ref()?.container_statuses.as_ref()?[0]
                        .state
                        .as_ref()?
                        .running
                        .as_ref()?
                        .started_at
                        .clone()
                })
                .map(|t| t.0)
                .collect();
            starts.sort();
            for t in starts
                .iter()
                .skip(counted as usize)
                .take((ran - counted) as usize)
            {
                delays.push(now.duration_since(*t).as_secs_f64());
            }
            counted = ran;
        }
        if ran >= 2 {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "postStart never counted: {:?}",
            p.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let post = report(&p, false).unwrap();
    println!(
        "postStart: delay from container start (1 s resolution) to status, per pod: {delays:?} s"
    );
    assert_eq!(
        (post.failed, post.evidence.as_str()),
        (0, "marker"),
        "{post:?}"
    );
    assert_eq!(condition(&p, "PostStartVerified").unwrap().status, "True");

    // A second rollout stops the hooked pods: their preStops run.
    let hooked: Vec<String> = pods(&ns, "web")
        .await
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    ns.deployments()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}}),
            ),
        )
        .await
        .unwrap();
    let t0 = Instant::now();
    let p = wait_policy(&ns, "p", 120, |p| {
        report(p, true).is_some_and(|r| r.ran >= 2)
    })
    .await;
    println!(
        "preStop: status showed {} marker runs {:?} after the rollout began (pods {hooked:?})",
        report(&p, true).unwrap().ran,
        t0.elapsed()
    );
    let pre = report(&p, true).unwrap();
    assert_eq!(
        (
            pre.failed,
            pre.timed_out,
            pre.unknown,
            pre.evidence.as_str()
        ),
        (0, 0, 0, "marker"),
        "{pre:?}"
    );
    let p = wait_policy(&ns, "p", 60, |p| {
        report(p, false).is_some_and(|r| r.ran >= 4)
    })
    .await;
    for c in ["PostStartVerified", "PreStopVerified", "Ready"] {
        assert_eq!(
            condition(&p, c).unwrap().status,
            "True",
            "{c}: {:?}",
            condition(&p, c)
        );
    }
    ns.delete().await;
}

#[tokio::test]
async fn a_failing_post_start_is_reported_with_pod_container_and_message() {
    let ns = Ns::new("hooks-fail").await;
    ns.deployment("web", json!({"app": "web"}), 1, sleeper())
        .await;
    ns.policy("p", json!({"selector": {"matchLabels": {"app": "web"}}, "postStart": sh("echo boom >&2; exit 1")})).await;
    let p = wait_policy(&ns, "p", 120, |p| {
        report(p, false).is_some_and(|r| r.failed >= 1)
    })
    .await;
    let f = report(&p, false)
        .unwrap()
        .last_failure
        .clone()
        .expect("lastFailure");
    assert_eq!(
        (f.container.as_str(), f.reason.as_str()),
        ("app", "FailedPostStartHook"),
        "{f:?}"
    );
    let names: Vec<String> = pods(&ns, "web")
        .await
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert!(names.contains(&f.pod), "{} not among {names:?}", f.pod);
    assert!(!f.message.is_empty(), "{f:?}");
    assert_eq!(condition(&p, "PostStartVerified").unwrap().status, "False");
    assert_eq!(condition(&p, "Ready").unwrap().status, "False");
    // The kubelet kills the container and starts it again.
    eventually("a restart", 60, || async {
        let restarts: i32 = pods(&ns, "web")
            .await
            .iter()
            .flat_map(|p| {
                p.status
                    .clone()
                    .and_then(|s| s.container_statuses)
                    .unwrap_or_default()
            })
            .map(|c| c.restart_count)
            .sum();
        if restarts >= 1 {
            Ok(())
        } else {
            Err("no restart".to_string())
        }
    })
    .await;
    ns.delete().await;
}

#[tokio::test]
async fn a_pre_stop_longer_than_the_grace_period_times_out() {
    let ns = Ns::new("hooks-slow").await;
    ns.deployment("web", json!({"app": "web"}), 1, sleeper())
        .await;
    // Override: under Skip a grace period is never shortened (the template's own 30 s would stay).
    ns.policy("p", json!({"selector": {"matchLabels": {"app": "web"}}, "preStop": sh("sleep 30"), "terminationGracePeriodSeconds": 3, "onConflict": "Override"})).await;
    wait_policy(&ns, "p", 60, |p| {
        condition(p, "Applied").is_some_and(|c| c.status == "True")
    })
    .await;
    eventually("a hooked pod running", 90, || async {
        let ok = pods(&ns, "web").await.iter().any(|p| {
            p.spec.as_ref().unwrap().termination_grace_period_seconds == Some(3)
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        });
        if ok { Ok(()) } else { Err("not yet".into()) }
    })
    .await;
    scale(&ns, "web", 0).await;
    let p = wait_policy(&ns, "p", 60, |p| {
        report(p, true).is_some_and(|r| r.timed_out >= 1)
    })
    .await;
    assert_eq!(condition(&p, "PreStopVerified").unwrap().reason, "TimedOut");
    assert_eq!(report(&p, true).unwrap().ran, 0);
    ns.delete().await;
}

#[tokio::test]
async fn a_container_that_exits_on_its_own_never_runs_pre_stop() {
    let ns = Ns::new("hooks-exit").await;
    let pod = json!({"containers": [{"name": "app", "image": "busybox", "command": ["sh", "-c", "sleep 2; exit 0"]}]});
    ns.deployment("job", json!({"app": "web"}), 1, pod).await;
    ns.policy(
        "p",
        json!({"selector": {"matchLabels": {"app": "web"}}, "preStop": sh("echo never")}),
    )
    .await;
    let p = wait_policy(&ns, "p", 120, |p| {
        report(p, true).is_some_and(|r| r.not_triggered >= 1)
    })
    .await;
    let c = condition(&p, "PreStopVerified").unwrap();
    assert_eq!(c.status, "Unknown", "{c:?}");
    assert!(c.message.contains("exited on their own"), "{c:?}");
    assert!(
        report(&p, true)
            .unwrap()
            .last_not_triggered
            .as_deref()
            .unwrap_or("")
            .contains("exit code 0")
    );
    ns.delete().await;
}

#[tokio::test]
async fn non_shell_exec_and_http_hooks_are_verified_by_events() {
    let ns = Ns::new("hooks-events").await;
    let pod = json!({"containers": [{"name": "app", "image": "busybox", "ports": [{"containerPort": 8080}],
        "command": ["sh", "-c", "trap 'exit 0' TERM; mkdir -p /www; echo ok > /www/index.html; httpd -f -p 8080 -h /www & wait"]}]});
    ns.deployment("web", json!({"app": "web"}), 1, pod).await;
    ns.policy("p", json!({"selector": {"matchLabels": {"app": "web"}},
        "postStart": {"exec": {"command": ["true"]}}, "preStop": {"httpGet": {"port": 8080, "path": "/"}}})).await;
    let p = wait_policy(&ns, "p", 120, |p| {
        report(p, false).is_some_and(|r| r.implied >= 1)
    })
    .await;
    let post = report(&p, false).unwrap();
    assert_eq!(
        (post.ran, post.failed, post.evidence.as_str()),
        (0, 0, "implied"),
        "{post:?}"
    );
    assert_eq!(condition(&p, "PostStartVerified").unwrap().status, "True");
    // The Deployment's template carries the hooks verbatim: no shell added.
    let d = ns.deployments().get("web").await.unwrap();
    assert_eq!(
        template(&d)["containers"][0]["lifecycle"]["postStart"],
        json!({"exec": {"command": ["true"]}})
    );
    scale(&ns, "web", 0).await;
    let p = wait_policy(&ns, "p", 60, |p| {
        report(p, true).is_some_and(|r| r.ran >= 1)
    })
    .await;
    let pre = report(&p, true).unwrap();
    assert_eq!(
        (pre.failed, pre.timed_out, pre.evidence.as_str()),
        (0, 0, "events"),
        "{pre:?}"
    );
    ns.delete().await;
}

#[tokio::test]
async fn thirty_pods_terminating_at_once_are_all_accounted_for() {
    let ns = Ns::new("hooks-30").await;
    ns.deployment("web", json!({"app": "web"}), 30, sleeper())
        .await;
    ns.policy(
        "p",
        json!({"selector": {"matchLabels": {"app": "web"}}, "preStop": sh("sleep 2; echo bye")}),
    )
    .await;
    eventually("30 hooked pods running", 240, || async {
        let n = pods(&ns, "web")
            .await
            .iter()
            .filter(|p| {
                p.spec.as_ref().unwrap().containers[0].lifecycle.is_some()
                    && p.metadata.deletion_timestamp.is_none()
                    && p.status
                        .as_ref()
                        .and_then(|s| s.container_statuses.as_ref())
                        .is_some_and(|cs| cs.iter().all(|c| c.ready))
            })
            .count();
        if n == 30 {
            Ok(())
        } else {
            Err(format!("{n} ready"))
        }
    })
    .await;
    // Old pods (from before the policy) may still be terminating: count from here.
    let before = ns.policies().get("p").await.unwrap();
    let base = report(&before, true)
        .map(|r| r.ran + r.failed + r.timed_out + r.unknown)
        .unwrap_or(0);
    let t0 = Instant::now();
    scale(&ns, "web", 0).await;
    let p = wait_policy(&ns, "p", 180, |p| {
        report(p, true).is_some_and(|r| r.ran >= 30)
    })
    .await;
    let pre = report(&p, true).unwrap();
    println!(
        "30 preStops accounted for {:?} after scaling to zero: {pre:?}",
        t0.elapsed()
    );
    assert_eq!(
        (pre.ran, pre.failed, pre.timed_out, pre.unknown),
        (30, 0, 0, 0),
        "base {base}: {pre:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    ns.delete().await;
}

/// `sleep: {seconds: 0}` (Kubernetes 1.34+): the template carries it where
/// the server allows it; an older server would refuse the template, so the
/// policy says why and patches nothing.
#[tokio::test]
async fn a_zero_second_sleep_applies_where_the_server_allows_it() {
    let ns = Ns::new("hooks-zero-sleep").await;
    let info = ns.client.apiserver_version().await.unwrap();
    let minor: u32 = info
        .minor
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap();
    ns.deployment("web", json!({"app": "web"}), 1, sleeper())
        .await;
    ns.policy(
        "p",
        json!({"selector": {"matchLabels": {"app": "web"}}, "preStop": {"sleep": {"seconds": 0}}}),
    )
    .await;
    let p = wait_policy(&ns, "p", 120, |p| condition(p, "Applied").is_some()).await;
    let applied = condition(&p, "Applied").unwrap();
    let d = ns.deployments().get("web").await.unwrap();
    let lifecycle = &template(&d)["containers"][0]["lifecycle"];
    if minor >= 34 {
        assert_eq!(applied.status, "True", "{applied:?}");
        assert_eq!(lifecycle["preStop"], json!({"sleep": {"seconds": 0}}));
    } else {
        assert_eq!(
            (applied.status.as_str(), applied.reason.as_str()),
            ("False", "InvalidSpec"),
            "{applied:?}"
        );
        assert!(
            applied.message.contains("needs Kubernetes 1.34"),
            "{applied:?}"
        );
        assert!(lifecycle.is_null(), "{lifecycle}");
    }
    ns.delete().await;
}
