//! Discovery and trust: which directories under the plugin roots hold plugins
//! ductile is willing to run.
//!
//! Owns: scanning roots in order (every directory, or only those named after the
//! plugins asked for), reading each `manifest.yaml` (or, without one, a Stage7
//! `manifest.json`) within bounds (a regular
//! file of at most [`MAX_MANIFEST_BYTES`]) and validating it, deciding which of
//! several same-named manifests wins, and the trust checks (entrypoint exists, is
//! a regular executable file resolving inside its plugin dir and an approved
//! root; the plugin dir is not world-writable; symlinks only when allowed).
//! Must not: look at `plugins:` config (aliases and required keys are the
//! registry's business) or run anything.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::plugin::Skipped;
use crate::plugin::container::stage7;
use crate::plugin::manifest::{self, Manifest};

mod read;
mod trust;

use read::read_manifest;
use trust::{entrypoint_like, trust};

/// The file that makes a directory a plugin candidate.
pub const MANIFEST_FILE: &str = "manifest.yaml";

/// The manifest a plugin directory is read from: its `manifest.yaml`, else a
/// Stage7 `manifest.json` (a directory with both is a ductile plugin).
pub fn manifest_path(dir: &Path) -> PathBuf {
    let yaml = dir.join(MANIFEST_FILE);
    let json = dir.join(stage7::MANIFEST_FILE);
    if !yaml.exists() && json.exists() {
        json
    } else {
        yaml
    }
}

/// Validates manifest `text` read from `path`, by the format its name says.
fn parse_manifest(path: &Path, text: &str) -> Result<Manifest, manifest::ManifestError> {
    if path.file_name().is_some_and(|n| n == stage7::MANIFEST_FILE) {
        stage7::manifest::parse(path, text)
    } else {
        manifest::parse(path, text)
    }
}

/// A plugin directory whose manifest is valid and which passed every trust check.
#[derive(Debug, Clone)]
pub struct Found {
    /// The validated manifest.
    pub manifest: Manifest,
    /// The plugin directory as found under its root.
    pub dir: PathBuf,
    /// The entrypoint, canonical and absolute.
    pub entrypoint: PathBuf,
}

/// Everything one scan learned.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Trusted plugins, in scan order (roots in order, directories by name).
    pub found: Vec<Found>,
    /// Candidates that were refused, each with one precise reason.
    pub skipped: Vec<Skipped>,
    /// Findings about things that were not refused (allowed symlinks, stray
    /// entrypoints without a manifest, unreadable roots).
    pub warnings: Vec<String>,
}

/// Largest manifest read; a bigger file is refused without being read.
pub const MAX_MANIFEST_BYTES: u64 = 256 * 1024;

/// Scans every directory under `roots` (what `plugin list` shows): each manifest
/// is read and validated, and stray entrypoints without one are reported.
pub fn scan(roots: &[PathBuf], allow_symlinks: bool) -> Scan {
    Scanner::new(roots, allow_symlinks, None).run()
}

/// Finds only the plugins called `bases` (what the configured instances run):
/// for each, the directory named after it in each root; every other manifest
/// stays unread unless some base is in none of those directories, when the roots
/// are scanned for a manifest declaring it. `aliases` (instance names that `uses:`
/// another plugin) are looked up by directory only, so an alias that shadows a
/// real plugin is still noticed.
pub fn scan_for(
    roots: &[PathBuf],
    allow_symlinks: bool,
    bases: &BTreeSet<String>,
    aliases: &BTreeSet<String>,
) -> Scan {
    let wanted = Wanted { bases, aliases };
    Scanner::new(roots, allow_symlinks, Some(wanted)).run()
}

#[derive(Clone, Copy)]
struct Wanted<'a> {
    bases: &'a BTreeSet<String>,
    aliases: &'a BTreeSet<String>,
}

impl Wanted<'_> {
    fn contains(&self, name: &str) -> bool {
        self.bases.contains(name) || self.aliases.contains(name)
    }
}

