//! Every numeric and duration key against its range, the other closed sets of
//! values, and keys whose feature has not landed.

use super::*;

/// One numeric or duration key: the config that sets it to `{}`, its bounds
/// (accepted) and a value beyond each (refused), as written in the YAML.
struct Bounded {
    path: &'static str,
    yaml: &'static str,
    range: &'static str,
    lowest: &'static str,
    highest: &'static str,
    below: Option<&'static str>,
    above: &'static str,
}

const BOUNDED: &[Bounded] = &[
    Bounded {
        path: "service.max_workers",
        yaml: "service: {max_workers: {}}",
        range: "1 and 256",
        lowest: "1",
        highest: "256",
        below: Some("0"),
        above: "257",
    },
    Bounded {
        path: "service.max_response_events",
        yaml: "service: {max_response_events: {}}",
        range: "1 and 100000",
        lowest: "1",
        highest: "100000",
        below: Some("0"),
        above: "100001",
    },
    Bounded {
        path: "service.tick_interval",
        yaml: "service: {tick_interval: {}}",
        range: "100ms and 1h",
        lowest: "100ms",
        highest: "1h",
        below: Some("99ms"),
        above: "3601",
    },
    Bounded {
        path: "service.dedupe_ttl",
        yaml: "service: {dedupe_ttl: {}, job_queue_retention: 3650d}",
        range: "1s and 365d",
        lowest: "1s",
        highest: "365d",
        below: Some("999ms"),
        above: "365d1s",
    },
    Bounded {
        path: "service.job_log_retention",
        yaml: "service: {job_log_retention: {}}",
        range: "1h and 3650d",
        lowest: "1h",
        highest: "3650d",
        below: Some("59m59s"),
        above: "315360001",
    },
    Bounded {
        path: "service.job_queue_retention",
        yaml: "service: {job_queue_retention: {}, dedupe_ttl: 1s}",
        range: "1h and 3650d",
        lowest: "3600",
        highest: "3650d",
        below: Some("3599"),
        above: "3651d",
    },
    Bounded {
        path: "service.shutdown_timeout",
        yaml: "service: {shutdown_timeout: {}}",
        range: "0s and 1d",
        lowest: "0s",
        highest: "24h",
        below: None,
        above: "24h1ms",
    },
    Bounded {
        path: "plugins.p.parallelism",
        yaml: "service: {max_workers: 256}\nplugins: {p: {parallelism: {}}}",
        range: "1 and service.max_workers (256)",
        lowest: "1",
        highest: "256",
        below: Some("0"),
        above: "257",
    },
    Bounded {
        path: "plugins.p.timeout",
        yaml: "plugins: {p: {timeout: {}}}",
        range: "1s and 1d",
        lowest: "1s",
        highest: "1d",
        below: Some("999ms"),
        above: "86401",
    },
    Bounded {
        path: "plugins.p.keep_warm",
        yaml: "plugins: {p: {keep_warm: {}}}",
        range: "1s and 1d",
        lowest: "1s",
        highest: "24h",
        below: Some("500ms"),
        above: "1d1s",
    },
    Bounded {
        path: "plugins.p.timeouts.poll",
        yaml: "plugins: {p: {timeouts: {poll: {}}}}",
        range: "1s and 1d",
        lowest: "1",
        highest: "24h",
        below: Some("0s"),
        above: "25h",
    },
    Bounded {
        path: "plugins.p.timeouts.handle",
        yaml: "plugins: {p: {timeouts: {handle: {}}}}",
        range: "1s and 1d",
        lowest: "1s",
        highest: "24h",
        below: Some("0"),
        above: "1d1s",
    },
    Bounded {
        path: "plugins.p.timeouts.health",
        yaml: "plugins: {p: {timeouts: {health: {}}}}",
        range: "1s and 1d",
        lowest: "1000ms",
        highest: "1440m",
        below: Some("1ns"),
        above: "1441m",
    },
    Bounded {
        path: "plugins.p.timeouts.init",
        yaml: "plugins: {p: {timeouts: {init: {}}}}",
        range: "1s and 1d",
        lowest: "1s",
        highest: "24h",
        below: Some("500ms"),
        above: "2d",
    },
    Bounded {
        path: "plugins.p.timeouts.deploy",
        yaml: "plugins: {p: {timeouts: {deploy: {}}}}",
        range: "1s and 1d",
        lowest: "1s",
        highest: "24h",
        below: Some("0s"),
        above: "1w",
    },
    Bounded {
        path: "plugins.p.retry.max_attempts",
        yaml: "plugins: {p: {retry: {max_attempts: {}}}}",
        range: "1 and 100",
        lowest: "1",
        highest: "100",
        below: Some("0"),
        above: "101",
    },
    Bounded {
        path: "plugins.p.max_attempts",
        yaml: "plugins: {p: {max_attempts: {}}}",
        range: "1 and 100",
        lowest: "1",
        highest: "100",
        below: Some("0"),
        above: "101",
    },
    Bounded {
        path: "plugins.p.retry.backoff_base",
        yaml: "plugins: {p: {retry: {backoff_base: {}}}}",
        range: "100ms and 1d",
        lowest: "100ms",
        highest: "24h",
        below: Some("99ms"),
        above: "24h1s",
    },
    Bounded {
        path: "plugins.p.circuit_breaker.threshold",
        yaml: "plugins: {p: {circuit_breaker: {threshold: {}}}}",
        range: "1 and 1000",
        lowest: "1",
        highest: "1000",
        below: Some("0"),
        above: "1001",
    },
    Bounded {
        path: "plugins.p.circuit_breaker.reset_after",
        yaml: "plugins: {p: {circuit_breaker: {reset_after: {}}}}",
        range: "1s and 30d",
        lowest: "1s",
        highest: "30d",
        below: Some("0s"),
        above: "31d",
    },
    Bounded {
        path: "plugins.p.max_outstanding_polls",
        yaml: "plugins: {p: {max_outstanding_polls: {}}}",
        range: "1 and 1000",
        lowest: "1",
        highest: "1000",
        below: Some("0"),
        above: "1001",
    },
    Bounded {
        path: "plugins.p.schedules[0].every",
        yaml: "plugins: {p: {schedules: [{every: {}}]}}",
        range: "1s and 365d",
        lowest: "1s",
        highest: "365d",
        below: Some("500ms"),
        above: "366d",
    },
    Bounded {
        path: "plugins.p.schedules[0].after",
        yaml: "plugins: {p: {schedules: [{after: {}}]}}",
        range: "0s and 365d",
        lowest: "0s",
        highest: "365d",
        below: None,
        above: "53w",
    },
    Bounded {
        path: "plugins.p.schedules[0].jitter",
        yaml: "plugins: {p: {schedules: [{every: 5m, jitter: {}}]}}",
        range: "0s and 1d",
        lowest: "0",
        highest: "1d",
        below: None,
        above: "86400001ms",
    },
    Bounded {
        path: "api.threads",
        yaml: "api: {threads: {}}",
        range: "1 and 64",
        lowest: "1",
        highest: "64",
        below: Some("0"),
        above: "65",
    },
    Bounded {
        path: "api.max_connections",
        yaml: "api: {max_connections: {}}",
        range: "1 and 4096",
        lowest: "1",
        highest: "4096",
        below: Some("0"),
        above: "4097",
    },
    Bounded {
        path: "api.max_event_streams",
        yaml: "api: {max_event_streams: {}}",
        range: "0 and 1024",
        lowest: "0",
        highest: "1024",
        below: None,
        above: "1025",
    },
    Bounded {
        path: "api.max_body_size",
        yaml: "api: {max_body_size: {}}",
        range: "1KB and 32MB",
        lowest: "1024",
        highest: "32MB",
        below: Some("1023"),
        above: "32769KB",
    },
    Bounded {
        path: "webhooks.endpoints[0].max_body_size",
        yaml: "tokens: [{name: s, key: k}]\nwebhooks: {listen: 'x:1', endpoints: [{name: a, path: /a, plugin: p, secret_ref: s, max_body_size: {}}]}",
        range: "1KB and 32MB",
        lowest: "1KB",
        highest: "32768KiB",
        below: Some("1000"),
        above: "33MB",
    },
];

