use super::plugins::{PLUGIN_KEYS, SCHEDULE_KEYS};
use super::*;
use crate::config::temp_tree::TempTree;
use crate::config::{Breaker, Loaded, Retry, ScheduleConf, Synchronous, Timeouts};
use std::path::PathBuf;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Loads `text` as the whole config.
fn load(text: &str) -> (TempTree, Loaded) {
    let tree = TempTree::new();
    tree.write("config.yaml", text);
    let loaded = tree.load().unwrap();
    (tree, loaded)
}

/// Asserts that `text` is refused with `message` at `path` in config.yaml.
fn check(text: &str, path: &str, message: &str) {
    let tree = TempTree::new();
    tree.write("config.yaml", text);
    assert_eq!(
        tree.error(&[]),
        format!("{}: {path}: {message}", tree.path("config.yaml").display()),
        "{text}"
    );
}

/// Asserts that `text` loads with exactly these warning messages (path: message).
fn warns(text: &str, expected: &[&str]) {
    let (tree, loaded) = load(text);
    let prefix = format!("{}: ", tree.path("config.yaml").display());
    let got: Vec<String> = loaded
        .warnings
        .iter()
        .map(|w| w.to_string().strip_prefix(&prefix).unwrap().to_string())
        .collect();
    assert_eq!(got, expected, "{text}");
}

// ---- defaults ----

#[test]
fn an_empty_config_gets_every_default() {
    let (tree, loaded) = load("");
    assert!(loaded.warnings.is_empty());
    let config = loaded.config;
    assert_eq!(config.dir, tree.dir);
    let service = &config.service;
    assert_eq!(service.name, "ductile");
    assert_eq!(service.tick_interval, secs(60));
    assert_eq!(service.log_level, "info");
    assert_eq!(service.dedupe_ttl, secs(86_400));
    assert_eq!(service.job_log_retention, secs(30 * 86_400));
    assert_eq!(service.job_queue_retention, secs(86_400));
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(service.max_workers, cpus.saturating_sub(1).max(1));
    assert!(!service.strict_mode);
    assert!(!service.allow_symlinks);
    assert!(service.plugin_env_passthrough.is_empty());
    assert_eq!(service.shutdown_timeout, secs(30));
    assert_eq!(config.plugin_roots, [tree.path("plugins")]);
    assert_eq!(config.state.path, tree.path("ductile.db"));
    assert_eq!(config.state.synchronous, Synchronous::Normal);
    assert!(!config.api.enabled);
    assert_eq!(config.api.listen, "127.0.0.1:8080");
    assert_eq!(config.api.extra, serde_json::json!({}));
    assert!(config.api.auth_tokens.is_empty());
    assert_eq!(config.api.max_body_size, 1024 * 1024);
    assert!(!config.api.metrics_public);
    assert_eq!(config.api.threads, 4);
    assert_eq!(config.api.max_connections, 256);
    assert_eq!(config.api.max_event_streams, 16);
    assert!(config.plugins.is_empty());
    assert!(config.tokens.is_empty());
    assert!(config.webhooks.listen.is_none());
    assert!(config.webhooks.endpoints.is_empty());
    assert!(config.extra.is_empty());
}

#[test]
fn a_bare_plugin_gets_every_default() {
    let (_tree, loaded) = load("plugins:\n  echo:\n");
    let echo = loaded.config.plugin("echo").unwrap();
    assert_eq!(echo.name, "echo");
    assert_eq!(echo.uses, None);
    assert!(echo.enabled);
    assert_eq!(echo.parallelism, None);
    assert_eq!(echo.timeouts, Timeouts::default());
    assert_eq!(echo.timeouts.poll, secs(60));
    assert_eq!(echo.timeouts.handle, secs(120));
    assert_eq!(echo.timeouts.health, secs(10));
    assert_eq!(echo.timeouts.init, secs(30));
    assert_eq!(echo.timeouts.default, secs(60));
    assert_eq!(echo.retry.max_attempts, 4);
    assert_eq!(echo.retry.backoff_base, secs(30));
    assert_eq!(echo.circuit_breaker.threshold, 3);
    assert_eq!(echo.circuit_breaker.reset_after, secs(1800));
    assert_eq!(echo.max_outstanding_polls, 1);
    assert!(!echo.notify_on_complete);
    assert!(echo.schedules.is_empty());
    assert_eq!(echo.config, serde_json::json!({}));
    assert!(loaded.config.plugin("nope").is_none());
}

