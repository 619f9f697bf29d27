//! The `LifecyclePolicy` API (`lifecycle-operator.io/v1alpha1`).
//!
//! The hook handler and selector types mirror their core/v1 and meta/v1
//! counterparts field for field (same JSON), but are our own so the CRD schema
//! can bound them and carry CEL rules with messages a person understands.

// kube-derive takes repeated `printcolumn(type_ = ..)` arguments, which this lint misreads.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use crate::api::identity::PolicyId;
use k8s_openapi::apimachinery::pkg::{
    apis::meta::v1::{Condition, LabelSelector, LabelSelectorRequirement, Time},
    util::intstr::IntOrString,
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An enum of the words a status field holds, each variant written as its
/// name. Any other text a stored status holds (set by hand, or by another
/// version) reads as `Other`, kept as it was: a status that did not parse
/// would take its policy out of every list and watch. The operator itself
/// writes only the named variants. The field keeps its plain-string schema
/// (`#[schemars(with = "String")]`).
macro_rules! status_words {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident,)+ }) => {
        $(#[$meta])*
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// Text this version does not write, as read from a stored status.
            #[serde(untagged)]
            Other(String),
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => stringify!($variant),)+
                    $name::Other(s) => s,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// Compared with the text a user sees.
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

/// Longest hook sleep and grace period we accept: one hour. Kubernetes itself
/// has no bound, but a longer hook blocks node drains for longer than any
/// sane rollout.
pub const MAX_SECONDS: i64 = 3600;

/// Declares postStart/preStop hooks for the Deployments it selects in its own namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lifecycle-operator.io",
    version = "v1alpha1",
    kind = "LifecyclePolicy",
    plural = "lifecyclepolicies",
    shortname = "lcp",
    category = "lifecycle-operator",
    namespaced,
    status = "LifecyclePolicyStatus",
    doc = "LifecyclePolicy puts container lifecycle hooks (postStart, preStop) on the pod templates of the workloads (Deployments, StatefulSets, DaemonSets) it selects in its namespace, and reports what it changed and whether the hooks ran.",
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.mode",
        priority = 1
    ),
    printcolumn(
        name = "Matched",
        type_ = "integer",
        description = "Workloads the selector matches",
        json_path = ".status.matchedWorkloads"
    ),
    printcolumn(
        name = "Patched",
        type_ = "integer",
        description = "Matched workloads carrying every hook this policy owns there",
        json_path = ".status.patchedWorkloads"
    ),
    printcolumn(
        name = "PostStart",
        type_ = "string",
        description = "Container instances whose postStart ran / all seen",
        json_path = ".status.postStart.summary"
    ),
    printcolumn(
        name = "PreStop",
        type_ = "string",
        description = "Stopped containers whose preStop ran / all seen",
        json_path = ".status.preStop.summary"
    ),
    printcolumn(
        name = "Rollout",
        type_ = "string",
        description = "Canary, Waves, Complete or Halted",
        json_path = ".status.rollout.phase"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.postStart) || has(self.preStop)").message("set at least one of postStart or preStop"))]
#[serde(rename_all = "camelCase")]
pub struct LifecyclePolicySpec {
    /// Label selector over the workloads (of `kinds`) in this policy's
    /// namespace. Required and must not be empty: a policy never selects every
    /// workload by accident.
    #[x_kube(validation = Rule::new("(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)").message("selector must not be empty: set matchLabels or matchExpressions"))]
    pub selector: PolicySelector,

    /// The workload kinds the selector applies to: Deployment, StatefulSet,
    /// DaemonSet. Default: [Deployment]. Jobs and CronJobs cannot be
    /// selected: a container that completes on its own never runs preStop.
    #[serde(default = "default_kinds")]
    #[schemars(length(min = 1, max = 3))]
    #[x_kube(validation = Rule::new("self.all(k, self.exists_one(j, j == k))").message("kinds must not repeat"))]
    pub kinds: Vec<WorkloadKind>,

