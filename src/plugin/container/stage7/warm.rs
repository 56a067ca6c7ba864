//! `keep_warm`: the resident containers of Stage7 instances, the bounded
//! exception to a container per job.
//!
//! Owns: every resident container, in one thread ("stage7-warm") that is the
//! only holder of their state. Workers ask it for a lease over a channel and
//! get the container's address; a `Lease` gives itself back when dropped,
//! so a lease cannot leak. Engine calls and health probes run on short-lived
//! helper threads that report back as messages, so one slow start never
//! holds up another instance's jobs.
//!
//! Lifetime of one container, `ductile-warm-<instance>-<8 hex>`: started by
//! the first job that needs it (later jobs wait for that start instead of
//! starting their own), leased to each job while it is up, probed every
//! `healthCheck.interval` while no job uses it, and removed (`rm -f`) when
//! `retries` probes in a row fail (a fresh one is started at once), when
//! `keep_warm` passes after its last job, when a job's request did not come
//! back whole, when a reload removes the instance or changes its container
//! block or `keep_warm`, and on shutdown. Before each start a marker file
//! named after the container is written under `<state dir>/warm/`; it goes
//! after the removal, so the next daemon start removes whatever a killed
//! daemon left.
//! Must not: share its state, or run an engine call on its own thread while
//! it has jobs to answer (the shutdown's removal excepted).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, select, unbounded};

use super::{Job, SLICE, Stage7, Stop, probe};
use crate::plugin::container::engine::{self, Engine};
use crate::plugin::container::{ContainerSpec, Envelope};
use crate::plugin::spawn::{self, CancelToken, JOB_ID_ENV};
use crate::plugin::{Plugin, Registry};

/// Name prefix of every warm container.
pub const WARM_PREFIX: &str = "ductile-warm-";

/// The directory under the state directory that holds one marker per warm
/// container that may exist.
pub const MARKER_DIR: &str = "warm";

/// Label set on every warm container, valued with its instance name.
pub const LABEL: &str = "ductile.warm";

/// Budget of the engine calls of one start, on top of the health budget.
const START_BUDGET: Duration = Duration::from_secs(120);

/// How the registry answers a job.
pub(super) enum Acquired {
    /// The container's address, for this job.
    Lease(Lease),
    /// The registry does not serve this job's config (a reload changed it
    /// after the job was claimed, or the daemon is stopping): it runs in a
    /// container of its own.
    NotServed,
    /// The job must end: its cancel or deadline came first, or the start it
    /// waited for failed.
    Stopped(Stop),
}

/// One job's use of a warm container; given back when dropped.
pub(super) struct Lease {
    tx: Sender<Msg>,
    serial: u64,
    addr: String,
    name: String,
    spoiled: Option<String>,
}

impl Lease {
    /// `127.0.0.1:<port>` of the API.
    pub(super) fn addr(&self) -> &str {
        &self.addr
    }

    /// The container's name.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Marks the container as not to be used again, for `why`.
    pub(super) fn spoil(&mut self, why: String) {
        self.spoiled = Some(why);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The owner is gone only after the daemon stopped: nothing to give back.
        let _ = self.tx.send(Msg::Release {
            serial: self.serial,
            spoiled: self.spoiled.take(),
        });
    }
}

/// What a job of a `keep_warm` instance brings to the registry.
#[derive(Debug)]
pub struct Resident<'a> {
    warm: &'a Warm,
    plugin: &'a Arc<Plugin>,
    keep_warm: Duration,
    fingerprint: String,
    health: super::HealthCheck,
}

