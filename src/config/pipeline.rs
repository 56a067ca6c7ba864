//! The typed form of `routes:` and `pipelines:`, as validated from the config
//! alone. Whether the plugins and call targets they name exist is decided when
//! the route graph is compiled (`router::graph`), which reads the manifests.
//!
//! Every pipeline and step keeps its file and a key path spelled for people
//! (`pipelines[2] (summarize).steps[1]`), so later checks can name them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::router::baggage::Claims;
use crate::router::condition::Condition;
use crate::router::template::Template;

/// A compiled value together with the JSON it was compiled from, so views
/// (`GET /config/view`, Mermaid labels) can show what the author wrote.
#[derive(Debug, Clone)]
pub struct Compiled<T> {
    /// The compiled form.
    pub value: T,
    /// The value as written, in JSON.
    pub source: serde_json::Value,
}

/// One `routes:` entry: every `event_type` event of plugin `from` becomes a
/// `handle` job of plugin `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConf {
    /// The emitting plugin instance.
    pub from: String,
    /// The event type, matched exactly.
    pub event_type: String,
    /// The receiving plugin instance.
    pub to: String,
    /// The file that declared the route.
    pub file: PathBuf,
    /// The route's key path (`routes[0]`).
    pub origin: String,
}

/// One `pipelines:` entry.
#[derive(Debug, Clone)]
pub struct PipelineConf {
    /// Unique name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// What starts it: an event type (`on:`) or a lifecycle signal (`on-hook:`).
    pub trigger: Trigger,
    /// Only events (or signals) whose source plugin is exactly this one match.
    pub from_plugin: Option<String>,
    /// Pipeline-level `if:`: evaluated after the trigger matched, before any dispatch.
    pub condition: Option<Compiled<Condition>>,
    /// Author-set depth cap (`0` = unlimited); `None` lets the graph compute one.
    pub max_depth: Option<u32>,
    /// How an API trigger waits for it (default asynchronous).
    pub execution_mode: ExecutionMode,
    /// How long a synchronous trigger waits, when set.
    pub timeout: Option<Duration>,
    /// The steps, in order; never empty.
    pub steps: Vec<StepConf>,
    /// The file that declared the pipeline.
    pub file: PathBuf,
    /// The pipeline's key path, with its name (`pipelines[2] (summarize)`).
    pub origin: String,
}

/// What starts a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// `on:`: a plugin-emitted event of this type.
    Event(String),
    /// `on-hook:`: a lifecycle signal of a root job.
    Hook(Hook),
}

/// The lifecycle signals an `on-hook:` pipeline can listen to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    /// `job.completed`: a root job reached any terminal state.
    JobCompleted,
    /// `job.failed`: a root job failed (or died after its retries).
    JobFailed,
    /// `job.timed_out`: a root job ran past its deadline.
    JobTimedOut,
}

impl Hook {
    /// Every signal, in the order messages list them.
    pub const ALL: [Hook; 3] = [Hook::JobCompleted, Hook::JobFailed, Hook::JobTimedOut];

    /// The spelling in config and events (`job.completed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::JobCompleted => "job.completed",
            Hook::JobFailed => "job.failed",
            Hook::JobTimedOut => "job.timed_out",
        }
    }

    /// The signal spelled `text`, if any.
    pub fn parse(text: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|hook| hook.as_str() == text)
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an API trigger of a pipeline waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionMode {
    /// Fire and forget (`async`, `asynchronous`; the default).
    Asynchronous,
    /// The API call blocks until the tree finishes or `timeout` passes.
    Synchronous,
}

impl ExecutionMode {
    /// The canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionMode::Asynchronous => "asynchronous",
            ExecutionMode::Synchronous => "synchronous",
        }
    }
}

/// One step of a pipeline (or of a nested `steps:`/`split:` list).
#[derive(Debug, Clone)]
pub struct StepConf {
    /// The author's `id:`, unique within the pipeline, if given.
    pub id: Option<String>,
    /// The one thing the step does.
    pub action: Action,
    /// Step-level `if:`; compiled into a `core.switch` hop before the step.
    pub condition: Option<Compiled<Condition>>,
    /// The step's path below its pipeline (`steps[1]`, `steps[2].split[0]`).
    pub path: String,
    /// The step's key path for messages (`pipelines[2] (summarize).steps[1]`).
    pub origin: String,
    /// The file that declared the step.
    pub file: PathBuf,
}

impl StepConf {
    /// The name the ledger and hop ids use: the author's `id`, else the path.
    pub fn name(&self) -> &str {
        self.id.as_deref().unwrap_or(&self.path)
    }
}

/// What a step does: exactly one of the step modes.
#[derive(Debug, Clone)]
pub enum Action {
    /// `uses:`: run the plugin's `handle` command.
    Uses(Uses),
    /// `call:`: run another pipeline's steps here, with the current baggage.
    Call(String),
    /// `steps:`: a nested sequence.
    Steps(Vec<StepConf>),
    /// `split:`: parallel branches, each its own step.
    Split(Vec<StepConf>),
    /// `relay:`: deliver an event to a remote instance (stored; not run yet).
    Relay(Relay),
}

/// A `uses:` step.
#[derive(Debug, Clone)]
pub struct Uses {
    /// The plugin instance (or alias) to run.
    pub plugin: String,
    /// `with:` (or its alias `payload:`): top-level payload keys set before the spawn.
    pub with: Option<Compiled<Template>>,
    /// `baggage:`: the durable facts this step claims.
    pub baggage: Option<Compiled<Claims>>,
}

/// A `relay:` step.
#[derive(Debug, Clone)]
pub struct Relay {
    /// The outbound relay instance name.
    pub to: String,
    /// The remote event type.
    pub event: String,
    /// Where the dedupe key comes from (`payload.*` or `context.*`), if set.
    pub dedupe_key: Option<String>,
    /// The remote event payload projection; none relays the current payload.
    pub with: Option<Compiled<Template>>,
    /// The projection into the relay envelope's baggage.
    pub baggage: Option<Compiled<Claims>>,
}
