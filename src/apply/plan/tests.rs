//! Table tests for the core decision, including full claim → release round
//! trips that must give back the original template byte for byte.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use super::missing_containers;
use super::*;
use crate::api::types::WorkloadKind;
use crate::apply::ledger::{ledger_key, read_ledgers};
use crate::apply::patch::{Target, apply_body, release_patch};
use crate::apply::workload::{HOOKED_LABEL, PodShape};

fn spec(v: Value) -> LifecyclePolicySpec {
    let mut base = json!({"selector": {"matchLabels": {"app": "web"}}});
    base.as_object_mut()
        .unwrap()
        .extend(v.as_object().unwrap().clone());
    serde_json::from_value(base).unwrap()
}

fn pod(v: Value) -> PodShape {
    serde_json::from_value(v).unwrap()
}

fn sh(script: &str) -> Value {
    json!({"exec": {"command": ["/bin/sh", "-c", script]}})
}

fn nginx_json() -> Value {
    json!({"containers": [{"name": "nginx", "image": "nginx"}, {"name": "sidecar", "image": "busybox"}]})
}

fn nginx() -> PodShape {
    pod(nginx_json())
}

fn run(
    policy: &str,
    spec: &LifecyclePolicySpec,
    pod: &PodShape,
    ledgers: &BTreeMap<String, Ledger>,
    active: bool,
) -> Plan {
    run_labelled(policy, spec, pod, ledgers, active, false)
}

fn run_labelled(
    policy: &str,
    spec: &LifecyclePolicySpec,
    pod: &PodShape,
    ledgers: &BTreeMap<String, Ledger>,
    active: bool,
    labelled: bool,
) -> Plan {
    let winners = BTreeMap::new();
    plan(&Input {
        policy,
        spec,
        active,
        pod,
        labelled,
        others_hold_hooks: ledgers.iter().any(|(name, l)| {
            name != policy && l.owned.keys().any(|s| matches!(s, Slot::Hook { .. }))
        }),
        ledgers,
        winners: &winners,
        dry_run: false,
        fights: &Fights::default(),
    })
}

fn ledger_of(p: &Plan) -> BTreeMap<String, Ledger> {
    p.ledger
        .iter()
        .map(|l| (l.policy.clone(), l.clone()))
        .collect()
}

#[test]
fn adds_hooks_to_every_container_by_default() {
    let s = spec(json!({"preStop": sh("sleep 5"), "postStart": sh("touch /ready")}));
    let p = run("p", &s, &nginx(), &BTreeMap::new(), true);
    assert_eq!(p.claims.len(), 4);
    assert!(p.outcomes.values().all(|o| *o == SlotOutcome::Claimed));
    let l = p.ledger.unwrap();
    assert_eq!(l.owned.len(), 4);
    assert!(
        l.owned.values().all(Option::is_none),
        "nothing was replaced"
    );
    assert!(p.releases.is_empty());
}

#[test]
fn container_filter_limits_slots() {
    let cases: Vec<(Option<Vec<&str>>, Vec<&str>)> = vec![
        (None, vec!["nginx", "sidecar"]),
        (Some(vec!["nginx"]), vec!["nginx"]),
        (Some(vec!["sidecar", "nginx"]), vec!["nginx", "sidecar"]),
        (Some(vec!["missing"]), vec![]),
    ];
    for (filter, expect) in cases {
        let s = spec(json!({"preStop": sh("x"), "containers": filter}));
        let p = run("p", &s, &nginx(), &BTreeMap::new(), true);
        let got: Vec<String> = p
            .claims
            .keys()
            .map(|s| match s {
                Slot::Hook { container, .. } => container.clone(),
                Slot::GracePeriod => "grace".into(),
            })
            .collect();
        assert_eq!(got, expect, "filter {filter:?}");
    }
}

#[test]
fn init_containers_are_never_touched() {
    let pd = pod(
        json!({"initContainers": [{"name": "init", "image": "busybox"}], "containers": [{"name": "app", "image": "x"}]}),
    );
    let s = spec(json!({"preStop": sh("x"), "containers": ["init", "app"]}));
    let p = run("p", &s, &pd, &BTreeMap::new(), true);
    assert_eq!(
        p.claims.keys().cloned().collect::<Vec<_>>(),
        vec![Slot::hook("app", HookKind::PreStop)]
    );
}

