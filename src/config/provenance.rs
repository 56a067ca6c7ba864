//! Key paths and where they came from: the dotted path of a key
//! (`plugins.echo.schedules[1]`), a mapping key as text, and the record of which
//! file last set each path, so a message can name the file at fault.
//!
//! The record is sparse: a key remembers its file only where it differs from
//! its parent's, so it grows with the number of merge points, not with the size
//! of the documents. Paths are spelled out only when a message needs one.
//!
//! Owns: key path spelling and the path → file record.
//! Must not: read files or judge values.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_yaml::Value;

/// A key path under construction, as a chain of borrowed segments; it is
/// rendered to text only when a message needs it.
#[derive(Debug, Clone, Copy)]
pub(super) enum KeyPath<'a> {
    /// The top of a document.
    Root,
    /// A mapping key below `parent`.
    Key(&'a KeyPath<'a>, &'a str),
    /// A list item below `parent`.
    Item(&'a KeyPath<'a>, usize),
}

impl KeyPath<'_> {
    /// The dotted spelling (`plugins.echo.schedules[0]`; empty at the root).
    pub(super) fn render(&self) -> String {
        match self {
            KeyPath::Root => String::new(),
            KeyPath::Key(parent, key) => join(&parent.render(), key),
            KeyPath::Item(parent, index) => format!("{}[{index}]", parent.render()),
        }
    }
}

/// Which file last set each key path, so messages can name it.
pub(super) struct Provenance {
    /// Files in load order (index 0 is the root).
    files: Vec<PathBuf>,
    /// Marks of the whole merged document.
    root: Mark,
}

/// The file that set one node, and the marks of those below it that were set
/// by another file. Unmarked nodes below belong to this node's file.
#[derive(Debug, Default)]
pub(super) struct Mark {
    file: usize,
    below: HashMap<Segment, Mark>,
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Key(String),
    Item(usize),
}

impl Provenance {
    /// A record over `files` (in load order, the root first) in which everything
    /// belongs to the root file.
    pub(super) fn new(files: Vec<PathBuf>) -> Provenance {
        Provenance {
            files,
            root: Mark::default(),
        }
    }

    /// The marks of the whole document.
    pub(super) fn root(&mut self) -> &mut Mark {
        &mut self.root
    }

    /// The file that set `path`, or the nearest enclosing key, or the root file.
    pub(super) fn file_of(&self, path: &str) -> PathBuf {
        let index = self.root.file_of(path, true);
        self.files.get(index).cloned().unwrap_or_default()
    }
}

impl Mark {
    /// The mark of mapping key `key` below this node.
    pub(super) fn key(&mut self, key: &str) -> &mut Mark {
        self.child(Segment::Key(key.to_string()))
    }

    /// The mark of list item `index` below this node.
    pub(super) fn item(&mut self, index: usize) -> &mut Mark {
        self.child(Segment::Item(index))
    }

    /// Records that this node and everything below it now come from `file`.
    pub(super) fn set(&mut self, file: usize) {
        self.file = file;
        self.below.clear();
    }

    fn child(&mut self, segment: Segment) -> &mut Mark {
        let file = self.file;
        self.below.entry(segment).or_insert_with(|| Mark {
            file,
            below: HashMap::new(),
        })
    }

    /// Follows `path` as far as marks go. Keys may themselves hold `.` or `[`,
    /// so at each step the longest key that the path continues from wins.
    fn file_of(&self, path: &str, top: bool) -> usize {
        let rest = if top {
            path
        } else if let Some(rest) = path.strip_prefix('.') {
            rest
        } else {
            path
        };
        if rest.is_empty() {
            return self.file;
        }
        if let Some(inner) = rest.strip_prefix('[') {
            let Some((digits, after)) = inner.split_once(']') else {
                return self.file;
            };
            return match digits
                .parse()
                .ok()
                .and_then(|i| self.below.get(&Segment::Item(i)))
            {
                Some(mark) => mark.file_of(after, false),
                None => self.file,
            };
        }
        let continues = |key: &str| {
            rest.strip_prefix(key)
                .is_some_and(|after| after.is_empty() || after.starts_with(['.', '[']))
        };
        let best = self
            .below
            .iter()
            .filter_map(|(segment, mark)| match segment {
                Segment::Key(key) if continues(key) => Some((key.len(), mark)),
                _ => None,
            })
            .max_by_key(|(len, _)| *len);
        match best {
            Some((len, mark)) => mark.file_of(&rest[len..], false),
            None => self.file,
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

    fn record() -> Provenance {
        let mut provenance = Provenance::new(vec![
            PathBuf::from("root.yaml"),
            PathBuf::from("b.yaml"),
            PathBuf::from("c.yaml"),
        ]);
        provenance.root().key("plugins").set(1);
        provenance
            .root()
            .key("plugins")
            .key("echo")
            .key("schedules")
            .item(1)
            .set(2);
        provenance.root().key("plugins").key("a.b").set(2);
        provenance
    }

    #[test]
    fn provenance_falls_back_to_the_enclosing_key() {
        let provenance = record();
        let file_of = |path| provenance.file_of(path);
        assert_eq!(
            file_of("plugins.echo.schedules[0].every"),
            Path::new("b.yaml")
        );
        assert_eq!(
            file_of("plugins.echo.schedules[1].cron"),
            Path::new("c.yaml")
        );
        assert_eq!(file_of("plugins.echo.schedules[1]"), Path::new("c.yaml"));
        assert_eq!(file_of("plugins"), Path::new("b.yaml"));
        assert_eq!(file_of("service.name"), Path::new("root.yaml"));
        assert_eq!(file_of(""), Path::new("root.yaml"));
    }

    #[test]
    fn keys_holding_dots_are_found_whole() {
        let provenance = record();
        assert_eq!(
            provenance.file_of("plugins.a.b.enabled"),
            Path::new("c.yaml")
        );
        assert_eq!(provenance.file_of("plugins.a"), Path::new("b.yaml"));
    }

    #[test]
    fn setting_a_node_resets_everything_below_it() {
        let mut provenance = record();
        provenance.root().key("plugins").set(0);
        assert_eq!(
            provenance.file_of("plugins.echo.schedules[1]"),
            Path::new("root.yaml")
        );
    }

    #[test]
    fn key_paths_render_lazily() {
        let root = KeyPath::Root;
        let plugins = KeyPath::Key(&root, "plugins");
        let item = KeyPath::Item(&plugins, 3);
        let leaf = KeyPath::Key(&item, "every");
        assert_eq!(leaf.render(), "plugins[3].every");
        assert_eq!(root.render(), "");
    }
}
