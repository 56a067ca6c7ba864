//! Placeholder for the compiled form of a `with:` remap; replaced by the real module.

use std::fmt;

use serde_json::Value;

/// The compiled form of a `with:` remap (placeholder: keeps the value as written).
#[derive(Debug, Clone)]
pub struct Template {
    /// The value as written.
    pub source: Value,
}

impl Template {
    /// Compiles `value`; the placeholder accepts anything.
    pub fn compile(value: &Value) -> Result<Template, TemplateError> {
        Ok(Template {
            source: value.clone(),
        })
    }
}

/// Why a `with:` remap does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// Where inside the value, relative to it (empty for the value itself).
    pub path: String,
    /// What is wrong, one line.
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for TemplateError {}
