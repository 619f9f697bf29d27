//! The ledger, pure: what one policy set on one workload, each claimed
//! slot with the value it replaced (`Ledger`, with any tug-of-war over its
//! slots: `Contest`); the annotation it is kept in and the field manager the
//! policy applies under (`ledger_key`, `field_manager`); the ledgers read
//! off a workload (`read_ledgers`); and its integrity: the annotation
//! checked against the second record, the fields the policy's
//! server-side-apply field manager owns in `managedFields`.
//!
//! The annotation can be edited or destroyed by anyone; `managedFields` are
//! kept by the API server. A slot the manager owns is a hook this policy put
//! there, whatever the annotation says; a slot the ledger lists but the
//! manager no longer owns was since set by someone else and is theirs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};
use k8s_openapi::jiff::SignedDuration;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::apply::slot::Slot;
use crate::apply::wire::escape;
use crate::apply::workload::ForeignField;
use crate::hooks::hook::HookKind;

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
    /// Containers whose `lifecycle` was `{}` (not absent) before the policy
    /// claimed a hook there: a release gives back exactly `{}`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub empty_lifecycle: BTreeSet<String>,
    /// Another field manager keeps taking this policy's slots back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contest: Option<Contest>,
    /// How the policy's hooks first came here. Left out for the background
    /// path, so ledgers written before the webhook read back byte for byte.
    #[serde(default, skip_serializing_if = "Via::is_background")]
    pub via: Via,
}

/// How a policy's hooks first came onto a workload.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Via {
    /// The policy's own server-side apply: a rollout of its own.
    #[default]
    Background,
    /// The admission webhook, in the write that created or replaced the
    /// template: its fields belong to that request's field manager until
    /// the policy's manager applies the same values (the takeover).
    Admission,
}

impl Via {
    fn is_background(&self) -> bool {
        *self == Via::Background
    }
}

/// A tug-of-war with another field manager (a GitOps tool re-applying its
/// manifest with force, say): when it took the policy's slots back, for the
/// policy's generation. Kept in the ledger, so it outlives restarts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Contest {
    pub manager: String,
    pub slots: BTreeSet<Slot>,
    pub generation: i64,
    /// The takeovers within [`CONTEST_WINDOW`], oldest first, at most [`CONTEST_LIMIT`].
    pub times: Vec<Time>,
}

/// After this many takeovers within [`CONTEST_WINDOW`] the policy stops
/// re-claiming the slots: they stay the other manager's (`Contested`).
pub const CONTEST_LIMIT: usize = 3;
pub const CONTEST_WINDOW: SignedDuration = SignedDuration::from_secs(600);

/// Prefix of the ledger annotations and of the policies' field managers.
pub const DOMAIN: &str = "lifecycle-operator.io";

/// The annotation holding a policy's ledger on a workload, by the policy's
/// owner name (`PolicyId::owner`). Annotation names are at most 63
/// characters; longer names are cut and hashed.
pub fn ledger_key(owner: &str) -> String {
    format!("{DOMAIN}/{}", bounded(owner, 63))
}

/// The field manager a policy's claims are applied under, by its owner name
/// (at most 128 characters).
pub fn field_manager(owner: &str) -> String {
    format!(
        "lifecycle-operator/{}",
        bounded(owner, 128 - "lifecycle-operator/".len())
    )
}

fn bounded(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    // FNV-1a: stable across builds and replicas, unlike std's hasher.
    let hash = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    let keep = max - 17;
    // Names are ASCII DNS subdomains; trim a trailing '.' or '-' so the result stays valid.
    let head = name[..keep].trim_end_matches(['.', '-']);
    format!("{head}-{hash:016x}")
}

/// Reads the ledgers on a workload, keyed by their policies' owner names. A ledger that
/// does not parse is ignored (and reported by the caller as foreign).
pub fn read_ledgers(annotations: Option<&BTreeMap<String, String>>) -> BTreeMap<String, Ledger> {
    let prefix = format!("{DOMAIN}/");
    annotations
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(&prefix))
        .filter_map(|(k, v)| {
            let l: Ledger = serde_json::from_str(v).ok()?;
            (ledger_key(&l.policy) == *k).then(|| (l.policy.clone(), l))
        })
        .collect()
}

/// What a field manager owns through server-side apply on one Deployment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Owned {
    pub slots: BTreeSet<Slot>,
    /// The policy's ledger annotation itself.
    pub annotation: bool,
}

