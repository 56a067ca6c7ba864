//! `manifest.yaml`: the plugin's contract, parsed and validated into a [`Manifest`].
//!
//! Owns: every rule of the manifest format (required fields, the protocol check,
//! entrypoint shape, commands in both array and map form, `fact_outputs`,
//! `config_keys`, `stopwatch.max_subs`). Unknown keys are tolerated so that
//! documentation-only fields (`values`, `input_schema`, ...) never break a load.
//! Must not: touch the file system beyond the text it is given; trust checks on the
//! entrypoint file live in `discovery`.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde_yaml::{Mapping, Value};

use crate::plugin::protocol::PROTOCOL_VERSION;

/// The only `manifest_spec` this ductile understands.
pub const MANIFEST_SPEC: &str = "ductile.plugin";
/// The only `manifest_version` this ductile understands.
pub const MANIFEST_VERSION: u64 = 1;
/// Stopwatch sub-span cap used when the manifest sets none (or 0).
pub const DEFAULT_MAX_SUBS: usize = 32;
/// System-wide upper bound for `stopwatch.max_subs`.
pub const MAX_SUBS_LIMIT: usize = 256;

/// A validated plugin manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Plugin identity (unique across roots).
    pub name: String,
    /// Free-form release identity.
    pub version: String,
    /// Wire protocol; always [`PROTOCOL_VERSION`] once parsed.
    pub protocol: u32,
    /// Entrypoint path relative to the plugin directory (no `..`, not absolute).
    pub entrypoint: String,
    /// One-sentence summary, if given.
    pub description: Option<String>,
    /// Whether two runs of this plugin may overlap (default true).
    pub concurrency_safe: bool,
    /// Declared commands, in declaration order (at least one).
    pub commands: Vec<CommandSpec>,
    /// Durable fact rules, at most one per command.
    pub fact_outputs: Vec<FactOutput>,
    /// The static config contract.
    pub config_keys: ConfigKeys,
    /// Cap on stopwatch sub-spans kept per invocation (1..=256, default 32).
    pub stopwatch_max_subs: usize,
}

impl Manifest {
    /// The declared command called `name`.
    pub fn command(&self, name: &str) -> Option<&CommandSpec> {
        self.commands.iter().find(|c| c.name == name)
    }

    /// The `fact_outputs` rule for `command`, if it emits durable facts.
    pub fn fact_rule(&self, command: &str) -> Option<&FactOutput> {
        self.fact_outputs.iter().find(|f| f.command == command)
    }
}

/// One declared command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// Command name (`poll`, `handle`, `health`, `init` or plugin-specific).
    pub name: String,
    /// Side-effect class; decides the token scope needed to invoke it.
    pub kind: CommandKind,
    /// Short summary, if given.
    pub description: Option<String>,
    /// Author's idempotency hint, if given.
    pub idempotent: Option<bool>,
    /// Author's retry-safety hint, if given.
    pub retry_safe: Option<bool>,
}

/// A command's side-effect class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    /// No external side effects.
    Read,
    /// Modifies external state (the default when `type` is omitted).
    Write,
}

impl CommandKind {
    /// The manifest spelling (`read` / `write`).
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Read => "read",
            CommandKind::Write => "write",
        }
    }
}

/// A `fact_outputs` rule: a successful `command` records its `state_updates` as `fact_type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactOutput {
    /// The command whose snapshot becomes a fact.
    pub command: String,
    /// The fact's identity, e.g. `echo.snapshot`.
    pub fact_type: String,
}

/// The `config_keys` contract.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigKeys {
    /// Keys the instance's `config` must contain.
    pub required: Vec<String>,
    /// Keys documented for operators, not enforced.
    pub optional: Vec<String>,
}

/// A manifest rule violation, naming the file and the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The manifest file.
    pub file: PathBuf,
    /// Dotted path of the offending field (`commands[1].type`), empty for whole-file problems.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.field,
                self.message
            )
        }
    }
}

impl std::error::Error for ManifestError {}

