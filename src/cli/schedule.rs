//! `ductile schedule list|preview|pause|resume`: schedules for humans. They
//! read the compiled config and the ledger's `schedule_entries` directly, so
//! they work with or without a running daemon; a pause written here is
//! honoured by the daemon's next look at the entry (every tick reads it).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Args, CliError, output};
use crate::clock::{Clock, SystemClock, format_ts, parse_ts};
use crate::config::duration;
use crate::runtime::Runtime;
use crate::scheduler::expr::Schedule;
use crate::scheduler::{manage, preview};
use crate::store::{self, schedules};

/// Most lines `schedule preview --next` may ask for.
const MAX_PREVIEW: usize = 1000;

fn runtime(args: &Args) -> Result<Runtime, CliError> {
    Ok(Runtime::load(&super::config_root(args)?)?)
}

/// The ledger's entries, or none when no ledger has been written yet.
fn entries(rt: &Runtime) -> Result<Vec<schedules::Entry>, CliError> {
    let path = &rt.config.state.path;
    if !path.exists() {
        return Ok(Vec::new());
    }
    let conn = store::open_read_only(path)?;
    Ok(schedules::all(&conn)?)
}

/// `plugin:id`, how every schedule verb names a schedule.
pub(super) fn name(s: &Schedule) -> String {
    manage::name(s)
}

/// Resolves `<plugin>[:<id>]` to one compiled schedule; an unknown name fails
/// (exit 1) with the closest known names.
pub(super) fn resolve<'r>(rt: &'r Runtime, target: &str) -> Result<&'r Schedule, CliError> {
    manage::resolve(&rt.schedules, target).map_err(|e| CliError::Failed(e.to_string()))
}

/// `ductile schedule list`.
pub fn list(args: &Args) -> Result<(), CliError> {
    let rt = runtime(args)?;
    let stored = entries(&rt)?;
    let rows: Vec<Value> = rt
        .schedules
        .iter()
        .map(|s| {
            let e = stored
                .iter()
                .find(|e| e.plugin == s.plugin && e.schedule_id == s.id);
            manage::describe(s, e)
        })
        .collect();
    if args.json {
        output::json(&json!({ "schedules": rows }));
        return Ok(());
    }
    if rows.is_empty() {
        output::text("no schedules configured");
        return Ok(());
    }
    let cell = |v: &Value, k: &str| v[k].as_str().unwrap_or("-").to_string();
    let mut table = vec![[
        "SCHEDULE".to_string(),
        "TRIGGER".to_string(),
        "ZONE".to_string(),
        "STATUS".to_string(),
        "NEXT RUN".to_string(),
        "LAST FIRED".to_string(),
        "LAST SUCCESS".to_string(),
    ]];
    for r in &rows {
        let mut trigger = cell(r, "trigger");
        if let Some(w) = r["only_between"].as_str() {
            trigger.push_str(&format!(" only_between {w}"));
        }
        if let Some(days) = r["not_on"].as_array().filter(|d| !d.is_empty()) {
            let days: Vec<&str> = days.iter().filter_map(Value::as_str).collect();
            trigger.push_str(&format!(" not_on {}", days.join(",")));
        }
        table.push([
            format!("{}:{}", cell(r, "plugin"), cell(r, "schedule")),
            trigger,
            cell(r, "timezone"),
            cell(r, "status"),
            cell(r, "next_run_at"),
            cell(r, "last_fired_at"),
            cell(r, "last_success_at"),
        ]);
    }
    output::text(&render(&table));
    Ok(())
}

fn render<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn from_flag(args: &Args) -> Result<DateTime<Utc>, CliError> {
    match args.flag("from") {
        None => Ok(SystemClock.now()),
        Some(t) => parse_ts(t).ok_or_else(|| {
            CliError::Usage(format!(
                "--from must be an RFC 3339 time like 2026-03-29T00:00:00Z, not `{t}`"
            ))
        }),
    }
}

fn next_flag(args: &Args) -> Result<usize, CliError> {
    match args.flag("next") {
        None => Ok(20),
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PREVIEW).contains(n))
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "--next must be a whole number from 1 to {MAX_PREVIEW}, not `{n}`"
                ))
            }),
    }
}

