//! The command line: strict `ductile <noun> <verb>`, parsed with lexopt into a
//! verb from one table (which also drives help and suggestions), then dispatched
//! to one file per noun. Errors decide the exit code: 0 ok, 1 failure, 2 usage,
//! 78 configuration error.

pub mod api;
pub mod config;
pub mod explain;
pub mod job;
pub mod output;
pub mod pipeline;
pub mod plugin;
pub mod relay;
pub mod run;
pub mod schedule;
pub mod system;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use crate::config::ConfigError;
use crate::lock::LockError;
use crate::store::StoreError;

/// A failed command; its variant decides the exit code.
#[derive(Debug)]
pub enum CliError {
    /// The command line itself is wrong (exit 2).
    Usage(String),
    /// The configuration is wrong (exit 78).
    Config(String),
    /// The command ran and failed (exit 1).
    Failed(String),
    /// Exit with this code after the command printed its own result.
    Exit(i32),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Config(_) => 78,
            CliError::Failed(_) => 1,
            CliError::Exit(code) => *code,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Config(m) | CliError::Failed(m) => f.write_str(m),
            CliError::Exit(code) => write!(f, "exit {code}"),
        }
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> CliError {
        CliError::Config(e.to_string())
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> CliError {
        if e.is_config() {
            CliError::Config(e.to_string())
        } else {
            CliError::Failed(e.to_string())
        }
    }
}

impl From<LockError> for CliError {
    fn from(e: LockError) -> CliError {
        CliError::Failed(e.to_string())
    }
}

/// One verb of the command table.
#[derive(Debug)]
pub struct Verb {
    /// Words after `ductile`, e.g. `["plugin", "list"]`.
    pub path: &'static [&'static str],
    /// Positional arguments, for help (`<plugin> [command]`).
    pub args: &'static str,
    /// One-line description.
    pub about: &'static str,
    /// Verb-specific flags (global ones are always accepted).
    pub flags: &'static [&'static str],
    /// Minimum and maximum positional arguments.
    pub positionals: (usize, usize),
}

