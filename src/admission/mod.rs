//! The mutating admission webhook the operator serves ("hooks from the first
//! pod"): the operator is its own CA, no cert-manager needed.
//!
//! - `certs`: the CA and serving certificate, pure at the core (generate,
//!   decide on rotation), and the edge that keeps them in one Secret and the
//!   CA in the MutatingWebhookConfiguration's `caBundle`.
//! - `server`: HTTPS for the webhook's Router, with certificates swapped at
//!   run time without restarting the listener.

pub mod certs;
pub mod server;

#[cfg(test)]
mod faults;
