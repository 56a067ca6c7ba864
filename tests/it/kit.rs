//! The plugin author kit: `plugin check` on the shipped plugins, the teaching
//! template, every `plugin new` scaffold and a zoo of broken plugins;
//! `config schema`; the JSON Schemas checked with a real validator against the
//! shipped files, and against the Rust validators on a good/bad corpus; and
//! the template running in a pipeline under the daemon.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Run, TestDir, bin, repo};
use crate::tools::{both, tool};

/// `ductile <args>` with no config (the kit verbs need none), PATH led by
/// Debian's interpreter so `#!/usr/bin/env python3` finds it first.
fn ductile(args: &[&str]) -> Run {
    let out = Command::new(bin())
        .args(args)
        .env("PATH", debian_path())
        .env_remove("DUCTILE_CONFIG_DIR")
        .output()
        .unwrap();
    Run::from(out)
}

fn debian_path() -> String {
    format!(
        "/usr/bin:/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `plugin check <dir> --json`, with its report.
fn check(dir: &Path, extra: &[&str]) -> (i32, Value) {
    let d = dir.to_string_lossy().into_owned();
    let mut args = vec!["plugin", "check", d.as_str(), "--json"];
    args.extend_from_slice(extra);
    let r = ductile(&args);
    let v = r.json();
    (r.code, v)
}

/// The rule ids of a report's findings of `severity`.
fn rules(report: &Value, severity: &str) -> BTreeSet<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == severity)
        .map(|f| f["rule"].as_str().unwrap().to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn plugin_check_passes_on_echo_and_the_template() {
    let (code, report) = check(&repo().join("plugins/echo"), &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["ok"], json!(true));
    assert_eq!(report["plugin"], json!("echo"));
    assert_eq!(rules(&report, "error"), set(&[]));
    // echo's event `echo.poll` is not a past-tense verb: a warning only.
    assert_eq!(rules(&report, "warning"), set(&["events.naming"]));
    let probes: Vec<(&str, &str)> = report["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["command"].as_str().unwrap(),
                p["purpose"].as_str().unwrap(),
            )
        })
        .collect();
    for expected in [
        ("poll", "declared command"),
        ("poll", "determinism"),
        ("poll", "stable keys"),
        ("handle", "declared command"),
        ("health", "declared command"),
        ("ductile_check_undeclared", "undeclared command"),
        ("health", "reads stdin fully"),
    ] {
        assert!(probes.contains(&expected), "{expected:?} not in {probes:?}");
    }

    let (code, report) = check(&repo().join("plugins/_template"), &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["findings"], json!([]), "{report:#}");
}

