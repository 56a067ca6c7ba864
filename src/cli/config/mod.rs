//! The `config` noun: one file per verb group.

mod backup;
mod check;

pub use backup::{backup as archive, restore};
pub use check::check;