#[test]
fn every_numeric_and_duration_key_is_held_to_its_range() {
    for key in BOUNDED {
        let yaml = |value: &str| format!("{}\n", key.yaml.replace("{}", value));
        for accepted in [key.lowest, key.highest] {
            let tree = TempTree::new();
            tree.write("config.yaml", &yaml(accepted));
            if let Err(error) = tree.load() {
                panic!("{} = {accepted} was refused: {error}", key.path);
            }
        }
        let mut refused = vec![key.above];
        refused.extend(key.below);
        for value in refused {
            check(
                &yaml(value),
                key.path,
                &format!("must be between {}, got {value}", key.range),
            );
        }
    }
}

#[test]
fn a_key_whose_range_starts_at_zero_refuses_negative_values() {
    for key in BOUNDED
        .iter()
        .filter(|key| key.below.is_none() && !key.path.starts_with("api."))
    {
        let yaml = format!("{}\n", key.yaml.replace("{}", "-1s"));
        check(
            &yaml,
            key.path,
            "invalid duration `-1s`: expected a number before `-1s`",
        );
    }
}

#[test]
fn bare_integer_durations_are_bounded_too() {
    check(
        "service: {job_log_retention: 99999999999999999}\n",
        "service.job_log_retention",
        "invalid duration `99999999999999999`: longer than 100 years",
    );
    check(
        "service: {job_log_retention: \"99999999999999999999999\"}\n",
        "service.job_log_retention",
        "invalid duration `99999999999999999999999`: longer than 100 years",
    );
}

