//! Shutdown within a budget: the first SIGTERM or SIGINT asks every part
//! to stop (a [`Stop`] each waits on), a second one or the budget running
//! out ends the process on the spot.

use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

/// How long reconciles in flight may finish after SIGTERM before they are cancelled.
pub const DRAIN: Duration = Duration::from_millis(2500);
/// How long releasing the leader Lease may take at shutdown.
pub const RELEASE: Duration = Duration::from_secs(1);
/// The process exits by then after SIGTERM, whatever is still running.
pub const SHUTDOWN_BUDGET: Duration = Duration::from_millis(4800);

/// Whether a shutdown was asked for, and a way to wait for it.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Listens for the signals from now on.
    pub fn on_signals() -> Stop {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(signals(tx));
        Stop(rx)
    }

    pub fn requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once a shutdown is asked for.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}

/// Lets the HTTP server end (it answers until then), briefly.
pub async fn finish(http: tokio::task::JoinHandle<anyhow::Result<()>>) -> anyhow::Result<()> {
    info!("shutting down");
    match tokio::time::timeout(Duration::from_millis(300), http).await {
        Ok(joined) => joined?,
        Err(_) => Ok(()),
    }
}

/// The first SIGTERM or SIGINT asks for a clean shutdown; a second one, or
/// the budget running out, ends the process on the spot.
async fn signals(stop: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    info!("shutdown requested");
    stop.send_replace(true);
    // A plain thread: it fires even if the async runtime were wedged.
    std::thread::spawn(|| {
        std::thread::sleep(SHUTDOWN_BUDGET);
        eprintln!("lifecycle-operator: shutdown budget exhausted; exiting");
        std::process::exit(1);
    });
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    warn!("second signal: exiting at once");
    std::process::exit(130);
}
