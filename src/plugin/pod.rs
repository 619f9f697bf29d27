//! `kubectl lifecycle pod`'s view, pure: one pod, the ledgers of the
//! workload it belongs to, its container logs and its events in; for each
//! hook of each container, who put it there and what proves it ran out.
//! Nothing here needs the policy's status, so a pod the status no longer
//! lists is explained the same way.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Event, LifecycleHandler, Pod};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::api::identity::PolicyId;
use crate::apply::ledger::Ledger;
use crate::apply::slot::Slot;
use crate::hooks::hook::{DEFAULT_GRACE_SECONDS, HookKind};
use crate::hooks::marker::{self, Phase};
use crate::plugin::fetch::Log;
use crate::text;

/// Runs shown per hook and log (the last ones).
pub const MAX_RUNS: usize = 10;
/// Events shown per hook (the last ones).
pub const MAX_EVENTS: usize = 5;
const MESSAGE: usize = 300;

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodReport {
    pub namespace: String,
    pub name: String,
    /// `Kind/name` of the workload it belongs to, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    pub phase: String,
    /// The grace period the kubelet gives the preStop and the stop.
    pub grace_seconds: i64,
    /// When deletion was asked, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_requested: Option<String>,
    pub containers: Vec<PodContainer>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodContainer {
    pub name: String,
    pub state: String,
    pub restarts: i32,
    /// The exits the status still shows: the current container's, the previous one's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exits: Vec<Exit>,
    pub hooks: Vec<PodHook>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Exit {
    /// current or previous.
    pub container: String,
    pub code: i32,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodHook {
    /// postStart or preStop.
    pub hook: String,
    /// exec: the command (the user's script, when wrapped), httpGet, sleep.
    pub handler: String,
    /// Who put it there: a policy by its ledger on the workload, or the workload itself.
    pub owner: String,
    /// marker (this hook writes marker lines) or events.
    pub evidence: String,
    /// ran, failed, running, cut short, not run yet, implied, no evidence.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<Run>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventView>,
}

/// One run of a wrapped hook, from its marker lines.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// current or previous: whose log the lines are in.
    pub log: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rc: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub reason: String,
    pub message: String,
    pub count: i32,
}

/// What `pod` reads.
#[derive(Clone, Debug)]
pub struct PodInputs {
    pub pod: Pod,
    pub workload: Option<String>,
    /// The workload's ledgers, by owner (empty without a workload).
    pub ledgers: BTreeMap<String, Ledger>,
    /// By container name and previous (true) or current (false).
    pub logs: BTreeMap<(String, bool), Log>,
    pub events: Vec<Event>,
    pub now: Timestamp,
}

pub fn build(i: &PodInputs) -> PodReport {
    let pod = &i.pod;
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    // A deletion may ask for a shorter grace period than the spec's; once
    // the pod has stopped the API server sets it to 0.
    let asked = pod
        .metadata
        .deletion_grace_period_seconds
        .filter(|g| *g > 0);
    let grace = asked
        .or(spec.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    // deletionTimestamp is when the grace period ends, not when deletion was asked.
    let deleting = pod
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0 - k8s_openapi::jiff::SignedDuration::from_secs(asked.unwrap_or(0)));
    let statuses: Vec<&ContainerStatus> = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .collect();
    let ctx = Ctx {
        inputs: i,
        grace,
        deleting,
    };
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .map(|c| ctx.container(c, statuses.iter().copied().find(|s| s.name == c.name)))
        .collect();
    let mut notes: Vec<String> = i
        .logs
        .iter()
        .filter_map(|((c, prev), l)| match l {
            Log::Refused(why) => Some(format!(
                "{} log of {c} not read: {why}",
                if *prev { "previous" } else { "current" }
            )),
            _ => None,
        })
        .collect();
    if i.workload.is_none() {
        notes.push("the pod belongs to no Deployment, StatefulSet or DaemonSet: no policy's ledger to read".into());
    }
    PodReport {
        namespace: name(pod.metadata.namespace.as_deref().unwrap_or_default()),
        name: name(pod.metadata.name.as_deref().unwrap_or_default()),
        workload: i.workload.as_deref().map(name),
        phase: name(status.phase.as_deref().unwrap_or("Unknown")),
        grace_seconds: grace,
        deletion_requested: deleting.map(|t| t.to_string()),
        containers,
        notes,
    }
}

struct Ctx<'a> {
    inputs: &'a PodInputs,
    grace: i64,
    deleting: Option<Timestamp>,
}

impl Ctx<'_> {
    fn container(&self, c: &Container, cs: Option<&ContainerStatus>) -> PodContainer {
        let lifecycle = c.lifecycle.clone().unwrap_or_default();
        let hooks = [
            (HookKind::PostStart, lifecycle.post_start.as_ref()),
            (HookKind::PreStop, lifecycle.pre_stop.as_ref()),
        ]
        .into_iter()
        .filter_map(|(k, h)| h.map(|h| self.hook(c, cs, k, h)))
        .collect();
        let exits = cs
            .into_iter()
            .flat_map(|s| {
                [
                    ("current", s.state.as_ref()),
                    ("previous", s.last_state.as_ref()),
                ]
            })
            .filter_map(|(which, st)| {
                let t = st?.terminated.as_ref()?;
                Some(Exit {
                    container: which.into(),
                    code: t.exit_code,
                    reason: name(t.reason.as_deref().unwrap_or_default()),
                    finished_at: t.finished_at.as_ref().map(|f| f.0.to_string()),
                })
            })
            .collect();
        PodContainer {
            name: name(&c.name),
            state: cs.map(state_text).unwrap_or_else(|| "unknown".into()),
            restarts: cs.map_or(0, |s| s.restart_count),
            exits,
            hooks,
        }
    }

    fn hook(
        &self,
        c: &Container,
        cs: Option<&ContainerStatus>,
        kind: HookKind,
        h: &LifecycleHandler,
    ) -> PodHook {
        let wrapped = h
            .exec
            .as_ref()
            .and_then(|e| marker::wrapped_by(e.command.as_deref().unwrap_or_default()))
            .filter(|w| w.hook == kind);
        let runs = wrapped
            .as_ref()
            .map(|w| self.runs(&c.name, w.token, &w.policy, kind))
            .unwrap_or_default();
        let reason = match kind {
            HookKind::PostStart => "FailedPostStartHook",
            HookKind::PreStop => "FailedPreStopHook",
        };
        let events = self.events(&c.name, reason);
        let (outcome, duration, detail) = self.outcome(kind, cs, &runs, &events);
        PodHook {
            hook: kind.field().into(),
            handler: handler_text(h, wrapped.as_ref().map(|w| w.script.as_str())),
            owner: self.owner(&c.name, kind, wrapped.as_ref().map(|w| w.policy.as_str())),
            evidence: if wrapped.is_some() {
                "marker"
            } else {
                "events"
            }
            .into(),
            outcome: outcome.into(),
            duration_seconds: duration,
            detail,
            runs: runs.iter().rev().take(MAX_RUNS).rev().cloned().collect(),
            events,
        }
    }

    /// The policy whose ledger holds the slot, else what the marker names.
    fn owner(&self, container: &str, kind: HookKind, marked: Option<&str>) -> String {
        let slot = Slot::Hook {
            container: container.to_string(),
            kind,
        };
        let by_ledger = self
            .inputs
            .ledgers
            .iter()
            .find(|(_, l)| l.owned.contains_key(&slot))
            .map(|(owner, _)| PolicyId::from_owner(owner).kind_and_name());
        let s = match (by_ledger, marked) {
            (Some(p), _) => p,
            (None, Some(m)) => format!("{m} (its marker; no ledger on the workload holds it)"),
            (None, None) => "the workload's own template (no policy holds it)".into(),
        };
        name(&s)
    }

    /// The runs in the container's logs carrying this hook's token.
    fn runs(&self, container: &str, token: u64, policy: &str, kind: HookKind) -> Vec<Run> {
        let mut out = Vec::new();
        for previous in [true, false] {
            let Some(Log::Read(log)) = self.inputs.logs.get(&(container.to_string(), previous))
            else {
                continue;
            };
            let mut open: BTreeMap<u32, usize> = BTreeMap::new();
            let which = if previous { "previous" } else { "current" };
            for line in log.lines() {
                let Some(m) = marker::parse(text::prefix(line, crate::verify::logread::MAX_LINE))
                else {
                    continue;
                };
                if m.token != token || m.hook != kind || m.policy != policy {
                    continue;
                }
                match m.phase {
                    Phase::Started => {
                        open.insert(m.run, out.len());
                        out.push(Run {
                            log: which.into(),
                            started_at: m.at.map(|t| t.to_string()),
                            ended_at: None,
                            rc: None,
                            duration_seconds: None,
                        });
                    }
                    Phase::Ended { rc } => {
                        // An end line without its start line is no run.
                        let Some(i) = open.remove(&m.run) else {
                            continue;
                        };
                        let r = &mut out[i];
                        r.rc = Some(rc);
                        r.ended_at = m.at.map(|t| t.to_string());
                        r.duration_seconds = seconds(r.started_at.as_deref(), m.at);
                    }
                }
            }
        }
        out
    }

    fn events(&self, container: &str, reason: &str) -> Vec<EventView> {
        let path = format!("spec.containers{{{container}}}");
        let mut evs: Vec<&Event> = self
            .inputs
            .events
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter(|e| {
                e.involved_object
                    .field_path
                    .as_deref()
                    .is_none_or(|p| p == path || p.ends_with(&format!("{{{container}}}")))
            })
            .collect();
        evs.sort_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0));
        evs.iter()
            .rev()
            .take(MAX_EVENTS)
            .rev()
            .map(|e| EventView {
                reason: name(reason),
                message: text::bounded(
                    &e.message
                        .as_deref()
                        .unwrap_or_default()
                        .replace(['\n', '\r'], " "),
                    MESSAGE,
                ),
                count: e.count.unwrap_or(1),
            })
            .collect()
    }

    fn outcome(
        &self,
        kind: HookKind,
        cs: Option<&ContainerStatus>,
        runs: &[Run],
        events: &[EventView],
    ) -> (&'static str, Option<f64>, String) {
        let grace = self.grace;
        let last = runs.last();
        if let Some(r) = last.filter(|r| r.rc.is_some()) {
            let rc = r.rc.unwrap_or_default();
            let within = match (kind, r.duration_seconds) {
                (HookKind::PreStop, Some(d)) => format!(" in {d:.3}s of a {grace}s grace period"),
                (_, Some(d)) => format!(" in {d:.3}s"),
                _ => String::new(),
            };
            let word = if rc == 0 { "ran" } else { "failed" };
            return (word, r.duration_seconds, format!("exit code {rc}{within}"));
        }
        if let Some(e) = events.last() {
            return ("failed", None, e.message.clone());
        }
        let running = cs
            .and_then(|s| s.state.as_ref())
            .is_some_and(|s| s.running.is_some());
        let finished = cs
            .and_then(|s| s.state.as_ref())
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.finished_at.as_ref())
            .map(|t| t.0);
        if let Some(r) = last {
            // Started, never ended.
            let start = r
                .started_at
                .as_deref()
                .and_then(|s| s.parse::<Timestamp>().ok());
            if let (Some(end), Some(start)) = (finished, start) {
                let d = secs(start, end);
                return (
                    "cut short",
                    Some(d),
                    format!("the container exited {d:.3}s after the hook began, before it ended"),
                );
            }
            if let Some(start) = start.filter(|_| running) {
                let d = secs(start, self.inputs.now);
                return (
                    "running",
                    Some(d),
                    format!("for {d:.3}s of a {grace}s grace period"),
                );
            }
            return ("running", None, String::new());
        }
        match kind {
            HookKind::PostStart if running || finished.is_some() => (
                "implied",
                None,
                "the container started, so its postStart returned without a failure event".into(),
            ),
            HookKind::PostStart => ("not run yet", None, String::new()),
            HookKind::PreStop if self.deleting.is_none() => (
                "not run yet",
                None,
                "a preStop runs when the pod is deleted".into(),
            ),
            HookKind::PreStop => (
                "no evidence",
                None,
                "no marker line and no failure event".into(),
            ),
        }
    }
}

