//! The pre-decode pass: what a response would cost once decoded, read off its
//! text without allocating.

use super::{MAX_DEPTH, ProtocolError};

/// Counts found by [`measure`].
pub(super) struct Shape {
    /// Every JSON value: scalars, arrays and objects (object keys not counted).
    pub(super) values: usize,
    /// Elements of the top-level `events` array.
    pub(super) events: usize,
}

/// One pass over the text, before anything is allocated: counts the values and
/// the events and refuses nesting deeper than [`MAX_DEPTH`]. Not a validator:
/// malformed text is left for the parser to describe.
pub(super) fn measure(text: &[u8]) -> Result<Shape, ProtocolError> {
    let mut shape = Shape {
        values: 0,
        events: 0,
    };
    let mut open: Vec<u8> = Vec::with_capacity(MAX_DEPTH);
    // The innermost open container is an object whose next string is a key.
    let mut expect_key = false;
    // The last key of the top-level object was `events`.
    let mut events_key = false;
    // The top-level `events` array is open.
    let mut in_events = false;
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        i += 1;
        let is_value = match c {
            b'{' | b'[' => true,
            b'"' => {
                let start = i;
                while i < text.len() && text[i] != b'"' {
                    i += if text[i] == b'\\' { 2 } else { 1 };
                }
                let end = i.min(text.len());
                i += 1;
                if expect_key {
                    expect_key = false;
                    if open.len() == 1 {
                        events_key = &text[start..end] == b"events";
                    }
                    false
                } else {
                    true
                }
            }
            b'}' | b']' => {
                if in_events && open.len() == 2 {
                    in_events = false;
                }
                open.pop();
                expect_key = false;
                false
            }
            b',' => {
                expect_key = open.last() == Some(&b'{');
                false
            }
            b':' | b' ' | b'\t' | b'\n' | b'\r' => false,
            _ => {
                // A number or literal: skip to its end.
                while i < text.len() && !b",]}: \t\n\r\"[{".contains(&text[i]) {
                    i += 1;
                }
                true
            }
        };
        if !is_value {
            continue;
        }
        shape.values += 1;
        if in_events && open.len() == 2 {
            shape.events += 1;
        }
        if c == b'{' || c == b'[' {
            if open.len() == MAX_DEPTH {
                return Err(ProtocolError::TooDeep);
            }
            in_events |= c == b'[' && open.len() == 1 && events_key;
            open.push(c);
            expect_key = c == b'{';
        }
    }
    Ok(shape)
}
