//! What one reconcile decides, pure: from a [`Snapshot`] of everything it
//! read (the policy, its neighbours, the cached workloads, the observed
//! health, the rollout status last written) to the decisions and the
//! rollout step, then from the write results to what the status reports.
//! The canary and the waves are unit-tested here, without an API.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use kube::core::Selector;
use kube::runtime::controller::Action;

use super::error::{Error, write_error};
use super::status::{Done, WorkloadResult};
use super::{PENDING_RETRY, RESYNC};
use crate::api::types::{
    Handler, HookReport, LifecyclePolicy, LifecyclePolicySpec, Mode, RolloutStatus, Verification,
};
use crate::apply::decide::{self, Decision, Hold, Intent, Planned, Scope};
use crate::apply::ledger::Via;
use crate::apply::neighbours::Neighbourhoods;
use crate::apply::plan::SlotOutcome;
use crate::apply::rollout;
use crate::apply::workload::{Workload, WorkloadKey};
use crate::hooks::render;
use crate::runtime::server_version;
use crate::text::{self, explain};
use crate::verify::index::WorkloadHealth;

/// Everything a reconcile decides from, read before anything is written.
pub struct Snapshot<'a> {
    pub policy: &'a LifecyclePolicy,
    pub selector: &'a Selector,
    /// False when the policy is being deleted or cannot act: it releases.
    pub active: bool,
    pub neighbours: &'a Neighbourhoods,
    pub workloads: Vec<Arc<Workload>>,
    /// Observed health by workload, for the rollout.
    pub health: &'a HashMap<WorkloadKey, WorkloadHealth>,
    /// The rollout status last written for the policy's generation.
    pub previous: Option<&'a RolloutStatus>,
    pub now: Timestamp,
}

/// The decisions, and the rollout step when the policy enforces.
pub struct Decided {
    pub decisions: Vec<Decision>,
    pub step: Option<rollout::Step>,
    /// The step halts or starts a wave: its status is written before any
    /// workload, so a refused status write can never make the next
    /// reconcile redo or undo what it causes.
    pub records_first: bool,
}

/// Plans every workload once, takes the rollout step from those plans
/// (Enforce only: a canary, then waves; halt and revert), and gates the
/// writes with it, so that held workloads take no rollout slot. Only a halt
/// that reverts workloads plans again, with them handed back.
pub fn decide(s: &Snapshot) -> Decided {
    let none = BTreeSet::new();
    let scope = |revert, hold| Scope {
        policy: s.policy,
        selector: s.selector,
        active: s.active,
        neighbours: s.neighbours,
        revert,
        hold,
        now: s.now,
        via: Via::Background,
    };
    let plans = decide::plan_all(&scope(&none, None), s.workloads.clone());
    if !s.active || s.policy.spec.mode != Mode::Enforce {
        return Decided {
            decisions: decide::intents(&scope(&none, None), plans),
            step: None,
            records_first: false,
        };
    }
    let step = rollout_step(s, &plans.items);
    let hold = Hold {
        allow: step.allow.clone(),
        why: step
            .waiting_for
            .clone()
            .unwrap_or_else(|| "waiting for the rollout".to_string()),
    };
    let plans = if step.revert.is_empty() {
        plans
    } else {
        decide::plan_all(&scope(&step.revert, None), s.workloads.clone())
    };
    let decisions = decide::intents(&scope(&step.revert, Some(&hold)), plans);
    let was_halted = s.previous.is_some_and(|p| p.halted.is_some());
    Decided {
        decisions,
        records_first: step.new_wave || (step.status.halted.is_some() && !was_halted),
        step: Some(step),
    }
}