    /// Names of the containers to put hooks on. Default: every regular
    /// container of the pod template. A sidecar (an init container with
    /// restartPolicy: Always) gets hooks only when named here; plain init
    /// containers never (Kubernetes rejects lifecycle hooks on them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self.all(c, c.size() > 0 && c.size() <= 63)").message("container names must be 1 to 63 characters"))]
    pub containers: Option<Vec<String>>,

    /// Hook run right after a container is created, alongside its entrypoint.
    /// If it fails, the kubelet kills the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_start: Option<Handler>,

    /// Hook run right before a container is terminated (pod deletion, eviction,
    /// rolling update, failed liveness probe). Not run when a container exits
    /// on its own. Its time counts against the pod's grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<Handler>,

    /// Sets the pod template's terminationGracePeriodSeconds (1-3600). The
    /// grace period covers the preStop hook and the process's own shutdown.
    /// Under onConflict: Skip a template's own longer grace period is kept
    /// (never shortened); a shorter one is raised and restored on release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub termination_grace_period_seconds: Option<i64>,

    /// What to do with a container that already has its own hook of the same
    /// kind: Skip (default) leaves it and reports it; Override replaces it (the
    /// whole handler) and restores it when the policy no longer applies. A
    /// field manager that takes an overridden hook back 3 times within 10
    /// minutes keeps it: the workload is then reported Contested.
    #[serde(default)]
    pub on_conflict: OnConflict,

    /// Enforce (default) patches the selected workloads; DryRun only reports, on the
    /// status, what would change, and still hands back hooks it set before
    /// (on deletion, or for workloads it no longer selects).
    #[serde(default)]
    pub mode: Mode,

    /// How the operator proves that hooks ran. Markers (default): a
    /// shell-script exec hook (["/bin/sh", "-c", "..."]) is wrapped to write
    /// one marker line to the container's log after it runs, exit code kept;
    /// other hooks are checked through kubelet events and container states.
    /// Events: events and states only. Disabled: hooks are not observed.
    #[serde(default)]
    pub verification: Verification,

    /// At most this many of the policy's workloads rolling out at once
    /// because of it, whatever their kind. A StatefulSet with a partition or
    /// OnDelete updates, or an OnDelete DaemonSet, restarts no pod when its
    /// template changes, so it never takes a slot. 0 (default) means no limit.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10000))]
    pub max_concurrent_rollouts: i32,

    /// How a change of the hooks spreads: a canary first, then waves, and a
    /// halt (with revert) when a hook fails on a workload just rolled.
    #[serde(default)]
    pub rollout: RolloutSpec,

    /// How the preStop's drain is judged (see status.drain and the DrainSafe
    /// condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainSpec>,
}

/// How a preStop's drain is judged.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DrainSpec {
    /// A pod drained safely when its endpoints were out of every
    /// EndpointSlice at least this many seconds before its container was
    /// told to stop (0-60, default 1): the time kube-proxy and load
    /// balancers take after the API to stop sending traffic.
    #[serde(default = "default_drain_margin")]
    #[schemars(range(min = 0, max = 60))]
    pub margin_seconds: i32,
}

impl Default for DrainSpec {
    fn default() -> Self {
        DrainSpec {
            margin_seconds: default_drain_margin(),
        }
    }
}

fn default_drain_margin() -> i32 {
    1
}

