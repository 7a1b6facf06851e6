//! What a cluster host did since it started, counted as it happens and read by `GET /metrics`.
//!
//! The queue's gauges (jobs by status, workers) come from the host when asked; these are the
//! monotonic counts a monitoring system takes rates of. Relaxed atomics: each count is exact,
//! a read of several may straddle one job's changes.

use std::sync::atomic::{AtomicU64, Ordering};

use proto::JobStatus;
use proto::cluster::AttemptOutcome;

/// The outcomes of an attempt, in the order [`Counters::attempts`] gives them.
pub(crate) const OUTCOMES: [AttemptOutcome; 5] = [
    AttemptOutcome::Completed,
    AttemptOutcome::Failed,
    AttemptOutcome::TimedOut,
    AttemptOutcome::Cancelled,
    AttemptOutcome::Lost,
];

/// The terminal statuses, in the order [`Counters::finished_totals`] gives them.
pub(crate) const FINISHED: [JobStatus; 3] = [
    JobStatus::Completed,
    JobStatus::Failed,
    JobStatus::Cancelled,
];

/// The counts of one host.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    submitted: AtomicU64,
    attempts: [AtomicU64; OUTCOMES.len()],
    finished: [AtomicU64; FINISHED.len()],
}

impl Counters {
    /// `jobs` new jobs were accepted (a repeated idempotency key is not a new job).
    pub(crate) fn submitted(&self, jobs: usize) {
        self.submitted
            .fetch_add(u64::try_from(jobs).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// An attempt ended with `outcome`.
    pub(crate) fn attempt_ended(&self, outcome: AttemptOutcome) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.attempts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A job reached `status`; only terminal statuses count.
    pub(crate) fn finished(&self, status: JobStatus) {
        if let Some(i) = FINISHED.iter().position(|s| *s == status) {
            self.finished[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Jobs accepted so far.
    pub(crate) fn submitted_total(&self) -> u64 {
        self.submitted.load(Ordering::Relaxed)
    }

    /// Attempts ended so far, per outcome of [`OUTCOMES`].
    pub(crate) fn attempts(&self) -> [u64; OUTCOMES.len()] {
        std::array::from_fn(|i| self.attempts[i].load(Ordering::Relaxed))
    }

    /// Jobs finished so far, per status of [`FINISHED`].
    pub(crate) fn finished_totals(&self) -> [u64; FINISHED.len()] {
        std::array::from_fn(|i| self.finished[i].load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_count_goes_to_its_own_slot_and_non_terminal_statuses_are_not_counted() {
        let c = Counters::default();
        c.submitted(3);
        c.submitted(2);
        c.attempt_ended(AttemptOutcome::Lost);
        c.attempt_ended(AttemptOutcome::Lost);
        c.attempt_ended(AttemptOutcome::Completed);
        c.finished(JobStatus::Running);
        c.finished(JobStatus::Pending);
        c.finished(JobStatus::Cancelled);
        assert_eq!(c.submitted_total(), 5);
        assert_eq!(c.attempts(), [1, 0, 0, 0, 2]);
        assert_eq!(c.finished_totals(), [0, 0, 1]);
    }
}
