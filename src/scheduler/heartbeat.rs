//! The heartbeat: the scheduler thread's logic. On start it reconciles
//! `schedule_entries` with the runtime's compiled schedules (keeping the stored
//! next run of unchanged schedules, so restarts neither double-fire nor reset
//! timers) and applies `catch_up` to runs missed while the daemon was down.
//! Each tick it notices steps of the wall clock (see `jump`), fires due
//! schedules — after `if_running`, the poll guard and the circuit breaker have
//! had their say — and prunes old history.
//!
//! A firing is one transaction: the job row and the entry's new `next_run_at`
//! land together, so a crash can never fire the same due instant twice.

#[cfg(test)]
mod decided;
mod jump;

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use crossbeam_channel::{Receiver, Sender, select};
use rusqlite::Connection;
use serde_json::json;

use crate::clock::{Clock, format_ts, parse_ts, random_below, sub_saturating};
use crate::daemon::notify::Beat;
use crate::dispatch::pool::RunningJobs;
use crate::runtime::Runtime;
use crate::scheduler::expr::{CatchUp, IfRunning, Schedule, Trigger};
use crate::scheduler::preview;
use crate::store::decisions::{self, Decision, Kind};
use crate::store::queue::{self, Enqueued, NewJob, SubmittedBy};
use crate::store::{StoreError, breakers, events, retention, schedules};

/// The most catch-up runs one schedule may enqueue at once (`run_all`).
pub const CATCH_UP_CAP: usize = 100;

/// What one tick did, for tests and logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tick {
    /// Jobs enqueued, catch-up jobs included: (plugin, schedule id).
    pub fired: Vec<(String, String)>,
    /// Due schedules that did not fire, with why.
    pub skipped: Vec<(String, String, &'static str)>,
    /// Running jobs cancelled by `if_running: cancel`.
    pub cancelled: usize,
    /// How far the wall clock stepped since the previous tick, beyond the time
    /// that passed (positive: forward), when it did.
    pub clock_jump: Option<TimeDelta>,
}

/// The scheduler's state; owned by its thread.
pub struct Heartbeat {
    conn: Connection,
    clock: Arc<dyn Clock>,
    /// When the service started, on the wall clock (moved along with any step).
    started_at: DateTime<Utc>,
    runtime: Arc<Runtime>,
    running: Arc<RunningJobs>,
    wake_tx: Sender<()>,
    /// Monotonic reading of the last retention pass.
    last_retention: Option<Duration>,
    /// Both clock readings when the heartbeat last looked, to tell a stepped
    /// wall clock from elapsed time.
    seen: jump::Reading,
}

impl Heartbeat {
    /// Reconciles the stored entries with `runtime` and applies start-up catch-up.
    pub fn start(
        conn: Connection,
        runtime: Arc<Runtime>,
        clock: Arc<dyn Clock>,
        running: Arc<RunningJobs>,
        wake_tx: Sender<()>,
    ) -> Result<Heartbeat, StoreError> {
        let seen = jump::Reading::take(clock.as_ref());
        let mut hb = Heartbeat {
            conn,
            clock,
            started_at: seen.wall,
            runtime,
            running,
            wake_tx,
            last_retention: None,
            seen,
        };
        hb.sync(true)?;
        Ok(hb)
    }

    /// Adopts a reloaded runtime: new, changed and removed schedules take effect.
    pub fn reload(&mut self, runtime: Arc<Runtime>) -> Result<(), StoreError> {
        // A step not yet noticed must be accounted for before new schedules are
        // armed on the stepped clock, or the next tick would move them again.
        self.observe_clock(&mut Tick::default())?;
        self.runtime = runtime;
        self.sync(false)
    }

    fn sync(&mut self, at_start: bool) -> Result<(), StoreError> {
        // At the start, "now" is the start itself, so `after: 0s` is due at once.
        let now = if at_start {
            self.started_at
        } else {
            self.clock.now()
        };
        let rt = self.runtime.clone();
        let mut keep = Vec::new();
        for s in &rt.schedules {
            keep.push((s.plugin.clone(), s.id.clone()));
            // `after` counts from each start of the service, so every start arms it anew.
            let rearm = at_start && matches!(s.trigger, Trigger::After(_));
            match schedules::find(&self.conn, &s.plugin, &s.id)? {
                Some(e) if e.fingerprint == s.fingerprint && !rearm => {
                    let missed = e
                        .next_run_at
                        .as_deref()
                        .and_then(parse_ts)
                        .filter(|t| *t < now);
                    if let (true, "active", Some(missed)) = (at_start, e.status.as_str(), missed) {
                        let instants = self.missed_while_down(s, missed, now);
                        self.make_up(s, &instants, now, "while stopped", true)?;
                    }
                }
                _ => self.arm(s, now)?,
            }
        }
        schedules::retain(&self.conn, &keep)?;
        Ok(())
    }