#[test]
fn sidecars_get_hooks_only_when_named() {
    let pd = pod(json!({
        "initContainers": [
            {"name": "init", "image": "busybox"},
            {"name": "proxy", "image": "envoy", "restartPolicy": "Always"},
        ],
        "containers": [{"name": "app", "image": "x"}],
    }));
    let slots = |s: &LifecyclePolicySpec| {
        run("p", s, &pd, &BTreeMap::new(), true)
            .claims
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    // By default: regular containers only.
    assert_eq!(
        slots(&spec(json!({"preStop": sh("x")}))),
        [Slot::hook("app", HookKind::PreStop)]
    );
    // Named: the sidecar too; a plain init container never.
    let named = spec(json!({"preStop": sh("x"), "containers": ["init", "proxy", "app", "typo"]}));
    assert_eq!(
        slots(&named),
        [
            Slot::hook("app", HookKind::PreStop),
            Slot::hook("proxy", HookKind::PreStop)
        ]
    );
    // Names the template lacks are reported ("init" is there, but cannot carry hooks).
    assert_eq!(missing_containers(&named, &pd), ["init", "typo"]);
    assert!(missing_containers(&spec(json!({"preStop": sh("x")})), &pd).is_empty());
}

#[test]
fn existing_hook_skip_versus_override() {
    let own = sh("echo mine");
    let pd = pod(
        json!({"containers": [{"name": "nginx", "image": "nginx", "lifecycle": {"preStop": own}}]}),
    );
    let slot = Slot::hook("nginx", HookKind::PreStop);

    let skip = run(
        "p",
        &spec(json!({"preStop": sh("policy")})),
        &pd,
        &BTreeMap::new(),
        true,
    );
    assert_eq!(skip.outcomes[&slot], SlotOutcome::SkippedExisting);
    assert!(skip.claims.is_empty() && skip.ledger.is_none());
    assert!(!skip.needs_write(&pd, None), "Skip writes nothing");
    assert_eq!(skip.conflicts().count(), 1);

    let over = run(
        "p",
        &spec(json!({"preStop": sh("policy"), "onConflict": "Override"})),
        &pd,
        &BTreeMap::new(),
        true,
    );
    assert_eq!(over.outcomes[&slot], SlotOutcome::Claimed);
    assert_eq!(over.claims[&slot], sh("policy"));
    assert_eq!(
        over.ledger.unwrap().owned[&slot],
        Some(own),
        "the original is recorded"
    );
}

#[test]
fn a_hook_already_in_place_is_not_claimed() {
    let wanted = json!({"httpGet": {"path": "/quit", "port": 8080}});
    // The API server defaults scheme; the hook is still the one wanted.
    let defaulted = json!({"httpGet": {"path": "/quit", "port": 8080, "scheme": "HTTP"}});
    let pd = pod(
        json!({"containers": [{"name": "c", "image": "x", "lifecycle": {"preStop": defaulted}}]}),
    );
    for mode in ["Skip", "Override"] {
        let p = run(
            "p",
            &spec(json!({"preStop": wanted, "onConflict": mode})),
            &pd,
            &BTreeMap::new(),
            true,
        );
        assert_eq!(
            p.outcomes[&Slot::hook("c", HookKind::PreStop)],
            SlotOutcome::AlreadySet,
            "{mode}"
        );
        assert!(p.claims.is_empty(), "{mode}");
    }
}

#[test]
fn unchanged_world_needs_no_write() {
    let s = spec(json!({"preStop": sh("sleep 1"), "terminationGracePeriodSeconds": 45}));
    let first = run("p", &s, &nginx(), &BTreeMap::new(), true);
    let after = simulate_apply(&deployment(&nginx_json()), "p", &first);
    let (pd, labelled, ledgers) = read(&after);
    let second = run_labelled("p", &s, &pd, &ledgers, true, labelled);
    assert!(
        !second.needs_write(&pd, ledgers.get("p")),
        "second plan: {second:?}"
    );
    assert_eq!(
        second.ledger, first.ledger,
        "originals are kept from the first claim"
    );
}

#[test]
fn a_user_edit_of_a_claimed_hook_is_put_back() {
    let s = spec(json!({"preStop": sh("policy")}));
    let first = run("p", &s, &nginx(), &BTreeMap::new(), true);
    let after = simulate_apply(&deployment(&nginx_json()), "p", &first);
    let (mut pd, labelled, ledgers) = read(&after);
    pd.containers[0].lifecycle.as_mut().unwrap()["preStop"] = sh("edited");
    let p = run_labelled("p", &s, &pd, &ledgers, true, labelled);
    assert!(p.changes_template(&pd));
    assert_eq!(
        p.claims[&Slot::hook("nginx", HookKind::PreStop)],
        sh("policy")
    );
    assert_eq!(
        p.ledger, first.ledger,
        "the original is still 'none', not the edit"
    );
}

#[test]
fn grace_period_is_claimed_with_its_original() {
    let pd = pod(
        json!({"containers": [{"name": "c", "image": "x"}], "terminationGracePeriodSeconds": 30}),
    );
    let p = run(
        "p",
        &spec(json!({"preStop": sh("x"), "terminationGracePeriodSeconds": 90})),
        &pd,
        &BTreeMap::new(),
        true,
    );
    assert_eq!(p.claims[&Slot::GracePeriod], json!(90));
    assert_eq!(p.ledger.unwrap().owned[&Slot::GracePeriod], Some(json!(30)));
    // Same value already there: nothing to claim, even under Skip.
    let same = run(
        "p",
        &spec(json!({"preStop": sh("x"), "terminationGracePeriodSeconds": 30})),
        &pd,
        &BTreeMap::new(),
        true,
    );
    assert_eq!(same.outcomes[&Slot::GracePeriod], SlotOutcome::AlreadySet);
}

#[test]
fn inactive_policy_releases_everything_it_holds() {
    let own = sh("mine");
    let pd = pod(
        json!({"containers": [{"name": "a", "image": "x", "lifecycle": {"preStop": own}}, {"name": "b", "image": "x"}]}),
    );
    let s = spec(json!({"preStop": sh("policy"), "onConflict": "Override"}));
    let claimed = run("p", &s, &pd, &BTreeMap::new(), true);
    let released = run("p", &s, &pd, &ledger_of(&claimed), false);
    assert!(
        released.claims.is_empty() && released.ledger.is_none() && released.outcomes.is_empty()
    );
    assert_eq!(
        released.releases[&Slot::hook("a", HookKind::PreStop)],
        Some(own)
    );
    assert_eq!(released.releases[&Slot::hook("b", HookKind::PreStop)], None);
}

#[test]
fn policy_changed_back_to_the_original_hands_the_slot_back() {
    let own = sh("mine");
    let pd =
        pod(json!({"containers": [{"name": "a", "image": "x", "lifecycle": {"preStop": own}}]}));
    let claimed = run(
        "p",
        &spec(json!({"preStop": sh("policy"), "onConflict": "Override"})),
        &pd,
        &BTreeMap::new(),
        true,
    );
    let back = run(
        "p",
        &spec(json!({"preStop": own, "onConflict": "Override"})),
        &pd,
        &ledger_of(&claimed),
        true,
    );
    assert_eq!(
        back.releases[&Slot::hook("a", HookKind::PreStop)],
        Some(own)
    );
    assert!(back.claims.is_empty() && back.ledger.is_none());
}

#[test]
fn contested_slots_go_to_the_lowest_rank_whatever_the_order() {
    let a = BTreeMap::from([
        (Slot::hook("c", HookKind::PreStop), json!(1)),
        (Slot::GracePeriod, json!(5)),
    ]);
    let b = BTreeMap::from([(Slot::hook("c", HookKind::PreStop), json!(2))]);
    let one = [
        Contender {
            name: "old",
            rank: 0,
            wants: a.clone(),
        },
        Contender {
            name: "new",
            rank: 1,
            wants: b.clone(),
        },
    ];
    let two = [
        Contender {
            name: "new",
            rank: 1,
            wants: b,
        },
        Contender {
            name: "old",
            rank: 0,
            wants: a,
        },
    ];
    for set in [&one[..], &two[..]] {
        let w = winners(set);
        assert_eq!(w[&Slot::hook("c", HookKind::PreStop)], "old");
        assert_eq!(w[&Slot::GracePeriod], "old");
    }
}

#[test]
fn loser_reports_and_winner_waits_for_the_holder() {
    let slot = Slot::hook("nginx", HookKind::PreStop);
    let s = spec(json!({"preStop": sh("x"), "containers": ["nginx"]}));
    let winners = BTreeMap::from([(slot.clone(), "old")]);
    let none = BTreeMap::new();
    let lost = plan(&Input {
        policy: "new",
        spec: &s,
        active: true,
        pod: &nginx(),
        labelled: false,
        others_hold_hooks: false,
        ledgers: &none,
        winners: &winners,
        dry_run: false,
        fights: &Fights::default(),
    });
    assert_eq!(lost.outcomes[&slot], SlotOutcome::LostTo("old".into()));
    assert!(lost.claims.is_empty());

    // "new" held the slot before "old" started wanting it: "new" releases it...
    let held = BTreeMap::from([(
        "new".to_string(),
        Ledger {
            policy: "new".into(),
            owned: BTreeMap::from([(slot.clone(), None)]),
            ..Default::default()
        },
    )]);
    let new = plan(&Input {
        policy: "new",
        spec: &s,
        active: true,
        pod: &nginx(),
        labelled: false,
        others_hold_hooks: false,
        ledgers: &held,
        winners: &winners,
        dry_run: false,
        fights: &Fights::default(),
    });
    assert_eq!(new.releases[&slot], None);
    // ...and "old" waits for that instead of fighting over the field.
    let old = plan(&Input {
        policy: "old",
        spec: &s,
        active: true,
        pod: &nginx(),
        labelled: false,
        others_hold_hooks: false,
        ledgers: &held,
        winners: &winners,
        dry_run: false,
        fights: &Fights::default(),
    });
    assert_eq!(old.outcomes[&slot], SlotOutcome::HeldBy("new".into()));
    assert!(old.claims.is_empty());
}

#[test]
fn grace_warning() {
    let pd = pod(json!({"containers": [{"name": "c", "image": "x"}]}));
    let cases = [
        (json!({"preStop": {"sleep": {"seconds": 90}}}), true),
        (json!({"preStop": {"sleep": {"seconds": 29}}}), false),
        (
            json!({"preStop": {"sleep": {"seconds": 90}}, "terminationGracePeriodSeconds": 120}),
            false,
        ),
        (
            json!({"preStop": {"sleep": {"seconds": 60}}, "terminationGracePeriodSeconds": 60}),
            true,
        ),
        (json!({"preStop": sh("sleep 999")}), false),
    ];
    for (s, warn) in cases {
        assert_eq!(
            grace_too_short(&spec(s.clone()), &pd).is_some(),
            warn,
            "{s}"
        );
    }
}

#[test]
fn contains_is_a_structural_subset() {
    assert!(contains(&json!({"a": 1, "b": 2}), &json!({"a": 1})));
    assert!(!contains(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
    assert!(
        !contains(&json!(["a", "b"]), &json!(["a"])),
        "lists must match in length"
    );
    assert!(contains(&json!([{"x": 1, "d": 0}]), &json!([{"x": 1}])));
    assert!(!contains(&json!("1"), &json!(1)));
}

// --- Round trips through the request bodies -------------------------------

fn deployment(pod: &Value) -> Value {
    json!({
        "metadata": {"name": "web", "namespace": "ns", "annotations": {"team": "a"}},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod}},
    })
}

/// The plan's inputs as the reconciler reads them from a Deployment.
fn read(d: &Value) -> (PodShape, bool, BTreeMap<String, Ledger>) {
    let template = &d["spec"]["template"];
    let ann: BTreeMap<String, String> =
        serde_json::from_value(d["metadata"]["annotations"].clone()).unwrap_or_default();
    (
        pod(template["spec"].clone()),
        template["metadata"]["labels"][HOOKED_LABEL] == "true",
        read_ledgers(Some(&ann)),
    )
}

/// The release JSON patch, then what server-side apply of `apply_body` does
/// to the fields it names (sets them).
fn simulate_apply(d: &Value, policy: &str, p: &Plan) -> Value {
    let mut v = d.clone();
    let ann: BTreeMap<String, String> =
        serde_json::from_value(d["metadata"]["annotations"].clone()).unwrap_or_default();
    if let Some(ops) = release_patch(policy, &read(d).0, Some(&ann), p) {
        let ops: json_patch::Patch = serde_json::from_value(ops).unwrap();
        json_patch::patch(&mut v, &ops).unwrap();
    }
    if p.ledger.is_some() {
        let target = Target {
            kind: WorkloadKind::Deployment,
            name: "web",
            namespace: "ns",
        };
        let body = apply_body(&target, &read(d).0, p);
        merge_apply(&mut v, &body);
    }
    v
}

fn merge_apply(target: &mut Value, body: &Value) {
    let ann = body["metadata"]["annotations"].as_object().unwrap();
    let t_ann = target["metadata"]
        .as_object_mut()
        .unwrap()
        .entry("annotations")
        .or_insert(json!({}));
    t_ann.as_object_mut().unwrap().extend(ann.clone());
    if let Some(labels) = body["spec"]["template"]["metadata"]["labels"].as_object() {
        target["spec"]["template"]["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .extend(labels.clone());
    }
    let pod_body = &body["spec"]["template"]["spec"];
    let pod = &mut target["spec"]["template"]["spec"];
    if let Some(g) = pod_body.get("terminationGracePeriodSeconds") {
        pod["terminationGracePeriodSeconds"] = g.clone();
    }
    let lists = ["containers", "initContainers"];
    for (list, c) in lists.iter().flat_map(|l| {
        pod_body[*l]
            .as_array()
            .into_iter()
            .flatten()
            .map(move |c| (*l, c))
    }) {
        let tc = pod[list]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|t| t["name"] == c["name"])
            .unwrap();
        let lc = tc
            .as_object_mut()
            .unwrap()
            .entry("lifecycle")
            .or_insert(json!({}));
        lc.as_object_mut()
            .unwrap()
            .extend(c["lifecycle"].as_object().unwrap().clone());
    }
}

#[test]
fn claim_then_release_restores_the_template_byte_for_byte() {
    let tricky = "echo \"it's\" $HOME `id` ; exit 0\n\tdone && rm -rf / || true # \\ ' \" $(x)";
    let originals = [
        json!({"containers": [{"name": "nginx", "image": "nginx"}]}),
        json!({"containers": [{"name": "nginx", "image": "nginx", "lifecycle": {"preStop": sh("own")}}], "terminationGracePeriodSeconds": 30}),
        json!({"containers": [{"name": "a", "image": "x", "lifecycle": {"postStart": sh("own")}}, {"name": "b", "image": "x"}]}),
        json!({"containers": [{"name": "a", "image": "x", "lifecycle": {"postStart": sh("own"), "preStop": {"sleep": {"seconds": 3}}}}]}),
        json!({"initContainers": [{"name": "init", "image": "x"}, {"name": "proxy", "image": "x", "restartPolicy": "Always"}],
               "containers": [{"name": "a", "image": "x"}]}),
        json!({"initContainers": [{"name": "proxy", "image": "x", "restartPolicy": "Always", "lifecycle": {"preStop": sh("own")}}],
               "containers": [{"name": "a", "image": "x"}]}),
    ];
    let specs = [
        json!({"preStop": sh(tricky)}),
        json!({"preStop": sh(tricky), "postStart": {"httpGet": {"port": "http", "path": "/x"}}, "onConflict": "Override"}),
        json!({"postStart": {"sleep": {"seconds": 2}}, "terminationGracePeriodSeconds": 99, "onConflict": "Override"}),
        json!({"preStop": sh("p"), "onConflict": "Skip"}),
        json!({"terminationGracePeriodSeconds": 99}),
        json!({"preStop": sh(tricky), "postStart": sh("p"), "containers": ["a", "proxy", "nginx"], "onConflict": "Override"}),
    ];
    for original in &originals {
        for s in &specs {
            let s = spec(s.clone());
            let v0 = deployment(original);
            let (pod0, labelled0, _) = read(&v0);
            let claim = run_labelled("p", &s, &pod0, &BTreeMap::new(), true, labelled0);
            let v1 = simulate_apply(&v0, "p", &claim);
            if claim.ledger.is_some() {
                assert_ne!(v1, v0, "claim changed something for {s:?} on {original}");
            }
            let (pod1, labelled1, ledgers) = read(&v1);
            // Pods of a template carrying any of the policy's hooks are labelled.
            assert_eq!(labelled1, claim.labels_pods(), "{s:?} on {original}");
            let again = run_labelled("p", &s, &pod1, &ledgers, true, labelled1);
            assert!(
                !again.needs_write(&pod1, ledgers.get("p")),
                "settled after one write: {s:?} on {original}"
            );
            let release = run_labelled("p", &s, &pod1, &ledgers, false, labelled1);
            let v2 = simulate_apply(&v1, "p", &release);
            assert_eq!(
                v2, v0,
                "release restores the original for {s:?} on {original}"
            );
        }
    }
}

#[test]
fn the_hooked_pods_label_stays_while_any_policy_holds_a_hook() {
    let s = spec(json!({"preStop": sh("p")}));
    let q = spec(json!({"postStart": sh("q")}));
    let v0 = deployment(&json!({"containers": [{"name": "nginx", "image": "nginx"}]}));
    let (pod0, _, _) = read(&v0);
    let v1 = simulate_apply(&v0, "p", &run("p", &s, &pod0, &BTreeMap::new(), true));
    let (pod1, labelled1, ledgers1) = read(&v1);
    assert!(labelled1);
    let v2 = simulate_apply(
        &v1,
        "q",
        &run_labelled("q", &q, &pod1, &ledgers1, true, true),
    );
    let (pod2, labelled2, ledgers2) = read(&v2);
    // p lets go first: q still holds its postStart, so the label stays.
    let p_release = run_labelled("p", &s, &pod2, &ledgers2, false, labelled2);
    assert!(!p_release.label_removed);
    let v3 = simulate_apply(&v2, "p", &p_release);
    let (pod3, labelled3, ledgers3) = read(&v3);
    assert!(labelled3);
    // q lets go last and takes the label with it.
    let q_release = run_labelled("q", &q, &pod3, &ledgers3, false, labelled3);
    assert!(q_release.label_removed && q_release.changes_template(&pod3));
    assert_eq!(simulate_apply(&v3, "q", &q_release), v0);
}

#[test]
fn a_hooked_template_without_the_label_gets_it_and_rolls() {
    let s = spec(json!({"preStop": sh("p")}));
    let v0 = deployment(&json!({"containers": [{"name": "nginx", "image": "nginx"}]}));
    let v1 = simulate_apply(
        &v0,
        "p",
        &run("p", &s, &read(&v0).0, &BTreeMap::new(), true),
    );
    // As an operator before the label left it: the hook, the ledger, no label.
    let (pod1, _, ledgers) = read(&v1);
    let p = run_labelled("p", &s, &pod1, &ledgers, true, false);
    assert!(p.label_missing && p.changes_template(&pod1));
}

#[test]
fn hook_strings_are_carried_verbatim() {
    let tricky = "a'b\"c\n$(rm -rf /)`x`;|&<>\\";
    let s = spec(json!({"preStop": sh(tricky)}));
    let p = run("p", &s, &nginx(), &BTreeMap::new(), true);
    let target = Target {
        kind: WorkloadKind::Deployment,
        name: "web",
        namespace: "ns",
    };
    let body = apply_body(&target, &nginx(), &p);
    let cmd = &body["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"];
    assert_eq!(cmd[2], tricky);
    // The ledger annotation is JSON in a string and parses back.
    let ann = body["metadata"]["annotations"][ledger_key("p")]
        .as_str()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Ledger>(ann).unwrap(),
        p.ledger.unwrap()
    );
}