/// Parses and validates the manifest `text` read from `file`.
pub fn parse(file: &Path, text: &str) -> Result<Manifest, ManifestError> {
    let p = Parser { file };
    let mut doc: Value = serde_yaml::from_str(text)
        .map_err(|e| p.err("", format!("invalid YAML: {}", one_line(&e.to_string()))))?;
    doc.apply_merge()
        .map_err(|e| p.err("", format!("invalid YAML: {}", one_line(&e.to_string()))))?;
    let top = match &doc {
        Value::Mapping(m) => m,
        Value::Null => return Err(p.err("", "the manifest is empty".to_string())),
        other => {
            return Err(p.err(
                "",
                format!("the manifest must be a mapping, got {}", kind_of(other)),
            ));
        }
    };

    match field(top, "manifest_spec") {
        None => {
            return Err(p.err(
                "manifest_spec",
                format!("is required (must be `{MANIFEST_SPEC}`)"),
            ));
        }
        Some(Value::String(s)) if s == MANIFEST_SPEC => {}
        Some(v) => {
            return Err(p.err(
                "manifest_spec",
                format!("must be `{MANIFEST_SPEC}`, got {}", show(v)),
            ));
        }
    }
    match field(top, "manifest_version") {
        None => {
            return Err(p.err(
                "manifest_version",
                format!("is required (must be {MANIFEST_VERSION})"),
            ));
        }
        Some(Value::Number(n)) if n.as_u64() == Some(MANIFEST_VERSION) => {}
        Some(v) => {
            return Err(p.err(
                "manifest_version",
                format!("must be {MANIFEST_VERSION}, got {}", show(v)),
            ));
        }
    }

    let name = p.required_string(top, "name")?;
    if let Some(bad) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '/')
    {
        return Err(p.err(
            "name",
            format!("must not contain {bad:?}, got `{name}` (use underscores or hyphens)"),
        ));
    }
    let version = match field(top, "version") {
        None | Some(Value::Null) => return Err(p.err("version", "is required".to_string())),
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        // `version: 1.0` arrives as a number; keep it as written rather than refuse it.
        Some(Value::Number(n)) => n.to_string(),
        Some(v) => {
            return Err(p.err(
                "version",
                format!("must be a non-empty string, got {}", show(v)),
            ));
        }
    };
    let protocol = match field(top, "protocol") {
        None | Some(Value::Null) => {
            return Err(p.err(
                "protocol",
                format!("is required (this ductile speaks {PROTOCOL_VERSION})"),
            ));
        }
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v == u64::from(PROTOCOL_VERSION) => PROTOCOL_VERSION,
            Some(v) => {
                return Err(p.err(
                    "protocol",
                    format!("unsupported protocol {v} (this ductile speaks {PROTOCOL_VERSION})"),
                ));
            }
            None => {
                return Err(p.err(
                    "protocol",
                    format!("unsupported protocol {n} (this ductile speaks {PROTOCOL_VERSION})"),
                ));
            }
        },
        Some(v) => return Err(p.err("protocol", format!("must be an integer, got {}", show(v)))),
    };
    let entrypoint = p.required_string(top, "entrypoint")?;
    let ep = Path::new(&entrypoint);
    if ep.is_absolute() {
        return Err(p.err(
            "entrypoint",
            format!("must be relative to the plugin directory, got `{entrypoint}`"),
        ));
    }
    if ep.components().any(|c| c == Component::ParentDir) {
        return Err(p.err(
            "entrypoint",
            format!("must not contain `..` (path traversal), got `{entrypoint}`"),
        ));
    }
    let description = p.optional_string(top, "description", "description")?;
    let concurrency_safe = p
        .optional_bool(top, "concurrency_safe", "concurrency_safe")?
        .unwrap_or(true);
    let commands = p.commands(top)?;
    let fact_outputs = p.fact_outputs(top, &commands)?;
    let config_keys = p.config_keys(top)?;
    let stopwatch_max_subs = p.stopwatch(top)?;

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
    })
}

struct Parser<'a> {
    file: &'a Path,
}

