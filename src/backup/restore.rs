//! Restoring an archive, crash-safely and all-or-nothing up to the last step:
//!
//! 1. read the manifest (a first pass over the archive: it is written last);
//! 2. refuse while a process holds the target ledger, or when a
//!    `.pre-restore` from an earlier restore is in the way;
//! 3. extract every selected file into a staging directory beside its target
//!    (same file system, so the final step is renames), hashing as it writes;
//!    refuse on any entry the manifest does not list, any size or sha256
//!    mismatch, any missing entry, a ledger that fails `integrity_check` or
//!    whose row counts differ from the manifest's;
//! 4. only then, under the maintenance lock: fold the old ledger's WAL into
//!    it, keep each existing target as `<name>.pre-restore` (a hard link) and
//!    rename the staged file over it. Staging is removed whatever happens.
//!
//! A crash during step 4 leaves every target in place, either old or new
//! (then with the old one beside it as `.pre-restore`), and a staging
//! directory to delete.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::manifest::{self, Manifest, Root, RootKind};
use super::walk::WORK_PREFIX;
use super::{BackupError, MANIFEST_NAME, PRE_RESTORE, side_file};
use crate::lock;

/// Which part of an archive to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Every root in the archive.
    Everything,
    /// Only the config directory (`ductile config restore`).
    ConfigOnly,
}

/// What a restore is asked to do.
#[derive(Debug)]
pub struct Request<'a> {
    /// The archive.
    pub archive: &'a Path,
    /// Restore under this directory (each root at its archive path) instead
    /// of back to where it was read from.
    pub to: Option<&'a Path>,
    /// Which roots.
    pub selection: Selection,
    /// Verify everything, change nothing.
    pub dry_run: bool,
}

/// One file a restore wrote (or would write).
#[derive(Debug, Clone)]
pub struct Placed {
    /// Where it goes.
    pub path: PathBuf,
    /// The old file's new name, when one was there.
    pub previous: Option<PathBuf>,
}

/// What a restore did.
#[derive(Debug)]
pub struct Outcome {
    /// The archive's manifest.
    pub manifest: Manifest,
    /// Every file placed, in archive order.
    pub placed: Vec<Placed>,
    /// The ledger's new path, when the ledger was restored.
    pub database: Option<PathBuf>,
}

