//! `manifest.yaml`: the plugin's contract, parsed and validated into a [`Manifest`].
//!
//! Owns: every rule of the manifest format (required fields, the protocol check,
//! entrypoint shape, commands in both array and map form, `input_schema` and
//! `output_schema` in their full and compact forms, `values`, `fact_outputs`,
//! `config_keys`, `stopwatch.max_subs`, and `container` through
//! [`crate::plugin::container::spec`]). Unknown keys are tolerated so that
//! fields a later ductile adds never break a load here.
//! Must not: touch the file system beyond the text it is given; trust checks on the
//! entrypoint file live in `discovery`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

mod rules;

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
    /// Wire protocol; always [`PROTOCOL_VERSION`](crate::plugin::protocol::PROTOCOL_VERSION) once parsed.
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
    /// The image that runs this plugin instead of a local entrypoint, if any.
    pub container: Option<crate::plugin::container::ContainerSpec>,
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
    /// JSON Schema of the request payload, if given (a compact `field: type` map
    /// is stored expanded).
    pub input_schema: Option<serde_json::Value>,
    /// JSON Schema of the response, if given (expanded like `input_schema`).
    pub output_schema: Option<serde_json::Value>,
    /// The names-only payload contract, if given.
    pub values: Option<Values>,
}

/// A command's `values`: which payload names it reads and which each event carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Values {
    /// Payload names read from the request (`payload.url`), in declaration order.
    pub consume: Vec<String>,
    /// Per emitted event type, the payload names it carries.
    pub emit: Vec<EmittedValues>,
}

/// One `values.emit` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmittedValues {
    /// The event type (`echo.poll`).
    pub event: String,
    /// Payload names the event carries.
    pub values: Vec<String>,
}

/// The JSON Schema `type` names a compact `field: type` schema map may use.
pub const COMPACT_TYPES: [&str; 6] = ["string", "integer", "number", "boolean", "object", "array"];

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

/// Deepest nesting of YAML flow collections (`[...]`, `{...}`) accepted. The YAML
/// scanner re-checks every open flow level on every token, so deep flow nesting
/// costs quadratic time long before the parser's own recursion limit refuses it.
pub const MAX_FLOW_DEPTH: usize = 64;

/// Parses and validates the manifest `text` read from `file`.
pub fn parse(file: &Path, text: &str) -> Result<Manifest, ManifestError> {
    let err = |message: String| ManifestError {
        file: file.to_path_buf(),
        field: String::new(),
        message,
    };
    if let Some(line) = flow_too_deep(text, MAX_FLOW_DEPTH) {
        return Err(err(format!(
            "the manifest nests flow collections deeper than {MAX_FLOW_DEPTH} levels (line {line})"
        )));
    }
    let invalid = |e: serde_yaml::Error| err(format!("invalid YAML: {}", one_line(&e.to_string())));
    let mut doc: Value = serde_yaml::from_str(text).map_err(invalid)?;
    doc.apply_merge().map_err(invalid)?;
    match doc {
        Value::Mapping(top) => rules::check(file, top),
        Value::Null => Err(err("the manifest is empty".to_string())),
        other => Err(err(format!(
            "the manifest must be a mapping, got {}",
            rules::kind_of(&other)
        ))),
    }
}

/// The line on which `text` opens its `max + 1`th nested flow collection, if it does.
///
/// A conservative scanner, not a YAML parser: quoted scalars and comments are
/// skipped, and outside flow context a bracket opens a collection only where a
/// value can start (a plain scalar such as `a [b]` keeps its brackets).
fn flow_too_deep(text: &str, max: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut line = 1;
    // The last significant character on this line; '\n' at the start of one.
    let mut prev = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let at_token_start = matches!(prev, '\n' | '[' | '{' | ',' | ':' | '-' | '?');
        match c {
            '\n' => {
                line += 1;
                prev = '\n';
                continue;
            }
            ' ' | '\t' | '\r' => continue,
            '#' if at_token_start || prev == ' ' => {
                while chars.peek().is_some_and(|&n| n != '\n') {
                    chars.next();
                }
                continue;
            }
            '"' | '\'' if at_token_start => {
                while let Some(q) = chars.next() {
                    match q {
                        '\n' => line += 1,
                        '\\' if c == '"' => line += usize::from(chars.next() == Some('\n')),
                        // `''` inside a single-quoted scalar is an escaped quote.
                        '\'' if c == '\'' && chars.peek() == Some(&'\'') => {
                            chars.next();
                        }
                        q if q == c => break,
                        _ => {}
                    }
                }
            }
            '[' | '{' if depth > 0 || at_token_start => {
                depth += 1;
                if depth > max {
                    return Some(line);
                }
            }
            ']' | '}' if depth > 0 => depth -= 1,
            // A bracket inside a block-context plain scalar is text.
            '[' | '{' | ']' | '}' => {
                prev = 'a';
                continue;
            }
            _ => {}
        }
        prev = c;
    }
    None
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
