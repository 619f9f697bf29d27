//! A workload as the operator keeps it in memory: the few fields planning
//! reads, deserialized straight from the API's JSON (everything else is
//! skipped while parsing, never allocated). A k8s-openapi `Deployment` with
//! one container takes about 6 KiB even trimmed; this takes well under 1 KiB
//! until a policy hooks it. One type serves every kind: the kind is kube's
//! dynamic type, like `DynamicObject`'s `ApiResource`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::DynamicResourceScope;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::types::WorkloadKind;

/// A workload as the rollout, the observer's health and the status name
/// it: "Kind/name" for a namespaced policy, which acts in one namespace
/// (its status keeps that string); "namespace/Kind/name" for a cluster
/// policy. Ordered by namespace, then as "Kind/name" sorts (the waves'
/// order).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkloadKey {
    /// Set for a cluster policy's keys only.
    pub namespace: Option<String>,
    pub kind: WorkloadKind,
    pub name: String,
}

impl WorkloadKey {
    /// The key within the workload's namespace.
    pub fn of(w: &Workload) -> Self {
        WorkloadKey {
            namespace: None,
            kind: w.kind,
            name: w.metadata.name.clone().unwrap_or_default(),
        }
    }

    /// The key across namespaces.
    pub fn qualified(w: &Workload) -> Self {
        WorkloadKey {
            namespace: Some(w.metadata.namespace.clone().unwrap_or_default()),
            ..Self::of(w)
        }
    }

    /// The key within its namespace, whichever it was.
    pub fn local(&self) -> Self {
        WorkloadKey {
            namespace: None,
            ..self.clone()
        }
    }
}

impl Ord for WorkloadKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.namespace, self.kind.as_str(), &self.name).cmp(&(
            &other.namespace,
            other.kind.as_str(),
            &other.name,
        ))
    }
}

impl PartialOrd for WorkloadKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(ns) = &self.namespace {
            write!(f, "{ns}/")?;
        }
        write!(f, "{}/{}", self.kind, self.name)
    }
}

impl std::str::FromStr for WorkloadKey {
    type Err = ();

    /// "Kind/name" or "namespace/Kind/name", as [`Display`](std::fmt::Display) writes it.
    fn from_str(s: &str) -> Result<Self, ()> {
        let mut parts = s.rsplitn(3, '/');
        let (name, kind) = (parts.next().ok_or(())?, parts.next().ok_or(())?);
        let namespace = parts.next().map(str::to_string);
        let kind = WorkloadKind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or(())?;
        Ok(WorkloadKey {
            namespace,
            kind,
            name: name.to_string(),
        })
    }
}

/// Pod-template label on every template a policy has hooked, so that the hook
/// observer watches only hooked pods. Restored (removed) with the last hook.
pub const HOOKED_LABEL: &str = "lifecycle-operator.io/hooked";
pub const HOOKED_VALUE: &str = "true";

/// The annotations and field managers of the operator all start with this.
const DOMAIN_PREFIX: &str = "lifecycle-operator.io/";
const MANAGER_PREFIX: &str = "lifecycle-operator/";
/// Every field manager of the operator's (policies' and the restore manager).
const OPERATOR_PREFIX: &str = "lifecycle-operator";

/// A Deployment, StatefulSet or DaemonSet reduced to what planning reads.
/// The kind is the watch's (kube's dynamic type), set when it is read.
#[derive(Deserialize, Serialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    #[serde(skip)]
    pub kind: WorkloadKind,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: WorkloadSpec,
    #[serde(default)]
    pub status: WorkloadStatus,
    /// Hooks and grace periods that field managers outside the operator own
    /// (from managedFields, see [`trim`]): a few bytes each, not their trees.
    #[serde(skip)]
    pub foreign: Vec<ForeignField>,
}

/// A hook (`container` and `postStart`/`preStop`) or the grace period
/// (`container` None) that a field manager outside the operator owns.
#[derive(Clone, Debug, PartialEq)]
pub struct ForeignField {
    pub manager: Box<str>,
    pub container: Option<Box<str>>,
    pub field: &'static str,
}

impl Resource for Workload {
    type DynamicType = WorkloadKind;
    type Scope = DynamicResourceScope;

