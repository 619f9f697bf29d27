//! `kubectl lifecycle diff`'s report, pure: a policy as it would be
//! applied, and the live workloads it would act on, in; per workload the
//! unified diff of what it would change (the pod template and the
//! operator's ledger annotations), the waves a rollout would take, and
//! the slots other policies or field managers would keep from it.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};

use crate::api::identity::PolicyId;
use crate::api::types::{LifecyclePolicy, Mode, RolloutStrategy, WorkloadKind};
use crate::apply::ledger::DOMAIN;
use crate::apply::neighbours::Neighbourhood;
use crate::apply::plan::SlotOutcome;
use crate::apply::rollout::{self, Candidate};
use crate::apply::workload::WorkloadKey;
use crate::plugin::dryrun::preview;
use crate::text;

/// A live workload, as listed.
pub struct Live {
    pub namespace: String,
    pub kind: WorkloadKind,
    pub object: Value,
    pub neighbourhood: Arc<Neighbourhood>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DiffReport {
    /// `LifecyclePolicy shop/web`.
    pub policy: String,
    /// The policy exists already (its live copy is what it replaces).
    pub exists: bool,
    pub mode: String,
    pub changes: Vec<WorkloadDiff>,
    /// Matched workloads that already are as the policy wants them.
    pub unchanged: Vec<String>,
    /// The rollout's waves, if every wave is verified.
    pub waves: Vec<Vec<String>>,
    /// The first wave is a canary (strategy Canary, nothing rolled out yet).
    pub canary_first: bool,
    /// Slots the policy wants and would not get.
    pub conflicts: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadDiff {
    pub workload: String,
    /// Its pods restart for the change (a template change that is not staged).
    pub restarts_pods: bool,
    pub diff: String,
}

impl DiffReport {
    /// `kubectl diff`'s exit code: 1 when something would change.
    pub fn exit_code(&self) -> u8 {
        u8::from(!self.changes.is_empty())
    }
}

pub fn build(policy: &LifecyclePolicy, exists: bool, live: &[Live], now: Timestamp) -> DiffReport {
    let mut changes = Vec::new();
    let mut unchanged = Vec::new();
    let mut conflicts = Vec::new();
    let mut candidates = Vec::new();
    for l in live {
        let Some(p) = preview(
            policy,
            true,
            &l.object,
            l.kind,
            &l.namespace,
            &l.neighbourhood,
            now,
        ) else {
            continue;
        };
        let d = &p.decision;
        if !d.matched {
            continue;
        }
        let key = d.key.clone();
        for (slot, outcome) in &d.plan.outcomes {
            if let Some(why) = conflict(outcome) {
                conflicts.push(text::bounded(&format!("{key} {slot}: {why}"), 600));
            }
        }
        match &p.after {
            Some(after) => {
                let restarts_pods = d.changes_template() && d.staged.is_none();
                changes.push(WorkloadDiff {
                    workload: key.to_string(),
                    restarts_pods,
                    diff: unified(&l.object, after, &key.to_string()),
                });
            }
            None => unchanged.push(key.to_string()),
        }
        candidates.push(Candidate {
            carries: !d.changes_template(),
            healthy: !d.changes_template(),
            failure: None,
            has_pods: d.workload.expected_pods() > 0,
            key,
        });
    }
    candidates.sort_by(|a, b| a.key.cmp(&b.key));
    let canary_first = policy.spec.rollout.strategy == RolloutStrategy::Canary
        && !candidates.is_empty()
        && candidates.iter().all(|c| !c.carries);
    let waves = rollout::waves(
        &policy.spec.rollout,
        policy.spec.max_concurrent_rollouts,
        &candidates,
    )
    .into_iter()
    .map(|w| w.iter().map(WorkloadKey::to_string).collect())
    .collect();
    let mut notes = Vec::new();
    if !exists && !changes.is_empty() {
        notes.push("the markers' token comes from the policy's UID, given when it is created: the created policy's differs from the one shown".into());
    }
    if policy.spec.mode == Mode::DryRun {
        notes.push("mode DryRun: the policy would change nothing; the diffs show what it would report as WouldPatch".into());
    }
    DiffReport {
        policy: format!("{} {}", policy_kind(policy), policy.reference()),
        exists,
        mode: format!("{:?}", policy.spec.mode),
        changes,
        unchanged,
        waves,
        canary_first,
        conflicts,
        notes,
    }
}

fn policy_kind(p: &LifecyclePolicy) -> &'static str {
    if p.metadata.namespace.is_some() {
        "LifecyclePolicy"
    } else {
        "ClusterLifecyclePolicy"
    }
}

/// `LifecyclePolicy web` for an owner name.
fn named(owner: &str) -> String {
    PolicyId::from_owner(owner).kind_and_name()
}

/// Why a wanted slot would not be the policy's.
fn conflict(o: &SlotOutcome) -> Option<String> {
    Some(match o {
        SlotOutcome::LostTo(p) => format!("{} wins it (precedence)", named(p)),
        SlotOutcome::HeldBy(p) => format!(
            "{} holds it now and hands it over on its next reconcile",
            named(p)
        ),
        SlotOutcome::SkippedExisting => {
            "the container has a hook of its own and onConflict is Skip".into()
        }
        SlotOutcome::KeptLonger(s) => format!("the template's own {s}s is kept (onConflict Skip)"),
        SlotOutcome::Contested(m) => format!("field manager {m} keeps taking it back"),
        SlotOutcome::Claimed | SlotOutcome::AlreadySet => return None,
    })
}

/// What of a workload the operator writes: its ledger annotations and
/// the pod template.
pub fn written_part(object: &Value) -> Value {
    let annotations: BTreeMap<&String, &Value> = object
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(&format!("{DOMAIN}/")))
        .collect();
    let mut v = json!({"spec": {"template": object.pointer("/spec/template").cloned().unwrap_or(Value::Null)}});
    if !annotations.is_empty() {
        v["metadata"] = json!({ "annotations": annotations });
    }
    v
}

/// The unified diff (3 lines of context) of the written parts as YAML.
pub fn unified(before: &Value, after: &Value, name: &str) -> String {
    let a = serde_yaml::to_string(&written_part(before)).unwrap_or_default();
    let b = serde_yaml::to_string(&written_part(after)).unwrap_or_default();
    similar::TextDiff::from_lines(&a, &b)
        .unified_diff()
        .context_radius(3)
        .header(&format!("{name} (live)"), &format!("{name} (after)"))
        .to_string()
}
