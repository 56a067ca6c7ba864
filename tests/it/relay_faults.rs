//! The relay under faults, between real daemons on loopback: a sender killed
//! -9 after the receiver accepted re-sends on restart and the receiver
//! answers duplicate; two senders fan in to one receiver, each event once;
//! and 1,000 events through a proxy that drops, delays and resets
//! connections arrive exactly once each.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::{ADMIN, call, listening};
use crate::pipelines::Running;
use crate::relay_send::{
    SECRET, free_port, receiver_dir, receiver_dir_for, sender_dir_as, start, succeeded,
};
use crate::support::TestDir;

const LONG: Duration = Duration::from_secs(60);

/// Triggers pipeline `ship` on `api` for `archive_id`.
fn ship(api: &str, archive_id: &str) {
    let body = json!({"payload": {"archive_id": archive_id, "trace_id": format!("tr-{archive_id}"), "secret_plan": "-"}});
    let answer = call(
        api,
        "POST",
        "/pipeline/ship",
        Some(ADMIN),
        Some(&body.to_string()),
    );
    assert_eq!(answer.status, 202, "{}", answer.text());
}

/// Outbox rows on `dir` in `status`.
fn outbox(dir: &TestDir, status: &str) -> i64 {
    dir.count(&format!(
        "SELECT count(*) FROM job_queue WHERE plugin = 'relay' AND command = 'send' AND status = '{status}'"
    ))
}

