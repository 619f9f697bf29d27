//! Durable counts: each policy's per-hook tally (the report's counts, the
//! evidence seen) and the watermark that says which instances those counts
//! hold, so that the status can be the durable record.
//!
//! Each hook report carries a [`Watermark`]: every instance whose hook
//! *happened* (postStart: the container started; preStop: its stop began,
//! i.e. the pod's deletion request, else the container's exit) before
//! `before` is in the counts, and of the instances at or after `before`
//! exactly those listed in `after`.
//!
//! Invariant: the counts, `before` and `after` are written together in one
//! status write, so a status always describes one consistent set of counted
//! instances. A restarted operator (kill, upgrade, leader change) seeds its
//! tallies from the status and counts an instance only if the record does not
//! already hold it: no double count. Instances the predecessor counted but
//! never wrote are not in the record, so they are counted again: no loss.
//!
//! `before` only moves when something is counted (so a quiet world causes no
//! status write), and never past an instance still pending, nor past `now -
//! SETTLE_MARGIN` (a pod watch that lags must not let an unseen instance fall
//! behind it). What cannot be recovered: a pod deleted and gone entirely
//! while no operator ran leaves nothing to observe.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::health::{TIMED_OUT_MESSAGE, WorkloadHealth};
use super::instances::oldest_pending;
use super::{Index, floor_second, idx};
use crate::api::names::reason;
use crate::api::types::{
    CountedInstance, HookFailure, HookReport, LifecyclePolicyStatus, Watermark,
};
use crate::hooks::hook::HookKind;
use crate::verify::outcome::{self, NEAR_GRACE, Outcome};

/// How far behind `now` the watermark stays: an instance first seen this
/// long after its hook happened could otherwise be taken as counted.
pub const SETTLE_MARGIN: SignedDuration = SignedDuration::from_secs(30);
/// Most instances listed after the watermark; beyond that the oldest are
/// folded under it (bounded status, at the price of a possible miss on a
/// restart during a very large burst).
pub const MAX_AFTER: usize = 256;

/// Length of the container ID prefix kept in the status.
const ID_LEN: usize = 16;

/// A policy as the index needs it to seed and reset its tallies.
pub struct PolicyRecord<'a> {
    /// "namespace/name".
    pub key: &'a str,
    /// A policy deleted and created again under the same name starts afresh.
    pub uid: Option<&'a str>,
    pub generation: Option<i64>,
    pub status: Option<&'a LifecyclePolicyStatus>,
}

/// One counted outcome, for metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct Counted {
    pub kind: HookKind,
    /// ran, implied, failed, timed_out, not_triggered, unknown.
    pub outcome: &'static str,
    pub duration_seconds: Option<f64>,
}

/// Which container instances a hook report's counts hold (see the module
/// docs); `before: None` holds nothing.
#[derive(Clone, Debug, Default, PartialEq)]
struct Record {
    before: Option<Timestamp>,
    after: Vec<CountedId>,
}

/// A counted instance at or after the watermark.
#[derive(Clone, Debug, PartialEq)]
struct CountedId {
    /// Short container ID (see `short_id`).
    id: String,
    at: Timestamp,
}

impl Record {
    fn holds(&self, id: &str, at: Timestamp) -> bool {
        self.before.is_some_and(|b| at < b) || self.after.iter().any(|c| c.id == id)
    }

    /// Adds a counted instance, then moves the watermark as far as is safe:
    /// never past `pending` (the oldest instance still to count) nor past
    /// `now - SETTLE_MARGIN`; beyond [`MAX_AFTER`] listed, the oldest seconds
    /// are folded under it.
    fn add(&mut self, id: String, at: Timestamp, pending: Option<Timestamp>, now: Timestamp) {
        if self.before.is_none_or(|b| at >= b) {
            self.after.push(CountedId { id, at });
        }
        let mut limit = floor_second(now - SETTLE_MARGIN);
        if let Some(p) = pending {
            limit = limit.min(floor_second(p));
        }
        if self.before.is_none_or(|b| limit > b) {
            self.before = Some(limit);
        }
        if self.after.len() > MAX_AFTER {
            // Fold the oldest seconds under the watermark.
            self.after.sort_by_key(|c| c.at);
            let cut = self.after[self.after.len() - MAX_AFTER].at + SignedDuration::from_secs(1);
            self.before = Some(self.before.map_or(cut, |b| b.max(cut)));
        }
        let before = self.before;
        self.after.retain(|c| before.is_none_or(|b| c.at >= b));
    }
}

