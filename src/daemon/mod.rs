//! `ductile system start`: the daemon. Loads the config, opens the ledger, takes
//! the instance lock, recovers orphans, then runs the signal thread, the
//! scheduler thread and the worker pool until a signal says stop.
//!
//! Threads own their resources (each opens its own connection); the only shared
//! state is the `RuntimeCell` (swapped whole on reload) and the running jobs'
//! cancel tokens. Shutdown order: stop the scheduler, stop claiming, let
//! in-flight jobs finish until `shutdown_timeout`, kill what is left (those
//! jobs stay `running` and are recovered at the next start), release the lock.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, select, unbounded};
use rusqlite::Connection;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use crate::clock::{Clock, SystemClock};
use crate::dispatch::pool::{Pool, PoolConfig, RunningJobs};
use crate::dispatch::{self, SHUTDOWN_REASON};
use crate::lock::{self, InstanceLock, StartIntent};
use crate::plugin::container::stage7::warm::Warm;
use crate::runtime::{Runtime, RuntimeCell};
use crate::scheduler::heartbeat::{self, Heartbeat};
use crate::store::queue::{self, Enqueued, NewJob, SubmittedBy};
use crate::store::{self, StoreError, events, health, integrity, snapshots};

pub mod notify;
mod watch;

/// Why the daemon could not start or had to stop.
#[derive(Debug)]
pub enum DaemonError {
    /// The configuration is invalid (exit 78).
    Config(String),
    /// Anything else (exit 1).
    Failed(String),
}

impl DaemonError {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            DaemonError::Config(_) => 78,
            DaemonError::Failed(_) => 1,
        }
    }
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Config(m) | DaemonError::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for DaemonError {}

impl From<StoreError> for DaemonError {
    fn from(e: StoreError) -> DaemonError {
        if e.is_config() {
            DaemonError::Config(e.to_string())
        } else {
            DaemonError::Failed(e.to_string())
        }
    }
}