/// How a new or changed policy reaches its workloads.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Canary (default): patch one workload first and wait until its new
    /// pods ran the new hooks (postStart ran, or implied, in every new pod;
    /// the rollout complete); then the rest in waves, each waiting for the
    /// one before. Immediate: every workload at once (maxConcurrentRollouts
    /// still applies), with no halt: the behaviour before canaries.
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// Workloads per wave after the canary. 0 (default): maxConcurrentRollouts
    /// when set, else every remaining workload in one wave.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10000))]
    pub wave_size: i32,
    /// When a hook fails on a workload of the canary or a wave (or it is not
    /// done by the deadline): Revert (default) gives the failing workloads
    /// their template from before this policy back, through the ledger, and
    /// halts; Halt only stops. Either way no other workload is patched until
    /// the policy's spec changes.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// A canary or wave not done within this many seconds halts the rollout
    /// (default 600).
    #[serde(default = "default_progress_deadline")]
    #[schemars(range(min = 10, max = 86400))]
    pub progress_deadline_seconds: i64,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        RolloutSpec {
            strategy: RolloutStrategy::default(),
            wave_size: 0,
            on_failure: OnFailure::default(),
            progress_deadline_seconds: default_progress_deadline(),
        }
    }
}

fn default_progress_deadline() -> i64 {
    600
}

/// See `RolloutSpec.strategy`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RolloutStrategy {
    #[default]
    Canary,
    Immediate,
}

/// See `RolloutSpec.onFailure`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnFailure {
    #[default]
    Revert,
    Halt,
}

/// A label selector (same JSON as metav1.LabelSelector).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PolicySelector {
    /// Labels a Deployment must carry, all of them, with these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Label requirements a Deployment must meet, all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub match_expressions: Option<Vec<SelectorRequirement>>,
}

/// One label requirement (same JSON as metav1.LabelSelectorRequirement).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("(self.operator == 'In' || self.operator == 'NotIn') == (has(self.values) && size(self.values) > 0)").message("values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist"))]
pub struct SelectorRequirement {
    /// The label key the requirement applies to.
    #[schemars(length(min = 1, max = 317))]
    pub key: String,
    /// How the key relates to the values.
    pub operator: SelectorOperator,
    /// Values for In and NotIn; must be empty for Exists and DoesNotExist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub values: Option<Vec<String>>,
}

/// Label selector operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// A lifecycle hook handler (same JSON as core/v1 LifecycleHandler). Exactly
/// one of exec, httpGet or sleep. tcpSocket is not accepted: the kubelet does
/// not run it as a hook.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("[has(self.exec), has(self.httpGet), has(self.sleep)].filter(x, x).size() == 1").message("a hook must set exactly one of exec, httpGet or sleep"))]
#[serde(rename_all = "camelCase")]
pub struct Handler {
    /// Run a command in the container. It is not run in a shell: to use
    /// pipes or `;`, call the shell explicitly (["/bin/sh", "-c", "..."]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    /// Send an HTTP GET request to the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    /// Pause for a number of seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep: Option<SleepAction>,
}

/// Command to run in the container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ExecAction {
    /// The command and its arguments; the first element is the executable.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new("self[0].size() > 0").message("exec.command[0] (the executable) must not be empty"))]
    pub command: Vec<String>,
}

/// HTTP GET request sent by the kubelet, to the pod's IP.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.host)").message("httpGet.host is not allowed: the kubelet sends a hook's request from the node's network, so a host would reach what the node reaches (cloud metadata endpoints, node-local services) instead of the pod; leave it unset and the request goes to the pod's IP (the baseline Pod Security Standard forbids it too, since Kubernetes 1.34)"))]
#[serde(rename_all = "camelCase")]
pub struct HttpGetAction {
    /// Path to request, e.g. /shutdown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub path: Option<String>,
    /// Port number (1-65535) or name of the container port.
    #[x_kube(validation = Rule::new("type(self) == string ? self.size() > 0 : (int(self) >= 1 && int(self) <= 65535)").message("httpGet.port must be 1-65535 or a port name"))]
    pub port: IntOrString,
    /// Not allowed: the request always goes to the pod's IP. The kubelet
    /// sends it from the node's network, so another host would let a policy
    /// reach what the node reaches (cloud metadata endpoints, node-local
    /// services). Kept in the schema so that setting it is rejected with
    /// this reason rather than silently pruned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// HTTP or HTTPS; default HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<Scheme>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub http_headers: Option<Vec<HttpHeader>>,
}

