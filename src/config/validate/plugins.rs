//! `plugins:`: each instance, its timeouts, retry and breaker policies, poll
//! guard and schedules, with defaults applied and ranges enforced.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

use super::super::provenance::{join, key_text};
use super::super::yaml::describe;
use super::super::{Breaker, ConfigError, PluginConf, Retry, ScheduleConf};
use super::super::{duration, limits};
use super::{
    Ctx, expect_mapping, narrow, read_choice, read_count, read_flag, read_in, read_span,
    read_span_text, read_text, to_json,
};

pub(crate) const PLUGIN_KEYS: &[&str] = &[
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
    "container",
    "keep_warm",
];

const RETRY_KEYS: &[&str] = &["max_attempts", "backoff_base"];

const BREAKER_KEYS: &[&str] = &["threshold", "reset_after"];

pub(super) const SCHEDULE_KEYS: &[&str] = &[
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

pub(super) fn build_plugins(
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
                let parallelism = read_count(ctx, value, &path)?;
                if !(1..=max_workers as u64).contains(&parallelism) {
                    return Err(ctx.error(
                        &path,
                        format!(
                            "must be between 1 and service.max_workers ({max_workers}), got {parallelism}"
                        ),
                    ));
                }
                conf.parallelism = Some(narrow(ctx, parallelism, &path)?);
            }
            "timeout" => plugin_timeout = Some(read_span(ctx, value, &path, limits::TIMEOUT)?),
            "timeouts" => {
                for (command, value) in expect_mapping(ctx, value, &path)? {
                    let command = key_text(command);
                    if value.is_null() {
                        continue;
                    }
                    let limit = read_span(ctx, value, &join(&path, &command), limits::TIMEOUT)?;
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
                retry_attempts_set |= read_retry(ctx, value, &path, &mut conf.retry)?;
            }
            "max_attempts" => {
                shorthand_attempts = Some(read_in(ctx, value, &path, limits::MAX_ATTEMPTS)?);
            }
            "circuit_breaker" => {
                read_breaker(ctx, value, &path, &mut conf.circuit_breaker)?;
            }
            "max_outstanding_polls" => {
                conf.max_outstanding_polls =
                    read_in(ctx, value, &path, limits::MAX_OUTSTANDING_POLLS)?;
            }
            "notify_on_complete" => {
                conf.notify_on_complete = read_flag(ctx, value, &path)?;
            }
            "schedules" => conf.schedules = build_schedules(ctx, value, &path)?,
            "container" => {
                let spec = crate::plugin::container::spec::parse(value).map_err(|(f, m)| {
                    let at = if f.is_empty() {
                        path.clone()
                    } else {
                        format!("{path}.{f}")
                    };
                    ctx.error(&at, m)
                })?;
                conf.container = Some(spec);
            }
            "keep_warm" => conf.keep_warm = Some(read_span(ctx, value, &path, limits::KEEP_WARM)?),
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
        origin: prefix.to_string(),
        file: ctx.provenance.file_of(prefix),
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
            "every" => schedule.every = Some(read_every(ctx, value, &path)?),
            "cron" => schedule.cron = Some(read_text(ctx, value, &path)?),
            "at" => schedule.at = Some(read_text(ctx, value, &path)?),
            "after" => {
                schedule.after = Some(read_span_text(ctx, value, &path, limits::AFTER)?);
            }
            "jitter" => {
                schedule.jitter = Some(read_span_text(ctx, value, &path, limits::JITTER)?);
            }
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
            _ => ctx.note_inactive(&path),
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

/// `every:` as written. Its syntax (`5m`, `hourly`, ...) is the scheduler's to
/// check; a plain duration is held to its range here, like every other one.
fn read_every(ctx: &Ctx, value: &Value, path: &str) -> Result<String, ConfigError> {
    let text = read_text(ctx, value, path)?;
    if let Ok(interval) = duration::parse(&text) {
        limits::EVERY
            .check(interval, &text)
            .map_err(|message| ctx.error(path, message))?;
    }
    Ok(text)
}

/// A `retry:` mapping into `retry`; true when it set `max_attempts`.
pub(super) fn read_retry(
    ctx: &mut Ctx,
    value: &Value,
    path: &str,
    retry: &mut Retry,
) -> Result<bool, ConfigError> {
    let map = expect_mapping(ctx, value, path)?;
    let mut attempts_set = false;
    for (key, path, value) in ctx.entries(map, path, RETRY_KEYS) {
        if key == "max_attempts" {
            retry.max_attempts = read_in(ctx, value, &path, limits::MAX_ATTEMPTS)?;
            attempts_set = true;
        } else {
            retry.backoff_base = read_span(ctx, value, &path, limits::BACKOFF_BASE)?;
        }
    }
    Ok(attempts_set)
}

/// A `circuit_breaker:` mapping into `breaker`.
pub(super) fn read_breaker(
    ctx: &mut Ctx,
    value: &Value,
    path: &str,
    breaker: &mut Breaker,
) -> Result<(), ConfigError> {
    let map = expect_mapping(ctx, value, path)?;
    for (key, path, value) in ctx.entries(map, path, BREAKER_KEYS) {
        if key == "threshold" {
            breaker.threshold = read_in(ctx, value, &path, limits::BREAKER_THRESHOLD)?;
        } else {
            breaker.reset_after = read_span(ctx, value, &path, limits::BREAKER_RESET_AFTER)?;
        }
    }
    Ok(())
}
