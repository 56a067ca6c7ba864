//! `file_handler`: reads and writes files, only under the configured allowed
//! paths. Every path is checked after canonicalisation, so neither `..` nor a
//! symlink can lead outside them.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use ductile_plugin::{Request, Response, Stopwatch, run};
use serde_json::{Value, json};

fn main() -> ExitCode {
    run(handle)
}

const DEFAULT_MAX_READ: u64 = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Auto,
    Read,
    Write,
}

#[derive(Debug)]
struct Config {
    read_roots: Vec<PathBuf>,
    write_roots: Vec<PathBuf>,
    default_output_dir: Option<PathBuf>,
    action: Action,
    max_read_bytes: u64,
    overwrite: bool,
}

fn paths(v: Option<&Value>, key: &str) -> Result<Vec<PathBuf>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(vec![PathBuf::from(s)]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) if !s.trim().is_empty() => Ok(PathBuf::from(s)),
                other => Err(format!("config.{key} must hold paths, got {other}")),
            })
            .collect(),
        Some(v) => Err(format!(
            "config.{key} must be a path or a list of paths, got {v}"
        )),
    }
}

impl Config {
    fn parse(c: &Value) -> Result<Config, String> {
        let action = match c.get("action") {
            None | Some(Value::Null) => Action::Auto,
            Some(Value::String(s)) if s == "auto" => Action::Auto,
            Some(Value::String(s)) if s == "read" => Action::Read,
            Some(Value::String(s)) if s == "write" => Action::Write,
            Some(v) => {
                return Err(format!(
                    "config.action must be auto, read or write, got {v}"
                ));
            }
        };
        let max_read_bytes = match c.get("max_read_bytes") {
            None | Some(Value::Null) => DEFAULT_MAX_READ,
            Some(v) => v.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                format!("config.max_read_bytes must be a positive integer, got {v}")
            })?,
        };
        let overwrite = match c.get("overwrite") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(format!("config.overwrite must be true or false, got {v}")),
        };
        let cfg = Config {
            read_roots: paths(c.get("allowed_read_paths"), "allowed_read_paths")?,
            write_roots: paths(c.get("allowed_write_paths"), "allowed_write_paths")?,
            default_output_dir: paths(c.get("default_output_dir"), "default_output_dir")?
                .into_iter()
                .next(),
            action,
            max_read_bytes,
            overwrite,
        };
        if cfg.read_roots.is_empty() && cfg.write_roots.is_empty() {
            return Err(
                "config needs allowed_read_paths or allowed_write_paths (nothing is allowed otherwise)"
                    .into(),
            );
        }
        Ok(cfg)
    }
}

/// The canonical forms of the roots that exist (a missing root allows nothing).
fn canonical_roots(roots: &[PathBuf]) -> Vec<PathBuf> {
    roots
        .iter()
        .filter_map(|r| fs::canonicalize(r).ok())
        .collect()
}

fn under(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| path.starts_with(r))
}

fn handle(req: &Request) -> Response {
    let cfg = match Config::parse(&req.config) {
        Ok(c) => c,
        Err(e) => return Response::permanent(e),
    };
    match req.command.as_str() {
        "read" => read(&cfg, req),
        "write" => write(&cfg, req),
        "handle" => match cfg.action {
            Action::Read => read(&cfg, req),
            Action::Write => write(&cfg, req),
            // Content to store means a write; a bare path means a read.
            Action::Auto if content(req).is_some() => write(&cfg, req),
            Action::Auto => read(&cfg, req),
        },
        "health" => {
            let missing: Vec<String> = cfg
                .read_roots
                .iter()
                .chain(&cfg.write_roots)
                .filter(|r| !r.is_dir())
                .map(|r| r.display().to_string())
                .collect();
            if missing.is_empty() {
                Response::ok(format!(
                    "healthy: {} read roots, {} write roots",
                    cfg.read_roots.len(),
                    cfg.write_roots.len()
                ))
            } else {
                Response::error(format!(
                    "allowed path is not a directory: {}",
                    missing.join(", ")
                ))
            }
        }
        other => Response::unknown_command(other, &["handle", "read", "write", "health"]),
    }
}

fn content(req: &Request) -> Option<String> {
    ["content", "result", "text"]
        .iter()
        .find_map(|k| req.value(k).and_then(Value::as_str).map(str::to_string))
}

