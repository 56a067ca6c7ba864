//! Circuit breakers per (plugin, command) for scheduler-originated polls: the
//! current row in `circuit_breakers` and an append-only history in
//! `circuit_breaker_transitions`. closed → open after `threshold` consecutive
//! failures; open → half_open once `reset_after` has passed (one probe);
//! half_open → closed on success, → open on failure; any → closed on manual reset.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::StoreError;
use crate::clock::{format_ts, parse_ts};

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Polls flow.
    Closed,
    /// Polls are refused until the cooldown passes.
    Open,
    /// One probe poll is allowed.
    HalfOpen,
}

impl BreakerState {
    /// The ledger's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    fn parse(s: &str) -> BreakerState {
        match s {
            "open" => BreakerState::Open,
            "half_open" => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }
}

/// The current row of a breaker.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Breaker {
    /// Plugin.
    pub plugin: String,
    /// Command.
    pub command: String,
    /// closed | open | half_open.
    pub state: String,
    /// Consecutive failures.
    pub failure_count: u32,
    /// When it last opened.
    pub opened_at: Option<String>,
    /// Last failure time.
    pub last_failure_at: Option<String>,
    /// Latest scheduler poll job processed.
    pub last_job_id: Option<String>,
    /// Last change.
    pub updated_at: String,
}

/// Whether the scheduler may enqueue a poll now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go ahead.
    Allow,
    /// The cooldown passed: this poll is the half-open probe.
    Probe,
    /// Open (or a probe is already out): skip this poll.
    Deny,
}

/// Reads a breaker row.
pub fn find(conn: &Connection, plugin: &str, command: &str) -> Result<Option<Breaker>, StoreError> {
    conn.prepare_cached(
        "SELECT plugin, command, state, failure_count, opened_at, last_failure_at, last_job_id, updated_at FROM circuit_breakers WHERE plugin = ?1 AND command = ?2",
    )
    .and_then(|mut s| {
        s.query_row(params![plugin, command], |r| {
            Ok(Breaker {
                plugin: r.get(0)?,
                command: r.get(1)?,
                state: r.get(2)?,
                failure_count: r.get(3)?,
                opened_at: r.get(4)?,
                last_failure_at: r.get(5)?,
                last_job_id: r.get(6)?,
                updated_at: r.get(7)?,
            })
        })
        .optional()
    })
    .map_err(|e| StoreError::sqlite(format!("read breaker {plugin}/{command}"), e))
}

/// Every breaker of a plugin.
pub fn for_plugin(conn: &Connection, plugin: &str) -> Result<Vec<Breaker>, StoreError> {
    let mut out = Vec::new();
    let commands: Vec<String> = conn
        .prepare("SELECT command FROM circuit_breakers WHERE plugin = ?1 ORDER BY command")
        .and_then(|mut s| {
            s.query_map([plugin], |r| r.get(0))
                .and_then(|rows| rows.collect())
        })
        .map_err(|e| StoreError::sqlite("list breakers", e))?;
    for c in commands {
        if let Some(b) = find(conn, plugin, &c)? {
            out.push(b);
        }
    }
    Ok(out)
}

/// Every breaker that is not closed.
pub fn not_closed(conn: &Connection) -> Result<Vec<Breaker>, StoreError> {
    let keys: Vec<(String, String)> = conn
        .prepare("SELECT plugin, command FROM circuit_breakers WHERE state != 'closed' ORDER BY plugin, command")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).and_then(|rows| rows.collect()))
        .map_err(|e| StoreError::sqlite("list open breakers", e))?;
    let mut out = Vec::new();
    for (p, c) in keys {
        if let Some(b) = find(conn, &p, &c)? {
            out.push(b);
        }
    }
    Ok(out)
}

/// Decides whether a scheduled poll may go out; moves open → half_open when the
/// cooldown has passed (recording the transition).
pub fn admit(
    conn: &Connection,
    plugin: &str,
    command: &str,
    reset_after: Duration,
    now: DateTime<Utc>,
) -> Result<Admission, StoreError> {
    let Some(b) = find(conn, plugin, command)? else {
        return Ok(Admission::Allow);
    };
    match BreakerState::parse(&b.state) {
        BreakerState::Closed => Ok(Admission::Allow),
        BreakerState::HalfOpen => Ok(Admission::Deny),
        BreakerState::Open => {
            let opened = b.opened_at.as_deref().and_then(parse_ts).unwrap_or(now);
            let cooled = now
                >= opened
                    + chrono::Duration::from_std(reset_after).unwrap_or(chrono::Duration::MAX);
            if !cooled {
                return Ok(Admission::Deny);
            }
            let next = Breaker {
                state: BreakerState::HalfOpen.as_str().into(),
                updated_at: format_ts(now),
                ..b
            };
            save(
                conn,
                &next,
                Some((BreakerState::Open, "cooldown_elapsed", None)),
            )?;
            Ok(Admission::Probe)
        }
    }
}

