//! The policy reconciler: the I/O around `decide` and `execute`. Reads workloads and
//! policies from watch caches, writes only what differs, then the status.

pub mod error;
pub mod pipeline;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
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

use crate::api::identity::PolicyId;
use crate::api::names::reason;
use crate::api::types::{LifecyclePolicy, Mode, RolloutStatus, Verification, WorkloadKind};
use crate::apply::execute::Executor;
use crate::apply::neighbours::{Neighbourhoods, Neighbours};
use crate::apply::policies::Policies;
use crate::apply::rollout;
use crate::apply::workload::{self, Workload, WorkloadKey};
use crate::runtime::liveness::Liveness;
use crate::runtime::metrics::Metrics;
use crate::runtime::watches;
use crate::text::{self, explain};
use crate::verify::observer::{LogStreams, Observer};
pub use error::Error;
use error::Retry;
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
    failures: Mutex<HashMap<ObjectRef<LifecyclePolicy>, u32>>,
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

/// Runs the controller until `shutdown` resolves, then lets the reconciles in
/// flight finish (the caller bounds how long it waits for that).
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    liveness: Arc<Liveness>,
    instance: String,
    log_streams: LogStreams,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let policies = Api::<LifecyclePolicy>::all(client.clone());
    let (workloads, workload_events) = workload_caches(&client);
    // Any policy's spec change can change who wins a contested hook in its
    // namespace, so it re-triggers its neighbours too.
    let policy_spec_changes = watches::errors_logged(
        watcher(policies.clone(), watcher::Config::default().any_semantic())
            .backoff(watches::backoff())
            .touched_objects()
            .predicate_filter(predicates::generation, Default::default()),
        "policy spec",
    );
    // The policies' own watch, with the same backoff of its own (see `watches`).
    let (store, writer) = reflector::store();
    let policy_watch = watches::errors_logged(
        watcher(policies, watcher::Config::default().any_semantic())
            .backoff(watches::backoff())
            .reflect(writer)
            .applied_objects(),
        "policy",
    );
    let controller = Controller::for_stream(policy_watch, store.clone());
    let others = {
        let store = store.clone();
        move |p: LifecyclePolicy| others_in_namespace(&store, &p)
    };
    let policies = Policies::namespaced(store.clone());
    let observer = Observer::new(
        client.clone(),
        policies.clone(),
        metrics.clone(),
        log_streams,
    );
    let (observed_tx, observed_rx) = futures::channel::mpsc::unbounded();
    let ctx = Arc::new(Context::new(
        client,
        policies,
        workloads,
        metrics,
        observer.clone(),
        liveness.clone(),
        instance,
    ));
    // A workload event reconciles only the policies it concerns (see
    // `Neighbourhood::concerned`), found in its namespace's index.
    let concerned = {
        let ctx = ctx.clone();
        move |w: Workload| {
            let ns = w.namespace().unwrap_or_default();
            ctx.neighbours
                .of(&ctx.policies, &ns)
                .concerned(&w)
                .into_iter()
                // This controller's kind: cluster policies have no namespace.
                .filter(|p| p.metadata.namespace.is_some())
                .map(|p| ObjectRef::from_obj(&**p))
                .collect::<Vec<_>>()
        }
    };
    let observing = AbortOnDrop(tokio::spawn(observer.run(observed_tx)));
    controller
        .watches_stream(workload_events, concerned)
        .watches_stream(policy_spec_changes, others)
        // The observer names the policies whose hook outcomes changed.
        .reconcile_on(observed_rx.filter_map(|id| async move {
            match id {
                PolicyId::Namespaced { namespace, name } => {
                    Some(ObjectRef::new(&name).within(&namespace))
                }
                // No cluster policy is served yet (issue 20): none is ever dirty.
                PolicyId::Cluster { .. } => None,
            }
        }))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            // error_policy has already logged reconcile errors.
            if let Err(e) = res {
                debug!(error = %e, "controller");
            }
        })
        .await;
    drop(observing);
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

/// The other policies of a policy's namespace.
fn others_in_namespace(
    store: &Store<LifecyclePolicy>,
    p: &LifecyclePolicy,
) -> Vec<ObjectRef<LifecyclePolicy>> {
    store
        .state()
        .into_iter()
        .filter(|o| o.namespace() == p.namespace() && o.metadata.name != p.metadata.name)
        .map(|o| ObjectRef::from_obj(&*o))
        .collect()
}

