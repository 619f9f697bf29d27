//! The commands, wired: read (`fetch`), build the view (pure), print it.
//! Exit codes: 0, 1 on an error, and for `diff` kubectl's: 1 when
//! something would change, 2 on an error.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use kube::core::Selector;
use serde_json::Value;

use crate::api::cluster::ClusterLifecyclePolicy;
use crate::api::types::{LifecyclePolicy, WorkloadKind};
use crate::apply::ledger::read_ledgers;
use crate::apply::workload::WorkloadKey;
use crate::plugin::cli::{Cli, Command, Output, parse_workload};
use crate::plugin::diff::{self, Live};
use crate::plugin::dryrun::World;
use crate::plugin::fetch::{Cluster, Log, POD_TAIL, STATUS_TAIL};
use crate::plugin::style::Style;
use crate::plugin::{explain, pod, render, status};
use crate::verify::index::workload_of;
use k8s_openapi::api::core::v1::Namespace;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completion { shell } = cli.command {
        let mut cmd = Cli::command();
        clap_complete::generate(shell, &mut cmd, "kubectl-lifecycle", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let error_code = if matches!(cli.command, Command::Diff { .. }) {
        2
    } else {
        1
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(error_code);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(error_code)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let c = Cluster::connect(&cli.global).await?;
    let style = Style::for_stdout();
    let operator_ns = cli.global.operator_namespace.clone();
    let (out, code) = match cli.command {
        Command::Status {
            policy,
            cluster,
            output,
        } => {
            let view = status::build(&status_snapshot(&c, &policy, cluster).await?);
            (
                render::output(&view, output, &style, render::status::text)?,
                0,
            )
        }
        Command::Pod {
            pod,
            output,
            follow,
            timeout,
        } => {
            let follow = follow.then(|| std::time::Duration::from_secs(timeout));
            let report = pod_report(&c, &pod, follow).await?;
            (
                render::output(&report, output, &style, render::pod::text)?,
                0,
            )
        }
        Command::Explain { workload, output } => {
            let report = explain_report(&c, &workload, &operator_ns).await?;
            (
                render::output(&report, output, &style, render::explain::text)?,
                0,
            )
        }
        Command::Diff { file } => {
            let text = read_file(&file)?;
            let report = diff_report(&c, &text, &operator_ns).await?;
            let code = report.exit_code();
            (
                render::output(&report, Output::Text, &style, render::diff::text)?,
                code,
            )
        }
        Command::Completion { .. } => unreachable!("handled before connecting"),
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(code)
}

fn read_file(path: &std::path::Path) -> anyhow::Result<String> {
    const MAX: u64 = 1 << 20;
    let mut s = String::new();
    let r: Box<dyn std::io::Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
        )
    };
    r.take(MAX + 1).read_to_string(&mut s)?;
    anyhow::ensure!(
        s.len() as u64 <= MAX,
        "{} is over 1 MiB: not a policy",
        path.display()
    );
    Ok(s)
}

/// A workload's label selector, as a list call takes it.
fn selector_of(object: &Value) -> Option<Selector> {
    let ls: LabelSelector =
        serde_json::from_value(object.pointer("/spec/selector")?.clone()).ok()?;
    Selector::try_from(ls).ok()
}

async fn status_snapshot(
    c: &Cluster,
    name: &str,
    cluster: bool,
) -> anyhow::Result<status::Snapshot> {
    let (policy, kind) = if cluster {
        (
            c.cluster_policy(name).await?.view(),
            "ClusterLifecyclePolicy",
        )
    } else {
        (c.policy(name).await?, "LifecyclePolicy")
    };
    let owner = policy.id().owner();
    let home = policy.metadata.namespace.clone().unwrap_or_default();
    let mut pods = Vec::new();
    let mut slots = BTreeMap::new();
    let mut ledgers = BTreeMap::new();
    let mut logs = BTreeMap::new();
    let listed = policy.status.iter().flat_map(|s| s.workloads.iter());
    for w in listed {
        let ns = w.namespace.clone().unwrap_or_else(|| home.clone());
        let Ok(object) = c.workload(&ns, w.kind, &w.name).await else {
            continue; // gone since the status was written: it shows no slots
        };
        let key = WorkloadKey {
            namespace: w.namespace.clone(),
            kind: w.kind,
            name: w.name.clone(),
        };
        let annotations = annotations(&object);
        let all = read_ledgers(annotations.as_ref());
        let held = all
            .get(&owner)
            .map(|l| l.owned.keys().map(ToString::to_string).collect())
            .unwrap_or_default();
        slots.insert(key.to_string(), held);
        ledgers.insert(key.to_string(), all);
        if let Some(sel) = selector_of(&object) {
            let mut own = c.pods(&ns, &sel.to_string()).await?;
            own.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            // Logs are read only for the pods the view shows.
            for p in own.iter().take(status::MAX_PODS) {
                for container in hooked(p.spec.as_ref().unwrap_or(&Default::default())) {
                    let log = c.log(p, &container.name, false, STATUS_TAIL).await;
                    logs.insert(
                        (
                            p.metadata.name.clone().unwrap_or_default(),
                            container.name.clone(),
                        ),
                        log,
                    );
                }
            }
            pods.extend(own);
        }
    }
    Ok(status::Snapshot {
        policy,
        kind: kind.into(),
        pods,
        slots,
        ledgers,
        logs,
        now: Timestamp::now(),
    })
}

/// The containers (init ones too) that have hooks.
fn hooked(
    spec: &k8s_openapi::api::core::v1::PodSpec,
) -> impl Iterator<Item = &k8s_openapi::api::core::v1::Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .filter(|c| c.lifecycle.is_some())
}

