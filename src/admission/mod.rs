//! The mutating admission webhook ("hooks from the first pod"): a workload
//! created or replaced after its policy carries the hooks in that same
//! write, so its first pods have them and no second rollout follows.
//!
//! - `gate`: which policies may inject (those whose rollout is complete).
//! - `mutate`: carries out on the request's object what the background
//!   path would write.
//! - `review`: one AdmissionReview answered from the caches.
//! - `webhook`: `POST /mutate`.
//! - `certs`: the operator's own CA and serving certificate, pure at the
//!   core (generate, decide on rotation), and the edge that keeps them in one
//!   Secret and the CA in the MutatingWebhookConfiguration's `caBundle`.
//! - `server`: HTTPS for the webhook's Router, certificates swapped at run
//!   time without restarting the listener.
//! - `service`: all of it as the operator runs it, on every replica.

pub mod certs;
pub mod gate;
pub mod mutate;
pub mod review;
pub mod server;
pub mod service;
pub mod webhook;

#[cfg(test)]
mod faults;
