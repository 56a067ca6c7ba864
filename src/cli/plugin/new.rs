//! `ductile plugin new <name>`: a plugin directory that passes `plugin check`
//! as written, in Python (the teaching template and its helper, copied), POSIX
//! sh, or Rust (the SDK vendored as one source file, so it builds anywhere).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::cli::{Args, CliError, output};

/// The name the Python template is written with; replaced by the new name.
const TEMPLATE_NAME: &str = "text_stats";

/// One file of a scaffold: path relative to the plugin dir, text, executable?
struct File {
    path: &'static str,
    text: String,
    executable: bool,
}

/// `ductile plugin new <name> [--lang python|sh|rust] [--dir D] [--dry-run]`.
pub fn new(args: &Args, name: &str) -> Result<(), CliError> {
    check_name(name)?;
    let lang = args.flag("lang").unwrap_or("python");
    let files = match lang {
        "python" | "py" => python(name),
        "sh" => sh(name),
        "rust" | "rs" => rust(name),
        other => {
            return Err(CliError::Usage(format!(
                "--lang {other}: expected python, sh or rust"
            )));
        }
    };
    let parent = PathBuf::from(args.flag("dir").unwrap_or("."));
    let dir = parent.join(name);
    if dir.exists() {
        return Err(CliError::Failed(format!(
            "{} already exists; choose another name or --dir",
            dir.display()
        )));
    }
    let listing: Vec<String> = files.iter().map(|f| f.path.to_string()).collect();
    if args.dry_run {
        if args.json {
            output::json(
                &json!({"dry_run": true, "dir": dir, "lang": lang, "would_write": listing}),
            );
        } else {
            output::text(&format!(
                "dry run: would write {} in {} (nothing was changed)",
                listing.join(", "),
                dir.display()
            ));
        }
        return Ok(());
    }
    for f in &files {
        write(&dir, f)?;
    }
    let next = match lang {
        "rust" | "rs" => format!(
            "cd {} && cargo build --release && ductile plugin check .",
            dir.display()
        ),
        _ => format!("ductile plugin check {}", dir.display()),
    };
    if args.json {
        output::json(&json!({"dir": dir, "lang": lang, "files": listing, "next": next}));
    } else {
        output::text(&format!(
            "created {} ({lang}): {}\nnext: {next}",
            dir.display(),
            listing.join(", ")
        ));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), CliError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && name.len() <= 64 {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "plugin name `{name}`: use a lowercase letter, then lowercase letters, digits or `_` (at most 64), e.g. `disk_report`"
        )))
    }
}

fn write(dir: &Path, f: &File) -> Result<(), CliError> {
    let path = dir.join(f.path);
    let fail =
        |e: std::io::Error| CliError::Failed(format!("cannot write {}: {e}", path.display()));
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(fail)?;
    }
    fs::write(&path, &f.text).map_err(fail)?;
    let mode = if f.executable { 0o755 } else { 0o644 };
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(fail)
}

fn file(path: &'static str, text: String, executable: bool) -> File {
    File {
        path,
        text,
        executable,
    }
}

/// The teaching template, renamed, with the helper next to it.
fn python(name: &str) -> Vec<File> {
    let rename = |s: &str| s.replace(TEMPLATE_NAME, name);
    vec![
        file(
            "manifest.yaml",
            rename(include_str!("../../../plugins/_template/manifest.yaml")),
            false,
        ),
        file(
            "run.py",
            rename(include_str!("../../../plugins/_template/run.py")),
            true,
        ),
        file(
            "test_run.py",
            rename(include_str!("../../../plugins/_template/test_run.py")),
            false,
        ),
        file(
            "README.md",
            rename(include_str!("../../../plugins/_template/README.md")),
            false,
        ),
        file(
            "ductile_plugin.py",
            include_str!("../../../plugins/_lib/ductile_plugin.py").to_string(),
            false,
        ),
    ]
}

fn sh(name: &str) -> Vec<File> {
    let fill = |s: &str| s.replace("{{name}}", name);
    vec![
        file("manifest.yaml", fill(SH_MANIFEST), false),
        file("run.sh", fill(SH_RUN), true),
        file("test.sh", fill(SH_TEST), true),
        file("README.md", fill(SH_README), false),
    ]
}

fn rust(name: &str) -> Vec<File> {
    let fill = |s: &str| s.replace("{{name}}", name);
    vec![
        file("manifest.yaml", fill(RUST_MANIFEST), false),
        file("Cargo.toml", fill(RUST_CARGO), false),
        file("src/main.rs", fill(RUST_MAIN), false),
        file(
            "src/ductile_plugin.rs",
            include_str!("../../../plugins/sdk/src/lib.rs").to_string(),
            false,
        ),
        file("README.md", fill(RUST_README), false),
        file(".gitignore", "/target\n".to_string(), false),
    ]
}

