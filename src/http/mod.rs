//! HTTP surfaces: the API listener (`api.listen`) and the webhook listener
//! (`webhooks.listen`), both served by a fixed number of request threads per
//! listener on the vendored `tiny_http`, which enforces the connection, header,
//! body and time limits before a request reaches a thread here.
//!
//! Owns: listeners, request parsing into [`Req`], routing to `api` and
//! `webhooks`, JSON error answers, the request threads' SQLite connections.
//! Must not: spawn plugins or change job state except through `store`.

pub mod api;
pub mod auth;
pub mod bridge;
pub mod d6e;
pub mod events;
pub mod intake;
pub mod metrics;
pub mod openapi;
pub mod relay;
mod request;
pub mod session;
pub mod settings;
pub mod ui;
pub mod webhooks;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::Sender;
use rusqlite::Connection;

use crate::clock::Clock;
use crate::config::Synchronous;
use crate::dispatch::pool::RunningJobs;
use crate::runtime::RuntimeCell;
use crate::store::{self, StoreError};
pub use request::{Reply, Req};
use settings::Settings;

/// Why the HTTP surfaces could not start.
#[derive(Debug)]
pub enum HttpError {
    /// A listen address could not be bound (names the key and the address).
    Bind {
        /// `api.listen` or `webhooks.listen`.
        key: &'static str,
        /// The address as configured.
        addr: String,
        /// What the OS said.
        error: std::io::Error,
    },
    /// A request thread could not be started.
    Thread(std::io::Error),
    /// The configuration forbids starting (strict mode with no tokens).
    Refused(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Bind { key, addr, error } => {
                write!(f, "cannot listen on {key} `{addr}`: {error}")
            }
            HttpError::Thread(e) => write!(f, "cannot start an HTTP request thread: {e}"),
            HttpError::Refused(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for HttpError {}

/// Applies a reload the way SIGHUP does; `Ok` carries the reload time,
/// `Err` the findings that kept the running config.
pub type ReloadFn = dyn Fn() -> Result<String, Vec<String>> + Send + Sync;

/// What every request thread shares: all of it immutable or internally
/// synchronised; the ledger is reached through each thread's own connection.
pub struct Services {
    /// The runtime snapshot in force (swapped on reload).
    pub cell: Arc<RuntimeCell>,
    /// The ledger.
    pub db: PathBuf,
    /// Its durability level.
    pub synchronous: Synchronous,
    /// Wakes the dispatcher after an enqueue.
    pub wake: Sender<()>,
    /// Applies a reload (the control thread does the work).
    pub reload: Box<ReloadFn>,
    /// When the daemon started.
    pub started: Instant,
    /// The time source.
    pub clock: Arc<dyn Clock>,
    /// Jobs running now (worker utilisation).
    pub running: Arc<RunningJobs>,
    /// Set (before a wake) to have the dispatcher carry out the ledger's
    /// pending cancel requests.
    pub requests: Arc<std::sync::atomic::AtomicBool>,
    /// Worker pool size at start.
    pub workers: usize,
    /// Counters for `/metrics`.
    pub metrics: metrics::Metrics,
    /// The live event streams.
    pub events: events::Hub,
    /// Requests waiting for synchronous pipelines.
    pub bridge: bridge::Bridge,
    /// The writer that commits what requests enqueue.
    pub intake: intake::Intake,
}

impl Services {
    /// The listener settings and tokens of the runtime in force.
    pub fn settings(&self) -> Arc<Settings> {
        Settings::of(&self.cell.current())
    }

    /// Wakes the dispatcher (a job was committed). With every worker busy it
    /// is left asleep: a worker claims its next job in its own completion.
    pub fn wake_dispatcher(&self) {
        if self.running.len() < self.workers {
            let _ = self.wake.try_send(());
        }
        self.events.notify();
    }
}

/// One listener and the threads serving it.
struct Listener {
    server: Arc<tiny_http::Server>,
    threads: Vec<JoinHandle<()>>,
}

/// The running listeners; [`Listeners::stop`] ends them.
pub struct Listeners {
    listeners: Vec<Listener>,
}

/// Which surface a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The REST API.
    Api,
    /// Webhook endpoints (and `/healthz`).
    Webhooks,
}

impl Listeners {
    /// Binds and starts every configured listener; the addresses actually bound
    /// are logged (a `:0` port is resolved).
    pub fn start(svc: Arc<Services>) -> Result<Listeners, HttpError> {
        let settings = svc.settings();
        let mut listeners = Vec::new();
        if settings.api.enabled {
            if svc.cell.current().tokens.is_empty() {
                if settings.strict {
                    return Err(HttpError::Refused(
                        "strict_mode: api.enabled is true but no API token is configured (api.auth.tokens or tokens.yaml); refusing to start".into(),
                    ));
                }
                log::warn!(target: "http", "the API is enabled with no token configured: every authenticated route answers 401 until a token is added to api.auth.tokens or tokens.yaml");
            }
            listeners.push(serve(
                &svc,
                Surface::Api,
                "api.listen",
                &settings.api.listen,
            )?);
        }
        if let Some(addr) = &settings.webhooks_listen {
            for e in settings.webhooks.iter().filter(|e| e.token_auth) {
                log::info!(target: "http", "webhook `{}` accepts a bearer token instead of an HMAC signature (auth: token)", e.name);
            }
            listeners.push(serve(&svc, Surface::Webhooks, "webhooks.listen", addr)?);
        }
        Ok(Listeners { listeners })
    }

    /// The addresses bound, in start order (API first when enabled).
    pub fn addresses(&self) -> Vec<String> {
        self.listeners
            .iter()
            .map(|l| l.server.server_addr().to_string())
            .collect()
    }

    /// Stops accepting, lets the request threads finish their request, joins them.
    pub fn stop(self) {
        for l in &self.listeners {
            for _ in &l.threads {
                l.server.unblock();
            }
        }
        for l in self.listeners {
            for t in l.threads {
                if t.join().is_err() {
                    log::error!(target: "http", "an HTTP request thread panicked; this is a bug");
                }
            }
        }
    }
}

fn serve(
    svc: &Arc<Services>,
    surface: Surface,
    key: &'static str,
    addr: &str,
) -> Result<Listener, HttpError> {
    let bind_error = |error| HttpError::Bind {
        key,
        addr: addr.to_string(),
        error,
    };
    let socket = TcpListener::bind(addr).map_err(bind_error)?;
    let settings = svc.settings();
    let limits = settings.limits(surface, svc.cell.clone());
    let server = tiny_http::Server::from_listener_with_limits(socket, None, limits)
        .map_err(|e| bind_error(std::io::Error::other(e.to_string())))?;
    let server = Arc::new(server);
    log::info!(target: "http", "{} listening on http://{}", key, server.server_addr());
    let rt = svc.cell.current();
    if surface == Surface::Api && ui::served(&rt.config.api) {
        let base = &rt.config.api.base_path;
        if rt.tokens.is_empty() {
            log::info!(target: "http", "dashboard at http://{}{base}/ui/ (add a token to api.auth.tokens or tokens.yaml to sign in)", server.server_addr());
        } else {
            log::info!(target: "http", "dashboard at http://{}{base}/ui/ (sign in with an API token)", server.server_addr());
        }
    }
    let mut threads = Vec::new();
    for n in 0..settings.api.threads {
        let server = server.clone();
        let svc = svc.clone();
        let name = match surface {
            Surface::Api => format!("http-api-{n}"),
            Surface::Webhooks => format!("http-hook-{n}"),
        };
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || request_thread(&server, &svc, surface))
            .map_err(HttpError::Thread)?;
        threads.push(handle);
    }
    Ok(Listener { server, threads })
}

/// A request thread: its own ledger connection, opened on first use (and
/// again after an error), one request at a time until the listener stops.
fn request_thread(server: &tiny_http::Server, svc: &Services, surface: Surface) {
    let mut db = Db {
        conn: None,
        path: svc.db.clone(),
        sync: svc.synchronous,
    };
    while let Ok(rq) = server.recv() {
        let started = Instant::now();
        let (mut req, rq) = Req::read(rq);
        let reply = match &mut req {
            Ok(req) => match surface {
                Surface::Api => api::handle(svc, &mut db, req),
                Surface::Webhooks => webhooks::handle(svc, &mut db, req),
            },
            Err(reply) => request::Outcome::Reply(reply.clone()),
        };
        let route = req.as_ref().map_or("-", |r| r.route);
        match reply {
            request::Outcome::Reply(reply) => {
                svc.metrics
                    .http_request(surface, route, reply.status, started.elapsed());
                reply.send(rq);
            }
            request::Outcome::Stream(stream) => {
                svc.metrics
                    .http_request(surface, route, 200, started.elapsed());
                svc.events.serve(rq, stream);
            }
            request::Outcome::Wait { root, deadline } => {
                svc.metrics
                    .http_request(surface, route, 200, started.elapsed());
                svc.bridge.wait(rq, root, started, deadline);
            }
        }
    }
}

/// A request thread's ledger connection.
pub struct Db {
    conn: Option<Connection>,
    path: PathBuf,
    sync: Synchronous,
}

impl Db {
    /// The connection, opened if needed.
    pub fn get(&mut self) -> Result<&mut Connection, StoreError> {
        if self.conn.is_none() {
            self.conn = Some(store::open(&self.path, self.sync)?);
        }
        // Filled just above when it was empty.
        self.conn.as_mut().ok_or_else(|| StoreError::NotFound {
            what: "connection",
            id: self.path.display().to_string(),
        })
    }

    /// Drops the connection after an error, so the next request reopens it.
    pub fn reset(&mut self) {
        self.conn = None;
    }
}
