//! The config-editing verbs end to end: `config init` → `check --strict` →
//! start → stop; `config set`/`get` keeping every other byte; refused and
//! dry-run edits changing nothing; each management verb add → list → remove;
//! tokens created, scoped and revoked; secrets never printed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::http::{get, listening};
use crate::support::{Run, TestDir};

const LONG: Duration = Duration::from_secs(30);

/// Every file under `dir` (hidden ones too) with its bytes, the ledger left out.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().contains("ductile.db") {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

const PLUGINS: &str = "\
# Plugins, with comments that must survive edits.
plugins:
  echo:
    enabled: true   # on
    # the message
    config:
      message: \"hello\"   # trailing note
    schedules:
      - id: default
        every: 5m
";

/// echo configured in an included plugins.yaml with comments, plus tokens.yaml.
fn tree(tag: &str) -> TestDir {
    let dir = TestDir::new(tag);
    dir.echo();
    dir.config("# root\ninclude:\n  - plugins.yaml\n  - tokens.yaml\n");
    dir.write("plugins.yaml", PLUGINS);
    dir.write(
        "tokens.yaml",
        "tokens:\n  - name: hook\n    key: s3cret-value-0123456789\n    scopes: [jobs:ro]\n",
    );
    // Sealed, so every edit also proves the re-seal.
    dir.run(&["config", "lock"]).code(0);
    dir
}

fn ok(dir: &TestDir, args: &[&str]) -> Run {
    dir.run(args).code(0)
}