/// Every verb ductile knows.
pub const VERBS: &[Verb] = &[
    Verb {
        path: &["run"],
        args: "<plugin> [command]",
        about: "run one plugin command now, through the queue and the ledger",
        flags: &["payload", "payload-file"],
        positionals: (1, 2),
    },
    Verb {
        path: &["version"],
        args: "",
        about: "print the version",
        flags: &[],
        positionals: (0, 0),
    },
    Verb {
        path: &["plugin", "list"],
        args: "",
        about: "list discovered plugins and why any were skipped",
        flags: &[],
        positionals: (0, 0),
    },
    Verb {
        path: &["plugin", "run"],
        args: "<plugin> [command]",
        about: "same as `ductile run`",
        flags: &["payload", "payload-file"],
        positionals: (1, 2),
    },
    Verb {
        path: &["plugin", "new"],
        args: "<name>",
        about: "scaffold a plugin that passes `plugin check` (--lang python|sh|rust, default python; --dir D, default ./<name>)",
        flags: &["lang", "dir"],
        positionals: (1, 1),
    },
    Verb {
        path: &["plugin", "check"],
        args: "<dir>",
        about: "conformance check: manifest, files, and every command spawned with a generated request; rule id, severity, fix per finding (exit 1 on errors; --timeout per spawn, default each command's default timeout)",
        flags: &["timeout"],
        positionals: (1, 1),
    },
    Verb {
        path: &["config", "schema"],
        args: "",
        about: "print a JSON Schema (2020-12): --kind config (default), manifest, pipelines, request or response",
        flags: &["kind"],
        positionals: (0, 0),
    },
    Verb {
        path: &["plugin", "build"],
        args: "<plugin>",
        about: "build a container plugin's image from its Dockerfile and print the ID to pin",
        flags: &[],
        positionals: (1, 1),
    },
    Verb {
        path: &["pipeline", "list"],
        args: "",
        about: "every pipeline (trigger, source plugin, mode, timeout, depth cap, hops, file) and plain route",
        flags: &[],
        positionals: (0, 0),
    },
    Verb {
        path: &["pipeline", "show"],
        args: "<pipeline>",
        about: "one pipeline's compiled graph: hops, conditions, with/baggage, successors per outcome",
        flags: &[],
        positionals: (1, 1),
    },
    Verb {
        path: &["pipeline", "visualize"],
        args: "<pipeline>",
        about: "one pipeline's compiled graph as a Mermaid flowchart",
        flags: &[],
        positionals: (1, 1),
    },
    Verb {
        path: &["system", "start"],
        args: "",
        about: "run the daemon in the foreground (scheduler, workers; SIGHUP reloads, SIGTERM stops)",
        flags: &[],
        positionals: (0, 0),
    },
    Verb {
        path: &["system", "status"],
        args: "",
        about: "lock holder, queue depth, plugin health, breakers, schedules, last runs",
        flags: &[],
        positionals: (0, 0),
    },
    Verb {
        path: &["system", "reload"],
        args: "",
        about: "validate the config and tell the running daemon to reload it (SIGHUP)",
        flags: &[],
        positionals: (0, 0),
    },
    Verb {
        path: &["system", "migrate"],
        args: "",
        about: "upgrade an older ledger to this version's schema (backs the file up first)",
        flags: &[],
        positionals: (0, 0),
    },
    Verb {
        path: &["system", "backup"],
        args: "",
        about: "write a tar.gz of the ledger (VACUUM INTO, daemon may run) and, by --scope, config, plugins, env files",
        flags: &["to", "scope"],
        positionals: (0, 0),
    },
    Verb {
        path: &["system", "restore"],
        args: "",
        about: "verify an archive against its manifest, then restore it (old files kept as .pre-restore)",
        flags: &["from", "to"],
        positionals: (0, 0),
    },
    Verb {
        path: &["config", "backup"],
        args: "",
        about: "`system backup --scope config`: the ledger snapshot and the config directory",
        flags: &["to"],
        positionals: (0, 0),
    },
    Verb {
        path: &["config", "restore"],
        args: "",
        about: "verify an archive, then restore only its config directory",
        flags: &["from", "to"],
        positionals: (0, 0),
    },
    Verb {
        path: &["system", "reset"],
        args: "<plugin>",
        about: "close a plugin's circuit breaker",
        flags: &["command"],
        positionals: (1, 1),
    },
    Verb {
        path: &["system", "breaker"],
        args: "<plugin>",
        about: "show a plugin's circuit breaker state and transition history",
        flags: &[],
        positionals: (1, 1),
    },
    Verb {
        path: &["api"],
        args: "<path>",
        about: "call the running daemon's HTTP API (-X METHOD, -f key=value, -b BODY|-b -, -H 'Name: value'; exit 0 on 2xx, 4 on 4xx, 5 on 5xx)",
        flags: &["method", "field", "body", "header", "api-url", "api-key"],
        positionals: (1, 1),
    },
    Verb {
        path: &["job", "show"],
        args: "<job-id>",
        about: "one job: status, attempts, result (read from the ledger; no daemon needed)",
        flags: &[],
        positionals: (1, 1),
    },
    Verb {
        path: &["job", "list"],
        args: "",
        about: "recent jobs, newest first (--plugin, --command, --status, --limit)",
        flags: &["plugin", "command", "status", "limit"],
        positionals: (0, 0),
    },
    Verb {
        path: &["job", "tree"],
        args: "<job-id>",
        about: "a job and every job it caused",
        flags: &[],
        positionals: (1, 1),
    },
    Verb {
        path: &["job", "inspect"],
        args: "<job-id>",
        about: "a job's lineage up to its root and down to every job it caused: each hop's pipeline step, baggage, decision and timing",
        flags: &[],
        positionals: (1, 1),
    },
    Verb {
        path: &["pipeline", "run"],
        args: "<name>",
        about: "start a pipeline now (--payload JSON); --wait waits for its whole tree and reports the terminal step's result",
        flags: &["payload", "payload-file", "wait"],
        positionals: (1, 1),
    },
    Verb {
        path: &["job", "retry"],
        args: "<job-id>",
        about: "resume from a failed step: run a failed or dead job again with the event and context it first saw; its tree goes on from there",
        flags: &[],
        positionals: (1, 1),
    },
    Verb {
        path: &["job", "logs"],
        args: "",
        about: "job log records, most recent first (--job, --plugin, --command, --status, --submitted-by, --from, --to, --query, --limit, --include-result)",
        flags: &[
            "job",
            "plugin",
            "command",
            "status",
            "submitted-by",
            "from",
            "to",
            "query",
            "limit",
            "include-result",
        ],
        positionals: (0, 0),
    },
    Verb {
        path: &["system", "selfcheck"],
        args: "",
        about: "read-only invariants: config, lock, ledger integrity and schema, queue freshness (ledger checks skipped while a daemon runs)",
        flags: &[],
        positionals: (0, 0),
    },
    Verb {
        path: &["relay", "send"],
        args: "<instance>",
        about: "put an event in the outbox for a relay instance; delivered now, or by the daemon when one runs",
        flags: &[
            "event",
            "payload",
            "payload-file",
            "dedupe-key",
            "origin-plugin",
            "origin-job-id",
            "origin-event-id",
            "baggage",
        ],
        positionals: (1, 1),
    },
    Verb {
        path: &["relay", "status"],
        args: "",
        about: "outbound relay instances: outbox depth, delivered and failed events, last success, last error, breaker",
        flags: &[],
        positionals: (0, 0),
    },
    Verb {
        path: &["relay", "peers"],
        args: "",
        about: "trusted inbound relay peers: key ids, accepted types, last accepted event, refusals",
        flags: &[],
        positionals: (0, 0),
    },
    Verb {
        path: &["schedule", "list"],
        args: "",
        about: "every schedule: trigger, zone, window, status (paused?), next run, last fired and last success",
        flags: &[],
        positionals: (0, 0),
    },
    Verb {
        path: &["system", "doctor"],
        args: "",
        about: "runtime health: plugin health commands, breakers, free disk, stuck jobs, invalid schedules, WAL size, relay outboxes and peer clocks (--probe: reach each relay receiver); each failure with its fix",
        flags: &["probe"],
        positionals: (0, 0),
    },
    Verb {
        path: &["system", "skills"],
        args: "",
        about: "the Markdown capability manifest for LLM operators, from the live config",
        flags: &[],
        positionals: (0, 0),
    },
    Verb {
        path: &["skills"],
        args: "",
        about: "same as `ductile system skills`",
        flags: &[],
        positionals: (0, 0),
    },
    Verb {
        path: &["schedule", "preview"],
        args: "<plugin>[:<id>]",
        about: "the next firings in the schedule's zone (--next N, --from T), marking DST shifts and only_between/not_on exclusions",
        flags: &["next", "from"],
        positionals: (1, 1),
    },
    Verb {
        path: &["schedule", "pause"],
        args: "<plugin>[:<id>]",
        about: "pause a schedule (paused_manual) in the ledger; a running daemon honours it at once",
        flags: &[],
        positionals: (1, 1),
    },
    Verb {
        path: &["schedule", "resume"],
        args: "<plugin>[:<id>]",
        about: "resume a paused schedule from its next occurrence (missed ones are not made up)",
        flags: &[],
        positionals: (1, 1),
    },
    Verb {
        path: &["explain"],
        args: "<plugin>[:<schedule>] | job <job-id>",
        about: "why didn't it run? every skip, hold, exclusion, pause, duplicate and refusal, in sentences (--since T)",
        flags: &["since"],
        positionals: (1, 2),
    },
    Verb {
        path: &["config", "check"],
        args: "",
        about: "validate syntax, schema, cross-references, plugins and the seal; every finding with file, key and hint (--strict: warnings fail too)",
        flags: &["strict"],
        positionals: (0, 0),
    },
    Verb {
        path: &["system", "watch"],
        args: "",
        about: "live view of a running daemon over its API and event stream (--plain: one line per event; --once: the picture and exit)",
        flags: &["api-url", "api-key", "plain", "once"],
        positionals: (0, 0),
    },
    Verb {
        path: &["config", "lock"],
        args: "",
        about: "authorise the config as it is now: write .checksums (file hashes, plugin fingerprints)",
        flags: &[],
        positionals: (0, 0),
    },
    Verb {
        path: &["config", "show"],
        args: "[entity]",
        about: "the merged config, or one entity (plugin:NAME, pipeline:NAME, plugin:*); --effective: with every default; secrets redacted",
        flags: &["effective"],
        positionals: (0, 1),
    },
    Verb {
        path: &["config", "get"],
        args: "<path>",
        about: "one value by key path (plugins.echo.enabled, plugin:echo.config.message), secrets redacted",
        flags: &[],
        positionals: (1, 1),
    },
    Verb {
        path: &["config", "set"],
        args: "<path>=<value>",
        about: "change one value in the file that holds it, comments kept; previews unless --apply; revalidated, re-sealed",
        flags: &["apply"],
        positionals: (1, 1),
    },
    Verb {
        path: &["config", "init"],
        args: "",
        about: "write a commented, sealed starter config (with an admin token shown once) to --config DIR",
        flags: &["force"],
        positionals: (0, 0),
    },
    Verb {
        path: &["config", "token", "create"],
        args: "",
        about: "generate an API token: tokens.yaml entry, pinned scope file, key in the env file; prints the key once",
        flags: &["name", "scopes"],
        positionals: (0, 0),
    },
    Verb {
        path: &["config", "token", "list"],
        args: "",
        about: "API tokens: name, scopes, files (never the key)",
        flags: &[],
        positionals: (0, 0),
    },
    Verb {
        path: &["config", "token", "revoke"],
        args: "<name>",
        about: "remove a token, its scope file and its key",
        flags: &[],
        positionals: (1, 1),
    },
    Verb {
        path: &["config", "scope", "list"],
        args: "",
        about: "every token's scopes",
        flags: &[],
        positionals: (0, 0),
    },
    Verb {
        path: &["config", "scope", "set"],
        args: "<token>",
        about: "replace a token's scopes (--scopes a,b): its scope file and pin",
        flags: &["scopes"],
        positionals: (1, 1),
    },
    Verb {
        path: &["config", "plugin", "list"],
        args: "",
        about: "configured plugin instances and the file of each",
        flags: &[],
        positionals: (0, 0),
    },
    Verb {
        path: &["config", "plugin", "add"],
        args: "<name>",
        about: "configure a plugin instance (--uses BASE, --set key=value...)",
        flags: &["uses", "set"],
        positionals: (1, 1),
    },
    Verb {
        path: &["config", "plugin", "remove"],
        args: "<name>",
        about: "remove a plugin instance (refused while anything refers to it)",
        flags: &[],
        positionals: (1, 1),
    },
    Verb {
        path: &["config", "route", "list"],
        args: "",
        about: "plain routes: from, event type, to, file",
        flags: &[],
        positionals: (0, 0),
    },
    Verb {
        path: &["config", "route", "add"],
        args: "",
        about: "add a route (--from A --event-type E --to B)",
        flags: &["from", "event-type", "to"],
        positionals: (0, 0),
    },
    Verb {
        path: &["config", "route", "remove"],
        args: "",
        about: "remove the route --from A --event-type E --to B",
        flags: &["from", "event-type", "to"],
        positionals: (0, 0),
    },
    Verb {
        path: &["config", "webhook", "list"],
        args: "",
        about: "webhook endpoints: name, path, plugin, command, secret_ref, file",
        flags: &[],
        positionals: (0, 0),
    },
    Verb {
        path: &["config", "webhook", "add"],
        args: "",
        about: "add a webhook endpoint (--path P --plugin X --secret-ref TOKEN [--name N] [--command C])",
        flags: &["path", "plugin", "secret-ref", "name", "command"],
        positionals: (0, 0),
    },
    Verb {
        path: &["config", "webhook", "remove"],
        args: "<name>",
        about: "remove a webhook endpoint",
        flags: &[],
        positionals: (1, 1),
    },
];

