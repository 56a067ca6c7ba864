//! Edits of one file's text at the spans [`span`](super::span) found: replace
//! a value, add a mapping entry or a list item, remove one. Every byte outside
//! the edited region stays as it was; a flow collection (`[a, b]`, `{k: v}`)
//! being edited is rewritten whole, as JSON (which YAML reads as flow).
//!
//! Owns: rendering values into YAML text at an indentation. Must not: do IO.

use saphyr_parser::ScalarStyle;
use serde_yaml::Value;

use super::path::Segment;
use super::span::{Kind, Node};

/// Where a path ends in one document.
#[derive(Debug)]
pub enum Resolved<'a> {
    /// The path names this node; `key` is its key's node when it is a mapping entry.
    Found {
        /// The node.
        node: &'a Node,
        /// The key node, when the last step was a mapping key.
        key: Option<&'a Node>,
    },
    /// Only the first `depth` segments exist; `node` is the last of them
    /// (`key` its key node, when it is a mapping entry's value).
    Partial {
        /// Segments that matched.
        depth: usize,
        /// The deepest node reached.
        node: &'a Node,
        /// Its key node, when it is a mapping entry's value.
        key: Option<&'a Node>,
    },
    /// A list index past the end of this document's list (of `len` items) at
    /// segment `at`: with lists appended across files, the index goes on in
    /// the next file.
    OutOfRange {
        /// The segment.
        at: usize,
        /// Items in this document's list.
        len: usize,
    },
    /// The document has no content.
    Empty,
}

/// Walks `path` from `root`.
pub fn resolve<'a>(root: Option<&'a Node>, path: &[Segment]) -> Resolved<'a> {
    let Some(root) = root else {
        return Resolved::Empty;
    };
    let mut node = root;
    let mut key: Option<&Node> = None;
    for (depth, segment) in path.iter().enumerate() {
        let next = match (segment, &node.kind) {
            (Segment::Key(k), Kind::Map(entries)) => entries
                .iter()
                .rev()
                .find(|e| &e.key == k)
                .map(|e| (&e.value, Some(&e.key_node))),
            (Segment::Index(n), Kind::Seq(items)) => match items.get(*n) {
                Some(item) => Some((item, None)),
                None => {
                    return Resolved::OutOfRange {
                        at: depth,
                        len: items.len(),
                    };
                }
            },
            (Segment::Select { key: field, value }, Kind::Seq(items)) => items
                .iter()
                .find(|i| i.entry(field).and_then(|e| e.value.scalar()) == Some(value))
                .map(|i| (i, None)),
            _ => None,
        };
        match next {
            Some((n, k)) => {
                node = n;
                key = k;
            }
            None => return Resolved::Partial { depth, node, key },
        }
    }
    Resolved::Found { node, key }
}

/// Why an edit cannot be made in this text.
#[derive(Debug)]
pub struct TextError(pub String);

type Result<T> = std::result::Result<T, TextError>;

fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(TextError(message.into()))
}

/// `text` with the node at `path` set to `value`, creating the missing
/// mapping keys on the way (a list grows only by one item at its end).
pub fn set(text: &str, root: Option<&Node>, path: &[Segment], value: &Value) -> Result<String> {
    match resolve(root, path) {
        Resolved::Found { node, key } => replace(text, node, key, value),
        Resolved::Partial { depth, node, key } => {
            let missing = &path[depth..];
            match (&missing[0], &node.kind) {
                (Segment::Key(_), Kind::Map(_)) | (Segment::Key(_), Kind::Scalar { .. })
                    if matches!(node.kind, Kind::Map(_)) || node.is_null() =>
                {
                    let (first, nested) = nest(missing, value)?;
                    insert_entry(text, node, key, &first, &nested)
                }
                (Segment::Key(k), _) => fail(format!(
                    "`{}` is not a mapping, so it has no key `{k}`",
                    show(&path[..depth])
                )),
                (Segment::Select { key: f, value: v }, _) => fail(format!(
                    "no item with {f} `{v}` under `{}`",
                    show(&path[..depth])
                )),
                (Segment::Index(_), _) => fail(format!("`{}` is not a list", show(&path[..depth]))),
            }
        }
        Resolved::OutOfRange { at, len } => match &path[at] {
            Segment::Index(n) if *n == len && at + 1 == path.len() => {
                match resolve(root, &path[..at]) {
                    Resolved::Found { node, key } => append(text, node, key, value),
                    _ => fail("list not found"),
                }
            }
            _ => fail(format!(
                "`{}` has {len} item(s); a new item goes at index {len}",
                show(&path[..at])
            )),
        },
        Resolved::Empty => {
            let (first, nested) = nest(path, value)?;
            let mut out = text.to_string();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&render_entry(&first, &nested, 0));
            Ok(out)
        }
    }
}

