//! The `LifecyclePolicy` API: spec, status, CRD schema and CEL rules.
//! Depends on nothing else in the crate.

pub mod types;
