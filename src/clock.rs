//! Time and randomness sources. Everything that decides "when" takes a [`Clock`],
//! so tests move time instead of sleeping. Timestamps are stored as fixed-width
//! RFC 3339 UTC strings so that text order is time order in SQLite.

use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};

/// A source of "now".
pub trait Clock: Send + Sync {
    /// The current instant in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock {
            now: Mutex::new(start),
        }
    }

    /// Moves the clock to `t`.
    pub fn set(&self, t: DateTime<Utc>) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now = t;
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: std::time::Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += chrono::Duration::from_std(d).unwrap_or(chrono::Duration::zero());
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Formats an instant the way the ledger stores it: `2026-02-09T10:00:05.123456Z`.
pub fn format_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses any RFC 3339 timestamp (ours or an operator's) into UTC.
pub fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A uniformly random number in `0..n` (0 when `n` is 0).
///
/// Jitter and backoff only need unpredictable spreading, not cryptographic
/// quality; the v4 UUID generator already links an OS random source, so this
/// avoids a dedicated rand dependency.
pub fn random_below(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    (uuid::Uuid::new_v4().as_u128() % u128::from(n)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_fixed_width_and_round_trip() {
        let t = parse_ts("2026-03-01T02:03:04Z").unwrap();
        let s = format_ts(t);
        assert_eq!(s, "2026-03-01T02:03:04.000000Z");
        assert_eq!(parse_ts(&s), Some(t));
        assert_eq!(
            parse_ts("2026-03-01T12:00:00+10:00"),
            parse_ts("2026-03-01T02:00:00Z")
        );
    }

    #[test]
    fn random_below_stays_in_range() {
        for _ in 0..100 {
            assert!(random_below(7) < 7);
        }
        assert_eq!(random_below(0), 0);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(parse_ts("2026-01-01T00:00:00Z").unwrap());
        c.advance(std::time::Duration::from_secs(90));
        assert_eq!(format_ts(c.now()), "2026-01-01T00:01:30.000000Z");
    }
}
