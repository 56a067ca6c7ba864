//! `ductile run`, config loading, discovery and the protocol runner, end to end.
//!
//! Every test drives the real binary against its own temp config dir and reads
//! the outcome back from the exit code, stdout/stderr and the SQLite ledger.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Background, Run, TestDir, bin, wait_until};

const LONG: Duration = Duration::from_secs(30);

/// A dir with the bundled echo plugin configured (plus `plugin_body` under it).
fn echo_dir(tag: &str, plugin_body: &str) -> TestDir {
    let dir = TestDir::new(tag);
    dir.echo();
    dir.config(&format!("plugins:\n  echo:\n{plugin_body}"));
    dir
}

/// A dir with the bundled echo plugin configured with its defaults (`echo: {}`).
fn echo_default(tag: &str) -> TestDir {
    let dir = TestDir::new(tag);
    dir.echo();
    dir.config("plugins:\n  echo: {}\n");
    dir
}

/// A dir with fixture `name` configured with a 1 s poll timeout, then
/// `ductile run <name> --json`; returns the dir, the run and how long it took.
fn run_fixture(name: &str) -> (TestDir, Run, Duration) {
    let dir = TestDir::new(name);
    dir.fixture(name);
    dir.config(&format!(
        "plugins:\n  {name}:\n    timeouts:\n      poll: 1s\n"
    ));
    let start = Instant::now();
    let run = dir.run(&["run", name, "--json"]);
    (dir, run, start.elapsed())
}

/// One `job_queue` row.
#[derive(Debug, PartialEq)]
struct Job {
    plugin: String,
    command: String,
    status: String,
    attempt: i64,
    max_attempts: i64,
    submitted_by: String,
    last_error: Option<String>,
}

fn job(dir: &TestDir, id: &str) -> Job {
    dir.db()
        .query_row(
            "SELECT plugin, command, status, attempt, max_attempts, submitted_by, last_error FROM job_queue WHERE id = ?1",
            [id],
            |r| {
                Ok(Job {
                    plugin: r.get(0)?,
                    command: r.get(1)?,
                    status: r.get(2)?,
                    attempt: r.get(3)?,
                    max_attempts: r.get(4)?,
                    submitted_by: r.get(5)?,
                    last_error: r.get(6)?,
                })
            },
        )
        .unwrap()
}

/// The only `job_log` row of a job: (status, result, stderr, stdout, last_error).
type LogRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn only_log(dir: &TestDir, id: &str) -> LogRow {
    let db = dir.db();
    let mut stmt = db
        .prepare("SELECT status, result, stderr, stdout, last_error FROM job_log WHERE job_id = ?1")
        .unwrap();
    let rows: Vec<LogRow> = stmt
        .query_map([id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "exactly one job_log row for {id}: {rows:?}");
    rows.into_iter().next().unwrap()
}

fn job_id(run: &Run) -> String {
    run.json()["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job_id: {run:#?}"))
        .to_string()
}

/// The job a failed one-shot recorded: exit 1, the given status, attempt 1 of 1.
fn assert_failed_once(dir: &TestDir, run: &Run, status: &str) -> (String, Job) {
    assert_eq!(run.code, 1, "{run:#?}");
    let id = job_id(run);
    let j = job(dir, &id);
    assert_eq!(
        (j.status.as_str(), j.attempt, j.max_attempts),
        (status, 1, 1),
        "{j:?}"
    );
    assert_eq!(run.json()["status"], status);
    assert_eq!(run.json()["error"].as_str(), j.last_error.as_deref());
    (id, j)
}

/// Whether process `pid` has exited (gone, or a zombie nobody reaped yet). A
/// pid that was never recorded (0) is a test bug, not a gone process.
fn gone(pid: i64) -> bool {
    assert!(pid > 1, "no process recorded (pid {pid})");
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

// ---------------------------------------------------------------------------
// 1. `ductile run`: one job through the queue and the ledger
// ---------------------------------------------------------------------------

#[test]
fn run_echo_prints_the_job_and_its_result_and_exits_0() {
    let dir = echo_dir("run-human", "    config:\n      message: hi there\n");
    let run = dir.run(&["run", "echo"]).code(0);
    let id = dir.text("SELECT id FROM job_queue").unwrap();
    assert_eq!(
        run.stdout,
        format!("job {id} succeeded (echo poll)\nresult: echo: hi there\n")
    );
    assert_eq!(run.stderr, "");
}

#[test]
fn run_json_reports_job_id_status_and_result() {
    let dir = echo_default("run-json");
    let v = dir.run(&["run", "echo", "--json"]).code(0).json();
    let id = v["job_id"].as_str().unwrap();
    assert_eq!(dir.text("SELECT id FROM job_queue").as_deref(), Some(id));
    assert_eq!(v["plugin"], "echo");
    assert_eq!(v["command"], "poll");
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["result"], "echo: hello from ductile");
    assert_eq!(v["error"], Value::Null);
    assert_eq!(v["exit_code"], 0);
    assert_eq!(
        v["response"]["events"],
        json!([{"type": "echo.poll", "payload": {"message": "hello from ductile"}}])
    );
}

#[test]
fn a_one_shot_is_a_real_queue_job_with_a_complete_ledger_trail() {
    let dir = echo_default("run-ledger");
    let id = job_id(&dir.run(&["run", "echo", "--json"]).code(0));
    assert_eq!(
        job(&dir, &id),
        Job {
            plugin: "echo".into(),
            command: "poll".into(),
            status: "succeeded".into(),
            attempt: 1,
            max_attempts: 1,
            submitted_by: "cli".into(),
            last_error: None,
        }
    );
    let chain: Vec<String> = dir
        .texts(&format!(
            "SELECT coalesce(from_status, '') || '->' || to_status FROM job_transitions WHERE job_id = '{id}' ORDER BY id"
        ))
        .into_iter()
        .map(Option::unwrap)
        .collect();
    assert_eq!(chain, ["->queued", "queued->running", "running->succeeded"]);
    assert_eq!(
        dir.count(&format!(
            "SELECT COUNT(*) FROM job_attempts WHERE job_id = '{id}' AND attempt = 1 AND status = 'succeeded' AND exit_code = 0 AND pid > 0 AND completed_at IS NOT NULL"
        )),
        1
    );
    assert_eq!(dir.count("SELECT COUNT(*) FROM job_attempts"), 1);
    let (status, result, _, stdout, last_error) = only_log(&dir, &id);
    assert_eq!(status, "succeeded");
    let result: Value = serde_json::from_str(&result.unwrap()).unwrap();
    assert_eq!(result["status"], "ok");
    assert_eq!(result["result"], "echo: hello from ductile");
    assert_eq!((stdout, last_error), (None, None));
    assert_eq!(
        dir.count(&format!(
            "SELECT COUNT(*) FROM job_stopwatch WHERE job_id = '{id}' AND plugin = 'echo' AND command = 'poll' AND attempt = 1 AND status = 'ok' AND dur_ns > 0 AND exit_wall_ns >= enter_wall_ns"
        )),
        1
    );
}