/// Messages to the main (control) thread.
enum Control {
    Reload,
    /// `POST /system/reload`: reload, then answer with the verdict.
    ReloadAndAnswer(Sender<Result<String, Vec<String>>>),
    Shutdown(&'static str),
    /// A file of the ledger or the lock changed on disk ([`watch`]).
    FilesChanged,
}

/// What `system start` can say once the daemon is up, for a person watching.
#[derive(Debug, Clone)]
pub struct Started {
    /// The daemon's pid.
    pub pid: u32,
    /// The ledger.
    pub db: std::path::PathBuf,
    /// The config root.
    pub config: std::path::PathBuf,
    /// Loaded plugins.
    pub plugins: Vec<String>,
    /// Workers.
    pub workers: usize,
    /// Addresses the HTTP listeners bound (API first when enabled).
    pub listening: Vec<String>,
}

/// How long a starting daemon waits for one-shots to finish with the ledger.
const START_WAIT: Duration = Duration::from_secs(60);
/// The budget of the integrity check at start (a large ledger on an SD card
/// is not read end to end before the daemon serves).
const QUICK_CHECK_BUDGET: Duration = Duration::from_secs(10);

/// Runs the daemon in the foreground until SIGTERM/SIGINT; Ok on a clean stop.
/// `started` is told once the daemon accepts work.
pub fn run(root: &Path, started: &dyn Fn(&Started)) -> Result<(), DaemonError> {
    run_with_clock(root, Arc::new(SystemClock), started)
}

/// [`run`] with an explicit clock.
pub fn run_with_clock(
    root: &Path,
    clock: Arc<dyn Clock>,
    started: &dyn Fn(&Started),
) -> Result<(), DaemonError> {
    // Handlers come first: a SIGHUP or SIGUSR1 sent while we start must not
    // kill us (their default action), and a SIGTERM while we wait for the lock
    // must end the wait cleanly.
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT, SIGUSR1])
        .map_err(|e| DaemonError::Failed(format!("cannot install signal handlers: {e}")))?;
    crate::config::integrity::precheck(root).map_err(DaemonError::Config)?;
    let rt = Arc::new(Runtime::load(root).map_err(|e| DaemonError::Config(e.to_string()))?);
    crate::log::set_level(&rt.config.service.log_level);
    crate::fault::announce();
    for w in &rt.warnings {
        log::warn!(target: "config", "{w}");
    }
    for w in &rt.config.inactive {
        log::warn!(target: "config", "{w}");
    }
    // The seal first: a tampered high-security file or plugin refuses the
    // start whatever the mode; strict mode then asks for a clean check.
    crate::config::integrity::gate(&rt.config).map_err(DaemonError::Config)?;
    crate::check::strict_gate(&rt, "start").map_err(DaemonError::Config)?;
    let db = rt.config.state.path.clone();
    let sync = rt.config.state.synchronous;
    let notify = Arc::new(notify::Notify::from_env());
    notify.status(&format!("starting: taking the lock on {}", db.display()));
    let mut lock = take_lock(&db, &mut signals)?;
    notify.status("starting: checking the ledger and recovering interrupted jobs");
    let shown = db.display().to_string();
    let mut conn = store::open_checked(&db, sync)?;
    if integrity::quick_check(&conn, &shown, QUICK_CHECK_BUDGET)? == integrity::Checked::Unfinished
    {
        log::warn!(
            "integrity check of {shown} stopped after {}s (a large ledger); continuing",
            QUICK_CHECK_BUDGET.as_secs()
        );
    }
    let files = integrity::FileIdentity::of(&db);
    dispatch::recover(&mut conn, clock.as_ref())?;
    // Also removes the warm containers a killed daemon left.
    let warm = Arc::new(
        Warm::start(crate::disk::ledger_dir(&db), &rt.registry).map_err(|e| {
            DaemonError::Failed(format!("cannot start the stage7-warm thread: {e}"))
        })?,
    );
    snapshot(&conn, &rt, "start", clock.as_ref())?;
    run_inits(&mut conn, &rt, clock.as_ref())?;

    let cell = Arc::new(RuntimeCell::new(rt.clone()));
    let running = Arc::new(RunningJobs::default());
    let requests = Arc::new(AtomicBool::new(false));
    let (wake_tx, wake_rx) = bounded::<()>(1);
    let (fatal_tx, fatal_rx) = unbounded::<String>();
    let (control_tx, control_rx) = bounded::<Control>(8);
    let signal_handle = signals.handle();
    let signal_thread = {
        let wake_tx = wake_tx.clone();
        let requests = requests.clone();
        let control_tx = control_tx.clone();
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    let msg = match sig {
                        SIGHUP => Control::Reload,
                        SIGUSR1 => {
                            // Another process enqueued work or asked for a
                            // cancellation: the dispatcher looks at both.
                            requests.store(true, Ordering::SeqCst);
                            let _ = wake_tx.try_send(());
                            continue;
                        }
                        SIGINT => Control::Shutdown("SIGINT"),
                        _ => Control::Shutdown("SIGTERM"),
                    };
                    if control_tx.send(msg).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| DaemonError::Failed(format!("cannot start the signal thread: {e}")))?
    };
    let watcher = watch::spawn(&db, control_tx.clone())
        .map_err(|e| DaemonError::Failed(format!("cannot watch {}: {e}", db.display())))?;

    let hub = crate::http::events::Hub::start(db.clone(), sync, rt.config.api.max_event_streams)?;
    let bridge = crate::http::bridge::Bridge::start(db.clone(), sync)?;
    let intake = crate::http::intake::Intake::start(db.clone(), sync, clock.clone())?;
    let committed: crate::dispatch::pool::Committed = {
        let hub = hub.clone();
        let bridge = bridge.clone();
        Arc::new(move |tree: Option<&str>| {
            hub.notify();
            if let Some(root) = tree {
                bridge.wake(root);
            }
        })
    };
    let beats = notify::Beats::for_period(notify.ping_period());
    let mut pool = Pool::start(PoolConfig {
        db: db.clone(),
        synchronous: sync,
        workers: rt.config.service.max_workers,
        runtime: cell.clone(),
        clock: clock.clone(),
        running: running.clone(),
        wake_rx,
        requests: requests.clone(),
        fatal_tx: fatal_tx.clone(),
        committed,
        beat: beats.dispatch.clone(),
        warm: Some(warm.clone()),
    })?;
    let hb = Heartbeat::start(
        store::open(&db, sync)?,
        rt.clone(),
        clock.clone(),
        running.clone(),
        wake_tx.clone(),
    )?;
    let (sched_stop_tx, sched_stop_rx) = bounded::<()>(0);
    let (reload_tx, reload_rx) = bounded::<Arc<Runtime>>(1);
    let scheduler = heartbeat::spawn(
        hb,
        sched_stop_rx,
        reload_rx,
        fatal_tx.clone(),
        beats.scheduler.clone(),
    )
    .map_err(|e| DaemonError::Failed(format!("cannot start the scheduler: {e}")))?;
    let services = Arc::new(crate::http::Services {
        cell: cell.clone(),
        db: db.clone(),
        synchronous: sync,
        wake: wake_tx.clone(),
        reload: api_reload(control_tx.clone()),
        started: Instant::now(),
        clock: clock.clone(),
        running: running.clone(),
        requests,
        workers: rt.config.service.max_workers,
        metrics: crate::http::metrics::Metrics::default(),
        events: hub.clone(),
        bridge: bridge.clone(),
        intake: intake.clone(),
    });
    let listeners = match crate::http::Listeners::start(services) {
        Ok(l) => l,
        Err(e) => {
            // Nothing was accepted yet: stop what started, in order.
            drop(sched_stop_tx);
            let _ = scheduler.join();
            pool.stop_claiming();
            pool.join();
            hub.stop();
            bridge.stop();
            intake.stop();
            signal_handle.close();
            let _ = signal_thread.join();
            return Err(match e {
                crate::http::HttpError::Refused(why) => DaemonError::Config(why),
                other => DaemonError::Failed(other.to_string()),
            });
        }
    };
    // Only now may one-shots hand over and `system reload` signal us.
    lock.advertise_ready()
        .map_err(|e| DaemonError::Failed(e.to_string()))?;
    let _ = wake_tx.try_send(());
    log::info!(
        pid = std::process::id(),
        workers = rt.config.service.max_workers,
        plugins = rt.registry.plugins().count(),
        db = shown.as_str(),
        version = env!("CARGO_PKG_VERSION"),
        commit = env!("DUCTILE_COMMIT"),
        replication = rt.config.state.replication.as_str();

        "ductile running"
    );
    notify.ready(&running_status(&rt, &listeners.addresses()));
    let watchdog = notify::Watchdog::start(notify.clone(), &beats)
        .map_err(|e| DaemonError::Failed(format!("cannot start the watchdog thread: {e}")))?;
    started(&Started {
        pid: std::process::id(),
        db: db.clone(),
        config: root.to_path_buf(),
        plugins: rt.registry.plugins().map(|p| p.name.clone()).collect(),
        workers: rt.config.service.max_workers,
        listening: listeners.addresses(),
    });

    let reloader = Reloader {
        root,
        cell: &cell,
        reload_tx: &reload_tx,
        wake_tx: &wake_tx,
        clock: clock.as_ref(),
        notify: &notify,
        listening: listeners.addresses(),
        warm: &warm,
    };
    let mut guard = Guard {
        lock: &mut lock,
        files: &files,
    };
    let outcome = control_loop(&reloader, &mut conn, &control_rx, &fatal_rx, &mut guard);
    watchdog.stop();
    notify.stopping(&match &outcome {
        Ok(why) => format!(
            "stopping ({why}): waiting for {} running job(s)",
            running.len()
        ),
        Err(e) => format!("stopping on a fatal error: {e}"),
    });

    // Orderly stop; the comments number the steps of docs/ARCHITECTURE.md.
    // 0. No new work from outside: the listeners stop and finish their answers.
    listeners.stop();
    intake.stop();
    hub.stop();
    bridge.stop();
    // 1. No new scheduled work.
    drop(sched_stop_tx);
    if scheduler.join().is_err() {
        log::error!("the scheduler thread panicked; this is a bug");
    }
    // 2. No new claims; in-flight jobs run on.
    pool.stop_claiming();
    // After a fatal error nothing more can be recorded: no grace.
    let grace = match outcome {
        Ok(_) => cell.current().config.service.shutdown_timeout,
        Err(_) => Duration::ZERO,
    };
    if !running.is_empty() && !grace.is_zero() {
        log::info!(
            "waiting up to {} for {} running job(s)",
            crate::config::duration::format(grace),
            running.len()
        );
    }
    // 3. After the grace, kill what is left; those rows stay `running` and are
    //    recovered at the next start.
    if !pool.wait_idle(grace) {
        let n = running.cancel_all(SHUTDOWN_REASON);
        log::warn!("shutdown: killed {n} running job(s); they will be recovered at the next start");
    }
    pool.join();
    // No job runs any more: the warm containers go, before the lock.
    drop(warm);
    signal_handle.close();
    let _ = signal_thread.join();
    drop(watcher);
    // 4. Release the lock last, after every writer is gone.
    drop(conn);
    drop(lock);
    match outcome {
        Ok(why) => {
            log::info!("ductile stopped ({why})");
            Ok(())
        }
        Err(e) => {
            log::error!("ductile stopped on a fatal error: {e}");
            Err(DaemonError::Failed(e))
        }
    }
}

