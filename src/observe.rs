//! The hook observer: watches pods and the kubelet's Warning events, reads
//! marker lines from container logs, and keeps per-policy hook outcomes that
//! reconcile puts on the status.
//!
//! Each hook is followed per container *instance* (pod uid, container,
//! container ID), so a restarted container counts again. Outcomes come from
//! `outcome` (pure); this module only gathers the observations.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, LogParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::marker::{self, Evidence};
use crate::metrics::Metrics;
use crate::outcome::{self, Deletion, Observation, Outcome, Terminated};
use crate::plan::{self, HookKind, contains};
use crate::types::{
    HookFailure, HookReport, LifecyclePolicy, LifecyclePolicySpec, Mode, Verification,
};

/// At most this many container logs read or followed at once.
const LOG_STREAMS: usize = 64;
/// Bytes read from the start of a log to find a postStart marker.
const POSTSTART_LOG_BYTES: i64 = 64 * 1024;
/// Bytes read from a terminating container's log to find a preStop marker.
const PRESTOP_LOG_BYTES: i64 = 1024 * 1024;
/// How often dirty policies are handed to reconcile: status writes are
/// coalesced to about one per second per policy however many pods change.
const FLUSH: Duration = Duration::from_secs(1);

type InstanceKey = (String, String, String); // pod uid, container, container ID

#[derive(Default)]
struct Hook {
    policy: Option<(String, Evidence)>,
    obs: Observation,
    done: bool,
    /// A log read or follow is in flight or finished.
    reading: bool,
    read_done: bool,
}

struct Instance {
    namespace: String,
    pod: String,
    container: String,
    post: Hook,
    pre: Hook,
    /// The latest waiting message (PostStartHookError carries the kubelet's detail).
    waiting_message: Option<String>,
    /// The pod object is gone; forget the instance once its hooks are settled.
    gone: bool,
}

impl Instance {
    fn hook(&mut self, kind: HookKind) -> &mut Hook {
        match kind {
            HookKind::PostStart => &mut self.post,
            HookKind::PreStop => &mut self.pre,
        }
    }
}

/// Counters of one policy, for the current generation of its spec.
#[derive(Default)]
struct Tally {
    generation: Option<i64>,
    post: HookReport,
    pre: HookReport,
    post_evidence: HashSet<&'static str>,
    pre_evidence: HashSet<&'static str>,
}

#[derive(Default)]
struct State {
    instances: HashMap<InstanceKey, Instance>,
    tallies: HashMap<String, Tally>,
    /// Event uid → count already accounted.
    events: HashMap<String, i32>,
    dirty: HashSet<String>,
}

/// A policy's hooks as they stand on pod templates, with the evidence each
/// can give; cached per policy generation, since every pod event needs them.
struct Watched {
    generation: Option<i64>,
    spec: LifecyclePolicySpec,
    evidence: [Evidence; 2],
}

pub struct Observer {
    client: Client,
    policies: Store<LifecyclePolicy>,
    watched: Mutex<HashMap<String, Arc<Watched>>>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    logs: Arc<Semaphore>,
}

enum LogJob {
    Read(InstanceKey),
    Follow(InstanceKey, i64),
}