/// URI scheme of an httpGet hook.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)]
pub enum Scheme {
    HTTP,
    HTTPS,
}

/// One HTTP header.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HttpHeader {
    /// Header name.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Header value.
    pub value: String,
}

/// Sleep for a number of seconds.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SleepAction {
    /// Seconds to sleep (0-3600). 0 needs Kubernetes 1.34 or newer (the
    /// API server refuses a zero-second sleep before that; the operator then
    /// reports the policy as not applicable instead of patching).
    #[schemars(range(min = 0, max = 3600))]
    pub seconds: i64,
}

/// What to do when a container already has its own hook of the same kind.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnConflict {
    /// Leave the container's own hook alone and report it.
    #[default]
    Skip,
    /// Replace it; the original is restored when the policy stops applying.
    Override,
}

/// How hooks are verified.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Verification {
    /// Marker lines from wrapped shell-script hooks, plus events.
    #[default]
    Markers,
    /// Kubelet events and container states only; hooks are applied verbatim.
    Events,
    /// Not observed. (Not `Off`: YAML 1.1, which kubectl and Helm read,
    /// turns an unquoted `Off` into the boolean false.)
    Disabled,
}

/// A kind of workload a policy can put hooks on (group apps/v1).
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
)]
pub enum WorkloadKind {
    #[default]
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 3] = [
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployments",
            WorkloadKind::StatefulSet => "statefulsets",
            WorkloadKind::DaemonSet => "daemonsets",
        }
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_kinds() -> Vec<WorkloadKind> {
    vec![WorkloadKind::Deployment]
}

/// Whether the policy patches workloads.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Patch the selected workloads.
    #[default]
    Enforce,
    /// Patch nothing; report on the status what would change.
    DryRun,
}

/// Observed state of a LifecyclePolicy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LifecyclePolicyStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Applied, Conflict, GracePeriodTooShort, PostStartVerified and PreStopVerified.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Workloads (of `kinds`) in the namespace that the selector matches.
    #[serde(default)]
    pub matched_workloads: i32,
    /// Matched workloads whose template carries every hook this policy owns there.
    #[serde(default)]
    pub patched_workloads: i32,
    /// Per-workload detail, problems first, at most 20 entries.
    #[serde(default)]
    pub workloads: Vec<WorkloadReport>,
    /// What the postStart hooks did in the selected pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_start: Option<HookReport>,
    /// What the preStop hooks did when the selected pods' containers were stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<HookReport>,
    /// Progress of the current generation's canary and waves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// How the matched workloads created after the policy got its hooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_writes: Option<FirstWrites>,
    /// Whether hooked pods left their Services before their containers were
    /// told to stop, for the current generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainStatus>,
}

/// The drain of terminating hooked pods behind a Service: when their
/// endpoints left every EndpointSlice (not ready, or gone), against when
/// the preStop let the container stop (its deletion plus the hook's leading
/// sleep). Pods never seen as a ready endpoint are not counted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DrainStatus {
    /// Terminating pods whose drain was timed.
    pub observed: i64,
    /// Out of the endpoints at least the margin before the stop.
    pub safe: i64,
    /// Still an endpoint later than that.
    #[serde(rename = "unsafe")]
    pub unsafe_: i64,
    /// The latest unsafe drain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_unsafe: Option<UnsafeDrain>,
    /// Seconds from a pod's deletion to its endpoints' removal, over the
    /// latest 256 timed pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removal_seconds: Option<RemovalSeconds>,
    /// The shortest sleep before quitting that the observed removals
    /// allow: the p99 removal plus the margin, rounded up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended_pre_stop_seconds: Option<i64>,
}

