//! `ductile api <path>`: a raw client for the running daemon's HTTP API, for
//! scripts and agents. The answer's body goes to stdout as it arrives (so
//! `ductile api /events` streams); the exit code follows the status class.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::{Map, Value};

use super::{Args, CliError, output};

/// Exit code for an answer with `status`: 0 for 2xx, else its class digit.
fn exit_for(status: u16) -> i32 {
    match status {
        200..=299 => 0,
        s => i32::from(s / 100),
    }
}

/// `ductile api <path> [-X METHOD] [-f key=value]... [-b BODY|-b -] [-H 'Name: value']`.
pub fn call(args: &Args, path: &str) -> Result<(), CliError> {
    let base = base_url(args)?;
    let (host, port, prefix) = parse_url(&base)?;
    let fields = args.values("field");
    let body_flag = args.flag("body");
    let method = args
        .flag("method")
        .map(str::to_ascii_uppercase)
        .unwrap_or_else(|| {
            if body_flag.is_some() || !fields.is_empty() {
                "POST".into()
            } else {
                "GET".into()
            }
        });
    if !path.starts_with('/') {
        return Err(CliError::Usage(format!(
            "the path must start with `/`, like `/jobs` (got `{path}`)"
        )));
    }
    let mut target = format!("{prefix}{path}");
    let mut body: Vec<u8> = Vec::new();
    if let Some(b) = body_flag {
        if !fields.is_empty() {
            return Err(CliError::Usage("give either -b or -f, not both".into()));
        }
        body = if b == "-" {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| CliError::Failed(format!("cannot read the body from stdin: {e}")))?;
            buf
        } else {
            b.as_bytes().to_vec()
        };
    } else if !fields.is_empty() {
        if method == "GET" || method == "HEAD" || method == "DELETE" {
            let query: Vec<String> = fields
                .iter()
                .map(|f| {
                    let (k, v) = split_field(f)?;
                    Ok(format!("{}={}", encode(k), encode(v)))
                })
                .collect::<Result<_, CliError>>()?;
            target.push(if target.contains('?') { '&' } else { '?' });
            target.push_str(&query.join("&"));
        } else {
            body = fields_body(fields)?.to_string().into_bytes();
        }
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    for h in args.values("header") {
        let Some((name, value)) = h.split_once(':') else {
            return Err(CliError::Usage(format!(
                "-H takes `Name: value`, not `{h}`"
            )));
        };
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let key = args
        .flag("api-key")
        .map(str::to_string)
        .or_else(|| std::env::var("DUCTILE_API_KEY").ok())
        .filter(|k| !k.is_empty());
    if let Some(k) = key {
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        {
            headers.push(("Authorization".into(), format!("Bearer {k}")));
        }
    }
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        headers.push(("Content-Type".into(), "application/json".into()));
    }
    let status = send(&host, port, &method, &target, &headers, &body, args.json)?;
    match exit_for(status) {
        0 => Ok(()),
        code => Err(CliError::Exit(code)),
    }
}

pub(crate) fn base_url(args: &Args) -> Result<String, CliError> {
    if let Some(u) = args.flag("api-url").map(str::to_string).or_else(|| {
        std::env::var("DUCTILE_API_URL")
            .ok()
            .filter(|u| !u.is_empty())
    }) {
        return Ok(u);
    }
    let root = super::config_root(args)?;
    let loaded = crate::config::load(&root)?;
    let api = &loaded.config.api;
    if !api.enabled {
        return Err(CliError::Config(format!(
            "the API is not enabled in {} (set api.enabled: true), and no --api-url was given",
            root.display()
        )));
    }
    Ok(format!("http://{}", api.listen))
}

/// `http://host:port/prefix` → (host, port, prefix without a trailing slash).
pub(crate) fn parse_url(url: &str) -> Result<(String, u16, String), CliError> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(CliError::Usage(format!(
            "the API URL must start with http:// (got `{url}`)"
        )));
    };
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| CliError::Usage(format!("bad port in the API URL `{url}`")))?,
        ),
        None => (authority, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    // `0.0.0.0` and `::` mean "every address" when listening; connect locally.
    let host = match host {
        "0.0.0.0" | "" => "127.0.0.1",
        "::" => "::1",
        h => h,
    };
    Ok((host.to_string(), port, prefix.to_string()))
}

fn split_field(f: &str) -> Result<(&str, &str), CliError> {
    f.split_once('=')
        .ok_or_else(|| CliError::Usage(format!("-f takes key=value, not `{f}`")))
}

