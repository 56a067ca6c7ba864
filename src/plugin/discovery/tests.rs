use super::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A unique scratch directory, removed on drop.
pub(crate) struct TempDir {
    pub(crate) path: PathBuf,
}

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("ductile-plugin-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        if let Err(e) = fs::create_dir_all(&path) {
            panic!("cannot create {}: {e}", path.display());
        }
        // Canonical, so expected texts match what discovery prints.
        let path = fs::canonicalize(&path).unwrap_or(path);
        TempDir { path }
    }

    /// Creates (if needed) and returns the subdirectory `name`.
    pub(crate) fn sub(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        if let Err(e) = fs::create_dir_all(&p) {
            panic!("cannot create {}: {e}", p.display());
        }
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plugins")
}

/// Copies fixture `name` to `root/dir_name`, keeping file modes.
pub(crate) fn copy_fixture(name: &str, root: &Path, dir_name: &str) -> PathBuf {
    let src = fixtures().join(name);
    let dst = root.join(dir_name);
    copy_dir(&src, &dst);
    dst
}

fn copy_dir(src: &Path, dst: &Path) {
    if let Err(e) = fs::create_dir_all(dst) {
        panic!("cannot create {}: {e}", dst.display());
    }
    let entries = match fs::read_dir(src) {
        Ok(e) => e,
        Err(e) => panic!("cannot read {}: {e}", src.display()),
    };
    for entry in entries.flatten() {
        let to = dst.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &to);
        } else if let Err(e) = fs::copy(entry.path(), &to) {
            panic!("cannot copy {}: {e}", entry.path().display());
        }
    }
}

pub(crate) fn write(path: &Path, text: &str) {
    if let Err(e) = fs::write(path, text) {
        panic!("cannot write {}: {e}", path.display());
    }
}

pub(crate) fn chmod(path: &Path, mode: u32) {
    if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(mode)) {
        panic!("cannot chmod {}: {e}", path.display());
    }
}

fn link(target: &Path, at: &Path) {
    if let Err(e) = symlink(target, at) {
        panic!("cannot symlink {}: {e}", at.display());
    }
}

fn found_names(scan: &Scan) -> Vec<&str> {
    scan.found
        .iter()
        .map(|f| f.manifest.name.as_str())
        .collect()
}

fn reasons(scan: &Scan) -> Vec<(String, String)> {
    scan.skipped
        .iter()
        .map(|s| (s.name.clone(), s.reason.clone()))
        .collect()
}

#[test]
fn scan_finds_trusted_plugins_and_explains_the_rest() {
    let tmp = TempDir::new("scan");
    let root = tmp.sub("plugins");
    for name in [
        "ok_basic",
        "hang",
        "bad_protocol_3",
        "missing_entrypoint",
        "dotdot_entrypoint",
        "not_executable",
        "no_manifest",
    ] {
        copy_fixture(name, &root, name);
    }
    // Shared helper dirs without entrypoints, hidden dirs and stray files are ignored.
    write(&tmp.sub("plugins/lib").join("oauth.py"), "# helper\n");
    tmp.sub("plugins/_lib");
    copy_fixture("no_manifest", &root, ".hidden");
    write(&root.join("README.md"), "plugins live here\n");

    let scan = scan(std::slice::from_ref(&root), false);
    assert_eq!(found_names(&scan), vec!["hang", "ok_basic"]);
    let ok = &scan.found[1];
    assert_eq!(ok.dir, root.join("ok_basic"));
    assert_eq!(ok.entrypoint, root.join("ok_basic/run.sh"));
    let r = root.display();
    assert_eq!(
        reasons(&scan),
        vec![
            (
                "bad_protocol_3".to_string(),
                format!(
                    "{r}/bad_protocol_3/manifest.yaml: protocol: unsupported protocol 3 (this ductile speaks 2)"
                )
            ),
            (
                "dotdot_entrypoint".to_string(),
                format!(
                    "{r}/dotdot_entrypoint/manifest.yaml: entrypoint: must not contain `..` (path traversal), got `../ok_basic/run.sh`"
                )
            ),
            (
                "missing_entrypoint".to_string(),
                format!("entrypoint `run.sh` does not exist in {r}/missing_entrypoint")
            ),
            (
                "not_executable".to_string(),
                format!(
                    "entrypoint `run.sh` in {r}/not_executable is not executable (run chmod +x on it)"
                )
            ),
        ]
    );
    assert_eq!(
        scan.skipped[0].path,
        root.join("bad_protocol_3/manifest.yaml")
    );
    assert_eq!(scan.skipped[2].path, root.join("missing_entrypoint"));
    assert_eq!(
        scan.warnings,
        vec![format!(
            "{r}/no_manifest has no manifest.yaml but holds `run.sh`; it is not loaded as a plugin"
        )]
    );
}

