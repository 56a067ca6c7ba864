//! The seal end to end: `config lock` writes `.checksums`, the daemon verifies
//! it at start and on reload, one tamper per tier and mode, and `config check`
//! reports every finding with its file, key, line and hint.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Background, Run, TestDir};

const LONG: Duration = Duration::from_secs(30);

/// A config with echo enabled, a disabled second plugin (`counter`) and
/// `tokens.yaml` included; `strict` sets `service.strict_mode`.
fn tree(tag: &str, strict: bool) -> TestDir {
    let dir = TestDir::new(tag);
    dir.echo();
    dir.fixture("counter");
    let service = if strict {
        "service:\n  strict_mode: true\n"
    } else {
        ""
    };
    dir.config(&format!(
        "{service}include: [tokens.yaml]\nplugins:\n  echo: {{}}\n  counter:\n    enabled: false\n"
    ));
    dir.write("tokens.yaml", "tokens:\n  - {name: hook, key: s3cret}\n");
    dir
}

fn lock(dir: &TestDir) -> Run {
    dir.run(&["config", "lock"]).code(0)
}

/// `system start` that must end on its own with exit 78.
fn refused_start(dir: &TestDir) -> Run {
    Background::start(dir.command(&["system", "start"]))
        .finish(LONG)
        .code(78)
}

fn hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex()[..12].to_string()
}

fn append(dir: &TestDir, rel: &str, text: &str) -> (String, String) {
    let path = dir.path.join(rel);
    let before = std::fs::read(&path).unwrap();
    let mut after = before.clone();
    after.extend_from_slice(text.as_bytes());
    std::fs::write(&path, &after).unwrap();
    (hash(&before), hash(&after))
}

fn canonical(dir: &TestDir, rel: &str) -> String {
    std::fs::canonicalize(dir.path.join(rel))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn lock_writes_a_private_seal_of_every_file_and_plugin_and_dry_run_writes_nothing() {
    let dir = tree("lock", false);
    dir.write("scopes/reader.json", "{\"scopes\": [\"jobs:ro\"]}\n");
    let seal = dir.path.join(".checksums");
    let dry = dir.run(&["config", "lock", "--dry-run", "--json"]).code(0);
    assert!(!seal.exists(), "dry run wrote the seal");
    let v = dry.json();
    assert_eq!(v["dry_run"], true);
    assert_eq!(
        v["files"],
        json!(["config.yaml", "scopes/reader.json", "tokens.yaml"])
    );
    assert_eq!(v["plugins"], json!(["counter", "echo"]));
    let run = lock(&dir);
    assert!(run.stdout.ends_with(&format!(
        "sealed {}: 3 file(s), 2 plugin(s)\n",
        canonical(&dir, ".checksums")
    )));
    let mode = std::fs::metadata(&seal).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&seal).unwrap();
    let doc: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(doc["version"], 1);
    assert!(doc["generated_at"].as_str().unwrap().ends_with('Z'));
    let tokens = std::fs::read(dir.path.join("tokens.yaml")).unwrap();
    assert_eq!(
        doc["files"]["tokens.yaml"],
        format!("blake3:{}", blake3::hash(&tokens).to_hex())
    );
    let entry = std::fs::read(dir.path.join("plugins/echo/run.sh")).unwrap();
    let echo = &doc["plugin_fingerprints"]["echo"];
    assert_eq!(echo["dir"], "plugins/echo");
    assert_eq!(echo["resolved_dir"], canonical(&dir, "plugins/echo"));
    assert_eq!(
        echo["entrypoint"],
        format!("blake3:{}", blake3::hash(&entry).to_hex())
    );
    assert!(
        doc["plugin_fingerprints"]["counter"]["manifest"]
            .as_str()
            .unwrap()
            .starts_with("blake3:")
    );
    // A sealed, untouched config starts with no integrity warning.
    let daemon = dir.start();
    assert!(
        !daemon
            .log()
            .iter()
            .any(|l| l.contains("\"component\":\"integrity\"")),
        "{:#?}",
        daemon.log()
    );
}