/// The slots `manager` owns through `Apply` operations. Updates are left
/// out: releases are JSON patches (updates) made under another manager.
pub fn owned_by(entries: &[ManagedFieldsEntry], manager: &str, policy: &str) -> Owned {
    let annotation_key = format!("f:{}", ledger_key(policy));
    let mut out = Owned::default();
    let fields = entries
        .iter()
        .filter(|e| e.manager.as_deref() == Some(manager))
        .filter(|e| e.operation.as_deref() == Some("Apply"))
        .filter(|e| e.subresource.as_deref().unwrap_or_default().is_empty())
        .filter_map(|e| e.fields_v1.as_ref().map(|f| &f.0));
    for f in fields {
        if f.pointer(&format!(
            "/f:metadata/f:annotations/{}",
            escape(&annotation_key)
        ))
        .is_some()
        {
            out.annotation = true;
        }
        out.slots.extend(slots_in(f));
    }
    out
}

/// `k:{"name":"web"}` → `web`: how managedFields key list items.
fn container_name(key: &str) -> Option<String> {
    let v: Value = serde_json::from_str(key.strip_prefix("k:")?).ok()?;
    v.get("name")?.as_str().map(str::to_string)
}

/// How a ledger disagreed with managedFields.
#[derive(Clone, Debug, PartialEq)]
pub enum Damage {
    /// No ledger annotation, yet the policy's manager owns hooks.
    Missing,
    /// The annotation is not a ledger of this policy.
    Unparsable(String),
    /// The annotation parses but lists other slots than the manager owns.
    Inconsistent {
        /// Listed, but someone else has set the field since: left as it is.
        not_owned: BTreeSet<Slot>,
        /// Owned, but missing from the ledger: original value unknown.
        unrecorded: BTreeSet<Slot>,
    },
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list =
            |s: &BTreeSet<Slot>| s.iter().map(Slot::to_string).collect::<Vec<_>>().join(", ");
        match self {
            Damage::Missing => f.write_str("the ledger annotation is missing"),
            Damage::Unparsable(e) => write!(f, "the ledger annotation is unreadable ({e})"),
            Damage::Inconsistent {
                not_owned,
                unrecorded,
            } => {
                let mut parts = Vec::new();
                if !not_owned.is_empty() {
                    parts.push(format!(
                        "the ledger lists {} which someone else has set since (left as is)",
                        list(not_owned)
                    ));
                }
                if !unrecorded.is_empty() {
                    parts.push(format!(
                        "the ledger leaves out {} which the policy set",
                        list(unrecorded)
                    ));
                }
                f.write_str(&parts.join("; "))
            }
        }
    }
}

/// The ledger to act on, and what was wrong with the stored one.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Checked {
    /// None: the policy holds nothing on this Deployment.
    pub ledger: Option<Ledger>,
    pub damage: Option<Damage>,
    /// The ledger came by admission and the policy's manager owns nothing
    /// here yet: its next apply takes the fields over (no template change).
    pub takeover: bool,
}

