//! Finding and reading the config tree: root discovery, `include:` resolution,
//! `environment_vars` files, `${VAR}` interpolation, and the merge of every file
//! into one document with a record of which file set which key. Validation
//! happens afterwards, on the merged document (see `config::load`).
//!
//! Loading is two-phase. Phase one reads each file under the file rules (its
//! raw bytes hashed before anything else touches them), marks its `${VAR}`
//! references, parses it once and follows its `include:` and
//! `environment_vars:` entries, so the file tree is static and verifiable.
//! Phase two substitutes the references of every parsed document with the
//! environment (process first, then `.env` files) and merges in load order.
//!
//! Owns: file IO for config, include order, cycle detection, merge rules.
//! Must not: interpret sections (validate does) or set process environment variables.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_yaml::value::Tag;
use serde_yaml::{Mapping, Value};

use super::error::unknown_key;
use super::interpolate::{self, Failure, Var};
use super::paths::{normalize, resolve_path};
use super::provenance::{Mark, Provenance, join, key_text};
use super::source::{self, Allowance, Text, Unreadable};
use super::yaml::{Room, TEXT_LIMIT, VALUE_LIMIT, describe, parse_document};
use super::{ConfigError, ErrorKind, Finding, LoadedFile};

/// The only file loaded implicitly.
const ROOT_NAME: &str = "config.yaml";

/// Keys of `environment_vars:`.
const ENVIRONMENT_KEYS: &[&str] = &["include"];

/// Finds the root config file (see [`super::resolve_root`]).
pub(super) fn discover(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    match explicit {
        Some(path) => find_explicit_root(path),
        None => find_first_root(&list_default_dirs()),
    }
}

/// The directories searched when none is given, in order.
fn list_default_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("DUCTILE_CONFIG_DIR").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(dir));
    }
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        dirs.push(PathBuf::from(home).join(".config").join("ductile"));
    }
    dirs.push(PathBuf::from("/etc/ductile"));
    dirs
}

fn find_explicit_root(path: &Path) -> Result<PathBuf, ConfigError> {
    let file = if path.is_dir() {
        path.join(ROOT_NAME)
    } else {
        path.to_path_buf()
    };
    if file.is_file() {
        make_absolute(&file)
    } else if file.exists() {
        Err(ConfigError::in_file(file, ErrorKind::NotRegularFile))
    } else {
        Err(ConfigError::in_file(file, ErrorKind::Missing))
    }
}

fn find_first_root(dirs: &[PathBuf]) -> Result<PathBuf, ConfigError> {
    let candidates: Vec<PathBuf> = dirs.iter().map(|dir| dir.join(ROOT_NAME)).collect();
    match candidates.iter().find(|file| file.is_file()) {
        Some(file) => make_absolute(file),
        None => Err(ConfigError::general(ErrorKind::NotFound {
            searched: candidates,
        })),
    }
}

fn make_absolute(file: &Path) -> Result<PathBuf, ConfigError> {
    std::path::absolute(file)
        .map(|path| normalize(&path))
        .map_err(|source| ConfigError::in_file(file.to_path_buf(), ErrorKind::Read { source }))
}

/// The whole tree merged into one document, not yet validated.
pub(super) struct Merged {
    /// The config directory (the root file's directory).
    pub(super) dir: PathBuf,
    /// Every file's document merged in load order, directives removed.
    pub(super) document: Mapping,
    /// Which file set each key path.
    pub(super) provenance: Provenance,
    /// Every file that contributed, in load order.
    pub(super) files: Vec<LoadedFile>,
    /// Findings about the tree itself (files included twice, unknown directives).
    pub(super) warnings: Vec<Finding>,
}

