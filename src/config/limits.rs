//! The range of every numeric and duration key, enforced at load. Each range is
//! one a demanding operator would accept, and narrow enough that nothing
//! downstream can overflow: the longest duration is ten years, so adding any of
//! them to "now" (or doubling a backoff twenty times) stays inside chrono's
//! range. `docs/CONFIG.md` lists the same table.
//!
//! Owns: the ranges and how a violation is worded.
//! Must not: read YAML (validate does) or know defaults.

use std::time::Duration;

use super::{duration, size};

/// An inclusive range a count must fall in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counts {
    pub(super) min: u64,
    pub(super) max: u64,
}

/// An inclusive range a byte size must fall in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sizes {
    pub(super) min: u64,
    pub(super) max: u64,
}

/// An inclusive range a duration must fall in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) min: Duration,
    pub(super) max: Duration,
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

/// `service.max_workers`.
pub(super) const MAX_WORKERS: Counts = Counts { min: 1, max: 256 };
/// `service.max_response_events`.
pub(super) const MAX_RESPONSE_EVENTS: Counts = Counts {
    min: 1,
    max: 100_000,
};
/// `service.tick_interval`: below 100 ms the heartbeat only burns CPU.
pub(super) const TICK_INTERVAL: Span = Span {
    min: Duration::from_millis(100),
    max: secs(HOUR),
};
/// `service.dedupe_ttl`.
pub(super) const DEDUPE_TTL: Span = Span {
    min: secs(1),
    max: secs(365 * DAY),
};
/// `service.job_log_retention` and `service.job_queue_retention`.
pub(super) const RETENTION: Span = Span {
    min: secs(HOUR),
    max: secs(3650 * DAY),
};
/// `service.shutdown_timeout`: 0 s stops at once, killing running jobs.
pub(super) const SHUTDOWN_TIMEOUT: Span = Span {
    min: secs(0),
    max: secs(24 * HOUR),
};
/// `plugins.*.timeout` and every `plugins.*.timeouts.*`.
pub(super) const TIMEOUT: Span = Span {
    min: secs(1),
    max: secs(24 * HOUR),
};
/// `plugins.*.keep_warm`: a resident container is the bounded exception to
/// a container per job, so it lapses within a day of the last job.
pub(super) const KEEP_WARM: Span = Span {
    min: secs(1),
    max: secs(24 * HOUR),
};
/// `plugins.*.retry.max_attempts` and `plugins.*.max_attempts`.
pub(super) const MAX_ATTEMPTS: Counts = Counts { min: 1, max: 100 };
/// `plugins.*.retry.backoff_base`.
pub(super) const BACKOFF_BASE: Span = Span {
    min: Duration::from_millis(100),
    max: secs(24 * HOUR),
};
/// `plugins.*.circuit_breaker.threshold`.
pub(super) const BREAKER_THRESHOLD: Counts = Counts { min: 1, max: 1000 };
/// `plugins.*.circuit_breaker.reset_after`.
pub(super) const BREAKER_RESET_AFTER: Span = Span {
    min: secs(1),
    max: secs(30 * DAY),
};
/// `plugins.*.max_outstanding_polls`: 0 would never let a poll run.
pub(super) const MAX_OUTSTANDING_POLLS: Counts = Counts { min: 1, max: 1000 };
/// `plugins.*.schedules[].every`, when written as a duration.
pub(super) const EVERY: Span = Span {
    min: secs(1),
    max: secs(365 * DAY),
};
/// `plugins.*.schedules[].after`.
pub(super) const AFTER: Span = Span {
    min: secs(0),
    max: secs(365 * DAY),
};
/// `plugins.*.schedules[].jitter`.
pub(super) const JITTER: Span = Span {
    min: secs(0),
    max: secs(24 * HOUR),
};

/// `api.threads`: request threads per listener.
pub(super) const API_THREADS: Counts = Counts { min: 1, max: 64 };
/// `api.max_connections`: open connections per listener.
pub(super) const API_MAX_CONNECTIONS: Counts = Counts { min: 1, max: 4096 };
/// `api.max_concurrent_sync`: synchronous pipeline calls waiting at once.
pub(super) const API_MAX_CONCURRENT_SYNC: Counts = Counts {
    min: 1,
    max: 10_000,
};
/// `api.max_sync_timeout`: the longest a synchronous call waits.
pub(super) const API_MAX_SYNC_TIMEOUT: Span = Span {
    min: secs(1),
    max: secs(HOUR),
};
/// `api.session_lifetime`: a dashboard sign-in, from minutes to a month.
pub(super) const API_SESSION_LIFETIME: Span = Span {
    min: secs(5 * 60),
    max: secs(30 * 24 * HOUR),
};
/// `api.max_event_streams`: 0 turns the event stream off.
pub(super) const API_MAX_EVENT_STREAMS: Counts = Counts { min: 0, max: 1024 };
/// `api.max_body_size` and `webhooks.endpoints[].max_body_size`: a body is
/// held in memory while it is checked, once per request thread.
pub(super) const BODY_SIZE: Sizes = Sizes {
    min: 1024,
    max: 32 * 1024 * 1024,
};

