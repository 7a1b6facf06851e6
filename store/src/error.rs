//! The store's error type.

/// What went wrong in the job store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused an operation.
    #[error("job store: {context}: {source}")]
    Sqlite {
        /// What the store was doing.
        context: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A row holds a value this version cannot read.
    #[error("job store: corrupt row for job {job}: {reason}")]
    Corrupt {
        /// The job's id as stored.
        job: String,
        /// What could not be read.
        reason: String,
    },
    /// The database was written by a newer goop.
    #[error("job store: schema version {found} is newer than this goop understands ({supported})")]
    SchemaTooNew {
        /// The version in the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The writer thread has stopped (the store was closed or a commit failed for good).
    #[error("job store: the writer has stopped")]
    Closed,
    /// A number the store keys jobs by ran out of bits; nothing was stored.
    #[error("job store is full: {0}")]
    Full(&'static str),
    /// A job id was submitted twice without an idempotency key.
    #[error("job store: job {0} already exists")]
    Duplicate(String),
}

/// Attaches what the store was doing to an SQLite error.
pub(crate) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, rusqlite::Error> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sqlite { context, source })
    }
}
