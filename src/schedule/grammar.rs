//! croniter's grammar, read the way croniter's `_expand` reads it, with the caps checked first.
//!
//! No Rust cron crate reads croniter's grammar: ranges that wrap (`FRI-MON`, `22-2`), `L5` for the
//! last Friday, `W15`, `1-L`, a start with a step (`5/20` = `5-59/20`), croniter's reading of a day
//! field that lists every day, its arithmetic for a step across a wrap, and its refusals (`1,,2`,
//! `5L`, a no-break space). The deliberate deviations are listed in [`super`]. Reading is linear in
//! the length of the expression, which is capped ([`MAX_EXPRESSION_LEN`], [`MAX_LIST_ITEMS`])
//! before anything else looks at it.

use super::cron::{Bits, Cron, Days, FIRST_YEAR, NTH_LAST};
use crate::error::{Error, Result};

/// The longest cron expression accepted, in bytes.
pub const MAX_EXPRESSION_LEN: usize = 1024;
/// The most comma-separated items one field may have.
pub const MAX_LIST_ITEMS: usize = 100;

/// The fields in croniter's order: five, then an optional trailing second and year.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Minute,
    Hour,
    Dom,
    Month,
    Dow,
    Second,
    Year,
}

const FIELDS: [Field; 7] = [
    Field::Minute,
    Field::Hour,
    Field::Dom,
    Field::Month,
    Field::Dow,
    Field::Second,
    Field::Year,
];

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::Dom => "day-of-month",
            Field::Month => "month",
            Field::Dow => "day-of-week",
            Field::Second => "second",
            Field::Year => "year",
        }
    }

    /// The values of the field (croniter's `RANGES`; day-of-week 7 is read as 0 first).
    fn range(self) -> (u32, u32) {
        match self {
            Field::Minute | Field::Second => (0, 59),
            Field::Hour => (0, 23),
            Field::Dom => (1, 31),
            Field::Month => (1, 12),
            Field::Dow => (0, 6),
            Field::Year => (FIRST_YEAR, FIRST_YEAR + 129),
        }
    }

    /// A name (`jan`, `mon`, `l`) as croniter's `ALPHACONV` reads it.
    fn alias(self, text: &str) -> Option<Item> {
        let find = |names: &[&str], first: u32| {
            (0u32..)
                .zip(names)
                .find(|(_, n)| **n == text)
                .map(|(i, _)| Item::Num(first + i))
        };
        match self {
            Field::Dom if text == "l" => Some(Item::Last),
            Field::Month => find(&MONTHS, 1),
            Field::Dow => find(&WEEKDAYS, 0),
            _ => None,
        }
    }

    /// croniter's `LOWMAP`: day-of-week 7 is Sunday.
    fn fold(self, v: u32) -> u32 {
        if self == Field::Dow && v == 7 {
            0
        } else {
            v
        }
    }

    fn size(self) -> u32 {
        let (lo, hi) = self.range();
        hi - lo + 1
    }
}

/// One selected value of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item {
    Num(u32),
    /// `*`
    Star,
    /// `L` in the day-of-month field: the last day of the month.
    Last,
}

/// The values one field selects.
#[derive(Clone, Debug, Default)]
struct FieldSet {
    /// Bit `v - lo` for each value `v`.
    bits: Bits,
    /// `*` (after croniter's rule that a field listing every value is `*`).
    star: bool,
    /// `L` in the day-of-month field.
    last: bool,
    /// `W`: the weekday nearest this day of the month.
    nearest: Option<u32>,
    /// `#n` / `Ln` in the day-of-week field, by weekday.
    nth: [u8; 7],
    /// Written with `*` or as a step over the whole field (for the daylight-saving rule).
    periodic: bool,
}

/// The text of a refusal: the expression (shortened) and the reason.
fn refuse(expr: &str, reason: impl std::fmt::Display) -> Error {
    let shown: String = expr.chars().take(80).collect();
    let more = if shown.len() < expr.len() { "…" } else { "" };
    Error::InvalidSchedule(format!("invalid cron expression {shown:?}{more}: {reason}"))
}