/// One unsafe drain.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UnsafeDrain {
    pub pod: String,
    /// Seconds between the endpoints' removal and the stop: negative when
    /// the container was told to stop while still an endpoint.
    pub gap_seconds: f64,
    pub message: String,
}

/// Percentiles of the removal delay, in seconds (millisecond precision).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RemovalSeconds {
    pub p50: f64,
    pub p99: f64,
}

/// How matched workloads created after the policy got its hooks: in their
/// first write (the admission webhook), or by a rollout of their own after
/// it (the webhook was off, down, or left them to the rollout gate).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FirstWrites {
    /// Hooked at admission: one rollout, with the hooks.
    pub admitted: i32,
    /// Hooked by the background path: a second rollout.
    pub second_rollouts: i32,
}

/// Where the rollout of the policy's current generation stands. The
/// status is its durable record: a restarted operator carries on from it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The policy generation this rollout is for.
    pub generation: i64,
    /// Canary, Waves, Complete or Halted.
    #[schemars(with = "String")]
    pub phase: RolloutPhase,
    /// Matched workloads carrying the current hooks, their new pods verified.
    pub rolled_out: i32,
    /// Matched workloads not patched yet.
    pub pending: i32,
    /// Patched workloads being verified now (the canary, or the current
    /// wave), as Kind/name; empty when none is.
    // Written when empty too: a wave's list comes by a JSON patch
    // (`reconcile::record_rollout`), whose fields the status's server-side
    // apply cannot drop by leaving them out.
    #[serde(default)]
    pub waiting_on: Vec<String>,
    /// Waves started so far, the canary included.
    #[serde(default)]
    pub waves: i32,
    /// When the latest wave was patched (its deadline runs from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_started_at: Option<Time>,
    /// Why the rollout stopped; it stays stopped until the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<RolloutHalt>,
}

status_words! {
    /// Where a rollout stands (`status.rollout.phase`).
    pub enum RolloutPhase {
        /// The first workload is being patched or verified.
        Canary,
        /// Waves after the canary (Immediate: workloads still to patch).
        Waves,
        /// Every matched workload carries the hooks, verified.
        Complete,
        /// A hook failed or a wave missed its deadline: nothing more is
        /// patched until the spec changes.
        Halted,
    }
}

/// A halted rollout: which workload, pod and container failed, and how.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutHalt {
    /// Kind/name of the workload.
    pub workload: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container: String,
    /// FailedPostStartHook, ExitCode, TimedOut, FailedPreStopHook or ProgressDeadlineExceeded.
    pub reason: String,
    /// The kubelet's message, or what the operator saw.
    pub message: String,
    /// Workloads given their template from before this policy back (Kind/name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reverted: Vec<String>,
    pub time: Time,
}

/// metav1.Condition as upstream APIs validate it (the `+kubebuilder`
/// markers of apimachinery's Condition), as a list keyed on `type` so that
/// server-side apply merges conditions one by one.
fn conditions_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "description": "Condition contains details for one aspect of the current state of this API Resource.",
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": {
                    "description": "When the condition last changed from one status to another.",
                    "type": "string",
                    "format": "date-time"
                },
                "message": {
                    "description": "Human-readable detail about the transition; may be empty.",
                    "type": "string",
                    "maxLength": 32768
                },
                "observedGeneration": {
                    "description": "The metadata.generation the condition was set for.",
                    "type": "integer",
                    "format": "int64",
                    "minimum": 0
                },
                "reason": {
                    "description": "Programmatic identifier for the condition's last transition, in CamelCase.",
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 1024,
                    "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
                },
                "status": {
                    "description": "True, False or Unknown.",
                    "type": "string",
                    "enum": ["True", "False", "Unknown"]
                },
                "type": {
                    "description": "Condition type in CamelCase, e.g. Ready.",
                    "type": "string",
                    "maxLength": 316,
                    "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
                }
            }
        }
    })
}

