//! Schedules in words. A parsed cron expression is written back in croner's grammar (every value
//! explicit, so croner reads exactly what croniter's rules selected) and croner words it.

use croner::parser::{CronParser, Seconds, Year};

use super::cron::{Cron, Days, FIRST_YEAR, NTH_LAST};

/// `values` (bit i = value `lo + i`) in cron syntax: `*`, `*/n`, `a-b`, lists.
fn field(bits: u64, lo: u32, size: u32) -> String {
    if (0..size).all(|i| bits >> i & 1 == 1) {
        return "*".into();
    }
    restricted(
        &(0..size).filter(|i| bits >> i & 1 == 1).collect::<Vec<_>>(),
        lo,
        size,
    )
}

/// Like [`field`], but never `*` (a day field that selects every day beside a restricted one).
fn restricted(values: &[u32], lo: u32, size: u32) -> String {
    if let [first, second, .., last] = values[..] {
        let step = second - first;
        if step > 1 && values.windows(2).all(|w| w[1] - w[0] == step) {
            // `*/n` counts from the field's first value; croner's years start long before 1970.
            return if first == 0 && last + step >= size && lo != FIRST_YEAR {
                format!("*/{step}")
            } else {
                format!("{}-{}/{step}", first + lo, last + lo)
            };
        }
    }
    let mut items = Vec::new();
    let mut i = 0;
    while i < values.len() {
        let mut j = i;
        while j + 1 < values.len() && values[j + 1] == values[j] + 1 {
            j += 1;
        }
        if j >= i + 2 {
            items.push(format!("{}-{}", values[i] + lo, values[j] + lo));
        } else {
            items.extend(values[i..=j].iter().map(|v| (v + lo).to_string()));
        }
        i = j + 1;
    }
    items.join(",")
}

fn list(bits: u64, size: u32) -> Vec<u32> {
    (0..size).filter(|i| bits >> i & 1 == 1).collect()
}

fn dom(days: u32, last: bool) -> String {
    let mut text = restricted(&list(u64::from(days >> 1), 31), 1, 31);
    if last {
        text = if text.is_empty() {
            "L".into()
        } else {
            format!("{text},L")
        };
    }
    text
}

/// The expression in croner's grammar: `sec min hour dom month dow [year]`.
fn croner_text(cron: &Cron) -> String {
    let (dom, dow) = match &cron.days {
        Days::Every => ("*".into(), "*".into()),
        Days::Dom { days, last } => (dom(*days, *last), "*".into()),
        Days::Dow { weekdays } => ("*".into(), restricted(&list(u64::from(*weekdays), 7), 0, 7)),
        Days::Either {
            days,
            last,
            weekdays,
        } => (
            dom(*days, *last),
            restricted(&list(u64::from(*weekdays), 7), 0, 7),
        ),
        Days::Nearest(n) => (format!("{n}W"), "*".into()),
        Days::Nth(nth) => {
            let mut items = Vec::new();
            for (weekday, bits) in nth.iter().enumerate() {
                for n in 0..5 {
                    if bits >> n & 1 == 1 {
                        items.push(format!("{weekday}#{}", n + 1));
                    }
                }
                if bits & NTH_LAST != 0 {
                    items.push(format!("{weekday}L"));
                }
            }
            ("*".into(), items.join(","))
        }
    };
    let mut parts = vec![
        field(cron.seconds.unwrap_or(1), 0, 60),
        field(cron.minutes, 0, 60),
        field(cron.hours, 0, 24),
        dom,
        field(u64::from(cron.months), 1, 12),
        dow,
    ];
    if let Some(years) = &cron.years {
        let values: Vec<u32> = (0..130).filter(|i| years.has(*i)).collect();
        parts.push(restricted(&values, FIRST_YEAR, 130));
    }
    parts.join(" ")
}

/// The expression in words (croner's English), or `None` if croner cannot word it.
pub(super) fn describe(cron: &Cron) -> Option<String> {
    let parser = CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Optional)
        .build();
    parser.parse(&croner_text(cron)).ok().map(|c| c.describe())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(expr: &str) -> String {
        croner_text(&Cron::parse(expr).unwrap())
    }

    #[test]
    fn written_back_in_croner_grammar() {
        assert_eq!(text("*/15 9-17 * * MON-FRI"), "0 */15 9-17 * * 1-5");
        assert_eq!(text("0 0 * * 1/3"), "0 0 0 * * 1,4");
        assert_eq!(text("0 0 L,5 * *"), "0 0 0 5,L * *");
        assert_eq!(text("0 0 * * L5,1#2"), "0 0 0 * * 1#2,5L");
        assert_eq!(text("0 0 W15 * *"), "0 0 0 15W * *");
        assert_eq!(text("0 0 1 1 * 0 2030"), "0 0 0 1 1 * 2030");
        assert_eq!(text("0 0 1 1 * 0 */4"), "0 0 0 1 1 * 1970-2098/4");
        assert_eq!(text("5/15 * * * *"), "0 5-50/15 * * * *");
        assert_eq!(text("0 0 * * FRI-MON"), "0 0 0 * * 0,1,5,6");
        let words = describe(&Cron::parse("*/15 9-17 * * MON-FRI").unwrap()).unwrap();
        assert!(
            words.contains("15 minutes") && words.contains("Monday"),
            "{words}"
        );
    }
}
