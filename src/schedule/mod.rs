//! Schedules: cron expressions with time zones, one-shot instants and fixed intervals.
//!
//! This is the only module that knows cron. Cron expressions follow croniter (and so the CueAPI
//! server): five fields `minute hour day-of-month month day-of-week`, an optional sixth field for
//! **seconds** and an optional seventh for the **year** (both trailing, as croniter reads them),
//! Sunday as 0 or 7, names (`MON`, `JAN`), `@hourly`-style macros, `L`, `W` and `#`, and
//! day-of-month OR day-of-week when both are restricted. The rooms:
//! - [`grammar`] — croniter's grammar and the caps on an expression;
//! - [`cron`] — a parsed expression and the walk over wall-clock time to its next match;
//! - [`dst`] — wall time in a zone and the daylight-saving rule (Vixie cron's);
//! - [`describe`] — a schedule in words.
//!
//! # Deliberate deviations from croniter
//!
//! Each is in the README ("Schedules") with its reason:
//! - a range whose two ends are the same value (`5-5`, `MON-MON`) is that one value (croniter reads
//!   the whole field: every minute);
//! - `R` (random values) is refused (croniter draws a new value every time it reads the schedule);
//! - when both day fields are restricted, `W`, `#` and `L` (day-of-week) are refused, and so is `#`
//!   or `L` beside plain weekdays or `*` in one field (croniter reads such a schedule by one field
//!   alone, silently dropping the other);
//! - an expression longer than [`MAX_EXPRESSION_LEN`] bytes, or with more than [`MAX_LIST_ITEMS`]
//!   list items in a field, is refused;
//! - whitespace around a macro is ignored (croniter refuses `" @daily"`);
//! - the daylight-saving rule of [`dst`].

mod cron;
mod describe;
mod dst;
mod grammar;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::OnceLock;

use chrono::{DateTime, NaiveDateTime};
use chrono_tz::Tz;
use parking_lot::Mutex;

pub use self::cron::Cron;
pub use self::dst::wall_to_utc;
pub use self::grammar::{MAX_EXPRESSION_LEN, MAX_LIST_ITEMS};
use crate::clock::Millis;
use crate::error::{Error, Result};

const SECOND: i64 = 1_000;
const HOUR: i64 = 3_600 * SECOND;

/// The earliest instant a schedule deals in: 0001-01-02T00:00:00Z (a day after the first instant
/// Python's `datetime` can show, so that it shows in every zone).
pub const FIRST_INSTANT: Millis = -62_135_510_400_000;
/// The latest: 9999-12-30T00:00:00Z. A one-shot time past it is refused, and no fire time is
/// given after it.
pub const LAST_INSTANT: Millis = 253_402_128_000_000;

/// What kind of schedule a cue has, with its parsed form.
#[derive(Clone, Debug)]
pub enum Kind {
    /// A cron expression, matched in the schedule's time zone.
    Cron { expr: String, cron: Box<Cron> },
    /// One instant.
    Once { at: Millis },
    /// A fixed interval: each fire is `every` after the previous one.
    Every { every_ms: i64 },
}

/// A validated schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// The parsed schedule.
    pub kind: Kind,
    /// The IANA zone, as its canonical name.
    pub tz: Tz,
}

/// Parses an IANA time zone name (case-insensitive).
pub fn parse_timezone(name: &str) -> Result<Tz> {
    let shown: String = name.chars().take(80).collect();
    Tz::from_str(name)
        .or_else(|_| Tz::from_str_insensitive(name))
        .map_err(|_| Error::InvalidSchedule(format!("unknown time zone {shown:?} (expected an IANA name such as \"Europe/Paris\" or \"UTC\")")))
}