    /// Stores a new or changed schedule with its first due instant.
    fn arm(&mut self, s: &Schedule, now: DateTime<Utc>) -> Result<(), StoreError> {
        let next = s
            .first_due(now, self.started_at)
            .map(|t| self.jittered(s, t, now));
        let status = if next.is_none() && s.is_one_shot() {
            "exhausted"
        } else {
            "active"
        };
        let started_at = self.started_at;
        let tx = queue::begin(&mut self.conn)?;
        schedules::upsert(
            &tx,
            &s.plugin,
            &s.id,
            &s.command,
            &s.fingerprint,
            status,
            None,
            next,
            now,
        )?;
        // Armed outside its window or on a `not_on` day: say so now, not
        // only after the first firing.
        record_refused(&tx, s, now, next, started_at, now)?;
        tx.commit()
            .map_err(|e| StoreError::sqlite("commit an armed schedule", e))?;
        log::info!(plugin = s.plugin.as_str(); "schedule `{}` ({}) next run at {}", s.id, s.trigger, next.map(format_ts).unwrap_or_else(|| "never".into()));
        Ok(())
    }

    /// Due instants missed while the daemon was down, from the stored due time.
    fn missed_while_down(
        &self,
        s: &Schedule,
        missed_from: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        match &s.trigger {
            // An interval's missed runs sit on its own grid, starting at the stored due time.
            Trigger::Every(every) => {
                let step = TimeDelta::from_std(*every).unwrap_or(TimeDelta::MAX);
                std::iter::successors(Some(missed_from), |t| t.checked_add_signed(step))
                    .take_while(|t| *t <= now)
                    .filter(|t| s.permits(*t))
                    .take(CATCH_UP_CAP)
                    .collect()
            }
            // A one-shot missed its single stored instant.
            Trigger::At(_) | Trigger::After(_) => vec![missed_from],
            Trigger::Cron(_) => s.due_between(
                missed_from
                    .checked_sub_signed(TimeDelta::microseconds(1))
                    .unwrap_or(missed_from),
                now,
                self.started_at,
                CATCH_UP_CAP,
            ),
        }
    }

    /// Enqueues catch-up jobs for `missed` as the schedule's `catch_up` says and,
    /// with `move_entry`, moves the entry to its next run (or exhausts a
    /// one-shot), all in one transaction. Returns the jobs enqueued.
    fn make_up(
        &mut self,
        s: &Schedule,
        missed: &[DateTime<Utc>],
        now: DateTime<Utc>,
        cause: &str,
        move_entry: bool,
    ) -> Result<usize, StoreError> {
        let instants: &[DateTime<Utc>] = match s.catch_up {
            CatchUp::Skip => &[],
            CatchUp::RunOnce => &missed[..missed.len().min(1)],
            CatchUp::RunAll => &missed[..missed.len().min(CATCH_UP_CAP)],
        };
        log::info!(plugin = s.plugin.as_str(); "schedule `{}` missed {} run(s) {cause}; catch_up: {} enqueues {}", s.id, missed.len(), s.catch_up.as_str(), instants.len());
        let jobs: Vec<NewJob> = instants
            .iter()
            .map(|at| {
                let mut job = self.job_for(s, now);
                job.dedupe_key = Some(format!("catchup:{}:{}:{}", s.plugin, s.id, format_ts(*at)));
                job.dedupe_ttl = Some(Duration::from_secs(86_400));
                job
            })
            .collect();
        let next = self.next_for(s, now, now);
        let exhausted = s.is_one_shot();
        let default_ttl = self.runtime.config.service.dedupe_ttl;
        let tx = queue::begin(&mut self.conn)?;
        let mut created = 0;
        for (job, at) in jobs.iter().zip(instants) {
            if let Enqueued::Created(id) = queue::enqueue_in(&tx, job, default_ttl, now)? {
                created += 1;
                let fields = json!({"schedule": s.id, "due_at": format_ts(*at), "catch_up": s.catch_up.as_str()});
                events::record(
                    &tx,
                    "scheduler.fired",
                    Some(&s.plugin),
                    Some(&s.command),
                    Some(&id),
                    &fields,
                    now,
                )?;
            }
        }
        if missed.len() > instants.len() {
            let why = format!(
                "missed {} run(s) {cause}; catch_up: {} enqueued {}",
                missed.len(),
                s.catch_up.as_str(),
                instants.len()
            );
            let fields = json!({"schedule": s.id, "why": why, "missed": missed.len()});
            record_skipped(&tx, s, &fields, now)?;
            let d = Decision::new(&s.plugin, &s.id, &s.command, Kind::CatchUpSkipped, why, now);
            decisions::record(&tx, &d)?;
        }
        if move_entry {
            if instants.is_empty() && !exhausted {
                schedules::reschedule(&tx, &s.plugin, &s.id, next, now)?;
            } else {
                let next = if exhausted { None } else { next };
                schedules::fired(&tx, &s.plugin, &s.id, now, next, exhausted)?;
            }
        }
        tx.commit()
            .map_err(|e| StoreError::sqlite("commit catch-up", e))?;
        if created > 0 {
            let _ = self.wake_tx.try_send(());
        }
        Ok(created)
    }

