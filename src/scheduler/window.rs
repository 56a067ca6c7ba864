//! When a schedule may fire: `only_between` windows, `not_on` weekdays, the
//! `timezone` they are read in, jitter, and the one DST rule that turns a local
//! wall time into an instant (see [`resolve_local`] and the header of `expr`).
//!
//! Owns: parsing of windows, weekday names and IANA zone names; the question
//! "is this instant permitted" and "when is the next permitted instant".
//! Must not: read the clock, keep state, or know about triggers (that is `expr`).

use std::fmt;
use std::time::Duration;

use chrono::offset::LocalResult;
use chrono::{
    DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Tz;

/// How many local days ahead [`Gate::first_permitted_from`] looks: a week of
/// `not_on` days plus a window emptied by a DST gap still fits.
const SEARCH_DAYS: u64 = 15;

/// A daily window such as `08:00-18:00` or the overnight `22:00-06:00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start: NaiveTime,
    /// Exclusive; midnight when written as `24:00`.
    end: NaiveTime,
}

impl Window {
    /// Parses `HH:MM-HH:MM` (start inclusive, end exclusive, `24:00` allowed as the end).
    pub fn parse(text: &str) -> Result<Window, String> {
        let Some((a, b)) = text.trim().split_once('-') else {
            return Err("expected HH:MM-HH:MM such as 08:00-18:00".to_string());
        };
        let start = match parse_clock(a.trim())? {
            Clock::Time(t) => t,
            Clock::EndOfDay => {
                return Err("24:00 is only valid as the end of a window".to_string());
            }
        };
        let end = match parse_clock(b.trim())? {
            Clock::Time(t) if t == start => {
                return Err("start and end are equal, so the window would never open".to_string());
            }
            Clock::Time(t) => t,
            Clock::EndOfDay => NaiveTime::MIN,
        };
        Ok(Window { start, end })
    }

    /// Whether the wall-clock time `t` lies inside the window.
    pub fn contains(&self, t: NaiveTime) -> bool {
        if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }

    /// The wall time the window opens.
    pub fn start(&self) -> NaiveTime {
        self.start
    }

    /// The wall time the window closes (exclusive).
    pub fn end(&self) -> NaiveTime {
        self.end
    }

    /// Whether the window runs past midnight into the next day.
    pub fn wraps_midnight(&self) -> bool {
        self.end <= self.start
    }

    /// The real-time span of the window that opens on local day `day`, both
    /// ends resolved by the DST rule.
    fn span(&self, tz: Tz, day: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let open = resolve_local(tz, day.and_time(self.start))?;
        let end_day = if self.wraps_midnight() {
            day.succ_opt()?
        } else {
            day
        };
        let close = resolve_local(tz, end_day.and_time(self.end))?;
        Some((open, close))
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = if self.end == NaiveTime::MIN {
            "24:00".to_string()
        } else {
            self.end.format("%H:%M").to_string()
        };
        write!(f, "{}-{end}", self.start.format("%H:%M"))
    }
}

enum Clock {
    Time(NaiveTime),
    EndOfDay,
}

/// Parses `H:MM` or `HH:MM`; `24:00` is reported separately.
fn parse_clock(text: &str) -> Result<Clock, String> {
    let not_a_time = || format!("`{text}` is not a time of day (expected HH:MM)");
    let (h, m) = text.split_once(':').ok_or_else(not_a_time)?;
    let digits = |s: &str, max_len: usize| {
        !s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(h, 2) || !digits(m, 2) || m.len() != 2 {
        return Err(not_a_time());
    }
    let hour: u32 = h.parse().map_err(|_| not_a_time())?;
    let minute: u32 = m.parse().map_err(|_| not_a_time())?;
    if hour == 24 && minute == 0 {
        return Ok(Clock::EndOfDay);
    }
    if hour > 23 {
        return Err(format!("hour {hour} out of range 0-23"));
    }
    if minute > 59 {
        return Err(format!("minute {minute} out of range 0-59"));
    }
    NaiveTime::from_hms_opt(hour, minute, 0)
        .map(Clock::Time)
        .ok_or_else(not_a_time)
}

/// Parses a weekday name (`sunday`/`sun` … `saturday`/`sat`, any case) or number
/// (0-6, 7 = Sunday) into an index with 0 = Sunday.
pub fn parse_weekday(text: &str) -> Result<usize, String> {
    const NAMES: [&str; 7] = [
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ];
    let s = text.trim().to_ascii_lowercase();
    if let Ok(n) = s.parse::<usize>() {
        if n <= 7 {
            return Ok(n % 7);
        }
    } else if let Some(i) = NAMES.iter().position(|n| *n == s || n[..3] == s) {
        return Ok(i);
    }
    Err(format!(
        "unknown weekday `{}` (use sunday-saturday, sun-sat or 0-7)",
        text.trim()
    ))
}

/// Parses an IANA zone name such as `Australia/Sydney`.
pub fn parse_timezone(text: &str) -> Result<Tz, String> {
    text.trim()
        .parse::<Tz>()
        .map_err(|_| format!("unknown timezone `{}`", text.trim()))
}

/// The wall-clock reading of `t` in `tz`; None at the ends of the calendar,
/// where chrono's own conversion (`naive_local`) would panic.
pub fn wall_time(tz: Tz, t: DateTime<Utc>) -> Option<NaiveDateTime> {
    let offset = tz.offset_from_utc_datetime(&t.naive_utc()).fix();
    t.naive_utc().checked_add_offset(offset)
}

/// The one DST rule: the instant at which local wall time `local` happens in `tz`.
///
/// A wall time inside a spring-forward gap resolves to the first valid instant
/// after the gap (the transition itself); a wall time that occurs twice in a
/// fall-back overlap resolves to its first (earlier) occurrence. None only when
/// the date is outside chrono's range.
pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
        LocalResult::None => gap_end(tz, local),
    }
}