/// Accepted roots on the receiver `dir` per (peer, archive id).
fn accepted(dir: &TestDir) -> BTreeMap<(String, String), i64> {
    let conn = dir.db();
    let mut stmt = conn
        .prepare(
            "SELECT submitted_by, json_extract(payload, '$.payload.archive_id'), count(*) FROM job_queue WHERE plugin = 'relay' AND command = 'accept' GROUP BY 1, 2",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok((
            (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
            r.get::<_, i64>(2)?,
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn accept_roots(dir: &TestDir) -> i64 {
    dir.count("SELECT count(*) FROM job_queue WHERE plugin = 'relay' AND command = 'accept'")
}

#[test]
fn a_sender_killed_after_the_receiver_accepted_resends_and_the_receiver_answers_duplicate() {
    let port = free_port();
    let b = start(receiver_dir("crash", port, SECRET));
    let a_dir = sender_dir_as(
        "crash",
        "home-primary",
        &format!("http://127.0.0.1:{port}"),
        "",
        "",
    );
    let daemon = a_dir.start_with_env(&[("DUCTILE_FAULT", "after-answer")]);
    daemon.wait_log(LONG, "fault injection armed");
    let api = listening(&daemon, "api.listen");
    ship(&api, "n-crash");
    daemon.wait_log(
        LONG,
        "fault injection: killing this process at `after-answer`, pass 1",
    );
    assert_eq!(daemon.wait_exit(LONG), -1, "killed by a signal");
    // B accepted and ran it; A died before writing down that it was sent.
    b.dir
        .wait_until(LONG, "B to run the event", || succeeded(&b.dir, "a") == 1);
    assert_eq!(accept_roots(&b.dir), 1);
    assert_eq!(outbox(&a_dir, "running"), 1, "the orphan on A");
    let id = a_dir
        .text("SELECT id FROM job_queue WHERE plugin = 'relay' AND command = 'send'")
        .unwrap();
    // A restarted: the orphan is requeued and sent again; B knows it.
    let a = Running {
        api: String::new(),
        daemon: a_dir.start(),
        dir: a_dir,
    };
    a.dir.wait_until(LONG, "the outbox row to succeed", || {
        outbox(&a.dir, "succeeded") == 1
    });
    let answers = a.dir.texts(&format!(
        "SELECT result FROM job_log WHERE job_id = '{id}' AND status = 'succeeded'"
    ));
    assert_eq!(answers.len(), 1, "{answers:?}");
    let answer: Value = serde_json::from_str(answers[0].as_deref().unwrap()).unwrap();
    assert_eq!(answer["remote"]["status"], 200, "{answer}");
    assert_eq!(answer["remote"]["duplicate"], true, "{answer}");
    assert_eq!(
        a.dir.count(&format!(
            "SELECT count(*) FROM job_attempts WHERE job_id = '{id}'"
        )),
        2,
        "the interrupted attempt and the re-send"
    );
    // Exactly one run on B, and one acceptance event.
    assert_eq!(accept_roots(&b.dir), 1);
    assert_eq!(succeeded(&b.dir, "a"), 1);
    assert_eq!(
        b.dir
            .count("SELECT count(*) FROM job_queue WHERE plugin = 'a'"),
        1
    );
    assert_eq!(
        b.dir
            .count("SELECT count(*) FROM system_events WHERE kind = 'relay.accepted'"),
        1
    );
}

#[test]
fn two_senders_fan_in_to_one_receiver_each_event_once() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let b = start(receiver_dir_for(
        "fanin",
        port,
        SECRET,
        &["home-east", "home-west"],
        true,
    ));
    let east = start(sender_dir_as("fanin-east", "home-east", &url, "", ""));
    let west = start(sender_dir_as("fanin-west", "home-west", &url, "", ""));
    // The same archive ids from both: B's dedupe is per peer, so six events.
    for id in ["n-1", "n-2", "n-3"] {
        ship(&east.api, id);
        ship(&west.api, id);
    }
    for s in [&east, &west] {
        s.dir.wait_until(LONG, "the sender's outbox to drain", || {
            outbox(&s.dir, "succeeded") == 3
        });
    }
    b.dir
        .wait_until(LONG, "B to run six events", || succeeded(&b.dir, "a") == 6);
    let got = accepted(&b.dir);
    let mut want = BTreeMap::new();
    for peer in ["relay:home-east", "relay:home-west"] {
        for id in ["n-1", "n-2", "n-3"] {
            want.insert((peer.to_string(), id.to_string()), 1);
        }
    }
    assert_eq!(got, want);
    assert_eq!(
        b.dir
            .count("SELECT count(*) FROM job_queue WHERE plugin = 'a'"),
        6
    );
    let peers = b.dir.run(&["relay", "peers", "--json"]).code(0).json();
    let rows = peers["peers"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["home-east", "home-west"], "{peers}");
    for p in rows {
        assert!(p["last_accepted_at"].is_string(), "{peers}");
        assert_eq!(p["refusals"], 0, "{peers}");
    }
}

// ------------------------------------------------------------ the fault proxy

/// xorshift, seeded per run and printed, so a failing run can be replayed
/// with `DUCTILE_RELAY_PROXY_SEED`.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// What the proxy does to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Forwarded and answered.
    Pass,
    /// Held up to 200 ms, then forwarded and answered.
    Delay(Duration),
    /// Closed (FIN) before the receiver saw it.
    DropBefore,
    /// Reset (RST) before the receiver saw it.
    ResetBefore,
    /// Forwarded, the receiver answered (and committed), then closed
    /// without passing the answer on.
    DropAfter,
    /// As `DropAfter`, but reset.
    ResetAfter,
}

/// No more than this share of requests is faulted (delays included).
const FAULT_SHARE_PERCENT: u64 = 30;
/// No more faults than this in a run...
const MAX_FAULTS: u64 = 400;
/// ...and none after this long, so the run converges.
const FAULT_WINDOW: Duration = Duration::from_secs(30);
const MAX_DELAY_MS: u64 = 200;

/// Counts of what the proxy did.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    faulted: AtomicU64,
    delays: AtomicU64,
    drops_before: AtomicU64,
    resets_before: AtomicU64,
    drops_after: AtomicU64,
    resets_after: AtomicU64,
}

struct Decider {
    rng: Mutex<Rng>,
    started: Instant,
    tally: Tally,
}

impl Decider {
    fn decide(&self) -> Fault {
        let t = &self.tally;
        let n = t.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let mut rng = self.rng.lock().unwrap();
        let faulted = t.faulted.load(Ordering::SeqCst);
        let room = (faulted + 1) * 100 <= n * FAULT_SHARE_PERCENT
            && faulted < MAX_FAULTS
            && self.started.elapsed() < FAULT_WINDOW;
        if !room || rng.below(100) >= FAULT_SHARE_PERCENT {
            return Fault::Pass;
        }
        t.faulted.fetch_add(1, Ordering::SeqCst);
        let (fault, counter) = match rng.below(5) {
            0 => (
                Fault::Delay(Duration::from_millis(1 + rng.below(MAX_DELAY_MS))),
                &t.delays,
            ),
            1 => (Fault::DropBefore, &t.drops_before),
            2 => (Fault::ResetBefore, &t.resets_before),
            3 => (Fault::DropAfter, &t.drops_after),
            _ => (Fault::ResetAfter, &t.resets_after),
        };
        counter.fetch_add(1, Ordering::SeqCst);
        fault
    }
}

/// A TCP proxy in front of `upstream` that reads each HTTP/1.1 request,
/// decides its fault and acts it out. A reset leaves the request's body
/// unread in the socket, so closing it makes the kernel answer RST.
struct Proxy {
    addr: String,
    stop: Arc<AtomicBool>,
    decider: Arc<Decider>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: Option<JoinHandle<()>>,
}

/// How long a proxied connection may sit idle before the proxy gives up on it.
const IDLE: Duration = Duration::from_secs(20);

impl Proxy {
    fn start(upstream: &str, seed: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let decider = Arc::new(Decider {
            rng: Mutex::new(Rng(seed | 1)),
            started: Instant::now(),
            tally: Tally::default(),
        });
        let threads = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (stop, decider, threads) = (stop.clone(), decider.clone(), threads.clone());
            let upstream = upstream.to_string();
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let (decider, upstream) = (decider.clone(), upstream.clone());
                    let t = std::thread::spawn(move || serve(client, &upstream, &decider));
                    threads.lock().unwrap().push(t);
                }
            })
        };
        Proxy {
            addr,
            stop,
            decider,
            threads,
            accept: Some(accept),
        }
    }

    fn tally(&self) -> &Tally {
        &self.decider.tally
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for t in self.threads.lock().unwrap().drain(..) {
            let _ = t.join();
        }
    }
}

