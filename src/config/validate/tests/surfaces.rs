//! `api:`, `tokens:` and `webhooks:`: the HTTP surfaces' settings.

use super::*;
use crate::config::WebhookAuth;

/// Asserts that the tree in `tree` is refused with `message` at `path` in `file`.
fn refused(tree: &TempTree, file: &str, path: &str, message: &str) {
    assert_eq!(
        tree.error(&[]),
        format!("{}: {path}: {message}", tree.path(file).display())
    );
}

fn hash_of(bytes: &str) -> String {
    format!("blake3:{}", blake3::hash(bytes.as_bytes()).to_hex())
}

// ---- api ----

#[test]
fn api_reads_every_key() {
    let (tree, loaded) = load(
        "api:\n  enabled: true\n  listen: 0.0.0.0:9000\n  auth:\n    tokens:\n      - {token: t1, scopes: ['*']}\n      - token: t2\n  max_body_size: 512KB\n  metrics_public: true\n  threads: 8\n  max_connections: 100\n  max_event_streams: 0\n  max_concurrent_sync: 10\n  max_sync_timeout: 5m\n",
    );
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let api = &loaded.config.api;
    assert!(api.enabled);
    assert_eq!(api.listen, "0.0.0.0:9000");
    assert_eq!(api.auth_tokens.len(), 2);
    assert_eq!(api.auth_tokens[0].token.expose(), "t1");
    assert_eq!(api.auth_tokens[0].scopes, ["*"]);
    assert_eq!(api.auth_tokens[0].origin, "api.auth.tokens[0]");
    assert_eq!(api.auth_tokens[0].file, tree.path("config.yaml"));
    assert!(api.auth_tokens[1].scopes.is_empty());
    assert_eq!(api.max_body_size, 512 * 1024);
    assert!(api.metrics_public);
    assert_eq!(api.threads, 8);
    assert_eq!(api.max_connections, 100);
    assert_eq!(api.max_event_streams, 0);
    assert_eq!(api.max_concurrent_sync, 10);
    assert_eq!(api.max_sync_timeout, std::time::Duration::from_secs(300));
    assert!(
        loaded.config.inactive.is_empty(),
        "{:?}",
        loaded.config.inactive
    );
}

#[test]
fn api_warns_about_unknown_keys() {
    warns(
        "api:\n  treads: 2\n  auth: {tokens: [], token: x}\n",
        &[
            "api.treads: unknown key `treads`; did you mean `threads`?",
            "api.auth.token: unknown key `token`; did you mean `tokens`?",
        ],
    );
}

#[test]
fn api_sizes_accept_units() {
    for (written, bytes) in [
        ("1MB", 1 << 20),
        ("1048576", 1 << 20),
        ("2048", 2048),
        ("'64 KiB'", 65536),
    ] {
        let (_tree, loaded) = load(&format!("api: {{max_body_size: {written}}}\n"));
        assert_eq!(loaded.config.api.max_body_size, bytes, "{written}");
    }
    check(
        "api: {max_body_size: 1.5MB}\n",
        "api.max_body_size",
        "invalid size `1.5MB`: unknown unit `.5MB` (use B, KB or MB)",
    );
    check(
        "api: {max_body_size: [1]}\n",
        "api.max_body_size",
        "expected a size such as `1MB`, found a list",
    );
}

#[test]
fn api_tokens_must_be_usable() {
    check(
        "api: {auth: {tokens: [{scopes: ['*']}]}}\n",
        "api.auth.tokens[0]",
        "`token` is required",
    );
    check(
        "api: {auth: {tokens: [{token: ''}]}}\n",
        "api.auth.tokens[0].token",
        "must not be empty",
    );
    check(
        "api: {auth: {tokens: [{token: 'secret '}]}}\n",
        "api.auth.tokens[0].token",
        "must not start or end with whitespace",
    );
    check(
        "api: {auth: {tokens: {token: x}}}\n",
        "api.auth.tokens",
        "expected a list, found a mapping",
    );
    check("api: {listen: ''}\n", "api.listen", "must not be empty");
}

