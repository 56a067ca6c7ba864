//! The web dashboard at `/ui/` in a real headless Chromium, driven through
//! chromedriver's W3C WebDriver HTTP API by a small blocking client, and
//! `ductile system watch` against a real daemon. Every wait in the browser is
//! a MutationObserver inside the page resolving a WebDriver async script, so
//! nothing here polls on a timer.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::http::{ADMIN, Api, HOOK_SECRET, JOBS_RO, call, get, raw};
use crate::support::{TestDir, wait_until};

const LONG: Duration = Duration::from_secs(60);

/// The echo plugin, a plugin that always fails (something to retry) and a
/// pipeline with a switch, so every view has something to show.
fn dashboard_config(api_extra: &str) -> Api {
    let dir = TestDir::new("dash");
    crate::http::write_tree(&dir, api_extra, crate::http::WEBHOOKS);
    dir.fixture("error_no_retry");
    let config = std::fs::read_to_string(dir.path.join("config.yaml")).unwrap();
    dir.write(
        "config.yaml",
        &format!(
            "{config}  error_no_retry: {{}}\npipelines:\n  - name: echo-chain\n    on: echo.poll\n    from_plugin: echo\n    steps:\n      - id: ack\n        uses: echo\n      - id: gate\n        uses: echo\n        if:\n          path: payload.message\n          op: eq\n          value: hello\n"
        ),
    );
    Api::start_in(dir)
}

/// A job started over the API; returns its id.
fn trigger(api: &Api, plugin: &str) -> String {
    let a = call(
        &api.api,
        "POST",
        &format!("/plugin/{plugin}/poll"),
        Some(ADMIN),
        Some("{}"),
    );
    assert_eq!(a.status, 202, "{}", a.text());
    a.json()["job_id"].as_str().unwrap().to_string()
}

/// How the live views abbreviate a job id: its last 8 characters (the
/// random end of a UUIDv7; its start is the time, shared by neighbours).
fn short(id: &str) -> &str {
    &id[id.len() - 8..]
}

fn header_value(a: &crate::http::Answer, name: &str) -> String {
    a.header(name)
        .unwrap_or_else(|| panic!("no {name} header in {:?}", a.headers))
        .to_string()
}

