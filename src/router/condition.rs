//! The `if:` language (pipeline-level and step-level): atomic `{path, op,
//! value}` predicates combined with `all`, `any` and `not`, compiled once at
//! load and evaluated against a payload, a context and a plugin config.
//!
//! Also home of what `with:` and `baggage:` share with conditions: the three
//! roots, dotted paths into them, and strict JSON equality.
//!
//! Owns: the shape rules, the operators and their typing, the size limits.
//! Must not: read the store, coerce types, or decide what a false result means
//! (the router and dispatcher do).

use std::cmp::Ordering;
use std::fmt;

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Number, Value};

#[cfg(test)]
mod tests;

/// Deepest nesting of `all`/`any`/`not` allowed; an atomic predicate alone is depth 1.
pub const MAX_DEPTH: usize = 8;

/// Most predicates and combinators one condition tree may hold.
pub const MAX_NODES: usize = 64;

/// Bytes a compiled regex may occupy. A condition pattern is a short test on
/// one field; the cap stops a pattern such as `a{1000}{1000}` from taking
/// megabytes per copy of the config.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Where a path starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Root {
    /// The immediate event payload.
    Payload,
    /// The accumulated durable context (baggage).
    Context,
    /// The plugin's config.
    Config,
}

impl Root {
    /// Every root, in the order messages list them.
    pub const ALL: [Root; 3] = [Root::Payload, Root::Context, Root::Config];

    /// The root as written in paths.
    pub fn name(self) -> &'static str {
        match self {
            Root::Payload => "payload",
            Root::Context => "context",
            Root::Config => "config",
        }
    }

    fn parse(text: &str) -> Option<Root> {
        Root::ALL.into_iter().find(|root| root.name() == text)
    }
}

/// A dotted path such as `payload.user.name`: a root and object keys under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    root: Root,
    segments: Vec<String>,
}

impl Path {
    /// Parses `text`, accepting only the `allowed` roots. A bare root
    /// (`payload`) is a path with no segments; callers that need a field check
    /// [`Path::segments`]. The error is a one-line message without location.
    pub fn parse(text: &str, allowed: &[Root]) -> Result<Path, String> {
        if text.is_empty() {
            return Err("the path is empty".to_string());
        }
        let mut parts = text.split('.');
        let first = parts.next().unwrap_or_default();
        let root = match Root::parse(first) {
            Some(root) if allowed.contains(&root) => root,
            Some(root) => {
                return Err(format!(
                    "`{text}`: `{}` cannot be used here; a path starts with {}",
                    root.name(),
                    list_roots(allowed)
                ));
            }
            None => {
                return Err(format!(
                    "`{text}` starts with `{first}`; a path starts with {}",
                    list_roots(allowed)
                ));
            }
        };
        let mut segments = Vec::new();
        for part in parts {
            if part.is_empty() {
                return Err(format!("`{text}` has an empty segment"));
            }
            // Braces and blanks never occur in a key an author meant; they are
            // a template written where a path belongs, or a typo.
            if part.contains(|c: char| c.is_whitespace() || c == '{' || c == '}') {
                return Err(format!(
                    "`{text}`: segment `{part}` contains a space or a brace"
                ));
            }
            segments.push(part.to_string());
        }
        Ok(Path { root, segments })
    }

    /// Which root the path starts at.
    pub fn root(&self) -> Root {
        self.root
    }

    /// The keys below the root (empty for a bare root).
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The value at this path, or `None` when a key is missing or a value on
    /// the way is not an object. Arrays are not indexed: the DSL addresses keys.
    pub fn resolve<'v>(&self, roots: &Roots<'v>) -> Option<&'v Value> {
        let mut current = roots.get(self.root);
        for segment in &self.segments {
            current = current.as_object()?.get(segment)?;
        }
        Some(current)
    }

    /// Why [`Path::resolve`] found nothing, for error messages: the first key
    /// missing, or the first value that is not an object.
    pub fn explain_miss(&self, roots: &Roots<'_>) -> String {
        let mut current = roots.get(self.root);
        let mut prefix = self.root.name().to_string();
        for segment in &self.segments {
            match current {
                Value::Object(map) => match map.get(segment) {
                    Some(next) => current = next,
                    None => return format!("`{prefix}` has no key `{segment}`"),
                },
                other => return format!("`{prefix}` is {}, not an object", kind(other)),
            }
            prefix.push('.');
            prefix.push_str(segment);
        }
        format!("`{prefix}` resolves")
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.root.name())?;
        for segment in &self.segments {
            write!(f, ".{segment}")?;
        }
        Ok(())
    }
}