impl Parser<'_> {
    fn err(&self, field: &str, message: String) -> ManifestError {
        ManifestError {
            file: self.file.to_path_buf(),
            field: field.to_string(),
            message,
        }
    }

    fn required_string(&self, map: &Mapping, key: &str) -> Result<String, ManifestError> {
        match field(map, key) {
            None | Some(Value::Null) => Err(self.err(key, "is required".to_string())),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
            Some(v) => Err(self.err(key, format!("must be a non-empty string, got {}", show(v)))),
        }
    }

    fn optional_string(
        &self,
        map: &Mapping,
        key: &str,
        path: &str,
    ) -> Result<Option<String>, ManifestError> {
        match field(map, key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.err(path, format!("must be a string, got {}", show(v)))),
        }
    }

    fn optional_bool(
        &self,
        map: &Mapping,
        key: &str,
        path: &str,
    ) -> Result<Option<bool>, ManifestError> {
        match field(map, key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(path, format!("must be true or false, got {}", show(v)))),
        }
    }

    fn commands(&self, top: &Mapping) -> Result<Vec<CommandSpec>, ManifestError> {
        let mut out: Vec<CommandSpec> = Vec::new();
        match field(top, "commands") {
            None | Some(Value::Null) => {
                return Err(self.err(
                    "commands",
                    "is required (declare at least one command)".to_string(),
                ));
            }
            // Array form: `- name: poll\n  type: read`.
            Some(Value::Sequence(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("commands[{i}]");
                    let Value::Mapping(m) = item else {
                        return Err(self.err(
                            &path,
                            format!(
                                "must be a mapping with `name` and `type`, got {}",
                                show(item)
                            ),
                        ));
                    };
                    let name = match field(m, "name") {
                        None | Some(Value::Null) => {
                            return Err(
                                self.err(&format!("{path}.name"), "is required".to_string())
                            );
                        }
                        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
                        Some(v) => {
                            return Err(self.err(
                                &format!("{path}.name"),
                                format!("must be a non-empty string, got {}", show(v)),
                            ));
                        }
                    };
                    let spec = self.command_body(name, m, &path)?;
                    push_unique(&mut out, spec).map_err(|n| {
                        self.err(&format!("{path}.name"), format!("duplicate command `{n}`"))
                    })?;
                }
            }
            // Map form: `poll: {type: read}` (05 §5.4).
            Some(Value::Mapping(cmds)) => {
                for (k, v) in cmds {
                    let Value::String(name) = k else {
                        return Err(self.err(
                            "commands",
                            format!("command names must be strings, got {}", show(k)),
                        ));
                    };
                    if name.trim().is_empty() {
                        return Err(
                            self.err("commands", "command names must not be empty".to_string())
                        );
                    }
                    let path = format!("commands.{name}");
                    let empty = Mapping::new();
                    let m = match v {
                        Value::Mapping(m) => m,
                        Value::Null => &empty,
                        other => {
                            return Err(
                                self.err(&path, format!("must be a mapping, got {}", show(other)))
                            );
                        }
                    };
                    let spec = self.command_body(name.clone(), m, &path)?;
                    push_unique(&mut out, spec)
                        .map_err(|n| self.err(&path, format!("duplicate command `{n}`")))?;
                }
            }
            Some(v) => {
                return Err(self.err(
                    "commands",
                    format!("must be a list or a mapping of commands, got {}", show(v)),
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
        m: &Mapping,
        path: &str,
    ) -> Result<CommandSpec, ManifestError> {
        let kind = match field(m, "type") {
            // Paranoid default: an undeclared side-effect class is treated as a write.
            None | Some(Value::Null) => CommandKind::Write,
            Some(Value::String(s)) if s == "read" => CommandKind::Read,
            Some(Value::String(s)) if s == "write" => CommandKind::Write,
            Some(v) => {
                return Err(self.err(
                    &format!("{path}.type"),
                    format!("must be `read` or `write`, got {}", show(v)),
                ));
            }
        };
        Ok(CommandSpec {
            name,
            kind,
            description: self.optional_string(m, "description", &format!("{path}.description"))?,
            idempotent: self.optional_bool(m, "idempotent", &format!("{path}.idempotent"))?,
            retry_safe: self.optional_bool(m, "retry_safe", &format!("{path}.retry_safe"))?,
        })
    }

    fn fact_outputs(
        &self,
        top: &Mapping,
        commands: &[CommandSpec],
    ) -> Result<Vec<FactOutput>, ManifestError> {
        let items = match field(top, "fact_outputs") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Sequence(items)) => items,
            Some(v) => {
                return Err(self.err(
                    "fact_outputs",
                    format!("must be a list of rules, got {}", show(v)),
                ));
            }
        };
        let mut out: Vec<FactOutput> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("fact_outputs[{i}]");
            let Value::Mapping(rule) = item else {
                return Err(self.err(&path, format!("must be a mapping, got {}", show(item))));
            };
            let command = match field(rule, "when") {
                None | Some(Value::Null) => {
                    return Err(
                        self.err(&format!("{path}.when.command"), "is required".to_string())
                    );
                }
                Some(Value::Mapping(when)) => match field(when, "command") {
                    None | Some(Value::Null) => {
                        return Err(
                            self.err(&format!("{path}.when.command"), "is required".to_string())
                        );
                    }
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => {
                        return Err(self.err(
                            &format!("{path}.when.command"),
                            format!("must be a string, got {}", show(v)),
                        ));
                    }
                },
                Some(v) => {
                    return Err(self.err(
                        &format!("{path}.when"),
                        format!("must be a mapping with `command`, got {}", show(v)),
                    ));
                }
            };
            if !commands.iter().any(|c| c.name == command) {
                return Err(self.err(
                    &format!("{path}.when.command"),
                    format!("names `{command}`, which is not a declared command"),
                ));
            }
            match field(rule, "from") {
                None | Some(Value::Null) => {
                    return Err(self.err(
                        &format!("{path}.from"),
                        "is required (must be `state_updates`)".to_string(),
                    ));
                }
                Some(Value::String(s)) if s == "state_updates" => {}
                Some(v) => {
                    return Err(self.err(
                        &format!("{path}.from"),
                        format!("must be `state_updates`, got {}", show(v)),
                    ));
                }
            }
            let fact_type = match field(rule, "fact_type") {
                None | Some(Value::Null) => {
                    return Err(self.err(&format!("{path}.fact_type"), "is required".to_string()));
                }
                Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
                Some(v) => {
                    return Err(self.err(
                        &format!("{path}.fact_type"),
                        format!("must be a non-empty string, got {}", show(v)),
                    ));
                }
            };
            match field(rule, "compatibility_view") {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s == "mirror_object" => {}
                Some(v) => {
                    return Err(self.err(
                        &format!("{path}.compatibility_view"),
                        format!(
                            "must be `mirror_object` (the only supported view), got {}",
                            show(v)
                        ),
                    ));
                }
            }
            if out.iter().any(|f| f.command == command) {
                return Err(self.err(
                    &format!("{path}.when.command"),
                    format!("a second rule for command `{command}` (at most one rule per command)"),
                ));
            }
            out.push(FactOutput { command, fact_type });
        }
        Ok(out)
    }

    fn config_keys(&self, top: &Mapping) -> Result<ConfigKeys, ManifestError> {
        let m = match field(top, "config_keys") {
            None | Some(Value::Null) => return Ok(ConfigKeys::default()),
            Some(Value::Mapping(m)) => m,
            Some(v) => {
                return Err(self.err(
                    "config_keys",
                    format!(
                        "must be a mapping with `required` and `optional`, got {}",
                        show(v)
                    ),
                ));
            }
        };
        Ok(ConfigKeys {
            required: self.string_list(m, "required", "config_keys.required")?,
            optional: self.string_list(m, "optional", "config_keys.optional")?,
        })
    }

    fn string_list(
        &self,
        m: &Mapping,
        key: &str,
        path: &str,
    ) -> Result<Vec<String>, ManifestError> {
        match field(m, key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
                    other => Err(self.err(
                        &format!("{path}[{i}]"),
                        format!("must be a non-empty string, got {}", show(other)),
                    )),
                })
                .collect(),
            Some(v) => Err(self.err(
                path,
                format!("must be a list of key names, got {}", show(v)),
            )),
        }
    }

    fn stopwatch(&self, top: &Mapping) -> Result<usize, ManifestError> {
        let m = match field(top, "stopwatch") {
            None | Some(Value::Null) => return Ok(DEFAULT_MAX_SUBS),
            Some(Value::Mapping(m)) => m,
            Some(v) => {
                return Err(self.err(
                    "stopwatch",
                    format!("must be a mapping with `max_subs`, got {}", show(v)),
                ));
            }
        };
        match field(m, "max_subs") {
            None | Some(Value::Null) => Ok(DEFAULT_MAX_SUBS),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(0) => Ok(DEFAULT_MAX_SUBS),
                Some(v) if v <= MAX_SUBS_LIMIT as u64 => Ok(v as usize),
                Some(v) => Err(self.err(
                    "stopwatch.max_subs",
                    format!("must be at most {MAX_SUBS_LIMIT}, got {v}"),
                )),
                None => Err(self.err(
                    "stopwatch.max_subs",
                    format!("must be an integer in 1..={MAX_SUBS_LIMIT}, got {n}"),
                )),
            },
            Some(v) => Err(self.err(
                "stopwatch.max_subs",
                format!(
                    "must be an integer in 1..={MAX_SUBS_LIMIT}, got {}",
                    show(v)
                ),
            )),
        }
    }
}

