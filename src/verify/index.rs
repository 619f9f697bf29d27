//! The observer's pure core: pods, kubelet failure events and marker findings
//! go in; per-policy hook reports come out. No I/O, and the clock is passed
//! in, so tests feed it objects and read the reports (the pattern of Linkerd's
//! policy-controller status index).
//!
//! Each hook is followed per container *instance* (pod uid, container,
//! container ID), so a restarted container counts again; `outcome` classifies
//! what was seen, and an instance's hook is counted once.
//!
//! # Durable counts
//!
//! The policy's status is the durable record. Each hook report carries a
//! [`Watermark`]: every instance whose hook *happened* (postStart: the
//! container started; preStop: its stop began, i.e. the pod's deletion
//! request, else the container's exit) before `before` is in the counts, and
//! of the instances at or after `before` exactly those listed in `after`.
//!
//! Invariant: the counts, `before` and `after` are written together in one
//! status write, so a status always describes one consistent set of counted
//! instances. A restarted operator (kill, upgrade, leader change) seeds its
//! tallies from the status and counts an instance only if the record does not
//! already hold it: no double count. Instances the predecessor counted but
//! never wrote are not in the record, so they are counted again: no loss.
//!
//! `before` only moves when something is counted (so a quiet world causes no
//! status write), and never past an instance still pending, nor past `now -
//! SETTLE_MARGIN` (a pod watch that lags must not let an unseen instance fall
//! behind it). What cannot be recovered: a pod deleted and gone entirely
//! while no operator ran leaves nothing to observe.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use crate::api::types::{
    CountedInstance, HookFailure, HookReport, LifecyclePolicyStatus, Watermark,
};
use crate::apply::rollout::Failure;
use crate::hooks::hook::HookKind;
use crate::hooks::marker::Evidence;
use crate::text;
use crate::verify::outcome::{self, Deletion, NEAR_GRACE, Observation, Outcome, Terminated};

/// How far behind `now` the watermark stays: an instance first seen this
/// long after its hook happened could otherwise be taken as counted.
pub const SETTLE_MARGIN: SignedDuration = SignedDuration::from_secs(30);
/// Most instances listed after the watermark; beyond that the oldest are
/// folded under it (bounded status, at the price of a possible miss on a
/// restart during a very large burst).
pub const MAX_AFTER: usize = 256;
/// A failure event that matches no unsettled instance yet (the pod watch can
/// lag the event watch) waits this long for one.
const UNCLAIMED_FOR: SignedDuration = SignedDuration::from_secs(120);
/// Most failure events waiting for their instance, in all: beyond that the
/// oldest is dropped (and counted, see [`Index::take_dropped`]).
pub const MAX_UNCLAIMED: usize = 1024;
/// Most failure events waiting per namespace, so that one namespace's
/// events (its editors may create core Events) cannot push out another's.
pub const MAX_UNCLAIMED_PER_NAMESPACE: usize = 64;
/// Longest event or waiting message kept: its first and last halves (the
/// kubelet's exec failures end with the exit code and the hook's output).
/// Room for the kubelet's usual message, which quotes the marker-wrapped
/// command twice, whole: whoever shows it can still find the wrapper in it.
pub const MAX_MESSAGE: usize = 8192;
/// Longest name kept from an event (namespace, pod, container, UIDs): the
/// API's own limit is 253 bytes; anything longer matches nothing anyway.
const MAX_NAME: usize = 253;
/// How long after its grace period a preStop follow may still read: the
/// kubelet's kill and the last log lines reaching the API.
pub const FOLLOW_MARGIN: SignedDuration = SignedDuration::from_secs(30);
/// Length of the container ID prefix kept in the status.
const ID_LEN: usize = 16;

/// One container instance.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceKey {
    pub pod_uid: Box<str>,
    pub container: Arc<str>,
    pub container_id: Box<str>,
}

/// A policy owns a hook of a container: the hook on the pod is its rendered one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// "namespace/name".
    pub policy: String,
    pub container: String,
    pub kind: HookKind,
    pub evidence: Evidence,
    /// The token of the hook's marker lines (see `marker::token`).
    pub token: u64,
}

/// A policy as the index needs it to seed and reset its tallies.
pub struct PolicyRecord<'a> {
    /// "namespace/name".
    pub key: &'a str,
    /// A policy deleted and created again under the same name starts afresh.
    pub uid: Option<&'a str>,
    pub generation: Option<i64>,
    pub status: Option<&'a LifecyclePolicyStatus>,
}

/// A log the driver should read for markers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogRequest {
    /// Read the start of a running container's log (postStart).
    Read(InstanceKey),
    /// Follow a stopping container's log from `since_seconds` ago (preStop),
    /// until the container has stopped, at the latest `until`: the pod's
    /// deletion plus its grace period plus [`FOLLOW_MARGIN`], when the
    /// kubelet has killed whatever was still running.
    Follow {
        key: InstanceKey,
        since_seconds: i64,
        until: Timestamp,
    },
}

/// The pod whose log to read, and the policy whose markers to look for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogTarget {
    pub namespace: String,
    pub pod: String,
    /// "namespace/name".
    pub policy: String,
    /// The token its marker lines carry.
    pub token: u64,
}

/// A hook's end marker line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndMarker {
    pub rc: i32,
    /// The log line's timestamp.
    pub at: Option<Timestamp>,
}

