//! Schedules operated by hand: found by name, listed with their ledger state,
//! paused and resumed. `ductile schedule` and the API's `/schedule` routes
//! both call these, so a pause means the same thing from either; the daemon
//! honours a pause at its next look at the entry (every tick reads it).

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde_json::{Value, json};

use crate::clock::parse_ts;
use crate::config::duration;
use crate::scheduler::expr::Schedule;
use crate::scheduler::preview;
use crate::store::{StoreError, queue, schedules};

/// `plugin:id`, how every schedule verb and route names a schedule.
pub fn name(s: &Schedule) -> String {
    format!("{}:{}", s.plugin, s.id)
}

/// Why a schedule name did not resolve to one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    /// A bare plugin name whose plugin has several schedules, none `default`.
    Ambiguous {
        /// The plugin named.
        plugin: String,
        /// Its schedules, as `plugin:id`.
        names: Vec<String>,
    },
    /// No schedule by that name.
    Unknown {
        /// The name asked for.
        target: String,
        /// Up to three closest known names.
        closest: Vec<String>,
    },
}

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unresolved::Ambiguous { plugin, names } => write!(
                f,
                "plugin `{plugin}` has {} schedules; name one: {}",
                names.len(),
                names.join(", ")
            ),
            Unresolved::Unknown { target, closest } if closest.is_empty() => {
                write!(
                    f,
                    "unknown schedule `{target}`; no schedules are configured"
                )
            }
            Unresolved::Unknown { target, closest } => write!(
                f,
                "unknown schedule `{target}`; closest: {}",
                closest.join(", ")
            ),
        }
    }
}

impl std::error::Error for Unresolved {}

/// Resolves `<plugin>[:<id>]` to one compiled schedule: a bare plugin name
/// means its only schedule, or its `default` one.
pub fn resolve<'s>(all: &'s [Schedule], target: &str) -> Result<&'s Schedule, Unresolved> {
    let (plugin, id) = match target.split_once(':') {
        Some((p, i)) => (p, Some(i)),
        None => (target, None),
    };
    let of_plugin: Vec<&Schedule> = all.iter().filter(|s| s.plugin == plugin).collect();
    let found = match id {
        Some(id) => of_plugin.iter().find(|s| s.id == id).copied(),
        None if of_plugin.len() == 1 => Some(of_plugin[0]),
        None => of_plugin.iter().find(|s| s.id == "default").copied(),
    };
    if let Some(s) = found {
        return Ok(s);
    }
    if id.is_none() && of_plugin.len() > 1 {
        return Err(Unresolved::Ambiguous {
            plugin: plugin.to_string(),
            names: of_plugin.iter().map(|s| name(s)).collect(),
        });
    }
    let names: Vec<String> = all.iter().map(name).collect();
    let mut ranked: Vec<(usize, &str)> = names
        .iter()
        .map(|n| {
            // A bare plugin name is compared with the plugin part.
            let candidate = if id.is_some() {
                n.as_str()
            } else {
                n.split(':').next().unwrap_or(n)
            };
            (crate::suggest::edit_distance(target, candidate), n.as_str())
        })
        .collect();
    ranked.sort();
    Err(Unresolved::Unknown {
        target: target.to_string(),
        closest: ranked.iter().take(3).map(|(_, n)| n.to_string()).collect(),
    })
}

/// `only_between` as written, if set.
pub fn window_text(s: &Schedule) -> Option<String> {
    s.window.as_ref().map(|w| w.to_string())
}

/// The `not_on` days, `sun` first.
pub fn not_on_text(s: &Schedule) -> Vec<&'static str> {
    const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    (0..7).filter(|d| s.not_on[*d]).map(|d| DAYS[d]).collect()
}

/// One schedule's definition and ledger state, as `schedule list --json` and
/// `GET /schedules` show it.
pub fn describe(s: &Schedule, e: Option<&schedules::Entry>) -> Value {
    json!({
        "plugin": s.plugin,
        "schedule": s.id,
        "name": name(s),
        "command": s.command,
        "trigger": s.trigger.to_string(),
        "timezone": s.tz.name(),
        "only_between": window_text(s),
        "not_on": not_on_text(s),
        "jitter": (!s.jitter.is_zero()).then(|| duration::format(s.jitter)),
        "catch_up": s.catch_up.as_str(),
        "if_running": s.if_running.as_str(),
        "status": e.map_or("not armed", |e| e.status.as_str()),
        "reason": e.and_then(|e| e.reason.clone()),
        "next_run_at": e.and_then(|e| e.next_run_at.clone()),
        "last_fired_at": e.and_then(|e| e.last_fired_at.clone()),
        "last_success_at": e.and_then(|e| e.last_success_at.clone()),
        "last_success_job_id": e.and_then(|e| e.last_success_job_id.clone()),
    })
}