const SH_MANIFEST: &str = r#"manifest_spec: ductile.plugin
manifest_version: 1
name: {{name}}
version: 0.1.0
protocol: 2
entrypoint: run.sh
description: "Emits one {{name}}.ticked event per poll and answers handle with {{name}}.handled; keeps no state."
concurrency_safe: true
commands:
  - name: poll
    type: read
    description: "Emits {{name}}.ticked carrying the configured message."
    idempotent: true
    retry_safe: true
    values:
      consume: []
      emit:
        - event: {{name}}.ticked
          values: [payload.message]
  - name: handle
    type: read
    description: "Acknowledges an upstream event with {{name}}.handled."
    idempotent: true
    retry_safe: true
    values:
      consume: []
      emit:
        - event: {{name}}.handled
          values: [payload.message]
  - name: health
    type: read
    description: "Answers ok; emits no state."
    idempotent: true
    retry_safe: true
config_keys:
  optional: [message]
"#;

const SH_RUN: &str = r#"#!/bin/sh
# {{name}}: a ductile plugin (protocol v2) in POSIX sh, no tools beyond the shell.
#
# The core sends one line of compact JSON that starts
# {"protocol":2,"job_id":"...","command":"...","config":{...},"state":...
# so matching on the text finds the command and top-level config strings.
# For real JSON work install jq and use it, or write the plugin in Python.

fail() {
    printf '{{name}}: %s\n' "$1" >&2
    exit 78
}

# Read the request to its end: a plugin that stops early can block the core.
request=$(cat) || fail "cannot read the request"

case $request in
    '{"protocol":2,'*) ;;
    *) fail "unsupported request: this plugin speaks protocol 2" ;;
esac

command=${request#*\"command\":\"}
command=${command%%\"*}

# `message` from config when set (a plain string without quotes or backslashes).
message='hello from {{name}}'
config=${request#*\"config\":}
config=${config%%,\"state\":*}
case $config in
    *\"message\":\"*)
        m=${config#*\"message\":\"}
        m=${m%%\"*}
        case $m in
            *\\*) ;;
            *) message=$m ;;
        esac
        ;;
esac

case $command in
    poll)
        printf '{"status":"ok","result":"ticked","events":[{"type":"{{name}}.ticked","payload":{"message":"%s"}}]}\n' "$message"
        ;;
    handle)
        printf '{"status":"ok","result":"handled","events":[{"type":"{{name}}.handled","payload":{"message":"%s"}}]}\n' "$message"
        ;;
    health)
        printf '%s\n' '{"status":"ok","result":"healthy"}'
        ;;
    *)
        printf '{"status":"error","error":"unknown command `%s` (this plugin knows poll, handle and health)","retry":false}\n' "$command"
        ;;
esac
"#;

const SH_TEST: &str = r#"#!/bin/sh
# Tests of {{name}}: each command answers the protocol. Run: ./test.sh
set -eu
cd "$(dirname "$0")"
status=0
ask() {
    printf '{"protocol":2,"job_id":"t","command":"%s","config":{"message":"hi"},"state":{},"context":{},"deadline_at":"2026-01-01T00:00:00Z"}' "$1" | ./run.sh
}
expect() {
    case $2 in
        *"$3"*) printf 'ok   %s\n' "$1" ;;
        *) printf 'FAIL %s: %s\n' "$1" "$2"; status=1 ;;
    esac
}
expect poll "$(ask poll)" '"type":"{{name}}.ticked","payload":{"message":"hi"}'
expect handle "$(ask handle)" '"{{name}}.handled"'
expect health "$(ask health)" '"status":"ok"'
expect unknown "$(ask nope)" '"retry":false'
exit $status
"#;

const SH_README: &str = r#"# {{name}}

A ductile plugin in POSIX sh (protocol v2). `poll` emits `{{name}}.ticked`,
`handle` emits `{{name}}.handled`, `health` answers ok.

```yaml
plugins:
  {{name}}:
    enabled: true
    schedules:
      - every: 5m
    config:
      message: "hello"
```

Test it: `./test.sh`, then `ductile plugin check .` (spawns every command the
way the core does). See docs/PLUGIN_AUTHORING.md in the ductile repository.
"#;

