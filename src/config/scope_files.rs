//! The scope files of `tokens:` entries: each read (a regular file of at most
//! 64 KiB), its raw bytes hashed with BLAKE3 and compared with the entry's
//! `scopes_hash`, then parsed (`{"scopes": [...]}`).
//!
//! A file that cannot be read or does not match its pin drops its token with a
//! warning naming the token and the file: the daemon still starts, that token
//! authenticates nothing, and no token ever holds scopes its pin did not
//! approve. Under `service.strict_mode` either is a config error instead. A file
//! that matches its pin but is not a valid scope file is always an error: the
//! operator pinned it as it is.
//!
//! Owns: reading and checking scope files. Must not: interpret scopes (the
//! HTTP layer does).

use std::collections::HashSet;
use std::path::Path;

use super::source::{self, TREE_LIMIT};
use super::{Config, ConfigError, ErrorKind, Finding, LoadedFile};

/// The largest scope file read.
pub(super) const SCOPE_FILE_LIMIT: u64 = 64 * 1024;

/// Reads, checks and parses every pinned scope file of `config.tokens`, drops
/// the tokens whose file fails (or refuses the config under strict mode), and
/// records the files read in `config.files`.
pub(super) fn apply(config: &mut Config, warnings: &mut Vec<Finding>) -> Result<(), ConfigError> {
    let strict = config.service.strict_mode;
    // Many tokens may name one large file; the tree's byte allowance caps the
    // reading they cost together.
    let mut left = TREE_LIMIT;
    let mut dropped: HashSet<String> = HashSet::new();
    let mut read: Vec<LoadedFile> = Vec::new();
    let mut recorded: HashSet<std::path::PathBuf> = HashSet::new();
    for token in &mut config.tokens {
        let (Some(file), Some(pin)) = (&token.scopes_file, &token.scopes_hash) else {
            continue;
        };
        let key_path = format!("{}.scopes_file", token.origin);
        let problem = match source::read_pinned(file, SCOPE_FILE_LIMIT) {
            Err(reason) => format!("cannot read scopes file `{}`: {reason}", file.display()),
            Ok(bytes) => {
                left = left.checked_sub(bytes.len() as u64).ok_or_else(|| {
                    ConfigError::invalid(
                        token.file.clone(),
                        &key_path,
                        "the scope files together are larger than 4 MiB",
                    )
                })?;
                let hash = format!("blake3:{}", blake3::hash(&bytes).to_hex());
                if hash == *pin {
                    token.scopes = parse(file, &bytes, warnings)?;
                    if recorded.insert(file.clone()) {
                        read.push(LoadedFile {
                            path: file.clone(),
                            hash,
                        });
                    }
                    continue;
                }
                format!(
                    "scopes file `{}` does not match scopes_hash",
                    file.display()
                )
            }
        };
        if strict {
            return Err(ConfigError::invalid(
                token.file.clone(),
                &key_path,
                format!("token `{}`: {problem} (strict_mode)", token.name),
            ));
        }
        warnings.push(Finding {
            file: token.file.clone(),
            path: key_path,
            message: format!("token `{}` dropped: {problem}", token.name),
        });
        dropped.insert(token.name.clone());
    }
    config.tokens.retain(|t| !dropped.contains(&t.name));
    config.files.extend(read);
    for endpoint in &config.webhooks.endpoints {
        if dropped.contains(&endpoint.secret_ref) {
            warnings.push(Finding {
                file: endpoint.file.clone(),
                path: format!("{}.secret_ref", endpoint.origin),
                message: format!(
                    "token `{}` was dropped; webhook `{}` refuses every request",
                    endpoint.secret_ref, endpoint.name
                ),
            });
        }
    }
    Ok(())
}

/// The scopes of a scope file: a JSON object whose `scopes` is a list of strings.
fn parse(
    file: &Path,
    bytes: &[u8],
    warnings: &mut Vec<Finding>,
) -> Result<Vec<String>, ConfigError> {
    let invalid =
        |path: &str, message: String| ConfigError::invalid(file.to_path_buf(), path, message);
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ConfigError::in_file(
            file.to_path_buf(),
            ErrorKind::Invalid {
                message: format!("not a JSON scope file: {e}"),
            },
        )
    })?;
    let serde_json::Value::Object(object) = value else {
        return Err(ConfigError::in_file(
            file.to_path_buf(),
            ErrorKind::Invalid {
                message: "expected a JSON object such as {\"scopes\": [\"jobs:ro\"]}".to_string(),
            },
        ));
    };
    let mut scopes = None;
    for (key, value) in object {
        if key != "scopes" {
            warnings.push(Finding {
                file: file.to_path_buf(),
                path: key.clone(),
                message: super::error::unknown_key(&key, &["scopes"]),
            });
            continue;
        }
        let serde_json::Value::Array(items) = value else {
            return Err(invalid("scopes", "expected a list of strings".to_string()));
        };
        let mut list = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            match item {
                serde_json::Value::String(scope) => list.push(scope),
                _ => {
                    return Err(invalid(
                        &format!("scopes[{index}]"),
                        "expected a string".to_string(),
                    ));
                }
            }
        }
        scopes = Some(list);
    }
    scopes.ok_or_else(|| invalid("scopes", "`scopes` is required".to_string()))
}
