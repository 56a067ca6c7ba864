//! YAML documents: parsing one file's (reference-marked) text into a mapping
//! with `<<` merge keys applied, within bounds on nesting and on how far aliases
//! may expand it; parser errors placed at their line and column; values
//! described for messages.
//!
//! Values are built by our own visitor rather than `serde_yaml::Value`'s, for
//! two reasons: it counts every value and every byte of text as it is built
//! (aliases included, each time they are used), so a small file cannot expand
//! into gigabytes; and it sees where a scalar sat in the text, so a reference
//! that is a whole unquoted scalar can be told from a quoted one.
//!
//! Owns: the parser and what a parsed document may look like at the top level.
//! Must not: read files or know the config schema.

use std::cell::Cell;
use std::fmt;
use std::path::Path;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess};
use serde::de::{VariantAccess, Visitor};
use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Value};

use super::depth::{self, FLOW_DEPTH_LIMIT};
use super::interpolate::{self, REFERENCE_TAG};
use super::{ConfigError, ErrorKind};

/// The most values the documents of one tree may hold once aliases are expanded.
pub(super) const VALUE_LIMIT: u64 = 500_000;

/// The most text (bytes of scalars and keys, plus substituted variables) the
/// documents of one tree may hold once aliases and references are expanded.
pub(super) const TEXT_LIMIT: u64 = 16 * 1024 * 1024;

/// The deepest nesting of values the parser accepts (serde_yaml's own limit).
const NESTING_LIMIT: usize = 128;

/// What is left of one tree's allowance of values and text.
pub(super) struct Room {
    values: Cell<u64>,
    /// Bytes of text left; interpolation draws on it too.
    pub(super) text: Cell<u64>,
    /// Set when a parse stopped because the allowance ran out.
    exhausted: Cell<bool>,
}

impl Room {
    /// The allowance of one tree.
    pub(super) fn new() -> Room {
        Room {
            values: Cell::new(VALUE_LIMIT),
            text: Cell::new(TEXT_LIMIT),
            exhausted: Cell::new(false),
        }
    }
}

/// Parses one document from marked `text` (see `interpolate::mark`): YAML with
/// `<<` merge keys applied; an empty file is an empty mapping.
pub(super) fn parse_document(file: &Path, text: &str, room: &Room) -> Result<Mapping, ConfigError> {
    let in_file = |kind| ConfigError::in_file(file.to_path_buf(), kind);
    depth::check(text).map_err(|at| {
        in_file(ErrorKind::TooDeep {
            what: "flow collections (`[...]`, `{...}`)",
            limit: FLOW_DEPTH_LIMIT,
        })
        .at_line(at.line, Some(at.column))
    })?;
    let deserializer = serde_yaml::Deserializer::from_str(text);
    let mut value = Node { text, room }
        .deserialize(deserializer)
        .map_err(|error| {
            // serde_yaml has its own cap on alias jumps; either way the
            // document expands too far.
            if room.exhausted.get() || error.to_string().starts_with("repetition limit exceeded") {
                in_file(ErrorKind::ExpandsTooFar {
                    values: VALUE_LIMIT,
                    text: TEXT_LIMIT,
                })
            } else {
                yaml_error(file, &error)
            }
        })?;
    apply_merge_keys(&mut value).map_err(|message| in_file(ErrorKind::Yaml { message }))?;
    match value {
        Value::Null => Ok(Mapping::new()),
        Value::Mapping(mapping) => Ok(mapping),
        other => Err(in_file(ErrorKind::Invalid {
            message: format!(
                "the top level must be a mapping of keys, found {}",
                describe(&other)
            ),
        })),
    }
}

