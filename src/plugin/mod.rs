//! Plugins: manifests, discovery and trust, protocol v2, and the process runner.
//!
//! Owns: the [`Registry`], built once per config snapshot, which maps every
//! enabled instance name under `plugins:` (including `uses:` aliases) to a runnable
//! [`Plugin`], and reports what was discovered, what was refused and why:
//! [`Registry::load`] reads only the manifests the instances name (the daemon and
//! `ductile run`), [`Registry::survey`] every manifest under the roots (`plugin list`).
//! Must not: touch the database or spawn processes itself ([`spawn`] does that for
//! the worker); nothing here re-validates a [`Config`].
//!
//! Reporting rule: [`Registry::skipped`] lists everything refused (a manifest
//! or trust failure, a duplicate name, an instance that cannot be wired), one
//! precise line each, meant to be logged at warn level; [`Registry::warnings`]
//! lists findings about things that were not refused.

pub mod check;
pub mod container;
pub mod discovery;
pub mod manifest;
pub mod protocol;
pub mod spawn;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, PluginConf};
use crate::plugin::discovery::Found;
use crate::plugin::manifest::Manifest;

/// A runnable plugin instance.
#[derive(Debug, Clone)]
pub struct Plugin {
    /// Instance name (the key under `plugins:`).
    pub name: String,
    /// Name of the manifest that implements it (differs from `name` for aliases).
    pub base: String,
    /// The implementing plugin's directory, as found under its root.
    pub dir: PathBuf,
    /// The entrypoint, canonical and absolute.
    pub entrypoint: PathBuf,
    /// The implementing plugin's manifest, shared between aliases.
    pub manifest: Arc<Manifest>,
    /// The instance's config entry.
    pub conf: PluginConf,
}

/// A manifest found during discovery (configured or not) that passed the trust checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// Manifest name.
    pub name: String,
    /// Plugin directory.
    pub dir: PathBuf,
    /// Manifest version.
    pub version: String,
    /// Whether some `plugins:` entry names it (by name or `uses:`), enabled or not.
    pub configured: bool,
}

/// Something refused: a plugin directory or a configured instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Manifest name, instance name, or (for an unreadable manifest) the directory name.
    pub name: String,
    /// The manifest or plugin dir concerned; the config dir for instance problems
    /// with no plugin dir to point at.
    pub path: PathBuf,
    /// Why, in one line.
    pub reason: String,
}

/// Instance name → runnable plugin, plus the discovery report.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    plugins: BTreeMap<String, Arc<Plugin>>,
    discovered: Vec<Discovered>,
    skipped: Vec<Skipped>,
    warnings: Vec<String>,
}

impl Registry {
    /// Wires the enabled instances, reading only the manifests they name (by
    /// instance name or `uses:`); what the daemon and `ductile run` load.
    pub fn load(config: &Config) -> Registry {
        let enabled = || config.plugins.iter().filter(|(_, conf)| conf.enabled);
        let bases: BTreeSet<String> = enabled()
            .map(|(name, conf)| conf.uses.clone().unwrap_or_else(|| name.clone()))
            .collect();
        let aliases: BTreeSet<String> = enabled()
            .filter(|(name, conf)| conf.uses.as_ref().is_some_and(|u| u != *name))
            .map(|(name, _)| name.clone())
            .collect();
        let (roots, allow) = (&config.plugin_roots, config.service.allow_symlinks);
        Registry::wire(config, discovery::scan_for(roots, allow, &bases, &aliases))
    }

    /// Like [`Registry::load`], after reading every manifest under the plugin
    /// roots, so [`Registry::discovered`] and [`Registry::skipped`] also cover
    /// plugins no instance names (what `plugin list` shows).
    pub fn survey(config: &Config) -> Registry {
        let scan = discovery::scan(&config.plugin_roots, config.service.allow_symlinks);
        Registry::wire(config, scan)
    }

