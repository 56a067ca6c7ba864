//! The single integration test binary: the real `ductile` executable against

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    unreachable_pub
)]
//! temp config dirs, real plugin processes and real SQLite files.

mod backup;
mod bundled;
mod cfgedit;
mod config;
mod containers;
mod contract;
mod daemon;
mod dashboard;
mod doctor;
mod explain;
mod foundation;
mod hardening;
mod http;
mod integrity;
mod kit;
mod limits;
mod notify;
mod openapi;
mod operate;
mod pipeline_crash;
mod pipeline_runs;
mod pipeline_views;
mod pipelines;
mod relay;
mod relay_faults;
mod relay_send;
mod replication;
mod scheduler;
mod schedules;
mod stage7;
mod support;
mod tools;
mod ui_sessions;