/// Outcomes of one hook, counted once per container instance for the
/// current generation of the policy. The status is the durable record: a
/// restarted operator carries on from these counts (see `counted`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HookReport {
    /// "ran/seen", for `kubectl get`.
    pub summary: String,
    /// How the runs were proven, comma-separated: marker (marker lines in the
    /// container's log), events (kubelet events and container states only),
    /// implied (postStart: the container ran and no failure was reported),
    /// containerExit (preStop: the hook stopped the container itself, as
    /// `nginx -s quit` does, and the container exited cleanly in time).
    pub evidence: String,
    /// Proven to have run to completion with exit code 0 (or, preStop, to have
    /// stopped the container cleanly; see evidence containerExit).
    pub ran: i64,
    /// postStart: the container reached running with no failure reported.
    pub implied: i64,
    /// Failed (kubelet FailedPostStartHook/FailedPreStopHook event or marker rc != 0).
    pub failed: i64,
    /// preStop: cut short by the grace period.
    #[serde(default)]
    pub timed_out: i64,
    /// preStop: the container exited on its own, and Kubernetes runs preStop
    /// only when it stops a container.
    #[serde(default)]
    pub not_triggered: i64,
    /// Ended without evidence either way.
    #[serde(default)]
    pub unknown: i64,
    /// Why the latest not-triggered container ended, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_not_triggered: Option<String>,
    /// preStop: the latest one stopped by its own container's exit, explained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_container_exit: Option<String>,
    /// The latest failure or timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<HookFailure>,
    /// How long the latest hook with a known duration ran, in seconds
    /// (millisecond precision), from its marker lines' log timestamps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_duration_seconds: Option<f64>,
    /// The longest known duration, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_seconds: Option<f64>,
    /// Why durations are unknown, when they are (hooks verified by events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_unknown: Option<String>,
    /// preStop: the latest hook that used 80% or more of its grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub near_grace_period: Option<String>,
    /// What the counts above already include, so that a restarted operator
    /// neither loses nor double counts a container instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted: Option<Watermark>,
}

/// The record behind a hook report's counts. A container instance's hook
/// happens at one time: when the container started (postStart), or when
/// its stop began (preStop: the pod's deletion request, else the container's
/// exit). Every instance whose hook happened before `before` is counted, and
/// of those at or after it exactly the ones listed in `after`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Watermark {
    /// Hooks that happened before this time are all counted.
    pub before: Time,
    /// Hooks at or after `before` that are counted already.
    #[serde(default)]
    #[schemars(length(max = 512))]
    pub after: Vec<CountedInstance>,
}

/// One counted container instance.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CountedInstance {
    /// The first 16 characters of the container ID (without the runtime prefix).
    pub container_id: String,
    /// When its hook happened (see Watermark).
    pub at: Time,
}

/// One failed hook.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HookFailure {
    /// The pod whose container's hook failed.
    pub pod: String,
    /// The container.
    pub container: String,
    /// FailedPostStartHook / FailedPreStopHook (kubelet events), ExitCode (a
    /// marker with a non-zero exit code) or TimedOut (preStop cut by the
    /// grace period).
    pub reason: String,
    /// The kubelet's message, or what the operator observed.
    pub message: String,
    /// When the failure was observed.
    pub time: Time,
}

/// What the policy did, or would do, to one workload.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadReport {
    /// The workload's namespace: on a ClusterLifecyclePolicy only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,
    pub kind: WorkloadKind,
    /// Workload name.
    pub name: String,
    /// Error, Contested, LedgerDamaged, Conflict, Reverted, Pending,
    /// WouldPatch, NoContainers, UpToDate, Staged (the template carries the
    /// hooks but the workload's update strategy restarts no pod for it) or
    /// Patched.
    #[schemars(with = "String")]
    pub state: WorkloadState,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

