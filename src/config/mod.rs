//! Configuration: `config.yaml` plus its `include:` tree, merged, interpolated and
//! validated into an immutable [`Config`]. Nothing downstream re-validates: a
//! `Config` that exists is a config the daemon can run.
//!
//! Owns: directory discovery, the file rules and bounds on reading, include
//! resolution, merge rules, `${VAR}` and `.env` interpolation, defaults and
//! value ranges, unknown-key and not-yet-active findings, the pinned scope
//! files of `tokens:`, and errors that name the file, the dotted key path and
//! (where YAML gives it) the line and column.
//! Must not: touch the database or spawn anything.

mod depth;
pub mod duration;
pub mod edit;
mod error;
pub mod integrity;
mod interpolate;
mod limits;
mod load;
mod paths;
pub mod pipeline;
mod provenance;
pub mod relay;
mod scope_files;
mod size;
mod source;
#[cfg(test)]
mod temp_tree;
mod validate;
pub(crate) use validate::PLUGIN_KEYS;
mod yaml;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

/// The validated, merged configuration of one instance.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config directory (the directory holding the root `config.yaml`).
    pub dir: PathBuf,
    /// Every file that contributed, in load order, with the BLAKE3 hash of its raw bytes.
    pub files: Vec<LoadedFile>,
    /// `service:` settings.
    pub service: Service,
    /// Plugin roots, absolute, duplicates removed, in scan order.
    pub plugin_roots: Vec<PathBuf>,
    /// `state:` settings.
    pub state: State,
    /// `api:` settings.
    pub api: Api,
    /// `plugins:` instances by name (including aliases declared with `uses:`).
    pub plugins: BTreeMap<String, PluginConf>,
    /// `tokens:` (normally from an included `tokens.yaml`), in declaration
    /// order; tokens whose scope file did not match its pin are left out.
    pub tokens: Vec<NamedToken>,
    /// `webhooks:` listener and endpoints.
    pub webhooks: Webhooks,
    /// `routes:` (normally from an included `routes.yaml`), in declaration order.
    pub routes: Vec<pipeline::RouteConf>,
    /// `pipelines:` (normally from an included `pipelines.yaml`), in
    /// declaration order; names are unique.
    pub pipelines: Vec<pipeline::PipelineConf>,
    /// Sections owned by later capabilities (the relay files), kept merged
    /// but uninterpreted.
    pub extra: BTreeMap<String, serde_json::Value>,
    /// `instances:` and `remote_ingress:` (the relay files).
    pub relay: relay::RelayConf,
    /// Keys present whose feature has not landed yet (`remote_ingress`,
    /// `api.max_concurrent_sync`, `notify_on_complete: true`, ...), each "parsed
    /// but not yet active". Shown as warnings, but `strict_mode` does not refuse them.
    pub inactive: Vec<Finding>,
}

/// One file that contributed to the config.
#[derive(Debug, Clone)]
pub struct LoadedFile {
    /// Absolute path.
    pub path: PathBuf,
    /// `blake3:<hex>` of the raw bytes, before interpolation.
    pub hash: String,
}

/// `service:` settings with every default applied.
#[derive(Debug, Clone)]
pub struct Service {
    /// Instance name (default `ductile`).
    pub name: String,
    /// Scheduler heartbeat (default 60s).
    pub tick_interval: Duration,
    /// Daemon log level: trace, debug, info, warn or error (default `info`).
    pub log_level: String,
    /// Default dedupe window (default 24h).
    pub dedupe_ttl: Duration,
    /// Age after which `job_log` rows are pruned (default 30d).
    pub job_log_retention: Duration,
    /// Age after which terminal `job_queue` rows are pruned (default 24h, at least `dedupe_ttl`).
    pub job_queue_retention: Duration,
    /// Worker pool size (default `max(1, CPU-1)`).
    pub max_workers: usize,
    /// Integrity and config findings are fatal (default false).
    pub strict_mode: bool,
    /// Whether symlinks are allowed in plugin paths (default false).
    pub allow_symlinks: bool,
    /// Extra environment variable names passed through to plugins.
    pub plugin_env_passthrough: Vec<String>,
    /// How long shutdown waits for in-flight jobs (default 30s).
    pub shutdown_timeout: Duration,
    /// The most events one plugin response may carry (default 1000, 1..=100000).
    pub max_response_events: usize,
    /// Container engine forced for container plugins (`podman` or `docker`;
    /// default: auto-detected on `PATH`, podman first).
    pub container_engine: Option<String>,
}

