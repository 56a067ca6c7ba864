//! The `config` noun: one file per verb group.

mod check;
mod lock;

pub use check::check;
pub use lock::lock;
