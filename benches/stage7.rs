//! The stage7 section: a Stage7 plugin's job (`ductile run`) against the
//! same steps done by hand: `podman run -d` with the same flags, `podman
//! port`, health probes until 2xx, the POST, `podman rm -f`. Interleaved, so
//! drift in the engine's speed hits both. Then a `keep_warm` job (enqueued
//! into an in-process pool, to its completion's commit) against a direct
//! HTTP POST to the same resident container, also interleaved. The image is
//! busybox httpd with a CGI script, `FROM scratch`; it is removed afterwards.
//! Needs podman and Debian's busybox-static.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Bench, percentile, row};

const RUNS: usize = 11;
/// Rounds of the keep_warm comparison (each: one job, one direct POST).
const WARM_RUNS: usize = 200;

/// ductile's flags for a Stage7 container (see plugin::container::stage7::start_args).
const FLAGS: &[&str] = &[
    "--publish=127.0.0.1::8080",
    "-d",
    "--rm",
    "--init",
    "--network=bridge",
    "--read-only",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    "--memory=256m",
    "--memory-swap=256m",
    "--cpus=1",
    "--pids-limit=128",
    "--pull=never",
    "--log-driver=none",
];

const EXECUTE: &str = "#!/bin/busybox sh\nbody=$(/bin/busybox head -c \"$CONTENT_LENGTH\")\nprintf 'Content-Type: application/json\\r\\n\\r\\n'\nprintf '{\"success\":true,\"outputs\":{\"n\":%s}}' \"${#body}\"\n";

pub(super) fn run(bench: &Bench, exe: &std::path::Path) {
    if Command::new("podman").arg("--version").output().is_err()
        || !std::path::Path::new("/bin/busybox").exists()
    {
        println!("(skipped stage7: podman or /bin/busybox not found)");
        return;
    }
    let ctx = bench.dir.join("stage7-image");
    std::fs::create_dir_all(ctx.join("www/cgi-bin")).unwrap();
    std::fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
    std::fs::write(ctx.join("www/health"), "ok\n").unwrap();
    let execute = ctx.join("www/cgi-bin/execute");
    std::fs::write(&execute, EXECUTE).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&execute, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\nENTRYPOINT [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
    )
    .unwrap();
    let (id, _image) = super::containers::build_image(&ctx);
    stage7_plugin(bench, "s7bench", &id, "1s", 10);
    let root = bench.config("stage7", "plugins:\n  s7bench: {}\n");
    let ductile = || {
        let t = Instant::now();
        let st = Command::new(exe)
            .args([
                "run",
                "s7bench",
                "handle",
                "--payload",
                r#"{"x":1}"#,
                "--config",
            ])
            .arg(&root)
            .env_remove("CI")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "ductile run s7bench failed");
        t.elapsed().as_secs_f64() * 1e3
    };
    let agent = ureq::AgentBuilder::new().max_idle_connections(0).build();
    let mut n = 0;
    let mut by_hand = || {
        n += 1;
        let name = format!("ductile-s7bench-{}-{n}", std::process::id());
        let t = Instant::now();
        let st = Command::new("podman")
            .arg("run")
            .args(FLAGS)
            .arg(format!("--name={name}"))
            .arg(&id)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let addr = api_addr(&name);
        // The same backoff as ductile's: 10 ms doubling.
        let mut pause = Duration::from_millis(10);
        while !agent
            .get(&format!("http://{addr}/health"))
            .call()
            .is_ok_and(|a| a.status() == 200)
        {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(1));
        }
        let answer = agent
            .post(&format!("http://{addr}/cgi-bin/execute"))
            .set("Content-Type", "application/json")
            .send_string(r#"{"inputs":{"x":{"value":1,"args":{}}},"context":{}}"#)
            .unwrap()
            .into_string()
            .unwrap();
        assert!(answer.contains("\"success\":true"), "{answer}");
        let st = Command::new("podman")
            .args(["rm", "-f", "--ignore", &name])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        t.elapsed().as_secs_f64() * 1e3
    };
    let (mut ours, mut hand) = (vec![], vec![]);
    // One warm-up round, not counted.
    for i in 0..=RUNS {
        let (a, b) = (ductile(), by_hand());
        if i > 0 {
            ours.push(a);
            hand.push(b);
        }
    }
    let (a, b) = (percentile(&mut ours, 0.5), percentile(&mut hand, 0.5));
    row(
        "`ductile run` of a Stage7 job (spawn per job), p50",
        format!("{a:.1} ms"),
        "",
    );
    row(
        "start + port + health wait + POST + rm by hand, p50",
        format!("{b:.1} ms"),
        "",
    );
    row(
        "Stage7 job over the same steps by hand, p50",
        format!("{:+.1} % ({:+.1} ms)", (a - b) / b * 100.0, a - b),
        "<= 10 %",
    );
    warm(bench, &id);
}

