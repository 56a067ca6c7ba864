//! `sys_exec`: runs one configured command per job (an argv list, or a shell
//! string when `shell: true`) and reports its exit as `sys_exec.completed`.

use std::process::ExitCode;

use ductile_plugin::{Level, Request, Response, Span, SpanStatus, run};
use serde_json::{Map, Value, json};

mod config;
mod exec;

use config::{Config, Program};
use exec::Exit;

fn main() -> ExitCode {
    run(handle)
}

const COMMANDS: [&str; 3] = ["poll", "handle", "health"];

fn handle(req: &Request) -> Response {
    let cfg = match Config::parse(&req.config) {
        Ok(c) => c,
        Err(e) => return Response::permanent(e),
    };
    match req.command.as_str() {
        "poll" | "handle" => execute(&cfg, &payload_env(req.payload())),
        "health" => health(&cfg),
        other => Response::unknown_command(other, &COMMANDS),
    }
}

/// `DUCTILE_PAYLOAD_<KEY>` for each top-level payload field: the key upper-cased
/// with every other character than A-Z, 0-9 and `_` made `_`; strings as they
/// are, other values as JSON text, nulls left out.
fn payload_env(payload: Option<&Map<String, Value>>) -> Vec<(String, String)> {
    let Some(p) = payload else {
        return Vec::new();
    };
    p.iter()
        .filter(|(k, v)| !k.is_empty() && !v.is_null())
        .map(|(k, v)| {
            let name: String = k
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (format!("DUCTILE_PAYLOAD_{name}"), text.replace('\0', ""))
        })
        .collect()
}

fn execute(cfg: &Config, env: &[(String, String)]) -> Response {
    let outcome = match exec::run(cfg, env) {
        Ok(o) => o,
        Err(e) => {
            // A program that does not exist or cannot run stays that way.
            return Response::permanent(format!("cannot start `{}`: {e}", cfg.display()));
        }
    };
    let ms = outcome.elapsed.as_millis() as u64;
    let span_status = |ok| if ok { SpanStatus::Ok } else { SpanStatus::Err };
    let succeeded = matches!(outcome.exit, Exit::Code(c) if cfg.success_exit_codes.contains(&c));
    let span = Span::new("sys_exec.run", outcome.elapsed)
        .status(span_status(succeeded))
        .bytes(outcome.stdout.total + outcome.stderr.total);
    let tail = |text: String| {
        let t = text.trim_end();
        let start = t.len().saturating_sub(500);
        let start = (start..=t.len())
            .find(|i| t.is_char_boundary(*i))
            .unwrap_or(t.len());
        t[start..].to_string()
    };
    match outcome.exit {
        Exit::Code(code) if succeeded => {
            let mut payload = json!({
                "command": cfg.display(),
                "exit_code": code,
                "duration_ms": ms,
            });
            if cfg.include_output {
                payload["stdout"] = Value::String(outcome.stdout.text());
                payload["stderr"] = Value::String(outcome.stderr.text());
                payload["stdout_truncated"] = Value::Bool(outcome.stdout.truncated());
                payload["stderr_truncated"] = Value::Bool(outcome.stderr.truncated());
            }
            let mut resp = Response::ok(format!("`{}` exited {code} in {ms} ms", cfg.display()))
                .event("sys_exec.completed", payload)
                .span(span);
            if outcome.stdout.truncated() || outcome.stderr.truncated() {
                resp = resp.log(
                    Level::Warn,
                    format!(
                        "output beyond {} bytes per stream was dropped (stdout {} bytes, stderr {} bytes)",
                        cfg.max_output_bytes, outcome.stdout.total, outcome.stderr.total
                    ),
                );
            }
            resp
        }
        Exit::Code(code) => {
            let retry = cfg.retryable_exit_codes.contains(&code);
            Response::error(format!(
                "`{}` exited {code}{}: {}",
                cfg.display(),
                if retry { " (retryable)" } else { "" },
                tail(outcome.stderr.text())
            ))
            .with_retry(retry)
            .span(span)
        }
        Exit::Signal(sig) => Response::error(format!(
            "`{}` was killed by signal {sig}: {}",
            cfg.display(),
            tail(outcome.stderr.text())
        ))
        .span(span),
        Exit::TimedOut => Response::error(format!(
            "`{}` ran past timeout_seconds ({:?}) and was killed with its process group",
            cfg.display(),
            cfg.timeout
        ))
        .span(span),
    }
}

