//! `file_watch`: watches individual files and emits one event per file that
//! appears, changes or goes; its snapshot (`file_watch.snapshot`) is what it
//! saw last, per watch.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use ductile_plugin::{Event, Level, Request, Response, Span, Stopwatch, now_rfc3339, run};
use serde_json::{Map, Value, json};
use watch_core::{Strategy, is_stable, observe, parse_bool, parse_duration, parse_string};

fn main() -> ExitCode {
    run(handle)
}

const DEFAULT_EVENT: &str = "file_watch.changed";

/// One configured watch.
#[derive(Debug, Clone)]
struct Watch {
    id: String,
    path: PathBuf,
    event_type: String,
    strategy: Strategy,
    emit_initial: bool,
    emit_deleted: bool,
    min_stable_age: Duration,
}

fn parse(config: &Value) -> Result<Vec<Watch>, String> {
    let items = match config.get("watches") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err("config.watches is empty".into()),
        Some(v) => return Err(format!("config.watches must be a list, got {v}")),
        None => return Err("config.watches is required (a list of {id, path})".into()),
    };
    let mut watches: Vec<Watch> = Vec::new();
    for (i, w) in items.iter().enumerate() {
        let at = format!("config.watches[{i}]");
        let path = parse_string(w.get("path"), &format!("{at}.path"))?
            .ok_or_else(|| format!("{at}.path is required"))?;
        let id = parse_string(w.get("id"), &format!("{at}.id"))?.unwrap_or_else(|| path.clone());
        if watches.iter().any(|x| x.id == id) {
            return Err(format!("{at}.id `{id}` is used twice"));
        }
        watches.push(Watch {
            id,
            path: PathBuf::from(path),
            event_type: parse_string(w.get("event_type"), &format!("{at}.event_type"))?
                .unwrap_or_else(|| DEFAULT_EVENT.to_string()),
            strategy: Strategy::parse(w.get("strategy"), &at)?,
            emit_initial: parse_bool(w.get("emit_initial"), false, &format!("{at}.emit_initial"))?,
            emit_deleted: parse_bool(w.get("emit_deleted"), true, &format!("{at}.emit_deleted"))?,
            min_stable_age: parse_duration(
                w.get("min_stable_age"),
                &format!("{at}.min_stable_age"),
            )?,
        });
    }
    Ok(watches)
}

fn handle(req: &Request) -> Response {
    let watches = match parse(&req.config) {
        Ok(w) => w,
        Err(e) => return Response::permanent(e),
    };
    match req.command.as_str() {
        "poll" => poll(&watches, &req.state, SystemTime::now(), &now_rfc3339()),
        "health" => {
            let missing: Vec<String> = watches
                .iter()
                .filter(|w| !w.path.exists())
                .map(|w| w.path.display().to_string())
                .collect();
            let mut r = Response::ok(format!(
                "healthy: {} watches, {} present",
                watches.len(),
                watches.len() - missing.len()
            ));
            if !missing.is_empty() {
                r = r.log(
                    Level::Info,
                    format!("not there yet: {}", missing.join(", ")),
                );
            }
            r
        }
        other => Response::unknown_command(other, &["poll", "health"]),
    }
}

/// One entry of the snapshot, from an observation.
fn entry(w: &Watch, obs: Option<&watch_core::Observed>, updated_at: &str) -> Value {
    json!({
        "exists": obs.is_some(),
        "fingerprint": obs.map(|o| o.fingerprint.clone()),
        "size": obs.map(|o| o.size),
        "mtime_ns": obs.map(|o| i64::try_from(o.mtime_ns).unwrap_or(i64::MAX)),
        "path": w.path.display().to_string(),
        "strategy": w.strategy.as_str(),
        "updated_at": updated_at,
    })
}

