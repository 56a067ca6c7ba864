//! `ductile config check [--strict]`: load the whole configuration and plugin
//! set the way the daemon would, report every finding, change nothing.

use serde_json::json;

use crate::check::{self, Severity};
use crate::cli::{Args, CliError, output};

/// `ductile config check [--json] [--strict]`: exit 0 when clean, 1 on errors
/// (and on warnings under `--strict` or `service.strict_mode`), 78 when the
/// config cannot be loaded at all.
pub fn check(args: &Args) -> Result<(), CliError> {
    let root = crate::cli::config_root(args)?;
    let strict = args.flag("strict").is_some();
    let report = match check::check(&root, strict) {
        Ok(report) => report,
        Err(check::Unloadable { kind, error: e }) => {
            if args.json {
                let finding = json!({
                    "severity": "error",
                    "kind": kind,
                    "file": e.file(),
                    "path": e.path().unwrap_or(""),
                    "line": e.line(),
                    "message": e.kind().to_string(),
                    "hint": "fix the file so it loads, then run `ductile config check` again",
                });
                output::json(&json!({
                    "ok": false,
                    "root": root,
                    "strict": strict,
                    "findings": [finding],
                    "errors": [e.to_string()],
                    "warnings": [],
                }));
                return Err(CliError::Exit(78));
            }
            return Err(e.into());
        }
    };
    let ok = report.clean();
    let lines = |severity: Severity| -> Vec<String> {
        report
            .findings
            .iter()
            .filter(|f| f.severity == severity)
            .map(ToString::to_string)
            .collect()
    };
    let (errors, warnings, infos) = (
        lines(Severity::Error),
        lines(Severity::Warning),
        lines(Severity::Info),
    );
    let rt = &report.runtime;
    let plugins: Vec<String> = rt.registry.plugins().map(|p| p.name.clone()).collect();
    let files: Vec<serde_json::Value> = rt
        .config
        .files
        .iter()
        .map(|f| json!({"path": f.path, "hash": f.hash}))
        .collect();
    if args.json {
        output::json(&json!({
            "ok": ok,
            "root": root,
            "strict": report.strict,
            "files": files,
            "plugins": plugins,
            "findings": report.findings,
            "errors": errors,
            "warnings": warnings,
            "info": infos,
        }));
    } else {
        let mut out = String::new();
        for f in &report.findings {
            let label = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
                Severity::Info => "note",
            };
            out.push_str(&format!("{label}: {f}\n  hint: {}\n", f.hint));
        }
        out.push_str(&format!(
            "config {}: {} file(s), {} plugin(s) loaded, {} error(s), {} warning(s){}\n",
            if ok { "ok" } else { "rejected" },
            files.len(),
            plugins.len(),
            errors.len(),
            warnings.len(),
            if report.strict {
                " (strict: warnings are errors)"
            } else {
                ""
            }
        ));
        output::text(&out);
    }
    if ok { Ok(()) } else { Err(CliError::Exit(1)) }
}
