//! From the merged YAML document to a typed, validated [`Config`]: defaults,
//! relative path resolution, rules, and warnings for keys nobody reads.
//!
//! Owns: the schema (which keys exist where), defaults, and every rule a config
//! must satisfy before the daemon may run it.
//! Must not: read files or the environment (load did), or check expressions that
//! belong to other modules (cron and `every` syntax are the scheduler's).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use super::duration;
use super::error::unknown_key;
use super::limits::{self, Counts, Sizes, Span};
use super::paths::resolve_path;
use super::provenance::{KeyPath, Provenance, join, key_text};
use super::yaml::describe;
use super::{Config, LoadedFile, Replication, Service, State, Synchronous, size};
use super::{ConfigError, Finding};

const TOP_KEYS: &[&str] = &[
    "include",
    "environment_vars",
    "service",
    "plugin_roots",
    "state",
    "api",
    "plugins",
    "routes",
    "pipelines",
    "webhooks",
    "tokens",
    "remote_ingress",
    "instances",
    "relay",
];

/// What a key whose feature has not landed yet is told (see `Config::inactive`).
const INACTIVE: &str = "parsed but not yet active";

/// Top-level sections that parse but do nothing yet.
const INACTIVE_SECTIONS: &[&str] = &["relay"];

/// Sections owned by later capabilities: kept merged, not interpreted here.
const EXTRA_SECTIONS: &[&str] = &["relay"];

const SERVICE_KEYS: &[&str] = &[
    "name",
    "tick_interval",
    "log_level",
    "log_format",
    "dedupe_ttl",
    "job_log_retention",
    "job_queue_retention",
    "max_workers",
    "strict_mode",
    "allow_symlinks",
    "plugin_env_passthrough",
    "shutdown_timeout",
    "max_response_events",
    "tcc_paths",
    "preferred_window",
    "container_engine",
];

/// `service.container_engine` values.
const ENGINES: &[&str] = &["podman", "docker"];

const STATE_KEYS: &[&str] = &["path", "synchronous", "min_free_bytes", "replication"];

/// `service.log_level` values, most verbose first.
const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error"];

/// Builds the typed config from the merged document of the tree.
pub(super) fn build(
    top: &Mapping,
    provenance: &Provenance,
    dir: &Path,
    files: Vec<LoadedFile>,
) -> Result<(Config, Vec<Finding>), ConfigError> {
    let mut ctx = Ctx {
        provenance,
        warnings: Vec::new(),
        inactive: Vec::new(),
    };
    for (key, value) in top {
        let key = key_text(key);
        if !key.starts_with("x-") && !TOP_KEYS.contains(&key.as_str()) {
            ctx.warn_unknown(&key, &key, TOP_KEYS);
        }
        if INACTIVE_SECTIONS.contains(&key.as_str()) && !is_empty(value) {
            ctx.note_inactive(&key);
        }
    }

    let service = build_service(&mut ctx, find_section(top, "service"))?;
    let plugin_roots = resolve_plugin_roots(&ctx, find_section(top, "plugin_roots"), dir)?;
    let state = build_state(&mut ctx, find_section(top, "state"), dir)?;
    let api = api::build_api(&mut ctx, find_section(top, "api"))?;
    let plugins =
        plugins::build_plugins(&mut ctx, find_section(top, "plugins"), service.max_workers)?;
    let tokens = tokens::build_tokens(&mut ctx, find_section(top, "tokens"))?;
    let webhooks = webhooks::build_webhooks(&mut ctx, find_section(top, "webhooks"), &tokens)?;
    let routes = pipelines::build_routes(&mut ctx, find_section(top, "routes"))?;
    let pipelines = pipelines::build_pipelines(&mut ctx, find_section(top, "pipelines"))?;
    let relay = relay::build_relay(
        &mut ctx,
        find_section(top, "instances"),
        find_section(top, "remote_ingress"),
        &tokens,
    )?;
    check_distinct_secrets(&ctx, &api, &tokens)?;
    // Port 0 asks the OS for a free port on each listener: never a clash.
    if api.enabled
        && webhooks.listen.as_deref() == Some(api.listen.as_str())
        && !api.listen.ends_with(":0")
    {
        return Err(ctx.error(
            "webhooks.listen",
            format!(
                "`{}` is also `api.listen`; the webhook listener needs its own address",
                api.listen
            ),
        ));
    }
    let mut extra = BTreeMap::new();
    for &name in EXTRA_SECTIONS {
        if let Some(value) = find_section(top, name) {
            extra.insert(name.to_string(), to_json(&ctx, value, name)?);
        }
    }

    let config = Config {
        dir: dir.to_path_buf(),
        files,
        service,
        plugin_roots,
        state,
        api,
        plugins,
        tokens,
        webhooks,
        routes,
        pipelines,
        extra,
        relay,
        inactive: ctx.inactive,
    };
    Ok((config, ctx.warnings))
}

