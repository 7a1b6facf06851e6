//! The dispatcher's settings, with their defaults in one place.

use crate::time::Millis;

/// How the dispatcher retries, times out and limits. `Config::default()` is what a cluster host
/// uses unless its configuration says otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Backoff before the first retry; each further failure doubles it, up to `retry_cap`.
    pub retry_base: Millis,
    /// The longest backoff between two attempts.
    pub retry_cap: Millis,
    /// Time allowed past `timeout_s` before the host gives up on an attempt. The worker enforces
    /// the timeout itself; the grace lets its own "timed out" report arrive first.
    pub timeout_grace: Millis,
    /// How long a worker stays alive without a heartbeat (or a join or verification);
    /// `None` disables leases. Workers must heartbeat well within it.
    pub lease: Option<Millis>,
    /// How long after an assignment a heartbeat that does not list the attempt counts as proof
    /// that the worker lost it. Shorter than this, the assign may still be on its way.
    pub assign_grace: Millis,
    /// The number of worker losses at which a job is failed as a poison job (0: no limit).
    pub crash_limit: u32,
    /// The most jobs that may be live (not terminal) at once; submits beyond it are refused.
    pub max_live_jobs: usize,
    /// The most finished jobs whose status is kept in memory, for `after` and retries. Past
    /// it, those that finished longest ago are evicted at the end of a step: the counts in
    /// [`QueueStats`](crate::QueueStats) still include them, and the shell, which stores every
    /// job, tells the dispatcher of one again with [`Input::Recall`](crate::Input::Recall)
    /// before naming it.
    pub max_finished: usize,
    /// The longest job type name, in bytes.
    pub max_type_len: usize,
    /// The most job types one worker may declare; further ones are ignored.
    pub max_worker_types: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            retry_base: Millis(1_000),
            retry_cap: Millis(300_000),
            timeout_grace: Millis(5_000),
            lease: Some(Millis(30_000)),
            assign_grace: Millis(10_000),
            crash_limit: 3,
            max_live_jobs: 10_000_000,
            // 40 to 70 bytes each (a map entry, a cell, a place in the finish order): 40-70 MB.
            max_finished: 1_000_000,
            max_type_len: 256,
            max_worker_types: 1024,
        }
    }
}