#[test]
fn log_level_is_one_of_five() {
    for level in LOG_LEVELS {
        let (_tree, loaded) = load(&format!("service: {{log_level: {level}}}\n"));
        assert_eq!(loaded.config.service.log_level, *level);
    }
    check(
        "service: {log_level: verbose}\n",
        "service.log_level",
        "invalid log_level `verbose`: expected trace, debug, info, warn or error",
    );
    check(
        "service: {log_level: INFO}\n",
        "service.log_level",
        "invalid log_level `INFO`: expected trace, debug, info, warn or error",
    );
}

#[test]
fn max_response_events_defaults_to_1000() {
    let (_tree, loaded) = load("");
    assert_eq!(loaded.config.service.max_response_events, 1000);
    let (_tree, loaded) = load("service: {max_response_events: 50}\n");
    assert_eq!(loaded.config.service.max_response_events, 50);
}

// ---- keys whose feature has not landed ----

#[test]
fn keys_that_do_nothing_yet_are_noted_with_file_and_path() {
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        "include: [relay.yaml]\nservice: {preferred_window: x}\napi: {enabled: true, max_concurrent_sync: 10, max_sync_timeout: 30s}\npipelines: []\nplugins:\n  a: {notify_on_complete: true, schedules: [{every: 5m, preferred_window: x}]}\n  b: {notify_on_complete: false}\n",
    );
    tree.write(
        "relay.yaml",
        "relay: {x: 1}\nroutes: [{from: a, event_type: e, to: b}]\n",
    );
    let loaded = tree.load().unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let root = tree.path("config.yaml");
    let relay = tree.path("relay.yaml");
    let noted: Vec<String> = loaded
        .config
        .inactive
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        noted,
        [
            format!("{}: relay: parsed but not yet active", relay.display()),
            format!(
                "{}: service.preferred_window: parsed but not yet active",
                root.display()
            ),
            format!(
                "{}: plugins.a.schedules[0].preferred_window: parsed but not yet active",
                root.display()
            ),
        ]
    );
}
