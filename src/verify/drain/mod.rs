//! Did a preStop keep its pod serving until it was out of its Services?
//! Pure, like the observer's index: the observer feeds in the hooked pods
//! (whose preStop a policy owns) and the EndpointSlices, with the time it
//! saw them; per policy, verdicts and their status come out.
//!
//! One clock, the operator's: a pod's deletion is when the observer first
//! sees its deletionTimestamp, its removal when no EndpointSlice holds it
//! as a ready endpoint any more (after one did). The kubelet starts the
//! preStop when it sees the deletion, at about the same time, so the
//! container is told to stop at deletion + the hook's leading sleep
//! (`sleep`). A drain is safe when the removal came at least the policy's
//! margin before that.
//!
//! Only tracked pods cost memory: slices are matched by endpoint
//! targetRef UID against them and not kept. Tracks are capped in all and
//! per namespace, so one namespace's pods cannot push out another's.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::types::DrainStatus;

pub mod sleep;
mod tally;

use tally::Tally;
pub use tally::{MAX_SAMPLES, Verdict};

/// Terminating or running hooked pods followed, in all.
pub const MAX_TRACKED: usize = 8192;
/// And per namespace.
pub const MAX_TRACKED_PER_NAMESPACE: usize = 1024;
/// A pod deleted without a verdict (never an endpoint: no Service) is
/// forgotten this long after its deletion was final.
const GONE_FOR: SignedDuration = SignedDuration::from_secs(60);
/// A deletion whose removal never comes is forgotten after this (the grace
/// period's cap, and some).
const DELETING_FOR: SignedDuration = SignedDuration::from_secs(3700);

/// A policy's preStop on one container of a pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Stopper {
    pub policy: Arc<str>,
    pub container: String,
    pub sleep: f64,
    pub margin: f64,
}

/// What the pod watch says of one hooked pod.
pub struct PodSight<'a> {
    pub uid: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    /// The preStops policies own on it (empty: none).
    pub stoppers: Vec<Stopper>,
    /// It has a deletionTimestamp.
    pub deleting: bool,
    /// The watch's Delete: the pod is gone.
    pub gone: bool,
    /// Seen as it happens (not in a re-list, which may come long after).
    pub live: bool,
}

struct Track {
    namespace: Arc<str>,
    name: String,
    stoppers: Vec<Stopper>,
    deletion: Option<Timestamp>,
    /// Slices holding it as a ready endpoint now.
    serving_in: Vec<Arc<str>>,
    /// Out of every slice since then, after being in one.
    removed: Option<Timestamp>,
    gone: Option<Timestamp>,
}

#[derive(Default)]
pub struct DrainIndex {
    pods: HashMap<String, Track>,
    per_namespace: HashMap<Arc<str>, usize>,
    /// Per slice (namespace/name), the tracked pods it holds as ready.
    by_slice: HashMap<Arc<str>, Vec<String>>,
    /// Slices seen since a re-list began.
    relist: Option<HashSet<Arc<str>>>,
    tallies: HashMap<Arc<str>, Tally>,
    dirty: BTreeSet<String>,
    /// Removal delays timed since the last call (for the metric).
    timed: Vec<f64>,
    /// Pods not followed because of the caps, since the last call.
    dropped: u64,
}

impl DrainIndex {
    /// Makes sure the policy's tally is for `generation`: a new generation
    /// starts afresh, from `seed` (the status's drain) when it is its.
    pub fn policy(
        &mut self,
        key: &str,
        generation: Option<i64>,
        seed: Option<&DrainStatus>,
        margin: f64,
    ) {
        match self.tallies.get_mut(key) {
            Some(t) if t.generation == generation => t.set_margin(margin),
            _ => {
                let t = Tally::new(generation, seed, margin);
                self.tallies.insert(key.into(), t);
            }
        }
    }

    /// The policy's drain status for `generation`, if it has one.
    pub fn status(&self, key: &str, generation: Option<i64>) -> Option<DrainStatus> {
        self.tallies
            .get(key)
            .filter(|t| t.generation == generation)
            .map(Tally::status)
    }

    pub fn pod(&mut self, p: PodSight, now: Timestamp) {
        if !self.pods.contains_key(p.uid) && !self.start(&p) {
            return;
        }
        let Some(t) = self.pods.get_mut(p.uid) else {
            return;
        };
        if t.deletion.is_none() {
            if !p.stoppers.is_empty() {
                t.stoppers = p.stoppers;
            }
            if p.deleting && !p.live {
                // Deleted while nobody watched: when is unknown.
                return self.forget(p.uid);
            }
            if p.deleting {
                t.deletion = Some(now);
            }
        }
        if p.gone {
            if t.deletion.is_none() {
                return self.forget(p.uid);
            }
            t.gone.get_or_insert(now);
        }
        self.settle(p.uid);
    }

