//! Comparing a loaded config with its seal, and the tier rules that decide
//! which differences refuse a start or a reload.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::seal::{self, Current, Fingerprint, Seal};
use super::{IntegrityError, SEAL_FILE};
use crate::config::Config;

/// The hint every problem ends with, once reviewed.
const LOCK_AFTER_REVIEW: &str = "review the change, then run `ductile config lock`";

/// Which rule a problem falls under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// `tokens.yaml`, `webhooks.yaml`, `scopes/*.json`: always refused.
    HighSecurity,
    /// Every other config file: a warning, refused under `strict_mode`.
    Operational,
    /// A plugin's code: refused for enabled plugins, a warning otherwise.
    Plugin,
}

impl Tier {
    /// The tier's name in findings (`high-security`, `operational`, `plugin`).
    pub fn name(self) -> &'static str {
        match self {
            Tier::HighSecurity => "high-security",
            Tier::Operational => "operational",
            Tier::Plugin => "plugin",
        }
    }
}

/// One difference between the config on disk and its seal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The rule it falls under.
    pub tier: Tier,
    /// Refused whatever the mode (high-security files, enabled plugins).
    pub always_fatal: bool,
    /// The file concerned (the seal itself when it is missing or incomplete).
    pub file: PathBuf,
    /// The seal's key for it (`tokens.yaml`, `plugin_fingerprints.echo`).
    pub key: String,
    /// What is wrong, one line.
    pub message: String,
    /// What to do about it, one line.
    pub hint: String,
}

impl Problem {
    /// Whether this problem refuses a start (or a reload) in this mode.
    pub fn is_fatal(&self, strict: bool) -> bool {
        self.always_fatal || strict
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ({} tier); {}",
            self.file.display(),
            self.message,
            self.tier.name(),
            self.hint
        )
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Whether a `.checksums` exists.
    pub sealed: bool,
    /// Every difference found, high-security first.
    pub problems: Vec<Problem>,
}

impl Verdict {
    /// The problems that refuse a start in this mode.
    pub fn fatal(&self, strict: bool) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(move |p| p.is_fatal(strict))
    }
}

/// The tier of a sealed file, by its key.
fn tier_of(key: &str) -> Tier {
    let path = Path::new(key);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let parent = path
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("");
    if name == "tokens.yaml"
        || name == "webhooks.yaml"
        || (parent == "scopes" && name.ends_with(".json"))
    {
        Tier::HighSecurity
    } else {
        Tier::Operational
    }
}

fn short(hash: &str) -> &str {
    let hex = hash.strip_prefix("blake3:").unwrap_or(hash);
    hex.get(..12).unwrap_or(hex)
}

/// Compares `config` as it is on disk now with its seal.
pub fn verify(config: &Config) -> Result<Verdict, IntegrityError> {
    let now = seal::current(config)?;
    let seal_path = config.dir.join(SEAL_FILE);
    let sealed = seal::read(&seal_path)?;
    let mut problems = match &sealed {
        None => unsealed(&now, &seal_path),
        Some(seal) => compare(&config.dir, &now, seal, &seal_path),
    };
    // High-security first: the first line of a refusal is the one that matters.
    problems.sort_by_key(|p| match (p.tier, p.always_fatal) {
        (Tier::HighSecurity, _) => 0,
        (Tier::Plugin, true) => 1,
        _ => 2,
    });
    Ok(Verdict {
        sealed: sealed.is_some(),
        problems,
    })
}

/// No seal at all: each high-security file is an unsealed one (refused), and
/// the config as a whole is unsealed (a warning).
fn unsealed(now: &Current, seal_path: &Path) -> Vec<Problem> {
    let mut problems: Vec<Problem> = now
        .files
        .keys()
        .filter(|k| tier_of(k) == Tier::HighSecurity)
        .map(|k| Problem {
            tier: Tier::HighSecurity,
            always_fatal: true,
            file: now.paths.get(k).cloned().unwrap_or_else(|| k.into()),
            key: k.clone(),
            message: format!("high-security file is not sealed (no {SEAL_FILE})"),
            hint: "review it, then run `ductile config lock`".into(),
        })
        .collect();
    problems.push(Problem {
        tier: Tier::Operational,
        always_fatal: false,
        file: seal_path.to_path_buf(),
        key: String::new(),
        message: "the config is not sealed; nothing is verified".into(),
        hint: "review the config, then run `ductile config lock`".into(),
    });
    problems
}

