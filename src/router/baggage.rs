//! Placeholder for the compiled form of a `baggage:` claim set; replaced by the real module.

use std::fmt;

use serde_json::Value;

/// The compiled form of a `baggage:` claim set (placeholder: keeps the value as written).
#[derive(Debug, Clone)]
pub struct Claims {
    /// The value as written.
    pub source: Value,
}

impl Claims {
    /// Compiles `value`; the placeholder accepts anything.
    pub fn compile(value: &Value) -> Result<Claims, BaggageError> {
        Ok(Claims {
            source: value.clone(),
        })
    }
}

/// Why a `baggage:` claim set does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaggageError {
    /// Where inside the value, relative to it (empty for the value itself).
    pub path: String,
    /// What is wrong, one line.
    pub message: String,
}

impl fmt::Display for BaggageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for BaggageError {}
