//! `certs::ensure` against a `tower-test` mock API server (the style of
//! `reconcile::faults`): which requests it makes, in which order, and what
//! it does with a lost race.

use std::time::{Duration, SystemTime};

use http::{Request, Response, StatusCode};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use super::certs::{self, Bundle, CA_CRT, Renewal, Sans};

type ApiServer = Handle<Request<Body>, Response<Body>>;

const SECRET: &str = "/api/v1/namespaces/ops/secrets/webhook-tls";
const SECRETS: &str = "/api/v1/namespaces/ops/secrets";
const CONFIG: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/lifecycle-operator";

fn sans() -> Sans {
    Sans::for_service("webhook", "ops")
}

/// `ensure` on its own task, against a mock API server.
fn run() -> (
    tokio::task::JoinHandle<Result<Bundle, certs::Error>>,
    ApiServer,
) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let task = tokio::spawn(async move {
        certs::ensure(&client, "ops", "webhook-tls", "lifecycle-operator", &sans()).await
    });
    (task, handle)
}

fn respond(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn status(code: u16, reason: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                      "message": format!("injected {code}"), "reason": reason, "code": code});
    respond(StatusCode::from_u16(code).unwrap(), &body)
}

/// Answers the next request, checking its method and path; returns its body.
async fn expect(api: &mut ApiServer, method: &str, path: &str, response: Response<Body>) -> Value {
    let (req, send) = api.next_request().await.expect("a request");
    assert_eq!(req.method().as_str(), method, "{}", req.uri());
    assert_eq!(req.uri().path(), path);
    let bytes = req.into_body().collect_bytes().await.unwrap();
    send.send_response(response);
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// No request after the ones answered: `ensure` is done and has dropped its client.
async fn no_more(api: &mut ApiServer) {
    let next = tokio::time::timeout(Duration::from_secs(5), api.next_request()).await;
    assert!(next.unwrap().is_none(), "an unexpected request");
}

fn secret(bundle: &Bundle) -> Value {
    let s = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("webhook-tls".into()),
            namespace: Some("ops".into()),
            resource_version: Some("7".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(bundle.secret_data()),
        ..Default::default()
    };
    serde_json::to_value(s).unwrap()
}

fn config(ca_bundle: Option<&str>) -> Value {
    let mut cc = json!({"service": {"name": "webhook", "namespace": "ops", "path": "/mutate"}});
    if let Some(ca) = ca_bundle {
        cc["caBundle"] = serde_json::to_value(ByteString(ca.as_bytes().to_vec())).unwrap();
    }
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
           "metadata": {"name": "lifecycle-operator", "resourceVersion": "3"},
           "webhooks": [{"name": "pods.lifecycle-operator.io", "clientConfig": cc,
                         "sideEffects": "None", "admissionReviewVersions": ["v1"]}]})
}

/// The caBundle a JSON patch of the configuration sets, decoded.
fn patched_ca(patch: &Value) -> String {
    assert_eq!(patch[0]["op"], "test", "{patch}");
    assert_eq!(patch[0]["value"], "pods.lifecycle-operator.io");
    assert_eq!(patch[1]["path"], "/webhooks/0/clientConfig/caBundle");
    let bytes: ByteString = serde_json::from_value(patch[1]["value"].clone()).unwrap();
    String::from_utf8(bytes.0).unwrap()
}

/// The Secret read, answered with `body`.
async fn read_secret(api: &mut ApiServer, body: &Value) {
    expect(api, "GET", SECRET, respond(StatusCode::OK, body)).await;
}

/// The caBundle read, then patched (the reply: the config as it was).
async fn publish_ca(api: &mut ApiServer) -> Value {
    expect(api, "GET", CONFIG, respond(StatusCode::OK, &config(None))).await;
    expect(api, "PATCH", CONFIG, respond(StatusCode::OK, &config(None))).await
}

/// The Secret written with `method` at `path`, echoed back with `status`.
async fn write_secret(api: &mut ApiServer, method: &str, path: &str, status: StatusCode) -> Value {
    let (req, send) = api.next_request().await.unwrap();
    assert_eq!((req.method().as_str(), req.uri().path()), (method, path));
    let body: Value =
        serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
    send.send_response(respond(status, &body));
    body
}

fn secret_ca(body: &Value) -> String {
    let s: Secret = serde_json::from_value(body.clone()).unwrap();
    String::from_utf8(s.data.unwrap()[CA_CRT].0.clone()).unwrap()
}

#[tokio::test]
async fn an_absent_secret_is_created_after_the_ca_bundle_is_published() {
    let (task, mut api) = run();
    expect(&mut api, "GET", SECRET, status(404, "NotFound")).await;
    let patch = publish_ca(&mut api).await;
    let created = write_secret(&mut api, "POST", SECRETS, StatusCode::CREATED).await;
    let bundle = task.await.unwrap().unwrap();
    no_more(&mut api).await;
    assert_eq!(created["type"], "kubernetes.io/tls");
    assert_eq!(created["metadata"]["name"], "webhook-tls");
    assert_eq!(patched_ca(&patch), bundle.ca_bundle());
    assert_eq!(secret_ca(&created), bundle.ca_bundle());
    assert_eq!(
        certs::renewal(&bundle, &sans(), SystemTime::now()),
        Renewal::Keep
    );
}

