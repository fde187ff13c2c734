//! Integration tests: the real binary in temp dirs with a sanitized environment.
//! One test binary with a module per area keeps the build fast.

mod common;

mod budget;
mod concurrency;
mod effects;
mod hardening_git;
mod hardening_handoff;
mod hardening_hangs;
mod hardening_paths;
mod hardening_state;
mod hooks;
mod ids;
mod meters;
mod refusals;
mod run;
mod seed;
mod sessions;
mod tasks;
mod transcripts;
mod wrap;
