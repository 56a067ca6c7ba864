//! The statements an STF may run against its workspace database: one
//! statement per call, parameters bound, DDL refused by SQLite's authorizer
//! (so a refusal does not depend on how the statement is spelled).

use std::path::Path;
use std::time::Duration;

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::{Value as Sql, ValueRef};
use rusqlite::{Connection, OpenFlags};
use serde_json::{Map, Value, json};

/// Rows returned at most by one call; more is an error, not a silent cut.
pub const MAX_ROWS: usize = 10_000;

/// Why a statement was not run or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlError {
    /// The statement needs an action STFs may not take (DDL, ATTACH, a PRAGMA write).
    Refused(String),
    /// The statement or its parameters are wrong, or SQLite failed it.
    Invalid(String),
}

/// Runs `sql` with `params` (a JSON array, positional, or an object of
/// `:name` parameters) against the SQLite file at `db`; answers
/// `{rows, affected_rows}`.
pub fn execute(db: &Path, sql: &str, params: &Value) -> Result<Value, SqlError> {
    let mut conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| SqlError::Invalid(format!("cannot open the workspace database: {e}")))?;
    let _ = conn.busy_timeout(Duration::from_secs(5));
    let refused = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let seen = std::sync::Arc::clone(&refused);
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        match refusal(&ctx.action) {
            Some(why) => {
                if let Ok(mut s) = seen.lock() {
                    s.get_or_insert(why);
                }
                Authorization::Deny
            }
            None => Authorization::Allow,
        }
    }))
    .map_err(|e| SqlError::Invalid(e.to_string()))?;
    let map_err = |e: rusqlite::Error| match refused.lock().ok().and_then(|s| s.clone()) {
        Some(why) => SqlError::Refused(why),
        None => SqlError::Invalid(e.to_string()),
    };
    let mut stmt = conn.prepare(sql).map_err(map_err)?;
    let count = stmt.parameter_count();
    let values: Vec<(usize, Sql)> = match params {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i + 1, to_sql(v)))
            .collect(),
        Value::Object(m) => {
            let mut out = Vec::new();
            for (k, v) in m {
                let name = if k.starts_with([':', '@', '$']) {
                    k.clone()
                } else {
                    format!(":{k}")
                };
                let i = stmt
                    .parameter_index(&name)
                    .map_err(|e| SqlError::Invalid(e.to_string()))?
                    .ok_or_else(|| SqlError::Invalid(format!("no parameter named {name}")))?;
                out.push((i, to_sql(v)));
            }
            out
        }
        _ => {
            return Err(SqlError::Invalid(
                "params must be an array or an object".into(),
            ));
        }
    };
    if values.len() != count {
        return Err(SqlError::Invalid(format!(
            "the statement has {count} parameters, {} given",
            values.len()
        )));
    }
    for (i, v) in &values {
        stmt.raw_bind_parameter(*i, v)
            .map_err(|e| SqlError::Invalid(e.to_string()))?;
    }
    let names: Vec<String> = stmt.column_names().map(str::to_string).collect();
    let readonly = stmt.readonly();
    let mut rows = Vec::new();
    {
        let mut it = stmt.raw_query();
        while let Some(row) = it.next().map_err(map_err)? {
            if rows.len() == MAX_ROWS {
                return Err(SqlError::Invalid(format!(
                    "the statement returns more than {MAX_ROWS} rows; add a LIMIT"
                )));
            }
            let mut obj = Map::new();
            for (i, n) in names.iter().enumerate() {
                let v = row
                    .get_ref(i)
                    .map_err(|e| SqlError::Invalid(e.to_string()))?;
                obj.insert(n.clone(), from_sql(v));
            }
            rows.push(Value::Object(obj));
        }
    }
    drop(stmt);
    let affected = if readonly { 0 } else { conn.changes() };
    Ok(json!({"rows": rows, "affected_rows": affected}))
}

/// Why `action` is refused, or `None` when an STF may take it.
fn refusal(action: &AuthAction<'_>) -> Option<String> {
    use AuthAction as A;
    let what = match action {
        A::CreateIndex { .. }
        | A::CreateTable { .. }
        | A::CreateTempIndex { .. }
        | A::CreateTempTable { .. }
        | A::CreateTempTrigger { .. }
        | A::CreateTempView { .. }
        | A::CreateTrigger { .. }
        | A::CreateView { .. }
        | A::CreateVtable { .. } => "CREATE",
        A::DropIndex { .. }
        | A::DropTable { .. }
        | A::DropTempIndex { .. }
        | A::DropTempTable { .. }
        | A::DropTempTrigger { .. }
        | A::DropTempView { .. }
        | A::DropTrigger { .. }
        | A::DropView { .. }
        | A::DropVtable { .. } => "DROP",
        A::AlterTable { .. } => "ALTER",
        A::Attach { .. } | A::Detach { .. } => "ATTACH/DETACH",
        A::Pragma {
            pragma_value: Some(_),
            ..
        } => "a PRAGMA write",
        A::Reindex { .. } | A::Analyze { .. } => "REINDEX/ANALYZE",
        _ => return None,
    };
    Some(format!("{what} is not allowed through the SQL callback"))
}

fn to_sql(v: &Value) -> Sql {
    match v {
        Value::Null => Sql::Null,
        Value::Bool(b) => Sql::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Sql::Integer(i),
            None => Sql::Real(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => Sql::Text(s.clone()),
        other => Sql::Text(other.to_string()),
    }
}

fn from_sql(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => json!(i),
        ValueRef::Real(f) => json!(f),
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        // Blobs travel as lowercase hex: JSON has no bytes.
        ValueRef::Blob(b) => Value::String(b.iter().map(|x| format!("{x:02x}")).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dml_runs_and_ddl_is_refused() {
        let dir = std::env::temp_dir().join(format!("ductile-d6e-sql-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("ws.db");
        Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
            .unwrap();
        let r = execute(
            &db,
            "INSERT INTO t (name) VALUES (?1), (?2)",
            &json!(["a", "b"]),
        )
        .unwrap();
        assert_eq!(r["affected_rows"], 2);
        let r = execute(
            &db,
            "SELECT id, name FROM t WHERE name = :n",
            &json!({"n": "b"}),
        )
        .unwrap();
        assert_eq!(
            r,
            json!({"rows": [{"id": 2, "name": "b"}], "affected_rows": 0})
        );
        for ddl in [
            "CREATE TABLE u (x)",
            "create   index i on t(name)",
            "DROP TABLE t",
            "ALTER TABLE t ADD COLUMN z",
            "ATTACH DATABASE 'x.db' AS x",
            "PRAGMA journal_mode = DELETE",
        ] {
            assert!(
                matches!(execute(&db, ddl, &Value::Null), Err(SqlError::Refused(_))),
                "{ddl}"
            );
        }
        assert!(execute(&db, "PRAGMA user_version", &Value::Null).is_ok());
        assert!(matches!(
            execute(&db, "SELEC 1", &Value::Null),
            Err(SqlError::Invalid(_))
        ));
        assert!(matches!(
            execute(&db, "SELECT ?1", &json!([])),
            Err(SqlError::Invalid(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
