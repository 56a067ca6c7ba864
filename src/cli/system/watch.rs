//! `ductile system watch`: a live view of a running daemon over the same API
//! and event stream an agent or the web dashboard uses. On a terminal it is a
//! full-screen view (plain ANSI, keys through `stty`, no TUI crate): queue,
//! running jobs, recent jobs and failures, the last events; `j`/`k` or the
//! arrows select a job, Enter opens its detail and logs, Esc goes back, `q`
//! quits and the terminal is restored. With `--plain`, or when stdin or stdout
//! is not a terminal, it prints the same picture once and then one line per
//! event. `--once` prints the picture and exits.

pub mod client;

use std::io::{IsTerminal, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, unbounded};
use serde_json::{Value, json};

use super::super::{Args, CliError, output};
use client::{Client, Frame};

/// `ductile system watch [--api-url URL] [--api-key KEY] [--plain] [--once]`.
pub fn watch(args: &Args) -> Result<(), CliError> {
    let base = super::super::api::base_url(args)?;
    let key = args
        .flag("api-key")
        .map(str::to_string)
        .or_else(|| std::env::var("DUCTILE_API_KEY").ok())
        .filter(|k| !k.is_empty());
    let client = Client::new(&base, key)?;
    if args.flag("once").is_some() {
        let snap = Snapshot::fetch(&client)?;
        if args.json {
            output::json(&snap.to_json());
        } else {
            output::text(&snap.render(&client.url(), None).join("\n"));
        }
        return Ok(());
    }
    let terminal = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    if args.flag("plain").is_some() || !terminal {
        plain(&client)
    } else {
        interactive(&client)
    }
}

/// What the view shows, read from the API in one go.
struct Snapshot {
    health: Value,
    running: Value,
    recent: Value,
    failures: Value,
}

impl Snapshot {
    fn fetch(c: &Client) -> Result<Snapshot, CliError> {
        // Jobs first: a missing or weak token is refused here, not after a
        // public answer that would make it look fine.
        let recent = c.get("/jobs?limit=12")?;
        let running = c.get("/jobs?status=running&limit=50")?;
        let since = chrono::Utc::now() - chrono::Duration::hours(24);
        let failures = c.get(&format!(
            "/job-logs?status=failed&limit=5&from={}",
            since.format("%Y-%m-%dT%H:%M:%SZ")
        ))?;
        let health = c.get("/healthz")?;
        Ok(Snapshot {
            health,
            running,
            recent,
            failures,
        })
    }

    fn to_json(&self) -> Value {
        json!({
            "health": self.health,
            "running": self.running["jobs"],
            "recent": self.recent["jobs"],
            "failures": {"total_24h": self.failures["total"], "latest": self.failures["logs"]},
        })
    }

    fn recent_ids(&self) -> Vec<String> {
        list(&self.recent["jobs"])
            .iter()
            .filter_map(|j| j["job_id"].as_str().map(str::to_string))
            .collect()
    }

