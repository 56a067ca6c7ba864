//! "Why didn't it run?" answered in sentences from the ledger's `decisions`
//! rows and schedule entries. `ductile explain` prints them and
//! `GET /schedule/{id}/explain` serves them, from the same rows.

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde_json::{Value, json};

use crate::clock::format_ts;
use crate::store::decisions::{self, Kind, Row};
use crate::store::{StoreError, schedules};

/// Most decision rows one answer shows (the newest; each may stand for many).
pub const LIMIT: usize = 200;

/// The sentence one decision row reads as.
pub fn sentence(r: &Row) -> String {
    let subject = if let Some(name) = r.scope.strip_prefix("webhook:") {
        format!("a delivery to webhook `{name}`")
    } else if r.scope == "api" || r.scope == "cli" || r.scope.contains(':') {
        format!("a submission by {}", r.scope)
    } else {
        format!("schedule `{}:{}`", r.plugin, r.scope)
    };
    let phrase = Kind::parse(&r.kind).map_or("did not run", Kind::phrase);
    let when = if r.count == 1 {
        format!("At {}", r.last_at)
    } else {
        format!("{} times from {} to {}", r.count, r.first_at, r.last_at)
    };
    let mut out = format!("{when}, {subject} {phrase} ({}).", r.detail);
    if let Some(due) = &r.due_at {
        let latest = if r.count == 1 { "It" } else { "The latest" };
        out.push_str(&format!(" {latest} was due at {due}."));
    }
    if let Some(job) = &r.job_id {
        out.push_str(&format!(" The job it concerned is {job}."));
    }
    out
}

/// The sentence a schedule entry's state reads as.
pub fn state_sentence(e: &schedules::Entry) -> String {
    let name = format!("{}:{}", e.plugin, e.schedule_id);
    let next = e.next_run_at.as_deref().unwrap_or("never");
    let mut s = match e.status.as_str() {
        "paused_manual" => format!(
            "Schedule `{name}` is paused ({}); it does not run until `ductile schedule resume {name}`.",
            e.reason.as_deref().unwrap_or("by hand")
        ),
        "paused_invalid" => format!(
            "Schedule `{name}` is paused because its definition is invalid ({}).",
            e.reason.as_deref().unwrap_or("no reason recorded")
        ),
        "exhausted" => format!("Schedule `{name}` is a one-shot that has already fired."),
        _ => format!("Schedule `{name}` is active; its next run is due at {next}."),
    };
    match (&e.last_fired_at, &e.last_success_at) {
        (Some(f), Some(ok)) => s.push_str(&format!(
            " It last fired at {f}; its last success was at {ok}."
        )),
        (Some(f), None) => s.push_str(&format!(
            " It last fired at {f}; no run of it has succeeded yet."
        )),
        _ => s.push_str(" It has never fired."),
    }
    s
}

/// Why a plugin, or one of its schedules or intake scopes, did (not) run.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The plugin.
    pub plugin: String,
    /// The schedule id or intake scope asked about, if any.
    pub scope: Option<String>,
    /// Rows newer than this, when asked.
    pub since: Option<DateTime<Utc>>,
    /// The schedule entries concerned.
    pub entries: Vec<schedules::Entry>,
    /// The decision rows, newest first.
    pub rows: Vec<Row>,
    /// Everything above in sentences: entries' states first, then the rows.
    pub sentences: Vec<String>,
}

/// Reads the explanation of `plugin[:scope]` (`target` is how the caller
/// named it); no ledger yet (`conn` None) explains with no rows.
pub fn subject(
    conn: Option<&Connection>,
    plugin: &str,
    scope: Option<&str>,
    since: Option<DateTime<Utc>>,
    target: &str,
) -> Result<Explanation, StoreError> {
    let (rows, entries) = match conn {
        None => (Vec::new(), Vec::new()),
        Some(c) => (
            decisions::for_plugin(c, plugin, scope, since, LIMIT)?,
            schedules::all(c)?
                .into_iter()
                .filter(|e| e.plugin == plugin && scope.is_none_or(|s| s == e.schedule_id))
                .collect(),
        ),
    };
    let mut sentences: Vec<String> = entries.iter().map(state_sentence).collect();
    let paused = entries.iter().any(|e| e.status.starts_with("paused"));
    if rows.is_empty() && !paused {
        let window = since.map_or("in the retention window".to_string(), |t| {
            format!("since {}", format_ts(t))
        });
        sentences.push(format!(
            "No decision kept {target} from running {window}: everything due or submitted was enqueued."
        ));
    }
    sentences.extend(rows.iter().map(sentence));
    Ok(Explanation {
        plugin: plugin.to_string(),
        scope: scope.map(str::to_string),
        since,
        entries,
        rows,
        sentences,
    })
}

impl Explanation {
    /// The JSON of `ductile explain --json` and `GET /schedule/{id}/explain`.
    pub fn to_json(&self) -> Value {
        json!({
            "plugin": self.plugin,
            "schedule": self.scope,
            "since": self.since.map(format_ts),
            "schedules": self.entries,
            "decisions": self.rows.iter().map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
                v["sentence"] = Value::String(sentence(r));
                v
            }).collect::<Vec<_>>(),
            "sentences": self.sentences,
        })
    }
}
