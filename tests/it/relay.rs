//! Remote event relay ingress against the real daemon: every refusal with its
//! stable code, a ledger row and nothing enqueued; an accepted event runs the
//! local pipeline with the allowed baggage only; a replay and a redelivery are
//! acknowledged without a second run.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::http::{ADMIN, Answer, listening, raw};
use crate::pipelines::{Running, plugins};
use crate::support::TestDir;

const SECRET_V1: &str = "relay-secret-v1-0123456789abcdef";
const SECRET_V2: &str = "relay-secret-v2-0123456789abcdef";
const PATH: &str = "/ingest/peer/home-primary";

const PIPELINES: &str = "include: [tokens.yaml, relay-ingress.yaml]\npipelines:\n  - name: offsite\n    on: backup.ready\n    steps:\n      - uses: a\n";

fn receiver(tag: &str) -> Running {
    let dir = TestDir::new(&format!("relay-{tag}"));
    dir.fixture("pipe_step");
    write_relay_files(&dir);
    dir.config(&format!(
        "service:\n  tick_interval: 1s\n  max_workers: 2\napi:\n  enabled: true\n  listen: 127.0.0.1:0\n  auth:\n    tokens:\n      - token: {ADMIN}\n        scopes: [\"*\"]\n{}{PIPELINES}",
        plugins("")
    ));
    let lock = dir.run(&["config", "lock"]);
    assert_eq!(lock.code, 0, "config lock: {lock:?}");
    let check = dir.run(&["config", "check"]);
    assert_eq!(check.code, 0, "config check: {check:?}");
    let daemon = dir.start();
    let api = listening(&daemon, "api.listen");
    Running { dir, daemon, api }
}

fn write_relay_files(dir: &TestDir) {
    dir.write(
        "tokens.yaml",
        &format!(
            "tokens:\n  - {{name: relay-v1, key: {SECRET_V1}, scopes: [\"*\"]}}\n  - {{name: relay-v2, key: {SECRET_V2}, scopes: [\"*\"]}}\n"
        ),
    );
    dir.write(
        "relay-ingress.yaml",
        "remote_ingress:\n  listen_path: /ingest/peer\n  max_body_size: 2KB\n  allowed_clock_skew: 5m\n  require_key_id: true\n  peers:\n    - name: home-primary\n      secret_ref: relay-v1\n      key_id: v1\n      keys: [{key_id: v2, secret_ref: relay-v2}]\n      accept: [backup.ready]\n      baggage: {allow: [trace_id]}\n    - name: retired\n      enabled: false\n      secret_ref: relay-v1\n      key_id: v1\n",
    );
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn sign(secret: &str, path: &str, ts: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("POST\n{path}\n{ts}\n").as_bytes());
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// A request as a sender would build it, every part overridable.
struct Send<'a> {
    path: &'a str,
    peer: &'a str,
    key_id: Option<&'a str>,
    secret: &'a str,
    ts: i64,
    body: Vec<u8>,
    /// Signed over this body instead of the one sent (a tampered request).
    signed_body: Option<Vec<u8>>,
}

