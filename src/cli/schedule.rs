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
use crate::scheduler::preview;
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
    format!("{}:{}", s.plugin, s.id)
}

/// Resolves `<plugin>[:<id>]` to one compiled schedule; an unknown name fails
/// (exit 1) with the closest known names.
pub(super) fn resolve<'r>(rt: &'r Runtime, target: &str) -> Result<&'r Schedule, CliError> {
    let names: Vec<String> = rt.schedules.iter().map(name).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (plugin, id) = match target.split_once(':') {
        Some((p, i)) => (p, Some(i)),
        None => (target, None),
    };
    let of_plugin: Vec<&Schedule> = rt.schedules.iter().filter(|s| s.plugin == plugin).collect();
    let found = match id {
        Some(id) => of_plugin.iter().find(|s| s.id == id).copied(),
        None if of_plugin.len() == 1 => Some(of_plugin[0]),
        None => of_plugin.iter().find(|s| s.id == "default").copied(),
    };
    if let Some(s) = found {
        return Ok(s);
    }
    if id.is_none() && of_plugin.len() > 1 {
        let ids: Vec<String> = of_plugin.iter().map(|s| name(s)).collect();
        return Err(CliError::Failed(format!(
            "plugin `{plugin}` has {} schedules; name one: {}",
            ids.len(),
            ids.join(", ")
        )));
    }
    let mut ranked: Vec<(usize, &str)> = refs
        .iter()
        .map(|n| {
            // A bare plugin name is compared with the plugin part.
            let candidate = if id.is_some() {
                *n
            } else {
                n.split(':').next().unwrap_or(n)
            };
            (crate::suggest::edit_distance(target, candidate), *n)
        })
        .collect();
    ranked.sort();
    let closest: Vec<&str> = ranked.iter().take(3).map(|(_, n)| *n).collect();
    let tail = if closest.is_empty() {
        "; no schedules are configured".to_string()
    } else {
        format!("; closest: {}", closest.join(", "))
    };
    Err(CliError::Failed(format!(
        "unknown schedule `{target}`{tail}"
    )))
}

fn window_text(s: &Schedule) -> Option<String> {
    s.window.as_ref().map(|w| w.to_string())
}

fn not_on_text(s: &Schedule) -> Vec<&'static str> {
    const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    (0..7).filter(|d| s.not_on[*d]).map(|d| DAYS[d]).collect()
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
            json!({
                "plugin": s.plugin,
                "schedule": s.id,
                "command": s.command,
                "trigger": s.trigger.to_string(),
                "timezone": s.tz.name(),
                "only_between": window_text(s),
                "not_on": not_on_text(s),
                "jitter": (!s.jitter.is_zero()).then(|| duration::format(s.jitter)),
                "catch_up": s.catch_up.as_str(),
                "if_running": s.if_running.as_str(),
                "status": e.map_or("not armed", |e| e.status.as_str()),
                "reason": e.and_then(|e| e.reason.clone()),
                "next_run_at": e.and_then(|e| e.next_run_at.clone()),
                "last_fired_at": e.and_then(|e| e.last_fired_at.clone()),
                "last_success_at": e.and_then(|e| e.last_success_at.clone()),
            })
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
            "only_between": window_text(s),
            "not_on": not_on_text(s),
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
    let status = current.as_ref().map(|e| e.status.as_str());
    if status == Some("exhausted") {
        return Err(CliError::Failed(format!(
            "schedule `{shown}` is an exhausted one-shot; there is nothing to pause"
        )));
    }
    if status == Some("paused_manual") {
        return done(args, &shown, "paused_manual", false, "is already paused");
    }
    if args.dry_run {
        output::text(&format!("dry run: would pause schedule `{shown}`"));
        return Ok(());
    }
    let reason = format!("paused by `ductile schedule pause` at {}", format_ts(now));
    let conn = store::open(&rt.config.state.path, rt.config.state.synchronous)?;
    let next = current
        .as_ref()
        .and_then(|e| e.next_run_at.as_deref().and_then(parse_ts));
    if current.is_some() {
        schedules::set_status(
            &conn,
            &s.plugin,
            &s.id,
            "paused_manual",
            Some(&reason),
            next,
            now,
        )?;
    } else {
        // Never armed (no daemon has run it yet): arm it paused, so the first
        // start keeps the pause and moves the entry along without firing.
        schedules::upsert(
            &conn,
            &s.plugin,
            &s.id,
            &s.command,
            &s.fingerprint,
            "paused_manual",
            Some(&reason),
            s.first_due(now, now),
            now,
        )?;
    }
    done(args, &shown, "paused_manual", true, "paused")
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
    let Some(entry) = current.filter(|e| e.status == "paused_manual") else {
        return done(args, &shown, "active", false, "is not paused");
    };
    if args.dry_run {
        output::text(&format!("dry run: would resume schedule `{shown}`"));
        return Ok(());
    }
    let stored = entry.next_run_at.as_deref().and_then(parse_ts);
    let next = if s.is_one_shot() {
        // A one-shot held by the pause runs once, now.
        stored
    } else {
        match stored {
            Some(t) if t > now => Some(t),
            _ => s.next_after(now, now),
        }
    };
    let conn = store::open(&rt.config.state.path, rt.config.state.synchronous)?;
    schedules::set_status(&conn, &s.plugin, &s.id, "active", None, next, now)?;
    done(args, &shown, "active", true, "resumed")
}

fn done(args: &Args, shown: &str, status: &str, changed: bool, what: &str) -> Result<(), CliError> {
    if args.json {
        output::json(&json!({"schedule": shown, "status": status, "changed": changed}));
    } else {
        output::text(&format!("schedule `{shown}` {what}"));
    }
    Ok(())
}
