//! The retry decision: what a finished attempt means for its job. Exit 78 and
//! `"retry": false` are terminal; every other failure is retried with
//! `base·2^(attempt-1) + random(0, base)` until the attempt budget is spent.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::plugin::spawn::{Outcome, OutcomeKind};
use crate::store::completion::Decision;
use crate::store::queue::JobStatus;

/// Whether another attempt could help (the attempt budget still applies): a
/// timeout, an oversized or invalid answer, or a failed start may pass; exit
/// 78, a cancellation and `"retry": false` are final.
pub fn retryable(outcome: &Outcome) -> bool {
    match &outcome.kind {
        OutcomeKind::Succeeded(_) | OutcomeKind::ConfigError { .. } | OutcomeKind::Cancelled(_) => {
            false
        }
        OutcomeKind::Failed(r) => r.retry,
        OutcomeKind::TimedOut
        | OutcomeKind::OutputTooLarge
        | OutcomeKind::ProtocolError(_)
        | OutcomeKind::SpawnFailed(_) => true,
    }
}

/// The delay before attempt `attempt + 1`, given the failed attempt number.
pub fn backoff(base: Duration, attempt: u32, random_below: impl FnOnce(u64) -> u64) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let scaled = base.saturating_mul(1u32 << exp);
    let spread = random_below(base.as_millis().min(u128::from(u64::MAX)) as u64);
    scaled.saturating_add(Duration::from_millis(spread))
}

/// The decision for a failed attempt with status `failed_as` (failed or timed_out).
pub fn after_failure(
    failed_as: JobStatus,
    retryable: bool,
    attempt: u32,
    max_attempts: u32,
    base: Duration,
    now: DateTime<Utc>,
    random_below: impl FnOnce(u64) -> u64,
) -> Decision {
    if !retryable {
        return Decision::Terminal(failed_as);
    }
    if attempt < max_attempts {
        let delay = backoff(base, attempt, random_below);
        let at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        return Decision::Retry {
            status: failed_as,
            at,
        };
    }
    if attempt > 1 {
        // "dead (max retries exceeded)": only a job that was actually retried dies.
        Decision::Exhausted(failed_as)
    } else {
        Decision::Terminal(failed_as)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_ts;

    #[test]
    fn backoff_doubles_and_adds_bounded_spread() {
        let base = Duration::from_secs(30);
        assert_eq!(backoff(base, 1, |_| 0), Duration::from_secs(30));
        assert_eq!(backoff(base, 2, |_| 0), Duration::from_secs(60));
        assert_eq!(backoff(base, 3, |_| 0), Duration::from_secs(120));
        assert_eq!(backoff(base, 1, |n| n - 1), Duration::from_millis(59_999));
        assert!(backoff(base, 1, crate::clock::random_below) < Duration::from_secs(60));
        // Absurd attempt numbers saturate instead of overflowing.
        assert!(backoff(base, 500, |_| 0) >= Duration::from_secs(30 * 1024));
    }

    #[test]
    fn decisions_follow_the_budget() {
        let now = parse_ts("2026-01-01T00:00:00Z").unwrap();
        let base = Duration::from_secs(30);
        let d = after_failure(JobStatus::Failed, true, 1, 4, base, now, |_| 0);
        assert_eq!(
            d,
            Decision::Retry {
                status: JobStatus::Failed,
                at: now + chrono::Duration::seconds(30)
            }
        );
        assert_eq!(
            after_failure(JobStatus::TimedOut, true, 4, 4, base, now, |_| 0),
            Decision::Exhausted(JobStatus::TimedOut)
        );
        assert_eq!(
            after_failure(JobStatus::Failed, false, 1, 4, base, now, |_| 0),
            Decision::Terminal(JobStatus::Failed)
        );
        assert_eq!(
            after_failure(JobStatus::TimedOut, true, 1, 1, base, now, |_| 0),
            Decision::Terminal(JobStatus::TimedOut)
        );
    }
}
