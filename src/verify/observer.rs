//! The hook observer: the I/O around [`index::Index`]. Owns the pod and
//! kubelet-event watches and the log readers, feeds what they see into the
//! index, and hands the policies whose reports changed to reconcile, which
//! writes them on the status (coalesced to at most twice a second per policy).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, LogParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tracing::{debug, warn};

use super::drain::{DrainIndex, PodSight, Stopper, sleep::leading_sleep};
pub use super::index::WorkloadHealth;
use super::index::{
    FailureEvent, Index, InstanceKey, LogRequest, LogTarget, MarkerFinding, Owner, PolicyRecord,
};
use crate::api::identity::PolicyId;
use crate::api::names::reason;
use crate::api::types::{
    DrainStatus, HookReport, LifecyclePolicy, LifecyclePolicySpec, Mode, Verification,
};
use crate::apply::plan::{self, contains};
use crate::apply::policies::Policies;
use crate::apply::slot::Slot;
use crate::apply::workload::{HOOKED_LABEL, HOOKED_VALUE, PodShape, WorkloadKey};
use crate::hooks::hook::HookKind;
use crate::hooks::marker::{self, Evidence};
use crate::runtime::metrics::Metrics;

use super::pool::{self, PoolSize};

/// How many container logs the observer reads at once (see `pool`): the
/// operator's `--prestop-log-streams*` and `--poststart-log-streams*` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogStreams {
    /// Terminating containers' logs followed at once: by default 256, enough
    /// for a few hundred pods stopping together, each a long-lived streaming
    /// request; one namespace holds at most 192 of them, so the rest is
    /// always there for the others.
    pub pre_stop: PoolSize,
    /// postStart reads (the start of a running container's log: short) have
    /// a pool of their own, by default 64, at most 48 per namespace: no
    /// number of long preStops delays a canary's proof.
    pub post_start: PoolSize,
}

impl LogStreams {
    pub const DEFAULT: LogStreams = LogStreams {
        pre_stop: checked(256, 192),
        post_start: checked(64, 48),
    };
}

impl Default for LogStreams {
    fn default() -> Self {
        LogStreams::DEFAULT
    }
}

/// A size known when compiling: a bad one fails the build.
const fn checked(total: usize, per_namespace: usize) -> PoolSize {
    match PoolSize::new(total, per_namespace) {
        Ok(size) => size,
        Err(_) => panic!("a default log stream pool size is invalid"),
    }
}
/// A postStart read, waiting for its turn included, ends within this.
const POSTSTART_READ_LIMIT: Duration = Duration::from_secs(60);
/// Bytes read from the start of a log to find postStart markers.
const POSTSTART_LOG_BYTES: i64 = 64 * 1024;
/// Bytes read from a terminating container's log to find preStop markers.
const PRESTOP_LOG_BYTES: i64 = 1024 * 1024;
/// How often dirty policies are handed to reconcile: a hook is on the status
/// within about a second of running, at two status writes a second per busy policy.
const FLUSH: Duration = Duration::from_millis(500);
/// Events per page of the event list (at a restart, or when a watch must
/// list again).
const EVENT_PAGE: u32 = 10;
/// EndpointSlices per page (each holds at most 100 endpoints by default).
const SLICE_PAGE: u32 = 100;
/// No log follow outlives this, whatever its deadline says (the grace
/// period is capped at an hour).
const FOLLOW_LIMIT: Duration = Duration::from_secs(3700);

/// What the status says when a hook's duration cannot be measured.
const EVENTS_ONLY_DURATION: &str = "not measured: this hook is verified by kubelet events only (a shell-script exec hook with verification Markers is timed)";

/// A policy's hooks as they stand on pod templates, with the evidence each
/// can give; cached per policy generation, since every pod event needs them.
struct Watched {
    /// The rendering depends on the UID too (the markers' token): a policy
    /// created again under the same name starts at generation 1 again.
    uid: Option<String>,
    generation: Option<i64>,
    spec: LifecyclePolicySpec,
    /// [postStart, preStop].
    evidence: [Evidence; 2],
    /// The tokens of their marker lines, [postStart, preStop].
    tokens: [u64; 2],
    /// The preStop's leading sleep and the drain margin, in seconds.
    sleep: f64,
    margin: f64,
}

pub struct Observer {
    client: Client,
    policies: Policies,
    watched: Mutex<HashMap<String, Arc<Watched>>>,
    metrics: Arc<Metrics>,
    index: Mutex<Index>,
    /// Never locked together with `index`.
    drain: Mutex<DrainIndex>,
    post_start_logs: Arc<super::pool::FairPool>,
    pre_stop_logs: Arc<super::pool::FairPool>,
}