fn read(cfg: &Config, req: &Request) -> Response {
    let Some(raw) = req
        .value_text("path")
        .or_else(|| req.value_text("file_path"))
    else {
        return Response::permanent("read needs `path` (or `file_path`) in the payload");
    };
    let roots = canonical_roots(&cfg.read_roots);
    let path = match fs::canonicalize(&raw) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // It may appear later (a slow mount); a retry can help.
            return Response::error(format!("{raw} does not exist"));
        }
        Err(e) => return Response::error(format!("cannot resolve {raw}: {e}")),
    };
    if !under(&path, &roots) {
        return Response::permanent(format!(
            "{raw} resolves to {}, outside allowed_read_paths",
            path.display()
        ));
    }
    let sw = Stopwatch::start("file_handler.read");
    let mut bytes = Vec::new();
    let read =
        fs::File::open(&path).and_then(|f| f.take(cfg.max_read_bytes + 1).read_to_end(&mut bytes));
    if let Err(e) = read {
        return Response::error(format!("cannot read {}: {e}", path.display()));
    }
    if bytes.len() as u64 > cfg.max_read_bytes {
        return Response::permanent(format!(
            "{} is larger than max_read_bytes ({})",
            path.display(),
            cfg.max_read_bytes
        ));
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let filename = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let span = sw.ok().bytes(bytes.len() as u64);
    Response::ok(format!("read {} ({} bytes)", path.display(), bytes.len()))
        .event(
            "file_handler.read",
            json!({
                "path": path.display().to_string(),
                "filename": filename,
                "content": text,
                "text": text,
                "size": bytes.len(),
                "source_type": "file",
            }),
        )
        .span(span)
}

/// A relative path of plain names only: no root, no `.`/`..`, not empty.
fn plain_relative(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    let ok = !name.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then(|| p.to_path_buf())
}

