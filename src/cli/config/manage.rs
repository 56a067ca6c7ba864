//! `ductile config plugin|route|webhook list|add|remove`: the routing
//! artefacts an operator (or an agent) adds and removes, each edit made in the
//! file that holds its section and written through the same atomic write,
//! revalidate and re-seal path as `config set`; `--dry-run` prints the diff.

use std::path::Path;

use serde_json::json;
use serde_yaml::{Mapping, Value};

use crate::cli::config::set::finish;
use crate::cli::config::token::required;
use crate::cli::{Args, CliError, output};
use crate::config::PLUGIN_KEYS;
use crate::config::edit::{self, path::KeyPath, path::Segment};
use crate::runtime::Runtime;

fn rel(dir: &Path, p: &Path) -> String {
    p.strip_prefix(dir).unwrap_or(p).display().to_string()
}

fn table(
    args: &Args,
    key: &str,
    rows: Vec<serde_json::Value>,
    line: impl Fn(&serde_json::Value) -> String,
) {
    if args.json {
        output::json(&json!({ key: rows }));
        return;
    }
    let mut out: String = rows.iter().map(|r| format!("{}\n", line(r))).collect();
    if rows.is_empty() {
        out = format!("no {key}\n");
    }
    output::text(&out);
}

/// `ductile config plugin list`: configured instances, with the file of each.
pub fn plugin_list(args: &Args) -> Result<(), CliError> {
    let root = crate::cli::config_root(args)?;
    let rt = Runtime::load(&root)?;
    let tree = edit::Tree::read(&root)?;
    let rows = rt
        .config
        .plugins
        .values()
        .map(|p| {
            let file = tree
                .find(&KeyPath::default().key("plugins").key(&p.name))
                .map(|(i, _)| rel(&rt.config.dir, &tree.docs[i].path));
            json!({
                "name": p.name,
                "uses": p.uses,
                "enabled": p.enabled,
                "loaded": rt.registry.get(&p.name).is_some(),
                "schedules": p.schedules.len(),
                "file": file,
            })
        })
        .collect();
    table(args, "plugins", rows, |r| {
        format!(
            "{}{}  {}{}  ({})",
            r["name"].as_str().unwrap_or(""),
            r["uses"]
                .as_str()
                .map(|u| format!(" (uses {u})"))
                .unwrap_or_default(),
            if r["enabled"] == true {
                "enabled"
            } else {
                "disabled"
            },
            if r["loaded"] == true {
                ""
            } else {
                ", not loaded"
            },
            r["file"].as_str().unwrap_or("")
        )
    });
    Ok(())
}

/// `ductile config plugin add <name> [--uses BASE] [--set key=value]...`.
pub fn plugin_add(args: &Args, name: &str) -> Result<(), CliError> {
    let root = crate::cli::config_root(args)?;
    let mut tree = edit::Tree::read(&root)?;
    let path = KeyPath::default().key("plugins").key(name);
    if tree.find(&path).is_some() {
        return Err(CliError::Failed(format!(
            "plugin `{name}` is already configured; change it with `ductile config set plugin:{name}.KEY=VALUE`"
        )));
    }
    let mut entry = Mapping::new();
    if let Some(base) = args.flag("uses") {
        entry.insert("uses".into(), base.into());
    }
    for assignment in args.values("set") {
        let Some((key, value)) = assignment.split_once('=') else {
            return Err(CliError::Usage(format!(
                "`--set {assignment}` is not `key=value`"
            )));
        };
        let key_path = edit::path::parse(key).map_err(CliError::Usage)?;
        let mut segments = key_path.0;
        if !matches!(segments.first(), Some(Segment::Key(k)) if PLUGIN_KEYS.contains(&k.as_str())) {
            segments.insert(0, Segment::Key("config".into()));
        }
        insert_nested(&mut entry, &segments, edit::parse_value(value))?;
    }
    let value = if entry.is_empty() {
        let mut m = Mapping::new();
        m.insert("enabled".into(), true.into());
        Value::Mapping(m)
    } else {
        Value::Mapping(entry)
    };
    tree.set(&path, &value)?;
    finish(
        args,
        &tree,
        tree.changes(),
        &format!("add plugin `{name}`"),
        args.dry_run,
        None,
    )
}

