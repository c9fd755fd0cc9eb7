//! Schedules: cron expressions with time zones, one-shot instants and fixed intervals.
//!
//! This is the only module that knows the cron library. Cron expressions follow croniter (and so
//! the CueAPI server): five fields `minute hour day-of-month month day-of-week`, an optional sixth
//! field for **seconds** and an optional seventh for the **year** (both trailing, as croniter reads
//! them), Sunday as 0 or 7, names (`MON`, `JAN`), `@hourly`-style macros, `L`, `W` and `#`, and
//! day-of-month OR day-of-week when both are restricted.
//!
//! # Daylight saving time
//!
//! Cron fields are matched against the wall clock of the cue's time zone, then mapped to UTC:
//! - a wall time that does not exist (spring forward) fires at the first instant after the gap;
//!   several such times collapse into that one firing;
//! - a wall time that happens twice (fall back) fires once, at its first occurrence.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::OnceLock;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use parking_lot::Mutex;

use crate::clock::Millis;
use crate::error::{Error, Result};

const SECOND: i64 = 1_000;
const HOUR: i64 = 3_600 * SECOND;

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
    Tz::from_str(name)
        .or_else(|_| Tz::from_str_insensitive(name))
        .map_err(|_| Error::InvalidSchedule(format!("unknown time zone {name:?} (expected an IANA name such as \"Europe/Paris\" or \"UTC\")")))
}

/// Rewrites a croniter-style expression into croner's layout (seconds first, year last).
fn croner_layout(expr: &str) -> Result<String> {
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Err(Error::InvalidSchedule("empty cron expression".into()));
    }
    if let Some(name) = trimmed.strip_prefix('@') {
        let base = match name.to_ascii_lowercase().as_str() {
            "yearly" | "annually" => "0 0 1 1 *",
            "monthly" => "0 0 1 * *",
            "weekly" => "0 0 * * 0",
            "daily" | "midnight" => "0 0 * * *",
            "hourly" => "0 * * * *",
            _ => {
                return Err(Error::InvalidSchedule(format!(
                    "unknown cron macro {trimmed:?} (known: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)"
                )))
            }
        };
        return Ok(format!("0 {base}"));
    }
    let mut f: Vec<&str> = trimmed.split_whitespace().collect();
    // croniter reads a day field that lists every day as `*` when the other day field is written
    // with a `*` (`*/15`), so that the other field alone decides; otherwise both count (OR).
    if f.len() >= 5 {
        let (dom, dow) = (f[2], f[4]);
        if dow.contains('*') && covers_all(dom, 1, 31, &[]) {
            f[2] = "*";
        }
        if dom.contains('*') && covers_all(dow, 0, 7, &DAY_NAMES) {
            f[4] = "*";
        }
    }
    match f.len() {
        5 => Ok(format!("0 {}", f.join(" "))),
        6 => Ok(format!("{} {}", f[5], f[..5].join(" "))),
        7 => Ok(format!("{} {} {}", f[5], f[..5].join(" "), f[6])),
        n => Err(Error::InvalidSchedule(format!(
            "cron expression {trimmed:?} has {n} fields; expected 5 (minute hour day-of-month month day-of-week), optionally followed by seconds and year"
        ))),
    }
}

const DAY_NAMES: [(&str, u32); 7] = [
    ("SUN", 0),
    ("MON", 1),
    ("TUE", 2),
    ("WED", 3),
    ("THU", 4),
    ("FRI", 5),
    ("SAT", 6),
];