#[test]
fn unknown_originals_are_kept_while_held_and_removed_on_release() {
    let s = spec(json!({"preStop": sh("sleep 5")}));
    let slot = Slot::hook("nginx", HookKind::PreStop);
    let held = Ledger {
        policy: "p".into(),
        owned: BTreeMap::from([(slot.clone(), None)]),
        unknown: [slot.clone()].into(),
        ..Default::default()
    };
    let ledgers = BTreeMap::from([("p".to_string(), held.clone())]);
    let kept = run("p", &s, &nginx(), &ledgers, true);
    assert_eq!(kept.ledger.unwrap().unknown, held.unknown);
    assert!(kept.unrestorable.is_empty());
    let released = run("p", &s, &nginx(), &ledgers, false);
    assert_eq!(released.releases[&slot], None);
    assert_eq!(released.unrestorable, held.unknown);
    assert!(released.ledger.is_none());
}

fn plan_with(
    policy: &str,
    spec: &LifecyclePolicySpec,
    pod: &PodShape,
    ledgers: &BTreeMap<String, Ledger>,
    dry_run: bool,
    fights: &Fights,
) -> Plan {
    plan(&Input {
        policy,
        spec,
        active: true,
        pod,
        labelled: true,
        others_hold_hooks: false,
        ledgers,
        winners: &BTreeMap::new(),
        dry_run,
        fights,
    })
}

