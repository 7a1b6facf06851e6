//! Job ids: they grow with submission order.
//!
//! An id is the submit time in milliseconds shifted left by [`COUNTER_BITS`], plus a counter
//! for the jobs of the same millisecond. Growing ids keep the store's job table (keyed by id)
//! and attempt table appending at their right edge, where a random id would dirty a random page
//! of each per job (and the store would slow down as it grows). An idempotent submit gets a
//! fresh id too: the store finds a repeated key by its own index and answers with the first
//! job's id.

use dispatcher::Millis;
use proto::JobId;

/// Jobs per millisecond before ids run ahead of the clock (they stay unique either way).
const COUNTER_BITS: u32 = 20;

/// Makes job ids, never the same one twice, even when the clock steps back or a restarted host
/// finds ids from a faster clock in its store.
pub(crate) struct IdMaker {
    last: u64,
}

impl IdMaker {
    /// Ids above `floor`, the greatest id already stored.
    pub(crate) fn new(floor: Option<JobId>) -> Self {
        Self {
            last: floor.map_or(0, JobId::as_u64),
        }
    }

    /// The id of a job submitted at `now`.
    pub(crate) fn next(&mut self, now: Millis) -> JobId {
        let from_clock = now.0.saturating_mul(1 << COUNTER_BITS);
        self.last = from_clock.max(self.last.wrapping_add(1));
        JobId::from_u64(self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_grow_within_a_millisecond_across_milliseconds_and_when_the_clock_steps_back() {
        let mut maker = IdMaker::new(None);
        let a = maker.next(Millis(1_000));
        let b = maker.next(Millis(1_000));
        let c = maker.next(Millis(1_001));
        let d = maker.next(Millis(999));
        assert!(a < b && b < c && c < d, "{a} {b} {c} {d}");
        assert_eq!(c.as_u64(), 1_001 << COUNTER_BITS);
    }

    #[test]
    fn ids_start_above_the_stored_floor() {
        let floor = JobId::from_u64(u64::MAX - 5);
        let mut maker = IdMaker::new(Some(floor));
        assert!(maker.next(Millis(1_000)) > floor);
        let mut maker = IdMaker::new(Some(JobId::from_u64(7)));
        assert_eq!(maker.next(Millis(1)).as_u64(), 1 << COUNTER_BITS);
    }
}
