//! `sqlite_change`: a value in another SQLite file, watched read-only.

use serde_json::json;

use super::{install, run_json};
use crate::support::TestDir;

#[test]
fn sqlite_change_emits_when_the_scalar_changes_and_never_writes() {
    let dir = TestDir::new("bundled-sqlite");
    install(&dir, "sqlite_change");
    let watched = dir.path.join("app.db");
    let app = rusqlite::Connection::open(&watched).unwrap();
    app.execute_batch("CREATE TABLE runs (status TEXT); INSERT INTO runs VALUES ('ok');")
        .unwrap();
    dir.config(&format!(
        "plugins:\n  failures:\n    uses: sqlite_change\n    config:\n      db_path: {}\n      query: \"SELECT COUNT(*) FROM runs WHERE status = 'failed'\"\n      event_type: backups.failures.changed\n",
        watched.display()
    ));
    let poll = || {
        let (r, v) = run_json(&dir, "failures", "poll", &json!({}));
        assert_eq!(r.code, 0, "{r:#?}");
        v["response"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    assert!(poll().is_empty(), "the first poll only learns");
    app.execute("INSERT INTO runs VALUES ('failed')", [])
        .unwrap();
    let events = poll();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["type"], "backups.failures.changed");
    assert_eq!(events[0]["payload"]["result"], 1);
    assert_eq!(events[0]["payload"]["previous_result"], 0);
    assert!(poll().is_empty(), "unchanged");
    let facts = dir.count(
        "SELECT COUNT(*) FROM plugin_facts WHERE plugin_name = 'failures' AND fact_type = 'sqlite_change.snapshot'",
    );
    assert_eq!(facts, 3);
    // A statement that could write is refused before it runs.
    dir.config(&format!(
        "plugins:\n  failures:\n    uses: sqlite_change\n    config:\n      db_path: {}\n      query: \"DELETE FROM runs\"\n",
        watched.display()
    ));
    let (r, v) = run_json(&dir, "failures", "poll", &json!({}));
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(v["error"].as_str().unwrap().contains("read-only"), "{v:#}");
    let rows: i64 = app
        .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 2);
}
