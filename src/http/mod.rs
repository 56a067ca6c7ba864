//! HTTP surfaces.
pub mod auth;
pub mod openapi;
