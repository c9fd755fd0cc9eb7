//! A parsed cron expression and the walk over wall-clock time that finds its next match.
//!
//! The expression is read by [`super::grammar`]; everything is checked against croniter by
//! `tests/test_cron_differential.py`. [`Cron::next_wall`] looks at most [`HORIZON_YEARS`] ahead,
//! as croniter does.

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Timelike};

use super::grammar;
use crate::error::Result;

/// The first value of the year field (croniter's years are 1970-2099).
pub(super) const FIRST_YEAR: u32 = 1970;
/// How far ahead the next fire time is looked for (croniter's `max_years_between_matches`).
pub const HORIZON_YEARS: i32 = 50;

/// The n-th (1-5) or last occurrence of a weekday in its month, as bits: bit n-1 for `#n`, bit 5
/// for `L`.
pub(super) const NTH_LAST: u8 = 1 << 5;

/// A set of small numbers (the year field has 130 values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Bits([u64; 3]);

impl Bits {
    pub(super) fn set(&mut self, i: u32) {
        self.0[i as usize / 64] |= 1 << (i % 64);
    }

    pub(super) fn has(&self, i: u32) -> bool {
        (i as usize) < 192 && self.0[i as usize / 64] >> (i % 64) & 1 == 1
    }

    pub(super) fn count(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    /// The lowest member at or above `from`.
    pub(super) fn next(&self, from: u32) -> Option<u32> {
        (from as usize / 64..3).find_map(|w| {
            let word = if w == from as usize / 64 {
                self.0[w] >> (from % 64) << (from % 64)
            } else {
                self.0[w]
            };
            (word != 0).then(|| w as u32 * 64 + word.trailing_zeros())
        })
    }

    pub(super) fn word(&self) -> u64 {
        self.0[0]
    }
}

/// What decides the day: croniter's reading of the day-of-month and day-of-week fields.
#[derive(Clone, Debug)]
pub(super) enum Days {
    /// Both `*`.
    Every,
    /// Day-of-week is `*`: the days of the month listed (and `L`).
    Dom { days: u32, last: bool },
    /// Day-of-month is `*`: the weekdays listed.
    Dow { weekdays: u8 },
    /// Both restricted: either one (croniter's default `day_or`).
    Either { days: u32, last: bool, weekdays: u8 },
    /// `nW`: the weekday nearest day n (n clamped to the month).
    Nearest(u32),
    /// `#n` / `Ln`: the n-th or last given weekday of the month.
    Nth([u8; 7]),
}

/// A parsed cron expression.
#[derive(Clone, Debug)]
pub struct Cron {
    /// Bit s for each second (`None`: five fields, second 0).
    pub(super) seconds: Option<u64>,
    /// Bit m for each minute.
    pub(super) minutes: u64,
    /// Bit h for each hour.
    pub(super) hours: u64,
    /// Bit m-1 for each month.
    pub(super) months: u16,
    /// Bit y-1970 for each year, if the year field is restricted.
    pub(super) years: Option<Bits>,
    pub(super) days: Days,
    /// Minute or hour written as a wildcard (see [`super::dst`]).
    pub(super) real_time: bool,
}

impl Cron {
    /// Parses a croniter expression; refuses it with a message naming the field at fault.
    pub fn parse(expr: &str) -> Result<Cron> {
        grammar::read(expr)
    }

    /// Whether the schedule follows real time across a daylight-saving change (its minute or hour
    /// field is written with `*` or as a step over the whole field) rather than naming wall times.
    pub fn follows_real_time(&self) -> bool {
        self.real_time
    }

    /// Whether the expression has a seconds field (fire times then fall on any second).
    pub fn has_seconds(&self) -> bool {
        self.seconds.is_some()
    }

