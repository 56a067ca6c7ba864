//! The HTTP surfaces over real sockets: the daemon on ephemeral ports, driven
//! by a raw HTTP client so that every byte of a request is under the test's
//! control (malformed requests included).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Daemon, TestDir, wait_until};

const LONG: Duration = Duration::from_secs(30);

/// Tokens every API test config declares, one per scope of interest.
pub const ADMIN: &str = "admin-0123456789abcdef";
pub const PLUGIN_RW: &str = "plugin-rw-0123456789abcdef";
pub const PLUGIN_RO: &str = "plugin-ro-0123456789abcdef";
pub const JOBS_RO: &str = "jobs-ro-0123456789abcdef";
pub const EVENTS_RO: &str = "events-ro-0123456789abcdef";
/// The webhook secret (tokens.yaml `hook-secret`).
pub const HOOK_SECRET: &str = "hook-secret-0123456789abcdef";

/// A running daemon with the API (and a webhook listener) on ephemeral ports.
pub struct Api {
    pub dir: TestDir,
    pub daemon: Daemon,
    pub api: String,
    pub hooks: String,
}

/// The API section used by the tests, with `extra` lines appended under `api:`.
fn api_config(extra: &str) -> String {
    format!(
        "service:\n  tick_interval: 1s\n  max_workers: 2\napi:\n  enabled: true\n  listen: 127.0.0.1:0\n  auth:\n    tokens:\n      - token: {ADMIN}\n        scopes: [\"*\"]\n      - token: {PLUGIN_RW}\n        scopes: [\"plugin:rw\"]\n      - token: {PLUGIN_RO}\n        scopes: [\"plugin:ro\"]\n      - token: {JOBS_RO}\n        scopes: [\"jobs:ro\"]\n      - token: {EVENTS_RO}\n        scopes: [\"events:ro\"]\n{extra}webhooks:\n  listen: 127.0.0.1:0\ninclude: [tokens.yaml, webhooks.yaml]\nplugins:\n  echo:\n    config:\n      message: hello\n"
    )
}

/// Writes the config tree (config.yaml, tokens.yaml, webhooks.yaml) into `dir`.
pub fn write_tree(dir: &TestDir, api_extra: &str, webhooks: &str) {
    dir.echo();
    dir.config(&api_config(api_extra));
    dir.write(
        "tokens.yaml",
        &format!("tokens:\n  - name: hook-secret\n    key: {HOOK_SECRET}\n"),
    );
    dir.write("webhooks.yaml", webhooks);
}

/// The default webhook endpoints: one HMAC endpoint with a dedupe header and a
/// small body limit.
pub const WEBHOOKS: &str = "webhooks:\n  endpoints:\n    - name: github\n      path: /webhook/github\n      plugin: echo\n      command: handle\n      secret_ref: hook-secret\n      signature_header: X-Hub-Signature-256\n      max_body_size: 4KB\n      dedupe_header: X-GitHub-Delivery\n";

impl Api {
    /// Starts the daemon on a fresh dir with the default trees.
    pub fn start(tag: &str) -> Api {
        Api::start_with(tag, "", WEBHOOKS)
    }

    /// Starts the daemon with `api_extra` under `api:` and `webhooks` as webhooks.yaml.
    pub fn start_with(tag: &str, api_extra: &str, webhooks: &str) -> Api {
        let dir = TestDir::new(tag);
        write_tree(&dir, api_extra, webhooks);
        Api::start_in(dir)
    }

    /// Starts the daemon on an existing dir.
    pub fn start_in(dir: TestDir) -> Api {
        let daemon = dir.start();
        let api = listening(&daemon, "api.listen");
        let hooks = listening(&daemon, "webhooks.listen");
        Api {
            dir,
            daemon,
            api,
            hooks,
        }
    }
}

/// The address a listener logged it bound.
pub fn listening(daemon: &Daemon, key: &str) -> String {
    let needle = format!("{key} listening on http://");
    daemon.wait_log(LONG, &needle);
    let line = daemon
        .log()
        .into_iter()
        .find(|l| l.contains(&needle))
        .unwrap();
    let start = line.find(&needle).unwrap() + needle.len();
    line[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect()
}

/// An answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends raw bytes, reads the answer until the server closes or the body
/// (Content-Length) is complete.
pub fn raw(addr: &str, bytes: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    // A server that answers before reading everything may reset the rest.
    let _ = s.write_all(bytes);
    read_answer(&mut s)
}

/// Reads one answer from `s`.
pub fn read_answer(s: &mut TcpStream) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let status: u16 = lines
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("not an HTTP answer: {head:?}"));
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .collect();
            let length = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse::<usize>().ok());
            let mut body = buf[end + 4..].to_vec();
            if let Some(n) = length {
                while body.len() < n {
                    match read_some(s, &mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => body.extend_from_slice(&chunk[..k]),
                    }
                }
                body.truncate(n);
            }
            if status == 100 {
                buf = buf[end + 4..].to_vec();
                continue;
            }
            return Answer {
                status,
                headers,
                body,
            };
        }
        match read_some(s, &mut chunk) {
            Ok(0) => panic!(
                "connection closed before an answer: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) => panic!("no answer: {e}; got {:?}", String::from_utf8_lossy(&buf)),
        }
    }
}

