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
        let value = (u128::from(self.random) << 64) | u128::from(n);
        // Written by hand: this runs once per message sent, and `format!` showed in profiles.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 36];
        let mut digit = 0;
        for (i, byte) in text.iter_mut().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                *byte = b'-';
            } else {
                *byte = HEX[((value >> (124 - 4 * digit)) & 0xf) as usize];
                digit += 1;
            }
        }
        let text = std::str::from_utf8(&text).expect("hex digits and dashes are ascii");
        MsgId::new(text).expect("36 hex digits and dashes make a valid message id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuid_shaped_and_distinct() {
        let ids = IdGen::new();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 36);
        let dashes: Vec<usize> = a.as_str().match_indices('-').map(|(i, _)| i).collect();
        assert_eq!(dashes, [8, 13, 18, 23]);
        assert!(
            a.as_str()
                .bytes()
                .all(|c| c == b'-' || c.is_ascii_hexdigit())
        );
    }
}