impl<'a> Send<'a> {
    fn new(body: &Value) -> Send<'a> {
        Send {
            path: PATH,
            peer: "home-primary",
            key_id: Some("v1"),
            secret: SECRET_V1,
            ts: now(),
            body: body.to_string().into_bytes(),
            signed_body: None,
        }
    }

    fn post(&self, addr: &str) -> Answer {
        let ts = self.ts.to_string();
        let signed = self.signed_body.as_ref().unwrap_or(&self.body);
        let sig = sign(self.secret, self.path, &ts, signed);
        let mut req = format!(
            "POST {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\nX-Ductile-Peer: {}\r\nX-Ductile-Timestamp: {ts}\r\nX-Ductile-Signature: {sig}\r\n",
            self.path,
            self.body.len(),
            self.peer
        );
        if let Some(k) = self.key_id {
            req.push_str(&format!("X-Ductile-Key-Id: {k}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(&self.body);
        raw(addr, &bytes)
    }
}

fn envelope(event_type: &str, event_id: &str) -> Value {
    json!({
        "event": {"type": event_type, "payload": {"archive_id": "nightly-1"}},
        "origin": {"instance": "home-primary", "plugin": "backup-runner", "job_id": "job-1", "event_id": event_id},
        "baggage": {"trace_id": "tr-789", "secret_plan": "do not carry"}
    })
}

fn jobs(r: &Running) -> i64 {
    r.dir.count("SELECT count(*) FROM job_queue")
}

#[test]
fn each_refusal_has_its_code_a_ledger_row_and_enqueues_nothing() {
    let r = receiver("refusals");
    let ok = envelope("backup.ready", "evt-1");
    let mut cases: Vec<(&str, u16, Send)> = Vec::new();
    let mut s = Send::new(&ok);
    s.body = json!({"event": {"type": "backup.ready", "payload": {"pad": "x".repeat(3000)}}, "origin": {"instance": "home-primary"}}).to_string().into_bytes();
    cases.push(("body_too_large", 413, s));
    let mut s = Send::new(&ok);
    s.path = "/ingest/peer/stranger";
    s.peer = "stranger";
    cases.push(("unknown_peer", 403, s));
    let mut s = Send::new(&ok);
    s.path = "/ingest/peer/retired";
    s.peer = "retired";
    cases.push(("unknown_peer", 403, s));
    let mut s = Send::new(&ok);
    s.key_id = Some("v9");
    cases.push(("bad_key_id", 401, s));
    let mut s = Send::new(&ok);
    s.key_id = None;
    cases.push(("bad_key_id", 401, s));
    let mut s = Send::new(&ok);
    s.ts = now() - 3600;
    cases.push(("stale_timestamp", 401, s));
    let mut s = Send::new(&ok);
    s.secret = "not-the-shared-secret";
    cases.push(("bad_signature", 401, s));
    let mut s = Send::new(&ok);
    s.key_id = Some("v2");
    cases.push(("bad_signature", 401, s));
    let mut s = Send::new(&ok);
    s.signed_body = Some(s.body.clone());
    s.body = envelope("backup.ready", "evt-2").to_string().into_bytes();
    cases.push(("bad_signature", 401, s));
    let mut s = Send::new(&ok);
    s.body = br#"{"event": {"payload": {}}, "origin": {"instance": "home-primary"}}"#.to_vec();
    cases.push(("bad_envelope", 400, s));
    let mut s = Send::new(&ok);
    s.body = envelope("backup.ready", "evt-3")
        .to_string()
        .replace("\"instance\":\"home-primary\"", "\"instance\":\"other\"")
        .into_bytes();
    cases.push(("bad_envelope", 400, s));
    cases.push((
        "event_not_accepted",
        403,
        Send::new(&envelope("report.generated", "evt-4")),
    ));
    for (code, status, send) in &cases {
        let a = send.post(&r.api);
        assert_eq!(a.status, *status, "{code}: {}", a.text());
        assert_eq!(a.json()["code"], *code, "{}", a.text());
        assert_eq!(a.json()["error"], "relay request refused");
    }
    let mut expected: Vec<&str> = cases.iter().map(|(c, _, _)| *c).collect();
    expected.sort_unstable();
    expected.dedup();
    r.dir.wait_until(
        Duration::from_secs(10),
        "every refusal in the ledger",
        || {
            let mut got: Vec<Option<String>> = r.dir.texts(
            "SELECT DISTINCT detail FROM decisions WHERE kind = 'relay_rejected' ORDER BY detail",
        );
            got.dedup();
            got.iter().flatten().map(String::as_str).collect::<Vec<_>>() == expected
        },
    );
    assert_eq!(jobs(&r), 0, "a refused request enqueued something");
    // Ten of the cases name home-primary in their path; the ledger counts them all.
    r.dir
        .wait_until(Duration::from_secs(10), "ten refusals of home-primary", || {
            r.dir.count("SELECT coalesce(sum(count), 0) FROM decisions WHERE kind = 'relay_rejected' AND scope = 'relay:home-primary'") == 10
        });
    let peers = r.dir.run(&["relay", "peers", "--json"]).code(0).json();
    let home = &peers["peers"][0];
    assert_eq!(home["name"], "home-primary");
    assert_eq!(home["key_ids"], json!(["v1", "v2"]));
    assert_eq!(home["last_accepted_at"], Value::Null);
    assert_eq!(home["refusals"], 10, "{peers}");
    assert_eq!(peers["peers"][1]["enabled"], false);
}

#[test]
fn an_accepted_event_runs_locally_with_allowed_baggage_and_a_replay_runs_once() {
    let r = receiver("accept");
    let send = Send::new(&envelope("backup.ready", "evt-10"));
    let a = send.post(&r.api);
    assert_eq!(a.status, 202, "{}", a.text());
    assert_eq!(a.json()["status"], "accepted");
    let root = a.json()["job_id"].as_str().unwrap().to_string();
    r.dir.wait_until(
        Duration::from_secs(30),
        "the pipeline step to succeed",
        || {
            r.dir
                .count("SELECT count(*) FROM job_queue WHERE plugin = 'a' AND status = 'succeeded'")
                == 1
        },
    );
    assert_eq!(
        r.dir
            .text(&format!(
                "SELECT submitted_by FROM job_queue WHERE id = '{root}'"
            ))
            .as_deref(),
        Some("relay:home-primary")
    );
    let context = r
        .dir
        .text("SELECT c.accumulated_json FROM job_queue j JOIN event_context c ON c.id = j.event_context_id WHERE j.plugin = 'a'")
        .unwrap();
    let context: Value = serde_json::from_str(&context).unwrap();
    assert_eq!(context["trace_id"], "tr-789", "{context}");
    assert!(context.get("secret_plan").is_none(), "{context}");

    // The same request again (a replay), and a fresh signature on the same
    // event (a redelivery after a lost answer): both acknowledged, neither run.
    let replay = send.post(&r.api);
    assert_eq!(replay.status, 200, "{}", replay.text());
    assert_eq!(replay.json()["status"], "duplicate");
    let mut again = Send::new(&envelope("backup.ready", "evt-10"));
    again.key_id = Some("v2");
    again.secret = SECRET_V2;
    let redelivered = again.post(&r.api);
    assert_eq!(redelivered.status, 200, "{}", redelivered.text());
    assert_eq!(
        r.dir
            .count("SELECT count(*) FROM job_queue WHERE plugin = 'a'"),
        1,
        "a duplicate ran again"
    );
    // The second key of the rotation is valid on its own for a new event.
    let mut rotated = Send::new(&envelope("backup.ready", "evt-11"));
    rotated.key_id = Some("v2");
    rotated.secret = SECRET_V2;
    assert_eq!(rotated.post(&r.api).status, 202);
    r.dir
        .wait_until(Duration::from_secs(30), "the second event to run", || {
            r.dir
                .count("SELECT count(*) FROM job_queue WHERE plugin = 'a' AND status = 'succeeded'")
                == 2
        });
}
