//! `lifecycle-operator release-all`: deletes every LifecyclePolicy and
//! ClusterLifecyclePolicy in the cluster and waits until the running operator has handed their hooks back
//! and dropped their finalizers. The Helm chart runs it as a pre-delete hook,
//! so that `helm uninstall` leaves no hook on any workload and no policy
//! hanging on a finalizer nobody will remove.
//!
//! The decisions (what to delete, what to report) are pure; `release_all`
//! is the I/O around them.

use std::time::Duration;

use anyhow::Context as _;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PartialObjectMeta};
use tracing::info;

use crate::api::cluster::ClusterLifecyclePolicy;
use crate::api::identity::PolicyId;
use crate::api::types::LifecyclePolicy;

/// Each API call's bound: a call that never answers must not wedge uninstall.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How many names a progress or error message lists before "and N more".
const NAMES_SHOWN: usize = 10;

/// One policy still in the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remaining {
    pub id: PolicyId,
    /// Already being deleted (deletionTimestamp set): waiting for its finalizer.
    pub deleting: bool,
}

impl Remaining {
    fn from_meta<K>(m: &PartialObjectMeta<K>) -> Self {
        let name = m.metadata.name.clone().unwrap_or_default();
        Remaining {
            id: match m.metadata.namespace.clone() {
                Some(namespace) => PolicyId::Namespaced { namespace, name },
                None => PolicyId::Cluster { name },
            },
            deleting: m.metadata.deletion_timestamp.is_some(),
        }
    }

    /// "LifecyclePolicy web/a", "ClusterLifecyclePolicy drain".
    fn describe(&self) -> String {
        match &self.id {
            PolicyId::Namespaced { .. } => format!("LifecyclePolicy {}", self.id),
            PolicyId::Cluster { .. } => format!("ClusterLifecyclePolicy {}", self.id),
        }
    }
}

/// The policies that still need a delete request: those not already going.
pub fn to_delete(remaining: &[Remaining]) -> Vec<&Remaining> {
    remaining.iter().filter(|r| !r.deleting).collect()
}

/// "2 policies left: web/a, web/b", bounded in length.
pub fn describe(remaining: &[Remaining]) -> String {
    let mut names: Vec<String> = remaining
        .iter()
        .take(NAMES_SHOWN)
        .map(|r| r.id.to_string())
        .collect();
    if remaining.len() > NAMES_SHOWN {
        names.push(format!("and {} more", remaining.len() - NAMES_SHOWN));
    }
    let noun = if remaining.len() == 1 {
        "policy"
    } else {
        "policies"
    };
    format!("{} {noun} left: {}", remaining.len(), names.join(", "))
}

async fn bounded<T, E>(what: &str, call: impl Future<Output = Result<T, E>>) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .with_context(|| format!("{what}: no answer within {CALL_TIMEOUT:?}"))?
        .with_context(|| what.to_string())
}

/// Every policy of both kinds.
async fn list(client: &Client) -> anyhow::Result<Vec<Remaining>> {
    let params = ListParams::default();
    let namespaced = Api::<LifecyclePolicy>::all(client.clone());
    let namespaced = bounded(
        "listing LifecyclePolicies",
        namespaced.list_metadata(&params),
    )
    .await?;
    let cluster = Api::<ClusterLifecyclePolicy>::all(client.clone());
    let cluster = bounded(
        "listing ClusterLifecyclePolicies",
        cluster.list_metadata(&params),
    )
    .await?;
    let mut out: Vec<Remaining> = namespaced.items.iter().map(Remaining::from_meta).collect();
    out.extend(cluster.items.iter().map(Remaining::from_meta));
    Ok(out)
}

async fn delete(client: &Client, r: &Remaining) -> anyhow::Result<()> {
    let what = format!("deleting {}", r.describe());
    let params = DeleteParams::default();
    match &r.id {
        PolicyId::Namespaced { namespace, name } => {
            let api = Api::<LifecyclePolicy>::namespaced(client.clone(), namespace);
            bounded(&what, api.delete(name, &params)).await?;
        }
        PolicyId::Cluster { name } => {
            let api = Api::<ClusterLifecyclePolicy>::all(client.clone());
            bounded(&what, api.delete(name, &params)).await?;
        }
    }
    Ok(())
}