const RUST_MANIFEST: &str = r#"manifest_spec: ductile.plugin
manifest_version: 1
name: {{name}}
version: 0.1.0
protocol: 2
# Built by `cargo build --release`.
entrypoint: target/release/{{name}}
description: "Greets with the configured message on poll (snapshotting it) and answers handle with {{name}}.handled."
concurrency_safe: true
commands:
  - name: poll
    type: read
    description: "Emits {{name}}.greeted with the configured message and snapshots it."
    idempotent: true
    retry_safe: true
    values:
      consume: []
      emit:
        - event: {{name}}.greeted
          values: [payload.message]
  - name: handle
    type: read
    description: "Acknowledges an upstream event's text with {{name}}.handled."
    idempotent: true
    retry_safe: true
    input_schema:
      text: string
    values:
      consume: [payload.text]
      emit:
        - event: {{name}}.handled
          values: [payload.text]
  - name: health
    type: read
    description: "Answers ok; emits no state."
    idempotent: true
    retry_safe: true
fact_outputs:
  - when:
      command: poll
    from: state_updates
    fact_type: {{name}}.snapshot
    compatibility_view: mirror_object
config_keys:
  optional: [message]
"#;

const RUST_CARGO: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
serde = { version = "1", features = ["derive"] }
# preserve_order: responses and snapshots keep the field order they were built in.
serde_json = { version = "1", features = ["preserve_order"] }

# Its own workspace, so it builds the same inside or outside another project.
[workspace]

# Spawned once per job: small and quick to start.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
strip = true
"#;

const RUST_MAIN: &str = r#"//! {{name}}: a ductile plugin (protocol v2) on the vendored ductile_plugin SDK.

// The SDK is one file copied from the ductile repository (plugins/sdk); this
// binary uses part of it.
#[allow(dead_code)]
mod ductile_plugin;

use ductile_plugin::{Request, Response, run};
use serde_json::{Map, Value, json};

const PLUGIN: &str = "{{name}}";

fn handle(req: &Request) -> Response {
    match req.command.as_str() {
        "poll" => poll(req),
        "handle" => on_event(req),
        "health" => Response::ok("healthy"),
        other => Response::unknown_command(other, &["poll", "handle", "health"]),
    }
}

/// The full snapshot: the same keys every time, only what was observed.
fn snapshot(message: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("message".into(), json!(message));
    m
}

fn poll(req: &Request) -> Response {
    let message = req.config_str("message").unwrap_or("hello");
    Response::ok(format!("greeted: {message}"))
        .event(format!("{PLUGIN}.greeted"), json!({ "message": message }))
        .state(snapshot(message))
}

fn on_event(req: &Request) -> Response {
    let text = req.value_text("text").unwrap_or_default();
    Response::ok(format!("handled {} bytes", text.len()))
        .event(format!("{PLUGIN}.handled"), json!({ "text": text }))
}

fn main() -> std::process::ExitCode {
    run(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(command: &str, config: Value) -> Request {
        let raw = json!({"protocol": 2, "job_id": "t", "command": command, "config": config,
            "state": {}, "context": {}, "event": {"type": "x", "payload": {"text": "hi"}}});
        Request::from_slice(raw.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn poll_snapshots_the_message() {
        let r = handle(&request("poll", json!({"message": "hey"}))).to_value();
        assert_eq!(r["state_updates"], json!({"message": "hey"}));
        assert_eq!(r["events"][0]["type"], json!(format!("{PLUGIN}.greeted")));
    }

    #[test]
    fn health_keeps_no_state_and_unknown_is_refused() {
        let r = handle(&request("health", json!({}))).to_value();
        assert!(r.get("state_updates").is_none());
        let r = handle(&request("nope", json!({}))).to_value();
        assert_eq!((r["status"].as_str(), r["retry"].as_bool()), (Some("error"), Some(false)));
    }

    #[test]
    fn handle_reads_the_payload() {
        let r = handle(&request("handle", json!({}))).to_value();
        assert_eq!(r["events"][0]["payload"]["text"], json!("hi"));
    }
}
"#;

const RUST_README: &str = r#"# {{name}}

A ductile plugin in Rust (protocol v2). `src/ductile_plugin.rs` is the ductile
plugin SDK copied as one file (it needs only serde and serde_json), so this
directory builds on its own: no registry publishing, no path dependency.

```sh
cargo build --release        # the manifest's entrypoint: target/release/{{name}}
cargo test                   # unit tests of the handlers
ductile plugin check .       # spawns every command the way the core does
```

```yaml
plugins:
  {{name}}:
    enabled: true
    schedules:
      - every: 5m
    config:
      message: "hello"
```

To take a newer SDK, copy `plugins/sdk/src/lib.rs` from the ductile repository
over `src/ductile_plugin.rs`. See docs/PLUGIN_AUTHORING.md there.
"#;