/// croniter's field separators: ASCII whitespace (Python's `\s` under `re.ASCII`).
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Digits as a number, saturating (a huge value is out of range, a huge step selects one value).
fn number(s: &str) -> u32 {
    s.bytes().fold(0u32, |n, b| {
        n.saturating_mul(10).saturating_add(u32::from(b - b'0'))
    })
}

/// Reads a croniter expression; refuses it with a message naming the field at fault.
pub(super) fn read(expr: &str) -> Result<Cron> {
    if expr.len() > MAX_EXPRESSION_LEN {
        return Err(Error::InvalidSchedule(format!(
            "cron expression is {} bytes long; at most {MAX_EXPRESSION_LEN} are accepted",
            expr.len()
        )));
    }
    let trimmed = expr.trim_matches(is_separator);
    if trimmed.is_empty() {
        return Err(Error::InvalidSchedule("empty cron expression".into()));
    }
    let lower = trimmed.to_ascii_lowercase();
    let text = if lower.starts_with('@') {
        match lower.as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            _ => {
                return Err(Error::InvalidSchedule(format!(
                    "unknown cron macro {:?} (known: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)",
                    trimmed.chars().take(40).collect::<String>()
                )))
            }
        }
    } else {
        lower.as_str()
    };
    let fields: Vec<&str> = text.split(is_separator).filter(|f| !f.is_empty()).collect();
    if !(5..=7).contains(&fields.len()) {
        return Err(Error::InvalidSchedule(format!(
            "cron expression {:?}{} has {} fields; expected 5 (minute hour day-of-month month day-of-week), optionally followed by seconds and year",
            trimmed.chars().take(80).collect::<String>(),
            if trimmed.len() > 80 { "…" } else { "" },
            fields.len()
        )));
    }
    let mut sets = Vec::with_capacity(fields.len());
    for (field, text) in FIELDS.iter().zip(&fields) {
        let set = parse_field(*field, text, &fields).map_err(|why| {
            refuse(
                trimmed,
                format_args!("{} field {text:?}: {why}", field.name()),
            )
        })?;
        sets.push(set);
    }
    let days = day_rule(&sets[2], &sets[4]).map_err(|why| refuse(trimmed, why))?;
    let bits64 = |s: &FieldSet, f: Field| -> u64 {
        if s.star {
            (1u64 << f.size()) - 1
        } else {
            s.bits.word()
        }
    };
    Ok(Cron {
        seconds: sets.get(5).map(|s| bits64(s, Field::Second)),
        minutes: bits64(&sets[0], Field::Minute),
        hours: bits64(&sets[1], Field::Hour),
        months: bits64(&sets[3], Field::Month) as u16,
        years: sets.get(6).filter(|s| !s.star).map(|s| s.bits),
        days,
        real_time: sets[0].periodic || sets[1].periodic,
    })
}

