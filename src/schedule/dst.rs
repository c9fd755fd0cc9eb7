//! Wall-clock time in a zone and the daylight-saving rule (Vixie cron's).
//!
//! A cron schedule names wall times; a zone maps each wall time to none (inside a spring-forward
//! gap), one, or two instants (inside a fall-back fold). Which instants fire depends on what the
//! schedule says:
//! - a schedule that names **fixed wall times** (minute and hour fields both plain values, lists or
//!   partial ranges: `30 2 * * *`, `0,30 1-3 * * *`) fires once for each: at the first occurrence
//!   of a repeated time, and at the end of the gap for a time that is skipped (several skipped
//!   times collapse into that one firing);
//! - a schedule whose minute or hour field is a **wildcard** (`*`, `*/15`, or a step over the whole
//!   field such as `0-59/15`) follows real time: it fires in both occurrences of a repeated hour,
//!   and wall times inside a gap simply do not occur.

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use super::cron::Cron;
use crate::clock::Millis;

const SECOND: i64 = 1_000;
const HOUR: i64 = 3_600 * SECOND;
/// Longer than any fold (Antarctica/Troll's two hours are the longest in use).
const FOLD_WINDOW: i64 = 4 * HOUR;

/// The UTC offset of `tz` at `instant`, in milliseconds.
pub(super) fn offset_ms(tz: Tz, instant: Millis) -> i64 {
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

/// The wall time of `instant` in `tz`.
pub(super) fn to_wall(tz: Tz, instant: Millis) -> NaiveDateTime {
    DateTime::from_timestamp_millis(instant)
        .unwrap_or_default()
        .with_timezone(&tz)
        .naive_local()
}

/// The instants whose wall time in `tz` is `wall`, earliest first: none in a gap, two in a fold.
fn instants(tz: Tz, wall: NaiveDateTime) -> (Option<Millis>, Option<Millis>) {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(dt) => (Some(dt.timestamp_millis()), None),
        LocalResult::Ambiguous(a, b) => {
            let (a, b) = (a.timestamp_millis(), b.timestamp_millis());
            (Some(a.min(b)), Some(a.max(b)))
        }
        LocalResult::None => (None, None),
    }
}

/// Maps a wall time in `tz` to UTC the way a fixed-time schedule fires: a skipped time moves to
/// the end of the gap, a repeated time takes its first occurrence.
pub fn wall_to_utc(tz: Tz, wall: NaiveDateTime) -> Millis {
    match instants(tz, wall) {
        (Some(first), _) => first,
        (None, _) => gap_end(tz, wall),
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

/// The first instant after `from` (up to `to`) at which the offset of `tz` falls, if it does:
/// the start of a fold.
fn fold_start(tz: Tz, from: Millis, to: Millis) -> Option<Millis> {
    let before = offset_ms(tz, from);
    if offset_ms(tz, to) >= before {
        return None;
    }
    let (mut lo, mut hi) = (from, to);
    while hi - lo > SECOND {
        let mid = lo + (hi - lo) / 2;
        if offset_ms(tz, mid) == before {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(hi - hi.rem_euclid(SECOND))
}

/// The first fire time of `cron` in `tz` strictly after `after`, by the rule of this module. The
/// walk takes a few steps per gap or fold, however fine the schedule (a match every second).
pub(super) fn next_fire(cron: &Cron, tz: Tz, after: Millis) -> Option<Millis> {
    let real_time = cron.follows_real_time();
    let mut wall = to_wall(tz, after);
    let just_before = |t: NaiveDateTime| t - TimeDelta::milliseconds(1);
    let ahead = loop {
        wall = cron.next_wall(wall)?;
        match instants(tz, wall) {
            (Some(first), _) if first > after => break first,
            (Some(_), Some(second)) if real_time && second > after => break second,
            (Some(first), Some(second)) => {
                // A repeated time whose first occurrence has passed (`after` is in the second):
                // so has every later time of the fold, so the walk resumes at its end.
                if let Some(start) = fold_start(tz, first, second) {
                    let end = to_wall(tz, start) + TimeDelta::milliseconds(second - first);
                    wall = wall.max(just_before(end));
                }
            }
            (None, _) if !real_time => {
                let end = gap_end(tz, wall);
                if end > after {
                    break end;
                }
            }
            // A real-time schedule skips the wall times of a gap: the walk resumes at its end.
            (None, _) => wall = wall.max(just_before(to_wall(tz, gap_end(tz, wall)))),
            (Some(_), None) => {}
        }
    };
    if !real_time {
        return Some(ahead);
    }
    // A schedule that follows real time also fires in the second occurrence of a fold that
    // starts before `ahead`: its wall times come back, and may match again.
    let Some(start) = fold_start(tz, after, ahead.min(after + FOLD_WINDOW)) else {
        return Some(ahead);
    };
    let back = cron.next_wall(just_before(to_wall(tz, start)));
    let again = back
        .and_then(|w| match instants(tz, w) {
            (Some(_), Some(second)) if second > after => Some(second),
            _ => None,
        })
        .filter(|t| *t < ahead);
    Some(again.unwrap_or(ahead))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn utc(s: &str) -> Millis {
        DateTime::parse_from_rfc3339(s).map_or(i64::MIN, |d| d.timestamp_millis())
    }

    #[test]
    fn a_fold_or_gap_of_second_matches_is_crossed_at_once() {
        // Every second of 01:xx, named as fixed times, from inside New York's second 01:00-01:59.
        let explicit: Vec<String> = (0..60).map(|m| m.to_string()).collect();
        let fixed = Cron::parse(&format!("{} 1 * * * *", explicit.join(","))).unwrap();
        let tz: Tz = "America/New_York".parse().unwrap();
        assert!(!fixed.follows_real_time());
        assert_eq!(
            next_fire(&fixed, tz, utc("2026-11-01T06:00:01Z")),
            Some(utc("2026-11-02T06:00:00Z"))
        );
        // Every second, following real time, across Troll's two-hour gap (01:00 UTC: +00 -> +02).
        let every = Cron::parse("* * * * * *").unwrap();
        let troll: Tz = "Antarctica/Troll".parse().unwrap();
        assert_eq!(
            next_fire(&every, troll, utc("2026-03-29T00:59:59Z")),
            Some(utc("2026-03-29T01:00:00Z"))
        );
        assert_eq!(
            next_fire(&every, troll, utc("2026-03-29T00:59:58.5Z")),
            Some(utc("2026-03-29T00:59:59Z"))
        );
    }
}
