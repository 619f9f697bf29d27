//! `/healthz`, `/readyz` and `/metrics` on one small HTTP port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::{Router, extract::State, http::StatusCode, routing::get};

use crate::runtime::liveness::Liveness;
use crate::runtime::metrics::Metrics;

#[derive(Clone)]
pub struct Health {
    pub metrics: Arc<Metrics>,
    /// Set once the operator can reach the API server and its CRD is installed.
    pub ready: Arc<AtomicBool>,
    /// Whether the controller loop still makes progress.
    pub liveness: Arc<Liveness>,
}

pub async fn serve(
    addr: SocketAddr,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health);
    let listener = listen(addr)?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving /healthz, /readyz, /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Binds `addr`. The IPv6 wildcard `[::]` is bound dual-stack (IPv4 too,
/// whatever net.ipv6.bindv6only says); on a host without IPv6 it falls back
/// to `0.0.0.0` on the same port.
pub fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let bind = |addr: SocketAddr| -> std::io::Result<std::net::TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            socket.set_only_v6(false)?;
        }
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        socket.set_nonblocking(true)?;
        Ok(socket.into())
    };
    let std = match bind(addr) {
        Err(e) if addr.is_ipv6() && addr.ip().is_unspecified() => {
            tracing::warn!(error = %e, "no IPv6 here; listening on IPv4 only");
            bind(SocketAddr::from(([0, 0, 0, 0], addr.port())))?
        }
        other => other?,
    };
    tokio::net::TcpListener::from_std(std)
}

/// Unhealthy once the controller loop stops making progress, so that the
/// kubelet restarts the operator.
async fn healthz(State(h): State<Health>) -> (StatusCode, String) {
    match h.liveness.check(std::time::Instant::now()) {
        Ok(()) => (StatusCode::OK, "ok".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn readyz(State(h): State<Health>) -> (StatusCode, &'static str) {
    if h.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(h): State<Health>) -> ([(&'static str, &'static str); 1], String) {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.render(),
    )
}