/// The API's reload: asks the control thread, which reloads exactly as on
/// SIGHUP, and waits for its verdict.
fn api_reload(control_tx: Sender<Control>) -> Box<crate::http::ReloadFn> {
    Box::new(move || {
        let (tx, rx) = bounded(1);
        if control_tx.send(Control::ReloadAndAnswer(tx)).is_err() {
            return Err(vec!["the daemon is shutting down".to_string()]);
        }
        rx.recv()
            .unwrap_or_else(|_| Err(vec!["the daemon is shutting down".to_string()]))
    })
}

/// Takes the instance lock for a daemon. A one-shot holding it is waited for
/// (up to [`START_WAIT`]); meanwhile the start is announced so one-shots stop
/// taking the lock and hand their jobs to us once we are ready.
fn take_lock(db: &Path, signals: &mut Signals) -> Result<InstanceLock, DaemonError> {
    let failed = |e: lock::LockError| match e {
        lock::LockError::Store(s) => DaemonError::from(s),
        other => DaemonError::Failed(other.to_string()),
    };
    let intent = match StartIntent::announce(db).map_err(failed)? {
        Ok(intent) => intent,
        Err(pid) => {
            let who = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            return Err(DaemonError::Failed(format!(
                "another ductile daemon{who} is starting on {}",
                db.display()
            )));
        }
    };
    let deadline = Instant::now() + START_WAIT;
    let mut told: Option<u32> = None;
    loop {
        if let Some(lock) = InstanceLock::try_acquire(db, lock::Role::Daemon).map_err(failed)? {
            drop(intent);
            return Ok(lock);
        }
        let holder = lock::holder(db);
        if let Some(h) = holder.filter(|h| h.role == Some(lock::Role::Daemon)) {
            return Err(DaemonError::Failed(format!(
                "{} already runs on {}; stop it first, or apply a new config with `ductile system reload`",
                h.describe(),
                db.display()
            )));
        }
        if let Some(h) = holder.filter(|h| told != Some(h.pid)) {
            log::info!(
                "waiting up to {}s for {} to finish with {}",
                START_WAIT.as_secs(),
                h.describe(),
                db.display()
            );
            told = Some(h.pid);
        }
        let now = Instant::now();
        if now >= deadline {
            let who = holder
                .map(|h| h.describe())
                .unwrap_or_else(|| "another ductile process".into());
            return Err(DaemonError::Failed(format!(
                "gave up after {}s waiting for {who} to release {}",
                START_WAIT.as_secs(),
                db.display()
            )));
        }
        if let Some(sig) = signals.pending().find(|s| *s == SIGTERM || *s == SIGINT) {
            let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
            return Err(DaemonError::Failed(format!(
                "{name} received while waiting for the lock on {}; not started",
                db.display()
            )));
        }
        // Short slices keep a SIGTERM during the wait answered promptly.
        lock::wait_for_change(
            db,
            holder.map(|h| h.pid),
            (deadline - now).min(Duration::from_millis(250)),
        );
    }
}

