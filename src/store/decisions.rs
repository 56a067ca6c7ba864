//! `decisions`: every scheduler and intake decision that did not produce a run,
//! with its reason, so "why didn't it run?" has a durable answer
//! (`ductile explain`).
//!
//! Rows coalesce: a decision identical to the latest one recorded for the same
//! subject (plugin + scope; same kind, detail, command and job) bumps that
//! row's `count` and `last_at` instead of adding a row. A schedule skipped every
//! second for a month is then one row, while an interleaving of different
//! reasons keeps its order. Retention prunes rows whose `last_at` is older than
//! the `job_log` cutoff.
//!
//! Recording is one lookup and one write on the caller's connection, inside the
//! transaction it already runs: never a connection of its own.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::StoreError;
use crate::clock::format_ts;

/// Why something due or submitted did not become a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A previous run was still queued or running (`if_running: skip`).
    IfRunningSkip,
    /// `max_outstanding_polls` polls were already in flight.
    PollGuard,
    /// The command's circuit breaker was open.
    BreakerOpen,
    /// The occurrence fell outside `only_between`.
    OutsideOnlyBetween,
    /// The occurrence fell on a `not_on` day.
    NotOn,
    /// Runs missed while stopped were dropped by `catch_up`.
    CatchUpSkipped,
    /// An identical job was in flight or succeeded recently.
    Deduplicated,
    /// The schedule is paused (`ductile schedule pause`).
    Paused,
    /// The submission could not be parsed (a webhook body that is not JSON).
    ParseInvalid,
    /// A webhook delivery had a bad or missing signature or token.
    WebhookSignatureRejected,
    /// New work was refused because the ledger's disk is nearly full.
    AdmissionRefusedDisk,
    /// A relay request was refused; the detail is its stable error code.
    RelayRejected,
}

/// Every kind, for parsing and documentation.
pub const KINDS: &[Kind] = &[
    Kind::IfRunningSkip,
    Kind::PollGuard,
    Kind::BreakerOpen,
    Kind::OutsideOnlyBetween,
    Kind::NotOn,
    Kind::CatchUpSkipped,
    Kind::Deduplicated,
    Kind::Paused,
    Kind::ParseInvalid,
    Kind::WebhookSignatureRejected,
    Kind::AdmissionRefusedDisk,
    Kind::RelayRejected,
];

impl Kind {
    /// The ledger's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::IfRunningSkip => "if_running_skip",
            Kind::PollGuard => "poll_guard",
            Kind::BreakerOpen => "breaker_open",
            Kind::OutsideOnlyBetween => "outside_only_between",
            Kind::NotOn => "not_on",
            Kind::CatchUpSkipped => "catch_up_skipped",
            Kind::Deduplicated => "deduplicated",
            Kind::Paused => "paused",
            Kind::ParseInvalid => "parse_invalid",
            Kind::WebhookSignatureRejected => "webhook_signature_rejected",
            Kind::AdmissionRefusedDisk => "admission_refused_disk",
            Kind::RelayRejected => "relay_rejected",
        }
    }

    /// Parses the ledger's spelling.
    pub fn parse(s: &str) -> Option<Kind> {
        KINDS.iter().copied().find(|k| k.as_str() == s)
    }

    /// The verb phrase `explain` builds its sentences from.
    pub fn phrase(self) -> &'static str {
        match self {
            Kind::IfRunningSkip => "was skipped because a previous run was still queued or running",
            Kind::PollGuard => "was held back by the poll guard",
            Kind::BreakerOpen => "was held back because the circuit breaker was open",
            Kind::OutsideOnlyBetween => "did not run because the time fell outside only_between",
            Kind::NotOn => "did not run because the day is excluded by not_on",
            Kind::CatchUpSkipped => "did not make up missed runs",
            Kind::Deduplicated => "was deduplicated onto an existing job",
            Kind::Paused => "did not run because the schedule is paused",
            Kind::ParseInvalid => "was refused because it could not be parsed",
            Kind::WebhookSignatureRejected => "was refused: bad or missing webhook signature",
            Kind::AdmissionRefusedDisk => "was refused because the disk is nearly full",
            Kind::RelayRejected => "was refused by the relay ingress",
        }
    }
}