/// One `read`, retried when a signal interrupts it: a socket with a read
/// timeout is never restarted by the kernel, and signals meant for other
/// tests' children reach this process too.
pub fn read_some(s: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A well-formed request with optional token and body.
pub fn call(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    raw(addr, req.as_bytes())
}

pub fn get(addr: &str, path: &str, token: Option<&str>) -> Answer {
    call(addr, "GET", path, token, None)
}

/// HMAC-SHA256 of `body` with `secret`, as `sha256=<hex>`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Posts `body` to the webhook `path` with extra header lines.
pub fn hook(addr: &str, path: &str, body: &[u8], headers: &[(&str, String)]) -> Answer {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw(addr, &bytes)
}

fn jobs_count(dir: &TestDir) -> i64 {
    dir.count("SELECT COUNT(*) FROM job_queue")
}

fn wait_status(dir: &TestDir, id: &str, status: &str) {
    dir.wait_until(LONG, &format!("job {id} {status}"), || {
        dir.text(&format!("SELECT status FROM job_queue WHERE id = '{id}'"))
            .as_deref()
            == Some(status)
    });
}

// ------------------------------------------------------------------ tests

#[test]
fn healthz_is_public_on_both_listeners_and_counts_the_queue() {
    let a = Api::start("healthz");
    for addr in [&a.api, &a.hooks] {
        let r = get(addr, "/healthz", None);
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["status"], "ok");
        assert_eq!(v["plugins_loaded"], 1);
        assert_eq!(v["plugins_circuit_open"], 0);
        assert!(v["queue_depth"].is_number());
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    }
    let root = get(&a.api, "/", None).json();
    assert_eq!(root["discovery"]["openapi"], "/openapi.json");
}

