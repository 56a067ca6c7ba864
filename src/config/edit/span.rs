//! A YAML document as a tree of nodes with byte spans, read with a span-aware
//! parser (serde_yaml keeps no positions), so an edit can replace exactly the
//! bytes of one value and leave every other byte, comments included, alone.
//!
//! Owns: node positions. Must not: interpret config keys.

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// One node of a document and where its text is.
#[derive(Debug, Clone)]
pub struct Node {
    /// What the node is.
    pub kind: Kind,
    /// Byte offset of the node's first character.
    pub start: usize,
    /// Byte offset just past the node's last character.
    pub end: usize,
    /// Written in flow style (`{...}`, `[...]`).
    pub flow: bool,
    /// 0-based column of the node's first character.
    pub col: usize,
    /// 1-based line of the node's first character.
    pub line: usize,
}

/// The kinds of node.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A scalar: its value and how it was written.
    Scalar {
        /// The scalar's value.
        value: String,
        /// Plain, quoted or block.
        style: ScalarStyle,
    },
    /// A mapping, entries in order.
    Map(Vec<Entry>),
    /// A sequence, items in order.
    Seq(Vec<Node>),
    /// An alias (`*name`); never edited through.
    Alias,
}

/// One entry of a mapping.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key as text.
    pub key: String,
    /// The key's node (its position).
    pub key_node: Node,
    /// The value.
    pub value: Node,
}

impl Node {
    /// The entry called `key`, if this is a mapping that has one.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        match &self.kind {
            Kind::Map(entries) => entries.iter().rev().find(|e| e.key == key),
            _ => None,
        }
    }

    /// The scalar value, if this is a scalar.
    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// Whether this is an empty scalar (`key:` with nothing after it).
    pub fn is_null(&self) -> bool {
        match &self.kind {
            Kind::Scalar { value, style } => {
                *style == ScalarStyle::Plain && matches!(value.as_str(), "" | "~" | "null")
            }
            _ => false,
        }
    }

    /// Whether this is a block scalar (`|` or `>`).
    pub fn is_block_scalar(&self) -> bool {
        matches!(
            &self.kind,
            Kind::Scalar {
                style: ScalarStyle::Literal | ScalarStyle::Folded,
                ..
            }
        )
    }
}

/// Why a document could not be read for editing.
#[derive(Debug)]
pub struct ParseError {
    /// What the parser said, with its position.
    pub message: String,
}

/// Parses the first document of `text`; `None` for a document without content.
pub fn parse(text: &str) -> Result<Option<Node>, ParseError> {
    let bytes = CharToByte::new(text);
    let mut parser = Parser::new_from_str(text);
    let mut events = Vec::new();
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| ParseError {
            message: e.to_string(),
        })?;
        match event {
            Event::StreamEnd | Event::DocumentEnd => break,
            Event::StreamStart | Event::DocumentStart(_) | Event::Nothing => {}
            other => events.push((other, span)),
        }
    }
    let mut reader = Reader {
        events,
        at: 0,
        bytes: &bytes,
        text,
    };
    if reader.events.is_empty() {
        return Ok(None);
    }
    reader.node().map(Some)
}

struct Reader<'a, 'input> {
    events: Vec<(Event<'input>, Span)>,
    at: usize,
    bytes: &'a CharToByte,
    text: &'a str,
}

impl<'input> Reader<'_, 'input> {
    fn next(&mut self) -> Result<(Event<'input>, Span), ParseError> {
        let item = self
            .events
            .get(self.at)
            .cloned()
            .ok_or_else(|| ParseError {
                message: "unexpected end of document".to_string(),
            })?;
        self.at += 1;
        Ok(item)
    }