/// Aborts the task when dropped, so that a cancelled `run` leaves nothing behind.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) async fn reconcile(
    policy: Arc<LifecyclePolicy>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let _running = ctx.liveness.start();
    ctx.liveness
        .set_policies(ctx.policies.namespaced.state().len());
    let ns = policy.namespace().unwrap_or_default();
    let api: Api<LifecyclePolicy> = Api::namespaced(ctx.client.clone(), &ns);
    let work = async {
        // Bounded too: the workload caches fill from watches of their own.
        ctx.workloads.wait_ready().await;
        finalizer(&api, FINALIZER, policy.clone(), |event| async {
            match event {
                Finalizer::Apply(p) => apply(&p, &ctx).await,
                Finalizer::Cleanup(p) => cleanup(&p, &ctx).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)))
    };
    let result = tokio::time::timeout(RECONCILE_TIMEOUT, work)
        .await
        .unwrap_or(Err(Error::Timeout));
    let label = if result.is_ok() { "ok" } else { "error" };
    debug!(policy = %policy.name_any(), elapsed = ?started.elapsed(), result = label, "reconciled");
    ctx.metrics.observe_reconcile(label, started.elapsed());
    if result.is_ok() {
        ctx.failures
            .lock()
            .unwrap()
            .remove(&ObjectRef::from_obj(&*policy));
    }
    result
}

/// Exponential backoff per policy, 5 s doubling to 5 min: errors never hot-loop.
pub(crate) fn error_policy(
    policy: Arc<LifecyclePolicy>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.count_reconcile_error(error.kind());
    let base = match error.retry() {
        Retry::Pending(n) => {
            info!(policy = %policy.name_any(), workloads = n, "waiting to hand hooks back");
            return Action::requeue(PENDING_RETRY);
        }
        Retry::StaleRead => {
            debug!(policy = %policy.name_any(), error = %error, "stale read, retrying");
            return Action::requeue(Duration::from_secs(1));
        }
        Retry::Backoff(base) => base,
    };
    let mut failures = ctx.failures.lock().unwrap();
    let n = failures.entry(ObjectRef::from_obj(&*policy)).or_insert(0);
    *n = n.saturating_add(1);
    let delay = Duration::from_secs(base * (1u64 << (*n - 1).min(6))).min(RESYNC);
    warn!(policy = %policy.name_any(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn apply(policy: &LifecyclePolicy, ctx: &Context) -> Result<Action, Error> {
    let ns = policy.namespace().unwrap_or_default();
    // A spec the operator cannot act on matches nothing: what the policy
    // holds is handed back, as for a workload leaving its selector.
    let (selector, invalid) = pipeline::selection(policy);
    let workloads = ctx.workloads.in_namespace(policy.namespace());
    let Evaluated {
        results,
        stale,
        rollout,
    } = evaluate(policy, &selector, invalid.is_none(), workloads, ctx).await?;
    let (post_start, pre_stop) = if policy.spec.verification == Verification::Disabled {
        (None, None)
    } else {
        pipeline::readable(policy, ctx.observer.reports(policy))
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
    });
    if policy.status.as_ref() != Some(&new) {
        let api: Api<LifecyclePolicy> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(
            &policy.name_any(),
            &PatchParams::apply("lifecycle-operator").force(),
            &Patch::Apply(json!({
                "apiVersion": "lifecycle-operator.io/v1alpha1",
                "kind": "LifecyclePolicy",
                "status": new,
            })),
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
    info!(policy = %policy.name_any(), "released every hook; removing finalizer");
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

    async fn wait_ready(&self) {
        for (_, store) in &self.0 {
            crate::runtime::ready::wait_ready(store).await;
        }
    }
}

/// The namespace's workloads of every kind, read from the API server (a
/// quorum read), not the caches. Every kind: the policy may hold slots on a
/// kind it no longer selects.
async fn fresh_workloads(
    policy: &LifecyclePolicy,
    ctx: &Context,
) -> Result<Vec<Arc<Workload>>, Error> {
    let ns = policy.namespace().unwrap_or_default();
    let mut out = Vec::new();
    for (kind, _) in &ctx.workloads.0 {
        let api: Api<Workload> = Api::namespaced_with(ctx.client.clone(), &ns, kind);
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
    let ns = policy.namespace().unwrap_or_default();
    let api: Api<LifecyclePolicy> = Api::namespaced(ctx.client.clone(), &ns);
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
    api.patch_status(&policy.name_any(), &params, &Patch::Json::<()>(patch))
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