/// What a log read found for one hook of one policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MarkerFinding {
    /// The start line, with its log timestamp when known.
    pub started: Option<Option<Timestamp>>,
    /// The end line.
    pub ended: Option<EndMarker>,
    /// The timestamp of the last line read, marker or not.
    pub last_line_at: Option<Timestamp>,
}

/// A kubelet FailedPostStartHook / FailedPreStopHook event, every string in
/// it bounded (see [`FailureEvent::from_event`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureEvent {
    pub uid: String,
    /// The event's namespace, which is its pod's.
    pub namespace: String,
    /// The pod it names, by name and UID: both must match.
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    pub kind: HookKind,
    pub count: i32,
    pub reason: String,
    pub message: String,
    pub time: Option<Timestamp>,
}

impl FailureEvent {
    /// The failure an Event reports, if it is one: a hook failure reason,
    /// from the kubelet, on a container of a Pod in the Event's own
    /// namespace. The index then applies it only to the pod of that
    /// namespace, name and UID. Every string is cut (at a character
    /// boundary) as it arrives, so that what the index keeps is bounded
    /// whatever the Event holds: core Events have no size limit of their own.
    ///
    /// Anyone allowed to create Events in a namespace can write one that
    /// says all this (the kubelet's name is only a field): what it cannot do
    /// is reach another namespace's pods. See README: what the proof is.
    pub fn from_event(ev: &Event) -> Option<FailureEvent> {
        let kind = match ev.reason.as_deref() {
            Some("FailedPostStartHook") => HookKind::PostStart,
            Some("FailedPreStopHook") => HookKind::PreStop,
            _ => return None,
        };
        let kubelet = ev.source.as_ref().and_then(|s| s.component.as_deref()) == Some("kubelet")
            || ev.reporting_component.as_deref() == Some("kubelet");
        let obj = &ev.involved_object;
        let namespace = ev.metadata.namespace.as_deref()?;
        if !kubelet
            || obj.kind.as_deref() != Some("Pod")
            || obj.namespace.as_deref() != Some(namespace)
        {
            return None;
        }
        let (Some(pod), Some(pod_uid), Some(path)) = (
            obj.name.as_deref(),
            obj.uid.as_deref(),
            obj.field_path.as_deref(),
        ) else {
            return None;
        };
        // Sidecars (restartable init containers) run hooks too.
        let container = ["spec.containers{", "spec.initContainers{"]
            .iter()
            .find_map(|p| path.strip_prefix(p))
            .and_then(|s| s.strip_suffix('}'))?;
        let name = |s: &str| text::prefix(s, MAX_NAME).to_string();
        Some(FailureEvent {
            uid: name(ev.metadata.uid.as_deref().unwrap_or_default()),
            namespace: name(namespace),
            pod: name(pod),
            pod_uid: name(pod_uid),
            container: name(container),
            kind,
            count: ev.count.unwrap_or(1).max(1),
            reason: kind_reason(kind).to_string(),
            message: text::head_and_tail(ev.message.as_deref().unwrap_or_default(), MAX_MESSAGE),
            time: ev
                .last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or_else(|| ev.event_time.as_ref().map(|t| t.0)),
        })
    }
}

fn kind_reason(kind: HookKind) -> &'static str {
    match kind {
        HookKind::PostStart => "FailedPostStartHook",
        HookKind::PreStop => "FailedPreStopHook",
    }
}

/// Most failure events remembered as applied, per namespace and in all:
/// beyond that the namespace's oldest is forgotten (events expire within
/// the hour, so only recent ones matter), and one namespace's Events can
/// only push out its own.
pub const MAX_SEEN_PER_NAMESPACE: usize = 1000;
pub const MAX_SEEN: usize = 10_000;

/// A namespace's applied failure events: uid → count, oldest first.
#[derive(Default)]
struct Seen {
    counts: HashMap<String, i32>,
    order: VecDeque<String>,
}

impl Seen {
    fn forget_oldest(&mut self) -> bool {
        let Some(uid) = self.order.pop_front() else {
            return false;
        };
        self.counts.remove(&uid);
        true
    }
}

/// A failure event waiting for its instance to show up.
#[derive(Clone, Debug)]
struct Unclaimed {
    event: FailureEvent,
    until: Timestamp,
}

/// One counted outcome, for metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct Counted {
    pub kind: HookKind,
    /// ran, implied, failed, timed_out, not_triggered, unknown.
    pub outcome: &'static str,
    pub duration_seconds: Option<f64>,
}

/// What is known of a hook still to be counted.
#[derive(Clone, Debug, Default)]
struct HookState {
    policy: Arc<str>,
    evidence: Evidence,
    /// The token of its marker lines.
    token: u64,
    obs: Observation,
    marker_ended_at: Option<Timestamp>,
    failure_time: Option<Timestamp>,
    /// A log read or follow was started.
    reading: bool,
    read_done: bool,
}

/// One hook of one instance. Counted hooks keep nothing: every running
/// hooked pod holds one, so what it holds is what the index costs.
#[derive(Clone, Debug, Default)]
enum Hook {
    /// No policy owns this hook here.
    #[default]
    Unowned,
    Open(Box<HookState>),
    Counted,
}

impl Hook {
    fn open(&self) -> Option<&HookState> {
        match self {
            Hook::Open(h) => Some(h),
            _ => None,
        }
    }

