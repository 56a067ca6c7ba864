//! Remote event relay (18-remote-event-relay): point-to-point delivery of an
//! event to another instance over signed HTTP, at least once.
//!
//! Owns: the wire shape and its signature. The receiving side lives on the API
//! listener (`http::relay`); the settings in `config::relay`.

pub mod wire;