/// Checks the stored annotation against what the manager owns. A damaged
/// ledger is rebuilt: slots the manager owns stay held (their recorded
/// original where the ledger still has one, else marked unknown), slots it
/// does not own are dropped.
pub fn check(policy: &str, annotation: Option<&str>, owned: &Owned) -> Checked {
    let parsed = annotation.map(|text| {
        serde_json::from_str::<Ledger>(text)
            .map_err(|e| e.to_string())
            .and_then(|l| {
                if l.policy == policy {
                    Ok(l)
                } else {
                    Err(format!("it names policy {:?}", l.policy))
                }
            })
    });
    let (recorded, damage) = match parsed {
        None if owned.slots.is_empty() => return Checked::default(),
        None => (Ledger::default(), Some(Damage::Missing)),
        Some(Err(e)) => (Ledger::default(), Some(Damage::Unparsable(e))),
        // Admitted: the request's manager holds the fields until the
        // takeover; the manager owning the annotation says it happened.
        Some(Ok(l)) if l.via == Via::Admission && !owned.annotation && owned.slots.is_empty() => {
            return Checked {
                ledger: (!l.owned.is_empty()).then_some(l),
                damage: None,
                takeover: true,
            };
        }
        Some(Ok(l)) => {
            let listed: BTreeSet<Slot> = l.owned.keys().cloned().collect();
            let not_owned: BTreeSet<Slot> = listed.difference(&owned.slots).cloned().collect();
            let unrecorded: BTreeSet<Slot> = owned.slots.difference(&listed).cloned().collect();
            if not_owned.is_empty() && unrecorded.is_empty() {
                return Checked {
                    ledger: (!l.owned.is_empty() || l.contest.is_some()).then_some(l),
                    damage: None,
                    takeover: false,
                };
            }
            (
                l,
                Some(Damage::Inconsistent {
                    not_owned,
                    unrecorded,
                }),
            )
        }
    };
    let mut ledger = Ledger {
        policy: policy.to_string(),
        owned: BTreeMap::new(),
        unknown: BTreeSet::new(),
        empty_lifecycle: recorded.empty_lifecycle.clone(),
        contest: recorded.contest.clone(),
        via: recorded.via,
    };
    for slot in &owned.slots {
        match recorded.owned.get(slot) {
            Some(original) => {
                ledger.owned.insert(slot.clone(), original.clone());
                if recorded.unknown.contains(slot) {
                    ledger.unknown.insert(slot.clone());
                }
            }
            None => {
                ledger.owned.insert(slot.clone(), None);
                ledger.unknown.insert(slot.clone());
            }
        }
    }
    Checked {
        ledger: (!ledger.owned.is_empty() || ledger.contest.is_some()).then_some(ledger),
        damage,
        takeover: false,
    }
}

/// For each slot, a field manager outside the operator that owns it (any
/// operation: an apply, `kubectl edit`, a client-side apply): who took a
/// slot back, or holds it now.
pub fn foreign_owners(fields: &[ForeignField]) -> BTreeMap<Slot, String> {
    let mut out = BTreeMap::new();
    for f in fields {
        let slot = match (&f.container, HookKind::from_field(f.field)) {
            (Some(c), Some(kind)) => Slot::hook(c, kind),
            (None, _) => Slot::GracePeriod,
            (Some(_), None) => continue,
        };
        out.entry(slot).or_insert_with(|| f.manager.to_string());
    }
    out
}