/// Reads, verifies and (unless `dry_run`) installs an archive.
pub fn restore(req: &Request<'_>) -> Result<Outcome, BackupError> {
    let archive = req.archive;
    let manifest = read_manifest(archive)?;
    let selected: Vec<&Root> = manifest
        .roots
        .iter()
        .filter(|r| match req.selection {
            Selection::Everything => true,
            Selection::ConfigOnly => r.archive == "config",
        })
        .collect();
    if selected.is_empty() {
        return Err(BackupError::archive(
            archive,
            format!(
                "it holds no config directory (it was taken at scope {})",
                manifest.scope
            ),
        ));
    }
    let dest_of = |root: &Root| -> PathBuf {
        match req.to {
            Some(dir) => dir.join(&root.archive),
            None => root.source.clone(),
        }
    };
    let db_root = selected
        .iter()
        .find(|r| r.archive == manifest.database.archive)
        .copied();
    let db_dest = db_root.map(dest_of);
    if let Some(db) = &db_dest {
        if let Some(h) = lock::holder(db) {
            return Err(BackupError::Locked {
                db: db.clone(),
                holder: h.describe(),
            });
        }
    }

    // Where each selected file goes, and where it is staged first.
    let mut stage = Staging::default();
    let mut plan: Vec<(String, PathBuf, PathBuf)> = Vec::new();
    for (i, root) in selected.iter().enumerate() {
        let dest = dest_of(root);
        let anchor = match root.kind {
            RootKind::Dir => dest.clone(),
            RootKind::File => parent(&dest),
        };
        let dir = anchor.join(format!("{WORK_PREFIX}restore-{}-{i}", std::process::id()));
        for e in manifest
            .files
            .iter()
            .filter(|e| manifest.root_of(&e.path) == Some(root))
        {
            let (target, staged) = match root.kind {
                RootKind::File => (dest.clone(), dir.join("file")),
                RootKind::Dir => {
                    let rel = &e.path[root.archive.len() + 1..];
                    (dest.join(rel), dir.join(rel))
                }
            };
            plan.push((e.path.clone(), target, staged));
        }
        stage.dirs.push((anchor, dir));
    }
    let mut in_the_way = Vec::new();
    for (_, target, _) in &plan {
        in_the_way.push(pre_restore(target));
    }
    if let Some(db) = &db_dest {
        for suffix in SIDE_FILES {
            in_the_way.push(side_file(&pre_restore(db), suffix));
        }
    }
    if let Some(p) = in_the_way
        .into_iter()
        .find(|p| std::fs::symlink_metadata(p).is_ok())
    {
        return Err(BackupError::PreRestoreExists { path: p });
    }

    for (anchor, dir) in &stage.dirs.clone() {
        stage.create_dir_all(anchor)?;
        std::fs::create_dir(dir).map_err(BackupError::io(dir, "create the staging directory"))?;
        stage.made.push(dir.clone());
    }
    extract(archive, &manifest, &plan, &mut stage)?;
    if let (Some(root), Some(_)) = (db_root, &db_dest) {
        let staged = plan
            .iter()
            .find(|(a, _, _)| *a == root.archive)
            .map(|(_, _, s)| s.clone())
            .ok_or_else(|| BackupError::archive(archive, "its manifest lists no ledger file"))?;
        check_ledger(archive, &manifest, &staged)?;
    }
    let placed: Vec<Placed> = plan
        .iter()
        .map(|(_, target, _)| Placed {
            path: target.clone(),
            previous: std::fs::symlink_metadata(target)
                .is_ok()
                .then(|| pre_restore(target)),
        })
        .collect();
    if req.dry_run {
        return Ok(Outcome {
            manifest,
            placed,
            database: db_dest,
        });
    }

    // Hold the ledger against a daemon starting while files move. Only an
    // existing ledger is locked: taking the lock creates the file.
    let _held = match &db_dest {
        Some(db) if db.exists() => {
            match lock::InstanceLock::try_acquire(db, lock::Role::Maintenance) {
                Ok(Some(l)) => Some(l),
                Ok(None) => {
                    return Err(BackupError::Locked {
                        db: db.clone(),
                        holder: lock::holder(db)
                            .map(|h| h.describe())
                            .unwrap_or_else(|| "another ductile process".into()),
                    });
                }
                Err(e) => {
                    return Err(BackupError::Io {
                        path: db.clone(),
                        op: "lock the ledger",
                        source: std::io::Error::other(e.to_string()),
                    });
                }
            }
        }
        _ => None,
    };
    if let Some(db) = &db_dest {
        fold_wal(db);
        // What the checkpoint left keeps its pairing: `<db>.pre-restore-wal`
        // is the WAL SQLite looks for beside `<db>.pre-restore`.
        for suffix in SIDE_FILES {
            let side = side_file(db, suffix);
            if std::fs::symlink_metadata(&side).is_ok() {
                let to = side_file(&pre_restore(db), suffix);
                std::fs::rename(&side, &to).map_err(BackupError::io(&side, "move aside"))?;
            }
        }
    }
    for ((_, target, staged), p) in plan.iter().zip(&placed) {
        let dir = parent(target);
        stage.create_dir_all(&dir)?;
        if let Some(prev) = &p.previous {
            keep_old(target, prev)?;
        }
        crate::fault::hit(crate::fault::Point::RestoreSwap);
        // Over the old name in one step: the target is never missing.
        std::fs::rename(staged, target).map_err(BackupError::io(target, "move into place"))?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
    }
    stage.keep_created();
    Ok(Outcome {
        manifest,
        placed,
        database: db_dest,
    })
}

/// The files SQLite keeps beside a database.
const SIDE_FILES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Folds the old ledger's WAL into its file, so the copy kept as
/// `.pre-restore` is whole on its own; best effort (a file that is not a
/// database has no WAL to fold, and its side files are moved with it anyway).
fn fold_wal(db: &Path) {
    if crate::store::replication::litestream() {
        // Litestream owns the WAL; the kept copy travels with its side files.
        return;
    }
    if let Ok(conn) = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }
}