#[test]
fn two_tokens_with_one_value_are_refused_without_quoting_it() {
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        "include: [tokens.yaml]\napi: {auth: {tokens: [{token: same}]}}\n",
    );
    tree.write("tokens.yaml", "tokens: [{name: a, key: same}]\n");
    refused(
        &tree,
        "tokens.yaml",
        "tokens[0].key",
        "the same token as api.auth.tokens[0].token; every token must be different",
    );
}

// ---- tokens ----

#[test]
fn tokens_read_every_key() {
    let tree = TempTree::new();
    tree.write("config.yaml", "include: [auth/tokens.yaml]\n");
    let scopes = "{\"scopes\": [\"read:jobs\", \"withings:ro\"]}";
    tree.write("auth/scopes/cli.json", scopes);
    tree.write(
        "auth/tokens.yaml",
        &format!(
            "tokens:\n  - name: admin-cli\n    key: ${{ADMIN_KEY}}\n    scopes_file: scopes/cli.json\n    scopes_hash: {}\n  - name: gh_secret\n    key: s3cret\n  - name: ops\n    key: k2\n    scopes: [jobs:rw]\n",
            hash_of(scopes).to_uppercase().replace("BLAKE3:", "blake3:")
        ),
    );
    let loaded = tree.load_with(&[("ADMIN_KEY", "k1")]).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let tokens = &loaded.config.tokens;
    let names: Vec<&str> = tokens.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["admin-cli", "gh_secret", "ops"]);
    let cli = &tokens[0];
    assert_eq!(cli.key.expose(), "k1");
    assert_eq!(cli.scopes, ["read:jobs", "withings:ro"]);
    // Relative to the file that declared it, not to the config directory.
    assert_eq!(cli.scopes_file, Some(tree.path("auth/scopes/cli.json")));
    assert_eq!(cli.scopes_hash, Some(hash_of(scopes)));
    assert_eq!(cli.file, tree.path("auth/tokens.yaml"));
    assert_eq!(cli.origin, "tokens[0]");
    assert!(tokens[1].scopes.is_empty());
    assert_eq!(tokens[2].scopes, ["jobs:rw"]);
    // The scope file is part of the config's files, with its hash.
    let last = loaded.config.files.last().unwrap();
    assert_eq!(last.path, tree.path("auth/scopes/cli.json"));
    assert_eq!(last.hash, hash_of(scopes));
    // Keys never reach a debug dump.
    assert!(!format!("{:?}", loaded.config).contains("s3cret"));
}

/// A tree whose token `cli` pins `scopes/cli.json` to `pinned`, the file holding `actual`.
fn pinned_tree(pinned: &str, actual: Option<&str>, strict: bool) -> TempTree {
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        &format!("service: {{strict_mode: {strict}}}\ninclude: [tokens.yaml]\n"),
    );
    tree.write(
        "tokens.yaml",
        &format!(
            "tokens:\n  - {{name: cli, key: k1, scopes_file: scopes/cli.json, scopes_hash: {}}}\n  - {{name: other, key: k2, scopes: ['*']}}\n",
            hash_of(pinned)
        ),
    );
    if let Some(actual) = actual {
        tree.write("scopes/cli.json", actual);
    }
    tree
}

#[test]
fn a_scope_file_that_does_not_match_its_pin_drops_the_token_with_a_warning() {
    let tree = pinned_tree(
        "{\"scopes\": [\"jobs:ro\"]}",
        Some("{\"scopes\": [\"*\"]}"),
        false,
    );
    let loaded = tree.load().unwrap();
    let names: Vec<&str> = loaded
        .config
        .tokens
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, ["other"]);
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [format!(
            "{}: tokens[0].scopes_file: token `cli` dropped: scopes file `{}` does not match scopes_hash",
            tree.path("tokens.yaml").display(),
            tree.path("scopes/cli.json").display()
        )]
    );
    // An unverified file is not recorded as part of the config.
    assert!(
        !loaded
            .config
            .files
            .iter()
            .any(|f| f.path.ends_with("cli.json"))
    );
}

