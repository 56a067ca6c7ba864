//! The rule pass: a YAML mapping, read into serde-derived raw structs whose fields
//! keep their YAML values, then checked field by field so every message names
//! the exact field path and what was found there (serde's own type errors would
//! say neither).

use std::collections::HashSet;
use std::path::{Component, Path};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use super::{
    CommandKind, CommandSpec, ConfigKeys, DEFAULT_MAX_SUBS, FactOutput, MANIFEST_SPEC,
    MANIFEST_VERSION, MAX_SUBS_LIMIT, Manifest, ManifestError,
};
use crate::plugin::protocol::PROTOCOL_VERSION;

mod contract;

/// The top level as written. `manifest_spec` and `manifest_version` keep an explicit
/// null apart from a missing key (the message differs); elsewhere null is "not set".
#[derive(Deserialize)]
struct RawManifest {
    #[serde(default, deserialize_with = "present")]
    manifest_spec: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    manifest_version: Option<Value>,
    name: Option<Value>,
    version: Option<Value>,
    protocol: Option<Value>,
    entrypoint: Option<Value>,
    description: Option<Value>,
    concurrency_safe: Option<Value>,
    commands: Option<Value>,
    fact_outputs: Option<Value>,
    config_keys: Option<Value>,
    stopwatch: Option<Value>,
    container: Option<Value>,
}

#[derive(Deserialize)]
struct RawCommand {
    name: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<Value>,
    description: Option<Value>,
    idempotent: Option<Value>,
    retry_safe: Option<Value>,
    input_schema: Option<Value>,
    output_schema: Option<Value>,
    values: Option<Value>,
}

#[derive(Deserialize)]
struct RawFact {
    when: Option<Value>,
    from: Option<Value>,
    fact_type: Option<Value>,
    compatibility_view: Option<Value>,
}

#[derive(Deserialize)]
struct RawWhen {
    command: Option<Value>,
}

#[derive(Deserialize)]
struct RawConfigKeys {
    required: Option<Value>,
    optional: Option<Value>,
}

#[derive(Deserialize)]
struct RawStopwatch {
    max_subs: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Validates the top-level mapping of the manifest in `file`.
pub(super) fn check(file: &Path, top: Mapping) -> Result<Manifest, ManifestError> {
    let r = Rules { file };
    let m: RawManifest = r.raw(top, "")?;
    match m.manifest_spec {
        None => {
            return Err(r.err(
                "manifest_spec",
                format!("is required (must be `{MANIFEST_SPEC}`)"),
            ));
        }
        Some(Value::String(s)) if s == MANIFEST_SPEC => {}
        Some(v) => {
            return Err(r.err(
                "manifest_spec",
                format!("must be `{MANIFEST_SPEC}`, got {}", show(&v)),
            ));
        }
    }
    match m.manifest_version {
        None => {
            return Err(r.err(
                "manifest_version",
                format!("is required (must be {MANIFEST_VERSION})"),
            ));
        }
        Some(Value::Number(n)) if n.as_u64() == Some(MANIFEST_VERSION) => {}
        Some(v) => {
            return Err(r.err(
                "manifest_version",
                format!("must be {MANIFEST_VERSION}, got {}", show(&v)),
            ));
        }
    }
    let name = r.required_string(m.name, "name")?;
    if let Some(bad) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '/')
    {
        return Err(r.err(
            "name",
            format!("must not contain {bad:?}, got `{name}` (use underscores or hyphens)"),
        ));
    }
    let version = match m.version {
        None => return Err(r.err("version", "is required".to_string())),
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        // `version: 1.0` arrives as a number; keep it as written rather than refuse it.
        Some(Value::Number(n)) => n.to_string(),
        Some(v) => {
            return Err(r.err(
                "version",
                format!("must be a non-empty string, got {}", show(&v)),
            ));
        }
    };
    let protocol = match m.protocol {
        None => {
            return Err(r.err(
                "protocol",
                format!("is required (this ductile speaks {PROTOCOL_VERSION})"),
            ));
        }
        Some(Value::Number(n)) if n.as_u64() == Some(u64::from(PROTOCOL_VERSION)) => {
            PROTOCOL_VERSION
        }
        Some(Value::Number(n)) => {
            return Err(r.err(
                "protocol",
                format!("unsupported protocol {n} (this ductile speaks {PROTOCOL_VERSION})"),
            ));
        }
        Some(v) => return Err(r.err("protocol", format!("must be an integer, got {}", show(&v)))),
    };
    let container = match &m.container {
        None => None,
        Some(v) => Some(
            crate::plugin::container::spec::parse(v).map_err(|(field, msg)| {
                let field = if field.is_empty() {
                    "container".to_string()
                } else {
                    format!("container.{field}")
                };
                r.err(&field, msg)
            })?,
        ),
    };
    // A container plugin's program lives in its image: no entrypoint file.
    let entrypoint = match (&container, m.entrypoint) {
        (Some(_), None) => String::new(),
        (_, v) => r.required_string(v, "entrypoint")?,
    };
    let ep = Path::new(&entrypoint);
    if ep.is_absolute() {
        return Err(r.err(
            "entrypoint",
            format!("must be relative to the plugin directory, got `{entrypoint}`"),
        ));
    }
    if ep.components().any(|c| c == Component::ParentDir) {
        return Err(r.err(
            "entrypoint",
            format!("must not contain `..` (path traversal), got `{entrypoint}`"),
        ));
    }
    let description = r.optional_string(m.description, "description")?;
    let concurrency_safe = r
        .optional_bool(m.concurrency_safe, "concurrency_safe")?
        .unwrap_or(true);
    let commands = r.commands(m.commands)?;
    let fact_outputs = r.fact_outputs(m.fact_outputs, &commands)?;
    let config_keys = r.config_keys(m.config_keys)?;
    let stopwatch_max_subs = r.stopwatch(m.stopwatch)?;
    Ok(Manifest {
        name,
        version,
        protocol,
        entrypoint,
        description,
        concurrency_safe,
        commands,
        fact_outputs,
        config_keys,
        stopwatch_max_subs,
        container,
    })
}

