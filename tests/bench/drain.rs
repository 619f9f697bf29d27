//! The drain run (issue 22's yardstick): requests dropped during a
//! `kubectl rollout restart` of 3 nginx replicas behind a Service, three
//! ways (no hook; the Kubernetes docs' nginx preStop; a preStop that sleeps
//! before quitting), and whether the policy's `DrainSafe` verdict agrees.
//! tests/bench.sh makes the namespaces, restarts the Deployments with
//! kubectl and stops the load; this module makes the workloads
//! (`drain-setup`), is the load (`drain-load`: a new TCP connection per
//! request on the Service's ClusterIP, from the node), reads the verdict
//! (`drain-status`) and renders the table's rows.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{policy_resource, thousands};

/// The Deployment, its Service and the policy, in every case's namespace.
pub const NAME: &str = "web";
/// The policy's name.
pub const POLICY: &str = "drain";
/// Replicas of every case's Deployment.
pub const REPLICAS: i32 = 3;
/// One request, connect to the end of the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST: &[u8] = b"GET / HTTP/1.0\r\nHost: x\r\n\r\n";
const BENCH_LABEL: &str = "lifecycle-operator.io/bench";

/// What the load should show for a case, and so what its verdict must not
/// contradict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// No policy: nothing to judge.
    NoPolicy,
    /// The hook quits before the endpoints are gone: requests fail, and a
    /// DrainSafe True beside failed requests disagrees.
    Unsafe,
    /// The hook sleeps first: DrainSafe False disagrees.
    Safe,
}

/// One way of stopping nginx: the case's name (namespace `bench-drain-NAME`,
/// result keys `drain.NAME.*`), the preStop script (none: no policy), how
/// the table names it, what the load should show.
pub struct Case {
    pub name: &'static str,
    pub script: Option<&'static str>,
    pub shown: &'static str,
    pub expect: Expect,
}

pub const CASES: [Case; 4] = [
    Case {
        name: "none",
        script: None,
        shown: "none",
        expect: Expect::NoPolicy,
    },
    Case {
        name: "docs",
        script: Some("nginx -s quit; while killall -0 nginx; do sleep 1; done"),
        shown: "the docs' `nginx -s quit; while killall -0 nginx; do sleep 1; done`",
        expect: Expect::Unsafe,
    },
    // What DrainSafe recommends on this cluster (removal p99 + the 1 s
    // margin, rounded up): does the recommendation hold under load?
    Case {
        name: "recommended",
        script: Some("sleep 2; nginx -s quit; while killall -0 nginx; do sleep 1; done"),
        shown: "the recommended `sleep 2; nginx -s quit; ...`",
        expect: Expect::Safe,
    },
    Case {
        name: "sleep",
        script: Some("sleep 5; nginx -s quit; while killall -0 nginx; do sleep 1; done"),
        shown: "`sleep 5; nginx -s quit; while killall -0 nginx; do sleep 1; done`",
        expect: Expect::Safe,
    },
];

pub fn case(name: &str) -> anyhow::Result<&'static Case> {
    CASES.iter().find(|c| c.name == name).with_context(|| {
        format!(
            "no drain case {name} (cases: {})",
            CASES.map(|c| c.name).join(", ")
        )
    })
}

pub fn namespace(case: &Case) -> String {
    format!("bench-drain-{}", case.name)
}

// ---- drain-setup -----------------------------------------------------------

