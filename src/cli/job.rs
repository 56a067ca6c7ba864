//! `ductile job show|list|tree|inspect|logs`: jobs read straight from the ledger
//! (a read-only connection), so they work with or without a running daemon
//! and answer exactly what `GET /job…`, `/jobs` and `/job-logs` answer;
//! `job retry` writes one job and wakes a running daemon.

use serde_json::Value;

use super::{Args, CliError, output};
use crate::store::{self, jobs};

fn ledger(args: &Args) -> Result<rusqlite::Connection, CliError> {
    let root = super::config_root(args)?;
    let loaded = crate::config::load(&root)?;
    Ok(store::open_read_only(&loaded.config.state.path)?)
}

fn usage(e: String) -> CliError {
    CliError::Usage(e)
}

fn status(args: &Args) -> Result<Option<&'static str>, CliError> {
    args.flag("status")
        .map(jobs::status_filter)
        .transpose()
        .map_err(usage)
}

fn time(args: &Args, key: &str) -> Result<Option<String>, CliError> {
    match args.flag(key) {
        None => Ok(None),
        Some(t) => crate::clock::parse_ts(t)
            .map(|ts| Some(crate::clock::format_ts(ts)))
            .ok_or_else(|| {
                usage(format!(
                    "--{key} must be an RFC 3339 time like 2026-02-21T10:00:00Z, not `{t}`"
                ))
            }),
    }
}

fn owned(args: &Args, key: &str) -> Option<String> {
    args.flag(key).map(str::to_string)
}

fn field<'v>(v: &'v Value, key: &str) -> &'v str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// Appends `  key: value` for each of `keys` that `v` has as a string.
fn push_fields(lines: &mut Vec<String>, v: &Value, keys: &[&str]) {
    for key in keys {
        if let Some(s) = v.get(*key).and_then(Value::as_str) {
            lines.push(format!("  {key}: {s}"));
        }
    }
}

/// `ductile job show <id>`.
pub fn show(args: &Args, id: &str) -> Result<(), CliError> {
    let conn = ledger(args)?;
    let Some(job) = jobs::job(&conn, id)? else {
        return Err(CliError::Failed(format!("no job `{id}` in the ledger")));
    };
    if args.json {
        output::json(&job);
    } else {
        let mut lines = vec![format!(
            "job {} — {} {} {} (attempt {})",
            field(&job, "job_id"),
            field(&job, "plugin"),
            field(&job, "command"),
            field(&job, "status"),
            job.get("attempt").cloned().unwrap_or(Value::Null)
        )];
        push_fields(
            &mut lines,
            &job,
            &[
                "submitted_by",
                "created_at",
                "started_at",
                "completed_at",
                "last_error",
                "parent_job_id",
            ],
        );
        if let Some(r) = job.get("result").filter(|r| !r.is_null()) {
            lines.push(format!("  result: {r}"));
        }
        output::text(&lines.join("\n"));
    }
    Ok(())
}

fn table(rows: &[Value], total: i64, noun: &str) -> String {
    let mut out = Vec::new();
    for r in rows {
        out.push(format!(
            "{}  {:<10} {}/{}  {}  {}",
            field(r, "job_id"),
            field(r, "status"),
            field(r, "plugin"),
            field(r, "command"),
            field(r, "completed_at"),
            r.get("last_error").and_then(Value::as_str).unwrap_or("")
        ));
    }
    out.push(format!("{} of {total} {noun}", rows.len()));
    out.join("\n")
}

fn print_list(args: &Args, listed: &Value, key: &str, noun: &str) {
    if args.json {
        output::json(listed);
    } else {
        let rows = listed
            .get(key)
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        let total = listed.get("total").and_then(Value::as_i64).unwrap_or(0);
        output::text(&table(rows, total, noun));
    }
}

