//! The baggage ledger (`event_context`): durable context carried along a
//! pipeline. Rows are written by the router; this file reads them for requests.

use rusqlite::{Connection, OptionalExtension};
use serde_json::{Map, Value};

use super::StoreError;

/// Context keys the core sets on every hop; baggage never keeps them.
pub const CONTROL: &[&str] = &[
    "ductile_plugin",
    "ductile_pipeline",
    "ductile_step_id",
    "ductile_pipeline_instance_id",
    "ductile_route_depth",
    "ductile_route_max_depth",
];

/// The baggage in `accumulated`: everything but the [`CONTROL`] fields.
pub fn baggage(accumulated: &Value) -> Value {
    let mut m = match accumulated {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    for k in CONTROL {
        m.remove(*k);
    }
    Value::Object(m)
}

/// The accumulated baggage of a context row, or `{}` when there is none.
pub fn accumulated(conn: &Connection, id: Option<&str>) -> Result<Value, StoreError> {
    let Some(id) = id else {
        return Ok(Value::Object(Map::new()));
    };
    let raw: Option<String> = conn
        .prepare_cached("SELECT accumulated_json FROM event_context WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(|e| StoreError::sqlite(format!("read event_context {id}"), e))?;
    Ok(raw
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_else(|| Value::Object(Map::new())))
}

/// One `event_context` row: a hop's durable baggage and where it sits.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextRow {
    /// Row id.
    pub id: String,
    /// The row of the hop before (lineage).
    pub parent_id: Option<String>,
    /// The pipeline whose tree the hop belongs to.
    pub pipeline: Option<String>,
    /// The hop's id in the route graph (`step_id`).
    pub hop: Option<String>,
    /// Accumulated baggage plus the control fields (`ductile_*`).
    pub accumulated: Value,
}

/// The row `id`, if present.
pub fn row(conn: &Connection, id: &str) -> Result<Option<ContextRow>, StoreError> {
    conn.prepare_cached(
        "SELECT id, parent_id, pipeline_name, step_id, accumulated_json FROM event_context WHERE id = ?1",
    )
    .and_then(|mut s| {
        s.query_row([id], |r| {
            let text: String = r.get(4)?;
            Ok(ContextRow {
                id: r.get(0)?,
                parent_id: r.get(1)?,
                pipeline: r.get(2)?,
                hop: r.get(3)?,
                accumulated: serde_json::from_str(&text).unwrap_or_else(|_| Value::Object(Map::new())),
            })
        })
        .optional()
    })
    .map_err(|e| StoreError::sqlite(format!("read event_context {id}"), e))
}

/// Inserts `row` (inside the caller's transaction).
pub fn insert(
    tx: &rusqlite::Transaction<'_>,
    row: &ContextRow,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO event_context (id, parent_id, pipeline_name, step_id, accumulated_json, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(rusqlite::params![
            row.id,
            row.parent_id,
            row.pipeline,
            row.hop,
            row.accumulated.to_string(),
            crate::clock::format_ts(now),
        ])
    })
    .map(|_| ())
    .map_err(|e| StoreError::sqlite(format!("insert event_context {}", row.id), e))
}

/// How many jobs up the tree [`step_outputs`] looks: past the route depth's
/// hard cap, with room for the `core.switch` rows between steps.
const MAX_ANCESTORS: i64 = 64;

/// The outputs of the steps that ran before `job_id` in its tree, nearest
/// first: step id (`ductile_step_id` of each ancestor's context) → its
/// succeeded attempt's `result`, for envelopes that name earlier steps (D6E's
/// `sources`). Jobs without a step id (the tree's root, `core.switch` rows)
/// and steps without a succeeded attempt are left out; of two ancestors with
/// one step id, the nearer counts.
pub fn step_outputs(conn: &Connection, job_id: &str) -> Result<Map<String, Value>, StoreError> {
    let rows = conn
        .prepare_cached(
            "WITH RECURSIVE up(id, parent, depth) AS (
                 SELECT id, parent_job_id, 0 FROM job_queue WHERE id = ?1
                 UNION ALL
                 SELECT q.id, q.parent_job_id, up.depth + 1 FROM job_queue q JOIN up ON q.id = up.parent
                 WHERE up.depth < ?2
             )
             SELECT json_extract(c.accumulated_json, '$.ductile_step_id'),
                    (SELECT l.result FROM job_log l WHERE l.job_id = up.id AND l.status = 'succeeded' ORDER BY l.attempt DESC LIMIT 1)
             FROM up JOIN job_queue q ON q.id = up.id JOIN event_context c ON c.id = q.event_context_id
             WHERE up.depth > 0 AND q.plugin != ?3
             ORDER BY up.depth",
        )
        .and_then(|mut s| {
            s.query_map(rusqlite::params![job_id, MAX_ANCESTORS, crate::router::graph::SWITCH], |r| {
                Ok((r.get::<_, Option<String>>(0)?, r.get::<_, Option<String>>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(|e| StoreError::sqlite(format!("read the step outputs before job {job_id}"), e))?;
    let mut out = Map::new();
    for (step, response) in rows {
        let (Some(step), Some(response)) = (step, response) else {
            continue;
        };
        // The stored response is the plugin's whole answer; its `result` is the output.
        let result = serde_json::from_str::<Value>(&response)
            .ok()
            .and_then(|mut v| v.get_mut("result").map(Value::take))
            .unwrap_or(Value::Null);
        out.entry(step).or_insert(result);
    }
    Ok(out)
}