/// Whether a section asks for nothing: null, or an empty list or mapping.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Sequence(items) => items.is_empty(),
        Value::Mapping(map) => map.is_empty(),
        _ => false,
    }
}

/// What validation carries: where keys came from, and the warnings so far.
struct Ctx<'a> {
    provenance: &'a Provenance,
    warnings: Vec<Finding>,
    /// Keys present whose feature has not landed (see `Config::inactive`).
    inactive: Vec<Finding>,
}

impl Ctx<'_> {
    fn error(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::invalid(self.provenance.file_of(path), path, message)
    }

    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(Finding {
            file: self.provenance.file_of(path),
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn note_inactive(&mut self, path: &str) {
        self.inactive.push(Finding {
            file: self.provenance.file_of(path),
            path: path.to_string(),
            message: INACTIVE.to_string(),
        });
    }

    fn warn_unknown(&mut self, path: &str, key: &str, known: &[&str]) {
        self.warnings.push(Finding {
            file: self.provenance.file_of(path),
            path: path.to_string(),
            message: unknown_key(key, known),
        });
    }

    /// The entries of `map` with known keys and non-null values, as
    /// `(key, dotted path, value)`; unknown keys become warnings.
    fn entries<'v>(
        &mut self,
        map: &'v Mapping,
        prefix: &str,
        known: &[&str],
    ) -> Vec<(String, String, &'v Value)> {
        let mut out = Vec::new();
        for (key, value) in map {
            let key = key_text(key);
            let path = join(prefix, &key);
            if !known.contains(&key.as_str()) {
                self.warn_unknown(&path, &key, known);
            } else if !value.is_null() {
                out.push((key, path, value));
            }
        }
        out
    }
}

/// A top-level section, absent when missing or empty.
fn find_section<'v>(top: &'v Mapping, key: &str) -> Option<&'v Value> {
    top.get(key).filter(|value| !value.is_null())
}

