//! `if`: the field classifier through `ductile run`.

use serde_json::json;

use super::{install, run_json};
use crate::support::TestDir;

const CONFIG: &str = "plugins:\n  check_youtube:\n    uses: if\n    retry:\n      max_attempts: 3\n    config:\n      field: text\n      checks:\n        - contains: youtu.be\n          emit: youtube.url.detected\n        - startswith: HTTP\n          emit: web.url.detected\n        - regex: '[A-Z]{3}-\\d+'\n          emit: ticket.mentioned\n";

#[test]
fn if_emits_the_first_match_and_fails_for_good_without_a_default() {
    let dir = TestDir::new("bundled-if");
    install(&dir, "if");
    dir.config(CONFIG);
    for (text, want) in [
        ("see https://youtu.be/x", "youtube.url.detected"),
        ("https://example.com", "web.url.detected"),
        ("ABC-42", "ticket.mentioned"),
    ] {
        let (r, v) = run_json(
            &dir,
            "check_youtube",
            "handle",
            &json!({"text": text, "n": 1}),
        );
        assert_eq!(r.code, 0, "{r:#?}");
        let events = v["response"]["events"].as_array().unwrap();
        assert_eq!(events.len(), 1, "{v:#}");
        assert_eq!(events[0]["type"], want, "{text}");
        assert_eq!(
            events[0]["payload"],
            json!({"text": text, "n": 1}),
            "payload unchanged"
        );
    }
    // Not a full match, no default: a permanent failure, never retried.
    let (r, v) = run_json(
        &dir,
        "check_youtube",
        "handle",
        &json!({"text": "ticket ABC-42"}),
    );
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(
        v["error"].as_str().unwrap().contains("no check matched"),
        "{v:#}"
    );
    let id = v["job_id"].as_str().unwrap();
    let attempts = dir.count(&format!("SELECT attempt FROM job_queue WHERE id = '{id}'"));
    assert_eq!(attempts, 1, "retry: false must not be retried: {v:#}");
    assert_ne!(v["status"], "queued", "{v:#}");
}

#[test]
fn if_health_refuses_a_broken_config() {
    let dir = TestDir::new("bundled-if-health");
    install(&dir, "if");
    dir.config("plugins:\n  if:\n    config:\n      field: text\n      checks:\n        - regex: '('\n          emit: a.b\n");
    let (r, v) = run_json(&dir, "if", "health", &json!({}));
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(
        v["error"].as_str().unwrap().contains("does not compile"),
        "{v:#}"
    );
}
