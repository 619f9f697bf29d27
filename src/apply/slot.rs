//! A slot, pure: one field of a pod template the operator can own (a
//! container's postStart or preStop, or the pod's
//! terminationGracePeriodSeconds), and its text form, `web/preStop` or
//! `terminationGracePeriodSeconds`, as ledgers and messages write it.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::apply::workload::PodShape;
use crate::hooks::hook::HookKind;

/// One field of the pod template the operator can own.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    Hook { container: String, kind: HookKind },
    GracePeriod,
}

const GRACE_KEY: &str = "terminationGracePeriodSeconds";

impl fmt::Display for Slot {
    // Container names are DNS labels, so `/` cannot appear in them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slot::Hook { container, kind } => write!(f, "{container}/{}", kind.field()),
            Slot::GracePeriod => f.write_str(GRACE_KEY),
        }
    }
}

impl Slot {
    pub fn hook(container: &str, kind: HookKind) -> Self {
        Slot::Hook {
            container: container.to_string(),
            kind,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        if s == GRACE_KEY {
            return Some(Slot::GracePeriod);
        }
        let (container, field) = s.rsplit_once('/')?;
        let kind = HookKind::from_field(field)?;
        Some(Slot::hook(container, kind))
    }

    /// The slot's current value in a pod spec, as JSON; None when unset.
    pub fn current(&self, pod: &PodShape) -> Option<Value> {
        match self {
            Slot::GracePeriod => pod.termination_grace_period_seconds.map(Value::from),
            Slot::Hook { container, kind } => pod.find(container)?.2.handler(kind.field()).cloned(),
        }
    }
}

impl Serialize for Slot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Slot {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Slot::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown slot {s:?}")))
    }
}
