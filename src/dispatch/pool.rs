//! The worker pool: one dispatcher thread that claims eligible jobs from the
//! queue only when a worker is idle, and a fixed set of worker threads that run
//! them. The dispatcher sleeps on channels — woken by new work (`wake`), by a
//! finished job (`done`) or by the next retry time — and never polls.
//!
//! Shutdown: dropping the stop sender ends the dispatcher, which drops the job
//! sender; workers finish their current job and exit when the channel closes.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, select, unbounded};
use rusqlite::Connection;

use super::{Executed, execute_then_claim};
use crate::clock::Clock;
use crate::config::Synchronous;
use crate::daemon::notify::Beat;
use crate::plugin::container::stage7::warm::Warm;
use crate::plugin::spawn::CancelToken;
use crate::runtime::{Runtime, RuntimeCell};
use crate::store::completion;
use crate::store::queue::{self, ClaimedJob, SubmittedBy};
use crate::store::{self, StoreError};

/// Cancel tokens of the jobs running right now, by job id: the scheduler's
/// `if_running: cancel` and shutdown reach running process groups through it.
#[derive(Debug, Default)]
pub struct RunningJobs(Mutex<HashMap<String, Arc<CancelToken>>>);

impl RunningJobs {
    /// Registers a job the moment it is claimed, so a cancellation can reach it
    /// even before its worker has picked it up.
    fn register(&self, id: &str) -> Arc<CancelToken> {
        let token = Arc::new(CancelToken::new());
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), token.clone());
        token
    }

    fn remove(&self, id: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// Cancels job `id` if it is running here; returns whether it was.
    pub fn cancel(&self, id: &str, reason: &str) -> bool {
        let token = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        match token {
            Some(t) => {
                t.cancel(reason);
                true
            }
            None => false,
        }
    }

    /// Cancels every running job.
    pub fn cancel_all(&self, reason: &str) -> usize {
        let tokens: Vec<Arc<CancelToken>> = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for t in &tokens {
            t.cancel(reason);
        }
        tokens.len()
    }

    /// How many jobs are running.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no job is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A claimed job, its cancel token and the runtime snapshot it runs with.
struct Work {
    job: ClaimedJob,
    token: Arc<CancelToken>,
    runtime: Arc<Runtime>,
}

/// What the pool needs to run.
pub struct PoolConfig {
    /// The ledger.
    pub db: PathBuf,
    /// Its durability level.
    pub synchronous: Synchronous,
    /// Number of workers.
    pub workers: usize,
    /// The current runtime (swapped on reload).
    pub runtime: Arc<RuntimeCell>,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Running jobs' cancel tokens.
    pub running: Arc<RunningJobs>,
    /// Wakes the dispatcher (new work).
    pub wake_rx: Receiver<()>,
    /// Set (before a wake) when another process may have asked for something:
    /// the dispatcher then carries out pending cancel requests.
    pub requests: Arc<AtomicBool>,
    /// Tells the daemon the ledger failed and it must stop.
    pub fatal_tx: Sender<String>,
    /// Called after each commit that changed a job's status (claims and
    /// completions), so live event streams see it at once; a completion names
    /// the root of the pipeline tree its job belongs to, if any.
    pub committed: Committed,
    /// Bumped each time the dispatcher's loop comes round, when a watchdog
    /// watches it (its sleeps are then capped at [`Beat::every`]).
    pub beat: Option<Arc<Beat>>,
    /// The warm containers of `keep_warm` instances; without it every Stage7
    /// job runs in a container of its own.
    pub warm: Option<Arc<Warm>>,
}

/// Told after each commit that changed a job's status; names the root of the
/// pipeline tree the job belongs to, if any.
pub type Committed = Arc<dyn Fn(Option<&str>) + Send + Sync>;

/// The running pool's threads.
pub struct Pool {
    // Field order is drop order: the stop sender goes first so the dispatcher
    // exits and closes the job channel before anyone joins the workers.
    stop_tx: Option<Sender<()>>,
    /// Whether workers may claim their next job as they complete one.
    claiming: Arc<AtomicBool>,
    dispatcher: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    exited_rx: Receiver<()>,
}

impl Pool {
    /// Opens connections and starts the dispatcher and workers.
    pub fn start(cfg: PoolConfig) -> Result<Pool, StoreError> {
        let workers = cfg.workers.max(1);
        let (job_tx, job_rx) = bounded::<Work>(workers);
        let (done_tx, done_rx) = unbounded::<()>();
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let (exited_tx, exited_rx) = unbounded::<()>();
        let claiming = Arc::new(AtomicBool::new(true));
        let mut handles = Vec::new();
        for n in 0..workers {
            let conn = store::open(&cfg.db, cfg.synchronous)?;
            let rx = job_rx.clone();
            let done = done_tx.clone();
            let exited = exited_tx.clone();
            let ctx = WorkerContext {
                clock: cfg.clock.clone(),
                running: cfg.running.clone(),
                runtime: cfg.runtime.clone(),
                claiming: claiming.clone(),
                fatal: cfg.fatal_tx.clone(),
                committed: cfg.committed.clone(),
                warm: cfg.warm.clone(),
            };
            let h = thread::Builder::new()
                .name(format!("worker-{n}"))
                .spawn(move || {
                    worker(conn, rx, done, ctx);
                    let _ = exited.send(());
                })
                .map_err(|e| StoreError::Io {
                    path: "worker thread".into(),
                    op: "spawn",
                    source: e,
                })?;
            handles.push(h);
        }
        let conn = store::open(&cfg.db, cfg.synchronous)?;
        let dispatcher = thread::Builder::new()
            .name("dispatch".into())
            .spawn(move || dispatcher(conn, cfg, workers, job_tx, done_rx, stop_rx))
            .map_err(|e| StoreError::Io {
                path: "dispatch thread".into(),
                op: "spawn",
                source: e,
            })?;
        Ok(Pool {
            stop_tx: Some(stop_tx),
            claiming,
            dispatcher: Some(dispatcher),
            workers: handles,
            exited_rx,
        })
    }

    /// Stops claiming new jobs; running ones continue.
    pub fn stop_claiming(&mut self) {
        self.claiming.store(false, Ordering::SeqCst);
        self.stop_tx.take();
        if let Some(d) = self.dispatcher.take() {
            let _ = d.join();
        }
    }

    /// Waits until every worker has exited or `timeout` passes; true when all exited.
    pub fn wait_idle(&mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut exited = self.workers.iter().filter(|h| h.is_finished()).count();
        while exited < self.workers.len() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if self.exited_rx.recv_timeout(left).is_err() {
                return false;
            }
            exited += 1;
        }
        true
    }

    /// Joins every worker (call after they were told to finish).
    pub fn join(mut self) {
        self.stop_claiming();
        for h in self.workers.drain(..) {
            if h.join().is_err() {
                log::error!("a worker thread panicked outside a job; this is a bug");
            }
        }
    }
}

