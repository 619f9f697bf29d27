//! Feeds the index pods, kubelet events and marker findings as the watches and
//! log readers would, and reads the reports reconcile puts on the status;
//! including operators restarted (a fresh index seeded from the last status)
//! in the middle of a pod's life.

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use super::counts::short_id;
use super::*;
use crate::api::types::{CountedInstance, HookReport, LifecyclePolicyStatus};
use crate::apply::workload::WorkloadKey;
use crate::hooks::marker::Evidence;

const POLICY: &str = "web/nginx-graceful";
const UID: &str = "policy-uid-1";

fn t(s: &str) -> Timestamp {
    format!("2025-01-01T12:{s}Z").parse().unwrap()
}

fn running(id: &str, started: &str) -> Value {
    json!({"name": "nginx", "containerID": format!("containerd://{id}"), "ready": true, "restartCount": 0,
           "image": "nginx", "imageID": "", "state": {"running": {"startedAt": format!("2025-01-01T12:{started}Z")}}})
}

fn exited(id: &str, code: i32, started: &str, finished: &str) -> Value {
    json!({"name": "nginx", "containerID": format!("containerd://{id}"), "ready": false, "restartCount": 0,
           "image": "nginx", "imageID": "", "state": {"terminated": {"exitCode": code, "reason": if code == 0 {"Completed"} else {"Error"},
           "startedAt": format!("2025-01-01T12:{started}Z"), "finishedAt": format!("2025-01-01T12:{finished}Z")}}})
}

fn waiting_after_failure(id: &str, message: &str) -> Value {
    json!({"name": "nginx", "containerID": format!("containerd://{id}"), "ready": false, "restartCount": 0,
           "image": "nginx", "imageID": "",
           "state": {"waiting": {"reason": "PostStartHookError", "message": message}}})
}

/// A pod with one container status; `deleted_at`: (deletionTimestamp, grace).
fn pod(uid: &str, status: Value, deleting: Option<(&str, i64)>) -> Pod {
    let mut meta = json!({"name": format!("web-{uid}"), "namespace": "web", "uid": uid});
    if let Some((at, grace)) = deleting {
        meta["deletionTimestamp"] = json!(format!("2025-01-01T12:{at}Z"));
        meta["deletionGracePeriodSeconds"] = json!(grace);
    }
    serde_json::from_value(json!({
        "metadata": meta,
        "spec": {"containers": [{"name": "nginx", "image": "nginx"}]},
        "status": {"containerStatuses": [status]},
    }))
    .unwrap()
}

fn owners(evidence: Evidence) -> Vec<Owner> {
    HookKind::ALL
        .into_iter()
        .map(|kind| Owner {
            policy: POLICY.into(),
            container: "nginx".into(),
            kind,
            evidence,
            token: 0x5eed,
        })
        .collect()
}

fn key(pod_uid: &str, id: &str) -> InstanceKey {
    InstanceKey {
        pod_uid: pod_uid.into(),
        container: "nginx".into(),
        container_id: format!("containerd://{id}").into(),
    }
}

fn status_of(reports: [Option<HookReport>; 2], generation: i64) -> LifecyclePolicyStatus {
    let [post_start, pre_stop] = reports;
    LifecyclePolicyStatus {
        observed_generation: Some(generation),
        post_start,
        pre_stop,
        ..Default::default()
    }
}

/// An operator: an index plus the policy as the API server has it.
struct Operator {
    index: Index,
    generation: i64,
    uid: &'static str,
    status: Option<LifecyclePolicyStatus>,
}

impl Operator {
    fn new() -> Self {
        Operator {
            index: Index::default(),
            generation: 1,
            uid: UID,
            status: None,
        }
    }

    /// A restarted operator: a fresh index, the status as last written.
    fn restarted(&self) -> Self {
        Operator {
            index: Index::default(),
            generation: self.generation,
            uid: self.uid,
            status: self.status.clone(),
        }
    }

    fn pod(&mut self, p: &Pod, evidence: Evidence, now: &str) -> Vec<LogRequest> {
        let record = PolicyRecord {
            key: POLICY,
            uid: Some(self.uid),
            generation: Some(self.generation),
            status: self.status.as_ref(),
        };
        self.index.policy(&record, t(now));
        self.index.pod(p, &owners(evidence), false, t(now))
    }

    /// Pod `p` runs container `id`, started at `started`, seen at `now`.
    fn run(
        &mut self,
        p: &str,
        id: &str,
        started: &str,
        evidence: Evidence,
        now: &str,
    ) -> Vec<LogRequest> {
        self.pod(&pod(p, running(id, started), None), evidence, now)
    }

    /// Pod p1 runs container aaa (started 00:01), seen at 00:02, then (from
    /// `deleted_at` on) is being deleted with a 30 s grace period.
    fn run_then_delete(&mut self, evidence: Evidence, deleted_at: &str) {
        self.pod(&pod("p1", running("aaa", "00:01"), None), evidence, "00:02");
        self.pod(&deleting(running("aaa", "00:01")), evidence, deleted_at);
    }

    fn gone(&mut self, p: &Pod, evidence: Evidence, now: &str) {
        self.index.pod(p, &owners(evidence), true, t(now));
    }

    fn reports(&mut self, now: &str) -> [Option<HookReport>; 2] {
        let record = PolicyRecord {
            key: POLICY,
            uid: Some(self.uid),
            generation: Some(self.generation),
            status: self.status.as_ref(),
        };
        self.index
            .reports(&record, [true, true], [None, None], t(now))
    }

