//! The route graph: every `routes:` entry and `pipelines:` definition of one
//! config snapshot, compiled into hops and the edges between them.
//!
//! Owns: what runs after what. A hop is one job the dispatcher will run: a
//! plugin's `handle` (`uses:` steps and plain routes), an internal
//! `core.switch` deciding a step's `if:`, or a `relay:` delivery. Edges say
//! which hops to dispatch once a hop has finished with a given [`Outcome`].
//! Nested `steps:` are flattened, `split:` fans out, and `call:` is inlined at
//! each call site (the callee's steps, then the caller's continuation), so the
//! engine never resolves a pipeline name while a tree runs.
//! Must not: evaluate conditions, templates or claims (their modules do, when
//! a hop runs), touch the database, or change after it is built: the graph
//! is shared by `Arc` inside the `Runtime`, and a tree keeps the graph it
//! started with across reloads.
//!
//! Invariant: every edge goes from a hop to one built before it (the
//! continuation of a step is compiled before the step), so hop order is a
//! reverse topological order and the graph has no cycles.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::config::pipeline::{Compiled, ExecutionMode, Hook, Relay, Trigger};
use crate::router::baggage::Claims;
use crate::router::condition::Condition;
use crate::router::template::Template;

mod compile;

/// The hard cap on hops in one tree, whatever `max_depth` says: a guard
/// against recursion through events that re-trigger their own pipeline.
pub const HOP_CAP: u32 = 20;

/// The command every `uses:` step and plain route runs.
pub const COMMAND: &str = "handle";

/// The internal plugin name of a step's `if:` decision hop.
pub const SWITCH: &str = "core.switch";

/// The most hops one graph may hold: inlining `call:` multiplies a callee per
/// call site, and a config must not be able to make that explode.
pub const MAX_HOPS: usize = 10_000;

/// A hop's stable id: `<pipeline>:<step>` (the author's `id`, else the step's
/// path such as `steps[1].split[0]`), `…/if` for the switch before a gated
/// step, `<caller>:<step>><callee>:<step>` for hops inlined through `call:`,
/// and `route:<from>:<event_type>:<to>` for a plain route.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HopId(String);

impl HopId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HopId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Borrow<str> for HopId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// How a hop finished, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A `uses:` or `relay:` hop succeeded (with events or the synthetic
    /// `ductile.step.succeeded`).
    Succeeded,
    /// A switch emitted `ductile.switch.true`: run the gated step.
    SwitchTrue,
    /// A switch emitted `ductile.switch.false`: bypass to what follows the step.
    SwitchFalse,
}

/// One job the dispatcher will run.
#[derive(Debug, Clone)]
pub struct Hop {
    /// Stable id, unique in the graph.
    pub id: HopId,
    /// The pipeline whose tree this hop belongs to (none for a plain route).
    pub root: Option<String>,
    /// The pipeline that declares the step; differs from `root` when the hop
    /// was inlined through `call:` (none for a plain route).
    pub pipeline: Option<String>,
    /// The step as the ledger records it (`event_context.step_id`): the
    /// author's `id`, else the step's path; the route's key path for a route.
    pub step: String,
    /// The `call:` steps this hop was inlined through, outermost first, as
    /// hop-id prefixes (`wisdom-chain:processing`).
    pub calls: Vec<String>,
    /// What runs.
    pub kind: HopKind,
    /// The key path of the step (or route) for messages.
    pub origin: String,
    /// The file that declared it.
    pub file: PathBuf,
    edges: Edges,
}

impl Hop {
    /// The plugin the job is enqueued for (`core.switch` for a switch, none for a relay).
    pub fn plugin(&self) -> Option<&str> {
        match &self.kind {
            HopKind::Uses { plugin, .. } => Some(plugin),
            HopKind::Switch { .. } => Some(SWITCH),
            HopKind::Relay(_) => None,
        }
    }
}

