//! The observer's pure core: pods, kubelet failure events and marker findings
//! go in; per-policy hook reports come out. No I/O, and the clock is passed
//! in, so tests feed it objects and read the reports (the pattern of Linkerd's
//! policy-controller status index).
//!
//! Each hook is followed per container *instance* (pod uid, container,
//! container ID), so a restarted container counts again; `outcome` classifies
//! what was seen, and an instance's hook is counted once.
//!
//! One [`Index`], its jobs a file each, each adding its part of the API:
//!
//! - `instances`: the container instances seen in pods ([`Index::pod`]),
//!   what each hook showed, the marker logs to read and what they found
//!   ([`Index::markers`]), until the hook settles into an outcome.
//! - `events`: the kubelet's hook-failure events ([`Index::event`]), bounded
//!   on arrival, remembered within caps, matched to their instance (or kept
//!   waiting for it).
//! - `counts`: each policy's durable counts and their watermark, what the
//!   status holds ([`Index::reports`]); its docs state the invariant that
//!   lets a restarted operator neither lose nor double-count an instance.
//! - `health`: per workload, for the safe rollout: this generation's
//!   successful postStarts and latest failure ([`Index::workload_health`]).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;

use crate::hooks::hook::HookKind;

mod counts;
mod events;
mod health;
mod instances;

pub use counts::{Counted, MAX_AFTER, PolicyRecord, SETTLE_MARGIN};
pub use events::{
    FailureEvent, MAX_SEEN, MAX_SEEN_PER_NAMESPACE, MAX_UNCLAIMED, MAX_UNCLAIMED_PER_NAMESPACE,
};
pub use health::{WorkloadHealth, workload_of};
pub use instances::{
    EndMarker, FOLLOW_MARGIN, InstanceKey, LogRequest, LogTarget, MarkerFinding, Owner,
};

use counts::Tally;
use events::{Seen, Unclaimed};
use instances::Instance;

/// Longest event or waiting message kept: its first and last halves (the
/// kubelet's exec failures end with the exit code and the hook's output).
/// Room for the kubelet's usual message, which quotes the marker-wrapped
/// command twice, whole: whoever shows it can still find the wrapper in it.
pub const MAX_MESSAGE: usize = 8192;

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

/// What the observer knows: the container instances (`instances`), each
/// policy's tallies (`counts`, `health`), the failure events (`events`).
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

impl Index {
    /// Policies whose reports changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<String> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    /// Outcomes counted since the last call.
    pub fn take_counted(&mut self) -> Vec<Counted> {
        std::mem::take(&mut self.counted)
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
}

#[cfg(test)]
mod tests;
