//! Editing the config files in place: find which file of the `include:` tree
//! holds a key path, change only the bytes of that value (comments and
//! formatting elsewhere stay byte for byte), then write, revalidate and
//! re-seal through [`commit`].
//!
//! Owns: locating a key path in the files, and building the changes of an
//! edit. Must not: print, or write `.checksums` (integrity does).

pub mod commit;
pub mod path;
pub mod redact;
pub mod seal;
pub mod span;
pub mod text;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use path::{KeyPath, Segment};
use text::Resolved;

/// Why an edit or a look-up could not be done.
#[derive(Debug)]
pub enum EditError {
    /// The key path is malformed or names nothing.
    Path {
        /// The path as given.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The file's text cannot take the edit.
    Text {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing a file failed.
    Io {
        /// The file.
        file: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The config does not load (before or after the edit).
    Config {
        /// The loader's message.
        message: String,
    },
    /// The edited config would not load, or has new findings; nothing was changed.
    Refused {
        /// Why.
        message: String,
    },
    /// Another edit holds the config directory, or changed a file since it was read.
    Busy {
        /// What is in the way.
        message: String,
    },
    /// The edit was written but the config could not be re-sealed; it was undone.
    Seal {
        /// Why.
        message: String,
    },
}

impl EditError {
    /// Whether this is a configuration error (exit 78) rather than a failure (exit 1).
    pub fn is_config(&self) -> bool {
        matches!(self, EditError::Config { .. } | EditError::Refused { .. })
    }
}

impl fmt::Display for EditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EditError::Path { path, message } => write!(f, "`{path}`: {message}"),
            EditError::Text { file, message } => write!(f, "{}: {message}", file.display()),
            EditError::Io {
                file,
                action,
                source,
            } => write!(f, "{}: cannot {action}: {source}", file.display()),
            EditError::Config { message } => f.write_str(message),
            EditError::Refused { message } => {
                write!(f, "edit refused, nothing changed: {message}")
            }
            EditError::Seal { message } => {
                write!(f, "edit undone, nothing changed: {message}")
            }
            EditError::Busy { message } => write!(f, "nothing changed: {message}"),
        }
    }
}

/// One file of the tree, as text, with its node tree.
#[derive(Debug)]
pub struct Doc {
    /// Absolute path.
    pub path: PathBuf,
    /// The text (a leading byte order mark removed, see `bom`).
    pub text: String,
    /// Whether the file starts with a byte order mark (kept on write).
    pub bom: bool,
    /// The parsed document.
    pub root: Option<span::Node>,
}

impl Doc {
    /// Reads and parses `path`; a missing file is an empty document.
    pub fn read(path: &Path) -> Result<Doc, EditError> {
        let raw = match fs::read(path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(EditError::Io {
                    file: path.to_path_buf(),
                    action: "read",
                    source,
                });
            }
        };
        let exists = raw.is_some();
        let text = String::from_utf8(raw.unwrap_or_default()).map_err(|_| EditError::Text {
            file: path.to_path_buf(),
            message: "not UTF-8 text".to_string(),
        })?;
        let bom = text.starts_with('\u{feff}');
        let text = text.trim_start_matches('\u{feff}').to_string();
        let mut doc = Doc {
            path: path.to_path_buf(),
            text,
            bom,
            root: None,
        };
        doc.reparse()?;
        if !exists {
            doc.bom = false;
        }
        Ok(doc)
    }

    fn reparse(&mut self) -> Result<(), EditError> {
        self.root = span::parse(&self.text).map_err(|e| EditError::Text {
            file: self.path.clone(),
            message: e.message,
        })?;
        Ok(())
    }

    /// The change that replaces this file's text with `new`.
    pub fn change(&self, original: Option<&str>, new: &str) -> commit::Change {
        let with_bom = |t: &str| {
            if self.bom {
                format!("\u{feff}{t}")
            } else {
                t.to_string()
            }
        };
        commit::Change {
            path: self.path.clone(),
            before: original.map(|o| with_bom(o).into_bytes()),
            after: Some(with_bom(new).into_bytes()),
            mode: 0o644,
        }
    }

    /// Applies a text edit (`f` gets the text and the node tree), keeping the
    /// document parsed for the next edit.
    pub fn edit(
        &mut self,
        f: impl FnOnce(&str, Option<&span::Node>) -> Result<String, text::TextError>,
    ) -> Result<(), EditError> {
        let new = f(&self.text, self.root.as_ref()).map_err(|e| EditError::Text {
            file: self.path.clone(),
            message: e.0,
        })?;
        self.text = new;
        self.reparse()
    }
}

