//! The hub over real sockets: a tiny_http server on port 0 serving `/events`
//! from the hub, and raw TCP clients that parse the chunked SSE stream.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde_json::{Value, json};

use super::*;
use crate::clock::parse_ts;
use crate::store::completion::{self, AttemptRecord, Completion, Decision};
use crate::store::queue::{self, NewJob, SubmittedBy};
use crate::store::testing::TempDir;

const DEADLINE: Duration = Duration::from_secs(20);

/// Waits until `cond` holds, failing the test at the deadline.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting until {what}");
        // forbid: condition re-check. Yields between looks at state owned by other threads.
        std::thread::yield_now();
    }
}

/// A hub and a server that answers every request as `GET /events`.
struct Served {
    hub: Hub,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Served {
    fn start(db: &Path, max_streams: usize, heartbeat: Duration) -> Served {
        let hub = Hub::start_with(
            db.to_path_buf(),
            Synchronous::Normal,
            max_streams,
            heartbeat,
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = tiny_http::Limits {
            // A stalled client must not hold its stream thread beyond the test.
            write_timeout: Duration::from_secs(5),
            ..Default::default()
        };
        let server = tiny_http::Server::from_listener_with_limits(listener, None, limits).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (hub2, stop2) = (hub.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let rq = match server.recv_timeout(Duration::from_millis(20)) {
                    Ok(Some(rq)) => rq,
                    Ok(None) => continue,
                    Err(_) => break,
                };
                let last = rq
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Last-Event-ID"))
                    .map(|h| h.value.as_str().to_string());
                match hub2.open(last.as_deref()) {
                    Ok(stream) => hub2.serve(rq, stream),
                    Err((code, msg)) => {
                        let _ = rq
                            .respond(tiny_http::Response::from_string(msg).with_status_code(code));
                    }
                }
            }
        });
        Served {
            hub,
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn connect(&self, last_event_id: Option<&str>) -> Client {
        Client::connect(self.addr, last_event_id)
    }

    /// Stops the server loop and the hub; waits until every stream has ended.
    fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.hub.stop();
        let hub = self.hub.clone();
        wait_until("every stream has ended", || hub.streams() == 0);
    }
}

/// One SSE event as a client sees it.
#[derive(Debug, Clone, PartialEq)]
struct Received {
    id: String,
    kind: String,
    data: Value,
}

/// A raw HTTP/1.1 client reading a chunked SSE body.
struct Client {
    reader: BufReader<TcpStream>,
    status: u16,
    /// Content-Length, when the response has one.
    length: Option<usize>,
    /// Decoded body bytes not yet parsed into events.
    pending: Vec<u8>,
    /// Heartbeat comments seen.
    comments: usize,
    ended: bool,
    /// The last id received, as a browser keeps it: a frame without an id
    /// (a preflight) leaves it as it was.
    last_id: String,
}

impl Client {
    fn connect(addr: SocketAddr, last_event_id: Option<&str>) -> Client {
        let mut sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(DEADLINE)).unwrap();
        let last = last_event_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        write!(
            sock,
            "GET /events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n{last}\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(sock);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            headers.push(line.trim_end().to_ascii_lowercase());
        }
        if status == 200 {
            for want in [
                "content-type: text/event-stream",
                "cache-control: no-cache",
                "transfer-encoding: chunked",
            ] {
                assert!(headers.iter().any(|h| h == want), "{want} in {headers:?}");
            }
        }
        let length = headers
            .iter()
            .find_map(|h| h.strip_prefix("content-length: "))
            .map(|n| n.parse().unwrap());
        Client {
            reader,
            status,
            length,
            pending: Vec::new(),
            comments: 0,
            ended: false,
            last_id: last_event_id.unwrap_or_default().to_string(),
        }
    }

    /// The body of a refusal (a response with a Content-Length).
    fn refusal(mut self) -> (u16, String) {
        let mut body = vec![0; self.length.unwrap()];
        self.reader.read_exact(&mut body).unwrap();
        (self.status, String::from_utf8(body).unwrap())
    }

    /// Reads one chunk into `pending`; false at the end of the body.
    fn read_chunk(&mut self) -> bool {
        let mut size = String::new();
        if self.reader.read_line(&mut size).unwrap() == 0 {
            return false;
        }
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        let mut buf = vec![0; n + 2];
        self.reader.read_exact(&mut buf).unwrap();
        assert_eq!(&buf[n..], b"\r\n");
        buf.truncate(n);
        self.pending.extend_from_slice(&buf);
        n > 0
    }

