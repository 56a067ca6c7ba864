//! `routes:` and `pipelines:`: the structural rules that need no manifest.
//!
//! Owns: the schema of a route, a pipeline and a step; unique pipeline names
//! and step ids; `on` xor `on-hook`; exactly one step mode; `with`/`baggage`
//! only where they mean something; `payload:` read as `with:` (with a
//! warning); and the compilation of `if:`, `with:` and `baggage:` through the
//! router's own compilers, their errors placed at the step's key path.
//! Must not: decide whether plugins or call targets exist (the route graph
//! does, with the manifests in hand).
//!
//! Messages name a pipeline by index and name (`pipelines[2] (summarize)`):
//! pipelines from several included files are appended, so the index alone
//! would not find it.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_yaml::{Mapping, Value};

use super::super::pipeline::{
    Action, Compiled, ExecutionMode, Hook, PipelineConf, Relay, RouteConf, StepConf, Trigger, Uses,
};
use super::super::provenance::{join, key_text};
use super::super::yaml::describe;
use super::super::{ConfigError, Finding, duration};
use super::{Ctx, duration_text, to_json};
use crate::router::baggage::Claims;
use crate::router::condition::Condition;
use crate::router::template::Template;

pub(super) const ROUTE_KEYS: &[&str] = &["from", "event_type", "to"];

pub(super) const PIPELINE_KEYS: &[&str] = &[
    "name",
    "on",
    "on-hook",
    "from_plugin",
    "if",
    "max_depth",
    "execution_mode",
    "timeout",
    "steps",
];

pub(super) const STEP_KEYS: &[&str] = &[
    "id", "uses", "call", "steps", "split", "relay", "if", "with", "payload", "baggage",
];

const RELAY_KEYS: &[&str] = &["to", "event", "dedupe_key", "with", "baggage"];

/// The step modes, exactly one of which each step sets.
const MODES: [&str; 5] = ["uses", "call", "steps", "split", "relay"];

/// Where a value is: the key path provenance knows it by, and the one messages show.
#[derive(Debug, Clone)]
struct Site {
    /// `pipelines[2].steps[1]`: what [`super::super::provenance::Provenance`] resolves.
    real: String,
    /// `pipelines[2] (summarize).steps[1]`: what people read.
    label: String,
}

impl Site {
    fn top(path: &str) -> Site {
        Site {
            real: path.to_string(),
            label: path.to_string(),
        }
    }

    fn key(&self, key: &str) -> Site {
        Site {
            real: join(&self.real, key),
            label: join(&self.label, key),
        }
    }

    fn item(&self, index: usize) -> Site {
        Site {
            real: format!("{}[{index}]", self.real),
            label: format!("{}[{index}]", self.label),
        }
    }

    fn file(&self, ctx: &Ctx) -> PathBuf {
        ctx.provenance.file_of(&self.real)
    }

    fn error(&self, ctx: &Ctx, message: impl Into<String>) -> ConfigError {
        ConfigError::invalid(self.file(ctx), &self.label, message)
    }

    fn warn(&self, ctx: &mut Ctx, message: impl Into<String>) {
        let file = self.file(ctx);
        ctx.warnings.push(Finding {
            file,
            path: self.label.clone(),
            message: message.into(),
        });
    }
}

// ---- routes ----

/// `routes:`: a list of `{from, event_type, to}`.
pub(super) fn build_routes(
    ctx: &mut Ctx,
    value: Option<&Value>,
) -> Result<Vec<RouteConf>, ConfigError> {
    let mut routes: Vec<RouteConf> = Vec::new();
    let Some(value) = value else {
        return Ok(routes);
    };
    let section = Site::top("routes");
    for (index, item) in list(ctx, value, &section)?.iter().enumerate() {
        let site = section.item(index);
        let map = mapping(ctx, item, &site)?;
        let mut fields: HashMap<&str, String> = HashMap::new();
        for (key, value) in map {
            let key = key_text(key);
            let field = site.key(&key);
            match ROUTE_KEYS.iter().find(|known| **known == key) {
                Some(known) => {
                    fields.insert(known, read_name(ctx, value, &field)?);
                }
                None => warn_unknown(ctx, &field, &key, ROUTE_KEYS),
            }
        }
        let mut take = |key: &str| {
            fields
                .remove(key)
                .ok_or_else(|| site.error(ctx, format!("`{key}` is required")))
        };
        let route = RouteConf {
            from: take("from")?,
            event_type: take("event_type")?,
            to: take("to")?,
            file: site.file(ctx),
            origin: site.label.clone(),
        };
        let same = |r: &&RouteConf| {
            (&r.from, &r.event_type, &r.to) == (&route.from, &route.event_type, &route.to)
        };
        if let Some(first) = routes.iter().find(same) {
            let message = format!(
                "the same route as {} in {}; each event would be delivered twice",
                first.origin,
                first.file.display()
            );
            site.warn(ctx, message);
        }
        routes.push(route);
    }
    Ok(routes)
}

