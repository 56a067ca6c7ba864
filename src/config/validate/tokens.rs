//! `tokens:` (normally `tokens.yaml`): named keys, each with scopes written
//! inline or kept in a scope file pinned by its BLAKE3 hash. The scope files
//! themselves are read after validation (`config::scope_files`).

use std::collections::HashMap;
use std::path::Path;

use serde_yaml::Value;

use super::super::paths::resolve_path;
use super::super::{ConfigError, NamedToken};
use super::{Ctx, expect_list, expect_mapping, read_key, read_strings, read_text};
use crate::secret::Secret;

pub(super) const TOKEN_KEYS: &[&str] = &["name", "key", "scopes_file", "scopes_hash", "scopes"];

pub(super) fn build_tokens(
    ctx: &mut Ctx,
    value: Option<&Value>,
) -> Result<Vec<NamedToken>, ConfigError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let mut tokens: Vec<NamedToken> = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (index, item) in expect_list(ctx, value, "tokens")?.iter().enumerate() {
        let origin = format!("tokens[{index}]");
        let token = build_token(ctx, item, origin)?;
        let first = *names.entry(token.name.clone()).or_insert(index);
        if first != index {
            return Err(ctx.error(
                &format!("{}.name", token.origin),
                format!(
                    "duplicate token name `{}` (also used by tokens[{first}])",
                    token.name
                ),
            ));
        }
        tokens.push(token);
    }
    Ok(tokens)
}

fn build_token(ctx: &mut Ctx, value: &Value, origin: String) -> Result<NamedToken, ConfigError> {
    let map = expect_mapping(ctx, value, &origin)?;
    let (mut name, mut key, mut scopes_file, mut scopes_hash, mut scopes) =
        (None, None, None, None, None);
    for (field, path, value) in ctx.entries(map, &origin, TOKEN_KEYS) {
        match field.as_str() {
            "name" => name = Some(read_name(ctx, value, &path)?),
            "key" => key = Some(read_key(ctx, value, &path)?),
            "scopes_file" => {
                let entry = read_text(ctx, value, &path)?;
                // Relative to the file that declared it, as `include:` is.
                let declared_in = ctx.provenance.file_of(&path);
                let base = declared_in.parent().unwrap_or(Path::new("/"));
                let resolved =
                    resolve_path(base, &entry).map_err(|message| ctx.error(&path, message))?;
                scopes_file = Some(resolved);
            }
            "scopes_hash" => scopes_hash = Some(read_hash(ctx, value, &path)?),
            _ => scopes = Some(read_strings(ctx, value, &path)?),
        }
    }
    let Some(name) = name else {
        return Err(ctx.error(&origin, "`name` is required"));
    };
    let Some(key) = key else {
        return Err(ctx.error(&origin, "`key` is required"));
    };
    match (&scopes_file, &scopes_hash, &scopes) {
        (Some(_), None, _) => {
            return Err(ctx.error(
                &format!("{origin}.scopes_file"),
                "`scopes_hash` is required with `scopes_file`",
            ));
        }
        (None, Some(_), _) => {
            return Err(ctx.error(
                &format!("{origin}.scopes_hash"),
                "`scopes_hash` pins a `scopes_file`, and none is set",
            ));
        }
        // The pin is the whole truth about a token's scopes: an inline list
        // beside it would grant what the pinned file did not.
        (Some(_), Some(_), Some(_)) => {
            return Err(ctx.error(
                &format!("{origin}.scopes"),
                "set `scopes` or `scopes_file`, not both",
            ));
        }
        _ => {}
    }
    Ok(NamedToken {
        name,
        key: Secret::new(key),
        scopes: scopes.unwrap_or_default(),
        scopes_file,
        scopes_hash,
        file: ctx.provenance.file_of(&origin),
        origin,
    })
}

/// A token name: it appears in logs and as a job's submitter, so it is kept to
/// characters that need no quoting.
fn read_name(ctx: &Ctx, value: &Value, path: &str) -> Result<String, ConfigError> {
    let name = read_text(ctx, value, path)?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || !name.chars().all(allowed) {
        return Err(ctx.error(
            path,
            format!("invalid token name `{name}`: use letters, digits, `-`, `_` and `.`"),
        ));
    }
    Ok(name)
}

/// `blake3:<64 hex digits>`, lower-cased.
fn read_hash(ctx: &Ctx, value: &Value, path: &str) -> Result<String, ConfigError> {
    let text = read_text(ctx, value, path)?;
    let hex = text.strip_prefix("blake3:").unwrap_or("");
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ctx.error(
            path,
            format!("invalid scopes_hash `{text}`: expected blake3:<64 hex digits>"),
        ));
    }
    Ok(format!("blake3:{}", hex.to_ascii_lowercase()))
}
