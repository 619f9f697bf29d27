//! The core decision, pure: given a policy, a Deployment's pod template, the
//! ledgers already on that Deployment and which policy wins each contested
//! hook, what should this policy own on the template, and what must it hand
//! back?
//!
//! A *slot* is one field the operator can set: a container's postStart or
//! preStop, or the pod's terminationGracePeriodSeconds. A policy *claims* a
//! slot when it sets it; the *ledger* (an annotation on the Deployment) records
//! each claimed slot with the value it replaced, so that releasing the slot
//! restores exactly what was there. Invariant: a claimed value never equals
//! the original it replaced (a slot already holding the wanted value is not
//! claimed), so a restore always changes the field.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::hook::HookKind;
use crate::types::{LifecyclePolicySpec, Mode, OnConflict};
use crate::workload::{PodShape, Section};

/// One field of the pod template the operator can own.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    Hook { container: String, kind: HookKind },
    GracePeriod,
}

const GRACE_KEY: &str = "terminationGracePeriodSeconds";

impl fmt::Display for Slot {
    // Container names are DNS labels, so `/` cannot appear in them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slot::Hook { container, kind } => write!(f, "{container}/{}", kind.field()),
            Slot::GracePeriod => f.write_str(GRACE_KEY),
        }
    }
}

impl Slot {
    pub fn hook(container: &str, kind: HookKind) -> Self {
        Slot::Hook {
            container: container.to_string(),
            kind,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        if s == GRACE_KEY {
            return Some(Slot::GracePeriod);
        }
        let (container, field) = s.rsplit_once('/')?;
        let kind = HookKind::from_field(field)?;
        Some(Slot::hook(container, kind))
    }

    /// The slot's current value in a pod spec, as JSON; None when unset.
    pub fn current(&self, pod: &PodShape) -> Option<Value> {
        match self {
            Slot::GracePeriod => pod.termination_grace_period_seconds.map(Value::from),
            Slot::Hook { container, kind } => pod.find(container)?.2.handler(kind.field()).cloned(),
        }
    }
}

impl Serialize for Slot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Slot {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Slot::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown slot {s:?}")))
    }
}

/// What one policy set on one Deployment: each claimed slot with the value it
/// replaced (None: the slot was unset). Stored as JSON in an annotation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Ledger {
    pub policy: String,
    pub owned: BTreeMap<Slot, Option<Value>>,
    /// Owned slots whose original value was lost (a damaged ledger rebuilt
    /// from managedFields): releasing them removes the field.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub unknown: BTreeSet<Slot>,
}

/// The slots a policy wants on a template, with the values it wants there.
/// Only containers that exist in the template count: by default every
/// regular container; a named list can also name sidecars.
pub fn wanted(spec: &LifecyclePolicySpec, pod: &PodShape) -> BTreeMap<Slot, Value> {
    let mut out = BTreeMap::new();
    for (section, _, c) in pod.hookable() {
        let selected = match &spec.containers {
            None => section == Section::Containers,
            Some(names) => names.contains(&c.name),
        };
        if !selected {
            continue;
        }
        for (kind, handler) in [
            (HookKind::PostStart, &spec.post_start),
            (HookKind::PreStop, &spec.pre_stop),
        ] {
            if let Some(h) = handler {
                let v = serde_json::to_value(h).expect("handler serializes");
                out.insert(Slot::hook(&c.name, kind), v);
            }
        }
    }
    if let Some(g) = spec.termination_grace_period_seconds {
        out.insert(Slot::GracePeriod, Value::from(g));
    }
    out
}

/// A policy competing for slots on one Deployment.
pub struct Contender<'a> {
    pub name: &'a str,
    /// Lower wins: see `LifecyclePolicy::precedence`.
    pub rank: usize,
    pub wants: BTreeMap<Slot, Value>,
}

/// For every slot wanted by more than one contender, the winner (lowest rank).
pub fn winners<'a>(contenders: &[Contender<'a>]) -> BTreeMap<Slot, &'a str> {
    let mut best: BTreeMap<Slot, (usize, &'a str)> = BTreeMap::new();
    for c in contenders {
        for slot in c.wants.keys() {
            let entry = best.entry(slot.clone()).or_insert((c.rank, c.name));
            if c.rank < entry.0 {
                *entry = (c.rank, c.name);
            }
        }
    }
    best.into_iter().map(|(s, (_, n))| (s, n)).collect()
}

