//! Key paths into the config: dotted keys (`plugins.echo.enabled`), list
//! indexes (`schedules[0]` or `schedules.0`), name selectors
//! (`pipelines[name=wisdom]`) and the entity spellings of the operator
//! handbook (`plugin:NAME`, `pipeline:NAME`, `plugin:*`).
//!
//! Owns: the path grammar. Must not: read files.

use std::fmt;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A mapping key.
    Key(String),
    /// A list position.
    Index(usize),
    /// The list item whose `key` field equals `value`.
    Select {
        /// The field compared (`name`).
        key: String,
        /// The value it must have.
        value: String,
    },
}

/// A parsed key path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPath(pub Vec<Segment>);

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Segment::Key(k) if i == 0 => write!(f, "{k}")?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
                Segment::Select { key, value } => write!(f, "[{key}={value}]")?,
            }
        }
        Ok(())
    }
}

impl KeyPath {
    /// The path with one more segment.
    pub fn child(&self, segment: Segment) -> KeyPath {
        let mut v = self.0.clone();
        v.push(segment);
        KeyPath(v)
    }

    /// The path of `key` under this one.
    pub fn key(&self, key: &str) -> KeyPath {
        self.child(Segment::Key(key.to_string()))
    }
}

/// Entity prefixes and the path each stands for.
const ENTITIES: &[(&str, &str)] = &[
    ("plugin", "plugins"),
    ("pipeline", "pipelines"),
    ("route", "routes"),
    ("token", "tokens"),
    ("webhook", "webhooks"),
];

/// Parses `text`: a dotted path, or an entity (`plugin:NAME[.rest]`,
/// `pipeline:NAME[.rest]`; `plugin:*` is the whole `plugins` map).
pub fn parse(text: &str) -> Result<KeyPath, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty key path".to_string());
    }
    if let Some((kind, rest)) = text.split_once(':')
        && !kind.contains('.')
        && !kind.contains('[')
    {
        let Some((_, base)) = ENTITIES.iter().find(|(k, _)| *k == kind) else {
            let names: Vec<&str> = ENTITIES.iter().map(|(k, _)| *k).collect();
            return Err(format!(
                "unknown entity `{kind}:`; use one of {}",
                names
                    .iter()
                    .map(|n| format!("`{n}:`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let (name, tail) = match rest.find(['.', '[']) {
            Some(i) => (&rest[..i], rest[i..].trim_start_matches('.')),
            None => (rest, ""),
        };
        if name.is_empty() {
            return Err(format!("`{kind}:` needs a name (or `*`)"));
        }
        let mut segments = vec![Segment::Key(base.to_string())];
        // The loader reads every shape of `webhooks:` as `webhooks.endpoints`.
        if *base == "webhooks" {
            segments.push(Segment::Key("endpoints".to_string()));
        }
        if name != "*" {
            if *base == "plugins" {
                segments.push(Segment::Key(name.to_string()));
            } else {
                segments.push(Segment::Select {
                    key: "name".to_string(),
                    value: name.to_string(),
                });
            }
        } else if !tail.is_empty() {
            return Err(format!("`{kind}:*` cannot be followed by a key path"));
        }
        if !tail.is_empty() {
            segments.extend(parse_dotted(tail)?.0);
        }
        return Ok(KeyPath(segments));
    }
    parse_dotted(text)
}

fn parse_dotted(text: &str) -> Result<KeyPath, String> {
    let mut segments = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix('[') {
            let Some(close) = inner.find(']') else {
                return Err(format!("unclosed `[` in `{text}`"));
            };
            let body = &inner[..close];
            segments.push(match body.split_once('=') {
                Some((k, v)) if !k.is_empty() && !v.is_empty() => Segment::Select {
                    key: k.to_string(),
                    value: v.to_string(),
                },
                Some(_) => return Err(format!("bad selector `[{body}]` in `{text}`")),
                None => Segment::Index(
                    body.parse()
                        .map_err(|_| format!("bad list index `[{body}]` in `{text}`"))?,
                ),
            });
            rest = inner[close + 1..].trim_start_matches('.');
            continue;
        }
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        let word = &rest[..end];
        if word.is_empty() {
            return Err(format!("empty key in `{text}`"));
        }
        segments.push(match word.parse::<usize>() {
            Ok(n) if !segments.is_empty() => Segment::Index(n),
            _ => Segment::Key(word.to_string()),
        });
        rest = rest[end..].strip_prefix('.').unwrap_or(&rest[end..]);
    }
    Ok(KeyPath(segments))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: &str) {
        assert_eq!(parse(text).unwrap().to_string(), expected, "{text}");
    }

    #[test]
    fn paths_and_entities() {
        check("plugins.echo.enabled", "plugins.echo.enabled");
        check("plugin:echo.enabled", "plugins.echo.enabled");
        check("plugin:*", "plugins");
        check(
            "plugins.echo.schedules.0.every",
            "plugins.echo.schedules[0].every",
        );
        check("plugins.echo.schedules[1]", "plugins.echo.schedules[1]");
        check("pipeline:wisdom", "pipelines[name=wisdom]");
        check(
            "pipeline:wisdom.steps[0].uses",
            "pipelines[name=wisdom].steps[0].uses",
        );
        assert_eq!(
            parse("thing:x").unwrap_err(),
            "unknown entity `thing:`; use one of `plugin:`, `pipeline:`, `route:`, `token:`, `webhook:`"
        );
        assert!(parse("a[b").is_err());
        assert!(parse("a..b").is_err());
    }
}
