//! `${VAR}` references and `.env` files.
//!
//! References are substituted into the parsed document, never into its text:
//! a value arrives as exactly its text, so `abc #def` stays whole and a value
//! holding a newline cannot add keys. Before parsing, [`mark`] swaps the braces
//! of every reference for two Unicode noncharacters (one character each, so
//! lines and columns stay put, and a reference inside `{...}` or `[...]` no
//! longer reads as flow syntax). The parser then keeps each reference inside its
//! scalar, and one that is a whole unquoted scalar arrives as a node tagged
//! [`REFERENCE_TAG`]. [`interpolate`] replaces them: inside a string, by the
//! value's text; a whole unquoted scalar may become a number, boolean or null
//! when its value reads as one, never a list or a mapping.
//!
//! Owns: the reference syntax, substitution and re-typing, and the KEY=VALUE
//! grammar of `environment_vars` files.
//! Must not: read files, consult the process environment directly (callers pass
//! a lookup, so precedence lives in one place) or set environment variables.

use std::cell::Cell;

use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Value};

use super::provenance::{KeyPath, key_text};

/// Stands in for the `{` of a reference while the text is parsed.
pub(super) const OPEN: char = '\u{fdd0}';
/// Stands in for the `}` of a reference while the text is parsed.
pub(super) const CLOSE: char = '\u{fdd1}';
/// The tag of a node that was exactly one unquoted reference; its value is the
/// variable name.
pub(super) const REFERENCE_TAG: &str = "\u{fdd0}reference";

/// The value of one variable, as a lookup sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Var {
    /// Set, with this value.
    Set(String),
    /// Not set anywhere.
    Unset,
    /// Set, but not UTF-8.
    NotUnicode,
}

/// Why a document could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    /// `${name}` is not set.
    Unset { name: String },
    /// `${name}` is set but not UTF-8.
    NotUnicode { name: String },
    /// Two keys of the mapping at `path` are the same once substituted.
    DuplicateKey { path: String, key: String },
    /// The substituted text would exceed the tree's text allowance.
    TooLarge,
}