fn seconds(start: Option<&str>, end: Option<Timestamp>) -> Option<f64> {
    let start: Timestamp = start?.parse().ok()?;
    Some(secs(start, end?))
}

fn secs(start: Timestamp, end: Timestamp) -> f64 {
    end.duration_since(start).as_secs_f64()
}

fn handler_text(h: &LifecycleHandler, script: Option<&str>) -> String {
    let s = if let Some(script) = script {
        format!("exec: {script}")
    } else if let Some(e) = &h.exec {
        format!(
            "exec: {}",
            e.command.as_deref().unwrap_or_default().join(" ")
        )
    } else if let Some(g) = &h.http_get {
        format!(
            "httpGet: {} port {:?}",
            g.path.as_deref().unwrap_or("/"),
            g.port
        )
    } else if let Some(s) = &h.sleep {
        format!("sleep: {}s", s.seconds)
    } else if h.tcp_socket.is_some() {
        "tcpSocket".into()
    } else {
        "unknown handler".into()
    };
    text::bounded(&s.replace(['\n', '\r'], " "), MESSAGE)
}

pub(crate) fn state_text(cs: &ContainerStatus) -> String {
    let Some(state) = &cs.state else {
        return "unknown".into();
    };
    let s = if state.running.is_some() {
        "running".to_string()
    } else if let Some(w) = &state.waiting {
        format!("waiting: {}", w.reason.as_deref().unwrap_or("?"))
    } else if let Some(t) = &state.terminated {
        format!(
            "terminated: {} (exit {})",
            t.reason.as_deref().unwrap_or("?"),
            t.exit_code
        )
    } else {
        "unknown".to_string()
    };
    name(&s)
}

fn name(s: &str) -> String {
    text::bounded(s, text::NAME)
}