#[test]
fn each_echo_poll_appends_a_fact_with_the_next_seq_and_mirrors_it_into_plugin_state() {
    let dir = echo_dir("run-facts", "    config:\n      message: first\n");
    let first = job_id(&dir.run(&["run", "echo", "--json"]).code(0));
    dir.config("plugins:\n  echo:\n    config:\n      message: second\n");
    let second = job_id(&dir.run(&["run", "echo", "--json"]).code(0));
    let db = dir.db();
    let mut stmt = db
        .prepare("SELECT seq, plugin_name, fact_type, job_id, command, fact_json FROM plugin_facts ORDER BY id")
        .unwrap();
    let facts: Vec<(i64, String, String, String, String, String)> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let fact = |seq: i64, id: &str, message: &str| {
        (
            seq,
            "echo".to_string(),
            "echo.snapshot".to_string(),
            id.to_string(),
            "poll".to_string(),
            json!({ "message": message }).to_string(),
        )
    };
    assert_eq!(
        facts,
        vec![fact(1, &first, "first"), fact(2, &second, "second")]
    );
    assert_eq!(dir.count("SELECT COUNT(*) FROM plugin_state"), 1);
    let state: Value = serde_json::from_str(
        &dir.text("SELECT state FROM plugin_state WHERE plugin_name = 'echo'")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(state, json!({"message": "second"}));
}

#[test]
fn plugin_run_is_the_same_verb_as_run() {
    let dir = echo_default("plugin-run");
    let v = dir
        .run(&["plugin", "run", "echo", "health", "--json"])
        .code(0)
        .json();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["result"], "healthy");
    let j = job(&dir, v["job_id"].as_str().unwrap());
    assert_eq!(
        (j.command.as_str(), j.submitted_by.as_str()),
        ("health", "cli")
    );
}

#[test]
fn plugin_config_reaches_the_plugin_verbatim_with_quotes_backslashes_and_unicode() {
    let dir = echo_dir(
        "run-escapes",
        "    config:\n      message: 'say \"hi\" \\ back \u{2014} \u{fc}n\u{ef}code'\n",
    );
    let v = dir.run(&["run", "echo", "--json"]).code(0).json();
    assert_eq!(
        v["result"],
        "echo: say \"hi\" \\ back \u{2014} \u{fc}n\u{ef}code"
    );
    assert_eq!(
        dir.text("SELECT state FROM plugin_state").unwrap(),
        json!({"message": "say \"hi\" \\ back \u{2014} \u{fc}n\u{ef}code"}).to_string()
    );
}

