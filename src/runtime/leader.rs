//! Leader election through a Lease (kube-lease-manager), so that several
//! replicas are safe: one acts, the others wait and take over at once when
//! it hands the Lease back.

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tracing::{info, warn};

use super::shutdown::{RELEASE, Stop};

type LeaseTask = tokio::task::JoinHandle<kube_lease_manager::Result<LeaseManager>>;

/// The Lease, held.
pub struct Leadership {
    leading: watch::Receiver<bool>,
    task: LeaseTask,
}

/// Waits until this replica holds the Lease; `None` when a shutdown came
/// first.
pub async fn acquire(
    client: &Client,
    namespace: &str,
    name: &str,
    identity: &str,
    stop: &Stop,
) -> anyhow::Result<Option<Leadership>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    info!(%identity, lease = %name, "waiting to become leader");
    loop {
        let manager = LeaseManagerBuilder::new(client.clone(), name)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(15)
            .with_grace(5)
            .build()
            .await?;
        let (mut leading, task) = manager.watch().await;
        let outcome = tokio::select! {
            r = leading.wait_for(|l| *l) => { r.map(|_| Wait::Leading).context("lease manager stopped")? }
            _ = released(&leases, name) => Wait::Released,
            _ = stop.wait() => Wait::Stopping,
        };
        match outcome {
            Wait::Leading => {
                info!(%identity, "became leader");
                return Ok(Some(Leadership { leading, task }));
            }
            // A fresh manager reads the Lease anew and takes it at once.
            Wait::Released => release(leading, task).await,
            Wait::Stopping => {
                release(leading, task).await;
                return Ok(None);
            }
        }
    }
}

impl Leadership {
    /// Resolves when the Lease is lost.
    pub async fn lost(&mut self) {
        let _ = self.leading.wait_for(|l| !*l).await;
    }

    /// Hands the Lease back, so that another replica takes over at once
    /// instead of waiting for it to expire.
    pub async fn release(self) {
        release(self.leading, self.task).await
    }
}

enum Wait {
    Leading,
    Released,
    Stopping,
}

/// Resolves when the Lease, held by another replica so far, is handed back.
/// kube-lease-manager's follower otherwise sleeps until the old holder's
/// term would have expired (up to the full lease duration) even after the
/// holder released it on a clean shutdown.
async fn released(leases: &Api<Lease>, name: &str) {
    let mut held = false;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Ok(Some(lease)) = leases.get_opt(name).await else {
            continue;
        };
        let holder = lease.spec.and_then(|s| s.holder_identity);
        match holder.as_deref() {
            Some(h) if !h.is_empty() => held = true,
            _ if held => return,
            _ => {}
        }
    }
}

/// Closes the manager's channel and waits (briefly) for its task to end.
async fn release(leading: watch::Receiver<bool>, task: LeaseTask) {
    // Closing the channel makes the manager's task release the Lease and end.
    drop(leading);
    match tokio::time::timeout(RELEASE, task).await {
        Ok(Ok(Ok(_))) => info!("released the leader lease"),
        Ok(Ok(Err(e))) => warn!(error = %e, "releasing the leader lease failed"),
        Ok(Err(e)) => warn!(error = %e, "the lease manager failed"),
        Err(_) => warn!("releasing the leader lease timed out"),
    }
}