/// `ductile job list`.
pub fn list(args: &Args) -> Result<(), CliError> {
    let q = jobs::JobQuery {
        plugin: owned(args, "plugin"),
        command: owned(args, "command"),
        status: status(args)?,
        limit: jobs::parse_limit(args.flag("limit")).map_err(usage)?,
        before: None,
    };
    let conn = ledger(args)?;
    let listed = jobs::list(&conn, &q)?;
    print_list(args, &listed, "jobs", "jobs");
    Ok(())
}

/// `ductile job tree <id>`.
pub fn tree(args: &Args, id: &str) -> Result<(), CliError> {
    let conn = ledger(args)?;
    let Some(tree) = jobs::tree(&conn, id)? else {
        return Err(CliError::Failed(format!("no job `{id}` in the ledger")));
    };
    if args.json {
        output::json(&Value::Array(tree));
    } else {
        let total = tree.len() as i64;
        output::text(&table(&tree, total, "jobs in the tree"));
    }
    Ok(())
}

/// `ductile job logs`.
pub fn logs(args: &Args) -> Result<(), CliError> {
    let q = jobs::LogQuery {
        job_id: owned(args, "job"),
        plugin: owned(args, "plugin"),
        command: owned(args, "command"),
        status: status(args)?,
        submitted_by: owned(args, "submitted-by"),
        from: time(args, "from")?,
        to: time(args, "to")?,
        query: owned(args, "query"),
        limit: jobs::parse_limit(args.flag("limit")).map_err(usage)?,
        include_result: args.flag("include-result").is_some(),
    };
    let conn = ledger(args)?;
    let listed = jobs::logs(&conn, &q)?;
    print_list(args, &listed, "logs", "log records");
    Ok(())
}

/// One line of a lineage: the job, its step and how it went.
fn lineage_line(n: &Value, indent: usize) -> String {
    let mut line = format!(
        "{}{}  {}/{}  {}",
        "  ".repeat(indent),
        field(n, "job_id"),
        field(n, "plugin"),
        field(n, "command"),
        field(n, "status")
    );
    if let Some(step) = n.get("step_id").and_then(Value::as_str) {
        line.push_str(&format!("  [{}:{step}]", field(n, "pipeline")));
    }
    match field(n, "decision") {
        "run" | "pending" => {}
        d => line.push_str(&format!("  {d}")),
    }
    if let Some(r) = n.get("reason").and_then(Value::as_str) {
        line.push_str(&format!(" ({r})"));
    }
    if let Some(ms) = n.pointer("/timing/run_ms").and_then(Value::as_f64) {
        line.push_str(&format!("  {ms:.1} ms"));
    }
    line
}