/// The slots a managedFields entry's fieldsV1 covers.
fn slots_in(fields: &Value) -> BTreeSet<Slot> {
    let mut out = BTreeSet::new();
    let Some(pod) = fields.pointer("/f:spec/f:template/f:spec") else {
        return out;
    };
    if pod.get("f:terminationGracePeriodSeconds").is_some() {
        out.insert(Slot::GracePeriod);
    }
    let containers = ["f:containers", "f:initContainers"]
        .into_iter()
        .filter_map(|f| pod.get(f).and_then(Value::as_object))
        .flatten();
    for (key, fields) in containers {
        let Some(name) = container_name(key) else {
            continue;
        };
        for kind in [HookKind::PostStart, HookKind::PreStop] {
            let field = format!("f:{}", kind.field());
            if fields
                .get("f:lifecycle")
                .is_some_and(|l| l.get(&field).is_some())
            {
                out.insert(Slot::hook(&name, kind));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MANAGER: &str = "lifecycle-operator/p";

    fn entry(manager: &str, operation: &str, fields: Value) -> ManagedFieldsEntry {
        serde_json::from_value(json!({
            "manager": manager, "operation": operation, "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1", "fieldsV1": fields,
        }))
        .unwrap()
    }

    /// managedFields as the API server writes them for an apply of hooks on
    /// `containers` (preStop, and postStart on the first), grace period and ledger.
    fn applied(containers: &[&str], grace: bool, annotation: bool) -> Value {
        let mut cs = serde_json::Map::new();
        for (i, c) in containers.iter().enumerate() {
            let mut lifecycle =
                json!({"f:preStop": {".": {}, "f:exec": {".": {}, "f:command": {}}}});
            if i == 0 {
                lifecycle["f:postStart"] = json!({".": {}, "f:sleep": {".": {}, "f:seconds": {}}});
            }
            cs.insert(
                format!("k:{{\"name\":\"{c}\"}}"),
                json!({".": {}, "f:name": {}, "f:lifecycle": lifecycle}),
            );
        }
        let mut pod = json!({"f:containers": cs});
        if grace {
            pod["f:terminationGracePeriodSeconds"] = json!({});
        }
        let mut v = json!({"f:spec": {"f:template": {"f:spec": pod}}});
        if annotation {
            v["f:metadata"] = json!({"f:annotations": {"f:lifecycle-operator.io/p": {}}});
        }
        v
    }

    fn slots(list: &[(&str, HookKind)]) -> BTreeSet<Slot> {
        list.iter().map(|(c, k)| Slot::hook(c, *k)).collect()
    }

    fn ledger(owned: &[(Slot, Option<Value>)]) -> Ledger {
        Ledger {
            policy: "p".into(),
            owned: owned.iter().cloned().collect(),
            ..Default::default()
        }
    }

    fn owned(slots: BTreeSet<Slot>) -> Owned {
        Owned {
            slots,
            annotation: true,
        }
    }

    #[test]
    fn names_stay_within_kubernetes_limits() {
        let long = "a".repeat(253);
        for name in [
            "p",
            "web.frontend-1",
            long.as_str(),
            &format!("{}.-x", "b".repeat(60)),
        ] {
            let key = ledger_key(name);
            let (_, n) = key.split_once('/').unwrap();
            assert!(n.len() <= 63, "{key}");
            assert!(n.chars().last().unwrap().is_ascii_alphanumeric(), "{key}");
            assert!(field_manager(name).len() <= 128);
        }
        assert_eq!(ledger_key("web"), "lifecycle-operator.io/web");
        assert_ne!(
            ledger_key(&"x".repeat(100)),
            ledger_key(&format!("{}y", "x".repeat(99)))
        );
    }

    #[test]
    fn ledgers_are_read_only_under_their_own_key() {
        let good = Ledger {
            policy: "p".into(),
            owned: BTreeMap::from([(Slot::GracePeriod, None)]),
            ..Default::default()
        };
        let text = serde_json::to_string(&good).unwrap();
        let ann = BTreeMap::from([
            (ledger_key("p"), text.clone()),
            // A ledger claiming another policy's name under the wrong key is ignored.
            (ledger_key("q"), text.clone()),
            (
                "lifecycle-operator.io/r".to_string(),
                "not json".to_string(),
            ),
            ("other.io/p".to_string(), text),
        ]);
        let got = read_ledgers(Some(&ann));
        assert_eq!(got.len(), 1);
        assert_eq!(got["p"], good);
        assert!(read_ledgers(None).is_empty());
    }

    #[test]
    fn slots_round_trip_through_the_ledger() {
        let l = Ledger {
            policy: "p".into(),
            owned: BTreeMap::from([
                (Slot::hook("web", HookKind::PostStart), None),
                (
                    Slot::hook("web", HookKind::PreStop),
                    Some(json!({"exec": {"command": ["/bin/sh", "-c", "orig"]}})),
                ),
                (Slot::GracePeriod, Some(json!(30))),
            ]),
            ..Default::default()
        };
        let text = serde_json::to_string(&l).unwrap();
        assert!(
            text.contains("\"web/postStart\"")
                && text.contains("\"terminationGracePeriodSeconds\"")
        );
        assert_eq!(serde_json::from_str::<Ledger>(&text).unwrap(), l);
        assert!(
            serde_json::from_str::<Ledger>(r#"{"policy":"p","owned":{"web/bogus":null}}"#).is_err()
        );
    }

    #[test]
    fn sidecar_hooks_are_read_from_init_containers() {
        let fields = json!({"f:spec": {"f:template": {"f:spec": {"f:initContainers": {
            "k:{\"name\":\"proxy\"}": {".": {}, "f:name": {}, "f:lifecycle": {"f:preStop": {".": {}, "f:exec": {}}}}
        }}}}});
        let got = owned_by(&[entry(MANAGER, "Apply", fields)], MANAGER, "p");
        assert_eq!(got.slots, slots(&[("proxy", HookKind::PreStop)]));
    }

    #[test]
    fn reads_what_the_manager_applied_and_nothing_else() {
        let entries = [
            entry(MANAGER, "Apply", applied(&["web", "side"], true, true)),
            // The same manager's updates, other managers and other policies don't count.
            entry(MANAGER, "Update", applied(&["other"], false, false)),
            entry("kubectl-edit", "Apply", applied(&["x"], false, false)),
            entry(
                "lifecycle-operator/q",
                "Apply",
                applied(&["y"], false, false),
            ),
        ];
        let got = owned_by(&entries, MANAGER, "p");
        let mut want = slots(&[
            ("web", HookKind::PostStart),
            ("web", HookKind::PreStop),
            ("side", HookKind::PreStop),
        ]);
        want.insert(Slot::GracePeriod);
        assert_eq!(got.slots, want);
        assert!(got.annotation);
        // A status-subresource entry and garbage keys are ignored.
        let mut status = entry(MANAGER, "Apply", applied(&["z"], false, false));
        status.subresource = Some("status".into());
        let garbage = entry(
            MANAGER,
            "Apply",
            json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:not json": {"f:lifecycle": {"f:preStop": {}}}, "v:1": {}}}}}}),
        );
        assert_eq!(owned_by(&[status, garbage], MANAGER, "p"), Owned::default());
        assert_eq!(owned_by(&[], MANAGER, "p"), Owned::default());
    }

    #[test]
    fn a_consistent_ledger_is_used_as_it_is() {
        let s = Slot::hook("web", HookKind::PreStop);
        let l = ledger(&[(s.clone(), Some(json!({"sleep": {"seconds": 1}})))]);
        let text = serde_json::to_string(&l).unwrap();
        let got = check("p", Some(&text), &owned(BTreeSet::from([s])));
        assert_eq!(
            got,
            Checked {
                ledger: Some(l),
                damage: None,
                takeover: false,
            }
        );
        // Nothing stored, nothing owned: nothing held.
        assert_eq!(check("p", None, &Owned::default()), Checked::default());
    }

    /// An admitted ledger stands while the request's manager holds its
    /// fields; once the policy's manager owns the annotation (the takeover
    /// happened), it is checked like any other.
    #[test]
    fn an_admitted_ledger_awaits_its_takeover_and_is_checked_after() {
        let s = Slot::hook("web", HookKind::PreStop);
        let mut l = ledger(&[(s.clone(), None)]);
        l.via = Via::Admission;
        let text = serde_json::to_string(&l).unwrap();
        assert!(text.contains(r#""via":"Admission""#), "{text}");
        let got = check("p", Some(&text), &Owned::default());
        assert_eq!(
            got,
            Checked {
                ledger: Some(l.clone()),
                damage: None,
                takeover: true,
            }
        );
        // Taken over: consistent.
        let all = Owned {
            slots: BTreeSet::from([s.clone()]),
            annotation: true,
        };
        assert!(!check("p", Some(&text), &all).takeover);
        assert_eq!(check("p", Some(&text), &all).damage, None);
        // Taken over, then someone else took the slot: damage as before.
        let annotation_only = Owned {
            slots: BTreeSet::new(),
            annotation: true,
        };
        assert!(matches!(
            check("p", Some(&text), &annotation_only).damage,
            Some(Damage::Inconsistent { .. })
        ));
        // A background ledger says nothing about how it came.
        let plain = serde_json::to_string(&ledger(&[(s, None)])).unwrap();
        assert!(!plain.contains("via"), "{plain}");
    }

    #[test]
    fn garbage_json_is_rebuilt_from_managed_fields() {
        let s = slots(&[("web", HookKind::PreStop), ("web", HookKind::PostStart)]);
        for garbage in [
            "",
            "garbage",
            "{",
            "[]",
            "null",
            r#"{"policy":"p","owned":{"web/bogus":null}}"#,
        ] {
            let got = check("p", Some(garbage), &owned(s.clone()));
            assert!(
                matches!(got.damage, Some(Damage::Unparsable(_))),
                "{garbage:?}"
            );
            let l = got.ledger.unwrap();
            assert_eq!(l.owned.keys().cloned().collect::<BTreeSet<_>>(), s);
            assert!(l.owned.values().all(Option::is_none));
            assert_eq!(l.unknown, s, "originals unknown: {garbage:?}");
        }
        // Garbage while the manager owns nothing: the annotation goes, nothing is held.
        let got = check("p", Some("garbage"), &Owned::default());
        assert!(got.ledger.is_none() && matches!(got.damage, Some(Damage::Unparsable(_))));
    }

    #[test]
    fn a_ledger_of_another_policy_is_damage() {
        let other = Ledger {
            policy: "q".into(),
            ..ledger(&[(Slot::GracePeriod, None)])
        };
        let text = serde_json::to_string(&other).unwrap();
        let got = check(
            "p",
            Some(&text),
            &owned(BTreeSet::from([Slot::GracePeriod])),
        );
        assert_eq!(
            got.damage,
            Some(Damage::Unparsable("it names policy \"q\"".into()))
        );
        assert_eq!(
            got.ledger.unwrap().unknown,
            BTreeSet::from([Slot::GracePeriod])
        );
    }

    #[test]
    fn a_missing_annotation_with_owned_hooks_is_damage() {
        let s = slots(&[("web", HookKind::PreStop)]);
        let got = check("p", None, &owned(s.clone()));
        assert_eq!(got.damage, Some(Damage::Missing));
        let l = got.ledger.unwrap();
        assert_eq!(l.unknown, s);
        assert_eq!(
            l.owned,
            BTreeMap::from([(Slot::hook("web", HookKind::PreStop), None)])
        );
    }

    #[test]
    fn slots_the_manager_does_not_own_are_dropped() {
        let mine = Slot::hook("web", HookKind::PreStop);
        let taken = Slot::hook("web", HookKind::PostStart);
        let l = ledger(&[
            (mine.clone(), Some(json!({"sleep": {"seconds": 2}}))),
            (taken.clone(), None),
        ]);
        let text = serde_json::to_string(&l).unwrap();
        let got = check("p", Some(&text), &owned(BTreeSet::from([mine.clone()])));
        assert_eq!(
            got.damage,
            Some(Damage::Inconsistent {
                not_owned: BTreeSet::from([taken.clone()]),
                unrecorded: BTreeSet::new()
            })
        );
        // The recorded original of the slot still owned survives.
        assert_eq!(
            got.ledger,
            Some(ledger(&[(mine, Some(json!({"sleep": {"seconds": 2}})))]))
        );
        // Owning none of them: nothing is held any more.
        let got = check("p", Some(&text), &Owned::default());
        assert!(got.ledger.is_none());
        assert!(
            got.damage
                .unwrap()
                .to_string()
                .contains("someone else has set since")
        );
    }

    #[test]
    fn owned_slots_the_ledger_leaves_out_are_unknown() {
        let listed = Slot::hook("web", HookKind::PreStop);
        let extra = Slot::GracePeriod;
        let l = ledger(&[(listed.clone(), Some(json!({"sleep": {"seconds": 3}})))]);
        let text = serde_json::to_string(&l).unwrap();
        let got = check(
            "p",
            Some(&text),
            &owned(BTreeSet::from([listed.clone(), extra.clone()])),
        );
        assert_eq!(
            got.damage,
            Some(Damage::Inconsistent {
                not_owned: BTreeSet::new(),
                unrecorded: BTreeSet::from([extra.clone()])
            })
        );
        let rebuilt = got.ledger.unwrap();
        assert_eq!(
            rebuilt.owned[&listed],
            Some(json!({"sleep": {"seconds": 3}}))
        );
        assert_eq!(rebuilt.owned[&extra], None);
        assert_eq!(rebuilt.unknown, BTreeSet::from([extra]));
    }

    #[test]
    fn both_ways_at_once_and_unknowns_carry_over() {
        let a = Slot::hook("a", HookKind::PreStop);
        let b = Slot::hook("b", HookKind::PreStop);
        let c = Slot::hook("c", HookKind::PreStop);
        let mut l = ledger(&[(a.clone(), None), (b.clone(), None)]);
        l.unknown.insert(b.clone());
        let text = serde_json::to_string(&l).unwrap();
        let got = check(
            "p",
            Some(&text),
            &owned(BTreeSet::from([b.clone(), c.clone()])),
        );
        let Some(Damage::Inconsistent {
            not_owned,
            unrecorded,
        }) = got.damage
        else {
            panic!("{:?}", got.damage)
        };
        assert_eq!(
            (not_owned, unrecorded),
            (BTreeSet::from([a]), BTreeSet::from([c.clone()]))
        );
        assert_eq!(got.ledger.unwrap().unknown, BTreeSet::from([b, c]));
    }

    #[test]
    fn damage_reads_like_a_sentence() {
        assert_eq!(
            Damage::Missing.to_string(),
            "the ledger annotation is missing"
        );
        let d = Damage::Inconsistent {
            not_owned: BTreeSet::new(),
            unrecorded: BTreeSet::from([Slot::GracePeriod]),
        };
        assert_eq!(
            d.to_string(),
            "the ledger leaves out terminationGracePeriodSeconds which the policy set"
        );
    }
}