// ---- pipelines ----

/// `pipelines:`: a list of pipeline definitions with unique names.
pub(super) fn build_pipelines(
    ctx: &mut Ctx,
    value: Option<&Value>,
) -> Result<Vec<PipelineConf>, ConfigError> {
    let mut pipelines: Vec<PipelineConf> = Vec::new();
    let Some(value) = value else {
        return Ok(pipelines);
    };
    let section = Site::top("pipelines");
    for (index, item) in list(ctx, value, &section)?.iter().enumerate() {
        let pipeline = build_pipeline(ctx, item, section.item(index))?;
        if let Some(first) = pipelines.iter().find(|p| p.name == pipeline.name) {
            return Err(ConfigError::invalid(
                pipeline.file.clone(),
                &join(&pipeline.origin, "name"),
                format!(
                    "duplicate pipeline name `{}` (also {} in {})",
                    pipeline.name,
                    first.origin,
                    first.file.display()
                ),
            ));
        }
        pipelines.push(pipeline);
    }
    Ok(pipelines)
}

fn build_pipeline(ctx: &mut Ctx, value: &Value, site: Site) -> Result<PipelineConf, ConfigError> {
    let map = mapping(ctx, value, &site)?;
    let name = match map.get("name") {
        Some(name) if !name.is_null() => read_word(ctx, name, &site.key("name"))?,
        _ => return Err(site.error(ctx, "`name` is required")),
    };
    // From here on, messages carry the name next to the index.
    let site = Site {
        real: site.real,
        label: format!("{} ({name})", site.label),
    };
    let mut on = None;
    let mut hook = None;
    let mut pipeline = PipelineConf {
        name,
        trigger: Trigger::Event(String::new()),
        from_plugin: None,
        condition: None,
        max_depth: None,
        execution_mode: ExecutionMode::Asynchronous,
        timeout: None,
        steps: Vec::new(),
        file: site.file(ctx),
        origin: site.label.clone(),
    };
    let mut steps = None;
    for (key, value) in map {
        let key = key_text(key);
        let field = site.key(&key);
        if !PIPELINE_KEYS.contains(&key.as_str()) {
            warn_unknown(ctx, &field, &key, PIPELINE_KEYS);
            continue;
        }
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "on" => on = Some(read_name(ctx, value, &field)?),
            "on-hook" => hook = Some(read_hook(ctx, value, &field)?),
            "from_plugin" => pipeline.from_plugin = Some(read_name(ctx, value, &field)?),
            "if" => pipeline.condition = Some(compile_condition(ctx, value, &field)?),
            "max_depth" => pipeline.max_depth = Some(read_max_depth(ctx, value, &field)?),
            "execution_mode" => pipeline.execution_mode = read_mode(ctx, value, &field)?,
            "timeout" => pipeline.timeout = Some(read_timeout(ctx, value, &field)?),
            "steps" => steps = Some((value, field)),
            // `name`, read above.
            _ => {}
        }
    }
    pipeline.trigger = match (on, hook) {
        (Some(event), None) => Trigger::Event(event),
        (None, Some(hook)) => Trigger::Hook(hook),
        (Some(_), Some(_)) => {
            return Err(site.error(ctx, "set `on` or `on-hook`, not both"));
        }
        (None, None) => return Err(site.error(ctx, "`on` or `on-hook` is required")),
    };
    if pipeline.timeout.is_some() && pipeline.execution_mode == ExecutionMode::Asynchronous {
        site.key("timeout").warn(
            ctx,
            "`timeout` applies only to `execution_mode: synchronous`; it is ignored here",
        );
    }
    let Some((value, field)) = steps else {
        return Err(site.error(ctx, "`steps` is required"));
    };
    let mut ids = HashMap::new();
    pipeline.steps = build_steps(ctx, value, &field, "steps", &mut ids)?;
    Ok(pipeline)
}