    /// The next due instant after `from` (never before `now`), jittered.
    fn next_for(
        &self,
        s: &Schedule,
        from: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        s.next_after(from.max(now), self.started_at)
            .map(|t| self.jittered(s, t, now))
    }

    fn jittered(&self, s: &Schedule, t: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
        s.jittered(t, random_below).max(now)
    }

    fn job_for(&self, s: &Schedule, now: DateTime<Utc>) -> NewJob {
        let max_attempts = self
            .runtime
            .registry
            .get(&s.plugin)
            .map(|p| p.conf.retry.max_attempts)
            .unwrap_or(1);
        let envelope = json!({
            "type": "scheduler.tick",
            "payload": s.payload,
            "source": "scheduler",
            "schedule_id": s.id,
            "timestamp": format_ts(now),
            "event_id": uuid::Uuid::new_v4().to_string(),
        });
        NewJob::new(
            &s.plugin,
            &s.command,
            envelope,
            SubmittedBy::Scheduler,
            max_attempts,
        )
    }

    /// Fires every due schedule once and prunes history when its cadence comes round.
    pub fn tick(&mut self) -> Result<Tick, StoreError> {
        let mut report = Tick::default();
        self.observe_clock(&mut report)?;
        let now = self.seen.wall;
        let rt = self.runtime.clone();
        for s in &rt.schedules {
            let Some(entry) = schedules::find(&self.conn, &s.plugin, &s.id)? else {
                continue;
            };
            let due = entry
                .next_run_at
                .as_deref()
                .and_then(parse_ts)
                .filter(|t| *t <= now);
            match (entry.status.as_str(), due) {
                ("active", Some(due)) => self.fire_if_allowed(s, now, due, &mut report)?,
                ("paused_manual", Some(due)) => self.hold_paused(s, &entry, now, due)?,
                _ => {}
            }
        }
        let svc = &rt.config.service;
        let mono = self.seen.monotonic;
        if self
            .last_retention
            .is_none_or(|t| mono.saturating_sub(t) >= svc.tick_interval)
        {
            self.last_retention = Some(mono);
            let log_cutoff = sub_saturating(now, svc.job_log_retention);
            let queue_cutoff = sub_saturating(now, svc.job_queue_retention);
            let pruned = retention::prune(&self.conn, log_cutoff, queue_cutoff, 10)?;
            if pruned != retention::Pruned::default() {
                log::info!(
                    "retention pruned {} job_log, {} job_queue, {} history rows",
                    pruned.job_log,
                    pruned.job_queue,
                    pruned.history
                );
            }
            let artifacts = crate::disk::ledger_dir(&rt.config.state.path).join("artifacts");
            let gone = crate::plugin::container::processor::prune_artifacts(&artifacts, log_cutoff);
            if gone > 0 {
                log::info!("retention pruned {gone} job artifacts director(ies)");
            }
        }
        Ok(report)
    }

