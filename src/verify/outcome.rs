//! What happened to one hook in one container instance, pure: classifies what
//! reconcile observed (marker lines, kubelet events, container states, the
//! pod's deletion) into an [`Outcome`].

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::names::reason;
use crate::hooks::marker::Evidence;

/// preStop durations at or above this share of the grace period in force are
/// flagged (GracePeriodTooShort): the process gets little time after the hook.
pub const NEAR_GRACE: f64 = 0.8;

/// Everything observed about one hook in one container instance.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// How the hook's running can be proven (see `marker::wrap`).
    pub evidence: Evidence,
    /// rc of the end marker line seen in the container's log.
    pub marker_rc: Option<i32>,
    /// The start marker line was seen, with its log timestamp when known.
    pub marker_started: Option<Option<Timestamp>>,
    /// The timestamp of the last line a preStop log follow read: the
    /// container was still running then.
    pub last_log_at: Option<Timestamp>,
    /// A kubelet Warning event FailedPostStartHook / FailedPreStopHook for
    /// this container instance.
    pub failure_event: bool,
    /// Best detail on the failure: the container's waiting.message for
    /// PostStartHookError, else the event's message.
    pub failure_message: Option<String>,
    /// This container instance reached state running.
    pub running: bool,
    /// This container instance terminated.
    pub terminated: Option<Terminated>,
    /// The pod is being deleted.
    pub deletion: Option<Deletion>,
}

/// A container instance's terminated state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: Option<String>,
    pub finished_at: Option<Timestamp>,
}

/// A pod's deletion: when it was requested and the grace period it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletion {
    pub requested_at: Timestamp,
    pub grace_seconds: i64,
}

impl Deletion {
    /// From the pod's metadata: the API server sets deletionTimestamp to the
    /// request time plus the grace period (deletionGracePeriodSeconds), and
    /// keeps the request time when a later delete shortens the period. Once
    /// the containers have stopped the kubelet deletes the pod for good with
    /// grace 0, which the pod's last update shows: that 0 is not the period
    /// the containers had, so it reads the spec's (`spec_grace`) instead.
    pub fn from_pod(
        deletion_timestamp: Timestamp,
        grace_seconds: i64,
        spec_grace: i64,
    ) -> Option<Self> {
        let requested_at = deletion_timestamp
            .checked_sub(SignedDuration::from_secs(grace_seconds))
            .ok()?;
        Some(Deletion {
            requested_at,
            grace_seconds: if grace_seconds > 0 {
                grace_seconds
            } else {
                spec_grace
            },
        })
    }

    /// The period the kubelet actually gives: a later delete may shorten it.
    pub fn merge(self, later: &Deletion) -> Deletion {
        if later.grace_seconds < self.grace_seconds && later.requested_at == self.requested_at {
            later.clone()
        } else {
            self
        }
    }

    /// From when on a stopped container counts as killed at the end of the
    /// grace period. Container timestamps have whole-second precision, so a
    /// kill at the deadline can read up to 1 s early. None: out of range, never.
    fn cut_off(&self) -> Option<Timestamp> {
        let secs = self.grace_seconds.checked_sub(1)?;
        self.requested_at
            .checked_add(SignedDuration::from_secs(secs))
            .ok()
    }

    /// The container finished when the kubelet ran out of grace period.
    fn used_whole_grace(&self, t: &Terminated) -> bool {
        matches!((t.finished_at, self.cut_off()), (Some(f), Some(c)) if f >= c)
    }
}

/// What happened to one hook in one container instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It ran: "marker" (a marker with rc 0) or "events" (preStop: the pod was
    /// deleted, the container stopped in time, no failure event).
    Ran {
        evidence: &'static str,
    },
    /// postStart: the container runs and no failure was reported; no marker
    /// says so directly.
    Implied,
    Failed {
        reason: String,
        message: String,
    },
    /// preStop: cut off by the end of the grace period.
    TimedOut,
    /// preStop: the hook stopped its own container (as `nginx -s quit` does
    /// when nginx is PID 1), which exited cleanly before the grace period
    /// ended. The hook's shell died with the container, so the kubelet
    /// reports FailedPreStopHook, but the hook did its job. Counted as ran.
    StoppedContainer {
        exit_code: i32,
        /// From the hook's start marker to the container's exit.
        after: Option<SignedDuration>,
    },
    /// preStop: not run, because the container exited on its own.
    NotTriggered {
        why: String,
    },
    /// Nothing conclusive yet.
    Pending,
    /// The container reached a final state, but nothing shows either way.
    Unknown {
        why: String,
    },
}