#[test]
fn a_bare_schedule_gets_every_default() {
    let (tree, loaded) = load("plugins:\n  echo:\n    schedules:\n      - every: 5m\n");
    let schedule = &loaded.config.plugin("echo").unwrap().schedules[0];
    assert_eq!(
        schedule,
        &ScheduleConf {
            id: "default".to_string(),
            command: "poll".to_string(),
            payload: serde_json::json!({}),
            every: Some("5m".to_string()),
            origin: "plugins.echo.schedules[0]".to_string(),
            file: tree.path("config.yaml"),
            ..ScheduleConf::default()
        }
    );
}

// ---- values ----

#[test]
fn reads_every_service_key() {
    let (_tree, loaded) = load(
        "service:\n  name: home-primary\n  tick_interval: 30s\n  log_level: debug\n  log_format: json\n  dedupe_ttl: 1h\n  job_log_retention: 7d\n  job_queue_retention: 2h\n  max_workers: 3\n  strict_mode: true\n  allow_symlinks: true\n  plugin_env_passthrough: [TZ, LANG]\n  shutdown_timeout: 90\n  tcc_paths: [/x]\n  preferred_window: x\n",
    );
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let service = loaded.config.service;
    assert_eq!(service.name, "home-primary");
    assert_eq!(service.tick_interval, secs(30));
    assert_eq!(service.log_level, "debug");
    assert_eq!(service.dedupe_ttl, secs(3600));
    assert_eq!(service.job_log_retention, secs(7 * 86_400));
    assert_eq!(service.job_queue_retention, secs(7200));
    assert_eq!(service.max_workers, 3);
    assert!(service.strict_mode);
    assert!(service.allow_symlinks);
    assert_eq!(service.plugin_env_passthrough, ["TZ", "LANG"]);
    assert_eq!(service.shutdown_timeout, secs(90));
}

#[test]
fn resolves_state_and_plugin_roots_against_the_config_dir() {
    let (tree, loaded) = load(
        "state:\n  path: ./data/state.db\n  synchronous: full\nplugin_roots:\n  - ./plugins\n  - plugins\n  - /opt/ductile/plugins\n  - ../shared\n  - /opt/ductile/plugins/\n",
    );
    let config = loaded.config;
    assert_eq!(config.state.path, tree.path("data/state.db"));
    assert_eq!(config.state.synchronous, Synchronous::Full);
    assert_eq!(
        config.plugin_roots,
        [
            tree.path("plugins"),
            PathBuf::from("/opt/ductile/plugins"),
            tree.dir.parent().unwrap().join("shared"),
        ]
    );
}

#[test]
fn expands_home_in_paths() {
    let Ok(home) = std::env::var("HOME") else {
        return;
    };
    let (_tree, loaded) = load("state: {path: ~/d.db}\nplugin_roots: [\"~/p\"]\n");
    assert_eq!(loaded.config.state.path, Path::new(&home).join("d.db"));
    assert_eq!(loaded.config.plugin_roots, [Path::new(&home).join("p")]);
}

#[test]
fn keeps_later_sections_uninterpreted() {
    let (_tree, loaded) =
        load("routes: [{from: a, event_type: e, to: b}]\nrelay: {x: 1}\npipelines: []\n");
    assert!(loaded.warnings.is_empty());
    let extra = loaded.config.extra;
    let keys: Vec<&str> = extra.keys().map(String::as_str).collect();
    // `routes`, `pipelines`, `instances` and `remote_ingress` are typed now.
    assert_eq!(keys, ["relay"]);
    assert_eq!(extra["relay"], serde_json::json!({"x": 1}));
}