#[test]
fn a_triggered_command_is_queued_runs_and_reads_back() {
    let a = Api::start("trigger");
    let r = call(
        &a.api,
        "POST",
        "/plugin/echo/handle",
        Some(PLUGIN_RW),
        Some(r#"{"payload":{"message":"Hello API"}}"#),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "queued");
    assert_eq!(v["plugin"], "echo");
    assert_eq!(v["command"], "handle");
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_status(&a.dir, &id, "succeeded");
    let job = get(&a.api, &format!("/job/{id}"), Some(JOBS_RO)).json();
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["submitted_by"], "api");
    assert_eq!(job["result"]["status"], "ok");
    // handle got the payload wrapped in an api.trigger event.
    let payload: Value = serde_json::from_str(
        &a.dir
            .text(&format!("SELECT payload FROM job_queue WHERE id = '{id}'"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["type"], "api.trigger");
    assert_eq!(payload["payload"]["message"], "Hello API");
    let tree = get(&a.api, &format!("/job/{id}/tree"), Some(JOBS_RO)).json();
    assert_eq!(tree[0]["job_id"], id.as_str());
    let list = get(&a.api, "/jobs?plugin=echo&status=ok&limit=5", Some(JOBS_RO)).json();
    assert_eq!(list["total"], 1);
    assert_eq!(list["jobs"][0]["job_id"], id.as_str());
    let logs = get(
        &a.api,
        &format!("/job-logs?job_id={id}&include_result=true"),
        Some(JOBS_RO),
    )
    .json();
    assert_eq!(logs["total"], 1);
    assert_eq!(logs["logs"][0]["result"]["status"], "ok");
    // The spec's own curl example: -d without a JSON content type.
    let r = call(
        &a.api,
        "POST",
        "/plugin/echo/poll",
        Some(PLUGIN_RW),
        Some("{}"),
    );
    assert_eq!(r.status, 202, "{}", r.text());
}

#[test]
fn bad_requests_get_their_status_and_enqueue_nothing() {
    let a = Api::start("badreq");
    let before = jobs_count(&a.dir);
    let post = |path: &str, body: &str| call(&a.api, "POST", path, Some(ADMIN), Some(body));
    let cases: Vec<(Answer, u16, &str)> = vec![
        (
            post("/plugin/echo/poll", "{not json"),
            400,
            "not valid JSON",
        ),
        (post("/plugin/echo/poll", "[1,2]"), 400, "JSON object"),
        (
            post("/plugin/echo/poll", r#"{"payload": 3}"#),
            400,
            "must be a JSON object",
        ),
        (post("/plugin/nope/poll", "{}"), 404, "no plugin `nope`"),
        (
            post("/plugin/echo/frobnicate", "{}"),
            404,
            "does not declare",
        ),
        (post("/plugin/echo/init", "{}"), 400, "does not declare"),
        (
            call(&a.api, "POST", "/plugin/echo/poll", None, Some("{}")),
            401,
            "",
        ),
        (
            call(
                &a.api,
                "POST",
                "/plugin/echo/poll",
                Some("wrong"),
                Some("{}"),
            ),
            401,
            "",
        ),
        (
            call(
                &a.api,
                "POST",
                "/plugin/echo/poll",
                Some(JOBS_RO),
                Some("{}"),
            ),
            403,
            "",
        ),
        (
            call(&a.api, "DELETE", "/jobs", Some(ADMIN), None),
            405,
            "not allowed",
        ),
        (get(&a.api, "/no/such/route", Some(ADMIN)), 404, "no route"),
        (
            get(&a.api, "/plugin/../jobs", Some(ADMIN)),
            400,
            "not allowed",
        ),
        (get(&a.api, "/job/%ff", Some(ADMIN)), 400, "UTF-8"),
        (
            get(&a.api, "/jobs?status=bogus", Some(ADMIN)),
            400,
            "unknown status",
        ),
        (get(&a.api, "/jobs?limit=201", Some(ADMIN)), 400, "limit"),
        (
            get(&a.api, "/jobs?color=red", Some(ADMIN)),
            400,
            "unknown query parameter",
        ),
        (
            get(&a.api, "/job-logs?from=yesterday", Some(ADMIN)),
            400,
            "RFC 3339",
        ),
        (get(&a.api, "/job/nope", Some(ADMIN)), 404, "no job"),
        (
            post("/pipeline/anything", "{}"),
            404,
            "no pipeline `anything`",
        ),
    ];
    for (r, status, needle) in &cases {
        assert_eq!(r.status, *status, "{needle}: {}", r.text());
        let v = r.json();
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {v}"));
        assert!(msg.contains(needle), "{status}: `{msg}` lacks `{needle}`");
    }
    let r = call(&a.api, "DELETE", "/jobs", Some(ADMIN), None);
    assert_eq!(r.header("Allow"), Some("GET"));
    let r = get(&a.api, "/jobs", None);
    assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
    assert_eq!(
        jobs_count(&a.dir),
        before,
        "a refused request enqueued a job"
    );
    assert_eq!(get(&a.api, "/healthz", None).status, 200);
}

#[test]
fn limits_refuse_oversized_bodies_and_headers_without_harm() {
    let a = Api::start_with("limits", "  max_body_size: 1KB\n", WEBHOOKS);
    let before = jobs_count(&a.dir);
    // At the limit: accepted (the body is a valid trigger padded with spaces).
    let mut body = String::from(r#"{"payload":{}}"#);
    body.push_str(&" ".repeat(1024 - body.len()));
    let r = call(
        &a.api,
        "POST",
        "/plugin/echo/poll",
        Some(ADMIN),
        Some(&body),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    body.push(' ');
    let r = call(
        &a.api,
        "POST",
        "/plugin/echo/poll",
        Some(ADMIN),
        Some(&body),
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("too large"));
    // A declared length far over the limit is refused before the body is sent.
    let r = raw(
        &a.api,
        format!("POST /plugin/echo/poll HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Length: 1000000000\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 413);
    // Chunked without a length: read up to the limit, then refused.
    let mut chunked = format!(
        "POST /plugin/echo/poll HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    for _ in 0..4 {
        chunked.push_str(&format!("200\r\n{}\r\n", " ".repeat(512)));
    }
    chunked.push_str("0\r\n\r\n");
    assert_eq!(raw(&a.api, chunked.as_bytes()).status, 413);
    // A small chunked body is fine.
    let ok = format!(
        "POST /plugin/echo/poll HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {ADMIN}\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
    );
    assert_eq!(raw(&a.api, ok.as_bytes()).status, 202);
    // 10,000 headers, and one 1 MB header.
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..10_000 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(raw(&a.api, many.as_bytes()).status, 431);
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    assert_eq!(raw(&a.api, big.as_bytes()).status, 431);
    // Conflicting lengths are refused (no guessing where the body ends).
    let smuggle = "POST /plugin/echo/poll HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\n{}";
    assert_eq!(raw(&a.api, smuggle.as_bytes()).status, 400);
    // Non-UTF-8 bytes in the path.
    let mut bad = b"GET /job/".to_vec();
    bad.extend_from_slice(&[0xff, 0xfe]);
    bad.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(raw(&a.api, &bad).status, 400);
    // A header that is not ASCII is refused before routing, and the answer
    // says the connection closes, so a keep-alive client does not send its
    // next request into a closed socket.
    let mut cookie = b"GET /jobs HTTP/1.1\r\nHost: x\r\nCookie: ductile_session=".to_vec();
    cookie.extend_from_slice("caf\u{e9}".as_bytes());
    cookie.extend_from_slice(b"\r\n\r\n");
    let refused = raw(&a.api, &cookie);
    assert_eq!(refused.status, 400);
    assert_eq!(refused.header("Connection"), Some("close"));
    assert_eq!(
        refused.json()["error"],
        "request line or header is not ASCII"
    );
    let r = raw(&a.api, many.as_bytes());
    assert_eq!((r.status, r.header("Connection")), (431, Some("close")));
    assert_eq!(
        jobs_count(&a.dir),
        before + 2,
        "only the two valid triggers enqueued"
    );
    assert_eq!(get(&a.api, "/healthz", None).status, 200);
}

#[test]
fn webhooks_verify_signatures_limit_bodies_and_drop_redeliveries() {
    let a = Api::start("webhooks");
    let body = br#"{"action":"push","ref":"main"}"#;
    let good = |b: &[u8], delivery: &str| {
        hook(
            &a.hooks,
            "/webhook/github",
            b,
            &[
                ("X-Hub-Signature-256", sign(HOOK_SECRET, b)),
                ("X-GitHub-Delivery", delivery.to_string()),
            ],
        )
    };
    let r = good(body, "d-1");
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["job_id"].as_str().unwrap().to_string();
    wait_status(&a.dir, &id, "succeeded");
    assert_eq!(
        a.dir
            .text(&format!(
                "SELECT submitted_by FROM job_queue WHERE id = '{id}'"
            ))
            .as_deref(),
        Some("webhook:github")
    );
    // The same delivery again: not run twice.
    let again = good(body, "d-1");
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["job_id"], id.as_str());
    let n = || a.dir.count("SELECT COUNT(*) FROM job_queue");
    assert_eq!(n(), 1);
    // Bare hex and upper case are accepted too.
    let bare = sign(HOOK_SECRET, body)
        .trim_start_matches("sha256=")
        .to_uppercase();
    let r = hook(
        &a.hooks,
        "/webhook/github",
        body,
        &[
            ("X-Hub-Signature-256", bare),
            ("X-GitHub-Delivery", "d-2".into()),
        ],
    );
    assert_eq!(r.status, 202, "{}", r.text());
    // Refusals: no detail, no job.
    let other = br#"{"action":"delete"}"#;
    let cases = [
        hook(
            &a.hooks,
            "/webhook/github",
            body,
            &[("X-GitHub-Delivery", "d-3".into())],
        ),
        hook(
            &a.hooks,
            "/webhook/github",
            other,
            &[
                ("X-Hub-Signature-256", sign(HOOK_SECRET, body)),
                ("X-GitHub-Delivery", "d-4".into()),
            ],
        ),
        hook(
            &a.hooks,
            "/webhook/github",
            body,
            &[
                ("X-Hub-Signature-256", sign("wrong", body)),
                ("X-GitHub-Delivery", "d-5".into()),
            ],
        ),
        hook(
            &a.hooks,
            "/webhook/github",
            body,
            &[
                ("X-Hub-Signature-256", "sha256=zz".into()),
                ("X-GitHub-Delivery", "d-6".into()),
            ],
        ),
    ];
    for r in &cases {
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(r.json()["error"], "forbidden");
    }
    // The body limit (4 KB): at it accepted, one byte over refused unread.
    let mut at = br#"{"pad":""#.to_vec();
    at.extend(std::iter::repeat_n(b'x', 4096 - at.len() - 2));
    at.extend_from_slice(b"\"}");
    assert_eq!(at.len(), 4096);
    assert_eq!(good(&at, "d-7").status, 202);
    let mut over = at.clone();
    over.insert(8, b'x');
    assert_eq!(good(&over, "d-8").status, 413);
    assert_eq!(hook(&a.hooks, "/webhook/nope", body, &[]).status, 404);
    assert_eq!(
        call(&a.hooks, "GET", "/webhook/github", None, None).status,
        405
    );
    assert_eq!(n(), 3, "only the valid deliveries were enqueued");
}

/// One table: route × token → expected status. Every cell is asserted.
#[test]
fn every_route_checks_its_scope() {
    let a = Api::start("scopes");
    let id = {
        let r = call(&a.api, "POST", "/plugin/echo/poll", Some(ADMIN), Some("{}"));
        r.json()["job_id"].as_str().unwrap().to_string()
    };
    let job = format!("/job/{id}");
    let tree = format!("/job/{id}/tree");
    let cancel = format!("/job/{id}/cancel");
    let retry = format!("/job/{id}/retry");
    // (method, path, body, [admin, plugin_rw, plugin_ro, jobs_ro, events_ro, none])
    let public = [200; 6];
    let rows: Vec<(&str, &str, Option<&str>, [u16; 6])> = vec![
        ("GET", "/", None, public),
        ("GET", "/healthz", None, public),
        ("GET", "/plugins", None, public),
        ("GET", "/skills", None, public),
        ("GET", "/openapi.json", None, public),
        ("GET", "/plugin/echo/openapi.json", None, public),
        ("GET", "/.well-known/ai-plugin.json", None, public),
        (
            "POST",
            "/plugin/echo/poll",
            Some("{}"),
            [202, 202, 202, 403, 403, 401],
        ),
        ("GET", &job, None, [200, 403, 403, 200, 403, 401]),
        ("GET", &tree, None, [200, 403, 403, 200, 403, 401]),
        ("GET", "/jobs", None, [200, 403, 403, 200, 403, 401]),
        ("GET", "/job-logs", None, [200, 403, 403, 200, 403, 401]),
        ("GET", "/plugin/echo", None, [200, 200, 200, 403, 403, 401]),
        ("GET", "/topology", None, [200, 200, 200, 403, 403, 401]),
        (
            "GET",
            "/stopwatch/echo",
            None,
            [200, 403, 403, 200, 403, 401],
        ),
        ("GET", "/metrics", None, [200, 403, 403, 200, 403, 401]),
        (
            "GET",
            "/analytics/queue",
            None,
            [200, 403, 403, 403, 403, 401],
        ),
        (
            "GET",
            "/analytics/summary",
            None,
            [200, 403, 403, 403, 403, 401],
        ),
        ("GET", "/config/view", None, [200, 403, 403, 403, 403, 401]),
        (
            "POST",
            "/system/reload",
            None,
            [200, 403, 403, 403, 403, 401],
        ),
        // The job succeeded: nothing to cancel, nothing to retry.
        ("POST", &cancel, None, [409, 403, 403, 403, 403, 401]),
        ("POST", &retry, None, [409, 403, 403, 403, 403, 401]),
        (
            "POST",
            "/plugin/echo/breaker/reset",
            None,
            [200, 200, 403, 403, 403, 401],
        ),
        ("GET", "/schedules", None, [200, 403, 403, 200, 403, 401]),
        (
            "GET",
            "/schedule/echo:none/preview",
            None,
            [404, 403, 403, 404, 403, 401],
        ),
        (
            "GET",
            "/schedule/echo:none/explain",
            None,
            [404, 403, 403, 404, 403, 401],
        ),
        (
            "POST",
            "/schedule/echo:none/pause",
            None,
            [404, 403, 403, 403, 403, 401],
        ),
        (
            "POST",
            "/schedule/echo:none/resume",
            None,
            [404, 403, 403, 403, 403, 401],
        ),
        (
            "GET",
            "/system/doctor",
            None,
            [200, 403, 403, 200, 403, 401],
        ),
        (
            "GET",
            "/system/selfcheck",
            None,
            [200, 403, 403, 200, 403, 401],
        ),
        ("HEAD", "/events", None, [200, 403, 403, 403, 200, 401]),
        (
            "POST",
            "/pipeline/none",
            Some("{}"),
            [404, 404, 403, 403, 403, 401],
        ),
        // The dashboard's session: a bearer token is no session, and signing
        // in takes a JSON body sent as such.
        ("GET", "/session", None, [401; 6]),
        ("DELETE", "/session", None, [401; 6]),
        ("POST", "/session", Some("{}"), [415; 6]),
    ];
    let tokens = [
        Some(ADMIN),
        Some(PLUGIN_RW),
        Some(PLUGIN_RO),
        Some(JOBS_RO),
        Some(EVENTS_RO),
        None,
    ];
    let mut wrong = Vec::new();
    for (method, path, body, expected) in &rows {
        for (t, want) in tokens.iter().zip(expected) {
            let r = call(&a.api, method, path, *t, *body);
            if r.status != *want {
                wrong.push(format!(
                    "{method} {path} with {t:?}: {} (want {want}) {}",
                    r.status,
                    r.text()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "scope matrix mismatches:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn reload_answers_with_the_verdict_and_keeps_a_bad_config_out() {
    let a = Api::start("reload");
    let r = call(&a.api, "POST", "/system/reload", Some(ADMIN), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "ok");
    // Break the config: the reload is refused with the finding; the old one serves.
    let path = a.dir.path.join("config.yaml");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, good.replace("max_workers: 2", "max_workers: lots")).unwrap();
    let r = call(&a.api, "POST", "/system/reload", Some(ADMIN), None);
    assert_eq!(r.status, 400, "{}", r.text());
    let v = r.json();
    assert!(
        v["findings"][0].as_str().unwrap().contains("max_workers"),
        "{v}"
    );
    assert_eq!(get(&a.api, "/healthz", None).status, 200);
    assert_eq!(
        call(&a.api, "POST", "/plugin/echo/poll", Some(ADMIN), Some("{}")).status,
        202
    );
}

#[test]
fn no_secret_from_any_config_file_leaves_the_daemon() {
    let dir = TestDir::new("redact");
    write_tree(&dir, "", WEBHOOKS);
    let path = dir.path.join("config.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "      message: hello\n",
            "      message: hello\n      api_key: plugin-api-key-0123456789\n      nested:\n        password: plugin-password-0123456789\n",
        ),
    )
    .unwrap();
    let a = Api::start_in(dir);
    let secrets = [
        ADMIN,
        PLUGIN_RW,
        PLUGIN_RO,
        JOBS_RO,
        EVENTS_RO,
        HOOK_SECRET,
        "plugin-api-key-0123456789",
        "plugin-password-0123456789",
    ];
    let view = get(&a.api, "/config/view", Some(ADMIN));
    assert_eq!(view.status, 200);
    let v = view.json();
    assert_eq!(v["plugins"]["echo"]["config"]["api_key"], "[REDACTED]");
    assert_eq!(v["plugins"]["echo"]["config"]["message"], "hello");
    let mut bodies = vec![view.text()];
    for path in [
        "/",
        "/healthz",
        "/plugins",
        "/plugin/echo",
        "/skills",
        "/openapi.json",
        "/topology",
        "/metrics",
        "/analytics/queue",
        "/jobs",
        "/job-logs",
    ] {
        bodies.push(get(&a.api, path, Some(ADMIN)).text());
    }
    // Failed authentications must not echo what was presented either.
    bodies.push(get(&a.api, "/jobs", Some("plugin-api-key-0123456789")).text());
    let log = a.daemon.log().join("\n");
    for s in secrets {
        for b in &bodies {
            assert!(!b.contains(s), "secret {s} in a response: {b}");
        }
        assert!(!log.contains(s), "secret {s} in the daemon log");
    }
}

#[test]
fn slow_clients_cannot_starve_others_or_grow_threads() {
    let a = Api::start("slowloris");
    let pid = a.daemon.pid();
    let threads = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let rss_kb = || -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    assert_eq!(get(&a.api, "/healthz", None).status, 200);
    let rss_before = rss_kb();
    // 200 connections that send half a request line and stop.
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(&a.api).unwrap();
        s.write_all(b"GET /healthz HT").unwrap();
        held.push(s);
    }
    // One that trickles a byte at a time.
    let mut trickle = TcpStream::connect(&a.api).unwrap();
    trickle.write_all(b"G").unwrap();
    // Others are still served, quickly.
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(get(&a.api, "/healthz", None).status, 200);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "served in {:?}",
            t.elapsed()
        );
    }
    // Memory grows by what 200 idle connection threads cost, no more.
    let grown = rss_kb().saturating_sub(rss_before);
    assert!(
        grown < 16 * 1024,
        "RSS grew by {grown} kB under 200 half-open connections"
    );
    // Past the cap, a connection is refused at once with 503.
    let over = Api::start_with("slowcap", "  max_connections: 8\n", WEBHOOKS);
    let mut capped = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(&over.api).unwrap();
        s.write_all(b"GET / HT").unwrap();
        capped.push(s);
    }
    wait_until(LONG, "the cap reached", || {
        let r = get(&over.api, "/healthz", None);
        r.status == 503
    });
    drop(capped);
    wait_until(LONG, "slots freed", || {
        get(&over.api, "/healthz", None).status == 200
    });
    // Threads stay bounded by the connection cap, not by the attack.
    let n = threads();
    assert!(n < 256 + 64, "{n} threads");
    drop(held);
    drop(trickle);
}

#[test]
fn a_header_trickled_past_its_deadline_is_cut_off() {
    let a = Api::start("trickle");
    let mut s = TcpStream::connect(&a.api).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let line = b"GET /healthz HTTP/1.1\r\nX-Slow: ";
    s.write_all(line).unwrap();
    // A byte every 200 ms: the socket timeout alone would never fire.
    let mut answer = Vec::new();
    loop {
        if s.write_all(b"a").is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
            Err(_) => {}
        }
        assert!(started.elapsed() < Duration::from_secs(40), "never cut off");
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.is_empty() || text.contains("408"), "{text}");
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "cut off after {:?}",
        started.elapsed()
    );
}

#[test]
fn fuzzed_requests_never_get_a_server_error() {
    let a = Api::start("fuzz");
    let methods = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW", "get",
    ];
    let paths = [
        "/",
        "/healthz",
        "/jobs",
        "/job/x",
        "/job/x/tree",
        "/job-logs",
        "/plugins",
        "/plugin/echo",
        "/plugin/echo/poll",
        "/plugin/echo/handle",
        "/plugin/x/y",
        "/system/reload",
        "/events",
        "/metrics",
        "/config/view",
        "/analytics/queue",
        "/%00",
        "/a/../b",
        "//",
        "/jobs?limit=-1",
        "/jobs?status=%ff",
        "/job-logs?from=now",
        "/stopwatch/echo?window=zz",
        "/x?y",
    ];
    let bodies = [
        "",
        "{}",
        "{",
        "null",
        "[]",
        r#"{"payload":null}"#,
        r#"{"payload":[]}"#,
        "\u{0}\u{1}",
        "\"x\"",
    ];
    let tokens = [None, Some(ADMIN), Some(JOBS_RO), Some(" "), Some("admin")];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d ^ u64::from(std::process::id());
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..2000 {
        let m = methods[next(methods.len())];
        let p = paths[next(paths.len())];
        if p == "/events" && m == "GET" {
            continue;
        }
        let b = bodies[next(bodies.len())];
        let t = tokens[next(tokens.len())];
        let mut req = format!("{m} {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        if let Some(t) = t {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if next(4) == 0 {
            req.push_str("Content-Type: text/plain\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{b}", b.len()));
        let r = raw(&a.api, req.as_bytes());
        assert!(
            r.status < 500,
            "{m} {p} {b:?} {t:?}: {} {}",
            r.status,
            r.text()
        );
        *statuses.entry(r.status).or_insert(0) += 1;
    }
    assert!(statuses.len() > 3, "{statuses:?}");
    assert_eq!(get(&a.api, "/healthz", None).status, 200);
}

#[test]
fn metrics_are_prometheus_text_with_the_job_families() {
    let a = Api::start("metrics");
    let r = call(&a.api, "POST", "/plugin/echo/poll", Some(ADMIN), Some("{}"));
    let id = r.json()["job_id"].as_str().unwrap().to_string();
    wait_status(&a.dir, &id, "succeeded");
    let m = get(&a.api, "/metrics", Some(JOBS_RO));
    assert_eq!(m.status, 200);
    assert!(m.header("Content-Type").unwrap().starts_with("text/plain"));
    let text = m.text();
    for family in [
        "ductile_jobs_total{plugin=\"echo\",command=\"poll\",status=\"succeeded\"} 1",
        "ductile_queue_depth{status=\"queued\"}",
        "ductile_job_duration_seconds_count{plugin=\"echo\"} 1",
        "ductile_workers{state=\"busy\"}",
        "ductile_http_requests_total{listener=\"api\",route=\"/plugin/{plugin}/{command}\",status=\"202\"} 1",
        "ductile_process_resident_memory_bytes",
        "ductile_process_open_fds",
        "ductile_uptime_seconds",
        "ductile_build_info{version=",
    ] {
        assert!(text.contains(family), "missing `{family}` in:\n{text}");
    }
    // The real parser accepts it and sees the families with their types.
    let parsed = crate::tools::prometheus_parse(&text);
    for family in [
        "ductile_jobs counter",
        "ductile_job_duration_seconds histogram",
        "ductile_http_requests counter",
        "ductile_queue_depth gauge",
    ] {
        assert!(
            parsed.contains(family),
            "parser did not see `{family}`:\n{parsed}"
        );
    }
}

#[test]
fn metrics_can_be_public() {
    let a = Api::start_with("metricspub", "  metrics_public: true\n", WEBHOOKS);
    assert_eq!(get(&a.api, "/metrics", None).status, 200);
}

#[test]
fn an_api_without_tokens_warns_and_answers_401_and_strict_mode_refuses_it() {
    let dir = TestDir::new("notokens");
    dir.echo();
    dir.config("api:\n  enabled: true\n  listen: 127.0.0.1:0\nplugins:\n  echo: {}\n");
    let d = dir.start();
    d.wait_log(LONG, "no token configured");
    let addr = listening(&d, "api.listen");
    assert_eq!(get(&addr, "/jobs", None).status, 401);
    assert_eq!(get(&addr, "/healthz", None).status, 200);
    drop(d);
    let strict = TestDir::new("notokens-strict");
    strict.echo();
    strict.config("service:\n  strict_mode: true\napi:\n  enabled: true\n  listen: 127.0.0.1:0\nplugins:\n  echo: {}\n");
    strict.run(&["config", "lock"]).code(0);
    let run = strict.run(&["system", "start"]);
    let run = run.code(78);
    assert!(run.stderr.contains("no API token"), "{}", run.stderr);
}

#[test]
fn the_cli_calls_the_api_and_reads_jobs_without_a_daemon() {
    let a = Api::start("cli");
    let url = format!("http://{}", a.api);
    let r = a
        .dir
        .run(&["api", "/healthz", "--api-url", &url, "--json"])
        .code(0);
    assert_eq!(r.json()["status"], "ok");
    let r = a
        .dir
        .command(&[
            "api",
            "/plugin/echo/poll",
            "-X",
            "POST",
            "-f",
            "payload.message=hi",
            "--api-url",
            &url,
            "--json",
        ])
        .env("DUCTILE_API_KEY", ADMIN)
        .output()
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let v: Value = serde_json::from_slice(&r.stdout).unwrap();
    let id = v["job_id"].as_str().unwrap().to_string();
    wait_status(&a.dir, &id, "succeeded");
    a.dir.run(&["api", "/jobs", "--api-url", &url]).code(4);
    a.dir
        .run(&["api", "/nowhere", "--api-url", &url, "--api-key", ADMIN])
        .code(4);
    // `job` verbs read the ledger directly, daemon or not.
    let Api { dir, daemon, .. } = a;
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
    let shown = dir.run(&["job", "show", &id, "--json"]).code(0).json();
    assert_eq!(shown["status"], "succeeded");
    let listed = dir
        .run(&["job", "list", "--plugin", "echo", "--json"])
        .code(0)
        .json();
    assert_eq!(listed["total"], 1);
    let logs = dir
        .run(&["job", "logs", "--job", &id, "--include-result", "--json"])
        .code(0)
        .json();
    assert_eq!(logs["logs"][0]["result"]["status"], "ok");
    let tree = dir.run(&["job", "tree", &id, "--json"]).code(0).json();
    assert_eq!(tree.as_array().unwrap().len(), 1);
    dir.run(&["job", "show", "nope"]).code(1);
    let bad = dir.run(&["job", "list", "--status", "bogus"]).code(2);
    assert!(bad.stderr.contains("unknown status"), "{}", bad.stderr);
    let _ = json!({});
}

/// One SSE frame: id, event kind, data.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub(crate) id: String,
    pub(crate) kind: String,
    pub(crate) data: Value,
}

/// An open `/events` stream read frame by frame (chunked framing removed).
pub(crate) struct Stream {
    s: TcpStream,
    buf: Vec<u8>,
    text: String,
}

impl Stream {
    pub(crate) fn open(addr: &str, last: Option<&str>) -> Stream {
        Stream::open_as(addr, last, EVENTS_RO)
    }

    /// [`Stream::open`] with `token`.
    pub(crate) fn open_as(addr: &str, last: Option<&str>, token: &str) -> Stream {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(LONG)).unwrap();
        let mut req =
            format!("GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n");
        if let Some(l) = last {
            req.push_str(&format!("Last-Event-ID: {l}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut st = Stream {
            s,
            buf: Vec::new(),
            text: String::new(),
        };
        while find(&st.buf, b"\r\n\r\n").is_none() {
            st.fill();
        }
        let end = find(&st.buf, b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&st.buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("text/event-stream"),
            "{head}"
        );
        st.buf.drain(..end + 4);
        st
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 8192];
        let n = read_some(&mut self.s, &mut chunk).unwrap();
        assert!(n > 0, "the event stream closed");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// Moves complete chunks from `buf` into `text`.
    fn dechunk(&mut self) {
        loop {
            let Some(eol) = find(&self.buf, b"\r\n") else {
                return;
            };
            let size = usize::from_str_radix(String::from_utf8_lossy(&self.buf[..eol]).trim(), 16)
                .unwrap();
            if self.buf.len() < eol + 2 + size + 2 {
                return;
            }
            let data = self.buf[eol + 2..eol + 2 + size].to_vec();
            self.text.push_str(&String::from_utf8_lossy(&data));
            self.buf.drain(..eol + 2 + size + 2);
        }
    }

    fn next(&mut self) -> Frame {
        loop {
            self.dechunk();
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                if block.starts_with(':') {
                    continue;
                }
                let mut f = Frame {
                    id: String::new(),
                    kind: String::new(),
                    data: Value::Null,
                };
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        f.id = v.to_string();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        f.kind = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        f.data = serde_json::from_str(v).unwrap();
                    }
                }
                return f;
            }
            self.fill();
        }
    }

    /// Frames up to and including the one `stop` accepts.
    pub(crate) fn until(&mut self, stop: impl Fn(&Frame) -> bool) -> Vec<Frame> {
        let mut out = Vec::new();
        loop {
            let f = self.next();
            let done = stop(&f);
            out.push(f);
            if done {
                return out;
            }
        }
    }
}