/// The rollout step for the plans as they stand: which matched workloads
/// still need the hooks, which carry them and are healthy.
fn rollout_step(s: &Snapshot, plans: &[Planned]) -> rollout::Step {
    let policy = s.policy;
    // A wave just patched must show its new pods ran postStart, not just a
    // finished rollout: a postStart failing after a second can let a pod
    // look available for a moment.
    let strong =
        policy.spec.post_start.is_some() && policy.spec.verification != Verification::Disabled;
    let scripts = render::scripts(&policy.spec, &policy.rendered());
    let candidates: Vec<rollout::Candidate> = plans
        .iter()
        .filter(|p| p.matched && (p.plan.ledger.is_some() || p.changes_template()))
        .map(|p| {
            let key = p.key.clone();
            let carries = !p.changes_template();
            let h = s.health.get(&key).cloned().unwrap_or_default();
            let in_wave = s
                .previous
                .is_some_and(|r| r.waiting_on.iter().any(|k| *k == key.to_string()));
            let pods = p.workload.expected_pods();
            let verified = !strong || !in_wave || h.post_start_ok as i64 >= pods;
            rollout::Candidate {
                // A workload without pods has nothing to prove or disprove:
                // done once patched (its controller's status may lag).
                healthy: carries && (pods == 0 || (!p.workload.is_rolling() && verified)),
                // Bounded for the status, the wrapper replaced by the user's command.
                failure: h.failure.filter(|_| carries).map(|f| rollout::Failure {
                    pod: text::bounded(&f.pod, text::NAME),
                    container: text::bounded(&f.container, text::NAME),
                    reason: text::bounded(&f.reason, text::NAME),
                    message: explain::hook_failure(&f.message, &scripts),
                }),
                has_pods: pods > 0,
                carries,
                key,
            }
        })
        .collect();
    rollout::step(&rollout::Input {
        spec: &policy.spec.rollout,
        max_concurrent_rollouts: policy.spec.max_concurrent_rollouts,
        generation: policy.metadata.generation.unwrap_or_default(),
        previous: s.previous,
        candidates: &candidates,
        now: s.now,
    })
}

/// What became of one decision's write (`None`: nothing was sent).
pub type Written = Option<Result<(), kube::Error>>;

/// Each decision with what became of it, and how many writes were refused
/// because the workload had changed since it was read.
pub fn results(decisions: Vec<Decision>, written: Vec<Written>) -> (Vec<WorkloadResult>, usize) {
    let mut stale = 0;
    let results = decisions
        .into_iter()
        .zip(written)
        .map(|(decision, result)| {
            let done = match (&decision.intent, result) {
                (_, Some(Ok(()))) => Done::Patched,
                (_, Some(Err(e))) => {
                    if super::error::is_stale_write(&e) {
                        stale += 1;
                    }
                    Done::Failed(explain::api_error(&e))
                }
                (Intent::WouldPatch, None) => Done::WouldPatch,
                (Intent::WaitForSlot, None) => Done::WaitingForRolloutSlot,
                (Intent::Held(why), None) => Done::Held(why.clone()),
                (_, None) => Done::UpToDate,
            };
            WorkloadResult { decision, done }
        })
        .collect();
    (results, stale)
}

/// The selector to decide with, and why the policy cannot act when its
/// selector is invalid (then it matches nothing and hands back its hooks).
pub fn selection(policy: &LifecyclePolicy) -> (Selector, Option<String>) {
    match Selector::try_from(LabelSelector::from(&policy.spec.selector)) {
        Ok(selector) => {
            match zero_sleep_refused(&policy.spec, server_version::zero_sleep_allowed()) {
                // The server would refuse every patch with it: say so once, on
                // the status, instead of retrying writes that cannot succeed.
                Some(why) => (Selector::default(), Some(why)),
                None => (selector, None),
            }
        }
        Err(e) => (
            Selector::default(),
            Some(format!(
                "invalid selector: {e}; the policy matches nothing, and hands back the hooks it set"
            )),
        ),
    }
}

/// Why a policy's `sleep: {seconds: 0}` cannot be applied: the API server
/// is older than 1.34 and would refuse the pod template.
fn zero_sleep_refused(spec: &LifecyclePolicySpec, allowed: bool) -> Option<String> {
    if allowed {
        return None;
    }
    let zero = |h: &Option<Handler>| {
        h.as_ref()
            .and_then(|h| h.sleep.as_ref())
            .is_some_and(|s| s.seconds == 0)
    };
    let hooks: Vec<&str> = [("postStart", &spec.post_start), ("preStop", &spec.pre_stop)]
        .into_iter()
        .filter(|(_, h)| zero(h))
        .map(|(name, _)| name)
        .collect();
    if hooks.is_empty() {
        return None;
    }
    let server = server_version::get().map_or_else(|| "older".to_string(), |v| v.to_string());
    Some(format!(
        "{}: sleep of 0 seconds needs Kubernetes 1.{} or newer, and the API server is {server}; \
         use 1 second or more. The policy matches nothing, and hands back the hooks it set",
        hooks.join(" and "),
        server_version::ZERO_SLEEP_MINOR
    ))
}