fn annotations(object: &Value) -> Option<BTreeMap<String, String>> {
    serde_json::from_value(object.pointer("/metadata/annotations")?.clone()).ok()
}

async fn pod_report(
    c: &Cluster,
    name: &str,
    follow: Option<std::time::Duration>,
) -> anyhow::Result<pod::PodReport> {
    let mut pod = c.pod(name).await?;
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| c.namespace.clone());
    let workload = workload_of(&pod);
    let mut notes = Vec::new();
    let mut ledgers = BTreeMap::new();
    if let Some((kind, wname)) = workload.as_deref().and_then(|w| w.split_once('/')) {
        let kind = WorkloadKind::ALL.into_iter().find(|k| k.as_str() == kind);
        if let Some(kind) = kind {
            match c.workload(&ns, kind, wname).await {
                Ok(object) => ledgers = read_ledgers(annotations(&object).as_ref()),
                Err(e) => notes.push(format!("the workload's ledgers were not read: {e}")),
            }
        }
    }
    let mut logs = BTreeMap::new();
    let spec = pod.spec.clone().unwrap_or_default();
    let statuses = pod
        .status
        .as_ref()
        .map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
                .cloned()
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if let Some(wait) = follow {
        let deadline = tokio::time::Instant::now() + wait;
        let reads = hooked(&spec).map(|container| {
            let pod = &pod;
            async move {
                (
                    (container.name.clone(), false),
                    c.follow_markers(pod, &container.name, deadline).await,
                )
            }
        });
        logs.extend(futures::future::join_all(reads).await);
        match c.pod(name).await {
            Ok(p) => pod = p,
            Err(_) => notes.push("the pod is gone: its state is as last seen, its hooks as its logs showed while it stopped".into()),
        }
    }
    for container in hooked(&spec) {
        let restarted = statuses.iter().any(|s| {
            s.name == container.name
                && (s.restart_count > 0
                    || s.last_state
                        .as_ref()
                        .is_some_and(|l| l.terminated.is_some()))
        });
        for previous in [false, true] {
            if (previous && !restarted) || logs.contains_key(&(container.name.clone(), previous)) {
                continue;
            }
            let log = c.log(&pod, &container.name, previous, POD_TAIL).await;
            logs.insert((container.name.clone(), previous), log);
        }
    }
    let events = match c.pod_events(&pod).await {
        Ok(e) => e,
        Err(e) => {
            notes.push(format!("no kubelet events: {e}"));
            Vec::new()
        }
    };
    let inputs = pod::PodInputs {
        pod,
        workload,
        ledgers,
        logs,
        events,
        now: Timestamp::now(),
    };
    let mut report = pod::build(&inputs);
    if inputs.logs.values().any(|l| matches!(l, Log::Read(_))) {
        report.notes.push(format!(
            "markers read from the last {} lines of each log",
            POD_TAIL.lines
        ));
    }
    report.notes.extend(notes);
    Ok(report)
}

/// The cluster policies and namespaces, as far as the user may list them:
/// what may not be read is said in the notes.
async fn cluster_side(
    c: &Cluster,
    notes: &mut Vec<String>,
) -> (Vec<ClusterLifecyclePolicy>, Vec<Namespace>) {
    let cluster = c.cluster_policies().await.unwrap_or_else(|e| {
        notes.push(format!("ClusterLifecyclePolicies not considered: {e}"));
        Vec::new()
    });
    if cluster.is_empty() {
        return (cluster, Vec::new());
    }
    match c.namespaces().await {
        Ok(n) => (cluster, n),
        Err(e) => {
            notes.push(format!("ClusterLifecyclePolicies not considered: {e}"));
            (Vec::new(), Vec::new())
        }
    }
}

/// Takes the policy named `name` out of `list`.
fn take<K: kube::Resource>(list: &mut Vec<K>, name: &Option<String>) -> Option<K> {
    let i = list.iter().position(|l| l.meta().name == *name)?;
    Some(list.remove(i))
}

