use super::*;
use crate::config::temp_tree::TempTree;
use crate::config::{Loaded, load};

fn names(loaded: &Loaded, tree: &TempTree) -> Vec<String> {
    loaded
        .config
        .files
        .iter()
        .map(|f| {
            f.path
                .strip_prefix(&tree.dir)
                .unwrap()
                .display()
                .to_string()
        })
        .collect()
}

fn echo_message(loaded: &Loaded) -> &serde_json::Value {
    &loaded.config.plugin("echo").unwrap().config["message"]
}

// ---- discovery ----

#[test]
fn resolves_an_explicit_directory_or_file() {
    let tree = TempTree::new();
    let root = tree.write("config.yaml", "");
    tree.write("other.yaml", "");
    assert_eq!(discover(Some(&tree.dir)).unwrap(), root);
    assert_eq!(
        discover(Some(&tree.path("other.yaml"))).unwrap(),
        tree.path("other.yaml")
    );
}

#[test]
fn refuses_an_explicit_path_without_config() {
    let tree = TempTree::new();
    fs::create_dir_all(tree.path("empty")).unwrap();
    assert_eq!(
        discover(Some(&tree.path("empty"))).unwrap_err().to_string(),
        format!(
            "{}: config file does not exist",
            tree.path("empty/config.yaml").display()
        )
    );
    assert_eq!(
        discover(Some(&tree.path("nope.yaml")))
            .unwrap_err()
            .to_string(),
        format!(
            "{}: config file does not exist",
            tree.path("nope.yaml").display()
        )
    );
}

#[test]
fn searches_default_directories_in_order() {
    let tree = TempTree::new();
    tree.write("b/config.yaml", "");
    tree.write("c/config.yaml", "");
    fs::create_dir_all(tree.path("a")).unwrap();
    let dirs = [tree.path("a"), tree.path("b"), tree.path("c")];
    assert_eq!(find_first_root(&dirs).unwrap(), tree.path("b/config.yaml"));
    let error = find_first_root(&dirs[..1]).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "no config.yaml found (searched {})",
            tree.path("a/config.yaml").display()
        )
    );
    assert_eq!(error.exit_code(), 78);
}

#[test]
fn default_dirs_end_with_etc() {
    let dirs = list_default_dirs();
    assert_eq!(dirs.last().unwrap(), Path::new("/etc/ductile"));
}

// ---- includes ----

#[test]
fn loads_root_then_includes_depth_first() {
    let tree = TempTree::new();
    tree.write("config.yaml", "include: [a.yaml, b.yaml]\n");
    tree.write("a.yaml", "include: [sub/c.yaml]\n");
    tree.write("sub/c.yaml", "include: [d.yaml]\n");
    tree.write("sub/d.yaml", "");
    tree.write("b.yaml", "");
    let loaded = tree.load().unwrap();
    assert_eq!(
        names(&loaded, &tree),
        [
            "config.yaml",
            "a.yaml",
            "sub/c.yaml",
            "sub/d.yaml",
            "b.yaml"
        ]
    );
}

#[test]
fn include_paths_are_relative_to_the_including_file() {
    let tree = TempTree::new();
    tree.write("config.yaml", "include: conf/plugins.yaml\n");
    tree.write("conf/plugins.yaml", "include: [../shared/more.yaml]\n");
    tree.write("shared/more.yaml", "plugins: {echo: {}}\n");
    let loaded = tree.load().unwrap();
    assert_eq!(
        names(&loaded, &tree),
        ["config.yaml", "conf/plugins.yaml", "shared/more.yaml"]
    );
    assert!(loaded.config.plugin("echo").is_some());
}

#[test]
fn include_directories_load_yaml_files_alphabetically() {
    let tree = TempTree::new();
    tree.write("config.yaml", "include: [conf.d]\n");
    tree.write("conf.d/b.yaml", "");
    tree.write("conf.d/a.yaml", "");
    tree.write("conf.d/c.yml", "");
    tree.write("conf.d/.hidden.yaml", "");
    tree.write("conf.d/notes.txt", "");
    tree.write("conf.d/nested/z.yaml", "");
    let loaded = tree.load().unwrap();
    assert_eq!(
        names(&loaded, &tree),
        ["config.yaml", "conf.d/a.yaml", "conf.d/b.yaml"]
    );
}

