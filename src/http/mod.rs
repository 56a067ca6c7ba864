//! HTTP surfaces.
pub mod auth;
