//! Domain values that arrive from clients: each constructor is the only way in,
//! so a value of these types has already passed the record-attempt contract's
//! rules (`docs/DESIGN.md` §1).
//!
//! Nothing here reads a clock or the environment; parsing is total and never panics.

use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC instant with microsecond precision, stored as microseconds since the Unix epoch.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    pub fn from_datetime(at: DateTime<Utc>) -> Self {
        Timestamp(at.timestamp_micros())
    }

    pub fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.0).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// RFC 3339 in UTC with a literal `Z` and six fraction digits, e.g.
    /// `2026-11-27T04:00:00.123456Z`. One fixed width keeps the form canonical.
    pub fn to_rfc3339(self) -> String {
        let mut buf = [0u8; RFC3339_LEN];
        match self.write_rfc3339(&mut buf) {
            Some(text) => text.to_owned(),
            None => self.to_chrono_rfc3339(),
        }
    }

    pub(crate) fn to_chrono_rfc3339(self) -> String {
        self.to_datetime()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string()
    }

    /// The RFC 3339 form written into `buf` without allocating, for years 0000
    /// to 9999 (`None` outside them). Every response carries a score of
    /// timestamps and every hash one, so this skips chrono's format parser.
    pub fn write_rfc3339(self, buf: &mut [u8; RFC3339_LEN]) -> Option<&str> {
        let secs = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000);
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        if !(0..=9999).contains(&year) {
            return None;
        }
        let second_of_day = secs.rem_euclid(86_400);
        let mut put = |at: usize, width: u32, mut value: i64| {
            for i in (0..width as usize).rev() {
                buf[at + i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, second_of_day / 3600);
        put(14, 2, second_of_day / 60 % 60);
        put(17, 2, second_of_day % 60);
        put(20, 6, micros);
        for (at, c) in [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
            (26, b'Z'),
        ] {
            buf[at] = c;
        }
        std::str::from_utf8(buf).ok()
    }

    /// Parses any RFC 3339 date-time (offsets allowed), for query filters.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|at| Timestamp::from_datetime(at.with_timezone(&Utc)))
    }
}

/// The length of [`Timestamp::to_rfc3339`] for years 0000 to 9999.
pub const RFC3339_LEN: usize = 27;

/// Year, month and day of a day count from 1970-01-01 in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
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
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; RFC3339_LEN];
        match self.write_rfc3339(&mut buf) {
            Some(text) => s.serialize_str(text),
            None => s.serialize_str(&self.to_chrono_rfc3339()),
        }
    }
}

/// Exactly the form [`Timestamp`] serialises to, for event data the ledger
/// wrote itself: microseconds, `Z`.
impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_rfc3339(&text)
            .filter(|at| at.to_rfc3339() == *text)
            .ok_or_else(|| serde::de::Error::custom(format!("not a ledger time: {text:?}")))
    }
}

/// The status a sender reports for one attempt; a delivery takes the status of its
/// latest attempt and starts as `pending`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[rkyv(derive(Debug))]
pub enum AttemptStatus {
    Pending,
    RetryScheduled,
    Delivered,
    Failed,
}