/// The earliest instant whose wall time in `tz` is at or after `local`, found by
/// bisection over whole seconds (transitions happen on whole seconds).
fn gap_end(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let wall = |secs: i64| DateTime::from_timestamp(secs, 0).and_then(|t| wall_time(tz, t));
    // Zone offsets stay well within ±26 hours, so the wall time at `lo` is
    // before `local` and at `hi` after it.
    let base = local.and_utc().timestamp();
    let mut lo = base.checked_sub(26 * 3600)?;
    let mut hi = base.checked_add(26 * 3600)?;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if wall(mid)? >= local {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0)
}

/// `t` moved by a random offset in `[-jitter/2, +jitter/2]` (millisecond steps);
/// `random_below(n)` must return a number in `0..n`.
pub fn jittered(
    t: DateTime<Utc>,
    jitter: Duration,
    random_below: impl FnOnce(u64) -> u64,
) -> DateTime<Utc> {
    // Capped so that the span below cannot overflow; a jitter that large moves
    // `t` off the calendar anyway, and then `t` is kept.
    let half = u64::try_from(jitter.as_millis() / 2)
        .unwrap_or(u64::MAX)
        .min(u64::MAX / 4);
    if half == 0 {
        return t;
    }
    let span = half * 2 + 1;
    let r = random_below(span).min(span - 1);
    let offset = i64::try_from(r).unwrap_or(i64::MAX) - i64::try_from(half).unwrap_or(i64::MAX);
    t.checked_add_signed(TimeDelta::milliseconds(offset))
        .unwrap_or(t)
}

/// The time constraints of one schedule, read in its zone.
#[derive(Debug, Clone, Copy)]
pub struct Gate<'a> {
    /// Zone in which windows and weekdays are read.
    pub tz: Tz,
    /// `only_between`, if set.
    pub window: Option<&'a Window>,
    /// `not_on`, index 0 = Sunday.
    pub not_on: &'a [bool; 7],
}

