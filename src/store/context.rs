//! The baggage ledger (`event_context`): durable context carried along a
//! pipeline. Rows are written by the router; this file reads them for requests.

use rusqlite::{Connection, OptionalExtension};
use serde_json::{Map, Value};

use super::StoreError;

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
