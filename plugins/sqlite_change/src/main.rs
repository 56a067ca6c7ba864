//! `sqlite_change`: runs one read-only scalar query against a SQLite file and
//! emits an event when the value changes, or when it crosses a threshold; its
//! snapshot (`sqlite_change.snapshot`) is the last value seen.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ductile_plugin::{Request, Response, Stopwatch, now_rfc3339, run};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde_json::{Map, Value, json};

fn main() -> ExitCode {
    run(handle)
}

const DEFAULT_EVENT: &str = "sqlite_change.changed";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Trigger {
    /// Any change of the value.
    Change,
    /// Only a crossing of the threshold, in the given direction(s).
    Threshold(f64, Direction),
}

#[derive(Debug)]
struct Config {
    db_path: PathBuf,
    query: String,
    event_type: String,
    trigger: Trigger,
    emit_initial: bool,
    busy_timeout: Duration,
}

fn parse(c: &Value) -> Result<Config, String> {
    let text = |k: &str| match c.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(v) => Err(format!("config.{k} must be a non-empty string, got {v}")),
    };
    let db_path = text("db_path")?.ok_or("config.db_path is required")?;
    let query = text("query")?.ok_or("config.query is required (a SELECT returning one value)")?;
    let direction = match text("direction")?.as_deref() {
        None | Some("both") => Direction::Both,
        Some("up") | Some("rising") => Direction::Up,
        Some("down") | Some("falling") => Direction::Down,
        Some(other) => {
            return Err(format!(
                "config.direction must be up, down or both, got {other}"
            ));
        }
    };
    let trigger = match c.get("threshold") {
        None | Some(Value::Null) => Trigger::Change,
        Some(v) => Trigger::Threshold(
            v.as_f64()
                .ok_or_else(|| format!("config.threshold must be a number, got {v}"))?,
            direction,
        ),
    };
    let emit_initial = match c.get("emit_initial") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(format!(
                "config.emit_initial must be true or false, got {v}"
            ));
        }
    };
    let busy_timeout = match c.get("busy_timeout_ms") {
        None | Some(Value::Null) => Duration::from_secs(5),
        Some(v) => Duration::from_millis(
            v.as_u64()
                .ok_or_else(|| format!("config.busy_timeout_ms must be an integer, got {v}"))?,
        ),
    };
    Ok(Config {
        db_path: PathBuf::from(db_path),
        query,
        event_type: text("event_type")?.unwrap_or_else(|| DEFAULT_EVENT.to_string()),
        trigger,
        emit_initial,
        busy_timeout,
    })
}

fn handle(req: &Request) -> Response {
    let cfg = match parse(&req.config) {
        Ok(c) => c,
        Err(e) => return Response::permanent(e),
    };
    match req.command.as_str() {
        "poll" => poll(&cfg, &req.state, &now_rfc3339()),
        "health" => match open(&cfg).and_then(|c| prepare_check(&c, &cfg.query)) {
            Ok(()) => Response::ok(format!(
                "healthy: {} opens read-only and the query prepares",
                cfg.db_path.display()
            )),
            Err(e) => e.into_response(),
        },
        other => Response::unknown_command(other, &["poll", "health"]),
    }
}

/// Why the query could not be answered, and whether trying again may help.
#[derive(Debug)]
enum Failure {
    /// The file or a lock may come good (a mount, a busy writer).
    Retry(String),
    /// The config or the query is wrong.
    Permanent(String),
}

impl Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::Retry(m) => Response::error(m),
            Failure::Permanent(m) => Response::permanent(m),
        }
    }
}

/// Opens the file read-only: the plugin can never change what it watches.
fn open(cfg: &Config) -> Result<Connection, Failure> {
    let conn = Connection::open_with_flags(
        &cfg.db_path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| {
        // A missing file may be a mount not there yet: retryable.
        Failure::Retry(format!(
            "cannot open {} read-only: {e}",
            cfg.db_path.display()
        ))
    })?;
    conn.busy_timeout(cfg.busy_timeout)
        .and_then(|()| conn.pragma_update(None, "query_only", true))
        .map_err(|e| Failure::Retry(format!("cannot set up {}: {e}", cfg.db_path.display())))?;
    Ok(conn)
}