    /// The first wall time strictly after `after` (at whole minutes, or whole seconds with a
    /// seconds field) that the fields match, within [`HORIZON_YEARS`] of `after`.
    pub fn next_wall(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        let unit = if self.seconds.is_some() { 1 } else { 60 };
        let secs = i64::from(after.num_seconds_from_midnight());
        let floor = after.date().and_hms_opt(0, 0, 0)? + TimeDelta::seconds(secs - secs % unit);
        let start = floor.checked_add_signed(TimeDelta::seconds(unit))?;
        let horizon = start.year() + HORIZON_YEARS;
        let mut date = start.date();
        let mut from = Some(start.time());
        while date.year() <= horizon {
            if let Some(years) = self.years {
                let (lo, hi) = (FIRST_YEAR, FIRST_YEAR + 129);
                let y = u32::try_from(date.year()).ok()?;
                if y > hi {
                    return None;
                }
                if y < lo || !years.has(y - lo) {
                    let next = years.next(y.saturating_sub(lo))? + lo;
                    date = NaiveDate::from_ymd_opt(i32::try_from(next).ok()?, 1, 1)?;
                    from = None;
                    continue;
                }
            }
            if self.months >> (date.month() - 1) & 1 == 0 {
                date = match next_bit(u64::from(self.months), date.month()) {
                    Some(m) => NaiveDate::from_ymd_opt(date.year(), m + 1, 1)?,
                    None => NaiveDate::from_ymd_opt(date.year() + 1, 1, 1)?,
                };
                from = None;
                continue;
            }
            if self.day_matches(date) {
                if let Some(t) = self.first_time(from) {
                    return Some(date.and_time(t));
                }
            }
            date = date.succ_opt()?;
            from = None;
        }
        None
    }

