//! Writing an archive: plan what goes in (by scope), snapshot the ledger with
//! `VACUUM INTO` (a read transaction, so a running daemon keeps working), then
//! stream every file into a temporary `tar.gz` beside the destination and link
//! it into place only if nothing is there (never an overwrite).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::manifest::{self, Database, Entry, Excluded, Manifest, Root, RootKind};
use super::side_file;
use super::walk::{self, Found, WORK_PREFIX};
use super::{BackupError, MANIFEST_NAME, Scope};
use crate::config::Config;
use crate::store::{self, migrate};

/// What a backup of a config at a scope would hold, before anything is read.
#[derive(Debug)]
pub struct Plan {
    /// The scope.
    pub scope: Scope,
    /// The ledger.
    pub db: PathBuf,
    /// The archive path of the ledger snapshot.
    pub db_archive: String,
    /// Every root, the ledger's first.
    pub roots: Vec<Root>,
    /// Every file but the ledger, with its archive path.
    pub files: Vec<(PathBuf, String)>,
    /// What is left out.
    pub excluded: Vec<Excluded>,
    /// Things to tell the operator about the archive.
    pub warnings: Vec<String>,
}

/// Plans a backup of `config` at `scope`.
pub fn plan(config: &Config, scope: Scope) -> Result<Plan, BackupError> {
    let db = config.state.path.clone();
    let db_name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ductile.db".into());
    let db_archive = format!("db/{db_name}");
    let mut roots = vec![Root {
        archive: db_archive.clone(),
        kind: RootKind::File,
        source: db.clone(),
    }];
    let (mut files, mut excluded, mut warnings) = (Vec::new(), Vec::new(), Vec::new());
    let env_files = if scope >= Scope::All {
        Vec::new()
    } else {
        environment_files(config)
    };
    let plugin_roots: Vec<PathBuf> = config.plugin_roots.clone();
    // Paths the tree walks leave to another root or to the snapshot.
    let special = |p: &Path| -> Option<String> {
        let ledger = [
            db.clone(),
            side_file(&db, "-wal"),
            side_file(&db, "-shm"),
            side_file(&db, "-journal"),
        ];
        if ledger.iter().any(|l| l == p) {
            return Some(format!(
                "the ledger (archived as {db_archive} by VACUUM INTO)"
            ));
        }
        if p == crate::lock::path_for(&db) {
            return Some("the instance lock file".into());
        }
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        if p.parent() == db.parent()
            && name.starts_with(&format!("{db_name}."))
            && name.ends_with(".bak")
        {
            return Some("a ledger copy left by `system migrate`".into());
        }
        if let Some(i) = plugin_roots.iter().position(|r| r == p) {
            return Some(if scope >= Scope::Plugins {
                format!("a plugin root (archived as plugins/{i})")
            } else {
                "a plugin root (included from scope plugins)".into()
            });
        }
        if env_files.iter().any(|e| e == p) {
            return Some("an environment file (included at scope all)".into());
        }
        None
    };
    if scope >= Scope::Config {
        let mut found = Vec::new();
        walk::walk(&config.dir, &special, &mut found, &mut excluded)?;
        add(&mut files, found, "config");
        roots.push(Root {
            archive: "config".into(),
            kind: RootKind::Dir,
            source: config.dir.clone(),
        });
        for f in &config.files {
            if !f.path.starts_with(&config.dir) {
                warnings.push(format!(
                    "{} is part of the config but outside its directory, so it is not in the archive",
                    f.path.display()
                ));
            }
        }
        let credentials: Vec<&str> = ["api.yaml", "tokens.yaml", "webhooks.yaml"]
            .into_iter()
            .filter(|n| files.iter().any(|(_, a)| a == &format!("config/{n}")))
            .collect();
        if !credentials.is_empty() {
            warnings.push(format!(
                "the archive holds credentials ({}): keep it as private as the config directory",
                credentials.join(", ")
            ));
        }
    }
    if scope >= Scope::Plugins {
        for (i, root) in config.plugin_roots.iter().enumerate() {
            let archive = format!("plugins/{i}");
            if !root.is_dir() {
                excluded.push(Excluded {
                    path: root.clone(),
                    reason: "a configured plugin root that does not exist".into(),
                });
                continue;
            }
            let mut found = Vec::new();
            walk::walk(root, &special, &mut found, &mut excluded)?;
            add(&mut files, found, &archive);
            roots.push(Root {
                archive,
                kind: RootKind::Dir,
                source: root.clone(),
            });
        }
    }
    if scope >= Scope::All {
        let inside = |p: &Path| {
            p.starts_with(&config.dir) || config.plugin_roots.iter().any(|r| p.starts_with(r))
        };
        let env: Vec<PathBuf> = environment_files(config);
        for (i, path) in env.iter().filter(|p| !inside(p)).enumerate() {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "env".into());
            let archive = format!("env/{i}/{name}");
            if path.is_file() {
                files.push((path.clone(), archive.clone()));
                roots.push(Root {
                    archive,
                    kind: RootKind::File,
                    source: path.clone(),
                });
            } else {
                excluded.push(Excluded {
                    path: path.clone(),
                    reason: "an environment file that is not a regular file".into(),
                });
            }
        }
        if !env.is_empty() {
            warnings.push(format!(
                "the archive holds {} environment file(s), which usually hold secrets",
                env.len()
            ));
        }
    }
    Ok(Plan {
        scope,
        db,
        db_archive: roots[0].archive.clone(),
        roots,
        files,
        excluded,
        warnings,
    })
}