#[test]
fn reads_every_plugin_key() {
    let (_tree, loaded) = load(
        "service: {max_workers: 4}\nplugins:\n  slack:\n    uses: notify\n    enabled: false\n    parallelism: 2\n    timeouts: {poll: 300s, handle: 5m, deploy: 10m}\n    retry: {max_attempts: 5, backoff_base: 1m}\n    circuit_breaker: {threshold: 6, reset_after: 1h}\n    max_outstanding_polls: 3\n    notify_on_complete: true\n    config: {channel: '#ops', n: 1.5, 7: seven}\n",
    );
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let slack = loaded.config.plugin("slack").unwrap();
    assert_eq!(slack.uses.as_deref(), Some("notify"));
    assert!(!slack.enabled);
    assert_eq!(slack.parallelism, Some(2));
    assert_eq!(slack.timeouts.poll, secs(300));
    assert_eq!(slack.timeouts.handle, secs(300));
    assert_eq!(slack.timeouts.health, secs(10));
    assert_eq!(slack.timeouts.for_command("deploy"), secs(600));
    assert_eq!(slack.timeouts.for_command("other"), secs(60));
    assert_eq!(
        slack.retry,
        Retry {
            max_attempts: 5,
            backoff_base: secs(60)
        }
    );
    assert_eq!(
        slack.circuit_breaker,
        Breaker {
            threshold: 6,
            reset_after: secs(3600)
        }
    );
    assert_eq!(slack.max_outstanding_polls, 3);
    assert!(slack.notify_on_complete);
    assert_eq!(
        slack.config,
        serde_json::json!({"channel": "#ops", "n": 1.5, "7": "seven"})
    );
}

#[test]
fn plugin_timeout_is_the_default_for_unset_commands() {
    let (_tree, loaded) =
        load("plugins:\n  slow:\n    timeout: 15s\n    timeouts: {handle: 5m, sync: 2m}\n");
    let timeouts = &loaded.config.plugin("slow").unwrap().timeouts;
    assert_eq!(timeouts.default, secs(15));
    assert_eq!(timeouts.poll, secs(15));
    assert_eq!(timeouts.handle, secs(300));
    assert_eq!(timeouts.health, secs(15));
    assert_eq!(timeouts.init, secs(15));
    assert_eq!(timeouts.for_command("sync"), secs(120));
    assert_eq!(timeouts.for_command("custom"), secs(15));
}

#[test]
fn max_attempts_shorthand_yields_to_retry() {
    let (_tree, loaded) = load(
        "plugins:\n  a: {max_attempts: 2}\n  b: {max_attempts: 2, retry: {max_attempts: 7}}\n",
    );
    assert_eq!(loaded.config.plugin("a").unwrap().retry.max_attempts, 2);
    assert_eq!(loaded.config.plugin("b").unwrap().retry.max_attempts, 7);
}

#[test]
fn reads_every_schedule_key() {
    let (_tree, loaded) = load(
        "plugins:\n  example:\n    schedules:\n      - id: hourly\n        command: sync\n        every: 1h\n        jitter: 30s\n        catch_up: run_once\n        if_running: queue\n        only_between: \"08:00-18:00\"\n        timezone: Australia/Sydney\n        not_on: [saturday, 0, 7]\n        preferred_window: x\n        payload:\n          source: scheduler\n      - {id: once, at: '2026-03-15T14:00:00Z'}\n      - {id: later, after: 10m, not_on: sunday}\n      - {id: c, cron: '0 9 * * 1-5', catch_up: run_all, if_running: cancel}\n",
    );
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let schedules = &loaded.config.plugin("example").unwrap().schedules;
    let hourly = &schedules[0];
    assert_eq!(hourly.id, "hourly");
    assert_eq!(hourly.command, "sync");
    assert_eq!(hourly.every.as_deref(), Some("1h"));
    assert_eq!(hourly.jitter.as_deref(), Some("30s"));
    assert_eq!(hourly.catch_up.as_deref(), Some("run_once"));
    assert_eq!(hourly.if_running.as_deref(), Some("queue"));
    assert_eq!(hourly.only_between.as_deref(), Some("08:00-18:00"));
    assert_eq!(hourly.timezone.as_deref(), Some("Australia/Sydney"));
    assert_eq!(hourly.not_on, ["saturday", "0", "7"]);
    assert_eq!(hourly.payload, serde_json::json!({"source": "scheduler"}));
    assert_eq!(schedules[1].at.as_deref(), Some("2026-03-15T14:00:00Z"));
    assert_eq!(schedules[2].after.as_deref(), Some("10m"));
    assert_eq!(schedules[2].not_on, ["sunday"]);
    assert_eq!(schedules[3].cron.as_deref(), Some("0 9 * * 1-5"));
    assert_eq!(schedules[3].catch_up.as_deref(), Some("run_all"));
    assert_eq!(schedules[3].if_running.as_deref(), Some("cancel"));
}

