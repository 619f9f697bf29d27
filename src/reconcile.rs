//! The policy reconciler: the I/O around `plan`. Reads Deployments and
//! policies from watch caches, writes only what differs, then the status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::ledger::{self, Damage};
use crate::liveness::Liveness;
use crate::metrics::Metrics;
use crate::observe::Observer;
use crate::patch::{
    RESTORE_MANAGER, apply_body, field_manager, ledger_key, read_ledgers, release_patch,
};
use crate::plan::{self, Contender, Input, Plan};
use crate::status::{self, DeploymentResult, Done, StatusInput};
use crate::types::{LifecyclePolicy, LifecyclePolicySpec, Mode, Verification};

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
    #[error("{0} Deployments could not be written (see the policy's status)")]
    WritesFailed(usize),
    #[error("{0} Deployments still carry this policy's hooks (waiting for rollout slots)")]
    CleanupPending(usize),
    #[error("reconcile did not finish within {}s", RECONCILE_TIMEOUT.as_secs())]
    Timeout,
    #[error("{0} Deployments changed since they were read (another writer); retrying")]
    StaleWrites(usize),
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
    pub deployments: Store<Deployment>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub observer: Arc<Observer>,
    pub liveness: Arc<Liveness>,
    /// Consecutive failures per policy, for backoff.
    failures: Mutex<HashMap<ObjectRef<LifecyclePolicy>, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        policies: Store<LifecyclePolicy>,
        deployments: Store<Deployment>,
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
            deployments,
            metrics,
            observer,
            liveness,
            failures: Mutex::default(),
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
    let (deployments, writer) = reflector::store();
    let deployment_events = watcher(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .modify(trim_deployment)
    .reflect(writer)
    .touched_objects();
    // Any policy's spec change can change who wins a contested hook in its
    // namespace, so it re-triggers its neighbours too.
    let policy_spec_changes = watcher(policies.clone(), watcher::Config::default().any_semantic())
        .default_backoff()
        .touched_objects()
        .predicate_filter(predicates::generation, Default::default());

    let controller = Controller::new(policies, watcher::Config::default().any_semantic());
    let store = controller.store();
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
    let observer = Observer::new(client.clone(), store.clone(), metrics.clone());
    let (observed_tx, observed_rx) = futures::channel::mpsc::unbounded();
    let ctx = Arc::new(Context::new(
        client,
        store,
        deployments,
        metrics,
        observer.clone(),
        liveness.clone(),
        instance,
    ));
    let observing = AbortOnDrop(tokio::spawn(observer.run(observed_tx)));
    controller
        .watches_stream(deployment_events, move |d: Deployment| {
            neighbours(d.namespace(), None)
        })
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

/// Keeps only what reconcile reads: managedFields (of the policies' own field
/// managers only: the second record of their ledgers) and no last-applied
/// annotation; both can be larger than the rest of the object.
pub fn trim_deployment(d: &mut Deployment) {
    let own = field_manager("");
    d.managed_fields_mut().retain(|e| {
        e.manager.as_deref().is_some_and(|m| m.starts_with(&own))
            && e.operation.as_deref() == Some("Apply")
    });
    d.annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
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
        // Bounded too: the Deployment cache fills from a watch of its own.
        crate::ready::wait_ready(&ctx.deployments).await;
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
        info!(policy = %policy.name_any(), deployments = n, "waiting to hand hooks back");
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
    let ((results, stale), invalid) =
        match Selector::try_from(LabelSelector::from(&policy.spec.selector)) {
            Ok(selector) => {
                let deployments = cached_deployments(policy, ctx);
                (
                    evaluate(policy, &selector, true, deployments, ctx).await,
                    None,
                )
            }
            Err(e) => ((Vec::new(), 0), Some(format!("invalid selector: {e}"))),
        };
    let (post_start, pre_stop) = if policy.spec.verification == Verification::Disabled {
        (None, None)
    } else {
        ctx.observer.reports(policy)
    };
    let new = status::build(&StatusInput {
        generation: policy.metadata.generation,
        mode: policy.spec.mode,
        results: &results,
        invalid,
        post_start,
        pre_stop,
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
        .await?;
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
        .any(|r| r.done == Done::WaitingForRolloutSlot || has_held(&r.plan));
    Ok(Action::requeue(if waiting {
        PENDING_RETRY
    } else {
        RESYNC
    }))
}

async fn cleanup(policy: &LifecyclePolicy, ctx: &Context) -> Result<Action, Error> {
    // Nothing matches a policy being deleted: every slot it holds is released.
    // The last look before the finalizer goes must not miss a hook: a cached
    // Deployment may not show yet what this policy (or another replica of the
    // operator) applied a moment ago, so read them afresh.
    let deployments = fresh_deployments(policy, ctx).await?;
    let (results, stale) = evaluate(policy, &Selector::default(), false, deployments, ctx).await;
    let count = |f: fn(&Done) -> bool| results.iter().filter(|r| f(&r.done)).count();
    let failed = count(|d| matches!(d, Done::Failed(_)));
    if failed > 0 {
        return Err(write_error(failed, stale));
    }
    let waiting = count(|d| *d == Done::WaitingForRolloutSlot);
    if waiting > 0 {
        return Err(Error::CleanupPending(waiting));
    }
    info!(policy = %policy.name_any(), "released every hook; removing finalizer");
    Ok(Action::await_change())
}

fn has_held(plan: &Plan) -> bool {
    plan.outcomes
        .values()
        .any(|o| matches!(o, plan::Outcome::HeldBy(_)))
}

/// Plans and (in Enforce mode) carries out the policy on every Deployment of
/// its namespace that it matches or still holds slots on.
fn cached_deployments(policy: &LifecyclePolicy, ctx: &Context) -> Vec<Arc<Deployment>> {
    let ns = policy.namespace();
    ctx.deployments
        .state()
        .into_iter()
        .filter(|d| d.namespace() == ns)
        .collect()
}

/// The namespace's Deployments read from the API server (a quorum read), not the cache.
async fn fresh_deployments(
    policy: &LifecyclePolicy,
    ctx: &Context,
) -> Result<Vec<Arc<Deployment>>, Error> {
    let ns = policy.namespace().unwrap_or_default();
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let mut out = Vec::new();
    let mut params = kube::api::ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        out.extend(page.items.into_iter().map(|mut d| {
            trim_deployment(&mut d);
            Arc::new(d)
        }));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(out),
        }
    }
}

async fn evaluate(
    policy: &LifecyclePolicy,
    selector: &Selector,
    active: bool,
    mut deployments: Vec<Arc<Deployment>>,
    ctx: &Context,
) -> (Vec<DeploymentResult>, usize) {
    let ns = policy.namespace();
    let name = policy.name_any();
    let mut neighbours: Vec<Arc<LifecyclePolicy>> = ctx
        .policies
        .state()
        .into_iter()
        .filter(|p| p.namespace() == ns)
        .collect();
    neighbours.sort_by_key(|p| p.precedence());
    deployments.sort_by_key(|d| d.name_any());

    // Rendered once per reconcile, not per Deployment.
    let rivals: Vec<Rival> = neighbours.iter().map(Rival::new).collect();
    let rendered = policy.rendered();
    let manager = field_manager(&name);
    let limit = policy.spec.max_concurrent_rollouts;
    let mut rolling = deployments
        .iter()
        .filter(|d| {
            read_ledgers(d.metadata.annotations.as_ref()).contains_key(&name) && is_rolling(d)
        })
        .count() as i32;

    let mut results = Vec::new();
    let mut stale = 0;
    for d in deployments {
        // A Deployment on its way out needs nothing restored.
        if d.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(pod) = d.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else {
            continue;
        };
        let matched = active && selector.matches(d.labels());
        let mut ledgers = read_ledgers(d.metadata.annotations.as_ref());
        // Ledgers of policies that no longer exist do not block anyone.
        ledgers.retain(|p, _| neighbours.iter().any(|n| n.name_any() == *p));
        // This policy's own ledger, checked against its field manager's
        // managedFields: a damaged ledger is rebuilt, never trusted blindly.
        let stored = ledgers.remove(&name);
        let annotation = d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(&ledger_key(&name)));
        let checked = ledger::check(
            &name,
            annotation.map(String::as_str),
            &ledger::owned_by(d.managed_fields(), &manager, &name),
        );
        if let Some(l) = &checked.ledger {
            ledgers.insert(name.clone(), l.clone());
        }
        if !matched && checked.ledger.is_none() && checked.damage.is_none() {
            continue;
        }
        let contenders = contenders(&rivals, &name, &d, pod);
        let winners = plan::winners(&contenders);
        let plan = plan::plan(&Input {
            policy: &name,
            spec: &rendered,
            active: matched,
            pod,
            ledgers: &ledgers,
            winners: &winners,
        });
        let done = if !plan.needs_write(pod, stored.as_ref()) && checked.damage.is_none() {
            Done::UpToDate
        } else if policy.spec.mode == Mode::DryRun {
            Done::WouldPatch
        } else if plan.changes_template(pod) && limit > 0 && rolling >= limit {
            Done::WaitingForRolloutSlot
        } else {
            match write(ctx, policy, &d, pod, &plan, checked.damage.as_ref()).await {
                Ok(()) => {
                    if plan.changes_template(pod) {
                        rolling += 1;
                    }
                    Done::Patched
                }
                Err(e) => {
                    warn!(policy = %name, deployment = %d.name_any(), error = %e, "writing Deployment failed");
                    if is_stale_write(&e) {
                        stale += 1;
                    }
                    Done::Failed(e.to_string())
                }
            }
        };
        results.push(DeploymentResult {
            name: d.name_any(),
            integrity: integrity_note(checked.damage.as_ref(), &plan),
            matched,
            grace_too_short: matched
                .then(|| plan::grace_too_short(&policy.spec, pod))
                .flatten(),
            plan,
            done,
        });
    }
    (results, stale)
}

