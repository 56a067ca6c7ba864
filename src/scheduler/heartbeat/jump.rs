//! Steps of the wall clock. A Raspberry Pi has no real-time clock: it boots
//! with a stale wall clock and jumps, often by hours, when NTP syncs; a clock
//! set by hand can jump back. The heartbeat compares how far the wall clock
//! moved between two looks with how much monotonic time passed, and when they
//! disagree by more than drift could explain it re-anchors every entry:
//!
//! - `every` and `after` run on elapsed time: their next run moves with the
//!   step, so it stays the same time after the last firing (or the start);
//! - `cron` and `at` name wall-clock instants. Instants a forward step skipped
//!   over count as missed and follow `catch_up` (skip: none, run_once: one,
//!   run_all: one each, bounded), as for downtime. After a backward step an
//!   instant already fired is never fired again: the next run is the first
//!   instant after both now and the last firing; one that was due when the
//!   clock stepped back fires at once.
//!
//! The step is logged once, as one warning naming its size.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::{CATCH_UP_CAP, Heartbeat, Tick};
use crate::clock::{Clock, parse_ts};
use crate::config::duration;
use crate::scheduler::expr::{Schedule, Trigger};
use crate::store::{StoreError, schedules};

/// The smallest disagreement between the two clocks counted as a step; NTP
/// slews a clock by at most 0.05 %, far below this.
const MIN_STEP: Duration = Duration::from_secs(2);

/// Both clock readings at one moment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reading {
    /// The wall clock.
    pub(super) wall: DateTime<Utc>,
    /// The monotonic clock.
    pub(super) monotonic: Duration,
}

impl Reading {
    /// Reads both clocks.
    pub(super) fn take(clock: &dyn Clock) -> Reading {
        Reading {
            wall: clock.now(),
            monotonic: clock.monotonic(),
        }
    }

    /// How far the wall clock moved from `earlier` beyond the time that
    /// passed, when that is more than drift: max(2 s, 1 % of the time passed).
    fn step_since(&self, earlier: &Reading) -> Option<TimeDelta> {
        let passed = self.monotonic.saturating_sub(earlier.monotonic);
        let moved = self.wall - earlier.wall;
        let step = moved
            .checked_sub(&TimeDelta::from_std(passed).unwrap_or(TimeDelta::MAX))
            .unwrap_or(TimeDelta::MIN);
        let threshold = TimeDelta::from_std(MIN_STEP.max(passed / 100)).unwrap_or(TimeDelta::MAX);
        (step.abs() > threshold).then_some(step)
    }
}

impl Heartbeat {
    /// Reads the clocks; when the wall clock stepped since the last look, logs
    /// it once, records it in `report` and re-anchors every entry.
    pub(super) fn observe_clock(&mut self, report: &mut Tick) -> Result<(), StoreError> {
        let reading = Reading::take(self.clock.as_ref());
        let before = std::mem::replace(&mut self.seen, reading);
        let Some(step) = reading.step_since(&before) else {
            return Ok(());
        };
        let size = duration::format(step.abs().to_std().unwrap_or(Duration::MAX));
        let passed = duration::format(reading.monotonic.saturating_sub(before.monotonic));
        let direction = if step > TimeDelta::zero() {
            "forward"
        } else {
            "back"
        };
        log::warn!(
            "wall clock jumped {direction} by {size} ({passed} passed); re-anchoring schedules"
        );
        report.clock_jump = Some(step);
        self.started_at = crate::clock::shift_saturating(self.started_at, step);
        self.reanchor(step, reading.wall, report)
    }