impl Observer {
    pub fn new(
        client: Client,
        policies: Policies,
        metrics: Arc<Metrics>,
        streams: LogStreams,
    ) -> Arc<Self> {
        let gauges = |kind: HookKind| metrics.log_stream_gauges(kind.field());
        Arc::new(Observer {
            client,
            post_start_logs: pool::FairPool::new(streams.post_start, gauges(HookKind::PostStart)),
            pre_stop_logs: pool::FairPool::new(streams.pre_stop, gauges(HookKind::PreStop)),
            policies,
            watched: Mutex::default(),
            metrics,
            index: Mutex::default(),
            drain: Mutex::default(),
        })
    }

    /// Watches pods and events until the streams end; sends the policies
    /// whose outcomes changed, at most once per `FLUSH`, to `dirty`.
    pub async fn run(self: Arc<Self>, dirty: mpsc::UnboundedSender<PolicyId>) {
        // The policies (and their statuses, the durable counts) must be known
        // before the first pods are: a pod nobody owns is not looked at again.
        self.policies.wait_ready().await;
        debug!("policies known; watching pods and events");
        // Only pods of templates a policy hooked: the rest of the cluster's
        // pods cost nothing (the label is restored with the last hook).
        let pods = watcher(
            Api::<Pod>::all(self.client.clone()),
            watcher::Config::default()
                .labels(&format!("{HOOKED_LABEL}={HOOKED_VALUE}"))
                .any_semantic(),
        )
        .backoff(crate::runtime::watches::backoff())
        .modify(trim_pod);
        // Only the two reasons that matter, filtered by the API server, in
        // small pages: an Event's message has no size limit of its own, and
        // a page is held whole while it is parsed (see README: Memory).
        let failed_hooks = |reason: &str| {
            watcher(
                Api::<Event>::all(self.client.clone()),
                watcher::Config::default()
                    .fields(&format!("type=Warning,reason={reason}"))
                    .page_size(EVENT_PAGE),
            )
            .backoff(crate::runtime::watches::backoff())
            .touched_objects()
        };
        let events = futures::stream::select(
            failed_hooks(reason::FAILED_POST_START_HOOK),
            failed_hooks(reason::FAILED_PRE_STOP_HOOK),
        );
        let me = self.clone();
        let pod_loop = pods.for_each(move |ev| {
            let me = me.clone();
            async move {
                match ev {
                    Ok(watcher::Event::Apply(p)) => me.on_pod(&p, false, true),
                    Ok(watcher::Event::InitApply(p)) => me.on_pod(&p, false, false),
                    Ok(watcher::Event::Delete(p)) => me.on_pod(&p, true, true),
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
        // EndpointSlices: matched against the hooked pods followed, not kept.
        let slices = watcher(
            Api::<EndpointSlice>::all(self.client.clone()),
            watcher::Config::default().page_size(SLICE_PAGE),
        )
        .backoff(crate::runtime::watches::backoff());
        let me = self.clone();
        let slice_loop = slices.for_each(move |ev| {
            let me = me.clone();
            async move { me.on_slice(ev) }
        });
        let me = self.clone();
        let flush = async move {
            let mut tick = tokio::time::interval(FLUSH);
            loop {
                tick.tick().await;
                for key in me.flush() {
                    let _ = dirty.unbounded_send(PolicyId::from_reference(&key));
                }
            }
        };
        tokio::join!(pod_loop, event_loop, slice_loop, flush);
    }

    /// The policy's hook reports for its current generation.
    pub fn reports(&self, policy: &LifecyclePolicy) -> (Option<HookReport>, Option<HookReport>) {
        let key = policy.reference();
        let w = self.watched(policy, &key);
        let duration_unknown = w
            .evidence
            .map(|e| (e == Evidence::Events).then(|| EVENTS_ONLY_DURATION.to_string()));
        let configured = [
            policy.spec.post_start.is_some(),
            policy.spec.pre_stop.is_some(),
        ];
        let [post, pre] = self.index.lock().unwrap().reports(
            &record(policy, &key),
            configured,
            duration_unknown,
            Timestamp::now(),
        );
        (post, pre)
    }

    /// How the policy's preStops drained, this generation: the status's
    /// own record until this process has timed a pod.
    pub fn drain(&self, policy: &LifecyclePolicy) -> Option<DrainStatus> {
        policy.spec.pre_stop.as_ref()?;
        let key = policy.reference();
        let w = self.watched(policy, &key);
        let generation = policy.metadata.generation;
        let mut drain = self.drain.lock().unwrap();
        drain.policy(&key, generation, drain_seed(policy), w.margin);
        drain.status(&key, generation)
    }

    /// This generation's hook results per workload of the policy.
    pub fn workload_health(
        &self,
        policy: &LifecyclePolicy,
    ) -> HashMap<WorkloadKey, WorkloadHealth> {
        self.index
            .lock()
            .unwrap()
            .workload_health(&policy.reference(), policy.metadata.generation)
    }

    /// Dirty policies, after recording the outcomes counted since last time.
    fn flush(&self) -> Vec<String> {
        let live = self.policies.references();
        let (drain_dirty, timed, drain_dropped) = {
            let mut drain = self.drain.lock().unwrap();
            drain.expire(Timestamp::now(), |k| live.contains(k));
            (drain.take_dirty(), drain.take_timed(), drain.take_dropped())
        };
        for t in timed {
            self.metrics.drain_removal.observe(t);
        }
        if drain_dropped > 0 {
            self.metrics.count_dropped("drain_pod", drain_dropped);
        }
        let (mut dirty, counted, dropped) = {
            let mut index = self.index.lock().unwrap();
            index.retain_policies(|k| live.contains(k));
            (
                index.take_dirty(),
                index.take_counted(),
                index.take_dropped(),
            )
        };
        if dropped > 0 {
            self.metrics.count_dropped("failure_event", dropped);
        }
        for c in counted {
            self.metrics
                .count_hook_outcome(c.kind.field(), c.outcome, 1);
            if let Some(d) = c.duration_seconds {
                self.metrics.observe_hook_duration(c.kind.field(), d);
            }
        }
        self.watched.lock().unwrap().retain(|k, _| live.contains(k));
        dirty.extend(drain_dirty);
        dirty.sort();
        dirty.dedup();
        dirty
    }

    /// `live`: seen as it happened, not in a (re-)list.
    fn on_pod(self: &Arc<Self>, pod: &Pod, deleted: bool, live: bool) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let here = self.policies.in_namespace(ns);
        let policies: Vec<Arc<LifecyclePolicy>> = here.acting().cloned().collect();
        let owners = self.owners(&policies, pod);
        if owners.is_empty() {
            return;
        }
        debug!(pod = %pod.name_any(), owners = owners.len(), deleted, "hooked pod");
        let now = Timestamp::now();
        let jobs = {
            let mut index = self.index.lock().unwrap();
            for p in &policies {
                let key = p.reference();
                if owners.iter().any(|o| o.policy == key) {
                    index.policy(&record(p, &key), now);
                }
            }
            index.pod(pod, &owners, deleted, now)
        };
        for job in jobs {
            self.spawn_log(job);
        }
        self.follow_drain(&policies, &owners, pod, deleted, live, now);
    }

    /// Follows the pod's drain for each policy that owns a preStop on it.
    fn follow_drain(
        &self,
        policies: &[Arc<LifecyclePolicy>],
        owners: &[Owner],
        pod: &Pod,
        gone: bool,
        live: bool,
        now: Timestamp,
    ) {
        let (Some(uid), Some(name)) = (pod.metadata.uid.as_deref(), pod.metadata.name.as_deref())
        else {
            return;
        };
        let mut stoppers = Vec::new();
        let mut drain = self.drain.lock().unwrap();
        for o in owners.iter().filter(|o| o.kind == HookKind::PreStop) {
            let Some(p) = policies.iter().find(|p| p.reference() == o.policy) else {
                continue;
            };
            let w = self.watched(p, &o.policy);
            drain.policy(&o.policy, p.metadata.generation, drain_seed(p), w.margin);
            stoppers.push(Stopper {
                policy: o.policy.as_str().into(),
                container: o.container.clone(),
                sleep: w.sleep,
                margin: w.margin,
            });
        }
        let sight = PodSight {
            uid,
            namespace: pod.metadata.namespace.as_deref().unwrap_or_default(),
            name,
            stoppers,
            deleting: pod.metadata.deletion_timestamp.is_some(),
            gone,
            live,
        };
        drain.pod(sight, now);
    }

    fn on_slice(&self, ev: Result<watcher::Event<EndpointSlice>, watcher::Error>) {
        let now = Timestamp::now();
        let mut drain = self.drain.lock().unwrap();
        match ev {
            Ok(watcher::Event::Init) => drain.relist_started(),
            Ok(watcher::Event::InitDone) => drain.relist_done(now),
            Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                drain.slice(&slice_key(&s), ready_endpoints(&s), now)
            }
            Ok(watcher::Event::Delete(s)) => drain.slice_deleted(&slice_key(&s), now),
            Err(e) => warn!(error = %e, "endpointslice watch"),
        }
    }

    /// Which policy owns which hook of which container of this pod: the
    /// policy's rendered hook must be the one on the container.
    fn owners(&self, policies: &[Arc<LifecyclePolicy>], pod: &Pod) -> Vec<Owner> {
        let Some(spec) = pod.spec.as_ref().map(PodShape::from) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for p in policies {
            if p.spec.mode != Mode::Enforce || p.spec.verification == Verification::Disabled {
                continue;
            }
            let key = p.reference();
            let w = self.watched(p, &key);
            for (slot, want) in plan::wanted(&w.spec, &spec) {
                let Slot::Hook { container, kind } = slot else {
                    continue;
                };
                let Some(have) = Slot::hook(&container, kind).current(&spec) else {
                    continue;
                };
                if contains(&have, &want) {
                    out.push(Owner {
                        policy: key.clone(),
                        container,
                        kind,
                        evidence: w.evidence[kind as usize],
                        token: w.tokens[kind as usize],
                    });
                }
            }
        }
        out
    }

    fn watched(&self, p: &LifecyclePolicy, key: &str) -> Arc<Watched> {
        let mut cache = self.watched.lock().unwrap();
        if let Some(w) = cache.get(key)
            && w.generation == p.metadata.generation
            && w.uid == p.metadata.uid
        {
            return w.clone();
        }
        let uid = p.metadata.uid.as_deref();
        let evidence = [
            (HookKind::PostStart, &p.spec.post_start),
            (HookKind::PreStop, &p.spec.pre_stop),
        ]
        .map(|(kind, h)| match (p.spec.verification, h) {
            (Verification::Markers, Some(h)) => marker::wrap(h, kind, key, uid).1,
            _ => Evidence::Events,
        });
        let tokens = [
            (HookKind::PostStart, &p.spec.post_start),
            (HookKind::PreStop, &p.spec.pre_stop),
        ]
        .map(|(kind, h)| h.as_ref().map_or(0, |h| marker::token(uid, kind, h)));
        let w = Arc::new(Watched {
            sleep: p.spec.pre_stop.as_ref().map_or(0.0, leading_sleep),
            margin: f64::from(p.spec.drain.clone().unwrap_or_default().margin_seconds),
            uid: p.metadata.uid.clone(),
            generation: p.metadata.generation,
            spec: p.rendered(),
            evidence,
            tokens,
        });
        cache.insert(key.to_string(), w.clone());
        w
    }

    fn on_event(&self, ev: &Event) {
        let Some(event) = FailureEvent::from_event(ev) else {
            return;
        };
        self.index.lock().unwrap().event(event, Timestamp::now());
    }

    /// Reads or follows one log for markers, in its pool's turn, and ends by
    /// its deadline whatever happens (waiting for the turn included).
    fn spawn_log(self: &Arc<Self>, job: LogRequest) {
        let me = self.clone();
        tokio::spawn(async move {
            let (key, kind, since, limit) = match job {
                LogRequest::Read(key) => (key, HookKind::PostStart, None, POSTSTART_READ_LIMIT),
                LogRequest::Follow {
                    key,
                    since_seconds,
                    until,
                } => {
                    let left = Timestamp::now().duration_until(until);
                    let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
                    (
                        key,
                        HookKind::PreStop,
                        Some(since_seconds),
                        left.min(FOLLOW_LIMIT),
                    )
                }
            };
            let deadline = tokio::time::Instant::now() + limit;
            let target = me.index.lock().unwrap().log_target(&key, kind);
            let found = match target {
                Some(target) => {
                    let pool = match kind {
                        HookKind::PostStart => &me.post_start_logs,
                        HookKind::PreStop => &me.pre_stop_logs,
                    };
                    match tokio::time::timeout_at(deadline, pool.acquire(&target.namespace)).await {
                        Ok(_permit) => me.read_markers(&key, kind, target, since, deadline).await,
                        Err(_) => {
                            debug!(pod = %target.pod, "no log stream free before the deadline");
                            MarkerFinding::default()
                        }
                    }
                }
                None => MarkerFinding::default(),
            };
            me.index
                .lock()
                .unwrap()
                .markers(&key, kind, found, Timestamp::now());
        });
    }

    /// Scans a container's log for this hook's marker lines: the start of the
    /// log (postStart), or a follow from `since` seconds ago until the
    /// container stops (preStop). Bounded in bytes, and in time by
    /// `deadline` (what was found by then is kept); errors only mean "not
    /// found".
    async fn read_markers(
        &self,
        key: &InstanceKey,
        kind: HookKind,
        target: LogTarget,
        follow_since: Option<i64>,
        deadline: tokio::time::Instant,
    ) -> MarkerFinding {
        let found = MarkerFinding::default();
        let LogTarget {
            namespace: ns,
            pod,
            policy,
            token,
        } = target;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let params = LogParams {
            container: Some(key.container.to_string()),
            follow: follow_since.is_some(),
            since_seconds: follow_since,
            timestamps: true,
            limit_bytes: Some(if follow_since.is_some() {
                PRESTOP_LOG_BYTES
            } else {
                POSTSTART_LOG_BYTES
            }),
            ..Default::default()
        };
        let stream = match tokio::time::timeout_at(deadline, api.log_stream(&pod, &params)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                debug!(%pod, error = %e, "log not readable");
                return found;
            }
            Err(_) => return found,
        };
        let mut scan = super::logread::MarkerScan::new(kind, &policy, token);
        let read = read_lines(stream, |l: &str, cut: bool| scan.line(l, cut));
        if tokio::time::timeout_at(deadline, read).await.is_err() {
            debug!(%pod, "log read reached its deadline");
        }
        if scan.overlong > 0 {
            self.metrics.count_dropped("log_line", scan.overlong);
        }
        scan.finding()
    }
}

/// Feeds a log stream through a bounded line buffer into `line` until the
/// stream ends, fails, or `line` has what it looks for (also what
/// `kubectl lifecycle pod --follow` reads logs with).
pub async fn read_lines(
    stream: impl futures::AsyncBufRead,
    mut line: impl FnMut(&str, bool) -> super::logread::Next,
) {
    let mut cutter = super::logread::LineCutter::new(super::logread::MAX_LINE);
    let mut stream = Box::pin(stream);
    loop {
        let chunk = match stream.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(chunk) => chunk,
        };
        let n = chunk.len();
        let next = cutter.feed(chunk, &mut line);
        stream.consume_unpin(n);
        if next == super::logread::Next::Stop {
            return;
        }
    }
    cutter.finish(&mut line);
}

