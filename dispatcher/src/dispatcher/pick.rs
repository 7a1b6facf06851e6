//! The dispatch loop: the best ready job first, to the least loaded eligible worker.

use super::Dispatcher;

impl<P: Clone, R> Dispatcher<P, R> {
    /// Assigns ready jobs until no ready job has an eligible worker.
    ///
    /// The best ready job overall is the first of `heads_any` when some eligible worker runs
    /// every type; otherwise it is the first of `heads_typed`, which only holds types that an
    /// eligible worker lists. Either way a job nobody can serve is never looked at, so it
    /// blocks nothing behind it.
    ///
    /// Workers whose load dropped during the step (`released`) are brought into the heaps
    /// first, except in the commonest case of a busy cluster: one worker finished an attempt
    /// while every other worker that could take a ready job is full. That worker is then the
    /// only candidate, and it gets its job without entering the heaps and leaving them again.
    pub(super) fn dispatch(&mut self) {
        if let [w] = self.released[..] {
            self.released.clear();
            self.dispatch_to_lone_worker(w);
            self.rekey_worker(w);
        } else {
            let mut released = std::mem::take(&mut self.released);
            for w in released.drain(..) {
                self.rekey_worker(w);
            }
            // Hand the buffer back, keeping its capacity.
            self.released = released;
        }
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
                // Unreachable while the head heaps are in step; stop rather than spin.
                return;
            };
            self.assign_head(ty, worker);
        }
    }

    /// Gives worker `w`, which is eligible but not in the heaps, the best ready job it can run,
    /// provided no eligible worker in the heaps could run a ready job: `w` is then the one the
    /// loop would pick, for the job the loop would pick, and the heaps need not know of it.
    fn dispatch_to_lone_worker(&mut self, w: u32) {
        if !self.wildcard.is_empty() || !self.heads_typed.is_empty() {
            return;
        }
        let Some(worker) = self.workers[w as usize].as_ref() else {
            return;
        };
        if !worker.links.is_empty() || !worker.eligible() {
            return;
        }
        let best = match worker.types.as_deref() {
            None => self.heads_any.first().map(|&(_, ty)| ty),
            Some(types) => types
                .iter()
                .filter_map(|&ty| self.types[ty as usize].head.map(|head| (head, ty)))
                .min()
                .map(|(_, ty)| ty),
        };
        if let Some(ty) = best {
            self.assign_head(ty, w);
        }
    }

    /// Pops the head of type `ty`'s ready queue and, unless it was stale, gives it to `w`.
    fn assign_head(&mut self, ty: u32, w: u32) {
        let Some(entry) = self.types[ty as usize].ready.pop() else {
            self.set_head(ty, None);
            return;
        };
        if self.generations[entry.slot as usize] == entry.generation {
            self.start_attempt(entry.slot, w);
        }
        self.sync_head(ty);
    }
}
