//! The runtime snapshot: a validated [`Config`], the plugin [`Registry`] built
//! from it, its compiled schedules, its route graph and the API tokens. Immutable; the daemon swaps a whole new
//! `Arc<Runtime>` on reload and every job keeps the snapshot it was claimed with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{self, Config, ConfigError};
use crate::http::auth::Tokens;
use crate::plugin::Registry;
use crate::router::graph::RouteGraph;
use crate::scheduler::compile;
use crate::scheduler::expr::Schedule;

/// Config + plugins, loaded together.
#[derive(Debug)]
pub struct Runtime {
    /// The root config file this snapshot came from.
    pub root: PathBuf,
    /// The validated config.
    pub config: Config,
    /// Loaded plugins.
    pub registry: Registry,
    /// The schedules of the loaded plugins, compiled, in plugin then declaration order.
    pub schedules: Vec<Schedule>,
    /// The routes and pipelines, compiled; a tree keeps the graph it started
    /// with, so reload swaps it only with the whole snapshot.
    pub graph: Arc<RouteGraph>,
    /// The API tokens and webhook secrets, ready to check requests.
    pub tokens: Tokens,
    /// Non-fatal findings from loading (unknown keys, skipped plugins).
    pub warnings: Vec<String>,
}

impl Runtime {
    /// Loads the config rooted at `root`, compiles every schedule and discovers
    /// the plugins; a schedule that cannot run is a config error like any other.
    pub fn load(root: &Path) -> Result<Runtime, ConfigError> {
        Runtime::load_with(root, Registry::load)
    }

    /// [`load`](Self::load) with a registry that read every manifest under the
    /// plugin roots, not only the configured ones (`plugin list`, and the
    /// explanation of why a plugin is not runnable).
    pub fn survey(root: &Path) -> Result<Runtime, ConfigError> {
        Runtime::load_with(root, Registry::survey)
    }

    fn load_with(root: &Path, registry: fn(&Config) -> Registry) -> Result<Runtime, ConfigError> {
        let loaded = config::load(root)?;
        let compiled = compile_schedules(&loaded.config)?;
        let registry = registry(&loaded.config);
        check_webhooks(&loaded.config, &registry)?;
        let (graph, graph_warnings) = RouteGraph::compile(&loaded.config, &registry)?;
        let (tokens, scope_warnings) = Tokens::build(&loaded.config);
        // Only loaded plugins are scheduled; the others were still checked above,
        // so a config with a broken schedule is refused whichever plugins load.
        let schedules = registry
            .plugins()
            .flat_map(|p| compiled.iter().filter(move |s| s.plugin == p.name))
            .cloned()
            .collect();
        let mut warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
        warnings.extend(scope_warnings.iter().map(ToString::to_string));
        warnings.extend(graph_warnings.iter().map(ToString::to_string));
        warnings.extend(registry.warnings().iter().cloned());
        for s in registry.skipped() {
            warnings.push(format!(
                "plugin `{}` skipped ({}): {}",
                s.name,
                s.path.display(),
                s.reason
            ));
        }
        Ok(Runtime {
            root: root.to_path_buf(),
            config: loaded.config,
            registry,
            schedules,
            graph: Arc::new(graph),
            tokens,
            warnings,
        })
    }

    /// The concurrency cap of a plugin: its explicit `parallelism`, else 1 when
    /// the manifest says `concurrency_safe: false`, else the worker count.
    pub fn parallelism(&self, plugin: &str) -> usize {
        let workers = self.config.service.max_workers.max(1);
        match self.registry.get(plugin) {
            Some(p) => match p.conf.parallelism {
                Some(n) => n.clamp(1, workers),
                None if !p.manifest.concurrency_safe => 1,
                None => workers,
            },
            // Outbox jobs are network waits, not processes: every worker may
            // deliver at once.
            None if plugin == crate::relay::outbox::PLUGIN => workers,
            // Unknown plugins still get claimed so the worker can fail them
            // loudly instead of leaving them queued forever.
            None => 1,
        }
    }
}

/// Every schedule of every configured plugin, compiled; the first that does not
/// compile is an error naming its file and key path.
fn compile_schedules(config: &Config) -> Result<Vec<Schedule>, ConfigError> {
    let mut compiled = Vec::new();
    for plugin in config.plugins.values() {
        for conf in &plugin.schedules {
            let schedule = compile::compile(&plugin.name, conf)
                .map_err(|e| ConfigError::invalid(conf.file.clone(), &e.origin, e.message))?;
            compiled.push(schedule);
        }
    }
    Ok(compiled)
}

/// Every webhook endpoint must reach a loaded plugin and a command its manifest
/// declares; a request would otherwise be accepted and fail later, far from
/// the config line at fault.
fn check_webhooks(config: &Config, registry: &Registry) -> Result<(), ConfigError> {
    for endpoint in &config.webhooks.endpoints {
        let fail = |field: &str, message: String| {
            let path = format!("{}.{field}", endpoint.origin);
            ConfigError::invalid(endpoint.file.clone(), &path, message)
        };
        let Some(plugin) = registry.get(&endpoint.plugin) else {
            return Err(fail(
                "plugin",
                format!(
                    "webhook `{}`: plugin `{}` is not loaded (not configured, disabled or skipped)",
                    endpoint.name, endpoint.plugin
                ),
            ));
        };
        if plugin.manifest.command(&endpoint.command).is_none() {
            return Err(fail(
                "command",
                format!(
                    "webhook `{}`: plugin `{}` declares no command `{}`",
                    endpoint.name, endpoint.plugin, endpoint.command
                ),
            ));
        }
    }
    Ok(())
}

/// The current runtime, swapped atomically on reload. Locked only to clone or
/// replace the `Arc`.
#[derive(Debug)]
pub struct RuntimeCell(std::sync::Mutex<std::sync::Arc<Runtime>>);

impl RuntimeCell {
    /// A cell holding `rt`.
    pub fn new(rt: std::sync::Arc<Runtime>) -> RuntimeCell {
        RuntimeCell(std::sync::Mutex::new(rt))
    }

    /// The current snapshot.
    pub fn current(&self) -> std::sync::Arc<Runtime> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the snapshot; returns the previous one.
    pub fn swap(&self, rt: std::sync::Arc<Runtime>) -> std::sync::Arc<Runtime> {
        std::mem::replace(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()), rt)
    }
}
