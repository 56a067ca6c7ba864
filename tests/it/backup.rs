//! `system backup|restore` and `config backup|restore`: an archive taken while
//! the daemon works restores with the snapshot's rows and a clean ledger; a
//! truncated or altered archive is refused with nothing changed; a backup
//! never overwrites; old files stay beside the restored ones as `.pre-restore`.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::support::TestDir;

/// The counter plugin, slowed to `delay` seconds a job, writing under `out/`.
fn counter_config(dir: &TestDir, delay: &str) {
    dir.fixture("counter");
    dir.config(&format!(
        "service:\n  tick_interval: 1s\n  max_workers: 2\nplugins:\n  counter:\n    parallelism: 2\n    config:\n      out: {}\n      delay: \"{delay}\"\n",
        dir.path.join("out").display()
    ));
}

/// Every file under `root` with its mode and content hash, for "nothing changed".
fn tree(root: &Path) -> BTreeMap<String, (u32, String)> {
    fn visit(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            if meta.is_dir() {
                out.insert(
                    format!("{rel}/"),
                    (meta.permissions().mode(), String::new()),
                );
                visit(root, &path, out);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(
                    rel,
                    (
                        meta.permissions().mode(),
                        blake3::hash(&bytes).to_hex().to_string(),
                    ),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    visit(root, root, &mut out);
    out
}

/// Row counts of every table of the database at `path`, and its integrity_check.
fn ledger(path: &Path) -> (String, BTreeMap<String, i64>) {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    let names: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let counts = names
        .into_iter()
        .map(|n| {
            let k: i64 = c
                .query_row(&format!("SELECT count(*) FROM \"{n}\""), [], |r| r.get(0))
                .unwrap();
            (n, k)
        })
        .collect();
    (check, counts)
}

/// Rewrites `from` into `to`, passing each entry's bytes through `change`.
fn rewrite(from: &Path, to: &Path, mut change: impl FnMut(&str, &mut Vec<u8>)) {
    let mut input = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(from).unwrap(),
    ));
    let out = flate2::write::GzEncoder::new(
        std::fs::File::create(to).unwrap(),
        flate2::Compression::default(),
    );
    let mut builder = tar::Builder::new(out);
    for entry in input.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        change(&name, &mut bytes);
        let mut h = entry.header().clone();
        h.set_size(bytes.len() as u64);
        builder
            .append_data(&mut h, &name, bytes.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
}

#[test]
fn a_backup_taken_under_load_restores_with_the_snapshots_rows_and_a_clean_ledger() {
    let dir = TestDir::new("backup-load");
    counter_config(&dir, "0.02");
    let original_config = std::fs::read(dir.path.join("config.yaml")).unwrap();
    dir.enqueue("counter", 500);
    let daemon = dir.start();
    let terminal =
        "SELECT count(*) FROM job_queue WHERE status IN ('succeeded','failed','dead','timed_out')";
    dir.wait_until(Duration::from_secs(60), "some jobs done", || {
        dir.count(terminal) >= 10
    });

    let archive = dir.path.join("backups/b.tar.gz");
    std::fs::create_dir_all(archive.parent().unwrap()).unwrap();
    let out = dir
        .run(&[
            "system",
            "backup",
            "--to",
            archive.to_str().unwrap(),
            "--scope",
            "plugins",
            "--json",
        ])
        .code(0)
        .json();
    assert_eq!(out["scope"], "plugins");
    let snapshot_tables: BTreeMap<String, i64> =
        serde_json::from_value(out["database"]["tables"].clone()).unwrap();
    assert_eq!(snapshot_tables["job_queue"], 500);
    let done_in_snapshot = dir.count(terminal);
    assert!(
        done_in_snapshot < 500,
        "the daemon was still working after the backup ({done_in_snapshot} done)"
    );
    assert!(
        std::fs::metadata(&archive).unwrap().permissions().mode() & 0o077 == 0,
        "the archive is private"
    );

    // In place, while the daemon holds the ledger: refused, nothing moved.
    let run = dir
        .run(&["system", "restore", "--from", archive.to_str().unwrap()])
        .code(1);
    assert_eq!(
        run.error(),
        format!(
            "a ductile daemon (pid {}) is using {}; stop it before restoring (nothing was changed)",
            daemon.pid(),
            dir.db_path().display()
        )
    );
    assert!(!dir.path.join("config.yaml.pre-restore").exists());
    assert!(!dir.path.join("state/ductile.db.pre-restore").exists());

    let target = dir.path.join("restored");
    let out = dir
        .run(&[
            "system",
            "restore",
            "--from",
            archive.to_str().unwrap(),
            "--to",
            target.to_str().unwrap(),
            "--json",
        ])
        .code(0)
        .json();
    assert_eq!(out["restored"], true);
    let (check, counts) = ledger(&target.join("db/ductile.db"));
    assert_eq!(check, "ok");
    assert_eq!(
        counts, snapshot_tables,
        "the restored ledger has the snapshot's rows"
    );
    let restored_done: i64 = rusqlite::Connection::open(target.join("db/ductile.db"))
        .unwrap()
        .query_row(terminal, [], |r| r.get(0))
        .unwrap();
    assert!(
        (10..500).contains(&restored_done),
        "a point-in-time snapshot taken mid-run: {restored_done} of 500 done"
    );
    assert_eq!(
        std::fs::read(target.join("config/config.yaml")).unwrap(),
        original_config
    );
    let run_sh = target.join("plugins/0/counter/run.sh");
    assert!(
        std::fs::metadata(&run_sh).unwrap().permissions().mode() & 0o100 != 0,
        "a plugin's entrypoint stays executable"
    );
    assert!(
        !target.join("config/state/ductile.db").exists(),
        "the live ledger is archived only as its snapshot"
    );
    let leftovers: Vec<String> = tree(&target)
        .into_keys()
        .filter(|k| k.contains(".ductile-"))
        .collect();
    assert!(leftovers.is_empty(), "staging removed: {leftovers:?}");
    drop(daemon);
}

#[test]
fn a_truncated_or_altered_archive_is_refused_and_changes_nothing() {
    let dir = TestDir::new("backup-corrupt");
    counter_config(&dir, "0");
    dir.enqueue("counter", 3);
    let archive = dir.path.join("a.tar.gz");
    dir.run(&["system", "backup", "--to", archive.to_str().unwrap()])
        .code(0);
    let target = dir.path.join("target");
    dir.run(&[
        "system",
        "restore",
        "--from",
        archive.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
    ])
    .code(0);
    let bytes = std::fs::read(&archive).unwrap();

    let truncated = dir.path.join("truncated.tar.gz");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let flipped = dir.path.join("flipped.tar.gz");
    let mut b = bytes.clone();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    std::fs::write(&flipped, &b).unwrap();
    let altered_config = dir.path.join("altered-config.tar.gz");
    rewrite(&archive, &altered_config, |name, bytes| {
        if name == "config/config.yaml" {
            bytes[0] = b'#';
        }
    });
    let altered_db = dir.path.join("altered-db.tar.gz");
    rewrite(&archive, &altered_db, |name, bytes| {
        if name == "db/ductile.db" {
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
        }
    });
    let extra = dir.path.join("extra.tar.gz");
    rewrite(&archive, &extra, |name, bytes| {
        if name == "BACKUP_MANIFEST.txt" {
            let text = String::from_utf8(bytes.clone()).unwrap();
            *bytes = text
                .replace("- path: config/config.yaml", "- path: config/gone.yaml")
                .into_bytes();
        }
    });

    let before_target = tree(&target);
    let before_source = tree(&dir.path);
    for (bad, expect) in [
        (&truncated, "it is truncated or not a ductile tar.gz"),
        (&flipped, ""),
        (
            &altered_config,
            "`config/config.yaml` does not match its manifest (sha256 ",
        ),
        (
            &altered_db,
            "`db/ductile.db` does not match its manifest (sha256 ",
        ),
        (
            &extra,
            "it holds `config/config.yaml`, which its manifest does not list",
        ),
    ] {
        for to in [Some(&target), None] {
            let mut args = vec!["system", "restore", "--from", bad.to_str().unwrap()];
            if let Some(t) = to {
                args.extend(["--to", t.to_str().unwrap()]);
            }
            let run = dir.run(&args).code(1);
            let err = run.error();
            assert!(
                err.starts_with(&format!("{} cannot be restored: ", bad.display())),
                "{err}"
            );
            assert!(err.contains(expect), "{bad:?}: {err}");
            assert!(err.ends_with("; nothing was changed"), "{err}");
        }
        assert_eq!(tree(&target), before_target, "{bad:?} changed the target");
        let mut after = tree(&dir.path);
        after.retain(|k, _| before_source.contains_key(k));
        assert_eq!(after, before_source, "{bad:?} changed the source tree");
        assert_eq!(
            tree(&dir.path).len(),
            before_source.len(),
            "{bad:?} left files behind"
        );
    }
    // --json keeps the error shape.
    let run = dir
        .run(&[
            "system",
            "restore",
            "--from",
            truncated.to_str().unwrap(),
            "--json",
        ])
        .code(1);
    assert_eq!(run.json()["exit_code"], 1);
}

#[test]
fn a_backup_never_overwrites_and_bad_flags_are_usage_errors() {
    let dir = TestDir::new("backup-exists");
    counter_config(&dir, "0");
    dir.enqueue("counter", 1);
    let to = dir.write("keep.tar.gz", "precious");
    let run = dir
        .run(&["system", "backup", "--to", to.to_str().unwrap()])
        .code(1);
    assert_eq!(
        run.error(),
        format!(
            "{} already exists; a backup never overwrites a file: choose a new name (e.g. with a timestamp) or remove it first",
            to.display()
        )
    );
    assert_eq!(std::fs::read_to_string(&to).unwrap(), "precious");
    dir.run(&[
        "system",
        "backup",
        "--to",
        to.to_str().unwrap(),
        "--dry-run",
    ])
    .code(1);
    let run = dir
        .run(&[
            "system",
            "backup",
            "--to",
            "x.tar.gz",
            "--scope",
            "everything",
        ])
        .code(2);
    assert_eq!(
        run.error(),
        "unknown scope `everything`; use one of db, config, plugins, all"
    );
    let nowhere = dir.path.join("no/such/dir/b.tar.gz");
    let run = dir
        .run(&["system", "backup", "--to", nowhere.to_str().unwrap()])
        .code(1);
    assert_eq!(
        run.error(),
        format!(
            "{}: cannot write the archive into it: no such directory",
            dir.path.join("no/such/dir").display()
        )
    );
    let run = dir.run(&["system", "backup"]).code(2);
    assert_eq!(run.error(), "`--to F.tar.gz` is required");
    let run = dir.run(&["system", "restore"]).code(2);
    assert_eq!(run.error(), "`--from F.tar.gz` is required");
    let leftovers: Vec<String> = tree(&dir.path)
        .into_keys()
        .filter(|k| k.contains(".ductile-") || k.ends_with("x.tar.gz"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A dry run lists what it would take, and writes nothing.
    let fresh = dir.path.join("fresh.tar.gz");
    let out = dir
        .run(&[
            "system",
            "backup",
            "--to",
            fresh.to_str().unwrap(),
            "--scope",
            "db",
            "--dry-run",
            "--json",
        ])
        .code(0)
        .json();
    assert_eq!(out["included"].as_array().unwrap().len(), 1);
    assert_eq!(out["included"][0]["path"], "db/ductile.db");
    assert!(!fresh.exists());
}

#[test]
fn restores_keep_the_old_files_as_pre_restore_and_config_restore_touches_only_config() {
    let dir = TestDir::new("backup-inplace");
    counter_config(&dir, "0");
    dir.enqueue("counter", 2);
    let archive = dir.path.join("c.tar.gz");
    let out = dir
        .run(&[
            "config",
            "backup",
            "--to",
            archive.to_str().unwrap(),
            "--json",
        ])
        .code(0)
        .json();
    assert_eq!(out["scope"], "config");
    let excluded: Vec<String> = out["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["reason"].as_str().unwrap().to_string())
        .collect();
    assert!(
        excluded.contains(&"a plugin root (included from scope plugins)".to_string()),
        "{excluded:?}"
    );

    let original = std::fs::read(dir.path.join("config.yaml")).unwrap();
    let edited = format!(
        "{}# edited after the backup\n",
        String::from_utf8_lossy(&original)
    );
    dir.write("config.yaml", &edited);
    dir.enqueue("counter", 3);
    let db_before = tree(&dir.path.join("state"));

    // The dry run verifies and names what it would replace, changing nothing.
    let before = tree(&dir.path);
    let run = dir
        .run(&[
            "config",
            "restore",
            "--from",
            archive.to_str().unwrap(),
            "--dry-run",
        ])
        .code(0);
    assert!(run.stdout.contains("nothing was changed"), "{}", run.stdout);
    assert_eq!(tree(&dir.path), before);

    dir.run(&["config", "restore", "--from", archive.to_str().unwrap()])
        .code(0);
    assert_eq!(
        std::fs::read(dir.path.join("config.yaml")).unwrap(),
        original
    );
    assert_eq!(
        std::fs::read_to_string(dir.path.join("config.yaml.pre-restore")).unwrap(),
        edited
    );
    assert_eq!(
        tree(&dir.path.join("state")),
        db_before,
        "config restore leaves the ledger"
    );

    // A second restore would overwrite the kept copy: refused, nothing changed.
    let before = tree(&dir.path);
    let run = dir
        .run(&["system", "restore", "--from", archive.to_str().unwrap()])
        .code(1);
    assert_eq!(
        run.error(),
        format!(
            "{} is left from an earlier restore; move or remove it first (nothing was changed)",
            dir.path.join("config.yaml.pre-restore").display()
        )
    );
    assert_eq!(tree(&dir.path), before);

    // With it moved away, the whole archive goes back: the ledger too.
    std::fs::remove_file(dir.path.join("config.yaml.pre-restore")).unwrap();
    assert_eq!(dir.count("SELECT count(*) FROM job_queue"), 5);
    dir.run(&["system", "restore", "--from", archive.to_str().unwrap()])
        .code(0);
    assert_eq!(
        dir.count("SELECT count(*) FROM job_queue"),
        2,
        "the snapshot's ledger"
    );
    assert!(dir.path.join("state/ductile.db.pre-restore").exists());
    let (check, _) = ledger(&dir.path.join("state/ductile.db.pre-restore"));
    assert_eq!(check, "ok", "the old ledger is kept whole");
    // The restored ledger works: a one-shot runs against it.
    dir.run(&["run", "counter"]).code(0);
    assert_eq!(dir.count("SELECT count(*) FROM job_queue"), 3);
}

#[test]
fn scope_all_takes_outside_plugin_roots_and_environment_files() {
    let dir = TestDir::new("backup-all");
    let cfg = dir.path.join("etc");
    let outside = dir.path.join("opt/plugins");
    let ok = dir.fixture_at("ok_basic", "opt/plugins/ok_basic");
    std::fs::create_dir_all(ok.join("node_modules/left-pad")).unwrap();
    std::fs::write(ok.join("node_modules/left-pad/index.js"), "x").unwrap();
    dir.write("secrets/app.env", "TOKEN=s3cret\n");
    dir.write(
        "etc/config.yaml",
        &format!(
            "plugin_roots: [{}]\nstate:\n  path: {}\nenvironment_vars:\n  include: [../secrets/app.env]\nplugins:\n  ok_basic: {{}}\n",
            outside.display(),
            dir.path.join("var/ductile.db").display()
        ),
    );
    let config = cfg.join("config.yaml");
    let ductile = |args: &[&str]| {
        let mut c = dir.command_without_config(args);
        c.arg("--config").arg(&config);
        crate::support::Run::from(c.output().unwrap())
    };
    ductile(&["run", "ok_basic"]).code(0);

    let archive = dir.path.join("all.tar.gz");
    let out = ductile(&[
        "system",
        "backup",
        "--to",
        archive.to_str().unwrap(),
        "--scope",
        "all",
        "--json",
    ])
    .code(0)
    .json();
    let warnings = out["warnings"].to_string();
    assert!(warnings.contains("1 environment file(s)"), "{warnings}");
    let excluded = out["excluded"].to_string();
    assert!(excluded.contains("installed dependencies"), "{excluded}");

    let target = dir.path.join("r");
    ductile(&[
        "system",
        "restore",
        "--from",
        archive.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
    ])
    .code(0);
    assert_eq!(
        std::fs::read_to_string(target.join("env/0/app.env")).unwrap(),
        "TOKEN=s3cret\n"
    );
    assert!(target.join("plugins/0/ok_basic/manifest.yaml").is_file());
    assert!(!target.join("plugins/0/ok_basic/node_modules").exists());
    assert!(target.join("config/config.yaml").is_file());
    let (check, counts) = ledger(&target.join("db/ductile.db"));
    assert_eq!((check.as_str(), counts["job_queue"]), ("ok", 1));

    // A db-scope archive has no config directory for `config restore`.
    let db_only = dir.path.join("db.tar.gz");
    ductile(&[
        "system",
        "backup",
        "--to",
        db_only.to_str().unwrap(),
        "--scope",
        "db",
    ])
    .code(0);
    let run = ductile(&["config", "restore", "--from", db_only.to_str().unwrap()]).code(1);
    assert_eq!(
        run.error(),
        format!(
            "{} cannot be restored: it holds no config directory (it was taken at scope db); nothing was changed",
            db_only.display()
        )
    );
}

#[test]
fn a_restore_killed_between_files_leaves_each_file_old_or_new() {
    let dir = TestDir::new("backup-crash");
    counter_config(&dir, "0");
    dir.write("a.yaml", "a: new\n");
    dir.write("b.yaml", "b: new\n");
    dir.enqueue("counter", 1);
    let archive = dir.path.join("k.tar.gz");
    dir.run(&["config", "backup", "--to", archive.to_str().unwrap()])
        .code(0);
    let names = ["a.yaml", "b.yaml", "config.yaml"];
    let new: Vec<String> = names
        .iter()
        .map(|n| std::fs::read_to_string(dir.path.join(n)).unwrap())
        .collect();
    for n in names {
        let p = dir.path.join(n);
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, format!("{text}# old\n")).unwrap();
    }
    let old: Vec<String> = names
        .iter()
        .map(|n| std::fs::read_to_string(dir.path.join(n)).unwrap())
        .collect();

    // Killed (SIGKILL) as it is about to rename the second file into place.
    let out = dir
        .command(&["config", "restore", "--from", archive.to_str().unwrap()])
        .env("DUCTILE_FAULT", "restore-swap:2")
        .output()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(9),
        "{out:?}"
    );
    let mut states = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let now = std::fs::read_to_string(dir.path.join(n)).unwrap();
        let kept = std::fs::read_to_string(dir.path.join(format!("{n}.pre-restore"))).ok();
        if now == new[i] {
            assert_eq!(
                kept.as_deref(),
                Some(old[i].as_str()),
                "{n}: the old file is kept"
            );
            states.push("new");
        } else {
            assert_eq!(now, old[i], "{n} is either old or new");
            states.push("old");
        }
    }
    assert_eq!(
        states,
        ["new", "old", "old"],
        "files are placed in archive order"
    );
}

#[test]
fn a_ledger_waiting_for_migration_can_be_backed_up_and_restored_as_it_was() {
    let dir = TestDir::new("backup-older");
    dir.echo();
    dir.config("plugins:\n  echo: {}\n");
    std::fs::create_dir_all(dir.path.join("state")).unwrap();
    {
        let c = rusqlite::Connection::open(dir.db_path()).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL;").unwrap();
        c.execute_batch(include_str!("../fixtures/ledgers/v1.sql"))
            .unwrap();
    }
    let version = |p: &Path| -> i64 {
        rusqlite::Connection::open(p)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    };
    let archive = dir.path.join("v1.tar.gz");
    dir.run(&[
        "system",
        "backup",
        "--to",
        archive.to_str().unwrap(),
        "--scope",
        "db",
    ])
    .code(0);
    let target = dir.path.join("r");
    dir.run(&[
        "system",
        "restore",
        "--from",
        archive.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
    ])
    .code(0);
    let restored = target.join("db/ductile.db");
    assert_eq!(version(&restored), version(&dir.db_path()));
    let (check, counts) = ledger(&restored);
    assert_eq!(check, "ok");
    assert_eq!(counts, ledger(&dir.db_path()).1);
}