#[test]
fn a_payload_reaches_handle_as_the_event_envelope() {
    let dir = echo_default("payload-echo");
    let v = dir
        .run(&[
            "run",
            "echo",
            "handle",
            "--payload",
            r#"{"message":"x"}"#,
            "--json",
        ])
        .code(0)
        .json();
    // echo acknowledges the event with its configured message.
    assert_eq!(v["result"], "echo: handled");
    assert_eq!(
        v["response"]["events"],
        json!([{"type": "echo.handled", "payload": {"message": "hello from ductile"}}])
    );
    let stored: Value = serde_json::from_str(
        &dir.text("SELECT payload FROM job_queue WHERE command = 'handle'")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored["type"], "cli.run");
    assert_eq!(stored["source"], "cli");
    assert_eq!(stored["payload"], json!({"message": "x"}));
    assert!(stored["event_id"].as_str().is_some_and(|s| s.len() == 36));

    // A plugin that echoes its request shows what actually arrived on stdin.
    let dir = TestDir::new("payload-dump");
    dir.fixture("request_dump");
    dir.config("plugins:\n  request_dump:\n    config:\n      k: v\n");
    let v = dir
        .run(&[
            "run",
            "request_dump",
            "handle",
            "--payload",
            r#"{"message":"x"}"#,
            "--json",
        ])
        .code(0)
        .json();
    let req = &v["result"];
    assert_eq!(req["protocol"], 2);
    assert_eq!(req["job_id"], v["job_id"]);
    assert_eq!(req["command"], "handle");
    assert_eq!(req["config"], json!({"k": "v"}));
    assert_eq!(req["state"], json!({}));
    // The instance name is always in the context, whatever produced the job.
    assert_eq!(req["context"], json!({"ductile_plugin": "request_dump"}));
    assert_eq!(req["event"]["type"], "cli.run");
    assert_eq!(req["event"]["payload"], json!({"message": "x"}));
    assert!(
        req["deadline_at"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );
}

#[test]
fn event_is_for_handle_and_for_polls_that_carry_a_payload() {
    let dir = TestDir::new("event-rule");
    dir.fixture("request_dump");
    dir.config("plugins:\n  request_dump: {}\n");
    let plain = dir.run(&["run", "request_dump", "--json"]).code(0).json();
    assert!(
        plain["result"].get("event").is_none(),
        "a plain poll gets no event: {plain}"
    );
    let handle = dir
        .run(&["run", "request_dump", "handle", "--json"])
        .code(0)
        .json();
    assert_eq!(handle["result"]["event"]["payload"], json!({}));
    let poll = dir
        .run(&["run", "request_dump", "--payload", r#"{"n":1}"#, "--json"])
        .code(0)
        .json();
    assert_eq!(poll["result"]["event"]["payload"], json!({"n": 1}));
}

#[test]
fn a_payload_that_is_not_json_is_a_usage_error_naming_payload() {
    let dir = echo_default("payload-bad");
    let run = dir.run(&["run", "echo", "--payload", "nope"]).code(2);
    assert_eq!(
        run.stderr,
        "error: --payload is not valid JSON: expected ident at line 1 column 2\n"
    );
    let run = dir.run(&["run", "echo", "--payload", "[1]"]).code(2);
    assert_eq!(run.error(), "--payload must be a JSON object");
    let file = dir.write("payload.json", "{\"unterminated\": ");
    let run = dir
        .run(&["run", "echo", "--payload-file", file.to_str().unwrap()])
        .code(2);
    assert_eq!(
        run.error(),
        format!(
            "--payload-file {} is not valid JSON: EOF while parsing a value at line 1 column 17",
            file.display()
        )
    );
    let run = dir
        .run(&["run", "echo", "--payload", "{}", "--payload-file", "x"])
        .code(2);
    assert_eq!(
        run.error(),
        "use either --payload or --payload-file, not both"
    );
    assert!(!dir.db_path().exists(), "a usage error creates no ledger");
}

#[test]
fn dry_run_changes_nothing() {
    let dir = echo_default("dry-run");
    let run = dir.run(&["run", "echo", "--dry-run"]).code(0);
    assert_eq!(
        run.stdout,
        "dry run: would enqueue and run `echo poll` (nothing was changed)\n"
    );
    let v = dir
        .run(&[
            "run",
            "echo",
            "handle",
            "--dry-run",
            "--json",
            "--payload",
            "{}",
        ])
        .code(0)
        .json();
    assert_eq!(v["dry_run"], true);
    let plan = &v["would_enqueue"];
    assert_eq!(
        (
            &plan["plugin"],
            &plan["command"],
            &plan["submitted_by"],
            &plan["max_attempts"]
        ),
        (&json!("echo"), &json!("handle"), &json!("cli"), &json!(1))
    );
    assert_eq!(plan["payload"]["type"], "cli.run");
    assert!(!dir.db_path().exists(), "no ledger was created");
    assert!(!dir.path.join("state").exists());
}

#[test]
fn an_unknown_plugin_or_command_is_named_with_a_suggestion() {
    let dir = echo_default("unknown-plugin");
    let run = dir.run(&["run", "ecko"]).code(1);
    assert_eq!(run.error(), "unknown plugin `ecko`; did you mean `echo`?");
    let run = dir.run(&["run", "zzzzzz"]).code(1);
    assert_eq!(
        run.error(),
        "unknown plugin `zzzzzz` (see `ductile plugin list`)"
    );
    let run = dir.run(&["run", "echo", "pol"]).code(2);
    assert_eq!(
        run.error(),
        "plugin `echo` has no command `pol` (it declares: poll, handle, health); did you mean `poll`?"
    );
    assert!(!dir.db_path().exists());
}

#[test]
fn a_disabled_plugin_is_not_runnable() {
    let dir = echo_dir("disabled", "    enabled: false\n");
    let run = dir.run(&["run", "echo"]).code(78);
    assert_eq!(
        run.error(),
        "plugin `echo` is disabled (plugins.echo.enabled: false)"
    );
    let v = dir.run(&["plugin", "list", "--json"]).code(0).json();
    assert_eq!(v["disabled"], json!(["echo"]));
    assert!(!dir.db_path().exists());
}

#[test]
fn a_discovered_but_unconfigured_plugin_is_not_runnable() {
    let dir = echo_default("unconfigured");
    dir.fixture("ok_basic");
    let run = dir.run(&["run", "ok_basic"]).code(78);
    assert_eq!(
        run.error(),
        "plugin `ok_basic` was discovered but is not configured; add `plugins: {ok_basic: {}}` to the config"
    );
    let v = dir.run(&["plugin", "list", "--json"]).code(0).json();
    assert_eq!(v["not_configured"][0]["name"], "ok_basic");
    assert!(!dir.db_path().exists());
}

// ---------------------------------------------------------------------------
// 2. The command-line frame
// ---------------------------------------------------------------------------

#[test]
fn version_prints_name_version_and_protocol() {
    let dir = TestDir::new("version");
    let run = dir.run(&["version"]).code(0);
    assert_eq!(
        run.stdout,
        format!(
            "ductile {} (commit {}, built {}, {}, plugin protocol 2)\n",
            env!("CARGO_PKG_VERSION"),
            env!("DUCTILE_COMMIT"),
            env!("DUCTILE_BUILD_DATE"),
            env!("DUCTILE_TARGET"),
        )
    );
    let v = dir.run(&["version", "--json"]).code(0).json();
    assert_eq!(
        v,
        json!({
            "name": "ductile",
            "version": env!("CARGO_PKG_VERSION"),
            "commit": env!("DUCTILE_COMMIT"),
            "build_date": env!("DUCTILE_BUILD_DATE"),
            "target": env!("DUCTILE_TARGET"),
            "protocol": 2
        })
    );
}

#[test]
fn help_lists_every_verb_and_exits_0() {
    let dir = TestDir::new("help");
    for args in [&["help"][..], &["--help"], &["-h"]] {
        let run = dir.run(args).code(0);
        for verb in [
            "ductile run <plugin> [command]",
            "ductile version",
            "ductile plugin list",
            "ductile plugin run <plugin> [command]",
            "ductile system start",
            "ductile system status",
            "ductile system reload",
            "ductile system reset <plugin>",
            "ductile system breaker <plugin>",
            "ductile config check",
        ] {
            assert!(run.stdout.contains(verb), "{args:?} lacks {verb}: {run:#?}");
        }
        assert!(
            run.stdout
                .contains("exit codes: 0 ok, 1 failure, 2 usage error, 78 configuration error")
        );
    }
    let run = dir.run(&["run", "-h"]).code(0);
    assert!(run.stdout.contains("ductile run <plugin> [command]"));
    assert!(run.stdout.contains("--payload <value>"));
    assert!(run.stdout.contains("--payload-file <value>"));
    assert!(!run.stdout.contains("system start"), "{}", run.stdout);
    // No verb at all: the help, but as a usage error.
    let run = dir.run(&[]).code(2);
    assert!(run.stdout.contains("ductile plugin list"));
}

#[test]
fn noun_help_lists_that_nouns_verbs_and_exits_0() {
    let dir = TestDir::new("noun-help");
    for args in [
        &["plugin", "-h"][..],
        &["plugin", "--help"],
        &["help", "plugin"],
    ] {
        let run = dir.run(args).code(0);
        assert!(run.stdout.contains("ductile plugin list"), "{run:#?}");
        assert!(run.stdout.contains("ductile plugin run <plugin> [command]"));
        assert!(!run.stdout.contains("ductile system start"), "{run:#?}");
    }
}

#[test]
fn a_noun_without_a_verb_names_its_verbs() {
    let dir = TestDir::new("noun-only");
    let run = dir.run(&["plugin"]).code(2);
    assert_eq!(
        run.stderr,
        "error: `ductile plugin` needs a verb: list, run, new, check, build\n"
    );
}

#[test]
fn an_unknown_verb_is_exit_2_with_the_closest_suggestion() {
    let dir = TestDir::new("typo");
    let run = dir.run(&["plugn", "list"]).code(2);
    assert_eq!(
        run.stderr,
        "error: unknown command `plugn`; did you mean `plugin`?\n"
    );
    assert_eq!(run.stdout, "");
    let run = dir.run(&["plugin", "lst"]).code(2);
    assert_eq!(
        run.stderr,
        "error: unknown verb `lst` for `ductile plugin`; did you mean `plugin list`?\n"
    );
    let run = dir.run(&["version", "extra"]).code(2);
    assert_eq!(
        run.stderr,
        "error: unexpected argument `extra`; usage: ductile version\n"
    );
    let run = dir.run(&["run"]).code(2);
    assert_eq!(
        run.stderr,
        "error: `ductile run` needs <plugin> [command]; usage: ductile run <plugin> [command]\n"
    );
}

#[test]
fn an_unknown_flag_is_exit_2_with_the_closest_suggestion() {
    let dir = echo_default("bad-flag");
    let run = dir.run(&["plugin", "list", "--bogus"]).code(2);
    assert_eq!(
        run.stderr,
        "error: unknown flag `--bogus` (see `ductile help`)\n"
    );
    let run = dir.run(&["run", "echo", "--paylod", "{}"]).code(2);
    assert_eq!(
        run.stderr,
        "error: unknown flag `--paylod`; did you mean `--payload`?\n"
    );
    let run = dir.run(&["plugin", "list", "--payload", "{}"]).code(2);
    assert_eq!(
        run.stderr,
        "error: `--payload` is not a flag of `ductile plugin list` (see `ductile help`)\n"
    );
    let run = dir.run(&["version", "-x"]).code(2);
    assert_eq!(
        run.stderr,
        "error: unknown flag `-x` (see `ductile help`)\n"
    );
    assert!(!dir.db_path().exists());
}

#[test]
fn json_errors_are_a_json_object_with_error_and_exit_code() {
    let dir = TestDir::new("json-error");
    let run = dir.run(&["plugn", "list", "--json"]).code(2);
    assert_eq!(
        run.json(),
        json!({"error": "unknown command `plugn`; did you mean `plugin`?", "exit_code": 2})
    );
    assert_eq!(
        run.stderr,
        "error: unknown command `plugn`; did you mean `plugin`?\n"
    );
    // A config error under --json: the same shape, exit 78.
    dir.write("config.yaml", "plugins: [unclosed\n");
    let run = dir.run(&["run", "echo", "--json"]).code(78);
    let v = run.json();
    assert_eq!(v["exit_code"], 78);
    assert_eq!(v["error"].as_str(), Some(run.error()));
}

#[test]
fn the_config_dir_env_var_is_used_when_config_is_absent() {
    let dir = TestDir::new("env-config");
    // Two candidate config dirs with different messages: $DUCTILE_CONFIG_DIR and ~/.config/ductile.
    for (root, message) in [
        ("viaenv", "from env"),
        ("home/.config/ductile", "from home"),
    ] {
        dir.write(
            &format!("{root}/config.yaml"),
            &format!(
                "plugin_roots: [{}]\nstate:\n  path: state/ductile.db\nplugins:\n  echo:\n    config:\n      message: {message}\n",
                dir.path.join("plugins").display()
            ),
        );
    }
    dir.echo();
    let run = |env_dir: Option<&str>| {
        let mut c = dir.command_without_config(&["run", "echo", "--json"]);
        c.env("HOME", dir.path.join("home"));
        if let Some(d) = env_dir {
            c.env("DUCTILE_CONFIG_DIR", dir.path.join(d));
        }
        Run::from(c.output().unwrap())
    };
    let v = run(Some("viaenv")).code(0).json();
    assert_eq!(v["result"], "echo: from env");
    assert!(dir.path.join("viaenv/state/ductile.db").exists());
    let v = run(None).code(0).json();
    assert_eq!(v["result"], "echo: from home");
    // An explicit --config beats the variable.
    let mut c = dir.command_without_config(&["run", "echo", "--json", "--config"]);
    c.arg(dir.path.join("home/.config/ductile"))
        .env("DUCTILE_CONFIG_DIR", dir.path.join("viaenv"));
    let v = Run::from(c.output().unwrap()).code(0).json();
    assert_eq!(v["result"], "echo: from home");
}

#[test]
fn config_may_name_a_file_as_well_as_a_directory() {
    let dir = TestDir::new("config-file");
    dir.echo();
    let file = dir.write(
        "alt.yaml",
        "plugin_roots: [plugins]\nstate:\n  path: alt/ductile.db\nplugins:\n  echo:\n    config:\n      message: alt\n",
    );
    let mut c = dir.command_without_config(&["run", "echo", "--json", "--config"]);
    c.arg(&file);
    let v = Run::from(c.output().unwrap()).code(0).json();
    assert_eq!(v["result"], "echo: alt");
    assert!(dir.path.join("alt/ductile.db").exists());
    // A path that is neither is a config error naming it.
    let missing = dir.path.join("nope.yaml");
    let mut c = dir.command_without_config(&["run", "echo", "--config"]);
    c.arg(&missing);
    let run = Run::from(c.output().unwrap()).code(78);
    assert_eq!(
        run.stderr,
        format!("error: {}: config file does not exist\n", missing.display())
    );
}

// ---------------------------------------------------------------------------
// 3. Config errors: exit 78, nothing changed
// ---------------------------------------------------------------------------

/// Asserts a config error: exit 78, stderr exactly `error: <message>`, no ledger.
fn assert_config_error(dir: &TestDir, args: &[&str], message: &str) {
    let run = dir.run(args).code(78);
    assert_eq!(run.stderr, format!("error: {message}\n"), "{run:#?}");
    assert_eq!(run.stdout, "");
    assert!(!dir.path.join("state").exists(), "no ledger was created");
}

#[test]
fn malformed_yaml_exits_78_naming_file_line_and_column() {
    let dir = TestDir::new("bad-yaml");
    dir.echo();
    let file = dir.write(
        "config.yaml",
        "plugin_roots: [plugins]\nplugins:\n  echo: {}\n bad: [\n",
    );
    assert_config_error(
        &dir,
        &["run", "echo"],
        &format!(
            "{}:4:2: invalid YAML: did not find expected key, while parsing a block mapping",
            file.display()
        ),
    );
}

#[test]
fn an_unknown_include_exits_78_naming_the_entry() {
    let dir = echo_default("bad-include");
    let file = dir.config("include: [nope.yaml]\nplugins:\n  echo: {}\n");
    assert_config_error(
        &dir,
        &["run", "echo"],
        &format!(
            "{}: include[0]: included path `nope.yaml` does not exist ({})",
            file.display(),
            dir.path.join("nope.yaml").display()
        ),
    );
}

#[test]
fn an_include_cycle_exits_78_showing_the_chain() {
    let dir = echo_default("include-cycle");
    dir.config("include: [a.yaml]\nplugins:\n  echo: {}\n");
    let a = dir.write("a.yaml", "include: [config.yaml]\n");
    assert_config_error(
        &dir,
        &["run", "echo"],
        &format!(
            "{}: include[0]: include cycle: config.yaml -> a.yaml -> config.yaml",
            a.display()
        ),
    );
}

#[test]
fn an_unset_variable_in_a_plugin_config_value_exits_78_naming_it() {
    let dir = TestDir::new("unset-var");
    dir.echo();
    let name = format!("DUCTILE_IT_UNSET_{}", std::process::id());
    let file = dir.config(&format!(
        "plugins:\n  echo:\n    config:\n      message: ${{{name}}}\n"
    ));
    let mut c = dir.command(&["run", "echo"]);
    c.env_remove(&name);
    let run = Run::from(c.output().unwrap()).code(78);
    assert_eq!(
        run.stderr,
        format!(
            "error: {}:7: environment variable `{name}` is not set\n",
            file.display()
        )
    );
    assert!(!dir.path.join("state").exists());
    // Set on the ductile process, the same config runs and the value reaches the plugin.
    let mut c = dir.command(&["run", "echo", "--json"]);
    c.env(&name, "from the environment");
    let v = Run::from(c.output().unwrap()).code(0).json();
    assert_eq!(v["result"], "echo: from the environment");
}

#[test]
fn an_invalid_value_exits_78_naming_its_key_path() {
    let dir = TestDir::new("bad-value");
    dir.echo();
    let file = dir.config("plugins:\n  echo:\n    timeouts:\n      poll: [1]\n");
    assert_config_error(
        &dir,
        &["run", "echo"],
        &format!(
            "{}: plugins.echo.timeouts.poll: expected a duration such as `30s`, found a list",
            file.display()
        ),
    );
}

#[test]
fn a_plugin_missing_a_required_config_key_is_skipped_and_running_it_exits_78() {
    let dir = echo_default("missing-key");
    dir.fixture("counter");
    dir.config("plugins:\n  echo: {}\n  counter:\n    config:\n      delay: \"1\"\n");
    let reason = "plugin `counter` is missing required config key `out` (declared in config_keys.required of `counter`)";
    let run = dir.run(&["run", "counter"]).code(78);
    assert_eq!(
        run.error(),
        format!("plugin `counter` was not loaded: {reason}")
    );
    assert!(!dir.db_path().exists());
    let v = dir.run(&["plugin", "list", "--json"]).code(0).json();
    let names: Vec<&str> = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo"]);
    assert_eq!(
        v["skipped"],
        json!([{"name": "counter", "path": dir.path.join("plugins/counter"), "reason": reason}])
    );
    // The rest of the config still runs.
    dir.run(&["run", "echo"]).code(0);
}

#[test]
fn an_unknown_key_warns_on_stderr_but_the_run_succeeds() {
    let dir = echo_default("unknown-key");
    let file = dir.config("servce:\n  name: x\nplugins:\n  echo:\n    shedules: []\n");
    let run = dir.run(&["run", "echo", "--json"]).code(0);
    assert_eq!(run.json()["status"], "succeeded");
    for warning in [
        format!(
            "{}: servce: unknown key `servce`; did you mean `service`?",
            file.display()
        ),
        format!(
            "{}: plugins.echo.shedules: unknown key `shedules`; did you mean `schedules`?",
            file.display()
        ),
    ] {
        let logged = run.stderr.lines().any(|l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| {
                v["level"] == "warn" && v["message"].as_str() == Some(warning.as_str())
            })
        });
        assert!(logged, "no warn line {warning:?} in {:?}", run.stderr);
    }
}

#[test]
fn config_check_reports_ok_warnings_and_errors() {
    let dir = echo_default("config-check");
    let file = dir.config("bogus_key: 1\nplugins:\n  echo: {}\n");
    dir.run(&["config", "lock"]).code(0);
    let warning = format!("{}:4: bogus_key: unknown key `bogus_key`", file.display());
    let run = dir.run(&["config", "check"]).code(0);
    assert_eq!(
        run.stdout,
        format!(
            "warning: {warning}\n  hint: remove or rename the key; unknown keys are ignored\nconfig ok: 1 file(s), 1 plugin(s) loaded, 0 error(s), 1 warning(s)\n"
        )
    );
    let v = dir.run(&["config", "check", "--json"]).code(0).json();
    assert_eq!(v["ok"], true);
    assert_eq!(v["errors"], json!([]));
    assert_eq!(v["warnings"], json!([warning]));
    assert_eq!(v["plugins"], json!(["echo"]));
    assert_eq!(v["files"][0]["path"], json!(file));
    assert!(
        v["files"][0]["hash"]
            .as_str()
            .unwrap()
            .starts_with("blake3:")
    );

    // strict_mode turns warnings into a rejection.
    dir.config("bogus_key: 1\nservice:\n  strict_mode: true\nplugins:\n  echo: {}\n");
    let v = dir.run(&["config", "check", "--json"]).code(1).json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["strict"], true);
    assert_eq!(v["warnings"][0], json!(warning));

    // A broken file: exit 78, the error in the list (and on stderr without --json).
    dir.config("plugins:\n  echo: {}\nservice: [\n");
    let v = dir.run(&["config", "check", "--json"]).code(78).json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["warnings"], json!([]));
    let error = v["errors"][0].as_str().unwrap().to_string();
    assert!(
        error.starts_with(&format!("{}:", file.display())),
        "{error}"
    );
    let run = dir.run(&["config", "check"]).code(78);
    assert_eq!(run.stderr, format!("error: {error}\n"));
    assert!(
        !dir.path.join("state").exists(),
        "config check never creates a ledger"
    );
}

