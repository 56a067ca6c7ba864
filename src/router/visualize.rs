//! A pipeline's compiled graph as a Mermaid flowchart (`ductile pipeline
//! visualize <name>`): one node per hop, switch hops as decision diamonds
//! with `true`/`false` edges, `split:` as fan-out, and the hops inlined
//! through `call:` grouped in a subgraph per call site.
//!
//! Owns: the text of the diagram. Must not: print (the CLI does).

use std::collections::HashMap;
use std::fmt::Write;

use serde_json::Value;

use crate::config::pipeline::Trigger;
use crate::router::graph::{Hop, HopId, HopKind, Outcome, RouteGraph};

/// Labels longer than this are cut, so a large condition keeps the chart readable.
const MAX_LABEL: usize = 60;

/// The flowchart of pipeline `pipeline`, or none if there is no such pipeline.
pub fn mermaid(graph: &RouteGraph, pipeline: &str) -> Option<String> {
    let p = graph.pipeline(pipeline)?;
    let hops = graph.reachable(&p.entry);
    let names: HashMap<&str, String> = hops
        .iter()
        .enumerate()
        .map(|(i, hop)| (hop.id.as_str(), format!("n{i}")))
        .collect();
    let mut out = String::from("flowchart TD\n");
    let trigger = match &p.trigger {
        Trigger::Event(event) => format!("on: {event}"),
        Trigger::Hook(hook) => format!("on-hook: {hook}"),
    };
    let mut start = escape(&trigger);
    if let Some(only) = &p.from_plugin {
        let _ = write!(start, "<br/>from {}", escape(only));
    }
    if let Some(condition) = &p.condition {
        let _ = write!(start, "<br/>if {}", escape(&summary(&condition.source)));
    }
    let _ = writeln!(out, "  start([\"{start}\"])");
    nodes(&mut out, &hops, &names, &[], 1);
    let _ = writeln!(out, "  done((\"end\"))");
    for id in &p.entry {
        edge(&mut out, "start", None, id, &names);
    }
    for hop in &hops {
        let from = &names[hop.id.as_str()];
        match &hop.kind {
            HopKind::Switch { .. } => {
                for (label, outcome) in [
                    ("true", Outcome::SwitchTrue),
                    ("false", Outcome::SwitchFalse),
                ] {
                    edges(
                        &mut out,
                        from,
                        Some(label),
                        graph.next(hop.id.as_str(), outcome),
                        &names,
                    );
                }
            }
            HopKind::Uses { .. } | HopKind::Relay(_) => {
                edges(
                    &mut out,
                    from,
                    None,
                    graph.next(hop.id.as_str(), Outcome::Succeeded),
                    &names,
                );
            }
        }
    }
    Some(out)
}

/// The nodes whose call chain is exactly `calls`, then one subgraph per call
/// site one level deeper, recursively.
fn nodes(
    out: &mut String,
    hops: &[&Hop],
    names: &HashMap<&str, String>,
    calls: &[String],
    depth: usize,
) {
    let indent = "  ".repeat(depth);
    for hop in hops.iter().filter(|h| h.calls == calls) {
        let _ = writeln!(out, "{indent}{}{}", names[hop.id.as_str()], shape(hop));
    }
    let mut sites: Vec<&String> = Vec::new();
    for hop in hops {
        if hop.calls.len() > calls.len() && hop.calls.starts_with(calls) {
            let site = &hop.calls[calls.len()];
            if !sites.contains(&site) {
                sites.push(site);
            }
        }
    }
    for (i, site) in sites.into_iter().enumerate() {
        // The callee is the pipeline named right after the call site in any inner hop id.
        let callee = hops
            .iter()
            .find_map(|h| h.id.as_str().strip_prefix(&format!("{site}>")))
            .and_then(|rest| rest.split(':').next())
            .unwrap_or("");
        let id = format!("call{}_{i}", depth);
        let _ = writeln!(out, "{indent}subgraph {id}[\"call {}\"]", escape(callee));
        let mut deeper = calls.to_vec();
        deeper.push(site.clone());
        nodes(out, hops, names, &deeper, depth + 1);
        let _ = writeln!(out, "{indent}end");
    }
}

fn shape(hop: &Hop) -> String {
    match &hop.kind {
        HopKind::Uses { plugin, .. } => {
            format!("[\"{}<br/>uses {}\"]", escape(&hop.step), escape(plugin))
        }
        HopKind::Switch { condition } => {
            format!("{{\"if {}\"}}", escape(&summary(&condition.source)))
        }
        HopKind::Relay(relay) => format!(
            "[/\"{}<br/>relay {} to {}\"/]",
            escape(&hop.step),
            escape(&relay.event),
            escape(&relay.to)
        ),
    }
}

fn edges(
    out: &mut String,
    from: &str,
    label: Option<&str>,
    to: &[HopId],
    names: &HashMap<&str, String>,
) {
    if to.is_empty() {
        let arrow = label.map_or("-->".to_string(), |l| format!("-- {l} -->"));
        let _ = writeln!(out, "  {from} {arrow} done");
    }
    for id in to {
        edge(out, from, label, id, names);
    }
}

fn edge(
    out: &mut String,
    from: &str,
    label: Option<&str>,
    to: &HopId,
    names: &HashMap<&str, String>,
) {
    let Some(to) = names.get(to.as_str()) else {
        return;
    };
    match label {
        Some(label) => {
            let _ = writeln!(out, "  {from} -- {label} --> {to}");
        }
        None => {
            let _ = writeln!(out, "  {from} --> {to}");
        }
    }
}

/// Text safe inside a quoted Mermaid label.
fn escape(text: &str) -> String {
    text.replace('&', "#amp;")
        .replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
}

/// A condition as one short line: `payload.status eq error`, `all(…; …)`.
fn summary(condition: &Value) -> String {
    let text = summarize(condition);
    if text.chars().count() <= MAX_LABEL {
        return text;
    }
    let cut: String = text.chars().take(MAX_LABEL - 1).collect();
    format!("{cut}…")
}

fn summarize(condition: &Value) -> String {
    let Some(map) = condition.as_object() else {
        return condition.to_string();
    };
    let list = |items: &Value| match items.as_array() {
        Some(items) => items.iter().map(summarize).collect::<Vec<_>>().join("; "),
        None => summarize(items),
    };
    if let Some(items) = map.get("all") {
        return format!("all({})", list(items));
    }
    if let Some(items) = map.get("any") {
        return format!("any({})", list(items));
    }
    if let Some(inner) = map.get("not") {
        return format!("not({})", summarize(inner));
    }
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let mut parts = vec![text(map.get("path")), text(map.get("op"))];
    if let Some(value) = map.get("value") {
        parts.push(text(Some(value)));
    }
    parts.join(" ")
}