/// Whether a plain cron field (numbers, names, `*`, ranges, steps, lists) selects every value of
/// `lo..=hi` (for day-of-week, where `hi` is 7, 7 is Sunday again). Fields with `L`, `W`, `#` or
/// `?` never do.
fn covers_all(field: &str, lo: u32, hi: u32, names: &[(&str, u32)]) -> bool {
    let value = |t: &str| -> Option<u32> {
        t.parse().ok().or_else(|| {
            names
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(t))
                .map(|(_, v)| *v)
        })
    };
    let top = if hi == 7 { 6 } else { hi };
    let mut seen = vec![false; top as usize + 1];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => match s.parse::<usize>() {
                Ok(n) if n > 0 => (r, Some(n)),
                _ => return false,
            },
            None => (item, None),
        };
        let bounds = if range == "*" {
            Some((lo, hi))
        } else if let Some((x, y)) = range.split_once('-') {
            value(x).zip(value(y))
        } else {
            // `5/10` runs from 5 to the top; a lone `5` is just 5.
            value(range).map(|v| (v, if step.is_some() { hi } else { v }))
        };
        let Some((a, b)) = bounds.filter(|(a, b)| lo <= *a && a <= b && *b <= hi) else {
            return false;
        };
        for v in (a..=b).step_by(step.unwrap_or(1)) {
            let slot = if hi == 7 { v % 7 } else { v };
            seen[slot as usize] = true;
        }
    }
    seen[lo as usize..].iter().all(|s| *s)
}

const FIELD_NAMES: [&str; 7] = [
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
    "second",
    "year",
];

fn croner_parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Optional)
        .sloppy_ranges(true)
        .build()
}

fn parse_cron(expr: &str) -> Result<Cron> {
    let layout = croner_layout(expr)?;
    croner_parser().parse(&layout).map_err(|e| {
        let field = bad_field(expr)
            .map(|f| format!(" (in the {f} field)"))
            .unwrap_or_default();
        Error::InvalidSchedule(format!(
            "invalid cron expression {:?}{field}: {e}",
            expr.trim()
        ))
    })
}

/// Names the first field that fails on its own, every other field being `*`.
fn bad_field(expr: &str) -> Option<&'static str> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    (0..fields.len()).find_map(|i| {
        let probe: Vec<&str> = (0..fields.len())
            .map(|j| if i == j { fields[j] } else { "*" })
            .collect();
        let layout = croner_layout(&probe.join(" ")).ok()?;
        croner_parser()
            .parse(&layout)
            .is_err()
            .then(|| FIELD_NAMES.get(i).copied())
            .flatten()
    })
}

/// Parses an interval such as `30s`, `5m`, `1h`, `1d` or `1h30m`. The minimum is one second.
pub fn parse_every(text: &str) -> Result<i64> {
    let bad = || {
        Error::InvalidSchedule(format!(
            "invalid interval {text:?}: expected a number and a unit (s, m, h, d), e.g. \"30s\", \"5m\", \"1h30m\""
        ))
    };
    let t = text.trim().to_ascii_lowercase();
    if t.is_empty() {
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
            "interval {text:?} is shorter than one second"
        )));
    }
    if total > 366 * 24 * HOUR {
        return Err(Error::InvalidSchedule(format!(
            "interval {text:?} is longer than a year"
        )));
    }
    Ok(total)
}

/// Parses an ISO-8601 instant. A value without an offset is read as wall time in `tz`
/// (with the DST policy of this module).
pub fn parse_instant(text: &str, tz: Tz) -> Result<Millis> {
    let t = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.timestamp_millis());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M%:z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(t, fmt) {
            return Ok(dt.timestamp_millis());
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(wall_to_utc(tz, n));
        }
    }
    Err(Error::InvalidSchedule(format!(
        "invalid time {text:?}: expected ISO-8601 such as \"2026-12-01T09:30:00\" or \"2026-12-01T09:30:00+01:00\""
    )))
}

fn offset_ms(tz: Tz, instant: Millis) -> i64 {
    match Utc.timestamp_millis_opt(instant) {
        LocalResult::Single(u) => {
            i64::from(
                tz.offset_from_utc_datetime(&u.naive_utc())
                    .fix()
                    .local_minus_utc(),
            ) * SECOND
        }
        _ => 0,
    }
}

fn to_wall(tz: Tz, instant: Millis) -> NaiveDateTime {
    DateTime::from_timestamp_millis(instant)
        .unwrap_or_default()
        .with_timezone(&tz)
        .naive_local()
}

/// Maps a wall time in `tz` to UTC by the DST policy: a skipped time moves to the end of the gap,
/// a repeated time takes its first occurrence.
pub fn wall_to_utc(tz: Tz, wall: NaiveDateTime) -> Millis {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(dt) => dt.timestamp_millis(),
        LocalResult::Ambiguous(a, b) => a.timestamp_millis().min(b.timestamp_millis()),
        LocalResult::None => gap_end(tz, wall),
    }
}

