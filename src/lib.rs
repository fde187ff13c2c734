//! `orchestrator` as a library: the binary in `main.rs` is a thin shell over `commands::run`.
//! The modules are public so benchmarks can measure the effects (backup, commit) directly.
//!
//! The layers: `core` is pure (the data model and the decisions, no I/O); `commands` sit on top,
//! one file (or folder) per command; the effects are leaves the commands call: `store` (the
//! workspace's state, behind its seam), `wrap` (the wrap's steps: backup, handoff, commit),
//! `agents` (transcripts, hooks, the agent process) and `meters` (measuring a session's usage).

pub mod agents;
pub mod charts;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod core;
pub mod error;
pub mod live_line;
pub mod meters;
pub mod progress;
pub mod store;
pub mod wrap;
