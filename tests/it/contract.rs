//! The API's contract with its callers, checked against a live daemon:
//! `schemathesis` (PyPI, in `target/pyenv`) drives every documented operation
//! from the served `/openapi.json` and checks what comes back against it; the
//! endless `/events` stream is checked on its own; then the token rules
//! (webhook `auth: token`, `tokens.yaml` scope files, bearer spellings, read
//! and write commands) and requests that must change nothing.

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::http::{
    ADMIN, Answer, Api, HOOK_SECRET, JOBS_RO, PLUGIN_RO, PLUGIN_RW, WEBHOOKS, call, get, hook, raw,
    read_answer, sign, write_tree,
};
use crate::support::{Background, TestDir};
use crate::tools::tool;

const LONG: Duration = Duration::from_secs(30);

/// The checks every schemathesis run makes. `negative_data_rejection` is left
/// out: for free-text query filters it sends `0`, `false` or `null` as
/// "not a string", which a query string cannot tell from the string, so no
/// server could refuse them.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,ignored_auth";

/// `st run` against the API of `a` with the shared options and `extra`; panics
/// with schemathesis' report unless it passes.
fn schemathesis(a: &Api, extra: &[&str]) {
    let mut cmd = Command::new(tool("st"));
    cmd.current_dir(&a.dir.path)
        // Nothing leaves the machine.
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .args(["run", &format!("http://{}/openapi.json", a.api)])
        .args(["--experimental", "openapi-3.1"])
        .args(["--checks", CHECKS])
        .args(["--data-generation-method", "all"])
        .args(["--header", &format!("Authorization: Bearer {ADMIN}")])
        .args(["--hypothesis-max-examples", "20"])
        .arg("--hypothesis-derandomize")
        .args(["--request-timeout", "10000"])
        .args(["--exclude-path", "/events"])
        .args(["--experimental-no-failfast", "--no-color"])
        .args(["--code-sample-style", "curl"])
        .args(extra);
    let run = Background::start(cmd).finish(Duration::from_secs(180));
    let report = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 0, "schemathesis found problems:\n{report}");
    assert!(
        report.contains(" passed in "),
        "no verdict from schemathesis:\n{report}"
    );
}

/// Every documented operation, driven from the served document with bounded,
/// deterministic examples: no server error, and every status, content type,
/// header and body as documented; a route needing a token refuses a request
/// without one. The coverage phase adds the edge cases (boundary values, other
/// methods, missing and repeated parameters); `/job-logs`, whose ten optional
/// parameters multiply into a thousand such cases, gets the generated examples
/// only.
#[test]
fn the_live_api_conforms_to_its_openapi_document() {
    let a = Api::start("contract-st");
    // One job, so the job routes have rows to list.
    let r = call(&a.api, "POST", "/plugin/echo/poll", Some(ADMIN), Some("{}"));
    assert_eq!(r.status, 202, "{}", r.text());
    schemathesis(
        &a,
        &[
            "--experimental",
            "coverage-phase",
            "--exclude-path",
            "/job-logs",
        ],
    );
    schemathesis(&a, &["--include-path", "/job-logs"]);
    assert_eq!(get(&a.api, "/healthz", None).status, 200);
}

/// The served OpenAPI document. It is large enough that the listener sends it
/// chunked, so it is read to the end of the connection and de-chunked here.
pub(crate) fn served_document(addr: &str) -> Value {
    served_document_at(addr, "/openapi.json")
}

/// The OpenAPI document served at `path` (under a base path).
pub(crate) fn served_document_at(addr: &str, path: &str) -> Value {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let (head, mut rest) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return serde_json::from_str(rest).unwrap();
    }
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    serde_json::from_str(&body).unwrap()
}

/// The statuses the served document lists for `method path`.
fn documented(doc: &Value, method: &str, path: &str) -> Vec<u16> {
    doc["paths"][path][method]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} is not documented"))
        .keys()
        .map(|k| k.parse().unwrap())
        .collect()
}

