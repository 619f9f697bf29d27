//! Issue 25's acceptance item: "256 long preStop follows held by one
//! namespace while another namespace's canary must verify within its normal
//! time", on the real cluster, scaled to what this machine runs.
//!
//! The operator's preStop pool is 256 follows, at most 192 per namespace:
//! one namespace's long preStops can hold 192, and the other 64 are always
//! there for the rest. 256 stopping pods do not fit on a 2-core test node,
//! so this file starts an operator of its own with the same rule at a small
//! size, a pool of `TOTAL` = 4 with a share of `SHARE` = 3, and holds it
//! with `A_PODS` = 4 pods whose preStop runs `HOLD` (600) seconds: the
//! whole pool asked for, by one namespace. Another namespace's canary must
//! then verify, and its preStop be counted, within ordinary waits (120 s),
//! far less than the hold: a follow queued behind the first namespace's
//! would wait out the hold and fail the test.
//!
//! tests/run-cluster-tests.sh runs it when no other operator runs (its
//! gauge must see this file's pods alone).

mod common;

use std::time::{Duration, Instant};

use common::operator::Operator;
use common::*;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use lifecycle_operator::api::types::{HookReport, LifecyclePolicy};
use serde_json::{Value, json};

const PORT: u16 = 18091;
/// The operator's preStop pool here, and one namespace's share of it.
const TOTAL: usize = 4;
const SHARE: usize = 3;
/// The first namespace's stopping pods: as many as the whole pool.
const A_PODS: usize = TOTAL;
/// Their preStop (and grace period), in seconds: longer than the test.
const HOLD: u64 = 600;
/// An ordinary wait: for a canary to verify, for a preStop to be counted.
const NORMAL: u64 = 120;

/// A container that exits promptly on SIGTERM (a shell as PID 1 would not).
fn sleeper() -> Value {
    json!({"containers": [{"name": "app", "image": "busybox", "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]}]})
}

/// `lifecycle_operator_log_streams{hook, state}` in a metrics text.
fn streams(text: &str, hook: &str, state: &str) -> Option<i64> {
    let series = format!("lifecycle_operator_log_streams{{hook=\"{hook}\",state=\"{state}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
}

/// Waits until the preStop pool shows (in use, waiting).
async fn pre_stop_pool(op: &Operator, what: &str, want: (i64, i64)) {
    eventually(what, 60, || async {
        let text = op.metrics().await;
        let shown = (
            streams(&text, "preStop", "in_use"),
            streams(&text, "preStop", "waiting"),
        );
        if shown == (Some(want.0), Some(want.1)) {
            Ok(())
        } else {
            Err(format!("(in use, waiting) = {shown:?}, want {want:?}"))
        }
    })
    .await;
}

fn terminating(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .count()
}

fn pre_stop(p: &LifecyclePolicy) -> Option<&HookReport> {
    p.status.as_ref()?.pre_stop.as_ref()
}

fn phase(p: &LifecyclePolicy) -> Option<&str> {
    Some(p.status.as_ref()?.rollout.as_ref()?.phase.as_str())
}

/// Whatever happens (a failed assertion included), this test's pods and
/// namespaces go: the stopping pods' processes are killed (a force-deleted
/// pod leaves the API at once, but the kubelet would run its preStop on for
/// `HOLD` seconds), the pods force-deleted, the policies deleted while the
/// operator still runs (their finalizers), then the namespaces. Declared
/// after the `Operator`, so dropped before it.
#[derive(Default)]
struct Cleanup {
    namespaces: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.namespaces);
        // Maybe on the test's own runtime, unwinding: a thread with a
        // runtime and a client of its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let client = client().await;
                let now = DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::default()
                };
                for ns in &names {
                    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
                    let stopping = pods.list(&ListParams::default()).await.map(|l| l.items);
                    for pod in stopping.iter().flatten() {
                        if pod.metadata.deletion_timestamp.is_some() {
                            end_processes(ns, pod.metadata.name.as_deref().unwrap_or_default());
                        }
                    }
                    if let Err(e) = pods.delete_collection(&now, &ListParams::default()).await {
                        eprintln!("cleanup: force-deleting the pods of {ns}: {e}");
                    }
                }
                for ns in &names {
                    let policies: Api<LifecyclePolicy> = Api::namespaced(client.clone(), ns);
                    let _ = policies
                        .delete_collection(&DeleteParams::default(), &ListParams::default())
                        .await;
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while policies
                        .list(&ListParams::default())
                        .await
                        .is_ok_and(|l| !l.items.is_empty())
                        && Instant::now() < deadline
                    {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    let _ = Api::<Namespace>::all(client.clone())
                        .delete(ns, &DeleteParams::default())
                        .await;
                }
            })
        });
        let _ = done.join();
    }
}

/// Kills every process of the pod's container but its PID 1 (`kill -9
/// -1`): the sleep PID 1 waits on, so the container ends, and with it the
/// preStop running in it. The API has no exec without a websocket client:
/// the cluster's kubectl (hack/lib.sh) does it.
fn end_processes(ns: &str, pod: &str) {
    let kubeconfig = std::env::var("KUBECONFIG").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/cluster/kubeconfig").into()
    });
    let done = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/cluster/bin/kubectl"
    ))
    .args(["--kubeconfig", &kubeconfig, "exec", "-n", ns, pod, "--"])
    .args(["kill", "-9", "-1"])
    .stdout(std::process::Stdio::null())
    .output();
    match done {
        // 137: the container ended (its PID 1 with it) before the exec did.
        Ok(out) if out.status.success() || out.status.code() == Some(137) => {}
        Ok(out) => eprintln!(
            "cleanup: ending {ns}/{pod}'s processes: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!("cleanup: ending {ns}/{pod}'s processes: kubectl: {e}"),
    }
}