#[test]
fn cron_and_every_syntax_is_left_to_the_scheduler() {
    let (_tree, loaded) = load(
        "plugins:\n  p:\n    schedules:\n      - {id: a, every: fortnightly}\n      - {id: b, cron: 'not cron'}\n",
    );
    assert_eq!(loaded.config.plugin("p").unwrap().schedules.len(), 2);
}

#[test]
fn scalars_may_be_quoted_numbers() {
    let (_tree, loaded) = load("service: {max_workers: \"2\"}\nplugins: {p: {parallelism: '2'}}\n");
    assert_eq!(loaded.config.service.max_workers, 2);
    assert_eq!(loaded.config.plugin("p").unwrap().parallelism, Some(2));
}

// ---- unknown keys ----

#[test]
fn unknown_keys_warn_with_suggestions() {
    warns(
        "x-anchor: &a {k: 1}\nservce: {}\nfoo: 1\nservice: {tick_intervl: 5s, tcc_paths: []}\nstate: {pth: x}\nplugins:\n  echo:\n    shedules: []\n    tiemout: 5s\n    retry: {max_attempt: 2}\n    circuit_breaker: {treshold: 2}\n    config: {anything: goes}\n    schedules:\n      - {every: 5m, jiter: 1s, zzz: 1}\n",
        &[
            "servce: unknown key `servce`; did you mean `service`?",
            "foo: unknown key `foo`",
            "service.tick_intervl: unknown key `tick_intervl`; did you mean `tick_interval`?",
            "state.pth: unknown key `pth`; did you mean `path`?",
            "plugins.echo.shedules: unknown key `shedules`; did you mean `schedules`?",
            "plugins.echo.tiemout: unknown key `tiemout`; did you mean `timeout`?",
            "plugins.echo.retry.max_attempt: unknown key `max_attempt`; did you mean `max_attempts`?",
            "plugins.echo.circuit_breaker.treshold: unknown key `treshold`; did you mean `threshold`?",
            "plugins.echo.schedules[0].jiter: unknown key `jiter`; did you mean `jitter`?",
            "plugins.echo.schedules[0].zzz: unknown key `zzz`",
        ],
    );
}

#[test]
fn unknown_key_warnings_name_the_file_that_set_them() {
    let tree = TempTree::new();
    tree.write("config.yaml", "include: [p.yaml]\nplugins: {echo: {}}\n");
    tree.write("p.yaml", "plugins:\n  echo:\n    shedules: []\n");
    let loaded = tree.load().unwrap();
    assert_eq!(
        loaded.warnings,
        [Finding {
            file: tree.path("p.yaml"),
            path: "plugins.echo.shedules".to_string(),
            message: "unknown key `shedules`; did you mean `schedules`?".to_string(),
        }]
    );
}

#[test]
fn suggests_only_near_keys() {
    assert_eq!(crate::suggest::closest("shedules", SCHEDULE_KEYS), None);
    assert_eq!(
        crate::suggest::closest("shedules", PLUGIN_KEYS),
        Some("schedules")
    );
    assert_eq!(crate::suggest::closest("id", &["at"]), None);
    assert_eq!(
        crate::suggest::closest("cronn", SCHEDULE_KEYS),
        Some("cron")
    );
    assert_eq!(
        crate::suggest::closest("completely_different", PLUGIN_KEYS),
        None
    );
    assert_eq!(crate::suggest::edit_distance("tiemout", "timeout"), 1);
    assert_eq!(crate::suggest::edit_distance("", "abc"), 3);
    assert_eq!(crate::suggest::edit_distance("kitten", "sitting"), 3);
}