/// Creates every case's Deployment, Service and policy (the namespaces
/// exist), at once, and waits until each runs REPLICAS ready pods, hooked
/// where it has a policy and that policy is Ready.
pub async fn setup(
    client: &Client,
    cases: &[String],
    node: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let cases = cases
        .iter()
        .map(|c| case(c))
        .collect::<anyhow::Result<Vec<_>>>()?;
    futures::future::try_join_all(cases.iter().map(|c| create(client, c, node))).await?;
    let started = Instant::now();
    futures::future::try_join_all(cases.iter().map(|c| ready(client, c, timeout))).await?;
    eprintln!(
        "drain: {} ready in {:.1} s",
        cases
            .iter()
            .map(|c| namespace(c))
            .collect::<Vec<_>>()
            .join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn labels() -> Value {
    json!({"app": "bench-drain", BENCH_LABEL: "true"})
}

fn deployment(node: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": NAME, "labels": labels()},
        "spec": {
            "replicas": REPLICAS,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "selector": {"matchLabels": {"bench-drain": NAME}},
            "template": {
                "metadata": {"labels": {"bench-drain": NAME}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "terminationGracePeriodSeconds": 30,
                    "containers": [{
                        "name": "nginx", "image": "nginx", "imagePullPolicy": "IfNotPresent",
                        "ports": [{"containerPort": 80}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 1}
                    }]
                }
            }
        }
    })
}

fn service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "labels": labels()},
        "spec": {"type": "ClusterIP", "selector": {"bench-drain": NAME},
            "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP"}]}
    })
}

fn policy(script: &str) -> Value {
    json!({
        "apiVersion": "lifecycle-operator.io/v1alpha1", "kind": "LifecyclePolicy",
        "metadata": {"name": POLICY, "labels": {BENCH_LABEL: "true"}},
        "spec": {
            "selector": {"matchLabels": {"app": "bench-drain"}},
            "kinds": ["Deployment"],
            "containers": ["nginx"],
            "preStop": {"exec": {"command": ["/bin/sh", "-c", script]}}
        }
    })
}

async fn create(client: &Client, case: &Case, node: &str) -> anyhow::Result<()> {
    let ns = namespace(case);
    let pp = PostParams::default();
    // The policy first: the operator then patches a Deployment it has seen
    // created, one rollout sooner than the other way round.
    if let Some(script) = case.script {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &policy_resource());
        let p: DynamicObject = serde_json::from_value(policy(script))?;
        api.create(&pp, &p)
            .await
            .with_context(|| format!("creating the policy in {ns}"))?;
    }
    let api: Api<Service> = Api::namespaced(client.clone(), &ns);
    api.create(&pp, &serde_json::from_value(service())?)
        .await
        .with_context(|| format!("creating the Service in {ns}"))?;
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    api.create(&pp, &serde_json::from_value(deployment(node))?)
        .await
        .with_context(|| format!("creating the Deployment in {ns}"))?;
    Ok(())
}

/// Waits until `ready_now` says nothing is missing; on time-out, fails
/// with what still was.
async fn ready(client: &Client, case: &Case, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let missing = missing(client, case).await?;
        let Some(missing) = missing else {
            return Ok(());
        };
        if Instant::now() > deadline {
            bail!(
                "drain: {} not ready after {} s: {missing}",
                namespace(case),
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the case's namespace still lacks before a measurement: the
/// Deployment's rollout complete, exactly REPLICAS pods (none terminating),
/// all ready, each with a preStop exactly when the case has a policy, and
/// that policy Ready. None when nothing.
async fn missing(client: &Client, case: &Case) -> anyhow::Result<Option<String>> {
    let ns = namespace(case);
    let d = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get(NAME)
        .await?;
    let s = d.status.clone().unwrap_or_default();
    let generation = d.metadata.generation.unwrap_or(0);
    let counts = [
        s.replicas,
        s.updated_replicas,
        s.ready_replicas,
        s.available_replicas,
    ];
    if s.observed_generation.unwrap_or(0) < generation
        || counts.iter().any(|c| c.unwrap_or(0) != REPLICAS)
    {
        return Ok(Some(format!(
            "Deployment rolling (replicas, updated, ready, available: {counts:?})"
        )));
    }
    let pods = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels(&format!("bench-drain={NAME}")))
        .await?
        .items;
    let ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let hooked = |p: &Pod| {
        p.spec.as_ref().is_some_and(|s| {
            s.containers.iter().any(|c| {
                c.name == "nginx" && c.lifecycle.as_ref().is_some_and(|l| l.pre_stop.is_some())
            })
        })
    };
    let live = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count();
    if pods.len() != REPLICAS as usize || live != pods.len() {
        return Ok(Some(format!("{} pods, {live} not terminating", pods.len())));
    }
    if !pods.iter().all(ready) {
        return Ok(Some("pods not ready".into()));
    }
    if !pods.iter().all(|p| hooked(p) == case.script.is_some()) {
        return Ok(Some(if case.script.is_some() {
            "pods without the preStop".into()
        } else {
            "pods with a preStop".into()
        }));
    }
    if case.script.is_some() {
        let p = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &policy_resource())
            .get(POLICY)
            .await?;
        if condition(&p, "Ready").0.as_deref() != Some("True") {
            return Ok(Some("the policy not Ready".into()));
        }
    }
    Ok(None)
}

// ---- drain-load ------------------------------------------------------------

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Refused,
    Reset,
    Timeout,
    NoRoute,
    Other,
}