/// Marker evidence of a completed run, or of a failed one.
fn from_marker(rc: Option<i32>) -> Option<Outcome> {
    match rc? {
        0 => Some(Outcome::Ran { evidence: "marker" }),
        rc => Some(Outcome::Failed {
            reason: reason::EXIT_CODE.into(),
            message: format!("exited with rc {rc}"),
        }),
    }
}

fn failed(o: &Observation, reason: &str, default: &str) -> Outcome {
    Outcome::Failed {
        reason: reason.into(),
        message: o.failure_message.clone().unwrap_or_else(|| default.into()),
    }
}

/// Classifies a postStart hook. A failure event beats a marker: the kubelet
/// kills the container when it reports the hook failed, whatever the script said.
pub fn post_start(o: &Observation) -> Outcome {
    if o.failure_event {
        return failed(o, reason::FAILED_POST_START_HOOK, "PostStartHook failed");
    }
    if let Some(outcome) = from_marker(o.marker_rc) {
        return outcome;
    }
    if o.running {
        return Outcome::Implied;
    }
    if o.terminated.is_some() {
        return Outcome::Unknown {
            why: "container ended before it was reported running".into(),
        };
    }
    Outcome::Pending
}

/// Classifies a preStop hook. A marker with rc 0 beats a failure event: it
/// proves the script completed, while the event may come from the delivery
/// (e.g. an exec stream cut when the container stopped).
pub fn pre_stop(o: &Observation) -> Outcome {
    if o.marker_rc == Some(0) {
        return Outcome::Ran { evidence: "marker" };
    }
    // A hook cut by the grace period also ends in a failure event (its exec
    // is killed with the container): the cut is what happened.
    // (A marker with rc != 0 means the script ended by itself, before the cut.)
    if let (None, Some(t), Some(d)) = (o.marker_rc, &o.terminated, &o.deletion)
        && d.used_whole_grace(t)
    {
        return Outcome::TimedOut;
    }
    if let Some(stopped) = stopped_its_container(o) {
        return stopped;
    }
    if o.failure_event {
        return failed(o, reason::FAILED_PRE_STOP_HOOK, "PreStopHook failed");
    }
    if let Some(outcome) = from_marker(o.marker_rc) {
        return outcome;
    }
    // Direct evidence above comes first: the kubelet also runs preStop when it
    // kills a container for a failed liveness or startup probe, with no pod
    // deletion. Without such evidence, a container that ended while its pod
    // was not being deleted is taken to have exited on its own.
    let Some(t) = &o.terminated else {
        return Outcome::Pending;
    };
    let Some(deletion) = &o.deletion else {
        return Outcome::NotTriggered {
            why: exited_on_its_own(t),
        };
    };
    if deletion.used_whole_grace(t) {
        return Outcome::TimedOut;
    }
    match o.evidence {
        Evidence::Events => Outcome::Ran { evidence: "events" },
        Evidence::Marker => Outcome::Unknown {
            why: "no marker in the container's log".into(),
        },
    }
}

/// Exit codes of a clean stop: 0, or death by a stop signal (SIGINT,
/// SIGQUIT, SIGTERM) that the process asked for by handling it.
const CLEAN_EXITS: [i32; 4] = [0, 128 + 2, 128 + 3, 128 + 15];