fn list_roots(allowed: &[Root]) -> String {
    let names: Vec<&str> = allowed.iter().map(|r| r.name()).collect();
    match names.split_last() {
        Some((last, [])) => (*last).to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => "nothing".to_string(),
    }
}

/// The JSON type of a value with its article, for messages ("a string").
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The three documents a path can point into. A root that is not available
/// (no upstream context at trigger time) is passed as `{}` or `null`; every
/// path into it is then missing.
#[derive(Clone, Copy, Debug)]
pub struct Roots<'a> {
    /// The immediate event payload.
    pub payload: &'a Value,
    /// The accumulated durable context.
    pub context: &'a Value,
    /// The plugin's config.
    pub config: &'a Value,
}

impl<'a> Roots<'a> {
    fn get(&self, root: Root) -> &'a Value {
        match root {
            Root::Payload => self.payload,
            Root::Context => self.context,
            Root::Config => self.config,
        }
    }
}

/// Deep JSON equality where numbers compare by value (`5` equals `5.0`) and
/// nothing else converts (`"5"` is not `5`). Object key order does not matter.
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, p)| y.get(key).is_some_and(|q| same(p, q)))
        }
        _ => a == b,
    }
}

/// Orders two JSON numbers: exactly when both are integers (so large ids do
/// not collide through `f64`), otherwise as `f64`.
fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    fn integer(n: &Number) -> Option<i128> {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    }
    match (integer(a), integer(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// Appends a key to a location path: `all[1]` + `op` = `all[1].op`.
pub(crate) fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

/// Appends a list index to a location path: `all` + 1 = `all[1]`.
pub(crate) fn index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

/// A key the schema does not know, with a suggestion when one is close.
pub(crate) fn unknown_key(key: &str, known: &[&str]) -> String {
    match crate::suggest::closest(key, known) {
        Some(near) => format!("unknown key `{key}`; did you mean `{near}`?"),
        None => format!("unknown key `{key}`; expected {}", quote_list(known)),
    }
}

fn quote_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    quoted.join(", ")
}

/// A condition that cannot compile, located by its path inside the `if:`
/// value (`all[1].any[0].op`; empty for the value itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionError {
    /// Where in the `if:` tree, relative to the `if:` value.
    pub path: String,
    /// What is wrong, one line.
    pub message: String,
}

impl ConditionError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> ConditionError {
        ConditionError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConditionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConditionError {}

/// A compiled `if:` tree. Immutable; cheap to clone (regexes are shared).
#[derive(Clone, Debug)]
pub struct Condition {
    node: Node,
}

#[derive(Clone, Debug)]
enum Node {
    Atom(Atom),
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
}

#[derive(Clone, Debug)]
struct Atom {
    path: Path,
    test: Test,
}

/// An operator with its compiled operand; invalid pairings cannot be built.
#[derive(Clone, Debug)]
enum Test {
    Exists,
    Eq(Value),
    Neq(Value),
    In(Vec<Value>),
    Compare(Bound, Number),
    Contains(Value),
    StartsWith(String),
    EndsWith(String),
    Regex { pattern: String, regex: Regex },
}

#[derive(Clone, Copy, Debug)]
enum Bound {
    Gt,
    Gte,
    Lt,
    Lte,
}

const OPS: [&str; 12] = [
    "exists",
    "eq",
    "neq",
    "in",
    "gt",
    "gte",
    "lt",
    "lte",
    "contains",
    "startswith",
    "endswith",
    "regex",
];

const KEYS: [&str; 6] = ["path", "op", "value", "all", "any", "not"];

impl Test {
    fn op(&self) -> &'static str {
        match self {
            Test::Exists => "exists",
            Test::Eq(_) => "eq",
            Test::Neq(_) => "neq",
            Test::In(_) => "in",
            Test::Compare(Bound::Gt, _) => "gt",
            Test::Compare(Bound::Gte, _) => "gte",
            Test::Compare(Bound::Lt, _) => "lt",
            Test::Compare(Bound::Lte, _) => "lte",
            Test::Contains(_) => "contains",
            Test::StartsWith(_) => "startswith",
            Test::EndsWith(_) => "endswith",
            Test::Regex { .. } => "regex",
        }
    }

