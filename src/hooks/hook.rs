//! The two container lifecycle hooks. Depends on nothing else in the crate.

/// The grace period a preStop has when the pod spec sets none: the API
/// server's default for terminationGracePeriodSeconds.
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// A container lifecycle hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookKind {
    PostStart,
    PreStop,
}

impl HookKind {
    pub const ALL: [HookKind; 2] = [HookKind::PostStart, HookKind::PreStop];

    /// The field name under `container.lifecycle`, also used in markers,
    /// metrics and the status.
    pub fn field(self) -> &'static str {
        match self {
            HookKind::PostStart => "postStart",
            HookKind::PreStop => "preStop",
        }
    }

    pub fn from_field(s: &str) -> Option<Self> {
        match s {
            "postStart" => Some(HookKind::PostStart),
            "preStop" => Some(HookKind::PreStop),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_round_trip() {
        for k in HookKind::ALL {
            assert_eq!(HookKind::from_field(k.field()), Some(k));
        }
        assert_eq!(HookKind::from_field("prestop"), None);
    }
}