/// One decision to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Plugin the work was for.
    pub plugin: String,
    /// What made the decision about what: a schedule id, `webhook:<name>`,
    /// or the submitter kind (`api`, `cli`).
    pub scope: String,
    /// Command the work would have run.
    pub command: Option<String>,
    /// Why it did not run.
    pub kind: Kind,
    /// The specifics in words, without timestamps (so repeats coalesce).
    pub detail: String,
    /// The job it concerns (the existing job for a duplicate).
    pub job_id: Option<String>,
    /// The occurrence it was about, for schedules.
    pub due_at: Option<DateTime<Utc>>,
    /// When it was decided.
    pub at: DateTime<Utc>,
}

impl Decision {
    /// A decision about schedule `scope` of `plugin`.
    pub fn new(
        plugin: &str,
        scope: &str,
        command: &str,
        kind: Kind,
        detail: impl Into<String>,
        at: DateTime<Utc>,
    ) -> Decision {
        Decision {
            plugin: plugin.to_string(),
            scope: scope.to_string(),
            command: Some(command.to_string()),
            kind,
            detail: detail.into(),
            job_id: None,
            due_at: None,
            at,
        }
    }

    /// With the job it concerns.
    pub fn job(mut self, id: &str) -> Decision {
        self.job_id = Some(id.to_string());
        self
    }

    /// With the occurrence it concerns.
    pub fn due(mut self, due_at: DateTime<Utc>) -> Decision {
        self.due_at = Some(due_at);
        self
    }
}

/// A stored (possibly coalesced) decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Row id, in recording order.
    pub id: i64,
    /// Plugin.
    pub plugin: String,
    /// Schedule id, `webhook:<name>` or submitter kind.
    pub scope: String,
    /// Command.
    pub command: Option<String>,
    /// Reason kind, as stored.
    pub kind: String,
    /// Specifics.
    pub detail: String,
    /// Job concerned.
    pub job_id: Option<String>,
    /// Latest occurrence concerned.
    pub due_at: Option<String>,
    /// How many identical decisions this row stands for.
    pub count: i64,
    /// The first of them.
    pub first_at: String,
    /// The latest of them.
    pub last_at: String,
}

/// Records `d`, coalescing it into the subject's latest row when identical.
pub fn record(conn: &Connection, d: &Decision) -> Result<(), StoreError> {
    let op = |e| StoreError::sqlite(format!("record a decision for {}/{}", d.plugin, d.scope), e);
    let at = format_ts(d.at);
    let due = d.due_at.map(format_ts);
    // The subject's latest row, and whether it is the same decision.
    let latest: Option<(i64, bool)> = conn
        .prepare_cached(
            "SELECT id, kind = ?3 AND detail = ?4 AND command IS ?5 AND job_id IS ?6 FROM decisions
             WHERE plugin = ?1 AND scope = ?2 ORDER BY id DESC LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    d.plugin,
                    d.scope,
                    d.kind.as_str(),
                    d.detail,
                    d.command,
                    d.job_id
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
        .map_err(op)?;
    if let Some((id, true)) = latest {
        conn.prepare_cached(
            "UPDATE decisions SET count = count + 1, last_at = max(last_at, ?2),
             due_at = coalesce(?3, due_at) WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![id, at, due]))
        .map_err(op)?;
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO decisions (plugin, scope, command, kind, detail, job_id, due_at, count, first_at, last_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?8)",
    )
    .and_then(|mut s| {
        s.execute(params![
            d.plugin,
            d.scope,
            d.command,
            d.kind.as_str(),
            d.detail,
            d.job_id,
            due,
            at
        ])
    })
    .map_err(op)?;
    Ok(())
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        id: r.get(0)?,
        plugin: r.get(1)?,
        scope: r.get(2)?,
        command: r.get(3)?,
        kind: r.get(4)?,
        detail: r.get(5)?,
        job_id: r.get(6)?,
        due_at: r.get(7)?,
        count: r.get(8)?,
        first_at: r.get(9)?,
        last_at: r.get(10)?,
    })
}