/// The end of an HTTP head and its `Content-Length`.
fn head(bytes: &[u8]) -> Option<(usize, usize)> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let len = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    assert!(
        !text.contains("transfer-encoding: chunked"),
        "the proxy reads Content-Length messages only: {text}"
    );
    Some((end, len))
}

/// One request from `client`, read without consuming its body: the head is
/// found by peeking, consumed exactly, and the body is peeked. Returns the
/// whole request and whether its body is still unread in the socket (only
/// then can closing it reset the connection). `None` once the client is gone.
fn next_request(client: &mut TcpStream) -> Option<(Vec<u8>, bool)> {
    let mut buf = vec![0u8; 256 * 1024];
    let deadline = Instant::now() + IDLE;
    let (head_len, body_len) = loop {
        let n = client.peek(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        if let Some(h) = head(&buf[..n]) {
            break h;
        }
        // The rest of the head is in flight: it is a few bytes away.
        if Instant::now() > deadline {
            return None;
        }
        std::thread::yield_now();
    };
    let mut request = vec![0u8; head_len];
    client.read_exact(&mut request).ok()?;
    if body_len == 0 {
        return Some((request, false));
    }
    let n = client.peek(&mut buf).ok()?;
    if n >= body_len {
        request.extend_from_slice(&buf[..body_len]);
        return Some((request, true));
    }
    let mut body = vec![0u8; body_len];
    client.read_exact(&mut body).ok()?;
    request.extend_from_slice(&body);
    Some((request, false))
}

/// One answer from the receiver, whole.
fn read_answer(upstream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some((head_len, body_len)) = head(&got) {
            if got.len() >= head_len + body_len {
                return Some(got);
            }
        }
        let n = upstream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&chunk[..n]);
    }
}

/// Holds a request for `d` by waiting for the client to send more or hang
/// up (it sends nothing until it has an answer); true when it hung up.
fn hold(client: &mut TcpStream, d: Duration) -> bool {
    let mut byte = [0u8; 1];
    client.set_read_timeout(Some(d)).unwrap();
    let gone = matches!(client.peek(&mut byte), Ok(0));
    client.set_read_timeout(Some(IDLE)).unwrap();
    gone
}

/// Proxies one client connection, request by request, until either side
/// closes or a fault ends it.
fn serve(mut client: TcpStream, upstream_addr: &str, decider: &Decider) {
    client.set_read_timeout(Some(IDLE)).unwrap();
    let mut upstream: Option<TcpStream> = None;
    while let Some((request, body_unread)) = next_request(&mut client) {
        let fault = decider.decide();
        let mut unread = if body_unread {
            head(&request).map_or(0, |(_, len)| len)
        } else {
            0
        };
        // Reads the body still in the socket (its bytes are in `request`).
        let mut consume_body = |client: &mut TcpStream| -> bool {
            let mut rest = vec![0u8; std::mem::take(&mut unread)];
            client.read_exact(&mut rest).is_ok()
        };
        match fault {
            // Closed with the body unread: the kernel resets it (when the
            // body had to be read to be seen whole, this is a plain close).
            Fault::ResetBefore => return,
            Fault::DropBefore => {
                consume_body(&mut client);
                return;
            }
            Fault::Delay(d) => {
                if !consume_body(&mut client) || hold(&mut client, d) {
                    return;
                }
            }
            Fault::Pass | Fault::DropAfter | Fault::ResetAfter => {}
        }
        if upstream.is_none() {
            let Ok(s) = TcpStream::connect(upstream_addr) else {
                return;
            };
            s.set_read_timeout(Some(IDLE)).unwrap();
            upstream = Some(s);
        }
        let Some(up) = upstream.as_mut() else { return };
        if up.write_all(&request).is_err() {
            return;
        }
        let Some(answer) = read_answer(up) else {
            return;
        };
        match fault {
            Fault::ResetAfter => return,
            Fault::DropAfter => {
                consume_body(&mut client);
                return;
            }
            _ => {}
        }
        if !consume_body(&mut client) || client.write_all(&answer).is_err() {
            return;
        }
        let closing = String::from_utf8_lossy(&answer[..head(&answer).unwrap().0])
            .to_ascii_lowercase()
            .contains("connection: close");
        if closing {
            return;
        }
    }
}

