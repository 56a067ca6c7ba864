//! The `.checksums` file: its YAML shape, how keys are written and read back,
//! the current state of a config (what a lock would write now), and the atomic
//! write.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::IntegrityError;
use crate::config::Config;
use crate::plugin::discovery;

/// The seal format this version writes.
const VERSION: u32 = 1;

/// The largest seal read; a real one is a few KiB.
const SEAL_LIMIT: u64 = 4 * 1024 * 1024;

/// `.checksums` as written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct Seal {
    /// Format version.
    pub(super) version: u32,
    /// When `config lock` wrote it (RFC 3339, UTC).
    pub(super) generated_at: String,
    /// File key → `blake3:<hex>`. Keys are relative to the config directory
    /// (absolute for files outside it); absolute keys inside it are read too.
    #[serde(default)]
    pub(super) files: BTreeMap<String, String>,
    /// Plugin (manifest name) → fingerprint; absent in a seal written before
    /// any plugin was configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) plugin_fingerprints: Option<BTreeMap<String, Fingerprint>>,
}

/// What identifies a plugin's code: where it is and the bytes that run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct Fingerprint {
    /// The plugin directory as configured (relative to the config directory where inside it).
    #[serde(default)]
    pub(super) dir: String,
    /// The plugin directory with symlinks resolved, absolute.
    #[serde(default)]
    pub(super) resolved_dir: String,
    /// `blake3:<hex>` of `manifest.yaml`.
    pub(super) manifest: String,
    /// `blake3:<hex>` of the entrypoint's bytes; for a container plugin,
    /// `image:<local image ID>` (see `plugin::container::fingerprint`).
    pub(super) entrypoint: String,
}

/// The state of a config now: what [`super::lock`] seals and what the seal is
/// compared with.
#[derive(Debug, Clone, Default)]
pub(super) struct Current {
    /// File key → hash, for every file the config is made of.
    pub(super) files: BTreeMap<String, String>,
    /// File key → absolute path, for messages.
    pub(super) paths: BTreeMap<String, PathBuf>,
    /// Configured plugins that were found, by manifest name.
    pub(super) plugins: BTreeMap<String, Fingerprint>,
    /// Manifest names some enabled instance runs.
    pub(super) enabled: BTreeSet<String>,
    /// Manifest names some instance (enabled or not) runs.
    pub(super) configured: BTreeSet<String>,
}

impl Current {
    /// The seal that records this state.
    pub(super) fn into_seal(self, now: chrono::DateTime<chrono::Utc>) -> Seal {
        Seal {
            version: VERSION,
            generated_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            files: self.files,
            plugin_fingerprints: if self.configured.is_empty() {
                None
            } else {
                Some(self.plugins)
            },
        }
    }
}

/// `blake3:<hex>` of `bytes`.
pub(super) fn hash(bytes: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(bytes).to_hex())
}

/// The key of `path` in a seal for a config in `dir`: relative with `/`
/// separators when inside `dir`, so a moved or restored directory still
/// verifies; absolute otherwise.
pub(super) fn key(dir: &Path, path: &Path) -> String {
    match path.strip_prefix(dir) {
        Ok(rel) => rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/"),
        Err(_) => path.display().to_string(),
    }
}