// ---------------------------------------------------------------------------
// 4. Discovery and trust
// ---------------------------------------------------------------------------

#[test]
fn plugin_list_explains_every_refused_plugin_and_loads_the_good_ones() {
    let dir = TestDir::new("zoo");
    for name in [
        "bad_protocol_3",
        "missing_entrypoint",
        "dotdot_entrypoint",
        "not_executable",
        "no_manifest",
        "ok_basic",
        "hang",
    ] {
        dir.fixture(name);
    }
    let open = dir.fixture_at("request_dump", "plugins/request_dump");
    let m = mode(&open) | 0o002;
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap();
    dir.config("plugins:\n  ok_basic: {}\n  hang: {}\n");
    let v = dir.run(&["plugin", "list", "--json"]).code(0).json();

    let loaded: Vec<&str> = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(loaded, ["hang", "ok_basic"]);
    let p = |rel: &str| dir.path.join("plugins").join(rel).display().to_string();
    let skipped: Vec<(String, String, String)> = v["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["path"].as_str().unwrap().to_string(),
                s["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = vec![
        (
            "bad_protocol_3",
            p("bad_protocol_3/manifest.yaml"),
            format!(
                "{}: protocol: unsupported protocol 3 (this ductile speaks 2)",
                p("bad_protocol_3/manifest.yaml")
            ),
        ),
        (
            "dotdot_entrypoint",
            p("dotdot_entrypoint/manifest.yaml"),
            format!(
                "{}: entrypoint: must not contain `..` (path traversal), got `../ok_basic/run.sh`",
                p("dotdot_entrypoint/manifest.yaml")
            ),
        ),
        (
            "missing_entrypoint",
            p("missing_entrypoint"),
            format!(
                "entrypoint `run.sh` does not exist in {}",
                p("missing_entrypoint")
            ),
        ),
        (
            "not_executable",
            p("not_executable"),
            format!(
                "entrypoint `run.sh` in {} is not executable (run chmod +x on it)",
                p("not_executable")
            ),
        ),
        (
            "request_dump",
            p("request_dump"),
            format!(
                "plugin dir {} is world-writable (mode {m:o}; run chmod o-w on it)",
                p("request_dump")
            ),
        ),
    ];
    let expected: Vec<(String, String, String)> = expected
        .into_iter()
        .map(|(n, path, r)| (n.to_string(), path, r))
        .collect();
    assert_eq!(skipped, expected);
    // A directory with no manifest is not a plugin candidate: a warning, not a skip.
    let warnings: Vec<&str> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings.contains(
            &format!(
                "{} has no manifest.yaml but holds `run.sh`; it is not loaded as a plugin",
                p("no_manifest")
            )
            .as_str()
        ),
        "{warnings:?}"
    );
    // Refused plugins cannot be run, and say why.
    let run = dir.run(&["run", "not_executable"]).code(78);
    assert_eq!(
        run.error(),
        format!("plugin `not_executable` was not loaded: {}", expected[3].2)
    );
    // The good ones run.
    dir.run(&["run", "ok_basic"]).code(0);
}