#[test]
fn a_tampered_high_security_file_refuses_the_start_in_either_mode() {
    for strict in [false, true] {
        let dir = tree(if strict { "hs-strict" } else { "hs" }, strict);
        lock(&dir);
        let (was, now) = append(&dir, "tokens.yaml", "  - {name: evil, key: x}\n");
        let run = refused_start(&dir);
        assert_eq!(
            run.error(),
            format!(
                "integrity: {}: changed since the last `config lock` (sealed {was}…, now {now}…) (high-security tier); review the change, then run `ductile config lock`",
                canonical(&dir, "tokens.yaml")
            )
        );
        assert!(
            !dir.db_path().exists(),
            "nothing may be opened before the seal verifies"
        );
        // config check reports the same, as an error of the integrity kind.
        let v = dir.run(&["config", "check", "--json"]).code(1).json();
        let finding = &v["findings"][0];
        assert_eq!(finding["kind"], "integrity");
        assert_eq!(finding["severity"], "error");
        assert_eq!(finding["path"], "tokens.yaml");
        // Tampering that also breaks the file is still refused as tampering:
        // the seal is checked before the config is parsed.
        std::fs::write(dir.path.join("tokens.yaml"), "tokens: [\n").unwrap();
        let run = refused_start(&dir);
        assert!(
            run.error().starts_with(&format!(
                "integrity: {}: changed since the last `config lock`",
                canonical(&dir, "tokens.yaml")
            )),
            "{run:#?}"
        );
        std::fs::write(
            dir.path.join("tokens.yaml"),
            "tokens:\n  - {name: hook, key: rotated}\n",
        )
        .unwrap();
        // After review, locking authorises the new state.
        lock(&dir);
        drop(dir.start());
    }
}

#[test]
fn an_unsealed_high_security_file_is_refused_naming_it() {
    let dir = tree("hs-unsealed", false);
    let run = refused_start(&dir);
    assert_eq!(
        run.error(),
        format!(
            "integrity: {}: high-security file is not sealed (no .checksums) (high-security tier); review it, then run `ductile config lock`",
            canonical(&dir, "tokens.yaml")
        )
    );
}

#[test]
fn a_tampered_operational_file_warns_or_refuses_under_strict_mode() {
    let dir = tree("op", false);
    lock(&dir);
    let (was, now) = append(&dir, "config.yaml", "# edited\n");
    let daemon = dir.start();
    let line = format!(
        "{}: changed since the last `config lock` (sealed {was}…, now {now}…) (operational tier); review the change, then run `ductile config lock`",
        canonical(&dir, "config.yaml")
    );
    let logged = daemon
        .log()
        .iter()
        .any(|l| l.contains("\"level\":\"warn\"") && l.contains(&line));
    assert!(logged, "{line}\n{:#?}", daemon.log());
    drop(daemon);

    let dir = tree("op-strict", true);
    lock(&dir);
    let (was, now) = append(&dir, "config.yaml", "# edited\n");
    let run = refused_start(&dir);
    assert_eq!(
        run.error(),
        format!(
            "integrity: {}: changed since the last `config lock` (sealed {was}…, now {now}…) (operational tier); review the change, then run `ductile config lock`",
            canonical(&dir, "config.yaml")
        )
    );
}

