//! The lifecycle-operator binary: CLI, logging, health server, leader election.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use kube::api::{Api, ListParams};
use kube::client::ClientBuilder;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tower::util::MapRequestLayer;
use tracing::{error, info, warn};
use tracing_subscriber::{EnvFilter, fmt};

use lifecycle_operator::metrics::Metrics;
use lifecycle_operator::reconcile;
use lifecycle_operator::release;
use lifecycle_operator::server::{self, Health};
use lifecycle_operator::types::LifecyclePolicy;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Puts postStart/preStop hooks on Deployments from LifecyclePolicy objects"
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
    #[command(subcommand)]
    command: Option<Command>,
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

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&args.log));
    match args.log_format {
        LogFormat::Text => fmt().with_env_filter(filter).init(),
        LogFormat::Json => fmt().json().with_env_filter(filter).init(),
    }
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });

    let metrics = Arc::new(Metrics::default());
    let config = kube::Config::infer().await.context("loading kubeconfig")?;
    let counted = metrics.clone();
    let client = ClientBuilder::try_from(config)?
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
    let (stop_tx, stop_rx) = watch::channel(false);
    let health = Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(server::serve(args.http_addr, health, async move {
        let _ = http_stop.wait_for(|s| *s).await;
    }));

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
            _ = shutdown_signal() => return finish(stop_tx, http).await,
        }
    }
    ready.store(true, Ordering::Relaxed);

    if args.leader_election {
        let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
            .with_namespace(&args.lease_namespace)
            .with_identity(&identity)
            .with_duration(15)
            .with_grace(5)
            .build()
            .await?;
        let (mut leading, lease_task) = manager.watch().await;
        info!(%identity, lease = %args.lease_name, "waiting to become leader");
        tokio::select! {
            r = leading.wait_for(|l| *l) => { r.context("lease manager stopped")?; }
            _ = shutdown_signal() => { return finish(stop_tx, http).await; }
        }
        info!(%identity, "became leader");
        metrics.leader.set(1);
        tokio::select! {
            _ = reconcile::run(client, metrics.clone(), identity) => {}
            _ = leading.wait_for(|l| !*l) => {
                // Another replica may already act: stop at once rather than race it.
                error!("lost the leader lease; exiting");
                std::process::exit(1);
            }
        }
        drop(leading);
        if let Ok(Ok(manager)) = lease_task.await {
            let _ = manager.release().await;
        }
    } else {
        metrics.leader.set(1);
        reconcile::run(client, metrics.clone(), identity).await;
    }
    finish(stop_tx, http).await
}

async fn finish(
    stop: watch::Sender<bool>,
    http: tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    info!("shutting down");
    let _ = stop.send(true);
    match tokio::time::timeout(Duration::from_secs(5), http).await {
        Ok(joined) => joined?,
        Err(_) => Ok(()),
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
