//! The plugin's I/O edge: every read from the API server, each turned into
//! a readable error (`error`) when it fails. Nothing here decides anything.

use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kube::api::{Api, DynamicObject, ListParams, LogParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};
use serde_json::Value;

use crate::api::cluster::ClusterLifecyclePolicy;
use crate::api::types::{LifecyclePolicy, WorkloadKind};
use crate::hooks::marker;
use crate::plugin::cli::Global;
use crate::plugin::error::{Ask, explain};
use crate::verify::logread::Next;
use crate::verify::observer::read_lines;

const POLICIES: &str = "lifecyclepolicies.lifecycle-operator.io";
const CLUSTER_POLICIES: &str = "clusterlifecyclepolicies.lifecycle-operator.io";
/// How much of a container log to read: its last lines, at most so many bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogTail {
    pub lines: i64,
    pub bytes: i64,
}

/// `pod` reads one pod's logs: a long tail.
pub const POD_TAIL: LogTail = LogTail {
    lines: 10_000,
    bytes: 4 << 20,
};
/// `status` reads up to 10 pods of each of 20 workloads: a short one.
pub const STATUS_TAIL: LogTail = LogTail {
    lines: 1_000,
    bytes: 256 << 10,
};

/// A connection and the namespace the command is about.
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
}

/// A container log as read, or why it could not be.
#[derive(Clone, Debug, PartialEq)]
pub enum Log {
    Read(String),
    /// No such log (no previous container, the container not started yet).
    Absent,
    /// Readable, but refused: the message says which permission is missing.
    Refused(String),
}

impl Cluster {
    pub async fn connect(g: &Global) -> anyhow::Result<Self> {
        let options = KubeConfigOptions {
            context: g.context.clone(),
            ..Default::default()
        };
        let config = match (&g.kubeconfig, &g.context) {
            (Some(path), _) => {
                let kc = Kubeconfig::read_from(path).map_err(|e| {
                    anyhow::anyhow!("cannot read the kubeconfig {}: {e}", path.display())
                })?;
                Config::from_custom_kubeconfig(kc, &options).await?
            }
            (None, Some(_)) => Config::from_kubeconfig(&options).await?,
            // $KUBECONFIG, ~/.kube/config, or in a pod its service account.
            (None, None) => Config::infer().await.map_err(|e| {
                anyhow::anyhow!("no usable kubeconfig ($KUBECONFIG, ~/.kube/config): {e}")
            })?,
        };
        let mut config = config;
        if let Some(user) = &g.as_user {
            config.auth_info.impersonate = Some(user.clone());
        }
        let namespace = g
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config)
            .map_err(|e| anyhow::anyhow!("cannot make a client from the kubeconfig: {e}"))?;
        Ok(Cluster { client, namespace })
    }

    pub async fn policy(&self, name: &str) -> anyhow::Result<LifecyclePolicy> {
        let api: Api<LifecyclePolicy> = Api::namespaced(self.client.clone(), &self.namespace);
        let ask = Ask::new(
            "get",
            POLICIES,
            format!("LifecyclePolicy \"{name}\""),
            Some(&self.namespace),
        );
        api.get(name)
            .await
            .map_err(|e| anyhow::anyhow!(explain(&ask, &e)))
    }

    pub async fn cluster_policy(&self, name: &str) -> anyhow::Result<ClusterLifecyclePolicy> {
        let api: Api<ClusterLifecyclePolicy> = Api::all(self.client.clone());
        let ask = Ask::new(
            "get",
            CLUSTER_POLICIES,
            format!("ClusterLifecyclePolicy \"{name}\""),
            None,
        );
        api.get(name)
            .await
            .map_err(|e| anyhow::anyhow!(explain(&ask, &e)))
    }

    /// The namespace's LifecyclePolicies.
    pub async fn policies(&self, ns: &str) -> anyhow::Result<Vec<LifecyclePolicy>> {
        let api: Api<LifecyclePolicy> = Api::namespaced(self.client.clone(), ns);
        let ask = Ask::new("list", POLICIES, "the LifecyclePolicies".into(), Some(ns));
        Ok(api
            .list(&ListParams::default())
            .await
            .map_err(|e| anyhow::anyhow!(explain(&ask, &e)))?
            .items)
    }

    /// Every ClusterLifecyclePolicy; none where the kind is not served.
    pub async fn cluster_policies(&self) -> anyhow::Result<Vec<ClusterLifecyclePolicy>> {
        let api: Api<ClusterLifecyclePolicy> = Api::all(self.client.clone());
        match api.list(&ListParams::default()).await {
            Ok(l) => Ok(l.items),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
            Err(e) => {
                let ask = Ask::new(
                    "list",
                    CLUSTER_POLICIES,
                    "the ClusterLifecyclePolicies".into(),
                    None,
                );
                Err(anyhow::anyhow!(explain(&ask, &e)))
            }
        }
    }

    pub async fn namespaces(&self) -> anyhow::Result<Vec<Namespace>> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ask = Ask::new("list", "namespaces", "the namespaces".into(), None);
        Ok(api
            .list(&ListParams::default())
            .await
            .map_err(|e| anyhow::anyhow!(explain(&ask, &e)))?
            .items)
    }

    fn workload_api(&self, ns: &str, kind: WorkloadKind) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("apps", "v1", kind.as_str());
        let ar = ApiResource::from_gvk_with_plural(&gvk, kind.plural());
        Api::namespaced_with(self.client.clone(), ns, &ar)
    }

    /// One workload as the API server has it.
    pub async fn workload(
        &self,
        ns: &str,
        kind: WorkloadKind,
        name: &str,
    ) -> anyhow::Result<Value> {
        let ask = Ask::new(
            "get",
            kind.plural(),
            format!("{} \"{name}\"", kind.as_str()),
            Some(ns),
        );
        let o = self
            .workload_api(ns, kind)
            .get(name)
            .await
            .map_err(|e| anyhow::anyhow!(explain(&ask, &e)))?;
        Ok(with_kind(o, kind))
    }

    /// The namespace's workloads of one kind.
    pub async fn workloads(&self, ns: &str, kind: WorkloadKind) -> anyhow::Result<Vec<Value>> {
        let ask = Ask::new(
            "list",
            kind.plural(),
            format!("the {}", kind.plural()),
            Some(ns),
        );
        let list = self
            .workload_api(ns, kind)
            .list(&ListParams::default())
            .await
            .map_err(|e| anyhow::anyhow!(explain(&ask, &e)))?;
        Ok(list.items.into_iter().map(|o| with_kind(o, kind)).collect())
    }

    /// Pods of a namespace by label selector (`a=b,c in (d)`).
    pub async fn pods(&self, ns: &str, selector: &str) -> anyhow::Result<Vec<Pod>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let ask = Ask::new("list", "pods", "the pods".into(), Some(ns));
        Ok(api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| anyhow::anyhow!(explain(&ask, &e)))?
            .items)
    }

    pub async fn pod(&self, name: &str) -> anyhow::Result<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let ask = Ask::new(
            "get",
            "pods",
            format!("pod \"{name}\""),
            Some(&self.namespace),
        );
        api.get(name)
            .await
            .map_err(|e| anyhow::anyhow!(explain(&ask, &e)))
    }

    /// The events about one pod (the kubelet's hook failures among them).
    pub async fn pod_events(&self, pod: &Pod) -> anyhow::Result<Vec<Event>> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or(&self.namespace);
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let mut fields = format!("involvedObject.kind=Pod,involvedObject.name={name}");
        if let Some(uid) = &pod.metadata.uid {
            fields.push_str(&format!(",involvedObject.uid={uid}"));
        }
        let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
        let ask = Ask::new(
            "list",
            "events",
            format!("the events of pod \"{name}\""),
            Some(ns),
        );
        Ok(api
            .list(&ListParams::default().fields(&fields).limit(500))
            .await
            .map_err(|e| anyhow::anyhow!(explain(&ask, &e)))?
            .items)
    }

    /// A container's log (with timestamps, bounded), current or previous.
    pub async fn log(&self, pod: &Pod, container: &str, previous: bool, tail: LogTail) -> Log {
        let ns = pod.metadata.namespace.as_deref().unwrap_or(&self.namespace);
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let lp = LogParams {
            container: Some(container.to_string()),
            previous,
            timestamps: true,
            tail_lines: Some(tail.lines),
            limit_bytes: Some(tail.bytes),
            ..Default::default()
        };
        match api.logs(name, &lp).await {
            Ok(s) => Log::Read(s),
            Err(kube::Error::Api(s)) if s.code == 400 || s.code == 404 => Log::Absent,
            Err(e) => {
                let ask = Ask::new(
                    "get",
                    "pods/log",
                    format!("the logs of pod \"{name}\""),
                    Some(ns),
                );
                Log::Refused(explain(&ask, &e))
            }
        }
    }
}

