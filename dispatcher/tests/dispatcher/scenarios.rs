//! One scenario per dispatch rule (DESIGN §3.1–3.2), each naming the Goop² bug it guards
//! against where there is one.

use dispatcher::{
    AttemptEnd, CancelReason, Config, Dispatcher, IgnoreReason, Input, JobFilter, LeaveReason,
    Millis, Output, Report, RestoredJob, StepError,
};
use proto::{Attempt, JobMode, JobStatus};

use super::harness::{Harness, cancels, id, job, peer, updates};

#[test]
fn higher_priority_first_then_submission_order() {
    let mut h = Harness::new();
    for (n, priority) in [(1, 0), (2, 5), (3, 0), (4, 5), (5, -3), (6, 9)] {
        let mut j = job(n, "t");
        j.priority = priority;
        h.submit(j);
    }
    h.worker(1, &[], 1);
    let mut order = Vec::new();
    for _ in 0..6 {
        let pairs = h.pairs();
        assert_eq!(pairs.len(), 1, "capacity 1 gives one job at a time");
        let n = pairs[0].1;
        order.push(n);
        h.result(1, n, true).unwrap();
    }
    assert_eq!(order, [6, 2, 4, 1, 3, 5]);
}

#[test]
fn a_job_nobody_can_serve_blocks_nothing_behind_it() {
    // Goop² bug 5: the top job with no eligible worker stopped the whole tick.
    let mut h = Harness::new();
    let mut gpu = job(1, "gpu");
    gpu.priority = 100;
    h.submit(gpu);
    h.submit(job(2, "cpu"));
    h.submit(job(3, "cpu"));
    h.worker(1, &["cpu"], 2);
    let mut pairs = h.pairs();
    pairs.sort_unstable();
    assert_eq!(pairs, [(1, 2), (1, 3)]);
    assert_eq!(h.status(1), JobStatus::Pending);
    // A worker for it arrives: it runs at once.
    h.worker(2, &["gpu"], 1);
    assert_eq!(h.pairs(), [(2, 1)]);
}

#[test]
fn least_loaded_worker_wins_and_ties_go_round_robin() {
    let mut h = Harness::new();
    h.worker(1, &[], 4);
    h.worker(2, &[], 2);
    h.worker(3, &[], 2);
    for n in 1..=6 {
        h.submit(job(n, "t"));
    }
    let workers: Vec<u32> = h.pairs().into_iter().map(|(w, _)| w).collect();
    // All idle: round-robin 1, 2, 3. Then loads are 1/4, 1/2, 1/2: worker 1 is least loaded,
    // then 2/4 ties with 1/2 and 1/2 and the least recently served (2) goes first.
    assert_eq!(workers, [1, 2, 3, 1, 2, 3]);
    let loads: Vec<(u32, u32)> =
        h.d.workers()
            .iter()
            .map(|w| (w.running, w.capacity))
            .collect();
    assert_eq!(loads, [(2, 4), (2, 2), (2, 2)]);
}

#[test]
fn a_worker_freed_in_a_full_cluster_takes_the_best_job_it_can_run() {
    // Every worker is full, so a result frees the only candidate: it must get the best job of
    // its own types, never one it cannot run, and the other workers must still be found later.
    let mut h = Harness::new();
    for (n, ty, priority) in [
        (1, "a", 0),
        (2, "b", 0),
        (3, "a", 0),
        (4, "b", 9),
        (5, "a", 1),
    ] {
        let mut j = job(n, ty);
        j.priority = priority;
        h.submit(j);
    }
    h.worker(1, &["a"], 1);
    h.worker(2, &["b"], 1);
    h.worker(3, &[], 1);
    assert_eq!(h.pairs(), [(1, 5), (2, 4), (3, 1)]);
    h.result(2, 4, true).unwrap();
    assert_eq!(h.pairs(), [(2, 2)]);
    h.result(3, 1, true).unwrap();
    assert_eq!(h.pairs(), [(3, 3)]);
    // A worker that joins later is found through the heaps as usual.
    h.worker(4, &["a"], 1);
    for n in 6..=7 {
        h.submit(job(n, "a"));
    }
    assert_eq!(h.pairs(), [(4, 6)]);
    h.result(1, 5, true).unwrap();
    assert_eq!(h.pairs(), [(1, 7)]);
    assert_eq!(h.d.stats().busy, 4);
}

#[test]
fn equal_workers_share_jobs_round_robin() {
    // Goop² bug 6: the "round-robin" was map-iteration order.
    let mut h = Harness::new();
    for w in 1..=3 {
        h.worker(w, &[], 100);
    }
    for n in 1..=9 {
        h.submit(job(n, "t"));
    }
    let workers: Vec<u32> = h.pairs().into_iter().map(|(w, _)| w).collect();
    assert_eq!(workers, [1, 2, 3, 1, 2, 3, 1, 2, 3]);
}

#[test]
fn only_verified_unpaused_matching_workers_with_room_are_eligible() {
    let mut h = Harness::new();
    h.ok(Input::WorkerJoined(peer(1)));
    h.submit(job(1, "Cpu"));
    assert!(h.pairs().is_empty(), "joined but not verified");
    h.worker(2, &["cpu"], 1);
    assert!(h.pairs().is_empty(), "types match exactly, case included");
    h.ok(Input::WorkerJoined(peer(3)));
    h.ok(Input::Pause(peer(3)));
    h.worker(3, &["Cpu"], 1);
    assert!(h.pairs().is_empty(), "paused");
    h.ok(Input::WorkerUnverified(peer(3)));
    h.ok(Input::Resume(peer(3)));
    assert!(h.pairs().is_empty(), "verification failed");
    h.worker(4, &[], 1);
    assert_eq!(h.pairs(), [(4, 1)], "an empty type list runs every type");
}

