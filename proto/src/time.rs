//! Wall-clock timestamps on the wire: milliseconds since the Unix epoch in memory, RFC 3339 in
//! JSON (as Goop² writes `created_at`, `started_at`, `done_at`).
//!
//! `proto` does no I/O and reads no clock: callers make a `Timestamp` from a time they read.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, in whole milliseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Timestamp(i64);

/// Why a string is not an RFC 3339 timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {0:?}: expected RFC 3339, like 2026-11-21T11:33:40.123Z")]
pub struct TimestampError(String);

impl Timestamp {
    /// The timestamp `ms` milliseconds after the Unix epoch.
    pub const fn from_unix_ms(ms: i64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_unix_ms(self) -> i64 {
        self.0
    }

    /// Whether this is the epoch itself, which Goop² uses for "not set".
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01, as (year, month, day).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(1000);
        let ms = self.0.rem_euclid(1000);
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            sod / 3600,
            sod % 3600 / 60,
            sod % 60
        )
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_rfc3339(s).ok_or_else(|| TimestampError(s.to_owned()))
    }
}

/// The days of `month` (1 to 12) in `year` of the proleptic Gregorian calendar.
fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`; the fraction is cut to milliseconds. A
/// date that does not exist (`02-30`) or an offset beyond `±23:59` is refused, not moved.
fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
    {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &s[start..i.min(start + 3)];
        ms = digits.parse::<i64>().ok()? * 10_i64.pow(3 - digits.len() as u32);
    }
    let offset_minutes = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let hours = i64::from(h1 - b'0') * 10 + i64::from(h2 - b'0');
            let minutes = i64::from(m1 - b'0') * 10 + i64::from(m2 - b'0');
            if hours > 23 || minutes > 59 {
                return None;
            }
            let value = hours * 60 + minutes;
            if *sign == b'-' { -value } else { value }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(Timestamp(secs * 1000 + ms))
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        // Goop² writes "" for a time that is not set.
        if s.is_empty() {
            return Ok(Self(0));
        }
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_utc() {
        let t = Timestamp::from_unix_ms(1_795_260_820_123);
        assert_eq!(t.to_string(), "2026-11-21T11:33:40.123Z");
        assert_eq!("2026-11-21T11:33:40.123Z".parse::<Timestamp>().unwrap(), t);
        assert_eq!(Timestamp::default().to_string(), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn parses_goop2_offsets_and_fractions() {
        let utc: Timestamp = "2026-04-06T10:00:00Z".parse().unwrap();
        let local: Timestamp = "2026-04-06T12:00:00+02:00".parse().unwrap();
        assert_eq!(utc, local);
        let nanos: Timestamp = "2026-04-06T10:00:00.123456789Z".parse().unwrap();
        assert_eq!(nanos.as_unix_ms() - utc.as_unix_ms(), 123);
        let tenths: Timestamp = "2026-04-06T10:00:00.5Z".parse().unwrap();
        assert_eq!(tenths.as_unix_ms() - utc.as_unix_ms(), 500);
    }

    #[test]
    fn takes_every_real_day_and_the_widest_offsets() {
        for good in [
            "2024-02-29T00:00:00Z",
            "2000-02-29T00:00:00Z",
            "2026-12-31T23:59:59Z",
            "2026-04-30T00:00:00Z",
            "2026-04-06T10:00:00+23:59",
            "2026-04-06T10:00:00-23:59",
        ] {
            assert!(good.parse::<Timestamp>().is_ok(), "{good}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "2026-04-06",
            "2026-13-01T00:00:00Z",
            "2026-04-06T10:00:00",
            "x026-04-06T10:00:00Z",
            "2026-04-06T10:00:00.Z",
            "2026-02-30T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-04-06T10:00:00+99:99",
            "2026-04-06T10:00:00+24:00",
            "2026-04-06T10:00:00-23:60",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad}");
        }
    }

    #[test]
    fn round_trips_across_eras() {
        for ms in [
            -62_135_596_800_000,
            -1,
            0,
            951_782_400_000,
            4_102_444_800_999,
        ] {
            let t = Timestamp::from_unix_ms(ms);
            assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t, "{t}");
        }
    }
}
