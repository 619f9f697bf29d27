//! ClusterLifecyclePolicy against the real cluster: one policy over the
//! namespaces its namespaceSelector takes (Deployments, a StatefulSet, a
//! DaemonSet), proof counted by markers, namespaces labelled and
//! unlabelled later, every template restored byte for byte; and who wins a
//! slot when a namespace's own policy meets a cluster policy.

mod common;

use common::*;
use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use lifecycle_operator::api::cluster::ClusterLifecyclePolicy;
use lifecycle_operator::api::types::HookReport;
use serde_json::{Value, json};

/// The label this run's cluster policies select namespaces by: unique per
/// test, so that no other suite's namespace is ever selected.
const SELECT: &str = "lifecycle-operator.io/cluster-test";

/// A container that exits promptly on SIGTERM.
fn sleeper(name: &str) -> Value {
    json!({"name": name, "image": "busybox", "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]})
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{nanos:x}")
}

fn clcps(ns: &Ns) -> Api<ClusterLifecyclePolicy> {
    Api::all(ns.client.clone())
}

async fn label(ns: &Ns, value: Option<&str>) {
    Api::<Namespace>::all(ns.client.clone())
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {SELECT: value}}})),
        )
        .await
        .unwrap();
}

async fn create_clcp(ns: &Ns, name: &str, spec: Value) {
    let c: ClusterLifecyclePolicy = serde_json::from_value(json!({
        "apiVersion": "lifecycle-operator.io/v1alpha1", "kind": "ClusterLifecyclePolicy",
        "metadata": {"name": name, "labels": {"lifecycle-operator.io/test": "true"}},
        "spec": spec,
    }))
    .unwrap();
    clcps(ns).create(&PostParams::default(), &c).await.unwrap();
}

/// Waits for the cluster policy's status to describe its generation and satisfy `ok`.
async fn wait_clcp(
    ns: &Ns,
    name: &str,
    secs: u64,
    ok: impl Fn(&ClusterLifecyclePolicy) -> bool,
) -> ClusterLifecyclePolicy {
    eventually(&format!("cluster policy {name}"), secs, || async {
        let c = clcps(ns).get(name).await.map_err(|e| e.to_string())?;
        let current =
            c.status.as_ref().and_then(|s| s.policy.observed_generation) == c.metadata.generation;
        if current && ok(&c) {
            Ok(c)
        } else {
            Err(serde_json::to_string(&c.status).unwrap())
        }
    })
    .await
}

