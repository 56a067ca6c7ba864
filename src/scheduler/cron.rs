//! Standard 5-field cron expressions (`min hour dom month dow`), evaluated on
//! local wall-clock time.
//!
//! Owns: parsing and validation (numbers, `*`, ranges, steps, lists, month and
//! weekday names, `@` macros, with messages that name the field), and finding
//! the next matching local minute. Matching is done by the `cron` crate behind
//! a thin adapter, because its conventions differ from standard cron:
//! - it wants a seconds field: we prepend `0`;
//! - it numbers weekdays 1-7 = Sunday-Saturday where cron uses 0-6 and 7 for
//!   Sunday: the validated day-of-week field is handed over as day names;
//! - it ANDs day-of-month and day-of-week. Vixie cron ORs them when both are
//!   restricted, so such an expression becomes two crate schedules (one with
//!   day-of-week `*`, one with day-of-month `*`) and the earlier match wins. A
//!   field that begins with `*` (including `*/2`) counts as unrestricted for
//!   that rule, as it does in Vixie cron and cronie;
//! - it only knows the years 1970-2100: each year is evaluated in a proxy year
//!   of the same calendar (same leap status, same weekday of January 1st), so
//!   any year works.
//!
//! Every field is handed over as the list of values our parser accepted, so
//! the crate never sees syntax whose meaning it might read differently.
//! Must not: know about time zones, DST or UTC instants (that is `expr` and
//! `window`), or read the clock.

use std::fmt;

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeDelta, Weekday};

/// The Gregorian calendar repeats every 400 years (146 097 days, a whole
/// number of weeks), so a pattern of dates with no match in 400 consecutive
/// years has none at all.
pub const GREGORIAN_CYCLE_YEARS: i32 = 400;

/// A parsed 5-field cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    /// Bit n set: minute n matches (0-59).
    minutes: u64,
    /// Bit n set: hour n matches (0-23).
    hours: u32,
    /// Bit n set: day-of-month n matches (1-31).
    days: u32,
    /// Bit n set: month n matches (1-12).
    months: u16,
    /// Bit n set: weekday n matches (0 = Sunday ... 6 = Saturday).
    weekdays: u8,
    /// Both day fields are restricted, so a day matches if either matches.
    day_or: bool,
    /// The expression as written, whitespace collapsed.
    text: String,
    /// The crate schedules; a minute matches when any of them matches.
    plans: Vec<cron::Schedule>,
}

/// What one field accepts.
struct Field {
    name: &'static str,
    lo: u32,
    hi: u32,
    /// Names accepted in place of numbers, with the number of the first name.
    names: &'static [&'static str],
    first_name: u32,
    names_hint: &'static str,
}

const MINUTE: Field = Field {
    name: "minute",
    lo: 0,
    hi: 59,
    names: &[],
    first_name: 0,
    names_hint: "",
};
const HOUR: Field = Field {
    name: "hour",
    lo: 0,
    hi: 23,
    names: &[],
    first_name: 0,
    names_hint: "",
};
const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    lo: 1,
    hi: 31,
    names: &[],
    first_name: 0,
    names_hint: "",
};
const MONTH: Field = Field {
    name: "month",
    lo: 1,
    hi: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
    first_name: 1,
    names_hint: "jan-dec",
};
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    lo: 0,
    hi: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    first_name: 0,
    names_hint: "sun-sat",
};