/// A directory that holds a manifest.
struct Candidate {
    root: usize,
    dir: PathBuf,
    dir_name: String,
    manifest: Result<Manifest, Skipped>,
}

struct Scanner<'a> {
    roots: &'a [PathBuf],
    allow_symlinks: bool,
    /// `None`: everything.
    wanted: Option<Wanted<'a>>,
    out: Scan,
    candidates: Vec<Candidate>,
    /// Directories already looked at (a root may be listed twice, or a named
    /// lookup may precede the listing of its root).
    seen: HashSet<PathBuf>,
}

impl<'a> Scanner<'a> {
    fn new(roots: &'a [PathBuf], allow_symlinks: bool, wanted: Option<Wanted<'a>>) -> Scanner<'a> {
        Scanner {
            roots,
            allow_symlinks,
            wanted,
            out: Scan::default(),
            candidates: Vec::new(),
            seen: HashSet::new(),
        }
    }

    fn run(mut self) -> Scan {
        match self.wanted {
            None => self.list_roots(),
            Some(w) => {
                let names: BTreeSet<&String> = w.bases.iter().chain(w.aliases).collect();
                for (root, path) in self.roots.iter().enumerate() {
                    for name in names.iter().filter(|n| is_dir_name(n)) {
                        self.consider(root, path.join(name));
                    }
                }
                // A plugin whose directory is named otherwise is found the slow way.
                let missing = w
                    .bases
                    .iter()
                    .any(|n| !self.candidates.iter().any(|c| c.dir_name == *n));
                if missing {
                    self.list_roots();
                }
            }
        }
        self.candidates
            .sort_by(|a, b| (a.root, &a.dir_name).cmp(&(b.root, &b.dir_name)));
        self.settle()
    }

    /// Adds every directory of every root (in order, by name) not already a candidate.
    fn list_roots(&mut self) {
        for (root, path) in self.roots.iter().enumerate() {
            let mut dirs: Vec<PathBuf> = match fs::read_dir(path) {
                Ok(entries) => entries
                    .flatten()
                    // `_lib` and `_template` (the author kit) sit beside the
                    // plugins without being plugins.
                    .filter(|e| {
                        let name = e.file_name();
                        let name = name.to_string_lossy();
                        !name.starts_with('.') && !name.starts_with('_')
                    })
                    .map(|e| e.path())
                    .collect(),
                Err(e) => {
                    self.out.warnings.push(format!(
                        "plugin root {} cannot be read: {e}",
                        path.display()
                    ));
                    continue;
                }
            };
            dirs.sort();
            for dir in dirs {
                self.consider(root, dir);
            }
        }
    }

    /// Reads the manifest in `dir`, if it is a plugin directory.
    fn consider(&mut self, root: usize, dir: PathBuf) {
        // Follows symlinks; whether a symlinked dir is acceptable is a trust question.
        if !self.seen.insert(dir.clone()) || !dir.is_dir() {
            return;
        }
        let manifest_path = manifest_path(&dir);
        if !manifest_path.exists() {
            if self.wanted.is_none() {
                if let Some(file) = entrypoint_like(&dir) {
                    self.out.warnings.push(format!(
                        "{} has no {MANIFEST_FILE} but holds `{file}`; it is not loaded as a plugin",
                        dir.display()
                    ));
                }
            }
            return;
        }
        let dir_name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let manifest = read_manifest(&manifest_path)
            .and_then(|text| parse_manifest(&manifest_path, &text).map_err(|e| e.to_string()))
            .map_err(|reason| Skipped {
                name: dir_name.clone(),
                path: manifest_path,
                reason,
            });
        self.candidates.push(Candidate {
            root,
            dir,
            dir_name,
            manifest,
        });
    }

    /// Decides, in scan order, which candidate each name belongs to, and trusts it.
    ///
    /// Precedence for a name: a directory named after it (roots in order) before
    /// any other; among the others, the first in scan order. The first manifest to
    /// declare a name claims it, trusted or not, so a refused plugin is never
    /// silently replaced by a same-named one further down.
    fn settle(mut self) -> Scan {
        let approved: Vec<PathBuf> = self
            .roots
            .iter()
            .filter_map(|r| fs::canonicalize(r).ok())
            .collect();
        let mut winners: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, c) in self.candidates.iter().enumerate() {
            let Ok(m) = &c.manifest else { continue };
            let rank = |c: &Candidate| c.dir_name != m.name;
            match winners.get(m.name.as_str()) {
                Some(&w) if rank(&self.candidates[w]) <= rank(c) => {}
                _ => {
                    winners.insert(&m.name, i);
                }
            }
        }
        let winners: BTreeMap<String, usize> = winners
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let candidates = std::mem::take(&mut self.candidates);
        for (i, c) in candidates.iter().enumerate() {
            let m = match &c.manifest {
                Ok(m) => m,
                Err(skipped) => {
                    self.out.skipped.push(skipped.clone());
                    continue;
                }
            };
            if self.wanted.is_some_and(|w| !w.contains(&m.name)) {
                continue;
            }
            let w = winners.get(&m.name).copied().unwrap_or(i);
            if w != i {
                let first = &candidates[w].dir;
                let why = if w < i {
                    format!("{} declared it first", first.display())
                } else {
                    format!("{} is named after it and comes first", first.display())
                };
                self.out.skipped.push(Skipped {
                    name: m.name.clone(),
                    path: c.dir.clone(),
                    reason: format!(
                        "duplicate plugin `{}` in {} is ignored: {why}",
                        m.name,
                        c.dir.display()
                    ),
                });
                continue;
            }
            match trust(
                &c.dir,
                m,
                &approved,
                self.allow_symlinks,
                &mut self.out.warnings,
            ) {
                Ok(entrypoint) => self.out.found.push(Found {
                    manifest: m.clone(),
                    dir: c.dir.clone(),
                    entrypoint,
                }),
                Err(reason) => self.out.skipped.push(Skipped {
                    name: m.name.clone(),
                    path: c.dir.clone(),
                    reason,
                }),
            }
        }
        self.out
    }
}

