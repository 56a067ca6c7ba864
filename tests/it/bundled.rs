//! The bundled plugins (plugins/<name>/) run through the real binary: `ductile
//! run`, webhooks and pipelines, each plugin as the debug build of its crate in
//! the plugins workspace, installed into the test's own plugin root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::support::{Run, TestDir, repo};

mod classify;
mod exec;
mod fetch;
mod flow;
mod notify;
mod sqlite;

/// The plugins workspace's debug binaries, built once per test process.
fn built() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = repo().join("plugins/target");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--bins", "--manifest-path"])
            .arg(repo().join("plugins/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            // The core's test flags (if any) are not the plugins'.
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "building the bundled plugins failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target.join("debug")
    })
}

/// Installs bundled plugin `name` (its manifest and binary as `run`) into the
/// test's plugin root.
pub fn install(dir: &TestDir, name: &str) -> PathBuf {
    let bin = built().join(format!("ductile-{name}"));
    let dst = dir.path.join("plugins").join(name);
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::copy(
        repo().join("plugins").join(name).join("manifest.yaml"),
        dst.join("manifest.yaml"),
    )
    .unwrap();
    std::fs::copy(&bin, dst.join("run")).unwrap();
    std::fs::set_permissions(dst.join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    dst
}

/// `ductile run <plugin> <command> --payload <payload> --json`.
pub fn run_json(
    dir: &TestDir,
    plugin: &str,
    command: &str,
    payload: &serde_json::Value,
) -> (Run, serde_json::Value) {
    let payload = payload.to_string();
    let r = dir.run(&["run", plugin, command, "--payload", &payload, "--json"]);
    let v = r.json();
    (r, v)
}

/// Every bundled plugin, as `make build` installs it, passes the conformance
/// checker an author runs: no error finding for any of them.
#[test]
fn every_bundled_plugin_passes_plugin_check() {
    let dir = TestDir::new("bundled-check");
    let names: Vec<String> = std::fs::read_dir(repo().join("plugins"))
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            let compiled = p.join("Cargo.toml").is_file() && p.join("manifest.yaml").is_file();
            let name = p.file_name()?.to_string_lossy().into_owned();
            compiled.then_some(name)
        })
        .collect();
    assert!(names.len() >= 8, "{names:?}");
    for name in &names {
        let at = install(&dir, name);
        let r = dir.run(&["plugin", "check", &at.to_string_lossy(), "--json"]);
        let v = r.json();
        let errors: Vec<&serde_json::Value> = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["severity"] == "error")
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:#?}");
        assert_eq!(r.code, 0, "{name}: {v:#}");
        assert_eq!(v["plugin"], serde_json::json!(name), "{v:#}");
    }
}