#[test]
fn capacity_is_counted_exactly() {
    // Goop² bug 3: any result reset running_jobs to 0.
    let mut h = Harness::new();
    h.worker(1, &[], 2);
    for n in 1..=5 {
        h.submit(job(n, "t"));
    }
    assert_eq!(h.pairs(), [(1, 1), (1, 2)]);
    h.result(1, 1, true).unwrap();
    assert_eq!(h.pairs(), [(1, 3)], "one finished attempt frees one slot");
    h.result(1, 2, false).unwrap();
    assert_eq!(h.pairs(), [(1, 4)]);
    assert_eq!(h.d.workers()[0].running, 2);
    assert_eq!(h.d.stats().busy, 2);
}

#[test]
fn every_assignment_is_a_new_attempt_and_stale_reports_are_ignored() {
    // Goop² bug 2: results from old assignees and duplicates were applied.
    let mut h = Harness::new();
    h.worker(1, &[], 1);
    let mut j = job(1, "t");
    j.max_retry = 5;
    h.submit(j);
    let first = h.assigns();
    assert_eq!(first[0].attempt, Attempt(1));
    h.ok(Input::WorkerLeft {
        worker: peer(1),
        reason: LeaveReason::Disconnected,
    });
    h.worker(2, &[], 1);
    let second = h.assigns();
    assert_eq!(second[0].attempt, Attempt(2));
    assert_eq!(second[0].worker.as_str(), "worker2");

    // The old worker comes back and reports on its old attempt: stale.
    h.worker(1, &[], 1);
    let stale = h.report(1, 1, Attempt(1), true);
    assert!(matches!(
        stale,
        Err(StepError::Ignored {
            reason: IgnoreReason::Stale(Attempt(2)),
            ..
        })
    ));
    // Right attempt, wrong sender: foreign.
    let foreign = h.report(1, 1, Attempt(2), true);
    assert!(matches!(
        foreign,
        Err(StepError::Ignored {
            reason: IgnoreReason::Foreign,
            ..
        })
    ));
    assert_eq!(h.status(1), JobStatus::Assigned);

    // The holder fails it once; the duplicate delivery of that failure changes nothing.
    h.report(2, 1, Attempt(2), false).unwrap();
    let retries = h.d.job_view(id(1)).unwrap().retries;
    assert_eq!(retries, 1);
    let duplicate = h.report(2, 1, Attempt(2), false);
    assert!(matches!(duplicate, Err(StepError::Ignored { .. })));
    assert_eq!(h.d.job_view(id(1)).unwrap().retries, 1);

    // Duplicate ack is ignored too.
    h.at(60_000);
    let third = h.assigns();
    assert_eq!(third[0].attempt, Attempt(3));
    let w = super::harness::worker_number(&third[0].worker);
    h.ok(Input::Ack {
        worker: peer(w),
        job: id(1),
        attempt: Attempt(3),
    });
    assert_eq!(h.status(1), JobStatus::Running);
    let again = h.step(Input::Ack {
        worker: peer(w),
        job: id(1),
        attempt: Attempt(3),
    });
    assert!(matches!(
        again,
        Err(StepError::Ignored {
            reason: IgnoreReason::Duplicate,
            ..
        })
    ));
    // A completed job takes no second completion.
    h.result(w, 1, true).unwrap();
    let late = h.report(w, 1, Attempt(3), true);
    assert!(matches!(
        late,
        Err(StepError::Ignored {
            reason: IgnoreReason::Finished(JobStatus::Completed),
            ..
        })
    ));
    let history = h.ended(1);
    assert_eq!(history.len(), 3);
    assert_eq!(history[2].end, Some(AttemptEnd::Completed));
    assert!(
        h.d.job_view(id(1)).is_none(),
        "terminal jobs are handed to the shell"
    );
}

#[test]
fn an_attempt_past_its_timeout_is_cancelled_and_counts_as_a_failure() {
    // Goop² gap 15: no host-side timeout; a stuck attempt stayed forever.
    let mut h = Harness::with(Config {
        lease: None,
        timeout_grace: Millis(2_000),
        ..Config::default()
    });
    h.worker(1, &[], 1);
    let mut j = job(1, "t");
    j.timeout_s = 10;
    j.max_retry = 1;
    h.submit(j);
    let out = h.take();
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::WakeAt(Millis(12_000))))
    );
    assert_eq!(h.d.next_wakeup(), Some(Millis(12_000)));
    h.at(11_999);
    assert_eq!(h.status(1), JobStatus::Assigned, "still within the grace");
    h.take();
    h.at(12_000);
    let out = h.take();
    assert_eq!(cancels(&out), [(1, 1, CancelReason::TimedOut)]);
    let view = h.d.job_view(id(1)).unwrap();
    assert_eq!(view.status, JobStatus::Pending);
    assert_eq!(view.retries, 1);
    assert_eq!(view.error, Some("timed out after 10s"));
    assert_eq!(view.history[0].end, Some(AttemptEnd::TimedOut));
    // The worker's own late report on the timed-out attempt is ignored.
    assert!(h.report(1, 1, Attempt(1), true).is_err());
    assert_eq!(h.d.workers()[0].running, 0, "the slot was freed");
}

