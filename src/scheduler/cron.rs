//! Standard 5-field cron expressions (`min hour dom month dow`), evaluated on
//! local wall-clock time.
//!
//! Owns: parsing (numbers, `*`, ranges, steps, lists, month and weekday names,
//! `@` macros) and finding the next matching local minute. Day matching follows
//! Vixie cron: when both day-of-month and day-of-week are restricted a day
//! matches if EITHER does; a field that begins with `*` (including `*/2`) counts
//! as unrestricted for that rule, as it does in Vixie cron and cronie.
//! Must not: know about time zones, DST or UTC instants (that is `expr` and
//! `window`), read the clock, or use the Quartz-flavoured `cron` crate
//! (seconds field, 1 = Sunday, AND of the day fields).

use std::fmt;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Timelike};

/// How many years past the start `next_after_local` searches before giving up;
/// long enough for Feb 29 across a skipped leap year (2096 → 2104).
const SEARCH_YEARS: i32 = 8;

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
        Ok(CronExpr {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays,
            day_or: !fields[2].starts_with('*') && !fields[4].starts_with('*'),
            text: collapsed,
        })
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

    /// Whether the local calendar day `d` matches the day-of-month, month and day-of-week fields.
    pub fn matches_day(&self, d: NaiveDate) -> bool {
        if self.months & (1 << d.month()) == 0 {
            return false;
        }
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().num_days_from_sunday()) != 0;
        if self.day_or { dom || dow } else { dom && dow }
    }

    /// The first matching local minute strictly after `t`, or None if there is none
    /// within eight years (such as `0 0 30 2 *`).
    pub fn next_after_local(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        let start = t
            .date()
            .and_hms_opt(t.hour(), t.minute(), 0)?
            .checked_add_signed(Duration::minutes(1))?;
        let last_year = start.year() + SEARCH_YEARS;
        let mut date = start.date();
        let mut hour = start.hour();
        let mut minute = start.minute();
        // Each pass moves forward by at least one month, day, hour or minute
        // field value, so the loop jumps field by field instead of minute by minute.
        loop {
            if date.year() > last_year {
                return None;
            }
            if self.months & (1 << date.month()) == 0 {
                date = self.next_month_start(date)?;
                hour = 0;
                minute = 0;
                continue;
            }
            if !self.matches_day(date) {
                date = date.succ_opt()?;
                hour = 0;
                minute = 0;
                continue;
            }
            match next_bit(u64::from(self.hours), hour, 23) {
                None => {
                    date = date.succ_opt()?;
                    hour = 0;
                    minute = 0;
                    continue;
                }
                Some(h) if h != hour => {
                    hour = h;
                    minute = 0;
                }
                Some(_) => {}
            }
            match next_bit(self.minutes, minute, 59) {
                Some(m) => return date.and_hms_opt(hour, m, 0),
                None if hour >= 23 => {
                    date = date.succ_opt()?;
                    hour = 0;
                    minute = 0;
                }
                None => {
                    hour += 1;
                    minute = 0;
                }
            }
        }
    }

    /// The first day of the next allowed month after the month of `date`.
    fn next_month_start(&self, date: NaiveDate) -> Option<NaiveDate> {
        let mut year = date.year();
        let mut month = date.month();
        // At most 12 steps: every valid expression allows at least one month.
        for _ in 0..12 {
            if month == 12 {
                year += 1;
                month = 1;
            } else {
                month += 1;
            }
            if self.months & (1 << month) != 0 {
                return NaiveDate::from_ymd_opt(year, month, 1);
            }
        }
        None
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The smallest set bit at or above `from` and at most `max`.
fn next_bit(bits: u64, from: u32, max: u32) -> Option<u32> {
    (from..=max).find(|&n| bits & (1 << n) != 0)
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
        let t = at("2026-03-01 10:00") + Duration::seconds(30);
        assert_eq!(cron.next_after_local(t), Some(at("2026-03-02 10:00")));
        let t = at("2026-03-01 09:59") + Duration::seconds(59);
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