    /// Moves every active entry across a wall-clock step of `step`, seen at `now`.
    fn reanchor(
        &mut self,
        step: TimeDelta,
        now: DateTime<Utc>,
        report: &mut Tick,
    ) -> Result<(), StoreError> {
        // What the wall clock would read had it not stepped.
        let unstepped = crate::clock::shift_saturating(now, -step);
        let rt = self.runtime.clone();
        for s in &rt.schedules {
            let Some(entry) = schedules::find(&self.conn, &s.plugin, &s.id)? else {
                continue;
            };
            if entry.status != "active" {
                continue;
            }
            let Some(due) = entry.next_run_at.as_deref().and_then(parse_ts) else {
                continue;
            };
            let was_due = due <= unstepped;
            match (&s.trigger, step > TimeDelta::zero()) {
                (Trigger::Every(_) | Trigger::After(_), _) => {
                    let next = s.reanchored(due, step);
                    schedules::reschedule(&self.conn, &s.plugin, &s.id, next, now)?;
                }
                (Trigger::Cron(_) | Trigger::At(_), true) => {
                    let skipped = skipped_over(s, due, unstepped, now, self.started_at);
                    if !skipped.is_empty() {
                        // One that was due anyway fires on this tick as usual.
                        let created =
                            self.make_up(s, &skipped, now, "in a forward clock jump", !was_due)?;
                        for _ in 0..created {
                            report.fired.push((s.plugin.clone(), s.id.clone()));
                        }
                    }
                }
                (Trigger::Cron(_) | Trigger::At(_), false) if was_due => {
                    self.fire_if_allowed(s, now, due, report)?;
                }
                (Trigger::Cron(_), false) => {
                    let last = entry.last_fired_at.as_deref().and_then(parse_ts);
                    let next = self.next_for(s, last.unwrap_or(now), now);
                    schedules::reschedule(&self.conn, &s.plugin, &s.id, next, now)?;
                }
                // An `at` instant not yet due stays where it is on the wall clock.
                (Trigger::At(_), false) => {}
            }
        }
        Ok(())
    }
}

