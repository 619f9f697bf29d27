//! How every watch recovers from API-server outages.
//!
//! kube's default watch backoff doubles from 0.8 s up to 30 s and only
//! resets after 2 minutes, and a Controller puts *all* its trigger streams
//! behind one such backoff: any watch's error pauses every trigger. After a
//! 20 s kube-apiserver restart that meant up to a minute before a new
//! policy's events reached the controller (a reconnect delayed by 30 s, then
//! the `410 Gone` that forces a relist counted as one more error). Here each
//! watch backs off on its own, capped at a few seconds, and its errors are
//! logged and dropped before they reach the controller.

use std::time::Duration;

use futures::{Stream, StreamExt, future};
use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::watcher::{self, ExponentialBackoff};
use tracing::warn;

/// The first retry after an error.
pub const FIRST_RETRY: Duration = Duration::from_millis(250);
/// The longest base wait between retries (jitter adds up to as much again):
/// a watch is back within twice this of the API server.
pub const MAX_RETRY: Duration = Duration::from_secs(3);
/// A watch healthy this long starts again from `FIRST_RETRY`.
const RESET_AFTER: Duration = Duration::from_secs(60);

/// Exponential with jitter, from `FIRST_RETRY` to `MAX_RETRY`, forever.
pub fn backoff() -> impl Backoff + 'static {
    let builder = backon::ExponentialBuilder::default()
        .with_min_delay(FIRST_RETRY)
        .with_max_delay(MAX_RETRY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(ExponentialBackoff::from(builder), RESET_AFTER)
}

/// The stream without its errors, each logged once as `what`: a trigger
/// stream's error must not pause the controller's other triggers.
pub fn errors_logged<T, S>(
    stream: S,
    what: &'static str,
) -> impl Stream<Item = Result<T, watcher::Error>> + Send
where
    S: Stream<Item = Result<T, watcher::Error>> + Send,
    T: Send,
{
    stream.filter(move |item| {
        if let Err(e) = item {
            warn!(error = %e, "{what} watch");
        }
        future::ready(item.is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_grow_to_the_cap_and_never_stop() {
        let delays: Vec<Duration> = backoff().take(50).collect();
        assert_eq!(delays.len(), 50);
        assert!(delays.iter().all(|d| *d <= MAX_RETRY * 2), "{delays:?}");
        // Jitter adds up to one delay on top; the base reaches the cap.
        assert!(delays[20..].iter().all(|d| *d >= MAX_RETRY), "{delays:?}");
        assert!(delays[0] < Duration::from_secs(1), "{delays:?}");
    }

    #[tokio::test]
    async fn errors_are_dropped_and_items_kept() {
        let items =
            futures::stream::iter(vec![Ok(1), Err(watcher::Error::NoResourceVersion), Ok(2)]);
        let out: Vec<i32> = errors_logged(items, "test")
            .map(|r| r.unwrap())
            .collect()
            .await;
        assert_eq!(out, [1, 2]);
    }
}