fn build_service(ctx: &mut Ctx, value: Option<&Value>) -> Result<Service, ConfigError> {
    let mut service = Service {
        name: "ductile".to_string(),
        tick_interval: Duration::from_secs(60),
        log_level: "info".to_string(),
        dedupe_ttl: Duration::from_secs(24 * 3600),
        job_log_retention: Duration::from_secs(30 * 86_400),
        job_queue_retention: Duration::from_secs(24 * 3600),
        max_workers: default_workers(),
        strict_mode: false,
        allow_symlinks: false,
        plugin_env_passthrough: Vec::new(),
        shutdown_timeout: Duration::from_secs(30),
        max_response_events: 1000,
        container_engine: None,
    };
    let Some(value) = value else {
        return Ok(service);
    };
    let map = expect_mapping(ctx, value, "service")?;
    for (key, path, value) in ctx.entries(map, "service", SERVICE_KEYS) {
        match key.as_str() {
            "name" => service.name = read_text(ctx, value, &path)?,
            "tick_interval" => {
                service.tick_interval = read_span(ctx, value, &path, limits::TICK_INTERVAL)?;
            }
            "log_level" => {
                service.log_level = read_choice(ctx, value, &path, LOG_LEVELS)?;
            }
            // Accepted for compatibility: core logs are always JSON lines.
            "log_format" => {
                read_text(ctx, value, &path)?;
            }
            "dedupe_ttl" => {
                service.dedupe_ttl = read_span(ctx, value, &path, limits::DEDUPE_TTL)?;
            }
            "job_log_retention" => {
                service.job_log_retention = read_span(ctx, value, &path, limits::RETENTION)?;
            }
            "job_queue_retention" => {
                service.job_queue_retention = read_span(ctx, value, &path, limits::RETENTION)?;
            }
            "max_workers" => {
                service.max_workers = read_in(ctx, value, &path, limits::MAX_WORKERS)?;
            }
            "max_response_events" => {
                service.max_response_events =
                    read_in(ctx, value, &path, limits::MAX_RESPONSE_EVENTS)?;
            }
            "strict_mode" => service.strict_mode = read_flag(ctx, value, &path)?,
            "allow_symlinks" => service.allow_symlinks = read_flag(ctx, value, &path)?,
            "plugin_env_passthrough" => {
                service.plugin_env_passthrough = read_strings(ctx, value, &path)?;
            }
            "shutdown_timeout" => {
                service.shutdown_timeout = read_span(ctx, value, &path, limits::SHUTDOWN_TIMEOUT)?;
            }
            "preferred_window" => ctx.note_inactive(&path),
            "container_engine" => {
                service.container_engine = Some(read_choice(ctx, value, &path, ENGINES)?);
            }
            // `tcc_paths` is a macOS permission prewarm, a no-op elsewhere.
            _ => {}
        }
    }
    if service.job_queue_retention < service.dedupe_ttl {
        return Err(ctx.error(
            "service.job_queue_retention",
            format!(
                "must be at least dedupe_ttl ({}), got {}",
                duration::format(service.dedupe_ttl),
                duration::format(service.job_queue_retention)
            ),
        ));
    }
    Ok(service)
}

/// `max(1, CPU-1)`: leave a core for the daemon's own threads and the system.
fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_sub(1)
        .max(1)
}

fn resolve_plugin_roots(
    ctx: &Ctx,
    value: Option<&Value>,
    dir: &Path,
) -> Result<Vec<std::path::PathBuf>, ConfigError> {
    let Some(value) = value else {
        return Ok(vec![dir.join("plugins")]);
    };
    let mut roots = Vec::new();
    let entries = match value {
        Value::Sequence(items) => items.iter().collect(),
        single => vec![single],
    };
    for (index, entry) in entries.into_iter().enumerate() {
        let path = format!("plugin_roots[{index}]");
        let entry = read_text(ctx, entry, &path)?;
        let root = resolve_path(dir, &entry).map_err(|message| ctx.error(&path, message))?;
        if !roots.contains(&root) {
            roots.push(root);
        }
    }
    Ok(roots)
}

/// `state.min_free_bytes` when unset: room for a checkpoint of a busy WAL
/// and the next few thousand jobs.
const DEFAULT_MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;

fn build_state(ctx: &mut Ctx, value: Option<&Value>, dir: &Path) -> Result<State, ConfigError> {
    let mut state = State {
        path: dir.join("ductile.db"),
        synchronous: Synchronous::Normal,
        min_free_bytes: DEFAULT_MIN_FREE_BYTES,
        replication: Replication::Off,
    };
    let Some(value) = value else {
        return Ok(state);
    };
    let map = expect_mapping(ctx, value, "state")?;
    for (key, path, value) in ctx.entries(map, "state", STATE_KEYS) {
        let text = read_text(ctx, value, &path)?;
        if key == "min_free_bytes" {
            state.min_free_bytes =
                size::parse_disk(&text).map_err(|message| ctx.error(&path, message))?;
        } else if key == "path" {
            state.path = resolve_path(dir, &text).map_err(|message| ctx.error(&path, message))?;
        } else if key == "replication" {
            state.replication = match text.to_ascii_lowercase().as_str() {
                "off" | "none" | "false" => Replication::Off,
                "litestream" => Replication::Litestream,
                _ => {
                    return Err(ctx.error(
                        &path,
                        format!("invalid replication `{text}`: expected off or litestream"),
                    ));
                }
            };
        } else {
            state.synchronous = match text.to_ascii_lowercase().as_str() {
                "normal" => Synchronous::Normal,
                "full" => Synchronous::Full,
                _ => {
                    return Err(ctx.error(
                        &path,
                        format!("invalid synchronous `{text}`: expected normal or full"),
                    ));
                }
            };
        }
    }
    Ok(state)
}

