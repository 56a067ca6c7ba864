//! `ductile plugin list`: what was discovered, what is loaded, and why anything
//! was skipped (a container plugin's engine and image included); `plugin
//! build`: a container plugin's image from its directory's Dockerfile;
//! `plugin new` ([`new`]) and `plugin check` ([`check`]) are the author kit.

pub mod check;
pub mod new;

use serde_json::json;

use super::{Args, CliError, output};
use crate::plugin::Plugin;
use crate::plugin::container::{self, ContainerSpec};
use crate::runtime::Runtime;

/// `ductile plugin list [--json]`.
pub fn list(args: &Args) -> Result<(), CliError> {
    let root = super::config_root(args)?;
    let rt = Runtime::survey(&root)?;
    let loaded: Vec<_> = rt
        .registry
        .plugins()
        .map(|p| {
            json!({
                "name": p.name,
                "uses": if p.name != p.base { Some(&p.base) } else { None },
                "version": p.manifest.version,
                "description": p.manifest.description,
                "dir": p.dir,
                "commands": p.manifest.commands.iter().map(|c| json!({"name": c.name, "type": match c.kind { crate::plugin::manifest::CommandKind::Read => "read", crate::plugin::manifest::CommandKind::Write => "write" }})).collect::<Vec<_>>(),
                "concurrency_safe": p.manifest.concurrency_safe,
                "parallelism": rt.parallelism(&p.name),
                "schedules": p.conf.schedules.len(),
                "container": p.manifest.container.as_ref().map(|c| container_json(&rt, p, c)),
            })
        })
        .collect();
    let unconfigured: Vec<_> = rt
        .registry
        .discovered()
        .iter()
        .filter(|d| !d.configured)
        .map(|d| json!({"name": d.name, "version": d.version, "dir": d.dir}))
        .collect();
    let disabled: Vec<&String> = rt
        .config
        .plugins
        .values()
        .filter(|c| !c.enabled)
        .map(|c| &c.name)
        .collect();
    let skipped: Vec<_> = rt
        .registry
        .skipped()
        .iter()
        .map(|s| json!({"name": s.name, "path": s.path, "reason": s.reason}))
        .collect();
    if args.json {
        output::json(&json!({
            "plugins": loaded,
            "not_configured": unconfigured,
            "disabled": disabled,
            "skipped": skipped,
            "warnings": rt.warnings,
        }));
        return Ok(());
    }
    let mut out = String::new();
    out.push_str(&format!(
        "{:<24} {:<10} {:<28} {}\n",
        "PLUGIN", "VERSION", "COMMANDS", "DIR"
    ));
    for p in rt.registry.plugins() {
        let commands: Vec<&str> = p
            .manifest
            .commands
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        let name = if p.name != p.base {
            format!("{} (uses {})", p.name, p.base)
        } else {
            p.name.clone()
        };
        out.push_str(&format!(
            "{:<24} {:<10} {:<28} {}\n",
            name,
            p.manifest.version,
            commands.join(","),
            p.dir.display()
        ));
    }
    for p in rt.registry.plugins() {
        let Some(c) = &p.manifest.container else {
            continue;
        };
        match container::readiness(&p.name, c, rt.config.service.container_engine.as_deref()) {
            Ok((engine, id)) => {
                out.push_str(&format!(
                    "  {}: container image {} ({}), id {}\n",
                    p.name,
                    c.image,
                    engine.name,
                    short(&id)
                ));
                if let Some(keep) = p.conf.keep_warm {
                    let names = container::stage7::warm::resident(&engine, &p.name, state_dir(&rt));
                    let now = if names.is_empty() {
                        "none running".to_string()
                    } else {
                        names.join(", ")
                    };
                    out.push_str(&format!(
                        "  {}: keep_warm {}s, resident container: {now}\n",
                        p.name,
                        keep.as_secs()
                    ));
                }
            }
            Err(nr) => out.push_str(&format!(
                "  {}: NOT RUNNABLE: {}\n    fix: {}\n",
                p.name, nr.problem, nr.fix
            )),
        }
    }
    for d in rt.registry.discovered().iter().filter(|d| !d.configured) {
        out.push_str(&format!(
            "{:<24} {:<10} {:<28} {}\n",
            d.name,
            d.version,
            "(not configured)",
            d.dir.display()
        ));
    }
    for name in &disabled {
        out.push_str(&format!("{name:<24} (disabled)\n"));
    }
    for s in rt.registry.skipped() {
        out.push_str(&format!(
            "skipped {} ({}): {}\n",
            s.name,
            s.path.display(),
            s.reason
        ));
    }
    output::text(&out);
    Ok(())
}