/// What a hop does.
#[derive(Debug, Clone)]
pub enum HopKind {
    /// Run `command` (always `handle`) of `plugin`, after `with` remaps the payload;
    /// then claim `baggage` from what it emitted.
    Uses {
        /// The plugin instance.
        plugin: String,
        /// Always [`COMMAND`].
        command: &'static str,
        /// The `with:` remap, if any.
        with: Option<Compiled<Template>>,
        /// The `baggage:` claims, if any.
        baggage: Option<Compiled<Claims>>,
    },
    /// Evaluate `condition` and emit `ductile.switch.true` or `.false`.
    Switch {
        /// The step's `if:`.
        condition: Compiled<Condition>,
    },
    /// Deliver an event to a remote instance; stored, and a job reaching it
    /// fails until remote relay lands.
    Relay(Relay),
}

/// The successors of a hop, per outcome.
#[derive(Debug, Clone, Default)]
struct Edges {
    succeeded: Vec<HopId>,
    switch_true: Vec<HopId>,
    switch_false: Vec<HopId>,
}

/// A pipeline's depth cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxDepth {
    /// Not set: the longest hop chain of the pipeline.
    Computed(u32),
    /// Set by the author (`max_depth: n`, n > 0).
    Set(u32),
    /// `max_depth: 0`: only [`HOP_CAP`] applies.
    Unlimited,
}

impl MaxDepth {
    /// The cap in hops, none when unlimited (the hop cap still applies).
    pub fn limit(self) -> Option<u32> {
        match self {
            MaxDepth::Computed(n) | MaxDepth::Set(n) => Some(n),
            MaxDepth::Unlimited => None,
        }
    }
}

/// A compiled pipeline: its trigger, guards, and the hops its tree starts with.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Unique name.
    pub name: String,
    /// `on:` event type or `on-hook:` signal.
    pub trigger: Trigger,
    /// `from_plugin:`: the only source plugin that matches, when set.
    pub from_plugin: Option<String>,
    /// Pipeline-level `if:`, evaluated after the trigger matched (ignored
    /// when the pipeline is reached through `call:`).
    pub condition: Option<Compiled<Condition>>,
    /// The depth cap; [`HOP_CAP`] applies in every case.
    pub max_depth: MaxDepth,
    /// The most hops one path through the pipeline takes (switch hops count).
    pub longest_chain: u32,
    /// How an API trigger waits.
    pub execution_mode: ExecutionMode,
    /// How long a synchronous trigger waits, when set.
    pub timeout: Option<Duration>,
    /// The hops dispatched when the pipeline starts (several after a leading `split:`).
    pub entry: Vec<HopId>,
    /// The key path of the pipeline for messages (`pipelines[0] (name)`).
    pub origin: String,
    /// The file that declared it.
    pub file: PathBuf,
}

/// A compiled plain route.
#[derive(Debug, Clone)]
pub struct Route {
    /// The emitting plugin.
    pub from: String,
    /// The event type, matched exactly.
    pub event_type: String,
    /// The receiving plugin.
    pub to: String,
    /// Its one hop: `handle` of `to`.
    pub hop: HopId,
    /// Its key path (`routes[0]`).
    pub origin: String,
    /// The file that declared it.
    pub file: PathBuf,
}

/// Something a trigger starts.
#[derive(Debug, Clone, Copy)]
pub enum Entry<'g> {
    /// A pipeline: check its `if:`, then dispatch [`Pipeline::entry`].
    Pipeline(&'g Pipeline),
    /// A plain route: dispatch its hop.
    Route(&'g Route),
}

impl<'g> Entry<'g> {
    /// The hops to dispatch.
    pub fn hops(&self) -> &'g [HopId] {
        match self {
            Entry::Pipeline(p) => &p.entry,
            Entry::Route(r) => std::slice::from_ref(&r.hop),
        }
    }
}

