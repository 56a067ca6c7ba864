//! A command's documented contract: `input_schema` / `output_schema` (a full
//! JSON Schema object, or the compact `field: type` map expanded into one) and
//! `values` (the names-only payload contract).
//!
//! Schemas are kept as JSON values because their readers (the OpenAPI document,
//! `GET /plugin/{name}`) serve them as JSON; converting here, once, means a YAML
//! construct JSON cannot carry is a load error naming its field rather than a
//! surprise on the API.

use serde::Deserialize;
use serde_json::{Map, Value as Json, json};
use serde_yaml::{Mapping, Value};

use super::{Rules, show};
use crate::plugin::manifest::{COMPACT_TYPES, EmittedValues, ManifestError, Values};

/// Keys that mark a mapping as a full JSON Schema object rather than a compact
/// `field: type` map.
const FULL_SCHEMA_KEYS: [&str; 6] = ["type", "properties", "$ref", "oneOf", "anyOf", "allOf"];

/// The type names a full schema's `type` may use (JSON Schema's own list).
const JSON_TYPES: [&str; 7] = [
    "string", "integer", "number", "boolean", "object", "array", "null",
];

#[derive(Deserialize)]
struct RawValues {
    consume: Option<Value>,
    emit: Option<Value>,
}

#[derive(Deserialize)]
struct RawEmit {
    event: Option<Value>,
    values: Option<Value>,
}