    /// Fires `s`, due at `due`, unless `if_running`, the poll guard or the
    /// breaker holds it back. The next run follows both `now` and `due`, so an
    /// occurrence fired early on a clock stepped back is not fired again.
    fn fire_if_allowed(
        &mut self,
        s: &Schedule,
        now: DateTime<Utc>,
        due: DateTime<Utc>,
        report: &mut Tick,
    ) -> Result<(), StoreError> {
        let Some(plugin) = self.runtime.registry.get(&s.plugin).cloned() else {
            return Ok(());
        };
        let next = if s.is_one_shot() {
            None
        } else {
            self.next_for(s, due, now)
        };
        let mut skip = |this: &mut Heartbeat,
                        kind: Kind,
                        why: &'static str|
         -> Result<(), StoreError> {
            log::info!(plugin = s.plugin.as_str(); "schedule `{}` due but not fired: {why}", s.id);
            report.skipped.push((s.plugin.clone(), s.id.clone(), why));
            let tx = queue::begin(&mut this.conn)?;
            let fields = json!({"schedule": s.id, "why": why, "due_at": format_ts(due)});
            record_skipped(&tx, s, &fields, now)?;
            let d = Decision::new(&s.plugin, &s.id, &s.command, kind, why, now).due(due);
            decisions::record(&tx, &d)?;
            record_refused(&tx, s, due.max(now), next, this.started_at, now)?;
            // A one-shot has no next occurrence to move to: it stays due and
            // fires on the first tick that allows it.
            if !s.is_one_shot() {
                schedules::reschedule(&tx, &s.plugin, &s.id, next, now)?;
            }
            tx.commit()
                .map_err(|e| StoreError::sqlite("commit a skipped schedule", e))
        };
        if crate::disk::admit(&self.runtime.config.state).is_err() {
            return skip(
                self,
                Kind::AdmissionRefusedDisk,
                "admission refused: free disk space is below state.min_free_bytes",
            );
        }
        let inflight = queue::inflight(&self.conn, &s.plugin, &s.command)?;
        let mut cancelled: Vec<String> = Vec::new();
        if !inflight.is_empty() {
            match s.if_running {
                IfRunning::Skip => {
                    return skip(
                        self,
                        Kind::IfRunningSkip,
                        "a previous run is still queued or running (if_running: skip)",
                    );
                }
                IfRunning::Queue => {}
                IfRunning::Cancel => {
                    let reason = format!("cancelled by schedule `{}` (if_running: cancel)", s.id);
                    let tx = queue::begin(&mut self.conn)?;
                    queue::kill_queued(&tx, &s.plugin, Some(&s.command), &reason, now)?;
                    tx.commit()
                        .map_err(|e| StoreError::sqlite("commit cancel", e))?;
                    for (id, status) in &inflight {
                        if *status == queue::JobStatus::Running && self.running.cancel(id, &reason)
                        {
                            report.cancelled += 1;
                        }
                        cancelled.push(id.clone());
                    }
                }
            }
        }
        if s.command == "poll" {
            let outstanding = inflight
                .iter()
                .filter(|(id, _)| !cancelled.contains(id))
                .count();
            if outstanding >= plugin.conf.max_outstanding_polls as usize {
                return skip(
                    self,
                    Kind::PollGuard,
                    "poll guard: max_outstanding_polls reached",
                );
            }
            match breakers::admit(
                &self.conn,
                &s.plugin,
                &s.command,
                plugin.conf.circuit_breaker.reset_after,
                now,
            )? {
                breakers::Admission::Deny => {
                    return skip(self, Kind::BreakerOpen, "circuit breaker is open");
                }
                breakers::Admission::Probe => {
                    log::info!(plugin = s.plugin.as_str(); "circuit breaker half-open: sending one probe poll")
                }
                breakers::Admission::Allow => {}
            }
        }
        let job = self.job_for(s, now);
        let default_ttl = self.runtime.config.service.dedupe_ttl;
        let tx = queue::begin(&mut self.conn)?;
        let enq = queue::enqueue_in(&tx, &job, default_ttl, now)?;
        if let Enqueued::Deduplicated(existing) = &enq {
            let why = "an identical job is in flight or succeeded recently";
            let d = Decision::new(&s.plugin, &s.id, &s.command, Kind::Deduplicated, why, now)
                .job(existing)
                .due(due);
            decisions::record(&tx, &d)?;
        }
        record_refused(&tx, s, due.max(now), next, self.started_at, now)?;
        let (kind, job_id, fields) = match &enq {
            Enqueued::Created(id) => (
                "scheduler.fired",
                id,
                json!({"schedule": s.id, "due_at": format_ts(due), "next_run_at": next.map(format_ts)}),
            ),
            Enqueued::Deduplicated(existing) => (
                "scheduler.skipped",
                existing,
                json!({"schedule": s.id, "due_at": format_ts(due), "why": "deduplicated: an identical job is in flight or succeeded recently"}),
            ),
        };
        events::record(
            &tx,
            kind,
            Some(&s.plugin),
            Some(&s.command),
            Some(job_id),
            &fields,
            now,
        )?;
        schedules::fired(&tx, &s.plugin, &s.id, now, next, s.is_one_shot())?;
        tx.commit()
            .map_err(|e| StoreError::sqlite("commit schedule firing", e))?;
        if let Enqueued::Created(id) = enq {
            log::info!(plugin = s.plugin.as_str(), job_id = id.as_str(); "schedule `{}` fired {}; next {}", s.id, s.command, next.map(format_ts).unwrap_or_else(|| "never (one-shot)".into()));
            report.fired.push((s.plugin.clone(), s.id.clone()));
            let _ = self.wake_tx.try_send(());
        }
        Ok(())
    }

    /// Records that `s` did not run at its due instant because it is paused by
    /// hand, and moves it on to its next occurrence, so a resume starts from
    /// the next one instead of bursting through every occurrence it missed.
    fn hold_paused(
        &mut self,
        s: &Schedule,
        entry: &schedules::Entry,
        now: DateTime<Utc>,
        due: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let why = entry
            .reason
            .clone()
            .unwrap_or_else(|| "paused by `ductile schedule pause`".to_string());
        let next = self.next_for(s, due, now);
        let tx = queue::begin(&mut self.conn)?;
        let d = Decision::new(&s.plugin, &s.id, &s.command, Kind::Paused, why, now).due(due);
        decisions::record(&tx, &d)?;
        // A one-shot has no next occurrence: it stays due until resumed.
        if !s.is_one_shot() {
            schedules::reschedule(&tx, &s.plugin, &s.id, next, now)?;
        }
        tx.commit()
            .map_err(|e| StoreError::sqlite("commit a paused schedule", e))
    }

