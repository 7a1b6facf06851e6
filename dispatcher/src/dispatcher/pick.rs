//! The dispatch loop: the best ready job first, to the least loaded eligible worker.

use super::Dispatcher;

impl<P: Clone, R> Dispatcher<P, R> {
    /// Assigns ready jobs until no ready job has an eligible worker.
    ///
    /// The best ready job overall is the first of `heads_any` when some eligible worker runs
    /// every type; otherwise it is the first of `heads_typed`, which only holds types that an
    /// eligible worker lists. Either way a job nobody can serve is never looked at, so it
    /// blocks nothing behind it.
    pub(super) fn dispatch(&mut self) {
        loop {
            let best = if self.wildcard.is_empty() {
                self.heads_typed.first()
            } else {
                self.heads_any.first()
            };
            let Some(&(_, ty)) = best else {
                return;
            };
            let queue = &self.types[ty as usize];
            let worker = match (queue.workers.first(), self.wildcard.first()) {
                (Some(a), Some(b)) => Some(if a < b { a } else { b }),
                (a, b) => a.or(b),
            };
            let Some(worker) = worker.map(|k| k.slot) else {
                // Unreachable while the head sets are in step; stop rather than spin.
                return;
            };
            let Some(entry) = self.types[ty as usize].ready.pop() else {
                self.set_head(ty, None);
                continue;
            };
            if self.generations[entry.slot as usize] == entry.generation {
                self.start_attempt(entry.slot, worker);
            }
            self.sync_head(ty);
        }
    }
}