#[test]
fn entrypoint_looking_files_warn() {
    let tmp = TempDir::new("stray");
    let root = tmp.sub("plugins");
    write(&tmp.sub("plugins/a").join("main.py"), "print()\n");
    let tool = tmp.sub("plugins/b").join("tool");
    write(&tool, "#!/bin/sh\n");
    chmod(&tool, 0o755);
    write(&tmp.sub("plugins/c").join("notes.txt"), "x\n");
    let scan = scan(std::slice::from_ref(&root), false);
    let r = root.display();
    assert_eq!(
        scan.warnings,
        vec![
            format!("{r}/a has no manifest.yaml but holds `main.py`; it is not loaded as a plugin"),
            format!("{r}/b has no manifest.yaml but holds `tool`; it is not loaded as a plugin"),
        ]
    );
    assert!(scan.found.is_empty() && scan.skipped.is_empty());
}

#[test]
fn roots_are_scanned_in_order_and_the_first_name_wins() {
    let tmp = TempDir::new("order");
    let first = tmp.sub("first");
    let second = tmp.sub("second");
    copy_fixture("ok_basic", &second, "ok_basic");
    copy_fixture("hang", &second, "hang");
    copy_fixture("ok_basic", &first, "zz_ok_basic_copy");
    copy_fixture("ok_basic", &first, "ok_basic");

    let scan = scan(&[first.clone(), second.clone()], false);
    assert_eq!(found_names(&scan), vec!["ok_basic", "hang"]);
    assert_eq!(scan.found[0].dir, first.join("ok_basic"));
    assert_eq!(
        reasons(&scan),
        vec![
            (
                "ok_basic".to_string(),
                format!(
                    "duplicate plugin `ok_basic` in {} is ignored: {} declared it first",
                    first.join("zz_ok_basic_copy").display(),
                    first.join("ok_basic").display()
                )
            ),
            (
                "ok_basic".to_string(),
                format!(
                    "duplicate plugin `ok_basic` in {} is ignored: {} declared it first",
                    second.join("ok_basic").display(),
                    first.join("ok_basic").display()
                )
            ),
        ]
    );
}

#[test]
fn world_writable_dir_is_refused_and_keeps_its_name() {
    let tmp = TempDir::new("ww");
    let first = tmp.sub("first");
    let second = tmp.sub("second");
    let dir = copy_fixture("ok_basic", &first, "ok_basic");
    chmod(&dir, 0o777);
    copy_fixture("ok_basic", &second, "ok_basic");
    let scan = scan(&[first.clone(), second.clone()], false);
    assert!(
        scan.found.is_empty(),
        "a refused plugin must not be replaced by a later copy"
    );
    assert_eq!(
        reasons(&scan)[0],
        (
            "ok_basic".to_string(),
            format!(
                "plugin dir {} is world-writable (mode 777; run chmod o-w on it)",
                dir.display()
            )
        )
    );
    assert_eq!(scan.skipped.len(), 2);
}

#[test]
fn missing_root_is_a_warning() {
    let tmp = TempDir::new("noroot");
    let missing = tmp.path.join("nope");
    let scan = scan(std::slice::from_ref(&missing), false);
    assert_eq!(
        scan.warnings,
        vec![format!(
            "plugin root {} cannot be read: No such file or directory (os error 2)",
            missing.display()
        )]
    );
}