/// Marker lines kept while following one log.
const FOLLOWED_MARKERS: usize = 1000;

impl Cluster {
    /// Follows a container's log (from the tail) until the container stops
    /// or `deadline`, keeping only its marker lines: a preStop's end line is
    /// read even when the kubelet removes the container right after.
    pub async fn follow_markers(
        &self,
        pod: &Pod,
        container: &str,
        deadline: tokio::time::Instant,
    ) -> Log {
        let ns = pod.metadata.namespace.as_deref().unwrap_or(&self.namespace);
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let lp = LogParams {
            container: Some(container.to_string()),
            follow: true,
            timestamps: true,
            tail_lines: Some(POD_TAIL.lines),
            ..Default::default()
        };
        let stream = match tokio::time::timeout_at(deadline, api.log_stream(name, &lp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(kube::Error::Api(s))) if s.code == 400 || s.code == 404 => return Log::Absent,
            Ok(Err(e)) => {
                let ask = Ask::new(
                    "get",
                    "pods/log",
                    format!("the logs of pod \"{name}\""),
                    Some(ns),
                );
                return Log::Refused(explain(&ask, &e));
            }
            Err(_) => return Log::Absent,
        };
        let mut kept: Vec<String> = Vec::new();
        let read = read_lines(stream, |line: &str, _cut: bool| {
            if kept.len() < FOLLOWED_MARKERS && marker::parse(line).is_some() {
                kept.push(line.to_string());
            }
            Next::More
        });
        let _ = tokio::time::timeout_at(deadline, read).await;
        Log::Read(kept.join("\n"))
    }
}

/// A listed object has no kind of its own; the request named it.
fn with_kind(o: DynamicObject, kind: WorkloadKind) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or_default();
    v["apiVersion"] = "apps/v1".into();
    v["kind"] = kind.as_str().into();
    v
}
