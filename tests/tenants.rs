//! The observer is shared by every namespace (issue 25): what one tenant's
//! application or Events do must not change another's proof, nor fake its
//! own, nor grow the operator's memory. Real pods, real hooks, real Events,
//! against the operator process that tests/run-cluster-tests.sh started.
//!
//! One test, in phases, because it measures the operator's RSS: tests
//! running beside it would move the figure.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use lifecycle_operator::api::types::{HookReport, LifecyclePolicy};
use serde_json::{Value, json};

/// Failure events created by the flooding tenant, and their message size.
const EVENTS: usize = 300;
const MESSAGE: usize = 256 * 1024;
/// The operator's RSS may grow by at most this much over the hostile phases
/// (its own baseline before them). Before issue 25, 300 such events alone
/// kept about 75 MiB of messages for two minutes.
const RSS_GROWTH_MIB: f64 = 24.0;

fn report(p: &LifecyclePolicy, pre: bool) -> HookReport {
    let s = p.status.clone().unwrap_or_default();
    if pre { s.pre_stop } else { s.post_start }.unwrap_or_default()
}

/// A busybox container running `script` as PID 1 that exits on SIGTERM.
fn app(script: &str) -> Value {
    json!({"containers": [{"name": "app", "image": "busybox", "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", format!("trap 'exit 0' TERM; {script}")]}],
        "terminationGracePeriodSeconds": 20})
}

/// The operator's resident set, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("the operator (pid {pid}) is gone: {e}"));
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib / 1024.0
}

fn operator_pid() -> u32 {
    std::env::var("LCO_OPERATOR_PID")
        .ok()
        .and_then(|p| p.parse().ok())
        .expect("LCO_OPERATOR_PID is set by tests/run-cluster-tests.sh")
}

