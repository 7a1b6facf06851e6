//! Time: leases, attempt deadlines and backoffs that fall due, and the next wake-up.

use std::cmp::Reverse;
use std::sync::Arc;

use super::Dispatcher;
use crate::io::{AttemptEnd, CancelReason, LeaveReason, Output};
use crate::state::State;

impl<P: Clone, R> Dispatcher<P, R> {
    pub(super) fn fire_timers(&mut self) {
        let now = self.now;
        while let Some(&Reverse((until, w, incarnation))) = self.leases.peek() {
            if until > now {
                break;
            }
            self.leases.pop();
            let Some(worker) = self.workers[w as usize].as_ref() else {
                continue;
            };
            if worker.incarnation != incarnation {
                continue;
            }
            if worker.lease_until > now {
                self.leases
                    .push(Reverse((worker.lease_until, w, incarnation)));
                continue;
            }
            let peer = worker.peer.clone();
            self.remove_worker(w, LeaveReason::LeaseExpired);
            self.outputs.push(Output::WorkerLost {
                worker: peer,
                reason: LeaveReason::LeaseExpired,
            });
        }
        while let Some(&Reverse((deadline, slot, _, stamp))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            if !self.deadline_is_live(slot, stamp) || self.job_state(slot).is_none() {
                continue;
            }
            let job = self.job(slot);
            let (job_id, attempt, timeout_s) = (job.id, job.attempt, job.timeout_s);
            if let Some(worker) = self.holder_peer(slot) {
                self.outputs.push(Output::Cancel {
                    worker,
                    job: job_id,
                    attempt,
                    reason: CancelReason::TimedOut,
                });
            }
            let ended = self.end_run(slot, AttemptEnd::TimedOut);
            let error: Arc<str> = format!("timed out after {timeout_s}s").into();
            self.fail_attempt(slot, error, ended);
        }
        while let Some(&Reverse((due, slot, generation))) = self.delayed.peek() {
            if due > now {
                break;
            }
            self.delayed.pop();
            if self.generations[slot as usize] == generation {
                self.set_state(slot, State::Ready);
                self.push_ready(slot);
            }
        }
    }

    pub(super) fn announce_wakeup(&mut self) {
        let next = self.next_wakeup();
        if next != self.announced {
            self.announced = next;
            if let Some(at) = next {
                self.outputs.push(Output::WakeAt(at));
            }
        }
    }
}