impl Observer {
    pub fn new(
        client: Client,
        policies: Store<LifecyclePolicy>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Observer {
            client,
            policies,
            watched: Mutex::default(),
            metrics,
            state: Mutex::default(),
            logs: Arc::new(Semaphore::new(LOG_STREAMS)),
        })
    }

    /// Watches pods and events until the streams end; sends the policies
    /// whose outcomes changed, at most once per `FLUSH`, to `dirty`.
    pub async fn run(self: Arc<Self>, dirty: mpsc::UnboundedSender<ObjectRef<LifecyclePolicy>>) {
        let pods = watcher(
            Api::<Pod>::all(self.client.clone()),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff()
        .modify(trim_pod);
        let events = watcher(
            Api::<Event>::all(self.client.clone()),
            watcher::Config::default().fields("type=Warning"),
        )
        .default_backoff()
        .touched_objects();
        let me = self.clone();
        let pod_loop = pods.for_each(move |ev| {
            let me = me.clone();
            async move {
                match ev {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                        me.on_pod(&p, false)
                    }
                    Ok(watcher::Event::Delete(p)) => me.on_pod(&p, true),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "pod watch"),
                }
            }
        });
        let me = self.clone();
        let event_loop = events.for_each(move |ev| {
            let me = me.clone();
            async move {
                match ev {
                    Ok(e) => me.on_event(&e),
                    Err(e) => warn!(error = %e, "event watch"),
                }
            }
        });
        let me = self.clone();
        let flush = async move {
            let mut tick = tokio::time::interval(FLUSH);
            loop {
                tick.tick().await;
                let dirty_now: Vec<String> = me.state.lock().unwrap().dirty.drain().collect();
                for key in dirty_now {
                    if let Some((ns, name)) = key.split_once('/') {
                        let _ = dirty.unbounded_send(ObjectRef::new(name).within(ns));
                    }
                }
            }
        };
        tokio::join!(pod_loop, event_loop, flush);
    }

    /// The policy's hook reports for its current generation; a new generation
    /// starts from zero (its hooks may have changed).
    pub fn reports(&self, policy: &LifecyclePolicy) -> (Option<HookReport>, Option<HookReport>) {
        let key = policy.reference();
        let mut st = self.state.lock().unwrap();
        let t = st.tallies.entry(key).or_default();
        if t.generation != policy.metadata.generation {
            *t = Tally {
                generation: policy.metadata.generation,
                ..Default::default()
            };
        }
        let finish = |mut r: HookReport, ev: &HashSet<&'static str>, with_ran: bool| {
            let seen = r.ran + r.implied + r.failed + r.timed_out + r.not_triggered + r.unknown;
            let ok = if with_ran { r.ran + r.implied } else { r.ran };
            r.summary = format!("{ok}/{seen}");
            let mut e: Vec<&str> = ev.iter().copied().collect();
            e.sort();
            r.evidence = e.join(",");
            r
        };
        let post = policy
            .spec
            .post_start
            .is_some()
            .then(|| finish(t.post.clone(), &t.post_evidence, true));
        let pre = policy
            .spec
            .pre_stop
            .is_some()
            .then(|| finish(t.pre.clone(), &t.pre_evidence, false));
        (post, pre)
    }

    fn on_pod(self: &Arc<Self>, pod: &Pod, deleted: bool) {
        let owners = self.owners(pod);
        if owners.is_empty() {
            return;
        }
        let uid = pod.uid().unwrap_or_default();
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let deletion = deletion(pod);
        let mut jobs = Vec::new();
        {
            let mut st = self.state.lock().unwrap();
            let statuses = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.clone())
                .unwrap_or_default();
            for cs in statuses {
                let mine: Vec<&(String, String, HookKind, Evidence)> =
                    owners.iter().filter(|o| o.1 == cs.name).collect();
                if mine.is_empty() {
                    continue;
                }
                // The previous instance's end, as the kubelet reports it after a restart.
                if let Some(t) = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref())
                    && let Some(id) = &t.container_id
                    && let Some(inst) =
                        st.instances
                            .get_mut(&(uid.clone(), cs.name.clone(), id.clone()))
                {
                    let term = terminated(t);
                    inst.post.obs.terminated.get_or_insert(term.clone());
                    inst.pre.obs.terminated.get_or_insert(term);
                }
                let Some(id) = cs.container_id.clone() else {
                    continue;
                };
                let key = (uid.clone(), cs.name.clone(), id);
                if deleted && !st.instances.contains_key(&key) {
                    continue; // Forgotten already, or never hooked: nothing to settle.
                }
                let inst = st.instances.entry(key.clone()).or_insert_with(|| Instance {
                    namespace: ns.clone(),
                    pod: name.clone(),
                    container: cs.name.clone(),
                    post: Hook::default(),
                    pre: Hook::default(),
                    waiting_message: None,
                    gone: false,
                });
                for (policy, _, kind, evidence) in mine {
                    let h = inst.hook(*kind);
                    h.policy = Some((policy.clone(), *evidence));
                    h.obs.evidence = *evidence;
                }
                let state = cs.state.clone().unwrap_or_default();
                if let Some(w) = &state.waiting {
                    inst.waiting_message = w.message.clone().or(inst.waiting_message.take());
                }
                let running = state.running.is_some();
                let term = state.terminated.as_ref().map(terminated);
                for h in [&mut inst.post, &mut inst.pre] {
                    h.obs.running |= running;
                    if term.is_some() {
                        h.obs.terminated = term.clone();
                    }
                    // The first deletion seen is the one that started the
                    // termination: the kubelet's final delete (grace 0) must
                    // not move the deadline.
                    if h.obs.deletion.is_none() {
                        h.obs.deletion = deletion.clone();
                    }
                }
                if deleted {
                    inst.gone = true;
                    for h in [&mut inst.post, &mut inst.pre] {
                        // Gone before we saw it stop: it stopped by now.
                        h.obs.terminated.get_or_insert(Terminated {
                            exit_code: 0,
                            reason: None,
                            finished_at: Some(Timestamp::now()),
                        });
                        // A follower still reading settles when its stream ends.
                        h.read_done |= !h.reading;
                    }
                }
                // Marker mode: read the log once the container runs (postStart)
                // or follow it while the pod goes away (preStop).
                if inst
                    .post
                    .policy
                    .as_ref()
                    .is_some_and(|p| p.1 == Evidence::Marker)
                    && running
                    && !inst.post.reading
                    && !inst.post.done
                {
                    inst.post.reading = true;
                    jobs.push(LogJob::Read(key.clone()));
                }
                if let Some(d) = &deletion
                    && inst
                        .pre
                        .policy
                        .as_ref()
                        .is_some_and(|p| p.1 == Evidence::Marker)
                    && !inst.pre.reading
                    && !inst.pre.done
                    && !deleted
                {
                    inst.pre.reading = true;
                    let since =
                        (Timestamp::now().duration_since(d.requested_at).as_secs() + 5).max(5);
                    jobs.push(LogJob::Follow(key.clone(), since));
                }
                self.settle(&mut st, &key);
            }
        }
        for job in jobs {
            self.spawn_log(job);
        }
    }

    /// Which policy owns which hook of which container of this pod: the
    /// policy's rendered hook must be the one on the container.
    fn owners(&self, pod: &Pod) -> Vec<(String, String, HookKind, Evidence)> {
        let ns = pod.namespace();
        let Some(spec) = pod.spec.as_ref() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for p in self.policies.state().iter().filter(|p| p.namespace() == ns) {
            if p.spec.mode != Mode::Enforce || p.spec.verification == Verification::Disabled {
                continue;
            }
            let pref = p.reference();
            let w = self.watched(p, &pref);
            for (slot, want) in plan::wanted(&w.spec, spec) {
                let plan::Slot::Hook { container, kind } = slot else {
                    continue;
                };
                let Some(have) = plan::Slot::hook(&container, kind).current(spec) else {
                    continue;
                };
                if contains(&have, &want) {
                    let evidence = w.evidence[kind as usize]; // [postStart, preStop]
                    out.push((pref.clone(), container, kind, evidence));
                }
            }
        }
        out
    }

    fn watched(&self, p: &LifecyclePolicy, pref: &str) -> Arc<Watched> {
        let mut cache = self.watched.lock().unwrap();
        if let Some(w) = cache.get(pref)
            && w.generation == p.metadata.generation
        {
            return w.clone();
        }
        let evidence = [
            (HookKind::PostStart, &p.spec.post_start),
            (HookKind::PreStop, &p.spec.pre_stop),
        ]
        .map(|(kind, h)| match (p.spec.verification, h) {
            (Verification::Markers, Some(h)) => marker::wrap(h, kind, pref).1,
            _ => Evidence::Events,
        });
        let w = Arc::new(Watched {
            generation: p.metadata.generation,
            spec: p.rendered(),
            evidence,
        });
        cache.insert(pref.to_string(), w.clone());
        w
    }

    fn on_event(&self, ev: &Event) {
        let kind = match ev.reason.as_deref() {
            Some("FailedPostStartHook") => HookKind::PostStart,
            Some("FailedPreStopHook") => HookKind::PreStop,
            _ => return,
        };
        let obj = &ev.involved_object;
        let (Some(uid), Some(path)) = (obj.uid.clone(), obj.field_path.as_deref()) else {
            return;
        };
        let Some(container) = path
            .strip_prefix("spec.containers{")
            .and_then(|s| s.strip_suffix('}'))
        else {
            return;
        };
        let count = ev.count.unwrap_or(1).max(1);
        let ev_uid = ev.metadata.uid.clone().unwrap_or_default();
        let mut st = self.state.lock().unwrap();
        let seen = st.events.get(&ev_uid).copied().unwrap_or(0);
        if count <= seen {
            return;
        }
        // Events expire within the hour; the map only needs recent ones.
        if st.events.len() > 10_000 {
            st.events.clear();
        }
        st.events.insert(ev_uid, count);
        let delta = i64::from(count - seen);
        // The kubelet does not say which instance failed: the latest
        // unsettled one of that container, else any of it.
        let key = st
            .instances
            .iter()
            .filter(|(k, i)| k.0 == uid && k.1 == container && i.hook_ref(kind).policy.is_some())
            .max_by_key(|(_, i)| !i.hook_ref(kind).done)
            .map(|(k, _)| k.clone());
        let Some(key) = key else { return };
        let (policy, failure) = {
            let inst = st.instances.get_mut(&key).expect("key just found");
            let message = match kind {
                HookKind::PostStart => inst.waiting_message.clone(),
                HookKind::PreStop => None,
            }
            .or_else(|| ev.message.clone())
            .unwrap_or_default();
            let failure = HookFailure {
                pod: inst.pod.clone(),
                container: inst.container.clone(),
                reason: ev.reason.clone().unwrap_or_default(),
                message,
                time: ev
                    .last_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_else(|| Timestamp::now().to_string()),
            };
            let h = inst.hook(kind);
            h.obs.failure_event = true;
            if kind == HookKind::PreStop {
                // Settled with the container's end: a hook cut by the grace
                // period fails too, and then it timed out.
                h.obs.failure_message = Some(failure.message.clone());
                (None, failure)
            } else {
                h.done = true;
                (h.policy.clone().map(|p| p.0), failure)
            }
        };
        let Some(policy) = policy else {
            self.settle(&mut st, &key);
            return;
        };
        let tally = st.tallies.entry(policy.clone()).or_default();
        let report = match kind {
            HookKind::PostStart => &mut tally.post,
            HookKind::PreStop => &mut tally.pre,
        };
        report.failed += delta;
        report.last_failure = Some(failure);
        self.count_outcome(kind, "failed", delta as u64);
        st.dirty.insert(policy);
    }

    /// Turns an instance's observations into counted outcomes, once per hook.
    fn settle(&self, st: &mut State, key: &InstanceKey) {
        let Some(inst) = st.instances.get_mut(key) else {
            return;
        };
        let mut counted: Vec<(String, HookKind, Outcome, String, String)> = Vec::new();
        for kind in [HookKind::PostStart, HookKind::PreStop] {
            let (pod, container) = (inst.pod.clone(), inst.container.clone());
            let h = inst.hook(kind);
            let Some((policy, evidence)) = h.policy.clone() else {
                continue;
            };
            if h.done {
                continue;
            }
            let o = match kind {
                HookKind::PostStart => outcome::post_start(&h.obs),
                HookKind::PreStop => outcome::pre_stop(&h.obs),
            };
            // In marker mode, wait for the log before settling for less than a marker.
            let waiting_for_log = evidence == Evidence::Marker
                && h.reading
                && !h.read_done
                && h.obs.marker_rc.is_none();
            let stopped = h.obs.terminated.is_some();
            let settles = match &o {
                Outcome::Pending => false,
                Outcome::Failed { .. } if kind == HookKind::PreStop => stopped,
                Outcome::Ran { .. } | Outcome::Failed { .. } | Outcome::NotTriggered { .. } => true,
                Outcome::Implied | Outcome::TimedOut | Outcome::Unknown { .. } => !waiting_for_log,
            };
            if settles {
                h.done = true;
                counted.push((policy, kind, o, pod, container));
            }
        }
        for (policy, kind, o, pod, container) in counted {
            let tally = st.tallies.entry(policy.clone()).or_default();
            let (report, evidence) = match kind {
                HookKind::PostStart => (&mut tally.post, &mut tally.post_evidence),
                HookKind::PreStop => (&mut tally.pre, &mut tally.pre_evidence),
            };
            let label = match &o {
                Outcome::Ran { evidence: e } => {
                    report.ran += 1;
                    evidence.insert(e);
                    "ran"
                }
                Outcome::Implied => {
                    report.implied += 1;
                    evidence.insert("implied");
                    "implied"
                }
                Outcome::Failed { reason, message } => {
                    report.failed += 1;
                    report.last_failure = Some(HookFailure {
                        pod,
                        container,
                        reason: reason.clone(),
                        message: message.clone(),
                        time: Timestamp::now().to_string(),
                    });
                    "failed"
                }
                Outcome::TimedOut => {
                    report.timed_out += 1;
                    report.last_failure = Some(HookFailure {
                        pod,
                        container,
                        reason: "TimedOut".into(),
                        message: "the grace period ran out before the preStop hook finished".into(),
                        time: Timestamp::now().to_string(),
                    });
                    "timed_out"
                }
                Outcome::NotTriggered { why } => {
                    report.not_triggered += 1;
                    report.last_not_triggered = Some(format!("{pod}/{container}: {why}"));
                    "not_triggered"
                }
                Outcome::Unknown { .. } => {
                    report.unknown += 1;
                    "unknown"
                }
                Outcome::Pending => continue,
            };
            self.count_outcome(kind, label, 1);
            st.dirty.insert(policy);
        }
        // Forget instances once the pod is gone and both hooks are settled;
        // until then later updates of the pod find them settled.
        if let Some(inst) = st.instances.get(key)
            && inst.gone
            && inst.post.done_or_unowned()
            && inst.pre.done_or_unowned()
        {
            st.instances.remove(key);
        }
    }

    fn count_outcome(&self, kind: HookKind, outcome: &str, n: u64) {
        self.metrics.count_hook_outcome(kind.field(), outcome, n);
    }

    fn spawn_log(self: &Arc<Self>, job: LogJob) {
        let me = self.clone();
        tokio::spawn(async move {
            let Ok(_permit) = me.logs.clone().acquire_owned().await else {
                return;
            };
            let (key, kind, found) = match job {
                LogJob::Read(key) => {
                    let found = me.read_marker(&key, HookKind::PostStart, None).await;
                    (key, HookKind::PostStart, found)
                }
                LogJob::Follow(key, since) => {
                    let found = me.read_marker(&key, HookKind::PreStop, Some(since)).await;
                    (key, HookKind::PreStop, found)
                }
            };
            let mut st = me.state.lock().unwrap();
            if let Some(inst) = st.instances.get_mut(&key) {
                let h = inst.hook(kind);
                h.read_done = true;
                if found.is_some() {
                    h.obs.marker_rc = found;
                }
            }
            me.settle(&mut st, &key);
        });
    }

    /// Scans a container's log for this hook's marker: the start of the log
    /// (postStart), or a follow from `since` seconds ago until the container
    /// stops (preStop). Bounded in bytes; errors only mean "not found".
    async fn read_marker(
        &self,
        key: &InstanceKey,
        kind: HookKind,
        follow_since: Option<i64>,
    ) -> Option<i32> {
        let (ns, pod, container, policy) = {
            let st = self.state.lock().unwrap();
            let inst = st.instances.get(key)?;
            let h = match kind {
                HookKind::PostStart => &inst.post,
                HookKind::PreStop => &inst.pre,
            };
            (
                inst.namespace.clone(),
                inst.pod.clone(),
                inst.container.clone(),
                h.policy.clone()?.0,
            )
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let params = LogParams {
            container: Some(container),
            follow: follow_since.is_some(),
            since_seconds: follow_since,
            limit_bytes: Some(if follow_since.is_some() {
                PRESTOP_LOG_BYTES
            } else {
                POSTSTART_LOG_BYTES
            }),
            ..Default::default()
        };
        let stream = match api.log_stream(&pod, &params).await {
            Ok(s) => s,
            Err(e) => {
                debug!(%pod, error = %e, "log not readable");
                return None;
            }
        };
        let mut lines = stream.lines();
        let deadline = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                line = lines.try_next() => match line {
                    Ok(Some(l)) => {
                        if let Some(m) = marker::parse(&l)
                            && m.hook == kind
                            && m.policy == policy
                        {
                            return Some(m.rc);
                        }
                    }
                    _ => return None,
                },
                _ = &mut deadline => return None,
            }
        }
    }
}

