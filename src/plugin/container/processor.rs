//! The `processor-v1` envelope ("Docker-only processor"): the protocol v2
//! request becomes `{execution_id, write_prefix, schema, mode, model, params}`
//! on stdin, the job's artifacts directory is mounted at `/artifacts`, and the
//! canonical success or error envelope on stdout becomes the v2 response.
//!
//! Rules kept from the contract: `mode` is `mock` or `real` from the plugin's
//! config, never inferred; under `CI=true` a `real` run is refused with
//! `ERR_CI_SAFETY` before any container starts; every output's size and
//! sha256 are checked against the file it names (`ERR_OUTPUT_WRITE`).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::plugin::protocol::Response;
use crate::plugin::spawn::OutcomeKind;

/// Where the job's artifacts directory appears inside the container.
pub const MOUNT: &str = "/artifacts";

/// A request translated for the processor, and what checking its answer needs.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The processor's stdin.
    pub request: Vec<u8>,
    /// The job's artifacts directory on the host (`<state dir>/artifacts/<job_id>`).
    pub artifacts: PathBuf,
    /// `mock` or `real`.
    pub mode: String,
    /// `sha256:<hex>` of the request sent.
    pub inputs_hash: String,
}

/// Why a job of a processor did not start (never retried).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl Refused {
    /// The error response a refused job records (never retried).
    pub fn into_response(self) -> Response {
        response(None, Some(self.0), false)
    }
}

/// Translates the v2 request for job `job_id` and creates its artifacts
/// directory under `artifacts_root`. `ci` is whether ductile runs under `CI=true`.
pub fn prepare(
    v2_request: &[u8],
    job_id: &str,
    artifacts_root: &Path,
    ci: bool,
) -> Result<Prepared, Refused> {
    let req: Value = serde_json::from_slice(v2_request)
        .map_err(|e| Refused(format!("processor-v1: the request cannot be read: {e}")))?;
    let config = req.get("config").cloned().unwrap_or(Value::Null);
    let mode = match config.get("mode").and_then(Value::as_str) {
        Some(m @ ("mock" | "real")) => m.to_string(),
        Some(other) => {
            return Err(Refused(format!(
                "processor-v1: config.mode must be mock or real, got `{other}`"
            )));
        }
        None => {
            return Err(Refused(
                "processor-v1: config.mode is required (mock or real; it is never inferred)"
                    .to_string(),
            ));
        }
    };
    if ci && mode == "real" {
        return Err(Refused(
            "ERR_CI_SAFETY: mode real is refused when CI=true; use mode: mock in CI".to_string(),
        ));
    }
    let params = req
        .get("event")
        .and_then(|e| e.get("payload"))
        .filter(|p| p.is_object())
        .or_else(|| config.get("params"))
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    let body = json!({
        "execution_id": job_id,
        "write_prefix": format!("{MOUNT}/outputs/{job_id}/"),
        "schema": "v1",
        "mode": mode,
        "model": config.get("model").cloned().unwrap_or(Value::Null),
        "params": params,
    });
    let request = serde_json::to_vec(&body)
        .map_err(|e| Refused(format!("processor-v1: cannot encode the request: {e}")))?;
    let artifacts = artifacts_root.join(job_id);
    let outputs = artifacts.join("outputs").join(job_id);
    std::fs::create_dir_all(&outputs).map_err(|e| {
        Refused(format!(
            "processor-v1: cannot create the artifacts directory {}: {e}",
            outputs.display()
        ))
    })?;
    let inputs_hash = format!("sha256:{}", hex(&Sha256::digest(&request)));
    Ok(Prepared {
        request,
        artifacts,
        mode,
        inputs_hash,
    })
}

/// The v2 outcome of the processor's stdout.
pub fn translate(stdout: &[u8], prep: &Prepared, image: &str, duration_ms: u128) -> OutcomeKind {
    let v: Value = match serde_json::from_slice(stdout) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return OutcomeKind::ProtocolError("processor-v1 envelope is not an object".into());
        }
        Err(e) => {
            return OutcomeKind::ProtocolError(format!("processor-v1 envelope is not JSON: {e}"));
        }
    };
    let meta = v.get("meta").cloned().unwrap_or(Value::Null);
    let receipt = json!({
        "image_digest": meta.get("image_digest").cloned().unwrap_or_else(|| Value::String(image.to_string())),
        "env_fingerprint": meta.get("env_fingerprint").cloned().unwrap_or(Value::Null),
        "inputs_hash": prep.inputs_hash,
        "duration_ms": meta.get("duration_ms").cloned().unwrap_or_else(|| json!(duration_ms)),
        "mode": prep.mode,
    });
    match v.get("status").and_then(Value::as_str) {
        Some("success") => match outputs(&v, prep) {
            Ok((outputs, index_path)) => OutcomeKind::Succeeded(response(
                Some(json!({"outputs": outputs, "index_path": index_path, "receipt": receipt})),
                None,
                true,
            )),
            Err(detail) => OutcomeKind::Failed(response(
                Some(json!({"receipt": receipt})),
                Some(format!("ERR_OUTPUT_WRITE: {detail}")),
                true,
            )),
        },
        Some("error") => {
            let err = v.get("error").cloned().unwrap_or(Value::Null);
            let code = err
                .get("code")
                .and_then(Value::as_str)
                .unwrap_or("ERR_PROCESSOR");
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the processor reported an error");
            // Bad inputs stay bad on a retry.
            let retry = !matches!(code, "ERR_INPUTS" | "ERR_CI_SAFETY");
            OutcomeKind::Failed(response(
                Some(json!({"code": code, "message": message, "receipt": receipt})),
                Some(format!("{code}: {message}")),
                retry,
            ))
        }
        _ => OutcomeKind::ProtocolError(
            "processor-v1 envelope has no status success or error".to_string(),
        ),
    }
}

