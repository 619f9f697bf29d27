//! Prometheus metrics, served on `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::{
    counter::Counter, family::Family, gauge::Gauge, histogram::Histogram,
};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// LifecyclePolicy or ClusterLifecyclePolicy.
    pub policy_kind: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabels {
    pub hook: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookKindLabels {
    pub hook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DroppedLabels {
    pub what: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LogStreamLabels {
    pub hook: String,
    /// `in_use` (being read) or `waiting` (for a stream of its pool).
    pub state: String,
}

/// One pool's load, as the pool keeps it: the two series of
/// `lifecycle_operator_log_streams` for its hook (they share their values
/// with the registry's).
#[derive(Clone, Debug, Default)]
pub struct LogStreamGauges {
    pub in_use: Gauge,
    pub waiting: Gauge,
}

/// Buckets from 100 ms to the longest grace period people set.
fn duration_histogram() -> Histogram {
    Histogram::new([
        0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    ])
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    /// Failed reconciles by the kind of error (`reconcile::Error::kind`).
    pub reconcile_errors: Family<KindLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub deployments_patched: Counter,
    pub deployments_released: Counter,
    /// Every request the operator's client sends that is not a read: the
    /// figure behind "an unchanged world causes zero writes".
    pub api_writes: Family<MethodLabels, Counter>,
    pub leader: Gauge,
    pub hook_outcomes: Family<HookLabels, Counter>,
    /// How long hooks ran, from their marker lines (marker evidence only).
    pub hook_duration: Family<HookKindLabels, Histogram, fn() -> Histogram>,
    /// Seconds from a hooked pod's deletion to its endpoints' removal.
    pub drain_removal: Histogram,
    /// What the observer let go to stay within its memory bounds.
    pub observer_dropped: Family<DroppedLabels, Counter>,
    /// The observer's log streams per hook: in use, and requests waiting.
    pub log_streams: Family<LogStreamLabels, Gauge>,
    /// Admission reviews answered, by outcome (`admission::review::Outcome`).
    pub admission_reviews: Family<OutcomeLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("lifecycle_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let reconcile_errors = Family::<KindLabels, Counter>::default();
        let reconcile_duration = Histogram::new([0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0]);
        let deployments_patched = Counter::default();
        let deployments_released = Counter::default();
        let api_writes = Family::<MethodLabels, Counter>::default();
        let leader = Gauge::default();
        let hook_outcomes = Family::<HookLabels, Counter>::default();
        let hook_duration =
            Family::<HookKindLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        let drain_removal = Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]);
        registry.register(
            "drain_removal_seconds",
            "Seconds from a terminating hooked pod's deletion to the removal of its endpoints from every EndpointSlice (the sleep a preStop needs before quitting, less the margin)",
            drain_removal.clone(),
        );
        let observer_dropped = Family::<DroppedLabels, Counter>::default();
        let log_streams = Family::<LogStreamLabels, Gauge>::default();
        let admission_reviews = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "admission_reviews",
            "Admission reviews the webhook answered: mutated (the hooks went into the write), unchanged, ignored (not a workload create or update), unreadable",
            admission_reviews.clone(),
        );
        registry.register(
            "log_streams",
            "Container log streams of the hook observer, per pool (hook: preStop follows, postStart reads): in_use (being read) and waiting (for a stream: the pool is full, or the namespace holds its share)",
            log_streams.clone(),
        );
        registry.register(
            "observer_dropped",
            "What the hook observer dropped to stay within its memory bounds: failure_event (a kubelet failure event that matched no pod yet, the oldest beyond the caps), log_line (a container log line longer than a marker can be), drain_pod (a hooked pod whose drain was not timed: the caps on pods followed were reached)",
            observer_dropped.clone(),
        );
        registry.register(
            "hook_duration_seconds",
            "How long postStart/preStop hooks ran, measured from their marker lines",
            hook_duration.clone(),
        );
        registry.register(
            "hook_outcomes",
            "Hook outcomes per container instance (ran, implied, failed, timed_out, not_triggered, unknown)",
            hook_outcomes.clone(),
        );
        registry.register(
            "reconciles",
            "Policy reconciles by kind of policy and result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed policy reconciles by the kind of error",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent reconciling one policy",
            reconcile_duration.clone(),
        );
        registry.register(
            "deployments_patched",
            "Deployment writes that set hooks a policy claims",
            deployments_patched.clone(),
        );
        registry.register(
            "deployments_released",
            "Deployment writes that handed hooks back",
            deployments_released.clone(),
        );
        registry.register(
            "api_write_requests",
            "Requests to the API server other than GET, by HTTP method",
            api_writes.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        let metrics = Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            deployments_patched,
            deployments_released,
            api_writes,
            leader,
            hook_outcomes,
            hook_duration,
            drain_removal,
            observer_dropped,
            log_streams,
            admission_reviews,
        };
        // Both pools' series exist from the start, at 0.
        for hook in ["preStop", "postStart"] {
            metrics.log_stream_gauges(hook);
        }
        metrics
    }
}

