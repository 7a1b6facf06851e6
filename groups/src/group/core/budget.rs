//! How many messages a member may have relayed: a token bucket per member, in whole
//! thousandths of a message so the arithmetic is exact.
//!
//! A member starts with a full bucket of `burst` messages; it refills at `rate` messages per
//! second, never beyond `burst`. A message that finds less than one token is dropped, and the
//! drops are counted so the host can tell the member, at most once per [`TELL_INTERVAL_MS`].

/// The least time between two `rate_limited` errors to one member, in milliseconds.
pub(crate) const TELL_INTERVAL_MS: u64 = 1_000;

/// One message, in thousandths.
const ONE: u64 = 1_000;

/// The relay limit of a group host: `rate` messages per second, `burst` at once (0 rate: none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limit {
    pub(crate) rate: u32,
    pub(crate) burst: u32,
}

/// What a message from a member comes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Relay it.
    Relay,
    /// Drop it; nothing to say yet (the member was told less than a second ago).
    Drop,
    /// Drop it and tell the member that `dropped` messages were dropped since it was last told.
    DropAndTell { dropped: u64 },
}

/// One member's bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Budget {
    /// In thousandths of a message.
    tokens: u64,
    /// When the bucket was last refilled.
    at: u64,
    /// Messages dropped since the member was last told.
    dropped: u64,
    /// When the member was last told.
    told_at: Option<u64>,
}

impl Budget {
    /// A full bucket at `now`.
    pub(crate) fn new(now: u64, limit: Limit) -> Self {
        Self {
            tokens: u64::from(limit.burst) * ONE,
            at: now,
            dropped: 0,
            told_at: None,
        }
    }

    /// Takes one message's token at `now`, or says why not.
    pub(crate) fn take(&mut self, now: u64, limit: Limit) -> Verdict {
        if limit.rate == 0 {
            return Verdict::Relay;
        }
        let cap = u64::from(limit.burst.max(1)) * ONE;
        // A clock that went back refills nothing.
        let elapsed = now.saturating_sub(self.at);
        self.at = self.at.max(now);
        // `rate` messages per second is `rate` thousandths per millisecond.
        let refill = elapsed.saturating_mul(u64::from(limit.rate));
        self.tokens = self.tokens.saturating_add(refill).min(cap);
        if self.tokens >= ONE {
            self.tokens -= ONE;
            return Verdict::Relay;
        }
        self.dropped += 1;
        let due = self
            .told_at
            .is_none_or(|at| now.saturating_sub(at) >= TELL_INTERVAL_MS);
        if !due {
            return Verdict::Drop;
        }
        self.told_at = Some(now);
        Verdict::DropAndTell {
            dropped: std::mem::take(&mut self.dropped),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const LIMIT: Limit = Limit { rate: 10, burst: 3 };

    #[test]
    fn a_burst_passes_then_the_rate_holds_and_the_member_is_told_once_a_second() {
        let mut budget = Budget::new(0, LIMIT);
        for _ in 0..3 {
            assert_eq!(budget.take(0, LIMIT), Verdict::Relay);
        }
        assert_eq!(budget.take(0, LIMIT), Verdict::DropAndTell { dropped: 1 });
        assert_eq!(budget.take(50, LIMIT), Verdict::Drop);
        // 10 per second: one token every 100 ms.
        assert_eq!(budget.take(100, LIMIT), Verdict::Relay);
        assert_eq!(budget.take(150, LIMIT), Verdict::Drop);
        // 849 ms refill 8.49 tokens, capped at the burst of three.
        for _ in 0..3 {
            assert_eq!(budget.take(999, LIMIT), Verdict::Relay);
        }
        assert_eq!(budget.take(999, LIMIT), Verdict::Drop);
        // A second after the first word: the four drops since (this one included).
        assert_eq!(
            budget.take(1_000, LIMIT),
            Verdict::DropAndTell { dropped: 4 }
        );
        // A long quiet fills the bucket up to the burst, no further.
        for _ in 0..3 {
            assert_eq!(budget.take(60_000, LIMIT), Verdict::Relay);
        }
        assert_eq!(
            budget.take(60_000, LIMIT),
            Verdict::DropAndTell { dropped: 1 }
        );
    }

    #[test]
    fn a_zero_rate_is_no_limit() {
        let none = Limit { rate: 0, burst: 0 };
        let mut budget = Budget::new(0, none);
        for _ in 0..10_000 {
            assert_eq!(budget.take(0, none), Verdict::Relay);
        }
    }

    proptest! {
        /// In any stretch of time, no more messages are relayed than the burst plus what the
        /// rate refills over it; every message is relayed or counted as dropped, and each drop
        /// is told exactly once (those not told yet are still counted); tellings are at least
        /// a second apart.
        #[test]
        fn relayed_messages_never_exceed_burst_plus_rate_and_every_drop_is_told(
            rate in 1..50u32,
            burst in 1..20u32,
            gaps in prop::collection::vec(0..400u64, 1..300),
        ) {
            let limit = Limit { rate, burst };
            let mut budget = Budget::new(0, limit);
            let mut now = 0;
            let mut relayed_at = Vec::new();
            let (mut dropped, mut told, mut last_told) = (0u64, 0u64, None::<u64>);
            for gap in gaps {
                now += gap;
                match budget.take(now, limit) {
                    Verdict::Relay => relayed_at.push(now),
                    Verdict::Drop => dropped += 1,
                    Verdict::DropAndTell { dropped: n } => {
                        dropped += 1;
                        told += n;
                        if let Some(at) = last_told {
                            prop_assert!(now - at >= TELL_INTERVAL_MS);
                        }
                        last_told = Some(now);
                    }
                }
            }
            prop_assert_eq!(told + budget.dropped, dropped);
            for (i, start) in relayed_at.iter().enumerate() {
                for (j, end) in relayed_at.iter().enumerate().skip(i) {
                    let count = (j - i + 1) as u64;
                    let allowed = u64::from(burst) + (end - start) * u64::from(rate) / 1_000;
                    prop_assert!(count <= allowed, "{count} relayed in [{start}, {end}]");
                }
            }
        }
    }
}
