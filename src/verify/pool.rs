//! Log streams shared fairly between namespaces. One namespace's many long
//! preStops must not hold every follow while another namespace's hooks go
//! unread: a [`FairQueue`] grants at most `capacity` streams, at most
//! `per_namespace` of them to one namespace (so the rest is always there
//! for the others), and when a stream ends it goes to the waiting namespace
//! that holds the fewest (the longest waiting among equals). It is pure
//! (requests and releases in, grants out); [`FairPool`] is the async
//! wrapper the observer uses, which also keeps its load on a gauge.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::runtime::metrics::LogStreamGauges;

/// A request's number, in the order requests came.
pub type Ticket = u64;

/// A pool's size: `total` streams, at most `per_namespace` of them held by
/// one namespace. Checked when made: `1 <= per_namespace <= total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSize {
    total: usize,
    per_namespace: usize,
}

/// Why a [`PoolSize`] was refused (nothing is ever clamped into shape).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolSizeError {
    #[error("the pool has no stream: nothing would ever be read")]
    Empty,
    #[error("the per-namespace share is 0: no namespace could ever have a log read")]
    NoShare,
    #[error(
        "the per-namespace share ({per_namespace}) is above the total ({total}): no namespace can hold more streams than the pool has"
    )]
    ShareAboveTotal { per_namespace: usize, total: usize },
}

impl PoolSize {
    pub const fn new(total: usize, per_namespace: usize) -> Result<PoolSize, PoolSizeError> {
        if total == 0 {
            Err(PoolSizeError::Empty)
        } else if per_namespace == 0 {
            Err(PoolSizeError::NoShare)
        } else if per_namespace > total {
            Err(PoolSizeError::ShareAboveTotal {
                per_namespace,
                total,
            })
        } else {
            Ok(PoolSize {
                total,
                per_namespace,
            })
        }
    }

    pub fn total(self) -> usize {
        self.total
    }

    pub fn per_namespace(self) -> usize {
        self.per_namespace
    }
}

impl fmt::Display for PoolSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (at most {} per namespace)",
            self.total, self.per_namespace
        )
    }
}

/// Who gets the next stream.
#[derive(Debug)]
pub struct FairQueue {
    capacity: usize,
    per_namespace: usize,
    held: HashMap<Arc<str>, usize>,
    in_use: usize,
    /// Requests not granted yet, oldest first.
    waiting: VecDeque<(Ticket, Arc<str>)>,
    next: Ticket,
}

impl FairQueue {
    pub fn new(size: PoolSize) -> Self {
        FairQueue {
            capacity: size.total,
            per_namespace: size.per_namespace,
            held: HashMap::new(),
            in_use: 0,
            waiting: VecDeque::new(),
            next: 0,
        }
    }

    /// A namespace asks for a stream: granted now (`Ok`), or queued (`Err`,
    /// granted later by `release` or dropped by `cancel`).
    pub fn request(&mut self, namespace: &str) -> Result<Ticket, Ticket> {
        let ticket = self.next;
        self.next += 1;
        let ns: Arc<str> = match self.held.get_key_value(namespace) {
            Some((k, _)) => k.clone(),
            None => namespace.into(),
        };
        // Nobody of this namespace waits before it: it may take a free stream.
        let queued_before = self.waiting.iter().any(|(_, w)| *w == ns);
        if !queued_before && self.grantable(&ns) {
            self.grant(ns);
            return Ok(ticket);
        }
        self.waiting.push_back((ticket, ns));
        Err(ticket)
    }

    /// A granted stream of `namespace` ended; returns the tickets granted now.
    pub fn release(&mut self, namespace: &str) -> Vec<Ticket> {
        if let Some(n) = self.held.get_mut(namespace) {
            *n -= 1;
            self.in_use -= 1;
            if *n == 0 {
                self.held.remove(namespace);
            }
        }
        self.dispatch()
    }

    /// A queued request gave up (its deadline passed). Returns whether it was
    /// still queued; if it was granted meanwhile, its owner must release it.
    pub fn cancel(&mut self, ticket: Ticket) -> bool {
        let before = self.waiting.len();
        self.waiting.retain(|(t, _)| *t != ticket);
        before != self.waiting.len()
    }

    /// Streams held by a namespace now.
    pub fn held(&self, namespace: &str) -> usize {
        self.held.get(namespace).copied().unwrap_or(0)
    }

