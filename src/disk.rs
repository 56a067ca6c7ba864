//! The disk-space guard: below `state.min_free_bytes` free on the ledger's
//! file system, no new work is admitted (HTTP triggers and webhooks answer 503,
//! schedules are skipped with their reason, `ductile run` refuses), so a full
//! disk stops intake cleanly instead of failing commits halfway through a job.
//! Work already admitted runs on: its completion is small and SQLite keeps the
//! ledger consistent even when a write fails.
//!
//! It resumes by itself: the free space is read again (at most once a second,
//! so the hot paths pay a mutex and a clock read, not a `statvfs`), and the
//! threshold comes from the config in force, so freeing space or a reload that
//! lowers the threshold lets work in again without a restart.
//!
//! Owns: the reading, its cache and the refusal message. Must not: write the
//! ledger or know HTTP.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::State;

/// How long one reading of the free space is trusted.
const READING_TTL: Duration = Duration::from_secs(1);

/// Why new work was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The directory of the ledger.
    pub dir: PathBuf,
    /// Bytes free there.
    pub free: u64,
    /// `state.min_free_bytes`.
    pub min: u64,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "free disk space for the ledger ({}) is {}, below state.min_free_bytes ({}); new work is refused until space is freed",
            self.dir.display(),
            human(self.free),
            human(self.min)
        )
    }
}

/// The cached reading and whether the last decision refused (to log only
/// the transitions, not every refused request).
struct Cache {
    dir: PathBuf,
    at: Instant,
    free: Option<u64>,
    refusing: bool,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// The directory holding the ledger at `db`.
pub fn ledger_dir(db: &Path) -> &Path {
    match db.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Bytes free for the ledger at `db`, read now (no cache). Before the first
/// start the state directory may not exist yet: its nearest existing
/// ancestor is on the file system it will be created on.
pub fn free_for(db: &Path) -> std::io::Result<u64> {
    let mut dir = ledger_dir(db);
    while !dir.exists() {
        match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => dir = p,
            _ => break,
        }
    }
    crate::sys::free_bytes(dir)
}

/// Admits new work unless the ledger's file system has less than
/// `state.min_free_bytes` free. A reading that fails admits: the guard must
/// never be the reason a healthy daemon stops.
pub fn admit(state: &State) -> Result<(), Refusal> {
    if state.min_free_bytes == 0 {
        return Ok(());
    }
    let dir = ledger_dir(&state.path).to_path_buf();
    let mut guard = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let fresh = guard
        .as_ref()
        .is_some_and(|c| c.dir == dir && c.at.elapsed() < READING_TTL);
    if !fresh {
        let free = free_for(&state.path)
            .map_err(|e| log::debug!("cannot read the free space of {}: {e}", dir.display()))
            .ok();
        let refusing = guard.as_ref().is_some_and(|c| c.dir == dir && c.refusing);
        *guard = Some(Cache {
            dir: dir.clone(),
            at: Instant::now(),
            free,
            refusing,
        });
    }
    let Some(cache) = guard.as_mut() else {
        return Ok(());
    };
    let verdict = match cache.free {
        Some(free) if free < state.min_free_bytes => Err(Refusal {
            dir,
            free,
            min: state.min_free_bytes,
        }),
        _ => Ok(()),
    };
    match (&verdict, cache.refusing) {
        (Err(r), false) => log::error!("{r}"),
        (Ok(()), true) => log::warn!(
            "free disk space for the ledger ({}) is back above state.min_free_bytes ({}); admitting new work again",
            cache.dir.display(),
            human(state.min_free_bytes)
        ),
        _ => {}
    }
    cache.refusing = verdict.is_err();
    verdict
}

/// `bytes` for people: `63.9 MiB`, `12 KiB`, `900 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Synchronous;

    fn state(dir: &Path, min: u64) -> State {
        State {
            path: dir.join("ductile.db"),
            synchronous: Synchronous::Normal,
            min_free_bytes: min,
            replication: crate::config::Replication::Off,
        }
    }

    #[test]
    fn admits_above_and_refuses_below_the_threshold() {
        let dir = std::env::temp_dir();
        let free = free_for(&dir.join("ductile.db")).unwrap();
        assert!(admit(&state(&dir, 0)).is_ok());
        assert!(admit(&state(&dir, 1)).is_ok());
        let refused = admit(&state(&dir, free.saturating_mul(4).max(1 << 40))).unwrap_err();
        assert!(refused.to_string().contains("below state.min_free_bytes"));
        // The cached reading serves the next call; a lower threshold admits at once.
        assert!(admit(&state(&dir, 1)).is_ok());
    }

    #[test]
    fn sizes_read_for_people() {
        assert_eq!(human(900), "900 B");
        assert_eq!(human(64 * 1024 * 1024), "64 MiB");
        assert_eq!(human(1536), "1.5 KiB");
    }
}
