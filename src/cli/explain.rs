//! `ductile explain <plugin>[:<schedule>]` and `ductile explain job <id>`:
//! "why didn't it run?" answered in sentences from the ledger's `decisions`
//! rows (and, for a job, its transitions). Read-only; no daemon needed.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Args, CliError, output};
use crate::clock::{format_ts, parse_ts};
use crate::runtime::Runtime;
use crate::store::decisions::{self, Kind, Row};
use crate::store::{self, jobs, schedules};

/// Most decision rows one answer shows (the newest; each may stand for many).
const LIMIT: usize = 200;

fn since(args: &Args) -> Result<Option<DateTime<Utc>>, CliError> {
    args.flag("since")
        .map(|t| {
            parse_ts(t).ok_or_else(|| {
                CliError::Usage(format!(
                    "--since must be an RFC 3339 time like 2026-02-21T10:00:00Z, not `{t}`"
                ))
            })
        })
        .transpose()
}

fn ledger(rt: &Runtime) -> Result<Option<rusqlite::Connection>, CliError> {
    let path = &rt.config.state.path;
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(store::open_read_only(path)?))
}

/// Dispatches `explain <target>` and `explain job <id>`.
pub fn explain(args: &Args, words: &[String]) -> Result<(), CliError> {
    match words {
        [noun, id] if noun == "job" => job(args, id),
        [target] => subject(args, target),
        _ => Err(CliError::Usage(
            "usage: ductile explain <plugin>[:<schedule>] | ductile explain job <job-id>".into(),
        )),
    }
}

/// The sentence one decision row reads as.
pub fn sentence(r: &Row) -> String {
    let subject = if let Some(name) = r.scope.strip_prefix("webhook:") {
        format!("a delivery to webhook `{name}`")
    } else if r.scope == "api" || r.scope == "cli" || r.scope.contains(':') {
        format!("a submission by {}", r.scope)
    } else {
        format!("schedule `{}:{}`", r.plugin, r.scope)
    };
    let phrase = Kind::parse(&r.kind).map_or("did not run", Kind::phrase);
    let when = if r.count == 1 {
        format!("At {}", r.last_at)
    } else {
        format!("{} times from {} to {}", r.count, r.first_at, r.last_at)
    };
    let mut out = format!("{when}, {subject} {phrase} ({}).", r.detail);
    if let Some(due) = &r.due_at {
        let latest = if r.count == 1 { "It" } else { "The latest" };
        out.push_str(&format!(" {latest} was due at {due}."));
    }
    if let Some(job) = &r.job_id {
        out.push_str(&format!(" The job it concerned is {job}."));
    }
    out
}

fn subject(args: &Args, target: &str) -> Result<(), CliError> {
    let rt = Runtime::load(&super::config_root(args)?)?;
    let since = since(args)?;
    let (plugin, scope) = match target.split_once(':') {
        Some((p, s)) => (p.to_string(), Some(s.to_string())),
        None => (target.to_string(), None),
    };
    let intake_scope = |id: &str| id.starts_with("webhook:") || id == "api" || id == "cli";
    if let Some(id) = scope.as_deref().filter(|id| !intake_scope(id)) {
        // An unknown schedule fails with the closest names.
        super::schedule::resolve(&rt, &format!("{plugin}:{id}"))?;
    } else if !rt.config.plugins.contains_key(&plugin) {
        let known: Vec<&str> = rt.config.plugins.keys().map(String::as_str).collect();
        return Err(CliError::Failed(format!(
            "unknown plugin `{plugin}`{}",
            crate::suggest::hint(&plugin, &known)
        )));
    }
    let conn = ledger(&rt)?;
    let (rows, entries) = match &conn {
        None => (Vec::new(), Vec::new()),
        Some(c) => (
            decisions::for_plugin(c, &plugin, scope.as_deref(), since, LIMIT)?,
            schedules::all(c)?
                .into_iter()
                .filter(|e| {
                    e.plugin == plugin && scope.as_ref().is_none_or(|s| *s == e.schedule_id)
                })
                .collect(),
        ),
    };
    let mut lines: Vec<String> = entries.iter().map(state_sentence).collect();
    let paused = entries.iter().any(|e| e.status.starts_with("paused"));
    if rows.is_empty() && !paused {
        let window = since.map_or("in the retention window".to_string(), |t| {
            format!("since {}", format_ts(t))
        });
        lines.push(format!(
            "No decision kept {target} from running {window}: everything due or submitted was enqueued."
        ));
    }
    lines.extend(rows.iter().map(sentence));
    if args.json {
        output::json(&json!({
            "plugin": plugin,
            "schedule": scope,
            "since": since.map(format_ts),
            "schedules": entries,
            "decisions": rows.iter().map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
                v["sentence"] = Value::String(sentence(r));
                v
            }).collect::<Vec<_>>(),
            "sentences": lines,
        }));
    } else {
        output::text(&lines.join("\n"));
    }
    Ok(())
}

