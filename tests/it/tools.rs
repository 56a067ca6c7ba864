//! The Python tools some tests check ductile's output with (from PyPI, in
//! `target/pyenv`, installed by `scripts/python-tools`, which `.ci/run` calls;
//! a test that finds them missing runs it itself, so a fresh clone's
//! `cargo test` still checks with the real tools).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use crate::support::repo;

/// Stdout and stderr of `out`, for messages.
pub fn both(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The path of a tool in the venv, installing the venv first when needed.
pub fn tool(name: &str) -> PathBuf {
    let venv = repo().join("target/pyenv");
    let path = venv.join("bin").join(name);
    // The script is idempotent and cheap once installed (it compares its
    // marker); running it always also upgrades a venv made by an older list.
    let out = Command::new(repo().join("scripts/python-tools"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} is missing and scripts/python-tools could not install it:\n{}",
        both(&out)
    );
    assert!(
        path.is_file(),
        "scripts/python-tools succeeded but {} is missing",
        path.display()
    );
    path
}

/// Parses Prometheus text with `prometheus_client`'s parser; returns the
/// metric family names it found, one per line (panics if it refuses the text).
pub fn prometheus_parse(text: &str) -> String {
    let python = tool("python");
    let mut child = Command::new(python)
        .args([
            "-c",
            "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as parse\nfor f in parse(sys.stdin.read()):\n    print(f.name, f.type, len(f.samples))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition:\n{}\n{text}",
        both(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