#[test]
fn init_then_strict_check_then_start_and_stop() {
    let dir = TestDir::new("cfgedit-init");
    let init = ok(&dir, &["config", "init", "--json"]);
    let key = init.json()["token"]["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("dtk_") && key.len() > 60, "{key}");
    for f in [
        "config.yaml",
        "plugins.yaml",
        "pipelines.yaml",
        "api.yaml",
        "tokens.yaml",
        "scopes/admin.json",
        "webhooks.yaml",
        ".checksums",
    ] {
        assert!(dir.path.join(f).is_file(), "{f} missing");
    }
    // The key lives only in the 0600 env file, never in the YAML.
    assert!(
        !std::fs::read_to_string(dir.path.join("tokens.yaml"))
            .unwrap()
            .contains(&key)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path.join(".env"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    ok(&dir, &["config", "check", "--strict"]);

    // A second init is refused and changes nothing.
    let before = snapshot(&dir.path);
    let again = dir.run(&["config", "init"]).code(1);
    assert!(
        again
            .error()
            .contains("already holds a config.yaml; pass --force"),
        "{again:?}"
    );
    assert_eq!(snapshot(&dir.path), before);

    // Editing the sealed starter re-seals it through `config lock`.
    let set = ok(
        &dir,
        &[
            "config",
            "set",
            "api.listen=127.0.0.1:0",
            "--apply",
            "--json",
        ],
    );
    assert_eq!(set.json()["resealed"], true, "{set:?}");
    ok(&dir, &["config", "check", "--strict"]);

    let daemon = dir.start();
    let api = listening(&daemon, "api.listen");
    assert_eq!(get(&api, "/jobs", Some(&key)).status, 200);
    assert_eq!(get(&api, "/jobs", None).status, 401);
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
}

#[test]
fn set_then_get_changes_only_the_value() {
    let dir = tree("cfgedit-set");
    let set = ok(
        &dir,
        &[
            "config",
            "set",
            "plugins.echo.config.message=hi there",
            "--apply",
        ],
    );
    assert!(
        set.stdout
            .contains("-      message: \"hello\"   # trailing note"),
        "{set:?}"
    );
    assert!(
        set.stdout
            .contains("+      message: \"hi there\"   # trailing note"),
        "{set:?}"
    );
    let after = std::fs::read_to_string(dir.path.join("plugins.yaml")).unwrap();
    assert_eq!(after, PLUGINS.replace("\"hello\"", "\"hi there\""));
    assert_eq!(
        std::fs::read_to_string(dir.path.join("plugins.yaml.bak")).unwrap(),
        PLUGINS
    );
    let got = ok(&dir, &["config", "get", "plugin:echo.config.message"]);
    assert_eq!(got.stdout, "hi there\n");
    let got = ok(&dir, &["config", "get", "plugins.echo.enabled", "--json"]).json();
    assert_eq!(got["value"], true);
    assert_eq!(got["line"], 4);
    assert!(got["file"].as_str().unwrap().ends_with("plugins.yaml"));
    assert_eq!(got["default"], false);
    // A key no file sets answers with the default the daemon runs with.
    let got = ok(
        &dir,
        &["config", "get", "service.shutdown_timeout", "--json"],
    )
    .json();
    assert_eq!(
        (got["value"].as_str(), got["default"].as_bool()),
        (Some("30s"), Some(true))
    );

    // A key that does not exist yet goes under its parent, in the same style.
    ok(
        &dir,
        &["config", "set", "plugin:echo.parallelism=1", "--apply"],
    );
    let after = std::fs::read_to_string(dir.path.join("plugins.yaml")).unwrap();
    assert_eq!(
        after,
        format!(
            "{}    parallelism: 1\n",
            PLUGINS.replace("\"hello\"", "\"hi there\"")
        )
    );
    assert_eq!(
        ok(&dir, &["config", "get", "plugins.echo.parallelism"]).stdout,
        "1\n"
    );
    let missing = dir.run(&["config", "get", "plugins.ecoh.enabled"]).code(1);
    assert_eq!(
        missing.error(),
        "`plugins.ecoh.enabled` is not in the config (no `ecoh` at `plugins`); did you mean `echo`?"
    );
}

#[test]
fn an_invalid_edit_is_refused_and_nothing_is_written() {
    let dir = tree("cfgedit-refuse");
    let before = snapshot(&dir.path);
    let bad = dir
        .run(&["config", "set", "plugins.echo.parallelism=0", "--apply"])
        .code(78);
    assert!(
        bad.error().starts_with("edit refused, nothing changed: ")
            && bad
                .error()
                .contains("plugins.echo.parallelism: must be between 1"),
        "{bad:?}"
    );
    assert_eq!(snapshot(&dir.path), before);
    // A typo'd key would only be a warning at load; an edit may not add one.
    let typo = dir
        .run(&["config", "set", "plugins.echo.enabeld=false", "--apply"])
        .code(78);
    assert!(
        typo.error()
            .contains("unknown key `enabeld`; did you mean `enabled`?"),
        "{typo:?}"
    );
    assert_eq!(snapshot(&dir.path), before);
    // Removing a plugin a route still names is refused too.
    ok(
        &dir,
        &[
            "config",
            "route",
            "add",
            "--from",
            "echo",
            "--event-type",
            "echo.poll",
            "--to",
            "echo",
        ],
    );
    let before = snapshot(&dir.path);
    let gone = dir.run(&["config", "plugin", "remove", "echo"]).code(78);
    assert!(
        gone.error().contains("is not a configured plugin"),
        "{gone:?}"
    );
    assert_eq!(snapshot(&dir.path), before);
    ok(&dir, &["config", "check", "--strict"]);
}

#[test]
fn dry_run_prints_the_diff_and_changes_nothing() {
    let dir = tree("cfgedit-dry");
    let before = snapshot(&dir.path);
    for args in [
        &["config", "set", "plugins.echo.enabled=false", "--dry-run"][..],
        &["config", "set", "plugins.echo.enabled=false"][..],
    ] {
        let run = ok(&dir, args);
        assert!(
            run.stdout
                .contains("--- a/plugins.yaml\n+++ b/plugins.yaml\n"),
            "{run:?}"
        );
        assert!(
            run.stdout
                .contains("-    enabled: true   # on\n+    enabled: false   # on\n"),
            "{run:?}"
        );
        assert!(run.stdout.contains("nothing written"), "{run:?}");
    }
    let add = ok(
        &dir,
        &[
            "config",
            "plugin",
            "add",
            "second",
            "--uses",
            "echo",
            "--set",
            "message=x",
            "--dry-run",
        ],
    );
    assert!(
        add.stdout
            .contains("+  second:\n+    uses: echo\n+    config:\n+      message: x\n"),
        "{add:?}"
    );
    let token = ok(
        &dir,
        &[
            "config",
            "token",
            "create",
            "--name",
            "ci",
            "--scopes",
            "jobs:ro",
            "--dry-run",
        ],
    );
    assert!(token.stdout.contains("+++ b/scopes/ci.json"), "{token:?}");
    assert!(
        token.stdout.contains("DUCTILE_TOKEN_CI=[REDACTED]"),
        "{token:?}"
    );
    assert!(!token.stdout.contains("dtk_"), "{token:?}");
    assert_eq!(snapshot(&dir.path), before);
    let both = dir
        .run(&["config", "set", "a=b", "--apply", "--dry-run"])
        .code(2);
    assert_eq!(
        both.error(),
        "`--apply` and `--dry-run` contradict each other; give one"
    );
}

#[test]
fn plugin_route_and_webhook_add_list_remove() {
    let dir = tree("cfgedit-manage");
    // plugin
    ok(
        &dir,
        &[
            "config",
            "plugin",
            "add",
            "second",
            "--uses",
            "echo",
            "--set",
            "message=two",
            "--set",
            "parallelism=1",
        ],
    );
    let list = ok(&dir, &["config", "plugin", "list", "--json"]).json();
    let second = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "second")
        .unwrap()
        .clone();
    assert_eq!(second["uses"], "echo");
    assert_eq!(second["loaded"], true);
    assert_eq!(second["file"], "plugins.yaml");
    assert_eq!(
        ok(&dir, &["config", "get", "plugin:second.config.message"]).stdout,
        "two\n"
    );
    // route
    ok(
        &dir,
        &[
            "config",
            "route",
            "add",
            "--from",
            "echo",
            "--event-type",
            "echo.poll",
            "--to",
            "second",
        ],
    );
    let routes = ok(&dir, &["config", "route", "list", "--json"]).json();
    assert_eq!(routes["routes"][0]["to"], "second");
    ok(
        &dir,
        &[
            "config",
            "route",
            "remove",
            "--from",
            "echo",
            "--event-type",
            "echo.poll",
            "--to",
            "second",
        ],
    );
    assert_eq!(
        ok(&dir, &["config", "route", "list", "--json"]).json()["routes"],
        serde_json::json!([])
    );
    let none = dir
        .run(&[
            "config",
            "route",
            "remove",
            "--from",
            "echo",
            "--event-type",
            "x",
            "--to",
            "second",
        ])
        .code(1);
    assert!(
        none.error().starts_with("no route echo --x--> second"),
        "{none:?}"
    );
    // webhook: endpoints need a listener first, or the edit adds a finding.
    let early = dir
        .run(&[
            "config",
            "webhook",
            "add",
            "--path",
            "/webhook/gh",
            "--plugin",
            "second",
            "--secret-ref",
            "hook",
        ])
        .code(78);
    assert!(
        early.error().contains("`webhooks.listen` is not set"),
        "{early:?}"
    );
    ok(
        &dir,
        &["config", "set", "webhooks.listen=127.0.0.1:0", "--apply"],
    );
    ok(
        &dir,
        &[
            "config",
            "webhook",
            "add",
            "--path",
            "/webhook/gh",
            "--plugin",
            "second",
            "--secret-ref",
            "hook",
        ],
    );
    let hooks = ok(&dir, &["config", "webhook", "list", "--json"]).json();
    assert_eq!(hooks["webhooks"][0]["name"], "gh");
    assert_eq!(hooks["webhooks"][0]["plugin"], "second");
    ok(&dir, &["config", "webhook", "remove", "gh"]);
    assert_eq!(
        ok(&dir, &["config", "webhook", "list", "--json"]).json()["webhooks"],
        serde_json::json!([])
    );
    ok(&dir, &["config", "plugin", "remove", "second"]);
    let list = ok(&dir, &["config", "plugin", "list", "--json"]).json();
    assert_eq!(list["plugins"].as_array().unwrap().len(), 1);
    // The files the verbs edited still read as the user wrote them elsewhere.
    let plugins = std::fs::read_to_string(dir.path.join("plugins.yaml")).unwrap();
    assert_eq!(plugins, PLUGINS);
    ok(&dir, &["config", "check", "--strict"]);
}

#[test]
fn tokens_are_created_scoped_and_revoked_and_their_keys_shown_once() {
    let dir = tree("cfgedit-token");
    let created = ok(
        &dir,
        &[
            "config",
            "token",
            "create",
            "--name",
            "ci",
            "--scopes",
            "jobs:ro,plugin:rw",
            "--json",
        ],
    )
    .json();
    let key = created["created"]["key"].as_str().unwrap().to_string();
    assert_eq!(created["written"], true);
    assert!(!created["diff"].as_str().unwrap().contains(&key));
    let list = ok(&dir, &["config", "token", "list", "--json"]);
    assert!(!list.stdout.contains(&key));
    let ci = list.json()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci")
        .unwrap()
        .clone();
    assert_eq!(ci["scopes"], serde_json::json!(["jobs:ro", "plugin:rw"]));
    assert_eq!(ci["scopes_file"], "scopes/ci.json");
    let scoped = ok(
        &dir,
        &["config", "scope", "set", "ci", "--scopes", "jobs:rw"],
    );
    assert!(scoped.stdout.contains("+    \"jobs:rw\""), "{scoped:?}");
    let scopes = ok(&dir, &["config", "scope", "list", "--json"]).json();
    let ci = scopes["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci")
        .unwrap()
        .clone();
    assert_eq!(ci["scopes"], serde_json::json!(["jobs:rw"]));
    for args in [
        &["config", "show"][..],
        &["config", "show", "--effective", "--json"][..],
        &["config", "get", "token:ci.key"][..],
    ] {
        let out = ok(&dir, args);
        assert!(!out.stdout.contains(&key), "{args:?} printed the key");
    }
    ok(&dir, &["config", "check", "--strict"]);
    ok(&dir, &["config", "token", "revoke", "ci"]);
    let list = ok(&dir, &["config", "token", "list", "--json"]).json();
    assert!(
        list["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["name"] != "ci")
    );
    assert!(!dir.path.join("scopes/ci.json").exists());
    assert!(
        !std::fs::read_to_string(dir.path.join(".env"))
            .unwrap()
            .contains(&key)
    );
    ok(&dir, &["config", "check", "--strict"]);
}

#[test]
fn show_and_get_never_print_a_secret() {
    let dir = tree("cfgedit-secret");
    dir.write(
        "plugins.yaml",
        &PLUGINS.replace(
            "message: \"hello\"",
            "message: \"hello\"\n      api_key: plugin-secret-987654",
        ),
    );
    for args in [
        &["config", "show"][..],
        &["config", "show", "--json"][..],
        &["config", "show", "--effective"][..],
        &["config", "show", "plugin:*"][..],
        &["config", "show", "plugin:echo", "--json"][..],
        &["config", "show", "token:hook"][..],
        &["config", "get", "tokens[0].key"][..],
        &["config", "get", "tokens"][..],
        &["config", "get", "plugin:echo.config.api_key", "--json"][..],
        &[
            "config",
            "set",
            "plugin:echo.config.api_key=new-secret-value-1",
            "--dry-run",
        ][..],
    ] {
        let out = ok(&dir, args);
        for secret in [
            "s3cret-value-0123456789",
            "plugin-secret-987654",
            "new-secret-value-1",
        ] {
            assert!(
                !out.stdout.contains(secret),
                "{args:?} printed {secret}: {}",
                out.stdout
            );
        }
        assert!(
            out.stdout.contains("[REDACTED]"),
            "{args:?}: {}",
            out.stdout
        );
    }
    let shown = ok(&dir, &["config", "show", "token:hook", "--json"]).json();
    assert_eq!(shown["name"], "hook");
    assert_eq!(shown["key"], "[REDACTED]");
    // A config that does not validate is still shown as written, secrets masked.
    dir.write(
        "plugins.yaml",
        &PLUGINS.replace("every: 5m", "every: never"),
    );
    assert_ne!(dir.run(&["config", "check"]).code, 0);
    let broken = ok(&dir, &["config", "show", "--json"]).json();
    assert_eq!(broken["plugins"]["echo"]["schedules"][0]["every"], "never");
    assert_eq!(broken["tokens"][0]["key"], "[REDACTED]");
    let unknown = dir.run(&["config", "show", "pipeline:nope"]).code(1);
    assert!(
        unknown
            .error()
            .starts_with("`pipeline:nope` is not in the config"),
        "{unknown:?}"
    );
}

#[test]
fn usage_errors_say_what_is_missing() {
    let dir = tree("cfgedit-usage");
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["config", "set", "plugins.echo.enabled"],
            2,
            "`plugins.echo.enabled` is not `<path>=<value>`; usage: ductile config set <path>=<value> [--dry-run|--apply]",
        ),
        (
            &["config", "token", "create", "--scopes", "jobs:ro"],
            2,
            "`ductile config token create` needs `--name`",
        ),
        (
            &["config", "plugin"],
            2,
            "`ductile config plugin` needs a verb: list, add, remove",
        ),
        (
            &["config", "plugin", "ad", "x"],
            2,
            "unknown verb `ad` for `ductile config plugin`; did you mean `config plugin add`?",
        ),
        (
            &["config", "get", "thing:x"],
            2,
            "unknown entity `thing:`; use one of `plugin:`, `pipeline:`, `route:`, `token:`, `webhook:`",
        ),
        (
            &["config", "plugin", "add", "echo"],
            1,
            "plugin `echo` is already configured; change it with `ductile config set plugin:echo.KEY=VALUE`",
        ),
        (
            &["config", "plugin", "remove", "nope"],
            1,
            "no plugin `nope` is configured",
        ),
        (&["config", "token", "revoke", "nope"], 1, "no token `nope`"),
    ];
    let before = snapshot(&dir.path);
    for (args, code, message) in cases {
        let run = dir.run(args).code(*code);
        assert_eq!(run.error(), *message, "{args:?}");
    }
    // Under --json the error is the usual object on stdout.
    let run = dir
        .run(&["config", "token", "revoke", "nope", "--json"])
        .code(1);
    assert_eq!(
        run.json(),
        serde_json::json!({"error": "no token `nope`", "exit_code": 1})
    );
    assert_eq!(snapshot(&dir.path), before);
}
