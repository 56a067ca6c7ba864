//! What every foreign envelope translates into: a protocol v2 response built
//! in the core, and the JSON text the ledger keeps of it in place of the
//! container's own stdout.

use serde_json::{Value, json};

use crate::plugin::protocol::{Event, Response, ResponseStatus};
use crate::plugin::spawn::OutcomeKind;

/// A v2 response: an error when `error` is set, else ok.
pub(super) fn response(
    result: Option<Value>,
    error: Option<String>,
    retry: bool,
    events: Vec<Event>,
) -> Response {
    Response {
        status: if error.is_some() {
            ResponseStatus::Error
        } else {
            ResponseStatus::Ok
        },
        result,
        error,
        retry,
        events,
        state_updates: None,
        logs: Vec::new(),
        stopwatch_subs: Vec::new(),
        subs_dropped: 0,
    }
}

/// The translated response as the ledger records it (`events` only when
/// there are some); `None` when the outcome carries no response.
pub fn bytes(kind: &OutcomeKind) -> Option<Vec<u8>> {
    let r = match kind {
        OutcomeKind::Succeeded(r) | OutcomeKind::Failed(r) => r,
        OutcomeKind::ConfigError {
            response: Some(r), ..
        } => r,
        _ => return None,
    };
    let status = match r.status {
        ResponseStatus::Ok => "ok",
        ResponseStatus::Error => "error",
    };
    let mut v = json!({"status": status, "result": r.result, "error": r.error, "retry": r.retry});
    if !r.events.is_empty() {
        v["events"] = r
            .events
            .iter()
            .map(|e| json!({"type": e.event_type, "payload": e.payload}))
            .collect();
    }
    serde_json::to_vec(&v).ok()
}
