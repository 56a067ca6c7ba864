use super::*;

const BASE: &str = "manifest_spec: ductile.plugin\nmanifest_version: 1\nname: demo\nversion: 0.1.0\nprotocol: 2\nentrypoint: run.sh\n";
const CMDS: &str = "commands:\n  - name: poll\n    type: read\n  - name: handle\n";

fn parse_text(text: &str) -> Result<Manifest, ManifestError> {
    parse(Path::new("plugins/demo/manifest.yaml"), text)
}

/// Parses BASE with `key` replaced (or removed when `value` is None) plus `extra`.
fn with(key: &str, value: Option<&str>, extra: &str) -> String {
    let mut out = String::new();
    for line in BASE.lines() {
        if line.starts_with(&format!("{key}:")) {
            if let Some(v) = value {
                out.push_str(&format!("{key}: {v}\n"));
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(extra);
    out
}

fn check_err(text: &str, expected: &str) {
    match parse_text(text) {
        Ok(m) => panic!("expected error {expected:?}, parsed {m:?}"),
        Err(e) => assert_eq!(e.to_string(), expected),
    }
}

fn ok(text: &str) -> Manifest {
    match parse_text(text) {
        Ok(m) => m,
        Err(e) => panic!("expected a manifest, got error: {e}"),
    }
}

#[test]
fn minimal_manifest_parses_with_defaults() {
    let m = ok(&format!("{BASE}{CMDS}"));
    assert_eq!(m.name, "demo");
    assert_eq!(m.version, "0.1.0");
    assert_eq!(m.protocol, 2);
    assert_eq!(m.entrypoint, "run.sh");
    assert_eq!(m.description, None);
    assert!(m.concurrency_safe);
    assert_eq!(m.stopwatch_max_subs, 32);
    assert_eq!(m.config_keys, ConfigKeys::default());
    assert!(m.fact_outputs.is_empty());
    assert_eq!(m.commands.len(), 2);
    assert_eq!(m.command("poll").map(|c| c.kind), Some(CommandKind::Read));
    // Omitted type is the paranoid default.
    assert_eq!(
        m.command("handle").map(|c| c.kind),
        Some(CommandKind::Write)
    );
    assert!(m.command("nope").is_none());
}

#[test]
fn full_manifest_with_unknown_keys_parses() {
    let text = format!(
        "{BASE}{}",
        r#"description: "Does things."
concurrency_safe: false
homepage: https://example.com
commands:
  - name: poll
    type: read
    description: Fetch.
    idempotent: true
    retry_safe: false
    input_schema: {url: string}
    values:
      consume: []
      emit:
        - event: demo.x
          values: [payload.a]
  - name: health
    type: read
fact_outputs:
  - when:
      command: poll
    from: state_updates
    fact_type: demo.snapshot
    compatibility_view: mirror_object
config_keys:
  required: [token]
  optional: [message, depth]
stopwatch:
  max_subs: 64
"#
    );
    let m = ok(&text);
    assert_eq!(m.description.as_deref(), Some("Does things."));
    assert!(!m.concurrency_safe);
    let poll = m.command("poll").cloned();
    assert_eq!(
        poll,
        Some(CommandSpec {
            name: "poll".into(),
            kind: CommandKind::Read,
            description: Some("Fetch.".into()),
            idempotent: Some(true),
            retry_safe: Some(false),
            input_schema: Some(serde_json::json!({
                "type": "object",
                "properties": {"url": {"type": "string"}}
            })),
            output_schema: None,
            values: Some(Values {
                consume: Vec::new(),
                emit: vec![EmittedValues {
                    event: "demo.x".into(),
                    values: vec!["payload.a".into()],
                }],
            }),
        })
    );
    assert_eq!(
        m.fact_rule("poll"),
        Some(&FactOutput {
            command: "poll".into(),
            fact_type: "demo.snapshot".into()
        })
    );
    assert_eq!(m.fact_rule("health"), None);
    assert_eq!(m.config_keys.required, vec!["token".to_string()]);
    assert_eq!(
        m.config_keys.optional,
        vec!["message".to_string(), "depth".to_string()]
    );
    assert_eq!(m.stopwatch_max_subs, 64);
}

#[test]
fn map_form_commands_parse_in_order() {
    let text = format!(
        "{BASE}commands:\n  poll:\n    type: read\n    description: Fetch\n  sync:\n    type: write\n  oauth_callback:\n  health: {{type: read}}\n"
    );
    let m = ok(&text);
    let names: Vec<_> = m
        .commands
        .iter()
        .map(|c| (c.name.as_str(), c.kind))
        .collect();
    assert_eq!(
        names,
        vec![
            ("poll", CommandKind::Read),
            ("sync", CommandKind::Write),
            ("oauth_callback", CommandKind::Write),
            ("health", CommandKind::Read),
        ]
    );
}

#[test]
fn yaml_merge_keys_are_applied() {
    let text = format!(
        "{BASE}x-cmd: &cmd\n  type: read\n  idempotent: true\ncommands:\n  - name: poll\n    <<: *cmd\n"
    );
    let m = ok(&text);
    assert_eq!(
        m.command("poll").map(|c| (c.kind, c.idempotent)),
        Some((CommandKind::Read, Some(true)))
    );
}

#[test]
fn numeric_version_is_kept_as_written() {
    let m = ok(&format!("{}{CMDS}", with("version", Some("1.5"), "")));
    assert_eq!(m.version, "1.5");
}

#[test]
fn stopwatch_zero_means_default_and_bounds_are_checked() {
    let m = ok(&format!("{BASE}{CMDS}stopwatch:\n  max_subs: 0\n"));
    assert_eq!(m.stopwatch_max_subs, 32);
    let m = ok(&format!("{BASE}{CMDS}stopwatch:\n  max_subs: 256\n"));
    assert_eq!(m.stopwatch_max_subs, 256);
    let m = ok(&format!("{BASE}{CMDS}stopwatch:\n  max_subs: 1\n"));
    assert_eq!(m.stopwatch_max_subs, 1);
    let m = ok(&format!("{BASE}{CMDS}stopwatch: {{}}\n"));
    assert_eq!(m.stopwatch_max_subs, 32);
}

#[test]
fn whole_file_errors() {
    check_err("", "plugins/demo/manifest.yaml: the manifest is empty");
    check_err(
        "- a\n- b\n",
        "plugins/demo/manifest.yaml: the manifest must be a mapping, got a list",
    );
    let e = match parse_text("name: [unclosed\n") {
        Ok(m) => panic!("parsed {m:?}"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.starts_with("plugins/demo/manifest.yaml: invalid YAML: "),
        "{e}"
    );
    assert!(!e.contains('\n'));
}

#[test]
fn top_level_field_errors() {
    let f = "plugins/demo/manifest.yaml";
    let cases: Vec<(String, String)> = vec![
        (
            with("manifest_spec", None, CMDS),
            format!("{f}: manifest_spec: is required (must be `ductile.plugin`)"),
        ),
        (
            with("manifest_spec", Some("ductile.event"), CMDS),
            format!("{f}: manifest_spec: must be `ductile.plugin`, got `ductile.event`"),
        ),
        (
            with("manifest_version", None, CMDS),
            format!("{f}: manifest_version: is required (must be 1)"),
        ),
        (
            with("manifest_version", Some("2"), CMDS),
            format!("{f}: manifest_version: must be 1, got `2`"),
        ),
        (
            with("manifest_version", Some("\"1\""), CMDS),
            format!("{f}: manifest_version: must be 1, got `1`"),
        ),
        (with("name", None, CMDS), format!("{f}: name: is required")),
        (
            with("name", Some("\"\""), CMDS),
            format!("{f}: name: must be a non-empty string, got ``"),
        ),
        (
            with("name", Some("\"my plugin\""), CMDS),
            format!(
                "{f}: name: must not contain ' ', got `my plugin` (use underscores or hyphens)"
            ),
        ),
        (
            with("name", Some("a/b"), CMDS),
            format!("{f}: name: must not contain '/', got `a/b` (use underscores or hyphens)"),
        ),
        (
            with("version", None, CMDS),
            format!("{f}: version: is required"),
        ),
        (
            with("version", Some("[1]"), CMDS),
            format!("{f}: version: must be a non-empty string, got a list"),
        ),
        (
            with("protocol", None, CMDS),
            format!("{f}: protocol: is required (this ductile speaks 2)"),
        ),
        (
            with("protocol", Some("3"), CMDS),
            format!("{f}: protocol: unsupported protocol 3 (this ductile speaks 2)"),
        ),
        (
            with("protocol", Some("1"), CMDS),
            format!("{f}: protocol: unsupported protocol 1 (this ductile speaks 2)"),
        ),
        (
            with("protocol", Some("two"), CMDS),
            format!("{f}: protocol: must be an integer, got `two`"),
        ),
        (
            with("entrypoint", None, CMDS),
            format!("{f}: entrypoint: is required"),
        ),
        (
            with("entrypoint", Some("/usr/bin/env"), CMDS),
            format!(
                "{f}: entrypoint: must be relative to the plugin directory, got `/usr/bin/env`"
            ),
        ),
        (
            with("entrypoint", Some("../other/run.sh"), CMDS),
            format!(
                "{f}: entrypoint: must not contain `..` (path traversal), got `../other/run.sh`"
            ),
        ),
        (
            with("entrypoint", Some("bin/../../x"), CMDS),
            format!("{f}: entrypoint: must not contain `..` (path traversal), got `bin/../../x`"),
        ),
        (
            format!("{BASE}description: [a]\n{CMDS}"),
            format!("{f}: description: must be a string, got a list"),
        ),
        (
            format!("{BASE}concurrency_safe: maybe\n{CMDS}"),
            format!("{f}: concurrency_safe: must be true or false, got `maybe`"),
        ),
    ];
    for (text, expected) in cases {
        check_err(&text, &expected);
    }
}

#[test]
fn entrypoint_with_dots_in_names_is_fine() {
    let m = ok(&format!(
        "{}{CMDS}",
        with("entrypoint", Some("./bin/..run.sh"), "")
    ));
    assert_eq!(m.entrypoint, "./bin/..run.sh");
}

#[test]
fn command_errors() {
    let f = "plugins/demo/manifest.yaml";
    let cases: Vec<(String, String)> = vec![
        (
            BASE.to_string(),
            format!("{f}: commands: is required (declare at least one command)"),
        ),
        (
            format!("{BASE}commands: []\n"),
            format!("{f}: commands: must declare at least one command"),
        ),
        (
            format!("{BASE}commands: {{}}\n"),
            format!("{f}: commands: must declare at least one command"),
        ),
        (
            format!("{BASE}commands: poll\n"),
            format!("{f}: commands: must be a list or a mapping of commands, got `poll`"),
        ),
        (
            format!("{BASE}commands:\n  - poll\n"),
            format!("{f}: commands[0]: must be a mapping with `name` and `type`, got `poll`"),
        ),
        (
            format!("{BASE}commands:\n  - type: read\n"),
            format!("{f}: commands[0].name: is required"),
        ),
        (
            format!("{BASE}commands:\n  - name: 5\n"),
            format!("{f}: commands[0].name: must be a non-empty string, got `5`"),
        ),
        (
            format!("{BASE}commands:\n  - name: poll\n  - name: poll\n    type: read\n"),
            format!("{f}: commands[1].name: duplicate command `poll`"),
        ),
        (
            format!("{BASE}commands:\n  - name: poll\n    type: delete\n"),
            format!("{f}: commands[0].type: must be `read` or `write`, got `delete`"),
        ),
        (
            format!("{BASE}commands:\n  poll:\n    type: READ\n"),
            format!("{f}: commands.poll.type: must be `read` or `write`, got `READ`"),
        ),
        (
            format!("{BASE}commands:\n  poll: read\n"),
            format!("{f}: commands.poll: must be a mapping, got `read`"),
        ),
        (
            format!("{BASE}commands:\n  - name: poll\n    idempotent: yes\n"),
            format!("{f}: commands[0].idempotent: must be true or false, got `yes`"),
        ),
        (
            format!("{BASE}commands:\n  poll:\n    retry_safe: 1\n"),
            format!("{f}: commands.poll.retry_safe: must be true or false, got `1`"),
        ),
        (
            format!("{BASE}commands:\n  - name: poll\n    description: 3\n"),
            format!("{f}: commands[0].description: must be a string, got `3`"),
        ),
    ];
    for (text, expected) in cases {
        check_err(&text, &expected);
    }
}

#[test]
fn fact_output_errors() {
    let f = "plugins/demo/manifest.yaml";
    let rule = |body: &str| format!("{BASE}{CMDS}fact_outputs:\n  - {body}\n");
    let cases: Vec<(String, String)> = vec![
        (
            format!("{BASE}{CMDS}fact_outputs: {{}}\n"),
            format!("{f}: fact_outputs: must be a list of rules, got a mapping"),
        ),
        (
            format!("{BASE}{CMDS}fact_outputs:\n  - poll\n"),
            format!("{f}: fact_outputs[0]: must be a mapping, got `poll`"),
        ),
        (
            rule("from: state_updates\n    fact_type: demo.snapshot"),
            format!("{f}: fact_outputs[0].when.command: is required"),
        ),
        (
            rule("when: poll\n    from: state_updates\n    fact_type: demo.snapshot"),
            format!("{f}: fact_outputs[0].when: must be a mapping with `command`, got `poll`"),
        ),
        (
            rule("when: {}\n    from: state_updates\n    fact_type: demo.snapshot"),
            format!("{f}: fact_outputs[0].when.command: is required"),
        ),
        (
            rule("when: {command: sync}\n    from: state_updates\n    fact_type: demo.snapshot"),
            format!(
                "{f}: fact_outputs[0].when.command: names `sync`, which is not a declared command"
            ),
        ),
        (
            rule("when: {command: poll}\n    fact_type: demo.snapshot"),
            format!("{f}: fact_outputs[0].from: is required (must be `state_updates`)"),
        ),
        (
            rule("when: {command: poll}\n    from: facts\n    fact_type: demo.snapshot"),
            format!("{f}: fact_outputs[0].from: must be `state_updates`, got `facts`"),
        ),
        (
            rule("when: {command: poll}\n    from: state_updates"),
            format!("{f}: fact_outputs[0].fact_type: is required"),
        ),
        (
            rule("when: {command: poll}\n    from: state_updates\n    fact_type: \"  \""),
            format!("{f}: fact_outputs[0].fact_type: must be a non-empty string, got `  `"),
        ),
        (
            rule(
                "when: {command: poll}\n    from: state_updates\n    fact_type: demo.snapshot\n    compatibility_view: reducer",
            ),
            format!(
                "{f}: fact_outputs[0].compatibility_view: must be `mirror_object` (the only supported view), got `reducer`"
            ),
        ),
        (
            format!(
                "{BASE}{CMDS}fact_outputs:\n  - when: {{command: poll}}\n    from: state_updates\n    fact_type: a.snapshot\n  - when: {{command: poll}}\n    from: state_updates\n    fact_type: b.snapshot\n"
            ),
            format!(
                "{f}: fact_outputs[1].when.command: a second rule for command `poll` (at most one rule per command)"
            ),
        ),
    ];
    for (text, expected) in cases {
        check_err(&text, &expected);
    }
}

#[test]
fn two_rules_for_two_commands_are_fine() {
    let text = format!(
        "{BASE}{CMDS}fact_outputs:\n  - when: {{command: poll}}\n    from: state_updates\n    fact_type: a.snapshot\n  - when: {{command: handle}}\n    from: state_updates\n    fact_type: b.snapshot\n"
    );
    let m = ok(&text);
    assert_eq!(
        m.fact_rule("handle").map(|f| f.fact_type.as_str()),
        Some("b.snapshot")
    );
}

#[test]
fn config_keys_and_stopwatch_errors() {
    let f = "plugins/demo/manifest.yaml";
    let cases: Vec<(String, String)> = vec![
        (
            format!("{BASE}{CMDS}config_keys: [a]\n"),
            format!(
                "{f}: config_keys: must be a mapping with `required` and `optional`, got a list"
            ),
        ),
        (
            format!("{BASE}{CMDS}config_keys:\n  required: a\n"),
            format!("{f}: config_keys.required: must be a list of key names, got `a`"),
        ),
        (
            format!("{BASE}{CMDS}config_keys:\n  optional: [a, 3]\n"),
            format!("{f}: config_keys.optional[1]: must be a non-empty string, got `3`"),
        ),
        (
            format!("{BASE}{CMDS}stopwatch: 5\n"),
            format!("{f}: stopwatch: must be a mapping with `max_subs`, got `5`"),
        ),
        (
            format!("{BASE}{CMDS}stopwatch:\n  max_subs: 257\n"),
            format!("{f}: stopwatch.max_subs: must be at most 256, got 257"),
        ),
        (
            format!("{BASE}{CMDS}stopwatch:\n  max_subs: -1\n"),
            format!("{f}: stopwatch.max_subs: must be an integer in 1..=256, got -1"),
        ),
        (
            format!("{BASE}{CMDS}stopwatch:\n  max_subs: many\n"),
            format!("{f}: stopwatch.max_subs: must be an integer in 1..=256, got `many`"),
        ),
    ];
    for (text, expected) in cases {
        check_err(&text, &expected);
    }
}

#[test]
fn deep_flow_nesting_is_refused_before_the_yaml_parser_sees_it() {
    let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let m = ok(&format!("{BASE}{CMDS}x-deep: {}\n", nest(64)));
    assert_eq!(m.name, "demo");
    check_err(
        &format!("{BASE}{CMDS}x-deep: {}\n", nest(65)),
        "plugins/demo/manifest.yaml: the manifest nests flow collections deeper than 64 levels (line 11)",
    );
    // Mappings count too, and a quoted `]` cannot hide a level.
    let tricky = format!("{}1{}", r#"{a: ["]", "#.repeat(40), "]}".repeat(40));
    check_err(
        &format!("{BASE}x: {tricky}\n{CMDS}"),
        "plugins/demo/manifest.yaml: the manifest nests flow collections deeper than 64 levels (line 7)",
    );
    // 100k levels are refused at once (the YAML scanner alone took ~40 s on them).
    check_err(
        &format!("{BASE}{CMDS}x-deep: {}\n", nest(100_000)),
        "plugins/demo/manifest.yaml: the manifest nests flow collections deeper than 64 levels (line 11)",
    );
}

#[test]
fn brackets_in_scalars_and_comments_are_not_nesting() {
    let many = "[".repeat(100);
    let text = format!(
        "{BASE}description: \"{many} and {{\"\nx-plain: a {many}\nx-single: '{many} it''s'\nx-flow: ['{many}', \"{many}\", b]\n# {many}\nx-tail: 1 # {many}\n{CMDS}"
    );
    let m = ok(&text);
    assert_eq!(
        m.description.as_deref(),
        Some(format!("{many} and {{").as_str())
    );
}

#[test]
fn many_commands_are_checked_for_duplicates_in_linear_time() {
    let mut text = format!("{BASE}commands:\n");
    for i in 0..20_000 {
        text.push_str(&format!("  - name: cmd_{i}\n    type: read\n"));
    }
    assert_eq!(ok(&text).commands.len(), 20_000);
    text.push_str("  - name: cmd_7\n");
    check_err(
        &text,
        "plugins/demo/manifest.yaml: commands[20000].name: duplicate command `cmd_7`",
    );
}

/// The `poll` command of BASE plus one command whose body is `body` (indented
/// under `- name: poll`).
fn poll_with(body: &str) -> String {
    let mut text = format!("{BASE}commands:\n  - name: poll\n");
    for line in body.lines() {
        text.push_str("    ");
        text.push_str(line);
        text.push('\n');
    }
    text
}

fn poll(body: &str) -> CommandSpec {
    match ok(&poll_with(body)).command("poll").cloned() {
        Some(c) => c,
        None => panic!("no poll command"),
    }
}

#[test]
fn schemas_and_values_are_none_when_absent_or_null() {
    let c = poll("type: read\ninput_schema: null\nvalues: ~");
    assert_eq!(
        (c.input_schema, c.output_schema, c.values),
        (None, None, None)
    );
}

#[test]
fn compact_schema_expands_to_an_object_schema() {
    let c = poll(
        "input_schema:\n  url: string\n  depth: integer\n  ratio: number\n  deep: boolean\n  opts: object\n  tags: array\noutput_schema: {}",
    );
    assert_eq!(
        c.input_schema,
        Some(serde_json::json!({
            "type": "object",
            "properties": {
                "url": {"type": "string"},
                "depth": {"type": "integer"},
                "ratio": {"type": "number"},
                "deep": {"type": "boolean"},
                "opts": {"type": "object"},
                "tags": {"type": "array"}
            }
        }))
    );
    // `input_schema: {}` (the spec's own example) documents an empty payload.
    assert_eq!(
        c.output_schema,
        Some(serde_json::json!({"type": "object", "properties": {}}))
    );
}

#[test]
fn full_schema_is_kept_as_written() {
    let c = poll(
        "input_schema:\n  type: object\n  required: [url]\n  properties:\n    url: {type: string, format: uri}\n    depth: {type: integer, minimum: 1, maximum: 5.5}\n  additionalProperties: false",
    );
    assert_eq!(
        c.input_schema,
        Some(serde_json::json!({
            "type": "object",
            "required": ["url"],
            "properties": {
                "url": {"type": "string", "format": "uri"},
                "depth": {"type": "integer", "minimum": 1, "maximum": 5.5}
            },
            "additionalProperties": false
        }))
    );
}

#[test]
fn each_full_schema_marker_selects_the_full_form() {
    for (marker, json) in [
        (
            "type: [string, \"null\"]",
            serde_json::json!({"type": ["string", "null"]}),
        ),
        ("properties: {}", serde_json::json!({"properties": {}})),
        ("$ref: '#/x'", serde_json::json!({"$ref": "#/x"})),
        (
            "oneOf: [{type: string}]",
            serde_json::json!({"oneOf": [{"type": "string"}]}),
        ),
        ("anyOf: []", serde_json::json!({"anyOf": []})),
        ("allOf: []", serde_json::json!({"allOf": []})),
    ] {
        let c = poll(&format!("output_schema:\n  {marker}"));
        assert_eq!(c.output_schema, Some(json), "{marker}");
    }
}

#[test]
fn values_are_kept_in_declaration_order() {
    let c = poll(
        "values:\n  consume: [payload.url, payload.opts.depth, payload.*]\n  emit:\n    - event: demo.scraped\n      values: [payload.url, payload.text]\n    - event: demo.empty",
    );
    assert_eq!(
        c.values,
        Some(Values {
            consume: vec![
                "payload.url".into(),
                "payload.opts.depth".into(),
                "payload.*".into()
            ],
            emit: vec![
                EmittedValues {
                    event: "demo.scraped".into(),
                    values: vec!["payload.url".into(), "payload.text".into()],
                },
                EmittedValues {
                    event: "demo.empty".into(),
                    values: Vec::new(),
                },
            ],
        })
    );
}

#[test]
fn schema_errors() {
    let f = "plugins/demo/manifest.yaml";
    for (body, expected) in [
        (
            "input_schema:\n  url: strin",
            "commands[0].input_schema.url: unknown type `strin` (expected string, integer, number, boolean, object or array)",
        ),
        (
            "output_schema:\n  url: {format: uri}",
            "commands[0].output_schema.url: must be a type name (string, integer, number, boolean, object or array), got a mapping",
        ),
        (
            "input_schema:\n  1: string",
            "commands[0].input_schema: field names must be strings, got `1`",
        ),
        (
            "input_schema: string",
            "commands[0].input_schema: must be a JSON Schema object or a `field: type` mapping, got `string`",
        ),
        (
            "input_schema: [url]",
            "commands[0].input_schema: must be a JSON Schema object or a `field: type` mapping, got a list",
        ),
        (
            "input_schema:\n  type: strng",
            "commands[0].input_schema.type: must be a JSON Schema type (string, integer, number, boolean, object, array, null) or a list of them, got `strng`",
        ),
        (
            "input_schema:\n  type: []",
            "commands[0].input_schema.type: must be a JSON Schema type (string, integer, number, boolean, object, array, null) or a list of them, got a list",
        ),
        (
            "input_schema:\n  type: object\n  properties: [url]",
            "commands[0].input_schema.properties: must be a mapping of field schemas, got a list",
        ),
        (
            "input_schema:\n  type: object\n  properties:\n    200: {type: string}",
            "commands[0].input_schema.properties: keys must be strings in a JSON Schema, got `200`",
        ),
        (
            "input_schema:\n  type: object\n  properties:\n    x: !custom {type: string}",
            "commands[0].input_schema.properties.x: YAML tags (`!custom`) have no JSON form",
        ),
        (
            "input_schema:\n  type: number\n  maximum: .inf",
            "commands[0].input_schema.maximum: `.inf` is not a finite number",
        ),
    ] {
        check_err(&poll_with(body), &format!("{f}: {expected}"));
    }
}

#[test]
fn values_errors() {
    let f = "plugins/demo/manifest.yaml";
    for (body, expected) in [
        (
            "values: [payload.url]",
            "commands[0].values: must be a mapping with `consume` and `emit`, got a list",
        ),
        (
            "values:\n  consume: payload.url",
            "commands[0].values.consume: must be a list of payload names, got `payload.url`",
        ),
        (
            "values:\n  consume: [url]",
            "commands[0].values.consume[0]: must be a payload name starting with `payload.` (`payload.url`), got `url`",
        ),
        (
            "values:\n  consume: [payload.a, payload.]",
            "commands[0].values.consume[1]: must be a payload name starting with `payload.` (`payload.url`), got `payload.`",
        ),
        (
            "values:\n  consume: [{a: 1}]",
            "commands[0].values.consume[0]: must be a payload name starting with `payload.` (`payload.url`), got a mapping",
        ),
        (
            "values:\n  emit: {event: x}",
            "commands[0].values.emit: must be a list of `event` + `values` entries, got a mapping",
        ),
        (
            "values:\n  emit: [demo.x]",
            "commands[0].values.emit[0]: must be a mapping with `event` and `values`, got `demo.x`",
        ),
        (
            "values:\n  emit:\n    - values: [payload.a]",
            "commands[0].values.emit[0].event: is required",
        ),
        (
            "values:\n  emit:\n    - event: demo.x\n      values: [text]",
            "commands[0].values.emit[0].values[0]: must be a payload name starting with `payload.` (`payload.url`), got `text`",
        ),
    ] {
        check_err(&poll_with(body), &format!("{f}: {expected}"));
    }
}

#[test]
fn map_form_commands_name_their_schema_fields_by_command() {
    check_err(
        &format!("{BASE}commands:\n  poll:\n    input_schema: {{url: uri}}\n"),
        "plugins/demo/manifest.yaml: commands.poll.input_schema.url: unknown type `uri` (expected string, integer, number, boolean, object or array)",
    );
}
