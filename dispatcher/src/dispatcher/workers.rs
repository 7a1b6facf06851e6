//! Workers: joining, verification, pause, leaving, heartbeats, and the eligible-worker index.

use std::cmp::Reverse;
use std::sync::Arc;

use proto::{Attempt, JobId, PeerId};

use super::Dispatcher;
use crate::error::StepError;
use crate::index::{WorkerKey, relink};
use crate::io::{AttemptEnd, CancelReason, LeaveReason, Output};
use crate::state::Worker;
use crate::time::Millis;

impl<P: Clone, R> Dispatcher<P, R> {
    pub(super) fn worker_slot(&self, peer: &PeerId) -> Result<u32, StepError> {
        self.worker_ids
            .get(peer)
            .copied()
            .ok_or_else(|| StepError::UnknownWorker(peer.clone()))
    }

    pub(super) fn with_worker(
        &mut self,
        peer: &PeerId,
        f: impl FnOnce(&mut Self, u32),
    ) -> Result<(), StepError> {
        let slot = self.worker_slot(peer)?;
        f(self, slot);
        Ok(())
    }

    /// Applies `change` to a worker, keeping the eligible-worker heaps in step. The change may
    /// touch anything, its types included.
    pub(super) fn reindex_worker(&mut self, w: u32, change: impl FnOnce(&mut Worker)) {
        self.unindex_worker(w);
        if let Some(worker) = self.workers[w as usize].as_mut() {
            change(worker);
        }
        self.index_worker(w);
    }

    pub(super) fn worker_key(&self, w: u32) -> Option<WorkerKey> {
        let worker = self.workers[w as usize].as_ref()?;
        worker.eligible().then(|| WorkerKey {
            running: worker.running(),
            capacity: worker.capacity,
            stamp: worker.stamp,
            slot: w,
        })
    }

    /// Brings a worker's heap entries in line with its load, stamp and eligibility after they
    /// changed (its types must not have): re-keyed where they are while it stays eligible,
    /// added or removed when that changed.
    pub(super) fn rekey_worker(&mut self, w: u32) {
        let key = self.worker_key(w);
        let Some(worker) = self.workers[w as usize].as_ref() else {
            return;
        };
        match (worker.links.is_empty(), key) {
            (false, Some(key)) => match worker.types.as_deref() {
                None => self.wildcard.set(worker.links[0], key),
                Some(types) => {
                    for (&ty, &link) in types.iter().zip(&worker.links) {
                        self.types[ty as usize].workers.set(link, key);
                    }
                }
            },
            (false, None) => self.unindex_worker(w),
            (true, Some(_)) => self.index_worker(w),
            (true, None) => {}
        }
    }

    /// Takes a worker out of the eligible-worker heaps, if it is in them.
    pub(super) fn unindex_worker(&mut self, w: u32) {
        let Some(worker) = self.workers[w as usize].as_mut() else {
            return;
        };
        if worker.links.is_empty() {
            return;
        }
        match worker.types.as_deref() {
            None => self.wildcard.remove(worker.links[0]),
            Some(types) => {
                for (&ty, &link) in types.iter().zip(&worker.links) {
                    let queue = &mut self.types[ty as usize];
                    queue.workers.remove(link);
                    if queue.workers.is_empty() {
                        relink(&mut self.heads_typed, &mut queue.typed_link, None);
                    }
                }
            }
        }
        worker.links.clear();
    }

    /// Puts a worker in the eligible-worker heaps if it is eligible and not in them yet.
    pub(super) fn index_worker(&mut self, w: u32) {
        let Some(key) = self.worker_key(w) else {
            return;
        };
        let Some(worker) = self.workers[w as usize].as_mut() else {
            return;
        };
        if !worker.links.is_empty() {
            return;
        }
        match worker.types.as_deref() {
            None => worker.links.push(self.wildcard.push(key)),
            Some(types) => {
                for &ty in types {
                    let queue = &mut self.types[ty as usize];
                    if queue.workers.is_empty() {
                        let head = queue.head.map(|head| (head, ty));
                        relink(&mut self.heads_typed, &mut queue.typed_link, head);
                    }
                    worker.links.push(queue.workers.push(key));
                }
            }
        }
    }

