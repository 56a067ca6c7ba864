//! The live pass: every declared command spawned through the core's runner
//! with a generated request, and the answers judged against the protocol and
//! the guide (diagnostic commands keep no state, snapshots are deterministic
//! and keep their keys, undeclared commands are refused, stdin is read whole).

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Map, Value, json};

use super::{Report, sample};
use crate::plugin::manifest::{CommandSpec, Manifest};
use crate::plugin::protocol::{self, Request, Response, ResponseLimits};
use crate::plugin::spawn::{self, CancelToken, Invocation, Limits, Outcome, OutcomeKind};

/// The command sent to see an undeclared one refused.
const UNDECLARED: &str = "ductile_check_undeclared";
/// Padding that makes the stdin probe's request larger than any pipe buffer
/// (the runner widens the pipe to at most 1 MiB), so a plugin that does not
/// read its request leaves part of it unwritten.
const STDIN_PADDING: usize = 1024 * 1024 + 64 * 1024;

/// One request to send.
struct Ask<'a> {
    command: &'a str,
    state: Value,
    event: Option<Value>,
    context: Value,
}

/// Runs every probe and records what they show.
pub(super) fn run_all(report: &mut Report, m: &Manifest, entrypoint: &Path, opts: &super::Options) {
    let longest = m
        .commands
        .iter()
        .map(|c| opts.timeout_for(&c.name))
        .max()
        .unwrap_or_default();
    let runner = Runner {
        m,
        entrypoint,
        opts: *opts,
        // One fixed id and deadline: the determinism probe sends identical bytes.
        job_id: format!("plugin-check-{}", uuid::Uuid::new_v4()),
        deadline_at: crate::clock::format_ts(
            Utc::now() + chrono::Duration::from_std(longest).unwrap_or(chrono::Duration::MAX),
        ),
    };
    for c in &m.commands {
        let ask = runner.ask(c, Value::Object(Map::new()));
        let first = runner.spawn(report, &ask, "declared command");
        let Some(response) = judge(report, &c.name, &first) else {
            continue;
        };
        answered_ok(report, m, c, &response);
        if m.fact_rule(&c.name).is_some() {
            snapshot_rules(report, &runner, c, &response);
        }
    }
    undeclared(report, &runner);
    stdin_read(report, &runner);
}

struct Runner<'a> {
    m: &'a Manifest,
    entrypoint: &'a Path,
    opts: super::Options,
    job_id: String,
    deadline_at: String,
}

impl Runner<'_> {
    /// The request for declared command `c` with `state`: a payload sampled
    /// from `input_schema` rides in an event (always for `handle`).
    fn ask<'c>(&self, c: &'c CommandSpec, state: Value) -> Ask<'c> {
        let payload = c.input_schema.as_ref().map(sample::sample);
        let event = match (c.name.as_str(), payload) {
            ("handle", p) => Some(p.unwrap_or_else(|| json!({}))),
            (_, Some(p)) => Some(p),
            (_, None) => None,
        }
        .map(|payload| {
            json!({
                "type": format!("{}.checked", self.m.name),
                "payload": payload,
                "source": "plugin-check",
                "timestamp": self.deadline_at,
                "event_id": "plugin-check-event",
            })
        });
        Ask {
            command: &c.name,
            state,
            event,
            context: json!({"ductile_plugin": self.m.name}),
        }
    }

    fn spawn(&self, report: &mut Report, ask: &Ask<'_>, purpose: &'static str) -> Outcome {
        let empty = Value::Object(Map::new());
        let request = Request {
            protocol: protocol::PROTOCOL_VERSION,
            job_id: &self.job_id,
            command: ask.command,
            config: &empty,
            state: &ask.state,
            context: &ask.context,
            event: ask.event.as_ref(),
            deadline_at: self.deadline_at.clone(),
        };
        // Only owned JSON values go in, which always serialise.
        let bytes = protocol::encode(&request).unwrap_or_default();
        let inv = Invocation {
            job_id: &self.job_id,
            entrypoint: self.entrypoint,
            args: &[],
            env_passthrough: &[],
            request: &bytes,
            limits: Limits {
                timeout: self.opts.timeout_for(ask.command),
                grace: Duration::from_secs(1),
                ..Limits::default()
            },
            response: ResponseLimits::with_subs(self.m.stopwatch_max_subs),
        };
        let outcome = spawn::run(&inv, &CancelToken::new());
        report.probes.push(super::Probe {
            command: ask.command.to_string(),
            purpose,
            millis: outcome.duration.as_millis(),
            outcome: describe(&outcome),
        });
        outcome
    }
}