#[test]
fn plugin_drift_refuses_an_enabled_plugin_in_either_mode_and_warns_for_a_disabled_one() {
    for strict in [false, true] {
        let dir = tree(if strict { "drift-strict" } else { "drift" }, strict);
        lock(&dir);
        append(&dir, "plugins/echo/run.sh", "# changed\n");
        let run = refused_start(&dir);
        assert_eq!(
            run.error(),
            format!(
                "integrity: {}: enabled plugin `echo`: entrypoint changed since the last `config lock` (plugin tier); review the plugin, then run `ductile config lock`",
                canonical(&dir, "plugins/echo")
            )
        );
    }
    let dir = tree("drift-disabled", false);
    lock(&dir);
    append(&dir, "plugins/counter/manifest.yaml", "# changed\n");
    let daemon = dir.start();
    let needle = "disabled plugin `counter`: manifest.yaml changed since the last `config lock` (plugin tier)";
    assert!(
        daemon.log().iter().any(|l| l.contains(needle)),
        "{:#?}",
        daemon.log()
    );
    drop(daemon);
    // The same drift is refused under strict mode.
    let dir = tree("drift-disabled-strict", true);
    lock(&dir);
    append(&dir, "plugins/counter/manifest.yaml", "# changed\n");
    assert!(refused_start(&dir).error().contains(needle));
}

#[test]
fn a_reload_that_fails_the_seal_is_rejected_and_the_old_config_keeps_running() {
    let dir = tree("reload", false);
    let daemon = dir.start();
    append(&dir, "tokens.yaml", "  - {name: evil, key: x}\n");
    let run = dir.run(&["system", "reload"]).code(78);
    assert!(
        run.error()
            .contains("rejected the reload and keeps its running config: integrity: "),
        "{run:#?}"
    );
    assert!(
        run.error()
            .contains("tokens.yaml: changed since the last `config lock`")
    );
    let recorded = dir.count(
        "SELECT COUNT(*) FROM system_events WHERE kind = 'config.reload_rejected' AND data LIKE '%tokens.yaml%'",
    );
    assert_eq!(recorded, 1);
    // Plugin drift is checked again on reload too.
    lock(&dir);
    dir.run(&["system", "reload"]).code(0);
    append(&dir, "plugins/echo/manifest.yaml", "# changed\n");
    let run = dir.run(&["system", "reload"]).code(78);
    assert!(
        run.error()
            .contains("enabled plugin `echo`: manifest.yaml changed"),
        "{run:#?}"
    );
    // Still serving on the old config: a queued job runs.
    dir.enqueue("echo", 1);
    daemon.signal("USR1");
    dir.wait_until(LONG, "a job ran on the old config", || {
        dir.count("SELECT COUNT(*) FROM job_queue WHERE status = 'succeeded'") == 1
    });
}

#[test]
fn a_moved_config_still_verifies_and_absolute_keys_are_read() {
    let dir = tree("moved", false);
    lock(&dir);
    let moved = TestDir::new("moved-to");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", dir.path.display()))
        .arg(&moved.path)
        .status()
        .unwrap();
    assert!(copied.success());
    let v = moved.run(&["config", "check", "--json"]).code(0).json();
    assert_eq!(v["findings"], json!([]), "{v}");
    // A seal keyed by absolute paths (as older ones are) verifies where it was written.
    let seal = moved.path.join(".checksums");
    let text = std::fs::read_to_string(&seal).unwrap();
    let root = canonical(&moved, ".");
    let absolute = text
        .replace("  config.yaml:", &format!("  {root}/config.yaml:"))
        .replace("  tokens.yaml:", &format!("  {root}/tokens.yaml:"));
    assert_ne!(absolute, text);
    std::fs::write(&seal, absolute).unwrap();
    let v = moved.run(&["config", "check", "--json"]).code(0).json();
    assert_eq!(v["findings"], json!([]), "{v}");
    drop(moved.start());
}

