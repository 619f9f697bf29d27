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

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use crate::api::types::{LifecyclePolicySpec, Mode, OnConflict};
use crate::apply::ledger::{CONTEST_LIMIT, CONTEST_WINDOW, Contest, Ledger, Via};
use crate::apply::slot::Slot;
use crate::apply::workload::{PodShape, Section};
use crate::hooks::hook::{DEFAULT_GRACE_SECONDS, HookKind};

/// What decides a tug-of-war on one workload (see [`Contest`]).
#[derive(Clone, Debug, Default)]
pub struct Fights {
    /// The contest recorded in the policy's stored ledger.
    pub previous: Option<Contest>,
    /// Slots the policy held that another manager (named) set since.
    pub taken: BTreeMap<Slot, String>,
    /// For each slot, a field manager other than the operator's that owns it now.
    pub owners: BTreeMap<Slot, String>,
    pub now: Option<Time>,
    pub generation: i64,
}

impl Fights {
    /// The contest after what was seen now: takeovers within the window
    /// counted, one more if a slot was just taken back.
    fn contest(&self) -> Option<Contest> {
        let recent = |t: &Time| {
            self.now
                .as_ref()
                .is_some_and(|n| n.0.duration_since(t.0) < CONTEST_WINDOW)
        };
        let mut c = self
            .previous
            .clone()
            .filter(|c| c.generation == self.generation);
        // Stopped, it stands while the other manager holds a slot, however
        // long ago: else the fight would resume every window.
        if c.as_ref().is_some_and(|c| self.stops(c)) {
            return c;
        }
        if let Some(c) = c.as_mut() {
            c.times.retain(recent);
        }
        if let (Some((_, manager)), Some(now)) = (self.taken.iter().next(), &self.now) {
            let mut next = c.filter(|c| &c.manager == manager).unwrap_or(Contest {
                manager: manager.clone(),
                slots: BTreeSet::new(),
                generation: self.generation,
                times: Vec::new(),
            });
            next.slots.extend(
                self.taken
                    .iter()
                    .filter(|(_, m)| *m == manager)
                    .map(|(s, _)| s.clone()),
            );
            next.times.push(now.clone());
            let excess = next.times.len().saturating_sub(CONTEST_LIMIT);
            next.times.drain(..excess);
            return Some(next);
        }
        // Kept while its takeovers count, within the window.
        c.filter(|c| !c.times.is_empty())
    }