#[test]
fn ui_assets_are_embedded_with_etag_gzip_and_a_strict_policy() {
    let api = dashboard_config("");
    let moved = get(&api.api, "/ui", None);
    assert_eq!(moved.status, 308);
    assert_eq!(header_value(&moved, "Location"), "ui/");

    let page = get(&api.api, "/ui/", None);
    assert_eq!(page.status, 200);
    assert!(header_value(&page, "Content-Type").starts_with("text/html"));
    let csp = header_value(&page, "Content-Security-Policy");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert!(page.text().contains("<script src=\"app.js\""));
    let etag = header_value(&page, "ETag");

    let again = raw(
        &api.api,
        format!(
            "GET /ui/ HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    let zipped = raw(
        &api.api,
        b"GET /ui/app.js HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br, gzip;q=0.9\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(zipped.status, 200);
    assert_eq!(header_value(&zipped, "Content-Encoding"), "gzip");
    let mut js = String::new();
    flate2::read::GzDecoder::new(zipped.body.as_slice())
        .read_to_string(&mut js)
        .unwrap();
    let plain = get(&api.api, "/ui/app.js", None);
    assert_eq!(plain.text(), js);
    assert!(zipped.body.len() < plain.body.len());

    // Static files only: no secret of the config, no token, no API data.
    let mut total = 0;
    for asset in ["/ui/", "/ui/app.js", "/ui/app.css"] {
        let a = get(&api.api, asset, Some(ADMIN));
        assert_eq!(a.status, 200, "{asset}");
        total += a.body.len();
        for secret in [ADMIN, JOBS_RO, HOOK_SECRET] {
            assert!(!a.text().contains(secret), "{asset} holds a secret");
        }
    }
    assert!(total <= 300 * 1024, "{total} bytes of assets");
    assert_eq!(get(&api.api, "/ui/nope.js", None).status, 404);
    assert_eq!(get(&api.api, "/ui/a/b", None).status, 404);
    assert_eq!(call(&api.api, "POST", "/ui/", None, None).status, 405);
    // The page is public; what it reads is not.
    assert_eq!(get(&api.api, "/jobs", None).status, 401);
}

#[test]
fn ui_off_answers_404_like_an_unknown_route() {
    let api = dashboard_config("  ui: false\n");
    for path in ["/ui", "/ui/", "/ui/app.js"] {
        let a = get(&api.api, path, None);
        assert_eq!(a.status, 404, "{path}");
        assert!(a.json()["error"].as_str().unwrap().starts_with("no route"));
    }
    assert_eq!(get(&api.api, "/healthz", None).status, 200);
}

// ------------------------------------------------------------------ browser

/// chromedriver and the Chromium it starts, in their own process group;
/// everything dies with the value (session closed, group killed, stragglers
/// found by their profile directory and killed).
struct Browser {
    driver: Option<Child>,
    port: u16,
    session: String,
    profile: PathBuf,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    fn start(dir: &Path) -> Browser {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).unwrap();
        let log = std::fs::File::create(dir.join("chromedriver.log")).unwrap();
        use std::os::unix::process::CommandExt;
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("chromedriver (Debian: apt-get install chromium chromium-driver)");
        let mut b = Browser {
            driver: Some(driver),
            port,
            session: String::new(),
            profile,
        };
        wait_until(LONG, "chromedriver listening", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let args = json!([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            format!("--user-data-dir={}", b.profile.display()),
        ]);
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let made = b.wd("POST", "/session", Some(caps)).unwrap();
        b.session = made["sessionId"].as_str().unwrap().to_string();
        b.cmd(
            "POST",
            "timeouts",
            json!({"script": 30_000, "pageLoad": 30_000}),
        );
        b
    }

    /// One WebDriver call; `Err` carries the driver's error value.
    fn wd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Value> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .unwrap();
        // chromedriver keeps the connection open: read the head, then exactly
        // Content-Length bytes.
        let mut answer = Vec::new();
        let mut chunk = [0u8; 65536];
        let (head, body) = loop {
            let n = crate::http::read_some(&mut s, &mut chunk).unwrap();
            assert!(n > 0, "chromedriver closed the connection");
            answer.extend_from_slice(&chunk[..n]);
            let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&answer[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while answer.len() < end + 4 + length {
                let n = crate::http::read_some(&mut s, &mut chunk).unwrap();
                assert!(n > 0, "chromedriver closed the connection mid-answer");
                answer.extend_from_slice(&chunk[..n]);
            }
            break (head, answer[end + 4..end + 4 + length].to_vec());
        };
        let v: Value = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}: {head}"));
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if head.starts_with("HTTP/1.1 200") {
            // A new session answers its id inside `value`.
            Ok(if path == "/session" { value } else { v })
        } else {
            Err(value)
        }
    }

    fn cmd(&self, method: &str, rel: &str, body: Value) -> Value {
        let path = format!("/session/{}/{rel}", self.session);
        let body = if method == "GET" { None } else { Some(body) };
        match self.wd(method, &path, body) {
            Ok(v) => v["value"].clone(),
            Err(e) => panic!("WebDriver {method} {rel}: {e}"),
        }
    }

    fn open(&self, url: &str) {
        self.cmd("POST", "url", json!({ "url": url }));
    }

    fn run(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "execute/sync",
            json!({"script": script, "args": args}),
        )
    }

    /// Runs `script` as an asynchronous script: it answers by calling its
    /// last argument.
    fn run_async(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "execute/async",
            json!({"script": script, "args": []}),
        )
    }

    fn element(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "element",
            json!({"using": "css selector", "value": css}),
        );
        v[ELEMENT].as_str().unwrap().to_string()
    }

    /// Clicks the element matching `css` once it is shown. A live list may
    /// replace its rows between the look-up and the click (the page re-reads
    /// lists as events arrive); WebDriver then refuses the click as stale,
    /// which means it did not happen, so the element is looked up again.
    fn click(&self, css: &str) {
        let deadline = std::time::Instant::now() + LONG;
        loop {
            self.wait(css, "");
            let find = json!({"using": "css selector", "value": css});
            let found = self.wd(
                "POST",
                &format!("/session/{}/element", self.session),
                Some(find),
            );
            let clicked = found.and_then(|v| {
                let id = v["value"][ELEMENT].as_str().unwrap_or_default().to_string();
                let path = format!("/session/{}/element/{id}/click", self.session);
                self.wd("POST", &path, Some(json!({})))
            });
            let e = match clicked {
                Ok(_) => return,
                Err(e) => e,
            };
            let kind = e["error"].as_str().unwrap_or_default();
            let again = [
                "stale element reference",
                "no such element",
                "element click intercepted",
                "element not interactable",
            ];
            if !again.contains(&kind) || std::time::Instant::now() > deadline {
                panic!("WebDriver click {css:?}: {e}");
            }
        }
    }

    fn fill(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.cmd("POST", &format!("element/{id}/clear"), json!({}));
        self.cmd(
            "POST",
            &format!("element/{id}/value"),
            json!({ "text": text }),
        );
    }

    /// Waits until an element matching `css` is shown and its text contains
    /// `text`, woken by every change of the DOM; returns its text.
    fn wait(&self, css: &str, text: &str) -> String {
        let script = r#"
const [css, text, done] = arguments;
const check = () => {
  for (const e of document.querySelectorAll(css)) {
    if (e.closest('[hidden]')) continue;
    if (e.textContent.includes(text)) return e.textContent;
  }
  return null;
};
const now = check();
if (now !== null) { done(now); return; }
const ob = new MutationObserver(() => {
  const t = check();
  if (t !== null) { ob.disconnect(); done(t); }
});
ob.observe(document.documentElement, {subtree: true, childList: true, characterData: true, attributes: true});
"#;
        let path = format!("/session/{}/execute/async", self.session);
        match self.wd(
            "POST",
            &path,
            Some(json!({"script": script, "args": [css, text]})),
        ) {
            Ok(v) => v["value"].as_str().unwrap_or_default().to_string(),
            Err(e) => panic!(
                "waiting for {css:?} with {text:?}: {e}\nbody: {}",
                self.run("return document.body.innerText", json!([]))
            ),
        }
    }

    /// Screenshots at 1280 and 360 px wide into `dir`, and checks the page
    /// fits the narrow width without scrolling sideways.
    fn screenshots(&self, dir: &Path, name: &str) {
        for (w, h) in [(1280, 900), (360, 800)] {
            self.cmd("POST", "window/rect", json!({"width": w, "height": h}));
            if w == 360 {
                let got = self.run(
                    "return [window.innerWidth, document.documentElement.scrollWidth]",
                    json!([]),
                );
                let (inner, scroll) = (got[0].as_i64().unwrap(), got[1].as_i64().unwrap());
                assert!(inner <= w, "the window is {inner} px wide, not {w}");
                assert!(
                    scroll <= inner + 1,
                    "{name} is {scroll} px wide at {inner} px"
                );
            }
            let png = decode_base64(self.cmd("GET", "screenshot", Value::Null).as_str().unwrap());
            assert!(png.starts_with(b"\x89PNG"), "{name} at {w} px");
            std::fs::write(dir.join(format!("{name}-{w}.png")), png).unwrap();
        }
        self.cmd("POST", "window/rect", json!({"width": 1280, "height": 900}));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.wd("DELETE", &format!("/session/{}", self.session), None);
        }
        if let Some(mut d) = self.driver.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", d.id())])
                .status();
            let _ = d.kill();
            let _ = d.wait();
        }
        // A renderer that left the group still names our profile directory.
        let needle = self.profile.display().to_string();
        for pid in std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
        {
            crate::support::kill_if_runs(pid, &needle, false);
        }
    }
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=' && *c != b'\n').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, c)| {
            acc | (u32::from(val(*c)) << (18 - 6 * i))
        });
        let [_, a, b, c] = n.to_be_bytes();
        out.extend_from_slice(&[a, b, c][..chunk.len() - 1]);
    }
    out
}

