//! The driver of `make bench` (tests/bench.sh builds it with `cargo build
//! --release --example bench-driver`, Cargo.toml says why an example, and
//! runs it; the README's Performance section says what each figure means).
//! Every subcommand is one step against the cluster of KUBECONFIG;
//! measurements go to stdout as `key value` lines, progress to stderr.
//! `table` renders the collected lines as one Markdown table.
//!
//! The raw baseline is written with the operator's own client library
//! (kube-rs, no client-side rate limit): server-side apply, 16 requests in
//! flight, against the same API server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::{Parser, Subcommand};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams,
    PostParams,
};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod admission;
mod drain;

/// Field manager of the raw loop.
const RAW_MANAGER: &str = "bench-raw";
/// The image of every Deployment and kwok pod (never pulled: replicas 0, or kwok).
const PAUSE: &str = "registry.k8s.io/pause:3.10";
/// Label of the Deployments the speed runs' policy selects.
const SPEED_LABEL: (&str, &str) = ("app", "bench");

#[derive(Parser)]
#[command(about = "make bench's driver: one measurement step per subcommand")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create COUNT replicas-0 Deployments (label app=bench) in NS, concurrently.
    Deployments {
        #[arg(long)]
        ns: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Create COUNT namespaces PREFIX-NNN, labelled for the bench and for
    /// the cluster run's namespaceSelector, each with PER Deployments as
    /// `deployments` makes them.
    Namespaces {
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        per: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Apply and release at one size: the raw SSA loop, then the operator
    /// (policy created, Deployments watched), with its writes, CPU and an
    /// optional quiet window. Over the Deployments of NS with a
    /// LifecyclePolicy, or (--cluster) over those of every namespace that
    /// `namespaces` made, with one ClusterLifecyclePolicy.
    Speed {
        #[arg(long, required_unless_present = "cluster")]
        ns: Option<String>,
        #[arg(long, conflicts_with = "ns")]
        cluster: bool,
        /// The operator's /metrics address (host:port).
        #[arg(long)]
        metrics: String,
        /// The operator's pid, for its CPU time.
        #[arg(long)]
        pid: u32,
        /// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`).
        #[arg(long, default_value_t = 100)]
        clk_tck: u64,
        /// Seconds of quiet to count writes in, with the policy applied (0: none).
        #[arg(long, default_value_t = 0)]
        idle_seconds: u64,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Create the cluster run's ClusterLifecyclePolicy and wait until every
    /// Deployment it selects carries its hook (left applied).
    ClusterPolicy {
        #[arg(long, default_value_t = 600)]
        timeout_seconds: u64,
    },
    /// Create COUNT bare pods on the kwok nodes and wait until kwok runs them all.
    Pods {
        #[arg(long)]
        ns: String,
        #[arg(long)]
        count: usize,
        /// Fake nodes, comma-separated; pods are spread over them.
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
        /// Take the pod spec from this Deployment's template (its hooks included).
        #[arg(long)]
        template_from: Option<String>,
        /// Value of the pods' `bench-pod` label and prefix of their names.
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Delete every pod of NS at once (grace period 0) and wait until none is left.
    DeletePods {
        #[arg(long)]
        ns: String,
    },
    /// Hook-to-status latency: follow every pod's log for the preStop end
    /// markers, scale the Deployment to 0, poll the policy status every 50 ms.
    Latency {
        #[arg(long)]
        ns: String,
        #[arg(long)]
        deployment: String,
        #[arg(long)]
        policy: String,
        /// Label selector of the Deployment's pods.
        #[arg(long)]
        selector: String,
        #[arg(long, default_value_t = 180)]
        timeout_seconds: u64,
    },
    /// Contention, in-process (no cluster): every one of P policies of one
    /// namespace decided once over W Deployments (what a spec change of one
    /// of them triggers), with the namespace's index reused, and rebuilt for
    /// every reconcile as the operator did before the index.
    Contention {
        /// Policy counts, comma-separated.
        #[arg(long, value_delimiter = ',')]
        policies: Vec<usize>,
        #[arg(long)]
        workloads: usize,
    },
    /// Admission: COUNT Deployment creates, C at once, into NS, whose
    /// policy `bench` is in place (tests/bench.sh: once in a namespace the
    /// webhook leaves out, RUN=off, once in one it serves, RUN=on).
    Admission {
        #[arg(long)]
        run: String,
        #[arg(long)]
        ns: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Drain (tests/bench/drain.rs): create each case's nginx Deployment,
    /// Service and policy in bench-drain-CASE (which exists), and wait
    /// until its pods are ready (and hooked, and the policy Ready).
    DrainSetup {
        /// Cases, comma-separated: none, docs, sleep.
        #[arg(long, value_delimiter = ',')]
        cases: Vec<String>,
        /// The node the pods run on (the real one).
        #[arg(long)]
        node: String,
        #[arg(long, default_value_t = 240)]
        timeout_seconds: u64,
    },
    /// Drain: HTTP load on IP:PORT, CLIENTS at once, a new connection per
    /// request, until STOP_FILE exists or SECONDS have passed; prints
    /// `drain.CASE.*` lines (requests, failed by kind).
    DrainLoad {
        #[arg(long)]
        case: String,
        #[arg(long)]
        ip: std::net::IpAddr,
        #[arg(long, default_value_t = 80)]
        port: u16,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// The longest the load runs, stop file or not.
        #[arg(long)]
        seconds: u64,
        #[arg(long)]
        stop_file: Option<std::path::PathBuf>,
    },
    /// Drain: wait (at most TIMEOUT_SECONDS) until the case's policy has
    /// observed EXPECT drains, print its status.drain and DrainSafe, and
    /// whether the verdict agrees with the FAILED requests of its load.
    DrainStatus {
        #[arg(long)]
        case: String,
        #[arg(long)]
        expect: i64,
        #[arg(long)]
        failed: u64,
        #[arg(long, default_value_t = 60)]
        timeout_seconds: u64,
    },
    /// Render the `key value` lines of FILE as the Markdown table.
    Table { file: String },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Table { file } = &cli.command {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        print!("{}", table(&parse_results(&text))?);
        return Ok(());
    }
    if let Command::Contention {
        policies,
        workloads,
    } = &cli.command
    {
        for &p in policies {
            contention(p, *workloads);
        }
        return Ok(());
    }
    if let Command::DrainLoad {
        case,
        ip,
        port,
        clients,
        seconds,
        stop_file,
    } = &cli.command
    {
        let addr = std::net::SocketAddr::new(*ip, *port);
        let max = Duration::from_secs(*seconds);
        return drain::load(case, addr, *clients, max, stop_file.clone()).await;
    }
    let client = Client::try_default()
        .await
        .context("a client from KUBECONFIG")?;
    match cli.command {
        Command::Deployments {
            ns,
            count,
            concurrency,
        } => {
            let keys = (0..count).map(|i| (ns.clone(), name_of(i))).collect();
            create_deployments(&client, keys, concurrency).await
        }
        Command::Namespaces {
            prefix,
            count,
            per,
            concurrency,
        } => create_namespaces(&client, &prefix, count, per, concurrency).await,
        Command::Speed {
            ns,
            cluster,
            metrics,
            pid,
            clk_tck,
            idle_seconds,
            concurrency,
        } => {
            let probe = Probe {
                metrics,
                pid,
                clk_tck,
            };
            let scope = match ns {
                Some(ns) if !cluster => Scope::Namespace(ns),
                _ => Scope::Cluster,
            };
            speed(&client, &scope, &probe, idle_seconds, concurrency).await
        }
        Command::ClusterPolicy { timeout_seconds } => {
            cluster_policy(&client, Duration::from_secs(timeout_seconds)).await
        }
        Command::Pods {
            ns,
            count,
            nodes,
            template_from,
            name,
            concurrency,
        } => {
            create_pods(
                &client,
                &ns,
                count,
                &nodes,
                template_from.as_deref(),
                &name,
                concurrency,
            )
            .await
        }
        Command::DeletePods { ns } => delete_pods(&client, &ns).await,
        Command::Latency {
            ns,
            deployment,
            policy,
            selector,
            timeout_seconds,
        } => {
            latency(
                &client,
                &ns,
                &deployment,
                &policy,
                &selector,
                Duration::from_secs(timeout_seconds),
            )
            .await
        }
        Command::Admission {
            run,
            ns,
            count,
            concurrency,
        } => admission::run(&client, &run, &ns, count, concurrency).await,
        Command::DrainSetup {
            cases,
            node,
            timeout_seconds,
        } => drain::setup(&client, &cases, &node, Duration::from_secs(timeout_seconds)).await,
        Command::DrainStatus {
            case,
            expect,
            failed,
            timeout_seconds,
        } => {
            drain::status(
                &client,
                &case,
                expect,
                failed,
                Duration::from_secs(timeout_seconds),
            )
            .await
        }
        Command::Table { .. } | Command::Contention { .. } | Command::DrainLoad { .. } => {
            unreachable!()
        }
    }
}

fn name_of(i: usize) -> String {
    format!("d-{i:05}")
}

/// A replicas-0 Deployment the speed runs' policy selects.
fn replicas0(name: &str) -> anyhow::Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {SPEED_LABEL.0: SPEED_LABEL.1}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"bench-deployment": name}},
            "template": {"metadata": {"labels": {"bench-deployment": name}},
                "spec": {"containers": [{"name": "c", "image": PAUSE}]}}}
    }))?)
}

