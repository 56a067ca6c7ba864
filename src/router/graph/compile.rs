//! From the validated `routes:` and `pipelines:` (and the plugin registry) to
//! a [`RouteGraph`].
//!
//! Owns: the checks that need manifests or the whole set of pipelines: every
//! plugin named by `uses:`, `routes:` and `from_plugin:` is configured, every
//! plugin a job is sent to declares `handle`, every `call:` names a pipeline,
//! no pipeline calls itself (directly or not), and no pipeline is longer than
//! the hop cap. Then the hops and edges, and each pipeline's depth.
//! Must not: re-check what `config::validate` decided.

use std::collections::HashMap;

use super::{
    COMMAND, Edges, HOP_CAP, Hop, HopId, HopKind, MAX_HOPS, MaxDepth, Pipeline, Route, RouteGraph,
};
use crate::config::pipeline::{Action, PipelineConf, Relay, StepConf, Trigger};
use crate::config::{Config, ConfigError, Finding};
use crate::plugin::Registry;

impl RouteGraph {
    /// Compiles the routes and pipelines of `config` against the plugins of
    /// `registry`; returns the graph and the findings that do not stop it
    /// (a step whose plugin is configured but not loaded, say).
    pub fn compile(
        config: &Config,
        registry: &Registry,
    ) -> Result<(RouteGraph, Vec<Finding>), ConfigError> {
        let mut warnings = Vec::new();
        let plugins = Plugins {
            config,
            registry,
            names: config.plugins.keys().map(String::as_str).collect(),
        };
        for route in &config.routes {
            let at = |field: &str| Place::new(&route.file, &format!("{}.{field}", route.origin));
            plugins.configured(&route.from, &at("from"))?;
            plugins.runnable(&route.to, &at("to"), &mut warnings)?;
        }
        let by_name: HashMap<&str, &PipelineConf> = config
            .pipelines
            .iter()
            .map(|p| (p.name.as_str(), p))
            .collect();
        for p in &config.pipelines {
            if let Some(only) = &p.from_plugin {
                let at = Place::new(&p.file, &format!("{}.from_plugin", p.origin));
                plugins.configured(only, &at)?;
                check_hook_opt_in(config, p, only, &mut warnings);
            }
            check_steps(&plugins, &by_name, &p.steps, &mut warnings)?;
        }
        check_call_cycles(config, &by_name)?;

        let mut builder = Builder {
            by_name: &by_name,
            graph: RouteGraph::default(),
        };
        for (index, route) in config.routes.iter().enumerate() {
            let hop = builder.route(route, index)?;
            builder.graph.routes.push(Route {
                from: route.from.clone(),
                event_type: route.event_type.clone(),
                to: route.to.clone(),
                hop,
                origin: route.origin.clone(),
                file: route.file.clone(),
            });
        }
        for p in &config.pipelines {
            let scope = Scope {
                root: &p.name,
                pipeline: &p.name,
                prefix: String::new(),
                calls: Vec::new(),
            };
            let entry = builder.sequence(&scope, &p.steps, Vec::new())?;
            let longest_chain = builder.graph.longest(&entry);
            if longest_chain > HOP_CAP {
                return Err(ConfigError::invalid(
                    p.file.clone(),
                    &p.origin,
                    format!(
                        "its longest path runs {longest_chain} hops (switch hops and called pipelines count), more than the hop cap of {HOP_CAP}"
                    ),
                ));
            }
            let max_depth = match p.max_depth {
                None => MaxDepth::Computed(longest_chain),
                Some(0) => MaxDepth::Unlimited,
                Some(n) => {
                    if n < longest_chain {
                        warnings.push(Finding {
                            file: p.file.clone(),
                            path: format!("{}.max_depth", p.origin),
                            message: format!(
                                "{n} is less than the pipeline's longest path ({longest_chain} hops); a tree stops after {n}"
                            ),
                        });
                    }
                    MaxDepth::Set(n)
                }
            };
            builder.graph.pipelines.push(Pipeline {
                name: p.name.clone(),
                trigger: p.trigger.clone(),
                from_plugin: p.from_plugin.clone(),
                condition: p.condition.clone(),
                max_depth,
                longest_chain,
                execution_mode: p.execution_mode,
                timeout: p.timeout,
                entry,
                origin: p.origin.clone(),
                file: p.file.clone(),
            });
        }
        let mut graph = builder.graph;
        graph.index();
        Ok((graph, warnings))
    }

