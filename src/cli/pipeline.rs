//! `ductile pipeline list|show|visualize`: the compiled route graph of the
//! config, read without a daemon and without the ledger.
//!
//! Owns: rendering what [`RouteGraph`] says about its pipelines and plain
//! routes. Must not: compile or interpret the graph itself (the router does),
//! open the ledger, or need a running daemon.

use std::path::Path;

use serde_json::{Value, json};

use super::{Args, CliError, output};
use crate::config::pipeline::Trigger;
use crate::router::graph::{MaxDepth, Pipeline, RouteGraph};
use crate::router::visualize;
use crate::runtime::Runtime;

/// `ductile pipeline list [--json]`.
pub fn list(args: &Args) -> Result<(), CliError> {
    let rt = load(args)?;
    let graph = &rt.graph;
    let base = rt.root.parent().unwrap_or(Path::new(""));
    if args.json {
        let pipelines: Vec<Value> = graph
            .pipelines()
            .iter()
            .map(|p| {
                let (max_depth, source) = depth(p.max_depth);
                json!({
                    "name": p.name,
                    "trigger": trigger_json(&p.trigger),
                    "from_plugin": p.from_plugin,
                    "execution_mode": p.execution_mode.as_str(),
                    "timeout": p.timeout.map(crate::config::duration::format),
                    "max_depth": max_depth,
                    "max_depth_source": source,
                    "hops": graph.reachable(&p.entry).len(),
                    "file": p.file,
                })
            })
            .collect();
        let routes: Vec<Value> = graph
            .routes()
            .iter()
            .map(|r| {
                json!({
                    "from": r.from,
                    "event_type": r.event_type,
                    "to": r.to,
                    "origin": r.origin,
                    "file": r.file,
                })
            })
            .collect();
        output::json(&json!({ "pipelines": pipelines, "routes": routes }));
        return Ok(());
    }
    if graph.pipelines().is_empty() && graph.routes().is_empty() {
        output::text("no pipelines or routes configured");
        return Ok(());
    }
    let mut out = String::new();
    if !graph.pipelines().is_empty() {
        let mut rows = vec![row(&[
            "PIPELINE", "TRIGGER", "FROM", "MODE", "TIMEOUT", "DEPTH", "HOPS", "FILE",
        ])];
        for p in graph.pipelines() {
            rows.push(vec![
                p.name.clone(),
                trigger_text(&p.trigger),
                p.from_plugin.clone().unwrap_or_else(|| "-".into()),
                p.execution_mode.as_str().to_string(),
                p.timeout
                    .map_or_else(|| "-".into(), crate::config::duration::format),
                depth_text(p.max_depth),
                graph.reachable(&p.entry).len().to_string(),
                shown(&p.file, base),
            ]);
        }
        out.push_str(&table(&rows));
    }
    if !graph.routes().is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        let mut rows = vec![row(&["ROUTE FROM", "EVENT TYPE", "TO", "FILE"])];
        for r in graph.routes() {
            rows.push(vec![
                r.from.clone(),
                r.event_type.clone(),
                r.to.clone(),
                shown(&r.file, base),
            ]);
        }
        out.push_str(&table(&rows));
    }
    output::text(&out);
    Ok(())
}

/// `ductile pipeline show <name> [--json]`: the compiled shape, as
/// `GET /config/view` shows it under `compiled_routes`.
pub fn show(args: &Args, name: &str) -> Result<(), CliError> {
    let rt = load(args)?;
    let graph = &rt.graph;
    find(graph, name)?;
    let mut described = graph.describe();
    let Some(Value::Object(mut shape)) = described.get_mut(name).map(Value::take) else {
        return Err(CliError::Failed(format!(
            "pipeline `{name}` is missing from the compiled routes"
        )));
    };
    if args.json {
        shape.insert("name".into(), json!(name));
        output::json(&Value::Object(shape));
        return Ok(());
    }
    let base = rt.root.parent().unwrap_or(Path::new(""));
    output::text(&show_text(name, &shape, base));
    Ok(())
}

/// `ductile pipeline visualize <name> [--json]`: the Mermaid flowchart.
pub fn visualize(args: &Args, name: &str) -> Result<(), CliError> {
    let rt = load(args)?;
    find(&rt.graph, name)?;
    let Some(chart) = visualize::mermaid(&rt.graph, name) else {
        return Err(CliError::Failed(format!("no pipeline `{name}`")));
    };
    if args.json {
        output::json(&json!({ "pipeline": name, "mermaid": chart }));
    } else {
        output::text(&chart);
    }
    Ok(())
}

/// The runtime as the daemon would load it (config, plugins, graph); no ledger.
fn load(args: &Args) -> Result<Runtime, CliError> {
    let root = super::config_root(args)?;
    Ok(Runtime::load(&root)?)
}