impl Metrics {
    pub fn observe_reconcile(&self, policy_kind: &str, result: &str, elapsed: Duration) {
        self.reconciles
            .get_or_create(&ResultLabels {
                policy_kind: policy_kind.to_string(),
                result: result.to_string(),
            })
            .inc();
        self.reconcile_duration.observe(elapsed.as_secs_f64());
    }

    pub fn count_admission(&self, outcome: &str) {
        self.admission_reviews
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn count_reconcile_error(&self, kind: &str) {
        self.reconcile_errors
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn count_request(&self, method: &http::Method) {
        if method != http::Method::GET {
            self.api_writes
                .get_or_create(&MethodLabels {
                    method: method.to_string(),
                })
                .inc();
        }
    }

    pub fn count_hook_outcome(&self, hook: &str, outcome: &str, n: u64) {
        self.hook_outcomes
            .get_or_create(&HookLabels {
                hook: hook.to_string(),
                outcome: outcome.to_string(),
            })
            .inc_by(n);
    }

    pub fn observe_hook_duration(&self, hook: &str, seconds: f64) {
        self.hook_duration
            .get_or_create(&HookKindLabels {
                hook: hook.to_string(),
            })
            .observe(seconds);
    }

    pub fn count_dropped(&self, what: &str, n: u64) {
        self.observer_dropped
            .get_or_create(&DroppedLabels {
                what: what.to_string(),
            })
            .inc_by(n);
    }

    /// The `in_use` and `waiting` series of one hook's pool, for the pool to
    /// keep up to date.
    pub fn log_stream_gauges(&self, hook: &str) -> LogStreamGauges {
        let series = |state: &str| {
            self.log_streams
                .get_or_create(&LogStreamLabels {
                    hook: hook.to_string(),
                    state: state.to_string(),
                })
                .clone()
        };
        LogStreamGauges {
            in_use: series("in_use"),
            waiting: series("waiting"),
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_durations_are_a_histogram_per_hook() {
        let m = Metrics::default();
        m.observe_hook_duration("preStop", 2.004);
        m.observe_hook_duration("preStop", 0.5);
        m.observe_hook_duration("postStart", 1.001);
        let text = m.render();
        for line in [
            "lifecycle_operator_hook_duration_seconds_sum{hook=\"preStop\"} 2.504",
            "lifecycle_operator_hook_duration_seconds_count{hook=\"preStop\"} 2",
            "lifecycle_operator_hook_duration_seconds_bucket{le=\"0.5\",hook=\"preStop\"} 1",
            "lifecycle_operator_hook_duration_seconds_sum{hook=\"postStart\"} 1.001",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn drain_removals_are_a_histogram() {
        let m = Metrics::default();
        m.drain_removal.observe(0.4);
        m.drain_removal.observe(3.0);
        let text = m.render();
        for line in [
            "lifecycle_operator_drain_removal_seconds_count 2",
            "lifecycle_operator_drain_removal_seconds_bucket{le=\"0.5\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn drops_are_counted_by_what() {
        let m = Metrics::default();
        m.count_dropped("failure_event", 3);
        m.count_dropped("failure_event", 2);
        m.count_dropped("log_line", 1);
        let text = m.render();
        for line in [
            "lifecycle_operator_observer_dropped_total{what=\"failure_event\"} 5",
            "lifecycle_operator_observer_dropped_total{what=\"log_line\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn log_streams_are_a_gauge_per_hook_and_state() {
        let m = Metrics::default();
        // Both pools show from the start, idle.
        let text = m.render();
        for hook in ["preStop", "postStart"] {
            for state in ["in_use", "waiting"] {
                let line = format!(
                    "lifecycle_operator_log_streams{{hook=\"{hook}\",state=\"{state}\"}} 0"
                );
                assert!(text.contains(&line), "{line} missing from:\n{text}");
            }
        }
        // What a pool sets on its gauges is what /metrics says.
        let pre = m.log_stream_gauges("preStop");
        pre.in_use.set(3);
        pre.waiting.set(1);
        m.log_stream_gauges("postStart").in_use.set(2);
        let text = m.render();
        for line in [
            "# TYPE lifecycle_operator_log_streams gauge",
            "lifecycle_operator_log_streams{hook=\"preStop\",state=\"in_use\"} 3",
            "lifecycle_operator_log_streams{hook=\"preStop\",state=\"waiting\"} 1",
            "lifecycle_operator_log_streams{hook=\"postStart\",state=\"in_use\"} 2",
            "lifecycle_operator_log_streams{hook=\"postStart\",state=\"waiting\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
