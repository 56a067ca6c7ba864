//! Reading jobs back as JSON: one job, its tree, filtered lists of jobs and of
//! job log records. Shared by the API (`GET /job…`, `/jobs`, `/job-logs`) and
//! `ductile job …`, so both answer the same thing from the same rows.

use rusqlite::{Connection, OptionalExtension, params_from_iter, types::Value as SqlValue};
use serde_json::{Map, Value, json};

use super::StoreError;

/// Most rows one list returns.
pub const MAX_LIMIT: i64 = 200;
/// Rows a list returns when not told.
pub const DEFAULT_LIMIT: i64 = 50;
/// Most jobs one tree returns (a pathological fan-out stays bounded).
const MAX_TREE: usize = 10_000;

/// Filters of `GET /jobs` / `ductile job list`.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    /// Exact plugin.
    pub plugin: Option<String>,
    /// Exact command.
    pub command: Option<String>,
    /// Native status (see [`status_filter`]).
    pub status: Option<&'static str>,
    /// Rows wanted (1..=200).
    pub limit: i64,
    /// Only jobs listed after this one (the `next_cursor` of the page before).
    pub before: Option<String>,
}

/// Filters of `GET /job-logs` / `ductile job logs`.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Exact job id.
    pub job_id: Option<String>,
    /// Exact plugin.
    pub plugin: Option<String>,
    /// Exact command.
    pub command: Option<String>,
    /// Native status.
    pub status: Option<&'static str>,
    /// Exact submitter (`api`, `webhook:github`...).
    pub submitted_by: Option<String>,
    /// Completed at or after (ledger time format).
    pub from: Option<String>,
    /// Completed at or before.
    pub to: Option<String>,
    /// Substring of last_error, stderr or result.
    pub query: Option<String>,
    /// Rows wanted.
    pub limit: i64,
    /// Include each record's stored response.
    pub include_result: bool,
}

/// The native status for a filter value, accepting the spec's aliases
/// (`pending`, `ok`, `error`); the error lists what is accepted.
pub fn status_filter(s: &str) -> Result<&'static str, String> {
    Ok(match s {
        "queued" | "pending" => "queued",
        "running" => "running",
        "succeeded" | "ok" => "succeeded",
        "failed" | "error" => "failed",
        "timed_out" => "timed_out",
        "dead" => "dead",
        other => {
            return Err(format!(
                "unknown status `{other}`: expected queued, running, succeeded, failed, timed_out, dead (or pending, ok, error)"
            ));
        }
    })
}

/// A list limit from text: 1..=200.
pub fn parse_limit(text: Option<&str>) -> Result<i64, String> {
    match text {
        None => Ok(DEFAULT_LIMIT),
        Some(t) => match t.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(format!(
                "limit must be an integer from 1 to {MAX_LIMIT}, not `{t}`"
            )),
        },
    }
}

const JOB_COLUMNS: &str = "id, status, plugin, command, submitted_by, created_at, started_at, completed_at, attempt, last_error, parent_job_id";

fn text(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Value> {
    Ok(r.get::<_, Option<String>>(i)?
        .map_or(Value::Null, Value::String))
}

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Map<String, Value>> {
    let mut m = Map::new();
    for (i, key) in [
        "job_id",
        "status",
        "plugin",
        "command",
        "submitted_by",
        "created_at",
        "started_at",
        "completed_at",
    ]
    .iter()
    .enumerate()
    {
        m.insert((*key).into(), text(r, i)?);
    }
    m.insert("attempt".into(), json!(r.get::<_, i64>(8)?));
    m.insert("last_error".into(), text(r, 9)?);
    m.insert("parent_job_id".into(), text(r, 10)?);
    Ok(m)
}

/// A stored response: JSON when it parses, else the text as stored.
fn stored(raw: Option<String>) -> Value {
    raw.map(|t| serde_json::from_str(&t).unwrap_or(Value::String(t)))
        .unwrap_or(Value::Null)
}

fn latest_result(conn: &Connection, id: &str) -> rusqlite::Result<Value> {
    let raw: Option<String> = conn
        .prepare_cached(
            "SELECT result FROM job_log WHERE job_id = ?1 ORDER BY attempt DESC, completed_at DESC LIMIT 1",
        )?
        .query_row([id], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(stored(raw))
}

fn find(conn: &Connection, id: &str) -> rusqlite::Result<Option<Map<String, Value>>> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM job_queue WHERE id = ?1"
        ))?
        .query_row([id], job_row)
        .optional()?;
    if row.is_some() {
        return Ok(row);
    }
    // Pruned from the queue: the log still knows its last attempt.
    conn.prepare_cached(
        "SELECT job_id, status, plugin, command, submitted_by, created_at, NULL, completed_at, attempt, last_error, parent_job_id FROM job_log WHERE job_id = ?1 ORDER BY attempt DESC LIMIT 1",
    )?
    .query_row([id], job_row)
    .optional()
}

