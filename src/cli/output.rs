//! The only place that writes results to the terminal: human text or `--json`
//! on stdout, errors on stderr (and as `{"error": ...}` on stdout under `--json`).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;

use serde_json::Value;

/// Prints a JSON document (pretty, one trailing newline).
pub fn json(v: &Value) {
    let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    emit(&text);
}

/// Prints human text as is (a trailing newline is added when missing).
pub fn text(s: &str) {
    emit(s);
}

/// Reports an error: one line on stderr; under `--json` also a JSON object on stdout.
pub fn error(message: &str, exit_code: i32, as_json: bool) {
    // One line, whatever a lower layer put in the text: scripts read `error: `
    // lines, and logs are one object per line.
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let message = message.as_str();
    let _ = writeln!(std::io::stderr(), "error: {message}");
    if as_json {
        json(&serde_json::json!({ "error": message, "exit_code": exit_code }));
    }
}

/// A progress line for the person at the terminal (a wait, a hand-over, an
/// interruption): `note: ...` on stderr, so stdout keeps only the result.
pub fn notice(message: &str) {
    let _ = writeln!(std::io::stderr(), "note: {message}");
}

fn emit(s: &str) {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`ductile ... | head`) is not an error worth a panic.
    let _ = out.write_all(s.as_bytes());
    if !s.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}