    fn wire(config: &Config, scan: discovery::Scan) -> Registry {
        let mut registry = Registry {
            plugins: BTreeMap::new(),
            discovered: Vec::new(),
            skipped: scan.skipped,
            warnings: scan.warnings,
        };
        let found = scan.found;
        for f in &found {
            let configured = config.plugins.iter().any(|(name, conf)| {
                conf.uses.as_deref().unwrap_or(name.as_str()) == f.manifest.name
            });
            registry.discovered.push(Discovered {
                name: f.manifest.name.clone(),
                dir: f.dir.clone(),
                version: f.manifest.version.clone(),
                configured,
            });
        }
        // Aliases share one manifest allocation with their base.
        let manifests: Vec<Arc<Manifest>> =
            found.iter().map(|f| Arc::new(f.manifest.clone())).collect();

        let mut refused_instances = Vec::new();
        for (name, conf) in &config.plugins {
            if !conf.enabled {
                continue;
            }
            let resolved = resolve(name, conf, &found, &registry.skipped, config).and_then(|i| {
                let spec = conf
                    .container
                    .as_ref()
                    .or(found[i].manifest.container.as_ref());
                let problem = spec
                    .and_then(|s| container::d6e::load_problem(name, s, &conf.config))
                    .or_else(|| {
                        container::stage7::warm::load_problem(name, spec, conf.keep_warm.is_some())
                    });
                match problem {
                    Some(why) => Err((config.dir.clone(), why)),
                    None => Ok(i),
                }
            });
            match resolved {
                Ok(index) => {
                    let f = &found[index];
                    registry.plugins.insert(
                        name.clone(),
                        Arc::new(Plugin {
                            name: name.clone(),
                            base: f.manifest.name.clone(),
                            dir: f.dir.clone(),
                            entrypoint: f.entrypoint.clone(),
                            // An instance's own `container:` replaces its manifest's.
                            manifest: match &conf.container {
                                Some(c) => Arc::new(Manifest {
                                    container: Some(c.clone()),
                                    ..(*manifests[index]).clone()
                                }),
                                None => Arc::clone(&manifests[index]),
                            },
                            conf: conf.clone(),
                        }),
                    );
                }
                Err((path, reason)) => refused_instances.push(Skipped {
                    name: name.clone(),
                    path,
                    reason,
                }),
            }
        }
        registry.skipped.extend(refused_instances);
        registry
    }

    /// The runnable instance called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.get(name)
    }

    /// Every runnable instance, by name.
    pub fn plugins(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.values()
    }

    /// Every trusted manifest found, in scan order (configured or not after
    /// [`Registry::survey`]; only the configured ones after [`Registry::load`]).
    pub fn discovered(&self) -> &[Discovered] {
        &self.discovered
    }

    /// Everything refused, with reasons.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Findings about things that were not refused.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// Picks the discovered plugin implementing instance `name`, or says why none can.