/// `state:` settings.
#[derive(Debug, Clone)]
pub struct State {
    /// Absolute path of the SQLite database (default `<config dir>/ductile.db`).
    pub path: PathBuf,
    /// `PRAGMA synchronous` level.
    pub synchronous: Synchronous,
    /// Below this much free space on the ledger's file system the daemon
    /// admits no new work (`state.min_free_bytes`, default 64 MiB; 0 turns
    /// the guard off).
    pub min_free_bytes: u64,
    /// Who checkpoints the WAL (`state.replication`, default off).
    pub replication: Replication,
}

/// `state.replication`: whether an external tool streams the WAL off the box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Replication {
    /// ductile checkpoints its own WAL (the default).
    #[default]
    Off,
    /// Litestream replicates the ledger and owns checkpointing: no connection
    /// checkpoints, truncates or deletes the WAL, and nothing runs `VACUUM`.
    Litestream,
}

impl Replication {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Replication::Off => "off",
            Replication::Litestream => "litestream",
        }
    }
}

/// SQLite durability level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// `synchronous=NORMAL` (default; safe in WAL against process crashes).
    Normal,
    /// `synchronous=FULL` (also safe against power loss).
    Full,
}

/// `api:` settings.
#[derive(Debug, Clone)]
pub struct Api {
    /// Whether the HTTP API is served (default false).
    pub enabled: bool,
    /// Listen address (default `127.0.0.1:8080`).
    pub listen: String,
    /// `api.auth.tokens`, in declaration order.
    pub auth_tokens: Vec<ApiToken>,
    /// The largest request body accepted, in bytes (default 1 MiB).
    pub max_body_size: usize,
    /// Whether `/metrics` is served without a token (default false).
    pub metrics_public: bool,
    /// Request threads per listener (default 4, 1..=64).
    pub threads: usize,
    /// Open connections per listener (default 256, 1..=4096).
    pub max_connections: usize,
    /// Event streams open at once (default 16, 0..=1024; 0 turns them off).
    pub max_event_streams: usize,
    /// Synchronous pipeline calls waiting at once (default 10, 1..=10000).
    pub max_concurrent_sync: usize,
    /// The longest a synchronous pipeline call waits (default 5m, 1s..=1h).
    pub max_sync_timeout: Duration,
    /// `api.ui`: serve the dashboard at `/ui/`; unset means "on for a
    /// loopback listener" (`http::ui::served`).
    pub ui: Option<bool>,
    /// `api.base_path`: the prefix every API route is served under behind a
    /// reverse proxy (`/ductile`), empty for none; no trailing slash.
    pub base_path: String,
    /// `api.session_lifetime`: how long a dashboard sign-in lasts (default 12h).
    pub session_lifetime: Duration,
    /// Keys under `api:` no capability reads, kept uninterpreted.
    pub extra: serde_json::Value,
}

/// The default body cap of the API and of each webhook endpoint (1 MiB).
pub const DEFAULT_BODY_SIZE: usize = 1024 * 1024;

impl Default for Api {
    /// The API off, on `127.0.0.1:8080`, with no tokens and the default limits.
    fn default() -> Api {
        Api {
            enabled: false,
            listen: "127.0.0.1:8080".to_string(),
            auth_tokens: Vec::new(),
            max_body_size: DEFAULT_BODY_SIZE,
            metrics_public: false,
            threads: 4,
            max_connections: 256,
            max_event_streams: 16,
            max_concurrent_sync: 10,
            max_sync_timeout: Duration::from_secs(300),
            ui: None,
            base_path: String::new(),
            session_lifetime: Duration::from_secs(12 * 3600),
            extra: serde_json::Value::Object(serde_json::Map::new()),
        }
    }
}

/// One entry of `api.auth.tokens`.
#[derive(Debug, Clone)]
pub struct ApiToken {
    /// The bearer token, interpolated.
    pub token: Secret<String>,
    /// Scopes as written (`auth` normalises them).
    pub scopes: Vec<String>,
    /// The file that declared the entry.
    pub file: PathBuf,
    /// The entry's key path (`api.auth.tokens[0]`); also its display name.
    pub origin: String,
}

