//! Secrets never leave `config show`, `config get` or a printed diff: a value
//! under a secret-looking key, and any string equal to a configured token key
//! or webhook secret, prints as `[REDACTED]`.
//!
//! Owns: what counts as a secret in config output. Must not: change config.

use serde_json::Value;

/// What a redacted value prints as.
pub const REDACTED: &str = "[REDACTED]";

/// Whether values under `key` are secrets. References to secrets
/// (`secret_ref`, `scopes_file`, header names) are not.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    if k.ends_with("_ref") || k.ends_with("_header") || k.ends_with("_file") || k.ends_with("_hash")
    {
        return false;
    }
    k == "key"
        || k.ends_with("_key")
        || k.ends_with("-key")
        || [
            "secret",
            "token",
            "password",
            "passwd",
            "credential",
            "apikey",
        ]
        .iter()
        .any(|w| k.contains(w))
}

/// The values known to be secret: token keys and API tokens, as loaded.
pub fn known_secrets(config: &crate::config::Config) -> Vec<String> {
    let mut out: Vec<String> = config
        .tokens
        .iter()
        .map(|t| t.key.expose().clone())
        .chain(
            config
                .api
                .auth_tokens
                .iter()
                .map(|t| t.token.expose().clone()),
        )
        .filter(|s| !s.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `value` with every secret replaced; scalars under a secret key, and any
/// string equal to one of `known`.
pub fn value(value: &Value, known: &[String]) -> Value {
    walk(value, false, known)
}

fn walk(value: &Value, secret: bool, known: &[String]) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), walk(v, is_secret_key(k), known)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| walk(v, secret, known)).collect()),
        Value::Null => Value::Null,
        Value::String(s) if secret || known.iter().any(|k| k == s) => {
            Value::String(REDACTED.into())
        }
        Value::String(s) => Value::String(mask_known(s, known)),
        _ if secret => Value::String(REDACTED.into()),
        other => other.clone(),
    }
}

/// One line of YAML text (a diff line) with the value of a secret key, and any
/// known secret, masked.
pub fn line(text: &str, known: &[String]) -> String {
    let masked = mask_known(text, known);
    // An env file's `NAME=value` line holds a secret by its very purpose.
    if let Some((name, _)) = masked.split_once('=')
        && !name.is_empty()
        && name
            .trim_start_matches("export ")
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    {
        return format!("{name}={REDACTED}");
    }
    let body = masked.trim_start();
    let lead = &masked[..masked.len() - body.len()];
    let (dash, rest) = match body.strip_prefix("- ") {
        Some(r) => ("- ", r),
        None => ("", body),
    };
    if let Some((key, value)) = rest.split_once(':') {
        let k = key.trim().trim_matches(['"', '\'']);
        let v = value.trim();
        if is_secret_key(k) && !v.is_empty() && !v.starts_with('#') {
            return format!("{lead}{dash}{key}: {REDACTED}");
        }
    }
    masked
}

fn mask_known(text: &str, known: &[String]) -> String {
    let mut out = text.to_string();
    for k in known {
        // Short values would mask ordinary words.
        if k.len() >= 8 && out.contains(k.as_str()) {
            out = out.replace(k.as_str(), REDACTED);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_and_references_kept() {
        let v = json!({"tokens": [{"name": "a", "key": "k1", "scopes_file": "s.json"}],
            "webhooks": [{"secret_ref": "a", "path": "/x"}],
            "plugins": {"p": {"config": {"api_key": 7, "url": "https://x/sekretvalue1"}}}});
        let r = value(&v, &["sekretvalue1".to_string()]);
        assert_eq!(r["tokens"][0]["key"], REDACTED);
        assert_eq!(r["tokens"][0]["scopes_file"], "s.json");
        assert_eq!(r["webhooks"][0]["secret_ref"], "a");
        assert_eq!(r["plugins"]["p"]["config"]["api_key"], REDACTED);
        assert_eq!(r["plugins"]["p"]["config"]["url"], "https://x/[REDACTED]");
        assert_eq!(line("    key: abc", &[]), "    key: [REDACTED]");
        assert_eq!(line("  - token: abc", &[]), "  - token: [REDACTED]");
        assert_eq!(line("    secret_ref: gh", &[]), "    secret_ref: gh");
        assert_eq!(
            line("DUCTILE_TOKEN_CI=dtk_1", &[]),
            "DUCTILE_TOKEN_CI=[REDACTED]"
        );
    }
}