#[test]
fn an_unreadable_scope_file_drops_the_token_with_a_warning() {
    let tree = pinned_tree("{}", None, false);
    let loaded = tree.load().unwrap();
    assert_eq!(loaded.config.tokens.len(), 1);
    assert_eq!(
        loaded.warnings[0].message,
        format!(
            "token `cli` dropped: cannot read scopes file `{}`: it does not exist",
            tree.path("scopes/cli.json").display()
        )
    );
    let big = "x".repeat(64 * 1024 + 1);
    let tree = pinned_tree(&big, Some(&big), false);
    let loaded = tree.load().unwrap();
    assert_eq!(
        loaded.warnings[0].message,
        format!(
            "token `cli` dropped: cannot read scopes file `{}`: it is larger than 64 KiB",
            tree.path("scopes/cli.json").display()
        )
    );
}

#[test]
fn under_strict_mode_a_scope_file_that_fails_its_pin_refuses_the_config() {
    let tree = pinned_tree("{\"scopes\": []}", Some("{\"scopes\": [\"*\"]}"), true);
    refused(
        &tree,
        "tokens.yaml",
        "tokens[0].scopes_file",
        &format!(
            "token `cli`: scopes file `{}` does not match scopes_hash (strict_mode)",
            tree.path("scopes/cli.json").display()
        ),
    );
    let tree = pinned_tree("{}", None, true);
    refused(
        &tree,
        "tokens.yaml",
        "tokens[0].scopes_file",
        &format!(
            "token `cli`: cannot read scopes file `{}`: it does not exist (strict_mode)",
            tree.path("scopes/cli.json").display()
        ),
    );
}

#[test]
fn a_pinned_scope_file_must_be_a_scope_file() {
    for (text, path, message) in [
        (
            "[1]",
            None,
            "expected a JSON object such as {\"scopes\": [\"jobs:ro\"]}",
        ),
        (
            "{\"scopes\": \"*\"}",
            Some("scopes"),
            "expected a list of strings",
        ),
        ("{\"scopes\": [1]}", Some("scopes[0]"), "expected a string"),
        ("{}", Some("scopes"), "`scopes` is required"),
    ] {
        let tree = pinned_tree(text, Some(text), false);
        let file = tree.path("scopes/cli.json");
        let expected = match path {
            Some(path) => format!("{}: {path}: {message}", file.display()),
            None => format!("{}: {message}", file.display()),
        };
        assert_eq!(tree.error(&[]), expected, "{text}");
    }
    let tree = pinned_tree(
        "{\"scopes\": [], \"scope\": 1}",
        Some("{\"scopes\": [], \"scope\": 1}"),
        false,
    );
    let loaded = tree.load().unwrap();
    assert_eq!(
        loaded.warnings[0].message,
        "unknown key `scope`; did you mean `scopes`?"
    );
}

#[test]
fn token_entries_are_checked() {
    let hash = hash_of("");
    for (entry, path, message) in [
        ("{key: k}", "tokens[0]", "`name` is required".to_string()),
        ("{name: a}", "tokens[0]", "`key` is required".to_string()),
        (
            "{name: a, key: ''}",
            "tokens[0].key",
            "must not be empty".to_string(),
        ),
        (
            "{name: 'a b', key: k}",
            "tokens[0].name",
            "invalid token name `a b`: use letters, digits, `-`, `_` and `.`".to_string(),
        ),
        (
            "{name: a, key: k, scopes_file: s.json}",
            "tokens[0].scopes_file",
            "`scopes_hash` is required with `scopes_file`".to_string(),
        ),
        (
            &format!("{{name: a, key: k, scopes_hash: '{hash}'}}"),
            "tokens[0].scopes_hash",
            "`scopes_hash` pins a `scopes_file`, and none is set".to_string(),
        ),
        (
            &format!(
                "{{name: a, key: k, scopes_file: s.json, scopes_hash: '{hash}', scopes: ['*']}}"
            ),
            "tokens[0].scopes",
            "set `scopes` or `scopes_file`, not both".to_string(),
        ),
        (
            "{name: a, key: k, scopes_file: s.json, scopes_hash: 'blake3:abc'}",
            "tokens[0].scopes_hash",
            "invalid scopes_hash `blake3:abc`: expected blake3:<64 hex digits>".to_string(),
        ),
    ] {
        check(&format!("tokens: [{entry}]\n"), path, &message);
    }
    check(
        "tokens: [{name: a, key: k1}, {name: a, key: k2}]\n",
        "tokens[1].name",
        "duplicate token name `a` (also used by tokens[0])",
    );
    check(
        "tokens: {name: a}\n",
        "tokens",
        "expected a list, found a mapping",
    );
    warns(
        "tokens: [{name: a, key: k, scope: ['*']}]\n",
        &["tokens[0].scope: unknown key `scope`; did you mean `scopes`?"],
    );
}

