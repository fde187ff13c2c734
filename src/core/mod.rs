//! The pure core: data model and decisions, no I/O.
//! Everything here is deterministic given its inputs (including "now"), so it is unit-tested directly.

pub mod brief;
pub mod budget;
pub mod config;
pub mod ids;
pub mod meters;
pub mod pricing;
pub mod quota;
pub mod report;
pub mod run;
pub mod select;
pub mod session;
pub mod stack;
pub mod text;