/// Reads one field as croniter's `_expand` does. The error says what is wrong with the field.
fn parse_field(field: Field, text: &str, fields: &[&str]) -> std::result::Result<FieldSet, String> {
    let (lo, hi) = field.range();
    if let Some(rest) = text.strip_prefix(['h', 'r']) {
        if rest
            .bytes()
            .all(|b| b.is_ascii_digit() || b"()-/".contains(&b))
        {
            return Err(if text.starts_with('h') {
                "`H` (hashed values) needs a hash id, which a schedule does not have".into()
            } else {
                "`R` (random values) is not supported: the value would change every time the schedule is read".into()
            });
        }
    }
    if !text.is_ascii() {
        return Err("only ASCII letters, digits and `* , - / # ?` may be used".into());
    }
    let items: Vec<&str> = if text.contains('?') {
        if text != "?" {
            return Err("`?` must be written alone".into());
        }
        if !matches!(field, Field::Dom | Field::Dow) {
            return Err("`?` is only allowed in the day-of-month and day-of-week fields".into());
        }
        vec!["*"]
    } else {
        text.split(',').collect()
    };
    if items.len() > MAX_LIST_ITEMS {
        return Err(format!(
            "{} list items; at most {MAX_LIST_ITEMS} are accepted",
            items.len()
        ));
    }
    let mut set = FieldSet::default();
    // Distinct values selected, counting `*` and `L` as values (croniter's `res`).
    let add =
        |set: &mut FieldSet, item: Item, nth: Option<u8>| -> std::result::Result<(), String> {
            match item {
                Item::Star => set.star = true,
                Item::Last => set.last = true,
                Item::Num(v) => {
                    let v = field.fold(v);
                    if v < lo || v > hi {
                        return Err(format!("{v} is out of range ({lo}-{hi})"));
                    }
                    set.bits.set(v - lo);
                    if let Some(n) = nth {
                        set.nth[v as usize] |= n;
                    }
                }
            }
            Ok(())
        };
    for item in &items {
        if item.is_empty() {
            return Err("empty list item".into());
        }
        let mut e: &str = item;
        let mut nth: Option<u8> = None;
        if field == Field::Dow {
            if let Some((target, n)) = special_weekday(item) {
                if n == 0 {
                    return Err(format!("{item:?}: the occurrence after `#` must be 1 to 5"));
                }
                e = target;
                nth = Some(n);
            }
        }
        if field == Field::Dom {
            if let Some(day) = nearest_spec(item) {
                if !(1..=31).contains(&day) {
                    return Err(format!(
                        "{item:?}: the day before or after `W` must be 1 to 31"
                    ));
                }
                if items.len() > 1 {
                    return Err("`W` can only be used with a single day, not in a list".into());
                }
                set.nearest = Some(day);
                set.bits.set(day - lo);
                continue;
            }
        }
        if e == "*" || e.starts_with("*/") || starts_whole_range(field, e) {
            set.periodic = true;
        }
        match range_item(field, e)? {
            Some(values) => {
                for v in values {
                    add(&mut set, Item::Num(v), nth)?;
                }
            }
            None => {
                if e.starts_with('-') {
                    return Err(format!("{item:?}: negative numbers are not allowed"));
                }
                let value = if e == "*" {
                    Item::Star
                } else if all_digits(e) {
                    Item::Num(number(e))
                } else {
                    field
                        .alias(e)
                        .ok_or_else(|| format!("{item:?} is not a value of this field"))?
                };
                add(&mut set, value, nth)?;
            }
        }
    }
    // croniter reads a field that selects every value as `*`, except a day field whose partner
    // day field has no `*` in it (then both stay restricted and either one decides).
    let count = set.bits.count() + u32::from(set.star) + u32::from(set.last);
    if count == field.size() {
        let keep = match field {
            Field::Dom => !fields[4].contains('*'),
            Field::Dow => !fields[2].contains('*'),
            _ => false,
        };
        if !keep {
            set.star = true;
        }
    }
    if set.nth.iter().any(|n| *n != 0) {
        let plain = (0..7).any(|d| set.bits.has(d) && set.nth[d as usize] == 0);
        if plain || set.star {
            return Err("`#` and `L` cannot be mixed with plain weekdays in one field".into());
        }
    }
    Ok(set)
}

/// `X#n` (X a weekday, a weekday range of names, or a word) or `Ln`: the weekday part and the
/// occurrence bits (0 for a `#` out of 1-5, refused by the caller).
fn special_weekday(item: &str) -> Option<(&str, u8)> {
    if let Some((target, n)) = item.split_once('#') {
        if !all_digits(n) || target.is_empty() {
            return None;
        }
        let named_range = target
            .split_once('-')
            .is_some_and(|(a, b)| WEEKDAYS.contains(&a) && WEEKDAYS.contains(&b));
        let word = target
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !(named_range || word) {
            return None;
        }
        let n = number(n);
        return Some((
            target,
            if (1..=5).contains(&n) {
                1 << (n - 1)
            } else {
                0
            },
        ));
    }
    let digits = item.strip_prefix('l')?;
    all_digits(digits).then_some((digits, NTH_LAST))
}