fn insert_nested(map: &mut Mapping, segments: &[Segment], value: Value) -> Result<(), CliError> {
    let Some((Segment::Key(first), rest)) = segments.split_first() else {
        return Err(CliError::Usage(
            "`--set` keys are mapping keys (`config.message`)".into(),
        ));
    };
    if rest.is_empty() {
        map.insert(first.as_str().into(), value);
        return Ok(());
    }
    let child = map
        .entry(first.as_str().into())
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    match child {
        Value::Mapping(m) => insert_nested(m, rest, value),
        _ => Err(CliError::Usage(format!(
            "`--set {first}` is both a value and a mapping"
        ))),
    }
}

/// `ductile config plugin remove <name>`: refused while anything refers to it.
pub fn plugin_remove(args: &Args, name: &str) -> Result<(), CliError> {
    let root = crate::cli::config_root(args)?;
    let mut tree = edit::Tree::read(&root)?;
    let path = KeyPath::default().key("plugins").key(name);
    if tree.find(&path).is_none() {
        return Err(CliError::Failed(format!(
            "no plugin `{name}` is configured"
        )));
    }
    tree.remove(&path)?;
    finish(
        args,
        &tree,
        tree.changes(),
        &format!("remove plugin `{name}`"),
        args.dry_run,
        None,
    )
}

/// `ductile config route list`.
pub fn route_list(args: &Args) -> Result<(), CliError> {
    let root = crate::cli::config_root(args)?;
    let rt = Runtime::load(&root)?;
    let rows = rt
        .config
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| json!({"index": i, "from": r.from, "event_type": r.event_type, "to": r.to, "file": rel(&rt.config.dir, &r.file)}))
        .collect();
    table(args, "routes", rows, |r| {
        format!(
            "[{}] {} --{}--> {}  ({})",
            r["index"],
            r["from"].as_str().unwrap_or(""),
            r["event_type"].as_str().unwrap_or(""),
            r["to"].as_str().unwrap_or(""),
            r["file"].as_str().unwrap_or("")
        )
    });
    Ok(())
}

fn route_spec(args: &Args, verb: &str) -> Result<(String, String, String), CliError> {
    Ok((
        required(args, "from", verb)?.to_string(),
        required(args, "event-type", verb)?.to_string(),
        required(args, "to", verb)?.to_string(),
    ))
}

/// `ductile config route add --from A --event-type E --to B`.
pub fn route_add(args: &Args) -> Result<(), CliError> {
    let (from, event_type, to) = route_spec(args, "config route add")?;
    let root = crate::cli::config_root(args)?;
    let mut tree = edit::Tree::read(&root)?;
    if !route_items(&tree, &from, &event_type, &to).is_empty() {
        return Err(CliError::Failed(format!(
            "route {from} --{event_type}--> {to} exists"
        )));
    }
    let mut m = Mapping::new();
    m.insert("from".into(), from.as_str().into());
    m.insert("event_type".into(), event_type.as_str().into());
    m.insert("to".into(), to.as_str().into());
    let at = tree.holder_of("routes").unwrap_or(0);
    tree.push(at, &KeyPath::default().key("routes"), &Value::Mapping(m))?;
    finish(
        args,
        &tree,
        tree.changes(),
        &format!("add route {from} --{event_type}--> {to}"),
        args.dry_run,
        None,
    )
}

/// `ductile config route remove --from A --event-type E --to B`.
pub fn route_remove(args: &Args) -> Result<(), CliError> {
    let (from, event_type, to) = route_spec(args, "config route remove")?;
    let root = crate::cli::config_root(args)?;
    let mut tree = edit::Tree::read(&root)?;
    let found = route_items(&tree, &from, &event_type, &to);
    let Some((doc, index)) = found.first().copied() else {
        return Err(CliError::Failed(format!(
            "no route {from} --{event_type}--> {to} (see `ductile config route list`)"
        )));
    };
    let local = KeyPath(vec![Segment::Key("routes".into()), Segment::Index(index)]);
    tree.docs[doc].edit(|t, r| edit::text::remove(t, r, &local.0))?;
    finish(
        args,
        &tree,
        tree.changes(),
        &format!("remove route {from} --{event_type}--> {to}"),
        args.dry_run,
        None,
    )
}

/// Every `(file, index)` of a route matching all three fields.
fn route_items(tree: &edit::Tree, from: &str, event_type: &str, to: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (d, doc) in tree.docs.iter().enumerate() {
        let Some(edit::span::Kind::Seq(items)) = doc
            .root
            .as_ref()
            .and_then(|r| r.entry("routes"))
            .map(|e| &e.value.kind)
        else {
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            let field = |k: &str| {
                item.entry(k)
                    .and_then(|e| e.value.scalar().map(str::to_string))
            };
            if field("from").as_deref() == Some(from)
                && field("event_type").as_deref() == Some(event_type)
                && field("to").as_deref() == Some(to)
            {
                out.push((d, i));
            }
        }
    }
    out
}