    /// The picture as lines; `selected` marks one of the recent jobs.
    fn render(&self, url: &str, selected: Option<usize>) -> Vec<String> {
        let h = &self.health;
        let mut out = vec![
            format!(
                "ductile {} at {url}, up {}",
                text(&h["version"]),
                span(h["uptime_seconds"].as_i64().unwrap_or(0))
            ),
            format!(
                "queued {}  running {}  breakers open {}  failed (24 h) {}",
                h["queue_depth"].as_i64().unwrap_or(0),
                self.running["total"].as_i64().unwrap_or(0),
                h["plugins_circuit_open"].as_i64().unwrap_or(0),
                self.failures["total"].as_i64().unwrap_or(0),
            ),
            String::new(),
            "RUNNING".into(),
        ];
        let running = list(&self.running["jobs"]);
        if running.is_empty() {
            out.push("  (none)".into());
        }
        for j in running {
            out.push(format!(
                "  {}  {} {}  attempt {}  since {}",
                short(&j["job_id"]),
                text(&j["plugin"]),
                text(&j["command"]),
                j["attempt"],
                text(&j["started_at"])
            ));
        }
        out.push(String::new());
        out.push("RECENT JOBS".into());
        for (i, j) in list(&self.recent["jobs"]).iter().enumerate() {
            let mark = if selected == Some(i) { ">" } else { " " };
            out.push(format!(
                "{mark} {}  {:<10} {} {}  {}",
                short(&j["job_id"]),
                text(&j["status"]),
                text(&j["plugin"]),
                text(&j["command"]),
                text(&j["created_at"])
            ));
        }
        out.push(String::new());
        out.push("RECENT FAILURES".into());
        let failures = list(&self.failures["logs"]);
        if failures.is_empty() {
            out.push("  (none in 24 h)".into());
        }
        for l in failures {
            out.push(format!(
                "  {}  {} {}  {}  {}",
                short(&l["job_id"]),
                text(&l["plugin"]),
                text(&l["command"]),
                text(&l["completed_at"]),
                one_line(&text(&l["last_error"]))
            ));
        }
        out
    }
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A job id as the view shows it: its last 8 characters. Ids are UUIDv7,
/// whose start is the time and is shared by jobs made together.
fn short(v: &Value) -> String {
    let t = text(v);
    let n = t.chars().count();
    t.chars().skip(n.saturating_sub(8)).collect()
}

fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(77).collect::<String>())
    } else {
        s
    }
}

fn span(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// One event as one line: time, kind, then what it is about.
fn event_line(f: &Frame) -> String {
    let d = &f.data;
    let at = text(&d["at"]);
    let head = format!("{at} {}", f.kind);
    let what = match f.kind.split('.').next().unwrap_or("") {
        "job" if f.kind == "job.preflight" => format!(
            "{} {} {} {}{}",
            text(&d["plugin"]),
            text(&d["command"]),
            short(&d["job_id"]),
            text(&d["decision"]),
            reason(&d["reason"])
        ),
        "job" => format!(
            "{} {} {} {} attempt {}{}",
            text(&d["plugin"]),
            text(&d["command"]),
            short(&d["job_id"]),
            text(&d["to"]),
            d["attempt"],
            reason(&d["reason"])
        ),
        "scheduler" => format!(
            "{} {} schedule {}{}{}",
            text(&d["plugin"]),
            text(&d["command"]),
            text(&d["schedule"]),
            d["job_id"]
                .as_str()
                .map(|_| format!(" job {}", short(&d["job_id"])))
                .unwrap_or_default(),
            reason(&d["why"])
        ),
        "breaker" => format!(
            "{} {} {} -> {}{}",
            text(&d["plugin"]),
            text(&d["command"]),
            text(&d["from"]),
            text(&d["to"]),
            reason(&d["reason"])
        ),
        _ => d.to_string(),
    };
    format!("{head} {what}")
}

fn reason(v: &Value) -> String {
    match v.as_str() {
        Some(s) if !s.is_empty() => format!(" ({})", one_line(s)),
        _ => String::new(),
    }
}

/// What the reading threads tell the main loop.
enum Msg {
    /// An event arrived.
    Event(Frame),
    /// The stream is open (again).
    Connected,
    /// The stream ended or could not be opened; it is retried.
    Lost(String),
    /// A key (or escape sequence) from the terminal.
    Key(Vec<u8>),
    /// SIGINT or SIGTERM.
    Stop,
}

/// The event stream's socket, so a stop can end a blocked read.
type Handle = Arc<Mutex<Option<TcpStream>>>;

/// Reads `/events` on its own thread until `stop`, reconnecting with the
/// last id seen so no event is missed or repeated across a daemon restart.
/// The first connection is made here, so a refused token is an error.
fn spawn_events(
    c: &Client,
    tx: Sender<Msg>,
    stop: Arc<AtomicBool>,
    handle: Handle,
) -> Result<(), CliError> {
    let (mut events, socket) = c.events(None)?;
    set(&handle, Some(socket));
    let _ = tx.send(Msg::Connected);
    let c = c.clone();
    std::thread::Builder::new()
        .name("watch-events".into())
        .spawn(move || {
            let mut last: Option<String> = None;
            let mut pause = Duration::from_millis(500);
            loop {
                while let Some(f) = events.next_frame() {
                    if f.id.is_some() {
                        last.clone_from(&f.id);
                    }
                    pause = Duration::from_millis(500);
                    if tx.send(Msg::Event(f)).is_err() {
                        return;
                    }
                }
                loop {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let _ = tx.send(Msg::Lost(format!("retrying in {}s", pause.as_secs_f32())));
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(15));
                    match c.events(last.as_deref()) {
                        Ok((e, socket)) => {
                            events = e;
                            set(&handle, Some(socket));
                            let _ = tx.send(Msg::Connected);
                            break;
                        }
                        Err(e) => {
                            let _ = tx.send(Msg::Lost(e.to_string()));
                        }
                    }
                }
            }
        })
        .map_err(|e| CliError::Failed(format!("cannot start the event reader: {e}")))?;
    Ok(())
}

