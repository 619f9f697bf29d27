//! The mock-API fault tier (the kube-rs controller-rs `fixtures.rs` pattern):
//! `reconcile` against a `tower-test` mock API server that answers with the
//! faults a real one produces. Each must end in backoff and a correct
//! status, never a panic or a hot loop. Time is paused: seconds of API
//! behaviour run in milliseconds.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::Deployment;
use kube::client::Body;
use kube::runtime::reflector;
use kube::runtime::watcher;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use super::*;
use crate::runtime::liveness::Liveness;
use crate::runtime::metrics::Metrics;
use crate::verify::observer::{LogStreams, Observer};

type ApiServer = Handle<Request<Body>, Response<Body>>;

fn policy(selector: &str) -> LifecyclePolicy {
    serde_json::from_value(json!({
        "apiVersion": "lifecycle-operator.io/v1alpha1", "kind": "LifecyclePolicy",
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "generation": 1,
                     "resourceVersion": "1", "finalizers": [FINALIZER],
                     "creationTimestamp": "2025-01-01T00:00:00Z"},
        // Immediate: these scenarios are about the write path, not the canary.
        "spec": {"selector": {"matchLabels": {"app": selector}}, "preStop": {"sleep": {"seconds": 1}},
                 "rollout": {"strategy": "Immediate"}},
    }))
    .unwrap()
}

/// A Deployment "d" labelled app=web; with `ledger`, it carries the policy's
/// preStop and the ledger and managedFields that say so.
fn deployment(ledger: bool) -> Workload {
    crate::apply::fixtures::deployment("d", ledger)
}

/// A context whose caches hold exactly `policy` and `deployment`, talking to a mock API server.
async fn context(p: &LifecyclePolicy, d: Workload) -> (Arc<Context>, ApiServer) {
    context_with(p, vec![d]).await
}

async fn context_with(p: &LifecyclePolicy, ds: Vec<Workload>) -> (Arc<Context>, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (policies, mut pw) = reflector::store();
    let mut dw = reflector::store::Writer::new(WorkloadKind::Deployment);
    let deployments = dw.as_reader();
    pw.apply_watcher_event(&watcher::Event::InitApply(p.clone()));
    pw.apply_watcher_event(&watcher::Event::InitDone);
    for d in ds {
        dw.apply_watcher_event(&watcher::Event::InitApply(d));
    }
    dw.apply_watcher_event(&watcher::Event::InitDone);
    // The other kinds' caches: synced, empty.
    let mut stores = vec![(WorkloadKind::Deployment, deployments)];
    for kind in [WorkloadKind::StatefulSet, WorkloadKind::DaemonSet] {
        let mut w = reflector::store::Writer::new(kind);
        w.apply_watcher_event(&watcher::Event::Init);
        w.apply_watcher_event(&watcher::Event::InitDone);
        stores.push((kind, w.as_reader()));
    }
    let policies = crate::apply::policies::Policies::namespaced(policies);
    (mock_context(client, policies, stores), handle)
}

/// A context over these caches, talking to the mock API server behind `client`.
fn mock_context(
    client: Client,
    policies: crate::apply::policies::Policies,
    stores: Vec<(WorkloadKind, Store<Workload>)>,
) -> Arc<Context> {
    let metrics = Arc::new(Metrics::default());
    let observer = Observer::new(
        client.clone(),
        policies.clone(),
        metrics.clone(),
        LogStreams::default(),
    );
    Arc::new(Context::new(
        client,
        policies,
        Workloads(stores),
        metrics,
        observer,
        Arc::new(Liveness::new(RECONCILE_TIMEOUT, RESYNC)),
        "test".into(),
    ))
}