/// One hook's tally for one policy generation.
#[derive(Clone, Debug, Default)]
pub(super) struct HookTally {
    report: HookReport,
    evidence: BTreeSet<String>,
    /// What the counts held when this tally began (the status a restarted
    /// operator found, or a generation change): those instances are never
    /// counted again. Frozen, unlike `record`.
    inherited: Record,
    /// What the counts hold now; written with them.
    record: Record,
}

impl HookTally {
    fn seeded(report: &HookReport) -> Self {
        let mut r = report.clone();
        let record = r
            .counted
            .take()
            .map(|w| Record {
                before: Some(w.before.0),
                after: w
                    .after
                    .into_iter()
                    .map(|c| CountedId {
                        id: c.container_id,
                        at: c.at.0,
                    })
                    .collect(),
            })
            .unwrap_or_default();
        HookTally {
            evidence: r
                .evidence
                .split(',')
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .collect(),
            report: r,
            inherited: record.clone(),
            record,
        }
    }

    /// Counted before this tally began.
    pub(super) fn holds(&self, id: &str, at: Timestamp) -> bool {
        self.inherited.holds(id, at)
    }

    /// Adds an outcome to the report: its count, its evidence, the last
    /// failure or oddity, its duration. Returns the outcome's metric label;
    /// None for a pending one, which counts nothing.
    fn add(&mut self, r: &Counting, o: &Outcome, now: Timestamp) -> Option<&'static str> {
        let report = &mut self.report;
        let time = Time(now);
        let label = match o {
            Outcome::Ran { evidence } => {
                report.ran += 1;
                self.evidence.insert(evidence.to_string());
                "ran"
            }
            Outcome::StoppedContainer { exit_code, after } => {
                report.ran += 1;
                self.evidence.insert("containerExit".into());
                report.last_container_exit = Some(format!(
                    "pod {} container {}: {}",
                    r.pod,
                    r.container,
                    outcome::explain_stopped_container(*exit_code, *after)
                ));
                "ran"
            }
            Outcome::Implied => {
                report.implied += 1;
                self.evidence.insert("implied".into());
                "implied"
            }
            Outcome::Failed { reason, message } => {
                report.failed += 1;
                report.last_failure = Some(HookFailure {
                    pod: r.pod.to_string(),
                    container: r.container.to_string(),
                    reason: reason.clone(),
                    message: message.clone(),
                    time: Time(r.failure_time.unwrap_or(now)),
                });
                "failed"
            }
            Outcome::TimedOut => {
                report.timed_out += 1;
                report.last_failure = Some(HookFailure {
                    pod: r.pod.to_string(),
                    container: r.container.to_string(),
                    reason: reason::TIMED_OUT.into(),
                    message: TIMED_OUT_MESSAGE.into(),
                    time,
                });
                "timed_out"
            }
            Outcome::NotTriggered { why } => {
                report.not_triggered += 1;
                report.last_not_triggered = Some(format!("{}/{}: {why}", r.pod, r.container));
                "not_triggered"
            }
            Outcome::Unknown { .. } => {
                report.unknown += 1;
                "unknown"
            }
            Outcome::Pending => return None,
        };
        self.add_duration(r);
        Some(label)
    }

    /// The hook's last and longest duration, and whether it came near its
    /// grace period.
    fn add_duration(&mut self, r: &Counting) {
        let report = &mut self.report;
        if let Some(d) = r.duration {
            let secs = seconds(d);
            report.last_duration_seconds = Some(secs);
            report.max_duration_seconds =
                Some(report.max_duration_seconds.map_or(secs, |m| m.max(secs)));
            if let Some(grace) = r.grace_seconds.filter(|g| *g > 0)
                && secs >= NEAR_GRACE * grace as f64
            {
                report.near_grace_period = Some(format!(
                    "pod {} container {}: preStop took {secs:.1}s of its {grace}s grace period",
                    r.pod, r.container
                ));
            }
        }
    }
}

#[derive(Clone, Debug, Default)]
pub(super) struct Tally {
    pub(super) uid: Option<String>,
    pub(super) generation: Option<i64>,
    pub(super) hooks: [HookTally; 2],
    /// Per workload (namespace/Kind/name), for the safe rollout: this generation's
    /// successful postStarts and latest hook failure.
    pub(super) workloads: HashMap<String, WorkloadHealth>,
}

pub(super) fn short_id(container_id: &str) -> String {
    let id = container_id
        .split_once("://")
        .map_or(container_id, |(_, id)| id);
    id.chars().take(ID_LEN).collect()
}

fn seconds(d: SignedDuration) -> f64 {
    (d.as_secs_f64().max(0.0) * 1000.0).round() / 1000.0
}

