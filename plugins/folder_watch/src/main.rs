//! `folder_watch`: watches directory trees and emits what was added, modified
//! or removed since the last poll, one event per watch (aggregate) or per file;
//! its snapshot (`folder_watch.snapshot`) is every watched file's fingerprint.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use ductile_plugin::{Event, Level, Request, Response, Stopwatch, now_rfc3339, run};
use serde_json::{Map, Value, json};
use watch_core::{
    Globs, Strategy, WalkError, is_stable, observe, parse_bool, parse_duration, parse_string,
    sha256_hex, walk,
};

fn main() -> ExitCode {
    run(handle)
}

const DEFAULT_EVENT: &str = "folder_watch.changed";
const DEFAULT_MAX_FILES: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EmitMode {
    Aggregate,
    PerFile,
}

/// One configured watch.
#[derive(Debug, Clone)]
struct Watch {
    id: String,
    root: PathBuf,
    event_type: String,
    recursive: bool,
    globs: Globs,
    strategy: Strategy,
    emit_mode: EmitMode,
    emit_initial: bool,
    emit_deleted: bool,
    min_stable_age: Duration,
    max_files: usize,
}

fn parse(config: &Value) -> Result<Vec<Watch>, String> {
    let items = match config.get("watches") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err("config.watches is empty".into()),
        Some(v) => return Err(format!("config.watches must be a list, got {v}")),
        None => return Err("config.watches is required (a list of {id, root})".into()),
    };
    let mut watches: Vec<Watch> = Vec::new();
    for (i, w) in items.iter().enumerate() {
        let at = format!("config.watches[{i}]");
        let root = parse_string(w.get("root"), &format!("{at}.root"))?
            .ok_or_else(|| format!("{at}.root is required"))?;
        let id = parse_string(w.get("id"), &format!("{at}.id"))?.unwrap_or_else(|| root.clone());
        if watches.iter().any(|x| x.id == id) {
            return Err(format!("{at}.id `{id}` is used twice"));
        }
        let emit_mode = match w.get("emit_mode") {
            None | Some(Value::Null) => EmitMode::Aggregate,
            Some(Value::String(s)) if s == "aggregate" => EmitMode::Aggregate,
            Some(Value::String(s)) if s == "per_file" => EmitMode::PerFile,
            Some(v) => {
                return Err(format!(
                    "{at}.emit_mode must be `aggregate` or `per_file`, got {v}"
                ));
            }
        };
        let max_files = match w.get("max_files") {
            None | Some(Value::Null) => DEFAULT_MAX_FILES,
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{at}.max_files must be a positive integer, got {v}"))?,
        };
        watches.push(Watch {
            id,
            root: PathBuf::from(root),
            event_type: parse_string(w.get("event_type"), &format!("{at}.event_type"))?
                .unwrap_or_else(|| DEFAULT_EVENT.to_string()),
            recursive: parse_bool(w.get("recursive"), true, &format!("{at}.recursive"))?,
            globs: Globs::parse(w.get("include_globs"), w.get("exclude_globs"), &at)?,
            strategy: Strategy::parse(w.get("strategy"), &at)?,
            emit_mode,
            emit_initial: parse_bool(w.get("emit_initial"), false, &format!("{at}.emit_initial"))?,
            emit_deleted: parse_bool(w.get("emit_deleted"), true, &format!("{at}.emit_deleted"))?,
            min_stable_age: parse_duration(
                w.get("min_stable_age"),
                &format!("{at}.min_stable_age"),
            )?,
            max_files,
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
                .filter(|w| !w.root.is_dir())
                .map(|w| w.root.display().to_string())
                .collect();
            if missing.is_empty() {
                Response::ok(format!("healthy: {} watches", watches.len()))
            } else {
                Response::error(format!("not a directory: {}", missing.join(", ")))
            }
        }
        other => Response::unknown_command(other, &["poll", "health"]),
    }
}

/// The hash of a file map, stable for the same files and fingerprints.
fn snapshot_hash(files: &Map<String, Value>) -> String {
    let mut text = String::new();
    for (rel, fp) in files {
        text.push_str(rel);
        text.push('\0');
        text.push_str(fp.as_str().unwrap_or_default());
        text.push('\n');
    }
    sha256_hex(text.as_bytes())
}

/// What one watch saw.
struct Seen {
    files: Map<String, Value>,
    bytes: u64,
}

