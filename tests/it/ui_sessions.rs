//! The dashboard's sign-in over real HTTP: a token exchanged for an
//! `HttpOnly; SameSite=Strict` session cookie, the cookie as a credential
//! with the token's scopes, the CSRF token every change made with it needs,
//! sign-out, expiry, a removed token, `api.ui: false` and `api.base_path`.

use crate::http::{ADMIN, Answer, Api, HOOK_SECRET, JOBS_RO, call, get, raw};

/// A request with extra header lines.
fn send(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    raw(addr, req.as_bytes())
}

/// A signed-in session: its cookie value and CSRF token.
struct Session {
    cookie: String,
    csrf: String,
    set_cookie: String,
    body: serde_json::Value,
}

impl Session {
    fn cookie_header(&self) -> String {
        format!("theme=dark; ductile_session={}", self.cookie)
    }
}

fn sign_in_at(addr: &str, path: &str, token: &str, extra: &[(&str, &str)]) -> Session {
    let mut headers = vec![("Content-Type", "application/json")];
    headers.extend_from_slice(extra);
    let a = send(
        addr,
        "POST",
        path,
        &headers,
        &format!("{{\"token\": \"{token}\"}}"),
    );
    assert_eq!(a.status, 201, "{}", a.text());
    let set_cookie = a.header("Set-Cookie").expect("Set-Cookie").to_string();
    let cookie = set_cookie
        .strip_prefix("ductile_session=")
        .and_then(|rest| rest.split(';').next())
        .expect("the session cookie")
        .to_string();
    let body = a.json();
    Session {
        cookie,
        csrf: body["csrf_token"].as_str().unwrap().to_string(),
        set_cookie,
        body,
    }
}

fn sign_in(api: &Api, token: &str) -> Session {
    sign_in_at(&api.api, "/session", token, &[])
}

fn with_cookie(api: &Api, s: &Session, method: &str, path: &str, csrf: Option<&str>) -> Answer {
    let cookie = s.cookie_header();
    let mut headers = vec![("Cookie", cookie.as_str())];
    if let Some(c) = csrf {
        headers.push(("X-CSRF-Token", c));
    }
    send(&api.api, method, path, &headers, "")
}

