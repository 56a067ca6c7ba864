//! The scheduler: turns `schedules:` entries into due jobs.
//!
//! Owns: schedule compilation (`compile`) and pure time logic (`expr`, `cron`, `window`).
//! Must not: read the clock or touch the database inside the time logic; the
//! heartbeat that does both lives here and calls into those modules.

pub mod compile;
pub mod cron;
pub mod expr;
pub mod heartbeat;
pub mod manage;
pub mod preview;
pub mod window;