#[test]
fn entrypoint_that_is_a_directory_is_refused() {
    let tmp = TempDir::new("epdir");
    let root = tmp.sub("plugins");
    let dir = copy_fixture("missing_entrypoint", &root, "missing_entrypoint");
    tmp.sub("plugins/missing_entrypoint/run.sh");
    let scan = scan(&[root], false);
    assert_eq!(
        reasons(&scan),
        vec![(
            "missing_entrypoint".to_string(),
            format!(
                "entrypoint `run.sh` in {} is not a regular file",
                dir.display()
            )
        )]
    );
}

#[test]
fn symlinked_plugin_dirs_need_permission_and_an_approved_target() {
    let tmp = TempDir::new("dirlink");
    let root = tmp.sub("plugins");
    let other_root = tmp.sub("other");
    let outside = tmp.sub("outside");
    let real = copy_fixture("ok_basic", &other_root, "ok_basic");
    let elsewhere = copy_fixture("hang", &outside, "hang");
    link(&real, &root.join("ok_basic"));
    link(&elsewhere, &root.join("hang"));
    let roots = [root.clone(), other_root.clone()];

    let refused = scan(&roots, false);
    assert!(refused.found.is_empty());
    assert_eq!(
        reasons(&refused),
        vec![
            (
                "hang".to_string(),
                format!(
                    "plugin dir {} is a symlink to {} (refused: service.allow_symlinks is false)",
                    root.join("hang").display(),
                    elsewhere.display()
                )
            ),
            (
                "ok_basic".to_string(),
                format!(
                    "plugin dir {} is a symlink to {} (refused: service.allow_symlinks is false)",
                    root.join("ok_basic").display(),
                    real.display()
                )
            ),
            (
                "ok_basic".to_string(),
                format!(
                    "duplicate plugin `ok_basic` in {} is ignored: {} declared it first",
                    real.display(),
                    root.join("ok_basic").display()
                )
            ),
        ]
    );

    let allowed = scan(&roots, true);
    assert_eq!(found_names(&allowed), vec!["ok_basic"]);
    assert_eq!(allowed.found[0].entrypoint, real.join("run.sh"));
    assert_eq!(
        allowed.skipped[0].reason,
        format!(
            "plugin dir {} resolves to {}, outside every plugin root",
            root.join("hang").display(),
            elsewhere.display()
        )
    );
    assert!(allowed.warnings.contains(&format!(
        "plugin `ok_basic`: plugin dir {} is a symlink to {} (allowed by service.allow_symlinks)",
        root.join("ok_basic").display(),
        real.display()
    )));
}

#[test]
fn symlinked_entrypoints_need_permission_and_must_stay_inside() {
    let tmp = TempDir::new("eplink");
    let root = tmp.sub("plugins");
    let inside = copy_fixture("missing_entrypoint", &root, "inside");
    write(&inside.join("manifest.yaml"), &manifest_named("inside"));
    let target = inside.join("impl.sh");
    write(&target, "#!/bin/sh\n");
    chmod(&target, 0o755);
    link(Path::new("impl.sh"), &inside.join("run.sh"));

    let escape = copy_fixture("missing_entrypoint", &root, "escape");
    write(&escape.join("manifest.yaml"), &manifest_named("escape"));
    link(&target, &escape.join("run.sh"));

    let refused = scan(std::slice::from_ref(&root), false);
    assert!(refused.found.is_empty());
    assert_eq!(
        reasons(&refused),
        vec![
            (
                "escape".to_string(),
                format!(
                    "entrypoint `run.sh` in {} is reached through a symlink (resolves to {}; refused: service.allow_symlinks is false)",
                    escape.display(),
                    target.display()
                )
            ),
            (
                "inside".to_string(),
                format!(
                    "entrypoint `run.sh` in {} is reached through a symlink (resolves to {}; refused: service.allow_symlinks is false)",
                    inside.display(),
                    target.display()
                )
            ),
        ]
    );

    let allowed = scan(std::slice::from_ref(&root), true);
    assert_eq!(found_names(&allowed), vec!["inside"]);
    assert_eq!(allowed.found[0].entrypoint, target);
    assert_eq!(
        reasons(&allowed),
        vec![(
            "escape".to_string(),
            format!(
                "entrypoint `run.sh` resolves to {}, outside the plugin dir {}",
                target.display(),
                escape.display()
            )
        )]
    );
    assert!(allowed.warnings.contains(&format!(
            "plugin `inside`: entrypoint `run.sh` resolves through a symlink to {} (allowed by service.allow_symlinks)",
            target.display()
        )));
}