/// A list of steps (a pipeline's, or a nested `steps:`/`split:`): never empty.
/// `ids` holds the step ids taken so far in the pipeline, with their paths.
fn build_steps(
    ctx: &mut Ctx,
    value: &Value,
    site: &Site,
    path: &str,
    ids: &mut HashMap<String, String>,
) -> Result<Vec<StepConf>, ConfigError> {
    let items = list(ctx, value, site)?;
    if items.is_empty() {
        let key = path.rsplit('.').next().unwrap_or(path);
        return Err(site.error(ctx, format!("`{key}` must not be empty")));
    }
    let mut steps = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let step_path = format!("{path}[{index}]");
        steps.push(build_step(ctx, item, site.item(index), step_path, ids)?);
    }
    Ok(steps)
}

fn build_step(
    ctx: &mut Ctx,
    value: &Value,
    site: Site,
    path: String,
    ids: &mut HashMap<String, String>,
) -> Result<StepConf, ConfigError> {
    let map = mapping(ctx, value, &site)?;
    for (key, _) in map {
        let key = key_text(key);
        if !STEP_KEYS.contains(&key.as_str()) {
            warn_unknown(ctx, &site.key(&key), &key, STEP_KEYS);
        }
    }
    let present = |key: &str| map.get(key).filter(|v| !v.is_null());
    let id = match present("id") {
        Some(value) => {
            let field = site.key("id");
            let id = read_word(ctx, value, &field)?;
            if let Some(first) = ids.get(&id) {
                return Err(field.error(
                    ctx,
                    format!(
                        "duplicate step id `{id}` (also {first}); ids are unique within a pipeline"
                    ),
                ));
            }
            ids.insert(id.clone(), site.label.clone());
            Some(id)
        }
        None => None,
    };
    let modes: Vec<&str> = MODES.into_iter().filter(|m| present(m).is_some()).collect();
    let mode = match modes.as_slice() {
        [one] => *one,
        [] => {
            return Err(site.error(
                ctx,
                "a step needs one of `uses`, `call`, `steps`, `split` or `relay`",
            ));
        }
        several => {
            let listed: Vec<String> = several.iter().map(|m| format!("`{m}`")).collect();
            return Err(site.error(
                ctx,
                format!(
                    "a step does exactly one of `uses`, `call`, `steps`, `split` or `relay`; this one sets {}",
                    listed.join(" and ")
                ),
            ));
        }
    };
    let with = read_with(ctx, &site, present("with"), present("payload"))?;
    let baggage = match present("baggage") {
        Some(value) => Some(compile_claims(ctx, value, &site.key("baggage"))?),
        None => None,
    };
    if !matches!(mode, "uses" | "relay") {
        for (key, set) in [("with", with.is_some()), ("baggage", baggage.is_some())] {
            if set {
                return Err(site.key(key).error(
                    ctx,
                    format!("`{key}` applies only to `uses` and `relay` steps, not to `{mode}`"),
                ));
            }
        }
    }
    let condition = match present("if") {
        Some(value) => Some(compile_condition(ctx, value, &site.key("if"))?),
        None => None,
    };
    let field = site.key(mode);
    let value = present(mode).unwrap_or(&Value::Null);
    let action = match mode {
        "uses" => Action::Uses(Uses {
            plugin: read_name(ctx, value, &field)?,
            with,
            baggage,
        }),
        "call" => Action::Call(read_word(ctx, value, &field)?),
        "steps" => Action::Steps(build_steps(
            ctx,
            value,
            &field,
            &format!("{path}.steps"),
            ids,
        )?),
        "split" => Action::Split(build_steps(
            ctx,
            value,
            &field,
            &format!("{path}.split"),
            ids,
        )?),
        _ => Action::Relay(build_relay(ctx, value, &field, with, baggage)?),
    };
    Ok(StepConf {
        id,
        action,
        condition,
        path,
        file: site.file(ctx),
        origin: site.label,
    })
}