#[test]
fn an_empty_variable_is_no_key() {
    let tree = TempTree::new();
    tree.write("config.yaml", "tokens: [{name: a, key: \"${KEY}\"}]\n");
    assert_eq!(
        tree.error(&[("KEY", "")]),
        format!(
            "{}: tokens[0].key: must not be empty",
            tree.path("config.yaml").display()
        )
    );
}

// ---- webhooks ----

const TOKENS: &str = "tokens: [{name: gh, key: s3cret}, {name: relay, key: other}]\n";

#[test]
fn an_endpoint_gets_every_default() {
    let (tree, loaded) = load(&format!(
        "{TOKENS}webhooks:\n  listen: 127.0.0.1:8091\n  endpoints:\n    - {{name: github, path: /webhook/github, plugin: gh-handler, secret_ref: gh}}\n"
    ));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let webhooks = &loaded.config.webhooks;
    assert_eq!(webhooks.listen.as_deref(), Some("127.0.0.1:8091"));
    let e = &webhooks.endpoints[0];
    assert_eq!(e.name, "github");
    assert_eq!(e.path, "/webhook/github");
    assert_eq!(e.plugin, "gh-handler");
    assert_eq!(e.command, "handle");
    assert_eq!(e.secret_ref, "gh");
    assert_eq!(e.auth, WebhookAuth::Hmac);
    assert_eq!(e.signature_header, "X-Ductile-Signature-256");
    assert_eq!(e.token_header, None);
    assert_eq!(e.max_body_size, 1024 * 1024);
    assert_eq!(e.dedupe_header, None);
    assert_eq!(e.file, tree.path("config.yaml"));
    assert_eq!(e.origin, "webhooks.endpoints[0]");
}

#[test]
fn an_endpoint_reads_every_key() {
    let (_tree, loaded) = load(&format!(
        "{TOKENS}webhooks:\n  listen: 127.0.0.1:8091\n  endpoints:\n    - name: relay\n      path: /hook/relay-1.x~y\n      plugin: echo\n      command: poll\n      secret_ref: relay\n      auth: token\n      signature_header: X-Hub-Signature-256\n      token_header: X-Relay-Key\n      max_body_size: 64KB\n      dedupe_header: X-GitHub-Delivery\n"
    ));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let e = &loaded.config.webhooks.endpoints[0];
    assert_eq!(e.path, "/hook/relay-1.x~y");
    assert_eq!(e.command, "poll");
    assert_eq!(e.auth, WebhookAuth::Token);
    assert_eq!(e.signature_header, "X-Hub-Signature-256");
    assert_eq!(e.token_header.as_deref(), Some("X-Relay-Key"));
    assert_eq!(e.max_body_size, 64 * 1024);
    assert_eq!(e.dedupe_header.as_deref(), Some("X-GitHub-Delivery"));
}