/// `15w` or `w15` in the day-of-month field.
fn nearest_spec(item: &str) -> Option<u32> {
    let digits = item.strip_suffix('w').or_else(|| item.strip_prefix('w'))?;
    all_digits(digits).then(|| number(digits))
}

/// Whether an item is a range or start-with-step over the whole field (`0-59/15`, `0/15`, `0-23`),
/// which the daylight-saving rule reads like `*`.
fn starts_whole_range(field: Field, e: &str) -> bool {
    let (lo, hi) = field.range();
    let bound = |s: &str| all_digits(s).then(|| number(s));
    let (range, _) = e.split_once('/').unwrap_or((e, ""));
    match range.split_once('-') {
        Some((a, b)) => bound(a) == Some(lo) && bound(b) == Some(hi),
        None => e.contains('/') && bound(range) == Some(lo),
    }
}

/// A range or a step (`a-b`, `a-b/n`, `*/n`, `a/n`) as croniter expands it, or `None` when the
/// item is a single value.
fn range_item(field: Field, e: &str) -> std::result::Result<Option<Vec<u32>>, String> {
    let (lo, hi) = field.range();
    let starred = e
        .strip_prefix("*/")
        .filter(|rest| !rest.is_empty())
        .map(|rest| format!("{lo}-{hi}/{rest}"));
    let mut start_with_step = false;
    let mut parts = split_range(starred.as_deref().unwrap_or(e));
    if parts.is_none() {
        if let Some((a, b)) = e
            .rsplit_once('/')
            .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        {
            let t = format!("{a}-{hi}/{b}");
            if let Some(p) = split_range(&t) {
                parts = Some(p);
                start_with_step = true;
            }
        }
    }
    let Some((low, high, step)) = parts else {
        return Ok(None);
    };
    let bound = |s: &str| -> std::result::Result<u32, String> {
        if all_digits(s) {
            Ok(number(s))
        } else {
            match field.alias(s) {
                Some(Item::Num(v)) => Ok(v),
                _ => Err(format!("{e:?}: {s:?} is not a value of this field")),
            }
        }
    };
    // `1-L`: up to the last day (croniter reads `L` as 31 there, and only as the upper end).
    let high = if field == Field::Dom && high == "l" {
        "31".to_string()
    } else {
        high
    };
    let (written_low, written_high) = (bound(&low)?, bound(&high)?);
    let step = step.map_or(1, |s| number(&s));
    if step == 0 {
        return Err(format!("{e:?}: a step must be at least 1"));
    }
    let (mut low, mut high) = (field.fold(written_low), field.fold(written_high));
    if low.max(high) > hi {
        return Err(format!("{e:?} is out of range ({lo}-{hi})"));
    }
    if low == high && !start_with_step {
        if written_low == written_high {
            // Deviation from croniter, which reads `5-5` as the whole field: one value.
            return Ok(Some(vec![low]));
        }
        // `0-7` in day-of-week: Sunday to Sunday, the whole week.
        (low, high) = (lo, hi);
    }
    let step = step as usize;
    let values = if start_with_step && low == high {
        vec![low]
    } else if low > high {
        // A range that wraps (`FRI-MON`, `22-2/3`), with croniter's arithmetic for the step
        // across the wrap.
        let mut values: Vec<u32> = (low..=hi).step_by(step).collect();
        let mut skip = 0u64;
        if let Some(&last) = values.last() {
            let already = u64::from(hi - last);
            let pos = u64::from(last - lo);
            let step = step as u64;
            if pos + step > u64::from(field.size()) && already < step {
                skip = step - already;
            }
        }
        let start = u64::from(lo) + skip;
        if start <= u64::from(high) {
            values.extend((start as u32..=high).step_by(step));
        }
        values
    } else {
        (low..=high).step_by(step).collect()
    };
    Ok(Some(values))
}

