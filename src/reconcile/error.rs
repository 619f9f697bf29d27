//! Why a reconcile did not finish, classified once: how soon to retry
//! ([`Error::retry`]) and the kind counted in the metrics ([`Error::kind`]).
//! Some are flow, not failure: a cleanup waiting for rollout slots, writes
//! refused because our cached copy was stale.

use kube::runtime::finalizer::Error as Finalizer;

use super::RECONCILE_TIMEOUT;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<Finalizer<Error>>),
    #[error("{0} workloads could not be written (see the policy's status)")]
    WritesFailed(usize),
    #[error("{0} workloads still carry this policy's hooks (waiting for rollout slots)")]
    CleanupPending(usize),
    #[error("reconcile did not finish within {}s", RECONCILE_TIMEOUT.as_secs())]
    Timeout,
    #[error("{0} workloads changed since they were read (another writer); retrying")]
    StaleWrites(usize),
    #[error("the policy's status could not be written: {0}")]
    StatusRefused(String),
    /// Recording a rollout step failed: nothing it causes was written.
    #[error(
        "the rollout step could not be recorded on the policy's status ({0}); no workload was changed"
    )]
    RolloutNotRecorded(String),
}

/// How a failed reconcile is retried.
#[derive(Debug, PartialEq, Eq)]
pub enum Retry {
    /// Waiting, not failing: releases queue behind maxConcurrentRollouts
    /// (how many workloads still wait).
    Pending(usize),
    /// Our cache lagged a write (a finalizer added twice, a policy already
    /// gone): the watch event that follows brings the new version.
    StaleRead,
    /// Exponential backoff from this many seconds.
    Backoff(u64),
}

impl Error {
    /// The apply or cleanup error inside the finalizer's wrapping, or this.
    fn inner(&self) -> &Error {
        match self {
            Error::Finalizer(f) => match f.as_ref() {
                Finalizer::ApplyFailed(e) | Finalizer::CleanupFailed(e) => e,
                _ => self,
            },
            e => e,
        }
    }

    pub fn retry(&self) -> Retry {
        match self.inner() {
            Error::CleanupPending(n) => Retry::Pending(*n),
            _ if self.is_stale_read() => Retry::StaleRead,
            // Writes refused because the workload changed since it was
            // read are retried soon: the watch brings the new version.
            Error::StaleWrites(_) => Retry::Backoff(1),
            _ => Retry::Backoff(5),
        }
    }

    /// The metric label of the error.
    pub fn kind(&self) -> &'static str {
        match self.inner() {
            Error::Kube(_) => "api",
            Error::Finalizer(_) if self.is_stale_read() => "stale_read",
            Error::Finalizer(_) => "finalizer",
            Error::WritesFailed(_) => "writes_failed",
            Error::CleanupPending(_) => "cleanup_pending",
            Error::Timeout => "timeout",
            Error::StaleWrites(_) => "stale_writes",
            Error::StatusRefused(_) => "status_refused",
            Error::RolloutNotRecorded(_) => "rollout_not_recorded",
        }
    }

    /// A finalizer write rejected because the object changed or vanished
    /// since the cached copy was read.
    fn is_stale_read(&self) -> bool {
        let Error::Finalizer(f) = self else {
            return false;
        };
        match f.as_ref() {
            Finalizer::AddFinalizer(kube::Error::Api(e))
            | Finalizer::RemoveFinalizer(kube::Error::Api(e)) => stale_code(e.code),
            _ => false,
        }
    }
}

/// `failed` writes, `stale` of them refused because the workload changed.
pub fn write_error(failed: usize, stale: usize) -> Error {
    if failed == stale {
        Error::StaleWrites(failed)
    } else {
        Error::WritesFailed(failed)
    }
}

/// The workload changed or vanished since it was read (409, 404, or the 422
/// of a failed JSON-patch `test`).
pub fn is_stale_write(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(a) if stale_code(a.code))
}

fn stale_code(code: u16) -> bool {
    matches!(code, 404 | 409 | 422)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("m", "r")
                .with_code(code)
                .boxed(),
        )
    }

    fn wrapped(e: Finalizer<Error>) -> Error {
        Error::Finalizer(Box::new(e))
    }

    #[test]
    fn every_error_is_classified_once_through_the_finalizer() {
        let cases = [
            (
                wrapped(Finalizer::CleanupFailed(Error::CleanupPending(3))),
                Retry::Pending(3),
                "cleanup_pending",
            ),
            (
                wrapped(Finalizer::AddFinalizer(api(409))),
                Retry::StaleRead,
                "stale_read",
            ),
            (
                wrapped(Finalizer::RemoveFinalizer(api(404))),
                Retry::StaleRead,
                "stale_read",
            ),
            (
                wrapped(Finalizer::AddFinalizer(api(500))),
                Retry::Backoff(5),
                "finalizer",
            ),
            (
                wrapped(Finalizer::ApplyFailed(Error::StaleWrites(2))),
                Retry::Backoff(1),
                "stale_writes",
            ),
            (
                wrapped(Finalizer::CleanupFailed(Error::StaleWrites(2))),
                Retry::Backoff(1),
                "stale_writes",
            ),
            (
                wrapped(Finalizer::ApplyFailed(Error::WritesFailed(1))),
                Retry::Backoff(5),
                "writes_failed",
            ),
            (Error::Timeout, Retry::Backoff(5), "timeout"),
            (
                wrapped(Finalizer::ApplyFailed(Error::Kube(api(500)))),
                Retry::Backoff(5),
                "api",
            ),
            (
                wrapped(Finalizer::ApplyFailed(Error::StatusRefused("x".into()))),
                Retry::Backoff(5),
                "status_refused",
            ),
            (
                wrapped(Finalizer::ApplyFailed(Error::RolloutNotRecorded(
                    "x".into(),
                ))),
                Retry::Backoff(5),
                "rollout_not_recorded",
            ),
        ];
        for (e, retry, kind) in cases {
            assert_eq!((e.retry(), e.kind()), (retry, kind), "{e}");
        }
    }

    #[test]
    fn writes_all_refused_as_stale_are_retried_soon() {
        assert!(matches!(write_error(2, 2), Error::StaleWrites(2)));
        assert!(matches!(write_error(2, 1), Error::WritesFailed(2)));
        assert!(is_stale_write(&api(422)) && !is_stale_write(&api(403)));
    }
}
