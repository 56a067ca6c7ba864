//! From the merged YAML document to a typed, validated [`Config`]: defaults,
//! relative path resolution, rules, and warnings for keys nobody reads.
//!
//! Owns: the schema (which keys exist where), defaults, and every rule a config
//! must satisfy before the daemon may run it.
//! Must not: read files or the environment (load did), or check expressions that
//! belong to other modules (cron and `every` syntax are the scheduler's).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use super::duration;
use super::error::unknown_key;
use super::paths::resolve_path;
use super::provenance::{Provenance, join, key_text};
use super::yaml::describe;
use super::{Api, Config, LoadedFile, PluginConf, ScheduleConf, Service, State, Synchronous};
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

/// Sections owned by later capabilities: kept merged, not interpreted here.
const EXTRA_SECTIONS: &[&str] = &[
    "routes",
    "pipelines",
    "webhooks",
    "tokens",
    "remote_ingress",
    "instances",
    "relay",
];

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
    "tcc_paths",
    "preferred_window",
];

const STATE_KEYS: &[&str] = &["path", "synchronous"];

const PLUGIN_KEYS: &[&str] = &[
    "uses",
    "enabled",
    "parallelism",
    "timeout",
    "timeouts",
    "retry",
    "max_attempts",
    "circuit_breaker",
    "max_outstanding_polls",
    "notify_on_complete",
    "schedules",
    "config",
];

const RETRY_KEYS: &[&str] = &["max_attempts", "backoff_base"];

const BREAKER_KEYS: &[&str] = &["threshold", "reset_after"];

const SCHEDULE_KEYS: &[&str] = &[
    "id",
    "command",
    "payload",
    "every",
    "cron",
    "at",
    "after",
    "jitter",
    "only_between",
    "timezone",
    "not_on",
    "catch_up",
    "if_running",
    "preferred_window",
];

/// The schedule kinds, exactly one of which each schedule sets.
const SCHEDULE_KINDS: &str = "`every`, `cron`, `at` or `after`";

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
    };
    for key in top.keys() {
        let key = key_text(key);
        if !key.starts_with("x-") && !TOP_KEYS.contains(&key.as_str()) {
            ctx.warn_unknown(&key, &key, TOP_KEYS);
        }
    }

    let service = build_service(&mut ctx, find_section(top, "service"))?;
    let plugin_roots = resolve_plugin_roots(&ctx, find_section(top, "plugin_roots"), dir)?;
    let state = build_state(&mut ctx, find_section(top, "state"), dir)?;
    let api = build_api(&ctx, find_section(top, "api"))?;
    let plugins = build_plugins(&mut ctx, find_section(top, "plugins"), service.max_workers)?;
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
        extra,
    };
    Ok((config, ctx.warnings))
}

/// What validation carries: where keys came from, and the warnings so far.
struct Ctx<'a> {
    provenance: &'a Provenance,
    warnings: Vec<Finding>,
}