/// Requests sent and how they ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    pub requests: u64,
    pub ok: u64,
    pub refused: u64,
    pub reset: u64,
    pub timeout: u64,
    pub no_route: u64,
    pub other: u64,
    /// Seconds from the start of the load at which requests failed.
    pub failed_at: Vec<f64>,
    /// The first failure of kind Other, for the log.
    pub first_other: Option<String>,
}

impl Tally {
    fn count(&mut self, outcome: Outcome, at: f64) {
        self.requests += 1;
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Refused => self.refused += 1,
            Outcome::Reset => self.reset += 1,
            Outcome::Timeout => self.timeout += 1,
            Outcome::NoRoute => self.no_route += 1,
            Outcome::Other => self.other += 1,
        }
        if outcome != Outcome::Ok {
            self.failed_at.push(at);
        }
    }

    pub fn failed(&self) -> u64 {
        self.requests - self.ok
    }

    fn add(&mut self, o: Tally) {
        self.requests += o.requests;
        self.ok += o.ok;
        self.refused += o.refused;
        self.reset += o.reset;
        self.timeout += o.timeout;
        self.no_route += o.no_route;
        self.other += o.other;
        self.failed_at.extend(o.failed_at);
        self.first_other = self.first_other.take().or(o.first_other);
    }

    /// Failures per whole second of the load, "second:count" for the
    /// seconds that had any.
    fn timeline(&self) -> String {
        let mut per: std::collections::BTreeMap<u64, u64> = Default::default();
        for t in &self.failed_at {
            *per.entry(*t as u64).or_default() += 1;
        }
        per.iter()
            .map(|(s, n)| format!("{s}s:{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The kind of failure an I/O error is.
pub fn classify(e: &std::io::Error) -> Outcome {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => Outcome::Refused,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => Outcome::Reset,
        K::TimedOut => Outcome::Timeout,
        K::HostUnreachable | K::NetworkUnreachable => Outcome::NoRoute,
        _ => match e.raw_os_error() {
            // EHOSTUNREACH, ENETUNREACH
            Some(113) | Some(101) => Outcome::NoRoute,
            _ => Outcome::Other,
        },
    }
}

/// What an answer is: nginx's 200 or not.
pub fn judge_answer(answer: &[u8]) -> Outcome {
    if answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.0 200") {
        Outcome::Ok
    } else {
        Outcome::Other
    }
}

/// One request on a new connection, with its time-out; on Other, why.
async fn request(addr: SocketAddr) -> (Outcome, Option<String>) {
    let attempt = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        conn.write_all(REQUEST).await?;
        let mut answer = Vec::with_capacity(1024);
        (&mut conn).take(64 * 1024).read_to_end(&mut answer).await?;
        std::io::Result::Ok(answer)
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
        Err(_) => (Outcome::Timeout, None),
        Ok(Err(e)) => {
            let o = classify(&e);
            (o, (o == Outcome::Other).then(|| e.to_string()))
        }
        Ok(Ok(answer)) => {
            let o = judge_answer(&answer);
            let why = (o == Outcome::Other).then(|| {
                let first = String::from_utf8_lossy(&answer);
                let first = first.lines().next().unwrap_or("");
                if first.is_empty() {
                    "an empty answer".to_string()
                } else {
                    format!("answer {first:?}")
                }
            });
            (o, why)
        }
    }
}

