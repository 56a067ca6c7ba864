//! Compiled schedules ([`Schedule`], built by `scheduler::compile`) and the
//! pure time logic of when they are due: `every`, `cron`, `at` and `after`
//! triggers, catch-up enumeration, jitter, and the gate of `only_between` /
//! `not_on` / `timezone`.
//!
//! Owns: `next_after`, `first_due`, `due_between`, re-anchoring across a clock
//! step, and the search that finds rare cron matches.
//! Must not: read the clock (every function takes instants), sleep, spawn
//! threads, or touch the database; the heartbeat thread in `scheduler` does that.
//!
//! # The one DST rule
//!
//! Cron fields, `only_between` windows and `not_on` days are read on the wall
//! clock of the schedule's `timezone` (UTC when unset). A wall time is turned
//! into an instant by one rule, shared by cron and windows
//! ([`crate::scheduler::window::resolve_local`]):
//! - a wall time that does not exist (spring-forward gap) happens once, at the
//!   first valid instant after the gap: Australia/Sydney 2026-10-04 02:30 fires
//!   at 03:00 local (2026-10-03T16:00Z); several cron times inside one gap
//!   collapse into that single instant;
//! - a wall time that occurs twice (fall-back overlap) happens once, at its
//!   FIRST occurrence (the earlier UTC instant); the repeat is not fired again.
//!
//! A window is the real-time span from its resolved start to its resolved end,
//! so it opens once a day; a day is the span between two resolved midnights.
//! `every` intervals are plain elapsed time and ignore DST.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use crate::clock::format_ts;
use crate::config::duration;
use crate::scheduler::cron::CronExpr;
use crate::scheduler::window::{self, Gate, Window};

/// A validated schedule entry, ready for the heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Plugin instance the schedule belongs to.
    pub plugin: String,
    /// Schedule id, unique within the plugin.
    pub id: String,
    /// Command to enqueue.
    pub command: String,
    /// Payload of the enqueued job.
    pub payload: serde_json::Value,
    /// What makes the schedule due.
    pub trigger: Trigger,
    /// Total jitter span; each run moves by up to half of it either way.
    pub jitter: Duration,
    /// `only_between`, if set.
    pub window: Option<Window>,
    /// Zone for cron, window and weekday evaluation.
    pub tz: Tz,
    /// Days never to fire on, index 0 = Sunday.
    pub not_on: [bool; 7],
    /// What to do about runs missed while the daemon was down.
    pub catch_up: CatchUp,
    /// What to do when the previous run is still in flight.
    pub if_running: IfRunning,
    /// First 16 hex chars of the BLAKE3 hash of the normalized definition.
    pub fingerprint: String,
}

/// What makes a schedule due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Repeats every interval after the previous run.
    Every(Duration),
    /// A 5-field cron expression in the schedule's zone.
    Cron(CronExpr),
    /// Once, at an instant.
    At(DateTime<Utc>),
    /// Once, this long after the service started.
    After(Duration),
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Every(d) => write!(f, "every {}", duration::format(*d)),
            Trigger::Cron(expr) => write!(f, "cron {expr}"),
            Trigger::At(t) => write!(f, "at {}", format_ts(*t)),
            Trigger::After(d) => write!(f, "after {}", duration::format(*d)),
        }
    }
}

/// Policy for runs missed while the daemon was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Ignore missed runs (default).
    Skip,
    /// One run if any were missed.
    RunOnce,
    /// One run per missed occurrence, bounded.
    RunAll,
}

impl CatchUp {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Skip => "skip",
            CatchUp::RunOnce => "run_once",
            CatchUp::RunAll => "run_all",
        }
    }
}

/// Policy when the previous run is still queued or running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfRunning {
    /// Do not enqueue (default).
    Skip,
    /// Enqueue anyway.
    Queue,
    /// Cancel the outstanding run, then enqueue.
    Cancel,
}

impl IfRunning {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            IfRunning::Skip => "skip",
            IfRunning::Queue => "queue",
            IfRunning::Cancel => "cancel",
        }
    }
}

/// Days in one Gregorian cycle (400 years, a whole number of weeks). Cron
/// fields, windows and weekdays all repeat with it, so a cron schedule with no
/// permitted instant in one cycle has none at all.
const CYCLE_DAYS: i64 = 146_097;