#[test]
fn listen_and_endpoints_merge_from_different_files_in_either_shape() {
    let endpoint =
        |name: &str| format!("{{name: {name}, path: /{name}, plugin: p, secret_ref: gh}}");
    // config.yaml holds the listener; the endpoint files use both shapes, and
    // a list-shaped file may come before or after the listener.
    for (first, second) in [
        (
            format!("webhooks: [{}]\n", endpoint("a")),
            format!("webhooks: {{endpoints: [{}]}}\n", endpoint("b")),
        ),
        (
            format!("webhooks: {{endpoints: [{}]}}\n", endpoint("a")),
            format!("webhooks: [{}]\n", endpoint("b")),
        ),
    ] {
        let tree = TempTree::new();
        tree.write(
            "config.yaml",
            &format!("{TOKENS}include: [a.yaml, b.yaml]\nwebhooks:\n  listen: 127.0.0.1:8091\n"),
        );
        tree.write("a.yaml", &first);
        tree.write("b.yaml", &second);
        let loaded = tree.load().unwrap();
        let webhooks = &loaded.config.webhooks;
        assert_eq!(webhooks.listen.as_deref(), Some("127.0.0.1:8091"));
        let found: Vec<(&str, PathBuf)> = webhooks
            .endpoints
            .iter()
            .map(|e| (e.name.as_str(), e.file.clone()))
            .collect();
        assert_eq!(
            found,
            [("a", tree.path("a.yaml")), ("b", tree.path("b.yaml"))]
        );
    }
    // The listener may also come after a list-shaped file.
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        &format!("{TOKENS}include: [hooks.yaml, listen.yaml]\n"),
    );
    tree.write("hooks.yaml", &format!("webhooks: [{}]\n", endpoint("a")));
    tree.write("listen.yaml", "webhooks: {listen: 127.0.0.1:8091}\n");
    let loaded = tree.load().unwrap();
    assert_eq!(
        loaded.config.webhooks.listen.as_deref(),
        Some("127.0.0.1:8091")
    );
    assert_eq!(loaded.config.webhooks.endpoints.len(), 1);
}

#[test]
fn a_duplicate_path_names_both_files() {
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        &format!("{TOKENS}include: [webhooks.yaml]\nwebhooks:\n  listen: 127.0.0.1:8091\n  endpoints: [{{name: a, path: /x, plugin: p, secret_ref: gh}}]\n"),
    );
    tree.write(
        "webhooks.yaml",
        "webhooks: [{name: b, path: /x, plugin: p, secret_ref: gh}]\n",
    );
    refused(
        &tree,
        "webhooks.yaml",
        "webhooks.endpoints[1].path",
        &format!(
            "duplicate webhook path `/x` (also used by webhooks.endpoints[0] in {})",
            tree.path("config.yaml").display()
        ),
    );
}

