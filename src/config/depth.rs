//! The flow-nesting pre-scan: how deeply `[` and `{` nest, found in one linear
//! pass over the text before the YAML parser sees it.
//!
//! The parser's scanner (libyaml, inside serde_yaml) does work proportional to
//! the current flow depth for every token, so a 200 KB line of `[[[[...]]]]`
//! kept `config check` busy for minutes. This pass follows YAML's token rules
//! closely enough to skip brackets inside quoted scalars, block-context plain
//! scalars, comments and block scalars, and refuses a document whose flow
//! collections nest deeper than [`FLOW_DEPTH_LIMIT`] before the parser starts.
//!
//! Owns: that one measurement. Must not: build values or judge anything else.

/// The deepest nesting of flow collections (`[...]`, `{...}`) accepted.
pub(super) const FLOW_DEPTH_LIMIT: usize = 64;

/// Where nesting first went deeper than the limit: the 1-based line and column
/// (in characters) of the opening bracket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TooDeep {
    pub(super) line: usize,
    pub(super) column: usize,
}

/// Checks that flow collections in `text` nest at most [`FLOW_DEPTH_LIMIT`] deep.
pub(super) fn check(text: &str) -> Result<(), TooDeep> {
    let mut scan = Scan {
        state: State::Token,
        depth: 0,
        block_parent: 0,
    };
    for (index, line) in text.split('\n').enumerate() {
        scan.line(line).map_err(|at| TooDeep {
            line: index + 1,
            column: line[..at].chars().count() + 1,
        })?;
    }
    Ok(())
}

/// What the scanner is inside of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between tokens: the next non-blank character starts one.
    Token,
    /// A plain (unquoted) scalar.
    Plain,
    /// An anchor, alias or tag name (`&a`, `*a`, `!tag`).
    Name,
    /// `'...'`, which may span lines.
    Single,
    /// `"..."`, which may span lines.
    Double,
    /// The content of a block scalar (`|`, `>`): blank lines and lines indented
    /// deeper than the line that started it.
    BlockBody,
}

struct Scan {
    state: State,
    depth: usize,
    /// Indentation of the line that started the current block scalar.
    block_parent: usize,
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r')
}

fn is_flow_indicator(b: u8) -> bool {
    matches!(b, b',' | b'[' | b']' | b'{' | b'}')
}

impl Scan {
    fn in_flow(&self) -> bool {
        self.depth > 0
    }

    /// Scans one line (without its `\n`); on error, the byte offset of the
    /// bracket that went too deep.
    fn line(&mut self, line: &str) -> Result<(), usize> {
        let bytes = line.as_bytes();
        let indent = bytes.iter().take_while(|&&b| b == b' ').count();
        if self.state == State::BlockBody {
            if bytes.iter().all(|&b| is_blank(b)) || indent > self.block_parent {
                return Ok(());
            }
            self.state = State::Token;
        }
        let mut i = 0;
        if self.state == State::Token && !self.in_flow() {
            if bytes.first() == Some(&b'%') {
                return Ok(());
            }
            let marker = bytes.starts_with(b"---") || bytes.starts_with(b"...");
            if marker && bytes.get(3).is_none_or(|&b| is_blank(b)) {
                i = 3;
            }
        }
        // A `#` starts a comment at the start of a line or after a blank.
        let mut after_blank = true;
        while i < bytes.len() {
            let b = bytes[i];
            let next = bytes.get(i + 1).copied();
            let blank_before = after_blank;
            after_blank = is_blank(b);
            match self.state {
                State::Token => {
                    if self.token(b, next, indent, i)? {
                        return self.end_line();
                    }
                }
                State::Plain => {
                    if b == b'#' && blank_before {
                        return self.end_line();
                    }
                    let ends_at_colon = b == b':'
                        && next.is_none_or(|n| {
                            is_blank(n) || (self.in_flow() && is_flow_indicator(n))
                        });
                    if ends_at_colon {
                        self.state = State::Token;
                    } else if self.in_flow() && is_flow_indicator(b) {
                        self.state = State::Token;
                        self.token(b, next, indent, i)?;
                    }
                }
                State::Name => {
                    if is_blank(b) {
                        self.state = State::Token;
                    } else if self.in_flow() && is_flow_indicator(b) {
                        self.state = State::Token;
                        self.token(b, next, indent, i)?;
                    }
                }
                State::Single => {
                    if b == b'\'' {
                        if next == Some(b'\'') {
                            i += 1;
                        } else {
                            self.state = State::Token;
                        }
                    }
                }
                State::Double => {
                    if b == b'\\' {
                        i += 1;
                    } else if b == b'"' {
                        self.state = State::Token;
                    }
                }
                State::BlockBody => return Ok(()),
            }
            i += 1;
        }
        self.end_line()
    }