    pub fn in_use(&self) -> usize {
        self.in_use
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    fn grantable(&self, ns: &str) -> bool {
        self.in_use < self.capacity && self.held(ns) < self.per_namespace
    }

    fn grant(&mut self, ns: Arc<str>) {
        *self.held.entry(ns).or_default() += 1;
        self.in_use += 1;
    }

    /// Hands free streams to waiting requests: each to the oldest request of
    /// the namespace that holds the fewest, among those under their cap.
    fn dispatch(&mut self) -> Vec<Ticket> {
        let mut out = Vec::new();
        while self.in_use < self.capacity {
            // The first request of each namespace is its candidate; the
            // queue is oldest first, so the first minimum is the oldest.
            let mut best: Option<(usize, usize)> = None; // (held, position)
            let mut seen: Vec<&str> = Vec::new();
            for (pos, (_, ns)) in self.waiting.iter().enumerate() {
                if seen.contains(&&**ns) {
                    continue;
                }
                seen.push(ns);
                let held = self.held(ns);
                if held < self.per_namespace && best.is_none_or(|(h, _)| held < h) {
                    best = Some((held, pos));
                }
            }
            let Some((_, pos)) = best else { break };
            let (ticket, ns) = self.waiting.remove(pos).expect("position just found");
            self.grant(ns);
            out.push(ticket);
        }
        out
    }
}

/// The async side: waits for a grant, and gives the stream back on drop.
/// Its gauges follow every request, grant, release and cancel.
pub struct FairPool {
    state: Mutex<PoolState>,
}

struct PoolState {
    queue: FairQueue,
    wakers: HashMap<Ticket, oneshot::Sender<()>>,
    gauges: LogStreamGauges,
}

impl PoolState {
    /// Sets the gauges from the queue; called under the lock after each
    /// change, so they never show a state the queue was not in.
    fn publish(&self) {
        self.gauges.in_use.set(self.queue.in_use() as i64);
        self.gauges.waiting.set(self.queue.waiting() as i64);
    }
}

/// A granted stream; released when dropped.
pub struct Permit {
    pool: Arc<FairPool>,
    namespace: Arc<str>,
    /// False for a request that was never granted (see `Waiting`).
    granted: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.granted {
            self.pool.release(&self.namespace);
        }
    }
}

impl FairPool {
    pub fn new(size: PoolSize, gauges: LogStreamGauges) -> Arc<Self> {
        let state = PoolState {
            queue: FairQueue::new(size),
            wakers: HashMap::new(),
            gauges,
        };
        state.publish();
        Arc::new(FairPool {
            state: Mutex::new(state),
        })
    }

    /// Waits for a stream for `namespace`. Cancel-safe: a future dropped
    /// while queued leaves the queue, and one granted meanwhile gives its
    /// stream back.
    pub async fn acquire(self: &Arc<Self>, namespace: &str) -> Permit {
        let permit = Permit {
            pool: self.clone(),
            namespace: namespace.into(),
            granted: true,
        };
        let rx = {
            let mut st = self.state.lock().unwrap();
            let request = st.queue.request(namespace);
            st.publish();
            match request {
                Ok(_) => return permit,
                Err(ticket) => {
                    let (tx, rx) = oneshot::channel();
                    st.wakers.insert(ticket, tx);
                    Waiting {
                        pool: self.clone(),
                        ticket,
                        rx: Some(rx),
                        permit: Some(permit),
                    }
                }
            }
        };
        rx.wait().await
    }

    fn release(&self, namespace: &str) {
        let mut st = self.state.lock().unwrap();
        let granted = st.queue.release(namespace);
        st.publish();
        for ticket in granted {
            if let Some(tx) = st.wakers.remove(&ticket) {
                // A failed send means the waiter is being dropped: its
                // `Waiting::drop` finds the ticket granted and gives the
                // stream back.
                let _ = tx.send(());
            }
        }
    }

    /// Streams in use and requests waiting, for tests and metrics.
    pub fn load(&self) -> (usize, usize) {
        let st = self.state.lock().unwrap();
        (st.queue.in_use(), st.queue.waiting())
    }
}

/// A queued request. Dropped before its grant arrives, it leaves the queue;
/// dropped after, the permit inside gives the stream back.
struct Waiting {
    pool: Arc<FairPool>,
    ticket: Ticket,
    rx: Option<oneshot::Receiver<()>>,
    permit: Option<Permit>,
}

