//! The command line of `kubectl lifecycle`: kubectl's own connection flags,
//! one subcommand per question, examples in `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::api::types::WorkloadKind;

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-lifecycle",
    bin_name = "kubectl lifecycle",
    version,
    about = "From a LifecyclePolicy down to one pod's hooks: what ran, what failed, who put it there",
    after_help = "Examples:
  kubectl lifecycle status nginx-graceful           # a policy, its workloads, pods and hooks
  kubectl lifecycle status platform-drain --cluster # a ClusterLifecyclePolicy
  kubectl lifecycle pod frontend-6d4b9c-x2x9z       # one pod: who owns each hook, the evidence
  kubectl lifecycle explain deployment/frontend     # slots, ledger originals, what a release restores
  kubectl lifecycle diff -f policy.yaml             # what applying it would change (exit 1 if anything)"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// The connection flags kubectl plugins take (kubectl passes none on).
#[derive(Args, Debug, Clone, Default)]
pub struct Global {
    /// The namespace; default: the kubeconfig context's, else `default`.
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Act as this user (impersonation, as kubectl's --as).
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,
    /// The kubeconfig file; default: $KUBECONFIG, else ~/.kube/config.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Where the operator runs (no policy acts there): what `diff` and
    /// `explain` leave out, as the operator does.
    #[arg(
        long,
        global = true,
        env = "LIFECYCLE_OPERATOR_NAMESPACE",
        default_value = "lifecycle-operator-system"
    )]
    pub operator_namespace: String,
}

/// `KIND/NAME` as kubectl takes it: deployment, deploy, deployments,
/// deployment.apps, Deployment (and the same for statefulset/sts and
/// daemonset/ds).
pub fn parse_workload(s: &str) -> anyhow::Result<(WorkloadKind, String)> {
    let (kind, name) = s
        .split_once('/')
        .filter(|(k, n)| !k.is_empty() && !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| {
            anyhow::anyhow!("give the workload as KIND/NAME, e.g. deployment/frontend (got {s:?})")
        })?;
    let k = kind.to_ascii_lowercase();
    let k = k.strip_suffix(".apps").unwrap_or(&k);
    let kind = match k {
        "deployment" | "deployments" | "deploy" => WorkloadKind::Deployment,
        "statefulset" | "statefulsets" | "sts" => WorkloadKind::StatefulSet,
        "daemonset" | "daemonsets" | "ds" => WorkloadKind::DaemonSet,
        _ => anyhow::bail!("{kind:?} is not a Deployment, StatefulSet or DaemonSet"),
    };
    Ok((kind, name.to_string()))
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// A policy: conditions, rollout, hook totals, each workload's slots,
    /// its current pods and their containers' hooks.
    #[command(after_help = "Examples:
  kubectl lifecycle status nginx-graceful -n shop
  kubectl lifecycle status platform-drain --cluster -o yaml")]
    Status {
        /// The LifecyclePolicy (or, with --cluster, ClusterLifecyclePolicy).
        policy: String,
        /// POLICY is a ClusterLifecyclePolicy.
        #[arg(long)]
        cluster: bool,
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// One pod: which policy owns each hook of each container, and the live
    /// evidence (marker lines in the current and previous logs, kubelet hook
    /// events, exit codes, preStop against the grace period).
    #[command(after_help = "Examples:
  kubectl lifecycle pod frontend-6d4b9c-x2x9z
  kubectl lifecycle pod web-0 -n shop -o json
  kubectl lifecycle pod web-0 --follow &  kubectl delete pod web-0   # its preStop, start to end")]
    Pod {
        pod: String,
        /// Follow the hooked containers' logs until they stop (delete the
        /// pod meanwhile), then report: a preStop's end is read even though
        /// the kubelet removes the container right after.
        #[arg(short = 'f', long)]
        follow: bool,
        /// How long --follow waits at most, in seconds.
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout: u64,
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// One workload: which policy holds which slot, the ledger's recorded
    /// originals, the managedFields owners of the hooks, and the template
    /// diff a release would make.
    #[command(after_help = "Examples:
  kubectl lifecycle explain deployment/frontend
  kubectl lifecycle explain sts/db -n shop -o yaml")]
    Explain {
        /// KIND/NAME: deployment, statefulset or daemonset (deploy, sts, ds).
        workload: String,
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// What applying a policy would change on the live cluster, creating
    /// nothing: a unified diff per matched workload, the rollout order,
    /// conflicts with existing policies. Exit 0: no change, 1: changes,
    /// 2 or more: an error (as `kubectl diff`).
    #[command(after_help = "Examples:
  kubectl lifecycle diff -f policy.yaml
  kubectl lifecycle diff -f policy.yaml -n shop")]
    Diff {
        /// A file with one LifecyclePolicy or ClusterLifecyclePolicy; `-` reads stdin.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Prints a shell completion script (bash, zsh, fish, powershell, elvish).
    #[command(after_help = "Example:
  source <(kubectl-lifecycle completion bash)")]
    Completion { shell: clap_complete::Shell },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
    Yaml,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_go_before_or_after_the_subcommand() {
        let c = Cli::try_parse_from(["k", "-n", "shop", "status", "p", "-o", "json"]).unwrap();
        assert_eq!(c.global.namespace.as_deref(), Some("shop"));
        let c = Cli::try_parse_from(["k", "pod", "x", "--namespace", "a"]).unwrap();
        assert_eq!(c.global.namespace.as_deref(), Some("a"));
        assert!(matches!(c.command, Command::Pod { .. }));
        assert!(Cli::try_parse_from(["k", "diff"]).is_err());
        assert!(Cli::try_parse_from(["k", "status", "p", "-o", "wide"]).is_err());
    }

    #[test]
    fn workloads_are_named_as_kubectl_names_them() {
        for (arg, kind) in [
            ("deployment/web", WorkloadKind::Deployment),
            ("deploy/web", WorkloadKind::Deployment),
            ("Deployment.apps/web", WorkloadKind::Deployment),
            ("sts/web", WorkloadKind::StatefulSet),
            ("daemonsets/web", WorkloadKind::DaemonSet),
        ] {
            assert_eq!(
                parse_workload(arg).unwrap(),
                (kind, "web".to_string()),
                "{arg}"
            );
        }
        for bad in ["web", "pod/web", "deploy/", "/web", "deploy/a/b"] {
            assert!(parse_workload(bad).is_err(), "{bad}");
        }
    }
}