    /// The earliest next run of any active (or paused, to record the pause)
    /// schedule after the last tick's instant. One due at or before it was
    /// held back by that tick (a paused or breaker-held one-shot stays due):
    /// it waits for the next tick instead of spinning the loop.
    pub fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let now = self.seen.wall;
        Ok(schedules::all(&self.conn)?
            .into_iter()
            .filter(|e| e.status == "active" || e.status == "paused_manual")
            .filter_map(|e| e.next_run_at.as_deref().and_then(parse_ts))
            .filter(|t| *t > now)
            .min())
    }
}

/// Starts the scheduler thread: tick, then sleep until the next tick or the next
/// due schedule, whichever is sooner; a reload or stop wakes it at once. A
/// ledger error or a panic (a bug) stops the daemon through `fatal_tx`: a
/// daemon whose scheduler is gone must not run on as if it were healthy.
/// With a watchdog's `beat`, the thread bumps it each time round and sleeps no
/// longer than the beat allows between bumps (without ticking early).
pub fn spawn(
    mut hb: Heartbeat,
    stop_rx: Receiver<()>,
    reload_rx: Receiver<Arc<Runtime>>,
    fatal_tx: Sender<String>,
    beat: Option<Arc<Beat>>,
) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("scheduler".into())
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_loop(&mut hb, &stop_rx, &reload_rx, beat.as_deref())
            }));
            let why = match result {
                Ok(Ok(())) => return,
                Ok(Err(e)) => format!("scheduler cannot use the ledger: {e}"),
                Err(_) => "the scheduler thread panicked (a bug in ductile); stopping".to_string(),
            };
            log::error!("{why}");
            let _ = fatal_tx.send(why);
        })
}

fn run_loop(
    hb: &mut Heartbeat,
    stop_rx: &Receiver<()>,
    reload_rx: &Receiver<Arc<Runtime>>,
    beat: Option<&Beat>,
) -> Result<(), StoreError> {
    loop {
        match hb.tick() {
            Err(e) if e.is_busy() => log::warn!("scheduler tick deferred: {e}"),
            other => {
                other?;
            }
        }
        let tick = hb.runtime.config.service.tick_interval;
        let now = hb.clock.now();
        let until_due = hb
            .next_due()?
            .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO));
        let wait = until_due
            .map_or(tick, |d| d.min(tick))
            .saturating_add(Duration::from_millis(1));
        // At most tick_interval (≤ 1h) and a millisecond: no overflow.
        let deadline = Instant::now() + wait;
        loop {
            if let Some(beat) = beat {
                beat.bump();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            select! {
                recv(stop_rx) -> _ => return Ok(()),
                recv(reload_rx) -> msg => {
                    if let Ok(rt) = msg {
                        hb.reload(rt)?;
                    }
                    break;
                }
                default(Beat::slice(beat, left)) => {
                    if Instant::now() >= deadline {
                        break;
                    }
                }
            }
        }
    }
}

/// Records the occurrence between `after` and `next` that `only_between`
/// or `not_on` refused, if any, in the caller's transaction.
fn record_refused(
    tx: &rusqlite::Transaction<'_>,
    s: &Schedule,
    after: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
    started_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let Some((at, why)) = preview::refused_before(s, after, next, started_at) else {
        return Ok(());
    };
    let kind = match why {
        preview::Exclusion::NotOn => Kind::NotOn,
        preview::Exclusion::OutsideOnlyBetween => Kind::OutsideOnlyBetween,
    };
    let d = Decision::new(&s.plugin, &s.id, &s.command, kind, why.describe(s), now).due(at);
    decisions::record(tx, &d)
}