fn status(code: u16, reason: &str, headers: &[(&str, &str)]) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                      "message": format!("injected {code}"), "reason": reason, "code": code});
    let mut r = Response::builder().status(code);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn ok(body: Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

/// Answers the next request, checking its method and path; returns its body.
async fn expect(api: &mut ApiServer, method: &str, path: &str, response: Response<Body>) -> Value {
    let (req, send) = api.next_request().await.expect("a request");
    assert_eq!(req.method().as_str(), method, "{}", req.uri());
    assert!(
        req.uri().path().ends_with(path),
        "expected {path}, got {}",
        req.uri()
    );
    let bytes = req.into_body().collect_bytes().await.unwrap();
    send.send_response(response);
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// Answers an event POST (events are best effort, and not under test here).
async fn event(api: &mut ApiServer) {
    let (req, send) = api.next_request().await.expect("an event");
    assert!(req.uri().path().contains("/events"), "{}", req.uri());
    send.send_response(ok(
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "e", "namespace": "ns"}, "eventTime": "2025-01-01T00:00:00.000000Z"}),
    ));
}

fn writes_failed(e: &Error) -> bool {
    use kube::runtime::finalizer::Error as F;
    matches!(e, Error::Finalizer(f) if matches!(f.as_ref(), F::ApplyFailed(Error::WritesFailed(1) | Error::StaleWrites(1))))
}

fn condition(status: &Value, type_: &str) -> (String, String) {
    let c = status["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} in {status}"));
    (
        c["status"].as_str().unwrap().into(),
        c["reason"].as_str().unwrap().into(),
    )
}

/// A Deployment write the API server refuses: the status says so, and the
/// policy backs off, longer on each repeat (from `first` seconds).
async fn refused_write(response: fn() -> Response<Body>, first: u64) {
    let p = policy("web");
    let (ctx, mut api) = context(&p, deployment(false)).await;
    let server = tokio::spawn(async move {
        let mut statuses = Vec::new();
        for _ in 0..2 {
            expect(&mut api, "PATCH", "/deployments/d", response()).await;
            statuses.push(
                expect(
                    &mut api,
                    "PATCH",
                    "/lifecyclepolicies/p/status",
                    ok(serde_json::to_value(policy("web")).unwrap()),
                )
                .await,
            );
        }
        statuses
    });
    let p = Arc::new(p);
    let mut delays = Vec::new();
    for _ in 0..2 {
        let err = reconcile(p.clone(), ctx.clone()).await.unwrap_err();
        assert!(writes_failed(&err), "{err}");
        delays.push(error_policy(p.clone(), &err, ctx.clone()));
    }
    assert_eq!(
        delays,
        [first, 2 * first].map(|s| Action::requeue(Duration::from_secs(s)))
    );
    // Counted by kind, as the retry was chosen.
    let kind = if first == 1 {
        "stale_writes"
    } else {
        "writes_failed"
    };
    let line = format!("lifecycle_operator_reconcile_errors_total{{kind=\"{kind}\"}} 2");
    assert!(ctx.metrics.render().contains(&line), "{line}");
    for s in server.await.unwrap() {
        assert_eq!(
            condition(&s, "Applied"),
            ("False".into(), "PatchFailed".into())
        );
        assert_eq!(s["status"]["workloads"][0]["state"], "Error");
    }
}

#[tokio::test]
async fn conflict_409_backs_off_and_reports_the_failure() {
    // Another writer got there first: retried soon, still with backoff.
    refused_write(|| status(409, "Conflict", &[]), 1).await;
}

