//! `lifecycle-operator release-all`: deletes every LifecyclePolicy in the
//! cluster and waits until the running operator has handed their hooks back
//! and dropped their finalizers. The Helm chart runs it as a pre-delete hook,
//! so that `helm uninstall` leaves no hook on any workload and no policy
//! hanging on a finalizer nobody will remove.
//!
//! The decisions (what to delete, what to report) are pure; `release_all`
//! is the I/O around them.

use std::time::Duration;

use anyhow::Context as _;
use kube::api::{Api, DeleteParams, ListParams, PartialObjectMeta};
use kube::{Client, ResourceExt};
use tracing::info;

use crate::types::LifecyclePolicy;

/// Each API call's bound: a call that never answers must not wedge uninstall.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How many names a progress or error message lists before "and N more".
const NAMES_SHOWN: usize = 10;

/// One policy still in the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remaining {
    pub namespace: String,
    pub name: String,
    /// Already being deleted (deletionTimestamp set): waiting for its finalizer.
    pub deleting: bool,
}

impl Remaining {
    fn from_meta(m: &PartialObjectMeta<LifecyclePolicy>) -> Self {
        Remaining {
            namespace: m.namespace().unwrap_or_default(),
            name: m.name_any(),
            deleting: m.metadata.deletion_timestamp.is_some(),
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
        .map(|r| format!("{}/{}", r.namespace, r.name))
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

async fn list(api: &Api<LifecyclePolicy>) -> anyhow::Result<Vec<Remaining>> {
    let list = bounded(
        "listing LifecyclePolicies",
        api.list_metadata(&ListParams::default()),
    )
    .await?;
    Ok(list.items.iter().map(Remaining::from_meta).collect())
}

/// Deletes every policy and waits, up to `timeout`, until none is left.
/// Returns how many policies there were. Policies created meanwhile are
/// deleted too. Fails, naming what is left, if the operator does not release
/// them in time (typically: it is not running).
pub async fn release_all(client: Client, timeout: Duration) -> anyhow::Result<usize> {
    let all: Api<LifecyclePolicy> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let remaining = list(&all).await?;
        if remaining.is_empty() {
            info!(policies = seen.len(), "every LifecyclePolicy released");
            return Ok(seen.len());
        }
        for r in &remaining {
            seen.insert((r.namespace.clone(), r.name.clone()));
        }
        for r in to_delete(&remaining) {
            let api: Api<LifecyclePolicy> = Api::namespaced(client.clone(), &r.namespace);
            let what = format!("deleting LifecyclePolicy {}/{}", r.namespace, r.name);
            match bounded(&what, api.delete(&r.name, &DeleteParams::default())).await {
                Ok(_) => {
                    info!(policy = %format!("{}/{}", r.namespace, r.name), "deleted; waiting for the operator to hand its hooks back")
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
        info!("{}", describe(&remaining));
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
            namespace: "web".into(),
            name: name.into(),
            deleting,
        }
    }

    #[test]
    fn deletes_only_policies_not_already_going() {
        let all = [r("a", false), r("b", true), r("c", false)];
        let names: Vec<_> = to_delete(&all).iter().map(|r| r.name.as_str()).collect();
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
