//! `ductile system backup|restore`: the archive verbs over [`crate::backup`];
//! `config backup|restore` are the same verbs at scope `config`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::backup::restore::{self, Selection};
use crate::backup::{self, BackupError, Scope, create};
use crate::cli::{Args, CliError, output};

impl From<BackupError> for CliError {
    fn from(e: BackupError) -> CliError {
        match e {
            BackupError::Store(s) => s.into(),
            other => CliError::Failed(other.to_string()),
        }
    }
}

/// `ductile system backup --to F.tar.gz [--scope db|config|plugins|all]`.
pub fn backup(args: &Args) -> Result<(), CliError> {
    let scope = match args.flag("scope") {
        None => Scope::Config,
        Some(s) => Scope::parse(s).ok_or_else(|| {
            CliError::Usage(format!(
                "unknown scope `{s}`; use one of {}",
                Scope::NAMES.join(", ")
            ))
        })?,
    };
    run_backup(args, scope)
}

/// A backup at `scope` (`config backup` passes `Scope::Config`).
pub(crate) fn run_backup(args: &Args, scope: Scope) -> Result<(), CliError> {
    let to = required(args, "to", "F.tar.gz")?;
    let root = crate::cli::config_root(args)?;
    let loaded = crate::config::load(&root)?;
    let plan = create::plan(&loaded.config, scope)?;
    if std::fs::symlink_metadata(&to).is_ok() {
        return Err(BackupError::Exists { path: to }.into());
    }
    if args.json && args.dry_run {
        let files: Vec<Value> =
            std::iter::once(json!({"path": plan.db_archive, "source": plan.db}))
                .chain(
                    plan.files
                        .iter()
                        .map(|(src, a)| json!({"path": a, "source": src})),
                )
                .collect();
        output::json(&json!({
            "dry_run": true, "archive": to, "scope": scope.as_str(), "included": files,
            "excluded": plan.excluded, "warnings": plan.warnings,
        }));
        return Ok(());
    }
    if !args.json {
        // The list comes first, so an operator sees what a long backup takes
        // before it starts.
        let mut out = format!(
            "{} {} (scope {}) with {} file(s):\n",
            if args.dry_run {
                "dry run: would write"
            } else {
                "writing"
            },
            to.display(),
            scope.as_str(),
            plan.files.len() + 1
        );
        out.push_str(&format!(
            "  INCLUDED {} (VACUUM INTO snapshot of {})\n",
            plan.db_archive,
            plan.db.display()
        ));
        for (src, a) in &plan.files {
            out.push_str(&format!("  INCLUDED {a} ({})\n", src.display()));
        }
        push_excluded(&mut out, &plan.excluded, &plan.warnings);
        if args.dry_run {
            out.push_str("nothing was written\n");
        }
        output::text(out.trim_end());
        if args.dry_run {
            return Ok(());
        }
    }
    let m = create::create(&plan, &root, &to)?;
    let bytes: u64 = m.files.iter().map(|e| e.size).sum();
    if args.json {
        output::json(&json!({
            "archive": to, "scope": m.scope, "files": m.files.len(), "bytes": bytes,
            "database": {"path": m.database.archive, "source": m.database.source, "sha256": m.database.sha256, "tables": m.database.tables},
            "excluded": m.excluded, "warnings": m.warnings, "manifest": backup::MANIFEST_NAME,
        }));
    } else {
        let late: Vec<String> = m
            .excluded
            .iter()
            .skip(plan.excluded.len())
            .map(|x| format!("\n  EXCLUDED {} ({})", x.path.display(), x.reason))
            .collect();
        output::text(&format!(
            "wrote {} (scope {}): {} file(s), {bytes} bytes; ledger snapshot sha256 {}{}\nverify it with `ductile system restore --from {} --dry-run`",
            to.display(),
            m.scope,
            m.files.len(),
            m.database.sha256,
            late.concat(),
            to.display()
        ));
    }
    Ok(())
}

fn push_excluded(out: &mut String, excluded: &[backup::manifest::Excluded], warnings: &[String]) {
    for x in excluded {
        out.push_str(&format!("  EXCLUDED {} ({})\n", x.path.display(), x.reason));
    }
    for w in warnings {
        out.push_str(&format!("  warning: {w}\n"));
    }
}

/// `ductile system restore --from F [--to DIR] [--dry-run]`.
pub fn restore(args: &Args) -> Result<(), CliError> {
    run_restore(args, Selection::Everything)
}

/// A restore of `selection` (`config restore` passes `ConfigOnly`).
pub(crate) fn run_restore(args: &Args, selection: Selection) -> Result<(), CliError> {
    let from = required(args, "from", "F.tar.gz")?;
    let to = args.flag("to").map(PathBuf::from);
    let outcome = restore::restore(&restore::Request {
        archive: &from,
        to: to.as_deref(),
        selection,
        dry_run: args.dry_run,
    })?;
    let m = &outcome.manifest;
    if args.json {
        output::json(&json!({
            "dry_run": args.dry_run,
            "restored": !args.dry_run,
            "archive": from,
            "scope": m.scope,
            "created_at": m.created_at,
            "hostname": m.hostname,
            "database": outcome.database,
            "verified": {"files": m.files.len(), "database_sha256": m.database.sha256, "tables": m.database.tables},
            "files": outcome.placed.iter().map(|p| json!({"path": p.path, "previous": p.previous})).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let verb = if args.dry_run {
        "would restore"
    } else {
        "restored"
    };
    let mut out = format!(
        "{}: verified {} file(s) against the manifest (scope {}, taken {} on {}), {}\n{verb} {} file(s):\n",
        from.display(),
        m.files.len(),
        m.scope,
        m.created_at,
        m.hostname,
        if outcome.database.is_some() {
            "ledger sha256, integrity_check and row counts ok"
        } else {
            "ledger sha256 ok"
        },
        outcome.placed.len()
    );
    for p in &outcome.placed {
        match &p.previous {
            Some(prev) => out.push_str(&format!(
                "  {} (old file {} {})\n",
                p.path.display(),
                if args.dry_run {
                    "would be kept as"
                } else {
                    "kept as"
                },
                prev.display()
            )),
            None => out.push_str(&format!("  {} (new)\n", p.path.display())),
        }
    }
    if args.dry_run {
        out.push_str("nothing was changed\n");
    }
    output::text(&out);
    Ok(())
}

fn required(args: &Args, flag: &str, what: &str) -> Result<PathBuf, CliError> {
    match args.flag(flag) {
        Some(v) if !v.is_empty() => Ok(Path::new(v).to_path_buf()),
        _ => Err(CliError::Usage(format!("`--{flag} {what}` is required"))),
    }
}
