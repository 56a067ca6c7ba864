//! The conformance checker behind `ductile plugin check <dir>`: a plugin
//! directory judged the way discovery and the runner will judge it, plus the
//! conventions of the plugin guide, as a list of findings an author (or an
//! agent in a loop) can act on one by one.
//!
//! Owns: the rule catalogue ([`Finding::rule`] ids, stable for scripts), the
//! static pass over the manifest and the files, and the live pass that spawns
//! every declared command through [`crate::plugin::spawn`] with a generated
//! request ([`probe`]).
//! Must not: touch a ledger or a config; every probe runs with an empty config
//! and an empty state, so a plugin that needs real config answers `error`, which
//! is a warning here, not an error.

mod probe;
mod sample;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::plugin::discovery::{self, Inspected};
use crate::plugin::manifest::Manifest;

/// How bad a finding is: errors fail the check, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The plugin would be refused or misbehave under the core.
    Error,
    /// A convention of the plugin guide is not followed.
    Warning,
}

impl Severity {
    /// The spelling in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One thing the checker found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Stable rule id (`manifest.invalid`, `facts.nondeterministic`, ...).
    pub rule: &'static str,
    /// Error or warning.
    pub severity: Severity,
    /// The command concerned, if any.
    pub command: Option<String>,
    /// What is wrong, in one sentence.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

/// One spawn of the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The command sent.
    pub command: String,
    /// Why it was sent (`declared command`, `determinism`, ...).
    pub purpose: &'static str,
    /// Spawn to exit, in milliseconds.
    pub millis: u128,
    /// What came back, in a few words.
    pub outcome: String,
}

/// The whole verdict on one directory.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The directory checked.
    pub dir: PathBuf,
    /// The manifest's name, once it parsed.
    pub plugin: Option<String>,
    /// Every finding, in the order found.
    pub findings: Vec<Finding>,
    /// Every spawn, in order.
    pub probes: Vec<Probe>,
}

impl Report {
    /// Number of findings of `severity`.
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    /// Whether nothing failed.
    pub fn passed(&self) -> bool {
        self.count(Severity::Error) == 0
    }

    /// The report as JSON (`plugin check --json`).
    pub fn to_json(&self) -> Value {
        json!({
            "dir": self.dir,
            "plugin": self.plugin,
            "ok": self.passed(),
            "errors": self.count(Severity::Error),
            "warnings": self.count(Severity::Warning),
            "findings": self.findings.iter().map(|f| json!({
                "rule": f.rule,
                "severity": f.severity.as_str(),
                "command": f.command,
                "message": f.message,
                "hint": f.hint,
            })).collect::<Vec<_>>(),
            "probes": self.probes.iter().map(|p| json!({
                "command": p.command,
                "purpose": p.purpose,
                "ms": p.millis,
                "outcome": p.outcome,
            })).collect::<Vec<_>>(),
        })
    }

    fn push(
        &mut self,
        rule: &'static str,
        severity: Severity,
        command: Option<&str>,
        message: String,
        hint: &str,
    ) {
        self.findings.push(Finding {
            rule,
            severity,
            command: command.map(str::to_string),
            message,
            hint: hint.to_string(),
        });
    }

    fn error(&mut self, rule: &'static str, command: Option<&str>, message: String, hint: &str) {
        self.push(rule, Severity::Error, command, message, hint);
    }

    fn warn(&mut self, rule: &'static str, command: Option<&str>, message: String, hint: &str) {
        self.push(rule, Severity::Warning, command, message, hint);
    }
}

/// Knobs of one check.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Budget of every spawn; `None`: each command's default timeout in the
    /// core (poll 60s, handle 120s, health 10s, init 30s, others 60s).
    pub timeout: Option<Duration>,
}

impl Options {
    /// The budget of one spawn of `command`.
    pub fn timeout_for(&self, command: &str) -> Duration {
        self.timeout
            .unwrap_or_else(|| crate::config::Timeouts::default().for_command(command))
    }
}

/// Checks the plugin in `dir`: the static pass, then (when discovery would
/// load the plugin) the live pass.
pub fn check(dir: &Path, opts: &Options) -> Report {
    let mut report = Report {
        dir: dir.to_path_buf(),
        ..Report::default()
    };
    match discovery::inspect(dir, false) {
        Inspected::NoManifest => report.error(
            "manifest.missing",
            None,
            format!("{} has no {}", dir.display(), discovery::MANIFEST_FILE),
            "write a manifest.yaml (start from `ductile plugin new`, or docs/schemas/manifest.schema.json)",
        ),
        Inspected::Unreadable(reason) => report.error(
            "manifest.invalid",
            None,
            reason,
            "make manifest.yaml a regular file under 256 KiB",
        ),
        Inspected::Invalid(e) => report.error(
            "manifest.invalid",
            None,
            e.to_string(),
            "fix the named field; docs/schemas/manifest.schema.json lists every field and its type",
        ),
        Inspected::Untrusted(manifest, reason) => {
            report.plugin = Some(manifest.name.clone());
            lint_manifest(&mut report, &manifest);
            let specific = file_rules(&mut report, dir, &manifest);
            if !specific {
                report.error(
                    "trust.refused",
                    None,
                    reason,
                    "discovery refuses this directory; fix what the message names",
                );
            }
        }
        Inspected::Trusted(found) => {
            report.plugin = Some(found.manifest.name.clone());
            lint_manifest(&mut report, &found.manifest);
            file_rules(&mut report, dir, &found.manifest);
            if report.passed() {
                probe::run_all(&mut report, &found.manifest, &found.entrypoint, opts);
            }
        }
    }
    report
}

