//! Safe rollout, pure: which workloads a policy may patch now (a canary,
//! then waves), and when to halt and revert. Everything it needs is in the
//! world (which workloads carry the current hooks, which are healthy, which
//! failed) or in the status (a halt, a wave's start), so a restarted
//! operator takes the same step: nothing is patched twice, nothing skipped.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::names::reason;
use crate::api::types::{
    OnFailure, RolloutHalt, RolloutPhase, RolloutSpec, RolloutStatus, RolloutStrategy,
};
use crate::apply::workload::WorkloadKey;

/// A wave is at most this many workloads (also "all at once"), and a halt
/// reverts at most this many: the status lists them, and must stay bounded.
pub const MAX_WAVE: usize = 100;

/// A hook failure seen in a workload's pods: the observer's index keeps the
/// latest per workload (`verify::index::WorkloadHealth`), and reconcile hands
/// it here bounded, its message explained.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub pod: String,
    pub container: String,
    pub reason: String,
    pub message: String,
}

/// One matched workload, as the rollout sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Candidates come sorted (the order waves take them in).
    pub key: WorkloadKey,
    /// Its template carries the policy's current hooks.
    pub carries: bool,
    /// Patched, rolled out, and its new pods ran the hooks.
    pub healthy: bool,
    /// A hook failure in its pods, for the current generation.
    pub failure: Option<Failure>,
    /// It runs pods: a canary without any would prove nothing.
    pub has_pods: bool,
}

pub struct Input<'a> {
    pub spec: &'a RolloutSpec,
    pub max_concurrent_rollouts: i32,
    pub generation: i64,
    pub previous: Option<&'a RolloutStatus>,
    pub candidates: &'a [Candidate],
    pub now: Timestamp,
}

/// The step to take now.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Workloads that may get the hooks now. Others that still need them
    /// wait.
    pub allow: BTreeSet<WorkloadKey>,
    /// Workloads to hand their template from before the policy back.
    pub revert: BTreeSet<WorkloadKey>,
    /// What to say about the step (waiting for what, or why halted).
    pub waiting_for: Option<String>,
    /// A wave (the canary first) starts now: worth an event.
    pub new_wave: bool,
    pub status: RolloutStatus,
}

/// Decides the step. Immediate allows everything and never halts.
pub fn step(input: &Input) -> Step {
    let cs = input.candidates;
    let previous = input.previous.filter(|p| p.generation == input.generation);
    let rolled_out = cs.iter().filter(|c| c.carries && c.healthy).count() as i32;
    let pending = cs.iter().filter(|c| !c.carries).count() as i32;
    let status = RolloutStatus {
        generation: input.generation,
        // Set on every way out below.
        phase: RolloutPhase::Canary,
        rolled_out,
        pending,
        waiting_on: Vec::new(),
        waves: previous.map_or(0, |p| p.waves),
        wave_started_at: previous.and_then(|p| p.wave_started_at.clone()),
        halted: None,
    };
    let step = Step {
        allow: BTreeSet::new(),
        revert: BTreeSet::new(),
        waiting_for: None,
        new_wave: false,
        status: status.clone(),
    };
    if input.spec.strategy == RolloutStrategy::Immediate {
        return immediate(step, status, cs);
    }
    // A halt stands until the spec changes (a new generation).
    if let Some(h) = previous.and_then(|p| p.halted.clone()) {
        return halt(step, status, h);
    }
    let waiting: Vec<&Candidate> = cs.iter().filter(|c| c.carries && !c.healthy).collect();
    let started = status.wave_started_at.as_ref();
    let proven = previous.is_some_and(proven);
    let late = || deadline_halt(input, &waiting, started).filter(|_| !proven);
    if let Some(h) = failure_halt(input).or_else(late) {
        return halt(step, status, h);
    }
    if proven {
        return proven_step(step, status, cs);
    }
    if !waiting.is_empty() {
        return wait_for_wave(step, status, &waiting, input.now);
    }
    next_wave(input, previous, step, status)
}

/// This generation's hooks have run verified on a workload and the rollout
/// reached Complete: they are proven. A workload that comes later (created,
/// labelled, a namespace newly selected) or rolls for a change of its own
/// reopens no canary, so the admission webhook keeps injecting through a
/// burst of creates; a hook failure still halts.
fn proven(previous: &RolloutStatus) -> bool {
    previous.phase == RolloutPhase::Complete && (previous.rolled_out > 0 || previous.waves > 0)
}

