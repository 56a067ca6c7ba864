//! Key paths and where they came from: the dotted path of a key
//! (`plugins.echo.schedules[1]`), a mapping key as text, and the record of which
//! file last set each path, so a message can name the file at fault.
//!
//! Owns: key path spelling and the path → file record.
//! Must not: read files or judge values.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_yaml::Value;

/// Which file last set each dotted key path, so messages can name it.
pub(super) struct Provenance {
    /// Files in load order (index 0 is the root).
    files: Vec<PathBuf>,
    /// Dotted path (`plugins.echo.schedules[1]`) → index into `files`.
    by_path: HashMap<String, usize>,
}

impl Provenance {
    /// A record over `files` (in load order, the root first) with nothing marked yet.
    pub(super) fn new(files: Vec<PathBuf>) -> Provenance {
        Provenance {
            files,
            by_path: HashMap::new(),
        }
    }

    /// The file that set `path`, or the nearest enclosing key, or the root file.
    pub(super) fn file_of(&self, path: &str) -> PathBuf {
        let mut current = path;
        loop {
            if let Some(&index) = self.by_path.get(current) {
                return self.files[index].clone();
            }
            match current.rfind(['.', '[']) {
                Some(cut) => current = &current[..cut],
                None => return self.files.first().cloned().unwrap_or_default(),
            }
        }
    }

    /// Records `file` as the setter of `path` and everything below it.
    pub(super) fn mark(&mut self, path: &str, value: &Value, file: usize) {
        self.by_path.insert(path.to_string(), file);
        match value {
            Value::Mapping(mapping) => {
                for (key, item) in mapping {
                    self.mark(&join(path, &key_text(key)), item, file);
                }
            }
            Value::Sequence(items) => {
                for (index, item) in items.iter().enumerate() {
                    self.mark(&format!("{path}[{index}]"), item, file);
                }
            }
            _ => {}
        }
    }
}

/// `prefix.key`, or `key` at the top level.
pub(super) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// A mapping key as text (YAML allows numbers and booleans as keys).
pub(super) fn key_text(key: &Value) -> String {
    match key {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::Null => "null".to_string(),
        Value::Tagged(tagged) => key_text(&tagged.value),
        Value::Sequence(_) | Value::Mapping(_) => "?".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn provenance_falls_back_to_the_enclosing_key() {
        let mut provenance = Provenance {
            files: vec![PathBuf::from("root.yaml"), PathBuf::from("b.yaml")],
            by_path: HashMap::new(),
        };
        let value: Value = serde_yaml::from_str("{echo: {schedules: [{every: 5m}]}}").unwrap();
        provenance.mark("plugins", &value, 1);
        assert_eq!(
            provenance.file_of("plugins.echo.schedules[0].every"),
            Path::new("b.yaml")
        );
        assert_eq!(
            provenance.file_of("plugins.echo.schedules[0].cron"),
            Path::new("b.yaml")
        );
        assert_eq!(provenance.file_of("service.name"), Path::new("root.yaml"));
    }
}
