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
use std::thread;

use crossbeam_channel::{Receiver, Sender, bounded, select, unbounded};
use rusqlite::{Connection, params};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use crate::clock::{Clock, SystemClock, format_ts};
use crate::dispatch::SHUTDOWN_REASON;
use crate::dispatch::pool::{Pool, PoolConfig, RunningJobs};
use crate::lock::{self, InstanceLock};
use crate::runtime::{Runtime, RuntimeCell};
use crate::scheduler::heartbeat::{self, Heartbeat};
use crate::store::queue::{self, Enqueued, NewJob, SubmittedBy};
use crate::store::{self, StoreError, health};

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
        match e {
            StoreError::Schema { .. } => DaemonError::Config(e.to_string()),
            other => DaemonError::Failed(other.to_string()),
        }
    }
}

/// Messages to the main (control) thread.
enum Control {
    Reload,
    Shutdown(&'static str),
}

/// Runs the daemon in the foreground until SIGTERM/SIGINT; Ok on a clean stop.
pub fn run(root: &Path) -> Result<(), DaemonError> {
    run_with_clock(root, Arc::new(SystemClock))
}

/// [`run`] with an explicit clock.
pub fn run_with_clock(root: &Path, clock: Arc<dyn Clock>) -> Result<(), DaemonError> {
    let rt = Arc::new(Runtime::load(root).map_err(|e| DaemonError::Config(e.to_string()))?);
    crate::log::set_level(&rt.config.service.log_level);
    for w in &rt.warnings {
        log::warn!(target: "config", "{w}");
    }
    for w in &rt.config.inactive {
        log::warn!(target: "config", "{w}");
    }
    if rt.config.service.strict_mode && !rt.warnings.is_empty() {
        return Err(DaemonError::Config(format!(
            "strict_mode: refusing to start with {} configuration warning(s)",
            rt.warnings.len()
        )));
    }
    let db = rt.config.state.path.clone();
    let sync = rt.config.state.synchronous;
    let mut conn = store::open(&db, sync)?;
    let lock = InstanceLock::acquire(&lock::path_for(&db), lock::Role::Daemon)
        .map_err(|e| DaemonError::Failed(e.to_string()))?;
    for r in queue::recover_orphans(&mut conn, clock.now())? {
        log::warn!(plugin = r.plugin.as_str(), job_id = r.id.as_str(); "recovered orphaned job: now {} (attempt {})", r.status, r.attempt);
    }
    snapshot(&conn, &rt, "start", clock.as_ref())?;
    run_inits(&mut conn, &rt, clock.as_ref())?;

    let cell = Arc::new(RuntimeCell::new(rt.clone()));
    let running = Arc::new(RunningJobs::default());
    let (wake_tx, wake_rx) = bounded::<()>(1);
    let (fatal_tx, fatal_rx) = unbounded::<String>();
    let (control_tx, control_rx) = bounded::<Control>(8);
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT, SIGUSR1])
        .map_err(|e| DaemonError::Failed(format!("cannot install signal handlers: {e}")))?;
    let signal_handle = signals.handle();
    let signal_thread = {
        let wake_tx = wake_tx.clone();
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    let msg = match sig {
                        SIGHUP => Control::Reload,
                        SIGUSR1 => {
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

    let mut pool = Pool::start(PoolConfig {
        db: db.clone(),
        synchronous: sync,
        workers: rt.config.service.max_workers,
        runtime: cell.clone(),
        clock: clock.clone(),
        running: running.clone(),
        wake_rx,
        fatal_tx: fatal_tx.clone(),
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
    let scheduler = heartbeat::spawn(hb, sched_stop_rx, reload_rx, fatal_tx.clone())
        .map_err(|e| DaemonError::Failed(format!("cannot start the scheduler: {e}")))?;
    let _ = wake_tx.try_send(());
    log::info!(
        pid = std::process::id(),
        workers = rt.config.service.max_workers,
        plugins = rt.registry.plugins().count(),
        db = db.display().to_string().as_str();
        "ductile running"
    );

    let reloader = Reloader {
        root,
        cell: &cell,
        reload_tx: &reload_tx,
        wake_tx: &wake_tx,
        clock: clock.as_ref(),
    };
    let outcome = control_loop(&reloader, &mut conn, &control_rx, &fatal_rx);

    // Orderly stop; the comments number the steps of docs/ARCHITECTURE.md.
    // 1. No new scheduled work.
    drop(sched_stop_tx);
    if scheduler.join().is_err() {
        log::error!("the scheduler thread panicked; this is a bug");
    }
    // 2. No new claims; in-flight jobs run on.
    pool.stop_claiming();
    let grace = cell.current().config.service.shutdown_timeout;
    if !running.is_empty() {
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
        log::warn!(
            "shutdown timeout: killed {n} running job(s); they will be recovered at the next start"
        );
    }
    pool.join();
    signal_handle.close();
    let _ = signal_thread.join();
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

/// What the control thread needs to apply a reload.
struct Reloader<'a> {
    root: &'a Path,
    cell: &'a Arc<RuntimeCell>,
    reload_tx: &'a Sender<Arc<Runtime>>,
    wake_tx: &'a Sender<()>,
    clock: &'a dyn Clock,
}

fn control_loop(
    r: &Reloader<'_>,
    conn: &mut Connection,
    control_rx: &Receiver<Control>,
    fatal_rx: &Receiver<String>,
) -> Result<&'static str, String> {
    loop {
        select! {
            recv(control_rx) -> msg => match msg {
                Ok(Control::Reload) => reload(r, conn),
                Ok(Control::Shutdown(why)) => {
                    log::info!("{why} received: shutting down");
                    return Ok(why);
                }
                Err(_) => return Ok("signal thread ended"),
            },
            recv(fatal_rx) -> msg => return Err(msg.unwrap_or_else(|_| "fatal channel closed".into())),
        }
    }
}

/// SIGHUP: validate the new config off to the side; keep the old one if it is
/// invalid; otherwise swap it in, retire removed plugins' queued jobs, run
/// `init` where needed and let the scheduler pick up its changes.
fn reload(r: &Reloader<'_>, conn: &mut Connection) {
    let Reloader {
        root,
        cell,
        reload_tx,
        wake_tx,
        clock,
    } = *r;
    let old = cell.current();
    let new = match Runtime::load(root) {
        Ok(rt) => Arc::new(rt),
        Err(e) => {
            log::error!(target: "config", "reload rejected, keeping the running config: {e}");
            return;
        }
    };
    if new.config.state.path != old.config.state.path {
        log::error!(target: "config", "reload rejected: state.path changed from {} to {}; restart ductile to move the database", old.config.state.path.display(), new.config.state.path.display());
        return;
    }
    for w in &new.warnings {
        log::warn!(target: "config", "{w}");
    }
    for w in &new.config.inactive {
        log::warn!(target: "config", "{w}");
    }
    cell.swap(new.clone());
    crate::log::set_level(&new.config.service.log_level);
    let result = (|| -> Result<(), StoreError> {
        let now = clock.now();
        let tx = queue::begin(conn)?;
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
            }
        }
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
    log::info!(target: "config", plugins = new.registry.plugins().count(); "config reloaded");
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
    conn.execute(
        "INSERT INTO config_snapshots (config_hash, files_json, reason, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![hash, serde_json::Value::Array(files).to_string(), reason, format_ts(clock.now())],
    )
    .map_err(|e| StoreError::sqlite("record config snapshot", e))?;
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
