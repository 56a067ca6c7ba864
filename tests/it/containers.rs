//! Container plugins on a real engine (podman): the image is built per test
//! `FROM scratch` with the host's static busybox, labelled with the test's
//! directory so its ID is its own, and removed when the test ends; every
//! test checks that no `ductile-<job_id>` container of its jobs is left.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{TestDir, wait_until};

const LONG: Duration = Duration::from_secs(60);

/// A test image; removed (by ID, which is unique to the test) on drop.
pub(crate) struct Image {
    pub(crate) id: String,
}

impl Image {
    fn build(dir: &TestDir) -> Image {
        Image::build_with(dir, |_| {}, "", r#"["/bin/busybox"]"#)
    }

    /// Builds `FROM scratch` with the host's static busybox at `/bin/busybox`;
    /// `fill` adds files to the build context, `copy` the Dockerfile lines that
    /// take them in, `entrypoint` the JSON exec form.
    pub(crate) fn build_with(
        dir: &TestDir,
        fill: impl FnOnce(&std::path::Path),
        copy: &str,
        entrypoint: &str,
    ) -> Image {
        let ctx = dir.path.join("image");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::copy("/bin/busybox", ctx.join("busybox"))
            .expect("/bin/busybox (busybox-static) is needed to build test images");
        fill(&ctx);
        let label = dir.path.file_name().unwrap().to_string_lossy().to_string();
        std::fs::write(
            ctx.join("Dockerfile"),
            format!(
                "FROM scratch\nLABEL ductile.test={label}\nCOPY busybox /bin/busybox\n{copy}ENTRYPOINT {entrypoint}\n"
            ),
        )
        .unwrap();
        let out = Command::new("podman")
            .args(["build", "-q", "--layers=false"])
            .arg(&ctx)
            .output()
            .expect("podman is needed (run the container engine setup)");
        assert!(
            out.status.success(),
            "podman build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(id.len(), 64, "image id: {id:?}");
        Image { id }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rmi", "-f", &self.id])
            .output();
    }
}

/// Containers (any state) named after one of the ledger's jobs.
pub(crate) fn containers_of_jobs(dir: &TestDir) -> Vec<String> {
    let ids: Vec<String> = dir
        .texts("SELECT id FROM job_queue")
        .into_iter()
        .flatten()
        .collect();
    let out = Command::new("podman")
        .args(["ps", "-a", "--format", "{{.Names}}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|n| ids.iter().any(|id| *n == format!("ductile-{id}")))
        .map(str::to_string)
        .collect()
}

/// Writes container plugin `name` running `sh -c SCRIPT` in `image`, with
/// extra lines in its `container:` block.
fn plugin(dir: &TestDir, name: &str, image: &str, script: &str, extra: &str) {
    let script = serde_json::to_string(script).unwrap();
    dir.write(
        &format!("plugins/{name}/manifest.yaml"),
        &format!(
            "manifest_spec: ductile.plugin\nmanifest_version: 1\nname: {name}\nversion: 0.1.0\nprotocol: 2\ncommands:\n  - name: poll\n    type: read\n  - name: handle\n    type: write\ncontainer:\n  image: {image}\n  args: [sh, -c, {script}]\n{extra}"
        ),
    );
}

fn run(dir: &TestDir, args: &[&str]) -> (i32, Value, String) {
    let out = dir.command(args).env_remove("CI").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let v = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        v,
        format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

/// `result` of the latest attempt.
fn last_result(dir: &TestDir) -> Option<String> {
    let text =
        dir.text("SELECT result FROM job_log ORDER BY completed_at DESC, attempt DESC LIMIT 1")?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["result"].as_str().map(str::to_string)
}

fn job_field(dir: &TestDir, field: &str) -> Option<String> {
    dir.text(&format!(
        "SELECT CAST({field} AS TEXT) FROM job_queue ORDER BY created_at DESC LIMIT 1"
    ))
}

#[test]
fn a_container_plugin_answers_from_a_locked_down_container() {
    let dir = TestDir::new("ctr-ok");
    let image = Image::build(&dir);
    // The answer reports what the container saw: its network interfaces, whether
    // its root is writable, its job id, and that the request reached its stdin.
    plugin(
        &dir,
        "boxed",
        &image.id,
        r#"req=$(cat); case "$req" in *'"command":"poll"'*) ;; *) exit 3;; esac
nets=$(ls /sys/class/net | tr '\n' ' ')
if touch /probe 2>/dev/null; then root=writable; else root=read-only; fi
caps=$(grep CapEff /proc/self/status | tr -d '\t')
printf '{"status":"ok","result":"net=%s root=%s %s job=%s"}' "$nets" "$root" "$caps" "$DUCTILE_JOB_ID""#,
        "",
    );
    dir.config("plugins:\n  boxed:\n    enabled: true\n");
    let (code, v, all) = run(&dir, &["run", "boxed", "--json"]);
    assert_eq!(code, 0, "{all}");
    let job = job_field(&dir, "id").unwrap();
    assert_eq!(v["status"], "succeeded", "{all}");
    assert_eq!(
        last_result(&dir).unwrap_or_default(),
        format!("net=lo  root=read-only CapEff:0000000000000000 job={job}"),
        "{all}"
    );
    assert!(containers_of_jobs(&dir).is_empty());
}

#[test]
fn a_container_that_times_out_is_removed_and_exit_78_is_a_config_error() {
    let dir = TestDir::new("ctr-timeout");
    let image = Image::build(&dir);
    plugin(&dir, "slow", &image.id, "cat >/dev/null; exec sleep 60", "");
    plugin(
        &dir,
        "misconfigured",
        &image.id,
        "cat >/dev/null; echo 'token missing' >&2; exit 78",
        "",
    );
    dir.config(
        "plugins:\n  slow:\n    enabled: true\n    timeouts:\n      poll: 1s\n  misconfigured:\n    enabled: true\n",
    );
    let started = Instant::now();
    let (code, _, all) = run(&dir, &["run", "slow"]);
    assert_eq!(code, 1, "{all}");
    assert!(all.contains("timed out after 1"), "{all}");
    // The init in the container passes the runner's SIGTERM on: no 5 s grace.
    assert!(started.elapsed() < Duration::from_secs(10), "{all}");
    assert_eq!(
        job_field(&dir, "status").as_deref(),
        Some("timed_out"),
        "{all}"
    );
    assert!(containers_of_jobs(&dir).is_empty());

    let (code, _, all) = run(&dir, &["run", "misconfigured"]);
    assert_eq!(code, 78, "{all}");
    assert!(
        all.contains("configuration error") && all.contains("token missing"),
        "{all}"
    );
    assert!(containers_of_jobs(&dir).is_empty());
}

#[test]
fn a_container_past_its_memory_limit_fails_the_job() {
    let dir = TestDir::new("ctr-mem");
    let image = Image::build(&dir);
    // Command substitution holds all 50 MB in the shell's memory.
    plugin(
        &dir,
        "hungry",
        &image.id,
        r#"cat >/dev/null; x=$(head -c 50000000 /dev/zero | tr '\0' a); printf '{"status":"ok","result":"%s"}' "${#x}""#,
        "  resources:\n    memory: 16m\n",
    );
    dir.config("plugins:\n  hungry:\n    enabled: true\n    max_attempts: 1\n");
    let (code, _, all) = run(&dir, &["run", "hungry"]);
    assert_eq!(code, 1, "{all}");
    assert_eq!(
        job_field(&dir, "status").as_deref(),
        Some("failed"),
        "{all}"
    );
    assert_eq!(last_result(&dir), None, "{all}");
    // The engine reports the OOM kill as exit 137 (128 + SIGKILL).
    let error = job_field(&dir, "last_error").unwrap_or_default();
    assert!(error.contains("137"), "{error}");
    assert!(containers_of_jobs(&dir).is_empty());
}

#[test]
fn a_mutable_tag_is_refused_and_a_missing_image_is_reported_with_the_fix() {
    let dir = TestDir::new("ctr-pin");
    let missing = "0".repeat(64);
    plugin(&dir, "tagged", "busybox:latest", "true", "");
    plugin(&dir, "absent", &missing, "true", "");
    plugin(
        &dir,
        "opted_in",
        "localhost/never-built:dev",
        "true",
        "  allow_mutable_tag: true\n",
    );
    dir.config(
        "plugins:\n  tagged:\n    enabled: true\n  absent:\n    enabled: true\n  opted_in:\n    enabled: true\n",
    );
    let (code, v, all) = run(&dir, &["plugin", "list", "--json"]);
    assert_eq!(code, 0, "{all}");
    let manifest = dir.path.join("plugins/tagged/manifest.yaml");
    let reason = v["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == manifest.display().to_string())
        .map(|s| s["reason"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("tagged not skipped: {all}"));
    assert_eq!(
        reason,
        format!(
            "{}: container.image: `busybox:latest` is a mutable tag; pin it by digest (`name@sha256:...`) or by local image ID (`ductile plugin build` prints it), or set allow_mutable_tag: true",
            manifest.display()
        )
    );
    let plugins = v["plugins"].as_array().unwrap();
    let absent = plugins.iter().find(|p| p["name"] == "absent").unwrap();
    assert_eq!(absent["container"]["runnable"], false, "{all}");
    assert!(
        absent["container"]["problem"]
            .as_str()
            .unwrap()
            .starts_with(&format!("image {missing} is not present in podman")),
        "{all}"
    );
    assert!(
        absent["container"]["fix"]
            .as_str()
            .unwrap()
            .contains("ductile plugin build absent"),
        "{all}"
    );
    assert!(
        v["warnings"]
            .to_string()
            .contains("image `localhost/never-built:dev` is a mutable tag"),
        "{all}"
    );
    let (code, v, all) = run(&dir, &["system", "doctor", "--json"]);
    assert_eq!(code, 1, "{all}");
    let check = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "container.absent")
        .unwrap_or_else(|| panic!("{all}"));
    assert_eq!(check["status"], "fail", "{all}");
    assert!(
        check.to_string().contains("ductile plugin build absent"),
        "{all}"
    );
    // Running the missing image fails as a spawn failure naming the engine.
    let (code, _, all) = run(&dir, &["run", "absent"]);
    assert_eq!(code, 1, "{all}");
    assert!(all.contains("podman could not run image"), "{all}");
}

#[test]
fn plugin_build_prints_the_id_to_pin_and_config_lock_records_it() {
    let dir = TestDir::new("ctr-build");
    let missing = "0".repeat(64);
    plugin(&dir, "built", &missing, "true", "");
    // One instruction: the build leaves no intermediate image behind, and the
    // test's own directory name makes the content (so the ID) unique.
    dir.write(
        "plugins/built/Dockerfile",
        "FROM scratch\nCOPY . /plugin/\n",
    );
    dir.write("plugins/built/unique", &dir.path.display().to_string());
    dir.config("plugins:\n  built:\n    enabled: true\n");
    let (code, v, all) = run(&dir, &["plugin", "build", "built", "--json"]);
    let id = v["image_id"].as_str().unwrap_or_default().to_string();
    let _image = Image { id: id.clone() };
    assert_eq!(code, 0, "{all}");
    assert_eq!(id.len(), 64, "{all}");
    let inspected = Command::new("podman")
        .args(["image", "inspect", "--format", "{{.Id}}", &id])
        .output()
        .unwrap();
    assert!(inspected.status.success(), "{all}");
    // Pinned, the plugin is runnable and `config lock` records the image ID.
    plugin(&dir, "built", &id, "true", "");
    let (_, v, all) = run(&dir, &["plugin", "list", "--json"]);
    assert_eq!(v["plugins"][0]["container"]["runnable"], true, "{all}");
    let (code, _, all) = run(&dir, &["config", "lock"]);
    assert_eq!(code, 0, "{all}");
    let seal = std::fs::read_to_string(dir.path.join(".checksums")).unwrap();
    assert!(seal.contains(&format!("entrypoint: image:{id}")), "{seal}");
}

#[test]
fn kill_9_during_a_container_job_removes_the_container_and_the_job_retries() {
    let dir = TestDir::new("ctr-crash");
    let image = Image::build(&dir);
    let out = dir.path.join("out");
    std::fs::create_dir_all(&out).unwrap();
    plugin(
        &dir,
        "once",
        &image.id,
        r#"cat >/dev/null; if [ -e /out/started ]; then printf '{"status":"ok","result":"second"}'; else touch /out/started; exec sleep 120; fi"#,
        &format!("  mounts: ['{}:/out:rw']\n", out.display()),
    );
    dir.config("plugins:\n  once:\n    enabled: true\n");
    let ids = dir.enqueue("once", 1);
    let daemon = dir.start_with_env(&[("CI", "")]);
    dir.wait_until(LONG, "the first attempt started", || {
        out.join("started").exists()
    });
    wait_until(LONG, "its container runs", || {
        containers_of_jobs(&dir) == [format!("ductile-{}", ids[0])]
    });
    daemon.crash();
    // The engine keeps the container without its client.
    assert_eq!(containers_of_jobs(&dir), [format!("ductile-{}", ids[0])]);
    let daemon = dir.start_with_env(&[("CI", "")]);
    dir.wait_until(LONG, "the retry succeeded", || {
        job_field(&dir, "status").as_deref() == Some("succeeded")
    });
    assert_eq!(last_result(&dir).as_deref(), Some("second"));
    assert_eq!(job_field(&dir, "attempt").as_deref(), Some("2"));
    assert!(
        daemon
            .log()
            .iter()
            .any(|l| l.contains("recovered orphaned job")),
        "{:?}",
        daemon.log()
    );
    drop(daemon);
    assert!(containers_of_jobs(&dir).is_empty());
}

#[test]
fn a_container_plugin_runs_in_a_pipeline_next_to_a_local_plugin() {
    let dir = TestDir::new("ctr-pipe");
    let image = Image::build(&dir);
    dir.fixture("ok_basic");
    plugin(
        &dir,
        "boxed",
        &image.id,
        r#"cat >/dev/null; printf '{"status":"ok","result":"boxed","events":[{"type":"boxed.done","payload":{"from":"container"}}]}'"#,
        "",
    );
    dir.config(
        "plugins:\n  boxed:\n    enabled: true\n  ok_basic:\n    enabled: true\npipelines:\n  - name: mixed\n    on: go\n    steps:\n      - uses: boxed\n      - uses: ok_basic\n",
    );
    let daemon = dir.start_with_env(&[("CI", "")]);
    let (code, v, all) = run(&dir, &["pipeline", "run", "mixed", "--wait", "--json"]);
    assert_eq!(code, 0, "{all}");
    let tree = v["tree"].as_array().unwrap();
    let plugins: Vec<&str> = tree
        .iter()
        .filter_map(|j| j["plugin"].as_str())
        .filter(|p| *p != "pipeline")
        .collect();
    assert!(
        plugins.contains(&"boxed") && plugins.contains(&"ok_basic"),
        "{all}"
    );
    assert!(tree.iter().all(|j| j["status"] == "succeeded"), "{all}");
    drop(daemon);
    assert!(containers_of_jobs(&dir).is_empty());
}

#[test]
fn shutdown_removes_a_running_container() {
    let dir = TestDir::new("ctr-stop");
    let image = Image::build(&dir);
    let out = dir.path.join("out");
    std::fs::create_dir_all(&out).unwrap();
    // The program ignores SIGTERM, so only removing the container ends it.
    plugin(
        &dir,
        "stubborn",
        &image.id,
        "cat >/dev/null; trap '' TERM; touch /out/started; while :; do sleep 1; done",
        &format!("  mounts: ['{}:/out:rw']\n", out.display()),
    );
    dir.config("service:\n  shutdown_timeout: 1s\nplugins:\n  stubborn:\n    enabled: true\n");
    let ids = dir.enqueue("stubborn", 1);
    let daemon = dir.start_with_env(&[("CI", "")]);
    dir.wait_until(LONG, "the job started", || out.join("started").exists());
    wait_until(LONG, "its container runs", || {
        containers_of_jobs(&dir) == [format!("ductile-{}", ids[0])]
    });
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
    assert!(containers_of_jobs(&dir).is_empty());
    // The job stays running for the next start's recovery.
    assert_eq!(job_field(&dir, "status").as_deref(), Some("running"));
}

/// A processor speaking the processor-v1 envelope: writes `a.txt` under its
/// write prefix and declares it; `lie` declares the wrong size, `fail`
/// answers the error envelope.
const PROCESSOR: &str = r#"req=$(cat)
id=$(echo "$req" | sed -n 's/.*"execution_id":"\([^"]*\)".*/\1/p')
prefix=$(echo "$req" | sed -n 's/.*"write_prefix":"\([^"]*\)".*/\1/p')
case "$req" in *'"fail":true'*)
  printf '{"status":"error","execution_id":"%s","error":{"code":"ERR_INPUTS","message":"no image given"},"meta":{}}' "$id"; exit 1;;
esac
printf 'hello' > "${prefix}a.txt"
size=5; case "$req" in *'"lie":true'*) size=6;; esac
sum=$(sha256sum "${prefix}a.txt" | cut -d' ' -f1)
printf '{"status":"success","execution_id":"%s","outputs":[{"path":"%sa.txt","cid":"sha256:%s","size_bytes":%s,"mime":"text/plain"}],"index_path":null,"meta":{"image_digest":"sha256:feed","env_fingerprint":"fp1","duration_ms":3}}' "$id" "$prefix" "$sum" "$size""#;

#[test]
fn a_processor_v1_image_runs_unchanged_with_its_artifacts_checked() {
    let dir = TestDir::new("ctr-proc");
    let image = Image::build(&dir);
    plugin(
        &dir,
        "proc",
        &image.id,
        PROCESSOR,
        "  envelope: processor-v1\n",
    );
    dir.config(
        "plugins:\n  proc:\n    enabled: true\n    max_attempts: 1\n    config:\n      mode: mock\n      model: tiny\n  proc_real:\n    uses: proc\n    enabled: true\n    max_attempts: 1\n    config:\n      mode: real\n",
    );
    let (code, _, all) = run(&dir, &["run", "proc", "handle", "--payload", "{}"]);
    assert_eq!(code, 0, "{all}");
    let job = job_field(&dir, "id").unwrap();
    let text = dir
        .text("SELECT result FROM job_log ORDER BY completed_at DESC LIMIT 1")
        .unwrap();
    let result = &serde_json::from_str::<Value>(&text).unwrap()["result"];
    let host = dir
        .path
        .join(format!("state/artifacts/{job}/outputs/{job}/a.txt"));
    assert_eq!(
        result["outputs"][0]["path"],
        host.display().to_string(),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&host).unwrap(), "hello");
    assert_eq!(result["outputs"][0]["size_bytes"], 5);
    assert_eq!(result["receipt"]["mode"], "mock");
    assert_eq!(result["receipt"]["image_digest"], "sha256:feed");
    assert!(
        result["receipt"]["inputs_hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{text}"
    );

    let (code, _, all) = run(
        &dir,
        &["run", "proc", "handle", "--payload", r#"{"lie":true}"#],
    );
    assert_eq!(code, 1, "{all}");
    let error = job_field(&dir, "last_error").unwrap();
    assert!(
        error.starts_with("ERR_OUTPUT_WRITE: ")
            && error.contains("is 5 bytes, the envelope says 6"),
        "{error}"
    );

    let (code, _, all) = run(
        &dir,
        &["run", "proc", "handle", "--payload", r#"{"fail":true}"#],
    );
    assert_eq!(code, 1, "{all}");
    assert_eq!(
        job_field(&dir, "last_error").as_deref(),
        Some("ERR_INPUTS: no image given")
    );
    assert!(containers_of_jobs(&dir).is_empty());

    // Under CI=true, mode real is refused before any container starts.
    let out = dir
        .command(&["run", "proc_real", "handle", "--payload", "{}"])
        .env("CI", "true")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("ERR_CI_SAFETY: mode real is refused"), "{all}");
    assert_eq!(job_field(&dir, "status").as_deref(), Some("failed"));
    let real = job_field(&dir, "id").unwrap();
    assert!(!dir.path.join(format!("state/artifacts/{real}")).exists());
}

#[test]
fn a_plugin_config_may_run_a_local_plugin_as_an_image() {
    let dir = TestDir::new("ctr-conf");
    let image = Image::build(&dir);
    dir.fixture("ok_basic");
    let script = serde_json::to_string(
        r#"cat >/dev/null; printf '{"status":"ok","result":"inside %s"}' "$(ls /sys/class/net | tr -d '\n')""#,
    )
    .unwrap();
    dir.config(&format!(
        "plugins:\n  ok_basic:\n    enabled: true\n    container:\n      image: {}\n      args: [sh, -c, {script}]\n",
        image.id
    ));
    let (code, _, all) = run(&dir, &["run", "ok_basic"]);
    assert_eq!(code, 0, "{all}");
    assert_eq!(last_result(&dir).as_deref(), Some("inside lo"), "{all}");
    assert!(containers_of_jobs(&dir).is_empty());

    dir.config(&format!(
        "plugins:\n  ok_basic:\n    enabled: true\n    container:\n      image: {}\n      network: host\n",
        image.id
    ));
    let (code, _, all) = run(&dir, &["config", "check"]);
    assert_eq!(code, 78, "{all}");
    assert!(
        all.contains("plugins.ok_basic.container.network: must be none or bridge, got `host`"),
        "{all}"
    );
}

/// A D6E STF in busybox sh: echoes its request as its output, fails as the
/// payload asks.
const STF: &str = r#"req=$(cat)
case "$req" in
*'"fail":"soft"'*) echo '{"error":"ledger is locked","type":"LockError","details":{"n":1}}'; exit 1;;
*'"fail":"hard"'*) echo '{"error":"no such account","type":"ConfigError"}'; exit 78;;
esac
printf '{"output":{"status":"success","request":%s}}' "$req""#;

#[test]
fn a_d6e_stf_image_runs_unchanged() {
    let dir = TestDir::new("ctr-d6e");
    let image = Image::build(&dir);
    plugin(&dir, "stf", &image.id, STF, "  envelope: d6e-stf\n");
    dir.config(
        "service:\n  name: home\nplugins:\n  stf:\n    enabled: true\n    max_attempts: 1\n",
    );
    let (code, v, all) = run(
        &dir,
        &[
            "run",
            "stf",
            "handle",
            "--payload",
            r#"{"amount":3}"#,
            "--json",
        ],
    );
    assert_eq!(code, 0, "{all}");
    assert_eq!(v["status"], "succeeded", "{all}");
    let text = dir
        .text("SELECT result FROM job_log ORDER BY completed_at DESC LIMIT 1")
        .unwrap();
    let logged: Value = serde_json::from_str(&text).unwrap();
    let output = &logged["result"];
    assert_eq!(output["status"], "success", "{text}");
    let sent = &output["request"];
    assert_eq!(
        sent["workspace_id"],
        ductile::plugin::container::d6e::workspace_uuid("home").to_string()
    );
    assert_eq!(
        sent["stf_id"],
        ductile::plugin::container::d6e::stf_uuid("stf").to_string()
    );
    assert_eq!(sent["caller"], Value::Null);
    assert_eq!(sent["api_url"], Value::Null);
    assert_eq!(sent["api_token"], Value::Null);
    assert_eq!(
        sent["input"],
        serde_json::json!({"amount": 3, "operation": "handle"})
    );
    assert_eq!(sent["sources"], serde_json::json!({}));
    assert_eq!(logged["events"][0]["type"], "stf.completed", "{text}");
    assert_eq!(logged["events"][0]["payload"], *output);

    let (code, _, all) = run(
        &dir,
        &["run", "stf", "handle", "--payload", r#"{"fail":"soft"}"#],
    );
    assert_eq!(code, 1, "{all}");
    assert_eq!(
        job_field(&dir, "last_error").as_deref(),
        Some("LockError: ledger is locked")
    );

    let (code, _, all) = run(
        &dir,
        &["run", "stf", "handle", "--payload", r#"{"fail":"hard"}"#],
    );
    assert_eq!(code, 78, "{all}");
    assert!(all.contains("ConfigError: no such account"), "{all}");
    assert!(containers_of_jobs(&dir).is_empty());
}

/// An STF that calls the SQL callback over the bridge with busybox `nc`
/// (a hand-written HTTP/1.0 request) and reports every answer.
const STF_SQL: &str = r#"req=$(cat)
get() { echo "$req" | sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"; }
url=$(get api_url); tok=$(get api_token); ws=$(get workspace_id); stf=$(get stf_id)
hp=${url#http://}; host=${hp%:*}; port=${hp##*:}
call() {
  printf 'POST /api/v1/workspaces/%s/sql HTTP/1.0\r\nAuthorization: Bearer %s\r\nX-Workspace-ID: %s\r\nX-STF-ID: %s\r\nContent-Length: %s\r\n\r\n%s' "$2" "$1" "$2" "$stf" "${#3}" "$3" | nc "$host" "$port" > /tmp/out 2>&1
  status=$(head -n 1 /tmp/out | cut -d' ' -f2)
  printf '{"status":%s,"body":%s}' "${status:-0}" "$(tail -n 1 /tmp/out)"
}
ins=$(call "$tok" "$ws" '{"sql":"INSERT INTO items (name) VALUES (?1)","params":["from-stf"]}')
sel=$(call "$tok" "$ws" '{"sql":"SELECT name FROM items ORDER BY name"}')
ddl=$(call "$tok" "$ws" '{"sql":"CREATE TABLE evil (x)"}')
bad=$(call "nope" "$ws" '{"sql":"SELECT 1"}')
foreign=$(call "$tok" "6f1c1a52-5ad8-4a5e-9d1e-3b1d1a1c0b2a" '{"sql":"SELECT 1"}')
printf '{"output":{"status":"success","url":"%s","token":"%s","insert":%s,"select":%s,"ddl":%s,"bad_token":%s,"foreign":%s}}' "$url" "$tok" "$ins" "$sel" "$ddl" "$bad" "$foreign""#;

#[test]
fn a_d6e_stf_calls_back_into_its_workspace_database_during_its_job_only() {
    let dir = TestDir::new("ctr-d6e-sql");
    let image = Image::build(&dir);
    let db = dir.path.join("workspace.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE items (name TEXT); INSERT INTO items VALUES ('seed');")
        .unwrap();
    plugin(
        &dir,
        "stf",
        &image.id,
        STF_SQL,
        "  envelope: d6e-stf\n  network: bridge\n",
    );
    plugin(&dir, "closed", &image.id, "cat", "  envelope: d6e-stf\n");
    dir.config(&format!(
        "plugins:\n  stf:\n    enabled: true\n    max_attempts: 1\n    config:\n      d6e:\n        database: {}\n",
        db.display()
    ));
    let (code, _, all) = run(&dir, &["run", "stf", "handle", "--payload", "{}"]);
    assert_eq!(code, 0, "{all}");
    let text = dir
        .text("SELECT result FROM job_log ORDER BY completed_at DESC LIMIT 1")
        .unwrap();
    let out = &serde_json::from_str::<Value>(&text).unwrap()["result"];
    assert_eq!(out["insert"]["status"], 200, "{text}");
    assert_eq!(out["insert"]["body"]["affected_rows"], 1, "{text}");
    assert_eq!(out["select"]["status"], 200, "{text}");
    assert_eq!(
        out["select"]["body"]["rows"],
        serde_json::json!([{"name": "from-stf"}, {"name": "seed"}]),
        "{text}"
    );
    assert_eq!(out["ddl"]["status"], 403, "{text}");
    assert!(
        out["ddl"]["body"]["error"]
            .as_str()
            .unwrap()
            .contains("CREATE is not allowed"),
        "{text}"
    );
    assert_eq!(out["bad_token"]["status"], 401, "{text}");
    assert_eq!(out["foreign"]["status"], 403, "{text}");
    assert!(
        out["url"]
            .as_str()
            .unwrap()
            .starts_with("http://host.containers.internal:"),
        "{text}"
    );
    // The job has ended: its listener, and with it its token, are gone.
    let port: u16 = out["url"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // (A parallel test may have been given the freed port since: then
    // whatever listens there must not know the callback's route.)
    if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
        use std::io::{Read, Write};
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let body = r#"{"sql":"SELECT 1"}"#;
        let _ = s.write_all(
            format!(
                "POST /api/v1/workspaces/x/sql HTTP/1.0\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(
            !answer.contains("affected_rows"),
            "the callback still answers: {answer}"
        );
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'evil'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0);
    assert!(containers_of_jobs(&dir).is_empty());

    // Without the bridge, the callback cannot be reached: refused at load.
    dir.config(&format!(
        "plugins:\n  closed:\n    enabled: true\n    config:\n      d6e:\n        database: {}\n",
        db.display()
    ));
    let (code, _, all) = run(&dir, &["run", "closed", "handle", "--payload", "{}"]);
    assert_ne!(code, 0, "{all}");
    assert!(
        all.contains(
            "plugins.closed.config.d6e.database: the SQL callback needs container.network: bridge"
        ),
        "{all}"
    );
}

#[test]
fn a_d6e_stf_in_a_pipeline_names_its_caller_and_chains_on_its_completed_event() {
    let dir = TestDir::new("ctr-d6e-pipe");
    let image = Image::build(&dir);
    dir.fixture("ok_basic");
    plugin(&dir, "stf", &image.id, STF, "  envelope: d6e-stf\n");
    dir.config(
        "plugins:\n  stf:\n    enabled: true\n  ok_basic:\n    enabled: true\npipelines:\n  - name: books\n    on: go\n    steps:\n      - uses: stf\n      - uses: ok_basic\n  - name: sourced\n    on: go-sourced\n    steps:\n      - id: prep\n        uses: ok_basic\n      - id: book\n        uses: stf\n",
    );
    let daemon = dir.start_with_env(&[("CI", "")]);
    let (code, v, all) = run(&dir, &["pipeline", "run", "books", "--wait", "--json"]);
    assert_eq!(code, 0, "{all}");
    let tree = v["tree"].as_array().unwrap();
    assert!(
        tree.iter().any(|j| j["plugin"] == "ok_basic"),
        "the step after the STF ran on stf.completed: {all}"
    );
    assert!(tree.iter().all(|j| j["status"] == "succeeded"), "{all}");
    drop(daemon);
    let text = dir
        .text("SELECT l.result FROM job_log l JOIN job_queue q ON q.id = l.job_id WHERE q.plugin = 'stf'")
        .unwrap();
    let sent = &serde_json::from_str::<Value>(&text).unwrap()["result"]["request"];
    let instance = dir
        .text("SELECT json_extract(accumulated_json, '$.ductile_pipeline_instance_id') FROM event_context WHERE step_id IS NOT NULL LIMIT 1")
        .unwrap();
    assert_eq!(sent["caller"], Value::String(instance), "{text}");
    assert_eq!(sent["input"]["operation"], "handle", "{text}");
    // The STF as the first step has no earlier step to name.
    assert_eq!(sent["sources"], serde_json::json!({}), "{text}");

    // As a later step, `sources` names each earlier step with its output.
    let daemon = dir.start_with_env(&[("CI", "")]);
    let (code, v, all) = run(&dir, &["pipeline", "run", "sourced", "--wait", "--json"]);
    assert_eq!(code, 0, "{all}");
    assert!(
        v["tree"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["status"] == "succeeded"),
        "{all}"
    );
    drop(daemon);
    let text = dir
        .text("SELECT l.result FROM job_log l JOIN job_queue q ON q.id = l.job_id WHERE q.plugin = 'stf' ORDER BY l.completed_at DESC LIMIT 1")
        .unwrap();
    let sent = &serde_json::from_str::<Value>(&text).unwrap()["result"]["request"];
    assert_eq!(
        sent["sources"],
        serde_json::json!({"prep": {"output": "ok_basic done"}}),
        "{text}"
    );
    assert!(containers_of_jobs(&dir).is_empty());
}