impl Ctx<'_> {
    fn error(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::invalid(self.provenance.file_of(path), path, message)
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
    };
    let Some(value) = value else {
        return Ok(service);
    };
    let map = expect_mapping(ctx, value, "service")?;
    for (key, path, value) in ctx.entries(map, "service", SERVICE_KEYS) {
        match key.as_str() {
            "name" => service.name = read_text(ctx, value, &path)?,
            "tick_interval" => {
                service.tick_interval = read_duration(ctx, value, &path)?;
                if service.tick_interval.is_zero() {
                    return Err(ctx.error(&path, "must be greater than 0s"));
                }
            }
            "log_level" => service.log_level = read_text(ctx, value, &path)?,
            // Accepted for compatibility: core logs are always JSON lines.
            "log_format" => {
                read_text(ctx, value, &path)?;
            }
            "dedupe_ttl" => service.dedupe_ttl = read_duration(ctx, value, &path)?,
            "job_log_retention" => service.job_log_retention = read_duration(ctx, value, &path)?,
            "job_queue_retention" => {
                service.job_queue_retention = read_duration(ctx, value, &path)?;
            }
            "max_workers" => service.max_workers = read_positive(ctx, value, &path)?,
            "strict_mode" => service.strict_mode = read_flag(ctx, value, &path)?,
            "allow_symlinks" => service.allow_symlinks = read_flag(ctx, value, &path)?,
            "plugin_env_passthrough" => {
                service.plugin_env_passthrough = read_strings(ctx, value, &path)?;
            }
            "shutdown_timeout" => service.shutdown_timeout = read_duration(ctx, value, &path)?,
            // `tcc_paths` (a macOS permission prewarm) and `preferred_window` are
            // accepted so existing configs load, and have no effect here.
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

fn build_state(ctx: &mut Ctx, value: Option<&Value>, dir: &Path) -> Result<State, ConfigError> {
    let mut state = State {
        path: dir.join("ductile.db"),
        synchronous: Synchronous::Normal,
    };
    let Some(value) = value else {
        return Ok(state);
    };
    let map = expect_mapping(ctx, value, "state")?;
    for (key, path, value) in ctx.entries(map, "state", STATE_KEYS) {
        let text = read_text(ctx, value, &path)?;
        if key == "path" {
            state.path = resolve_path(dir, &text).map_err(|message| ctx.error(&path, message))?;
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

fn build_api(ctx: &Ctx, value: Option<&Value>) -> Result<Api, ConfigError> {
    let mut api = Api {
        enabled: false,
        listen: "127.0.0.1:8080".to_string(),
        extra: serde_json::Value::Object(serde_json::Map::new()),
    };
    let Some(value) = value else {
        return Ok(api);
    };
    let mut extra = serde_json::Map::new();
    for (key, value) in expect_mapping(ctx, value, "api")? {
        let key = key_text(key);
        let path = join("api", &key);
        match key.as_str() {
            _ if value.is_null() => {}
            "enabled" => api.enabled = read_flag(ctx, value, &path)?,
            "listen" => api.listen = read_text(ctx, value, &path)?,
            _ => {
                extra.insert(key, to_json(ctx, value, &path)?);
            }
        }
    }
    api.extra = serde_json::Value::Object(extra);
    Ok(api)
}

fn build_plugins(
    ctx: &mut Ctx,
    value: Option<&Value>,
    max_workers: usize,
) -> Result<BTreeMap<String, PluginConf>, ConfigError> {
    let mut plugins = BTreeMap::new();
    let Some(value) = value else {
        return Ok(plugins);
    };
    for (key, value) in expect_mapping(ctx, value, "plugins")? {
        let name = key_text(key);
        let path = join("plugins", &name);
        let conf = build_plugin(ctx, name.clone(), &path, value, max_workers)?;
        plugins.insert(name, conf);
    }
    Ok(plugins)
}

fn build_plugin(
    ctx: &mut Ctx,
    name: String,
    prefix: &str,
    value: &Value,
    max_workers: usize,
) -> Result<PluginConf, ConfigError> {
    let mut conf = PluginConf::new(&name);
    if value.is_null() {
        return Ok(conf);
    }
    let map = expect_mapping(ctx, value, prefix)?;
    let mut plugin_timeout = None;
    let mut explicit_timeouts = BTreeSet::new();
    let mut shorthand_attempts = None;
    let mut retry_attempts_set = false;
    for (key, path, value) in ctx.entries(map, prefix, PLUGIN_KEYS) {
        match key.as_str() {
            "uses" => {
                let base = read_text(ctx, value, &path)?;
                if base == conf.name {
                    return Err(ctx.error(
                        &path,
                        format!("plugin `{base}` cannot use itself; name the base plugin"),
                    ));
                }
                conf.uses = Some(base);
            }
            "enabled" => conf.enabled = read_flag(ctx, value, &path)?,
            "parallelism" => {
                let parallelism = read_positive(ctx, value, &path)?;
                if parallelism > max_workers {
                    return Err(ctx.error(
                        &path,
                        format!(
                            "must not exceed service.max_workers ({max_workers}), got {parallelism}"
                        ),
                    ));
                }
                conf.parallelism = Some(parallelism);
            }
            "timeout" => plugin_timeout = Some(read_duration(ctx, value, &path)?),
            "timeouts" => {
                for (command, value) in expect_mapping(ctx, value, &path)? {
                    let command = key_text(command);
                    if value.is_null() {
                        continue;
                    }
                    let limit = read_duration(ctx, value, &join(&path, &command))?;
                    let slot = match command.as_str() {
                        "poll" => &mut conf.timeouts.poll,
                        "handle" => &mut conf.timeouts.handle,
                        "health" => &mut conf.timeouts.health,
                        "init" => &mut conf.timeouts.init,
                        _ => conf.timeouts.other.entry(command.clone()).or_default(),
                    };
                    *slot = limit;
                    explicit_timeouts.insert(command);
                }
            }
            "retry" => {
                let retry = expect_mapping(ctx, value, &path)?;
                for (key, path, value) in ctx.entries(retry, &path, RETRY_KEYS) {
                    if key == "max_attempts" {
                        conf.retry.max_attempts = read_positive(ctx, value, &path)?;
                        retry_attempts_set = true;
                    } else {
                        conf.retry.backoff_base = read_duration(ctx, value, &path)?;
                    }
                }
            }
            "max_attempts" => shorthand_attempts = Some(read_positive(ctx, value, &path)?),
            "circuit_breaker" => {
                let breaker = expect_mapping(ctx, value, &path)?;
                for (key, path, value) in ctx.entries(breaker, &path, BREAKER_KEYS) {
                    if key == "threshold" {
                        conf.circuit_breaker.threshold = read_positive(ctx, value, &path)?;
                    } else {
                        conf.circuit_breaker.reset_after = read_duration(ctx, value, &path)?;
                    }
                }
            }
            "max_outstanding_polls" => {
                conf.max_outstanding_polls = narrow(ctx, read_count(ctx, value, &path)?, &path)?;
            }
            "notify_on_complete" => conf.notify_on_complete = read_flag(ctx, value, &path)?,
            "schedules" => conf.schedules = build_schedules(ctx, value, &path)?,
            _ => {
                expect_mapping(ctx, value, &path)?;
                conf.config = to_json(ctx, value, &path)?;
            }
        }
    }
    if let Some(limit) = plugin_timeout {
        conf.timeouts.default = limit;
        for (command, slot) in [
            ("poll", &mut conf.timeouts.poll),
            ("handle", &mut conf.timeouts.handle),
            ("health", &mut conf.timeouts.health),
            ("init", &mut conf.timeouts.init),
        ] {
            if !explicit_timeouts.contains(command) {
                *slot = limit;
            }
        }
    }
    // The full form is the more specific one, so it wins over the shorthand.
    if let (Some(attempts), false) = (shorthand_attempts, retry_attempts_set) {
        conf.retry.max_attempts = attempts;
    }
    Ok(conf)
}

fn build_schedules(
    ctx: &mut Ctx,
    value: &Value,
    prefix: &str,
) -> Result<Vec<ScheduleConf>, ConfigError> {
    let Value::Sequence(items) = value else {
        return Err(ctx.error(
            prefix,
            format!("expected a list of schedules, found {}", describe(value)),
        ));
    };
    let mut schedules: Vec<ScheduleConf> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let entry_path = format!("{prefix}[{index}]");
        let schedule = build_schedule(ctx, item, &entry_path)?;
        if let Some(first) = schedules.iter().position(|s| s.id == schedule.id) {
            return Err(ctx.error(
                &join(&entry_path, "id"),
                format!(
                    "duplicate schedule id `{}` (also used by {prefix}[{first}])",
                    schedule.id
                ),
            ));
        }
        schedules.push(schedule);
    }
    Ok(schedules)
}

fn build_schedule(ctx: &mut Ctx, value: &Value, prefix: &str) -> Result<ScheduleConf, ConfigError> {
    let map = expect_mapping(ctx, value, prefix)?;
    let mut schedule = ScheduleConf {
        id: "default".to_string(),
        command: "poll".to_string(),
        payload: serde_json::Value::Object(serde_json::Map::new()),
        origin: format!("{}: {prefix}", ctx.provenance.file_of(prefix).display()),
        ..ScheduleConf::default()
    };
    for (key, path, value) in ctx.entries(map, prefix, SCHEDULE_KEYS) {
        match key.as_str() {
            "id" => schedule.id = read_text(ctx, value, &path)?,
            "command" => {
                schedule.command = read_text(ctx, value, &path)?;
                if schedule.command == "handle" {
                    return Err(ctx.error(
                        &path,
                        "handle jobs need an event; schedules may not run handle",
                    ));
                }
            }
            "payload" => {
                expect_mapping(ctx, value, &path)?;
                schedule.payload = to_json(ctx, value, &path)?;
            }
            "every" => schedule.every = Some(read_text(ctx, value, &path)?),
            "cron" => schedule.cron = Some(read_text(ctx, value, &path)?),
            "at" => schedule.at = Some(read_text(ctx, value, &path)?),
            "after" => schedule.after = Some(read_duration_text(ctx, value, &path)?),
            "jitter" => schedule.jitter = Some(read_duration_text(ctx, value, &path)?),
            "only_between" => schedule.only_between = Some(read_text(ctx, value, &path)?),
            "timezone" => schedule.timezone = Some(read_text(ctx, value, &path)?),
            "not_on" => schedule.not_on = read_weekdays(ctx, value, &path)?,
            "catch_up" => {
                schedule.catch_up = Some(read_choice(
                    ctx,
                    value,
                    &path,
                    &["skip", "run_once", "run_all"],
                )?);
            }
            "if_running" => {
                schedule.if_running = Some(read_choice(
                    ctx,
                    value,
                    &path,
                    &["skip", "queue", "cancel"],
                )?);
            }
            // `preferred_window` is accepted so existing configs load; it is not enforced.
            _ => {}
        }
    }
    let kinds: Vec<&str> = [
        ("every", schedule.every.is_some()),
        ("cron", schedule.cron.is_some()),
        ("at", schedule.at.is_some()),
        ("after", schedule.after.is_some()),
    ]
    .into_iter()
    .filter_map(|(kind, set)| set.then_some(kind))
    .collect();
    match kinds.as_slice() {
        [_] => Ok(schedule),
        [] => Err(ctx.error(prefix, format!("schedule needs one of {SCHEDULE_KINDS}"))),
        several => {
            let listed: Vec<String> = several.iter().map(|k| format!("`{k}`")).collect();
            Err(ctx.error(
                prefix,
                format!(
                    "schedule sets {}; use exactly one of {SCHEDULE_KINDS}",
                    listed.join(" and ")
                ),
            ))
        }
    }
}

/// `not_on` entries: weekday names or numbers, kept as written for the scheduler.
fn read_weekdays(ctx: &Ctx, value: &Value, path: &str) -> Result<Vec<String>, ConfigError> {
    let items = match value {
        Value::Sequence(items) => items.iter().collect(),
        single => vec![single],
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| match item {
            Value::String(day) => Ok(day.clone()),
            Value::Number(number) if number.is_i64() || number.is_u64() => Ok(number.to_string()),
            other => Err(ctx.error(
                &format!("{path}[{index}]"),
                format!(
                    "expected a weekday name or number, found {}",
                    describe(other)
                ),
            )),
        })
        .collect()
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

fn read_positive<T: TryFrom<u64>>(ctx: &Ctx, value: &Value, path: &str) -> Result<T, ConfigError> {
    let number = read_count(ctx, value, path)?;
    if number < 1 {
        return Err(ctx.error(path, "must be at least 1"));
    }
    narrow(ctx, number, path)
}

fn read_duration(ctx: &Ctx, value: &Value, path: &str) -> Result<Duration, ConfigError> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        other => {
            return Err(ctx.error(
                path,
                format!(
                    "expected a duration such as `30s`, found {}",
                    describe(other)
                ),
            ));
        }
    };
    duration::parse(&text).map_err(|message| ctx.error(path, message))
}

/// A duration kept as written (the scheduler reads it), checked to parse.
fn read_duration_text(ctx: &Ctx, value: &Value, path: &str) -> Result<String, ConfigError> {
    read_duration(ctx, value, path)?;
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
                    .ok_or_else(|| ctx.error(path, format!("number `{number}` has no JSON form")))?
            }
        }
        Value::String(text) => serde_json::Value::String(text.clone()),
        Value::Sequence(items) => serde_json::Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(index, item)| to_json(ctx, item, &format!("{path}[{index}]")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Mapping(map) => {
            let mut object = serde_json::Map::new();
            for (key, item) in map {
                if matches!(key, Value::Sequence(_) | Value::Mapping(_)) {
                    return Err(
                        ctx.error(path, "mapping keys must be strings, numbers or booleans")
                    );
                }
                let key = key_text(key);
                let item = to_json(ctx, item, &join(path, &key))?;
                object.insert(key, item);
            }
            serde_json::Value::Object(object)
        }
        Value::Tagged(tagged) => to_json(ctx, &tagged.value, path)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::temp_tree::TempTree;
    use crate::config::{Breaker, Loaded, Retry, Synchronous, Timeouts};
    use std::path::PathBuf;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Loads `text` as the whole config.
    fn load(text: &str) -> (TempTree, Loaded) {
        let tree = TempTree::new();
        tree.write("config.yaml", text);
        let loaded = tree.load().unwrap();
        (tree, loaded)
    }

    /// Asserts that `text` is refused with `message` at `path` in config.yaml.
    fn check(text: &str, path: &str, message: &str) {
        let tree = TempTree::new();
        tree.write("config.yaml", text);
        assert_eq!(
            tree.error(&[]),
            format!("{}: {path}: {message}", tree.path("config.yaml").display()),
            "{text}"
        );
    }

    /// Asserts that `text` loads with exactly these warning messages (path: message).
    fn warns(text: &str, expected: &[&str]) {
        let (tree, loaded) = load(text);
        let prefix = format!("{}: ", tree.path("config.yaml").display());
        let got: Vec<String> = loaded
            .warnings
            .iter()
            .map(|w| w.to_string().strip_prefix(&prefix).unwrap().to_string())
            .collect();
        assert_eq!(got, expected, "{text}");
    }

    // ---- defaults ----

    #[test]
    fn an_empty_config_gets_every_default() {
        let (tree, loaded) = load("");
        assert!(loaded.warnings.is_empty());
        let config = loaded.config;
        assert_eq!(config.dir, tree.dir);
        let service = &config.service;
        assert_eq!(service.name, "ductile");
        assert_eq!(service.tick_interval, secs(60));
        assert_eq!(service.log_level, "info");
        assert_eq!(service.dedupe_ttl, secs(86_400));
        assert_eq!(service.job_log_retention, secs(30 * 86_400));
        assert_eq!(service.job_queue_retention, secs(86_400));
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(service.max_workers, cpus.saturating_sub(1).max(1));
        assert!(!service.strict_mode);
        assert!(!service.allow_symlinks);
        assert!(service.plugin_env_passthrough.is_empty());
        assert_eq!(service.shutdown_timeout, secs(30));
        assert_eq!(config.plugin_roots, [tree.path("plugins")]);
        assert_eq!(config.state.path, tree.path("ductile.db"));
        assert_eq!(config.state.synchronous, Synchronous::Normal);
        assert!(!config.api.enabled);
        assert_eq!(config.api.listen, "127.0.0.1:8080");
        assert_eq!(config.api.extra, serde_json::json!({}));
        assert!(config.plugins.is_empty());
        assert!(config.extra.is_empty());
    }

    #[test]
    fn a_bare_plugin_gets_every_default() {
        let (_tree, loaded) = load("plugins:\n  echo:\n");
        let echo = loaded.config.plugin("echo").unwrap();
        assert_eq!(echo.name, "echo");
        assert_eq!(echo.uses, None);
        assert!(echo.enabled);
        assert_eq!(echo.parallelism, None);
        assert_eq!(echo.timeouts, Timeouts::default());
        assert_eq!(echo.timeouts.poll, secs(60));
        assert_eq!(echo.timeouts.handle, secs(120));
        assert_eq!(echo.timeouts.health, secs(10));
        assert_eq!(echo.timeouts.init, secs(30));
        assert_eq!(echo.timeouts.default, secs(60));
        assert_eq!(echo.retry.max_attempts, 4);
        assert_eq!(echo.retry.backoff_base, secs(30));
        assert_eq!(echo.circuit_breaker.threshold, 3);
        assert_eq!(echo.circuit_breaker.reset_after, secs(1800));
        assert_eq!(echo.max_outstanding_polls, 1);
        assert!(!echo.notify_on_complete);
        assert!(echo.schedules.is_empty());
        assert_eq!(echo.config, serde_json::json!({}));
        assert!(loaded.config.plugin("nope").is_none());
    }

    #[test]
    fn a_bare_schedule_gets_every_default() {
        let (tree, loaded) = load("plugins:\n  echo:\n    schedules:\n      - every: 5m\n");
        let schedule = &loaded.config.plugin("echo").unwrap().schedules[0];
        assert_eq!(
            schedule,
            &ScheduleConf {
                id: "default".to_string(),
                command: "poll".to_string(),
                payload: serde_json::json!({}),
                every: Some("5m".to_string()),
                origin: format!(
                    "{}: plugins.echo.schedules[0]",
                    tree.path("config.yaml").display()
                ),
                ..ScheduleConf::default()
            }
        );
    }

    // ---- values ----

    #[test]
    fn reads_every_service_key() {
        let (_tree, loaded) = load(
            "service:\n  name: home-primary\n  tick_interval: 30s\n  log_level: debug\n  log_format: json\n  dedupe_ttl: 1h\n  job_log_retention: 7d\n  job_queue_retention: 2h\n  max_workers: 3\n  strict_mode: true\n  allow_symlinks: true\n  plugin_env_passthrough: [TZ, LANG]\n  shutdown_timeout: 90\n  tcc_paths: [/x]\n  preferred_window: x\n",
        );
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let service = loaded.config.service;
        assert_eq!(service.name, "home-primary");
        assert_eq!(service.tick_interval, secs(30));
        assert_eq!(service.log_level, "debug");
        assert_eq!(service.dedupe_ttl, secs(3600));
        assert_eq!(service.job_log_retention, secs(7 * 86_400));
        assert_eq!(service.job_queue_retention, secs(7200));
        assert_eq!(service.max_workers, 3);
        assert!(service.strict_mode);
        assert!(service.allow_symlinks);
        assert_eq!(service.plugin_env_passthrough, ["TZ", "LANG"]);
        assert_eq!(service.shutdown_timeout, secs(90));
    }

    #[test]
    fn resolves_state_and_plugin_roots_against_the_config_dir() {
        let (tree, loaded) = load(
            "state:\n  path: ./data/state.db\n  synchronous: full\nplugin_roots:\n  - ./plugins\n  - plugins\n  - /opt/ductile/plugins\n  - ../shared\n  - /opt/ductile/plugins/\n",
        );
        let config = loaded.config;
        assert_eq!(config.state.path, tree.path("data/state.db"));
        assert_eq!(config.state.synchronous, Synchronous::Full);
        assert_eq!(
            config.plugin_roots,
            [
                tree.path("plugins"),
                PathBuf::from("/opt/ductile/plugins"),
                tree.dir.parent().unwrap().join("shared"),
            ]
        );
    }

    #[test]
    fn expands_home_in_paths() {
        let Ok(home) = std::env::var("HOME") else {
            return;
        };
        let (_tree, loaded) = load("state: {path: ~/d.db}\nplugin_roots: [\"~/p\"]\n");
        assert_eq!(loaded.config.state.path, Path::new(&home).join("d.db"));
        assert_eq!(loaded.config.plugin_roots, [Path::new(&home).join("p")]);
    }

    #[test]
    fn api_keeps_unknown_keys_for_later() {
        let (_tree, loaded) = load(
            "api:\n  enabled: true\n  listen: 0.0.0.0:9000\n  auth:\n    tokens: [{token: t, scopes: ['*']}]\n  max_concurrent_sync: 10\n",
        );
        assert!(loaded.warnings.is_empty());
        let api = loaded.config.api;
        assert!(api.enabled);
        assert_eq!(api.listen, "0.0.0.0:9000");
        assert_eq!(
            api.extra,
            serde_json::json!({"auth": {"tokens": [{"token": "t", "scopes": ["*"]}]}, "max_concurrent_sync": 10})
        );
    }

    #[test]
    fn keeps_later_sections_uninterpreted() {
        let (_tree, loaded) = load(
            "routes: [{from: a, event_type: e, to: b}]\nwebhooks: [{name: gh}]\ntokens: [{name: t}]\nremote_ingress: {listen_path: /ingest}\ninstances: [{name: lab}]\nrelay: {x: 1}\npipelines: []\n",
        );
        assert!(loaded.warnings.is_empty());
        let extra = loaded.config.extra;
        let keys: Vec<&str> = extra.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "instances",
                "pipelines",
                "relay",
                "remote_ingress",
                "routes",
                "tokens",
                "webhooks"
            ]
        );
        assert_eq!(
            extra["routes"],
            serde_json::json!([{"from": "a", "event_type": "e", "to": "b"}])
        );
    }

    #[test]
    fn reads_every_plugin_key() {
        let (_tree, loaded) = load(
            "service: {max_workers: 4}\nplugins:\n  slack:\n    uses: notify\n    enabled: false\n    parallelism: 2\n    timeouts: {poll: 300s, handle: 5m, deploy: 10m}\n    retry: {max_attempts: 5, backoff_base: 1m}\n    circuit_breaker: {threshold: 6, reset_after: 1h}\n    max_outstanding_polls: 3\n    notify_on_complete: true\n    config: {channel: '#ops', n: 1.5, 7: seven}\n",
        );
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let slack = loaded.config.plugin("slack").unwrap();
        assert_eq!(slack.uses.as_deref(), Some("notify"));
        assert!(!slack.enabled);
        assert_eq!(slack.parallelism, Some(2));
        assert_eq!(slack.timeouts.poll, secs(300));
        assert_eq!(slack.timeouts.handle, secs(300));
        assert_eq!(slack.timeouts.health, secs(10));
        assert_eq!(slack.timeouts.for_command("deploy"), secs(600));
        assert_eq!(slack.timeouts.for_command("other"), secs(60));
        assert_eq!(
            slack.retry,
            Retry {
                max_attempts: 5,
                backoff_base: secs(60)
            }
        );
        assert_eq!(
            slack.circuit_breaker,
            Breaker {
                threshold: 6,
                reset_after: secs(3600)
            }
        );
        assert_eq!(slack.max_outstanding_polls, 3);
        assert!(slack.notify_on_complete);
        assert_eq!(
            slack.config,
            serde_json::json!({"channel": "#ops", "n": 1.5, "7": "seven"})
        );
    }

    #[test]
    fn plugin_timeout_is_the_default_for_unset_commands() {
        let (_tree, loaded) =
            load("plugins:\n  slow:\n    timeout: 15s\n    timeouts: {handle: 5m, sync: 2m}\n");
        let timeouts = &loaded.config.plugin("slow").unwrap().timeouts;
        assert_eq!(timeouts.default, secs(15));
        assert_eq!(timeouts.poll, secs(15));
        assert_eq!(timeouts.handle, secs(300));
        assert_eq!(timeouts.health, secs(15));
        assert_eq!(timeouts.init, secs(15));
        assert_eq!(timeouts.for_command("sync"), secs(120));
        assert_eq!(timeouts.for_command("custom"), secs(15));
    }

    #[test]
    fn max_attempts_shorthand_yields_to_retry() {
        let (_tree, loaded) = load(
            "plugins:\n  a: {max_attempts: 2}\n  b: {max_attempts: 2, retry: {max_attempts: 7}}\n",
        );
        assert_eq!(loaded.config.plugin("a").unwrap().retry.max_attempts, 2);
        assert_eq!(loaded.config.plugin("b").unwrap().retry.max_attempts, 7);
    }

    #[test]
    fn reads_every_schedule_key() {
        let (_tree, loaded) = load(
            "plugins:\n  example:\n    schedules:\n      - id: hourly\n        command: sync\n        every: 1h\n        jitter: 30s\n        catch_up: run_once\n        if_running: queue\n        only_between: \"08:00-18:00\"\n        timezone: Australia/Sydney\n        not_on: [saturday, 0, 7]\n        preferred_window: x\n        payload:\n          source: scheduler\n      - {id: once, at: '2026-03-15T14:00:00Z'}\n      - {id: later, after: 10m, not_on: sunday}\n      - {id: c, cron: '0 9 * * 1-5', catch_up: run_all, if_running: cancel}\n",
        );
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let schedules = &loaded.config.plugin("example").unwrap().schedules;
        let hourly = &schedules[0];
        assert_eq!(hourly.id, "hourly");
        assert_eq!(hourly.command, "sync");
        assert_eq!(hourly.every.as_deref(), Some("1h"));
        assert_eq!(hourly.jitter.as_deref(), Some("30s"));
        assert_eq!(hourly.catch_up.as_deref(), Some("run_once"));
        assert_eq!(hourly.if_running.as_deref(), Some("queue"));
        assert_eq!(hourly.only_between.as_deref(), Some("08:00-18:00"));
        assert_eq!(hourly.timezone.as_deref(), Some("Australia/Sydney"));
        assert_eq!(hourly.not_on, ["saturday", "0", "7"]);
        assert_eq!(hourly.payload, serde_json::json!({"source": "scheduler"}));
        assert_eq!(schedules[1].at.as_deref(), Some("2026-03-15T14:00:00Z"));
        assert_eq!(schedules[2].after.as_deref(), Some("10m"));
        assert_eq!(schedules[2].not_on, ["sunday"]);
        assert_eq!(schedules[3].cron.as_deref(), Some("0 9 * * 1-5"));
        assert_eq!(schedules[3].catch_up.as_deref(), Some("run_all"));
        assert_eq!(schedules[3].if_running.as_deref(), Some("cancel"));
    }

    #[test]
    fn cron_and_every_syntax_is_left_to_the_scheduler() {
        let (_tree, loaded) = load(
            "plugins:\n  p:\n    schedules:\n      - {id: a, every: fortnightly}\n      - {id: b, cron: 'not cron'}\n",
        );
        assert_eq!(loaded.config.plugin("p").unwrap().schedules.len(), 2);
    }

    #[test]
    fn scalars_may_be_quoted_numbers() {
        let (_tree, loaded) =
            load("service: {max_workers: \"2\"}\nplugins: {p: {parallelism: '2'}}\n");
        assert_eq!(loaded.config.service.max_workers, 2);
        assert_eq!(loaded.config.plugin("p").unwrap().parallelism, Some(2));
    }

    // ---- unknown keys ----

    #[test]
    fn unknown_keys_warn_with_suggestions() {
        warns(
            "x-anchor: &a {k: 1}\nservce: {}\nfoo: 1\nservice: {tick_intervl: 5s, tcc_paths: []}\nstate: {pth: x}\nplugins:\n  echo:\n    shedules: []\n    tiemout: 5s\n    retry: {max_attempt: 2}\n    circuit_breaker: {treshold: 2}\n    config: {anything: goes}\n    schedules:\n      - {every: 5m, jiter: 1s, zzz: 1}\n",
            &[
                "servce: unknown key `servce`; did you mean `service`?",
                "foo: unknown key `foo`",
                "service.tick_intervl: unknown key `tick_intervl`; did you mean `tick_interval`?",
                "state.pth: unknown key `pth`; did you mean `path`?",
                "plugins.echo.shedules: unknown key `shedules`; did you mean `schedules`?",
                "plugins.echo.tiemout: unknown key `tiemout`; did you mean `timeout`?",
                "plugins.echo.retry.max_attempt: unknown key `max_attempt`; did you mean `max_attempts`?",
                "plugins.echo.circuit_breaker.treshold: unknown key `treshold`; did you mean `threshold`?",
                "plugins.echo.schedules[0].jiter: unknown key `jiter`; did you mean `jitter`?",
                "plugins.echo.schedules[0].zzz: unknown key `zzz`",
            ],
        );
    }

    #[test]
    fn unknown_key_warnings_name_the_file_that_set_them() {
        let tree = TempTree::new();
        tree.write("config.yaml", "include: [p.yaml]\nplugins: {echo: {}}\n");
        tree.write("p.yaml", "plugins:\n  echo:\n    shedules: []\n");
        let loaded = tree.load().unwrap();
        assert_eq!(
            loaded.warnings,
            [Finding {
                file: tree.path("p.yaml"),
                path: "plugins.echo.shedules".to_string(),
                message: "unknown key `shedules`; did you mean `schedules`?".to_string(),
            }]
        );
    }

    #[test]
    fn suggests_only_near_keys() {
        assert_eq!(crate::suggest::closest("shedules", SCHEDULE_KEYS), None);
        assert_eq!(
            crate::suggest::closest("shedules", PLUGIN_KEYS),
            Some("schedules")
        );
        assert_eq!(crate::suggest::closest("id", &["at"]), None);
        assert_eq!(
            crate::suggest::closest("cronn", SCHEDULE_KEYS),
            Some("cron")
        );
        assert_eq!(
            crate::suggest::closest("completely_different", PLUGIN_KEYS),
            None
        );
        assert_eq!(crate::suggest::edit_distance("tiemout", "timeout"), 1);
        assert_eq!(crate::suggest::edit_distance("", "abc"), 3);
        assert_eq!(crate::suggest::edit_distance("kitten", "sitting"), 3);
    }

    // ---- rules ----

    #[test]
    fn durations_must_parse() {
        check(
            "service: {tick_interval: 5x}\n",
            "service.tick_interval",
            "invalid duration `5x`: unknown unit `x` (use ms, s, m, h, d or w)",
        );
        check(
            "service: {dedupe_ttl: [1]}\n",
            "service.dedupe_ttl",
            "expected a duration such as `30s`, found a list",
        );
        check(
            "plugins: {p: {timeouts: {poll: soon}}}\n",
            "plugins.p.timeouts.poll",
            "invalid duration `soon`: expected a number before `soon`",
        );
        check(
            "plugins: {p: {schedules: [{after: later}]}}\n",
            "plugins.p.schedules[0].after",
            "invalid duration `later`: expected a number before `later`",
        );
        check(
            "plugins: {p: {schedules: [{every: 5m, jitter: 3q}]}}\n",
            "plugins.p.schedules[0].jitter",
            "invalid duration `3q`: unknown unit `q` (use ms, s, m, h, d or w)",
        );
        check(
            "service: {tick_interval: 0s}\n",
            "service.tick_interval",
            "must be greater than 0s",
        );
    }

    #[test]
    fn counts_must_be_at_least_one() {
        check(
            "service: {max_workers: 0}\n",
            "service.max_workers",
            "must be at least 1",
        );
        check(
            "service: {max_workers: -2}\n",
            "service.max_workers",
            "expected a non-negative integer, found `-2`",
        );
        check(
            "plugins: {p: {parallelism: 0}}\n",
            "plugins.p.parallelism",
            "must be at least 1",
        );
        check(
            "plugins: {p: {retry: {max_attempts: 0}}}\n",
            "plugins.p.retry.max_attempts",
            "must be at least 1",
        );
        check(
            "plugins: {p: {max_attempts: 0}}\n",
            "plugins.p.max_attempts",
            "must be at least 1",
        );
        check(
            "plugins: {p: {circuit_breaker: {threshold: 0}}}\n",
            "plugins.p.circuit_breaker.threshold",
            "must be at least 1",
        );
        check(
            "plugins: {p: {max_outstanding_polls: 99999999999}}\n",
            "plugins.p.max_outstanding_polls",
            "99999999999 is too large",
        );
    }

    #[test]
    fn parallelism_is_capped_by_max_workers() {
        check(
            "service: {max_workers: 2}\nplugins: {p: {parallelism: 3}}\n",
            "plugins.p.parallelism",
            "must not exceed service.max_workers (2), got 3",
        );
    }

    #[test]
    fn job_queue_retention_covers_dedupe_ttl() {
        check(
            "service: {dedupe_ttl: 48h}\n",
            "service.job_queue_retention",
            "must be at least dedupe_ttl (2d), got 1d",
        );
    }

    #[test]
    fn plugin_config_must_be_a_mapping() {
        check(
            "plugins: {p: {config: [a, b]}}\n",
            "plugins.p.config",
            "expected a mapping, found a list",
        );
        check(
            "plugins: {p: 3}\n",
            "plugins.p",
            "expected a mapping, found `3`",
        );
        check(
            "plugins: [a]\n",
            "plugins",
            "expected a mapping, found a list",
        );
    }

    #[test]
    fn schedules_need_exactly_one_kind() {
        check(
            "plugins: {p: {schedules: [{id: a}]}}\n",
            "plugins.p.schedules[0]",
            "schedule needs one of `every`, `cron`, `at` or `after`",
        );
        check(
            "plugins: {p: {schedules: [{every: 5m, cron: '* * * * *', at: x}]}}\n",
            "plugins.p.schedules[0]",
            "schedule sets `every` and `cron` and `at`; use exactly one of `every`, `cron`, `at` or `after`",
        );
        check(
            "plugins: {p: {schedules: {every: 5m}}}\n",
            "plugins.p.schedules",
            "expected a list of schedules, found a mapping",
        );
    }

    #[test]
    fn schedules_may_not_run_handle() {
        check(
            "plugins: {p: {schedules: [{every: 5m, command: handle}]}}\n",
            "plugins.p.schedules[0].command",
            "handle jobs need an event; schedules may not run handle",
        );
    }

    #[test]
    fn schedule_ids_are_unique_within_a_plugin() {
        check(
            "plugins: {p: {schedules: [{every: 5m}, {id: x, every: 1h}, {cron: '* * * * *'}]}}\n",
            "plugins.p.schedules[2].id",
            "duplicate schedule id `default` (also used by plugins.p.schedules[0])",
        );
        let (_tree, loaded) =
            load("plugins:\n  p: {schedules: [{every: 5m}]}\n  q: {schedules: [{every: 5m}]}\n");
        assert_eq!(loaded.config.plugins.len(), 2);
    }

    #[test]
    fn schedule_policies_are_checked() {
        check(
            "plugins: {p: {schedules: [{every: 5m, catch_up: sometimes}]}}\n",
            "plugins.p.schedules[0].catch_up",
            "invalid catch_up `sometimes`: expected skip, run_once or run_all",
        );
        check(
            "plugins: {p: {schedules: [{every: 5m, if_running: wait}]}}\n",
            "plugins.p.schedules[0].if_running",
            "invalid if_running `wait`: expected skip, queue or cancel",
        );
        check(
            "plugins: {p: {schedules: [{every: 5m, not_on: [monday, [1]]}]}}\n",
            "plugins.p.schedules[0].not_on[1]",
            "expected a weekday name or number, found a list",
        );
        check(
            "plugins: {p: {schedules: [{every: 5m, not_on: [1.5]}]}}\n",
            "plugins.p.schedules[0].not_on[0]",
            "expected a weekday name or number, found `1.5`",
        );
        check(
            "plugins: {p: {schedules: [{every: 5m, payload: [1]}]}}\n",
            "plugins.p.schedules[0].payload",
            "expected a mapping, found a list",
        );
        check(
            "plugins: {p: {schedules: [5m]}}\n",
            "plugins.p.schedules[0]",
            "expected a mapping, found `5m`",
        );
    }

    #[test]
    fn synchronous_is_normal_or_full() {
        check(
            "state: {synchronous: fast}\n",
            "state.synchronous",
            "invalid synchronous `fast`: expected normal or full",
        );
        let (_tree, loaded) = load("state: {synchronous: FULL}\n");
        assert_eq!(loaded.config.state.synchronous, Synchronous::Full);
    }

    #[test]
    fn uses_may_not_name_itself() {
        check(
            "plugins: {echo: {uses: echo}}\n",
            "plugins.echo.uses",
            "plugin `echo` cannot use itself; name the base plugin",
        );
    }

    #[test]
    fn types_are_checked() {
        check(
            "plugins: {p: {enabled: yes}}\n",
            "plugins.p.enabled",
            "expected true or false, found `yes`",
        );
        check(
            "service: {name: {a: 1}}\n",
            "service.name",
            "expected a string, found a mapping",
        );
        check(
            "service: {plugin_env_passthrough: TZ}\n",
            "service.plugin_env_passthrough",
            "expected a list, found `TZ`",
        );
        check("service: 3\n", "service", "expected a mapping, found `3`");
        check(
            "plugins: {p: {config: {k: .nan}}}\n",
            "plugins.p.config.k",
            "number `.nan` has no JSON form",
        );
        check(
            "routes: [{? [a, b] : c}]\n",
            "routes[0]",
            "mapping keys must be strings, numbers or booleans",
        );
    }

    #[test]
    fn errors_name_the_file_that_set_the_value() {
        let tree = TempTree::new();
        tree.write("config.yaml", "include: [s.yaml]\nplugins: {p: {}}\n");
        tree.write(
            "s.yaml",
            "plugins:\n  p:\n    schedules:\n      - {every: 5m, command: handle}\n",
        );
        assert_eq!(
            tree.error(&[]),
            format!(
                "{}: plugins.p.schedules[0].command: handle jobs need an event; schedules may not run handle",
                tree.path("s.yaml").display()
            )
        );
    }

    #[test]
    fn an_unset_variable_inside_plugin_config_is_an_error() {
        let tree = TempTree::new();
        tree.write(
            "config.yaml",
            "plugins:\n  p:\n    config:\n      nested:\n        key: \"${DUCTILE_TEST_PLUGIN_SECRET}\"\n",
        );
        assert_eq!(
            tree.error(&[]),
            format!(
                "{}:5: environment variable `DUCTILE_TEST_PLUGIN_SECRET` is not set",
                tree.path("config.yaml").display()
            )
        );
        let loaded = tree
            .load_with(&[("DUCTILE_TEST_PLUGIN_SECRET", "s3cret")])
            .unwrap();
        assert_eq!(
            loaded.config.plugin("p").unwrap().config,
            serde_json::json!({"nested": {"key": "s3cret"}})
        );
    }
}