    /// The operand as written, `None` for `exists`.
    fn operand(&self) -> Option<Value> {
        match self {
            Test::Exists => None,
            Test::Eq(v) | Test::Neq(v) | Test::Contains(v) => Some(v.clone()),
            Test::In(items) => Some(Value::Array(items.clone())),
            Test::Compare(_, n) => Some(Value::Number(n.clone())),
            Test::StartsWith(s) | Test::EndsWith(s) => Some(Value::String(s.clone())),
            Test::Regex { pattern, .. } => Some(Value::String(pattern.clone())),
        }
    }

    /// Builds the test for `op` from its operand; the error is about `value`
    /// unless it names `op`.
    fn build(op: &str, value: Option<&Value>, at: &str) -> Result<Test, ConditionError> {
        let op_at = join(at, "op");
        let value_at = join(at, "value");
        if !OPS.contains(&op) {
            let message = match crate::suggest::closest(op, &OPS) {
                Some(near) => format!("unknown operator `{op}`; did you mean `{near}`?"),
                None => format!(
                    "unknown operator `{op}`; expected one of {}",
                    OPS.join(", ")
                ),
            };
            return Err(ConditionError::new(op_at, message));
        }
        let Some(value) = value else {
            if op == "exists" {
                return Ok(Test::Exists);
            }
            return Err(ConditionError::new(at, format!("`{op}` needs a `value`")));
        };
        let number = || match value {
            Value::Number(n) => Ok(n.clone()),
            other => Err(ConditionError::new(
                &value_at,
                format!("`{op}` compares numbers; the value is {}", kind(other)),
            )),
        };
        let string = || match value {
            Value::String(s) => Ok(s.clone()),
            other => Err(ConditionError::new(
                &value_at,
                format!("`{op}` compares strings; the value is {}", kind(other)),
            )),
        };
        Ok(match op {
            "exists" => {
                return Err(ConditionError::new(value_at, "`exists` takes no value"));
            }
            "eq" => Test::Eq(value.clone()),
            "neq" => Test::Neq(value.clone()),
            "in" => match value {
                Value::Array(items) => Test::In(items.clone()),
                other => {
                    return Err(ConditionError::new(
                        value_at,
                        format!("`in` needs a list of values; the value is {}", kind(other)),
                    ));
                }
            },
            "gt" => Test::Compare(Bound::Gt, number()?),
            "gte" => Test::Compare(Bound::Gte, number()?),
            "lt" => Test::Compare(Bound::Lt, number()?),
            "lte" => Test::Compare(Bound::Lte, number()?),
            // A string looks inside strings; any value looks for an equal
            // element of a list.
            "contains" => Test::Contains(value.clone()),
            "startswith" => Test::StartsWith(string()?),
            "endswith" => Test::EndsWith(string()?),
            _ => {
                let pattern = string()?;
                let regex =
                    compile_regex(&pattern).map_err(|m| ConditionError::new(value_at, m))?;
                Test::Regex { pattern, regex }
            }
        })
    }

    fn check(&self, found: &Value) -> bool {
        match self {
            Test::Exists => true,
            Test::Eq(want) => same(found, want),
            Test::Neq(want) => !same(found, want),
            Test::In(items) => items.iter().any(|item| same(found, item)),
            Test::Compare(bound, limit) => match found {
                Value::Number(n) => compare_numbers(n, limit).is_some_and(|o| match bound {
                    Bound::Gt => o == Ordering::Greater,
                    Bound::Gte => o != Ordering::Less,
                    Bound::Lt => o == Ordering::Less,
                    Bound::Lte => o != Ordering::Greater,
                }),
                _ => false,
            },
            Test::Contains(want) => match (found, want) {
                (Value::String(hay), Value::String(needle)) => fold(hay).contains(&fold(needle)),
                (Value::Array(items), want) => items.iter().any(|item| same(item, want)),
                _ => false,
            },
            Test::StartsWith(prefix) => found
                .as_str()
                .is_some_and(|s| fold(s).starts_with(&fold(prefix))),
            Test::EndsWith(suffix) => found
                .as_str()
                .is_some_and(|s| fold(s).ends_with(&fold(suffix))),
            Test::Regex { regex, .. } => found.as_str().is_some_and(|s| regex.is_match(s)),
        }
    }
}