/// `ductile config webhook list`.
pub fn webhook_list(args: &Args) -> Result<(), CliError> {
    let root = crate::cli::config_root(args)?;
    let rt = Runtime::load(&root)?;
    let rows = rt
        .config
        .webhooks
        .endpoints
        .iter()
        .map(|e| json!({"name": e.name, "path": e.path, "plugin": e.plugin, "command": e.command, "secret_ref": e.secret_ref, "file": rel(&rt.config.dir, &e.file)}))
        .collect();
    table(args, "webhooks", rows, |r| {
        format!(
            "{}  {} -> {} {}  secret_ref: {}  ({})",
            r["name"].as_str().unwrap_or(""),
            r["path"].as_str().unwrap_or(""),
            r["plugin"].as_str().unwrap_or(""),
            r["command"].as_str().unwrap_or(""),
            r["secret_ref"].as_str().unwrap_or(""),
            r["file"].as_str().unwrap_or("")
        )
    });
    Ok(())
}

/// Where a file keeps its webhook endpoints: `webhooks: [...]` or `webhooks.endpoints`.
fn endpoints_path(doc: &edit::Doc) -> KeyPath {
    let list = KeyPath::default().key("webhooks");
    match doc
        .root
        .as_ref()
        .and_then(|r| r.entry("webhooks"))
        .map(|e| &e.value.kind)
    {
        Some(edit::span::Kind::Seq(_)) => list,
        _ => list.key("endpoints"),
    }
}

/// `ductile config webhook add --path P --plugin X --secret-ref S [--name N] [--command C]`.
pub fn webhook_add(args: &Args) -> Result<(), CliError> {
    let verb = "config webhook add";
    let path = required(args, "path", verb)?;
    let plugin = required(args, "plugin", verb)?;
    let secret_ref = required(args, "secret-ref", verb)?;
    let name = match args.flag("name") {
        Some(n) => n.to_string(),
        None => path
            .trim_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("webhook")
            .to_string(),
    };
    let root = crate::cli::config_root(args)?;
    let mut tree = edit::Tree::read(&root)?;
    if find_webhook(&tree, &name).is_some() {
        return Err(CliError::Failed(format!(
            "webhook `{name}` exists; pick another `--name`"
        )));
    }
    let mut m = Mapping::new();
    m.insert("name".into(), name.as_str().into());
    m.insert("path".into(), path.into());
    m.insert("plugin".into(), plugin.into());
    if let Some(c) = args.flag("command") {
        m.insert("command".into(), c.into());
    }
    m.insert("secret_ref".into(), secret_ref.into());
    // The file that already lists endpoints, else the one holding `webhooks:`.
    let at = (0..tree.docs.len())
        .rev()
        .find(|&i| {
            let p = endpoints_path(&tree.docs[i]);
            matches!(
                edit::text::resolve(tree.docs[i].root.as_ref(), &p.0),
                edit::text::Resolved::Found { .. }
            )
        })
        .or_else(|| tree.holder_of("webhooks"))
        .unwrap_or(0);
    let list = endpoints_path(&tree.docs[at]);
    tree.push(at, &list, &Value::Mapping(m))?;
    finish(
        args,
        &tree,
        tree.changes(),
        &format!("add webhook `{name}`"),
        args.dry_run,
        None,
    )
}

fn find_webhook(tree: &edit::Tree, name: &str) -> Option<(usize, KeyPath)> {
    tree.docs.iter().enumerate().find_map(|(i, d)| {
        let p = endpoints_path(d).child(Segment::Select {
            key: "name".into(),
            value: name.into(),
        });
        match edit::text::resolve(d.root.as_ref(), &p.0) {
            edit::text::Resolved::Found { .. } => Some((i, p)),
            _ => None,
        }
    })
}

/// `ductile config webhook remove <name>`.
pub fn webhook_remove(args: &Args, name: &str) -> Result<(), CliError> {
    let root = crate::cli::config_root(args)?;
    let mut tree = edit::Tree::read(&root)?;
    let Some((i, p)) = find_webhook(&tree, name) else {
        return Err(CliError::Failed(format!(
            "no webhook `{name}` (see `ductile config webhook list`)"
        )));
    };
    tree.docs[i].edit(|t, r| edit::text::remove(t, r, &p.0))?;
    finish(
        args,
        &tree,
        tree.changes(),
        &format!("remove webhook `{name}`"),
        args.dry_run,
        None,
    )
}