/// Flags every verb accepts.
const GLOBAL_FLAGS: &[&str] = &["config", "config-dir", "json", "verbose", "dry-run", "help"];
/// Flags that take a value.
const VALUE_FLAGS: &[&str] = &[
    "config",
    "event",
    "dedupe-key",
    "origin-plugin",
    "origin-job-id",
    "origin-event-id",
    "baggage",
    "payload",
    "payload-file",
    "command",
    "method",
    "body",
    "api-url",
    "api-key",
    "plugin",
    "status",
    "limit",
    "job",
    "submitted-by",
    "from",
    "to",
    "query",
    "scope",
    "since",
    "next",
    "name",
    "scopes",
    "uses",
    "event-type",
    "path",
    "secret-ref",
    "lang",
    "dir",
    "kind",
    "timeout",
];
/// Flags that take a value and may be repeated.
const MULTI_FLAGS: &[&str] = &["field", "header", "set"];
/// Verb flags without a value.
const BOOL_FLAGS: &[&str] = &[
    "include-result",
    "wait",
    "strict",
    "apply",
    "effective",
    "force",
    "plain",
    "once",
    "probe",
];

/// A parsed command line.
#[derive(Debug, Default)]
pub struct Args {
    /// `--config PATH`.
    pub config: Option<PathBuf>,
    /// `--json`.
    pub json: bool,
    /// `-v` / `--verbose`.
    pub verbose: bool,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `-h` / `--help`.
    pub help: bool,
    /// Words that are not flags.
    pub words: Vec<String>,
    /// Verb-specific flags and their values.
    pub flags: BTreeMap<String, String>,
    /// Repeatable flags and their values, in order.
    pub multi: BTreeMap<String, Vec<String>>,
}