status_words! {
    /// What the policy did, or would do, to one workload
    /// (`status.workloads[].state`), a problem first.
    pub enum WorkloadState {
        /// A write failed.
        Error,
        /// Another field manager took the slots back too often.
        Contested,
        /// The ledger disagreed with managedFields and was rebuilt.
        LedgerDamaged,
        /// A hook stays another's (onConflict: Skip, or an older policy).
        Conflict,
        /// Handed its template from before the policy back by a halted rollout.
        Reverted,
        /// Waiting: the rollout, a rollout slot, or another policy.
        Pending,
        /// DryRun: the policy would change the template.
        WouldPatch,
        /// No selected container in the pod template.
        NoContainers,
        /// DryRun: nothing would change.
        UpToDate,
        /// The template carries the hooks, but its update strategy restarts no pod for it.
        Staged,
        /// The template carries the hooks.
        Patched,
    }
}

impl From<&PolicySelector> for LabelSelector {
    fn from(s: &PolicySelector) -> Self {
        LabelSelector {
            match_labels: s.match_labels.clone(),
            match_expressions: s.match_expressions.as_ref().map(|exprs| {
                exprs
                    .iter()
                    .map(|e| LabelSelectorRequirement {
                        key: e.key.clone(),
                        operator: format!("{:?}", e.operator),
                        values: e.values.clone(),
                    })
                    .collect()
            }),
        }
    }
}

impl LifecyclePolicy {
    /// A policy without a namespace is a cluster policy as the engine sees
    /// it (`ClusterLifecyclePolicy::view`): the API serves no namespaced
    /// object without one.
    pub fn id(&self) -> PolicyId {
        let name = self.metadata.name.clone().unwrap_or_default();
        match &self.metadata.namespace {
            Some(namespace) => PolicyId::Namespaced {
                namespace: namespace.clone(),
                name,
            },
            None => PolicyId::Cluster { name },
        }
    }

    /// "namespace/name": how markers and the observer name the policy.
    pub fn reference(&self) -> String {
        self.id().reference()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Complete rollout says it waits on nothing (`[]`), so that the
    /// status's apply takes back the last wave's list.
    #[test]
    fn an_empty_waiting_on_is_written() {
        let r = RolloutStatus {
            generation: 2,
            phase: RolloutPhase::Complete,
            rolled_out: 5,
            pending: 0,
            waiting_on: Vec::new(),
            waves: 3,
            wave_started_at: None,
            halted: None,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap()["waitingOn"],
            serde_json::json!([])
        );
    }

    /// Each word is written exactly as the string it replaced; text this
    /// version does not write still parses, and is written back unchanged.
    #[test]
    fn status_words_are_the_strings_they_always_were() {
        let phases = [
            (RolloutPhase::Canary, "Canary"),
            (RolloutPhase::Waves, "Waves"),
            (RolloutPhase::Complete, "Complete"),
            (RolloutPhase::Halted, "Halted"),
        ];
        for (phase, text) in phases {
            assert_eq!(serde_json::to_value(&phase).unwrap(), text);
            assert_eq!(
                serde_json::from_value::<RolloutPhase>(text.into()).unwrap(),
                phase
            );
            assert_eq!(phase.to_string(), text);
        }
        for state in [
            WorkloadState::Error,
            WorkloadState::WouldPatch,
            WorkloadState::NoContainers,
        ] {
            let text = format!("{state:?}");
            assert_eq!(serde_json::to_value(&state).unwrap(), text.as_str());
            assert_eq!(state, text.as_str());
        }
        let other: RolloutPhase = serde_json::from_value("Rolling".into()).unwrap();
        assert_eq!(other, RolloutPhase::Other("Rolling".into()));
        assert_eq!(serde_json::to_value(&other).unwrap(), "Rolling");
        let stored: RolloutStatus = serde_json::from_value(serde_json::json!(
            {"generation": 1, "phase": "", "rolledOut": 0, "pending": 0}
        ))
        .unwrap();
        assert_eq!(stored.phase, RolloutPhase::Other(String::new()));
    }
}
