//! Who a policy is, for both kinds of policy, and the names it goes by on
//! what it touches. The one home of those names: a `ClusterLifecyclePolicy`
//! and a `LifecyclePolicy` of the same name never share a ledger, a field
//! manager or a marker.

use std::fmt;

/// A policy's identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyId {
    /// A `LifecyclePolicy`: it acts in its own namespace.
    Namespaced { namespace: String, name: String },
    /// A `ClusterLifecyclePolicy`: it acts in the namespaces it selects.
    Cluster { name: String },
}

/// What a cluster policy's owner name starts with. Object names are DNS
/// subdomains, which hold no `_`: no namespaced policy's name can start so.
const CLUSTER_OWNER: &str = "cluster_";

impl PolicyId {
    pub fn name(&self) -> &str {
        match self {
            PolicyId::Namespaced { name, .. } | PolicyId::Cluster { name } => name,
        }
    }

    /// The name its ledger and its field manager carry on a workload
    /// (`apply::ledger`): a namespaced policy's own name, unique among the
    /// policies of its namespace; a cluster policy's after `cluster_`.
    pub fn owner(&self) -> String {
        match self {
            PolicyId::Namespaced { name, .. } => name.clone(),
            PolicyId::Cluster { name } => format!("{CLUSTER_OWNER}{name}"),
        }
    }

    /// The policy an [`owner`](Self::owner) name stands for, as seen from
    /// a workload's namespace (a namespaced owner's namespace is not in it).
    pub fn from_owner(owner: &str) -> Self {
        match owner.strip_prefix(CLUSTER_OWNER) {
            Some(name) => PolicyId::Cluster { name: name.into() },
            None => PolicyId::Namespaced {
                namespace: String::new(),
                name: owner.into(),
            },
        }
    }

    /// "LifecyclePolicy web" (in the workload's namespace) or "ClusterLifecyclePolicy drain".
    pub fn kind_and_name(&self) -> String {
        match self {
            PolicyId::Namespaced { name, .. } => format!("LifecyclePolicy {name}"),
            PolicyId::Cluster { name } => format!("ClusterLifecyclePolicy {name}"),
        }
    }

    /// How markers and the observer name it: "namespace/name", or a cluster
    /// policy's name alone (names hold no `/`).
    pub fn reference(&self) -> String {
        self.to_string()
    }

    /// The policy a [`reference`](Self::reference) names.
    pub fn from_reference(reference: &str) -> Self {
        match reference.split_once('/') {
            Some((namespace, name)) => PolicyId::Namespaced {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
            None => PolicyId::Cluster {
                name: reference.to_string(),
            },
        }
    }
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyId::Namespaced { namespace, name } => write!(f, "{namespace}/{name}"),
            PolicyId::Cluster { name } => f.write_str(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An object name (a DNS subdomain, short here).
    const NAME: &str = "[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?";

    proptest! {
        /// A namespaced policy and a cluster policy never go by the same
        /// owner or reference, whatever their names and namespaces.
        #[test]
        fn the_two_kinds_never_share_a_name_on_a_workload(
            ns in NAME, a in NAME, b in NAME,
        ) {
            let namespaced = PolicyId::Namespaced { namespace: ns, name: a };
            let cluster = PolicyId::Cluster { name: b };
            prop_assert_ne!(namespaced.owner(), cluster.owner());
            prop_assert_ne!(namespaced.reference(), cluster.reference());
            prop_assert_eq!(PolicyId::from_reference(&namespaced.reference()), namespaced);
            prop_assert_eq!(PolicyId::from_reference(&cluster.reference()), cluster);
        }
    }

    #[test]
    fn names_as_they_are_written() {
        let n = PolicyId::Namespaced {
            namespace: "web".into(),
            name: "drain".into(),
        };
        let c = PolicyId::Cluster {
            name: "drain".into(),
        };
        assert_eq!(
            (n.owner(), n.reference()),
            ("drain".into(), "web/drain".into())
        );
        assert_eq!(
            (c.owner(), c.reference()),
            ("cluster_drain".into(), "drain".into())
        );
        assert_eq!((n.name(), c.name()), ("drain", "drain"));
    }
}