fn prepare_check(conn: &Connection, query: &str) -> Result<(), Failure> {
    let stmt = conn
        .prepare(query)
        .map_err(|e| Failure::Permanent(format!("the query does not prepare: {e}")))?;
    if !stmt.readonly() {
        return Err(Failure::Permanent("the query is not read-only".into()));
    }
    Ok(())
}

/// The first column of the first row (null when there is no row).
fn scalar(conn: &Connection, query: &str) -> Result<Value, Failure> {
    prepare_check(conn, query)?;
    let mut stmt = conn
        .prepare(query)
        .map_err(|e| Failure::Permanent(format!("the query does not prepare: {e}")))?;
    let mut rows = stmt
        .query([])
        .map_err(|e| Failure::Retry(format!("the query failed: {e}")))?;
    let row = rows
        .next()
        .map_err(|e| Failure::Retry(format!("the query failed: {e}")))?;
    let Some(row) = row else {
        return Ok(Value::Null);
    };
    let v = row
        .get_ref(0)
        .map_err(|e| Failure::Permanent(format!("the query returns no column: {e}")))?;
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => json!(i),
        ValueRef::Real(f) => json!(f),
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::String(b.iter().map(|x| format!("{x:02x}")).collect()),
    })
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// What the change from `prev` to `now` triggers, if anything.
fn triggered(trigger: Trigger, prev: &Value, now: &Value) -> Option<&'static str> {
    match trigger {
        Trigger::Change => (prev != now).then_some("changed"),
        Trigger::Threshold(t, dir) => {
            let (p, n) = (number(prev)?, number(now)?);
            match (p >= t, n >= t) {
                (false, true) if dir != Direction::Down => Some("crossed_up"),
                (true, false) if dir != Direction::Up => Some("crossed_down"),
                _ => None,
            }
        }
    }
}