impl Args {
    /// The value of a verb flag.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags.get(name).map(String::as_str)
    }

    /// Every value of a repeatable flag.
    pub fn values(&self, name: &str) -> &[String] {
        self.multi.get(name).map_or(&[], Vec::as_slice)
    }
}

/// Runs the command line and returns the process exit code.
pub fn run(mut argv: Vec<OsString>) -> i32 {
    let json_requested = argv.iter().any(|a| a == "--json");
    // `ductile --version` and `-V`, as the spec and every CLI spell it, are the
    // `version` verb.
    if let Some(first) = argv.get_mut(1) {
        if first == "--version" || first == "-V" {
            *first = OsString::from("version");
        }
    }
    let result = parse(argv).and_then(|args| {
        // The daemon logs to stdout for journald; verbs keep stdout for results.
        let daemon = args.words.len() >= 2 && args.words[0] == "system" && args.words[1] == "start";
        // The daemon's level follows `service.log_level` once its config is loaded.
        let (target, level) = if daemon {
            (crate::log::Target::Stdout, log::LevelFilter::Info)
        } else {
            (crate::log::Target::Stderr, log::LevelFilter::Warn)
        };
        crate::log::init(target, args.verbose, level);
        dispatch(args)
    });
    match result {
        Ok(()) => 0,
        Err(CliError::Exit(code)) => code,
        Err(e) => {
            output::error(&e.to_string(), e.exit_code(), json_requested);
            e.exit_code()
        }
    }
}