impl Schedule {
    fn gate(&self) -> Gate<'_> {
        Gate {
            tz: self.tz,
            window: self.window.as_ref(),
            not_on: &self.not_on,
        }
    }

    /// The first instant strictly after `after` at which this schedule is due.
    ///
    /// Honours window, `not_on` and timezone: an `every` or one-shot instant the
    /// gate refuses moves to the next permitted instant, a refused cron time is
    /// skipped. `started_at` anchors `after:` one-shots. None when a one-shot is
    /// already at or before `after`, or nothing is due before the end of time.
    pub fn next_after(
        &self,
        after: DateTime<Utc>,
        started_at: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        match &self.trigger {
            Trigger::Every(interval) => {
                let t = after.checked_add_signed(TimeDelta::from_std(*interval).ok()?)?;
                self.gate().first_permitted_from(t)
            }
            Trigger::Cron(expr) => self.next_cron(expr, after),
            Trigger::At(_) | Trigger::After(_) => {
                let due = self.one_shot_due(started_at)?;
                (due > after).then_some(due)
            }
        }
    }

    /// When a schedule armed at `now` is first due: its next occurrence after
    /// `now`, or a one-shot's instant when that is not before `now` (so
    /// `after: 0s`, armed at the service start, is due at once).
    pub fn first_due(
        &self,
        now: DateTime<Utc>,
        started_at: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        match &self.trigger {
            Trigger::Every(_) | Trigger::Cron(_) => self.next_after(now, started_at),
            Trigger::At(_) | Trigger::After(_) => {
                self.one_shot_due(started_at).filter(|due| *due >= now)
            }
        }
    }

    /// Due instants in (from, to], in order, at most the first `cap`.
    ///
    /// Used for catch-up of `every` and `cron` schedules: `every` yields
    /// `from + k·interval` for k = 1, 2, … and drops occurrences the gate refuses.
    pub fn due_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        started_at: DateTime<Utc>,
        cap: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut due = Vec::new();
        if cap == 0 || to <= from {
            return due;
        }
        match &self.trigger {
            Trigger::Every(interval) => self.every_between(*interval, from, to, cap, &mut due),
            Trigger::Cron(expr) => {
                let mut cursor = from;
                while due.len() < cap {
                    match self.next_cron(expr, cursor) {
                        Some(t) if t <= to => {
                            due.push(t);
                            cursor = t;
                        }
                        _ => break,
                    }
                }
            }
            Trigger::At(_) | Trigger::After(_) => {
                if let Some(t) = self.one_shot_due(started_at) {
                    if from < t && t <= to {
                        due.push(t);
                    }
                }
            }
        }
        due
    }

    /// An occurrence carried across a step of the wall clock by `delta`, so that
    /// it stays the same elapsed time away, then moved to the first instant the
    /// gate permits.
    pub fn reanchored(&self, due: DateTime<Utc>, delta: TimeDelta) -> Option<DateTime<Utc>> {
        self.gate()
            .first_permitted_from(crate::clock::shift_saturating(due, delta))
    }

    /// Whether an instant passes `only_between` and `not_on`, read in the schedule's timezone.
    pub fn permits(&self, t: DateTime<Utc>) -> bool {
        self.gate().permits(t)
    }

    /// `t` shifted by a random offset in [-jitter/2, +jitter/2]; identity when jitter is zero.
    ///
    /// Pass `crate::clock::random_below`; tests pass a fake.
    pub fn jittered(
        &self,
        t: DateTime<Utc>,
        random_below: impl FnOnce(u64) -> u64,
    ) -> DateTime<Utc> {
        window::jittered(t, self.jitter, random_below)
    }

    /// Whether this is a one-shot (`at`/`after`) that becomes `exhausted` after firing.
    pub fn is_one_shot(&self) -> bool {
        matches!(self.trigger, Trigger::At(_) | Trigger::After(_))
    }

    /// When a one-shot fires: its instant, or the first permitted instant after it.
    fn one_shot_due(&self, started_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let instant = match &self.trigger {
            Trigger::At(t) => *t,
            Trigger::After(d) => started_at.checked_add_signed(TimeDelta::from_std(*d).ok()?)?,
            Trigger::Every(_) | Trigger::Cron(_) => return None,
        };
        self.gate().first_permitted_from(instant)
    }

    /// The first permitted cron instant after `after`. A cron time the gate
    /// refuses is skipped, not delayed; the search jumps to the next permitted
    /// span instead of walking every refused match.
    fn next_cron(&self, expr: &CronExpr, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let gate = self.gate();
        let horizon = after
            .checked_add_signed(TimeDelta::days(CYCLE_DAYS + 1))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut cursor = after;
        loop {
            let t = cron_instant_after(expr, self.tz, cursor)?;
            if t > horizon {
                return None;
            }
            if gate.permits(t) {
                return Some(t);
            }
            let open = gate.first_permitted_from(t)?;
            cursor = open.checked_sub_signed(TimeDelta::nanoseconds(1))?;
        }
    }

    /// Occurrences `from + k·interval` in (from, to] that the gate permits.
    fn every_between(
        &self,
        interval: Duration,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        cap: usize,
        due: &mut Vec<DateTime<Utc>>,
    ) {
        let step = i128::try_from(interval.as_nanos()).unwrap_or(i128::MAX);
        if step == 0 {
            return;
        }
        let gate = self.gate();
        let mut k: i128 = 1;
        while due.len() < cap {
            let Some(t) = k
                .checked_mul(step)
                .and_then(delta_from_nanos)
                .and_then(|d| from.checked_add_signed(d))
            else {
                break;
            };
            if t > to {
                break;
            }
            if gate.permits(t) {
                due.push(t);
                k += 1;
                continue;
            }
            // Jump to the first occurrence at or after the next permitted instant
            // rather than testing each refused occurrence.
            let Some(open) = gate.first_permitted_from(t) else {
                break;
            };
            if open > to {
                break;
            }
            let offset = nanos_between(from, open);
            k = ((offset + step - 1) / step).max(k + 1);
        }
    }
}

