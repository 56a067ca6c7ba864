//! `${VAR}` substitution on a config file's text, and `.env` file parsing.
//!
//! Owns: the substitution rule (text level, before YAML parsing, full-line comments
//! skipped) and the KEY=VALUE grammar of `environment_vars` files.
//! Must not: read files, consult the process environment directly (callers pass a
//! lookup, so precedence lives in one place) or set environment variables.

/// The value of one variable, as a lookup sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Var {
    /// Set, with this value.
    Set(String),
    /// Not set anywhere.
    Unset,
    /// Set, but not UTF-8.
    NotUnicode,
}

/// Why a text could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    /// `${name}` on 1-based `line` is not set.
    Unset { line: usize, name: String },
    /// `${name}` on 1-based `line` is set but not UTF-8.
    NotUnicode { line: usize, name: String },
}

/// Replaces every `${NAME}` in `text` with its value from `lookup`.
///
/// Lines whose first non-blank character is `#` are copied untouched, so a
/// commented-out secret does not demand its variable. `${` not followed by a
/// valid name and `}` is left as written: it is not a reference.
pub(super) fn interpolate(text: &str, lookup: &dyn Fn(&str) -> Var) -> Result<String, Failure> {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            match reference(after) {
                Some(name) => {
                    match lookup(name) {
                        Var::Set(value) => out.push_str(&value),
                        Var::Unset => {
                            return Err(Failure::Unset {
                                line: index + 1,
                                name: name.to_string(),
                            });
                        }
                        Var::NotUnicode => {
                            return Err(Failure::NotUnicode {
                                line: index + 1,
                                name: name.to_string(),
                            });
                        }
                    }
                    rest = &after[name.len() + 1..];
                }
                None => {
                    out.push_str("${");
                    rest = after;
                }
            }
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// The variable name at the start of `text` if it is followed by `}`.
fn reference(text: &str) -> Option<&str> {
    let end = text.find('}')?;
    let name = &text[..end];
    is_name(name).then_some(name)
}

/// Whether `name` is a valid environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
pub(super) fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A malformed line in a `.env` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DotenvError {
    /// 1-based line number.
    pub(super) line: usize,
    /// What is wrong.
    pub(super) message: String,
}

/// Parses `KEY=VALUE` lines: blank lines and `#` comments skipped, an optional
/// `export ` prefix, values optionally wrapped in matching single or double quotes.
/// An unquoted value ends at ` #` (an inline comment).
pub(super) fn parse_dotenv(text: &str) -> Result<Vec<(String, String)>, DotenvError> {
    let mut pairs = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, value)) = line.split_once('=') else {
            return Err(DotenvError {
                line: index + 1,
                message: "expected KEY=VALUE".to_string(),
            });
        };
        let key = key.trim();
        if !is_name(key) {
            return Err(DotenvError {
                line: index + 1,
                message: format!("invalid variable name `{key}`"),
            });
        }
        pairs.push((key.to_string(), unquote(value.trim())));
    }
    Ok(pairs)
}

/// Strips one pair of matching quotes, or an inline comment from an unquoted value.
fn unquote(value: &str) -> String {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return value[1..value.len() - 1].to_string();
        }
    }
    match value.find(" #") {
        Some(hash) => value[..hash].trim_end().to_string(),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Var {
        match name {
            "HOST" => Var::Set("example.org".to_string()),
            "EMPTY" => Var::Set(String::new()),
            "BYTES" => Var::NotUnicode,
            _ => Var::Unset,
        }
    }

    fn check(input: &str, expected: &str) {
        assert_eq!(interpolate(input, &env).unwrap(), expected, "{input}");
    }

    #[test]
    fn substitutes_references() {
        check("url: https://${HOST}/x\n", "url: https://example.org/x\n");
        check("a: ${HOST}${HOST}", "a: example.orgexample.org");
        check("a: '${EMPTY}'\n", "a: ''\n");
        check("plain: text\n", "plain: text\n");
    }

    #[test]
    fn leaves_non_references_alone() {
        check("a: $HOST\n", "a: $HOST\n");
        check("a: ${not a name}\n", "a: ${not a name}\n");
        check("a: ${1}\n", "a: ${1}\n");
        check("a: ${HOST\n", "a: ${HOST\n");
        check("a: $${HOST}", "a: $example.org");
    }

    #[test]
    fn skips_full_line_comments() {
        check(
            "# key: ${MISSING}\n  # ${MISSING}\nb: 1\n",
            "# key: ${MISSING}\n  # ${MISSING}\nb: 1\n",
        );
    }

    #[test]
    fn reports_the_line_of_an_unset_variable() {
        assert_eq!(
            interpolate("a: 1\n# ${NOPE}\nb: ${NOPE}\n", &env).unwrap_err(),
            Failure::Unset {
                line: 3,
                name: "NOPE".to_string()
            }
        );
        assert_eq!(
            interpolate("b: ${BYTES}", &env).unwrap_err(),
            Failure::NotUnicode {
                line: 1,
                name: "BYTES".to_string()
            }
        );
    }

    #[test]
    fn trailing_comments_are_not_skipped() {
        assert!(interpolate("a: 1 # ${NOPE}\n", &env).is_err());
    }

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse_dotenv(text).unwrap()
    }

    fn pair(key: &str, value: &str) -> (String, String) {
        (key.to_string(), value.to_string())
    }

    #[test]
    fn parses_dotenv_forms() {
        assert_eq!(
            pairs(
                "# comment\n\nA=1\nexport B = two\nC=\"three # x\"\nD='four'\nE=five # note\nF=\nG=a=b\n"
            ),
            vec![
                pair("A", "1"),
                pair("B", "two"),
                pair("C", "three # x"),
                pair("D", "four"),
                pair("E", "five"),
                pair("F", ""),
                pair("G", "a=b"),
            ]
        );
    }

    #[test]
    fn rejects_malformed_dotenv_lines() {
        assert_eq!(
            parse_dotenv("A=1\njust words\n").unwrap_err(),
            DotenvError {
                line: 2,
                message: "expected KEY=VALUE".to_string()
            }
        );
        assert_eq!(
            parse_dotenv("1A=x\n").unwrap_err().message,
            "invalid variable name `1A`"
        );
    }

    #[test]
    fn validates_names() {
        assert!(is_name("A_1"));
        assert!(is_name("_x"));
        assert!(!is_name(""));
        assert!(!is_name("1A"));
        assert!(!is_name("A-B"));
    }
}
