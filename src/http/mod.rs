//! HTTP surfaces.
pub mod openapi;