/// Parses an interval such as `30s`, `5m`, `1h`, `1d` or `1h30m`. The minimum is one second.
pub fn parse_every(text: &str) -> Result<i64> {
    let shown: String = text.chars().take(80).collect();
    let bad = || {
        Error::InvalidSchedule(format!(
            "invalid interval {shown:?}: expected a number and a unit (s, m, h, d), e.g. \"30s\", \"5m\", \"1h30m\""
        ))
    };
    let t = text.trim().to_ascii_lowercase();
    if t.is_empty() || t.len() > 64 {
        return Err(bad());
    }
    let mut total: i64 = 0;
    let mut num = String::new();
    for ch in t.chars() {
        if ch.is_ascii_digit() {
            num.push(ch);
            continue;
        }
        let unit = match ch {
            's' => SECOND,
            'm' => 60 * SECOND,
            'h' => HOUR,
            'd' => 24 * HOUR,
            _ => return Err(bad()),
        };
        let n: i64 = num.parse().map_err(|_| bad())?;
        num.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !num.is_empty() {
        return Err(bad());
    }
    if total < SECOND {
        return Err(Error::InvalidSchedule(format!(
            "interval {shown:?} is shorter than one second"
        )));
    }
    if total > 366 * 24 * HOUR {
        return Err(Error::InvalidSchedule(format!(
            "interval {shown:?} is longer than a year"
        )));
    }
    Ok(total)
}

/// Parses an ISO-8601 instant. A value without an offset is read as wall time in `tz` (a skipped
/// time moves to the end of the gap, a repeated one takes its first occurrence). Instants outside
/// [`FIRST_INSTANT`]..=[`LAST_INSTANT`] are refused.
pub fn parse_instant(text: &str, tz: Tz) -> Result<Millis> {
    let t = text.trim();
    let shown: String = t.chars().take(80).collect();
    let parsed = parse_any_instant(t, tz).ok_or_else(|| {
        Error::InvalidSchedule(format!(
            "invalid time {shown:?}: expected ISO-8601 such as \"2026-12-01T09:30:00\" or \"2026-12-01T09:30:00+01:00\""
        ))
    })?;
    if !(FIRST_INSTANT..=LAST_INSTANT).contains(&parsed) {
        return Err(Error::InvalidSchedule(format!(
            "time {shown:?} is out of range: times from {} to {} are accepted",
            format_utc(FIRST_INSTANT),
            format_utc(LAST_INSTANT)
        )));
    }
    Ok(parsed)
}

fn parse_any_instant(t: &str, tz: Tz) -> Option<Millis> {
    if t.len() > 64 {
        return None;
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(dt.timestamp_millis());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M%:z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(t, fmt) {
            return Some(dt.timestamp_millis());
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, fmt) {
            return Some(wall_to_utc(tz, n));
        }
    }
    None
}

impl Schedule {
    /// A cron schedule in the zone `tz`. Fails with a clear message on a bad field, an unknown
    /// zone, or an expression that never fires after `now` (within croniter's 50 years).
    pub fn cron(expr: &str, tz: &str, now: Millis) -> Result<Schedule> {
        let s = Schedule::cron_unchecked(expr, tz)?;
        if s.next_after(now).is_none() {
            return Err(Error::InvalidSchedule(format!(
                "cron expression {:?} never fires",
                expr.trim()
            )));
        }
        Ok(s)
    }

    fn cron_unchecked(expr: &str, tz: &str) -> Result<Schedule> {
        let cron = Cron::parse(expr)?;
        Ok(Schedule {
            kind: Kind::Cron {
                expr: expr.trim().to_string(),
                cron: Box::new(cron),
            },
            tz: parse_timezone(tz)?,
        })
    }

    /// A stored cron schedule (valid when it was stored), parsed once per process: firing reads a
    /// cue's schedule on every tick, and parsing is most of a tick's cost for a cron cue.
    pub fn cron_stored(expr: &str, tz: &str) -> Result<Schedule> {
        type Cache = HashMap<(String, String), Schedule>;
        static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
        let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
        let key = (expr.to_string(), tz.to_string());
        if let Some(s) = cache.lock().get(&key) {
            return Ok(s.clone());
        }
        let s = Schedule::cron_unchecked(expr, tz)?;
        let mut c = cache.lock();
        if c.len() >= 4_096 {
            c.clear();
        }
        c.insert(key, s.clone());
        Ok(s)
    }

    /// A one-shot schedule. `at` must be later than `now`.
    pub fn once(at: Millis, tz: &str, now: Millis) -> Result<Schedule> {
        let tz = parse_timezone(tz)?;
        if at <= now {
            return Err(Error::InvalidSchedule(format!(
                "one-shot time {} is in the past (now is {})",
                format_instant(at, tz),
                format_instant(now, tz)
            )));
        }
        Ok(Schedule {
            kind: Kind::Once { at },
            tz,
        })
    }

    /// A one-shot schedule that may lie in the past: used when reading a stored cue.
    pub fn once_unchecked(at: Millis, tz: &str) -> Result<Schedule> {
        Ok(Schedule {
            kind: Kind::Once { at },
            tz: parse_timezone(tz)?,
        })
    }

    /// An interval schedule.
    pub fn every(every_ms: i64, tz: &str) -> Result<Schedule> {
        if every_ms < SECOND {
            return Err(Error::InvalidSchedule(
                "interval is shorter than one second".into(),
            ));
        }
        Ok(Schedule {
            kind: Kind::Every { every_ms },
            tz: parse_timezone(tz)?,
        })
    }

    /// The first fire time strictly after `after`, or `None` if the schedule never fires again
    /// (no fire time is given past [`LAST_INSTANT`]).
    pub fn next_after(&self, after: Millis) -> Option<Millis> {
        let next = match &self.kind {
            Kind::Once { at } => (*at > after).then_some(*at),
            Kind::Every { every_ms } => after.checked_add(*every_ms),
            Kind::Cron { cron, .. } => {
                dst::next_fire(cron, self.tz, after.clamp(FIRST_INSTANT - 1, LAST_INSTANT))
            }
        };
        next.filter(|t| *t <= LAST_INSTANT)
    }

    /// The next `n` fire times after `after`.
    pub fn preview(&self, after: Millis, n: usize) -> Vec<Millis> {
        let mut out = Vec::with_capacity(n.min(1_024));
        let mut t = after;
        while out.len() < n {
            match self.next_after(t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    /// The schedule in words.
    pub fn describe(&self) -> String {
        let zone = self.tz.name();
        match &self.kind {
            Kind::Cron { expr, cron } => {
                let words = describe::describe(cron).unwrap_or_else(|| "On a cron schedule".into());
                format!("{words} ({zone}) [{expr}]")
            }
            Kind::Once { at } => format!("once, at {}", format_instant(*at, self.tz)),
            Kind::Every { every_ms } => format!("every {}", describe_duration(*every_ms)),
        }
    }
}

fn describe_duration(ms: i64) -> String {
    let mut parts = Vec::new();
    let mut rest = ms / SECOND;
    for (unit, size) in [
        ("day", 86_400),
        ("hour", 3_600),
        ("minute", 60),
        ("second", 1),
    ] {
        let n = rest / size;
        rest %= size;
        if n > 0 {
            parts.push(if n == 1 {
                format!("1 {unit}")
            } else {
                format!("{n} {unit}s")
            });
        }
    }
    parts.join(" ")
}

/// An instant as ISO-8601 with the UTC offset in force in `tz` at that instant.
pub fn format_instant(instant: Millis, tz: Tz) -> String {
    DateTime::from_timestamp_millis(instant)
        .unwrap_or_default()
        .with_timezone(&tz)
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

/// An instant as ISO-8601 UTC with a `Z`.
pub fn format_utc(instant: Millis) -> String {
    DateTime::from_timestamp_millis(instant)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Millis {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.timestamp_millis())
            .unwrap_or(i64::MIN)
    }

    #[test]
    fn spring_forward_fires_after_the_gap() {
        // 2026-03-08 02:30 does not exist in New York; it fires at 03:00 EDT = 07:00Z.
        let s = Schedule::cron(
            "30 2 * * *",
            "America/New_York",
            utc("2026-03-01T00:00:00Z"),
        )
        .unwrap();
        assert_eq!(
            s.next_after(utc("2026-03-08T05:00:00Z")),
            Some(utc("2026-03-08T07:00:00Z"))
        );
        // And the next day returns to 02:30 EDT.
        assert_eq!(
            s.next_after(utc("2026-03-08T07:00:00Z")),
            Some(utc("2026-03-09T06:30:00Z"))
        );
    }

    #[test]
    fn fall_back_fires_once_at_first_occurrence() {
        // 2026-11-01 01:30 happens twice in New York: 05:30Z (EDT) and 06:30Z (EST).
        let s = Schedule::cron(
            "30 1 * * *",
            "America/New_York",
            utc("2026-10-01T00:00:00Z"),
        )
        .unwrap();
        assert_eq!(
            s.next_after(utc("2026-11-01T04:00:00Z")),
            Some(utc("2026-11-01T05:30:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-11-01T05:30:00Z")),
            Some(utc("2026-11-02T06:30:00Z"))
        );
    }

    #[test]
    fn trailing_seconds_and_year_fields() {
        let s = Schedule::cron("* * * * * 30", "UTC", 0).unwrap();
        assert_eq!(
            s.next_after(utc("2026-01-01T00:00:00Z")),
            Some(utc("2026-01-01T00:00:30Z"))
        );
        let now = utc("2026-01-01T00:00:00Z");
        let y = Schedule::cron("0 0 1 1 * 0 2030", "UTC", now).unwrap();
        assert_eq!(y.next_after(now), Some(utc("2030-01-01T00:00:00Z")));
        // Like croniter, the next fire is looked for at most 50 years ahead.
        assert!(Schedule::cron("0 0 1 1 * 0 2080", "UTC", now).is_err());
        assert!(Schedule::cron_stored("0 0 1 1 * 0 2080", "UTC").is_ok());
    }

    #[test]
    fn validation_messages() {
        let never = Schedule::cron("0 0 31 2 *", "UTC", 0)
            .unwrap_err()
            .to_string();
        assert!(never.contains("never fires"), "{never}");
        let zone = Schedule::cron("* * * * *", "Mars/Olympus", 0)
            .unwrap_err()
            .to_string();
        assert!(zone.contains("unknown time zone"), "{zone}");
        let field = Schedule::cron("61 * * * *", "UTC", 0)
            .unwrap_err()
            .to_string();
        assert!(field.contains("invalid cron expression"), "{field}");
        let count = Schedule::cron("* * *", "UTC", 0).unwrap_err().to_string();
        assert!(count.contains("3 fields"), "{count}");
        assert!(Schedule::once(5, "UTC", 10).is_err());
    }

    #[test]
    fn a_full_day_field_beside_a_starred_one_counts_as_star_like_croniter() {
        // 2025-08-14 is a Thursday: `*/15` alone decides, so the next fire is the 16th.
        for expr in ["0 0 */15 * 0-6", "0 0 */15 * SUN-SAT", "0 0 */15 * 1-7"] {
            let s = Schedule::cron(expr, "UTC", 0).unwrap();
            assert_eq!(
                s.next_after(utc("2025-08-14T13:18:00Z")),
                Some(utc("2025-08-16T00:00:00Z")),
                "{expr}"
            );
        }
        // Without a `*` beside it, a full day field stays restricted: either one decides.
        let s = Schedule::cron("0 0 1,16,31 * 0-6", "UTC", 0).unwrap();
        assert_eq!(
            s.next_after(utc("2025-08-14T13:18:00Z")),
            Some(utc("2025-08-15T00:00:00Z"))
        );
    }

    #[test]
    fn every_15_minutes_follows_real_time_through_fall_back() {
        // 2026-11-01 in New York: 01:00-01:59 happens at 05:00Z (EDT) and again at 06:00Z (EST).
        let s = Schedule::cron("*/15 * * * *", "America/New_York", 0).unwrap();
        let fires = s.preview(utc("2026-11-01T04:50:00Z"), 10);
        let expected: Vec<Millis> = (0..10)
            .map(|i| utc("2026-11-01T05:00:00Z") + i * 15 * 60 * SECOND)
            .collect();
        assert_eq!(fires, expected);
        // Spring forward: 02:00-02:59 does not exist, so nothing fires in it.
        let fires = s.preview(utc("2026-03-08T06:40:00Z"), 3);
        assert_eq!(
            fires,
            [
                utc("2026-03-08T06:45:00Z"),
                utc("2026-03-08T07:00:00Z"),
                utc("2026-03-08T07:15:00Z")
            ]
        );
    }

    #[test]
    fn out_of_range_instants_are_refused_and_never_given() {
        let tz = parse_timezone("UTC").unwrap();
        for bad in [
            "+10000-01-01T00:00:00",
            "9999-12-31T00:00:00Z",
            "-0001-01-01T00:00:00",
        ] {
            let e = parse_instant(bad, tz).unwrap_err().to_string();
            assert!(e.contains("out of range"), "{bad}: {e}");
        }
        let s = Schedule::cron("* * * * *", "Pacific/Kiritimati", 0).unwrap();
        assert_eq!(s.next_after(LAST_INSTANT), None);
        let s = Schedule::cron("* * * * *", "UTC", 0).unwrap();
        assert_eq!(s.next_after(i64::MIN), Some(FIRST_INSTANT));
        let e = Schedule::every(1_000, "UTC").unwrap();
        assert_eq!(e.next_after(LAST_INSTANT), None);
        assert_eq!(e.next_after(i64::MAX), None);
    }

    #[test]
    fn start_and_step_without_a_range_like_croniter() {
        let s = Schedule::cron("5/20 * * * *", "UTC", 0).unwrap();
        assert_eq!(
            s.next_after(utc("2026-01-01T00:06:00Z")),
            Some(utc("2026-01-01T00:25:00Z"))
        );
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_every("30s").unwrap(), 30_000);
        assert_eq!(parse_every("1h30m").unwrap(), 5_400_000);
        for bad in ["", "5", "5x", "0s", "m5", "99999999999999999999d"] {
            assert!(parse_every(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn naive_instants_are_wall_time_in_the_zone() {
        let tz = parse_timezone("Europe/Paris").unwrap();
        assert_eq!(
            parse_instant("2026-07-01T12:00:00", tz).unwrap(),
            utc("2026-07-01T10:00:00Z")
        );
        assert_eq!(
            parse_instant("2026-07-01T12:00:00Z", tz).unwrap(),
            utc("2026-07-01T12:00:00Z")
        );
        assert!(parse_instant("tomorrow", tz).is_err());
    }
}