fn add(files: &mut Vec<(PathBuf, String)>, found: Vec<Found>, prefix: &str) {
    files.extend(
        found
            .into_iter()
            .map(|f| (f.path, format!("{prefix}/{}", f.rel))),
    );
}

/// Every `environment_vars.include` entry of the loaded files, resolved
/// against the file that names it (the loader refused anything else).
fn environment_files(config: &Config) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for f in &config.files {
        let Ok(text) = std::fs::read_to_string(&f.path) else {
            continue;
        };
        let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(&text) else {
            continue;
        };
        let Some(include) = doc.get("environment_vars").and_then(|e| e.get("include")) else {
            continue;
        };
        let entries: Vec<&str> = match include {
            serde_yaml::Value::String(s) => vec![s.as_str()],
            serde_yaml::Value::Sequence(items) => items.iter().filter_map(|v| v.as_str()).collect(),
            _ => Vec::new(),
        };
        let base = f.path.parent().unwrap_or(Path::new("/"));
        for e in entries {
            let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
            let p = match (e.strip_prefix('~'), home) {
                (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
                    lexical(&PathBuf::from(home).join(rest.trim_start_matches('/')))
                }
                _ => lexical(&base.join(e)),
            };
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// `path` with `.` and `..` resolved by name (as the loader resolves
/// include paths), so `etc/../secrets/x.env` is not taken for a file of `etc`.
fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Removes the named files when dropped (the snapshot and the unfinished
/// archive, whatever happened).
struct Scratch(Vec<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Writes the archive `to` for `plan`; refuses when `to` exists. `config_file`
/// is the root config file, recorded in the manifest.
pub fn create(plan: &Plan, config_file: &Path, to: &Path) -> Result<Manifest, BackupError> {
    if std::fs::symlink_metadata(to).is_ok() {
        return Err(BackupError::Exists {
            path: to.to_path_buf(),
        });
    }
    let dir = match to.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(BackupError::io(&dir, "write the archive into it")(
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        ));
    }
    let pid = std::process::id();
    let snapshot = dir.join(format!("{WORK_PREFIX}backup-{pid}.db"));
    let partial = dir.join(format!("{WORK_PREFIX}backup-{pid}.tar.gz"));
    let _scratch = Scratch(vec![snapshot.clone(), partial.clone()]);
    let _ = std::fs::remove_file(&snapshot);
    let _ = std::fs::remove_file(&partial);

    let database = snapshot_ledger(&plan.db, &snapshot, &plan.db_archive)?;
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(BackupError::io(&partial, "create the archive"))?;
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let write_err = BackupError::io(&partial, "write the archive");
    let mut entries = Vec::with_capacity(plan.files.len() + 1);
    let mut excluded = plan.excluded.clone();

    let snap_meta = std::fs::metadata(&snapshot).map_err(BackupError::io(&snapshot, "inspect"))?;
    let mut h = header(snap_meta.len(), 0o600, snap_meta.mtime());
    let snap_file = File::open(&snapshot).map_err(BackupError::io(&snapshot, "read"))?;
    tar.append_data(&mut h, &plan.db_archive, snap_file)
        .map_err(BackupError::io(&partial, "write the archive"))?;
    entries.push(Entry {
        path: plan.db_archive.clone(),
        size: database.size,
        sha256: database.sha256.clone(),
        mode: manifest::mode_text(0o600),
    });

    for (path, archive) in &plan.files {
        // Read once, then hash and archive the same bytes: a file edited
        // meanwhile is archived consistently with its manifest line.
        let mut bytes = Vec::new();
        let read = File::open(path).and_then(|mut f| {
            let meta = f.metadata()?;
            f.read_to_end(&mut bytes).map(|_| meta)
        });
        let meta = match read {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                excluded.push(Excluded {
                    path: path.clone(),
                    reason: "removed while the backup ran".into(),
                });
                continue;
            }
            Err(e) => return Err(BackupError::io(path, "read")(e)),
        };
        let mode = meta.mode() & 0o7777;
        let mut h = header(bytes.len() as u64, mode, meta.mtime());
        tar.append_data(&mut h, archive, bytes.as_slice())
            .map_err(BackupError::io(&partial, "write the archive"))?;
        entries.push(Entry {
            path: archive.clone(),
            size: bytes.len() as u64,
            sha256: super::sha256_hex(&bytes),
            mode: manifest::mode_text(mode),
        });
    }

    let manifest = Manifest {
        format: manifest::FORMAT,
        ductile_version: env!("CARGO_PKG_VERSION").to_string(),
        commit: option_env!("DUCTILE_COMMIT")
            .unwrap_or("unknown")
            .to_string(),
        hostname: hostname(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        scope: plan.scope.as_str().to_string(),
        config: config_file.to_path_buf(),
        roots: plan.roots.clone(),
        database,
        files: entries,
        excluded,
        warnings: plan.warnings.clone(),
    };
    let text = manifest
        .render()
        .map_err(|e| BackupError::io(&partial, "write the manifest")(std::io::Error::other(e)))?;
    let now = chrono::Utc::now().timestamp();
    let mut h = header(text.len() as u64, 0o644, now);
    tar.append_data(&mut h, MANIFEST_NAME, text.as_bytes())
        .map_err(BackupError::io(&partial, "write the archive"))?;
    let gz = tar
        .into_inner()
        .map_err(BackupError::io(&partial, "finish the archive"))?;
    let mut file = gz.finish().map_err(write_err)?;
    file.flush()
        .and_then(|()| file.sync_all())
        .map_err(BackupError::io(&partial, "flush the archive"))?;
    drop(file);
    // A hard link fails on an existing name, where a rename would replace it:
    // a file that appeared at `to` meanwhile is never overwritten.
    match std::fs::hard_link(&partial, to) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(BackupError::Exists {
                path: to.to_path_buf(),
            });
        }
        Err(e) => return Err(BackupError::io(to, "create the archive")(e)),
    }
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(manifest)
}

/// Takes the `VACUUM INTO` snapshot of `db` at `snapshot` and checks it.
fn snapshot_ledger(db: &Path, snapshot: &Path, archive: &str) -> Result<Database, BackupError> {
    {
        let conn = match store::open_read_only(db) {
            Ok(conn) => conn,
            // A ledger waiting for `system migrate` is worth a backup too:
            // the open above already knew it for ours, only older.
            Err(store::StoreError::NeedsMigration { .. }) => {
                let conn = rusqlite::Connection::open_with_flags(
                    db,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| store::StoreError::sqlite(format!("open {}", db.display()), e))?;
                conn.busy_timeout(std::time::Duration::from_secs(10))
                    .map_err(|e| store::StoreError::sqlite("set a busy timeout", e))?;
                conn
            }
            Err(e) => return Err(e.into()),
        };
        migrate::backup(&conn, snapshot)?;
    }
    let (verdict, tables) = super::integrity_of(snapshot)?;
    if let Some(detail) = verdict {
        return Err(BackupError::Snapshot {
            db: db.to_path_buf(),
            detail: format!("integrity_check: {detail}"),
        });
    }
    let (sha256, size) = hash_file(snapshot)?;
    Ok(Database {
        archive: archive.to_string(),
        source: db.to_path_buf(),
        sha256,
        size,
        tables,
    })
}

/// sha256 and size of a file, streamed.
pub(super) fn hash_file(path: &Path) -> Result<(String, u64), BackupError> {
    use sha2::Digest;
    let mut f = File::open(path).map_err(BackupError::io(path, "read"))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(BackupError::io(path, "read"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((super::hex(&hasher.finalize()), size))
}

fn header(size: u64, mode: u32, mtime: i64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(u64::try_from(mtime).unwrap_or(0));
    h
}

/// This host's name, as the kernel has it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