    fn kind(k: &WorkloadKind) -> Cow<'_, str> {
        k.as_str().into()
    }
    fn group(_: &WorkloadKind) -> Cow<'_, str> {
        "apps".into()
    }
    fn version(_: &WorkloadKind) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(k: &WorkloadKind) -> Cow<'_, str> {
        k.plural().into()
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
    /// StatefulSets and DaemonSets (a Deployment's is `strategy`, not read).
    pub update_strategy: Option<UpdateStrategy>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStrategy {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub rolling_update: Option<RollingUpdate>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct RollingUpdate {
    /// StatefulSets: only pods with an ordinal at or above it are updated.
    pub partition: Option<i32>,
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<ContainerShape>,
    pub termination_grace_period_seconds: Option<i64>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerShape {
    pub name: String,
    /// `Always` on an init container makes it a sidecar, which runs hooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
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

/// Where a container sits in a pod spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Containers,
    InitContainers,
}

impl Section {
    /// The field's JSON name.
    pub fn field(self) -> &'static str {
        match self {
            Section::Containers => "containers",
            Section::InitContainers => "initContainers",
        }
    }
}

impl PodShape {
    /// The containers that can carry hooks: regular ones, then sidecars.
    pub fn hookable(&self) -> impl Iterator<Item = (Section, usize, &ContainerShape)> {
        let regular = self
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| (Section::Containers, i, c));
        let sidecars = self
            .init_containers
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_sidecar())
            .map(|(i, c)| (Section::InitContainers, i, c));
        regular.chain(sidecars)
    }

    /// A container that can carry hooks, by name.
    pub fn find(&self, name: &str) -> Option<(Section, usize, &ContainerShape)> {
        self.hookable().find(|(_, _, c)| c.name == name)
    }
}

impl ContainerShape {
    pub fn is_sidecar(&self) -> bool {
        self.restart_policy.as_deref() == Some("Always")
    }
}

impl From<&k8s_openapi::api::core::v1::Container> for ContainerShape {
    fn from(c: &k8s_openapi::api::core::v1::Container) -> Self {
        ContainerShape {
            name: c.name.clone(),
            restart_policy: c.restart_policy.clone(),
            lifecycle: c
                .lifecycle
                .as_ref()
                .map(|l| serde_json::to_value(l).expect("lifecycle serializes")),
        }
    }
}

impl From<&PodSpec> for PodShape {
    fn from(pod: &PodSpec) -> Self {
        PodShape {
            containers: pod.containers.iter().map(ContainerShape::from).collect(),
            init_containers: pod
                .init_containers
                .iter()
                .flatten()
                .map(ContainerShape::from)
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
    pub ready_replicas: Option<i32>,
    pub current_revision: Option<String>,
    pub update_revision: Option<String>,
    pub desired_number_scheduled: Option<i32>,
    pub updated_number_scheduled: Option<i32>,
    pub number_available: Option<i32>,
}

impl Workload {
    /// The pods it should run: a DaemonSet's scheduled ones, else its replicas.
    pub fn expected_pods(&self) -> i64 {
        match self.kind {
            WorkloadKind::DaemonSet => self.status.desired_number_scheduled.unwrap_or(0) as i64,
            _ => self.spec.replicas.unwrap_or(1) as i64,
        }
    }

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

    /// Why a template change restarts no pod here (the update strategy
    /// leaves that to someone else); None when it rolls out.
    pub fn staged(&self) -> Option<String> {
        if self.kind == WorkloadKind::Deployment {
            return None;
        }
        let strategy = self.spec.update_strategy.as_ref();
        if strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete") {
            return Some(format!(
                "{}: updateStrategy OnDelete: each pod gets the new template when it is next deleted",
                self.kind
            ));
        }
        let partition = strategy
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0);
        (self.kind == WorkloadKind::StatefulSet && partition > 0).then(|| {
            format!("StatefulSet: partition {partition}: only pods with an ordinal of {partition} or more get the new template")
        })
    }

    /// Still rolling out: the controller has not caught up with the
    /// template, or pods of an older template remain. A staged workload
    /// never counts as rolling: its template changes restart nothing.
    pub fn is_rolling(&self) -> bool {
        let s = &self.status;
        let behind = s.observed_generation < self.metadata.generation;
        if self.staged().is_some() {
            return false;
        }
        match self.kind {
            WorkloadKind::Deployment => {
                let want = self.spec.replicas.unwrap_or(1);
                let updated = s.updated_replicas.unwrap_or(0);
                behind
                    || updated < want
                    || s.replicas.unwrap_or(0) > updated
                    || s.available_replicas.unwrap_or(0) < updated
            }
            WorkloadKind::StatefulSet => {
                let want = self.spec.replicas.unwrap_or(1);
                behind
                    || s.updated_replicas.unwrap_or(0) < want
                    || s.ready_replicas.unwrap_or(0) < want
                    || s.current_revision != s.update_revision
            }
            WorkloadKind::DaemonSet => {
                let want = s.desired_number_scheduled.unwrap_or(0);
                behind
                    || s.updated_number_scheduled.unwrap_or(0) < want
                    || s.number_available.unwrap_or(0) < want
            }
        }
    }
}

