//! Carrying decisions out: the writes of many workloads at once (bounded),
//! one result per workload, and events that name every workload that rolled
//! without costing a request each.

use std::borrow::Cow;
use std::collections::BTreeMap;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, stream};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use tracing::{debug, warn};

use crate::api::cluster::ClusterLifecyclePolicy;
use crate::api::identity::PolicyId;
use crate::api::names::reason;
use crate::api::types::{LifecyclePolicy, WorkloadKind};
use crate::apply::decide::{Decision, Intent, Write};
use crate::apply::ledger::field_manager;
use crate::apply::patch::{RESTORE_MANAGER, at_version};
use crate::apply::slot::Slot;
use crate::apply::workload::Workload;
use crate::runtime::metrics::Metrics;

/// Writes in flight at once. Each workload is one request (two when a
/// release and a claim meet), so this is the API server's load from one policy.
pub const CONCURRENCY: usize = 16;
/// An event's note is at most 1 KiB (events.k8s.io/v1).
const NOTE_BYTES: usize = 1024;

pub struct Executor<'a> {
    pub client: &'a Client,
    pub recorder: &'a Recorder,
    pub metrics: &'a Metrics,
}

impl Executor<'_> {
    /// Carries out every `Intent::Write` among `decisions`, `CONCURRENCY` at
    /// a time. The result at index i belongs to decisions[i]; None: nothing
    /// to write there.
    pub async fn run(
        &self,
        policy: &LifecyclePolicy,
        decisions: &[Decision],
    ) -> Vec<Option<Result<(), kube::Error>>> {
        let mut results: Vec<Option<Result<(), kube::Error>>> =
            decisions.iter().map(|_| None).collect();
        // Boxed: a stream of closures over borrowed decisions trips the
        // compiler's higher-ranked lifetime check in the spawned controller.
        let writes: Vec<BoxFuture<'_, (usize, Result<(), kube::Error>)>> = decisions
            .iter()
            .enumerate()
            .filter_map(|(i, d)| match &d.intent {
                Intent::Write(w) => {
                    Some(async move { (i, self.write(policy, d, w).await) }.boxed())
                }
                _ => None,
            })
            .collect();
        let done: Vec<(usize, Result<(), kube::Error>)> = stream::iter(writes)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut rolled: BTreeMap<Change, Vec<String>> = BTreeMap::new();
        for (i, result) in done {
            let d = &decisions[i];
            match &result {
                Ok(()) => {
                    if let Intent::Write(w) = &d.intent
                        && w.changes_template
                    {
                        let change = Change {
                            kind: d.workload.kind,
                            what: changes(d),
                            rolls: w.rolls,
                        };
                        // A cluster policy's workloads are named with their namespace.
                        let name = match &d.key.namespace {
                            Some(ns) => format!("{ns}/{}", d.name()),
                            None => d.name(),
                        };
                        rolled.entry(change).or_default().push(name);
                    }
                }
                Err(e) => {
                    warn!(policy = %policy.name_any(), kind = %d.workload.kind, workload = %d.name(), error = %e, "writing workload failed")
                }
            }
            results[i] = Some(result);
        }
        self.announce(policy, rolled).await;
        results
    }

    async fn write(
        &self,
        policy: &LifecyclePolicy,
        d: &Decision,
        w: &Write,
    ) -> Result<(), kube::Error> {
        let policy_name = policy.name_any();
        let owner = policy.id().owner();
        let ns = d.workload.namespace().unwrap_or_default();
        let api: Api<Workload> = Api::namespaced_with(self.client.clone(), &ns, &d.workload.kind);
        let name = d.name();
        let mut version = w.guard.clone();
        if let Some(damage) = &d.damage {
            let kind = d.workload.kind;
            let note =
                format!("{kind} {name}: {damage}; the ledger was rebuilt from managedFields");
            warn!(policy = %policy_name, kind = %d.workload.kind, workload = %name, %damage, "damaged ledger");
            self.warn_about(policy, d, reason::LEDGER_DAMAGED, note)
                .await;
        }
        if let Some(manager) = d.plan.contested() {
            let note = format!(
                "{} {name}: field manager {manager} keeps taking the policy's hooks back; the policy stopped re-claiming them (see the policy's status)",
                d.workload.kind
            );
            warn!(policy = %policy_name, kind = %d.workload.kind, workload = %name, %manager, "contested");
            self.warn_about(policy, d, reason::CONTESTED, note).await;
        }
        if let Some(ops) = &w.release {
            let released = self.json_patch(d, &ns, &name, ops).await?;
            self.metrics.deployments_released.inc();
            // The release was tested against the guarded version: the apply
            // may land only on what the release made of it.
            if version.is_some() {
                version = released.metadata.resource_version;
            }
            if !d.plan.unrestorable.is_empty() {
                let note = format!(
                    "{} {name}: the original of {} could not be restored (its ledger was damaged): the hook was removed",
                    d.workload.kind,
                    list(d.plan.unrestorable.iter())
                );
                self.warn_about(policy, d, reason::RESTORE_INCOMPLETE, note)
                    .await;
            }
        }
        if let Some(body) = &w.apply {
            let params = PatchParams::apply(&field_manager(&owner)).force();
            let body = match &version {
                Some(v) => Cow::Owned(at_version(body, v)),
                None => Cow::Borrowed(body),
            };
            api.patch(&name, &params, &Patch::Apply(&*body)).await?;
            self.metrics.deployments_patched.inc();
        }
        Ok(())
    }

    /// One `DeploymentPatched` event per change and per 1 KiB of names:
    /// every rolled workload is named, at a few requests per thousand.
    async fn announce(&self, policy: &LifecyclePolicy, rolled: BTreeMap<Change, Vec<String>>) {
        let ns = policy.namespace();
        let notes: Vec<(ObjectReference, String)> = rolled
            .into_iter()
            .flat_map(|(change, mut names)| {
                names.sort();
                let kind = change.kind;
                summaries(&change, &names)
                    .into_iter()
                    .map(|(first, note)| {
                        let (namespace, name) = match first.split_once('/') {
                            Some((n, name)) => (Some(n.to_string()), name.to_string()),
                            None => (ns.clone(), first),
                        };
                        (reference(kind, &name, namespace), note)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        // Each names its first workload as `related`: kube's recorder folds
        // events of the same reason and objects into one series, note and all.
        stream::iter(notes)
            .for_each_concurrent(CONCURRENCY, |(related, note)| {
                self.note(
                    policy,
                    Some(related),
                    EventType::Normal,
                    reason::DEPLOYMENT_PATCHED,
                    note,
                )
            })
            .await;
    }

    /// A Warning event on the policy about one workload.
    async fn warn_about(&self, policy: &LifecyclePolicy, d: &Decision, reason: &str, note: String) {
        let related = d.workload.object_ref(&d.workload.kind);
        self.note(policy, Some(related), EventType::Warning, reason, note)
            .await;
    }

    /// A JSON patch of the workload under the restore manager, its body
    /// written as the API server writes JSON (see `wire`), so that its
    /// `test`s of hooks with `>` or `&` can match.
    async fn json_patch(
        &self,
        d: &Decision,
        ns: &str,
        name: &str,
        ops: &serde_json::Value,
    ) -> Result<Workload, kube::Error> {
        // Not the policy's own manager: an update under it would leave the
        // restored fields owned by the policy, which then holds nothing.
        let params = PatchParams {
            field_manager: Some(RESTORE_MANAGER.to_string()),
            ..Default::default()
        };
        let url = Workload::url_path(&d.workload.kind, Some(ns));
        let (parts, _) = kube::core::Request::new(url)
            .patch(
                name,
                &params,
                &Patch::Json::<()>(json_patch::Patch(Vec::new())),
            )
            .map_err(kube::Error::BuildRequest)?
            .into_parts();
        let req = http::Request::from_parts(parts, crate::apply::wire::to_vec(ops));
        self.client.request::<Workload>(req).await
    }

    /// An event on the policy (about a workload when `related` names one);
    /// failing to publish is logged only.
    pub async fn note(
        &self,
        policy: &LifecyclePolicy,
        related: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = KubeEvent {
            type_,
            reason: reason.into(),
            // Every note passes here: the Events API takes at most 1 KiB.
            note: Some(crate::text::bounded(&note, crate::text::EVENT_NOTE)),
            action: "PatchDeployment".into(),
            secondary: related,
        };
        match self.recorder.publish(&event, &regarding(policy)).await {
            Ok(()) => {}
            // The policy's namespace is going away, and the event with it.
            Err(e) if is_namespace_terminating(&e) => {
                debug!(reason, "event dropped: its namespace is being deleted");
            }
            Err(e) => warn!(error = %e, "publishing event failed"),
        }
    }
}

/// The object a policy's events are about: a cluster policy's own kind
/// (the engine sees it as a `LifecyclePolicy` without a namespace).
pub fn regarding(policy: &LifecyclePolicy) -> ObjectReference {
    let mut r = policy.object_ref(&());
    if let PolicyId::Cluster { .. } = policy.id() {
        r.kind = Some(ClusterLifecyclePolicy::kind(&()).into_owned());
    }
    r
}

/// The API server refuses new objects in a namespace being deleted with a 403
/// whose cause is `NamespaceTerminating`: not a permission error.
fn is_namespace_terminating(e: &kube::Error) -> bool {
    let kube::Error::Api(status) = e else {
        return false;
    };
    status.code == 403
        && status
            .details
            .as_ref()
            .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
}

fn list<'a>(slots: impl Iterator<Item = &'a Slot>) -> String {
    slots.map(Slot::to_string).collect::<Vec<_>>().join(", ")
}

/// What a write did to the template, for the event: `set a/preStop; restored b/postStart`.
fn changes(d: &Decision) -> String {
    let mut parts = Vec::new();
    if !d.plan.claims.is_empty() {
        parts.push(format!("set {}", list(d.plan.claims.keys())));
    }
    if !d.plan.releases.is_empty() {
        parts.push(format!("restored {}", list(d.plan.releases.keys())));
    }
    if parts.is_empty() {
        parts.push("updated the hooked-pods label".to_string());
    }
    parts.join("; ")
}

/// One kind of template change, the key events are grouped by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Change {
    kind: WorkloadKind,
    what: String,
    /// Pods restart for it (the workload is not staged).
    rolls: bool,
}

/// A workload's object reference, for an event's `related`.
pub fn reference(kind: WorkloadKind, name: &str, namespace: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some(kind.as_str().into()),
        name: Some(name.into()),
        namespace,
        ..Default::default()
    }
}

