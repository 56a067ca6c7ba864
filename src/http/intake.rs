//! Intake: the one writer that commits what HTTP requests enqueue. Request
//! threads hand their jobs over and wait; the writer takes every request that
//! is waiting, writes each in its own savepoint inside one transaction and
//! commits once, then answers them all. Under load one commit (and, with
//! `synchronous: full`, one flush) serves many requests, the pages they share
//! (queue tail, index leaves) are written once, and no request thread naps on
//! the write lock. A request is answered only after its rows are committed.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};
use rusqlite::Connection;

use crate::clock::Clock;
use crate::config::Synchronous;
use crate::store::completion::{Child, insert_children};
use crate::store::decisions::{self, Decision, Kind};
use crate::store::queue::{self, Enqueued, NewJob};
use crate::store::{self, StoreError};

/// Most requests one commit serves.
const BATCH: usize = 256;

/// What a request asks the writer to commit.
pub enum Work {
    /// One job (a trigger or a webhook delivery).
    Job(Box<NewJob>),
    /// A routing plan (a pipeline start), in insertion order.
    Plan(Vec<Child>),
    /// Why a request did not become a job (a refused webhook delivery).
    Decision(Box<Decision>),
}

/// What was committed for one request.
#[derive(Debug)]
pub enum Written {
    /// The job's row, or the job it duplicates.
    Job(Enqueued),
    /// The plan's rows.
    Plan(Vec<String>),
    /// The decision's row.
    Recorded,
}

struct Ticket {
    work: Work,
    ttl: Duration,
    answer: Sender<Result<Written, String>>,
}

/// The writer's handle, shared by the request threads.
#[derive(Clone)]
pub struct Intake {
    tx: Sender<Ticket>,
    thread: std::sync::Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Intake")
    }
}

impl Intake {
    /// Starts the writer on the ledger at `db`.
    pub fn start(
        db: PathBuf,
        sync: Synchronous,
        clock: std::sync::Arc<dyn Clock>,
    ) -> Result<Intake, StoreError> {
        let mut conn = store::open(&db, sync)?;
        // A bounded queue: past it a request waits to hand over, it does not
        // pile up in memory.
        let (tx, rx) = bounded::<Ticket>(BATCH * 4);
        let thread = std::thread::Builder::new()
            .name("http-intake".into())
            .spawn(move || run(&mut conn, &rx, clock.as_ref()))
            .map_err(|source| StoreError::Io {
                path: db.display().to_string(),
                op: "start the intake writer thread",
                source,
            })?;
        Ok(Intake {
            tx,
            thread: std::sync::Arc::new(std::sync::Mutex::new(Some(thread))),
        })
    }

    /// Commits `work` and answers once it is durable; `Err` carries the
    /// ledger's error, already logged.
    pub fn write(&self, work: Work, ttl: Duration) -> Result<Written, String> {
        let (answer, done) = bounded(1);
        self.tx
            .send(Ticket { work, ttl, answer })
            .map_err(|_| "the daemon is shutting down".to_string())?;
        done.recv()
            .unwrap_or_else(|_| Err("the daemon is shutting down".to_string()))
    }

    /// Hands a decision to the writer without waiting for its commit: a
    /// refused request is answered at once, and a flood of them is bounded by
    /// the queue (past it the record is dropped, with a log line) instead of
    /// holding request threads.
    pub fn note(&self, decision: Decision) {
        let (answer, _) = bounded(1);
        let ticket = Ticket {
            work: Work::Decision(Box::new(decision)),
            ttl: Duration::ZERO,
            answer,
        };
        if self.tx.try_send(ticket).is_err() {
            log::warn!(target: "http", "intake queue full: a refused request was not recorded in the ledger");
        }
    }

    /// Ends the writer once the requests handed over are answered.
    pub fn stop(&self) {
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        // Dropping our sender is not enough (request threads hold clones);
        // a zero-work ticket without an answer channel marks the end.
        let (answer, _) = bounded(1);
        let _ = self.tx.send(Ticket {
            work: Work::Plan(Vec::new()),
            ttl: Duration::MAX,
            answer,
        });
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

fn run(conn: &mut Connection, rx: &Receiver<Ticket>, clock: &dyn Clock) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(t) => batch.push(t),
                Err(_) => break,
            }
        }
        let stop = batch.iter().any(|t| t.ttl == Duration::MAX);
        batch.retain(|t| t.ttl != Duration::MAX);
        if !batch.is_empty() {
            commit(conn, batch, clock);
        }
        if stop {
            // Answer what is still queued, then end.
            let rest: Vec<Ticket> = rx.try_iter().filter(|t| t.ttl != Duration::MAX).collect();
            if !rest.is_empty() {
                commit(conn, rest, clock);
            }
            return;
        }
    }
}

/// Writes the tickets in one transaction and commits once. If anything
/// fails the batch is rolled back and each ticket is written on its own, so one
/// bad request cannot fail the others.
fn commit(conn: &mut Connection, batch: Vec<Ticket>, clock: &dyn Clock) {
    let now = clock.now();
    let together = write(conn, &batch, now);
    match together {
        Ok(results) => {
            for (t, r) in batch.into_iter().zip(results) {
                let _ = t.answer.send(Ok(r));
            }
        }
        Err(_) if batch.len() > 1 => {
            for t in batch {
                let one = write(conn, std::slice::from_ref(&t), now);
                let answer = match one {
                    Ok(mut r) => r.pop().ok_or_else(|| "nothing written".to_string()),
                    Err(e) => {
                        log::error!(target: "http", "enqueue failed: {e}");
                        Err(e.to_string())
                    }
                };
                let _ = t.answer.send(answer);
            }
        }
        Err(e) => {
            log::error!(target: "http", "enqueue failed: {e}");
            for t in batch {
                let _ = t.answer.send(Err(e.to_string()));
            }
        }
    }
}

fn write(
    conn: &mut Connection,
    batch: &[Ticket],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Written>, StoreError> {
    let tx = queue::begin(conn)?;
    let mut results = Vec::with_capacity(batch.len());
    for t in batch {
        results.push(match &t.work {
            Work::Job(job) => {
                let enq = queue::enqueue_in(&tx, job, t.ttl, now)?;
                if let Enqueued::Deduplicated(existing) = &enq {
                    decisions::record(&tx, &duplicate(job, existing, now))?;
                }
                Written::Job(enq)
            }
            Work::Decision(d) => {
                decisions::record(&tx, d)?;
                super::relay::record_refusal(&tx, d, now)?;
                Written::Recorded
            }
            Work::Plan(plan) => {
                let ids = insert_children(&tx, plan, t.ttl, now)?;
                super::relay::record_acceptance(&tx, plan, &ids, now)?;
                Written::Plan(ids)
            }
        });
    }
    tx.commit()
        .map_err(|e| StoreError::sqlite("commit the intake batch", e))?;
    Ok(results)
}

/// The decision that `job` was dropped as a duplicate of `existing`.
fn duplicate(job: &NewJob, existing: &str, now: chrono::DateTime<chrono::Utc>) -> Decision {
    let scope = match &job.submitter {
        Some(name) => format!("{}:{name}", job.submitted_by.as_str()),
        None => job.submitted_by.as_str().to_string(),
    };
    let why = match &job.dedupe_key {
        Some(key) => format!("same dedupe key `{key}` as a job in flight or succeeded recently"),
        None => "an identical job is in flight or succeeded recently".to_string(),
    };
    Decision::new(
        &job.plugin,
        &scope,
        &job.command,
        Kind::Deduplicated,
        why,
        now,
    )
    .job(existing)
}