/// A preStop that began (start marker) and never ended (no end marker) while
/// its pod was being deleted, in a container that exited cleanly before the
/// grace period ran out: the hook's script stopped the container, and died
/// with it. Marker evidence only: with events alone, a hook that failed by
/// itself, followed by a clean exit on SIGTERM, looks the same.
fn stopped_its_container(o: &Observation) -> Option<Outcome> {
    let started_at = o.marker_started?;
    let (t, d) = (o.terminated.as_ref()?, o.deletion.as_ref()?);
    if o.evidence != Evidence::Marker
        || o.marker_rc.is_some()
        || !CLEAN_EXITS.contains(&t.exit_code)
        || d.used_whole_grace(t)
    {
        return None;
    }
    // Both are lower bounds of the exit: finishedAt is truncated to the
    // second, the last log line came before it.
    let stopped = t.finished_at.max(o.last_log_at);
    let after = match (started_at, stopped) {
        (Some(s), Some(f)) => Some(f.duration_since(s)),
        _ => None,
    };
    Some(Outcome::StoppedContainer {
        exit_code: t.exit_code,
        after,
    })
}

/// Explains a [`Outcome::StoppedContainer`] for the status.
pub fn explain_stopped_container(exit_code: i32, after: Option<SignedDuration>) -> String {
    // At or below zero: only second-precision times were at hand.
    let when = match after.map(|a| a.as_secs_f64()) {
        Some(s) if s > 0.0 => format!(" {s:.2}s after the hook began"),
        Some(_) => " within a second after the hook began".to_string(),
        None => String::new(),
    };
    format!(
        "the hook stopped its own container: it exited with code {exit_code}{when}, before the grace period ended, and the hook's shell ended with it (so the kubelet reported FailedPreStopHook)"
    )
}