/// Parses argv (without the program name handling: the first element is skipped).
pub fn parse(argv: Vec<OsString>) -> Result<Args, CliError> {
    use lexopt::Arg::{Long, Short, Value};
    let mut parser = lexopt::Parser::from_iter(argv);
    let mut args = Args::default();
    let usage = |e: lexopt::Error| CliError::Usage(e.to_string());
    while let Some(arg) = parser.next().map_err(usage)? {
        // The short spellings `ductile api` takes, like curl's.
        let arg = match arg {
            Short('X') => Long("method"),
            Short('b') => Long("body"),
            Short('f') => Long("field"),
            Short('H') => Long("header"),
            other => other,
        };
        match arg {
            Short('h') | Long("help") => args.help = true,
            Short('v') | Long("verbose") => args.verbose = true,
            Long("json") => args.json = true,
            Long("dry-run") => args.dry_run = true,
            // `--config-dir` is how the spec spells it.
            Long("config" | "config-dir") => {
                if args.config.is_some() {
                    return Err(CliError::Usage(
                        "`--config` given more than once; give it once".into(),
                    ));
                }
                args.config = Some(PathBuf::from(parser.value().map_err(usage)?));
            }
            Long(name) if MULTI_FLAGS.contains(&name) => {
                let name = name.to_string();
                let value = flag_value(&mut parser)?;
                args.multi.entry(name).or_default().push(value);
            }
            Long(name) if BOOL_FLAGS.contains(&name) => {
                args.flags.insert(name.to_string(), "true".to_string());
            }
            Long(name) if VALUE_FLAGS.contains(&name) => {
                let name = name.to_string();
                let value = flag_value(&mut parser)?;
                if args.flags.insert(name.clone(), value).is_some() {
                    return Err(CliError::Usage(format!(
                        "`--{name}` given more than once; give it once"
                    )));
                }
            }
            Long(name) => {
                let all: Vec<&str> = VERBS
                    .iter()
                    .flat_map(|v| v.flags.iter().copied())
                    .chain(GLOBAL_FLAGS.iter().copied())
                    .collect();
                return Err(CliError::Usage(with_hint(
                    format!("unknown flag `--{name}`"),
                    crate::suggest::closest(name, &all).map(|c| format!("--{c}")),
                )));
            }
            Short(c) => {
                return Err(CliError::Usage(format!(
                    "unknown flag `-{c}` (see `ductile help`)"
                )));
            }
            Value(v) => args.words.push(v.to_string_lossy().into_owned()),
        }
    }
    Ok(args)
}

/// The value of the flag just read, as text.
fn flag_value(parser: &mut lexopt::Parser) -> Result<String, CliError> {
    Ok(parser
        .value()
        .map_err(|e| CliError::Usage(e.to_string()))?
        .to_string_lossy()
        .into_owned())
}