const COLUMNS: &str =
    "id, plugin, scope, command, kind, detail, job_id, due_at, count, first_at, last_at";

/// Decisions about `plugin` (one scope when given) whose latest instance is at
/// or after `since`, oldest first, at most the newest `limit`.
pub fn for_plugin(
    conn: &Connection,
    plugin: &str,
    scope: Option<&str>,
    since: Option<DateTime<Utc>>,
    limit: usize,
) -> Result<Vec<Row>, StoreError> {
    let since = since.map(format_ts).unwrap_or_default();
    let mut rows: Vec<Row> = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM decisions
             WHERE plugin = ?1 AND (?2 IS NULL OR scope = ?2) AND last_at >= ?3
             ORDER BY id DESC LIMIT ?4"
        ))
        .and_then(|mut s| {
            s.query_map(params![plugin, scope, since, limit as i64], from_row)
                .and_then(|rows| rows.collect())
        })
        .map_err(|e| StoreError::sqlite(format!("read decisions of {plugin}"), e))?;
    rows.reverse();
    Ok(rows)
}

/// Decisions that name job `id`, oldest first.
pub fn for_job(conn: &Connection, id: &str) -> Result<Vec<Row>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM decisions WHERE job_id = ?1 ORDER BY id"
    ))
    .and_then(|mut s| s.query_map([id], from_row).and_then(|rows| rows.collect()))
    .map_err(|e| StoreError::sqlite(format!("read decisions of job {id}"), e))
}

/// One step of a job's life, for explaining it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// Status before (none for the enqueue).
    pub from_status: Option<String>,
    /// Status after.
    pub to_status: String,
    /// Attempt number.
    pub attempt: i64,
    /// Why, as the queue wrote it.
    pub reason: String,
    /// When.
    pub at: String,
}

/// Job `id`'s transitions, oldest first.
pub fn steps(conn: &Connection, id: &str) -> Result<Vec<Step>, StoreError> {
    conn.prepare_cached(
        "SELECT from_status, to_status, attempt, reason, created_at FROM job_transitions WHERE job_id = ?1 ORDER BY id",
    )
    .and_then(|mut s| {
        s.query_map([id], |r| {
            Ok(Step {
                from_status: r.get(0)?,
                to_status: r.get(1)?,
                attempt: r.get(2)?,
                reason: r.get(3)?,
                at: r.get(4)?,
            })
        })
        .and_then(|rows| rows.collect())
    })
    .map_err(|e| StoreError::sqlite(format!("read the transitions of job {id}"), e))
}

