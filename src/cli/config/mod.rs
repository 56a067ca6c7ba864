//! The `config` noun: one file per verb group.

mod backup;
mod check;
mod lock;
pub mod schema;

pub use backup::{backup as archive, restore};
pub use check::check;
pub use lock::lock;
