//! Which policy wins a contested slot, pure: one total order over the
//! policies that can meet on a workload, namespaced and cluster-wide.
//!
//! The rules, as users state them: a namespaced policy wins over a cluster
//! policy (the team knows its app) unless the cluster policy forbids
//! overriding; between policies of one kind the older wins. Those three
//! alone are not an order: an old cluster policy that allows overriding, a
//! newer one that forbids it and a team's policy would each beat the next.
//! So a policy that forbids overriding ranks above every policy that does
//! not, whatever its age: a mandate is never outranked by a policy that
//! yields even to a team's. Within a tier the older wins, then the name.

use k8s_openapi::jiff::Timestamp;

/// Where a policy stands before its age counts; the lower wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// A cluster policy with `override: Forbid`.
    Mandate,
    /// A namespaced policy, on its own namespace.
    Team,
    /// A cluster policy that lets a namespaced one win (the default).
    Platform,
}

/// The key policies are sorted by, the winner first. `name` tells apart
/// policies created in the same second: their owner names, which differ.
pub fn key(
    tier: Tier,
    created: Option<Timestamp>,
    name: &str,
) -> (Tier, Option<Timestamp>, String) {
    (tier, created, name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: i64) -> Option<Timestamp> {
        Some(Timestamp::from_second(1_800_000_000 + s).unwrap())
    }

    #[test]
    fn a_team_policy_wins_over_a_platform_one_but_not_over_a_mandate() {
        let team = key(Tier::Team, at(50), "team");
        assert!(team < key(Tier::Platform, at(0), "cluster_old"));
        assert!(key(Tier::Mandate, at(99), "cluster_new") < team);
    }

    #[test]
    fn within_a_kind_the_older_wins() {
        assert!(key(Tier::Team, at(1), "b") < key(Tier::Team, at(2), "a"));
        assert!(key(Tier::Platform, at(1), "cluster_b") < key(Tier::Platform, at(2), "cluster_a"));
        assert!(key(Tier::Team, at(1), "a") < key(Tier::Team, at(1), "b"));
    }

    #[test]
    fn the_cycle_of_the_three_rules_is_broken_for_the_mandate() {
        // old platform policy, newer mandate, a team's: the mandate wins.
        let mut all = [
            key(Tier::Platform, at(0), "cluster_old"),
            key(Tier::Mandate, at(10), "cluster_new"),
            key(Tier::Team, at(5), "team"),
        ];
        all.sort();
        let names: Vec<&str> = all.iter().map(|k| k.2.as_str()).collect();
        assert_eq!(names, ["cluster_new", "team", "cluster_old"]);
    }

    proptest! {
        /// Same tier: age decides, and the order is total (no two keys of
        /// distinct names are equal).
        #[test]
        fn age_decides_within_a_tier(a in 0i64..100, b in 0i64..100, t in 0usize..3) {
            let tier = [Tier::Mandate, Tier::Team, Tier::Platform][t];
            let (x, y) = (key(tier, at(a), "x"), key(tier, at(b), "y"));
            prop_assert_ne!(&x, &y);
            if a != b {
                prop_assert_eq!(x < y, a < b);
            }
        }
    }
}
