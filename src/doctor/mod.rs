//! Diagnostics shared by the CLI and the HTTP API: `selfcheck` (the
//! read-only invariants of a deploy gate: config, lock, ledger integrity and
//! schema, queue freshness) and `doctor` (the runtime's health: plugin
//! `health` commands, breakers, free disk, stuck jobs, invalid schedules, WAL
//! size). One implementation; `ductile system selfcheck|doctor` and
//! `GET /system/selfcheck|doctor` only render its [`Report`].
//!
//! Owns: the checks and their remedies. Must not: write the ledger or print.

mod runtime;
mod selfcheck;

mod relay;
pub use relay::probes as relay_probes;
pub use runtime::{Ledger, doctor};
pub use selfcheck::{selfcheck, selfcheck_loaded};

use serde::Serialize;
use serde_json::{Value, json};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Healthy.
    Ok,
    /// Worth a look; does not fail the report.
    Warn,
    /// Broken; the report fails (exit 1).
    Fail,
    /// Not run, with the reason in the detail (never a failure).
    Skipped,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skipped => "skipped",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable name (`db_integrity`, `plugin_health.echo`).
    pub name: String,
    /// Its outcome.
    pub status: Status,
    /// What was found, one line.
    pub detail: String,
    /// What to do about a warning or failure, one line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

impl Check {
    /// A passing check.
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            remedy: None,
        }
    }

    /// A skipped check; `why` says why.
    pub fn skipped(name: impl Into<String>, why: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Skipped,
            detail: format!("skipped: {}", why.into()),
            remedy: None,
        }
    }

    /// A failed check with its remedy.
    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        remedy: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            status: Status::Fail,
            detail: detail.into(),
            remedy: Some(remedy.into()),
        }
    }

    /// A warning with its remedy.
    pub fn warn(
        name: impl Into<String>,
        detail: impl Into<String>,
        remedy: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            status: Status::Warn,
            detail: detail.into(),
            remedy: Some(remedy.into()),
        }
    }
}

/// Every check of one run, in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `selfcheck` or `doctor`.
    pub kind: &'static str,
    /// The findings.
    pub checks: Vec<Check>,
}

impl Report {
    /// No check failed (warnings and skips do not count).
    pub fn healthy(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    /// `ok`, `degraded` (warnings only) or `failed`.
    pub fn verdict(&self) -> &'static str {
        if !self.healthy() {
            "failed"
        } else if self.checks.iter().any(|c| c.status == Status::Warn) {
            "degraded"
        } else {
            "ok"
        }
    }

    /// `{"status", "checks": [{name, status, detail, remedy?}]}`.
    pub fn to_json(&self) -> Value {
        json!({
            "kind": self.kind,
            "status": self.verdict(),
            "healthy": self.healthy(),
            "checks": self.checks,
        })
    }

    /// One line per check, remedies indented under failures and warnings.
    pub fn to_text(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!(
                "{:<7} {:<width$}  {}\n",
                c.status.as_str().to_uppercase(),
                c.name,
                // The status column already says it.
                c.detail.strip_prefix("skipped: ").unwrap_or(&c.detail)
            ));
            if let Some(r) = &c.remedy {
                out.push_str(&format!("        {:<width$}  fix: {r}\n", ""));
            }
        }
        out.push_str(&format!("{}: {}\n", self.kind, self.verdict()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(checks: Vec<Check>) -> Report {
        Report {
            kind: "doctor",
            checks,
        }
    }

    #[test]
    fn the_verdict_follows_the_worst_check_and_skips_never_fail() {
        let ok = Check::ok("a", "fine");
        let skipped = Check::skipped("b", "the daemon holds the lock");
        let warn = Check::warn("c", "big", "shrink it");
        let fail = Check::fail("d", "broken", "fix it");
        assert_eq!(report(vec![ok.clone(), skipped.clone()]).verdict(), "ok");
        assert_eq!(report(vec![ok.clone(), warn.clone()]).verdict(), "degraded");
        let failed = report(vec![ok, skipped, warn, fail]);
        assert_eq!(failed.verdict(), "failed");
        assert!(!failed.healthy());
        assert_eq!(
            failed.to_text(),
            "OK      a  fine\nSKIPPED b  the daemon holds the lock\nWARN    c  big\n           fix: shrink it\nFAIL    d  broken\n           fix: fix it\ndoctor: failed\n"
        );
        let v = failed.to_json();
        assert_eq!(
            v["checks"][1]["detail"],
            "skipped: the daemon holds the lock"
        );
        assert!(v["checks"][0].get("remedy").is_none());
    }
}