fn set(handle: &Handle, socket: Option<TcpStream>) {
    if let Ok(mut h) = handle.lock() {
        *h = socket;
    }
}

/// SIGINT/SIGTERM become [`Msg::Stop`] and end the stream's blocked read.
fn spawn_signals(tx: Sender<Msg>, stop: Arc<AtomicBool>, handle: Handle) -> Result<(), CliError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| CliError::Failed(format!("cannot handle signals: {e}")))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                stop.store(true, Ordering::SeqCst);
                if let Ok(h) = handle.lock() {
                    if let Some(s) = h.as_ref() {
                        client::close(s);
                    }
                }
                let _ = tx.send(Msg::Stop);
            }
        })
        .map_err(|e| CliError::Failed(format!("cannot start the signal thread: {e}")))?;
    Ok(())
}

/// `--plain`: the picture once, then one line per event until stopped.
fn plain(c: &Client) -> Result<(), CliError> {
    let snap = Snapshot::fetch(c)?;
    output::text(&snap.render(&c.url(), None).join("\n"));
    let (tx, rx) = unbounded();
    let stop = Arc::new(AtomicBool::new(false));
    let handle: Handle = Arc::new(Mutex::new(None));
    spawn_signals(tx.clone(), stop.clone(), handle.clone())?;
    spawn_events(c, tx, stop, handle)?;
    for msg in rx {
        match msg {
            Msg::Event(f) => output::text(&event_line(&f)),
            Msg::Connected => output::text(&format!(
                "-- streaming events from {} (Ctrl-C to stop)",
                c.url()
            )),
            Msg::Lost(why) => output::text(&format!("-- event stream lost: {why}")),
            Msg::Stop => return Ok(()),
            Msg::Key(_) => {}
        }
    }
    Ok(())
}

/// The terminal in cbreak mode and the alternate screen, restored on drop
/// (also when the view fails).
struct Screen {
    saved: String,
}

impl Screen {
    fn enter() -> Result<Screen, CliError> {
        let saved = stty(&["-g"])?;
        stty(&["-icanon", "-echo", "min", "1", "time", "0"])?;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(b"\x1b[?1049h\x1b[?25l");
        let _ = out.flush();
        Ok(Screen {
            saved: saved.trim().to_string(),
        })
    }

    fn size() -> (usize, usize) {
        let got = stty(&["size"]).unwrap_or_default();
        let mut it = got.split_whitespace().filter_map(|n| n.parse().ok());
        match (it.next(), it.next()) {
            (Some(rows), Some(cols)) if rows > 0 && cols > 0 => (rows, cols),
            _ => (24, 80),
        }
    }