async fn create_deployments(
    client: &Client,
    keys: Vec<Key>,
    concurrency: usize,
) -> anyhow::Result<()> {
    let count = keys.len();
    let started = Instant::now();
    stream::iter(keys)
        .map(|(ns, name)| {
            let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
            async move {
                let d = replicas0(&name)?;
                api.create(&PostParams::default(), &d)
                    .await
                    .with_context(|| format!("creating Deployment {ns}/{name}"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await?;
    eprintln!(
        "created {count} Deployments in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn create_namespaces(
    client: &Client,
    prefix: &str,
    count: usize,
    per: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i:03}")).collect();
    stream::iter(names.clone())
        .map(|name| {
            let api = api.clone();
            async move {
                let ns: Namespace = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": name, "labels": {
                        "lifecycle-operator.io/bench": "true",
                        CLUSTER_NS_LABEL.0: CLUSTER_NS_LABEL.1}}
                }))?;
                api.create(&PostParams::default(), &ns)
                    .await
                    .with_context(|| format!("creating namespace {name}"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await?;
    eprintln!("created {count} namespaces {prefix}-*");
    let keys = names
        .iter()
        .flat_map(|ns| (0..per).map(|i| (ns.clone(), name_of(i))))
        .collect();
    create_deployments(client, keys, concurrency).await
}

/// Where the operator's figures come from: its /metrics and /proc.
struct Probe {
    metrics: String,
    pid: u32,
    clk_tck: u64,
}

impl Probe {
    /// `lifecycle_operator_api_write_requests_total`, summed over methods:
    /// every request the operator sent that is not a GET (LIST and WATCH
    /// are GETs too).
    async fn writes(&self) -> anyhow::Result<f64> {
        let mut conn = tokio::net::TcpStream::connect(&self.metrics)
            .await
            .with_context(|| format!("connecting to {}", self.metrics))?;
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
            .await?;
        let mut body = String::new();
        tokio::time::timeout(Duration::from_secs(10), conn.read_to_string(&mut body))
            .await
            .context("reading /metrics")??;
        ensure!(
            body.starts_with("HTTP/1.") && body.contains(" 200 "),
            "/metrics answered: {}",
            body.lines().next().unwrap_or_default()
        );
        Ok(body
            .lines()
            .filter(|l| l.starts_with("lifecycle_operator_api_write_requests_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// User plus system CPU seconds of the operator so far.
    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .with_context(|| format!("the operator (pid {}) is gone", self.pid))?;
        // Fields after the command name (which may hold spaces): state is
        // field 3, utime 14 and stime 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<&str> = rest.split_whitespace().collect();
        ensure!(f.len() > 13, "unexpected /proc/{}/stat", self.pid);
        let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
        Ok(ticks as f64 / self.clk_tck as f64)
    }

    /// Waits until the write counter has not moved for `quiet` (at most
    /// `limit`); returns it. Events and status writes trail the patches.
    async fn settled_writes(&self, quiet: Duration, limit: Duration) -> anyhow::Result<f64> {
        let end = Instant::now() + limit;
        let mut last = self.writes().await?;
        let mut since = Instant::now();
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.writes().await?;
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                break;
            }
        }
        Ok(last)
    }
}

fn policy_resource() -> ApiResource {
    resource("LifecyclePolicy", "lifecyclepolicies")
}

fn cluster_policy_resource() -> ApiResource {
    resource("ClusterLifecyclePolicy", "clusterlifecyclepolicies")
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "lifecycle-operator.io".into(),
        version: "v1alpha1".into(),
        api_version: "lifecycle-operator.io/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// A Deployment by namespace and name.
type Key = (String, String);

fn key_of(d: &Deployment) -> Key {
    (d.namespace().unwrap_or_default(), d.name_any())
}

fn template(d: &Deployment) -> Value {
    serde_json::to_value(&d.spec.template).unwrap_or_default()
}

/// Every container of the template carries the bench's preStop `sleep 1`.
fn hooked(d: &Deployment) -> bool {
    let containers = d
        .spec
        .template
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    !containers.is_empty()
        && containers.iter().all(|c| {
            c.lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.as_ref())
                .and_then(|h| h.sleep.as_ref())
                .is_some_and(|s| s.seconds == 1)
        })
}

/// Every Deployment `api` lists that `keep` takes.
async fn list_deployments(
    api: &Api<Deployment>,
    keep: impl Fn(&Deployment) -> bool,
) -> anyhow::Result<Vec<Deployment>> {
    let mut out = Vec::new();
    let mut lp = ListParams::default()
        .labels(&format!("{}={}", SPEED_LABEL.0, SPEED_LABEL.1))
        .limit(500);
    loop {
        let page = api.list(&lp).await?;
        out.extend(page.items.into_iter().filter(|d| keep(d)));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => return Ok(out),
        }
    }
}

/// Runs `op` on every key, `concurrency` at once; returns the wall time.
async fn raw_loop<F, Fut>(keys: &[Key], concurrency: usize, op: F) -> anyhow::Result<f64>
where
    F: Fn(Key) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    stream::iter(keys.iter().cloned())
        .map(op)
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await?;
    Ok(started.elapsed().as_secs_f64())
}

enum Seen {
    Deployment(Box<watcher::Event<Deployment>>),
    Policy(Box<watcher::Event<DynamicObject>>),
}

/// Tracks, from the watches, which of the measured Deployments (the keys of
/// `originals`) carry the hook, which are back to their original template,
/// and whether the policy exists.
struct Tracker {
    originals: HashMap<Key, Value>,
    hooked: HashSet<Key>,
    restored: HashSet<Key>,
    policy_listed: bool,
    policy_exists: bool,
    policy_synced: bool,
    deployments_synced: bool,
}

impl Tracker {
    fn deployment(&mut self, d: &Deployment) {
        let key = key_of(d);
        let Some(original) = self.originals.get(&key) else {
            return;
        };
        if *original == template(d) {
            self.restored.insert(key.clone());
        } else {
            self.restored.remove(&key);
        }
        if hooked(d) {
            self.hooked.insert(key);
        } else {
            self.hooked.remove(&key);
        }
    }

    fn see(&mut self, seen: Seen) {
        match seen {
            Seen::Deployment(ev) => match *ev {
                watcher::Event::Apply(d) | watcher::Event::InitApply(d) => self.deployment(&d),
                watcher::Event::Delete(d) => {
                    self.hooked.remove(&key_of(&d));
                    self.restored.remove(&key_of(&d));
                }
                watcher::Event::Init => {}
                watcher::Event::InitDone => self.deployments_synced = true,
            },
            Seen::Policy(ev) => match *ev {
                watcher::Event::Apply(_) => self.policy_exists = true,
                watcher::Event::InitApply(_) => self.policy_listed = true,
                watcher::Event::Delete(_) => self.policy_exists = false,
                watcher::Event::Init => self.policy_listed = false,
                watcher::Event::InitDone => {
                    self.policy_exists = self.policy_listed;
                    self.policy_synced = true;
                }
            },
        }
    }
}

/// What a speed run covers: the Deployments of one namespace under a
/// LifecyclePolicy, or those of every namespace labelled CLUSTER_NS_LABEL
/// under one ClusterLifecyclePolicy.
enum Scope {
    Namespace(String),
    Cluster,
}

/// The label of the namespaces the cluster run's policy selects.
const CLUSTER_NS_LABEL: (&str, &str) = ("lifecycle-operator.io/bench-cluster", "true");
/// Name of the speed runs' policy (either kind).
const POLICY_NAME: &str = "bench";

impl Scope {
    fn deployments(&self, client: &Client) -> Api<Deployment> {
        match self {
            Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
            Scope::Cluster => Api::all(client.clone()),
        }
    }

    fn policies(&self, client: &Client) -> Api<DynamicObject> {
        match self {
            Scope::Namespace(ns) => Api::namespaced_with(client.clone(), ns, &policy_resource()),
            Scope::Cluster => Api::all_with(client.clone(), &cluster_policy_resource()),
        }
    }

    /// The namespaces measured: the one, or the labelled ones.
    async fn namespaces(&self, client: &Client) -> anyhow::Result<HashSet<String>> {
        match self {
            Scope::Namespace(ns) => Ok(HashSet::from([ns.clone()])),
            Scope::Cluster => {
                let api: Api<Namespace> = Api::all(client.clone());
                let lp = ListParams::default()
                    .labels(&format!("{}={}", CLUSTER_NS_LABEL.0, CLUSTER_NS_LABEL.1));
                Ok(api
                    .list(&lp)
                    .await?
                    .items
                    .iter()
                    .map(|n| n.name_any())
                    .collect())
            }
        }
    }

    /// The policy: the bench's preStop on every `app=bench` Deployment it
    /// reaches, all at once (a canary would add the wait for its rollout,
    /// which the deployment controller paces: this measures the write path).
    fn policy(&self) -> anyhow::Result<DynamicObject> {
        let mut spec = json!({
            "selector": {"matchLabels": {SPEED_LABEL.0: SPEED_LABEL.1}},
            "preStop": {"sleep": {"seconds": 1}}, "maxConcurrentRollouts": 0,
            "rollout": {"strategy": "Immediate"}});
        let metadata = match self {
            Scope::Namespace(ns) => json!({"name": POLICY_NAME, "namespace": ns}),
            Scope::Cluster => {
                spec["namespaceSelector"] =
                    json!({"matchLabels": {CLUSTER_NS_LABEL.0: CLUSTER_NS_LABEL.1}});
                json!({"name": POLICY_NAME, "labels": {"lifecycle-operator.io/bench": "true"}})
            }
        };
        let kind = match self {
            Scope::Namespace(_) => "LifecyclePolicy",
            Scope::Cluster => "ClusterLifecyclePolicy",
        };
        Ok(serde_json::from_value(json!({
            "apiVersion": "lifecycle-operator.io/v1alpha1", "kind": kind,
            "metadata": metadata, "spec": spec
        }))?)
    }

    /// The prefix of the run's result keys (one cluster run, at any size).
    fn key_prefix(&self, n: usize) -> String {
        match self {
            Scope::Namespace(_) => format!("speed.{n}"),
            Scope::Cluster => "cluster".into(),
        }
    }
}

async fn speed(
    client: &Client,
    scope: &Scope,
    probe: &Probe,
    idle_seconds: u64,
    concurrency: usize,
) -> anyhow::Result<()> {
    let api = scope.deployments(client);
    let namespaces = scope.namespaces(client).await?;
    let keep = |d: &Deployment| namespaces.contains(&d.namespace().unwrap_or_default());
    let all = list_deployments(&api, keep).await?;
    let n = all.len();
    ensure!(n > 0, "no Deployments in {namespaces:?}");
    let keys: Vec<Key> = all.iter().map(key_of).collect();
    let originals: HashMap<Key, Value> = all.iter().map(|d| (key_of(d), template(d))).collect();
    let prefix = scope.key_prefix(n);
    let key = |k: &str| format!("{prefix}.{k}");
    let mut out = String::new();
    let _ = writeln!(out, "{} {n}", key("deployments"));
    let _ = writeln!(out, "{} {}", key("namespaces"), namespaces.len());

    // The raw loop: apply the hook, then apply nothing under the same
    // manager, which removes what that manager alone owned.
    let pp = PatchParams::apply(RAW_MANAGER).force();
    let raw = |body: fn(&str) -> Value| {
        let pp = pp.clone();
        move |(ns, name): Key| {
            let (api, pp) = (
                Api::<Deployment>::namespaced(client.clone(), &ns),
                pp.clone(),
            );
            async move {
                api.patch(&name, &pp, &Patch::Apply(body(&name))).await?;
                Ok(())
            }
        }
    };
    let raw_apply = raw_loop(
        &keys,
        concurrency,
        raw(|name| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"template": {"spec": {"containers": [
                {"name": "c", "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}}]}}}})
        }),
    )
    .await?;
    let now = list_deployments(&api, keep).await?;
    ensure!(
        now.iter().all(hooked),
        "the raw apply left Deployments without the hook"
    );
    eprintln!("{prefix}: raw apply {raw_apply:.2} s");
    let raw_release = raw_loop(&keys, concurrency, raw(|name| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}})
    }))
    .await?;
    let now = list_deployments(&api, keep).await?;
    ensure!(
        now.iter()
            .all(|d| originals.get(&key_of(d)) == Some(&template(d))),
        "the raw release did not restore every template"
    );
    eprintln!("{prefix}: raw release {raw_release:.2} s");

    // The operator: watch the Deployments and the policy, create the policy,
    // wait until every Deployment carries the hook.
    let policies = scope.policies(client);
    let deployments = watcher(
        api.clone(),
        watcher::Config::default().labels(&format!("{}={}", SPEED_LABEL.0, SPEED_LABEL.1)),
    )
    .map(|e| e.map(|e| Seen::Deployment(Box::new(e))));
    let policy_watch = watcher(
        policies.clone(),
        watcher::Config::default().fields(&format!("metadata.name={POLICY_NAME}")),
    )
    .map(|e| e.map(|e| Seen::Policy(Box::new(e))));
    let mut events = std::pin::pin!(stream::select(deployments, policy_watch));
    let mut t = Tracker {
        originals,
        hooked: HashSet::new(),
        restored: HashSet::new(),
        policy_listed: false,
        policy_exists: false,
        policy_synced: false,
        deployments_synced: false,
    };
    let mut next = async |t: &mut Tracker| -> anyhow::Result<()> {
        let ev = tokio::time::timeout(Duration::from_secs(600), events.next())
            .await
            .context("no watch event for 10 minutes")?
            .context("watch ended")?
            .context("watch")?;
        t.see(ev);
        Ok(())
    };
    while !(t.deployments_synced && t.policy_synced) {
        next(&mut t).await?;
    }
    ensure!(!t.policy_exists, "policy {POLICY_NAME} exists already");
    let writes0 = probe.writes().await?;
    let cpu0 = probe.cpu_seconds()?;
    let started = Instant::now();
    policies
        .create(&PostParams::default(), &scope.policy()?)
        .await?;
    while t.hooked.len() < n {
        next(&mut t).await?;
    }
    let op_apply = started.elapsed().as_secs_f64();
    let cpu = probe.cpu_seconds()? - cpu0;
    // Its creation seen too, so that its deletion can be.
    while !t.policy_exists {
        next(&mut t).await?;
    }
    eprintln!("{prefix}: operator apply {op_apply:.2} s");
    let writes1 = probe
        .settled_writes(Duration::from_secs(3), Duration::from_secs(120))
        .await?;
    let _ = writeln!(out, "{} {raw_apply:.3}", key("apply_raw_s"));
    let _ = writeln!(out, "{} {op_apply:.3}", key("apply_operator_s"));
    let _ = writeln!(out, "{} {raw_release:.3}", key("release_raw_s"));
    let _ = writeln!(out, "{} {}", key("apply_writes"), writes1 - writes0);
    let _ = writeln!(out, "{} {cpu:.2}", key("apply_cpu_s"));

    if idle_seconds > 0 {
        let w0 = probe.writes().await?;
        eprintln!("{prefix}: counting writes for {idle_seconds} s with the policy applied");
        // Keep the watches drained while waiting.
        let quiet = tokio::time::sleep(Duration::from_secs(idle_seconds));
        tokio::pin!(quiet);
        loop {
            tokio::select! {
                _ = &mut quiet => break,
                r = next(&mut t) => r?,
            }
        }
        let w1 = probe.writes().await?;
        let _ = writeln!(out, "{} {idle_seconds}", key("idle_s"));
        let _ = writeln!(out, "{} {}", key("idle_writes"), w1 - w0);
    }

    // Release: delete the policy, wait until every template is the original
    // again and the policy (its finalizer removed) is gone.
    let writes2 = probe.writes().await?;
    let started = Instant::now();
    policies
        .delete(POLICY_NAME, &DeleteParams::default())
        .await?;
    while t.restored.len() < n || t.policy_exists {
        next(&mut t).await?;
    }
    let op_release = started.elapsed().as_secs_f64();
    eprintln!("{prefix}: operator release {op_release:.2} s");
    let writes3 = probe
        .settled_writes(Duration::from_secs(3), Duration::from_secs(120))
        .await?;
    let _ = writeln!(out, "{} {op_release:.3}", key("release_operator_s"));
    let _ = writeln!(out, "{} {}", key("release_writes"), writes3 - writes2);
    print!("{out}");
    Ok(())
}

async fn cluster_policy(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    let scope = Scope::Cluster;
    let namespaces = scope.namespaces(client).await?;
    let keep = |d: &Deployment| namespaces.contains(&d.namespace().unwrap_or_default());
    let api = scope.deployments(client);
    let started = Instant::now();
    scope
        .policies(client)
        .create(&PostParams::default(), &scope.policy()?)
        .await?;
    loop {
        let all = list_deployments(&api, keep).await?;
        let done = all.iter().filter(|d| hooked(d)).count();
        if !all.is_empty() && done == all.len() {
            eprintln!(
                "the cluster policy hooked {done} Deployments in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        ensure!(
            started.elapsed() < timeout,
            "the cluster policy hooked {done} of {} Deployments in {timeout:?}",
            all.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The kwok nodes' taint and label, which every bench pod tolerates and selects.
fn kwok_placement() -> (Value, Value) {
    (
        json!({"type": "kwok"}),
        json!([{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]),
    )
}

async fn create_pods(
    client: &Client,
    ns: &str,
    count: usize,
    nodes: &[String],
    template_from: Option<&str>,
    name: &str,
    concurrency: usize,
) -> anyhow::Result<()> {
    ensure!(!nodes.is_empty(), "no kwok nodes given");
    // The template's labels too: the operator's hooked-pods label is how
    // its observer finds hooked pods.
    let mut labels = serde_json::Map::new();
    let spec = match template_from {
        Some(d) => {
            let d = Api::<Deployment>::namespaced(client.clone(), ns)
                .get(d)
                .await?;
            let template = d.spec.template;
            for (k, v) in template.metadata.and_then(|m| m.labels).unwrap_or_default() {
                labels.insert(k, Value::String(v));
            }
            serde_json::to_value(template.spec.context("no pod spec")?)?
        }
        None => {
            let (selector, tolerations) = kwok_placement();
            json!({"containers": [{"name": "c", "image": PAUSE}],
                   "nodeSelector": selector, "tolerations": tolerations})
        }
    };
    labels.insert("bench-pod".into(), Value::String(name.to_string()));
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    stream::iter(0..count)
        .map(|i| {
            let (api, mut spec, labels) = (api.clone(), spec.clone(), labels.clone());
            // Bound directly: the scheduler (and the ReplicaSet controller,
            // at kube-controller-manager's 20 requests/s) would take longer
            // than everything else here together.
            spec["nodeName"] = json!(nodes[i % nodes.len()]);
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("{name}-{i:06}"), "labels": labels},
                    "spec": spec
                }))?;
                api.create(&PostParams::default(), &pod).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await?;
    eprintln!(
        "created {count} pods in {ns} in {:.1} s; waiting until kwok runs them",
        started.elapsed().as_secs_f64()
    );
    // Running: every container has an ID and a running state.
    let running = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| {
                !cs.is_empty()
                    && cs.iter().all(|c| {
                        c.container_id.is_some()
                            && c.state.as_ref().is_some_and(|s| s.running.is_some())
                    })
            })
    };
    let selector = format!("bench-pod={name}");
    let mut events = std::pin::pin!(watcher(
        api.clone(),
        watcher::Config::default().labels(&selector)
    ));
    let mut up: HashSet<String> = HashSet::new();
    let mut report = Instant::now();
    while up.len() < count {
        let ev = tokio::time::timeout(Duration::from_secs(300), events.next())
            .await
            .context("kwok made no progress for 5 minutes")?
            .context("watch ended")??;
        match ev {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                if running(&p) {
                    up.insert(p.name_any());
                }
            }
            watcher::Event::Delete(p) => {
                up.remove(&p.name_any());
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
        if report.elapsed() > Duration::from_secs(10) {
            eprintln!("  {} of {count} running", up.len());
            report = Instant::now();
        }
    }
    eprintln!(
        "{count} pods running in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn delete_pods(client: &Client, ns: &str) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    loop {
        let mut names = Vec::new();
        let mut lp = ListParams::default().limit(5000);
        loop {
            let page = api.list_metadata(&lp).await?;
            names.extend(page.items.iter().map(|p| p.name_any()));
            match page.metadata.continue_ {
                Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
                _ => break,
            }
        }
        if names.is_empty() {
            break;
        }
        eprintln!("deleting {} pods in {ns}", names.len());
        // One by one, many at once: a delete collection is one request that
        // the API server works through alone, several times slower.
        stream::iter(names)
            .map(|name| {
                let (api, dp) = (api.clone(), dp.clone());
                async move {
                    match api.delete(&name, &dp).await {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                        Err(e) => Err(e),
                    }
                }
            })
            .buffer_unordered(32)
            .try_collect::<()>()
            .await?;
    }
    eprintln!(
        "pods of {ns} deleted in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Outcomes counted on the policy's status for preStop.
fn prestop_counted(policy: &DynamicObject) -> i64 {
    let r = &policy.data["status"]["preStop"];
    [
        "ran",
        "implied",
        "failed",
        "timedOut",
        "notTriggered",
        "unknown",
    ]
    .iter()
    .map(|k| r[k].as_i64().unwrap_or(0))
    .sum()
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn latency(
    client: &Client,
    ns: &str,
    deployment: &str,
    policy: &str,
    selector: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let policies: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &policy_resource());
    let list = pods.list(&ListParams::default().labels(selector)).await?;
    let n = list.items.len();
    ensure!(n > 0, "no pods match {selector} in {ns}");
    // Follow every container's log from now on; the hook's end marker line
    // carries the container runtime's timestamp of the moment it was written.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Timestamp)>();
    let follows = list.items.iter().map(|p| {
        let (pods, tx, name) = (pods.clone(), tx.clone(), p.name_any());
        async move {
            let params = LogParams {
                follow: true,
                timestamps: true,
                ..Default::default()
            };
            let mut lines = futures::AsyncBufReadExt::lines(
                pods.log_stream(&name, &params)
                    .await
                    .with_context(|| format!("following the log of {name}"))?,
            );
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.try_next().await {
                    let Some((ts, text)) = line.split_once(' ') else {
                        continue;
                    };
                    if text.starts_with("lifecycle-operator: hook=preStop")
                        && text.contains(" rc=")
                        && let Ok(at) = ts.parse::<Timestamp>()
                    {
                        let _ = tx.send((name.clone(), at));
                    }
                }
            });
            anyhow::Ok(())
        }
    });
    stream::iter(follows)
        .buffer_unordered(32)
        .try_collect::<()>()
        .await?;
    drop(tx);
    let before = prestop_counted(&policies.get(policy).await?);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    eprintln!("following {n} logs; scaling {deployment} to 0");
    deployments
        .patch_scale(
            deployment,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await?;
    // The k-th count on the status, the time it was first seen.
    let mut counted_at: Vec<Timestamp> = Vec::new();
    let mut ends: BTreeMap<String, Timestamp> = BTreeMap::new();
    let deadline = Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while counted_at.len() < n && Instant::now() < deadline {
        tick.tick().await;
        while let Ok((pod, at)) = rx.try_recv() {
            ends.entry(pod).or_insert(at);
        }
        let counted = (prestop_counted(&policies.get(policy).await?) - before).max(0) as usize;
        let now = Timestamp::now();
        while counted_at.len() < counted.min(n) {
            counted_at.push(now);
        }
    }
    while let Ok((pod, at)) = rx.try_recv() {
        ends.entry(pod).or_insert(at);
    }
    let mut ends: Vec<Timestamp> = ends.into_values().collect();
    ends.sort();
    let pairs = counted_at.len().min(ends.len());
    eprintln!(
        "{n} pods: {} hook end markers seen, {} hooks counted on the status",
        ends.len(),
        counted_at.len()
    );
    if pairs == 0 {
        bail!("no hook was both seen ending and counted");
    }
    let mut lat: Vec<f64> = (0..pairs)
        .map(|k| counted_at[k].duration_since(ends[k]).as_secs_f64())
        .collect();
    lat.sort_by(f64::total_cmp);
    println!("latency.pods {n}");
    println!("latency.ended {}", ends.len());
    println!("latency.counted {}", counted_at.len());
    println!("latency.p50_s {:.3}", percentile(&lat, 50.0));
    println!("latency.p99_s {:.3}", percentile(&lat, 99.0));
    println!("latency.max_s {:.3}", lat[lat.len() - 1]);
    Ok(())
}

// ---- Contention (in-process) -----------------------------------------------

/// Prints `contention.P.{workloads,indexed_s,rebuilt_s}`: one round (every
/// policy decided once) with the index shared, then rebuilt per decision.
fn contention(policies: usize, workloads: usize) {
    use lifecycle_operator::api::types::LifecyclePolicy;
    use lifecycle_operator::apply::decide::{Scope, decide};
    use lifecycle_operator::apply::neighbours::{Neighbourhood, Neighbours};
    use lifecycle_operator::apply::workload::Workload;
    use std::collections::BTreeSet;
    use std::sync::Arc;

    // Policy i selects app=a{i}; the Deployments spread over those apps.
    let ps: Vec<Arc<LifecyclePolicy>> = (0..policies)
        .map(|i| {
            Arc::new(serde_json::from_value(json!({
                "apiVersion": "lifecycle-operator.io/v1alpha1", "kind": "LifecyclePolicy",
                "metadata": {"name": format!("p{i}"), "namespace": "ns", "uid": format!("u{i}"),
                             "generation": 1, "creationTimestamp": "2025-01-01T00:00:00Z"},
                "spec": {"selector": {"matchLabels": {"app": format!("a{i}")}},
                         "preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep 5; echo drained"]}}},
            })).expect("a policy"))
        })
        .collect();
    let ws: Vec<Arc<Workload>> = (0..workloads)
        .map(|j| {
            let mut w: Workload = serde_json::from_value(json!({
                "metadata": {"name": format!("d{j}"), "namespace": "ns", "uid": format!("w{j}"),
                             "resourceVersion": "1", "labels": {"app": format!("a{}", j % policies.max(1))}},
                "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}},
            }))
            .expect("a workload");
            w.kind = lifecycle_operator::api::types::WorkloadKind::Deployment;
            Arc::new(w)
        })
        .collect();
    let mut writer = kube::runtime::reflector::store::Writer::default();
    writer.apply_watcher_event(&watcher::Event::Init);
    for p in &ps {
        writer.apply_watcher_event(&watcher::Event::InitApply((**p).clone()));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let store = writer.as_reader();
    let round = |neighbourhood: &dyn Fn() -> Arc<Neighbourhood>| {
        let started = Instant::now();
        for p in &ps {
            let selector = kube::core::Selector::try_from(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector::from(
                    &p.spec.selector,
                ),
            )
            .expect("a selector");
            let n = lifecycle_operator::apply::neighbours::Neighbourhoods::One(neighbourhood());
            let scope = Scope {
                policy: p,
                selector: &selector,
                active: true,
                neighbours: &n,
                revert: &BTreeSet::new(),
                hold: None,
                now: Timestamp::now(),
                via: lifecycle_operator::apply::ledger::Via::Background,
            };
            std::hint::black_box(decide(&scope, ws.clone()));
        }
        started.elapsed().as_secs_f64()
    };
    let index = Neighbours::default();
    let store = lifecycle_operator::apply::policies::Policies::namespaced(store);
    round(&|| index.of(&store, "ns")); // warm-up: first touches, first build
    let indexed = round(&|| index.of(&store, "ns"));
    let rebuilt = round(&|| Arc::new(Neighbourhood::new(&ps)));
    println!("contention.{policies}.workloads {workloads}");
    println!("contention.{policies}.indexed_s {indexed:.6}");
    println!("contention.{policies}.rebuilt_s {rebuilt:.6}");
}

// ---- The table -------------------------------------------------------------

fn parse_results(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// 12345 → "12,345".
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Apply, release and writes per Deployment of one speed run (keys `k`,
/// over `n` Deployments, called `what`).
fn speed_rows(
    num: &dyn Fn(&str) -> Option<f64>,
    k: &dyn Fn(&str) -> String,
    n: u64,
    what: &str,
) -> Vec<[String; 4]> {
    let mut rows = Vec::new();
    for (step, op, raw) in [
        ("Apply", "apply_operator_s", "apply_raw_s"),
        ("Release", "release_operator_s", "release_raw_s"),
    ] {
        if let (Some(o), Some(w)) = (num(&k(op)), num(&k(raw))) {
            rows.push([
                format!("{step}, {what}"),
                format!("{o:.2} s"),
                format!("{w:.2} s"),
                format!("{:.2}×", o / w),
            ]);
        }
    }
    for (step, key) in [("apply", "apply_writes"), ("release", "release_writes")] {
        if let Some(w) = num(&k(key)) {
            rows.push([
                format!("Writes per Deployment, {step}, {what}"),
                format!("{:.2}", w / n as f64),
                "1".into(),
                format!("{:.2}×", w / n as f64),
            ]);
        }
    }
    rows
}

/// The cluster run: one ClusterLifecyclePolicy over NS namespaces (speed
/// rows, CPU), and the RSS a namespace costs, with and without the policy.
fn cluster_rows(num: &dyn Fn(&str) -> Option<f64>) -> Vec<[String; 4]> {
    let dash = || "—".to_string();
    let mut rows = Vec::new();
    let Some(n) = num("cluster.deployments") else {
        return rows;
    };
    let k = |s: &str| format!("cluster.{s}");
    let spaces = num(&k("namespaces")).unwrap_or(0.0);
    let what = format!(
        "one cluster policy, {} namespaces × {} Deployments",
        thousands(spaces as u64),
        if spaces > 0.0 { n / spaces } else { 0.0 }
    );
    rows.extend(speed_rows(num, &k, n as u64, &what));
    if let (Some(cpu), Some(wall)) = (num(&k("apply_cpu_s")), num(&k("apply_operator_s"))) {
        rows.push([
            format!("CPU while {what} roll"),
            format!(
                "{:.2} of one core ({cpu:.2} CPU-s in {wall:.2} s)",
                cpu / wall
            ),
            dash(),
            dash(),
        ]);
    }
    let per = |a: Option<f64>, b: Option<f64>| Some((a? - b?) / spaces);
    let (empty, base, with) = (
        num("cluster.rss_empty_kib"),
        num("cluster.rss_base_kib"),
        num("cluster.rss_kib"),
    );
    for (what, kib) in [
        (
            format!("RSS per namespace of {} Deployments, no policy", n / spaces),
            per(base, empty),
        ),
        (
            "RSS per namespace the cluster policy covers, over that".to_string(),
            per(with, base),
        ),
    ] {
        if let Some(kib) = kib.filter(|_| spaces > 0.0) {
            rows.push([
                format!("{what} (+{})", thousands(spaces as u64)),
                format!("{kib:.2} KiB"),
                dash(),
                dash(),
            ]);
        }
    }
    rows
}

fn table(r: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let num = |k: &str| r.get(k).and_then(|v| v.parse::<f64>().ok());
    let text = |k: &str| r.get(k).cloned().unwrap_or_else(|| "?".into());
    let mut rows: Vec<[String; 4]> = Vec::new();
    let dash = || "—".to_string();
    let mut sizes: Vec<u64> = r
        .keys()
        .filter_map(|k| k.strip_prefix("speed.")?.split('.').next()?.parse().ok())
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    for &n in &sizes {
        let k = |s: &str| format!("speed.{n}.{s}");
        rows.extend(speed_rows(
            &num,
            &k,
            n,
            &format!("{} Deployments", thousands(n)),
        ));
    }
    for &n in &sizes {
        let k = |s: &str| format!("speed.{n}.{s}");
        if let (Some(cpu), Some(wall)) = (num(&k("apply_cpu_s")), num(&k("apply_operator_s"))) {
            rows.push([
                format!("CPU while {} Deployments roll", thousands(n)),
                format!(
                    "{:.2} of one core ({cpu:.2} CPU-s in {wall:.2} s)",
                    cpu / wall
                ),
                dash(),
                dash(),
            ]);
        }
    }
    for &n in &sizes {
        let k = |s: &str| format!("speed.{n}.{s}");
        if let (Some(w), Some(s)) = (num(&k("idle_writes")), num(&k("idle_s"))) {
            rows.push([
                format!(
                    "Idle writes, {s:.0} s at {} Deployments, policy applied",
                    thousands(n)
                ),
                format!("{w:.0}"),
                dash(),
                dash(),
            ]);
        }
    }
    rows.extend(cluster_rows(&num));
    rows.extend(admission::rows(&num));
    rows.extend(drain::rows(&num, &|k: &str| r.get(k).cloned()));
    if let Some(empty) = num("rss.empty_kib") {
        rows.push([
            "RSS, empty cluster".into(),
            format!("{:.1} MiB", empty / 1024.0),
            dash(),
            dash(),
        ]);
        let mut prev = empty;
        for (what, count, kib) in [
            ("pod no policy touches", "rss.pods", "rss.pods_kib"),
            ("hooked pod", "rss.hooked", "rss.hooked_kib"),
            ("Deployment", "rss.deployments", "rss.deployments_kib"),
        ] {
            if let (Some(c), Some(v)) = (num(count), num(kib)) {
                rows.push([
                    format!("RSS per {what} (+{})", thousands(c as u64)),
                    format!("{:.2} KiB", (v - prev) / c),
                    dash(),
                    dash(),
                ]);
                prev = v;
            }
        }
        if let (Some(d), Some(p), Some(h)) =
            (num("rss.deployments"), num("rss.pods"), num("rss.hooked"))
        {
            rows.push([
                format!(
                    "RSS, {} Deployments + {} pods ({} hooked)",
                    thousands(d as u64),
                    thousands((p + h) as u64),
                    thousands(h as u64)
                ),
                format!("{:.1} MiB", prev / 1024.0),
                dash(),
                dash(),
            ]);
        }
    }
    if let (Some(p50), Some(p99)) = (num("latency.p50_s"), num("latency.p99_s")) {
        rows.push([
            format!(
                "Hook to status, {} real pods stopped at once (p50 / p99)",
                text("latency.pods")
            ),
            format!("{p50:.2} s / {p99:.2} s"),
            dash(),
            dash(),
        ]);
    }
    let mut counts: Vec<u64> = r
        .keys()
        .filter_map(|k| {
            k.strip_prefix("contention.")?
                .split('.')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    counts.sort_unstable();
    counts.dedup();
    for p in counts {
        let k = |s: &str| format!("contention.{p}.{s}");
        if let (Some(i), Some(b)) = (num(&k("indexed_s")), num(&k("rebuilt_s"))) {
            rows.push([
                format!(
                    "Contention round: {} policies × {} Deployments, one namespace \
                     (baseline: the index rebuilt per reconcile)",
                    thousands(p),
                    text(&k("workloads"))
                ),
                format!("{:.1} ms", i * 1e3),
                format!("{:.1} ms", b * 1e3),
                format!("{:.2}×", i / b),
            ]);
        }
    }
    if rows.is_empty() {
        bail!("no results");
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| Measure | Operator | Baseline (raw SSA loop unless named) | Operator / baseline |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for [a, b, c, d] in rows {
        let _ = writeln!(out, "| {a} | {b} | {c} | {d} |");
    }
    let _ = writeln!(
        out,
        "\nMachine: {} CPUs ({}), {} memory. Operator: commit {}, {} build. {}.",
        text("machine.cpus"),
        text("machine.cpu"),
        text("machine.memory"),
        text("operator.commit"),
        text("operator.profile"),
        text("run.date")
    );
    Ok(out)
}
