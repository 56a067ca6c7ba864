use super::*;
use crate::config::{ApiToken, NamedToken, Webhooks};
use std::path::PathBuf;

/// The credential of a request with this `Authorization` header, or none.
fn bearer_header(value: Option<&[u8]>) -> Credential<'_> {
    value.map_or(Credential::None, Credential::Header)
}

/// A config whose `api.auth.tokens` hold `api` (token, scopes) and whose
/// `tokens:` hold `named` (name, key, scopes).
fn config(api: &[(&str, &[&str])], named: &[(&str, &str, &[&str])]) -> Config {
    let strings = |scopes: &[&str]| scopes.iter().map(|s| s.to_string()).collect();
    let mut config = crate::config::Config {
        dir: PathBuf::from("/etc/ductile"),
        files: Vec::new(),
        service: test_service(),
        plugin_roots: Vec::new(),
        state: crate::config::State {
            path: PathBuf::from("/etc/ductile/ductile.db"),
            synchronous: crate::config::Synchronous::Normal,
            min_free_bytes: 0,
            replication: crate::config::Replication::Off,
        },
        api: crate::config::Api::default(),
        plugins: Default::default(),
        tokens: Vec::new(),
        webhooks: Webhooks::default(),
        routes: Vec::new(),
        pipelines: Vec::new(),
        extra: Default::default(),
        relay: Default::default(),
        inactive: Vec::new(),
    };
    for (index, (token, scopes)) in api.iter().enumerate() {
        config.api.auth_tokens.push(ApiToken {
            token: Secret::new(token.to_string()),
            scopes: strings(scopes),
            file: PathBuf::from("/etc/ductile/config.yaml"),
            origin: format!("api.auth.tokens[{index}]"),
        });
    }
    for (index, (name, key, scopes)) in named.iter().enumerate() {
        config.tokens.push(NamedToken {
            name: name.to_string(),
            key: Secret::new(key.to_string()),
            scopes: strings(scopes),
            scopes_file: None,
            scopes_hash: None,
            file: PathBuf::from("/etc/ductile/tokens.yaml"),
            origin: format!("tokens[{index}]"),
        });
    }
    config
}

fn test_service() -> crate::config::Service {
    use std::time::Duration;
    crate::config::Service {
        name: "ductile".to_string(),
        tick_interval: Duration::from_secs(60),
        log_level: "info".to_string(),
        dedupe_ttl: Duration::from_secs(86_400),
        job_log_retention: Duration::from_secs(30 * 86_400),
        job_queue_retention: Duration::from_secs(86_400),
        max_workers: 1,
        strict_mode: false,
        allow_symlinks: false,
        plugin_env_passthrough: Vec::new(),
        shutdown_timeout: Duration::from_secs(30),
        max_response_events: 1000,
        container_engine: None,
    }
}

/// The decision for a token holding `scope` alone, asking for `need`.
fn decide(scope: &str, need: &Need) -> Result<Caller, AuthError> {
    let (tokens, _) = Tokens::build(&config(&[("tok", &[scope])], &[]));
    tokens.authorize(bearer_header(Some(b"Bearer tok")), need)
}

fn plugin(name: &str, write: bool) -> Need {
    Need::Plugin {
        plugin: name.to_string(),
        write,
    }
}

// ---- scopes × needs ----

