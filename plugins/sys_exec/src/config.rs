//! The instance config: what to run, where, for how long, and what its exit
//! codes mean.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

/// Default for `timeout_seconds`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for `max_output_bytes`: each of stdout and stderr.
pub const DEFAULT_MAX_OUTPUT: usize = 64 * 1024;

/// How the command is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// Run directly: argv[0] looked up on PATH.
    Argv(Vec<String>),
    /// `sh -c` with this script (only with `shell: true`).
    Shell(String),
}

/// The validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// What runs.
    pub program: Program,
    /// The child's working directory (the plugin's own when unset).
    pub working_dir: Option<PathBuf>,
    /// Extra environment, on top of the inherited one.
    pub env: BTreeMap<String, String>,
    /// Killed (with its process group) after this long.
    pub timeout: Duration,
    /// Kept per stream; the rest is read and dropped.
    pub max_output_bytes: usize,
    /// Exit codes that count as success.
    pub success_exit_codes: Vec<i32>,
    /// Failing exit codes worth a retry (any other failure is permanent).
    pub retryable_exit_codes: Vec<i32>,
    /// Whether `sys_exec.completed` carries stdout and stderr.
    pub include_output: bool,
}

impl Config {
    /// Validates `config`; the message names the key at fault.
    pub fn parse(config: &Value) -> Result<Config, String> {
        let empty = Map::new();
        let m = config.as_object().unwrap_or(&empty);
        let shell = match m.get("shell") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(format!("config.shell must be true or false, got {v}")),
        };
        let program = match m.get("command") {
            None | Some(Value::Null) => {
                return Err("config.command is required (an argv list, or a string)".into());
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                return Err("config.command is empty".into());
            }
            Some(Value::String(s)) if shell => Program::Shell(s.clone()),
            Some(Value::String(s)) => Program::Argv(split(s)?),
            Some(Value::Array(_)) if shell => {
                return Err("config.command must be a string when shell is true".into());
            }
            Some(Value::Array(items)) => {
                let argv = items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::String(s) => Ok(s.clone()),
                        Value::Number(n) => Ok(n.to_string()),
                        other => Err(format!("config.command[{i}] must be a string, got {other}")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if argv.first().is_none_or(|a| a.is_empty()) {
                    return Err("config.command needs a program as its first element".into());
                }
                Program::Argv(argv)
            }
            Some(v) => {
                return Err(format!(
                    "config.command must be a list or a string, got {v}"
                ));
            }
        };
        let working_dir = match m.get("working_dir") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(PathBuf::from(s)),
            Some(v) => return Err(format!("config.working_dir must be a path, got {v}")),
        };
        let env = match m.get("env") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(e)) => e
                .iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        other => {
                            return Err(format!("config.env.{k} must be a scalar, got {other}"));
                        }
                    };
                    if k.is_empty() || k.contains('=') || k.contains('\0') {
                        return Err(format!("config.env has an invalid variable name {k:?}"));
                    }
                    Ok((k.clone(), text))
                })
                .collect::<Result<_, _>>()?,
            Some(v) => return Err(format!("config.env must be a mapping, got {v}")),
        };
        let timeout = match m.get("timeout_seconds") {
            None | Some(Value::Null) => DEFAULT_TIMEOUT,
            Some(Value::Number(n)) => match n.as_f64() {
                Some(s) if s > 0.0 && s <= 86_400.0 => Duration::from_secs_f64(s),
                _ => {
                    return Err(format!(
                        "config.timeout_seconds must be in (0, 86400], got {n}"
                    ));
                }
            },
            Some(v) => return Err(format!("config.timeout_seconds must be a number, got {v}")),
        };
        let max_output_bytes = match m.get("max_output_bytes") {
            None | Some(Value::Null) => DEFAULT_MAX_OUTPUT,
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|b| usize::try_from(b).ok())
                .filter(|b| *b <= 16 * 1024 * 1024)
                .ok_or_else(|| {
                    format!("config.max_output_bytes must be an integer up to 16 MiB, got {n}")
                })?,
            Some(v) => {
                return Err(format!(
                    "config.max_output_bytes must be an integer, got {v}"
                ));
            }
        };
        let codes = |key: &str, default: Vec<i32>| -> Result<Vec<i32>, String> {
            match m.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| {
                        v.as_i64()
                            .and_then(|c| i32::try_from(c).ok())
                            .filter(|c| (0..=255).contains(c))
                            .ok_or_else(|| {
                                format!("config.{key} must hold exit codes 0-255, got {v}")
                            })
                    })
                    .collect(),
                Some(v) => Err(format!(
                    "config.{key} must be a list of exit codes, got {v}"
                )),
            }
        };
        let success_exit_codes = codes("success_exit_codes", vec![0])?;
        let retryable_exit_codes = codes("retryable_exit_codes", Vec::new())?;
        let include_output = match m.get("include_output") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                return Err(format!(
                    "config.include_output must be true or false, got {v}"
                ));
            }
        };
        Ok(Config {
            program,
            working_dir,
            env,
            timeout,
            max_output_bytes,
            success_exit_codes,
            retryable_exit_codes,
            include_output,
        })
    }

    /// The command as an operator would read it.
    pub fn display(&self) -> String {
        match &self.program {
            Program::Shell(s) => s.clone(),
            Program::Argv(argv) => argv.join(" "),
        }
    }
}

