//! Dashboard sign-in: a token exchanged once (`POST /session`) for a session
//! cookie, `HttpOnly; SameSite=Strict`, that the API then accepts in place of
//! `Authorization: Bearer` with that token's scopes. The page never keeps the
//! token, and an `EventSource` (which cannot send headers) can open the event
//! stream with the cookie.
//!
//! A request that changes anything with the cookie must also carry the CSRF
//! token (`X-CSRF-Token`): a keyed hash of the cookie value, so it needs no
//! storage and only a page that can read `GET /session` (same origin) learns it.
//!
//! Owns: the cookie's name, value and flags, the CSRF derivation. Must not:
//! log, store or echo a token or a cookie value (the ledger keeps hashes).

use super::Req;
use super::auth::constant_time_eq;

/// The cookie's name.
pub const COOKIE: &str = "ductile_session";

/// The header a mutation with the cookie carries the CSRF token in.
const CSRF_HEADER: &str = "x-csrf-token";

/// Separates the CSRF derivation from every other use of a cookie value.
const CSRF_CONTEXT: &str = "ductile dashboard session 2026-12 CSRF token";

/// The session cookie's value in `req`, if it carries one.
pub fn presented(req: &Req) -> Option<&str> {
    req.headers
        .iter()
        .filter(|(name, _)| name == "cookie")
        .filter_map(|(_, value)| std::str::from_utf8(value).ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// A new cookie value (see [`super::auth::new_secret`]).
pub fn new_value() -> String {
    super::auth::new_secret()
}

/// The ledger's key of a session: the BLAKE3 of its cookie value.
pub fn id_hash(value: &str) -> String {
    blake3::hash(value.as_bytes()).to_hex().to_string()
}

/// The CSRF token of the session whose cookie is `value` (128 bits, hex).
pub fn csrf_token(value: &str) -> String {
    let key = blake3::derive_key(CSRF_CONTEXT, value.as_bytes());
    key[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `req` carries the CSRF token of the session whose cookie is `value`.
pub fn csrf_ok(req: &Req, value: &str) -> bool {
    req.header(CSRF_HEADER)
        .is_some_and(|sent| constant_time_eq(sent.trim_ascii(), csrf_token(value).as_bytes()))
}

/// Whether `method` can change anything (so the CSRF token is required).
pub fn mutating(method: &str) -> bool {
    !matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// Whether the browser reached us over TLS through a proxy, so the cookie
/// must be `Secure` (over plain HTTP a browser would drop such a cookie).
pub fn over_tls(req: &Req) -> bool {
    req.header("x-forwarded-proto")
        .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"https"))
}

/// The `Set-Cookie` value that opens a session for `max_age_secs`, limited
/// to the API's paths (`base_path/`).
pub fn set_cookie(value: &str, base_path: &str, max_age_secs: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={value}; Path={base_path}/; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}"
    )
}

/// The `Set-Cookie` value that makes the browser forget the cookie.
pub fn clear_cookie(base_path: &str, secure: bool) -> String {
    set_cookie("", base_path, 0, secure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)], method: &str) -> Req {
        Req {
            method: method.into(),
            path: "/jobs".into(),
            segments: vec!["jobs".into()],
            query: Vec::new(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: Vec::new(),
            route: "-",
        }
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let r = req(&[("cookie", "a=1; ductile_session=abc ; b=2")], "GET");
        assert_eq!(presented(&r), Some("abc"));
        assert_eq!(presented(&req(&[("cookie", "a=1")], "GET")), None);
        assert_eq!(
            presented(&req(&[("cookie", "ductile_session=")], "GET")),
            None
        );
        assert_eq!(
            presented(&req(
                &[("cookie", "x=1"), ("cookie", "ductile_session=z")],
                "GET"
            )),
            Some("z")
        );
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_session() {
        let (a, b) = (new_value(), new_value());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(csrf_token(&a), csrf_token(&a));
        assert_ne!(csrf_token(&a), csrf_token(&b));
        assert_eq!(csrf_token(&a).len(), 32);
        assert!(csrf_ok(
            &req(&[("x-csrf-token", &csrf_token(&a))], "POST"),
            &a
        ));
        assert!(!csrf_ok(
            &req(&[("x-csrf-token", &csrf_token(&b))], "POST"),
            &a
        ));
        assert!(!csrf_ok(&req(&[], "POST"), &a));
        assert!(mutating("POST") && mutating("DELETE") && !mutating("GET"));
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_scoped_to_the_api() {
        assert_eq!(
            set_cookie("v", "/ductile", 60, true),
            "ductile_session=v; Path=/ductile/; Max-Age=60; HttpOnly; SameSite=Strict; Secure"
        );
        assert_eq!(
            clear_cookie("", false),
            "ductile_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
        );
        assert!(over_tls(&req(&[("x-forwarded-proto", "HTTPS")], "GET")));
        assert!(!over_tls(&req(&[], "GET")));
    }
}
