//! Builds a policy's status from what reconcile saw and did, pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::identity::PolicyId;
use crate::api::names::{ConditionType, reason, status};
use crate::api::types::{
    DrainStatus, FirstWrites, HookReport, LifecyclePolicyStatus, Mode, RolloutHalt, RolloutStatus,
    WorkloadReport, WorkloadState,
};
use crate::apply::decide::Decision;
use crate::apply::ledger::{self, Via};
use crate::apply::plan::{Plan, SlotOutcome};
use crate::apply::slot::Slot;
use crate::hooks::hook::HookKind;

/// At most this many workloads are listed on the status.
pub const MAX_REPORTS: usize = 20;

/// What happened to one workload in one reconcile.
#[derive(Clone, Debug, PartialEq)]
pub enum Done {
    /// Nothing to write: the template already holds what the plan wants.
    UpToDate,
    /// Written now.
    Patched,
    /// DryRun: the plan would write.
    WouldPatch,
    /// Enforce, but maxConcurrentRollouts workloads are already rolling.
    WaitingForRolloutSlot,
    /// Held back by the safe rollout: why.
    Held(String),
    /// The write failed.
    Failed(String),
}

/// One workload the policy matched or still holds slots on.
#[derive(Debug)]
pub struct WorkloadResult {
    pub decision: Decision,
    pub done: Done,
}