/// The instants of the next `n` firings after `from` (occurrences the gate
/// refuses left out); `started_at` anchors `after:` one-shots.
pub fn next_firings(
    s: &Schedule,
    from: DateTime<Utc>,
    started_at: DateTime<Utc>,
    n: usize,
) -> Vec<String> {
    preview::preview(s, from, started_at, n)
        .into_iter()
        .filter(|l| l.kind == "fire")
        .map(|l| l.at)
        .collect()
}

/// Why a schedule cannot be paused.
#[derive(Debug)]
pub enum Refused {
    /// An exhausted one-shot: nothing is left to pause.
    Exhausted {
        /// `plugin:id`.
        name: String,
    },
    /// The ledger failed.
    Store(StoreError),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Exhausted { name } => write!(
                f,
                "schedule `{name}` is an exhausted one-shot; there is nothing to pause"
            ),
            Refused::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Refused {}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Refused {
        Refused::Store(e)
    }
}

/// Whether a pause or resume changes the entry: the status it is left in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changed {
    /// `paused_manual` or `active`.
    pub status: &'static str,
    /// False when it already was.
    pub changed: bool,
}

/// What pausing would do to an entry in this state (a dry run asks this).
pub fn pause_verdict(s: &Schedule, current: Option<&schedules::Entry>) -> Result<Changed, Refused> {
    match current.map(|e| e.status.as_str()) {
        Some("exhausted") => Err(Refused::Exhausted { name: name(s) }),
        Some("paused_manual") => Ok(Changed {
            status: "paused_manual",
            changed: false,
        }),
        _ => Ok(Changed {
            status: "paused_manual",
            changed: true,
        }),
    }
}

/// What resuming would do to an entry in this state.
pub fn resume_verdict(current: Option<&schedules::Entry>) -> Changed {
    Changed {
        status: "active",
        changed: current.is_some_and(|e| e.status == "paused_manual"),
    }
}

/// Pauses a schedule by hand, `reason` recorded with it, in one transaction.
/// A schedule no daemon has armed yet is armed paused, so the first start
/// keeps the pause and moves the entry along without firing.
pub fn pause(
    conn: &mut Connection,
    s: &Schedule,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Changed, Refused> {
    let tx = queue::begin(conn)?;
    let current = schedules::find(&tx, &s.plugin, &s.id)?;
    let verdict = pause_verdict(s, current.as_ref())?;
    if !verdict.changed {
        return Ok(verdict);
    }
    match &current {
        Some(e) => {
            let next = e.next_run_at.as_deref().and_then(parse_ts);
            schedules::set_status(
                &tx,
                &s.plugin,
                &s.id,
                "paused_manual",
                Some(reason),
                next,
                now,
            )?;
        }
        None => schedules::upsert(
            &tx,
            &s.plugin,
            &s.id,
            &s.command,
            &s.fingerprint,
            "paused_manual",
            Some(reason),
            s.first_due(now, now),
            now,
        )?,
    }
    commit(tx, s)?;
    Ok(verdict)
}

/// Resumes a paused schedule from its next occurrence, in one transaction;
/// the occurrences missed while paused are not made up.
pub fn resume(conn: &mut Connection, s: &Schedule, now: DateTime<Utc>) -> Result<Changed, Refused> {
    let tx = queue::begin(conn)?;
    let current = schedules::find(&tx, &s.plugin, &s.id)?;
    let verdict = resume_verdict(current.as_ref());
    let Some(entry) = current.filter(|_| verdict.changed) else {
        return Ok(verdict);
    };
    let stored = entry.next_run_at.as_deref().and_then(parse_ts);
    let next = if s.is_one_shot() {
        // A one-shot held by the pause runs once, now.
        stored
    } else {
        match stored {
            Some(t) if t > now => Some(t),
            _ => s.next_after(now, now),
        }
    };
    schedules::set_status(&tx, &s.plugin, &s.id, "active", None, next, now)?;
    commit(tx, s)?;
    Ok(verdict)
}

fn commit(tx: rusqlite::Transaction<'_>, s: &Schedule) -> Result<(), StoreError> {
    tx.commit()
        .map_err(|e| StoreError::sqlite(format!("commit the status of schedule {}", name(s)), e))
}
