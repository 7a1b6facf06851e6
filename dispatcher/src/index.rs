//! The ordering keys of the hot indexes.
//!
//! Pending jobs ready to run sit in one binary heap per job type, ordered by priority then
//! submission order. The head of every non-empty heap sits in an ordered set, so the best ready
//! job of any type is found in O(log types), and the best one a typed worker can serve is found
//! through a second set holding only the heads of types that some eligible typed worker serves.
//! Eligible workers sit in ordered sets (one per type, one for workers that run every type)
//! keyed by load, then by when they last got a job, which makes ties go round-robin.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::Arc;

/// The order of ready jobs: smaller is better (higher priority, then earlier submission).
pub(crate) type HeadKey = (Reverse<i32>, u64);

/// A ready job in its type's heap. Entries are removed lazily: one whose `generation` no
/// longer matches its slot is stale and skipped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct ReadyEntry {
    pub(crate) priority: i32,
    pub(crate) seq: u64,
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

impl ReadyEntry {
    pub(crate) fn key(&self) -> HeadKey {
        (Reverse(self.priority), self.seq)
    }
}

impl Ord for ReadyEntry {
    /// Greater is better, for the max-heap.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .key()
            .cmp(&self.key())
            .then(other.slot.cmp(&self.slot))
            .then(other.generation.cmp(&self.generation))
    }
}

impl PartialOrd for ReadyEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// An eligible worker: least loaded first, then least recently given a job, then join order.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WorkerKey {
    pub(crate) running: u32,
    pub(crate) capacity: u32,
    pub(crate) stamp: u64,
    pub(crate) slot: u32,
}

impl Ord for WorkerKey {
    fn cmp(&self, other: &Self) -> Ordering {
        // running/capacity compared exactly by cross-multiplying; capacity is at least 1.
        let mine = u64::from(self.running) * u64::from(other.capacity);
        let theirs = u64::from(other.running) * u64::from(self.capacity);
        mine.cmp(&theirs)
            .then(self.stamp.cmp(&other.stamp))
            .then(self.slot.cmp(&other.slot))
    }
}

impl PartialOrd for WorkerKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for WorkerKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for WorkerKey {}

/// Everything about one job type.
pub(crate) struct TypeQueue {
    pub(crate) name: Arc<str>,
    pub(crate) ready: BinaryHeap<ReadyEntry>,
    /// Entries of `ready` that are not stale.
    pub(crate) live: usize,
    /// Eligible workers that list this type (workers that run every type are kept apart).
    pub(crate) workers: BTreeSet<WorkerKey>,
    /// The key of the best live entry, as mirrored in the head sets.
    pub(crate) head: Option<HeadKey>,
}

impl TypeQueue {
    pub(crate) fn new(name: Arc<str>) -> Self {
        Self {
            name,
            ready: BinaryHeap::new(),
            live: 0,
            workers: BTreeSet::new(),
            head: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_entries_pop_by_priority_then_submission() {
        let mut heap = BinaryHeap::new();
        for (priority, seq) in [(0, 1), (5, 3), (5, 2), (-1, 0), (0, 0)] {
            heap.push(ReadyEntry {
                priority,
                seq,
                slot: 0,
                generation: 0,
            });
        }
        let order: Vec<_> = std::iter::from_fn(|| heap.pop())
            .map(|e| (e.priority, e.seq))
            .collect();
        assert_eq!(order, [(5, 2), (5, 3), (0, 0), (0, 1), (-1, 0)]);
    }

    #[test]
    fn worker_keys_compare_load_exactly() {
        let key = |running, capacity, stamp, slot| WorkerKey {
            running,
            capacity,
            stamp,
            slot,
        };
        // 1/2 and 2/4 are equally loaded: the stamp decides.
        assert!(key(2, 4, 1, 0) < key(1, 2, 2, 1));
        assert!(key(1, 3, 9, 0) < key(1, 2, 0, 1));
        assert!(key(0, 1, 9, 9) < key(1, 1000, 0, 0));
    }
}