/// Two tokens with one value would make a request's caller ambiguous, so every
/// API token and every `tokens:` key differs from all the others. The message
/// names both places, never the value.
fn check_distinct_secrets(
    ctx: &Ctx,
    api: &super::Api,
    tokens: &[super::NamedToken],
) -> Result<(), ConfigError> {
    let api_values = api
        .auth_tokens
        .iter()
        .map(|t| (t.token.expose(), format!("{}.token", t.origin)));
    let named = tokens
        .iter()
        .map(|t| (t.key.expose(), format!("{}.key", t.origin)));
    let mut seen: std::collections::HashMap<&String, String> = std::collections::HashMap::new();
    for (value, path) in api_values.chain(named) {
        if let Some(first) = seen.get(value) {
            return Err(ctx.error(
                &path,
                format!("the same token as {first}; every token must be different"),
            ));
        }
        seen.insert(value, path);
    }
    Ok(())
}

fn expect_mapping<'v>(ctx: &Ctx, value: &'v Value, path: &str) -> Result<&'v Mapping, ConfigError> {
    match value {
        Value::Mapping(map) => Ok(map),
        other => Err(ctx.error(
            path,
            format!("expected a mapping, found {}", describe(other)),
        )),
    }
}

/// A scalar as text; numbers and booleans are taken as written.
fn read_text(ctx: &Ctx, value: &Value, path: &str) -> Result<String, ConfigError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) => Ok(number.to_string()),
        Value::Bool(flag) => Ok(flag.to_string()),
        other => Err(ctx.error(
            path,
            format!("expected a string, found {}", describe(other)),
        )),
    }
}

fn expect_list<'v>(ctx: &Ctx, value: &'v Value, path: &str) -> Result<&'v [Value], ConfigError> {
    match value {
        Value::Sequence(items) => Ok(items),
        other => Err(ctx.error(path, format!("expected a list, found {}", describe(other)))),
    }
}

/// A secret (a token or key): not empty, and without surrounding whitespace,
/// which no request could present. Messages never quote the value.
fn read_key(ctx: &Ctx, value: &Value, path: &str) -> Result<String, ConfigError> {
    let key = read_text(ctx, value, path)?;
    if key.trim().is_empty() {
        return Err(ctx.error(path, "must not be empty"));
    }
    if key.trim() != key {
        return Err(ctx.error(path, "must not start or end with whitespace"));
    }
    Ok(key)
}

/// A byte size (`1MB`, `512KB`, a bare number of bytes) within `range`.
fn read_size(ctx: &Ctx, value: &Value, path: &str, range: Sizes) -> Result<usize, ConfigError> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        other => {
            return Err(ctx.error(
                path,
                format!("expected a size such as `1MB`, found {}", describe(other)),
            ));
        }
    };
    let bytes = size::parse(&text).map_err(|message| ctx.error(path, message))?;
    let bytes = range
        .check(bytes, &text)
        .map_err(|message| ctx.error(path, message))?;
    narrow(ctx, bytes, path)
}

fn read_strings(ctx: &Ctx, value: &Value, path: &str) -> Result<Vec<String>, ConfigError> {
    let Value::Sequence(items) = value else {
        return Err(ctx.error(path, format!("expected a list, found {}", describe(value))));
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| read_text(ctx, item, &format!("{path}[{index}]")))
        .collect()
}

fn read_flag(ctx: &Ctx, value: &Value, path: &str) -> Result<bool, ConfigError> {
    match value {
        Value::Bool(flag) => Ok(*flag),
        other => Err(ctx.error(
            path,
            format!("expected true or false, found {}", describe(other)),
        )),
    }
}

/// A non-negative integer; a string of digits is accepted, since quoting a
/// `${VAR}` turns a number into one.
fn read_count(ctx: &Ctx, value: &Value, path: &str) -> Result<u64, ConfigError> {
    let parsed = match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| {
        ctx.error(
            path,
            format!("expected a non-negative integer, found {}", describe(value)),
        )
    })
}

fn narrow<T: TryFrom<u64>>(ctx: &Ctx, number: u64, path: &str) -> Result<T, ConfigError> {
    T::try_from(number).map_err(|_| ctx.error(path, format!("{number} is too large")))
}

