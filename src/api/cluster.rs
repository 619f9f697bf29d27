//! The `ClusterLifecyclePolicy` API: a `LifecyclePolicy`'s spec over the
//! namespaces it selects, and how it ranks against the namespaces' own
//! policies. Not served yet: its CRD is not in `crds/` until the engine
//! reconciles it (issue 20).

// kube-derive takes repeated `printcolumn(type_ = ..)` arguments, which this lint misreads.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeSet;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::types::{
    LifecyclePolicy, LifecyclePolicySpec, LifecyclePolicyStatus, PolicySelector,
};

/// Puts lifecycle hooks on the workloads it selects in every namespace it selects.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lifecycle-operator.io",
    version = "v1alpha1",
    kind = "ClusterLifecyclePolicy",
    plural = "clusterlifecyclepolicies",
    shortname = "clcp",
    category = "lifecycle-operator",
    status = "ClusterLifecyclePolicyStatus",
    doc = "ClusterLifecyclePolicy puts container lifecycle hooks (postStart, preStop) on the pod templates of the workloads it selects in every namespace its namespaceSelector selects, and reports what it changed and whether the hooks ran. kube-system, kube-public, kube-node-lease and the operator's own namespace are left alone unless listed in `namespaces`.",
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.mode",
        priority = 1
    ),
    printcolumn(
        name = "Namespaces",
        type_ = "integer",
        description = "Namespaces the policy acts in",
        json_path = ".status.namespaces.matched"
    ),
    printcolumn(
        name = "Matched",
        type_ = "integer",
        description = "Workloads the selectors match, in all namespaces",
        json_path = ".status.matchedWorkloads"
    ),
    printcolumn(
        name = "Patched",
        type_ = "integer",
        description = "Matched workloads carrying every hook this policy owns there",
        json_path = ".status.patchedWorkloads"
    ),
    printcolumn(
        name = "PostStart",
        type_ = "string",
        json_path = ".status.postStart.summary"
    ),
    printcolumn(
        name = "PreStop",
        type_ = "string",
        json_path = ".status.preStop.summary"
    ),
    printcolumn(
        name = "Rollout",
        type_ = "string",
        json_path = ".status.rollout.phase"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterLifecyclePolicySpec {
    /// Label selector over namespaces. Required; `{}` selects every
    /// namespace but the protected ones.
    pub namespace_selector: PolicySelector,
    /// Protected namespaces (kube-system, kube-public, kube-node-lease, the
    /// operator's own) the namespaceSelector may select all the same.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    #[schemars(length(max = 16))]
    pub namespaces: BTreeSet<String>,
    /// Allow (default): a namespace's own LifecyclePolicy wins a slot over
    /// this one. Forbid: this policy wins, and the namespaced one reports
    /// Conflict naming it.
    #[serde(default, rename = "override")]
    pub override_: Override,
    #[serde(flatten)]
    pub policy: LifecyclePolicySpec,
}

impl ClusterLifecyclePolicy {
    /// The policy as the engine decides with it: the same metadata (no
    /// namespace: `LifecyclePolicy::id` is then a cluster policy's), the
    /// namespaced spec, the status it shares with a namespaced policy.
    pub fn view(&self) -> LifecyclePolicy {
        let mut metadata = self.metadata.clone();
        metadata.namespace = None;
        metadata.managed_fields = None;
        LifecyclePolicy {
            metadata,
            spec: self.spec.policy.clone(),
            status: self.status.as_ref().map(|s| s.policy.clone()),
        }
    }
}

/// Whether a namespace's own policy may win a slot over a cluster policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Override {
    /// The namespace's own policy wins (the team knows its app).
    #[default]
    Allow,
    /// This policy wins; the namespace's own one reports Conflict.
    Forbid,
}

/// Observed state of a ClusterLifecyclePolicy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterLifecyclePolicyStatus {
    /// What a LifecyclePolicy reports, summed over the namespaces.
    #[serde(flatten)]
    pub policy: LifecyclePolicyStatus,
    #[serde(default)]
    pub namespaces: NamespaceCounts,
}

/// How far the policy reaches, by namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceCounts {
    /// Namespaces the policy acts in.
    pub matched: i32,
    /// Of those, namespaces where every matched workload carries its hooks.
    pub patched: i32,
    /// Protected namespaces the namespaceSelector takes but the policy
    /// leaves alone: list them in `spec.namespaces` to act there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub protected: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn the_engine_sees_a_cluster_policy_by_its_cluster_names() {
        use crate::api::identity::PolicyId;
        let p: ClusterLifecyclePolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "lifecycle-operator.io/v1alpha1", "kind": "ClusterLifecyclePolicy",
            "metadata": {"name": "drain", "uid": "u1", "generation": 2},
            "spec": {"namespaceSelector": {}, "override": "Forbid",
                     "selector": {"matchLabels": {"tier": "web"}}, "preStop": {"sleep": {"seconds": 5}}},
        }))
        .unwrap();
        assert_eq!(p.spec.override_, Override::Forbid);
        let view = p.view();
        assert_eq!(
            view.id(),
            PolicyId::Cluster {
                name: "drain".into()
            }
        );
        assert_eq!(view.id().owner(), "cluster_drain");
        assert_eq!(view.metadata.generation, Some(2));
        assert_eq!(view.spec, p.spec.policy);
    }

    /// The namespaced spec's fields and CEL rules come along through
    /// `flatten`; the namespaceSelector is required; the kind is cluster-scoped.
    #[test]
    fn the_cluster_crd_keeps_every_rule_of_the_namespaced_spec() {
        let crd = serde_json::to_value(ClusterLifecyclePolicy::crd()).unwrap();
        assert_eq!(crd["spec"]["scope"], "Cluster");
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "clcp");
        let version = &crd["spec"]["versions"][0];
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let required: Vec<&str> = spec["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(required, ["namespaceSelector", "selector"]);
        assert_eq!(
            spec["x-kubernetes-validations"][0]["rule"],
            "has(self.postStart) || has(self.preStop)"
        );
        assert!(spec["properties"]["selector"]["x-kubernetes-validations"].is_array());
        assert_eq!(
            spec["properties"]["override"]["enum"],
            serde_json::json!(["Allow", "Forbid"])
        );
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert!(columns.contains(&"Namespaces"), "{columns:?}");
    }
}
