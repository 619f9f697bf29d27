//! `kubectl lifecycle`, the kubectl plugin: from a policy down to one pod's
//! hooks, and a dry run before applying. Pure at the core, like the
//! operator: each command reads what it needs (`fetch`), builds a view of
//! it (`status`, `pod`, `explain`, `diff`), and renders the view as text,
//! JSON or YAML (`render`). The command line is `cli`, the wiring `run`.

pub mod cli;
pub mod diff;
pub mod dryrun;
pub mod error;
pub mod explain;
pub mod fetch;
pub mod pod;
pub mod render;
pub mod run;
pub mod status;
pub mod style;

pub use run::main;

#[cfg(test)]
mod tests;