impl Index {
    /// Makes sure the policy's tally is for its current generation: seeded
    /// from the status when the status describes that generation, reset to
    /// zero (counting only hooks from now on) when the spec changed under a
    /// running operator.
    pub fn policy(&mut self, p: &PolicyRecord, now: Timestamp) {
        let uid = p.uid.map(str::to_string);
        match self.tallies.get_mut(p.key).filter(|t| t.uid == uid) {
            Some(t) if t.generation == p.generation => {}
            Some(t) => {
                let before = Some(floor_second(now));
                *t = Tally {
                    uid,
                    generation: p.generation,
                    hooks: Default::default(),
                    workloads: HashMap::new(),
                };
                for h in &mut t.hooks {
                    h.inherited.before = before;
                    h.record.before = before;
                }
                self.dirty.insert(p.key.to_string());
            }
            None => {
                let status = p.status.filter(|s| {
                    s.observed_generation.is_some() && s.observed_generation == p.generation
                });
                let seed = |r: Option<&HookReport>| r.map(HookTally::seeded).unwrap_or_default();
                self.tallies.insert(
                    p.key.to_string(),
                    Tally {
                        uid,
                        generation: p.generation,
                        hooks: [
                            seed(status.and_then(|s| s.post_start.as_ref())),
                            seed(status.and_then(|s| s.pre_stop.as_ref())),
                        ],
                        workloads: HashMap::new(),
                    },
                );
            }
        }
    }

    /// The policy's reports for its current generation. `configured`: which
    /// hooks the policy sets; `duration_unknown`: why a hook's duration
    /// cannot be measured, when it cannot.
    pub fn reports(
        &mut self,
        p: &PolicyRecord,
        configured: [bool; 2],
        duration_unknown: [Option<String>; 2],
        now: Timestamp,
    ) -> [Option<HookReport>; 2] {
        self.policy(p, now);
        let tally = &self.tallies[p.key];
        let mut out: [Option<HookReport>; 2] = [None, None];
        for (i, kind) in HookKind::ALL.into_iter().enumerate() {
            if !configured[i] {
                continue;
            }
            let t = &tally.hooks[i];
            let mut r = t.report.clone();
            let seen = r.ran + r.implied + r.failed + r.timed_out + r.not_triggered + r.unknown;
            let ok = match kind {
                HookKind::PostStart => r.ran + r.implied,
                HookKind::PreStop => r.ran,
            };
            r.summary = format!("{ok}/{seen}");
            r.evidence = t.evidence.iter().cloned().collect::<Vec<_>>().join(",");
            r.duration_unknown = duration_unknown[i].clone();
            r.counted = t.record.before.map(|b| Watermark {
                before: Time(b),
                after: t
                    .record
                    .after
                    .iter()
                    .map(|c| CountedInstance {
                        container_id: c.id.clone(),
                        at: Time(c.at),
                    })
                    .collect(),
            });
            out[i] = Some(r);
        }
        out
    }

    /// Counts one settled outcome: in its hook's report, in its workload's
    /// health, and in the record the watermark describes.
    pub(super) fn count(&mut self, r: Counting, o: Outcome, now: Timestamp) {
        let Some(tally) = self.tallies.get_mut(&*r.policy) else {
            return; // The policy is gone.
        };
        let i = idx(r.kind);
        if tally.hooks[i].holds(&r.id, r.at) {
            return; // Counted before a restart; the status holds it.
        }
        // The oldest instance of this policy and hook still pending bounds
        // the watermark.
        let pending = oldest_pending(&self.instances, &r.policy, r.kind);
        let Some(label) = tally.hooks[i].add(&r, &o, now) else {
            return; // Pending: nothing to count yet.
        };
        if let Some(w) = &r.workload {
            let health = tally.workloads.entry(w.to_string()).or_default();
            health.add(&o, r.kind, &r.pod, &r.container);
        }
        tally.hooks[i].record.add(r.id, r.at, pending, now);
        self.counted.push(Counted {
            kind: r.kind,
            outcome: label,
            duration_seconds: r.duration.map(seconds),
        });
        self.dirty.insert(r.policy.to_string());
    }
}

/// What `count` needs about the instance being counted.
pub(super) struct Counting {
    pub(super) workload: Option<Arc<str>>,
    pub(super) policy: Arc<str>,
    pub(super) kind: HookKind,
    pub(super) id: String,
    pub(super) at: Timestamp,
    pub(super) pod: Box<str>,
    pub(super) container: Arc<str>,
    pub(super) duration: Option<SignedDuration>,
    pub(super) grace_seconds: Option<i64>,
    pub(super) failure_time: Option<Timestamp>,
}