    /// The next event, skipping comments; `None` once the stream has ended.
    fn next(&mut self) -> Option<Received> {
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.pending.drain(..end + 2).collect();
                let text = String::from_utf8(block).unwrap();
                if text.starts_with(':') {
                    self.comments += 1;
                    continue;
                }
                let (mut id, mut kind, mut data) = (None, None, None);
                for line in text.lines().filter(|l| !l.is_empty()) {
                    let (field, value) = line.split_once(": ").unwrap();
                    match field {
                        "id" => id = Some(value.to_string()),
                        "event" => kind = Some(value.to_string()),
                        "data" => data = Some(serde_json::from_str(value).unwrap()),
                        other => panic!("unexpected field {other}"),
                    }
                }
                if let Some(id) = id {
                    self.last_id = id;
                }
                return Some(Received {
                    id: self.last_id.clone(),
                    kind: kind.unwrap(),
                    data: data.unwrap(),
                });
            }
            if self.ended || !self.read_chunk() {
                self.ended = true;
                return None;
            }
        }
    }

    /// The next `n` events (failing if the stream ends first).
    fn take(&mut self, n: usize) -> Vec<Received> {
        (0..n)
            .map(|i| {
                self.next()
                    .unwrap_or_else(|| panic!("stream ended after {i} of {n} events"))
            })
            .collect()
    }
}

fn t(s: &str) -> DateTime<Utc> {
    parse_ts(s).unwrap()
}

fn ledger(tag: &str) -> (TempDir, PathBuf, Connection) {
    let tmp = TempDir::new(tag);
    let db = tmp.0.join("d.db");
    let conn = store::open(&db, Synchronous::Normal).unwrap();
    (tmp, db, conn)
}

/// Enqueues a job, claims it and records its success: three transitions.
fn run_job(conn: &mut Connection, at: DateTime<Utc>) -> String {
    let job = NewJob::new("echo", "poll", Value::Null, SubmittedBy::Api, 1);
    let day = Duration::from_secs(86_400);
    queue::enqueue(conn, &job, day, at).unwrap();
    let claimed = queue::claim_next(conn, &|_| 1, at).unwrap().unwrap();
    let done = Completion {
        job: &claimed,
        decision: Decision::Succeeded,
        last_error: None,
        record: AttemptRecord::default(),
        state: None,
        children: vec![],
        stopwatch: None,
        effects: vec![],
    };
    completion::complete(conn, &done, day, at).unwrap();
    claimed.id
}

/// Every event in the ledger, as a client should see them.
fn expected(conn: &Connection) -> Vec<Received> {
    events::since(conn, Cursor::default(), 1_000_000)
        .unwrap()
        .into_iter()
        .map(|ev| Received {
            id: ev.cursor.to_string(),
            kind: ev.kind,
            data: ev.data,
        })
        .collect()
}

#[test]
fn sse_receives_a_jobs_events_in_order_and_resumes_after_a_disconnect_and_a_restart() {
    let (_tmp, db, mut conn) = ledger("sse-resume");
    // History from before anyone listens: a fresh client is not sent it.
    run_job(&mut conn, t("2026-01-01T00:00:00Z"));
    let served = Served::start(&db, 16, HEARTBEAT);
    let mut a = served.connect(None);
    assert_eq!(a.status, 200);
    let job = run_job(&mut conn, t("2026-01-01T00:00:01Z"));
    served.hub.notify();
    let got = a.take(4);
    let kinds: Vec<&str> = got.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "job.queued",
            "job.preflight",
            "job.started",
            "job.succeeded"
        ]
    );
    assert_eq!(got[1].data["decision"], "run");
    for ev in &got {
        assert_eq!(ev.data["job_id"], json!(job));
        assert_eq!(ev.data["plugin"], "echo");
    }
    assert_eq!(got[3].data["from"], "running");
    assert_eq!(got[0].data["from"], Value::Null);
    events::record(
        &conn,
        "config.reloaded",
        None,
        None,
        None,
        &json!({"plugins": 1}),
        t("2026-01-01T00:00:02Z"),
    )
    .unwrap();
    // No notify: the poll timer finds writers that do not call it.
    let reload = a.take(1);
    assert_eq!(reload[0].kind, "config.reloaded");
    let mut seen: Vec<Received> = got.into_iter().chain(reload).collect();

    // Disconnect; events happen meanwhile; reconnect from the last id.
    drop(a);
    run_job(&mut conn, t("2026-01-01T00:00:03Z"));
    run_job(&mut conn, t("2026-01-01T00:00:04Z"));
    let mut b = served.connect(Some(&seen.last().unwrap().id));
    seen.extend(b.take(8));
    run_job(&mut conn, t("2026-01-01T00:00:05Z"));
    served.hub.notify();
    seen.extend(b.take(4));
    let all = expected(&conn);
    assert_eq!(seen, all[4..].to_vec(), "no gap, no duplicate, same order");

    // Restart the hub on the same ledger; events happen while it is down.
    drop(b);
    served.shutdown();
    run_job(&mut conn, t("2026-01-01T00:00:06Z"));
    let served = Served::start(&db, 16, HEARTBEAT);
    let mut c = served.connect(Some(&seen.last().unwrap().id));
    seen.extend(c.take(4));
    events::record(
        &conn,
        "scheduler.fired",
        Some("echo"),
        Some("poll"),
        None,
        &json!({"schedule": "default"}),
        t("2026-01-01T00:00:07Z"),
    )
    .unwrap();
    served.hub.notify();
    seen.extend(c.take(1));
    assert_eq!(
        seen,
        expected(&conn)[4..].to_vec(),
        "exact across the restart"
    );
    served.shutdown();
    assert!(c.next().is_none(), "stopping the hub ends the stream");
}