// ---- rules ----

#[test]
fn durations_must_parse() {
    check(
        "service: {tick_interval: 5x}\n",
        "service.tick_interval",
        "invalid duration `5x`: unknown unit `x` (use ms, s, m, h, d or w)",
    );
    check(
        "service: {dedupe_ttl: [1]}\n",
        "service.dedupe_ttl",
        "expected a duration such as `30s`, found a list",
    );
    check(
        "plugins: {p: {timeouts: {poll: soon}}}\n",
        "plugins.p.timeouts.poll",
        "invalid duration `soon`: expected a number before `soon`",
    );
    check(
        "plugins: {p: {schedules: [{after: later}]}}\n",
        "plugins.p.schedules[0].after",
        "invalid duration `later`: expected a number before `later`",
    );
    check(
        "plugins: {p: {schedules: [{every: 5m, jitter: 3q}]}}\n",
        "plugins.p.schedules[0].jitter",
        "invalid duration `3q`: unknown unit `q` (use ms, s, m, h, d or w)",
    );
    check(
        "service: {tick_interval: 0s}\n",
        "service.tick_interval",
        "must be between 100ms and 1h, got 0s",
    );
}

#[test]
fn counts_are_whole_non_negative_numbers() {
    check(
        "service: {max_workers: -2}\n",
        "service.max_workers",
        "expected a non-negative integer, found `-2`",
    );
    check(
        "service: {max_workers: 2.5}\n",
        "service.max_workers",
        "expected a non-negative integer, found `2.5`",
    );
    check(
        "plugins: {p: {max_outstanding_polls: 99999999999999999999}}\n",
        "plugins.p.max_outstanding_polls",
        "expected a non-negative integer, found `1e20`",
    );
}

#[test]
fn parallelism_is_capped_by_max_workers() {
    check(
        "service: {max_workers: 2}\nplugins: {p: {parallelism: 3}}\n",
        "plugins.p.parallelism",
        "must be between 1 and service.max_workers (2), got 3",
    );
}

#[test]
fn job_queue_retention_covers_dedupe_ttl() {
    check(
        "service: {dedupe_ttl: 48h}\n",
        "service.job_queue_retention",
        "must be at least dedupe_ttl (2d), got 1d",
    );
}

#[test]
fn plugin_config_must_be_a_mapping() {
    check(
        "plugins: {p: {config: [a, b]}}\n",
        "plugins.p.config",
        "expected a mapping, found a list",
    );
    check(
        "plugins: {p: 3}\n",
        "plugins.p",
        "expected a mapping, found `3`",
    );
    check(
        "plugins: [a]\n",
        "plugins",
        "expected a mapping, found a list",
    );
}

#[test]
fn schedules_need_exactly_one_kind() {
    check(
        "plugins: {p: {schedules: [{id: a}]}}\n",
        "plugins.p.schedules[0]",
        "schedule needs one of `every`, `cron`, `at` or `after`",
    );
    check(
        "plugins: {p: {schedules: [{every: 5m, cron: '* * * * *', at: x}]}}\n",
        "plugins.p.schedules[0]",
        "schedule sets `every` and `cron` and `at`; use exactly one of `every`, `cron`, `at` or `after`",
    );
    check(
        "plugins: {p: {schedules: {every: 5m}}}\n",
        "plugins.p.schedules",
        "expected a list of schedules, found a mapping",
    );
}

#[test]
fn schedules_may_not_run_handle() {
    check(
        "plugins: {p: {schedules: [{every: 5m, command: handle}]}}\n",
        "plugins.p.schedules[0].command",
        "handle jobs need an event; schedules may not run handle",
    );
}

#[test]
fn schedule_ids_are_unique_within_a_plugin() {
    check(
        "plugins: {p: {schedules: [{every: 5m}, {id: x, every: 1h}, {cron: '* * * * *'}]}}\n",
        "plugins.p.schedules[2].id",
        "duplicate schedule id `default` (also used by plugins.p.schedules[0])",
    );
    let (_tree, loaded) =
        load("plugins:\n  p: {schedules: [{every: 5m}]}\n  q: {schedules: [{every: 5m}]}\n");
    assert_eq!(loaded.config.plugins.len(), 2);
}

