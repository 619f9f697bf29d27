//! The `LifecyclePolicy` API: spec, status, CRD schema and CEL rules
//! (`types`); the condition types and reasons users match on (`names`);
//! who a policy is and the names it goes by on workloads (`identity`).
//! Depends on nothing else in the crate.

pub mod cluster;
pub mod identity;
pub mod names;
pub mod types;