/// The compiled routes and pipelines of one config snapshot. Immutable.
#[derive(Debug, Clone, Default)]
pub struct RouteGraph {
    hops: Vec<Hop>,
    hop_index: HashMap<String, usize>,
    pipelines: Vec<Pipeline>,
    pipeline_index: HashMap<String, usize>,
    routes: Vec<Route>,
    /// Event type → pipelines (`on:`) and routes listening to it, in declaration order.
    by_event: HashMap<String, (Vec<usize>, Vec<usize>)>,
}

impl RouteGraph {
    /// What an event of `event_type` emitted by `source_plugin` starts:
    /// pipelines whose `on:` matches and whose `from_plugin` (if set) is the
    /// source, then routes from that plugin for that type. An empty source
    /// (webhook, scheduler, API) never matches a `from_plugin`.
    pub fn entries_for_event(&self, source_plugin: &str, event_type: &str) -> Vec<Entry<'_>> {
        let Some((pipelines, routes)) = self.by_event.get(event_type) else {
            return Vec::new();
        };
        let pipelines = pipelines
            .iter()
            .map(|&i| &self.pipelines[i])
            .filter(|p| scoped(p, source_plugin))
            .map(Entry::Pipeline);
        let routes = routes
            .iter()
            .map(|&i| &self.routes[i])
            .filter(|r| r.from == source_plugin)
            .map(Entry::Route);
        pipelines.chain(routes).collect()
    }

    /// The `on-hook:` pipelines a `signal` of a root job of `plugin` starts.
    pub fn entries_for_hook(&self, signal: Hook, plugin: &str) -> Vec<Entry<'_>> {
        self.pipelines
            .iter()
            .filter(|p| p.trigger == Trigger::Hook(signal) && scoped(p, plugin))
            .map(Entry::Pipeline)
            .collect()
    }

    /// Whether there is nothing to route: no pipeline and no route.
    pub fn is_empty(&self) -> bool {
        self.pipelines.is_empty() && self.routes.is_empty()
    }

    /// The pipeline called `name`.
    pub fn pipeline(&self, name: &str) -> Option<&Pipeline> {
        self.pipeline_index.get(name).map(|&i| &self.pipelines[i])
    }

    /// Every pipeline, in declaration order.
    pub fn pipelines(&self) -> &[Pipeline] {
        &self.pipelines
    }

    /// Every plain route, in declaration order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The hop with id `id`.
    pub fn hop(&self, id: &str) -> Option<&Hop> {
        self.hop_index.get(id).map(|&i| &self.hops[i])
    }

    /// The hops to dispatch after hop `id` finished with `outcome`; empty at
    /// the end of a path, for an unknown hop, or for an outcome the hop
    /// cannot have (a switch never "succeeds", a plugin never switches).
    pub fn next(&self, id: &str, outcome: Outcome) -> &[HopId] {
        let Some(hop) = self.hop(id) else {
            return &[];
        };
        match (&hop.kind, outcome) {
            (HopKind::Switch { .. }, Outcome::SwitchTrue) => &hop.edges.switch_true,
            (HopKind::Switch { .. }, Outcome::SwitchFalse) => &hop.edges.switch_false,
            (HopKind::Uses { .. } | HopKind::Relay(_), Outcome::Succeeded) => &hop.edges.succeeded,
            _ => &[],
        }
    }

    /// Every hop reachable from `entry`, each once, in breadth-first
    /// dispatch order (what a pipeline's tree can run).
    pub fn reachable(&self, entry: &[HopId]) -> Vec<&Hop> {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut queue: VecDeque<&HopId> = entry.iter().collect();
        let mut out = Vec::new();
        while let Some(id) = queue.pop_front() {
            if !seen.insert(id.as_str()) {
                continue;
            }
            if let Some(hop) = self.hop(id.as_str()) {
                queue.extend(hop.successors());
                out.push(hop);
            }
        }
        out
    }

    /// The compiled routes as JSON, keyed by pipeline name (plain routes by
    /// their key path, `routes[0]`, which no pipeline name can spell):
    /// trigger, source plugin, predicate, depth guard and hops. What
    /// `GET /config/view` shows as `compiled_routes`.
    pub fn describe(&self) -> Value {
        let mut out = serde_json::Map::new();
        for p in &self.pipelines {
            let trigger = match &p.trigger {
                Trigger::Event(event) => json!({"on": event}),
                Trigger::Hook(hook) => json!({"on_hook": hook.as_str()}),
            };
            let (max_depth, depth_source) = match p.max_depth {
                MaxDepth::Computed(n) => (n, "computed"),
                MaxDepth::Set(n) => (n, "set"),
                MaxDepth::Unlimited => (0, "unlimited"),
            };
            let hops: Vec<Value> = self
                .reachable(&p.entry)
                .into_iter()
                .map(describe_hop)
                .collect();
            out.insert(
                p.name.clone(),
                json!({
                    "kind": "pipeline",
                    "trigger": trigger,
                    "source_plugin": p.from_plugin,
                    "if": p.condition.as_ref().map(|c| &c.source),
                    "max_depth": max_depth,
                    "max_depth_source": depth_source,
                    "longest_chain": p.longest_chain,
                    "hop_cap": HOP_CAP,
                    "execution_mode": p.execution_mode.as_str(),
                    "timeout": p.timeout.map(crate::config::duration::format),
                    "entry": p.entry,
                    "hops": hops,
                    "file": p.file,
                }),
            );
        }
        for r in &self.routes {
            let hops: Vec<Value> = self
                .hop(r.hop.as_str())
                .into_iter()
                .map(describe_hop)
                .collect();
            out.insert(
                r.origin.clone(),
                json!({
                    "kind": "route",
                    "trigger": {"on": r.event_type},
                    "source_plugin": r.from,
                    "if": null,
                    "max_depth": 1,
                    "max_depth_source": "computed",
                    "longest_chain": 1,
                    "hop_cap": HOP_CAP,
                    "entry": [&r.hop],
                    "hops": hops,
                    "file": r.file,
                }),
            );
        }
        Value::Object(out)
    }
}