fn resolve(
    name: &str,
    conf: &PluginConf,
    found: &[Found],
    refused: &[Skipped],
    config: &Config,
) -> Result<usize, (PathBuf, String)> {
    let index_of = |n: &str| found.iter().position(|f| f.manifest.name == n);
    let refused_dir = |n: &str| refused.iter().find(|s| s.name == n).map(|s| s.path.clone());
    let alias = conf.uses.as_deref().filter(|u| *u != name);

    let index = match alias {
        Some(base) => {
            if let Some(real) = index_of(name) {
                return Err((
                    found[real].dir.clone(),
                    format!(
                        "plugin `{name}` uses `{base}`, but `{name}` is also the name of the plugin discovered in {}; rename the instance",
                        found[real].dir.display()
                    ),
                ));
            }
            match index_of(base) {
                Some(i) => i,
                None => {
                    let chained = config
                        .plugins
                        .get(base)
                        .and_then(|other| other.uses.as_deref())
                        .filter(|next| *next != base);
                    let reason = match (chained, refused_dir(base)) {
                        (Some(next), _) => format!(
                            "plugin `{name}` uses `{base}`, which is itself an alias of `{next}`; `uses` must name a discovered plugin"
                        ),
                        (None, Some(path)) => format!(
                            "plugin `{name}` uses `{base}`, whose manifest in {} was refused",
                            path.display()
                        ),
                        (None, None) => {
                            format!("plugin `{name}` uses `{base}`, which was not discovered")
                        }
                    };
                    return Err((config.dir.clone(), reason));
                }
            }
        }
        None => match index_of(name) {
            Some(i) => i,
            None => {
                let reason = match refused_dir(name) {
                    Some(path) => format!(
                        "plugin `{name}` is configured but its manifest in {} was refused",
                        path.display()
                    ),
                    None => format!(
                        "plugin `{name}` is configured but no manifest named `{name}` was found in plugin_roots ({})",
                        config
                            .plugin_roots
                            .iter()
                            .map(|r| r.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                return Err((config.dir.clone(), reason));
            }
        },
    };

    let f = &found[index];
    let missing: Vec<String> = f
        .manifest
        .config_keys
        .required
        .iter()
        .filter(|key| {
            conf.config
                .get(key.as_str())
                .is_none_or(serde_json::Value::is_null)
        })
        .map(|key| format!("`{key}`"))
        .collect();
    if !missing.is_empty() {
        let noun = if missing.len() == 1 { "key" } else { "keys" };
        return Err((
            f.dir.clone(),
            format!(
                "plugin `{name}` is missing required config {noun} {} (declared in config_keys.required of `{}`)",
                missing.join(", "),
                f.manifest.name
            ),
        ));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Api, Service, State, Synchronous, Webhooks};
    use crate::plugin::discovery::tests::{TempDir, copy_fixture, manifest_named, write};
    use serde_json::{Value, json};
    use std::path::Path;
    use std::time::Duration;

    fn conf(name: &str, uses: Option<&str>, enabled: bool, config: Value) -> PluginConf {
        PluginConf {
            uses: uses.map(str::to_string),
            enabled,
            config,
            ..PluginConf::new(name)
        }
    }

    fn config(dir: &Path, roots: Vec<PathBuf>, plugins: Vec<PluginConf>) -> Config {
        Config {
            dir: dir.to_path_buf(),
            files: Vec::new(),
            service: Service {
                name: "ductile".to_string(),
                tick_interval: Duration::from_secs(60),
                log_level: "info".to_string(),
                dedupe_ttl: Duration::from_secs(86_400),
                job_log_retention: Duration::from_secs(30 * 86_400),
                job_queue_retention: Duration::from_secs(86_400),
                max_workers: 1,
                strict_mode: false,
                allow_symlinks: false,
                plugin_env_passthrough: Vec::new(),
                shutdown_timeout: Duration::from_secs(30),
                max_response_events: 1000,
                container_engine: None,
            },
            plugin_roots: roots,
            state: State {
                path: dir.join("ductile.db"),
                synchronous: Synchronous::Normal,
                min_free_bytes: 0,
                replication: crate::config::Replication::Off,
            },
            api: Api::default(),
            plugins: plugins.into_iter().map(|c| (c.name.clone(), c)).collect(),
            tokens: Vec::new(),
            webhooks: Webhooks::default(),
            routes: Vec::new(),
            pipelines: Vec::new(),
            extra: BTreeMap::new(),
            relay: Default::default(),
            inactive: Vec::new(),
        }
    }

    /// A root holding ok_basic, hang, not_executable and `needs_keys` (requires two keys).
    fn root_with_fixtures(tmp: &TempDir) -> PathBuf {
        let root = tmp.sub("plugins");
        for name in ["ok_basic", "hang", "not_executable"] {
            copy_fixture(name, &root, name);
        }
        let dir = copy_fixture("ok_basic", &root, "needs_keys");
        write(
            &dir.join("manifest.yaml"),
            &format!(
                "{}config_keys:\n  required: [api_key, region]\n  optional: [timeout]\n",
                manifest_named("needs_keys")
            ),
        );
        root
    }

    fn skipped_reasons(r: &Registry) -> Vec<(String, String)> {
        r.skipped()
            .iter()
            .map(|s| (s.name.clone(), s.reason.clone()))
            .collect()
    }

    #[test]
    fn enabled_instances_become_plugins() {
        let tmp = TempDir::new("reg");
        let root = root_with_fixtures(&tmp);
        let cfg = config(
            &tmp.path,
            vec![root.clone()],
            vec![
                conf("ok_basic", None, true, json!({})),
                conf("hang", None, false, json!({})),
            ],
        );
        let reg = Registry::survey(&cfg);
        let Some(p) = reg.get("ok_basic") else {
            panic!("ok_basic not loaded: {:?}", reg.skipped());
        };
        assert_eq!(p.name, "ok_basic");
        assert_eq!(p.base, "ok_basic");
        assert_eq!(p.dir, root.join("ok_basic"));
        assert_eq!(p.entrypoint, root.join("ok_basic/run.sh"));
        assert!(p.entrypoint.is_absolute());
        assert_eq!(
            p.manifest.fact_rule("poll").map(|f| f.fact_type.as_str()),
            Some("ok_basic.snapshot")
        );
        assert_eq!(p.conf.name, "ok_basic");
        // Disabled is not an error, just not runnable.
        assert!(reg.get("hang").is_none());
        assert_eq!(reg.plugins().count(), 1);
        let discovered: Vec<(&str, bool)> = reg
            .discovered()
            .iter()
            .map(|d| (d.name.as_str(), d.configured))
            .collect();
        assert_eq!(
            discovered,
            vec![("hang", true), ("needs_keys", false), ("ok_basic", true)]
        );
        assert_eq!(reg.discovered()[2].version, "0.1.0");
        assert_eq!(
            skipped_reasons(&reg),
            vec![(
                "not_executable".to_string(),
                format!(
                    "entrypoint `run.sh` in {} is not executable (run chmod +x on it)",
                    root.join("not_executable").display()
                )
            )]
        );
        // The hot path reads only what the enabled instances name: the same
        // plugin, and nothing about the unconfigured or disabled ones.
        let hot = Registry::load(&cfg);
        assert_eq!(
            hot.get("ok_basic").map(|p| p.dir.clone()),
            Some(root.join("ok_basic"))
        );
        let names: Vec<&str> = hot.discovered().iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, vec!["ok_basic"]);
        assert!(hot.skipped().is_empty(), "{:?}", hot.skipped());
        assert!(hot.warnings().is_empty(), "{:?}", hot.warnings());
    }

    #[test]
    fn aliases_share_the_base_manifest() {
        let tmp = TempDir::new("alias");
        let root = root_with_fixtures(&tmp);
        let cfg = config(
            &tmp.path,
            vec![root],
            vec![
                conf("ok_basic", None, true, json!({})),
                conf("probe", Some("ok_basic"), true, json!({"message": "hi"})),
                conf("self_named", Some("self_named"), true, json!({})),
                conf("hang", Some("hang"), true, json!({})),
            ],
        );
        let reg = Registry::load(&cfg);
        let (Some(base), Some(alias)) = (reg.get("ok_basic"), reg.get("probe")) else {
            panic!("not loaded: {:?}", reg.skipped());
        };
        assert_eq!(
            (alias.name.as_str(), alias.base.as_str()),
            ("probe", "ok_basic")
        );
        assert_eq!(alias.entrypoint, base.entrypoint);
        assert!(Arc::ptr_eq(&alias.manifest, &base.manifest));
        assert_eq!(alias.conf.config, json!({"message": "hi"}));
        // `uses:` naming itself is the same as no alias.
        assert!(reg.get("hang").is_some());
        let names: Vec<&str> = reg.plugins().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["hang", "ok_basic", "probe"]);
    }

    #[test]
    fn instance_errors_are_precise() {
        let tmp = TempDir::new("errs");
        let root = root_with_fixtures(&tmp);
        let other = tmp.sub("other");
        let cfg = config(
            &tmp.path,
            vec![root.clone(), other.clone()],
            vec![
                conf("ghost", Some("nothing"), true, json!({})),
                conf("first_alias", Some("ok_basic"), true, json!({})),
                conf("chained", Some("first_alias"), true, json!({})),
                conf("hang", Some("ok_basic"), true, json!({})),
                conf("missing", None, true, json!({})),
                conf("not_executable", None, true, json!({})),
                conf("uses_refused", Some("not_executable"), true, json!({})),
                conf(
                    "needs_keys",
                    None,
                    true,
                    json!({"region": null, "timeout": 5}),
                ),
                conf(
                    "needs_one",
                    Some("needs_keys"),
                    true,
                    json!({"api_key": "k"}),
                ),
                conf(
                    "needs_none",
                    Some("needs_keys"),
                    true,
                    json!({"api_key": "k", "region": "eu"}),
                ),
            ],
        );
        let reg = Registry::load(&cfg);
        let d = tmp.path.display();
        let r = root.display();
        let got = skipped_reasons(&reg);
        let expected = vec![
            ("not_executable".to_string(), format!("entrypoint `run.sh` in {r}/not_executable is not executable (run chmod +x on it)")),
            ("chained".to_string(), "plugin `chained` uses `first_alias`, which is itself an alias of `ok_basic`; `uses` must name a discovered plugin".to_string()),
            ("ghost".to_string(), "plugin `ghost` uses `nothing`, which was not discovered".to_string()),
            ("hang".to_string(), format!("plugin `hang` uses `ok_basic`, but `hang` is also the name of the plugin discovered in {r}/hang; rename the instance")),
            ("missing".to_string(), format!("plugin `missing` is configured but no manifest named `missing` was found in plugin_roots ({r}, {})", other.display())),
            ("needs_keys".to_string(), "plugin `needs_keys` is missing required config keys `api_key`, `region` (declared in config_keys.required of `needs_keys`)".to_string()),
            ("needs_one".to_string(), "plugin `needs_one` is missing required config key `region` (declared in config_keys.required of `needs_keys`)".to_string()),
            ("not_executable".to_string(), format!("plugin `not_executable` is configured but its manifest in {r}/not_executable was refused")),
            ("uses_refused".to_string(), format!("plugin `uses_refused` uses `not_executable`, whose manifest in {r}/not_executable was refused")),
        ];
        assert_eq!(got, expected);
        let names: Vec<&str> = reg.plugins().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["first_alias", "needs_none"]);
        let ghost = reg
            .skipped()
            .iter()
            .find(|s| s.name == "ghost")
            .map(|s| s.path.display().to_string());
        assert_eq!(ghost, Some(d.to_string()));
        let needs = reg
            .skipped()
            .iter()
            .find(|s| s.name == "needs_keys")
            .map(|s| s.path.clone());
        assert_eq!(needs, Some(root.join("needs_keys")));
    }

    #[test]
    fn load_never_reads_unconfigured_manifests() {
        let tmp = TempDir::new("hot");
        let root = root_with_fixtures(&tmp);
        // Broken in every way discovery can notice, none of it configured.
        write(
            &tmp.sub("plugins/broken").join("manifest.yaml"),
            "name: [unclosed\n",
        );
        let fifo = tmp.sub("plugins/fifo").join("manifest.yaml");
        mkfifo(&fifo);
        let huge = tmp.sub("plugins/huge").join("manifest.yaml");
        write(&huge, &"#".repeat(300 * 1024));
        let cfg = config(
            &tmp.path,
            vec![root.clone()],
            vec![conf("ok_basic", None, true, json!({}))],
        );
        let hot = Registry::load(&cfg);
        assert!(hot.get("ok_basic").is_some());
        assert!(hot.skipped().is_empty(), "{:?}", hot.skipped());
        assert!(hot.warnings().is_empty(), "{:?}", hot.warnings());

        let all = Registry::survey(&cfg);
        let r = root.display();
        let mut got = skipped_reasons(&all);
        got.sort();
        assert_eq!(
            got,
            vec![
                (
                    "broken".to_string(),
                    format!(
                        "{r}/broken/manifest.yaml: invalid YAML: did not find expected ',' or ']' at line 2 column 1, while parsing a flow sequence at line 1 column 7"
                    )
                ),
                (
                    "fifo".to_string(),
                    format!(
                        "{r}/fifo/manifest.yaml is not a regular file (it is a FIFO); it is not read"
                    )
                ),
                (
                    "huge".to_string(),
                    format!(
                        "{r}/huge/manifest.yaml is 307200 bytes, over the 256 KiB limit for a manifest; it is not read"
                    )
                ),
                (
                    "not_executable".to_string(),
                    format!(
                        "entrypoint `run.sh` in {r}/not_executable is not executable (run chmod +x on it)"
                    )
                ),
            ]
        );
    }

    #[test]
    fn a_plugin_in_a_directory_named_otherwise_is_still_found() {
        let tmp = TempDir::new("renamed");
        let root = tmp.sub("plugins");
        copy_fixture("ok_basic", &root, "ok-basic-v2");
        copy_fixture("hang", &root, "hang");
        let cfg = config(
            &tmp.path,
            vec![root.clone()],
            vec![
                conf("ok_basic", None, true, json!({})),
                conf("hang", None, true, json!({})),
            ],
        );
        let hot = Registry::load(&cfg);
        assert_eq!(
            hot.get("ok_basic").map(|p| p.dir.clone()),
            Some(root.join("ok-basic-v2"))
        );
        assert!(hot.get("hang").is_some());
        assert!(hot.skipped().is_empty(), "{:?}", hot.skipped());
    }

    #[test]
    fn a_directory_named_after_the_plugin_takes_precedence_in_both_scans() {
        let tmp = TempDir::new("prec");
        let first = tmp.sub("first");
        let second = tmp.sub("second");
        let early = copy_fixture("ok_basic", &first, "aaa_copy");
        let named = copy_fixture("ok_basic", &second, "ok_basic");
        let cfg = config(
            &tmp.path,
            vec![first, second],
            vec![conf("ok_basic", None, true, json!({}))],
        );
        let reason = format!(
            "duplicate plugin `ok_basic` in {} is ignored: {} is named after it and comes first",
            early.display(),
            named.display()
        );
        let all = Registry::survey(&cfg);
        assert_eq!(
            all.get("ok_basic").map(|p| p.dir.clone()),
            Some(named.clone())
        );
        assert_eq!(
            skipped_reasons(&all),
            vec![("ok_basic".to_string(), reason)]
        );
        // The hot path agrees without reading the other directory at all.
        let hot = Registry::load(&cfg);
        assert_eq!(hot.get("ok_basic").map(|p| p.dir.clone()), Some(named));
        assert!(hot.skipped().is_empty(), "{:?}", hot.skipped());
    }

    fn mkfifo(path: &Path) {
        let st = std::process::Command::new("mkfifo").arg(path).status();
        assert!(st.is_ok_and(|s| s.success()), "mkfifo {}", path.display());
    }

    #[test]
    fn empty_registry_has_nothing() {
        let reg = Registry::default();
        assert!(reg.get("x").is_none());
        assert_eq!(reg.plugins().count(), 0);
        assert!(
            reg.discovered().is_empty() && reg.skipped().is_empty() && reg.warnings().is_empty()
        );
    }
}
