//! `${VAR}` references substituted into parsed values: exact text, re-typing
//! of whole unquoted references, keys, comments, positions of errors.

use super::*;

#[test]
fn flow_collections_may_hold_references() {
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        "plugins: {echo: {config: {message: ${WHO}, list: [${WHO}, \"${WHO}\"]}}}\n",
    );
    let loaded = tree.load_with(&[("WHO", "flow")]).unwrap();
    assert_eq!(echo_message(&loaded), "flow");
    assert_eq!(
        loaded.config.plugin("echo").unwrap().config["list"],
        serde_json::json!(["flow", "flow"])
    );
    // A file with references in flow collections may include others too.
    tree.write(
        "config.yaml",
        "include: [a.yaml]\nplugins: {echo: {config: {message: ${WHO}}}}\n",
    );
    tree.write("a.yaml", "plugins: {other: {}}\n");
    let loaded = tree.load_with(&[("WHO", "flow")]).unwrap();
    assert_eq!(echo_message(&loaded), "flow");
    assert!(loaded.config.plugin("other").is_some());
}

/// Loads a one-plugin config whose `echo.config.v` is `value_yaml`, with `V` set
/// to `value`; returns the plugin's config.
fn echo_config_with(value_yaml: &str, value: &str) -> (TempTree, serde_json::Value) {
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        &format!("plugins:\n  echo:\n    config:\n      v: {value_yaml}\n      after: kept\n"),
    );
    let loaded = tree.load_with(&[("V", value)]).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let config = loaded.config.plugin("echo").unwrap().config.clone();
    (tree, config)
}

#[test]
fn a_variable_arrives_as_exactly_its_text() {
    for value in [
        "abc #def",
        "a: b",
        "- item",
        "[1, 2]",
        "{k: v}",
        "&anchor x",
        "*alias",
        "\"quoted\"",
        "it's",
        "tab\there",
        "line one\nline two",
        "x\n      injected: true",
        " padded ",
        "${NOT_EXPANDED_AGAIN}",
    ] {
        for style in ["${V}", "\"${V}\"", "'${V}'", "\"<${V}>\"", "<${V}>"] {
            let (_tree, config) = echo_config_with(style, value);
            let expected = if style.contains('<') {
                format!("<{value}>")
            } else {
                value.to_string()
            };
            assert_eq!(config["v"], expected.as_str(), "{style} with {value:?}");
            assert_eq!(config["after"], "kept", "{style} with {value:?}");
            assert_eq!(
                config.as_object().unwrap().len(),
                2,
                "{style} with {value:?}"
            );
        }
    }
}

#[test]
fn a_variable_cannot_add_keys_or_switch_settings() {
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        "service:\n  name: ${NAME}\nplugins:\n  echo:\n    config: {message: ${NAME}}\n",
    );
    let value = "box\n  allow_symlinks: true\nplugins: {evil: {}}";
    let loaded = tree.load_with(&[("NAME", value)]).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.config.service.name, value);
    assert!(!loaded.config.service.allow_symlinks);
    assert_eq!(loaded.config.plugins.len(), 1);
    assert_eq!(echo_message(&loaded), value);
}

#[test]
fn a_whole_unquoted_reference_may_become_a_number_boolean_or_null() {
    for (value, expected) in [
        ("8080", serde_json::json!(8080)),
        ("-3", serde_json::json!(-3)),
        ("1.5", serde_json::json!(1.5)),
        ("0x1F", serde_json::json!(31)),
        ("true", serde_json::json!(true)),
        ("False", serde_json::json!(false)),
        ("null", serde_json::Value::Null),
        ("~", serde_json::Value::Null),
        ("", serde_json::Value::Null),
        ("yes", serde_json::json!("yes")),
        ("1 # comment", serde_json::json!("1 # comment")),
        ("8080\n", serde_json::json!("8080\n")),
        ("[1]", serde_json::json!("[1]")),
        ("-", serde_json::json!("-")),
    ] {
        let (_tree, config) = echo_config_with("${V}", value);
        assert_eq!(config["v"], expected, "{value:?}");
        let (_tree, quoted) = echo_config_with("\"${V}\"", value);
        assert_eq!(quoted["v"], value, "quoted {value:?} stays a string");
    }
}

#[test]
fn typed_settings_read_whole_references() {
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        "service:\n  max_workers: ${WORKERS}\n  strict_mode: ${STRICT}\n  tick_interval: ${TICK}\n",
    );
    let loaded = tree
        .load_with(&[("WORKERS", "3"), ("STRICT", "true"), ("TICK", "5s")])
        .unwrap();
    assert_eq!(loaded.config.service.max_workers, 3);
    assert!(loaded.config.service.strict_mode);
    assert_eq!(
        loaded.config.service.tick_interval,
        std::time::Duration::from_secs(5)
    );
}

