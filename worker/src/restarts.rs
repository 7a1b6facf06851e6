//! The restart policy of an executor that went down: how long to wait before it is tried again,
//! and when to give up on it.
//!
//! The daemon supervisor (a daemon that died) and the oneshot runtime (a process that could not
//! be started) follow the same policy, so it is written once, here, and tested on its own. It
//! knows no clock and does no I/O: it hands out delays and verdicts, and each runtime turns them
//! into its timers, statuses and logs.
//!
//! The delay starts at the configured first one and doubles, up to the cap, with every loss and
//! every failed check. Only a real sign of health brings it back to the first: a passing check is
//! not one, since an executor that passes its check and then cannot work (a machine out of
//! processes) would otherwise be tried again at the first delay forever. Failed checks in a row are counted;
//! a passing check ends the row, and a row as long as the limit is final.

use std::time::Duration;

/// What follows a failed check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Check again after this delay.
    Retry(Duration),
    /// The executor is unusable, for good.
    GiveUp,
}

/// The restart state of one executor: its delays, its failed checks in a row, whether a check
/// ever passed, and how many times it went down.
#[derive(Clone, Debug)]
pub(crate) struct Restarts {
    first: Duration,
    cap: Duration,
    max_failed_checks: u32,
    /// The delay after the next loss or failed check.
    delay: Duration,
    /// Failed checks since the last one that passed.
    failed_checks: u32,
    /// Whether a check ever passed. Until one has, a failed check is final: the first check is
    /// what starting an executor waits for, and its failure is the start's error, not a wait.
    checked_once: bool,
    /// Losses and failed checks so far, to tell a sign of health from before the latest of
    /// them (see [`Restarts::healthy_since`]).
    downs: u64,
}

impl Restarts {
    /// An executor never checked, whose delays start at `first` and double up to `cap`, and
    /// which is given up on after `max_failed_checks` failed checks in a row (at least one).
    ///
    /// A `first` over `cap` is used as it is, once; the delays after it are the cap.
    pub(crate) fn new(first: Duration, cap: Duration, max_failed_checks: u32) -> Self {
        Self {
            first,
            cap,
            max_failed_checks,
            delay: first,
            failed_checks: 0,
            checked_once: false,
            downs: 0,
        }
    }

    /// The executor went down other than by failing a check: the delay before it is tried
    /// again. The next delay is twice as long, up to the cap. A loss alone is never final.
    pub(crate) fn lost(&mut self) -> Duration {
        self.next_delay()
    }

    /// A check failed: try again after a delay (the next one twice as long, up to the cap), or
    /// give up, when no check ever passed or this one makes `max_failed_checks` in a row.
    pub(crate) fn check_failed(&mut self) -> Verdict {
        self.failed_checks = self.failed_checks.saturating_add(1);
        if !self.checked_once || self.failed_checks >= self.max_failed_checks {
            return Verdict::GiveUp;
        }
        Verdict::Retry(self.next_delay())
    }

    /// A check passed: the row of failed checks is over. The delay stays as it is: passing a
    /// check is no proof that the executor can work.
    pub(crate) fn check_passed(&mut self) {
        self.failed_checks = 0;
        self.checked_once = true;
    }

    /// A real sign of health (a daemon completed a job, a oneshot job's process started): the
    /// next loss waits the first delay again.
    pub(crate) fn healthy(&mut self) {
        self.delay = self.first;
    }

    /// How many times the executor went down (a loss or a failed check) so far: a mark to
    /// give [`Restarts::healthy_since`] later.
    pub(crate) fn downs(&self) -> u64 {
        self.downs
    }

    /// A sign of health known only later, about something that began at the mark `downs`
    /// (a oneshot job whose process started, seen when the job ends): it counts as
    /// [`Restarts::healthy`] only when the executor has not gone down since the mark. A long
    /// job started before an outage and ending in the middle of it says nothing of the outage.
    pub(crate) fn healthy_since(&mut self, downs: u64) {
        if downs == self.downs {
            self.healthy();
        }
    }

