//! The synchronous bridge: `POST /pipeline/{name}` on a synchronous pipeline
//! answers once the whole job tree has finished. One thread holds every
//! waiting request; a completion in a tree wakes only that tree's waiter (the
//! workers name the tree root), and a waiter costs no CPU while it waits.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
use rusqlite::Connection;
use serde_json::{Value, json};

use super::Reply;
use crate::config::Synchronous;
use crate::store::{self, StoreError, jobs};

/// One request waiting for its tree.
struct Waiter {
    rq: tiny_http::Request,
    started: Instant,
    deadline: Instant,
}

enum Msg {
    Wait { root: String, waiter: Box<Waiter> },
    Wake(String),
    Stop,
}

/// The bridge's handle: cheap to clone.
#[derive(Clone)]
pub struct Bridge {
    tx: Sender<Msg>,
    pending: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: std::sync::Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bridge")
    }
}

impl Bridge {
    /// Starts the bridge thread on the ledger at `db`.
    pub fn start(db: PathBuf, sync: Synchronous) -> Result<Bridge, StoreError> {
        let conn = store::open(&db, sync)?;
        let (tx, rx) = unbounded();
        let pending = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = pending.clone();
        let thread = std::thread::Builder::new()
            .name("sync-bridge".into())
            .spawn(move || run(&conn, &rx, &counted))
            .map_err(|source| StoreError::Io {
                path: db.display().to_string(),
                op: "start the synchronous bridge thread",
                source,
            })?;
        Ok(Bridge {
            tx,
            pending,
            thread: std::sync::Arc::new(std::sync::Mutex::new(Some(thread))),
        })
    }

    /// Takes one of `max` waiting places; false when all are taken (the
    /// request is then answered 503). Given back when the waiter is answered.
    pub fn admit(&self, max: usize) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        let mut now = self.pending.load(SeqCst);
        loop {
            if now >= max {
                return false;
            }
            match self.pending.compare_exchange(now, now + 1, SeqCst, SeqCst) {
                Ok(_) => return true,
                Err(seen) => now = seen,
            }
        }
    }

    /// Gives back a place taken by [`admit`](Self::admit) that was not used.
    pub fn release(&self) {
        self.pending
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Answers `rq` when the tree rooted at `root` has finished, or with 202
    /// `timeout_exceeded` at `deadline`.
    pub fn wait(&self, rq: tiny_http::Request, root: String, started: Instant, deadline: Instant) {
        let waiter = Waiter {
            rq,
            started,
            deadline,
        };
        if let Err(e) = self.tx.send(Msg::Wait {
            root,
            waiter: Box::new(waiter),
        }) {
            // Shutting down: answer here rather than drop the request.
            if let Msg::Wait { waiter, .. } = e.into_inner() {
                Reply::error(503, "the daemon is shutting down").send(waiter.rq);
            }
        }
    }

    /// A job of the tree rooted at `root` changed.
    pub fn wake(&self, root: &str) {
        let _ = self.tx.send(Msg::Wake(root.to_string()));
    }

    /// Answers every waiter (202, still running) and ends the thread.
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

fn run(conn: &Connection, rx: &Receiver<Msg>, pending: &AtomicUsize) {
    let mut waiting: HashMap<String, Vec<Waiter>> = HashMap::new();
    let done = |w: Waiter, root: &str, answer: Value| {
        pending.fetch_sub(1, SeqCst);
        answer_done(w, root, answer);
    };
    let timeout = |w: Waiter, root: &str, message: &str| {
        pending.fetch_sub(1, SeqCst);
        answer_timeout(w, root, message);
    };
    let fail = |w: Waiter, e: &StoreError| {
        pending.fetch_sub(1, SeqCst);
        failed(w, e);
    };
    loop {
        let next = waiting.values().flatten().map(|w| w.deadline).min();
        let msg = match next {
            Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(m) => Some(m),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Some(Msg::Stop),
            },
            None => Some(rx.recv().unwrap_or(Msg::Stop)),
        };
        match msg {
            Some(Msg::Wait { root, waiter }) => match jobs::settled(conn, &root) {
                Ok(Some(answer)) => done(*waiter, &root, answer),
                Ok(None) => waiting.entry(root).or_default().push(*waiter),
                Err(e) => fail(*waiter, &e),
            },
            Some(Msg::Wake(root)) => {
                if waiting.contains_key(&root) {
                    match jobs::settled(conn, &root) {
                        Ok(Some(answer)) => {
                            for w in waiting.remove(&root).unwrap_or_default() {
                                done(w, &root, answer.clone());
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            for w in waiting.remove(&root).unwrap_or_default() {
                                fail(w, &e);
                            }
                        }
                    }
                }
            }
            Some(Msg::Stop) => {
                for (root, ws) in waiting.drain() {
                    for w in ws {
                        timeout(
                            w,
                            &root,
                            "the daemon is shutting down; the pipeline goes on",
                        );
                    }
                }
                return;
            }
            None => {
                let now = Instant::now();
                for (root, ws) in waiting.iter_mut() {
                    let (due, keep): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(ws)
                        .into_iter()
                        .partition(|w| w.deadline <= now);
                    *ws = keep;
                    for w in due {
                        timeout(w, root, "Pipeline still running after timeout.");
                    }
                }
                waiting.retain(|_, ws| !ws.is_empty());
            }
        }
    }
}

fn answer_done(w: Waiter, root: &str, mut answer: Value) {
    if let Value::Object(m) = &mut answer {
        m.insert("job_id".into(), json!(root));
        m.insert(
            "duration_ms".into(),
            json!(w.started.elapsed().as_millis() as u64),
        );
    }
    Reply::json(200, &answer).send(w.rq);
}

fn answer_timeout(w: Waiter, root: &str, message: &str) {
    Reply::json(
        202,
        &json!({"job_id": root, "status": "running", "timeout_exceeded": true, "message": message}),
    )
    .send(w.rq);
}

fn failed(w: Waiter, e: &StoreError) {
    log::error!(target: "http", "synchronous bridge cannot read the ledger: {e}");
    Reply::error(503, "the ledger cannot be read; the pipeline goes on").send(w.rq);
}

/// The longest a synchronous request waits when the pipeline sets no timeout.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);
