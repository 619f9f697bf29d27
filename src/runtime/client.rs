//! The API client with every call bounded in time.
//!
//! kube's defaults leave a response without a deadline (a half-open
//! connection can hold a call for minutes) and retry a 429 up to 15 times,
//! honouring any Retry-After. Here a call must produce its response headers
//! within `CALL_TIMEOUT`, retries included; a watch or a followed log answers
//! at once and then streams for as long as it likes. Reading a body is bounded
//! by the reconcile timeout around it.

use std::time::Duration;

use kube::client::ClientBuilder;
use tower::timeout::{Timeout, TimeoutLayer};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Deadlines on connecting and writing (kube has no read timeout that would
/// spare watches and followed logs; see `bounded`).
pub fn configure(config: &mut kube::Config) {
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.write_timeout = Some(CALL_TIMEOUT);
}

/// Bounds every call until its response headers arrive.
pub fn bounded<S>(builder: ClientBuilder<S>) -> ClientBuilder<Timeout<S>> {
    builder.with_layer(&TimeoutLayer::new(CALL_TIMEOUT))
}
