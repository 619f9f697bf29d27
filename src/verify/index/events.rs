//! The kubelet's FailedPostStartHook / FailedPreStopHook events: taken only
//! from the kubelet, about a pod of the event's own namespace, every string
//! bounded on arrival; remembered as applied (so a re-list or a restart does
//! not apply one twice), and matched to the instance they name. An event
//! that arrives before its pod waits for it a while. Every store is capped,
//! per namespace and in all, so one namespace's Events cannot push out
//! another's.

use std::collections::{HashMap, VecDeque};

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::instances::{Instance, InstanceKey};
use super::{Index, MAX_MESSAGE, idx};
use crate::api::names::reason;
use crate::hooks::hook::HookKind;
use crate::text;

/// A failure event that matches no unsettled instance yet (the pod watch can
/// lag the event watch) waits this long for one.
const UNCLAIMED_FOR: SignedDuration = SignedDuration::from_secs(120);

/// Most failure events waiting for their instance, in all: beyond that the
/// oldest is dropped (and counted, see [`Index::take_dropped`]).
pub const MAX_UNCLAIMED: usize = 1024;
/// Most failure events waiting per namespace, so that one namespace's
/// events (its editors may create core Events) cannot push out another's.
pub const MAX_UNCLAIMED_PER_NAMESPACE: usize = 64;

/// Longest name kept from an event (namespace, pod, container, UIDs): the
/// API's own limit is 253 bytes; anything longer matches nothing anyway.
const MAX_NAME: usize = 253;

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
            Some(reason::FAILED_POST_START_HOOK) => HookKind::PostStart,
            Some(reason::FAILED_PRE_STOP_HOOK) => HookKind::PreStop,
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
        HookKind::PostStart => reason::FAILED_POST_START_HOOK,
        HookKind::PreStop => reason::FAILED_PRE_STOP_HOOK,
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
pub(super) struct Seen {
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
pub(super) struct Unclaimed {
    event: FailureEvent,
    until: Timestamp,
}

impl Index {
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
    /// of it was applied already (a re-list, an operator restart). Visible
    /// to the index (its tests call it).
    pub(super) fn remember(&mut self, ev: &FailureEvent) -> bool {
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

    pub(super) fn claim_unclaimed(&mut self, key: &InstanceKey, now: Timestamp) {
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
}

/// Whether a failure event names this instance's pod and container: a UID
/// alone could be copied from another namespace's pod.
fn names(ev: &FailureEvent, key: &InstanceKey, inst: &Instance) -> bool {
    *ev.pod_uid == *key.pod_uid
        && *ev.container == *key.container
        && *ev.namespace == *inst.namespace
        && *ev.pod == *inst.pod
}