fn state_sentence(e: &schedules::Entry) -> String {
    let name = format!("{}:{}", e.plugin, e.schedule_id);
    let next = e.next_run_at.as_deref().unwrap_or("never");
    let mut s = match e.status.as_str() {
        "paused_manual" => format!(
            "Schedule `{name}` is paused ({}); it does not run until `ductile schedule resume {name}`.",
            e.reason.as_deref().unwrap_or("by hand")
        ),
        "paused_invalid" => format!(
            "Schedule `{name}` is paused because its definition is invalid ({}).",
            e.reason.as_deref().unwrap_or("no reason recorded")
        ),
        "exhausted" => format!("Schedule `{name}` is a one-shot that has already fired."),
        _ => format!("Schedule `{name}` is active; its next run is due at {next}."),
    };
    match (&e.last_fired_at, &e.last_success_at) {
        (Some(f), Some(ok)) => s.push_str(&format!(
            " It last fired at {f}; its last success was at {ok}."
        )),
        (Some(f), None) => s.push_str(&format!(
            " It last fired at {f}; no run of it has succeeded yet."
        )),
        _ => s.push_str(" It has never fired."),
    }
    s
}

fn job(args: &Args, id: &str) -> Result<(), CliError> {
    let rt = Runtime::load(&super::config_root(args)?)?;
    let Some(conn) = ledger(&rt)? else {
        return Err(CliError::Failed(format!("no job `{id}` in the ledger")));
    };
    let Some(job) = jobs::job(&conn, id)? else {
        return Err(CliError::Failed(format!("no job `{id}` in the ledger")));
    };
    let rows = decisions::for_job(&conn, id)?;
    let steps = decisions::steps(&conn, id)?;
    let f = |k: &str| {
        job.get(k)
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_string()
    };
    let mut lines = vec![format!(
        "Job {id} ({} {}, submitted by {} at {}) is {}.",
        f("plugin"),
        f("command"),
        f("submitted_by"),
        f("created_at"),
        f("status")
    )];
    lines.extend(steps.iter().map(|s| {
        let from = s.from_status.as_deref().unwrap_or("new");
        format!(
            "At {}, attempt {}: {from} -> {} ({}).",
            s.at, s.attempt, s.to_status, s.reason
        )
    }));
    lines.push(match f("status").as_str() {
        "queued" => "It is waiting for a worker (or for its retry time).".to_string(),
        "running" => format!("It has been running since {}.", f("started_at")),
        "succeeded" => format!("It ran and succeeded at {}.", f("completed_at")),
        _ => format!("It ended at {}: {}.", f("completed_at"), f("last_error")),
    });
    for r in &rows {
        if r.kind != Kind::Deduplicated.as_str() {
            lines.push(sentence(r));
            continue;
        }
        let n = if r.count == 1 {
            "1 later submission was".to_string()
        } else {
            format!("{} later submissions were", r.count)
        };
        lines.push(format!(
            "{n} deduplicated onto this job from {} to {} ({}).",
            r.first_at, r.last_at, r.detail
        ));
    }
    if args.json {
        output::json(&json!({
            "job": job,
            "transitions": steps,
            "decisions": rows,
            "sentences": lines,
        }));
    } else {
        output::text(&lines.join("\n"));
    }
    Ok(())
}