/// `text` with `value` appended to the list at `path` (created when missing).
pub fn push(text: &str, root: Option<&Node>, path: &[Segment], value: &Value) -> Result<String> {
    match resolve(root, path) {
        Resolved::Found { node, key } if node.is_null() => {
            replace(text, node, key, &Value::Sequence(vec![value.clone()]))
        }
        Resolved::Found { node, key } => append(text, node, key, value),
        _ => set(text, root, path, &Value::Sequence(vec![value.clone()])),
    }
}

/// `text` without the node at `path` (a mapping entry or a list item).
pub fn remove(text: &str, root: Option<&Node>, path: &[Segment]) -> Result<String> {
    let Some((last, parent_path)) = path.split_last() else {
        return fail("cannot remove the whole document");
    };
    let (parent, parent_key) = match resolve(root, parent_path) {
        Resolved::Found { node, key } => (node, key),
        _ => return fail(format!("`{}` does not exist", show(path))),
    };
    if parent.flow {
        let mut whole = flow_value(text, parent)?;
        match (&mut whole, last) {
            (Value::Mapping(m), Segment::Key(k)) => {
                m.remove(k.as_str());
            }
            (Value::Sequence(items), _) => {
                let at = item_index(parent, last)
                    .ok_or_else(|| TextError(format!("`{}` does not exist", show(path))))?;
                items.remove(at);
            }
            _ => return fail(format!("`{}` does not exist", show(path))),
        }
        return Ok(splice(text, parent.start, parent.end, &flow(&whole)));
    }
    match &parent.kind {
        Kind::Map(entries) => {
            let Segment::Key(k) = last else {
                return fail(format!("`{}` is a mapping, not a list", show(parent_path)));
            };
            let Some(at) = entries.iter().rposition(|e| &e.key == k) else {
                return fail(format!("`{}` does not exist", show(path)));
            };
            if entries.len() == 1 {
                return replace(
                    text,
                    parent,
                    parent_key,
                    &Value::Mapping(Default::default()),
                );
            }
            let entry = &entries[at];
            let (start, end) = if only_space_before(text, entry.key_node.start) {
                (
                    line_start(text, entry.key_node.start),
                    line_end(text, entry.value.end),
                )
            } else if let Some(next) = entries.get(at + 1) {
                (entry.key_node.start, next.key_node.start)
            } else {
                return fail(format!("cannot remove `{}` from its line", show(path)));
            };
            Ok(splice(text, start, end, ""))
        }
        Kind::Seq(items) => {
            let Some(at) = item_index(parent, last) else {
                return fail(format!("`{}` does not exist", show(path)));
            };
            if items.len() == 1 {
                return replace(text, parent, parent_key, &Value::Sequence(Vec::new()));
            }
            let item = &items[at];
            let before = &text[line_start(text, item.start)..item.start];
            if before.trim() != "-" {
                return fail(format!("cannot remove `{}` from its line", show(path)));
            }
            Ok(splice(
                text,
                line_start(text, item.start),
                line_end(text, item.end),
                "",
            ))
        }
        _ => fail(format!(
            "`{}` is neither a mapping nor a list",
            show(parent_path)
        )),
    }
}

fn item_index(seq: &Node, segment: &Segment) -> Option<usize> {
    let Kind::Seq(items) = &seq.kind else {
        return None;
    };
    match segment {
        Segment::Index(n) if *n < items.len() => Some(*n),
        Segment::Select { key, value } => items
            .iter()
            .position(|i| i.entry(key).and_then(|e| e.value.scalar()) == Some(value)),
        _ => None,
    }
}

