//! Waiting for a reflector store's first full list, safely from many tasks.
//!
//! kube-runtime's `Store::wait_until_ready` keeps one shared oneshot receiver:
//! when several tasks wait at once, only the last to poll is registered for
//! the wake-up, and the others sleep forever (the controller's runner, the
//! observer and every reconcile wait on stores at start-up). Re-polling on a
//! short timer bounds that lost wake-up to one tick.

use std::time::Duration;

use kube::Resource;
use kube::runtime::reflector::Store;

/// How often a waiter polls again.
const TICK: Duration = Duration::from_millis(100);

/// Returns once `store` has seen its first complete list.
pub async fn wait_ready<K>(store: &Store<K>)
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    while tokio::time::timeout(TICK, store.wait_until_ready())
        .await
        .is_err()
    {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    /// Several tasks wait at once; every one of them returns once the store
    /// is filled. With `Store::wait_until_ready` alone, some never do: that
    /// is pinned too, so this module can go once kube-runtime fixes it.
    #[tokio::test]
    async fn every_concurrent_waiter_wakes() {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        let (direct_store, mut direct_writer) = reflector::store::<ConfigMap>();
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move { wait_ready(&s).await })
            })
            .collect();
        let direct: Vec<_> = (0..3)
            .map(|_| {
                let s = direct_store.clone();
                tokio::spawn(async move { s.wait_until_ready().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        for w in [&mut writer, &mut direct_writer] {
            w.apply_watcher_event(&Event::Init);
            w.apply_watcher_event(&Event::InitDone);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let woken = direct.iter().filter(|w| w.is_finished()).count();
        assert!(
            woken < 3,
            "every direct waiter woke: kube-runtime fixed the lost wake-up"
        );
        for w in direct {
            w.abort();
        }
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("a waiter never woke")
                .unwrap();
        }
    }
}