    /// The first time of day at or after `from` (midnight when `None`) the time fields match.
    fn first_time(&self, from: Option<NaiveTime>) -> Option<NaiveTime> {
        let seconds = self.seconds.unwrap_or(1);
        let first = |bits: u64| next_bit(bits, 0);
        let (h0, m0, s0) = from.map_or((0, 0, 0), |t| (t.hour(), t.minute(), t.second()));
        let at = |h, m, s| NaiveTime::from_hms_opt(h, m, s);
        let h = next_bit(self.hours, h0)?;
        if h > h0 {
            return at(h, first(self.minutes)?, first(seconds)?);
        }
        if let Some(m) = next_bit(self.minutes, m0) {
            if m > m0 {
                return at(h, m, first(seconds)?);
            }
            if let Some(s) = next_bit(seconds, s0) {
                return at(h, m, s);
            }
            if let Some(m) = next_bit(self.minutes, m0 + 1) {
                return at(h, m, first(seconds)?);
            }
        }
        let h = next_bit(self.hours, h0 + 1)?;
        at(h, first(self.minutes)?, first(seconds)?)
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let day = date.day();
        let weekday = date.weekday().num_days_from_sunday();
        let month_len = days_in_month(date.year(), date.month());
        let dom = |days: u32, last: bool| days >> day & 1 == 1 || (last && day == month_len);
        let dow = |weekdays: u8| weekdays >> weekday & 1 == 1;
        match &self.days {
            Days::Every => true,
            Days::Dom { days, last } => dom(*days, *last),
            Days::Dow { weekdays } => dow(*weekdays),
            Days::Either {
                days,
                last,
                weekdays,
            } => dom(*days, *last) || dow(*weekdays),
            Days::Nearest(n) => day == nearest_weekday(date.year(), date.month(), *n),
            Days::Nth(nth) => {
                let bits = nth[weekday as usize];
                bits >> ((day - 1) / 7) & 1 == 1 || (bits & NTH_LAST != 0 && day + 7 > month_len)
            }
        }
    }
}

/// The lowest set bit at or above `from`.
fn next_bit(bits: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = bits >> from;
    (rest != 0).then(|| from + rest.trailing_zeros())
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// croniter's `_get_nearest_weekday`: day `n` (clamped to the month), moved off a weekend without
/// leaving the month.
fn nearest_weekday(year: i32, month: u32, n: u32) -> u32 {
    let last = days_in_month(year, month);
    let day = n.min(last);
    let weekday =
        NaiveDate::from_ymd_opt(year, month, day).map_or(1, |d| d.weekday().num_days_from_sunday());
    match weekday {
        6 if day > 1 => day - 1,
        6 => day + 2,
        0 if day < last => day + 1,
        0 => day - 2,
        _ => day,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn next(expr: &str, after: &str, n: usize) -> Vec<String> {
        let cron = Cron::parse(expr).unwrap();
        let mut t = at(after);
        (0..n)
            .map(|_| {
                t = cron.next_wall(t).unwrap();
                t.format("%a %Y-%m-%d %H:%M:%S").to_string()
            })
            .collect()
    }

    #[test]
    fn spellings_croniter_reads_its_own_way() {
        // Each expectation was read from croniter 7.
        let after = "2025-08-14 13:18:00";
        assert_eq!(
            next("0 0 * * 1/3", after, 3),
            [
                "Mon 2025-08-18 00:00:00",
                "Thu 2025-08-21 00:00:00",
                "Mon 2025-08-25 00:00:00"
            ]
        );
        assert_eq!(
            next("0 0 * * 7/2", after, 3),
            [
                "Sat 2025-08-16 00:00:00",
                "Sun 2025-08-17 00:00:00",
                "Tue 2025-08-19 00:00:00"
            ]
        );
        assert_eq!(
            next("0 0 * * L5", after, 2),
            ["Fri 2025-08-29 00:00:00", "Fri 2025-09-26 00:00:00"]
        );
        assert_eq!(
            next("0 0 W15 * *", after, 4),
            [
                "Fri 2025-08-15 00:00:00",
                "Mon 2025-09-15 00:00:00",
                "Wed 2025-10-15 00:00:00",
                "Fri 2025-11-14 00:00:00"
            ]
        );
        assert_eq!(
            next("0 0 31W 2 *", after, 2),
            ["Fri 2026-02-27 00:00:00", "Fri 2027-02-26 00:00:00"]
        );
        assert_eq!(
            next("0 0 * * FRI-MON", after, 4),
            [
                "Fri 2025-08-15 00:00:00",
                "Sat 2025-08-16 00:00:00",
                "Sun 2025-08-17 00:00:00",
                "Mon 2025-08-18 00:00:00"
            ]
        );
        assert_eq!(
            next("50-10/15 * * * *", after, 3),
            [
                "Thu 2025-08-14 13:50:00",
                "Thu 2025-08-14 14:06:00",
                "Thu 2025-08-14 14:50:00"
            ]
        );
        for same in ["0 0 */14 * MON-SUN", "0 0 */14 * 1-7", "0 0 */14 * 0-7"] {
            assert_eq!(
                next(same, after, 3),
                [
                    "Fri 2025-08-15 00:00:00",
                    "Fri 2025-08-29 00:00:00",
                    "Mon 2025-09-01 00:00:00"
                ],
                "{same}"
            );
        }
        assert_eq!(next("0 0 1-L * *", after, 1), ["Fri 2025-08-15 00:00:00"]);
        assert_eq!(
            next("0 0 L,5 * *", after, 3),
            [
                "Sun 2025-08-31 00:00:00",
                "Fri 2025-09-05 00:00:00",
                "Tue 2025-09-30 00:00:00"
            ]
        );
    }

    #[test]
    fn an_equal_range_is_one_value() {
        assert_eq!(
            next("5-5 * * * *", "2025-08-14 13:18:00", 2),
            ["Thu 2025-08-14 14:05:00", "Thu 2025-08-14 15:05:00"]
        );
        assert_eq!(
            next("0 0 * * SUN-SUN", "2025-08-14 13:18:00", 2),
            ["Sun 2025-08-17 00:00:00", "Sun 2025-08-24 00:00:00"]
        );
    }

    #[test]
    fn real_time_is_a_starred_or_whole_range_minute_or_hour() {
        for expr in [
            "*/15 * * * *",
            "0 * * * *",
            "0-59/15 1 * * *",
            "0/15 1 * * *",
            "0 0-23 * * *",
            "0 */2 * * *",
        ] {
            assert!(Cron::parse(expr).unwrap().follows_real_time(), "{expr}");
        }
        for expr in [
            "30 1 * * *",
            "0,30 1 * * *",
            "5-59/15 1 * * *",
            "0 1-3 * * *",
            "@daily",
            "0 9 * * *",
        ] {
            assert!(!Cron::parse(expr).unwrap().follows_real_time(), "{expr}");
        }
    }

    #[test]
    fn the_search_stops_at_the_horizon() {
        let cron = Cron::parse("0 0 1 1 * 0 2075").unwrap();
        assert!(cron.next_wall(at("2025-08-14 00:00:00")).is_some());
        assert!(cron.next_wall(at("2024-08-14 00:00:00")).is_none());
        assert!(Cron::parse("0 0 30 2 *")
            .unwrap()
            .next_wall(at("2025-01-01 00:00:00"))
            .is_none());
    }
}
