//! Helpers for the tests that run against the real cluster (`make test`
//! starts it and the operator; see tests/run-cluster-tests.sh).
#![allow(dead_code)]

pub mod operator;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, Config, config::KubeConfigOptions, config::Kubeconfig};
use serde_json::{Value, json};

use lifecycle_operator::api::types::LifecyclePolicy;

/// A client for the test cluster. Fails loudly when the cluster is not there:
/// these tests are never skipped.
pub async fn client() -> Client {
    let path = std::env::var("KUBECONFIG").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/cluster/kubeconfig").to_string()
    });
    let kc = Kubeconfig::read_from(&path).unwrap_or_else(|e| {
        panic!("no kubeconfig at {path} ({e}): run `make cluster-up` (make test does)")
    });
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    Client::try_from(config).expect("client builds")
}

/// Fails at once, with what to do, when no operator answers: without one the
/// tests would only time out minutes later.
pub async fn require_operator() {
    let Ok(url) = std::env::var("LCO_METRICS_URL") else {
        panic!(
            "LCO_METRICS_URL is not set: the cluster tests need the local cluster and a running \
             operator; run them with `make test-operator` (tests/run-cluster-tests.sh)"
        );
    };
    let ready = url.replace("/metrics", "/readyz");
    let host = ready
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .unwrap_or_default()
        .to_string();
    let answered = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&host),
    )
    .await;
    if !matches!(answered, Ok(Ok(_))) {
        panic!(
            "no operator answers at {ready}: start it with `make test-operator` (tests/run-cluster-tests.sh)"
        );
    }
}

/// A fresh namespace labelled for cleanup; deleted by `Ns::delete`.
pub struct Ns {
    pub name: String,
    pub client: Client,
}

impl Ns {
    pub async fn new(prefix: &str) -> Ns {
        require_operator().await;
        let client = client().await;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("it-{prefix}-{:x}", nanos);
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"lifecycle-operator.io/test": "true"}}
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        Ns { name, client }
    }

    pub fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub fn policies(&self) -> Api<LifecyclePolicy> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub async fn deployment(
        &self,
        name: &str,
        labels: Value,
        replicas: i32,
        pod: Value,
    ) -> Deployment {
        let mut pod = pod;
        if pod.get("containers").is_none() {
            pod["containers"] = json!([{"name": "app", "image": "busybox", "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}]);
        }
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"pod": name}},
                "template": {"metadata": {"labels": {"pod": name}}, "spec": pod},
            }
        }))
        .unwrap();
        self.deployments()
            .create(&PostParams::default(), &d)
            .await
            .expect("create deployment")
    }

    pub async fn policy(&self, name: &str, spec: Value) -> LifecyclePolicy {
        let p: LifecyclePolicy = serde_json::from_value(json!({
            "apiVersion": "lifecycle-operator.io/v1alpha1",
            "kind": "LifecyclePolicy",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .unwrap();
        self.policies()
            .create(&PostParams::default(), &p)
            .await
            .expect("create policy")
    }

    pub async fn delete(self) {
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await;
    }
}

/// The pods of a Deployment made by [`Ns::deployment`] (labelled `pod=<name>`).
pub async fn pods(ns: &Ns, name: &str) -> Vec<k8s_openapi::api::core::v1::Pod> {
    Api::namespaced(ns.client.clone(), &ns.name)
        .list(&kube::api::ListParams::default().labels(&format!("pod={name}")))
        .await
        .unwrap()
        .items
}

pub async fn scale(ns: &Ns, name: &str, replicas: i32) {
    ns.deployments()
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
}

/// Polls `f` until it returns Some, or panics after `secs` with the last state.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("timed out after {secs}s waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// The pod template's spec as JSON.
pub fn template(d: &Deployment) -> Value {
    serde_json::to_value(&d.spec.template.spec).unwrap()
}

pub fn condition<'a>(
    p: &'a LifecyclePolicy,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Waits for the policy's status to describe its current generation and satisfy `ok`.
pub async fn wait_policy(
    ns: &Ns,
    name: &str,
    secs: u64,
    ok: impl Fn(&LifecyclePolicy) -> bool,
) -> LifecyclePolicy {
    eventually(&format!("policy {name}"), secs, || async {
        let p = ns.policies().get(name).await.map_err(|e| e.to_string())?;
        let current =
            p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation;
        if current && ok(&p) {
            Ok(p)
        } else {
            Err(serde_json::to_string(&p.status).unwrap())
        }
    })
    .await
}

pub fn sh(script: &str) -> Value {
    json!({"exec": {"command": ["/bin/sh", "-c", script]}})
}

/// Sum of the operator's `lifecycle_operator_api_write_requests` counters.
pub async fn operator_writes() -> f64 {
    let url = std::env::var("LCO_METRICS_URL")
        .expect("LCO_METRICS_URL is set by tests/run-cluster-tests.sh");
    let body = http_get(&url).await;
    body.lines()
        .filter(|l| l.starts_with("lifecycle_operator_api_write_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub async fn http_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .expect("operator metrics port");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// A hook as the operator puts it on the template with `verification:
/// Markers`: shell scripts wrapped to log marker lines, which carry a token
/// derived from the policy's UID (so: the policy as created).
pub fn rendered(
    policy: &LifecyclePolicy,
    kind: lifecycle_operator::hooks::hook::HookKind,
    handler: Value,
) -> Value {
    use kube::ResourceExt;
    let h: lifecycle_operator::api::types::Handler = serde_json::from_value(handler).unwrap();
    let key = format!("{}/{}", policy.namespace().unwrap(), policy.name_any());
    serde_json::to_value(
        lifecycle_operator::hooks::marker::wrap(&h, kind, &key, policy.metadata.uid.as_deref()).0,
    )
    .unwrap()
}
