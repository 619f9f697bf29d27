//! Instance tracking: each hooked container instance (pod uid, container,
//! container ID) the pod watch shows, what its hooks showed (running,
//! terminated, the pod's deletion, marker lines read from its log), and when
//! that is enough to settle a hook into one outcome, which `counts` then
//! counts. Counted hooks keep nothing, and an instance is forgotten once its
//! pod is gone and its hooks are settled: this is what the index costs per
//! running hooked pod.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use super::counts::{Counting, Tally, short_id};
use super::health::workload_of;
use super::{Index, MAX_MESSAGE, Names, floor_second, idx};
use crate::hooks::hook::{DEFAULT_GRACE_SECONDS, HookKind};
use crate::hooks::marker::Evidence;
use crate::text;
use crate::verify::outcome::{self, Deletion, Observation, Outcome, Terminated};

/// How long after its grace period a preStop follow may still read: the
/// kubelet's kill and the last log lines reaching the API.
pub const FOLLOW_MARGIN: SignedDuration = SignedDuration::from_secs(30);

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

/// What is known of a hook still to be counted.
#[derive(Clone, Debug, Default)]
pub(super) struct HookState {
    pub(super) policy: Arc<str>,
    pub(super) evidence: Evidence,
    /// The token of its marker lines.
    pub(super) token: u64,
    pub(super) obs: Observation,
    pub(super) marker_ended_at: Option<Timestamp>,
    pub(super) failure_time: Option<Timestamp>,
    /// A log read or follow was started.
    pub(super) reading: bool,
    pub(super) read_done: bool,
}

/// One hook of one instance. Counted hooks keep nothing: every running
/// hooked pod holds one, so what it holds is what the index costs.
#[derive(Clone, Debug, Default)]
pub(super) enum Hook {
    /// No policy owns this hook here.
    #[default]
    Unowned,
    Open(Box<HookState>),
    Counted,
}

impl Hook {
    pub(super) fn open(&self) -> Option<&HookState> {
        match self {
            Hook::Open(h) => Some(h),
            _ => None,
        }
    }

    pub(super) fn open_mut(&mut self) -> Option<&mut HookState> {
        match self {
            Hook::Open(h) => Some(h),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Instance {
    pub(super) namespace: Arc<str>,
    pub(super) pod: Box<str>,
    /// The owning workload (namespace/Kind/name), when known.
    pub(super) workload: Option<Arc<str>>,
    pub(super) first_seen: Timestamp,
    pub(super) started_at: Option<Timestamp>,
    /// [postStart, preStop].
    pub(super) hooks: [Hook; 2],
    /// The latest waiting message (PostStartHookError carries the kubelet's detail).
    pub(super) waiting_message: Option<Box<str>>,
    /// The pod object is gone, or a newer instance of the container replaced
    /// this one: forget it once its hooks are settled.
    pub(super) gone: bool,
}

impl Instance {
    /// When this instance's hook happened (see `counts`); None while
    /// a preStop has not begun.
    pub(super) fn hook_time(&self, kind: HookKind) -> Option<Timestamp> {
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

/// When the oldest instance whose hook of this kind, owned by this policy, is
/// still to be counted had its hook happen: the watermark stays below it.
pub(super) fn oldest_pending(
    instances: &HashMap<InstanceKey, Instance>,
    policy: &str,
    kind: HookKind,
) -> Option<Timestamp> {
    instances
        .values()
        .filter_map(|inst| {
            let h = inst.hooks[idx(kind)].open()?;
            (*h.policy == *policy)
                .then(|| inst.hook_time(kind))
                .flatten()
        })
        .min()
}

impl Index {
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
            let spec = pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds);
            let spec = spec.unwrap_or(DEFAULT_GRACE_SECONDS);
            let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(spec);
            Deletion::from_pod(t.0, grace, spec)
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
            let inst = self.instances.entry(key.clone()).or_insert_with(|| {
                let ns = pod.namespace().unwrap_or_default();
                Instance {
                    // Across namespaces, as a cluster policy names it.
                    workload: workload_of(pod).map(|w| names.get(&format!("{ns}/{w}"))),
                    namespace: names.get(&ns),
                    pod: pod.name_any().into(),
                    first_seen: now,
                    started_at: None,
                    hooks: Default::default(),
                    waiting_message: None,
                    gone: false,
                }
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

    /// Turns an instance's observations into counted outcomes, once per hook.
    pub(super) fn settle(&mut self, key: &InstanceKey, now: Timestamp) {
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
        // The first deletion seen started the termination; a later one may
        // only shorten its period (see `Deletion::merge`).
        h.obs.deletion = match (h.obs.deletion.take(), deletion) {
            (Some(seen), Some(d)) => Some(seen.merge(d)),
            (seen, d) => seen.or(d.cloned()),
        };
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