#[test]
fn a_slow_reader_is_dropped_while_a_fast_one_keeps_up() {
    let (_tmp, db, conn) = ledger("sse-slow");
    let served = Served::start(&db, 16, HEARTBEAT);
    let slow = served.connect(None);
    let mut fast = served.connect(None);
    assert_eq!((slow.status, fast.status), (200, 200));
    wait_until("both are subscribed", || served.hub.subscribers() == 2);
    // Large events fill the slow client's socket buffers quickly; then its
    // stream blocks in a write and its queue of frames fills up.
    let pad = "x".repeat(2048);
    let mut pushed = 0;
    let mut received = Vec::new();
    while served.hub.subscribers() == 2 {
        assert!(pushed < 50_000, "the slow client was never dropped");
        let tx = conn.unchecked_transaction().unwrap();
        for _ in 0..200 {
            pushed += 1;
            events::record(
                &tx,
                "test.bulk",
                None,
                None,
                None,
                &json!({"n": pushed, "pad": pad}),
                t("2026-01-01T00:00:00Z"),
            )
            .unwrap();
        }
        tx.commit().unwrap();
        served.hub.notify();
        // The fast client reads everything before more is written.
        received.extend(fast.take(pushed - received.len()));
    }
    assert_eq!(served.hub.subscribers(), 1, "only the slow one went");
    let all = expected(&conn);
    assert_eq!(received, all, "the fast client got every event, in order");
    let n: Vec<i64> = received
        .iter()
        .map(|e| e.data["n"].as_i64().unwrap())
        .collect();
    assert_eq!(n, (1..=pushed as i64).collect::<Vec<_>>());
    // The slow client goes; its stream thread ends.
    drop(slow);
    wait_until("the slow stream has ended", || served.hub.streams() == 1);
    served.shutdown();
}

#[test]
fn a_burst_larger_than_the_buffer_reaches_a_reading_client() {
    let (_tmp, db, conn) = ledger("sse-burst");
    let served = Served::start(&db, 16, HEARTBEAT);
    let mut c = served.connect(None);
    let burst = 4 * BUFFER;
    let tx = conn.unchecked_transaction().unwrap();
    for n in 0..burst {
        events::record(
            &tx,
            "test.bulk",
            None,
            None,
            None,
            &json!({ "n": n }),
            t("2026-01-01T00:00:00Z"),
        )
        .unwrap();
    }
    tx.commit().unwrap();
    served.hub.notify();
    assert_eq!(c.take(burst), expected(&conn));
    assert_eq!(served.hub.subscribers(), 1, "paced, not dropped");
    served.shutdown();
}

#[test]
fn the_seventeenth_stream_is_refused_with_503_until_one_ends() {
    let (_tmp, db, _conn) = ledger("sse-cap");
    // A short heartbeat: a stream notices its client has gone at the next one.
    let served = Served::start(&db, 16, Duration::from_millis(20));
    let mut clients: Vec<Client> = (0..16).map(|_| served.connect(None)).collect();
    assert!(clients.iter().all(|c| c.status == 200));
    let (status, body) = served.connect(None).refusal();
    assert_eq!(
        (status, body.as_str()),
        (503, "too many event streams open (at most 16)")
    );
    // Heartbeats flow on an idle stream.
    let first = &mut clients[0];
    assert!(first.read_chunk(), "stream ended");
    assert_eq!(first.pending, b": heartbeat\n\n");
    drop(clients.pop());
    wait_until("the closed stream released its slot", || {
        served.hub.streams() == 15
    });
    assert_eq!(served.connect(None).status, 200);
    drop(clients);
    served.shutdown();
}

