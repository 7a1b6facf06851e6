//! The job store: a cluster host's jobs, attempts and results in its SQLite database.
//!
//! Writes go to one writer thread that commits everything queued since its last commit in one
//! transaction (a group commit), coalescing progress updates of the same job. A submit is
//! answered only once its transaction is committed, so nothing a client was told was accepted is
//! lost when the process is killed. Reads use their own connections (WAL lets them run beside
//! the writer), on the caller's thread: call them from `spawn_blocking`.

mod codes;
mod error;
mod reader;
mod schema;
pub mod testing;
mod writer;

pub use error::StoreError;
pub use reader::{JobPage, ListFilter, PAGE_BYTES, Reader, StoredJob};
pub use writer::{
    JobStore, NewJob, Prune, Pruned, StateRow, StoreConfig, Submitted, Synchronous, Write,
};
