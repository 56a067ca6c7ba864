//! `baggage:` claims: the facts a `uses` step promotes from its payload (or
//! the context it received) into the durable context stored in
//! `event_context`.
//!
//! Two shapes: a mapping of durable dotted path to source path
//! (`web.url: payload.url`), or a bulk import
//! (`from: payload.metadata` with a required `namespace: whisper`).
//!
//! Owns: the claim shapes and deep accretion with immutable inherited paths.
//! Must not: touch the store (the caller writes the returned object), or
//! skip a claim whose source is missing.

use std::fmt;

use serde_json::{Map, Value};

use super::condition::{Path, Root, Roots, kind, same};

#[cfg(test)]
mod tests;

/// Longest rendering of a value inside a message; context values can be large
/// documents and messages are one line.
const PREVIEW_CHARS: usize = 60;

/// A `baggage:` value that cannot compile, or a claim that cannot be applied,
/// located by the claim's key in the `baggage:` mapping (`web.url`, `from`;
/// empty for the mapping itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaggageError {
    /// Which claim, by its key in the `baggage:` mapping.
    pub path: String,
    /// What is wrong, one line.
    pub message: String,
}

impl BaggageError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> BaggageError {
        BaggageError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for BaggageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for BaggageError {}

/// The compiled claims of one step, applied in the order written.
#[derive(Clone, Debug, PartialEq)]
pub struct Claims {
    claims: Vec<Claim>,
}

#[derive(Clone, Debug, PartialEq)]
struct Claim {
    /// The key the author wrote (`web.url`, or `from` for a bulk import).
    name: String,
    /// Durable path written (a bulk import's namespace).
    target: Vec<String>,
    source: Path,
    /// A bulk import: the source must be an object.
    bulk: bool,
}

/// Roots a claim may read. Config is not durable state, and copying it into
/// the ledger would keep secrets in every descendant's context.
const SOURCE_ROOTS: [Root; 2] = [Root::Payload, Root::Context];

impl Claims {
    /// Compiles a step's `baggage:` value (YAML already converted to JSON).
    pub fn compile(value: &Value) -> Result<Claims, BaggageError> {
        let Value::Object(map) = value else {
            return Err(BaggageError::new(
                "",
                format!(
                    "`baggage` must be a mapping of durable paths to source paths, or `from` with `namespace`; found {}",
                    kind(value)
                ),
            ));
        };
        if map.contains_key("from") || map.contains_key("namespace") {
            return compile_bulk(map).map(|claim| Claims {
                claims: vec![claim],
            });
        }
        let claims = map
            .iter()
            .map(|(key, source)| {
                let target = parse_target(key).map_err(|m| BaggageError::new(key, m))?;
                let source = parse_source(source).map_err(|m| BaggageError::new(key, m))?;
                Ok(Claim {
                    name: key.clone(),
                    target,
                    source,
                    bulk: false,
                })
            })
            .collect::<Result<_, BaggageError>>()?;
        Ok(Claims { claims })
    }

    /// True when the step claims nothing.
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
    }

    /// The durable paths written (a bulk import's namespace), in order.
    pub fn targets(&self) -> Vec<String> {
        self.claims.iter().map(|c| c.target.join(".")).collect()
    }

    /// The source paths read, in order.
    pub fn sources(&self) -> Vec<String> {
        self.claims.iter().map(|c| c.source.to_string()).collect()
    }

    /// Applies the claims on top of `inherited` (the accumulated context
    /// object, `null` when there is none) and returns the new accumulated
    /// object; `inherited` is left as it was. Sources are read from `payload`
    /// and `context`. A missing source fails; so does changing a path that
    /// already holds a different value. Writing the same value again is allowed.
    pub fn apply(
        &self,
        inherited: &Value,
        payload: &Value,
        context: &Value,
    ) -> Result<Value, BaggageError> {
        let mut accumulated = match inherited {
            Value::Object(map) => map.clone(),
            Value::Null => Map::new(),
            other => {
                return Err(BaggageError::new(
                    "",
                    format!("the inherited context is {}, not an object", kind(other)),
                ));
            }
        };
        let config = Value::Null;
        let roots = Roots {
            payload,
            context,
            config: &config,
        };
        for claim in &self.claims {
            let value = claim.source.resolve(&roots).ok_or_else(|| {
                BaggageError::new(
                    &claim.name,
                    format!(
                        "source `{}` is missing ({}); a claim is never skipped",
                        claim.source,
                        claim.source.explain_miss(&roots)
                    ),
                )
            })?;
            if claim.bulk && !value.is_object() {
                return Err(BaggageError::new(
                    &claim.name,
                    format!(
                        "`{}` is {}; a bulk claim imports an object",
                        claim.source,
                        kind(value)
                    ),
                ));
            }
            let mut writer = Writer {
                inherited,
                claim: &claim.name,
                path: String::new(),
            };
            writer.write(&mut accumulated, &claim.target, value)?;
        }
        Ok(Value::Object(accumulated))
    }
}

