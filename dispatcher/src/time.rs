//! Time as the dispatcher sees it: a count of milliseconds the shell passes in.
//!
//! The dispatcher never reads a clock. The shell chooses the epoch (Unix time in practice) and
//! gives the current value with every input, which is what makes the state machine replayable.

use std::fmt;

/// A point in time or a duration, in milliseconds.
///
/// One type serves both because every computation here is "an instant plus a duration"; the
/// arithmetic saturates so that no input can make it overflow.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// Zero: the epoch, or no time at all.
    pub const ZERO: Self = Self(0);

    /// A duration of whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// The value in milliseconds.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// `self + other`, stopping at the largest value instead of overflowing.
    #[must_use]
    pub const fn saturating_add(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }

    /// `self - other`, stopping at zero.
    #[must_use]
    pub const fn saturating_sub(self, other: Self) -> Self {
        Self(self.0.saturating_sub(other.0))
    }
}

impl fmt::Debug for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}
