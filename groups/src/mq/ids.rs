//! Message ids: 128 bits in UUID form, a per-process random half and a counter.
//!
//! Unique without coordination: the random half tells processes apart, the counter tells this
//! process's messages apart. The ids only need to be unique, not unguessable: the sender's
//! identity comes from the connection, and de-duplication is per sender.

use std::hash::{BuildHasher as _, Hasher as _, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use proto::MsgId;

pub(crate) struct IdGen {
    random: u64,
    counter: AtomicU64,
}

impl IdGen {
    pub(crate) fn new() -> Self {
        // `RandomState` is seeded from the operating system's random source.
        let mut hasher = RandomState::new().build_hasher();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        hasher.write_u128(nanos);
        hasher.write_u32(std::process::id());
        let random = hasher.finish();
        Self {
            random,
            counter: AtomicU64::new(RandomState::new().build_hasher().finish() >> 16),
        }
    }

    pub(crate) fn next(&self) -> MsgId {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let r = self.random;
        let text = format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            r >> 32,
            (r >> 16) & 0xffff,
            r & 0xffff,
            (n >> 48) & 0xffff,
            n & 0xffff_ffff_ffff
        );
        MsgId::new(&text).expect("36 hex digits and dashes make a valid message id")
    }
}