#[test]
fn bundled_plugins_are_trusted() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins");
    let scan = scan(std::slice::from_ref(&root), false);
    // The compiled plugins have no entrypoint until `make build` made it; any
    // other reason to skip a bundled plugin is a bug.
    let unexplained: Vec<_> = scan
        .skipped
        .iter()
        .filter(|s| {
            !s.reason
                .ends_with("(a compiled plugin: `make build` builds it)")
        })
        .collect();
    assert!(unexplained.is_empty(), "{unexplained:?}");
    assert!(scan.warnings.is_empty(), "{:?}", scan.warnings);
    let Some(echo) = scan.found.iter().find(|f| f.manifest.name == "echo") else {
        panic!("echo not found: {:?}", found_names(&scan));
    };
    let m = &echo.manifest;
    let kinds: Vec<(&str, &str)> = m
        .commands
        .iter()
        .map(|c| (c.name.as_str(), c.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![("poll", "read"), ("handle", "read"), ("health", "read")]
    );
    assert_eq!(
        m.fact_rule("poll").map(|f| f.fact_type.as_str()),
        Some("echo.snapshot")
    );
    assert_eq!(m.fact_rule("health"), None);
    assert_eq!(m.config_keys.optional, vec!["message".to_string()]);
    assert!(m.config_keys.required.is_empty());
}

#[test]
fn fixture_zoo_scans_as_expected() {
    let root = fixtures();
    let scan = scan(&[root], false);
    let mut skipped: Vec<&str> = scan.skipped.iter().map(|s| s.name.as_str()).collect();
    skipped.sort();
    assert_eq!(
        skipped,
        vec![
            "bad_protocol_3",
            "dotdot_entrypoint",
            "missing_entrypoint",
            "not_executable"
        ]
    );
    // Every fixture dir with a manifest loads except the four refused above.
    let dirs = std::fs::read_dir(fixtures())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().join("manifest.yaml").exists())
        .count();
    assert_eq!(found_names(&scan).len(), dirs - 4);
    assert!(found_names(&scan).contains(&"setsid_grandchild"));
    assert_eq!(scan.warnings.len(), 1, "{:?}", scan.warnings);
}

pub(crate) fn manifest_named(name: &str) -> String {
    format!(
        "manifest_spec: ductile.plugin\nmanifest_version: 1\nname: {name}\nversion: 1.0.0\nprotocol: 2\nentrypoint: run.sh\ncommands:\n  - name: poll\n    type: read\n"
    )
}

#[test]
fn a_root_listed_twice_is_scanned_once() {
    let tmp = TempDir::new("tworoots");
    let root = tmp.sub("plugins");
    copy_fixture("ok_basic", &root, "ok_basic");
    let roots = [root.clone(), root.clone()];
    let all = scan(&roots, false);
    assert_eq!(found_names(&all), vec!["ok_basic"]);
    assert!(all.skipped.is_empty(), "{:?}", all.skipped);
    let names: BTreeSet<String> = ["ok_basic".to_string()].into();
    let hot = scan_for(&roots, false, &names, &BTreeSet::new());
    assert_eq!(found_names(&hot), vec!["ok_basic"]);
    assert!(hot.skipped.is_empty(), "{:?}", hot.skipped);
}