    fn open_mut(&mut self) -> Option<&mut HookState> {
        match self {
            Hook::Open(h) => Some(h),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
struct Instance {
    namespace: Arc<str>,
    pod: Box<str>,
    /// The owning workload (Kind/name), when known.
    workload: Option<Arc<str>>,
    first_seen: Timestamp,
    started_at: Option<Timestamp>,
    /// [postStart, preStop].
    hooks: [Hook; 2],
    /// The latest waiting message (PostStartHookError carries the kubelet's detail).
    waiting_message: Option<Box<str>>,
    /// The pod object is gone, or a newer instance of the container replaced
    /// this one: forget it once its hooks are settled.
    gone: bool,
}

/// Shared copies of the strings many instances repeat (namespaces, policy
/// keys, workloads, container names): one allocation each, not one per pod.
#[derive(Default)]
struct Names(HashSet<Arc<str>>);

impl Names {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = s.into();
        self.0.insert(a.clone());
        a
    }

    /// Drops the names nothing else holds any more.
    fn prune(&mut self) {
        self.0.retain(|a| Arc::strong_count(a) > 1);
    }
}

impl Instance {
    /// When this instance's hook happened (see the module docs); None while
    /// a preStop has not begun.
    fn hook_time(&self, kind: HookKind) -> Option<Timestamp> {
        match kind {
            HookKind::PostStart => Some(self.started_at.unwrap_or(self.first_seen)),
            HookKind::PreStop => {
                let obs = &self.hooks[1].open()?.obs;
                obs.deletion
                    .as_ref()
                    .map(|d| d.requested_at)
                    .or_else(|| obs.terminated.as_ref()?.finished_at)
                    .or_else(|| obs.terminated.as_ref().map(|_| self.first_seen))
            }
        }
    }

    fn settled(&self) -> bool {
        !self.hooks.iter().any(|h| matches!(h, Hook::Open(_)))
    }
}

/// Which container instances a hook report's counts hold (see the module
/// docs); `before: None` holds nothing.
#[derive(Clone, Debug, Default, PartialEq)]
struct Record {
    before: Option<Timestamp>,
    after: Vec<CountedId>,
}

/// A counted instance at or after the watermark.
#[derive(Clone, Debug, PartialEq)]
struct CountedId {
    /// Short container ID (see `short_id`).
    id: String,
    at: Timestamp,
}

impl Record {
    fn holds(&self, id: &str, at: Timestamp) -> bool {
        self.before.is_some_and(|b| at < b) || self.after.iter().any(|c| c.id == id)
    }
}

/// One hook's tally for one policy generation.
#[derive(Clone, Debug, Default)]
struct HookTally {
    report: HookReport,
    evidence: BTreeSet<String>,
    /// What the counts held when this tally began (the status a restarted
    /// operator found, or a generation change): those instances are never
    /// counted again. Frozen, unlike `record`.
    inherited: Record,
    /// What the counts hold now; written with them.
    record: Record,
}

impl HookTally {
    fn seeded(report: &HookReport) -> Self {
        let mut r = report.clone();
        let record = r
            .counted
            .take()
            .map(|w| Record {
                before: Some(w.before.0),
                after: w
                    .after
                    .into_iter()
                    .map(|c| CountedId {
                        id: c.container_id,
                        at: c.at.0,
                    })
                    .collect(),
            })
            .unwrap_or_default();
        HookTally {
            evidence: r
                .evidence
                .split(',')
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .collect(),
            report: r,
            inherited: record.clone(),
            record,
        }
    }

    /// Counted before this tally began.
    fn holds(&self, id: &str, at: Timestamp) -> bool {
        self.inherited.holds(id, at)
    }
}

#[derive(Clone, Debug, Default)]
struct Tally {
    uid: Option<String>,
    generation: Option<i64>,
    hooks: [HookTally; 2],
    /// Per workload (Kind/name), for the safe rollout: this generation's
    /// successful postStarts and latest hook failure.
    workloads: HashMap<String, WorkloadHealth>,
}

/// What this generation's hooks did in one workload's pods.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkloadHealth {
    /// postStarts that ran (or are implied), counted instances only. Those
    /// counted before a restart count too: had one failed, the halt would
    /// have been written with its count.
    pub post_start_ok: u32,
    pub failure: Option<Failure>,
}

/// The workload (Kind/name) that owns a pod: a Deployment through its
/// ReplicaSet (named `<deployment>-<pod-template-hash>`), a StatefulSet or
/// DaemonSet directly.
pub fn workload_of(pod: &Pod) -> Option<String> {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))?;
    match owner.kind.as_str() {
        "ReplicaSet" => {
            let hash = pod.labels().get("pod-template-hash")?;
            let name = owner.name.strip_suffix(&format!("-{hash}"))?;
            Some(format!("Deployment/{name}"))
        }
        "StatefulSet" | "DaemonSet" => Some(format!("{}/{}", owner.kind, owner.name)),
        _ => None,
    }
}

#[derive(Default)]
pub struct Index {
    instances: HashMap<InstanceKey, Instance>,
    tallies: HashMap<String, Tally>,
    /// The failure events already applied, per namespace.
    events: HashMap<String, Seen>,
    /// Entries in `events`, all namespaces.
    events_seen: usize,
    /// Oldest first.
    unclaimed: VecDeque<Unclaimed>,
    /// Unclaimed events dropped by the caps, not yet reported.
    dropped: u64,
    dirty: BTreeSet<String>,
    counted: Vec<Counted>,
    names: Names,
}