/// Records the terminal outcome of a scheduler poll (call inside the completion
/// transaction so the count and the job's status change together).
pub fn record(
    conn: &Connection,
    plugin: &str,
    command: &str,
    job_id: &str,
    succeeded: bool,
    threshold: u32,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let ts = format_ts(now);
    let current = find(conn, plugin, command)?.unwrap_or(Breaker {
        plugin: plugin.to_string(),
        command: command.to_string(),
        state: BreakerState::Closed.as_str().into(),
        failure_count: 0,
        opened_at: None,
        last_failure_at: None,
        last_job_id: None,
        updated_at: ts.clone(),
    });
    let state = BreakerState::parse(&current.state);
    let base = Breaker {
        last_job_id: Some(job_id.to_string()),
        updated_at: ts.clone(),
        ..current
    };
    if succeeded {
        let next = Breaker {
            state: BreakerState::Closed.as_str().into(),
            failure_count: 0,
            opened_at: None,
            ..base
        };
        let change = (state != BreakerState::Closed).then_some((state, "success", Some(job_id)));
        return save(conn, &next, change);
    }
    let count = base.failure_count + 1;
    let opens = state == BreakerState::HalfOpen
        || (state == BreakerState::Closed && count >= threshold.max(1));
    let next = Breaker {
        state: if opens { BreakerState::Open } else { state }
            .as_str()
            .into(),
        failure_count: count,
        opened_at: if opens {
            Some(ts.clone())
        } else {
            base.opened_at.clone()
        },
        last_failure_at: Some(ts),
        ..base
    };
    save(
        conn,
        &next,
        opens.then_some((state, "failure_threshold", Some(job_id))),
    )
}

/// Manual reset to closed. Returns false when there was no breaker row.
pub fn reset(
    conn: &Connection,
    plugin: &str,
    command: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let Some(b) = find(conn, plugin, command)? else {
        return Ok(false);
    };
    let from = BreakerState::parse(&b.state);
    let next = Breaker {
        state: BreakerState::Closed.as_str().into(),
        failure_count: 0,
        opened_at: None,
        updated_at: format_ts(now),
        ..b
    };
    save(conn, &next, Some((from, "manual_reset", None)))?;
    Ok(true)
}

/// Writes the current row and, for a state change, its append-only transition
/// (`change` = previous state, reason, job) and its `breaker.<state>` event in
/// the caller's transaction. Callers outside a transaction ([`admit`] on the
/// scheduler's connection, [`reset`] from the CLI) get one of their own, so the
/// row, its history and its event still land together.
fn save(
    conn: &Connection,
    row: &Breaker,
    change: Option<(BreakerState, &str, Option<&str>)>,
) -> Result<(), StoreError> {
    if change.is_none() || !conn.is_autocommit() {
        return write(conn, row, change);
    }
    let what = || format!("breaker {}/{}", row.plugin, row.command);
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
        .map_err(|e| StoreError::sqlite(format!("begin writing {}", what()), e))?;
    write(&tx, row, change)?;
    tx.commit()
        .map_err(|e| StoreError::sqlite(format!("commit {}", what()), e))
}

fn write(
    conn: &Connection,
    row: &Breaker,
    change: Option<(BreakerState, &str, Option<&str>)>,
) -> Result<(), StoreError> {
    let (plugin, command) = (row.plugin.as_str(), row.command.as_str());
    conn.prepare_cached(
        "INSERT INTO circuit_breakers (plugin, command, state, failure_count, opened_at, last_failure_at, last_job_id, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(plugin, command) DO UPDATE SET state = excluded.state, failure_count = excluded.failure_count,
           opened_at = excluded.opened_at, last_failure_at = excluded.last_failure_at, last_job_id = excluded.last_job_id, updated_at = excluded.updated_at",
    )
    .and_then(|mut s| s.execute(params![plugin, command, row.state, row.failure_count, row.opened_at, row.last_failure_at, row.last_job_id, row.updated_at]))
    .map_err(|e| StoreError::sqlite(format!("write breaker {plugin}/{command}"), e))?;
    let Some((from, reason, job_id)) = change else {
        return Ok(());
    };
    log::info!(plugin = plugin; "circuit breaker {command}: {} -> {} ({reason})", from.as_str(), row.state);
    conn.prepare_cached(
        "INSERT INTO circuit_breaker_transitions (id, plugin, command, from_state, to_state, failure_count, reason, job_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| s.execute(params![uuid::Uuid::now_v7().to_string(), plugin, command, from.as_str(), row.state, row.failure_count, reason, job_id, row.updated_at]))
    .map_err(|e| StoreError::sqlite(format!("record breaker transition {plugin}/{command}"), e))?;
    super::events::record_at(
        conn,
        &format!("breaker.{}", row.state),
        Some(plugin),
        Some(command),
        job_id,
        &serde_json::json!({"from": from.as_str(), "to": row.state, "reason": reason, "failure_count": row.failure_count}),
        &row.updated_at,
    )
}

/// One history row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Transition {
    /// Previous state.
    pub from_state: Option<String>,
    /// New state.
    pub to_state: String,
    /// Failures at the time.
    pub failure_count: u32,
    /// failure_threshold | success | cooldown_elapsed | manual_reset.
    pub reason: String,
    /// The job involved.
    pub job_id: Option<String>,
    /// When.
    pub created_at: String,
}

