//! The plugin's pure views on objects read from the demo
//! (`examples/nginx.yaml`, in `testdata/`): snapshots of every output, and
//! what a hostile pod may not do to them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::api::types::{LifecyclePolicy, WorkloadKind};
use crate::apply::ledger::read_ledgers;
use crate::hooks::marker;
use crate::plugin::cli::Output;
use crate::plugin::diff::{self, Live};
use crate::plugin::dryrun::World;
use crate::plugin::fetch::Log;
use crate::plugin::style::Style;
use crate::plugin::{explain, pod, render, status};

fn data(name: &str) -> Value {
    let path = format!("{}/src/plugin/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn policy() -> LifecyclePolicy {
    serde_json::from_value(data("policy.json")).unwrap()
}

fn pods() -> Vec<Pod> {
    serde_json::from_value(data("pods.json")).unwrap()
}

fn now() -> Timestamp {
    "2026-12-03T13:05:00Z".parse().unwrap()
}

/// The token a hook's markers carry, from the pod's own command.
fn token(p: &Pod, hook: &str) -> u64 {
    let c = &p.spec.as_ref().unwrap().containers[0];
    let l = c.lifecycle.as_ref().unwrap();
    let h = if hook == "postStart" {
        &l.post_start
    } else {
        &l.pre_stop
    };
    let cmd = h
        .as_ref()
        .unwrap()
        .exec
        .as_ref()
        .unwrap()
        .command
        .clone()
        .unwrap();
    marker::wrapped_by(&cmd).unwrap().token
}

fn line(at: &str, hook: &str, token: u64, run: u32, end: &str) -> String {
    format!(
        "{at} lifecycle-operator: hook={hook} policy=default/nginx-graceful token={token:016x} run={run} {end}\n"
    )
}

/// A log in which both hooks ran: postStart at start, preStop for 5.004 s.
fn full_log(p: &Pod) -> String {
    let (ps, st) = (token(p, "postStart"), token(p, "preStop"));
    [
        line(
            "2026-12-03T12:56:18.527716200Z",
            "postStart",
            ps,
            9,
            "started",
        ),
        "2026-12-03T12:56:18.530000000Z nginx: start worker processes\n".into(),
        line("2026-12-03T12:56:18.532716200Z", "postStart", ps, 9, "rc=0"),
        line(
            "2026-12-03T13:02:19.118090700Z",
            "preStop",
            st,
            61,
            "started",
        ),
        line("2026-12-03T13:02:24.122090700Z", "preStop", st, 61, "rc=0"),
    ]
    .concat()
}

fn snapshot() -> status::Snapshot {
    let p = policy();
    let pods = pods();
    let mut ledgers = BTreeMap::new();
    let mut slots = BTreeMap::new();
    for (key, file) in [
        ("Deployment/frontend", "frontend.json"),
        ("DaemonSet/edge", "edge.json"),
    ] {
        let w = data(file);
        let a = serde_json::from_value(w["metadata"]["annotations"].clone()).ok();
        let all = read_ledgers(a.as_ref());
        slots.insert(
            key.to_string(),
            all["nginx-graceful"]
                .owned
                .keys()
                .map(ToString::to_string)
                .collect(),
        );
        ledgers.insert(key.to_string(), all);
    }
    let logs = pods
        .iter()
        .map(|p| {
            let (ps, name) = (token(p, "postStart"), p.metadata.name.clone().unwrap());
            let log = line(
                "2026-12-03T12:56:18.527716200Z",
                "postStart",
                ps,
                9,
                "started",
            ) + &line("2026-12-03T12:56:18.532716200Z", "postStart", ps, 9, "rc=0");
            ((name, "nginx".to_string()), Log::Read(log))
        })
        .collect();
    status::Snapshot {
        policy: p,
        kind: "LifecyclePolicy".into(),
        pods,
        slots,
        ledgers,
        logs,
        now: now(),
    }
}

#[test]
fn status_as_text_json_and_yaml() {
    let v = status::build(&snapshot());
    let plain = Style::plain();
    insta::assert_snapshot!(
        "status_text",
        render::output(&v, Output::Text, &plain, render::status::text).unwrap()
    );
    insta::assert_snapshot!(
        "status_json",
        render::output(&v, Output::Json, &plain, render::status::text).unwrap()
    );
    insta::assert_snapshot!(
        "status_yaml",
        render::output(&v, Output::Yaml, &plain, render::status::text).unwrap()
    );
    // Both workloads, each pod with its postStart counted from its marker.
    assert_eq!(v.workloads.len(), 2);
    for w in &v.workloads {
        assert!(!w.pods.is_empty(), "{}", w.name);
        for p in &w.pods {
            let h = &p.containers[0].hooks[0];
            assert_eq!(
                (h.hook.as_str(), h.outcome.as_str()),
                ("postStart", "ran"),
                "{}",
                p.name
            );
        }
    }
}

fn stopping(p: &Pod) -> Pod {
    let mut v = serde_json::to_value(p).unwrap();
    v["metadata"]["deletionTimestamp"] = json!("2026-12-03T13:03:19Z");
    v["metadata"]["deletionGracePeriodSeconds"] = json!(60);
    serde_json::from_value(v).unwrap()
}

fn inputs(p: Pod, log: Log, events: Vec<Event>) -> pod::PodInputs {
    let w = data("frontend.json");
    let a = serde_json::from_value(w["metadata"]["annotations"].clone()).ok();
    pod::PodInputs {
        workload: crate::verify::index::workload_of(&p),
        pod: p,
        ledgers: read_ledgers(a.as_ref()),
        logs: BTreeMap::from([(("nginx".to_string(), false), log)]),
        events,
        now: now(),
    }
}

#[test]
fn a_stopped_pods_pre_stop_with_its_owner_evidence_and_duration() {
    let p = stopping(&pods()[1]);
    let r = pod::build(&inputs(p.clone(), Log::Read(full_log(&p)), Vec::new()));
    insta::assert_snapshot!("pod_text", render::pod::text(&r, &Style::plain()));
    let pre = &r.containers[0].hooks[1];
    assert_eq!(pre.outcome, "ran");
    assert_eq!(pre.evidence, "marker");
    assert_eq!(pre.owner, "LifecyclePolicy nginx-graceful");
    assert!((pre.duration_seconds.unwrap() - 5.004).abs() < 1e-6);
    assert_eq!(
        r.deletion_requested.as_deref(),
        Some("2026-12-03T13:02:19Z")
    );
    assert_eq!(r.grace_seconds, 60);
}

#[test]
fn a_pre_stop_still_running_says_for_how_long() {
    let p = stopping(&pods()[1]);
    let log: String = full_log(&p)
        .lines()
        .take(4)
        .map(|l| format!("{l}\n"))
        .collect();
    let r = pod::build(&inputs(p, Log::Read(log), Vec::new()));
    let pre = &r.containers[0].hooks[1];
    assert_eq!(pre.outcome, "running");
    assert!(
        pre.detail.starts_with("for 160.88") && pre.detail.ends_with("s of a 60s grace period"),
        "{}",
        pre.detail
    );
}

#[test]
fn forged_and_overlong_lines_prove_nothing() {
    let p = stopping(&pods()[1]);
    let st = token(&p, "preStop");
    let mut log = String::new();
    // Another token (the app printing a marker of its own), an end line
    // without its start line, and a 1 MiB line hiding a marker at its end.
    log += &line("2026-12-03T13:02:19Z", "preStop", st ^ 1, 7, "started");
    log += &line("2026-12-03T13:02:20Z", "preStop", st ^ 1, 7, "rc=0");
    log += &line("2026-12-03T13:02:21Z", "preStop", st, 8, "rc=0");
    log += &format!(
        "2026-12-03T13:02:22Z {}{}",
        "x".repeat(1 << 20),
        line("", "preStop", st, 9, "started")
    );
    let r = pod::build(&inputs(p, Log::Read(log), Vec::new()));
    let pre = &r.containers[0].hooks[1];
    assert_eq!(pre.outcome, "no evidence");
    assert!(pre.runs.is_empty());
}

#[test]
fn a_failure_event_is_shown_bounded() {
    let p = stopping(&pods()[1]);
    let huge = format!(
        "Exec lifecycle hook failed: {}\n{}",
        "é".repeat(100_000),
        "tail"
    );
    let ev: Event = serde_json::from_value(json!({
        "metadata": {"name": "e1", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": p.metadata.name, "fieldPath": "spec.containers{nginx}"},
        "reason": "FailedPreStopHook", "message": huge, "count": 3,
    }))
    .unwrap();
    let r = pod::build(&inputs(p, Log::Absent, vec![ev]));
    let pre = &r.containers[0].hooks[1];
    assert_eq!(pre.outcome, "failed");
    assert!(pre.detail.chars().count() <= 300 && !pre.detail.contains('\n'));
    assert_eq!(pre.events[0].count, 3);
    let text = render::pod::text(&r, &Style::plain());
    assert!(text.contains("event     FailedPreStopHook (x3): Exec lifecycle hook failed: é"));
}

#[test]
fn a_refused_log_is_said_and_the_rest_still_shown() {
    let p = pods()[1].clone();
    let r = pod::build(&inputs(
        p,
        Log::Refused("no permission to get pods/log".into()),
        Vec::new(),
    ));
    assert_eq!(r.containers[0].hooks[0].outcome, "implied");
    assert_eq!(
        r.notes,
        ["current log of nginx not read: no permission to get pods/log"]
    );
}

fn world() -> World {
    World::new(
        vec![policy()],
        Vec::new(),
        Vec::new(),
        "lifecycle-operator-system",
    )
}

#[test]
fn explain_shows_slots_originals_owners_and_the_release() {
    let w = world();
    let r = explain::build(
        &data("frontend.json"),
        WorkloadKind::Deployment,
        "default",
        &w.acting("default"),
        &w.neighbourhood("default"),
        now(),
    );
    insta::assert_snapshot!("explain_text", render::explain::text(&r, &Style::plain()));
    let grace = &r.ledgers[0]
        .slots
        .iter()
        .find(|s| s.slot == "terminationGracePeriodSeconds")
        .unwrap();
    assert_eq!(grace.original, "30");
    assert_eq!(r.owners[0].manager, "lifecycle-operator/nginx-graceful");
    assert!(
        r.releases[0]
            .diff
            .contains("+      terminationGracePeriodSeconds: 30")
    );
}

fn live(objects: &[Value], w: &World) -> Vec<Live> {
    objects
        .iter()
        .map(|o| Live {
            namespace: "default".into(),
            kind: if o["kind"] == "DaemonSet" {
                WorkloadKind::DaemonSet
            } else {
                WorkloadKind::Deployment
            },
            object: o.clone(),
            neighbourhood: w.neighbourhood("default"),
        })
        .collect()
}

#[test]
fn diff_of_the_applied_policy_is_empty() {
    let w = world();
    let r = diff::build(
        &policy(),
        true,
        &live(&[data("frontend.json"), data("edge.json")], &w),
        now(),
    );
    assert_eq!(r.exit_code(), 0);
    assert!(r.changes.is_empty() && r.conflicts.is_empty());
    assert_eq!(r.unchanged, ["Deployment/frontend", "DaemonSet/edge"]);
}

/// A Deployment no policy touched yet, labelled app=web.
fn plain(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"), "labels": {"app": "web"}, "generation": 1},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"pod": name}},
            "template": {"metadata": {"labels": {"pod": name}},
                "spec": {"containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"]}]}}}})
}