impl Hop {
    /// Every successor, whatever the outcome.
    fn successors(&self) -> impl Iterator<Item = &HopId> {
        let e = &self.edges;
        e.succeeded
            .iter()
            .chain(&e.switch_true)
            .chain(&e.switch_false)
    }
}

impl serde::Serialize for HopId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Whether `p`'s `from_plugin` admits `source`.
fn scoped(p: &Pipeline, source: &str) -> bool {
    p.from_plugin.as_deref().is_none_or(|only| only == source)
}

fn describe_hop(hop: &Hop) -> Value {
    let mut out = json!({
        "id": hop.id,
        "pipeline": hop.pipeline,
        "step": hop.step,
    });
    let (kind, next) = match &hop.kind {
        HopKind::Uses {
            plugin,
            command,
            with,
            baggage,
        } => {
            out["plugin"] = json!(plugin);
            out["command"] = json!(command);
            out["with"] = json!(with.as_ref().map(|w| &w.source));
            out["baggage"] = json!(baggage.as_ref().map(|b| &b.source));
            ("uses", json!({"succeeded": hop.edges.succeeded}))
        }
        HopKind::Switch { condition } => {
            out["plugin"] = json!(SWITCH);
            out["if"] = condition.source.clone();
            (
                "switch",
                json!({"true": hop.edges.switch_true, "false": hop.edges.switch_false}),
            )
        }
        HopKind::Relay(relay) => {
            out["to"] = json!(relay.to);
            out["event"] = json!(relay.event);
            out["dedupe_key"] = json!(relay.dedupe_key);
            out["with"] = json!(relay.with.as_ref().map(|w| &w.source));
            out["baggage"] = json!(relay.baggage.as_ref().map(|b| &b.source));
            ("relay", json!({"succeeded": hop.edges.succeeded}))
        }
    };
    out["type"] = json!(kind);
    if !hop.calls.is_empty() {
        out["via_call"] = json!(hop.calls);
    }
    out["next"] = next;
    out
}

#[cfg(test)]
mod tests;
