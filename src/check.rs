//! `config check`: every finding about a configuration, from syntax to the
//! seal, each with a severity, the file, the key path, the line where it can
//! be found and a hint. The daemon asks the same question under
//! `service.strict_mode`, so a config it refuses is one `config check` flags.
//!
//! Owns: collecting findings and deciding their severity. Must not: print
//! (the CLI renders) or change anything.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::integrity;
use crate::config::{self, Config, ConfigError};
use crate::plugin::Registry;
use crate::runtime::Runtime;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The config cannot run as written (or is refused in this mode).
    Error,
    /// Something is probably wrong; an error under `--strict` or `strict_mode`.
    Warning,
    /// Worth knowing, never an error (keys that are accepted but do nothing yet).
    Info,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How much it matters.
    pub severity: Severity,
    /// What kind of check found it: `syntax`, `schema`, `reference`,
    /// `integrity`, `plugin`, `no_effect`, `strict`.
    pub kind: &'static str,
    /// The file concerned, when one is.
    pub file: Option<PathBuf>,
    /// The dotted key path (`plugins.echo.schedules[0]`); empty for a whole file.
    pub path: String,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong, one line.
    pub message: String,
    /// What to do about it, one line.
    pub hint: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut at = String::new();
        if let Some(file) = &self.file {
            at.push_str(&file.display().to_string());
            if let Some(line) = self.line {
                at.push_str(&format!(":{line}"));
            }
            at.push_str(": ");
        }
        if !self.path.is_empty() {
            at.push_str(&self.path);
            at.push_str(": ");
        }
        write!(f, "{at}{}", self.message)
    }
}

/// What `config check` found.
#[derive(Debug)]
pub struct Report {
    /// The runtime the config loads into.
    pub runtime: Runtime,
    /// Every finding, errors first.
    pub findings: Vec<Finding>,
    /// Whether warnings count as errors (`--strict` or `service.strict_mode`).
    pub strict: bool,
}

impl Report {
    /// Whether nothing refuses the config: no error, and no warning when strict.
    pub fn clean(&self) -> bool {
        self.findings.iter().all(|f| match f.severity {
            Severity::Error => false,
            Severity::Warning => !self.strict,
            Severity::Info => true,
        })
    }
}

/// A config the loader refuses, and which stage refused it.
#[derive(Debug)]
pub struct Unloadable {
    /// `syntax` (the files), `schema` (the values) or `reference` (what they name).
    pub kind: &'static str,
    /// The loader's error.
    pub error: ConfigError,
}

/// Checks the config rooted at `root`. `Err` when it cannot be loaded at all:
/// what the daemon refuses with exit 78 (unreadable, not YAML, a schema
/// violation, a schedule that does not parse, a webhook or pipeline naming a
/// plugin that is not loaded); there is nothing more to check then.
pub fn check(root: &Path, strict: bool) -> Result<Report, Unloadable> {
    let loaded = config::load(root).map_err(|error| Unloadable {
        kind: match error.kind() {
            config::ErrorKind::Invalid { .. } => "schema",
            _ => "syntax",
        },
        error,
    })?;
    let runtime = Runtime::load(root).map_err(|error| Unloadable {
        kind: "reference",
        error,
    })?;
    let strict = strict || loaded.config.service.strict_mode;
    let mut findings = Vec::new();
    for w in &loaded.warnings {
        findings.push(from_config_finding(w, Severity::Warning, "schema"));
    }
    for w in &loaded.config.inactive {
        let mut f = from_config_finding(w, Severity::Info, "no_effect");
        f.hint = "remove the key, or keep it for when the feature lands".into();
        findings.push(f);
    }
    plugin_findings(&runtime, &mut findings);
    findings.extend(references(&runtime.config, &runtime.registry));
    findings.extend(integrity_findings(&runtime.config));
    if strict && runtime.config.api.enabled && no_tokens(&runtime.config) {
        findings.push(Finding {
            severity: Severity::Error,
            kind: "strict",
            file: Some(root.to_path_buf()),
            path: "api.auth.tokens".into(),
            line: None,
            message: "strict_mode: the API is enabled with no API token".into(),
            hint: "add a token to api.auth.tokens or tokens.yaml (`ductile config token create`)"
                .into(),
        });
    }
    for f in &mut findings {
        if f.line.is_none() {
            f.line = f.file.as_deref().and_then(|file| locate(file, &f.path));
        }
    }
    findings.sort_by_key(|f| f.severity);
    Ok(Report {
        runtime,
        findings,
        strict,
    })
}