/// How a wanted slot turned out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The policy owns the slot (its value is, or will be, in the template).
    Claimed,
    /// The template already holds exactly the wanted value, set by someone else.
    AlreadySet,
    /// The container has its own hook and onConflict is Skip.
    SkippedExisting,
    /// An older policy wants the same slot and wins it.
    LostTo(String),
    /// This policy wins the slot, but another policy still holds it; that
    /// policy hands it back on its next reconcile.
    HeldBy(String),
}

/// What a policy should do on one Deployment.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Plan {
    /// The slots to own and the values to put there.
    pub claims: BTreeMap<Slot, Value>,
    /// Slots to hand back, with the value to restore (None: remove the field).
    pub releases: BTreeMap<Slot, Option<Value>>,
    /// The ledger after this plan; None when the policy holds nothing here.
    pub ledger: Option<Ledger>,
    /// One entry per wanted slot.
    pub outcomes: BTreeMap<Slot, Outcome>,
    /// Released slots whose original value is unknown: removed, not restored.
    pub unrestorable: BTreeSet<Slot>,
    /// The template lacks the hooked-pods label that the apply adds.
    pub label_missing: bool,
    /// The release removes the hooked-pods label: no policy holds a hook here any more.
    pub label_removed: bool,
}

/// Everything `plan` needs to know about one policy and one Deployment.
pub struct Input<'a> {
    pub policy: &'a str,
    pub spec: &'a LifecyclePolicySpec,
    /// False when the selector no longer matches or the policy is being deleted:
    /// then the policy wants nothing and releases everything it holds.
    pub active: bool,
    pub pod: &'a PodShape,
    /// The template carries the hooked-pods label.
    pub labelled: bool,
    /// Another policy, not being deleted, holds a hook here: the label
    /// stays. (Policies deleted together must not each keep it for the other.)
    pub others_hold_hooks: bool,
    /// Ledgers on the Deployment, by policy name, of policies that still exist.
    pub ledgers: &'a BTreeMap<String, Ledger>,
    /// Winner of each slot among the contending policies.
    pub winners: &'a BTreeMap<Slot, &'a str>,
}

/// Decides what the policy owns on this Deployment. Pure and deterministic.
pub fn plan(input: &Input) -> Plan {
    let mine = input.ledgers.get(input.policy);
    let wants = if input.active {
        wanted(input.spec, input.pod)
    } else {
        BTreeMap::new()
    };
    let mut p = Plan::default();
    let mut owned: BTreeMap<Slot, Option<Value>> = BTreeMap::new();

    for (slot, value) in wants {
        let current = slot.current(input.pod);
        let held_by_me = mine.and_then(|l| l.owned.get(&slot));
        let winner = input.winners.get(&slot).copied().unwrap_or(input.policy);
        let outcome = if winner != input.policy {
            Outcome::LostTo(winner.to_string())
        } else if let Some(original) = held_by_me {
            if original.as_ref() == Some(&value) {
                // The wanted value is the original again: hand the slot back.
                Outcome::AlreadySet
            } else {
                p.claims.insert(slot.clone(), value);
                owned.insert(slot.clone(), original.clone());
                Outcome::Claimed
            }
        } else if let Some(holder) = holder_other_than(input, &slot) {
            Outcome::HeldBy(holder.to_string())
        } else if current.as_ref().is_some_and(|c| contains(c, &value)) {
            Outcome::AlreadySet
        } else if current.is_some() && is_hook(&slot) && input.spec.on_conflict == OnConflict::Skip
        {
            Outcome::SkippedExisting
        } else {
            p.claims.insert(slot.clone(), value);
            owned.insert(slot.clone(), current);
            Outcome::Claimed
        };
        p.outcomes.insert(slot, outcome);
    }

    let mut unknown = BTreeSet::new();
    if let Some(l) = mine {
        for (slot, original) in &l.owned {
            if owned.contains_key(slot) {
                if l.unknown.contains(slot) {
                    unknown.insert(slot.clone());
                }
            } else {
                p.releases.insert(slot.clone(), original.clone());
                if l.unknown.contains(slot) {
                    p.unrestorable.insert(slot.clone());
                }
            }
        }
    }
    let hooks_held = owned.keys().any(is_hook) || input.others_hold_hooks;
    p.label_missing = owned.keys().any(is_hook) && !input.labelled;
    p.label_removed = mine.is_some() && input.labelled && !hooks_held;
    if !owned.is_empty() {
        p.ledger = Some(Ledger {
            policy: input.policy.to_string(),
            owned,
            unknown,
        });
    }
    p
}