/// One job with its latest result, or None.
pub fn job(conn: &Connection, id: &str) -> Result<Option<Value>, StoreError> {
    (|| {
        let Some(mut m) = find(conn, id)? else {
            return Ok(None);
        };
        m.insert("result".into(), latest_result(conn, id)?);
        Ok(Some(Value::Object(m)))
    })()
    .map_err(|e| StoreError::sqlite("read a job", e))
}

/// A job and every descendant (breadth first, root first), or None.
pub fn tree(conn: &Connection, id: &str) -> Result<Option<Vec<Value>>, StoreError> {
    (|| {
        let Some(root) = find(conn, id)? else {
            return Ok(None);
        };
        let mut out = vec![root];
        let mut i = 0;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM job_queue WHERE parent_job_id = ?1 ORDER BY rowid"
        ))?;
        while i < out.len() && out.len() < MAX_TREE {
            let parent = out[i]
                .get("job_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let children = stmt
                .query_map([&parent], job_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            out.extend(children);
            i += 1;
        }
        out.truncate(MAX_TREE);
        let mut values = Vec::with_capacity(out.len());
        for mut m in out {
            let jid = m
                .get("job_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            m.insert("result".into(), latest_result(conn, &jid)?);
            values.push(Value::Object(m));
        }
        Ok(Some(values))
    })()
    .map_err(|e| StoreError::sqlite("read a job tree", e))
}

/// One hop of a lineage: the job and where it sits in its tree.
fn hop_node(conn: &Connection, id: &str) -> rusqlite::Result<Option<Map<String, Value>>> {
    let row = conn
        .prepare_cached(
            "SELECT q.id, q.status, q.plugin, q.command, q.submitted_by, q.created_at, q.started_at, q.completed_at,
                    q.attempt, q.last_error, q.parent_job_id, q.max_attempts, q.source_event_id, q.event_context_id,
                    c.pipeline_name, c.step_id, c.accumulated_json
             FROM job_queue q LEFT JOIN event_context c ON c.id = q.event_context_id WHERE q.id = ?1",
        )?
        .query_row([id], |r| {
            let mut m = job_row(r)?;
            m.insert("max_attempts".into(), json!(r.get::<_, i64>(11)?));
            m.insert("source_event_id".into(), text(r, 12)?);
            m.insert("event_context_id".into(), text(r, 13)?);
            m.insert("pipeline".into(), text(r, 14)?);
            m.insert("hop".into(), text(r, 15)?);
            let accumulated: Option<String> = r.get(16)?;
            Ok((m, accumulated))
        })
        .optional()?;
    let Some((mut m, accumulated)) = row else {
        return Ok(None);
    };
    let context: Value = accumulated
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| Value::Object(Map::new()));
    let control = |k: &str| context.get(k).cloned().unwrap_or(Value::Null);
    m.insert("step_id".into(), control("ductile_step_id"));
    m.insert("tree".into(), control("ductile_pipeline_instance_id"));
    m.insert("depth".into(), control("ductile_route_depth"));
    m.insert("max_depth".into(), control("ductile_route_max_depth"));
    m.insert("baggage".into(), super::context::baggage(&context));
    let result = latest_result(conn, id)?;
    let claim: Option<String> = conn
        .prepare_cached(
            "SELECT reason FROM job_transitions WHERE job_id = ?1 AND to_status = 'running' ORDER BY id LIMIT 1",
        )?
        .query_row([id], |r| r.get(0))
        .optional()?;
    let plugin = m.get("plugin").and_then(Value::as_str).unwrap_or_default();
    let preflight = claim.as_deref().map(super::events::preflight);
    let (decision, reason) = match (preflight, plugin) {
        (None, _) => ("pending".to_string(), Value::Null),
        (Some(("fail", why)), _) => ("fail".to_string(), json!(why)),
        // A switch's decision is the event it emitted; its result says why.
        (Some(_), "core.switch") => (
            result
                .pointer("/events/0/type")
                .and_then(Value::as_str)
                .unwrap_or("run")
                .to_string(),
            result.get("result").cloned().unwrap_or(Value::Null),
        ),
        (Some(_), _) => ("run".to_string(), Value::Null),
    };
    m.insert("decision".into(), json!(decision));
    m.insert("reason".into(), reason);
    let at = |k: &str| {
        m.get(k)
            .and_then(Value::as_str)
            .and_then(crate::clock::parse_ts)
    };
    let ms = |a: Option<chrono::DateTime<chrono::Utc>>,
              b: Option<chrono::DateTime<chrono::Utc>>| {
        match (a, b) {
            (Some(a), Some(b)) => json!((b - a).num_microseconds().unwrap_or(0) as f64 / 1000.0),
            _ => Value::Null,
        }
    };
    let (created, started, completed) = (at("created_at"), at("started_at"), at("completed_at"));
    m.insert(
        "timing".into(),
        json!({
            "wait_ms": ms(created, started),
            "run_ms": ms(started, completed),
            "total_ms": ms(created, completed),
        }),
    );
    m.insert("result".into(), result);
    Ok(Some(m))
}