fn scan(w: &Watch, prev: Option<&Map<String, Value>>, now: SystemTime) -> Result<Seen, String> {
    let rels = walk(&w.root, w.recursive, w.max_files).map_err(|e| match e {
        WalkError::Io(dir, e) => format!("cannot read {}: {e}", dir.display()),
        WalkError::TooMany(n) => format!("more than max_files ({n}) files under the root"),
    })?;
    let mut files = Map::new();
    let mut bytes = 0u64;
    for rel in rels.into_iter().filter(|r| w.globs.accepts(r)) {
        let obs = observe(&w.root.join(&rel), w.strategy)
            .map_err(|e| format!("cannot read {rel}: {e}"))?;
        let Some(o) = obs else { continue };
        bytes += o.bytes_read;
        if is_stable(o.mtime_ns, w.min_stable_age, now) {
            files.insert(rel, Value::String(o.fingerprint));
        } else if let Some(fp) = prev.and_then(|p| p.get(&rel)) {
            // Still being written: the last settled version stands.
            files.insert(rel, fp.clone());
        }
    }
    // serde_json's preserve_order keeps insertion order; the walk was sorted.
    Ok(Seen { files, bytes })
}

fn poll(watches: &[Watch], state: &Value, now: SystemTime, now_text: &str) -> Response {
    let sw = Stopwatch::start("folder_watch.fingerprint_total");
    let mut snapshot = Map::new();
    let mut events = Vec::new();
    let mut problems = Vec::new();
    let mut bytes = 0u64;
    let mut total_files = 0u64;
    for w in watches {
        let root_text = w.root.display().to_string();
        let prev = state
            .get("watches")
            .and_then(|m| m.get(&w.id))
            .filter(|p| p.get("root").and_then(Value::as_str) == Some(root_text.as_str()));
        let prev_files = prev.and_then(|p| p.get("files")).and_then(Value::as_object);
        let seen = match scan(w, prev_files, now) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("{}: {e}", w.id));
                if let Some(p) = prev {
                    snapshot.insert(w.id.clone(), p.clone());
                }
                continue;
            }
        };
        bytes += seen.bytes;
        total_files += seen.files.len() as u64;
        let (added, modified, removed): (Vec<&String>, Vec<&String>, Vec<&String>) =
            match prev_files {
                None if w.emit_initial => (seen.files.keys().collect(), vec![], vec![]),
                None => (vec![], vec![], vec![]),
                Some(old) => (
                    seen.files
                        .keys()
                        .filter(|k| !old.contains_key(*k))
                        .collect(),
                    seen.files
                        .iter()
                        .filter(|(k, v)| old.get(*k).is_some_and(|o| o != *v))
                        .map(|(k, _)| k)
                        .collect(),
                    old.keys()
                        .filter(|k| !seen.files.contains_key(*k))
                        .collect(),
                ),
            };
        let reported_removed: Vec<&String> = if w.emit_deleted {
            removed.clone()
        } else {
            vec![]
        };
        let hash = snapshot_hash(&seen.files);
        let changed = prev_files.is_none_or(|old| *old != seen.files);
        let updated_at = match prev.and_then(|p| p.get("updated_at")) {
            Some(at) if !changed => at.clone(),
            _ => Value::String(now_text.to_string()),
        };
        match w.emit_mode {
            EmitMode::Aggregate
                if !(added.is_empty() && modified.is_empty() && reported_removed.is_empty()) =>
            {
                events.push(Event::new(
                    w.event_type.clone(),
                    json!({
                        "watch_id": w.id,
                        "root": root_text,
                        "added": added,
                        "modified": modified,
                        "removed": reported_removed,
                        "file_count": seen.files.len(),
                        "snapshot_hash": hash,
                    }),
                ));
            }
            EmitMode::Aggregate => {}
            EmitMode::PerFile => {
                let each = added
                    .iter()
                    .map(|r| (*r, "added"))
                    .chain(modified.iter().map(|r| (*r, "modified")))
                    .chain(reported_removed.iter().map(|r| (*r, "removed")));
                for (rel, change) in each {
                    events.push(Event::new(
                        w.event_type.clone(),
                        json!({
                            "watch_id": w.id,
                            "root": root_text,
                            "path": w.root.join(rel).display().to_string(),
                            "rel_path": rel,
                            "change": change,
                            "fingerprint": seen.files.get(rel),
                        }),
                    ));
                }
            }
        }
        let file_count = seen.files.len();
        snapshot.insert(
            w.id.clone(),
            json!({
                "root": root_text,
                "files": seen.files,
                "snapshot_hash": hash,
                "file_count": file_count,
                "strategy": w.strategy.as_str(),
                "updated_at": updated_at,
            }),
        );
    }
    let span = sw.ok().count(total_files).bytes(bytes);
    if !problems.is_empty() && problems.len() == watches.len() {
        // Nothing could be observed: worth another try (a mount coming back).
        return Response::error(problems.join("; ")).span(span);
    }
    let mut resp = Response::ok(format!(
        "{} watches, {} files, {} events",
        watches.len(),
        total_files,
        events.len()
    ))
    .events(events)
    .state(Map::from_iter([(
        "watches".to_string(),
        Value::Object(snapshot),
    )]))
    .span(span);
    for p in problems {
        resp = resp.log(Level::Warn, p);
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
        let p = std::env::temp_dir().join(format!("folder-watch-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }

    fn watch(root: &std::path::Path, extra: Value) -> Vec<Watch> {
        let mut w = json!({"id": "docs", "root": root});
        for (k, v) in extra.as_object().unwrap() {
            w[k] = v.clone();
        }
        parse(&json!({"watches": [w]})).unwrap()
    }

    fn step(ws: &[Watch], state: &Value) -> (Vec<Event>, Value) {
        let r = poll(ws, state, SystemTime::now(), "T");
        assert!(r.is_ok(), "{r:?}");
        (r.events, Value::Object(r.state_updates.clone().unwrap()))
    }

    #[test]
    fn aggregate_reports_added_modified_removed_and_is_deterministic() {
        let d = tmp("agg");
        fs::create_dir_all(d.0.join("sub")).unwrap();
        fs::write(d.0.join("a.md"), "a").unwrap();
        fs::write(d.0.join("sub/b.md"), "b").unwrap();
        fs::write(d.0.join("skip.txt"), "t").unwrap();
        let ws = watch(&d.0, json!({"include_globs": ["**/*.md"]}));
        let (ev, s1) = step(&ws, &json!({}));
        assert!(ev.is_empty(), "first poll quiet without emit_initial");
        assert_eq!(s1["watches"]["docs"]["file_count"], 2);
        let (ev, s2) = step(&ws, &s1);
        assert!(ev.is_empty());
        assert_eq!(s1.to_string(), s2.to_string(), "same files, same bytes");
        fs::write(d.0.join("a.md"), "a2").unwrap();
        fs::write(d.0.join("c.md"), "c").unwrap();
        fs::remove_file(d.0.join("sub/b.md")).unwrap();
        let (ev, s3) = step(&ws, &s2);
        assert_eq!(ev.len(), 1);
        let p = &ev[0].payload;
        assert_eq!(ev[0].event_type, "folder_watch.changed");
        assert_eq!(p["added"], json!(["c.md"]));
        assert_eq!(p["modified"], json!(["a.md"]));
        assert_eq!(p["removed"], json!(["sub/b.md"]));
        assert_eq!(p["snapshot_hash"], s3["watches"]["docs"]["snapshot_hash"]);
        assert_ne!(
            s3["watches"]["docs"]["snapshot_hash"],
            s2["watches"]["docs"]["snapshot_hash"]
        );
    }

    #[test]
    fn per_file_events_with_initial_and_without_deletions() {
        let d = tmp("per");
        fs::write(d.0.join("a.txt"), "a").unwrap();
        let ws = watch(
            &d.0,
            json!({"emit_mode": "per_file", "emit_initial": true, "emit_deleted": false, "event_type": "inbox.changed"}),
        );
        let (ev, s1) = step(&ws, &json!({}));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].event_type, "inbox.changed");
        assert_eq!(ev[0].payload["change"], "added");
        assert_eq!(ev[0].payload["rel_path"], "a.txt");
        assert_eq!(
            ev[0].payload["path"],
            d.0.join("a.txt").display().to_string()
        );
        fs::remove_file(d.0.join("a.txt")).unwrap();
        let (ev, s2) = step(&ws, &s1);
        assert!(ev.is_empty());
        assert_eq!(s2["watches"]["docs"]["file_count"], 0);
    }

    #[test]
    fn young_files_wait_and_non_recursive_stays_at_the_top() {
        let d = tmp("young");
        fs::create_dir_all(d.0.join("sub")).unwrap();
        fs::write(d.0.join("sub/deep.txt"), "x").unwrap();
        fs::write(d.0.join("top.txt"), "x").unwrap();
        let ws = watch(&d.0, json!({"recursive": false, "min_stable_age": "1h"}));
        let (_, s1) = step(&ws, &json!({}));
        assert_eq!(s1["watches"]["docs"]["file_count"], 0, "too young");
        let r = poll(
            &ws,
            &s1,
            SystemTime::now() + Duration::from_secs(7200),
            "T2",
        );
        assert_eq!(r.events[0].payload["added"], json!(["top.txt"]));
    }

    #[test]
    fn a_missing_root_is_a_retryable_error_and_bad_config_permanent() {
        let ws = watch(std::path::Path::new("/nonexistent/folder-watch"), json!({}));
        let r = poll(&ws, &json!({}), SystemTime::now(), "T");
        assert!(!r.is_ok() && r.retry());
        assert!(parse(&json!({"watches": [{"root": "/x", "emit_mode": "batch"}]})).is_err());
        assert!(
            parse(&json!({"watches": [{"id": "x"}]}))
                .unwrap_err()
                .contains("root")
        );
    }
}