/// Proven hooks: every workload may get them now (within
/// `maxConcurrentRollouts`), and the rollout stays Complete.
fn proven_step(mut step: Step, mut status: RolloutStatus, cs: &[Candidate]) -> Step {
    step.allow = cs
        .iter()
        .filter(|c| !c.carries)
        .map(|c| c.key.clone())
        .collect();
    status.phase = RolloutPhase::Complete;
    step.status = status;
    step
}

/// Immediate: every workload may get the hooks now.
fn immediate(mut step: Step, mut status: RolloutStatus, cs: &[Candidate]) -> Step {
    step.allow = cs.iter().map(|c| c.key.clone()).collect();
    status.phase = if status.pending == 0 {
        RolloutPhase::Complete
    } else {
        RolloutPhase::Waves
    };
    step.status = status;
    step
}

/// A hook failed on a workload this generation rolled: the halt.
fn failure_halt(input: &Input) -> Option<RolloutHalt> {
    let cs = input.candidates;
    let first = cs.iter().find(|c| c.carries && c.failure.is_some())?;
    let f = first.failure.clone().expect("just found");
    let failed: Vec<String> = cs
        .iter()
        .filter(|c| c.carries && c.failure.is_some())
        .map(|c| c.key.to_string())
        .take(MAX_WAVE)
        .collect();
    Some(RolloutHalt {
        workload: first.key.to_string(),
        pod: f.pod,
        container: f.container,
        reason: f.reason,
        message: f.message,
        reverted: reverted(input, failed),
        time: Time(input.now),
    })
}

/// The wave is not done by the deadline: the halt.
fn deadline_halt(
    input: &Input,
    waiting: &[&Candidate],
    started: Option<&Time>,
) -> Option<RolloutHalt> {
    let deadline = SignedDuration::from_secs(input.spec.progress_deadline_seconds);
    let first = waiting.first()?;
    if input.now.duration_since(started?.0) <= deadline {
        return None;
    }
    let late: Vec<String> = waiting
        .iter()
        .take(MAX_WAVE)
        .map(|c| c.key.to_string())
        .collect();
    Some(RolloutHalt {
        workload: first.key.to_string(),
        pod: String::new(),
        container: String::new(),
        reason: reason::PROGRESS_DEADLINE_EXCEEDED.into(),
        message: format!(
            "{} not rolled out with its hooks verified within {}s",
            crate::text::list(&late, ", ", 600),
            input.spec.progress_deadline_seconds
        ),
        reverted: reverted(input, late),
        time: Time(input.now),
    })
}

/// What a halt hands back: the failing workloads under Revert, none under Halt.
fn reverted(input: &Input, failing: Vec<String>) -> Vec<String> {
    if input.spec.on_failure == OnFailure::Revert {
        failing
    } else {
        Vec::new()
    }
}

/// The canary or wave is patched but not verified yet: wait for it.
fn wait_for_wave(
    mut step: Step,
    mut status: RolloutStatus,
    waiting: &[&Candidate],
    now: Timestamp,
) -> Step {
    status.waiting_on = waiting
        .iter()
        .take(MAX_WAVE)
        .map(|c| c.key.to_string())
        .collect();
    status.phase = phase(status.rolled_out);
    if status.wave_started_at.is_none() {
        // Patched by a predecessor that died before writing the status.
        status.wave_started_at = Some(Time(now));
    }
    step.waiting_for = Some(format!(
        "waiting for {} to roll out with its hooks verified",
        crate::text::list(&status.waiting_on, ", ", 300)
    ));
    step.status = status;
    step
}

/// Everything patched so far is verified: the next wave (the canary while
/// nothing is verified yet), or Complete.
fn next_wave(
    input: &Input,
    previous: Option<&RolloutStatus>,
    mut step: Step,
    mut status: RolloutStatus,
) -> Step {
    let rolled_out = status.rolled_out;
    let size = wave_len(input.spec, input.max_concurrent_rollouts, rolled_out);
    let mut next: Vec<&Candidate> = input.candidates.iter().filter(|c| !c.carries).collect();
    if rolled_out == 0 {
        canary_first(&mut next);
    }
    step.allow = next.iter().take(size).map(|c| c.key.clone()).collect();
    if step.allow.is_empty() {
        status.phase = RolloutPhase::Complete;
    } else {
        status.phase = phase(rolled_out);
        let waiting_on: Vec<String> = step.allow.iter().map(WorkloadKey::to_string).collect();
        // The same wave still waiting to be written (rollout slots): not a new one.
        if previous.is_none_or(|p| p.waiting_on != waiting_on) {
            status.waves += 1;
            status.wave_started_at = Some(Time(input.now));
            step.new_wave = true;
        }
        status.waiting_on = waiting_on;
        step.waiting_for = Some(if rolled_out == 0 {
            "waiting for the canary".to_string()
        } else {
            "waiting for the current wave".to_string()
        });
    }
    step.status = status;
    step
}