/// One entry of the top-level `tokens:` list (`tokens.yaml`).
#[derive(Debug, Clone)]
pub struct NamedToken {
    /// Unique name: what logs and `submitted_by` show, and what `secret_ref` names.
    pub name: String,
    /// The key, interpolated, never empty.
    pub key: Secret<String>,
    /// Scopes as written, from `scopes_file` when set, else the inline `scopes`.
    pub scopes: Vec<String>,
    /// The pinned scope file, absolute, when the scopes came from one.
    pub scopes_file: Option<PathBuf>,
    /// `blake3:<hex>` the scope file's raw bytes must hash to (set with `scopes_file`).
    pub scopes_hash: Option<String>,
    /// The file that declared the entry.
    pub file: PathBuf,
    /// The entry's key path (`tokens[0]`).
    pub origin: String,
}

/// `webhooks:` settings.
#[derive(Debug, Clone, Default)]
pub struct Webhooks {
    /// Listen address of the webhook listener; none means no listener.
    pub listen: Option<String>,
    /// Endpoints, in declaration order; names and paths are unique.
    pub endpoints: Vec<WebhookEndpoint>,
}

/// One webhook endpoint.
#[derive(Debug, Clone)]
pub struct WebhookEndpoint {
    /// Unique name, for logs and messages.
    pub name: String,
    /// Request path, starting with `/`, unique among endpoints.
    pub path: String,
    /// Plugin instance the job goes to.
    pub plugin: String,
    /// Command of the job (default `handle`).
    pub command: String,
    /// Name of the `tokens:` entry whose key is the secret.
    pub secret_ref: String,
    /// How a request proves it knows the secret.
    pub auth: WebhookAuth,
    /// Header carrying the HMAC signature (default `X-Ductile-Signature-256`).
    pub signature_header: String,
    /// Header that may carry the key under `auth: token`, besides `Authorization: Bearer`.
    pub token_header: Option<String>,
    /// The largest body accepted, in bytes (default 1 MiB).
    pub max_body_size: usize,
    /// Header whose value becomes the job's dedupe key, if any.
    pub dedupe_header: Option<String>,
    /// The file that declared the endpoint.
    pub file: PathBuf,
    /// The endpoint's key path (`webhooks.endpoints[0]`).
    pub origin: String,
}

/// How a webhook request is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookAuth {
    /// HMAC-SHA256 of the raw body with the secret, in `signature_header` (default).
    Hmac,
    /// The secret itself, as a bearer token or in `token_header`.
    Token,
}

/// One plugin instance under `plugins:`.
#[derive(Debug, Clone)]
pub struct PluginConf {
    /// The instance name (the key under `plugins:`).
    pub name: String,
    /// The base plugin this instance aliases (`uses:`), if any.
    pub uses: Option<String>,
    /// Whether the instance is enabled (default true).
    pub enabled: bool,
    /// Explicit per-plugin concurrency cap, if set.
    pub parallelism: Option<usize>,
    /// Per-command timeouts.
    pub timeouts: Timeouts,
    /// Retry policy.
    pub retry: Retry,
    /// Circuit breaker policy for scheduled polls.
    pub circuit_breaker: Breaker,
    /// Scheduler poll guard (default 1).
    pub max_outstanding_polls: u32,
    /// Emit lifecycle hook signals (default false).
    pub notify_on_complete: bool,
    /// Schedules, in declaration order.
    pub schedules: Vec<ScheduleConf>,
    /// The plugin's own config object, interpolated; sent as `config` in requests.
    pub config: serde_json::Value,
    /// `container:`: run this instance as that image, whatever its manifest says.
    pub container: Option<crate::plugin::container::ContainerSpec>,
    /// `keep_warm:`: a Stage7 instance keeps one resident container for this
    /// long after its last job (daemon only).
    pub keep_warm: Option<Duration>,
}

impl PluginConf {
    /// An instance with every default: enabled, no schedules, empty config.
    pub fn new(name: &str) -> PluginConf {
        PluginConf {
            name: name.to_string(),
            uses: None,
            enabled: true,
            parallelism: None,
            timeouts: Timeouts::default(),
            retry: Retry::default(),
            circuit_breaker: Breaker::default(),
            max_outstanding_polls: 1,
            notify_on_complete: false,
            schedules: Vec::new(),
            config: serde_json::Value::Object(serde_json::Map::new()),
            container: None,
            keep_warm: None,
        }
    }
}