fn compare(dir: &Path, now: &Current, seal: &Seal, seal_path: &Path) -> Vec<Problem> {
    let mut problems = Vec::new();
    let sealed_files: BTreeMap<String, &String> = seal
        .files
        .iter()
        .map(|(k, v)| (seal::normalise(dir, k), v))
        .collect();
    let file_problem = |key: &str, message: String, hint: String| {
        let tier = tier_of(key);
        Problem {
            tier,
            always_fatal: tier == Tier::HighSecurity,
            file: now.paths.get(key).cloned().unwrap_or_else(|| dir.join(key)),
            key: key.to_string(),
            message,
            hint,
        }
    };
    for (key, hash) in &now.files {
        match sealed_files.get(key) {
            None => problems.push(file_problem(
                key,
                format!("not in {SEAL_FILE} (added after the last `config lock`)"),
                LOCK_AFTER_REVIEW.into(),
            )),
            Some(pinned) if *pinned != hash => problems.push(file_problem(
                key,
                format!(
                    "changed since the last `config lock` (sealed {}…, now {}…)",
                    short(pinned),
                    short(hash)
                ),
                LOCK_AFTER_REVIEW.into(),
            )),
            Some(_) => {}
        }
    }
    for key in sealed_files.keys().filter(|k| !now.files.contains_key(*k)) {
        let gone = !dir.join(key).exists() && !Path::new(key).exists();
        let mut p = if gone {
            file_problem(
                key,
                format!("sealed in {SEAL_FILE} but missing"),
                "restore it, or run `ductile config lock` to authorise its removal".into(),
            )
        } else {
            file_problem(
                key,
                "sealed but no longer part of the config".into(),
                "run `ductile config lock` to drop the entry".into(),
            )
        };
        // A file the config no longer reads cannot change what runs; only a
        // deleted high-security file is refused (it may be a removed secret).
        if !gone {
            p.always_fatal = false;
            p.tier = Tier::Operational;
        }
        problems.push(p);
    }
    problems.extend(compare_plugins(now, seal, seal_path));
    problems
}

fn compare_plugins(now: &Current, seal: &Seal, seal_path: &Path) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Some(prints) = &seal.plugin_fingerprints else {
        if !now.configured.is_empty() {
            problems.push(Problem {
                tier: Tier::Plugin,
                always_fatal: !now.enabled.is_empty(),
                file: seal_path.to_path_buf(),
                key: "plugin_fingerprints".into(),
                message: format!(
                    "{SEAL_FILE} has no plugin_fingerprints but plugins are configured"
                ),
                hint: "review the plugins, then run `ductile config lock`".into(),
            });
        }
        return problems;
    };
    for name in &now.configured {
        let enabled = now.enabled.contains(name);
        let state = if enabled { "enabled" } else { "disabled" };
        let mut push = |file: PathBuf, message: String| {
            problems.push(Problem {
                tier: Tier::Plugin,
                always_fatal: enabled,
                file,
                key: format!("plugin_fingerprints.{name}"),
                message: format!("{state} plugin `{name}`: {message}"),
                hint: "review the plugin, then run `ductile config lock`".into(),
            })
        };
        match (prints.get(name), now.plugins.get(name)) {
            (None, Some(current)) => push(
                PathBuf::from(&current.resolved_dir),
                format!("has no fingerprint in {SEAL_FILE}"),
            ),
            (Some(pinned), None) => push(
                PathBuf::from(&pinned.resolved_dir),
                "sealed but not found under the plugin roots".into(),
            ),
            (None, None) => {
                // Neither sealed nor found: the registry reports it as skipped,
                // and there is no code to verify.
                if enabled {
                    push(
                        seal_path.to_path_buf(),
                        "configured but not found under the plugin roots, and not sealed".into(),
                    );
                }
            }
            (Some(pinned), Some(current)) => {
                for what in drift(pinned, current) {
                    push(PathBuf::from(&current.resolved_dir), what);
                }
            }
        }
    }
    for name in prints.keys().filter(|n| !now.configured.contains(*n)) {
        problems.push(Problem {
            tier: Tier::Plugin,
            always_fatal: false,
            file: seal_path.to_path_buf(),
            key: format!("plugin_fingerprints.{name}"),
            message: format!("plugin `{name}` is sealed but no longer configured"),
            hint: "run `ductile config lock` to drop the entry".into(),
        });
    }
    problems
}