    /// The line ended (or the rest of it is a comment or block scalar header).
    fn end_line(&mut self) -> Result<(), usize> {
        self.state = match self.state {
            // Quoted scalars span lines; so do plain scalars inside flow
            // collections. A block-context plain scalar may too, but a new line
            // in a config file almost always starts a new key.
            State::Single | State::Double | State::BlockBody => self.state,
            State::Plain if self.in_flow() => State::Plain,
            State::Token | State::Plain | State::Name => State::Token,
        };
        Ok(())
    }

    /// Byte `b` at offset `at` starts a token (or is blank between tokens).
    /// Returns true when the rest of the line is to be skipped (a comment or a
    /// block scalar header).
    fn token(&mut self, b: u8, next: Option<u8>, indent: usize, at: usize) -> Result<bool, usize> {
        let next_is_blank = next.is_none_or(is_blank);
        match b {
            _ if is_blank(b) => {}
            b'#' => return Ok(true),
            b'[' | b'{' => {
                self.depth += 1;
                if self.depth > FLOW_DEPTH_LIMIT {
                    return Err(at);
                }
            }
            b']' | b'}' => self.depth = self.depth.saturating_sub(1),
            b',' => {}
            b'\'' => self.state = State::Single,
            b'"' => self.state = State::Double,
            b'&' | b'*' | b'!' => self.state = State::Name,
            b'|' | b'>' if !self.in_flow() => {
                self.block_parent = indent;
                self.state = State::BlockBody;
                return Ok(true);
            }
            b'-' | b'?' | b':' if next_is_blank => {}
            b'?' | b':' if self.in_flow() => {}
            _ => self.state = State::Plain,
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(text: &str) -> bool {
        check(text).is_ok()
    }

    fn nested(n: usize) -> String {
        format!("a: {}{}\n", "[".repeat(n), "]".repeat(n))
    }

    #[test]
    fn accepts_nesting_up_to_the_limit() {
        assert!(depth_ok(&nested(FLOW_DEPTH_LIMIT)));
        assert_eq!(
            check(&nested(FLOW_DEPTH_LIMIT + 1)),
            Err(TooDeep {
                line: 1,
                column: 4 + FLOW_DEPTH_LIMIT
            })
        );
    }

    #[test]
    fn counts_mappings_sequences_and_lines_alike() {
        let text = format!("a:\n{}\n", "  {b: [\n".repeat(FLOW_DEPTH_LIMIT / 2 + 1));
        let error = check(&text).unwrap_err();
        assert_eq!(error.line, FLOW_DEPTH_LIMIT / 2 + 2);
        let flat = format!("a: [{}]\n", "[1], {x: 2}, ".repeat(10_000));
        assert!(depth_ok(&flat), "siblings do not nest");
    }

    #[test]
    fn ignores_brackets_that_are_not_flow_collections() {
        let deep = "[".repeat(FLOW_DEPTH_LIMIT + 1);
        for text in [
            format!("a: '{deep}'\n"),
            format!("a: \"{deep}\"\n"),
            format!("a: \"x\\\"{deep}\"\n"),
            format!("a: 'it''s {deep}'\n"),
            format!("a: text {deep}\n"),
            format!("a: 1 # {deep}\n"),
            format!("# {deep}\n"),
            format!("a: |\n  {deep}\n\n  more {deep}\nb: 1\n"),
            format!("- >-\n    {deep}\n"),
            format!("a: !tag{deep}\n"),
            format!("a: [x{}]\n", "'".repeat(3)) + &format!("b: '{deep}'\n"),
            format!("a: {{k: 'v {deep}'}}\n"),
            format!("a: [\"{deep}\",\n  '{deep}']\n"),
        ] {
            assert!(depth_ok(&text), "{text}");
        }
    }

    #[test]
    fn brackets_after_a_scalar_in_flow_context_still_count() {
        let deep = "[".repeat(FLOW_DEPTH_LIMIT);
        for text in [
            format!("a: [x, {deep}]\n"),
            format!("a: ['q', {deep}]\n"),
            format!("a: [\"q\"{deep}]\n"),
            format!("a: [&anchor {deep}]\n"),
            format!("a: [k: {deep}]\n"),
            format!("a: [x # comment\n  , {deep}]\n"),
            format!("a: |\n  text\nb: {deep}[\n"),
            format!("--- {deep}[\n"),
        ] {
            assert!(check(&text).is_err(), "{text}");
        }
    }
}