#[test]
fn schedule_policies_are_checked() {
    check(
        "plugins: {p: {schedules: [{every: 5m, catch_up: sometimes}]}}\n",
        "plugins.p.schedules[0].catch_up",
        "invalid catch_up `sometimes`: expected skip, run_once or run_all",
    );
    check(
        "plugins: {p: {schedules: [{every: 5m, if_running: wait}]}}\n",
        "plugins.p.schedules[0].if_running",
        "invalid if_running `wait`: expected skip, queue or cancel",
    );
    check(
        "plugins: {p: {schedules: [{every: 5m, not_on: [monday, [1]]}]}}\n",
        "plugins.p.schedules[0].not_on[1]",
        "expected a weekday name or number, found a list",
    );
    check(
        "plugins: {p: {schedules: [{every: 5m, not_on: [1.5]}]}}\n",
        "plugins.p.schedules[0].not_on[0]",
        "expected a weekday name or number, found `1.5`",
    );
    check(
        "plugins: {p: {schedules: [{every: 5m, payload: [1]}]}}\n",
        "plugins.p.schedules[0].payload",
        "expected a mapping, found a list",
    );
    check(
        "plugins: {p: {schedules: [5m]}}\n",
        "plugins.p.schedules[0]",
        "expected a mapping, found `5m`",
    );
}

#[test]
fn synchronous_is_normal_or_full() {
    check(
        "state: {synchronous: fast}\n",
        "state.synchronous",
        "invalid synchronous `fast`: expected normal or full",
    );
    let (_tree, loaded) = load("state: {synchronous: FULL}\n");
    assert_eq!(loaded.config.state.synchronous, Synchronous::Full);
}

#[test]
fn uses_may_not_name_itself() {
    check(
        "plugins: {echo: {uses: echo}}\n",
        "plugins.echo.uses",
        "plugin `echo` cannot use itself; name the base plugin",
    );
}

#[test]
fn types_are_checked() {
    check(
        "plugins: {p: {enabled: yes}}\n",
        "plugins.p.enabled",
        "expected true or false, found `yes`",
    );
    check(
        "service: {name: {a: 1}}\n",
        "service.name",
        "expected a string, found a mapping",
    );
    check(
        "service: {plugin_env_passthrough: TZ}\n",
        "service.plugin_env_passthrough",
        "expected a list, found `TZ`",
    );
    check("service: 3\n", "service", "expected a mapping, found `3`");
    check(
        "plugins: {p: {config: {k: .nan}}}\n",
        "plugins.p.config.k",
        "number `.nan` has no JSON form",
    );
    check(
        "relay: [{? [a, b] : c}]\n",
        "relay[0]",
        "mapping keys must be strings, numbers or booleans",
    );
}

#[test]
fn errors_name_the_file_that_set_the_value() {
    let tree = TempTree::new();
    tree.write("config.yaml", "include: [s.yaml]\nplugins: {p: {}}\n");
    tree.write(
        "s.yaml",
        "plugins:\n  p:\n    schedules:\n      - {every: 5m, command: handle}\n",
    );
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}: plugins.p.schedules[0].command: handle jobs need an event; schedules may not run handle",
            tree.path("s.yaml").display()
        )
    );
}

#[test]
fn an_unset_variable_inside_plugin_config_is_an_error() {
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        "plugins:\n  p:\n    config:\n      nested:\n        key: \"${DUCTILE_TEST_PLUGIN_SECRET}\"\n",
    );
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}:5: environment variable `DUCTILE_TEST_PLUGIN_SECRET` is not set",
            tree.path("config.yaml").display()
        )
    );
    let loaded = tree
        .load_with(&[("DUCTILE_TEST_PLUGIN_SECRET", "s3cret")])
        .unwrap();
    assert_eq!(
        loaded.config.plugin("p").unwrap().config,
        serde_json::json!({"nested": {"key": "s3cret"}})
    );
}

mod pipelines;
mod ranges;
mod relay;
mod surfaces;