#[test]
fn config_check_reports_each_finding_with_severity_file_key_line_and_hint() {
    let dir = TestDir::new("check-findings");
    dir.echo();
    let file = dir.config(
        "plugins:\n  echo:\n    schedules:\n      - every: 5m\n        command: nosuch\n  ghost: {}\n",
    );
    let file = std::fs::canonicalize(file).unwrap();
    let run = dir.run(&["config", "check", "--json"]).code(1);
    let v = run.json();
    assert_eq!(v["ok"], false);
    let findings = v["findings"].as_array().unwrap();
    let by_kind =
        |kind: &str| -> Vec<&Value> { findings.iter().filter(|f| f["kind"] == kind).collect() };
    let schedule = by_kind("reference");
    assert_eq!(schedule.len(), 1, "{v}");
    assert_eq!(schedule[0]["severity"], "error");
    assert_eq!(schedule[0]["file"], file.display().to_string());
    assert_eq!(schedule[0]["path"], "plugins.echo.schedules[0].command");
    assert_eq!(schedule[0]["line"], 8);
    assert_eq!(
        schedule[0]["message"],
        "schedule of `echo` names command `nosuch`, which its manifest does not declare"
    );
    assert_eq!(schedule[0]["hint"], "use one of: poll, handle, health");
    // A configured plugin that was refused is an error, not an ok.
    let skipped = by_kind("plugin");
    assert_eq!(skipped.len(), 1, "{v}");
    assert_eq!(skipped[0]["severity"], "error");
    assert!(
        skipped[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("configured plugin `ghost` is skipped: "),
        "{v}"
    );
    // An unsealed config is a warning, each field present.
    let seal = by_kind("integrity");
    assert_eq!(seal.len(), 1, "{v}");
    assert_eq!(seal[0]["severity"], "warning");
    assert_eq!(
        seal[0]["hint"],
        "review the config, then run `ductile config lock`"
    );
    for f in findings {
        for key in [
            "severity", "kind", "file", "path", "line", "message", "hint",
        ] {
            assert!(f.get(key).is_some(), "{key} missing in {f}");
        }
    }
}

#[test]
fn config_check_exit_codes_clean_strict_and_unloadable() {
    let dir = TestDir::new("check-codes");
    dir.echo();
    dir.config("plugins:\n  echo: {}\n");
    // Unsealed: a warning; clean without --strict, exit 1 with it.
    let run = dir.run(&["config", "check"]).code(0);
    assert!(run.stdout.contains("warning: "), "{run:#?}");
    let run = dir.run(&["config", "check", "--strict"]).code(1);
    assert!(
        run.stdout.ends_with(
            "config rejected: 1 file(s), 1 plugin(s) loaded, 0 error(s), 1 warning(s) (strict: warnings are errors)\n"
        ),
        "{run:#?}"
    );
    lock(&dir);
    let run = dir.run(&["config", "check", "--strict"]).code(0);
    assert_eq!(
        run.stdout,
        "config ok: 1 file(s), 1 plugin(s) loaded, 0 error(s), 0 warning(s) (strict: warnings are errors)\n"
    );
    // A config that cannot be loaded at all: 78, the finding on stdout under --json.
    dir.config("plugins: [unclosed\n");
    let v = dir.run(&["config", "check", "--json"]).code(78).json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["findings"][0]["severity"], "error");
    assert!(v["findings"][0]["line"].as_u64().is_some(), "{v}");
    assert_eq!(v["findings"][0]["kind"], "syntax");
    // So is one whose schedule names no valid time: a cross-reference the loader refuses.
    dir.config("plugins:\n  echo:\n    schedules:\n      - cron: \"0 24 * * *\"\n");
    let v = dir.run(&["config", "check", "--json"]).code(78).json();
    assert_eq!(v["findings"][0]["kind"], "reference", "{v}");
    assert_eq!(v["findings"][0]["path"], "plugins.echo.schedules[0]");
}

#[test]
fn strict_mode_refuses_an_unsealed_config_and_an_api_without_tokens() {
    let dir = TestDir::new("strict-api");
    dir.echo();
    dir.config(
        "service:\n  strict_mode: true\napi:\n  enabled: true\n  listen: 127.0.0.1:0\nplugins:\n  echo: {}\n",
    );
    let run = refused_start(&dir);
    assert!(
        run.error().starts_with("integrity: ") && run.error().contains("the config is not sealed"),
        "{run:#?}"
    );
    lock(&dir);
    let run = refused_start(&dir);
    assert!(
        run.stderr
            .contains("strict_mode: the API is enabled with no API token"),
        "{run:#?}"
    );
}