/// Opens `/events` with `token` and returns the socket, kept open, and the
/// answer's head.
fn subscribe(addr: &str, token: &str, extra: &str) -> (TcpStream, Answer) {
    use std::io::Write;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    write!(
        s,
        "GET /events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n{extra}\r\n"
    )
    .unwrap();
    let head = read_answer(&mut s);
    (s, head)
}

/// The stream schemathesis leaves out: each status it can answer is one the
/// document lists, with the documented content type.
#[test]
fn the_event_stream_answers_only_documented_statuses() {
    let a = Api::start_with("contract-sse", "  max_event_streams: 1\n", WEBHOOKS);
    let doc = served_document(&a.api);
    let listed = documented(&doc, "get", "/events");
    let media = doc["paths"]["/events"]["get"]["responses"]["200"]["content"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let events_token = crate::http::EVENTS_RO;
    let (open, head) = subscribe(&a.api, events_token, "");
    assert_eq!(head.status, 200);
    assert!(
        head.header("content-type")
            .is_some_and(|t| t.starts_with(&media)),
        "{:?}",
        head.headers
    );
    // The one stream allowed is open: the next is refused, as documented.
    let (_, busy) = subscribe(&a.api, events_token, "");
    assert_eq!(busy.status, 503, "{}", busy.text());
    drop(open);
    let answers = [
        (busy, 503),
        (get(&a.api, "/events", None), 401),
        (get(&a.api, "/events", Some(JOBS_RO)), 403),
        (get(&a.api, "/events?from=1", Some(events_token)), 400),
        (
            subscribe(&a.api, events_token, "Last-Event-ID: nonsense\r\n").1,
            400,
        ),
    ];
    for (answer, want) in &answers {
        assert_eq!(answer.status, *want, "{}", answer.text());
        assert!(
            listed.contains(want),
            "{want} is not documented: {listed:?}"
        );
        // Every refusal is a JSON error, as the document says.
        assert_eq!(
            answer.header("content-type"),
            Some("application/json"),
            "{want}"
        );
        assert!(answer.json()["error"].is_string(), "{want}");
    }
    assert_eq!(answers[1].0.header("www-authenticate"), Some("Bearer"));
}

/// What schemathesis found, pinned: a path two templates match belongs to the
/// concrete one, and a query parameter given twice is refused.
#[test]
fn ambiguous_paths_and_repeated_parameters_are_refused_not_guessed() {
    let a = Api::start("contract-routes");
    let r = call(
        &a.api,
        "POST",
        "/plugin/echo/openapi.json",
        Some(ADMIN),
        Some("{}"),
    );
    assert_eq!(r.status, 405, "{}", r.text());
    assert_eq!(r.header("allow"), Some("GET"));
    assert_eq!(get(&a.api, "/plugin/echo/openapi.json", None).status, 200);
    let r = get(&a.api, "/jobs?status=failed&status=dead", Some(ADMIN));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.json()["error"],
        "query parameter `status` is given more than once"
    );
    assert_eq!(
        get(&a.api, "/jobs?status=failed&limit=5", Some(ADMIN)).status,
        200
    );
    assert_eq!(
        a.dir.count("SELECT COUNT(*) FROM job_queue"),
        0,
        "nothing was enqueued"
    );
}

// ------------------------------------------------------------------ tokens

const TOKEN_HOOKS: &str = "webhooks:\n  endpoints:\n    - name: bearer\n      path: /webhook/bearer\n      plugin: echo\n      command: handle\n      secret_ref: hook-secret\n      auth: token\n    - name: header\n      path: /webhook/header\n      plugin: echo\n      command: handle\n      secret_ref: hook-secret\n      auth: token\n      token_header: X-Hook-Token\n";