#[test]
fn failures_back_off_exponentially_with_jitter_then_fail_with_history() {
    // Goop² gap 19: no backoff, no dead-letter view.
    let mut h = Harness::with(Config {
        lease: None,
        retry_base: Millis(1_000),
        retry_cap: Millis(3_000),
        ..Config::default()
    });
    h.worker(1, &[], 1);
    let mut j = job(1, "t");
    j.max_retry = 3;
    h.submit(j);
    let mut now = 0;
    for (failure, full) in [(1, 1_000u64), (2, 2_000), (3, 3_000)] {
        assert_eq!(h.pairs(), [(1, 1)]);
        h.result(1, 1, false).unwrap();
        let view = h.d.job_view(id(1)).unwrap();
        assert_eq!(view.status, JobStatus::Pending);
        assert_eq!(view.retries, failure);
        let due = view.due_at.expect("waiting for backoff").0 - now;
        assert!(
            (full / 2..=full).contains(&due),
            "failure {failure}: {due}ms not in [{}, {full}]",
            full / 2
        );
        h.take();
        h.at(now + due - 1);
        assert!(h.pairs().is_empty(), "not before the backoff ends");
        now += due;
        h.at(now);
    }
    assert_eq!(h.pairs(), [(1, 1)]);
    h.result(1, 1, false).unwrap();
    let last = h.last(1);
    assert_eq!(last.status, JobStatus::Failed);
    assert_eq!(last.retries, 4);
    assert_eq!(last.error.as_deref(), Some("boom 1"));
    assert_eq!(last.done_at, Some(Millis(now)));
    assert_eq!(h.ended(1).len(), 4, "the store gets every attempt");
    assert_eq!(h.d.terminal_status(id(1)), Some(JobStatus::Failed));
    assert_eq!(h.d.stats().failed, 1);
}

#[test]
fn a_job_that_fails_then_completes_on_its_retry_keeps_no_error() {
    // Goop² gap 13: the error of a failed attempt stayed on the job that then completed.
    let mut h = Harness::with(Config {
        lease: None,
        retry_base: Millis(1_000),
        retry_cap: Millis(1_000),
        ..Config::default()
    });
    h.worker(1, &[], 1);
    let mut j = job(1, "t");
    j.max_retry = 2;
    h.submit(j);
    assert_eq!(h.pairs(), [(1, 1)]);
    h.result(1, 1, false).unwrap();
    let waiting = h.d.job_view(id(1)).unwrap();
    assert_eq!(waiting.status, JobStatus::Pending);
    assert_eq!(
        waiting.error,
        Some("boom 1"),
        "the failure is shown while it waits"
    );
    h.take();
    h.at(1_000);
    assert_eq!(h.pairs(), [(1, 1)]);
    h.result(1, 1, true).unwrap();
    let last = h.last(1);
    assert_eq!(last.status, JobStatus::Completed);
    assert_eq!(last.error, None, "{last:?}");
    assert_eq!(last.retries, 1);
}

#[test]
fn the_same_seed_gives_the_same_jitter() {
    let run = |seed| {
        let mut d: Dispatcher<u32, String> = Dispatcher::new(
            Config {
                lease: None,
                ..Config::default()
            },
            seed,
        );
        let mut j = super::harness::job(1, "t");
        j.max_retry = 1;
        d.step(Millis(0), Input::Submit(j)).unwrap();
        d.step(
            Millis(0),
            Input::WorkerVerified {
                worker: peer(1),
                types: vec![],
                capacity: 1,
            },
        )
        .unwrap();
        d.step(
            Millis(0),
            Input::Result {
                worker: peer(1),
                job: id(1),
                attempt: Attempt(1),
                report: Report::Failed("x".into()),
            },
        )
        .unwrap();
        d.job_view(id(1)).unwrap().due_at
    };
    assert_eq!(run(1), run(1));
    let spread: std::collections::BTreeSet<_> = (0..20).map(run).collect();
    assert!(spread.len() > 1, "jitter varies with the seed");
}

#[test]
fn worker_loss_requeues_without_spending_a_retry() {
    // Goop² gap 18: a leave counted as a failure, so max_retry=0 jobs failed at once.
    for reason in [
        LeaveReason::Left,
        LeaveReason::Kicked,
        LeaveReason::Disconnected,
        LeaveReason::HeartbeatLost,
    ] {
        let mut h = Harness::new();
        h.worker(1, &[], 1);
        h.submit(job(1, "t"));
        assert_eq!(h.pairs(), [(1, 1)]);
        h.ok(Input::WorkerLeft {
            worker: peer(1),
            reason,
        });
        let view = h.d.job_view(id(1)).unwrap();
        assert_eq!(view.status, JobStatus::Pending, "{reason:?}");
        assert_eq!(view.retries, 0);
        assert_eq!(view.losses, 1);
        assert!(h.d.workers().is_empty());
        h.worker(2, &[], 1);
        assert_eq!(h.pairs(), [(2, 1)], "reassigned at once, no backoff");
    }
}