/// Resolves the verb and runs it.
fn dispatch(mut args: Args) -> Result<(), CliError> {
    if args.words.first().map(String::as_str) == Some("help") {
        args.words.remove(0);
        args.help = true;
    }
    if args.words.is_empty() {
        output::text(&help(&[]));
        return if args.help {
            Ok(())
        } else {
            Err(CliError::Exit(2))
        };
    }
    if args.help && args.words.len() == 1 && noun_list().contains(&args.words[0].as_str()) {
        output::text(&help(&[args.words[0].as_str()]));
        return Ok(());
    }
    // `ductile config plugin -h`: the verbs of a group.
    if args.help
        && args.words.len() == 2
        && VERBS
            .iter()
            .any(|v| v.path.len() == 3 && v.path[..2] == args.words[..])
    {
        output::text(&help(&[args.words[0].as_str(), args.words[1].as_str()]));
        return Ok(());
    }
    let verb = find_verb(&args.words)?;
    if args.help {
        output::text(&help(verb.path));
        return Ok(());
    }
    let positionals: Vec<String> = args.words[verb.path.len()..].to_vec();
    let (min, max) = verb.positionals;
    let usage_line = format!("usage: ductile {} {}", verb.path.join(" "), verb.args)
        .trim_end()
        .to_string();
    if positionals.len() < min {
        return Err(CliError::Usage(format!(
            "`ductile {}` needs {}; {usage_line}",
            verb.path.join(" "),
            verb.args
        )));
    }
    if positionals.len() > max {
        return Err(CliError::Usage(format!(
            "unexpected argument `{}`; {usage_line}",
            positionals[max]
        )));
    }
    for name in args.flags.keys().chain(args.multi.keys()) {
        if !verb.flags.contains(&name.as_str()) {
            return Err(CliError::Usage(with_hint(
                format!(
                    "`--{name}` is not a flag of `ductile {}`",
                    verb.path.join(" ")
                ),
                crate::suggest::closest(name, verb.flags).map(|c| format!("--{c}")),
            )));
        }
    }
    match verb.path {
        ["run"] | ["plugin", "run"] => run::run(&args, &positionals),
        ["version"] => version(&args),
        ["plugin", "list"] => plugin::list(&args),
        ["plugin", "new"] => plugin::new::new(&args, &positionals[0]),
        ["plugin", "check"] => plugin::check::check(&args, &positionals[0]),
        ["config", "schema"] => config::schema::schema(&args),
        ["plugin", "build"] => plugin::build(&args, &positionals[0]),
        ["pipeline", "list"] => pipeline::list(&args),
        ["pipeline", "show"] => pipeline::show(&args, &positionals[0]),
        ["pipeline", "visualize"] => pipeline::visualize(&args, &positionals[0]),
        ["config", "check"] => config::check(&args),
        ["config", "lock"] => config::lock(&args),
        ["config", "show"] => config::show(&args, positionals.first().map(String::as_str)),
        ["config", "get"] => config::get(&args, &positionals[0]),
        ["config", "set"] => config::set(&args, &positionals[0]),
        ["config", "init"] => config::init(&args),
        ["config", "token", "create"] => config::token_create(&args),
        ["config", "token", "list"] => config::token_list(&args),
        ["config", "token", "revoke"] => config::token_revoke(&args, &positionals[0]),
        ["config", "scope", "list"] => config::scope_list(&args),
        ["config", "scope", "set"] => config::scope_set(&args, &positionals[0]),
        ["config", "plugin", "list"] => config::plugin_list(&args),
        ["config", "plugin", "add"] => config::plugin_add(&args, &positionals[0]),
        ["config", "plugin", "remove"] => config::plugin_remove(&args, &positionals[0]),
        ["config", "route", "list"] => config::route_list(&args),
        ["config", "route", "add"] => config::route_add(&args),
        ["config", "route", "remove"] => config::route_remove(&args),
        ["config", "webhook", "list"] => config::webhook_list(&args),
        ["config", "webhook", "add"] => config::webhook_add(&args),
        ["config", "webhook", "remove"] => config::webhook_remove(&args, &positionals[0]),
        ["api"] => api::call(&args, &positionals[0]),
        ["job", "show"] => job::show(&args, &positionals[0]),
        ["job", "list"] => job::list(&args),
        ["job", "tree"] => job::tree(&args, &positionals[0]),
        ["job", "inspect"] => job::inspect(&args, &positionals[0]),
        ["job", "logs"] => job::logs(&args),
        ["job", "retry"] => job::retry(&args, &positionals[0]),
        ["pipeline", "run"] => pipeline::run(&args, &positionals[0]),
        ["system", "start"] => system::start(&args),
        ["system", "status"] => system::status(&args),
        ["system", "reload"] => system::reload(&args),
        ["system", "migrate"] => system::migrate(&args),
        ["system", "backup"] => system::backup(&args),
        ["system", "restore"] => system::restore(&args),
        ["config", "backup"] => config::archive(&args),
        ["config", "restore"] => config::restore(&args),
        ["system", "reset"] => system::reset(&args, &positionals[0]),
        ["system", "breaker"] => system::breaker(&args, &positionals[0]),
        ["system", "selfcheck"] => system::doctor::selfcheck(&args),
        ["system", "doctor"] => system::doctor::doctor(&args),
        ["system", "skills"] | ["skills"] => system::doctor::skills(&args),
        ["system", "watch"] => system::watch::watch(&args),
        ["relay", "send"] => relay::send(&args, &positionals),
        ["relay", "status"] => relay::status(&args),
        ["relay", "peers"] => relay::peers(&args),
        ["schedule", "list"] => schedule::list(&args),
        ["schedule", "preview"] => schedule::preview(&args, &positionals[0]),
        ["schedule", "pause"] => schedule::pause(&args, &positionals[0]),
        ["schedule", "resume"] => schedule::resume(&args, &positionals[0]),
        ["explain"] => explain::explain(&args, &positionals),
        _ => Err(CliError::Failed(format!(
            "verb `{}` has no handler",
            verb.path.join(" ")
        ))),
    }
}