fn push_unique(out: &mut Vec<CommandSpec>, spec: CommandSpec) -> Result<(), String> {
    if out.iter().any(|c| c.name == spec.name) {
        return Err(spec.name);
    }
    out.push(spec);
    Ok(())
}

fn field<'m>(m: &'m Mapping, key: &str) -> Option<&'m Value> {
    m.get(key)
}

fn kind_of(v: &Value) -> &'static str {
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

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "manifest_spec: ductile.plugin\nmanifest_version: 1\nname: demo\nversion: 0.1.0\nprotocol: 2\nentrypoint: run.sh\n";
    const CMDS: &str = "commands:\n  - name: poll\n    type: read\n  - name: handle\n";

    fn parse_text(text: &str) -> Result<Manifest, ManifestError> {
        parse(Path::new("plugins/demo/manifest.yaml"), text)
    }

    /// Parses BASE with `key` replaced (or removed when `value` is None) plus `extra`.
    fn with(key: &str, value: Option<&str>, extra: &str) -> String {
        let mut out = String::new();
        for line in BASE.lines() {
            if line.starts_with(&format!("{key}:")) {
                if let Some(v) = value {
                    out.push_str(&format!("{key}: {v}\n"));
                }
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push_str(extra);
        out
    }

    fn check_err(text: &str, expected: &str) {
        match parse_text(text) {
            Ok(m) => panic!("expected error {expected:?}, parsed {m:?}"),
            Err(e) => assert_eq!(e.to_string(), expected),
        }
    }

    fn ok(text: &str) -> Manifest {
        match parse_text(text) {
            Ok(m) => m,
            Err(e) => panic!("expected a manifest, got error: {e}"),
        }
    }

    #[test]
    fn minimal_manifest_parses_with_defaults() {
        let m = ok(&format!("{BASE}{CMDS}"));
        assert_eq!(m.name, "demo");
        assert_eq!(m.version, "0.1.0");
        assert_eq!(m.protocol, 2);
        assert_eq!(m.entrypoint, "run.sh");
        assert_eq!(m.description, None);
        assert!(m.concurrency_safe);
        assert_eq!(m.stopwatch_max_subs, 32);
        assert_eq!(m.config_keys, ConfigKeys::default());
        assert!(m.fact_outputs.is_empty());
        assert_eq!(m.commands.len(), 2);
        assert_eq!(m.command("poll").map(|c| c.kind), Some(CommandKind::Read));
        // Omitted type is the paranoid default.
        assert_eq!(
            m.command("handle").map(|c| c.kind),
            Some(CommandKind::Write)
        );
        assert!(m.command("nope").is_none());
    }

    #[test]
    fn full_manifest_with_unknown_keys_parses() {
        let text = format!(
            "{BASE}{}",
            r#"description: "Does things."
concurrency_safe: false
homepage: https://example.com
commands:
  - name: poll
    type: read
    description: Fetch.
    idempotent: true
    retry_safe: false
    input_schema: {url: string}
    values:
      consume: []
      emit:
        - event: demo.x
          values: [payload.a]
  - name: health
    type: read
fact_outputs:
  - when:
      command: poll
    from: state_updates
    fact_type: demo.snapshot
    compatibility_view: mirror_object
config_keys:
  required: [token]
  optional: [message, depth]
stopwatch:
  max_subs: 64
"#
        );
        let m = ok(&text);
        assert_eq!(m.description.as_deref(), Some("Does things."));
        assert!(!m.concurrency_safe);
        let poll = m.command("poll").cloned();
        assert_eq!(
            poll,
            Some(CommandSpec {
                name: "poll".into(),
                kind: CommandKind::Read,
                description: Some("Fetch.".into()),
                idempotent: Some(true),
                retry_safe: Some(false),
            })
        );
        assert_eq!(
            m.fact_rule("poll"),
            Some(&FactOutput {
                command: "poll".into(),
                fact_type: "demo.snapshot".into()
            })
        );
        assert_eq!(m.fact_rule("health"), None);
        assert_eq!(m.config_keys.required, vec!["token".to_string()]);
        assert_eq!(
            m.config_keys.optional,
            vec!["message".to_string(), "depth".to_string()]
        );
        assert_eq!(m.stopwatch_max_subs, 64);
    }

    #[test]
    fn map_form_commands_parse_in_order() {
        let text = format!(
            "{BASE}commands:\n  poll:\n    type: read\n    description: Fetch\n  sync:\n    type: write\n  oauth_callback:\n  health: {{type: read}}\n"
        );
        let m = ok(&text);
        let names: Vec<_> = m
            .commands
            .iter()
            .map(|c| (c.name.as_str(), c.kind))
            .collect();
        assert_eq!(
            names,
            vec![
                ("poll", CommandKind::Read),
                ("sync", CommandKind::Write),
                ("oauth_callback", CommandKind::Write),
                ("health", CommandKind::Read),
            ]
        );
    }

    #[test]
    fn yaml_merge_keys_are_applied() {
        let text = format!(
            "{BASE}x-cmd: &cmd\n  type: read\n  idempotent: true\ncommands:\n  - name: poll\n    <<: *cmd\n"
        );
        let m = ok(&text);
        assert_eq!(
            m.command("poll").map(|c| (c.kind, c.idempotent)),
            Some((CommandKind::Read, Some(true)))
        );
    }

    #[test]
    fn numeric_version_is_kept_as_written() {
        let m = ok(&format!("{}{CMDS}", with("version", Some("1.5"), "")));
        assert_eq!(m.version, "1.5");
    }

    #[test]
    fn stopwatch_zero_means_default_and_bounds_are_checked() {
        let m = ok(&format!("{BASE}{CMDS}stopwatch:\n  max_subs: 0\n"));
        assert_eq!(m.stopwatch_max_subs, 32);
        let m = ok(&format!("{BASE}{CMDS}stopwatch:\n  max_subs: 256\n"));
        assert_eq!(m.stopwatch_max_subs, 256);
        let m = ok(&format!("{BASE}{CMDS}stopwatch:\n  max_subs: 1\n"));
        assert_eq!(m.stopwatch_max_subs, 1);
        let m = ok(&format!("{BASE}{CMDS}stopwatch: {{}}\n"));
        assert_eq!(m.stopwatch_max_subs, 32);
    }

    #[test]
    fn whole_file_errors() {
        check_err("", "plugins/demo/manifest.yaml: the manifest is empty");
        check_err(
            "- a\n- b\n",
            "plugins/demo/manifest.yaml: the manifest must be a mapping, got a list",
        );
        let e = match parse_text("name: [unclosed\n") {
            Ok(m) => panic!("parsed {m:?}"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.starts_with("plugins/demo/manifest.yaml: invalid YAML: "),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn top_level_field_errors() {
        let f = "plugins/demo/manifest.yaml";
        let cases: Vec<(String, String)> = vec![
            (
                with("manifest_spec", None, CMDS),
                format!("{f}: manifest_spec: is required (must be `ductile.plugin`)"),
            ),
            (
                with("manifest_spec", Some("ductile.event"), CMDS),
                format!("{f}: manifest_spec: must be `ductile.plugin`, got `ductile.event`"),
            ),
            (
                with("manifest_version", None, CMDS),
                format!("{f}: manifest_version: is required (must be 1)"),
            ),
            (
                with("manifest_version", Some("2"), CMDS),
                format!("{f}: manifest_version: must be 1, got `2`"),
            ),
            (
                with("manifest_version", Some("\"1\""), CMDS),
                format!("{f}: manifest_version: must be 1, got `1`"),
            ),
            (with("name", None, CMDS), format!("{f}: name: is required")),
            (
                with("name", Some("\"\""), CMDS),
                format!("{f}: name: must be a non-empty string, got ``"),
            ),
            (
                with("name", Some("\"my plugin\""), CMDS),
                format!(
                    "{f}: name: must not contain ' ', got `my plugin` (use underscores or hyphens)"
                ),
            ),
            (
                with("name", Some("a/b"), CMDS),
                format!("{f}: name: must not contain '/', got `a/b` (use underscores or hyphens)"),
            ),
            (
                with("version", None, CMDS),
                format!("{f}: version: is required"),
            ),
            (
                with("version", Some("[1]"), CMDS),
                format!("{f}: version: must be a non-empty string, got a list"),
            ),
            (
                with("protocol", None, CMDS),
                format!("{f}: protocol: is required (this ductile speaks 2)"),
            ),
            (
                with("protocol", Some("3"), CMDS),
                format!("{f}: protocol: unsupported protocol 3 (this ductile speaks 2)"),
            ),
            (
                with("protocol", Some("1"), CMDS),
                format!("{f}: protocol: unsupported protocol 1 (this ductile speaks 2)"),
            ),
            (
                with("protocol", Some("two"), CMDS),
                format!("{f}: protocol: must be an integer, got `two`"),
            ),
            (
                with("entrypoint", None, CMDS),
                format!("{f}: entrypoint: is required"),
            ),
            (
                with("entrypoint", Some("/usr/bin/env"), CMDS),
                format!(
                    "{f}: entrypoint: must be relative to the plugin directory, got `/usr/bin/env`"
                ),
            ),
            (
                with("entrypoint", Some("../other/run.sh"), CMDS),
                format!(
                    "{f}: entrypoint: must not contain `..` (path traversal), got `../other/run.sh`"
                ),
            ),
            (
                with("entrypoint", Some("bin/../../x"), CMDS),
                format!(
                    "{f}: entrypoint: must not contain `..` (path traversal), got `bin/../../x`"
                ),
            ),
            (
                format!("{BASE}description: [a]\n{CMDS}"),
                format!("{f}: description: must be a string, got a list"),
            ),
            (
                format!("{BASE}concurrency_safe: maybe\n{CMDS}"),
                format!("{f}: concurrency_safe: must be true or false, got `maybe`"),
            ),
        ];
        for (text, expected) in cases {
            check_err(&text, &expected);
        }
    }

    #[test]
    fn entrypoint_with_dots_in_names_is_fine() {
        let m = ok(&format!(
            "{}{CMDS}",
            with("entrypoint", Some("./bin/..run.sh"), "")
        ));
        assert_eq!(m.entrypoint, "./bin/..run.sh");
    }

    #[test]
    fn command_errors() {
        let f = "plugins/demo/manifest.yaml";
        let cases: Vec<(String, String)> = vec![
            (
                BASE.to_string(),
                format!("{f}: commands: is required (declare at least one command)"),
            ),
            (
                format!("{BASE}commands: []\n"),
                format!("{f}: commands: must declare at least one command"),
            ),
            (
                format!("{BASE}commands: {{}}\n"),
                format!("{f}: commands: must declare at least one command"),
            ),
            (
                format!("{BASE}commands: poll\n"),
                format!("{f}: commands: must be a list or a mapping of commands, got `poll`"),
            ),
            (
                format!("{BASE}commands:\n  - poll\n"),
                format!("{f}: commands[0]: must be a mapping with `name` and `type`, got `poll`"),
            ),
            (
                format!("{BASE}commands:\n  - type: read\n"),
                format!("{f}: commands[0].name: is required"),
            ),
            (
                format!("{BASE}commands:\n  - name: 5\n"),
                format!("{f}: commands[0].name: must be a non-empty string, got `5`"),
            ),
            (
                format!("{BASE}commands:\n  - name: poll\n  - name: poll\n    type: read\n"),
                format!("{f}: commands[1].name: duplicate command `poll`"),
            ),
            (
                format!("{BASE}commands:\n  - name: poll\n    type: delete\n"),
                format!("{f}: commands[0].type: must be `read` or `write`, got `delete`"),
            ),
            (
                format!("{BASE}commands:\n  poll:\n    type: READ\n"),
                format!("{f}: commands.poll.type: must be `read` or `write`, got `READ`"),
            ),
            (
                format!("{BASE}commands:\n  poll: read\n"),
                format!("{f}: commands.poll: must be a mapping, got `read`"),
            ),
            (
                format!("{BASE}commands:\n  - name: poll\n    idempotent: yes\n"),
                format!("{f}: commands[0].idempotent: must be true or false, got `yes`"),
            ),
            (
                format!("{BASE}commands:\n  poll:\n    retry_safe: 1\n"),
                format!("{f}: commands.poll.retry_safe: must be true or false, got `1`"),
            ),
            (
                format!("{BASE}commands:\n  - name: poll\n    description: 3\n"),
                format!("{f}: commands[0].description: must be a string, got `3`"),
            ),
        ];
        for (text, expected) in cases {
            check_err(&text, &expected);
        }
    }

    #[test]
    fn fact_output_errors() {
        let f = "plugins/demo/manifest.yaml";
        let rule = |body: &str| format!("{BASE}{CMDS}fact_outputs:\n  - {body}\n");
        let cases: Vec<(String, String)> = vec![
            (
                format!("{BASE}{CMDS}fact_outputs: {{}}\n"),
                format!("{f}: fact_outputs: must be a list of rules, got a mapping"),
            ),
            (
                format!("{BASE}{CMDS}fact_outputs:\n  - poll\n"),
                format!("{f}: fact_outputs[0]: must be a mapping, got `poll`"),
            ),
            (
                rule("from: state_updates\n    fact_type: demo.snapshot"),
                format!("{f}: fact_outputs[0].when.command: is required"),
            ),
            (
                rule("when: poll\n    from: state_updates\n    fact_type: demo.snapshot"),
                format!("{f}: fact_outputs[0].when: must be a mapping with `command`, got `poll`"),
            ),
            (
                rule("when: {}\n    from: state_updates\n    fact_type: demo.snapshot"),
                format!("{f}: fact_outputs[0].when.command: is required"),
            ),
            (
                rule(
                    "when: {command: sync}\n    from: state_updates\n    fact_type: demo.snapshot",
                ),
                format!(
                    "{f}: fact_outputs[0].when.command: names `sync`, which is not a declared command"
                ),
            ),
            (
                rule("when: {command: poll}\n    fact_type: demo.snapshot"),
                format!("{f}: fact_outputs[0].from: is required (must be `state_updates`)"),
            ),
            (
                rule("when: {command: poll}\n    from: facts\n    fact_type: demo.snapshot"),
                format!("{f}: fact_outputs[0].from: must be `state_updates`, got `facts`"),
            ),
            (
                rule("when: {command: poll}\n    from: state_updates"),
                format!("{f}: fact_outputs[0].fact_type: is required"),
            ),
            (
                rule("when: {command: poll}\n    from: state_updates\n    fact_type: \"  \""),
                format!("{f}: fact_outputs[0].fact_type: must be a non-empty string, got `  `"),
            ),
            (
                rule(
                    "when: {command: poll}\n    from: state_updates\n    fact_type: demo.snapshot\n    compatibility_view: reducer",
                ),
                format!(
                    "{f}: fact_outputs[0].compatibility_view: must be `mirror_object` (the only supported view), got `reducer`"
                ),
            ),
            (
                format!(
                    "{BASE}{CMDS}fact_outputs:\n  - when: {{command: poll}}\n    from: state_updates\n    fact_type: a.snapshot\n  - when: {{command: poll}}\n    from: state_updates\n    fact_type: b.snapshot\n"
                ),
                format!(
                    "{f}: fact_outputs[1].when.command: a second rule for command `poll` (at most one rule per command)"
                ),
            ),
        ];
        for (text, expected) in cases {
            check_err(&text, &expected);
        }
    }

    #[test]
    fn two_rules_for_two_commands_are_fine() {
        let text = format!(
            "{BASE}{CMDS}fact_outputs:\n  - when: {{command: poll}}\n    from: state_updates\n    fact_type: a.snapshot\n  - when: {{command: handle}}\n    from: state_updates\n    fact_type: b.snapshot\n"
        );
        let m = ok(&text);
        assert_eq!(
            m.fact_rule("handle").map(|f| f.fact_type.as_str()),
            Some("b.snapshot")
        );
    }

    #[test]
    fn config_keys_and_stopwatch_errors() {
        let f = "plugins/demo/manifest.yaml";
        let cases: Vec<(String, String)> = vec![
            (
                format!("{BASE}{CMDS}config_keys: [a]\n"),
                format!(
                    "{f}: config_keys: must be a mapping with `required` and `optional`, got a list"
                ),
            ),
            (
                format!("{BASE}{CMDS}config_keys:\n  required: a\n"),
                format!("{f}: config_keys.required: must be a list of key names, got `a`"),
            ),
            (
                format!("{BASE}{CMDS}config_keys:\n  optional: [a, 3]\n"),
                format!("{f}: config_keys.optional[1]: must be a non-empty string, got `3`"),
            ),
            (
                format!("{BASE}{CMDS}stopwatch: 5\n"),
                format!("{f}: stopwatch: must be a mapping with `max_subs`, got `5`"),
            ),
            (
                format!("{BASE}{CMDS}stopwatch:\n  max_subs: 257\n"),
                format!("{f}: stopwatch.max_subs: must be at most 256, got 257"),
            ),
            (
                format!("{BASE}{CMDS}stopwatch:\n  max_subs: -1\n"),
                format!("{f}: stopwatch.max_subs: must be an integer in 1..=256, got -1"),
            ),
            (
                format!("{BASE}{CMDS}stopwatch:\n  max_subs: many\n"),
                format!("{f}: stopwatch.max_subs: must be an integer in 1..=256, got `many`"),
            ),
        ];
        for (text, expected) in cases {
            check_err(&text, &expected);
        }
    }
}
