//! The wall clock, read in one place and converted for the dispatcher and the wire.

use std::time::{SystemTime, UNIX_EPOCH};

use dispatcher::Millis;
use proto::Timestamp;

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now() -> Millis {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    Millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// A dispatcher time as a wire timestamp.
pub(crate) fn stamp(at: Millis) -> Timestamp {
    Timestamp::from_unix_ms(i64::try_from(at.0).unwrap_or(i64::MAX))
}

/// A wire timestamp as a dispatcher time (times before the epoch become the epoch).
pub(crate) fn millis(at: Timestamp) -> Millis {
    Millis(u64::try_from(at.as_unix_ms()).unwrap_or(0))
}
