//! Hash maps keyed by job id with a cheap hash: the daemon looks a job up for every line.
//!
//! Job ids are chosen by the cluster's host (random 64-bit values), not by executors, so the
//! flooding resistance of the default hasher buys nothing here.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use proto::JobId;

/// A multiplicative hash (the one rustc uses), enough for well-spread 64-bit ids.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(K);
    }
}

pub(crate) type IdMap<V> = HashMap<JobId, V, BuildHasherDefault<IdHasher>>;
pub(crate) type IdSet = HashSet<JobId, BuildHasherDefault<IdHasher>>;