impl WorkloadResult {
    fn report(&self, mode: Mode) -> WorkloadReport {
        let missing = (!self.decision.missing_containers.is_empty()).then(|| {
            format!(
                "not in this pod template: {}",
                self.decision.missing_containers.join(", ")
            )
        });
        let conflicts: Vec<String> = self
            .decision
            .plan
            .conflicts()
            .map(|(s, o)| describe(s, o, self.by_cluster_policy()))
            .collect();
        let held: Vec<String> = self
            .decision
            .plan
            .outcomes
            .iter()
            .filter(|(_, o)| matches!(o, SlotOutcome::HeldBy(_)))
            .map(|(s, o)| describe(s, o, self.by_cluster_policy()))
            .collect();
        let (state, message) = match &self.done {
            Done::Failed(e) => (WorkloadState::Error, e.clone()),
            _ if self.decision.plan.contested().is_some() => {
                (WorkloadState::Contested, conflicts.join("; "))
            }
            _ if self.decision.integrity().is_some() => (
                WorkloadState::LedgerDamaged,
                self.decision.integrity().unwrap_or_default(),
            ),
            _ if !conflicts.is_empty() => (WorkloadState::Conflict, conflicts.join("; ")),
            _ if self.decision.reverted => (
                WorkloadState::Reverted,
                "a hook failed here: the template from before the policy is back; the rollout is halted".to_string(),
            ),
            Done::WaitingForRolloutSlot => (
                WorkloadState::Pending,
                "waiting for a rollout slot (maxConcurrentRollouts)".to_string(),
            ),
            Done::Held(why) => (WorkloadState::Pending, why.clone()),
            _ if !held.is_empty() => (WorkloadState::Pending, held.join("; ")),
            Done::WouldPatch => (WorkloadState::WouldPatch, changes(&self.decision.plan)),
            _ if self.decision.matched && self.decision.plan.outcomes.is_empty() => (
                WorkloadState::NoContainers,
                match &missing {
                    Some(m) => format!("no selected container in the pod template ({m})"),
                    None => "no selected container in the pod template".to_string(),
                },
            ),
            _ if mode == Mode::DryRun => {
                (WorkloadState::UpToDate, missing.unwrap_or_default())
            }
            _ => match (&self.decision.staged, missing) {
                (Some(why), m) => (
                    WorkloadState::Staged,
                    [Some(why.clone()), m]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                (None, m) => (
                    WorkloadState::Patched,
                    [m, grace_note(&self.decision.plan), takeover_note(&self.decision.plan)]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            },
        };
        WorkloadReport {
            kind: self.decision.workload.kind,
            namespace: self.decision.key.namespace.clone(),
            name: self.decision.name(),
            state,
            message,
        }
    }

    /// Decided by a cluster policy: its keys name namespaces.
    fn by_cluster_policy(&self) -> bool {
        self.decision.key.namespace.is_some()
    }

    /// Carries every slot the policy wins here.
    pub(super) fn patched(&self) -> bool {
        self.decision.matched
            && matches!(self.done, Done::UpToDate | Done::Patched)
            && !self.decision.plan.outcomes.is_empty()
            && self
                .decision
                .plan
                .outcomes
                .values()
                .all(|o| !matches!(o, SlotOutcome::HeldBy(_)))
    }

    fn pending(&self) -> bool {
        matches!(
            self.done,
            Done::WaitingForRolloutSlot | Done::WouldPatch | Done::Held(_)
        ) || self
            .decision
            .plan
            .outcomes
            .values()
            .any(|o| matches!(o, SlotOutcome::HeldBy(_)))
    }
}

/// `cluster`: the policy describing it is a cluster policy (who wins over
/// whom and why, see `apply::precedence`).
fn describe(slot: &Slot, outcome: &SlotOutcome, cluster: bool) -> String {
    match outcome {
        SlotOutcome::SkippedExisting => {
            format!("{slot}: kept the container's own hook (onConflict: Skip)")
        }
        SlotOutcome::LostTo(p) => {
            let winner = PolicyId::from_owner(p);
            let why = match (cluster, &winner) {
                (false, PolicyId::Namespaced { .. }) => "older",
                (false, PolicyId::Cluster { .. }) => "it sets override: Forbid",
                (true, PolicyId::Namespaced { .. }) => {
                    "the namespace's own policy wins unless this one sets override: Forbid"
                }
                (true, PolicyId::Cluster { .. }) => "override: Forbid ranks first, then the older",
            };
            format!("{slot}: {} wins ({why})", winner.kind_and_name())
        }
        SlotOutcome::KeptLonger(own) => format!(
            "{slot}: kept the template's own {own}s, at least the policy's (onConflict: Skip never shortens it)"
        ),
        SlotOutcome::Contested(m) => format!(
            "{slot}: field manager {m} took it back {} times within {} minutes, so the policy no longer re-claims it; \
             remove the hook from {m}'s manifest, set onConflict: Skip, or make that tool ignore the field (README: GitOps tools), then change the policy's spec to retry",
            ledger::CONTEST_LIMIT,
            ledger::CONTEST_WINDOW.as_secs() / 60
        ),
        SlotOutcome::HeldBy(p) => format!("{slot}: waiting for policy {p} to hand it back"),
        SlotOutcome::Claimed | SlotOutcome::AlreadySet => slot.to_string(),
    }
}

/// How the matched workloads created after the policy got its hooks (see
/// `ledger::Via`); None while none was.
fn first_writes(results: &[WorkloadResult], created: Option<Timestamp>) -> Option<FirstWrites> {
    let created = created?;
    let mut f = FirstWrites::default();
    for d in results.iter().map(|r| &r.decision).filter(|d| d.matched) {
        let Some(l) = d.plan.ledger.as_ref() else {
            continue;
        };
        if !l.owned.keys().any(|s| matches!(s, Slot::Hook { .. })) {
            continue;
        }
        // Whole seconds: one created in the policy's own second counts as later.
        let later = d
            .workload
            .metadata
            .creation_timestamp
            .as_ref()
            .is_some_and(|t| t.0 >= created);
        match l.via {
            Via::Admission => f.admitted += 1,
            Via::Background if later => f.second_rollouts += 1,
            Via::Background => {}
        }
    }
    (f != FirstWrites::default()).then_some(f)
}

/// What became of the grace period under onConflict: Skip, when it says something.
fn grace_note(plan: &Plan) -> Option<String> {
    if let Some(kept @ SlotOutcome::KeptLonger(_)) = plan.outcomes.get(&Slot::GracePeriod) {
        return Some(describe(&Slot::GracePeriod, kept, false));
    }
    let set = plan.claims.get(&Slot::GracePeriod)?.as_i64()?;
    let was = plan
        .ledger
        .as_ref()?
        .owned
        .get(&Slot::GracePeriod)?
        .as_ref()?
        .as_i64()?;
    (was < set).then(|| {
        format!("terminationGracePeriodSeconds: raised from {was}s to {set}s (restored on release)")
    })
}

/// Another manager took a slot back, and the policy took it again.
fn takeover_note(plan: &Plan) -> Option<String> {
    let c = plan.ledger.as_ref()?.contest.as_ref()?;
    (c.times.len() < ledger::CONTEST_LIMIT).then(|| {
        format!(
            "field manager {} took {} back {} time(s) within {} minutes; re-claimed (the policy stops after {})",
            c.manager,
            c.slots.iter().map(Slot::to_string).collect::<Vec<_>>().join(", "),
            c.times.len(),
            ledger::CONTEST_WINDOW.as_secs() / 60,
            ledger::CONTEST_LIMIT
        )
    })
}

fn changes(plan: &Plan) -> String {
    let set: Vec<String> = plan.withheld.keys().map(Slot::to_string).collect();
    let restore: Vec<String> = plan.releases.keys().map(Slot::to_string).collect();
    let mut parts = Vec::new();
    if !set.is_empty() {
        parts.push(format!("would set {}", set.join(", ")));
    }
    if !restore.is_empty() {
        parts.push(format!("would restore {}", restore.join(", ")));
    }
    parts.join("; ")
}

/// Input for `build`.
pub struct StatusInput<'a> {
    pub generation: Option<i64>,
    pub mode: Mode,
    pub results: &'a [WorkloadResult],
    /// Set when the policy cannot be evaluated at all (e.g. a bad selector).
    pub invalid: Option<String>,
    pub previous: Option<&'a LifecyclePolicyStatus>,
    pub now: Timestamp,
    /// What the observer saw of each hook (None: not configured or not observed).
    pub post_start: Option<HookReport>,
    pub pre_stop: Option<HookReport>,
    /// The rollout step taken (None: no rollout to speak of, e.g. DryRun).
    pub rollout: Option<RolloutStatus>,
    /// When the policy was created: workloads created later could have
    /// had its hooks at admission.
    pub created: Option<Timestamp>,
    /// How the preStop's drains went (None: nothing timed this generation).
    pub drain: Option<DrainStatus>,
}

/// The status to write. Conditions keep their lastTransitionTime when their
/// status does not change, so an unchanged world yields an identical status.
pub fn build(input: &StatusInput) -> LifecyclePolicyStatus {
    let results = input.results;
    let counts = Counts::of(results);
    let applied = applied_condition(input, &counts);
    let conflict = conflict_condition(results);
    let verified = verified_conditions(input);
    let halted = input.rollout.as_ref().and_then(|r| r.halted.as_ref());
    let halt_cond = halt_condition(halted);
    let hook_problem = verified.iter().find(|c| c.status == status::FALSE);
    let ready = ready_condition(
        &applied,
        &conflict,
        hook_problem,
        halted.map(|_| &halt_cond),
    );
    let previous = input
        .previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let conditions = [
        ready,
        applied,
        conflict,
        grace_condition(results, input.pre_stop.as_ref()),
        ledger_condition(results),
        halt_cond,
    ]
    .into_iter()
    .chain(verified)
    .chain(drain_condition(input))
    .map(|c| stamp(c, previous, input.generation, input.now))
    .collect();
    let mut status = LifecyclePolicyStatus {
        observed_generation: input.generation,
        conditions,
        matched_workloads: counts.matched as i32,
        patched_workloads: counts.patched as i32,
        workloads: workload_reports(results, input.mode),
        post_start: input.post_start.clone(),
        pre_stop: input.pre_stop.clone(),
        rollout: input.rollout.clone(),
        first_writes: first_writes(results, input.created),
        drain: input.drain.clone(),
    };
    bound(&mut status);
    status
}

/// How many workloads the policy matched, patched, failed on, or waits for.
struct Counts {
    matched: usize,
    patched: usize,
    failed: usize,
    pending: usize,
}

impl Counts {
    fn of(results: &[WorkloadResult]) -> Counts {
        let matched = results
            .iter()
            .filter(|r| r.decision.matched || r.decision.reverted)
            .count();
        let patched = results.iter().filter(|r| r.patched()).count();
        let failed = results
            .iter()
            .filter(|r| matches!(r.done, Done::Failed(_)))
            .count();
        let pending = results.iter().filter(|r| r.pending()).count();
        Counts {
            matched,
            patched,
            failed,
            pending,
        }
    }
}

/// Applied: every matched workload carries the hooks, or why not.
fn applied_condition(input: &StatusInput, counts: &Counts) -> Condition {
    let results = input.results;
    let Counts {
        matched,
        patched,
        failed,
        pending,
    } = *counts;
    if let Some(why) = &input.invalid {
        cond(ConditionType::Applied, false, reason::INVALID_SPEC, why)
    } else if failed > 0 {
        cond(
            ConditionType::Applied,
            false,
            reason::PATCH_FAILED,
            &format!("{failed} of {matched} workloads could not be patched"),
        )
    } else if input.mode == Mode::DryRun {
        let would = results
            .iter()
            .filter(|r| r.done == Done::WouldPatch)
            .count();
        cond(
            ConditionType::Applied,
            false,
            reason::DRY_RUN,
            &format!("DryRun: {would} of {matched} workloads would change; nothing was patched"),
        )
    } else if pending > 0 {
        cond(
            ConditionType::Applied,
            false,
            reason::PENDING,
            &format!(
                "{pending} of {matched} workloads are waiting (the canary or a wave, rollout slots, or another policy)"
            ),
        )
    } else {
        cond(
            ConditionType::Applied,
            true,
            reason::APPLIED,
            &format!("{patched} of {matched} matched workloads carry the policy's hooks"),
        )
    }
}

/// Conflict: slots the policy wants but does not get, and who has them.
fn conflict_condition(results: &[WorkloadResult]) -> Condition {
    let conflicts: Vec<String> = results
        .iter()
        .flat_map(|r| {
            r.decision.plan.conflicts().map(move |(s, o)| {
                let name = match &r.decision.key.namespace {
                    Some(ns) => format!("{ns}/{}", r.decision.name()),
                    None => r.decision.name(),
                };
                format!(
                    "{} {name}: {}",
                    r.decision.workload.kind,
                    describe(s, o, r.by_cluster_policy())
                )
            })
        })
        .collect();
    if conflicts.is_empty() {
        cond(ConditionType::Conflict, false, reason::NO_CONFLICT, "")
    } else {
        cond(
            ConditionType::Conflict,
            true,
            reason::HOOKS_NOT_APPLIED,
            &summarize(&conflicts),
        )
    }
}

/// GracePeriodTooShort: a preStop that outlasts, or nears, its grace period.
fn grace_condition(results: &[WorkloadResult], pre_stop: Option<&HookReport>) -> Condition {
    let grace: Vec<&String> = results
        .iter()
        .filter_map(|r| r.decision.grace_too_short.as_ref())
        .collect();
    let near = pre_stop.and_then(|r| r.near_grace_period.as_ref());
    match (grace.is_empty(), near) {
        (true, None) => cond(
            ConditionType::GracePeriodTooShort,
            false,
            reason::GRACE_PERIOD_SUFFICIENT,
            "",
        ),
        (false, _) => {
            let mut msgs: Vec<String> = grace.into_iter().cloned().collect();
            msgs.extend(near.cloned());
            cond(
                ConditionType::GracePeriodTooShort,
                true,
                reason::PRE_STOP_OUTLASTS_GRACE_PERIOD,
                &summarize(&msgs),
            )
        }
        (true, Some(n)) => cond(
            ConditionType::GracePeriodTooShort,
            true,
            reason::PRE_STOP_NEAR_GRACE_PERIOD,
            &format!(
                "a preStop used {}% or more of its grace period ({n}); raise terminationGracePeriodSeconds",
                (crate::verify::outcome::NEAR_GRACE * 100.0) as i64
            ),
        ),
    }
}

/// LedgerIntact: every ledger agrees with managedFields.
fn ledger_condition(results: &[WorkloadResult]) -> Condition {
    let damaged: Vec<String> = results
        .iter()
        .filter_map(|r| {
            r.decision
                .integrity()
                .as_ref()
                .map(|m| format!("{} {}: {m}", r.decision.workload.kind, r.decision.name()))
        })
        .collect();
    if damaged.is_empty() {
        cond(ConditionType::LedgerIntact, true, reason::LEDGER_INTACT, "")
    } else {
        cond(
            ConditionType::LedgerIntact,
            false,
            reason::LEDGER_DAMAGED,
            &summarize(&damaged),
        )
    }
}

/// PostStartVerified and PreStopVerified, for the hooks the policy has.
fn verified_conditions(input: &StatusInput) -> Vec<Condition> {
    [
        (
            ConditionType::PostStartVerified,
            HookKind::PostStart,
            input.post_start.as_ref(),
        ),
        (
            ConditionType::PreStopVerified,
            HookKind::PreStop,
            input.pre_stop.as_ref(),
        ),
    ]
    .into_iter()
    .filter_map(|(t, k, r)| r.map(|r| verified_condition(t, k, r)))
    .collect()
}

/// DrainSafe, for a policy with a preStop: True when every timed pod left
/// its endpoints a margin before it was told to stop; False naming the
/// latest that did not; Unknown until one was timed. Advisory: Ready does
/// not depend on it.
fn drain_condition(input: &StatusInput) -> Option<Condition> {
    input.pre_stop.as_ref()?;
    let d = input.drain.as_ref().filter(|d| d.observed > 0);
    let Some(d) = d else {
        let mut c = cond(
            ConditionType::DrainSafe,
            false,
            reason::NOT_OBSERVED_YET,
            "no hooked pod behind a Service has terminated yet",
        );
        c.status = status::UNKNOWN.into();
        return Some(c);
    };
    let recommended = d
        .recommended_pre_stop_seconds
        .map(|s| format!("; the removals seen need a sleep of at least {s} s before quitting"))
        .unwrap_or_default();
    Some(match &d.last_unsafe {
        Some(u) if d.unsafe_ > 0 => cond(
            ConditionType::DrainSafe,
            false,
            reason::STOPPED_WHILE_SERVING,
            &format!(
                "{} of {} pods stopped while still an endpoint; latest: pod {}: {}",
                d.unsafe_,
                d.observed,
                crate::text::prefix(&u.pod, crate::text::NAME),
                crate::text::prefix(&u.message, crate::text::NAME)
            ),
        ),
        _ => cond(
            ConditionType::DrainSafe,
            true,
            reason::DRAINED,
            &format!(
                "{} pods left their endpoints before they were told to stop{recommended}",
                d.observed
            ),
        ),
    })
}

/// RolloutHalted: which workload, pod and container, and what was reverted.
fn halt_condition(halted: Option<&RolloutHalt>) -> Condition {
    match halted {
        None => cond(ConditionType::RolloutHalted, false, reason::NOT_HALTED, ""),
        Some(h) => {
            let mut msg = h.workload.clone();
            if !h.pod.is_empty() {
                msg.push_str(&format!(" pod {} container {}", h.pod, h.container));
            }
            msg.push_str(&format!(": {}", h.message));
            if !h.reverted.is_empty() {
                msg.push_str(&format!("; reverted {}", h.reverted.join(", ")));
            }
            msg.push_str("; no other workload is patched until the policy's spec changes");
            cond(ConditionType::RolloutHalted, true, &h.reason, &msg)
        }
    }
}

/// Ready: the first thing that stands in the way, in order of importance.
fn ready_condition(
    applied: &Condition,
    conflict: &Condition,
    hook_problem: Option<&Condition>,
    halt: Option<&Condition>,
) -> Condition {
    match (applied, conflict, hook_problem) {
        _ if halt.is_some() => cond(
            ConditionType::Ready,
            false,
            reason::ROLLOUT_HALTED,
            &halt.map(|h| h.message.clone()).unwrap_or_default(),
        ),
        (a, _, _) if a.status != status::TRUE => {
            cond(ConditionType::Ready, false, &a.reason, &a.message)
        }
        (_, c, _) if c.status == status::TRUE => {
            cond(ConditionType::Ready, false, reason::CONFLICT, &c.message)
        }
        (_, _, Some(h)) => cond(ConditionType::Ready, false, &h.reason, &h.message),
        _ => cond(ConditionType::Ready, true, reason::READY, &applied.message),
    }
}

/// The workloads worth a line, problems first, at most `MAX_REPORTS`.
fn workload_reports(results: &[WorkloadResult], mode: Mode) -> Vec<WorkloadReport> {
    let mut reports: Vec<(u8, WorkloadReport)> = results
        .iter()
        .filter(|r| r.decision.matched || r.decision.reverted || r.done != Done::UpToDate)
        .map(|r| {
            let rep = r.report(mode);
            let rank = match rep.state {
                WorkloadState::Error | WorkloadState::Reverted => 0,
                WorkloadState::Conflict
                | WorkloadState::Contested
                | WorkloadState::LedgerDamaged => 1,
                WorkloadState::Pending => 2,
                WorkloadState::NoContainers => 3,
                WorkloadState::WouldPatch => 4,
                _ => 5,
            };
            (rank, rep)
        })
        .collect();
    reports.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| a.1.namespace.cmp(&b.1.namespace))
            .then_with(|| a.1.kind.cmp(&b.1.kind))
            .then_with(|| a.1.name.cmp(&b.1.name))
    });

    reports
        .into_iter()
        .take(MAX_REPORTS)
        .map(|(_, r)| r)
        .collect()
}