/// CLIENTS loops of requests on ADDR, each on a new connection, until
/// `stop_file` exists or `max` has passed; prints the `drain.CASE.*` lines.
pub async fn load(
    case_name: &str,
    addr: SocketAddr,
    clients: usize,
    max: Duration,
    stop_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    case(case_name)?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let asked = stop_file.is_some();
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                if stop_file.as_ref().is_some_and(|f| f.exists()) {
                    stop.store(true, Ordering::Relaxed);
                    return true;
                }
                if started.elapsed() >= max {
                    stop.store(true, Ordering::Relaxed);
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut t = Tally::default();
                while !stop.load(Ordering::Relaxed) {
                    let (o, why) = request(addr).await;
                    if t.first_other.is_none() {
                        t.first_other = why;
                    }
                    t.count(o, started.elapsed().as_secs_f64());
                }
                t
            })
        })
        .collect();
    let mut total = Tally::default();
    for w in workers {
        total.add(w.await?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let asked_to_stop = watcher.await?;
    if !asked_to_stop && asked {
        eprintln!(
            "drain {case_name}: warning: the load stopped at its limit ({} s), not when asked",
            max.as_secs()
        );
    }
    let k = |s: &str| format!("drain.{case_name}.{s}");
    println!("{} {}", k("requests"), total.requests);
    println!("{} {}", k("failed"), total.failed());
    for (kind, n) in [
        ("refused", total.refused),
        ("reset", total.reset),
        ("timeout", total.timeout),
        ("noroute", total.no_route),
        ("other", total.other),
    ] {
        println!("{} {n}", k(&format!("failed_{kind}")));
    }
    println!("{} {seconds:.1}", k("load_s"));
    println!("{} {clients}", k("clients"));
    eprintln!(
        "drain {case_name}: {} requests in {seconds:.1} s, {} failed (refused {}, reset {}, timeout {}, no route {}, other {}){}",
        total.requests,
        total.failed(),
        total.refused,
        total.reset,
        total.timeout,
        total.no_route,
        total.other,
        if total.failed() > 0 {
            format!("; failures at {}", total.timeline())
        } else {
            String::new()
        }
    );
    if let Some(why) = &total.first_other {
        eprintln!("drain {case_name}: the first failure of kind other: {why}");
    }
    Ok(())
}

// ---- drain-status ----------------------------------------------------------

/// A condition's status and message, None when the policy has none of that type.
fn condition(p: &DynamicObject, type_: &str) -> (Option<String>, String) {
    let c = p.data["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_));
    match c {
        Some(c) => (
            c["status"].as_str().map(str::to_string),
            c["message"].as_str().unwrap_or_default().to_string(),
        ),
        None => (None, String::new()),
    }
}

/// How the verdict stands against the load.
#[derive(Debug, PartialEq, Eq)]
pub enum Judgement {
    Agrees,
    Disagrees(String),
    /// No verdict to judge (no status.drain or no DrainSafe condition yet,
    /// or Unknown).
    Unjudged(String),
}

/// The verdict (DrainSafe's status, None without one) against the
/// requests that failed: only the obvious contradictions count. A True
/// where the docs' hook dropped requests; a False for the hook that sleeps
/// 5 s first, whatever the load (its drops, if any, are not the hook's).
pub fn judge(expect: Expect, verdict: Option<&str>, failed: u64) -> Judgement {
    match (expect, verdict) {
        (Expect::NoPolicy, _) => Judgement::Unjudged("no policy".into()),
        (_, None) => Judgement::Unjudged("no DrainSafe condition".into()),
        (Expect::Unsafe, Some("True")) if failed > 0 => Judgement::Disagrees(format!(
            "DrainSafe True, but {failed} requests failed during the rollout"
        )),
        (Expect::Safe, Some("False")) => Judgement::Disagrees(format!(
            "DrainSafe False, though the hook sleeps before nginx quits \
             ({failed} requests failed)"
        )),
        (_, Some("True" | "False")) => Judgement::Agrees,
        (_, Some(other)) => Judgement::Unjudged(format!("DrainSafe {other}")),
    }
}

/// The CRD of LifecyclePolicy has a `status.drain` (or keeps unknown status
/// fields): without one the API server drops what an operator writes there.
async fn crd_has_drain(client: &Client) -> anyhow::Result<bool> {
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource {
            group: "apiextensions.k8s.io".into(),
            version: "v1".into(),
            api_version: "apiextensions.k8s.io/v1".into(),
            kind: "CustomResourceDefinition".into(),
            plural: "customresourcedefinitions".into(),
        },
    );
    let crd = crds
        .get("lifecyclepolicies.lifecycle-operator.io")
        .await
        .context("reading the LifecyclePolicy CRD")?;
    let versions = crd.data["spec"]["versions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok(versions.iter().any(|v| {
        let status = &v["schema"]["openAPIV3Schema"]["properties"]["status"];
        !status["properties"]["drain"].is_null()
            || status["x-kubernetes-preserve-unknown-fields"] == true
    }))
}

