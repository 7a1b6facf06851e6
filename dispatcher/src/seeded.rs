//! Deterministic randomness and hashing, both derived from the seed the shell gives.
//!
//! The standard `RandomState` draws its keys from the operating system, which would make map
//! iteration order (and so the order of some outputs) differ between runs; a seeded hasher keeps
//! two dispatchers fed the same inputs bit-for-bit identical. The hash is a folded multiply, fast
//! on the `u64` job ids that dominate the lookups.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use proto::JobId;

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
const MIX: u64 = 0xa076_1d64_78bd_642f;

/// A hash map keyed through [`SeededState`].
pub(crate) type SeededMap<K, V> = HashMap<K, V, SeededState>;

/// A hash map keyed by job id through [`IdState`].
pub(crate) type IdMap<V> = HashMap<JobId, V, IdState>;

/// SplitMix64: small, fast, and good enough for retry jitter.
#[derive(Clone)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..=max`.
    pub(crate) fn up_to(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(bound) => self.next_u64() % bound,
            None => self.next_u64(),
        }
    }
}

/// Builds [`SeededHasher`]s that all start from the same key.
#[derive(Clone, Copy)]
pub(crate) struct SeededState(u64);

impl SeededState {
    pub(crate) fn new(seed: u64) -> Self {
        Self(SplitMix::new(seed ^ MIX).next_u64())
    }

    /// An empty map keyed by this state.
    pub(crate) fn map<K, V>(self) -> SeededMap<K, V> {
        HashMap::with_hasher(self)
    }

    /// An empty map keyed by job id, through [`IdState`].
    pub(crate) fn id_map<V>(self) -> IdMap<V> {
        HashMap::with_hasher(IdState(self.0))
    }
}

/// Hashes job ids so that ids close together land in buckets close together.
///
/// Ids are handed out in order (a counter, or time then a counter), and a host touches the
/// ids of one batch together. The table places a key by the low bits of its hash and tags it
/// with the top seven, so the hash keeps the id's low four bits as its lowest, puts a seeded
/// mix of the rest above them, and takes the tag from a mix of the whole id: sixteen
/// consecutive ids fill sixteen neighbouring buckets (a few cache lines, one probe group)
/// instead of sixteen random ones, while their tags still tell them apart. Random ids hash as
/// well as before.
#[derive(Clone, Copy)]
pub(crate) struct IdState(u64);

impl BuildHasher for IdState {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher(SeededHasher(self.0))
    }
}

/// See [`IdState`]. Keys other than a single `u64` fall back to the plain seeded mix.
pub(crate) struct IdHasher(SeededHasher);

impl IdHasher {
    const TAG: u64 = 0x7f << 57;
    const RUN: u32 = 4;
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }

    fn write_u64(&mut self, id: u64) {
        let seed = self.0.0;
        let mut run = SeededHasher(seed);
        run.mix(id >> Self::RUN);
        let mut tag = SeededHasher(seed);
        tag.mix(id);
        let place = (run.0 << Self::RUN) | (id & ((1 << Self::RUN) - 1));
        self.0.0 = (tag.0 & Self::TAG) | (place & !Self::TAG);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

impl BuildHasher for SeededState {
    type Hasher = SeededHasher;

    fn build_hasher(&self) -> SeededHasher {
        SeededHasher(self.0)
    }
}

/// Folded-multiply hasher: each word is mixed in with a 64×64→128 bit multiply.
pub(crate) struct SeededHasher(u64);

impl SeededHasher {
    fn mix(&mut self, word: u64) {
        let product = u128::from(self.0 ^ word) * u128::from(MIX);
        #[expect(
            clippy::cast_possible_truncation,
            reason = "folding the halves is the point"
        )]
        let folded = (product as u64) ^ ((product >> 64) as u64);
        self.0 = folded;
    }
}

impl Hasher for SeededHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // The same little-endian word a zero-padded copy would give, assembled in a
            // register: short strings (type names) are hashed on every submit.
            let word = rest
                .iter()
                .rev()
                .fold(0u64, |word, &byte| (word << 8) | u64::from(byte));
            // The length keeps "ab" and "ab\0" apart.
            self.mix(word ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.mix(value);
    }

    fn write_u32(&mut self, value: u32) {
        self.mix(u64::from(value));
    }

    fn write_usize(&mut self, value: usize) {
        self.mix(value as u64);
    }

    fn write_u8(&mut self, value: u8) {
        self.mix(u64::from(value));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range_and_is_reproducible() {
        let mut a = SplitMix::new(7);
        let mut b = SplitMix::new(7);
        for _ in 0..1000 {
            let x = a.up_to(10);
            assert!(x <= 10);
            assert_eq!(x, b.up_to(10));
        }
        assert_eq!(a.up_to(0), 0);
        let _ = a.up_to(u64::MAX);
    }

    #[test]
    fn neighbouring_ids_hash_to_neighbouring_places_with_their_own_tags() {
        let s = IdState(SeededState::new(9).0);
        let h = |id: u64| s.hash_one(JobId::from_u64(id));
        let base = 0x1234_5670;
        let place = |hash: u64| hash & !IdHasher::TAG;
        let tags: std::collections::HashSet<u64> =
            (0..16).map(|n| h(base + n) & IdHasher::TAG).collect();
        for n in 0..16 {
            assert_eq!(place(h(base + n)), place(h(base)) + n);
        }
        assert!(
            tags.len() > 8,
            "tags of one run mostly differ: {}",
            tags.len()
        );
        // The next run starts somewhere else.
        assert_ne!(place(h(base + 16)), place(h(base)) + 16);
        assert_ne!(
            IdState(1).hash_one(JobId::from_u64(5)),
            IdState(2).hash_one(JobId::from_u64(5))
        );
    }

    #[test]
    fn hashes_differ_by_seed_and_by_value() {
        let h = |seed: u64, v: u64| SeededState::new(seed).hash_one(v);
        assert_ne!(h(1, 5), h(2, 5));
        assert_ne!(h(1, 5), h(1, 6));
        assert_eq!(h(1, 5), h(1, 5));
        let s = SeededState::new(3);
        assert_ne!(s.hash_one("ab"), s.hash_one("ab\0"));
        // The tail of a string is read as a little-endian word.
        let mut hasher = s.build_hasher();
        hasher.write(b"abc");
        let mut expected = s.build_hasher();
        expected.mix(u64::from_le_bytes(*b"abc\0\0\0\0\0") ^ (3 << 56));
        assert_eq!(hasher.finish(), expected.finish());
    }
}