    /// Fills the lookup tables once the hops, pipelines and routes are in.
    fn index(&mut self) {
        for (i, p) in self.pipelines.iter().enumerate() {
            self.pipeline_index.insert(p.name.clone(), i);
            if let Trigger::Event(event) = &p.trigger {
                self.by_event.entry(event.clone()).or_default().0.push(i);
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            self.by_event
                .entry(r.event_type.clone())
                .or_default()
                .1
                .push(i);
        }
    }

    /// The most hops on one path from `entry`. Successors always come earlier
    /// in `hops` (see the module invariant), so one pass in order suffices.
    fn longest(&self, entry: &[HopId]) -> u32 {
        let mut chain: Vec<u32> = Vec::with_capacity(self.hops.len());
        for hop in &self.hops {
            let below = hop
                .successors()
                .filter_map(|id| self.hop_index.get(id.as_str()))
                .filter_map(|&i| chain.get(i).copied())
                .max()
                .unwrap_or(0);
            chain.push(below.saturating_add(1));
        }
        entry
            .iter()
            .filter_map(|id| self.hop_index.get(id.as_str()))
            .filter_map(|&i| chain.get(i).copied())
            .max()
            .unwrap_or(0)
    }
}

/// A file and key path to blame.
struct Place {
    file: std::path::PathBuf,
    path: String,
}

impl Place {
    fn new(file: &std::path::Path, path: &str) -> Place {
        Place {
            file: file.to_path_buf(),
            path: path.to_string(),
        }
    }

    fn error(&self, message: String) -> ConfigError {
        ConfigError::invalid(self.file.clone(), &self.path, message)
    }

    fn warn(&self, message: String) -> Finding {
        Finding {
            file: self.file.clone(),
            path: self.path.clone(),
            message,
        }
    }
}

/// The configured plugin instances and the loaded ones.
struct Plugins<'c> {
    config: &'c Config,
    registry: &'c Registry,
    names: Vec<&'c str>,
}

impl Plugins<'_> {
    /// `name` is an instance under `plugins:` (enabled or not).
    fn configured(&self, name: &str, at: &Place) -> Result<(), ConfigError> {
        if self.config.plugins.contains_key(name) {
            return Ok(());
        }
        let hint = crate::suggest::hint(name, &self.names);
        Err(at.error(format!("`{name}` is not a configured plugin{hint}")))
    }

    /// A `relay:` step names a configured instance whose `allow` lets its
    /// event through: a send that could never leave is refused at load, not
    /// discovered when the first event fails.
    fn relayable(&self, relay: &Relay, step: &StepConf) -> Result<(), ConfigError> {
        let at = |field: &str| Place::new(&step.file, &format!("{}.relay.{field}", step.origin));
        let relays = &self.config.relay;
        let Some(instance) = relays.instance(&relay.to) else {
            let names: Vec<&str> = relays.instances.iter().map(|i| i.name.as_str()).collect();
            let hint = crate::suggest::hint(&relay.to, &names);
            return Err(at("to").error(format!(
                "`{}` is not an instance of relay-instances.yaml (`instances:`){hint}",
                relay.to
            )));
        };
        if !instance.allows(&relay.event) {
            return Err(at("event").error(format!(
                "instance `{}` does not allow `{}` (its `allow:` lists {})",
                instance.name,
                relay.event,
                instance.allow.join(", ")
            )));
        }
        Ok(())
    }

    /// `name` is configured, and when loaded its manifest declares `handle`,
    /// the command every step and route runs. A configured plugin that is not
    /// loaded (disabled, or refused at discovery) is a warning: turning a
    /// plugin off must not require editing every pipeline that names it.
    fn runnable(
        &self,
        name: &str,
        at: &Place,
        warnings: &mut Vec<Finding>,
    ) -> Result<(), ConfigError> {
        self.configured(name, at)?;
        match self.registry.get(name) {
            Some(plugin) if plugin.manifest.command(COMMAND).is_none() => {
                let declared: Vec<&str> = plugin
                    .manifest
                    .commands
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                Err(at.error(format!(
                    "plugin `{name}` declares no `{COMMAND}` command (it has {}); steps and routes run `{COMMAND}`",
                    declared.join(", ")
                )))
            }
            Some(_) => Ok(()),
            None => {
                warnings.push(at.warn(format!(
                    "plugin `{name}` is not loaded (disabled, or skipped at discovery); its jobs will fail"
                )));
                Ok(())
            }
        }
    }
}