/// What one plugin directory looks like to discovery, on its own.
#[derive(Debug)]
pub enum Inspected {
    /// There is no `manifest.yaml`.
    NoManifest,
    /// The manifest is not a readable regular file within bounds.
    Unreadable(String),
    /// The manifest breaks a rule.
    Invalid(manifest::ManifestError),
    /// The manifest is valid but a trust check refuses the directory.
    Untrusted(Box<Manifest>, String),
    /// Discovery would load it.
    Trusted(Box<Found>),
}

/// Reads and validates the manifest in `dir` and applies the trust checks with
/// the directory's parent as the only approved root: the verdict a scan of that
/// parent would reach for this directory, without reading its siblings.
pub fn inspect(dir: &Path, allow_symlinks: bool) -> Inspected {
    let manifest_path = manifest_path(dir);
    if !manifest_path.exists() {
        return Inspected::NoManifest;
    }
    let text = match read_manifest(&manifest_path) {
        Ok(text) => text,
        Err(reason) => return Inspected::Unreadable(reason),
    };
    let manifest = match parse_manifest(&manifest_path, &text) {
        Ok(m) => m,
        Err(e) => return Inspected::Invalid(e),
    };
    let approved: Vec<PathBuf> = dir
        .parent()
        .and_then(|p| {
            fs::canonicalize(if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            })
            .ok()
        })
        .into_iter()
        .collect();
    let mut warnings = Vec::new();
    match trust(dir, &manifest, &approved, allow_symlinks, &mut warnings) {
        Ok(entrypoint) => Inspected::Trusted(Box::new(Found {
            manifest,
            dir: dir.to_path_buf(),
            entrypoint,
        })),
        Err(reason) => Inspected::Untrusted(Box::new(manifest), reason),
    }
}

/// Whether `name` can be looked up as one directory under a root.
fn is_dir_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains('/') && !name.contains('\0')
}

#[cfg(test)]
pub(crate) mod tests;
