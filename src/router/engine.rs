//! The routing engine: from a finished hop and the events it emitted to the
//! jobs that run next, as a plan the completion transaction writes whole.
//!
//! Owns: continuation along the graph, fresh pipeline roots and plain routes
//! for emitted events, `core.switch` decisions (evaluated here, recorded as
//! settled job rows), `baggage:` accretion, `with:` remaps, the context
//! control fields and the depth fuse.
//! Must not: touch the database (the caller writes the plan in the upstream
//! job's completion transaction, so a crash loses or doubles no child) or
//! spawn anything.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::condition::{Path, Root, Roots};
use super::graph::{COMMAND, HOP_CAP, Hop, HopKind, Outcome, Pipeline, SWITCH};
use crate::clock::format_ts;
use crate::relay::outbox::{self, Outgoing};
use crate::runtime::Runtime;
use crate::store::completion::{Child, Settled};
use crate::store::context::ContextRow;
use crate::store::queue::{NewJob, SubmittedBy};

/// The event a hop receives when its upstream emitted nothing.
pub const STEP_SUCCEEDED: &str = "ductile.step.succeeded";

/// Payload fields a hop passes on to the next when the next event lacks them,
/// as the reference does for media pipelines.
const PROPAGATED: &[&str] = &[
    "pattern",
    "prompt",
    "model",
    "output_dir",
    "output_path",
    "filename",
];