impl CronExpr {
    /// Parses a 5-field expression or an `@` macro; the error names the field and value.
    pub fn parse(text: &str) -> Result<CronExpr, String> {
        let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let expanded = match collapsed.to_ascii_lowercase().as_str() {
            "@hourly" => "0 * * * *".to_string(),
            "@daily" | "@midnight" => "0 0 * * *".to_string(),
            "@weekly" => "0 0 * * 0".to_string(),
            "@monthly" => "0 0 1 * *".to_string(),
            "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
            other if other.starts_with('@') => {
                return Err(format!(
                    "unknown macro `{collapsed}` (use @hourly, @daily, @midnight, @weekly, \
                     @monthly, @yearly or @annually)"
                ));
            }
            _ => collapsed.clone(),
        };
        let fields: Vec<&str> = expanded.split(' ').filter(|f| !f.is_empty()).collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            ));
        }
        let minutes = parse_field(fields[0], &MINUTE)?;
        let hours = parse_field(fields[1], &HOUR)?;
        let days = parse_field(fields[2], &DAY_OF_MONTH)?;
        let months = parse_field(fields[3], &MONTH)?;
        let dow = parse_field(fields[4], &DAY_OF_WEEK)?;
        // 7 is another name for Sunday.
        let weekdays = ((dow | (dow >> 7)) & 0x7f) as u8;
        let mut expr = CronExpr {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays,
            day_or: !fields[2].starts_with('*') && !fields[4].starts_with('*'),
            text: collapsed,
            plans: Vec::new(),
        };
        expr.plans = expr.crate_plans()?;
        Ok(expr)
    }

    /// The expression as written (whitespace collapsed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A canonical form of what the expression matches: equal for `@daily` and
    /// `0 0 * * *`, for `* * * * 7` and `* * * * 0`.
    pub fn canonical(&self) -> String {
        format!(
            "{:x} {:x} {:x} {:x} {:x} {}",
            self.minutes,
            self.hours,
            self.days,
            self.months,
            self.weekdays,
            if self.day_or { "or" } else { "and" }
        )
    }

    /// Whether some calendar date matches the day fields: false for `0 0 30 2 *`
    /// or `0 0 31 4,6,9,11 *`, which name only days their months never have.
    pub fn matches_some_date(&self) -> bool {
        // Under Vixie's OR every allowed month has every weekday.
        self.day_or || self.month_has_an_allowed_day()
    }

    /// The weekdays (bit 0 = Sunday) on which the expression matches some date.
    ///
    /// Every valid date falls on every weekday within one Gregorian cycle
    /// (February 29th included), so a weekday is reachable when the weekday
    /// field allows it and some date passes the day-of-month field; under
    /// Vixie's OR a date passing day-of-month makes every weekday reachable.
    pub fn reachable_weekdays(&self) -> u8 {
        let dates = self.month_has_an_allowed_day();
        match (self.day_or, dates) {
            (true, true) => 0x7f,
            (true, false) | (false, true) => self.weekdays,
            (false, false) => 0,
        }
    }

    /// The (hour, minute) wall times the expression matches on a matching day.
    pub fn times_of_day(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        (0..24u32)
            .filter(|h| self.hours & (1 << h) != 0)
            .flat_map(|h| {
                (0..60u32)
                    .filter(|m| self.minutes & (1 << m) != 0)
                    .map(move |m| (h, m))
            })
    }

    fn month_has_an_allowed_day(&self) -> bool {
        (1..=12u32).any(|month| {
            self.months & (1 << month) != 0
                && (1..=longest_month(month)).any(|day| self.days & (1 << day) != 0)
        })
    }

    /// The first matching local minute strictly after `t`, or None if there is
    /// none (`0 0 30 2 *`).
    pub fn next_after_local(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        if !self.matches_some_date() {
            return None;
        }
        let mut year = t.year();
        let mut after = Some(t);
        // A date pattern that matches at all matches within one cycle.
        for _ in 0..=GREGORIAN_CYCLE_YEARS {
            let proxy = proxy_year(year)?;
            if let Some(hit) = self.next_in_proxy_year(proxy, after) {
                return hit.with_year(year);
            }
            year = year.checked_add(1)?;
            after = None;
        }
        None
    }

    /// The first match in `proxy` strictly after `after` (a time in the real
    /// year, carried over to the proxy), or from the start of the year.
    fn next_in_proxy_year(
        &self,
        proxy: i32,
        after: Option<NaiveDateTime>,
    ) -> Option<NaiveDateTime> {
        let start = match after {
            Some(t) => t.with_year(proxy)?,
            None => NaiveDate::from_ymd_opt(proxy, 1, 1)?
                .and_hms_opt(0, 0, 0)?
                .checked_sub_signed(TimeDelta::seconds(1))?,
        }
        .and_utc();
        self.plans
            .iter()
            .filter_map(|plan| plan.after(&start).next())
            .map(|hit| hit.naive_utc())
            .filter(|hit| hit.year() == proxy)
            .min()
    }

    /// The crate schedules for this expression, each field as the list of
    /// values we accepted (`*` when every value is allowed).
    fn crate_plans(&self) -> Result<Vec<cron::Schedule>, String> {
        let minutes = values(self.minutes, 0, 59);
        let hours = values(u64::from(self.hours), 0, 23);
        let days = values(u64::from(self.days), 1, 31);
        let months = values(u64::from(self.months), 1, 12);
        let weekdays = weekday_names(self.weekdays);
        let texts = if self.day_or {
            vec![
                format!("0 {minutes} {hours} {days} {months} *"),
                format!("0 {minutes} {hours} * {months} {weekdays}"),
            ]
        } else {
            vec![format!("0 {minutes} {hours} {days} {months} {weekdays}")]
        };
        texts
            .iter()
            .map(|text| {
                text.parse::<cron::Schedule>()
                    .map_err(|e| format!("cannot be evaluated ({text}): {e}"))
            })
            .collect()
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The most days month `month` ever has (29 for February).
fn longest_month(month: u32) -> u32 {
    match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A year in 1971-1998 with the same calendar as `year`: the same leap status
/// and the same weekday on January 1st. Within 1901-2099 the calendar repeats
/// every 28 years, so those 28 years hold all fourteen kinds; the crate can
/// search each of them, with a year before it to start from.
fn proxy_year(year: i32) -> Option<i32> {
    let kind = |y: i32| -> Option<(bool, Weekday)> {
        let jan1 = NaiveDate::from_ymd_opt(y, 1, 1)?;
        Some((jan1.leap_year(), jan1.weekday()))
    };
    let wanted = kind(year)?;
    (1971..=1998).find(|&y| kind(y) == Some(wanted))
}

/// `*` when bits `lo..=hi` are all set, else the set bits as a comma list.
fn values(bits: u64, lo: u32, hi: u32) -> String {
    let set: Vec<String> = (lo..=hi)
        .filter(|v| bits & (1 << v) != 0)
        .map(|v| v.to_string())
        .collect();
    if set.len() == (hi - lo + 1) as usize {
        "*".to_string()
    } else {
        set.join(",")
    }
}

/// Weekday bits (0 = Sunday) as day names, which mean the same to the crate
/// as to cron; `*` when all seven are set.
fn weekday_names(bits: u8) -> String {
    const NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    if bits & 0x7f == 0x7f {
        return "*".to_string();
    }
    NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses one field into a bit set (bit n = value n).
fn parse_field(text: &str, field: &Field) -> Result<u64, String> {
    let mut bits = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("{} `{text}` has an empty list item", field.name));
        }
        bits |= parse_item(item, field)?;
    }
    Ok(bits)
}

