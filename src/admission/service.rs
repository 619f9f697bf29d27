//! The webhook as the operator runs it, on every replica: its own policy
//! caches, its certificate (self-managed: ensured at start and every
//! [`RENEW_EVERY`]; or cert-manager's files, re-read as often), and the HTTPS
//! server. Leadership plays no part: admission must not wait for it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tracing::warn;

use crate::admission::certs::{self, Bundle, Sans};
use crate::admission::server::{self, Resolver};
use crate::admission::webhook::{self, Webhook};
use crate::apply::neighbours::Neighbours;
use crate::reconcile;
use crate::runtime::metrics::Metrics;
use crate::runtime::shutdown::Stop;

/// How often the certificate is checked for rotation (a leaf lives 90 days
/// and is renewed with a third of its life left: hours are plenty).
pub const RENEW_EVERY: Duration = Duration::from_secs(600);

/// What the command line asks of the webhook (`cli::WebhookArgs`).
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// None: no webhook.
    pub addr: Option<SocketAddr>,
    /// The Service in front of it, for the certificate's names.
    pub service: String,
    /// Extra IP addresses in the certificate.
    pub ips: Vec<IpAddr>,
    pub secret: String,
    pub configuration: String,
    /// cert-manager's mounted Secret instead of a managed one.
    pub cert_dir: Option<PathBuf>,
}

/// Serves the webhook until `shutdown`, when `args` ask for one.
pub async fn run(
    client: Client,
    args: Settings,
    operator_namespace: String,
    metrics: Arc<Metrics>,
    stop: Stop,
) -> anyhow::Result<()> {
    let Some(addr) = args.addr else {
        return Ok(());
    };
    let (policies, caches) = reconcile::policy_caches(&client, operator_namespace.clone());
    let caches = tokio::spawn(caches);
    let source = Source::of(&args, &operator_namespace);
    let Some(bundle) = first_bundle(&client, &source, stop.wait()).await else {
        caches.abort();
        return Ok(());
    };
    let resolver = Arc::new(Resolver::new(&bundle)?);
    let renew = tokio::spawn(renew(client, source, resolver.clone()));
    let router = webhook::router(Arc::new(Webhook {
        policies,
        neighbours: Neighbours::default(),
        metrics,
    }));
    let served = server::serve(addr, router, resolver, stop.wait()).await;
    renew.abort();
    caches.abort();
    Ok(served?)
}

/// Where the serving certificate comes from.
enum Source {
    /// The operator's own CA, in a Secret it alone writes.
    Managed {
        namespace: String,
        secret: String,
        configuration: String,
        sans: Sans,
    },
    /// cert-manager's Secret, mounted: tls.crt, tls.key (and ca.crt).
    Files(std::path::PathBuf),
}

impl Source {
    fn of(args: &Settings, namespace: &str) -> Source {
        if let Some(dir) = &args.cert_dir {
            return Source::Files(dir.clone());
        }
        let sans = args
            .ips
            .iter()
            .fold(Sans::for_service(&args.service, namespace), |s, ip| {
                s.with_ip(*ip)
            });
        Source::Managed {
            namespace: namespace.to_string(),
            secret: args.secret.clone(),
            configuration: args.configuration.clone(),
            sans,
        }
    }

    async fn bundle(&self, client: &Client) -> anyhow::Result<Bundle> {
        match self {
            Source::Managed {
                namespace,
                secret,
                configuration,
                sans,
            } => Ok(certs::ensure(client, namespace, secret, configuration, sans).await?),
            Source::Files(dir) => from_files(dir),
        }
    }
}

/// The certificate before serving; retried every 5 s (the API server may
/// not answer yet). None when a shutdown came first.
async fn first_bundle(
    client: &Client,
    source: &Source,
    shutdown: impl Future<Output = ()>,
) -> Option<Bundle> {
    tokio::pin!(shutdown);
    loop {
        match source.bundle(client).await {
            Ok(b) => return Some(b),
            Err(e) => warn!(error = %e, "no webhook certificate yet; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = &mut shutdown => return None,
        }
    }
}

async fn renew(client: Client, source: Source, resolver: Arc<Resolver>) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        match source.bundle(&client).await.map(|b| resolver.swap(&b)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(error = %e, "the renewed webhook certificate does not load; keeping the current one")
            }
            Err(e) => {
                warn!(error = %e, "cannot renew the webhook certificate; keeping the current one")
            }
        }
    }
}

/// cert-manager's files: the serving pair is all the server reads (its
/// cainjector keeps the caBundle; there is no CA key here).
fn from_files(dir: &Path) -> anyhow::Result<Bundle> {
    use anyhow::Context as _;
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let bundle = Bundle {
        ca_cert_pem: read("ca.crt").unwrap_or_default(),
        ca_key_pem: String::new(),
        cert_pem: read("tls.crt")?,
        key_pem: read("tls.key")?,
        retired_ca_pem: None,
    };
    // Refused here, not at the next handshake.
    Resolver::new(&bundle)?;
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn cert_managers_files_are_read_and_a_broken_pair_refused() {
        let dir = std::env::temp_dir().join(format!("lco-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let b = Bundle::generate(&Sans::for_service("s", "ns"), SystemTime::now()).unwrap();
        std::fs::write(dir.join("tls.crt"), &b.cert_pem).unwrap();
        std::fs::write(dir.join("tls.key"), &b.key_pem).unwrap();
        let read = from_files(&dir).unwrap();
        assert_eq!(
            (read.cert_pem, read.key_pem),
            (b.cert_pem.clone(), b.key_pem)
        );
        // Another key: refused.
        let other = Bundle::generate(&Sans::for_service("s", "ns"), SystemTime::now()).unwrap();
        std::fs::write(dir.join("tls.key"), &other.key_pem).unwrap();
        assert!(from_files(&dir).is_err());
        std::fs::remove_file(dir.join("tls.key")).unwrap();
        assert!(from_files(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