#[test]
fn plugin_list_text_shows_loaded_and_skipped_plugins() {
    let dir = TestDir::new("list-text");
    dir.fixture("ok_basic");
    dir.fixture("not_executable");
    dir.fixture("hang");
    dir.config("plugins:\n  ok_basic: {}\n  twin:\n    uses: ok_basic\n");
    let run = dir.run(&["plugin", "list"]).code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("PLUGIN"), "{lines:?}");
    assert!(lines[1].starts_with("ok_basic "), "{lines:?}");
    assert!(lines[2].starts_with("twin (uses ok_basic) "), "{lines:?}");
    assert!(lines[3].starts_with("hang ") && lines[3].contains("(not configured)"));
    assert_eq!(
        lines[4],
        format!(
            "skipped not_executable ({0}): entrypoint `run.sh` in {0} is not executable (run chmod +x on it)",
            dir.path.join("plugins/not_executable").display()
        )
    );
}

#[test]
fn a_duplicate_plugin_name_in_a_later_root_is_skipped_with_a_warning() {
    let dir = TestDir::new("dup");
    let first = dir.fixture("request_dump");
    let second = dir.fixture_at("request_dump", "more/request_dump");
    dir.write(
        "config.yaml",
        "plugin_roots: [plugins, more]\nstate:\n  path: state/ductile.db\nplugins:\n  request_dump: {}\n",
    );
    let reason = format!(
        "duplicate plugin `request_dump` in {} is ignored: {} declared it first",
        second.display(),
        first.display()
    );
    let v = dir.run(&["plugin", "list", "--json"]).code(0).json();
    assert_eq!(v["plugins"][0]["dir"], json!(first));
    assert_eq!(
        v["skipped"],
        json!([{"name": "request_dump", "path": second, "reason": reason}])
    );
    let run = dir.run(&["run", "request_dump", "--json"]).code(0);
    let warning = format!(
        "plugin `request_dump` skipped ({}): {reason}",
        second.display()
    );
    assert!(run.stderr.contains(&warning), "{run:#?}");
}