/// The nested value `missing` describes: `[a, b] = v` is `a: {b: v}`.
fn nest(missing: &[Segment], value: &Value) -> Result<(String, Value)> {
    let Some((Segment::Key(first), rest)) = missing.split_first() else {
        return fail("a new entry needs a key name, not a list position");
    };
    let mut v = value.clone();
    for segment in rest.iter().rev() {
        let Segment::Key(k) = segment else {
            return fail("a list cannot be created through an index; set the whole list");
        };
        let mut m = serde_yaml::Mapping::new();
        m.insert(Value::String(k.clone()), v);
        v = Value::Mapping(m);
    }
    Ok((first.clone(), v))
}

/// Replaces the node's value; `key` is its key node when it is a mapping entry.
fn replace(text: &str, node: &Node, key: Option<&Node>, value: &Value) -> Result<String> {
    let after_colon = key.map(|k| colon_end(text, k.end));
    let block_old = node.is_null()
        || node.is_block_scalar()
        || (!node.flow && matches!(node.kind, Kind::Map(_) | Kind::Seq(_)));
    let old_style = match &node.kind {
        Kind::Scalar { style, .. } => Some(*style),
        _ => None,
    };
    match after_colon {
        Some(colon) if block_old => {
            let rendered = match value {
                Value::Mapping(m) if !m.is_empty() => {
                    format!(
                        "\n{}",
                        block(value, key.map_or(0, |k| k.col) + 2).trim_end_matches('\n')
                    )
                }
                Value::Sequence(s) if !s.is_empty() => format!(
                    "\n{}",
                    seq_items(s, key.map_or(0, |k| k.col) + 2).trim_end_matches('\n')
                ),
                _ => format!(" {}", inline(value, old_style)),
            };
            // An empty value (`key:` and nothing) has no text of its own,
            // whatever span the parser gave it.
            let empty = matches!(&node.kind, Kind::Scalar { value, .. } if value.is_empty());
            let end = if empty { colon } else { node.end.max(colon) };
            Ok(splice(text, colon, end, &rendered))
        }
        _ => Ok(splice(
            text,
            node.start,
            node.end,
            &inline(value, old_style),
        )),
    }
}

/// Adds `key: value` to the mapping `map` (or to the empty value `map` of `map_key`).
fn insert_entry(
    text: &str,
    map: &Node,
    map_key: Option<&Node>,
    key: &str,
    value: &Value,
) -> Result<String> {
    if map.flow || map.is_null() {
        let mut whole = if map.is_null() {
            Value::Mapping(Default::default())
        } else {
            flow_value(text, map)?
        };
        if let Value::Mapping(m) = &mut whole {
            m.insert(Value::String(key.to_string()), value.clone());
        }
        let empty = matches!(&map.kind, Kind::Map(e) if e.is_empty());
        // `{}` becomes a block mapping: entries added later read better so.
        let as_block = Node {
            flow: map.flow && !empty,
            ..map.clone()
        };
        return replace(text, &as_block, map_key, &whole);
    }
    let Kind::Map(entries) = &map.kind else {
        return fail("not a mapping");
    };
    let col = entries.first().map_or(0, |e| e.key_node.col);
    let at = line_end(text, map.end);
    let mut out = String::with_capacity(text.len() + 64);
    out.push_str(&text[..at]);
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&render_entry(key, value, col));
    out.push_str(&text[at..]);
    Ok(out)
}

/// Appends `value` to the list `seq`.
fn append(text: &str, seq: &Node, seq_key: Option<&Node>, value: &Value) -> Result<String> {
    if seq.flow {
        let mut whole = flow_value(text, seq)?;
        if let Value::Sequence(items) = &mut whole {
            items.push(value.clone());
        }
        if let (Value::Sequence(items), true) = (&whole, seq_key.is_some()) {
            // A list written `[]` becomes a block list: new items read better so.
            if items.len() == 1 {
                return replace(
                    text,
                    &Node {
                        flow: false,
                        ..seq.clone()
                    },
                    seq_key,
                    &whole,
                );
            }
        }
        return Ok(splice(text, seq.start, seq.end, &flow(&whole)));
    }
    let Kind::Seq(_) = &seq.kind else {
        return fail("not a list");
    };
    let at = line_end(text, seq.end);
    let mut out = String::with_capacity(text.len() + 64);
    out.push_str(&text[..at]);
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&seq_items(std::slice::from_ref(value), seq.col));
    out.push_str(&text[at..]);
    Ok(out)
}

