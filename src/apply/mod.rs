//! From a policy to patched templates. Pure at the core: a workload as
//! cached (`workload`), the fields of a template the operator can own
//! (`slot`), the ledger that records what a policy owns, where it is kept
//! and how it is checked (`ledger`), one policy's plan for one template (`plan`), every policy of
//! a namespace indexed for contention (`neighbours`), the namespaces a
//! cluster policy acts in (`namespaces`), who wins a contested slot
//! (`precedence`), a policy over all its
//! workloads (`decide`), the safe rollout's step (`rollout`), request bodies
//! (`patch`, `wire`). The I/O: `execute` carries the writes out, `release`
//! hands everything back before an uninstall.

pub mod decide;
pub mod execute;
#[cfg(test)]
pub mod fixtures;
pub mod ledger;
pub mod namespaces;
pub mod neighbours;
pub mod patch;
pub mod plan;
pub mod policies;
pub mod precedence;
pub mod preview;
pub mod release;
pub mod rollout;
pub mod slot;
pub mod wire;
pub mod workload;
