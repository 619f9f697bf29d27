//! The lifecycle-operator binary: CLI, logging, health server, leader election,
//! and a shutdown that always ends within `SHUTDOWN_BUDGET` of SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use kube::client::ClientBuilder;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tower::util::MapRequestLayer;
use tracing::{error, info, warn};
use tracing_subscriber::{EnvFilter, fmt};

use lifecycle_operator::api::types::LifecyclePolicy;
use lifecycle_operator::apply::release;
use lifecycle_operator::reconcile;
use lifecycle_operator::runtime::client;
use lifecycle_operator::runtime::liveness::Liveness;
use lifecycle_operator::runtime::metrics::Metrics;
use lifecycle_operator::runtime::server::{self, Health};
use lifecycle_operator::verify::observer::LogStreams;
use lifecycle_operator::verify::pool::PoolSize;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Puts postStart/preStop hooks on Deployments, StatefulSets and DaemonSets from LifecyclePolicy objects"
)]
struct Args {
    /// Address for /healthz, /readyz and /metrics. `[::]` listens on IPv6
    /// and IPv4 (IPv4 alone where the host has no IPv6).
    #[arg(long, env = "LCO_HTTP_ADDR", default_value = "[::]:8080")]
    http_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "LCO_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, env = "LCO_LOG", default_value = "info,kube=warn")]
    log: String,
    /// Elect a leader through a Lease so that several replicas are safe.
    #[arg(long, env = "LCO_LEADER_ELECTION", default_value_t = false)]
    leader_election: bool,
    /// Namespace of the leader Lease (defaults to the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "LCO_LEASE_NAME", default_value = "lifecycle-operator")]
    lease_name: String,
    /// This replica's identity (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Terminating containers' logs followed at once for preStop markers
    /// (each a streaming request for as long as its pod stops).
    #[arg(long, env = "LCO_PRESTOP_LOG_STREAMS", default_value_t = LogStreams::DEFAULT.pre_stop.total())]
    prestop_log_streams: usize,
    /// Of those, the most one namespace holds: the rest is always there for
    /// the others. At least 1, at most --prestop-log-streams.
    #[arg(long, env = "LCO_PRESTOP_LOG_STREAMS_PER_NAMESPACE", default_value_t = LogStreams::DEFAULT.pre_stop.per_namespace())]
    prestop_log_streams_per_namespace: usize,
    /// Running containers' logs read at once for postStart markers (a pool
    /// of its own: preStop follows never delay them).
    #[arg(long, env = "LCO_POSTSTART_LOG_STREAMS", default_value_t = LogStreams::DEFAULT.post_start.total())]
    poststart_log_streams: usize,
    /// Of those, the most one namespace holds. At least 1, at most
    /// --poststart-log-streams.
    #[arg(long, env = "LCO_POSTSTART_LOG_STREAMS_PER_NAMESPACE", default_value_t = LogStreams::DEFAULT.post_start.per_namespace())]
    poststart_log_streams_per_namespace: usize,
    #[command(subcommand)]
    command: Option<Command>,
}

