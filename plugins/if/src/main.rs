//! `if`: a field classifier. Evaluates an ordered list of checks against one
//! payload field and emits the first matching check's event type with the
//! payload unchanged; no match and no `default` is a permanent error.

use std::process::ExitCode;

use ductile_plugin::{Request, Response, run};
use regex::Regex;
use serde_json::{Map, Value};

fn main() -> ExitCode {
    run(handle)
}

fn handle(req: &Request) -> Response {
    match req.command.as_str() {
        "handle" => classify_request(req),
        "health" => match Rules::from_config(&req.config) {
            Ok(rules) => Response::ok(format!(
                "healthy: {} checks on `{}`",
                rules.checks.len(),
                rules.field
            )),
            Err(e) => Response::permanent(e),
        },
        other => Response::unknown_command(other, &["handle", "health"]),
    }
}

/// How one check compares the field's text.
#[derive(Debug)]
enum Test {
    Contains(String),
    StartsWith(String),
    EndsWith(String),
    Equals(String),
    /// Anchored at both ends: a full match, as the reference's `re.fullmatch`.
    Regex(Regex, String),
    Default,
}

#[derive(Debug)]
struct Check {
    test: Test,
    emit: String,
    case_sensitive: bool,
}

impl Check {
    fn matches(&self, text: &str) -> bool {
        let fold = |s: &str| {
            if self.case_sensitive {
                s.to_string()
            } else {
                s.to_lowercase()
            }
        };
        match &self.test {
            Test::Contains(n) => fold(text).contains(&fold(n)),
            Test::StartsWith(n) => fold(text).starts_with(&fold(n)),
            Test::EndsWith(n) => fold(text).ends_with(&fold(n)),
            Test::Equals(n) => fold(text) == fold(n),
            Test::Regex(re, _) => re.is_match(text),
            Test::Default => true,
        }
    }

    fn describe(&self) -> String {
        match &self.test {
            Test::Contains(n) => format!("contains {n:?}"),
            Test::StartsWith(n) => format!("startswith {n:?}"),
            Test::EndsWith(n) => format!("endswith {n:?}"),
            Test::Equals(n) => format!("equals {n:?}"),
            Test::Regex(_, src) => format!("regex {src:?}"),
            Test::Default => "default".to_string(),
        }
    }
}

/// The validated config.
#[derive(Debug)]
struct Rules {
    field: String,
    checks: Vec<Check>,
}

const OPERATORS: [&str; 6] = [
    "contains",
    "startswith",
    "endswith",
    "equals",
    "regex",
    "default",
];

impl Rules {
    fn from_config(config: &Value) -> Result<Rules, String> {
        let field = match config.get("field") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(v) => return Err(format!("config.field must be a non-empty string, got {v}")),
            None => return Err("config.field is required (the payload field to classify)".into()),
        };
        let all_case_sensitive = match config.get("case_sensitive") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(format!("config.case_sensitive must be a boolean, got {v}")),
        };
        let items = match config.get("checks") {
            Some(Value::Array(items)) if !items.is_empty() => items,
            Some(Value::Array(_)) => return Err("config.checks is empty".into()),
            Some(v) => return Err(format!("config.checks must be a list, got {v}")),
            None => return Err("config.checks is required (an ordered list of checks)".into()),
        };
        let checks = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_object()
                    .ok_or_else(|| format!("config.checks[{i}] must be a mapping, got {item}"))
                    .and_then(|m| check(m, all_case_sensitive))
                    .map_err(|e| format!("config.checks[{i}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Rules { field, checks })
    }

    /// The first matching check, by index.
    fn first_match(&self, text: &str) -> Option<(usize, &Check)> {
        self.checks
            .iter()
            .enumerate()
            .find(|(_, c)| c.matches(text))
    }
}

