//! `fetch`: one HTTP(S) GET or POST per job, with a timeout, a byte cap, a
//! redirect limit and an egress policy (private, loopback and link-local
//! addresses refused unless allow-listed); emits `fetch.fetched`.

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use ductile_plugin::{Request, Response, Stopwatch, run};
use serde_json::{Map, Value, json};

use egress::{Cidr, Policy};

fn main() -> ExitCode {
    run(handle)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Text,
    Raw,
}

#[derive(Debug)]
struct Config {
    url: Option<String>,
    method: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
    timeout: Duration,
    max_bytes: u64,
    max_redirects: u32,
    output: Output,
    allow: Vec<Cidr>,
}

fn parse(c: &Value) -> Result<Config, String> {
    let empty = Map::new();
    let m = c.as_object().unwrap_or(&empty);
    let url = match m.get("url") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(v) => return Err(format!("config.url must be a URL, got {v}")),
    };
    let method = match m
        .get("method")
        .and_then(Value::as_str)
        .map(str::to_ascii_uppercase)
    {
        None => "GET".to_string(),
        Some(s) if s == "GET" || s == "POST" => s,
        Some(s) => return Err(format!("config.method must be GET or POST, got {s}")),
    };
    let headers = match m.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(h)) => h
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(format!("config.headers.{k} must be a string, got {other}")),
            })
            .collect::<Result<_, _>>()?,
        Some(v) => return Err(format!("config.headers must be a mapping, got {v}")),
    };
    let body = match m.get("body") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => Some(v.to_string()),
    };
    let num = |k: &str, default: f64, max: f64| -> Result<f64, String> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|n| *n >= 0.0 && *n <= max)
                .ok_or_else(|| format!("config.{k} must be a number in 0..={max}, got {v}")),
        }
    };
    let timeout = Duration::from_secs_f64(num("timeout_seconds", 30.0, 3600.0)?.max(0.001));
    let max_bytes = num("max_bytes", 5.0 * 1024.0 * 1024.0, 256.0 * 1024.0 * 1024.0)? as u64;
    let max_redirects = num("max_redirects", 5.0, 20.0)? as u32;
    let output = match m.get("output").and_then(Value::as_str) {
        None | Some("text") => Output::Text,
        Some("raw") => Output::Raw,
        Some(o) => return Err(format!("config.output must be text or raw, got {o}")),
    };
    let allow = Cidr::allow_list(m.get("egress_allow"))?;
    Ok(Config {
        url,
        method,
        headers,
        body,
        timeout,
        max_bytes,
        max_redirects,
        output,
        allow,
    })
}

fn handle(req: &Request) -> Response {
    let cfg = match parse(&req.config) {
        Ok(c) => c,
        Err(e) => return Response::permanent(e),
    };
    match req.command.as_str() {
        "poll" | "handle" => {
            let url = req
                .value_text("url")
                .filter(|_| req.command == "handle")
                .or(cfg.url.clone());
            match url {
                Some(u) => fetch(&cfg, &u),
                None => Response::permanent("no URL: set config.url or pass `url` in the payload"),
            }
        }
        "health" => Response::ok(format!(
            "healthy: {} {}, {} egress exceptions (no request sent)",
            cfg.method,
            cfg.url.as_deref().unwrap_or("(url from the payload)"),
            cfg.allow.len()
        )),
        other => Response::unknown_command(other, &["poll", "handle", "health"]),
    }
}