/// The guide's manifest conventions that the loader does not enforce.
fn lint_manifest(report: &mut Report, m: &Manifest) {
    if m.description.as_deref().is_none_or(|d| d.trim().is_empty()) {
        report.warn(
            "manifest.description",
            None,
            "the manifest has no `description`".to_string(),
            "add a one-sentence `description`: operators and LLM tools read it",
        );
    }
    if m.command("health").is_none() {
        report.warn(
            "manifest.no_health",
            None,
            "no `health` command is declared".to_string(),
            "declare `health` (type: read) answering ok without state_updates; `system doctor` and breakers probe it",
        );
    }
    for c in &m.commands {
        let mut missing = Vec::new();
        if c.description.is_none() {
            missing.push("description");
        }
        if c.idempotent.is_none() {
            missing.push("idempotent");
        }
        if c.retry_safe.is_none() {
            missing.push("retry_safe");
        }
        if !missing.is_empty() {
            report.warn(
                "manifest.command_fields",
                Some(&c.name),
                format!(
                    "command `{}` does not declare {}",
                    c.name,
                    missing.join(", ")
                ),
                "give every command a description and honest idempotent / retry_safe flags",
            );
        }
        for e in c.values.iter().flat_map(|v| &v.emit) {
            if let Some(why) = sample::event_name_problem(&m.name, &e.event) {
                report.warn(
                    "events.naming",
                    Some(&c.name),
                    format!("values.emit declares event `{}`: {why}", e.event),
                    "name events `<plugin>.<past_tense_verb>` (`fetch.completed`, `file_handler.written`)",
                );
            }
        }
    }
}

/// The file rules, each with its own id; returns whether any fired.
fn file_rules(report: &mut Report, dir: &Path, m: &Manifest) -> bool {
    let before = report.findings.len();
    if let Ok(meta) = fs::metadata(dir) {
        if meta.permissions().mode() & 0o002 != 0 {
            report.error(
                "dir.world_writable",
                None,
                format!("{} is world-writable", dir.display()),
                "run chmod o-w on the plugin directory",
            );
        }
    }
    let rel = Path::new(&m.entrypoint);
    let path = dir.join(rel);
    match fs::symlink_metadata(&path) {
        Err(_) => report.error(
            "entrypoint.missing",
            None,
            format!(
                "entrypoint `{}` does not exist in {}",
                m.entrypoint,
                dir.display()
            ),
            "create the file the manifest's `entrypoint` names, or fix the name",
        ),
        Ok(_) => {
            let inside = match (fs::canonicalize(dir), fs::canonicalize(&path)) {
                (Ok(d), Ok(p)) => p.starts_with(&d),
                _ => false,
            };
            let literal = !rel.components().any(|c| c == Component::ParentDir);
            if !inside || !literal {
                report.error(
                    "entrypoint.outside_dir",
                    None,
                    format!(
                        "entrypoint `{}` resolves outside {}",
                        m.entrypoint,
                        dir.display()
                    ),
                    "keep the entrypoint inside the plugin directory (no symlinks out of it)",
                );
            }
            if let Ok(meta) = fs::metadata(&path) {
                let mode = meta.permissions().mode();
                if !meta.is_file() {
                    report.error(
                        "entrypoint.not_executable",
                        None,
                        format!("entrypoint `{}` is not a regular file", m.entrypoint),
                        "point `entrypoint` at an executable file",
                    );
                } else if mode & 0o111 == 0 {
                    report.error(
                        "entrypoint.not_executable",
                        None,
                        format!("entrypoint `{}` is not executable", m.entrypoint),
                        &format!("run chmod +x {}", path.display()),
                    );
                }
                if mode & 0o002 != 0 {
                    report.error(
                        "entrypoint.world_writable",
                        None,
                        format!(
                            "entrypoint `{}` is world-writable (mode {:o})",
                            m.entrypoint,
                            mode & 0o7777
                        ),
                        &format!("run chmod o-w {}", path.display()),
                    );
                }
            }
        }
    }
    report.findings.len() > before
}
