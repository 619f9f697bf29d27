//! The policy reconciler: the I/O around `decide` and `execute`. Reads workloads and
//! policies from watch caches, writes only what differs, then the status.

pub mod error;
pub mod kind;
pub mod pipeline;
pub mod status;
mod triggers;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::core::Selector;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use k8s_openapi::api::core::v1::Namespace;

use crate::api::cluster::{ClusterLifecyclePolicy, ClusterLifecyclePolicyStatus};
use crate::api::identity::PolicyId;
use crate::api::names::{self, ConditionType, reason};
use crate::api::types::{
    LifecyclePolicy, LifecyclePolicyStatus, Mode, RolloutStatus, Verification, WorkloadKind,
};
use crate::apply::decide;
use crate::apply::execute::Executor;
use crate::apply::ledger::field_manager;
use crate::apply::neighbours::{Neighbourhoods, Neighbours};
use crate::apply::policies::{ClusterSide, Policies};
use crate::apply::rollout;
use crate::apply::workload::{self, Workload, WorkloadKey};
use crate::runtime::liveness::Liveness;
use crate::runtime::metrics::Metrics;
use crate::runtime::watches;
use crate::text::{self, explain};
use crate::verify::observer::{LogStreams, Observer};
pub use error::Error;
use error::Retry;
use kind::{PolicyKind, Reach};
use pipeline::Snapshot;
use status::{StatusInput, WorkloadResult};

pub const FINALIZER: &str = "lifecycle-operator.io/cleanup";
/// Re-check every policy this often even when nothing changes; costs reads only.
pub const RESYNC: Duration = Duration::from_secs(300);
/// A reconcile that takes longer is cut off and retried with backoff: a stuck
/// call never wedges a policy.
pub const RECONCILE_TIMEOUT: Duration = Duration::from_secs(60);
/// Re-check this soon while something waits (rollout slots, another policy).
const PENDING_RETRY: Duration = Duration::from_secs(5);

pub struct Context {
    pub client: Client,
    pub policies: Policies,
    pub workloads: Workloads,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub observer: Arc<Observer>,
    pub liveness: Arc<Liveness>,
    /// Each namespace's policies, indexed for contention once per change.
    pub neighbours: Neighbours,
    /// Consecutive failures per policy, for backoff.
    failures: Mutex<HashMap<PolicyId, u32>>,
    /// The rollout status last written, by policy uid: the policy cache can
    /// lag this process's own status writes, and the rollout must never step
    /// from an older record of itself (a halt, a wave) than it wrote.
    written_rollouts: Mutex<HashMap<String, RolloutStatus>>,
}

impl Context {
    pub fn new(
        client: Client,
        policies: Policies,
        workloads: Workloads,
        metrics: Arc<Metrics>,
        observer: Arc<Observer>,
        liveness: Arc<Liveness>,
        instance: String,
    ) -> Self {
        Context {
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: "lifecycle-operator".into(),
                    instance: Some(instance),
                },
            ),
            client,
            policies,
            workloads,
            metrics,
            observer,
            liveness,
            neighbours: Neighbours::default(),
            failures: Mutex::default(),
            written_rollouts: Mutex::default(),
        }
    }
}