/// The outputs with their paths on the host, each checked against its file.
fn outputs(v: &Value, prep: &Prepared) -> Result<(Vec<Value>, Value), String> {
    let items = v
        .get("outputs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let mut o = match item {
            Value::Object(o) => o,
            _ => return Err(format!("outputs[{i}] is not an object")),
        };
        let path = o.get("path").and_then(Value::as_str).unwrap_or_default();
        let host = host_path(&prep.artifacts, path)
            .ok_or_else(|| format!("outputs[{i}].path `{path}` is not under {MOUNT}/"))?;
        let (size, sha) =
            file_digest(&host).map_err(|e| format!("outputs[{i}] {}: {e}", host.display()))?;
        if let Some(declared) = o.get("size_bytes").and_then(Value::as_u64) {
            if declared != size {
                return Err(format!(
                    "outputs[{i}] {} is {size} bytes, the envelope says {declared}",
                    host.display()
                ));
            }
        }
        let declared_sha = o.get("sha256").and_then(Value::as_str).or_else(|| {
            o.get("cid")
                .and_then(Value::as_str)
                .and_then(|c| c.strip_prefix("sha256:"))
        });
        if let Some(d) = declared_sha {
            if !d.eq_ignore_ascii_case(&sha) {
                return Err(format!(
                    "outputs[{i}] {} has sha256 {sha}, the envelope says {d}",
                    host.display()
                ));
            }
        }
        o.insert("path".into(), Value::String(host.display().to_string()));
        o.insert("sha256".into(), Value::String(sha));
        o.insert("size_bytes".into(), json!(size));
        out.push(Value::Object(o));
    }
    let index = match v.get("index_path").and_then(Value::as_str) {
        Some(p) => host_path(&prep.artifacts, p)
            .map(|h| Value::String(h.display().to_string()))
            .ok_or_else(|| format!("index_path `{p}` is not under {MOUNT}/"))?,
        None => Value::Null,
    };
    Ok((out, index))
}

/// `/artifacts/x/y` → `<artifacts>/x/y`; `None` outside the mount or with `..`.
fn host_path(artifacts: &Path, path: &str) -> Option<PathBuf> {
    let rest = Path::new(path).strip_prefix(MOUNT).ok()?;
    if rest.as_os_str().is_empty()
        || rest
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        return None;
    }
    Some(artifacts.join(rest))
}

fn file_digest(path: &Path) -> std::io::Result<(u64, String)> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, hex(&h.finalize())))
}

/// Removes the per-job artifacts directories under `root` last modified
/// before `cutoff` (retention: their `job_log` rows, which name the files,
/// go at the same age); returns how many went. Symlinks and files are left.
pub fn prune_artifacts(root: &Path, cutoff: chrono::DateTime<chrono::Utc>) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        let old = meta
            .modified()
            .is_ok_and(|m| chrono::DateTime::<chrono::Utc>::from(m) < cutoff);
        if meta.is_dir() && old {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => removed += 1,
                Err(err) => log::warn!("cannot prune artifacts {}: {err}", e.path().display()),
            }
        }
    }
    removed
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A processor answer never carries events.
fn response(result: Option<Value>, error: Option<String>, retry: bool) -> Response {
    super::v2::response(result, error, retry, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_prunes_old_artifacts_directories() {
        let root = std::env::temp_dir().join(format!("ductile-prune-{}", std::process::id()));
        std::fs::create_dir_all(root.join("job1/outputs")).unwrap();
        let past = chrono::Utc::now() - chrono::Duration::hours(1);
        assert_eq!(prune_artifacts(&root, past), 0);
        assert!(root.join("job1").is_dir());
        let future = chrono::Utc::now() + chrono::Duration::hours(1);
        assert_eq!(prune_artifacts(&root, future), 1);
        assert!(!root.join("job1").exists());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn paths_stay_under_the_mount() {
        let a = Path::new("/state/artifacts/j");
        assert_eq!(
            host_path(a, "/artifacts/outputs/j/x.png"),
            Some(PathBuf::from("/state/artifacts/j/outputs/j/x.png"))
        );
        assert_eq!(host_path(a, "/artifacts/../etc/passwd"), None);
        assert_eq!(host_path(a, "/tmp/x"), None);
        assert_eq!(host_path(a, "/artifacts"), None);
    }

    #[test]
    fn mode_is_required_and_real_is_refused_in_ci() {
        let tmp = std::env::temp_dir().join(format!("ductile-proc-{}", std::process::id()));
        let req = |mode: &str| {
            serde_json::to_vec(&json!({"config": {"mode": mode}, "event": {"payload": {"n": 1}}}))
                .unwrap()
        };
        let p = prepare(&req("mock"), "j1", &tmp, true).unwrap();
        let sent: Value = serde_json::from_slice(&p.request).unwrap();
        assert_eq!(sent["write_prefix"], "/artifacts/outputs/j1/");
        assert_eq!(sent["params"], json!({"n": 1}));
        assert!(p.artifacts.join("outputs/j1").is_dir());
        let err = prepare(&req("real"), "j2", &tmp, true).unwrap_err();
        assert!(err.0.starts_with("ERR_CI_SAFETY"), "{err:?}");
        assert!(
            !tmp.join("j2").exists(),
            "nothing is created for a refused run"
        );
        assert!(prepare(&req("fast"), "j3", &tmp, false).is_err());
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