/// Event notes naming `names`, each within `NOTE_BYTES`, with the first
/// name of each.
fn summaries(change: &Change, names: &[String]) -> Vec<(String, String)> {
    let head = |n: usize| {
        let why = match (n == 1, change.rolls) {
            (true, true) => "the pod template changed, so it rolls out",
            (false, true) => "their pod templates changed, so they roll out",
            (true, false) => "the pod template changed; its update strategy restarts no pod for it",
            (false, false) => {
                "their pod templates changed; their update strategy restarts no pod for it"
            }
        };
        let s = if n == 1 { "" } else { "s" };
        format!("{} on {n} {}{s} ({why}): ", change.what, change.kind)
    };
    let mut out = Vec::new();
    let mut chunk: Vec<&str> = Vec::new();
    let mut len = 0;
    for name in names {
        // The head's count has at most as many digits as names.len().
        let budget = NOTE_BYTES - head(names.len()).len();
        if !chunk.is_empty() && len + 2 + name.len() > budget {
            out.push((
                chunk[0].to_string(),
                format!("{}{}", head(chunk.len()), chunk.join(", ")),
            ));
            chunk.clear();
            len = 0;
        }
        len += name.len() + if chunk.is_empty() { 0 } else { 2 };
        chunk.push(name);
    }
    if !chunk.is_empty() {
        out.push((
            chunk[0].to_string(),
            format!("{}{}", head(chunk.len()), chunk.join(", ")),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(what: &str) -> Change {
        Change {
            kind: WorkloadKind::Deployment,
            what: what.into(),
            rolls: true,
        }
    }

    #[test]
    fn summaries_name_everyone_within_the_note_limit() {
        let names: Vec<String> = (0..1000).map(|i| format!("web-{i:04}")).collect();
        let notes: Vec<String> = summaries(&change("set nginx/preStop"), &names)
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert!(notes.len() > 1 && notes.len() < 30, "{}", notes.len());
        let mut seen = Vec::new();
        for n in &notes {
            assert!(n.len() <= NOTE_BYTES, "{} bytes", n.len());
            assert!(n.starts_with("set nginx/preStop on "), "{n}");
            let (head, list) = n.split_once("): ").unwrap();
            let count: usize = head["set nginx/preStop on ".len()..]
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let listed: Vec<&str> = list.split(", ").collect();
            assert_eq!(count, listed.len());
            seen.extend(listed.into_iter().map(str::to_string));
        }
        assert_eq!(seen, names);
        assert_eq!(
            summaries(&change("set a/preStop"), &["web".to_string()]),
            [(
                "web".to_string(),
                "set a/preStop on 1 Deployment (the pod template changed, so it rolls out): web"
                    .to_string()
            )]
        );
        let staged = Change {
            kind: WorkloadKind::StatefulSet,
            what: "set a/preStop".into(),
            rolls: false,
        };
        assert_eq!(
            summaries(&staged, &["cache".to_string(), "db".to_string()])[0].1,
            "set a/preStop on 2 StatefulSets (their pod templates changed; their update strategy restarts no pod for it): cache, db"
        );
        assert!(summaries(&change("x"), &[]).is_empty());
    }

    #[test]
    fn a_name_longer_than_a_note_gets_a_note_of_its_own() {
        let long = "x".repeat(253);
        let names = vec![long.clone(); 5];
        let notes: Vec<String> = summaries(&change("set a/preStop"), &names)
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert!(notes.iter().all(|n| n.len() <= NOTE_BYTES));
        assert_eq!(
            notes
                .iter()
                .map(|n| n.matches(&long).count())
                .sum::<usize>(),
            5
        );
    }

    fn api_error(code: u16, cause: Option<&str>) -> kube::Error {
        let details = cause.map(|reason| kube::core::response::StatusDetails {
            name: "e".into(),
            group: String::new(),
            kind: "events".into(),
            uid: String::new(),
            causes: vec![kube::core::response::StatusCause {
                reason: reason.into(),
                message: String::new(),
                field: "metadata.namespace".into(),
            }],
            retry_after_seconds: 0,
        });
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            reason: "Forbidden".into(),
            details,
            ..kube::core::Status::failure("refused", "Forbidden")
        }))
    }

    #[test]
    fn only_a_terminating_namespace_is_an_expected_refusal() {
        assert!(is_namespace_terminating(&api_error(
            403,
            Some("NamespaceTerminating")
        )));
        // RBAC refusals carry no such cause: they stay warnings.
        assert!(!is_namespace_terminating(&api_error(403, None)));
        assert!(!is_namespace_terminating(&api_error(403, Some("Other"))));
        assert!(!is_namespace_terminating(&api_error(
            409,
            Some("NamespaceTerminating")
        )));
    }
}