fn poll(watches: &[Watch], state: &Value, now: SystemTime, now_text: &str) -> Response {
    let sw = Stopwatch::start("file_watch.fingerprint_total");
    let mut snapshot = Map::new();
    let mut events = Vec::new();
    let mut logs = Vec::new();
    let mut bytes = 0u64;
    for w in watches {
        // A previous entry counts only for the same file watched the same way.
        let prev = state.get("watches").and_then(|m| m.get(&w.id)).filter(|p| {
            p.get("path").and_then(Value::as_str) == Some(&w.path.display().to_string())
                && p.get("strategy").and_then(Value::as_str) == Some(w.strategy.as_str())
        });
        let obs = match observe(&w.path, w.strategy) {
            Ok(o) => o,
            Err(e) => {
                logs.push(format!("{}: cannot read {}: {e}", w.id, w.path.display()));
                if let Some(p) = prev {
                    snapshot.insert(w.id.clone(), p.clone());
                } else {
                    snapshot.insert(w.id.clone(), entry(w, None, now_text));
                }
                continue;
            }
        };
        if let Some(o) = &obs {
            bytes += o.bytes_read;
            if !is_stable(o.mtime_ns, w.min_stable_age, now) {
                // Still being written: keep what was known, look again next poll.
                let kept = prev.cloned().unwrap_or_else(|| entry(w, None, now_text));
                snapshot.insert(w.id.clone(), kept);
                continue;
            }
        }
        let prev_fp = prev
            .and_then(|p| p.get("fingerprint"))
            .and_then(Value::as_str);
        let prev_exists = prev.and_then(|p| p.get("exists")).and_then(Value::as_bool);
        let change = match (prev, prev_exists, &obs) {
            (None, _, Some(_)) if w.emit_initial => Some("initial"),
            (None, _, _) => None,
            (Some(_), Some(true), None) => w.emit_deleted.then_some("deleted"),
            (Some(_), Some(true), Some(o)) if prev_fp != Some(o.fingerprint.as_str()) => {
                Some("modified")
            }
            (Some(_), Some(true), Some(_)) => None,
            (Some(_), _, Some(_)) => Some("created"),
            (Some(_), _, None) => None,
        };
        let observed_change = match (prev, prev_exists, &obs) {
            (None, _, _) => true,
            (Some(_), Some(true), Some(o)) => prev_fp != Some(o.fingerprint.as_str()),
            (Some(_), Some(true), None) => true,
            (Some(_), _, Some(_)) => true,
            (Some(_), _, None) => false,
        };
        let new_entry = match prev {
            Some(p) if !observed_change => p.clone(),
            _ => entry(w, obs.as_ref(), now_text),
        };
        if let Some(change) = change {
            events.push(Event::new(
                w.event_type.clone(),
                json!({
                    "watch_id": w.id,
                    "path": w.path.display().to_string(),
                    "change": change,
                    "fingerprint": new_entry["fingerprint"],
                    "previous_fingerprint": prev_fp,
                    "size": new_entry["size"],
                    "mtime_ns": new_entry["mtime_ns"],
                    "strategy": w.strategy.as_str(),
                }),
            ));
        }
        snapshot.insert(w.id.clone(), new_entry);
    }
    let span: Span = sw.ok().count(watches.len() as u64).bytes(bytes);
    let mut resp = Response::ok(format!(
        "{} watches, {} changes",
        watches.len(),
        events.len()
    ))
    .events(events)
    .state(Map::from_iter([(
        "watches".to_string(),
        Value::Object(snapshot),
    )]))
    .span(span);
    for l in logs {
        resp = resp.log(Level::Warn, l);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    fn tmp(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("file-watch-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }

    fn watches(path: &std::path::Path, extra: Value) -> Vec<Watch> {
        let mut w = json!({"id": "w", "path": path});
        for (k, v) in extra.as_object().unwrap() {
            w[k] = v.clone();
        }
        parse(&json!({"watches": [w]})).unwrap()
    }

    fn step(ws: &[Watch], state: &Value) -> (Vec<Event>, Value) {
        let r = poll(ws, state, SystemTime::now(), "T");
        assert!(r.is_ok());
        let state = Value::Object(r.state_updates.clone().unwrap());
        (r.events, state)
    }

    #[test]
    fn first_poll_is_quiet_then_changes_and_deletion_emit() {
        let d = tmp("cycle");
        let f = d.0.join("a.txt");
        fs::write(&f, "one").unwrap();
        let ws = watches(&f, json!({}));
        let (ev, s1) = step(&ws, &json!({}));
        assert!(ev.is_empty());
        assert_eq!(s1["watches"]["w"]["exists"], true);
        let (ev, s2) = step(&ws, &s1);
        assert!(ev.is_empty());
        assert_eq!(s1, s2, "nothing changed: the same snapshot bytes");
        fs::write(&f, "two").unwrap();
        let (ev, s3) = step(&ws, &s2);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].event_type, "file_watch.changed");
        assert_eq!(ev[0].payload["change"], "modified");
        assert_eq!(
            ev[0].payload["previous_fingerprint"],
            s2["watches"]["w"]["fingerprint"]
        );
        fs::remove_file(&f).unwrap();
        let (ev, s4) = step(&ws, &s3);
        assert_eq!(ev[0].payload["change"], "deleted");
        assert_eq!(s4["watches"]["w"]["exists"], false);
        fs::write(&f, "back").unwrap();
        let (ev, _) = step(&ws, &s4);
        assert_eq!(ev[0].payload["change"], "created");
    }

    #[test]
    fn options_initial_deleted_and_event_type() {
        let d = tmp("opts");
        let f = d.0.join("a.txt");
        fs::write(&f, "x").unwrap();
        let ws = watches(
            &f,
            json!({"emit_initial": true, "emit_deleted": false, "event_type": "conf.changed"}),
        );
        let (ev, s1) = step(&ws, &json!({}));
        assert_eq!(ev[0].event_type, "conf.changed");
        assert_eq!(ev[0].payload["change"], "initial");
        fs::remove_file(&f).unwrap();
        let (ev, s2) = step(&ws, &s1);
        assert!(ev.is_empty(), "deletions not emitted");
        assert_eq!(s2["watches"]["w"]["exists"], false);
    }

    #[test]
    fn a_file_still_being_written_waits_for_min_stable_age() {
        let d = tmp("stable");
        let f = d.0.join("a.txt");
        fs::write(&f, "x").unwrap();
        let ws = watches(&f, json!({"min_stable_age": "1h"}));
        let (_, s1) = step(
            &ws,
            &json!({"watches": {"w": {"exists": false, "path": f, "strategy": "sha256"}}}),
        );
        assert_eq!(s1["watches"]["w"]["exists"], false, "too young to count");
        let later = SystemTime::now() + Duration::from_secs(7200);
        let r = poll(&ws, &s1, later, "T2");
        assert_eq!(r.events[0].payload["change"], "created");
    }

    #[test]
    fn mtime_size_strategy_and_config_errors() {
        let d = tmp("mtime");
        let f = d.0.join("a.txt");
        fs::write(&f, "x").unwrap();
        let ws = watches(&f, json!({"strategy": "mtime_size"}));
        let (_, s1) = step(&ws, &json!({}));
        assert!(
            s1["watches"]["w"]["fingerprint"]
                .as_str()
                .unwrap()
                .ends_with("-1")
        );
        assert!(parse(&json!({})).unwrap_err().contains("required"));
        assert!(
            parse(&json!({"watches": [{"id": "a"}]}))
                .unwrap_err()
                .contains("path")
        );
        assert!(
            parse(&json!({"watches": [{"path": "/a", "strategy": "md5"}]}))
                .unwrap_err()
                .contains("strategy")
        );
        assert!(
            parse(&json!({"watches": [{"path": "/a", "id": "x"}, {"path": "/b", "id": "x"}]}))
                .unwrap_err()
                .contains("twice")
        );
    }
}
