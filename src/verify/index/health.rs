//! Workload health, for the safe rollout: which workload (Kind/name) owns a
//! pod, and per workload what this generation's hooks did in its pods (the
//! postStarts that ran, the latest failure). `apply::rollout` decides from
//! it whether a canary or wave may go on, or must halt.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::Index;
use crate::api::identity::PolicyId;
use crate::api::names::reason;
use crate::apply::rollout::Failure;
use crate::apply::workload::WorkloadKey;
use crate::hooks::hook::HookKind;
use crate::verify::outcome::Outcome;

/// What a timed-out preStop's failure says, in the report and the
/// workload's health.
pub(super) const TIMED_OUT_MESSAGE: &str =
    "the grace period ran out before the preStop hook finished";

/// What this generation's hooks did in one workload's pods.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkloadHealth {
    /// postStarts that ran (or are implied), counted instances only. Those
    /// counted before a restart count too: had one failed, the halt would
    /// have been written with its count.
    pub post_start_ok: u32,
    pub failure: Option<Failure>,
}

impl WorkloadHealth {
    /// Adds a counted outcome: a postStart that ran (or is implied), or a
    /// failure of either hook, the latest kept.
    pub(super) fn add(&mut self, o: &Outcome, kind: HookKind, pod: &str, container: &str) {
        match (o, kind) {
            (Outcome::Ran { .. } | Outcome::Implied, HookKind::PostStart) => {
                self.post_start_ok += 1
            }
            (Outcome::Failed { reason, message }, _) => {
                self.failure = Some(Failure {
                    pod: pod.to_string(),
                    container: container.to_string(),
                    reason: reason.clone(),
                    message: message.clone(),
                })
            }
            (Outcome::TimedOut, _) => {
                self.failure = Some(Failure {
                    pod: pod.to_string(),
                    container: container.to_string(),
                    reason: reason::TIMED_OUT.into(),
                    message: TIMED_OUT_MESSAGE.into(),
                })
            }
            _ => {}
        }
    }
}

/// The workload (Kind/name) that owns a pod: a Deployment through its
/// ReplicaSet (named `<deployment>-<pod-template-hash>`), a StatefulSet or
/// DaemonSet directly.
pub fn workload_of(pod: &Pod) -> Option<String> {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))?;
    match owner.kind.as_str() {
        "ReplicaSet" => {
            let hash = pod.labels().get("pod-template-hash")?;
            let name = owner.name.strip_suffix(&format!("-{hash}"))?;
            Some(format!("Deployment/{name}"))
        }
        "StatefulSet" | "DaemonSet" => Some(format!("{}/{}", owner.kind, owner.name)),
        _ => None,
    }
}

impl Index {
    /// This generation's hook results per workload of the policy.
    /// Empty while the index has not seen this generation yet: results of
    /// an older generation say nothing about the new hooks.
    pub fn workload_health(
        &self,
        policy: &str,
        generation: Option<i64>,
    ) -> HashMap<WorkloadKey, WorkloadHealth> {
        let cluster = matches!(PolicyId::from_reference(policy), PolicyId::Cluster { .. });
        // Kept as the interned strings the instances hold (memory per pod).
        self.tallies
            .get(policy)
            .filter(|t| t.generation == generation)
            .into_iter()
            .flat_map(|t| &t.workloads)
            .filter_map(|(k, h)| Some((k.parse::<WorkloadKey>().ok()?, h.clone())))
            // A namespaced policy names its workloads within its namespace.
            .map(|(k, h)| (if cluster { k } else { k.local() }, h))
            .collect()
    }
}
