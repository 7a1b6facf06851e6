//! The handle a running job reports through: progress, streamed output, logs, and cancellation.

use std::time::Duration;

use serde::Serialize;

use crate::error::Error;
use crate::output::Output;
use crate::pool::Task;
use crate::wire;

/// What a handler uses to talk to the worker while its job runs, and to learn that the job was
/// cancelled.
///
/// Every line it writes carries the job's id (and attempt), goes out whole, and is flushed
/// promptly. It is `Sync`: threads the handler starts may report through it too.
///
/// ```
/// use std::time::Duration;
/// use executor_sdk::{Context, Error, Job};
///
/// fn count_to_ten(_job: Job, ctx: &Context<'_>) -> Result<u32, Error> {
///     for i in 1..=10 {
///         // Sleeps 10 ms unless the job is cancelled first, which ends it with an error.
///         ctx.sleep(Duration::from_millis(10))?;
///         ctx.progress(f64::from(i) * 10.0, format!("counted to {i}"));
///     }
///     Ok(10)
/// }
/// ```
pub struct Context<'a> {
    pub(crate) task: &'a Task,
    /// `{"job_id":<id>` and the attempt, the start of every line about this job.
    pub(crate) prefix: &'a [u8],
    pub(crate) output: &'a Output,
}

impl Context<'_> {
    /// Reports progress: `{"status":"progress","pct":<pct>,"msg":<msg>}`. `pct` is clamped to
    /// 0–100 and written as an integer when it is a whole number (Goop² workers accept only
    /// whole numbers).
    pub fn progress(&self, pct: f64, msg: impl AsRef<str>) {
        // Borrowed before taking the output lock, so no code of the caller's runs under it.
        let msg = msg.as_ref();
        self.output.push_with(|out| {
            out.extend_from_slice(self.prefix);
            out.extend_from_slice(br#","status":"progress","pct":"#);
            wire::write_pct(out, pct);
            out.extend_from_slice(br#","msg":"#);
            wire::write_str(out, msg);
            out.extend_from_slice(b"}\n");
        });
    }

    /// Streams a piece of output: `{"status":"output","data":<data>}`. Continuous jobs report
    /// their results this way; oneshot jobs may use it for partial results.
    ///
    /// # Errors
    /// When `data` fails to serialize; nothing is written then.
    pub fn output<T: Serialize + ?Sized>(&self, data: &T) -> Result<(), Error> {
        let mut line = Vec::with_capacity(self.prefix.len() + 64);
        line.extend_from_slice(self.prefix);
        line.extend_from_slice(br#","status":"output","data":"#);
        serde_json::to_writer(&mut line, data)
            .map_err(|e| Error::new(format!("output could not be encoded: {e}")))?;
        line.extend_from_slice(b"}\n");
        self.output.push(&line);
        Ok(())
    }

    /// Writes a log line for this job: `{"status":"log","msg":<msg>}`. The worker keeps it with
    /// the job's logs; it does not change the job's state.
    pub fn log(&self, msg: impl AsRef<str>) {
        let msg = msg.as_ref();
        self.output.push_with(|out| {
            out.extend_from_slice(self.prefix);
            out.extend_from_slice(br#","status":"log","msg":"#);
            wire::write_str(out, msg);
            out.extend_from_slice(b"}\n");
        });
    }

    /// Whether the worker has cancelled this job. Long handlers should poll it (or use
    /// [`Context::check_cancelled`]) between steps and stop soon after it turns true.
    pub fn is_cancelled(&self) -> bool {
        self.task.is_cancelled()
    }

    /// `Err(cancelled)` once the job is cancelled, for use with `?` between steps.
    ///
    /// # Errors
    /// When the job has been cancelled.
    pub fn check_cancelled(&self) -> Result<(), Error> {
        if self.is_cancelled() {
            Err(Error::cancelled())
        } else {
            Ok(())
        }
    }

    /// Blocks until the job is cancelled or `timeout` passes; returns `true` if it was cancelled.
    pub fn wait_for_cancel(&self, timeout: Duration) -> bool {
        self.task.wait_cancelled(timeout)
    }

    /// Sleeps for `duration`, waking early if the job is cancelled.
    ///
    /// # Errors
    /// `Err(cancelled)` when the job was cancelled before or during the sleep.
    pub fn sleep(&self, duration: Duration) -> Result<(), Error> {
        if self.wait_for_cancel(duration) {
            Err(Error::cancelled())
        } else {
            Ok(())
        }
    }
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("job_id", &&*self.task.id)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}
