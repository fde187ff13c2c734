//! `orchestrator` as a library: the binary in `main.rs` is a thin shell over `commands::run`.
//! The modules are public so benchmarks can measure the effects (backup, commit) directly.

pub mod agents;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod core;
pub mod error;
pub mod meters;
pub mod store;
pub mod wrap;
