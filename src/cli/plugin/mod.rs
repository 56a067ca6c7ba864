//! `ductile plugin list`: what was discovered, what is loaded, and why anything
//! was skipped; `plugin new` ([`new`]) and `plugin check` ([`check`]) are the
//! author kit.

pub mod check;
pub mod new;

use serde_json::json;

use super::{Args, CliError, output};
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
