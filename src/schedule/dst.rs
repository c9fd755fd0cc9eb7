//! Wall-clock time in a zone and the daylight-saving rule (Vixie cron's).
//!
//! Cron fields are matched against the wall clock of the cue's zone, then mapped to UTC:
//! - a wall time that does not exist (spring forward) fires at the first instant after the gap;
//!   several such times collapse into that one firing;
//! - a wall time that happens twice (fall back) fires once, at its first occurrence.

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use super::cron::Cron;
use crate::clock::Millis;

const SECOND: i64 = 1_000;
const HOUR: i64 = 3_600 * SECOND;

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

/// The first fire time of `cron` in `tz` strictly after `after`, by the rule of this module.
pub(super) fn next_fire(cron: &Cron, tz: Tz, after: Millis) -> Option<Millis> {
    let mut wall = to_wall(tz, after);
    loop {
        wall = cron.next_wall(wall)?;
        let t = wall_to_utc(tz, wall);
        if t > after {
            return Some(t);
        }
    }
}
