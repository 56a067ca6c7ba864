//! Integrity: the `.checksums` seal of a config directory and its two tiers.
//!
//! The seal records the BLAKE3 hash of every file the config is made of
//! (`config.yaml`, its includes, the scope files) keyed by the path relative to
//! the config directory, and a fingerprint (manifest and entrypoint bytes) of
//! every configured plugin. [`lock`] is the only writer; [`verify`] compares a
//! loaded config with the seal and says, per problem, which tier it belongs to:
//! high-security files (`tokens.yaml`, `webhooks.yaml`, `scopes/*.json`) and
//! enabled plugins always refuse, operational files warn unless
//! `service.strict_mode` is set.
//!
//! Owns: the seal's format, computing the current state, the comparison and
//! the tier rules. Must not: decide how a refusal is reported (the daemon and
//! `config check` do) or touch the database.

mod seal;
mod verify;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::ConfigError;

pub use verify::{Problem, Tier, Verdict, gate, precheck, verify};

/// The seal's file name, in the config directory.
pub const SEAL_FILE: &str = ".checksums";

/// What [`lock`] sealed (or, under `dry_run`, would seal).
#[derive(Debug, Clone)]
pub struct LockReport {
    /// The seal file written (or that would be written).
    pub path: PathBuf,
    /// Sealed file keys, relative to the config directory where inside it.
    pub files: Vec<String>,
    /// Fingerprinted plugins (manifest names).
    pub plugins: Vec<String>,
}

/// Why a seal could not be computed, read or written.
#[derive(Debug)]
pub enum IntegrityError {
    /// The config does not load, so what to seal is unknown.
    Config(ConfigError),
    /// A file to hash could not be read.
    Read {
        /// The file.
        file: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The seal could not be written.
    Write {
        /// The file being written.
        file: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The seal exists but is not a seal this version reads.
    Malformed {
        /// The seal file.
        file: PathBuf,
        /// What is wrong, one line.
        message: String,
    },
}

impl IntegrityError {
    /// Whether the error is about the configuration (exit 78) rather than IO (exit 1).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            IntegrityError::Config(_) | IntegrityError::Malformed { .. }
        )
    }
}

impl fmt::Display for IntegrityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntegrityError::Config(e) => write!(f, "{e}"),
            IntegrityError::Read { file, source } => {
                write!(
                    f,
                    "{}: cannot read file to hash it: {source}",
                    file.display()
                )
            }
            IntegrityError::Write { file, source } => {
                write!(f, "{}: cannot write the seal: {source}", file.display())
            }
            IntegrityError::Malformed { file, message } => write!(
                f,
                "{}: {message}; move it aside and run `ductile config lock` after reviewing the config",
                file.display()
            ),
        }
    }
}

impl std::error::Error for IntegrityError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IntegrityError::Config(e) => Some(e),
            IntegrityError::Read { source, .. } | IntegrityError::Write { source, .. } => {
                Some(source)
            }
            IntegrityError::Malformed { .. } => None,
        }
    }
}

impl From<ConfigError> for IntegrityError {
    fn from(e: ConfigError) -> IntegrityError {
        IntegrityError::Config(e)
    }
}

/// The config directory `root` names: itself, or the directory of a root file.
fn config_dir(root: &Path) -> PathBuf {
    if root.is_file() {
        root.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        root.to_path_buf()
    }
}

/// Computes and (unless dry_run) atomically writes `<root>/.checksums` (0600).
pub fn lock(root: &std::path::Path, dry_run: bool) -> Result<LockReport, IntegrityError> {
    let loaded = crate::config::load(&crate::config::resolve_root(Some(root))?)?;
    let state = seal::current(&loaded.config)?;
    let path = loaded.config.dir.join(SEAL_FILE);
    let report = LockReport {
        path: path.clone(),
        files: state.files.keys().cloned().collect(),
        plugins: state.plugins.keys().cloned().collect(),
    };
    if !dry_run {
        seal::write(&path, &state.into_seal(chrono::Utc::now()))?;
    }
    Ok(report)
}

/// True when `<root>/.checksums` exists (the config is sealed).
pub fn is_sealed(root: &std::path::Path) -> bool {
    config_dir(root).join(SEAL_FILE).exists()
}
