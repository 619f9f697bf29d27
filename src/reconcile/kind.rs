//! What differs between the two kinds of policy for the reconciler: where
//! the object and its status live, and how far it reaches. Everything else
//! (deciding, writing, proof) sees both as a `LifecyclePolicy`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::cluster::{ClusterLifecyclePolicy, NamespaceCounts};
use crate::api::identity::PolicyId;
use crate::api::types::LifecyclePolicy;
use crate::apply::namespaces::Selection;
use crate::apply::policies::Policies;

use super::status::WorkloadResult;
use super::triggers;

/// A kind of policy the controller reconciles.
pub trait PolicyKind:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize + Send + Sync + 'static
{
    /// The API its objects (and finalizer) are written through.
    fn api(client: &Client, id: &PolicyId) -> Api<Self>;
    /// The policy as the engine decides with it.
    fn view(&self) -> Cow<'_, LifecyclePolicy>;
    /// How far it reaches, as the caches have it now.
    fn reach(&self, policies: &Policies) -> Reach;
    /// The policies a change to its spec can change the decisions of.
    fn neighbours(&self, policies: &Policies) -> Vec<PolicyId>;
}

/// Where a policy acts.
pub enum Reach {
    /// In its own namespace.
    Namespace,
    /// In the namespaces its namespaceSelector takes (a cluster policy).
    Namespaces {
        selection: Selection,
        previous: Option<NamespaceCounts>,
    },
}

impl PolicyKind for LifecyclePolicy {
    fn api(client: &Client, id: &PolicyId) -> Api<Self> {
        match id {
            PolicyId::Namespaced { namespace, .. } => Api::namespaced(client.clone(), namespace),
            PolicyId::Cluster { .. } => Api::all(client.clone()),
        }
    }

    fn view(&self) -> Cow<'_, LifecyclePolicy> {
        Cow::Borrowed(self)
    }

    fn reach(&self, _: &Policies) -> Reach {
        Reach::Namespace
    }

    fn neighbours(&self, policies: &Policies) -> Vec<PolicyId> {
        triggers::around_namespaced(policies, self)
    }
}

impl PolicyKind for ClusterLifecyclePolicy {
    fn api(client: &Client, _: &PolicyId) -> Api<Self> {
        Api::all(client.clone())
    }

    fn view(&self) -> Cow<'_, LifecyclePolicy> {
        Cow::Owned(ClusterLifecyclePolicy::view(self))
    }

    fn reach(&self, policies: &Policies) -> Reach {
        Reach::Namespaces {
            selection: policies
                .cluster
                .as_ref()
                .map(|side| side.namespaces_of(self))
                .unwrap_or_default(),
            previous: self.status.as_ref().map(|s| s.namespaces.clone()),
        }
    }

    fn neighbours(&self, policies: &Policies) -> Vec<PolicyId> {
        triggers::around_cluster(policies, self)
    }
}

/// Patches a policy's status through its own kind's API; `status` is the
/// whole of what goes under `status`.
pub async fn patch_status<P: Serialize + Debug>(
    client: &Client,
    policy: &LifecyclePolicy,
    params: &PatchParams,
    patch: &Patch<P>,
) -> kube::Result<()> {
    let id = policy.id();
    match &id {
        PolicyId::Namespaced { .. } => {
            LifecyclePolicy::api(client, &id)
                .patch_status(id.name(), params, patch)
                .await?;
        }
        PolicyId::Cluster { .. } => {
            ClusterLifecyclePolicy::api(client, &id)
                .patch_status(id.name(), params, patch)
                .await?;
        }
    }
    Ok(())
}

/// The server-side-apply body of a status.
pub fn status_body(policy: &LifecyclePolicy, status: serde_json::Value) -> serde_json::Value {
    let kind = match policy.id() {
        PolicyId::Namespaced { .. } => LifecyclePolicy::kind(&()),
        PolicyId::Cluster { .. } => ClusterLifecyclePolicy::kind(&()),
    };
    serde_json::json!({
        "apiVersion": LifecyclePolicy::api_version(&()),
        "kind": kind,
        "status": status,
    })
}

/// The namespaces a cluster policy acts in, and of those the ones where
/// every matched workload carries its hooks (one without a matched
/// workload has nothing missing).
pub fn namespace_counts(selection: &Selection, results: &[WorkloadResult]) -> NamespaceCounts {
    let mut missing: BTreeMap<&str, bool> = BTreeMap::new();
    for r in results.iter().filter(|r| r.decision.matched) {
        let ns = r.decision.key.namespace.as_deref().unwrap_or_default();
        *missing.entry(ns).or_default() |= !r.patched();
    }
    let selected = &selection.selected;
    let patched = selected
        .iter()
        .filter(|ns| !missing.get(ns.as_str()).copied().unwrap_or(false))
        .count();
    NamespaceCounts {
        matched: count(selected.len()),
        patched: count(patched),
        protected: selection.protected.iter().cloned().collect(),
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