#[test]
fn a_last_event_id_that_is_not_ours_is_refused_with_400() {
    let (_tmp, db, _conn) = ledger("sse-badid");
    let hub = Hub::start(db, Synchronous::Normal, 1).unwrap();
    let err = hub.open(Some("banana")).err().unwrap();
    assert_eq!(
        err,
        (
            400,
            "Last-Event-ID `banana` is not an event id of this server (expected <number>-<number>)"
                .to_string()
        )
    );
    assert_eq!(hub.streams(), 0, "a refused client holds no slot");
    let held = hub.open(Some(" ")).unwrap();
    assert!(held.from.is_none(), "a blank id means only new events");
    assert_eq!(hub.open(None).err().unwrap().0, 503, "the cap is 1");
    drop(held);
    hub.stop();
    assert_eq!(
        hub.open(None).err().unwrap().0,
        503,
        "a stopped hub admits no one"
    );
}

#[test]
fn an_id_from_beyond_this_ledger_replays_nothing_and_gets_new_events() {
    let (_tmp, db, mut conn) = ledger("sse-future");
    run_job(&mut conn, t("2026-01-01T00:00:00Z"));
    let served = Served::start(&db, 16, HEARTBEAT);
    let mut c = served.connect(Some("999-999"));
    assert_eq!(c.status, 200);
    run_job(&mut conn, t("2026-01-01T00:00:01Z"));
    served.hub.notify();
    assert_eq!(c.take(4), expected(&conn)[4..].to_vec());
    served.shutdown();
}

/// A hub loop (not its thread) over a new ledger with one subscriber, and a
/// connection of the test's own to write events with.
fn lone_hub(tag: &str) -> (TempDir, Connection, Receiver<Frame>, HubLoop) {
    let tmp = TempDir::new(tag);
    let db = tmp.0.join("l.db");
    let conn = store::open(&db, Synchronous::Normal).unwrap();
    let (tx, rx) = bounded::<Frame>(BUFFER);
    let hub = HubLoop::new(
        store::open(&db, Synchronous::Normal).unwrap(),
        vec![tx],
        Arc::new(AtomicUsize::new(1)),
    );
    (tmp, conn, rx, hub)
}

/// Records one scheduler event, as the scheduler would.
fn fire(conn: &Connection) {
    let at = Utc::now();
    events::record(
        conn,
        "scheduler.fired",
        Some("echo"),
        Some("poll"),
        None,
        &json!({}),
        at,
    )
    .unwrap();
}

/// The hub counts the looks that found nothing (which lengthens its pause)
/// and starts over at the first event.
#[test]
fn each_empty_look_lengthens_the_hubs_pause_and_an_event_resets_it() {
    let (_tmp, conn, rx, mut hub) = lone_hub("hub-quiet");
    hub.poll();
    hub.poll();
    assert_eq!(hub.quiet, 2);
    assert_eq!(pause(hub.quiet), Duration::from_secs(1));
    fire(&conn);
    hub.poll();
    assert_eq!(hub.quiet, 0, "an event resets the pause");
    assert_eq!(pause(hub.quiet), POLL);
    assert_eq!(rx.len(), 1, "the event was offered");
    hub.poll();
    assert_eq!(hub.quiet, 1);
}

/// A notification soon after a look that found events waits for the end of
/// the gathering window (the run loop's timer), so a burst goes out in a few
/// batches; the first one after a quiet spell is looked at once.
#[test]
fn notifications_in_a_burst_are_gathered_into_one_look() {
    let (_tmp, conn, rx, mut hub) = lone_hub("hub-gather");
    hub.gather = Duration::from_secs(3600);
    fire(&conn);
    hub.notified();
    assert_eq!(rx.len(), 1, "the first event goes out at once");
    assert!(!hub.owed);
    fire(&conn);
    hub.notified();
    fire(&conn);
    hub.notified();
    assert_eq!(rx.len(), 1, "later ones wait for the window to end");
    assert!(hub.owed && hub.gathering().is_some());
    let left = hub.next_look().unwrap();
    assert!(
        left <= hub.gather && left > POLL,
        "the loop's next look is the window's end: {left:?}"
    );
    hub.poll();
    assert_eq!(rx.len(), 3, "the window's look offers both");
    assert!(!hub.owed);
    assert_eq!(hub.next_look(), Some(POLL), "then the usual fallback look");
    hub.gather = Duration::ZERO;
    fire(&conn);
    hub.notified();
    assert_eq!(
        rx.len(),
        4,
        "after the window a notification is looked at once"
    );
}

#[test]
fn an_idle_hub_looks_less_and_less_often_up_to_the_quiet_pause() {
    assert_eq!(super::pause(0), POLL);
    assert_eq!(super::pause(1), POLL * 2);
    assert_eq!(super::pause(2), Duration::from_secs(1));
    assert_eq!(super::pause(3), super::QUIET_POLL);
    assert_eq!(super::pause(u32::MAX), super::QUIET_POLL);
}