/// `ductile job inspect <id>`: lineage up and down, each hop's step,
/// baggage, decision and timing.
pub fn inspect(args: &Args, id: &str) -> Result<(), CliError> {
    let conn = ledger(args)?;
    let Some(v) = jobs::inspect(&conn, id)? else {
        return Err(CliError::Failed(format!("no job `{id}` in the ledger")));
    };
    if args.json {
        output::json(&v);
        return Ok(());
    }
    let mut lines = vec![format!(
        "job {} — {} {} {} (attempt {}/{})",
        field(&v, "job_id"),
        field(&v, "plugin"),
        field(&v, "command"),
        field(&v, "status"),
        v.get("attempt").cloned().unwrap_or(Value::Null),
        v.get("max_attempts").cloned().unwrap_or(Value::Null)
    )];
    if v.get("hop").is_some_and(|h| !h.is_null()) {
        lines.push(format!(
            "  step: {} of pipeline {} (hop {}), tree {}, depth {}/{}",
            field(&v, "step_id"),
            field(&v, "pipeline"),
            field(&v, "hop"),
            field(&v, "tree"),
            v.get("depth").cloned().unwrap_or(Value::Null),
            v.get("max_depth").cloned().unwrap_or(Value::Null)
        ));
    }
    let mut decision = format!("  decision: {}", field(&v, "decision"));
    if let Some(r) = v.get("reason").and_then(Value::as_str) {
        decision.push_str(&format!(" ({r})"));
    }
    lines.push(decision);
    if let Some(b) = v
        .get("baggage")
        .filter(|b| b.as_object().is_some_and(|m| !m.is_empty()))
    {
        lines.push(format!("  baggage: {b}"));
    }
    let t = |k: &str| {
        v.pointer(&format!("/timing/{k}"))
            .and_then(Value::as_f64)
            .map_or_else(|| "-".to_string(), |ms| format!("{ms:.1} ms"))
    };
    lines.push(format!(
        "  timing: waited {}, ran {}, total {}",
        t("wait_ms"),
        t("run_ms"),
        t("total_ms")
    ));
    push_fields(
        &mut lines,
        &v,
        &[
            "submitted_by",
            "created_at",
            "started_at",
            "completed_at",
            "last_error",
            "source_event_id",
            "retry_of",
            "retried_as",
        ],
    );
    let list = |key: &str| {
        v.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let up = list("lineage_up");
    lines.push(format!("lineage up ({} jobs, root first):", up.len()));
    lines.extend(up.iter().map(|n| lineage_line(n, 1)));
    let down = list("lineage_down");
    lines.push(format!("lineage down ({} jobs):", down.len()));
    lines.extend(down.iter().map(|n| {
        let level = n.get("level").and_then(Value::as_u64).unwrap_or(1) as usize;
        lineage_line(n, level)
    }));
    output::text(&lines.join("\n"));
    Ok(())
}

/// `ductile job retry <id>`: enqueues the resumed job and wakes a ready daemon
/// (without one, the job waits in the queue for the next start).
pub fn retry(args: &Args, id: &str) -> Result<(), CliError> {
    use crate::store::queue::{self, RetryRefused, SubmittedBy};
    let root = super::config_root(args)?;
    let loaded = crate::config::load(&root)?;
    let db = &loaded.config.state.path;
    if args.dry_run {
        let conn = store::open_read_only(db)?;
        let Some(job) = jobs::job(&conn, id)? else {
            return Err(CliError::Failed(format!("no job `{id}` in the ledger")));
        };
        let plan = serde_json::json!({"dry_run": true, "would_retry": job});
        if args.json {
            output::json(&plan);
        } else {
            output::text(&format!(
                "dry run: would run job {id} again (nothing was changed)"
            ));
        }
        return Ok(());
    }
    crate::disk::admit(&loaded.config.state).map_err(|r| CliError::Failed(r.to_string()))?;
    let mut conn = store::open(db, loaded.config.state.synchronous)?;
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    let tx = queue::begin(&mut conn)?;
    let new = match queue::retry_in(&tx, id, SubmittedBy::Cli, now) {
        Ok(new) => new,
        Err(RetryRefused::Missing) => {
            return Err(CliError::Failed(format!("no job `{id}` in the queue")));
        }
        Err(RetryRefused::NotFailed(s)) => {
            return Err(CliError::Failed(format!(
                "job `{id}` is {s}: only a failed, timed-out or dead job can be retried"
            )));
        }
        Err(RetryRefused::AlreadyRetried(earlier)) => {
            return Err(CliError::Failed(format!(
                "job `{id}` was already retried as `{earlier}`; retry that one if it failed"
            )));
        }
        Err(RetryRefused::Store(e)) => return Err(e.into()),
    };
    tx.commit().map_err(|e| {
        crate::store::StoreError::sqlite(format!("commit the retry of job {id}"), e)
    })?;
    let woke = crate::lock::ready_daemon(db).is_some_and(|d| d.signal(libc::SIGUSR1).is_ok());
    if args.json {
        output::json(
            &serde_json::json!({"job_id": new, "status": "queued", "retry_of": id, "daemon_woken": woke}),
        );
    } else {
        let when = if woke {
            "the daemon runs it now"
        } else {
            "it runs when the daemon starts"
        };
        output::text(&format!("job {new} queued to resume job {id}; {when}"));
    }
    Ok(())
}
