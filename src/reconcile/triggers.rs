//! What reconciles which policy, besides a change to the policy itself:
//! each change in the caches is mapped to the policies whose decisions it
//! can change, named by `PolicyId` (both kinds), for the router in `run`.

use std::sync::Arc;

use futures::channel::mpsc::UnboundedSender;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, ResourceExt};

use crate::api::cluster::ClusterLifecyclePolicy;
use crate::api::identity::PolicyId;
use crate::api::types::LifecyclePolicy;
use crate::apply::policies::Policies;
use crate::apply::workload::Workload;
use crate::runtime::watches;

use super::Context;

/// Feeds `dirty` until the streams end.
pub async fn run(
    ctx: Arc<Context>,
    client: Client,
    workload_events: impl Stream<Item = Result<Workload, watcher::Error>> + Send,
    namespace_changes: impl Stream<Item = Result<Namespace, watcher::Error>> + Send,
    dirty: UnboundedSender<PolicyId>,
) {
    let send = |ids: Vec<PolicyId>| {
        for id in ids {
            let _ = dirty.unbounded_send(id);
        }
        async {}
    };
    let policies = &ctx.policies;
    // A workload event reconciles only the policies it concerns (see
    // `Neighbourhood::concerned`), found in its namespace's index.
    let workloads = workload_events.for_each(|w| {
        let ids = match w {
            Ok(w) => concerned(&ctx, &w),
            Err(_) => Vec::new(),
        };
        send(ids)
    });
    // Any policy's spec change can change who wins a contested hook where
    // it acts, so it re-triggers the policies there too.
    let namespaced = spec_changes::<LifecyclePolicy>(&client, "policy spec")
        .for_each(|p| send(around_namespaced(policies, &p)));
    let cluster = spec_changes::<ClusterLifecyclePolicy>(&client, "cluster policy spec")
        .for_each(|c| send(around_cluster(policies, &c)));
    // A namespace's labels decide which cluster policies act there.
    let namespaces = namespace_changes.for_each(|_| send(cluster_policies(policies)));
    tokio::join!(workloads, namespaced, cluster, namespaces);
}

fn spec_changes<K: super::kind::PolicyKind>(
    client: &Client,
    what: &'static str,
) -> impl Stream<Item = K> + Send {
    watches::errors_logged(
        watcher(
            Api::<K>::all(client.clone()),
            watcher::Config::default().any_semantic(),
        )
        .backoff(watches::backoff())
        .touched_objects()
        .predicate_filter(predicates::generation, Default::default()),
        what,
    )
    .filter_map(|r| async move { r.ok() })
}

fn concerned(ctx: &Context, w: &Workload) -> Vec<PolicyId> {
    let ns = w.namespace().unwrap_or_default();
    ctx.neighbours
        .of(&ctx.policies, &ns)
        .concerned(w)
        .into_iter()
        .map(|p| p.id())
        .collect()
}

/// A namespaced policy's neighbours: the other policies of its namespace,
/// and every cluster policy.
fn around_namespaced(policies: &Policies, p: &LifecyclePolicy) -> Vec<PolicyId> {
    let me = p.id();
    let mut out: Vec<PolicyId> = policies
        .namespaced
        .state()
        .iter()
        .filter(|o| o.namespace() == p.namespace())
        .map(|o| o.id())
        .filter(|id| *id != me)
        .collect();
    out.extend(cluster_policies(policies));
    out
}

/// A cluster policy's neighbours: the namespaced policies of every
/// namespace it acts in, and the other cluster policies. (Where it stops
/// acting, its releases change workloads, which trigger those there.)
fn around_cluster(policies: &Policies, c: &ClusterLifecyclePolicy) -> Vec<PolicyId> {
    let me = PolicyId::Cluster { name: c.name_any() };
    let Some(side) = &policies.cluster else {
        return Vec::new();
    };
    let reach = side.namespaces_of(c).selected;
    let mut out: Vec<PolicyId> = policies
        .namespaced
        .state()
        .iter()
        .filter(|p| {
            p.metadata
                .namespace
                .as_ref()
                .is_some_and(|n| reach.contains(n))
        })
        .map(|p| p.id())
        .collect();
    out.extend(
        cluster_policies(policies)
            .into_iter()
            .filter(|id| *id != me),
    );
    out
}

fn cluster_policies(policies: &Policies) -> Vec<PolicyId> {
    policies
        .cluster
        .iter()
        .flat_map(|side| side.policies.state())
        .map(|c| PolicyId::Cluster { name: c.name_any() })
        .collect()
}
