//! Remote event relay (18-remote-event-relay): point-to-point delivery of an
//! event to another instance over signed HTTP, at least once.
//!
//! Owns: the wire shape and its signature, the outbox job that carries an
//! event until it is delivered, and one delivery attempt. The worker pool runs
//! outbox jobs (`dispatch`); the receiving side lives on the API listener
//! (`http::relay`); the settings in `config::relay`.

pub mod outbox;
pub mod send;
pub mod wire;
