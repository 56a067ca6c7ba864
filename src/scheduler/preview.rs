//! What a schedule will do, in words a person can check: its next firings on
//! the wall clock of its zone, the occurrences `only_between` / `not_on` keep
//! from running, and the DST shifts between firings (`ductile schedule
//! preview`). The heartbeat asks the same question — which occurrence did the
//! gate refuse? — to record why a schedule did not run.
//!
//! Pure time logic, like `expr`: every function takes instants.

use chrono::{DateTime, Datelike, Offset, TimeDelta, TimeZone, Utc};
use serde::Serialize;

use crate::clock::format_ts;
use crate::scheduler::expr::{Schedule, Trigger, cron_instant_after};
use crate::scheduler::window::Gate;

/// Why the gate refuses an occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exclusion {
    /// The day is listed in `not_on`.
    NotOn,
    /// The time is outside `only_between`.
    OutsideOnlyBetween,
}

impl Exclusion {
    /// The schedule key that refused it, with its value.
    pub fn describe(self, s: &Schedule) -> String {
        match self {
            Exclusion::NotOn => {
                const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
                let days: Vec<&str> = (0..7).filter(|d| s.not_on[*d]).map(|d| DAYS[d]).collect();
                format!("not_on [{}] ({})", days.join(", "), s.tz.name())
            }
            Exclusion::OutsideOnlyBetween => match &s.window {
                Some(w) => format!("outside only_between {w} ({})", s.tz.name()),
                None => "outside only_between".to_string(),
            },
        }
    }
}

/// The trigger's own next occurrence strictly after `after`, before
/// `only_between` and `not_on` have their say.
pub fn ungated_next_after(
    s: &Schedule,
    after: DateTime<Utc>,
    started_at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let t = match &s.trigger {
        Trigger::Every(i) => after.checked_add_signed(TimeDelta::from_std(*i).ok()?)?,
        Trigger::Cron(expr) => cron_instant_after(expr, s.tz, after)?,
        Trigger::At(t) => *t,
        Trigger::After(d) => started_at.checked_add_signed(TimeDelta::from_std(*d).ok()?)?,
    };
    (t > after).then_some(t)
}

/// Why `t` may not fire, or None when it may.
pub fn exclusion(s: &Schedule, t: DateTime<Utc>) -> Option<Exclusion> {
    let gate = Gate {
        tz: s.tz,
        window: s.window.as_ref(),
        not_on: &s.not_on,
    };
    if gate.permits(t) {
        return None;
    }
    match gate.local_day(t) {
        Some(day) if s.not_on[day.weekday().num_days_from_sunday() as usize] => {
            Some(Exclusion::NotOn)
        }
        _ => Some(Exclusion::OutsideOnlyBetween),
    }
}

/// The first occurrence after `after` the gate refused on the way to `next`
/// (the gated next run), and why; None when nothing was refused.
pub fn refused_before(
    s: &Schedule,
    after: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
    started_at: DateTime<Utc>,
) -> Option<(DateTime<Utc>, Exclusion)> {
    let raw = ungated_next_after(s, after, started_at)?;
    if next.is_some_and(|n| n <= raw) {
        return None;
    }
    exclusion(s, raw).map(|why| (raw, why))
}

/// One line of a preview.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    /// The instant (UTC, RFC 3339).
    pub at: String,
    /// The same instant on the schedule zone's wall clock, with its offset.
    pub local: String,
    /// `fire`, or `excluded` for an occurrence the gate refused.
    pub kind: &'static str,
    /// Why it is excluded (excluded lines only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excluded: Option<Exclusion>,
    /// For an excluded line: the next permitted run, where the schedule resumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumes_at: Option<String>,
    /// A DST shift of the zone's UTC offset since the previous line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
}

