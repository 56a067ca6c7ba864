//! `ductile run`, config loading, discovery and the protocol runner, end to end.