/// How many workloads the next wave takes: the canary alone while nothing
/// is verified, then `waveSize`, else `maxConcurrentRollouts`, else all.
fn wave_len(spec: &RolloutSpec, max_concurrent_rollouts: i32, rolled_out: i32) -> usize {
    if rolled_out == 0 {
        1
    } else if spec.wave_size > 0 {
        spec.wave_size as usize
    } else if max_concurrent_rollouts > 0 {
        max_concurrent_rollouts as usize
    } else {
        usize::MAX
    }
    .min(MAX_WAVE)
}

/// The canary: the first that runs pods, if any does.
fn canary_first(next: &mut [&Candidate]) {
    next.sort_by_key(|c| !c.has_pods);
}

/// The waves a rollout of these candidates would take if every wave were
/// verified (what `kubectl lifecycle diff` shows): the candidates that do
/// not carry the hooks yet, the canary first; one wave for Immediate.
pub fn waves(
    spec: &RolloutSpec,
    max_concurrent_rollouts: i32,
    candidates: &[Candidate],
) -> Vec<Vec<WorkloadKey>> {
    let mut next: Vec<&Candidate> = candidates.iter().filter(|c| !c.carries).collect();
    if spec.strategy == RolloutStrategy::Immediate {
        let all: Vec<WorkloadKey> = next.iter().map(|c| c.key.clone()).collect();
        return if all.is_empty() {
            Vec::new()
        } else {
            vec![all]
        };
    }
    let mut rolled_out = candidates.iter().filter(|c| c.carries).count() as i32;
    let mut out = Vec::new();
    while !next.is_empty() {
        // Each wave is taken from the candidates in order, as `next_wave`
        // takes it, the canary first while nothing is rolled out.
        if rolled_out == 0 {
            canary_first(&mut next);
        }
        let n = wave_len(spec, max_concurrent_rollouts, rolled_out).min(next.len());
        out.push(next.drain(..n).map(|c| c.key.clone()).collect());
        rolled_out += n as i32;
        next.sort_by(|a, b| a.key.cmp(&b.key));
    }
    out
}

/// The canary until a workload is verified, waves after.
fn phase(rolled_out: i32) -> RolloutPhase {
    if rolled_out == 0 {
        RolloutPhase::Canary
    } else {
        RolloutPhase::Waves
    }
}