/// The pipeline called `name`, or an error naming the closest one.
fn find<'g>(graph: &'g RouteGraph, name: &str) -> Result<&'g Pipeline, CliError> {
    if let Some(p) = graph.pipeline(name) {
        return Ok(p);
    }
    let names: Vec<&str> = graph.pipelines().iter().map(|p| p.name.as_str()).collect();
    let message = match crate::suggest::closest(name, &names) {
        Some(close) => format!("no pipeline `{name}`; did you mean `{close}`?"),
        None => format!("no pipeline `{name}` (see `ductile pipeline list`)"),
    };
    Err(CliError::Failed(message))
}

fn trigger_json(trigger: &Trigger) -> Value {
    match trigger {
        Trigger::Event(event) => json!({ "on": event }),
        Trigger::Hook(hook) => json!({ "on_hook": hook.as_str() }),
    }
}

fn trigger_text(trigger: &Trigger) -> String {
    match trigger {
        Trigger::Event(event) => format!("on {event}"),
        Trigger::Hook(hook) => format!("on-hook {hook}"),
    }
}

/// The cap and where it came from, as `describe()` spells them.
fn depth(max_depth: MaxDepth) -> (u32, &'static str) {
    match max_depth {
        MaxDepth::Computed(n) => (n, "computed"),
        MaxDepth::Set(n) => (n, "set"),
        MaxDepth::Unlimited => (0, "unlimited"),
    }
}

fn depth_text(max_depth: MaxDepth) -> String {
    match max_depth {
        MaxDepth::Computed(n) => format!("{n} (computed)"),
        MaxDepth::Set(n) => format!("{n} (set)"),
        MaxDepth::Unlimited => "unlimited".into(),
    }
}

/// A path relative to the config directory when it lies inside it.
fn shown(file: &Path, base: &Path) -> String {
    file.strip_prefix(base)
        .unwrap_or(file)
        .display()
        .to_string()
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_string()).collect()
}

/// Rows as columns padded to their widest cell (the last column unpadded).
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One `describe()` entry as text: the pipeline's guards, then each hop with
/// what it runs and where each outcome leads.
fn show_text(name: &str, shape: &serde_json::Map<String, Value>, base: &Path) -> String {
    let text = |key: &str| scalar(shape.get(key));
    let trigger = match shape.get("trigger") {
        Some(t) if t.get("on_hook").is_some() => format!("on-hook {}", scalar(t.get("on_hook"))),
        Some(t) => format!("on {}", scalar(t.get("on"))),
        None => "-".into(),
    };
    let depth = match text("max_depth_source").as_str() {
        "unlimited" => "unlimited".to_string(),
        source => format!("{} ({source})", text("max_depth")),
    };
    let file = shape
        .get("file")
        .and_then(Value::as_str)
        .map_or_else(|| "-".into(), |f| shown(Path::new(f), base));
    let mut rows = vec![
        vec!["pipeline".into(), name.to_string()],
        vec!["trigger".into(), trigger],
        vec!["from_plugin".into(), text("source_plugin")],
    ];
    if shape.get("if").is_some_and(|c| !c.is_null()) {
        rows.push(vec!["if".into(), text("if")]);
    }
    rows.extend([
        vec!["execution_mode".into(), text("execution_mode")],
        vec!["timeout".into(), text("timeout")],
        vec![
            "max_depth".into(),
            format!(
                "{depth}; longest chain {}, hop cap {}",
                text("longest_chain"),
                text("hop_cap")
            ),
        ],
        vec!["entry".into(), list_text(shape.get("entry"))],
        vec!["file".into(), file],
    ]);
    let mut out = table(&rows);
    let hops = shape.get("hops").and_then(Value::as_array);
    out.push_str(&format!(
        "\nhops ({}):\n",
        hops.map_or(0, std::vec::Vec::len)
    ));
    for hop in hops.into_iter().flatten() {
        out.push_str(&hop_text(hop, name));
    }
    out
}

/// One hop; `pipeline` is the one shown, so only an inlined hop names its own.
fn hop_text(hop: &Value, pipeline: &str) -> String {
    let field = |key: &str| scalar(hop.get(key));
    let kind = field("type");
    let what = match kind.as_str() {
        "uses" => format!("uses {} ({})", field("plugin"), field("command")),
        "switch" => format!("switch ({})", field("plugin")),
        "relay" => format!("relay {} to {}", field("event"), field("to")),
        other => other.to_string(),
    };
    let mut out = format!("  {}  {what}\n", field("id"));
    let mut rows: Vec<Vec<String>> = vec![vec!["step".into(), field("step")]];
    if let Some(declared) = hop.get("pipeline").and_then(Value::as_str)
        && declared != pipeline
    {
        rows.push(vec!["pipeline".into(), declared.to_string()]);
    }
    if let Some(calls) = hop.get("via_call") {
        rows.push(vec!["via call".into(), list_text(Some(calls))]);
    }
    for key in ["if", "with", "baggage", "dedupe_key"] {
        if hop.get(key).is_some_and(|v| !v.is_null()) {
            rows.push(vec![key.into(), field(key)]);
        }
    }
    match hop.get("next") {
        Some(Value::Object(next)) => {
            for (outcome, to) in next {
                let to = match to.as_array() {
                    Some(ids) if ids.is_empty() => "end".to_string(),
                    _ => list_text(Some(to)),
                };
                rows.push(vec![format!("{outcome} ->"), to]);
            }
        }
        _ => rows.push(vec!["next".into(), "end".into()]),
    }
    for line in table(&rows).lines() {
        out.push_str(&format!("    {line}\n"));
    }
    out
}