/// The observer's reports with each last failure told in the user's own
/// command, not the marker wrapper's.
pub fn readable(
    policy: &LifecyclePolicy,
    (mut post_start, mut pre_stop): (Option<HookReport>, Option<HookReport>),
) -> (Option<HookReport>, Option<HookReport>) {
    let scripts = render::scripts(&policy.spec, &policy.rendered());
    for f in [&mut post_start, &mut pre_stop]
        .into_iter()
        .flatten()
        .filter_map(|r| r.last_failure.as_mut())
    {
        f.message = explain::hook_failure(&f.message, &scripts);
    }
    (post_start, pre_stop)
}

/// After an apply: failed writes are retried with backoff (the status says
/// which and why), anything waiting is looked at again soon, the rest at
/// the next resync.
pub fn after_apply(
    results: &[WorkloadResult],
    stale: usize,
    rollout: Option<&RolloutStatus>,
) -> Result<Action, Error> {
    let failed = count(results, |d| matches!(d, Done::Failed(_)));
    if failed > 0 {
        return Err(write_error(failed, stale));
    }
    let held = |r: &WorkloadResult| {
        r.decision
            .plan
            .outcomes
            .values()
            .any(|o| matches!(o, SlotOutcome::HeldBy(_)))
    };
    let waiting = results
        .iter()
        .any(|r| r.done == Done::WaitingForRolloutSlot || held(r))
        || rollout.is_some_and(|r| !r.waiting_on.is_empty());
    Ok(Action::requeue(if waiting {
        PENDING_RETRY
    } else {
        RESYNC
    }))
}

/// After a cleanup: the finalizer may go only once nothing is left to hand
/// back (a release waiting for a rollout slot is pending, not failed).
pub fn after_cleanup(results: &[WorkloadResult], stale: usize) -> Result<(), Error> {
    let failed = count(results, |d| matches!(d, Done::Failed(_)));
    if failed > 0 {
        return Err(write_error(failed, stale));
    }
    let waiting = count(results, |d| *d == Done::WaitingForRolloutSlot);
    if waiting > 0 {
        return Err(Error::CleanupPending(waiting));
    }
    Ok(())
}