/// Runs both controllers (one per kind of policy) until `shutdown`
/// resolves, then lets the reconciles in flight finish (the caller bounds
/// how long it waits for that).
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    liveness: Arc<Liveness>,
    instance: String,
    log_streams: LogStreams,
    operator_namespace: String,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (workloads, workload_events) = workload_caches(&client);
    let (namespaced, namespaced_watch) = reflected::<LifecyclePolicy>(&client, "policy");
    let (cluster, cluster_watch) = reflected::<ClusterLifecyclePolicy>(&client, "cluster policy");
    let (namespaces, namespace_changes) = namespace_cache(&client);
    let policies = Policies {
        namespaced: namespaced.clone(),
        cluster: Some(ClusterSide {
            policies: cluster.clone(),
            namespaces,
            operator_namespace,
        }),
    };
    let observer = Observer::new(
        client.clone(),
        policies.clone(),
        metrics.clone(),
        log_streams,
    );
    let ctx = Arc::new(Context::new(
        client.clone(),
        policies,
        workloads,
        metrics,
        observer.clone(),
        liveness.clone(),
        instance,
    ));
    // Every trigger names the policies it concerns by PolicyId; the router
    // hands each to its kind's controller.
    let (dirty, triggered) = futures::channel::mpsc::unbounded::<PolicyId>();
    let (to_namespaced, namespaced_rx) = futures::channel::mpsc::unbounded();
    let (to_cluster, cluster_rx) = futures::channel::mpsc::unbounded();
    let route = triggered.for_each(move |id| {
        // A send fails only once its controller has stopped.
        match id {
            PolicyId::Namespaced { namespace, name } => {
                let r = ObjectRef::<LifecyclePolicy>::new(&name).within(&namespace);
                let _ = to_namespaced.unbounded_send(r);
            }
            PolicyId::Cluster { name } => {
                let _ = to_cluster.unbounded_send(ObjectRef::<ClusterLifecyclePolicy>::new(&name));
            }
        }
        async {}
    });
    let (all, tx) = (&ctx.policies, &dirty);
    let namespaced_watch = triggers::spec_changes(
        namespaced_watch,
        namespaced.clone(),
        all.clone(),
        tx.clone(),
    )
    .applied_objects();
    let cluster_watch =
        triggers::spec_changes(cluster_watch, cluster.clone(), all.clone(), tx.clone())
            .applied_objects();
    let triggers = triggers::run(
        ctx.clone(),
        workload_events,
        namespace_changes,
        dirty.clone(),
    );
    let background = AbortOnDrop(tokio::spawn(async move {
        // The observer names the policies whose hook outcomes changed.
        tokio::join!(observer.run(dirty), triggers, route);
    }));
    let shutdown = shutdown.shared();
    let namespaced = Controller::for_stream(namespaced_watch, namespaced)
        .reconcile_on(namespaced_rx)
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(log_result);
    let cluster = Controller::for_stream(cluster_watch, cluster)
        .reconcile_on(cluster_rx)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(log_result);
    tokio::join!(namespaced, cluster);
    drop(background);
}

async fn log_result<T, E: std::fmt::Display>(res: Result<T, E>) {
    // error_policy has already logged reconcile errors.
    if let Err(e) = res {
        debug!(error = %e, "controller");
    }
}

/// The policy caches of both kinds and the namespaces', filled by watches
/// of their own, and the future that drives them: what the admission
/// webhook reads on every replica, the leader or not (the controller's own
/// caches live only while it leads). Policies and trimmed namespaces are
/// few and small; the workload caches are not duplicated.
pub fn policy_caches(
    client: &Client,
    operator_namespace: String,
) -> (Policies, impl Future<Output = ()> + Send + 'static) {
    let (namespaced, a) = reflected::<LifecyclePolicy>(client, "webhook's policy");
    let (cluster, b) = reflected::<ClusterLifecyclePolicy>(client, "webhook's cluster policy");
    let (namespaces, c) = namespace_cache(client);
    let policies = Policies {
        namespaced,
        cluster: Some(ClusterSide {
            policies: cluster,
            namespaces,
            operator_namespace,
        }),
    };
    let drive = async move {
        tokio::join!(
            a.for_each(|_| async {}),
            b.for_each(|_| async {}),
            c.for_each(|_| async {})
        );
    };
    (policies, drive)
}

/// A kind's cache, and the events of the watch that fills it, each yielded
/// once the cache has it (the controller runs on their objects).
fn reflected<K: PolicyKind>(
    client: &Client,
    what: &'static str,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) {
    let (store, writer) = reflector::store();
    let watch = watches::errors_logged(
        watcher(
            Api::<K>::all(client.clone()),
            watcher::Config::default().any_semantic(),
        )
        .backoff(watches::backoff())
        .reflect(writer),
        what,
    );
    (store, watch)
}

