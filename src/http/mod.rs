//! HTTP surfaces.
pub mod events;
