//! `ductile config init [--config DIR] [--force]`: a commented starter that
//! passes `config check --strict` and starts: service settings, the API with
//! one admin token (its key generated now, shown once, kept in a 0600 env
//! file), the token's pinned scope file, empty webhooks and pipelines, the
//! bundled echo plugin, and the seal.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::cli::config::token::{env_var, hash, new_key, scope_file_bytes};
use crate::cli::{Args, CliError, output};
use crate::config::edit::{commit, commit::Change, seal};

const ECHO_MANIFEST: &str = include_str!("../../../plugins/echo/manifest.yaml");
const ECHO_RUN: &str = include_str!("../../../plugins/echo/run.sh");

const CONFIG: &str = "\
# ductile's configuration (written by `ductile config init`).
# Only this file is read implicitly; the others are named under `include:`.
# After any edit: `ductile config check`, `ductile config lock`, then
# `ductile system reload` (or use `ductile config set`, which does all three
# but the reload).
service:
  name: ductile
  # Refuse to start on any integrity mismatch or config finding.
  strict_mode: true

# Plugins are looked up here, relative to this directory.
plugin_roots:
  - plugins

state:
  # The SQLite ledger (WAL mode); relative to this directory.
  path: ./data/ductile.db

# Secrets (`${VAR}` references) come from the environment, then these files.
environment_vars:
  include:
    - .env

include:
  - api.yaml
  - tokens.yaml
  - webhooks.yaml
  - plugins.yaml
  - pipelines.yaml
";

const API: &str = "\
# The HTTP API (docs/API.md). Its tokens live in tokens.yaml.
api:
  enabled: true
  listen: 127.0.0.1:8080
";

const WEBHOOKS: &str = "\
# Inbound webhooks (high security: sealed by `ductile config lock`).
# Add one with `ductile config webhook add --path /webhook/x --plugin P --secret-ref TOKEN`
# after setting `webhooks: {listen: ADDR}` in config.yaml.
webhooks: []
";

const PLUGINS: &str = "\
# Plugin instances. `ductile config plugin add NAME --uses BASE --set key=value`
# adds one; `ductile plugin list` shows what the plugin roots hold.
plugins:
  echo:
    enabled: true
    schedules:
      - id: default
        every: 5m
    config:
      message: \"Hello from ductile\"
";

const PIPELINES: &str = "\
# Pipelines (docs/PIPELINES.md), for example:
#   - name: echo-chain
#     on: echo.poll
#     steps:
#       - uses: echo
pipelines: []
";

/// `ductile config init`.
pub fn init(args: &Args) -> Result<(), CliError> {
    let dir = target_dir(args)?;
    let force = args.flag("force").is_some();
    if dir.join("config.yaml").exists() && !force {
        return Err(CliError::Failed(format!(
            "{} already holds a config.yaml; pass --force to overwrite the starter files (each old one is kept as .bak)",
            dir.display()
        )));
    }
    let key = new_key()?;
    let var = env_var("admin");
    let scopes = vec!["*".to_string()];
    let scope_bytes = scope_file_bytes(&scopes);
    let tokens = format!(
        "# API tokens (high security: sealed by `ductile config lock`). Keys are\n\
         # `${{VAR}}` references, never the key itself. Manage them with\n\
         # `ductile config token create|list|revoke`.\n\
         tokens:\n  - name: admin\n    key: ${{{var}}}\n    scopes_file: scopes/admin.json\n    scopes_hash: {}\n",
        hash(&scope_bytes)
    );
    let env = format!(
        "# Secrets for ductile's config (${{VAR}} references); keep this file 0600.\n{var}={key}\n"
    );
    let files: Vec<(&str, Vec<u8>, u32)> = vec![
        ("config.yaml", CONFIG.into(), 0o644),
        ("api.yaml", API.into(), 0o644),
        ("tokens.yaml", tokens.into_bytes(), 0o600),
        ("scopes/admin.json", scope_bytes, 0o600),
        ("webhooks.yaml", WEBHOOKS.into(), 0o600),
        ("plugins.yaml", PLUGINS.into(), 0o644),
        ("pipelines.yaml", PIPELINES.into(), 0o644),
        (".env", env.into_bytes(), 0o600),
        ("plugins/echo/manifest.yaml", ECHO_MANIFEST.into(), 0o644),
        ("plugins/echo/run.sh", ECHO_RUN.into(), 0o755),
    ];
    let changes: Vec<Change> = files
        .into_iter()
        .map(|(rel, bytes, mode)| {
            let path = dir.join(rel);
            Change {
                before: std::fs::read(&path).ok(),
                path,
                after: Some(bytes),
                mode,
            }
        })
        .collect();
    let names: Vec<String> = changes
        .iter()
        .map(|c| {
            c.path
                .strip_prefix(&dir)
                .unwrap_or(&c.path)
                .display()
                .to_string()
        })
        .collect();
    if args.dry_run {
        let diff = commit::diff(&changes, &dir, std::slice::from_ref(&key));
        if args.json {
            output::json(&json!({"dir": dir, "files": names, "dry_run": true, "diff": diff}));
        } else {
            output::text(&format!(
                "{diff}dry run: would write {} file(s) in {}\n",
                names.len(),
                dir.display()
            ));
        }
        return Ok(());
    }
    std::fs::create_dir_all(dir.join("data")).map_err(|e| {
        CliError::Failed(format!(
            "{}: cannot create: {e}",
            dir.join("data").display()
        ))
    })?;
    let written = commit::write(&dir.join("config.yaml"), &changes)?;
    if !written.resealed {
        seal::reseal(&dir).map_err(CliError::Failed)?;
    }
    if args.json {
        output::json(
            &json!({"dir": dir, "files": names, "sealed": true, "token": {"name": "admin", "key": key, "env": var}}),
        );
    } else {
        output::text(&format!(
            "config written to {}: {}\nsealed: .checksums\n\nadmin API token (shown only now; kept as {var} in .env):\n{key}\n\nnext: ductile config check --strict --config {0}; ductile system start --config {0}\n",
            dir.display(),
            names.join(", "),
        ));
    }
    Ok(())
}

/// `--config DIR`, else `$DUCTILE_CONFIG_DIR`, else `~/.config/ductile`.
fn target_dir(args: &Args) -> Result<PathBuf, CliError> {
    let dir = match &args.config {
        Some(p) if p.extension().is_some_and(|e| e == "yaml") => {
            p.parent().unwrap_or(Path::new(".")).to_path_buf()
        }
        Some(p) => p.clone(),
        None => match std::env::var_os("DUCTILE_CONFIG_DIR").filter(|d| !d.is_empty()) {
            Some(d) => PathBuf::from(d),
            None => match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
                Some(h) => PathBuf::from(h).join(".config").join("ductile"),
                None => {
                    return Err(CliError::Usage(
                        "no config directory: pass --config DIR (HOME is not set)".into(),
                    ));
                }
            },
        },
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::Failed(format!("{}: cannot create: {e}", dir.display())))?;
    std::fs::canonicalize(&dir).map_err(|e| CliError::Failed(format!("{}: {e}", dir.display())))
}