fn idx(kind: HookKind) -> usize {
    match kind {
        HookKind::PostStart => 0,
        HookKind::PreStop => 1,
    }
}

/// Whole seconds: container and deletion times have second precision, and
/// the status stores the watermark with second precision.
fn floor_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

fn short_id(container_id: &str) -> String {
    let id = container_id
        .split_once("://")
        .map_or(container_id, |(_, id)| id);
    id.chars().take(ID_LEN).collect()
}

fn seconds(d: SignedDuration) -> f64 {
    (d.as_secs_f64().max(0.0) * 1000.0).round() / 1000.0
}

impl Index {
    /// Makes sure the policy's tally is for its current generation: seeded
    /// from the status when the status describes that generation, reset to
    /// zero (counting only hooks from now on) when the spec changed under a
    /// running operator.
    pub fn policy(&mut self, p: &PolicyRecord, now: Timestamp) {
        let uid = p.uid.map(str::to_string);
        match self.tallies.get_mut(p.key).filter(|t| t.uid == uid) {
            Some(t) if t.generation == p.generation => {}
            Some(t) => {
                let before = Some(floor_second(now));
                *t = Tally {
                    uid,
                    generation: p.generation,
                    hooks: Default::default(),
                    workloads: HashMap::new(),
                };
                for h in &mut t.hooks {
                    h.inherited.before = before;
                    h.record.before = before;
                }
                self.dirty.insert(p.key.to_string());
            }
            None => {
                let status = p.status.filter(|s| {
                    s.observed_generation.is_some() && s.observed_generation == p.generation
                });
                let seed = |r: Option<&HookReport>| r.map(HookTally::seeded).unwrap_or_default();
                self.tallies.insert(
                    p.key.to_string(),
                    Tally {
                        uid,
                        generation: p.generation,
                        hooks: [
                            seed(status.and_then(|s| s.post_start.as_ref())),
                            seed(status.and_then(|s| s.pre_stop.as_ref())),
                        ],
                        workloads: HashMap::new(),
                    },
                );
            }
        }
    }

