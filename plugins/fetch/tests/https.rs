//! The release-shaped binary over HTTPS: trust comes from `SSL_CERT_FILE` (as
//! the daemon passes it with `service.plugin_env_passthrough`), and a missing
//! trust store is a permanent error that says what to do.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use egress::testing::{Server, fixture};
use serde_json::{Value, json};

/// Runs the fetch binary on one `handle` request, with only `env` set.
fn fetch(url: &str, env: &[(&str, &str)]) -> Value {
    let request = json!({
        "protocol": 2,
        "command": "handle",
        "config": {"egress_allow": ["127.0.0.1/32"], "timeout_seconds": 10},
        "event": {"type": "test.requested", "payload": {"url": url}},
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_ductile-fetch"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn https_trusts_the_bundle_named_by_ssl_cert_file() {
    let server = Server::start("fetched over TLS");
    let ca = fixture("ca.pem");
    let v = fetch(&server.url(), &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    assert_eq!(v["status"], "ok", "{v:#}");
    let ev = &v["events"][0];
    assert_eq!(ev["type"], "fetch.fetched", "{v:#}");
    assert_eq!(ev["payload"]["status"], 200);
    assert_eq!(ev["payload"]["text"], "fetched over TLS");

    // Another CA's bundle: the server is not trusted, the failure is retried.
    let other = fixture("other-ca.pem");
    let v = fetch(&server.url(), &[("SSL_CERT_FILE", other.to_str().unwrap())]);
    assert_eq!(v["status"], "error", "{v:#}");
    assert!(
        v["error"].as_str().unwrap().contains("UnknownIssuer"),
        "{v:#}"
    );
    assert_ne!(v["retry"], false, "{v:#}");
}

#[test]
fn a_missing_trust_store_is_permanent_and_named() {
    let server = Server::start("never sent");
    let missing = fixture("no-such-bundle.pem");
    let v = fetch(
        &server.url(),
        &[("SSL_CERT_FILE", missing.to_str().unwrap())],
    );
    assert_eq!(v["status"], "error", "{v:#}");
    assert_eq!(v["retry"], false, "{v:#}");
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("no trusted root certificates"), "{msg}");
    assert!(msg.contains("no-such-bundle.pem"), "{msg}");
    assert!(msg.contains("plugin_env_passthrough"), "{msg}");
}
