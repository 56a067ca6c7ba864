//! `with:` templating: the payload keys a `uses` step adds or overrides just
//! before its plugin is spawned, as values that may hold `{payload.x}`,
//! `{context.y}` and `{config.z}` placeholders.
//!
//! A string that is exactly one placeholder takes the JSON value it points at,
//! type and all; any other string with placeholders renders to a string. `{{`
//! and `}}` stand for literal braces.
//!
//! Owns: the placeholder syntax and how values become text.
//! Must not: read anything but the roots it is given (entries see the same
//! snapshot, never each other's output), or substitute a default for a path
//! that does not resolve.

use std::fmt;

use serde_json::{Map, Value};

use super::condition::{Path, Root, Roots, index, join, kind};

#[cfg(test)]
mod tests;

/// A `with:` value that cannot compile or render, located by its key path
/// inside the `with:` mapping (`message`, `blocks[0].text`; empty for the
/// mapping itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    /// Where in the `with:` mapping.
    pub path: String,
    /// What is wrong, one line.
    pub message: String,
}

impl TemplateError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> TemplateError {
        TemplateError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for TemplateError {}

/// A compiled `with:` mapping. Immutable.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    entries: Vec<(String, Node)>,
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    /// No placeholders: used as written (escapes already resolved).
    Literal(Value),
    /// The whole string is one placeholder: keeps the referenced JSON type.
    Reference(Path),
    /// Text mixed with placeholders: renders to a string.
    Text(Vec<Piece>),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Text(String),
    Reference(Path),
}

impl Template {
    /// Compiles a `with:` value: a mapping of payload key to any JSON value.
    pub fn compile(value: &Value) -> Result<Template, TemplateError> {
        let Value::Object(map) = value else {
            return Err(TemplateError::new(
                "",
                format!(
                    "`with` must be a mapping of payload keys to values; found {}",
                    kind(value)
                ),
            ));
        };
        let mut entries = Vec::with_capacity(map.len());
        for (key, value) in map {
            if key.is_empty() {
                return Err(TemplateError::new("", "a payload key cannot be empty"));
            }
            entries.push((key.clone(), compile_node(value, key)?));
        }
        Ok(Template { entries })
    }

    /// Compiles a relay step's `with:`, a projection (06-pipelines-dsl §3.5):
    /// a string that is nothing but a `payload.`/`context.` path takes the
    /// value at that path, as `{payload.x}` would; anything else is compiled
    /// as [`Template::compile`] does.
    pub fn compile_projection(value: &Value) -> Result<Template, TemplateError> {
        fn bare_paths(v: &Value) -> Value {
            match v {
                Value::String(s) if is_bare_path(s) => Value::String(format!("{{{s}}}")),
                Value::Array(a) => Value::Array(a.iter().map(bare_paths).collect()),
                Value::Object(m) => {
                    Value::Object(m.iter().map(|(k, v)| (k.clone(), bare_paths(v))).collect())
                }
                other => other.clone(),
            }
        }
        fn is_bare_path(s: &str) -> bool {
            (s.starts_with("payload.") || s.starts_with("context."))
                && !s.contains(|c: char| c.is_whitespace() || c == '{' || c == '}')
        }
        Template::compile(&bare_paths(value))
    }

    /// Renders every entry against one snapshot of the roots. The result holds
    /// the top-level payload keys to add or override.
    pub fn render(&self, roots: &Roots<'_>) -> Result<Map<String, Value>, TemplateError> {
        let mut out = Map::new();
        for (key, node) in &self.entries {
            out.insert(key.clone(), render_node(node, roots, key)?);
        }
        Ok(out)
    }

    /// Every path the placeholders read, in order of appearance, without repeats.
    pub fn paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (_, node) in &self.entries {
            collect_paths(node, &mut out);
        }
        out
    }
}