/// The first instant whose wall time is later than `wall`, for a `wall` inside a DST gap:
/// that is the instant of the transition, whose wall time is the end of the gap.
fn gap_end(tz: Tz, wall: NaiveDateTime) -> Millis {
    let as_utc = wall.and_utc().timestamp_millis();
    let before = offset_ms(tz, as_utc - 36 * HOUR);
    let after = offset_ms(tz, as_utc + 36 * HOUR);
    let (mut lo, mut hi) = (as_utc - before.max(after), as_utc - before.min(after));
    // Invariant: wall(lo) <= wall, wall(hi) > wall. Bisect to the second.
    if to_wall(tz, hi) <= wall {
        return hi;
    }
    while hi - lo > SECOND {
        let mid = lo + (hi - lo) / 2;
        if to_wall(tz, mid) > wall {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi - hi.rem_euclid(SECOND)
}

impl Schedule {
    /// A cron schedule in the zone `tz`. Fails with a clear message on a bad field, an unknown
    /// zone, or an expression that can never fire.
    pub fn cron(expr: &str, tz: &str, now: Millis) -> Result<Schedule> {
        let tz = parse_timezone(tz)?;
        let cron = parse_cron(expr)?;
        let s = Schedule {
            kind: Kind::Cron {
                expr: expr.trim().to_string(),
                cron: Box::new(cron),
            },
            tz,
        };
        if s.next_after(now).is_none() {
            return Err(Error::InvalidSchedule(format!(
                "cron expression {:?} never fires",
                expr.trim()
            )));
        }
        Ok(s)
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
        let s = Schedule::cron(expr, tz, 0)?;
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

    /// The first fire time strictly after `after`, or `None` if the schedule never fires again.
    pub fn next_after(&self, after: Millis) -> Option<Millis> {
        match &self.kind {
            Kind::Once { at } => (*at > after).then_some(*at),
            Kind::Every { every_ms } => after.checked_add(*every_ms),
            Kind::Cron { cron, .. } => {
                let mut cand = to_wall(self.tz, after);
                // Each step moves the wall-clock candidate forward; a handful is enough except
                // around DST folds, where earlier wall times map to instants already passed.
                for _ in 0..10_000 {
                    let m = cron.find_next_occurrence(&cand, false).ok()?;
                    let utc = wall_to_utc(self.tz, m);
                    if utc > after {
                        return Some(utc);
                    }
                    cand = m;
                }
                None
            }
        }
    }

    /// The next `n` fire times after `after`.
    pub fn preview(&self, after: Millis, n: usize) -> Vec<Millis> {
        let mut out = Vec::with_capacity(n);
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
            Kind::Cron { expr, cron } => format!("{} ({zone}) [{expr}]", cron.describe()),
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
        let y = Schedule::cron("0 0 1 1 * 0 2030", "UTC", 0).unwrap();
        assert_eq!(
            y.next_after(utc("2026-01-01T00:00:00Z")),
            Some(utc("2030-01-01T00:00:00Z"))
        );
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
        assert!(covers_all("0-6", 0, 7, &DAY_NAMES));
        assert!(covers_all("SUN-SAT", 0, 7, &DAY_NAMES));
        assert!(covers_all("1-7", 0, 7, &DAY_NAMES));
        assert!(covers_all("*/1", 1, 31, &[]));
        assert!(covers_all("1-15,16-31", 1, 31, &[]));
        assert!(!covers_all("1-5", 0, 7, &DAY_NAMES));
        assert!(!covers_all("*/2", 0, 7, &DAY_NAMES));
        assert!(!covers_all("5#2", 0, 7, &DAY_NAMES));
        assert!(!covers_all("L", 1, 31, &[]));
        // 2025-08-14 is a Thursday: `*/15` alone decides, so the next fire is the 16th.
        let s = Schedule::cron("0 0 */15 * 0-6", "UTC", 0).unwrap();
        assert_eq!(
            s.next_after(utc("2025-08-14T13:18:00Z")),
            Some(utc("2025-08-16T00:00:00Z"))
        );
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