impl Counts {
    /// `number` if it is in range, else the message saying so.
    pub(super) fn check(self, number: u64) -> Result<u64, String> {
        if (self.min..=self.max).contains(&number) {
            Ok(number)
        } else {
            Err(format!(
                "must be between {} and {}, got {number}",
                self.min, self.max
            ))
        }
    }
}

impl Sizes {
    /// `bytes` (written as `written`) if it is in range, else the message saying so.
    pub(super) fn check(self, bytes: u64, written: &str) -> Result<u64, String> {
        if (self.min..=self.max).contains(&bytes) {
            Ok(bytes)
        } else {
            Err(format!(
                "must be between {} and {}, got {}",
                size::format(self.min),
                size::format(self.max),
                written.trim()
            ))
        }
    }
}

impl Span {
    /// `value` (written as `written`) if it is in range, else the message saying so.
    pub(super) fn check(self, value: Duration, written: &str) -> Result<Duration, String> {
        if (self.min..=self.max).contains(&value) {
            Ok(value)
        } else {
            Err(format!(
                "must be between {} and {}, got {}",
                duration::format(self.min),
                duration::format(self.max),
                written.trim()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_name_the_range() {
        assert_eq!(MAX_WORKERS.check(256), Ok(256));
        assert_eq!(
            MAX_WORKERS.check(257).unwrap_err(),
            "must be between 1 and 256, got 257"
        );
        assert_eq!(
            TICK_INTERVAL
                .check(Duration::from_nanos(1), "1ns")
                .unwrap_err(),
            "must be between 100ms and 1h, got 1ns"
        );
        assert_eq!(
            RETENTION.check(secs(3651 * DAY), "3651d").unwrap_err(),
            "must be between 1h and 3650d, got 3651d"
        );
    }

    #[test]
    fn every_duration_added_to_now_stays_in_range() {
        let longest = [
            TICK_INTERVAL,
            DEDUPE_TTL,
            RETENTION,
            SHUTDOWN_TIMEOUT,
            TIMEOUT,
            BACKOFF_BASE,
            BREAKER_RESET_AFTER,
            EVERY,
            AFTER,
            JITTER,
        ]
        .iter()
        .map(|span| span.max)
        .max()
        .unwrap();
        let now = chrono::Utc::now();
        let far = chrono::Duration::from_std(longest).unwrap();
        assert!(now.checked_add_signed(far).is_some());
        assert!(now.checked_sub_signed(far).is_some());
        // The retry backoff doubles its base up to 2^20 times.
        let backoff = chrono::Duration::from_std(BACKOFF_BASE.max * (1 << 20)).unwrap();
        assert!(now.checked_add_signed(backoff).is_some());
    }

    #[test]
    fn docs_config_md_lists_the_same_ranges() {
        let doc = include_str!("../../docs/CONFIG.md");
        let counts = [
            ("service.max_workers", MAX_WORKERS),
            ("service.max_response_events", MAX_RESPONSE_EVENTS),
            ("plugins.<name>.retry.max_attempts", MAX_ATTEMPTS),
            (
                "plugins.<name>.circuit_breaker.threshold",
                BREAKER_THRESHOLD,
            ),
            (
                "plugins.<name>.max_outstanding_polls",
                MAX_OUTSTANDING_POLLS,
            ),
            ("api.threads", API_THREADS),
            ("api.max_connections", API_MAX_CONNECTIONS),
            ("api.max_event_streams", API_MAX_EVENT_STREAMS),
        ]
        .map(|(key, range)| (key, format!("{}–{}", range.min, range.max)));
        let spans = [
            ("service.tick_interval", TICK_INTERVAL),
            ("service.dedupe_ttl", DEDUPE_TTL),
            ("service.job_log_retention", RETENTION),
            ("service.job_queue_retention", RETENTION),
            ("service.shutdown_timeout", SHUTDOWN_TIMEOUT),
            ("plugins.<name>.timeout", TIMEOUT),
            ("plugins.<name>.timeouts.<command>", TIMEOUT),
            ("plugins.<name>.keep_warm", KEEP_WARM),
            ("plugins.<name>.retry.backoff_base", BACKOFF_BASE),
            (
                "plugins.<name>.circuit_breaker.reset_after",
                BREAKER_RESET_AFTER,
            ),
            ("plugins.<name>.schedules[].every", EVERY),
            ("plugins.<name>.schedules[].after", AFTER),
            ("plugins.<name>.schedules[].jitter", JITTER),
        ]
        .map(|(key, range)| {
            let range = format!(
                "{}–{}",
                duration::format(range.min),
                duration::format(range.max)
            );
            (key, range)
        });
        let sizes = [
            ("api.max_body_size", BODY_SIZE),
            ("webhooks.endpoints[].max_body_size", BODY_SIZE),
        ]
        .map(|(key, range)| {
            let range = format!("{}–{}", size::format(range.min), size::format(range.max));
            (key, range)
        });
        for (key, range) in counts.iter().chain(spans.iter()).chain(sizes.iter()) {
            let row = doc
                .lines()
                .find(|line| line.starts_with(&format!("| `{key}` |")))
                .unwrap_or_else(|| panic!("docs/CONFIG.md has no row for {key}"));
            let cells: Vec<&str> = row.split(" | ").collect();
            assert_eq!(cells.get(2), Some(&range.as_str()), "{row}");
        }
    }
}
