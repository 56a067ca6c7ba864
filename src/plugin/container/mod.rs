//! Container plugins: a manifest's `container:` block turns the plugin into an
//! image run by the docker-compatible engine CLI, one container per job (the
//! exception: a Stage7 instance with `keep_warm`, [`stage7::warm`]).
//!
//! Owns: the block's rules ([`spec`]), finding and calling the engine
//! ([`engine`]), the locked-down `run` argv, and the container's end: every
//! run that did not end by itself (timeout, cancel, shutdown, output cap,
//! engine failure) removes its container by name, `ductile-<job_id>`, and
//! crash recovery removes those of orphaned jobs.
//! Must not: run a second process runner. The engine CLI is the process
//! [`spawn::run`] supervises, so stdin, capped stdout/stderr, the deadline,
//! exit 78 and the status precedence are exactly those of a local plugin.

pub mod d6e;
pub mod engine;
pub mod processor;
pub mod spec;
pub mod stage7;
pub mod v2;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::plugin::spawn::{self, CancelToken, Invocation, Outcome, OutcomeKind};
pub use engine::Engine;
pub use spec::{ContainerSpec, Envelope, Network, Pinning};

/// Prefix of every container ductile starts.
pub const NAME_PREFIX: &str = "ductile-";

/// Exit codes the docker-compatible CLIs use for their own failures (the
/// engine could not run the container, the command could not be invoked, it
/// was not found), as opposed to the contained program's exit code.
const ENGINE_FAILURES: [i32; 3] = [125, 126, 127];

/// The container name of a job: `ductile-<job_id>`, with any character an
/// engine refuses in a name replaced by `_`.
pub fn container_name(job_id: &str) -> String {
    let safe: String = job_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{NAME_PREFIX}{safe}")
}

/// The engine argv (after the engine executable) that runs one job's container.
/// `extra` are mounts the core adds (a processor's artifacts directory).
pub fn run_args(spec: &ContainerSpec, job_id: &str, extra: &[spec::Mount]) -> Vec<OsString> {
    let mut a: Vec<String> = vec![
        "run".into(),
        "--rm".into(),
        "-i".into(),
        // A tiny init as PID 1 forwards the runner's SIGTERM to the program,
        // which as PID 1 itself would ignore it, so the grace works as for a
        // local plugin.
        "--init".into(),
        format!("--name={}", container_name(job_id)),
        format!("--network={}", spec.network.as_str()),
        "--read-only".into(),
        "--cap-drop=ALL".into(),
        "--security-opt=no-new-privileges".into(),
        format!("--memory={}", spec.memory),
        // Without this, swap would let a container use twice its memory limit.
        format!("--memory-swap={}", spec.memory),
        format!("--cpus={}", spec.cpus),
        format!("--pids-limit={}", spec.pids),
        "--pull=never".into(),
        "--log-driver=none".into(),
        "-e".into(),
        format!("{}={job_id}", spawn::JOB_ID_ENV),
    ];
    for (k, v) in &spec.env {
        a.push("-e".into());
        a.push(format!("{k}={v}"));
    }
    if let Some(u) = &spec.user {
        a.push(format!("--user={u}"));
    }
    if let Some(w) = &spec.workdir {
        a.push(format!("--workdir={w}"));
    }
    let mut out: Vec<OsString> = a.into_iter().map(OsString::from).collect();
    for m in spec.mounts.iter().chain(extra) {
        let mut v = OsString::from("--volume=");
        v.push(&m.source);
        v.push(format!(
            ":{}:{}",
            m.target,
            if m.read_only { "ro" } else { "rw" }
        ));
        out.push(v);
    }
    out.push(OsString::from(&spec.image));
    out.extend(spec.args.iter().map(OsString::from));
    out
}

/// What a container run needs from the daemon besides the invocation.
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    /// `service.container_engine`.
    pub engine: Option<&'a str>,
    /// The directory of the ledger: per-job artifacts go under `artifacts/`.
    pub state_dir: &'a Path,
    /// `service.name`: the default D6E workspace derives from it.
    pub instance: &'a str,
    /// The warm container registry, for a Stage7 instance with `keep_warm`
    /// run by the daemon; `None` runs every job in a container of its own.
    pub resident: Option<&'a stage7::warm::Resident<'a>>,
    /// The outputs of the steps before this job in its tree, step id →
    /// result (`store::context::step_outputs`), for `d6e-stf`'s `sources`.
    pub sources: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

/// A foreign envelope's translated request.
enum Foreign {
    None,
    Processor(processor::Prepared),
    D6e(d6e::Prepared),
}

impl Host<'_> {
    /// Where per-job artifacts directories are created.
    pub fn artifacts_root(&self) -> PathBuf {
        self.state_dir.join("artifacts")
    }
}

