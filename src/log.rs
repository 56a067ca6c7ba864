//! Log lines: one JSON object per line (`timestamp, level, component, plugin?,
//! job_id?, message`, then any other key-values), through `log` + `env_logger`.
//! The daemon logs to stdout (journald picks it up); CLI verbs log to stderr so
//! their `--json` results on stdout stay machine-readable.

use std::io::Write;

use log::kv::{Key, Value, VisitSource};

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Standard output (the daemon).
    Stdout,
    /// Standard error (CLI verbs).
    Stderr,
}

/// Installs the JSON logger. The filter comes from `DUCTILE_LOG` (default
/// `default_level`); `-v` raises the default to `debug`. Safe to call twice (the
/// second call is ignored).
pub fn init(target: Target, default_level: &str) {
    let filter = std::env::var("DUCTILE_LOG").unwrap_or_else(|_| default_level.to_string());
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(&filter);
    builder.target(match target {
        Target::Stdout => env_logger::Target::Stdout,
        Target::Stderr => env_logger::Target::Stderr,
    });
    builder.format(|buf, record| {
        let line = render(record);
        buf.write_all(line.as_bytes())
    });
    let _ = builder.try_init();
}

/// Renders one record as a JSON line (with the trailing newline).
fn render(record: &log::Record<'_>) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert(
        "timestamp".into(),
        crate::clock::format_ts(chrono::Utc::now()).into(),
    );
    obj.insert(
        "level".into(),
        record.level().as_str().to_ascii_lowercase().into(),
    );
    obj.insert("component".into(), component(record.target()).into());
    let mut kv = Collect(Vec::new());
    let _ = record.key_values().visit(&mut kv);
    // plugin and job_id come first after the fixed fields, as the spec lists them.
    for wanted in ["plugin", "job_id"] {
        if let Some((_, v)) = kv.0.iter().find(|(k, _)| k == wanted) {
            obj.insert(wanted.into(), v.clone());
        }
    }
    obj.insert("message".into(), record.args().to_string().into());
    for (k, v) in kv.0 {
        if k != "plugin" && k != "job_id" && k != "component" {
            obj.insert(k, v);
        } else if k == "component" {
            obj.insert("component".into(), v);
        }
    }
    let mut line = serde_json::Value::Object(obj).to_string();
    line.push('\n');
    line
}

/// `ductile::dispatch::worker` → `dispatch`; an explicit `target:` is kept as is.
fn component(target: &str) -> &str {
    match target.strip_prefix("ductile::") {
        Some(rest) => rest.split("::").next().unwrap_or(rest),
        None => target,
    }
}

struct Collect(Vec<(String, serde_json::Value)>);

impl<'kvs> VisitSource<'kvs> for Collect {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let v = if let Some(n) = value.to_i64() {
            serde_json::Value::from(n)
        } else if let Some(n) = value.to_u64() {
            serde_json::Value::from(n)
        } else if let Some(b) = value.to_bool() {
            serde_json::Value::from(b)
        } else {
            serde_json::Value::from(value.to_string())
        };
        self.0.push((key.as_str().to_string(), v));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_renders_as_one_json_line_with_the_spec_fields() {
        let kvs: &[(&str, &str)] = &[("job_id", "j1"), ("plugin", "echo"), ("extra", "x")];
        let record = log::Record::builder()
            .args(format_args!("job \"done\"\nsecond line"))
            .level(log::Level::Warn)
            .target("ductile::dispatch::worker")
            .key_values(&kvs)
            .build();
        let line = render(&record);
        assert!(line.ends_with('\n'));
        assert_eq!(
            line.matches('\n').count(),
            1,
            "one line even for multi-line messages"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["component"], "dispatch");
        assert_eq!(v["plugin"], "echo");
        assert_eq!(v["job_id"], "j1");
        assert_eq!(v["extra"], "x");
        assert_eq!(v["message"], "job \"done\"\nsecond line");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys[..6],
            [
                "timestamp",
                "level",
                "component",
                "plugin",
                "job_id",
                "message"
            ]
        );
    }

    #[test]
    fn component_is_the_first_module_segment() {
        assert_eq!(component("ductile::store::queue"), "store");
        assert_eq!(component("http"), "http");
    }
}
