//! The operator's command line: flags (each with its environment
//! variable), the `release-all` subcommand, logging.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use tracing_subscriber::{EnvFilter, fmt};

use crate::admission::service::Settings;
use crate::verify::observer::LogStreams;
use crate::verify::pool::PoolSize;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Puts postStart/preStop hooks on Deployments, StatefulSets and DaemonSets from LifecyclePolicy objects"
)]
pub struct Args {
    /// Address for /healthz, /readyz and /metrics. `[::]` listens on IPv6
    /// and IPv4 (IPv4 alone where the host has no IPv6).
    #[arg(long, env = "LCO_HTTP_ADDR", default_value = "[::]:8080")]
    pub http_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "LCO_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, env = "LCO_LOG", default_value = "info,kube=warn")]
    pub log: String,
    /// Elect a leader through a Lease so that several replicas are safe.
    #[arg(long, env = "LCO_LEADER_ELECTION", default_value_t = false)]
    pub leader_election: bool,
    /// Namespace of the leader Lease (defaults to the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// The operator's own namespace: cluster policies leave it alone
    /// unless they list it in `spec.namespaces`.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub operator_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "LCO_LEASE_NAME", default_value = "lifecycle-operator")]
    pub lease_name: String,
    /// This replica's identity (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Terminating containers' logs followed at once for preStop markers
    /// (each a streaming request for as long as its pod stops).
    #[arg(long, env = "LCO_PRESTOP_LOG_STREAMS", default_value_t = LogStreams::DEFAULT.pre_stop.total())]
    pub prestop_log_streams: usize,
    /// Of those, the most one namespace holds: the rest is always there for
    /// the others. At least 1, at most --prestop-log-streams.
    #[arg(long, env = "LCO_PRESTOP_LOG_STREAMS_PER_NAMESPACE", default_value_t = LogStreams::DEFAULT.pre_stop.per_namespace())]
    pub prestop_log_streams_per_namespace: usize,
    /// Running containers' logs read at once for postStart markers (a pool
    /// of its own: preStop follows never delay them).
    #[arg(long, env = "LCO_POSTSTART_LOG_STREAMS", default_value_t = LogStreams::DEFAULT.post_start.total())]
    pub poststart_log_streams: usize,
    /// Of those, the most one namespace holds. At least 1, at most
    /// --poststart-log-streams.
    #[arg(long, env = "LCO_POSTSTART_LOG_STREAMS_PER_NAMESPACE", default_value_t = LogStreams::DEFAULT.post_start.per_namespace())]
    pub poststart_log_streams_per_namespace: usize,
    #[command(flatten)]
    pub webhook: WebhookArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The admission webhook (README: Hooks from the first pod).
#[derive(clap::Args, Debug, Clone)]
pub struct WebhookArgs {
    /// Serve the mutating admission webhook (HTTPS, `POST /mutate`) on this
    /// address. Unset: no webhook; the background path does everything.
    #[arg(long, env = "LCO_WEBHOOK_ADDR")]
    pub webhook_addr: Option<SocketAddr>,
    /// The Service in front of the webhook: its serving certificate is for
    /// SERVICE.NAMESPACE.svc (the namespace: --operator-namespace).
    #[arg(
        long,
        env = "LCO_WEBHOOK_SERVICE",
        default_value = "lifecycle-operator-webhook"
    )]
    pub webhook_service: String,
    /// Extra IP addresses for the serving certificate (out of cluster: the
    /// webhook configuration points at https://127.0.0.1:PORT/mutate).
    #[arg(long, env = "LCO_WEBHOOK_IP", value_delimiter = ',')]
    pub webhook_ip: Vec<IpAddr>,
    /// The Secret holding the webhook's CA and serving certificate, which
    /// the operator creates and rotates.
    #[arg(
        long,
        env = "LCO_WEBHOOK_SECRET",
        default_value = "lifecycle-operator-webhook-tls"
    )]
    pub webhook_secret: String,
    /// The MutatingWebhookConfiguration whose caBundle the operator keeps current.
    #[arg(
        long,
        env = "LCO_WEBHOOK_CONFIGURATION",
        default_value = "lifecycle-operator"
    )]
    pub webhook_configuration: String,
    /// Read tls.crt and tls.key from this directory (cert-manager's
    /// Secret, mounted) instead of managing certificates.
    #[arg(long, env = "LCO_WEBHOOK_CERT_DIR")]
    pub webhook_cert_dir: Option<PathBuf>,
}

impl WebhookArgs {
    pub fn settings(&self) -> Settings {
        Settings {
            addr: self.webhook_addr,
            service: self.webhook_service.clone(),
            ips: self.webhook_ip.clone(),
            secret: self.webhook_secret.clone(),
            configuration: self.webhook_configuration.clone(),
            cert_dir: self.webhook_cert_dir.clone(),
        }
    }
}

impl Args {
    /// The log stream pools the flags ask for; a share of 0, or above its
    /// pool, is refused (never clamped), naming the flags.
    pub fn log_streams(&self) -> anyhow::Result<LogStreams> {
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
pub enum Command {
    /// Delete every LifecyclePolicy and wait until the running operator has
    /// handed their hooks back (the chart runs this before uninstalling).
    ReleaseAll {
        /// Give up, and fail, after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout_seconds: u64,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Args {
    /// The flags; a bad one ends the process with clap's message and exit
    /// code 2, the log stream pools included.
    pub fn parse_checked() -> (Args, LogStreams) {
        let args = Args::parse();
        let streams = args.log_streams().unwrap_or_else(|e| {
            Args::command()
                .error(clap::error::ErrorKind::ValueValidation, e)
                .exit()
        });
        (args, streams)
    }

    /// Logs as the flags say; RUST_LOG overrides the filter.
    pub fn init_logging(&self) {
        let filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&self.log));
        match self.log_format {
            LogFormat::Text => fmt().with_env_filter(filter).init(),
            LogFormat::Json => fmt().json().with_env_filter(filter).init(),
        }
    }

    /// This replica's identity: the flag, else host name and pid.
    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        })
    }
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
