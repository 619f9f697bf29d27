//! `kubectl lifecycle status`'s view, pure: from a policy (its status) and
//! the current pods of its workloads to one serializable struct, the chain
//! policy → conditions → rollout → hook totals → workloads → pods →
//! containers → hooks. The text, JSON and YAML outputs all render this
//! struct (`render`), so they never disagree.
//!
//! The status holds totals per policy, not per pod: a pod's hook outcome
//! here is what its own object tells (the hook on its spec, its container
//! states), and the policy's latest failure when it names that pod and
//! container. Every string from the cluster is bounded (`crate::text`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::api::types::{HookReport, LifecyclePolicy, WorkloadReport};
use crate::apply::ledger::Ledger;
use crate::plugin::fetch::Log;
use crate::plugin::pod::{PodContainer, PodInputs};
use crate::text;

/// Pods shown per workload; the rest are counted.
pub const MAX_PODS: usize = 10;
/// A condition's or a failure's message in the view.
pub const MESSAGE: usize = 300;

/// Everything `status` shows.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    pub policy: PolicyView,
    pub conditions: Vec<ConditionView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutView>,
    /// postStart, then preStop, when the status reports them.
    pub hooks: Vec<HookTotals>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainView>,
    /// Matched workloads as the status lists them (at most 20).
    pub workloads: Vec<WorkloadView>,
    /// What the view left out, said plainly.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    /// LifecyclePolicy or ClusterLifecyclePolicy.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub generation: Option<i64>,
    pub observed_generation: Option<i64>,
    pub mode: String,
    pub matched_workloads: i32,
    pub patched_workloads: i32,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    pub generation: i64,
    pub phase: String,
    pub waves: i32,
    pub rolled_out: i32,
    pub pending: i32,
    pub waiting_on: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halted: Option<HaltView>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HaltView {
    pub workload: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pod: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub container: String,
    pub reason: String,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reverted: Vec<String>,
}