#[test]
fn keys_may_hold_references_but_not_collide() {
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        "plugins:\n  ${NAME}: {}\n  \"x-${NAME}\": {}\n",
    );
    let loaded = tree.load_with(&[("NAME", "echo")]).unwrap();
    let names: Vec<&String> = loaded.config.plugins.keys().collect();
    assert_eq!(names, ["echo", "x-echo"]);
    tree.write("config.yaml", "plugins:\n  ${A}: {}\n  ${B}: {}\n");
    assert_eq!(
        tree.error(&[("A", "echo"), ("B", "echo")]),
        format!(
            "{}: plugins: two keys become `echo` once variables are substituted",
            tree.path("config.yaml").display()
        )
    );
}

#[test]
fn references_in_comments_are_never_looked_up() {
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        "# ${UNSET_A}\nservice:\n  name: box # ${UNSET_B}\n  # ${UNSET_C}\n",
    );
    assert_eq!(tree.load().unwrap().config.service.name, "box");
}

#[test]
fn an_unset_variable_is_reported_at_its_first_line() {
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        "service:\n  name: x\nplugins:\n  b: {config: {k: \"${LATER}\"}}\n  a:\n    config:\n      k: |\n        text ${FIRST}\n",
    );
    // The earlier line wins even though `a` comes first once keys are sorted.
    tree.write(
        "config.yaml",
        "plugins:\n  b: {config: {k: \"${FIRST}\"}}\n  a:\n    config:\n      k: |\n        text ${LATER}\n",
    );
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}:2: environment variable `FIRST` is not set",
            tree.path("config.yaml").display()
        )
    );
    assert_eq!(
        tree.error(&[("FIRST", "1")]),
        format!(
            "{}:6: environment variable `LATER` is not set",
            tree.path("config.yaml").display()
        )
    );
}

#[test]
fn a_whole_reference_is_refused_as_an_include_path() {
    let tree = TempTree::new();
    tree.write("config.yaml", "include: ${FILE}\n");
    assert_eq!(
        tree.error(&[("FILE", "a.yaml")]),
        format!(
            "{}: include: `${{...}}` is not allowed in file paths (`${{FILE}}`); paths must be static",
            tree.path("config.yaml").display()
        )
    );
    tree.write("config.yaml", "include: [a.yaml, ${FILE}]\n");
    tree.write("a.yaml", "");
    assert_eq!(
        tree.error(&[("FILE", "a.yaml")]),
        format!(
            "{}: include[1]: `${{...}}` is not allowed in file paths (`${{FILE}}`); paths must be static",
            tree.path("config.yaml").display()
        )
    );
}

#[test]
fn the_reserved_noncharacters_are_refused() {
    let tree = TempTree::new();
    tree.write("config.yaml", "service:\n  name: \u{fdd0}\n");
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}: file contains U+FDD0 or U+FDD1, noncharacters reserved for marking `${{...}}` references",
            tree.path("config.yaml").display()
        )
    );
}

#[test]
fn a_str_tag_keeps_a_whole_reference_a_string() {
    let (_tree, config) = echo_config_with("!!str ${V}", "8080");
    assert_eq!(config["v"], "8080");
    let (_tree, config) = echo_config_with("${V}", "8080");
    assert_eq!(config["v"], 8080);
}

#[test]
fn a_reference_used_twice_as_a_key_is_a_yaml_error() {
    let tree = TempTree::new();
    tree.write("config.yaml", "plugins:\n  ${A}: {}\n  ${A}: {}\n");
    assert_eq!(
        tree.error(&[("A", "echo")]),
        format!(
            "{}:2:3: invalid YAML: plugins: duplicate entry with key \"${{A}}\"",
            tree.path("config.yaml").display()
        )
    );
}

#[test]
fn a_directive_that_is_a_reference_is_named_as_written() {
    let tree = TempTree::new();
    tree.write("config.yaml", "environment_vars: ${VARS}\n");
    assert_eq!(
        tree.error(&[("VARS", "x")]),
        format!(
            "{}: environment_vars: expected a mapping, found `${{VARS}}`",
            tree.path("config.yaml").display()
        )
    );
}

#[test]
fn yaml_errors_after_a_reference_keep_their_column() {
    let tree = TempTree::new();
    let text = "plugins: {echo: {config: {m: ${LONG_VARIABLE_NAME}, n: ]}}}\n";
    tree.write("config.yaml", text);
    let error = tree.load_with(&[("LONG_VARIABLE_NAME", "x")]).unwrap_err();
    let column = text.find(']').unwrap() + 1;
    assert_eq!((error.line(), error.column()), (Some(1), Some(column)));
}