fn fetch(cfg: &Config, url: &str) -> Response {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Response::permanent(format!("{url} is not an http(s) URL"));
    }
    let policy = Policy {
        allow: cfg.allow.clone(),
        ..Policy::default()
    };
    // Every connection, redirects included, resolves through the policy.
    let agent = policy.agent(cfg.timeout, cfg.max_redirects);
    let mut request = agent.request(&cfg.method, url);
    for (k, v) in &cfg.headers {
        request = request.set(k, v);
    }
    let sw = Stopwatch::start("fetch.http_request");
    let result = match &cfg.body {
        Some(b) if cfg.method == "POST" => request.send_string(b),
        _ => request.call(),
    };
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            let msg = format!("{} {url} answered {code} {}", cfg.method, r.status_text());
            // A client error will not change on retry; a server error may.
            return if (400..500).contains(&code) && code != 429 {
                Response::permanent(msg)
            } else {
                Response::error(msg)
            }
            .span(sw.err());
        }
        Err(ureq::Error::Transport(t)) => {
            return match policy.refusal() {
                Some(refused) => Response::permanent(refused),
                None => Response::error(format!("{} {url} failed: {t}", cfg.method)),
            }
            .span(sw.err());
        }
    };
    let span = sw.ok();
    let status = response.status();
    let final_url = response.get_url().to_string();
    let content_type = response.content_type().to_string();
    let read = Stopwatch::start("fetch.body_read");
    let mut body = Vec::new();
    if let Err(e) = response
        .into_reader()
        .take(cfg.max_bytes + 1)
        .read_to_end(&mut body)
    {
        return Response::error(format!("reading the body of {url} failed: {e}")).span(span);
    }
    if body.len() as u64 > cfg.max_bytes {
        return Response::permanent(format!(
            "{url}: body larger than max_bytes ({})",
            cfg.max_bytes
        ))
        .span(span);
    }
    let read_span = read.ok().bytes(body.len() as u64);
    let mut payload = json!({
        "url": url,
        "final_url": final_url,
        "status": status,
        "content_type": content_type,
        "size": body.len(),
        "source_url": final_url,
        "source_type": "web",
    });
    match cfg.output {
        Output::Text => {
            payload["text"] = Value::String(String::from_utf8_lossy(&body).into_owned())
        }
        Output::Raw => {
            payload["body_base64"] =
                Value::String(base64::engine::general_purpose::STANDARD.encode(&body))
        }
    }
    Response::ok(format!(
        "{} {final_url}: {status}, {} bytes",
        cfg.method,
        body.len()
    ))
    .event("fetch.fetched", payload)
    .span(span)
    .span(read_span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    /// A one-connection HTTP server on 127.0.0.1 answering `answer`; returns
    /// its base URL.
    fn serve(answers: Vec<String>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for answer in answers {
                let Ok((mut s, _)) = l.accept() else { return };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(answer.as_bytes());
            }
        });
        format!("http://{addr}")
    }

    fn ok_answer(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn allow_loopback(extra: Value) -> Config {
        let mut c = json!({"egress_allow": ["127.0.0.1/32"]});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        parse(&c).unwrap()
    }

    #[test]
    fn loopback_is_refused_unless_allowed() {
        let r = fetch(&parse(&json!({})).unwrap(), "http://127.0.0.1:9/");
        assert!(!r.is_ok() && !r.retry(), "{r:?}");
        assert!(
            r.error_message().unwrap().contains("egress refused"),
            "{r:?}"
        );
        let base = serve(vec![ok_answer("hello")]);
        let r = fetch(&allow_loopback(json!({})), &format!("{base}/x"));
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(r.events[0].payload["text"], "hello");
        assert_eq!(r.events[0].payload["status"], 200);
    }

    #[test]
    fn raw_output_caps_and_status_classes() {
        let base = serve(vec![
            ok_answer("\u{1}\u{2}"),
            ok_answer("0123456789"),
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
            "HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
        ]);
        let r = fetch(&allow_loopback(json!({"output": "raw"})), &base);
        assert_eq!(r.events[0].payload["body_base64"], "AQI=");
        let r = fetch(&allow_loopback(json!({"max_bytes": 4})), &base);
        assert!(r.error_message().unwrap().contains("max_bytes") && !r.retry());
        let r = fetch(&allow_loopback(json!({})), &base);
        assert!(!r.retry(), "404 is permanent: {r:?}");
        let r = fetch(&allow_loopback(json!({})), &base);
        assert!(!r.is_ok() && r.retry(), "503 is retried: {r:?}");
    }

    #[test]
    fn a_redirect_to_a_refused_address_is_stopped_before_connecting() {
        let base = serve(vec![
            "HTTP/1.1 302 Found\r\nLocation: http://10.255.255.1/secret\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
        ]);
        let r = fetch(&allow_loopback(json!({"timeout_seconds": 5})), &base);
        assert!(!r.is_ok() && !r.retry(), "{r:?}");
        assert!(
            r.error_message()
                .unwrap()
                .contains("10.255.255.1 (private)"),
            "{r:?}"
        );
    }

    #[test]
    fn config_and_url_errors_are_permanent() {
        assert!(parse(&json!({"method": "DELETE"})).is_err());
        assert!(parse(&json!({"egress_allow": ["10.0.0.0/99"]})).is_err());
        let r = fetch(&parse(&json!({})).unwrap(), "file:///etc/passwd");
        assert!(!r.retry());
    }
}