/// A hook pipeline scoped to a plugin fires only if that plugin emits
/// lifecycle signals at all (spec: `notify_on_complete: true` opts in).
fn check_hook_opt_in(config: &Config, p: &PipelineConf, only: &str, warnings: &mut Vec<Finding>) {
    if !matches!(p.trigger, Trigger::Hook(_)) {
        return;
    }
    if config
        .plugin(only)
        .is_some_and(|conf| !conf.notify_on_complete)
    {
        warnings.push(Finding {
            file: p.file.clone(),
            path: format!("{}.from_plugin", p.origin),
            message: format!(
                "plugin `{only}` does not set `notify_on_complete: true`, so this hook pipeline never fires"
            ),
        });
    }
}

/// Plugins of `uses:` steps and targets of `call:` steps, at every depth.
fn check_steps(
    plugins: &Plugins,
    by_name: &HashMap<&str, &PipelineConf>,
    steps: &[StepConf],
    warnings: &mut Vec<Finding>,
) -> Result<(), ConfigError> {
    for step in steps {
        match &step.action {
            Action::Uses(uses) => {
                let at = Place::new(&step.file, &format!("{}.uses", step.origin));
                plugins.runnable(&uses.plugin, &at, warnings)?;
            }
            Action::Call(target) => {
                if !by_name.contains_key(target.as_str()) {
                    let mut names: Vec<&str> = by_name.keys().copied().collect();
                    names.sort_unstable();
                    let hint = crate::suggest::hint(target, &names);
                    let at = Place::new(&step.file, &format!("{}.call", step.origin));
                    return Err(at.error(format!("`{target}` names no pipeline{hint}")));
                }
            }
            Action::Steps(inner) | Action::Split(inner) => {
                check_steps(plugins, by_name, inner, warnings)?;
            }
            Action::Relay(relay) => plugins.relayable(relay, step)?,
        }
    }
    Ok(())
}

/// Refuses a pipeline that calls itself, directly or through others; the
/// message spells the cycle (`a -> b -> a`) at the call step that closes it.
fn check_call_cycles(
    config: &Config,
    by_name: &HashMap<&str, &PipelineConf>,
) -> Result<(), ConfigError> {
    let mut done: HashMap<&str, ()> = HashMap::new();
    for p in &config.pipelines {
        let mut stack = Vec::new();
        visit(p, by_name, &mut stack, &mut done)?;
    }
    Ok(())
}

/// Depth-first over call edges; `stack` holds the pipelines on the current
/// path, `done` those fully explored (no cycle below them).
fn visit<'c>(
    p: &'c PipelineConf,
    by_name: &HashMap<&str, &'c PipelineConf>,
    stack: &mut Vec<&'c str>,
    done: &mut HashMap<&'c str, ()>,
) -> Result<(), ConfigError> {
    if done.contains_key(p.name.as_str()) {
        return Ok(());
    }
    stack.push(&p.name);
    let mut calls = Vec::new();
    collect_calls(&p.steps, &mut calls);
    for step in calls {
        let Action::Call(target) = &step.action else {
            continue;
        };
        if let Some(start) = stack.iter().position(|name| *name == target.as_str()) {
            let mut cycle: Vec<&str> = stack[start..].to_vec();
            cycle.push(target);
            return Err(ConfigError::invalid(
                step.file.clone(),
                &format!("{}.call", step.origin),
                format!("call cycle: {}", cycle.join(" -> ")),
            ));
        }
        if let Some(callee) = by_name.get(target.as_str()) {
            visit(callee, by_name, stack, done)?;
        }
    }
    stack.pop();
    done.insert(&p.name, ());
    Ok(())
}

/// The `call:` steps of `steps`, at every depth, in declaration order.
fn collect_calls<'c>(steps: &'c [StepConf], out: &mut Vec<&'c StepConf>) {
    for step in steps {
        match &step.action {
            Action::Call(_) => out.push(step),
            Action::Steps(inner) | Action::Split(inner) => collect_calls(inner, out),
            Action::Uses(_) | Action::Relay(_) => {}
        }
    }
}

/// Where hops being built belong.
struct Scope<'c> {
    /// The pipeline whose tree it is.
    root: &'c str,
    /// The pipeline declaring the steps (the callee, inside a `call:`).
    pipeline: &'c str,
    /// Hop-id prefix: the call sites passed through, each followed by `>`.
    prefix: String,
    /// The call sites passed through, outermost first.
    calls: Vec<String>,
}

impl Scope<'_> {
    fn id(&self, step: &StepConf) -> String {
        format!("{}{}:{}", self.prefix, self.pipeline, step.name())
    }
}

struct Builder<'c> {
    by_name: &'c HashMap<&'c str, &'c PipelineConf>,
    graph: RouteGraph,
}