#[test]
fn browser_signs_in_watches_a_job_live_retries_sees_a_graph_and_is_refused_without_scope() {
    let api = dashboard_config("");
    let shots = api.dir.path.join("screens");
    std::fs::create_dir_all(&shots).unwrap();
    let b = Browser::start(&api.dir.path);
    b.open(&format!("http://{}/ui/", api.api));
    b.wait("#login h2", "Sign in");

    // A wrong token is refused and nothing else is shown.
    b.fill("#token", "not-a-token");
    b.click("#login-form button");
    b.wait("#login-error", "not accepted");
    b.screenshots(&shots, "login");

    b.fill("#token", ADMIN);
    b.click("#login-form button");
    b.wait("#stat-version", env!("CARGO_PKG_VERSION"));
    b.wait("#live", "live");
    assert_eq!(
        b.run("return document.body.dataset.scopes", json!([])),
        json!("jobs events plugin admin")
    );

    // A job started elsewhere appears and finishes on the page, without a reload.
    let marker = b.run("window.__same_page = 1; return 1", json!([]));
    assert_eq!(marker, json!(1));
    let id = trigger(&api, "echo");
    b.wait(
        &format!("#events li[data-kind='job.succeeded'][data-job-id='{id}']"),
        "echo poll",
    );
    assert_eq!(b.run("return window.__same_page", json!([])), json!(1));
    b.screenshots(&shots, "overview");

    // Its detail: fields, the attempt, and the jobs its pipeline caused.
    b.click("[data-view='jobs']");
    b.wait(&format!("#jobs-table tr[data-job-id='{id}']"), "succeeded");
    b.click(&format!("#jobs-table tr[data-job-id='{id}'] a"));
    b.wait("#jd-id", &id);
    b.wait("#jd-attempts .attempt h5", "Attempt 1: succeeded");
    b.wait("#jd-tree li", "echo handle");
    b.screenshots(&shots, "job");

    // A failed job is retried from the page.
    let failed = trigger(&api, "error_no_retry");
    b.wait(&format!("#jobs-table tr[data-job-id='{failed}']"), "");
    b.click(&format!("#jobs-table tr[data-job-id='{failed}'] a"));
    b.wait("#jd-id", &failed);
    b.wait("#jd-attempts .attempt", "can never succeed");
    b.click("#jd-retry");
    b.wait("#jd-message", "Retry queued as");
    let retried = api.dir.count(&format!(
        "SELECT COUNT(*) FROM job_queue WHERE parent_job_id = '{failed}' AND plugin = 'error_no_retry'"
    ));
    assert_eq!(retried, 1);

    // A text filter reads the job log: only the failing attempts match.
    b.fill("#f-query", "can never succeed");
    b.click("#jobs-filter button[type='submit']");
    b.wait("#jobs-total", "attempts");
    let rows = b.run(
        "return [...document.querySelectorAll('#jobs-table tbody tr')].map(r => r.dataset.jobId)",
        json!([]),
    );
    let rows: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        rows.contains(&failed.as_str()) && !rows.contains(&id.as_str()),
        "{rows:?}"
    );
    b.run("document.querySelector('#f-query').value = ''", json!([]));

    // Plugins with their run-now forms; running one queues a job.
    b.click("[data-view='plugins']");
    b.wait(
        "#plugin-list [data-plugin='echo'] form[data-command='poll'] button",
        "Run poll",
    );
    b.click("#plugin-list [data-plugin='echo'] form[data-command='poll'] button");
    b.wait("#plugin-message", "Queued echo poll as");
    b.screenshots(&shots, "plugins");

    // The compiled pipeline graph as SVG, the switch hop drawn as such.
    b.click("[data-view='pipelines']");
    b.wait("#graph g.hop.switch", "if");
    b.wait("#graph g.hop.uses", "echo handle");
    b.screenshots(&shots, "pipelines");

    // No secret ever reaches the DOM.
    let html = b.run("return document.documentElement.outerHTML", json!([]));
    let html = html.as_str().unwrap();
    for secret in [ADMIN, HOOK_SECRET] {
        assert!(!html.contains(secret));
    }

    // The session cookie is out of the page's reach, and the token is kept nowhere.
    assert_eq!(
        b.run(
            "return document.cookie.includes('ductile_session')",
            json!([])
        ),
        json!(false)
    );
    assert_eq!(
        b.run(
            "return sessionStorage.length + localStorage.length",
            json!([])
        ),
        json!(0)
    );
    assert_eq!(api.dir.count("SELECT COUNT(*) FROM ui_sessions"), 1);

    // Signing out ends the session on the daemon: the cookie opens nothing.
    b.click("#logout");
    b.wait("#login-error", "Signed out");
    assert_eq!(api.dir.count("SELECT COUNT(*) FROM ui_sessions"), 0);
    assert_eq!(
        b.run(
            "return fetch('../session', {cache: 'no-store'}).then((r) => r.status)",
            json!([])
        ),
        json!(401)
    );

    // A read-only token sees jobs, not the admin views, and is refused a retry.
    b.fill("#token", JOBS_RO);
    b.click("#login-form button");
    b.wait("#stat-version", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        b.run("return document.body.dataset.scopes", json!([])),
        json!("jobs")
    );
    assert_eq!(
        b.run(
            "return document.querySelector(\"[data-view='pipelines']\").hidden",
            json!([])
        ),
        json!(true)
    );
    b.click("[data-view='jobs']");
    b.wait(&format!("#jobs-table tr[data-job-id='{failed}']"), "");
    b.click(&format!("#jobs-table tr[data-job-id='{failed}'] a"));
    b.wait("#jd-id", &failed);
    b.click("#jd-retry");
    b.wait("#jd-message", "Refused");
    let msg = b.wait("#jd-message", "(403)");
    assert!(msg.contains("scope") || msg.contains("403"), "{msg}");
    assert_eq!(
        api.dir.count(&format!(
            "SELECT COUNT(*) FROM job_queue WHERE parent_job_id = '{failed}' AND plugin = 'error_no_retry'"
        )),
        1
    );
    // Once the ledger is still, a refresh keeps the very rows it shows, so a
    // click in flight lands on the row that was meant.
    api.dir.wait_until(LONG, "every job finished", || {
        api.dir
            .count("SELECT COUNT(*) FROM job_queue WHERE status IN ('queued', 'running')")
            == 0
    });
    let kept = b.run_async(&format!(
        "const [done] = arguments;
             loadJobs().then(() => {{
               const row = document.querySelector(\"#jobs-table tr[data-job-id='{failed}']\");
               return loadJobs().then(() => done(row.isConnected));
             }});"
    ));
    assert_eq!(kept, json!(true));
    // A reload keeps the session of this tab.
    b.open(&format!("http://{}/ui/#jobs", api.api));
    b.wait(&format!("#jobs-table tr[data-job-id='{failed}']"), "");
}