impl Gate<'_> {
    /// The local calendar day `t` belongs to: the day D with
    /// `resolve(D 00:00) <= t < resolve(D+1 00:00)`.
    pub fn local_day(&self, t: DateTime<Utc>) -> Option<NaiveDate> {
        let d = wall_time(self.tz, t)?.date();
        if t < resolve_local(self.tz, d.and_time(NaiveTime::MIN))? {
            return d.pred_opt();
        }
        let next = d.succ_opt()?;
        if t >= resolve_local(self.tz, next.and_time(NaiveTime::MIN))? {
            return Some(next);
        }
        Some(d)
    }

    /// Whether `t` falls on an allowed weekday and inside the window.
    ///
    /// The window is the real-time span from its resolved start to its resolved
    /// end, so it opens once per day even when its wall times repeat in a
    /// fall-back overlap; `not_on` is checked against the day `t` belongs to.
    pub fn permits(&self, t: DateTime<Utc>) -> bool {
        let Some(day) = self.local_day(t) else {
            return false;
        };
        if self.not_on[day.weekday().num_days_from_sunday() as usize] {
            return false;
        }
        let Some(window) = self.window else {
            return true;
        };
        [day.pred_opt(), Some(day)]
            .into_iter()
            .flatten()
            .filter_map(|d| window.span(self.tz, d))
            .any(|(open, close)| open <= t && t < close)
    }

    /// The first permitted instant at or after `t`, jumping between window
    /// openings and day starts; None if nothing within fifteen days is permitted.
    pub fn first_permitted_from(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.permits(t) {
            return Some(t);
        }
        // Permission only ever begins where a window opens or a day starts.
        let first_day = self.local_day(t)?;
        let mut candidates = Vec::new();
        for day in first_day.iter_days().take(SEARCH_DAYS as usize) {
            candidates.extend(resolve_local(self.tz, day.and_time(NaiveTime::MIN)));
            if let Some(window) = self.window {
                candidates.extend(resolve_local(self.tz, day.and_time(window.start)));
            }
        }
        candidates.sort();
        candidates.into_iter().find(|&c| c > t && self.permits(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        crate::clock::parse_ts(s).unwrap()
    }

    fn hm(s: &str) -> NaiveTime {
        NaiveTime::parse_from_str(s, "%H:%M").unwrap()
    }

    fn local(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    fn tz(name: &str) -> Tz {
        parse_timezone(name).unwrap()
    }

    #[test]
    fn window_contains() {
        let check = |w: &str, t: &str, inside: bool| {
            assert_eq!(Window::parse(w).unwrap().contains(hm(t)), inside, "{w} {t}");
        };
        check("08:00-18:00", "08:00", true);
        check("08:00-18:00", "17:59", true);
        check("08:00-18:00", "18:00", false);
        check("08:00-18:00", "07:59", false);
        check("22:00-06:00", "22:00", true);
        check("22:00-06:00", "23:59", true);
        check("22:00-06:00", "00:00", true);
        check("22:00-06:00", "05:59", true);
        check("22:00-06:00", "06:00", false);
        check("22:00-06:00", "12:00", false);
        check("8:30-9:45", "09:00", true);
        check("18:00-24:00", "23:59", true);
        check("18:00-24:00", "00:00", false);
        check("00:00-24:00", "12:00", true);
    }

    #[test]
    fn window_display_round_trips() {
        for text in ["08:00-18:00", "22:00-06:00", "18:00-24:00", "00:00-24:00"] {
            let w = Window::parse(text).unwrap();
            assert_eq!(w.to_string(), text);
            assert_eq!(Window::parse(&w.to_string()).unwrap(), w);
        }
        assert_eq!(
            Window::parse(" 8:05 - 9:00 ").unwrap().to_string(),
            "08:05-09:00"
        );
        assert!(Window::parse("22:00-06:00").unwrap().wraps_midnight());
        assert!(!Window::parse("08:00-18:00").unwrap().wraps_midnight());
    }

    #[test]
    fn window_errors() {
        let check = |w: &str, message: &str| {
            assert_eq!(Window::parse(w).unwrap_err(), message, "{w}");
        };
        check("08:00", "expected HH:MM-HH:MM such as 08:00-18:00");
        check(
            "08:00-08:00",
            "start and end are equal, so the window would never open",
        );
        check("25:00-06:00", "hour 25 out of range 0-23");
        check("08:75-09:00", "minute 75 out of range 0-59");
        check("8h-9h", "`8h` is not a time of day (expected HH:MM)");
        check("08:0-09:00", "`08:0` is not a time of day (expected HH:MM)");
        check("24:00-06:00", "24:00 is only valid as the end of a window");
    }

    #[test]
    fn weekdays() {
        let check = |text: &str, index: usize| {
            assert_eq!(parse_weekday(text).unwrap(), index, "{text}");
        };
        check("sunday", 0);
        check("Sun", 0);
        check("0", 0);
        check("7", 0);
        check("MONDAY", 1);
        check("tue", 2);
        check("wednesday", 3);
        check("thu", 4);
        check("5", 5);
        check("saturday", 6);
        check("sat", 6);
        assert_eq!(
            parse_weekday("funday").unwrap_err(),
            "unknown weekday `funday` (use sunday-saturday, sun-sat or 0-7)"
        );
        assert_eq!(
            parse_weekday("8").unwrap_err(),
            "unknown weekday `8` (use sunday-saturday, sun-sat or 0-7)"
        );
        assert!(parse_weekday("su").is_err());
    }

    #[test]
    fn timezones() {
        assert_eq!(
            parse_timezone("Australia/Sydney").unwrap(),
            Tz::Australia__Sydney
        );
        assert_eq!(parse_timezone("UTC").unwrap(), Tz::UTC);
        assert_eq!(
            parse_timezone("Mars/Base").unwrap_err(),
            "unknown timezone `Mars/Base`"
        );
    }

    #[test]
    fn dst_rule_for_gaps_and_overlaps() {
        let check = |zone: &str, wall: &str, instant: &str| {
            assert_eq!(
                resolve_local(tz(zone), local(wall)),
                Some(utc(instant)),
                "{zone} {wall}"
            );
        };
        // Ordinary times.
        check(
            "Australia/Sydney",
            "2026-07-01 09:00",
            "2026-06-30T23:00:00Z",
        );
        check(
            "America/New_York",
            "2026-07-01 09:00",
            "2026-07-01T13:00:00Z",
        );
        // Spring forward: 02:00-03:00 does not exist; fire at the end of the gap.
        check(
            "Australia/Sydney",
            "2026-10-04 02:30",
            "2026-10-03T16:00:00Z",
        );
        check(
            "Australia/Sydney",
            "2026-10-04 02:00",
            "2026-10-03T16:00:00Z",
        );
        check(
            "Australia/Sydney",
            "2026-10-04 03:00",
            "2026-10-03T16:00:00Z",
        );
        check(
            "America/New_York",
            "2026-03-08 02:30",
            "2026-03-08T07:00:00Z",
        );
        // Fall back: the repeated hour resolves to its first occurrence.
        check(
            "Australia/Sydney",
            "2026-04-05 02:30",
            "2026-04-04T15:30:00Z",
        );
        check(
            "America/New_York",
            "2026-11-01 01:30",
            "2026-11-01T05:30:00Z",
        );
        check(
            "America/New_York",
            "2026-11-01 02:30",
            "2026-11-01T07:30:00Z",
        );
    }

    #[test]
    fn jitter_stays_within_half_either_side() {
        let t = utc("2026-03-01T10:00:00Z");
        let j = Duration::from_secs(30);
        assert_eq!(jittered(t, j, |_| 0), utc("2026-03-01T09:59:45Z"));
        assert_eq!(jittered(t, j, |n| n - 1), utc("2026-03-01T10:00:15Z"));
        assert_eq!(jittered(t, j, |n| n / 2), t);
        // A misbehaving source is clamped rather than trusted.
        assert_eq!(jittered(t, j, |_| u64::MAX), utc("2026-03-01T10:00:15Z"));
        let mut asked = 0;
        jittered(t, j, |n| {
            asked = n;
            0
        });
        assert_eq!(asked, 30_001);
        assert_eq!(jittered(t, Duration::ZERO, |_| panic!("not called")), t);
        // Jitters too large for the calendar never panic; they leave `t` alone.
        for huge in [Duration::MAX, Duration::from_secs(20_000_000_000_000_000)] {
            assert_eq!(jittered(t, huge, |_| 0), t, "{huge:?}");
            assert_eq!(jittered(t, huge, |n| n - 1), t, "{huge:?}");
        }
        // One that still fits moves `t` by at most half of it.
        let vast = Duration::from_secs(100_000_000 * 86_400);
        let early = jittered(t, vast, |_| 0);
        assert_eq!(t - early, TimeDelta::days(50_000_000));
        for _ in 0..200 {
            let got = jittered(t, j, crate::clock::random_below);
            assert!((got - t).num_milliseconds().abs() <= 15_000, "{got}");
        }
    }

    fn gate<'a>(zone: &str, window: Option<&'a Window>, not_on: &'a [bool; 7]) -> Gate<'a> {
        Gate {
            tz: tz(zone),
            window,
            not_on,
        }
    }

    const WEEKEND: [bool; 7] = [true, false, false, false, false, false, true];
    const ANY_DAY: [bool; 7] = [false; 7];

    #[test]
    fn permits_reads_window_and_weekday_in_the_zone() {
        let w = Window::parse("08:00-18:00").unwrap();
        let g = gate("Australia/Sydney", Some(&w), &WEEKEND);
        let check = |t: &str, ok: bool| assert_eq!(g.permits(utc(t)), ok, "{t}");
        // Monday 2026-03-02 in Sydney (UTC+11).
        check("2026-03-01T21:00:00Z", true); // Mon 08:00
        check("2026-03-01T20:59:59Z", false); // Mon 07:59:59
        check("2026-03-02T06:59:59Z", true); // Mon 17:59:59
        check("2026-03-02T07:00:00Z", false); // Mon 18:00
        check("2026-03-06T23:00:00Z", false); // Sat 10:00
        check("2026-03-07T23:00:00Z", false); // Sun 10:00
        check("2026-03-08T23:00:00Z", true); // Mon 10:00
    }

    #[test]
    fn overnight_window_crosses_midnight() {
        let w = Window::parse("22:00-06:00").unwrap();
        let g = gate("UTC", Some(&w), &ANY_DAY);
        let check = |t: &str, ok: bool| assert_eq!(g.permits(utc(t)), ok, "{t}");
        check("2026-03-02T21:59:00Z", false);
        check("2026-03-02T22:00:00Z", true);
        check("2026-03-02T23:59:00Z", true);
        check("2026-03-03T00:00:00Z", true);
        check("2026-03-03T05:59:59Z", true);
        check("2026-03-03T06:00:00Z", false);
        let from = |t: &str| g.first_permitted_from(utc(t)).unwrap();
        assert_eq!(from("2026-03-03T06:00:00Z"), utc("2026-03-03T22:00:00Z"));
        assert_eq!(from("2026-03-03T23:00:00Z"), utc("2026-03-03T23:00:00Z"));
    }

    #[test]
    fn not_on_uses_the_day_of_the_instant() {
        // Saturday excluded: Friday night runs until midnight, Saturday night does
        // not, and the window resumes at Sunday 00:00.
        let w = Window::parse("22:00-06:00").unwrap();
        let mut sat = [false; 7];
        sat[6] = true;
        let g = gate("UTC", Some(&w), &sat);
        assert!(g.permits(utc("2026-03-06T23:00:00Z")));
        assert!(!g.permits(utc("2026-03-07T01:00:00Z")));
        assert!(!g.permits(utc("2026-03-07T23:00:00Z")));
        assert!(g.permits(utc("2026-03-08T00:00:00Z")));
        assert_eq!(
            g.first_permitted_from(utc("2026-03-07T01:00:00Z")),
            Some(utc("2026-03-08T00:00:00Z"))
        );
    }

    #[test]
    fn first_permitted_jumps_to_window_start_on_an_allowed_day() {
        let w = Window::parse("08:00-18:00").unwrap();
        let g = gate("America/New_York", Some(&w), &WEEKEND);
        let check = |from: &str, expected: &str| {
            assert_eq!(
                g.first_permitted_from(utc(from)),
                Some(utc(expected)),
                "{from}"
            );
        };
        // Friday 2026-03-06 18:30 EST → Monday 08:00 EDT (DST began Sunday).
        check("2026-03-06T23:30:00Z", "2026-03-09T12:00:00Z");
        // Already permitted: unchanged.
        check("2026-03-09T15:00:00Z", "2026-03-09T15:00:00Z");
        // Early Tuesday → Tuesday 08:00.
        check("2026-03-10T05:00:00Z", "2026-03-10T12:00:00Z");
        // No window, weekend excluded → Monday 00:00 local.
        let g = gate("America/New_York", None, &WEEKEND);
        assert_eq!(
            g.first_permitted_from(utc("2026-03-07T12:00:00Z")),
            Some(utc("2026-03-09T04:00:00Z"))
        );
    }

    #[test]
    fn window_boundaries_follow_the_dst_rule() {
        // NY spring forward: a window opening at 02:30 opens at 03:00 EDT.
        let w = Window::parse("02:30-04:00").unwrap();
        let g = gate("America/New_York", Some(&w), &ANY_DAY);
        assert_eq!(
            g.first_permitted_from(utc("2026-03-08T05:00:00Z")),
            Some(utc("2026-03-08T07:00:00Z"))
        );
        // A window entirely inside the gap is empty that day.
        let w = Window::parse("02:00-02:45").unwrap();
        let g = gate("America/New_York", Some(&w), &ANY_DAY);
        assert_eq!(
            g.first_permitted_from(utc("2026-03-08T05:00:00Z")),
            Some(utc("2026-03-09T06:00:00Z"))
        );
        // NY fall back: 01:00-01:30 is open during its first occurrence only.
        let w = Window::parse("01:00-01:30").unwrap();
        let g = gate("America/New_York", Some(&w), &ANY_DAY);
        assert!(g.permits(utc("2026-11-01T05:10:00Z")));
        assert!(!g.permits(utc("2026-11-01T06:10:00Z")));
    }

    #[test]
    fn local_day_follows_the_zone() {
        let g = gate("Australia/Sydney", None, &ANY_DAY);
        assert_eq!(
            g.local_day(utc("2026-03-01T13:00:00Z")),
            NaiveDate::from_ymd_opt(2026, 3, 2)
        );
        assert_eq!(
            g.local_day(utc("2026-03-01T12:59:59Z")),
            NaiveDate::from_ymd_opt(2026, 3, 1)
        );
    }
}