/// The files of a config tree, in load order, read for editing.
#[derive(Debug)]
pub struct Tree {
    /// The root `config.yaml`.
    pub root: PathBuf,
    /// The config directory.
    pub dir: PathBuf,
    /// Every file, in load order (the root first).
    pub docs: Vec<Doc>,
    /// Each file's text as read, to diff and to restore.
    pub original: Vec<String>,
}

impl Tree {
    /// Reads the tree rooted at `root` (the files `include:` names, whether or
    /// not the merged config validates).
    pub fn read(root: &Path) -> Result<Tree, EditError> {
        let merged =
            super::load::read(root, &super::lookup_process_env).map_err(|e| EditError::Config {
                message: e.to_string(),
            })?;
        let mut docs = Vec::new();
        for f in &merged.files {
            docs.push(Doc::read(&f.path)?);
        }
        let original = docs.iter().map(|d| d.text.clone()).collect();
        Ok(Tree {
            root: merged
                .files
                .first()
                .map_or_else(|| root.to_path_buf(), |f| f.path.clone()),
            dir: merged.dir,
            docs,
            original,
        })
    }

    /// The file index holding the node `path` names, and the path inside that
    /// file (list indexes count items across files in load order).
    pub fn find(&self, path: &KeyPath) -> Option<(usize, KeyPath)> {
        self.find_as_written(path).or_else(|| {
            // `webhooks.endpoints[...]` may be written as a plain `webhooks:` list.
            match path.0.as_slice() {
                [Segment::Key(w), Segment::Key(e), rest @ ..]
                    if w == "webhooks" && e == "endpoints" =>
                {
                    let mut plain = vec![Segment::Key(w.clone())];
                    plain.extend(rest.iter().cloned());
                    self.find_as_written(&KeyPath(plain))
                }
                _ => None,
            }
        })
    }

    fn find_as_written(&self, path: &KeyPath) -> Option<(usize, KeyPath)> {
        let mut local = path.clone();
        let indexed = path.0.iter().any(|s| matches!(s, Segment::Index(_)));
        let mut found = None;
        for (i, doc) in self.docs.iter().enumerate() {
            match text::resolve(doc.root.as_ref(), &local.0) {
                Resolved::Found { .. } => {
                    found = Some((i, local.clone()));
                    if indexed {
                        break;
                    }
                }
                Resolved::OutOfRange { at, len } => {
                    if let Segment::Index(n) = &mut local.0[at] {
                        *n -= len;
                    }
                }
                _ => {}
            }
        }
        found
    }

    /// The first file that defines the top-level key `key`, if any.
    pub fn holder_of(&self, key: &str) -> Option<usize> {
        self.docs
            .iter()
            .position(|d| d.root.as_ref().and_then(|r| r.entry(key)).is_some())
    }

    /// The changes this tree's edits amount to (files whose text changed).
    pub fn changes(&self) -> Vec<commit::Change> {
        self.docs
            .iter()
            .zip(&self.original)
            .filter(|(d, o)| d.text != **o)
            .map(|(d, o)| d.change(Some(o), &d.text))
            .collect()
    }