fn poll(cfg: &Config, state: &Value, now_text: &str) -> Response {
    let sw = Stopwatch::start("sqlite_change.query");
    let value = match open(cfg).and_then(|c| scalar(&c, &cfg.query)) {
        Ok(v) => v,
        Err(e) => return e.into_response().span(sw.err()),
    };
    let span = sw.ok();
    // A previous value counts only for the same file and query.
    let prev = state.as_object().filter(|s| {
        s.get("db_path").and_then(Value::as_str) == Some(&cfg.db_path.display().to_string())
            && s.get("query").and_then(Value::as_str) == Some(cfg.query.as_str())
    });
    let prev_value = prev.and_then(|p| p.get("last_result")).cloned();
    let what = match &prev_value {
        None => cfg.emit_initial.then_some("initial"),
        Some(p) => triggered(cfg.trigger, p, &value),
    };
    let changed = prev_value.as_ref() != Some(&value);
    let changed_at = match prev.and_then(|p| p.get("last_changed_at")) {
        Some(at) if !changed => at.clone(),
        _ => Value::String(now_text.to_string()),
    };
    let snapshot = Map::from_iter([
        (
            "db_path".to_string(),
            Value::String(cfg.db_path.display().to_string()),
        ),
        ("query".to_string(), Value::String(cfg.query.clone())),
        ("last_result".to_string(), value.clone()),
        ("last_changed_at".to_string(), changed_at),
    ]);
    let mut resp = Response::ok(format!(
        "result={value}{}",
        what.map(|w| format!(" ({w})")).unwrap_or_default()
    ))
    .state(snapshot)
    .span(span);
    if let Some(what) = what {
        let threshold = match cfg.trigger {
            Trigger::Threshold(t, _) => json!(t),
            Trigger::Change => Value::Null,
        };
        resp = resp.event(
            cfg.event_type.clone(),
            json!({
                "result": value,
                "previous_result": prev_value,
                "trigger": what,
                "threshold": threshold,
                "db_path": cfg.db_path.display().to_string(),
            }),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Db(PathBuf);
    impl Drop for Db {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    fn db(tag: &str, n: i64) -> Db {
        let p = std::env::temp_dir().join(format!("sqlite-change-{tag}-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let c = Connection::open(&p).unwrap();
        c.execute_batch("CREATE TABLE t (n INTEGER)").unwrap();
        c.execute("INSERT INTO t VALUES (?1)", [n]).unwrap();
        Db(p)
    }
    fn set(d: &Db, n: i64) {
        Connection::open(&d.0)
            .unwrap()
            .execute("UPDATE t SET n = ?1", [n])
            .unwrap();
    }
    fn step(cfg: &Config, state: &Value) -> (Vec<ductile_plugin::Event>, Value) {
        let r = poll(cfg, state, "T");
        assert!(r.is_ok(), "{r:?}");
        (r.events, Value::Object(r.state_updates.clone().unwrap()))
    }

    #[test]
    fn a_change_of_the_value_emits_once() {
        let d = db("change", 1);
        let cfg = parse(&json!({"db_path": d.0, "query": "SELECT n FROM t"})).unwrap();
        let (ev, s1) = step(&cfg, &json!({}));
        assert!(ev.is_empty());
        assert_eq!(s1["last_result"], 1);
        let (ev, s2) = step(&cfg, &s1);
        assert!(ev.is_empty());
        assert_eq!(s1, s2, "deterministic when nothing changed");
        set(&d, 2);
        let (ev, _) = step(&cfg, &s2);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].event_type, "sqlite_change.changed");
        assert_eq!(ev[0].payload["result"], 2);
        assert_eq!(ev[0].payload["previous_result"], 1);
    }

    #[test]
    fn a_threshold_fires_only_on_crossing() {
        let d = db("threshold", 5);
        let cfg = parse(&json!({"db_path": d.0, "query": "SELECT n FROM t", "threshold": 10, "direction": "up"})).unwrap();
        let (_, s) = step(&cfg, &json!({}));
        set(&d, 8);
        let (ev, s) = step(&cfg, &s);
        assert!(ev.is_empty(), "below, not crossed");
        set(&d, 12);
        let (ev, s) = step(&cfg, &s);
        assert_eq!(ev[0].payload["trigger"], "crossed_up");
        set(&d, 15);
        let (ev, s) = step(&cfg, &s);
        assert!(ev.is_empty(), "still above");
        set(&d, 3);
        let (ev, _) = step(&cfg, &s);
        assert!(ev.is_empty(), "down is not watched");
        assert_eq!(
            triggered(
                Trigger::Threshold(10.0, Direction::Both),
                &json!(12),
                &json!("3")
            ),
            Some("crossed_down")
        );
    }

    #[test]
    fn writes_are_refused_and_the_file_is_never_changed() {
        let d = db("ro", 1);
        let cfg = parse(&json!({"db_path": d.0, "query": "DELETE FROM t"})).unwrap();
        let r = poll(&cfg, &json!({}), "T");
        assert!(!r.is_ok() && !r.retry());
        assert!(r.error_message().unwrap().contains("read-only"), "{r:?}");
        let n: i64 = Connection::open(&d.0)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        let missing = parse(&json!({"db_path": "/nonexistent/x.db", "query": "SELECT 1"})).unwrap();
        let r = poll(&missing, &json!({}), "T");
        assert!(!r.is_ok() && r.retry(), "{r:?}");
        assert!(parse(&json!({"query": "SELECT 1"})).is_err());
    }

    #[test]
    fn emit_initial_and_health() {
        let d = db("init", 4);
        let cfg = parse(&json!({"db_path": d.0, "query": "SELECT n FROM t", "emit_initial": true, "event_type": "count.seen"})).unwrap();
        let (ev, _) = step(&cfg, &json!({}));
        assert_eq!(ev[0].event_type, "count.seen");
        assert_eq!(ev[0].payload["trigger"], "initial");
        let req = Request::from_slice(
            json!({"protocol": 2, "command": "health", "config": {"db_path": d.0, "query": "SELECT n FROM t"}})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        let h = handle(&req);
        assert!(h.is_ok() && h.state_updates.is_none(), "{h:?}");
    }
}
