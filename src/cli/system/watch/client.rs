//! The blocking HTTP client `system watch` reads the API with: one JSON `GET`
//! per request (`Connection: close`), and the `/events` stream decoded from
//! chunked transfer encoding into Server-Sent Event frames.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

use crate::cli::CliError;

/// Where the API is and the key to send.
#[derive(Debug, Clone)]
pub struct Client {
    host: String,
    port: u16,
    prefix: String,
    key: Option<String>,
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Its `id:`, when it has one (preflight frames have none).
    pub id: Option<String>,
    /// Its `event:` kind.
    pub kind: String,
    /// Its `data:` as JSON (`null` when it was not JSON).
    pub data: Value,
}

impl Client {
    /// A client for `base` (`http://host:port[/prefix]`).
    pub fn new(base: &str, key: Option<String>) -> Result<Client, CliError> {
        let (host, port, prefix) = crate::cli::api::parse_url(base)?;
        Ok(Client {
            host,
            port,
            prefix,
            key,
        })
    }

    /// `http://host:port/prefix`, for messages.
    pub fn url(&self) -> String {
        format!("http://{}:{}{}", self.host, self.port, self.prefix)
    }

    fn connect(&self) -> Result<TcpStream, CliError> {
        let unreachable = |e: &dyn std::fmt::Display| {
            CliError::Failed(format!(
                "cannot reach the ductile API at {}: {e} (is `ductile system start` running with api.enabled: true?)",
                self.url()
            ))
        };
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| unreachable(&e))?
            .next()
            .ok_or_else(|| unreachable(&"no address"))?;
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| unreachable(&e))
    }

    fn request(&self, stream: &mut TcpStream, path: &str, extra: &str) -> Result<(), CliError> {
        let auth = self
            .key
            .as_ref()
            .map(|k| format!("Authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "GET {}{path} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\nUser-Agent: ductile-watch/{}\r\n{auth}{extra}\r\n",
            self.prefix,
            self.host,
            self.port,
            env!("CARGO_PKG_VERSION"),
        );
        stream
            .write_all(head.as_bytes())
            .map_err(|e| CliError::Failed(format!("cannot send to {}: {e}", self.url())))
    }

    /// `GET path` answered 2xx with JSON; any other answer is an error naming
    /// the status and the server's message.
    pub fn get(&self, path: &str) -> Result<Value, CliError> {
        let mut stream = self.connect()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| CliError::Failed(e.to_string()))?;
        self.request(&mut stream, path, "")?;
        let mut reader = BufReader::new(stream);
        let (status, chunked) = read_head(&mut reader)?;
        let mut body = Vec::new();
        let read = if chunked {
            Chunked::new(reader).read_to_end(&mut body)
        } else {
            reader.read_to_end(&mut body)
        };
        read.map_err(|e| CliError::Failed(format!("the answer to {path} was cut off: {e}")))?;
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            let why = value["error"].as_str().unwrap_or("no message");
            return Err(CliError::Failed(format!(
                "GET {path}: HTTP {status}: {why}"
            )));
        }
        Ok(value)
    }

    /// Opens `/events` (resuming after `last` when given); the frames are read
    /// from the returned [`Events`]. The socket's clone lets another thread
    /// end a blocked read.
    pub fn events(&self, last: Option<&str>) -> Result<(Events, TcpStream), CliError> {
        let mut stream = self.connect()?;
        let resume = last
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        self.request(
            &mut stream,
            "/events",
            &format!("Accept: text/event-stream\r\n{resume}"),
        )?;
        let handle = stream
            .try_clone()
            .map_err(|e| CliError::Failed(e.to_string()))?;
        let mut reader = BufReader::new(stream);
        let (status, chunked) = read_head(&mut reader)?;
        if status != 200 {
            let mut body = Vec::new();
            let _ = if chunked {
                Chunked::new(reader).read_to_end(&mut body)
            } else {
                reader.read_to_end(&mut body)
            };
            let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let why = value["error"].as_str().unwrap_or("no message");
            return Err(CliError::Failed(format!(
                "GET /events: HTTP {status}: {why}"
            )));
        }
        let body: Box<dyn Read + Send> = if chunked {
            Box::new(Chunked::new(reader))
        } else {
            Box::new(reader)
        };
        Ok((
            Events {
                reader: BufReader::new(body),
            },
            handle,
        ))
    }
}

/// Ends a stream another thread is reading.
pub fn close(handle: &TcpStream) {
    let _ = handle.shutdown(Shutdown::Both);
}

/// The status line and headers; whether the body is chunked.
fn read_head(reader: &mut impl BufRead) -> Result<(u16, bool), CliError> {
    let cut = |e: std::io::Error| CliError::Failed(format!("the API answer was cut off: {e}"));
    let mut line = String::new();
    reader.read_line(&mut line).map_err(cut)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| CliError::Failed(format!("not an HTTP answer: `{}`", line.trim())))?;
    let mut chunked = false;
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(cut)? == 0 {
            break;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            if n.trim().eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.trim().eq_ignore_ascii_case("chunked");
            }
        }
    }
    Ok((status, chunked))
}

/// A chunked body as a plain byte stream.
struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    fn new(inner: R) -> Chunked<R> {
        Chunked {
            inner,
            left: 0,
            done: false,
        }
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            // A chunk ends in CRLF before the next size line; skip blank lines.
            while line.trim().is_empty() {
                line.clear();
                if self.inner.read_line(&mut line)? == 0 {
                    self.done = true;
                    return Ok(0);
                }
            }
            let size = line.trim().split(';').next().unwrap_or("0");
            self.left = usize::from_str_radix(size, 16).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed chunk size")
            })?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let n = buf.len().min(self.left);
        let got = self.inner.read(&mut buf[..n])?;
        if got == 0 {
            self.done = true;
        }
        self.left -= got;
        Ok(got)
    }
}

/// The frames of an open `/events` stream.
pub struct Events {
    reader: BufReader<Box<dyn Read + Send>>,
}

impl Events {
    /// The next frame; `None` when the stream ended. Heartbeat comments are
    /// skipped.
    pub fn next_frame(&mut self) -> Option<Frame> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            if line.is_empty() {
                if let Some(f) = parse_frame(&lines) {
                    return Some(f);
                }
                lines.clear();
            } else {
                lines.push(line);
            }
        }
    }
}

/// One frame from its lines; `None` for a comment-only block.
pub fn parse_frame(lines: &[String]) -> Option<Frame> {
    let mut id = None;
    let mut kind = String::from("message");
    let mut data = String::new();
    for l in lines {
        if let Some(v) = l.strip_prefix("id:") {
            id = Some(v.trim().to_string());
        } else if let Some(v) = l.strip_prefix("event:") {
            kind = v.trim().to_string();
        } else if let Some(v) = l.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    if data.is_empty() {
        return None;
    }
    Some(Frame {
        id,
        kind,
        data: serde_json::from_str(&data).unwrap_or(Value::Null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode_across_chunks() {
        let raw = b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
        let mut out = String::new();
        Chunked::new(&raw[..]).read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello, world");
    }

    #[test]
    fn frames_parse_and_heartbeats_are_skipped() {
        let lines: Vec<String> = ["id: 4-0", "event: job.queued", "data: {\"job_id\":\"x\"}"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let f = parse_frame(&lines).unwrap();
        assert_eq!(f.id.as_deref(), Some("4-0"));
        assert_eq!(f.kind, "job.queued");
        assert_eq!(f.data["job_id"], "x");
        assert!(parse_frame(&[": heartbeat".to_string()]).is_none());
    }
}