/// `with:`, or `payload:` as the cookbook spells it (read as `with:`, with a warning).
fn read_with(
    ctx: &mut Ctx,
    site: &Site,
    with: Option<&Value>,
    payload: Option<&Value>,
) -> Result<Option<Compiled<Template>>, ConfigError> {
    match (with, payload) {
        (Some(_), Some(_)) => Err(site
            .key("payload")
            .error(ctx, "`payload` is an alias of `with`; set only one of them")),
        (Some(value), None) => Ok(Some(compile_template(ctx, value, &site.key("with"))?)),
        (None, Some(value)) => {
            let field = site.key("payload");
            field.warn(ctx, "read as `with:`; write `with:` instead");
            Ok(Some(compile_template(ctx, value, &field)?))
        }
        (None, None) => Ok(None),
    }
}

/// A `relay:` mapping. Its `with`/`baggage` may sit inside it (as the spec
/// writes it) or beside it on the step, but not both.
fn build_relay(
    ctx: &mut Ctx,
    value: &Value,
    site: &Site,
    with: Option<Compiled<Template>>,
    baggage: Option<Compiled<Claims>>,
) -> Result<Relay, ConfigError> {
    let map = mapping(ctx, value, site)?;
    let mut relay = Relay {
        to: String::new(),
        event: String::new(),
        dedupe_key: None,
        with,
        baggage,
    };
    for (key, value) in map {
        let key = key_text(key);
        let field = site.key(&key);
        if !RELAY_KEYS.contains(&key.as_str()) {
            warn_unknown(ctx, &field, &key, RELAY_KEYS);
            continue;
        }
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "to" => relay.to = read_name(ctx, value, &field)?,
            "event" => relay.event = read_name(ctx, value, &field)?,
            "dedupe_key" => {
                let source = read_name(ctx, value, &field)?;
                if !source.starts_with("payload.") && !source.starts_with("context.") {
                    return Err(field.error(
                        ctx,
                        format!("`{source}` must start with `payload.` or `context.`"),
                    ));
                }
                relay.dedupe_key = Some(source);
            }
            "with" | "baggage" => {
                let step = site.label.rsplit_once('.').map_or("", |(step, _)| step);
                let twice = if key == "with" {
                    relay.with.is_some()
                } else {
                    relay.baggage.is_some()
                };
                if twice {
                    return Err(field.error(
                        ctx,
                        format!("`{key}` is set both here and on the step ({step}); set it once"),
                    ));
                }
                if key == "with" {
                    relay.with = Some(compile_template(ctx, value, &field)?);
                } else {
                    relay.baggage = Some(compile_claims(ctx, value, &field)?);
                }
            }
            _ => {}
        }
    }
    for (key, text) in [("to", &relay.to), ("event", &relay.event)] {
        if text.is_empty() {
            return Err(site.error(ctx, format!("`{key}` is required")));
        }
    }
    // A relay's `with:` is a projection: bare `payload.x` paths are references.
    if let Some(with) = relay.with.take() {
        let value = Template::compile_projection(&with.source)
            .map_err(|e| compile_error(ctx, &site.key("with"), &e.path, e.message))?;
        relay.with = Some(Compiled {
            value,
            source: with.source,
        });
    }
    Ok(relay)
}

// ---- compiled values ----

/// Places an error from one of the router's compilers below `site`: its
/// `path` is relative to the value compiled.
fn compile_error(ctx: &Ctx, site: &Site, path: &str, message: String) -> ConfigError {
    let label = if path.is_empty() {
        site.label.clone()
    } else if path.starts_with('[') {
        format!("{}{path}", site.label)
    } else {
        format!("{}.{path}", site.label)
    };
    ConfigError::invalid(site.file(ctx), &label, message)
}

fn compile_condition(
    ctx: &Ctx,
    value: &Value,
    site: &Site,
) -> Result<Compiled<Condition>, ConfigError> {
    let source = to_json(ctx, value, &site.real)?;
    match Condition::compile(&source) {
        Ok(value) => Ok(Compiled { value, source }),
        Err(e) => Err(compile_error(ctx, site, &e.path, e.message)),
    }
}

fn compile_template(
    ctx: &Ctx,
    value: &Value,
    site: &Site,
) -> Result<Compiled<Template>, ConfigError> {
    mapping(ctx, value, site)?;
    let source = to_json(ctx, value, &site.real)?;
    match Template::compile(&source) {
        Ok(value) => Ok(Compiled { value, source }),
        Err(e) => Err(compile_error(ctx, site, &e.path, e.message)),
    }
}