/// Caps every string of the status (see `text`), whatever its source: with
/// the lists already bounded (20 workloads, 256 counted instances per hook,
/// a wave of at most `rollout::MAX_WAVE`), the whole status stays under
/// [`MAX_STATUS_BYTES`] and no field nears a limit of the CRD.
fn bound(s: &mut LifecyclePolicyStatus) {
    use crate::text::{self, CONDITION_MESSAGE, FAILURE_MESSAGE, NAME, WORKLOAD_MESSAGE};
    for c in &mut s.conditions {
        text::bound(&mut c.message, CONDITION_MESSAGE);
        if !is_reason(&c.reason) {
            // A reason from outside (a halt's) that the CRD would refuse.
            c.reason = reason::UNKNOWN.into();
        }
    }
    for w in &mut s.workloads {
        text::bound(&mut w.name, NAME);
        text::bound(&mut w.message, WORKLOAD_MESSAGE);
    }
    for r in [&mut s.post_start, &mut s.pre_stop].into_iter().flatten() {
        for t in [
            &mut r.last_container_exit,
            &mut r.last_not_triggered,
            &mut r.near_grace_period,
        ]
        .into_iter()
        .flatten()
        {
            text::bound(t, WORKLOAD_MESSAGE);
        }
        if let Some(f) = &mut r.last_failure {
            text::bound(&mut f.pod, NAME);
            text::bound(&mut f.container, NAME);
            text::bound(&mut f.reason, NAME);
            text::bound(&mut f.message, FAILURE_MESSAGE);
        }
    }
    if let Some(u) = s.drain.as_mut().and_then(|d| d.last_unsafe.as_mut()) {
        text::bound(&mut u.pod, NAME);
        // The operator's own sentence around a container name: short.
        text::bound(&mut u.message, NAME);
    }
    if let Some(h) = s.rollout.as_mut().and_then(|r| r.halted.as_mut()) {
        text::bound(&mut h.workload, NAME);
        text::bound(&mut h.pod, NAME);
        text::bound(&mut h.container, NAME);
        text::bound(&mut h.reason, NAME);
        text::bound(&mut h.message, FAILURE_MESSAGE);
    }
}

