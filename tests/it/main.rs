//! The single integration test binary: the real `ductile` executable against
//! temp config dirs, real plugin processes and real SQLite files.

mod daemon;
mod foundation;
mod support;