/// `ductile schedule preview <plugin>[:<id>] [--next N] [--from T]`.
pub fn preview(args: &Args, target: &str) -> Result<(), CliError> {
    let rt = runtime(args)?;
    let s = resolve(&rt, target)?;
    let from = from_flag(args)?;
    let n = next_flag(args)?;
    // `after:` counts from a start of the service; the preview starts it at `from`.
    let lines = preview::preview(s, from, from, n);
    if args.json {
        output::json(&json!({
            "plugin": s.plugin,
            "schedule": s.id,
            "trigger": s.trigger.to_string(),
            "timezone": s.tz.name(),
            "only_between": manage::window_text(s),
            "not_on": manage::not_on_text(s),
            "jitter": (!s.jitter.is_zero()).then(|| duration::format(s.jitter)),
            "from": format_ts(from),
            "lines": lines,
        }));
        return Ok(());
    }
    let mut out = format!(
        "{} ({}) in {}, from {}",
        name(s),
        s.trigger,
        s.tz.name(),
        format_ts(from)
    );
    if !s.jitter.is_zero() {
        out.push_str(&format!(
            "; each run moves by up to ±{} (jitter)",
            duration::format(s.jitter / 2)
        ));
    }
    out.push('\n');
    if lines.is_empty() {
        out.push_str("  never fires after this instant\n");
    }
    for l in &lines {
        let mut row = match l.excluded {
            None => format!("  {}  {}", l.local, l.at),
            Some(why) => format!(
                "  excluded  {}  {}: {}; next run {}",
                l.local,
                l.at,
                why.describe(s),
                l.resumes_at.as_deref().unwrap_or("never")
            ),
        };
        if let Some(dst) = &l.dst {
            row.push_str(&format!("  [{dst}]"));
        }
        out.push_str(&row);
        out.push('\n');
    }
    output::text(&out);
    Ok(())
}

/// `ductile schedule pause <plugin>[:<id>]`.
pub fn pause(args: &Args, target: &str) -> Result<(), CliError> {
    let rt = runtime(args)?;
    let s = resolve(&rt, target)?;
    let now = SystemClock.now();
    let shown = name(s);
    let current = entries(&rt)?
        .into_iter()
        .find(|e| e.plugin == s.plugin && e.schedule_id == s.id);
    let verdict = manage::pause_verdict(s, current.as_ref()).map_err(refused)?;
    if !verdict.changed {
        return done(args, &shown, verdict.status, false, "is already paused");
    }
    if args.dry_run {
        output::text(&format!("dry run: would pause schedule `{shown}`"));
        return Ok(());
    }
    let reason = format!("paused by `ductile schedule pause` at {}", format_ts(now));
    let mut conn = store::open(&rt.config.state.path, rt.config.state.synchronous)?;
    let verdict = manage::pause(&mut conn, s, &reason, now).map_err(refused)?;
    let what = if verdict.changed {
        "paused"
    } else {
        "is already paused"
    };
    done(args, &shown, verdict.status, verdict.changed, what)
}

fn refused(e: manage::Refused) -> CliError {
    match e {
        manage::Refused::Store(e) => e.into(),
        other => CliError::Failed(other.to_string()),
    }
}

/// `ductile schedule resume <plugin>[:<id>]`: back to active from its next
/// occurrence; the occurrences missed while paused are not made up.
pub fn resume(args: &Args, target: &str) -> Result<(), CliError> {
    let rt = runtime(args)?;
    let s = resolve(&rt, target)?;
    let now = SystemClock.now();
    let shown = name(s);
    let current = entries(&rt)?
        .into_iter()
        .find(|e| e.plugin == s.plugin && e.schedule_id == s.id);
    if !manage::resume_verdict(current.as_ref()).changed {
        return done(args, &shown, "active", false, "is not paused");
    }
    if args.dry_run {
        output::text(&format!("dry run: would resume schedule `{shown}`"));
        return Ok(());
    }
    let mut conn = store::open(&rt.config.state.path, rt.config.state.synchronous)?;
    let verdict = manage::resume(&mut conn, s, now).map_err(refused)?;
    let what = if verdict.changed {
        "resumed"
    } else {
        "is not paused"
    };
    done(args, &shown, verdict.status, verdict.changed, what)
}

fn done(args: &Args, shown: &str, status: &str, changed: bool, what: &str) -> Result<(), CliError> {
    if args.json {
        output::json(&json!({"schedule": shown, "status": status, "changed": changed}));
    } else {
        output::text(&format!("schedule `{shown}` {what}"));
    }
    Ok(())
}