    /// Reconcile: the reports go on the status.
    fn write_status(&mut self, now: &str) -> LifecyclePolicyStatus {
        let s = status_of(self.reports(now), self.generation);
        self.status = Some(s.clone());
        s
    }
}

fn post(s: &LifecyclePolicyStatus) -> &HookReport {
    s.post_start.as_ref().unwrap()
}

fn pre(s: &LifecyclePolicyStatus) -> &HookReport {
    s.pre_stop.as_ref().unwrap()
}

fn ended(rc: i32, started: &str, ended: &str) -> MarkerFinding {
    MarkerFinding {
        started: Some(Some(t(started))),
        ended: Some(EndMarker {
            rc,
            at: Some(t(ended)),
        }),
        last_line_at: Some(t(ended)),
    }
}

fn failure(uid: &str, pod_uid: &str, kind: HookKind, count: i32, at: &str) -> FailureEvent {
    FailureEvent {
        uid: uid.into(),
        namespace: "web".into(),
        pod: format!("web-{pod_uid}"),
        pod_uid: pod_uid.into(),
        container: "nginx".into(),
        kind,
        count,
        reason: match kind {
            HookKind::PostStart => "FailedPostStartHook".into(),
            HookKind::PreStop => "FailedPreStopHook".into(),
        },
        message: format!("{} failed", kind.field()),
        time: Some(t(at)),
    }
}

#[test]
fn a_post_start_marker_pair_counts_ran_with_its_duration() {
    let mut op = Operator::new();
    let logs = op.run("p1", "aaa", "00:01", Evidence::Marker, "00:02");
    assert_eq!(logs, vec![LogRequest::Read(key("p1", "aaa"))]);
    // Nothing counted while the log is being read.
    assert_eq!(post(&op.write_status("00:02")).summary, "0/0");
    op.index.markers(
        &key("p1", "aaa"),
        HookKind::PostStart,
        ended(0, "00:00.250", "00:01.750"),
        t("00:03"),
    );
    let s = op.write_status("00:03");
    let r = post(&s);
    assert_eq!(
        (r.ran, r.implied, r.summary.as_str(), r.evidence.as_str()),
        (1, 0, "1/1", "marker")
    );
    assert_eq!(r.last_duration_seconds, Some(1.5));
    assert_eq!(r.max_duration_seconds, Some(1.5));
    assert_eq!(
        op.index.take_counted(),
        vec![Counted {
            kind: HookKind::PostStart,
            outcome: "ran",
            duration_seconds: Some(1.5)
        }]
    );
    assert_eq!(op.index.take_dirty(), vec![POLICY.to_string()]);
    assert!(op.index.take_dirty().is_empty());
}

#[test]
fn an_old_marker_without_a_start_line_counts_without_a_duration() {
    let mut op = Operator::new();
    op.run("p1", "aaa", "00:01", Evidence::Marker, "00:02");
    let found = MarkerFinding {
        started: None,
        ended: Some(EndMarker {
            rc: 0,
            at: Some(t("00:01")),
        }),
        last_line_at: None,
    };
    op.index
        .markers(&key("p1", "aaa"), HookKind::PostStart, found, t("00:03"));
    let s = op.write_status("00:03");
    assert_eq!(post(&s).ran, 1);
    assert_eq!(post(&s).last_duration_seconds, None);
}

#[test]
fn events_only_post_start_is_implied_and_says_its_duration_is_unknown() {
    let mut op = Operator::new();
    let logs = op.run("p1", "aaa", "00:01", Evidence::Events, "00:02");
    assert!(logs.is_empty());
    let why = "not measured".to_string();
    let record = PolicyRecord {
        key: POLICY,
        uid: Some(UID),
        generation: Some(1),
        status: None,
    };
    let [r, _] = op
        .index
        .reports(&record, [true, true], [Some(why.clone()), None], t("00:02"));
    let r = r.unwrap();
    assert_eq!(
        (r.implied, r.summary.as_str(), r.evidence.as_str()),
        (1, "1/1", "implied")
    );
    assert_eq!(r.duration_unknown, Some(why));
}

#[test]
fn a_failed_post_start_carries_the_kubelets_detail() {
    let mut op = Operator::new();
    let msg = "Exec lifecycle hook ([/bin/sh -c exit 3]) for Container \"nginx\" in Pod \"web\" failed - error: command '/bin/sh -c exit 3' exited with 3";
    op.pod(
        &pod("p1", waiting_after_failure("aaa", msg), None),
        Evidence::Marker,
        "00:02",
    );
    op.index.event(
        failure("ev1", "p1", HookKind::PostStart, 1, "00:02"),
        t("00:02"),
    );
    let s = op.write_status("00:03");
    let r = post(&s);
    assert_eq!((r.failed, r.summary.as_str()), (1, "0/1"));
    let f = r.last_failure.as_ref().unwrap();
    assert_eq!(
        (f.pod.as_str(), f.reason.as_str(), f.message.as_str()),
        ("web-p1", "FailedPostStartHook", msg)
    );
    assert_eq!(f.time.0, t("00:02"));
    // The same event seen again (a re-list) changes nothing.
    op.index.event(
        failure("ev1", "p1", HookKind::PostStart, 1, "00:02"),
        t("00:04"),
    );
    assert_eq!(post(&op.write_status("00:04")).failed, 1);
}