#[test]
fn a_token_signs_in_for_an_http_only_strict_cookie_that_acts_with_its_scopes() {
    let api = Api::start_with("sess", "", crate::http::WEBHOOKS);
    let s = sign_in(&api, JOBS_RO);
    assert_eq!(
        s.set_cookie,
        format!(
            "ductile_session={}; Path=/; Max-Age=43200; HttpOnly; SameSite=Strict",
            s.cookie
        )
    );
    assert_eq!(s.cookie.len(), 64);
    assert_eq!(s.body["name"], "api.auth.tokens[3]");
    assert_eq!(s.body["scopes"], serde_json::json!(["jobs:ro"]));
    assert_eq!(s.csrf.len(), 32);
    assert!(!s.body.to_string().contains(JOBS_RO), "the token is echoed");

    // The ledger keeps hashes only: neither the cookie nor the token.
    let rows = api
        .dir
        .texts("SELECT id_hash || ' ' || token_hash || ' ' || token_name FROM ui_sessions");
    assert_eq!(rows.len(), 1);
    let row = rows[0].clone().unwrap();
    assert!(!row.contains(&s.cookie) && !row.contains(JOBS_RO), "{row}");

    // The cookie is a credential with the token's scopes, no more.
    assert_eq!(with_cookie(&api, &s, "GET", "/jobs", None).status, 200);
    assert_eq!(with_cookie(&api, &s, "HEAD", "/events", None).status, 403);
    assert_eq!(
        with_cookie(&api, &s, "GET", "/analytics/queue", None).status,
        403
    );
    let shown = with_cookie(&api, &s, "GET", "/session", None);
    assert_eq!(shown.status, 200);
    assert_eq!(shown.json()["csrf_token"], s.csrf.as_str());
    assert_eq!(shown.header("Cache-Control"), Some("no-store"));

    // A change made with the cookie needs the session's CSRF token.
    let admin = sign_in(&api, ADMIN);
    let jobs = || api.dir.count("SELECT COUNT(*) FROM job_queue");
    let before = jobs();
    for csrf in [
        None,
        Some("0123456789abcdef0123456789abcdef"),
        Some(s.csrf.as_str()),
    ] {
        let a = with_cookie(&api, &admin, "POST", "/plugin/echo/poll", csrf);
        assert_eq!(a.status, 403, "{csrf:?}: {}", a.text());
        assert!(a.json()["error"].as_str().unwrap().contains("X-CSRF-Token"));
    }
    assert_eq!(jobs(), before, "a refused change enqueued a job");
    let a = with_cookie(&api, &admin, "POST", "/plugin/echo/poll", Some(&admin.csrf));
    assert_eq!(a.status, 202, "{}", a.text());
    assert_eq!(jobs(), before + 1);
    // With the right CSRF token, scopes still decide.
    let a = with_cookie(&api, &s, "POST", "/system/reload", Some(&s.csrf));
    assert_eq!(a.status, 403);
    // A bearer header wins over a cookie, and needs no CSRF token.
    let cookie = admin.cookie_header();
    let bearer = format!("Bearer {JOBS_RO}");
    let a = send(
        &api.api,
        "POST",
        "/plugin/echo/poll",
        &[("Cookie", &cookie), ("Authorization", &bearer)],
        "{}",
    );
    assert_eq!(a.status, 403, "the bearer token's scopes apply");

    // Behind a TLS proxy the cookie is Secure.
    let tls = sign_in_at(
        &api.api,
        "/session",
        ADMIN,
        &[("X-Forwarded-Proto", "https")],
    );
    assert!(tls.set_cookie.ends_with("; Secure"), "{}", tls.set_cookie);

    // Refusals: a wrong token, a form post, a body without a token.
    let json = [("Content-Type", "application/json")];
    let a = send(&api.api, "POST", "/session", &json, "{\"token\": \"nope\"}");
    assert_eq!(a.status, 401);
    assert!(a.header("Set-Cookie").is_none());
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let a = send(
        &api.api,
        "POST",
        "/session",
        &form,
        &format!("token={ADMIN}"),
    );
    assert_eq!(
        a.status, 415,
        "a cross-site form must not sign a browser in"
    );
    assert_eq!(send(&api.api, "POST", "/session", &json, "{}").status, 400);
    assert_eq!(send(&api.api, "POST", "/session", &json, "[1]").status, 400);

    // Signing out needs the CSRF token too, then the cookie opens nothing.
    assert_eq!(
        with_cookie(&api, &s, "DELETE", "/session", None).status,
        403
    );
    assert_eq!(with_cookie(&api, &s, "GET", "/jobs", None).status, 200);
    let out = with_cookie(&api, &s, "DELETE", "/session", Some(&s.csrf));
    assert_eq!(out.status, 200, "{}", out.text());
    assert_eq!(
        out.header("Set-Cookie"),
        Some("ductile_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict")
    );
    for path in ["/jobs", "/session"] {
        let a = with_cookie(&api, &s, "GET", path, None);
        assert_eq!(a.status, 401, "{path}");
        assert!(
            a.json()["error"]
                .as_str()
                .unwrap()
                .contains("sign in again")
        );
    }
    // A forged cookie is no better.
    let forged = Session {
        cookie: "f".repeat(64),
        ..s
    };
    assert_eq!(with_cookie(&api, &forged, "GET", "/jobs", None).status, 401);
}