/// A condition reason as metav1.Condition's schema takes it: CamelCase,
/// at most 1024 (here 128) characters.
fn is_reason(r: &str) -> bool {
    let mut chars = r.chars();
    r.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && r.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ',' | ':'))
        && !r.ends_with([',', ':'])
}

/// What the status can take at most, serialized (see [`bound`]); measured by
/// a test that fills every string and list to its cap.
pub const MAX_STATUS_BYTES: usize = 128 * 1024;

/// PostStartVerified / PreStopVerified: True once hooks were seen to run and
/// none failed; False on a failure or (preStop) a timeout; Unknown before
/// there is anything to go on.
fn verified_condition(type_: ConditionType, kind: HookKind, r: &HookReport) -> Condition {
    let last = |r: &HookReport| {
        r.last_failure
            .as_ref()
            .map(|f| {
                format!(
                    "; last: pod {} container {}: {}: {}",
                    f.pod, f.container, f.reason, f.message
                )
            })
            .unwrap_or_default()
    };
    if r.failed > 0 {
        return cond(
            type_,
            false,
            reason::HOOK_FAILED,
            &format!("{} failed{}", r.failed, last(r)),
        );
    }
    if r.timed_out > 0 {
        let m = format!("{} cut short by the grace period{}", r.timed_out, last(r));
        return cond(type_, false, reason::TIMED_OUT, &m);
    }
    let ran = match kind {
        HookKind::PostStart => r.ran + r.implied,
        HookKind::PreStop => r.ran,
    };
    if ran > 0 {
        let mut m = format!("{ran} ran (evidence: {})", r.evidence);
        if let Some(why) = &r.last_container_exit {
            m.push_str(&format!(
                "; a hook that stops its own container counts as ran (latest: {why})"
            ));
        }
        if r.not_triggered > 0 {
            m.push_str(&format!(
                "; {} containers exited on their own, when Kubernetes does not run preStop",
                r.not_triggered
            ));
        }
        return cond(type_, true, reason::HOOKS_RAN, &m);
    }
    let mut c = cond(type_, false, reason::NOT_OBSERVED_YET, "");
    c.status = status::UNKNOWN.into();
    c.message = match (kind, &r.last_not_triggered) {
        (HookKind::PreStop, Some(why)) => format!(
            "no preStop has run: {} containers exited on their own, and Kubernetes runs preStop only when it stops a container (latest: {why})",
            r.not_triggered
        ),
        (HookKind::PreStop, None) => "no container has been stopped yet".into(),
        (HookKind::PostStart, _) => "no container has started with the hook yet".into(),
    };
    c
}

