//! The lifecycle-operator binary: wires the runtime parts together (flags,
//! logging, API client, health server, leader election, the controller) and
//! ends within `runtime::shutdown::SHUTDOWN_BUDGET` of SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::Client;
use kube::api::{Api, ListParams};
use kube::client::ClientBuilder;
use tower::util::MapRequestLayer;
use tracing::{error, info, warn};

use lifecycle_operator::admission::service;
use lifecycle_operator::api::cluster::ClusterLifecyclePolicy;
use lifecycle_operator::api::types::LifecyclePolicy;
use lifecycle_operator::apply::release;
use lifecycle_operator::cli::{Args, Command};
use lifecycle_operator::reconcile;
use lifecycle_operator::runtime::client;
use lifecycle_operator::runtime::leader::{self, Leadership};
use lifecycle_operator::runtime::liveness::Liveness;
use lifecycle_operator::runtime::metrics::Metrics;
use lifecycle_operator::runtime::server::{self, Health};
use lifecycle_operator::runtime::server_version;
use lifecycle_operator::runtime::shutdown::{self, DRAIN, Stop};

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
    let (args, streams) = Args::parse_checked();
    args.init_logging();
    let identity = args.identity();
    let stop = Stop::on_signals();
    let metrics = Arc::new(Metrics::default());
    let client = api_client(&metrics).await?;
    if let Some(Command::ReleaseAll { timeout_seconds }) = args.command {
        release::release_all(client, Duration::from_secs(timeout_seconds)).await?;
        return Ok(());
    }

    // Before anything else runs: refuse a server older than the floor.
    if !server_supported(&client, &stop).await? {
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
    let http = tokio::spawn(server::serve(args.http_addr, health, stop.wait()));
    // Every replica serves admission, the leader or not.
    let webhook = tokio::spawn(service::run(
        client.clone(),
        args.webhook.settings(),
        args.operator_namespace.clone(),
        metrics.clone(),
        stop.clone(),
    ));
    tokio::spawn(async move {
        match webhook.await {
            Ok(Err(e)) => error!(error = %e, "the admission webhook stopped"),
            Err(e) => error!(error = %e, "the admission webhook panicked"),
            Ok(Ok(())) => {}
        }
    });
    if !crd_installed(&client, &stop).await {
        return shutdown::finish(http).await;
    }
    ready.store(true, Ordering::Relaxed);

    let mut lease = None;
    if args.leader_election {
        lease = leader::acquire(
            &client,
            &args.lease_namespace,
            &args.lease_name,
            &identity,
            &stop,
        )
        .await?;
        if lease.is_none() {
            return shutdown::finish(http).await;
        }
    }
    metrics.leader.set(1);

    info!(pre_stop = %streams.pre_stop, post_start = %streams.post_start, "log streams");
    let controller = reconcile::run(
        client,
        metrics.clone(),
        liveness.clone(),
        identity,
        streams,
        args.operator_namespace.clone(),
        stop.wait(),
    );
    control(controller, &mut lease, &stop, &liveness).await;
    if let Some(lease) = lease {
        lease.release().await;
    }
    shutdown::finish(http).await
}

/// The API client: bounded in time, every write counted.
async fn api_client(metrics: &Arc<Metrics>) -> anyhow::Result<Client> {
    use anyhow::Context as _;
    let mut config = kube::Config::infer().await.context("loading kubeconfig")?;
    client::configure(&mut config);
    let counted = metrics.clone();
    Ok(client::bounded(ClientBuilder::try_from(config)?)
        .with_layer(&MapRequestLayer::new(
            move |req: http::Request<kube::client::Body>| {
                counted.count_request(req.method());
                req
            },
        ))
        .build())
}

/// Logs the API server's version and refuses (an error, so the process exits
/// non-zero with the reason) one older than the oldest supported. Keeps
/// trying while the server does not answer; false when a shutdown came first.
async fn server_supported(client: &Client, stop: &Stop) -> anyhow::Result<bool> {
    loop {
        match client.apiserver_version().await {
            Ok(info) => {
                let parsed = server_version::parse(&info);
                if let Some(why) = server_version::refusal(parsed, &info.git_version) {
                    error!(server = %info.git_version, "{why}");
                    anyhow::bail!(why);
                }
                let v = parsed.expect("a supported version parsed");
                server_version::set(v);
                info!(
                    server = %info.git_version,
                    version = %v,
                    oldest_supported = %format!("1.{}", server_version::OLDEST_MINOR),
                    zero_second_sleep = server_version::zero_sleep_allowed(),
                    "API server version"
                );
                return Ok(true);
            }
            Err(e) => warn!(error = %e, "cannot read the API server's version yet; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.wait() => return Ok(false),
        }
    }
}

/// Not ready until the API server answers and both CRDs are installed;
/// keeps trying (an operator that crash-loops on a slow API server helps no
/// one). False when a shutdown came first.
async fn crd_installed(client: &Client, stop: &Stop) -> bool {
    let one = ListParams::default().limit(1);
    loop {
        let namespaced = Api::<LifecyclePolicy>::all(client.clone());
        let cluster = Api::<ClusterLifecyclePolicy>::all(client.clone());
        let listed = match namespaced.list_metadata(&one).await {
            Ok(_) => cluster.list_metadata(&one).await.map(drop),
            Err(e) => Err(e),
        };
        match listed {
            Ok(()) => return true,
            Err(e) => {
                warn!(error = %e, "cannot list LifecyclePolicies and ClusterLifecyclePolicies yet (API server down, or the CRDs in crds/ not installed); retrying")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.wait() => return false,
        }
    }
}

/// Runs the controller until a shutdown (then lets reconciles in flight
/// finish within the budget), its unexpected end, or a lost Lease.
async fn control(
    controller: impl Future<Output = ()>,
    lease: &mut Option<Leadership>,
    stop: &Stop,
    liveness: &Liveness,
) {
    tokio::pin!(controller);
    let lost = async {
        match lease {
            Some(l) => l.lost().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        // A shutdown also ends the controller: check for it first.
        biased;
        _ = stop.wait() => {
            // Reconciles in flight may finish (each leaves a consistent
            // Deployment behind), but not past the budget.
            if tokio::time::timeout(DRAIN, &mut controller).await.is_err() {
                warn!("reconciles still running at the shutdown deadline; cancelling them");
            }
        }
        _ = &mut controller => {
            // The controller watches the same signal and may see it first.
            if !stop.requested() {
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
}