#[test]
fn sessions_end_when_they_expire_or_their_token_is_removed() {
    let api = Api::start_with(
        "sess-end",
        "  session_lifetime: 10m\n",
        crate::http::WEBHOOKS,
    );
    let s = sign_in(&api, JOBS_RO);
    assert!(s.set_cookie.contains("; Max-Age=600;"), "{}", s.set_cookie);
    let expires = s.body["expires_at"].as_str().unwrap();
    assert_eq!(
        api.dir
            .text("SELECT expires_at FROM ui_sessions")
            .as_deref(),
        Some(expires)
    );
    assert_eq!(with_cookie(&api, &s, "GET", "/jobs", None).status, 200);
    api.dir
        .db()
        .execute(
            "UPDATE ui_sessions SET expires_at = '2026-01-01T00:00:00.000000Z'",
            [],
        )
        .unwrap();
    assert_eq!(with_cookie(&api, &s, "GET", "/jobs", None).status, 401);

    // Removing a token from the config ends the sessions it opened.
    let s = sign_in(&api, JOBS_RO);
    let admin = sign_in(&api, ADMIN);
    assert_eq!(with_cookie(&api, &s, "GET", "/jobs", None).status, 200);
    let path = api.dir.path.join("config.yaml");
    let config = std::fs::read_to_string(&path).unwrap();
    let without = config.replace(
        &format!("      - token: {JOBS_RO}\n        scopes: [\"jobs:ro\"]\n"),
        "",
    );
    assert_ne!(without, config);
    std::fs::write(&path, without).unwrap();
    let r = call(&api.api, "POST", "/system/reload", Some(ADMIN), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(with_cookie(&api, &s, "GET", "/jobs", None).status, 401);
    assert_eq!(with_cookie(&api, &s, "GET", "/session", None).status, 401);
    assert_eq!(with_cookie(&api, &admin, "GET", "/jobs", None).status, 200);
}

#[test]
fn with_the_dashboard_off_there_is_no_session_and_a_cookie_is_no_credential() {
    let api = Api::start_with("sess-off", "  ui: false\n", crate::http::WEBHOOKS);
    let json = [("Content-Type", "application/json")];
    let body = format!("{{\"token\": \"{ADMIN}\"}}");
    let a = send(&api.api, "POST", "/session", &json, &body);
    assert_eq!(a.status, 404, "{}", a.text());
    assert!(a.header("Set-Cookie").is_none());
    let cookie = format!("ductile_session={}", "a".repeat(64));
    let a = send(&api.api, "GET", "/jobs", &[("Cookie", &cookie)], "");
    assert_eq!(a.status, 401);
    assert_eq!(a.json()["error"], "missing bearer token");
    assert_eq!(get(&api.api, "/session", None).status, 404);
    assert_eq!(get(&api.api, "/jobs", Some(ADMIN)).status, 200);
}

#[test]
fn under_a_base_path_every_route_and_the_cookie_live_below_the_prefix() {
    let api = Api::start_with(
        "base-path",
        "  base_path: /ductile/\n  ui: true\n",
        crate::http::WEBHOOKS,
    );
    assert_eq!(get(&api.api, "/ductile/healthz", None).status, 200);
    assert_eq!(
        get(&api.api, "/ductile", None).json()["name"],
        "Ductile Gateway"
    );
    let outside = get(&api.api, "/healthz", None);
    assert_eq!(outside.status, 404);
    assert!(
        outside.text().contains("api.base_path `/ductile`"),
        "{}",
        outside.text()
    );
    assert_eq!(get(&api.api, "/ductilex/healthz", None).status, 404);
    assert_eq!(get(&api.api, "/ductile/jobs", Some(ADMIN)).status, 200);
    let moved = get(&api.api, "/ductile/ui", None);
    assert_eq!((moved.status, moved.header("Location")), (308, Some("ui/")));
    let page = get(&api.api, "/ductile/ui/", None);
    assert_eq!(page.status, 200);
    for secret in [ADMIN, JOBS_RO, HOOK_SECRET] {
        assert!(!page.text().contains(secret));
    }
    let doc = crate::contract::served_document_at(&api.api, "/ductile/openapi.json");
    assert_eq!(doc["servers"], serde_json::json!([{ "url": "/ductile" }]));

    let s = sign_in_at(&api.api, "/ductile/session", ADMIN, &[]);
    assert!(
        s.set_cookie.contains("; Path=/ductile/;"),
        "{}",
        s.set_cookie
    );
    let cookie = s.cookie_header();
    let a = send(&api.api, "GET", "/ductile/jobs", &[("Cookie", &cookie)], "");
    assert_eq!(a.status, 200, "{}", a.text());
}

/// Every operation of the OpenAPI document (core routes and every plugin
/// command), so a route added later is covered without touching this test.
#[test]
fn every_private_route_needs_a_credential_and_every_change_the_csrf_token() {
    let api = Api::start_with("sess-sweep", "", crate::http::WEBHOOKS);
    let doc = crate::contract::served_document_at(&api.api, "/openapi.json");
    let admin = sign_in(&api, ADMIN);
    let jobs_before = api.dir.count("SELECT COUNT(*) FROM job_queue");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (template, ops) in doc["paths"].as_object().unwrap() {
        // Any value will do: the credential is decided before the path is looked up.
        let path: String = template
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for (method, op) in ops.as_object().unwrap() {
            let method = method.to_ascii_uppercase();
            if op["security"] == serde_json::json!([]) {
                continue;
            }
            checked += 1;
            let bare = send(&api.api, &method, &path, &[], "");
            if bare.status != 401 {
                wrong.push(format!(
                    "{method} {path} without credential: {}",
                    bare.status
                ));
            }
            if method != "GET" && method != "HEAD" {
                let a = with_cookie(&api, &admin, &method, &path, None);
                let csrf_refusal = a.status == 403
                    && a.json()["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("X-CSRF-Token"));
                if !csrf_refusal {
                    wrong.push(format!(
                        "{method} {path} with the cookie, no CSRF token: {} {}",
                        a.status,
                        a.text()
                    ));
                }
            }
        }
    }
    assert!(checked >= 30, "only {checked} operations in the document");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        api.dir.count("SELECT COUNT(*) FROM job_queue"),
        jobs_before,
        "a refused request enqueued work"
    );
    // The session survived the sweep (the sign-out without a CSRF token was refused).
    assert_eq!(
        with_cookie(&api, &admin, "GET", "/session", None).status,
        200
    );
}