/// Drops what planning never reads: annotations other than the ledgers,
/// managedFields other than the policies' own applies (the ledgers' second
/// record), template labels other than [`HOOKED_LABEL`].
pub fn trim(w: &mut Workload) {
    let m = &mut w.metadata;
    if let Some(a) = m.annotations.as_mut() {
        a.retain(|k, _| k.starts_with(DOMAIN_PREFIX));
    }
    let mut foreign = Vec::new();
    if let Some(fields) = m.managed_fields.as_mut() {
        fields.retain(|e| {
            let manager = e.manager.as_deref().unwrap_or_default();
            if manager.starts_with(MANAGER_PREFIX) {
                return e.operation.as_deref() == Some("Apply");
            }
            // Another manager's entry: only which hooks (and grace period) it
            // owns, to name who took a slot back (see `ledger::foreign_owners`).
            if !manager.starts_with(OPERATOR_PREFIX)
                && let Some(f) = &e.fields_v1
            {
                foreign.extend(foreign_fields(manager, &f.0));
            }
            false
        });
    }
    w.foreign = foreign;
    let m = &mut w.metadata;
    m.owner_references = None;
    m.finalizers = None;
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

/// The hooks and grace period a fieldsV1 tree covers.
fn foreign_fields(manager: &str, fields: &Value) -> Vec<ForeignField> {
    let Some(pod) = fields.pointer("/f:spec/f:template/f:spec") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if pod.get("f:terminationGracePeriodSeconds").is_some() {
        out.push(ForeignField {
            manager: manager.into(),
            container: None,
            field: "terminationGracePeriodSeconds",
        });
    }
    let containers = ["f:containers", "f:initContainers"]
        .into_iter()
        .filter_map(|f| pod.get(f).and_then(Value::as_object))
        .flatten();
    for (key, c) in containers {
        // `k:{"name":"web"}`: how managedFields key list items.
        let Some(name) = key
            .strip_prefix("k:")
            .and_then(|k| serde_json::from_str::<Value>(k).ok())
            .and_then(|v| Some(v.get("name")?.as_str()?.to_string()))
        else {
            continue;
        };
        for field in ["postStart", "preStop"] {
            if c.pointer(&format!("/f:lifecycle/f:{field}")).is_some() {
                out.push(ForeignField {
                    manager: manager.into(),
                    container: Some(name.as_str().into()),
                    field,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        /// A key reads back from what it writes, and sorts as that string
        /// does: the waves take workloads in the order they always did.
        #[test]
        fn workload_keys_read_back_and_sort_as_their_strings(
            a in (0..3usize, "[a-z0-9-]{1,12}"),
            b in (0..3usize, "[a-z0-9-]{1,12}"),
            ns in proptest::option::of("[a-z0-9-]{1,12}"),
            other_ns in "[a-z0-9-]{1,12}",
        ) {
            let key = |(k, name): (usize, String)| WorkloadKey { namespace: None, kind: WorkloadKind::ALL[k], name };
            let (a, b) = (key(a), key(b));
            prop_assert_eq!(a.to_string().parse::<WorkloadKey>(), Ok(a.clone()));
            prop_assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()));
            // Qualified keys: read back, and sort by namespace first.
            let (qa, qb) = (
                WorkloadKey { namespace: ns.clone(), ..a.clone() },
                WorkloadKey { namespace: Some(other_ns.clone()), ..b.clone() },
            );
            prop_assert_eq!(qa.to_string().parse::<WorkloadKey>(), Ok(qa.clone()));
            prop_assert_eq!(qa.local(), a.clone());
            if let Some(ns) = &ns && *ns != other_ns {
                prop_assert_eq!(qa.cmp(&qb), ns.cmp(&other_ns));
            }
        }
    }

    #[test]
    fn a_key_of_an_unknown_kind_does_not_read() {
        assert_eq!("Job/x".parse::<WorkloadKey>(), Err(()));
        assert_eq!("Deployment".parse::<WorkloadKey>(), Err(()));
        assert_eq!("ns/Job/x".parse::<WorkloadKey>(), Err(()));
        assert_eq!(
            "ns/DaemonSet/x".parse::<WorkloadKey>().map(|k| k.namespace),
            Ok(Some("ns".to_string()))
        );
    }

    type Slim = Workload;

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

    fn of(kind: WorkloadKind, spec: Value, status: Value) -> Workload {
        let mut w: Workload = serde_json::from_value(json!({
            "metadata": {"name": "w", "namespace": "ns", "generation": 2},
            "spec": spec, "status": status,
        }))
        .unwrap();
        w.kind = kind;
        w
    }

    #[test]
    fn statefulsets_and_daemonsets_roll_by_their_own_status() {
        use WorkloadKind::{DaemonSet, StatefulSet};
        let sts = |status: Value| of(StatefulSet, json!({"replicas": 2}), status);
        let done = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
                          "currentRevision": "r2", "updateRevision": "r2"});
        assert!(!sts(done.clone()).is_rolling());
        for (k, v) in [
            ("observedGeneration", json!(1)),
            ("updatedReplicas", json!(1)),
            ("readyReplicas", json!(1)),
            ("currentRevision", json!("r1")),
        ] {
            let mut s = done.clone();
            s[k] = v;
            assert!(sts(s.clone()).is_rolling(), "{s}");
        }
        let ds = |status: Value| of(DaemonSet, json!({}), status);
        let done = json!({"observedGeneration": 2, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 3});
        assert!(!ds(done.clone()).is_rolling());
        for (k, v) in [
            ("observedGeneration", json!(1)),
            ("updatedNumberScheduled", json!(2)),
            ("numberAvailable", json!(2)),
        ] {
            let mut s = done.clone();
            s[k] = v;
            assert!(ds(s.clone()).is_rolling(), "{s}");
        }
    }

    #[test]
    fn partitions_and_on_delete_restart_no_pod_and_never_roll() {
        use WorkloadKind::{DaemonSet, Deployment, StatefulSet};
        let behind = json!({"observedGeneration": 1});
        let cases = [
            (
                StatefulSet,
                json!({"updateStrategy": {"type": "OnDelete"}}),
                Some("OnDelete"),
            ),
            (
                DaemonSet,
                json!({"updateStrategy": {"type": "OnDelete"}}),
                Some("OnDelete"),
            ),
            (
                StatefulSet,
                json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}),
                Some("partition 2"),
            ),
            (
                StatefulSet,
                json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}}),
                None,
            ),
            (
                DaemonSet,
                json!({"updateStrategy": {"type": "RollingUpdate"}}),
                None,
            ),
            // A Deployment has no such strategy: it always rolls.
            (
                Deployment,
                json!({"updateStrategy": {"type": "OnDelete"}}),
                None,
            ),
        ];
        for (kind, spec, staged) in cases {
            let w = of(kind, spec.clone(), behind.clone());
            match staged {
                Some(why) => {
                    let got = w.staged().unwrap_or_default();
                    assert!(got.contains(why), "{kind} {spec}: {got}");
                    assert!(!w.is_rolling(), "{kind} {spec}");
                }
                None => {
                    assert_eq!(w.staged(), None, "{kind} {spec}");
                    assert!(w.is_rolling(), "{kind} {spec}");
                }
            }
        }
    }

    #[test]
    fn sidecars_are_hookable_and_plain_init_containers_are_not() {
        let pod: PodShape = serde_json::from_value(json!({
            "initContainers": [{"name": "init"}, {"name": "proxy", "restartPolicy": "Always"}],
            "containers": [{"name": "app"}],
        }))
        .unwrap();
        let found: Vec<_> = pod
            .hookable()
            .map(|(s, i, c)| (s, i, c.name.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (Section::Containers, 0, "app"),
                (Section::InitContainers, 1, "proxy")
            ]
        );
        assert!(pod.find("init").is_none());
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

    #[test]
    fn other_managers_keep_only_the_slots_they_own() {
        let mut w: Workload = serde_json::from_value(json!({
            "metadata": {"name": "d", "managedFields": [
                {"manager": "flux", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {
                    "f:terminationGracePeriodSeconds": {},
                    "f:containers": {"k:{\"name\":\"app\"}": {"f:image": {}, "f:lifecycle": {"f:preStop": {"f:exec": {}}}}}}}}}},
                {"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {"f:status": {"f:replicas": {}}}},
                {"manager": "lifecycle-operator-restore", "operation": "Update", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:terminationGracePeriodSeconds": {}}}}}},
            ]},
        }))
        .unwrap();
        trim(&mut w);
        assert!(
            w.metadata.managed_fields.is_none(),
            "their trees are dropped"
        );
        let flux = |container: Option<&str>, field| ForeignField {
            manager: "flux".into(),
            container: container.map(Into::into),
            field,
        };
        assert_eq!(
            w.foreign,
            [
                flux(None, "terminationGracePeriodSeconds"),
                flux(Some("app"), "preStop")
            ]
        );
    }
}
