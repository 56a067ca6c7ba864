//! `plugin-bench [RUNS]`: for each bundled plugin built by `make build`
//! (plugins/<name>/run), spawns it RUNS times (default 200) per command with
//! a realistic request on stdin, reads the response to its end, and prints the
//! median and 90th percentile from spawn to exit. Run from the repository root.
//! `fetch` and `notify` talk to a small HTTP server on 127.0.0.1 that this
//! process serves (allow-listed in their config, as a LAN target would be).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// One measured invocation: spawn, write the request, read all of stdout, reap.
fn once(entry: &str, request: &[u8]) -> Result<Duration, String> {
    let started = Instant::now();
    let mut child = Command::new(entry)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{entry}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(request).map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{entry}: response is not JSON: {e}"))?;
    if v["status"] != "ok" {
        return Err(format!("{entry}: {v}"));
    }
    Ok(elapsed)
}

fn request(command: &str, config: Value, payload: Value) -> Vec<u8> {
    json!({"protocol": 2, "job_id": "bench", "command": command, "config": config,
           "state": {}, "context": {}, "event": {"type": "bench.started", "payload": payload},
           "deadline_at": "2030-01-01T00:00:00Z"})
    .to_string()
    .into_bytes()
}

/// Answers every connection with a small 200 and closes it: one request per
/// plugin process, as each job makes.
fn serve(listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut buf = [0u8; 8192];
        let mut seen = Vec::new();
        // Read the head and the body its Content-Length announces.
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen);
            if let Some(head_end) = text.find("\r\n\r\n") {
                let want = text[..head_end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if seen.len() >= head_end + 4 + want {
                    break;
                }
            }
        }
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        );
    }
}

fn main() -> ExitCode {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let scratch = std::env::temp_dir().join(format!("plugin-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(scratch.join("in"));
    let _ = std::fs::write(scratch.join("in/a.txt"), "hello bench");
    let s = scratch.display().to_string();
    let db = format!("{s}/bench.db");
    // A zero-byte file is an empty SQLite database.
    let _ = std::fs::write(&db, b"");
    let listener = match TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on 127.0.0.1: {e}");
            return ExitCode::FAILURE;
        }
    };
    let url = match listener.local_addr() {
        Ok(a) => format!("http://{a}/bench"),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    std::thread::spawn(move || serve(listener));
    let cases: Vec<(&str, &str, Value, Value)> = vec![
        (
            "if",
            "health",
            json!({"field": "text", "checks": [{"contains": "x", "emit": "a.b"}]}),
            json!({}),
        ),
        (
            "if",
            "handle",
            json!({"field": "text", "checks": [{"regex": "h.*", "emit": "a.b"}, {"default": "c.d"}]}),
            json!({"text": "hello"}),
        ),
        (
            "sys_exec",
            "health",
            json!({"command": ["true"]}),
            json!({}),
        ),
        (
            "sys_exec",
            "handle",
            json!({"command": ["true"]}),
            json!({"k": "v"}),
        ),
        (
            "file_watch",
            "health",
            json!({"watches": [{"path": format!("{s}/in/a.txt")}]}),
            json!({}),
        ),
        (
            "file_watch",
            "poll",
            json!({"watches": [{"path": format!("{s}/in/a.txt")}]}),
            json!({}),
        ),
        (
            "folder_watch",
            "health",
            json!({"watches": [{"root": format!("{s}/in")}]}),
            json!({}),
        ),
        (
            "folder_watch",
            "poll",
            json!({"watches": [{"root": format!("{s}/in")}]}),
            json!({}),
        ),
        (
            "file_handler",
            "health",
            json!({"allowed_read_paths": format!("{s}/in")}),
            json!({}),
        ),
        (
            "sqlite_change",
            "health",
            json!({"db_path": db, "query": "SELECT 1"}),
            json!({}),
        ),
        (
            "sqlite_change",
            "poll",
            json!({"db_path": db, "query": "SELECT COUNT(*) FROM sqlite_master"}),
            json!({}),
        ),
        (
            "fetch",
            "health",
            json!({"url": url, "egress_allow": ["127.0.0.0/8"]}),
            json!({}),
        ),
        (
            "fetch",
            "handle",
            json!({"url": url, "egress_allow": ["127.0.0.0/8"]}),
            json!({}),
        ),
        (
            "notify",
            "health",
            json!({"webhook_url": url, "egress_allow": ["127.0.0.0/8"]}),
            json!({}),
        ),
        (
            "notify",
            "handle",
            json!({"webhook_url": url, "format": "generic", "egress_allow": ["127.0.0.0/8"]}),
            json!({"message": "bench"}),
        ),
        (
            "file_handler",
            "read",
            json!({"allowed_read_paths": format!("{s}/in")}),
            json!({"path": format!("{s}/in/a.txt")}),
        ),
    ];
    let mut failed = false;
    println!(
        "{:<14} {:<8} {:>10} {:>10}  (spawn to exit, {runs} runs)",
        "plugin", "command", "median", "p90"
    );
    for (plugin, command, config, payload) in cases {
        let entry = format!("plugins/{plugin}/run");
        let req = request(command, config, payload);
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            match once(&entry, &req) {
                Ok(t) => times.push(t),
                Err(e) => {
                    eprintln!("{e}");
                    failed = true;
                    break;
                }
            }
        }
        if times.is_empty() {
            continue;
        }
        times.sort();
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
        println!(
            "{plugin:<14} {command:<8} {:>8.2}ms {:>8.2}ms",
            at(0.5).as_secs_f64() * 1000.0,
            at(0.9).as_secs_f64() * 1000.0
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
