//! Discovery and trust: which directories under the plugin roots hold plugins
//! ductile is willing to run.
//!
//! Owns: scanning roots in order (every directory, or only those named after the
//! plugins asked for), reading each `manifest.yaml` within bounds (a regular
//! file of at most [`MAX_MANIFEST_BYTES`]) and validating it, deciding which of
//! several same-named manifests wins, and the trust checks (entrypoint exists, is
//! a regular executable file resolving inside its plugin dir and an approved
//! root; the plugin dir is not world-writable; symlinks only when allowed).
//! Must not: look at `plugins:` config (aliases and required keys are the
//! registry's business) or run anything.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::plugin::Skipped;
use crate::plugin::manifest::{self, Manifest};

/// The file that makes a directory a plugin candidate.
pub const MANIFEST_FILE: &str = "manifest.yaml";

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
}

impl<'a> Scanner<'a> {
    fn new(roots: &'a [PathBuf], allow_symlinks: bool, wanted: Option<Wanted<'a>>) -> Scanner<'a> {
        Scanner {
            roots,
            allow_symlinks,
            wanted,
            out: Scan::default(),
            candidates: Vec::new(),
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
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
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
                if !self.candidates.iter().any(|c| c.dir == dir) {
                    self.consider(root, dir);
                }
            }
        }
    }

    /// Reads the manifest in `dir`, if it is a plugin directory.
    fn consider(&mut self, root: usize, dir: PathBuf) {
        // Follows symlinks; whether a symlinked dir is acceptable is a trust question.
        if !dir.is_dir() {
            return;
        }
        let manifest_path = dir.join(MANIFEST_FILE);
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
            .and_then(|text| manifest::parse(&manifest_path, &text).map_err(|e| e.to_string()))
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

/// Whether `name` can be looked up as one directory under a root.
fn is_dir_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains('/') && !name.contains('\0')
}

/// Reads a manifest without trusting the path: only a regular file, never one
/// larger than [`MAX_MANIFEST_BYTES`], and opened non-blocking so a FIFO that
/// replaced the file after the check cannot hang discovery.
fn read_manifest(path: &Path) -> Result<String, String> {
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let check = |meta: &fs::Metadata| -> Result<(), String> {
        if !meta.is_file() {
            return Err(format!(
                "{} is not a regular file (it is {}); it is not read",
                path.display(),
                file_kind(meta)
            ));
        }
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(too_big(path, meta.len()));
        }
        Ok(())
    };
    check(&fs::metadata(path).map_err(cannot)?)?;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot)?;
    check(&file.metadata().map_err(cannot)?)?;
    let mut text = String::new();
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    // The file may have grown between the check and the read.
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(too_big(path, text.len() as u64));
    }
    Ok(text)
}

fn too_big(path: &Path, size: u64) -> String {
    format!(
        "{} is {size} bytes, over the {} KiB limit for a manifest; it is not read",
        path.display(),
        MAX_MANIFEST_BYTES / 1024
    )
}

fn file_kind(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a file"
    }
}