#[test]
fn plugin_check_names_the_rule_each_broken_plugin_breaks() {
    let zoo = repo().join("tests/fixtures/plugin_zoo");
    let cases: &[(&str, &[&str])] = &[
        ("no_manifest", &["manifest.missing"]),
        ("bad_manifest", &["manifest.invalid"]),
        ("missing_entrypoint", &["entrypoint.missing"]),
        ("not_executable", &["entrypoint.not_executable"]),
        ("stateful_health", &["state.diagnostic_updates"]),
        ("nondeterministic", &["facts.nondeterministic"]),
        ("unstable_keys", &["facts.unstable_keys"]),
        ("no_snapshot", &["facts.no_snapshot"]),
        ("accepts_anything", &["command.undeclared_accepted"]),
        ("crashes_on_unknown", &["command.undeclared_unclean"]),
        ("noisy", &["response.noise"]),
        ("bad_response", &["response.protocol"]),
        ("hangs", &["response.timeout"]),
        (
            "ignores_stdin",
            &["stdin.not_read", "command.undeclared_accepted"],
        ),
    ];
    for (name, expected) in cases {
        let (code, report) = check(&zoo.join(name), &["--timeout", "1s"]);
        assert_eq!(code, 1, "{name}: {report:#}");
        assert_eq!(report["ok"], json!(false), "{name}");
        assert_eq!(rules(&report, "error"), set(expected), "{name}: {report:#}");
        for f in report["findings"].as_array().unwrap() {
            assert!(
                !f["message"].as_str().unwrap().is_empty()
                    && !f["hint"].as_str().unwrap().is_empty(),
                "{name}: {f}"
            );
        }
    }
    // A warning alone does not fail the check.
    let (code, report) = check(&zoo.join("bad_event_names"), &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(rules(&report, "warning"), set(&["events.naming"]));

    // The text form names the rule and the fix too, and exits 1.
    let r = ductile(&["plugin", "check", &zoo.join("noisy").to_string_lossy()]);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(
        r.stdout.contains("error [response.noise] (health)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("  fix: write only the one JSON response"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.ends_with("failed: 1 error(s), 0 warning(s)\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn plugin_check_refuses_world_writable_and_escaping_entrypoints() {
    let t = TestDir::new("kit-trust");
    let open = t.path.join("plugins/open");
    copy_dir(&repo().join("plugins/echo"), &open);
    let entry = open.join("run.sh");
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, report) = check(&open, &[]);
    assert_eq!(code, 1);
    assert_eq!(rules(&report, "error"), set(&["entrypoint.world_writable"]));
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (_, report) = check(&open, &[]);
    assert!(
        rules(&report, "error").contains("dir.world_writable"),
        "{report:#}"
    );
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();

    let escaping = t.path.join("plugins/escaping");
    copy_dir(&repo().join("plugins/echo"), &escaping);
    std::fs::remove_file(escaping.join("run.sh")).unwrap();
    std::os::unix::fs::symlink(open.join("run.sh"), escaping.join("run.sh")).unwrap();
    let (code, report) = check(&escaping, &[]);
    assert_eq!(code, 1);
    assert_eq!(rules(&report, "error"), set(&["entrypoint.outside_dir"]));
    // Nothing was spawned for a plugin discovery would refuse.
    assert_eq!(report["probes"], json!([]));

    let r = ductile(&["plugin", "check", &t.path.join("nowhere").to_string_lossy()]);
    assert_eq!(r.code, 1);
    assert!(r.error().contains("is not a directory"), "{r:#?}");
}

#[test]
fn plugin_new_python_and_sh_scaffolds_pass_the_check_and_their_own_tests() {
    let t = TestDir::new("kit-new");
    let parent = t.path.join("plugins");
    let p = parent.to_string_lossy().into_owned();
    for lang in ["python", "sh"] {
        let name = format!("demo_{lang}");
        let r = ductile(&["plugin", "new", &name, "--lang", lang, "--dir", &p]);
        assert_eq!(r.code, 0, "{r:#?}");
        let dir = parent.join(&name);
        let (code, report) = check(&dir, &[]);
        assert_eq!(code, 0, "{lang}: {report:#}");
        assert_eq!(report["findings"], json!([]), "{lang}: {report:#}");
        assert_eq!(report["plugin"], json!(name));
    }
    // The Python scaffold is the template under its new name, helper included.
    let py = parent.join("demo_python");
    let manifest = std::fs::read_to_string(py.join("manifest.yaml")).unwrap();
    assert!(
        manifest.contains("fact_type: demo_python.snapshot"),
        "{manifest}"
    );
    assert!(!manifest.contains("text_stats"));
    assert!(py.join("ductile_plugin.py").is_file());
    // Running it (the check did, many times) wrote nothing into the plugin dir.
    assert!(!py.join("__pycache__").exists());
    let out = Command::new("/usr/bin/python3")
        .args(["-m", "unittest", "-q"])
        .current_dir(&py)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", both(&out));
    let text = both(&out);
    assert!(
        text.contains("Ran ") && !text.contains("Ran 0 tests"),
        "{text}"
    );

    let out = Command::new(parent.join("demo_sh/test.sh"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", both(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("ok   ")
            .count(),
        4
    );
}

#[test]
fn plugin_new_rust_scaffold_builds_outside_the_repository() {
    // Outside the source tree: no parent workspace, no path back into it.
    let t = TestDir::new_in(&std::env::temp_dir(), "kit-rust");
    let parent = t.path.to_string_lossy().into_owned();
    let r = ductile(&[
        "plugin", "new", "greeter", "--lang", "rust", "--dir", &parent,
    ]);
    assert_eq!(r.code, 0, "{r:#?}");
    let dir = t.path.join("greeter");
    let sdk = std::fs::read_to_string(dir.join("src/ductile_plugin.rs")).unwrap();
    assert_eq!(
        sdk,
        std::fs::read_to_string(repo().join("plugins/sdk/src/lib.rs")).unwrap()
    );
    let cargo_toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(!cargo_toml.contains("path ="), "{cargo_toml}");
    // Before the build the entrypoint is missing, and the check says so.
    let (code, report) = check(&dir, &[]);
    assert_eq!(code, 1);
    assert_eq!(rules(&report, "error"), set(&["entrypoint.missing"]));

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    for args in [
        &["build", "--release", "--offline", "--quiet"][..],
        &["test", "--offline", "--quiet"][..],
    ] {
        let out = Command::new(&cargo)
            .args(args)
            .current_dir(&dir)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .output()
            .unwrap();
        assert!(out.status.success(), "cargo {args:?}:\n{}", both(&out));
    }
    let (code, report) = check(&dir, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["findings"], json!([]), "{report:#}");
}

#[test]
fn plugin_new_refuses_bad_names_existing_dirs_and_writes_nothing_on_dry_run() {
    let t = TestDir::new("kit-new-refuse");
    let p = t.path.to_string_lossy().into_owned();
    let r = ductile(&["plugin", "new", "Bad-Name", "--dir", &p]);
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.error().contains("use a lowercase letter"), "{r:#?}");
    let r = ductile(&["plugin", "new", "ok", "--lang", "cobol", "--dir", &p]);
    assert_eq!(r.code, 2);
    assert!(r.error().contains("expected python, sh or rust"), "{r:#?}");

    let r = ductile(&[
        "plugin",
        "new",
        "planned",
        "--dir",
        &p,
        "--dry-run",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{r:#?}");
    let v = r.json();
    assert_eq!(v["dry_run"], json!(true));
    assert_eq!(
        v["would_write"],
        json!([
            "manifest.yaml",
            "run.py",
            "test_run.py",
            "README.md",
            "ductile_plugin.py"
        ])
    );
    assert!(!t.path.join("planned").exists());

    std::fs::create_dir_all(t.path.join("taken")).unwrap();
    let r = ductile(&["plugin", "new", "taken", "--dir", &p]);
    assert_eq!(r.code, 1);
    assert!(r.error().contains("already exists"), "{r:#?}");
}

#[test]
fn config_schema_prints_every_kind() {
    let kinds = [
        ("config", "config.schema.json"),
        ("manifest", "manifest.schema.json"),
        ("pipelines", "pipelines.schema.json"),
        ("request", "protocol-request.schema.json"),
        ("response", "protocol-response.schema.json"),
    ];
    for (kind, file) in kinds {
        let r = ductile(&["config", "schema", "--kind", kind]);
        assert_eq!(r.code, 0, "{r:#?}");
        let shipped = std::fs::read_to_string(repo().join("docs/schemas").join(file)).unwrap();
        assert_eq!(r.stdout, shipped, "{kind}");
        let v = r.json();
        assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema");
    }
    assert_eq!(
        ductile(&["config", "schema"]).stdout,
        std::fs::read_to_string(repo().join("docs/schemas/config.schema.json")).unwrap()
    );
    let r = ductile(&["config", "schema", "--kind", "nope", "--json"]);
    assert_eq!(r.code, 2);
    assert_eq!(r.json()["exit_code"], json!(2));
}

/// `scripts/schema-validate KIND FILES...` with the venv's Python: one verdict per file.
fn validate(kind: &str, files: &[PathBuf]) -> Vec<(PathBuf, bool, Value)> {
    let out = Command::new(tool("python"))
        .arg(repo().join("scripts/schema-validate"))
        .arg(kind)
        .args(files)
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "schema-validate {kind}: {}",
        both(&out)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), files.len(), "{}", both(&out));
    lines
        .into_iter()
        .zip(files)
        .map(|(v, f)| (f.clone(), v["valid"] == json!(true), v["errors"].clone()))
        .collect()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn assert_all_valid(kind: &str, files: &[PathBuf]) {
    assert!(!files.is_empty(), "{kind}: nothing to validate");
    for (f, valid, errors) in validate(kind, files) {
        assert!(valid, "{kind}: {} is refused: {errors}", f.display());
    }
}

#[test]
fn shipped_files_validate_against_the_schemas() {
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(repo().join("plugins"))
        .unwrap()
        .map(|e| e.unwrap().path().join("manifest.yaml"))
        .filter(|p| p.is_file())
        .collect();
    manifests.sort();
    assert!(manifests.iter().any(|m| m.ends_with("echo/manifest.yaml")));
    assert!(
        manifests
            .iter()
            .any(|m| m.ends_with("_template/manifest.yaml"))
    );
    assert_all_valid("manifest", &manifests);
    assert_all_valid("config", &files_in(&repo().join("config")));
    for examples in ["cookbook", "dsl"] {
        assert_all_valid(
            "config",
            &files_in(&repo().join("tests/fixtures/pipelines").join(examples)),
        );
    }

    // The protocol, as the core writes it and as the shipped plugins answer.
    let t = TestDir::new("kit-protocol");
    t.fixture("request_dump");
    t.config("plugins:\n  request_dump: {enabled: true, config: {k: v}}\n");
    let r = t.run(&[
        "run",
        "request_dump",
        "handle",
        "--payload",
        r#"{"text":"hi"}"#,
        "--json",
    ]);
    assert_eq!(r.code, 0, "{r:#?}");
    let request = r.json()["result"].clone();
    assert_eq!(request["command"], json!("handle"), "{request}");
    let request_file = t.write("request.json", &request.to_string());
    assert_all_valid("request", &[request_file]);
    let mut responses = Vec::new();
    for (plugin, entry, commands) in [
        (
            "echo",
            "plugins/echo/run.sh",
            &["poll", "handle", "health"][..],
        ),
        (
            "_template",
            "plugins/_template/run.py",
            &["poll", "handle", "health", "nope"][..],
        ),
    ] {
        for command in commands {
            let mut req = request.clone();
            req["command"] = json!(command);
            let out = with_stdin(
                Command::new(repo().join(entry)).env("PATH", debian_path()),
                req.to_string().as_bytes(),
            );
            assert!(out.status.success(), "{plugin} {command}: {}", both(&out));
            responses.push(t.write(
                &format!("responses/{plugin}-{command}.json"),
                &String::from_utf8_lossy(&out.stdout),
            ));
        }
    }
    assert_all_valid("response", &responses);
    let bad = t.write("responses/bad.json", r#"{"status":"ok"}"#);
    assert!(!validate("response", &[bad])[0].1);
}

/// Copies a directory tree (`cp -R`, modes kept).
fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    let out = Command::new("cp")
        .arg("-R")
        .arg(src)
        .arg(dst)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", both(&out));
}

/// Runs `cmd` with `input` on stdin, to its end.
fn with_stdin(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// The Rust verdict on one corpus file: `plugin check` for a manifest (no
/// manifest finding), `config check` for a config or pipelines file (exit 0
/// and no unknown key, which the schemas refuse outright).
fn rust_accepts(kind: &str, file: &Path) -> (bool, String) {
    let t = TestDir::new("kit-corpus");
    if kind == "manifest" {
        let dir = t.path.join("plugins/probe");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(file, dir.join("manifest.yaml")).unwrap();
        t.write(
            "plugins/probe/run.sh",
            "#!/bin/sh\ncat >/dev/null\nprintf '%s\\n' '{\"status\":\"ok\",\"result\":\"ok\"}'\n",
        );
        std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let (_, report) = check(&dir, &[]);
        let bad: Vec<&Value> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["rule"] == "manifest.invalid")
            .collect();
        return (bad.is_empty(), format!("{bad:?}"));
    }
    t.echo();
    if kind == "config" {
        std::fs::copy(file, t.path.join("config.yaml")).unwrap();
    } else {
        t.config("plugins:\n  echo: {enabled: true}\ninclude: [pipelines.yaml]\n");
        std::fs::copy(file, t.path.join("pipelines.yaml")).unwrap();
    }
    let r = t.run(&["config", "check", "--json"]);
    let v = r.json();
    let unknown = v["findings"]
        .as_array()
        .map(|fs| {
            fs.iter().any(|f| {
                f["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("unknown key"))
            })
        })
        .unwrap_or(false);
    (r.code == 0 && !unknown, r.stdout.clone())
}

#[test]
fn schemas_and_the_rust_validators_agree_on_the_corpus() {
    let corpus = repo().join("tests/fixtures/schemas");
    let mut seen = 0;
    for kind in ["manifest", "config", "pipelines"] {
        for (verdict, expected) in [("good", true), ("bad", false)] {
            let files = files_in(&corpus.join(kind).join(verdict));
            assert!(files.len() >= 2, "{kind}/{verdict}: too few examples");
            for (file, schema_ok, errors) in validate(kind, &files) {
                let (rust_ok, why) = rust_accepts(kind, &file);
                let name = file.display();
                assert_eq!(schema_ok, expected, "schema on {name}: {errors}");
                assert_eq!(rust_ok, expected, "ductile on {name}: {why}");
                seen += 1;
            }
        }
    }
    assert!(seen >= 50, "{seen}");
}

#[test]
fn the_template_runs_in_a_pipeline_under_the_daemon() {
    let t = TestDir::new("kit-pipeline");
    let r = ductile(&[
        "plugin",
        "new",
        "notes",
        "--dir",
        &t.path.join("plugins").to_string_lossy(),
    ]);
    assert_eq!(r.code, 0, "{r:#?}");
    let watched = t.write("notes.txt", "one two three\n");
    t.config(&format!(
        "plugins:\n  notes:\n    enabled: true\n    config: {{path: {}}}\npipelines:\n  - name: count-notes\n    on: notes.changed\n    steps:\n      - id: count\n        uses: notes\n",
        watched.display()
    ));
    let r = t.run(&["run", "notes", "poll"]);
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(r.stdout.contains("notes.txt changed"), "{r:#?}");
    assert_eq!(
        t.text("SELECT fact_type FROM plugin_facts WHERE plugin_name = 'notes'"),
        Some("notes.snapshot".to_string())
    );
    let snapshot: Value = serde_json::from_str(
        &t.text("SELECT fact_json FROM plugin_facts WHERE plugin_name = 'notes'")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(snapshot["size"], json!(14));
    assert_eq!(snapshot["exists"], json!(true));

    let _daemon = t.start_with_env(&[("PATH", &debian_path())]);
    let done = || {
        t.count(
            "SELECT count(*) FROM job_queue WHERE plugin = 'notes' AND command = 'handle' AND status = 'succeeded'",
        ) == 1
    };
    t.wait_until(Duration::from_secs(30), "the routed handle succeeded", done);
    let jobs = t
        .run(&["job", "list", "--command", "handle", "--json"])
        .json();
    let id = jobs["jobs"][0]["job_id"].as_str().unwrap().to_string();
    let job = t.run(&["job", "show", &id, "--json"]).json();
    assert_eq!(job["result"]["result"], json!("counted 3 words"), "{job:#}");
    assert_eq!(
        job["result"]["events"][0]["payload"]["words"],
        json!(3),
        "{job:#}"
    );
}