/// `job inspect`: the job, the hops from its tree's root down to it, and
/// every job it caused, each with its step, baggage, decision and timing;
/// None for an unknown id.
pub fn inspect(conn: &Connection, id: &str) -> Result<Option<Value>, StoreError> {
    let found = (|| {
        let Some(job) = hop_node(conn, id)? else {
            return Ok(None);
        };
        let mut up = Vec::new();
        let mut parent = job
            .get("parent_job_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        while let Some(p) = parent.take() {
            if up.len() >= MAX_TREE {
                break;
            }
            let Some(node) = hop_node(conn, &p)? else {
                break;
            };
            parent = node
                .get("parent_job_id")
                .and_then(Value::as_str)
                .map(str::to_string);
            up.push(Value::Object(node));
        }
        up.reverse();
        let mut down = Vec::new();
        let mut queue = vec![(id.to_string(), 1_u64)];
        let mut children = conn
            .prepare_cached("SELECT id FROM job_queue WHERE parent_job_id = ?1 ORDER BY rowid")?;
        while let Some((p, level)) = queue.pop() {
            let ids = children
                .query_map([&p], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            // Depth first, in creation order: pushed in reverse so the first child pops first.
            for c in ids.iter().rev() {
                queue.push((c.clone(), level + 1));
            }
            if p == id {
                continue;
            }
            if let Some(mut node) = hop_node(conn, &p)? {
                node.insert("level".into(), json!(level - 1));
                down.push(Value::Object(node));
            }
            if down.len() >= MAX_TREE {
                break;
            }
        }
        let mut out = job;
        out.insert("lineage_up".into(), Value::Array(up));
        out.insert("lineage_down".into(), Value::Array(down));
        Ok(Some(out))
    })()
    .map_err(|e| StoreError::sqlite("inspect a job", e))?;
    let Some(mut out) = found else {
        return Ok(None);
    };
    // The resumption links, by the rule `job retry` itself applies.
    let retry_of = match out.get("parent_job_id").and_then(Value::as_str) {
        Some(p) if super::queue::retried_as(conn, p)?.as_deref() == Some(id) => json!(p),
        _ => Value::Null,
    };
    out.insert("retry_of".into(), retry_of);
    out.insert(
        "retried_as".into(),
        json!(super::queue::retried_as(conn, id)?),
    );
    Ok(Some(Value::Object(out)))
}

/// WHERE clauses and their parameters.
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    params: Vec<SqlValue>,
}

