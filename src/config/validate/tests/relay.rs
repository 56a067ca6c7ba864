use super::*;

const TOKENS: &str = "tokens:\n  - {name: relay-lab-v1, key: sekrit-one, scopes: [\"*\"]}\n  - {name: relay-lab-v2, key: sekrit-two, scopes: [\"*\"]}\n";

#[test]
fn reads_both_relay_files() {
    let (_tree, loaded) = load(&format!(
        "{TOKENS}instances:\n  - {{name: lab, base_url: 'https://lab.example/', ingress_path: /ingest/peer/home, secret_ref: relay-lab-v1, key_id: v1, timeout: 3s, allow: [backup.ready]}}\nremote_ingress:\n  listen_path: /ingest/peer/\n  max_body_size: 64KB\n  allowed_clock_skew: 2m\n  peers:\n    - name: home-primary\n      secret_ref: relay-lab-v1\n      key_id: v1\n      keys: [{{key_id: v2, secret_ref: relay-lab-v2}}]\n      accept: [backup.ready]\n      baggage: {{allow: [trace_id]}}\n"
    ));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert!(loaded.config.inactive.is_empty());
    let relay = &loaded.config.relay;
    let lab = relay.instance("lab").unwrap();
    assert_eq!(lab.url(), "https://lab.example/ingest/peer/home");
    assert_eq!(lab.secret.expose(), "sekrit-one");
    assert_eq!(lab.timeout, secs(3));
    assert!(lab.allows("backup.ready") && !lab.allows("other"));
    let ingress = relay.ingress.as_ref().unwrap();
    assert_eq!(ingress.listen_path, "/ingest/peer");
    assert_eq!(ingress.max_body_size, 64 * 1024);
    assert_eq!(ingress.allowed_clock_skew, secs(120));
    let peer = ingress.peer("home-primary").unwrap();
    let ids: Vec<_> = peer.keys.iter().map(|k| k.key_id.clone()).collect();
    assert_eq!(ids, [Some("v1".to_string()), Some("v2".to_string())]);
    assert_eq!(peer.baggage_allow, ["trace_id"]);
}

#[test]
fn refuses_bad_relay_entries_naming_the_key() {
    let inst = |body: &str| format!("{TOKENS}instances:\n  - {body}\n");
    check(
        &inst("{name: Lab, base_url: 'https://x', ingress_path: /i, secret_ref: relay-lab-v1}"),
        "instances[0].name",
        "invalid name `Lab`: use lower-case letters and digits joined by single hyphens (`home-primary`)",
    );
    check(
        &inst("{name: lab, base_url: 'ftp://x', ingress_path: /i, secret_ref: relay-lab-v1}"),
        "instances[0].base_url",
        "invalid base_url `ftp://x`: expected an absolute http:// or https:// URL",
    );
    check(
        &inst(
            "{name: lab, base_url: 'http://lab.example', ingress_path: /i, secret_ref: relay-lab-v1}",
        ),
        "instances[0].base_url",
        "invalid base_url `http://lab.example`: plain http is allowed only to a loopback host; use https or set `allow_insecure: true`",
    );
    check(
        &inst("{name: lab, base_url: 'https://x', ingress_path: /i, secret_ref: relay-lab-v3}"),
        "instances[0].secret_ref",
        "`relay-lab-v3` names no entry of `tokens`; did you mean `relay-lab-v1`?",
    );
    let tree = TempTree::new();
    let file = tree.write(
        "config.yaml",
        &format!("{TOKENS}instances:\n  - {{name: lab, base_url: 'https://x', ingress_path: /i, secret_ref: relay-lab-v1}}\n  - {{name: lab, base_url: 'https://y', ingress_path: /i, secret_ref: relay-lab-v1}}\n"),
    );
    assert_eq!(
        tree.error(&[]),
        format!(
            "{0}: instances[1].name: duplicate relay instance `lab` (also instances[0] in {0})",
            file.display()
        )
    );
    check(
        &format!(
            "{TOKENS}remote_ingress:\n  listen_path: /in\n  peers: [{{name: a, secret_ref: relay-lab-v1}}]\n"
        ),
        "remote_ingress.peers[0]",
        "`require_key_id` is true, so every key of a peer needs a `key_id`",
    );
}