fn new_policy(name: &str, app: &str, extra: Value) -> LifecyclePolicy {
    let mut p = json!({"apiVersion": "lifecycle-operator.io/v1alpha1", "kind": "LifecyclePolicy",
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": "2026-12-03T13:00:00Z", "generation": 1},
        "spec": {"selector": {"matchLabels": {"app": app}}, "preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep 3"]}},
                 "rollout": {"waveSize": 2}}});
    json_patch::merge(&mut p, &extra);
    serde_json::from_value(p).unwrap()
}

#[test]
fn diff_of_a_new_policy_shows_each_change_and_the_waves() {
    let p = new_policy("web-drain", "web", json!({}));
    let w = World::new(vec![policy(), p.clone()], Vec::new(), Vec::new(), "x");
    let objects: Vec<Value> = ["a", "b", "c", "d"].map(plain).to_vec();
    let r = diff::build(&p, false, &live(&objects, &w), now());
    assert_eq!(r.exit_code(), 1);
    insta::assert_snapshot!("diff_text", render::diff::text(&r, &Style::plain()));
    assert_eq!(
        r.waves,
        [
            vec!["Deployment/a"],
            vec!["Deployment/b", "Deployment/c"],
            vec!["Deployment/d"]
        ]
    );
    assert!(r.changes.iter().all(|c| c.restarts_pods));
}