#[test]
fn a_lapsed_lease_loses_the_worker() {
    // Goop² gap 16: a silently vanished worker kept its jobs and stayed eligible.
    let mut h = Harness::with(Config {
        lease: Some(Millis(30_000)),
        ..Config::default()
    });
    h.worker(1, &[], 1);
    h.worker(2, &[], 1);
    h.submit(job(1, "t"));
    h.submit(job(2, "t"));
    assert_eq!(h.pairs().len(), 2);
    h.now = 20_000;
    h.ok(Input::Heartbeat {
        worker: peer(2),
        running: vec![(id(2), Attempt(1))],
    });
    h.take();
    h.at(30_000);
    let out = h.take();
    let lost: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::WorkerLost { worker, reason } => Some((worker.as_str().to_owned(), *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(lost, [("worker1".to_owned(), LeaveReason::LeaseExpired)]);
    assert_eq!(h.status(1), JobStatus::Pending);
    assert_eq!(h.d.job_view(id(1)).unwrap().retries, 0);
    assert_eq!(
        h.status(2),
        JobStatus::Running,
        "heartbeat proved it arrived"
    );
    h.at(49_999);
    assert_eq!(h.d.workers().len(), 1, "worker 2's lease runs to 50s");
    h.at(50_000);
    assert!(h.d.workers().is_empty());
}

#[test]
fn a_job_that_keeps_losing_workers_fails_at_the_crash_limit() {
    let mut h = Harness::new();
    h.submit(job(1, "t"));
    for round in 1..=3 {
        h.worker(round, &[], 1);
        assert_eq!(h.pairs(), [(round, 1)]);
        h.ok(Input::WorkerLeft {
            worker: peer(round),
            reason: LeaveReason::Disconnected,
        });
    }
    let last = h.last(1);
    assert_eq!(last.status, JobStatus::Failed);
    assert_eq!(last.losses, 3);
    assert_eq!(last.retries, 0);
    let error = last.error.expect("an error");
    assert!(error.contains("crash limit"), "{error}");
}

#[test]
fn an_executor_lost_under_a_job_requeues_it_without_a_retry_until_the_crash_limit() {
    // A daemon crash is not the job's fault: the worker stays, the job goes back to the queue
    // at no retry cost, and a job that keeps crashing its executor fails at the crash limit.
    let mut h = Harness::new();
    h.worker(1, &[], 1);
    h.submit(job(1, "t"));
    for round in 1..=3 {
        assert_eq!(h.pairs(), [(1, 1)], "round {round}");
        let attempt = h.attempt(1);
        h.ok(Input::Result {
            worker: peer(1),
            job: id(1),
            attempt,
            report: Report::Lost("executor crashed: killed by signal 9".into()),
        });
        if round < 3 {
            // Requeued at once (no backoff) and given straight back to the worker, which stays.
            let view = h.d.job_view(id(1)).unwrap();
            assert_eq!(
                (view.status, view.retries, view.losses),
                (JobStatus::Assigned, 0, round)
            );
            assert_eq!(view.attempt, Attempt(attempt.0 + 1));
            assert_eq!(h.d.workers().len(), 1, "the worker itself is not lost");
        }
    }
    let last = h.last(1);
    assert_eq!(
        (last.status, last.retries, last.losses),
        (JobStatus::Failed, 0, 3)
    );
    let error = last.error.expect("an error");
    assert!(
        error.contains("crash limit") && error.contains("executor crashed"),
        "{error}"
    );
    let ends: Vec<_> = h.ended(1).into_iter().map(|r| r.end).collect();
    assert!(
        ends.iter().all(|e| matches!(e, Some(AttemptEnd::Lost(_)))),
        "{ends:?}"
    );
}

#[test]
fn an_attempt_that_never_started_is_requeued_at_no_cost_however_often() {
    // A worker that could not start the job (its executor could not be started) is not the
    // job's fault, and the job did not run: no retry, no loss, and no crash limit.
    let mut h = Harness::new();
    h.worker(1, &[], 1);
    h.submit(job(1, "t"));
    for round in 1..=5 {
        assert_eq!(h.pairs(), [(1, 1)], "round {round}");
        let attempt = h.attempt(1);
        h.ok(Input::Result {
            worker: peer(1),
            job: id(1),
            attempt,
            report: Report::NotStarted("cannot start executor: no such file".into()),
        });
        let view = h.d.job_view(id(1)).unwrap();
        assert_eq!(
            (view.status, view.retries, view.losses),
            (JobStatus::Assigned, 0, 0),
            "round {round}"
        );
        assert_eq!(view.attempt, Attempt(attempt.0 + 1));
    }
    let ends: Vec<_> = h.ended(1).into_iter().map(|r| r.end).collect();
    assert_eq!(ends.len(), 5, "{ends:?}");
    assert!(
        ends.iter().all(|e| matches!(e, Some(AttemptEnd::Lost(_)))),
        "{ends:?}"
    );
}

#[test]
fn terminal_states_are_final() {
    // Goop² bug 1: Complete and Fail overwrote any state.
    let mut h = Harness::new();
    h.worker(1, &[], 1);
    h.submit(job(1, "t"));
    h.take();
    h.result(1, 1, true).unwrap();
    assert_eq!(
        h.step(Input::Cancel(id(1))),
        Err(StepError::AlreadyTerminal {
            job: id(1),
            status: JobStatus::Completed
        })
    );
    assert_eq!(
        h.retry(job(1, "t")),
        Err(StepError::NotRetryable {
            job: id(1),
            status: JobStatus::Completed
        })
    );
    assert!(h.report(1, 1, Attempt(1), false).is_err());
    assert_eq!(h.status(1), JobStatus::Completed);
    assert_eq!(h.last(1).error, None);
}

#[test]
fn cancel_is_terminal_at_once_and_later_reports_are_ignored() {
    let mut h = Harness::new();
    h.worker(1, &[], 1);
    let mut j = job(1, "t");
    j.max_retry = 3;
    h.submit(j);
    h.submit(job(2, "t"));
    h.take();
    h.ok(Input::Cancel(id(1)));
    let out = h.take();
    assert_eq!(cancels(&out), [(1, 1, CancelReason::Cancelled)]);
    assert_eq!(h.status(1), JobStatus::Cancelled);
    // The worker's kill produces a failure report, then maybe a late completion: both ignored.
    assert!(h.report(1, 1, Attempt(1), false).is_err());
    assert!(h.report(1, 1, Attempt(1), true).is_err());
    assert_eq!(h.status(1), JobStatus::Cancelled);
    assert_eq!(h.last(1).retries, 0);
    // Its slot went to the next job.
    let assigned: Vec<u64> = updates(&out)
        .iter()
        .filter(|u| u.status == JobStatus::Assigned)
        .map(|u| u.id.as_u64())
        .collect();
    assert_eq!(assigned, [2]);
    // A pending job cancels without telling anyone.
    h.submit(job(3, "t"));
    h.take();
    h.ok(Input::Cancel(id(3)));
    assert!(cancels(&h.take()).is_empty());
    assert_eq!(h.status(3), JobStatus::Cancelled);
}

#[test]
fn users_can_retry_failed_and_cancelled_jobs() {
    let mut h = Harness::new();
    h.worker(1, &[], 1);
    h.submit(job(1, "t"));
    h.result(1, 1, false).unwrap();
    assert_eq!(h.status(1), JobStatus::Failed);
    h.take();
    h.retry(job(1, "t")).unwrap();
    let view = h.d.job_view(id(1)).unwrap();
    assert_eq!(view.status, JobStatus::Assigned);
    assert_eq!(view.attempt, Attempt(2), "attempt numbers continue");
    assert_eq!(view.retries, 0, "a fresh retry budget");
    assert_eq!(view.error, None);
    h.ok(Input::Cancel(id(1)));
    h.retry(job(1, "t")).unwrap();
    assert_eq!(h.attempt(1), Attempt(3));
    assert_eq!(
        h.retry(job(1, "t")),
        Err(StepError::NotRetryable {
            job: id(1),
            status: JobStatus::Assigned
        })
    );
    assert_eq!(h.retry(job(9, "t")), Err(StepError::UnknownJob(id(9))));
    // A job whose dependency failed can only be retried once that one is.
    h.ok(Input::Pause(peer(1)));
    h.submit(job(2, "t"));
    let mut waiter = job(3, "t");
    waiter.after = vec![id(2)];
    h.submit(waiter.clone());
    h.ok(Input::Cancel(id(2)));
    assert_eq!(h.status(3), JobStatus::Failed);
    assert!(matches!(
        h.retry(waiter.clone()),
        Err(StepError::DependencyFailed { .. })
    ));
    h.retry(job(2, "t")).unwrap();
    h.retry(waiter).unwrap();
    assert_eq!(h.d.job_view(id(3)).unwrap().waiting_on, 1);
}

#[test]
fn paused_workers_keep_their_jobs_and_only_resume_unpauses() {
    // Goop² bug 4: any result un-paused the worker.
    let mut h = Harness::new();
    h.worker(1, &[], 2);
    h.submit(job(1, "t"));
    assert_eq!(h.pairs(), [(1, 1)]);
    h.ok(Input::Pause(peer(1)));
    h.submit(job(2, "t"));
    h.submit(job(3, "t"));
    assert!(h.pairs().is_empty());
    h.result(1, 1, true).unwrap();
    assert_eq!(
        h.status(1),
        JobStatus::Completed,
        "its running job finished"
    );
    assert!(h.pairs().is_empty(), "a result does not un-pause");
    assert!(h.d.workers()[0].paused);
    h.ok(Input::Resume(peer(1)));
    assert_eq!(h.pairs(), [(1, 2), (1, 3)]);
    assert_eq!(
        h.step(Input::Pause(peer(9))),
        Err(StepError::UnknownWorker(peer(9)))
    );
}

#[test]
fn continuous_jobs_stream_output_until_ended_or_cancelled() {
    // Goop² bug 8: mode never reached the worker.
    let mut h = Harness::new();
    h.worker(1, &[], 2);
    let mut j = job(1, "stream");
    j.mode = JobMode::Continuous;
    h.submit(j);
    let mut j = job(2, "stream");
    j.mode = JobMode::Continuous;
    h.submit(j);
    let assigns = h.assigns();
    assert!(assigns.iter().all(|a| a.mode == JobMode::Continuous));
    for k in 0..3 {
        h.ok(Input::Output {
            worker: peer(1),
            job: id(1),
            attempt: Attempt(1),
            data: format!("line {k}"),
        });
    }
    h.ok(Input::Progress {
        worker: peer(1),
        job: id(1),
        attempt: Attempt(1),
        report: "50%".into(),
    });
    let out = h.take();
    let lines: Vec<&str> = out
        .iter()
        .filter_map(|o| match o {
            Output::JobOutput { data, .. } => Some(data.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(lines, ["line 0", "line 1", "line 2"]);
    assert!(out.iter().any(|o| matches!(o, Output::Progress { .. })));
    assert_eq!(h.status(1), JobStatus::Running, "output implies the ack");
    // Output from someone else is not passed through.
    assert!(
        h.step(Input::Output {
            worker: peer(2),
            job: id(1),
            attempt: Attempt(1),
            data: "forged".into(),
        })
        .is_err()
    );
    // The executor ends job 1; job 2 is cancelled.
    h.result(1, 1, true).unwrap();
    assert_eq!(h.status(1), JobStatus::Completed);
    h.ok(Input::Cancel(id(2)));
    assert_eq!(h.status(2), JobStatus::Cancelled);
}

#[test]
fn after_waits_for_its_jobs_and_fails_when_one_fails() {
    let mut h = Harness::new();
    h.submit(job(1, "t"));
    let mut b = job(2, "t");
    b.after = vec![id(1)];
    b.priority = 10;
    h.submit(b);
    let mut c = job(3, "t");
    c.after = vec![id(2)];
    h.submit(c);
    h.worker(1, &[], 4);
    assert_eq!(h.pairs(), [(1, 1)], "2 waits for 1 despite its priority");
    assert_eq!(h.d.job_view(id(2)).unwrap().waiting_on, 1);
    h.result(1, 1, true).unwrap();
    assert_eq!(h.pairs(), [(1, 2)]);
    h.result(1, 2, true).unwrap();
    assert_eq!(h.pairs(), [(1, 3)]);

    // A failed dependency fails its dependents, transitively, saying which.
    h.ok(Input::Pause(peer(1)));
    h.submit(job(10, "t"));
    let mut d = job(11, "t");
    d.after = vec![id(10)];
    h.submit(d);
    let mut e = job(12, "t");
    e.after = vec![id(11)];
    h.submit(e);
    h.ok(Input::Cancel(id(10)));
    assert_eq!(h.status(11), JobStatus::Failed);
    assert_eq!(
        h.last(11).error.as_deref(),
        Some(format!("dependency {} was cancelled", id(10)).as_str())
    );
    assert_eq!(h.status(12), JobStatus::Failed);
    assert_eq!(
        h.last(12).error.as_deref(),
        Some(format!("dependency {} failed", id(11)).as_str())
    );
    // Submitting after a job that already failed fails at once.
    let mut f = job(13, "t");
    f.after = vec![id(12)];
    h.submit(f);
    assert_eq!(h.status(13), JobStatus::Failed);
}

#[test]
fn a_submit_is_pending_on_its_ok_and_only_a_failure_on_admission_is_announced() {
    let mut h = Harness::new();
    h.submit(job(1, "t"));
    h.ok(Input::SubmitBatch(vec![job(2, "t"), job(3, "u")]));
    assert!(
        updates(&h.take()).is_empty(),
        "the Ok says they are pending"
    );
    for n in 1..=3 {
        assert_eq!(h.status(n), JobStatus::Pending);
    }
    h.ok(Input::Cancel(id(1)));
    h.take();
    let mut waiter = job(4, "t");
    waiter.after = vec![id(1)];
    h.ok(Input::SubmitBatch(vec![job(5, "t"), waiter]));
    let out = h.take();
    let announced: Vec<_> = updates(&out).iter().map(|u| (u.id, u.status)).collect();
    assert_eq!(announced, [(id(4), JobStatus::Failed)]);
    // Whatever happens next is announced: the assignment, as before.
    h.worker(1, &[], 1);
    assert_eq!(h.last(2).status, JobStatus::Assigned);
}

#[test]
fn after_must_name_known_jobs() {
    let mut h = Harness::new();
    let mut j = job(1, "t");
    j.after = vec![id(99)];
    assert_eq!(
        h.step(Input::Submit(j)),
        Err(StepError::UnknownDependency {
            job: id(1),
            dependency: id(99)
        })
    );
    // Within a batch, a job may wait for one earlier in the batch, not for itself or a later one.
    let mut second = job(2, "t");
    second.after = vec![id(1)];
    h.ok(Input::SubmitBatch(vec![job(1, "t"), second]));
    let mut own = job(3, "t");
    own.after = vec![id(3)];
    assert!(matches!(
        h.step(Input::Submit(own)),
        Err(StepError::UnknownDependency { .. })
    ));
    let mut early = job(4, "t");
    early.after = vec![id(5)];
    assert!(
        h.step(Input::SubmitBatch(vec![early, job(5, "t")]))
            .is_err()
    );
    assert!(
        h.d.job_view(id(5)).is_none(),
        "a refused batch is refused whole"
    );
}

#[test]
fn not_before_holds_a_job_and_asks_for_a_wakeup() {
    let mut h = Harness::new();
    h.worker(1, &[], 2);
    let mut j = job(1, "t");
    j.not_before = Some(Millis(5_000));
    h.submit(j);
    h.submit(job(2, "t"));
    let out = h.take();
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::WakeAt(Millis(5_000))))
    );
    let assigned: Vec<u64> = out
        .iter()
        .filter_map(|o| match o {
            Output::Assign(a) => Some(a.job.as_u64()),
            _ => None,
        })
        .collect();
    assert_eq!(assigned, [2]);
    assert_eq!(h.d.stats().delayed, 1);
    h.at(4_999);
    assert!(h.pairs().is_empty());
    h.at(5_000);
    assert_eq!(h.pairs(), [(1, 1)]);
    assert_eq!(h.d.next_wakeup(), None);
}

#[test]
fn restore_puts_in_flight_attempts_back_at_no_cost() {
    // Goop² bug 20: results of old attempts after a restart were applied blindly.
    let mut h = Harness::new();
    let restored = |n: u64, status, attempt, retries| RestoredJob {
        job: job(n, "t"),
        status,
        attempt: Attempt(attempt),
        retries,
        losses: 0,
        error: None,
        created_at: Millis(n),
        done_at: status.is_terminal().then_some(Millis(100)),
        history: Vec::new(),
    };
    let mut running = restored(1, JobStatus::Running, 4, 2);
    running.job.max_retry = 5;
    h.ok(Input::Restore(vec![
        restored(3, JobStatus::Completed, 1, 0),
        running,
        restored(2, JobStatus::Pending, 0, 0),
    ]));
    let out = h.take();
    let changed: Vec<(u64, JobStatus)> = updates(&out)
        .iter()
        .map(|u| (u.id.as_u64(), u.status))
        .collect();
    // Every live job, with its skipped attempt number; the finished one is left alone.
    assert_eq!(
        changed,
        [(1, JobStatus::Pending), (2, JobStatus::Pending)],
        "the live jobs"
    );
    let attempts: Vec<(u64, Attempt)> = updates(&out)
        .iter()
        .map(|u| (u.id.as_u64(), u.attempt))
        .collect();
    assert_eq!(attempts, [(1, Attempt(5)), (2, Attempt(1))]);
    let view = h.d.job_view(id(1)).unwrap();
    assert_eq!(view.retries, 2, "no retry spent");
    assert_eq!(h.status(3), JobStatus::Completed);
    // A worker still running attempt 4 from before the restart comes back.
    h.worker(1, &[], 2);
    assert_eq!(h.pairs(), [(1, 1), (1, 2)], "creation order kept");
    // Attempt 5 may have been handed out before the restart without being stored: skipped.
    assert_eq!(h.attempt(1), Attempt(6));
    assert!(h.report(1, 1, Attempt(4), true).is_err(), "old attempt");
    assert!(h.report(1, 1, Attempt(5), true).is_err(), "skipped attempt");
    assert_eq!(h.status(1), JobStatus::Assigned);
    assert_eq!(
        h.step(Input::Restore(vec![restored(3, JobStatus::Pending, 0, 0)])),
        Err(StepError::DuplicateJob(id(3)))
    );
}

#[test]
fn heartbeats_cancel_unheld_attempts_and_requeue_missing_ones() {
    let mut h = Harness::with(Config {
        lease: Some(Millis(60_000)),
        assign_grace: Millis(1_000),
        ..Config::default()
    });
    h.worker(1, &[], 2);
    h.submit(job(1, "t"));
    h.submit(job(2, "t"));
    assert_eq!(h.pairs().len(), 2);
    // Too early to conclude anything about job 2.
    h.ok(Input::Heartbeat {
        worker: peer(1),
        running: vec![(id(1), Attempt(1)), (id(7), Attempt(3))],
    });
    let out = h.take();
    assert_eq!(cancels(&out), [(1, 7, CancelReason::NotHeld)]);
    assert_eq!(h.status(1), JobStatus::Running);
    assert_eq!(h.status(2), JobStatus::Assigned);
    h.now = 1_000;
    h.ok(Input::Heartbeat {
        worker: peer(1),
        running: vec![(id(1), Attempt(1))],
    });
    let view = h.d.job_view(id(2)).unwrap();
    assert_eq!(view.losses, 1, "the worker no longer runs it");
    assert_eq!(view.attempt, Attempt(2), "and it went straight back out");
    assert_eq!(
        h.step(Input::Heartbeat {
            worker: peer(5),
            running: vec![]
        }),
        Err(StepError::UnknownWorker(peer(5)))
    );
}

#[test]
fn a_verification_may_overtake_the_join() {
    // Goop² gap 22: a `worker:verified` before the join was dropped.
    let mut h = Harness::new();
    h.submit(job(1, "t"));
    h.ok(Input::WorkerVerified {
        worker: peer(1),
        types: vec![],
        capacity: 0,
    });
    assert_eq!(h.pairs(), [(1, 1)]);
    assert_eq!(h.d.workers()[0].capacity, 1, "capacity 0 means the default");
}

#[test]
fn a_rejoin_must_verify_again() {
    // Goop² bug 7: a stale verified record survived a re-join.
    let mut h = Harness::new();
    h.worker(1, &[], 1);
    h.ok(Input::WorkerJoined(peer(1)));
    h.submit(job(1, "t"));
    assert!(h.pairs().is_empty());
    assert!(!h.d.workers()[0].verified);
}

#[test]
fn bad_inputs_get_typed_errors_with_lowercase_messages() {
    let mut h = Harness::new();
    h.submit(job(1, "t"));
    let errors = [
        h.step(Input::Submit(job(1, "t"))).unwrap_err(),
        h.step(Input::Submit(job(2, ""))).unwrap_err(),
        h.step(Input::Submit(job(3, &"x".repeat(300)))).unwrap_err(),
        h.step(Input::Cancel(id(9))).unwrap_err(),
        h.retry(job(1, "t")).unwrap_err(),
        h.step(Input::Forget(id(1))).unwrap_err(),
        h.step(Input::Resume(peer(1))).unwrap_err(),
        h.report(1, 1, Attempt(1), true).unwrap_err(),
    ];
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(messages[0], format!("job {} already exists", id(1)));
    assert_eq!(messages[3], format!("unknown job {}", id(9)));
    for m in &messages {
        assert!(!m.ends_with('.'), "{m}");
        assert_eq!(m.chars().next().map(char::is_lowercase), Some(true), "{m}");
    }
    let mut small = Harness::with(Config {
        max_live_jobs: 2,
        lease: None,
        ..Config::default()
    });
    assert!(matches!(
        small.step(Input::SubmitBatch(vec![
            job(1, "t"),
            job(2, "t"),
            job(3, "t")
        ])),
        Err(StepError::QueueFull { live: 0, max: 2 })
    ));
}

#[test]
fn queries_show_history_lists_stats_and_workers() {
    let mut h = Harness::new();
    h.worker(1, &["a"], 2);
    h.worker(2, &["b", "a"], 1);
    let mut j = job(1, "a");
    j.labels = vec!["nightly".into()];
    j.max_retry = 1;
    h.submit(j);
    h.submit(job(2, "b"));
    h.submit(job(3, "c"));
    h.ok(Input::Ack {
        worker: peer(1),
        job: id(1),
        attempt: Attempt(1),
    });
    h.result(1, 1, false).unwrap();
    let view = h.d.job_view(id(1)).unwrap();
    assert_eq!(view.history.len(), 1);
    assert_eq!(view.history[0].acked_at, Some(Millis(0)));
    assert_eq!(
        view.history[0].end,
        Some(AttemptEnd::Failed("boom 1".into()))
    );
    let labelled = h.d.jobs(&JobFilter {
        label: Some("nightly".into()),
        ..JobFilter::default()
    });
    assert_eq!(labelled.len(), 1);
    let of_type: Vec<u64> =
        h.d.jobs(&JobFilter {
            job_type: Some("c".into()),
            ..JobFilter::default()
        })
        .iter()
        .map(|v| v.id.as_u64())
        .collect();
    assert_eq!(of_type, [3]);
    let on_2: Vec<u64> =
        h.d.jobs(&JobFilter {
            worker: Some(peer(2)),
            ..JobFilter::default()
        })
        .iter()
        .map(|v| v.id.as_u64())
        .collect();
    assert_eq!(on_2, [2]);
    let stats = h.d.stats();
    assert_eq!(
        (stats.pending, stats.delayed, stats.ready, stats.assigned),
        (2, 1, 1, 1)
    );
    assert_eq!((stats.workers, stats.capacity, stats.busy), (2, 3, 1));
    let workers = h.d.workers();
    assert_eq!(workers[1].types, Some(vec!["b", "a"]));
    assert_eq!(workers[1].attempts, [(id(2), Attempt(1))]);
}

#[test]
fn forget_drops_terminal_jobs_only() {
    let mut h = Harness::new();
    h.submit(job(1, "t"));
    h.submit(job(2, "t"));
    h.ok(Input::Cancel(id(1)));
    h.ok(Input::Forget(id(1)));
    assert_eq!(h.d.status(id(1)), None);
    assert_eq!(h.d.stats().cancelled, 0);
    assert!(matches!(
        h.step(Input::Forget(id(2))),
        Err(StepError::NotTerminal { .. })
    ));
}

#[test]
fn many_types_and_a_long_dependency_chain_stay_cheap() {
    // A chain of 50,000 dependents fails one after the other without recursion.
    let mut h = Harness::new();
    let mut batch = vec![job(0, "t")];
    for n in 1..50_000 {
        let mut j = job(n, "t");
        j.after = vec![id(n - 1)];
        batch.push(j);
    }
    h.ok(Input::SubmitBatch(batch));
    h.ok(Input::Cancel(id(0)));
    assert_eq!(h.d.stats().failed, 49_999);
    // Thousands of types nobody serves do not slow a typed worker down.
    for n in 100_000..105_000 {
        h.submit(job(n, &format!("type{n}")));
    }
    h.submit(job(200_000, "mine"));
    h.worker(1, &["mine"], 1);
    assert_eq!(h.pairs(), [(1, 200_000)]);
}

#[test]
fn finished_jobs_past_the_limit_are_evicted_oldest_first_and_recalled_when_named() {
    let mut h = Harness::with(Config {
        lease: None,
        max_finished: 3,
        ..Config::default()
    });
    h.worker(1, &[], 10);
    for n in 1..=6 {
        h.submit(job(n, "t"));
    }
    for n in 1..=6 {
        h.result(1, n, n != 1).unwrap();
    }
    let known = |h: &Harness| (1..=6).filter(|&n| h.d.status(id(n)).is_some()).count();
    assert_eq!(known(&h), 3);
    for n in 1..=3 {
        assert_eq!(h.d.status(id(n)), None, "job {n} finished among the first");
    }
    assert_eq!(h.status(6), JobStatus::Completed);
    let stats = h.d.stats();
    assert_eq!(
        (stats.completed, stats.failed),
        (5, 1),
        "evicted jobs still count"
    );

    // Named while evicted, a job is unknown; recalled, it is known with the store's status.
    let mut waiter = job(7, "t");
    waiter.after = vec![id(2)];
    assert_eq!(
        h.step(Input::Submit(waiter.clone())),
        Err(StepError::UnknownDependency {
            job: id(7),
            dependency: id(2)
        })
    );
    h.ok(Input::Recall(vec![(id(2), JobStatus::Completed)]));
    assert_eq!(h.d.stats().completed, 5, "a recall does not count again");
    h.submit(waiter);
    assert_eq!(h.status(7), JobStatus::Assigned, "its dependency completed");

    assert_eq!(h.retry(job(1, "t")), Err(StepError::UnknownJob(id(1))));
    h.ok(Input::Recall(vec![(id(1), JobStatus::Failed)]));
    h.retry(job(1, "t")).unwrap();
    assert_eq!(h.d.stats().failed, 0, "the retried job is live again");

    // What a recall skips: ids known already, statuses that are not terminal.
    h.ok(Input::Recall(vec![
        (id(6), JobStatus::Failed),
        (id(50), JobStatus::Running),
    ]));
    assert_eq!(h.status(6), JobStatus::Completed);
    assert_eq!(h.d.status(id(50)), None);

    // Forgetting a recalled job takes it out of the counts.
    h.ok(Input::Recall(vec![(id(3), JobStatus::Completed)]));
    h.ok(Input::Forget(id(3)));
    assert_eq!(h.d.stats().completed, 4);

    // Counts of jobs a restore left out, then a clear of every finished job.
    h.ok(Input::Unloaded {
        completed: 10,
        failed: 2,
        cancelled: 1,
    });
    let stats = h.d.stats();
    assert_eq!((stats.completed, stats.failed, stats.cancelled), (14, 2, 1));
    h.ok(Input::ForgetFinished);
    let stats = h.d.stats();
    assert_eq!((stats.completed, stats.failed, stats.cancelled), (0, 0, 0));
    assert_eq!(h.d.status(id(6)), None);
    assert_eq!(h.status(7), JobStatus::Assigned, "live jobs stay");
    assert_eq!(h.status(1), JobStatus::Assigned);
}
