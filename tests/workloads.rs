//! Every workload kind (issue "Every workload"): one policy puts the seed's
//! hooks on a StatefulSet, a DaemonSet and a Deployment's sidecar; the hooks
//! run and are proven; deleting the policy restores all three byte for byte.
//! And `maxConcurrentRollouts: 1` holds across kinds.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use lifecycle_operator::api::types::{HookReport, LifecyclePolicy};
use serde_json::{Value, json};

fn nginx() -> Value {
    json!({"name": "nginx", "image": "nginx", "imagePullPolicy": "IfNotPresent"})
}

/// A sidecar (restartable init container) that stops at once on SIGTERM.
fn sidecar() -> Value {
    json!({"name": "sidecar", "image": "busybox", "imagePullPolicy": "IfNotPresent", "restartPolicy": "Always",
        "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]})
}

fn body(kind: &str, name: &str, app: &str, pod: Value, extra: Value) -> Value {
    let mut spec = json!({
        "selector": {"matchLabels": {"pod": name}},
        "template": {"metadata": {"labels": {"pod": name}}, "spec": pod},
    });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "labels": {"app": app}}, "spec": spec})
}

async fn create<K>(ns: &Ns, v: Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ns.client.clone(), &ns.name);
    let obj: K = serde_json::from_value(v).unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create")
}

fn template_of(v: &Value) -> Value {
    v["spec"]["template"].clone()
}

async fn templates(ns: &Ns) -> [Value; 3] {
    let c = ns.client.clone();
    let sts = Api::<StatefulSet>::namespaced(c.clone(), &ns.name)
        .get("db")
        .await
        .unwrap();
    let ds = Api::<DaemonSet>::namespaced(c.clone(), &ns.name)
        .get("edge")
        .await
        .unwrap();
    let d = ns.deployments().get("web").await.unwrap();
    [
        template_of(&serde_json::to_value(sts).unwrap()),
        template_of(&serde_json::to_value(ds).unwrap()),
        template_of(&serde_json::to_value(d).unwrap()),
    ]
}

fn hooks(p: &LifecyclePolicy) -> (HookReport, HookReport) {
    let s = p.status.clone().unwrap_or_default();
    (
        s.post_start.unwrap_or_default(),
        s.pre_stop.unwrap_or_default(),
    )
}

#[tokio::test]
async fn one_policy_hooks_a_statefulset_a_daemonset_and_a_sidecar() {
    let ns = Ns::new("kinds").await;
    create::<StatefulSet>(
        &ns,
        body(
            "StatefulSet",
            "db",
            "nginx",
            json!({"containers": [nginx()]}),
            json!({"replicas": 1, "serviceName": "db"}),
        ),
    )
    .await;
    create::<DaemonSet>(
        &ns,
        body(
            "DaemonSet",
            "edge",
            "nginx",
            json!({"containers": [nginx()]}),
            json!({}),
        ),
    )
    .await;
    create::<Deployment>(
        &ns,
        body(
            "Deployment",
            "web",
            "nginx",
            json!({"initContainers": [sidecar()], "containers": [nginx()]}),
            json!({"replicas": 1}),
        ),
    )
    .await;
    let before = templates(&ns).await;

    ns.policy(
        "everywhere",
        json!({"selector": {"matchLabels": {"app": "nginx"}},
            "kinds": ["Deployment", "StatefulSet", "DaemonSet"],
            "containers": ["nginx", "sidecar"],
            "postStart": sh("echo Hello from the postStart handler > /tmp/message"),
            "preStop": sh("echo Goodbye from the preStop handler > /tmp/message")}),
    )
    .await;
    // nginx in three pods and the sidecar: four postStarts, each by marker.
    let p = wait_policy(&ns, "everywhere", 240, |p| {
        hooks(p).0.ran >= 4 && p.status.as_ref().is_some_and(|s| s.patched_workloads == 3)
    })
    .await;
    let s = p.status.clone().unwrap();
    println!(
        "rolled out: matched {} patched {}; postStart {:?}",
        s.matched_workloads,
        s.patched_workloads,
        hooks(&p).0.summary
    );
    let mut kinds: Vec<String> = s
        .workloads
        .iter()
        .map(|w| format!("{}/{}", w.kind, w.name))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["DaemonSet/edge", "Deployment/web", "StatefulSet/db"],
        "{:?}",
        s.workloads
    );
    assert!(
        s.workloads.iter().all(|w| w.state == "Patched"),
        "{:?}",
        s.workloads
    );
    let (post, _) = hooks(&p);
    assert_eq!((post.ran, post.failed), (4, 0), "{post:?}");
    assert_eq!(post.evidence, "marker");
    // The sidecar carries the hooks in the template.
    let [_, _, web] = templates(&ns).await;
    assert!(
        web["spec"]["initContainers"][0]["lifecycle"]["preStop"].is_object(),
        "{web}"
    );

    // Deleting the StatefulSet's and the DaemonSet's pods runs their preStops.
    let pods = Api::<Pod>::namespaced(ns.client.clone(), &ns.name);
    for owner in ["db", "edge"] {
        let list = pods
            .list(&ListParams::default().labels(&format!("pod={owner}")))
            .await
            .unwrap();
        for pod in list.items {
            pods.delete(&pod.metadata.name.unwrap(), &DeleteParams::default())
                .await
                .unwrap();
        }
    }
    let p = wait_policy(&ns, "everywhere", 180, |p| hooks(p).1.ran >= 2).await;
    let (_, pre) = hooks(&p);
    println!(
        "after deleting the StatefulSet's and DaemonSet's pods: preStop {} (ran {}, failed {})",
        pre.summary, pre.ran, pre.failed
    );
    assert_eq!((pre.ran, pre.failed, pre.timed_out), (2, 0, 0), "{pre:?}");

    // Deleting the policy restores all three templates byte for byte.
    ns.policies()
        .delete("everywhere", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the policy gone", 120, || async {
        match ns.policies().get_opt("everywhere").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let after = templates(&ns).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a, b, "restored byte for byte");
    }
    ns.delete().await;
}

