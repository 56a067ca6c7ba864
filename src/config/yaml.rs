//! YAML documents: parsing one file's text into a mapping with `<<` merge keys
//! applied, parser errors placed at their line and column, and values described
//! for messages.
//!
//! Owns: the parser and what a parsed document may look like at the top level.
//! Must not: read files or know the config schema.

use std::path::Path;

use serde_yaml::{Mapping, Value};

use super::{ConfigError, ErrorKind};

/// Parses one document: YAML with `<<` merge keys applied; an empty file is an
/// empty mapping.
pub(super) fn parse_document(file: &Path, text: &str) -> Result<Mapping, ConfigError> {
    let mut value: Value = serde_yaml::from_str(text).map_err(|error| yaml_error(file, &error))?;
    apply_merge_keys(&mut value)
        .map_err(|message| ConfigError::in_file(file.to_path_buf(), ErrorKind::Yaml { message }))?;
    match value {
        Value::Null => Ok(Mapping::new()),
        Value::Mapping(mapping) => Ok(mapping),
        other => Err(ConfigError::in_file(
            file.to_path_buf(),
            ErrorKind::Invalid {
                message: format!(
                    "the top level must be a mapping of keys, found {}",
                    describe(&other)
                ),
            },
        )),
    }
}

fn yaml_error(file: &Path, error: &serde_yaml::Error) -> ConfigError {
    let message = error.to_string();
    let Some(location) = error.location() else {
        return ConfigError::in_file(file.to_path_buf(), ErrorKind::Yaml { message });
    };
    // The location goes in front, in the shared format; drop serde_yaml's copy.
    let suffix = format!(" at line {} column {}", location.line(), location.column());
    let message = message.replacen(&suffix, "", 1);
    ConfigError::in_file(file.to_path_buf(), ErrorKind::Yaml { message })
        .at_line(location.line(), Some(location.column()))
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
        Value::String(text) => format!("`{text}`"),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
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