/// How a plugin's code differs from its fingerprint.
fn drift(pinned: &Fingerprint, current: &Fingerprint) -> Vec<String> {
    let mut out = Vec::new();
    if pinned.manifest != current.manifest {
        out.push("manifest.yaml changed since the last `config lock`".to_string());
    }
    if pinned.entrypoint != current.entrypoint {
        match (
            pinned.entrypoint.strip_prefix("image:"),
            current.entrypoint.strip_prefix("image:"),
        ) {
            (Some(was), Some(now)) => out.push(format!(
                "container image changed since the last `config lock` (sealed {was}, now {now})"
            )),
            _ => out.push("entrypoint changed since the last `config lock`".to_string()),
        }
    }
    let moved = !pinned.resolved_dir.is_empty()
        && pinned.resolved_dir != current.resolved_dir
        && !pinned.dir.is_empty()
        && pinned.dir != current.dir;
    if moved {
        out.push(format!(
            "now found at {}, sealed at {}",
            current.dir, pinned.dir
        ));
    }
    out
}

/// The part of the check that needs no parsed config, made before the config
/// is loaded (the spec's order: integrity, then interpolation and parsing):
/// every high-security file the seal lists must still hash as sealed, so a
/// tampered `tokens.yaml` is refused as tampered even when the tampering also
/// breaks the config. `root` is the root config file or its directory.
pub fn precheck(root: &Path) -> Result<(), String> {
    let dir = super::config_dir(root);
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let seal_path = dir.join(SEAL_FILE);
    let sealed = seal::read(&seal_path).map_err(|e| format!("integrity: {e}"))?;
    let Some(sealed) = sealed else {
        return Ok(());
    };
    let mut fatal = Vec::new();
    for (written, pinned) in &sealed.files {
        let key = seal::normalise(&dir, written);
        if tier_of(&key) != Tier::HighSecurity {
            continue;
        }
        let path = if Path::new(&key).is_absolute() {
            PathBuf::from(&key)
        } else {
            dir.join(&key)
        };
        let (message, hint) = match std::fs::read(&path) {
            Ok(bytes) if seal::hash(&bytes) == *pinned => continue,
            Ok(bytes) => (
                format!(
                    "changed since the last `config lock` (sealed {}…, now {}…)",
                    short(pinned),
                    short(&seal::hash(&bytes))
                ),
                LOCK_AFTER_REVIEW.to_string(),
            ),
            Err(_) => (
                format!("sealed in {SEAL_FILE} but missing"),
                "restore it, or run `ductile config lock` to authorise its removal".to_string(),
            ),
        };
        let problem = Problem {
            tier: Tier::HighSecurity,
            always_fatal: true,
            file: path,
            key,
            message,
            hint,
        };
        fatal.push(format!("integrity: {problem}"));
    }
    if fatal.is_empty() {
        Ok(())
    } else {
        Err(fatal.join("\n"))
    }
}