#[test]
fn endpoints_are_checked() {
    let hook = |fields: &str| {
        format!("{TOKENS}webhooks:\n  listen: 127.0.0.1:8091\n  endpoints:\n    - {{{fields}}}\n")
    };
    for (fields, path, message) in [
        (
            "path: /a, plugin: p, secret_ref: gh",
            "webhooks.endpoints[0]",
            "`name` is required",
        ),
        (
            "name: a, plugin: p, secret_ref: gh",
            "webhooks.endpoints[0]",
            "`path` is required",
        ),
        (
            "name: a, path: /a, secret_ref: gh",
            "webhooks.endpoints[0]",
            "`plugin` is required",
        ),
        (
            "name: a, path: /a, plugin: p",
            "webhooks.endpoints[0]",
            "`secret_ref` is required",
        ),
        (
            "name: a, path: /a, plugin: p, auth: token",
            "webhooks.endpoints[0]",
            "`secret_ref` is required",
        ),
        (
            "name: a, path: a, plugin: p, secret_ref: gh",
            "webhooks.endpoints[0].path",
            "invalid webhook path `a`: must start with `/`",
        ),
        (
            "name: a, path: '/a?x=1', plugin: p, secret_ref: gh",
            "webhooks.endpoints[0].path",
            "invalid webhook path `/a?x=1`: must not hold a query or fragment",
        ),
        (
            "name: a, path: /a/../b, plugin: p, secret_ref: gh",
            "webhooks.endpoints[0].path",
            "invalid webhook path `/a/../b`: must not hold `.` or `..` segments",
        ),
        (
            "name: a, path: /a b, plugin: p, secret_ref: gh",
            "webhooks.endpoints[0].path",
            "invalid webhook path `/a b`: use letters, digits, `/`, `-`, `_`, `.` and `~`",
        ),
        (
            "name: a, path: /healthz, plugin: p, secret_ref: gh",
            "webhooks.endpoints[0].path",
            "invalid webhook path `/healthz`: the webhook listener answers `/healthz` itself",
        ),
        (
            "name: a, path: /a, plugin: p, secret_ref: gj",
            "webhooks.endpoints[0].secret_ref",
            "`gj` names no entry of `tokens`; did you mean `gh`?",
        ),
        (
            "name: a, path: /a, plugin: p, secret_ref: zzzzzz",
            "webhooks.endpoints[0].secret_ref",
            "`zzzzzz` names no entry of `tokens`",
        ),
        (
            "name: a, path: /a, plugin: p, secret_ref: gh, auth: basic",
            "webhooks.endpoints[0].auth",
            "invalid auth `basic`: expected hmac or token",
        ),
        (
            "name: a, path: /a, plugin: p, secret_ref: gh, token_header: X-Key",
            "webhooks.endpoints[0].token_header",
            "`token_header` applies only to `auth: token`",
        ),
        (
            "name: a, path: /a, plugin: p, secret_ref: gh, signature_header: 'X Sig'",
            "webhooks.endpoints[0].signature_header",
            "invalid header name `X Sig`",
        ),
        (
            "name: a, path: /a, plugin: 'p q', secret_ref: gh",
            "webhooks.endpoints[0].plugin",
            "invalid value `p q`: expected a word without spaces",
        ),
    ] {
        check(&hook(fields), path, message);
    }
    check(
        "webhooks: [{name: a, path: /a, plugin: p, secret_ref: gh}]\n",
        "webhooks.endpoints[0].secret_ref",
        "`gh` names no entry of `tokens` (no tokens are declared)",
    );
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        &format!("{TOKENS}webhooks:\n  listen: 'x:1'\n  endpoints:\n    - {{name: a, path: /a, plugin: p, secret_ref: gh}}\n    - {{name: a, path: /b, plugin: p, secret_ref: gh}}\n"),
    );
    refused(
        &tree,
        "config.yaml",
        "webhooks.endpoints[1].name",
        &format!(
            "duplicate webhook name `a` (also used by webhooks.endpoints[0] in {})",
            tree.path("config.yaml").display()
        ),
    );
}

#[test]
fn webhooks_need_their_own_listener() {
    warns(
        &format!("{TOKENS}webhooks: [{{name: a, path: /a, plugin: p, secret_ref: gh}}]\n"),
        &["webhooks: endpoints are declared but `webhooks.listen` is not set; nothing serves them"],
    );
    check(
        "api: {enabled: true, listen: '127.0.0.1:8080'}\nwebhooks: {listen: '127.0.0.1:8080'}\n",
        "webhooks.listen",
        "`127.0.0.1:8080` is also `api.listen`; the webhook listener needs its own address",
    );
    check(
        "webhooks: 8091\n",
        "webhooks",
        "expected a mapping (listen, endpoints) or a list of endpoints, found `8091`",
    );
    warns(
        "webhooks: {listen: 'x:1', endpionts: []}\n",
        &["webhooks.endpionts: unknown key `endpionts`; did you mean `endpoints`?"],
    );
}

#[test]
fn an_endpoint_whose_token_was_dropped_is_named() {
    let tree = pinned_tree("{}", None, false);
    tree.write(
        "hooks.yaml",
        "webhooks: {listen: 'x:1', endpoints: [{name: h, path: /h, plugin: p, secret_ref: cli}]}\n",
    );
    let text = std::fs::read_to_string(tree.path("config.yaml")).unwrap();
    tree.write(
        "config.yaml",
        &text.replace("[tokens.yaml]", "[tokens.yaml, hooks.yaml]"),
    );
    let loaded = tree.load().unwrap();
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert_eq!(
        warnings[1],
        format!(
            "{}: webhooks.endpoints[0].secret_ref: token `cli` was dropped; webhook `h` refuses every request",
            tree.path("hooks.yaml").display()
        )
    );
}