fn is_hook(slot: &Slot) -> bool {
    matches!(slot, Slot::Hook { .. })
}

fn holder_other_than<'a>(input: &'a Input, slot: &Slot) -> Option<&'a str> {
    input
        .ledgers
        .iter()
        .find(|(name, l)| name.as_str() != input.policy && l.owned.contains_key(slot))
        .map(|(name, _)| name.as_str())
}

/// True when `actual` holds everything in `wanted`. The API server fills in
/// defaults (an httpGet's scheme, say), so equality would never settle.
pub fn contains(actual: &Value, wanted: &Value) -> bool {
    match (actual, wanted) {
        (Value::Object(a), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| a.get(k).is_some_and(|av| contains(av, wv))),
        (Value::Array(a), Value::Array(w)) => {
            a.len() == w.len() && a.iter().zip(w).all(|(av, wv)| contains(av, wv))
        }
        _ => actual == wanted,
    }
}

impl Plan {
    /// Whether carrying out the plan changes the pod template (and so rolls
    /// the Deployment).
    pub fn changes_template(&self, pod: &PodShape) -> bool {
        !self.releases.is_empty()
            || self.label_missing
            || self.label_removed
            || self
                .claims
                .iter()
                .any(|(slot, v)| !slot.current(pod).is_some_and(|c| contains(&c, v)))
    }

    /// Whether the Deployment needs any write: a template change or a ledger
    /// that differs from the one stored.
    pub fn needs_write(&self, pod: &PodShape, stored: Option<&Ledger>) -> bool {
        self.changes_template(pod) || self.ledger.as_ref() != stored
    }

    /// Whether the plan's ledger records an original value that the stored
    /// ledger does not: a value read from the cached template, so the write
    /// is only right on the very version it was read from. (A stale copy
    /// would record what a policy released a moment ago as the original,
    /// and a later release would put that policy's value back.)
    pub fn records_originals(&self, stored: Option<&Ledger>) -> bool {
        self.ledger.as_ref().is_some_and(|l| {
            l.owned
                .iter()
                .any(|(slot, original)| stored.and_then(|s| s.owned.get(slot)) != Some(original))
        })
    }

    /// Whether the apply puts the hooked-pods label on the template: while
    /// this policy holds a hook there.
    pub fn labels_pods(&self) -> bool {
        self.ledger
            .as_ref()
            .is_some_and(|l| l.owned.keys().any(is_hook))
    }

    pub fn conflicts(&self) -> impl Iterator<Item = (&Slot, &Outcome)> {
        self.outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::SkippedExisting | Outcome::LostTo(_)))
    }
}

/// Whether a policy takes part in contention for Enforce policies: DryRun
/// policies never block one that enforces.
pub fn contends(mode: Mode) -> bool {
    mode == Mode::Enforce
}

/// The named containers the template does not have (as regular containers
/// or sidecars), for the status: a typo must not pass silently.
pub fn missing_containers(spec: &LifecyclePolicySpec, pod: &PodShape) -> Vec<String> {
    spec.containers
        .iter()
        .flatten()
        .filter(|n| pod.find(n).is_none())
        .cloned()
        .collect()
}

/// When the policy's preStop is a sleep that the grace period in force cuts
/// short, says so. (An exec or httpGet hook's length cannot be known.)
pub fn grace_too_short(spec: &LifecyclePolicySpec, pod: &PodShape) -> Option<String> {
    let sleep = spec.pre_stop.as_ref()?.sleep.as_ref()?.seconds;
    // 30 s is the API server's default for an unset grace period.
    let grace = spec
        .termination_grace_period_seconds
        .or(pod.termination_grace_period_seconds)
        .unwrap_or(30);
    (sleep >= grace).then(|| {
        format!("preStop sleeps {sleep}s but the grace period is {grace}s: the kubelet kills the container before the hook ends")
    })
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