impl<'a> Resident<'a> {
    /// The resident side of `plugin`'s jobs: `None` unless it is a Stage7
    /// instance with `keep_warm`.
    pub fn of(warm: &'a Warm, plugin: &'a Arc<Plugin>) -> Option<Resident<'a>> {
        let s7 = plugin.manifest.container.as_ref()?.stage7.as_deref()?;
        Some(Resident {
            warm,
            plugin,
            keep_warm: plugin.conf.keep_warm?,
            fingerprint: fingerprint(plugin)?,
            health: s7.health.clone(),
        })
    }

    /// Asks for the instance's container, waiting for its start if one is
    /// under way, until `interrupted` says the job must stop.
    pub(super) fn acquire(
        &self,
        engine: &Engine,
        env: &[String],
        interrupted: &dyn Fn() -> Option<Stop>,
    ) -> Acquired {
        let (reply, rx) = bounded(1);
        let setup = Setup {
            plugin: Arc::clone(self.plugin),
            engine: engine.clone(),
            env: env.to_vec(),
            keep_warm: self.keep_warm,
            fingerprint: self.fingerprint.clone(),
            health: self.health.clone(),
        };
        if self.warm.tx.send(Msg::Acquire { setup, reply }).is_err() {
            return Acquired::NotServed;
        }
        loop {
            match rx.recv_timeout(SLICE) {
                Ok(answer) => return answer,
                Err(RecvTimeoutError::Timeout) => {
                    // Dropping `rx` drops a lease sent meanwhile, which gives
                    // itself back.
                    if let Some(stop) = interrupted() {
                        return Acquired::Stopped(stop);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Acquired::NotServed,
            }
        }
    }
}

/// What `plugin`'s warm container is built from, as a short digest: its
/// container block (manifest or entry, the Stage7 health check and ports
/// included) and its `keep_warm` window, so a reload that changes either
/// replaces the container while one that changes only what each request
/// carries (its config, retries, schedules) keeps it. `None` when it keeps none.
pub fn fingerprint(plugin: &Plugin) -> Option<String> {
    let keep_warm = plugin.conf.keep_warm?;
    let spec = plugin.manifest.container.as_ref()?;
    if spec.envelope != Envelope::Stage7 || spec.stage7.is_none() {
        return None;
    }
    let text = format!("{keep_warm:?}\n{spec:?}");
    let hex = blake3::hash(text.as_bytes()).to_hex();
    Some(hex.as_str()[..16].to_string())
}

/// Why instance `name` cannot have `keep_warm`, if it cannot: only a Stage7
/// plugin serves between jobs.
pub fn load_problem(name: &str, spec: Option<&ContainerSpec>, keep_warm: bool) -> Option<String> {
    if !keep_warm {
        return None;
    }
    let kind = match spec {
        Some(s) if s.envelope == Envelope::Stage7 => return None,
        Some(s) => format!("a container plugin with envelope {}", s.envelope.as_str()),
        None => "a local plugin".to_string(),
    };
    Some(format!(
        "plugins.{name}.keep_warm: only a Stage7 plugin (a directory with manifest.json) keeps a warm container; `{name}` is {kind} (remove keep_warm)"
    ))
}

/// The instances that keep a warm container, with their fingerprints.
fn wanted(registry: &Registry) -> BTreeMap<String, String> {
    registry
        .plugins()
        .filter_map(|p| Some((p.name.clone(), fingerprint(p)?)))
        .collect()
}

/// The registry of warm containers: a handle on its owner thread. Dropping
/// it removes every warm container and waits for that.
#[derive(Debug)]
pub struct Warm {
    tx: Sender<Msg>,
    // Dropped first (see Drop): the owner then removes everything and exits.
    stop_tx: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Warm {
    /// Removes the warm containers a previous holder of the ledger in
    /// `state_dir` left (their markers say which), then starts the owner
    /// thread serving the instances of `registry` that keep one.
    pub fn start(state_dir: &Path, registry: &Registry) -> std::io::Result<Warm> {
        let markers = state_dir.join(MARKER_DIR);
        remove_leftovers(&markers);
        let (tx, rx) = unbounded();
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let owner = Owner {
            tx: tx.clone(),
            markers,
            wanted: wanted(registry),
            serving: BTreeMap::new(),
            draining: Vec::new(),
            removals: Vec::new(),
            next_serial: 0,
        };
        let thread = std::thread::Builder::new()
            .name("stage7-warm".into())
            .spawn(move || owner.run(&rx, &stop_rx))?;
        Ok(Warm {
            tx,
            stop_tx: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// A reload's new registry: containers of instances it removed, or whose
    /// container block or `keep_warm` changed, are removed (once their jobs end).
    pub fn reconcile(&self, registry: &Registry) {
        let _ = self.tx.send(Msg::Reconcile(wanted(registry)));
    }
}

impl Drop for Warm {
    fn drop(&mut self) {
        self.stop_tx.take();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("the stage7-warm thread panicked; this is a bug");
            }
        }
    }
}

/// What it takes to start an instance's container.
#[derive(Clone)]
struct Setup {
    plugin: Arc<Plugin>,
    engine: Engine,
    env: Vec<String>,
    keep_warm: Duration,
    fingerprint: String,
    /// Its Stage7 health check (the plugin is known to be Stage7).
    health: super::HealthCheck,
}

/// What reaches the owner thread.
enum Msg {
    /// A job wants its instance's container.
    Acquire {
        setup: Setup,
        reply: Sender<Acquired>,
    },
    /// A lease came back.
    Release {
        serial: u64,
        spoiled: Option<String>,
    },
    /// A reload: the instances that keep a container now.
    Reconcile(BTreeMap<String, String>),
    /// A start helper finished.
    Started {
        serial: u64,
        result: Result<Up, Stop>,
    },
    /// A health probe finished.
    Probed {
        serial: u64,
        result: Result<(), String>,
    },
}

/// A container that answers its health check.
struct Up {
    addr: String,
    id: String,
}

enum Phase {
    /// Its start helper runs; the jobs waiting for it.
    Starting {
        cancel: Arc<CancelToken>,
        helper: Option<JoinHandle<()>>,
        waiters: Vec<Sender<Acquired>>,
    },
    /// Up and leased out on request.
    Ready {
        addr: String,
        failures: u32,
        next_probe: Instant,
        probing: bool,
    },
}

struct Container {
    serial: u64,
    instance: String,
    name: String,
    setup: Setup,
    phase: Phase,
    leases: usize,
    idle_since: Instant,
    /// Keeps the engine's monitor of the container from the orphan sweep.
    held: Option<spawn::group::Held>,
    /// Why it was taken out of service, once it was.
    retired_for: Option<String>,
}

struct Owner {
    tx: Sender<Msg>,
    markers: PathBuf,
    wanted: BTreeMap<String, String>,
    /// The container of each instance that takes new jobs.
    serving: BTreeMap<String, Container>,
    /// Retired containers whose jobs have not all ended (or whose start has
    /// not returned yet).
    draining: Vec<Container>,
    removals: Vec<JoinHandle<()>>,
    next_serial: u64,
}

impl Owner {
    fn run(mut self, rx: &Receiver<Msg>, stop_rx: &Receiver<()>) {
        loop {
            let now = Instant::now();
            self.tick(now);
            let wait = self.next_due().map_or(Duration::from_secs(3600), |at| {
                at.saturating_duration_since(now)
            });
            select! {
                recv(stop_rx) -> _ => break,
                recv(rx) -> msg => match msg {
                    Ok(m) => self.handle(m),
                    Err(_) => break,
                },
                default(wait) => {}
            }
        }
        self.shutdown();
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Acquire { setup, reply } => self.acquire(setup, reply),
            Msg::Release { serial, spoiled } => self.release(serial, spoiled),
            Msg::Reconcile(wanted) => {
                self.wanted = wanted;
                let stale: Vec<String> = self
                    .serving
                    .iter()
                    .filter(|(i, c)| self.wanted.get(*i) != Some(&c.setup.fingerprint))
                    .map(|(i, _)| i.clone())
                    .collect();
                for instance in stale {
                    self.retire(
                        &instance,
                        "a reload removed the plugin or changed its config",
                    );
                }
            }
            Msg::Started { serial, result } => self.started(serial, result),
            Msg::Probed { serial, result } => self.probed(serial, result),
        }
    }

    fn acquire(&mut self, setup: Setup, reply: Sender<Acquired>) {
        let instance = setup.plugin.name.clone();
        if self.wanted.get(&instance) != Some(&setup.fingerprint) {
            let _ = reply.send(Acquired::NotServed);
            return;
        }
        // `service.container_engine` is not part of the instance's entry.
        if self
            .serving
            .get(&instance)
            .is_some_and(|c| c.setup.engine != setup.engine)
        {
            self.retire(&instance, "the container engine changed");
        }
        if !self.serving.contains_key(&instance) {
            if let Err(stop) = self.start(setup, Instant::now()) {
                let _ = reply.send(Acquired::Stopped(stop));
                return;
            }
        }
        let tx = self.tx.clone();
        let Some(c) = self.serving.get_mut(&instance) else {
            return;
        };
        match &mut c.phase {
            Phase::Starting { waiters, .. } => waiters.push(reply),
            Phase::Ready { addr, .. } => {
                c.leases += 1;
                // A lease that cannot be delivered is dropped, which gives it back.
                let _ = reply.send(Acquired::Lease(Lease {
                    tx,
                    serial: c.serial,
                    addr: addr.clone(),
                    name: c.name.clone(),
                    spoiled: None,
                }));
            }
        }
    }

    /// Records the marker and starts a container for `setup`'s instance on a
    /// helper thread; it serves once the helper reports it up. `idle_since`
    /// is when its instance's last job ended (now for a first start), which
    /// a restart carries over so that it never extends `keep_warm`.
    fn start(&mut self, setup: Setup, idle_since: Instant) -> Result<(), Stop> {
        let instance = setup.plugin.name.clone();
        self.next_serial += 1;
        let serial = self.next_serial;
        let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        let tag = format!("warm-{instance}-{suffix}");
        let name = crate::plugin::container::container_name(&tag);
        std::fs::create_dir_all(&self.markers)
            .and_then(|()| std::fs::write(self.markers.join(&name), setup.engine.name))
            .map_err(|e| {
                Stop::SpawnFailed(format!(
                    "cannot record warm container {name} under {}: {e}",
                    self.markers.display()
                ))
            })?;
        let held = spawn::group::hold(&tag);
        let cancel = Arc::new(CancelToken::new());
        let helper = {
            let (cancel, tx) = (cancel.clone(), self.tx.clone());
            let plugin = Arc::clone(&setup.plugin);
            let (engine, env) = (setup.engine.clone(), setup.env.clone());
            let (tag, name) = (tag.clone(), name.clone());
            std::thread::Builder::new()
                .name("stage7-warm-start".into())
                .spawn(move || {
                    let result = bring_up(&plugin, &engine, &env, &tag, &name, &cancel);
                    let _ = tx.send(Msg::Started { serial, result });
                })
        };
        let helper = match helper {
            Ok(h) => h,
            Err(e) => {
                let _ = std::fs::remove_file(self.markers.join(&name));
                return Err(Stop::SpawnFailed(format!(
                    "cannot start a thread for warm container {name}: {e}"
                )));
            }
        };
        log::info!(plugin = instance.as_str(); "starting warm container {name}");
        let c = Container {
            serial,
            instance: instance.clone(),
            name,
            setup,
            phase: Phase::Starting {
                cancel,
                helper: Some(helper),
                waiters: Vec::new(),
            },
            leases: 0,
            idle_since,
            held: Some(held),
            retired_for: None,
        };
        self.serving.insert(instance, c);
        Ok(())
    }

    fn started(&mut self, serial: u64, result: Result<Up, Stop>) {
        if let Some(i) = self.draining.iter().position(|c| c.serial == serial) {
            let mut c = self.draining.swap_remove(i);
            join_helper(&mut c);
            let why = c.retired_for.take().unwrap_or_default();
            self.remove(c, &why);
            return;
        }
        let Some(instance) = self.instance_of(serial) else {
            return;
        };
        let Some(mut c) = self.serving.remove(&instance) else {
            return;
        };
        join_helper(&mut c);
        let waiters = match &mut c.phase {
            Phase::Starting { waiters, .. } => std::mem::take(waiters),
            Phase::Ready { .. } => Vec::new(),
        };
        match result {
            Ok(up) => {
                let interval = c.setup.health.interval;
                let short = up.id.get(..12).unwrap_or(&up.id);
                log::info!(plugin = instance.as_str(); "started warm container {} ({short}) on {}", c.name, up.addr);
                let now = Instant::now();
                c.phase = Phase::Ready {
                    addr: up.addr.clone(),
                    failures: 0,
                    next_probe: now + interval,
                    probing: false,
                };
                for reply in waiters {
                    c.leases += 1;
                    let _ = reply.send(Acquired::Lease(Lease {
                        tx: self.tx.clone(),
                        serial: c.serial,
                        addr: up.addr.clone(),
                        name: c.name.clone(),
                        spoiled: None,
                    }));
                }
                self.serving.insert(instance, c);
            }
            Err(stop) => {
                log::warn!(plugin = instance.as_str(); "warm container {} did not come up: {}", c.name, describe(&stop));
                for reply in waiters {
                    let _ = reply.send(Acquired::Stopped(stop.clone()));
                }
                self.remove(c, "its start failed");
            }
        }
    }

    fn release(&mut self, serial: u64, spoiled: Option<String>) {
        let now = Instant::now();
        if let Some(i) = self.draining.iter().position(|c| c.serial == serial) {
            let c = &mut self.draining[i];
            c.leases = c.leases.saturating_sub(1);
            if c.leases == 0 && matches!(c.phase, Phase::Ready { .. }) {
                let mut c = self.draining.swap_remove(i);
                let why = c.retired_for.take().unwrap_or_default();
                self.remove(c, &why);
            }
            return;
        }
        let Some(instance) = self.instance_of(serial) else {
            return;
        };
        if let Some(c) = self.serving.get_mut(&instance) {
            c.leases = c.leases.saturating_sub(1);
            if c.leases == 0 {
                c.idle_since = now;
                let interval = c.setup.health.interval;
                if let Phase::Ready { next_probe, .. } = &mut c.phase {
                    *next_probe = now + interval;
                }
            }
        }
        if let Some(why) = spoiled {
            self.retire(&instance, &why);
        }
    }

    fn probed(&mut self, serial: u64, result: Result<(), String>) {
        let Some(instance) = self.instance_of(serial) else {
            return;
        };
        let Some(c) = self.serving.get_mut(&instance) else {
            return;
        };
        let (interval, retries) = (c.setup.health.interval, c.setup.health.retries);
        let busy = c.leases > 0;
        let Phase::Ready {
            failures,
            next_probe,
            probing,
            ..
        } = &mut c.phase
        else {
            return;
        };
        *probing = false;
        *next_probe = Instant::now() + interval;
        // A job is the better probe while it runs: its own timeout bounds it.
        if busy {
            *failures = 0;
            return;
        }
        match result {
            Ok(()) => *failures = 0,
            Err(why) => {
                *failures += 1;
                if *failures < retries {
                    log::debug!(plugin = instance.as_str(); "warm container {}: health check failed ({}/{retries}): {why}", c.name, *failures);
                    return;
                }
                let reason =
                    format!("{retries} health checks in a row failed (last: {why}); restarting it");
                let Some(old) = self.serving.remove(&instance) else {
                    return;
                };
                let idle_since = old.idle_since;
                let setup = old.setup.clone();
                self.drain_or_remove(old, &reason);
                if let Err(stop) = self.start(setup, idle_since) {
                    log::warn!(plugin = instance.as_str(); "cannot restart the warm container: {}", describe(&stop));
                }
            }
        }
    }

    /// Lapses and due probes.
    fn tick(&mut self, now: Instant) {
        let mut lapsed = Vec::new();
        for (instance, c) in &mut self.serving {
            if c.leases > 0 {
                continue;
            }
            let Phase::Ready {
                addr,
                next_probe,
                probing,
                ..
            } = &mut c.phase
            else {
                continue;
            };
            if now >= c.idle_since + c.setup.keep_warm {
                lapsed.push((instance.clone(), c.setup.keep_warm));
                continue;
            }
            if *probing || now < *next_probe {
                continue;
            }
            let hc = c.setup.health.clone();
            let url = format!("http://{addr}{}", hc.path);
            let (tx, serial) = (self.tx.clone(), c.serial);
            let spawned = std::thread::Builder::new()
                .name("stage7-warm-probe".into())
                .spawn(move || {
                    let result = probe(&url, hc.timeout);
                    let _ = tx.send(Msg::Probed { serial, result });
                });
            match spawned {
                Ok(_) => *probing = true,
                Err(e) => {
                    log::warn!(plugin = instance.as_str(); "cannot start a health probe of {}: {e}", c.name);
                    *next_probe = now + hc.interval;
                }
            }
        }
        for (instance, keep_warm) in lapsed {
            self.retire(
                &instance,
                &format!(
                    "keep_warm {} lapsed after its last job",
                    crate::config::duration::format(keep_warm)
                ),
            );
        }
        self.removals.retain(|h| !h.is_finished());
    }

    /// When the owner must next look at the clock: a lapse or a probe.
    fn next_due(&self) -> Option<Instant> {
        self.serving
            .values()
            .filter(|c| c.leases == 0)
            .filter_map(|c| match &c.phase {
                Phase::Ready {
                    next_probe,
                    probing,
                    ..
                } => {
                    let lapse = c.idle_since + c.setup.keep_warm;
                    Some(if *probing {
                        lapse
                    } else {
                        lapse.min(*next_probe)
                    })
                }
                Phase::Starting { .. } => None,
            })
            .min()
    }

    fn instance_of(&self, serial: u64) -> Option<String> {
        self.serving
            .iter()
            .find(|(_, c)| c.serial == serial)
            .map(|(i, _)| i.clone())
    }

    /// Takes `instance`'s container out of service for `why`.
    fn retire(&mut self, instance: &str, why: &str) {
        if let Some(c) = self.serving.remove(instance) {
            self.drain_or_remove(c, why);
        }
    }

    /// Removes `c` now when nothing uses it, else once its jobs end (or its
    /// start returns).
    fn drain_or_remove(&mut self, mut c: Container, why: &str) {
        c.retired_for = Some(why.to_string());
        match &c.phase {
            Phase::Ready { .. } if c.leases == 0 => self.remove(c, why),
            Phase::Starting { cancel, .. } => {
                cancel.cancel(why);
                log::info!(plugin = c.instance.as_str(); "warm container {} is retired while starting: {why}", c.name);
                self.draining.push(c);
            }
            Phase::Ready { .. } => {
                log::info!(plugin = c.instance.as_str(); "warm container {} is retired once its {} job(s) end: {why}", c.name, c.leases);
                self.draining.push(c);
            }
        }
    }

    /// `rm -f` on a helper thread, then the marker goes and the monitor is
    /// no longer held.
    fn remove(&mut self, mut c: Container, why: &str) {
        let held = c.held.take();
        let marker = self.markers.join(&c.name);
        let (engine, name, instance, why) = (
            c.setup.engine.clone(),
            c.name.clone(),
            c.instance.clone(),
            why.to_string(),
        );
        let work = move || {
            match engine::remove(&engine, std::slice::from_ref(&name)) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&marker);
                    log::info!(plugin = instance.as_str(); "removed warm container {name}: {why}");
                }
                Err(e) => {
                    log::warn!(plugin = instance.as_str(); "cannot remove warm container {name} ({why}): {e}; the next start removes it")
                }
            }
            drop(held);
        };
        let spawned = std::thread::Builder::new()
            .name("stage7-warm-rm".into())
            .spawn(work);
        match spawned {
            Ok(h) => self.removals.push(h),
            Err(e) => {
                log::warn!(plugin = c.instance.as_str(); "cannot start a thread to remove warm container {}: {e}; the next start removes it", c.name)
            }
        }
    }

    /// Shutdown: every start is cancelled and awaited, then every container
    /// is removed, all before the daemon goes on to release its lock.
    fn shutdown(mut self) {
        let mut all: Vec<Container> = std::mem::take(&mut self.serving).into_values().collect();
        all.append(&mut self.draining);
        for c in &all {
            if let Phase::Starting { cancel, .. } = &c.phase {
                cancel.cancel(crate::dispatch::SHUTDOWN_REASON);
            }
        }
        for c in &mut all {
            join_helper(c);
        }
        for h in self.removals.drain(..) {
            let _ = h.join();
        }
        let mut by_engine: BTreeMap<&'static str, (Engine, Vec<String>)> = BTreeMap::new();
        for c in &all {
            by_engine
                .entry(c.setup.engine.name)
                .or_insert_with(|| (c.setup.engine.clone(), Vec::new()))
                .1
                .push(c.name.clone());
        }
        for (engine, names) in by_engine.values() {
            match remove_marked(engine, names, &self.markers) {
                Ok(()) => {
                    log::info!(
                        "removed {} warm container(s) on shutdown: {}",
                        names.len(),
                        names.join(", ")
                    );
                }
                Err(e) => log::warn!(
                    "cannot remove warm containers {} on shutdown: {e}; the next start removes them",
                    names.join(", ")
                ),
            }
        }
        // The monitors are gone with their containers.
        drop(all);
    }
}

