//! ductile: a self-hosted automation runtime.
//!
//! Crate map, in reading order (see `docs/ARCHITECTURE.md`):
//! - [`config`]: `config.yaml` + includes → an immutable, validated `Config`.
//! - [`check`]: every finding `config check` reports, and what strict mode refuses.
//! - [`plugin`]: manifests, discovery and trust, protocol v2, the process runner.
//! - [`router`]: routes and pipelines compiled into an immutable graph of hops.
//! - [`store`]: the SQLite ledger: schema, queue and job state machine, facts, breakers.
//! - [`scheduler`]: schedule expressions, windows, time zones; the heartbeat thread.
//! - [`dispatch`]: who runs next; the worker pool.
//! - [`oneshot`]: `ductile run` here or handed over to a running daemon.
//! - [`daemon`]: `system start`: lock, recovery, threads, reload, shutdown.
//! - [`http`]: the HTTP surfaces; [`http::events`] streams the ledger's events (SSE).
//! - [`relay`]: the remote event relay's wire format; its ingress is [`http::relay`].
//! - [`backup`]: `system backup`/`restore`: archives of the ledger and config, verified restore.
//! - [`doctor`], [`disk`], [`skills`]: selfcheck and doctor diagnostics, the
//!   disk-space guard on new work, the skills manifest for LLM operators.
//! - [`cli`]: `ductile <noun> <verb>`; the only layer that prints results.
//! - [`http`]: the HTTP surfaces; [`http::auth`] decides who may call what.
//! - [`clock`], [`log`], [`lock`], [`sys`]: time source, JSON log lines, the
//!   instance lock, the operating-system calls (every `unsafe` block).
//! - [`secret`]: values that never reach a log line.
//! - [`fault`]: crash points, compiled in only for the crash-safety tests.

pub mod backup;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod disk;
pub mod dispatch;
pub mod doctor;
pub mod explain;
pub mod fault;
pub mod http;
pub mod lock;
pub mod log;
pub mod oneshot;
pub mod plugin;
pub mod relay;
pub mod router;
pub mod runtime;
pub mod scheduler;
pub mod secret;
pub mod skills;
pub mod store;
pub mod suggest;
pub mod sys;
