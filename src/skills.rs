//! The skills manifest: a Markdown description of what this instance can do,
//! for LLM operators (`ductile system skills`, `ductile skills`). Generated
//! from the loaded config: every plugin command with its endpoint, tier,
//! idempotency and retry hints and schemas; every pipeline with its trigger
//! and mode. The text is deterministic (plugins and pipelines in a fixed
//! order, no times, no absolute paths), so it can be diffed and cached.
//!
//! Owns: the manifest's wording. Must not: read the ledger or print.

use std::fmt::Write as _;

use serde_json::Value;

use crate::config::pipeline::{ExecutionMode, Trigger};
use crate::http::openapi::segment;
use crate::plugin::manifest::{CommandKind, CommandSpec};
use crate::router::graph::HopKind;
use crate::runtime::Runtime;

/// The manifest of `rt`, as Markdown.
pub fn markdown(rt: &Runtime) -> String {
    let mut out = String::new();
    out.push_str("# Ductile skills\n\n");
    out.push_str(
        "What this ductile instance can do, generated from its configuration. \
Call a plugin command with `POST /plugin/{plugin}/{command}` and a pipeline with \
`POST /pipeline/{name}`, each with a JSON body `{\"payload\": {...}}` and \
`Authorization: Bearer <token>`. A READ command needs the scope `plugin:ro` (or \
`<plugin>:ro`), a WRITE command `plugin:rw` (or `<plugin>:rw`); pipelines need \
`plugin:rw`. From a shell, `ductile run <plugin> <command> --payload JSON` runs \
the same command through the ledger.\n\n",
    );
    plugins(rt, &mut out);
    pipelines(rt, &mut out);
    out
}

fn plugins(rt: &Runtime, out: &mut String) {
    out.push_str("## Plugins\n\n");
    let mut any = false;
    for p in rt.registry.plugins() {
        any = true;
        let _ = writeln!(out, "### {}\n", p.name);
        if let Some(d) = &p.manifest.description {
            let _ = writeln!(out, "{}\n", d.trim());
        }
        if p.base != p.name {
            let _ = writeln!(out, "An instance of `{}`.\n", p.base);
        }
        for c in &p.manifest.commands {
            command(&p.name, c, out);
        }
    }
    if !any {
        out.push_str("No plugin is loaded.\n\n");
    }
}

fn command(plugin: &str, c: &CommandSpec, out: &mut String) {
    let (tier, mutates) = match c.kind {
        CommandKind::Read => ("READ", false),
        CommandKind::Write => ("WRITE", true),
    };
    let _ = writeln!(out, "#### `plugin.{plugin}.{}`\n", c.name);
    if let Some(d) = &c.description {
        let _ = writeln!(out, "{}\n", d.trim());
    }
    let _ = writeln!(
        out,
        "- endpoint: `POST /plugin/{}/{}`",
        segment(plugin),
        segment(&c.name)
    );
    let _ = writeln!(out, "- tier: {tier} (mutates_state: {mutates})");
    let _ = writeln!(out, "- idempotent: {}", hint(c.idempotent));
    let _ = writeln!(out, "- retry_safe: {}", hint(c.retry_safe));
    if let Some(values) = &c.values {
        if !values.consume.is_empty() {
            let _ = writeln!(out, "- reads: {}", code_list(&values.consume));
        }
        for e in &values.emit {
            let _ = writeln!(out, "- emits `{}` with {}", e.event, code_list(&e.values));
        }
    }
    schema("input schema", c.input_schema.as_ref(), out);
    schema("output schema", c.output_schema.as_ref(), out);
    out.push('\n');
}

fn hint(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "true",
        Some(false) => "false",
        None => "unspecified",
    }
}

fn code_list(names: &[String]) -> String {
    if names.is_empty() {
        return "no values".to_string();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn schema(label: &str, schema: Option<&Value>, out: &mut String) {
    let Some(schema) = schema else { return };
    // Compact, on one line: a reader pays per token. Keys keep the
    // manifest's own order (serde_json's preserve_order), as stable as the file.
    let text = serde_json::to_string(schema).unwrap_or_default();
    let _ = writeln!(out, "- {label}:\n\n  ```json\n  {text}\n  ```\n");
}

fn pipelines(rt: &Runtime, out: &mut String) {
    out.push_str("## Pipelines\n\n");
    let graph = &rt.graph;
    let mut list: Vec<_> = graph.pipelines().iter().collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    if list.is_empty() {
        out.push_str("No pipeline is configured.\n");
        return;
    }
    for p in list {
        let _ = writeln!(out, "### `pipeline.{}`\n", p.name);
        let _ = writeln!(out, "- endpoint: `POST /pipeline/{}`", segment(&p.name));
        let trigger = match &p.trigger {
            Trigger::Event(event) => format!("on event `{event}`"),
            Trigger::Hook(hook) => format!("on hook `{}`", hook.as_str()),
        };
        let _ = writeln!(out, "- trigger: {trigger}");
        if let Some(from) = &p.from_plugin {
            let _ = writeln!(out, "- from plugin: `{from}`");
        }
        let mode = match p.timeout {
            Some(t) => format!(
                "{} (timeout {})",
                p.execution_mode.as_str(),
                crate::config::duration::format(t)
            ),
            None => p.execution_mode.as_str().to_string(),
        };
        let _ = writeln!(out, "- mode: {mode}");
        let _ = writeln!(
            out,
            "- tier: WRITE (scope `plugin:rw`); answers {}",
            match p.execution_mode {
                ExecutionMode::Synchronous =>
                    "with the tree's result once it finishes (202 with the job id past the timeout)",
                ExecutionMode::Asynchronous =>
                    "202 with the root job id at once; follow it with `GET /job/{id}/tree`",
            }
        );
        let hops = graph.reachable(&p.entry);
        let conditional = hops
            .iter()
            .any(|h| matches!(h.kind, HopKind::Switch { .. }));
        let steps: Vec<String> = hops
            .into_iter()
            .filter_map(|h| match &h.kind {
                HopKind::Uses {
                    plugin, command, ..
                } => Some(format!("`{plugin}.{command}`")),
                HopKind::Relay(_) => Some("a relay".to_string()),
                HopKind::Switch { .. } => None,
            })
            .collect();
        if !steps.is_empty() {
            let _ = writeln!(out, "- runs: {}", steps.join(", "));
        }
        if conditional {
            out.push_str("- conditional: some steps run only when their `if:` holds\n");
        }
        out.push('\n');
    }
}