#[test]
fn include_expands_home() {
    let tree = TempTree::new();
    let home = std::env::var("HOME").unwrap_or_default();
    let Ok(relative) = tree.dir.strip_prefix(&home) else {
        // The temp dir is outside HOME here; expansion itself is checked below.
        assert_eq!(
            resolve_path(Path::new("/x"), "~/a").unwrap(),
            Path::new(&home).join("a")
        );
        return;
    };
    tree.write(
        "config.yaml",
        &format!("include: [\"~/{}/x.yaml\"]\n", relative.display()),
    );
    tree.write("x.yaml", "");
    assert_eq!(
        names(&tree.load().unwrap(), &tree),
        ["config.yaml", "x.yaml"]
    );
}

#[test]
fn include_cycles_are_refused_with_the_chain() {
    let tree = TempTree::new();
    tree.write("config.yaml", "include: [a.yaml]\n");
    tree.write("a.yaml", "include: [b.yaml]\n");
    tree.write("b.yaml", "include: [a.yaml]\n");
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}: include[0]: include cycle: a.yaml -> b.yaml -> a.yaml",
            tree.path("b.yaml").display()
        )
    );
}

#[test]
fn including_the_root_is_a_cycle() {
    let tree = TempTree::new();
    tree.write("config.yaml", "include: [.]\n");
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}: include[0]: include cycle: config.yaml -> config.yaml",
            tree.path("config.yaml").display()
        )
    );
}

#[test]
fn a_file_included_twice_loads_once_with_a_warning() {
    let tree = TempTree::new();
    tree.write("config.yaml", "include: [a.yaml, b.yaml]\n");
    tree.write("a.yaml", "include: [common.yaml]\n");
    tree.write("b.yaml", "include: [common.yaml]\n");
    tree.write("common.yaml", "plugin_roots: [/p]\n");
    let loaded = tree.load().unwrap();
    assert_eq!(
        names(&loaded, &tree),
        ["config.yaml", "a.yaml", "common.yaml", "b.yaml"]
    );
    assert_eq!(loaded.config.plugin_roots, [PathBuf::from("/p")]);
    assert_eq!(
        loaded.warnings[0].to_string(),
        format!(
            "{}: include[0]: `common.yaml` is already included; not loading it twice",
            tree.path("b.yaml").display()
        )
    );
}

#[test]
fn a_missing_include_names_the_including_file() {
    let tree = TempTree::new();
    tree.write("config.yaml", "include: [a.yaml]\n");
    tree.write("a.yaml", "include:\n  - ok.yaml\n  - gone.yaml\n");
    tree.write("ok.yaml", "");
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}: include[1]: included path `gone.yaml` does not exist ({})",
            tree.path("a.yaml").display(),
            tree.path("gone.yaml").display()
        )
    );
}

#[test]
fn interpolation_in_include_paths_is_refused() {
    let tree = TempTree::new();
    tree.write("config.yaml", "include: [\"conf/${ENV}.yaml\"]\n");
    assert_eq!(
        tree.error(&[("ENV", "prod")]),
        format!(
            "{}: include[0]: `${{...}}` is not allowed in file paths (`conf/${{ENV}}.yaml`); paths must be static",
            tree.path("config.yaml").display()
        )
    );
}

#[test]
fn include_must_list_paths() {
    let tree = TempTree::new();
    tree.write("config.yaml", "include: {a: b}\n");
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}: include: expected a list of file paths, found a mapping",
            tree.path("config.yaml").display()
        )
    );
    tree.write("config.yaml", "include: [a.yaml, 3]\n");
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}: include[1]: expected a file path, found `3`",
            tree.path("config.yaml").display()
        )
    );
}

// ---- merge rules ----