/// Rewrites every `${NAME}` in `text` as `$`, [`OPEN`], `NAME`, [`CLOSE`].
///
/// `${` not followed by a valid name and `}` is left as written: it is not a
/// reference. The text must not already hold [`OPEN`] or [`CLOSE`].
pub(super) fn mark(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start + 1]);
        let after = &rest[start + 2..];
        match reference(after) {
            Some(name) => {
                out.push(OPEN);
                out.push_str(name);
                out.push(CLOSE);
                rest = &after[name.len() + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The variable name of `scalar` when it is exactly one marked reference.
pub(super) fn exact_reference(scalar: &str) -> Option<&str> {
    let name = scalar
        .strip_prefix('$')?
        .strip_prefix(OPEN)?
        .strip_suffix(CLOSE)?;
    is_name(name).then_some(name)
}

/// `text` with marked references written back as `${NAME}`, for messages.
pub(super) fn unmark(text: &str) -> String {
    text.replace(OPEN, "{").replace(CLOSE, "}")
}

/// Whether `text` holds a marked reference.
pub(super) fn has_reference(text: &str) -> bool {
    text.contains(OPEN)
}

/// The 1-based line of the first reference to `name` in marked `text`, skipping
/// lines that are comments.
pub(super) fn locate(text: &str, name: &str) -> Option<usize> {
    let needle = format!("${OPEN}{name}{CLOSE}");
    text.lines()
        .position(|line| !line.trim_start().starts_with('#') && line.contains(&needle))
        .map(|index| index + 1)
}

/// Substitutes every reference in `document` with its value from `lookup`,
/// charging the substituted text to `room` (bytes left for the tree).
pub(super) fn interpolate(
    document: Mapping,
    lookup: &dyn Fn(&str) -> Var,
    room: &Cell<u64>,
) -> Result<Mapping, Failure> {
    let walk = Walk { lookup, room };
    walk.mapping(document, &KeyPath::Root)
}

struct Walk<'a> {
    lookup: &'a dyn Fn(&str) -> Var,
    room: &'a Cell<u64>,
}

impl Walk<'_> {
    fn value(&self, value: Value, path: &KeyPath<'_>) -> Result<Value, Failure> {
        Ok(match value {
            Value::String(text) if has_reference(&text) => Value::String(self.expand(&text)?),
            Value::Tagged(tagged) if tagged.tag == Tag::new(REFERENCE_TAG) => match tagged.value {
                Value::String(name) => retype(self.variable(&name)?),
                other => other,
            },
            Value::Tagged(tagged) => {
                let TaggedValue { tag, value } = *tagged;
                let value = self.value(value, path)?;
                Value::Tagged(Box::new(TaggedValue { tag, value }))
            }
            Value::Sequence(items) => Value::Sequence(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(index, item)| self.value(item, &KeyPath::Item(path, index)))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Mapping(mapping) => Value::Mapping(self.mapping(mapping, path)?),
            other => other,
        })
    }

    fn mapping(&self, mapping: Mapping, path: &KeyPath<'_>) -> Result<Mapping, Failure> {
        let mut out = Mapping::with_capacity(mapping.len());
        for (key, value) in mapping {
            let key = self.value(key, path)?;
            let text = key_text(&key);
            let value = self.value(value, &KeyPath::Key(path, &text))?;
            if out.contains_key(&key) {
                return Err(Failure::DuplicateKey {
                    path: path.render(),
                    key: text,
                });
            }
            out.insert(key, value);
        }
        Ok(out)
    }

    /// `text` with each reference replaced by its value.
    fn expand(&self, text: &str) -> Result<String, Failure> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find(OPEN) {
            let (before, after) = rest.split_at(start);
            let after = &after[OPEN.len_utf8()..];
            let name = after.find(CLOSE).map(|end| &after[..end]);
            match name.filter(|name| before.ends_with('$') && is_name(name)) {
                Some(name) => {
                    out.push_str(&before[..before.len() - 1]);
                    out.push_str(&self.variable(name)?);
                    rest = &after[name.len() + CLOSE.len_utf8()..];
                }
                // A noncharacter that no reference put there (an escape in a
                // double-quoted scalar): kept as written.
                None => {
                    out.push_str(before);
                    out.push(OPEN);
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The value of `name`, charged to the room left.
    fn variable(&self, name: &str) -> Result<String, Failure> {
        match (self.lookup)(name) {
            Var::Set(value) => {
                let size = value.len() as u64;
                if size > self.room.get() {
                    return Err(Failure::TooLarge);
                }
                self.room.set(self.room.get() - size);
                Ok(value)
            }
            Var::Unset => Err(Failure::Unset {
                name: name.to_string(),
            }),
            Var::NotUnicode => Err(Failure::NotUnicode {
                name: name.to_string(),
            }),
        }
    }
}

/// The node an unquoted `${NAME}` becomes: a number, boolean or null when the
/// whole value reads as one in YAML, otherwise the value as a string.
fn retype(value: String) -> Value {
    // Every YAML int, float, bool and null spelling uses only these characters;
    // checking them first means nothing else in the value can be read as syntax.
    let scalar_chars = |b: u8| b.is_ascii_alphanumeric() || b"+-._~".contains(&b);
    if value.is_empty() {
        return Value::Null;
    }
    if value.bytes().all(scalar_chars) {
        if let Ok(typed @ (Value::Bool(_) | Value::Number(_) | Value::Null)) =
            serde_yaml::from_str::<Value>(&value)
        {
            return typed;
        }
    }
    Value::String(value)
}

/// The variable name at the start of `text` if it is followed by `}`.
fn reference(text: &str) -> Option<&str> {
    let end = text.find('}')?;
    let name = &text[..end];
    is_name(name).then_some(name)
}

/// Whether `name` is a valid environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
pub(super) fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A malformed line in a `.env` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DotenvError {
    /// 1-based line number.
    pub(super) line: usize,
    /// What is wrong.
    pub(super) message: String,
}

/// Parses `KEY=VALUE` lines: blank lines and `#` comments skipped, an optional
/// `export ` prefix, values optionally wrapped in matching single or double quotes.
/// An unquoted value ends at ` #` (an inline comment).
pub(super) fn parse_dotenv(text: &str) -> Result<Vec<(String, String)>, DotenvError> {
    let mut pairs = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, value)) = line.split_once('=') else {
            return Err(DotenvError {
                line: index + 1,
                message: "expected KEY=VALUE".to_string(),
            });
        };
        let key = key.trim();
        if !is_name(key) {
            return Err(DotenvError {
                line: index + 1,
                message: format!("invalid variable name `{key}`"),
            });
        }
        pairs.push((key.to_string(), unquote(value.trim())));
    }
    Ok(pairs)
}

/// Strips one pair of matching quotes, or an inline comment from an unquoted value.
fn unquote(value: &str) -> String {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return value[1..value.len() - 1].to_string();
        }
    }
    match value.find(" #") {
        Some(hash) => value[..hash].trim_end().to_string(),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Var {
        match name {
            "HOST" => Var::Set("example.org".to_string()),
            "EMPTY" => Var::Set(String::new()),
            "BYTES" => Var::NotUnicode,
            _ => Var::Unset,
        }
    }

    /// Marks `text`, parses it as the value of `a`, interpolates, and returns `a`.
    fn value_of(text: &str) -> Result<Value, Failure> {
        let marked = mark(&format!("a: {text}\n"));
        let room = Cell::new(1 << 20);
        let mapping: Mapping = serde_yaml::from_str(&marked).unwrap();
        // Plain `serde_yaml` parsing cannot tag whole references; tag them the
        // way the loader's parser does, for plain scalars only.
        let mapping = mapping
            .into_iter()
            .map(|(k, v)| match &v {
                Value::String(s)
                    if !text.starts_with(['"', '\'']) && exact_reference(s).is_some() =>
                {
                    let name = exact_reference(s).unwrap().to_string();
                    (
                        k,
                        Value::Tagged(Box::new(TaggedValue {
                            tag: Tag::new(REFERENCE_TAG),
                            value: Value::String(name),
                        })),
                    )
                }
                _ => (k, v),
            })
            .collect();
        interpolate(mapping, &env, &room).map(|m| m["a"].clone())
    }

    #[test]
    fn marks_only_references() {
        assert_eq!(mark("a: ${HOST}/x"), "a: $\u{fdd0}HOST\u{fdd1}/x");
        for text in [
            "a: $HOST",
            "a: ${not a name}",
            "a: ${1}",
            "a: ${HOST",
            "a: ${}",
        ] {
            assert_eq!(mark(text), text);
        }
        assert_eq!(mark("$${A}${B}"), "$$\u{fdd0}A\u{fdd1}$\u{fdd0}B\u{fdd1}");
        assert_eq!(unmark(&mark("x ${A} y")), "x ${A} y");
        assert_eq!(exact_reference(&mark("${A_1}")), Some("A_1"));
        assert_eq!(exact_reference(&mark("x${A}")), None);
        assert_eq!(exact_reference(&mark("${A}${B}")), None);
    }

    #[test]
    fn marking_keeps_lines_and_columns() {
        let text = "a: [${X}, {b: ${LONG_NAME}}]\n# ${Y}\n";
        let marked = mark(text);
        assert_eq!(marked.chars().count(), text.chars().count());
        assert_eq!(marked.lines().count(), text.lines().count());
    }

    #[test]
    fn substitutes_references_inside_strings() {
        assert_eq!(
            value_of("\"https://${HOST}/x\"").unwrap(),
            "https://example.org/x"
        );
        assert_eq!(
            value_of("${HOST}${HOST}").unwrap(),
            "example.orgexample.org"
        );
        assert_eq!(value_of("'${EMPTY}'").unwrap(), "");
        assert_eq!(value_of("$${HOST}").unwrap(), "$example.org");
        assert_eq!(value_of("${not a name}").unwrap(), "${not a name}");
    }

    #[test]
    fn a_whole_plain_reference_is_retyped_only_as_a_scalar() {
        assert_eq!(retype("12".to_string()), Value::Number(12.into()));
        assert_eq!(retype("true".to_string()), Value::Bool(true));
        assert_eq!(retype(String::new()), Value::Null);
        assert_eq!(retype("[1]".to_string()), Value::String("[1]".to_string()));
        assert_eq!(
            retype("a: 1".to_string()),
            Value::String("a: 1".to_string())
        );
        assert_eq!(retype("-".to_string()), Value::String("-".to_string()));
        assert_eq!(value_of("${EMPTY}").unwrap(), Value::Null);
    }

    #[test]
    fn reports_unset_and_non_unicode_variables() {
        assert_eq!(
            value_of("${NOPE}").unwrap_err(),
            Failure::Unset {
                name: "NOPE".to_string()
            }
        );
        assert_eq!(
            value_of("\"x ${BYTES}\"").unwrap_err(),
            Failure::NotUnicode {
                name: "BYTES".to_string()
            }
        );
    }

    #[test]
    fn substituted_text_is_charged_to_the_room() {
        let mapping: Mapping = serde_yaml::from_str(&mark("a: \"${HOST} ${HOST}\"")).unwrap();
        let room = Cell::new(30);
        interpolate(mapping.clone(), &env, &room).unwrap();
        assert_eq!(room.get(), 30 - 2 * 11);
        assert_eq!(interpolate(mapping, &env, &room), Err(Failure::TooLarge));
    }

    #[test]
    fn locates_the_first_reference_outside_comments() {
        let text = mark("a: 1\n# ${NOPE}\nb: ${NOPE}\nc: ${NOPE}\n");
        assert_eq!(locate(&text, "NOPE"), Some(3));
        assert_eq!(locate(&text, "OTHER"), None);
    }

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse_dotenv(text).unwrap()
    }

    fn pair(key: &str, value: &str) -> (String, String) {
        (key.to_string(), value.to_string())
    }

    #[test]
    fn parses_dotenv_forms() {
        assert_eq!(
            pairs(
                "# comment\n\nA=1\nexport B = two\nC=\"three # x\"\nD='four'\nE=five # note\nF=\nG=a=b\n"
            ),
            vec![
                pair("A", "1"),
                pair("B", "two"),
                pair("C", "three # x"),
                pair("D", "four"),
                pair("E", "five"),
                pair("F", ""),
                pair("G", "a=b"),
            ]
        );
    }

    #[test]
    fn rejects_malformed_dotenv_lines() {
        assert_eq!(
            parse_dotenv("A=1\njust words\n").unwrap_err(),
            DotenvError {
                line: 2,
                message: "expected KEY=VALUE".to_string()
            }
        );
        assert_eq!(
            parse_dotenv("1A=x\n").unwrap_err().message,
            "invalid variable name `1A`"
        );
    }

    #[test]
    fn validates_names() {
        assert!(is_name("A_1"));
        assert!(is_name("_x"));
        assert!(!is_name(""));
        assert!(!is_name("1A"));
        assert!(!is_name("A-B"));
    }
}
