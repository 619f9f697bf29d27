//! `kubectl lifecycle explain`'s view, pure: one workload object and the
//! policies acting in its namespace in; which policy holds which slot, the
//! originals its ledger recorded, which field managers own the hook fields
//! (`managedFields`), and the template diff each policy's release would make.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};

use crate::api::identity::PolicyId;
use crate::api::types::{LifecyclePolicy, WorkloadKind};
use crate::apply::ledger::{Ledger, read_ledgers};
use crate::apply::neighbours::Neighbourhood;
use crate::plugin::diff::unified;
use crate::plugin::dryrun::preview;
use crate::text;

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExplainReport {
    /// `namespace/Kind/name`.
    pub workload: String,
    pub ledgers: Vec<LedgerView>,
    pub owners: Vec<OwnerView>,
    pub releases: Vec<ReleaseView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LedgerView {
    /// `LifecyclePolicy web`, `ClusterLifecyclePolicy platform`.
    pub policy: String,
    /// The policy still exists.
    pub live: bool,
    /// background or admission: how its hooks first came.
    pub via: String,
    pub slots: Vec<SlotView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contest: Option<String>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SlotView {
    /// `nginx/preStop`, `terminationGracePeriodSeconds`.
    pub slot: String,
    /// The value it replaced, as compact JSON; `unset` when there was none,
    /// `unknown` when the ledger lost it (a release removes the field).
    pub original: String,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OwnerView {
    pub manager: String,
    pub operation: String,
    /// The hook fields and grace period it owns.
    pub fields: Vec<String>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseView {
    pub policy: String,
    /// Unified diff; empty when the release would change nothing.
    pub diff: String,
}

/// Originals longer than this are cut (a long script).
const ORIGINAL: usize = 400;

pub fn build(
    object: &Value,
    kind: WorkloadKind,
    ns: &str,
    acting: &[Arc<LifecyclePolicy>],
    neighbourhood: &Arc<Neighbourhood>,
    now: Timestamp,
) -> ExplainReport {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let workload = text::bounded(&format!("{ns}/{}/{name}", kind.as_str()), 600);
    let annotations = object
        .pointer("/metadata/annotations")
        .cloned()
        .and_then(|a| serde_json::from_value(a).ok());
    let ledgers = read_ledgers(annotations.as_ref());
    let policy_of = |owner: &str| acting.iter().find(|p| p.id().owner() == owner).cloned();
    let ledger_views = ledgers
        .iter()
        .map(|(owner, l)| ledger_view(owner, l, policy_of(owner).is_some()))
        .collect();
    let releases = ledgers
        .keys()
        .map(|owner| {
            let policy = policy_of(owner).unwrap_or_else(|| Arc::new(gone(owner, ns)));
            let diff = preview(&policy, false, object, kind, ns, neighbourhood, now)
                .and_then(|p| p.after)
                .map(|after| unified(object, &after, &format!("{}/{name}", kind.as_str())))
                .unwrap_or_default();
            ReleaseView {
                policy: PolicyId::from_owner(owner).kind_and_name(),
                diff,
            }
        })
        .collect();
    let mut notes = Vec::new();
    if ledgers.is_empty() {
        notes.push(
            "no policy holds anything here (no lifecycle-operator.io ledger annotation)".into(),
        );
    }
    ExplainReport {
        workload,
        ledgers: ledger_views,
        owners: owners(object),
        releases,
        notes,
    }
}

fn ledger_view(owner: &str, l: &Ledger, live: bool) -> LedgerView {
    let slots = l
        .owned
        .iter()
        .map(|(slot, original)| SlotView {
            slot: slot.to_string(),
            original: if l.unknown.contains(slot) {
                "unknown".into()
            } else {
                match original {
                    None => "unset".into(),
                    Some(v) => text::bounded(&v.to_string(), ORIGINAL),
                }
            },
        })
        .collect();
    LedgerView {
        policy: PolicyId::from_owner(owner).kind_and_name(),
        live,
        via: format!("{:?}", l.via).to_lowercase(),
        slots,
        contest: l
            .contest
            .as_ref()
            .map(|c| text::bounded(&format!("{c:?}"), ORIGINAL)),
    }
}

/// A policy that no longer exists, as far as its release needs it: its
/// ledger says what to hand back.
fn gone(owner: &str, ns: &str) -> LifecyclePolicy {
    let (name, namespace) = match PolicyId::from_owner(owner) {
        PolicyId::Cluster { name } => (name, None),
        PolicyId::Namespaced { name, .. } => (name, Some(ns.to_string())),
    };
    serde_json::from_value(json!({
        "apiVersion": "lifecycle-operator.io/v1alpha1", "kind": "LifecyclePolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"matchLabels": {"lifecycle-operator.io/gone": "true"}},
                 "preStop": {"sleep": {"seconds": 1}}},
    }))
    .expect("a fixed policy")
}

/// managedFields entries that own a hook or the grace period of the template.
pub fn owners(object: &Value) -> Vec<OwnerView> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let fields = hook_fields(e.pointer("/fieldsV1/f:spec/f:template/f:spec")?);
            let manager = e.get("manager")?.as_str()?;
            (!fields.is_empty()).then(|| OwnerView {
                manager: text::bounded(manager, text::NAME),
                operation: text::bounded(
                    e.get("operation")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                    text::NAME,
                ),
                fields,
            })
        })
        .collect()
}

/// `container/hook` for each hook under a pod spec's fieldsV1, and the grace period.
fn hook_fields(pod_spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for list in ["f:initContainers", "f:containers"] {
        let Some(items) = pod_spec.get(list).and_then(Value::as_object) else {
            continue;
        };
        for (key, c) in items {
            let Some(name) = key
                .strip_prefix("k:")
                .and_then(|k| serde_json::from_str::<Value>(k).ok())
                .and_then(|k| k.get("name").and_then(Value::as_str).map(str::to_string))
            else {
                continue;
            };
            for hook in ["postStart", "preStop"] {
                if c.pointer(&format!("/f:lifecycle/f:{hook}")).is_some() {
                    out.push(text::bounded(&format!("{name}/{hook}"), text::NAME));
                }
            }
        }
    }
    if pod_spec.get("f:terminationGracePeriodSeconds").is_some() {
        out.push("terminationGracePeriodSeconds".into());
    }
    // At most 64 fields (a Vec, not a string).
    out.into_iter().take(64).collect()
}