#[test]
fn a_failure_event_ahead_of_the_pod_waits_for_its_instance() {
    let mut op = Operator::new();
    let record = PolicyRecord {
        key: POLICY,
        uid: Some(UID),
        generation: Some(1),
        status: None,
    };
    op.index.policy(&record, t("00:00"));
    op.index.event(
        failure("ev1", "p1", HookKind::PostStart, 1, "00:02"),
        t("00:02"),
    );
    op.pod(
        &pod("p1", waiting_after_failure("aaa", "boom"), None),
        Evidence::Events,
        "00:03",
    );
    let s = op.write_status("00:03");
    assert_eq!(post(&s).failed, 1);
    assert_eq!(post(&s).last_failure.as_ref().unwrap().message, "boom");
}

/// Deleted at 00:10 with a 30 s grace period.
fn deleting(status: Value) -> Pod {
    pod("p1", status, Some(("00:40", 30)))
}

#[test]
fn a_pre_stop_marker_pair_counts_ran_and_flags_a_hook_near_the_grace_period() {
    let mut op = Operator::new();
    op.run("p1", "aaa", "00:01", Evidence::Marker, "00:02");
    op.index.markers(
        &key("p1", "aaa"),
        HookKind::PostStart,
        ended(0, "00:01", "00:01.100"),
        t("00:02"),
    );
    let logs = op.pod(
        &deleting(running("aaa", "00:01")),
        Evidence::Marker,
        "00:10",
    );
    assert_eq!(
        logs,
        vec![LogRequest::Follow {
            key: key("p1", "aaa"),
            since_seconds: 5,
            // Deleted at 00:10 with 30 s of grace, plus the margin.
            until: t("01:10"),
        }]
    );
    // 25 s of a 30 s grace period.
    op.index.markers(
        &key("p1", "aaa"),
        HookKind::PreStop,
        ended(0, "00:10", "00:35"),
        t("00:35"),
    );
    op.pod(
        &deleting(exited("aaa", 0, "00:01", "00:36")),
        Evidence::Marker,
        "00:36",
    );
    let s = op.write_status("00:36");
    let r = pre(&s);
    assert_eq!(
        (r.ran, r.summary.as_str(), r.evidence.as_str()),
        (1, "1/1", "marker")
    );
    assert_eq!(r.last_duration_seconds, Some(25.0));
    assert_eq!(
        r.near_grace_period.as_deref(),
        Some("pod web-p1 container nginx: preStop took 25.0s of its 30s grace period")
    );
    assert_eq!(post(&s).last_duration_seconds, Some(0.1));
}

#[test]
fn the_seeds_nginx_stop_hook_counts_as_ran_by_container_exit() {
    let mut op = Operator::new();
    op.run_then_delete(Evidence::Marker, "00:10");
    // nginx -s quit: nginx exits 0, the hook's shell dies with it.
    op.index.event(
        failure("ev1", "p1", HookKind::PreStop, 1, "00:11"),
        t("00:11"),
    );
    op.pod(
        &deleting(exited("aaa", 0, "00:01", "00:11")),
        Evidence::Marker,
        "00:11",
    );
    assert_eq!(
        pre(&op.write_status("00:11")).summary,
        "0/0",
        "the log is still being read"
    );
    let found = MarkerFinding {
        started: Some(Some(t("00:10.400"))),
        ended: None,
        last_line_at: Some(t("00:10.900")),
    };
    op.index
        .markers(&key("p1", "aaa"), HookKind::PreStop, found, t("00:12"));
    let s = op.write_status("00:12");
    let r = pre(&s);
    assert_eq!(
        (r.ran, r.failed, r.evidence.as_str()),
        (1, 0, "containerExit")
    );
    // From the start marker to the later of finishedAt (00:11, truncated to
    // the second) and nginx's last log line (00:10.9).
    assert_eq!(r.last_duration_seconds, Some(0.6));
    assert!(r.last_failure.is_none());
    assert!(
        r.last_container_exit
            .as_ref()
            .unwrap()
            .starts_with("pod web-p1 container nginx: the hook stopped its own container: it exited with code 0 0.60s after the hook began"),
        "{r:?}"
    );
}

#[test]
fn a_pre_stop_cut_by_the_grace_period_times_out() {
    let mut op = Operator::new();
    op.run_then_delete(Evidence::Events, "00:10");
    op.index.event(
        failure("ev1", "p1", HookKind::PreStop, 1, "00:40"),
        t("00:40"),
    );
    op.pod(
        &deleting(exited("aaa", 137, "00:01", "00:40")),
        Evidence::Events,
        "00:40",
    );
    let s = op.write_status("00:41");
    assert_eq!((pre(&s).timed_out, pre(&s).summary.as_str()), (1, "0/1"));
    assert_eq!(pre(&s).last_failure.as_ref().unwrap().reason, "TimedOut");
}

/// The pod's last update, the only one an operator that (re)started while it
/// went away sees: the kubelet's final delete set the period to 0.
#[test]
fn a_pre_stop_seen_first_in_the_final_delete_is_judged_by_the_specs_grace() {
    let mut op = Operator::new();
    let mut gone = pod("p1", exited("aaa", 0, "00:01", "00:15"), Some(("00:10", 0)));
    gone.spec.as_mut().unwrap().termination_grace_period_seconds = Some(50);
    op.pod(&gone, Evidence::Events, "00:16");
    let s = op.write_status("00:16");
    assert_eq!((pre(&s).ran, pre(&s).timed_out), (1, 0), "{:?}", pre(&s));
    // Without a spec period it is 30 s: 00:40 is at its end.
    let mut op = Operator::new();
    let late = pod(
        "p1",
        exited("aaa", 137, "00:01", "00:40"),
        Some(("00:10", 0)),
    );
    op.pod(&late, Evidence::Events, "00:41");
    assert_eq!(pre(&op.write_status("00:41")).timed_out, 1);
}

