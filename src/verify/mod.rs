//! From pods, kubelet events and logs to counted hooks. Pure: one hook's
//! outcome in one container instance (`outcome`), the observer's index
//! (`index`: instances and their failure events, durable counts and their
//! watermark, workload health), marker lines out of a log (`logread`), fair
//! log-stream pools (`pool`). The I/O: `observer` watches pods and events,
//! follows logs, and names the policies whose counts changed.

pub mod drain;
pub mod index;
pub mod logread;
pub mod observer;
pub mod outcome;
pub mod pool;