fn summarize(items: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut s = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > SHOWN {
        s.push_str(&format!(" (and {} more)", items.len() - SHOWN));
    }
    s
}

fn cond(type_: ConditionType, ok: bool, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.as_str().to_string(),
        status: if ok { status::TRUE } else { status::FALSE }.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: None,
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

fn stamp(
    mut c: Condition,
    previous: &[Condition],
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    c.observed_generation = generation;
    c.last_transition_time = match previous.iter().find(|p| p.type_ == c.type_) {
        Some(p) if p.status == c.status => p.last_transition_time.clone(),
        _ => Time(now),
    };
    c
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::types::WorkloadKind;

    fn result(name: &str, outcomes: Vec<(Slot, SlotOutcome)>, done: Done) -> WorkloadResult {
        result_of(WorkloadKind::Deployment, name, outcomes, done)
    }

    fn result_of(
        kind: WorkloadKind,
        name: &str,
        outcomes: Vec<(Slot, SlotOutcome)>,
        done: Done,
    ) -> WorkloadResult {
        let mut workload: crate::apply::workload::Workload =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        workload.kind = kind;
        WorkloadResult {
            decision: Decision {
                key: crate::apply::workload::WorkloadKey::of(&workload),
                workload: std::sync::Arc::new(workload),
                matched: true,
                reverted: false,
                staged: None,
                missing_containers: Vec::new(),
                plan: Plan {
                    outcomes: outcomes.into_iter().collect::<BTreeMap<_, _>>(),
                    ..Default::default()
                },
                damage: None,
                grace_too_short: None,
                intent: crate::apply::decide::Intent::UpToDate,
            },
            done,
        }
    }

    fn slot() -> Slot {
        Slot::hook("app", HookKind::PreStop)
    }

    /// Admitted ledgers count as first writes; background ones as second
    /// rollouts only for workloads created after the policy.
    #[test]
    fn first_writes_count_admission_and_late_second_rollouts() {
        let hooked = |name: &str, created: i64, via: Via, matched: bool| {
            let mut r = result(name, vec![], Done::UpToDate);
            let w = std::sync::Arc::get_mut(&mut r.decision.workload).unwrap();
            w.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
            r.decision.matched = matched;
            r.decision.plan.ledger = Some(ledger::Ledger {
                policy: "p".into(),
                owned: BTreeMap::from([(slot(), None)]),
                via,
                ..Default::default()
            });
            r
        };
        let results = [
            hooked("admitted", 200, Via::Admission, true),
            hooked("late", 300, Via::Background, true),
            hooked("older", 50, Via::Background, true),
            hooked("unmatched", 300, Via::Background, false),
            hooked("same-second", 100, Via::Background, true),
        ];
        let at = Some(Timestamp::from_second(100).unwrap());
        assert_eq!(
            first_writes(&results, at),
            Some(FirstWrites {
                admitted: 1,
                second_rollouts: 2
            })
        );
        assert_eq!(first_writes(&results[2..4], at), None);
        assert_eq!(first_writes(&results, None), None);
    }

    fn build_at(
        results: &[WorkloadResult],
        mode: Mode,
        previous: Option<&LifecyclePolicyStatus>,
        secs: i64,
    ) -> LifecyclePolicyStatus {
        build(&StatusInput {
            generation: Some(2),
            mode,
            results,
            invalid: None,
            previous,
            now: Timestamp::from_second(secs).unwrap(),
            post_start: None,
            pre_stop: None,
            rollout: None,
            created: None,
            drain: None,
        })
    }

    fn get<'a>(s: &'a LifecyclePolicyStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    fn with_drain(pre_stop: bool, drain: Option<DrainStatus>) -> LifecyclePolicyStatus {
        build(&StatusInput {
            generation: Some(2),
            mode: Mode::Enforce,
            results: &[],
            invalid: None,
            previous: None,
            now: Timestamp::from_second(100).unwrap(),
            post_start: None,
            pre_stop: pre_stop.then(HookReport::default),
            rollout: None,
            created: None,
            drain,
        })
    }

    /// DrainSafe: Unknown before a timed pod, True when all were safe,
    /// False naming the latest unsafe one; absent without a preStop; never
    /// in Ready's way.
    #[test]
    fn drain_safe_condition() {
        use crate::api::types::{RemovalSeconds, UnsafeDrain};
        assert!(
            !with_drain(false, None)
                .conditions
                .iter()
                .any(|c| c.type_ == "DrainSafe")
        );
        let s = with_drain(true, None);
        let c = get(&s, "DrainSafe");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", "NotObservedYet")
        );
        let safe = DrainStatus {
            observed: 3,
            safe: 3,
            removal_seconds: Some(RemovalSeconds { p50: 0.2, p99: 0.4 }),
            recommended_pre_stop_seconds: Some(2),
            ..Default::default()
        };
        let s = with_drain(true, Some(safe.clone()));
        let c = get(&s, "DrainSafe");
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Drained"));
        assert_eq!(
            c.message,
            "3 pods left their endpoints before they were told to stop; the removals seen need a sleep of at least 2 s before quitting"
        );
        assert_eq!(s.drain, Some(safe.clone()));
        let bad = DrainStatus {
            safe: 1,
            unsafe_: 2,
            last_unsafe: Some(UnsafeDrain {
                pod: "web-1".into(),
                gap_seconds: -0.4,
                message: "endpoints were removed 0.4 s after nginx began to quit: sleep at least 2 s before quitting".into(),
            }),
            ..safe
        };
        let s = with_drain(true, Some(bad));
        let c = get(&s, "DrainSafe");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "StoppedWhileServing")
        );
        assert_eq!(
            c.message,
            "2 of 3 pods stopped while still an endpoint; latest: pod web-1: endpoints were removed 0.4 s after nginx began to quit: sleep at least 2 s before quitting"
        );
        assert_ne!(get(&s, "Ready").reason, "StoppedWhileServing");
    }

    #[test]
    fn all_applied_is_ready() {
        let rs = [
            result("a", vec![(slot(), SlotOutcome::Claimed)], Done::Patched),
            result("b", vec![(slot(), SlotOutcome::AlreadySet)], Done::UpToDate),
        ];
        let s = build_at(&rs, Mode::Enforce, None, 100);
        assert_eq!((s.matched_workloads, s.patched_workloads), (2, 2));
        assert_eq!(get(&s, "Ready").status, "True");
        assert_eq!(
            get(&s, "Applied").message,
            "2 of 2 matched workloads carry the policy's hooks"
        );
        assert_eq!(get(&s, "Conflict").status, "False");
        assert_eq!(s.observed_generation, Some(2));
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(2))
        );
    }

    #[test]
    fn each_problem_has_its_reason_and_ready_follows() {
        let cases = [
            (
                result(
                    "a",
                    vec![(slot(), SlotOutcome::Claimed)],
                    Done::Failed("boom".into()),
                ),
                Mode::Enforce,
                "PatchFailed",
                "Error",
            ),
            (
                result("a", vec![(slot(), SlotOutcome::Claimed)], Done::WouldPatch),
                Mode::DryRun,
                "DryRun",
                "WouldPatch",
            ),
            (
                result(
                    "a",
                    vec![(slot(), SlotOutcome::Claimed)],
                    Done::WaitingForRolloutSlot,
                ),
                Mode::Enforce,
                "Pending",
                "Pending",
            ),
            (
                result(
                    "a",
                    vec![(slot(), SlotOutcome::HeldBy("old".into()))],
                    Done::UpToDate,
                ),
                Mode::Enforce,
                "Pending",
                "Pending",
            ),
            (
                result(
                    "a",
                    vec![(slot(), SlotOutcome::LostTo("old".into()))],
                    Done::UpToDate,
                ),
                Mode::Enforce,
                "Conflict",
                "Conflict",
            ),
            (
                result(
                    "a",
                    vec![(slot(), SlotOutcome::SkippedExisting)],
                    Done::UpToDate,
                ),
                Mode::Enforce,
                "Conflict",
                "Conflict",
            ),
        ];
        for (r, mode, ready_reason, state) in cases {
            let s = build_at(std::slice::from_ref(&r), mode, None, 100);
            assert_eq!(get(&s, "Ready").status, "False", "{r:?}");
            assert_eq!(get(&s, "Ready").reason, ready_reason, "{r:?}");
            assert_eq!(s.workloads[0].state, state, "{r:?}");
        }
    }

    #[test]
    fn staged_workloads_and_missing_containers_are_reported() {
        let mut staged = result_of(
            WorkloadKind::StatefulSet,
            "db",
            vec![(slot(), SlotOutcome::Claimed)],
            Done::Patched,
        );
        staged.decision.staged = Some("StatefulSet: updateStrategy OnDelete: ...".into());
        let mut missing = result("web", vec![(slot(), SlotOutcome::Claimed)], Done::UpToDate);
        missing.decision.missing_containers = vec!["envoy".into()];
        let mut none = result("bare", vec![], Done::UpToDate);
        none.decision.missing_containers = vec!["envoy".into()];
        let s = build_at(&[staged, missing, none], Mode::Enforce, None, 1);
        let by_name = |n: &str| s.workloads.iter().find(|w| w.name == n).unwrap().clone();
        assert_eq!(by_name("db").state, "Staged");
        assert_eq!(by_name("db").kind, WorkloadKind::StatefulSet);
        assert!(by_name("db").message.contains("OnDelete"));
        assert_eq!(by_name("web").state, "Patched");
        assert_eq!(by_name("web").message, "not in this pod template: envoy");
        assert_eq!(by_name("bare").state, "NoContainers");
        assert!(
            by_name("bare").message.contains("envoy"),
            "{:?}",
            by_name("bare")
        );
        // Staged workloads carry the hooks: they count as patched.
        assert_eq!(s.patched_workloads, 2);
    }

    #[test]
    fn a_deployment_without_selected_containers_is_reported() {
        let s = build_at(
            &[result("a", vec![], Done::UpToDate)],
            Mode::Enforce,
            None,
            1,
        );
        assert_eq!(s.workloads[0].state, "NoContainers");
        assert_eq!(s.patched_workloads, 0);
    }

    #[test]
    fn transition_times_move_only_on_change() {
        let ok = [result(
            "a",
            vec![(slot(), SlotOutcome::Claimed)],
            Done::Patched,
        )];
        let first = build_at(&ok, Mode::Enforce, None, 100);
        let again = build_at(&ok, Mode::Enforce, Some(&first), 200);
        assert_eq!(first, again, "an unchanged world gives an identical status");
        let bad = [result(
            "a",
            vec![(slot(), SlotOutcome::LostTo("x".into()))],
            Done::UpToDate,
        )];
        let changed = build_at(&bad, Mode::Enforce, Some(&again), 300);
        assert_eq!(
            get(&changed, "Ready").last_transition_time.0.as_second(),
            300
        );
        assert_eq!(
            get(&changed, "Applied").last_transition_time.0.as_second(),
            100
        );
    }

    #[test]
    fn the_list_is_bounded_and_problems_come_first() {
        let mut rs: Vec<WorkloadResult> = (0..50)
            .map(|i| {
                result(
                    &format!("ok-{i:02}"),
                    vec![(slot(), SlotOutcome::Claimed)],
                    Done::Patched,
                )
            })
            .collect();
        rs.push(result(
            "zz-broken",
            vec![(slot(), SlotOutcome::Claimed)],
            Done::Failed("denied".into()),
        ));
        let s = build_at(&rs, Mode::Enforce, None, 1);
        assert_eq!(s.workloads.len(), MAX_REPORTS);
        assert_eq!(s.workloads[0].name, "zz-broken");
        assert_eq!(s.workloads[0].message, "denied");
        assert_eq!(s.matched_workloads, 51);
    }

    #[test]
    fn the_whole_status_stays_bounded_whatever_the_input() {
        use crate::api::types::{
            CountedInstance, HookFailure, RolloutHalt, RolloutPhase, Watermark,
        };
        let t = |s: i64| Time(Timestamp::from_second(1_800_000_000 + s).unwrap());
        let huge = "失败🚀e\u{301}".repeat(20_000);
        let name = |i: usize| format!("{i:03}{}", "w".repeat(250));
        let results: Vec<WorkloadResult> = (0..500)
            .map(|i| {
                let mut r = result(
                    &name(i),
                    vec![(slot(), SlotOutcome::LostTo(huge.clone()))],
                    Done::Failed(huge.clone()),
                );
                r.decision.damage = Some(crate::apply::ledger::Damage::Unparsable(huge.clone()));
                r.decision.grace_too_short = Some(huge.clone());
                r.decision.missing_containers = vec![huge.clone()];
                r
            })
            .collect();
        let report = HookReport {
            summary: "0/1".into(),
            evidence: "marker".into(),
            failed: 1,
            last_not_triggered: Some(huge.clone()),
            last_container_exit: Some(huge.clone()),
            near_grace_period: Some(huge.clone()),
            last_failure: Some(HookFailure {
                pod: huge.clone(),
                container: huge.clone(),
                reason: huge.clone(),
                message: huge.clone(),
                time: t(0),
            }),
            counted: Some(Watermark {
                before: t(0),
                after: (0..256)
                    .map(|i| CountedInstance {
                        container_id: format!("{i:016x}"),
                        at: t(i),
                    })
                    .collect(),
            }),
            ..Default::default()
        };
        let keys: Vec<String> = (0..crate::apply::rollout::MAX_WAVE)
            .map(|i| format!("StatefulSet/{}", name(i)))
            .collect();
        let rollout = RolloutStatus {
            generation: 2,
            phase: RolloutPhase::Halted,
            rolled_out: 0,
            pending: 0,
            waiting_on: keys.clone(),
            wave_started_at: Some(t(0)),
            halted: Some(RolloutHalt {
                workload: huge.clone(),
                pod: huge.clone(),
                container: huge.clone(),
                reason: huge.clone(),
                message: huge.clone(),
                reverted: keys,
                time: t(0),
            }),
            waves: 0,
        };
        let s = build(&StatusInput {
            generation: Some(2),
            mode: Mode::Enforce,
            results: &results,
            invalid: Some(huge.clone()),
            previous: None,
            now: Timestamp::from_second(1_800_000_000).unwrap(),
            post_start: Some(report.clone()),
            pre_stop: Some(report),
            rollout: Some(rollout),
            created: None,
            drain: Some(DrainStatus {
                observed: 2,
                unsafe_: 2,
                last_unsafe: Some(crate::api::types::UnsafeDrain {
                    pod: huge.clone(),
                    gap_seconds: -1.0,
                    message: huge.clone(),
                }),
                ..Default::default()
            }),
        });
        let last = s.drain.as_ref().unwrap().last_unsafe.as_ref().unwrap();
        assert!(last.pod.len() <= crate::text::NAME);
        assert!(last.message.len() <= crate::text::NAME);
        let bytes = serde_json::to_vec(&s).unwrap().len();
        assert!(bytes <= MAX_STATUS_BYTES, "{bytes} bytes");
        assert!(
            s.conditions
                .iter()
                .all(|c| c.message.len() <= crate::text::CONDITION_MESSAGE)
        );
        assert!(
            s.workloads
                .iter()
                .all(|w| w.message.len() <= crate::text::WORKLOAD_MESSAGE)
        );
    }
}
