//! `BACKUP_MANIFEST.txt`: what an archive holds and where each part came
//! from, as YAML under a comment header, so `tar -xzOf F BACKUP_MANIFEST.txt`
//! is readable by a person and parsed back exactly by `restore`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The manifest format this version writes and reads.
pub const FORMAT: u32 = 1;

/// The largest manifest a restore reads (a manifest of a very large plugin
/// tree stays far below it; anything bigger is not ours).
pub const MAX_BYTES: u64 = 16 * 1024 * 1024;

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The ductile version that wrote the archive.
    pub ductile_version: String,
    /// Its commit, or `unknown` for a build without one.
    pub commit: String,
    /// The host it ran on.
    pub hostname: String,
    /// When the snapshot was taken (RFC 3339, UTC).
    pub created_at: String,
    /// `db`, `config`, `plugins` or `all`.
    pub scope: String,
    /// The config file the backup read.
    pub config: PathBuf,
    /// Each archived tree or file and the path it was read from.
    pub roots: Vec<Root>,
    /// The ledger snapshot.
    pub database: Database,
    /// Every file in the archive except this manifest, in archive order.
    pub files: Vec<Entry>,
    /// What was left out, with why.
    pub excluded: Vec<Excluded>,
    /// Things the operator should know about the archive (secrets in it).
    pub warnings: Vec<String>,
}

/// One source the archive holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    /// Its path inside the archive (`config`, `plugins/0`, `db/ductile.db`).
    pub archive: String,
    /// A directory tree or a single file.
    pub kind: RootKind,
    /// Where it was read from (absolute); a restore without `--to` puts it back there.
    pub source: PathBuf,
}

/// The shape of a [`Root`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootKind {
    /// A directory: entries are `<archive>/<relative path>`.
    Dir,
    /// One file: the entry is `<archive>` itself.
    File,
}

/// The ledger snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// Its entry in the archive.
    pub archive: String,
    /// The ledger it was taken from.
    pub source: PathBuf,
    /// sha256 of the snapshot file as archived.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Rows per table in the snapshot.
    pub tables: BTreeMap<String, i64>,
}

/// One archived file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Its path inside the archive.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of its bytes.
    pub sha256: String,
    /// Permission bits, octal (`0755`).
    pub mode: String,
}

/// One file or directory left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Excluded {
    /// Where it is on disk.
    pub path: PathBuf,
    /// Why it is not in the archive.
    pub reason: String,
}

impl Manifest {
    /// The manifest's text as archived.
    pub fn render(&self) -> Result<String, serde_yaml::Error> {
        let body = serde_yaml::to_string(self)?;
        Ok(format!(
            "# ductile backup manifest (format {FORMAT}).\n# Every file below is in this archive with its size and sha256;\n# `ductile system restore --from ARCHIVE --dry-run` verifies all of it.\n{body}"
        ))
    }

    /// Parses a manifest; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let m: Manifest =
            serde_yaml::from_str(text).map_err(|e| format!("its manifest is not valid: {e}"))?;
        if m.format != FORMAT {
            return Err(format!(
                "its manifest has format {}, and this ductile reads format {FORMAT}",
                m.format
            ));
        }
        Ok(m)
    }

    /// The entry for archive path `path`.
    pub fn entry(&self, path: &str) -> Option<&Entry> {
        self.files.iter().find(|e| e.path == path)
    }

    /// The root an archive path belongs to.
    pub fn root_of(&self, path: &str) -> Option<&Root> {
        self.roots.iter().find(|r| match r.kind {
            RootKind::File => r.archive == path,
            RootKind::Dir => path
                .strip_prefix(r.archive.as_str())
                .is_some_and(|rest| rest.starts_with('/')),
        })
    }
}

/// `0755` for mode bits.
pub fn mode_text(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// The mode bits of `0755`.
pub fn parse_mode(text: &str) -> Option<u32> {
    u32::from_str_radix(text, 8).ok().filter(|m| *m <= 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: FORMAT,
            ductile_version: "0.1.0".into(),
            commit: "unknown".into(),
            hostname: "h".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            scope: "config".into(),
            config: PathBuf::from("/etc/ductile/config.yaml"),
            roots: vec![
                Root {
                    archive: "db/ductile.db".into(),
                    kind: RootKind::File,
                    source: PathBuf::from("/var/lib/ductile/ductile.db"),
                },
                Root {
                    archive: "config".into(),
                    kind: RootKind::Dir,
                    source: PathBuf::from("/etc/ductile"),
                },
            ],
            database: Database {
                archive: "db/ductile.db".into(),
                source: PathBuf::from("/var/lib/ductile/ductile.db"),
                sha256: "00".into(),
                size: 1,
                tables: BTreeMap::from([("job_queue".to_string(), 3)]),
            },
            files: vec![Entry {
                path: "config/config.yaml".into(),
                size: 2,
                sha256: "ab".into(),
                mode: "0600".into(),
            }],
            excluded: vec![Excluded {
                path: PathBuf::from("/etc/ductile/.git"),
                reason: "version-control metadata".into(),
            }],
            warnings: vec![],
        }
    }

    #[test]
    fn a_rendered_manifest_parses_back_identically() {
        let m = sample();
        let text = m.render().unwrap();
        assert!(text.starts_with("# ductile backup manifest (format 1)."));
        assert_eq!(Manifest::parse(&text).unwrap(), m);
    }

    #[test]
    fn another_format_and_unknown_keys_are_refused() {
        let text = sample().render().unwrap();
        let err = Manifest::parse(&text.replace("format: 1", "format: 2")).unwrap_err();
        assert_eq!(
            err,
            "its manifest has format 2, and this ductile reads format 1"
        );
        let err = Manifest::parse(&format!("{text}surprise: 1\n")).unwrap_err();
        assert!(
            err.starts_with("its manifest is not valid: unknown field `surprise`"),
            "{err}"
        );
    }

    #[test]
    fn archive_paths_find_their_root() {
        let m = sample();
        assert_eq!(m.root_of("config/a/b.yaml").unwrap().archive, "config");
        assert_eq!(m.root_of("db/ductile.db").unwrap().archive, "db/ductile.db");
        assert!(m.root_of("configx/a").is_none());
        assert!(m.root_of("config").is_none());
        assert_eq!(mode_text(0o100755), "0755");
        assert_eq!(parse_mode("0755"), Some(0o755));
        assert_eq!(parse_mode("9"), None);
    }
}
