//! Newtype ids. Each one validates on parse, so a value of the type is always well formed.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A job id must be exactly 16 lowercase hexadecimal characters.
    #[error("invalid job id {0:?}: expected 16 lowercase hex characters")]
    JobId(String),
    /// A group id must be non-empty, at most 128 bytes, and free of `:` and control characters.
    #[error(
        "invalid group id {0:?}: expected 1 to 128 characters without ':' or control characters"
    )]
    GroupId(String),
    /// A peer id must be non-empty, at most 128 bytes, and free of `:`, whitespace and controls.
    #[error("invalid peer id {0:?}: expected 1 to 128 characters without ':' or whitespace")]
    PeerId(String),
}

/// A job id: 64 bits, written as 16 lowercase hexadecimal characters.
///
/// Kept as a `u64` so the dispatcher's indexes stay small and hash fast.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(u64);

impl JobId {
    /// The id whose hex form is `value` written as 16 digits.
    pub const fn from_u64(value: u64) -> Self {
        Self(value)
    }

    /// The id as a number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({self})")
    }
}

impl FromStr for JobId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let well_formed = s.len() == 16
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !well_formed {
            return Err(IdError::JobId(s.to_owned()));
        }
        u64::from_str_radix(s, 16)
            .map(Self)
            .map_err(|_| IdError::JobId(s.to_owned()))
    }
}

impl Serialize for JobId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Defines a validated string id with `Display`, `FromStr` and serde as a plain string. The text
/// is shared: a clone (one per report a host takes, per event, per stored change) only counts a
/// reference instead of copying the string.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $err:ident, $valid:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(std::sync::Arc<str>);

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let valid: fn(&str) -> bool = $valid;
                if valid(s) { Ok(Self(s.into())) } else { Err(IdError::$err(s.to_owned())) }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A group id: chosen by the group's creator; it never contains `:` because topics are
    /// split on it (`group:<id>:<type>`).
    GroupId,
    GroupId,
    |s| !s.is_empty() && s.len() <= 128 && !s.chars().any(|c| c == ':' || c.is_control())
);

string_id!(
    /// A peer id in its text form (a libp2p peer id, base58). `proto` does not depend on libp2p,
    /// so only the shape is checked here; the network layer checks the rest.
    PeerId,
    PeerId,
    |s| {
        !s.is_empty()
            && s.len() <= 128
            && !s.chars().any(|c| c == ':' || c.is_whitespace() || c.is_control())
    }
);

/// The number of an attempt at a job: 1 for the first assignment, +1 for every reassignment.
///
/// Progress, output and results carry it so the host can ignore reports about attempts that
/// are no longer current. `Attempt(0)` is what a Goop² peer sends (it has no attempts).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Attempt(pub u32);

impl Attempt {
    /// The attempt after this one.
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A cheap hasher for keys made of job ids (and small integers beside them): one multiplication
/// per word and a rotation at the end, as rustc's own hasher does. Job ids are made by the
/// cluster's host, not chosen by a client, so the flooding resistance of the default hasher buys
/// nothing where they are the key, and costs a few percent of the maps on a job's hot path.
///
/// The rotation matters: a map picks the bucket from the hash's low bits, and the low bits of a
/// product depend only on the low bits of the id, which for the host's ids are a counter that
/// starts again every millisecond. Without it, ids of different milliseconds with the same
/// counter fell into the same bucket.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // The product's high bits, which depend on every bit of the id, become the low bits.
        self.0.rotate_left(26)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// A hash map keyed by job ids (or keys made of them), hashed with [`IdHasher`].
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// A hash set of job ids (or keys made of them), hashed with [`IdHasher`].
pub type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_hashes_of_growing_ids_spread_over_buckets_and_tags() {
        use std::hash::BuildHasher;
        let hasher = BuildHasherDefault::<IdHasher>::default();
        // Ids as the host makes them: a millisecond clock shifted left, plus a counter.
        let ids = (0..16_384u64)
            .map(|n| JobId::from_u64(((1_763_700_000_000 + n / 100) << 20) + n % 100));
        let hashes: Vec<u64> = ids.map(|id| hasher.hash_one(id)).collect();
        let distinct =
            |f: &dyn Fn(u64) -> u64| hashes.iter().map(|&h| f(h)).collect::<HashSet<_>>().len();
        assert_eq!(distinct(&|h| h), hashes.len());
        // A table of 32 k buckets indexes by the low bits; its probe tags are the top 7 bits.
        assert!(
            distinct(&|h| h & 0x7fff) > 12_000,
            "{}",
            distinct(&|h| h & 0x7fff)
        );
        assert_eq!(distinct(&|h| h >> 57), 128);
        let mut map: IdMap<(JobId, u32), u32> = IdMap::default();
        map.insert((JobId::from_u64(7), 1), 1);
        assert_eq!(map.get(&(JobId::from_u64(7), 1)), Some(&1));
        assert_eq!(map.get(&(JobId::from_u64(7), 2)), None);
    }

    #[test]
    fn job_id_round_trips_through_hex_and_json() {
        let id: JobId = "00ff00ff00ff00ff".parse().unwrap();
        assert_eq!(id.as_u64(), 0x00ff_00ff_00ff_00ff);
        assert_eq!(id.to_string(), "00ff00ff00ff00ff");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"00ff00ff00ff00ff\"");
        assert_eq!(serde_json::from_str::<JobId>(&json).unwrap(), id);
    }

    #[test]
    fn job_id_rejects_wrong_shapes() {
        for bad in [
            "",
            "abc",
            "00FF00FF00FF00FF",
            "00ff00ff00ff00ff0",
            "00ff00ff00ff00fg",
            "+0ff00ff00ff00ff",
        ] {
            assert_eq!(
                bad.parse::<JobId>(),
                Err(IdError::JobId(bad.to_owned())),
                "{bad}"
            );
        }
        assert!(serde_json::from_str::<JobId>("\"xyz\"").is_err());
        assert!(serde_json::from_str::<JobId>("12").is_err());
    }

    #[test]
    fn group_and_peer_ids_refuse_colons() {
        assert!("a:b".parse::<GroupId>().is_err());
        assert!("".parse::<GroupId>().is_err());
        assert_eq!("9f3a".parse::<GroupId>().unwrap().as_str(), "9f3a");
        assert!("12D3KooW:x".parse::<PeerId>().is_err());
        assert!("12D3 KooW".parse::<PeerId>().is_err());
        let peer: PeerId = serde_json::from_str("\"12D3KooWabc\"").unwrap();
        assert_eq!(peer.to_string(), "12D3KooWabc");
    }
}