/// A `scheduler.skipped` event for schedule `s`, in the caller's transaction.
fn record_skipped(
    tx: &rusqlite::Transaction<'_>,
    s: &Schedule,
    fields: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    events::record(
        tx,
        "scheduler.skipped",
        Some(&s.plugin),
        Some(&s.command),
        None,
        fields,
        now,
    )
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::Synchronous;
    use crate::store::testing::TempDir;
    use crossbeam_channel::bounded;

    /// A config dir with the `ok_basic` fixture plugin and `schedules` YAML.
    pub(crate) fn setup(tag: &str, schedules: &str) -> (TempDir, std::path::PathBuf) {
        let tmp = TempDir::new(tag);
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/plugins/ok_basic");
        let dst = tmp.0.join("plugins/ok_basic");
        std::fs::create_dir_all(&dst).unwrap();
        for f in ["manifest.yaml", "run.sh"] {
            std::fs::copy(src.join(f), dst.join(f)).unwrap();
        }
        let root = tmp.0.join("config.yaml");
        std::fs::write(
            &root,
            format!("plugin_roots: [plugins]\nstate: {{path: d.db}}\nplugins:\n  ok_basic:\n    schedules:\n{schedules}"),
        )
        .unwrap();
        (tmp, root)
    }

    pub(crate) fn heartbeat(root: &std::path::Path, clock: Arc<ManualClock>) -> Heartbeat {
        heartbeat_with(root, clock, |_| {})
    }

    /// [`heartbeat`] on a runtime that `adjust` may change first (to reach
    /// values the config would refuse).
    pub(crate) fn heartbeat_with(
        root: &std::path::Path,
        clock: Arc<ManualClock>,
        adjust: impl FnOnce(&mut Runtime),
    ) -> Heartbeat {
        let mut rt = Runtime::load(root).unwrap();
        adjust(&mut rt);
        let rt = Arc::new(rt);
        assert!(rt.registry.get("ok_basic").is_some(), "{:?}", rt.warnings);
        let conn = crate::store::open(&rt.config.state.path, Synchronous::Normal).unwrap();
        let (wake_tx, _wake_rx) = bounded(1);
        Heartbeat::start(conn, rt, clock, Arc::new(RunningJobs::default()), wake_tx).unwrap()
    }

    pub(crate) fn t(s: &str) -> DateTime<Utc> {
        parse_ts(s).unwrap()
    }

    pub(crate) fn jobs(root: &std::path::Path) -> i64 {
        let db = root.parent().unwrap().join("d.db");
        let c = Connection::open(db).unwrap();
        c.query_row(
            "SELECT COUNT(*) FROM job_queue WHERE submitted_by = 'scheduler'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    /// Marks every scheduler job succeeded, as if workers ran them.
    pub(crate) fn finish_all(root: &std::path::Path) {
        let db = root.parent().unwrap().join("d.db");
        let c = Connection::open(db).unwrap();
        c.execute("UPDATE job_queue SET status = 'succeeded', completed_at = created_at WHERE status IN ('queued','running')", []).unwrap();
    }

    #[test]
    fn every_minute_fires_once_per_due_time_across_a_restart() {
        let (_tmp, root) = setup("hb-restart", "      - every: 1m\n");
        let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
        let mut hb = heartbeat(&root, clock.clone());
        assert!(hb.tick().unwrap().fired.is_empty(), "not due at start");
        clock.set(t("2026-03-01T00:01:00Z"));
        assert_eq!(hb.tick().unwrap().fired.len(), 1);
        assert_eq!(
            hb.tick().unwrap().fired.len(),
            0,
            "same due time never fires twice"
        );
        finish_all(&root);
        drop(hb);
        // Restart 30 s later: the stored next run (00:02) is kept, nothing fires early.
        clock.set(t("2026-03-01T00:01:30Z"));
        let mut hb = heartbeat(&root, clock.clone());
        assert!(hb.tick().unwrap().fired.is_empty());
        clock.set(t("2026-03-01T00:02:00Z"));
        assert_eq!(hb.tick().unwrap().fired.len(), 1);
        assert_eq!(jobs(&root), 2);
    }

    #[test]
    fn catch_up_policies_after_downtime() {
        for (policy, expected) in [("skip", 0), ("run_once", 1), ("run_all", 5)] {
            let (_tmp, root) = setup(
                &format!("hb-catchup-{policy}"),
                &format!("      - every: 1m\n        catch_up: {policy}\n"),
            );
            let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
            drop(heartbeat(&root, clock.clone()));
            // Down from 00:00 to 00:05:30: due runs at 00:01..00:05 were missed.
            clock.set(t("2026-03-01T00:05:30Z"));
            let mut hb = heartbeat(&root, clock.clone());
            assert_eq!(jobs(&root), expected, "catch_up: {policy}");
            assert!(
                hb.tick().unwrap().fired.is_empty(),
                "{policy}: the next run is in the future"
            );
            let entry = schedules::find(&hb.conn, "ok_basic", "default")
                .unwrap()
                .unwrap();
            assert_eq!(
                entry.next_run_at.as_deref(),
                Some("2026-03-01T00:06:30.000000Z"),
                "{policy}"
            );
        }
    }

    #[test]
    fn catch_up_applies_to_cron_too() {
        let (_tmp, root) = setup(
            "hb-cron-catchup",
            "      - cron: \"*/10 * * * *\"\n        catch_up: run_all\n",
        );
        let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
        drop(heartbeat(&root, clock.clone()));
        clock.set(t("2026-03-01T00:35:00Z"));
        let hb = heartbeat(&root, clock.clone());
        assert_eq!(jobs(&root), 3, "00:10, 00:20, 00:30");
        let fired: Vec<(String, serde_json::Value)> = system_events(&hb.conn)
            .into_iter()
            .map(|e| (e.kind, e.data["due_at"].clone()))
            .collect();
        assert_eq!(
            fired,
            [
                (
                    "scheduler.fired".into(),
                    json!("2026-03-01T00:10:00.000000Z")
                ),
                (
                    "scheduler.fired".into(),
                    json!("2026-03-01T00:20:00.000000Z")
                ),
                (
                    "scheduler.fired".into(),
                    json!("2026-03-01T00:30:00.000000Z")
                ),
            ]
        );
    }

    #[test]
    fn poll_guard_and_if_running_skip_hold_back_a_second_poll() {
        let (_tmp, root) = setup("hb-guard", "      - every: 1m\n");
        let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
        let mut hb = heartbeat(&root, clock.clone());
        clock.set(t("2026-03-01T00:01:00Z"));
        assert_eq!(hb.tick().unwrap().fired.len(), 1);
        clock.set(t("2026-03-01T00:02:00Z"));
        let tick = hb.tick().unwrap();
        assert!(tick.fired.is_empty());
        assert_eq!(tick.skipped.len(), 1);
        assert_eq!(jobs(&root), 1);
        // The skipped run is rescheduled, not retried every tick.
        let entry = schedules::find(&hb.conn, "ok_basic", "default")
            .unwrap()
            .unwrap();
        assert_eq!(
            entry.next_run_at.as_deref(),
            Some("2026-03-01T00:03:00.000000Z")
        );
        let recorded = system_events(&hb.conn);
        assert_eq!(
            recorded.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
            ["scheduler.fired", "scheduler.skipped"]
        );
        let job_id: String = hb
            .conn
            .query_row("SELECT id FROM job_queue", [], |r| r.get(0))
            .unwrap();
        assert_eq!(recorded[0].data["job_id"], json!(job_id));
        assert_eq!(recorded[0].data["schedule"], "default");
        assert_eq!(
            recorded[1].data["why"],
            "a previous run is still queued or running (if_running: skip)"
        );
        assert_eq!(recorded[1].data["due_at"], "2026-03-01T00:02:00.000000Z");
    }

    /// The system events recorded so far (the job events left out).
    fn system_events(conn: &Connection) -> Vec<crate::store::events::Event> {
        crate::store::events::since(conn, crate::store::events::Cursor::default(), 1000)
            .unwrap()
            .into_iter()
            .filter(|e| !e.kind.starts_with("job."))
            .collect()
    }

    #[test]
    fn if_running_cancel_kills_queued_twins_and_fires() {
        let (_tmp, root) = setup(
            "hb-cancel",
            "      - every: 1m\n        if_running: cancel\n",
        );
        let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
        let mut hb = heartbeat(&root, clock.clone());
        clock.set(t("2026-03-01T00:01:00Z"));
        hb.tick().unwrap();
        clock.set(t("2026-03-01T00:02:00Z"));
        assert_eq!(hb.tick().unwrap().fired.len(), 1);
        let dead: String = hb
            .conn
            .query_row(
                "SELECT last_error FROM job_queue WHERE status = 'dead'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(dead, "cancelled by schedule `default` (if_running: cancel)");
    }

    #[test]
    fn open_breaker_holds_polls_until_the_cooldown_then_probes() {
        let (_tmp, root) = setup("hb-breaker", "      - every: 1m\n");
        let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
        let mut hb = heartbeat(&root, clock.clone());
        breakers::record(
            &hb.conn,
            "ok_basic",
            "poll",
            "j",
            false,
            1,
            t("2026-03-01T00:00:00Z"),
        )
        .unwrap();
        clock.set(t("2026-03-01T00:01:00Z"));
        let tick = hb.tick().unwrap();
        assert_eq!(tick.skipped[0].2, "circuit breaker is open");
        clock.set(t("2026-03-01T00:31:00Z"));
        assert_eq!(hb.tick().unwrap().fired.len(), 1, "half-open probe");
        assert_eq!(
            breakers::find(&hb.conn, "ok_basic", "poll")
                .unwrap()
                .unwrap()
                .state,
            "half_open"
        );
        let recorded = system_events(&hb.conn);
        let kinds: Vec<&str> = recorded.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "breaker.open",
                "scheduler.skipped",
                "breaker.half_open",
                "scheduler.fired"
            ]
        );
        assert_eq!(recorded[0].data["from"], "closed");
        assert_eq!(recorded[0].data["reason"], "failure_threshold");
        assert_eq!(recorded[0].data["job_id"], "j");
        assert_eq!(recorded[2].data["reason"], "cooldown_elapsed");
    }

    #[test]
    fn a_one_shot_missed_while_down_fires_once_with_run_once() {
        let (_tmp, root) = setup(
            "hb-at-catchup",
            "      - at: \"2026-03-01T00:10:00Z\"\n        catch_up: run_once\n",
        );
        let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
        drop(heartbeat(&root, clock.clone()));
        clock.set(t("2026-03-01T01:00:00Z"));
        let mut hb = heartbeat(&root, clock.clone());
        assert_eq!(jobs(&root), 1);
        let entry = schedules::find(&hb.conn, "ok_basic", "default")
            .unwrap()
            .unwrap();
        assert_eq!(entry.status, "exhausted");
        assert!(hb.tick().unwrap().fired.is_empty());
    }

    #[test]
    fn a_held_back_one_shot_stays_due_until_it_may_fire() {
        let (_tmp, root) = setup("hb-at-guard", "      - at: \"2026-03-01T00:10:00Z\"\n");
        let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
        let mut hb = heartbeat(&root, clock.clone());
        // Hold the one-shot poll back with an open breaker.
        breakers::record(
            &hb.conn,
            "ok_basic",
            "poll",
            "j",
            false,
            1,
            t("2026-03-01T00:00:00Z"),
        )
        .unwrap();
        clock.set(t("2026-03-01T00:10:00Z"));
        assert_eq!(hb.tick().unwrap().skipped.len(), 1);
        let entry = schedules::find(&hb.conn, "ok_basic", "default")
            .unwrap()
            .unwrap();
        assert_eq!(
            (entry.status.as_str(), entry.next_run_at.as_deref()),
            ("active", Some("2026-03-01T00:10:00.000000Z"))
        );
        // Once the breaker cools down, the probe is the one-shot itself.
        clock.set(t("2026-03-01T00:40:00Z"));
        assert_eq!(hb.tick().unwrap().fired.len(), 1);
        let entry = schedules::find(&hb.conn, "ok_basic", "default")
            .unwrap()
            .unwrap();
        assert_eq!(entry.status, "exhausted");
    }

    /// The stored (status, next_run_at) of the fixture plugin's schedule `id`.
    pub(crate) fn entry(hb: &Heartbeat, id: &str) -> (String, Option<String>) {
        let e = schedules::find(&hb.conn, "ok_basic", id).unwrap().unwrap();
        (e.status, e.next_run_at)
    }

    #[test]
    fn after_zero_fires_at_once_on_every_start() {
        let (_tmp, root) = setup("hb-after-zero", "      - after: 0s\n");
        let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
        let mut hb = heartbeat(&root, clock.clone());
        // Without the clock moving at all: due at the start itself.
        assert_eq!(hb.tick().unwrap().fired.len(), 1);
        assert_eq!(entry(&hb, "default").0, "exhausted");
        assert!(hb.tick().unwrap().fired.is_empty(), "once per start");
        finish_all(&root);
        drop(hb);
        // A later start runs it again: `after` counts from each start.
        clock.set(t("2026-03-01T01:00:00Z"));
        let mut hb = heartbeat(&root, clock.clone());
        assert_eq!(hb.tick().unwrap().fired.len(), 1);
        assert_eq!(jobs(&root), 2);
    }

    #[test]
    fn after_counts_from_this_start_not_the_previous_one() {
        let (_tmp, root) = setup("hb-after-rearm", "      - after: 10m\n");
        let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
        drop(heartbeat(&root, clock.clone()));
        // Stopped before it fired; the next start arms it ten minutes on.
        clock.set(t("2026-03-01T01:00:00Z"));
        let mut hb = heartbeat(&root, clock.clone());
        assert_eq!(jobs(&root), 0, "no catch-up for an `after`");
        assert_eq!(
            entry(&hb, "default"),
            (
                "active".to_string(),
                Some("2026-03-01T01:10:00.000000Z".to_string())
            )
        );
        clock.set(t("2026-03-01T01:10:00Z"));
        assert_eq!(hb.tick().unwrap().fired.len(), 1);
    }

    #[test]
    fn huge_retention_and_tick_interval_never_panic() {
        let (_tmp, root) = setup("hb-huge", "      - every: 1m\n");
        let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
        let huge = [Duration::MAX, Duration::from_secs(100_000_000 * 86_400)];
        for retention in huge {
            let mut hb = heartbeat_with(&root, clock.clone(), |rt| {
                rt.config.service.job_log_retention = retention;
                rt.config.service.job_queue_retention = retention;
                rt.config.service.tick_interval = Duration::MAX;
            });
            hb.tick().unwrap();
            clock.advance(Duration::from_secs(60));
            assert_eq!(hb.tick().unwrap().fired.len(), 1, "{retention:?}");
            finish_all(&root);
        }
    }

    #[test]
    fn one_shots_exhaust_after_firing() {
        let (_tmp, root) = setup("hb-at", "      - at: \"2026-03-01T00:10:00Z\"\n");
        let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
        let mut hb = heartbeat(&root, clock.clone());
        clock.set(t("2026-03-01T00:10:00Z"));
        assert_eq!(hb.tick().unwrap().fired.len(), 1);
        let entry = schedules::find(&hb.conn, "ok_basic", "default")
            .unwrap()
            .unwrap();
        assert_eq!(entry.status, "exhausted");
        clock.set(t("2026-03-01T01:00:00Z"));
        assert!(hb.tick().unwrap().fired.is_empty());
    }
}