#[test]
fn an_alias_made_with_uses_keeps_its_own_plugin_state() {
    let dir = TestDir::new("alias");
    dir.fixture("ok_basic");
    dir.config("plugins:\n  ok_basic: {}\n  ok_twin:\n    uses: ok_basic\n");
    dir.run(&["run", "ok_basic"]).code(0);
    let v = dir.run(&["run", "ok_twin", "--json"]).code(0).json();
    assert_eq!(v["plugin"], "ok_twin");
    assert_eq!(v["result"], "ok_basic done");
    let rows: Vec<String> = dir
        .texts("SELECT plugin_name FROM plugin_state ORDER BY plugin_name")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    assert_eq!(rows, ["ok_basic", "ok_twin"]);
    let facts: Vec<String> = dir
        .texts("SELECT plugin_name || ' ' || fact_type FROM plugin_facts ORDER BY seq")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    assert_eq!(
        facts,
        ["ok_basic ok_basic.snapshot", "ok_twin ok_basic.snapshot"]
    );
    let jobs: Vec<String> = dir
        .texts("SELECT plugin FROM job_queue ORDER BY created_at")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    assert_eq!(jobs, ["ok_basic", "ok_twin"]);
}

// ---------------------------------------------------------------------------
// 5. The runner against misbehaving plugins
// ---------------------------------------------------------------------------

#[test]
fn garbage_on_stdout_fails_the_job_with_a_protocol_error_and_keeps_the_garbage() {
    let (dir, run, _) = run_fixture("garbage_stdout");
    let (id, j) = assert_failed_once(&dir, &run, "failed");
    assert_eq!(
        j.last_error.as_deref(),
        Some("protocol error: plugin stdout is not JSON: expected ident at line 1 column 2")
    );
    let (status, result, _, stdout, last_error) = only_log(&dir, &id);
    assert_eq!(status, "failed");
    assert_eq!(result, None);
    assert_eq!(stdout.as_deref(), Some("this is not json\n"));
    assert_eq!(last_error, j.last_error);
}

#[test]
fn an_empty_stdout_fails_the_job_with_a_protocol_error() {
    let (dir, run, _) = run_fixture("empty_stdout");
    let (id, j) = assert_failed_once(&dir, &run, "failed");
    assert_eq!(
        j.last_error.as_deref(),
        Some("protocol error: plugin wrote nothing to stdout")
    );
    assert_eq!(only_log(&dir, &id).3, None);
}

#[test]
fn an_ok_response_without_result_is_a_protocol_error() {
    let (dir, run, _) = run_fixture("ok_without_result");
    let (_, j) = assert_failed_once(&dir, &run, "failed");
    assert_eq!(
        j.last_error.as_deref(),
        Some("protocol error: response has status \"ok\" but no `result`")
    );
}

#[test]
fn an_ok_response_with_a_nonzero_exit_succeeds_with_a_warning() {
    // The reference looks at the exit code only for 78: its plugins rely on it.
    let (dir, run, _) = run_fixture("exit_1_ok");
    let run = run.code(0);
    let v = run.json();
    assert_eq!(
        (v["status"].as_str(), v["exit_code"].as_i64()),
        (Some("succeeded"), Some(1))
    );
    let id = job_id(&run);
    let warnings = dir.text(&format!(
        "SELECT warnings FROM job_log WHERE job_id = '{id}'"
    ));
    assert_eq!(
        warnings.as_deref(),
        Some(
            r#"["plugin exited with code 1 after writing a valid response; the response stands"]"#
        )
    );
}

#[test]
fn stdout_over_10_mib_fails_the_job_quickly() {
    let (dir, run, elapsed) = run_fixture("huge_stdout");
    let (id, j) = assert_failed_once(&dir, &run, "failed");
    assert_eq!(j.last_error.as_deref(), Some("stdout exceeded 10 MiB"));
    // The fixture would write forever: finishing at all is the proof.
    let _ = elapsed;
    let kept = only_log(&dir, &id).3.unwrap_or_default();
    assert!(kept.len() <= 10 * 1024 * 1024, "{} bytes kept", kept.len());
}