/// Deletes every policy and waits, up to `timeout`, until none is left.
/// Returns how many policies there were. Policies created meanwhile are
/// deleted too. Fails, naming what is left, if the operator does not release
/// them in time (typically: it is not running).
pub async fn release_all(client: Client, timeout: Duration) -> anyhow::Result<usize> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = std::collections::BTreeSet::new();
    let mut last_report = tokio::time::Instant::now();
    loop {
        let remaining = list(&client).await?;
        if remaining.is_empty() {
            info!(policies = seen.len(), "every policy released");
            return Ok(seen.len());
        }
        for r in &remaining {
            seen.insert(r.id.clone());
        }
        for r in to_delete(&remaining) {
            match delete(&client, r).await {
                Ok(()) => {
                    info!(policy = %r.id, "deleted; waiting for the operator to hand its hooks back")
                }
                // Gone meanwhile: what we wanted.
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{} after {timeout:?}: the operator did not release them (is it running?). \
                 Their hooks stay on the workloads until it does.",
                describe(&remaining)
            );
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            info!("{}", describe(&remaining));
            last_report = tokio::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn is_not_found(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<kube::Error>(), Some(kube::Error::Api(s)) if s.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, deleting: bool) -> Remaining {
        Remaining {
            id: PolicyId::Namespaced {
                namespace: "web".into(),
                name: name.into(),
            },
            deleting,
        }
    }

    #[test]
    fn deletes_only_policies_not_already_going() {
        let all = [r("a", false), r("b", true), r("c", false)];
        let names: Vec<_> = to_delete(&all).iter().map(|r| r.id.name()).collect();
        assert_eq!(names, ["a", "c"]);
        assert!(to_delete(&[r("x", true)]).is_empty());
    }

    #[test]
    fn describes_what_is_left_in_bounded_length() {
        assert_eq!(describe(&[r("a", true)]), "1 policy left: web/a");
        assert_eq!(
            describe(&[r("a", true), r("b", false)]),
            "2 policies left: web/a, web/b"
        );
        let many: Vec<_> = (0..25).map(|i| r(&format!("p{i}"), true)).collect();
        let d = describe(&many);
        assert!(d.starts_with("25 policies left: web/p0, "), "{d}");
        assert!(d.ends_with("web/p9, and 15 more"), "{d}");
    }
}

/// `release_all` against a mock API server (tower-test): the requests it
/// sends, and what it does with 404s, 500s and policies that never go.
#[cfg(test)]
mod mock_api {
    use super::*;
    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{Value, json};
    use tower_test::mock::{Handle, SendResponse};

    type ApiHandle = Handle<Request<Body>, Response<Body>>;

    fn client() -> (Client, ApiHandle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "default"), handle)
    }

    fn meta(ns: &str, name: &str, deleting: bool) -> Value {
        let mut m = json!({"name": name, "finalizers": ["lifecycle-operator.io/cleanup"]});
        if !ns.is_empty() {
            m["namespace"] = json!(ns);
        }
        if deleting {
            m["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": m})
    }

    fn respond(send: SendResponse<Response<Body>>, code: StatusCode, body: Value) {
        let body = Body::from(serde_json::to_vec(&body).unwrap());
        send.send_response(Response::builder().status(code).body(body).unwrap());
    }

    /// The list of both kinds: namespaced policies, then cluster ones.
    async fn expect_lists(h: &mut ApiHandle, namespaced: Vec<Value>, cluster: Vec<Value>) {
        for (plural, items) in [
            ("lifecyclepolicies", namespaced),
            ("clusterlifecyclepolicies", cluster),
        ] {
            let (req, send) = h.next_request().await.expect("a list request");
            assert_eq!(req.method(), Method::GET);
            assert_eq!(
                req.uri().path(),
                format!("/apis/lifecycle-operator.io/v1alpha1/{plural}")
            );
            let list = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": items});
            respond(send, StatusCode::OK, list);
        }
    }

    async fn expect_list(h: &mut ApiHandle, items: Vec<Value>) {
        expect_lists(h, items, vec![]).await;
    }

    async fn expect_delete(h: &mut ApiHandle, ns: &str, name: &str, code: StatusCode) {
        let (req, send) = h.next_request().await.expect("a delete request");
        assert_eq!(req.method(), Method::DELETE);
        let path = if ns.is_empty() {
            format!("/apis/lifecycle-operator.io/v1alpha1/clusterlifecyclepolicies/{name}")
        } else {
            format!("/apis/lifecycle-operator.io/v1alpha1/namespaces/{ns}/lifecyclepolicies/{name}")
        };
        assert_eq!(req.uri().path(), path);
        let status = if code == StatusCode::OK {
            "Success"
        } else {
            "Failure"
        };
        let reason = if code == StatusCode::NOT_FOUND {
            "NotFound"
        } else {
            ""
        };
        respond(
            send,
            code,
            json!({"kind": "Status", "apiVersion": "v1", "status": status, "reason": reason, "code": code.as_u16(), "message": ""}),
        );
    }

    #[tokio::test]
    async fn deletes_what_is_not_going_and_waits_until_none_is_left() {
        let (client, mut h) = client();
        let api = tokio::spawn(async move {
            expect_list(
                &mut h,
                vec![meta("web", "a", false), meta("web", "b", true)],
            )
            .await;
            expect_delete(&mut h, "web", "a", StatusCode::OK).await;
            expect_list(&mut h, vec![meta("web", "a", true)]).await;
            expect_list(&mut h, vec![]).await;
        });
        let n = release_all(client, Duration::from_secs(30)).await.unwrap();
        assert_eq!(n, 2);
        api.await.unwrap();
    }

    #[tokio::test]
    async fn cluster_policies_are_deleted_and_waited_for_too() {
        let (client, mut h) = client();
        let api = tokio::spawn(async move {
            expect_lists(
                &mut h,
                vec![meta("web", "a", false)],
                vec![meta("", "drain", false)],
            )
            .await;
            expect_delete(&mut h, "web", "a", StatusCode::OK).await;
            expect_delete(&mut h, "", "drain", StatusCode::OK).await;
            expect_lists(&mut h, vec![], vec![meta("", "drain", true)]).await;
            expect_lists(&mut h, vec![], vec![]).await;
        });
        let n = release_all(client, Duration::from_secs(30)).await.unwrap();
        assert_eq!(n, 2);
        api.await.unwrap();
    }

    #[tokio::test]
    async fn a_policy_gone_before_its_delete_is_fine() {
        let (client, mut h) = client();
        let api = tokio::spawn(async move {
            expect_list(&mut h, vec![meta("web", "a", false)]).await;
            expect_delete(&mut h, "web", "a", StatusCode::NOT_FOUND).await;
            expect_list(&mut h, vec![]).await;
        });
        assert_eq!(
            release_all(client, Duration::from_secs(30)).await.unwrap(),
            1
        );
        api.await.unwrap();
    }

    #[tokio::test]
    async fn a_server_error_fails_with_what_was_being_done() {
        let (client, mut h) = client();
        let api = tokio::spawn(async move {
            expect_list(&mut h, vec![meta("web", "a", false)]).await;
            expect_delete(&mut h, "web", "a", StatusCode::INTERNAL_SERVER_ERROR).await;
        });
        let err = release_all(client, Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("deleting LifecyclePolicy web/a"),
            "{err:#}"
        );
        api.await.unwrap();
    }

    #[tokio::test]
    async fn policies_the_operator_never_releases_fail_after_the_timeout_naming_them() {
        let (client, mut h) = client();
        let api = tokio::spawn(async move {
            expect_list(&mut h, vec![meta("web", "stuck", true)]).await;
        });
        let err = release_all(client, Duration::ZERO).await.unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("1 policy left: web/stuck"), "{msg}");
        assert!(msg.contains("is it running?"), "{msg}");
        api.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_api_server_that_never_answers_fails_within_the_call_bound() {
        let (client, mut h) = client();
        // Take the request and never answer it.
        let api = tokio::spawn(async move {
            let held = h.next_request().await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(held);
        });
        let err = release_all(client, Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("no answer within"), "{err:#}");
        api.abort();
    }
}