/// What `service.strict_mode` asks of a daemon before it starts (or reloads)
/// on `rt`: the same clean `config check`; the refusal lists every finding,
/// one per line. Without strict mode, nothing.
pub fn strict_gate(rt: &Runtime, what: &str) -> Result<(), String> {
    if !rt.config.service.strict_mode {
        return Ok(());
    }
    let report = check(&rt.root, true).map_err(|e| e.error.to_string())?;
    if report.clean() {
        return Ok(());
    }
    let refused: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.severity != Severity::Info)
        .map(|f| format!("{f} (hint: {})", f.hint))
        .collect();
    Err(format!(
        "strict_mode: refusing to {what} with {} finding(s) from `ductile config check`:\n{}",
        refused.len(),
        refused.join("\n")
    ))
}

/// Whether neither `api.auth.tokens` nor `tokens:` holds a token.
fn no_tokens(config: &Config) -> bool {
    config.api.auth_tokens.is_empty() && config.tokens.is_empty()
}

fn from_config_finding(w: &config::Finding, severity: Severity, kind: &'static str) -> Finding {
    let hint = if w.message.starts_with("unknown key") {
        "remove or rename the key; unknown keys are ignored"
    } else {
        "see docs/CONFIG.md for this key"
    };
    Finding {
        severity,
        kind,
        file: Some(w.file.clone()),
        path: w.path.clone(),
        line: None,
        message: w.message.clone(),
        hint: hint.into(),
    }
}

/// Plugins that were configured but refused are errors: the config names
/// something that will not run.
fn plugin_findings(rt: &Runtime, findings: &mut Vec<Finding>) {
    for s in rt.registry.skipped() {
        findings.push(Finding {
            severity: Severity::Error,
            kind: "plugin",
            file: Some(s.path.clone()),
            path: format!("plugins.{}", s.name),
            line: None,
            message: format!("configured plugin `{}` is skipped: {}", s.name, s.reason),
            hint: "fix the plugin (or its entry), or set `enabled: false` on it".into(),
        });
    }
    for w in rt.registry.warnings() {
        findings.push(Finding {
            severity: Severity::Warning,
            kind: "plugin",
            file: None,
            path: String::new(),
            line: None,
            message: w.clone(),
            hint: "see `ductile plugin list`".into(),
        });
    }
    // The loader's findings about scope files and the route graph, structured
    // (the runtime keeps them only as text).
    let (_, scope) = crate::http::auth::Tokens::build(&rt.config);
    for w in &scope {
        findings.push(from_config_finding(w, Severity::Warning, "reference"));
    }
    if let Ok((_, graph)) = crate::router::graph::RouteGraph::compile(&rt.config, &rt.registry) {
        for w in &graph {
            findings.push(from_config_finding(w, Severity::Warning, "reference"));
        }
    }
}

/// Cross-references the loader does not refuse: every schedule of a loaded
/// plugin names a command its manifest declares.
fn references(config: &Config, registry: &Registry) -> Vec<Finding> {
    let mut out = Vec::new();
    for plugin in config.plugins.values() {
        for conf in &plugin.schedules {
            let path = if conf.origin.is_empty() {
                format!("plugins.{}.schedules", plugin.name)
            } else {
                conf.origin.clone()
            };
            let Some(loaded) = registry.get(&plugin.name) else {
                continue;
            };
            let command = if conf.command.is_empty() {
                "poll"
            } else {
                conf.command.as_str()
            };
            if loaded.manifest.command(command).is_none() {
                let declared: Vec<&str> = loaded
                    .manifest
                    .commands
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                out.push(Finding {
                    severity: Severity::Error,
                    kind: "reference",
                    file: Some(conf.file.clone()),
                    path: format!("{path}.command"),
                    line: None,
                    message: format!(
                        "schedule of `{}` names command `{command}`, which its manifest does not declare",
                        plugin.name
                    ),
                    hint: format!("use one of: {}", declared.join(", ")),
                });
            }
        }
    }
    out
}