#[test]
fn later_files_override_scalars_and_merge_maps() {
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        "include: [a.yaml]\nservice:\n  name: first\n  log_level: debug\nplugins:\n  echo:\n    config: {message: hi, keep: 1}\n",
    );
    tree.write(
        "a.yaml",
        "service:\n  name: second\nplugins:\n  echo:\n    config: {message: bye}\n  other: {}\n",
    );
    let loaded = tree.load().unwrap();
    let config = &loaded.config;
    assert_eq!(config.service.name, "second");
    assert_eq!(config.service.log_level, "debug");
    assert_eq!(
        config.plugin("echo").unwrap().config,
        serde_json::json!({"message": "bye", "keep": 1})
    );
    assert!(config.plugin("other").is_some());
}

#[test]
fn a_later_file_can_switch_a_boolean_off() {
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        "include: [off.yaml]\napi: {enabled: true}\nplugins:\n  echo:\n    enabled: true\n",
    );
    tree.write(
        "off.yaml",
        "api: {enabled: false}\nplugins:\n  echo:\n    enabled: false\n",
    );
    let loaded = tree.load().unwrap();
    assert!(!loaded.config.plugin("echo").unwrap().enabled);
    assert!(!loaded.config.api.enabled);
}

#[test]
fn arrays_append_across_includes() {
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        "include: [a.yaml, b.yaml]\nplugin_roots: [/one]\npipelines:\n  - {name: p1, on: e, steps: [{uses: a}]}\n",
    );
    tree.write(
        "a.yaml",
        "plugin_roots: [/two]\npipelines:\n  - {name: p2, on: e, steps: [{uses: a}]}\n",
    );
    tree.write(
        "b.yaml",
        "plugins:\n  echo:\n    schedules:\n      - {id: x, every: 5m}\n",
    );
    let loaded = tree.load().unwrap();
    assert_eq!(
        loaded.config.plugin_roots,
        [PathBuf::from("/one"), PathBuf::from("/two")]
    );
    let names: Vec<&str> = loaded
        .config
        .pipelines
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["p1", "p2"]);
}

#[test]
fn schedules_append_and_keep_their_file() {
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        "include: [more.yaml]\nplugins:\n  echo:\n    schedules:\n      - {id: a, every: 5m}\n",
    );
    tree.write(
        "more.yaml",
        "plugins:\n  echo:\n    schedules:\n      - {id: b, cron: '0 * * * *'}\n",
    );
    let loaded = tree.load().unwrap();
    let schedules = &loaded.config.plugin("echo").unwrap().schedules;
    let ids: Vec<&str> = schedules.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(
        (schedules[1].origin.as_str(), schedules[1].file.clone()),
        ("plugins.echo.schedules[1]", tree.path("more.yaml"))
    );
    assert_eq!(
        (schedules[0].origin.as_str(), schedules[0].file.clone()),
        ("plugins.echo.schedules[0]", tree.path("config.yaml"))
    );
}

#[test]
fn an_empty_later_section_keeps_earlier_entries() {
    let tree = TempTree::new();
    tree.write("config.yaml", "include: [a.yaml]\nplugins:\n  echo: {}\n");
    tree.write("a.yaml", "plugins:\n  # echo2: {}\n");
    assert!(tree.load().unwrap().config.plugin("echo").is_some());
}

#[test]
fn provenance_names_the_file_that_set_a_key() {
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        "include: [a.yaml]\nservice:\n  max_workers: 2\n",
    );
    tree.write("a.yaml", "service:\n  max_workers: 0\n");
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}: service.max_workers: must be between 1 and 256, got 0",
            tree.path("a.yaml").display()
        )
    );
}

// ---- interpolation ----

#[test]
fn interpolates_set_variables() {
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        "plugins:\n  echo:\n    config:\n      message: \"hello ${WHO}\"\n",
    );
    let loaded = tree.load_with(&[("WHO", "world")]).unwrap();
    assert_eq!(echo_message(&loaded), "hello world");
}

#[test]
fn an_unset_variable_names_file_line_and_variable() {
    let tree = TempTree::new();
    tree.write("config.yaml", "include: [p.yaml]\n");
    tree.write(
        "p.yaml",
        "# ${COMMENTED_OUT}\nplugins:\n  echo:\n    config:\n      token: ${DUCTILE_TEST_NOT_SET}\n",
    );
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}:5: environment variable `DUCTILE_TEST_NOT_SET` is not set",
            tree.path("p.yaml").display()
        )
    );
}