impl Args {
    /// The log stream pools the flags ask for; a share of 0, or above its
    /// pool, is refused (never clamped), naming the flags.
    fn log_streams(&self) -> anyhow::Result<LogStreams> {
        let size = |hook: &str, total: usize, per_namespace: usize| {
            PoolSize::new(total, per_namespace).map_err(|e| {
                anyhow::anyhow!(
                    "--{hook}-log-streams={total} --{hook}-log-streams-per-namespace={per_namespace}: {e}"
                )
            })
        };
        Ok(LogStreams {
            pre_stop: size(
                "prestop",
                self.prestop_log_streams,
                self.prestop_log_streams_per_namespace,
            )?,
            post_start: size(
                "poststart",
                self.poststart_log_streams,
                self.poststart_log_streams_per_namespace,
            )?,
        })
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Delete every LifecyclePolicy and wait until the running operator has
    /// handed their hooks back (the chart runs this before uninstalling).
    ReleaseAll {
        /// Give up, and fail, after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout_seconds: u64,
    },
}

/// How long reconciles in flight may finish after SIGTERM before they are cancelled.
const DRAIN: Duration = Duration::from_millis(2500);
/// How long releasing the leader Lease may take at shutdown.
const RELEASE: Duration = Duration::from_secs(1);
/// The process exits by then after SIGTERM, whatever is still running.
const SHUTDOWN_BUDGET: Duration = Duration::from_millis(4800);

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

// jemalloc, not glibc's malloc: the pod and workload lists arrive as bursts
// of short-lived allocations on several threads, and glibc kept what they
// freed in its per-thread arenas (10,000 hooked pods: 61.5 MiB of RSS with
// glibc, 24 MiB with jemalloc, of which the index holds about 8).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options (its `malloc_conf`, a C string). A background thread
/// returns freed pages to the system: without it, pages are only returned
/// while the process keeps allocating, and an idle operator would sit on the
/// peak of its last list.
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8; 23] = b"background_thread:true\0";

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(operate());
    // Blocking tasks (a DNS lookup, say) must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn operate() -> anyhow::Result<()> {
    let args = Args::parse();
    // Refused like any bad flag: clap's message and exit code 2.
    let streams = args.log_streams().unwrap_or_else(|e| {
        Args::command()
            .error(clap::error::ErrorKind::ValueValidation, e)
            .exit()
    });
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&args.log));
    match args.log_format {
        LogFormat::Text => fmt().with_env_filter(filter).init(),
        LogFormat::Json => fmt().json().with_env_filter(filter).init(),
    }
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(signals(stop_tx));
    let stop_requested = stop_rx.clone();
    let stopping = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let metrics = Arc::new(Metrics::default());
    let mut config = kube::Config::infer().await.context("loading kubeconfig")?;
    client::configure(&mut config);
    let counted = metrics.clone();
    let client = client::bounded(ClientBuilder::try_from(config)?)
        .with_layer(&MapRequestLayer::new(
            move |req: http::Request<kube::client::Body>| {
                counted.count_request(req.method());
                req
            },
        ))
        .build();

    if let Some(Command::ReleaseAll { timeout_seconds }) = args.command {
        release::release_all(client, Duration::from_secs(timeout_seconds)).await?;
        return Ok(());
    }

    let ready = Arc::new(AtomicBool::new(false));
    let liveness = Arc::new(Liveness::new(
        reconcile::RECONCILE_TIMEOUT,
        reconcile::RESYNC,
    ));
    let health = Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
        liveness: liveness.clone(),
    };
    let http = tokio::spawn(server::serve(args.http_addr, health, stopping()));

    // Not ready until the API server answers and the CRD is installed; keep
    // trying (an operator that crash-loops on a slow API server helps no one).
    let policies = Api::<LifecyclePolicy>::all(client.clone());
    while let Err(e) = policies
        .list_metadata(&ListParams::default().limit(1))
        .await
    {
        warn!(error = %e, "cannot list LifecyclePolicies yet (API server down, or the CRD in crds/ not installed); retrying");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stopping() => return finish(http).await,
        }
    }
    ready.store(true, Ordering::Relaxed);

    let mut lease = None;
    if args.leader_election {
        let leases: Api<Lease> = Api::namespaced(client.clone(), &args.lease_namespace);
        info!(%identity, lease = %args.lease_name, "waiting to become leader");
        loop {
            let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
                .with_namespace(&args.lease_namespace)
                .with_identity(&identity)
                .with_duration(15)
                .with_grace(5)
                .build()
                .await?;
            let (mut leading, lease_task) = manager.watch().await;
            let outcome = tokio::select! {
                r = leading.wait_for(|l| *l) => { r.map(|_| Wait::Leading).context("lease manager stopped")? }
                _ = released(&leases, &args.lease_name) => Wait::Released,
                _ = stopping() => Wait::Stopping,
            };
            match outcome {
                Wait::Leading => {
                    lease = Some((leading, lease_task));
                    break;
                }
                // A fresh manager reads the Lease anew and takes it at once.
                Wait::Released => release(leading, lease_task).await,
                Wait::Stopping => {
                    release(leading, lease_task).await;
                    return finish(http).await;
                }
            }
        }
        info!(%identity, "became leader");
    }
    metrics.leader.set(1);

    info!(pre_stop = %streams.pre_stop, post_start = %streams.post_start, "log streams");
    let controller = reconcile::run(
        client,
        metrics.clone(),
        liveness.clone(),
        identity,
        streams,
        stopping(),
    );
    tokio::pin!(controller);
    let lost = async {
        match &mut lease {
            Some((leading, _)) => {
                let _ = leading.wait_for(|l| !*l).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        // A shutdown also ends the controller: check for it first.
        biased;
        _ = stopping() => {
            // Reconciles in flight may finish (each leaves a consistent
            // Deployment behind), but not past the budget.
            if tokio::time::timeout(DRAIN, &mut controller).await.is_err() {
                warn!("reconciles still running at the shutdown deadline; cancelling them");
            }
        }
        _ = &mut controller => {
            // The controller watches the same signal and may see it first.
            if !*stop_requested.borrow() {
                liveness.stopped();
                error!("the controller stopped although no shutdown was requested");
            }
        }
        _ = lost => {
            // Another replica may already act: stop at once rather than race it.
            error!("lost the leader lease; exiting");
            std::process::exit(1);
        }
    }
    if let Some((leading, lease_task)) = lease {
        release(leading, lease_task).await;
    }
    finish(http).await
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

/// Hands the leader Lease back, so that another replica takes over at once
/// instead of waiting for it to expire.
async fn release(
    leading: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
) {
    // Closing the channel makes the manager's task release the Lease and end.
    drop(leading);
    match tokio::time::timeout(RELEASE, task).await {
        Ok(Ok(Ok(_))) => info!("released the leader lease"),
        Ok(Ok(Err(e))) => warn!(error = %e, "releasing the leader lease failed"),
        Ok(Err(e)) => warn!(error = %e, "the lease manager failed"),
        Err(_) => warn!("releasing the leader lease timed out"),
    }
}

async fn finish(http: tokio::task::JoinHandle<anyhow::Result<()>>) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn streams(flags: &[&str]) -> anyhow::Result<LogStreams> {
        let argv = std::iter::once("lifecycle-operator").chain(flags.iter().copied());
        Args::try_parse_from(argv).unwrap().log_streams()
    }

    #[test]
    fn log_streams_default_to_todays_pools() {
        let s = streams(&[]).unwrap();
        assert_eq!(s, LogStreams::default());
        assert_eq!((s.pre_stop.total(), s.pre_stop.per_namespace()), (256, 192));
        assert_eq!(
            (s.post_start.total(), s.post_start.per_namespace()),
            (64, 48)
        );
    }

    #[test]
    fn log_streams_come_from_the_flags() {
        let s = streams(&[
            "--prestop-log-streams=4",
            "--prestop-log-streams-per-namespace",
            "3",
            "--poststart-log-streams=2",
            "--poststart-log-streams-per-namespace=2",
        ])
        .unwrap();
        assert_eq!(s.pre_stop, PoolSize::new(4, 3).unwrap());
        assert_eq!(s.post_start, PoolSize::new(2, 2).unwrap());
    }

    #[test]
    fn a_share_of_zero_or_above_its_pool_is_refused_naming_the_flags() {
        for (flags, want) in [
            (
                &["--prestop-log-streams-per-namespace=0"][..],
                "--prestop-log-streams=256 --prestop-log-streams-per-namespace=0: the per-namespace share is 0",
            ),
            (
                &["--prestop-log-streams=100"][..],
                "--prestop-log-streams=100 --prestop-log-streams-per-namespace=192: the per-namespace share (192) is above the total (100)",
            ),
            (
                &["--poststart-log-streams-per-namespace=65"][..],
                "--poststart-log-streams=64 --poststart-log-streams-per-namespace=65: the per-namespace share (65) is above the total (64)",
            ),
            (
                &[
                    "--poststart-log-streams=0",
                    "--poststart-log-streams-per-namespace=0",
                ][..],
                "--poststart-log-streams=0 --poststart-log-streams-per-namespace=0: the pool has no stream",
            ),
        ] {
            let err = streams(flags).unwrap_err().to_string();
            assert!(err.starts_with(want), "{flags:?}: {err}");
        }
        // Not a number at all: clap's own error.
        let argv = ["lifecycle-operator", "--prestop-log-streams=-1"];
        assert!(Args::try_parse_from(argv).is_err());
    }
}