/// `-f a.b=1 -f c=x` → `{"a":{"b":1},"c":"x"}`: dotted keys nest; a value
/// that parses as JSON is taken as JSON, anything else as a string.
fn fields_body(fields: &[String]) -> Result<Value, CliError> {
    let mut root = Map::new();
    for f in fields {
        let (key, raw) = split_field(f)?;
        let value =
            serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.into()));
        let parts: Vec<&str> = key.split('.').collect();
        let mut map = &mut root;
        for (i, part) in parts.iter().enumerate() {
            if part.is_empty() {
                return Err(CliError::Usage(format!("-f key `{key}` has an empty part")));
            }
            if i == parts.len() - 1 {
                map.insert((*part).to_string(), value.clone());
                break;
            }
            let entry = map
                .entry((*part).to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(inner) = entry else {
                return Err(CliError::Usage(format!(
                    "-f key `{key}`: `{part}` is already a value"
                )));
            };
            map = inner;
        }
    }
    Ok(Value::Object(root))
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn failed(host: &str, port: u16, e: &std::io::Error) -> CliError {
    CliError::Failed(format!(
        "cannot reach the ductile API at http://{host}:{port}: {e} (is `ductile system start` running with api.enabled: true?)"
    ))
}

/// Sends one request (Connection: close) and copies the answer's body to
/// stdout as it arrives; returns the status.
fn send(
    host: &str,
    port: u16,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
    raw: bool,
) -> Result<u16, CliError> {
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| failed(host, port, &e))?
        .next()
        .ok_or_else(|| CliError::Failed(format!("`{host}` resolves to no address")))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| failed(host, port, &e))?;
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\nUser-Agent: ductile-cli/{}\r\nContent-Length: {}\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| failed(host, port, &e))?;
    let mut reader = BufReader::new(stream);
    let io = |e: std::io::Error| CliError::Failed(format!("the API answer was cut off: {e}"));
    let mut line = String::new();
    reader.read_line(&mut line).map_err(io)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| CliError::Failed(format!("not an HTTP answer: `{}`", line.trim())))?;
    let mut chunked = false;
    let mut length: Option<usize> = None;
    let mut json = false;
    loop {
        line.clear();
        reader.read_line(&mut line).map_err(io)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            let v = v.trim();
            match n.trim().to_ascii_lowercase().as_str() {
                "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                "content-length" => length = v.parse().ok(),
                "content-type" => json = v.starts_with("application/json"),
                _ => {}
            }
        }
    }
    let mut out = std::io::stdout().lock();
    if chunked {
        // Streamed answers (`/events`) are copied chunk by chunk.
        loop {
            line.clear();
            reader.read_line(&mut line).map_err(io)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| CliError::Failed("malformed chunked answer".into()))?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size];
            reader.read_exact(&mut chunk).map_err(io)?;
            let _ = out.write_all(&chunk);
            let _ = out.flush();
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf).map_err(io)?;
        }
    } else {
        let mut buf = Vec::new();
        match length {
            Some(n) => {
                buf.resize(n, 0);
                reader.read_exact(&mut buf).map_err(io)?;
            }
            None => {
                reader.read_to_end(&mut buf).map_err(io)?;
            }
        }
        drop(out);
        match serde_json::from_slice::<Value>(&buf) {
            // Without --json a person reads it: pretty. With --json it passes through.
            Ok(v) if json && !raw => output::json(&v),
            _ => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&buf);
                if !buf.ends_with(b"\n") {
                    let _ = out.write_all(b"\n");
                }
            }
        }
    }
    if exit_for(status) != 0 {
        output::notice(&format!("HTTP {status}"));
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_nest_on_dots_and_keep_json_values() {
        let v = fields_body(&[
            "payload.message=hi".into(),
            "payload.n=3".into(),
            "x=true".into(),
        ])
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"payload": {"message": "hi", "n": 3}, "x": true})
        );
        assert!(fields_body(&["a=1".into(), "a.b=2".into()]).is_err());
        assert!(fields_body(&["novalue".into()]).is_err());
    }

    #[test]
    fn urls_split_into_host_port_prefix() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080").unwrap(),
            ("127.0.0.1".into(), 8080, String::new())
        );
        assert_eq!(
            parse_url("http://0.0.0.0:9/base/").unwrap(),
            ("127.0.0.1".into(), 9, "/base".into())
        );
        assert!(parse_url("https://x").is_err());
    }

    #[test]
    fn exit_codes_follow_the_status_class() {
        assert_eq!(exit_for(202), 0);
        assert_eq!(exit_for(404), 4);
        assert_eq!(exit_for(503), 5);
    }
}
