//! The job a handler receives: its id, type, raw payload and the protocol's other fields.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::Error;
use crate::pool::Task;

/// How a job runs, from the job line's `mode` field (`oneshot` when absent).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[non_exhaustive]
pub enum Mode {
    /// Runs once to a single result.
    #[default]
    Oneshot,
    /// Streams output (see [`Context::output`](crate::Context::output)) until it is cancelled or
    /// the handler returns.
    Continuous,
}

/// One job, handed to its handler by value.
///
/// The payload stays raw JSON until the handler reads it, so numbers keep every digit: read it
/// typed with [`Job::payload`], or take it whole with [`Job::payload_raw`] or
/// [`Job::into_payload`].
pub struct Job {
    pub(crate) task: Arc<Task>,
    pub(crate) job_type: Arc<str>,
    pub(crate) payload: Option<Box<RawValue>>,
    pub(crate) timeout_s: f64,
    pub(crate) mode: Mode,
}

impl Job {
    /// The job id the worker gave (16 hex characters from a goop worker).
    pub fn id(&self) -> &str {
        &self.task.id
    }

    /// The job type, e.g. `"calculate"`.
    pub fn job_type(&self) -> &str {
        &self.job_type
    }

    /// The payload as raw JSON text, exactly as it arrived (`null` when the line had none).
    pub fn payload_raw(&self) -> &RawValue {
        self.payload.as_deref().unwrap_or(null())
    }

    /// The payload decoded as `T`. `T` may borrow from the job (`&str` fields, `&RawValue`).
    ///
    /// ```
    /// # use executor_sdk::{Error, Job};
    /// #[derive(serde::Deserialize)]
    /// struct Add {
    ///     a: u128,
    ///     b: u128,
    /// }
    ///
    /// fn add(job: &Job) -> Result<u128, Error> {
    ///     let p: Add = job.payload()?;
    ///     p.a.checked_add(p.b).ok_or_else(|| Error::new("sum overflows"))
    /// }
    /// ```
    ///
    /// # Errors
    /// When the payload does not decode as `T`; the message says where and why.
    pub fn payload<'de, T: Deserialize<'de>>(&'de self) -> Result<T, Error> {
        serde_json::from_str(self.payload_raw().get())
            .map_err(|e| Error::new(format!("invalid payload: {e}")))
    }

    /// Takes the raw payload out of the job, without copying it: returning it as the result
    /// echoes the payload byte for byte.
    pub fn into_payload(self) -> Box<RawValue> {
        match self.payload {
            Some(payload) => payload,
            None => null().to_owned(),
        }
    }

    /// The time limit the worker enforces for this job, or `None` when it has none.
    pub fn timeout(&self) -> Option<Duration> {
        (self.timeout_s > 0.0)
            .then(|| Duration::try_from_secs_f64(self.timeout_s).ok())
            .flatten()
    }

    /// Whether the job runs once or streams output.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The attempt number, when the worker sent one (goop workers do; Goop² workers do not).
    pub fn attempt(&self) -> Option<u64> {
        self.task.attempt
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id())
            .field("type", &self.job_type)
            .field("attempt", &self.attempt())
            .field("mode", &self.mode)
            .field("timeout_s", &self.timeout_s)
            .field("payload", &self.payload_raw().get())
            .finish()
    }
}

fn null() -> &'static RawValue {
    RawValue::NULL
}
