//! Delivering one job's events to the receiver the caller gave with the job.
//!
//! Progress and log events are dropped when the receiver is full: they are advisory and must
//! not stall the executor. Output and the final outcome are waited for.

use proto::{Attempt, JobId};
use tokio::sync::mpsc;

use crate::job::{Event, EventKind};

pub(crate) struct EventSink {
    tx: mpsc::Sender<Event>,
    job: JobId,
    attempt: Attempt,
}

impl EventSink {
    pub(crate) fn new(tx: mpsc::Sender<Event>, job: JobId, attempt: Attempt) -> Self {
        Self { tx, job, attempt }
    }

    fn event(&self, kind: EventKind) -> Event {
        Event {
            job: self.job,
            attempt: self.attempt,
            kind,
        }
    }

    /// Sends an advisory event if there is room.
    pub(crate) fn lossy(&self, kind: EventKind) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(self.event(kind)) {
            tracing::trace!(job_id = %self.job, "event receiver full, dropped an advisory event");
        }
    }

    /// Sends an event, waiting for room. A receiver that is gone is not an error: nobody is
    /// listening any more.
    pub(crate) async fn send(&self, kind: EventKind) {
        crate::executor::deliver(&self.tx, self.event(kind)).await;
    }
}