/// A key as read from a seal: an absolute key inside `dir` (what a seal keyed
/// by absolute paths holds) becomes relative.
pub(super) fn normalise(dir: &Path, written: &str) -> String {
    let path = Path::new(written);
    if path.is_absolute() {
        key(dir, path)
    } else {
        written.to_string()
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, IntegrityError> {
    fs::read(path).map_err(|source| IntegrityError::Read {
        file: path.to_path_buf(),
        source,
    })
}

/// Everything `config` is made of, hashed now.
pub(super) fn current(config: &Config) -> Result<Current, IntegrityError> {
    let dir = &config.dir;
    let mut state = Current::default();
    for file in &config.files {
        let k = key(dir, &file.path);
        state.files.insert(k.clone(), file.hash.clone());
        state.paths.insert(k, file.path.clone());
    }
    // Scope files no token names yet are high-security all the same: a token
    // added later would pick up whatever they hold.
    if let Ok(entries) = fs::read_dir(dir.join("scopes")) {
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
            .collect();
        found.sort();
        for path in found {
            let k = key(dir, &path);
            if !state.files.contains_key(&k) {
                state.files.insert(k.clone(), hash(&read_bytes(&path)?));
                state.paths.insert(k, path);
            }
        }
    }
    for (name, conf) in &config.plugins {
        let base = conf.uses.clone().unwrap_or_else(|| name.clone());
        if conf.enabled {
            state.enabled.insert(base.clone());
        }
        state.configured.insert(base);
    }
    let scan = discovery::scan_for(
        &config.plugin_roots,
        config.service.allow_symlinks,
        &state.configured,
        &BTreeSet::new(),
    );
    for found in scan.found {
        let name = found.manifest.name.clone();
        if !state.configured.contains(&name) || state.plugins.contains_key(&name) {
            continue;
        }
        let manifest = hash(&read_bytes(&discovery::manifest_path(&found.dir))?);
        // A container plugin's code is its image: pin the ID it resolves to.
        let entrypoint = match &found.manifest.container {
            Some(c) => {
                crate::plugin::container::fingerprint(c, config.service.container_engine.as_deref())
            }
            None => hash(&read_bytes(&found.entrypoint)?),
        };
        let resolved = fs::canonicalize(&found.dir).unwrap_or_else(|_| found.dir.clone());
        state.plugins.insert(
            name,
            Fingerprint {
                dir: key(dir, &found.dir),
                resolved_dir: resolved.display().to_string(),
                manifest,
                entrypoint,
            },
        );
    }
    Ok(state)
}

/// Reads the seal at `path`; `Ok(None)` when there is none.
pub(super) fn read(path: &Path) -> Result<Option<Seal>, IntegrityError> {
    let malformed = |message: String| IntegrityError::Malformed {
        file: path.to_path_buf(),
        message,
    };
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(IntegrityError::Read {
                file: path.to_path_buf(),
                source,
            });
        }
    };
    if !meta.is_file() {
        return Err(malformed("not a regular file".into()));
    }
    if meta.len() > SEAL_LIMIT {
        return Err(malformed(format!(
            "larger than {} MiB, the limit for a seal",
            SEAL_LIMIT / (1024 * 1024)
        )));
    }
    let text =
        String::from_utf8(read_bytes(path)?).map_err(|_| malformed("not valid UTF-8".into()))?;
    let seal: Seal =
        serde_yaml::from_str(&text).map_err(|e| malformed(format!("not a valid seal: {e}")))?;
    if seal.version == 0 || seal.version > VERSION {
        return Err(malformed(format!(
            "seal version {} is not one this ductile reads (1..={VERSION})",
            seal.version
        )));
    }
    Ok(Some(seal))
}

/// Writes `seal` to `path` atomically: a private temporary file beside it,
/// synced, renamed over the old seal, and the directory synced, so a crash
/// leaves the old seal or the new one, never half of one.
pub(super) fn write(path: &Path, seal: &Seal) -> Result<(), IntegrityError> {
    let failed = |source: std::io::Error| IntegrityError::Write {
        file: path.to_path_buf(),
        source,
    };
    let text =
        serde_yaml::to_string(seal).map_err(|e| failed(std::io::Error::other(e.to_string())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".checksums.tmp-{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        // A leftover of a lock killed midway under a reused pid.
        let _ = fs::remove_file(&tmp);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(b"# Written by `ductile config lock`; do not edit by hand.\n")?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_relative_inside_the_dir_and_absolute_outside() {
        let dir = Path::new("/etc/ductile");
        assert_eq!(
            key(dir, Path::new("/etc/ductile/config.yaml")),
            "config.yaml"
        );
        assert_eq!(
            key(dir, Path::new("/etc/ductile/scopes/a.json")),
            "scopes/a.json"
        );
        assert_eq!(key(dir, Path::new("/srv/x.yaml")), "/srv/x.yaml");
    }

    #[test]
    fn absolute_keys_inside_the_dir_read_as_relative() {
        let dir = Path::new("/etc/ductile");
        assert_eq!(normalise(dir, "/etc/ductile/tokens.yaml"), "tokens.yaml");
        assert_eq!(normalise(dir, "tokens.yaml"), "tokens.yaml");
        assert_eq!(normalise(dir, "/srv/x.yaml"), "/srv/x.yaml");
    }

    #[test]
    fn a_seal_round_trips_through_yaml() {
        let mut files = BTreeMap::new();
        files.insert("config.yaml".to_string(), hash(b"x"));
        let seal = Seal {
            version: 1,
            generated_at: "2026-01-01T00:00:00Z".into(),
            files,
            plugin_fingerprints: Some(BTreeMap::new()),
        };
        let text = serde_yaml::to_string(&seal).unwrap_or_default();
        let back: Seal = serde_yaml::from_str(&text).unwrap_or_else(|_| seal.clone());
        assert_eq!(back, seal);
        assert!(text.contains("plugin_fingerprints"));
    }
}
