//! The relay under faults, between real daemons on loopback: a sender killed
//! -9 after the receiver accepted re-sends on restart and the receiver
//! answers duplicate; two senders fan in to one receiver, each event once.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::http::{ADMIN, call, listening};
use crate::pipelines::Running;
use crate::relay_send::{
    SECRET, free_port, receiver_dir, receiver_dir_for, sender_dir_as, start, succeeded,
};
use crate::support::TestDir;

const LONG: Duration = Duration::from_secs(60);

/// Triggers pipeline `ship` on `api` for `archive_id`.
fn ship(api: &str, archive_id: &str) {
    let body = json!({"payload": {"archive_id": archive_id, "trace_id": format!("tr-{archive_id}"), "secret_plan": "-"}});
    let answer = call(
        api,
        "POST",
        "/pipeline/ship",
        Some(ADMIN),
        Some(&body.to_string()),
    );
    assert_eq!(answer.status, 202, "{}", answer.text());
}

/// Outbox rows on `dir` in `status`.
fn outbox(dir: &TestDir, status: &str) -> i64 {
    dir.count(&format!(
        "SELECT count(*) FROM job_queue WHERE plugin = 'relay' AND command = 'send' AND status = '{status}'"
    ))
}

/// Accepted roots on the receiver `dir` per (peer, archive id).
fn accepted(dir: &TestDir) -> BTreeMap<(String, String), i64> {
    let conn = dir.db();
    let mut stmt = conn
        .prepare(
            "SELECT submitted_by, json_extract(payload, '$.payload.archive_id'), count(*) FROM job_queue WHERE plugin = 'relay' AND command = 'accept' GROUP BY 1, 2",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok((
            (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
            r.get::<_, i64>(2)?,
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn accept_roots(dir: &TestDir) -> i64 {
    dir.count("SELECT count(*) FROM job_queue WHERE plugin = 'relay' AND command = 'accept'")
}

#[test]
fn a_sender_killed_after_the_receiver_accepted_resends_and_the_receiver_answers_duplicate() {
    let port = free_port();
    let b = start(receiver_dir("crash", port, SECRET));
    let a_dir = sender_dir_as(
        "crash",
        "home-primary",
        &format!("http://127.0.0.1:{port}"),
        "",
        "",
    );
    let daemon = a_dir.start_with_env(&[("DUCTILE_FAULT", "after-answer")]);
    daemon.wait_log(LONG, "fault injection armed");
    let api = listening(&daemon, "api.listen");
    ship(&api, "n-crash");
    daemon.wait_log(
        LONG,
        "fault injection: killing this process at `after-answer`, pass 1",
    );
    assert_eq!(daemon.wait_exit(LONG), -1, "killed by a signal");
    // B accepted and ran it; A died before writing down that it was sent.
    b.dir
        .wait_until(LONG, "B to run the event", || succeeded(&b.dir, "a") == 1);
    assert_eq!(accept_roots(&b.dir), 1);
    assert_eq!(outbox(&a_dir, "running"), 1, "the orphan on A");
    let id = a_dir
        .text("SELECT id FROM job_queue WHERE plugin = 'relay' AND command = 'send'")
        .unwrap();
    // A restarted: the orphan is requeued and sent again; B knows it.
    let a = Running {
        api: String::new(),
        daemon: a_dir.start(),
        dir: a_dir,
    };
    a.dir.wait_until(LONG, "the outbox row to succeed", || {
        outbox(&a.dir, "succeeded") == 1
    });
    let answers = a.dir.texts(&format!(
        "SELECT result FROM job_log WHERE job_id = '{id}' AND status = 'succeeded'"
    ));
    assert_eq!(answers.len(), 1, "{answers:?}");
    let answer: Value = serde_json::from_str(answers[0].as_deref().unwrap()).unwrap();
    assert_eq!(answer["remote"]["status"], 200, "{answer}");
    assert_eq!(answer["remote"]["duplicate"], true, "{answer}");
    assert_eq!(
        a.dir.count(&format!(
            "SELECT count(*) FROM job_attempts WHERE job_id = '{id}'"
        )),
        2,
        "the interrupted attempt and the re-send"
    );
    // Exactly one run on B, and one acceptance event.
    assert_eq!(accept_roots(&b.dir), 1);
    assert_eq!(succeeded(&b.dir, "a"), 1);
    assert_eq!(
        b.dir
            .count("SELECT count(*) FROM job_queue WHERE plugin = 'a'"),
        1
    );
    assert_eq!(
        b.dir
            .count("SELECT count(*) FROM system_events WHERE kind = 'relay.accepted'"),
        1
    );
}

#[test]
fn two_senders_fan_in_to_one_receiver_each_event_once() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let b = start(receiver_dir_for(
        "fanin",
        port,
        SECRET,
        &["home-east", "home-west"],
        true,
    ));
    let east = start(sender_dir_as("fanin-east", "home-east", &url, "", ""));
    let west = start(sender_dir_as("fanin-west", "home-west", &url, "", ""));
    // The same archive ids from both: B's dedupe is per peer, so six events.
    for id in ["n-1", "n-2", "n-3"] {
        ship(&east.api, id);
        ship(&west.api, id);
    }
    for s in [&east, &west] {
        s.dir.wait_until(LONG, "the sender's outbox to drain", || {
            outbox(&s.dir, "succeeded") == 3
        });
    }
    b.dir
        .wait_until(LONG, "B to run six events", || succeeded(&b.dir, "a") == 6);
    let got = accepted(&b.dir);
    let mut want = BTreeMap::new();
    for peer in ["relay:home-east", "relay:home-west"] {
        for id in ["n-1", "n-2", "n-3"] {
            want.insert((peer.to_string(), id.to_string()), 1);
        }
    }
    assert_eq!(got, want);
    assert_eq!(
        b.dir
            .count("SELECT count(*) FROM job_queue WHERE plugin = 'a'"),
        6
    );
    let peers = b.dir.run(&["relay", "peers", "--json"]).code(0).json();
    let rows = peers["peers"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["home-east", "home-west"], "{peers}");
    for p in rows {
        assert!(p["last_accepted_at"].is_string(), "{peers}");
        assert_eq!(p["refusals"], 0, "{peers}");
    }
}