    fn node(&mut self) -> Result<Node, ParseError> {
        let (event, span) = self.next()?;
        let start = self.bytes.at(span.start.index());
        let (line, col) = (span.start.line(), span.start.col());
        match event {
            Event::Scalar(value, style, _, _) => {
                let mut end = self.bytes.at(span.end.index());
                // A block scalar's span runs over the blank lines after it;
                // its own text ends at its last non-blank line.
                if matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
                    end = start + self.text[start..end].trim_end().len();
                }
                // A quoted scalar's span may run on over a trailing comment;
                // its text ends at its closing quote.
                if let Some(close) = closing_quote(self.text, start, style) {
                    end = close;
                }
                Ok(Node {
                    kind: Kind::Scalar {
                        value: value.to_string(),
                        style,
                    },
                    start,
                    end,
                    flow: false,
                    col,
                    line,
                })
            }
            Event::Alias(_) => Ok(Node {
                kind: Kind::Alias,
                start,
                end: self.bytes.at(span.end.index()),
                flow: false,
                col,
                line,
            }),
            Event::MappingStart(_, _) => {
                let flow = self.text[start..].starts_with('{');
                let mut entries = Vec::new();
                let end = loop {
                    if let Some((Event::MappingEnd, end_span)) = self.events.get(self.at) {
                        let end_at = self.bytes.at(end_span.end.index());
                        self.at += 1;
                        break end_at;
                    }
                    let key_node = self.node()?;
                    let key = match &key_node.kind {
                        Kind::Scalar { value, .. } => value.clone(),
                        _ => self.text[key_node.start..key_node.end].to_string(),
                    };
                    let value = self.node()?;
                    entries.push(Entry {
                        key,
                        key_node,
                        value,
                    });
                };
                let end = if flow {
                    end
                } else {
                    entries
                        .last()
                        .map_or(start, |e| e.value.end.max(e.key_node.end))
                };
                let start = entries
                    .first()
                    .filter(|_| !flow)
                    .map_or(start, |e| e.key_node.start);
                Ok(Node {
                    kind: Kind::Map(entries),
                    start,
                    end,
                    flow,
                    col,
                    line,
                })
            }
            Event::SequenceStart(_, _) => {
                let flow = self.text[start..].starts_with('[');
                let mut items = Vec::new();
                let end = loop {
                    if let Some((Event::SequenceEnd, end_span)) = self.events.get(self.at) {
                        let end_at = self.bytes.at(end_span.end.index());
                        self.at += 1;
                        break end_at;
                    }
                    items.push(self.node()?);
                };
                let end = if flow {
                    end
                } else {
                    items.last().map_or(start, |i| i.end)
                };
                Ok(Node {
                    kind: Kind::Seq(items),
                    start,
                    end,
                    flow,
                    col,
                    line,
                })
            }
            other => Err(ParseError {
                message: format!("unexpected YAML event {other:?}"),
            }),
        }
    }
}

/// The offset just past the closing quote of the quoted scalar at `start`.
fn closing_quote(text: &str, start: usize, style: ScalarStyle) -> Option<usize> {
    let quote = match style {
        ScalarStyle::DoubleQuoted => b'"',
        ScalarStyle::SingleQuoted => b'\'',
        _ => return None,
    };
    let bytes = text.as_bytes();
    if bytes.get(start) != Some(&quote) {
        return None;
    }
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote == b'"' => i += 2,
            b'\'' if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b if b == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The parser counts characters; edits need byte offsets.
struct CharToByte {
    offsets: Vec<usize>,
}

impl CharToByte {
    fn new(text: &str) -> CharToByte {
        let mut offsets: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        offsets.push(text.len());
        CharToByte { offsets }
    }

    fn at(&self, char_index: usize) -> usize {
        self.offsets
            .get(char_index)
            .copied()
            .unwrap_or_else(|| self.offsets.last().copied().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        parse(text).unwrap().unwrap()
    }

    fn slice<'a>(text: &'a str, node: &Node) -> &'a str {
        &text[node.start..node.end]
    }

    #[test]
    fn scalar_spans_cover_exactly_the_value() {
        let text = "a: 1 # one\nb: \"t\\\"wo\"  # c\nc: 'thr''ee' # d\nd:\n  e: é five\n";
        let r = root(text);
        assert_eq!(slice(text, &r.entry("a").unwrap().value), "1");
        assert_eq!(slice(text, &r.entry("b").unwrap().value), "\"t\\\"wo\"");
        assert_eq!(slice(text, &r.entry("c").unwrap().value), "'thr''ee'");
        let d = &r.entry("d").unwrap().value;
        assert_eq!(slice(text, &d.entry("e").unwrap().value), "é five");
        assert_eq!(slice(text, d), "e: é five");
    }

    #[test]
    fn collections_span_their_children() {
        let text = "l:\n  - x\n  - {k: v}\n\n# tail\nm: [1, 2]\n";
        let r = root(text);
        let l = &r.entry("l").unwrap().value;
        assert_eq!(slice(text, l), "- x\n  - {k: v}");
        let m = &r.entry("m").unwrap().value;
        assert!(m.flow);
        assert_eq!(slice(text, m), "[1, 2]");
    }

    #[test]
    fn block_scalars_end_at_their_last_line() {
        let text = "a: |\n  one\n  two\n\nb: 1\n";
        let r = root(text);
        assert_eq!(slice(text, &r.entry("a").unwrap().value), "one\n  two");
    }
}
