//! Deciding, pure: one policy, its neighbours and the cached workloads of its
//! namespace in; one [`Decision`] per workload out, each with the writes to
//! make. Rollout slots and contention are settled here, before anything is
//! written, so the executor can write in parallel and `maxConcurrentRollouts`
//! still holds exactly.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};
use serde_json::Value;

use crate::api::identity::PolicyId;
use crate::api::types::{LifecyclePolicy, LifecyclePolicySpec, Mode, OnConflict, WorkloadKind};
use crate::apply::ledger::{self, Damage, Ledger, Via, field_manager, ledger_key, read_ledgers};
use crate::apply::neighbours::Neighbourhoods;
use crate::apply::patch::{Target, apply_body, guard_release, release_patch};
use crate::apply::plan::{self, Fights, Input, Plan};
use crate::apply::slot::Slot;
use crate::apply::workload::{Workload, WorkloadKey};

/// The policy being reconciled and what it competes with.
pub struct Scope<'a> {
    pub policy: &'a LifecyclePolicy,
    pub selector: &'a Selector,
    /// False when the policy is being deleted: it releases everything.
    pub active: bool,
    /// Every policy of each namespace decided in, this one included.
    pub neighbours: &'a Neighbourhoods,
    /// Workloads the policy hands back although it selects them: a halted
    /// rollout's reverted workloads.
    pub revert: &'a BTreeSet<WorkloadKey>,
    /// The safe rollout's gate: only these may get a template change now.
    pub hold: Option<&'a Hold>,
    /// When this is decided: takeovers by other managers are timed with it.
    pub now: Timestamp,
    /// Who writes what is decided: the background path, or the admission
    /// webhook (which records it in a new ledger).
    pub via: Via,
}

/// Template changes the safe rollout allows now; the rest are held, and
/// take no rollout slot.
pub struct Hold {
    pub allow: BTreeSet<WorkloadKey>,
    pub why: String,
}

/// What to do with one workload.
#[derive(Debug)]
pub enum Intent {
    /// The template already holds what the plan wants.
    UpToDate,
    /// DryRun: the plan would write.
    WouldPatch,
    /// The template would change, but maxConcurrentRollouts workloads roll already.
    WaitForSlot,
    /// The template would change, but the safe rollout holds it back (the
    /// canary or a wave is not done, or the rollout halted): why.
    Held(String),
    Write(Write),
}

/// The requests that carry out a plan on one workload, in order.
#[derive(Debug)]
pub struct Write {
    /// A JSON patch handing slots back (and the ledger, when nothing is left).
    pub release: Option<Value>,
    /// The server-side-apply configuration of everything the policy claims.
    pub apply: Option<Value>,
    /// The pod template changes.
    pub changes_template: bool,
    /// ... and pods restart for it: the workload rolls out (not staged).
    pub rolls: bool,
    /// The cached resourceVersion when the plan records originals read from
    /// a copy that shows a gone policy's ledger (see [`Plan::records_originals`]):
    /// the release patch tests it, and the apply carries it (or the version
    /// the release made) as a precondition, so a stale copy gets a 409/422
    /// and a new plan instead of a wrong ledger.
    pub guard: Option<String>,
}

/// One workload the policy matches or still holds slots on.
#[derive(Debug)]
pub struct Decision {
    pub workload: Arc<Workload>,
    /// How the rollout and the status name it (see [`workload_key`]).
    pub key: WorkloadKey,
    /// Selected and not reverted: the policy wants its hooks here.
    pub matched: bool,
    /// Selected, but reverted by a halted rollout.
    pub reverted: bool,
    /// Why a template change restarts no pod here; see [`Workload::staged`].
    pub staged: Option<String>,
    /// Named containers this template does not have.
    pub missing_containers: Vec<String>,
    pub plan: Plan,
    /// How this policy's ledger disagreed with managedFields, if it did.
    pub damage: Option<Damage>,
    /// The preStop sleep would outlast the grace period in force.
    pub grace_too_short: Option<String>,
    pub intent: Intent,
}

impl Decision {
    pub fn name(&self) -> String {
        self.workload.name_any()
    }

    /// The template still has to change (now, or once a slot frees up).
    pub fn changes_template(&self) -> bool {
        match &self.intent {
            Intent::Write(w) => w.changes_template,
            Intent::WaitForSlot | Intent::Held(_) => true,
            Intent::UpToDate | Intent::WouldPatch => false,
        }
    }

