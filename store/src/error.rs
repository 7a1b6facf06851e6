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
    /// The transaction that held this change failed (the cause, shared by every change in it)
    /// and was rolled back: nothing of the change was stored. The writer keeps the changes to
    /// jobs already stored and writes them again; submits, flushes and prunes are answered
    /// with this error.
    #[error("{0} (the transaction was rolled back)")]
    RolledBack(std::sync::Arc<StoreError>),
    /// The writer thread could not be started.
    #[error("job store: cannot start the writer thread: {0}")]
    Spawn(std::io::Error),
}

impl StoreError {
    /// Whether SQLite failed because the disk (or the database's size limit) is full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Self::Sqlite { source, .. } => {
                source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
            }
            Self::RolledBack(cause) => cause.is_disk_full(),
            _ => false,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_told_apart_from_other_failures() {
        let sqlite = |code| StoreError::Sqlite {
            context: "committing",
            // As SQLite reports it: the code and its message.
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                Some("database or disk is full".to_owned()),
            ),
        };
        assert!(sqlite(rusqlite::ffi::SQLITE_FULL).is_disk_full());
        let rolled_back =
            StoreError::RolledBack(std::sync::Arc::new(sqlite(rusqlite::ffi::SQLITE_FULL)));
        assert!(rolled_back.is_disk_full());
        assert_eq!(
            rolled_back.to_string(),
            "job store: committing: database or disk is full (the transaction was rolled back)"
        );
        assert!(!sqlite(rusqlite::ffi::SQLITE_IOERR).is_disk_full());
        assert!(!StoreError::Closed.is_disk_full());
    }
}
