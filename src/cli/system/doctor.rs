//! `ductile system selfcheck|doctor|skills` (and `ductile skills`): render
//! what [`crate::doctor`] and [`crate::skills`] found; the same checks answer
//! `GET /system/selfcheck|doctor`.

use crate::cli::{Args, CliError, output};
use crate::clock::{Clock, SystemClock};
use crate::doctor::{Ledger, Report};
use crate::runtime::Runtime;

/// `ductile system selfcheck [--json]`: exit 0 healthy, 1 when a check failed.
pub fn selfcheck(args: &Args) -> Result<(), CliError> {
    let report = crate::doctor::selfcheck(args.config.as_deref(), SystemClock.now());
    render(args, &report)
}

/// `ductile system doctor [--probe] [--json]`: exit 0 healthy, 1 when a check failed,
/// 78 when the config does not load.
pub fn doctor(args: &Args) -> Result<(), CliError> {
    let root = crate::cli::config_root(args)?;
    let rt = Runtime::load(&root)?;
    let db = &rt.config.state.path;
    // A read connection is safe beside a running daemon (WAL readers never
    // block the writer); an unreadable ledger is reported, not fatal.
    let conn = db.exists().then(|| Ledger::open(db));
    let ledger = match &conn {
        None => Ledger::Missing,
        Some(Ok(conn)) => Ledger::Open(conn),
        Some(Err(why)) => Ledger::Unreadable(why.clone()),
    };
    let mut report = crate::doctor::doctor(&rt, ledger, SystemClock.now());
    if args.flag("probe").is_some() {
        report.checks.extend(crate::doctor::relay_probes(&rt));
    }
    render(args, &report)
}

/// `ductile system skills` / `ductile skills`: the Markdown capability manifest.
pub fn skills(args: &Args) -> Result<(), CliError> {
    let root = crate::cli::config_root(args)?;
    let rt = Runtime::load(&root)?;
    let text = crate::skills::markdown(&rt);
    if args.json {
        output::json(&serde_json::json!({ "format": "markdown", "skills": text }));
    } else {
        output::text(&text);
    }
    Ok(())
}

fn render(args: &Args, report: &Report) -> Result<(), CliError> {
    if args.json {
        output::json(&report.to_json());
    } else {
        output::text(&report.to_text());
    }
    if report.healthy() {
        Ok(())
    } else {
        Err(CliError::Exit(1))
    }
}
