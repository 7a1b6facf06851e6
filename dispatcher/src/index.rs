//! The ordering keys of the hot indexes.
//!
//! Pending jobs ready to run sit in one [`ReadyQueue`] per job type, ordered by priority then
//! submission order. The head of every non-empty queue sits in a [`HandleHeap`], so the best
//! ready job of any type is found in O(1) and moved in O(log types), and the best one a typed
//! worker can serve is found through a second heap holding only the heads of types that some
//! eligible typed worker serves. Eligible workers sit in heaps too (one per type, one for
//! workers that run every type) keyed by load, then by when they last got a job, which makes
//! ties go round-robin.
//!
//! Every key in these heaps is unique (a job's sequence number, a worker's slot), so the first
//! entry is the one an ordered set would give. Heaps are used rather than ordered sets because
//! the keys move on every pick: a heap re-keys an entry where it is, without allocating or
//! rebalancing, and what the dispatch loop needs is only ever the first entry.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
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

    /// Drops stale entries from the front, then gives the best live one with its key.
    pub(crate) fn clean_front(
        &mut self,
        live: impl Fn(&ReadyEntry) -> bool,
    ) -> Option<(HeadKey, ReadyEntry)> {
        loop {
            let mut first = self.levels.first_entry()?;
            let level = first.get_mut();
            while let Some(front) = level.front() {
                if live(&front) {
                    return Some(((Reverse(first.key().0), front.seq), front));
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

/// A binary min-heap whose entries can be re-keyed or removed where they are.
///
/// `push` returns a handle that stays valid until the entry is removed; the heap keeps, per
/// handle, where the entry is, so `set` and `remove` need no search. Handles of removed entries
/// are reused.
pub(crate) struct HandleHeap<K> {
    /// The heap: each key with its handle.
    entries: Vec<(K, u32)>,
    /// Per handle, the index of its entry in `entries` (meaningless for a free handle).
    positions: Vec<u32>,
    free: Vec<u32>,
}

impl<K> Default for HandleHeap<K> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            positions: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<K: Ord + Copy> HandleHeap<K> {
    /// The smallest key.
    pub(crate) fn first(&self) -> Option<&K> {
        self.entries.first().map(|(key, _)| key)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds a key; the handle names its entry until it is removed.
    pub(crate) fn push(&mut self, key: K) -> u32 {
        let at = self.entries.len();
        let handle = match self.free.pop() {
            Some(handle) => {
                self.positions[handle as usize] = index_u32(at);
                handle
            }
            None => {
                self.positions.push(index_u32(at));
                index_u32(self.positions.len() - 1)
            }
        };
        self.entries.push((key, handle));
        self.sift_up(at);
        handle
    }

    /// Gives the entry of `handle` a new key.
    pub(crate) fn set(&mut self, handle: u32, key: K) {
        let at = self.positions[handle as usize] as usize;
        let old = std::mem::replace(&mut self.entries[at].0, key);
        if key < old {
            self.sift_up(at);
        } else {
            self.sift_down(at);
        }
    }

    /// Takes the entry of `handle` out; the handle is free afterwards.
    pub(crate) fn remove(&mut self, handle: u32) {
        let at = self.positions[handle as usize] as usize;
        self.free.push(handle);
        let last = self.entries.len() - 1;
        if at == last {
            self.entries.pop();
            return;
        }
        self.entries.swap(at, last);
        let removed = self.entries.pop().map(|(key, _)| key);
        self.positions[self.entries[at].1 as usize] = index_u32(at);
        if removed.is_some_and(|removed| self.entries[at].0 < removed) {
            self.sift_up(at);
        } else {
            self.sift_down(at);
        }
    }

    fn sift_up(&mut self, mut at: usize) {
        while at > 0 {
            let parent = (at - 1) / 2;
            if self.entries[parent].0 <= self.entries[at].0 {
                break;
            }
            self.swap(at, parent);
            at = parent;
        }
    }

    fn sift_down(&mut self, mut at: usize) {
        let len = self.entries.len();
        loop {
            let left = 2 * at + 1;
            if left >= len {
                return;
            }
            let right = left + 1;
            let child = if right < len && self.entries[right].0 < self.entries[left].0 {
                right
            } else {
                left
            };
            if self.entries[at].0 <= self.entries[child].0 {
                return;
            }
            self.swap(at, child);
            at = child;
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.entries.swap(a, b);
        self.positions[self.entries[a].1 as usize] = index_u32(a);
        self.positions[self.entries[b].1 as usize] = index_u32(b);
    }
}

/// Heaps hold at most one entry per worker or job type, both counted in `u32`.
fn index_u32(index: usize) -> u32 {
    u32::try_from(index).expect("heap entries are counted in u32")
}

/// Moves the entry `link` names in `heap` to `key`: adds it, re-keys it or removes it.
pub(crate) fn relink<K: Ord + Copy>(
    heap: &mut HandleHeap<K>,
    link: &mut Option<u32>,
    key: Option<K>,
) {
    match (*link, key) {
        (Some(handle), Some(key)) => heap.set(handle, key),
        (Some(handle), None) => {
            heap.remove(handle);
            *link = None;
        }
        (None, Some(key)) => *link = Some(heap.push(key)),
        (None, None) => {}
    }
}

/// Everything about one job type.
pub(crate) struct TypeQueue {
    pub(crate) name: Arc<str>,
    pub(crate) ready: ReadyQueue,
    /// Entries of `ready` that are not stale.
    pub(crate) live: usize,
    /// Eligible workers that list this type (workers that run every type are kept apart).
    pub(crate) workers: HandleHeap<WorkerKey>,
    /// The key of the best live entry, as mirrored in the head heaps.
    pub(crate) head: Option<HeadKey>,
    /// The head's entry in the heap of every type's head.
    pub(crate) any_link: Option<u32>,
    /// The head's entry in the heap of the heads of types an eligible typed worker serves.
    pub(crate) typed_link: Option<u32>,
}

impl TypeQueue {
    pub(crate) fn new(name: Arc<str>) -> Self {
        Self {
            name,
            ready: ReadyQueue::default(),
            live: 0,
            workers: HandleHeap::default(),
            head: None,
            any_link: None,
            typed_link: None,
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
        while let Some((key, _)) = queue.clean_front(|_| true) {
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
        assert_eq!(
            queue.clean_front(live).map(|(key, _)| key),
            Some((Reverse(1), 1))
        );
        queue.retain(live);
        assert_eq!(queue.len(), 6);
        let mut seen = Vec::new();
        while queue.clean_front(live).is_some() {
            seen.push(queue.pop().expect("live").seq);
        }
        assert_eq!(seen, [1, 5, 7, 2, 4, 8]);
    }

    /// Random pushes, re-keys and removals, checked against an ordered set after each one.
    #[test]
    fn handle_heap_agrees_with_an_ordered_set() {
        use std::collections::BTreeSet;
        let mut heap = HandleHeap::default();
        let mut model: BTreeSet<(u64, u32)> = BTreeSet::new();
        // Per live handle, the key it holds; keys carry their handle so they stay unique.
        let mut live: Vec<(u32, (u64, u32))> = Vec::new();
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            state >> 33
        };
        for _ in 0..20_000 {
            let op = next() % 10;
            if op < 4 || live.is_empty() {
                let value = next() % 64;
                let handle = heap.push((value, u32::MAX));
                heap.set(handle, (value, handle));
                model.insert((value, handle));
                live.push((handle, (value, handle)));
            } else if op < 7 {
                let at = (next() as usize) % live.len();
                let (handle, old) = live[at];
                let key = (next() % 64, handle);
                heap.set(handle, key);
                model.remove(&old);
                model.insert(key);
                live[at].1 = key;
            } else {
                let at = (next() as usize) % live.len();
                let (handle, old) = live.swap_remove(at);
                heap.remove(handle);
                model.remove(&old);
            }
            assert_eq!(heap.first(), model.first());
            assert_eq!(heap.len(), model.len());
        }
        let mut drained = Vec::new();
        while let Some(&key) = heap.first() {
            heap.remove(key.1);
            drained.push(key);
        }
        assert_eq!(drained, model.into_iter().collect::<Vec<_>>());
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