    /// Applies a pod as the watch saw it (`deleted`: the object is gone).
    /// Returns the logs to read.
    pub fn pod(
        &mut self,
        pod: &Pod,
        owners: &[Owner],
        deleted: bool,
        now: Timestamp,
    ) -> Vec<LogRequest> {
        if owners.is_empty() {
            return Vec::new();
        }
        let uid: Box<str> = pod.uid().unwrap_or_default().into();
        let deletion = pod.metadata.deletion_timestamp.as_ref().and_then(|t| {
            Deletion::from_pod(
                t.0,
                pod.metadata.deletion_grace_period_seconds.unwrap_or(30),
            )
        });
        // Sidecars report under initContainerStatuses.
        let statuses = pod.status.iter().flat_map(|s| {
            let regular = s.container_statuses.iter().flatten();
            regular.chain(s.init_container_statuses.iter().flatten())
        });
        let mut logs = Vec::new();
        let mut touched = Vec::new();
        for cs in statuses {
            let mine: Vec<&Owner> = owners.iter().filter(|o| o.container == cs.name).collect();
            if mine.is_empty() {
                continue;
            }
            let container = self.names.get(&cs.name);
            // The previous instance's end, as the kubelet reports it after a restart.
            if let Some(t) = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref())
                && let Some(id) = &t.container_id
            {
                let key = InstanceKey {
                    pod_uid: uid.clone(),
                    container: container.clone(),
                    container_id: id.as_str().into(),
                };
                if let Some(inst) = self.instances.get_mut(&key) {
                    let term = terminated(t);
                    inst.started_at = inst.started_at.or(t.started_at.as_ref().map(|s| s.0));
                    for h in inst.hooks.iter_mut().filter_map(Hook::open_mut) {
                        h.obs.terminated.get_or_insert(term.clone());
                    }
                    // A newer instance replaced it: no pod update will name
                    // it again but as this last state, so forget it once its
                    // hooks are settled (a crash-looping container holds
                    // two instances, not one per restart).
                    if cs.container_id.as_deref() != Some(id.as_str()) {
                        inst.gone = true;
                    }
                    touched.push(key);
                }
            }
            let Some(id) = cs.container_id.as_deref() else {
                continue;
            };
            let key = InstanceKey {
                pod_uid: uid.clone(),
                container,
                container_id: id.into(),
            };
            if deleted && !self.instances.contains_key(&key) {
                continue; // Forgotten already, or never seen: nothing to settle.
            }
            let names = &mut self.names;
            let inst = self
                .instances
                .entry(key.clone())
                .or_insert_with(|| Instance {
                    namespace: names.get(pod.namespace().as_deref().unwrap_or_default()),
                    pod: pod.name_any().into(),
                    workload: workload_of(pod).map(|w| names.get(&w)),
                    first_seen: now,
                    started_at: None,
                    hooks: Default::default(),
                    waiting_message: None,
                    gone: false,
                });
            observe_container(inst, cs, &mine, names, deletion.as_ref(), deleted);
            skip_recorded(&mut self.tallies, inst, &key);
            logs.extend(log_requests(inst, &key, deletion.as_ref(), deleted, now));
            touched.push(key);
        }
        for key in touched {
            self.claim_unclaimed(&key, now);
            self.settle(&key, now);
        }
        logs
    }

    /// Applies a kubelet failure event: it marks the container's unsettled
    /// instance failed. An event older than the watermark concerns an
    /// instance already counted (events outlive operator restarts).
    pub fn event(&mut self, ev: FailureEvent, now: Timestamp) {
        if !self.remember(&ev) {
            return;
        }
        self.unclaimed.retain(|u| u.until > now);
        match self.unsettled(&ev) {
            Some(key) => {
                self.apply_failure(&key, &ev);
                self.settle(&key, now);
            }
            None => self.wait_for_instance(ev, now),
        }
    }

    /// Records an event as applied, within the caps; false when this count
    /// of it was applied already (a re-list, an operator restart).
    fn remember(&mut self, ev: &FailureEvent) -> bool {
        let seen = self.events.entry(ev.namespace.clone()).or_default();
        match seen.counts.get_mut(&ev.uid) {
            Some(c) if ev.count <= *c => return false,
            Some(c) => {
                *c = ev.count;
                return true;
            }
            None => {}
        }
        seen.counts.insert(ev.uid.clone(), ev.count);
        seen.order.push_back(ev.uid.clone());
        self.events_seen += 1;
        if seen.order.len() > MAX_SEEN_PER_NAMESPACE && seen.forget_oldest() {
            self.events_seen -= 1;
        }
        if self.events_seen > MAX_SEEN
            && let Some(biggest) = self.events.values_mut().max_by_key(|s| s.order.len())
            && biggest.forget_oldest()
        {
            self.events_seen -= 1;
        }
        self.events.retain(|_, s| !s.order.is_empty());
        true
    }

    /// Failure events remembered as applied (see `remember`).
    pub fn events_seen(&self) -> usize {
        self.events_seen
    }

    /// Keeps an event until its instance shows up, within the caps: the
    /// oldest of its namespace goes when the namespace has its share, the
    /// oldest of all when the index has.
    fn wait_for_instance(&mut self, ev: FailureEvent, now: Timestamp) {
        let mine = self
            .unclaimed
            .iter()
            .filter(|u| u.event.namespace == ev.namespace)
            .count();
        if mine >= MAX_UNCLAIMED_PER_NAMESPACE
            && let Some(pos) = self
                .unclaimed
                .iter()
                .position(|u| u.event.namespace == ev.namespace)
        {
            self.unclaimed.remove(pos);
            self.dropped += 1;
        }
        if self.unclaimed.len() >= MAX_UNCLAIMED {
            self.unclaimed.pop_front();
            self.dropped += 1;
        }
        self.unclaimed.push_back(Unclaimed {
            event: ev,
            until: now + UNCLAIMED_FOR,
        });
    }

    /// Failure events dropped by the caps since the last call (for the
    /// `lifecycle_operator_observer_dropped_total` metric).
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Failure events waiting for their instance.
    pub fn unclaimed(&self) -> usize {
        self.unclaimed.len()
    }

    /// Applies what a log read found.
    pub fn markers(
        &mut self,
        key: &InstanceKey,
        kind: HookKind,
        found: MarkerFinding,
        now: Timestamp,
    ) {
        if let Some(h) = self
            .instances
            .get_mut(key)
            .and_then(|i| i.hooks[idx(kind)].open_mut())
        {
            h.read_done = true;
            if found.started.is_some() {
                h.obs.marker_started = found.started;
            }
            h.obs.last_log_at = found.last_line_at.or(h.obs.last_log_at);
            if let Some(end) = found.ended {
                h.obs.marker_rc = Some(end.rc);
                h.marker_ended_at = end.at;
            }
        }
        self.settle(key, now);
    }

    /// Where a log read for this hook goes, and whose markers it looks for.
    pub fn log_target(&self, key: &InstanceKey, kind: HookKind) -> Option<LogTarget> {
        let inst = self.instances.get(key)?;
        let h = inst.hooks[idx(kind)].open()?;
        Some(LogTarget {
            namespace: inst.namespace.to_string(),
            pod: inst.pod.to_string(),
            policy: h.policy.to_string(),
            token: h.token,
        })
    }

    /// The policy's reports for its current generation. `configured`: which
    /// hooks the policy sets; `duration_unknown`: why a hook's duration
    /// cannot be measured, when it cannot.
    pub fn reports(
        &mut self,
        p: &PolicyRecord,
        configured: [bool; 2],
        duration_unknown: [Option<String>; 2],
        now: Timestamp,
    ) -> [Option<HookReport>; 2] {
        self.policy(p, now);
        let tally = &self.tallies[p.key];
        let mut out: [Option<HookReport>; 2] = [None, None];
        for (i, kind) in HookKind::ALL.into_iter().enumerate() {
            if !configured[i] {
                continue;
            }
            let t = &tally.hooks[i];
            let mut r = t.report.clone();
            let seen = r.ran + r.implied + r.failed + r.timed_out + r.not_triggered + r.unknown;
            let ok = match kind {
                HookKind::PostStart => r.ran + r.implied,
                HookKind::PreStop => r.ran,
            };
            r.summary = format!("{ok}/{seen}");
            r.evidence = t.evidence.iter().cloned().collect::<Vec<_>>().join(",");
            r.duration_unknown = duration_unknown[i].clone();
            r.counted = t.record.before.map(|b| Watermark {
                before: Time(b),
                after: t
                    .record
                    .after
                    .iter()
                    .map(|c| CountedInstance {
                        container_id: c.id.clone(),
                        at: Time(c.at),
                    })
                    .collect(),
            });
            out[i] = Some(r);
        }
        out
    }

    /// Policies whose reports changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<String> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    /// Outcomes counted since the last call.
    pub fn take_counted(&mut self) -> Vec<Counted> {
        std::mem::take(&mut self.counted)
    }

    /// This generation's hook results per workload of the policy.
    /// Empty while the index has not seen this generation yet: results of
    /// an older generation say nothing about the new hooks.
    pub fn workload_health(
        &self,
        policy: &str,
        generation: Option<i64>,
    ) -> HashMap<String, WorkloadHealth> {
        self.tallies
            .get(policy)
            .filter(|t| t.generation == generation)
            .map(|t| t.workloads.clone())
            .unwrap_or_default()
    }

    /// Forgets the tallies of policies that no longer exist.
    pub fn retain_policies(&mut self, exists: impl Fn(&str) -> bool) {
        self.tallies.retain(|k, _| exists(k));
        self.names.prune();
    }

    /// Instances held in memory.
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// The instance a failure event is about: of the pod it names (namespace,
    /// name and UID), its container, with that hook still open.
    fn unsettled(&self, ev: &FailureEvent) -> Option<InstanceKey> {
        self.instances
            .iter()
            .filter(|(k, i)| names(ev, k, i) && i.hooks[idx(ev.kind)].open().is_some())
            // The newest: the one the kubelet is working on.
            .max_by_key(|(_, i)| (i.started_at, i.first_seen))
            .map(|(k, _)| k.clone())
    }

    fn apply_failure(&mut self, key: &InstanceKey, ev: &FailureEvent) {
        let Some(inst) = self.instances.get_mut(key) else {
            return;
        };
        let waiting = inst.waiting_message.clone();
        let Some(h) = inst.hooks[idx(ev.kind)].open_mut() else {
            return;
        };
        h.obs.failure_event = true;
        h.failure_time = ev.time;
        h.obs.failure_message = match ev.kind {
            HookKind::PostStart => waiting
                .map(String::from)
                .or_else(|| Some(ev.message.clone())),
            HookKind::PreStop => Some(ev.message.clone()),
        };
    }

    fn claim_unclaimed(&mut self, key: &InstanceKey, now: Timestamp) {
        self.unclaimed.retain(|u| u.until > now);
        if self.unclaimed.is_empty() {
            return;
        }
        for kind in HookKind::ALL {
            let Some(inst) = self.instances.get(key) else {
                return;
            };
            let pos = self.unclaimed.iter().position(|u| {
                let ev = &u.event;
                ev.kind == kind && names(ev, key, inst)
            });
            let Some(pos) = pos else { continue };
            if self.unsettled(&self.unclaimed[pos].event).as_ref() == Some(key)
                && let Some(u) = self.unclaimed.remove(pos)
            {
                self.apply_failure(key, &u.event);
            }
        }
    }

    /// Turns an instance's observations into counted outcomes, once per hook.
    fn settle(&mut self, key: &InstanceKey, now: Timestamp) {
        for kind in HookKind::ALL {
            let Some(inst) = self.instances.get(key) else {
                return;
            };
            let Some(h) = inst.hooks[idx(kind)].open() else {
                continue;
            };
            let o = match kind {
                HookKind::PostStart => outcome::post_start(&h.obs),
                HookKind::PreStop => outcome::pre_stop(&h.obs),
            };
            if !settles(kind, h, &o) {
                continue;
            }
            let at = inst
                .hook_time(kind)
                .map(floor_second)
                .unwrap_or(floor_second(now));
            let record = Counting {
                workload: inst.workload.clone(),
                policy: h.policy.clone(),
                kind,
                id: short_id(&key.container_id),
                at,
                pod: inst.pod.clone(),
                container: key.container.clone(),
                duration: duration(h, &o),
                grace_seconds: h.obs.deletion.as_ref().map(|d| d.grace_seconds),
                failure_time: h.failure_time,
            };
            let inst = self.instances.get_mut(key).expect("instance just read");
            inst.hooks[idx(kind)] = Hook::Counted;
            self.count(record, o, now);
        }
        // Forget instances once the pod is gone and both hooks are settled;
        // until then later updates of the pod find them settled.
        if self
            .instances
            .get(key)
            .is_some_and(|i| i.gone && i.settled())
        {
            self.instances.remove(key);
        }
    }

    fn count(&mut self, r: Counting, o: Outcome, now: Timestamp) {
        let Some(tally) = self.tallies.get_mut(&*r.policy) else {
            return; // The policy is gone.
        };
        let i = idx(r.kind);
        if tally.hooks[i].holds(&r.id, r.at) {
            return; // Counted before a restart; the status holds it.
        }
        // The oldest instance of this policy and hook still pending bounds
        // the watermark.
        let pending = self
            .instances
            .values()
            .filter_map(|inst| {
                let h = inst.hooks[i].open()?;
                (h.policy == r.policy)
                    .then(|| inst.hook_time(r.kind))
                    .flatten()
            })
            .min();
        let t = &mut tally.hooks[i];
        let report = &mut t.report;
        let time = Time(now);
        let label = match &o {
            Outcome::Ran { evidence } => {
                report.ran += 1;
                t.evidence.insert(evidence.to_string());
                "ran"
            }
            Outcome::StoppedContainer { exit_code, after } => {
                report.ran += 1;
                t.evidence.insert("containerExit".into());
                report.last_container_exit = Some(format!(
                    "pod {} container {}: {}",
                    r.pod,
                    r.container,
                    outcome::explain_stopped_container(*exit_code, *after)
                ));
                "ran"
            }
            Outcome::Implied => {
                report.implied += 1;
                t.evidence.insert("implied".into());
                "implied"
            }
            Outcome::Failed { reason, message } => {
                report.failed += 1;
                report.last_failure = Some(HookFailure {
                    pod: r.pod.to_string(),
                    container: r.container.to_string(),
                    reason: reason.clone(),
                    message: message.clone(),
                    time: Time(r.failure_time.unwrap_or(now)),
                });
                "failed"
            }
            Outcome::TimedOut => {
                report.timed_out += 1;
                report.last_failure = Some(HookFailure {
                    pod: r.pod.to_string(),
                    container: r.container.to_string(),
                    reason: "TimedOut".into(),
                    message: "the grace period ran out before the preStop hook finished".into(),
                    time,
                });
                "timed_out"
            }
            Outcome::NotTriggered { why } => {
                report.not_triggered += 1;
                report.last_not_triggered = Some(format!("{}/{}: {why}", r.pod, r.container));
                "not_triggered"
            }
            Outcome::Unknown { .. } => {
                report.unknown += 1;
                "unknown"
            }
            Outcome::Pending => return,
        };
        if let Some(d) = r.duration {
            let secs = seconds(d);
            report.last_duration_seconds = Some(secs);
            report.max_duration_seconds =
                Some(report.max_duration_seconds.map_or(secs, |m| m.max(secs)));
            if let Some(grace) = r.grace_seconds.filter(|g| *g > 0)
                && secs >= NEAR_GRACE * grace as f64
            {
                report.near_grace_period = Some(format!(
                    "pod {} container {}: preStop took {secs:.1}s of its {grace}s grace period",
                    r.pod, r.container
                ));
            }
        }
        if let Some(w) = &r.workload {
            let health = tally.workloads.entry(w.to_string()).or_default();
            match (&o, r.kind) {
                (Outcome::Ran { .. } | Outcome::Implied, HookKind::PostStart) => {
                    health.post_start_ok += 1
                }
                (Outcome::Failed { reason, message }, _) => {
                    health.failure = Some(Failure {
                        pod: r.pod.to_string(),
                        container: r.container.to_string(),
                        reason: reason.clone(),
                        message: message.clone(),
                    })
                }
                (Outcome::TimedOut, _) => {
                    health.failure = Some(Failure {
                        pod: r.pod.to_string(),
                        container: r.container.to_string(),
                        reason: "TimedOut".into(),
                        message: "the grace period ran out before the preStop hook finished".into(),
                    })
                }
                _ => {}
            }
        }
        let t = &mut tally.hooks[i];
        // The record: this instance, then move the watermark as far as is safe.
        let rec = &mut t.record;
        if rec.before.is_none_or(|b| r.at >= b) {
            rec.after.push(CountedId { id: r.id, at: r.at });
        }
        let mut limit = floor_second(now - SETTLE_MARGIN);
        if let Some(p) = pending {
            limit = limit.min(floor_second(p));
        }
        if rec.before.is_none_or(|b| limit > b) {
            rec.before = Some(limit);
        }
        if rec.after.len() > MAX_AFTER {
            // Fold the oldest seconds under the watermark.
            rec.after.sort_by_key(|c| c.at);
            let cut = rec.after[rec.after.len() - MAX_AFTER].at + SignedDuration::from_secs(1);
            rec.before = Some(rec.before.map_or(cut, |b| b.max(cut)));
        }
        let before = rec.before;
        rec.after.retain(|c| before.is_none_or(|b| c.at >= b));
        self.counted.push(Counted {
            kind: r.kind,
            outcome: label,
            duration_seconds: r.duration.map(seconds),
        });
        self.dirty.insert(r.policy.to_string());
    }
}

