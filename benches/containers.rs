//! The container section: a container plugin's job against a bare `podman run
//! --rm -i` of the same image, measured side by side (interleaved, so drift in
//! the engine's speed hits both), and the local no-op for scale. Needs podman;
//! the image (`FROM scratch` + the static no-op) is removed afterwards.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::{Bench, percentile, row};

const RUNS: usize = 11;
const REQUEST: &[u8] = br#"{"protocol":2,"job_id":"x","command":"poll","config":{},"state":{},"context":{},"deadline_at":"2026-01-01T00:00:00Z"}"#;

/// The flags ductile adds to every container run (see plugin::container::run_args).
const LOCKED_DOWN: &[&str] = &[
    "--init",
    "--network=none",
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

pub(super) fn run(bench: &Bench, exe: &Path, noop: &Path) {
    if Command::new("podman").arg("--version").output().is_err() {
        println!("(skipped containers: podman not found)");
        return;
    }
    let ctx = bench.dir.join("image");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::copy(noop, ctx.join("noop")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY noop /noop\nENTRYPOINT [\"/noop\"]\n",
    )
    .unwrap();
    let (id, _image) = build_image(&ctx);
    let p = bench.dir.join("plugins/boxed");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(
        p.join("manifest.yaml"),
        format!("manifest_spec: ductile.plugin\nmanifest_version: 1\nname: boxed\nversion: 0.1.0\nprotocol: 2\ncommands:\n  - name: poll\n    type: read\ncontainer:\n  image: {id}\n"),
    )
    .unwrap();
    let root = bench.config("containers", "plugins:\n  boxed: {}\n  noop: {}\n");
    let ductile = |plugin: &str| {
        let t = Instant::now();
        let st = Command::new(exe)
            .args(["run", plugin, "--config"])
            .arg(&root)
            .env_remove("CI")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "ductile run {plugin} failed");
        t.elapsed().as_secs_f64() * 1e3
    };
    let bare = |flags: &[&str]| {
        let t = Instant::now();
        let mut child = Command::new("podman")
            .args(["run", "--rm", "-i"])
            .args(flags)
            .arg(&id)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(REQUEST);
        assert!(child.wait().unwrap().success());
        t.elapsed().as_secs_f64() * 1e3
    };
    let (mut ours, mut plain, mut locked, mut local) = (vec![], vec![], vec![], vec![]);
    // One warm-up round, not counted: the first run pays for cold caches.
    for i in 0..=RUNS {
        let (a, b, c, d) = (
            ductile("boxed"),
            bare(&[]),
            bare(LOCKED_DOWN),
            ductile("noop"),
        );
        if i > 0 {
            ours.push(a);
            plain.push(b);
            locked.push(c);
            local.push(d);
        }
    }
    let (a, b, c, d) = (
        percentile(&mut ours, 0.5),
        percentile(&mut plain, 0.5),
        percentile(&mut locked, 0.5),
        percentile(&mut local, 0.5),
    );
    row(
        "`ductile run` of a container no-op, p50",
        format!("{a:.1} ms"),
        "",
    );
    row(
        "bare `podman run --rm -i` of the same image, p50",
        format!("{b:.1} ms"),
        "",
    );
    row(
        "bare run with ductile's locked-down flags, p50",
        format!("{c:.1} ms"),
        "",
    );
    row(
        "`ductile run` of the local no-op, p50",
        format!("{d:.1} ms"),
        "",
    );
    row(
        "container job over the bare run, p50",
        format!("{:+.1} % ({:+.1} ms)", (a - b) / b * 100.0, a - b),
        "<= 10 %",
    );
    row(
        "container job over the same flags by hand, p50",
        format!("{:+.1} ms", a - c),
        "<= 50 ms",
    );
}

/// Builds the image of the context `ctx` (its Dockerfile): its ID, and the
/// guard that removes it.
pub(super) fn build_image(ctx: &Path) -> (String, Remove) {
    let out = Command::new("podman")
        .args(["build", "-q", "--layers=false"])
        .arg(ctx)
        .output()
        .unwrap();
    assert!(out.status.success(), "podman build failed");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (id.clone(), Remove(id))
}

/// Removes an image on drop.
pub(super) struct Remove(String);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rmi", "-f", &self.0]).output();
    }
}