#[tokio::test]
async fn one_namespaces_long_pre_stops_leave_another_namespaces_canary_and_pre_stop_their_time() {
    let op = Operator::start(
        PORT,
        "fairness-operator.log",
        &[
            &format!("--prestop-log-streams={TOTAL}"),
            &format!("--prestop-log-streams-per-namespace={SHARE}"),
        ],
    )
    .await;
    let mut cleanup = Cleanup::default();
    pre_stop_pool(&op, "an idle preStop pool", (0, 0)).await;

    // Namespace A: A_PODS pods whose preStop runs HOLD seconds.
    let a = Ns::new("fair-a").await;
    cleanup.namespaces.push(a.name.clone());
    a.deployment("hold", json!({"app": "hold"}), A_PODS as i32, sleeper())
        .await;
    a.policy(
        "hold",
        json!({"selector": {"matchLabels": {"app": "hold"}},
               "preStop": sh(&format!("sleep {HOLD}")),
               "terminationGracePeriodSeconds": HOLD}),
    )
    .await;
    eventually("A's pods running with the hook", 180, || async {
        let pods = pods(&a, "hold").await;
        let hooked = |p: &&Pod| {
            p.spec.as_ref().unwrap().containers[0]
                .lifecycle
                .as_ref()
                .is_some_and(|l| l.pre_stop.is_some())
        };
        let running = |p: &&Pod| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && p.metadata.deletion_timestamp.is_none()
        };
        let ready = pods.iter().filter(hooked).filter(running).count();
        if ready == A_PODS && pods.len() == A_PODS {
            Ok(())
        } else {
            Err(format!(
                "{ready} of {} pods running with the hook",
                pods.len()
            ))
        }
    })
    .await;

    // A's pods stop: A_PODS preStop follows asked for, the whole pool.
    scale(&a, "hold", 0).await;
    let a_held = A_PODS.min(SHARE);
    println!(
        "A: {A_PODS} preStops of {HOLD} s; the pool ({TOTAL}) must show {a_held} in use, {} waiting",
        A_PODS - a_held
    );
    pre_stop_pool(
        &op,
        "A's follows: its share in use, the rest waiting",
        (a_held as i64, (A_PODS - a_held) as i64),
    )
    .await;
    let held = pods(&a, "hold").await;
    assert_eq!(
        (held.len(), terminating(&held)),
        (A_PODS, A_PODS),
        "A's pods are all Terminating"
    );

    // Namespace B, while A holds its share: a canary, then a wave.
    let b = Ns::new("fair-b").await;
    cleanup.namespaces.push(b.name.clone());
    for name in ["b-1", "b-2"] {
        b.deployment(name, json!({"app": "b"}), 1, sleeper()).await;
    }
    let t0 = Instant::now();
    b.policy(
        "b",
        json!({"selector": {"matchLabels": {"app": "b"}},
               "postStart": sh("echo started"), "preStop": sh("echo stopping; sleep 1"),
               "rollout": {"strategy": "Canary"}}),
    )
    .await;
    let p = wait_policy(&b, "b", NORMAL, |p| phase(p) == Some("Complete")).await;
    let post = p.status.as_ref().unwrap().post_start.clone().unwrap();
    println!(
        "B: canary and wave verified in {:?} (postStart {}, evidence {})",
        t0.elapsed(),
        post.summary,
        post.evidence
    );
    assert_eq!((post.ran, post.failed), (2, 0), "{post:?}");

    // One of B's pods stops: its preStop is followed on the stream A left.
    let victim = pods(&b, "b-1")
        .await
        .into_iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
        .and_then(|p| p.metadata.name)
        .expect("a running pod of b-1");
    let t0 = Instant::now();
    Api::<Pod>::namespaced(b.client.clone(), &b.name)
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    let p = wait_policy(&b, "b", NORMAL, |p| pre_stop(p).is_some_and(|r| r.ran >= 1)).await;
    let pre = pre_stop(&p).unwrap();
    println!(
        "B: preStop of {victim} counted in {:?} ({}, evidence {})",
        t0.elapsed(),
        pre.summary,
        pre.evidence
    );
    assert_eq!((pre.ran, pre.failed, pre.timed_out), (1, 0, 0), "{pre:?}");
    assert_eq!(pre.evidence, "marker", "{pre:?}");

    // All that while A held on: its pods still stopping, its follows open,
    // B's stream given back (not to A: A is at its share).
    let held = pods(&a, "hold").await;
    assert_eq!(
        (held.len(), terminating(&held)),
        (A_PODS, A_PODS),
        "A's pods are still Terminating"
    );
    pre_stop_pool(
        &op,
        "B's stream back, A's as before",
        (a_held as i64, (A_PODS - a_held) as i64),
    )
    .await;
    drop(cleanup);
    drop(op);
}