/// A JSON value as one line: strings bare, null as `-`, others as compact JSON.
fn scalar(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// A JSON array of strings as `a, b`.
fn list_text(v: Option<&Value>) -> String {
    match v.and_then(Value::as_array) {
        Some(items) if !items.is_empty() => items
            .iter()
            .map(|i| scalar(Some(i)))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "-".into(),
    }
}

/// How long `pipeline run --wait` waits when the pipeline sets no timeout.
const WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// `ductile pipeline run <name> [--payload JSON] [--wait]`: writes the tree's
/// root and entry hops to the ledger (as `POST /pipeline/{name}` does) and
/// wakes a running daemon; with `--wait`, reports when the whole tree is done.
pub fn run(args: &Args, name: &str) -> Result<(), CliError> {
    use crate::store::{self, jobs, queue};
    let rt = load(args)?;
    let p = find(&rt.graph, name)?;
    let payload = super::run::read_payload(args)?.unwrap_or_else(|| json!({}));
    let clock = crate::clock::SystemClock;
    let now = crate::clock::Clock::now(&clock);
    let plan = match crate::router::engine::start_pipeline(
        &rt,
        p,
        payload,
        "cli.trigger",
        "cli",
        queue::SubmittedBy::Cli,
        now,
    ) {
        Ok(plan) => plan,
        Err(why) => {
            if args.json {
                output::json(&json!({"status": "skipped", "pipeline": name, "message": why}));
            } else {
                output::text(&why);
            }
            return Ok(());
        }
    };
    let tree_root = plan
        .first()
        .and_then(|c| c.job.id.clone())
        .unwrap_or_default();
    if args.dry_run {
        let jobs: Vec<Value> = plan
            .iter()
            .map(|c| json!({"plugin": c.job.plugin, "command": c.job.command, "payload": c.job.payload}))
            .collect();
        output::json(&json!({"dry_run": true, "pipeline": name, "would_enqueue": jobs}));
        return Ok(());
    }
    crate::disk::admit(&rt.config.state).map_err(|r| CliError::Failed(r.to_string()))?;
    let db = &rt.config.state.path;
    let mut conn = store::open(db, rt.config.state.synchronous)?;
    let tx = queue::begin(&mut conn)?;
    crate::store::completion::insert_children(&tx, &plan, rt.config.service.dedupe_ttl, now)?;
    tx.commit().map_err(|e| {
        crate::store::StoreError::sqlite(format!("commit the start of pipeline {name}"), e)
    })?;
    let woke = crate::lock::ready_daemon(db).is_some_and(|d| d.signal(libc::SIGUSR1).is_ok());
    if args.flag("wait").is_none() {
        if args.json {
            output::json(
                &json!({"job_id": tree_root, "status": "queued", "pipeline": name, "daemon_woken": woke}),
            );
        } else {
            let when = if woke {
                "the daemon runs it now"
            } else {
                "it runs when the daemon starts"
            };
            output::text(&format!(
                "pipeline {name} started as job {tree_root}; {when}"
            ));
        }
        return Ok(());
    }
    if !woke {
        return Err(CliError::Failed(format!(
            "pipeline {name} is queued as job {tree_root}, but no daemon is running to run it (start one with `ductile system start`)"
        )));
    }
    let deadline = std::time::Instant::now() + p.timeout.unwrap_or(WAIT);
    let mut pause = std::time::Duration::from_millis(20);
    let done = loop {
        if let Some(done) = jobs::settled(&conn, &tree_root)? {
            break done;
        }
        if std::time::Instant::now() >= deadline {
            return Err(CliError::Failed(format!(
                "pipeline {name} (job {tree_root}) is still running; follow it with `ductile job tree {tree_root}`"
            )));
        }
        // The daemon writes the tree; a short growing pause keeps the wait cheap.
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(500));
    };
    let ok = done["status"] == "succeeded";
    if args.json {
        let mut v = done;
        v["job_id"] = json!(tree_root);
        output::json(&v);
    } else {
        output::text(&format!(
            "pipeline {name} (job {tree_root}) {}: {}",
            done["status"].as_str().unwrap_or("-"),
            done["result"]
        ));
    }
    if ok { Ok(()) } else { Err(CliError::Exit(1)) }
}
