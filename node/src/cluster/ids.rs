//! Job ids: random for plain submits, derived from the key for idempotent ones.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use proto::{GroupId, JobId};

/// Makes job ids. Random ids come from the process's random hash keys, so no extra source of
/// randomness is needed; ids made from an idempotency key are stable across restarts.
pub(crate) struct IdMaker {
    random: RandomState,
    counter: u64,
}

impl IdMaker {
    pub(crate) fn new() -> Self {
        Self {
            random: RandomState::new(),
            counter: 0,
        }
    }

    /// A fresh random id.
    pub(crate) fn random(&mut self) -> JobId {
        self.counter = self.counter.wrapping_add(1);
        let mut hasher = self.random.build_hasher();
        hasher.write_u64(self.counter);
        JobId::from_u64(hasher.finish())
    }

    /// The id of an idempotent submit: the same group and key always give the same id
    /// (FNV-1a, 64 bits), so a retry after a lost answer finds the first job.
    pub(crate) fn for_key(group: &GroupId, key: &str) -> JobId {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in group.as_str().bytes().chain([0xff]).chain(key.bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        JobId::from_u64(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_differ_and_keyed_ids_are_stable() {
        let mut maker = IdMaker::new();
        let (a, b) = (maker.random(), maker.random());
        assert_ne!(a, b);
        let group: GroupId = "g".parse().unwrap();
        assert_eq!(IdMaker::for_key(&group, "k"), IdMaker::for_key(&group, "k"));
        assert_ne!(
            IdMaker::for_key(&group, "k"),
            IdMaker::for_key(&group, "k2")
        );
        let other: GroupId = "h".parse().unwrap();
        assert_ne!(IdMaker::for_key(&group, "k"), IdMaker::for_key(&other, "k"));
    }
}
