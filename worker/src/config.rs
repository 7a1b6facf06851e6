//! How an executor is run: its path and mode, and every limit and grace period, with defaults
//! in one place.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use proto::BinaryMode;

/// The default time limit of the `__check__` handshake, as in Goop².
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// The default limit on one stdout line.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Everything the runtime needs to run one executor binary.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// The executor binary, started with no arguments.
    pub path: PathBuf,
    /// A process per job, or one long-lived process.
    pub mode: BinaryMode,
    /// Runs at most this many jobs at once, whatever the executor declares.
    pub capacity_override: Option<NonZeroU32>,
    /// How many submitted jobs may wait for a free slot before `submit` waits.
    pub max_queued: usize,
    /// The time limit of the `__check__` handshake.
    pub check_timeout: Duration,
    /// Between SIGTERM and SIGKILL when a job times out or is cancelled, and how long a daemon
    /// has to finish a cancelled job before its slot is reused.
    pub kill_grace: Duration,
    /// How long a oneshot executor has to exit after its `done` or `error` line.
    pub done_grace: Duration,
    /// How long a daemon has to exit after its stdin is closed at shutdown.
    pub shutdown_grace: Duration,
    /// The longest stdout line accepted; a longer one fails its job.
    pub max_line_bytes: usize,
    /// How much of the end of stderr is kept and attached to failures.
    pub stderr_tail_bytes: usize,
    /// The longest log line passed on; longer ones are cut.
    pub max_log_bytes: usize,
    /// The first delay before a crashed daemon is restarted, or a oneshot binary that could not
    /// be started is checked again; doubled after each crash, failed start or failed check.
    pub restart_backoff: Duration,
    /// The longest delay between daemon restarts or oneshot checks.
    pub max_restart_backoff: Duration,
    /// After this many restarts in a row whose check fails, the executor is declared unusable.
    pub max_failed_restarts: u32,
    /// Whether jobs report `EventKind::Started` when they reach the executor. Off by default:
    /// it is one more event per job, and most callers only need the outcome.
    pub started_events: bool,
}

impl ExecutorConfig {
    /// A configuration with the defaults for everything but the binary and its mode.
    pub fn new(path: impl Into<PathBuf>, mode: BinaryMode) -> Self {
        Self {
            path: path.into(),
            mode,
            capacity_override: None,
            max_queued: 1024,
            check_timeout: DEFAULT_CHECK_TIMEOUT,
            kill_grace: Duration::from_secs(2),
            done_grace: Duration::from_millis(500),
            shutdown_grace: Duration::from_secs(5),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            stderr_tail_bytes: 4096,
            max_log_bytes: 4096,
            restart_backoff: Duration::from_millis(100),
            max_restart_backoff: Duration::from_secs(30),
            max_failed_restarts: 5,
            started_events: false,
        }
    }
}