#[test]
fn a_hung_plugin_times_out_within_its_timeout() {
    let (dir, run, elapsed) = run_fixture("hang");
    let (id, j) = assert_failed_once(&dir, &run, "timed_out");
    let err = j.last_error.unwrap();
    assert!(err.starts_with("timed out after 1"), "{err}");
    // The fixture sleeps an hour: ending at all is the timeout's doing.
    assert!(elapsed >= Duration::from_secs(1), "took {elapsed:?}");
    assert_eq!(
        dir.count(&format!(
            "SELECT COUNT(*) FROM job_stopwatch WHERE job_id = '{id}' AND status = 'timeout'"
        )),
        1
    );
    let pid = dir.count(&format!(
        "SELECT pid FROM job_attempts WHERE job_id = '{id}'"
    ));
    wait_until(LONG, "the hung plugin is gone", || gone(pid));
}

#[test]
fn a_plugin_that_ignores_term_is_killed_after_the_grace() {
    let (dir, run, elapsed) = run_fixture("ignores_term");
    let (id, _) = assert_failed_once(&dir, &run, "timed_out");
    assert!(
        elapsed >= Duration::from_secs(6),
        "1 s timeout + 5 s grace: took {elapsed:?}"
    );
    let stderr = only_log(&dir, &id).2.unwrap_or_default();
    assert!(
        stderr.contains("ignores_term: got TERM, ignoring it"),
        "{stderr:?}"
    );
    let pid = dir.count(&format!(
        "SELECT pid FROM job_attempts WHERE job_id = '{id}'"
    ));
    wait_until(LONG, "the plugin is gone", || gone(pid));
}

#[test]
fn exit_78_is_a_config_error_and_never_retried() {
    let (dir, run, _) = run_fixture("exit_78");
    assert_eq!(run.code, 78, "{run:#?}");
    let v = run.json();
    let id = v["job_id"].as_str().unwrap();
    assert_eq!(v["exit_code"], 78);
    assert_eq!(
        v["error"],
        "plugin exited 78 (configuration error): exit_78: config key api_key is missing"
    );
    assert_eq!(
        v["stderr"],
        "exit_78: starting\nexit_78: config key api_key is missing\n"
    );
    let j = job(&dir, id);
    assert_eq!((j.status.as_str(), j.attempt), ("failed", 1));
    assert_eq!(dir.count("SELECT COUNT(*) FROM job_attempts"), 1);
    assert_eq!(
        dir.count("SELECT COUNT(*) FROM job_transitions WHERE to_status = 'queued'"),
        1,
        "never requeued"
    );
    // The human form shows the error and the plugin's stderr.
    let run = dir.run(&["run", "exit_78"]).code(78);
    assert!(run.stdout.contains(
        "error: plugin exited 78 (configuration error): exit_78: config key api_key is missing\nplugin stderr:\nexit_78: starting\n"
    ), "{run:#?}");
}

#[test]
fn an_error_response_with_retry_false_fails_the_job() {
    let (dir, run, _) = run_fixture("error_no_retry");
    let (id, j) = assert_failed_once(&dir, &run, "failed");
    assert_eq!(
        j.last_error.as_deref(),
        Some("error_no_retry: this input can never succeed")
    );
    assert_eq!(run.json()["response"]["retry"], false);
    assert_eq!(only_log(&dir, &id).0, "failed");
}

#[test]
fn a_plugin_that_closes_stdin_early_still_succeeds() {
    let (dir, run, _) = run_fixture("early_stdin_close");
    let run = run.code(0);
    assert_eq!(run.json()["result"], "answered without reading stdin");
    assert_eq!(job(&dir, &job_id(&run)).status, "succeeded");
}

#[test]
fn a_grandchild_holding_stdout_does_not_hold_the_job_and_is_killed() {
    let (dir, run, elapsed) = run_fixture("grandchild_holds_stdout");
    let run = run.code(0);
    let _ = elapsed;
    assert_eq!(job(&dir, &job_id(&run)).status, "succeeded");
    let pid = run.json()["result"]["grandchild_pid"].as_i64().unwrap();
    wait_until(
        LONG,
        "the grandchild in the plugin's group is killed",
        || gone(pid),
    );
}

#[test]
fn a_grandchild_that_escaped_into_its_own_session_neither_holds_the_job_nor_outlives_it() {
    let (dir, run, _) = run_fixture("setsid_grandchild");
    let run = run.code(0);
    assert_eq!(job(&dir, &job_id(&run)).status, "succeeded");
    // It left the plugin's process group, but it is still a descendant: the
    // one-shot, its subreaper, killed it when the job ended.
    let pid = run.json()["result"]["grandchild_pid"].as_i64().unwrap();
    assert!(pid > 1);
    assert!(gone(pid), "escaped grandchild {pid} outlived its job");
}

#[test]
fn state_updates_over_1_mib_fail_the_job_and_write_no_state() {
    let (dir, run, _) = run_fixture("big_state");
    let (_, j) = assert_failed_once(&dir, &run, "failed");
    let err = j.last_error.unwrap();
    assert!(
        err.starts_with("state_updates rejected: plugin_state would be ")
            && err.ends_with(" bytes, over the 1 MiB limit"),
        "{err}"
    );
    assert_eq!(dir.count("SELECT COUNT(*) FROM plugin_state"), 0);
    assert_eq!(dir.count("SELECT COUNT(*) FROM plugin_facts"), 0);
}

#[test]
fn a_stderr_flood_is_capped_at_64_kib_and_the_job_succeeds() {
    let (dir, run, _) = run_fixture("stderr_flood");
    let run = run.code(0);
    let id = job_id(&run);
    assert_eq!(run.json()["result"], "survived a stderr flood");
    let stderr = only_log(&dir, &id).2.unwrap();
    assert_eq!(stderr.len(), 64 * 1024);
    assert!(stderr.bytes().all(|b| b == b'e'));
}

#[test]
fn stopwatch_sub_spans_are_capped_at_32() {
    let (dir, run, _) = run_fixture("subs_overflow");
    let id = job_id(&run.code(0));
    let subs: Value = serde_json::from_str(
        &dir.text(&format!(
            "SELECT subs_json FROM job_stopwatch WHERE job_id = '{id}'"
        ))
        .unwrap(),
    )
    .unwrap();
    let subs = subs.as_array().unwrap();
    assert_eq!(subs.len(), 32);
    assert_eq!(subs[0], json!({"name": "phase.s0", "dur_ns": 0}));
    assert_eq!(subs[31], json!({"name": "phase.s31", "dur_ns": 31}));
}

