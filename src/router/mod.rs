//! Routing: from a plugin's event (or a job's lifecycle signal) to the hops
//! that run next.
//!
//! Owns: the compiled, immutable [`graph::RouteGraph`] of every `routes:` entry
//! and `pipelines:` definition, built once per config snapshot; the `if:`
//! language ([`condition`]), `with:` remaps ([`template`]), `baggage:` claims
//! ([`baggage`]); and the Mermaid view of a pipeline ([`visualize`]).
//! Must not: touch the database or spawn; the dispatcher runs the hops.

pub mod baggage;
pub mod condition;
pub mod engine;
pub mod graph;
pub mod template;
pub mod visualize;