fn compile_claims(ctx: &Ctx, value: &Value, site: &Site) -> Result<Compiled<Claims>, ConfigError> {
    mapping(ctx, value, site)?;
    let source = to_json(ctx, value, &site.real)?;
    match Claims::compile(&source) {
        Ok(value) => Ok(Compiled { value, source }),
        Err(e) => Err(compile_error(ctx, site, &e.path, e.message)),
    }
}

// ---- scalars ----

fn list<'v>(ctx: &Ctx, value: &'v Value, site: &Site) -> Result<&'v [Value], ConfigError> {
    match value {
        Value::Sequence(items) => Ok(items),
        other => Err(site.error(ctx, format!("expected a list, found {}", describe(other)))),
    }
}

fn mapping<'v>(ctx: &Ctx, value: &'v Value, site: &Site) -> Result<&'v Mapping, ConfigError> {
    match value {
        Value::Mapping(map) => Ok(map),
        other => Err(site.error(
            ctx,
            format!("expected a mapping, found {}", describe(other)),
        )),
    }
}

fn warn_unknown(ctx: &mut Ctx, site: &Site, key: &str, known: &[&str]) {
    site.warn(ctx, super::super::error::unknown_key(key, known));
}

/// A plugin, event type or relay name: non-empty text without whitespace.
fn read_name(ctx: &Ctx, value: &Value, site: &Site) -> Result<String, ConfigError> {
    let text = match value {
        Value::String(text) => text.clone(),
        other => {
            return Err(site.error(ctx, format!("expected a string, found {}", describe(other))));
        }
    };
    if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(site.error(
            ctx,
            format!(
                "invalid value `{}`: expected a name without spaces",
                text.escape_debug()
            ),
        ));
    }
    Ok(text)
}

/// A pipeline name or step id: letters, digits, `-`, `_` and `.`, so it can
/// stand in hop ids (`summarize:steps[1]`) and API paths unescaped.
fn read_word(ctx: &Ctx, value: &Value, site: &Site) -> Result<String, ConfigError> {
    let text = read_name(ctx, value, site)?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !text.chars().all(allowed) {
        return Err(site.error(
            ctx,
            format!(
                "invalid name `{}`: use letters, digits, `-`, `_` and `.`",
                text.escape_debug()
            ),
        ));
    }
    Ok(text)
}

fn read_hook(ctx: &Ctx, value: &Value, site: &Site) -> Result<Hook, ConfigError> {
    let text = read_name(ctx, value, site)?;
    Hook::parse(&text).ok_or_else(|| {
        site.error(
            ctx,
            format!("unknown hook `{text}`: expected job.completed, job.failed or job.timed_out"),
        )
    })
}

fn read_max_depth(ctx: &Ctx, value: &Value, site: &Site) -> Result<u32, ConfigError> {
    let number = match value {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    };
    match number {
        Some(n) if n < 0 => Err(site.error(
            ctx,
            format!("must not be negative, got {n} (0 means unlimited)"),
        )),
        Some(n) => u32::try_from(n).map_err(|_| site.error(ctx, format!("{n} is too large"))),
        None => Err(site.error(
            ctx,
            format!("expected a non-negative integer, found {}", describe(value)),
        )),
    }
}

fn read_mode(ctx: &Ctx, value: &Value, site: &Site) -> Result<ExecutionMode, ConfigError> {
    let text = read_name(ctx, value, site)?;
    match text.as_str() {
        "async" | "asynchronous" => Ok(ExecutionMode::Asynchronous),
        "synchronous" => Ok(ExecutionMode::Synchronous),
        _ => Err(site.error(
            ctx,
            format!("invalid execution_mode `{text}`: expected async, asynchronous or synchronous"),
        )),
    }
}

fn read_timeout(ctx: &Ctx, value: &Value, site: &Site) -> Result<std::time::Duration, ConfigError> {
    let text = duration_text(ctx, value, &site.real)?;
    let parsed = duration::parse(&text).map_err(|message| site.error(ctx, message))?;
    if parsed.is_zero() {
        return Err(site.error(ctx, "must be longer than 0s"));
    }
    Ok(parsed)
}
