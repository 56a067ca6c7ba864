//! Durable plugin memory: the append-only `plugin_facts` stream and the
//! `plugin_state` compatibility view (spec 09-plugin-facts). A snapshot matching a
//! manifest `fact_outputs` rule becomes a fact with a Ductile-owned monotonic
//! `seq`, and the view mirrors it; other `state_updates` shallow-merge straight
//! into the view (the legacy write-through window).

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::{Map, Value};

use super::StoreError;

/// The most a `plugin_state` row (and so a snapshot) may hold.
pub const MAX_STATE_BYTES: usize = 1024 * 1024;

/// How a successful attempt's `state_updates` lands.
#[derive(Debug, Clone, PartialEq)]
pub enum StateWrite {
    /// A declared fact: append to `plugin_facts`, mirror into `plugin_state`.
    Fact {
        /// The manifest's `fact_type`.
        fact_type: String,
        /// The full snapshot.
        snapshot: Map<String, Value>,
    },
    /// Legacy write-through: shallow-merge into `plugin_state`.
    Merge(Map<String, Value>),
}

/// Applies a state write inside the completion transaction.
pub fn apply(
    tx: &Transaction<'_>,
    plugin: &str,
    job_id: &str,
    command: &str,
    write: &StateWrite,
    ts: &str,
) -> Result<(), StoreError> {
    match write {
        StateWrite::Fact {
            fact_type,
            snapshot,
        } => {
            let seq = next_seq(tx, "plugin_facts")?;
            let json = Value::Object(snapshot.clone()).to_string();
            tx.prepare_cached(
                "INSERT INTO plugin_facts (seq, plugin_name, fact_type, job_id, command, fact_json, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut s| s.execute(params![seq, plugin, fact_type, job_id, command, json, ts]))
            .map_err(|e| StoreError::sqlite(format!("append fact for {plugin}"), e))?;
            write_state(tx, plugin, &json, ts)
        }
        StateWrite::Merge(updates) => {
            let mut state = match read_state_in(tx, plugin)? {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            for (k, v) in updates {
                state.insert(k.clone(), v.clone());
            }
            write_state(tx, plugin, &Value::Object(state).to_string(), ts)
        }
    }
}

/// Size in bytes a merge would produce, so the caller can fail the job before
/// writing (the 1 MiB cap applies to the resulting row).
pub fn merged_size(
    conn: &Connection,
    plugin: &str,
    updates: &Map<String, Value>,
) -> Result<usize, StoreError> {
    let mut state = match read_state(conn, plugin)? {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for (k, v) in updates {
        state.insert(k.clone(), v.clone());
    }
    Ok(Value::Object(state).to_string().len())
}

fn write_state(tx: &Transaction<'_>, plugin: &str, json: &str, ts: &str) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO plugin_state (plugin_name, state, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(plugin_name) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
    )
    .and_then(|mut s| s.execute(params![plugin, json, ts]))
    .map_err(|e| StoreError::sqlite(format!("write plugin_state for {plugin}"), e))?;
    Ok(())
}

/// Allocates the next value of a Ductile-owned sequence.
fn next_seq(tx: &Transaction<'_>, name: &str) -> Result<i64, StoreError> {
    tx.prepare_cached(
        "INSERT INTO storage_sequences (name, value) VALUES (?1, 1)
         ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
    )
    .and_then(|mut s| s.query_row([name], |r| r.get(0)))
    .map_err(|e| StoreError::sqlite(format!("allocate sequence {name}"), e))
}

/// The plugin's compatibility view (`{}` when it has none yet).
pub fn read_state(conn: &Connection, plugin: &str) -> Result<Value, StoreError> {
    let raw: Option<String> = conn
        .prepare_cached("SELECT state FROM plugin_state WHERE plugin_name = ?1")
        .and_then(|mut s| s.query_row([plugin], |r| r.get(0)).optional())
        .map_err(|e| StoreError::sqlite(format!("read plugin_state for {plugin}"), e))?;
    Ok(raw
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_else(|| Value::Object(Map::new())))
}

fn read_state_in(tx: &Transaction<'_>, plugin: &str) -> Result<Value, StoreError> {
    read_state(tx, plugin)
}

/// One fact row, for inspection.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fact {
    /// Monotonic sequence.
    pub seq: Option<i64>,
    /// Declared fact type.
    pub fact_type: String,
    /// Producing job.
    pub job_id: Option<String>,
    /// Producing command.
    pub command: Option<String>,
    /// The snapshot.
    pub fact: Value,
    /// When it was recorded.
    pub created_at: String,
}

/// The newest `limit` facts of a plugin, newest first.
pub fn recent(conn: &Connection, plugin: &str, limit: usize) -> Result<Vec<Fact>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, fact_type, job_id, command, fact_json, created_at FROM plugin_facts WHERE plugin_name = ?1
             ORDER BY CASE WHEN seq IS NULL THEN 1 ELSE 0 END, seq DESC, created_at DESC LIMIT ?2",
        )
        .map_err(|e| StoreError::sqlite("read facts", e))?;
    let rows = stmt
        .query_map(params![plugin, limit as i64], |r| {
            let raw: String = r.get(4)?;
            Ok(Fact {
                seq: r.get(0)?,
                fact_type: r.get(1)?,
                job_id: r.get(2)?,
                command: r.get(3)?,
                fact: serde_json::from_str(&raw).unwrap_or(Value::Null),
                created_at: r.get(5)?,
            })
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StoreError::sqlite("read facts", e))?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Synchronous;
    use crate::store::{queue, testing::TempDir};
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn facts_append_with_monotonic_seq_and_mirror_the_view() {
        let tmp = TempDir::new("facts");
        let mut conn = crate::store::open(&tmp.0.join("d.db"), Synchronous::Normal).unwrap();
        for n in 1..=3 {
            let tx = queue::begin(&mut conn).unwrap();
            let w = StateWrite::Fact {
                fact_type: "p.snapshot".into(),
                snapshot: obj(json!({"n": n})),
            };
            apply(&tx, "p", "job", "poll", &w, "2026-01-01T00:00:00.000000Z").unwrap();
            tx.commit().unwrap();
        }
        let facts = recent(&conn, "p", 10).unwrap();
        assert_eq!(
            facts.iter().map(|f| f.seq.unwrap()).collect::<Vec<_>>(),
            vec![3, 2, 1]
        );
        assert_eq!(read_state(&conn, "p").unwrap(), json!({"n": 3}));
    }

    #[test]
    fn write_through_merges_shallowly_without_facts() {
        let tmp = TempDir::new("merge");
        let mut conn = crate::store::open(&tmp.0.join("d.db"), Synchronous::Normal).unwrap();
        for w in [
            json!({"a": 1, "b": {"x": 1}}),
            json!({"b": {"y": 2}, "c": 3}),
        ] {
            let tx = queue::begin(&mut conn).unwrap();
            apply(&tx, "p", "job", "poll", &StateWrite::Merge(obj(w)), "t").unwrap();
            tx.commit().unwrap();
        }
        assert_eq!(
            read_state(&conn, "p").unwrap(),
            json!({"a": 1, "b": {"y": 2}, "c": 3})
        );
        assert!(recent(&conn, "p", 10).unwrap().is_empty());
        assert_eq!(read_state(&conn, "other").unwrap(), json!({}));
        assert_eq!(
            merged_size(&conn, "p", &obj(json!({"d": 4}))).unwrap(),
            r#"{"a":1,"b":{"y":2},"c":3,"d":4}"#.len()
        );
    }
}
