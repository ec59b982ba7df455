//! Civil dates (proleptic Gregorian, no time zone): enough for option expiries.
//!
//! Written as `YYYY-MM-DD` in JSON, on the wire and in reference data. Conversions to and
//! from a day count since 1970-01-01 follow H. Hinnant's `days_from_civil` /
//! `civil_from_days`, which are exact over the whole range used here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A calendar date. Ordered by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    year: i32,
    month: u8,
    day: u8,
}

/// Day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// Why a string or triple is not a date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    #[error("date must be YYYY-MM-DD, got {0:?}")]
    Format(String),
    #[error("{year:04}-{month:02}-{day:02} is not a calendar date")]
    Invalid { year: i32, month: u32, day: u32 },
}

fn is_leap(year: i32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

impl Date {
    /// A date from year (1..=9999), month (1..=12) and day.
    pub fn new(year: i32, month: u32, day: u32) -> Result<Date, DateError> {
        if !(1..=9999).contains(&year) || day == 0 || day > days_in_month(year, month) {
            return Err(DateError::Invalid { year, month, day });
        }
        Ok(Date {
            year,
            month: month as u8,
            day: day as u8,
        })
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn month(self) -> u32 {
        u32::from(self.month)
    }

    pub fn day(self) -> u32 {
        u32::from(self.day)
    }

    /// Days since 1970-01-01 (negative before it).
    pub fn days(self) -> i64 {
        let (m, d) = (i64::from(self.month), i64::from(self.day));
        let y = i64::from(self.year) - i64::from(m <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date `days` days after 1970-01-01. Clamped to years 1..=9999.
    pub fn from_days(days: i64) -> Date {
        let z = days.clamp(-719_162, 2_932_896) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }

    /// The UTC date of a time in microseconds since the Unix epoch.
    pub fn from_unix_us(us: u64) -> Date {
        Date::from_days((us / 86_400_000_000) as i64)
    }

    pub fn add_days(self, n: i64) -> Date {
        Date::from_days(self.days() + n)
    }

    pub fn weekday(self) -> Weekday {
        // 1970-01-01 was a Thursday.
        const DAYS: [Weekday; 7] = [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
        ];
        DAYS[(self.days() + 3).rem_euclid(7) as usize]
    }

    pub fn is_weekend(self) -> bool {
        matches!(self.weekday(), Weekday::Sat | Weekday::Sun)
    }

    /// The first day of the same month.
    pub fn first_of_month(self) -> Date {
        Date { day: 1, ..self }
    }

    /// The first day of the next month.
    pub fn next_month(self) -> Date {
        if self.month == 12 {
            Date {
                year: self.year + 1,
                month: 1,
                day: 1,
            }
        } else {
            Date {
                month: self.month + 1,
                day: 1,
                ..self
            }
        }
    }

    /// The third Friday of this date's month (the standard monthly option expiry).
    pub fn third_friday(self) -> Date {
        let first = self.first_of_month();
        let to_friday = (Weekday::Fri as i64 - first.weekday() as i64).rem_euclid(7);
        first.add_days(to_friday + 14)
    }

    /// Parses `YYYY-MM-DD` exactly (four-digit year, two-digit month and day).
    pub fn parse(s: &str) -> Result<Date, DateError> {
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| -> Option<u32> {
            let part = b.get(r)?;
            if !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            part.iter()
                .try_fold(0u32, |acc, d| Some(acc * 10 + u32::from(d - b'0')))
        };
        let bad = || DateError::Format(s.chars().take(40).collect());
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(bad());
        }
        let (Some(y), Some(m), Some(d)) = (digits(0..4), digits(5..7), digits(8..10)) else {
            return Err(bad());
        };
        Date::new(y as i32, m, d)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl FromStr for Date {
    type Err = DateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Date::parse(s)
    }
}

impl Serialize for Date {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Date::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `us` (µs since the Unix epoch) in RFC 3339, UTC, to the microsecond:
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (JetStream's `up_to_time`).
pub fn rfc3339_micros(us: u64) -> String {
    format!("{}.{:06}Z", rfc3339_prefix(us), us % 1_000_000)
}

/// `us` (µs since the Unix epoch) in RFC 3339, UTC, to the second: `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339_seconds(us: u64) -> String {
    format!("{}Z", rfc3339_prefix(us))
}

/// An RFC 3339 UTC instant as JetStream writes it (`YYYY-MM-DDTHH:MM:SS[.f…]Z`, up to
/// nanoseconds) in µs since the Unix epoch; `None` for anything else.
pub fn parse_rfc3339_utc(s: &str) -> Option<u64> {
    let (date, time) = s.split_once('T')?;
    let days = u64::try_from(Date::parse(date).ok()?.days()).ok()?;
    let time = time.strip_suffix('Z')?;
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut parts = hms.split(':');
    let mut field = |max: u64| -> Option<u64> {
        let p = parts.next()?;
        let v: u64 =
            (p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit())).then(|| p.parse().ok())??;
        (v <= max).then_some(v)
    };
    let (h, m, sec) = (field(23)?, field(59)?, field(60)?);
    if parts.next().is_some() || fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let micros = format!("{fraction:0<6}")[..6].parse::<u64>().ok()?;
    Some(((days * 86_400 + h * 3600 + m * 60 + sec) * 1_000_000) + micros)
}

fn rfc3339_prefix(us: u64) -> String {
    let secs = us / 1_000_000 % 86_400;
    format!(
        "{}T{:02}:{:02}:{:02}",
        Date::from_unix_us(us),
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn jetstream_time_stamps_parse_to_the_microsecond() {
        use super::{parse_rfc3339_utc, rfc3339_micros};
        let us = 1_796_666_625_123_456;
        assert_eq!(
            parse_rfc3339_utc("2026-12-07T18:03:45.123456789Z"),
            Some(us)
        );
        assert_eq!(parse_rfc3339_utc(&rfc3339_micros(us)), Some(us));
        assert_eq!(
            parse_rfc3339_utc("2026-12-07T18:03:45Z"),
            Some(us - 123_456)
        );
        for bad in [
            "2026-12-07 18:03:45Z",
            "2026-12-07T18:03:45+01:00",
            "2026-12-07T24:00:00Z",
            "2026-12-07T18:03Z",
            "2026-12-07T18:03:45.1234567890Z",
            "2026-12-07T18:03:45.x1Z",
        ] {
            assert_eq!(parse_rfc3339_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_is_utc_to_the_second_or_the_microsecond() {
        use super::{rfc3339_micros, rfc3339_seconds};
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        // 2026-12-07T18:03:45.123456Z
        assert_eq!(
            rfc3339_micros(1_796_666_625_123_456),
            "2026-12-07T18:03:45.123456Z"
        );
        assert_eq!(
            rfc3339_seconds(1_796_677_200_999_999),
            "2026-12-07T21:00:00Z"
        );
    }

    use super::*;

    #[test]
    fn day_counts_match_known_dates() {
        assert_eq!(Date::new(1970, 1, 1).unwrap().days(), 0);
        assert_eq!(Date::new(2000, 3, 1).unwrap().days(), 11_017);
        assert_eq!(Date::new(2026, 12, 18).unwrap().days(), 20_805);
        for days in (-719_162..2_932_897).step_by(997) {
            assert_eq!(Date::from_days(days).days(), days);
        }
    }

    #[test]
    fn weekdays_and_third_fridays() {
        assert_eq!(Date::new(1970, 1, 1).unwrap().weekday(), Weekday::Thu);
        assert_eq!(Date::new(2026, 12, 18).unwrap().weekday(), Weekday::Fri);
        assert_eq!(Date::new(2024, 2, 29).unwrap().weekday(), Weekday::Thu);
        let third = |y, m| Date::new(y, m, 9).unwrap().third_friday().to_string();
        assert_eq!(third(2026, 12), "2026-12-18");
        assert_eq!(third(2025, 1), "2025-01-17");
        assert_eq!(third(2025, 8), "2025-08-15");
        assert_eq!(third(2026, 5), "2026-05-15");
    }

    #[test]
    fn parse_is_strict() {
        assert_eq!(
            Date::parse("2026-12-18").unwrap(),
            Date::new(2026, 12, 18).unwrap()
        );
        for bad in [
            "2026-12-32",
            "2026-02-29",
            "2026-13-01",
            "26-12-18",
            "2026/12/18",
            "2026-1-18",
            "2026-12-18 ",
            "+026-12-18",
            "",
        ] {
            assert!(Date::parse(bad).is_err(), "{bad}");
        }
        assert!(Date::parse("2024-02-29").is_ok());
        assert_eq!(
            Date::new(2026, 1, 31).unwrap().next_month().to_string(),
            "2026-02-01"
        );
        assert_eq!(
            Date::new(2026, 12, 5).unwrap().next_month().to_string(),
            "2027-01-01"
        );
    }

    #[test]
    fn serde_as_a_string() {
        let d = Date::new(2026, 12, 18).unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"2026-12-18\"");
        assert_eq!(serde_json::from_str::<Date>("\"2026-12-18\"").unwrap(), d);
        assert!(serde_json::from_str::<Date>("\"2026-12-99\"").is_err());
    }
}