impl Rules<'_> {
    /// `input_schema` / `output_schema` at `path`: None when absent or null.
    pub(super) fn schema(
        &self,
        v: Option<Value>,
        path: &str,
    ) -> Result<Option<Json>, ManifestError> {
        let m = match v {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Mapping(m)) => m,
            Some(v) => {
                return Err(self.err(
                    path,
                    format!(
                        "must be a JSON Schema object or a `field: type` mapping, got {}",
                        show(&v)
                    ),
                ));
            }
        };
        let full = m
            .keys()
            .any(|k| k.as_str().is_some_and(|k| FULL_SCHEMA_KEYS.contains(&k)));
        if full {
            self.full_schema(m, path).map(Some)
        } else {
            self.compact_schema(m, path).map(Some)
        }
    }

    /// A full JSON Schema object, converted as written. Only the top-level
    /// `type` and `properties` are checked: enough to catch a misspelt type
    /// without re-implementing a JSON Schema validator.
    fn full_schema(&self, m: Mapping, path: &str) -> Result<Json, ManifestError> {
        let schema = self.to_json(&Value::Mapping(m), path)?;
        match schema.get("type") {
            None => {}
            Some(Json::String(t)) if JSON_TYPES.contains(&t.as_str()) => {}
            Some(Json::Array(ts))
                if !ts.is_empty()
                    && ts
                        .iter()
                        .all(|t| t.as_str().is_some_and(|t| JSON_TYPES.contains(&t))) => {}
            Some(other) => {
                return Err(self.err(
                    &format!("{path}.type"),
                    format!(
                        "must be a JSON Schema type ({}) or a list of them, got {}",
                        JSON_TYPES.join(", "),
                        show_json(other)
                    ),
                ));
            }
        }
        match schema.get("properties") {
            None | Some(Json::Object(_)) => Ok(schema),
            Some(other) => Err(self.err(
                &format!("{path}.properties"),
                format!(
                    "must be a mapping of field schemas, got {}",
                    show_json(other)
                ),
            )),
        }
    }

    /// The compact form `url: string`, expanded into an object schema.
    fn compact_schema(&self, m: Mapping, path: &str) -> Result<Json, ManifestError> {
        let mut properties = Map::new();
        for (k, v) in m {
            let Value::String(field) = k else {
                return Err(self.err(
                    path,
                    format!("field names must be strings, got {}", show(&k)),
                ));
            };
            let field_path = format!("{path}.{field}");
            match v {
                Value::String(t) if COMPACT_TYPES.contains(&t.as_str()) => {
                    properties.insert(field, json!({ "type": t }));
                }
                Value::String(_) => {
                    return Err(self.err(
                        &field_path,
                        format!(
                            "unknown type {} (expected {})",
                            show(&v),
                            compact_type_list()
                        ),
                    ));
                }
                other => {
                    return Err(self.err(
                        &field_path,
                        format!(
                            "must be a type name ({}), got {}",
                            compact_type_list(),
                            show(&other)
                        ),
                    ));
                }
            }
        }
        Ok(json!({ "type": "object", "properties": properties }))
    }

    /// A YAML value as JSON; refuses what JSON cannot say (non-string keys,
    /// tags, non-finite numbers) with the path where it sits.
    fn to_json(&self, v: &Value, path: &str) -> Result<Json, ManifestError> {
        Ok(match v {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::String(s) => Json::String(s.clone()),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Json::from(i)
                } else if let Some(u) = n.as_u64() {
                    Json::from(u)
                } else {
                    match n.as_f64().and_then(serde_json::Number::from_f64) {
                        Some(f) => Json::Number(f),
                        None => {
                            return Err(self.err(path, format!("`{n}` is not a finite number")));
                        }
                    }
                }
            }
            Value::Sequence(items) => Json::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.to_json(item, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Mapping(m) => {
                let mut out = Map::new();
                for (k, item) in m {
                    let Value::String(key) = k else {
                        return Err(self.err(
                            path,
                            format!("keys must be strings in a JSON Schema, got {}", show(k)),
                        ));
                    };
                    out.insert(key.clone(), self.to_json(item, &format!("{path}.{key}"))?);
                }
                Json::Object(out)
            }
            Value::Tagged(t) => {
                return Err(self.err(path, format!("YAML tags (`{}`) have no JSON form", t.tag)));
            }
        })
    }

    /// `values` at `path`: None when absent or null.
    pub(super) fn values(
        &self,
        v: Option<Value>,
        path: &str,
    ) -> Result<Option<Values>, ManifestError> {
        let raw: RawValues = match v {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Mapping(m)) => self.raw(m, path)?,
            Some(v) => {
                return Err(self.err(
                    path,
                    format!(
                        "must be a mapping with `consume` and `emit`, got {}",
                        show(&v)
                    ),
                ));
            }
        };
        let consume = self.payload_names(raw.consume, &format!("{path}.consume"))?;
        let emit_path = format!("{path}.emit");
        let items = match raw.emit {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(items)) => items,
            Some(v) => {
                return Err(self.err(
                    &emit_path,
                    format!(
                        "must be a list of `event` + `values` entries, got {}",
                        show(&v)
                    ),
                ));
            }
        };
        let mut emit = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let item_path = format!("{emit_path}[{i}]");
            let Value::Mapping(m) = item else {
                return Err(self.err(
                    &item_path,
                    format!(
                        "must be a mapping with `event` and `values`, got {}",
                        show(&item)
                    ),
                ));
            };
            let e: RawEmit = self.raw(m, &item_path)?;
            emit.push(EmittedValues {
                event: self.required_string(e.event, &format!("{item_path}.event"))?,
                values: self.payload_names(e.values, &format!("{item_path}.values"))?,
            });
        }
        Ok(Some(Values { consume, emit }))
    }

    /// A list of payload names (`payload.url`, `payload.a.b`, `payload.*`).
    fn payload_names(&self, v: Option<Value>, path: &str) -> Result<Vec<String>, ManifestError> {
        let items = match v {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Sequence(items)) => items,
            Some(v) => {
                return Err(self.err(
                    path,
                    format!("must be a list of payload names, got {}", show(&v)),
                ));
            }
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let item_path = format!("{path}[{i}]");
                match item {
                    Value::String(s)
                        if s.strip_prefix("payload.").is_some_and(|rest| !rest.is_empty()) =>
                    {
                        Ok(s)
                    }
                    other => Err(self.err(
                        &item_path,
                        format!(
                            "must be a payload name starting with `payload.` (`payload.url`), got {}",
                            show(&other)
                        ),
                    )),
                }
            })
            .collect()
    }
}

/// `string, integer, number, boolean, object or array`, for messages.
fn compact_type_list() -> String {
    let [rest @ .., last] = COMPACT_TYPES;
    format!("{} or {last}", rest.join(", "))
}

/// Renders a JSON value for an error message, like `show` does for YAML.
fn show_json(v: &Json) -> String {
    match v {
        Json::Null => "null".to_string(),
        Json::Bool(b) => format!("`{b}`"),
        Json::Number(n) => format!("`{n}`"),
        Json::String(s) => format!("`{}`", s.replace(|c: char| c.is_control(), " ")),
        Json::Array(_) => "a list".to_string(),
        Json::Object(_) => "a mapping".to_string(),
    }
}