/// Waits (at most `timeout`) until the case's policy has observed `expect`
/// drains, then prints the `drain.CASE.*` verdict lines, and a
/// `drain.CASE.agrees` line: yes, no (also `drain.CASE.disagrees WHY`,
/// and DISAGREES on stderr) or unjudged.
pub async fn status(
    client: &Client,
    case_name: &str,
    expect: i64,
    failed: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let case = case(case_name)?;
    let k = |s: &str| format!("drain.{case_name}.{s}");
    if case.script.is_none() {
        bail!("drain case {case_name} has no policy");
    }
    let ns = namespace(case);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &policy_resource());
    let schema = crd_has_drain(client).await?;
    let deadline = Instant::now() + timeout;
    let p = loop {
        let p = api.get(POLICY).await?;
        let observed = p.data["status"]["drain"]["observed"].as_i64();
        if !schema || observed.is_some_and(|o| o >= expect) || Instant::now() >= deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let d = &p.data["status"]["drain"];
    let (verdict, message) = condition(&p, "DrainSafe");
    if d.is_null() {
        eprintln!(
            "drain {case_name}: no drain status{}",
            if schema {
                format!(" after {} s", timeout.as_secs())
            } else {
                " (the CRD has no status.drain)".into()
            }
        );
        println!("{} none", k("status"));
    } else {
        println!("{} present", k("status"));
        for (key, v) in [
            ("observed", &d["observed"]),
            ("safe", &d["safe"]),
            ("unsafe", &d["unsafe"]),
            ("removal_p50_s", &d["removalSeconds"]["p50"]),
            ("removal_p99_s", &d["removalSeconds"]["p99"]),
            ("recommended_prestop_s", &d["recommendedPreStopSeconds"]),
            ("last_unsafe_pod", &d["lastUnsafe"]["pod"]),
            ("last_unsafe_gap_s", &d["lastUnsafe"]["gapSeconds"]),
            ("last_unsafe_message", &d["lastUnsafe"]["message"]),
        ] {
            match v {
                Value::Null => {}
                Value::String(s) => println!("{} {}", k(key), one_line(s)),
                v => println!("{} {v}", k(key)),
            }
        }
        let observed = d["observed"].as_i64().unwrap_or(0);
        if observed < expect {
            eprintln!(
                "drain {case_name}: warning: {observed} drains observed after {} s, not {expect}",
                timeout.as_secs()
            );
        }
    }
    println!("{} {}", k("verdict"), verdict.as_deref().unwrap_or("none"));
    if !message.is_empty() {
        println!("{} {}", k("verdict_message"), one_line(&message));
    }
    eprintln!(
        "drain {case_name}: DrainSafe {}{}",
        verdict.as_deref().unwrap_or("(no condition)"),
        if message.is_empty() {
            String::new()
        } else {
            format!(": {message}")
        }
    );
    match judge(case.expect, verdict.as_deref(), failed) {
        Judgement::Agrees => println!("{} yes", k("agrees")),
        Judgement::Unjudged(why) => {
            println!("{} unjudged", k("agrees"));
            eprintln!("drain {case_name}: verdict not judged: {why}");
        }
        Judgement::Disagrees(why) => {
            println!("{} no", k("agrees"));
            println!("{} {why}", k("disagrees"));
            eprintln!("drain {case_name}: DISAGREES: {why}");
        }
    }
    Ok(())
}

