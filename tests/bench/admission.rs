//! The admission run (issue 21's bench row): COUNT Deployment creates, C at
//! once, into a namespace the webhook leaves out (the baseline), then into
//! one it serves; both namespaces hold the same policy, its rollout
//! Complete. Per run: each create's latency as the client sees it, the API
//! server's own histograms over the run (the create requests, and the
//! webhook's calls), and the ReplicaSets per new Deployment once the
//! background path is done (the webhook's goal: 1.00; without it, 2.00).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, PostParams};

use crate::{hooked, list_deployments, name_of, percentile, policy_resource, replicas0};

/// The webhook's name in the bench's MutatingWebhookConfiguration (the
/// `name` label of the API server's webhook histogram).
pub const WEBHOOK: &str = "workloads.lifecycle-operator.io";

/// One run's figures, printed as `admission.<run>.<key> value` lines.
pub async fn run(
    client: &Client,
    run: &str,
    ns: &str,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    policy_complete(client, ns).await?;
    let before = Metrics::scrape(client).await?;
    let started = Instant::now();
    let mut ms = create(client, ns, count, concurrency).await?;
    let wall = started.elapsed().as_secs_f64();
    let after = Metrics::scrape(client).await?;
    ms.sort_by(f64::total_cmp);
    let k = |s: &str| format!("admission.{run}.{s}");
    println!("admission.count {count}");
    println!("{} {wall:.3}", k("wall_s"));
    println!("{} {:.2}", k("client_p50_ms"), percentile(&ms, 50.0));
    println!("{} {:.2}", k("client_p99_ms"), percentile(&ms, 99.0));
    let requests = after.delta(&before, &REQUESTS);
    let calls = after.delta(&before, &CALLS);
    for (what, h) in [("request", &requests), ("webhook", &calls)] {
        println!("{} {}", k(&format!("{what}_count")), h.count());
        for q in [50, 99] {
            if let Some(s) = h.quantile(q as f64 / 100.0) {
                println!("{} {:.2}", k(&format!("{what}_p{q}_ms")), s * 1000.0);
            }
        }
    }
    let rs = replica_sets_once_hooked(client, ns, count).await?;
    println!(
        "{} {:.3}",
        k("replicasets_per_deployment"),
        rs as f64 / count as f64
    );
    Ok(())
}

/// The table's rows: webhook on against the same creates with it off.
pub fn rows(num: &dyn Fn(&str) -> Option<f64>) -> Vec<[String; 4]> {
    let mut rows = Vec::new();
    let Some(n) = num("admission.count") else {
        return rows;
    };
    let k = |run: &str, s: &str| num(&format!("admission.{run}.{s}"));
    let what = format!(
        "{} Deployment creates, 16 at once",
        crate::thousands(n as u64)
    );
    let pair = |run: &str, key: &str| {
        Some((
            k(run, &format!("{key}_p50_ms"))?,
            k(run, &format!("{key}_p99_ms"))?,
        ))
    };
    if let Some((p50, p99)) = pair("on", "webhook") {
        rows.push([
            format!("Admission webhook call (API server's histogram, p50 / p99), {what}"),
            format!("{p50:.1} ms / {p99:.1} ms"),
            "no call (webhook off)".into(),
            "—".into(),
        ]);
    }
    for (key, name) in [
        ("request", "Create request (API server's histogram, "),
        ("client", "Create as the client sees it ("),
    ] {
        if let (Some((a50, a99)), Some((b50, b99))) = (pair("on", key), pair("off", key)) {
            rows.push([
                format!("{name}p50 / p99), {what}; baseline: webhook off"),
                format!("{a50:.1} ms / {a99:.1} ms"),
                format!("{b50:.1} ms / {b99:.1} ms"),
                format!("{:.2}× / {:.2}×", a50 / b50, a99 / b99),
            ]);
        }
    }
    if let (Some(on), Some(off)) = (
        k("on", "replicasets_per_deployment"),
        k("off", "replicasets_per_deployment"),
    ) {
        rows.push([
            "ReplicaSets per new Deployment under a policy (goal 1.00); baseline: webhook off"
                .into(),
            format!("{on:.2}"),
            format!("{off:.2}"),
            format!("{:.2}×", on / off),
        ]);
    }
    rows
}

