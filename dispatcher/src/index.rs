//! The ordering keys of the hot indexes.
//!
//! Pending jobs ready to run sit in one [`ReadyQueue`] per job type, ordered by priority then
//! submission order. The head of every non-empty queue sits in an ordered set, so the best ready
//! job of any type is found in O(log types), and the best one a typed worker can serve is found
//! through a second set holding only the heads of types that some eligible typed worker serves.
//! Eligible workers sit in ordered sets (one per type, one for workers that run every type)
//! keyed by load, then by when they last got a job, which makes ties go round-robin.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::sync::Arc;

/// The order of ready jobs: smaller is better (higher priority, then earlier submission).
pub(crate) type HeadKey = (Reverse<i32>, u64);

/// A ready job in its type's queue. Entries are removed lazily: one whose `generation` no
/// longer matches its slot is stale and skipped.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) struct ReadyEntry {
    pub(crate) seq: u64,
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

/// The ready jobs of one type: one level per priority, best first.
///
/// Within a priority, jobs leave in submission order. New submissions always carry the
/// largest sequence number so far, so they are appended to a FIFO and popped from its front
/// in O(1); only jobs that come back (after a backoff or a lost worker) keep an older number
/// and go to a small heap beside it. A pick is then O(log priorities + log requeued), and
/// does not grow with the number of queued jobs.
#[derive(Default)]
pub(crate) struct ReadyQueue {
    levels: BTreeMap<Reverse<i32>, Level>,
    /// Entries, stale ones included.
    len: usize,
}

#[derive(Default)]
struct Level {
    fifo: VecDeque<ReadyEntry>,
    late: BinaryHeap<Reverse<ReadyEntry>>,
}

impl Level {
    fn front(&self) -> Option<ReadyEntry> {
        match (self.fifo.front(), self.late.peek()) {
            (Some(a), Some(Reverse(b))) => Some(if a.seq < b.seq { *a } else { *b }),
            (Some(a), None) => Some(*a),
            (None, Some(Reverse(b))) => Some(*b),
            (None, None) => None,
        }
    }

    fn pop_front(&mut self) -> Option<ReadyEntry> {
        let late_first = match (self.fifo.front(), self.late.peek()) {
            (Some(a), Some(Reverse(b))) => b.seq < a.seq,
            (None, Some(_)) => true,
            _ => false,
        };
        if late_first {
            self.late.pop().map(|Reverse(e)| e)
        } else {
            self.fifo.pop_front()
        }
    }
}

impl ReadyQueue {
    pub(crate) fn push(&mut self, priority: i32, entry: ReadyEntry) {
        let level = self.levels.entry(Reverse(priority)).or_default();
        if level.fifo.back().is_none_or(|last| last.seq < entry.seq) {
            level.fifo.push_back(entry);
        } else {
            level.late.push(Reverse(entry));
        }
        self.len += 1;
    }

    /// Drops stale entries from the front, then gives the key of the best live one.
    pub(crate) fn clean_front(&mut self, live: impl Fn(&ReadyEntry) -> bool) -> Option<HeadKey> {
        loop {
            let mut first = self.levels.first_entry()?;
            let level = first.get_mut();
            while let Some(front) = level.front() {
                if live(&front) {
                    return Some((Reverse(first.key().0), front.seq));
                }
                level.pop_front();
                self.len -= 1;
            }
            first.remove();
        }
    }

    /// Takes the best entry; call `clean_front` first so that it is a live one.
    pub(crate) fn pop(&mut self) -> Option<ReadyEntry> {
        let mut first = self.levels.first_entry()?;
        let entry = first.get_mut().pop_front();
        if entry.is_some() {
            self.len -= 1;
        }
        if first.get().front().is_none() {
            first.remove();
        }
        entry
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Keeps only the live entries.
    pub(crate) fn retain(&mut self, live: impl Fn(&ReadyEntry) -> bool) {
        self.levels.retain(|_, level| {
            level.fifo.retain(|e| live(e));
            level.late.retain(|Reverse(e)| live(e));
            level.front().is_some()
        });
        self.len = self
            .levels
            .values()
            .map(|l| l.fifo.len() + l.late.len())
            .sum();
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
    pub(crate) ready: ReadyQueue,
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
            ready: ReadyQueue::default(),
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
    fn ready_queue_pops_by_priority_then_submission() {
        let mut queue = ReadyQueue::default();
        let entry = |seq| ReadyEntry {
            seq,
            slot: 0,
            generation: 0,
        };
        for (priority, seq) in [(0, 1), (5, 3), (5, 4), (-1, 0), (0, 5), (5, 2), (0, 0)] {
            queue.push(priority, entry(seq));
        }
        let mut order = Vec::new();
        while let Some(key) = queue.clean_front(|_| true) {
            let popped = queue.pop().expect("a live front");
            assert_eq!(popped.seq, key.1);
            order.push((key.0.0, key.1));
        }
        assert_eq!(
            order,
            [(5, 2), (5, 3), (5, 4), (0, 0), (0, 1), (0, 5), (-1, 0)]
        );
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn stale_entries_are_skipped_and_compacted() {
        let mut queue = ReadyQueue::default();
        for seq in 0..10 {
            queue.push(
                (seq % 2) as i32,
                ReadyEntry {
                    seq,
                    slot: seq as u32,
                    generation: 0,
                },
            );
        }
        let live = |e: &ReadyEntry| !e.seq.is_multiple_of(3);
        assert_eq!(queue.clean_front(live), Some((Reverse(1), 1)));
        queue.retain(live);
        assert_eq!(queue.len(), 6);
        let mut seen = Vec::new();
        while queue.clean_front(live).is_some() {
            seen.push(queue.pop().expect("live").seq);
        }
        assert_eq!(seen, [1, 5, 7, 2, 4, 8]);
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