/// The namespaces' labels (all a cluster policy selects by), and their
/// label changes.
fn namespace_cache(
    client: &Client,
) -> (
    Store<Namespace>,
    impl futures::Stream<Item = Result<Namespace, watcher::Error>> + Send + 'static,
) {
    let (store, writer) = reflector::store();
    let watch = watches::errors_logged(
        watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default().any_semantic(),
        )
        .backoff(watches::backoff())
        .modify(|n| {
            n.managed_fields_mut().clear();
            n.spec = None;
            n.status = None;
        })
        .reflect(writer)
        .touched_objects()
        .predicate_filter(predicates::labels, Default::default()),
        "namespace",
    );
    (store, watch)
}

/// One cache per workload kind, each fed by a watch of its own; and the
/// stream of their changes.
fn workload_caches(
    client: &Client,
) -> (
    Workloads,
    impl futures::Stream<Item = Result<Workload, watcher::Error>> + Send + 'static,
) {
    let mut stores = Vec::new();
    let mut streams = Vec::new();
    for kind in WorkloadKind::ALL {
        let writer = reflector::store::Writer::new(kind);
        stores.push((kind, writer.as_reader()));
        streams.push(
            watcher(
                Api::<Workload>::all_with(client.clone(), &kind),
                watcher::Config::default().any_semantic(),
            )
            .backoff(watches::backoff())
            .modify(move |w| {
                w.kind = kind;
                workload::trim(w);
            })
            .reflect(writer)
            .touched_objects()
            .boxed(),
        );
    }
    let events = watches::errors_logged(futures::stream::select_all(streams), "workload");
    (Workloads(stores), events)
}

/// Aborts the task when dropped, so that a cancelled `run` leaves nothing behind.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) async fn reconcile<K: PolicyKind>(
    object: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let _running = ctx.liveness.start();
    ctx.liveness.set_policies(ctx.policies.count());
    let id = object.view().id();
    let api = K::api(&ctx.client, &id);
    let work = async {
        // Bounded too: the workload caches fill from watches of their own.
        ctx.workloads.wait_ready().await;
        finalizer(&api, FINALIZER, object.clone(), |event| async {
            match event {
                Finalizer::Apply(p) => apply(&p.view(), p.reach(&ctx.policies), &ctx).await,
                Finalizer::Cleanup(p) => cleanup(&p.view(), &ctx).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)))
    };
    let result = tokio::time::timeout(RECONCILE_TIMEOUT, work)
        .await
        .unwrap_or(Err(Error::Timeout));
    let label = if result.is_ok() { "ok" } else { "error" };
    debug!(policy = %id, elapsed = ?started.elapsed(), result = label, "reconciled");
    ctx.metrics
        .observe_reconcile(&K::kind(&()), label, started.elapsed());
    if result.is_ok() {
        ctx.failures.lock().unwrap().remove(&id);
    }
    result
}