struct Rules<'a> {
    file: &'a Path,
}

impl Rules<'_> {
    fn err(&self, field: &str, message: String) -> ManifestError {
        ManifestError {
            file: self.file.to_path_buf(),
            field: field.to_string(),
            message,
        }
    }

    /// Reads mapping `m` (at `path`) into its raw struct. Only string keys can name
    /// fields; other keys are unknown keys, tolerated like the rest.
    fn raw<T: DeserializeOwned>(&self, mut m: Mapping, path: &str) -> Result<T, ManifestError> {
        m.retain(|k, _| k.is_string());
        // Every field is an optional YAML value, so this only fails on a value
        // serde_yaml cannot represent; say so rather than guess.
        serde_yaml::from_value(Value::Mapping(m)).map_err(|e| {
            self.err(
                path,
                format!("cannot be read: {}", super::one_line(&e.to_string())),
            )
        })
    }

    fn required_string(&self, v: Option<Value>, path: &str) -> Result<String, ManifestError> {
        match v {
            None => Err(self.err(path, "is required".to_string())),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
            Some(v) => Err(self.err(
                path,
                format!("must be a non-empty string, got {}", show(&v)),
            )),
        }
    }

    fn optional_string(
        &self,
        v: Option<Value>,
        path: &str,
    ) -> Result<Option<String>, ManifestError> {
        match v {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.err(path, format!("must be a string, got {}", show(&v)))),
        }
    }

    fn optional_bool(&self, v: Option<Value>, path: &str) -> Result<Option<bool>, ManifestError> {
        match v {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(v) => Err(self.err(path, format!("must be true or false, got {}", show(&v)))),
        }
    }

    fn commands(&self, v: Option<Value>) -> Result<Vec<CommandSpec>, ManifestError> {
        let mut out: Vec<CommandSpec> = Vec::new();
        // Names seen so far: a set, because a linear duplicate check made a manifest
        // with many commands cost quadratic time.
        let mut seen: HashSet<String> = HashSet::new();
        let mut push = |spec: CommandSpec, path: &str| {
            if !seen.insert(spec.name.clone()) {
                return Err(self.err(path, format!("duplicate command `{}`", spec.name)));
            }
            out.push(spec);
            Ok(())
        };
        match v {
            None => {
                return Err(self.err(
                    "commands",
                    "is required (declare at least one command)".to_string(),
                ));
            }
            // Array form: `- name: poll\n  type: read`.
            Some(Value::Sequence(items)) => {
                for (i, item) in items.into_iter().enumerate() {
                    let path = format!("commands[{i}]");
                    let Value::Mapping(m) = item else {
                        return Err(self.err(
                            &path,
                            format!(
                                "must be a mapping with `name` and `type`, got {}",
                                show(&item)
                            ),
                        ));
                    };
                    let mut c: RawCommand = self.raw(m, &path)?;
                    let name = self.required_string(c.name.take(), &format!("{path}.name"))?;
                    push(self.command_body(name, c, &path)?, &format!("{path}.name"))?;
                }
            }
            // Map form: `poll: {type: read}` (05 §5.4).
            Some(Value::Mapping(cmds)) => {
                for (k, v) in cmds {
                    let Value::String(name) = k else {
                        return Err(self.err(
                            "commands",
                            format!("command names must be strings, got {}", show(&k)),
                        ));
                    };
                    if name.trim().is_empty() {
                        return Err(
                            self.err("commands", "command names must not be empty".to_string())
                        );
                    }
                    let path = format!("commands.{name}");
                    let m = match v {
                        Value::Mapping(m) => m,
                        Value::Null => Mapping::new(),
                        other => {
                            return Err(
                                self.err(&path, format!("must be a mapping, got {}", show(&other)))
                            );
                        }
                    };
                    push(self.command_body(name, self.raw(m, &path)?, &path)?, &path)?;
                }
            }
            Some(v) => {
                return Err(self.err(
                    "commands",
                    format!("must be a list or a mapping of commands, got {}", show(&v)),
                ));
            }
        }
        if out.is_empty() {
            return Err(self.err("commands", "must declare at least one command".to_string()));
        }
        Ok(out)
    }

    fn command_body(
        &self,
        name: String,
        c: RawCommand,
        path: &str,
    ) -> Result<CommandSpec, ManifestError> {
        let kind = match c.kind {
            // Paranoid default: an undeclared side-effect class is treated as a write.
            None => CommandKind::Write,
            Some(Value::String(s)) if s == "read" => CommandKind::Read,
            Some(Value::String(s)) if s == "write" => CommandKind::Write,
            Some(v) => {
                return Err(self.err(
                    &format!("{path}.type"),
                    format!("must be `read` or `write`, got {}", show(&v)),
                ));
            }
        };
        Ok(CommandSpec {
            name,
            kind,
            description: self.optional_string(c.description, &format!("{path}.description"))?,
            idempotent: self.optional_bool(c.idempotent, &format!("{path}.idempotent"))?,
            retry_safe: self.optional_bool(c.retry_safe, &format!("{path}.retry_safe"))?,
            input_schema: self.schema(c.input_schema, &format!("{path}.input_schema"))?,
            output_schema: self.schema(c.output_schema, &format!("{path}.output_schema"))?,
            values: self.values(c.values, &format!("{path}.values"))?,
        })
    }

    fn fact_outputs(
        &self,
        v: Option<Value>,
        commands: &[CommandSpec],
    ) -> Result<Vec<FactOutput>, ManifestError> {
        let items = match v {
            None => return Ok(Vec::new()),
            Some(Value::Sequence(items)) => items,
            Some(v) => {
                return Err(self.err(
                    "fact_outputs",
                    format!("must be a list of rules, got {}", show(&v)),
                ));
            }
        };
        let declared: HashSet<&str> = commands.iter().map(|c| c.name.as_str()).collect();
        let mut ruled: HashSet<String> = HashSet::new();
        let mut out: Vec<FactOutput> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let path = format!("fact_outputs[{i}]");
            let Value::Mapping(m) = item else {
                return Err(self.err(&path, format!("must be a mapping, got {}", show(&item))));
            };
            let rule: RawFact = self.raw(m, &path)?;
            let when_path = format!("{path}.when.command");
            let command = match rule.when {
                None => return Err(self.err(&when_path, "is required".to_string())),
                Some(Value::Mapping(when)) => match self.raw::<RawWhen>(when, &path)?.command {
                    None => return Err(self.err(&when_path, "is required".to_string())),
                    Some(Value::String(s)) => s,
                    Some(v) => {
                        return Err(
                            self.err(&when_path, format!("must be a string, got {}", show(&v)))
                        );
                    }
                },
                Some(v) => {
                    return Err(self.err(
                        &format!("{path}.when"),
                        format!("must be a mapping with `command`, got {}", show(&v)),
                    ));
                }
            };
            if !declared.contains(command.as_str()) {
                return Err(self.err(
                    &when_path,
                    format!("names `{command}`, which is not a declared command"),
                ));
            }
            match rule.from {
                None => {
                    return Err(self.err(
                        &format!("{path}.from"),
                        "is required (must be `state_updates`)".to_string(),
                    ));
                }
                Some(Value::String(s)) if s == "state_updates" => {}
                Some(v) => {
                    return Err(self.err(
                        &format!("{path}.from"),
                        format!("must be `state_updates`, got {}", show(&v)),
                    ));
                }
            }
            let fact_type = self.required_string(rule.fact_type, &format!("{path}.fact_type"))?;
            match rule.compatibility_view {
                None => {}
                Some(Value::String(s)) if s == "mirror_object" => {}
                Some(v) => {
                    return Err(self.err(
                        &format!("{path}.compatibility_view"),
                        format!(
                            "must be `mirror_object` (the only supported view), got {}",
                            show(&v)
                        ),
                    ));
                }
            }
            if !ruled.insert(command.clone()) {
                return Err(self.err(
                    &when_path,
                    format!("a second rule for command `{command}` (at most one rule per command)"),
                ));
            }
            out.push(FactOutput { command, fact_type });
        }
        Ok(out)
    }

    fn config_keys(&self, v: Option<Value>) -> Result<ConfigKeys, ManifestError> {
        let m: RawConfigKeys = match v {
            None => return Ok(ConfigKeys::default()),
            Some(Value::Mapping(m)) => self.raw(m, "config_keys")?,
            Some(v) => {
                return Err(self.err(
                    "config_keys",
                    format!(
                        "must be a mapping with `required` and `optional`, got {}",
                        show(&v)
                    ),
                ));
            }
        };
        Ok(ConfigKeys {
            required: self.string_list(m.required, "config_keys.required")?,
            optional: self.string_list(m.optional, "config_keys.optional")?,
        })
    }

    fn string_list(&self, v: Option<Value>, path: &str) -> Result<Vec<String>, ManifestError> {
        match v {
            None => Ok(Vec::new()),
            Some(Value::Sequence(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| self.required_string(Some(v), &format!("{path}[{i}]")))
                .collect(),
            Some(v) => Err(self.err(
                path,
                format!("must be a list of key names, got {}", show(&v)),
            )),
        }
    }

    fn stopwatch(&self, v: Option<Value>) -> Result<usize, ManifestError> {
        let m: RawStopwatch = match v {
            None => return Ok(DEFAULT_MAX_SUBS),
            Some(Value::Mapping(m)) => self.raw(m, "stopwatch")?,
            Some(v) => {
                return Err(self.err(
                    "stopwatch",
                    format!("must be a mapping with `max_subs`, got {}", show(&v)),
                ));
            }
        };
        let path = "stopwatch.max_subs";
        let range = |got: String| format!("must be an integer in 1..={MAX_SUBS_LIMIT}, got {got}");
        match m.max_subs {
            None => Ok(DEFAULT_MAX_SUBS),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(0) => Ok(DEFAULT_MAX_SUBS),
                Some(v) if v <= MAX_SUBS_LIMIT as u64 => Ok(v as usize),
                Some(v) => {
                    Err(self.err(path, format!("must be at most {MAX_SUBS_LIMIT}, got {v}")))
                }
                None => Err(self.err(path, range(n.to_string()))),
            },
            Some(v) => Err(self.err(path, range(show(&v)))),
        }
    }
}

/// What a YAML value is, for messages about collections.
pub(super) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Renders a YAML value for an error message: scalars as `value`, collections by kind.
fn show(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("`{n}`"),
        Value::String(s) => format!("`{}`", s.replace(|c: char| c.is_control(), " ")),
        other => kind_of(other).to_string(),
    }
}