#[test]
fn plugins_see_only_allowlisted_and_passed_through_environment_variables() {
    let dir = TestDir::new("env");
    dir.fixture("env_dump");
    dir.config(
        "service:\n  plugin_env_passthrough: [DUCTILE_IT_SHOWN]\nplugins:\n  env_dump: {}\n",
    );
    let mut c = dir.command(&["run", "env_dump", "--json"]);
    c.env("DUCTILE_IT_SHOWN", "1")
        .env("DUCTILE_IT_HIDDEN", "1")
        .env("TZ", "UTC");
    let v = Run::from(c.output().unwrap()).code(0).json();
    let names: Vec<&str> = v["result"]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(names.contains(&"DUCTILE_IT_SHOWN"), "{names:?}");
    assert!(names.contains(&"TZ"), "{names:?}");
    assert!(!names.contains(&"DUCTILE_IT_HIDDEN"), "{names:?}");
    for n in &names {
        assert!(
            [
                "PATH",
                "HOME",
                "TZ",
                "LANG",
                "TMPDIR",
                "PWD",
                "DUCTILE_IT_SHOWN",
                "DUCTILE_JOB_ID"
            ]
            .contains(n)
                || n.starts_with("LC_"),
            "unexpected variable {n} in {names:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// 6. The ledger file
// ---------------------------------------------------------------------------

#[test]
fn the_db_file_is_0600_and_its_directory_0700() {
    let dir = echo_default("perms");
    dir.run(&["run", "echo"]).code(0);
    assert_eq!(mode(&dir.db_path()), 0o600);
    assert_eq!(mode(&dir.path.join("state")), 0o700);
}

#[test]
fn a_db_whose_schema_lacks_a_table_is_refused_with_exit_78_naming_it() {
    let dir = echo_default("schema");
    dir.run(&["run", "echo"]).code(0);
    dir.db().execute_batch("DROP TABLE job_stopwatch").unwrap();
    let run = dir.run(&["run", "echo"]).code(78);
    assert_eq!(
        run.stderr,
        format!(
            "error: {}: database schema does not match this ductile (missing table job_stopwatch, index idx_job_stopwatch_job, index idx_job_stopwatch_plugin); restore a backup or start from a fresh state.path\n",
            dir.db_path().display()
        )
    );
    assert_eq!(
        dir.count("SELECT COUNT(*) FROM job_queue"),
        1,
        "nothing enqueued"
    );
    assert_eq!(
        dir.count("SELECT COUNT(*) FROM sqlite_master WHERE name = 'job_stopwatch'"),
        0,
        "never migrated silently"
    );
}

#[test]
fn a_relative_state_path_resolves_against_the_config_dir_not_the_cwd() {
    let dir = echo_default("relative-state");
    let elsewhere = dir.path.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out = Command::new(bin())
        .args(["run", "echo", "--config", ".."])
        .current_dir(&elsewhere)
        .env_remove("DUCTILE_CONFIG_DIR")
        .output()
        .unwrap();
    Run::from(out).code(0);
    assert!(dir.db_path().exists());
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

// ---------------------------------------------------------------------------
// 7. One-shots while a daemon holds the lock
// ---------------------------------------------------------------------------

#[test]
fn dry_run_while_a_daemon_runs_changes_nothing() {
    let dir = echo_default("daemon-dry");
    let daemon = dir.start();
    let run = dir.run(&["run", "echo", "--dry-run"]).code(0);
    assert_eq!(
        run.stdout,
        "dry run: would enqueue and run `echo poll` (nothing was changed)\n"
    );
    assert_eq!(dir.count("SELECT COUNT(*) FROM job_queue"), 0);
    assert!(
        !daemon.log().iter().any(|l| l.contains("job succeeded")),
        "{:?}",
        daemon.log()
    );
}

#[test]
fn a_one_shot_handed_to_the_daemon_is_run_and_recorded_by_the_daemon() {
    let dir = echo_default("daemon-handover");
    let daemon = dir.start();
    let run = dir.run(&["run", "echo", "--json", "-v"]).code(0);
    let v = run.json();
    let id = v["job_id"].as_str().unwrap().to_string();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["result"], "echo: hello from ductile");
    assert!(
        run.stderr.contains(&format!(
            "a daemon (pid {}) holds the lock; handing the job over",
            daemon.pid()
        )),
        "{run:#?}"
    );
    // The daemon's own log records running this job.
    daemon.wait_log(LONG, &id);
    let line = daemon.log().into_iter().find(|l| l.contains(&id)).unwrap();
    let line: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["job_id"], id.as_str());
    assert_eq!(line["message"], "job succeeded (poll)");
    let j = job(&dir, &id);
    assert_eq!(
        (j.status.as_str(), j.submitted_by.as_str(), j.max_attempts),
        ("succeeded", "cli", 1)
    );
    assert_eq!(only_log(&dir, &id).0, "succeeded");
}

#[test]
fn a_one_shot_started_while_another_one_shot_runs_neither_kills_it_nor_hangs() {
    let dir = echo_default("two-one-shots");
    dir.fixture("counter");
    let out = dir.path.join("out");
    dir.config(&format!(
        "plugins:\n  echo: {{}}\n  counter:\n    config:\n      out: {}\n      delay: \"2\"\n",
        out.display()
    ));
    let first = Background::start(dir.command(&["run", "counter"]));
    dir.wait_until(LONG, "the first one-shot's plugin is running", || {
        std::fs::read_dir(out.join("pids")).is_ok_and(|mut d| d.next().is_some())
    });
    let second = Background::start(dir.command(&["run", "echo"]));
    let first_exit = first.finish(LONG).code;
    let second_exit = second.finish(LONG).code;
    let stuck: Vec<String> = dir
        .texts(
            "SELECT plugin || ' ' || status FROM job_queue WHERE status IN ('queued', 'running')",
        )
        .into_iter()
        .map(Option::unwrap)
        .collect();
    assert_eq!(
        (first_exit, second_exit, stuck),
        (0, 0, vec![]),
        "both one-shots finish their jobs and leave nothing behind"
    );
}

#[test]
fn ctrl_c_on_a_one_shot_kills_its_plugin_and_records_the_job_dead() {
    let dir = echo_default("interrupt");
    dir.fixture("counter");
    let out = dir.path.join("out");
    dir.config(&format!(
        "plugins:\n  counter:\n    config:\n      out: {}\n      delay: \"30\"\n",
        out.display()
    ));
    let run = Background::start(dir.command(&["run", "counter"]));
    dir.wait_until(LONG, "the plugin is running", || {
        std::fs::read_dir(out.join("pids")).is_ok_and(|mut d| d.next().is_some())
    });
    let pid: i64 = std::fs::read_dir(out.join("pids"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .to_string_lossy()
        .parse()
        .unwrap();
    run.signal("INT");
    let exit = run.finish(LONG);
    assert_eq!(exit.code, 1, "{exit:#?}");
    assert_eq!(
        dir.text("SELECT status || ': ' || last_error FROM job_queue")
            .as_deref(),
        Some("dead: cancelled: interrupted by SIGINT")
    );
    wait_until(LONG, "the plugin's group is gone", || {
        !crate::support::runs(pid, "counter/run.sh")
    });
}