#[tokio::test]
async fn a_valid_secret_and_published_ca_are_not_written() {
    let bundle = Bundle::generate(&sans(), SystemTime::now()).unwrap();
    let (task, mut api) = run();
    read_secret(&mut api, &secret(&bundle)).await;
    let published = config(Some(&bundle.ca_bundle()));
    expect(&mut api, "GET", CONFIG, respond(StatusCode::OK, &published)).await;
    assert_eq!(task.await.unwrap().unwrap(), bundle);
    no_more(&mut api).await;
}

#[tokio::test]
async fn a_lost_create_race_reads_the_winners_secret() {
    let theirs = Bundle::generate(&sans(), SystemTime::now()).unwrap();
    let (task, mut api) = run();
    expect(&mut api, "GET", SECRET, status(404, "NotFound")).await;
    expect(
        &mut api,
        "GET",
        CONFIG,
        respond(StatusCode::OK, &config(None)),
    )
    .await;
    let ours = patched_ca(
        &expect(
            &mut api,
            "PATCH",
            CONFIG,
            respond(StatusCode::OK, &config(None)),
        )
        .await,
    );
    expect(&mut api, "POST", SECRETS, status(409, "AlreadyExists")).await;
    read_secret(&mut api, &secret(&theirs)).await;
    expect(
        &mut api,
        "GET",
        CONFIG,
        respond(StatusCode::OK, &config(Some(&ours))),
    )
    .await;
    let patch = expect(
        &mut api,
        "PATCH",
        CONFIG,
        respond(StatusCode::OK, &config(None)),
    )
    .await;
    assert_eq!(patched_ca(&patch), theirs.ca_bundle());
    assert_eq!(task.await.unwrap().unwrap(), theirs);
    no_more(&mut api).await;
}

/// A leaf for other names is reissued under the same CA, in an update that
/// carries the resourceVersion read; a conflict reads again.
#[tokio::test]
async fn a_due_leaf_is_reissued_with_optimistic_concurrency() {
    let old = Bundle::generate(&Sans::for_service("old", "ops"), SystemTime::now()).unwrap();
    let published = config(Some(&old.ca_bundle()));
    let (task, mut api) = run();
    read_secret(&mut api, &secret(&old)).await;
    expect(&mut api, "GET", CONFIG, respond(StatusCode::OK, &published)).await;
    let put = expect(&mut api, "PUT", SECRET, status(409, "Conflict")).await;
    assert_eq!(put["metadata"]["resourceVersion"], "7");
    assert_eq!(put["type"], "kubernetes.io/tls");
    assert_eq!(secret_ca(&put), old.ca_bundle());
    // Read again: still due, and this time the update goes through.
    read_secret(&mut api, &secret(&old)).await;
    expect(&mut api, "GET", CONFIG, respond(StatusCode::OK, &published)).await;
    let body = write_secret(&mut api, "PUT", SECRET, StatusCode::OK).await;
    let new = task.await.unwrap().unwrap();
    no_more(&mut api).await;
    assert_eq!(secret_ca(&body), new.ca_bundle());
    assert_eq!(new.ca_cert_pem, old.ca_cert_pem);
    assert_ne!(new.cert_pem, old.cert_pem);
    assert_eq!(certs::inspect(&new.cert_pem).unwrap().sans, sans());
}

#[tokio::test]
async fn an_unreadable_secret_is_replaced() {
    let (task, mut api) = run();
    let mut garbage = secret(&Bundle::generate(&sans(), SystemTime::now()).unwrap());
    garbage["data"]["tls.crt"] = json!("Z2FyYmFnZQ==");
    expect(&mut api, "GET", SECRET, respond(StatusCode::OK, &garbage)).await;
    let patch = publish_ca(&mut api).await;
    let body = write_secret(&mut api, "PUT", SECRET, StatusCode::OK).await;
    let bundle = task.await.unwrap().unwrap();
    no_more(&mut api).await;
    assert_eq!(patched_ca(&patch), bundle.ca_bundle());
    assert_eq!(secret_ca(&body), bundle.ca_bundle());
}

/// The chart's Secret: created empty (Opaque, no data) so that the operator
/// needs no create verb. Its first bundle is an update of it, type kept.
#[tokio::test]
async fn the_charts_empty_secret_gets_its_first_bundle_by_update() {
    let (task, mut api) = run();
    let empty = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                       "metadata": {"name": "webhook-tls", "namespace": "ops", "resourceVersion": "2"}});
    read_secret(&mut api, &empty).await;
    let patch = publish_ca(&mut api).await;
    let body = write_secret(&mut api, "PUT", SECRET, StatusCode::OK).await;
    let bundle = task.await.unwrap().unwrap();
    no_more(&mut api).await;
    assert_eq!(body["type"], "Opaque");
    assert_eq!(body["metadata"]["resourceVersion"], "2");
    assert_eq!(patched_ca(&patch), bundle.ca_bundle());
    assert_eq!(secret_ca(&body), bundle.ca_bundle());
}