/// `key: value` at indentation `col`, ending in a newline.
fn render_entry(key: &str, value: &Value, col: usize) -> String {
    let pad = " ".repeat(col);
    let key = inline(&Value::String(key.to_string()), None);
    match value {
        Value::Mapping(m) if !m.is_empty() => format!("{pad}{key}:\n{}", block(value, col + 2)),
        Value::Sequence(s) if !s.is_empty() => format!("{pad}{key}:\n{}", seq_items(s, col + 2)),
        _ => format!("{pad}{key}: {}\n", inline(value, None)),
    }
}

/// A block rendering of `value`, every line indented by `col`.
fn block(value: &Value, col: usize) -> String {
    let text = serde_yaml::to_string(value).unwrap_or_else(|_| flow(value));
    indent(&text, col, col)
}

/// List items `- ...` with the dash at `col`.
fn seq_items(items: &[Value], col: usize) -> String {
    let mut out = String::new();
    for item in items {
        let text = match item {
            Value::Mapping(m) if !m.is_empty() => {
                serde_yaml::to_string(item).unwrap_or_else(|_| flow(item))
            }
            _ => format!("{}\n", inline(item, None)),
        };
        let body = indent(&text, 0, col + 2);
        out.push_str(&" ".repeat(col));
        out.push_str("- ");
        out.push_str(&body);
    }
    out
}

