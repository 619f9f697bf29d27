//! A policy's hooks as they go on pod templates: with `verification:
//! Markers`, shell-script exec hooks are wrapped to log marker lines
//! (see `marker`). Kept apart from `types` so the API types depend on
//! nothing else in the crate.

use crate::api::types::{LifecyclePolicy, LifecyclePolicySpec, Verification};
use crate::hooks::hook::HookKind;
use crate::hooks::marker;

/// The spec with its hooks rendered. `policy` is "namespace/name", the name
/// the marker carries; `uid` the policy's UID, from which the markers' token
/// is derived (see `marker::token`).
pub fn render(spec: &LifecyclePolicySpec, policy: &str, uid: Option<&str>) -> LifecyclePolicySpec {
    let mut out = spec.clone();
    if spec.verification == Verification::Markers {
        out.post_start = spec
            .post_start
            .as_ref()
            .map(|h| marker::wrap(h, HookKind::PostStart, policy, uid).0);
        out.pre_stop = spec
            .pre_stop
            .as_ref()
            .map(|h| marker::wrap(h, HookKind::PreStop, policy, uid).0);
    }
    out
}

impl LifecyclePolicy {
    /// The spec with its hooks as they go on pod templates (see [`render`]).
    pub fn rendered(&self) -> LifecyclePolicySpec {
        render(&self.spec, &self.reference(), self.metadata.uid.as_deref())
    }
}

/// Each hook's script as rendered paired with the policy's own, where the
/// two differ (marker-wrapped shell scripts): how failure messages show what
/// the user wrote instead of the wrapper.
pub fn scripts(
    spec: &LifecyclePolicySpec,
    rendered: &LifecyclePolicySpec,
) -> Vec<(String, String)> {
    // The script is the third word of `<shell> -c <script> [$0 args...]`.
    let script = |h: Option<&crate::api::types::Handler>| {
        h.and_then(|h| h.exec.as_ref())
            .and_then(|e| e.command.get(2).cloned())
    };
    [
        (spec.post_start.as_ref(), rendered.post_start.as_ref()),
        (spec.pre_stop.as_ref(), rendered.pre_stop.as_ref()),
    ]
    .into_iter()
    .filter_map(|(own, out)| Some((script(out)?, script(own)?)))
    .filter(|(out, own)| out != own)
    .collect()
}