/// What the control loop guards besides the reload: the lock's identity file
/// and the ledger's files on disk.
struct Guard<'a> {
    lock: &'a mut InstanceLock,
    files: &'a integrity::FileIdentity,
}

impl Guard<'_> {
    /// Looks at the files after a change: a deleted or replaced ledger is fatal;
    /// a deleted or replaced lock file is re-created.
    fn check(&mut self) -> Result<(), String> {
        if let Some(what) = self.files.changed() {
            return Err(format!(
                "{what}: the ledger this daemon writes is gone from {}; stopping so nothing more is written into a file nobody can read (restart ductile to start on the file now at that path)",
                self.files.db().display()
            ));
        }
        match self.lock.restore_identity() {
            Ok(true) => log::warn!(
                "{} was deleted or replaced; re-created it",
                self.lock.path().display()
            ),
            Ok(false) => {}
            Err(e) => log::error!("cannot restore the lock file: {e}"),
        }
        Ok(())
    }
}

/// What the control thread needs to apply a reload.
struct Reloader<'a> {
    root: &'a Path,
    cell: &'a Arc<RuntimeCell>,
    reload_tx: &'a Sender<Arc<Runtime>>,
    wake_tx: &'a Sender<()>,
    clock: &'a dyn Clock,
    /// Told `RELOADING=1` before a reload and `READY=1` after it.
    notify: &'a notify::Notify,
    /// The warm containers, told which instances keep one after a reload.
    warm: &'a Warm,
    /// The listeners' addresses, for the status line after a reload.
    listening: Vec<String>,
}