/// Reads and merges the tree rooted at `root_file`, reading variables through
/// `env` before falling back to `environment_vars` files.
pub(super) fn read(root_file: &Path, env: &dyn Fn(&str) -> Var) -> Result<Merged, ConfigError> {
    let root = fs::canonicalize(root_file).map_err(|source| {
        let kind = if source.kind() == io::ErrorKind::NotFound {
            ErrorKind::Missing
        } else {
            ErrorKind::Read { source }
        };
        ConfigError::in_file(root_file.to_path_buf(), kind)
    })?;
    let dir = root.parent().map(Path::to_path_buf).unwrap_or_default();

    let mut tree = Tree {
        dir: dir.clone(),
        files: Vec::new(),
        env_files: Vec::new(),
        warnings: Vec::new(),
        allowance: Allowance::new(),
        room: Room::new(),
    };
    tree.visit(&root, &mut vec![root.clone()])?;

    let dotenv = tree.read_env_files()?;
    let lookup = |name: &str| match env(name) {
        Var::Unset => dotenv
            .get(name)
            .map_or(Var::Unset, |value| Var::Set(value.clone())),
        found => found,
    };

    let mut provenance = Provenance::new(tree.files.iter().map(|file| file.path.clone()).collect());
    let mut document = Mapping::new();
    for (index, file) in tree.files.iter_mut().enumerate() {
        let mut interpolated = file.interpolated(&lookup, &tree.room)?;
        lift_webhook_list(&mut interpolated);
        merge_mapping(&mut document, interpolated, provenance.root(), index);
    }

    let files = tree
        .files
        .iter()
        .map(|file| LoadedFile {
            path: file.path.clone(),
            hash: file.hash.clone(),
        })
        .collect();
    Ok(Merged {
        dir,
        document,
        provenance,
        files,
        warnings: tree.warnings,
    })
}

/// One config file as read in phase one.
struct Source {
    /// Canonical path.
    path: PathBuf,
    /// `blake3:<hex>` of the raw bytes.
    hash: String,
    /// The text with references marked (see `interpolate::mark`), kept to
    /// place errors about variables on their line.
    marked: String,
    /// The parsed document, references not yet substituted; taken in phase two.
    document: Mapping,
}

/// An `environment_vars.include` entry awaiting reading.
struct EnvFile {
    declared_in: PathBuf,
    key_path: String,
    entry: String,
    path: PathBuf,
}

/// The static file tree found in phase one.
struct Tree {
    dir: PathBuf,
    files: Vec<Source>,
    env_files: Vec<EnvFile>,
    warnings: Vec<Finding>,
    /// Bytes the tree's files may still take.
    allowance: Allowance,
    /// Values and text the tree's documents may still expand to.
    room: Room,
}

impl Tree {
    /// Reads `path` and, depth-first, everything it includes. `stack` holds the
    /// chain of files including `path`, `path` last.
    fn visit(&mut self, path: &Path, stack: &mut Vec<PathBuf>) -> Result<(), ConfigError> {
        let Text { hash, text } =
            source::read(path, &mut self.allowance).map_err(|error| match error {
                Unreadable::NotFound => {
                    ConfigError::in_file(path.to_path_buf(), ErrorKind::Missing)
                }
                Unreadable::Error(error) => error,
            })?;
        if text.contains([interpolate::OPEN, interpolate::CLOSE]) {
            return Err(ConfigError::in_file(
                path.to_path_buf(),
                ErrorKind::ReservedCharacter,
            ));
        }
        let marked = interpolate::mark(&text);
        drop(text);
        let document = parse_document(path, &marked, &self.room)?;

        let base = path.parent().unwrap_or(Path::new("/"));
        let mut env_files = Vec::new();
        if let Some(env) = document.get("environment_vars").filter(|v| !v.is_null()) {
            let Value::Mapping(env) = env else {
                return Err(ConfigError::invalid(
                    path.to_path_buf(),
                    "environment_vars",
                    format!("expected a mapping, found {}", describe(env)),
                ));
            };
            for key in env.keys() {
                let key = key_text(key);
                if !ENVIRONMENT_KEYS.contains(&key.as_str()) {
                    self.warnings.push(Finding {
                        file: path.to_path_buf(),
                        path: join("environment_vars", &key),
                        message: unknown_key(&key, ENVIRONMENT_KEYS),
                    });
                }
            }
            if let Some(list) = env.get("include") {
                for (key_path, entry) in read_path_list(path, list, "environment_vars.include")? {
                    let resolved = resolve_entry(path, base, &key_path, &entry)?;
                    env_files.push(EnvFile {
                        declared_in: path.to_path_buf(),
                        key_path,
                        entry,
                        path: resolved,
                    });
                }
            }
        }
        let includes = match document.get("include") {
            Some(list) => read_path_list(path, list, "include")?,
            None => Vec::new(),
        };
        self.env_files.extend(env_files);
        self.files.push(Source {
            path: path.to_path_buf(),
            hash,
            marked,
            document,
        });

        for (key_path, entry) in includes {
            let resolved = resolve_entry(path, base, &key_path, &entry)?;
            let missing = || {
                ConfigError::at_path(
                    path.to_path_buf(),
                    &key_path,
                    ErrorKind::IncludeMissing {
                        entry: entry.clone(),
                        resolved: resolved.clone(),
                    },
                )
            };
            let metadata = fs::metadata(&resolved).map_err(|_| missing())?;
            let members = if metadata.is_dir() {
                list_yaml_files(&resolved)?
            } else {
                vec![resolved.clone()]
            };
            for member in members {
                let canonical = fs::canonicalize(&member).map_err(|_| missing())?;
                if let Some(start) = stack.iter().position(|p| *p == canonical) {
                    let mut chain: Vec<String> =
                        stack[start..].iter().map(|p| self.display(p)).collect();
                    chain.push(self.display(&canonical));
                    return Err(ConfigError::at_path(
                        path.to_path_buf(),
                        &key_path,
                        ErrorKind::IncludeCycle { chain },
                    ));
                }
                if self.files.iter().any(|f| f.path == canonical) {
                    self.warnings.push(Finding {
                        file: path.to_path_buf(),
                        path: key_path.clone(),
                        message: format!(
                            "`{}` is already included; not loading it twice",
                            self.display(&canonical)
                        ),
                    });
                    continue;
                }
                stack.push(canonical.clone());
                self.visit(&canonical, stack)?;
                stack.pop();
            }
        }
        Ok(())
    }

