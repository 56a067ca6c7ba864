//! The `config` noun: one file per verb group.

mod check;

pub use check::check;
