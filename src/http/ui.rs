//! The web dashboard at `/ui/` on the API listener: three static files built
//! into the binary, no templating and no data. Everything the page shows it
//! reads from the API itself, signed in with a session cookie it traded its
//! user's token for (`http::session`), so the page can do exactly what that
//! token can do over the API and nothing more.
//!
//! Owns: the assets, their `ETag`s and gzip bodies, the `api.ui` decision.
//! Must not: read the ledger, the config's secrets, or any credential; every
//! byte it serves is the same for every caller.

use std::io::Write;
use std::sync::OnceLock;

use super::request::Outcome;
use super::{Reply, Req};
use crate::config::Api;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// Every file of the dashboard; `index.html` answers `/ui/`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("ui/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("ui/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("ui/app.css"),
    },
];

/// What the page may load and where it may connect: itself only. No inline
/// script can run, so nothing that reaches the DOM as text can become code.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// An asset's validator and its gzip body, computed once per process.
struct Prepared {
    etag: String,
    gzip: Option<Vec<u8>>,
}

static PREPARED: OnceLock<Vec<Prepared>> = OnceLock::new();

fn prepared() -> &'static [Prepared] {
    PREPARED.get_or_init(|| ASSETS.iter().map(prepare).collect())
}

fn prepare(a: &Asset) -> Prepared {
    let hash = blake3::hash(a.body).to_hex();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing into a Vec cannot fail; a failure only costs the gzip variant.
    let gzip = gz.write_all(a.body).and_then(|()| gz.finish()).ok();
    Prepared {
        etag: format!("\"{}\"", &hash[..20]),
        gzip,
    }
}

/// Whether `api` serves the dashboard: `api.ui` when set, otherwise on for a
/// listener bound to a loopback address only (nobody else can reach it
/// without a proxy the operator set up on purpose).
pub fn served(api: &Api) -> bool {
    api.ui.unwrap_or_else(|| loopback(&api.listen))
}

/// Whether `listen` (`host:port`) binds a loopback address.
fn loopback(listen: &str) -> bool {
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The total size of the embedded assets, uncompressed.
pub fn assets_size() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

/// Answers a request under `/ui`, or `None` when the path is not the
/// dashboard's (the API routes it then).
pub fn handle(api: &Api, req: &mut Req) -> Option<Outcome> {
    if req.segments.first().map(String::as_str) != Some("ui") {
        return None;
    }
    req.route = "/ui/";
    if !served(api) {
        // As if the route did not exist: nothing tells a scanner it could be on.
        return Some(
            Reply::error(404, &format!("no route for {} {}", req.method, req.path)).into(),
        );
    }
    if req.method != "GET" && req.method != "HEAD" {
        return Some(
            Reply::error(
                405,
                &format!("{} is not allowed on {}", req.method, req.path),
            )
            .with("Allow", "GET, HEAD".into())
            .into(),
        );
    }
    let name = match req.segments.len() {
        // `/ui` without its slash: the page's relative links need it.
        1 if !req.path.ends_with('/') => {
            return Some(
                Reply::text(308, "text/plain; charset=utf-8", String::new())
                    .with("Location", "ui/".into())
                    .into(),
            );
        }
        1 => "index.html",
        2 => req.segments[1].as_str(),
        _ => "",
    };
    let Some(at) = ASSETS.iter().position(|a| a.name == name) else {
        return Some(Reply::error(404, &format!("no dashboard file `{}`", req.path)).into());
    };
    Some(answer(req, &ASSETS[at], &prepared()[at]).into())
}

fn answer(req: &Req, asset: &Asset, prep: &Prepared) -> Reply {
    let fresh = req
        .header("if-none-match")
        .and_then(|v| std::str::from_utf8(v).ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == prep.etag));
    let gzip_ok = req
        .header("accept-encoding")
        .and_then(|v| std::str::from_utf8(v).ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|e| e.split(';').next().is_some_and(|n| n.trim() == "gzip"))
        });
    let mut reply = if fresh {
        Reply::text(304, asset.content_type, String::new())
    } else {
        match (&prep.gzip, gzip_ok) {
            (Some(gz), true) => Reply {
                status: 200,
                body: gz.clone(),
                content_type: asset.content_type,
                headers: vec![("Content-Encoding", "gzip".into())],
            },
            _ => Reply {
                status: 200,
                body: asset.body.to_vec(),
                content_type: asset.content_type,
                headers: Vec::new(),
            },
        }
    };
    reply = reply
        .with("ETag", prep.etag.clone())
        .with("Vary", "Accept-Encoding".into())
        // Revalidated on every load: a new binary's page is picked up at once.
        .with("Cache-Control", "no-cache".into())
        .with("X-Content-Type-Options", "nosniff".into())
        .with("Referrer-Policy", "no-referrer".into());
    if asset.name == "index.html" {
        reply = reply
            .with("Content-Security-Policy", CSP.into())
            .with("X-Frame-Options", "DENY".into());
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_listeners_serve_the_ui_by_default() {
        let mut api = Api::default();
        for (listen, on) in [
            ("127.0.0.1:8080", true),
            ("127.3.4.5:0", true),
            ("localhost:9000", true),
            ("[::1]:8080", true),
            ("0.0.0.0:8080", false),
            ("192.168.1.4:8080", false),
            ("[::]:8080", false),
        ] {
            api.listen = listen.into();
            assert_eq!(served(&api), on, "{listen}");
        }
        api.listen = "0.0.0.0:8080".into();
        api.ui = Some(true);
        assert!(served(&api));
        api.listen = "127.0.0.1:8080".into();
        api.ui = Some(false);
        assert!(!served(&api));
    }

    #[test]
    fn assets_stay_small_and_gzip() {
        assert!(assets_size() <= 300 * 1024, "{} bytes", assets_size());
        for (a, p) in ASSETS.iter().zip(prepared()) {
            let gz = p.gzip.as_ref().unwrap();
            assert!(gz.len() < a.body.len(), "{}", a.name);
            assert_eq!(p.etag.len(), 22);
        }
    }

    #[test]
    fn the_page_loads_no_inline_or_foreign_code() {
        let index = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(!index.contains("<script>"), "inline script");
        assert!(!index.contains("http://") && !index.contains("https://"));
        assert!(
            !index.contains("src=\"/") && !index.contains("href=\"/"),
            "absolute link"
        );
    }
}