#[test]
fn a_container_that_exits_on_its_own_is_not_triggered() {
    let mut op = Operator::new();
    op.run("p1", "aaa", "00:01", Evidence::Events, "00:02");
    op.pod(
        &pod("p1", exited("aaa", 0, "00:01", "00:05"), None),
        Evidence::Events,
        "00:05",
    );
    let s = op.write_status("00:06");
    assert_eq!(pre(&s).not_triggered, 1);
    assert!(
        pre(&s)
            .last_not_triggered
            .as_ref()
            .unwrap()
            .starts_with("web-p1/nginx: container exited on its own")
    );
}

#[test]
fn a_pod_gone_before_its_stop_was_seen_settles() {
    let mut op = Operator::new();
    op.run_then_delete(Evidence::Events, "00:10");
    op.gone(
        &deleting(running("aaa", "00:01")),
        Evidence::Events,
        "00:12",
    );
    let s = op.write_status("00:12");
    assert_eq!(pre(&s).ran, 1);
    assert_eq!(pre(&s).evidence, "events");
    assert!(op.index.is_empty(), "settled and gone: forgotten");
}

#[test]
fn a_quiet_world_gives_identical_reports() {
    let mut op = Operator::new();
    op.run("p1", "aaa", "00:01", Evidence::Events, "00:02");
    let first = op.write_status("00:02");
    // Later resyncs, the same pod again, minutes apart: no change, no write.
    op.run("p1", "aaa", "00:01", Evidence::Events, "05:00");
    assert_eq!(op.write_status("09:00"), first);
}

/// Two replicas of nginx with the seed's hooks, as in the acceptance test.
fn two_running(op: &mut Operator, now: &str) {
    for (p, id) in [("p1", "aaa"), ("p2", "bbb")] {
        op.run(p, id, "00:01", Evidence::Marker, now);
        op.index.markers(
            &key(p, id),
            HookKind::PostStart,
            ended(0, "00:01", "00:01.010"),
            t(now),
        );
    }
}

#[test]
fn counts_survive_a_restart_without_loss_or_double_count() {
    let mut op = Operator::new();
    two_running(&mut op, "00:02");
    let before = op.write_status("00:02");
    assert_eq!(post(&before).summary, "2/2");

    // kill -9 and a restart: the initial list shows the same two pods.
    let mut op = op.restarted();
    let logs = op.run("p1", "aaa", "00:01", Evidence::Marker, "01:00");
    assert!(
        logs.is_empty(),
        "an instance the status holds needs no log read"
    );
    op.run("p2", "bbb", "00:01", Evidence::Marker, "01:00");
    let after = op.write_status("01:00");
    assert_eq!(after, before, "unchanged: no status write either");

    // A pod deleted now: preStop counted once, and postStart of its replacement.
    op.pod(
        &pod("p1", running("aaa", "00:01"), Some(("01:40", 30))),
        Evidence::Marker,
        "01:10",
    );
    op.index.markers(
        &key("p1", "aaa"),
        HookKind::PreStop,
        ended(0, "01:10", "01:12"),
        t("01:12"),
    );
    op.pod(
        &pod(
            "p1",
            exited("aaa", 0, "00:01", "01:12"),
            Some(("01:40", 30)),
        ),
        Evidence::Marker,
        "01:12",
    );
    op.run("p3", "ccc", "01:11", Evidence::Marker, "01:12");
    op.index.markers(
        &key("p3", "ccc"),
        HookKind::PostStart,
        ended(0, "01:11", "01:11.5"),
        t("01:12"),
    );
    let s = op.write_status("01:12");
    assert_eq!(post(&s).summary, "3/3");
    assert_eq!((pre(&s).summary.as_str(), pre(&s).failed), ("1/1", 0));

    // A SIGTERM restart while p1 is still listed as terminating.
    let mut op = op.restarted();
    op.pod(
        &pod(
            "p1",
            exited("aaa", 0, "00:01", "01:12"),
            Some(("01:40", 30)),
        ),
        Evidence::Marker,
        "01:20",
    );
    op.run("p2", "bbb", "00:01", Evidence::Marker, "01:20");
    op.run("p3", "ccc", "01:11", Evidence::Marker, "01:20");
    assert_eq!(op.write_status("01:20"), s);
}

#[test]
fn an_instance_counted_but_never_written_is_counted_again() {
    let mut op = Operator::new();
    op.run("p1", "aaa", "00:01", Evidence::Events, "00:02");
    let written = op.write_status("00:02");
    // p2 is counted in memory, then the operator dies before writing.
    op.run("p2", "bbb", "00:03", Evidence::Events, "00:04");
    assert_eq!(post(&status_of(op.reports("00:04"), 1)).implied, 2);
    let mut op = op.restarted();
    assert_eq!(op.status.as_ref(), Some(&written));
    op.run("p1", "aaa", "00:01", Evidence::Events, "00:10");
    op.run("p2", "bbb", "00:03", Evidence::Events, "00:10");
    assert_eq!(post(&op.write_status("00:10")).implied, 2);
}

