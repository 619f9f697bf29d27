//! One policy's drain verdicts for its current generation: counts, the
//! latest unsafe drain, and a bounded ring of removal delays for the
//! percentiles and the recommendation. Seeded from the status, so a
//! restarted operator carries the counts on.

use std::collections::VecDeque;

use crate::api::types::{DrainStatus, RemovalSeconds, UnsafeDrain};

/// Removal delays kept for the percentiles.
pub const MAX_SAMPLES: usize = 256;

/// One timed drain.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub pod: String,
    pub container: String,
    /// Seconds from the deletion to the endpoints' removal (never negative).
    pub removal: f64,
    /// The hook's leading sleep.
    pub sleep: f64,
    pub margin: f64,
}

impl Verdict {
    /// Seconds the endpoints were gone before the container was told to stop.
    pub fn gap(&self) -> f64 {
        self.sleep - self.removal
    }

    pub fn safe(&self) -> bool {
        self.gap() >= self.margin
    }

    /// The sleep before quitting this drain needed.
    pub fn needed(&self) -> i64 {
        recommended(self.removal, self.margin)
    }

    fn message(&self) -> String {
        let gap = self.gap();
        let when = if gap < 0.0 {
            format!("{} s after {} began to quit", secs(-gap), self.container)
        } else {
            format!(
                "only {} s before {} began to quit (margin {} s)",
                secs(gap),
                self.container,
                self.margin
            )
        };
        format!(
            "endpoints were removed {when}: sleep at least {} s before quitting",
            self.needed()
        )
    }
}

/// Seconds to two decimals, without trailing zeros: 0.4, 0.03, 2.
fn secs(s: f64) -> String {
    let t = format!("{s:.2}");
    t.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// At least one second: the removal plus the margin, rounded up.
fn recommended(removal: f64, margin: f64) -> i64 {
    ((removal + margin).ceil() as i64).max(1)
}

#[derive(Debug, Default)]
pub struct Tally {
    pub generation: Option<i64>,
    observed: i64,
    safe: i64,
    unsafe_: i64,
    last_unsafe: Option<UnsafeDrain>,
    /// Oldest first.
    samples: VecDeque<f64>,
    /// The status's percentiles, until this process has samples of its own.
    seeded: Option<RemovalSeconds>,
    margin: f64,
}

impl Tally {
    pub fn new(generation: Option<i64>, seed: Option<&DrainStatus>, margin: f64) -> Tally {
        let mut t = Tally {
            generation,
            margin,
            ..Tally::default()
        };
        if let Some(s) = seed {
            t.observed = s.observed.max(0);
            t.safe = s.safe.max(0);
            t.unsafe_ = s.unsafe_.max(0);
            t.last_unsafe = s.last_unsafe.clone();
            t.seeded = s.removal_seconds.clone();
        }
        t
    }

    pub fn record(&mut self, v: &Verdict) {
        self.observed += 1;
        self.margin = v.margin;
        if v.safe() {
            self.safe += 1;
        } else {
            self.unsafe_ += 1;
            self.last_unsafe = Some(UnsafeDrain {
                pod: v.pod.clone(),
                gap_seconds: millis(v.gap()),
                message: v.message(),
            });
        }
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(v.removal);
    }

    pub fn set_margin(&mut self, margin: f64) {
        self.margin = margin;
    }

    pub fn status(&self) -> DrainStatus {
        let removal = self.percentiles().or_else(|| self.seeded.clone());
        DrainStatus {
            observed: self.observed,
            safe: self.safe,
            unsafe_: self.unsafe_,
            last_unsafe: self.last_unsafe.clone(),
            recommended_pre_stop_seconds: removal.as_ref().map(|r| recommended(r.p99, self.margin)),
            removal_seconds: removal,
        }
    }

    /// Nearest-rank percentiles of the samples held.
    fn percentiles(&self) -> Option<RemovalSeconds> {
        if self.samples.is_empty() {
            return None;
        }
        let mut s: Vec<f64> = self.samples.iter().copied().collect();
        s.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len());
            millis(s[i - 1])
        };
        Some(RemovalSeconds {
            p50: rank(0.50),
            p99: rank(0.99),
        })
    }
}

/// Millisecond precision, as the status's other durations.
fn millis(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}