fn exited_on_its_own(t: &Terminated) -> String {
    let reason = t
        .reason
        .as_deref()
        .map(|r| format!(", reason {r}"))
        .unwrap_or_default();
    format!(
        "container exited on its own (exit code {}{reason}); Kubernetes runs preStop only when it stops a container",
        t.exit_code
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: i64 = 30;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// Deletion requested at 12:00:00 with 30 s grace: the deadline is 12:00:30.
    fn deletion() -> Option<Deletion> {
        Some(Deletion {
            requested_at: at("2025-01-01T12:00:00Z"),
            grace_seconds: GRACE,
        })
    }

    fn term(exit_code: i32, reason: Option<&str>, finished_at: Option<&str>) -> Option<Terminated> {
        Some(Terminated {
            exit_code,
            reason: reason.map(Into::into),
            finished_at: finished_at.map(at),
        })
    }

    fn ended(finished_at: &str) -> Option<Terminated> {
        term(0, Some("Completed"), Some(finished_at))
    }

    fn ran(evidence: &'static str) -> Outcome {
        Outcome::Ran { evidence }
    }

    fn failed(reason: &str, message: &str) -> Outcome {
        Outcome::Failed {
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn unknown(why: &str) -> Outcome {
        Outcome::Unknown { why: why.into() }
    }

    fn not_triggered(detail: &str) -> Outcome {
        Outcome::NotTriggered {
            why: format!(
                "container exited on its own ({detail}); Kubernetes runs preStop only when it stops a container"
            ),
        }
    }

    fn obs() -> Observation {
        Observation::default()
    }

    fn marker_mode() -> Observation {
        Observation {
            evidence: Evidence::Marker,
            ..obs()
        }
    }

    #[test]
    fn observation_defaults_to_events_evidence() {
        assert_eq!(obs().evidence, Evidence::Events);
    }

    #[test]
    fn post_start_table() {
        let event = |msg: Option<&str>| Observation {
            failure_event: true,
            failure_message: msg.map(Into::into),
            ..marker_mode()
        };
        let cases: Vec<(&str, Observation, Outcome)> = vec![
            ("nothing yet", obs(), Outcome::Pending),
            ("nothing yet, marker mode", marker_mode(), Outcome::Pending),
            (
                "event without detail",
                event(None),
                failed("FailedPostStartHook", "PostStartHook failed"),
            ),
            (
                "event with detail",
                event(Some("exited with 126: oops")),
                failed("FailedPostStartHook", "exited with 126: oops"),
            ),
            (
                "event beats marker rc 0",
                Observation {
                    marker_rc: Some(0),
                    running: true,
                    ..event(Some("boom"))
                },
                failed("FailedPostStartHook", "boom"),
            ),
            (
                "event beats marker rc 1",
                Observation {
                    marker_rc: Some(1),
                    ..event(None)
                },
                failed("FailedPostStartHook", "PostStartHook failed"),
            ),
            (
                "event and terminated",
                Observation {
                    terminated: term(137, Some("Error"), None),
                    ..event(Some("boom"))
                },
                failed("FailedPostStartHook", "boom"),
            ),
            (
                "marker rc 1",
                Observation {
                    marker_rc: Some(1),
                    running: true,
                    ..marker_mode()
                },
                failed("ExitCode", "exited with rc 1"),
            ),
            (
                "marker rc 137",
                Observation {
                    marker_rc: Some(137),
                    ..marker_mode()
                },
                failed("ExitCode", "exited with rc 137"),
            ),
            (
                "marker rc 0",
                Observation {
                    marker_rc: Some(0),
                    ..marker_mode()
                },
                ran("marker"),
            ),
            (
                "marker rc 0, running",
                Observation {
                    marker_rc: Some(0),
                    running: true,
                    ..marker_mode()
                },
                ran("marker"),
            ),
            (
                "marker rc 0, since terminated",
                Observation {
                    marker_rc: Some(0),
                    terminated: term(0, None, None),
                    ..marker_mode()
                },
                ran("marker"),
            ),
            (
                "running, events mode",
                Observation {
                    running: true,
                    ..obs()
                },
                Outcome::Implied,
            ),
            (
                "running, marker mode, no marker",
                Observation {
                    running: true,
                    ..marker_mode()
                },
                Outcome::Implied,
            ),
            (
                "running, then terminated",
                Observation {
                    running: true,
                    terminated: term(1, Some("Error"), None),
                    ..obs()
                },
                Outcome::Implied,
            ),
            (
                "terminated, never running",
                Observation {
                    terminated: term(1, Some("Error"), None),
                    ..obs()
                },
                unknown("container ended before it was reported running"),
            ),
            (
                "terminated, never running, marker mode",
                Observation {
                    terminated: term(0, None, None),
                    ..marker_mode()
                },
                unknown("container ended before it was reported running"),
            ),
            (
                "pod deleted, nothing else",
                Observation {
                    deletion: deletion(),
                    ..obs()
                },
                Outcome::Pending,
            ),
        ];
        for (name, o, want) in cases {
            assert_eq!(post_start(&o), want, "{name}");
        }
    }

    #[test]
    fn pre_stop_table() {
        let deleted_ended = |finished_at: &str, evidence: Evidence| Observation {
            evidence,
            deletion: deletion(),
            terminated: ended(finished_at),
            ..obs()
        };
        let cases: Vec<(&str, Observation, Outcome)> = vec![
            ("nothing yet", obs(), Outcome::Pending),
            (
                "running, not deleted",
                Observation {
                    running: true,
                    ..marker_mode()
                },
                Outcome::Pending,
            ),
            (
                "deleted, still running",
                Observation {
                    running: true,
                    deletion: deletion(),
                    ..obs()
                },
                Outcome::Pending,
            ),
            (
                "deleted, still running, marker mode",
                Observation {
                    running: true,
                    deletion: deletion(),
                    ..marker_mode()
                },
                Outcome::Pending,
            ),
            // Exited on its own.
            (
                "exit 0 with reason",
                Observation {
                    running: true,
                    terminated: term(0, Some("Completed"), Some("2025-01-01T12:00:05Z")),
                    ..obs()
                },
                not_triggered("exit code 0, reason Completed"),
            ),
            (
                "exit 1 with reason, marker mode",
                Observation {
                    terminated: term(1, Some("Error"), None),
                    ..marker_mode()
                },
                not_triggered("exit code 1, reason Error"),
            ),
            (
                "exit 137 without reason",
                Observation {
                    terminated: term(137, None, None),
                    ..obs()
                },
                not_triggered("exit code 137"),
            ),
            // Direct evidence wins, deleted or not (probe kills run preStop too).
            (
                "marker rc 0, not deleted",
                Observation {
                    marker_rc: Some(0),
                    terminated: term(137, Some("Error"), None),
                    ..marker_mode()
                },
                ran("marker"),
            ),
            (
                "event, not deleted",
                Observation {
                    failure_event: true,
                    terminated: term(137, Some("Error"), None),
                    ..obs()
                },
                failed("FailedPreStopHook", "PreStopHook failed"),
            ),
            (
                "marker rc 2, not deleted",
                Observation {
                    marker_rc: Some(2),
                    terminated: term(0, None, None),
                    ..marker_mode()
                },
                failed("ExitCode", "exited with rc 2"),
            ),
            (
                "marker rc 0 before anything else",
                Observation {
                    marker_rc: Some(0),
                    ..marker_mode()
                },
                ran("marker"),
            ),
            (
                "marker rc 0 beats event",
                Observation {
                    marker_rc: Some(0),
                    failure_event: true,
                    failure_message: Some("stream closed".into()),
                    deletion: deletion(),
                    terminated: ended("2025-01-01T12:00:03Z"),
                    ..marker_mode()
                },
                ran("marker"),
            ),
            (
                "marker rc 0 beats the grace period running out",
                Observation {
                    marker_rc: Some(0),
                    ..deleted_ended("2025-01-01T12:00:30Z", Evidence::Marker)
                },
                ran("marker"),
            ),
            (
                "event beats marker rc 1, and carries its message",
                Observation {
                    marker_rc: Some(1),
                    failure_event: true,
                    failure_message: Some("exited with 1: bye".into()),
                    deletion: deletion(),
                    ..marker_mode()
                },
                failed("FailedPreStopHook", "exited with 1: bye"),
            ),
            (
                "the grace period running out beats the event (the cut kills the exec)",
                Observation {
                    failure_event: true,
                    ..deleted_ended("2025-01-01T12:00:30Z", Evidence::Events)
                },
                Outcome::TimedOut,
            ),
            (
                "marker rc 1",
                Observation {
                    marker_rc: Some(1),
                    deletion: deletion(),
                    ..marker_mode()
                },
                failed("ExitCode", "exited with rc 1"),
            ),
            (
                "marker rc 137 beats the grace period running out",
                Observation {
                    marker_rc: Some(137),
                    ..deleted_ended("2025-01-01T12:00:30Z", Evidence::Marker)
                },
                failed("ExitCode", "exited with rc 137"),
            ),
            // Deleted and stopped: did it use the whole grace period (deadline 12:00:30)?
            (
                "stopped early, events",
                deleted_ended("2025-01-01T12:00:05Z", Evidence::Events),
                ran("events"),
            ),
            (
                "stopped early, marker mode, no marker",
                deleted_ended("2025-01-01T12:00:05Z", Evidence::Marker),
                unknown("no marker in the container's log"),
            ),
            (
                "stopped just under 1 s before the deadline",
                deleted_ended("2025-01-01T12:00:28.999Z", Evidence::Events),
                ran("events"),
            ),
            (
                "stopped 1 s before the deadline",
                deleted_ended("2025-01-01T12:00:29Z", Evidence::Events),
                Outcome::TimedOut,
            ),
            (
                "stopped at the deadline",
                deleted_ended("2025-01-01T12:00:30Z", Evidence::Events),
                Outcome::TimedOut,
            ),
            (
                "stopped at the deadline, marker mode",
                deleted_ended("2025-01-01T12:00:30Z", Evidence::Marker),
                Outcome::TimedOut,
            ),
            (
                "stopped just after the deadline",
                deleted_ended("2025-01-01T12:00:30.001Z", Evidence::Events),
                Outcome::TimedOut,
            ),
            (
                "stopped well after the deadline",
                deleted_ended("2025-01-01T12:01:00Z", Evidence::Events),
                Outcome::TimedOut,
            ),
            (
                "stopped early with exit 137: timing decides, not the code",
                Observation {
                    terminated: term(137, Some("Error"), Some("2025-01-01T12:00:02Z")),
                    deletion: deletion(),
                    ..obs()
                },
                ran("events"),
            ),
            (
                "stopped early with exit 1",
                Observation {
                    terminated: term(1, Some("Error"), Some("2025-01-01T12:00:02Z")),
                    deletion: deletion(),
                    ..obs()
                },
                ran("events"),
            ),
            (
                "no finishedAt: no timeout can be shown",
                Observation {
                    terminated: term(137, None, None),
                    deletion: deletion(),
                    ..obs()
                },
                ran("events"),
            ),
            (
                "no finishedAt, marker mode",
                Observation {
                    terminated: term(137, None, None),
                    deletion: deletion(),
                    ..marker_mode()
                },
                unknown("no marker in the container's log"),
            ),
            (
                "grace period beyond the representable range",
                Observation {
                    deletion: Some(Deletion {
                        requested_at: at("2025-01-01T12:00:00Z"),
                        grace_seconds: i64::MAX,
                    }),
                    terminated: ended("2025-01-01T12:00:30Z"),
                    ..obs()
                },
                ran("events"),
            ),
            (
                "grace period 0: any stop is at the deadline",
                Observation {
                    deletion: Some(Deletion {
                        requested_at: at("2025-01-01T12:00:00Z"),
                        grace_seconds: 0,
                    }),
                    terminated: ended("2025-01-01T12:00:00Z"),
                    ..obs()
                },
                Outcome::TimedOut,
            ),
        ];
        for (name, o, want) in cases {
            assert_eq!(pre_stop(&o), want, "{name}");
        }
    }

    /// The seed's `nginx -s quit; while killall -0 nginx; ...`: nginx (PID 1)
    /// quits, the kernel kills the hook's shell, the kubelet reports
    /// FailedPreStopHook. Deleted at 12:00:00 with 30 s grace.
    #[test]
    fn a_hook_that_stops_its_container() {
        let started = Some(Some(at("2025-01-01T12:00:00.200Z")));
        let nginx = |exit_code: i32, finished_at: &str| Observation {
            evidence: Evidence::Marker,
            marker_started: started,
            failure_event: true,
            failure_message: Some("PreStopHook failed".into()),
            running: true,
            deletion: deletion(),
            terminated: term(exit_code, Some("Completed"), Some(finished_at)),
            ..obs()
        };
        let stopped = |exit_code, after_ms: i64| Outcome::StoppedContainer {
            exit_code,
            after: Some(SignedDuration::from_millis(after_ms)),
        };
        let cases: Vec<(&str, Observation, Outcome)> = vec![
            ("exit 0", nginx(0, "2025-01-01T12:00:01Z"), stopped(0, 800)),
            (
                "the last log line is later than the truncated finishedAt",
                Observation {
                    last_log_at: Some(at("2025-01-01T12:00:01.650Z")),
                    ..nginx(0, "2025-01-01T12:00:01Z")
                },
                stopped(0, 1450),
            ),
            (
                "SIGQUIT",
                nginx(131, "2025-01-01T12:00:02Z"),
                stopped(131, 1800),
            ),
            (
                "SIGTERM",
                nginx(143, "2025-01-01T12:00:02Z"),
                stopped(143, 1800),
            ),
            (
                "SIGINT",
                nginx(130, "2025-01-01T12:00:02Z"),
                stopped(130, 1800),
            ),
            (
                "no event needed: the marker pair says the hook never ended",
                Observation {
                    failure_event: false,
                    ..nginx(0, "2025-01-01T12:00:01Z")
                },
                stopped(0, 800),
            ),
            (
                "start marker without a log timestamp",
                Observation {
                    marker_started: Some(None),
                    ..nginx(0, "2025-01-01T12:00:01Z")
                },
                Outcome::StoppedContainer {
                    exit_code: 0,
                    after: None,
                },
            ),
            (
                "exit 1 stays a failure",
                nginx(1, "2025-01-01T12:00:01Z"),
                failed("FailedPreStopHook", "PreStopHook failed"),
            ),
            (
                "exit 137 (SIGKILL) stays a failure",
                nginx(137, "2025-01-01T12:00:01Z"),
                failed("FailedPreStopHook", "PreStopHook failed"),
            ),
            (
                "the grace period ran out: timed out",
                nginx(0, "2025-01-01T12:00:30Z"),
                Outcome::TimedOut,
            ),
            (
                "the script ended by itself (end marker rc 1): a failure",
                Observation {
                    marker_rc: Some(1),
                    ..nginx(0, "2025-01-01T12:00:01Z")
                },
                failed("FailedPreStopHook", "PreStopHook failed"),
            ),
            (
                "the script ended by itself (end marker rc 0): ran",
                Observation {
                    marker_rc: Some(0),
                    ..nginx(0, "2025-01-01T12:00:01Z")
                },
                ran("marker"),
            ),
            (
                "not being deleted (a probe kill): a failure",
                Observation {
                    deletion: None,
                    ..nginx(0, "2025-01-01T12:00:01Z")
                },
                failed("FailedPreStopHook", "PreStopHook failed"),
            ),
            (
                "no start marker: a failure",
                Observation {
                    marker_started: None,
                    ..nginx(0, "2025-01-01T12:00:01Z")
                },
                failed("FailedPreStopHook", "PreStopHook failed"),
            ),
            (
                "events mode cannot tell it from a failing hook",
                Observation {
                    evidence: Evidence::Events,
                    ..nginx(0, "2025-01-01T12:00:01Z")
                },
                failed("FailedPreStopHook", "PreStopHook failed"),
            ),
            (
                "still running",
                Observation {
                    terminated: None,
                    failure_event: false,
                    ..nginx(0, "2025-01-01T12:00:01Z")
                },
                Outcome::Pending,
            ),
        ];
        for (name, o, want) in cases {
            assert_eq!(pre_stop(&o), want, "{name}");
        }
        assert!(
            explain_stopped_container(0, Some(SignedDuration::from_millis(-300)))
                .contains("code 0 within a second after the hook began")
        );
        assert_eq!(
            explain_stopped_container(0, Some(SignedDuration::from_millis(1234))),
            "the hook stopped its own container: it exited with code 0 1.23s after the hook began, before the grace period ended, and the hook's shell ended with it (so the kubelet reported FailedPreStopHook)"
        );
    }

    #[test]
    fn deletion_from_pod_metadata() {
        // (deletionTimestamp, deletionGracePeriodSeconds, spec's grace) -> (requested, grace)
        let cases = [
            (
                "2025-01-01T12:00:30Z",
                30,
                50,
                Some(("2025-01-01T12:00:00Z", 30)),
            ),
            // The kubelet's final delete: the spec's period, not 0.
            (
                "2025-01-01T12:00:00Z",
                0,
                50,
                Some(("2025-01-01T12:00:00Z", 50)),
            ),
            (
                "2025-01-01T12:00:00Z",
                0,
                0,
                Some(("2025-01-01T12:00:00Z", 0)),
            ),
            ("2025-01-01T12:00:00Z", i64::MAX, 30, None),
            ("2025-01-01T12:00:00Z", i64::MIN, 30, None),
        ];
        for (ts, grace, spec, want) in cases {
            let got = Deletion::from_pod(at(ts), grace, spec);
            let want = want.map(|(t, g)| Deletion {
                requested_at: at(t),
                grace_seconds: g,
            });
            assert_eq!(got, want, "{ts} {grace} {spec}");
        }
    }

    #[test]
    fn a_final_delete_does_not_make_a_finished_prestop_timed_out() {
        // sleep 5 under a 50 s grace period, seen first in the pod's last
        // update (an operator that started while the pod went away).
        let d = Deletion::from_pod(at("2025-01-01T12:00:00Z"), 0, 50).unwrap();
        let o = Observation {
            deletion: Some(d),
            terminated: ended("2025-01-01T12:00:06Z"),
            evidence: Evidence::Events,
            ..obs()
        };
        assert_eq!(pre_stop(&o), Outcome::Ran { evidence: "events" });
    }

    #[test]
    fn a_shorter_second_delete_is_the_period_that_counts() {
        let first = Deletion::from_pod(at("2025-01-01T12:00:50Z"), 50, 50).unwrap();
        // kubectl delete --grace-period=5 a second later: same request time.
        let shorter = Deletion::from_pod(at("2025-01-01T12:00:05Z"), 5, 50).unwrap();
        let final_ = Deletion::from_pod(at("2025-01-01T12:00:00Z"), 0, 50).unwrap();
        let merged = first.merge(&shorter).merge(&final_);
        assert_eq!(merged.grace_seconds, 5);
        assert_eq!(merged.requested_at, at("2025-01-01T12:00:00Z"));
    }
}
