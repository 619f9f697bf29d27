//! The process around the controller: the time-bounded API client
//! (`client`), how watches recover (`watches`), waiting for a cache's first
//! list (`ready`), controller progress for `/healthz` (`liveness`),
//! Prometheus metrics (`metrics`) and the health/metrics port (`server`).

pub mod client;
pub mod liveness;
pub mod metrics;
pub mod ready;
pub mod server;
pub mod watches;