/// Case folding for the case-insensitive string operators.
fn fold(s: &str) -> String {
    s.to_lowercase()
}

/// Compiles `pattern` for a full-string match. It is first compiled as
/// written so that a syntax error points into the author's text, not into the
/// anchors added around it.
fn compile_regex(pattern: &str) -> Result<Regex, String> {
    let build = |p: &str| RegexBuilder::new(p).size_limit(REGEX_SIZE_LIMIT).build();
    build(pattern).map_err(regex_message)?;
    build(&format!(r"\A(?:{pattern})\z")).map_err(regex_message)
}

/// The regex crate renders syntax errors over several lines (pattern, caret,
/// reason); config messages are one line, so keep the reason.
fn regex_message(error: regex::Error) -> String {
    let text = error.to_string();
    let reason = text
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("error: "))
        .map(str::to_string)
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "));
    format!("invalid regex: {reason}")
}

/// Walks the raw tree once, counting nodes as it goes.
struct Compiler {
    nodes: usize,
}

impl Compiler {
    fn node(&mut self, value: &Value, at: &str, depth: usize) -> Result<Node, ConditionError> {
        if depth > MAX_DEPTH {
            return Err(ConditionError::new(
                at,
                format!("conditions nest more than {MAX_DEPTH} levels deep"),
            ));
        }
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(ConditionError::new(
                at,
                format!("a condition tree holds at most {MAX_NODES} predicates and combinators"),
            ));
        }
        let Value::Object(map) = value else {
            return Err(ConditionError::new(
                at,
                format!(
                    "a condition is a mapping with `path` and `op`, or with one of `all`, `any`, `not`; found {}",
                    kind(value)
                ),
            ));
        };
        if let Some(key) = map.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(ConditionError::new(join(at, key), unknown_key(key, &KEYS)));
        }
        let combinators: Vec<&str> = ["all", "any", "not"]
            .into_iter()
            .filter(|k| map.contains_key(*k))
            .collect();
        match combinators.as_slice() {
            [] => self.atom(map, at).map(Node::Atom),
            [combinator] => {
                if let Some(extra) = ["path", "op", "value"]
                    .iter()
                    .find(|k| map.contains_key(**k))
                {
                    return Err(ConditionError::new(
                        join(at, extra),
                        format!(
                            "`{extra}` cannot stand beside `{combinator}`; nest the predicate inside it"
                        ),
                    ));
                }
                let child_at = join(at, combinator);
                let child = &map[*combinator];
                match *combinator {
                    "not" => {
                        if child.is_array() {
                            return Err(ConditionError::new(
                                child_at,
                                "`not` takes one condition, not a list; wrap a list in `all` or `any`",
                            ));
                        }
                        Ok(Node::Not(Box::new(self.node(
                            child,
                            &child_at,
                            depth + 1,
                        )?)))
                    }
                    name => {
                        let children = self.list(child, name, &child_at, depth)?;
                        Ok(if name == "all" {
                            Node::All(children)
                        } else {
                            Node::Any(children)
                        })
                    }
                }
            }
            [first, second, ..] => Err(ConditionError::new(
                at,
                format!(
                    "`{first}` and `{second}` cannot share a mapping; nest one inside the other"
                ),
            )),
        }
    }

    fn list(
        &mut self,
        value: &Value,
        name: &str,
        at: &str,
        depth: usize,
    ) -> Result<Vec<Node>, ConditionError> {
        let Value::Array(items) = value else {
            return Err(ConditionError::new(
                at,
                format!("`{name}` takes a list of conditions; found {}", kind(value)),
            ));
        };
        // An empty list would be vacuously true (`all`) or false (`any`),
        // which no author means to write.
        if items.is_empty() {
            return Err(ConditionError::new(
                at,
                format!("`{name}` needs at least one condition"),
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| self.node(item, &index(at, i), depth + 1))
            .collect()
    }

    fn atom(&mut self, map: &Map<String, Value>, at: &str) -> Result<Atom, ConditionError> {
        let text = |key: &str| -> Result<&str, ConditionError> {
            match map.get(key) {
                None => Err(ConditionError::new(
                    at,
                    format!(
                        "missing `{key}`; a condition is a mapping with `path` and `op`, or with one of `all`, `any`, `not`"
                    ),
                )),
                Some(Value::String(s)) => Ok(s),
                Some(other) => Err(ConditionError::new(
                    join(at, key),
                    format!("`{key}` must be a string; found {}", kind(other)),
                )),
            }
        };
        let path_text = text("path")?;
        let op = text("op")?;
        let path = Path::parse(path_text, &Root::ALL)
            .map_err(|m| ConditionError::new(join(at, "path"), m))?;
        if path.segments().is_empty() {
            return Err(ConditionError::new(
                join(at, "path"),
                format!(
                    "`{path_text}` names a whole root; a condition tests a field such as `{path_text}.status`"
                ),
            ));
        }
        let test = Test::build(op, map.get("value"), at)?;
        Ok(Atom { path, test })
    }
}

impl Condition {
    /// Compiles an `if:` value (YAML already converted to JSON).
    pub fn compile(value: &Value) -> Result<Condition, ConditionError> {
        let node = Compiler { nodes: 0 }.node(value, "", 1)?;
        Ok(Condition { node })
    }

    /// Evaluates the condition. A missing path makes `exists` false and is
    /// compared as `null` by every other operator (spec §3.6), so `eq` with a
    /// non-null value and all typed operators are false on it.
    pub fn eval(&self, roots: &Roots<'_>) -> bool {
        eval(&self.node, roots)
    }

    /// Every path the condition reads, in order of appearance, without repeats.
    pub fn paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect_paths(&self.node, &mut out);
        out
    }

    /// The condition in its canonical authored shape (for config views).
    pub fn to_value(&self) -> Value {
        node_value(&self.node)
    }
}