#[test]
fn a_hook_pending_at_the_restart_is_counted_once_by_the_successor() {
    let mut op = Operator::new();
    two_running(&mut op, "00:02");
    op.pod(
        &pod("p1", running("aaa", "00:01"), Some(("01:30", 30))),
        Evidence::Marker,
        "01:00",
    );
    op.write_status("01:00");
    let mut op = op.restarted();
    // The successor sees p1 mid-termination and follows its log itself.
    let logs = op.pod(
        &pod("p1", running("aaa", "00:01"), Some(("01:30", 30))),
        Evidence::Marker,
        "01:01",
    );
    assert_eq!(logs.len(), 1, "{logs:?}");
    op.index.markers(
        &key("p1", "aaa"),
        HookKind::PreStop,
        ended(0, "01:00", "01:02"),
        t("01:02"),
    );
    op.pod(
        &pod(
            "p1",
            exited("aaa", 0, "00:01", "01:02"),
            Some(("01:30", 30)),
        ),
        Evidence::Marker,
        "01:02",
    );
    let s = op.write_status("01:02");
    assert_eq!((post(&s).ran, pre(&s).ran), (2, 1));
    let mut op = op.restarted();
    op.pod(
        &pod(
            "p1",
            exited("aaa", 0, "00:01", "01:02"),
            Some(("01:30", 30)),
        ),
        Evidence::Marker,
        "01:03",
    );
    assert_eq!(op.write_status("01:03"), s);
}

/// Pod p1's postStart failed at 00:02, the kubelet's event `ev` says so.
fn failed_post_start(ev: &str) -> Operator {
    let mut op = Operator::new();
    op.pod(
        &pod("p1", waiting_after_failure("aaa", "boom"), None),
        Evidence::Events,
        "00:02",
    );
    op.index.event(
        failure(ev, "p1", HookKind::PostStart, 1, "00:02"),
        t("00:02"),
    );
    op
}

#[test]
fn old_failure_events_after_a_restart_are_not_counted_again() {
    let mut op = failed_post_start("ev1");
    // The container restarts and this time its hook works.
    op.run("p1", "bbb", "00:20", Evidence::Events, "00:20");
    let s = op.write_status("01:00");
    assert_eq!((post(&s).failed, post(&s).implied), (1, 1));
    let mut op = op.restarted();
    // The event list still holds the old failure.
    op.run("p1", "bbb", "00:20", Evidence::Events, "02:00");
    op.index.event(
        failure("ev1", "p1", HookKind::PostStart, 1, "00:02"),
        t("02:00"),
    );
    assert_eq!(op.write_status("02:00"), s);
}

#[test]
fn a_new_generation_starts_from_zero() {
    let mut op = Operator::new();
    two_running(&mut op, "00:02");
    assert_eq!(post(&op.write_status("00:02")).ran, 2);
    op.generation = 2;
    let s = op.write_status("00:30");
    assert_eq!(post(&s).summary, "0/0");
    // Pods of the old generation still running are not counted again.
    two_running(&mut op, "00:31");
    assert_eq!(post(&op.write_status("00:31")).summary, "0/0");
    op.run("p3", "ccc", "00:40", Evidence::Events, "00:41");
    assert_eq!(post(&op.write_status("00:41")).summary, "1/1");
    // A restart keeps the new generation's count.
    let mut op = op.restarted();
    op.run("p3", "ccc", "00:40", Evidence::Events, "01:00");
    assert_eq!(post(&op.write_status("01:00")).summary, "1/1");
}

#[test]
fn a_policy_created_again_under_the_same_name_starts_afresh() {
    let mut op = Operator::new();
    two_running(&mut op, "00:02");
    assert_eq!(post(&op.write_status("00:02")).ran, 2);
    op.uid = "policy-uid-2";
    op.status = None;
    assert_eq!(post(&op.write_status("00:03")).summary, "0/0");
}

#[test]
fn the_record_stays_bounded_in_a_burst() {
    let mut op = Operator::new();
    for i in 0..1000 {
        let (p, id) = (format!("p{i}"), format!("{i:016x}"));
        op.run(&p, &id, "00:01", Evidence::Events, "00:02");
    }
    let s = op.write_status("00:02");
    assert_eq!(post(&s).implied, 1000);
    let w = post(&s).counted.as_ref().unwrap();
    assert!(w.after.len() <= MAX_AFTER, "{}", w.after.len());
    // All started in the same second: folded under the watermark.
    assert!(w.before.0 > t("00:01"), "{w:?}");
    let mut op = op.restarted();
    for i in 0..1000 {
        let (p, id) = (format!("p{i}"), format!("{i:016x}"));
        op.run(&p, &id, "00:01", Evidence::Events, "01:00");
    }
    assert_eq!(post(&op.write_status("01:00")).implied, 1000);
}

#[test]
fn the_watermark_waits_for_pending_instances_and_lags_the_clock() {
    let mut op = Operator::new();
    // p1's marker read is slow; p2 is counted meanwhile, minutes later.
    op.run("p1", "aaa", "00:01", Evidence::Marker, "00:02");
    op.run("p2", "bbb", "03:00", Evidence::Events, "03:01");
    let s = op.write_status("03:01");
    let w = post(&s).counted.clone().unwrap();
    assert_eq!(w.before.0, t("00:01"), "not past the pending p1");
    assert_eq!(w.after.len(), 1);
    op.index.markers(
        &key("p1", "aaa"),
        HookKind::PostStart,
        ended(0, "00:01", "00:02"),
        t("03:02"),
    );
    let s = op.write_status("03:02");
    let w = post(&s).counted.clone().unwrap();
    assert_eq!(w.before.0, t("02:32"), "30 s behind the clock");
    assert_eq!(
        w.after,
        vec![CountedInstance {
            container_id: "bbb".into(),
            at: Time(t("03:00"))
        }]
    );
}

