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
        let rt = svc.cell.current();
        family(
            &mut out,
            "ductile_build_info",
            "gauge",
            "Build information.",
        );
        sample(
            &mut out,
            "ductile_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        family(
            &mut out,
            "ductile_uptime_seconds",
            "gauge",
            "Seconds since the daemon started.",
        );
        sample(
            &mut out,
            "ductile_uptime_seconds",
            &[],
            svc.started.elapsed().as_secs_f64(),
        );
        let (rss, fds) = process_figures();
        family(
            &mut out,
            "ductile_process_resident_memory_bytes",
            "gauge",
            "Resident set size of the daemon.",
        );
        sample(
            &mut out,
            "ductile_process_resident_memory_bytes",
            &[],
            rss as f64,
        );
        family(
            &mut out,
            "ductile_process_open_fds",
            "gauge",
            "Open file descriptors of the daemon.",
        );
        sample(&mut out, "ductile_process_open_fds", &[], fds as f64);

        let sql = |what: &'static str| move |e| StoreError::sqlite(what, e);
        family(
            &mut out,
            "ductile_jobs_total",
            "counter",
            "Job attempts recorded in the ledger (job_log, within its retention) by plugin, command and outcome.",
        );
        {
            let mut stmt = conn
                .prepare_cached("SELECT plugin, command, status, COUNT(*) FROM job_log GROUP BY plugin, command, status")
                .map_err(sql("count job attempts"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(sql("count job attempts"))?;
            for row in rows {
                let (p, c, s, n) = row.map_err(sql("count job attempts"))?;
                sample(
                    &mut out,
                    "ductile_jobs_total",
                    &[("plugin", &p), ("command", &c), ("status", &s)],
                    n as f64,
                );
            }
        }
        family(
            &mut out,
            "ductile_queue_depth",
            "gauge",
            "Jobs in the queue by status.",
        );
        {
            let mut counts: BTreeMap<String, i64> = ["queued", "running"]
                .iter()
                .map(|s| (s.to_string(), 0))
                .collect();
            let mut stmt = conn
                .prepare_cached("SELECT status, COUNT(*) FROM job_queue WHERE status IN ('queued','running') GROUP BY status")
                .map_err(sql("count the queue"))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(sql("count the queue"))?;
            for row in rows {
                let (s, n) = row.map_err(sql("count the queue"))?;
                counts.insert(s, n);
            }
            for (s, n) in counts {
                sample(&mut out, "ductile_queue_depth", &[("status", &s)], n as f64);
            }
        }
        family(
            &mut out,
            "ductile_job_duration_seconds",
            "histogram",
            "Plugin run time per job attempt (job_stopwatch, within its retention).",
        );
        {
            let cases: String = BUCKETS
                .iter()
                .map(|b| format!(", SUM(dur_ns <= {})", (b * 1e9) as i64))
                .collect();
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT plugin, COUNT(*), SUM(dur_ns){cases} FROM job_stopwatch GROUP BY plugin"
                ))
                .map_err(sql("summarise job durations"))?;
            let rows = stmt
                .query_map([], |r| {
                    let mut v = Vec::with_capacity(BUCKETS.len());
                    for i in 0..BUCKETS.len() {
                        v.push(r.get::<_, i64>(3 + i)?);
                    }
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        v,
                    ))
                })
                .map_err(sql("summarise job durations"))?;
            for row in rows {
                let (p, count, sum, buckets) = row.map_err(sql("summarise job durations"))?;
                for (b, n) in BUCKETS.iter().zip(&buckets) {
                    let le = format!("{b}");
                    sample(
                        &mut out,
                        "ductile_job_duration_seconds_bucket",
                        &[("plugin", &p), ("le", &le)],
                        *n as f64,
                    );
                }
                sample(
                    &mut out,
                    "ductile_job_duration_seconds_bucket",
                    &[("plugin", &p), ("le", "+Inf")],
                    count as f64,
                );
                sample(
                    &mut out,
                    "ductile_job_duration_seconds_sum",
                    &[("plugin", &p)],
                    sum as f64 / 1e9,
                );
                sample(
                    &mut out,
                    "ductile_job_duration_seconds_count",
                    &[("plugin", &p)],
                    count as f64,
                );
            }
        }
        family(
            &mut out,
            "ductile_breaker_state",
            "gauge",
            "Circuit breaker state by plugin and command: 0 closed, 1 half open, 2 open.",
        );
        {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT plugin, command, state FROM circuit_breakers ORDER BY plugin, command",
                )
                .map_err(sql("read breakers"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(sql("read breakers"))?;
            for row in rows {
                let (p, c, s) = row.map_err(sql("read breakers"))?;
                let v = match s.as_str() {
                    "open" => 2.0,
                    "half_open" => 1.0,
                    _ => 0.0,
                };
                sample(
                    &mut out,
                    "ductile_breaker_state",
                    &[("plugin", &p), ("command", &c)],
                    v,
                );
            }
        }
        let total = rt.config.service.max_workers;
        let busy = svc.running.len().min(total);
        family(
            &mut out,
            "ductile_workers",
            "gauge",
            "Worker threads by state.",
        );
        sample(
            &mut out,
            "ductile_workers",
            &[("state", "busy")],
            busy as f64,
        );
        sample(
            &mut out,
            "ductile_workers",
            &[("state", "idle")],
            (total - busy) as f64,
        );
        family(
            &mut out,
            "ductile_worker_utilization",
            "gauge",
            "Busy workers over all workers, now.",
        );
        sample(
            &mut out,
            "ductile_worker_utilization",
            &[],
            if total == 0 {
                0.0
            } else {
                busy as f64 / total as f64
            },
        );

        family(
            &mut out,
            "ductile_webhook_requests_total",
            "counter",
            "Webhook requests by endpoint and outcome.",
        );
        for ((name, outcome), n) in self
            .webhooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            sample(
                &mut out,
                "ductile_webhook_requests_total",
                &[("endpoint", name), ("outcome", outcome)],
                *n as f64,
            );
        }
        family(
            &mut out,
            "ductile_http_requests_total",
            "counter",
            "HTTP requests answered, by listener, route and status.",
        );
        let http = self.http.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for ((listener, route, status), (n, _)) in &http {
            let status = status.to_string();
            sample(
                &mut out,
                "ductile_http_requests_total",
                &[
                    ("listener", listener),
                    ("route", route),
                    ("status", &status),
                ],
                *n as f64,
            );
        }
        family(
            &mut out,
            "ductile_http_request_seconds_total",
            "counter",
            "Time spent answering HTTP requests, by listener, route and status.",
        );
        for ((listener, route, status), (_, secs)) in &http {
            let status = status.to_string();
            sample(
                &mut out,
                "ductile_http_request_seconds_total",
                &[
                    ("listener", listener),
                    ("route", route),
                    ("status", &status),
                ],
                *secs,
            );
        }
        Ok(out)
    }
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