#[test]
fn every_scope_against_every_need() {
    use Area::{Events, Jobs, Plugin};
    use Level::{Ro, Rw};
    let needs = [
        ("public", Need::Public),
        ("plugin:ro", Need::Area(Plugin, Ro)),
        ("plugin:rw", Need::Area(Plugin, Rw)),
        ("jobs:ro", Need::Area(Jobs, Ro)),
        ("jobs:rw", Need::Area(Jobs, Rw)),
        ("events:ro", Need::Area(Events, Ro)),
        ("events:rw", Need::Area(Events, Rw)),
        ("echo read", plugin("echo", false)),
        ("echo write", plugin("echo", true)),
        ("other read", plugin("other", false)),
        ("other write", plugin("other", true)),
        ("admin", Need::Admin),
    ];
    // One row per scope: which of the needs above (in order) it allows.
    // `P` = public, then plugin ro/rw, jobs ro/rw, events ro/rw, echo r/w,
    // other r/w, admin.
    let table: &[(&str, &str)] = &[
        ("*", "P RR RR RR RR RR A"),
        ("admin", "P RR RR RR RR RR A"),
        ("plugin:ro", "P R. .. .. R. R. ."),
        ("plugin:rw", "P RR .. .. RR RR ."),
        ("jobs:ro", "P .. R. .. .. .. ."),
        ("jobs:rw", "P .. RR .. .. .. ."),
        ("events:ro", "P .. .. R. .. .. ."),
        ("events:rw", "P .. .. RR .. .. ."),
        ("read:plugin", "P R. .. .. R. R. ."),
        ("write:plugin", "P RR .. .. RR RR ."),
        ("read:jobs", "P .. R. .. .. .. ."),
        ("write:jobs", "P .. RR .. .. .. ."),
        ("read:events", "P .. .. R. .. .. ."),
        ("write:events", "P .. .. RR .. .. ."),
        ("echo:ro", "P .. .. .. R. .. ."),
        ("echo:rw", "P .. .. .. RR .. ."),
        ("other:rw", "P .. .. .. .. RR ."),
        ("bogus", "P .. .. .. .. .. ."),
        ("jobs:admin", "P .. .. .. .. .. ."),
        ("read:echo", "P .. .. .. .. .. ."),
        ("JOBS:RO", "P .. .. .. .. .. ."),
        ("", "P .. .. .. .. .. ."),
    ];
    for (scope, row) in table {
        let cells: Vec<bool> = row
            .chars()
            .filter(|c| *c != ' ')
            .map(|c| c != '.')
            .collect();
        assert_eq!(cells.len(), needs.len(), "{scope}");
        for ((label, need), allowed) in needs.iter().zip(cells) {
            let got = decide(scope, need);
            if allowed {
                assert!(got.is_ok(), "`{scope}` should allow {label}: {got:?}");
            } else {
                assert_eq!(
                    got,
                    Err(AuthError::Forbidden),
                    "`{scope}` must refuse {label}"
                );
            }
        }
    }
}

#[test]
fn scopes_add_up() {
    let (tokens, _) = Tokens::build(&config(&[("tok", &["jobs:ro", "withings:rw"])], &[]));
    let ask = |need: &Need| {
        tokens
            .authorize(bearer_header(Some(b"Bearer tok")), need)
            .is_ok()
    };
    assert!(ask(&Need::Area(Area::Jobs, Level::Ro)));
    assert!(ask(&plugin("withings", true)));
    assert!(!ask(&Need::Area(Area::Jobs, Level::Rw)));
    assert!(!ask(&plugin("garmin", false)));
    assert!(!ask(&Need::Area(Area::Plugin, Level::Ro)));
}

#[test]
fn unknown_scopes_are_named_and_grant_nothing() {
    let mut config = config(
        &[("t1", &["jobs:ro", "jobs:write"])],
        &[("cli", "t2", &["*", "reed:jobs"])],
    );
    config.tokens[0].scopes_file = Some(PathBuf::from("/etc/ductile/scopes/cli.json"));
    let (tokens, warnings) = Tokens::build(&config);
    let warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "/etc/ductile/config.yaml: api.auth.tokens[0].scopes[1]: token `api.auth.tokens[0]`: unknown scope `jobs:write`; it grants nothing",
            "/etc/ductile/scopes/cli.json: scopes[1]: token `cli`: unknown scope `reed:jobs`; it grants nothing",
        ]
    );
    assert_eq!(
        tokens.authorize(
            bearer_header(Some(b"Bearer t1")),
            &Need::Area(Area::Jobs, Level::Rw)
        ),
        Err(AuthError::Forbidden)
    );
}

// ---- the header ----

