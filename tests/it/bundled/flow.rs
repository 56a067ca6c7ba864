//! The watchers' snapshots through the ledger, and a pipeline of bundled
//! plugins: folder_watch finds files, `if` sorts them, file_handler copies the
//! text ones.

use std::time::Duration;

use serde_json::json;

use super::{install, run_json};
use crate::support::TestDir;

#[test]
fn file_watch_remembers_through_its_snapshot_fact() {
    let dir = TestDir::new("bundled-file-watch");
    install(&dir, "file_watch");
    let watched = dir.write("data/app.conf", "one");
    dir.config(&format!(
        "plugins:\n  file_watch:\n    config:\n      watches:\n        - id: conf\n          path: {}\n          event_type: conf.changed\n",
        watched.display()
    ));
    let poll = || {
        let (r, v) = run_json(&dir, "file_watch", "poll", &json!({}));
        assert_eq!(r.code, 0, "{r:#?}");
        v["response"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    assert!(poll().is_empty(), "the first poll only learns");
    assert!(poll().is_empty(), "nothing changed");
    std::fs::write(&watched, "two").unwrap();
    let events = poll();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["type"], "conf.changed");
    assert_eq!(events[0]["payload"]["change"], "modified");
    let facts = dir.texts(
        "SELECT fact_json FROM plugin_facts WHERE plugin_name = 'file_watch' AND fact_type = 'file_watch.snapshot' ORDER BY id",
    );
    assert_eq!(facts.len(), 3, "one fact per poll: {facts:?}");
    let last: serde_json::Value = serde_json::from_str(facts[2].as_deref().unwrap()).unwrap();
    assert_eq!(
        last["watches"]["conf"]["fingerprint"],
        events[0]["payload"]["fingerprint"]
    );
    // health reads, never writes a fact.
    let (r, _) = run_json(&dir, "file_watch", "health", &json!({}));
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(
        dir.count("SELECT COUNT(*) FROM plugin_facts WHERE plugin_name = 'file_watch'"),
        3
    );
}

#[test]
fn folder_watch_then_if_then_file_handler_in_pipelines() {
    let dir = TestDir::new("bundled-flow");
    for p in ["folder_watch", "if", "file_handler"] {
        install(&dir, p);
    }
    dir.write("inbox/notes.txt", "plain words");
    dir.write("inbox/photo.jpg", "not text");
    std::fs::create_dir_all(dir.path.join("out")).unwrap();
    let root = dir.path.display();
    dir.config(&format!(
        "service:\n  tick_interval: 1s\nplugins:\n  folder_watch:\n    config:\n      watches:\n        - id: inbox\n          root: {root}/inbox\n          emit_mode: per_file\n          emit_initial: true\n  classify:\n    uses: if\n    config:\n      field: rel_path\n      checks:\n        - endswith: .TXT\n          emit: inbox.text\n        - default: inbox.other\n  reader:\n    uses: file_handler\n    config:\n      allowed_read_paths: {root}/inbox\n      action: read\n  writer:\n    uses: file_handler\n    config:\n      allowed_write_paths: {root}/out\n      default_output_dir: {root}/out\n      action: write\npipelines:\n  - name: sort\n    on: folder_watch.changed\n    steps:\n      - uses: classify\n  - name: copy-text\n    on: inbox.text\n    steps:\n      - uses: reader\n      - uses: writer\n"
    ));
    let _daemon = dir.start();
    let (r, v) = run_json(&dir, "folder_watch", "poll", &json!({}));
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(
        v["response"]["events"].as_array().unwrap().len(),
        2,
        "{v:#}"
    );
    let copied = dir.path.join("out/notes.txt");
    dir.wait_until(
        Duration::from_secs(60),
        "the text file copied to out/",
        || copied.exists(),
    );
    assert_eq!(std::fs::read_to_string(&copied).unwrap(), "plain words");
    dir.wait_until(Duration::from_secs(60), "every job to finish", || {
        dir.count(
            "SELECT COUNT(*) FROM job_queue WHERE status NOT IN ('succeeded', 'failed', 'dead')",
        ) == 0
    });
    let failed = dir.texts("SELECT plugin || ': ' || COALESCE(last_error, '') FROM job_queue WHERE status <> 'succeeded'");
    assert!(failed.is_empty(), "{failed:?}");
    assert!(
        !dir.path.join("out/photo.jpg").exists(),
        "the other file was sorted away"
    );
    let emitted = dir.count("SELECT COUNT(*) FROM job_queue WHERE plugin = 'writer'");
    assert_eq!(emitted, 1);
}