/// Whether a failure event names this instance's pod and container: a UID
/// alone could be copied from another namespace's pod.
fn names(ev: &FailureEvent, key: &InstanceKey, inst: &Instance) -> bool {
    *ev.pod_uid == *key.pod_uid
        && *ev.container == *key.container
        && *ev.namespace == *inst.namespace
        && *ev.pod == *inst.pod
}

/// What `count` needs about the instance being counted.
struct Counting {
    workload: Option<Arc<str>>,
    policy: Arc<str>,
    kind: HookKind,
    id: String,
    at: Timestamp,
    pod: Box<str>,
    container: Arc<str>,
    duration: Option<SignedDuration>,
    grace_seconds: Option<i64>,
    failure_time: Option<Timestamp>,
}

/// Whether an outcome is final. In marker mode the log is awaited before
/// settling for less than a marker.
fn settles(kind: HookKind, h: &HookState, o: &Outcome) -> bool {
    let waiting_for_log =
        h.evidence == Evidence::Marker && h.reading && !h.read_done && h.obs.marker_rc.is_none();
    match (kind, o) {
        (_, Outcome::Pending) => false,
        (_, Outcome::Ran { .. }) => true,
        // The kubelet kills the container on a failed postStart: final.
        (HookKind::PostStart, Outcome::Failed { .. }) => true,
        (HookKind::PostStart, _) => !waiting_for_log,
        (HookKind::PreStop, _) => h.obs.terminated.is_some() && !waiting_for_log,
    }
}