/// A first claim on a copy that still shows a deleted policy's ledger (its
/// release may have landed since) records originals read from that copy:
/// its apply carries the cached resourceVersion, and the API server's 409
/// (the Deployment changed since) means a new plan soon, from the newer copy.
#[tokio::test]
async fn a_first_claim_is_applied_only_on_the_version_it_was_planned_from() {
    let p = policy("web");
    let mut d = deployment(false);
    d.metadata.resource_version = Some("41".into());
    d.metadata.annotations = Some(
        [(
            "lifecycle-operator.io/gone".to_string(),
            r#"{"policy":"gone","owned":{"terminationGracePeriodSeconds":30}}"#.to_string(),
        )]
        .into(),
    );
    let (ctx, mut api) = context(&p, d).await;
    let server = tokio::spawn(async move {
        let body = expect(
            &mut api,
            "PATCH",
            "/deployments/d",
            status(409, "Conflict", &[]),
        )
        .await;
        expect(
            &mut api,
            "PATCH",
            "/lifecyclepolicies/p/status",
            ok(serde_json::to_value(policy("web")).unwrap()),
        )
        .await;
        body
    });
    let p = Arc::new(p);
    let err = reconcile(p.clone(), ctx.clone()).await.unwrap_err();
    let body = server.await.unwrap();
    assert_eq!(body["metadata"]["resourceVersion"], "41", "{body}");
    assert_eq!(
        error_policy(p, &err, ctx),
        Action::requeue(Duration::from_secs(1))
    );
}

#[tokio::test]
async fn server_error_500_backs_off_and_reports_the_failure() {
    refused_write(|| status(500, "InternalError", &[]), 5).await;
}

#[tokio::test]
async fn throttled_429_backs_off_and_reports_the_failure() {
    refused_write(
        || status(429, "TooManyRequests", &[("Retry-After", "3")]),
        5,
    )
    .await;
}

/// A release whose JSON-patch `test` fails (the ledger or the container
/// moved since it was read) changes nothing, and is retried with backoff.
#[tokio::test]
async fn failed_json_patch_test_422_leaves_the_deployment_and_backs_off() {
    let p = policy("other"); // no longer selects "d", which carries its hook
    let (ctx, mut api) = context(&p, deployment(true)).await;
    let server = tokio::spawn(async move {
        let sent = expect(
            &mut api,
            "PATCH",
            "/deployments/d",
            status(422, "Invalid", &[]),
        )
        .await;
        let status = expect(
            &mut api,
            "PATCH",
            "/lifecyclepolicies/p/status",
            ok(serde_json::to_value(policy("web")).unwrap()),
        )
        .await;
        (sent, status)
    });
    let p = Arc::new(p);
    let err = reconcile(p.clone(), ctx.clone()).await.unwrap_err();
    assert!(writes_failed(&err), "{err}");
    assert_eq!(
        error_policy(p, &err, ctx),
        Action::requeue(Duration::from_secs(1))
    );
    let (sent, status) = server.await.unwrap();
    // The release was guarded by the ledger it was planned from.
    assert_eq!(sent[0]["op"], "test");
    assert_eq!(
        sent[0]["path"],
        "/metadata/annotations/lifecycle-operator.io~1p"
    );
    assert_eq!(
        condition(&status, "Applied"),
        ("False".into(), "PatchFailed".into())
    );
}