#[test]
fn browser_pauses_a_schedule_cancels_a_running_job_and_a_read_only_token_is_refused() {
    let dir = TestDir::new("dash-ops");
    crate::http::write_tree(&dir, "", crate::http::WEBHOOKS);
    dir.fixture("hang");
    let config = std::fs::read_to_string(dir.path.join("config.yaml")).unwrap();
    dir.write(
        "config.yaml",
        &format!(
            "{config}    schedules:\n      - id: nightly\n        cron: \"0 3 * * *\"\n  hang: {{}}\n"
        ),
    );
    let api = Api::start_in(dir);
    let shots = api.dir.path.join("screens");
    std::fs::create_dir_all(&shots).unwrap();
    let stored =
        "SELECT status FROM schedule_entries WHERE plugin = 'echo' AND schedule_id = 'nightly'";
    api.dir.wait_until(LONG, "the schedule armed", || {
        api.dir.text(stored).as_deref() == Some("active")
    });
    let b = Browser::start(&api.dir.path);
    b.open(&format!("http://{}/ui/", api.api));
    b.fill("#token", ADMIN);
    b.click("#login-form button");
    b.wait("#live", "live");
    // The overview's storage tiles, as sizes.
    b.wait("#stat-db", "B");
    b.wait("#stat-wal", "B");
    b.wait("#stat-free", "B");

    // Pause from the Schedules view, then ask why it does not run.
    b.click("[data-view='schedules']");
    let row = "#sched-table tr[data-schedule='echo:nightly']";
    b.wait(row, "active");
    b.wait(row, "T03:00:00");
    b.click(&format!("{row} button.pause"));
    b.wait("#sched-message", "Schedule echo:nightly paused");
    b.wait(&format!("{row} button.resume"), "Resume");
    assert_eq!(api.dir.text(stored).as_deref(), Some("paused_manual"));
    b.click(&format!("{row} button.explain"));
    b.wait("#se-sentences li", "Schedule `echo:nightly` is paused");
    // A refresh with nothing changed keeps the row it shows.
    let kept = b.run_async(&format!(
        "const [done] = arguments;
         const row = document.querySelector(\"{row}\");
         loadSchedules().then(() => done(row.isConnected));"
    ));
    assert_eq!(kept, json!(true));
    b.screenshots(&shots, "schedules");

    // A running job is cancelled from its detail: its process ends, it is dead.
    let id = trigger(&api, "hang");
    api.dir.wait_until(LONG, "the hang job running", || {
        api.dir
            .text(&format!("SELECT status FROM job_queue WHERE id = '{id}'"))
            .as_deref()
            == Some("running")
    });
    b.click("[data-view='jobs']");
    b.wait(&format!("#jobs-table tr[data-job-id='{id}']"), "running");
    b.click(&format!("#jobs-table tr[data-job-id='{id}'] a"));
    b.wait("#jd-status", "running");
    b.click("#jd-cancel");
    b.wait("#jd-message", "Cancelling");
    b.wait("#jd-status", "dead");
    assert_eq!(
        api.dir
            .text(&format!(
                "SELECT last_error FROM job_queue WHERE id = '{id}'"
            ))
            .as_deref(),
        Some("cancelled: cancelled over the API")
    );
    b.screenshots(&shots, "cancelled");

    // A read-only token sees the schedules and is refused the resume.
    b.click("#logout");
    b.wait("#login-error", "Signed out");
    b.fill("#token", JOBS_RO);
    b.click("#login-form button");
    b.wait("#stat-version", env!("CARGO_PKG_VERSION"));
    b.click("[data-view='schedules']");
    b.wait(row, "paused_manual");
    b.click(&format!("{row} button.resume"));
    let msg = b.wait("#sched-message", "(403)");
    assert!(msg.starts_with("Refused: "), "{msg}");
    assert_eq!(api.dir.text(stored).as_deref(), Some("paused_manual"));
}

// ------------------------------------------------------------------ watch

#[test]
fn system_watch_plain_prints_the_live_view_and_each_event() {
    let api = dashboard_config("");
    let done = trigger(&api, "echo");
    // The job and the pipeline it starts, all finished.
    api.dir.wait_until(LONG, "the first tree done", || {
        api.dir.count(&format!(
            "SELECT COUNT(*) FROM job_queue WHERE id = '{done}' AND status = 'succeeded'"
        )) == 1
            && api
                .dir
                .count("SELECT COUNT(*) FROM job_queue WHERE status IN ('queued', 'running')")
                == 0
    });
    let url = format!("http://{}", api.api);
    let once = api
        .dir
        .run(&[
            "system",
            "watch",
            "--once",
            "--api-url",
            &url,
            "--api-key",
            ADMIN,
        ])
        .code(0);
    assert!(once.stdout.contains("ductile "), "{}", once.stdout);
    assert!(once.stdout.contains("queued 0"), "{}", once.stdout);
    assert!(once.stdout.contains(short(&done)), "{}", once.stdout);

    // Streaming: each event is one line as it happens.
    let mut cmd = api.dir.command(&[
        "system",
        "watch",
        "--plain",
        "--api-url",
        &url,
        "--api-key",
        ADMIN,
    ]);
    cmd.env_remove("DUCTILE_API_KEY");
    let watch = Lines::start(cmd);
    watch.wait_for(LONG, "streaming events");
    let id = trigger(&api, "error_no_retry");
    let started = watch.wait_for(
        LONG,
        &format!("job.started error_no_retry poll {}", short(&id)),
    );
    assert!(started.contains("attempt 1"), "{started}");
    let ended = watch.wait_for(
        LONG,
        &format!("job.failed error_no_retry poll {}", short(&id)),
    );
    assert!(ended.starts_with("20"), "a timestamp first: {ended}");
    assert_eq!(watch.interrupt(LONG), 0);

    let refused = api.dir.run(&[
        "system",
        "watch",
        "--once",
        "--api-url",
        &url,
        "--api-key",
        "nope",
    ]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("401"), "{}", refused.stderr);
}

/// A command whose stdout lines are collected as they come; killed on drop.
struct Lines {
    child: Option<Child>,
    lines: std::sync::Arc<(std::sync::Mutex<Vec<String>>, std::sync::Condvar)>,
}

impl Lines {
    fn start(mut cmd: Command) -> Lines {
        use std::io::BufRead;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines =
            std::sync::Arc::new((std::sync::Mutex::new(Vec::new()), std::sync::Condvar::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                sink.0.lock().unwrap().push(line);
                sink.1.notify_all();
            }
        });
        Lines {
            child: Some(child),
            lines,
        }
    }

    /// Waits for a line containing `needle` (woken by each new line); returns it.
    fn wait_for(&self, within: Duration, needle: &str) -> String {
        let deadline = std::time::Instant::now() + within;
        let (lines, arrived) = &*self.lines;
        let mut seen = lines.lock().unwrap();
        loop {
            if let Some(l) = seen.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let now = std::time::Instant::now();
            assert!(
                now < deadline,
                "no line with {needle:?} within {within:?}:\n{}",
                seen.join("\n")
            );
            seen = arrived.wait_timeout(seen, deadline - now).unwrap().0;
        }
    }

    /// SIGINT, then its exit code.
    fn interrupt(mut self, within: Duration) -> i32 {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let (tx, rx) = std::sync::mpsc::channel();
        let pid = child.id();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(within) {
            Ok(status) => status.unwrap().code().unwrap_or(-1),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                panic!("still running {within:?} after SIGINT");
            }
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A tmux server of this test's own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(dir: &Path, command: &str) -> Tmux {
        let socket = format!(
            "ductile-it-{}-{}",
            std::process::id(),
            dir.file_name().unwrap().to_string_lossy()
        );
        let t = Tmux { socket };
        let st = t
            .cmd()
            .args(["new-session", "-d", "-s", "watch", "-x", "120", "-y", "45"])
            .arg(command)
            .status()
            .unwrap();
        assert!(st.success());
        t
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"]);
        c
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "watch"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let st = self
            .cmd()
            .args(["send-keys", "-t", "watch"])
            .args(keys)
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Waits until the pane shows `needle`; returns the screen.
    fn wait_for(&self, needle: &str) -> String {
        let mut last = String::new();
        wait_until(LONG, needle, || {
            last = self.screen();
            last.contains(needle)
        });
        last
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").stderr(Stdio::null()).status();
    }
}

#[test]
fn system_watch_in_a_terminal_opens_a_jobs_logs_and_quits_restoring_the_terminal() {
    let api = dashboard_config("");
    let id = trigger(&api, "error_no_retry");
    api.dir.wait_until(LONG, "the failing job done", || {
        api.dir.count(&format!(
            "SELECT COUNT(*) FROM job_queue WHERE id = '{id}' AND status = 'failed'"
        )) == 1
    });
    let d = &api.dir.path;
    let script = format!(
        "stty -g > '{d}/before'; '{bin}' system watch --config '{d}' --api-url http://{addr} --api-key {ADMIN}; echo $? > '{d}/code'; stty -g > '{d}/after'",
        d = d.display(),
        bin = crate::support::bin().display(),
        addr = api.api,
    );
    let tmux = Tmux::start(d, &format!("sh -c \"{script}\""));
    tmux.wait_for("RECENT JOBS");
    tmux.wait_for("(live)");

    // A job started now shows up live, without a key pressed.
    let fresh = trigger(&api, "echo");
    tmux.wait_for(short(&fresh));

    // Select the failed job (newer ones are above it) and open it.
    let selected = format!("> {}", short(&id));
    for _ in 0..12 {
        if tmux.screen().contains(&selected) {
            break;
        }
        let before = tmux.screen();
        tmux.keys(&["j"]);
        wait_until(LONG, "the selection moves", || tmux.screen() != before);
    }
    tmux.wait_for(&selected);
    tmux.keys(&["Enter"]);
    let page = tmux.wait_for(&format!("JOB {id}"));
    assert!(
        page.contains("error_no_retry poll  status failed"),
        "{page}"
    );
    let page = tmux.wait_for("error: error_no_retry: this input can never succeed");
    assert!(page.contains("attempt 1: failed"), "{page}");

    tmux.keys(&["Escape"]);
    tmux.wait_for("RECENT JOBS");
    tmux.keys(&["q"]);
    let after = d.join("after");
    // The shell creates `after` before stty writes it: wait for the line.
    api.dir
        .wait_until(LONG, "watch quit and the shell went on", || {
            std::fs::read_to_string(&after).is_ok_and(|t| t.ends_with('\n'))
        });
    assert_eq!(std::fs::read_to_string(d.join("code")).unwrap().trim(), "0");
    assert_eq!(
        std::fs::read_to_string(d.join("before")).unwrap(),
        std::fs::read_to_string(&after).unwrap(),
        "the terminal settings were not restored"
    );
}
