//! Behaviour of [`ConfigError`] and [`Finding`] (declared in the parent module so
//! callers name them `config::ConfigError`): constructors, accessors, the one-line
//! rendering every config message shares, and the exit code.
//!
//! Owns: how a config problem is located and worded on one line.
//! Must not: decide what is an error (load and validate do), or print anything.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{ConfigError, ErrorDetails, ErrorKind, Finding};

/// Exit code for configuration errors (`EX_CONFIG` from sysexits.h).
const EX_CONFIG: i32 = 78;

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.path,
                self.message
            )
        }
    }
}

/// The message for a key the schema does not know, with a suggestion when one
/// known key is a small edit away.
pub(super) fn unknown_key(key: &str, known: &[&str]) -> String {
    match crate::suggest::closest(key, known) {
        Some(near) => format!("unknown key `{key}`; did you mean `{near}`?"),
        None => format!("unknown key `{key}`"),
    }
}

impl ConfigError {
    /// An error not tied to any file (nothing found to load).
    pub(crate) fn general(kind: ErrorKind) -> ConfigError {
        ConfigError(Box::new(ErrorDetails {
            file: None,
            line: None,
            column: None,
            path: None,
            kind,
        }))
    }

    /// An error about `file` as a whole.
    pub(crate) fn in_file(file: PathBuf, kind: ErrorKind) -> ConfigError {
        let mut error = ConfigError::general(kind);
        error.0.file = Some(file);
        error
    }

    /// An error about the key at `path` in `file`.
    pub(crate) fn at_path(file: PathBuf, path: &str, kind: ErrorKind) -> ConfigError {
        let mut error = ConfigError::in_file(file, kind);
        error.0.path = Some(path.to_string());
        error
    }

    /// A schema or rule violation at `path` in `file`.
    pub(crate) fn invalid(file: PathBuf, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::at_path(
            file,
            path,
            ErrorKind::Invalid {
                message: message.into(),
            },
        )
    }

    /// The same error, placed at 1-based `line` (and `column`, when known).
    pub(crate) fn at_line(mut self, line: usize, column: Option<usize>) -> ConfigError {
        self.0.line = Some(line);
        self.0.column = column;
        self
    }

    /// The file at fault, when one is known.
    pub fn file(&self) -> Option<&Path> {
        self.0.file.as_deref()
    }

    /// The 1-based line, when known.
    pub fn line(&self) -> Option<usize> {
        self.0.line
    }

    /// The 1-based column, when known.
    pub fn column(&self) -> Option<usize> {
        self.0.column
    }

    /// The dotted key path (`plugins.echo.schedules[0]`), when known.
    pub fn path(&self) -> Option<&str> {
        self.0.path.as_deref()
    }

    /// What is wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }

    /// The process exit code for this error (always `EX_CONFIG`, 78).
    pub fn exit_code(&self) -> i32 {
        EX_CONFIG
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::NotFound { searched } => {
                let list: Vec<String> = searched.iter().map(|p| p.display().to_string()).collect();
                write!(f, "no config.yaml found (searched {})", list.join(", "))
            }
            ErrorKind::Missing => f.write_str("config file does not exist"),
            ErrorKind::Read { source } => write!(f, "cannot read file: {source}"),
            ErrorKind::NotUtf8 => f.write_str("file is not valid UTF-8"),
            ErrorKind::NotRegularFile => f.write_str(
                "not a regular file; config and .env files must be plain files (not a FIFO, device or socket)",
            ),
            ErrorKind::FileTooLarge { limit } => write!(
                f,
                "file is larger than {}, the limit for one config file",
                mebibytes(*limit)
            ),
            ErrorKind::TreeTooLarge { limit } => write!(
                f,
                "the config files together are larger than {}, the limit for one config tree",
                mebibytes(*limit)
            ),
            ErrorKind::TooDeep { what, limit } => {
                write!(f, "{what} nest more than {limit} levels deep")
            }
            ErrorKind::ExpandsTooFar { values, text } => write!(
                f,
                "the config expands to more than {values} values or {} of text (an alias counts each time it is used, a variable each time it is referenced)",
                mebibytes(*text)
            ),
            ErrorKind::ReservedCharacter => f.write_str(
                "file contains U+FDD0 or U+FDD1, noncharacters reserved for marking `${...}` references",
            ),
            ErrorKind::Yaml { message } => write!(f, "invalid YAML: {message}"),
            ErrorKind::IncludeCycle { chain } => {
                write!(f, "include cycle: {}", chain.join(" -> "))
            }
            ErrorKind::IncludeMissing { entry, resolved } => write!(
                f,
                "included path `{entry}` does not exist ({})",
                resolved.display()
            ),
            ErrorKind::InterpolatedPath { entry } => write!(
                f,
                "`${{...}}` is not allowed in file paths (`{entry}`); paths must be static"
            ),
            ErrorKind::UnsetVariable { name } => {
                write!(f, "environment variable `{name}` is not set")
            }
            ErrorKind::NonUnicodeVariable { name } => {
                write!(f, "environment variable `{name}` is not valid UTF-8")
            }
            ErrorKind::Invalid { message } => f.write_str(message),
        }
    }
}

