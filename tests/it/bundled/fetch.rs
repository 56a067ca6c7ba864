//! `fetch` against a server the test starts on 127.0.0.1: refused without an
//! explicit allow (and the server never sees a connection), fetched with one.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use super::{install, run_json};
use crate::support::TestDir;

/// A loopback server answering every connection with `body`; counts them.
fn server(body: &'static str) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            seen.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (format!("http://{addr}/page"), hits)
}

#[test]
fn fetch_is_refused_for_loopback_unless_allowed() {
    let dir = TestDir::new("bundled-fetch");
    install(&dir, "fetch");
    let (url, hits) = server("hello from the test server");
    dir.config(&format!(
        "plugins:\n  open:\n    uses: fetch\n    config:\n      url: {url}\n      timeout_seconds: 10\n  guarded:\n    uses: fetch\n    config:\n      timeout_seconds: 10\n"
    ));
    // Not allowed: refused before any connection, for good.
    let (r, v) = run_json(&dir, "guarded", "handle", &json!({"url": url}));
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(
        v["error"].as_str().unwrap().contains("egress refused"),
        "{v:#}"
    );
    assert_eq!(v["response"]["retry"], false, "{v:#}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "no connection was opened");
    // A private address is refused the same way; nothing is sent anywhere.
    let (r, v) = run_json(
        &dir,
        "guarded",
        "handle",
        &json!({"url": "http://10.255.255.1/"}),
    );
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(v["error"].as_str().unwrap().contains("(private)"), "{v:#}");
    // Allowed explicitly: fetched.
    dir.config(&format!(
        "plugins:\n  open:\n    uses: fetch\n    config:\n      url: {url}\n      timeout_seconds: 10\n      egress_allow: [127.0.0.1/32]\n"
    ));
    let (r, v) = run_json(&dir, "open", "poll", &json!({}));
    assert_eq!(r.code, 0, "{r:#?}");
    let ev = &v["response"]["events"][0];
    assert_eq!(ev["type"], "fetch.fetched");
    assert_eq!(ev["payload"]["status"], 200);
    assert_eq!(ev["payload"]["text"], "hello from the test server");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