/// The check the daemon makes before it starts and before a reload swaps:
/// logs every problem that does not refuse, and returns the refusal (every
/// fatal problem, one per line) otherwise.
pub fn gate(config: &Config) -> Result<Verdict, String> {
    let strict = config.service.strict_mode;
    let verdict = verify(config).map_err(|e| format!("integrity: {e}"))?;
    let fatal: Vec<String> = verdict
        .fatal(strict)
        .map(|p| format!("integrity: {p}"))
        .collect();
    if !fatal.is_empty() {
        return Err(fatal.join("\n"));
    }
    for p in &verdict.problems {
        log::warn!(target: "integrity", "{p}");
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_follow_the_file_names() {
        for (key, tier) in [
            ("tokens.yaml", Tier::HighSecurity),
            ("webhooks.yaml", Tier::HighSecurity),
            ("scopes/admin.json", Tier::HighSecurity),
            ("conf.d/tokens.yaml", Tier::HighSecurity),
            ("config.yaml", Tier::Operational),
            ("routes.yaml", Tier::Operational),
            ("relay-ingress.yaml", Tier::Operational),
            ("relay-instances.yaml", Tier::Operational),
            ("pipelines/a.yaml", Tier::Operational),
            ("admin.json", Tier::Operational),
        ] {
            assert_eq!(tier_of(key), tier, "{key}");
        }
    }

    fn print(manifest: &str) -> Fingerprint {
        Fingerprint {
            dir: "plugins/p".into(),
            resolved_dir: "/c/plugins/p".into(),
            manifest: manifest.into(),
            entrypoint: "blake3:e".into(),
        }
    }

    /// `configured` as (name, enabled); `found` plugins with their manifest hash.
    fn now(configured: &[(&str, bool)], found: &[(&str, &str)]) -> Current {
        let mut c = Current::default();
        for (name, enabled) in configured {
            c.configured.insert(name.to_string());
            if *enabled {
                c.enabled.insert(name.to_string());
            }
        }
        for (name, manifest) in found {
            c.plugins.insert(name.to_string(), print(manifest));
        }
        c
    }

    fn sealed(prints: Option<&[(&str, &str)]>) -> Seal {
        Seal {
            version: 1,
            generated_at: String::new(),
            files: BTreeMap::new(),
            plugin_fingerprints: prints
                .map(|p| p.iter().map(|(n, m)| (n.to_string(), print(m))).collect()),
        }
    }

    /// (always_fatal, message) of each plugin problem.
    fn plugins(now: &Current, seal: &Seal) -> Vec<(bool, String)> {
        compare_plugins(now, seal, Path::new(".checksums"))
            .into_iter()
            .map(|p| (p.always_fatal, p.message))
            .collect()
    }

    #[test]
    fn plugin_fingerprint_policy() {
        let same = now(&[("a", true)], &[("a", "blake3:m")]);
        assert_eq!(plugins(&same, &sealed(Some(&[("a", "blake3:m")]))), vec![]);
        // An enabled plugin's drift is fatal; a disabled one's only warns.
        let drifted = now(
            &[("a", true), ("b", false)],
            &[("a", "blake3:x"), ("b", "blake3:x")],
        );
        let seal = sealed(Some(&[("a", "blake3:m"), ("b", "blake3:m")]));
        assert_eq!(
            plugins(&drifted, &seal),
            vec![
                (
                    true,
                    "enabled plugin `a`: manifest.yaml changed since the last `config lock`"
                        .to_string()
                ),
                (
                    false,
                    "disabled plugin `b`: manifest.yaml changed since the last `config lock`"
                        .to_string()
                ),
            ]
        );
        // Configured and enabled but no longer found: fatal.
        let gone = now(&[("a", true)], &[]);
        assert_eq!(
            plugins(&gone, &sealed(Some(&[("a", "blake3:m")]))),
            vec![(
                true,
                "enabled plugin `a`: sealed but not found under the plugin roots".to_string()
            )]
        );
        // A stale entry for a plugin no longer configured only warns.
        let none = now(&[], &[]);
        assert_eq!(
            plugins(&none, &sealed(Some(&[("old", "blake3:m")]))),
            vec![(
                false,
                "plugin `old` is sealed but no longer configured".to_string()
            )]
        );
        // No plugin_fingerprints at all while plugins are configured: fatal.
        assert_eq!(
            plugins(&same, &sealed(None)),
            vec![(
                true,
                ".checksums has no plugin_fingerprints but plugins are configured".to_string()
            )]
        );
    }

    #[test]
    fn strict_mode_makes_every_problem_fatal() {
        let p = Problem {
            tier: Tier::Operational,
            always_fatal: false,
            file: "config.yaml".into(),
            key: "config.yaml".into(),
            message: "changed".into(),
            hint: "lock".into(),
        };
        assert!(!p.is_fatal(false));
        assert!(p.is_fatal(true));
        assert_eq!(
            p.to_string(),
            "config.yaml: changed (operational tier); lock"
        );
    }
}
