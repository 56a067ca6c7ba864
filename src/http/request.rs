//! A request as the handlers see it (method, decoded path segments, query,
//! headers, the whole body), and the reply they give back.

use serde_json::{Value, json};

/// A parsed request. The body was read whole by the listener, within limits.
#[derive(Debug)]
pub struct Req {
    /// The method as sent.
    pub method: String,
    /// The raw path, without the query.
    pub path: String,
    /// Percent-decoded path segments (empty segments dropped).
    pub segments: Vec<String>,
    /// Decoded query pairs in order.
    pub query: Vec<(String, String)>,
    /// Header names (lower-cased) and raw values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
    /// The route template that matched, for metrics and logs (`-` until routed).
    pub route: &'static str,
}

impl Req {
    /// Reads `rq` into a [`Req`]; a path that cannot be decoded is answered 400.
    pub fn read(mut rq: tiny_http::Request) -> (Result<Req, Reply>, tiny_http::Request) {
        let mut body = Vec::new();
        // The listener already holds the whole body in memory.
        if let Err(e) = rq.as_reader().read_to_end(&mut body) {
            return (
                Err(Reply::error(400, &format!("cannot read the body: {e}"))),
                rq,
            );
        }
        let url = rq.url().to_string();
        let (path, query) = match url.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (url, String::new()),
        };
        let segments = match decode_segments(&path) {
            Ok(s) => s,
            Err(why) => return (Err(Reply::error(400, &why)), rq),
        };
        let query = match decode_query(&query) {
            Ok(q) => q,
            Err(why) => return (Err(Reply::error(400, &why)), rq),
        };
        let headers = rq
            .headers()
            .iter()
            .map(|h| {
                (
                    h.field.as_str().as_str().to_ascii_lowercase(),
                    h.value.as_str().as_bytes().to_vec(),
                )
            })
            .collect();
        let req = Req {
            // Methods are case-sensitive (RFC 9110): `get` is not GET.
            method: rq.method().as_str().to_string(),
            path,
            segments,
            query,
            headers,
            body,
            route: "-",
        };
        (Ok(req), rq)
    }

    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The last value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, whatever the Content-Type says (so `curl -d` works);
    /// an empty body is `None`.
    pub fn json(&self) -> Result<Option<Value>, Reply> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&self.body)
            .map(Some)
            .map_err(|e| Reply::error(400, &format!("the body is not valid JSON: {e}")))
    }
}

/// Splits and percent-decodes a path; non-UTF-8 and `..` segments are refused.
fn decode_segments(path: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        let seg = percent_decode(raw, false)
            .ok_or_else(|| "the path is not valid percent-encoded UTF-8".to_string())?;
        if seg == ".." || seg == "." || seg.contains('/') || seg.contains('\0') {
            return Err(format!("the path segment `{raw}` is not allowed"));
        }
        out.push(seg);
    }
    Ok(out)
}

fn decode_query(query: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(k), Some(v)) = (percent_decode(k, true), percent_decode(v, true)) else {
            return Err(format!(
                "the query parameter `{pair}` is not valid percent-encoded UTF-8"
            ));
        };
        out.push((k, v));
    }
    Ok(out)
}

/// Percent-decodes `s` (and `+` as a space in queries); `None` when the result
/// is not UTF-8 or an escape is broken.
fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let text = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(text, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Content-Type.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            body: value.to_string().into_bytes(),
            content_type: "application/json",
            headers: Vec::new(),
        }
    }

    /// `{"error": message}`.
    pub fn error(status: u16, message: &str) -> Reply {
        Reply::json(status, &json!({ "error": message }))
    }

    /// A plain-text answer (Prometheus exposition).
    pub fn text(status: u16, content_type: &'static str, body: String) -> Reply {
        Reply {
            status,
            body: body.into_bytes(),
            content_type,
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn with(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }

    /// Writes the answer; a client that went away is not an error of ours.
    pub fn send(self, rq: tiny_http::Request) {
        let mut response = tiny_http::Response::from_data(self.body).with_status_code(self.status);
        let mut add = |name: &str, value: &str| {
            if let Ok(h) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
                response.add_header(h);
            }
        };
        add("Content-Type", self.content_type);
        for (name, value) in &self.headers {
            add(name, value);
        }
        if let Err(e) = rq.respond(response) {
            log::debug!(target: "http", "answer not delivered: {e}");
        }
    }
}

/// What a handler produced: an answer, or a live event stream to hand over.
pub enum Outcome {
    /// Answer and be done.
    Reply(Reply),
    /// Serve `/events` from the stream's own thread.
    Stream(super::events::StreamRequest),
    /// Answer when the pipeline tree rooted at `root` has finished, or at `deadline`.
    Wait {
        /// The tree's root job.
        root: String,
        /// When to give up and answer 202.
        deadline: std::time::Instant,
    },
}

impl From<Reply> for Outcome {
    fn from(r: Reply) -> Outcome {
        Outcome::Reply(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode_and_refuse_traversal_and_bad_utf8() {
        assert_eq!(
            decode_segments("/plugin/a%20b/poll").unwrap(),
            vec!["plugin", "a b", "poll"]
        );
        assert!(decode_segments("/plugin/../x").is_err());
        assert!(decode_segments("/plugin/%2e%2e/x").is_err());
        assert!(decode_segments("/a/%ff").is_err());
        assert!(decode_segments("/a/%2").is_err());
        assert!(decode_segments("/a/%2Fb").is_err());
    }

    #[test]
    fn queries_decode_plus_and_escapes() {
        assert_eq!(
            decode_query("q=a+b&x=%41&flag").unwrap(),
            vec![
                ("q".into(), "a b".into()),
                ("x".into(), "A".into()),
                ("flag".into(), String::new())
            ]
        );
        assert!(decode_query("q=%C3").is_err());
    }
}