/// A status text on one results line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---- the table ---------------------------------------------------------------

/// One row per case that ran: the preStop, requests and failures (by
/// kind), the verdict, failures per 100,000 requests.
pub fn rows(
    num: &dyn Fn(&str) -> Option<f64>,
    text: &dyn Fn(&str) -> Option<String>,
) -> Vec<[String; 4]> {
    let mut rows = Vec::new();
    for case in &CASES {
        let k = |s: &str| format!("drain.{}.{s}", case.name);
        let (Some(requests), Some(failed)) = (num(&k("requests")), num(&k("failed"))) else {
            continue;
        };
        let kinds: Vec<String> = [
            ("refused", "refused"),
            ("reset", "reset"),
            ("timeout", "timed out"),
            ("noroute", "no route"),
            ("other", "other"),
        ]
        .iter()
        .filter_map(|(key, shown)| {
            let n = num(&k(&format!("failed_{key}")))?;
            (n > 0.0).then(|| format!("{shown} {}", thousands(n as u64)))
        })
        .collect();
        let load = format!(
            "{} requests, {} failed{}",
            thousands(requests as u64),
            thousands(failed as u64),
            if kinds.is_empty() {
                String::new()
            } else {
                format!(" ({})", kinds.join(", "))
            }
        );
        let verdict = if case.script.is_none() {
            "no policy".to_string()
        } else {
            verdict_cell(num, text, &k)
        };
        let per = if requests > 0.0 {
            format!("{:.0} per 100k failed", failed / requests * 1e5)
        } else {
            "—".into()
        };
        rows.push([
            format!(
                "Drain: rollout restart of {REPLICAS} nginx under load ({} clients, a new connection per request), preStop {}",
                text(&k("clients")).unwrap_or_else(|| "?".into()),
                case.shown
            ),
            load,
            verdict,
            per,
        ]);
    }
    rows
}

