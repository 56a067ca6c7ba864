//! `GET /events`: the ledger's events as Server-Sent Events, resumable.
//!
//! One `events` thread (the [`Hub`]) owns a connection, reads the rows after
//! its cursor when a writer calls [`Hub::notify`] (a burst gathered for
//! [`GATHER`]; or every [`POLL`] while anyone listens, which also catches
//! writers in other processes), formats
//! each event once and offers the frame to every subscriber's bounded channel
//! without waiting. A subscriber whose channel is full is too slow: it is
//! dropped, and resumes with `Last-Event-ID` when it reconnects.
//!
//! Each stream runs on its own thread (at most `max_streams`): it registers
//! with the hub first, learning the hub's cursor H; then replays what the
//! client missed, `(Last-Event-ID, H]`, from its own connection; then forwards
//! the live frames, which all lie after H. So a reconnecting client misses
//! nothing and sees nothing twice, across daemon restarts too: event ids are
//! ledger sequence numbers ([`crate::store::events::Cursor`]).
//!
//! Owns: the hub thread, the stream threads, SSE framing. Must not: write the
//! ledger, block a writer or one client on another.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, bounded, never, select};
use rusqlite::Connection;

use crate::config::Synchronous;
use crate::store::events::{self, Cursor, Event};
use crate::store::{self, StoreError};

/// How often the hub looks for new rows while it has subscribers, for writers
/// that do not call [`Hub::notify`] (another process, a missed notification).
/// Each look that finds nothing doubles the pause, up to [`QUIET_POLL`], so
/// open but idle streams (dashboard tabs left open) cost next to nothing;
/// any event brings it back to this.
pub const POLL: Duration = Duration::from_millis(250);

/// The longest pause between two looks of a hub that keeps finding nothing:
/// how late, at worst, an event written by another process reaches a stream.
pub const QUIET_POLL: Duration = Duration::from_secs(1);

/// A comment is sent after this much silence, so proxies and clients keep an
/// idle stream open and a vanished client is noticed.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// Frames a subscriber may have waiting; one more and it is dropped as slow.
pub const BUFFER: usize = 1024;

/// Rows the hub reads per query.
const HUB_BATCH: usize = 256;

/// The shortest time between two looks that find events: a notification
/// within it is kept for the end of it. A burst of jobs then reaches each
/// stream as a few frames per wake and write instead of one wake and write
/// per job per stream (which, with 16 streams on two cores, took the
/// workers' CPU); the first event after a quiet spell goes out at once.
const GATHER: Duration = Duration::from_millis(25);

/// How soon the hub reads on when it paused a backlog for its streams to
/// catch up (see [`HubLoop::poll`]).
const PACE: Duration = Duration::from_millis(5);

/// Rows a stream replays per query (and per write).
const REPLAY_BATCH: usize = 256;

/// Most bytes of waiting frames a stream writes in one chunk.
const CHUNK: usize = 64 * 1024;

/// How long [`Hub::open`] waits for the hub to register a subscriber.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// One formatted SSE frame, shared by every subscriber.
type Frame = Arc<[u8]>;

/// What the hub thread is asked to do besides reading rows.
enum Control {
    /// Add a subscriber; the hub answers with its cursor (frames after it follow).
    Subscribe {
        frames_tx: Sender<Frame>,
        reply_tx: Sender<Result<Cursor, String>>,
    },
}

/// The live event hub: cheap to clone; every clone drives the same thread.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    /// What a stream needs to replay from its own connection.
    ledger: Arc<Ledger>,
    max_streams: usize,
    /// Streams open now (held by [`StreamSlot`]s).
    open: Arc<AtomicUsize>,
    /// Subscribers the hub thread serves now (it alone writes this).
    subscribers: Arc<AtomicUsize>,
    control_tx: Sender<Control>,
    notify_tx: Sender<()>,
    /// Dropped by [`Hub::stop`]: the hub thread and every stream see it close.
    stop_tx: Mutex<Option<Sender<()>>>,
    stop_rx: Receiver<()>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Where the ledger is and how to open it.
struct Ledger {
    db: PathBuf,
    sync: Synchronous,
    heartbeat: Duration,
}