/// A count within `range`.
fn read_in<T: TryFrom<u64>>(
    ctx: &Ctx,
    value: &Value,
    path: &str,
    range: Counts,
) -> Result<T, ConfigError> {
    let number = range
        .check(read_count(ctx, value, path)?)
        .map_err(|message| ctx.error(path, message))?;
    narrow(ctx, number, path)
}

/// A duration as written (`30s`, or a bare number of seconds).
fn duration_text(ctx: &Ctx, value: &Value, path: &str) -> Result<String, ConfigError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) => Ok(number.to_string()),
        other => Err(ctx.error(
            path,
            format!(
                "expected a duration such as `30s`, found {}",
                describe(other)
            ),
        )),
    }
}

/// A duration within `range`.
fn read_span(ctx: &Ctx, value: &Value, path: &str, range: Span) -> Result<Duration, ConfigError> {
    let text = duration_text(ctx, value, path)?;
    let parsed = duration::parse(&text).map_err(|message| ctx.error(path, message))?;
    range
        .check(parsed, &text)
        .map_err(|message| ctx.error(path, message))
}

/// A duration within `range`, kept as written (the scheduler reads it).
fn read_span_text(
    ctx: &Ctx,
    value: &Value,
    path: &str,
    range: Span,
) -> Result<String, ConfigError> {
    read_span(ctx, value, path, range)?;
    read_text(ctx, value, path)
}

fn read_choice(
    ctx: &Ctx,
    value: &Value,
    path: &str,
    allowed: &[&str],
) -> Result<String, ConfigError> {
    let chosen = read_text(ctx, value, path)?;
    if allowed.contains(&chosen.as_str()) {
        return Ok(chosen);
    }
    let key = path.rsplit('.').next().unwrap_or(path);
    let (last, rest) = allowed.split_last().unwrap_or((&"", &[]));
    Err(ctx.error(
        path,
        format!(
            "invalid {key} `{chosen}`: expected {} or {last}",
            rest.join(", ")
        ),
    ))
}

/// YAML to JSON for sections passed on uninterpreted. Mapping keys become
/// strings; YAML tags carry no meaning in ductile config and are dropped.
fn to_json(ctx: &Ctx, value: &Value, path: &str) -> Result<serde_json::Value, ConfigError> {
    json_of(ctx, value, &KeyPath::Key(&KeyPath::Root, path))
}

/// [`to_json`] below `path`, which is spelled out only for an error: a deep
/// subtree must not cost a path string per node.
fn json_of(ctx: &Ctx, value: &Value, path: &KeyPath<'_>) -> Result<serde_json::Value, ConfigError> {
    Ok(match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(flag) => serde_json::Value::Bool(*flag),
        Value::Number(number) => {
            if let Some(int) = number.as_i64() {
                int.into()
            } else if let Some(int) = number.as_u64() {
                int.into()
            } else {
                number
                    .as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(serde_json::Value::Number)
                    .ok_or_else(|| {
                        ctx.error(
                            &path.render(),
                            format!("number `{number}` has no JSON form"),
                        )
                    })?
            }
        }
        Value::String(text) => serde_json::Value::String(text.clone()),
        Value::Sequence(items) => serde_json::Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(index, item)| json_of(ctx, item, &KeyPath::Item(path, index)))
                .collect::<Result<_, _>>()?,
        ),
        Value::Mapping(map) => {
            let mut object = serde_json::Map::new();
            for (key, item) in map {
                if matches!(key, Value::Sequence(_) | Value::Mapping(_)) {
                    return Err(ctx.error(
                        &path.render(),
                        "mapping keys must be strings, numbers or booleans",
                    ));
                }
                let key = key_text(key);
                let item = json_of(ctx, item, &KeyPath::Key(path, &key))?;
                object.insert(key, item);
            }
            serde_json::Value::Object(object)
        }
        Value::Tagged(tagged) => json_of(ctx, &tagged.value, path)?,
    })
}

mod api;
mod pipelines;
mod plugins;
mod relay;
pub(crate) use plugins::PLUGIN_KEYS;
mod tokens;
mod webhooks;

#[cfg(test)]
mod tests;
