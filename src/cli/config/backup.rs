//! `ductile config backup|restore`: the config-only form of `system
//! backup|restore`, the same core and the same archive format (scope
//! `config`); a restore puts back only the config directory.

use crate::backup::Scope;
use crate::backup::restore::Selection;
use crate::cli::system::backup as archive;
use crate::cli::{Args, CliError};

/// `ductile config backup --to F.tar.gz`.
pub fn backup(args: &Args) -> Result<(), CliError> {
    archive::run_backup(args, Scope::Config)
}

/// `ductile config restore --from F [--to DIR] [--dry-run]`.
pub fn restore(args: &Args) -> Result<(), CliError> {
    archive::run_restore(args, Selection::ConfigOnly)
}