fn indent(text: &str, first: usize, rest: usize) -> String {
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        if !line.is_empty() {
            out.push_str(&" ".repeat(if i == 0 { first } else { rest }));
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A value on one line: a scalar as YAML writes it (keeping double or single
/// quotes the old value had), a collection as JSON.
pub fn inline(value: &Value, old_style: Option<ScalarStyle>) -> String {
    match value {
        Value::String(s) => match old_style {
            Some(ScalarStyle::DoubleQuoted) => serde_json::to_string(s).unwrap_or_default(),
            Some(ScalarStyle::SingleQuoted) if !s.contains('\n') => {
                format!("'{}'", s.replace('\'', "''"))
            }
            _ => {
                let y = serde_yaml::to_string(value).unwrap_or_default();
                let y = y.trim_end_matches('\n');
                if y.contains('\n') || y.is_empty() {
                    serde_json::to_string(s).unwrap_or_default()
                } else {
                    y.to_string()
                }
            }
        },
        Value::Mapping(_) | Value::Sequence(_) | Value::Tagged(_) => flow(value),
        _ => serde_yaml::to_string(value)
            .unwrap_or_default()
            .trim_end_matches('\n')
            .to_string(),
    }
}

fn flow(value: &Value) -> String {
    match serde_json::to_value(value) {
        Ok(json) => serde_json::to_string(&json)
            .unwrap_or_default()
            .replace("\":", "\": ")
            .replace(",\"", ", \""),
        Err(_) => "null".to_string(),
    }
}

fn flow_value(text: &str, node: &Node) -> Result<Value> {
    serde_yaml::from_str(&text[node.start..node.end]).map_err(|e| {
        TextError(format!(
            "cannot read `{}`: {e}",
            &text[node.start..node.end]
        ))
    })
}

fn splice(text: &str, start: usize, end: usize, with: &str) -> String {
    let mut out = String::with_capacity(text.len() + with.len());
    out.push_str(&text[..start]);
    out.push_str(with);
    out.push_str(&text[end..]);
    out
}

/// Offset just past the `:` that follows a key ending at `key_end`.
fn colon_end(text: &str, key_end: usize) -> usize {
    text[key_end..]
        .find(':')
        .map_or(key_end, |i| key_end + i + 1)
}

fn line_start(text: &str, at: usize) -> usize {
    text[..at].rfind('\n').map_or(0, |i| i + 1)
}

/// Offset just past the newline ending the line that holds `at`.
fn line_end(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    // `at` may sit just past the last character of a line, i.e. on its newline.
    text[at..].find('\n').map_or(text.len(), |i| at + i + 1)
}

fn only_space_before(text: &str, at: usize) -> bool {
    text[line_start(text, at)..at].trim().is_empty()
}

fn show(path: &[Segment]) -> String {
    super::path::KeyPath(path.to_vec()).to_string()
}

#[cfg(test)]
mod tests {
    use super::super::path;
    use super::super::span;
    use super::*;

    fn edit(text: &str, key: &str, value: &str) -> String {
        let root = span::parse(text).unwrap();
        let p = path::parse(key).unwrap();
        let v: Value = serde_yaml::from_str(value).unwrap();
        let out = set(text, root.as_ref(), &p.0, &v).unwrap();
        let _: Value = serde_yaml::from_str(&out).unwrap();
        out
    }

    fn rm(text: &str, key: &str) -> String {
        let root = span::parse(text).unwrap();
        let p = path::parse(key).unwrap();
        remove(text, root.as_ref(), &p.0).unwrap()
    }

    fn add(text: &str, key: &str, value: &str) -> String {
        let root = span::parse(text).unwrap();
        let p = path::parse(key).unwrap();
        let v: Value = serde_yaml::from_str(value).unwrap();
        push(text, root.as_ref(), &p.0, &v).unwrap()
    }

    const DOC: &str = "# head\nplugins:\n  echo:\n    enabled: true # keep me\n    config:\n      message: \"hi\"\n\n# tail\nservice:\n  name: x\n";

    #[test]
    fn a_scalar_is_replaced_in_place() {
        assert_eq!(
            edit(DOC, "plugins.echo.enabled", "false"),
            DOC.replace("enabled: true", "enabled: false")
        );
        assert_eq!(
            edit(DOC, "plugins.echo.config.message", "hello there"),
            DOC.replace("\"hi\"", "\"hello there\"")
        );
    }

    #[test]
    fn missing_keys_are_created_under_the_deepest_existing_one() {
        assert_eq!(
            edit(DOC, "plugins.echo.parallelism", "2"),
            DOC.replace("\"hi\"\n", "\"hi\"\n    parallelism: 2\n")
        );
        assert_eq!(
            edit(DOC, "service.strict_mode", "true"),
            format!("{DOC}  strict_mode: true\n")
        );
        assert_eq!(
            edit(DOC, "api.listen", "127.0.0.1:9"),
            format!("{DOC}api:\n  listen: 127.0.0.1:9\n")
        );
        assert_eq!(edit("a:\n", "a.b", "1"), "a:\n  b: 1\n");
        assert_eq!(
            edit("a:\n  # note\nb: 1\n", "a.x", "1"),
            "a:\n  x: 1\n  # note\nb: 1\n"
        );
        assert_eq!(edit("a: ~ # none\n", "a", "2"), "a: 2 # none\n");
        assert_eq!(edit("a: {}\nz: 1\n", "a.b", "1"), "a:\n  b: 1\nz: 1\n");
    }

    #[test]
    fn entries_and_items_are_removed_with_their_lines_only() {
        assert_eq!(
            rm(DOC, "plugins.echo.enabled"),
            DOC.replace("    enabled: true # keep me\n", "")
        );
        let list = "r:\n  - a # one\n  - b\n  - c\nz: 1\n";
        assert_eq!(rm(list, "r[1]"), "r:\n  - a # one\n  - c\nz: 1\n");
        assert_eq!(rm(list, "r[2]"), "r:\n  - a # one\n  - b\nz: 1\n");
        assert_eq!(rm("r: [a, b]\n", "r[0]"), "r: [\"b\"]\n");
        assert_eq!(rm("p:\n  x: 1\n", "p.x"), "p: {}\n");
        let items = "l:\n- name: a\n  v: 1\n- name: b\n  v: 2\n";
        assert_eq!(rm(items, "l[name=a]"), "l:\n- name: b\n  v: 2\n");
    }

    #[test]
    fn items_are_appended_in_the_list_style() {
        let list = "routes:\n  - {from: a, event_type: e, to: b}\n# after\n";
        assert_eq!(
            add(list, "routes", "{from: c, event_type: f, to: d}"),
            "routes:\n  - {from: a, event_type: e, to: b}\n  - from: c\n    event_type: f\n    to: d\n# after\n"
        );
        assert_eq!(add("x: 1\n", "routes", "a"), "x: 1\nroutes:\n  - a\n");
        assert_eq!(
            add("include: [a.yaml]\n", "include", "b.yaml"),
            "include: [\"a.yaml\", \"b.yaml\"]\n"
        );
        assert_eq!(
            add("include: []\n", "include", "b.yaml"),
            "include:\n  - b.yaml\n"
        );
    }
}
