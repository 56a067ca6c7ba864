//! The stage7 section: a Stage7 plugin's job (`ductile run`) against the
//! same steps done by hand: `podman run -d` with the same flags, `podman
//! port`, health probes until 2xx, the POST, `podman rm -f`. Interleaved, so
//! drift in the engine's speed hits both. The image is busybox httpd with a
//! CGI script, `FROM scratch`; it is removed afterwards. Needs podman and
//! Debian's busybox-static.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Bench, percentile, row};

const RUNS: usize = 11;

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
    let p = bench.dir.join("plugins/s7bench");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(
        p.join("manifest.json"),
        serde_json::json!({
            "id": "s7bench", "verb": "BENCH", "name": "bench",
            "inputDefinitions": [], "outputDefinitions": [],
            "container": {"image": id, "healthCheck": {"path": "/health", "interval": "1s", "retries": 10}},
            "api": {"endpoint": "/cgi-bin/execute", "timeout": "10s"}
        })
        .to_string(),
    )
    .unwrap();
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
        let port = Command::new("podman")
            .args(["port", &name, "8080/tcp"])
            .output()
            .unwrap();
        let addr = String::from_utf8_lossy(&port.stdout)
            .lines()
            .next()
            .unwrap()
            .trim()
            .to_string();
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
}
