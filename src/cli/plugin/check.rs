//! `ductile plugin check <dir>`: the conformance checker's report, as text or
//! JSON; exit 0 when nothing is an error, 1 otherwise.

use std::path::Path;

use crate::cli::{Args, CliError, output};
use crate::plugin::check::{self, Options, Severity};

/// `ductile plugin check <dir> [--timeout D] [--json]`; without `--timeout`
/// each command gets the core's default timeout for it.
pub fn check(args: &Args, dir: &str) -> Result<(), CliError> {
    let path = Path::new(dir);
    if !path.is_dir() {
        return Err(CliError::Failed(format!(
            "{dir} is not a directory (give the plugin's directory, the one holding manifest.yaml)"
        )));
    }
    let mut opts = Options::default();
    if let Some(t) = args.flag("timeout") {
        opts.timeout = Some(
            crate::config::duration::parse(t)
                .map_err(|e| CliError::Usage(format!("--timeout {t}: {e}")))?,
        );
    }
    let report = check::check(path, &opts);
    if args.json {
        output::json(&report.to_json());
    } else {
        let mut out = format!(
            "plugin check: {} ({})\n",
            report.plugin.as_deref().unwrap_or("?"),
            report.dir.display()
        );
        for p in &report.probes {
            out.push_str(&format!(
                "  ran {:<24} {:>5} ms  {:<18} {}\n",
                p.command, p.millis, p.purpose, p.outcome
            ));
        }
        for f in &report.findings {
            let on = f
                .command
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            out.push_str(&format!(
                "{} [{}]{on}: {}\n  fix: {}\n",
                f.severity.as_str(),
                f.rule,
                f.message,
                f.hint
            ));
        }
        out.push_str(&format!(
            "{}: {} error(s), {} warning(s)\n",
            if report.passed() { "ok" } else { "failed" },
            report.count(Severity::Error),
            report.count(Severity::Warning)
        ));
        output::text(&out);
    }
    if report.passed() {
        Ok(())
    } else {
        Err(CliError::Exit(1))
    }
}