/// Runs one job of a container plugin: `inv` as for a local plugin, its
/// entrypoint replaced by the engine and, for a foreign envelope, its request
/// and response translated.
pub fn run(
    spec: &ContainerSpec,
    inv: &Invocation<'_>,
    host: &Host<'_>,
    cancel: &CancelToken,
) -> Outcome {
    let engine = match engine::resolve(spec.engine.as_deref(), host.engine) {
        Ok(e) => e,
        Err(msg) => return not_run(OutcomeKind::SpawnFailed(msg)),
    };
    if spec.envelope == Envelope::Stage7 {
        return match &spec.stage7 {
            Some(s7) => stage7::run(spec, s7, &engine, inv, cancel, host.resident),
            None => not_run(OutcomeKind::SpawnFailed(
                "a stage7 container block needs its plugin's manifest.json".to_string(),
            )),
        };
    }
    let foreign = match spec.envelope {
        Envelope::ProtocolV2 => Foreign::None,
        // Served above, by its own lifecycle.
        Envelope::Stage7 => Foreign::None,
        Envelope::ProcessorV1 => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            match processor::prepare(inv.request, inv.job_id, &host.artifacts_root(), ci) {
                Ok(p) => Foreign::Processor(p),
                // Refused before any container starts; retrying cannot help.
                Err(refused) => return not_run(OutcomeKind::Failed(refused.into_response())),
            }
        }
        Envelope::D6eStf => match d6e::prepare(inv.request, host.instance, host.sources) {
            Ok(p) => Foreign::D6e(p),
            Err(refused) => return not_run(OutcomeKind::Failed(refused.into_response())),
        },
    };
    let extra: Vec<spec::Mount> = match &foreign {
        Foreign::Processor(p) => vec![spec::Mount {
            source: p.artifacts.clone(),
            target: processor::MOUNT.to_string(),
            read_only: false,
        }],
        _ => Vec::new(),
    };
    let mut args = run_args(spec, inv.job_id, &extra);
    // Held until the container is gone: dropping it ends the callback.
    let mut callback = None;
    if let Foreign::D6e(p) = &foreign {
        if let Some(database) = &p.database {
            match d6e::serve_callback(&engine, spec, p, database) {
                Ok((session, cb, add_host)) => {
                    if let Some(flag) = add_host {
                        args.insert(1, OsString::from(flag));
                    }
                    callback = Some((session, p.with_callback(&cb)));
                }
                Err(refused) => return not_run(OutcomeKind::Failed(refused.into_response())),
            }
        }
    }
    let env = engine::passthrough(inv.env_passthrough);
    let request: &[u8] = match (&foreign, &callback) {
        (_, Some((_, with_callback))) => with_callback,
        (Foreign::None, _) => inv.request,
        (Foreign::Processor(p), _) => &p.request,
        (Foreign::D6e(p), _) => &p.request,
    };
    let inner = Invocation {
        entrypoint: &engine.path,
        args: &args,
        env_passthrough: &env,
        request,
        ..*inv
    };
    let mut outcome = spawn::run(&inner, cancel);
    let ended_by_itself = matches!(
        outcome.kind,
        OutcomeKind::Succeeded(_)
            | OutcomeKind::Failed(_)
            | OutcomeKind::ConfigError { .. }
            | OutcomeKind::ProtocolError(_)
    ) && outcome.signal.is_none();
    let engine_failed = outcome.stdout.is_empty()
        && outcome
            .exit_code
            .is_some_and(|c| ENGINE_FAILURES.contains(&c));
    // The foreign answer is not protocol v2: the runner called it a protocol
    // error (or, by coincidence, decoded it); read it as its own.
    let answered = matches!(
        outcome.kind,
        OutcomeKind::ProtocolError(_)
            | OutcomeKind::Succeeded(_)
            | OutcomeKind::Failed(_)
            | OutcomeKind::ConfigError { .. }
    );
    if engine_failed {
        let why = engine::last_line(&outcome.stderr).unwrap_or("no message");
        outcome.kind = OutcomeKind::SpawnFailed(format!(
            "{} could not run image {} (exit {}): {why}",
            engine.name,
            spec.image,
            outcome.exit_code.unwrap_or_default()
        ));
    } else if answered {
        match &foreign {
            Foreign::None => {}
            Foreign::Processor(p) => {
                // Exit 78 keeps its meaning whatever the envelope says.
                if !matches!(outcome.kind, OutcomeKind::ConfigError { .. }) {
                    outcome.kind = processor::translate(
                        &outcome.stdout,
                        p,
                        &spec.image,
                        outcome.duration.as_millis(),
                    );
                    if let Some(bytes) = v2::bytes(&outcome.kind) {
                        outcome.stdout = bytes;
                    }
                }
            }
            Foreign::D6e(p) => {
                outcome.kind = d6e::translate(&outcome.stdout, outcome.exit_code, p);
                if let Some(bytes) = v2::bytes(&outcome.kind) {
                    outcome.stdout = bytes;
                }
            }
        }
    }
    // The job has ended: its token dies with the listener.
    drop(callback);
    if !ended_by_itself || engine_failed {
        // The CLI process is gone, but the container it asked for may not be:
        // an engine keeps a container whose client was killed.
        if let Err(e) = engine::remove(&engine, &[container_name(inv.job_id)]) {
            outcome.warnings.push(e);
        }
    }
    outcome
}