#[test]
fn skip_never_shortens_a_grace_period_and_raises_a_shorter_one() {
    let with_grace =
        |g: i64| pod(json!({"containers": [{"name": "db"}], "terminationGracePeriodSeconds": g}));
    let s = spec(json!({"preStop": sh("x"), "terminationGracePeriodSeconds": 60}));
    // A 300 s database keeps its 300 s; the status says why.
    let kept = run("p", &s, &with_grace(300), &BTreeMap::new(), true);
    assert_eq!(
        kept.outcomes[&Slot::GracePeriod],
        SlotOutcome::KeptLonger(300)
    );
    assert!(!kept.claims.contains_key(&Slot::GracePeriod));
    assert!(kept.conflicts().next().is_none(), "not a conflict");
    // A shorter one is raised, with its original recorded for the release.
    let raised = run("p", &s, &with_grace(30), &BTreeMap::new(), true);
    assert_eq!(raised.claims[&Slot::GracePeriod], json!(60));
    assert_eq!(
        raised.ledger.unwrap().owned[&Slot::GracePeriod],
        Some(json!(30))
    );
    // Override replaces as before.
    let o = spec(
        json!({"preStop": sh("x"), "terminationGracePeriodSeconds": 60, "onConflict": "Override"}),
    );
    let over = run("p", &o, &with_grace(300), &BTreeMap::new(), true);
    assert_eq!(over.claims[&Slot::GracePeriod], json!(60));
    // Shortened by an earlier build under Skip: the original comes back.
    let held = BTreeMap::from([(
        "p".to_string(),
        Ledger {
            policy: "p".into(),
            owned: BTreeMap::from([(Slot::GracePeriod, Some(json!(300)))]),
            ..Default::default()
        },
    )]);
    let back = run("p", &s, &with_grace(60), &held, true);
    assert_eq!(back.releases[&Slot::GracePeriod], Some(json!(300)));
    // The warning counts the grace period that stays in force.
    let sleep =
        spec(json!({"preStop": {"sleep": {"seconds": 90}}, "terminationGracePeriodSeconds": 60}));
    assert!(grace_too_short(&sleep, &with_grace(300)).is_none());
    assert!(grace_too_short(&sleep, &with_grace(30)).is_some());
}