/// A keep_warm job, enqueue to committed completion through an in-process
/// pool, against a direct POST of the same body to the same container.
fn warm(bench: &Bench, image: &str) {
    use ductile::dispatch::pool::{Pool, PoolConfig, RunningJobs};
    use ductile::plugin::container::stage7::warm::{LABEL, Warm};
    use ductile::store::queue::{NewJob, SubmittedBy};

    stage7_plugin(bench, "s7warm", image, "30s", 3);
    let root = bench.config(
        "stage7-warm",
        "service:\n  max_workers: 2\nplugins:\n  s7warm:\n    keep_warm: 10m\n",
    );
    let rt = Arc::new(ductile::runtime::Runtime::load(&root).unwrap());
    let db = rt.config.state.path.clone();
    let sync = ductile::config::Synchronous::Normal;
    let mut conn = ductile::store::open(&db, sync).unwrap();
    let warm = Arc::new(Warm::start(ductile::disk::ledger_dir(&db), &rt.registry).unwrap());
    let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
    let (fatal_tx, _fatal_rx) = crossbeam_channel::unbounded();
    // Each commit (claim or completion) rings here, so the wait for the
    // completion is woken by it rather than by polling.
    let (commit_tx, commit_rx) = crossbeam_channel::unbounded::<()>();
    let pool = Pool::start(PoolConfig {
        db: db.clone(),
        synchronous: sync,
        workers: 2,
        runtime: Arc::new(ductile::runtime::RuntimeCell::new(rt.clone())),
        clock: Arc::new(ductile::clock::SystemClock),
        running: Arc::new(RunningJobs::default()),
        wake_rx,
        requests: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        fatal_tx,
        committed: Arc::new(move |_: Option<&str>| {
            let _ = commit_tx.send(());
        }),
        beat: None,
        warm: Some(warm.clone()),
    })
    .unwrap();
    // Per job: the time in the Stage7 runner (lease, request, answer).
    let mut inside: Vec<f64> = Vec::new();
    let mut job = || {
        let new = NewJob::new(
            "s7warm",
            "handle",
            serde_json::json!({"type": "bench", "payload": {"x": 1}}),
            SubmittedBy::Cli,
            1,
        );
        let t = Instant::now();
        let id = super::enqueue_new(&mut conn, &new, chrono::Utc::now());
        let _ = wake_tx.try_send(());
        loop {
            commit_rx.recv_timeout(Duration::from_secs(30)).unwrap();
            let status: String = conn
                .query_row("SELECT status FROM job_queue WHERE id = ?1", [&id], |r| {
                    r.get(0)
                })
                .unwrap();
            match status.as_str() {
                "succeeded" => {
                    let dur_ns: i64 = conn
                        .query_row(
                            "SELECT dur_ns FROM job_stopwatch WHERE job_id = ?1",
                            [&id],
                            |r| r.get(0),
                        )
                        .unwrap();
                    inside.push(dur_ns as f64 / 1e6);
                    break;
                }
                "queued" | "running" => {}
                other => panic!("keep_warm bench job {id} is {other}"),
            }
        }
        t.elapsed().as_secs_f64() * 1e3
    };
    // The first job starts the container.
    job();
    let ps = Command::new("podman")
        .args([
            "ps",
            "--filter",
            &format!("label={LABEL}=s7warm"),
            "--format",
            "{{.Names}}",
        ])
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&ps.stdout).trim().to_string();
    assert!(
        !names.is_empty() && !names.contains('\n'),
        "warm containers: {names:?}"
    );
    let addr = api_addr(&names);
    let agent = ureq::AgentBuilder::new().max_idle_connections(0).build();
    let url = format!("http://{addr}/cgi-bin/execute");
    let body = r#"{"inputs":{"x":{"value":1,"args":{}}},"context":{"trace_id":"bench","plugin_id":"s7warm","version":"0.0.0"}}"#;
    let direct = || {
        let t = Instant::now();
        let answer = agent
            .post(&url)
            .set("Content-Type", "application/json")
            .send_string(body)
            .unwrap()
            .into_string()
            .unwrap();
        assert!(answer.contains("\"success\":true"), "{answer}");
        t.elapsed().as_secs_f64() * 1e3
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..WARM_RUNS + 10 {
        let (a, b) = (job(), direct());
        // The first rounds warm the page cache and the WAL.
        if i >= 10 {
            ours.push(a);
            theirs.push(b);
        }
    }
    let (a50, a95) = (
        percentile(&mut ours.clone(), 0.5),
        percentile(&mut ours, 0.95),
    );
    let (b50, b95) = (
        percentile(&mut theirs.clone(), 0.5),
        percentile(&mut theirs, 0.95),
    );
    row(
        "keep_warm Stage7 job, enqueue -> completed, p50",
        format!("{a50:.2} ms"),
        "",
    );
    row(
        "keep_warm Stage7 job, enqueue -> completed, p95",
        format!("{a95:.2} ms"),
        "",
    );
    row(
        "direct POST to the same warm container, p50",
        format!("{b50:.2} ms"),
        "",
    );
    row(
        "direct POST to the same warm container, p95",
        format!("{b95:.2} ms"),
        "",
    );
    row(
        "keep_warm job over a direct POST, p50",
        format!("{:+.2} ms", a50 - b50),
        "<= 5 ms",
    );
    row(
        "keep_warm job over a direct POST, p95",
        format!("{:+.2} ms", a95 - b95),
        "",
    );
    // The warm-up job and the first ten rounds are not counted.
    let mut inside: Vec<f64> = inside.split_off(11.min(inside.len()));
    row(
        "of which in the Stage7 runner (lease + POST + answer), p50",
        format!("{:.2} ms", percentile(&mut inside, 0.5)),
        "",
    );
    drop(wake_tx);
    pool.join();
    // The last handle on the registry: the container goes now.
    drop(warm);
}

/// Installs a Stage7 plugin `id` serving the bench image's CGI endpoint,
/// health-checked every `interval` with `retries`.
fn stage7_plugin(bench: &Bench, id: &str, image: &str, interval: &str, retries: u32) {
    let p = bench.dir.join("plugins").join(id);
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(
        p.join("manifest.json"),
        serde_json::json!({
            "id": id, "verb": "BENCH", "name": "bench",
            "inputDefinitions": [], "outputDefinitions": [],
            "container": {"image": image, "healthCheck": {"path": "/health", "interval": interval, "retries": retries}},
            "api": {"endpoint": "/cgi-bin/execute", "timeout": "10s"}
        })
        .to_string(),
    )
    .unwrap();
}

/// The host address the container `name` publishes its API port on.
fn api_addr(name: &str) -> String {
    let port = Command::new("podman")
        .args(["port", name, "8080/tcp"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&port.stdout)
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string()
}
