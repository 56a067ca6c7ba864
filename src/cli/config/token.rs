//! `ductile config token create|list|revoke` and `ductile config scope
//! list|set`: API tokens in `tokens.yaml`, each key kept out of the YAML (a
//! `${VAR}` reference to a 0600 env file the config includes), its scopes in a
//! pinned scope file.

use std::path::{Path, PathBuf};

use serde_json::json;
use serde_yaml::{Mapping, Value};

use crate::cli::config::set::finish;
use crate::cli::{Args, CliError, output};
use crate::config::edit::{self, commit::Change, path::KeyPath};
use crate::runtime::Runtime;

/// The env file a new token's key goes to, when the config names none.
const ENV_FILE: &str = ".env";

/// `ductile config token create --name N --scopes a,b`: prints the key once.
pub fn create(args: &Args) -> Result<(), CliError> {
    let name = required(args, "name", "config token create")?;
    let scopes = parse_scopes(required(args, "scopes", "config token create")?)?;
    let root = crate::cli::config_root(args)?;
    let mut tree = edit::Tree::read(&root)?;
    let token_path = KeyPath::default().key("tokens").child(select(name));
    if tree.find(&token_path).is_some() {
        return Err(CliError::Failed(format!(
            "token `{name}` exists; revoke it first or pick another name"
        )));
    }
    let key = new_key()?;
    let var = env_var(name);
    let mut extra = Vec::new();

    // The key: a line of the env file, which the root config must include.
    let env_file = env_file(&mut tree)?;
    let (env_before, env_text) = read_text(&env_file)?;
    let mut env_after = env_text.clone();
    if env_after.is_empty() {
        env_after
            .push_str("# Secrets for ductile's config (${VAR} references); keep this file 0600.\n");
    } else if !env_after.ends_with('\n') {
        env_after.push('\n');
    }
    env_after.push_str(&format!("{var}={key}\n"));
    extra.push(Change {
        path: env_file.clone(),
        before: env_before.map(String::into_bytes),
        after: Some(env_after.into_bytes()),
        mode: 0o600,
    });

    // The entry: in the file that holds `tokens:`, else a new tokens.yaml.
    let tokens_doc = tokens_file(&mut tree)?;
    let tokens_dir = tree.docs[tokens_doc]
        .path
        .parent()
        .unwrap_or(&tree.dir)
        .to_path_buf();
    let scope_rel = format!("scopes/{name}.json");
    let scope_bytes = scope_file_bytes(&scopes);
    extra.push(Change {
        path: tokens_dir.join(&scope_rel),
        before: std::fs::read(tokens_dir.join(&scope_rel)).ok(),
        after: Some(scope_bytes.clone()),
        mode: 0o644,
    });
    let mut entry = Mapping::new();
    entry.insert("name".into(), name.into());
    entry.insert("key".into(), format!("${{{var}}}").into());
    entry.insert("scopes_file".into(), scope_rel.into());
    entry.insert("scopes_hash".into(), hash(&scope_bytes).into());
    tree.push(
        tokens_doc,
        &KeyPath::default().key("tokens"),
        &Value::Mapping(entry),
    )?;

    let mut changes = tree.changes_with_new();
    changes.extend(extra);
    // The key is shown once, only after it was written; only the env file keeps it.
    let shown = (
        json!({"name": name, "key": key, "env": var, "scopes": scopes}),
        format!(
            "token `{name}`: its key (shown only now, kept as {var} in {}):\n{key}\n",
            env_file.display()
        ),
    );
    finish(
        args,
        &tree,
        changes,
        &format!("create token `{name}`"),
        args.dry_run,
        Some(shown),
    )
}

/// `ductile config token list`: names, scopes and where each came from; never a key.
pub fn list(args: &Args) -> Result<(), CliError> {
    let root = crate::cli::config_root(args)?;
    let rt = Runtime::load(&root)?;
    let dir = &rt.config.dir;
    let rows: Vec<serde_json::Value> = rt
        .config
        .tokens
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "scopes": t.scopes,
                "scopes_file": t.scopes_file.as_ref().map(|f| rel(dir, f)),
                "file": rel(dir, &t.file),
            })
        })
        .collect();
    if args.json {
        output::json(&json!({"tokens": rows}));
    } else {
        let mut out = String::new();
        for r in &rows {
            out.push_str(&format!(
                "{}  scopes: {}  ({})\n",
                r["name"].as_str().unwrap_or(""),
                r["scopes"]
                    .as_array()
                    .map(|a| a
                        .iter()
                        .filter_map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(","))
                    .unwrap_or_default(),
                r["file"].as_str().unwrap_or("")
            ));
        }
        if rows.is_empty() {
            out.push_str("no tokens\n");
        }
        output::text(&out);
    }
    Ok(())
}

