//! `ductile run <plugin> [command]`: parses the command line, builds the job,
//! and prints how it ended. The protocol itself (run here, or hand over to a
//! daemon and wait) is [`crate::oneshot`].

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Args, CliError, output};
use crate::clock::{Clock, SystemClock};
use crate::oneshot::{self, OneShotError, Report};
use crate::runtime::Runtime;
use crate::store::queue::{self, JobStatus, NewJob, SubmittedBy};

/// Entry point of `ductile run` and `ductile plugin run`.
pub fn run(args: &Args, positionals: &[String]) -> Result<(), CliError> {
    let root = super::config_root(args)?;
    let rt = Arc::new(Runtime::load(&root)?);
    for w in &rt.warnings {
        log::warn!("{w}");
    }
    let name = positionals[0].as_str();
    let command = positionals.get(1).map(String::as_str).unwrap_or("poll");
    let plugin = find_plugin(&rt, name)?;
    if plugin.manifest.command(command).is_none() {
        let names: Vec<&str> = plugin
            .manifest
            .commands
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        let hint = crate::suggest::hint(command, &names);
        return Err(CliError::Usage(format!(
            "plugin `{name}` has no command `{command}` (it declares: {}){hint}",
            names.join(", ")
        )));
    }
    let payload = read_payload(args)?;
    let clock = SystemClock;
    let envelope = match (&payload, command) {
        (Some(p), _) => queue::envelope("cli.run", "cli", p.clone(), clock.now()),
        (None, "handle") => queue::envelope("cli.run", "cli", json!({}), clock.now()),
        (None, _) => Value::Null,
    };
    let job = NewJob::new(name, command, envelope, SubmittedBy::Cli, 1);
    if args.dry_run {
        let plan = json!({"dry_run": true, "would_enqueue": {"plugin": name, "command": command, "payload": job.payload, "submitted_by": "cli", "max_attempts": 1}});
        if args.json {
            output::json(&plan);
        } else {
            output::text(&format!(
                "dry run: would enqueue and run `{name} {command}` (nothing was changed)"
            ));
        }
        return Ok(());
    }
    crate::disk::admit(&rt.config.state).map_err(|r| CliError::Failed(r.to_string()))?;
    let result = oneshot::run(&rt, &job, &clock, &|line| output::notice(line));
    match result {
        Ok(r) => report(args, &r),
        Err(OneShotError::Store(e)) => Err(e.into()),
        Err(OneShotError::Lock(e)) => Err(e.into()),
        Err(e @ (OneShotError::Duplicate(_) | OneShotError::Interrupted(_))) => {
            Err(CliError::Failed(e.to_string()))
        }
    }
}

fn find_plugin<'a>(
    rt: &'a Runtime,
    name: &str,
) -> Result<&'a Arc<crate::plugin::Plugin>, CliError> {
    if let Some(p) = rt.registry.get(name) {
        return Ok(p);
    }
    // Only configured manifests were read; to say why `name` is not runnable,
    // read them all.
    let all = crate::plugin::Registry::survey(&rt.config);
    if let Some(s) = all.skipped().iter().find(|s| s.name == name) {
        return Err(CliError::Config(format!(
            "plugin `{name}` was not loaded: {}",
            s.reason
        )));
    }
    if let Some(conf) = rt.config.plugins.get(name) {
        if !conf.enabled {
            return Err(CliError::Config(format!(
                "plugin `{name}` is disabled (plugins.{name}.enabled: false)"
            )));
        }
    }
    if all.discovered().iter().any(|d| d.name == name) {
        return Err(CliError::Config(format!(
            "plugin `{name}` was discovered but is not configured; add `plugins: {{{name}: {{}}}}` to the config"
        )));
    }
    let known: Vec<&str> = rt.registry.plugins().map(|p| p.name.as_str()).collect();
    let hint = crate::suggest::closest(name, &known)
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_else(|| " (see `ductile plugin list`)".into());
    Err(CliError::Failed(format!("unknown plugin `{name}`{hint}")))
}

/// The `--payload` / `--payload-file` object, if given.
pub(super) fn read_payload(args: &Args) -> Result<Option<Value>, CliError> {
    let (text, source) = match (args.flag("payload"), args.flag("payload-file")) {
        (Some(_), Some(_)) => {
            return Err(CliError::Usage(
                "use either --payload or --payload-file, not both".into(),
            ));
        }
        (Some(p), None) => (p.to_string(), "--payload".to_string()),
        (None, Some(f)) => (
            std::fs::read_to_string(f)
                .map_err(|e| CliError::Usage(format!("--payload-file {f}: {e}")))?,
            format!("--payload-file {f}"),
        ),
        (None, None) => return Ok(None),
    };
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("{source} is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(CliError::Usage(format!("{source} must be a JSON object")));
    }
    Ok(Some(v))
}

fn report(args: &Args, r: &Report) -> Result<(), CliError> {
    let result = r.response.as_ref().and_then(|v| v.get("result")).cloned();
    if args.json {
        output::json(&json!({
            "job_id": r.id,
            "plugin": r.plugin,
            "command": r.command,
            "status": r.status.as_str(),
            "result": result,
            "error": r.last_error,
            "response": r.response,
            "stderr": r.stderr,
            "exit_code": r.exit_code,
            "ran_by": r.ran_by,
            "note": r.note,
        }));
    } else {
        let mut text = format!("job {} {} ({} {})\n", r.id, r.status, r.plugin, r.command);
        if let Some(res) = &result {
            let shown = res
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| res.to_string());
            text.push_str(&format!("result: {shown}\n"));
        }
        if let Some(e) = &r.last_error {
            text.push_str(&format!("error: {e}\n"));
        }
        if let Some(n) = &r.note {
            text.push_str(&format!("note: {n}\n"));
        }
        if !r.stderr.is_empty() {
            text.push_str(&format!("plugin stderr:\n{}", r.stderr));
        }
        output::text(&text);
    }
    if r.status == JobStatus::Succeeded {
        return Ok(());
    }
    Err(CliError::Exit(if r.exit_code == Some(78) { 78 } else { 1 }))
}