/// Splits a command string into argv the way a POSIX shell would for plain
/// words and quotes (no expansion, no operators): `'...'` literal, `"..."`
/// with `\"` and `\\`, a backslash outside quotes escaping the next character.
pub fn split(s: &str) -> Result<Vec<String>, String> {
    let mut argv = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    argv.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("config.command has an unclosed ' in {s:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => break,
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("config.command has an unclosed \" in {s:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        argv.push(word);
    }
    if argv.is_empty() {
        return Err("config.command is empty".into());
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_split_like_a_shell_would_for_words_and_quotes() {
        assert_eq!(split("a b  c").unwrap(), ["a", "b", "c"]);
        assert_eq!(
            split(r#"echo 'two words' "and \"more\"" x\ y"#).unwrap(),
            ["echo", "two words", "and \"more\"", "x y"]
        );
        assert_eq!(split("a '' b").unwrap(), ["a", "", "b"]);
        assert!(split("echo 'open").is_err());
        assert!(split("   ").is_err());
    }

    #[test]
    fn defaults_and_keys() {
        let c = Config::parse(&json!({"command": ["make", "-C", "site"]})).unwrap();
        assert_eq!(
            c.program,
            Program::Argv(vec!["make".into(), "-C".into(), "site".into()])
        );
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.success_exit_codes, [0]);
        assert!(c.retryable_exit_codes.is_empty() && !c.include_output);
        let c = Config::parse(&json!({
            "command": "docker compose up -d | tee log", "shell": true,
            "working_dir": "/srv", "env": {"A": 1, "B": "x"}, "timeout_seconds": 1.5,
            "max_output_bytes": 10, "success_exit_codes": [0, 3],
            "retryable_exit_codes": [75], "include_output": true
        }))
        .unwrap();
        assert_eq!(
            c.program,
            Program::Shell("docker compose up -d | tee log".into())
        );
        assert_eq!(c.env.get("A").map(String::as_str), Some("1"));
        assert_eq!(c.timeout, Duration::from_millis(1500));
        assert_eq!((c.max_output_bytes, c.include_output), (10, true));
        assert_eq!(c.success_exit_codes, [0, 3]);
        assert_eq!(c.retryable_exit_codes, [75]);
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = |v: Value| Config::parse(&v).unwrap_err();
        assert!(err(json!({})).contains("config.command is required"));
        assert!(err(json!({"command": ["a"], "shell": true})).contains("must be a string"));
        assert!(err(json!({"command": []})).contains("first element"));
        assert!(err(json!({"command": "a", "timeout_seconds": 0})).contains("timeout_seconds"));
        assert!(err(json!({"command": "a", "success_exit_codes": [256]})).contains("0-255"));
        assert!(err(json!({"command": "a", "env": {"A=B": "x"}})).contains("invalid variable"));
        assert!(err(json!({"command": "a", "env": {"A": [1]}})).contains("config.env.A"));
    }
}