    /// Sets `path` to `value` in the file that holds it, or else under its
    /// longest existing prefix (the root file when nothing of it exists).
    pub fn set(&mut self, path: &KeyPath, value: &serde_yaml::Value) -> Result<usize, EditError> {
        if let Some((i, local)) = self.find(path) {
            self.docs[i].edit(|t, r| text::set(t, r, &local.0, value))?;
            return Ok(i);
        }
        let prefix = (1..path.0.len()).rev().find_map(|n| {
            self.find(&KeyPath(path.0[..n].to_vec())).map(|(i, local)| {
                let mut full = local.0;
                full.extend(path.0[n..].iter().cloned());
                (i, KeyPath(full))
            })
        });
        let (i, local) = prefix.unwrap_or((0, path.clone()));
        match self.docs[i].edit(|t, r| text::set(t, r, &local.0, value)) {
            Ok(()) => Ok(i),
            // The prefix's holder may have it in another shape (`webhooks:`
            // as a plain list): the root file takes the key as a mapping.
            Err(EditError::Text { .. }) if i != 0 => {
                self.docs[0].edit(|t, r| text::set(t, r, &path.0, value))?;
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    /// Removes the node `path` names.
    pub fn remove(&mut self, path: &KeyPath) -> Result<usize, EditError> {
        let Some((i, local)) = self.find(path) else {
            return Err(EditError::Path {
                path: path.to_string(),
                message: "no such key in the config files".to_string(),
            });
        };
        self.docs[i].edit(|t, r| text::remove(t, r, &local.0))?;
        Ok(i)
    }

    /// Appends `value` to the list at `path` in file `i`.
    pub fn push(
        &mut self,
        i: usize,
        path: &KeyPath,
        value: &serde_yaml::Value,
    ) -> Result<(), EditError> {
        self.docs[i].edit(|t, r| text::push(t, r, &path.0, value))
    }

    /// The index of the file at `path`, reading it into the tree (as a new,
    /// empty document when it does not exist) when it is not part of it yet.
    pub fn doc_for(&mut self, path: &Path) -> Result<usize, EditError> {
        if let Some(i) = self.docs.iter().position(|d| d.path == path) {
            return Ok(i);
        }
        let doc = Doc::read(path)?;
        self.original.push(doc.text.clone());
        self.docs.push(doc);
        Ok(self.docs.len() - 1)
    }

    /// Changes, where a file read by [`doc_for`](Self::doc_for) that did not
    /// exist is a new file.
    pub fn changes_with_new(&self) -> Vec<commit::Change> {
        let mut out = self.changes();
        for c in &mut out {
            if !c.path.exists() {
                c.before = None;
            }
        }
        out
    }
}

/// The merged document of the tree at `root` (interpolated, before
/// validation), as JSON.
pub fn merged(root: &Path) -> Result<serde_json::Value, EditError> {
    let merged =
        super::load::read(root, &super::lookup_process_env).map_err(|e| EditError::Config {
            message: e.to_string(),
        })?;
    serde_json::to_value(serde_yaml::Value::Mapping(merged.document)).map_err(|e| {
        EditError::Config {
            message: e.to_string(),
        }
    })
}

/// The node `path` names in a JSON document.
pub fn lookup<'a>(doc: &'a serde_json::Value, path: &KeyPath) -> Option<&'a serde_json::Value> {
    let mut v = doc;
    for s in &path.0 {
        v = match (s, v) {
            (Segment::Key(k), serde_json::Value::Object(m)) => m.get(k)?,
            (Segment::Index(n), serde_json::Value::Array(a)) => a.get(*n)?,
            (Segment::Select { key, value }, serde_json::Value::Array(a)) => a
                .iter()
                .find(|i| i.get(key).and_then(|x| x.as_str()) == Some(value.as_str()))?,
            _ => return None,
        };
    }
    Some(v)
}

/// Parses a value given on the command line as YAML (`false`, `5m`, `[a, b]`,
/// `{k: v}`); text that is not YAML is a string.
pub fn parse_value(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).unwrap_or_else(|_| serde_yaml::Value::String(text.to_string()))
}