    /// Reads every `environment_vars` file in load order; the first definition of
    /// a name wins, as the process environment wins over all of them.
    fn read_env_files(&mut self) -> Result<HashMap<String, String>, ConfigError> {
        let mut values = HashMap::new();
        for env_file in &self.env_files {
            let text = source::read(&env_file.path, &mut self.allowance)
                .map_err(|error| match error {
                    Unreadable::NotFound => ConfigError::at_path(
                        env_file.declared_in.clone(),
                        &env_file.key_path,
                        ErrorKind::IncludeMissing {
                            entry: env_file.entry.clone(),
                            resolved: env_file.path.clone(),
                        },
                    ),
                    Unreadable::Error(error) => error,
                })?
                .text;
            let pairs = interpolate::parse_dotenv(&text).map_err(|error| {
                ConfigError::in_file(
                    env_file.path.clone(),
                    ErrorKind::Invalid {
                        message: error.message,
                    },
                )
                .at_line(error.line, None)
            })?;
            for (name, value) in pairs {
                values.entry(name).or_insert(value);
            }
        }
        Ok(values)
    }

    /// `path` relative to the config dir when inside it, for short messages.
    fn display(&self, path: &Path) -> String {
        path.strip_prefix(&self.dir)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

impl Source {
    /// Phase two: the document without loader directives and `x-` anchor
    /// holders, its references substituted.
    fn interpolated(
        &mut self,
        lookup: &dyn Fn(&str) -> Var,
        room: &Room,
    ) -> Result<Mapping, ConfigError> {
        let mut document = std::mem::take(&mut self.document);
        document.retain(|key, _| {
            let key = key_text(key);
            !(key == "include" || key == "environment_vars" || key.starts_with("x-"))
        });
        interpolate::interpolate(document, lookup, &room.text).map_err(|failure| {
            let in_file = |kind| ConfigError::in_file(self.path.clone(), kind);
            let at_reference =
                |error: ConfigError, name: &str| match interpolate::locate(&self.marked, name) {
                    Some(line) => error.at_line(line, None),
                    None => error,
                };
            match failure {
                Failure::Unset { name } => at_reference(
                    in_file(ErrorKind::UnsetVariable { name: name.clone() }),
                    &name,
                ),
                Failure::NotUnicode { name } => at_reference(
                    in_file(ErrorKind::NonUnicodeVariable { name: name.clone() }),
                    &name,
                ),
                Failure::DuplicateKey { path, key } => ConfigError::invalid(
                    self.path.clone(),
                    &path,
                    format!("two keys become `{key}` once variables are substituted"),
                ),
                Failure::TooLarge => in_file(ErrorKind::ExpandsTooFar {
                    values: VALUE_LIMIT,
                    text: TEXT_LIMIT,
                }),
            }
        })
    }
}

/// The entries of an `include:`-style list, each with its key path. A single
/// string is accepted as a one-entry list.
fn read_path_list(
    file: &Path,
    value: &Value,
    key: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    if value.is_null() {
        return Ok(Vec::new());
    }
    if let Some(entry) = path_entry(value) {
        return Ok(vec![(key.to_string(), entry)]);
    }
    let Value::Sequence(items) = value else {
        return Err(ConfigError::invalid(
            file.to_path_buf(),
            key,
            format!("expected a list of file paths, found {}", describe(value)),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let key_path = format!("{key}[{index}]");
            match path_entry(item) {
                Some(entry) => Ok((key_path, entry)),
                None => Err(ConfigError::invalid(
                    file.to_path_buf(),
                    &key_path,
                    format!("expected a file path, found {}", describe(item)),
                )),
            }
        })
        .collect()
}

/// A file path entry as written (references spelled `${NAME}` again, so they
/// can be refused by name).
fn path_entry(value: &Value) -> Option<String> {
    match value {
        Value::String(entry) => Some(interpolate::unmark(entry)),
        Value::Tagged(tagged) if tagged.tag == Tag::new(interpolate::REFERENCE_TAG) => {
            Some(format!("${{{}}}", key_text(&tagged.value)))
        }
        _ => None,
    }
}

/// Resolves one path entry against the declaring file's directory.
fn resolve_entry(
    file: &Path,
    base: &Path,
    key_path: &str,
    entry: &str,
) -> Result<PathBuf, ConfigError> {
    if entry.contains("${") {
        return Err(ConfigError::at_path(
            file.to_path_buf(),
            key_path,
            ErrorKind::InterpolatedPath {
                entry: entry.to_string(),
            },
        ));
    }
    resolve_path(base, entry)
        .map_err(|message| ConfigError::invalid(file.to_path_buf(), key_path, message))
}

/// The `*.yaml` files directly inside `dir`, in alphabetical order. Hidden files
/// are skipped, as a shell glob would.
fn list_yaml_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let read_error =
        |source: io::Error| ConfigError::in_file(dir.to_path_buf(), ErrorKind::Read { source });
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with('.') && name.ends_with(".yaml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// `webhooks: [...]` (a plain list of endpoints, as the spec's `webhooks.yaml`
/// writes it) becomes `webhooks: {endpoints: [...]}`, the shape `config.yaml`
/// uses for `webhooks.listen`. Done per file before merging, so a listener in
/// one file and endpoints in another merge whichever shape each file uses
/// (merging a list into a mapping would otherwise replace it).
fn lift_webhook_list(document: &mut Mapping) {
    let Some(section) = document.get_mut("webhooks") else {
        return;
    };
    if let Value::Sequence(_) = section {
        let endpoints = std::mem::take(section);
        let mut lifted = Mapping::new();
        lifted.insert(Value::String("endpoints".to_string()), endpoints);
        *section = Value::Mapping(lifted);
    }
}

/// Merges a later file's mapping into the accumulated one: keys merge
/// recursively, lists append, scalars are replaced (so `false` can switch off
/// an earlier `true`). `marks` records which file set what.
fn merge_mapping(into: &mut Mapping, from: Mapping, marks: &mut Mark, file: usize) {
    for (key, value) in from {
        let mark = marks.key(&key_text(&key));
        match into.get_mut(&key) {
            Some(existing) => merge_value(existing, value, mark, file),
            None => {
                mark.set(file);
                into.insert(key, value);
            }
        }
    }
}

fn merge_value(into: &mut Value, from: Value, marks: &mut Mark, file: usize) {
    match (into, from) {
        (Value::Mapping(into), Value::Mapping(from)) => merge_mapping(into, from, marks, file),
        (Value::Sequence(into), Value::Sequence(from)) => {
            for item in from {
                marks.item(into.len()).set(file);
                into.push(item);
            }
        }
        // An empty section (`plugins:` with every entry commented out) in a later
        // file must not wipe what earlier files declared.
        (Value::Mapping(_) | Value::Sequence(_), Value::Null) => {}
        (into, from) => {
            marks.set(file);
            *into = from;
        }
    }
}

#[cfg(test)]
mod tests;
