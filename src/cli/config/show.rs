//! `ductile config show [entity] [--effective]` and `ductile config get <path>`:
//! the merged config (or, with `--effective`, what the daemon runs with,
//! defaults applied), whole or one entity or key, secrets redacted.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::cli::{Args, CliError, output};
use crate::config::edit::{self, EditError, path::KeyPath, path::Segment, redact};
use crate::runtime::Runtime;

impl From<EditError> for CliError {
    fn from(e: EditError) -> CliError {
        if e.is_config() {
            CliError::Config(e.to_string())
        } else {
            CliError::Failed(e.to_string())
        }
    }
}

/// The document `show` and `get` read: merged as written, or effective. A
/// config that does not validate can still be shown as written (secrets
/// masked by key only, since their values are not known).
fn document(args: &Args, effective: bool) -> Result<Value, CliError> {
    let root = crate::cli::config_root(args)?;
    let rt = match Runtime::load(&root) {
        Ok(rt) => Arc::new(rt),
        Err(e) if effective => return Err(e.into()),
        Err(_) => return Ok(redact::value(&edit::merged(&root)?, &[])),
    };
    let known = redact::known_secrets(&rt.config);
    let doc = if effective {
        let settings = crate::http::settings::Settings::of(&rt);
        crate::http::api::config_document(&rt, &settings)
    } else {
        edit::merged(&root)?
    };
    Ok(redact::value(&doc, &known))
}

/// `ductile config show [entity] [--effective]`.
pub fn show(args: &Args, entity: Option<&str>) -> Result<(), CliError> {
    let effective = args.flag("effective").is_some();
    let doc = document(args, effective)?;
    let value = match entity {
        None => doc,
        Some(text) => {
            let path = edit::path::parse(text).map_err(CliError::Usage)?;
            find(&doc, &path, text)?.clone()
        }
    };
    print_value(args, &value);
    Ok(())
}

/// `ductile config get <path>`: one value, with the file and line that set it.
pub fn get(args: &Args, text: &str) -> Result<(), CliError> {
    let path = edit::path::parse(text).map_err(CliError::Usage)?;
    let doc = document(args, false)?;
    // A key the files do not set may still have a default the daemon runs with.
    let (value, default) = match find(&doc, &path, text) {
        Ok(v) => (v.clone(), false),
        Err(missing) => match document(args, true)
            .ok()
            .and_then(|d| edit::lookup(&d, &path).cloned())
        {
            Some(v) => (v, true),
            None => return Err(missing),
        },
    };
    if args.json {
        let root = crate::cli::config_root(args)?;
        let tree = edit::Tree::read(&root)?;
        let (file, line) = match tree.find(&path) {
            Some((i, local)) => {
                let d = &tree.docs[i];
                let line = match edit::text::resolve(d.root.as_ref(), &local.0) {
                    edit::text::Resolved::Found { node, key } => {
                        Some(key.map_or(node.line, |k| k.line))
                    }
                    _ => None,
                };
                (Some(d.path.display().to_string()), line)
            }
            None => (None, None),
        };
        output::json(
            &json!({"path": path.to_string(), "value": value, "default": default, "file": file, "line": line}),
        );
    } else {
        print_value(args, &value);
    }
    Ok(())
}

fn print_value(args: &Args, value: &Value) {
    if args.json {
        output::json(value);
        return;
    }
    match value {
        Value::String(s) => output::text(s),
        Value::Null => output::text("null"),
        Value::Bool(_) | Value::Number(_) => output::text(&value.to_string()),
        _ => output::text(&serde_yaml::to_string(value).unwrap_or_else(|_| value.to_string())),
    }
}

/// The node `path` names, or an error naming the closest thing that exists.
fn find<'a>(doc: &'a Value, path: &KeyPath, text: &str) -> Result<&'a Value, CliError> {
    if let Some(v) = edit::lookup(doc, path) {
        return Ok(v);
    }
    // The deepest existing prefix, to suggest its keys or names.
    let mut at = doc;
    for s in &path.0 {
        let next = edit::lookup(at, &KeyPath(vec![s.clone()]));
        match next {
            Some(n) => at = n,
            None => {
                let names: Vec<String> = match (s, at) {
                    (_, Value::Object(m)) => m.keys().cloned().collect(),
                    (Segment::Select { key, .. }, Value::Array(a)) => a
                        .iter()
                        .filter_map(|i| i.get(key).and_then(Value::as_str).map(str::to_string))
                        .collect(),
                    _ => Vec::new(),
                };
                let wanted = match s {
                    Segment::Key(k) => k.clone(),
                    Segment::Select { value, .. } => value.clone(),
                    Segment::Index(n) => n.to_string(),
                };
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                let hint = crate::suggest::closest(&wanted, &refs)
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_default();
                return Err(CliError::Failed(format!(
                    "`{text}` is not in the config (no `{wanted}` at `{}`){hint}",
                    path_prefix(path, s)
                )));
            }
        }
    }
    Err(CliError::Failed(format!("`{text}` is not in the config")))
}

fn path_prefix(path: &KeyPath, upto: &Segment) -> String {
    let n = path.0.iter().position(|s| s == upto).unwrap_or(0);
    let p = KeyPath(path.0[..n].to_vec()).to_string();
    if p.is_empty() {
        "the top level".into()
    } else {
        p
    }
}
