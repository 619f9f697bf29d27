//! Whether the controller loop still makes progress, for `/healthz`.
//!
//! Every policy is reconciled at least once per resync period, and every
//! reconcile is bounded by a timeout. So a loop that is still driven finishes
//! a reconcile at least once per resync while policies exist, and never has
//! one running much longer than the timeout. Anything else means the loop
//! stopped (the kubelet then restarts the operator).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Slack on top of the deadlines before the loop counts as stuck.
const SLACK: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Liveness {
    reconcile_timeout: Duration,
    resync: Duration,
    /// How many policies the controller's cache holds.
    policies: AtomicUsize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    started: Instant,
    /// Start times of the reconciles in flight.
    in_flight: Vec<(u64, Instant)>,
    next_id: u64,
    last_done: Option<Instant>,
    /// The controller stream ended while the process was not shutting down.
    stopped: bool,
}

/// A reconcile in flight; dropping it (finished or cancelled) ends it.
pub struct InFlight<'a> {
    liveness: &'a Liveness,
    id: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut st = self.liveness.state.lock().unwrap();
        st.in_flight.retain(|(id, _)| *id != self.id);
        st.last_done = Some(Instant::now());
    }
}

impl Liveness {
    pub fn new(reconcile_timeout: Duration, resync: Duration) -> Self {
        Liveness {
            reconcile_timeout,
            resync,
            policies: AtomicUsize::new(0),
            state: Mutex::new(State {
                started: Instant::now(),
                in_flight: Vec::new(),
                next_id: 0,
                last_done: None,
                stopped: false,
            }),
        }
    }

    pub fn start(&self) -> InFlight<'_> {
        let mut st = self.state.lock().unwrap();
        st.next_id += 1;
        let id = st.next_id;
        st.in_flight.push((id, Instant::now()));
        InFlight { liveness: self, id }
    }

    pub fn stopped(&self) {
        self.state.lock().unwrap().stopped = true;
    }

    pub fn set_policies(&self, n: usize) {
        self.policies.store(n, Ordering::Relaxed);
    }

    /// Ok, or why the loop counts as stuck.
    pub fn check(&self, now: Instant) -> Result<(), String> {
        let policies = self.policies.load(Ordering::Relaxed);
        let st = self.state.lock().unwrap();
        verdict(&Facts {
            now,
            oldest_in_flight: st.in_flight.iter().map(|(_, t)| *t).min(),
            last_progress: st.last_done.unwrap_or(st.started),
            policies,
            stopped: st.stopped,
            reconcile_timeout: self.reconcile_timeout,
            resync: self.resync,
        })
    }
}

struct Facts {
    now: Instant,
    oldest_in_flight: Option<Instant>,
    last_progress: Instant,
    policies: usize,
    stopped: bool,
    reconcile_timeout: Duration,
    resync: Duration,
}

fn verdict(f: &Facts) -> Result<(), String> {
    if f.stopped {
        return Err("the controller loop has ended".into());
    }
    if let Some(t) = f.oldest_in_flight {
        let running = f.now.saturating_duration_since(t);
        if running > f.reconcile_timeout + SLACK {
            return Err(format!(
                "a reconcile has run for {}s despite its {}s timeout",
                running.as_secs(),
                f.reconcile_timeout.as_secs()
            ));
        }
    }
    let idle = f.now.saturating_duration_since(f.last_progress);
    if f.policies > 0 && f.oldest_in_flight.is_none() && idle > f.resync + SLACK {
        return Err(format!(
            "no reconcile has finished for {}s although {} policies exist and each resyncs every {}s",
            idle.as_secs(),
            f.policies,
            f.resync.as_secs()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(60);
    const R: Duration = Duration::from_secs(300);

    fn facts(now: u64, in_flight: Option<u64>, last: u64, policies: usize) -> Facts {
        let base = Instant::now();
        let at = |s: u64| base + Duration::from_secs(s);
        Facts {
            now: at(now),
            oldest_in_flight: in_flight.map(at),
            last_progress: at(last),
            policies,
            stopped: false,
            reconcile_timeout: T,
            resync: R,
        }
    }

    #[test]
    fn a_driven_loop_is_healthy() {
        assert!(verdict(&facts(10, None, 0, 3)).is_ok());
        assert!(
            verdict(&facts(100, Some(50), 0, 3)).is_ok(),
            "within timeout + slack"
        );
        assert!(
            verdict(&facts(10_000, None, 0, 0)).is_ok(),
            "no policies, nothing to do"
        );
        assert!(verdict(&facts(359, None, 0, 1)).is_ok());
    }

    #[test]
    fn a_stuck_loop_is_not() {
        let e = verdict(&facts(200, Some(10), 0, 1)).unwrap_err();
        assert!(e.contains("despite its 60s timeout"), "{e}");
        let e = verdict(&facts(361, None, 0, 1)).unwrap_err();
        assert!(e.contains("no reconcile has finished for 361s"), "{e}");
        let mut f = facts(1, None, 0, 0);
        f.stopped = true;
        assert!(verdict(&f).is_err());
    }

    #[test]
    fn in_flight_guards_track_reconciles() {
        let l = Liveness::new(T, R);
        let g = l.start();
        let later = Instant::now() + T + SLACK + Duration::from_secs(1);
        assert!(l.check(later).is_err());
        drop(g);
        assert!(l.check(Instant::now()).is_ok());
        l.set_policies(1);
        let idle = Instant::now() + R + SLACK + Duration::from_secs(1);
        assert!(l.check(idle).is_err(), "policies exist, nothing finishes");
        l.set_policies(0);
        assert!(l.check(idle).is_ok());
        l.stopped();
        assert!(l.check(Instant::now()).is_err());
    }
}
