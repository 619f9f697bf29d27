//! The mutating admission webhook: a workload created or replaced after its
//! policy carries the hooks in that same write, so its first pods have them
//! and no second rollout follows. `gate` says which policies may inject
//! (those whose rollout is complete), `mutate` carries out on the request's
//! object what the background path would write.

pub mod gate;
pub mod mutate;
pub mod review;
pub mod webhook;
