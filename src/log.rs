//! Log lines: one JSON object per line (`timestamp, level, component, plugin?,
//! job_id?, message`, then any other key-values), through `log` + `env_logger`.
//! The daemon logs to stdout (journald picks it up); CLI verbs log to stderr so
//! their `--json` results on stdout stay machine-readable.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use log::LevelFilter;
use log::kv::{Key, Value, VisitSource};

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Standard output (the daemon).
    Stdout,
    /// Standard error (CLI verbs).
    Stderr,
}

/// Where the log filter comes from, strongest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `-v`: debug, whatever else is set.
    Verbose,
    /// `DUCTILE_LOG`, an env_logger filter (`debug`, `ductile::dispatch=trace`).
    Env(String),
    /// Nothing chose: this level, which `service.log_level` may replace.
    Default(LevelFilter),
}

/// Whether the level may still follow `service.log_level` (neither `-v` nor
/// `DUCTILE_LOG` chose it).
static FOLLOWS_CONFIG: AtomicBool = AtomicBool::new(false);

/// The filter for this process: `-v` forces debug; else `DUCTILE_LOG` when set
/// and not empty; else `fallback`.
pub fn resolve(verbose: bool, env: Option<String>, fallback: LevelFilter) -> Filter {
    match env.filter(|spec| !spec.trim().is_empty()) {
        _ if verbose => Filter::Verbose,
        Some(spec) => Filter::Env(spec),
        None => Filter::Default(fallback),
    }
}

/// Installs the JSON logger with the filter [`resolve`] picks from `verbose`,
/// `DUCTILE_LOG` and `fallback`. Safe to call twice (the second call is ignored).
pub fn init(target: Target, verbose: bool, fallback: LevelFilter) {
    let filter = resolve(verbose, std::env::var("DUCTILE_LOG").ok(), fallback);
    let mut builder = env_logger::Builder::new();
    match &filter {
        Filter::Verbose => {
            builder.parse_filters("debug");
        }
        Filter::Env(spec) => {
            builder.parse_filters(spec);
        }
        // Everything passes the logger's own filter; the global maximum (set
        // below, and later by `set_level`) decides, so it can change at runtime.
        Filter::Default(_) => {
            builder.filter_level(LevelFilter::Trace);
        }
    }
    builder.target(match target {
        Target::Stdout => env_logger::Target::Stdout,
        Target::Stderr => env_logger::Target::Stderr,
    });
    builder.format(|buf, record| {
        let line = render(record);
        buf.write_all(line.as_bytes())
    });
    if builder.try_init().is_ok() {
        if let Filter::Default(level) = filter {
            log::set_max_level(level);
            FOLLOWS_CONFIG.store(true, Ordering::Relaxed);
        }
    }
}

/// Applies `service.log_level` (trace, debug, info, warn or error), unless `-v`
/// or `DUCTILE_LOG` chose the level. The daemon calls it after every load.
pub fn set_level(level: &str) {
    if let (true, Ok(level)) = (FOLLOWS_CONFIG.load(Ordering::Relaxed), level.parse()) {
        log::set_max_level(level);
    }
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
    fn verbose_beats_the_environment_which_beats_the_config() {
        let env = || Some("ductile::dispatch=trace".to_string());
        assert_eq!(resolve(true, env(), LevelFilter::Info), Filter::Verbose);
        assert_eq!(
            resolve(false, env(), LevelFilter::Info),
            Filter::Env("ductile::dispatch=trace".to_string())
        );
        assert_eq!(
            resolve(false, None, LevelFilter::Info),
            Filter::Default(LevelFilter::Info)
        );
        assert_eq!(
            resolve(false, Some(" ".to_string()), LevelFilter::Warn),
            Filter::Default(LevelFilter::Warn),
            "an empty DUCTILE_LOG is as good as unset"
        );
    }

    #[test]
    fn config_levels_parse_as_log_levels() {
        for (text, level) in [
            ("trace", LevelFilter::Trace),
            ("debug", LevelFilter::Debug),
            ("info", LevelFilter::Info),
            ("warn", LevelFilter::Warn),
            ("error", LevelFilter::Error),
        ] {
            assert_eq!(text.parse::<LevelFilter>(), Ok(level));
        }
    }

    #[test]
    fn component_is_the_first_module_segment() {
        assert_eq!(component("ductile::store::queue"), "store");
        assert_eq!(component("http"), "http");
    }
}