#[test]
fn the_process_environment_is_the_default_source() {
    let tree = TempTree::new();
    let name = format!("DUCTILE_TEST_UNSET_{}_{}", std::process::id(), line!());
    tree.write("config.yaml", &format!("service:\n  name: ${{{name}}}\n"));
    let error = load(&tree.path("config.yaml")).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}:2: environment variable `{name}` is not set",
            tree.path("config.yaml").display()
        )
    );
    if let Ok(path) = std::env::var("PATH") {
        tree.write(
            "config.yaml",
            "plugins:\n  echo:\n    config:\n      message: \"${PATH}\"\n",
        );
        let loaded = load(&tree.path("config.yaml")).unwrap();
        assert_eq!(echo_message(&loaded), path.as_str());
    }
}

#[test]
fn env_files_supply_unset_variables() {
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        "include: [conf/p.yaml]\nplugins:\n  echo:\n    config:\n      message: ${FROM_DOTENV}\n      other: ${ALSO}\n",
    );
    tree.write(
        "conf/p.yaml",
        "environment_vars:\n  include: [secrets.env]\n",
    );
    tree.write(
        "conf/secrets.env",
        "# secrets\nexport FROM_DOTENV=\"from file\"\nALSO='x'\n",
    );
    let loaded = tree.load().unwrap();
    let echo = loaded.config.plugin("echo").unwrap();
    assert_eq!(echo.config["message"], "from file");
    assert_eq!(echo.config["other"], "x");
    assert_eq!(loaded.config.files.len(), 2);
}

#[test]
fn the_process_environment_wins_over_env_files() {
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        "environment_vars:\n  include: [.env, second.env]\nplugins:\n  echo:\n    config:\n      message: ${WHO}\n      second: ${LATER}\n",
    );
    tree.write(".env", "WHO=dotenv\nLATER=first\n");
    tree.write("second.env", "LATER=second\n");
    assert_eq!(
        echo_message(&tree.load_with(&[("WHO", "process")]).unwrap()),
        "process"
    );
    let loaded = tree.load().unwrap();
    assert_eq!(echo_message(&loaded), "dotenv");
    assert_eq!(
        loaded.config.plugin("echo").unwrap().config["second"],
        "first"
    );
}

#[test]
fn env_file_errors_name_their_file() {
    let tree = TempTree::new();
    tree.write("config.yaml", "environment_vars:\n  include: [.env]\n");
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}: environment_vars.include[0]: included path `.env` does not exist ({})",
            tree.path("config.yaml").display(),
            tree.path(".env").display()
        )
    );
    tree.write(".env", "A=1\nnonsense\n");
    assert_eq!(
        tree.error(&[]),
        format!("{}:2: expected KEY=VALUE", tree.path(".env").display())
    );
    tree.write(
        "config.yaml",
        "environment_vars:\n  include: [\"${X}.env\"]\n",
    );
    assert_eq!(
        tree.error(&[("X", "a")]),
        format!(
            "{}: environment_vars.include[0]: `${{...}}` is not allowed in file paths (`${{X}}.env`); paths must be static",
            tree.path("config.yaml").display()
        )
    );
}

#[test]
fn environment_vars_unknown_keys_warn() {
    let tree = TempTree::new();
    tree.write("config.yaml", "environment_vars:\n  includes: []\n");
    let loaded = tree.load().unwrap();
    assert_eq!(
        loaded.warnings[0].to_string(),
        format!(
            "{}: environment_vars.includes: unknown key `includes`; did you mean `include`?",
            tree.path("config.yaml").display()
        )
    );
}

#[test]
fn interpolation_happens_after_hashing() {
    let tree = TempTree::new();
    let text = "service:\n  name: ${NAME}\n";
    tree.write("config.yaml", text);
    let loaded = tree.load_with(&[("NAME", "box")]).unwrap();
    assert_eq!(loaded.config.service.name, "box");
    assert_eq!(
        loaded.config.files[0].hash,
        format!("blake3:{}", blake3::hash(text.as_bytes()).to_hex())
    );
    assert_eq!(loaded.config.files[0].path, tree.path("config.yaml"));
}