/// Removes what is left of the containers of `job_ids` (a dead holder's jobs),
/// with every installed engine; returns the names asked for when an engine
/// was there to ask. Recovery calls this before requeueing the jobs.
pub fn remove_leftovers(job_ids: &[String]) -> Vec<String> {
    let names: Vec<String> = job_ids.iter().map(|id| container_name(id)).collect();
    let engines = engine::installed();
    for e in &engines {
        if let Err(msg) = engine::remove(e, &names) {
            log::warn!("cannot remove leftover containers of orphaned jobs: {msg}");
        }
    }
    if engines.is_empty() {
        Vec::new()
    } else {
        names
    }
}

/// What `config lock` records for a container plugin's code: `image:<ID>`,
/// the local image ID its reference resolves to now, or the reference and
/// why it does not resolve (which then differs from any sealed ID).
pub fn fingerprint(spec: &ContainerSpec, service_engine: Option<&str>) -> String {
    let resolved = engine::resolve(spec.engine.as_deref(), service_engine)
        .and_then(|e| engine::image_id(&e, &spec.image));
    match resolved {
        Ok(id) => format!("image:{id}"),
        Err(why) => format!("image:{} (unresolved: {why})", spec.image),
    }
}

/// Why a container plugin cannot run now, with the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    /// What is missing.
    pub problem: String,
    /// What the operator does about it.
    pub fix: String,
}

/// Whether `plugin`'s engine is installed and its image present locally;
/// returns the engine and the image ID when both are.
pub fn readiness(
    plugin: &str,
    spec: &ContainerSpec,
    service_engine: Option<&str>,
) -> Result<(Engine, String), NotReady> {
    let engine = engine::resolve(spec.engine.as_deref(), service_engine).map_err(|problem| {
        NotReady {
            problem,
            fix: "install podman (or docker) on this host, or set service.container_engine to one that is installed".into(),
        }
    })?;
    match engine::image_id(&engine, &spec.image) {
        Ok(id) => Ok((engine, id)),
        Err(why) => Err(NotReady {
            problem: format!(
                "image {} is not present in {} ({why})",
                spec.image, engine.name
            ),
            fix: format!(
                "run `ductile plugin build {plugin}` and pin the ID it prints as container.image, or load the image (`{} load -i FILE`); images are never pulled",
                engine.name
            ),
        }),
    }
}

fn not_run(kind: OutcomeKind) -> Outcome {
    let now = Utc::now();
    Outcome {
        kind,
        exit_code: None,
        signal: None,
        stdout: Vec::new(),
        stderr: String::new(),
        stderr_truncated: false,
        pid: None,
        started_at: now,
        finished_at: now,
        duration: std::time::Duration::ZERO,
        warnings: Vec::new(),
        request_unread: 0,
    }
}

/// A container plugin as `plugin list --json` and `GET /plugin/{name}` show
/// it: `resident` names its warm containers (null without `keep_warm`).
pub fn summary(
    spec: &ContainerSpec,
    keep_warm: Option<std::time::Duration>,
    resident: Option<Vec<String>>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("image".into(), spec.image.clone().into());
    m.insert("envelope".into(), spec.envelope.as_str().into());
    m.insert("network".into(), spec.network.as_str().into());
    m.insert("keep_warm".into(), keep_warm.map(|d| d.as_secs()).into());
    m.insert("resident".into(), resident.into());
    m
}

/// The argv as strings, after checking that it holds every one of `flags`
/// (the runners' argv tests).
#[cfg(test)]
pub(crate) fn assert_flags(argv: Vec<OsString>, flags: &[&str]) -> Vec<String> {
    let argv: Vec<String> = argv.into_iter().map(|a| a.into_string().unwrap()).collect();
    for flag in flags {
        assert!(
            argv.iter().any(|a| a == flag),
            "{flag} missing from {argv:?}"
        );
    }
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_for_engines() {
        assert_eq!(container_name("0193-ab_c.d"), "ductile-0193-ab_c.d");
        assert_eq!(container_name("a/b c"), "ductile-a_b_c");
    }

    #[test]
    fn the_argv_is_locked_down() {
        let spec = spec::parse(
            &serde_yaml::from_str(
                "image: 44f2d68caa6d4cf5dec2252ed756e44c9cd85b7bba90409096d63b5fb8b4e8b9\nenv: {A: b}\nmounts: ['/srv:/data']\nargs: [x]",
            )
            .unwrap(),
        )
        .unwrap();
        let argv = super::assert_flags(
            run_args(&spec, "j1", &[]),
            &[
                "--rm",
                "-i",
                "--name=ductile-j1",
                "--network=none",
                "--read-only",
                "--cap-drop=ALL",
                "--security-opt=no-new-privileges",
                "--memory=256m",
                "--pids-limit=128",
                "--pull=never",
                "DUCTILE_JOB_ID=j1",
                "A=b",
                "--volume=/srv:/data:ro",
            ],
        );
        let image_at = argv.iter().position(|a| a == &spec.image).unwrap();
        assert_eq!(argv[image_at + 1..], ["x".to_string()]);
    }
}
