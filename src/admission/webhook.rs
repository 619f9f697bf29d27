//! The webhook's HTTP side: `POST /mutate` takes an AdmissionReview and
//! answers it from the caches (`review`). A review that does not parse gets
//! a 400; everything else an answer, allowed.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use tracing::{debug, info};

use crate::admission::review::{self, Caches, Outcome};
use crate::admission::server::BODY_LIMIT;
use crate::apply::neighbours::Neighbours;
use crate::apply::policies::Policies;
use crate::runtime::metrics::Metrics;
use crate::text;

pub struct Webhook {
    pub policies: Policies,
    /// Its own index: the controller's lives only on the leader.
    pub neighbours: Neighbours,
    pub metrics: Arc<Metrics>,
}

pub fn router(webhook: Arc<Webhook>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(webhook)
}

async fn mutate(State(w): State<Arc<Webhook>>, body: Bytes) -> Response {
    let request = serde_json::from_slice::<AdmissionReview<DynamicObject>>(&body)
        .map_err(|e| e.to_string())
        .and_then(|r| {
            let req: Result<AdmissionRequest<DynamicObject>, _> = r.try_into();
            req.map_err(|e| e.to_string())
        });
    let req = match request {
        Ok(req) => req,
        Err(e) => {
            w.metrics.count_admission("unreadable");
            // serde's message can quote the input: bounded.
            let why = text::bounded(&e, text::FAILURE_MESSAGE);
            return (
                StatusCode::BAD_REQUEST,
                format!("not an AdmissionReview request: {why}"),
            )
                .into_response();
        }
    };
    let caches = Caches {
        policies: &w.policies,
        neighbours: &w.neighbours,
    };
    let (response, outcome) = review::review(&caches, &req, Timestamp::now());
    let label = match &outcome {
        Outcome::Mutated(by) => {
            info!(kind = %req.kind.kind, namespace = ?req.namespace, name = %req.name, ?by, "hooks added at admission");
            "mutated"
        }
        Outcome::Unchanged => "unchanged",
        Outcome::Ignored => "ignored",
    };
    debug!(uid = %req.uid, outcome = label, "admission review");
    w.metrics.count_admission(label);
    let body = serde_json::to_vec(&response.into_review()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::fixtures;
    use axum::body::Body;
    use http::Request;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    fn webhook() -> Arc<Webhook> {
        Arc::new(Webhook {
            policies: fixtures::policies(&[], &[], &[("ns", json!({}))]),
            neighbours: Neighbours::default(),
            metrics: Arc::new(Metrics::default()),
        })
    }

    async fn post(w: &Arc<Webhook>, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
        let r = router(w.clone())
            .oneshot(Request::post("/mutate").body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, bytes.to_vec())
    }

    #[tokio::test]
    async fn a_review_is_answered_and_garbage_refused() {
        let w = webhook();
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "r-1", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": "web", "namespace": "ns", "operation": "CREATE", "userInfo": {},
            "object": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}}});
        let (status, body) = post(&w, serde_json::to_vec(&review).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["response"]["uid"], "r-1");
        assert_eq!(answer["response"]["allowed"], true);
        for garbage in [
            b"{".to_vec(),
            b"\xff\xfe".to_vec(),
            br#"{"kind": "AdmissionReview"}"#.to_vec(),
        ] {
            let (status, _) = post(&w, garbage).await;
            assert_eq!(status, StatusCode::BAD_REQUEST);
        }
        // A long string where an object belongs: the refusal quotes it, bounded.
        let long = format!(
            r#"{{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": "{}"}}"#,
            "é".repeat(100_000)
        );
        let (status, body) = post(&w, long.into_bytes()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.len() < 1200, "{} bytes", body.len());
        assert!(String::from_utf8(body).is_ok());
        let (status, _) = post(&w, vec![b' '; BODY_LIMIT + 1]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let metrics = w.metrics.render();
        assert!(
            metrics.contains(r#"admission_reviews_total{outcome="unchanged"} 1"#),
            "{metrics}"
        );
        assert!(
            metrics.contains(r#"admission_reviews_total{outcome="unreadable"} 4"#),
            "{metrics}"
        );
    }
}
