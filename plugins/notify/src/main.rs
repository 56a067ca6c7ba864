//! `notify`: posts one message to an incoming webhook in Discord, Slack, ntfy,
//! Gotify or generic JSON format; emits `notify.sent`.

use std::process::ExitCode;
use std::time::Duration;

use ductile_plugin::{Request, Response, Stopwatch, run};
use egress::{Cidr, Policy};
use serde_json::{Map, Value, json};

fn main() -> ExitCode {
    run(handle)
}

/// Payload fields a message is taken from, in order.
const MESSAGE_FIELDS: [&str; 5] = ["message", "content", "result", "text", "title"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Discord,
    Slack,
    Ntfy,
    Gotify,
    Generic,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Discord => "discord",
            Format::Slack => "slack",
            Format::Ntfy => "ntfy",
            Format::Gotify => "gotify",
            Format::Generic => "generic",
        }
    }
}

#[derive(Debug)]
struct Config {
    webhook_url: String,
    format: Format,
    username: Option<String>,
    title: Option<String>,
    priority: Option<i64>,
    message: Option<String>,
    timeout: Duration,
    allow: Vec<Cidr>,
}

fn parse(c: &Value) -> Result<Config, String> {
    let empty = Map::new();
    let m = c.as_object().unwrap_or(&empty);
    let text = |k: &str| match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(v) => Err(format!("config.{k} must be a non-empty string, got {v}")),
    };
    let webhook_url = text("webhook_url")?.ok_or("config.webhook_url is required")?;
    if !(webhook_url.starts_with("https://") || webhook_url.starts_with("http://")) {
        return Err("config.webhook_url must be an http(s) URL".into());
    }
    let format = match text("format")?.as_deref() {
        None | Some("generic") | Some("json") => Format::Generic,
        Some("discord") => Format::Discord,
        Some("slack") => Format::Slack,
        Some("ntfy") => Format::Ntfy,
        Some("gotify") => Format::Gotify,
        Some(f) => {
            return Err(format!(
                "config.format must be discord, slack, ntfy, gotify or generic, got {f}"
            ));
        }
    };
    let priority = match m.get("priority") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or_else(|| format!("config.priority must be an integer, got {v}"))?,
        ),
    };
    let timeout = match m.get("timeout_seconds") {
        None | Some(Value::Null) => Duration::from_secs(15),
        Some(v) => Duration::from_secs_f64(
            v.as_f64()
                .filter(|s| *s > 0.0 && *s <= 300.0)
                .ok_or_else(|| format!("config.timeout_seconds must be in (0, 300], got {v}"))?,
        ),
    };
    let allow = Cidr::allow_list(m.get("egress_allow"))?;
    Ok(Config {
        webhook_url,
        format,
        username: text("default_username")?.or(text("username")?),
        title: text("title")?,
        priority,
        message: text("message")?,
        timeout,
        allow,
    })
}

/// The request for `format`: content type and body.
fn body(cfg: &Config, message: &str, title: Option<&str>) -> (&'static str, String) {
    match cfg.format {
        Format::Discord => {
            // Discord refuses content over 2000 characters.
            let content: String = message.chars().take(2000).collect();
            let mut b = json!({"content": content});
            if let Some(u) = &cfg.username {
                b["username"] = json!(u);
            }
            ("application/json", b.to_string())
        }
        Format::Slack => ("application/json", json!({"text": message}).to_string()),
        Format::Ntfy => ("text/plain; charset=utf-8", message.to_string()),
        Format::Gotify => {
            let mut b = json!({"message": message, "priority": cfg.priority.unwrap_or(5)});
            if let Some(t) = title {
                b["title"] = json!(t);
            }
            ("application/json", b.to_string())
        }
        Format::Generic => {
            let mut b = json!({"message": message});
            if let Some(t) = title {
                b["title"] = json!(t);
            }
            ("application/json", b.to_string())
        }
    }
}

fn handle(req: &Request) -> Response {
    let cfg = match parse(&req.config) {
        Ok(c) => c,
        Err(e) => return Response::permanent(e),
    };
    match req.command.as_str() {
        "poll" | "handle" => {
            let found = MESSAGE_FIELDS.iter().find_map(|k| req.value_text(k));
            let Some(message) = found.or(cfg.message.clone()) else {
                return Response::permanent(format!(
                    "no message: the payload has none of {} and config.message is unset",
                    MESSAGE_FIELDS.join(", ")
                ));
            };
            let title = req.value_text("title").or(cfg.title.clone());
            send(&cfg, &message, title.as_deref())
        }
        "health" => Response::ok(format!(
            "healthy: {} webhook configured (no message sent)",
            cfg.format.as_str()
        )),
        other => Response::unknown_command(other, &["poll", "handle", "health"]),
    }
}