/// How long the hook ran: its two marker lines' log timestamps, or, for a
/// hook that stopped its container, from its start to the container's exit.
fn duration(h: &HookState, o: &Outcome) -> Option<SignedDuration> {
    if let Outcome::StoppedContainer { after, .. } = o {
        return *after;
    }
    let started = h.obs.marker_started??;
    let ended = h.marker_ended_at?;
    Some(ended.duration_since(started))
}

/// Records one container status on its instance.
fn observe_container(
    inst: &mut Instance,
    cs: &ContainerStatus,
    owners: &[&Owner],
    names: &mut Names,
    deletion: Option<&Deletion>,
    deleted: bool,
) {
    for o in owners {
        let slot = &mut inst.hooks[idx(o.kind)];
        if let Hook::Unowned = slot {
            *slot = Hook::Open(Box::default());
        }
        if let Hook::Open(h) = slot {
            if *h.policy != *o.policy {
                h.policy = names.get(&o.policy);
            }
            h.evidence = o.evidence;
            h.token = o.token;
            h.obs.evidence = o.evidence;
        }
    }
    let state = cs.state.clone().unwrap_or_default();
    if let Some(w) = &state.waiting {
        inst.waiting_message = w
            .message
            .as_deref()
            .map(|m| text::head_and_tail(m, MAX_MESSAGE).into())
            .or(inst.waiting_message.take());
    }
    let started = state
        .running
        .as_ref()
        .and_then(|r| r.started_at.as_ref())
        .or_else(|| state.terminated.as_ref()?.started_at.as_ref());
    inst.started_at = inst.started_at.or(started.map(|s| s.0));
    let running = state.running.is_some();
    let term = state.terminated.as_ref().map(terminated);
    for h in inst.hooks.iter_mut().filter_map(Hook::open_mut) {
        h.obs.running |= running;
        if term.is_some() {
            h.obs.terminated = term.clone();
        }
        // The first deletion seen is the one that started the termination:
        // the kubelet's final delete (grace 0) must not move the deadline.
        if h.obs.deletion.is_none() {
            h.obs.deletion = deletion.cloned();
        }
    }
    if deleted {
        inst.gone = true;
        for h in inst.hooks.iter_mut().filter_map(Hook::open_mut) {
            // Gone before we saw it stop: it stopped by now, when is unknown.
            h.obs.terminated.get_or_insert(Terminated {
                exit_code: 0,
                reason: None,
                finished_at: None,
            });
            // A follower still reading settles when its stream ends.
            h.read_done |= !h.reading;
        }
    }
}

