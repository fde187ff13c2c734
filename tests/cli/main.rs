//! Integration tests: the real binary in temp dirs with a sanitized environment.
//! One test binary with a module per area keeps the build fast.

mod common;

mod brief;
mod budget;
mod concurrency;
mod config;
mod conventions;
mod cost;
mod docs;
mod effects;
mod fleet;
mod fleet_git;
mod fleet_pool;
mod fleet_queue;
mod fresh_clone;
mod handoff_history;
mod hardening_git;
mod hardening_handoff;
mod hardening_hangs;
mod hardening_paths;
mod hardening_state;
mod hook_lifecycle;
mod hooks;
mod ids;
mod meters;
mod pg_cluster;
mod progress;
mod refusals;
mod report;
mod run;
mod seed;
mod sessions;
mod store;
mod task_editing;
mod tasks;
mod transcripts;
mod unattended;
mod watch;
mod worktree;
mod wrap;