/// The hop that just finished.
#[derive(Debug, Clone)]
pub struct Upstream<'a> {
    /// Its job id.
    pub job_id: &'a str,
    /// Its plugin instance.
    pub plugin: &'a str,
    /// Its tree's dedupe key.
    pub dedupe_key: Option<&'a str>,
    /// Its context row, when it runs inside a tree.
    pub context: Option<&'a ContextRow>,
    /// The event it received (its payload is propagated where noted).
    pub event: &'a Value,
    /// Its response's `result` text.
    pub result: Option<&'a str>,
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The id of the `index`-th event job `job_id` emitted (its one synthetic
/// event is index 0). Derived, not drawn: whichever attempt of the job gets
/// to route its events, an event has one id, so the ledger's unique index on
/// (parent job, source event, hop) recognises a second routing of it.
fn event_id(job_id: &str, index: usize) -> String {
    let digest = blake3::hash(format!("ductile event {job_id} {index}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_bytes()[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// The accumulated baggage of a row without the control fields.
fn baggage_of(row: Option<&ContextRow>) -> Value {
    row.map_or_else(
        || Value::Object(Map::new()),
        |r| crate::store::context::baggage(&r.accumulated),
    )
}

fn depth_of(row: Option<&ContextRow>, key: &str) -> Option<u32> {
    row.and_then(|r| r.accumulated.get(key))
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
}

/// Where a hop sits: its tree, its depth and the cap for it.
#[derive(Debug, Clone)]
struct Place {
    pipeline: Option<String>,
    instance: String,
    depth: u32,
    max_depth: u32,
    context_parent: Option<String>,
    baggage: Value,
}

/// Fills the fields the core owns on an emitted event.
fn complete_event(
    raw: &Value,
    source: &str,
    result: Option<&str>,
    id: String,
    now: DateTime<Utc>,
) -> Value {
    let mut e = match raw {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    e.entry("source").or_insert_with(|| json!(source));
    e.entry("timestamp")
        .or_insert_with(|| json!(format_ts(now)));
    e.entry("event_id").or_insert_with(|| json!(id));
    if let Some(r) = result {
        e.entry("result").or_insert_with(|| json!(r));
    }
    if !e.get("payload").is_some_and(Value::is_object) {
        e.insert("payload".into(), Value::Object(Map::new()));
    }
    Value::Object(e)
}

/// Everything that runs after `up` succeeded with `events`.
pub fn after_success(
    rt: &Runtime,
    up: &Upstream<'_>,
    events: &[Value],
    now: DateTime<Utc>,
) -> Vec<Child> {
    let graph = &rt.graph;
    let mut plan = Vec::new();
    let hop = up
        .context
        .and_then(|c| c.hop.as_deref())
        .and_then(|id| graph.hop(id).map(|h| (id, h)));
    let next: Vec<&Hop> = match hop {
        Some((id, _)) => graph
            .next(id, Outcome::Succeeded)
            .iter()
            .filter_map(|n| graph.hop(n.as_str()))
            .collect(),
        None => Vec::new(),
    };
    let synthetic;
    let events: Vec<Value> = if events.is_empty() && !next.is_empty() {
        synthetic = json!({"type": STEP_SUCCEEDED, "payload": {}});
        vec![complete_event(
            &synthetic,
            up.plugin,
            up.result,
            event_id(up.job_id, 0),
            now,
        )]
    } else {
        events
            .iter()
            .enumerate()
            .map(|(i, e)| complete_event(e, up.plugin, up.result, event_id(up.job_id, i), now))
            .collect()
    };
    let depth = depth_of(up.context, "ductile_route_depth").unwrap_or(0);
    for event in &events {
        let event = propagate(event, up.event);
        if let Some((_, h)) = hop {
            let place = Place {
                pipeline: up.context.and_then(|c| c.pipeline.clone()),
                instance: up
                    .context
                    .and_then(|c| c.accumulated.get("ductile_pipeline_instance_id"))
                    .and_then(Value::as_str)
                    .map_or_else(new_id, str::to_string),
                depth: depth + 1,
                max_depth: depth_of(up.context, "ductile_route_max_depth").unwrap_or(HOP_CAP),
                context_parent: up.context.map(|c| c.id.clone()),
                baggage: baggage_of(up.context),
            };
            for n in &next {
                plan_hop(rt, n, &event, &place, up, Some(h), &mut plan);
            }
        }
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        if kind == STEP_SUCCEEDED {
            continue;
        }
        let entries = graph.entries_for_event(up.plugin, kind);
        if entries.is_empty() {
            log::debug!(plugin = up.plugin, job_id = up.job_id; "event `{kind}` matches no route or pipeline; dropped");
        }
        for entry in entries {
            let (pipeline, cap) = match entry {
                super::graph::Entry::Pipeline(p) => {
                    let roots = Roots {
                        payload: event.get("payload").unwrap_or(&Value::Null),
                        context: &baggage_of(up.context),
                        config: &Value::Null,
                    };
                    if let Some(c) = &p.condition {
                        if !c.value.eval(&roots) {
                            log::debug!(plugin = up.plugin, job_id = up.job_id; "pipeline `{}` not started: its if: is false", p.name);
                            continue;
                        }
                    }
                    (Some(p.name.clone()), p.max_depth.limit())
                }
                super::graph::Entry::Route(_) => (None, None),
            };
            let start = depth + 1;
            let place = Place {
                pipeline,
                instance: new_id(),
                depth: start,
                max_depth: cap.map_or(HOP_CAP, |c| (start + c).min(HOP_CAP)),
                context_parent: up.context.map(|c| c.id.clone()),
                baggage: baggage_of(up.context),
            };
            for id in entry.hops() {
                if let Some(h) = graph.hop(id.as_str()) {
                    plan_hop(rt, h, &event, &place, up, None, &mut plan);
                }
            }
        }
    }
    plan
}

/// `event` with the propagated fields of the upstream's own event payload
/// added where it lacks them.
fn propagate(event: &Value, upstream_event: &Value) -> Value {
    let mut e = event.clone();
    let from = upstream_event.get("payload").and_then(Value::as_object);
    if let (Some(from), Some(Value::Object(p))) = (from, e.get_mut("payload")) {
        for k in PROPAGATED {
            if let Some(v) = from.get(*k) {
                p.entry(*k).or_insert_with(|| v.clone());
            }
        }
    }
    e
}

/// The root row of a pipeline started by a trigger, and its entry hops, or
/// why it does not start.
pub fn start_pipeline(
    rt: &Runtime,
    p: &Pipeline,
    payload: Value,
    event_type: &str,
    source: &str,
    submitted_by: SubmittedBy,
    now: DateTime<Utc>,
) -> Result<Vec<Child>, String> {
    let event = complete_event(
        &json!({"type": event_type, "payload": payload}),
        source,
        None,
        new_id(),
        now,
    );
    if let Some(c) = &p.condition {
        let empty = Value::Object(Map::new());
        let roots = Roots {
            payload: event.get("payload").unwrap_or(&Value::Null),
            context: &empty,
            config: &Value::Null,
        };
        if !c.value.eval(&roots) {
            return Err(format!(
                "pipeline `{}` not started: its if: is false",
                p.name
            ));
        }
    }
    let root_id = new_id();
    let mut root = NewJob::new("pipeline", &p.name, event.clone(), submitted_by, 1);
    root.id = Some(root_id.clone());
    let mut plan = vec![Child {
        job: root,
        context: None,
        settled: Some(Settled::Succeeded(json!({
            "status": "ok",
            "result": format!("pipeline {} started", p.name),
        }))),
    }];
    let place = Place {
        pipeline: Some(p.name.clone()),
        instance: root_id.clone(),
        depth: 1,
        max_depth: p
            .max_depth
            .limit()
            .map_or(HOP_CAP, |c| c.saturating_add(1).min(HOP_CAP)),
        context_parent: None,
        baggage: Value::Object(Map::new()),
    };
    let up = Upstream {
        job_id: &root_id,
        plugin: "pipeline",
        dedupe_key: None,
        context: None,
        event: &event,
        result: None,
    };
    for id in &p.entry {
        if let Some(h) = rt.graph.hop(id.as_str()) {
            plan_hop(rt, h, &event, &place, &up, None, &mut plan);
        }
    }
    Ok(plan)
}

/// An event a relay peer delivered, as a fresh local root: a settled root row
/// (`plugin = relay`) carrying `dedupe_key`, so a redelivery is recognised, and
/// every pipeline or route its type starts here, seeded with `baggage` only.
#[allow(clippy::too_many_arguments)]
pub fn start_remote(
    rt: &Runtime,
    event_type: &str,
    payload: Value,
    baggage: Value,
    peer: &str,
    dedupe_key: &str,
    dedupe_ttl: std::time::Duration,
    now: DateTime<Utc>,
) -> Vec<Child> {
    let source = format!("relay:{peer}");
    let event = complete_event(
        &json!({"type": event_type, "payload": payload}),
        &source,
        None,
        new_id(),
        now,
    );
    let root_id = new_id();
    let mut root = NewJob::new("relay", "accept", event.clone(), SubmittedBy::Relay, 1);
    root.id = Some(root_id.clone());
    root.submitter = Some(peer.to_string());
    root.dedupe_key = Some(dedupe_key.to_string());
    root.dedupe_ttl = Some(dedupe_ttl);
    let mut plan = vec![Child {
        job: root,
        context: None,
        settled: Some(Settled::Succeeded(json!({
            "status": "ok",
            "result": format!("accepted `{event_type}` from relay peer `{peer}`"),
        }))),
    }];
    let up = Upstream {
        job_id: &root_id,
        plugin: &source,
        dedupe_key: Some(dedupe_key),
        context: None,
        event: &event,
        result: None,
    };
    for entry in rt.graph.entries_for_event(&source, event_type) {
        let (pipeline, cap) = match entry {
            super::graph::Entry::Pipeline(p) => {
                if let Some(c) = &p.condition {
                    let roots = Roots {
                        payload: event.get("payload").unwrap_or(&Value::Null),
                        context: &baggage,
                        config: &Value::Null,
                    };
                    if !c.value.eval(&roots) {
                        continue;
                    }
                }
                (Some(p.name.clone()), p.max_depth.limit())
            }
            super::graph::Entry::Route(_) => (None, None),
        };
        let place = Place {
            pipeline,
            instance: new_id(),
            depth: 1,
            max_depth: cap.map_or(HOP_CAP, |c| c.saturating_add(1).min(HOP_CAP)),
            context_parent: None,
            baggage: baggage.clone(),
        };
        for id in entry.hops() {
            if let Some(h) = rt.graph.hop(id.as_str()) {
                plan_hop(rt, h, &event, &place, &up, None, &mut plan);
            }
        }
    }
    plan
}

/// The outbox payload of a `relay:` step and its attempt budget: the event
/// projected with `with`, its dedupe key and baggage resolved now, from this
/// hop's event and the tree's baggage.
fn relay_outbox(
    rt: &Runtime,
    r: &crate::config::pipeline::Relay,
    payload: &Value,
    place: &Place,
    up: &Upstream<'_>,
    id: &str,
) -> Result<(Value, u32), String> {
    let instance = rt
        .config
        .relay
        .instance(&r.to)
        .ok_or_else(|| format!("relay instance `{}` is not configured", r.to))?;
    let roots = Roots {
        payload,
        context: &place.baggage,
        config: &Value::Null,
    };
    let body = match &r.with {
        Some(t) => t.value.render(&roots).map_err(|e| format!("with: {e}"))?,
        None => match payload {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        },
    };
    let dedupe_key = match &r.dedupe_key {
        Some(text) => {
            let path = Path::parse(text, &[Root::Payload, Root::Context])
                .map_err(|e| format!("dedupe_key: {e}"))?;
            let v = path
                .resolve(&roots)
                .ok_or_else(|| format!("dedupe_key: `{text}` is missing"))?;
            Some(v.as_str().map_or_else(|| v.to_string(), str::to_string))
        }
        None => None,
    };
    let baggage = match &r.baggage {
        Some(c) => match c
            .value
            .apply(&Value::Null, payload, &place.baggage)
            .map_err(|e| format!("baggage: {e}"))?
        {
            Value::Object(m) => m,
            _ => Map::new(),
        },
        None => Map::new(),
    };
    let outgoing = Outgoing {
        event_type: r.event.clone(),
        payload: body,
        dedupe_key,
        origin_plugin: Some(up.plugin.to_string()),
        origin_job_id: Some(up.job_id.to_string()),
        // The outbox job's own id: stable across redeliveries, distinct for
        // two relay steps that forward the same upstream event.
        origin_event_id: None,
        baggage,
    };
    let job = outbox::job(
        instance,
        &rt.config.service.name,
        &outgoing,
        id,
        SubmittedBy::Route,
    )
    .map_err(|e| e.0)?;
    Ok((job.payload, job.max_attempts))
}

/// Plans `hop` receiving `event`; a switch is decided at once and its branch
/// planned after it.
#[allow(clippy::too_many_arguments)]
fn plan_hop(
    rt: &Runtime,
    hop: &Hop,
    event: &Value,
    place: &Place,
    up: &Upstream<'_>,
    upstream_hop: Option<&Hop>,
    plan: &mut Vec<Child>,
) {
    if place.depth > place.max_depth.min(HOP_CAP) {
        log::warn!(plugin = up.plugin, job_id = up.job_id; "hop `{}` not dispatched: depth {} is over the cap of {} (max_depth or the hard cap of {HOP_CAP})", hop.id, place.depth, place.max_depth.min(HOP_CAP));
        return;
    }
    let id = new_id();
    let context_id = new_id();
    let payload = event
        .get("payload")
        .cloned()
        .unwrap_or(Value::Object(Map::new()));
    let mut control = Map::new();
    if let Some(p) = &place.pipeline {
        control.insert("ductile_pipeline".into(), json!(p));
    }
    control.insert("ductile_step_id".into(), json!(hop.step));
    control.insert("ductile_pipeline_instance_id".into(), json!(place.instance));
    control.insert("ductile_route_depth".into(), json!(place.depth));
    control.insert("ductile_route_max_depth".into(), json!(place.max_depth));
    let mut settled = None;
    let mut relay_attempts = None;
    let mut baggage = place.baggage.clone();
    let (plugin, command, job_payload) = match &hop.kind {
        HopKind::Uses {
            plugin,
            with,
            baggage: claims,
            ..
        } => {
            if let Some(c) = claims {
                match c.value.apply(&place.baggage, &payload, &place.baggage) {
                    Ok(b) => baggage = b,
                    Err(e) => {
                        settled = Some(Settled::Failed(format!(
                            "baggage of step `{}`: {e}",
                            hop.step
                        )))
                    }
                }
            }
            let mut body = match &payload {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            };
            // Context keys the event lacks are copied in: event data wins.
            if let Value::Object(b) = &baggage {
                for (k, v) in b {
                    body.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            if let (Some(t), None) = (with, &settled) {
                let config = rt
                    .registry
                    .get(plugin)
                    .map_or(Value::Null, |p| p.conf.config.clone());
                let roots = Roots {
                    payload: &payload,
                    context: &baggage,
                    config: &config,
                };
                match t.value.render(&roots) {
                    Ok(over) => body.extend(over),
                    Err(e) => {
                        settled = Some(Settled::Failed(format!(
                            "with: of step `{}`: {e}",
                            hop.step
                        )))
                    }
                }
            }
            let mut ev = match event {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            };
            ev.insert("payload".into(), Value::Object(body));
            if let Some(u) = upstream_hop {
                ev.entry("ductile_upstream_step_id")
                    .or_insert_with(|| json!(u.step));
                if let Some(p) = &u.pipeline {
                    ev.entry("ductile_upstream_pipeline")
                        .or_insert_with(|| json!(p));
                }
            }
            ev.entry("ductile_upstream_plugin")
                .or_insert_with(|| json!(up.plugin));
            (plugin.clone(), COMMAND.to_string(), Value::Object(ev))
        }
        HopKind::Switch { condition } => {
            let config = rt
                .graph
                .next(hop.id.as_str(), Outcome::SwitchTrue)
                .first()
                .and_then(|n| rt.graph.hop(n.as_str()))
                .and_then(Hop::plugin)
                .and_then(|p| rt.registry.get(p))
                .map_or(Value::Null, |p| p.conf.config.clone());
            let roots = Roots {
                payload: &payload,
                context: &place.baggage,
                config: &config,
            };
            let truth = condition.value.eval(&roots);
            let kind = if truth {
                "ductile.switch.true"
            } else {
                "ductile.switch.false"
            };
            settled = Some(Settled::Succeeded(json!({
                "status": "ok",
                "result": format!("{} is {truth}", condition.value),
                "events": [{"type": kind, "payload": payload}],
            })));
            (SWITCH.to_string(), COMMAND.to_string(), event.clone())
        }
        HopKind::Relay(r) => {
            let (job_payload, attempts) = match relay_outbox(rt, r, &payload, place, up, &id) {
                Ok(planned) => planned,
                Err(e) => {
                    settled = Some(Settled::Failed(format!("relay step `{}`: {e}", hop.step)));
                    (event.clone(), 1)
                }
            };
            relay_attempts = Some(attempts);
            (
                outbox::PLUGIN.to_string(),
                outbox::SEND.to_string(),
                job_payload,
            )
        }
    };
    let mut accumulated = match &baggage {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    accumulated.extend(control);
    let max_attempts = relay_attempts.unwrap_or_else(|| {
        rt.registry
            .get(&plugin)
            .map_or(1, |p| p.conf.retry.max_attempts)
    });
    let mut job = NewJob::new(
        &plugin,
        &command,
        job_payload,
        SubmittedBy::Route,
        max_attempts,
    );
    job.id = Some(id.clone());
    job.parent_job_id = Some(up.job_id.to_string());
    job.source_event_id = event
        .get("event_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    job.dedupe_key = up.dedupe_key.map(str::to_string);
    job.dedupe_check = false;
    job.event_context_id = Some(context_id.clone());
    job.hop = Some(hop.id.as_str().to_string());
    let context = ContextRow {
        id: context_id.clone(),
        parent_id: place.context_parent.clone(),
        pipeline: place.pipeline.clone(),
        hop: Some(hop.id.as_str().to_string()),
        accumulated: Value::Object(accumulated.clone()),
    };
    let switch_outcome = match (&hop.kind, &settled) {
        (HopKind::Switch { .. }, Some(Settled::Succeeded(r))) => Some(
            r.pointer("/events/0/type")
                .and_then(Value::as_str)
                .map_or(Outcome::SwitchFalse, |t| {
                    if t.ends_with(".true") {
                        Outcome::SwitchTrue
                    } else {
                        Outcome::SwitchFalse
                    }
                }),
        ),
        _ => None,
    };
    plan.push(Child {
        job,
        context: Some(context.clone()),
        settled,
    });
    // A switch passes the event it saw to the branch it chose, one hop deeper.
    if let Some(outcome) = switch_outcome {
        let branch = Place {
            depth: place.depth + 1,
            context_parent: Some(context_id),
            ..place.clone()
        };
        let switch_up = Upstream {
            job_id: &id,
            plugin: SWITCH,
            dedupe_key: up.dedupe_key,
            context: Some(&context),
            event,
            result: None,
        };
        for n in rt.graph.next(hop.id.as_str(), outcome) {
            if let Some(h) = rt.graph.hop(n.as_str()) {
                plan_hop(rt, h, event, &branch, &switch_up, upstream_hop, plan);
            }
        }
    }
}

/// What a finished root job of a plugin with `notify_on_complete: true`
/// starts: every `on-hook:` pipeline for its terminal `status` (`job.failed`
/// covers `dead` too), each as a fresh tree. `fields` is the hook payload.
pub fn after_terminal(
    rt: &Runtime,
    plugin: &str,
    status: crate::store::queue::JobStatus,
    fields: Value,
    now: DateTime<Utc>,
) -> Vec<Child> {
    use crate::config::pipeline::Hook;
    use crate::store::queue::JobStatus;
    let signal = match status {
        JobStatus::Succeeded => Hook::JobCompleted,
        JobStatus::Failed | JobStatus::Dead => Hook::JobFailed,
        JobStatus::TimedOut => Hook::JobTimedOut,
        _ => return Vec::new(),
    };
    let mut plan = Vec::new();
    for entry in rt.graph.entries_for_hook(signal, plugin) {
        if let super::graph::Entry::Pipeline(p) = entry {
            match start_pipeline(
                rt,
                p,
                fields.clone(),
                signal.as_str(),
                "hook",
                SubmittedBy::System,
                now,
            ) {
                Ok(children) => plan.extend(children),
                Err(why) => log::debug!(plugin = plugin; "{why}"),
            }
        }
    }
    plan
}
