//! Which policies the webhook may inject for, pure: only those whose hooks
//! are rolled out. Everything else (DryRun, deletion, a canary or wave of
//! the current generation still under way, a halt) is left to the
//! background path and its rollout gate, exactly as without a webhook.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::Selector;

use crate::api::types::{LifecyclePolicy, Mode, RolloutPhase};

/// Why the webhook leaves a policy's hooks to the background path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deferred {
    DryRun,
    Deleting,
    InvalidSelector,
    /// No rollout recorded for the policy's current generation yet.
    NotReconciled,
    /// The current generation's canary or waves are under way.
    RollingOut,
    Halted,
}

impl fmt::Display for Deferred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Deferred::DryRun => "the policy is in DryRun",
            Deferred::Deleting => "the policy is being deleted",
            Deferred::InvalidSelector => "the policy's selector is invalid",
            Deferred::NotReconciled => "the policy's current generation has no rollout yet",
            Deferred::RollingOut => "the policy's rollout is under way",
            Deferred::Halted => "the policy's rollout is halted",
        })
    }
}

/// The policy's selector when the webhook may inject its hooks: it
/// enforces, is not being deleted, and its current generation's rollout is
/// complete.
pub fn admits(policy: &LifecyclePolicy) -> Result<Selector, Deferred> {
    if policy.metadata.deletion_timestamp.is_some() {
        return Err(Deferred::Deleting);
    }
    if policy.spec.mode != Mode::Enforce {
        return Err(Deferred::DryRun);
    }
    let rollout = policy
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .filter(|r| Some(r.generation) == policy.metadata.generation)
        .ok_or(Deferred::NotReconciled)?;
    match rollout.phase {
        _ if rollout.halted.is_some() => return Err(Deferred::Halted),
        RolloutPhase::Complete => {}
        RolloutPhase::Halted => return Err(Deferred::Halted),
        // A phase this build does not know (a newer replica wrote it): wait.
        RolloutPhase::Canary | RolloutPhase::Waves | RolloutPhase::Other(_) => {
            return Err(Deferred::RollingOut);
        }
    }
    Selector::try_from(LabelSelector::from(&policy.spec.selector))
        .map_err(|_| Deferred::InvalidSelector)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn policy(extra: Value) -> LifecyclePolicy {
        let mut p = json!({
            "apiVersion": "lifecycle-operator.io/v1alpha1", "kind": "LifecyclePolicy",
            "metadata": {"name": "p", "namespace": "ns", "generation": 2},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "preStop": {"sleep": {"seconds": 1}}},
            "status": {"rollout": {"generation": 2, "phase": "Complete", "rolledOut": 1, "pending": 0}},
        });
        json_patch::merge(&mut p, &extra);
        serde_json::from_value(p).unwrap()
    }

    #[test]
    fn only_a_complete_rollout_of_the_current_generation_admits() {
        assert!(admits(&policy(json!({}))).is_ok());
        let cases = [
            (json!({"spec": {"mode": "DryRun"}}), Deferred::DryRun),
            (
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
                Deferred::Deleting,
            ),
            (
                json!({"metadata": {"generation": 3}}),
                Deferred::NotReconciled,
            ),
            (
                json!({"status": {"rollout": null}}),
                Deferred::NotReconciled,
            ),
            (json!({"status": null}), Deferred::NotReconciled),
            (
                json!({"status": {"rollout": {"phase": "Canary"}}}),
                Deferred::RollingOut,
            ),
            (
                json!({"status": {"rollout": {"phase": "Waves"}}}),
                Deferred::RollingOut,
            ),
            (
                json!({"status": {"rollout": {"phase": "Halted"}}}),
                Deferred::Halted,
            ),
            (
                json!({"status": {"rollout": {"halted": {"workload": "Deployment/a", "reason": "x", "message": "y", "time": "2026-01-01T00:00:00Z"}}}}),
                Deferred::Halted,
            ),
            (
                json!({"spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}}),
                Deferred::InvalidSelector,
            ),
        ];
        for (extra, want) in cases {
            let got = admits(&policy(extra.clone())).err();
            assert_eq!(got, Some(want), "{extra}");
        }
    }
}