fn compile_bulk(map: &Map<String, Value>) -> Result<Claim, BaggageError> {
    if let Some(key) = map.keys().find(|k| *k != "from" && *k != "namespace") {
        return Err(BaggageError::new(
            key,
            "a bulk claim has only `from` and `namespace`; claim other paths in a step of their own",
        ));
    }
    let Some(from) = map.get("from") else {
        return Err(BaggageError::new(
            "",
            "`namespace` needs `from`, the object to import",
        ));
    };
    let source = parse_source(from).map_err(|m| BaggageError::new("from", m))?;
    let namespace = match map.get("namespace") {
        None => {
            return Err(BaggageError::new(
                "",
                "a bulk claim needs `namespace`; imported keys are never placed at the root of the durable context",
            ));
        }
        Some(Value::String(ns)) => {
            parse_target(ns).map_err(|m| BaggageError::new("namespace", m))?
        }
        Some(other) => {
            return Err(BaggageError::new(
                "namespace",
                format!("`namespace` must be a string; found {}", kind(other)),
            ));
        }
    };
    Ok(Claim {
        name: "from".to_string(),
        target: namespace,
        source,
        bulk: true,
    })
}

/// A durable dotted path such as `content.text`.
fn parse_target(text: &str) -> Result<Vec<String>, String> {
    if text.is_empty() {
        return Err("a durable path cannot be empty".to_string());
    }
    let segments: Vec<String> = text.split('.').map(str::to_string).collect();
    if segments.iter().any(String::is_empty) {
        return Err(format!("durable path `{text}` has an empty segment"));
    }
    if let Some(bad) = segments
        .iter()
        .find(|s| s.contains(|c: char| c.is_whitespace() || c == '{' || c == '}'))
    {
        return Err(format!(
            "durable path `{text}`: segment `{bad}` contains a space or a brace"
        ));
    }
    Ok(segments)
}

/// A source expression: a plain path into payload or context.
fn parse_source(value: &Value) -> Result<Path, String> {
    let Value::String(text) = value else {
        return Err(format!(
            "a source is a path such as `payload.url`; found {}",
            kind(value)
        ));
    };
    // `{payload.url}` is the `with:` spelling; say so instead of "bad root".
    if let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        return Err(format!(
            "a source is a plain path, not a template; write `{inner}`"
        ));
    }
    Path::parse(text, &SOURCE_ROOTS)
}

/// Deep-accretes one claim into the accumulated object.
struct Writer<'a> {
    inherited: &'a Value,
    claim: &'a str,
    /// The durable path written so far, for messages.
    path: String,
}

impl Writer<'_> {
    fn descend(&mut self, key: &str) {
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push_str(key);
    }

    fn write(
        &mut self,
        into: &mut Map<String, Value>,
        target: &[String],
        value: &Value,
    ) -> Result<(), BaggageError> {
        let Some((key, rest)) = target.split_first() else {
            return Ok(());
        };
        self.descend(key);
        if rest.is_empty() {
            return self.merge(into, key, value);
        }
        let slot = into
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        match slot {
            Value::Object(map) => self.write(map, rest, value),
            existing => {
                let existing = existing.clone();
                Err(self.conflict(&existing, "an object"))
            }
        }
    }

    /// Puts `value` at `into[key]`: new keys are added, objects merge key by
    /// key, and an existing leaf must already hold an equal value.
    fn merge(
        &mut self,
        into: &mut Map<String, Value>,
        key: &str,
        value: &Value,
    ) -> Result<(), BaggageError> {
        let Some(existing) = into.get_mut(key) else {
            into.insert(key.to_string(), value.clone());
            return Ok(());
        };
        match (existing, value) {
            (Value::Object(have), Value::Object(add)) => {
                let base = self.path.clone();
                for (k, v) in add {
                    self.path.clone_from(&base);
                    self.descend(k);
                    self.merge(have, k, v)?;
                }
                Ok(())
            }
            (existing, value) if same(existing, value) => Ok(()),
            (existing, value) => {
                let existing = existing.clone();
                Err(self.conflict(&existing, &preview(value)))
            }
        }
    }

    /// The error for a durable path that already holds `existing` and would
    /// become `wanted`.
    fn conflict(&self, existing: &Value, wanted: &str) -> BaggageError {
        let segments: Vec<&str> = self.path.split('.').collect();
        let inherited = segments
            .iter()
            .try_fold(self.inherited, |v, s| v.as_object()?.get(*s))
            .is_some();
        let message = if inherited {
            format!(
                "inherited path `{}` is immutable: it holds {}, the claim would make it {wanted}",
                self.path,
                preview(existing)
            )
        } else {
            format!(
                "`{}` is already claimed as {} by this step; it cannot also be {wanted}",
                self.path,
                preview(existing)
            )
        };
        BaggageError::new(self.claim, message)
    }
}

/// Compact JSON of `value`, shortened to [`PREVIEW_CHARS`].
fn preview(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= PREVIEW_CHARS {
        return text;
    }
    let cut: String = text.chars().take(PREVIEW_CHARS).collect();
    format!("{cut}…")
}