/// Finds the verb named by the leading words, or explains what is wrong.
fn find_verb(words: &[String]) -> Result<&'static Verb, CliError> {
    let first = words[0].as_str();
    if let Some(v) = VERBS
        .iter()
        .find(|v| v.path.len() == 1 && v.path[0] == first)
    {
        return Ok(v);
    }
    let nouns: Vec<&str> = noun_list();
    if !nouns.contains(&first) {
        return Err(CliError::Usage(with_hint(
            format!("unknown command `{first}`"),
            crate::suggest::closest(first, &nouns).map(str::to_string),
        )));
    }
    // Three-word verbs (`config plugin add`): a group word, then the verb.
    if let Some(v) = VERBS
        .iter()
        .find(|v| v.path.len() == 3 && words.len() >= 3 && v.path == &words[..3])
    {
        return Ok(v);
    }
    if let Some(second) = words.get(1) {
        let group: Vec<&str> = VERBS
            .iter()
            .filter(|v| v.path.len() == 3 && v.path[0] == first && v.path[1] == second)
            .map(|v| v.path[2])
            .collect();
        if !group.is_empty() {
            return Err(CliError::Usage(match words.get(2) {
                None => format!(
                    "`ductile {first} {second}` needs a verb: {}",
                    group.join(", ")
                ),
                Some(third) => with_hint(
                    format!("unknown verb `{third}` for `ductile {first} {second}`"),
                    crate::suggest::closest(third, &group).map(|c| format!("{first} {second} {c}")),
                ),
            }));
        }
    }
    let mut verbs: Vec<&str> = VERBS
        .iter()
        .filter(|v| v.path.len() >= 2 && v.path[0] == first)
        .map(|v| v.path[1])
        .collect();
    verbs.dedup();
    let Some(second) = words.get(1) else {
        return Err(CliError::Usage(format!(
            "`ductile {first}` needs a verb: {}",
            verbs.join(", ")
        )));
    };
    VERBS
        .iter()
        .find(|v| v.path.len() == 2 && v.path[0] == first && v.path[1] == second)
        .ok_or_else(|| {
            CliError::Usage(with_hint(
                format!("unknown verb `{second}` for `ductile {first}`"),
                crate::suggest::closest(second, &verbs).map(|c| format!("{first} {c}")),
            ))
        })
}

fn noun_list() -> Vec<&'static str> {
    let mut nouns: Vec<&str> = VERBS.iter().map(|v| v.path[0]).collect();
    nouns.dedup();
    nouns
}

fn with_hint(message: String, hint: Option<String>) -> String {
    match hint {
        Some(h) => format!("{message}; did you mean `{h}`?"),
        None => format!("{message} (see `ductile help`)"),
    }
}

/// Help text for a prefix of the command table (`[]` = everything).
pub fn help(prefix: &[&str]) -> String {
    let mut out = String::new();
    if prefix.is_empty() {
        out.push_str("ductile: a self-hosted automation runtime\n\nusage: ductile <noun> <verb> [args] [flags]\n\ncommands:\n");
    }
    let mut shown: Vec<&Verb> = VERBS
        .iter()
        .filter(|v| v.path.starts_with(prefix) || prefix.starts_with(v.path))
        .collect();
    // Grouped by noun, nouns in the order the table first names them, so the
    // table can keep each verb beside the ones it was written with.
    let noun_rank = |v: &Verb| VERBS.iter().position(|w| w.path[0] == v.path[0]);
    shown.sort_by_key(|v| noun_rank(v));
    for v in shown {
        let name = format!("{} {}", v.path.join(" "), v.args);
        let name = name.trim_end();
        if name.len() > 34 {
            // A long synopsis gets its own line rather than a ragged column.
            out.push_str(&format!("  ductile {name}\n  {:<42} {}\n", "", v.about));
        } else {
            out.push_str(&format!("  ductile {name:<34} {}\n", v.about));
        }
        if !prefix.is_empty() && !v.flags.is_empty() {
            for f in v.flags {
                let value = if VALUE_FLAGS.contains(f) || MULTI_FLAGS.contains(f) {
                    " <value>"
                } else {
                    ""
                };
                out.push_str(&format!("      --{f}{value}\n"));
            }
        }
    }
    out.push_str(
        "\nglobal flags:\n  --config <path>   config file or directory, also --config-dir (default: $DUCTILE_CONFIG_DIR, ~/.config/ductile, /etc/ductile)\n  --json            machine-readable output\n  -v, --verbose     debug logging on stderr\n  --dry-run         show what a mutation would do, change nothing\n  -h, --help        this help\n\nexit codes: 0 ok, 1 failure, 2 usage error, 78 configuration error\n",
    );
    out
}