/// Waits for a starting container's helper, which a cancel ends promptly.
fn join_helper(c: &mut Container) {
    if let Phase::Starting { helper, .. } = &mut c.phase {
        if let Some(h) = helper.take() {
            let _ = h.join();
        }
    }
}

fn describe(stop: &Stop) -> String {
    match stop {
        Stop::TimedOut => "its start timed out".to_string(),
        Stop::Cancelled(r) => format!("cancelled ({r})"),
        Stop::SpawnFailed(m) | Stop::Unhealthy(m) => m.clone(),
    }
}

/// Starts the container named `name` and waits for its health check, on a
/// helper thread, bounded by [`START_BUDGET`] plus the health budget.
fn bring_up(
    plugin: &Plugin,
    engine: &Engine,
    env: &[String],
    tag: &str,
    name: &str,
    cancel: &CancelToken,
) -> Result<Up, Stop> {
    let Some(spec) = plugin.manifest.container.as_ref() else {
        return Err(Stop::SpawnFailed("not a container plugin".into()));
    };
    let Some(s7) = spec.stage7.as_deref() else {
        return Err(Stop::SpawnFailed("not a Stage7 plugin".into()));
    };
    let health_budget = s7.health.interval.saturating_mul(s7.health.retries);
    let job = Job {
        engine,
        env,
        job_id: tag,
        name: name.to_string(),
        deadline: Instant::now() + START_BUDGET + health_budget,
        cancel,
        warnings: Vec::new(),
    };
    let args = warm_args(spec, s7, tag, &plugin.name);
    let (addr, id) = job.start(&args, spec, s7)?;
    job.wait_healthy(&addr, &s7.health)?;
    Ok(Up { addr, id })
}