/// Per-command timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// `poll` (default 60s).
    pub poll: Duration,
    /// `handle` (default 120s).
    pub handle: Duration,
    /// `health` (default 10s).
    pub health: Duration,
    /// `init` (default 30s).
    pub init: Duration,
    /// Other named commands; those not listed use `default`.
    pub other: BTreeMap<String, Duration>,
    /// Timeout for commands without their own entry (plugin-level `timeout:`, else 60s).
    pub default: Duration,
}

impl Timeouts {
    /// The timeout for `command`.
    pub fn for_command(&self, command: &str) -> Duration {
        match command {
            "poll" => self.poll,
            "handle" => self.handle,
            "health" => self.health,
            "init" => self.init,
            other => self.other.get(other).copied().unwrap_or(self.default),
        }
    }
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            poll: Duration::from_secs(60),
            handle: Duration::from_secs(120),
            health: Duration::from_secs(10),
            init: Duration::from_secs(30),
            other: BTreeMap::new(),
            default: Duration::from_secs(60),
        }
    }
}

/// Retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Total attempts including the first (default 4).
    pub max_attempts: u32,
    /// Backoff base (default 30s): delay = base·2^(attempt-1) + random(0, base).
    pub backoff_base: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            max_attempts: 4,
            backoff_base: Duration::from_secs(30),
        }
    }
}

/// Circuit breaker policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    /// Consecutive failures that open the circuit (default 3).
    pub threshold: u32,
    /// Cooldown before a half-open probe (default 30m).
    pub reset_after: Duration,
}

impl Default for Breaker {
    fn default() -> Breaker {
        Breaker {
            threshold: 3,
            reset_after: Duration::from_secs(30 * 60),
        }
    }
}

/// One entry under `plugins.<name>.schedules`, as written (the scheduler compiles it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleConf {
    /// Schedule id, unique within the plugin (default `default`).
    pub id: String,
    /// Command to enqueue (default `poll`).
    pub command: String,
    /// Payload for the enqueued job (default `{}`).
    pub payload: serde_json::Value,
    /// `every:` interval text (`5m`, `hourly`, `daily`, ...).
    pub every: Option<String>,
    /// `cron:` 5-field expression.
    pub cron: Option<String>,
    /// `at:` RFC 3339 one-shot.
    pub at: Option<String>,
    /// `after:` one-shot delay from service start.
    pub after: Option<String>,
    /// `jitter:` duration text.
    pub jitter: Option<String>,
    /// `only_between:` window such as `08:00-22:00`.
    pub only_between: Option<String>,
    /// `timezone:` IANA name (default UTC).
    pub timezone: Option<String>,
    /// `not_on:` weekday names or numbers, as written.
    pub not_on: Vec<String>,
    /// `catch_up:` skip | run_once | run_all (default skip).
    pub catch_up: Option<String>,
    /// `if_running:` skip | queue | cancel (default skip).
    pub if_running: Option<String>,
    /// The entry's key path, for messages (`plugins.echo.schedules[0]`).
    pub origin: String,
    /// The file that declared the entry.
    pub file: PathBuf,
}

/// A loaded configuration and the non-fatal findings met while loading it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated config.
    pub config: Config,
    /// Unknown keys and other findings, each naming its file and key path.
    pub warnings: Vec<Finding>,
}

/// Finds the root config file: `explicit` may be a file or a directory (a
/// directory means `<dir>/config.yaml`); otherwise the first of
/// `$DUCTILE_CONFIG_DIR`, `~/.config/ductile` and `/etc/ductile` that holds a
/// `config.yaml`.
pub fn resolve_root(explicit: Option<&std::path::Path>) -> Result<PathBuf, ConfigError> {
    load::discover(explicit)
}

/// Loads, merges, interpolates and validates the tree rooted at `root_file`.
pub fn load(root_file: &std::path::Path) -> Result<Loaded, ConfigError> {
    load_with_env(root_file, &lookup_process_env)
}