fn check(m: &Map<String, Value>, all_case_sensitive: bool) -> Result<Check, String> {
    let ops: Vec<&str> = OPERATORS
        .iter()
        .copied()
        .filter(|op| m.contains_key(*op))
        .collect();
    let op = match ops.as_slice() {
        [op] => *op,
        [] => {
            return Err(format!(
                "names no check (one of {} is required)",
                OPERATORS.join(", ")
            ));
        }
        many => return Err(format!("names several checks ({})", many.join(", "))),
    };
    if let Some(k) = m
        .keys()
        .find(|k| !OPERATORS.contains(&k.as_str()) && *k != "emit" && *k != "case_sensitive")
    {
        return Err(format!("unknown key `{k}`"));
    }
    let text = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("`{op}` must be a string, got {other}")),
    };
    let operand = &m[op];
    let emit_of = |v: Option<&Value>| match v {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(v) => Err(format!("`emit` must be a non-empty event type, got {v}")),
        None => Err("`emit` is required (the event type to emit on a match)".to_string()),
    };
    let (test, emit) = match op {
        "default" => match operand {
            // `default: text.received` names the event itself; `default: true` + `emit` also works.
            Value::String(s) if !s.trim().is_empty() && !m.contains_key("emit") => {
                (Test::Default, s.clone())
            }
            _ => (Test::Default, emit_of(m.get("emit"))?),
        },
        "regex" => {
            let src = text(operand)?;
            let re = Regex::new(&format!("^(?:{src})$"))
                .map_err(|e| format!("`regex` does not compile: {e}"))?;
            (Test::Regex(re, src), emit_of(m.get("emit"))?)
        }
        _ => {
            let n = text(operand)?;
            let t = match op {
                "contains" => Test::Contains(n),
                "startswith" => Test::StartsWith(n),
                "endswith" => Test::EndsWith(n),
                _ => Test::Equals(n),
            };
            (t, emit_of(m.get("emit"))?)
        }
    };
    let case_sensitive = match m.get("case_sensitive") {
        None | Some(Value::Null) => all_case_sensitive,
        Some(Value::Bool(b)) => *b,
        Some(v) => return Err(format!("`case_sensitive` must be a boolean, got {v}")),
    };
    Ok(Check {
        test,
        emit,
        case_sensitive,
    })
}

/// The field's value as text: a dotted path into the payload (then the
/// baggage); missing is the empty string; objects and arrays as JSON text.
fn field_text(payload: Option<&Map<String, Value>>, context: &Value, field: &str) -> String {
    let lookup = |root: &Value| -> Option<Value> {
        let mut at = root;
        for part in field.split('.') {
            at = at.get(part)?;
        }
        Some(at.clone())
    };
    let payload = payload.map(|p| Value::Object(p.clone()));
    let found = payload
        .as_ref()
        .and_then(lookup)
        .filter(|v| !v.is_null())
        .or_else(|| lookup(context).filter(|v| !v.is_null()));
    match found {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
    }
}

