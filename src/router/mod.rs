//! Routing and pipelines.
pub mod baggage;
pub mod condition;
pub mod template;