/// A byte count in whole mebibytes (`4 MiB`), as the caps are set.
fn mebibytes(bytes: u64) -> String {
    format!("{} MiB", bytes / (1024 * 1024))
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let details = &self.0;
        let mut location = String::new();
        if let Some(file) = &details.file {
            location.push_str(&file.display().to_string());
            if let Some(line) = details.line {
                location.push_str(&format!(":{line}"));
                if let Some(column) = details.column {
                    location.push_str(&format!(":{column}"));
                }
            }
        }
        if let Some(path) = &details.path {
            if !location.is_empty() {
                location.push_str(": ");
            }
            location.push_str(path);
        }
        if location.is_empty() {
            write!(f, "{}", details.kind)
        } else {
            write!(f, "{location}: {}", details.kind)
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0.kind {
            ErrorKind::Read { source } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn check(error: ConfigError, expected: &str) {
        assert_eq!(error.to_string(), expected);
        assert_eq!(error.exit_code(), 78);
    }

    fn invalid(message: &str) -> ErrorKind {
        ErrorKind::Invalid {
            message: message.to_string(),
        }
    }

    #[test]
    fn renders_every_known_part() {
        let error = ConfigError::at_path(
            PathBuf::from("c/config.yaml"),
            "service.name",
            invalid("bad"),
        )
        .at_line(3, Some(7));
        assert_eq!(error.file(), Some(Path::new("c/config.yaml")));
        assert_eq!((error.line(), error.column()), (Some(3), Some(7)));
        assert_eq!(error.path(), Some("service.name"));
        assert!(matches!(error.kind(), ErrorKind::Invalid { .. }));
        check(error, "c/config.yaml:3:7: service.name: bad");
    }

    #[test]
    fn omits_unknown_parts() {
        check(
            ConfigError::in_file(PathBuf::from("a.yaml"), ErrorKind::NotUtf8),
            "a.yaml: file is not valid UTF-8",
        );
        check(
            ConfigError::invalid(PathBuf::from("a.yaml"), "state.path", "bad"),
            "a.yaml: state.path: bad",
        );
        check(
            ConfigError::in_file(
                PathBuf::from("a.yaml"),
                ErrorKind::UnsetVariable {
                    name: "X".to_string(),
                },
            )
            .at_line(4, None),
            "a.yaml:4: environment variable `X` is not set",
        );
        check(
            ConfigError::general(ErrorKind::NotFound {
                searched: vec![PathBuf::from("/a"), PathBuf::from("/b")],
            }),
            "no config.yaml found (searched /a, /b)",
        );
    }

    #[test]
    fn renders_each_kind() {
        let file = || PathBuf::from("f.yaml");
        check(
            ConfigError::in_file(file(), ErrorKind::Missing),
            "f.yaml: config file does not exist",
        );
        check(
            ConfigError::at_path(
                file(),
                "include[0]",
                ErrorKind::IncludeMissing {
                    entry: "x.yaml".to_string(),
                    resolved: PathBuf::from("/c/x.yaml"),
                },
            ),
            "f.yaml: include[0]: included path `x.yaml` does not exist (/c/x.yaml)",
        );
        check(
            ConfigError::at_path(
                file(),
                "include[0]",
                ErrorKind::InterpolatedPath {
                    entry: "${ENV}.yaml".to_string(),
                },
            ),
            "f.yaml: include[0]: `${...}` is not allowed in file paths (`${ENV}.yaml`); paths must be static",
        );
        check(
            ConfigError::at_path(
                file(),
                "include[0]",
                ErrorKind::IncludeCycle {
                    chain: vec!["a.yaml".into(), "b.yaml".into(), "a.yaml".into()],
                },
            ),
            "f.yaml: include[0]: include cycle: a.yaml -> b.yaml -> a.yaml",
        );
        check(
            ConfigError::in_file(
                file(),
                ErrorKind::NonUnicodeVariable {
                    name: "Y".to_string(),
                },
            ),
            "f.yaml: environment variable `Y` is not valid UTF-8",
        );
        let read = ConfigError::in_file(
            file(),
            ErrorKind::Read {
                source: io::Error::new(io::ErrorKind::PermissionDenied, "denied"),
            },
        );
        assert!(std::error::Error::source(&read).is_some());
        check(read, "f.yaml: cannot read file: denied");
    }

    #[test]
    fn finding_names_file_and_path() {
        let finding = Finding {
            file: Path::new("p.yaml").to_path_buf(),
            path: "plugins.echo.shedules".to_string(),
            message: "unknown key `shedules`; did you mean `schedules`?".to_string(),
        };
        assert_eq!(
            finding.to_string(),
            "p.yaml: plugins.echo.shedules: unknown key `shedules`; did you mean `schedules`?"
        );
        let whole = Finding {
            path: String::new(),
            ..finding
        };
        assert_eq!(
            whole.to_string(),
            "p.yaml: unknown key `shedules`; did you mean `schedules`?"
        );
    }
}