/// A call that never answers: the reconcile is cut off at its timeout and
/// retried with backoff instead of wedging the policy.
#[tokio::test(start_paused = true)]
async fn a_call_that_never_answers_times_out_into_backoff() {
    let p = policy("web");
    let (ctx, mut api) = context(&p, deployment(false)).await;
    let server = tokio::spawn(async move {
        let (_req, send) = api.next_request().await.expect("a request");
        // Hold the request open, unanswered, until the client gives up on it.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(send);
    });
    let p = Arc::new(p);
    let started = tokio::time::Instant::now();
    let err = reconcile(p.clone(), ctx.clone()).await.unwrap_err();
    assert!(matches!(err, Error::Timeout), "{err}");
    assert_eq!(started.elapsed(), RECONCILE_TIMEOUT);
    assert_eq!(
        error_policy(p, &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    // Nothing is left in flight for the health check to worry about.
    assert!(ctx.liveness.check(std::time::Instant::now()).is_ok());
    server.abort();
}

/// A damaged ledger is rebuilt from managedFields, with an event naming the
/// Deployment and a status that says so.
#[tokio::test]
async fn a_garbage_ledger_is_reported_and_rebuilt() {
    let p = policy("web");
    let mut d = deployment(true);
    d.annotations_mut()
        .insert("lifecycle-operator.io/p".into(), "garbage".into());
    let (ctx, mut api) = context(&p, d).await;
    let server = tokio::spawn(async move {
        let (req, send) = api.next_request().await.expect("an event");
        assert!(req.uri().path().contains("/events"));
        let ev: Value =
            serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
        send.send_response(ok(json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "ns"}, "eventTime": "2025-01-01T00:00:00.000000Z"})));
        let applied = expect(
            &mut api,
            "PATCH",
            "/deployments/d",
            ok(serde_json::to_value(deployment(false)).unwrap()),
        )
        .await;
        let status = expect(
            &mut api,
            "PATCH",
            "/lifecyclepolicies/p/status",
            ok(serde_json::to_value(policy("web")).unwrap()),
        )
        .await;
        (ev, applied, status)
    });
    reconcile(Arc::new(p), ctx).await.unwrap();
    let (ev, applied, status) = server.await.unwrap();
    assert_eq!(ev["reason"], "LedgerDamaged");
    assert!(
        ev["note"].as_str().unwrap().contains("Deployment d:"),
        "{ev}"
    );
    assert_eq!(ev["related"]["name"], "d");
    let ledger: Value = serde_json::from_str(
        applied["metadata"]["annotations"]["lifecycle-operator.io/p"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ledger["unknown"], json!(["c/preStop"]));
    assert_eq!(
        condition(&status, "LedgerIntact"),
        ("False".into(), "LedgerDamaged".into())
    );
    assert_eq!(status["status"]["workloads"][0]["state"], "LedgerDamaged");
}

/// Releasing a slot whose original is unknown removes the hook, says so in
/// an event, and leaves nothing owned.
#[tokio::test]
async fn an_unknown_original_is_removed_on_release() {
    let p = policy("other");
    let mut d = deployment(true);
    d.annotations_mut().insert(
        "lifecycle-operator.io/p".into(),
        r#"{"policy":"p","owned":{"c/preStop":null},"unknown":["c/preStop"]}"#.into(),
    );
    let (ctx, mut api) = context(&p, d).await;
    let server = tokio::spawn(async move {
        let (req, send) = api.next_request().await.expect("the release");
        let manager = req.uri().query().unwrap_or_default().to_string();
        let ops: Value =
            serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
        send.send_response(ok(serde_json::to_value(deployment(false)).unwrap()));
        let (req, send) = api.next_request().await.expect("an event");
        let ev: Value =
            serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
        send.send_response(ok(json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "ns"}, "eventTime": "2025-01-01T00:00:00.000000Z"})));
        event(&mut api).await; // DeploymentPatched
        let status = expect(
            &mut api,
            "PATCH",
            "/lifecyclepolicies/p/status",
            ok(serde_json::to_value(policy("web")).unwrap()),
        )
        .await;
        (manager, ops, ev, status)
    });
    reconcile(Arc::new(p), ctx).await.unwrap();
    let (manager, ops, ev, status) = server.await.unwrap();
    assert!(
        manager.contains("fieldManager=lifecycle-operator-restore"),
        "{manager}"
    );
    let ops = ops.as_array().unwrap();
    assert!(
        ops.iter()
            .any(|o| o["op"] == "remove"
                && o["path"] == "/spec/template/spec/containers/0/lifecycle")
    );
    assert!(
        ops.iter().any(|o| o["op"] == "remove"
            && o["path"] == "/metadata/annotations/lifecycle-operator.io~1p")
    );
    assert_eq!(ev["reason"], "RestoreIncomplete");
    let report = &status["status"]["workloads"][0];
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("could not be restored"),
        "{report}"
    );
}