/// The status line of a running daemon (`systemctl status`).
fn running_status(rt: &Runtime, listening: &[String]) -> String {
    let on = if listening.is_empty() {
        String::new()
    } else {
        format!(", listening on {}", listening.join(" and "))
    };
    format!(
        "running: {} plugin(s), {} worker(s){on}",
        rt.registry.plugins().count(),
        rt.config.service.max_workers
    )
}

/// [`reload`] between `RELOADING=1` and `READY=1`; a rejected reload is
/// ready too (the previous config runs on) and says so in its status.
fn reload_notified(r: &Reloader<'_>, conn: &mut Connection) -> Result<(), String> {
    r.notify.reloading();
    let verdict = reload(r, conn);
    let status = match &verdict {
        Ok(()) => format!(
            "{} (config reloaded)",
            running_status(&r.cell.current(), &r.listening)
        ),
        Err(why) => format!(
            "running the previous config: reload rejected: {}",
            why.lines().next().unwrap_or("")
        ),
    };
    r.notify.ready(&status);
    verdict
}

fn control_loop(
    r: &Reloader<'_>,
    conn: &mut Connection,
    control_rx: &Receiver<Control>,
    fatal_rx: &Receiver<String>,
    guard: &mut Guard<'_>,
) -> Result<&'static str, String> {
    loop {
        select! {
            recv(control_rx) -> msg => match msg {
                Ok(Control::Reload) => {
                    let _ = reload_notified(r, conn);
                }
                Ok(Control::ReloadAndAnswer(answer)) => {
                    let verdict = reload_notified(r, conn)
                        .map(|()| crate::clock::format_ts(r.clock.now()))
                        .map_err(|why| why.lines().map(str::to_string).collect());
                    let _ = answer.send(verdict);
                }
                Ok(Control::FilesChanged) => guard.check()?,
                Ok(Control::Shutdown(why)) => {
                    log::info!("{why} received: shutting down");
                    return Ok(why);
                }
                Err(_) => return Ok("signal thread ended"),
            },
            recv(fatal_rx) -> msg => {
                let why = msg.unwrap_or_else(|_| "fatal channel closed".into());
                // A write that failed because the file went away says so.
                guard.check()?;
                return Err(why);
            }
        }
    }
}