/// What the status says about the ledger on one Deployment: damage found
/// now, originals lost earlier, hooks removed rather than restored.
fn integrity_note(damage: Option<&Damage>, plan: &Plan) -> Option<String> {
    let list = |s: &mut dyn Iterator<Item = &plan::Slot>| {
        s.map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
    };
    let mut parts = Vec::new();
    if let Some(d) = damage {
        parts.push(format!("{d}; rebuilt from managedFields"));
    }
    if !plan.unrestorable.is_empty() {
        parts.push(format!(
            "the original of {} could not be restored (unknown): the hook was removed",
            list(&mut plan.unrestorable.iter())
        ));
    }
    if let Some(l) = &plan.ledger
        && !l.unknown.is_empty()
    {
        parts.push(format!(
            "the original of {} is unknown: it will be removed, not restored, on release",
            list(&mut l.unknown.iter())
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// A policy of the namespace as contention needs it: rendered hooks and a
/// parsed selector, computed once per reconcile.
struct Rival {
    policy: Arc<LifecyclePolicy>,
    spec: LifecyclePolicySpec,
    selector: Option<Selector>,
}

impl Rival {
    fn new(p: &Arc<LifecyclePolicy>) -> Self {
        Rival {
            policy: p.clone(),
            spec: p.rendered(),
            selector: Selector::try_from(LabelSelector::from(&p.spec.selector)).ok(),
        }
    }
}

/// The policies competing for slots on this Deployment, ranked oldest first
/// (`rivals` is sorted by precedence). DryRun policies never block an
/// enforcing one, but a DryRun policy sees whom it would lose to.
fn contenders<'a>(
    rivals: &'a [Rival],
    me: &str,
    d: &Deployment,
    pod: &PodSpec,
) -> Vec<Contender<'a>> {
    rivals
        .iter()
        .enumerate()
        .filter(|(_, r)| r.policy.metadata.deletion_timestamp.is_none())
        .filter(|(_, r)| r.policy.name_any() == me || plan::contends(r.policy.spec.mode))
        .filter(|(_, r)| r.selector.as_ref().is_some_and(|s| s.matches(d.labels())))
        .map(|(rank, r)| Contender {
            name: r.policy.metadata.name.as_deref().unwrap_or_default(),
            rank,
            wants: plan::wanted(&r.spec, pod),
        })
        .collect()
}

/// A Deployment still rolling out: the controller has not caught up with the
/// template, or old pods remain.
fn is_rolling(d: &Deployment) -> bool {
    let (Some(spec), Some(status)) = (d.spec.as_ref(), d.status.as_ref()) else {
        return false;
    };
    let want = spec.replicas.unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    status.observed_generation < d.metadata.generation
        || updated < want
        || status.replicas.unwrap_or(0) > updated
        || status.available_replicas.unwrap_or(0) < updated
}

async fn write(
    ctx: &Context,
    policy: &LifecyclePolicy,
    d: &Deployment,
    pod: &PodSpec,
    plan: &Plan,
    damage: Option<&Damage>,
) -> Result<(), kube::Error> {
    let policy_name = policy.name_any();
    let ns = d.namespace().unwrap_or_default();
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let manager = field_manager(&policy_name);
    let mut did = Vec::new();
    if let Some(damage) = damage {
        let note = format!(
            "Deployment {}: {damage}; the ledger was rebuilt from managedFields",
            d.name_any()
        );
        warn!(policy = %policy_name, deployment = %d.name_any(), %damage, "damaged ledger");
        publish(ctx, policy, d, EventType::Warning, "LedgerDamaged", note).await;
    }
    if let Some(ops) = release_patch(&policy_name, pod, d.metadata.annotations.as_ref(), plan) {
        let ops: json_patch::Patch =
            serde_json::from_value(ops).expect("release patch is a JSON patch");
        // Not the policy's own manager: an update under it would leave the
        // restored fields owned by the policy, which then holds nothing.
        let params = PatchParams {
            field_manager: Some(RESTORE_MANAGER.to_string()),
            ..Default::default()
        };
        api.patch(&d.name_any(), &params, &Patch::Json::<()>(ops))
            .await?;
        ctx.metrics.deployments_released.inc();
        if !plan.unrestorable.is_empty() {
            let slots: Vec<String> = plan.unrestorable.iter().map(|s| s.to_string()).collect();
            let note = format!(
                "Deployment {}: the original of {} could not be restored (its ledger was damaged): the hook was removed",
                d.name_any(),
                slots.join(", ")
            );
            publish(
                ctx,
                policy,
                d,
                EventType::Warning,
                "RestoreIncomplete",
                note,
            )
            .await;
        }
        did.push(format!(
            "restored {}",
            plan.releases
                .keys()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if plan.ledger.is_some() {
        let body = apply_body(&d.name_any(), &ns, plan);
        api.patch(
            &d.name_any(),
            &PatchParams::apply(&manager).force(),
            &Patch::Apply(body),
        )
        .await?;
        ctx.metrics.deployments_patched.inc();
        if plan.changes_template(pod) {
            did.push(format!(
                "set {}",
                plan.claims
                    .keys()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if plan.changes_template(pod) {
        let note = format!(
            "Deployment {}: {} (the pod template changed, so the Deployment rolls out)",
            d.name_any(),
            did.join("; ")
        );
        publish(ctx, policy, d, EventType::Normal, "DeploymentPatched", note).await;
    }
    Ok(())
}

/// An event on the policy about one Deployment; failing to publish is logged only.
async fn publish(
    ctx: &Context,
    policy: &LifecyclePolicy,
    d: &Deployment,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "PatchDeployment".into(),
        secondary: Some(d.object_ref(&())),
    };
    if let Err(e) = ctx.recorder.publish(&event, &policy.object_ref(&())).await {
        warn!(error = %e, "publishing event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(
        labels: serde_json::Value,
        generation: i64,
        spec_replicas: i32,
        status: serde_json::Value,
    ) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "d", "namespace": "ns", "labels": labels, "generation": generation},
            "spec": {"replicas": spec_replicas, "selector": {}, "template": {"spec": {"containers": [{"name": "c"}]}}},
            "status": status,
        }))
        .unwrap()
    }

    fn policy(name: &str, created: i64, mode: &str, deleting: bool) -> Arc<LifecyclePolicy> {
        let mut meta = json!({"name": name, "namespace": "ns", "creationTimestamp": Timestamp::from_second(created).unwrap().to_string()});
        if deleting {
            meta["deletionTimestamp"] =
                json!(Timestamp::from_second(created + 1).unwrap().to_string());
        }
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "lifecycle-operator.io/v1alpha1", "kind": "LifecyclePolicy", "metadata": meta,
                "spec": {"selector": {"matchLabels": {"app": "web"}}, "preStop": {"sleep": {"seconds": 1}}, "mode": mode},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn trimming_keeps_only_the_policies_own_applies() {
        let mut d: Deployment = serde_json::from_value(json!({"metadata": {
        "name": "d",
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "me"},
        "managedFields": [
            {"manager": "lifecycle-operator/p", "operation": "Apply", "fieldsV1": {}},
            {"manager": "lifecycle-operator/p", "operation": "Update", "fieldsV1": {}},
            {"manager": "lifecycle-operator-restore", "operation": "Update", "fieldsV1": {}},
            {"manager": "kubectl", "operation": "Apply", "fieldsV1": {}},
        ]}}))
        .unwrap();
        trim_deployment(&mut d);
        let kept: Vec<_> = d
            .managed_fields()
            .iter()
            .map(|e| (e.manager.clone().unwrap(), e.operation.clone().unwrap()))
            .collect();
        assert_eq!(
            kept,
            [("lifecycle-operator/p".to_string(), "Apply".to_string())]
        );
        assert_eq!(d.annotations().keys().collect::<Vec<_>>(), ["keep"]);
    }

    #[test]
    fn rolling_means_the_controller_or_the_pods_have_not_caught_up() {
        let settled = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2});
        assert!(!is_rolling(&deploy(json!({}), 2, 2, settled)));
        let cases = [
            json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 2}),
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}),
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
        ];
        for status in cases {
            assert!(
                is_rolling(&deploy(json!({}), 2, 2, status.clone())),
                "{status}"
            );
        }
        // Scaled to zero and observed: settled.
        assert!(!is_rolling(&deploy(
            json!({}),
            3,
            0,
            json!({"observedGeneration": 3})
        )));
    }

    #[test]
    fn contenders_rank_by_age_and_leave_out_dry_runs_and_deletions() {
        let ps = [
            policy("old", 100, "Enforce", false),
            policy("dry", 150, "DryRun", false),
            policy("going", 160, "Enforce", false),
            policy("gone", 170, "Enforce", true),
            policy("young", 200, "Enforce", false),
        ];
        let rivals: Vec<Rival> = ps.iter().map(Rival::new).collect();
        let d = deploy(json!({"app": "web"}), 1, 1, json!({}));
        let pod = d.spec.as_ref().unwrap().template.spec.clone().unwrap();
        let names = |me: &str| {
            contenders(&rivals, me, &d, &pod)
                .iter()
                .map(|c| (c.name, c.rank))
                .collect::<Vec<_>>()
        };
        assert_eq!(names("young"), vec![("old", 0), ("going", 2), ("young", 4)]);
        // A DryRun policy sees the enforcing ones it would compete with.
        assert_eq!(
            names("dry"),
            vec![("old", 0), ("dry", 1), ("going", 2), ("young", 4)]
        );
        let other = deploy(json!({"app": "other"}), 1, 1, json!({}));
        assert!(contenders(&rivals, "old", &other, &pod).is_empty());
    }
}

#[cfg(test)]
#[path = "reconcile_faults.rs"]
mod faults;