#[test]
fn short_ids_drop_the_runtime_prefix() {
    assert_eq!(
        short_id("containerd://0123456789abcdef0123"),
        "0123456789abcdef"
    );
    assert_eq!(short_id("abc"), "abc");
}

/// `pod` owned by `kind`/`owner` (a ReplicaSet for a Deployment).
fn owned(mut p: Pod, kind: &str, owner: &str) -> Pod {
    p.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": "o", "controller": true}))
            .unwrap(),
    ]);
    p.metadata.labels = Some([("pod-template-hash".to_string(), "7d9f8c".to_string())].into());
    p
}

#[test]
fn pods_are_attributed_to_their_workload() {
    let p = pod("p1", running("aaa", "00:01"), None);
    assert_eq!(
        workload_of(&owned(p.clone(), "ReplicaSet", "web-7d9f8c")).as_deref(),
        Some("Deployment/web")
    );
    assert_eq!(
        workload_of(&owned(p.clone(), "StatefulSet", "db")).as_deref(),
        Some("StatefulSet/db")
    );
    assert_eq!(
        workload_of(&owned(p.clone(), "DaemonSet", "edge")).as_deref(),
        Some("DaemonSet/edge")
    );
    // A ReplicaSet of no Deployment (no hash suffix), a Job, a bare pod: none.
    assert_eq!(
        workload_of(&owned(p.clone(), "ReplicaSet", "standalone")),
        None
    );
    assert_eq!(workload_of(&owned(p.clone(), "Job", "j")), None);
    assert_eq!(workload_of(&p), None);
}

#[test]
fn each_workload_gets_its_successes_and_its_latest_failure() {
    let mut op = Operator::new();
    let web = |p: Pod| owned(p, "ReplicaSet", "web-7d9f8c");
    let db = |p: Pod| owned(p, "StatefulSet", "db");
    op.pod(
        &web(pod("p1", running("aaa", "00:01"), None)),
        Evidence::Events,
        "00:05",
    );
    op.pod(
        &web(pod("p2", running("bbb", "00:01"), None)),
        Evidence::Events,
        "00:05",
    );
    op.pod(
        &db(pod(
            "p3",
            waiting_after_failure("ccc", "exec: exit 1"),
            None,
        )),
        Evidence::Events,
        "00:05",
    );
    op.index.event(
        failure("e1", "p3", HookKind::PostStart, 1, "00:04"),
        t("00:05"),
    );
    op.pod(
        &db(pod(
            "p3",
            waiting_after_failure("ccc", "exec: exit 1"),
            None,
        )),
        Evidence::Events,
        "00:06",
    );
    let h = op.index.workload_health(POLICY, Some(1));
    assert_eq!(
        h[&"Deployment/web".parse::<WorkloadKey>().unwrap()].post_start_ok,
        2
    );
    assert_eq!(
        h[&"Deployment/web".parse::<WorkloadKey>().unwrap()].failure,
        None
    );
    let f = h[&"StatefulSet/db".parse::<WorkloadKey>().unwrap()]
        .failure
        .clone()
        .expect("a failure");
    assert_eq!((f.pod.as_str(), f.container.as_str()), ("web-p3", "nginx"));
    assert_eq!(f.reason, "FailedPostStartHook");
    // Results of another generation say nothing about this one.
    assert!(op.index.workload_health(POLICY, Some(2)).is_empty());

    // A restarted operator: instances the status holds count as successes
    // (had one failed, the halt would have been written with its count).
    op.write_status("00:40");
    let mut next = op.restarted();
    next.pod(
        &web(pod("p1", running("aaa", "00:01"), None)),
        Evidence::Events,
        "01:00",
    );
    assert_eq!(
        next.index.workload_health(POLICY, Some(1))
            [&"Deployment/web".parse::<WorkloadKey>().unwrap()]
            .post_start_ok,
        1
    );
}

// ---- Bounded memory, whatever arrives. ----

/// A core Event as anyone allowed to create Events in `ns` could write it.
fn core_event(ns: &str, uid: &str, pod_uid: &str, message: &str) -> Event {
    serde_json::from_value(json!({
        "metadata": {"name": format!("ev-{uid}"), "namespace": ns, "uid": uid},
        "involvedObject": {"kind": "Pod", "namespace": ns, "name": format!("web-{pod_uid}"), "uid": pod_uid,
                           "fieldPath": "spec.containers{nginx}"},
        "reason": "FailedPreStopHook", "type": "Warning", "message": message,
        "source": {"component": "kubelet", "host": "node-1"},
        "count": 1,
    }))
    .unwrap()
}