/// The names of the resident containers of `instance` the engine runs now
/// for the daemon whose state directory is `state_dir` (the ones it left a
/// marker for: another daemon on the host may run an instance of the same
/// name), for `plugin list`; empty when the engine cannot say.
pub fn resident(engine: &Engine, instance: &str, state_dir: &Path) -> Vec<String> {
    let filter = format!("label={LABEL}={instance}");
    let o = engine::call(
        engine,
        &["ps", "--filter", &filter, "--format", "{{.Names}}"],
        "container-ps",
    );
    if o.exit_code != Some(0) {
        return Vec::new();
    }
    let held = held(state_dir, instance);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::trim)
        .filter(|n| held.iter().any(|h| h == n))
        .map(str::to_string)
        .collect()
}

/// The warm containers a daemon holds for `instance` now (starting or up),
/// read from its markers under `state_dir`: no engine call, so the API can
/// answer it on a request thread.
pub fn held(state_dir: &Path, instance: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(state_dir.join(MARKER_DIR)) else {
        return Vec::new();
    };
    let prefix = format!("{WARM_PREFIX}{instance}-");
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            // The suffix is 8 hex digits, so instance `a` never claims `a-b`'s.
            n.strip_prefix(&prefix)
                .is_some_and(|s| s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .collect();
    names.sort();
    names
}

/// The argv of a warm container: a Stage7 job's, named after `tag`, labelled
/// with its instance and without a job id of its own (it serves many jobs).
pub fn warm_args(spec: &ContainerSpec, s7: &Stage7, tag: &str, instance: &str) -> Vec<OsString> {
    let mut args = super::start_args(spec, s7, tag);
    let job_env = OsString::from(format!("{JOB_ID_ENV}={tag}"));
    if let Some(i) = args.iter().position(|a| *a == job_env) {
        // `-e` precedes it.
        args.drain(i.saturating_sub(1)..=i);
    }
    args.insert(1, OsString::from(format!("--label={LABEL}={instance}")));
    args
}

/// Removes containers `names` with `engine`, then their markers under
/// `markers` (kept when the removal fails, so a later start tries again).
fn remove_marked(engine: &Engine, names: &[String], markers: &Path) -> Result<(), String> {
    engine::remove(engine, names)?;
    for n in names {
        let _ = std::fs::remove_file(markers.join(n));
    }
    Ok(())
}

/// Removes the containers named by the markers in `markers` (a killed
/// daemon's), then the markers of those that are gone.
fn remove_leftovers(markers: &Path) {
    let Ok(entries) = std::fs::read_dir(markers) else {
        return;
    };
    let mut by_engine: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(WARM_PREFIX) {
            continue;
        }
        let engine = std::fs::read_to_string(e.path()).unwrap_or_default();
        by_engine
            .entry(engine.trim().to_string())
            .or_default()
            .push(name);
    }
    for (engine_name, names) in by_engine {
        let wanted = (!engine_name.is_empty()).then_some(engine_name.as_str());
        let removed =
            engine::resolve(wanted, None).and_then(|e| remove_marked(&e, &names, markers));
        match removed {
            Ok(()) => {
                log::warn!(
                    "removed {} warm container(s) a previous daemon left: {}",
                    names.len(),
                    names.join(", ")
                );
            }
            Err(e) => log::warn!(
                "cannot remove warm containers a previous daemon left ({}): {e}",
                names.join(", ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_names_only_this_instances_markers() {
        let tmp = crate::store::testing::TempDir::new("warm-held");
        assert!(held(&tmp.0, "a").is_empty(), "no marker directory yet");
        let markers = tmp.0.join(MARKER_DIR);
        std::fs::create_dir_all(&markers).unwrap();
        for n in [
            "ductile-warm-a-0123abcd",
            "ductile-warm-a-b-89abcdef",
            "ductile-warm-a-not-hex!",
            "ductile-warm-ab-01234567",
            "ductile-warm-a-00000000",
        ] {
            std::fs::write(markers.join(n), "podman").unwrap();
        }
        assert_eq!(
            held(&tmp.0, "a"),
            ["ductile-warm-a-00000000", "ductile-warm-a-0123abcd"]
        );
        assert_eq!(held(&tmp.0, "a-b"), ["ductile-warm-a-b-89abcdef"]);
    }

    #[test]
    fn a_warm_container_is_labelled_and_carries_no_job_id() {
        let spec = stage7_spec();
        let argv = crate::plugin::container::assert_flags(
            warm_args(&spec, spec.stage7.as_ref().unwrap(), "warm-x-0123abcd", "x"),
            &[
                "-d",
                "--label=ductile.warm=x",
                "--name=ductile-warm-x-0123abcd",
                "--publish=127.0.0.1::9000",
                "--publish=127.0.0.1::9100",
                "--read-only",
                "--cap-drop=ALL",
            ],
        );
        assert!(
            !argv.iter().any(|a| a.starts_with("DUCTILE_JOB_ID=")),
            "{argv:?}"
        );
        assert_eq!(argv.last().map(String::as_str), Some("x:1"));
        // Exactly the job id's `-e` pair went, nothing around it.
        let own: Vec<String> = super::super::start_args(&spec, spec.stage7.as_ref().unwrap(), "j")
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let flags = |v: &[String]| v.iter().filter(|a| *a == "-e").count();
        assert_eq!(flags(&argv), flags(&own) - 1, "{argv:?}");
        assert_eq!(argv.len(), own.len() - 1, "{argv:?} / {own:?}");
    }

    /// A Stage7 plugin's container block, from its manifest.
    fn stage7_spec() -> ContainerSpec {
        let text = r#"{"id": "x", "verb": "X", "name": "X", "inputDefinitions": [], "outputDefinitions": [],
            "container": {"image": "x:1", "ports": [9000, 9100]}, "api": {}}"#;
        let m = super::super::manifest::parse(Path::new("manifest.json"), text).unwrap();
        m.container.unwrap()
    }

    #[test]
    fn keep_warm_is_for_stage7_plugins_only() {
        assert_eq!(load_problem("a", None, false), None);
        assert_eq!(
            load_problem("a", None, true).as_deref(),
            Some(
                "plugins.a.keep_warm: only a Stage7 plugin (a directory with manifest.json) keeps a warm container; `a` is a local plugin (remove keep_warm)"
            )
        );
        let v2 = crate::plugin::container::spec::parse(
            &serde_yaml::from_str(
                "image: 44f2d68caa6d4cf5dec2252ed756e44c9cd85b7bba90409096d63b5fb8b4e8b9",
            )
            .unwrap(),
        )
        .unwrap();
        assert!(
            load_problem("a", Some(&v2), true)
                .unwrap()
                .contains("`a` is a container plugin with envelope protocol-v2")
        );
        assert_eq!(load_problem("a", Some(&stage7_spec()), true), None);
    }
}