/// The first instant after `after` at which a cron minute happens under the DST rule.
pub(crate) fn cron_instant_after(
    expr: &CronExpr,
    tz: Tz,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut local = window::wall_time(tz, after)?;
    // Only minutes of a repeated fall-back hour resolve to or before `after`
    // (they already fired at their first occurrence); at most an hour of them.
    loop {
        local = expr.next_after_local(local)?;
        let t = window::resolve_local(tz, local)?;
        if t > after {
            return Some(t);
        }
    }
}

fn nanos_between(a: DateTime<Utc>, b: DateTime<Utc>) -> i128 {
    let d = b - a;
    i128::from(d.num_seconds()) * 1_000_000_000 + i128::from(d.subsec_nanos())
}

fn delta_from_nanos(n: i128) -> Option<TimeDelta> {
    let secs = i64::try_from(n.div_euclid(1_000_000_000)).ok()?;
    let nanos = u32::try_from(n.rem_euclid(1_000_000_000)).ok()?;
    TimeDelta::new(secs, nanos)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock, parse_ts};
    use crate::config::ScheduleConf;
    use crate::scheduler::compile::compile;

    pub(crate) fn utc(s: &str) -> DateTime<Utc> {
        parse_ts(s).unwrap()
    }

    pub(crate) fn conf() -> ScheduleConf {
        ScheduleConf {
            id: "default".to_string(),
            command: "poll".to_string(),
            payload: serde_json::json!({}),
            origin: "plugins.echo.schedules[0]".to_string(),
            ..ScheduleConf::default()
        }
    }

    pub(crate) fn every(text: &str) -> ScheduleConf {
        ScheduleConf {
            every: Some(text.to_string()),
            ..conf()
        }
    }

    pub(crate) fn cron(text: &str) -> ScheduleConf {
        ScheduleConf {
            cron: Some(text.to_string()),
            ..conf()
        }
    }

    pub(crate) fn build(c: &ScheduleConf) -> Schedule {
        compile("echo", c).unwrap()
    }

    pub(crate) fn fmt_all(ts: &[DateTime<Utc>]) -> Vec<String> {
        ts.iter()
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .collect()
    }

    /// `next_after` from `after` (started at `after` too) is `expected`.
    pub(crate) fn check_next(c: &ScheduleConf, after: &str, expected: Option<&str>) {
        let s = build(c);
        let t = utc(after);
        assert_eq!(s.next_after(t, t), expected.map(utc), "{c:?} after {after}");
    }

    /// `due_between(from, to]` with a generous cap is exactly `expected`.
    pub(crate) fn check_due(c: &ScheduleConf, from: &str, to: &str, expected: &[&str]) {
        let s = build(c);
        let got = s.due_between(utc(from), utc(to), utc(from), 1000);
        assert_eq!(fmt_all(&got), expected, "{c:?} in ({from}, {to}]");
    }

    pub(crate) fn check_err(c: &ScheduleConf, message: &str) {
        assert_eq!(compile("echo", c).unwrap_err().to_string(), message);
    }

    #[test]
    fn every_next_after_adds_the_interval() {
        check_next(
            &every("5m"),
            "2026-03-02T10:00:00Z",
            Some("2026-03-02T10:05:00Z"),
        );
        check_next(
            &every("hourly"),
            "2026-03-02T23:30:00Z",
            Some("2026-03-03T00:30:00Z"),
        );
        check_next(
            &every("2s"),
            "2026-03-02T10:00:00Z",
            Some("2026-03-02T10:00:02Z"),
        );
    }

    #[test]
    fn every_with_a_window_crossing_midnight() {
        let c = ScheduleConf {
            only_between: Some("22:00-06:00".to_string()),
            ..every("1h")
        };
        // Inside the window: plain interval, across midnight.
        check_next(&c, "2026-03-02T23:30:00Z", Some("2026-03-03T00:30:00Z"));
        check_next(&c, "2026-03-03T04:30:00Z", Some("2026-03-03T05:30:00Z"));
        // Leaving the window: wait for tonight's 22:00.
        check_next(&c, "2026-03-03T05:30:00Z", Some("2026-03-03T22:00:00Z"));
        check_due(
            &c,
            "2026-03-02T20:00:00Z",
            "2026-03-03T08:00:00Z",
            &[
                "2026-03-02T22:00:00Z",
                "2026-03-02T23:00:00Z",
                "2026-03-03T00:00:00Z",
                "2026-03-03T01:00:00Z",
                "2026-03-03T02:00:00Z",
                "2026-03-03T03:00:00Z",
                "2026-03-03T04:00:00Z",
                "2026-03-03T05:00:00Z",
            ],
        );
    }

    #[test]
    fn every_with_a_window_in_a_timezone() {
        let c = ScheduleConf {
            only_between: Some("08:00-18:00".to_string()),
            timezone: Some("Australia/Sydney".to_string()),
            ..every("4h")
        };
        // 2026-03-02 Sydney is UTC+11: 18:00 local is 07:00Z.
        check_next(&c, "2026-03-02T04:00:00Z", Some("2026-03-02T21:00:00Z"));
        check_next(&c, "2026-03-01T21:00:00Z", Some("2026-03-02T01:00:00Z"));
    }

    #[test]
    fn not_on_skips_the_weekend() {
        let c = ScheduleConf {
            not_on: vec!["saturday".to_string(), "0".to_string()],
            ..every("daily")
        };
        // Friday 2026-03-06 10:00 → Saturday and Sunday refused → Monday 00:00.
        check_next(&c, "2026-03-06T10:00:00Z", Some("2026-03-09T00:00:00Z"));
        check_due(
            &c,
            "2026-03-05T10:00:00Z",
            "2026-03-11T10:00:00Z",
            &[
                "2026-03-06T10:00:00Z",
                "2026-03-09T10:00:00Z",
                "2026-03-10T10:00:00Z",
                "2026-03-11T10:00:00Z",
            ],
        );
        let with_names = ScheduleConf {
            not_on: vec!["Sat".to_string(), "SUNDAY".to_string()],
            ..every("daily")
        };
        assert_eq!(build(&c).not_on, build(&with_names).not_on);
        let seven = ScheduleConf {
            not_on: vec!["6".to_string(), "7".to_string()],
            ..every("daily")
        };
        assert_eq!(
            build(&seven).not_on,
            [true, false, false, false, false, false, true]
        );
    }

    #[test]
    fn every_due_between_enumerates_the_grid() {
        check_due(
            &every("15m"),
            "2026-03-02T10:00:00Z",
            "2026-03-02T11:00:00Z",
            &[
                "2026-03-02T10:15:00Z",
                "2026-03-02T10:30:00Z",
                "2026-03-02T10:45:00Z",
                "2026-03-02T11:00:00Z",
            ],
        );
        check_due(
            &every("15m"),
            "2026-03-02T10:00:00Z",
            "2026-03-02T10:14:59Z",
            &[],
        );
        check_due(
            &every("15m"),
            "2026-03-02T10:00:00Z",
            "2026-03-02T10:00:00Z",
            &[],
        );
        // Refused occurrences are not due, even when the window opens between them.
        let c = ScheduleConf {
            only_between: Some("10:20-10:50".to_string()),
            ..every("15m")
        };
        check_due(
            &c,
            "2026-03-02T10:00:00Z",
            "2026-03-02T12:00:00Z",
            &["2026-03-02T10:30:00Z", "2026-03-02T10:45:00Z"],
        );
    }

    #[test]
    fn due_between_stops_at_the_cap() {
        let s = build(&every("1m"));
        let from = utc("2026-03-02T00:00:00Z");
        let to = utc("2026-03-09T00:00:00Z");
        let due = s.due_between(from, to, from, 100);
        assert_eq!(due.len(), 100);
        assert_eq!(due[0], utc("2026-03-02T00:01:00Z"));
        assert_eq!(due[99], utc("2026-03-02T01:40:00Z"));
        assert!(s.due_between(from, to, from, 0).is_empty());
        let s = build(&cron("*/5 * * * *"));
        let due = s.due_between(from, to, from, 3);
        assert_eq!(
            fmt_all(&due),
            [
                "2026-03-02T00:05:00Z",
                "2026-03-02T00:10:00Z",
                "2026-03-02T00:15:00Z"
            ]
        );
    }

    #[test]
    fn long_gaps_jump_instead_of_walking() {
        // Ten years of one-second occurrences, open ten minutes a week.
        let c = ScheduleConf {
            only_between: Some("09:00-09:10".to_string()),
            not_on: ["sun", "mon", "tue", "wed", "thu", "fri"]
                .map(str::to_string)
                .to_vec(),
            ..every("1s")
        };
        let s = build(&c);
        let from = utc("2016-01-01T00:00:00Z");
        let to = utc("2026-01-01T00:00:00Z");
        let due = s.due_between(from, to, from, 3);
        assert_eq!(
            fmt_all(&due),
            [
                "2016-01-02T09:00:00Z",
                "2016-01-02T09:00:01Z",
                "2016-01-02T09:00:02Z"
            ]
        );
        // A cron that the window always refuses is refused at load.
        check_err(
            &ScheduleConf {
                only_between: Some("08:00-18:00".to_string()),
                ..cron("* 3 * * *")
            },
            "plugins.echo.schedules[0]: cron `* 3 * * *` never fires: none of its times falls inside only_between `08:00-18:00`",
        );
        check_err(
            &ScheduleConf {
                only_between: Some("08:00-18:00".to_string()),
                timezone: Some("Europe/Berlin".to_string()),
                ..cron("0 3 * * *")
            },
            "plugins.echo.schedules[0]: cron `0 3 * * *` never fires: none of its times falls inside only_between `08:00-18:00`",
        );
        // A time just before the window may sit in a DST gap that ends inside
        // it: Sydney skips 02:00-03:00 on 2026-10-04, so 02:30 fires at 03:00.
        let c = ScheduleConf {
            only_between: Some("03:00-04:00".to_string()),
            timezone: Some("Australia/Sydney".to_string()),
            ..cron("30 2 * * *")
        };
        check_next(&c, "2026-03-02T00:00:00Z", Some("2026-10-03T16:00:00Z"));
        // Where no gap hits it, the search still ends, after one 400-year cycle.
        let c = ScheduleConf {
            only_between: Some("08:00-18:00".to_string()),
            timezone: Some("Europe/Berlin".to_string()),
            ..cron("0 6 * * *")
        };
        check_next(&c, "2026-03-02T00:00:00Z", None);
    }

    #[test]
    fn extreme_durations_and_instants_never_panic() {
        let max = DateTime::<Utc>::MAX_UTC;
        let min = DateTime::<Utc>::MIN_UTC;
        let now = utc("2026-03-02T00:00:00Z");
        // The longest interval and jitter the config accepts (100 years),
        // from an instant near the end of the calendar: never due, no panic.
        let century = "3153600000";
        let s = build(&ScheduleConf {
            jitter: Some(century.to_string()),
            ..every(century)
        });
        let late = crate::clock::sub_saturating(max, Duration::from_secs(86_400));
        assert_eq!(s.next_after(late, late), None);
        assert!(s.due_between(late, max, late, 10).is_empty());
        for below in [|_: u64| 0u64, |n: u64| n.saturating_sub(1)] {
            assert!(s.jittered(max, below) <= max, "the calendar's end holds");
        }
        let after = build(&ScheduleConf {
            after: Some(century.to_string()),
            ..conf()
        });
        assert_eq!(after.first_due(late, late), None);
        assert!(after.due_between(late, max, late, 10).is_empty());
        // From now: due a century later.
        let s = build(&every(century));
        let due = s.next_after(now, now).unwrap();
        assert_eq!(
            due,
            crate::clock::add_saturating(now, Duration::from_secs(3_153_600_000))
        );
        assert_eq!(s.due_between(now, due, now, 10), [due]);
        let s = build(&every("1s"));
        assert_eq!(s.next_after(max, max), None);
        assert_eq!(s.due_between(min, max, min, 3).len(), 3);
        let s = build(&ScheduleConf {
            timezone: Some("Pacific/Kiritimati".to_string()),
            only_between: Some("08:00-09:00".to_string()),
            ..cron("*/5 * * * *")
        });
        assert_eq!(s.next_after(max, max), None);
        assert_eq!(
            s.next_after(min, min),
            None,
            "no wall time before the calendar"
        );
        let early = min + TimeDelta::days(2);
        assert!(s.next_after(early, early).is_some());
        let s = build(&ScheduleConf {
            at: Some("9999-12-31T23:59:59Z".to_string()),
            ..conf()
        });
        assert_eq!(s.first_due(now, now), Some(utc("9999-12-31T23:59:59Z")));
    }

    #[test]
    fn one_shots_armed_at_their_own_instant_are_due() {
        let zero = build(&ScheduleConf {
            after: Some("0s".to_string()),
            ..conf()
        });
        let start = utc("2026-03-02T10:00:00Z");
        // Armed at the start, `after: 0s` is due at once (it used to be "never").
        assert_eq!(zero.first_due(start, start), Some(start));
        assert_eq!(zero.next_after(start, start), None);
        // Armed later (a reload), its instant has passed.
        let later = utc("2026-03-02T10:00:01Z");
        assert_eq!(zero.first_due(later, start), None);
        let at = build(&ScheduleConf {
            at: Some("2026-03-02T10:00:00Z".to_string()),
            ..conf()
        });
        assert_eq!(at.first_due(start, start), Some(start));
        assert_eq!(at.first_due(later, start), None);
        // Recurring schedules are first due one occurrence after arming.
        assert_eq!(
            build(&every("5m")).first_due(start, start),
            Some(utc("2026-03-02T10:05:00Z"))
        );
    }

    #[test]
    fn cron_in_a_timezone() {
        let c = ScheduleConf {
            timezone: Some("Australia/Sydney".to_string()),
            ..cron("0 9 * * 1-5")
        };
        // After Friday 09:00 AEDT: Monday and Tuesday 09:00 AEDT (UTC+11).
        check_due(
            &c,
            "2026-03-05T23:00:00Z",
            "2026-03-09T23:00:00Z",
            &["2026-03-08T22:00:00Z", "2026-03-09T22:00:00Z"],
        );
        check_next(&c, "2026-03-05T21:00:00Z", Some("2026-03-05T22:00:00Z"));
        check_next(&c, "2026-03-05T22:00:00Z", Some("2026-03-08T22:00:00Z"));
        // Without a zone the same expression is read in UTC.
        check_next(
            &cron("0 9 * * 1-5"),
            "2026-03-05T22:00:00Z",
            Some("2026-03-06T09:00:00Z"),
        );
    }

    #[test]
    fn cron_fields_through_schedules() {
        check_next(
            &cron("0 12 * * 7"),
            "2026-03-02T00:00:00Z",
            Some("2026-03-08T12:00:00Z"),
        );
        check_next(
            &cron("0 0 13 * fri"),
            "2026-03-07T00:00:00Z",
            Some("2026-03-13T00:00:00Z"),
        );
        check_next(
            &cron("@monthly"),
            "2026-03-02T00:00:00Z",
            Some("2026-04-01T00:00:00Z"),
        );
        check_next(
            &cron("0 0 29 feb *"),
            "2026-03-02T00:00:00Z",
            Some("2028-02-29T00:00:00Z"),
        );
        check_err(
            &cron("0 0 30 2 *"),
            "plugins.echo.schedules[0]: cron `0 0 30 2 *` never fires: no month it allows has a day it allows",
        );
    }

    #[test]
    fn rare_cron_matches_are_found_however_far_apart() {
        // Feb 29 on a Sunday through not_on: 2032, then 2060 (28 years later).
        let c = ScheduleConf {
            not_on: ["mon", "tue", "wed", "thu", "fri", "sat"]
                .map(str::to_string)
                .to_vec(),
            ..cron("0 0 29 2 *")
        };
        check_next(&c, "2032-03-01T00:00:00Z", Some("2060-02-29T00:00:00Z"));
        check_next(&c, "2089-01-01T00:00:00Z", Some("2128-02-29T00:00:00Z"));
        // Vixie's OR makes `0 0 29 2 1` (Feb 29 or any Monday) frequent.
        check_next(
            &cron("0 0 29 2 1"),
            "2026-03-02T00:00:00Z",
            Some("2027-02-01T00:00:00Z"),
        );
    }

    #[test]
    fn cron_refused_by_the_gate_is_skipped() {
        let c = ScheduleConf {
            only_between: Some("08:00-18:00".to_string()),
            not_on: vec!["sat".to_string(), "sun".to_string()],
            ..cron("0 */4 * * *")
        };
        check_due(
            &c,
            "2026-03-06T00:00:00Z",
            "2026-03-09T13:00:00Z",
            &[
                "2026-03-06T08:00:00Z",
                "2026-03-06T12:00:00Z",
                "2026-03-06T16:00:00Z",
                "2026-03-09T08:00:00Z",
                "2026-03-09T12:00:00Z",
            ],
        );
        check_next(&c, "2026-03-06T16:00:00Z", Some("2026-03-09T08:00:00Z"));
        // Feb 29 on a Sunday: skipped matches in 2028 are jumped over, not walked.
        let c = ScheduleConf {
            not_on: ["mon", "tue", "wed", "thu", "fri", "sat"]
                .map(str::to_string)
                .to_vec(),
            ..cron("0 0 29 2 *")
        };
        check_next(&c, "2026-03-02T00:00:00Z", Some("2032-02-29T00:00:00Z"));
    }

    /// Cron instants of `expr` in `zone` due in (from, to].
    fn due_on_local_day(expr: &str, zone: &str, from: &str, to: &str) -> Vec<String> {
        let c = ScheduleConf {
            timezone: Some(zone.to_string()),
            ..cron(expr)
        };
        let s = build(&c);
        fmt_all(&s.due_between(utc(from), utc(to), utc(from), 1000))
    }

    #[test]
    fn dst_sydney_gap_fires_once_after_the_gap() {
        // 2026-10-04 local day in Sydney: 2026-10-03T14:00Z to 2026-10-04T13:00Z.
        let due = due_on_local_day(
            "30 2 * * *",
            "Australia/Sydney",
            "2026-10-03T13:59:59Z",
            "2026-10-04T12:59:59Z",
        );
        assert_eq!(due, ["2026-10-03T16:00:00Z"]);
        // The days around it keep 02:30 at its usual offset.
        let due = due_on_local_day(
            "30 2 * * *",
            "Australia/Sydney",
            "2026-10-02T00:00:00Z",
            "2026-10-06T00:00:00Z",
        );
        assert_eq!(
            due,
            [
                "2026-10-02T16:30:00Z",
                "2026-10-03T16:00:00Z",
                "2026-10-04T15:30:00Z",
                "2026-10-05T15:30:00Z"
            ]
        );
    }

    #[test]
    fn dst_sydney_overlap_fires_once_at_the_first_occurrence() {
        // 2026-04-05: 03:00 AEDT falls back to 02:00 AEST; 02:30 happens twice.
        let due = due_on_local_day(
            "30 2 * * *",
            "Australia/Sydney",
            "2026-04-04T12:59:59Z",
            "2026-04-05T13:59:59Z",
        );
        assert_eq!(due, ["2026-04-04T15:30:00Z"]);
    }

    #[test]
    fn dst_new_york_gap_fires_once_after_the_gap() {
        // 2026-03-08: 02:00 EST springs to 03:00 EDT.
        let due = due_on_local_day(
            "30 2 * * *",
            "America/New_York",
            "2026-03-08T04:59:59Z",
            "2026-03-09T03:59:59Z",
        );
        assert_eq!(due, ["2026-03-08T07:00:00Z"]);
    }

    #[test]
    fn dst_new_york_overlap_fires_once_at_the_first_occurrence() {
        // 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
        let due = due_on_local_day(
            "30 2 * * *",
            "America/New_York",
            "2026-11-01T03:59:59Z",
            "2026-11-02T04:59:59Z",
        );
        assert_eq!(due, ["2026-11-01T07:30:00Z"]);
        let due = due_on_local_day(
            "30 1 * * *",
            "America/New_York",
            "2026-11-01T03:59:59Z",
            "2026-11-02T04:59:59Z",
        );
        assert_eq!(due, ["2026-11-01T05:30:00Z"]);
        // next_after from inside the repeated hour does not fire the repeat.
        let c = ScheduleConf {
            timezone: Some("America/New_York".to_string()),
            ..cron("30 1 * * *")
        };
        check_next(&c, "2026-11-01T06:00:00Z", Some("2026-11-02T06:30:00Z"));
    }

    #[test]
    fn dst_quarter_hours_across_both_transitions() {
        let count = |zone: &str, from: &str, to: &str| {
            due_on_local_day("*/15 * * * *", zone, from, to).len()
        };
        // A 23-hour day: the four gap times collapse into 03:00.
        assert_eq!(
            count(
                "America/New_York",
                "2026-03-08T04:59:59Z",
                "2026-03-09T03:59:59Z"
            ),
            92
        );
        // A 25-hour day: the repeated hour fires once.
        assert_eq!(
            count(
                "America/New_York",
                "2026-11-01T03:59:59Z",
                "2026-11-02T04:59:59Z"
            ),
            96
        );
        assert_eq!(
            count(
                "Australia/Sydney",
                "2026-10-03T13:59:59Z",
                "2026-10-04T12:59:59Z"
            ),
            92
        );
        assert_eq!(
            count(
                "Australia/Sydney",
                "2026-04-04T12:59:59Z",
                "2026-04-05T13:59:59Z"
            ),
            96
        );
    }

    #[test]
    fn at_is_a_one_shot() {
        let c = ScheduleConf {
            at: Some("2026-03-15T14:00:00Z".to_string()),
            ..conf()
        };
        let s = build(&c);
        assert!(s.is_one_shot());
        check_next(&c, "2026-03-15T13:59:59Z", Some("2026-03-15T14:00:00Z"));
        check_next(&c, "2026-03-15T14:00:00Z", None);
        check_next(&c, "2026-04-01T00:00:00Z", None);
        check_due(
            &c,
            "2026-03-15T00:00:00Z",
            "2026-03-16T00:00:00Z",
            &["2026-03-15T14:00:00Z"],
        );
        check_due(&c, "2026-03-15T14:00:00Z", "2026-03-16T00:00:00Z", &[]);
        let offset = ScheduleConf {
            at: Some("2026-03-16T01:00:00+11:00".to_string()),
            ..conf()
        };
        assert_eq!(build(&offset).trigger, s.trigger);
    }

    #[test]
    fn after_counts_from_service_start() {
        let c = ScheduleConf {
            after: Some("10m".to_string()),
            ..conf()
        };
        let s = build(&c);
        assert!(s.is_one_shot());
        let clock = ManualClock::new(utc("2026-03-02T10:00:00Z"));
        let started = clock.now();
        assert_eq!(
            s.next_after(started, started),
            Some(utc("2026-03-02T10:10:00Z"))
        );
        clock.advance(Duration::from_secs(9 * 60));
        assert_eq!(
            s.next_after(clock.now(), started),
            Some(utc("2026-03-02T10:10:00Z"))
        );
        clock.advance(Duration::from_secs(60));
        assert_eq!(s.next_after(clock.now(), started), None);
        assert_eq!(
            fmt_all(&s.due_between(started, utc("2026-03-02T11:00:00Z"), started, 10)),
            ["2026-03-02T10:10:00Z"]
        );
    }

    #[test]
    fn one_shot_in_a_closed_window_waits_for_it() {
        let c = ScheduleConf {
            at: Some("2026-03-02T20:00:00Z".to_string()),
            only_between: Some("08:00-18:00".to_string()),
            ..conf()
        };
        check_next(&c, "2026-03-02T00:00:00Z", Some("2026-03-03T08:00:00Z"));
    }

    #[test]
    fn permits_and_jitter_through_the_schedule() {
        let c = ScheduleConf {
            jitter: Some("30s".to_string()),
            only_between: Some("08:00-18:00".to_string()),
            timezone: Some("America/New_York".to_string()),
            ..every("5m")
        };
        let s = build(&c);
        assert!(s.permits(utc("2026-03-02T13:00:00Z")));
        assert!(!s.permits(utc("2026-03-02T12:59:00Z")));
        let t = utc("2026-03-02T13:00:00Z");
        assert_eq!(s.jittered(t, |_| 0), utc("2026-03-02T12:59:45Z"));
        assert_eq!(s.jittered(t, |n| n - 1), utc("2026-03-02T13:00:15Z"));
        let plain = build(&every("5m"));
        assert_eq!(plain.jittered(t, |_| 7), t);
    }
}
