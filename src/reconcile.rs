//! The policy reconciler: the I/O around `decide` and `execute`. Reads workloads and
//! policies from watch caches, writes only what differs, then the status.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
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

use crate::decide::{self, Decision, Intent, Scope};
use crate::execute::Executor;
use crate::liveness::Liveness;
use crate::metrics::Metrics;
use crate::neighbours::Neighbours;
use crate::observe::Observer;
use crate::plan::{self, Plan};
use crate::rollout;
use crate::status::{self, Done, StatusInput, WorkloadResult};
use crate::types::{LifecyclePolicy, Mode, RolloutStatus, Verification, WorkloadKind};
use crate::watches;
use crate::workload::{self, Workload};
use crate::{explain, render, text};

pub const FINALIZER: &str = "lifecycle-operator.io/cleanup";
/// Re-check every policy this often even when nothing changes; costs reads only.
pub const RESYNC: Duration = Duration::from_secs(300);
/// A reconcile that takes longer is cut off and retried with backoff: a stuck
/// call never wedges a policy.
pub const RECONCILE_TIMEOUT: Duration = Duration::from_secs(60);
/// Re-check this soon while something waits (rollout slots, another policy).
const PENDING_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("{0} workloads could not be written (see the policy's status)")]
    WritesFailed(usize),
    #[error("{0} workloads still carry this policy's hooks (waiting for rollout slots)")]
    CleanupPending(usize),
    #[error("reconcile did not finish within {}s", RECONCILE_TIMEOUT.as_secs())]
    Timeout,
    #[error("{0} workloads changed since they were read (another writer); retrying")]
    StaleWrites(usize),
    #[error("the policy's status could not be written: {0}")]
    StatusRefused(String),
    /// Recording a rollout step failed: nothing it causes was written.
    #[error(
        "the rollout step could not be recorded on the policy's status ({0}); no workload was changed"
    )]
    RolloutNotRecorded(String),
}

/// Writes refused because the Deployment changed since it was read (409, a
/// failed JSON-patch `test` 422, 404) are retried soon: the watch brings the
/// new version. Anything else backs off from 5 s.
fn write_error(failed: usize, stale: usize) -> Error {
    if failed == stale {
        Error::StaleWrites(failed)
    } else {
        Error::WritesFailed(failed)
    }
}

fn is_stale_write(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(a) if matches!(a.code, 404 | 409 | 422))
}

impl Error {
    /// A write rejected because the object changed or vanished since the
    /// cached copy was read: a finalizer added twice, a policy already gone.
    fn is_stale_read(&self) -> bool {
        use kube::runtime::finalizer::Error as F;
        let Error::Finalizer(f) = self else {
            return false;
        };
        let api = match f.as_ref() {
            F::AddFinalizer(kube::Error::Api(e)) | F::RemoveFinalizer(kube::Error::Api(e)) => e,
            _ => return false,
        };
        // 422 is how the API server reports a failed JSON-patch `test`.
        matches!(api.code, 404 | 409 | 422)
    }
}

