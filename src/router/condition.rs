//! Placeholder for the compiled form of a step or pipeline `if:`; replaced by the real module.

use std::fmt;

use serde_json::Value;

/// The compiled form of a step or pipeline `if:` (placeholder: keeps the value as written).
#[derive(Debug, Clone)]
pub struct Condition {
    /// The value as written.
    pub source: Value,
}

impl Condition {
    /// Compiles `value`; the placeholder accepts any mapping.
    pub fn compile(value: &Value) -> Result<Condition, ConditionError> {
        if !value.is_object() {
            return Err(ConditionError {
                path: String::new(),
                message: "a condition must be a mapping".to_string(),
            });
        }
        Ok(Condition {
            source: value.clone(),
        })
    }
}

/// Why a step or pipeline `if:` does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionError {
    /// Where inside the value, relative to it (empty for the value itself).
    pub path: String,
    /// What is wrong, one line.
    pub message: String,
}

impl fmt::Display for ConditionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConditionError {}