// ---- YAML ----

#[test]
fn anchors_and_merge_keys_work() {
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        r#"# Shared base — expanded by YAML parser, ignored as a key by ductile
x-discord-test: &discord-test
  uses: discord_notify
  enabled: true
  timeout: 15s
  max_attempts: 2
x-discord-config: &discord-config
  webhook_url: "https://discord.com/api/webhooks/123/abc..."
  default_username: "Ductile Scheduler"
plugins:
  discord_test_cron:
    <<: *discord-test
    schedules:
      - cron: "*/5 * * * *"
        command: poll
    config:
      <<: *discord-config
      poll_message: "[T2] cron */5min"
  discord_test_window:
    <<: *discord-test
    enabled: false
    schedules:
      - every: 3m
        only_between: "07:00-22:00"
        command: poll
    config:
      <<: *discord-config
      poll_message: "[T3] only_between 07-22"
"#,
    );
    let loaded = tree.load().unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let config = &loaded.config;
    assert_eq!(config.plugins.len(), 2);
    let cron = config.plugin("discord_test_cron").unwrap();
    assert_eq!(cron.uses.as_deref(), Some("discord_notify"));
    assert!(cron.enabled);
    assert_eq!(cron.timeouts.poll, std::time::Duration::from_secs(15));
    assert_eq!(cron.retry.max_attempts, 2);
    assert_eq!(cron.schedules[0].cron.as_deref(), Some("*/5 * * * *"));
    assert_eq!(
        cron.config,
        serde_json::json!({
            "webhook_url": "https://discord.com/api/webhooks/123/abc...",
            "default_username": "Ductile Scheduler",
            "poll_message": "[T2] cron */5min",
        })
    );
    let window = config.plugin("discord_test_window").unwrap();
    assert!(!window.enabled, "explicit keys win over merged ones");
    assert_eq!(
        window.schedules[0].only_between.as_deref(),
        Some("07:00-22:00")
    );
    assert_eq!(window.config["poll_message"], "[T3] only_between 07-22");
    assert!(!config.extra.contains_key("x-discord-test"));
}

#[test]
fn malformed_yaml_reports_line_and_column() {
    let tree = TempTree::new();
    tree.write("config.yaml", "include: [a.yaml]\n");
    tree.write("a.yaml", "service:\n  name: x\n bad: [\n");
    let error = tree.load().unwrap_err();
    assert_eq!((error.line(), error.column()), (Some(3), Some(2)));
    assert_eq!(
        error.to_string(),
        format!(
            "{}:3:2: invalid YAML: did not find expected key, while parsing a block mapping",
            tree.path("a.yaml").display()
        )
    );
}

#[test]
fn duplicate_keys_are_yaml_errors() {
    let tree = TempTree::new();
    tree.write("config.yaml", "service: {}\nservice: {}\n");
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}:1:1: invalid YAML: duplicate entry with key \"service\"",
            tree.path("config.yaml").display()
        )
    );
}

#[test]
fn flow_mapping_errors_keep_their_context() {
    let tree = TempTree::new();
    tree.write("config.yaml", "service: {name\n");
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}:2:1: invalid YAML: did not find expected ',' or '}}', while parsing a flow mapping at line 1 column 10",
            tree.path("config.yaml").display()
        )
    );
}

#[test]
fn non_utf8_files_are_refused() {
    let tree = TempTree::new();
    tree.write("config.yaml", "include: [bin.yaml]\n");
    fs::write(tree.path("bin.yaml"), b"a: \xff\xfe\n").unwrap();
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}: file is not valid UTF-8",
            tree.path("bin.yaml").display()
        )
    );
}

#[test]
fn the_top_level_must_be_a_mapping() {
    let tree = TempTree::new();
    tree.write("config.yaml", "- a\n- b\n");
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}: the top level must be a mapping of keys, found a list",
            tree.path("config.yaml").display()
        )
    );
}

#[test]
fn a_missing_root_is_reported() {
    let tree = TempTree::new();
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}: config file does not exist",
            tree.path("config.yaml").display()
        )
    );
}

mod bounds;
mod interpolation;