/// A container plugin's entry in `plugin list --json`.
fn container_json(rt: &Runtime, p: &Plugin, c: &ContainerSpec) -> serde_json::Value {
    let ready = container::readiness(&p.name, c, rt.config.service.container_engine.as_deref());
    let (engine, id, problem, fix, resident) = match ready {
        Ok((e, id)) => {
            let resident = p
                .conf
                .keep_warm
                .map(|_| container::stage7::warm::resident(&e, &p.name, state_dir(rt)));
            (Some(e.name), Some(id), None, None, resident)
        }
        Err(nr) => (None, None, Some(nr.problem), Some(nr.fix), None),
    };
    let mut entry = container::summary(c, p.conf.keep_warm, resident);
    entry.insert("engine".into(), json!(engine));
    entry.insert("image_id".into(), json!(id));
    entry.insert("runnable".into(), json!(problem.is_none()));
    entry.insert("problem".into(), json!(problem));
    entry.insert("fix".into(), json!(fix));
    serde_json::Value::Object(entry)
}

/// The directory of the ledger, where the daemon keeps its warm markers.
fn state_dir(rt: &Runtime) -> &std::path::Path {
    crate::disk::ledger_dir(&rt.config.state.path)
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// `ductile plugin build <name> [--dry-run] [--json]`: builds the image from
/// the plugin directory's Dockerfile with the engine and prints the ID to pin.
pub fn build(args: &Args, name: &str) -> Result<(), CliError> {
    let root = super::config_root(args)?;
    let rt = Runtime::survey(&root)?;
    let dir = rt
        .registry
        .get(name)
        .map(|p| p.dir.clone())
        .or_else(|| {
            rt.registry
                .discovered()
                .iter()
                .find(|d| d.name == name)
                .map(|d| d.dir.clone())
        })
        .or_else(|| {
            // A plugin refused for its manifest (no pinned image yet) is still built.
            rt.registry
                .skipped()
                .iter()
                .filter(|s| s.name == name)
                .map(|s| {
                    if s.path.is_dir() {
                        s.path.clone()
                    } else {
                        s.path.parent().map(|p| p.to_path_buf()).unwrap_or_default()
                    }
                })
                .find(|d| d.join("Dockerfile").is_file())
        })
        .ok_or_else(|| CliError::Failed(format!("no plugin `{name}` under the plugin roots")))?;
    let dockerfile = dir.join("Dockerfile");
    if !dockerfile.is_file() {
        return Err(CliError::Failed(format!(
            "{} has no Dockerfile to build plugin `{name}` from",
            dir.display()
        )));
    }
    let forced = rt
        .registry
        .get(name)
        .and_then(|p| p.manifest.container.as_ref())
        .and_then(|c| c.engine.clone());
    let engine = container::engine::resolve(
        forced.as_deref(),
        rt.config.service.container_engine.as_deref(),
    )
    .map_err(CliError::Failed)?;
    let tag = format!("localhost/ductile-plugin-{name}:latest");
    if args.dry_run {
        let line = format!(
            "{} build -q -t {tag} {}",
            engine.path.display(),
            dir.display()
        );
        if args.json {
            output::json(&json!({"dry_run": true, "command": line}));
        } else {
            output::text(&format!("would run: {line}\n"));
        }
        return Ok(());
    }
    // The build's own progress and errors go to the operator's terminal.
    let out = std::process::Command::new(&engine.path)
        .args(["build", "-q", "-t", &tag])
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| CliError::Failed(format!("cannot run {}: {e}", engine.path.display())))?;
    if !out.status.success() {
        return Err(CliError::Failed(format!(
            "{} build failed for plugin `{name}` ({})",
            engine.name, out.status
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or_default()
        .trim_start_matches("sha256:")
        .to_string();
    if args.json {
        output::json(&json!({"plugin": name, "engine": engine.name, "image_id": id, "tag": tag}));
    } else {
        output::text(&format!(
            "built {tag} with {}\nimage id: {id}\npin it in {}: container.image: {id}\n",
            engine.name,
            dir.join("manifest.yaml").display()
        ));
    }
    Ok(())
}