/// A watch that ends (as the API server ends every watch sooner or later)
/// is resumed; one that fails is retried with backoff, not in a hot loop.
#[tokio::test(start_paused = true)]
async fn a_watch_that_ends_is_resumed_and_failures_back_off() {
    let (service, mut api) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let stream = watcher(
        Api::<Deployment>::all(client),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff();
    let driver = tokio::spawn(stream.for_each(|_| async {}));
    let list = || {
        ok(
            json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {"resourceVersion": "5"}, "items": []}),
        )
    };
    // List, then a watch whose stream ends at once: the watcher watches again.
    let (req, send) = api.next_request().await.unwrap();
    assert!(!req.uri().query().unwrap_or_default().contains("watch=true"));
    send.send_response(list());
    let (req, send) = api.next_request().await.unwrap();
    assert!(req.uri().query().unwrap().contains("watch=true"));
    send.send_response(ok(json!(null)).map(|_| Body::empty()));
    let (req, send) = api.next_request().await.unwrap();
    assert!(
        req.uri().query().unwrap().contains("watch=true"),
        "{}",
        req.uri()
    );
    // Now every call fails: the retries spread out instead of spinning.
    send.send_response(status(500, "InternalError", &[]));
    let started = tokio::time::Instant::now();
    let mut times = Vec::new();
    for _ in 0..4 {
        let (_req, send) = api.next_request().await.unwrap();
        times.push(started.elapsed());
        send.send_response(status(500, "InternalError", &[]));
    }
    assert!(
        times.windows(2).all(|w| w[1] > w[0]),
        "retries must wait: {times:?}"
    );
    assert!(times[3] >= Duration::from_millis(1500), "{times:?}");
    driver.abort();
}

/// Deleting a policy right after it applied: the cache may not show the
/// hook yet. Cleanup reads the Deployments afresh, so the hook is handed
/// back before the finalizer goes (a stale cache once orphaned it).
#[tokio::test]
async fn cleanup_reads_deployments_afresh_before_letting_go() {
    let mut p = policy("web");
    p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    // The cache still shows the Deployment as it was before the apply.
    let (ctx, mut api) = context(&p, deployment(false)).await;
    let server = tokio::spawn(async move {
        let fresh = json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {},
                           "items": [serde_json::to_value(deployment(true)).unwrap()]});
        expect(&mut api, "GET", "/namespaces/ns/deployments", ok(fresh)).await;
        // Every kind is read: the policy may hold slots on any.
        for kind in ["statefulsets", "daemonsets"] {
            let empty =
                json!({"apiVersion": "apps/v1", "kind": "List", "metadata": {}, "items": []});
            expect(
                &mut api,
                "GET",
                &format!("/namespaces/ns/{kind}"),
                ok(empty),
            )
            .await;
        }
        let ops = expect(
            &mut api,
            "PATCH",
            "/deployments/d",
            ok(serde_json::to_value(deployment(false)).unwrap()),
        )
        .await;
        event(&mut api).await; // DeploymentPatched
        let unfinalize = expect(
            &mut api,
            "PATCH",
            "/lifecyclepolicies/p",
            ok(serde_json::to_value(policy("web")).unwrap()),
        )
        .await;
        (ops, unfinalize)
    });
    reconcile(Arc::new(p), ctx).await.unwrap();
    let (ops, unfinalize) = server.await.unwrap();
    let ops = ops.as_array().unwrap();
    assert!(
        ops.iter()
            .any(|o| o["op"] == "remove"
                && o["path"] == "/spec/template/spec/containers/0/lifecycle"),
        "{ops:?}"
    );
    assert!(
        unfinalize.to_string().contains("finalizers"),
        "{unfinalize}"
    );
}