    /// Begins a track for a running pod with an owned preStop, within caps.
    fn start(&mut self, p: &PodSight) -> bool {
        if p.stoppers.is_empty() || p.deleting || p.gone {
            return false;
        }
        let in_ns = self.per_namespace.get(p.namespace).copied().unwrap_or(0);
        if self.pods.len() >= MAX_TRACKED || in_ns >= MAX_TRACKED_PER_NAMESPACE {
            self.dropped += 1;
            return false;
        }
        let namespace: Arc<str> = match self.per_namespace.get_key_value(p.namespace) {
            Some((k, _)) => k.clone(),
            None => p.namespace.into(),
        };
        *self.per_namespace.entry(namespace.clone()).or_default() += 1;
        self.pods.insert(
            p.uid.to_string(),
            Track {
                namespace,
                name: p.name.to_string(),
                stoppers: Vec::new(),
                deletion: None,
                serving_in: Vec::new(),
                removed: None,
                gone: None,
            },
        );
        true
    }

    /// One EndpointSlice (`key`: namespace/name) as it now stands:
    /// `endpoints` are (pod UID, ready). Only pods of the slice's own
    /// namespace count: a slice written in one namespace cannot keep
    /// another's pod serving (and so make its drain look late).
    pub fn slice<'a>(
        &mut self,
        key: &str,
        endpoints: impl IntoIterator<Item = (&'a str, bool)>,
        now: Timestamp,
    ) {
        let namespace = key.split_once('/').map_or("", |(ns, _)| ns);
        let ready: Vec<String> = endpoints
            .into_iter()
            .filter(|(uid, ready)| {
                *ready
                    && self
                        .pods
                        .get(*uid)
                        .is_some_and(|t| &*t.namespace == namespace)
            })
            .map(|(uid, _)| uid.to_string())
            .collect();
        let key: Arc<str> = match self.by_slice.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => key.into(),
        };
        if let Some(seen) = self.relist.as_mut() {
            seen.insert(key.clone());
        }
        let before = self.by_slice.remove(&key).unwrap_or_default();
        for uid in before.iter().filter(|u| !ready.contains(u)) {
            if let Some(t) = self.pods.get_mut(uid) {
                t.serving_in.retain(|s| *s != key);
                if t.serving_in.is_empty() {
                    t.removed = Some(now);
                }
            }
            self.settle(uid);
        }
        for uid in &ready {
            if let Some(t) = self.pods.get_mut(uid)
                && !t.serving_in.contains(&key)
            {
                t.serving_in.push(key.clone());
                t.removed = None;
            }
        }
        if !ready.is_empty() {
            self.by_slice.insert(key, ready);
        }
    }

    /// A slice deleted: none of its endpoints serve through it any more.
    pub fn slice_deleted(&mut self, key: &str, now: Timestamp) {
        self.slice(key, std::iter::empty(), now);
    }

    /// The slice watch lists again: what it does not list is gone.
    pub fn relist_started(&mut self) {
        self.relist = Some(HashSet::new());
    }

    pub fn relist_done(&mut self, now: Timestamp) {
        let Some(seen) = self.relist.take() else {
            return;
        };
        let stale: Vec<Arc<str>> = self
            .by_slice
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for k in stale {
            self.slice_deleted(&k, now);
        }
    }

    /// A verdict per owned preStop once both the deletion and the removal
    /// are known; then the pod is done with.
    fn settle(&mut self, uid: &str) {
        let Some(t) = self.pods.get(uid) else {
            return;
        };
        let (Some(deleted), Some(removed)) = (t.deletion, t.removed) else {
            return;
        };
        let removal = deleted.duration_until(removed).as_secs_f64().max(0.0);
        for s in &t.stoppers {
            let v = Verdict {
                pod: t.name.clone(),
                container: s.container.clone(),
                removal,
                sleep: s.sleep,
                margin: s.margin,
            };
            if let Some(tally) = self.tallies.get_mut(&*s.policy) {
                tally.record(&v);
                self.dirty.insert(s.policy.to_string());
            }
        }
        self.timed.push(removal);
        self.forget(uid);
    }

    fn forget(&mut self, uid: &str) {
        let Some(t) = self.pods.remove(uid) else {
            return;
        };
        for s in &t.serving_in {
            if let Some(uids) = self.by_slice.get_mut(s) {
                uids.retain(|u| u != uid);
                if uids.is_empty() {
                    self.by_slice.remove(s);
                }
            }
        }
        if let Some(n) = self.per_namespace.get_mut(&t.namespace) {
            *n -= 1;
            if *n == 0 {
                self.per_namespace.remove(&t.namespace);
            }
        }
    }

    /// Forgets pods that will get no verdict, and policies that are gone.
    pub fn expire(&mut self, now: Timestamp, policy_exists: impl Fn(&str) -> bool) {
        let old: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, t)| {
                let past = |at: Option<Timestamp>, d: SignedDuration| {
                    at.is_some_and(|at| at.duration_until(now) > d)
                };
                past(t.gone, GONE_FOR) || past(t.deletion, DELETING_FOR)
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in old {
            self.forget(&uid);
        }
        self.tallies.retain(|k, _| policy_exists(k));
    }

    /// Policies whose drain status changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<String> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    /// Removal delays timed since the last call.
    pub fn take_timed(&mut self) -> Vec<f64> {
        std::mem::take(&mut self.timed)
    }

    /// Pods the caps left out since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Pods followed.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

#[cfg(test)]
mod tests;
