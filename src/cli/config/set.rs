//! `ductile config set <path>=<value> [--dry-run|--apply]`, and the one way
//! every config-editing verb finishes: print the diff, or write it through the
//! atomic write, revalidate, re-seal path and say what was done.

use serde_json::json;

use crate::cli::{Args, CliError, output};
use crate::config::edit::{self, commit, redact};

/// `ductile config set <path>=<value>`: previews the change unless `--apply`.
pub fn set(args: &Args, assignment: &str) -> Result<(), CliError> {
    let Some((key, value)) = assignment.split_once('=') else {
        return Err(CliError::Usage(format!(
            "`{assignment}` is not `<path>=<value>`; usage: ductile config set <path>=<value> [--dry-run|--apply]"
        )));
    };
    let apply = args.flag("apply").is_some();
    if apply && args.dry_run {
        return Err(CliError::Usage(
            "`--apply` and `--dry-run` contradict each other; give one".into(),
        ));
    }
    let path = edit::path::parse(key).map_err(CliError::Usage)?;
    let root = crate::cli::config_root(args)?;
    let mut tree = edit::Tree::read(&root)?;
    tree.set(&path, &edit::parse_value(value))?;
    let summary = format!("set `{path}`");
    finish(args, &tree, tree.changes(), &summary, !apply, None)
}

/// Prints the diff of `changes` (`preview`), or writes them and reports.
pub(super) fn finish(
    args: &Args,
    tree: &edit::Tree,
    changes: Vec<commit::Change>,
    summary: &str,
    preview: bool,
    shown_once: Option<(serde_json::Value, String)>,
) -> Result<(), CliError> {
    let known = crate::runtime::Runtime::load(&tree.root)
        .map(|rt| redact::known_secrets(&rt.config))
        .unwrap_or_default();
    let diff = commit::diff(&changes, &tree.dir, &known);
    let files: Vec<String> = changes
        .iter()
        .map(|c| {
            c.path
                .strip_prefix(&tree.dir)
                .unwrap_or(&c.path)
                .display()
                .to_string()
        })
        .collect();
    if changes.is_empty() {
        report(
            args,
            summary,
            &diff,
            &files,
            None,
            "nothing to change",
            None,
        );
        return Ok(());
    }
    if preview {
        let note = if args.dry_run {
            "dry run: nothing written"
        } else {
            "preview: nothing written; add --apply to write it"
        };
        report(args, summary, &diff, &files, None, note, None);
        return Ok(());
    }
    let written = commit::write(&tree.root, &changes)?;
    let note = if written.resealed {
        "written; the config was sealed, so .checksums was re-sealed (config lock); `ductile system reload` applies it to a running daemon"
    } else {
        "written; `ductile system reload` applies it to a running daemon"
    };
    report(
        args,
        summary,
        &diff,
        &files,
        Some(&written),
        note,
        shown_once,
    );
    Ok(())
}

fn report(
    args: &Args,
    summary: &str,
    diff: &str,
    files: &[String],
    w: Option<&commit::Written>,
    note: &str,
    shown_once: Option<(serde_json::Value, String)>,
) {
    let written = w.is_some();
    let backups: Vec<String> = w
        .map(|w| w.backups.iter().map(|b| b.display().to_string()).collect())
        .unwrap_or_default();
    let resealed = w.is_some_and(|w| w.resealed);
    if args.json {
        let mut doc = json!({
            "action": summary,
            "written": written,
            "dry_run": !written,
            "files": files,
            "diff": diff,
            "backups": backups,
            "resealed": resealed,
        });
        if let (Some((extra, _)), Some(m)) = (&shown_once, doc.as_object_mut()) {
            m.insert("created".into(), extra.clone());
        }
        output::json(&doc);
    } else {
        let extra = shown_once.map(|(_, t)| t).unwrap_or_default();
        output::text(&format!("{diff}{summary}: {note}\n{extra}"));
    }
}