    /// The delay to wait now; the next one is twice as long, up to the cap.
    fn next_delay(&mut self) -> Duration {
        self.downs = self.downs.wrapping_add(1);
        let delay = self.delay;
        self.delay = delay.saturating_mul(2).min(self.cap);
        delay
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const FIRST: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_millis(1000);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Checked once, as an executor is by the time it can go down after working.
    fn checked(max_failed_checks: u32) -> Restarts {
        let mut restarts = Restarts::new(FIRST, CAP, max_failed_checks);
        restarts.check_passed();
        restarts
    }

    #[test]
    fn the_delay_doubles_up_to_the_cap() {
        let mut restarts = checked(5);
        let delays: Vec<Duration> = (0..6).map(|_| restarts.lost()).collect();
        assert_eq!(
            delays,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
    }

    #[test]
    fn a_passing_check_does_not_bring_the_delay_back_to_the_first() {
        // A oneshot executor whose check passes but whose processes cannot start: each time it
        // goes down it must wait longer, not flap at the first delay.
        let mut restarts = checked(5);
        let mut delays = Vec::new();
        for _ in 0..4 {
            delays.push(restarts.lost());
            restarts.check_passed();
        }
        assert_eq!(delays, [ms(100), ms(200), ms(400), ms(800)]);
    }

    #[test]
    fn only_a_sign_of_health_brings_the_delay_back_to_the_first() {
        let mut restarts = checked(5);
        restarts.lost();
        restarts.check_passed();
        restarts.lost();
        restarts.check_passed();
        restarts.healthy();
        assert_eq!(restarts.lost(), FIRST);
        assert_eq!(restarts.lost(), ms(200));
    }

    #[test]
    fn a_sign_of_health_from_before_an_outage_says_nothing_of_it() {
        let mut restarts = checked(5);
        // A long job starts, then the executor goes down twice (a loss, a failed check).
        let long_job = restarts.downs();
        assert_eq!(restarts.lost(), ms(100));
        assert_eq!(restarts.check_failed(), Verdict::Retry(ms(200)));
        restarts.check_passed();
        // The long job ends: stale, the delays go on growing.
        restarts.healthy_since(long_job);
        assert_eq!(restarts.lost(), ms(400));
        // A job that started after the last outage ends: a real sign of health.
        restarts.check_passed();
        let fresh_job = restarts.downs();
        restarts.healthy_since(fresh_job);
        assert_eq!(restarts.lost(), FIRST);
    }

    #[test]
    fn failed_checks_lengthen_the_wait_after_the_next_loss() {
        let mut restarts = checked(5);
        assert_eq!(restarts.lost(), ms(100));
        assert_eq!(restarts.check_failed(), Verdict::Retry(ms(200)));
        assert_eq!(restarts.check_failed(), Verdict::Retry(ms(400)));
        restarts.check_passed();
        assert_eq!(restarts.lost(), ms(800));
        assert_eq!(restarts.check_failed(), Verdict::Retry(ms(1000)));
    }

    #[test]
    fn gives_up_after_the_limit_of_failed_checks_in_a_row() {
        let mut restarts = checked(3);
        restarts.lost();
        assert!(matches!(restarts.check_failed(), Verdict::Retry(_)));
        assert!(matches!(restarts.check_failed(), Verdict::Retry(_)));
        // A passing check ends the row.
        restarts.check_passed();
        restarts.lost();
        assert!(matches!(restarts.check_failed(), Verdict::Retry(_)));
        assert!(matches!(restarts.check_failed(), Verdict::Retry(_)));
        assert_eq!(restarts.check_failed(), Verdict::GiveUp);
    }

    #[test]
    fn a_limit_of_zero_gives_up_at_the_first_failed_check() {
        let mut restarts = checked(0);
        assert_eq!(restarts.lost(), FIRST);
        assert_eq!(restarts.check_failed(), Verdict::GiveUp);
    }

    #[test]
    fn a_first_check_that_fails_is_final() {
        let mut restarts = Restarts::new(FIRST, CAP, 5);
        assert_eq!(restarts.check_failed(), Verdict::GiveUp);
        // A loss before the first check changes nothing to that.
        let mut restarts = Restarts::new(FIRST, CAP, 5);
        assert_eq!(restarts.lost(), FIRST);
        assert_eq!(restarts.check_failed(), Verdict::GiveUp);
    }

    #[test]
    fn a_first_delay_over_the_cap_is_used_once() {
        let mut restarts = Restarts::new(ms(500), ms(300), 5);
        assert_eq!(restarts.lost(), ms(500));
        assert_eq!(restarts.lost(), ms(300));
    }

    #[test]
    fn a_huge_delay_stops_at_the_cap_rather_than_overflowing() {
        let mut restarts = Restarts::new(Duration::MAX, Duration::MAX, 5);
        assert_eq!(restarts.lost(), Duration::MAX);
        assert_eq!(restarts.lost(), Duration::MAX);
    }

    #[derive(Clone, Copy, Debug)]
    enum Event {
        Lost,
        CheckFailed,
        CheckPassed,
        Healthy,
        /// A oneshot job starts: [`Restarts::downs`] is taken as its mark.
        Mark,
        /// The last marked job ends, its process having started.
        HealthySinceMark,
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            3 => Just(Event::Lost),
            3 => Just(Event::CheckFailed),
            2 => Just(Event::CheckPassed),
            1 => Just(Event::Healthy),
            1 => Just(Event::Mark),
            1 => Just(Event::HealthySinceMark),
        ]
    }

    proptest! {
        /// Whatever happens, in whatever order: every delay is between the first and the cap;
        /// each one is twice the one before it (up to the cap), where a passing
        /// check breaks no chain and only a sign of health starts one again (a late one only
        /// when no loss or failed check came after what it is about); the executor is
        /// given up on exactly at the failed check that makes the limit in a row, or at a
        /// failed check before any passed.
        #[test]
        fn follows_its_rules(
            first_ms in 1..1000u64,
            doublings in 0..8u32,
            extra_ms in 0..1000u64,
            max_failed_checks in 0..6u32,
            checked_first in any::<bool>(),
            events in proptest::collection::vec(event(), 1..200),
        ) {
            let first = ms(first_ms);
            let cap = ms(first_ms * (1 << doublings) + extra_ms);
            let mut restarts = Restarts::new(first, cap, max_failed_checks);
            if checked_first {
                restarts.check_passed();
            }
            let next = |previous: Option<Duration>| match previous {
                None => first,
                Some(previous) => (previous * 2).min(cap),
            };
            // The last delay of the chain of losses and failed checks; `None` when the next
            // one is the first delay.
            let mut last: Option<Duration> = None;
            let mut in_a_row = 0u32;
            let mut passed_once = checked_first;
            // The last mark, and whether the executor went down since.
            let mut mark: Option<(u64, bool)> = None;
            for event in events {
                match event {
                    Event::Lost => {
                        let delay = restarts.lost();
                        prop_assert!(first <= delay && delay <= cap, "{delay:?}");
                        prop_assert_eq!(delay, next(last));
                        last = Some(delay);
                        if let Some((_, down)) = &mut mark {
                            *down = true;
                        }
                    }
                    Event::CheckFailed => {
                        in_a_row += 1;
                        let verdict = restarts.check_failed();
                        if !passed_once || in_a_row >= max_failed_checks {
                            prop_assert_eq!(verdict, Verdict::GiveUp);
                            // Final: the runtimes never ask again.
                            break;
                        }
                        let Verdict::Retry(delay) = verdict else {
                            return Err(TestCaseError::fail(format!(
                                "gave up after {in_a_row} failed checks in a row, \
                                 under the limit of {max_failed_checks}"
                            )));
                        };
                        prop_assert!(first <= delay && delay <= cap, "{delay:?}");
                        prop_assert_eq!(delay, next(last));
                        last = Some(delay);
                        if let Some((_, down)) = &mut mark {
                            *down = true;
                        }
                    }
                    Event::CheckPassed => {
                        restarts.check_passed();
                        in_a_row = 0;
                        passed_once = true;
                    }
                    Event::Healthy => {
                        restarts.healthy();
                        last = None;
                    }
                    Event::Mark => mark = Some((restarts.downs(), false)),
                    Event::HealthySinceMark => {
                        if let Some((at, down)) = mark {
                            restarts.healthy_since(at);
                            if !down {
                                last = None;
                            }
                        }
                    }
                }
            }
        }
    }
}
