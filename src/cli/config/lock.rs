//! `ductile config lock [--dry-run]`: authorise the config as it is now by
//! writing its seal (`.checksums`); the only writer of that file.

use serde_json::json;

use crate::cli::{Args, CliError, output};
use crate::config::integrity::{self, IntegrityError};

impl From<IntegrityError> for CliError {
    fn from(e: IntegrityError) -> CliError {
        if e.is_config() {
            CliError::Config(e.to_string())
        } else {
            CliError::Failed(e.to_string())
        }
    }
}

/// `ductile config lock`: seals every config file and configured plugin;
/// `--dry-run` lists what would be sealed and writes nothing.
pub fn lock(args: &Args) -> Result<(), CliError> {
    let root = crate::cli::config_root(args)?;
    let report = integrity::lock(&root, args.dry_run)?;
    if args.json {
        output::json(&json!({
            "path": report.path,
            "dry_run": args.dry_run,
            "files": report.files,
            "plugins": report.plugins,
        }));
        return Ok(());
    }
    let mut out = String::new();
    for f in &report.files {
        out.push_str(&format!("file    {f}\n"));
    }
    for p in &report.plugins {
        out.push_str(&format!("plugin  {p}\n"));
    }
    out.push_str(&format!(
        "{} {}: {} file(s), {} plugin(s)\n",
        if args.dry_run {
            "would write"
        } else {
            "sealed"
        },
        report.path.display(),
        report.files.len(),
        report.plugins.len()
    ));
    output::text(&out);
    Ok(())
}