/// The seal's problems, as findings: errors where they refuse a start in any
/// mode, warnings (which strict mode refuses) otherwise.
fn integrity_findings(config: &Config) -> Vec<Finding> {
    match integrity::verify(config) {
        Err(e) => vec![Finding {
            severity: Severity::Error,
            kind: "integrity",
            file: Some(config.dir.join(integrity::SEAL_FILE)),
            path: String::new(),
            line: None,
            message: e.to_string(),
            hint: "review the config, then run `ductile config lock`".into(),
        }],
        Ok(verdict) => verdict
            .problems
            .iter()
            .map(|p| Finding {
                severity: if p.always_fatal {
                    Severity::Error
                } else {
                    Severity::Warning
                },
                kind: "integrity",
                file: Some(p.file.clone()),
                path: p.key.clone(),
                line: None,
                message: format!("{} ({} tier)", p.message, p.tier.name()),
                hint: p.hint.clone(),
            })
            .collect(),
    }
}

/// The line of the key at dotted `path` in a block-style YAML `file`, found
/// by indentation; `None` for flow style, list items it cannot tell apart, or
/// a path that is not in the file. Integrity keys are not key paths and
/// are never found.
fn locate(file: &Path, path: &str) -> Option<usize> {
    if path.is_empty() || !file.extension().is_some_and(|x| x == "yaml" || x == "yml") {
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let segments: Vec<&str> = path
        .split('.')
        .map(|s| s.split('[').next().unwrap_or(s))
        .filter(|s| !s.is_empty())
        .collect();
    let lines: Vec<&str> = text.lines().collect();
    let (mut from, mut indent, mut found) = (0usize, None::<usize>, None);
    for segment in segments {
        let hit = lines.iter().enumerate().skip(from).find_map(|(i, line)| {
            let body = line.trim_start();
            let pad = line.len() - body.len();
            let body = body.strip_prefix("- ").unwrap_or(body);
            let deeper = indent.is_none_or(|d| pad > d);
            let named = body
                .strip_prefix(segment)
                .or_else(|| {
                    body.strip_prefix('"')
                        .and_then(|b| b.strip_prefix(segment))
                        .and_then(|b| b.strip_prefix('"'))
                })
                .is_some_and(|rest| rest.trim_start().starts_with(':'));
            (deeper && named).then_some((i, pad))
        })?;
        from = hit.0 + 1;
        indent = Some(hit.1);
        found = Some(hit.0 + 1);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, path: &str) -> Option<usize> {
        let dir = std::env::temp_dir().join(format!("ductile-locate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{}.yaml", path.replace(['.', '[', ']'], "_")));
        std::fs::write(&file, text).unwrap();
        let line = locate(&file, path);
        std::fs::remove_file(&file).unwrap();
        line
    }

    #[test]
    fn finds_nested_keys_by_indentation() {
        let text =
            "service:\n  name: x\nplugins:\n  echo:\n    shedules: []\n  other:\n    name: y\n";
        assert_eq!(at(text, "plugins.echo.shedules"), Some(5));
        assert_eq!(at(text, "plugins.other.name"), Some(7));
        assert_eq!(at(text, "service.name"), Some(2));
        assert_eq!(at(text, "plugins.missing"), None);
    }

    #[test]
    fn list_items_and_flow_style() {
        let text = "webhooks:\n  endpoints:\n    - name: a\n      plugin: echo\n";
        assert_eq!(at(text, "webhooks.endpoints[0].plugin"), Some(4));
        assert_eq!(at("plugins: {echo: {}}\n", "plugins.echo"), None);
    }
}