    /// What the status says about the ledger here: damage found now,
    /// originals lost earlier, hooks removed rather than restored.
    pub fn integrity(&self) -> Option<String> {
        let list = |s: &mut dyn Iterator<Item = &Slot>| {
            s.map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
        };
        let mut parts = Vec::new();
        if let Some(d) = &self.damage {
            parts.push(format!("{d}; rebuilt from managedFields"));
        }
        if !self.plan.unrestorable.is_empty() {
            parts.push(format!(
                "the original of {} could not be restored (unknown): the hook was removed",
                list(&mut self.plan.unrestorable.iter())
            ));
        }
        if let Some(l) = &self.plan.ledger
            && !l.unknown.is_empty()
        {
            parts.push(format!(
                "the original of {} is unknown: it will be removed, not restored, on release",
                list(&mut l.unknown.iter())
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// Decides for every workload of the namespace (sorted by name, so slots go
/// in a stable order) that the policy matches or holds slots on.
pub fn decide(scope: &Scope, workloads: Vec<Arc<Workload>>) -> Vec<Decision> {
    intents(scope, plan_all(scope, workloads))
}

/// One workload's plan, before the rollout gate and the rollout slots.
#[derive(Debug)]
pub struct Planned {
    pub workload: Arc<Workload>,
    pub key: WorkloadKey,
    /// Selected and not reverted: the policy wants its hooks here.
    pub matched: bool,
    pub reverted: bool,
    pub plan: Plan,
    /// This policy's ledger as stored on the workload.
    stored: Option<Ledger>,
    /// The ledger disagreed with managedFields: written even if the plan
    /// has nothing new.
    damaged: bool,
    /// ... unless named managers took those slots back (a contest).
    damage: Option<Damage>,
    /// The cached copy shows a gone policy's ledger (see `Write::guard`).
    gone_ledgers: bool,
    /// Admitted hooks the policy's manager has yet to take over.
    takeover: bool,
}

impl Planned {
    /// Something must be written: the plan changes the workload, or the
    /// ledger must be repaired.
    fn needs_write(&self) -> bool {
        self.plan
            .needs_write(self.workload.pod(), self.stored.as_ref())
            || self.damaged
            || (self.takeover && self.plan.ledger.is_some())
    }

    /// The template still has to change (now, or once a slot frees up).
    pub fn changes_template(&self) -> bool {
        self.needs_write() && self.plan.changes_template(self.workload.pod())
    }
}

/// The plans of one policy over its namespace.
#[derive(Debug)]
pub struct Plans {
    pub items: Vec<Planned>,
    /// Workloads carrying this policy's ledger that are rolling now: they
    /// hold rollout slots.
    rolling: i32,
}

/// Selects and plans: every workload the policy selects or holds slots on,
/// its ledgers read and checked, its plan made.
pub fn plan_all(scope: &Scope, mut workloads: Vec<Arc<Workload>>) -> Plans {
    let owner = scope.policy.id().owner();
    // Across namespaces too (a cluster policy's): the same order every time.
    workloads.sort_by(|a, b| order(a).cmp(&order(b)));
    scope.neighbours.forget_except(&workloads);
    let rolling = workloads
        .iter()
        .filter(|d| {
            d.is_rolling() && read_ledgers(d.metadata.annotations.as_ref()).contains_key(&owner)
        })
        .count() as i32;
    let rendered = scope.policy.rendered();
    let items = workloads
        .into_iter()
        .filter_map(|d| plan_one(scope, &rendered, d))
        .collect();
    Plans { items, rolling }
}

/// Namespace, kind, name.
fn order(d: &Workload) -> (Option<&str>, WorkloadKind, Option<&str>) {
    (
        d.metadata.namespace.as_deref(),
        d.kind,
        d.metadata.name.as_deref(),
    )
}

fn plan_one(scope: &Scope, rendered: &LifecyclePolicySpec, d: Arc<Workload>) -> Option<Planned> {
    let policy = scope.policy;
    let owner = policy.id().owner();
    let manager = field_manager(&owner);
    // A workload on its way out needs nothing restored.
    if d.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let neighbours = scope.neighbours.of(&d)?;
    // A cluster policy acts only where its namespaceSelector takes the namespace.
    let here = match policy.id() {
        PolicyId::Namespaced { .. } => true,
        PolicyId::Cluster { .. } => neighbours.acts(&owner),
    };
    let selected = scope.active
        && here
        && policy.spec.kinds.contains(&d.kind)
        && scope.selector.matches(d.labels());
    // Neither selected nor ever written by this policy (no ledger, no
    // managedFields of its manager): nothing to decide, and the common
    // case of a namespace with many policies, so it costs no parsing.
    if !selected && !touched(&d, &owner, &manager) {
        return None;
    }
    let key = workload_key(policy, &d);
    let reverted = selected && scope.revert.contains(&key);
    let matched = selected && !reverted;
    let mut ledgers = read_ledgers(d.metadata.annotations.as_ref());
    // Ledgers of policies that no longer exist do not block anyone. But
    // the copy may just lag their release: see `Write::guard`.
    let before = ledgers.len();
    ledgers.retain(|p, _| neighbours.has(p));
    let gone_ledgers = ledgers.len() < before;
    // This policy's own ledger, checked against its field manager's
    // managedFields: a damaged ledger is rebuilt, never trusted blindly.
    let stored = ledgers.remove(&owner);
    let annotation = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&ledger_key(&owner)));
    let checked = ledger::check(
        &owner,
        annotation.map(String::as_str),
        &ledger::owned_by(d.managed_fields(), &manager, &owner),
    );
    if let Some(l) = &checked.ledger {
        ledgers.insert(owner.clone(), l.clone());
    }
    if !selected && checked.ledger.is_none() && checked.damage.is_none() {
        return None;
    }
    let fights = fights(scope, &d, stored.as_ref(), &checked.damage);
    // A slot another manager took back is a contest, not a damaged ledger.
    let damage = checked
        .damage
        .clone()
        .filter(|dmg| !is_takeover(dmg, &fights));
    let pod = d.pod();
    let contenders = neighbours.contenders(&owner, &d, pod);
    let winners = plan::winners(&contenders);
    let deleting = neighbours.deleting();
    let mut plan = plan::plan(&Input {
        policy: &owner,
        spec: rendered,
        active: matched,
        pod,
        labelled: d.hooked_label(),
        others_hold_hooks: ledgers.iter().any(|(p, l)| {
            *p != owner
                && !deleting.contains(p.as_str())
                && l.owned.keys().any(|s| matches!(s, Slot::Hook { .. }))
        }),
        ledgers: &ledgers,
        winners: &winners,
        dry_run: policy.spec.mode == Mode::DryRun && matched,
        fights: &fights,
    });
    // A first claim records who made it.
    if let Some(l) = plan.ledger.as_mut().filter(|_| stored.is_none()) {
        l.via = scope.via;
    }
    Some(Planned {
        key,
        matched,
        reverted,
        plan,
        stored,
        takeover: checked.takeover,
        damaged: checked.damage.is_some(),
        damage,
        gone_ledgers,
        workload: d,
    })
}

/// The rollout gate and slots, then the writes: one [`Decision`] per plan.
pub fn intents(scope: &Scope, plans: Plans) -> Vec<Decision> {
    let policy = scope.policy;
    let owner = policy.id().owner();
    let limit = policy.spec.max_concurrent_rollouts;
    let mut rolling = plans.rolling;
    plans
        .items
        .into_iter()
        .map(|p| {
            let pod = p.workload.pod();
            let staged = p.workload.staged();
            let changes_template = p.plan.changes_template(pod);
            let rolls = changes_template && staged.is_none();
            let held = scope
                .hold
                .filter(|h| p.matched && changes_template && !h.allow.contains(&p.key));
            // DryRun withholds new changes in the plan itself: what is left to
            // write hands slots back or repairs the ledger, and goes ahead.
            let intent = if !p.needs_write() {
                if p.plan.withheld.is_empty() {
                    Intent::UpToDate
                } else {
                    Intent::WouldPatch
                }
            } else if let Some(h) = held {
                Intent::Held(h.why.clone())
            } else if rolls && limit > 0 && rolling >= limit {
                Intent::WaitForSlot
            } else {
                if rolls {
                    rolling += 1;
                }
                Intent::Write(write(&owner, &p, changes_template, rolls))
            };
            Decision {
                key: p.key.clone(),
                missing_containers: if p.matched {
                    plan::missing_containers(&policy.spec, pod)
                } else {
                    Vec::new()
                },
                staged,
                reverted: p.reverted,
                grace_too_short: p
                    .matched
                    .then(|| plan::grace_too_short(&policy.spec, pod))
                    .flatten(),
                workload: p.workload,
                matched: p.matched,
                plan: p.plan,
                damage: p.damage,
                intent,
            }
        })
        .collect()
}

/// The requests that carry out one plan.
fn write(policy: &str, p: &Planned, changes_template: bool, rolls: bool) -> Write {
    let d = &p.workload;
    let pod = d.pod();
    let (ns, workload) = (d.namespace().unwrap_or_default(), d.name_any());
    let target = Target {
        kind: d.kind,
        name: &workload,
        namespace: &ns,
    };
    // A gone policy's ledger in the cached copy means its release may have
    // landed since: an original read from this copy could be that policy's
    // value, so the write must land on this very version. (Only then: a
    // copy that merely lags this policy's own last write would just repeat
    // it, harmlessly.)
    let guard = (p.gone_ledgers && p.plan.records_originals(p.stored.as_ref()))
        .then(|| d.metadata.resource_version.clone())
        .flatten();
    let mut release = release_patch(policy, pod, d.metadata.annotations.as_ref(), &p.plan);
    if let (Some(ops), Some(version)) = (release.as_mut(), guard.as_deref()) {
        guard_release(ops, version);
    }
    Write {
        release,
        apply: p
            .plan
            .ledger
            .is_some()
            .then(|| apply_body(&target, pod, &p.plan)),
        changes_template,
        rolls,
        guard,
    }
}

/// How a policy names a workload: within its namespace, or across
/// namespaces for a cluster policy.
pub fn workload_key(policy: &LifecyclePolicy, w: &Workload) -> WorkloadKey {
    match policy.id() {
        PolicyId::Namespaced { .. } => WorkloadKey::of(w),
        PolicyId::Cluster { .. } => WorkloadKey::qualified(w),
    }
}

/// The tug-of-war with other field managers on one workload: under
/// `onConflict: Override` only (Skip leaves another manager's hook alone).
fn fights(scope: &Scope, d: &Workload, stored: Option<&Ledger>, damage: &Option<Damage>) -> Fights {
    let policy = scope.policy;
    if policy.spec.on_conflict != OnConflict::Override {
        return Fights::default();
    }
    let owners = ledger::foreign_owners(&d.foreign);
    let taken = match damage {
        Some(Damage::Inconsistent { not_owned, .. }) => not_owned
            .iter()
            .filter_map(|s| Some((s.clone(), owners.get(s)?.clone())))
            .collect(),
        _ => Default::default(),
    };
    Fights {
        previous: stored.and_then(|l| l.contest.clone()),
        taken,
        owners,
        now: Some(Time(scope.now)),
        generation: policy.metadata.generation.unwrap_or_default(),
    }
}

/// The damage is only slots that named managers took back.
fn is_takeover(damage: &Damage, fights: &Fights) -> bool {
    matches!(damage, Damage::Inconsistent { not_owned, unrecorded }
        if unrecorded.is_empty() && !not_owned.is_empty()
            && not_owned.iter().all(|s| fights.taken.contains_key(s)))
}

/// The policy may have left something on the workload: its ledger, or
/// fields its manager applied (a ledger deleted by hand: damage).
pub fn touched(w: &Workload, policy: &str, manager: &str) -> bool {
    let ledger = w
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(&ledger_key(policy)));
    ledger
        || w.managed_fields()
            .iter()
            .any(|e| e.manager.as_deref() == Some(manager))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::neighbours::Neighbourhood;
    use crate::apply::workload::HOOKED_LABEL;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    fn deploy(name: &str, labels: Value, status: Value) -> Arc<Workload> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns", "labels": labels, "generation": 1},
                "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c"}]}}},
                "status": status,
            }))
            .unwrap(),
        )
    }

    fn settled(name: &str) -> Arc<Workload> {
        deploy(
            name,
            json!({"app": "web"}),
            json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}),
        )
    }

    fn policy_with(name: &str, created: i64, extra: Value, deleting: bool) -> Arc<LifecyclePolicy> {
        let mut meta = json!({"name": name, "namespace": "ns", "creationTimestamp": Timestamp::from_second(created).unwrap().to_string()});
        if deleting {
            meta["deletionTimestamp"] =
                json!(Timestamp::from_second(created + 1).unwrap().to_string());
        }
        let mut spec = json!({"selector": {"matchLabels": {"app": "web"}}, "preStop": {"sleep": {"seconds": 1}}});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "lifecycle-operator.io/v1alpha1", "kind": "LifecyclePolicy", "metadata": meta,
                "spec": spec,
            }))
            .unwrap(),
        )
    }

    fn policy(name: &str, created: i64, mode: &str, deleting: bool) -> Arc<LifecyclePolicy> {
        policy_with(name, created, json!({"mode": mode}), deleting)
    }

    fn run(
        p: &Arc<LifecyclePolicy>,
        neighbours: &[Arc<LifecyclePolicy>],
        ds: Vec<Arc<Workload>>,
    ) -> Vec<Decision> {
        let selector = Selector::try_from(LabelSelector::from(&p.spec.selector)).unwrap();
        decide(
            &Scope {
                policy: p,
                selector: &selector,
                active: true,
                neighbours: &Neighbourhood::new(neighbours).into(),
                revert: &BTreeSet::new(),
                hold: None,
                now: Timestamp::from_second(1_800_000_000).unwrap(),
                via: Via::Background,
            },
            ds,
        )
    }

    fn kinds(ds: &[Decision]) -> Vec<(String, &'static str)> {
        ds.iter()
            .map(|d| {
                let k = match &d.intent {
                    Intent::UpToDate => "up-to-date",
                    Intent::WouldPatch => "would-patch",
                    Intent::WaitForSlot => "wait",
                    Intent::Held(_) => "held",
                    Intent::Write(w) if w.rolls => "write+roll",
                    Intent::Write(_) => "write",
                };
                (d.name(), k)
            })
            .collect()
    }

    /// A Deployment in namespace `ns`; `carries`: with the preStop, ledger
    /// and managedFields of the cluster policy "drain".
    fn cluster_deployment(ns: &str, carries: bool) -> Arc<Workload> {
        let d = serde_json::to_string(&crate::apply::fixtures::deployment("d", carries)).unwrap();
        let d = d
            .replace(
                "lifecycle-operator.io/p",
                "lifecycle-operator.io/cluster_drain",
            )
            .replace("lifecycle-operator/p", "lifecycle-operator/cluster_drain")
            .replace(r#"\"policy\":\"p\""#, r#"\"policy\":\"cluster_drain\""#);
        let mut w: Workload = serde_json::from_str(&d).unwrap();
        w.kind = crate::api::types::WorkloadKind::Deployment;
        w.metadata.namespace = Some(ns.into());
        w.metadata.uid = Some(format!("d-{ns}"));
        Arc::new(w)
    }

    /// One cluster policy over a selected and an unselected namespace:
    /// where it acts it claims; where it no longer does it hands its hooks
    /// back; it names both workloads with their namespaces.
    #[test]
    fn a_cluster_policy_claims_where_it_acts_and_releases_where_it_does_not() {
        use crate::apply::fixtures::{cluster_policy, policies};
        use crate::apply::neighbours::Neighbours;
        let c = cluster_policy("drain", json!({}));
        let view = c.view();
        let all = policies(&[], &[c], &[("a", json!({"team": "a"})), ("b", json!({}))]);
        let ds = vec![
            cluster_deployment("a", false),
            cluster_deployment("b", true),
        ];
        assert!(touched(
            &ds[1],
            "cluster_drain",
            "lifecycle-operator/cluster_drain"
        ));
        let selector = Selector::try_from(LabelSelector::from(&view.spec.selector)).unwrap();
        let out = decide(
            &Scope {
                policy: &view,
                selector: &selector,
                active: true,
                neighbours: &Neighbours::default().around(&all, &ds),
                revert: &BTreeSet::new(),
                hold: None,
                now: Timestamp::from_second(1_800_000_000).unwrap(),
                via: Via::Background,
            },
            ds,
        );
        let seen: Vec<(String, bool, bool, bool)> = out
            .iter()
            .map(|d| {
                let Intent::Write(w) = &d.intent else {
                    panic!("{}: {:?}", d.key, d.intent)
                };
                (
                    d.key.to_string(),
                    d.matched,
                    w.apply.is_some(),
                    w.release.is_some(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("a/Deployment/d".to_string(), true, true, false),
                ("b/Deployment/d".to_string(), false, false, true),
            ]
        );
    }

    #[test]
    fn rollout_slots_are_handed_out_before_anything_is_written() {
        let p = policy_with("p", 100, json!({"maxConcurrentRollouts": 2}), false);
        let ds: Vec<_> = ["e", "d", "c", "b", "a"]
            .iter()
            .map(|n| settled(n))
            .collect();
        let out = run(&p, std::slice::from_ref(&p), ds);
        assert_eq!(
            kinds(&out),
            [
                ("a".into(), "write+roll"),
                ("b".into(), "write+roll"),
                ("c".into(), "wait"),
                ("d".into(), "wait"),
                ("e".into(), "wait"),
            ]
        );
        // Every write claims the hook and labels the pods for the observer.
        let Intent::Write(w) = &out[0].intent else {
            unreachable!()
        };
        let body = w.apply.as_ref().unwrap();
        assert_eq!(
            body["spec"]["template"]["metadata"]["labels"][HOOKED_LABEL],
            "true"
        );
        assert_eq!(
            body["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"],
            json!({"sleep": {"seconds": 1}})
        );
        assert!(w.release.is_none());
    }

    #[test]
    fn workloads_rolling_for_this_policy_hold_slots() {
        let p = policy_with("p", 100, json!({"maxConcurrentRollouts": 1}), false);
        // `a` carries this policy's ledger and still rolls: no slot is left.
        let mut a: Workload = (*deploy("a", json!({"app": "web"}), json!({}))).clone();
        a.metadata.annotations = Some(
            [(
                ledger_key("p"),
                r#"{"policy":"p","owned":{"c/preStop":null}}"#.to_string(),
            )]
            .into(),
        );
        let out = run(
            &p,
            std::slice::from_ref(&p),
            vec![Arc::new(a), settled("b")],
        );
        assert_eq!(kinds(&out)[1], ("b".into(), "wait"));
        // With no limit everything is written at once.
        let p = policy("p", 100, "Enforce", false);
        let ds: Vec<_> = (0..50).map(|i| settled(&format!("d{i:02}"))).collect();
        let out = run(&p, std::slice::from_ref(&p), ds);
        assert!(kinds(&out).iter().all(|(_, k)| *k == "write+roll"));
    }

    #[test]
    fn kinds_select_and_staged_workloads_take_no_slot() {
        use crate::api::types::WorkloadKind::{DaemonSet, StatefulSet};
        let p = policy_with(
            "p",
            100,
            json!({"maxConcurrentRollouts": 1, "kinds": ["StatefulSet", "Deployment"]}),
            false,
        );
        let of = |kind, name: &str, spec: Value| {
            let mut w = (*settled(name)).clone();
            w.kind = kind;
            w.spec.update_strategy = serde_json::from_value(spec).unwrap();
            Arc::new(w)
        };
        let ds = vec![
            of(StatefulSet, "a-ondelete", json!({"type": "OnDelete"})),
            of(
                StatefulSet,
                "b-partition",
                json!({"rollingUpdate": {"partition": 1}}),
            ),
            of(DaemonSet, "c-not-selected", json!(null)),
            settled("d"),
            settled("e"),
        ];
        let out = run(&p, std::slice::from_ref(&p), ds);
        // Sorted by kind, then name; the DaemonSet kind is not selected.
        assert_eq!(
            kinds(&out),
            [
                ("d".into(), "write+roll"),
                ("e".into(), "wait"),
                ("a-ondelete".into(), "write"),
                ("b-partition".into(), "write"),
            ]
        );
        assert!(out[2].staged.as_deref().unwrap().contains("OnDelete"));
        let Intent::Write(w) = &out[2].intent else {
            unreachable!()
        };
        assert!(w.changes_template && !w.rolls);
        assert_eq!(w.apply.as_ref().unwrap()["kind"], "StatefulSet");
    }

    #[test]
    fn held_workloads_take_no_rollout_slot() {
        let p = policy_with("p", 100, json!({"maxConcurrentRollouts": 1}), false);
        let selector = Selector::try_from(LabelSelector::from(&p.spec.selector)).unwrap();
        let hold = Hold {
            allow: ["Deployment/b".parse().unwrap()].into(),
            why: "waiting for the canary".into(),
        };
        let out = decide(
            &Scope {
                policy: &p,
                selector: &selector,
                active: true,
                neighbours: &Neighbourhood::new(std::slice::from_ref(&p)).into(),
                revert: &BTreeSet::new(),
                hold: Some(&hold),
                now: Timestamp::from_second(1_800_000_000).unwrap(),
                via: Via::Background,
            },
            vec![settled("a"), settled("b"), settled("c")],
        );
        assert_eq!(
            kinds(&out),
            [
                ("a".into(), "held"),
                ("b".into(), "write+roll"),
                ("c".into(), "held")
            ]
        );
    }

    #[test]
    fn policies_deleted_together_do_not_keep_the_label_for_each_other() {
        let mut w: Workload = (*settled("a")).clone();
        w.spec.template.metadata.labels = [(HOOKED_LABEL.to_string(), "true".to_string())].into();
        w.spec.template.spec = serde_json::from_value(json!({"containers": [
            {"name": "c", "lifecycle": {"preStop": {"sleep": {"seconds": 1}}, "postStart": {"sleep": {"seconds": 2}}}}
        ]}))
        .unwrap();
        w.metadata.annotations = Some(
            [
                (
                    ledger_key("p"),
                    r#"{"policy":"p","owned":{"c/preStop":null}}"#.to_string(),
                ),
                (
                    ledger_key("q"),
                    r#"{"policy":"q","owned":{"c/postStart":null}}"#.to_string(),
                ),
            ]
            .into(),
        );
        w.metadata.managed_fields = Some(vec![
            serde_json::from_value(json!({
                "manager": "lifecycle-operator/p", "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:annotations": {"f:lifecycle-operator.io/p": {}}},
                    "f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {
                        ".": {}, "f:name": {}, "f:lifecycle": {"f:preStop": {".": {}, "f:sleep": {"f:seconds": {}}}}}}}}}},
            }))
            .unwrap(),
        ]);
        let release = |q_deleting: bool| {
            let p = policy("p", 100, "Enforce", true);
            let q = policy("q", 200, "Enforce", q_deleting);
            let out = decide(
                &Scope {
                    policy: &p,
                    selector: &Selector::default(),
                    active: false,
                    neighbours: &Neighbourhood::new(&[p.clone(), q]).into(),
                    revert: &BTreeSet::new(),
                    hold: None,
                    now: Timestamp::from_second(1_800_000_000).unwrap(),
                    via: Via::Background,
                },
                vec![Arc::new(w.clone())],
            );
            let Intent::Write(write) = &out[0].intent else {
                panic!("{:?}", out[0].intent)
            };
            write.release.clone().unwrap().to_string()
        };
        // q stays: the label stays for its hook.
        assert!(!release(false).contains("hooked"));
        // q goes too: p takes the label with its hook (q's release, planned
        // with the label, then fails its `test` and is planned again).
        assert!(release(true).contains("lifecycle-operator.io~1hooked"));
    }

    /// The cache shows a Deployment as another policy (`gone`, already
    /// deleted) left it, perhaps a moment before its release landed: grace
    /// 42 and its ledger. A claim made from that copy records 42 as the
    /// original, so it must only land on that very version.
    #[test]
    fn claims_recording_originals_land_only_on_the_version_they_were_read_from() {
        const GONE: &str = r#"{"policy":"gone","owned":{"terminationGracePeriodSeconds":30}}"#;
        const MINE: &str =
            r#"{"policy":"p","owned":{"c/preStop":null,"terminationGracePeriodSeconds":42}}"#;
        let workload = |ledgers: &[(&str, &str)], grace: i64| {
            let mut w: Workload = (*settled("a")).clone();
            w.metadata.resource_version = Some("7".into());
            w.spec.template.spec.termination_grace_period_seconds = Some(grace);
            w.metadata.annotations = Some(
                ledgers
                    .iter()
                    .map(|(p, l)| (ledger_key(p), l.to_string()))
                    .collect(),
            );
            if ledgers.iter().any(|(p, _)| *p == "p") {
                w.spec.template.spec.containers[0].lifecycle =
                    Some(json!({"preStop": {"sleep": {"seconds": 1}}}));
                w.metadata.managed_fields = Some(vec![
                    serde_json::from_value(json!({
                        "manager": "lifecycle-operator/p", "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:metadata": {"f:annotations": {"f:lifecycle-operator.io/p": {}}},
                            "f:spec": {"f:template": {"f:spec": {"f:terminationGracePeriodSeconds": {}, "f:containers": {"k:{\"name\":\"c\"}": {
                                ".": {}, "f:name": {}, "f:lifecycle": {"f:preStop": {".": {}, "f:sleep": {"f:seconds": {}}}}}}}}}},
                    }))
                    .unwrap(),
                ]);
            }
            Arc::new(w)
        };
        let write = |spec: Value, w: Arc<Workload>| {
            let p = policy_with("p", 100, spec, false);
            let out = run(&p, std::slice::from_ref(&p), vec![w]);
            match &out[0].intent {
                Intent::Write(write) => (write.guard.clone(), write.release.clone()),
                other => panic!("{other:?}"),
            }
        };
        let grace = json!({"terminationGracePeriodSeconds": 50});

        // A gone policy's ledger, a new claim: guarded.
        let (guard, release) = write(grace.clone(), workload(&[("gone", GONE)], 42));
        assert_eq!(guard.as_deref(), Some("7"));
        assert!(release.is_none());

        // No gone policy's ledger: at worst the copy lags this policy's own
        // write, which the claim repeats unchanged. Not guarded.
        let (guard, _) = write(grace.clone(), workload(&[], 30));
        assert_eq!(guard, None);

        // This policy's ledger stored already: re-asserting a drifted hook
        // records nothing new, whatever else is on the copy.
        let (guard, _) = write(grace.clone(), workload(&[("gone", GONE), ("p", MINE)], 50));
        assert_eq!(guard, None);

        // A new claim together with a release: the release tests the version
        // first, and the apply follows on what the release made.
        let (guard, release) = write(
            json!({"terminationGracePeriodSeconds": 50, "preStop": null, "postStart": {"sleep": {"seconds": 1}}}),
            workload(&[("gone", GONE), ("p", MINE)], 50),
        );
        assert_eq!(guard.as_deref(), Some("7"));
        let ops = release.expect("preStop is handed back");
        assert_eq!(
            ops[0],
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": "7"})
        );
    }

    #[test]
    fn dry_run_and_unmatched_workloads_write_nothing() {
        let p = policy("p", 100, "DryRun", false);
        let ds = vec![
            settled("a"),
            deploy("x", json!({"app": "other"}), json!({})),
        ];
        let out = run(&p, std::slice::from_ref(&p), ds);
        assert_eq!(kinds(&out), [("a".into(), "would-patch")]);
    }

    #[test]
    fn a_dry_run_policy_being_deleted_still_hands_its_hooks_back() {
        const MINE: &str = r#"{"policy":"p","owned":{"c/preStop":null}}"#;
        let mut w: Workload = (*settled("a")).clone();
        w.spec.template.spec.containers[0].lifecycle =
            Some(json!({"preStop": {"sleep": {"seconds": 1}}}));
        w.metadata.annotations = Some([(ledger_key("p"), MINE.to_string())].into());
        w.metadata.managed_fields = Some(vec![
            serde_json::from_value(json!({
                "manager": "lifecycle-operator/p", "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:annotations": {"f:lifecycle-operator.io/p": {}}},
                    "f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {
                        "f:lifecycle": {"f:preStop": {"f:sleep": {"f:seconds": {}}}}}}}}}},
            }))
            .unwrap(),
        ]);
        let w = Arc::new(w);
        // DryRun and selected: what it set stays, nothing is written.
        let p = policy("p", 100, "DryRun", false);
        let out = run(&p, std::slice::from_ref(&p), vec![w.clone()]);
        assert_eq!(kinds(&out), [("a".into(), "up-to-date")]);
        // DryRun and being deleted: the hook goes back.
        let gone = policy("p", 100, "DryRun", true);
        let out = decide(
            &Scope {
                policy: &gone,
                selector: &Selector::default(),
                active: false,
                neighbours: &Neighbourhood::new(std::slice::from_ref(&gone)).into(),
                revert: &BTreeSet::new(),
                hold: None,
                now: Timestamp::from_second(1_800_000_000).unwrap(),
                via: Via::Background,
            },
            vec![w],
        );
        let Intent::Write(write) = &out[0].intent else {
            panic!("{:?}", out[0].intent)
        };
        let ops = write.release.as_ref().expect("a release").to_string();
        assert!(
            ops.contains(
                r#""op":"remove","path":"/spec/template/spec/containers/0/lifecycle/preStop""#
            ),
            "{ops}"
        );
        assert!(write.apply.is_none());
    }
}