/// `ductile config token revoke <name>`: the entry, its scope file and its env line go.
pub fn revoke(args: &Args, name: &str) -> Result<(), CliError> {
    let root = crate::cli::config_root(args)?;
    let mut tree = edit::Tree::read(&root)?;
    let path = KeyPath::default().key("tokens").child(select(name));
    let Some((i, local)) = tree.find(&path) else {
        return Err(CliError::Failed(format!("no token `{name}`")));
    };
    let entry = edit::lookup(
        &serde_json::to_value(
            serde_yaml::from_str::<Value>(&tree.docs[i].text).unwrap_or(Value::Null),
        )
        .unwrap_or_default(),
        &local,
    )
    .cloned()
    .unwrap_or_default();
    let base = tree.docs[i]
        .path
        .parent()
        .unwrap_or(&tree.dir)
        .to_path_buf();
    tree.remove(&path)?;
    let mut extra = Vec::new();
    if let Some(file) = entry.get("scopes_file").and_then(|v| v.as_str()) {
        let p = base.join(file);
        if let Ok(bytes) = std::fs::read(&p) {
            extra.push(Change {
                path: p,
                before: Some(bytes),
                after: None,
                mode: 0o644,
            });
        }
    }
    if let Some(var) = entry
        .get("key")
        .and_then(|v| v.as_str())
        .and_then(|k| k.strip_prefix("${"))
        .and_then(|k| k.strip_suffix('}'))
    {
        let env = env_file(&mut tree)?;
        if let (Some(before), text) = read_text(&env)? {
            let kept: String = text
                .lines()
                .filter(|l| l.trim().split_once('=').map(|(k, _)| k.trim()) != Some(var))
                .map(|l| format!("{l}\n"))
                .collect();
            if kept != text {
                extra.push(Change {
                    path: env,
                    before: Some(before.into_bytes()),
                    after: Some(kept.into_bytes()),
                    mode: 0o600,
                });
            }
        }
    }
    let mut changes = tree.changes_with_new();
    changes.extend(extra);
    finish(
        args,
        &tree,
        changes,
        &format!("revoke token `{name}`"),
        args.dry_run,
        None,
    )
}

/// `ductile config scope list`: every token's scopes.
pub fn scope_list(args: &Args) -> Result<(), CliError> {
    list(args)
}

/// `ductile config scope set <token> --scopes a,b`: rewrites the token's
/// scope file and its pin (or its inline `scopes`).
pub fn scope_set(args: &Args, name: &str) -> Result<(), CliError> {
    let scopes = parse_scopes(required(args, "scopes", "config scope set")?)?;
    let root = crate::cli::config_root(args)?;
    let mut tree = edit::Tree::read(&root)?;
    let path = KeyPath::default().key("tokens").child(select(name));
    let Some((i, local)) = tree.find(&path) else {
        return Err(CliError::Failed(format!("no token `{name}`")));
    };
    let doc: serde_json::Value = serde_json::to_value(
        serde_yaml::from_str::<Value>(&tree.docs[i].text).unwrap_or(Value::Null),
    )
    .unwrap_or_default();
    let entry = edit::lookup(&doc, &local).cloned().unwrap_or_default();
    let mut extra = Vec::new();
    match entry.get("scopes_file").and_then(|v| v.as_str()) {
        Some(file) => {
            let p = tree.docs[i].path.parent().unwrap_or(&tree.dir).join(file);
            let bytes = scope_file_bytes(&scopes);
            extra.push(Change {
                path: p.clone(),
                before: std::fs::read(&p).ok(),
                after: Some(bytes.clone()),
                mode: 0o644,
            });
            tree.set(&path.key("scopes_hash"), &hash(&bytes).into())?;
        }
        None => {
            let list = Value::Sequence(scopes.iter().map(|s| Value::String(s.clone())).collect());
            tree.set(&path.key("scopes"), &list)?;
        }
    }
    let mut changes = tree.changes_with_new();
    changes.extend(extra);
    finish(
        args,
        &tree,
        changes,
        &format!("set scopes of `{name}`"),
        args.dry_run,
        None,
    )
}

