//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4).
//! Request counters live here in memory; job figures are read from the ledger
//! at scrape time, so they are right after a restart and cost nothing per job.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::Connection;

use super::{Services, Surface};
use crate::store::StoreError;

/// Upper bounds of the job duration histogram, in seconds.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Requests and seconds spent, by (listener, route, status).
type HttpCounts = BTreeMap<(&'static str, &'static str, u16), (u64, f64)>;

/// In-memory request counters.
#[derive(Debug, Default)]
pub struct Metrics {
    http: Mutex<HttpCounts>,
    webhooks: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl Metrics {
    /// Counts an answered request.
    pub fn http_request(&self, surface: Surface, route: &'static str, status: u16, took: Duration) {
        let listener = match surface {
            Surface::Api => "api",
            Surface::Webhooks => "webhooks",
        };
        let mut m = self.http.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry((listener, route, status)).or_insert((0, 0.0));
        e.0 += 1;
        e.1 += took.as_secs_f64();
    }

    /// Counts a webhook request by endpoint and outcome.
    pub fn webhook(&self, endpoint: &str, outcome: &'static str) {
        let mut m = self.webhooks.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((endpoint.to_string(), outcome)).or_insert(0) += 1;
    }

    /// The whole exposition.
    pub fn render(&self, svc: &Services, conn: &Connection) -> Result<String, StoreError> {
        let mut out = String::with_capacity(4096);
        let o = &mut out;
        let rt = svc.cell.current();
        let (rss, fds) = process_figures();
        let single: [Single<'_>; 4] = [
            (
                "ductile_build_info",
                "gauge",
                "Build information.",
                &[("version", env!("CARGO_PKG_VERSION"))],
                1.0,
            ),
            (
                "ductile_uptime_seconds",
                "gauge",
                "Seconds since the daemon started.",
                &[],
                svc.started.elapsed().as_secs_f64(),
            ),
            (
                "ductile_process_resident_memory_bytes",
                "gauge",
                "Resident set size of the daemon.",
                &[],
                rss as f64,
            ),
            (
                "ductile_process_open_fds",
                "gauge",
                "Open file descriptors of the daemon.",
                &[],
                fds as f64,
            ),
        ];
        for (name, kind, help, labels, value) in single {
            family(o, name, kind, help);
            sample(o, name, labels, value);
        }

        family(
            o,
            "ductile_jobs_total",
            "counter",
            "Job attempts recorded in the ledger (job_log, within its retention) by plugin, command and outcome.",
        );
        for r in rows(
            conn,
            "SELECT plugin, command, status, COUNT(*) FROM job_log GROUP BY plugin, command, status",
            "count job attempts",
        )? {
            sample(
                o,
                "ductile_jobs_total",
                &[("plugin", &r[0]), ("command", &r[1]), ("status", &r[2])],
                num(&r[3]),
            );
        }

        family(
            o,
            "ductile_queue_depth",
            "gauge",
            "Jobs in the queue by status.",
        );
        let depth = rows(
            conn,
            "SELECT status, COUNT(*) FROM job_queue WHERE status IN ('queued','running') GROUP BY status",
            "count the queue",
        )?;
        for status in ["queued", "running"] {
            let n = depth
                .iter()
                .find(|r| r[0] == status)
                .map_or(0.0, |r| num(&r[1]));
            sample(o, "ductile_queue_depth", &[("status", status)], n);
        }

        family(
            o,
            "ductile_job_duration_seconds",
            "histogram",
            "Plugin run time per job attempt (job_stopwatch, within its retention).",
        );
        let cases: String = BUCKETS
            .iter()
            .map(|b| format!(", SUM(dur_ns <= {})", (b * 1e9) as i64))
            .collect();
        let sql = format!(
            "SELECT plugin, COUNT(*), SUM(dur_ns){cases} FROM job_stopwatch GROUP BY plugin"
        );
        let name = "ductile_job_duration_seconds";
        for r in rows(conn, &sql, "summarise job durations")? {
            let p = r[0].as_str();
            for (b, n) in BUCKETS.iter().zip(&r[3..]) {
                sample(
                    o,
                    &format!("{name}_bucket"),
                    &[("plugin", p), ("le", &b.to_string())],
                    num(n),
                );
            }
            sample(
                o,
                &format!("{name}_bucket"),
                &[("plugin", p), ("le", "+Inf")],
                num(&r[1]),
            );
            sample(
                o,
                &format!("{name}_sum"),
                &[("plugin", p)],
                num(&r[2]) / 1e9,
            );
            sample(o, &format!("{name}_count"), &[("plugin", p)], num(&r[1]));
        }

        family(
            o,
            "ductile_breaker_state",
            "gauge",
            "Circuit breaker state by plugin and command: 0 closed, 1 half open, 2 open.",
        );
        for r in rows(
            conn,
            "SELECT plugin, command, state FROM circuit_breakers ORDER BY plugin, command",
            "read breakers",
        )? {
            let v = match r[2].as_str() {
                "open" => 2.0,
                "half_open" => 1.0,
                _ => 0.0,
            };
            sample(
                o,
                "ductile_breaker_state",
                &[("plugin", &r[0]), ("command", &r[1])],
                v,
            );
        }

        relay(o, conn)?;

        let total = rt.config.service.max_workers;
        let busy = svc.running.len().min(total);
        family(o, "ductile_workers", "gauge", "Worker threads by state.");
        sample(o, "ductile_workers", &[("state", "busy")], busy as f64);
        sample(
            o,
            "ductile_workers",
            &[("state", "idle")],
            (total - busy) as f64,
        );
        family(
            o,
            "ductile_worker_utilization",
            "gauge",
            "Busy workers over all workers, now.",
        );
        let utilization = if total == 0 {
            0.0
        } else {
            busy as f64 / total as f64
        };
        sample(o, "ductile_worker_utilization", &[], utilization);

        family(
            o,
            "ductile_webhook_requests_total",
            "counter",
            "Webhook requests by endpoint and outcome.",
        );
        for ((endpoint, outcome), n) in self
            .webhooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            sample(
                o,
                "ductile_webhook_requests_total",
                &[("endpoint", endpoint), ("outcome", outcome)],
                *n as f64,
            );
        }
        let http = self.http.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (name, help, seconds) in [
            (
                "ductile_http_requests_total",
                "HTTP requests answered, by listener, route and status.",
                false,
            ),
            (
                "ductile_http_request_seconds_total",
                "Time spent answering HTTP requests, by listener, route and status.",
                true,
            ),
        ] {
            family(o, name, "counter", help);
            for ((listener, route, status), (n, secs)) in &http {
                let labels = [
                    ("listener", *listener),
                    ("route", *route),
                    ("status", &status.to_string()),
                ];
                sample(o, name, &labels, if seconds { *secs } else { *n as f64 });
            }
        }
        Ok(out)
    }
}