/// The namespace's policy has finished its rollout (the webhook injects
/// nothing before) and its status is current.
async fn policy_complete(client: &Client, ns: &str) -> anyhow::Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &policy_resource());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = api.get("bench").await?;
        let s = &p.data["status"];
        if s["observedGeneration"].as_i64() == p.metadata.generation
            && s["rollout"]["phase"] == "Complete"
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the policy in {ns} did not complete its rollout: {s}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates `count` replicas-0 Deployments, `concurrency` at once; returns
/// each create's milliseconds.
async fn create(
    client: &Client,
    ns: &str,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<f64>> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            async move {
                let d = replicas0(&name_of(i))?;
                let t = Instant::now();
                api.create(&PostParams::default(), &d)
                    .await
                    .with_context(|| format!("creating Deployment {ns}/{}", name_of(i)))?;
                anyhow::Ok(t.elapsed().as_secs_f64() * 1000.0)
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await
}

/// Waits until every Deployment carries the hook, its controller caught up,
/// and the ReplicaSet count has held for 3 s; returns that count.
async fn replica_sets_once_hooked(
    client: &Client,
    ns: &str,
    count: usize,
) -> anyhow::Result<usize> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(600);
    let caught_up = |d: &Deployment| {
        hooked(d) && d.status.as_ref().and_then(|s| s.observed_generation) == d.metadata.generation
    };
    let (mut last, mut since) = (usize::MAX, Instant::now());
    loop {
        let done = list_deployments(&deployments, caught_up).await?.len();
        let n = sets
            .list_metadata(&ListParams::default())
            .await?
            .items
            .len();
        if n != last {
            (last, since) = (n, Instant::now());
        } else if done == count && since.elapsed() >= Duration::from_secs(3) {
            return Ok(n);
        }
        if Instant::now() > deadline {
            bail!("{ns}: {done} of {count} Deployments hooked and caught up after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A histogram of the API server's, by the labels that pick its series.
struct Series {
    metric: &'static str,
    labels: &'static [(&'static str, &'static str)],
}

/// The create requests for Deployments, whatever their outcome.
const REQUESTS: Series = Series {
    metric: "apiserver_request_duration_seconds",
    labels: &[
        ("verb", "POST"),
        ("resource", "deployments"),
        ("subresource", ""),
    ],
};

/// The webhook's calls on creates.
const CALLS: Series = Series {
    metric: "apiserver_admission_webhook_admission_duration_seconds",
    labels: &[("name", WEBHOOK), ("operation", "CREATE")],
};

/// The API server's /metrics text.
struct Metrics(String);

impl Metrics {
    async fn scrape(client: &Client) -> anyhow::Result<Self> {
        let req = http::Request::get("/metrics").body(Vec::new())?;
        Ok(Self(
            client
                .request_text(req)
                .await
                .context("the API server's /metrics")?,
        ))
    }

    /// Cumulative bucket counts by upper bound, summed over the series'
    /// other labels.
    fn buckets(&self, s: &Series) -> BTreeMap<Bound, f64> {
        let prefix = format!("{}_bucket{{", s.metric);
        let mut out = BTreeMap::new();
        for line in self.0.lines().filter(|l| l.starts_with(&prefix)) {
            let Some((labels, value)) = line[prefix.len()..].rsplit_once("} ") else {
                continue;
            };
            let labels = parse_labels(labels);
            let picked = s
                .labels
                .iter()
                .all(|(k, v)| labels.get(*k).map(String::as_str).unwrap_or("") == *v);
            let le = labels.get("le").and_then(|le| Bound::parse(le));
            if let (true, Some(le), Ok(v)) = (picked, le, value.trim().parse::<f64>()) {
                *out.entry(le).or_insert(0.0) += v;
            }
        }
        out
    }

    /// What was observed between `before` and this scrape.
    fn delta(&self, before: &Metrics, s: &Series) -> Histogram {
        let was = before.buckets(s);
        Histogram(
            self.buckets(s)
                .into_iter()
                .map(|(le, n)| (le, n - was.get(&le).copied().unwrap_or(0.0)))
                .collect(),
        )
    }
}

/// `k="v",k2="v2"` (the API server's label values hold no quotes).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.split("\",")
        .filter_map(|kv| kv.split_once("=\""))
        .map(|(k, v)| (k.to_string(), v.trim_end_matches('"').to_string()))
        .collect()
}

/// A bucket's upper bound, ordered (`+Inf` last).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Bound(f64);

impl Eq for Bound {}

impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl Bound {
    fn parse(le: &str) -> Option<Self> {
        match le {
            "+Inf" => Some(Bound(f64::INFINITY)),
            _ => le.parse().ok().map(Bound),
        }
    }
}

/// Cumulative counts by upper bound.
struct Histogram(BTreeMap<Bound, f64>);

impl Histogram {
    fn count(&self) -> f64 {
        self.0.values().copied().fold(0.0, f64::max)
    }

    /// Prometheus's `histogram_quantile`: linear within the bucket the
    /// rank falls in (the highest finite bound when it falls in +Inf).
    fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for (&Bound(le), &n) in &self.0 {
            if n >= rank {
                if le.is_infinite() {
                    return Some(lower);
                }
                let inside = n - below;
                let part = if inside > 0.0 {
                    (rank - below) / inside
                } else {
                    1.0
                };
                return Some(lower + (le - lower) * part);
            }
            (lower, below) = (le, n);
        }
        Some(lower)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text() -> Metrics {
        Metrics(
            [
                r#"apiserver_admission_webhook_admission_duration_seconds_bucket{name="workloads.lifecycle-operator.io",operation="CREATE",rejected="false",type="admit",le="0.005"} 2"#,
                r#"apiserver_admission_webhook_admission_duration_seconds_bucket{name="workloads.lifecycle-operator.io",operation="CREATE",rejected="false",type="admit",le="0.025"} 8"#,
                r#"apiserver_admission_webhook_admission_duration_seconds_bucket{name="workloads.lifecycle-operator.io",operation="CREATE",rejected="false",type="admit",le="+Inf"} 10"#,
                r#"apiserver_admission_webhook_admission_duration_seconds_bucket{name="other.example.com",operation="CREATE",rejected="false",type="admit",le="0.005"} 100"#,
                r#"apiserver_admission_webhook_admission_duration_seconds_bucket{name="workloads.lifecycle-operator.io",operation="UPDATE",rejected="false",type="admit",le="0.005"} 50"#,
            ]
            .join("\n"),
        )
    }

    #[test]
    fn the_series_is_picked_by_its_labels() {
        let b = text().buckets(&CALLS);
        assert_eq!(
            b.values().copied().collect::<Vec<_>>(),
            vec![2.0, 8.0, 10.0]
        );
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket_as_prometheus_does() {
        let h = text().delta(&Metrics(String::new()), &CALLS);
        assert_eq!(h.count(), 10.0);
        // Rank 5 of 10: the second bucket (2 below, 6 inside), half way.
        assert!((h.quantile(0.5).unwrap() - 0.015).abs() < 1e-12);
        // Rank 9.9: in +Inf, so the highest finite bound.
        assert_eq!(h.quantile(0.99), Some(0.025));
        assert_eq!(Histogram(BTreeMap::new()).quantile(0.5), None);
    }
}