/// Applies the trust checks to one candidate; returns the canonical entrypoint.
fn trust(
    dir: &Path,
    manifest: &Manifest,
    approved: &[PathBuf],
    allow_symlinks: bool,
    warnings: &mut Vec<String>,
) -> Result<PathBuf, String> {
    let name = &manifest.name;
    let canon_dir = fs::canonicalize(dir)
        .map_err(|e| format!("plugin dir {} cannot be resolved: {e}", dir.display()))?;
    let dir_is_link = fs::symlink_metadata(dir)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false);
    if dir_is_link {
        if !allow_symlinks {
            return Err(format!(
                "plugin dir {} is a symlink to {} (refused: service.allow_symlinks is false)",
                dir.display(),
                canon_dir.display()
            ));
        }
        warnings.push(format!(
            "plugin `{name}`: plugin dir {} is a symlink to {} (allowed by service.allow_symlinks)",
            dir.display(),
            canon_dir.display()
        ));
    }
    if !approved.iter().any(|root| canon_dir.starts_with(root)) {
        return Err(format!(
            "plugin dir {} resolves to {}, outside every plugin root",
            dir.display(),
            canon_dir.display()
        ));
    }
    let dir_mode = fs::metadata(&canon_dir)
        .map_err(|e| format!("plugin dir {} cannot be read: {e}", dir.display()))?
        .permissions()
        .mode();
    if dir_mode & 0o002 != 0 {
        return Err(format!(
            "plugin dir {} is world-writable (mode {:o}; run chmod o-w on it)",
            dir.display(),
            dir_mode & 0o7777
        ));
    }

    let rel = &manifest.entrypoint;
    let path = dir.join(rel);
    if let Err(e) = fs::symlink_metadata(&path) {
        return Err(if e.kind() == std::io::ErrorKind::NotFound {
            format!("entrypoint `{rel}` does not exist in {}", dir.display())
        } else {
            format!(
                "entrypoint `{rel}` in {} cannot be read: {e}",
                dir.display()
            )
        });
    }
    let canon = fs::canonicalize(&path).map_err(|e| {
        format!(
            "entrypoint `{rel}` in {} cannot be resolved: {e}",
            dir.display()
        )
    })?;
    // A symlink anywhere between the plugin dir and the file (the file itself or an
    // intermediate directory) makes the resolved path differ from the literal one.
    let literal: PathBuf = Path::new(rel)
        .components()
        .filter(|c| *c != Component::CurDir)
        .fold(canon_dir.clone(), |acc, c| acc.join(c));
    if canon != literal {
        if !allow_symlinks {
            return Err(format!(
                "entrypoint `{rel}` in {} is reached through a symlink (resolves to {}; refused: service.allow_symlinks is false)",
                dir.display(),
                canon.display()
            ));
        }
        warnings.push(format!(
            "plugin `{name}`: entrypoint `{rel}` resolves through a symlink to {} (allowed by service.allow_symlinks)",
            canon.display()
        ));
    }
    if !canon.starts_with(&canon_dir) {
        return Err(format!(
            "entrypoint `{rel}` resolves to {}, outside the plugin dir {}",
            canon.display(),
            canon_dir.display()
        ));
    }
    if !approved.iter().any(|root| canon.starts_with(root)) {
        return Err(format!(
            "entrypoint `{rel}` resolves to {}, outside every plugin root",
            canon.display()
        ));
    }
    let meta = fs::metadata(&canon).map_err(|e| {
        format!(
            "entrypoint `{rel}` in {} cannot be read: {e}",
            dir.display()
        )
    })?;
    if !meta.is_file() {
        return Err(format!(
            "entrypoint `{rel}` in {} is not a regular file",
            dir.display()
        ));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "entrypoint `{rel}` in {} is not executable (run chmod +x on it)",
            dir.display()
        ));
    }
    Ok(canon)
}

