//! The process around the controller: the time-bounded API client
//! (`client`), how watches recover (`watches`), waiting for a cache's first
//! list (`ready`), controller progress for `/healthz` (`liveness`),
//! Prometheus metrics (`metrics`), the health/metrics port (`server`),
//! leader election (`leader`), a shutdown within a budget (`shutdown`) and
//! the API server's version (`server_version`).

pub mod client;
pub mod leader;
pub mod liveness;
pub mod metrics;
pub mod ready;
pub mod server;
pub mod server_version;
pub mod shutdown;
pub mod watches;