/// Twenty Deployments: sixteen writes go out at once, the rest as answers
/// come back; one refused write fails only its own Deployment, and one
/// event names all the others.
#[tokio::test(start_paused = true)]
async fn writes_go_out_in_parallel_and_fail_one_by_one() {
    let p = policy("web");
    let ds = (0..20)
        .map(|i| {
            let mut d = deployment(false);
            d.metadata.name = Some(format!("d{i:02}"));
            d.metadata.uid = Some(format!("uid{i}"));
            d
        })
        .collect();
    let (ctx, mut api) = context_with(&p, ds).await;
    let server = tokio::spawn(async move {
        let mut pending = Vec::new();
        while let Ok(Some((req, send))) =
            tokio::time::timeout(Duration::from_secs(1), api.next_request()).await
        {
            assert_eq!(req.method(), "PATCH", "{}", req.uri());
            pending.push((req.uri().path().to_string(), send));
        }
        // Nothing answered yet: exactly the executor's limit is in flight.
        let in_flight = pending.len();
        let mut paths = Vec::new();
        let mut next = Vec::new();
        loop {
            for (path, send) in pending.drain(..) {
                send.send_response(if path.ends_with("/d03") {
                    status(500, "InternalError", &[])
                } else {
                    ok(serde_json::to_value(deployment(false)).unwrap())
                });
                paths.push(path);
            }
            match tokio::time::timeout(Duration::from_secs(1), api.next_request()).await {
                Ok(Some((req, send))) if req.uri().path().contains("/deployments/") => {
                    pending.push((req.uri().path().to_string(), send));
                }
                Ok(Some((req, send))) => {
                    next.push(req.uri().path().to_string());
                    let bytes = req.into_body().collect_bytes().await.unwrap();
                    let body: Value = serde_json::from_slice(&bytes).unwrap();
                    if next.last().unwrap().contains("/events") {
                        send.send_response(ok(json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                            "metadata": {"name": "e", "namespace": "ns"}, "eventTime": "2025-01-01T00:00:00.000000Z"})));
                        next.push(body["note"].as_str().unwrap().to_string());
                    } else {
                        send.send_response(ok(serde_json::to_value(policy("web")).unwrap()));
                        next.push(body.to_string());
                        break;
                    }
                }
                _ => break,
            }
        }
        (in_flight, paths, next)
    });
    let err = reconcile(Arc::new(p), ctx).await.unwrap_err();
    assert!(writes_failed(&err), "{err}");
    let (in_flight, mut paths, next) = server.await.unwrap();
    assert_eq!(in_flight, 16, "writes in flight at once");
    paths.sort();
    let expected: Vec<String> = (0..20)
        .map(|i| format!("/apis/apps/v1/namespaces/ns/deployments/d{i:02}"))
        .collect();
    assert_eq!(paths, expected, "each Deployment written once");
    // One summary event naming the 19 written, then the status.
    assert!(next[0].ends_with("/events"), "{next:?}");
    let note = &next[1];
    assert!(
        note.starts_with("set c/preStop on 19 Deployments"),
        "{note}"
    );
    assert!(
        note.contains("d00, d01, d02, d04") && !note.contains("d03"),
        "{note}"
    );
    let status: Value = serde_json::from_str(&next[3]).unwrap();
    assert_eq!(status["status"]["patchedWorkloads"], 19, "{status}");
    let failed: Vec<&Value> = status["status"]["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["state"] == "Error")
        .collect();
    assert_eq!(failed.len(), 1, "{status}");
    assert_eq!(failed[0]["name"], "d03");
}

/// Answers every request until none comes for a second, `ok` with the
/// object asked for (422 for status writes when `refuse_status`); returns
/// what was asked, in order.
async fn answer_all(mut api: ApiServer, refuse_status: bool) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    while let Ok(Some((req, send))) =
        tokio::time::timeout(Duration::from_secs(1), api.next_request()).await
    {
        let path = req.uri().path().to_string();
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        send.send_response(if path.contains("/events") {
            ok(json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"name": "e", "namespace": "ns"}, "eventTime": "2025-01-01T00:00:00.000000Z"}))
        } else if path.ends_with("/status") && refuse_status {
            status(422, "Invalid", &[])
        } else if path.contains("/lifecyclepolicies/") {
            ok(serde_json::to_value(policy("web")).unwrap())
        } else {
            ok(serde_json::to_value(deployment(false)).unwrap())
        });
        seen.push((path, body));
    }
    seen
}

