//! `notify` against a loopback server the test starts (explicitly allowed):
//! each format's request as the server received it, and 4xx versus 5xx.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;

use super::{install, run_json};
use crate::support::TestDir;

/// A loopback server answering each connection with the next status; sends
/// every request it read (head and body) on the channel.
fn server(statuses: Vec<u16>) -> (String, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for status in statuses {
            let Ok((mut s, _)) = l.accept() else { return };
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head, then as much body as Content-Length says.
            loop {
                let n = s.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).into_owned();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&req).into_owned());
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (format!("http://{addr}/hook"), rx)
}

#[test]
fn notify_posts_each_format_and_retries_only_server_errors() {
    let dir = TestDir::new("bundled-notify");
    install(&dir, "notify");
    let (url, rx) = server(vec![204, 200, 200, 200, 200, 404, 502]);
    let mut plugins = String::from("plugins:\n");
    for format in ["discord", "slack", "ntfy", "gotify", "generic"] {
        plugins.push_str(&format!(
            "  to_{format}:\n    uses: notify\n    retry:\n      max_attempts: 1\n    config:\n      webhook_url: {url}\n      format: {format}\n      title: Build\n      default_username: Ductile\n      egress_allow: [127.0.0.1/32]\n"
        ));
    }
    dir.config(&plugins);
    let mut got = Vec::new();
    for format in ["discord", "slack", "ntfy", "gotify", "generic"] {
        let (r, v) = run_json(
            &dir,
            &format!("to_{format}"),
            "handle",
            &json!({"result": "site rebuilt", "text": "not this"}),
        );
        assert_eq!(r.code, 0, "{format}: {r:#?}");
        assert_eq!(v["response"]["events"][0]["type"], "notify.sent");
        got.push(rx.recv_timeout(Duration::from_secs(10)).unwrap());
    }
    let body = |req: &str| req.split_once("\r\n\r\n").unwrap().1.to_string();
    assert_eq!(
        body(&got[0]),
        r#"{"content":"site rebuilt","username":"Ductile"}"#
    );
    assert_eq!(body(&got[1]), r#"{"text":"site rebuilt"}"#);
    assert_eq!(body(&got[2]), "site rebuilt");
    assert!(got[2].contains("Title: Build"), "{}", got[2]);
    assert_eq!(
        body(&got[3]),
        r#"{"message":"site rebuilt","priority":5,"title":"Build"}"#
    );
    assert_eq!(
        body(&got[4]),
        r#"{"message":"site rebuilt","title":"Build"}"#
    );
    assert!(got.iter().all(|r| r.starts_with("POST /hook ")));
    // 404: permanent; 502: worth a retry.
    let (r, v) = run_json(&dir, "to_slack", "handle", &json!({"message": "x"}));
    assert_eq!(r.code, 1);
    assert_eq!(v["response"]["retry"], false, "{v:#}");
    let (r, v) = run_json(&dir, "to_slack", "handle", &json!({"message": "x"}));
    assert_eq!(r.code, 1);
    assert_ne!(v["response"]["retry"], false, "{v:#}");
    assert!(v["error"].as_str().unwrap().contains("502"), "{v:#}");
}