async fn explain_report(
    c: &Cluster,
    arg: &str,
    operator_ns: &str,
) -> anyhow::Result<explain::ExplainReport> {
    let (kind, name) = parse_workload(arg)?;
    let object = c.workload(&c.namespace, kind, &name).await?;
    let mut notes = Vec::new();
    let (cluster, namespaces) = cluster_side(c, &mut notes).await;
    let world = World::new(
        c.policies(&c.namespace).await?,
        cluster,
        namespaces,
        operator_ns,
    );
    let acting = world.acting(&c.namespace);
    let nb = world.neighbourhood(&c.namespace);
    let mut report = explain::build(&object, kind, &c.namespace, &acting, &nb, Timestamp::now());
    report.notes.extend(notes);
    Ok(report)
}

/// The file's one policy, as it would be once applied.
enum Parsed {
    Namespaced(LifecyclePolicy),
    Cluster(ClusterLifecyclePolicy),
}

/// The file's one policy; other objects in it (the workloads it comes
/// with, say) are left out, and said so.
fn parse_policy(text: &str, notes: &mut Vec<String>) -> anyhow::Result<Parsed> {
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(text)
        .map(serde::Deserialize::deserialize)
        .filter(|d: &Result<Value, _>| !matches!(d, Ok(Value::Null)))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("not YAML: {e}"))?;
    let kind = |d: &Value| {
        d.get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (policies, others): (Vec<&Value>, Vec<&Value>) = docs.iter().partition(|d| {
        matches!(
            kind(d).as_str(),
            "LifecyclePolicy" | "ClusterLifecyclePolicy"
        )
    });
    let [doc] = policies.as_slice() else {
        anyhow::bail!(
            "the file holds {} LifecyclePolicies or ClusterLifecyclePolicies: give exactly one",
            policies.len()
        );
    };
    if !others.is_empty() {
        let names: Vec<String> = others.iter().map(|d| kind(d)).collect();
        notes.push(crate::text::bounded(
            &format!(
                "only the policy is compared; the file's other objects are left out: {}",
                names.join(", ")
            ),
            500,
        ));
    }
    let kind = kind(doc);
    let bad = |e: serde_json::Error| anyhow::anyhow!("not a valid {kind}: {e}");
    Ok(if kind == "LifecyclePolicy" {
        Parsed::Namespaced(serde_json::from_value((*doc).clone()).map_err(bad)?)
    } else {
        Parsed::Cluster(serde_json::from_value((*doc).clone()).map_err(bad)?)
    })
}

/// Takes the live copy's identity (uid: the markers' token; creation: precedence).
fn as_applied(meta: &mut kube::core::ObjectMeta, live: Option<&kube::core::ObjectMeta>) {
    match live {
        Some(l) => {
            meta.uid = l.uid.clone();
            meta.creation_timestamp = l.creation_timestamp.clone();
            meta.generation = l.generation;
        }
        None => {
            meta.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::now(),
            ));
            meta.generation = Some(1);
        }
    }
}

async fn diff_report(
    c: &Cluster,
    text: &str,
    operator_ns: &str,
) -> anyhow::Result<diff::DiffReport> {
    let mut notes = Vec::new();
    let (policy, exists, world, namespaces) = match parse_policy(text, &mut notes)? {
        Parsed::Namespaced(mut p) => {
            let ns = p
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| c.namespace.clone());
            p.metadata.namespace = Some(ns.clone());
            let mut own = c.policies(&ns).await?;
            let (cluster, all_ns) = cluster_side(c, &mut notes).await;
            let live = take(&mut own, &p.metadata.name);
            as_applied(&mut p.metadata, live.as_ref().map(|l| &l.metadata));
            own.push(p.clone());
            let world = World::new(own, cluster, all_ns, operator_ns);
            (p, live.is_some(), world, vec![ns])
        }
        Parsed::Cluster(mut cp) => {
            let mut others = c.cluster_policies().await?;
            let live = take(&mut others, &cp.metadata.name);
            as_applied(&mut cp.metadata, live.as_ref().map(|l| &l.metadata));
            others.push(cp.clone());
            let all_ns = c.namespaces().await?;
            let selected: Vec<String> =
                World::new(Vec::new(), others.clone(), all_ns.clone(), operator_ns)
                    .policies
                    .cluster
                    .as_ref()
                    .map(|side| side.namespaces_of(&cp).selected.into_iter().collect())
                    .unwrap_or_default();
            let mut namespaced = Vec::new();
            for ns in &selected {
                namespaced.extend(c.policies(ns).await?);
            }
            let world = World::new(namespaced, others, all_ns, operator_ns);
            (cp.view(), live.is_some(), world, selected)
        }
    };
    let mut live = Vec::new();
    for ns in &namespaces {
        let nb = world.neighbourhood(ns);
        for kind in &policy.spec.kinds {
            for object in c.workloads(ns, *kind).await? {
                live.push(Live {
                    namespace: ns.clone(),
                    kind: *kind,
                    object,
                    neighbourhood: nb.clone(),
                });
            }
        }
    }
    let mut report = diff::build(&policy, exists, &live, Timestamp::now());
    report.notes.extend(notes);
    Ok(report)
}