fn send(cfg: &Config, message: &str, title: Option<&str>) -> Response {
    let policy = Policy {
        allow: cfg.allow.clone(),
        ..Policy::default()
    };
    let agent = policy.agent(cfg.timeout, 0);
    let (content_type, text) = body(cfg, message, title);
    let mut request = agent
        .post(&cfg.webhook_url)
        .set("Content-Type", content_type);
    if cfg.format == Format::Ntfy {
        if let Some(t) = title {
            request = request.set("Title", t);
        }
        if let Some(p) = cfg.priority {
            request = request.set("Priority", &p.to_string());
        }
    }
    let sw = Stopwatch::start("notify.post");
    match request.send_string(&text) {
        Ok(r) => {
            let status = r.status();
            Response::ok(format!(
                "{} webhook answered {status}",
                cfg.format.as_str()
            ))
            .event(
                "notify.sent",
                json!({"format": cfg.format.as_str(), "status": status, "length": message.chars().count()}),
            )
            .span(sw.ok().bytes(text.len() as u64))
        }
        Err(ureq::Error::Status(code, r)) => {
            let msg = format!(
                "{} webhook answered {code} {}",
                cfg.format.as_str(),
                r.status_text()
            );
            // A 4xx (bad URL, revoked token, malformed body) will not heal by itself.
            if (400..500).contains(&code) && code != 429 {
                Response::permanent(msg)
            } else {
                Response::error(msg)
            }
            .span(sw.err())
        }
        Err(ureq::Error::Transport(t)) => match policy.refusal() {
            Some(refused) => Response::permanent(refused),
            None => Response::error(format!("{} webhook failed: {t}", cfg.format.as_str())),
        }
        .span(sw.err()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(v: Value) -> Config {
        let mut c = json!({"webhook_url": "https://hooks.example/x"});
        for (k, x) in v.as_object().unwrap() {
            c[k] = x.clone();
        }
        parse(&c).unwrap()
    }

    #[test]
    fn each_format_shapes_its_body() {
        let (t, b) = body(
            &cfg(json!({"format": "discord", "default_username": "Ductile"})),
            "hi",
            None,
        );
        assert_eq!(
            (t, b.as_str()),
            (
                "application/json",
                r#"{"content":"hi","username":"Ductile"}"#
            )
        );
        let (_, b) = body(&cfg(json!({"format": "slack"})), "hi", None);
        assert_eq!(b, r#"{"text":"hi"}"#);
        let (t, b) = body(&cfg(json!({"format": "ntfy"})), "hi", Some("T"));
        assert_eq!((t, b.as_str()), ("text/plain; charset=utf-8", "hi"));
        let (_, b) = body(
            &cfg(json!({"format": "gotify", "priority": 8})),
            "hi",
            Some("T"),
        );
        assert_eq!(b, r#"{"message":"hi","priority":8,"title":"T"}"#);
        let (_, b) = body(&cfg(json!({})), "hi", Some("T"));
        assert_eq!(b, r#"{"message":"hi","title":"T"}"#);
        let long = "x".repeat(2500);
        let (_, b) = body(&cfg(json!({"format": "discord"})), &long, None);
        assert_eq!(
            serde_json::from_str::<Value>(&b).unwrap()["content"]
                .as_str()
                .unwrap()
                .len(),
            2000
        );
    }

    #[test]
    fn config_errors_and_the_message_order() {
        assert!(parse(&json!({})).unwrap_err().contains("webhook_url"));
        assert!(parse(&json!({"webhook_url": "ftp://x"})).is_err());
        assert!(parse(&json!({"webhook_url": "https://x", "format": "teams"})).is_err());
        let req = |payload: Value| {
            Request::from_slice(
                json!({"protocol": 2, "command": "handle",
                       "config": {"webhook_url": "http://127.0.0.1:9/hook"},
                       "event": {"type": "a.b", "payload": payload}})
                .to_string()
                .as_bytes(),
            )
            .unwrap()
        };
        let r = handle(&req(json!({})));
        assert!(r.error_message().unwrap().contains("no message"));
        // Loopback without an allow: refused before connecting, permanently.
        let r = handle(&req(json!({"result": "done"})));
        assert!(
            !r.retry() && r.error_message().unwrap().contains("egress refused"),
            "{r:?}"
        );
    }
}