/// Lines up to the `n`th firing after `from`, excluded occurrences in between;
/// `started_at` anchors `after:` one-shots.
pub fn preview(
    s: &Schedule,
    from: DateTime<Utc>,
    started_at: DateTime<Utc>,
    n: usize,
) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut offset = s.tz.offset_from_utc_datetime(&from.naive_utc()).fix();
    let mut cursor = from;
    let mut fired = 0;
    while fired < n {
        let next = s.next_after(cursor, started_at);
        if let Some((raw, why)) = refused_before(s, cursor, next, started_at) {
            lines.push(line(s, raw, "excluded", Some(why), next, &mut offset));
        }
        let Some(t) = next else { break };
        lines.push(line(s, t, "fire", None, None, &mut offset));
        fired += 1;
        if s.is_one_shot() {
            break;
        }
        cursor = t;
    }
    lines
}

fn line(
    s: &Schedule,
    t: DateTime<Utc>,
    kind: &'static str,
    excluded: Option<Exclusion>,
    resumes: Option<DateTime<Utc>>,
    offset: &mut chrono::FixedOffset,
) -> Line {
    let local = t.with_timezone(&s.tz);
    let now = local.offset().fix();
    let dst = (now != *offset).then(|| format!("DST shift: UTC offset {} -> {}", offset, now));
    *offset = now;
    Line {
        at: format_ts(t),
        local: local.format("%Y-%m-%d %H:%M:%S %Z (%:z)").to_string(),
        kind,
        excluded,
        resumes_at: resumes.map(format_ts),
        dst,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_ts;
    use crate::config::ScheduleConf;

    fn build(f: impl FnOnce(&mut ScheduleConf)) -> Schedule {
        let mut c = crate::scheduler::expr::tests::conf();
        f(&mut c);
        crate::scheduler::compile::compile("echo", &c).unwrap()
    }

    fn t(s: &str) -> DateTime<Utc> {
        parse_ts(s).unwrap()
    }

    #[test]
    fn a_daily_cron_across_the_spring_forward_marks_the_shift() {
        let s = build(|c| {
            c.cron = Some("30 9 * * *".into());
            c.timezone = Some("Europe/Berlin".into());
        });
        let lines = preview(&s, t("2026-03-27T12:00:00Z"), t("2026-03-27T12:00:00Z"), 3);
        let at: Vec<&str> = lines.iter().map(|l| l.at.as_str()).collect();
        assert_eq!(
            at,
            [
                "2026-03-28T08:30:00.000000Z",
                "2026-03-29T07:30:00.000000Z",
                "2026-03-30T07:30:00.000000Z"
            ]
        );
        assert_eq!(lines[0].dst, None);
        assert_eq!(
            lines[1].dst.as_deref(),
            Some("DST shift: UTC offset +01:00 -> +02:00")
        );
        assert_eq!(lines[1].local, "2026-03-29 09:30:00 CEST (+02:00)");
    }

    #[test]
    fn not_on_and_windows_show_the_refused_occurrence() {
        let s = build(|c| {
            c.cron = Some("0 12 * * *".into());
            c.not_on = vec!["sat".into(), "sun".into()];
        });
        // Friday 2026-03-06 noon fires, the weekend is refused, Monday fires.
        let lines = preview(&s, t("2026-03-06T00:00:00Z"), t("2026-03-06T00:00:00Z"), 2);
        let shape: Vec<(&str, Option<Exclusion>)> =
            lines.iter().map(|l| (l.kind, l.excluded)).collect();
        assert_eq!(
            shape,
            [
                ("fire", None),
                ("excluded", Some(Exclusion::NotOn)),
                ("fire", None)
            ]
        );
        assert_eq!(lines[1].at, "2026-03-07T12:00:00.000000Z");
        assert_eq!(
            lines[1].resumes_at.as_deref(),
            Some("2026-03-09T12:00:00.000000Z")
        );
        let w = build(|c| {
            c.every = Some("1h".into());
            c.only_between = Some("08:00-10:00".into());
        });
        assert_eq!(
            refused_before(
                &w,
                t("2026-03-06T09:30:00Z"),
                w.next_after(t("2026-03-06T09:30:00Z"), t("2026-03-06T00:00:00Z")),
                t("2026-03-06T00:00:00Z")
            ),
            Some((t("2026-03-06T10:30:00Z"), Exclusion::OutsideOnlyBetween))
        );
        assert_eq!(exclusion(&w, t("2026-03-06T09:00:00Z")), None);
    }
}