impl Where {
    fn push(&mut self, column: &str, op: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.params.push(SqlValue::Text(v.to_string()));
            self.clauses
                .push(format!("{column} {op} ?{}", self.params.len()));
        }
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// The statements of one list: the count (with the first `count_params` of
/// `params`), and the page (with all of them).
struct Statements {
    count: String,
    page: String,
    params: Vec<SqlValue>,
    count_params: usize,
    /// Rows asked for (the job list's page reads one more).
    limit: i64,
}

/// What [`list`] runs for `q`.
fn list_statements(q: &JobQuery) -> Statements {
    let mut w = Where::default();
    w.push("plugin", "=", q.plugin.as_deref());
    w.push("command", "=", q.command.as_deref());
    w.push("status", "=", q.status);
    let count = format!("SELECT COUNT(*) FROM job_queue {}", w.sql());
    let count_params = w.params.len();
    if let Some(id) = &q.before {
        // Keyset pagination in the list's own order: stable while new
        // jobs arrive, and it reads the created_at index from the cursor on.
        w.params.push(SqlValue::Text(id.clone()));
        let n = w.params.len();
        w.clauses.push(format!(
            "(created_at, rowid) < (SELECT created_at, rowid FROM job_queue WHERE id = ?{n})"
        ));
    }
    let limit = q.limit.clamp(1, MAX_LIMIT);
    // One row more than asked tells whether another page follows.
    let page = format!(
        "SELECT {JOB_COLUMNS} FROM job_queue {} ORDER BY created_at DESC, rowid DESC LIMIT {}",
        w.sql(),
        limit + 1
    );
    Statements {
        count,
        page,
        params: w.params,
        count_params,
        limit,
    }
}

/// `{"jobs": [...], "total": n, "next_cursor": id|null}`, newest first;
/// `total` counts every job the filters match, whatever the cursor, and
/// `next_cursor` is set when older matching jobs follow this page.
pub fn list(conn: &Connection, q: &JobQuery) -> Result<Value, StoreError> {
    let st = list_statements(q);
    (|| {
        let total: i64 = conn.query_row(
            &st.count,
            params_from_iter(st.params[..st.count_params].iter()),
            |r| r.get(0),
        )?;
        let limit = st.limit;
        let mut stmt = conn.prepare(&st.page)?;
        let mut rows = stmt
            .query_map(params_from_iter(st.params.iter()), job_row)?
            .map(|r| r.map(Value::Object))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let more = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        let next = if more {
            rows.last().map(|r| r["job_id"].clone())
        } else {
            None
        };
        Ok(json!({"jobs": rows, "total": total, "next_cursor": next}))
    })()
    .map_err(|e| StoreError::sqlite("list jobs", e))
}

/// What [`logs`] runs for `q`.
fn log_statements(q: &LogQuery) -> Statements {
    let mut w = Where::default();
    w.push("job_id", "=", q.job_id.as_deref());
    w.push("plugin", "=", q.plugin.as_deref());
    w.push("command", "=", q.command.as_deref());
    w.push("status", "=", q.status);
    w.push("submitted_by", "=", q.submitted_by.as_deref());
    w.push("completed_at", ">=", q.from.as_deref());
    w.push("completed_at", "<=", q.to.as_deref());
    if let Some(text) = &q.query {
        let pattern = format!(
            "%{}%",
            text.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        w.params.push(SqlValue::Text(pattern));
        let n = w.params.len();
        w.clauses.push(format!(
            "(last_error LIKE ?{n} ESCAPE '\\' OR stderr LIKE ?{n} ESCAPE '\\' OR result LIKE ?{n} ESCAPE '\\')"
        ));
    }
    let limit = q.limit.clamp(1, MAX_LIMIT);
    Statements {
        count: format!("SELECT COUNT(*) FROM job_log {}", w.sql()),
        page: format!(
            "SELECT job_id, id, plugin, command, status, attempt, submitted_by, created_at, completed_at, last_error, stderr, warnings, result FROM job_log {} ORDER BY completed_at DESC, rowid DESC LIMIT {}",
            w.sql(),
            limit
        ),
        count_params: w.params.len(),
        params: w.params,
        limit,
    }
}

/// `{"logs": [...], "total": n}`, most recently completed first.
pub fn logs(conn: &Connection, q: &LogQuery) -> Result<Value, StoreError> {
    let st = log_statements(q);
    (|| {
        let total: i64 =
            conn.query_row(&st.count, params_from_iter(st.params.iter()), |r| r.get(0))?;
        let mut stmt = conn.prepare(&st.page)?;
        let rows = stmt
            .query_map(params_from_iter(st.params.iter()), |r| {
                let mut m = Map::new();
                for (i, key) in ["job_id", "log_id", "plugin", "command", "status"]
                    .iter()
                    .enumerate()
                {
                    m.insert((*key).into(), text(r, i)?);
                }
                m.insert("attempt".into(), json!(r.get::<_, i64>(5)?));
                for (i, key) in [
                    (6, "submitted_by"),
                    (7, "created_at"),
                    (8, "completed_at"),
                    (9, "last_error"),
                    (10, "stderr"),
                    (11, "warnings"),
                ] {
                    m.insert(key.into(), text(r, i)?);
                }
                if q.include_result {
                    m.insert("result".into(), stored(r.get(12)?));
                }
                Ok(Value::Object(m))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(json!({"logs": rows, "total": total}))
    })()
    .map_err(|e| StoreError::sqlite("list job logs", e))
}

/// A finished tree's outcome (`{status, result, tree}`), or None while any
/// job of it is queued or running. `status` is `succeeded` when every job
/// succeeded, else `failed`; `result` is the response of the terminal step
/// actually reached (the last job to complete that is not a decision hop).
pub fn settled(conn: &Connection, root: &str) -> Result<Option<Value>, StoreError> {
    let Some(tree) = tree(conn, root)? else {
        return Ok(None);
    };
    let open = |j: &Value| matches!(j["status"].as_str(), Some("queued" | "running"));
    if tree.iter().any(open) {
        return Ok(None);
    }
    let failed = tree
        .iter()
        .any(|j| j["status"].as_str() != Some("succeeded"));
    let last = tree
        .iter()
        .filter(|j| j["plugin"].as_str() != Some("core.switch"))
        .max_by(|a, b| {
            a["completed_at"]
                .as_str()
                .unwrap_or("")
                .cmp(b["completed_at"].as_str().unwrap_or(""))
        });
    let result = last.map_or(Value::Null, |j| j["result"].clone());
    Ok(Some(json!({
        "status": if failed { "failed" } else { "succeeded" },
        "result": result,
        "tree": tree,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::TempDir;

    /// The plan SQLite picks for `sql`, one detail line per step.
    fn plan(conn: &Connection, sql: &str, params: &[SqlValue]) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        stmt.query_map(params_from_iter(params.iter()), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap()
    }

    /// A step that reads a whole table row by row: no index at all.
    fn full_scan(step: &str) -> bool {
        (step.starts_with("SCAN job_queue") || step.starts_with("SCAN job_log"))
            && !step.contains("INDEX")
    }

    /// Every list the API, the dashboard and `system watch` read: each
    /// reads an index, and the pages of the unfiltered and time-ranged lists
    /// (the ones that grow with the ledger) come in index order, with no sort.
    #[test]
    fn every_list_query_reads_an_index() {
        let tmp = TempDir::new("plans");
        let conn =
            crate::store::open(&tmp.0.join("l.db"), crate::config::Synchronous::Normal).unwrap();
        let some = |s: &str| Some(s.to_string());
        let jobs = [
            (
                "unfiltered",
                JobQuery {
                    limit: 50,
                    ..JobQuery::default()
                },
                true,
            ),
            (
                "next page",
                JobQuery {
                    limit: 50,
                    before: some("j"),
                    ..JobQuery::default()
                },
                true,
            ),
            (
                "running",
                JobQuery {
                    limit: 200,
                    status: Some("running"),
                    ..JobQuery::default()
                },
                false,
            ),
            (
                "plugin",
                JobQuery {
                    limit: 50,
                    plugin: some("echo"),
                    ..JobQuery::default()
                },
                false,
            ),
        ];
        let ts = "2026-12-01T00:00:00.000000Z";
        let logs = [
            (
                "last hour",
                LogQuery {
                    limit: 200,
                    from: some(ts),
                    ..LogQuery::default()
                },
                true,
            ),
            (
                "failures, 24 h",
                LogQuery {
                    limit: 1,
                    status: Some("failed"),
                    from: some(ts),
                    ..LogQuery::default()
                },
                false,
            ),
            (
                "range",
                LogQuery {
                    limit: 50,
                    from: some(ts),
                    to: some(ts),
                    ..LogQuery::default()
                },
                true,
            ),
            (
                "plugin",
                LogQuery {
                    limit: 50,
                    plugin: some("echo"),
                    ..LogQuery::default()
                },
                true,
            ),
            (
                "one job",
                LogQuery {
                    limit: 50,
                    job_id: some("j"),
                    ..LogQuery::default()
                },
                false,
            ),
            (
                "text, last hour",
                LogQuery {
                    limit: 50,
                    from: some(ts),
                    query: some("boom"),
                    ..LogQuery::default()
                },
                true,
            ),
        ];
        let statements =
            jobs.iter()
                .map(|(name, q, ordered)| (format!("jobs {name}"), list_statements(q), *ordered))
                .chain(logs.iter().map(|(name, q, ordered)| {
                    (format!("logs {name}"), log_statements(q), *ordered)
                }));
        for (name, st, ordered) in statements {
            let count = plan(&conn, &st.count, &st.params[..st.count_params]);
            let page = plan(&conn, &st.page, &st.params);
            for step in count.iter().chain(&page) {
                assert!(!full_scan(step), "{name}: {step} in {count:?} / {page:?}");
            }
            if ordered {
                assert!(
                    !page.iter().any(|s| s.contains("TEMP B-TREE")),
                    "{name}: the page is sorted, not read in index order: {page:?}"
                );
            }
        }
    }
}
