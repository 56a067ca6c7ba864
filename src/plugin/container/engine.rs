//! The container engine: the docker-compatible CLI (`podman` or `docker`),
//! found on `PATH` and driven as a subprocess through the core's own runner.
//! ductile holds no engine API client and never touches an engine socket.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::plugin::protocol::ResponseLimits;
use crate::plugin::spawn::{self, CancelToken, Invocation, Limits, Outcome};

/// Engines in auto-detection order.
pub const ENGINES: [&str; 2] = ["podman", "docker"];

/// Variables the engine CLI itself may need to find its storage, socket or
/// config, passed to it (never into the container) when set.
pub const ENGINE_ENV: [&str; 6] = [
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "CONTAINER_HOST",
    "CONTAINERS_CONF",
    "DOCKER_HOST",
];

/// Budget of an engine housekeeping call (remove, inspect, build excluded).
const HOUSEKEEPING: Duration = Duration::from_secs(20);

/// A usable engine CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    /// `podman` or `docker`.
    pub name: &'static str,
    /// The executable found on `PATH`.
    pub path: PathBuf,
}

/// The engine to use: the manifest's choice, else `service.container_engine`,
/// else the first of [`ENGINES`] found on `PATH`.
pub fn resolve(manifest: Option<&str>, service: Option<&str>) -> Result<Engine, String> {
    if let Some(want) = manifest.or(service) {
        let name = ENGINES
            .iter()
            .copied()
            .find(|e| *e == want)
            .unwrap_or("podman");
        return find(name).ok_or_else(|| {
            format!(
                "container engine `{want}` is not installed (not found on PATH); install it, or choose another with service.container_engine"
            )
        });
    }
    ENGINES.iter().copied().find_map(find).ok_or_else(|| {
        "no container engine found on PATH; install podman or docker (or set service.container_engine)"
            .to_string()
    })
}

/// Every engine found on `PATH`.
pub fn installed() -> Vec<Engine> {
    ENGINES.iter().copied().filter_map(find).collect()
}

fn find(name: &'static str) -> Option<Engine> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
        .map(|path| Engine { name, path })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The environment names passed to the engine CLI: the service's passthrough
/// list plus [`ENGINE_ENV`].
pub fn passthrough(service: &[String]) -> Vec<String> {
    let mut out = service.to_vec();
    out.extend(ENGINE_ENV.iter().map(|s| s.to_string()));
    out
}

/// Runs `engine <args>` to completion with a bounded budget, through the same
/// runner as plugins (so it is contained and reaped like one); returns the
/// outcome, whose stdout holds what the engine printed.
pub fn call(engine: &Engine, args: &[&str], tag: &str) -> Outcome {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    let env = passthrough(&[]);
    let inv = Invocation {
        job_id: tag,
        entrypoint: &engine.path,
        args: &args,
        env_passthrough: &env,
        request: b"",
        limits: Limits {
            timeout: HOUSEKEEPING,
            grace: Duration::from_secs(2),
            ..Limits::default()
        },
        response: ResponseLimits::default(),
    };
    spawn::run(&inv, &CancelToken::new())
}

/// Force-removes the named containers; missing ones are not an error.
pub fn remove(engine: &Engine, names: &[String]) -> Result<(), String> {
    if names.is_empty() {
        return Ok(());
    }
    let mut args = vec!["rm", "-f"];
    if engine.name == "podman" {
        args.push("--ignore");
    }
    args.extend(names.iter().map(String::as_str));
    let o = call(engine, &args, "container-cleanup");
    match o.exit_code {
        Some(0) => Ok(()),
        // docker exits 1 for "No such container", which is what we wanted.
        Some(1) if engine.name == "docker" && o.stderr.contains("No such container") => Ok(()),
        _ => Err(format!(
            "`{} rm -f` failed: {}",
            engine.name,
            last_line(&o.stderr).unwrap_or("no output")
        )),
    }
}

/// The local image ID `image` resolves to, or why it does not.
pub fn image_id(engine: &Engine, image: &str) -> Result<String, String> {
    let o = call(
        engine,
        &["image", "inspect", "--format", "{{.Id}}", image],
        "container-inspect",
    );
    let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    match o.exit_code {
        Some(0) if !out.is_empty() => Ok(out
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("sha256:")
            .to_string()),
        _ => Err(last_line(&o.stderr)
            .unwrap_or("image not found")
            .to_string()),
    }
}

/// The last non-empty line of `text`.
pub fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|l| !l.is_empty())
}