    /// The policy has stopped re-claiming these slots: who holds them.
    fn stops(&self, c: &Contest) -> bool {
        c.times.len() >= CONTEST_LIMIT
            && c.slots
                .iter()
                .any(|s| self.owners.get(s) == Some(&c.manager))
    }
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
    /// Lower wins: see `apply::precedence`.
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
pub enum SlotOutcome {
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
    /// The grace period: the template's own is at least the policy's, and
    /// onConflict is Skip, so it stays (never shortened silently).
    KeptLonger(i64),
    /// Another field manager (named) took the slot back too often: the
    /// policy no longer re-claims it (see [`Contest`]).
    Contested(String),
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
    pub outcomes: BTreeMap<Slot, SlotOutcome>,
    /// Released slots whose original value is unknown: removed, not restored.
    pub unrestorable: BTreeSet<Slot>,
    /// The template lacks the hooked-pods label that the apply adds.
    pub label_missing: bool,
    /// The release removes the hooked-pods label: no policy holds a hook here any more.
    pub label_removed: bool,
    /// Claimed slots that hold another handler type now (an `exec` where the
    /// policy sets `sleep`): replaced whole before the apply, so the API
    /// server never merges two handlers. The value is the one replaced.
    pub replaces: BTreeMap<Slot, Value>,
    /// DryRun: the changes the policy would make and does not.
    pub withheld: BTreeMap<Slot, Value>,
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
    /// DryRun: set nothing new, change no value; hand back what is released.
    pub dry_run: bool,
    pub fights: &'a Fights,
}

/// Decides what the policy owns on this Deployment. Pure and deterministic.
pub fn plan(input: &Input) -> Plan {
    let mine = input.ledgers.get(input.policy);
    let wants = if input.active {
        wanted(input.spec, input.pod)
    } else {
        BTreeMap::new()
    };
    // A policy letting go (deleted, or the workload unselected) keeps no
    // record of a fight: its ledger must go with its last slot.
    let contest = input.active.then(|| input.fights.contest()).flatten();
    let stopped = contest.as_ref().filter(|c| input.fights.stops(c));
    let mut d = Draft::default();
    for (slot, value) in wants {
        let outcome = slot_outcome(input, mine, stopped, &mut d, &slot, value);
        d.plan.outcomes.insert(slot, outcome);
    }
    finish(input, mine, contest, d)
}

/// The plan as it is being made, and the ledger it will record.
#[derive(Default)]
struct Draft {
    plan: Plan,
    owned: BTreeMap<Slot, Option<Value>>,
    empty_lifecycle: BTreeSet<String>,
}

/// How one wanted slot turns out; what the policy claims there goes into
/// the draft.
fn slot_outcome(
    input: &Input,
    mine: Option<&Ledger>,
    stopped: Option<&Contest>,
    d: &mut Draft,
    slot: &Slot,
    value: Value,
) -> SlotOutcome {
    let current = slot.current(input.pod);
    let held_by_me = mine.and_then(|l| l.owned.get(slot));
    let winner = input.winners.get(slot).copied().unwrap_or(input.policy);
    let skip = input.spec.on_conflict == OnConflict::Skip;
    if winner != input.policy {
        SlotOutcome::LostTo(winner.to_string())
    } else if let Some(c) = stopped
        .filter(|c| c.slots.contains(slot) && input.fights.owners.get(slot) == Some(&c.manager))
    {
        SlotOutcome::Contested(c.manager.clone())
    } else if let Some(original) = held_by_me {
        if original.as_ref() == Some(&value) {
            // The wanted value is the original again: hand the slot back.
            SlotOutcome::AlreadySet
        } else if let (Slot::GracePeriod, true, Some(own)) =
            (slot, skip, original.as_ref().and_then(Value::as_i64))
            && value.as_i64().is_some_and(|want| own >= want)
        {
            // Shortened by an earlier build: the template's own comes back.
            SlotOutcome::KeptLonger(own)
        } else if input.dry_run && !current.as_ref().is_some_and(|c| contains(c, &value)) {
            // Keep what is there; report the new value as withheld.
            d.plan.withheld.insert(slot.clone(), value);
            if let Some(c) = current {
                d.plan.claims.insert(slot.clone(), c);
            }
            d.owned.insert(slot.clone(), original.clone());
            SlotOutcome::Claimed
        } else {
            d.plan.claims.insert(slot.clone(), value);
            d.owned.insert(slot.clone(), original.clone());
            SlotOutcome::Claimed
        }
    } else if let Some(holder) = holder_other_than(input, slot) {
        SlotOutcome::HeldBy(holder.to_string())
    } else if current.as_ref().is_some_and(|c| contains(c, &value)) {
        SlotOutcome::AlreadySet
    } else if current.is_some() && is_hook(slot) && skip {
        SlotOutcome::SkippedExisting
    } else if let (Slot::GracePeriod, true, Some(own)) =
        (slot, skip, current.as_ref().and_then(Value::as_i64))
        && value.as_i64().is_some_and(|want| own >= want)
    {
        SlotOutcome::KeptLonger(own)
    } else if input.dry_run {
        d.plan.withheld.insert(slot.clone(), value);
        SlotOutcome::Claimed
    } else {
        if let Some(c) = current.as_ref().filter(|c| !same_handler_type(c, &value)) {
            d.plan.replaces.insert(slot.clone(), c.clone());
        }
        if let Slot::Hook { container, .. } = slot
            && was_empty_lifecycle(input, container)
        {
            d.empty_lifecycle.insert(container.clone());
        }
        d.plan.claims.insert(slot.clone(), value);
        d.owned.insert(slot.clone(), current);
        SlotOutcome::Claimed
    }
}

/// Releases what the policy no longer claims, the label, and the ledger.
fn finish(input: &Input, mine: Option<&Ledger>, contest: Option<Contest>, mut d: Draft) -> Plan {
    let mut unknown = BTreeSet::new();
    if let Some(l) = mine {
        for (slot, original) in &l.owned {
            if d.owned.contains_key(slot) {
                if l.unknown.contains(slot) {
                    unknown.insert(slot.clone());
                }
            } else {
                d.plan.releases.insert(slot.clone(), original.clone());
                if l.unknown.contains(slot) {
                    d.plan.unrestorable.insert(slot.clone());
                }
            }
        }
    }
    let hooks_held = d.owned.keys().any(is_hook) || input.others_hold_hooks;
    d.plan.label_missing = d.owned.keys().any(is_hook) && !input.labelled && !input.dry_run;
    d.plan.label_removed = mine.is_some() && input.labelled && !hooks_held;
    if let Some(l) = mine {
        // Still true of every container where the policy holds a hook.
        d.empty_lifecycle.extend(l.empty_lifecycle.iter().cloned());
    }
    d.empty_lifecycle.retain(|c| {
        d.owned
            .keys()
            .any(|s| matches!(s, Slot::Hook { container, .. } if container == c))
    });
    if !d.owned.is_empty() || contest.is_some() {
        d.plan.ledger = Some(Ledger {
            policy: input.policy.to_string(),
            owned: d.owned,
            unknown,
            empty_lifecycle: d.empty_lifecycle,
            contest,
            via: mine.map_or(Via::Background, |l| l.via),
        });
    }
    d.plan
}

/// Whether the container's `lifecycle` was `{}` before any policy: it is
/// `{}` now, or holds only other policies' hooks and one of them recorded it.
fn was_empty_lifecycle(input: &Input, container: &str) -> bool {
    let Some(l) = input
        .pod
        .find(container)
        .and_then(|(_, _, c)| c.lifecycle.as_ref())
        .and_then(Value::as_object)
    else {
        return false;
    };
    if l.is_empty() {
        return true;
    }
    let others = || {
        input
            .ledgers
            .iter()
            .filter(|(name, _)| name.as_str() != input.policy)
            .map(|(_, l)| l)
    };
    let held_by_others = l.keys().all(|k| {
        HookKind::from_field(k).is_some_and(|kind| {
            others().any(|o| o.owned.contains_key(&Slot::hook(container, kind)))
        })
    });
    held_by_others && others().any(|o| o.empty_lifecycle.contains(container))
}

/// Whether two handlers are of the same type (`exec`, `httpGet`, `sleep`):
/// every key of `current` is one `wanted` sets too.
fn same_handler_type(current: &Value, wanted: &Value) -> bool {
    match (current.as_object(), wanted.as_object()) {
        (Some(c), Some(w)) => c.keys().all(|k| w.contains_key(k)),
        _ => true,
    }
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

    pub fn conflicts(&self) -> impl Iterator<Item = (&Slot, &SlotOutcome)> {
        self.outcomes.iter().filter(|(_, o)| {
            matches!(
                o,
                SlotOutcome::SkippedExisting | SlotOutcome::LostTo(_) | SlotOutcome::Contested(_)
            )
        })
    }

    /// The workload's slots another manager took back too often.
    pub fn contested(&self) -> Option<&str> {
        self.outcomes.values().find_map(|o| match o {
            SlotOutcome::Contested(m) => Some(m.as_str()),
            _ => None,
        })
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
    let own = pod.termination_grace_period_seconds;
    let grace = match (spec.termination_grace_period_seconds, spec.on_conflict) {
        // Skip never shortens the template's own (see `SlotOutcome::KeptLonger`).
        (Some(g), OnConflict::Skip) => g.max(own.unwrap_or(0)),
        (Some(g), OnConflict::Override) => g,
        (None, _) => own.unwrap_or(DEFAULT_GRACE_SECONDS),
    };
    (sleep >= grace).then(|| {
        format!("preStop sleeps {sleep}s but the grace period is {grace}s: the kubelet kills the container before the hook ends")
    })
}

#[cfg(test)]
mod tests;