fn write(cfg: &Config, req: &Request) -> Response {
    let Some(body) = content(req) else {
        return Response::permanent("write needs `content` (or `result`, `text`) in the payload");
    };
    // Where: output_path, else output_dir (or default_output_dir) + filename.
    let (dir, name) = match req.value_text("output_path") {
        Some(op) => {
            let p = PathBuf::from(&op);
            match (p.parent(), p.file_name()) {
                (Some(d), Some(n)) => (d.to_path_buf(), n.to_string_lossy().into_owned()),
                _ => return Response::permanent(format!("output_path {op} names no file")),
            }
        }
        None => {
            let dir = req
                .value_text("output_dir")
                .map(PathBuf::from)
                .or_else(|| cfg.default_output_dir.clone());
            let name = req.value_text("filename").or_else(|| {
                req.value_text("path").and_then(|p| {
                    Path::new(&p)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                })
            });
            match (dir, name) {
                (Some(d), Some(n)) => (d, n),
                (None, _) => {
                    return Response::permanent(
                        "write needs `output_dir` in the payload or default_output_dir in config",
                    );
                }
                (_, None) => {
                    return Response::permanent("write needs `filename` (or `output_path`)");
                }
            }
        }
    };
    let Some(rel) = plain_relative(&name) else {
        return Response::permanent(format!(
            "filename {name:?} must be a relative path of plain names (no `..`)"
        ));
    };
    let roots = canonical_roots(&cfg.write_roots);
    let target_dir = dir
        .join(&rel)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or(dir.clone());
    // The nearest existing ancestor decides before anything is created.
    let mut probe = target_dir.clone();
    let existing = loop {
        match fs::canonicalize(&probe) {
            Ok(p) => break p,
            Err(_) => match probe.parent() {
                Some(up) => probe = up.to_path_buf(),
                None => {
                    return Response::permanent(format!("{} cannot be resolved", dir.display()));
                }
            },
        }
    };
    if !under(&existing, &roots) {
        return Response::permanent(format!(
            "{} resolves to {}, outside allowed_write_paths",
            target_dir.display(),
            existing.display()
        ));
    }
    if let Err(e) = fs::create_dir_all(&target_dir) {
        return Response::error(format!("cannot create {}: {e}", target_dir.display()));
    }
    let canon_dir = match fs::canonicalize(&target_dir) {
        Ok(d) if under(&d, &roots) => d,
        Ok(d) => {
            return Response::permanent(format!(
                "{} resolves to {}, outside allowed_write_paths",
                target_dir.display(),
                d.display()
            ));
        }
        Err(e) => return Response::error(format!("cannot resolve {}: {e}", target_dir.display())),
    };
    let file_name = rel
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let target = canon_dir.join(&file_name);
    match fs::symlink_metadata(&target) {
        Ok(m) if m.file_type().is_symlink() => {
            return Response::permanent(format!(
                "{} is a symlink; not written through",
                target.display()
            ));
        }
        Ok(m) if !m.is_file() => {
            return Response::permanent(format!(
                "{} exists and is not a regular file",
                target.display()
            ));
        }
        Ok(_) if !cfg.overwrite => {
            return Response::permanent(format!(
                "{} exists and overwrite is false",
                target.display()
            ));
        }
        _ => {}
    }
    let sw = Stopwatch::start("file_handler.write");
    // A reader never sees half a file: write beside it, then rename over.
    let tmp = canon_dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let written = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(body.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&tmp, &target));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Response::error(format!("cannot write {}: {e}", target.display()));
    }
    let span = sw.ok().bytes(body.len() as u64);
    Response::ok(format!("wrote {} ({} bytes)", target.display(), body.len()))
        .event(
            "file_handler.written",
            json!({
                "path": target.display().to_string(),
                "output_path": target.display().to_string(),
                "filename": file_name.to_string_lossy(),
                "size": body.len(),
            }),
        )
        .span(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    fn tmp(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("file-handler-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(p.join("in")).unwrap();
        fs::create_dir_all(p.join("out")).unwrap();
        fs::create_dir_all(p.join("secret")).unwrap();
        Tmp(p)
    }

    fn req(command: &str, config: Value, payload: Value) -> Request {
        Request::from_slice(
            json!({"protocol": 2, "command": command, "config": config,
                   "event": {"type": "x.y", "payload": payload}})
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    fn config(d: &Tmp) -> Value {
        json!({"allowed_read_paths": [d.0.join("in")], "allowed_write_paths": d.0.join("out"),
               "default_output_dir": d.0.join("out")})
    }

    #[test]
    fn reads_inside_and_refuses_traversal_and_symlink_escapes() {
        let d = tmp("read");
        fs::write(d.0.join("in/a.txt"), "hello").unwrap();
        fs::write(d.0.join("secret/s.txt"), "no").unwrap();
        std::os::unix::fs::symlink(d.0.join("secret/s.txt"), d.0.join("in/link.txt")).unwrap();
        let r = handle(&req(
            "read",
            config(&d),
            json!({"path": d.0.join("in/a.txt")}),
        ));
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(r.events[0].event_type, "file_handler.read");
        assert_eq!(r.events[0].payload["content"], "hello");
        assert_eq!(r.events[0].payload["filename"], "a.txt");
        for bad in [d.0.join("in/../secret/s.txt"), d.0.join("in/link.txt")] {
            let r = handle(&req("read", config(&d), json!({"path": bad})));
            assert!(!r.is_ok() && !r.retry(), "{r:?}");
            assert!(
                r.error_message()
                    .unwrap()
                    .contains("outside allowed_read_paths")
            );
        }
        let mut small = config(&d);
        small["max_read_bytes"] = json!(2);
        let r = handle(&req("read", small, json!({"path": d.0.join("in/a.txt")})));
        assert!(r.error_message().unwrap().contains("max_read_bytes"));
    }

    #[test]
    fn writes_inside_atomically_and_refuses_escapes() {
        let d = tmp("write");
        let r = handle(&req(
            "handle",
            config(&d),
            json!({"result": "# summary", "filename": "sub/v1.md"}),
        ));
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(
            fs::read_to_string(d.0.join("out/sub/v1.md")).unwrap(),
            "# summary"
        );
        assert_eq!(r.events[0].event_type, "file_handler.written");
        let names: Vec<_> = fs::read_dir(d.0.join("out/sub"))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(names.len(), 1, "no temp file left");
        for payload in [
            json!({"content": "x", "filename": "../secret/x.txt"}),
            json!({"content": "x", "output_path": d.0.join("secret/x.txt")}),
            json!({"content": "x", "output_dir": d.0.join("out/../secret"), "filename": "x.txt"}),
        ] {
            let r = handle(&req("write", config(&d), payload.clone()));
            assert!(!r.is_ok() && !r.retry(), "{payload}: {r:?}");
        }
        // A symlinked directory inside the root that points out of it.
        std::os::unix::fs::symlink(d.0.join("secret"), d.0.join("out/esc")).unwrap();
        let r = handle(&req(
            "write",
            config(&d),
            json!({"content": "x", "filename": "esc/x.txt"}),
        ));
        assert!(!r.is_ok(), "{r:?}");
        // A symlinked file is never written through.
        std::os::unix::fs::symlink(d.0.join("secret/t.txt"), d.0.join("out/t.txt")).unwrap();
        let r = handle(&req(
            "write",
            config(&d),
            json!({"content": "x", "filename": "t.txt"}),
        ));
        assert!(r.error_message().unwrap().contains("symlink"), "{r:?}");
        assert!(!d.0.join("secret/x.txt").exists() && !d.0.join("secret/t.txt").exists());
    }

    #[test]
    fn auto_action_and_config_errors() {
        let d = tmp("auto");
        fs::write(d.0.join("in/a.txt"), "x").unwrap();
        let r = handle(&req(
            "handle",
            config(&d),
            json!({"path": d.0.join("in/a.txt")}),
        ));
        assert_eq!(r.events[0].event_type, "file_handler.read");
        let mut w = config(&d);
        w["overwrite"] = json!(false);
        let once = handle(&req(
            "write",
            w.clone(),
            json!({"content": "1", "filename": "o.txt"}),
        ));
        assert!(once.is_ok());
        let twice = handle(&req(
            "write",
            w,
            json!({"content": "2", "filename": "o.txt"}),
        ));
        assert!(twice.error_message().unwrap().contains("overwrite"));
        assert!(Config::parse(&json!({})).unwrap_err().contains("allowed"));
        assert!(Config::parse(&json!({"allowed_read_paths": "/x", "action": "copy"})).is_err());
        let h = handle(&req("health", config(&d), json!({})));
        assert!(h.is_ok() && h.state_updates.is_none());
    }
}