/// The status's drain record, when it is for the policy's generation.
fn drain_seed(p: &LifecyclePolicy) -> Option<&DrainStatus> {
    p.status
        .as_ref()
        .filter(|s| s.observed_generation == p.metadata.generation)
        .and_then(|s| s.drain.as_ref())
}

fn slice_key(s: &EndpointSlice) -> String {
    format!(
        "{}/{}",
        s.metadata.namespace.as_deref().unwrap_or_default(),
        s.metadata.name.as_deref().unwrap_or_default()
    )
}

/// (pod UID, ready) per endpoint of a pod: ready unless it says it is not
/// (the API's reading of an unset `ready`); a terminating pod never is.
fn ready_endpoints(s: &EndpointSlice) -> impl Iterator<Item = (&str, bool)> {
    s.endpoints.iter().flatten().filter_map(|e| {
        let r = e.target_ref.as_ref()?;
        (r.kind.as_deref() == Some("Pod")).then_some(())?;
        let ready = e.conditions.as_ref().and_then(|c| c.ready) != Some(false);
        Some((r.uid.as_deref()?, ready))
    })
}

fn record<'a>(p: &'a LifecyclePolicy, key: &'a str) -> PolicyRecord<'a> {
    PolicyRecord {
        key,
        uid: p.metadata.uid.as_deref(),
        generation: p.metadata.generation,
        status: p.status.as_ref(),
    }
}

/// Keeps what the observer reads; drops the bulk of a pod object.
fn trim_pod(p: &mut Pod) {
    p.managed_fields_mut().clear();
    p.annotations_mut().clear();
    if let Some(spec) = p.spec.as_mut() {
        spec.volumes = None;
        // Plain init containers never carry hooks; sidecars do.
        if let Some(init) = spec.init_containers.as_mut() {
            init.retain(|c| c.restart_policy.as_deref() == Some("Always"));
        }
        let init = spec.init_containers.iter_mut().flatten();
        for c in spec.containers.iter_mut().chain(init) {
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