/// A one-sample family: name, type, help, labels, value.
type Single<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], f64);

/// Every row of `sql`, each column as text (SQLite renders numbers).
/// The relay families: outbox depth per instance, delivery attempts per
/// instance and outcome, and received requests per peer, outcome and reason
/// (counted from the events the ledger keeps, within its retention).
fn relay(o: &mut String, conn: &Connection) -> Result<(), StoreError> {
    family(
        o,
        "ductile_relay_outbox_depth",
        "gauge",
        "Events waiting in the relay outbox (queued or being delivered) by target instance.",
    );
    for r in rows(
        conn,
        "SELECT json_extract(payload, '$.instance'), COUNT(*) FROM job_queue
         WHERE status IN ('queued','running') AND plugin = 'relay' AND command = 'send' GROUP BY 1 ORDER BY 1",
        "count the relay outbox",
    )? {
        sample(o, "ductile_relay_outbox_depth", &[("instance", &r[0])], num(&r[1]));
    }
    family(
        o,
        "ductile_relay_sends_total",
        "counter",
        "Relay delivery attempts by target instance and outcome (sent, retry, failed).",
    );
    for r in rows(
        conn,
        "SELECT json_extract(data, '$.instance'), substr(kind, 7), COUNT(*) FROM system_events
         WHERE kind IN ('relay.sent','relay.retry','relay.failed') GROUP BY 1, 2 ORDER BY 1, 2",
        "count relay sends",
    )? {
        sample(
            o,
            "ductile_relay_sends_total",
            &[("instance", &r[0]), ("outcome", &r[1])],
            num(&r[2]),
        );
    }
    family(
        o,
        "ductile_relay_received_total",
        "counter",
        "Relay requests received by peer, outcome (accepted, rejected) and refusal reason.",
    );
    for r in rows(
        conn,
        "SELECT json_extract(data, '$.peer'), substr(kind, 7), coalesce(json_extract(data, '$.reason'), ''), COUNT(*)
         FROM system_events WHERE kind IN ('relay.accepted','relay.rejected') GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        "count relay receptions",
    )? {
        sample(
            o,
            "ductile_relay_received_total",
            &[("peer", &r[0]), ("outcome", &r[1]), ("reason", &r[2])],
            num(&r[3]),
        );
    }
    Ok(())
}

fn rows(conn: &Connection, sql: &str, what: &'static str) -> Result<Vec<Vec<String>>, StoreError> {
    let fail = |e| StoreError::sqlite(what, e);
    let mut stmt = conn.prepare_cached(sql).map_err(fail)?;
    let width = stmt.column_count();
    let found = stmt
        .query_map([], |r| {
            (0..width)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Null => String::new(),
                        rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                        rusqlite::types::ValueRef::Real(f) => f.to_string(),
                        v => v.as_str().unwrap_or_default().to_string(),
                    })
                })
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(fail)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(fail)?;
    Ok(found)
}

fn num(text: &str) -> f64 {
    text.parse().unwrap_or(0.0)
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Resident bytes and open descriptors of this process, from /proc.
fn process_figures() -> (u64, usize) {
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * crate::sys::page_size());
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    (rss, fds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        sample(&mut s, "m", &[("a", "x\"y\\z\nw")], 1.0);
        assert_eq!(s, "m{a=\"x\\\"y\\\\z\\nw\"} 1\n");
    }
}