#[test]
fn diff_of_a_rival_policy_names_who_keeps_the_slots() {
    let p = new_policy("late", "nginx", json!({}));
    let w = World::new(vec![policy(), p.clone()], Vec::new(), Vec::new(), "x");
    let r = diff::build(&p, false, &live(&[data("frontend.json")], &w), now());
    assert_eq!(r.exit_code(), 0);
    assert_eq!(
        r.conflicts,
        ["Deployment/frontend nginx/preStop: LifecyclePolicy nginx-graceful wins it (precedence)"]
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Whatever a container logs and an event says, `pod` answers, bounded.
    #[test]
    fn any_log_and_event_give_a_bounded_report(
        log in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
        message in "\\PC{0,2000}",
        runs in 0u32..40,
    ) {
        let p = stopping(&pods()[1]);
        let st = token(&p, "preStop");
        let mut text = String::from_utf8_lossy(&log).into_owned();
        for r in 0..runs {
            text += &line("2026-12-03T13:02:19Z", "preStop", st, r, "started");
        }
        let ev: Event = serde_json::from_value(json!({
            "metadata": {"name": "e"}, "involvedObject": {"kind": "Pod"},
            "reason": "FailedPreStopHook", "message": message,
        })).unwrap();
        let r = pod::build(&inputs(p, Log::Read(text), vec![ev]));
        for h in &r.containers[0].hooks {
            proptest::prop_assert!(h.detail.chars().count() <= 300);
            proptest::prop_assert!(h.runs.len() <= pod::MAX_RUNS);
            proptest::prop_assert!(h.events.len() <= pod::MAX_EVENTS);
        }
        let _ = render::pod::text(&r, &Style::plain());
    }
}