fn halt(mut step: Step, mut status: RolloutStatus, h: RolloutHalt) -> Step {
    // Written by this operator; a key it cannot read names no workload.
    step.revert = h.reverted.iter().filter_map(|k| k.parse().ok()).collect();
    step.waiting_for = Some(format!(
        "the rollout is halted ({} in {}); change the policy to resume",
        h.reason, h.workload
    ));
    status.phase = RolloutPhase::Halted;
    status.waiting_on.clear();
    status.halted = Some(h);
    step.status = status;
    step
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_take_the_canary_with_pods_first_then_wave_size() {
        let c = |name: &str, carries: bool, has_pods: bool| Candidate {
            key: WorkloadKey {
                namespace: None,
                kind: crate::api::types::WorkloadKind::Deployment,
                name: name.into(),
            },
            carries,
            healthy: carries,
            failure: None,
            has_pods,
        };
        let names = |w: Vec<Vec<WorkloadKey>>| -> Vec<Vec<String>> {
            w.into_iter()
                .map(|w| w.into_iter().map(|k| k.name).collect())
                .collect()
        };
        let cs = [
            c("a", false, false),
            c("b", false, true),
            c("c", false, true),
            c("d", false, true),
        ];
        let mut spec = RolloutSpec {
            wave_size: 2,
            ..Default::default()
        };
        assert_eq!(
            names(waves(&spec, 0, &cs)),
            [vec!["b"], vec!["a", "c"], vec!["d"]]
        );
        spec.wave_size = 0;
        assert_eq!(
            names(waves(&spec, 0, &cs)),
            [vec!["b"], vec!["a", "c", "d"]]
        );
        assert_eq!(names(waves(&spec, 1, &cs)).len(), 4);
        // One already carries the hooks: no canary again, waves of the rest.
        let cs2 = [c("a", true, true), c("b", false, true), c("c", false, true)];
        assert_eq!(names(waves(&spec, 0, &cs2)), [vec!["b", "c"]]);
        spec.strategy = RolloutStrategy::Immediate;
        assert_eq!(names(waves(&spec, 1, &cs)), [vec!["a", "b", "c", "d"]]);
        assert!(waves(&spec, 0, &cs2[..1]).is_empty());
    }

    fn spec() -> RolloutSpec {
        RolloutSpec::default()
    }

    fn c(key: &str, carries: bool, healthy: bool) -> Candidate {
        Candidate {
            key: key.parse().unwrap(),
            carries,
            healthy,
            failure: None,
            has_pods: true,
        }
    }

    fn failed(key: &str) -> Candidate {
        Candidate {
            failure: Some(Failure {
                pod: format!("{key}-pod"),
                container: "app".into(),
                reason: "FailedPostStartHook".into(),
                message: "exited with 1".into(),
            }),
            ..c(key, true, false)
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn run(
        spec: &RolloutSpec,
        max: i32,
        prev: Option<&RolloutStatus>,
        cs: &[Candidate],
        now: i64,
    ) -> Step {
        step(&Input {
            spec,
            max_concurrent_rollouts: max,
            generation: 3,
            previous: prev,
            candidates: cs,
            now: at(now),
        })
    }

    fn allowed(s: &Step) -> Vec<String> {
        s.allow.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_canary_first_then_the_rest_in_one_wave() {
        let five: Vec<Candidate> = (1..=5)
            .map(|i| c(&format!("Deployment/d{i}"), false, false))
            .collect();
        let s = run(&spec(), 0, None, &five, 0);
        assert_eq!(allowed(&s), ["Deployment/d1"]);
        assert_eq!(
            (s.status.phase.as_str(), s.status.waves, s.status.pending),
            ("Canary", 1, 5)
        );
        assert_eq!(s.status.waiting_on, ["Deployment/d1"]);
        // Patched, not verified yet: nothing else.
        let mut world = five.clone();
        world[0].carries = true;
        let s2 = run(&spec(), 0, Some(&s.status), &world, 5);
        assert!(s2.allow.is_empty());
        assert_eq!(s2.status.phase, "Canary");
        assert_eq!(
            s2.status.wave_started_at, s.status.wave_started_at,
            "the deadline runs from the patch"
        );
        // Verified: every other one at once (no wave size, no limit).
        world[0].healthy = true;
        let s3 = run(&spec(), 0, Some(&s2.status), &world, 10);
        assert_eq!(
            allowed(&s3),
            [
                "Deployment/d2",
                "Deployment/d3",
                "Deployment/d4",
                "Deployment/d5"
            ]
        );
        assert_eq!(
            (
                s3.status.phase.as_str(),
                s3.status.waves,
                s3.status.rolled_out
            ),
            ("Waves", 2, 1)
        );
        // All verified: complete, nothing more.
        let done: Vec<Candidate> = (1..=5)
            .map(|i| c(&format!("Deployment/d{i}"), true, true))
            .collect();
        let s4 = run(&spec(), 0, Some(&s3.status), &done, 20);
        assert!(s4.allow.is_empty() && s4.revert.is_empty());
        assert_eq!(
            (
                s4.status.phase.as_str(),
                s4.status.rolled_out,
                s4.status.pending
            ),
            ("Complete", 5, 0)
        );
    }

    /// Once Complete with a verified workload, the generation is proven:
    /// later workloads (hooked at admission, or not yet) reopen no canary,
    /// the phase stays Complete (the webhook's gate), and a failure halts.
    #[test]
    fn a_proven_generation_stays_complete_as_workloads_come() {
        let done: Vec<Candidate> = (1..=2)
            .map(|i| c(&format!("Deployment/d{i}"), true, true))
            .collect();
        let mut complete = run(&spec(), 0, None, &done, 0).status;
        assert_eq!(
            (complete.phase.as_str(), complete.rolled_out),
            ("Complete", 2)
        );
        // Its last wave began at 0: a deadline would run from there.
        complete.wave_started_at = Some(Time(at(0)));
        // One admitted (carries, not verified yet), one without the hooks.
        let mut world = done.clone();
        world.push(c("Deployment/new-1", true, false));
        world.push(c("Deployment/new-2", false, false));
        let s = run(&spec(), 1, Some(&complete), &world, 10);
        assert_eq!(s.status.phase, "Complete");
        assert_eq!(allowed(&s), ["Deployment/new-2"]);
        assert!(!s.new_wave && s.status.waiting_on.is_empty());
        assert_eq!(s.status.waves, complete.waves);
        // Long past the deadline, one of them rolls again for a change of
        // its own (a restart, a new image): that is no late wave. (Before,
        // this halted the policy with ProgressDeadlineExceeded and
        // reverted the workload.)
        world[0].healthy = false;
        let s2 = run(&spec(), 1, Some(&s.status), &world, 100_000);
        assert_eq!(s2.status.phase, "Complete");
        assert!(s2.status.halted.is_none() && s2.revert.is_empty());
        world[2] = failed("Deployment/new-1");
        let s3 = run(&spec(), 1, Some(&s2.status), &world, 100_010);
        assert_eq!(s3.status.phase, "Halted");
        assert_eq!(allowed(&s3), Vec::<String>::new());
    }

    /// A policy that was Complete with nothing to roll has proven nothing:
    /// the first workload that gets its hooks (at admission, say) is the
    /// canary, and holds the rest until verified.
    #[test]
    fn an_empty_complete_proves_nothing() {
        let empty = run(&spec(), 0, None, &[], 0).status;
        assert_eq!((empty.phase.as_str(), empty.waves), ("Complete", 0));
        let world = [
            c("Deployment/a", true, false),
            c("Deployment/b", false, false),
        ];
        let s = run(&spec(), 0, Some(&empty), &world, 5);
        assert_eq!(s.status.phase, "Canary");
        assert!(s.allow.is_empty(), "b waits for a");
    }

    #[test]
    fn waves_take_wave_size_else_max_concurrent_rollouts() {
        let mut world: Vec<Candidate> = (1..=7)
            .map(|i| c(&format!("Deployment/d{i}"), false, false))
            .collect();
        world[0] = c("Deployment/d1", true, true);
        let sized = RolloutSpec {
            wave_size: 2,
            ..spec()
        };
        assert_eq!(
            allowed(&run(&sized, 3, None, &world, 0)),
            ["Deployment/d2", "Deployment/d3"]
        );
        assert_eq!(
            allowed(&run(&spec(), 3, None, &world, 0)),
            ["Deployment/d2", "Deployment/d3", "Deployment/d4"]
        );
        // A wave waits for the one before.
        world[1].carries = true;
        assert!(run(&sized, 3, None, &world, 0).allow.is_empty());
    }

    #[test]
    fn a_failure_halts_reverts_and_stays_until_the_spec_changes() {
        let world = vec![
            failed("Deployment/d1"),
            c("Deployment/d2", false, false),
            c("Deployment/d3", false, false),
        ];
        let s = run(&spec(), 0, None, &world, 0);
        assert!(s.allow.is_empty());
        assert_eq!(
            s.revert.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["Deployment/d1"]
        );
        let h = s.status.halted.clone().unwrap();
        assert_eq!(
            (h.workload.as_str(), h.pod.as_str(), h.container.as_str()),
            ("Deployment/d1", "Deployment/d1-pod", "app")
        );
        assert_eq!(
            (h.reason.as_str(), h.message.as_str()),
            ("FailedPostStartHook", "exited with 1")
        );
        assert_eq!(s.status.phase, "Halted");
        // Reverted (carries nothing now, no failure): still halted, still reverting, nothing allowed.
        let after = vec![
            c("Deployment/d1", false, false),
            c("Deployment/d2", false, false),
            c("Deployment/d3", false, false),
        ];
        let s2 = run(&spec(), 0, Some(&s.status), &after, 60);
        assert!(s2.allow.is_empty());
        assert_eq!(s2.revert, s.revert);
        assert_eq!(
            s2.status.halted, s.status.halted,
            "the halt is kept as it was"
        );
        // A new generation starts afresh from a canary.
        let s3 = step(&Input {
            spec: &spec(),
            max_concurrent_rollouts: 0,
            generation: 4,
            previous: Some(&s.status),
            candidates: &after,
            now: at(90),
        });
        assert_eq!(allowed(&s3), ["Deployment/d1"]);
        assert!(s3.status.halted.is_none() && s3.revert.is_empty());
    }

    #[test]
    fn halt_without_revert_only_stops() {
        let world = vec![failed("Deployment/d1"), c("Deployment/d2", false, false)];
        let s = run(
            &RolloutSpec {
                on_failure: OnFailure::Halt,
                ..spec()
            },
            0,
            None,
            &world,
            0,
        );
        assert!(s.allow.is_empty() && s.revert.is_empty());
        assert!(s.status.halted.unwrap().reverted.is_empty());
    }

    #[test]
    fn a_canary_past_its_deadline_halts_with_the_reason() {
        let first = run(
            &spec(),
            0,
            None,
            &[
                c("Deployment/d1", false, false),
                c("Deployment/d2", false, false),
            ],
            0,
        );
        let world = [
            c("Deployment/d1", true, false),
            c("Deployment/d2", false, false),
        ];
        assert!(
            run(&spec(), 0, Some(&first.status), &world, 600)
                .status
                .halted
                .is_none()
        );
        let late = run(&spec(), 0, Some(&first.status), &world, 601);
        let h = late.status.halted.unwrap();
        assert_eq!(
            (h.reason.as_str(), h.workload.as_str()),
            ("ProgressDeadlineExceeded", "Deployment/d1")
        );
        assert!(h.message.contains("within 600s"), "{}", h.message);
        assert_eq!(
            late.revert
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["Deployment/d1"]
        );
    }

    #[test]
    fn a_restart_mid_wave_resumes_without_patching_twice() {
        // A predecessor patched d1..d3 (the wave) and died before writing
        // the status: the wave's start is unknown, so it starts now.
        let world = [
            c("Deployment/d0", true, true),
            c("Deployment/d1", true, false),
            c("Deployment/d2", true, true),
            c("Deployment/d3", true, false),
            c("Deployment/d4", false, false),
        ];
        let s = run(&spec(), 0, None, &world, 0);
        assert!(s.allow.is_empty(), "the wave is not done: {:?}", s.allow);
        assert_eq!(s.status.waiting_on, ["Deployment/d1", "Deployment/d3"]);
        assert_eq!(s.status.wave_started_at, Some(Time(at(0))));
        assert_eq!(s.status.phase, "Waves");
    }

    #[test]
    fn a_wave_waiting_for_rollout_slots_is_still_the_same_wave() {
        let world = [
            c("Deployment/d1", true, true),
            c("Deployment/d2", false, false),
        ];
        let first = run(&spec(), 0, None, &world, 0);
        assert!(first.new_wave);
        assert_eq!(first.status.waves, 1);
        // Not written yet (no slot): the same wave, the same start.
        let again = run(&spec(), 0, Some(&first.status), &world, 30);
        assert!(!again.new_wave);
        assert_eq!(again.status, first.status);
    }

    #[test]
    fn the_canary_is_a_workload_that_runs_pods() {
        let idle = Candidate {
            has_pods: false,
            ..c("Deployment/a-scaled-to-zero", false, false)
        };
        let world = [
            idle.clone(),
            c("Deployment/b", false, false),
            c("Deployment/c", false, false),
        ];
        assert_eq!(allowed(&run(&spec(), 0, None, &world, 0)), ["Deployment/b"]);
        // None runs pods: the first one.
        let none = [
            idle,
            Candidate {
                has_pods: false,
                ..c("Deployment/b", false, false)
            },
        ];
        assert_eq!(
            allowed(&run(&spec(), 0, None, &none, 0)),
            ["Deployment/a-scaled-to-zero"]
        );
    }

    #[test]
    fn immediate_allows_everything_and_never_halts() {
        let world = vec![failed("Deployment/d1"), c("Deployment/d2", false, false)];
        let imm = RolloutSpec {
            strategy: RolloutStrategy::Immediate,
            ..spec()
        };
        let s = run(&imm, 0, None, &world, 0);
        assert_eq!(allowed(&s), ["Deployment/d1", "Deployment/d2"]);
        assert!(s.revert.is_empty() && s.status.halted.is_none());
    }
}