fn describe(o: &Outcome) -> String {
    match &o.kind {
        OutcomeKind::Succeeded(_) => "ok".to_string(),
        _ => o.error_message().unwrap_or_default(),
    }
}

/// Judges a declared command's answer; returns the response when it was ok.
fn judge(report: &mut Report, command: &str, o: &Outcome) -> Option<Response> {
    let cmd = Some(command);
    match &o.kind {
        OutcomeKind::Succeeded(r) => {
            for w in &o.warnings {
                report.warn(
                    "response.exit_code",
                    cmd,
                    w.clone(),
                    "exit 0 after writing a successful response",
                );
            }
            return Some(r.clone());
        }
        OutcomeKind::Failed(r) => report.warn(
            "response.failed",
            cmd,
            format!(
                "`{command}` answered status error to the generated request (empty config and state): {}",
                r.error.as_deref().unwrap_or_default()
            ),
            "expected when the command needs real config; otherwise make it answer ok",
        ),
        OutcomeKind::ConfigError { message, .. } => report.warn(
            "response.failed",
            cmd,
            format!("`{command}` exited 78 (configuration error) on an empty config: {message}"),
            "expected when config_keys.required is not empty; otherwise make it answer ok",
        ),
        OutcomeKind::TimedOut => report.error(
            "response.timeout",
            cmd,
            format!("`{command}` did not answer within {}s", o.duration.as_secs()),
            "answer within the command's timeout; long work belongs in smaller commands",
        ),
        OutcomeKind::OutputTooLarge => report.error(
            "response.protocol",
            cmd,
            format!("`{command}` wrote more stdout than the runner accepts"),
            "keep the response small; put bulk data in files the plugin owns",
        ),
        OutcomeKind::SpawnFailed(detail) => report.error(
            "response.spawn_failed",
            cmd,
            detail.clone(),
            "check the shebang line and that the interpreter is installed",
        ),
        OutcomeKind::ProtocolError(detail) => match noise(&o.stdout) {
            Some(where_) => report.error(
                "response.noise",
                cmd,
                format!("`{command}` wrote {where_} the JSON response on stdout"),
                "write only the one JSON response to stdout; send logs to stderr",
            ),
            None => report.error(
                "response.protocol",
                cmd,
                format!("`{command}`: {detail}"),
                "write one JSON object with `status` (ok + `result`, or error + `error`); see docs/schemas/protocol-response.schema.json",
            ),
        },
        OutcomeKind::Cancelled(reason) => report.error(
            "response.timeout",
            cmd,
            format!("`{command}` was cancelled: {reason}"),
            "run the check again",
        ),
    }
    None
}

/// Where stdout holds text besides one JSON object, if it does.
fn noise(stdout: &[u8]) -> Option<&'static str> {
    let start = stdout.iter().position(|b| *b == b'{')?;
    let mut stream = serde_json::Deserializer::from_slice(&stdout[start..]).into_iter::<Value>();
    let Some(Ok(Value::Object(_))) = stream.next() else {
        return None;
    };
    let end = start + stream.byte_offset();
    let junk = |s: &[u8]| s.iter().any(|b| !b.is_ascii_whitespace());
    if junk(&stdout[..start]) {
        Some("text before")
    } else if junk(&stdout[end..]) {
        Some("text after")
    } else {
        None
    }
}

/// The conventions of a successful answer.
fn answered_ok(report: &mut Report, m: &Manifest, c: &CommandSpec, r: &Response) {
    let cmd = Some(c.name.as_str());
    if matches!(c.name.as_str(), "health" | "init") && r.state_updates.is_some() {
        report.error(
            "state.diagnostic_updates",
            cmd,
            format!("`{}` returned state_updates", c.name),
            "health and init are diagnostic: return no state_updates (durable state comes from poll or another command with a fact_outputs rule)",
        );
    }
    let declared: Vec<&str> = c
        .values
        .iter()
        .flat_map(|v| &v.emit)
        .map(|e| e.event.as_str())
        .collect();
    for e in &r.events {
        if let Some(why) = sample::event_name_problem(&m.name, &e.event_type) {
            report.warn(
                "events.naming",
                cmd,
                format!("`{}` emitted event `{}`: {why}", c.name, e.event_type),
                "name events `<plugin>.<past_tense_verb>` (`fetch.completed`, `file_handler.written`)",
            );
        }
        if c.values.is_some() && !declared.contains(&e.event_type.as_str()) {
            report.warn(
                "events.undeclared",
                cmd,
                format!(
                    "`{}` emitted event `{}`, which its values.emit does not declare",
                    c.name, e.event_type
                ),
                "list every emitted event type under the command's values.emit",
            );
        }
    }
}