/// Parses `*`, `*/n`, `a`, `a-b` or `a-b/n`.
fn parse_item(item: &str, field: &Field) -> Result<u64, String> {
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => {
            let step = step
                .parse::<u32>()
                .map_err(|_| format!("{} step `{step}` is not a number", field.name))?;
            if step == 0 {
                return Err(format!("{} step 0 must be at least 1", field.name));
            }
            (range, Some(step))
        }
        None => (item, None),
    };
    let (lo, hi) = if range == "*" {
        (field.lo, field.hi)
    } else if let Some((a, b)) = range.split_once('-') {
        let lo = parse_value(a, field)?;
        let hi = parse_value(b, field)?;
        if lo > hi {
            return Err(format!("{} range {range} goes backwards", field.name));
        }
        (lo, hi)
    } else {
        if step.is_some() {
            return Err(format!(
                "{} `{item}`: a step needs `*` or a range before it",
                field.name
            ));
        }
        let v = parse_value(range, field)?;
        (v, v)
    };
    let step = step.unwrap_or(1);
    let mut bits = 0u64;
    let mut v = lo;
    while v <= hi {
        bits |= 1 << v;
        v += step;
    }
    Ok(bits)
}

/// Parses a number or (for month and weekday) a three-letter name, range-checked.
fn parse_value(text: &str, field: &Field) -> Result<u32, String> {
    if let Ok(v) = text.parse::<u32>() {
        if v < field.lo || v > field.hi {
            return Err(format!(
                "{} {v} out of range {}-{}",
                field.name, field.lo, field.hi
            ));
        }
        return Ok(v);
    }
    let lower = text.to_ascii_lowercase();
    if let Some(i) = field.names.iter().position(|n| *n == lower) {
        return Ok(field.first_name + i as u32);
    }
    if field.names.is_empty() {
        Err(format!("{} `{text}` is not a number", field.name))
    } else {
        Err(format!(
            "{} `{text}` is neither a number nor a name ({})",
            field.name, field.names_hint
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    /// The successive matches of `expr` after `from`, formatted.
    fn check(expr: &str, from: &str, expected: &[&str]) {
        let cron = CronExpr::parse(expr).unwrap();
        let mut t = at(from);
        let mut got = Vec::new();
        for _ in 0..expected.len() {
            t = cron.next_after_local(t).unwrap();
            got.push(t.format("%Y-%m-%d %H:%M %a").to_string());
        }
        assert_eq!(got, expected, "{expr} after {from}");
    }

    fn check_err(expr: &str, message: &str) {
        assert_eq!(CronExpr::parse(expr).unwrap_err(), message, "{expr}");
    }

    #[test]
    fn every_minute_and_plain_numbers() {
        check(
            "* * * * *",
            "2026-03-01 10:00",
            &["2026-03-01 10:01 Sun", "2026-03-01 10:02 Sun"],
        );
        check(
            "30 9 * * *",
            "2026-03-01 09:30",
            &["2026-03-02 09:30 Mon", "2026-03-03 09:30 Tue"],
        );
        check(
            "0 0 1 1 *",
            "2026-06-01 00:00",
            &["2027-01-01 00:00 Fri", "2028-01-01 00:00 Sat"],
        );
        check(
            "59 23 31 12 *",
            "2026-12-31 23:58",
            &["2026-12-31 23:59 Thu", "2027-12-31 23:59 Fri"],
        );
    }

    #[test]
    fn strictly_after_even_with_seconds() {
        let cron = CronExpr::parse("0 10 * * *").unwrap();
        let t = at("2026-03-01 10:00") + TimeDelta::seconds(30);
        assert_eq!(cron.next_after_local(t), Some(at("2026-03-02 10:00")));
        let t = at("2026-03-01 09:59") + TimeDelta::seconds(59);
        assert_eq!(cron.next_after_local(t), Some(at("2026-03-01 10:00")));
    }

    #[test]
    fn lists_ranges_and_steps() {
        check(
            "0,30 8 * * *",
            "2026-03-01 07:00",
            &[
                "2026-03-01 08:00 Sun",
                "2026-03-01 08:30 Sun",
                "2026-03-02 08:00 Mon",
            ],
        );
        check(
            "0 9-11 * * *",
            "2026-03-01 10:30",
            &["2026-03-01 11:00 Sun", "2026-03-02 09:00 Mon"],
        );
        check(
            "*/15 * * * *",
            "2026-03-01 10:07",
            &[
                "2026-03-01 10:15 Sun",
                "2026-03-01 10:30 Sun",
                "2026-03-01 10:45 Sun",
                "2026-03-01 11:00 Sun",
            ],
        );
        check(
            "10-40/15 * * * *",
            "2026-03-01 10:00",
            &[
                "2026-03-01 10:10 Sun",
                "2026-03-01 10:25 Sun",
                "2026-03-01 10:40 Sun",
                "2026-03-01 11:10 Sun",
            ],
        );
        check(
            "0 */6 * * *",
            "2026-03-01 01:00",
            &[
                "2026-03-01 06:00 Sun",
                "2026-03-01 12:00 Sun",
                "2026-03-01 18:00 Sun",
                "2026-03-02 00:00 Mon",
            ],
        );
        check(
            "0 0 1-3,15 * *",
            "2026-03-02 12:00",
            &[
                "2026-03-03 00:00 Tue",
                "2026-03-15 00:00 Sun",
                "2026-04-01 00:00 Wed",
            ],
        );
    }

    #[test]
    fn month_and_weekday_names_any_case() {
        check(
            "0 9 * * MON-fri",
            "2026-03-06 10:00",
            &["2026-03-09 09:00 Mon", "2026-03-10 09:00 Tue"],
        );
        check(
            "0 9 * * sat,Sun",
            "2026-03-02 00:00",
            &["2026-03-07 09:00 Sat", "2026-03-08 09:00 Sun"],
        );
        check(
            "0 0 1 jan,JUL *",
            "2026-03-01 00:00",
            &["2026-07-01 00:00 Wed", "2027-01-01 00:00 Fri"],
        );
        check(
            "0 0 1 mar-may *",
            "2026-03-01 00:00",
            &[
                "2026-04-01 00:00 Wed",
                "2026-05-01 00:00 Fri",
                "2027-03-01 00:00 Mon",
            ],
        );
    }

    #[test]
    fn seven_and_zero_are_both_sunday() {
        let seven = CronExpr::parse("0 12 * * 7").unwrap();
        let zero = CronExpr::parse("0 12 * * 0").unwrap();
        assert_eq!(seven.canonical(), zero.canonical());
        check("0 12 * * 7", "2026-03-02 00:00", &["2026-03-08 12:00 Sun"]);
        check(
            "0 12 * * 5-7",
            "2026-03-02 00:00",
            &[
                "2026-03-06 12:00 Fri",
                "2026-03-07 12:00 Sat",
                "2026-03-08 12:00 Sun",
                "2026-03-13 12:00 Fri",
            ],
        );
    }

    #[test]
    fn vixie_or_when_both_day_fields_are_restricted() {
        // The 13th OR any Friday.
        check(
            "0 0 13 * fri",
            "2026-03-01 00:00",
            &[
                "2026-03-06 00:00 Fri",
                "2026-03-13 00:00 Fri",
                "2026-03-20 00:00 Fri",
                "2026-03-27 00:00 Fri",
                "2026-04-03 00:00 Fri",
                "2026-04-10 00:00 Fri",
                "2026-04-13 00:00 Mon",
            ],
        );
        // Only one restricted: AND with the `*` field is plain restriction.
        check(
            "0 0 * * fri",
            "2026-03-12 00:00",
            &["2026-03-13 00:00 Fri", "2026-03-20 00:00 Fri"],
        );
        check(
            "0 0 13 * *",
            "2026-03-12 00:00",
            &["2026-03-13 00:00 Fri", "2026-04-13 00:00 Mon"],
        );
        // A field starting with `*` counts as unrestricted (Vixie): odd days AND Mondays.
        check(
            "0 0 */2 * mon",
            "2026-03-01 00:00",
            &[
                "2026-03-09 00:00 Mon",
                "2026-03-23 00:00 Mon",
                "2026-04-13 00:00 Mon",
            ],
        );
    }

    #[test]
    fn macros() {
        let same = |a: &str, b: &str| {
            assert_eq!(
                CronExpr::parse(a).unwrap().canonical(),
                CronExpr::parse(b).unwrap().canonical(),
                "{a} vs {b}"
            );
        };
        same("@hourly", "0 * * * *");
        same("@daily", "0 0 * * *");
        same("@midnight", "0 0 * * *");
        same("@WEEKLY", "0 0 * * 0");
        same("@monthly", "0 0 1 * *");
        same("@yearly", "0 0 1 1 *");
        same("@annually", "0 0 1 1 *");
        check("@weekly", "2026-03-02 00:00", &["2026-03-08 00:00 Sun"]);
        check("@monthly", "2026-03-02 00:00", &["2026-04-01 00:00 Wed"]);
        assert_eq!(CronExpr::parse(" @daily ").unwrap().as_str(), "@daily");
    }

    #[test]
    fn leap_day_only_in_leap_years() {
        check(
            "0 0 29 2 *",
            "2026-01-01 00:00",
            &["2028-02-29 00:00 Tue", "2032-02-29 00:00 Sun"],
        );
        // 2100 is not a leap year: eight years between 2096 and 2104.
        check("0 0 29 2 *", "2096-03-01 00:00", &["2104-02-29 00:00 Fri"]);
    }

    #[test]
    fn rare_matches_decades_apart_are_found() {
        // February 29th on a Sunday (`*/7` is Sunday and, starting with `*`,
        // leaves the day fields ANDed): 28 years apart, 40 across 2100.
        check(
            "0 0 29 2 */7",
            "2033-01-01 00:00",
            &[
                "2060-02-29 00:00 Sun",
                "2088-02-29 00:00 Sun",
                "2128-02-29 00:00 Sun",
            ],
        );
        // February 1st on a Monday: eleven years between 2027 and 2038.
        check(
            "0 0 */31 2 mon",
            "2027-02-02 00:00",
            &["2038-02-01 00:00 Mon", "2044-02-01 00:00 Mon"],
        );
    }

    #[test]
    fn any_year_is_searchable() {
        check(
            "30 9 * * mon",
            "2199-12-30 00:00",
            &["2199-12-30 09:30 Mon", "2200-01-06 09:30 Mon"],
        );
        check("0 0 1 1 *", "1899-06-01 00:00", &["1900-01-01 00:00 Mon"]);
        let cron = CronExpr::parse("* * * * *").unwrap();
        assert_eq!(cron.next_after_local(NaiveDateTime::MAX), None);
    }

    #[test]
    fn what_an_expression_can_reach() {
        let parse = |e: &str| CronExpr::parse(e).unwrap();
        assert!(!parse("0 0 30 2 *").matches_some_date());
        assert!(!parse("0 0 31 4,6,9,11 *").matches_some_date());
        assert!(parse("0 0 29 2 *").matches_some_date());
        // Under Vixie's OR the weekday half still matches.
        assert!(parse("0 0 30 2 mon").matches_some_date());
        assert_eq!(parse("0 0 30 2 mon").reachable_weekdays(), 0b10);
        assert_eq!(parse("0 0 13 * *").reachable_weekdays(), 0x7f);
        assert_eq!(parse("0 0 13 * fri").reachable_weekdays(), 0x7f);
        assert_eq!(parse("0 0 * * sat,7").reachable_weekdays(), 0b100_0001);
        assert_eq!(parse("0 0 30 2 */7").reachable_weekdays(), 0);
        assert_eq!(
            parse("0,30 9-10 * * *").times_of_day().collect::<Vec<_>>(),
            [(9, 0), (9, 30), (10, 0), (10, 30)]
        );
    }

    #[test]
    fn fields_reach_the_crate_as_value_lists() {
        let texts = |e: &str| -> Vec<String> {
            CronExpr::parse(e)
                .unwrap()
                .plans
                .iter()
                .map(|p| p.source().to_string())
                .collect()
        };
        assert_eq!(texts("* * * * *"), ["0 * * * * *"]);
        assert_eq!(
            texts("*/20 9-11 * jan-mar 1-5"),
            ["0 0,20,40 9,10,11 * 1,2,3 MON,TUE,WED,THU,FRI"]
        );
        // `*/2` counts as unrestricted: odd days AND Mondays, one schedule.
        assert_eq!(
            texts("0 0 */2 * mon"),
            ["0 0 0 1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31 * MON"]
        );
        // 0 and 7 are Sunday; a range through 7 wraps to Sunday.
        assert_eq!(texts("0 12 * * 5-7"), ["0 0 12 * * SUN,FRI,SAT"]);
        assert_eq!(texts("0 12 * * 0-6"), ["0 0 12 * * *"]);
        // Vixie's OR: two schedules, the earlier match wins.
        assert_eq!(texts("0 0 13 * fri"), ["0 0 0 13 * *", "0 0 0 * * FRI"]);
        // A step larger than the field is one value, not a crate error.
        assert_eq!(texts("*/100 * * * *"), ["0 0 * * * *"]);
    }

    #[test]
    fn impossible_dates_end_the_search() {
        let cron = CronExpr::parse("0 0 30 2 *").unwrap();
        assert_eq!(cron.next_after_local(at("2026-01-01 00:00")), None);
        let cron = CronExpr::parse("0 0 31 4,6,9,11 *").unwrap();
        assert_eq!(cron.next_after_local(at("2026-01-01 00:00")), None);
    }

    #[test]
    fn month_end_and_year_end_rollover() {
        check(
            "0 0 31 * *",
            "2026-01-31 00:00",
            &["2026-03-31 00:00 Tue", "2026-05-31 00:00 Sun"],
        );
        check(
            "*/20 * * * *",
            "2026-12-31 23:45",
            &["2027-01-01 00:00 Fri"],
        );
    }

    #[test]
    fn text_and_display() {
        let cron = CronExpr::parse("  0   9 * *  1-5 ").unwrap();
        assert_eq!(cron.as_str(), "0 9 * * 1-5");
        assert_eq!(cron.to_string(), "0 9 * * 1-5");
    }

    #[test]
    fn error_messages() {
        check_err("61 * * * *", "minute 61 out of range 0-59");
        check_err("* 24 * * *", "hour 24 out of range 0-23");
        check_err("* * 0 * *", "day-of-month 0 out of range 1-31");
        check_err("* * 32 * *", "day-of-month 32 out of range 1-31");
        check_err("* * * 13 *", "month 13 out of range 1-12");
        check_err("* * * * 8", "day-of-week 8 out of range 0-7");
        check_err(
            "* * * *",
            "expected 5 fields (minute hour day-of-month month day-of-week), found 4",
        );
        check_err(
            "0 * * * * *",
            "expected 5 fields (minute hour day-of-month month day-of-week), found 6",
        );
        check_err(
            "",
            "expected 5 fields (minute hour day-of-month month day-of-week), found 0",
        );
        check_err("x * * * *", "minute `x` is not a number");
        check_err("* mon * * *", "hour `mon` is not a number");
        check_err(
            "* * * foo *",
            "month `foo` is neither a number nor a name (jan-dec)",
        );
        check_err(
            "* * * * funday",
            "day-of-week `funday` is neither a number nor a name (sun-sat)",
        );
        check_err("*/0 * * * *", "minute step 0 must be at least 1");
        check_err("*/x * * * *", "minute step `x` is not a number");
        check_err(
            "5/15 * * * *",
            "minute `5/15`: a step needs `*` or a range before it",
        );
        check_err("* 5-1 * * *", "hour range 5-1 goes backwards");
        check_err("1,,2 * * * *", "minute `1,,2` has an empty list item");
        check_err(
            "@reboot",
            "unknown macro `@reboot` (use @hourly, @daily, @midnight, @weekly, @monthly, @yearly or @annually)",
        );
    }

    #[test]
    fn search_is_bounded_and_quick_for_sparse_expressions() {
        // One match a year: fifty calls cover fifty years.
        let cron = CronExpr::parse("59 23 31 12 *").unwrap();
        let mut t = at("2026-01-01 00:00");
        for _ in 0..50 {
            t = cron.next_after_local(t).unwrap();
        }
        assert_eq!(t, at("2075-12-31 23:59"));
    }
}