fn eval(node: &Node, roots: &Roots<'_>) -> bool {
    match node {
        Node::Atom(atom) => match (&atom.test, atom.path.resolve(roots)) {
            (Test::Exists, found) => found.is_some(),
            (test, Some(found)) => test.check(found),
            (test, None) => test.check(&Value::Null),
        },
        Node::All(children) => children.iter().all(|c| eval(c, roots)),
        Node::Any(children) => children.iter().any(|c| eval(c, roots)),
        Node::Not(child) => !eval(child, roots),
    }
}

fn collect_paths(node: &Node, out: &mut Vec<String>) {
    match node {
        Node::Atom(atom) => {
            let path = atom.path.to_string();
            if !out.contains(&path) {
                out.push(path);
            }
        }
        Node::All(children) | Node::Any(children) => {
            children.iter().for_each(|c| collect_paths(c, out));
        }
        Node::Not(child) => collect_paths(child, out),
    }
}

fn node_value(node: &Node) -> Value {
    let mut map = Map::new();
    match node {
        Node::Atom(atom) => {
            map.insert("path".into(), Value::String(atom.path.to_string()));
            map.insert("op".into(), Value::String(atom.test.op().into()));
            if let Some(value) = atom.test.operand() {
                map.insert("value".into(), value);
            }
        }
        Node::All(children) => {
            map.insert("all".into(), children.iter().map(node_value).collect());
        }
        Node::Any(children) => {
            map.insert("any".into(), children.iter().map(node_value).collect());
        }
        Node::Not(child) => {
            map.insert("not".into(), node_value(child));
        }
    }
    Value::Object(map)
}

/// Compact one-line form for graph labels and logs:
/// `all(payload.kind eq "video", payload.duration_sec gte 30)`.
impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_node(&self.node, f)
    }
}

fn write_node(node: &Node, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let (name, children): (&str, &[Node]) = match node {
        Node::Atom(atom) => {
            write!(f, "{} {}", atom.path, atom.test.op())?;
            if let Some(value) = atom.test.operand() {
                write!(f, " {value}")?;
            }
            return Ok(());
        }
        Node::All(children) => ("all", children),
        Node::Any(children) => ("any", children),
        Node::Not(child) => ("not", std::slice::from_ref(child.as_ref())),
    };
    write!(f, "{name}(")?;
    for (i, child) in children.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_node(child, f)?;
    }
    f.write_str(")")
}