fn compile_node(value: &Value, at: &str) -> Result<Node, TemplateError> {
    Ok(match value {
        Value::String(text) => compile_string(text, at)?,
        Value::Array(items) => Node::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| compile_node(item, &index(at, i)))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Node::Object(
            map.iter()
                .map(|(key, item)| Ok((key.clone(), compile_node(item, &join(at, key))?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        scalar => Node::Literal(scalar.clone()),
    })
}

/// Splits a string into text and placeholders.
fn compile_string(text: &str, at: &str) -> Result<Node, TemplateError> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            '{' if chars.peek().is_some_and(|&(_, n)| n == '{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek().is_some_and(|&(_, n)| n == '}') => {
                chars.next();
                literal.push('}');
            }
            '}' => {
                return Err(TemplateError::new(
                    at,
                    format!("unmatched `}}` in {text:?}; write `}}}}` for a literal brace"),
                ));
            }
            '{' => {
                let body_start = start + 1;
                let close = text[body_start..].find(['{', '}']);
                let Some(len) = close.filter(|&len| text[body_start + len..].starts_with('}'))
                else {
                    return Err(TemplateError::new(
                        at,
                        format!(
                            "unterminated `{{` in {text:?}; close the placeholder with `}}`, or write `{{{{` for a literal brace"
                        ),
                    ));
                };
                let body = &text[body_start..body_start + len];
                let path = Path::parse(body, &Root::ALL).map_err(|m| {
                    TemplateError::new(at, format!("placeholder `{{{body}}}`: {m}"))
                })?;
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Reference(path));
                // Skip the body and the closing brace.
                while chars.next_if(|&(i, _)| i <= body_start + len).is_some() {}
            }
            other => literal.push(other),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(match pieces.as_slice() {
        [] => Node::Literal(Value::String(String::new())),
        [Piece::Text(text)] => Node::Literal(Value::String(text.clone())),
        [Piece::Reference(path)] => Node::Reference(path.clone()),
        _ => Node::Text(pieces),
    })
}

fn resolve<'v>(path: &Path, roots: &Roots<'v>, at: &str) -> Result<&'v Value, TemplateError> {
    path.resolve(roots).ok_or_else(|| {
        TemplateError::new(
            at,
            format!(
                "placeholder `{{{path}}}` does not resolve: {}",
                path.explain_miss(roots)
            ),
        )
    })
}

fn render_node(node: &Node, roots: &Roots<'_>, at: &str) -> Result<Value, TemplateError> {
    Ok(match node {
        Node::Literal(value) => value.clone(),
        Node::Reference(path) => resolve(path, roots, at)?.clone(),
        Node::Text(pieces) => {
            let mut out = String::new();
            for piece in pieces {
                match piece {
                    Piece::Text(text) => out.push_str(text),
                    Piece::Reference(path) => match resolve(path, roots, at)? {
                        // Strings go in without quotes; everything else as
                        // compact JSON (`5`, `true`, `null`, `{"a":1}`).
                        Value::String(s) => out.push_str(s),
                        other => out.push_str(&other.to_string()),
                    },
                }
            }
            Value::String(out)
        }
        Node::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| render_node(item, roots, &index(at, i)))
                .collect::<Result<_, _>>()?,
        ),
        Node::Object(entries) => Value::Object(
            entries
                .iter()
                .map(|(key, item)| Ok((key.clone(), render_node(item, roots, &join(at, key))?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
    })
}

fn collect_paths(node: &Node, out: &mut Vec<String>) {
    let mut add = |path: &Path| {
        let path = path.to_string();
        if !out.contains(&path) {
            out.push(path);
        }
    };
    match node {
        Node::Literal(_) => {}
        Node::Reference(path) => add(path),
        Node::Text(pieces) => pieces.iter().for_each(|piece| {
            if let Piece::Reference(path) = piece {
                add(path);
            }
        }),
        Node::Array(items) => items.iter().for_each(|item| collect_paths(item, out)),
        Node::Object(entries) => entries
            .iter()
            .for_each(|(_, item)| collect_paths(item, out)),
    }
}