/// Marks done the hooks the policy's status already counts (a restarted
/// operator re-lists the pods its predecessor saw): no log read, no count.
fn skip_recorded(tallies: &mut HashMap<String, Tally>, inst: &mut Instance, key: &InstanceKey) {
    let id = short_id(&key.container_id);
    for kind in HookKind::ALL {
        let Some(at) = inst.hook_time(kind).map(floor_second) else {
            continue;
        };
        let Some(h) = inst.hooks[idx(kind)].open() else {
            continue;
        };
        let Some(t) = tallies.get_mut(&*h.policy) else {
            continue;
        };
        if t.hooks[idx(kind)].holds(&id, at) {
            inst.hooks[idx(kind)] = Hook::Counted;
            if kind == HookKind::PostStart
                && let Some(w) = &inst.workload
            {
                t.workloads.entry(w.to_string()).or_default().post_start_ok += 1;
            }
        }
    }
}

/// Marker mode: read the log once the container runs (postStart), or follow
/// it while the pod goes away (preStop).
fn log_requests(
    inst: &mut Instance,
    key: &InstanceKey,
    deletion: Option<&Deletion>,
    deleted: bool,
    now: Timestamp,
) -> Vec<LogRequest> {
    let mut out = Vec::new();
    if let Some(h) = inst.hooks[0].open_mut()
        && h.evidence == Evidence::Marker
        && h.obs.running
        && !h.reading
        && !deleted
    {
        h.reading = true;
        out.push(LogRequest::Read(key.clone()));
    }
    if let Some(d) = deletion
        && let Some(h) = inst.hooks[1].open_mut()
        && h.evidence == Evidence::Marker
        && !h.reading
        && !deleted
    {
        h.reading = true;
        let since = (now.duration_since(d.requested_at).as_secs() + 5).max(5);
        let until = d
            .requested_at
            .checked_add(SignedDuration::from_secs(d.grace_seconds.max(0)))
            .and_then(|t| t.checked_add(FOLLOW_MARGIN))
            .unwrap_or(now + FOLLOW_MARGIN);
        out.push(LogRequest::Follow {
            key: key.clone(),
            since_seconds: since,
            until,
        });
    }
    out
}

fn terminated(t: &k8s_openapi::api::core::v1::ContainerStateTerminated) -> Terminated {
    Terminated {
        exit_code: t.exit_code,
        reason: t.reason.clone(),
        finished_at: t.finished_at.as_ref().map(|f| f.0),
    }
}

#[cfg(test)]
mod tests;