impl Waiting {
    async fn wait(mut self) -> Permit {
        let rx = self.rx.take().expect("waited once");
        // The sender lives in the pool until the grant: never dropped unsent.
        let _ = rx.await;
        self.permit.take().expect("waited once")
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(mut permit) = self.permit.take() else {
            return; // Granted and handed out.
        };
        let mut st = self.pool.state.lock().unwrap();
        st.wakers.remove(&self.ticket);
        // Still queued: never granted, nothing to give back. Otherwise it
        // was granted while being dropped, and the permit gives it back
        // (after the lock is let go).
        permit.granted = !st.queue.cancel(self.ticket);
        st.publish();
        drop(st);
        drop(permit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::metrics::Metrics;

    fn size(total: usize, per_namespace: usize) -> PoolSize {
        PoolSize::new(total, per_namespace).unwrap()
    }

    #[test]
    fn a_pool_size_is_checked_never_clamped() {
        assert_eq!(size(256, 192).total(), 256);
        assert_eq!(size(256, 192).per_namespace(), 192);
        // The whole pool for one namespace is allowed (no fairness, but a
        // deliberate choice); one stream is the least.
        assert_eq!(size(4, 4).per_namespace(), 4);
        assert_eq!(size(1, 1).total(), 1);
        assert_eq!(PoolSize::new(0, 0), Err(PoolSizeError::Empty));
        assert_eq!(PoolSize::new(0, 1), Err(PoolSizeError::Empty));
        assert_eq!(PoolSize::new(4, 0), Err(PoolSizeError::NoShare));
        assert_eq!(
            PoolSize::new(4, 5),
            Err(PoolSizeError::ShareAboveTotal {
                per_namespace: 5,
                total: 4
            })
        );
        let why = PoolSize::new(4, 5).unwrap_err().to_string();
        assert!(why.contains("(5) is above the total (4)"), "{why}");
    }

    #[test]
    fn one_namespace_never_holds_more_than_its_cap() {
        let mut q = FairQueue::new(size(8, 6));
        let a: Vec<_> = (0..20).map(|_| q.request("a")).collect();
        assert_eq!(a.iter().filter(|r| r.is_ok()).count(), 6);
        assert_eq!((q.held("a"), q.in_use(), q.waiting()), (6, 6, 14));
        // Another namespace gets the rest at once, though a waits.
        assert!(q.request("b").is_ok());
        assert!(q.request("c").is_ok());
        assert_eq!(q.in_use(), 8);
        // Full: d waits too; the first stream to end goes to d (it holds
        // none), not to a's older requests.
        let Err(d) = q.request("d") else {
            panic!("granted beyond capacity")
        };
        assert_eq!(q.release("b"), vec![d]);
        assert_eq!(q.held("d"), 1);
        // Then a's oldest, in order, as streams end; never past the cap.
        let first_a = a.iter().find_map(|r| r.err()).unwrap();
        assert_eq!(q.release("c"), Vec::<Ticket>::new(), "a is at its cap");
        assert_eq!(q.release("a"), vec![first_a]);
        assert_eq!(q.held("a"), 6);
        assert!(q.in_use() <= 8);
    }

    #[test]
    fn releases_go_to_whoever_holds_fewest_oldest_first() {
        let mut q = FairQueue::new(size(4, 4));
        for _ in 0..4 {
            assert!(q.request("a").is_ok());
        }
        let b1 = q.request("b").unwrap_err();
        let c1 = q.request("c").unwrap_err();
        let b2 = q.request("b").unwrap_err();
        let a5 = q.request("a").unwrap_err();
        assert_eq!(
            q.release("a"),
            vec![b1],
            "b asked first among those holding none"
        );
        assert_eq!(q.release("a"), vec![c1]);
        // b and c hold one each, a two: b's next (older than a's).
        assert_eq!(q.release("a"), vec![b2]);
        assert_eq!(q.release("b"), vec![a5]);
        assert_eq!(q.waiting(), 0);
        // Every stream accounted for.
        assert_eq!(q.in_use(), q.held("a") + q.held("b") + q.held("c"));
    }

    #[test]
    fn a_request_never_overtakes_its_own_namespace() {
        let mut q = FairQueue::new(size(2, 2));
        assert!(q.request("a").is_ok());
        assert!(q.request("a").is_ok());
        let a3 = q.request("a").unwrap_err();
        assert_eq!(q.release("a"), vec![a3]);
        // Cancelled requests leave the queue and are never granted.
        let a4 = q.request("a").unwrap_err();
        assert!(q.cancel(a4));
        assert!(!q.cancel(a4));
        assert_eq!(q.release("a"), Vec::<Ticket>::new());
        assert_eq!(q.in_use(), 1);
    }

    #[test]
    fn many_namespaces_share_the_pool_evenly() {
        // One namespace asks first and takes the whole pool; nine more then
        // ask too (more than will ever be granted here). As streams end (the
        // biggest holder's first), the others catch up until all hold the
        // same, within one.
        let mut q = FairQueue::new(size(20, 20));
        let names: Vec<String> = (0..10).map(|i| format!("ns{i}")).collect();
        for n in &names {
            for _ in 0..300 {
                let _ = q.request(n);
            }
        }
        assert_eq!(q.held("ns0"), 20);
        for round in 0..200 {
            let most = names.iter().max_by_key(|n| q.held(n)).unwrap().clone();
            q.release(&most);
            assert!(q.in_use() <= 20, "round {round}");
        }
        let held: Vec<usize> = names.iter().map(|n| q.held(n)).collect();
        assert_eq!(held.iter().sum::<usize>(), 20);
        let (lo, hi) = (held.iter().min().unwrap(), held.iter().max().unwrap());
        assert!(hi - lo <= 1, "{held:?}");
    }

    /// The gauges' (in_use, waiting).
    fn shown(g: &LogStreamGauges) -> (i64, i64) {
        (g.in_use.get(), g.waiting.get())
    }

    #[tokio::test]
    async fn the_async_pool_grants_in_fair_order_and_cancels_cleanly() {
        let gauges = Metrics::default().log_stream_gauges("preStop");
        let pool = FairPool::new(size(2, 2), gauges.clone());
        assert_eq!(shown(&gauges), (0, 0));
        let a1 = pool.acquire("a").await;
        let a2 = pool.acquire("a").await;
        assert_eq!(pool.load(), (2, 0));
        assert_eq!(shown(&gauges), (2, 0));
        // A waiter that gives up (a deadline) leaves the queue, and the gauge.
        let p = pool.clone();
        let gives_up = tokio::spawn(async move {
            tokio::time::timeout(std::time::Duration::from_millis(200), p.acquire("a")).await
        });
        while pool.load().1 == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(shown(&gauges), (2, 1), "queued");
        assert!(gives_up.await.unwrap().is_err());
        assert_eq!(pool.load(), (2, 0));
        assert_eq!(shown(&gauges), (2, 0), "cancelled");
        // b waits, and gets the first stream to end.
        let p = pool.clone();
        let b = tokio::spawn(async move { p.acquire("b").await });
        while pool.load().1 == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(shown(&gauges), (2, 1));
        drop(a1);
        assert_eq!(shown(&gauges), (2, 0), "released to b");
        let b = b.await.unwrap();
        assert_eq!(pool.load(), (2, 0));
        drop(b);
        drop(a2);
        assert_eq!(pool.load(), (0, 0));
        assert_eq!(shown(&gauges), (0, 0), "released");
    }

    /// tests/fairness.rs on the real cluster, in small: four long preStops
    /// of one namespace in a pool of 4, then another namespace's preStop.
    /// With a share of 3 it gets the stream left over at once; with the
    /// whole pool as the share, it waits behind them.
    #[tokio::test]
    async fn a_namespace_at_its_share_leaves_a_stream_for_the_others() {
        for share in [3, 4] {
            let gauges = Metrics::default().log_stream_gauges("preStop");
            let pool = FairPool::new(size(4, share), gauges.clone());
            let mut held_by_a = Vec::new();
            for _ in 0..4 {
                let p = pool.clone();
                held_by_a.push(tokio::spawn(async move { p.acquire("a").await }));
            }
            let a_load = (share as i64, 4 - share as i64);
            while shown(&gauges) != a_load {
                tokio::task::yield_now().await;
            }
            let b = tokio::time::timeout(std::time::Duration::from_millis(200), pool.acquire("b"))
                .await;
            match (share, b) {
                (3, Ok(b)) => {
                    assert_eq!(shown(&gauges), (4, 1), "b took the stream a left");
                    drop(b);
                    assert_eq!(shown(&gauges), (3, 1), "a is at its share: it waits on");
                }
                (4, Err(_)) => assert_eq!(shown(&gauges), (4, 0), "b gave up, a holds all"),
                (_, b) => panic!("share {share}: b granted: {}", b.is_ok()),
            }
            for a in held_by_a {
                a.abort();
            }
        }
    }
}
