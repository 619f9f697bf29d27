//! The names users and tools match on, each written once: the condition
//! types on a policy's status (`ConditionType`) and their `status` words, and the reasons of its
//! conditions, of its events and of the hook failures it reports (`reason`). What the operator writes and
//! what it matches come from here, so they cannot drift apart. (Tests keep
//! the literals: they check what users see.)

/// The condition types on a policy's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    /// Everything below is fine: applied, no conflict, hooks not failing,
    /// the rollout not halted.
    Ready,
    /// Every matched workload carries the policy's hooks.
    Applied,
    /// A hook stays another's (onConflict: Skip, an older policy, a field
    /// manager that took it back).
    Conflict,
    /// A preStop outlasts, or nearly outlasts, the grace period.
    GracePeriodTooShort,
    /// Every ledger agrees with managedFields.
    LedgerIntact,
    /// The rollout stopped on a failure or a missed deadline.
    RolloutHalted,
    PostStartVerified,
    PreStopVerified,
    /// Hooked pods left their Services a margin before their containers
    /// were told to stop (advisory: Ready does not depend on it).
    DrainSafe,
}

impl ConditionType {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Applied => "Applied",
            ConditionType::Conflict => "Conflict",
            ConditionType::GracePeriodTooShort => "GracePeriodTooShort",
            ConditionType::LedgerIntact => "LedgerIntact",
            ConditionType::RolloutHalted => "RolloutHalted",
            ConditionType::PostStartVerified => "PostStartVerified",
            ConditionType::PreStopVerified => "PreStopVerified",
            ConditionType::DrainSafe => "DrainSafe",
        }
    }
}

/// A condition's status, as metav1.Condition spells it.
pub mod status {
    pub const TRUE: &str = "True";
    pub const FALSE: &str = "False";
    pub const UNKNOWN: &str = "Unknown";
}

/// Reasons, CamelCase: of conditions, of events on the policy, and of hook
/// failures (a halted rollout's reason is its failure's). Some name a
/// condition type too.
pub mod reason {
    // Applied (and Ready, when Applied is not True).
    pub const APPLIED: &str = "Applied";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const PATCH_FAILED: &str = "PatchFailed";
    pub const DRY_RUN: &str = "DryRun";
    pub const PENDING: &str = "Pending";
    // Conflict (Ready: Conflict).
    pub const CONFLICT: &str = "Conflict";
    pub const NO_CONFLICT: &str = "NoConflict";
    pub const HOOKS_NOT_APPLIED: &str = "HooksNotApplied";
    // GracePeriodTooShort.
    pub const GRACE_PERIOD_SUFFICIENT: &str = "GracePeriodSufficient";
    pub const PRE_STOP_OUTLASTS_GRACE_PERIOD: &str = "PreStopOutlastsGracePeriod";
    pub const PRE_STOP_NEAR_GRACE_PERIOD: &str = "PreStopNearGracePeriod";
    // LedgerIntact; LedgerDamaged is also an event's.
    pub const LEDGER_INTACT: &str = "LedgerIntact";
    pub const LEDGER_DAMAGED: &str = "LedgerDamaged";
    // RolloutHalted (True: the halt's own reason); also Ready's and an event's.
    pub const ROLLOUT_HALTED: &str = "RolloutHalted";
    pub const NOT_HALTED: &str = "NotHalted";
    // PostStartVerified, PreStopVerified; TimedOut is also a failure's.
    pub const HOOKS_RAN: &str = "HooksRan";
    pub const HOOK_FAILED: &str = "HookFailed";
    pub const TIMED_OUT: &str = "TimedOut";
    pub const NOT_OBSERVED_YET: &str = "NotObservedYet";
    // DrainSafe.
    pub const DRAINED: &str = "Drained";
    pub const STOPPED_WHILE_SERVING: &str = "StoppedWhileServing";
    // Ready.
    pub const READY: &str = "Ready";
    /// In place of a reason from outside (a halt's) that the CRD would refuse.
    pub const UNKNOWN: &str = "Unknown";

    // Events on the policy.
    pub const DEPLOYMENT_PATCHED: &str = "DeploymentPatched";
    pub const CONTESTED: &str = "Contested";
    pub const RESTORE_INCOMPLETE: &str = "RestoreIncomplete";
    pub const ROLLOUT_WAVE: &str = "RolloutWave";

    // Hook failures. The kubelet's event reasons, kept as the failure's.
    pub const FAILED_POST_START_HOOK: &str = "FailedPostStartHook";
    pub const FAILED_PRE_STOP_HOOK: &str = "FailedPreStopHook";
    /// A marker line with a non-zero exit code.
    pub const EXIT_CODE: &str = "ExitCode";
    /// A wave not rolled out, its hooks verified, within the deadline.
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
}
