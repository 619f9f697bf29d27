//! What reconciles which policy, besides a change to the policy itself:
//! each change in the caches is mapped to the policies whose decisions it
//! can change, named by `PolicyId` (both kinds), for the router in `run`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use futures::channel::mpsc::UnboundedSender;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::reflector::Store;
use kube::runtime::watcher::{self, Event};
use kube::{Resource, ResourceExt};

use crate::api::cluster::ClusterLifecyclePolicy;
use crate::api::identity::PolicyId;
use crate::api::types::LifecyclePolicy;
use crate::apply::policies::Policies;
use crate::apply::workload::Workload;

use super::Context;
use super::kind::PolicyKind;

/// Feeds `dirty` until the streams end. (Spec changes are named by
/// [`spec_changes`], on the streams that fill the policy caches.)
pub async fn run(
    ctx: Arc<Context>,
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
    // A namespace's labels decide which cluster policies act there.
    let namespaces = namespace_changes.for_each(|_| send(cluster_policies(policies)));
    tokio::join!(workloads, namespaces);
}

/// Any policy's spec change can change who wins a contested hook where it
/// acts, so it re-triggers the policies there (`PolicyKind::neighbours`). Read off the
/// events of the watch that fills the policy's cache (`cache`), each change
/// once the cache has it: a neighbour reconciled on a watch of its own could
/// see the change before the cache did, decide on the old spec and not look
/// again until the resync (a cluster policy set to `override: Forbid` then
/// waited minutes for the team's policy to hand its slot over). A relist's
/// objects reach the cache together at its end, so their changes wait for it.
pub fn spec_changes<K, S>(
    watch: S,
    cache: Store<K>,
    policies: Policies,
    dirty: UnboundedSender<PolicyId>,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: PolicyKind,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send,
{
    changes(watch, cache, move |k: &K| k.neighbours(&policies), dirty)
}

/// [`spec_changes`], with who to wake given (a test watches the cache).
fn changes<K, S>(
    watch: S,
    cache: Store<K>,
    neighbours: impl Fn(&K) -> Vec<PolicyId> + Send,
    dirty: UnboundedSender<PolicyId>,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: PolicyKind,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send,
{
    let mut seen = Generations::default();
    // Changed in a relist: named at its end, when the cache has them.
    let mut relisted: Vec<K> = Vec::new();
    watch.inspect(move |r| {
        let now = match r {
            Ok(Event::Apply(k)) if seen.changed(k, &cache) => vec![k.clone()],
            Ok(Event::InitApply(k)) if seen.changed(k, &cache) => {
                relisted.push(k.clone());
                Vec::new()
            }
            Ok(Event::InitDone) => std::mem::take(&mut relisted),
            _ => Vec::new(),
        };
        for id in now.iter().flat_map(&neighbours) {
            let _ = dirty.unbounded_send(id);
        }
    })
}

/// The generation last seen of each policy, by uid.
#[derive(Default)]
struct Generations(HashMap<String, Option<i64>>);

impl Generations {
    /// The object is new here, or its spec changed since it was last seen.
    /// Entries of deleted policies go once they outnumber the live ones.
    fn changed<K: Resource<DynamicType = ()> + Clone>(&mut self, k: &K, cache: &Store<K>) -> bool {
        let Some(uid) = k.meta().uid.clone() else {
            return true;
        };
        let generation = k.meta().generation;
        let changed = self.0.insert(uid, generation) != Some(generation);
        if self.0.len() > 2 * cache.len() + 16 {
            let live: BTreeSet<String> = cache
                .state()
                .iter()
                .filter_map(|o| o.meta().uid.clone())
                .collect();
            self.0.retain(|uid, _| live.contains(uid));
        }
        changed
    }
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
pub(super) fn around_namespaced(policies: &Policies, p: &LifecyclePolicy) -> Vec<PolicyId> {
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
pub(super) fn around_cluster(policies: &Policies, c: &ClusterLifecyclePolicy) -> Vec<PolicyId> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;
    use kube::runtime::reflector;
    use kube::runtime::{WatchStreamExt, reflector::ObjectRef};
    use serde_json::json;
    use std::sync::Mutex;

    fn policy(uid: &str, generation: i64, status_note: &str) -> LifecyclePolicy {
        serde_json::from_value(json!({
            "apiVersion": "lifecycle-operator.io/v1alpha1", "kind": "LifecyclePolicy",
            "metadata": {"name": uid, "namespace": "ns", "uid": uid, "generation": generation,
                         "resourceVersion": format!("{generation}{status_note}")},
            "spec": {"selector": {"matchLabels": {"app": "web"}}},
        }))
        .unwrap()
    }

    /// Feeds watch events through the cache's reflector and `spec_changes`;
    /// returns, per trigger, the generation the cache held when it fired,
    /// and what was sent.
    async fn triggered(events: Vec<Event<LifecyclePolicy>>) -> (Vec<Option<i64>>, Vec<PolicyId>) {
        let (cache, writer) = reflector::store();
        let (dirty, sent) = futures::channel::mpsc::unbounded();
        let fired = Arc::new(Mutex::new(Vec::new()));
        let watch = stream::iter(events.into_iter().map(Ok)).reflect(writer);
        let seen = cache.clone();
        let log = fired.clone();
        let neighbours = move |p: &LifecyclePolicy| {
            let held = seen
                .get(&ObjectRef::from_obj(p))
                .and_then(|c| c.metadata.generation);
            log.lock().unwrap().push(held);
            vec![PolicyId::Cluster {
                name: format!("around-{}", p.name_any()),
            }]
        };
        changes(watch, cache, neighbours, dirty)
            .for_each(|_| async {})
            .await;
        let fired = fired.lock().unwrap().clone();
        (fired, sent.collect().await)
    }

    #[tokio::test]
    async fn a_spec_change_triggers_the_neighbours_once_the_cache_has_it() {
        let (fired, sent) = triggered(vec![
            Event::Init,
            Event::InitApply(policy("a", 1, "")),
            Event::InitDone,
            // a status write: same generation, nobody else to wake
            Event::Apply(policy("a", 1, "-status")),
            Event::Apply(policy("a", 2, "")),
            Event::Apply(policy("b", 1, "")),
        ])
        .await;
        // first sight of a, a's new spec, first sight of b; each fired with
        // the cache already holding that generation
        assert_eq!(fired, [Some(1), Some(2), Some(1)]);
        let names: Vec<String> = sent.iter().map(PolicyId::owner).collect();
        assert_eq!(
            names,
            ["cluster_around-a", "cluster_around-a", "cluster_around-b"]
        );
    }

    #[tokio::test]
    async fn a_relist_triggers_what_changed_once_the_cache_has_it() {
        let (fired, _) = triggered(vec![
            Event::Init,
            Event::InitApply(policy("a", 3, "")),
            Event::InitApply(policy("b", 1, "")),
            Event::InitDone,
            // the watch broke; a changed while it was down, b did not
            Event::Init,
            Event::InitApply(policy("a", 4, "")),
            Event::InitApply(policy("b", 1, "")),
            Event::InitDone,
        ])
        .await;
        assert_eq!(fired, [Some(3), Some(1), Some(4)]);
    }

    #[test]
    fn deleted_policies_are_forgotten_once_they_outnumber_the_live_ones() {
        let (cache, mut writer) = reflector::store::<LifecyclePolicy>();
        let live = policy("live", 1, "");
        writer.apply_watcher_event(&Event::Apply(live.clone()));
        let mut seen = Generations::default();
        for i in 0..100 {
            assert!(seen.changed(&policy(&format!("gone-{i}"), 1, ""), &cache));
            assert!(seen.0.len() <= 2 * cache.len() + 17, "{}", seen.0.len());
        }
        assert!(seen.changed(&live, &cache));
        assert!(!seen.changed(&live, &cache));
    }
}