    fn draw(lines: &[String]) {
        let (rows, cols) = Screen::size();
        let mut frame = String::from("\x1b[H\x1b[2J");
        for (i, l) in lines.iter().take(rows).enumerate() {
            if i > 0 {
                frame.push_str("\r\n");
            }
            let cut: String = l.chars().take(cols).collect();
            if l.starts_with("> ") {
                frame.push_str(&format!("\x1b[7m{cut}\x1b[0m"));
            } else if l.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && !l.starts_with("ductile")
            {
                frame.push_str(&format!("\x1b[1m{cut}\x1b[0m"));
            } else {
                frame.push_str(&cut);
            }
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(frame.as_bytes());
        let _ = out.flush();
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(b"\x1b[?25h\x1b[?1049l");
        let _ = out.flush();
        let _ = stty(&[self.saved.as_str()]);
    }
}

/// Runs `stty` on this terminal (stdin), returning what it printed.
fn stty(args: &[&str]) -> Result<String, CliError> {
    let out = Command::new("stty")
        .args(args)
        .stdin(Stdio::inherit())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| CliError::Failed(format!("cannot run stty: {e}")))?;
    if !out.status.success() {
        return Err(CliError::Failed(format!(
            "stty {} failed (is stdin a terminal? try --plain)",
            args.join(" ")
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn spawn_keys(tx: Sender<Msg>) -> Result<(), CliError> {
    std::thread::Builder::new()
        .name("watch-keys".into())
        .spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 16];
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || tx.send(Msg::Key(buf[..n].to_vec())).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| CliError::Failed(format!("cannot start the key reader: {e}")))?;
    Ok(())
}

/// The longest the picture lags the events that changed it.
const REFRESH: Duration = Duration::from_secs(1);

/// Which page is shown.
enum Page {
    /// The overview, one recent job selected.
    List(usize),
    /// One job: its fields and every attempt's log.
    Job(String),
}

/// The full-screen view.
fn interactive(c: &Client) -> Result<(), CliError> {
    let mut snap = Snapshot::fetch(c)?;
    let (tx, rx) = unbounded();
    let stop = Arc::new(AtomicBool::new(false));
    let handle: Handle = Arc::new(Mutex::new(None));
    spawn_signals(tx.clone(), stop.clone(), handle.clone())?;
    spawn_events(c, tx.clone(), stop, handle)?;
    let screen = Screen::enter()?;
    spawn_keys(tx)?;
    let mut page = Page::List(0);
    let mut events: Vec<String> = Vec::new();
    let mut live = String::from("connecting");
    let mut detail: Vec<String> = Vec::new();
    let mut stale_since: Option<Instant> = None;
    let result = loop {
        let lines = match &page {
            Page::List(sel) => {
                let mut l = snap.render(&c.url(), Some(*sel));
                l.push(String::new());
                l.push(format!("EVENTS ({live})"));
                l.extend(events.iter().rev().take(8).cloned());
                l.push(String::new());
                l.push("j/k or arrows: select   Enter: job detail and logs   q: quit".into());
                l
            }
            Page::Job(_) => {
                let mut l = detail.clone();
                l.push(String::new());
                l.push("Esc or b: back   q: quit".into());
                l
            }
        };
        Screen::draw(&lines);
        // Bursts of events refresh the picture once, a second after the
        // first: each refresh re-reads the job lists from the ledger.
        let msg = match stale_since {
            Some(t) => match rx.recv_timeout(REFRESH.saturating_sub(t.elapsed())) {
                Ok(m) => Some(m),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break Ok(()),
            },
            None => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => break Ok(()),
            },
        };
        let Some(msg) = msg else {
            stale_since = None;
            match Snapshot::fetch(c) {
                Ok(s) => snap = s,
                Err(e) => live = e.to_string(),
            }
            if let Page::Job(id) = &page {
                detail = job_detail(c, id);
            }
            continue;
        };
        match msg {
            Msg::Event(f) => {
                events.push(event_line(&f));
                if events.len() > 50 {
                    events.remove(0);
                }
                stale_since.get_or_insert_with(Instant::now);
            }
            Msg::Connected => live = "live".into(),
            Msg::Lost(why) => live = format!("lost: {why}"),
            Msg::Stop => break Ok(()),
            Msg::Key(k) => match (&mut page, k.as_slice()) {
                (_, b"q" | b"Q") => break Ok(()),
                (Page::List(sel), b"j" | b"\x1b[B" | b"\x1bOB") => {
                    *sel = (*sel + 1).min(snap.recent_ids().len().saturating_sub(1));
                }
                (Page::List(sel), b"k" | b"\x1b[A" | b"\x1bOA") => *sel = sel.saturating_sub(1),
                (Page::List(sel), b"\r" | b"\n") => {
                    if let Some(id) = snap.recent_ids().get(*sel) {
                        detail = job_detail(c, id);
                        page = Page::Job(id.clone());
                    }
                }
                (Page::Job(_), b"\x1b" | b"b" | b"\x7f") => page = Page::List(0),
                _ => {}
            },
        }
    };
    drop(screen);
    result
}

/// One job's page: its fields, then each attempt with its error and stderr.
fn job_detail(c: &Client, id: &str) -> Vec<String> {
    let job = match c.get(&format!("/job/{id}")) {
        Ok(j) => j,
        Err(e) => return vec![format!("JOB {id}"), e.to_string()],
    };
    let mut out = vec![
        format!("JOB {id}"),
        format!(
            "{} {}  status {}  attempt {}  submitted by {}",
            text(&job["plugin"]),
            text(&job["command"]),
            text(&job["status"]),
            job["attempt"],
            text(&job["submitted_by"])
        ),
        format!(
            "created {}  started {}  completed {}",
            text(&job["created_at"]),
            text(&job["started_at"]),
            text(&job["completed_at"])
        ),
        format!("parent {}", text(&job["parent_job_id"])),
        String::new(),
        "LOGS".into(),
    ];
    match c.get(&format!("/job-logs?job_id={id}&limit=50")) {
        Ok(logs) => {
            let logs = list(&logs["logs"]);
            if logs.is_empty() {
                out.push("  (no attempt has finished)".into());
            }
            for l in logs.iter().rev() {
                out.push(format!(
                    "  attempt {}: {} at {}",
                    l["attempt"],
                    text(&l["status"]),
                    text(&l["completed_at"])
                ));
                if let Some(e) = l["last_error"].as_str() {
                    out.push(format!("    error: {}", one_line(e)));
                }
                if let Some(s) = l["stderr"].as_str() {
                    for line in s.lines().take(10) {
                        out.push(format!("    stderr: {line}"));
                    }
                }
            }
        }
        Err(e) => out.push(format!("  {e}")),
    }
    out.push(String::new());
    out.push("RESULT".into());
    let result = serde_json::to_string_pretty(&job["result"]).unwrap_or_default();
    out.extend(result.lines().take(15).map(|l| format!("  {l}")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_events_are_one_line_each() {
        let f = Frame {
            id: Some("3-0".into()),
            kind: "job.failed".into(),
            data: json!({"at": "2026-03-01T00:00:00Z", "job_id": "0123456789ab", "plugin": "p", "command": "poll", "attempt": 1, "to": "failed", "reason": "exit 1\nmore"}),
        };
        assert_eq!(
            event_line(&f),
            "2026-03-01T00:00:00Z job.failed p poll 456789ab failed attempt 1 (exit 1 more)"
        );
    }

    #[test]
    fn the_picture_names_queue_running_and_failures() {
        let snap = Snapshot {
            health: json!({"version": "0.1.0", "uptime_seconds": 90, "queue_depth": 2, "plugins_circuit_open": 1}),
            running: json!({"jobs": [], "total": 0}),
            recent: json!({"jobs": [{"job_id": "0000-abcdefgh", "status": "dead", "plugin": "p", "command": "poll", "created_at": "t"}]}),
            failures: json!({"logs": [], "total": 0}),
        };
        let lines = snap.render("http://x", Some(0));
        assert_eq!(lines[0], "ductile 0.1.0 at http://x, up 90s");
        assert_eq!(
            lines[1],
            "queued 2  running 0  breakers open 1  failed (24 h) 0"
        );
        assert!(lines.iter().any(|l| l.starts_with("> abcdefgh  dead")));
    }
}