/// Whether a workload's status shows a rollout in progress (as `kubectl
/// rollout status` reads it).
fn rolling(v: &Value) -> bool {
    let (spec, st, generation) = (
        &v["spec"],
        &v["status"],
        v["metadata"]["generation"].as_i64(),
    );
    if st["observedGeneration"].as_i64() < generation {
        return true;
    }
    let n = |x: &Value| x.as_i64().unwrap_or(0);
    match v["kind"].as_str() {
        Some("DaemonSet") => {
            n(&st["updatedNumberScheduled"]) < n(&st["desiredNumberScheduled"])
                || n(&st["numberAvailable"]) < n(&st["desiredNumberScheduled"])
        }
        Some("StatefulSet") => {
            n(&st["updatedReplicas"]) < n(&spec["replicas"])
                || n(&st["readyReplicas"]) < n(&spec["replicas"])
                || st["currentRevision"] != st["updateRevision"]
        }
        _ => {
            n(&st["updatedReplicas"]) < n(&spec["replicas"])
                || n(&st["availableReplicas"]) < n(&st["updatedReplicas"])
                || n(&st["replicas"]) > n(&st["updatedReplicas"])
        }
    }
}

#[tokio::test]
async fn one_rollout_at_a_time_across_kinds() {
    let ns = Ns::new("pace").await;
    let busy = || {
        json!({"containers": [{"name": "app", "image": "busybox", "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]}]})
    };
    create::<StatefulSet>(
        &ns,
        body(
            "StatefulSet",
            "s1",
            "paced",
            busy(),
            json!({"replicas": 1, "serviceName": "s1"}),
        ),
    )
    .await;
    create::<DaemonSet>(&ns, body("DaemonSet", "d1", "paced", busy(), json!({}))).await;
    create::<Deployment>(
        &ns,
        body("Deployment", "w1", "paced", busy(), json!({"replicas": 1})),
    )
    .await;
    create::<Deployment>(
        &ns,
        body("Deployment", "w2", "paced", busy(), json!({"replicas": 1})),
    )
    .await;
    // Settled before the policy comes.
    let c = ns.client.clone();
    let n = ns.name.clone();
    let all = move || {
        let (c, n) = (c.clone(), n.clone());
        async move {
            let mut out = Vec::new();
            for kind in ["statefulsets", "daemonsets", "deployments"] {
                let ar = kube::core::ApiResource {
                    group: "apps".into(),
                    version: "v1".into(),
                    api_version: "apps/v1".into(),
                    kind: match kind {
                        "statefulsets" => "StatefulSet",
                        "daemonsets" => "DaemonSet",
                        _ => "Deployment",
                    }
                    .into(),
                    plural: kind.into(),
                };
                let api: Api<kube::core::DynamicObject> = Api::namespaced_with(c.clone(), &n, &ar);
                for o in api.list(&ListParams::default()).await.unwrap().items {
                    let mut v = serde_json::to_value(&o).unwrap();
                    v["kind"] = json!(ar.kind);
                    out.push(v);
                }
            }
            out
        }
    };
    eventually("workloads settled", 120, || async {
        let ws = all().await;
        if ws.len() == 4 && !ws.iter().any(rolling) {
            Ok(())
        } else {
            Err("rolling".into())
        }
    })
    .await;
    ns.policy(
        "paced",
        json!({"selector": {"matchLabels": {"app": "paced"}},
            "kinds": ["Deployment", "StatefulSet", "DaemonSet"],
            "maxConcurrentRollouts": 1, "preStop": {"sleep": {"seconds": 1}}}),
    )
    .await;
    let mut most = 0;
    let mut samples = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        let ws = all().await;
        let ours: Vec<&Value> = ws
            .iter()
            .filter(|w| {
                w["metadata"]["annotations"]
                    .get("lifecycle-operator.io/paced")
                    .is_some()
            })
            .collect();
        let now_rolling = ours.iter().filter(|w| rolling(w)).count();
        most = most.max(now_rolling);
        samples += 1;
        if ours.len() == 4 && now_rolling == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not done: {} of 4 hooked",
            ours.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "maxConcurrentRollouts 1 across kinds: at most {most} rolling at once over {samples} samples"
    );
    assert_eq!(most, 1, "never two rolling at once");
    ns.delete().await;
}