/// A command with a fact rule: a snapshot, the same bytes for the same input,
/// the same keys when fed its own snapshot back.
fn snapshot_rules(report: &mut Report, runner: &Runner<'_>, c: &CommandSpec, first: &Response) {
    let cmd = Some(c.name.as_str());
    let Some(snap) = &first.state_updates else {
        report.error(
            "facts.no_snapshot",
            cmd,
            format!(
                "`{}` has a fact_outputs rule but returned no state_updates",
                c.name
            ),
            "return the full snapshot object in state_updates on every success",
        );
        return;
    };
    let again = runner.spawn(
        report,
        &runner.ask(c, Value::Object(Map::new())),
        "determinism",
    );
    if let OutcomeKind::Succeeded(r) = &again.kind {
        let same = r
            .state_updates
            .as_ref()
            .is_some_and(|s| serde_json::to_string(s).ok() == serde_json::to_string(snap).ok());
        if !same {
            report.error(
                "facts.nondeterministic",
                cmd,
                format!(
                    "`{}` returned different state_updates for an identical request",
                    c.name
                ),
                "build the snapshot only from what was observed: no run timestamps or counters, sorted lists and keys",
            );
        }
    }
    let fed = runner.spawn(
        report,
        &runner.ask(c, Value::Object(snap.clone())),
        "stable keys",
    );
    if let OutcomeKind::Succeeded(r) = &fed.kind {
        let keys = |m: &Map<String, Value>| {
            let mut k: Vec<String> = m.keys().cloned().collect();
            k.sort();
            k
        };
        let now = r.state_updates.as_ref().map(keys).unwrap_or_default();
        if now != keys(snap) {
            report.error(
                "facts.unstable_keys",
                cmd,
                format!(
                    "`{}` returned snapshot keys {:?} after {:?} when given its own snapshot as state",
                    c.name,
                    now,
                    keys(snap)
                ),
                "return the same keys on every invocation (a full snapshot, not a patch)",
            );
        }
    }
}

/// A command the manifest does not declare must be refused with an error.
fn undeclared(report: &mut Report, runner: &Runner<'_>) {
    let ask = Ask {
        command: UNDECLARED,
        state: json!({}),
        event: None,
        context: json!({"ductile_plugin": runner.m.name}),
    };
    let o = runner.spawn(report, &ask, "undeclared command");
    let cmd = Some(UNDECLARED);
    let hint = "answer {\"status\":\"error\",\"error\":\"unknown command ...\",\"retry\":false} (or exit 78 with a message on stderr) for a command you do not implement";
    match &o.kind {
        OutcomeKind::Failed(_) | OutcomeKind::ConfigError { .. } => {}
        OutcomeKind::Succeeded(_) => report.error(
            "command.undeclared_accepted",
            cmd,
            format!("the undeclared command `{UNDECLARED}` was answered ok"),
            hint,
        ),
        OutcomeKind::TimedOut => report.error(
            "response.timeout",
            cmd,
            format!("the undeclared command `{UNDECLARED}` got no answer in time"),
            hint,
        ),
        _ => report.error(
            "command.undeclared_unclean",
            cmd,
            format!(
                "the undeclared command `{UNDECLARED}` was not refused cleanly: {}",
                describe(&o)
            ),
            hint,
        ),
    }
}

/// A request bigger than any pipe buffer must be read to its end.
fn stdin_read(report: &mut Report, runner: &Runner<'_>) {
    let Some(c) = runner
        .m
        .command("health")
        .or_else(|| runner.m.commands.first())
    else {
        return;
    };
    let mut ask = runner.ask(c, Value::Object(Map::new()));
    ask.context = json!({
        "ductile_plugin": runner.m.name,
        "ductile_check_padding": "x".repeat(STDIN_PADDING),
    });
    let o = runner.spawn(report, &ask, "reads stdin fully");
    if o.request_unread > 0 && !matches!(o.kind, OutcomeKind::TimedOut) {
        report.error(
            "stdin.not_read",
            Some(&c.name),
            format!(
                "`{}` left {} bytes of a large request unread",
                c.name, o.request_unread
            ),
            "read stdin to its end before answering (json.load(sys.stdin), `cat`, io::read_to_string)",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::noise;

    #[test]
    fn noise_is_text_around_the_one_object() {
        assert_eq!(noise(b"{\"status\":\"ok\"}\n"), None);
        assert_eq!(noise(b"starting\n{\"status\":\"ok\"}"), Some("text before"));
        assert_eq!(noise(b"{\"status\":\"ok\"}\ndone\n"), Some("text after"));
        assert_eq!(noise(b"not json at all"), None);
    }
}
