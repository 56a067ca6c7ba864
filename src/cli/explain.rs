//! `ductile explain <plugin>[:<schedule>]` and `ductile explain job <id>`:
//! "why didn't it run?" answered in sentences from the ledger's `decisions`
//! rows (and, for a job, its transitions), worded by [`crate::explain`].
//! Read-only; no daemon needed.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Args, CliError, output};
use crate::clock::parse_ts;
use crate::runtime::Runtime;
use crate::store::decisions::{self, Kind};
use crate::store::{self, jobs};

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
    let e = crate::explain::subject(conn.as_ref(), &plugin, scope.as_deref(), since, target)?;
    if args.json {
        output::json(&e.to_json());
    } else {
        output::text(&e.sentences.join("\n"));
    }
    Ok(())
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
            lines.push(crate::explain::sentence(r));
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
