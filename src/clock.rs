//! Time and randomness sources. Everything that decides "when" takes a [`Clock`],
//! so tests move time instead of sleeping. Timestamps are stored as fixed-width
//! RFC 3339 UTC strings so that text order is time order in SQLite.
//!
//! A clock gives two readings: the wall clock (what timestamps and cron read,
//! and what NTP may step) and a monotonic reading that only ever moves forward
//! at the rate time passes, so the scheduler can tell a stepped wall clock from
//! elapsed time.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

/// A source of "now".
pub trait Clock: Send + Sync {
    /// The current instant in UTC (the wall clock; it may jump).
    fn now(&self) -> DateTime<Utc>;
    /// Time elapsed since an arbitrary fixed origin, on a clock that never jumps.
    fn monotonic(&self) -> Duration;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// The origin of [`SystemClock::monotonic`]: the first reading in this process.
static ORIGIN: OnceLock<Instant> = OnceLock::new();

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn monotonic(&self) -> Duration {
        ORIGIN.get_or_init(Instant::now).elapsed()
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug)]
pub struct ManualClock {
    state: Mutex<Readings>,
}

#[derive(Debug, Clone, Copy)]
struct Readings {
    wall: DateTime<Utc>,
    monotonic: Duration,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock {
            state: Mutex::new(Readings {
                wall: start,
                monotonic: Duration::ZERO,
            }),
        }
    }

    fn update(&self, f: impl FnOnce(&mut Readings)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state);
    }

    /// Lets time pass until the wall clock reads `t`; the monotonic reading
    /// moves by the same amount. A `t` in the past steps the wall clock back
    /// without monotonic time passing (a backward jump).
    pub fn set(&self, t: DateTime<Utc>) {
        self.update(|s| {
            let elapsed = (t - s.wall).to_std().unwrap_or(Duration::ZERO);
            s.monotonic = s.monotonic.saturating_add(elapsed);
            s.wall = t;
        });
    }

    /// Lets `d` pass on both readings.
    pub fn advance(&self, d: Duration) {
        self.update(|s| {
            s.monotonic = s.monotonic.saturating_add(d);
            s.wall = add_saturating(s.wall, d);
        });
    }

    /// Steps the wall clock to `t` with no time passing, as an NTP sync does.
    pub fn jump_to(&self, t: DateTime<Utc>) {
        self.update(|s| s.wall = t);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).wall
    }

    fn monotonic(&self) -> Duration {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .monotonic
    }
}

/// `t + d`, or the last representable instant when that overflows.
///
/// Durations come from the config (`every: 100000000d`, retention periods);
/// `DateTime + TimeDelta` panics on overflow, so every addition of a
/// configured duration goes through here or a `checked_` call.
pub fn add_saturating(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `t - d`, or the first representable instant when that overflows.
pub fn sub_saturating(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `t + delta` for a signed delta, saturating at both ends of the range.
pub fn shift_saturating(t: DateTime<Utc>, delta: TimeDelta) -> DateTime<Utc> {
    t.checked_add_signed(delta)
        .unwrap_or(if delta < TimeDelta::zero() {
            DateTime::<Utc>::MIN_UTC
        } else {
            DateTime::<Utc>::MAX_UTC
        })
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
        assert_eq!(c.monotonic(), Duration::from_secs(90));
    }

    #[test]
    fn manual_clock_set_lets_time_pass_and_jump_does_not() {
        let c = ManualClock::new(parse_ts("2026-01-01T00:00:00Z").unwrap());
        c.set(parse_ts("2026-01-01T00:10:00Z").unwrap());
        assert_eq!(c.monotonic(), Duration::from_secs(600));
        c.jump_to(parse_ts("2026-01-01T06:10:00Z").unwrap());
        assert_eq!(format_ts(c.now()), "2026-01-01T06:10:00.000000Z");
        assert_eq!(c.monotonic(), Duration::from_secs(600));
        // Setting an earlier time is a backward step: no time passes.
        c.set(parse_ts("2026-01-01T03:10:00Z").unwrap());
        assert_eq!(c.monotonic(), Duration::from_secs(600));
    }

    #[test]
    fn system_clock_monotonic_never_goes_back() {
        let a = SystemClock.monotonic();
        let b = SystemClock.monotonic();
        assert!(b >= a);
    }

    #[test]
    fn time_arithmetic_saturates_instead_of_panicking() {
        let t = parse_ts("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(add_saturating(t, Duration::MAX), DateTime::<Utc>::MAX_UTC);
        assert_eq!(sub_saturating(t, Duration::MAX), DateTime::<Utc>::MIN_UTC);
        let huge = Duration::from_secs(100_000_000 * 86_400);
        assert_eq!(add_saturating(t, huge), DateTime::<Utc>::MAX_UTC);
        assert_eq!(
            add_saturating(t, Duration::from_secs(60)),
            parse_ts("2026-01-01T00:01:00Z").unwrap()
        );
        assert_eq!(
            sub_saturating(t, Duration::from_secs(60)),
            parse_ts("2025-12-31T23:59:00Z").unwrap()
        );
        assert_eq!(
            shift_saturating(t, TimeDelta::MAX),
            DateTime::<Utc>::MAX_UTC
        );
        assert_eq!(
            shift_saturating(t, TimeDelta::MIN),
            DateTime::<Utc>::MIN_UTC
        );
        assert_eq!(
            shift_saturating(t, TimeDelta::hours(-3)),
            parse_ts("2025-12-31T21:00:00Z").unwrap()
        );
        let c = ManualClock::new(t);
        c.advance(huge);
        assert_eq!(c.now(), DateTime::<Utc>::MAX_UTC);
        assert_eq!(c.monotonic(), huge);
        c.advance(Duration::MAX);
        assert_eq!(c.monotonic(), Duration::MAX);
        c.set(DateTime::<Utc>::MIN_UTC);
        assert_eq!(c.now(), DateTime::<Utc>::MIN_UTC);
    }
}