/// croniter's `^([^-]+)-([^-/]+)(/(\d+))?$`: low, high and the step's digits.
fn split_range(t: &str) -> Option<(String, String, Option<String>)> {
    let (low, rest) = t.split_once('-')?;
    if low.is_empty() || rest.contains('-') {
        return None;
    }
    let (high, step) = match rest.split_once('/') {
        Some((h, s)) => {
            if !all_digits(s) {
                return None;
            }
            (h, Some(s.to_string()))
        }
        None => (rest, None),
    };
    if high.is_empty() {
        return None;
    }
    Some((low.to_string(), high.to_string(), step))
}

/// How the two day fields combine (croniter's `day_or`), refusing the combinations croniter
/// accepts but then reads by one field alone.
fn day_rule(dom: &FieldSet, dow: &FieldSet) -> std::result::Result<Days, String> {
    let nth = dow.nth.iter().any(|n| *n != 0);
    let days = (dom.bits.word() << 1) as u32;
    let weekdays = dow.bits.word() as u8;
    Ok(match (dom.star, dow.star) {
        (false, false) if dom.nearest.is_some() || nth => {
            return Err(
                "when both day fields are restricted, `W` (day-of-month) and `#` or `L` (day-of-week) cannot be used: croniter would ignore the other day field; write `*` in one of them"
                    .into(),
            )
        }
        (false, false) => Days::Either {
            days,
            last: dom.last,
            weekdays,
        },
        (true, true) => Days::Every,
        (false, true) => match dom.nearest {
            Some(n) => Days::Nearest(n),
            None => Days::Dom {
                days,
                last: dom.last,
            },
        },
        (true, false) if nth => Days::Nth(dow.nth),
        (true, false) => Days::Dow { weekdays },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_field() {
        for (expr, field) in [
            ("1,,2 * * * *", "minute field"),
            ("* 24 * * *", "hour field"),
            ("* * 0 * *", "day-of-month field"),
            ("* * * 0-3 *", "month field"),
            ("0 0 * * 5L", "day-of-week field"),
            ("0 0 * * 1#6", "day-of-week field"),
            ("0 0 * * 1-3#2", "day-of-week field"),
            ("0 0 * * 1,2#2", "day-of-week field"),
            ("0 0 1,15W * *", "day-of-month field"),
            ("* * * * *\u{a0}", "day-of-week field"),
            ("R * * * *", "minute field"),
            ("H * * * *", "minute field"),
            ("? * * * *", "minute field"),
            ("*/0 * * * *", "minute field"),
            ("* * * * * 60", "second field"),
            ("* * * * * * 2100", "year field"),
            ("0 0 L-5 * *", "day-of-month field"),
        ] {
            let e = Cron::parse(expr).unwrap_err().to_string();
            assert!(e.contains(field), "{expr}: {e}");
        }
        let both = Cron::parse("0 0 10 * 5#2").unwrap_err().to_string();
        assert!(both.contains("both day fields"), "{both}");
    }

    #[test]
    fn caps_refuse_before_parsing() {
        let long = format!("{}* * * * *", " ".repeat(MAX_EXPRESSION_LEN));
        assert!(Cron::parse(&long)
            .unwrap_err()
            .to_string()
            .contains("at most 1024"));
        let ok = format!("{} * * * *", vec!["1"; MAX_LIST_ITEMS].join(","));
        assert!(Cron::parse(&ok).is_ok());
        let many = format!("{} * * * *", vec!["1"; MAX_LIST_ITEMS + 1].join(","));
        let e = Cron::parse(&many).unwrap_err().to_string();
        assert!(
            e.contains("minute field") && e.contains("at most 100"),
            "{e}"
        );
        let huge_step = Cron::parse("*/99999999999999999999 * * * *").unwrap();
        assert_eq!(huge_step.minutes, 1);
    }
}
