//! Integer codes for the values the job indexes are keyed on.
//!
//! A state update moves a job's entry in the `(group, status, seq)` index; with text keys most
//! of a write went into comparing strings on the way down that index. So the job rows hold a
//! status as a fixed small integer, and a group and a job type as integers interned in the
//! `cluster_groups` and `cluster_types` tables. The writer keeps the interned codes in memory,
//! so a write looks nothing up; readers turn codes back into text in their queries.

use std::collections::HashMap;

use proto::JobStatus;
use rusqlite::{OptionalExtension, Transaction};

use crate::error::{Context, StoreError};

/// Bits of a job's `status_key` below its status: its `seq`.
pub(crate) const SEQ_BITS: u32 = 42;

/// Bits of a `status_key` below its group code: the status and the `seq`.
pub(crate) const GROUP_SHIFT: u32 = SEQ_BITS + 3;

/// The greatest `seq` a job can have (some 4.4 × 10^12 jobs).
pub(crate) const MAX_SEQ: i64 = (1 << SEQ_BITS) - 1;

/// The greatest group code (some 262 000 groups): the key's 63 bits are then used up.
pub(crate) const MAX_GROUP: i64 = (1 << (63 - GROUP_SHIFT)) - 1;

/// A job's `status_key`, its place in the status index: `(group << 45) | (status << 42) | seq`.
/// One integer, not three columns: a seek down that index then compares one field where it
/// compared three, which was a tenth of the work of a state update. Only jobs of the same
/// group and status share the high bits, so a range of keys is one group's jobs in one status
/// in submission order. The key is the only place the status is stored (the `status` column
/// is worked out from it), and a plain column rather than a generated one so that counting a
/// group's statuses reads the index alone. The SQL of migration 3 and of the writer's state
/// update spells out the same shifts.
pub(crate) const fn status_key(group: i64, status: i64, seq: i64) -> i64 {
    (group << GROUP_SHIFT) | (status << SEQ_BITS) | seq
}

/// The stored code of a status. Fixed: migration 3 writes the same mapping in SQL.
pub(crate) const fn status_code(status: JobStatus) -> i64 {
    match status {
        JobStatus::Pending => 0,
        JobStatus::Assigned => 1,
        JobStatus::Running => 2,
        JobStatus::Completed => 3,
        JobStatus::Failed => 4,
        JobStatus::Cancelled => 5,
    }
}

/// The status a stored code stands for, if any.
pub(crate) const fn status_of(code: i64) -> Option<JobStatus> {
    Some(match code {
        0 => JobStatus::Pending,
        1 => JobStatus::Assigned,
        2 => JobStatus::Running,
        3 => JobStatus::Completed,
        4 => JobStatus::Failed,
        5 => JobStatus::Cancelled,
        _ => return None,
    })
}

/// One table of interned names, as the writer knows it.
struct Names {
    /// Its `SELECT code ... WHERE name = ?1` and `INSERT ... (name) VALUES (?1)`.
    select: &'static str,
    insert: &'static str,
    /// The greatest code there may be, and what to say when there would be more.
    max: i64,
    full: &'static str,
    codes: HashMap<String, i64>,
}

impl Names {
    fn new(select: &'static str, insert: &'static str, max: i64, full: &'static str) -> Self {
        Self {
            select,
            insert,
            max,
            full,
            codes: HashMap::new(),
        }
    }

    fn lookup(&mut self, tx: &Transaction<'_>, name: &str) -> Result<Option<i64>, StoreError> {
        if let Some(code) = self.codes.get(name) {
            return Ok(Some(*code));
        }
        let code: Option<i64> = tx
            .prepare_cached(self.select)
            .and_then(|mut stmt| stmt.query_row([name], |r| r.get(0)).optional())
            .context("looking up a code")?;
        if let Some(code) = code {
            self.codes.insert(name.to_owned(), code);
        }
        Ok(code)
    }

    fn intern(&mut self, tx: &Transaction<'_>, name: &str) -> Result<i64, StoreError> {
        if let Some(code) = self.lookup(tx, name)? {
            return Ok(code);
        }
        tx.prepare_cached(self.insert)
            .and_then(|mut stmt| stmt.execute([name]))
            .context("interning a name")?;
        let code = tx.last_insert_rowid();
        if code > self.max {
            return Err(StoreError::Full(self.full));
        }
        self.codes.insert(name.to_owned(), code);
        Ok(code)
    }
}

/// The writer's codes of groups and job types. Codes are never deleted, so a cached one stays
/// right as long as the row that made it was committed: after a rollback the cache is dropped.
pub(crate) struct Codes {
    groups: Names,
    types: Names,
}

impl Codes {
    pub(crate) fn new() -> Self {
        Self {
            groups: Names::new(
                "SELECT code FROM cluster_groups WHERE name = ?1",
                "INSERT INTO cluster_groups (name) VALUES (?1)",
                MAX_GROUP,
                "no more cluster groups fit in the status index",
            ),
            types: Names::new(
                "SELECT code FROM cluster_types WHERE name = ?1",
                "INSERT INTO cluster_types (name) VALUES (?1)",
                i64::MAX,
                "no more job types fit",
            ),
        }
    }

    /// The group's code, made if it has none.
    pub(crate) fn group(&mut self, tx: &Transaction<'_>, name: &str) -> Result<i64, StoreError> {
        self.groups.intern(tx, name)
    }

    /// The group's code if it has one: a group without one has no jobs.
    pub(crate) fn existing_group(
        &mut self,
        tx: &Transaction<'_>,
        name: &str,
    ) -> Result<Option<i64>, StoreError> {
        self.groups.lookup(tx, name)
    }

    /// The job type's code, made if it has none.
    pub(crate) fn job_type(&mut self, tx: &Transaction<'_>, name: &str) -> Result<i64, StoreError> {
        self.types.intern(tx, name)
    }

    /// Forgets every code: some may have been made in a transaction that was rolled back.
    pub(crate) fn forget(&mut self) {
        self.groups.codes.clear();
        self.types.codes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_its_own_code_and_back() {
        let all = [
            JobStatus::Pending,
            JobStatus::Assigned,
            JobStatus::Running,
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ];
        for status in all {
            assert_eq!(status_of(status_code(status)), Some(status));
        }
        // The reader asks for the active and the finished statuses as two ranges of codes, and
        // the writer's state update knows the terminal ones as the codes from 3 up.
        assert_eq!(
            [JobStatus::Pending, JobStatus::Assigned, JobStatus::Running].map(status_code),
            [0, 1, 2]
        );
        assert_eq!(
            [
                JobStatus::Completed,
                JobStatus::Failed,
                JobStatus::Cancelled
            ]
            .map(status_code),
            [3, 4, 5]
        );
        assert_eq!(status_of(6), None);
        // Keys of one group and status lie between those of the statuses around them, and the
        // greatest key there can be is still a positive integer.
        assert!(status_key(7, 2, MAX_SEQ) < status_key(7, 3, 0));
        assert!(status_key(7, 5, MAX_SEQ) < status_key(8, 0, 0));
        assert!(status_key(MAX_GROUP, 7, MAX_SEQ) > status_key(MAX_GROUP, 0, 0));
        assert!(status_key(MAX_GROUP, 7, MAX_SEQ) > 0);
        assert_eq!(status_of(-1), None);
    }
}
