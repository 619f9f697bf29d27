//! HTTPS for the webhook's Router: each connection a TLS handshake, then
//! hyper's HTTP/1 serving the Router (as `axum::serve` does over plain TCP).
//! TLS only: the API server calls webhooks over HTTPS, URL-configured or not.
//!
//! The certificate comes from a [`Resolver`] asked at every handshake, so
//! [`Resolver::swap`] takes effect on the next connection, with the
//! listener left running. Each connection is bounded: a handshake and a
//! request head in seconds, a lifetime in minutes, a request body of
//! [`BODY_LIMIT`]; a connection that fails any of these is dropped alone.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use super::certs::Bundle;

/// An AdmissionReview carries the object and, on updates, the old object:
/// each at most etcd's 1.5 MiB request limit, so 3 MiB takes any review
/// the API server can send, and nothing much larger gets buffered.
pub const BODY_LIMIT: usize = 3 * 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// After this a connection is closed once its request in flight is
/// answered: the API server reconnects, and so meets a swapped certificate.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// On shutdown, requests in flight get this long (the API server's
/// webhook timeout is at most 30 s).
const GRACE: Duration = Duration::from_secs(30);
/// More connections than this at once are closed on accept.
const MAX_CONNECTIONS: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("certificate PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The serving certificate, swappable while the server runs.
#[derive(Debug)]
pub struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl Resolver {
    pub fn new(bundle: &Bundle) -> Result<Self, Error> {
        Ok(Self {
            current: RwLock::new(certified_key(bundle)?),
        })
    }

    /// Serves `bundle`'s certificate from the next handshake on. A bundle
    /// that does not load leaves the current certificate in place.
    pub fn swap(&self, bundle: &Bundle) -> Result<(), Error> {
        let next = certified_key(bundle)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// The leaf (and any chain after it in `cert_pem`) with its key, checked to belong together.
fn certified_key(bundle: &Bundle) -> Result<Arc<CertifiedKey>, Error> {
    let chain = CertificateDer::pem_slice_iter(bundle.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(bundle.key_pem.as_bytes())?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match()?;
    Ok(Arc::new(certified))
}

fn tls_config(certs: Arc<Resolver>) -> Result<Arc<ServerConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    // HTTP/1 only is served; saying so keeps a client from trying h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` over HTTPS on `addr` until `shutdown`, then lets the
/// requests in flight finish (for at most [`GRACE`]).
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    certs: Arc<Resolver>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    // `[::]` in a pod: dual-stack, as the metrics port.
    let listener = crate::runtime::server::listen(addr)?;
    serve_on(listener, router, certs, shutdown).await
}

/// [`serve`] on a bound listener (tests bind port 0 and read it back).
pub async fn serve_on(
    listener: TcpListener,
    router: Router,
    certs: Arc<Resolver>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let acceptor = TlsAcceptor::from(tls_config(certs)?);
    let router = router.layer(DefaultBodyLimit::max(BODY_LIMIT));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (stop, stopping) = watch::channel(false);
    tracing::info!(addr = ?listener.local_addr().ok(), "serving the admission webhook");
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, never stop listening.
                    tracing::warn!(error = %e, "accepting a webhook connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many webhook connections; closing this one");
            continue;
        };
        let conn = connection(
            acceptor.clone(),
            tcp,
            router.clone(),
            stopping.clone(),
            slot,
        );
        tokio::spawn(conn);
    }
    drop(stopping);
    let _ = stop.send(true);
    // Each connection holds a receiver: all are gone once all have finished.
    let _ = tokio::time::timeout(GRACE, stop.closed()).await;
    Ok(())
}

/// One connection: the handshake, then HTTP/1 until the client closes, the
/// lifetime ends or the server stops (the last two let the request in
/// flight finish). Every failure ends this connection only.
async fn connection(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    router: Router,
    mut stopping: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let peer = tcp.peer_addr().ok();
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return tracing::debug!(?peer, error = %e, "webhook TLS handshake failed"),
        Err(_) => return tracing::debug!(?peer, "webhook TLS handshake timed out"),
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let conn = http.serve_connection(TokioIo::new(tls), TowerToHyperService::new(router));
    tokio::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => {
            if let Err(e) = done {
                tracing::debug!(?peer, error = %e, "webhook connection");
            }
            return;
        }
        () = tokio::time::sleep(CONNECTION_LIFETIME) => {}
        _ = stopping.wait_for(|stop| *stop) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(GRACE, conn).await;
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use axum::routing::{get, post};
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::TlsConnector;

    use super::*;
    use crate::admission::certs::Sans;

    fn bundle() -> Bundle {
        let sans = Sans::for_service("webhook", "ops").with_ip([127, 0, 0, 1].into());
        Bundle::generate(&sans, SystemTime::now()).unwrap()
    }

    fn router() -> Router {
        Router::new()
            .route("/hello", get(|| async { "hello" }))
            .route(
                "/len",
                post(|b: axum::body::Bytes| async move { b.len().to_string() }),
            )
    }

    /// A server on a free loopback port; dropping the sender stops it.
    async fn start(certs: Arc<Resolver>) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_on(listener, router(), certs, async {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    /// Sends `request` over TLS to `name` at `addr`, trusting only `ca_pem`;
    /// returns the served leaf and the raw answer.
    async fn send(
        addr: SocketAddr,
        name: &str,
        ca_pem: &str,
        request: &[u8],
    ) -> std::io::Result<(Vec<u8>, String)> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(ca.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(name.to_string()).unwrap();
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        tls.write_all(request).await?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await?;
        Ok((leaf, String::from_utf8_lossy(&answer).into_owned()))
    }

    const HELLO: &[u8] = b"GET /hello HTTP/1.0\r\nHost: webhook.ops.svc\r\n\r\n";

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[tokio::test]
    async fn serves_https_and_a_swapped_certificate_without_a_restart() {
        let (first, second) = (bundle(), bundle());
        let certs = Arc::new(Resolver::new(&first).unwrap());
        let (addr, _stop) = start(certs.clone()).await;
        for name in ["webhook.ops.svc", "127.0.0.1"] {
            let (leaf, answer) = send(addr, name, &first.ca_bundle(), HELLO).await.unwrap();
            assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
            assert!(answer.ends_with("hello"), "{answer}");
            assert_eq!(leaf, der(&first.cert_pem));
        }
        certs.swap(&second).unwrap();
        let (leaf, answer) = send(addr, "127.0.0.1", &second.ca_bundle(), HELLO)
            .await
            .unwrap();
        assert!(answer.ends_with("hello"), "{answer}");
        assert_eq!(leaf, der(&second.cert_pem));
        // A client that trusts only the first CA no longer gets through.
        assert!(
            send(addr, "127.0.0.1", &first.ca_bundle(), HELLO)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_bad_handshake_drops_only_that_connection() {
        let b = bundle();
        let (addr, _stop) = start(Arc::new(Resolver::new(&b).unwrap())).await;
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain.write_all(HELLO).await.unwrap();
        let mut rest = Vec::new();
        // Closed on us, whether with a TLS alert or none.
        let _ = plain.read_to_end(&mut rest).await;
        assert!(!String::from_utf8_lossy(&rest).contains("hello"));
        let other = bundle();
        assert!(
            send(addr, "127.0.0.1", &other.ca_bundle(), HELLO)
                .await
                .is_err()
        );
        let (_, answer) = send(addr, "127.0.0.1", &b.ca_bundle(), HELLO)
            .await
            .unwrap();
        assert!(answer.ends_with("hello"), "{answer}");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused() {
        let b = bundle();
        let (addr, _stop) = start(Arc::new(Resolver::new(&b).unwrap())).await;
        let post = |n: usize| {
            let mut r = format!("POST /len HTTP/1.0\r\nHost: x\r\nContent-Length: {n}\r\n\r\n")
                .into_bytes();
            r.resize(r.len() + n, b'a');
            r
        };
        let (_, answer) = send(addr, "127.0.0.1", &b.ca_bundle(), &post(BODY_LIMIT))
            .await
            .unwrap();
        assert!(
            answer.ends_with(&BODY_LIMIT.to_string()),
            "{}",
            &answer[..answer.len().min(200)]
        );
        let (_, answer) = send(addr, "127.0.0.1", &b.ca_bundle(), &post(BODY_LIMIT + 1))
            .await
            .unwrap();
        assert!(
            answer.starts_with("HTTP/1.0 413"),
            "{}",
            &answer[..answer.len().min(200)]
        );
    }

    #[test]
    fn a_bundle_that_does_not_load_is_not_swapped_in() {
        let b = bundle();
        let certs = Resolver::new(&b).unwrap();
        let garbage = Bundle {
            key_pem: "garbage".into(),
            ..b.clone()
        };
        assert!(Resolver::new(&garbage).is_err());
        let mismatched = Bundle {
            key_pem: bundle().key_pem,
            ..b.clone()
        };
        assert!(certs.swap(&mismatched).is_err());
        let served = certs.current.read().unwrap().cert[0].to_vec();
        assert_eq!(served, der(&b.cert_pem));
    }
}
