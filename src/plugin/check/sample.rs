//! Generated inputs and naming conventions: a sample payload from a command's
//! `input_schema`, and the `<plugin>.<past_tense_verb>` rule for event types.

use serde_json::{Map, Value, json};

/// Deepest schema nesting followed when building a sample; deeper parts are null.
const MAX_SAMPLE_DEPTH: usize = 16;

/// A value that satisfies the common parts of `schema` (`type`, `properties`,
/// `items`, `enum`, `const`, `default`, `examples`, string `format`s).
pub(super) fn sample(schema: &Value) -> Value {
    sample_at(schema, 0)
}

fn sample_at(schema: &Value, depth: usize) -> Value {
    let Value::Object(s) = schema else {
        return Value::Null;
    };
    if depth > MAX_SAMPLE_DEPTH {
        return Value::Null;
    }
    for key in ["const", "default"] {
        if let Some(v) = s.get(key) {
            return v.clone();
        }
    }
    for key in ["enum", "examples"] {
        if let Some(v) = s.get(key).and_then(Value::as_array).and_then(|a| a.first()) {
            return v.clone();
        }
    }
    if let Some(first) = ["oneOf", "anyOf", "allOf"]
        .iter()
        .find_map(|k| s.get(*k).and_then(Value::as_array).and_then(|a| a.first()))
    {
        return sample_at(first, depth + 1);
    }
    let kind = match s.get("type") {
        Some(Value::String(t)) => t.as_str(),
        // The first non-null type of a list.
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if s.contains_key("properties") => "object",
        _ => "string",
    };
    match kind {
        "object" => {
            let mut out = Map::new();
            if let Some(Value::Object(props)) = s.get("properties") {
                for (name, sub) in props {
                    out.insert(name.clone(), sample_at(sub, depth + 1));
                }
            }
            Value::Object(out)
        }
        "array" => match s.get("items") {
            Some(items) => json!([sample_at(items, depth + 1)]),
            None => json!([]),
        },
        "integer" => json!(s.get("minimum").and_then(Value::as_i64).unwrap_or(1)),
        "number" => json!(s.get("minimum").and_then(Value::as_f64).unwrap_or(1.5)),
        "boolean" => json!(true),
        "null" => Value::Null,
        _ => json!(match s.get("format").and_then(Value::as_str) {
            Some("email") => "user@example.com",
            Some("uri" | "url") => "https://example.com/",
            Some("date-time") => "2026-01-01T00:00:00Z",
            Some("date") => "2026-01-01",
            _ => "example",
        }),
    }
}

/// Irregular past participles and past tenses accepted as event verbs.
const IRREGULAR: &[&str] = &[
    "begun",
    "bound",
    "broken",
    "brought",
    "built",
    "bought",
    "caught",
    "chosen",
    "cut",
    "done",
    "drawn",
    "driven",
    "fed",
    "felt",
    "found",
    "forgotten",
    "frozen",
    "given",
    "gone",
    "got",
    "grown",
    "heard",
    "held",
    "hidden",
    "hit",
    "kept",
    "known",
    "laid",
    "led",
    "left",
    "lost",
    "made",
    "meant",
    "met",
    "paid",
    "put",
    "read",
    "ridden",
    "risen",
    "run",
    "said",
    "seen",
    "sent",
    "set",
    "shown",
    "shut",
    "sold",
    "sought",
    "spent",
    "split",
    "spoken",
    "spread",
    "stood",
    "struck",
    "swept",
    "taken",
    "taught",
    "thrown",
    "told",
    "thought",
    "understood",
    "woken",
    "won",
    "worn",
    "written",
    "wound",
];

/// Why `event` does not read as `<plugin>.<past_tense_verb>`, if it does not.
pub(super) fn event_name_problem(plugin: &str, event: &str) -> Option<String> {
    let Some(rest) = event.strip_prefix(plugin).and_then(|r| r.strip_prefix('.')) else {
        return Some(format!("it does not start with `{plugin}.`"));
    };
    let verb = rest.rsplit('.').next().unwrap_or(rest);
    if verb.is_empty() {
        return Some("it has no verb after the plugin name".to_string());
    }
    if verb.ends_with("ed") || IRREGULAR.contains(&verb) {
        return None;
    }
    Some(format!("`{verb}` is not a past-tense verb"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_follow_the_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "url": {"type": "string", "format": "uri"},
                "depth": {"type": "integer", "minimum": 2},
                "mode": {"enum": ["fast", "slow"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "opt": {"type": ["null", "boolean"]},
            }
        });
        assert_eq!(
            sample(&schema),
            json!({"url": "https://example.com/", "depth": 2, "mode": "fast", "tags": ["example"], "opt": true})
        );
        assert_eq!(
            sample(&json!({"properties": {"a": {}}})),
            json!({"a": "example"})
        );
    }

    #[test]
    fn event_names_want_a_past_tense_verb() {
        assert_eq!(event_name_problem("fetch", "fetch.completed"), None);
        assert_eq!(
            event_name_problem("file_handler", "file_handler.written"),
            None
        );
        assert_eq!(event_name_problem("yt", "yt.url.detected"), None);
        assert_eq!(
            event_name_problem("echo", "echo.poll"),
            Some("`poll` is not a past-tense verb".to_string())
        );
        assert_eq!(
            event_name_problem("echo", "other.done"),
            Some("it does not start with `echo.`".to_string())
        );
    }
}