/// Exponential backoff per policy, 5 s doubling to 5 min: errors never hot-loop.
pub(crate) fn error_policy<K: PolicyKind>(
    object: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.count_reconcile_error(error.kind());
    let id = object.view().id();
    let base = match error.retry() {
        Retry::Pending(n) => {
            info!(policy = %id, workloads = n, "waiting to hand hooks back");
            return Action::requeue(PENDING_RETRY);
        }
        Retry::StaleRead => {
            debug!(policy = %id, error = %error, "stale read, retrying");
            return Action::requeue(Duration::from_secs(1));
        }
        Retry::Backoff(base) => base,
    };
    let mut failures = ctx.failures.lock().unwrap();
    let n = failures.entry(id.clone()).or_insert(0);
    *n = n.saturating_add(1);
    let delay = Duration::from_secs(base * (1u64 << (*n - 1).min(6))).min(RESYNC);
    warn!(policy = %id, error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn apply(policy: &LifecyclePolicy, reach: Reach, ctx: &Context) -> Result<Action, Error> {
    // A spec the operator cannot act on matches nothing: what the policy
    // holds is handed back, as for a workload leaving its selector.
    let (selector, invalid) = pipeline::selection(policy);
    let workloads = match &reach {
        Reach::Namespace => ctx.workloads.in_namespace(policy.namespace()),
        Reach::Namespaces { selection, .. } => ctx
            .workloads
            .reached(&policy.id().owner(), &selection.selected),
    };
    let Evaluated {
        results,
        stale,
        rollout,
    } = evaluate(policy, &selector, invalid.is_none(), workloads, ctx).await?;
    let (post_start, pre_stop, drain) = if policy.spec.verification == Verification::Disabled {
        (None, None, None)
    } else {
        let (post, pre) = pipeline::readable(policy, ctx.observer.reports(policy));
        (post, pre, ctx.observer.drain(policy))
    };
    let new = status::build(&StatusInput {
        generation: policy.metadata.generation,
        mode: policy.spec.mode,
        results: &results,
        invalid,
        post_start,
        pre_stop,
        rollout: rollout.clone(),
        previous: policy.status.as_ref(),
        now: Timestamp::now(),
        created: policy.metadata.creation_timestamp.as_ref().map(|t| t.0),
        drain,
    });
    conflict_event(policy, &new, ctx).await;
    let (changed, body) = match &reach {
        Reach::Namespace => (policy.status.as_ref() != Some(&new), json!(new)),
        Reach::Namespaces {
            selection,
            previous,
        } => {
            let counts = kind::namespace_counts(selection, &results);
            let changed =
                policy.status.as_ref() != Some(&new) || previous.as_ref() != Some(&counts);
            let status = ClusterLifecyclePolicyStatus {
                policy: new.clone(),
                namespaces: counts,
            };
            (changed, json!(status))
        }
    };
    if changed {
        kind::patch_status(
            &ctx.client,
            policy,
            &PatchParams::apply("lifecycle-operator").force(),
            &Patch::Apply(kind::status_body(policy, body)),
        )
        .await
        .map_err(|e| Error::StatusRefused(explain::api_error(&e)))?;
    }
    if let (Some(uid), Some(r)) = (&policy.metadata.uid, &new.rollout) {
        ctx.written_rollouts
            .lock()
            .unwrap()
            .insert(uid.clone(), r.clone());
    }
    pipeline::after_apply(&results, stale, rollout.as_ref())
}

async fn cleanup(policy: &LifecyclePolicy, ctx: &Context) -> Result<Action, Error> {
    // Nothing matches a policy being deleted: every slot it holds is released.
    // The last look before the finalizer goes must not miss a hook: a cached
    // workload may not show yet what this policy (or another replica of the
    // operator) applied a moment ago, so read them afresh.
    let workloads = fresh_workloads(policy, ctx).await?;
    let Evaluated { results, stale, .. } =
        evaluate(policy, &Selector::default(), false, workloads, ctx).await?;
    pipeline::after_cleanup(&results, stale)?;
    if let Some(uid) = &policy.metadata.uid {
        ctx.written_rollouts.lock().unwrap().remove(uid);
    }
    info!(policy = %policy.id(), "released every hook; removing finalizer");
    Ok(Action::await_change())
}

/// The workload caches, one per kind.
#[derive(Clone)]
pub struct Workloads(pub Vec<(WorkloadKind, Store<Workload>)>);

impl Workloads {
    /// Every cached workload of the namespace, of every kind.
    fn in_namespace(&self, ns: Option<String>) -> Vec<Arc<Workload>> {
        self.0
            .iter()
            .flat_map(|(_, store)| store.state())
            .filter(|w| w.namespace() == ns)
            .collect()
    }

    /// Every cached workload a cluster policy may decide on: those of the
    /// namespaces it acts in, and elsewhere those its owner name touched
    /// (slots to hand back).
    fn reached(&self, owner: &str, namespaces: &BTreeSet<String>) -> Vec<Arc<Workload>> {
        let manager = field_manager(owner);
        self.0
            .iter()
            .flat_map(|(_, store)| store.state())
            .filter(|w| {
                w.metadata
                    .namespace
                    .as_ref()
                    .is_some_and(|ns| namespaces.contains(ns))
                    || decide::touched(w, owner, &manager)
            })
            .collect()
    }

    async fn wait_ready(&self) {
        for (_, store) in &self.0 {
            crate::runtime::ready::wait_ready(store).await;
        }
    }
}

/// The policy's namespace's workloads of every kind (a cluster policy's:
/// all), read from the API server (a
/// quorum read), not the caches. Every kind: the policy may hold slots on a
/// kind it no longer selects.
async fn fresh_workloads(
    policy: &LifecyclePolicy,
    ctx: &Context,
) -> Result<Vec<Arc<Workload>>, Error> {
    let mut out = Vec::new();
    for (kind, _) in &ctx.workloads.0 {
        // A cluster policy's, from every namespace.
        let api: Api<Workload> = match policy.namespace() {
            Some(ns) => Api::namespaced_with(ctx.client.clone(), &ns, kind),
            None => Api::all_with(ctx.client.clone(), kind),
        };
        let mut params = kube::api::ListParams::default().limit(500);
        loop {
            let page = api.list(&params).await?;
            out.extend(page.items.into_iter().map(|mut w| {
                w.kind = *kind;
                workload::trim(&mut w);
                Arc::new(w)
            }));
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => break,
            }
        }
    }
    Ok(out)
}

/// Gathers what the policy decides from, decides (`pipeline`), records a
/// rollout step that must come first, then (in Enforce mode) carries the
/// writes out.
async fn evaluate(
    policy: &LifecyclePolicy,
    selector: &Selector,
    active: bool,
    workloads: Vec<Arc<Workload>>,
    ctx: &Context,
) -> Result<Evaluated, Error> {
    let neighbours = match policy.id() {
        PolicyId::Namespaced { namespace, .. } => {
            Neighbourhoods::One(ctx.neighbours.of(&ctx.policies, &namespace))
        }
        PolicyId::Cluster { .. } => ctx.neighbours.around(&ctx.policies, &workloads),
    };
    let rolls_out = active && policy.spec.mode == Mode::Enforce;
    let health = if rolls_out {
        ctx.observer.workload_health(policy)
    } else {
        HashMap::new()
    };
    let previous = previous_rollout(policy, ctx);
    let decided = pipeline::decide(&Snapshot {
        policy,
        selector,
        active,
        neighbours: &neighbours,
        workloads,
        health: &health,
        previous: previous.as_ref(),
        now: Timestamp::now(),
    });
    if let Some(step) = &decided.step {
        if decided.records_first {
            record_rollout(policy, &step.status, ctx).await?;
        }
        rollout_events(policy, step, ctx).await;
    }
    let executor = Executor {
        client: &ctx.client,
        recorder: &ctx.recorder,
        metrics: &ctx.metrics,
    };
    let written = executor.run(policy, &decided.decisions).await;
    let (results, stale) = pipeline::results(decided.decisions, written);
    Ok(Evaluated {
        results,
        stale,
        rollout: decided.step.map(|s| s.status),
    })
}

/// The rollout status this process last wrote for the policy's generation,
/// else the policy's own (the cache can lag our writes).
fn previous_rollout(policy: &LifecyclePolicy, ctx: &Context) -> Option<RolloutStatus> {
    let generation = policy.metadata.generation.unwrap_or_default();
    let written = policy
        .metadata
        .uid
        .as_ref()
        .and_then(|uid| ctx.written_rollouts.lock().unwrap().get(uid).cloned());
    written
        .or_else(|| policy.status.as_ref().and_then(|s| s.rollout.clone()))
        .filter(|r| r.generation == generation)
}

/// Writes the rollout status alone (a JSON patch of `status.rollout`, the
/// rest of the status untouched); refused, the reconcile stops here.
async fn record_rollout(
    policy: &LifecyclePolicy,
    rollout: &RolloutStatus,
    ctx: &Context,
) -> Result<(), Error> {
    let op = if policy.status.is_some() {
        json!({"op": "add", "path": "/status/rollout", "value": rollout})
    } else {
        json!({"op": "add", "path": "/status", "value": {"rollout": rollout}})
    };
    let patch: json_patch::Patch = serde_json::from_value(json!([op])).expect("a JSON patch");
    let params = PatchParams {
        field_manager: Some("lifecycle-operator".into()),
        ..Default::default()
    };
    kind::patch_status(&ctx.client, policy, &params, &Patch::Json::<()>(patch))
        .await
        .map_err(|e| Error::RolloutNotRecorded(explain::api_error(&e)))?;
    if let Some(uid) = &policy.metadata.uid {
        ctx.written_rollouts
            .lock()
            .unwrap()
            .insert(uid.clone(), rollout.clone());
    }
    Ok(())
}

/// A Warning event when the policy starts losing slots, or loses others:
/// the loser says who won in an event too, once per change (the status
/// keeps saying it).
async fn conflict_event(policy: &LifecyclePolicy, new: &LifecyclePolicyStatus, ctx: &Context) {
    let conflict = |s: &LifecyclePolicyStatus| {
        s.conditions
            .iter()
            .find(|c| {
                c.type_ == ConditionType::Conflict.as_str() && c.status == names::status::TRUE
            })
            .map(|c| c.message.clone())
    };
    let Some(message) = conflict(new) else {
        return;
    };
    if policy.status.as_ref().and_then(conflict).as_ref() == Some(&message) {
        return;
    }
    let executor = Executor {
        client: &ctx.client,
        recorder: &ctx.recorder,
        metrics: &ctx.metrics,
    };
    executor
        .note(policy, None, EventType::Warning, reason::CONFLICT, message)
        .await;
}

/// What a reconcile saw and did.
struct Evaluated {
    results: Vec<WorkloadResult>,
    stale: usize,
    rollout: Option<RolloutStatus>,
}

/// An event when a wave (the canary first) starts, and when the rollout halts.
async fn rollout_events(policy: &LifecyclePolicy, step: &rollout::Step, ctx: &Context) {
    let executor = Executor {
        client: &ctx.client,
        recorder: &ctx.recorder,
        metrics: &ctx.metrics,
    };
    let previous = policy.status.as_ref().and_then(|s| s.rollout.as_ref());
    let was_halted =
        previous.is_some_and(|p| p.generation == step.status.generation && p.halted.is_some());
    if let Some(h) = &step.status.halted
        && !was_halted
    {
        let mut note = format!("{}: {} ({})", h.workload, h.message, h.reason);
        if !h.reverted.is_empty() {
            let reverted = text::list(&h.reverted, ", ", text::EVENT_NOTE / 4);
            note.push_str(&format!("; reverting {reverted}"));
        }
        text::bound(&mut note, text::EVENT_NOTE);
        warn!(policy = %policy.name_any(), %note, "rollout halted");
        // The halt names its workload as written in the status.
        let related = h.workload.parse().ok().map(|k| workload_ref(policy, &k));
        executor
            .note(
                policy,
                related,
                EventType::Warning,
                reason::ROLLOUT_HALTED,
                note,
            )
            .await;
    } else if step.new_wave {
        let what = if step.status.waves == 1 {
            "canary".to_string()
        } else {
            format!("wave {}", step.status.waves)
        };
        let names: Vec<String> = step.allow.iter().map(WorkloadKey::to_string).collect();
        let note = format!(
            "{what}: {}",
            text::list(&names, ", ", text::EVENT_NOTE - 20)
        );
        // Each wave names its first workload as `related`, so that kube's
        // recorder does not fold it into the previous wave's event.
        let related = step.allow.iter().next().map(|k| workload_ref(policy, k));
        executor
            .note(
                policy,
                related,
                EventType::Normal,
                reason::ROLLOUT_WAVE,
                note,
            )
            .await;
    }
}

/// The object reference of a workload: in the key's namespace, else the policy's.
fn workload_ref(
    policy: &LifecyclePolicy,
    key: &WorkloadKey,
) -> k8s_openapi::api::core::v1::ObjectReference {
    let namespace = key.namespace.clone().or_else(|| policy.namespace());
    crate::apply::execute::reference(key.kind, &key.name, namespace)
}

#[cfg(test)]
mod faults;