    pub(super) fn worker_joined(&mut self, peer: PeerId) -> u32 {
        let lease_until = self.lease_until();
        if let Some(&w) = self.worker_ids.get(&peer) {
            // A join without a leave: the worker may have restarted with another executor, so
            // it must verify again. Its attempts stay; its next heartbeat settles them.
            self.reindex_worker(w, |worker| {
                worker.verified = false;
                worker.lease_until = lease_until;
            });
            return w;
        }
        let incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        let worker = Worker {
            peer: Arc::new(peer.clone()),
            incarnation,
            verified: false,
            paused: false,
            capacity: 1,
            types: None,
            stamp: 0,
            lease_until,
            held: Vec::new(),
            links: Vec::new(),
        };
        let w = match self.free_workers.pop() {
            Some(w) => {
                self.workers[w as usize] = Some(worker);
                w
            }
            None => {
                self.workers.push(Some(worker));
                u32::try_from(self.workers.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.worker_ids.insert(peer, w);
        if self.config.lease.is_some() {
            self.leases.push(Reverse((lease_until, w, incarnation)));
        }
        w
    }

    pub(super) fn lease_until(&self) -> Millis {
        match self.config.lease {
            Some(lease) => self.now.saturating_add(lease),
            None => Millis(u64::MAX),
        }
    }

    pub(super) fn worker_verified(&mut self, peer: PeerId, types: &[String], capacity: u32) {
        // A verification may overtake the join (Goop² dropped it then): create the worker.
        let w = match self.worker_ids.get(&peer) {
            Some(&w) => w,
            None => self.worker_joined(peer),
        };
        let mut interned: Vec<u32> = Vec::new();
        for name in types.iter().filter(|t| !t.is_empty()) {
            if interned.len() >= self.config.max_worker_types {
                break;
            }
            if name.len() > self.config.max_type_len {
                continue;
            }
            let ty = self.intern(name);
            if !interned.contains(&ty) {
                interned.push(ty);
            }
        }
        // Declared types that were all refused leave a worker that runs nothing, not one that
        // runs everything.
        let declared = types.iter().any(|t| !t.is_empty());
        let types = declared.then(|| interned.into_boxed_slice());
        let lease_until = self.lease_until();
        self.reindex_worker(w, |worker| {
            worker.verified = true;
            worker.types = types;
            if capacity > 0 {
                worker.capacity = capacity;
            }
            worker.lease_until = lease_until;
        });
    }

    /// Removes a worker; its attempts go back to the queue without spending a retry.
    pub(super) fn remove_worker(&mut self, w: u32, reason: LeaveReason) {
        self.unindex_worker(w);
        let Some(worker) = self.workers[w as usize].as_mut() else {
            return;
        };
        // The record stays until its attempts are settled, so they can name it; with its list
        // emptied and out of the index, it gets nothing new meanwhile.
        let held = std::mem::take(&mut worker.held);
        let lost: Arc<str> = reason.as_str().into();
        for slot in held {
            let ended = self.end_run(slot, AttemptEnd::Lost(lost.clone()));
            self.lose_attempt(slot, &lost, ended);
        }
        if let Some(worker) = self.workers[w as usize].take() {
            self.worker_ids.remove(&*worker.peer);
            self.free_workers.push(w);
        }
    }

    pub(super) fn heartbeat(
        &mut self,
        peer: &PeerId,
        mut running: Vec<(JobId, Attempt)>,
    ) -> Result<(), StepError> {
        let w = self.worker_slot(peer)?;
        let lease_until = self.lease_until();
        let worker_peer = {
            let worker = self.workers[w as usize].as_mut().expect("looked up above");
            worker.lease_until = lease_until;
            worker.peer.clone()
        };
        running.sort_unstable();
        running.dedup();
        for &(job, attempt) in &running {
            match self.holder(peer, job, attempt) {
                // Running it proves it arrived, whether or not the ack did.
                Ok(slot) => self.mark_running(slot),
                Err(_) => self.outputs.push(Output::Cancel {
                    worker: worker_peer.clone(),
                    job,
                    attempt,
                    reason: CancelReason::NotHeld,
                }),
            }
        }
        let held = self.workers[w as usize]
            .as_ref()
            .map(|worker| worker.held.clone())
            .unwrap_or_default();
        let grace = self.config.assign_grace;
        for slot in held {
            let job = self.job(slot);
            let Some(run) = job.run.as_ref() else {
                continue;
            };
            let reported = running.binary_search(&(job.id, job.attempt)).is_ok();
            if !reported && run.assigned_at.saturating_add(grace) <= self.now {
                let reason = "worker no longer runs it";
                let ended = self.end_run(slot, AttemptEnd::Lost(reason.into()));
                self.lose_attempt(slot, reason, ended);
            }
        }
        Ok(())
    }
}