#[test]
fn a_token_webhook_takes_its_key_as_a_bearer_token_or_in_its_token_header() {
    let a = Api::start_with("contract-token-hook", "", TOKEN_HOOKS);
    let body = br#"{"action":"push"}"#;
    let post = |path: &str, headers: &[(&str, String)]| hook(&a.hooks, path, body, headers);
    let bearer = |key: &str| ("Authorization", format!("Bearer {key}"));
    let cases: Vec<(&str, Answer, u16)> = vec![
        (
            "good bearer",
            post("/webhook/bearer", &[bearer(HOOK_SECRET)]),
            202,
        ),
        (
            "wrong bearer",
            post("/webhook/bearer", &[bearer("nope")]),
            403,
        ),
        ("no key", post("/webhook/bearer", &[]), 403),
        (
            "an HMAC signature is not the key",
            post(
                "/webhook/bearer",
                &[("X-Ductile-Signature-256", sign(HOOK_SECRET, body))],
            ),
            403,
        ),
        (
            "the key in signature_header, without token_header",
            post(
                "/webhook/bearer",
                &[("X-Ductile-Signature-256", HOOK_SECRET.to_string())],
            ),
            202,
        ),
        (
            "the key in token_header",
            post("/webhook/header", &[("X-Hook-Token", HOOK_SECRET.into())]),
            202,
        ),
        (
            "a wrong key in token_header",
            post("/webhook/header", &[("X-Hook-Token", "nope".into())]),
            403,
        ),
        (
            "a bearer token still works beside token_header",
            post("/webhook/header", &[bearer(HOOK_SECRET)]),
            202,
        ),
        (
            "token_header replaces signature_header",
            post(
                "/webhook/header",
                &[("X-Ductile-Signature-256", HOOK_SECRET.to_string())],
            ),
            403,
        ),
    ];
    let mut accepted = 0;
    for (what, r, want) in &cases {
        assert_eq!(r.status, *want, "{what}: {}", r.text());
        if *want == 202 {
            assert_eq!(r.json()["status"], "queued", "{what}");
            accepted += 1;
        } else {
            assert_eq!(r.json()["error"], "forbidden", "{what}");
        }
    }
    assert_eq!(
        a.dir.count("SELECT COUNT(*) FROM job_queue"),
        accepted,
        "only the accepted requests were enqueued"
    );
    assert_eq!(
        a.dir
            .count("SELECT COUNT(*) FROM job_queue WHERE submitted_by = 'webhook:header'"),
        2
    );
    // The view shows the header's name (never the key).
    let view = get(&a.api, "/config/view", Some(ADMIN));
    assert_eq!(
        view.json()["webhooks"]["endpoints"][1]["token_header"],
        "X-Hook-Token"
    );
    assert!(!view.text().contains(HOOK_SECRET));
}

const READER_KEY: &str = "reader-key-0123456789abcdef";
const TAMPERED_KEY: &str = "tampered-key-0123456789abcdef";