/// Deletes rows whose latest instance is before `cutoff`, in batches of
/// [`super::retention::BATCH`], at most `max_batches`; the rows deleted.
pub fn prune(conn: &Connection, cutoff: &str, max_batches: usize) -> Result<usize, StoreError> {
    let mut total = 0;
    for _ in 0..max_batches {
        let n = conn
            .prepare_cached(
                "DELETE FROM decisions WHERE rowid IN
                 (SELECT rowid FROM decisions WHERE last_at < ?1 LIMIT ?2)",
            )
            .and_then(|mut s| s.execute(params![cutoff, super::retention::BATCH as i64]))
            .map_err(|e| StoreError::sqlite("prune decisions", e))?;
        total += n;
        if n < super::retention::BATCH {
            break;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_ts;
    use crate::config::Synchronous;
    use crate::store::testing::TempDir;

    fn t(s: &str) -> DateTime<Utc> {
        parse_ts(s).unwrap()
    }

    #[test]
    fn identical_repeats_coalesce_and_a_change_of_reason_starts_a_row() {
        let tmp = TempDir::new("decisions-coalesce");
        let conn = crate::store::open(&tmp.0.join("d.db"), Synchronous::Normal).unwrap();
        let skip = |at: &str| {
            Decision::new("p", "default", "poll", Kind::IfRunningSkip, "busy", t(at)).due(t(at))
        };
        for s in 0..50 {
            record(&conn, &skip(&format!("2026-03-01T00:00:{s:02}Z"))).unwrap();
        }
        record(
            &conn,
            &Decision::new(
                "p",
                "default",
                "poll",
                Kind::BreakerOpen,
                "open",
                t("2026-03-01T00:01:00Z"),
            ),
        )
        .unwrap();
        record(&conn, &skip("2026-03-01T00:02:00Z")).unwrap();
        // Another scope in between does not break the first scope's run.
        record(
            &conn,
            &Decision::new(
                "p",
                "other",
                "poll",
                Kind::Paused,
                "paused",
                t("2026-03-01T00:03:00Z"),
            ),
        )
        .unwrap();
        record(&conn, &skip("2026-03-01T00:04:00Z")).unwrap();
        let rows = for_plugin(&conn, "p", Some("default"), None, 100).unwrap();
        let shape: Vec<(&str, i64)> = rows.iter().map(|r| (r.kind.as_str(), r.count)).collect();
        assert_eq!(
            shape,
            [
                ("if_running_skip", 50),
                ("breaker_open", 1),
                ("if_running_skip", 2)
            ]
        );
        assert_eq!(rows[0].first_at, "2026-03-01T00:00:00.000000Z");
        assert_eq!(rows[0].last_at, "2026-03-01T00:00:49.000000Z");
        assert_eq!(
            rows[2].due_at.as_deref(),
            Some("2026-03-01T00:04:00.000000Z")
        );
        let since = for_plugin(&conn, "p", None, Some(t("2026-03-01T00:02:30Z")), 100).unwrap();
        assert_eq!(since.len(), 2, "{since:?}");
        assert_eq!(prune(&conn, "2026-03-01T00:03:30.000000Z", 10).unwrap(), 3);
        assert_eq!(for_plugin(&conn, "p", None, None, 100).unwrap().len(), 1);
    }

    #[test]
    fn retention_prunes_decisions_with_the_job_history() {
        let tmp = TempDir::new("decisions-retention");
        let conn = crate::store::open(&tmp.0.join("d.db"), Synchronous::Normal).unwrap();
        for (scope, at) in [
            ("old", "2026-01-01T00:00:00Z"),
            ("new", "2026-03-01T00:00:00Z"),
        ] {
            let d = Decision::new("p", scope, "poll", Kind::Paused, "paused", t(at));
            record(&conn, &d).unwrap();
        }
        let cutoff = t("2026-02-01T00:00:00Z");
        let pruned = crate::store::retention::prune(&conn, cutoff, cutoff, 10).unwrap();
        assert_eq!(pruned.history, 1);
        let left: Vec<String> = for_plugin(&conn, "p", None, None, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.scope)
            .collect();
        assert_eq!(left, ["new"]);
    }

    #[test]
    fn duplicates_onto_different_jobs_stay_apart() {
        let tmp = TempDir::new("decisions-jobs");
        let conn = crate::store::open(&tmp.0.join("d.db"), Synchronous::Normal).unwrap();
        let dup = |job: &str| {
            Decision::new(
                "p",
                "api",
                "poll",
                Kind::Deduplicated,
                "same key",
                t("2026-03-01T00:00:00Z"),
            )
            .job(job)
        };
        record(&conn, &dup("a")).unwrap();
        record(&conn, &dup("a")).unwrap();
        record(&conn, &dup("b")).unwrap();
        assert_eq!(for_job(&conn, "a").unwrap()[0].count, 2);
        assert_eq!(for_job(&conn, "b").unwrap()[0].count, 1);
        for k in KINDS {
            assert_eq!(Kind::parse(k.as_str()), Some(*k));
        }
    }
}