#[test]
fn an_event_is_bounded_on_arrival() {
    let huge = "é".repeat(128 * 1024); // 256 KiB, two bytes a character
    let ev = FailureEvent::from_event(&core_event("web", "ev1", "p1", &huge)).unwrap();
    assert!(ev.message.len() <= MAX_MESSAGE + 32, "{}", ev.message.len());
    assert!(ev.message.starts_with("éé") && ev.message.ends_with("éé"));
    assert_eq!(
        (ev.pod_uid.as_str(), ev.container.as_str()),
        ("p1", "nginx")
    );
    assert_eq!(ev.reason, "FailedPreStopHook");
    // Names longer than the API allows are cut too (they then match nothing).
    let long = "u".repeat(100_000);
    let ev = FailureEvent::from_event(&core_event(&long, &long, &long, "m")).unwrap();
    assert!(ev.uid.len() <= 253 && ev.namespace.len() <= 253 && ev.pod_uid.len() <= 253);
    // Not a hook failure on a container: nothing.
    let mut other = core_event("web", "ev2", "p1", "m");
    other.reason = Some("BackOff".into());
    assert_eq!(FailureEvent::from_event(&other), None);
    let mut no_container = core_event("web", "ev3", "p1", "m");
    no_container.involved_object.field_path = Some("spec".into());
    assert_eq!(FailureEvent::from_event(&no_container), None);
}

#[test]
fn unclaimed_events_are_capped_per_namespace_and_in_all() {
    let mut op = Operator::new();
    op.index.policy(
        &PolicyRecord {
            key: POLICY,
            uid: Some(UID),
            generation: Some(1),
            status: None,
        },
        t("00:00"),
    );
    // A real failure ahead of its pod, in web.
    op.index.event(
        failure("real", "p1", HookKind::PostStart, 1, "00:01"),
        t("00:01"),
    );
    // 300 events naming pods that do not exist, from another namespace:
    // they push out only their own namespace's oldest.
    for i in 0..300 {
        let mut ev = failure(
            &format!("evil-{i}"),
            &format!("nope-{i}"),
            HookKind::PreStop,
            1,
            "00:02",
        );
        ev.namespace = "evil".into();
        op.index.event(ev, t("00:02"));
    }
    assert_eq!(op.index.unclaimed(), 1 + MAX_UNCLAIMED_PER_NAMESPACE);
    assert_eq!(
        op.index.take_dropped(),
        (300 - MAX_UNCLAIMED_PER_NAMESPACE) as u64
    );
    assert_eq!(op.index.take_dropped(), 0, "reported once");
    // The real one still finds its instance.
    op.pod(
        &pod("p1", waiting_after_failure("aaa", "boom"), None),
        Evidence::Events,
        "00:03",
    );
    assert_eq!(post(&op.write_status("00:03")).failed, 1);
    // Many namespaces, each within its share: the total cap holds.
    for n in 0..40 {
        for i in 0..MAX_UNCLAIMED_PER_NAMESPACE {
            let mut ev = failure(
                &format!("ns{n}-{i}"),
                &format!("x{n}-{i}"),
                HookKind::PreStop,
                1,
                "00:04",
            );
            ev.namespace = format!("ns{n}");
            op.index.event(ev, t("00:04"));
        }
    }
    assert_eq!(op.index.unclaimed(), MAX_UNCLAIMED);
    // And they expire.
    op.index.event(
        failure("late", "zz", HookKind::PreStop, 1, "00:04"),
        t("02:10"),
    );
    assert_eq!(op.index.unclaimed(), 1);
}

#[test]
fn a_crash_looping_container_holds_two_instances_not_one_per_restart() {
    let mut op = Operator::new();
    let crashed = |id: &str, prev: &str| {
        let mut status = running(id, "00:01");
        status["restartCount"] = json!(1);
        status["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error",
            "containerID": format!("containerd://{prev}"),
            "startedAt": "2025-01-01T12:00:00Z", "finishedAt": "2025-01-01T12:00:01Z"}});
        pod("p1", status, None)
    };
    op.run("p1", "c0", "00:01", Evidence::Events, "00:01");
    for i in 1..50 {
        op.pod(
            &crashed(&format!("c{i}"), &format!("c{}", i - 1)),
            Evidence::Events,
            "00:02",
        );
        assert!(
            op.index.len() <= 2,
            "restart {i}: {} instances",
            op.index.len()
        );
    }
    // Every instance's postStart counted once (implied), its preStop not triggered.
    let s = op.write_status("00:03");
    assert_eq!(post(&s).implied, 50);
    assert_eq!(pre(&s).not_triggered, 49);
}

#[test]
fn a_waiting_message_is_bounded() {
    let mut op = Operator::new();
    let msg = format!("head {} tail", "😀".repeat(100_000));
    op.pod(
        &pod("p1", waiting_after_failure("aaa", &msg), None),
        Evidence::Events,
        "00:02",
    );
    op.index.event(
        failure("ev1", "p1", HookKind::PostStart, 1, "00:02"),
        t("00:02"),
    );
    let s = op.write_status("00:03");
    let m = &post(&s).last_failure.as_ref().unwrap().message;
    assert!(m.len() <= MAX_MESSAGE + 32 && m.starts_with("head ") && m.ends_with(" tail"));
}

// ---- Proof that events from elsewhere cannot fake. ----

