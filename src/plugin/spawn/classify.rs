//! What an exited, in-budget run means, from its exit status and its decoded
//! stdout, and the one-line texts used in messages.
//!
//! The exit code matters only for 78 (a permanent configuration error) and
//! when there is no valid response: a plugin that printed a valid response and
//! then exited 1 (or was killed) is taken at its word, as the reference does
//! and as its plugins rely on, with a warning that names the exit.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use super::{EXIT_CONFIG, OutcomeKind, QUOTE_MAX};
use crate::plugin::protocol::{self, ProtocolError, Response, ResponseLimits, ResponseStatus};

/// Classifies a run from its exit status and its response (`answer`, decoded
/// from `stdout` when not given).
pub(super) fn classify(
    status: Option<ExitStatus>,
    answer: Option<Result<Response, ProtocolError>>,
    stdout: &[u8],
    stderr: &str,
    limits: &ResponseLimits,
    warnings: &mut Vec<String>,
) -> OutcomeKind {
    let Some(status) = status else {
        return OutcomeKind::ProtocolError("plugin exit status could not be collected".to_string());
    };
    let decoded = answer.unwrap_or_else(|| protocol::decode(stdout, limits));
    if status.code() == Some(EXIT_CONFIG) {
        let response = decoded.ok();
        let message = last_line(stderr)
            .or_else(|| {
                response
                    .as_ref()
                    .and_then(|r| r.error.as_deref())
                    .map(|e| one_line(e, QUOTE_MAX))
            })
            .unwrap_or_else(|| "no message on stderr".to_string());
        return OutcomeKind::ConfigError { response, message };
    }
    let exit = match (status.code(), status.signal()) {
        (Some(0), _) => None,
        (Some(code), _) => Some(format!("plugin exited with code {code}")),
        (None, Some(sig)) => Some(format!("plugin was killed by signal {sig}")),
        (None, None) => Some("plugin ended without an exit code".to_string()),
    };
    match (decoded, exit) {
        (Ok(r), exit) => {
            // A failing plugin may well exit non-zero; only a success needs the note.
            if let (Some(exit), ResponseStatus::Ok) = (exit, r.status) {
                warnings.push(format!(
                    "{exit} after writing a valid response; the response stands"
                ));
            }
            answered(Some(Ok(r)))
        }
        (Err(e), None) => OutcomeKind::ProtocolError(e.to_string()),
        (Err(e), Some(exit)) => {
            let hint = last_line(stderr)
                .map(|l| format!(" (last stderr line: {l})"))
                .unwrap_or_default();
            OutcomeKind::ProtocolError(format!("{exit}: {e}{hint}"))
        }
    }
}

/// The outcome of a valid response, whatever became of the process.
pub(super) fn answered(answer: Option<Result<Response, ProtocolError>>) -> OutcomeKind {
    match answer {
        Some(Ok(r)) if r.status == ResponseStatus::Error => OutcomeKind::Failed(r),
        Some(Ok(r)) => OutcomeKind::Succeeded(r),
        Some(Err(e)) => OutcomeKind::ProtocolError(e.to_string()),
        None => OutcomeKind::ProtocolError("plugin wrote no complete response".to_string()),
    }
}

/// The last non-blank line of `text`, shortened for a one-line message.
pub(super) fn last_line(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| one_line(l, QUOTE_MAX))
}

/// Collapses whitespace runs (newlines included) and shortens to `max` chars.
pub(super) fn one_line(text: &str, max: usize) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() > max {
        let short: String = joined.chars().take(max).collect();
        format!("{short}…")
    } else {
        joined
    }
}

pub(super) fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms % 1000 < 100 {
        format!("{}s", ms / 1000)
    } else {
        format!("{}.{}s", ms / 1000, (ms % 1000) / 100)
    }
}

pub(super) fn human_bytes(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}