/// [`load`], reading variables through `env` before falling back to
/// `environment_vars` files. Reading and merging come first, validation second,
/// so neither stage knows the other.
fn load_with_env(
    root_file: &std::path::Path,
    env: &dyn Fn(&str) -> interpolate::Var,
) -> Result<Loaded, ConfigError> {
    let merged = load::read(root_file, env)?;
    let (mut config, findings) = validate::build(
        &merged.document,
        &merged.provenance,
        &merged.dir,
        merged.files,
    )?;
    let mut warnings = merged.warnings;
    warnings.extend(findings);
    scope_files::apply(&mut config, &mut warnings)?;
    // Every verb opens the ledger after loading its config, so this one spot
    // reaches every connection of the process, daemon or one-shot.
    crate::store::set_replication(config.state.replication);
    Ok(Loaded { config, warnings })
}

fn lookup_process_env(name: &str) -> interpolate::Var {
    match std::env::var(name) {
        Ok(value) => interpolate::Var::Set(value),
        Err(std::env::VarError::NotPresent) => interpolate::Var::Unset,
        Err(std::env::VarError::NotUnicode(_)) => interpolate::Var::NotUnicode,
    }
}

impl Config {
    /// The plugin instance called `name`, if configured.
    pub fn plugin(&self, name: &str) -> Option<&PluginConf> {
        self.plugins.get(name)
    }
}

/// A non-fatal observation about the config (unknown key, file included twice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The file the finding is about.
    pub file: PathBuf,
    /// Dotted key path (`plugins.echo.shedules`); empty when it concerns the whole file.
    pub path: String,
    /// What was found, one line.
    pub message: String,
}

/// A config the daemon cannot run: where it is wrong and what is wrong.
///
/// The details are boxed so `Result<_, ConfigError>` stays one pointer wide.
#[derive(Debug)]
pub struct ConfigError(Box<ErrorDetails>);

#[derive(Debug)]
struct ErrorDetails {
    file: Option<PathBuf>,
    line: Option<usize>,
    column: Option<usize>,
    path: Option<String>,
    kind: ErrorKind,
}

/// What is wrong with a config.
#[derive(Debug)]
pub enum ErrorKind {
    /// No candidate directory holds a `config.yaml`.
    NotFound {
        /// Every location tried, in order.
        searched: Vec<PathBuf>,
    },
    /// An explicitly named config file does not exist.
    Missing,
    /// A file could not be read.
    Read {
        /// The underlying IO error.
        source: std::io::Error,
    },
    /// A file is not UTF-8 text.
    NotUtf8,
    /// A path names a FIFO, device, socket or directory where a file belongs.
    NotRegularFile,
    /// A file is larger than the cap for one file.
    FileTooLarge {
        /// The cap, in bytes.
        limit: u64,
    },
    /// The files of one tree together are larger than the cap for a tree.
    TreeTooLarge {
        /// The cap, in bytes.
        limit: u64,
    },
    /// Values nest deeper than the parser may go.
    TooDeep {
        /// What nests (`values`, or flow collections).
        what: &'static str,
        /// The deepest nesting accepted.
        limit: usize,
    },
    /// Aliases or variables expand the documents past the tree's allowance.
    ExpandsTooFar {
        /// The most values accepted.
        values: u64,
        /// The most bytes of text accepted.
        text: u64,
    },
    /// A file holds U+FDD0 or U+FDD1, noncharacters the loader uses to mark
    /// `${...}` references while parsing.
    ReservedCharacter,
    /// A file is not valid YAML.
    Yaml {
        /// The parser's message, without its location (that is in `line`/`column`).
        message: String,
    },
    /// A file includes itself, directly or through others.
    IncludeCycle {
        /// The files in the cycle, first and last the same.
        chain: Vec<String>,
    },
    /// An `include:` (or `environment_vars.include:`) entry names nothing.
    IncludeMissing {
        /// The entry as written.
        entry: String,
        /// Where it resolved to.
        resolved: PathBuf,
    },
    /// A file path contains `${...}`; paths must be static to be verifiable.
    InterpolatedPath {
        /// The entry as written.
        entry: String,
    },
    /// `${NAME}` names a variable that is not set.
    UnsetVariable {
        /// The variable name.
        name: String,
    },
    /// `${NAME}` names a variable whose value is not UTF-8.
    NonUnicodeVariable {
        /// The variable name.
        name: String,
    },
    /// A value breaks the schema or a rule.
    Invalid {
        /// One line saying what is wrong.
        message: String,
    },
}
