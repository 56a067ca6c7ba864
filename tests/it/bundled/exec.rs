//! `sys_exec`: a signed webhook runs the configured command with the payload in
//! its environment; exit codes decide success, retry and permanent failure.

use std::time::Duration;

use serde_json::json;

use super::{install, run_json};
use crate::http::{HOOK_SECRET, listening, raw, sign};
use crate::support::TestDir;

#[test]
fn sys_exec_on_a_webhook_sees_the_payload_as_environment() {
    let dir = TestDir::new("bundled-exec-hook");
    install(&dir, "sys_exec");
    std::fs::create_dir_all(dir.path.join("out")).unwrap();
    dir.write(
        "tokens.yaml",
        &format!("tokens:\n  - name: hook-secret\n    key: {HOOK_SECRET}\n"),
    );
    dir.config(&format!(
        "service:\n  tick_interval: 1s\nwebhooks:\n  listen: 127.0.0.1:0\n  endpoints:\n    - name: deploy\n      path: /webhook/deploy\n      plugin: deploy\n      command: handle\n      secret_ref: hook-secret\n      signature_header: X-Hub-Signature-256\ninclude: [tokens.yaml]\nplugins:\n  deploy:\n    uses: sys_exec\n    config:\n      command: [sh, -c, 'printf \"%s@%s\" \"$DUCTILE_PAYLOAD_BRANCH\" \"$DUCTILE_PAYLOAD_BUILD_ID\" > out/deployed.tmp && mv out/deployed.tmp out/deployed.txt']\n      working_dir: {}\n",
        dir.path.display()
    ));
    let daemon = dir.start();
    let addr = listening(&daemon, "webhooks.listen");
    let body = br#"{"branch":"main","build-id":7}"#;
    let request = format!(
        "POST /webhook/deploy HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Hub-Signature-256: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        sign(HOOK_SECRET, body),
        body.len(),
        String::from_utf8_lossy(body)
    );
    let answer = raw(&addr, request.as_bytes());
    assert!(answer.status < 300, "{answer:?}");
    let out = dir.path.join("out/deployed.txt");
    dir.wait_until(Duration::from_secs(30), "the command's output file", || {
        out.exists()
    });
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "main@7");
    dir.wait_until(Duration::from_secs(30), "the job to succeed", || {
        dir.count("SELECT COUNT(*) FROM job_queue WHERE plugin = 'deploy' AND status = 'succeeded'")
            == 1
    });
    let result = dir
        .text("SELECT COALESCE(stdout, '') || COALESCE(result, '') FROM job_log WHERE plugin = 'deploy'")
        .unwrap_or_default();
    assert!(result.contains("sys_exec.completed"), "{result}");
}

#[test]
fn sys_exec_exit_codes_decide_success_retry_and_failure() {
    let dir = TestDir::new("bundled-exec-codes");
    install(&dir, "sys_exec");
    dir.config("plugins:\n  job:\n    uses: sys_exec\n    retry:\n      max_attempts: 1\n    config:\n      command: 'exit \"${DUCTILE_PAYLOAD_CODE:-0}\"'\n      shell: true\n      success_exit_codes: [0, 3]\n      retryable_exit_codes: [75]\n      include_output: true\n");
    let (r, v) = run_json(&dir, "job", "handle", &json!({"code": 3}));
    assert_eq!(r.code, 0, "{r:#?}");
    let ev = &v["response"]["events"][0];
    assert_eq!(ev["type"], "sys_exec.completed");
    assert_eq!(ev["payload"]["exit_code"], 3);
    let (r, v) = run_json(&dir, "job", "handle", &json!({"code": 75}));
    assert_eq!(r.code, 1, "{r:#?}");
    assert_eq!(v["response"]["retry"], true, "retryable: {v:#}");
    let (r, v) = run_json(&dir, "job", "handle", &json!({"code": 1}));
    assert_eq!(r.code, 1, "{r:#?}");
    assert_eq!(v["response"]["retry"], false, "{v:#}");
    assert!(v["error"].as_str().unwrap().contains("exited 1"), "{v:#}");
}