fn verdict_cell(
    num: &dyn Fn(&str) -> Option<f64>,
    text: &dyn Fn(&str) -> Option<String>,
    k: &dyn Fn(&str) -> String,
) -> String {
    let mut cell = match text(&k("verdict")).as_deref() {
        None => "verdict not read".to_string(),
        Some("none") if text(&k("status")).as_deref() == Some("none") => {
            "no drain status".to_string()
        }
        Some("none") => "no DrainSafe condition".to_string(),
        Some(v) => format!("DrainSafe {v}"),
    };
    let mut details = Vec::new();
    if let Some(o) = num(&k("observed")) {
        details.push(format!(
            "observed {o:.0}: safe {}, unsafe {}",
            num(&k("safe")).unwrap_or(0.0),
            num(&k("unsafe")).unwrap_or(0.0)
        ));
    }
    if let (Some(p50), Some(p99)) = (num(&k("removal_p50_s")), num(&k("removal_p99_s"))) {
        details.push(format!("removal p50 {p50:.2} s / p99 {p99:.2} s"));
    }
    if let Some(r) = num(&k("recommended_prestop_s")) {
        details.push(format!("recommended preStop {r} s"));
    }
    if !details.is_empty() {
        cell.push_str(&format!(" ({})", details.join("; ")));
    }
    if let Some(why) = text(&k("disagrees")) {
        cell.push_str(&format!(" — DISAGREES: {why}"));
    }
    cell
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::{Error, ErrorKind};

    #[test]
    fn errors_are_sorted_by_kind() {
        assert_eq!(
            classify(&Error::from(ErrorKind::ConnectionRefused)),
            Outcome::Refused
        );
        assert_eq!(
            classify(&Error::from(ErrorKind::ConnectionReset)),
            Outcome::Reset
        );
        assert_eq!(classify(&Error::from_raw_os_error(113)), Outcome::NoRoute);
        assert_eq!(
            classify(&Error::from(ErrorKind::TimedOut)),
            Outcome::Timeout
        );
        assert_eq!(
            classify(&Error::from(ErrorKind::AddrNotAvailable)),
            Outcome::Other
        );
    }

    #[test]
    fn only_a_200_is_an_answer() {
        assert_eq!(judge_answer(b"HTTP/1.1 200 OK\r\n\r\nhi"), Outcome::Ok);
        assert_eq!(judge_answer(b"HTTP/1.0 200 OK\r\n"), Outcome::Ok);
        assert_eq!(
            judge_answer(b"HTTP/1.1 502 Bad Gateway\r\n"),
            Outcome::Other
        );
        assert_eq!(judge_answer(b""), Outcome::Other);
    }

    #[test]
    fn the_verdict_disagrees_only_in_the_obvious_direction() {
        use Judgement::*;
        assert!(matches!(
            judge(Expect::Unsafe, Some("True"), 3),
            Disagrees(_)
        ));
        assert_eq!(judge(Expect::Unsafe, Some("True"), 0), Agrees);
        assert_eq!(judge(Expect::Unsafe, Some("False"), 0), Agrees);
        assert!(matches!(
            judge(Expect::Safe, Some("False"), 0),
            Disagrees(_)
        ));
        assert_eq!(judge(Expect::Safe, Some("True"), 2), Agrees);
        assert!(matches!(judge(Expect::Safe, None, 0), Unjudged(_)));
        assert!(matches!(
            judge(Expect::Unsafe, Some("Unknown"), 9),
            Unjudged(_)
        ));
        assert!(matches!(
            judge(Expect::NoPolicy, Some("False"), 9),
            Unjudged(_)
        ));
    }

    #[test]
    fn rows_show_the_load_and_the_verdict() {
        let r: BTreeMap<String, String> = [
            ("drain.none.requests", "84416"),
            ("drain.none.failed", "170"),
            ("drain.none.failed_refused", "120"),
            ("drain.none.failed_timeout", "50"),
            ("drain.none.failed_reset", "0"),
            ("drain.none.clients", "8"),
            ("drain.docs.requests", "100000"),
            ("drain.docs.failed", "100"),
            ("drain.docs.clients", "8"),
            ("drain.docs.status", "present"),
            ("drain.docs.observed", "3"),
            ("drain.docs.safe", "0"),
            ("drain.docs.unsafe", "3"),
            ("drain.docs.recommended_prestop_s", "2"),
            ("drain.docs.verdict", "True"),
            (
                "drain.docs.disagrees",
                "DrainSafe True, but 100 requests failed",
            ),
            ("drain.sleep.requests", "1000"),
            ("drain.sleep.failed", "0"),
            ("drain.sleep.status", "none"),
            ("drain.sleep.verdict", "none"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let num = |k: &str| r.get(k).and_then(|v| v.parse::<f64>().ok());
        let text = |k: &str| r.get(k).cloned();
        let rows = rows(&num, &text);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0][1],
            "84,416 requests, 170 failed (refused 120, timed out 50)"
        );
        assert_eq!(rows[0][2], "no policy");
        assert_eq!(rows[0][3], "201 per 100k failed");
        assert!(rows[0][0].contains("8 clients"), "{}", rows[0][0]);
        assert!(
            rows[1][2].starts_with(
                "DrainSafe True (observed 3: safe 0, unsafe 3; recommended preStop 2 s)"
            ),
            "{}",
            rows[1][2]
        );
        assert!(rows[1][2].contains("DISAGREES"), "{}", rows[1][2]);
        assert_eq!(rows[2][2], "no drain status");
        assert_eq!(rows[2][3], "0 per 100k failed");
    }
}
