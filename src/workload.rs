//! A workload as the operator keeps it in memory: the few fields planning
//! reads, deserialized straight from the API's JSON (everything else is
//! skipped while parsing, never allocated). A k8s-openapi `Deployment` with
//! one container takes about 6 KiB even trimmed; this takes well under 1 KiB
//! until a policy hooks it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::marker::PhantomData;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Pod-template label on every template a policy has hooked, so that the hook
/// observer watches only hooked pods. Restored (removed) with the last hook.
pub const HOOKED_LABEL: &str = "lifecycle-operator.io/hooked";
pub const HOOKED_VALUE: &str = "true";

/// The annotations and field managers of the operator all start with this.
const DOMAIN_PREFIX: &str = "lifecycle-operator.io/";
const MANAGER_PREFIX: &str = "lifecycle-operator/";

/// A workload of kind `K` (a Deployment today) reduced to what planning reads.
#[derive(Deserialize, Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Workload<K> {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: WorkloadSpec,
    #[serde(default)]
    pub status: WorkloadStatus,
    #[serde(skip)]
    kind: PhantomData<fn() -> K>,
}

// Not derived: a derive would require `K: Clone`.
impl<K> Clone for Workload<K> {
    fn clone(&self) -> Self {
        Workload {
            metadata: self.metadata.clone(),
            spec: self.spec.clone(),
            status: self.status.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Workload<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(_: &()) -> Cow<'_, str> {
        K::kind(&())
    }
    fn group(_: &()) -> Cow<'_, str> {
        K::group(&())
    }
    fn version(_: &()) -> Cow<'_, str> {
        K::version(&())
    }
    fn plural(_: &()) -> Cow<'_, str> {
        K::plural(&())
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    pub replicas: Option<i32>,
    #[serde(default)]
    pub template: Template,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct Template {
    #[serde(default)]
    pub metadata: TemplateMeta,
    #[serde(default)]
    pub spec: PodShape,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct TemplateMeta {
    /// Only the operator's own label is kept (see [`trim`]).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The part of a pod spec that hooks live in, in template order.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodShape {
    #[serde(default)]
    pub containers: Vec<ContainerShape>,
    pub termination_grace_period_seconds: Option<i64>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct ContainerShape {
    pub name: String,
    /// The container's `lifecycle` as the API server returned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Value>,
}

impl ContainerShape {
    /// One handler (`postStart`, `preStop`) of the container's lifecycle.
    pub fn handler(&self, field: &str) -> Option<&Value> {
        self.lifecycle.as_ref()?.get(field)
    }
}

impl From<&PodSpec> for PodShape {
    fn from(pod: &PodSpec) -> Self {
        PodShape {
            containers: pod
                .containers
                .iter()
                .map(|c| ContainerShape {
                    name: c.name.clone(),
                    lifecycle: c
                        .lifecycle
                        .as_ref()
                        .map(|l| serde_json::to_value(l).expect("lifecycle serializes")),
                })
                .collect(),
            termination_grace_period_seconds: pod.termination_grace_period_seconds,
        }
    }
}

/// Rollout progress; the fields of every kind's status that say whether it
/// has caught up with its template.
#[derive(Deserialize, Serialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    pub observed_generation: Option<i64>,
    pub replicas: Option<i32>,
    pub updated_replicas: Option<i32>,
    pub available_replicas: Option<i32>,
}

impl<K> Workload<K> {
    pub fn pod(&self) -> &PodShape {
        &self.spec.template.spec
    }

    pub fn hooked_label(&self) -> bool {
        self.spec
            .template
            .metadata
            .labels
            .get(HOOKED_LABEL)
            .is_some_and(|v| v == HOOKED_VALUE)
    }

    /// Still rolling out: the controller has not caught up with the
    /// template, or old pods remain.
    pub fn is_rolling(&self) -> bool {
        let s = &self.status;
        let want = self.spec.replicas.unwrap_or(1);
        let updated = s.updated_replicas.unwrap_or(0);
        s.observed_generation < self.metadata.generation
            || updated < want
            || s.replicas.unwrap_or(0) > updated
            || s.available_replicas.unwrap_or(0) < updated
    }
}

/// Drops what planning never reads: annotations other than the ledgers,
/// managedFields other than the policies' own applies (the ledgers' second
/// record), template labels other than [`HOOKED_LABEL`].
pub fn trim<K>(w: &mut Workload<K>) {
    let m = &mut w.metadata;
    if let Some(a) = m.annotations.as_mut() {
        a.retain(|k, _| k.starts_with(DOMAIN_PREFIX));
    }
    if let Some(fields) = m.managed_fields.as_mut() {
        fields.retain(|e| {
            e.manager
                .as_deref()
                .is_some_and(|m| m.starts_with(MANAGER_PREFIX))
                && e.operation.as_deref() == Some("Apply")
        });
    }
    m.owner_references = None;
    m.finalizers = None;
    m.creation_timestamp = None;
    m.generate_name = None;
    w.spec
        .template
        .metadata
        .labels
        .retain(|k, _| k == HOOKED_LABEL);
    if m.annotations.as_ref().is_some_and(|a| a.is_empty()) {
        m.annotations = None;
    }
    if m.managed_fields.as_ref().is_some_and(|f| f.is_empty()) {
        m.managed_fields = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::ResourceExt;
    use serde_json::json;

    type Slim = Workload<Deployment>;

    fn deploy(generation: i64, spec_replicas: i32, status: Value) -> Slim {
        serde_json::from_value(json!({
            "metadata": {"name": "d", "namespace": "ns", "generation": generation},
            "spec": {"replicas": spec_replicas, "selector": {}, "template": {"spec": {"containers": [{"name": "c"}]}}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn reads_a_full_deployment_and_keeps_what_planning_needs() {
        let full = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "ns", "generation": 3, "uid": "u",
                "labels": {"app": "web"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "o", "uid": "o"}],
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{}",
                    "deployment.kubernetes.io/revision": "3",
                    "lifecycle-operator.io/p": "{\"policy\":\"p\",\"owned\":{}}",
                },
                "managedFields": [
                    {"manager": "lifecycle-operator/p", "operation": "Apply", "fieldsV1": {}},
                    {"manager": "lifecycle-operator/p", "operation": "Update", "fieldsV1": {}},
                    {"manager": "lifecycle-operator-restore", "operation": "Update", "fieldsV1": {}},
                    {"manager": "kubectl", "operation": "Apply", "fieldsV1": {}},
                ],
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate"},
                "template": {
                    "metadata": {"labels": {"app": "web", HOOKED_LABEL: HOOKED_VALUE}},
                    "spec": {
                        "terminationGracePeriodSeconds": 40,
                        "volumes": [{"name": "v", "emptyDir": {}}],
                        "containers": [
                            {"name": "nginx", "image": "nginx", "env": [{"name": "A", "value": "b"}],
                             "lifecycle": {"preStop": {"sleep": {"seconds": 5}}}},
                            {"name": "sidecar", "image": "busybox"},
                        ],
                    },
                },
            },
            "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2,
                       "conditions": [{"type": "Available", "status": "True"}]},
        });
        let mut w: Slim = serde_json::from_value(full).unwrap();
        trim(&mut w);
        assert_eq!(w.name_any(), "web");
        assert_eq!(w.labels().get("app").map(String::as_str), Some("web"));
        assert_eq!(
            w.annotations().keys().collect::<Vec<_>>(),
            ["lifecycle-operator.io/p"]
        );
        let kept: Vec<_> = w
            .managed_fields()
            .iter()
            .map(|e| (e.manager.clone().unwrap(), e.operation.clone().unwrap()))
            .collect();
        assert_eq!(
            kept,
            [("lifecycle-operator/p".to_string(), "Apply".to_string())]
        );
        assert!(w.metadata.owner_references.is_none());
        assert!(w.hooked_label());
        assert_eq!(
            w.spec.template.metadata.labels.keys().collect::<Vec<_>>(),
            [HOOKED_LABEL]
        );
        let pod = w.pod();
        assert_eq!(pod.termination_grace_period_seconds, Some(40));
        assert_eq!(
            pod.containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["nginx", "sidecar"]
        );
        assert_eq!(
            pod.containers[0].handler("preStop"),
            Some(&json!({"sleep": {"seconds": 5}}))
        );
        assert!(pod.containers[1].lifecycle.is_none());
        assert!(!w.is_rolling());
        // The same shape as a full pod spec converted.
        let spec: PodSpec = serde_json::from_value(json!({"terminationGracePeriodSeconds": 40, "containers": [
            {"name": "nginx", "image": "nginx", "lifecycle": {"preStop": {"sleep": {"seconds": 5}}}},
            {"name": "sidecar", "image": "busybox"},
        ]}))
        .unwrap();
        assert_eq!(&PodShape::from(&spec), pod);
    }

    #[test]
    fn rolling_means_the_controller_or_the_pods_have_not_caught_up() {
        let settled = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2});
        assert!(!deploy(2, 2, settled).is_rolling());
        let cases = [
            json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 2}),
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}),
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
            json!({}),
        ];
        for status in cases {
            assert!(deploy(2, 2, status.clone()).is_rolling(), "{status}");
        }
        // Scaled to zero and observed: settled.
        assert!(!deploy(3, 0, json!({"observedGeneration": 3})).is_rolling());
    }
}