/// `a,b` as a list of scopes; at least one.
fn parse_scopes(text: &str) -> Result<Vec<String>, CliError> {
    let scopes: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if scopes.is_empty() {
        return Err(CliError::Usage(
            "`--scopes` needs at least one scope (`jobs:ro,plugin:rw`)".into(),
        ));
    }
    Ok(scopes)
}

/// A required verb flag.
pub(super) fn required<'a>(args: &'a Args, flag: &str, verb: &str) -> Result<&'a str, CliError> {
    args.flag(flag)
        .ok_or_else(|| CliError::Usage(format!("`ductile {verb}` needs `--{flag}`")))
}

fn select(name: &str) -> edit::path::Segment {
    edit::path::Segment::Select {
        key: "name".into(),
        value: name.into(),
    }
}

/// The bytes of a scope file holding `scopes`.
pub(super) fn scope_file_bytes(scopes: &[String]) -> Vec<u8> {
    let mut text = serde_json::to_string_pretty(&json!({ "scopes": scopes })).unwrap_or_default();
    text.push('\n');
    text.into_bytes()
}

/// `blake3:<hex>` of `bytes`, as `scopes_hash` pins it.
pub(super) fn hash(bytes: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(bytes).to_hex())
}

/// A fresh random key: 32 bytes from the kernel, hex, with a recognisable prefix.
pub(super) fn new_key() -> Result<String, CliError> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| CliError::Failed(format!("/dev/urandom: cannot read random bytes: {e}")))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("dtk_{hex}"))
}

/// The variable a token's key is kept in: `DUCTILE_TOKEN_<NAME>`.
pub(super) fn env_var(name: &str) -> String {
    let up: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("DUCTILE_TOKEN_{up}")
}

/// The env file of the root config (its first `environment_vars.include`),
/// adding `.env` to it when it names none.
fn env_file(tree: &mut edit::Tree) -> Result<PathBuf, CliError> {
    let root = &tree.docs[0];
    let first = root
        .root
        .as_ref()
        .and_then(|r| r.entry("environment_vars"))
        .and_then(|e| e.value.entry("include"))
        .and_then(|e| match &e.value.kind {
            edit::span::Kind::Seq(items) => {
                items.first().and_then(|i| i.scalar().map(str::to_string))
            }
            _ => None,
        });
    let base = root.path.parent().unwrap_or(&tree.dir).to_path_buf();
    match first {
        Some(entry) => Ok(base.join(entry)),
        None => {
            tree.push(
                0,
                &KeyPath::default().key("environment_vars").key("include"),
                &ENV_FILE.into(),
            )?;
            Ok(base.join(ENV_FILE))
        }
    }
}

/// The file holding `tokens:`; a new `tokens.yaml` (included from the root) when none does.
fn tokens_file(tree: &mut edit::Tree) -> Result<usize, CliError> {
    if let Some(i) = tree.holder_of("tokens") {
        return Ok(i);
    }
    let path = tree.dir.join("tokens.yaml");
    tree.push(0, &KeyPath::default().key("include"), &"tokens.yaml".into())?;
    let i = tree.doc_for(&path)?;
    if tree.docs[i].text.is_empty() {
        tree.docs[i].edit(|_, _| {
            Ok("# API tokens (high security: sealed by `ductile config lock`).\n".to_string())
        })?;
    }
    Ok(i)
}

/// A file's text and, when it exists, its bytes as text (for the change's `before`).
fn read_text(path: &Path) -> Result<(Option<String>, String), CliError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok((Some(t.clone()), t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((None, String::new())),
        Err(e) => Err(CliError::Failed(format!(
            "{}: cannot read: {e}",
            path.display()
        ))),
    }
}

fn rel(dir: &Path, p: &Path) -> String {
    p.strip_prefix(dir).unwrap_or(p).display().to_string()
}