impl AttemptStatus {
    pub const ALL: [AttemptStatus; 4] = [
        AttemptStatus::Pending,
        AttemptStatus::RetryScheduled,
        AttemptStatus::Delivered,
        AttemptStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Pending => "pending",
            AttemptStatus::RetryScheduled => "retry_scheduled",
            AttemptStatus::Delivered => "delivered",
            AttemptStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// The status of a webhook event, derived from its deliveries.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[rkyv(derive(Debug))]
pub enum EventStatus {
    Pending,
    Delivered,
    Failed,
    Skipped,
}

impl EventStatus {
    pub const ALL: [EventStatus; 4] = [
        EventStatus::Pending,
        EventStatus::Delivered,
        EventStatus::Failed,
        EventStatus::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Pending => "pending",
            EventStatus::Delivered => "delivered",
            EventStatus::Failed => "failed",
            EventStatus::Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The rule of `docs/DESIGN.md` §3: no deliveries is `skipped`; any delivery
    /// still `pending` or `retry_scheduled` keeps the event `pending`; all
    /// delivered is `delivered`; anything else is `failed`.
    pub fn derive(deliveries: impl IntoIterator<Item = AttemptStatus>) -> Self {
        let mut any = false;
        let mut all_delivered = true;
        for status in deliveries {
            any = true;
            match status {
                AttemptStatus::Pending | AttemptStatus::RetryScheduled => {
                    return EventStatus::Pending;
                }
                AttemptStatus::Delivered => {}
                AttemptStatus::Failed => all_delivered = false,
            }
        }
        match (any, all_delivered) {
            (false, _) => EventStatus::Skipped,
            (true, true) => EventStatus::Delivered,
            (true, false) => EventStatus::Failed,
        }
    }
}

/// An HTTP status code the receiver answered with: `100 <= x <= 599`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct HttpStatusCode(u16);

impl HttpStatusCode {
    pub const MIN: i64 = 100;
    pub const MAX: i64 = 599;

    pub fn parse(code: i64) -> Option<Self> {
        (Self::MIN..=Self::MAX)
            .contains(&code)
            .then_some(HttpStatusCode(code as u16))
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl<'de> Deserialize<'de> for HttpStatusCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = i64::deserialize(d)?;
        HttpStatusCode::parse(code)
            .ok_or_else(|| serde::de::Error::custom("must be an integer from 100 to 599"))
    }
}

/// A non-empty string (`lastError`: "Minimum string length: 1").
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct NonEmptyString(String);

impl NonEmptyString {
    pub fn parse(text: impl Into<String>) -> Option<Self> {
        let text = text.into();
        (!text.is_empty()).then_some(NonEmptyString(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl<'de> Deserialize<'de> for NonEmptyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        NonEmptyString::parse(String::deserialize(d)?)
            .ok_or_else(|| serde::de::Error::custom("must not be empty"))
    }
}

/// `nextRetryAt`: a date-time that matches the contract's pattern exactly.
///
/// The pattern is `YYYY-MM-DDTHH:MM[:SS[.F+]]Z`: UTC with a literal `Z`, no offsets,
/// seconds and fraction optional, hours 00-23, minutes and seconds 00-59 (no leap
/// second), months of their true length and Feb 29 only in leap years of the
/// proleptic Gregorian calendar (year 0000 included). The literal text is kept as
/// the fact the sender reported; `at` is the instant, truncated to microseconds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RetryAt {
    literal: String,
    at: Timestamp,
}

impl RetryAt {
    pub fn parse(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        let digits = |range: std::ops::Range<usize>| -> Option<u32> {
            let part = b.get(range)?;
            part.iter().try_fold(0u32, |acc, &c| {
                c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
            })
        };
        let year = digits(0..4)?;
        (b.get(4) == Some(&b'-')).then_some(())?;
        let month = digits(5..7)?;
        (b.get(7) == Some(&b'-')).then_some(())?;
        let day = digits(8..10)?;
        (b.get(10) == Some(&b'T')).then_some(())?;
        let hour = digits(11..13)?;
        (b.get(13) == Some(&b':')).then_some(())?;
        let minute = digits(14..16)?;
        let mut i = 16;
        let mut second = 0;
        let mut nanos = 0u32;
        if b.get(i) == Some(&b':') {
            second = digits(i + 1..i + 3)?;
            i += 3;
            if b.get(i) == Some(&b'.') {
                let start = i + 1;
                let mut end = start;
                while b.get(end).is_some_and(u8::is_ascii_digit) {
                    end += 1;
                }
                if end == start {
                    return None;
                }
                // Digits past the ninth cannot change a nanosecond value.
                for (k, &c) in b[start..end].iter().take(9).enumerate() {
                    nanos += u32::from(c - b'0') * 10u32.pow(8 - k as u32);
                }
                i = end;
            }
        }
        if b.get(i) != Some(&b'Z') || i + 1 != b.len() {
            return None;
        }
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        // chrono's proleptic Gregorian calendar gives exactly the pattern's month
        // lengths and leap years, including year 0000 as a leap year.
        let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
        let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
        let at = NaiveDateTime::new(date, time).and_utc();
        Some(RetryAt {
            literal: text.to_owned(),
            at: Timestamp(at.timestamp_micros()),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.literal
    }

    pub fn at(&self) -> Timestamp {
        self.at
    }
}

impl Serialize for RetryAt {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.literal)
    }
}

impl<'de> Deserialize<'de> for RetryAt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        RetryAt::parse(&text).ok_or_else(|| {
            serde::de::Error::custom("must be a UTC date-time like 2023-11-07T05:31:56Z")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The pattern exactly as `docs/DESIGN.md` §1 gives it.
    const CONTRACT_PATTERN: &str = r"^(?:(?:\d\d[2468][048]|\d\d[13579][26]|\d\d0[48]|[02468][048]00|[13579][26]00)-02-29|\d{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12]\d|3[01])|(?:0[469]|11)-(?:0[1-9]|[12]\d|30)|(?:02)-(?:0[1-9]|1\d|2[0-8])))T(?:(?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d+)?)?(?:Z))$";

    fn contract() -> regex::Regex {
        // JSON Schema patterns are ECMA-262, where `\d` is ASCII only.
        regex::RegexBuilder::new(CONTRACT_PATTERN)
            .unicode(false)
            .build()
            .unwrap()
    }

    #[test]
    fn retry_at_accepts_the_forms_the_pattern_allows() {
        for ok in [
            "2023-11-07T05:31:56Z",
            "2023-11-07T05:31Z",
            "2023-11-07T05:31:56.1Z",
            "2023-11-07T05:31:56.123456789123Z",
            "2024-02-29T00:00Z",
            "2000-02-29T23:59:59Z",
            "0000-02-29T00:00Z",
            "2023-04-30T00:00Z",
            "2023-12-31T23:59:59.999999Z",
        ] {
            assert!(RetryAt::parse(ok).is_some(), "{ok} should parse");
        }
    }

    #[test]
    fn retry_at_refuses_what_the_pattern_refuses() {
        for bad in [
            "2023-02-29T00:00Z",
            "1900-02-29T00:00Z",
            "2023-04-31T00:00Z",
            "2023-11-31T00:00Z",
            "2023-13-01T00:00Z",
            "2023-00-01T00:00Z",
            "2023-01-00T00:00Z",
            "2023-11-07T24:00Z",
            "2023-11-07T23:60Z",
            "2023-11-07T23:59:60Z",
            "2023-11-07T05:31:56+00:00",
            "2023-11-07T05:31:56z",
            "2023-11-07 05:31:56Z",
            "2023-11-07T05:31:56.Z",
            "2023-11-07T05Z",
            "2023-11-07",
            "23-11-07T05:31Z",
            "+2023-11-07T05:31Z",
            "2023-11-07T05:31:56Z ",
            "２０２３-11-07T05:31Z",
            "",
        ] {
            assert!(RetryAt::parse(bad).is_none(), "{bad} should be refused");
            assert!(
                !contract().is_match(bad),
                "the pattern should refuse {bad} too"
            );
        }
    }

    #[test]
    fn retry_at_keeps_the_literal_and_truncates_the_instant_to_micros() {
        let at = RetryAt::parse("2023-11-07T05:31:56.1234567Z").unwrap();
        assert_eq!(at.as_str(), "2023-11-07T05:31:56.1234567Z");
        assert_eq!(at.at().to_rfc3339(), "2023-11-07T05:31:56.123456Z");
        let minutes_only = RetryAt::parse("2023-11-07T05:31Z").unwrap();
        assert_eq!(
            minutes_only.at().to_rfc3339(),
            "2023-11-07T05:31:00.000000Z"
        );
    }

    fn date_time_like() -> impl Strategy<Value = String> {
        (
            0u32..10000,
            0u32..14,
            0u32..33,
            0u32..26,
            0u32..62,
            proptest::option::of(0u32..62),
            proptest::option::of("[0-9]{0,4}"),
            prop_oneof![Just("Z"), Just("z"), Just("+00:00"), Just("")],
        )
            .prop_map(|(y, mo, d, h, mi, s, frac, zone)| {
                let mut text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}");
                if let Some(s) = s {
                    text.push_str(&format!(":{s:02}"));
                    if let Some(frac) = frac {
                        text.push('.');
                        text.push_str(&frac);
                    }
                }
                text.push_str(zone);
                text
            })
    }

    proptest! {
        #[test]
        fn retry_at_agrees_with_the_contract_pattern(text in date_time_like()) {
            prop_assert_eq!(RetryAt::parse(&text).is_some(), contract().is_match(&text), "{}", text);
        }

        #[test]
        fn retry_at_never_panics(text in "\\PC{0,40}") {
            let _ = RetryAt::parse(&text);
        }

        #[test]
        fn http_status_code_is_exactly_100_to_599(code in -1000i64..2000) {
            prop_assert_eq!(HttpStatusCode::parse(code).is_some(), (100..=599).contains(&code));
        }
    }

    #[test]
    fn event_status_follows_the_rules() {
        use AttemptStatus::*;
        assert_eq!(EventStatus::derive([]), EventStatus::Skipped);
        assert_eq!(
            EventStatus::derive([Delivered, Delivered]),
            EventStatus::Delivered
        );
        assert_eq!(
            EventStatus::derive([Delivered, RetryScheduled]),
            EventStatus::Pending
        );
        assert_eq!(EventStatus::derive([Failed, Pending]), EventStatus::Pending);
        assert_eq!(
            EventStatus::derive([Delivered, Failed]),
            EventStatus::Failed
        );
        assert_eq!(EventStatus::derive([Failed]), EventStatus::Failed);
    }

    #[test]
    fn the_fast_rfc3339_form_is_chronos_form() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut samples = vec![
            0,
            -1,
            1,
            951_782_400_000_000,     // 2000-02-29
            -62_167_219_200_000_000, // 0000-01-01
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999
            253_402_300_800_000_000, // 10000-01-01: chrono's form
            -62_167_219_200_000_001, // before year 0: chrono's form
            i64::MIN,
            i64::MAX,
        ];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            samples.push((x % 500_000_000_000_000_000) as i64 - 100_000_000_000_000_000);
        }
        for micros in samples {
            let t = Timestamp(micros);
            assert_eq!(t.to_rfc3339(), t.to_chrono_rfc3339(), "{micros}");
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.to_chrono_rfc3339())
            );
        }
    }
}