fn classify_request(req: &Request) -> Response {
    let rules = match Rules::from_config(&req.config) {
        Ok(r) => r,
        Err(e) => return Response::permanent(e),
    };
    let text = field_text(req.payload(), &req.context, &rules.field);
    let payload = req
        .payload()
        .map(|p| Value::Object(p.clone()))
        .unwrap_or_else(|| Value::Object(Map::new()));
    match rules.first_match(&text) {
        Some((i, c)) => Response::ok(format!(
            "checks[{i}] ({}) matched `{}`: emitted {}",
            c.describe(),
            rules.field,
            c.emit
        ))
        .event(c.emit.clone(), payload),
        None => Response::permanent(format!(
            "no check matched `{}` ({} checks, no default)",
            rules.field,
            rules.checks.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(checks: Value) -> Rules {
        Rules::from_config(&json!({"field": "text", "checks": checks})).unwrap()
    }

    fn request(config: Value, payload: Value) -> Request {
        Request::from_slice(
            json!({"protocol": 2, "command": "handle", "config": config,
                   "event": {"type": "in.came", "payload": payload}})
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    fn youtube() -> Value {
        json!([
            {"contains": "youtu.be", "emit": "youtube.url.detected"},
            {"contains": "youtube.com", "emit": "youtube.url.detected"},
            {"startswith": "http", "emit": "web.url.detected"},
            {"default": "text.received"}
        ])
    }

    #[test]
    fn first_match_wins_in_order() {
        let r = rules(youtube());
        let hit = |t: &str| r.first_match(t).map(|(_, c)| c.emit.as_str());
        assert_eq!(
            hit("https://www.YouTube.com/watch?v=1"),
            Some("youtube.url.detected")
        );
        assert_eq!(hit("https://example.com"), Some("web.url.detected"));
        assert_eq!(hit("HTTP://X"), Some("web.url.detected"));
        assert_eq!(hit("plain words"), Some("text.received"));
        assert_eq!(hit(""), Some("text.received"));
    }

    #[test]
    fn comparisons_fold_case_unless_asked_not_to() {
        let r = rules(json!([
            {"endswith": ".PDF", "emit": "doc.pdf"},
            {"equals": "Yes", "emit": "answer.yes", "case_sensitive": true},
        ]));
        assert_eq!(r.first_match("report.pdf").map(|m| m.0), Some(0));
        assert_eq!(r.first_match("Yes").map(|m| m.0), Some(1));
        assert_eq!(r.first_match("yes").map(|m| m.0), None);
        let strict = Rules::from_config(&json!({"field": "f", "case_sensitive": true,
            "checks": [{"contains": "A", "emit": "x.y"}]}))
        .unwrap();
        assert!(strict.first_match("a").is_none());
        assert!(strict.first_match("A").is_some());
    }

    #[test]
    fn regex_must_match_the_whole_value() {
        let r = rules(json!([{"regex": "[a-z]+\\d", "emit": "code.seen"}]));
        assert!(r.first_match("abc1").is_some());
        assert!(r.first_match("abc1 and more").is_none());
        assert!(r.first_match("xabc1").is_some());
        assert!(r.first_match("ABC1").is_none(), "regex is case-sensitive");
        let alt = rules(json!([{"regex": "a|b", "emit": "x.y"}]));
        assert!(
            alt.first_match("ab").is_none(),
            "alternation stays anchored"
        );
        assert!(alt.first_match("b").is_some());
    }

    #[test]
    fn bad_configs_are_refused_with_their_place() {
        let err = |c: Value| Rules::from_config(&c).unwrap_err();
        assert!(err(json!({"checks": []})).contains("config.field is required"));
        assert!(err(json!({"field": "t", "checks": []})).contains("empty"));
        assert!(err(json!({"field": "t", "checks": [{"emit": "a.b"}]})).contains("checks[0]"));
        assert!(
            err(json!({"field": "t", "checks": [{"contains": "x"}]}))
                .contains("`emit` is required")
        );
        assert!(
            err(json!({"field": "t", "checks": [{"regex": "(", "emit": "a.b"}]}))
                .contains("does not compile")
        );
        assert!(
            err(json!({"field": "t", "checks": [{"contains": "x", "equals": "y", "emit": "a"}]}))
                .contains("several")
        );
        assert!(
            err(json!({"field": "t", "checks": [{"contans": "x", "emit": "a"}]}))
                .contains("names no check")
        );
    }

    #[test]
    fn handle_emits_the_payload_unchanged() {
        let payload = json!({"text": "see https://youtu.be/x", "n": 1});
        let resp = handle(&request(
            json!({"field": "text", "checks": youtube()}),
            payload.clone(),
        ));
        assert!(resp.is_ok(), "{resp:?}");
        assert_eq!(resp.events.len(), 1);
        assert_eq!(resp.events[0].event_type, "youtube.url.detected");
        assert_eq!(resp.events[0].payload, payload);
        assert!(resp.state_updates.is_none());
    }

    #[test]
    fn no_match_without_default_is_permanent() {
        let resp = handle(&request(
            json!({"field": "text", "checks": [{"contains": "zzz", "emit": "a.b"}]}),
            json!({}),
        ));
        assert!(!resp.is_ok());
        assert!(!resp.retry());
        assert!(resp.error_message().unwrap().contains("no check matched"));
    }

    #[test]
    fn missing_fields_are_empty_and_paths_reach_nested_and_baggage() {
        assert_eq!(field_text(None, &json!({}), "text"), "");
        let p = json!({"a": {"b": 7}, "s": "x"});
        assert_eq!(field_text(p.as_object(), &json!({}), "a.b"), "7");
        assert_eq!(field_text(p.as_object(), &json!({"t": "ctx"}), "t"), "ctx");
        assert_eq!(field_text(p.as_object(), &json!({"s": "ctx"}), "s"), "x");
    }

    #[test]
    fn health_checks_config_and_emits_no_state() {
        let mut req = request(json!({"field": "text", "checks": youtube()}), json!({}));
        req.command = "health".into();
        let resp = handle(&req);
        assert!(resp.is_ok() && resp.state_updates.is_none() && resp.events.is_empty());
        req.config = json!({});
        assert!(!handle(&req).retry());
        req.command = "poll".into();
        assert!(
            handle(&req)
                .error_message()
                .unwrap()
                .contains("unknown command")
        );
    }
}