#[test]
fn only_the_kubelets_events_on_a_pod_of_their_own_namespace_are_failures() {
    let good = core_event("web", "ev1", "p1", "m");
    let ev = FailureEvent::from_event(&good).unwrap();
    assert_eq!(
        (ev.namespace.as_str(), ev.pod.as_str(), ev.pod_uid.as_str()),
        ("web", "web-p1", "p1")
    );
    // The newer events API's reporting controller names the kubelet too.
    let mut reporting = good.clone();
    reporting.source = None;
    reporting.reporting_component = Some("kubelet".into());
    assert!(FailureEvent::from_event(&reporting).is_some());
    let mut cases: Vec<(&str, Event)> = Vec::new();
    let mut e = good.clone();
    e.source = None;
    cases.push(("no source", e));
    let mut e = good.clone();
    e.source.as_mut().unwrap().component = Some("my-app".into());
    cases.push(("another source", e));
    let mut e = good.clone();
    e.involved_object.kind = Some("Deployment".into());
    cases.push(("not a pod", e));
    let mut e = good.clone();
    e.involved_object.kind = None;
    cases.push(("no kind", e));
    let mut e = good.clone();
    e.involved_object.namespace = Some("other".into());
    cases.push(("a pod of another namespace", e));
    let mut e = good.clone();
    e.involved_object.name = None;
    cases.push(("no pod name", e));
    let mut e = good.clone();
    e.metadata.namespace = None;
    cases.push(("no namespace", e));
    for (what, e) in cases {
        assert_eq!(FailureEvent::from_event(&e), None, "{what}");
    }
}

#[test]
fn a_failure_event_must_name_the_pods_namespace_name_and_uid() {
    let waiting = || pod("p1", waiting_after_failure("aaa", "boom"), None);
    let mut op = Operator::new();
    op.pod(&waiting(), Evidence::Events, "00:02");
    // Forged: the right UID, from another namespace (where its author may
    // create Events), or naming another pod or container.
    let mut other_ns = failure("f1", "p1", HookKind::PostStart, 1, "00:02");
    other_ns.namespace = "evil".into();
    let mut other_pod = failure("f2", "p1", HookKind::PostStart, 1, "00:02");
    other_pod.pod = "web-p2".into();
    let mut other_container = failure("f3", "p1", HookKind::PostStart, 1, "00:02");
    other_container.container = "sidecar".into();
    for ev in [other_ns, other_pod, other_container] {
        op.index.event(ev, t("00:02"));
    }
    assert_eq!(post(&op.write_status("00:03")).summary, "0/0");
    // The container then runs: its postStart is implied, nothing failed.
    op.run("p1", "aaa", "00:04", Evidence::Events, "00:04");
    let s = op.write_status("00:05");
    assert_eq!(
        (post(&s).implied, post(&s).failed),
        (1, 0),
        "{:?}",
        post(&s)
    );
    // Waiting forgeries never reach a later instance either.
    op.run("p1", "bbb", "00:06", Evidence::Events, "00:06");
    let s = op.write_status("00:07");
    assert_eq!((post(&s).implied, post(&s).failed), (2, 0));
    // The real one does count.
    let mut op = Operator::new();
    op.pod(&waiting(), Evidence::Events, "00:02");
    op.index.event(
        failure("real", "p1", HookKind::PostStart, 1, "00:02"),
        t("00:02"),
    );
    assert_eq!(post(&op.write_status("00:03")).failed, 1);
}

#[test]
fn a_log_read_looks_for_the_token_of_the_hook_on_the_pod() {
    let mut op = Operator::new();
    op.run("p1", "aaa", "00:01", Evidence::Marker, "00:02");
    let target = op
        .index
        .log_target(&key("p1", "aaa"), HookKind::PostStart)
        .unwrap();
    assert_eq!(
        target,
        LogTarget {
            namespace: "web".into(),
            pod: "web-p1".into(),
            policy: POLICY.into(),
            token: 0x5eed,
        }
    );
}

#[test]
fn applied_events_are_remembered_within_caps_that_one_namespace_cannot_exhaust() {
    let mut op = failed_post_start("real");
    assert_eq!(post(&op.write_status("00:03")).failed, 1);
    // Another namespace floods the memory of applied events, past the total
    // (which used to forget every namespace's at once).
    for i in 0..MAX_SEEN + 2000 {
        let mut ev = failure(&format!("evil-{i}"), "nope", HookKind::PreStop, 1, "00:04");
        ev.namespace = "evil".into();
        op.index.event(ev, t("00:04"));
    }
    assert_eq!(op.index.events_seen(), 1 + MAX_SEEN_PER_NAMESPACE);
    // The container restarts; the real event, listed again while the new
    // instance's postStart is still open, is still known as applied: it
    // does not fail the new instance.
    op.pod(
        &pod("p1", waiting_after_failure("bbb", "starting"), None),
        Evidence::Events,
        "00:20",
    );
    op.index.event(
        failure("real", "p1", HookKind::PostStart, 1, "00:02"),
        t("00:21"),
    );
    op.run("p1", "bbb", "00:21", Evidence::Events, "00:21");
    let s = op.write_status("00:22");
    assert_eq!(
        (post(&s).failed, post(&s).implied),
        (1, 1),
        "{:?}",
        post(&s)
    );
    // Many namespaces: the total holds.
    for n in 0..20 {
        for i in 0..MAX_SEEN_PER_NAMESPACE {
            let mut ev = failure(&format!("e{n}-{i}"), "nope", HookKind::PreStop, 1, "00:30");
            ev.namespace = format!("ns{n}");
            op.index.event(ev, t("00:30"));
        }
    }
    assert!(op.index.events_seen() <= MAX_SEEN);
    // A count that grew is applied again (the kubelet aggregates repeats).
    let mut again = failure("real", "p1", HookKind::PostStart, 2, "00:40");
    again.time = Some(t("00:40"));
    assert!(op.index.remember(&again));
    assert!(!op.index.remember(&again));
}