fn version(args: &Args) -> Result<(), CliError> {
    let v = env!("CARGO_PKG_VERSION");
    // Stamped by build.rs: the commit (or "unknown" outside git), the build
    // date (SOURCE_DATE_EPOCH when set) and the target triple.
    let (commit, built, target) = (
        env!("DUCTILE_COMMIT"),
        env!("DUCTILE_BUILD_DATE"),
        env!("DUCTILE_TARGET"),
    );
    if args.json {
        output::json(&serde_json::json!({
            "name": "ductile",
            "version": v,
            "commit": commit,
            "build_date": built,
            "target": target,
            "protocol": crate::plugin::protocol::PROTOCOL_VERSION,
        }));
    } else {
        output::text(&format!(
            "ductile {v} (commit {commit}, built {built}, {target}, plugin protocol {})",
            crate::plugin::protocol::PROTOCOL_VERSION
        ));
    }
    Ok(())
}

/// Resolves the root config file from `--config` or the discovery order.
pub fn config_root(args: &Args) -> Result<PathBuf, CliError> {
    Ok(crate::config::resolve_root(args.config.as_deref())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<OsString> {
        std::iter::once("ductile")
            .chain(s.split_whitespace())
            .map(OsString::from)
            .collect()
    }

    fn usage_error(s: &str) -> String {
        let args = parse(argv(s));
        match args.and_then(|a| {
            let v = find_verb(&a.words)?;
            let _ = v;
            dispatch_check(a)
        }) {
            Err(CliError::Usage(m)) => m,
            other => panic!("expected a usage error for `{s}`, got {other:?}"),
        }
    }

    /// dispatch() minus the handlers: only the checks.
    fn dispatch_check(args: Args) -> Result<(), CliError> {
        let verb = find_verb(&args.words)?;
        for name in args.flags.keys() {
            if !verb.flags.contains(&name.as_str()) {
                return Err(CliError::Usage(with_hint(
                    format!(
                        "`--{name}` is not a flag of `ductile {}`",
                        verb.path.join(" ")
                    ),
                    crate::suggest::closest(name, verb.flags).map(|c| format!("--{c}")),
                )));
            }
        }
        Ok(())
    }

    #[test]
    fn globals_parse_anywhere() {
        let a = parse(argv("run --json echo poll --config /x -v --payload {}")).unwrap();
        assert!(a.json && a.verbose);
        assert_eq!(a.config, Some(PathBuf::from("/x")));
        assert_eq!(a.words, vec!["run", "echo", "poll"]);
        assert_eq!(a.flag("payload"), Some("{}"));
    }

    #[test]
    fn a_repeated_value_flag_is_refused() {
        let err = parse(argv("run echo --payload {} --payload {}")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`--payload` given more than once; give it once"
        );
        let err = parse(argv("run echo --config a --config-dir b")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`--config` given more than once; give it once"
        );
    }

    #[test]
    fn config_dir_is_an_alias_of_config() {
        let a = parse(argv("config check --config-dir /etc/d")).unwrap();
        assert_eq!(a.config, Some(PathBuf::from("/etc/d")));
        assert_eq!(a.words, vec!["config", "check"]);
        let a = parse(argv("--config-dir=/x run echo")).unwrap();
        assert_eq!(a.config, Some(PathBuf::from("/x")));
        assert!(a.flags.is_empty());
    }

    #[test]
    fn typos_get_the_closest_verb() {
        assert_eq!(
            usage_error("plugn list"),
            "unknown command `plugn`; did you mean `plugin`?"
        );
        assert_eq!(
            usage_error("plugin lst"),
            "unknown verb `lst` for `ductile plugin`; did you mean `plugin list`?"
        );
        assert_eq!(
            usage_error("run echo --paylod x"),
            "unknown flag `--paylod`; did you mean `--payload`?"
        );
        assert_eq!(
            usage_error("plugin list --payload x"),
            "`--payload` is not a flag of `ductile plugin list` (see `ductile help`)"
        );
        assert_eq!(
            usage_error("zzzzzz"),
            "unknown command `zzzzzz` (see `ductile help`)"
        );
    }

    #[test]
    fn help_lists_every_verb() {
        let h = help(&[]);
        for v in VERBS {
            assert!(
                h.contains(&format!("ductile {}", v.path.join(" "))),
                "{}",
                v.path.join(" ")
            );
        }
        assert!(help(&["plugin"]).contains("plugin list"));
        assert!(!help(&["plugin"]).contains("config check"));
    }
}