/// The newest `limit` transitions of a plugin's breakers, newest first.
pub fn history(
    conn: &Connection,
    plugin: &str,
    limit: usize,
) -> Result<Vec<(String, Transition)>, StoreError> {
    conn.prepare(
        "SELECT command, from_state, to_state, failure_count, reason, job_id, created_at FROM circuit_breaker_transitions WHERE plugin = ?1 ORDER BY created_at DESC, rowid DESC LIMIT ?2",
    )
    .and_then(|mut s| {
        s.query_map(params![plugin, limit as i64], |r| {
            Ok((
                r.get(0)?,
                Transition {
                    from_state: r.get(1)?,
                    to_state: r.get(2)?,
                    failure_count: r.get(3)?,
                    reason: r.get(4)?,
                    job_id: r.get(5)?,
                    created_at: r.get(6)?,
                },
            ))
        })
        .and_then(|rows| rows.collect())
    })
    .map_err(|e| StoreError::sqlite("read breaker history", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_ts;
    use crate::config::Synchronous;
    use crate::store::testing::TempDir;

    #[test]
    fn breaker_walks_closed_open_half_open_closed() {
        let tmp = TempDir::new("breaker");
        let conn = crate::store::open(&tmp.0.join("d.db"), Synchronous::Normal).unwrap();
        let t0 = parse_ts("2026-01-01T00:00:00Z").unwrap();
        let cool = Duration::from_secs(1800);
        assert_eq!(
            admit(&conn, "p", "poll", cool, t0).unwrap(),
            Admission::Allow
        );
        for i in 0..3 {
            record(&conn, "p", "poll", &format!("j{i}"), false, 3, t0).unwrap();
        }
        assert_eq!(find(&conn, "p", "poll").unwrap().unwrap().state, "open");
        assert_eq!(
            admit(&conn, "p", "poll", cool, t0 + chrono::Duration::minutes(29)).unwrap(),
            Admission::Deny
        );
        let t1 = t0 + chrono::Duration::minutes(30);
        assert_eq!(
            admit(&conn, "p", "poll", cool, t1).unwrap(),
            Admission::Probe
        );
        assert_eq!(
            admit(&conn, "p", "poll", cool, t1).unwrap(),
            Admission::Deny,
            "one probe at a time"
        );
        record(&conn, "p", "poll", "probe1", false, 3, t1).unwrap();
        assert_eq!(
            find(&conn, "p", "poll").unwrap().unwrap().state,
            "open",
            "failed probe reopens"
        );
        let t2 = t1 + chrono::Duration::minutes(30);
        assert_eq!(
            admit(&conn, "p", "poll", cool, t2).unwrap(),
            Admission::Probe
        );
        record(&conn, "p", "poll", "probe2", true, 3, t2).unwrap();
        let b = find(&conn, "p", "poll").unwrap().unwrap();
        assert_eq!((b.state.as_str(), b.failure_count), ("closed", 0));
        let reasons: Vec<String> = history(&conn, "p", 10)
            .unwrap()
            .into_iter()
            .rev()
            .map(|(_, t)| {
                format!(
                    "{}>{}:{}",
                    t.from_state.unwrap_or_default(),
                    t.to_state,
                    t.reason
                )
            })
            .collect();
        assert_eq!(
            reasons,
            vec![
                "closed>open:failure_threshold",
                "open>half_open:cooldown_elapsed",
                "half_open>open:failure_threshold",
                "open>half_open:cooldown_elapsed",
                "half_open>closed:success"
            ]
        );
    }

    #[test]
    fn success_resets_the_count_and_manual_reset_closes() {
        let tmp = TempDir::new("breaker2");
        let conn = crate::store::open(&tmp.0.join("d.db"), Synchronous::Normal).unwrap();
        let t0 = parse_ts("2026-01-01T00:00:00Z").unwrap();
        record(&conn, "p", "poll", "a", false, 3, t0).unwrap();
        record(&conn, "p", "poll", "b", false, 3, t0).unwrap();
        record(&conn, "p", "poll", "c", true, 3, t0).unwrap();
        record(&conn, "p", "poll", "d", false, 3, t0).unwrap();
        assert_eq!(find(&conn, "p", "poll").unwrap().unwrap().state, "closed");
        record(&conn, "p", "poll", "e", false, 2, t0).unwrap();
        assert_eq!(find(&conn, "p", "poll").unwrap().unwrap().state, "open");
        assert!(reset(&conn, "p", "poll", t0).unwrap());
        assert_eq!(find(&conn, "p", "poll").unwrap().unwrap().state, "closed");
        assert!(!reset(&conn, "q", "poll", t0).unwrap());
    }
}