#[test]
fn tokens_yaml_tokens_authorise_by_their_pinned_scope_files() {
    let dir = TestDir::new("contract-tokens");
    write_tree(&dir, "", WEBHOOKS);
    let reader = r#"{"scopes": ["read:jobs", "echo:rw"]}"#;
    let pinned = r#"{"scopes": ["jobs:ro"]}"#;
    dir.write("scopes/reader.json", reader);
    // What the pin approved was jobs:ro; the file now says `*`.
    dir.write("scopes/tampered.json", r#"{"scopes": ["*"]}"#);
    let pin = |text: &str| format!("blake3:{}", blake3::hash(text.as_bytes()).to_hex());
    dir.write(
        "tokens.yaml",
        &format!(
            "tokens:\n  - name: hook-secret\n    key: {HOOK_SECRET}\n  - name: reader\n    key: {READER_KEY}\n    scopes_file: scopes/reader.json\n    scopes_hash: {}\n  - name: tampered\n    key: {TAMPERED_KEY}\n    scopes_file: scopes/tampered.json\n    scopes_hash: {}\n",
            pin(reader),
            pin(pinned)
        ),
    );
    let a = Api::start_in(dir);
    // The dropped token is named in the log, with its file.
    a.daemon.wait_log(LONG, "token `tampered` dropped");
    let line = a
        .daemon
        .log()
        .into_iter()
        .find(|l| l.contains("token `tampered` dropped"))
        .unwrap();
    assert!(
        line.contains("scopes/tampered.json") && line.contains("does not match scopes_hash"),
        "{line}"
    );
    let cases: Vec<(&str, &str, &str, u16)> = vec![
        ("GET", "/jobs", READER_KEY, 200),
        ("GET", "/job-logs", READER_KEY, 200),
        ("POST", "/plugin/echo/poll", READER_KEY, 202),
        ("POST", "/plugin/echo/handle", READER_KEY, 202),
        // echo:rw is that plugin only: not the plugin area.
        ("GET", "/topology", READER_KEY, 403),
        ("GET", "/config/view", READER_KEY, 403),
        ("POST", "/system/reload", READER_KEY, 403),
        ("GET", "/events", READER_KEY, 403),
        // Dropped: unknown, whatever its file claims.
        ("GET", "/jobs", TAMPERED_KEY, 401),
        ("GET", "/config/view", TAMPERED_KEY, 401),
    ];
    for (method, path, key, want) in &cases {
        let body = (*method == "POST").then_some("{}");
        let r = call(&a.api, method, path, Some(key), body);
        assert_eq!(r.status, *want, "{method} {path}: {}", r.text());
    }
    // The scheme is case-insensitive (RFC 9110); anything else around the
    // token is not that token.
    let with = |value: &str| {
        raw(
            &a.api,
            format!("GET /jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {value}\r\n\r\n")
                .as_bytes(),
        )
    };
    let upper_key = READER_KEY.to_uppercase();
    let spellings: Vec<(String, u16)> = vec![
        (format!("Bearer {READER_KEY}"), 200),
        (format!("bearer {READER_KEY}"), 200),
        (format!("BEARER {READER_KEY}"), 200),
        (format!("Bearer  {READER_KEY}"), 401),
        (format!("Bearer\t{READER_KEY}"), 401),
        (format!("Bearer {READER_KEY}x"), 401),
        (format!("Bearer {upper_key}"), 401),
        (format!("Bearer{READER_KEY}"), 401),
        (format!("Basic {READER_KEY}"), 401),
        (READER_KEY.to_string(), 401),
        ("Bearer".to_string(), 401),
    ];
    for (value, want) in &spellings {
        let r = with(value);
        assert_eq!(r.status, *want, "Authorization: {value:?}: {}", r.text());
        if *want == 401 {
            assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{value:?}");
        }
    }
    // Trailing whitespace is not part of a header value (RFC 9110 §5.5): the
    // listener trims it before the token is read, so it authorises.
    assert_eq!(with(&format!("Bearer {READER_KEY} ")).status, 200);
}

// ------------------------------------------------------------------ commands

#[test]
fn a_read_scope_triggers_read_commands_and_only_a_write_scope_write_ones() {
    let dir = TestDir::new("contract-rw");
    write_tree(&dir, "", WEBHOOKS);
    dir.fixture("ok_basic");
    let config = dir.path.join("config.yaml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    assert!(text.ends_with("      message: hello\n"), "{text}");
    text.push_str("  ok_basic: {}\n");
    std::fs::write(&config, text).unwrap();
    let one_plugin_ro = "one-plugin-ro-0123456789abcdef";
    dir.write(
        "tokens.yaml",
        &format!(
            "tokens:\n  - name: hook-secret\n    key: {HOOK_SECRET}\n  - name: ok-basic-reader\n    key: {one_plugin_ro}\n    scopes: [\"ok_basic:ro\"]\n"
        ),
    );
    let a = Api::start_in(dir);
    let cases: Vec<(&str, &str, u16)> = vec![
        // handle is a write command of ok_basic, poll and health read ones.
        ("/plugin/ok_basic/poll", PLUGIN_RO, 202),
        ("/plugin/ok_basic/health", PLUGIN_RO, 202),
        ("/plugin/ok_basic/handle", PLUGIN_RO, 403),
        ("/plugin/ok_basic/poll", PLUGIN_RW, 202),
        ("/plugin/ok_basic/handle", PLUGIN_RW, 202),
        ("/plugin/ok_basic/poll", one_plugin_ro, 202),
        ("/plugin/ok_basic/handle", one_plugin_ro, 403),
        // A per-plugin scope is that plugin only.
        ("/plugin/echo/poll", one_plugin_ro, 403),
        ("/plugin/ok_basic/handle", ADMIN, 202),
        ("/plugin/ok_basic/handle", JOBS_RO, 403),
    ];
    let mut accepted = 0;
    for (path, token, want) in &cases {
        let r = call(&a.api, "POST", path, Some(token), Some("{}"));
        assert_eq!(r.status, *want, "{path} with {token}: {}", r.text());
        if *want == 202 {
            accepted += 1;
        }
    }
    assert_eq!(
        a.dir.count("SELECT COUNT(*) FROM job_queue"),
        accepted,
        "a refused trigger enqueues nothing"
    );
    // The document says which scope each command needs.
    let doc = served_document(&a.api);
    let description = |c: &str| {
        doc["paths"][format!("/plugin/ok_basic/{c}")]["post"]["description"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(description("handle").contains("needs scope `plugin:rw` or `*`"));
    assert!(description("poll").contains("`plugin:ro`, `plugin:rw` or `*`"));
}

// ------------------------------------------------------------------ bad input

#[test]
fn refused_webhook_requests_change_nothing() {
    let a = Api::start("contract-bad-hooks");
    let body = br#"{"action":"push"}"#;
    let other = br#"{"action":"delete"}"#;
    let signed_for_body = sign(HOOK_SECRET, body);
    let delivery = |n: &str| ("X-GitHub-Delivery", n.to_string());
    let signature = |s: &str| ("X-Hub-Signature-256", s.to_string());
    let raw_path = |path: &str| {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\nX-Hub-Signature-256: {signed_for_body}\r\nX-GitHub-Delivery: d-path\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        raw(&a.hooks, &req)
    };
    let cases: Vec<(&str, Answer, u16)> = vec![
        (
            "a valid signature over another body",
            hook(
                &a.hooks,
                "/webhook/github",
                other,
                &[signature(&signed_for_body), delivery("d-1")],
            ),
            403,
        ),
        // `..` and `.` segments are refused before any endpoint is looked up.
        (
            "`..` in the path",
            raw_path("/webhook/../webhook/github"),
            400,
        ),
        (
            "`..` encoded",
            raw_path("/webhook/%2e%2e/webhook/github"),
            400,
        ),
        ("`.` in the path", raw_path("/webhook/./github"), 400),
        // Endpoints match their path exactly.
        ("a trailing slash", raw_path("/webhook/github/"), 404),
        ("an empty segment", raw_path("/webhook//github"), 404),
        ("another case", raw_path("/Webhook/GitHub"), 404),
        ("a path below it", raw_path("/webhook/github/x"), 404),
    ];
    for (what, r, want) in &cases {
        assert_eq!(r.status, *want, "{what}: {}", r.text());
        assert!(r.json()["error"].is_string(), "{what}");
    }
    assert_eq!(
        a.dir.count("SELECT COUNT(*) FROM job_queue"),
        0,
        "a refused request enqueues nothing"
    );
    for addr in [&a.hooks, &a.api] {
        assert_eq!(get(addr, "/healthz", None).status, 200);
    }
    // And the endpoint still takes a good delivery afterwards.
    let r = hook(
        &a.hooks,
        "/webhook/github",
        body,
        &[signature(&signed_for_body), delivery("d-2")],
    );
    assert_eq!(r.status, 202, "{}", r.text());
}