#[test]
fn a_thousand_events_through_a_faulty_proxy_arrive_exactly_once() {
    const EVENTS: usize = 1_000;
    const CLIENTS: usize = 4;
    let seed = std::env::var("DUCTILE_RELAY_PROXY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::from(std::process::id()) << 16 | 0x5eed);
    eprintln!("relay fault proxy: seed {seed}");
    let started = Instant::now();
    let b = start(receiver_dir_for(
        "proxy",
        free_port(),
        SECRET,
        &["home-primary"],
        false,
    ));
    let proxy = Proxy::start(&b.api, seed);
    let a = start(sender_dir_as(
        "proxy",
        "home-primary",
        &format!("http://{}", proxy.addr),
        "",
        "",
    ));
    std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let api = a.api.as_str();
            s.spawn(move || {
                for i in (c..EVENTS).step_by(CLIENTS) {
                    ship(api, &format!("n-{i}"));
                }
            });
        }
    });
    a.dir.wait_until(
        Duration::from_secs(90),
        "every outbox row to succeed",
        || outbox(&a.dir, "succeeded") == EVENTS as i64,
    );
    let t = proxy.tally();
    let load = |c: &AtomicU64| c.load(Ordering::SeqCst);
    eprintln!(
        "relay fault proxy: {EVENTS} events, {} requests, {} faulted ({} delays, {} drops and {} resets before the receiver, {} drops and {} resets after it answered), {:.1}s",
        load(&t.requests),
        load(&t.faulted),
        load(&t.delays),
        load(&t.drops_before),
        load(&t.resets_before),
        load(&t.drops_after),
        load(&t.resets_after),
        started.elapsed().as_secs_f64()
    );
    // Nothing left behind or given up on A.
    assert_eq!(
        a.dir
            .count("SELECT count(*) FROM job_queue WHERE plugin = 'relay' AND command = 'send'"),
        EVENTS as i64
    );
    // B ran each event once: one accepted root per archive id.
    let got = accepted(&b.dir);
    assert_eq!(got.len(), EVENTS, "distinct events accepted on B");
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "accepted more than once: {twice:?}");
    assert!(got.keys().all(|(peer, _)| peer == "relay:home-primary"));
    assert_eq!(accept_roots(&b.dir), EVENTS as i64);
    assert_eq!(
        b.dir
            .count("SELECT count(*) FROM system_events WHERE kind = 'relay.accepted'"),
        EVENTS as i64
    );
    // The faults happened, and every answer lost after B committed came
    // back as a duplicate on a later attempt.
    let after = load(&t.drops_after) + load(&t.resets_after);
    let before = load(&t.drops_before) + load(&t.resets_before);
    assert!(after > 0 && before > 0 && load(&t.delays) > 0);
    assert!(load(&t.faulted) * 100 <= load(&t.requests) * FAULT_SHARE_PERCENT);
    let duplicates = a.dir.count(
        "SELECT count(*) FROM job_log WHERE plugin = 'relay' AND command = 'send' AND status = 'succeeded' AND json_extract(result, '$.remote.duplicate') = 1",
    ) as u64;
    assert!(
        (1..=after).contains(&duplicates),
        "{duplicates} duplicate answers for {after} answers lost after the receiver committed"
    );
    // One attempt per request the proxy saw: each lost one was retried.
    let attempts = a.dir.count(
        "SELECT count(*) FROM job_attempts j JOIN job_queue q ON q.id = j.job_id WHERE q.plugin = 'relay' AND q.command = 'send'",
    ) as u64;
    assert_eq!(attempts, load(&t.requests));
    assert_eq!(attempts, EVENTS as u64 + after + before);
    // The resets reached the sender as resets, the drops as closed connections.
    let errors = a.dir.texts(
        "SELECT last_error FROM job_log WHERE plugin = 'relay' AND command = 'send' AND status != 'succeeded'",
    );
    assert_eq!(errors.len() as u64, after + before);
    let reset = errors
        .iter()
        .filter(|e| e.as_deref().unwrap_or("").contains("reset"))
        .count();
    assert!(reset > 0 && reset < errors.len(), "{errors:?}");
    drop(a);
    drop(proxy);
    drop(b);
}