impl<'c> Builder<'c> {
    fn push(&mut self, hop: Hop) -> Result<HopId, ConfigError> {
        if self.graph.hops.len() >= MAX_HOPS {
            return Err(ConfigError::invalid(
                hop.file.clone(),
                &hop.origin,
                format!(
                    "the routes and pipelines compile to more than {MAX_HOPS} hops (each `call:` copies the pipeline it calls)"
                ),
            ));
        }
        if self.graph.hop_index.contains_key(hop.id.as_str()) {
            return Err(ConfigError::invalid(
                hop.file.clone(),
                &hop.origin,
                format!("two steps compile to the same hop id `{}`", hop.id),
            ));
        }
        let id = hop.id.clone();
        self.graph
            .hop_index
            .insert(id.as_str().to_string(), self.graph.hops.len());
        self.graph.hops.push(hop);
        Ok(id)
    }

    fn route(
        &mut self,
        route: &crate::config::pipeline::RouteConf,
        index: usize,
    ) -> Result<HopId, ConfigError> {
        let base = format!("route:{}:{}:{}", route.from, route.event_type, route.to);
        // An exact duplicate route (warned about at load) still gets its own hop.
        let id = if self.graph.hop_index.contains_key(&base) {
            format!("{base}#{index}")
        } else {
            base
        };
        self.push(Hop {
            id: HopId(id),
            root: None,
            pipeline: None,
            step: route.origin.clone(),
            calls: Vec::new(),
            kind: HopKind::Uses {
                plugin: route.to.clone(),
                command: COMMAND,
                with: None,
                baggage: None,
            },
            origin: route.origin.clone(),
            file: route.file.clone(),
            edges: Edges::default(),
        })
    }

    /// The entry hops of `steps` run in order, then `after`.
    fn sequence(
        &mut self,
        scope: &Scope<'c>,
        steps: &'c [StepConf],
        after: Vec<HopId>,
    ) -> Result<Vec<HopId>, ConfigError> {
        let mut next = after;
        for step in steps.iter().rev() {
            next = self.step(scope, step, next)?;
        }
        Ok(next)
    }

    /// The entry hops of `step` followed by `after`: a gated step starts at
    /// its switch, whose false edge bypasses to `after`.
    fn step(
        &mut self,
        scope: &Scope<'c>,
        step: &'c StepConf,
        after: Vec<HopId>,
    ) -> Result<Vec<HopId>, ConfigError> {
        let id = scope.id(step);
        let hop = |kind: HopKind, edges: Edges, id: String| Hop {
            id: HopId(id),
            root: Some(scope.root.to_string()),
            pipeline: Some(scope.pipeline.to_string()),
            step: step.name().to_string(),
            calls: scope.calls.clone(),
            kind,
            origin: step.origin.clone(),
            file: step.file.clone(),
            edges,
        };
        let body = match &step.action {
            Action::Uses(uses) => {
                let kind = HopKind::Uses {
                    plugin: uses.plugin.clone(),
                    command: COMMAND,
                    with: uses.with.clone(),
                    baggage: uses.baggage.clone(),
                };
                let edges = Edges {
                    succeeded: after.clone(),
                    ..Edges::default()
                };
                vec![self.push(hop(kind, edges, id.clone()))?]
            }
            Action::Relay(relay) => {
                let edges = Edges {
                    succeeded: after.clone(),
                    ..Edges::default()
                };
                vec![self.push(hop(HopKind::Relay(relay.clone()), edges, id.clone()))?]
            }
            Action::Steps(inner) => self.sequence(scope, inner, after.clone())?,
            Action::Split(branches) => {
                let mut entry = Vec::new();
                for branch in branches {
                    entry.extend(self.step(scope, branch, after.clone())?);
                }
                entry
            }
            Action::Call(target) => {
                // Checked before building: every target exists and no call cycles.
                let Some(callee) = self.by_name.get(target.as_str()).copied() else {
                    return Err(ConfigError::invalid(
                        step.file.clone(),
                        &format!("{}.call", step.origin),
                        format!("`{target}` names no pipeline"),
                    ));
                };
                let mut calls = scope.calls.clone();
                calls.push(id.clone());
                let inner = Scope {
                    root: scope.root,
                    pipeline: &callee.name,
                    prefix: format!("{id}>"),
                    calls,
                };
                self.sequence(&inner, &callee.steps, after.clone())?
            }
        };
        let Some(condition) = &step.condition else {
            return Ok(body);
        };
        let edges = Edges {
            succeeded: Vec::new(),
            switch_true: body,
            switch_false: after,
        };
        let kind = HopKind::Switch {
            condition: condition.clone(),
        };
        Ok(vec![self.push(hop(kind, edges, format!("{id}/if")))?])
    }
}