/// Keeps the file at `target` as `prev`: a hard link, so `target` stays in
/// place until the new file is renamed over it; a rename where links are not
/// possible (a directory in the way, a file system without them).
fn keep_old(target: &Path, prev: &Path) -> Result<(), BackupError> {
    let is_file = std::fs::symlink_metadata(target).is_ok_and(|m| m.is_file());
    if is_file && std::fs::hard_link(target, prev).is_ok() {
        return Ok(());
    }
    std::fs::rename(target, prev).map_err(BackupError::io(target, "move aside"))
}

/// `<path>.pre-restore`.
fn pre_restore(path: &Path) -> PathBuf {
    side_file(path, PRE_RESTORE)
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Staging directories and the directories a restore created; removed on
/// drop unless the restore finished.
#[derive(Debug, Default)]
struct Staging {
    /// (the directory it sits in, the staging directory).
    dirs: Vec<(PathBuf, PathBuf)>,
    /// Staging directories made so far.
    made: Vec<PathBuf>,
    /// Directories that did not exist before, in creation order.
    created: Vec<PathBuf>,
    keep: bool,
}

impl Staging {
    /// `create_dir_all`, remembering which directories were new.
    fn create_dir_all(&mut self, dir: &Path) -> Result<(), BackupError> {
        let missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
            .map(Path::to_path_buf)
            .collect();
        for d in missing.into_iter().rev() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&d)
                .map_err(BackupError::io(&d, "create the directory"))?;
            self.created.push(d);
        }
        Ok(())
    }

    fn keep_created(&mut self) {
        self.keep = true;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        for d in &self.made {
            let _ = std::fs::remove_dir_all(d);
        }
        if !self.keep {
            for d in self.created.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

/// Opens the archive as a tar stream.
fn open(archive: &Path) -> Result<tar::Archive<flate2::read::GzDecoder<File>>, BackupError> {
    let f = File::open(archive).map_err(BackupError::io(archive, "open the archive"))?;
    Ok(tar::Archive::new(flate2::read::GzDecoder::new(f)))
}

/// "it is truncated or not a tar.gz (...)".
fn unreadable(archive: &Path, e: std::io::Error) -> BackupError {
    BackupError::archive(
        archive,
        format!("it is truncated or not a ductile tar.gz ({e})"),
    )
}

/// The first pass: finds and parses the manifest, reading the whole stream
/// (a truncated archive fails here, before anything is staged).
fn read_manifest(archive: &Path) -> Result<Manifest, BackupError> {
    let mut tar = open(archive)?;
    let mut found: Option<String> = None;
    for entry in tar.entries().map_err(|e| unreadable(archive, e))? {
        let mut entry = entry.map_err(|e| unreadable(archive, e))?;
        let is_manifest = entry.path_bytes().as_ref() == MANIFEST_NAME.as_bytes();
        if is_manifest {
            if found.is_some() {
                return Err(BackupError::archive(archive, "it holds two manifests"));
            }
            if entry.size() > manifest::MAX_BYTES {
                return Err(BackupError::archive(archive, "its manifest is too large"));
            }
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| unreadable(archive, e))?;
            found = Some(text);
        } else {
            std::io::copy(&mut entry, &mut std::io::sink()).map_err(|e| unreadable(archive, e))?;
        }
    }
    let text = found.ok_or_else(|| {
        BackupError::archive(
            archive,
            format!("it has no {MANIFEST_NAME} (not a ductile backup, or truncated)"),
        )
    })?;
    let m = Manifest::parse(&text).map_err(|d| BackupError::archive(archive, d))?;
    for e in &m.files {
        if !safe_path(&e.path) {
            return Err(BackupError::archive(
                archive,
                format!("its manifest names an unsafe path `{}`", e.path),
            ));
        }
        if m.root_of(&e.path).is_none() {
            return Err(BackupError::archive(
                archive,
                format!("its manifest lists `{}` under no root", e.path),
            ));
        }
    }
    if m.entry(&m.database.archive).map(|e| &e.sha256) != Some(&m.database.sha256) {
        return Err(BackupError::archive(
            archive,
            "its manifest's ledger checksum does not match its file list",
        ));
    }
    Ok(m)
}

/// A relative path of plain names only.
fn safe_path(p: &str) -> bool {
    !p.is_empty()
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// The second pass: every entry must be in the manifest with its size and
/// sha256; selected ones are written to their staging path as they are hashed.
fn extract(
    archive: &Path,
    manifest: &Manifest,
    plan: &[(String, PathBuf, PathBuf)],
    stage: &mut Staging,
) -> Result<(), BackupError> {
    use sha2::Digest;
    let mut tar = open(archive)?;
    let mut seen = std::collections::BTreeSet::new();
    for entry in tar.entries().map_err(|e| unreadable(archive, e))? {
        let mut entry = entry.map_err(|e| unreadable(archive, e))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if name == MANIFEST_NAME {
            std::io::copy(&mut entry, &mut std::io::sink()).map_err(|e| unreadable(archive, e))?;
            continue;
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(BackupError::archive(
                archive,
                format!("`{name}` is not a regular file"),
            ));
        }
        let Some(expected) = manifest.entry(&name) else {
            return Err(BackupError::archive(
                archive,
                format!("it holds `{name}`, which its manifest does not list"),
            ));
        };
        if !seen.insert(name.clone()) {
            return Err(BackupError::archive(
                archive,
                format!("it holds `{name}` twice"),
            ));
        }
        if entry.size() != expected.size {
            return Err(BackupError::archive(
                archive,
                format!(
                    "`{name}` is {} bytes, and its manifest says {}",
                    entry.size(),
                    expected.size
                ),
            ));
        }
        let staged = plan
            .iter()
            .find(|(a, _, _)| *a == name)
            .map(|(_, _, s)| s.clone());
        let mut out = match &staged {
            Some(path) => {
                stage.create_dir_all(&parent(path))?;
                // Permission bits only: a restore never makes a set-id file.
                let mode = manifest::parse_mode(&expected.mode).unwrap_or(0o600) & 0o777;
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(path)
                    .map_err(BackupError::io(path, "stage"))?;
                // The umask may have narrowed the mode the archive recorded.
                let _ = f.set_permissions(std::fs::Permissions::from_mode(mode));
                Some(f)
            }
            None => None,
        };
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = entry.read(&mut buf).map_err(|e| unreadable(archive, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if let (Some(f), Some(path)) = (out.as_mut(), &staged) {
                f.write_all(&buf[..n])
                    .map_err(BackupError::io(path, "stage"))?;
            }
        }
        let actual = super::hex(&hasher.finalize());
        if actual != expected.sha256 {
            return Err(BackupError::archive(
                archive,
                format!(
                    "`{name}` does not match its manifest (sha256 {actual}, expected {})",
                    expected.sha256
                ),
            ));
        }
        if let (Some(f), Some(path)) = (out, &staged) {
            f.sync_all().map_err(BackupError::io(path, "stage"))?;
        }
    }
    if let Some(missing) = manifest.files.iter().find(|e| !seen.contains(&e.path)) {
        return Err(BackupError::archive(
            archive,
            format!(
                "`{}` is in its manifest but not in the archive (truncated?)",
                missing.path
            ),
        ));
    }
    Ok(())
}

/// The staged ledger passes `integrity_check` and has the manifest's rows.
fn check_ledger(archive: &Path, manifest: &Manifest, staged: &Path) -> Result<(), BackupError> {
    let result = super::integrity_of(staged);
    // A read-only open of a WAL-mode file leaves its side files behind.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(side_file(staged, suffix));
    }
    let (verdict, tables) = result
        .map_err(|e| BackupError::archive(archive, format!("its ledger cannot be read: {e}")))?;
    if let Some(detail) = verdict {
        return Err(BackupError::archive(
            archive,
            format!("its ledger fails integrity_check: {detail}"),
        ));
    }
    if tables != manifest.database.tables {
        let differs: Vec<String> = manifest
            .database
            .tables
            .iter()
            .filter(|(t, n)| tables.get(*t) != Some(n))
            .map(|(t, n)| {
                format!(
                    "{t}: {} rows, manifest {n}",
                    tables.get(t).copied().unwrap_or(0)
                )
            })
            .collect();
        return Err(BackupError::archive(
            archive,
            format!(
                "its ledger's row counts differ from its manifest ({})",
                differs.join(", ")
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_safe() {
        assert!(safe_path("config/a.yaml"));
        assert!(!safe_path("../etc/passwd"));
        assert!(!safe_path("/etc/passwd"));
        assert!(!safe_path("config/../../x"));
        assert!(!safe_path("./x"));
        assert!(!safe_path(""));
    }
}