#[test]
fn only_an_exact_bearer_header_is_read() {
    let (tokens, _) = Tokens::build(&config(&[("x", &["*"])], &[]));
    let need = Need::Admin;
    let ask = |header: Option<&[u8]>| tokens.authorize(bearer_header(header), &need);
    for ok in [&b"Bearer x"[..], b"bearer x", b"BEARER x", b"bEaReR x"] {
        assert!(ask(Some(ok)).is_ok(), "{}", String::from_utf8_lossy(ok));
    }
    for bad in [
        &b"Bearer  x"[..],
        b"Bearer x ",
        b" Bearer x",
        b"Bearer\tx",
        b"Bearer x\n",
        b"Bearer",
        b"Bearer ",
        b"Basic x",
        b"x",
        b"",
        b"Bearer y",
        b"Bearerx",
    ] {
        assert_eq!(
            ask(Some(bad)),
            Err(AuthError::Unknown),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(ask(None), Err(AuthError::Missing));
}

#[test]
fn public_needs_no_header() {
    let (tokens, _) = Tokens::build(&config(&[], &[]));
    assert!(tokens.is_empty());
    assert_eq!(
        tokens.authorize(bearer_header(None), &Need::Public),
        Ok(Caller {
            name: "anonymous".to_string()
        })
    );
    assert_eq!(
        tokens.authorize(
            bearer_header(Some(b"Bearer x")),
            &Need::Area(Area::Jobs, Level::Ro)
        ),
        Err(AuthError::Unknown)
    );
}

#[test]
fn the_caller_is_named_after_its_token_never_its_secret() {
    let (tokens, _) = Tokens::build(&config(
        &[("first", &["*"]), ("second", &["jobs:ro"])],
        &[("admin-cli", "third", &["jobs:ro"])],
    ));
    let need = Need::Area(Area::Jobs, Level::Ro);
    let name = |header: &[u8]| {
        tokens
            .authorize(bearer_header(Some(header)), &need)
            .map(|c| c.name)
    };
    assert_eq!(name(b"Bearer first"), Ok("api.auth.tokens[0]".to_string()));
    assert_eq!(name(b"Bearer second"), Ok("api.auth.tokens[1]".to_string()));
    assert_eq!(name(b"Bearer third"), Ok("admin-cli".to_string()));
    let debug = format!("{tokens:?}");
    assert_eq!(
        debug,
        "[\"api.auth.tokens[0]\", \"api.auth.tokens[1]\", \"admin-cli\"]"
    );
}

#[test]
fn errors_map_to_statuses_with_short_messages() {
    assert_eq!(AuthError::Missing.status(), 401);
    assert_eq!(AuthError::Unknown.status(), 401);
    assert_eq!(AuthError::Forbidden.status(), 403);
    assert_eq!(AuthError::Missing.to_string(), "missing bearer token");
    assert_eq!(AuthError::Unknown.to_string(), "invalid bearer token");
    assert_eq!(
        AuthError::Forbidden.to_string(),
        "token lacks the scope for this request"
    );
}

#[test]
fn secrets_are_found_by_token_name() {
    let (tokens, _) = Tokens::build(&config(&[("api-token", &["*"])], &[("gh", "s3cret", &[])]));
    assert_eq!(tokens.secret("gh"), Some(&b"s3cret"[..]));
    assert_eq!(tokens.secret("nope"), None);
    // API tokens have no name to refer to.
    assert_eq!(tokens.secret("api.auth.tokens[0]"), None);
}

// ---- webhook secrets ----

/// The HMAC-SHA256 of `body` under `secret`, as lower-case hex.
fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn hmac_signatures_are_checked_in_every_accepted_spelling() {
    let (secret, body) = (b"It's a Secret to Everybody", b"Hello, World!");
    let hex = sign(secret, body);
    // GitHub's documented example signature for this secret and body.
    assert_eq!(
        hex,
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
    for good in [
        hex.clone(),
        format!("sha256={hex}"),
        format!("SHA256={hex}"),
        hex.to_uppercase(),
        format!("sha256={}", hex.to_uppercase()),
        format!(" sha256={hex} "),
    ] {
        assert!(verify_hmac(secret, body, good.as_bytes()), "{good}");
    }
    let mut flipped = hex.clone().into_bytes();
    flipped[0] = if flipped[0] == b'7' { b'8' } else { b'7' };
    for bad in [
        String::from_utf8(flipped).unwrap(),
        format!("sha1={hex}"),
        format!("sha256={}", &hex[..62]),
        format!("sha256={hex}00"),
        format!("sha256= {hex}"),
        "sha256=".to_string(),
        "zz".repeat(32),
        "garbage".to_string(),
        String::new(),
    ] {
        assert!(!verify_hmac(secret, body, bad.as_bytes()), "{bad}");
    }
    assert!(!verify_hmac(secret, b"Hello, World?", hex.as_bytes()));
    assert!(!verify_hmac(b"other", body, hex.as_bytes()));
    assert!(!verify_hmac(b"", body, sign(b"", body).as_bytes()));
    // Bytes that are not ASCII are no signature.
    assert!(!verify_hmac(secret, body, "é".repeat(32).as_bytes()));
}

#[test]
fn constant_time_eq_compares_whole_values() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"abcd"));
    assert!(constant_time_eq(b"", b""));
}