/// Instants of `s` from `due` on that a forward step from `unstepped` to `now`
/// skipped over: those in (max(due⁻, unstepped), now].
fn skipped_over(
    s: &Schedule,
    due: DateTime<Utc>,
    unstepped: DateTime<Utc>,
    now: DateTime<Utc>,
    started_at: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let just_before_due = due
        .checked_sub_signed(TimeDelta::microseconds(1))
        .unwrap_or(due);
    s.due_between(
        just_before_due.max(unstepped),
        now,
        started_at,
        CATCH_UP_CAP,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::tests::{entry, finish_all, heartbeat, jobs, setup, t};
    use super::*;
    use crate::clock::ManualClock;
    use crate::runtime::Runtime;

    const SIX_HOURS: i64 = 6;
    const THREE_HOURS: i64 = 3;

    fn next_run(hb: &Heartbeat) -> Option<String> {
        entry(hb, "default").1
    }

    fn ts(s: &str) -> Option<String> {
        Some(format!("{s}.000000Z"))
    }

    #[test]
    fn drift_is_not_a_jump() {
        let (_tmp, root) = setup("jump-drift", "      - every: 1h\n");
        let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
        let mut hb = heartbeat(&root, clock.clone());
        clock.set(t("2026-03-01T00:30:00Z"));
        clock.jump_to(t("2026-03-01T00:30:02Z"));
        assert_eq!(hb.tick().unwrap().clock_jump, None, "2 s is drift");
        clock.jump_to(t("2026-03-01T00:30:04.5Z"));
        assert_eq!(
            hb.tick().unwrap().clock_jump,
            Some(TimeDelta::milliseconds(2500))
        );
    }

    #[test]
    fn readings_at_the_ends_of_both_clocks_never_panic() {
        let at = |wall: DateTime<Utc>, monotonic: Duration| Reading { wall, monotonic };
        let max = DateTime::<Utc>::MAX_UTC;
        let min = DateTime::<Utc>::MIN_UTC;
        // Elapsed time beyond the calendar: any wall movement is within drift.
        let step = at(min, Duration::MAX).step_since(&at(max, Duration::ZERO));
        assert_eq!(step, None);
        let step = at(max, Duration::ZERO).step_since(&at(min, Duration::MAX));
        assert!(step.is_some_and(|s| s > TimeDelta::zero()));
        assert_eq!(
            at(max, Duration::MAX).step_since(&at(max, Duration::MAX)),
            None
        );
    }

    #[test]
    fn every_runs_on_elapsed_time_across_jumps_both_ways() {
        let (_tmp, root) = setup("jump-every", "      - every: 1h\n");
        let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
        let mut hb = heartbeat(&root, clock.clone());
        clock.set(t("2026-03-01T00:30:00Z"));
        assert_eq!(hb.tick().unwrap(), Tick::default());

        // NTP steps the clock six hours forward: no storm, no early run; the
        // run stays an hour after the start.
        clock.jump_to(t("2026-03-01T06:30:00Z"));
        let tick = hb.tick().unwrap();
        assert_eq!(tick.clock_jump, Some(TimeDelta::hours(SIX_HOURS)));
        assert!(tick.fired.is_empty());
        assert_eq!(next_run(&hb), ts("2026-03-01T07:00:00"));
        assert_eq!(hb.tick().unwrap().clock_jump, None, "reported once");
        clock.set(t("2026-03-01T07:00:00Z"));
        assert_eq!(hb.tick().unwrap().fired.len(), 1);
        assert_eq!(next_run(&hb), ts("2026-03-01T08:00:00"));
        finish_all(&root);

        // Three hours back: still an hour after the last run, not four.
        clock.jump_to(t("2026-03-01T04:00:00Z"));
        let tick = hb.tick().unwrap();
        assert_eq!(tick.clock_jump, Some(TimeDelta::hours(-THREE_HOURS)));
        assert!(tick.fired.is_empty());
        assert_eq!(next_run(&hb), ts("2026-03-01T05:00:00"));
        clock.set(t("2026-03-01T05:00:00Z"));
        assert_eq!(hb.tick().unwrap().fired.len(), 1);
        assert_eq!(jobs(&root), 2);
    }

    #[test]
    fn after_moves_with_the_clock() {
        let (_tmp, root) = setup("jump-after", "      - after: 1h\n");
        let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
        let mut hb = heartbeat(&root, clock.clone());
        clock.jump_to(t("2026-03-01T06:00:00Z"));
        assert!(hb.tick().unwrap().fired.is_empty());
        assert_eq!(next_run(&hb), ts("2026-03-01T07:00:00"));
        clock.set(t("2026-03-01T07:00:00Z"));
        assert_eq!(hb.tick().unwrap().fired.len(), 1);
    }

    #[test]
    fn cron_forward_jump_follows_catch_up() {
        for (policy, made_up) in [("skip", 0), ("run_once", 1), ("run_all", 6)] {
            let (_tmp, root) = setup(
                &format!("jump-cron-{policy}"),
                &format!("      - cron: \"0 * * * *\"\n        catch_up: {policy}\n"),
            );
            let clock = Arc::new(ManualClock::new(t("2026-03-01T00:30:00Z")));
            let mut hb = heartbeat(&root, clock.clone());
            // 01:00 to 06:00 are skipped over.
            clock.jump_to(t("2026-03-01T06:30:00Z"));
            let tick = hb.tick().unwrap();
            assert_eq!(tick.clock_jump, Some(TimeDelta::hours(SIX_HOURS)));
            assert_eq!(tick.fired.len(), made_up, "{policy}");
            assert_eq!(jobs(&root), made_up as i64, "{policy}");
            assert_eq!(next_run(&hb), ts("2026-03-01T07:00:00"), "{policy}");
            assert!(hb.tick().unwrap().fired.is_empty(), "{policy}");
            finish_all(&root);
            clock.set(t("2026-03-01T07:00:00Z"));
            assert_eq!(hb.tick().unwrap().fired.len(), 1, "{policy}");
        }
    }

    #[test]
    fn cron_forward_jump_still_fires_the_run_that_was_due() {
        let (_tmp, root) = setup("jump-cron-due", "      - cron: \"0 * * * *\"\n");
        let clock = Arc::new(ManualClock::new(t("2026-03-01T00:30:00Z")));
        let mut hb = heartbeat(&root, clock.clone());
        // 01:00 came due (the tick runs late), then the clock stepped on.
        clock.set(t("2026-03-01T01:00:00Z"));
        clock.jump_to(t("2026-03-01T07:00:00Z"));
        let tick = hb.tick().unwrap();
        assert_eq!(
            tick.fired.len(),
            1,
            "the due run; the skipped ones are skip"
        );
        assert_eq!(next_run(&hb), ts("2026-03-01T08:00:00"));
    }

    #[test]
    fn cron_backward_jump_neither_refires_nor_stalls_a_due_run() {
        let (_tmp, root) = setup("jump-cron-back", "      - cron: \"0 * * * *\"\n");
        let clock = Arc::new(ManualClock::new(t("2026-03-01T06:30:00Z")));
        let mut hb = heartbeat(&root, clock.clone());
        clock.set(t("2026-03-01T07:00:00Z"));
        assert_eq!(hb.tick().unwrap().fired.len(), 1);
        finish_all(&root);

        // Back three hours: 05:00 and 06:00 are earlier than the 07:00 already
        // fired, so the next run is 08:00, on the wall clock.
        clock.jump_to(t("2026-03-01T04:00:00Z"));
        let tick = hb.tick().unwrap();
        assert_eq!(tick.clock_jump, Some(TimeDelta::hours(-THREE_HOURS)));
        assert!(tick.fired.is_empty());
        assert_eq!(next_run(&hb), ts("2026-03-01T08:00:00"));
        for hour in ["05", "06", "07"] {
            clock.set(t(&format!("2026-03-01T{hour}:00:00Z")));
            assert!(hb.tick().unwrap().fired.is_empty(), "{hour}:00 again");
        }
        clock.set(t("2026-03-01T08:00:00Z"));
        assert_eq!(hb.tick().unwrap().fired.len(), 1);
        finish_all(&root);

        // A run that came due before the clock stepped back fires at once,
        // and is not fired again when the wall clock reaches it.
        clock.set(t("2026-03-01T09:00:00Z"));
        clock.jump_to(t("2026-03-01T06:00:00Z"));
        assert_eq!(hb.tick().unwrap().fired.len(), 1);
        assert_eq!(next_run(&hb), ts("2026-03-01T10:00:00"));
        clock.set(t("2026-03-01T09:00:00Z"));
        assert!(hb.tick().unwrap().fired.is_empty());
        assert_eq!(jobs(&root), 3);
    }

    #[test]
    fn at_skipped_over_by_a_forward_jump_follows_catch_up() {
        for (policy, made_up) in [("skip", 0), ("run_once", 1), ("run_all", 1)] {
            let (_tmp, root) = setup(
                &format!("jump-at-{policy}"),
                &format!("      - at: \"2026-03-01T03:00:00Z\"\n        catch_up: {policy}\n"),
            );
            let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
            let mut hb = heartbeat(&root, clock.clone());
            clock.set(t("2026-03-01T00:30:00Z"));
            clock.jump_to(t("2026-03-01T06:30:00Z"));
            let tick = hb.tick().unwrap();
            assert_eq!(tick.clock_jump, Some(TimeDelta::hours(SIX_HOURS)));
            assert_eq!(tick.fired.len(), made_up, "{policy}");
            assert_eq!(entry(&hb, "default").0, "exhausted", "{policy}");
            assert!(hb.tick().unwrap().fired.is_empty(), "{policy}");
            assert_eq!(jobs(&root), made_up as i64, "{policy}");
        }
    }

    #[test]
    fn at_keeps_its_wall_instant_across_a_backward_jump() {
        let (_tmp, root) = setup("jump-at-back", "      - at: \"2026-03-01T05:00:00Z\"\n");
        let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
        let mut hb = heartbeat(&root, clock.clone());
        clock.set(t("2026-03-01T04:00:00Z"));
        clock.jump_to(t("2026-03-01T01:00:00Z"));
        let tick = hb.tick().unwrap();
        assert_eq!(tick.clock_jump, Some(TimeDelta::hours(-THREE_HOURS)));
        assert!(tick.fired.is_empty());
        assert_eq!(next_run(&hb), ts("2026-03-01T05:00:00"));
        clock.set(t("2026-03-01T05:00:00Z"));
        assert_eq!(hb.tick().unwrap().fired.len(), 1);
        assert_eq!(entry(&hb, "default").0, "exhausted");

        // Due when the clock stepped back: fires at once, exactly once.
        let (_tmp, root) = setup("jump-at-due", "      - at: \"2026-03-01T05:00:00Z\"\n");
        let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
        let mut hb = heartbeat(&root, clock.clone());
        clock.set(t("2026-03-01T05:00:00Z"));
        clock.jump_to(t("2026-03-01T02:00:00Z"));
        assert_eq!(hb.tick().unwrap().fired.len(), 1);
        clock.set(t("2026-03-01T05:00:00Z"));
        assert!(hb.tick().unwrap().fired.is_empty());
        assert_eq!(jobs(&root), 1);
    }

    #[test]
    fn a_reload_after_an_unnoticed_jump_arms_new_schedules_once() {
        let (_tmp, root) = setup("jump-reload", "      - every: 1h\n");
        let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
        let mut hb = heartbeat(&root, clock.clone());
        clock.jump_to(t("2026-03-01T06:00:00Z"));
        let body = std::fs::read_to_string(&root)
            .unwrap()
            .replace("every: 1h", "every: 2h");
        std::fs::write(&root, body).unwrap();
        hb.reload(Arc::new(Runtime::load(&root).unwrap())).unwrap();
        assert_eq!(next_run(&hb), ts("2026-03-01T08:00:00"));
        assert_eq!(hb.tick().unwrap().clock_jump, None);
        assert_eq!(next_run(&hb), ts("2026-03-01T08:00:00"));
    }
}