fn count(results: &[WorkloadResult], f: fn(&Done) -> bool) -> usize {
    results.iter().filter(|r| f(&r.done)).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use serde_json::{Value, json};

    fn policy(extra: Value) -> LifecyclePolicy {
        let mut p = json!({
            "apiVersion": "lifecycle-operator.io/v1alpha1", "kind": "LifecyclePolicy",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "generation": 1,
                         "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "preStop": {"sleep": {"seconds": 1}}},
        });
        json_patch::merge(&mut p, &extra);
        serde_json::from_value(p).unwrap()
    }

    use crate::apply::fixtures::cached as deployment;

    fn run(
        p: &LifecyclePolicy,
        workloads: Vec<Arc<Workload>>,
        health: &HashMap<WorkloadKey, WorkloadHealth>,
        previous: Option<&RolloutStatus>,
    ) -> Decided {
        let selector = Selector::try_from(LabelSelector::from(&p.spec.selector)).unwrap();
        let neighbours: Neighbourhoods =
            crate::apply::neighbours::Neighbourhood::new(&[Arc::new(p.clone())]).into();
        decide(&Snapshot {
            policy: p,
            selector: &selector,
            active: true,
            neighbours: &neighbours,
            workloads,
            health,
            previous,
            now: Timestamp::from_second(1_800_000_000).unwrap(),
        })
    }

    fn intents(d: &Decided) -> Vec<(String, &'static str)> {
        d.decisions
            .iter()
            .map(|d| {
                let i = match &d.intent {
                    Intent::Write(_) => "write",
                    Intent::Held(_) => "held",
                    Intent::WaitForSlot => "wait",
                    Intent::UpToDate => "up-to-date",
                    Intent::WouldPatch => "would-patch",
                };
                (d.name(), i)
            })
            .collect()
    }

    /// The rollout status once the canary (a, of a and b) was started.
    fn canary_started(p: &LifecyclePolicy) -> RolloutStatus {
        let ws = vec![deployment("a", false), deployment("b", false)];
        run(p, ws, &HashMap::new(), None).step.unwrap().status
    }

    #[test]
    fn the_canary_goes_first_and_is_recorded_before_it_is_written() {
        let p = policy(json!({}));
        let ws = vec![
            deployment("a", false),
            deployment("b", false),
            deployment("c", false),
        ];
        let first = run(&p, ws.clone(), &HashMap::new(), None);
        assert_eq!(
            intents(&first),
            [
                ("a".into(), "write"),
                ("b".into(), "held"),
                ("c".into(), "held")
            ]
        );
        let step = first.step.as_ref().unwrap();
        assert!(step.new_wave && first.records_first);
        assert_eq!(step.status.waiting_on, ["Deployment/a"]);
        // The next reconcile, the canary not yet rolled: the same gate, no
        // new wave to record.
        let again = run(&p, ws, &HashMap::new(), Some(&step.status));
        assert_eq!(intents(&again), intents(&first));
        assert!(!again.step.unwrap().new_wave && !again.records_first);
    }

    #[test]
    fn a_healthy_canary_lets_the_next_wave_through() {
        let p = policy(json!({}));
        let status = canary_started(&p);
        let ws = vec![deployment("a", true), deployment("b", false)];
        let next = run(&p, ws, &HashMap::new(), Some(&status));
        assert_eq!(
            intents(&next),
            [("a".into(), "up-to-date"), ("b".into(), "write")]
        );
        let step = next.step.unwrap();
        assert!(step.new_wave && next.records_first);
        assert_eq!(step.status.waves, 2);
    }

    #[test]
    fn a_failing_canary_halts_and_is_handed_back_first() {
        let p = policy(json!({}));
        let status = canary_started(&p);
        let failure = rollout::Failure {
            pod: "a-1".into(),
            container: "c".into(),
            reason: "FailedPreStopHook".into(),
            message: "exited with code 3".into(),
        };
        let health = HashMap::from([(
            "Deployment/a".parse().unwrap(),
            WorkloadHealth {
                post_start_ok: 0,
                failure: Some(failure),
            },
        )]);
        let ws = vec![deployment("a", true), deployment("b", false)];
        let halted = run(&p, ws, &health, Some(&status));
        let step = halted.step.as_ref().unwrap();
        let halt = step.status.halted.as_ref().expect("halted");
        assert_eq!(halt.reverted, ["Deployment/a"]);
        assert!(
            halted.records_first,
            "the halt is recorded before the revert"
        );
        let a = &halted.decisions[0];
        assert!(a.reverted && !a.matched);
        assert!(matches!(&a.intent, Intent::Write(w) if w.release.is_some()));
        assert!(matches!(halted.decisions[1].intent, Intent::Held(_)));
        // Once recorded, the same halt is not recorded again.
        let again = run(
            &p,
            vec![deployment("a", true), deployment("b", false)],
            &health,
            Some(&step.status),
        );
        assert!(!again.records_first);
    }

    #[test]
    fn a_dry_run_policy_takes_no_rollout_step() {
        let dry = policy(json!({"spec": {"mode": "DryRun"}}));
        let d = run(&dry, vec![deployment("a", false)], &HashMap::new(), None);
        assert!(d.step.is_none() && !d.records_first);
        assert_eq!(intents(&d), [("a".into(), "would-patch")]);
    }

    #[test]
    fn a_zero_second_sleep_is_refused_only_by_servers_before_1_34() {
        let p = policy(json!({"spec": {"preStop": {"sleep": {"seconds": 0}}}}));
        assert_eq!(zero_sleep_refused(&p.spec, true), None);
        let why = zero_sleep_refused(&p.spec, false).unwrap();
        assert!(
            why.starts_with("preStop: sleep of 0 seconds needs Kubernetes 1.34"),
            "{why}"
        );
        let one = policy(json!({"spec": {"preStop": {"sleep": {"seconds": 1}}}}));
        assert_eq!(zero_sleep_refused(&one.spec, false), None);
    }
}
