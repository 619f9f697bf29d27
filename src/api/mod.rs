//! The `LifecyclePolicy` API: spec, status, CRD schema and CEL rules
//! (`types`); the condition types and reasons users match on (`names`).
//! Depends on nothing else in the crate.

pub mod names;
pub mod types;