/// The default rollout: of three matched Deployments only the canary is
/// written; a RolloutWave event names it and the status says who waits.
#[tokio::test(start_paused = true)]
async fn a_new_policy_patches_only_its_canary() {
    let mut p = policy("web");
    p.spec.rollout = Default::default();
    let ds = (0..3)
        .map(|i| {
            let mut d = deployment(false);
            d.metadata.name = Some(format!("d{i}"));
            d
        })
        .collect();
    let (ctx, api) = context_with(&p, ds).await;
    let server = tokio::spawn(answer_all(api, false));
    reconcile(Arc::new(p), ctx).await.unwrap();
    let seen = server.await.unwrap();
    let writes: Vec<&str> = seen
        .iter()
        .filter(|(p, _)| p.contains("/deployments/"))
        .map(|(p, _)| p.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(writes, ["d0"], "only the canary");
    let wave = seen
        .iter()
        .find(|(_, b)| b["reason"] == "RolloutWave")
        .expect("a RolloutWave event");
    assert_eq!(wave.1["note"], "canary: Deployment/d0");
    assert_eq!(wave.1["related"]["name"], "d0");
    let (_, status) = seen.last().unwrap();
    let r = &status["status"]["rollout"];
    assert_eq!(r["phase"], "Canary", "{status}");
    assert_eq!(r["waitingOn"], json!(["Deployment/d0"]));
    assert_eq!(
        (r["pending"].as_i64(), r["waves"].as_i64()),
        (Some(3), Some(1))
    );
    let held: Vec<&Value> = status["status"]["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "Pending")
        .collect();
    assert_eq!(held.len(), 2, "{status}");
    assert_eq!(held[0]["message"], "waiting for the canary");
}

/// Decide, record, then act: the canary's wave is written to the status
/// before the canary is patched; a refused status write (422) stops the
/// reconcile there, with backoff and no workload write.
#[tokio::test(start_paused = true)]
async fn a_refused_rollout_record_patches_nothing() {
    for refuse in [false, true] {
        let mut p = policy("web");
        p.spec.rollout = Default::default();
        let (ctx, api) = context(&p, deployment(false)).await;
        let server = tokio::spawn(answer_all(api, refuse));
        let result = reconcile(Arc::new(p.clone()), ctx.clone()).await;
        let seen = server.await.unwrap();
        let first_status = seen.iter().position(|(p, _)| p.ends_with("/status"));
        let first_write = seen.iter().position(|(p, _)| p.contains("/deployments/"));
        if refuse {
            let e = result.expect_err("the reconcile stops");
            let text = e.to_string();
            assert!(
                text.contains("422 Invalid") && text.contains("no workload was changed"),
                "{text}"
            );
            assert_eq!(
                first_write, None,
                "no workload write after a refused record"
            );
            let action = error_policy(Arc::new(p), &e, ctx);
            assert_eq!(action, Action::requeue(Duration::from_secs(5)), "backoff");
        } else {
            result.unwrap();
            let (status, write) = (first_status.unwrap(), first_write.unwrap());
            assert!(status < write, "the wave is recorded first: {seen:?}");
            assert_eq!(seen[status].1[0]["path"], "/status", "{:?}", seen[status].1);
            assert_eq!(
                seen[status].1[0]["value"]["rollout"]["waitingOn"],
                json!(["Deployment/d"])
            );
        }
    }
}

/// A context whose caches hold the cluster policy `c`, `namespaces` (name,
/// labels) and `ds`, talking to a mock API server.
async fn cluster_context(
    c: &ClusterLifecyclePolicy,
    namespaces: &[(&str, Value)],
    ds: Vec<Workload>,
) -> (Arc<Context>, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let policies = crate::apply::fixtures::policies(&[], std::slice::from_ref(c), namespaces);
    let mut stores = Vec::new();
    for kind in WorkloadKind::ALL {
        let mine = ds.iter().filter(|d| d.kind == kind).cloned();
        let mut w = reflector::store::Writer::new(kind);
        w.apply_watcher_event(&watcher::Event::Init);
        for d in mine {
            w.apply_watcher_event(&watcher::Event::InitApply(d));
        }
        w.apply_watcher_event(&watcher::Event::InitDone);
        stores.push((kind, w.as_reader()));
    }
    (mock_context(client, policies, stores), handle)
}

fn in_namespace(ns: &str) -> Workload {
    let mut d = deployment(false);
    d.metadata.namespace = Some(ns.into());
    d.metadata.uid = Some(format!("d-{ns}"));
    d
}

/// One cluster policy over two labelled namespaces and one unlabelled, with
/// maxConcurrentRollouts 1 counted across all of them: one Deployment is
/// patched (under the cluster policy's own field manager), the other waits
/// for the slot, the unlabelled namespace's is never touched, and the
/// status goes to the ClusterLifecyclePolicy with its namespace counts and
/// workloads named with their namespaces.
#[tokio::test]
async fn a_cluster_policy_counts_rollout_slots_across_namespaces() {
    let c = crate::apply::fixtures::cluster_policy(
        "drain",
        json!({"metadata": {"finalizers": [FINALIZER], "resourceVersion": "1"},
               "spec": {"maxConcurrentRollouts": 1, "rollout": {"strategy": "Immediate"}}}),
    );
    let namespaces = [
        ("a", json!({"team": "a"})),
        ("b", json!({"team": "a"})),
        ("c", json!({})),
        ("kube-system", json!({"team": "a"})),
    ];
    let ds = vec![in_namespace("a"), in_namespace("b"), in_namespace("c")];
    let (ctx, mut api) = cluster_context(&c, &namespaces, ds).await;
    let answer = serde_json::to_value(&c).unwrap();
    let server = tokio::spawn(async move {
        let (req, send) = api.next_request().await.expect("the write");
        let uri = req.uri().to_string();
        assert!(uri.contains("/namespaces/a/deployments/d"), "{uri}");
        assert!(
            uri.contains("fieldManager=lifecycle-operator%2Fcluster_drain"),
            "{uri}"
        );
        send.send_response(ok(serde_json::to_value(in_namespace("a")).unwrap()));
        let (req, send) = api.next_request().await.expect("an event");
        let path = req.uri().path().to_string();
        let body: Value =
            serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
        assert_eq!(path, "/apis/events.k8s.io/v1/namespaces/default/events");
        assert_eq!(body["regarding"]["kind"], "ClusterLifecyclePolicy");
        assert_eq!(body["related"]["namespace"], "a");
        send.send_response(ok(body));
        expect(
            &mut api,
            "PATCH",
            "/apis/lifecycle-operator.io/v1alpha1/clusterlifecyclepolicies/drain/status",
            ok(answer),
        )
        .await
    });
    reconcile(Arc::new(c), ctx).await.unwrap();
    let status = server.await.unwrap();
    assert_eq!(status["kind"], "ClusterLifecyclePolicy");
    let s = &status["status"];
    assert_eq!(
        s["namespaces"],
        json!({"matched": 2, "patched": 1, "protected": ["kube-system"]})
    );
    assert_eq!(
        (
            s["matchedWorkloads"].as_i64(),
            s["patchedWorkloads"].as_i64()
        ),
        (Some(2), Some(1))
    );
    let reports: Vec<(String, String)> = s["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["namespace"].as_str().unwrap().into(),
                w["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        reports,
        [
            ("b".into(), "Pending".into()),
            ("a".into(), "Patched".into())
        ]
    );
}