pub struct Context {
    pub client: Client,
    pub policies: Store<LifecyclePolicy>,
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
        policies: Store<LifecyclePolicy>,
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
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let policies = Api::<LifecyclePolicy>::all(client.clone());
    // One cache per kind, fed by a watch of its own.
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
    let workloads = Workloads(stores);
    let workload_events = watches::errors_logged(futures::stream::select_all(streams), "workload");
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
    let neighbours = {
        let store = store.clone();
        move |ns: Option<String>, except: Option<String>| {
            store
                .state()
                .into_iter()
                .filter(|p| p.namespace() == ns && p.metadata.name != except)
                .map(|p| ObjectRef::from_obj(&*p))
                .collect::<Vec<_>>()
        }
    };
    let neighbours2 = neighbours.clone();
    let observer = Observer::new(
        client.clone(),
        store.clone(),
        metrics.clone(),
        crate::observe::LogStreams::configured(),
    );
    let (observed_tx, observed_rx) = futures::channel::mpsc::unbounded();
    let ctx = Arc::new(Context::new(
        client,
        store,
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
                .map(|p| ObjectRef::from_obj(&**p))
                .collect::<Vec<_>>()
        }
    };
    let observing = AbortOnDrop(tokio::spawn(observer.run(observed_tx)));
    controller
        .watches_stream(workload_events, concerned)
        .watches_stream(policy_spec_changes, move |p: LifecyclePolicy| {
            neighbours2(p.namespace(), p.metadata.name.clone())
        })
        // The observer names the policies whose hook outcomes changed.
        .reconcile_on(observed_rx)
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
    ctx.liveness.set_policies(ctx.policies.state().len());
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
    if let Error::Finalizer(f) = error
        && let kube::runtime::finalizer::Error::CleanupFailed(Error::CleanupPending(n)) = f.as_ref()
    {
        // Waiting, not failing: releases queue behind maxConcurrentRollouts.
        info!(policy = %policy.name_any(), workloads = n, "waiting to hand hooks back");
        return Action::requeue(PENDING_RETRY);
    }
    if error.is_stale_read() {
        // Our cache lagged a write of our own; the watch event that follows re-triggers.
        debug!(policy = %policy.name_any(), error = %error, "stale read, retrying");
        return Action::requeue(Duration::from_secs(1));
    }
    use kube::runtime::finalizer::Error as F;
    let stale = matches!(error, Error::Finalizer(f)
        if matches!(f.as_ref(), F::ApplyFailed(Error::StaleWrites(_)) | F::CleanupFailed(Error::StaleWrites(_))));
    let base = if stale { 1 } else { 5 };
    let mut failures = ctx.failures.lock().unwrap();
    let n = failures.entry(ObjectRef::from_obj(&*policy)).or_insert(0);
    *n = n.saturating_add(1);
    let delay = Duration::from_secs(base * (1u64 << (*n - 1).min(6))).min(RESYNC);
    warn!(policy = %policy.name_any(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn apply(policy: &LifecyclePolicy, ctx: &Context) -> Result<Action, Error> {
    let ns = policy.namespace().unwrap_or_default();
    let (
        Evaluated {
            results,
            stale,
            rollout,
        },
        invalid,
    ) = match Selector::try_from(LabelSelector::from(&policy.spec.selector)) {
        Ok(selector) => {
            let workloads = ctx.workloads.in_namespace(policy.namespace());
            (
                evaluate(policy, &selector, true, workloads, ctx).await?,
                None,
            )
        }
        // A spec the operator cannot act on matches nothing: what the policy
        // holds is handed back, as for a workload leaving its selector.
        Err(e) => {
            let workloads = ctx.workloads.in_namespace(policy.namespace());
            (
                evaluate(policy, &Selector::default(), false, workloads, ctx).await?,
                Some(format!(
                    "invalid selector: {e}; the policy matches nothing, and hands back the hooks it set"
                )),
            )
        }
    };
    let (mut post_start, mut pre_stop) = if policy.spec.verification == Verification::Disabled {
        (None, None)
    } else {
        ctx.observer.reports(policy)
    };
    let scripts = render::scripts(&policy.spec, &policy.rendered());
    for f in [&mut post_start, &mut pre_stop]
        .into_iter()
        .flatten()
        .filter_map(|r| r.last_failure.as_mut())
    {
        f.message = explain::hook_failure(&f.message, &scripts);
    }
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
    let failed = results
        .iter()
        .filter(|r| matches!(r.done, Done::Failed(_)))
        .count();
    if failed > 0 {
        // The status says which and why; retry with backoff, not on a fixed beat.
        return Err(write_error(failed, stale));
    }
    let waiting = results
        .iter()
        .any(|r| r.done == Done::WaitingForRolloutSlot || has_held(&r.plan))
        || rollout.as_ref().is_some_and(|r| !r.waiting_on.is_empty());
    Ok(Action::requeue(if waiting {
        PENDING_RETRY
    } else {
        RESYNC
    }))
}

async fn cleanup(policy: &LifecyclePolicy, ctx: &Context) -> Result<Action, Error> {
    // Nothing matches a policy being deleted: every slot it holds is released.
    // The last look before the finalizer goes must not miss a hook: a cached
    // workload may not show yet what this policy (or another replica of the
    // operator) applied a moment ago, so read them afresh.
    let workloads = fresh_workloads(policy, ctx).await?;
    let Evaluated { results, stale, .. } =
        evaluate(policy, &Selector::default(), false, workloads, ctx).await?;
    let count = |f: fn(&Done) -> bool| results.iter().filter(|r| f(&r.done)).count();
    let failed = count(|d| matches!(d, Done::Failed(_)));
    if failed > 0 {
        return Err(write_error(failed, stale));
    }
    let waiting = count(|d| *d == Done::WaitingForRolloutSlot);
    if waiting > 0 {
        return Err(Error::CleanupPending(waiting));
    }
    if let Some(uid) = &policy.metadata.uid {
        ctx.written_rollouts.lock().unwrap().remove(uid);
    }
    info!(policy = %policy.name_any(), "released every hook; removing finalizer");
    Ok(Action::await_change())
}

fn has_held(plan: &Plan) -> bool {
    plan.outcomes
        .values()
        .any(|o| matches!(o, plan::Outcome::HeldBy(_)))
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
            crate::ready::wait_ready(store).await;
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

/// Decides on every workload of the namespace that the policy matches or
/// still holds slots on, then (in Enforce mode) carries the writes out.
async fn evaluate(
    policy: &LifecyclePolicy,
    selector: &Selector,
    active: bool,
    workloads: Vec<Arc<Workload>>,
    ctx: &Context,
) -> Result<Evaluated, Error> {
    let neighbours = ctx
        .neighbours
        .of(&ctx.policies, &policy.namespace().unwrap_or_default());
    let decide_with = |revert: &BTreeSet<String>, hold: Option<&decide::Hold>| {
        decide::decide(
            &Scope {
                policy,
                selector,
                active,
                neighbours: &neighbours,
                revert,
                hold,
                now: Timestamp::now(),
            },
            workloads.clone(),
        )
    };
    let mut decisions = decide_with(&BTreeSet::new(), None);
    // The safe rollout (Enforce only): a canary, then waves; halt and
    // revert. Decided again with the step's gate, so that held workloads
    // take no rollout slot.
    let mut rollout = None;
    if active && policy.spec.mode == Mode::Enforce {
        let step = rollout_step(policy, &decisions, ctx);
        let hold = decide::Hold {
            allow: step.allow.clone(),
            why: step
                .waiting_for
                .clone()
                .unwrap_or_else(|| "waiting for the rollout".to_string()),
        };
        decisions = decide_with(&step.revert, Some(&hold));
        // Decide, record, then act: a halt or a new wave is on the status
        // before the writes it causes, so a refused status write can never
        // make the next reconcile redo or undo them.
        if records_first(policy, &step, ctx) {
            record_rollout(policy, &step.status, ctx).await?;
        }
        rollout_events(policy, &step, ctx).await;
        rollout = Some(step.status);
    }
    let executor = Executor {
        client: &ctx.client,
        recorder: &ctx.recorder,
        metrics: &ctx.metrics,
    };
    let written = executor.run(policy, &decisions).await;
    let mut stale = 0;
    let results = decisions
        .into_iter()
        .zip(written)
        .map(|(d, result)| {
            let done = match (&d.intent, result) {
                (_, Some(Ok(()))) => Done::Patched,
                (_, Some(Err(e))) => {
                    if is_stale_write(&e) {
                        stale += 1;
                    }
                    Done::Failed(explain::api_error(&e))
                }
                (Intent::WouldPatch, None) => Done::WouldPatch,
                (Intent::WaitForSlot, None) => Done::WaitingForRolloutSlot,
                (Intent::Held(why), None) => Done::Held(why.clone()),
                (_, None) => Done::UpToDate,
            };
            WorkloadResult {
                name: d.name(),
                integrity: d.integrity(),
                kind: d.workload.kind,
                staged: d.staged,
                missing_containers: d.missing_containers,
                reverted: d.reverted,
                matched: d.matched,
                grace_too_short: d.grace_too_short,
                plan: d.plan,
                done,
            }
        })
        .collect();
    Ok(Evaluated {
        results,
        stale,
        rollout,
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

/// Whether the step starts a wave or halts (and reverts): then its status
/// is written before any workload.
fn records_first(policy: &LifecyclePolicy, step: &rollout::Step, ctx: &Context) -> bool {
    let was_halted = previous_rollout(policy, ctx).is_some_and(|p| p.halted.is_some());
    step.new_wave || (step.status.halted.is_some() && !was_halted)
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

/// The rollout step for the decisions as they stand: which matched
/// workloads still need the hooks, which carry them and are healthy.
fn rollout_step(policy: &LifecyclePolicy, decisions: &[Decision], ctx: &Context) -> rollout::Step {
    let health = ctx.observer.workload_health(policy);
    let generation = policy.metadata.generation.unwrap_or_default();
    let previous = previous_rollout(policy, ctx);
    let previous = previous.as_ref();
    // A wave just patched must show its new pods ran postStart, not just
    // a finished rollout: a postStart failing after a second can let a pod
    // look available for a moment.
    let strong =
        policy.spec.post_start.is_some() && policy.spec.verification != Verification::Disabled;
    let scripts = render::scripts(&policy.spec, &policy.rendered());
    let candidates: Vec<rollout::Candidate> = decisions
        .iter()
        .filter(|d| d.matched && (d.plan.ledger.is_some() || d.changes_template()))
        .map(|d| {
            let key = d.key();
            let carries = !d.changes_template();
            let h = health.get(&key).cloned().unwrap_or_default();
            let in_wave = previous.is_some_and(|p| p.waiting_on.contains(&key));
            let verified =
                !strong || !in_wave || h.post_start_ok as i64 >= expected_pods(&d.workload);
            // A workload without pods has nothing to prove or disprove: done
            // once patched (its controller's status may lag for seconds).
            let pods = expected_pods(&d.workload);
            rollout::Candidate {
                healthy: carries && (pods == 0 || (!d.workload.is_rolling() && verified)),
                failure: h.failure.filter(|_| carries).map(|f| rollout::Failure {
                    pod: text::bounded(&f.pod, text::NAME),
                    container: text::bounded(&f.container, text::NAME),
                    reason: text::bounded(&f.reason, text::NAME),
                    message: explain::hook_failure(&f.message, &scripts),
                }),
                has_pods: pods > 0,
                carries,
                key,
            }
        })
        .collect();
    rollout::step(&rollout::Input {
        spec: &policy.spec.rollout,
        max_concurrent_rollouts: policy.spec.max_concurrent_rollouts,
        generation,
        previous,
        candidates: &candidates,
        now: Timestamp::now(),
    })
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
        let related = workload_ref(policy, &h.workload);
        executor
            .note(policy, related, EventType::Warning, "RolloutHalted", note)
            .await;
    } else if step.new_wave {
        let what = if step.status.waves == 1 {
            "canary".to_string()
        } else {
            format!("wave {}", step.status.waves)
        };
        let names: Vec<&String> = step.allow.iter().collect();
        let note = format!(
            "{what}: {}",
            text::list(&names, ", ", text::EVENT_NOTE - 20)
        );
        // Each wave names its first workload as `related`, so that kube's
        // recorder does not fold it into the previous wave's event.
        let related = step
            .allow
            .iter()
            .next()
            .and_then(|k| workload_ref(policy, k));
        executor
            .note(policy, related, EventType::Normal, "RolloutWave", note)
            .await;
    }
}

/// The object reference of a workload named Kind/name in the policy's namespace.
fn workload_ref(
    policy: &LifecyclePolicy,
    key: &str,
) -> Option<k8s_openapi::api::core::v1::ObjectReference> {
    let (kind, name) = key.split_once('/')?;
    let kind = WorkloadKind::ALL.into_iter().find(|k| k.as_str() == kind)?;
    Some(crate::execute::reference(kind, name, policy.namespace()))
}

/// Pods a workload runs once rolled out.
fn expected_pods(w: &Workload) -> i64 {
    match w.kind {
        WorkloadKind::DaemonSet => w.status.desired_number_scheduled.unwrap_or(0) as i64,
        _ => w.spec.replicas.unwrap_or(1) as i64,
    }
}

#[cfg(test)]
#[path = "reconcile_faults.rs"]
mod faults;