impl Instance {
    fn hook_ref(&self, kind: HookKind) -> &Hook {
        match kind {
            HookKind::PostStart => &self.post,
            HookKind::PreStop => &self.pre,
        }
    }
}

impl Hook {
    fn done_or_unowned(&self) -> bool {
        self.done || self.policy.is_none()
    }
}

fn terminated(t: &k8s_openapi::api::core::v1::ContainerStateTerminated) -> Terminated {
    Terminated {
        exit_code: t.exit_code,
        reason: t.reason.clone(),
        finished_at: t.finished_at.as_ref().map(|f| f.0),
    }
}

fn deletion(pod: &Pod) -> Option<Deletion> {
    let at = pod.metadata.deletion_timestamp.as_ref()?.0;
    Deletion::from_pod(at, pod.metadata.deletion_grace_period_seconds.unwrap_or(30))
}

/// Keeps what the observer reads; drops the bulk of a pod object.
fn trim_pod(p: &mut Pod) {
    p.managed_fields_mut().clear();
    p.annotations_mut().clear();
    if let Some(spec) = p.spec.as_mut() {
        spec.volumes = None;
        spec.init_containers = None;
        for c in &mut spec.containers {
            c.env = None;
            c.env_from = None;
            c.volume_mounts = None;
            c.args = None;
            c.liveness_probe = None;
            c.readiness_probe = None;
            c.startup_probe = None;
        }
    }
}