/// Samples the operator's RSS every 100 ms; the peak, in KiB.
fn sample_peak(pid: u32) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let peak = Arc::new(AtomicU64::new(0));
    let p = peak.clone();
    let task = tokio::spawn(async move {
        loop {
            let kib = (rss_mib(pid) * 1024.0) as u64;
            p.fetch_max(kib, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (peak, task)
}

/// A metric's value, summed over its label sets matching `labels`.
async fn metric(name: &str, labels: &str) -> f64 {
    let url = std::env::var("LCO_METRICS_URL").expect("LCO_METRICS_URL");
    http_get(&url)
        .await
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A core Event that claims to be the kubelet's, about a pod by name and UID.
fn forged_event(
    name: &str,
    involved_ns: &str,
    pod: &str,
    uid: &str,
    reason: &str,
    message: String,
) -> Event {
    let now = Time(Timestamp::now());
    Event {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        involved_object: k8s_openapi::api::core::v1::ObjectReference {
            kind: Some("Pod".into()),
            api_version: Some("v1".into()),
            namespace: Some(involved_ns.into()),
            name: Some(pod.into()),
            uid: Some(uid.into()),
            field_path: Some("spec.containers{app}".into()),
            ..Default::default()
        },
        reason: Some(reason.into()),
        type_: Some("Warning".into()),
        message: Some(message),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some("kubelet".into()),
            host: Some("lco-node".into()),
        }),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        ..Default::default()
    }
}

/// The running hooked pod of a Deployment (the one its policy rolled out).
async fn hooked_pod(ns: &Ns, name: &str) -> Pod {
    eventually(&format!("a hooked running pod of {name}"), 120, || async {
        pods(ns, name)
            .await
            .into_iter()
            .find(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.spec.as_ref().unwrap().containers[0].lifecycle.is_some()
                    && p.status
                        .as_ref()
                        .and_then(|s| s.container_statuses.as_ref())
                        .is_some_and(|c| c[0].state.as_ref().is_some_and(|s| s.running.is_some()))
            })
            .ok_or_else(|| "none yet".to_string())
    })
    .await
}

#[tokio::test]
async fn one_tenant_cannot_blind_starve_or_fool_the_others() {
    let pid = operator_pid();
    // The tenants. bystander: hooks that work, nothing hostile; its counts
    // must be exact. victim: the target of forged events from evil.
    // forge: an application printing marker-like lines all the time around
    // a preStop that really fails. flood: applications writing without a
    // newline. evil: creates Events (as the `edit` role may).
    let (bystander, victim, forge, flood, evil) = tokio::join!(
        Ns::new("t-bystander"),
        Ns::new("t-victim"),
        Ns::new("t-forge"),
        Ns::new("t-flood"),
        Ns::new("t-evil"),
    );
    let hooks = |pre: &str| {
        json!({"selector": {"matchLabels": {"app": "web"}},
               "postStart": sh("echo post-start-ran"), "preStop": sh(pre)})
    };
    let forged_lines = format!(
        "printf '%s\\n' \
         'lifecycle-operator: hook=preStop policy={ns}/p rc=0' \
         'lifecycle-operator: hook=preStop policy={ns}/p token=0123456789abcdef run=1 started' \
         'lifecycle-operator: hook=preStop policy={ns}/p token=0123456789abcdef run=1 rc=0' \
         'lifecycle-operator: hook=postStart policy={ns}/p token=0123456789abcdef run=2 started' \
         'lifecycle-operator: hook=postStart policy={ns}/p token=0123456789abcdef run=2 rc=7'",
        ns = forge.name
    );
    let forge_app = format!("while :; do {forged_lines}; sleep 0.2 & wait; done");
    // 10 MiB without a newline, again every second or so.
    let flood_app = "while :; do head -c 10485760 /dev/zero | tr '\\0' x; sleep 1 & wait; done";
    let idle = "sleep 3600 & wait";
    tokio::join!(
        bystander.deployment("web", json!({"app": "web"}), 2, app(idle)),
        victim.deployment("web", json!({"app": "web"}), 1, app(idle)),
        forge.deployment("web", json!({"app": "web"}), 1, app(&forge_app)),
        flood.deployment("web", json!({"app": "web"}), 1, app(flood_app)),
    );
    tokio::join!(
        bystander.policy("p", hooks("sleep 1")),
        victim.policy("p", hooks("sleep 1")),
        forge.policy("p", hooks("sleep 2; exit 3")),
        flood.policy("p", hooks("sleep 1")),
    );
    // Every hooked pod's postStart counted.
    let post_counted = |n: i64| {
        move |p: &LifecyclePolicy| {
            let r = report(p, false);
            r.ran + r.implied + r.failed >= n
        }
    };
    let (b, v, f, _) = tokio::join!(
        wait_policy(&bystander, "p", 180, post_counted(2)),
        wait_policy(&victim, "p", 180, post_counted(1)),
        wait_policy(&forge, "p", 180, post_counted(1)),
        wait_policy(&flood, "p", 180, post_counted(1)),
    );
    // Forged postStart lines (rc=7, without the hook's token) changed nothing.
    for (what, p) in [("bystander", &b), ("victim", &v), ("forge", &f)] {
        let r = report(p, false);
        assert_eq!(
            (r.failed, r.implied, r.evidence.as_str()),
            (0, 0, "marker"),
            "{what}: {r:?}"
        );
    }
    assert_eq!(report(&b, false).ran, 2);

    // ---- Events: a forgery aimed at another namespace's pod, then a flood.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let baseline = rss_mib(pid);
    let dropped_before = metric(
        "lifecycle_operator_observer_dropped_total",
        "what=\"failure_event\"",
    )
    .await;
    let (peak, sampler) = sample_peak(pid);
    let target = hooked_pod(&victim, "web").await;
    let (tname, tuid) = (
        target.metadata.name.clone().unwrap(),
        target.metadata.uid.clone().unwrap(),
    );
    let evil_events: Api<Event> = Api::namespaced(evil.client.clone(), &evil.name);
    // Naming the victim's namespace from evil's is refused by the API server
    // or, if it were not, must count nothing.
    let cross = forged_event(
        "cross",
        &victim.name,
        &tname,
        &tuid,
        "FailedPreStopHook",
        "forged".into(),
    );
    let cross_refused = evil_events
        .create(&PostParams::default(), &cross)
        .await
        .is_err();
    println!("an Event in one namespace about a pod of another: refused = {cross_refused}");
    // The pod's name and UID, from evil's own namespace: the probe.
    for reason in ["FailedPreStopHook", "FailedPostStartHook"] {
        let ev = forged_event(
            &format!("uid-{}", reason.to_lowercase()),
            &evil.name,
            &tname,
            &tuid,
            reason,
            "forged".into(),
        );
        evil_events
            .create(&PostParams::default(), &ev)
            .await
            .expect("evil may create Events in its own namespace");
    }
    // 300 Warning events with 256 KiB messages, 8 in flight.
    let t0 = Instant::now();
    let message = "é".repeat(MESSAGE / 2);
    futures::future::join_all((0..8).map(|w| {
        let api = evil_events.clone();
        let message = message.clone();
        let ns = evil.name.clone();
        async move {
            for i in (w..EVENTS).step_by(8) {
                let ev = forged_event(
                    &format!("flood-{i}"),
                    &ns,
                    &format!("nobody-{i}"),
                    &format!("00000000-0000-0000-0000-{i:012}"),
                    "FailedPreStopHook",
                    message.clone(),
                );
                api.create(&PostParams::default(), &ev)
                    .await
                    .expect("create a flood event");
            }
        }
    }))
    .await;
    println!(
        "{EVENTS} events of {} KiB created in {:.1?}",
        MESSAGE / 1024,
        t0.elapsed()
    );
    // The operator has them all once the drops are counted.
    let dropped = eventually("the flood's drops counted", 60, || async {
        let d = metric(
            "lifecycle_operator_observer_dropped_total",
            "what=\"failure_event\"",
        )
        .await
            - dropped_before;
        if d >= (EVENTS - 64) as f64 {
            Ok(d)
        } else {
            Err(format!("{d} dropped"))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_events = rss_mib(pid);

    // ---- Every tenant's pods stop at once: preStops followed while the
    // flood's containers write without newlines and forge's print forgeries.
    tokio::join!(
        scale(&bystander, "web", 0),
        scale(&victim, "web", 0),
        scale(&forge, "web", 0),
        scale(&flood, "web", 0),
    );
    let pre_counted = |n: i64| {
        move |p: &LifecyclePolicy| {
            let r = report(p, true);
            r.ran + r.failed + r.timed_out + r.not_triggered + r.unknown >= n
        }
    };
    let (b, v, f, fl) = tokio::join!(
        wait_policy(&bystander, "p", 120, pre_counted(2)),
        wait_policy(&victim, "p", 120, pre_counted(1)),
        wait_policy(&forge, "p", 120, pre_counted(1)),
        wait_policy(&flood, "p", 120, pre_counted(1)),
    );
    // A moment for anything wrongly counted late to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    sampler.abort();
    let end = rss_mib(pid);
    let peak = peak.load(Ordering::Relaxed) as f64 / 1024.0;
    println!(
        "operator RSS: {baseline:.1} MiB before, {after_events:.1} MiB after {EVENTS} events \
         ({dropped} dropped), {end:.1} MiB after the stops, peak {peak:.1} MiB"
    );

    for (what, p) in [
        ("bystander", &b),
        ("victim", &v),
        ("forge", &f),
        ("flood", &fl),
    ] {
        println!("{what}: postStart {:?}", report(p, false));
        println!("{what}: preStop {:?}", report(p, true));
    }
    // Exact counts where the hooks worked, whatever the others did (read
    // again: nothing may have been counted late either).
    let b_now = policy(&bystander).await;
    assert_eq!(report(&b_now, true), report(&b, true), "counted late");
    let b = report(&b_now, true);
    assert_eq!(
        (b.ran, b.failed, b.timed_out, b.unknown, b.evidence.as_str()),
        (2, 0, 0, 0, "marker"),
        "bystander preStop: {b:?}"
    );
    let b_post = report(&b_now, false);
    assert_eq!((b_post.ran, b_post.failed), (2, 0), "{b_post:?}");
    // The victim: the forged failure events (its pod's name and UID, from
    // another namespace) counted nothing.
    let v = report(&v, true);
    assert_eq!(
        (v.ran, v.failed, v.evidence.as_str()),
        (1, 0, "marker"),
        "victim preStop: {v:?}"
    );
    assert_eq!(report(&policy(&victim).await, false).failed, 0);
    // forge: its own forged rc=0 lines did not hide the real failure (rc=3).
    let f = report(&f, true);
    assert_eq!((f.ran, f.failed), (0, 1), "forge preStop: {f:?}");
    // flood: nothing counted that did not happen (the hooks worked; their
    // marker lines may be lost inside the application's endless line).
    let fl = report(&fl, true);
    assert_eq!((fl.failed, fl.timed_out), (0, 0), "flood preStop: {fl:?}");
    let long_lines = metric(
        "lifecycle_operator_observer_dropped_total",
        "what=\"log_line\"",
    )
    .await;
    assert!(
        long_lines >= 1.0,
        "the flood's over-long lines were read and cut: {long_lines}"
    );
    assert!(
        peak - baseline <= RSS_GROWTH_MIB,
        "RSS grew {:.1} MiB (from {baseline:.1} to a peak of {peak:.1}); bound {RSS_GROWTH_MIB}",
        peak - baseline
    );
    for ns in [bystander, victim, forge, flood, evil] {
        ns.delete().await;
    }
}

async fn policy(ns: &Ns) -> LifecyclePolicy {
    ns.policies().get("p").await.unwrap()
}