/// One hook's totals over the policy's pods, from the status.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HookTotals {
    /// postStart or preStop.
    pub hook: String,
    pub summary: String,
    pub evidence: String,
    pub ran: i64,
    pub implied: i64,
    pub failed: i64,
    pub timed_out: i64,
    pub not_triggered: i64,
    pub unknown: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_duration_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_duration_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<FailureView>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailureView {
    pub pod: String,
    pub container: String,
    pub reason: String,
    pub message: String,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DrainView {
    pub observed: i64,
    pub safe: i64,
    #[serde(rename = "unsafe")]
    pub unsafe_: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recommended_pre_stop_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_unsafe: Option<String>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub kind: String,
    pub name: String,
    pub state: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The slots this policy's ledger holds on the workload
    /// (`web/preStop`, `terminationGracePeriodSeconds`); None when the
    /// workload was not read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<Vec<String>>,
    pub pods: Vec<PodView>,
    /// Pods of the workload beyond [`MAX_PODS`].
    #[serde(skip_serializing_if = "is_zero")]
    pub more_pods: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodView {
    pub name: String,
    pub phase: String,
    pub ready: bool,
    /// Deletion requested: its preStop hooks run now or have run.
    pub terminating: bool,
    /// Its hooked containers, as `kubectl lifecycle pod` shows them
    /// (from the current logs; the policy's last failure when it names one).
    pub containers: Vec<PodContainer>,
}

/// What `status` reads from the cluster: the policy, the current hooked
/// pods of its namespaces, and the slots its ledger holds on each workload
/// read (keyed as the status names workloads: `Kind/name`, or
/// `namespace/Kind/name` for a cluster policy).
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub policy: LifecyclePolicy,
    /// LifecyclePolicy or ClusterLifecyclePolicy.
    pub kind: String,
    pub pods: Vec<Pod>,
    pub slots: BTreeMap<String, Vec<String>>,
    /// Each workload's ledgers, keyed as `slots`.
    pub ledgers: BTreeMap<String, BTreeMap<String, Ledger>>,
    /// Current container logs, by pod and container name.
    pub logs: BTreeMap<(String, String), Log>,
    pub now: Timestamp,
}

/// The view of a snapshot.
pub fn build(s: &Snapshot) -> StatusView {
    let p = &s.policy;
    let status = p.status.clone().unwrap_or_default();
    let policy = PolicyView {
        kind: s.kind.clone(),
        namespace: p.metadata.namespace.as_deref().map(name),
        name: name(p.metadata.name.as_deref().unwrap_or_default()),
        generation: p.metadata.generation,
        observed_generation: status.observed_generation,
        mode: format!("{:?}", p.spec.mode),
        matched_workloads: status.matched_workloads,
        patched_workloads: status.patched_workloads,
    };
    let conditions = status
        .conditions
        .iter()
        .map(|c| ConditionView {
            type_: name(&c.type_),
            status: name(&c.status),
            reason: name(&c.reason),
            message: text::bounded(&c.message, MESSAGE),
        })
        .collect();
    let rollout = status.rollout.as_ref().map(|r| RolloutView {
        generation: r.generation,
        phase: name(r.phase.as_str()),
        waves: r.waves,
        rolled_out: r.rolled_out,
        pending: r.pending,
        waiting_on: r.waiting_on.iter().take(100).map(|w| name(w)).collect(),
        halted: r.halted.as_ref().map(|h| HaltView {
            workload: name(&h.workload),
            pod: name(&h.pod),
            container: name(&h.container),
            reason: name(&h.reason),
            message: text::bounded(&h.message, MESSAGE),
            reverted: h.reverted.iter().take(100).map(|w| name(w)).collect(),
        }),
    });
    let hooks = [
        ("postStart", status.post_start.as_ref()),
        ("preStop", status.pre_stop.as_ref()),
    ]
    .into_iter()
    .filter_map(|(hook, r)| r.map(|r| totals(hook, r)))
    .collect();
    let drain = status.drain.as_ref().map(|d| DrainView {
        observed: d.observed,
        safe: d.safe,
        unsafe_: d.unsafe_,
        recommended_pre_stop_seconds: d.recommended_pre_stop_seconds,
        last_unsafe: d.last_unsafe.as_ref().map(|u| {
            text::bounded(
                &format!("{} ({:+.3}s): {}", u.pod, u.gap_seconds, u.message),
                MESSAGE,
            )
        }),
    });
    let failures: Vec<(&str, &HookReport)> = [
        ("postStart", status.post_start.as_ref()),
        ("preStop", status.pre_stop.as_ref()),
    ]
    .into_iter()
    .filter_map(|(h, r)| r.map(|r| (h, r)))
    .collect();
    let mut by_workload: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    let cluster = p.metadata.namespace.is_none();
    for pod in &s.pods {
        if let Some(w) = crate::verify::index::workload_of(pod) {
            let key = if cluster {
                format!(
                    "{}/{w}",
                    pod.metadata.namespace.as_deref().unwrap_or_default()
                )
            } else {
                w
            };
            by_workload.entry(key).or_default().push(pod);
        }
    }
    let mut notes = Vec::new();
    if status.matched_workloads as usize > status.workloads.len() {
        notes.push(format!(
            "the status lists {} of {} matched workloads",
            status.workloads.len(),
            status.matched_workloads
        ));
    }
    let workloads = status
        .workloads
        .iter()
        .map(|w| workload(w, &by_workload, s, &failures))
        .collect();
    StatusView {
        policy,
        conditions,
        rollout,
        hooks,
        drain,
        workloads,
        notes,
    }
}

fn name(s: &str) -> String {
    text::bounded(s, text::NAME)
}

fn totals(hook: &str, r: &HookReport) -> HookTotals {
    HookTotals {
        hook: hook.to_string(),
        summary: name(&r.summary),
        evidence: name(&r.evidence),
        ran: r.ran,
        implied: r.implied,
        failed: r.failed,
        timed_out: r.timed_out,
        not_triggered: r.not_triggered,
        unknown: r.unknown,
        last_duration_seconds: r.last_duration_seconds,
        max_duration_seconds: r.max_duration_seconds,
        last_failure: r.last_failure.as_ref().map(|f| FailureView {
            pod: name(&f.pod),
            container: name(&f.container),
            reason: name(&f.reason),
            message: text::bounded(&f.message, MESSAGE),
        }),
    }
}

fn workload_key(w: &WorkloadReport) -> String {
    match &w.namespace {
        Some(ns) => format!("{ns}/{}/{}", w.kind, w.name),
        None => format!("{}/{}", w.kind, w.name),
    }
}

fn workload(
    w: &WorkloadReport,
    pods: &BTreeMap<String, Vec<&Pod>>,
    s: &Snapshot,
    failures: &[(&str, &HookReport)],
) -> WorkloadView {
    let key = workload_key(w);
    let mut own: Vec<&Pod> = pods.get(&key).cloned().unwrap_or_default();
    own.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let more_pods = own.len().saturating_sub(MAX_PODS);
    WorkloadView {
        namespace: w.namespace.as_deref().map(name),
        kind: w.kind.to_string(),
        name: name(&w.name),
        state: name(w.state.as_str()),
        message: text::bounded(&w.message, MESSAGE),
        slots: s
            .slots
            .get(&key)
            .map(|s| s.iter().take(64).map(|s| name(s)).collect()),
        pods: own
            .iter()
            .take(MAX_PODS)
            .map(|p| pod(p, &key, s, failures))
            .collect(),
        more_pods,
    }
}

fn pod(p: &Pod, key: &str, s: &Snapshot, failures: &[(&str, &HookReport)]) -> PodView {
    let pod_name = p.metadata.name.clone().unwrap_or_default();
    let status = p.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let logs = s
        .logs
        .iter()
        .filter(|((pn, _), _)| *pn == pod_name)
        .map(|((_, c), l)| ((c.clone(), false), l.clone()))
        .collect();
    let report = crate::plugin::pod::build(&PodInputs {
        pod: p.clone(),
        workload: crate::verify::index::workload_of(p),
        ledgers: s.ledgers.get(key).cloned().unwrap_or_default(),
        logs,
        events: Vec::new(),
        now: s.now,
    });
    let containers = report
        .containers
        .into_iter()
        .filter(|c| !c.hooks.is_empty())
        .map(|mut c| {
            for h in &mut c.hooks {
                let failure = failures
                    .iter()
                    .find(|(hook, _)| *hook == h.hook)
                    .and_then(|(_, r)| r.last_failure.as_ref())
                    .filter(|f| f.pod == pod_name && f.container == c.name);
                if let Some(f) = failure.filter(|_| h.outcome != "failed") {
                    h.outcome = "failed".into();
                    h.detail = text::bounded(&format!("{}: {}", f.reason, f.message), MESSAGE);
                }
            }
            c
        })
        .collect();
    PodView {
        name: name(&pod_name),
        phase: report.phase,
        ready,
        terminating: p.metadata.deletion_timestamp.is_some(),
        containers,
    }
}