/// A client admitted to stream: it holds a stream slot and its subscription.
pub struct StreamRequest {
    _slot: StreamSlot,
    /// The client's `Last-Event-ID` (`None`: only new events).
    from: Option<Cursor>,
    /// The hub's cursor when the client subscribed: live frames follow it.
    head: Cursor,
    frames_rx: Receiver<Frame>,
}

/// One of the `max_streams` stream slots; released on drop.
struct StreamSlot(Arc<AtomicUsize>);

impl StreamSlot {
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<StreamSlot> {
        open.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| StreamSlot(open.clone()))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values (a sender, a join handle) stay valid after a panic.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Hub {
    /// Starts the hub thread on the ledger at `db`, with at most `max_streams`
    /// streams open at once and the standard [`HEARTBEAT`].
    pub fn start(db: PathBuf, sync: Synchronous, max_streams: usize) -> Result<Hub, StoreError> {
        Hub::start_with(db, sync, max_streams, HEARTBEAT)
    }

    /// [`Hub::start`] with another heartbeat interval.
    pub fn start_with(
        db: PathBuf,
        sync: Synchronous,
        max_streams: usize,
        heartbeat: Duration,
    ) -> Result<Hub, StoreError> {
        let conn = store::open(&db, sync)?;
        let (control_tx, control_rx) = bounded(64);
        let (notify_tx, notify_rx) = bounded(1);
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let subscribers = Arc::new(AtomicUsize::new(0));
        let mut hub = HubLoop::new(conn, Vec::new(), subscribers.clone());
        let (hub_stop, hub_control) = (stop_rx.clone(), control_rx);
        let thread = thread::Builder::new()
            .name("events".into())
            .spawn(move || hub.run(&hub_stop, &hub_control, &notify_rx))
            .map_err(|e| StoreError::Io {
                path: db.display().to_string(),
                op: "start the events thread",
                source: e,
            })?;
        Ok(Hub {
            inner: Arc::new(Inner {
                ledger: Arc::new(Ledger {
                    db,
                    sync,
                    heartbeat,
                }),
                max_streams,
                open: Arc::new(AtomicUsize::new(0)),
                subscribers,
                control_tx,
                notify_tx,
                stop_tx: Mutex::new(Some(stop_tx)),
                stop_rx,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Tells the hub that events were written; never blocks (one pending
    /// notification covers any number of writes).
    pub fn notify(&self) {
        // With no stream open nobody needs the hub awake: a stream that opens
        // reads the head itself at registration.
        if self.streams() > 0 {
            let _ = self.inner.notify_tx.try_send(());
        }
    }

    /// Admits a client: 400 for a `Last-Event-ID` that is not one of ours, 503
    /// when `max_streams` streams are open or the hub is stopped. The client
    /// is subscribed before this returns, so nothing written afterwards is missed.
    pub fn open(&self, last_event_id: Option<&str>) -> Result<StreamRequest, (u16, String)> {
        let from = match last_event_id.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(id) => Some(Cursor::parse(id).ok_or_else(|| {
                (
                    400,
                    format!(
                        "Last-Event-ID `{}` is not an event id of this server (expected <number>-<number>)",
                        id.chars().take(64).collect::<String>()
                    ),
                )
            })?),
        };
        let max = self.inner.max_streams;
        let slot = StreamSlot::take(&self.inner.open, max)
            .ok_or_else(|| (503, format!("too many event streams open (at most {max})")))?;
        let unavailable = || (503, "the event stream is shutting down".to_string());
        let (frames_tx, frames_rx) = bounded(BUFFER);
        let (reply_tx, reply_rx) = bounded(1);
        self.inner
            .control_tx
            .try_send(Control::Subscribe {
                frames_tx,
                reply_tx,
            })
            .map_err(|_| unavailable())?;
        let head = match reply_rx.recv_timeout(REGISTER_TIMEOUT) {
            Ok(Ok(head)) => head,
            Ok(Err(why)) => return Err((503, format!("the event ledger cannot be read: {why}"))),
            Err(_) => return Err(unavailable()),
        };
        Ok(StreamRequest {
            _slot: slot,
            from,
            head,
            frames_rx,
        })
    }

    /// Answers `rq` with the event stream on a thread of its own: `200`,
    /// `text/event-stream`, the missed events, then live ones and heartbeats,
    /// until the hub drops the client, the client goes or the hub stops.
    pub fn serve(&self, rq: tiny_http::Request, stream: StreamRequest) {
        let ledger = self.inner.ledger.clone();
        let stop_rx = self.inner.stop_rx.clone();
        let spawned = thread::Builder::new()
            .name("events-stream".into())
            .spawn(move || run_stream(rq, stream, &ledger, &stop_rx));
        if let Err(e) = spawned {
            // The request went with the closure; tiny_http answers it 500.
            log::error!(target: "http", "cannot start an event stream thread: {e}");
        }
    }

    /// Ends the hub thread and every stream (daemon shutdown). Streams end as
    /// soon as they next wake; one blocked writing to a stalled client ends
    /// when the socket's write timeout passes.
    pub fn stop(&self) {
        drop(locked(&self.inner.stop_tx).take());
        if let Some(thread) = locked(&self.inner.thread).take() {
            if thread.join().is_err() {
                log::error!(target: "http", "the events thread panicked");
            }
        }
    }

    /// Streams open now.
    pub fn streams(&self) -> usize {
        self.inner.open.load(Ordering::SeqCst)
    }

    /// Subscribers the hub serves now (a stream whose client was dropped as
    /// slow or has gone no longer counts).
    pub fn subscribers(&self) -> usize {
        self.inner.subscribers.load(Ordering::SeqCst)
    }
}

/// The hub thread's state.
struct HubLoop {
    conn: Connection,
    /// Every event up to here has been offered to the subscribers.
    cursor: Cursor,
    subscribers: Vec<Sender<Frame>>,
    count: Arc<AtomicUsize>,
    /// The last read failure logged, so a lasting one is logged once.
    last_error: Option<String>,
    /// A backlog was paused: read on after [`PACE`] instead of [`POLL`].
    behind: bool,
    /// Looks in a row that found nothing (the pause doubles with each).
    quiet: u32,
    /// When the last look that found events was made.
    found_at: Option<Instant>,
    /// A notification came within `gather` of `found_at`: look when it ends.
    owed: bool,
    /// [`GATHER`], but for tests.
    gather: Duration,
}

impl HubLoop {
    fn new(conn: Connection, subscribers: Vec<Sender<Frame>>, count: Arc<AtomicUsize>) -> HubLoop {
        HubLoop {
            conn,
            cursor: Cursor::default(),
            subscribers,
            count,
            last_error: None,
            behind: false,
            quiet: 0,
            found_at: None,
            owed: false,
            gather: GATHER,
        }
    }

    fn run(
        &mut self,
        stop_rx: &Receiver<()>,
        control_rx: &Receiver<Control>,
        notify_rx: &Receiver<()>,
    ) {
        loop {
            let timer = self
                .next_look()
                .map_or_else(never, crossbeam_channel::after);
            select! {
                recv(stop_rx) -> _ => break,
                recv(control_rx) -> msg => match msg {
                    Ok(Control::Subscribe { frames_tx, reply_tx }) => self.subscribe(frames_tx, &reply_tx),
                    Err(_) => break,
                },
                recv(notify_rx) -> _ => self.notified(),
                recv(timer) -> _ => self.poll(),
            }
        }
        // Dropping the senders ends every stream.
        self.subscribers.clear();
        self.count.store(0, Ordering::SeqCst);
    }

    /// How long until the hub looks unasked; `None` while nobody listens
    /// (an idle hub sleeps on its channels).
    fn next_look(&self) -> Option<Duration> {
        if self.subscribers.is_empty() {
            None
        } else if self.behind {
            Some(PACE)
        } else if self.owed {
            Some(self.gathering().unwrap_or_default())
        } else {
            Some(pause(self.quiet))
        }
    }

    fn subscribe(&mut self, frames_tx: Sender<Frame>, reply_tx: &Sender<Result<Cursor, String>>) {
        let ready = if self.subscribers.is_empty() {
            // Nobody listened: rows since the last look were offered to no one,
            // so the new subscriber's live part starts at the ledger's head.
            Cursor::head(&self.conn).map(|head| self.cursor = head)
        } else {
            self.poll();
            Ok(())
        };
        let reply = match ready {
            Ok(()) => {
                self.subscribers.push(frames_tx);
                self.count.store(self.subscribers.len(), Ordering::SeqCst);
                Ok(self.cursor)
            }
            Err(e) => Err(e.to_string()),
        };
        let _ = reply_tx.send(reply);
    }

    /// Offers the rows after the cursor to every subscriber. A backlog (rows
    /// written faster than streams drain, e.g. a burst between two looks) is
    /// read on a few milliseconds later once some subscriber's buffer is half
    /// full, so streams that are merely busy are not dropped as slow; a client
    /// that does not drain at all still fills its buffer and is dropped.
    fn poll(&mut self) {
        let before = self.cursor;
        self.owed = false;
        self.read_on();
        if self.cursor == before {
            self.quiet = self.quiet.saturating_add(1);
        } else {
            self.quiet = 0;
            self.found_at = Some(Instant::now());
        }
    }

    /// A writer says there are events: look now, or at the end of the
    /// [`GATHER`] window a recent look opened.
    fn notified(&mut self) {
        if self.gathering().is_some() {
            self.owed = true;
        } else {
            self.poll();
        }
    }

    /// What is left of the window after the last look that found events.
    fn gathering(&self) -> Option<Duration> {
        let since = self.found_at?.elapsed();
        self.gather
            .checked_sub(since)
            .filter(|left| !left.is_zero())
    }

    fn read_on(&mut self) {
        self.behind = false;
        while !self.subscribers.is_empty() {
            let batch = match events::since(&self.conn, self.cursor, HUB_BATCH) {
                Ok(batch) => batch,
                Err(e) => {
                    let why = e.to_string();
                    if self.last_error.as_deref() != Some(why.as_str()) {
                        log::warn!(target: "http", "event stream: {why}; retrying");
                        self.last_error = Some(why);
                    }
                    return;
                }
            };
            self.last_error = None;
            for ev in &batch {
                self.broadcast(&frame(ev));
                self.cursor = ev.cursor;
            }
            if batch.len() < HUB_BATCH {
                return;
            }
            if self.subscribers.iter().any(|tx| tx.len() > BUFFER / 2) {
                self.behind = true;
                return;
            }
        }
    }

    fn broadcast(&mut self, frame: &Frame) {
        let before = self.subscribers.len();
        let mut slow = 0;
        self.subscribers
            .retain(|tx| match tx.try_send(frame.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    slow += 1;
                    false
                }
                // The stream ended (its client went): nothing to report.
                Err(TrySendError::Disconnected(_)) => false,
            });
        if slow > 0 {
            log::info!(target: "http", subscribers = self.subscribers.len(); "event stream: dropped {slow} client(s) too slow to keep up ({BUFFER} events behind); they resume from their last event id when they reconnect");
        }
        if self.subscribers.len() != before {
            self.count.store(self.subscribers.len(), Ordering::SeqCst);
        }
    }
}

/// The pause before the next look after `quiet` looks that found nothing.
fn pause(quiet: u32) -> Duration {
    POLL.saturating_mul(1 << quiet.min(8)).min(QUIET_POLL)
}

/// An event as an SSE frame: its cursor as the id (none for an event without
/// a position of its own, see [`events::PREFLIGHT`]), its kind as the event
/// name, its fields as one line of JSON.
fn frame(ev: &Event) -> Frame {
    if !ev.resumable {
        return format!("event: {}\ndata: {}\n\n", ev.kind, ev.data)
            .into_bytes()
            .into();
    }
    format!(
        "id: {}\nevent: {}\ndata: {}\n\n",
        ev.cursor, ev.kind, ev.data
    )
    .into_bytes()
    .into()
}

/// The response body on the raw connection. tiny_http's own chunked writer
/// holds 8 KiB before it sends anything, which would sit on a lone event, so
/// the stream writes its head and chunks itself and flushes each one.
struct Body {
    out: Box<dyn Write + Send>,
    chunked: bool,
}

impl Body {
    fn start(rq: tiny_http::Request) -> io::Result<Body> {
        // An HTTP/1.0 client knows no chunks: its body ends when the connection does.
        let chunked = *rq.http_version() != tiny_http::HTTPVersion(1, 0);
        let mut body = Body {
            out: rq.into_writer(),
            chunked,
        };
        let encoding = if chunked {
            "Transfer-Encoding: chunked\r\n"
        } else {
            ""
        };
        write!(
            body.out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n{encoding}\r\n"
        )?;
        body.out.flush()?;
        Ok(body)
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.chunked {
            write!(self.out, "{:x}\r\n", bytes.len())?;
            self.out.write_all(bytes)?;
            self.out.write_all(b"\r\n")?;
        } else {
            self.out.write_all(bytes)?;
        }
        self.out.flush()
    }

    fn finish(mut self) {
        if self.chunked {
            let _ = self.out.write_all(b"0\r\n\r\n");
        }
        let _ = self.out.flush();
    }
}

/// Why a stream ended early.
enum Ended {
    /// The client went (a write failed or timed out).
    Gone,
    /// The hub stopped.
    Stopped,
    /// The replay could not read the ledger.
    Ledger(StoreError),
}

impl From<io::Error> for Ended {
    fn from(_: io::Error) -> Ended {
        Ended::Gone
    }
}

fn run_stream(
    rq: tiny_http::Request,
    stream: StreamRequest,
    ledger: &Ledger,
    stop_rx: &Receiver<()>,
) {
    let mut body = match Body::start(rq) {
        Ok(body) => body,
        Err(_) => return,
    };
    match replay(&mut body, &stream, ledger, stop_rx)
        .and_then(|()| forward(&mut body, &stream, ledger, stop_rx))
    {
        Ok(()) | Err(Ended::Stopped) => body.finish(),
        Err(Ended::Gone) => {}
        Err(Ended::Ledger(e)) => {
            log::warn!(target: "http", "event stream ended: cannot replay missed events: {e}");
            body.finish();
        }
    }
}

/// Sends what the client missed: the events after its id, up to the hub's
/// cursor at subscription (the live frames start after it).
fn replay(
    body: &mut Body,
    stream: &StreamRequest,
    ledger: &Ledger,
    stop_rx: &Receiver<()>,
) -> Result<(), Ended> {
    let Some(from) = stream.from else {
        return Ok(());
    };
    // An id beyond this ledger (another ledger's, or one from before a
    // restored backup) cannot say what was missed: start where the ledger is.
    let mut cursor = from.min(stream.head);
    if stream.head.is_within(cursor) {
        return Ok(());
    }
    let conn = store::open(&ledger.db, ledger.sync).map_err(Ended::Ledger)?;
    loop {
        if matches!(stop_rx.try_recv(), Err(TryRecvError::Disconnected)) {
            return Err(Ended::Stopped);
        }
        let batch =
            events::between(&conn, cursor, stream.head, REPLAY_BATCH).map_err(Ended::Ledger)?;
        let Some(last) = batch.last() else {
            return Ok(());
        };
        cursor = last.cursor;
        let bytes: Vec<u8> = batch.iter().flat_map(|ev| frame(ev).to_vec()).collect();
        body.send(&bytes)?;
    }
}

/// Forwards live frames, a heartbeat after each silence, until the hub drops
/// the subscription (slow client, or the hub stopped) or the client goes.
fn forward(
    body: &mut Body,
    stream: &StreamRequest,
    ledger: &Ledger,
    stop_rx: &Receiver<()>,
) -> Result<(), Ended> {
    let mut bytes = Vec::new();
    loop {
        select! {
            recv(stream.frames_rx) -> frame => {
                let Ok(frame) = frame else { return Ok(()) };
                bytes.clear();
                bytes.extend_from_slice(&frame);
                // Whatever else is waiting goes in the same chunk.
                while bytes.len() < CHUNK {
                    match stream.frames_rx.try_recv() {
                        Ok(more) => bytes.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                body.send(&bytes)?;
            }
            recv(stop_rx) -> _ => return Err(Ended::Stopped),
            default(ledger.heartbeat) => body.send(b": heartbeat\n\n")?,
        }
    }
}

#[cfg(test)]
mod tests;