#[test]
fn override_of_another_handler_type_replaces_it_whole() {
    let pd = pod(json!({"containers": [{"name": "c", "lifecycle": {"preStop": sh("theirs")}}]}));
    let s = spec(json!({"preStop": {"sleep": {"seconds": 5}}, "onConflict": "Override"}));
    let p = run("p", &s, &pd, &BTreeMap::new(), true);
    let slot = Slot::hook("c", HookKind::PreStop);
    assert_eq!(p.replaces[&slot], sh("theirs"));
    assert_eq!(p.ledger.as_ref().unwrap().owned[&slot], Some(sh("theirs")));
    // Same type: server-side apply takes the fields over, nothing to replace.
    let same = run(
        "p",
        &spec(json!({"preStop": sh("ours"), "onConflict": "Override"})),
        &pd,
        &BTreeMap::new(),
        true,
    );
    assert!(same.replaces.is_empty());
}

#[test]
fn dry_run_withholds_new_changes_and_still_hands_back() {
    let slot = Slot::hook("c", HookKind::PreStop);
    let held = BTreeMap::from([(
        "p".to_string(),
        Ledger {
            policy: "p".into(),
            owned: BTreeMap::from([(slot.clone(), None)]),
            ..Default::default()
        },
    )]);
    let pd = pod(
        json!({"containers": [{"name": "c", "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}}, {"name": "d"}]}),
    );
    // The hook changed to 2 s: in DryRun the 1 s stays, the new value is withheld.
    let s = spec(json!({"preStop": {"sleep": {"seconds": 2}}}));
    let p = plan_with("p", &s, &pd, &held, true, &Fights::default());
    assert_eq!(p.claims[&slot], json!({"sleep": {"seconds": 1}}));
    assert!(p.withheld.contains_key(&slot));
    assert!(p.withheld.contains_key(&Slot::hook("d", HookKind::PreStop)));
    assert!(!p.changes_template(&pd));
    assert!(p.releases.is_empty());
    // A hook the policy no longer wants is handed back even in DryRun.
    let post_only = spec(json!({"postStart": {"sleep": {"seconds": 1}}}));
    let p = plan_with("p", &post_only, &pd, &held, true, &Fights::default());
    assert_eq!(p.releases[&slot], None);
    assert!(p.claims.is_empty() && p.ledger.is_none());
    assert!(p.label_removed);
}

fn at(secs: i64) -> Option<Time> {
    Some(Time(
        k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + secs).unwrap(),
    ))
}

#[test]
fn a_manager_that_keeps_taking_a_slot_back_wins_after_three_times() {
    let slot = Slot::hook("c", HookKind::PreStop);
    let s = spec(json!({"preStop": {"sleep": {"seconds": 5}}, "onConflict": "Override"}));
    let theirs = pod(
        json!({"containers": [{"name": "c", "lifecycle": {"preStop": {"sleep": {"seconds": 9}}}}]}),
    );
    let none = BTreeMap::new();
    let mut previous = None;
    // Flux took the slot back at `t`, after `previous`.
    let taken = |previous: &Option<Contest>, t: i64| Fights {
        previous: previous.clone(),
        taken: BTreeMap::from([(slot.clone(), "flux".to_string())]),
        owners: BTreeMap::from([(slot.clone(), "flux".to_string())]),
        now: at(t),
        generation: 1,
    };
    for (i, t) in [0, 10, 20].into_iter().enumerate() {
        let p = plan_with("p", &s, &theirs, &none, false, &taken(&previous, t));
        let contest = p.ledger.as_ref().unwrap().contest.clone().unwrap();
        assert_eq!(contest.times.len(), i + 1);
        if i < 2 {
            assert_eq!(
                p.outcomes[&slot],
                SlotOutcome::Claimed,
                "take {i}: re-claimed"
            );
        } else {
            assert_eq!(p.outcomes[&slot], SlotOutcome::Contested("flux".into()));
            assert!(p.claims.is_empty() && p.ledger.as_ref().unwrap().owned.is_empty());
            assert_eq!(p.contested(), Some("flux"));
        }
        previous = Some(contest);
    }
    // It stays so while flux holds the slot, with no takeover seen any more.
    let quiet = Fights {
        previous: previous.clone(),
        owners: BTreeMap::from([(slot.clone(), "flux".to_string())]),
        now: at(3600),
        generation: 1,
        ..Default::default()
    };
    let p = plan_with("p", &s, &theirs, &none, false, &quiet);
    assert_eq!(p.outcomes[&slot], SlotOutcome::Contested("flux".into()));
    // Flux dropped the hook: the policy claims it again.
    let free = pod(json!({"containers": [{"name": "c"}]}));
    let gone = Fights {
        owners: BTreeMap::new(),
        ..quiet.clone()
    };
    assert_eq!(
        plan_with("p", &s, &free, &none, false, &gone).outcomes[&slot],
        SlotOutcome::Claimed
    );
    // Deleted (or the workload unselected): no record is kept, the ledger goes.
    let letting_go = plan(&Input {
        policy: "p",
        spec: &s,
        active: false,
        pod: &theirs,
        labelled: true,
        others_hold_hooks: false,
        ledgers: &none,
        winners: &BTreeMap::new(),
        dry_run: false,
        fights: &quiet,
    });
    assert!(letting_go.ledger.is_none());
    // A new generation of the policy starts over.
    let next = Fights {
        generation: 2,
        ..quiet
    };
    let p = plan_with("p", &s, &theirs, &none, false, &next);
    assert_eq!(p.outcomes[&slot], SlotOutcome::Claimed);
    assert!(p.ledger.unwrap().contest.is_none());
    // Takeovers spread over more than the window never add up to three.
    let mut previous = None;
    for t in [0, 400, 800, 1200] {
        let p = plan_with("p", &s, &theirs, &none, false, &taken(&previous, t));
        assert_eq!(p.outcomes[&slot], SlotOutcome::Claimed, "at {t}");
        previous = p.ledger.unwrap().contest;
    }
}

#[test]
fn an_empty_lifecycle_is_recorded_and_given_back() {
    let pd = pod(json!({"containers": [{"name": "c", "lifecycle": {}}]}));
    let s = spec(json!({"preStop": {"sleep": {"seconds": 1}}}));
    let p = run("p", &s, &pd, &BTreeMap::new(), true);
    let l = p.ledger.clone().unwrap();
    assert!(l.empty_lifecycle.contains("c"));
    // On release the patch removes the hook and leaves `{}`.
    let applied = pod(
        json!({"containers": [{"name": "c", "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}}]}),
    );
    let ledgers = BTreeMap::from([("p".to_string(), l.clone())]);
    let release = run("p", &s, &applied, &ledgers, false);
    let ann = BTreeMap::from([(ledger_key("p"), serde_json::to_string(&l).unwrap())]);
    let ops = release_patch("p", &applied, Some(&ann), &release).unwrap();
    let text = ops.to_string();
    assert!(text.contains("/lifecycle/preStop"), "{text}");
    assert!(
        !text.contains(r#""path":"/spec/template/spec/containers/0/lifecycle"}"#),
        "{text}"
    );
}