fn dispatcher(
    mut conn: Connection,
    cfg: PoolConfig,
    workers: usize,
    job_tx: Sender<Work>,
    done_rx: Receiver<()>,
    stop_rx: Receiver<()>,
) {
    let fatal = cfg.fatal_tx.clone();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        dispatch_loop(&mut conn, &cfg, workers, &job_tx, &done_rx, &stop_rx)
    }));
    let why = match result {
        Ok(Ok(())) => return,
        Ok(Err(e)) => format!("dispatcher cannot use the ledger: {e}"),
        Err(_) => "the dispatcher thread panicked (a bug in ductile); stopping".to_string(),
    };
    log::error!("{why}");
    let _ = fatal.send(why);
}

fn dispatch_loop(
    conn: &mut Connection,
    cfg: &PoolConfig,
    workers: usize,
    job_tx: &Sender<Work>,
    done_rx: &Receiver<()>,
    stop_rx: &Receiver<()>,
) -> Result<(), StoreError> {
    let mut idle = workers;
    // Requests may predate this start.
    cfg.requests.store(true, Ordering::SeqCst);
    loop {
        if cfg.requests.swap(false, Ordering::SeqCst) {
            crate::fault::hit(crate::fault::Point::WedgeDispatcher);
            carry_out_cancel_requests(conn, cfg)?;
        }
        while idle > 0 {
            let rt = cfg.runtime.current();
            let cap = |plugin: &str| rt.parallelism(plugin);
            match queue::claim_next(conn, &cap, cfg.clock.now()) {
                Ok(Some(job)) => {
                    log::debug!(plugin = job.plugin.as_str(), job_id = job.id.as_str(); "claimed");
                    (cfg.committed)(None);
                    let token = cfg.running.register(&job.id);
                    if job_tx
                        .send(Work {
                            job,
                            token,
                            runtime: rt,
                        })
                        .is_err()
                    {
                        return Ok(());
                    }
                    idle -= 1;
                }
                Ok(None) => break,
                Err(e) if e.is_busy() => {
                    log::warn!("claim deferred: {e}");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let timeout = next_retry_in(conn, cfg.clock.as_ref())?;
        // At most an hour and a millisecond: no overflow.
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(beat) = &cfg.beat {
                beat.bump();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            select! {
                recv(stop_rx) -> _ => return Ok(()),
                recv(cfg.wake_rx) -> _ => break,
                recv(done_rx) -> _ => {
                    idle += 1;
                    break;
                }
                // A beat's round only proves the loop turns: nothing to
                // claim until the retry time or an event.
                default(Beat::slice(cfg.beat.as_deref(), left)) => {
                    if Instant::now() >= deadline {
                        break;
                    }
                }
            }
        }
        // Coalesce whatever else already arrived.
        while done_rx.try_recv().is_ok() {
            idle += 1;
        }
        while cfg.wake_rx.try_recv().is_ok() {}
    }
}

/// Cancels what other processes asked to cancel: queued jobs end at once, and
/// running ones have their process group terminated (the worker records them).
fn carry_out_cancel_requests(conn: &mut Connection, cfg: &PoolConfig) -> Result<(), StoreError> {
    let (running, cancelled) = queue::take_cancel_requests(conn, cfg.clock.now())?;
    for id in &cancelled {
        log::info!(job_id = id.as_str(); "cancelled a queued job on request");
        crate::oneshot::notify_done(id);
    }
    let mut unseen = false;
    for req in running {
        if cfg.running.cancel(&req.job_id, &req.reason) {
            log::info!(job_id = req.job_id.as_str(); "cancelling a running job on request: {}", req.reason);
        } else {
            // Claimed a moment ago and not registered yet (or run by nobody):
            // keep the request and look again at the next wake.
            queue::request_cancel(
                conn,
                &req.job_id,
                &req.reason,
                SubmittedBy::Cli,
                cfg.clock.now(),
            )?;
            unseen = true;
        }
    }
    if unseen {
        cfg.requests.store(true, Ordering::SeqCst);
    }
    Ok(())
}

/// Time until the earliest pending retry (capped at an hour; idle otherwise).
fn next_retry_in(conn: &Connection, clock: &dyn Clock) -> Result<Duration, StoreError> {
    const IDLE: Duration = Duration::from_secs(3600);
    Ok(match queue::next_retry_at(conn)? {
        Some(at) => {
            (at - clock.now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(IDLE)
                + Duration::from_millis(1)
        }
        None => IDLE,
    })
}

/// What a worker thread shares with the rest of the pool.
struct WorkerContext {
    clock: Arc<dyn Clock>,
    running: Arc<RunningJobs>,
    runtime: Arc<RuntimeCell>,
    claiming: Arc<AtomicBool>,
    fatal: Sender<String>,
    committed: Committed,
    warm: Option<Arc<Warm>>,
}

/// Runs jobs from the dispatcher; after each, claims the next eligible job in
/// the same transaction as the completion and runs that too, so a draining
/// queue costs one commit per job; tells the dispatcher only when it is idle.
fn worker(mut conn: Connection, rx: Receiver<Work>, done: Sender<()>, ctx: WorkerContext) {
    for work in rx {
        let mut current = Some(work);
        while let Some(work) = current.take() {
            current = run_one(&mut conn, work, &ctx);
        }
        if done.send(()).is_err() {
            return;
        }
    }
}

/// Executes one job and records it; returns the next job it claimed, if any.
fn run_one(conn: &mut Connection, work: Work, ctx: &WorkerContext) -> Option<Work> {
    let rt = ctx.runtime.current();
    let cap = |plugin: &str| rt.parallelism(plugin);
    let claim_next: Option<&dyn Fn(&str) -> usize> = if ctx.claiming.load(Ordering::SeqCst) {
        Some(&cap)
    } else {
        None
    };
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        execute_then_claim(
            conn,
            &work.runtime,
            &work.job,
            &work.token,
            ctx.clock.as_ref(),
            claim_next,
            ctx.warm.as_deref(),
        )
    }));
    ctx.running.remove(&work.job.id);
    let (plugin, id) = (work.job.plugin.as_str(), work.job.id.as_str());
    match result {
        Ok(Ok(Executed::Recorded { next, tree, .. })) => {
            (ctx.committed)(tree.as_deref());
            if work.job.submitted_by == SubmittedBy::Cli {
                crate::oneshot::notify_done(id);
            }
            next.map(|job| {
                log::debug!(plugin = job.plugin.as_str(), job_id = job.id.as_str(); "claimed");
                Work {
                    token: ctx.running.register(&job.id),
                    job: *job,
                    runtime: rt.clone(),
                }
            })
        }
        Ok(Ok(Executed::Abandoned)) => None,
        Ok(Err(e @ StoreError::StaleAttempt { .. })) => {
            // Another process recovered and re-ran this job meanwhile (two
            // ledgers were confused, or this one was replaced): its record
            // stands, ours is dropped.
            log::error!(plugin = plugin, job_id = id; "{e}");
            None
        }
        Ok(Err(e)) => {
            log::error!(plugin = plugin, job_id = id; "cannot record the job's outcome: {e}");
            let _ = ctx.fatal.send(format!("ledger write failed: {e}"));
            None
        }
        Err(_) => {
            // A bug failed this job, not the daemon: record it (the panic
            // unwound any open transaction) so it does not sit `running`.
            let failed = completion::Completion {
                job: &work.job,
                decision: completion::Decision::Terminal(queue::JobStatus::Failed),
                last_error: Some(
                    "internal error: the worker panicked while running this job (a bug in ductile)"
                        .into(),
                ),
                record: completion::AttemptRecord::default(),
                state: None,
                children: Vec::new(),
                stopwatch: None,
                effects: Vec::new(),
            };
            let ttl = work.runtime.config.service.dedupe_ttl;
            let recorded = completion::complete(conn, &failed, ttl, ctx.clock.now()).is_ok();
            log::error!(plugin = plugin, job_id = id; "worker panicked while running the job; this is a bug ({})", if recorded { "job marked failed" } else { "the job is recovered at the next start" });
            None
        }
    }
}