async fn delete_clcp(ns: &Ns, name: &str) {
    clcps(ns)
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
    eventually(&format!("cluster policy {name} gone"), 120, || async {
        match clcps(ns).get_opt(name).await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

fn hooks(c: &ClusterLifecyclePolicy) -> (HookReport, HookReport) {
    let s = c.status.clone().unwrap_or_default().policy;
    (
        s.post_start.unwrap_or_default(),
        s.pre_stop.unwrap_or_default(),
    )
}

fn counts(c: &ClusterLifecyclePolicy) -> (i32, i32, i32, i32) {
    let s = c.status.clone().unwrap_or_default();
    (
        s.namespaces.matched,
        s.namespaces.patched,
        s.policy.matched_workloads,
        s.policy.patched_workloads,
    )
}

/// The whole object of a workload's pod template, as the API server has it.
async fn template(ns: &Ns, kind: &str, name: &str) -> Value {
    let c = ns.client.clone();
    let v = match kind {
        "StatefulSet" => serde_json::to_value(
            Api::<StatefulSet>::namespaced(c, &ns.name)
                .get(name)
                .await
                .unwrap(),
        ),
        "DaemonSet" => serde_json::to_value(
            Api::<DaemonSet>::namespaced(c, &ns.name)
                .get(name)
                .await
                .unwrap(),
        ),
        _ => serde_json::to_value(ns.deployments().get(name).await.unwrap()),
    }
    .unwrap();
    v["spec"]["template"].clone()
}

async fn create(ns: &Ns, kind: &str, name: &str, extra: Value) {
    let mut spec = json!({
        "selector": {"matchLabels": {"pod": name}},
        "template": {"metadata": {"labels": {"pod": name}},
                     "spec": {"containers": [sleeper("app")]}},
    });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let body = json!({"apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name, "labels": {"tier": "web"}}, "spec": spec});
    let c = ns.client.clone();
    let pp = PostParams::default();
    match kind {
        "StatefulSet" => {
            let o: StatefulSet = serde_json::from_value(body).unwrap();
            Api::namespaced(c, &ns.name).create(&pp, &o).await.map(drop)
        }
        "DaemonSet" => {
            let o: DaemonSet = serde_json::from_value(body).unwrap();
            Api::namespaced(c, &ns.name).create(&pp, &o).await.map(drop)
        }
        _ => {
            let o = serde_json::from_value(body).unwrap();
            ns.deployments().create(&pp, &o).await.map(drop)
        }
    }
    .expect("create workload");
}

async fn delete_pods(ns: &Ns, name: &str) {
    let pods = Api::<Pod>::namespaced(ns.client.clone(), &ns.name);
    let list = pods
        .list(&ListParams::default().labels(&format!("pod={name}")))
        .await
        .unwrap();
    for p in list.items {
        let _ = pods
            .delete(&p.metadata.name.unwrap(), &DeleteParams::default())
            .await;
    }
}

#[tokio::test]
async fn one_cluster_policy_follows_its_namespaces_and_restores_every_template() {
    let sel = unique("across");
    let namespaces = [
        Ns::new("cp-a").await,
        Ns::new("cp-b").await,
        Ns::new("cp-c").await,
        Ns::new("cp-late").await,
    ];
    let workloads = [
        ("Deployment", "web", json!({"replicas": 1})),
        (
            "StatefulSet",
            "db",
            json!({"replicas": 1, "serviceName": "db"}),
        ),
        ("DaemonSet", "edge", json!({})),
        ("Deployment", "late", json!({"replicas": 1})),
    ];
    let mut before = Vec::new();
    for (ns, (kind, name, extra)) in namespaces.iter().zip(&workloads) {
        create(ns, kind, name, extra.clone()).await;
        before.push(template(ns, kind, name).await);
    }
    for ns in &namespaces[..3] {
        label(ns, Some(&sel)).await;
    }
    let policy = unique("it-cp");
    create_clcp(
        &namespaces[0],
        &policy,
        json!({"namespaceSelector": {"matchLabels": {SELECT: sel}},
               "selector": {"matchLabels": {"tier": "web"}},
               "kinds": ["Deployment", "StatefulSet", "DaemonSet"],
               "rollout": {"strategy": "Immediate"},
               "postStart": sh("echo started > /tmp/started"),
               "preStop": sh("echo stopping; sleep 1")}),
    )
    .await;
    let ns0 = &namespaces[0];
    // Three namespaces, a workload each, a pod each: three postStarts by marker.
    let c = wait_clcp(ns0, &policy, 240, |c| {
        counts(c) == (3, 3, 3, 3) && hooks(c).0.ran >= 3
    })
    .await;
    let (post, _) = hooks(&c);
    assert_eq!(
        (post.failed, post.evidence.as_str()),
        (0, "marker"),
        "{post:?}"
    );
    let status = c.status.clone().unwrap();
    let mut named: Vec<String> = status
        .policy
        .workloads
        .iter()
        .map(|w| {
            format!(
                "{}/{}/{}",
                w.namespace.clone().unwrap_or_default(),
                w.kind,
                w.name
            )
        })
        .collect();
    named.sort();
    let mut want: Vec<String> = namespaces[..3]
        .iter()
        .zip(&workloads)
        .map(|(ns, (kind, name, _))| format!("{}/{kind}/{name}", ns.name))
        .collect();
    want.sort();
    assert_eq!(named, want, "{:?}", status.policy.workloads);
    for (ns, (kind, name, _)) in namespaces[..3].iter().zip(&workloads) {
        let t = template(ns, kind, name).await;
        assert!(
            t["spec"]["containers"][0]["lifecycle"]["preStop"].is_object(),
            "{kind} {}/{name}: {t}",
            ns.name
        );
    }
    // The unlabelled namespace is not touched.
    assert_eq!(
        template(&namespaces[3], "Deployment", "late").await,
        before[3]
    );

    // Their pods go: three preStops by marker.
    for (ns, (_, name, _)) in namespaces[..3].iter().zip(&workloads) {
        delete_pods(ns, name).await;
    }
    let c = wait_clcp(ns0, &policy, 180, |c| hooks(c).1.ran >= 3).await;
    let (_, pre) = hooks(&c);
    println!("preStop across 3 namespaces: {}", pre.summary);
    assert_eq!(
        (pre.failed, pre.timed_out, pre.evidence.as_str()),
        (0, 0, "marker"),
        "{pre:?}"
    );

    // A namespace labelled later gets the hooks.
    label(&namespaces[3], Some(&sel)).await;
    wait_clcp(ns0, &policy, 120, |c| counts(c) == (4, 4, 4, 4)).await;
    let late = template(&namespaces[3], "Deployment", "late").await;
    assert!(
        late["spec"]["containers"][0]["lifecycle"]["postStart"].is_object(),
        "{late}"
    );

    // One unlabelled: its template comes back byte for byte.
    label(&namespaces[0], None).await;
    wait_clcp(ns0, &policy, 120, |c| counts(c) == (3, 3, 3, 3)).await;
    eventually(
        "the unlabelled namespace's template restored",
        60,
        || async {
            let t = template(ns0, "Deployment", "web").await;
            if t == before[0] {
                Ok(())
            } else {
                Err(t.to_string())
            }
        },
    )
    .await;

    // Deleting the policy restores everything.
    delete_clcp(ns0, &policy).await;
    for (i, (ns, (kind, name, _))) in namespaces.iter().zip(&workloads).enumerate() {
        assert_eq!(
            template(ns, kind, name).await,
            before[i],
            "{kind} {}/{name} not restored",
            ns.name
        );
    }
    for ns in namespaces {
        ns.delete().await;
    }
}

/// What a Deployment's container runs as its preStop.
async fn pre_stop(ns: &Ns) -> Value {
    template(ns, "Deployment", "web").await["spec"]["containers"][0]["lifecycle"]["preStop"].clone()
}

fn conflict_message(status: &lifecycle_operator::api::types::LifecyclePolicyStatus) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Conflict" && c.status == "True")
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_namespaces_own_policy_wins_unless_the_cluster_policy_forbids_it() {
    let sel = unique("precedence");
    let ns = Ns::new("cp-prec").await;
    create(&ns, "Deployment", "web", json!({"replicas": 0})).await;
    label(&ns, Some(&sel)).await;
    let team = json!({"selector": {"matchLabels": {"tier": "web"}},
                      "verification": "Disabled", "preStop": {"sleep": {"seconds": 2}}});
    let cluster = |forbid: bool| {
        json!({"namespaceSelector": {"matchLabels": {SELECT: sel}},
               "override": if forbid { "Forbid" } else { "Allow" },
               "selector": {"matchLabels": {"tier": "web"}},
               "verification": "Disabled", "rollout": {"strategy": "Immediate"},
               "preStop": {"sleep": {"seconds": 7}}})
    };

    // Allow (the default): the team's policy wins, though the cluster one is older.
    let platform = unique("it-platform");
    create_clcp(&ns, &platform, cluster(false)).await;
    wait_clcp(&ns, &platform, 60, |c| counts(c).3 == 1).await;
    ns.policy("team", team.clone()).await;
    wait_policy(&ns, "team", 90, |p| {
        p.status.as_ref().is_some_and(|s| s.patched_workloads == 1)
    })
    .await;
    assert_eq!(pre_stop(&ns).await, json!({"sleep": {"seconds": 2}}));
    let c = wait_clcp(&ns, &platform, 60, |c| {
        conflict_message(&c.status.clone().unwrap_or_default().policy)
            .contains("LifecyclePolicy team wins")
    })
    .await;
    let message = conflict_message(&c.status.unwrap().policy);
    println!("the cluster policy's Conflict: {message}");
    assert!(
        message.contains(&format!("Deployment {}/web", ns.name)),
        "{message}"
    );

    // Forbid: the cluster policy wins over the team's, which names it.
    clcps(&ns)
        .patch(
            &platform,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"override": "Forbid"}})),
        )
        .await
        .unwrap();
    eventually("the cluster policy's preStop", 90, || async {
        let h = pre_stop(&ns).await;
        if h == json!({"sleep": {"seconds": 7}}) {
            Ok(())
        } else {
            Err(h.to_string())
        }
    })
    .await;
    let p = wait_policy(&ns, "team", 90, |p| {
        conflict_message(p.status.as_ref().unwrap())
            .contains(&format!("ClusterLifecyclePolicy {platform} wins"))
    })
    .await;
    let message = conflict_message(p.status.as_ref().unwrap());
    println!("the team policy's Conflict: {message}");
    assert!(message.contains("override: Forbid"), "{message}");
    // ... and says so in an event.
    eventually("a Conflict event on the team's policy", 60, || async {
        let events =
            Api::<k8s_openapi::api::events::v1::Event>::namespaced(ns.client.clone(), &ns.name)
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
        let found = events.items.iter().any(|e| {
            e.reason.as_deref() == Some("Conflict")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("team")
                && e.note.as_deref().is_some_and(|n| n.contains(&platform))
        });
        if found {
            Ok(())
        } else {
            Err(format!("{} events", events.items.len()))
        }
    })
    .await;

    // The cluster policy goes: the team's policy takes the slot back.
    delete_clcp(&ns, &platform).await;
    eventually("the team's preStop back", 90, || async {
        let h = pre_stop(&ns).await;
        if h == json!({"sleep": {"seconds": 2}}) {
            Ok(())
        } else {
            Err(h.to_string())
        }
    })
    .await;
    ns.delete().await;
}