fn trigger(addr: &str) -> String {
    let r = call(addr, "POST", "/plugin/echo/poll", Some(ADMIN), Some("{}"));
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["job_id"].as_str().unwrap().to_string()
}

fn kinds_of(frames: &[Frame], job: &str) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f.data["job_id"] == job)
        .map(|f| f.kind.clone())
        .collect()
}

#[test]
fn events_stream_a_jobs_life_in_order_and_resume_across_a_restart() {
    let a = Api::start("sse");
    let mut stream = Stream::open(&a.api, None);
    let first = trigger(&a.api);
    let frames = stream.until(|f| f.kind == "job.succeeded" && f.data["job_id"] == first.as_str());
    assert_eq!(
        kinds_of(&frames, &first),
        [
            "job.queued",
            "job.preflight",
            "job.started",
            "job.succeeded"
        ]
    );
    let last = frames.last().unwrap().id.clone();
    drop(stream);
    // Missed while disconnected, and across a restart.
    let second = trigger(&a.api);
    wait_status(&a.dir, &second, "succeeded");
    let Api { dir, daemon, .. } = a;
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
    let a = Api::start_in(dir);
    let mut resumed = Stream::open(&a.api, Some(&last));
    let third = trigger(&a.api);
    let frames = resumed.until(|f| f.kind == "job.succeeded" && f.data["job_id"] == third.as_str());
    assert!(
        kinds_of(&frames, &first).is_empty(),
        "replayed what was already seen: {frames:?}"
    );
    assert_eq!(
        kinds_of(&frames, &second),
        [
            "job.queued",
            "job.preflight",
            "job.started",
            "job.succeeded"
        ]
    );
    assert_eq!(
        kinds_of(&frames, &third),
        [
            "job.queued",
            "job.preflight",
            "job.started",
            "job.succeeded"
        ]
    );
    // A preflight frame has no id of its own: it is replayed with its claim.
    assert!(
        frames
            .iter()
            .all(|f| (f.kind == "job.preflight") == f.id.is_empty()),
        "{frames:?}"
    );
    let mut ids: Vec<&str> = frames
        .iter()
        .map(|f| f.id.as_str())
        .filter(|id| !id.is_empty())
        .collect();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "duplicate ids");
    // Only a token with events:ro may subscribe.
    assert_eq!(get(&a.api, "/events", Some(JOBS_RO)).status, 403);
    assert_eq!(get(&a.api, "/events", None).status, 401);
    let bad = raw(
        &a.api,
        format!("GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {EVENTS_RO}\r\nLast-Event-ID: nonsense\r\n\r\n").as_bytes(),
    );
    assert_eq!(bad.status, 400);
}