fn yaml_error(file: &Path, error: &serde_yaml::Error) -> ConfigError {
    let message = interpolate::unmark(&error.to_string());
    let Some(location) = error.location() else {
        return ConfigError::in_file(file.to_path_buf(), ErrorKind::Yaml { message });
    };
    // The location goes in front, in the shared format; drop serde_yaml's copy.
    let suffix = format!(" at line {} column {}", location.line(), location.column());
    let message = message.replacen(&suffix, "", 1);
    let kind = if message.ends_with("recursion limit exceeded") {
        ErrorKind::TooDeep {
            what: "values",
            limit: NESTING_LIMIT,
        }
    } else {
        ErrorKind::Yaml { message }
    };
    ConfigError::in_file(file.to_path_buf(), kind).at_line(location.line(), Some(location.column()))
}

/// Builds one value (and, through itself, everything below it).
#[derive(Clone, Copy)]
struct Node<'a> {
    /// The text being parsed, to see where a borrowed scalar sat.
    text: &'a str,
    room: &'a Room,
}

impl Node<'_> {
    /// Takes one value and `bytes` of text from the room.
    fn charge<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        let values = self.room.values.get();
        let text = self.room.text.get();
        let bytes = bytes as u64;
        if values == 0 || bytes > text {
            self.room.exhausted.set(true);
            return Err(E::custom("the document expands too far"));
        }
        self.room.values.set(values - 1);
        self.room.text.set(text - bytes);
        Ok(())
    }

    /// Whether `scalar`, a slice of the text, was written without quotes (and
    /// without a `!!str` tag, which asks for a string as plainly as quotes do).
    fn is_unquoted(&self, scalar: &str) -> bool {
        let start = (scalar.as_ptr() as usize).wrapping_sub(self.text.as_ptr() as usize);
        let Some(before) = self.text.get(..start) else {
            return false;
        };
        let tag = before.trim_end_matches([' ', '\t']);
        !(before.ends_with(['\'', '"'])
            || tag.ends_with("!!str")
            || tag.ends_with("!<tag:yaml.org,2002:str>"))
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, flag: bool) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Bool(flag))
    }

    fn visit_i64<E: de::Error>(self, number: i64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Number(number.into()))
    }

    fn visit_u64<E: de::Error>(self, number: u64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Number(number.into()))
    }

    /// An integer beyond 64 bits: kept as the nearest float, as JSON would,
    /// rather than refusing the whole file.
    fn visit_i128<E: de::Error>(self, number: i128) -> Result<Value, E> {
        self.visit_f64(number as f64)
    }

    fn visit_u128<E: de::Error>(self, number: u128) -> Result<Value, E> {
        self.visit_f64(number as f64)
    }

    fn visit_f64<E: de::Error>(self, number: f64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Number(number.into()))
    }

    /// A scalar the parser could lend from the text: plain or quoted, one line,
    /// no escapes. Only such a scalar can be a whole unquoted reference.
    fn visit_borrowed_str<E: de::Error>(self, scalar: &'de str) -> Result<Value, E> {
        self.charge(scalar.len())?;
        match interpolate::exact_reference(scalar) {
            Some(name) if self.is_unquoted(scalar) => Ok(Value::Tagged(Box::new(TaggedValue {
                tag: Tag::new(REFERENCE_TAG),
                value: Value::String(name.to_string()),
            }))),
            _ => Ok(Value::String(scalar.to_string())),
        }
    }

    fn visit_str<E: de::Error>(self, scalar: &str) -> Result<Value, E> {
        self.charge(scalar.len())?;
        Ok(Value::String(scalar.to_string()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let mut mapping = Mapping::new();
        while let Some(key) = map.next_key_seed(self)? {
            if mapping.contains_key(&key) {
                return Err(de::Error::custom(duplicate_key(&key)));
            }
            let value = map.next_value_seed(self)?;
            mapping.insert(key, value);
        }
        Ok(Value::Mapping(mapping))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let (tag, contents) = data.variant_seed(TagName)?;
        let value = contents.newtype_variant_seed(self)?;
        Ok(Value::Tagged(Box::new(TaggedValue { tag, value })))
    }
}

/// serde_yaml's wording for a key that appears twice in one mapping.
fn duplicate_key(key: &Value) -> String {
    match key {
        Value::Null => "duplicate entry with null key".to_string(),
        Value::Bool(flag) => format!("duplicate entry with key `{flag}`"),
        Value::Number(number) => format!("duplicate entry with key {number}"),
        Value::String(text) => format!("duplicate entry with key {:?}", interpolate::unmark(text)),
        Value::Tagged(tagged) if tagged.tag == Tag::new(REFERENCE_TAG) => {
            format!(
                "duplicate entry with key \"${{{}}}\"",
                super::provenance::key_text(&tagged.value)
            )
        }
        Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => {
            "duplicate entry in YAML map".to_string()
        }
    }
}

/// Reads the tag of a tagged node.
struct TagName;

impl<'de> DeserializeSeed<'de> for TagName {
    type Value = Tag;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Tag, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for TagName {
    type Value = Tag;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a YAML tag string")
    }

    fn visit_str<E: de::Error>(self, tag: &str) -> Result<Tag, E> {
        if tag.is_empty() {
            return Err(E::custom("empty YAML tag is not allowed"));
        }
        Ok(Tag::new(tag))
    }
}

/// Applies YAML `<<` merge keys: explicit keys win, then earlier merge sources.
///
/// serde_yaml's `Value::apply_merge` does not resolve a `<<` that arrives inside
/// a merged anchor (an anchor that itself merges another), so this resolves each
/// merge source before merging it.
fn apply_merge_keys(value: &mut Value) -> Result<(), String> {
    match value {
        Value::Mapping(mapping) => {
            if let Some(mut merged) = mapping.remove("<<") {
                apply_merge_keys(&mut merged)?;
                let sources = match merged {
                    Value::Mapping(source) => vec![source],
                    Value::Sequence(items) => items
                        .into_iter()
                        .map(|item| match item {
                            Value::Mapping(source) => Ok(source),
                            other => Err(format!(
                                "`<<` list entries must be mappings, found {}",
                                describe(&other)
                            )),
                        })
                        .collect::<Result<_, _>>()?,
                    other => {
                        return Err(format!(
                            "`<<` must merge a mapping or a list of mappings, found {}",
                            describe(&other)
                        ));
                    }
                };
                for source in sources {
                    for (key, item) in source {
                        if !mapping.contains_key(&key) {
                            mapping.insert(key, item);
                        }
                    }
                }
            }
            for item in mapping.values_mut() {
                apply_merge_keys(item)?;
            }
        }
        Value::Sequence(items) => {
            for item in items {
                apply_merge_keys(item)?;
            }
        }
        Value::Tagged(tagged) => apply_merge_keys(&mut tagged.value)?,
        _ => {}
    }
    Ok(())
}

/// A value described for messages: scalars quoted as written, collections by kind.
pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".to_string(),
        Value::Bool(flag) => format!("`{flag}`"),
        Value::Number(number) => format!("`{number}`"),
        Value::String(text) => format!("`{}`", interpolate::unmark(text)),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(tagged) if tagged.tag == Tag::new(REFERENCE_TAG) => {
            format!("`${{{}}}`", super::provenance::key_text(&tagged.value))
        }
        Value::Tagged(tagged) => describe(&tagged.value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_merge_keys_resolve() {
        let mut value: Value = serde_yaml::from_str(
            "base: &base {a: 1}\nmid: &mid {<<: *base, b: 2}\ntop: {<<: [*mid, {c: 3, a: 9}], d: 4}\n",
        )
        .unwrap();
        apply_merge_keys(&mut value).unwrap();
        let expected: Value = serde_yaml::from_str(
            "base: {a: 1}\nmid: {a: 1, b: 2}\ntop: {a: 1, b: 2, c: 3, d: 4}\n",
        )
        .unwrap();
        assert_eq!(value, expected);
        let mut bad: Value = serde_yaml::from_str("a: {<<: 3}").unwrap();
        assert_eq!(
            apply_merge_keys(&mut bad).unwrap_err(),
            "`<<` must merge a mapping or a list of mappings, found `3`"
        );
    }
}