/// The name of a file in `dir` that looks like an entrypoint (`run*`, `main*`, or
/// any executable regular file), if there is one.
fn entrypoint_like(dir: &Path) -> Option<String> {
    let mut names: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    names.sort();
    names.into_iter().find_map(|(name, path)| {
        let meta = fs::metadata(&path).ok()?;
        if !meta.is_file() {
            return None;
        }
        let stem = name.split('.').next().unwrap_or_default();
        let looks = stem == "run" || stem == "main" || meta.permissions().mode() & 0o111 != 0;
        looks.then_some(name)
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A unique scratch directory, removed on drop.
    pub(crate) struct TempDir {
        pub(crate) path: PathBuf,
    }

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::SeqCst);
            let path = std::env::temp_dir()
                .join(format!("ductile-plugin-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            if let Err(e) = fs::create_dir_all(&path) {
                panic!("cannot create {}: {e}", path.display());
            }
            // Canonical, so expected texts match what discovery prints.
            let path = fs::canonicalize(&path).unwrap_or(path);
            TempDir { path }
        }

        /// Creates (if needed) and returns the subdirectory `name`.
        pub(crate) fn sub(&self, name: &str) -> PathBuf {
            let p = self.path.join(name);
            if let Err(e) = fs::create_dir_all(&p) {
                panic!("cannot create {}: {e}", p.display());
            }
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.path);
        }
    }

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plugins")
    }

    /// Copies fixture `name` to `root/dir_name`, keeping file modes.
    pub(crate) fn copy_fixture(name: &str, root: &Path, dir_name: &str) -> PathBuf {
        let src = fixtures().join(name);
        let dst = root.join(dir_name);
        copy_dir(&src, &dst);
        dst
    }

    fn copy_dir(src: &Path, dst: &Path) {
        if let Err(e) = fs::create_dir_all(dst) {
            panic!("cannot create {}: {e}", dst.display());
        }
        let entries = match fs::read_dir(src) {
            Ok(e) => e,
            Err(e) => panic!("cannot read {}: {e}", src.display()),
        };
        for entry in entries.flatten() {
            let to = dst.join(entry.file_name());
            if entry.path().is_dir() {
                copy_dir(&entry.path(), &to);
            } else if let Err(e) = fs::copy(entry.path(), &to) {
                panic!("cannot copy {}: {e}", entry.path().display());
            }
        }
    }

    pub(crate) fn write(path: &Path, text: &str) {
        if let Err(e) = fs::write(path, text) {
            panic!("cannot write {}: {e}", path.display());
        }
    }

    pub(crate) fn chmod(path: &Path, mode: u32) {
        if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(mode)) {
            panic!("cannot chmod {}: {e}", path.display());
        }
    }

    fn link(target: &Path, at: &Path) {
        if let Err(e) = symlink(target, at) {
            panic!("cannot symlink {}: {e}", at.display());
        }
    }

    fn found_names(scan: &Scan) -> Vec<&str> {
        scan.found
            .iter()
            .map(|f| f.manifest.name.as_str())
            .collect()
    }

    fn reasons(scan: &Scan) -> Vec<(String, String)> {
        scan.skipped
            .iter()
            .map(|s| (s.name.clone(), s.reason.clone()))
            .collect()
    }

    #[test]
    fn scan_finds_trusted_plugins_and_explains_the_rest() {
        let tmp = TempDir::new("scan");
        let root = tmp.sub("plugins");
        for name in [
            "ok_basic",
            "hang",
            "bad_protocol_3",
            "missing_entrypoint",
            "dotdot_entrypoint",
            "not_executable",
            "no_manifest",
        ] {
            copy_fixture(name, &root, name);
        }
        // Shared helper dirs without entrypoints, hidden dirs and stray files are ignored.
        write(&tmp.sub("plugins/lib").join("oauth.py"), "# helper\n");
        tmp.sub("plugins/_lib");
        copy_fixture("no_manifest", &root, ".hidden");
        write(&root.join("README.md"), "plugins live here\n");

        let scan = scan(std::slice::from_ref(&root), false);
        assert_eq!(found_names(&scan), vec!["hang", "ok_basic"]);
        let ok = &scan.found[1];
        assert_eq!(ok.dir, root.join("ok_basic"));
        assert_eq!(ok.entrypoint, root.join("ok_basic/run.sh"));
        let r = root.display();
        assert_eq!(
            reasons(&scan),
            vec![
                (
                    "bad_protocol_3".to_string(),
                    format!(
                        "{r}/bad_protocol_3/manifest.yaml: protocol: unsupported protocol 3 (this ductile speaks 2)"
                    )
                ),
                (
                    "dotdot_entrypoint".to_string(),
                    format!(
                        "{r}/dotdot_entrypoint/manifest.yaml: entrypoint: must not contain `..` (path traversal), got `../ok_basic/run.sh`"
                    )
                ),
                (
                    "missing_entrypoint".to_string(),
                    format!("entrypoint `run.sh` does not exist in {r}/missing_entrypoint")
                ),
                (
                    "not_executable".to_string(),
                    format!(
                        "entrypoint `run.sh` in {r}/not_executable is not executable (run chmod +x on it)"
                    )
                ),
            ]
        );
        assert_eq!(
            scan.skipped[0].path,
            root.join("bad_protocol_3/manifest.yaml")
        );
        assert_eq!(scan.skipped[2].path, root.join("missing_entrypoint"));
        assert_eq!(
            scan.warnings,
            vec![format!(
                "{r}/no_manifest has no manifest.yaml but holds `run.sh`; it is not loaded as a plugin"
            )]
        );
    }

    #[test]
    fn entrypoint_looking_files_warn() {
        let tmp = TempDir::new("stray");
        let root = tmp.sub("plugins");
        write(&tmp.sub("plugins/a").join("main.py"), "print()\n");
        let tool = tmp.sub("plugins/b").join("tool");
        write(&tool, "#!/bin/sh\n");
        chmod(&tool, 0o755);
        write(&tmp.sub("plugins/c").join("notes.txt"), "x\n");
        let scan = scan(std::slice::from_ref(&root), false);
        let r = root.display();
        assert_eq!(
            scan.warnings,
            vec![
                format!(
                    "{r}/a has no manifest.yaml but holds `main.py`; it is not loaded as a plugin"
                ),
                format!(
                    "{r}/b has no manifest.yaml but holds `tool`; it is not loaded as a plugin"
                ),
            ]
        );
        assert!(scan.found.is_empty() && scan.skipped.is_empty());
    }

    #[test]
    fn roots_are_scanned_in_order_and_the_first_name_wins() {
        let tmp = TempDir::new("order");
        let first = tmp.sub("first");
        let second = tmp.sub("second");
        copy_fixture("ok_basic", &second, "ok_basic");
        copy_fixture("hang", &second, "hang");
        copy_fixture("ok_basic", &first, "zz_ok_basic_copy");
        copy_fixture("ok_basic", &first, "ok_basic");

        let scan = scan(&[first.clone(), second.clone()], false);
        assert_eq!(found_names(&scan), vec!["ok_basic", "hang"]);
        assert_eq!(scan.found[0].dir, first.join("ok_basic"));
        assert_eq!(
            reasons(&scan),
            vec![
                (
                    "ok_basic".to_string(),
                    format!(
                        "duplicate plugin `ok_basic` in {} is ignored: {} declared it first",
                        first.join("zz_ok_basic_copy").display(),
                        first.join("ok_basic").display()
                    )
                ),
                (
                    "ok_basic".to_string(),
                    format!(
                        "duplicate plugin `ok_basic` in {} is ignored: {} declared it first",
                        second.join("ok_basic").display(),
                        first.join("ok_basic").display()
                    )
                ),
            ]
        );
    }

    #[test]
    fn world_writable_dir_is_refused_and_keeps_its_name() {
        let tmp = TempDir::new("ww");
        let first = tmp.sub("first");
        let second = tmp.sub("second");
        let dir = copy_fixture("ok_basic", &first, "ok_basic");
        chmod(&dir, 0o777);
        copy_fixture("ok_basic", &second, "ok_basic");
        let scan = scan(&[first.clone(), second.clone()], false);
        assert!(
            scan.found.is_empty(),
            "a refused plugin must not be replaced by a later copy"
        );
        assert_eq!(
            reasons(&scan)[0],
            (
                "ok_basic".to_string(),
                format!(
                    "plugin dir {} is world-writable (mode 777; run chmod o-w on it)",
                    dir.display()
                )
            )
        );
        assert_eq!(scan.skipped.len(), 2);
    }

    #[test]
    fn missing_root_is_a_warning() {
        let tmp = TempDir::new("noroot");
        let missing = tmp.path.join("nope");
        let scan = scan(std::slice::from_ref(&missing), false);
        assert_eq!(
            scan.warnings,
            vec![format!(
                "plugin root {} cannot be read: No such file or directory (os error 2)",
                missing.display()
            )]
        );
    }

    #[test]
    fn entrypoint_that_is_a_directory_is_refused() {
        let tmp = TempDir::new("epdir");
        let root = tmp.sub("plugins");
        let dir = copy_fixture("missing_entrypoint", &root, "missing_entrypoint");
        tmp.sub("plugins/missing_entrypoint/run.sh");
        let scan = scan(&[root], false);
        assert_eq!(
            reasons(&scan),
            vec![(
                "missing_entrypoint".to_string(),
                format!(
                    "entrypoint `run.sh` in {} is not a regular file",
                    dir.display()
                )
            )]
        );
    }

    #[test]
    fn symlinked_plugin_dirs_need_permission_and_an_approved_target() {
        let tmp = TempDir::new("dirlink");
        let root = tmp.sub("plugins");
        let other_root = tmp.sub("other");
        let outside = tmp.sub("outside");
        let real = copy_fixture("ok_basic", &other_root, "ok_basic");
        let elsewhere = copy_fixture("hang", &outside, "hang");
        link(&real, &root.join("ok_basic"));
        link(&elsewhere, &root.join("hang"));
        let roots = [root.clone(), other_root.clone()];

        let refused = scan(&roots, false);
        assert!(refused.found.is_empty());
        assert_eq!(
            reasons(&refused),
            vec![
                (
                    "hang".to_string(),
                    format!(
                        "plugin dir {} is a symlink to {} (refused: service.allow_symlinks is false)",
                        root.join("hang").display(),
                        elsewhere.display()
                    )
                ),
                (
                    "ok_basic".to_string(),
                    format!(
                        "plugin dir {} is a symlink to {} (refused: service.allow_symlinks is false)",
                        root.join("ok_basic").display(),
                        real.display()
                    )
                ),
                (
                    "ok_basic".to_string(),
                    format!(
                        "duplicate plugin `ok_basic` in {} is ignored: {} declared it first",
                        real.display(),
                        root.join("ok_basic").display()
                    )
                ),
            ]
        );

        let allowed = scan(&roots, true);
        assert_eq!(found_names(&allowed), vec!["ok_basic"]);
        assert_eq!(allowed.found[0].entrypoint, real.join("run.sh"));
        assert_eq!(
            allowed.skipped[0].reason,
            format!(
                "plugin dir {} resolves to {}, outside every plugin root",
                root.join("hang").display(),
                elsewhere.display()
            )
        );
        assert!(allowed.warnings.contains(&format!(
            "plugin `ok_basic`: plugin dir {} is a symlink to {} (allowed by service.allow_symlinks)",
            root.join("ok_basic").display(),
            real.display()
        )));
    }

    #[test]
    fn symlinked_entrypoints_need_permission_and_must_stay_inside() {
        let tmp = TempDir::new("eplink");
        let root = tmp.sub("plugins");
        let inside = copy_fixture("missing_entrypoint", &root, "inside");
        write(&inside.join("manifest.yaml"), &manifest_named("inside"));
        let target = inside.join("impl.sh");
        write(&target, "#!/bin/sh\n");
        chmod(&target, 0o755);
        link(Path::new("impl.sh"), &inside.join("run.sh"));

        let escape = copy_fixture("missing_entrypoint", &root, "escape");
        write(&escape.join("manifest.yaml"), &manifest_named("escape"));
        link(&target, &escape.join("run.sh"));

        let refused = scan(std::slice::from_ref(&root), false);
        assert!(refused.found.is_empty());
        assert_eq!(
            reasons(&refused),
            vec![
                (
                    "escape".to_string(),
                    format!(
                        "entrypoint `run.sh` in {} is reached through a symlink (resolves to {}; refused: service.allow_symlinks is false)",
                        escape.display(),
                        target.display()
                    )
                ),
                (
                    "inside".to_string(),
                    format!(
                        "entrypoint `run.sh` in {} is reached through a symlink (resolves to {}; refused: service.allow_symlinks is false)",
                        inside.display(),
                        target.display()
                    )
                ),
            ]
        );

        let allowed = scan(std::slice::from_ref(&root), true);
        assert_eq!(found_names(&allowed), vec!["inside"]);
        assert_eq!(allowed.found[0].entrypoint, target);
        assert_eq!(
            reasons(&allowed),
            vec![(
                "escape".to_string(),
                format!(
                    "entrypoint `run.sh` resolves to {}, outside the plugin dir {}",
                    target.display(),
                    escape.display()
                )
            )]
        );
        assert!(allowed.warnings.contains(&format!(
            "plugin `inside`: entrypoint `run.sh` resolves through a symlink to {} (allowed by service.allow_symlinks)",
            target.display()
        )));
    }

    #[test]
    fn bundled_plugins_are_trusted() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins");
        let scan = scan(std::slice::from_ref(&root), false);
        assert!(scan.skipped.is_empty(), "{:?}", scan.skipped);
        assert!(scan.warnings.is_empty(), "{:?}", scan.warnings);
        let Some(echo) = scan.found.iter().find(|f| f.manifest.name == "echo") else {
            panic!("echo not found: {:?}", found_names(&scan));
        };
        let m = &echo.manifest;
        let kinds: Vec<(&str, &str)> = m
            .commands
            .iter()
            .map(|c| (c.name.as_str(), c.kind.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![("poll", "read"), ("handle", "read"), ("health", "read")]
        );
        assert_eq!(
            m.fact_rule("poll").map(|f| f.fact_type.as_str()),
            Some("echo.snapshot")
        );
        assert_eq!(m.fact_rule("health"), None);
        assert_eq!(m.config_keys.optional, vec!["message".to_string()]);
        assert!(m.config_keys.required.is_empty());
    }

    #[test]
    fn fixture_zoo_scans_as_expected() {
        let root = fixtures();
        let scan = scan(&[root], false);
        let mut skipped: Vec<&str> = scan.skipped.iter().map(|s| s.name.as_str()).collect();
        skipped.sort();
        assert_eq!(
            skipped,
            vec![
                "bad_protocol_3",
                "dotdot_entrypoint",
                "missing_entrypoint",
                "not_executable"
            ]
        );
        // Every fixture dir with a manifest loads except the four refused above.
        let dirs = std::fs::read_dir(fixtures())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().join("manifest.yaml").exists())
            .count();
        assert_eq!(found_names(&scan).len(), dirs - 4);
        assert!(found_names(&scan).contains(&"setsid_grandchild"));
        assert_eq!(scan.warnings.len(), 1, "{:?}", scan.warnings);
    }

    pub(crate) fn manifest_named(name: &str) -> String {
        format!(
            "manifest_spec: ductile.plugin\nmanifest_version: 1\nname: {name}\nversion: 1.0.0\nprotocol: 2\nentrypoint: run.sh\ncommands:\n  - name: poll\n    type: read\n"
        )
    }
}