fn health(cfg: &Config) -> Response {
    if let Some(dir) = &cfg.working_dir {
        if !dir.is_dir() {
            return Response::permanent(format!(
                "working_dir {} is not a directory",
                dir.display()
            ));
        }
    }
    let program = match &cfg.program {
        Program::Shell(_) => "/bin/sh".to_string(),
        Program::Argv(argv) => argv[0].clone(),
    };
    match resolve(&program) {
        Some(path) => Response::ok(format!("healthy: `{program}` is {path}")),
        None => Response::permanent(format!("`{program}` is not an executable on PATH")),
    }
}

/// Where `program` would be found: as given when it has a slash, else on PATH.
fn resolve(program: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = std::path::Path::new(program);
        return executable(p).then(|| program.to_string());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| executable(p))
        .map(|p| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(command: &str, config: Value, payload: Value) -> Request {
        Request::from_slice(
            json!({"protocol": 2, "command": command, "config": config,
                   "event": {"type": "x.y", "payload": payload}})
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn payload_fields_become_env_vars() {
        let p = json!({"branch": "main", "build-id": 7, "opts": {"a": 1}, "gone": null});
        let env = payload_env(p.as_object());
        assert_eq!(
            env,
            [
                ("DUCTILE_PAYLOAD_BRANCH".to_string(), "main".to_string()),
                ("DUCTILE_PAYLOAD_BUILD_ID".to_string(), "7".to_string()),
                ("DUCTILE_PAYLOAD_OPTS".to_string(), r#"{"a":1}"#.to_string()),
            ]
        );
    }

    #[test]
    fn success_emits_completed_with_optional_output() {
        let resp = handle(&request(
            "handle",
            json!({"command": "echo \"$DUCTILE_PAYLOAD_NAME\"", "shell": true, "include_output": true}),
            json!({"name": "site"}),
        ));
        assert!(resp.is_ok(), "{resp:?}");
        let ev = &resp.events[0];
        assert_eq!(ev.event_type, "sys_exec.completed");
        assert_eq!(ev.payload["exit_code"], 0);
        assert_eq!(ev.payload["stdout"], "site\n");
        assert!(resp.state_updates.is_none());
        let quiet = handle(&request("poll", json!({"command": ["true"]}), json!({})));
        assert!(quiet.events[0].payload.get("stdout").is_none());
    }

    #[test]
    fn exit_codes_classify_success_retry_and_permanent_failure() {
        let cfg = |c: &str| json!({"command": c, "shell": true, "success_exit_codes": [0, 2], "retryable_exit_codes": [75]});
        assert!(handle(&request("poll", cfg("exit 2"), json!({}))).is_ok());
        let r = handle(&request("poll", cfg("echo busy >&2; exit 75"), json!({})));
        assert!(!r.is_ok() && r.retry());
        assert!(r.error_message().unwrap().contains("busy"), "{r:?}");
        let r = handle(&request("poll", cfg("exit 1"), json!({})));
        assert!(!r.is_ok() && !r.retry());
        let r = handle(&request(
            "poll",
            json!({"command": "sleep 5", "timeout_seconds": 0.1}),
            json!({}),
        ));
        assert!(r.error_message().unwrap().contains("timeout_seconds") && r.retry());
    }

    #[test]
    fn health_resolves_the_program_and_emits_nothing() {
        let r = handle(&request(
            "health",
            json!({"command": ["sh", "-c", "exit 9"]}),
            json!({}),
        ));
        assert!(
            r.is_ok() && r.events.is_empty() && r.state_updates.is_none(),
            "{r:?}"
        );
        let r = handle(&request(
            "health",
            json!({"command": ["no-such-prog-x"]}),
            json!({}),
        ));
        assert!(!r.is_ok() && !r.retry());
        let r = handle(&request("health", json!({}), json!({})));
        assert!(r.error_message().unwrap().contains("config.command"));
    }
}