/// SIGHUP: validate the new config off to the side; keep the old one if it is
/// invalid (the reason is returned); otherwise swap it in, retire removed
/// plugins' queued jobs, run `init` where needed and let the scheduler pick up
/// its changes.
fn reload(r: &Reloader<'_>, conn: &mut Connection) -> Result<(), String> {
    let Reloader {
        root,
        cell,
        reload_tx,
        wake_tx,
        clock,
        warm,
        ..
    } = *r;
    let old = cell.current();
    // A rejection is recorded too: `system reload` waits for the verdict.
    let reject = |conn: &mut Connection, why: String| -> Result<(), String> {
        log::error!(target: "config", "reload rejected, keeping the running config: {why}");
        let now = clock.now();
        let recorded = (|| -> Result<(), StoreError> {
            let tx = queue::begin(conn)?;
            snapshots::record(
                &tx,
                "-",
                "[]",
                &format!("{}{why}", snapshots::REJECTED),
                now,
            )?;
            let findings: Vec<&str> = why.lines().collect();
            let fields = serde_json::json!({ "findings": findings });
            events::record(
                &tx,
                "config.reload_rejected",
                None,
                None,
                None,
                &fields,
                now,
            )?;
            tx.commit()
                .map_err(|e| StoreError::sqlite("commit the rejected reload", e))
        })();
        if let Err(e) = recorded {
            log::error!("cannot record the rejected reload: {e}");
        }
        Err(why)
    };
    if let Err(why) = crate::config::integrity::precheck(root) {
        return reject(conn, why);
    }
    let new = match Runtime::load(root) {
        Ok(rt) => Arc::new(rt),
        Err(e) => return reject(conn, e.to_string()),
    };
    // Verified like a start: a reload that fails the seal keeps the old config.
    if let Err(why) = crate::config::integrity::gate(&new.config)
        .map(drop)
        .and_then(|()| crate::check::strict_gate(&new, "reload"))
    {
        return reject(conn, why);
    }
    if new.config.state.path != old.config.state.path {
        return reject(
            conn,
            format!(
                "state.path changed from {} to {}; restart ductile to move the database",
                old.config.state.path.display(),
                new.config.state.path.display()
            ),
        );
    }
    for w in &new.warnings {
        log::warn!(target: "config", "{w}");
    }
    for w in &new.config.inactive {
        log::warn!(target: "config", "{w}");
    }
    cell.swap(new.clone());
    warm.reconcile(&new.registry);
    crate::log::set_level(&new.config.service.log_level);
    let result = (|| -> Result<(), StoreError> {
        let now = clock.now();
        let tx = queue::begin(conn)?;
        let mut removed = Vec::new();
        for p in old.registry.plugins() {
            if new.registry.get(&p.name).is_none() {
                let reason = format!(
                    "plugin `{}` was removed or disabled by a config reload",
                    p.name
                );
                let killed = queue::kill_queued(&tx, &p.name, None, &reason, now)?;
                if !killed.is_empty() {
                    log::warn!(plugin = p.name.as_str(); "{} queued job(s) marked dead: {reason}", killed.len());
                }
                removed.push(p.name.clone());
            }
        }
        let findings: Vec<String> = new
            .warnings
            .iter()
            .map(|w| w.to_string())
            .chain(new.config.inactive.iter().map(|w| w.to_string()))
            .collect();
        let fields = serde_json::json!({
            "plugins": new.registry.plugins().count(),
            "removed": removed,
            "findings": findings,
        });
        events::record(&tx, "config.reloaded", None, None, None, &fields, now)?;
        tx.commit()
            .map_err(|e| StoreError::sqlite("commit reload", e))?;
        snapshot(conn, &new, "reload", clock)?;
        run_inits(conn, &new, clock)
    })();
    if let Err(e) = result {
        log::error!("reload applied but its bookkeeping failed: {e}");
    }
    let _ = reload_tx.send(new.clone());
    // Init jobs may have been enqueued, and new parallelism caps may admit more.
    let _ = wake_tx.try_send(());
    if new.config.api.listen != old.config.api.listen
        || new.config.api.enabled != old.config.api.enabled
        || new.config.webhooks.listen != old.config.webhooks.listen
    {
        log::warn!(target: "config", "api.enabled, api.listen and webhooks.listen take effect at the next start; tokens, webhook endpoints and limits apply now");
    }
    log::info!(target: "config", plugins = new.registry.plugins().count(); "config reloaded");
    Ok(())
}

/// Records which files made up the running config.
fn snapshot(
    conn: &Connection,
    rt: &Runtime,
    reason: &str,
    clock: &dyn Clock,
) -> Result<(), StoreError> {
    let files: Vec<serde_json::Value> = rt
        .config
        .files
        .iter()
        .map(|f| serde_json::json!({"path": f.path, "hash": f.hash}))
        .collect();
    let joined: String = rt
        .config
        .files
        .iter()
        .map(|f| f.hash.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let hash = format!("blake3:{}", blake3::hash(joined.as_bytes()).to_hex());
    snapshots::record(
        conn,
        &hash,
        &serde_json::Value::Array(files).to_string(),
        reason,
        clock.now(),
    )?;
    Ok(())
}

/// Enqueues `init` for every plugin that declares it and is new or changed.
fn run_inits(conn: &mut Connection, rt: &Runtime, clock: &dyn Clock) -> Result<(), StoreError> {
    for p in rt.registry.plugins() {
        if p.manifest.command("init").is_none() {
            continue;
        }
        let fp = blake3::hash(
            format!(
                "{}\0{}\0{}\0{}\0{}",
                p.name,
                p.base,
                p.manifest.version,
                p.entrypoint.display(),
                p.conf.config
            )
            .as_bytes(),
        )
        .to_hex()
        .to_string();
        if health::fingerprint(conn, &p.name)?.as_deref() == Some(fp.as_str()) {
            continue;
        }
        let now = clock.now();
        let job = NewJob::new(
            &p.name,
            "init",
            serde_json::Value::Null,
            SubmittedBy::System,
            1,
        );
        let tx = queue::begin(conn)?;
        if let Enqueued::Created(id) =
            queue::enqueue_in(&tx, &job, rt.config.service.dedupe_ttl, now)?
        {
            health::pending(&tx, &p.name, &fp, &id, now)?;
            log::info!(plugin = p.name.as_str(), job_id = id.as_str(); "init enqueued (plugin new or changed)");
        }
        tx.commit()
            .map_err(|e| StoreError::sqlite("commit init", e))?;
    }
    Ok(())
}
